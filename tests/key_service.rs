// SPDX-License-Identifier: MPL-2.0
//! The elements with `key-server`, against the real `streamcrypt-keys serve` on
//! loopback: rotation through key periods with no frame lost, a decrypter that
//! joins late, grants that expire (answered or not), refusals at start that name
//! their cause, and HLS whose key URIs point at the service.

mod common;
#[path = "common/key_service.rs"]
mod key_service;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gst::prelude::*;
use key_service::{KeyService, unix_now, unused_url};

const STREAM: &str = "room1";

/// `element` (e.g. `streamencrypt`) taking keys from `service` for `STREAM`
/// with `grant`, and `options`.
fn keyed(element: &str, server: &str, grant: &str, options: &str) -> gst::Element {
    let element = make(&format!(
        "{element} key-server={server} stream-id={STREAM} {options}"
    ));
    if !grant.is_empty() {
        element.set_property("grant", grant);
    }
    element
}

/// Starts `element` alone and returns the error it posts; it must not start.
fn start_error(element: &gst::Element) -> String {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(
        element.set_state(gst::State::Paused).is_err(),
        "{} started",
        element.name()
    );
    let messages = drain(&bus);
    element.set_state(gst::State::Null).unwrap();
    first_error(&messages)
        .expect("an error message")
        .to_string()
}

fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not say {part:?}");
    }
}

/// Pushes `buffer` through `pipeline` and returns what came out.
fn through(pipeline: &AppPipeline, buffer: gst::Buffer) -> gst::Buffer {
    pipeline.src.push_buffer(buffer).unwrap();
    let sample = pipeline
        .sink
        .try_pull_sample(gst::ClockTime::from_seconds(TIMEOUT.as_secs()))
        .unwrap_or_else(|| {
            let messages = drain(&pipeline.pipeline.bus().unwrap());
            panic!("no output: {:?}", first_error(&messages))
        });
    sample.buffer_owned().unwrap()
}

/// The `streamcrypt-key-switch` messages among `messages`: (previous, kid).
fn key_switches(messages: &[gst::Message]) -> Vec<(u64, u64)> {
    messages
        .iter()
        .filter_map(|m| m.structure())
        .filter(|s| s.name() == "streamcrypt-key-switch")
        .map(|s| {
            (
                s.get::<u64>("previous-kid").unwrap(),
                s.get::<u64>("kid").unwrap(),
            )
        })
        .collect()
}

#[test]
fn publisher_and_late_decrypter_rotate_through_ten_periods_losing_nothing() {
    let service = KeyService::start(1);
    let publish = service.grant("alice", STREAM, "0xff", 600);
    let watch = service.grant("bob", STREAM, "0xab", 600);
    let encrypter = keyed("streamencrypt", &service.url, &publish, "");
    let decrypter = keyed("streamdecrypt", &service.url, &watch, "");
    let publisher = AppPipeline::new(&[&encrypter]);
    let watcher = AppPipeline::new(&[&decrypter]);
    publisher.pipeline.set_state(gst::State::Playing).unwrap();

    let mut published = Vec::new();
    let mut watched = Vec::new();
    let mut i = 0;
    // Ten key switches seen by the decrypter, which joins once the publisher
    // has gone through two periods.
    while watched.windows(2).filter(|w| w[0] != w[1]).count() < 10 {
        assert!(i < 10_000, "no 10 key switches after {i} buffers");
        let encrypted = through(&publisher, media_buffer(i));
        let (kid, _) = sframe_header(&encrypted);
        published.push(kid);
        let periods = published.windows(2).filter(|w| w[0] != w[1]).count();
        if periods >= 2 {
            if watched.is_empty() {
                watcher.pipeline.set_state(gst::State::Playing).unwrap();
            }
            let decrypted = through(&watcher, encrypted);
            assert_is_media_buffer(&decrypted, i);
            watched.push(kid);
        }
        i += 1;
        // The periods are wall-clock seconds: let time pass between buffers.
        std::thread::sleep(Duration::from_millis(40));
    }
    // Every KID is the one after the last: no period skipped.
    let mut kids = published.clone();
    kids.dedup();
    assert!(kids.windows(2).all(|w| w[1] == w[0] + 1), "{kids:?}");
    assert_eq!(stat(&encrypter, "kid"), *published.last().unwrap());
    assert_eq!(stat(&decrypter, "dropped"), 0, "{:?}", stats(&decrypter));
    assert_eq!(stat(&decrypter, "key-switches"), 10);
    let messages = drain(&watcher.pipeline.bus().unwrap());
    let switches = key_switches(&messages);
    assert_eq!(switches.len(), 10, "{switches:?}");
    assert!(switches.iter().all(|(from, to)| *to == from + 1));
    assert!(first_error(&messages).is_none());
    watcher.stop();
    publisher.stop();
    // The service logged the publisher's and the decrypter's requests by user.
    let log = service.log();
    assert!(log.contains("alice") && log.contains("bob"), "{log}");
}

