// SPDX-License-Identifier: MPL-2.0
//! `streamcrypthlssink`: AES-128 HLS that GStreamer's own hlsdemux and ffmpeg play,
//! decoding every frame; playlists, keys and files as the README promises.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use gst::prelude::*;

const FRAMES: u64 = 150;

/// Plays `pipeline` to EOS and returns every message on its way; panics on an
/// error, or when nothing ends it within 60 s.
fn run_to_eos(pipeline: &gst::Element) -> Vec<gst::Message> {
    let bus = pipeline.bus().unwrap();
    let mut messages = Vec::new();
    loop {
        let message = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .expect("EOS or an error within 60 s");
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("{}: {:?}", err.error(), err.debug());
            }
            _ => messages.push(message),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    messages
}

/// Warnings among `messages`, with their details.
fn warnings_with_details(messages: &[gst::Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(format!("{}: {:?}", w.error(), w.debug())),
            _ => None,
        })
        .collect()
}

/// The sink and its sources: 5 s of H.264 video (30 fps, a keyframe a second) and
/// AAC audio, written into `dir`, with `options` on the sink; `live` makes the
/// sources run in real time.
fn pipeline(dir: &Path, options: &str, live: bool) -> gst::Element {
    init();
    let at = |name: &str| dir.join(name).display().to_string();
    gst::parse::launch(&format!(
        "streamcrypthlssink name=hls location={} playlist-location={} key-location={} {options} \
         videotestsrc is-live={live} num-buffers={FRAMES} \
           ! video/x-raw,width=320,height=240,framerate=30/1 \
           ! openh264enc gop-size=30 ! h264parse ! hls.video \
         audiotestsrc is-live={live} num-buffers=235 samplesperbuffer=1024 \
           ! audio/x-raw,rate=48000 ! avenc_aac ! aacparse ! hls.audio",
        at("segment%05d.ts"),
        at("playlist.m3u8"),
        at("key%05d.key"),
    ))
    .unwrap()
}

/// Writes the stream through the sink into `dir`; the sink posts no warning on
/// the way, segment boundaries included.
fn produce(dir: &Path, options: &str) {
    let pipeline = pipeline(dir, options, false);
    pipeline.set_state(gst::State::Playing).unwrap();
    let warnings = warnings_with_details(&run_to_eos(&pipeline));
    assert!(warnings.is_empty(), "{warnings:#?}");
}

fn playlist(dir: &Path) -> m3u8_rs::MediaPlaylist {
    let text = std::fs::read(dir.join("playlist.m3u8")).unwrap();
    match m3u8_rs::parse_playlist_res(&text).unwrap() {
        m3u8_rs::Playlist::MediaPlaylist(playlist) => playlist,
        other => panic!("{other:?}"),
    }
}

/// Video frames GStreamer decodes from the playlist (hlsdemux, tsdemux, avdec).
fn frames_decoded_by_gstreamer(dir: &Path) -> u64 {
    let uri = glib::filename_to_uri(dir.join("playlist.m3u8"), None).unwrap();
    let pipeline = launch(&format!(
        "uridecodebin uri={uri} caps=video/x-raw name=decode ! appsink name=sink sync=false"
    ));
    let sink = app_sink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = 0;
    while sink.pull_sample().is_ok() {
        frames += 1;
    }
    let errors = drain(&pipeline.bus().unwrap());
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(first_error(&errors).is_none(), "{:?}", first_error(&errors));
    frames
}

/// Video frames ffmpeg decodes from the playlist.
fn frames_decoded_by_ffmpeg(dir: &Path) -> u64 {
    let output = Command::new("ffmpeg")
        .current_dir(dir)
        .args([
            "-v",
            "error",
            "-allowed_extensions",
            "ALL",
            "-i",
            "playlist.m3u8",
        ])
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg (Debian package ffmpeg)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .count() as u64
}

