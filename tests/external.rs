// SPDX-License-Identifier: MPL-2.0
//! The plugin as users load it, each in a process of its own: gst-launch-1.0 and
//! gst-inspect-1.0, every example in `pipelines/`, and the Python and C embedding
//! examples in `examples/`.

mod common;

use common::gst_command;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(output: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn every_pipeline_example_runs() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sh"))
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 4,
        "examples missing from {}",
        examples.display()
    );
    for script in scripts {
        let scratch = tempfile::tempdir().unwrap();
        // A stalled pipeline fails the test (status 124) instead of holding CI.
        let output = gst_command("timeout", scratch.path())
            .args(["300", "sh"])
            .arg(&script)
            .env("OUT", scratch.path())
            .output()
            .unwrap();
        let stdout = check(output, &script.display().to_string());
        println!("{}: {}", script.display(), stdout.trim());
    }
}

/// KID and counter of every SFrame written by one gst-launch run; with
/// `frozen_clock`, the process sees the wall clock stopped at that time (as
/// `faketime` makes it), as a device without a real-time clock does at every boot.
fn encrypt_in_new_process(
    scratch: &Path,
    run: &str,
    frozen_clock: Option<&str>,
) -> Vec<(u64, u64)> {
    let dir = scratch.join(run);
    std::fs::create_dir(&dir).unwrap();
    let mut command = match frozen_clock {
        Some(time) => {
            let mut command = gst_command("faketime", scratch);
            command.args([time, "gst-launch-1.0"]);
            command
        }
        None => gst_command("gst-launch-1.0", scratch),
    };
    let output = command
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=50",
            "!",
            "video/x-raw,width=64,height=48",
        ])
        .args([
            "!",
            "streamencrypt",
            "key=000102030405060708090a0b0c0d0e0f",
            "key-id=3",
        ])
        .arg("!")
        .arg("multifilesink")
        .arg(format!("location={}/%05d.bin", dir.display()))
        .output()
        .unwrap();
    check(output, run);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let frame = std::fs::read(file).unwrap();
            let (header, _) = gststreamcrypt::sframe::Header::decode(&frame).unwrap();
            (header.kid, header.ctr)
        })
        .collect()
}

#[test]
fn a_new_process_with_the_same_key_never_reuses_a_counter() {
    // Also with the clock stopped at the same instant for both runs (a device
    // that boots at 1970 every time): counters must not depend on it.
    for clock in [None, Some("1970-01-01 00:00:01")] {
        let scratch = tempfile::tempdir().unwrap();
        let first = encrypt_in_new_process(scratch.path(), "first", clock);
        let second = encrypt_in_new_process(scratch.path(), "second", clock);
        assert_eq!(first.len(), 50);
        assert_eq!(second.len(), 50);
        assert!(first.iter().chain(&second).all(|(kid, _)| *kid == 3));
        for run in [&first, &second] {
            assert!(
                run.windows(2).all(|pair| pair[1].1 == pair[0].1 + 1),
                "{clock:?}: counters count up within a run"
            );
        }
        let (first_start, second_start) = (first[0].1, second[0].1);
        assert!(
            first_start.abs_diff(second_start) >= 50,
            "{clock:?}: the runs overlap: {first_start} and {second_start}"
        );
    }
}

#[test]
fn gst_inspect_documents_every_property_and_signal() {
    let scratch = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        (
            "streamcrypthlssink",
            &[
                "location",
                "playlist-location",
                "playlist-root",
                "target-duration",
                "playlist-length",
                "max-files",
                "key-location",
                "key-uri",
                "key-rotation",
                "key ",
                "send-keyframe-requests",
                "video",
                "audio",
            ],
        ),
        (
            "streamencrypt",
            &[
                "mode",
                "key ",
                "key-id",
                "key-file",
                "rotate-on-keyframe",
                "clear-keys-on-stop",
                "stats",
                "\"set-key\"",
                "\"ratchet-key\"",
                "aes-128-gcm",
                "aes-256-gcm",
                "livekit",
                "passphrase",
                "ratchet-salt",
                "key-size",
            ],
        ),
        (
            "streamdecrypt",
            &[
                "mode",
                "key ",
                "key-id",
                "key-file",
                "on-error",
                "replay-window",
                "max-keys",
                "clear-keys-on-stop",
                "stats",
                "\"add-key\"",
                "\"remove-key\"",
                "\"clear-keys\"",
                "\"request-key\"",
                "\"ratchet-key\"",
                "passphrase",
                "ratchet-window",
                "failure-tolerance",
            ],
        ),
        (
            "streamcryptrtpvp8pay",
            &["picture-id-mode", "mtu", "pt", "video/x-vp8"],
        ),
    ];
    for (element, names) in cases {
        let stdout = check(
            gst_command("gst-inspect-1.0", scratch.path())
                .arg(element)
                .output()
                .unwrap(),
            element,
        );
        for name in names {
            assert!(
                stdout.contains(name),
                "{element}: {name} missing:\n{stdout}"
            );
        }
        // Every property of ours has a description of its own.
        assert!(
            !stdout.contains(": (null)"),
            "{element}: undocumented property"
        );
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn python_application_rotates_keys() {
    // Debian's interpreter: it is the one that has python3-gi.
    let scratch = tempfile::tempdir().unwrap();
    let output = gst_command("/usr/bin/python3", scratch.path())
        .arg(example("rotate_keys.py"))
        .arg("2")
        .output()
        .unwrap();
    let stdout = check(output, "examples/rotate_keys.py (needs python3-gi)");
    println!("{}", stdout.trim());
}

#[test]
fn c_application_rotates_keys() {
    let scratch = tempfile::tempdir().unwrap();
    let binary = scratch.path().join("rotate_keys");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "gstreamer-1.0"])
        .output()
        .unwrap();
    let flags = check(flags, "pkg-config gstreamer-1.0");
    let compile = Command::new("cc")
        .arg(example("rotate_keys.c"))
        .args(flags.split_whitespace())
        .args(["-Wall", "-Werror", "-o"])
        .arg(&binary)
        .output()
        .unwrap();
    check(compile, "cc examples/rotate_keys.c");
    let output = gst_command(binary.to_str().unwrap(), scratch.path())
        .output()
        .unwrap();
    let stdout = check(output, "examples/rotate_keys.c");
    println!("{}", stdout.trim());
}

#[test]
fn rust_demo_rotates_keys() {
    // cargo test builds the examples next to deps/: target/<profile>/examples/demo.
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("demo");
    let scratch = tempfile::tempdir().unwrap();
    let output = gst_command(demo.to_str().unwrap(), scratch.path())
        .arg("2")
        .output()
        .unwrap();
    let stdout = check(output, "examples/demo.rs");
    assert!(
        stdout.contains("result: 60/60 frames decrypted bit-exact"),
        "{stdout}"
    );
}

#[test]
fn private_suite_vectors_regenerate_independently() {
    // scripts/private-suite-vectors.py computes them with Python's cryptography
    // (OpenSSL) and a GCM of its own, not with this crate.
    let scratch = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/private-suite-vectors.py");
    let output = gst_command("/usr/bin/python3", scratch.path())
        .arg(script)
        .output()
        .unwrap();
    let generated = check(
        output,
        "scripts/private-suite-vectors.py (needs python3-cryptography)",
    );
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sframe-private-suites.json"),
    )
    .unwrap();
    assert_eq!(generated, committed);
}