#[test]
fn start_refusals_name_their_cause() {
    let service = KeyService::start(60);
    let url = &service.url;
    let publish = service.grant("alice", STREAM, "0xff", 600);
    let watch = service.grant("bob", STREAM, "0xab", 600);
    let other_stream = service.grant("carol", "room2", "0xff", 600);
    let short = service.grant("dave", STREAM, "0xff", 1);
    let foreign = key_service::Issuer::new().grant("eve", STREAM, "0xff", 600);
    let cases: Vec<(gst::Element, Vec<&str>)> = vec![
        (
            keyed("streamencrypt", url, "", ""),
            vec!["key-server is set", "no grant: set grant or grant-file"],
        ),
        (
            make(&format!("streamencrypt key-server={url}")),
            vec!["stream-id is not"],
        ),
        (
            keyed("streamencrypt", url, &publish, "stream-id=a/b"),
            vec!["stream-id \"a/b\" is not a stream name"],
        ),
        (
            keyed("streamencrypt", url, &publish, "mode=sm4-ecb"),
            vec!["key-server needs an SFrame mode", "carry the KID"],
        ),
        (
            keyed("streamencrypt", url, &publish, &format!("key={KEY_A}")),
            vec!["key-server and key are both set"],
        ),
        (
            keyed("streamdecrypt", url, &watch, &format!("key={KEY_A}")),
            vec!["key-server and key are both set"],
        ),
        (
            keyed("streamencrypt", url, &watch, ""),
            vec![
                "user bob has rights 0xab (watch only)",
                "a publisher needs publish and watch rights",
            ],
        ),
        (
            keyed("streamencrypt", url, &other_stream, ""),
            vec!["user carol is for stream \"room2\", not stream-id \"room1\""],
        ),
        (
            keyed("streamdecrypt", url, &other_stream, ""),
            vec!["is for stream \"room2\""],
        ),
        (
            keyed("streamencrypt", &unused_url(), &publish, ""),
            vec!["Cannot start", "cannot be reached"],
        ),
        (
            keyed("streamdecrypt", &unused_url(), &watch, ""),
            vec!["Cannot start", "cannot be reached"],
        ),
        (
            keyed("streamencrypt", url, &foreign, ""),
            vec!["answered 401 Unauthorized", "signature"],
        ),
        (
            keyed("streamdecrypt", url, &foreign, ""),
            vec!["answered 401 Unauthorized"],
        ),
        (
            keyed("streamencrypt", url, &publish, "key-period=5"),
            vec!["key-period is 5 s", "every 60 s", "key-period=0"],
        ),
        (
            keyed("streamcrypthlssink", url, &publish, "key-rotation=2"),
            vec!["key-rotation=2", "service's key period"],
        ),
        (
            keyed(
                "streamcrypthlssink",
                url,
                &publish,
                &format!("playlist-grant={publish}"),
            ),
            vec!["playlist-grant", "must not have publish rights"],
        ),
    ];
    for (element, parts) in cases {
        assert_says(&start_error(&element), &parts);
    }
    // A grant that has expired.
    while unix_now() < Grant::exp_of(&short) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let element = keyed("streamencrypt", url, &short, "");
    assert_says(
        &start_error(&element),
        &["the grant of user dave", "grant expired at"],
    );
}

