// SPDX-License-Identifier: MPL-2.0
//! The stretch goal of LiveKit interop, end to end: headless Chromium receives
//! our VP8 stream over WebRTC (`videotestsrc ! vp8enc ! streamencrypt
//! mode=livekit ! streamcryptrtpvp8pay ! webrtcbin`, on loopback) and decrypts
//! it with livekit-client's own E2EE worker in the receiver's encoded
//! transform; the decoded pixels must show what was sent. Receivers fed the
//! same packets with a wrong key, the right key at the wrong key index, or no
//! decryption at all must show none of it. Run by scripts/browser-test.sh
//! (tests/browser/README.md); this file only judges the report it prints.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::gst_command;
use serde_json::Value;

/// The whole run, npm installs included; the run itself stops at 90 s.
const TIMEOUT_SECONDS: u32 = 120;
const RUN_TIMEOUT_MS: u32 = 90_000;

/// What a receiver of a case must show.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Every picture the sender sent, in order: the receiver with the right key.
    Pictures,
    /// Nothing decoded; LiveKit's worker drops every frame and reports this reason.
    Dropped(&'static str),
    /// No decryption: whatever the decoder makes of ciphertext, none of the pictures.
    NoPicture,
}

/// Every case and receiver run.mjs runs, and what each must show.
const EXPECTED: [(&str, &str, Expect); 6] = [
    ("raw-key", "livekit", Expect::Pictures),
    ("raw-key", "wrong-key", Expect::Dropped("InvalidKey")),
    ("raw-key", "wrong-key-index", Expect::Dropped("MissingKey")),
    ("raw-key", "no-e2ee", Expect::NoPicture),
    ("passphrase", "livekit", Expect::Pictures),
    (
        "passphrase",
        "wrong-passphrase",
        Expect::Dropped("InvalidKey"),
    ),
];

fn number(value: &Value, path: &str) -> u64 {
    value
        .pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {path} in {value}"))
}

fn strings(value: &Value, path: &str) -> Vec<String> {
    value
        .pointer(path)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array at {path} in {value}"))
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

/// Frames presented in each state ("smpte", "rrggbb", "other").
fn frames_in(receiver: &Value) -> BTreeMap<String, u64> {
    receiver["framesIn"]
        .as_object()
        .unwrap_or_else(|| panic!("no framesIn in {receiver}"))
        .iter()
        .map(|(state, n)| (state.clone(), n.as_u64().unwrap()))
        .collect()
}

fn check_receiver(case: &Value, receiver: &Value, expect: Expect) {
    let name = format!("{}/{}", case["case"], receiver["name"]);
    let pictures = strings(case, "/pictures");
    let per_picture = number(case, "/framesPerPicture");
    let shown = frames_in(receiver);
    let errors = strings(receiver, "/workerErrors");
    let packets = number(receiver, "/inbound/packetsReceived");
    assert!(packets > 0, "{name} received no packets: {receiver}");
    match expect {
        Expect::Pictures => {
            for picture in &pictures {
                let frames = shown.get(picture).copied().unwrap_or(0);
                assert!(
                    frames >= per_picture,
                    "{name} presented {frames} frames of {picture}, expected at least \
                     {per_picture}: {receiver}"
                );
            }
            // In the order sent: the first frame of each picture after the previous one's.
            let runs = receiver["runs"].as_array().unwrap();
            let first = |picture: &str| runs.iter().position(|run| run["state"] == picture);
            let order: Vec<_> = pictures.iter().map(|p| first(p).unwrap()).collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "{name} presented the pictures out of order ({pictures:?} first at runs \
                 {order:?}): {receiver}"
            );
            // The pictures changed in delta frames (3 clear bytes, not 10): most of what was
            // decoded must be delta frames, or they did not get through and keyframes (which
            // this receiver may request) stood in for them.
            let decoded = number(receiver, "/inbound/framesDecoded");
            let keyframes = number(receiver, "/inbound/keyFramesDecoded");
            assert!(
                keyframes >= 1 && decoded - keyframes > decoded / 2,
                "{name} decoded {decoded} frames of which {keyframes} keyframes: {receiver}"
            );
            assert!(
                errors.is_empty(),
                "LiveKit's worker reported errors for {name}: {errors:?}"
            );
        }
        Expect::Dropped(reason) => {
            assert!(
                shown.is_empty() && number(receiver, "/inbound/framesDecoded") == 0,
                "{name} decoded frames without the right key: {receiver}"
            );
            assert!(
                errors.iter().any(|e| e.starts_with(reason)),
                "LiveKit's worker did not report {reason} for {name}: {errors:?}"
            );
        }
        Expect::NoPicture => {
            let seen: Vec<_> = pictures.iter().filter(|p| shown.contains_key(*p)).collect();
            assert!(
                seen.is_empty(),
                "{name} showed {seen:?} without decrypting: the stream is not encrypted? \
                 {receiver}"
            );
        }
    }
}