#[test]
fn vod_plays_in_hlsdemux_and_ffmpeg_with_rotating_keys() {
    let dir = tempfile::tempdir().unwrap();
    produce(
        dir.path(),
        "target-duration=1 key-rotation=2 playlist-length=0 max-files=0",
    );

    let playlist = playlist(dir.path());
    assert!(playlist.end_list, "VOD: #EXT-X-ENDLIST");
    assert!(
        playlist.segments.len() >= 4,
        "{} segments",
        playlist.segments.len()
    );
    let mut ivs = std::collections::HashSet::new();
    for (i, segment) in playlist.segments.iter().enumerate() {
        let key = segment.key.as_ref().expect("#EXT-X-KEY");
        assert_eq!(key.method, m3u8_rs::KeyMethod::AES128);
        assert_eq!(
            key.uri.as_deref(),
            Some(format!("key{:05}.key", i / 2).as_str())
        );
        assert!(ivs.insert(key.iv.clone().unwrap()), "IV reused");
        // Encrypted: an MPEG-TS segment would start with sync bytes every 188.
        let data = std::fs::read(dir.path().join(&segment.uri)).unwrap();
        assert_eq!(data.len() % 16, 0);
        assert!(
            !(data[0] == 0x47 && data[188] == 0x47),
            "{} is plaintext",
            segment.uri
        );
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        }
    }

    assert_eq!(frames_decoded_by_gstreamer(dir.path()), FRAMES);
    assert_eq!(frames_decoded_by_ffmpeg(dir.path()), FRAMES);
}

#[test]
fn live_playlist_slides_and_deletes_old_files() {
    let dir = tempfile::tempdir().unwrap();
    produce(
        dir.path(),
        "target-duration=1 playlist-length=2 max-files=3 key-rotation=1",
    );
    let playlist = playlist(dir.path());
    assert_eq!(playlist.segments.len(), 2);
    assert!(
        playlist.media_sequence >= 3,
        "media sequence {}",
        playlist.media_sequence
    );
    let count = |extension: &str| {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == extension)
            })
            .count()
    };
    assert_eq!(count("ts"), 3, "max-files");
    assert_eq!(
        count("key"),
        3,
        "one key per kept segment, the rest deleted"
    );
    // The window at the end still plays, from its first segment on.
    assert!(frames_decoded_by_ffmpeg(dir.path()) > 0);
}

#[test]
fn a_fixed_key_is_used_and_never_readable() {
    let dir = tempfile::tempdir().unwrap();
    let key = "00112233445566778899aabbccddeeff";
    produce(
        dir.path(),
        &format!("key={key} target-duration=2 playlist-length=0 max-files=0"),
    );
    let key_file = std::fs::read(dir.path().join("key00000.key")).unwrap();
    assert_eq!(key_file, (0..16u8).map(|i| i * 0x11).collect::<Vec<_>>());
    assert_eq!(frames_decoded_by_ffmpeg(dir.path()), FRAMES);

    let sink = make("streamcrypthlssink");
    let pspec = sink.find_property("key").unwrap();
    assert!(!pspec.flags().contains(glib::ParamFlags::READABLE));
}

/// A sink with `options`, writing into `dir` unless the options say otherwise,
/// and a bus to read its messages from.
fn sink_in(dir: &Path, options: &str) -> (gst::Element, gst::Bus) {
    let at = |name: &str| dir.join(name).display().to_string();
    let sink = make(&format!(
        "streamcrypthlssink location={} playlist-location={} key-location={} {options}",
        at("segment%05d.ts"),
        at("playlist.m3u8"),
        at("key%05d.key"),
    ));
    let bus = gst::Bus::new();
    sink.set_bus(Some(&bus));
    (sink, bus)
}

/// The error `sink` refuses to start with.
fn start_error(sink: &gst::Element, bus: &gst::Bus) -> glib::Error {
    assert!(
        sink.set_state(gst::State::Paused).is_err(),
        "the sink started"
    );
    let err = first_error(&drain(bus)).expect("an error message");
    sink.set_state(gst::State::Null).unwrap();
    err
}

fn assert_says(err: &glib::Error, parts: &[&str]) {
    for part in parts {
        assert!(err.message().contains(part), "{part:?} not in: {err}");
    }
}