/// Reads a grant's `exp` claim.
struct Grant;

impl Grant {
    fn exp_of(token: &str) -> u64 {
        gststreamcrypt::grant::Claims::peek(token).unwrap().exp
    }
}

#[test]
fn grants_are_write_only_and_documented() {
    init();
    for factory in ["streamencrypt", "streamdecrypt", "streamcrypthlssink"] {
        let element = gst::ElementFactory::make(factory).build().unwrap();
        for name in ["key-server", "grant", "grant-file", "stream-id"] {
            let pspec = element
                .find_property(name)
                .unwrap_or_else(|| panic!("{factory} has no {name}"));
            assert!(
                pspec.blurb().is_some_and(|b| b.len() > 40),
                "{factory} {name}"
            );
            let readable = pspec.flags().contains(glib::ParamFlags::READABLE);
            assert_eq!(readable, name != "grant", "{factory} {name}");
        }
        assert!(
            glib::subclass::signal::SignalId::lookup("grant-expiring", element.type_()).is_some(),
            "{factory}"
        );
    }
    let sink = make("streamcrypthlssink");
    let pspec = sink.find_property("playlist-grant").unwrap();
    assert!(!pspec.flags().contains(glib::ParamFlags::READABLE));
    let encrypter = make("streamencrypt key-period=0");
    assert_eq!(encrypter.property::<u32>("key-period"), 0);
    let decrypter = make("streamdecrypt");
    assert_eq!(decrypter.property::<u32>("key-wait"), 2000);
}

#[test]
fn a_grant_file_is_read_and_an_exposed_one_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let service = KeyService::start(60);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grant");
    let watch = service.grant("bob", STREAM, "0xab", 600);
    std::fs::write(&file, format!("{watch}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let decrypter = make(&format!(
        "streamdecrypt key-server={} stream-id={STREAM} grant-file={}",
        service.url,
        file.display()
    ));
    let bus = gst::Bus::new();
    decrypter.set_bus(Some(&bus));
    decrypter.set_state(gst::State::Paused).unwrap();
    let messages = drain(&bus);
    decrypter.set_state(gst::State::Null).unwrap();
    let warned = warnings(&messages);
    assert!(
        warned.iter().any(|w| w.contains("can be read by others")),
        "{warned:?}"
    );
    assert_eq!(
        stats(&decrypter).get::<u32>("keys").unwrap(),
        0,
        "keys cleared on stop"
    );
}

/// A publisher with a long grant, and a decrypter whose grant expires after
/// `ttl` seconds; `renew` answers `grant-expiring`. Frames flow until the
/// decrypter's grant has expired and two more key periods have gone by, or
/// until an error. Returns the expiries `grant-expiring` was emitted for and
/// the decrypter's bus messages.
fn play_past_expiry(service: &KeyService, ttl: u64, renew: bool) -> (Vec<u64>, Vec<gst::Message>) {
    let publish = service.grant("alice", STREAM, "0xff", 600);
    let short = service.grant("carol", STREAM, "0xab", ttl);
    let exp = Grant::exp_of(&short);
    let encrypter = keyed("streamencrypt", &service.url, &publish, "");
    let decrypter = keyed("streamdecrypt", &service.url, &short, "");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let renewed = service.grant("carol", STREAM, "0xab", 600);
    let seen = asked.clone();
    decrypter.connect("grant-expiring", false, move |args| {
        seen.lock().unwrap().push(args[1].get::<u64>().unwrap());
        Some(renew.then(|| renewed.clone()).to_value())
    });
    let publisher = AppPipeline::new(&[&encrypter]);
    let watcher = AppPipeline::new(&[&decrypter]);
    publisher.pipeline.set_state(gst::State::Playing).unwrap();
    watcher.pipeline.set_state(gst::State::Playing).unwrap();
    let bus = watcher.pipeline.bus().unwrap();
    let mut messages = Vec::new();
    let mut i = 0;
    while unix_now() < exp + 2 && first_error(&messages).is_none() {
        let encrypted = through(&publisher, media_buffer(i));
        watcher.src.push_buffer(encrypted).unwrap();
        if renew {
            let decrypted = watcher
                .sink
                .try_pull_sample(gst::ClockTime::from_seconds(TIMEOUT.as_secs()))
                .expect("decrypted");
            assert_is_media_buffer(decrypted.buffer().unwrap(), i);
        }
        messages.extend(drain(&bus));
        i += 1;
        std::thread::sleep(Duration::from_millis(40));
    }
    if !renew && first_error(&messages).is_none() {
        // The error comes from the decrypter's key-service thread.
        let error = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(TIMEOUT.as_secs()),
            &[gst::MessageType::Error],
        );
        messages.extend(error);
    }
    watcher.pipeline.set_state(gst::State::Null).unwrap();
    publisher.stop();
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.first(), Some(&exp), "grant-expiring names the expiry");
    (asked, messages)
}