fn check_case(case: &Value) {
    let name = case["case"].as_str().unwrap();
    let sender = &case["sender"];
    assert_eq!(
        sender["exit"]["code"], 0,
        "{name}: the sender did not stop cleanly: {sender}"
    );
    let keyframes = number(sender, "/stats/keyframes");
    let deltas = number(sender, "/stats/deltaFrames");
    assert_eq!(
        number(sender, "/stats/encrypted"),
        keyframes + deltas,
        "{name}: streamencrypt's buffer count is not the frames encoded: {sender}"
    );
    assert_eq!(
        number(sender, "/stats/kid"),
        number(case, "/keyId"),
        "{name}: streamencrypt used another key id: {sender}"
    );
    let receivers = case["receivers"].as_array().unwrap_or_else(|| {
        panic!("{name}: no receiver report: {}", case["receivers"]);
    });
    let expected: Vec<_> = EXPECTED.iter().filter(|(c, ..)| *c == name).collect();
    let names: Vec<_> = receivers
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        expected.iter().map(|(_, r, _)| *r).collect::<Vec<_>>(),
        "{name}: not the receivers this test knows"
    );
    for (receiver, (_, _, expect)) in receivers.iter().zip(expected) {
        check_receiver(case, receiver, *expect);
    }
}

/// One line per case for the test log (`cargo test --test browser -- --nocapture`).
fn summary(report: &Value) -> String {
    let mut lines = vec![format!(
        "Chromium {} on {}, livekit-client {}, {} s in all",
        report["browser"],
        report["network"],
        report
            .pointer("/cases/0/livekitClient")
            .unwrap_or(&Value::Null),
        report["seconds"]
    )];
    for case in report["cases"].as_array().into_iter().flatten() {
        let receivers = case["receivers"].as_array().into_iter().flatten();
        let shown: Vec<String> = receivers
            .map(|r| {
                format!(
                    "{} presented {} frames {}",
                    r["name"], r["presented"], r["framesIn"]
                )
            })
            .collect();
        lines.push(format!(
            "  {} ({} s; sender {} keyframes, {} delta frames): {}",
            case["case"],
            case["seconds"],
            case["sender"]["stats"]["keyframes"],
            case["sender"]["stats"]["deltaFrames"],
            shown.join("; ")
        ));
    }
    lines.join("\n")
}

#[test]
fn chromium_decrypts_our_vp8_with_livekits_worker() {
    let scratch = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser-test.sh");
    let output = gst_command("timeout", scratch.path())
        .args(["-k", "5", &TIMEOUT_SECONDS.to_string(), "sh"])
        .arg(&script)
        .env("BROWSER_TEST_TIMEOUT_MS", RUN_TIMEOUT_MS.to_string())
        .output()
        .expect("timeout(1) from coreutils");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(124),
        "scripts/browser-test.sh did not finish within {TIMEOUT_SECONDS} s; stderr: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "scripts/browser-test.sh printed no report ({}); stdout: {stdout}; \
                 stderr: {stderr}",
                output.status
            )
        });
    eprintln!("{}", summary(&report));
    assert_eq!(
        report["ok"], true,
        "the browser test did not run to its end: {}\nreport: {report}\nstderr: {stderr}",
        report["error"]
    );
    assert!(output.status.success(), "{}: {stderr}", output.status);
    let cases = report["cases"].as_array().unwrap();
    let names: Vec<_> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(names, ["raw-key", "passphrase"]);
    for case in cases {
        check_case(case);
    }
}