#[test]
fn a_bad_key_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (options, says) in [
        (
            "key=00112233445566778899aabbccddeeff key-rotation=2",
            &["leave `key` unset"][..],
        ),
        (
            "key=zz112233445566778899aabbccddeeff",
            &["key: the key is not hex", "16 bytes (32 hex digits)"][..],
        ),
        (
            "key=0011",
            &["key: HLS AES-128 needs a key of 16 bytes (32 hex digits); this key has 2 bytes"][..],
        ),
    ] {
        let (sink, bus) = sink_in(dir.path(), options);
        let err = start_error(&sink, &bus);
        assert!(err.matches(gst::LibraryError::Settings), "{err}");
        assert_says(&err, says);
        assert!(
            !err.message().contains("0011"),
            "the key is not shown: {err}"
        );
    }
    // Nothing was written: no random keys in its place.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn patterns_and_folders_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let missing = dir.path().join("missing");
    let settings = |err: &glib::Error| err.matches(gst::LibraryError::Settings);
    // Options, the error's domain and code, what its message says.
    type Case = (String, fn(&glib::Error) -> bool, Vec<String>);
    let cases: [Case; 7] = [
        (
            format!("key-rotation=2 key-location={}", at("the.key")),
            settings,
            vec![
                format!("key-location=\"{}\"", at("the.key")),
                "no %d".into(),
                "key-rotation=2".into(),
                "add one".into(),
            ],
        ),
        (
            format!("location={}", at("seg%d-%d.ts")),
            settings,
            vec![
                format!("location=\"{}\"", at("seg%d-%d.ts")),
                "second number".into(),
            ],
        ),
        (
            format!("location={}", at("seg%s.ts")),
            settings,
            vec!["`%s` is not an integer conversion".into()],
        ),
        (
            format!("playlist-location={}", at("p%d.m3u8")),
            settings,
            vec![
                "playlist-location=".into(),
                "takes no number conversion".into(),
            ],
        ),
        (
            "key-uri=https://keys.example/%s".into(),
            settings,
            vec!["key-uri=\"https://keys.example/%s\"".into(), "`%s`".into()],
        ),
        (
            format!("location={}/seg%d.ts", missing.display()),
            |err| err.matches(gst::ResourceError::NotFound),
            vec![format!("the folder {} does not exist", missing.display())],
        ),
        (
            // sysfs refuses new files, even to root (as the tests may run).
            "key-location=/sys/key%d.key".into(),
            |err| err.matches(gst::ResourceError::OpenWrite),
            vec![
                "key-location=\"/sys/key%d.key\"".into(),
                "/sys does not take new files".into(),
            ],
        ),
    ];
    for (options, in_domain, parts) in cases {
        let (sink, bus) = sink_in(dir.path(), &options);
        let err = start_error(&sink, &bus);
        assert!(in_domain(&err), "{options}: {err}");
        assert_says(&err, &parts.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[test]
fn a_fixed_key_is_wiped_at_null_and_not_replaced_by_random_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, bus) = sink_in(dir.path(), "key=00112233445566778899aabbccddeeff");
    sink.set_state(gst::State::Paused).unwrap();
    // PAUSED -> READY -> PAUSED keeps it.
    sink.set_state(gst::State::Ready).unwrap();
    sink.set_state(gst::State::Paused).unwrap();
    sink.set_state(gst::State::Null).unwrap();
    assert!(first_error(&drain(&bus)).is_none());

    let err = start_error(&sink, &bus);
    assert!(err.matches(gst::LibraryError::Settings), "{err}");
    assert_says(
        &err,
        &["wiped when the sink went to NULL", "set `key` again"],
    );

    sink.set_property("key", "00112233445566778899aabbccddeeff");
    sink.set_state(gst::State::Paused).unwrap();
    sink.set_state(gst::State::Null).unwrap();
    // NULL asks for random keys.
    sink.set_property("key", None::<&str>);
    sink.set_state(gst::State::Paused).unwrap();
    sink.set_state(gst::State::Null).unwrap();
    assert!(first_error(&drain(&bus)).is_none());
}