#[test]
fn an_answered_grant_expiring_keeps_playback_going() {
    let service = KeyService::start(1);
    let (asked, messages) = play_past_expiry(&service, 4, true);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        first_error(&messages).is_none(),
        "{:?}",
        first_error(&messages)
    );
}

#[test]
fn an_unanswered_grant_expiring_ends_in_an_error_naming_the_expiry() {
    let service = KeyService::start(1);
    let (asked, messages) = play_past_expiry(&service, 3, false);
    let exp = asked[0];
    let error = first_error(&messages).expect("an error").to_string();
    assert_says(
        &error,
        &["the grant of user carol expired at", &exp.to_string()],
    );
}

const HLS_FRAMES: u64 = 90;

/// Writes 3 s of H.264 through `streamcrypthlssink` with keys from `service`
/// into `dir`, the playlist carrying `playlist_grant`.
fn produce_hls(service: &KeyService, dir: &std::path::Path, playlist_grant: &str) {
    let publish = service.grant("alice", STREAM, "0xff", 600);
    let pipeline = launch(&format!(
        "streamcrypthlssink name=hls key-server={} stream-id={STREAM} target-duration=1 \
           playlist-length=0 max-files=0 location={} playlist-location={} \
         videotestsrc num-buffers={HLS_FRAMES} \
           ! video/x-raw,width=320,height=240,framerate=30/1 \
           ! openh264enc gop-size=30 ! h264parse ! hls.video",
        service.url,
        dir.join("segment%05d.ts").display(),
        dir.join("playlist.m3u8").display(),
    ));
    let sink = pipeline.by_name("hls").unwrap();
    sink.set_property("grant", &publish);
    sink.set_property("playlist-grant", playlist_grant);
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let end = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(TIMEOUT.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(err) = end.view() {
        panic!("{}: {:?}", err.error(), err.debug());
    }
}

/// The decoded video (I420) GStreamer's hlsdemux plays from `dir`, and
/// whether it posted an error.
fn hls_by_gstreamer(dir: &std::path::Path) -> (Vec<u8>, bool) {
    let uri = glib::filename_to_uri(dir.join("playlist.m3u8"), None).unwrap();
    let pipeline = launch(&format!(
        "uridecodebin uri={uri} caps=video/x-raw ! appsink name=sink sync=false \
           caps=video/x-raw,format=I420"
    ));
    let sink = app_sink(&pipeline, "sink");
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut video = Vec::new();
    let mut failed = false;
    // Until EOS or an error (after which no EOS comes).
    wait_until("hlsdemux to end", || {
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            video.extend_from_slice(&sample.buffer().unwrap().map_readable().unwrap());
        }
        failed |= first_error(&drain(&bus)).is_some();
        failed || sink.is_eos()
    });
    pipeline.set_state(gst::State::Null).unwrap();
    (video, failed)
}

