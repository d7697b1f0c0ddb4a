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

/// Writes 5 s of H.264 video (30 fps, a keyframe a second) and AAC audio through
/// the sink into `dir`, with `options` on the sink.
fn produce(dir: &Path, options: &str) {
    init();
    let at = |name: &str| dir.join(name).display().to_string();
    let pipeline = gst::parse::launch(&format!(
        "streamcrypthlssink name=hls location={} playlist-location={} key-location={} {options} \
         videotestsrc num-buffers={FRAMES} ! video/x-raw,width=320,height=240,framerate=30/1 \
           ! openh264enc gop-size=30 ! h264parse ! hls.video \
         audiotestsrc num-buffers=235 samplesperbuffer=1024 ! audio/x-raw,rate=48000 \
           ! avenc_aac ! aacparse ! hls.audio",
        at("segment%05d.ts"),
        at("playlist.m3u8"),
        at("key%05d.key"),
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let message = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS or an error");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(err) = message.view() {
        panic!("{}: {:?}", err.error(), err.debug());
    }
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
    let pipeline = gst::parse::launch(&format!(
        "uridecodebin uri={uri} caps=video/x-raw name=decode ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
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

#[test]
fn a_bad_key_is_an_error_at_start() {
    init();
    let sink = make("streamcrypthlssink key-rotation=2");
    sink.set_property("key", "00112233445566778899aabbccddeeff");
    let bus = gst::Bus::new();
    sink.set_bus(Some(&bus));
    assert!(sink.set_state(gst::State::Ready).is_err());
    let err = first_error(&drain(&bus)).unwrap();
    assert!(err.message().contains("leave `key` unset"), "{err}");
}