#[test]
fn settings_do_not_change_while_playing() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let pipeline = pipeline(dir.path(), "target-duration=1 key-rotation=2", true);
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("hls")
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (changed, state, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert_eq!(
        (changed, state),
        (Ok(gst::StateChangeSuccess::Success), gst::State::Playing)
    );

    let location = sink.property::<String>("location");
    let new_location = elsewhere.path().join("s%d.ts").display().to_string();
    sink.set_property("location", &new_location);
    sink.set_property("target-duration", 7u32);
    sink.set_property("key-rotation", 0u32);
    sink.set_property("key", "00112233445566778899aabbccddeeff");
    assert_eq!(sink.property::<String>("location"), location);
    assert_eq!(sink.property::<u32>("target-duration"), 1);
    assert_eq!(sink.property::<u32>("key-rotation"), 2);

    let warnings = warnings_with_details(&run_to_eos(&pipeline));
    for name in ["location", "target-duration", "key-rotation", "key"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("{name} cannot change while the sink runs"))),
            "{name}: {warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    // The stream went on as it started: segments of 1 s where they were, keys
    // rotating every 2, none of them the key set while playing.
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    let listed = playlist(dir.path());
    assert!(listed.segments.len() >= 4, "{}", listed.segments.len());
    assert_eq!(
        listed.segments[2].key.as_ref().unwrap().uri.as_deref(),
        Some("key00001.key")
    );
    let key = std::fs::read(dir.path().join("key00000.key")).unwrap();
    assert_ne!(key, (0..16u8).map(|i| i * 0x11).collect::<Vec<_>>());
    // Back in READY, they change.
    sink.set_property("target-duration", 7u32);
    assert_eq!(sink.property::<u32>("target-duration"), 7);
}

#[test]
fn notify_handlers_may_read_the_sink_properties() {
    use std::sync::{Arc, Mutex, mpsc};
    let dir = tempfile::tempdir().unwrap();
    let (sink, _bus) = sink_in(dir.path(), "");
    let splitmuxsink = sink
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .iterate_elements()
        .into_iter()
        .map(Result::unwrap)
        .find(|e| e.factory().unwrap().name() == "splitmuxsink")
        .unwrap();
    // Handlers on the child and on the sink itself read the sink's properties.
    let seen = Arc::new(Mutex::new(Vec::new()));
    splitmuxsink.connect_notify(Some("max-size-time"), {
        let (seen, sink) = (seen.clone(), sink.downgrade());
        move |_, _| {
            let sink = sink.upgrade().unwrap();
            seen.lock()
                .unwrap()
                .push(sink.property::<u32>("target-duration"));
        }
    });
    sink.connect_notify(Some("target-duration"), {
        let seen = seen.clone();
        move |sink, _| {
            let _ = sink.property::<String>("location");
            seen.lock()
                .unwrap()
                .push(sink.property::<u32>("target-duration"));
        }
    });
    let (done, finished) = mpsc::channel();
    std::thread::spawn({
        let sink = sink.clone();
        move || {
            sink.set_property("target-duration", 3u32);
            sink.set_state(gst::State::Paused).unwrap();
            done.send(()).unwrap();
        }
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("setting the property and starting return (a deadlock does not)");
    assert_eq!(
        splitmuxsink.property::<u64>("max-size-time"),
        3 * gst::ClockTime::SECOND.nseconds()
    );
    assert_eq!(*seen.lock().unwrap(), [3, 3]);
    sink.set_state(gst::State::Null).unwrap();
}

#[test]
fn the_readme_example_is_the_one_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("## HLS with AES-128").unwrap()..];
    let start = section.find("```sh\n").unwrap() + "```sh\n".len();
    let example = section[start..][..section[start..].find("```").unwrap()].trim_end();
    assert!(example.contains("is-live=true num-buffers="), "{example}");
    let script = std::fs::read_to_string(root.join("pipelines/hls.sh")).unwrap();
    assert!(
        script.contains(example),
        "pipelines/hls.sh does not run the README's example:\n{example}"
    );
}