/// The decoded video (yuv420p) ffmpeg plays from `dir`, and whether it
/// succeeded.
fn hls_by_ffmpeg(dir: &std::path::Path) -> (Vec<u8>, bool) {
    let output = std::process::Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-v", "error", "-allowed_extensions", "ALL"])
        .args(["-protocol_whitelist", "file,http,tcp,crypto"])
        .args(["-i", "playlist.m3u8", "-map", "0:v"])
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .expect("ffmpeg (Debian package ffmpeg)");
    (output.stdout, output.status.success())
}

#[test]
fn hls_keys_come_from_the_service_with_the_token_in_the_playlist() {
    let service = KeyService::start(1);
    let viewers = service.grant("viewers", STREAM, "0xab", 600);
    let dir = tempfile::tempdir().unwrap();
    produce_hls(&service, dir.path(), &viewers);

    let text = std::fs::read(dir.path().join("playlist.m3u8")).unwrap();
    let m3u8_rs::Playlist::MediaPlaylist(playlist) = m3u8_rs::parse_playlist_res(&text).unwrap()
    else {
        panic!("not a media playlist");
    };
    assert!(playlist.segments.len() >= 3);
    let prefix = format!("{}/v1/streams/{STREAM}/keys/", service.url);
    for segment in &playlist.segments {
        let uri = segment.key.as_ref().unwrap().uri.clone().unwrap();
        let kid = uri
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('?'))
            .unwrap_or_else(|| panic!("{uri} is not the service's key URL"))
            .0;
        assert!(kid.parse::<u64>().is_ok(), "{uri}");
        assert!(
            uri.ends_with(&format!("?bits=128&format=raw&token={viewers}")),
            "{uri}"
        );
    }
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|name| !name.ends_with(".key")),
        "{files:?}"
    );

    let (gstreamer, failed) = hls_by_gstreamer(dir.path());
    assert!(!failed);
    let frame = 320 * 240 * 3 / 2;
    assert_eq!(gstreamer.len(), HLS_FRAMES as usize * frame);
    let (ffmpeg, played) = hls_by_ffmpeg(dir.path());
    assert!(played);
    assert!(
        ffmpeg == gstreamer,
        "ffmpeg and hlsdemux decode the same frames"
    );

    // With a token that has expired, neither player gets a key, and the
    // service refused them.
    let expiring = service.grant("viewers", STREAM, "0xab", 2);
    let expired_dir = tempfile::tempdir().unwrap();
    produce_hls(&service, expired_dir.path(), &expiring);
    while unix_now() < Grant::exp_of(&expiring) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused_before = service.log().matches(" 401 ").count();
    let (gstreamer, _) = hls_by_gstreamer(expired_dir.path());
    assert!(
        gstreamer.is_empty(),
        "hlsdemux decoded {} bytes",
        gstreamer.len()
    );
    let (ffmpeg, _) = hls_by_ffmpeg(expired_dir.path());
    assert!(ffmpeg.is_empty(), "ffmpeg decoded {} bytes", ffmpeg.len());
    let log = service.log();
    assert!(
        log.matches(" 401 ").count() > refused_before,
        "no 401 in the service's log:\n{log}"
    );
}

#[test]
fn a_frame_whose_key_cannot_be_fetched_is_dropped_and_counted_with_the_reason() {
    let mut service = KeyService::start(60);
    let watch = service.grant("bob", STREAM, "0xab", 600);
    let decrypter = keyed("streamdecrypt", &service.url, &watch, "");
    let (mut h, bus) = harness(&decrypter);
    h.play();
    // The service goes away: the next KID's key cannot come.
    service.stop();
    let (mut encrypter, _) = encrypter(KEY_A, u64::from(u32::MAX));
    encrypter.play();
    let frame = encrypter.push_and_pull(media_buffer(0)).unwrap();
    assert_eq!(
        h.push(frame),
        Ok(gst::FlowSuccess::Ok),
        "dropped, not an error (on-error=drop)"
    );
    assert_eq!(h.buffers_in_queue(), 0);
    assert_eq!(stat(&decrypter, "dropped-no-key"), 1);
    assert!(stat(&decrypter, "key-requests") >= 1);
    let said = warnings(&drain(&bus)).join("\n");
    assert_says(&said, &[&format!("KID {}", u32::MAX), "cannot be reached"]);
}
