// SPDX-License-Identifier: MPL-2.0
//! `streamcryptrtpvp8pay`: the RFC 7741 packets it writes (checked bit by bit
//! here, not with the crate's own code), and that GStreamer's own
//! `rtpvp8depay` reads them back, from plain frames and from frames scrambled
//! after their codec header as end-to-end encryption leaves them.

mod common;

use common::{drain, first_error, launch, make, warnings};
use gst::prelude::*;
use gst_check::Harness;

const PT: u32 = 100;
const SSRC: u32 = 0x1234_5678;
const FRAME_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(40);
/// RTP ticks (90 kHz) per frame of 40 ms.
const TICKS_PER_FRAME: u32 = 3600;

/// Deterministic pseudo-random numbers (xorshift64*), so that a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A started harness around a payloader made from `properties` (gst-launch
/// syntax), with a bus to read its messages from; RTP timestamps and
/// sequence numbers start from 0 so that they can be checked.
fn payloader(properties: &str) -> (Harness, gst::Bus) {
    let element = make(&format!(
        "streamcryptrtpvp8pay pt={PT} ssrc={SSRC} timestamp-offset=0 seqnum-offset=0 {properties}"
    ));
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-vp8, width=320, height=240, framerate=25/1");
    (h, bus)
}

/// Frame `index` of a stream: `bytes` with its timestamps, and DELTA_UNIT
/// unless it is a keyframe.
fn frame(bytes: Vec<u8>, index: u64, keyframe: bool, droppable: bool) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(bytes);
    let b = buffer.get_mut().unwrap();
    b.set_pts(FRAME_DURATION * index);
    b.set_duration(FRAME_DURATION);
    let mut flags = gst::BufferFlags::empty();
    if !keyframe {
        flags |= gst::BufferFlags::DELTA_UNIT;
    }
    if droppable {
        flags |= gst::BufferFlags::DROPPABLE;
    }
    b.set_flags(flags);
    buffer
}

/// The payload descriptor of one packet, read by hand from RFC 7741 section 4.2.
#[derive(Debug, PartialEq, Eq)]
struct Descriptor {
    non_reference: bool,
    start: bool,
    /// The PictureID and whether it has 15 bits (M=1).
    picture_id: Option<(u16, bool)>,
    len: usize,
}

fn descriptor(payload: &[u8]) -> Descriptor {
    let first = payload[0];
    assert_eq!(first & 0x40, 0, "first R bit set: {first:#04x}");
    assert_eq!(first & 0x08, 0, "second R bit set: {first:#04x}");
    assert_eq!(first & 0x07, 0, "PID not 0: {first:#04x}");
    let mut d = Descriptor {
        non_reference: first & 0x20 != 0,
        start: first & 0x10 != 0,
        picture_id: None,
        len: 1,
    };
    if first & 0x80 != 0 {
        let extension = payload[1];
        // I=1, and no L, T, K or reserved bits: there is nothing but the PictureID.
        assert_eq!(extension, 0x80, "extension byte {extension:#04x}");
        let m = payload[2] & 0x80 != 0;
        d.picture_id = Some(if m {
            (u16::from_be_bytes([payload[2] & 0x7f, payload[3]]), true)
        } else {
            (u16::from(payload[2]), false)
        });
        d.len = if m { 4 } else { 3 };
    }
    d
}

/// One RTP packet, read with GStreamer's RTP parser.
#[derive(Debug)]
struct Packet {
    seq: u16,
    timestamp: u32,
    marker: bool,
    csrcs: Vec<u32>,
    size: usize,
    flags: gst::BufferFlags,
    pts: Option<gst::ClockTime>,
    descriptor: Descriptor,
    /// The bytes of the frame it carries.
    frame_bytes: Vec<u8>,
}

fn packet(buffer: &gst::Buffer) -> Packet {
    let rtp = gst_rtp::RTPBuffer::from_buffer_readable(buffer).expect("an RTP packet");
    assert_eq!(u32::from(rtp.payload_type()), PT);
    assert_eq!(rtp.ssrc(), SSRC);
    assert!(!rtp.is_extension() && !rtp.has_padding());
    let payload = rtp.payload().unwrap();
    let descriptor = descriptor(payload);
    Packet {
        seq: rtp.seq(),
        timestamp: rtp.timestamp(),
        marker: rtp.is_marker(),
        csrcs: (0..rtp.csrc_count())
            .map(|i| rtp.csrc(i).unwrap())
            .collect(),
        size: buffer.size(),
        flags: buffer.flags(),
        pts: buffer.pts(),
        frame_bytes: payload[descriptor.len..].to_vec(),
        descriptor,
    }
}

/// Pushes `frame` and returns its packets.
fn payload_frame(h: &mut Harness, frame: gst::Buffer) -> Vec<Packet> {
    assert_eq!(h.push(frame), Ok(gst::FlowSuccess::Ok));
    std::iter::from_fn(|| h.try_pull())
        .map(|b| packet(&b))
        .collect()
}

/// The layout of every packet of `frames` (index, bytes, keyframe, droppable)
/// at `mtu`, with 15-bit PictureIDs from `first_id`.
fn check_layout(mtu: usize, first_id: u16, frames: &[(u64, Vec<u8>, bool, bool)]) {
    let (mut h, bus) = payloader(&format!("mtu={mtu} picture-id-offset={first_id}"));
    let mut seq = 0u16;
    for (n, (index, bytes, keyframe, droppable)) in frames.iter().enumerate() {
        let what = format!("mtu {mtu}, frame {n} of {} bytes", bytes.len());
        let packets = payload_frame(&mut h, frame(bytes.clone(), *index, *keyframe, *droppable));
        // As few packets as fit: RTP header 12 bytes, descriptor 4.
        assert_eq!(packets.len(), bytes.len().div_ceil(mtu - 16), "{what}");
        let picture_id = (u32::from(first_id) + n as u32) as u16 & 0x7fff;
        let mut reassembled = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == packets.len();
            assert!(p.size <= mtu, "{what}: packet {i} is {} bytes", p.size);
            assert!(!p.frame_bytes.is_empty(), "{what}: packet {i} is empty");
            assert_eq!(
                p.descriptor,
                Descriptor {
                    non_reference: *droppable,
                    start: first,
                    picture_id: Some((picture_id, true)),
                    len: 4,
                },
                "{what}: packet {i}"
            );
            assert_eq!(p.marker, last, "{what}: marker of packet {i}");
            assert_eq!(
                p.flags.contains(gst::BufferFlags::MARKER),
                last,
                "{what}: MARKER flag of packet {i}"
            );
            // Only the first packet of a keyframe is a place to start decoding.
            assert_eq!(
                p.flags.contains(gst::BufferFlags::DELTA_UNIT),
                !(first && *keyframe),
                "{what}: DELTA_UNIT of packet {i}"
            );
            assert_eq!(p.seq, seq, "{what}: sequence number of packet {i}");
            seq = seq.wrapping_add(1);
            assert_eq!(p.timestamp, *index as u32 * TICKS_PER_FRAME, "{what}");
            assert_eq!(p.pts, Some(FRAME_DURATION * *index), "{what}");
            assert!(p.csrcs.is_empty());
            reassembled.extend_from_slice(&p.frame_bytes);
        }
        assert!(reassembled == *bytes, "{what}: reassembled frame differs");
    }
    assert!(warnings(&drain(&bus)).is_empty());
}

/// Random frames (not VP8 at all: nothing is parsed) of random sizes, random
/// keyframes and droppable frames, at MTUs from the smallest allowed up.
#[test]
fn packets_follow_rfc7741_for_random_frames() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for mtu in [28, 29, 45, 200, 1200, 1400] {
        let frames: Vec<_> = (0..150)
            .map(|index| {
                let len = match rng.below(4) {
                    0 => 1 + rng.below(20) as usize,
                    1 => 1 + rng.below(mtu as u64 * 3) as usize,
                    _ => 1 + rng.below(6000) as usize,
                };
                (index, rng.bytes(len), rng.below(5) == 0, rng.below(7) == 0)
            })
            .collect();
        check_layout(mtu, rng.below(0x8000) as u16, &frames);
    }
}

/// Frame sizes on each side of a packet boundary.
#[test]
fn frames_just_under_and_over_packet_sizes() {
    let mtu = 100;
    let room = mtu - 16;
    let frames: Vec<_> = [
        1,
        room - 1,
        room,
        room + 1,
        2 * room,
        2 * room + 1,
        10 * room,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, len)| (i as u64, vec![i as u8; len], i % 3 == 0, false))
    .collect();
    check_layout(mtu, 7, &frames);
}

#[test]
fn picture_ids_wrap_after_0x7fff() {
    let frames: Vec<_> = (0..4)
        .map(|i| (i, vec![i as u8; 300], i == 0, false))
        .collect();
    // check_layout expects 0x7ffe, 0x7fff, 0, 1.
    check_layout(200, 0x7ffe, &frames);

    let (mut h, _bus) = payloader("picture-id-offset=32767");
    payload_frame(&mut h, frame(vec![1; 10], 0, true, false));
    assert_eq!(h.element().unwrap().property::<i32>("picture-id"), 0);
}

fn first_picture_ids(properties: &str, frames: u64) -> Vec<Option<(u16, bool)>> {
    let (mut h, _bus) = payloader(properties);
    (0..frames)
        .map(|i| {
            let packets = payload_frame(&mut h, frame(vec![9; 500], i, i == 0, false));
            let ids: Vec<_> = packets.iter().map(|p| p.descriptor.picture_id).collect();
            assert!(ids.iter().all(|id| *id == ids[0]), "{properties}: {ids:?}");
            ids[0]
        })
        .collect()
}

#[test]
fn seven_bit_picture_ids_wrap_after_0x7f() {
    assert_eq!(
        first_picture_ids("picture-id-mode=7-bit picture-id-offset=126 mtu=200", 3),
        [Some((126, false)), Some((127, false)), Some((0, false))]
    );
    // An offset beyond 7 bits is cut to them.
    assert_eq!(
        first_picture_ids("picture-id-mode=7-bit picture-id-offset=1000", 1),
        [Some((1000 & 0x7f, false))]
    );
}

#[test]
fn without_picture_ids_the_descriptor_is_one_byte() {
    let (mut h, _bus) = payloader("picture-id-mode=none mtu=100");
    let bytes: Vec<u8> = (0..500).map(|i| i as u8).collect();
    let packets = payload_frame(&mut h, frame(bytes.clone(), 0, true, false));
    // 100 - 12 (RTP) - 1 (descriptor) = 87 bytes of frame per packet.
    assert_eq!(packets.len(), 500usize.div_ceil(87));
    for (i, p) in packets.iter().enumerate() {
        assert!(p.size <= 100);
        assert_eq!(p.descriptor.len, 1);
        assert_eq!(p.descriptor.picture_id, None);
        assert_eq!(p.descriptor.start, i == 0);
    }
    let reassembled: Vec<u8> = packets.iter().flat_map(|p| p.frame_bytes.clone()).collect();
    assert_eq!(reassembled, bytes);
    assert_eq!(h.element().unwrap().property::<i32>("picture-id"), 0);
}

/// With `picture-id-offset=-1` each stream starts at a random PictureID, and
/// the `picture-id` property tells which before the first frame.
#[test]
fn random_first_picture_id_is_the_property_value() {
    let firsts: Vec<u16> = (0..4)
        .map(|_| {
            let (mut h, _bus) = payloader("");
            let announced = h.element().unwrap().property::<i32>("picture-id");
            let packets = payload_frame(&mut h, frame(vec![1; 50], 0, true, false));
            let (id, long) = packets[0].descriptor.picture_id.unwrap();
            assert!(long, "15-bit PictureIDs by default");
            assert_eq!(i32::from(id), announced);
            id
        })
        .collect();
    assert!(
        firsts.iter().any(|id| *id != firsts[0]),
        "four streams all started at PictureID {}",
        firsts[0]
    );
}

/// Setting the offset while playing starts the count again from it.
#[test]
fn setting_the_offset_restarts_the_count() {
    let (mut h, _bus) = payloader("picture-id-offset=10");
    payload_frame(&mut h, frame(vec![1; 50], 0, true, false));
    h.element()
        .unwrap()
        .set_property("picture-id-offset", 500i32);
    let packets = payload_frame(&mut h, frame(vec![1; 50], 1, false, false));
    assert_eq!(packets[0].descriptor.picture_id, Some((500, true)));
}

/// A stream started again counts from `picture-id-offset` again.
#[test]
fn a_restart_counts_from_the_offset_again() {
    let (mut h, _bus) = payloader("picture-id-offset=10");
    for i in 0..3 {
        payload_frame(&mut h, frame(vec![1; 50], i, i == 0, false));
    }
    let element = h.element().unwrap();
    element.set_state(gst::State::Null).unwrap();
    element.set_state(gst::State::Playing).unwrap();
    assert!(h.push_event(gst::event::StreamStart::new("restarted")));
    h.set_src_caps_str("video/x-vp8");
    let packets = payload_frame(&mut h, frame(vec![1; 50], 0, true, false));
    assert_eq!(packets[0].descriptor.picture_id, Some((10, true)));
}

/// Frames that never came (a GAP event, a flush) leave a PictureID out, so
/// that receivers see the loss.
#[test]
fn gap_and_flush_leave_a_picture_id_out() {
    let (mut h, _bus) = payloader("picture-id-offset=20");
    let id_of = |packets: Vec<Packet>| packets[0].descriptor.picture_id.unwrap().0;
    assert_eq!(
        id_of(payload_frame(&mut h, frame(vec![1; 50], 0, true, false))),
        20
    );
    assert!(h.push_event(gst::event::Gap::builder(FRAME_DURATION).build()));
    assert_eq!(
        id_of(payload_frame(&mut h, frame(vec![1; 50], 2, false, false))),
        22
    );
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(false)));
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    while h.try_pull_event().is_some() {}
    assert_eq!(
        id_of(payload_frame(&mut h, frame(vec![1; 50], 3, false, false))),
        24
    );
}

/// An empty buffer holds no frame: no packet, and no PictureID spent.
#[test]
fn empty_buffers_make_no_packets() {
    let (mut h, bus) = payloader("picture-id-offset=3");
    assert!(payload_frame(&mut h, frame(Vec::new(), 0, true, false)).is_empty());
    let packets = payload_frame(&mut h, frame(vec![5; 20], 1, true, false));
    assert_eq!(packets[0].descriptor.picture_id, Some((3, true)));
    assert!(first_error(&drain(&bus)).is_none());
}

/// CSRCs written from RTP source metas (`source-info=true`: the meta's CSRCs,
/// then its SSRC) count against the MTU.
#[test]
fn csrcs_count_against_the_mtu() {
    let (mut h, _bus) = payloader("mtu=100 source-info=true");
    let bytes: Vec<u8> = (0..1000).map(|i| (i * 7) as u8).collect();
    let mut buffer = frame(bytes.clone(), 0, true, false);
    gst_rtp::RTPSourceMeta::add(buffer.get_mut().unwrap(), Some(55), &[11, 22, 33, 44]);
    let packets = payload_frame(&mut h, buffer);
    // 100 - 12 - 5 * 4 (CSRCs) - 4 (descriptor) = 64 bytes of frame per packet.
    assert_eq!(packets.len(), 1000usize.div_ceil(64));
    for p in &packets {
        assert_eq!(p.csrcs, [11, 22, 33, 44, 55]);
        assert!(p.size <= 100, "packet of {} bytes", p.size);
    }
    let reassembled: Vec<u8> = packets.iter().flat_map(|p| p.frame_bytes.clone()).collect();
    assert_eq!(reassembled, bytes);
}

/// An MTU with no room left for frame bytes stops the stream with an error
/// that says so, rather than writing packets over the MTU.
#[test]
fn an_mtu_without_room_is_an_error() {
    let (mut h, bus) = payloader("mtu=40 source-info=true");
    let mut buffer = frame(vec![1; 100], 0, true, false);
    gst_rtp::RTPSourceMeta::add(buffer.get_mut().unwrap(), None, &[1, 2, 3, 4, 5, 6]);
    assert_eq!(h.push(buffer), Err(gst::FlowError::Error));
    let err = first_error(&drain(&bus)).expect("an error message");
    assert!(err.matches(gst::LibraryError::Settings), "{err}");
    assert!(h.try_pull().is_none());
}

/// Metas that mean something per packet (here a reference timestamp) are
/// kept on every packet, as RTP payloaders do.
#[test]
fn reference_timestamps_reach_every_packet() {
    let (mut h, _bus) = payloader("mtu=200");
    let mut buffer = frame(vec![3; 1000], 0, true, false);
    let ntp = gst::Caps::builder("timestamp/x-ntp").build();
    gst::ReferenceTimestampMeta::add(
        buffer.get_mut().unwrap(),
        &ntp,
        gst::ClockTime::from_seconds(1_000_000),
        None,
    );
    assert_eq!(h.push(buffer), Ok(gst::FlowSuccess::Ok));
    let mut count = 0;
    while let Some(packet) = h.try_pull() {
        let meta = packet
            .meta::<gst::ReferenceTimestampMeta>()
            .expect("a reference timestamp on each packet");
        assert_eq!(meta.timestamp(), gst::ClockTime::from_seconds(1_000_000));
        count += 1;
    }
    assert_eq!(count, 1000usize.div_ceil(200 - 16));
}

/// A keyframe request from the network side (an RTCP PLI turned into
/// GstForceKeyUnit by rtpbin or webrtcbin) goes on up to the encoder.
#[test]
fn keyframe_requests_reach_the_encoder() {
    let (mut h, _bus) = payloader("");
    let request = gst::event::CustomUpstream::new(
        gst::Structure::builder("GstForceKeyUnit")
            .field("running-time", u64::MAX)
            .field("all-headers", true)
            .field("count", 0u32)
            .build(),
    );
    assert!(h.push_upstream_event(request));
    let got = std::iter::from_fn(|| h.try_pull_upstream_event())
        .find(|e| e.type_() == gst::EventType::CustomUpstream)
        .expect("the request upstream");
    assert!(got.structure().unwrap().has_name("GstForceKeyUnit"));
}

// --- Against GStreamer's own rtpvp8depay and vp8dec ------------------------

/// The `appsrc name=src` of `pipeline`, if it has one.
fn app_src(pipeline: &gst::Pipeline) -> Option<gst_app::AppSrc> {
    Some(pipeline.by_name("src")?.downcast().unwrap())
}

/// The `appsink name=sink` of `pipeline`.
fn app_sink(pipeline: &gst::Pipeline) -> gst_app::AppSink {
    pipeline.by_name("sink").unwrap().downcast().unwrap()
}

/// Pushes `frames` into `src`, then EOS.
fn feed(src: &gst_app::AppSrc, frames: &[gst::Buffer]) {
    for f in frames {
        src.push_buffer(f.clone()).unwrap();
    }
    src.end_of_stream().unwrap();
}

/// `count` VP8 frames of a busy test picture (some over any small MTU), a
/// keyframe every 15 frames, and their caps.
fn encoded_frames(count: u32) -> (Vec<gst::Buffer>, gst::Caps) {
    let pipeline = launch(&format!(
        "videotestsrc num-buffers={count} pattern=smpte ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         vp8enc keyframe-max-dist=15 ! appsink name=sink sync=false"
    ));
    let samples = run_to_eos(&pipeline, &[]);
    let caps = samples[0].caps_owned().unwrap();
    let frames: Vec<_> = samples.iter().map(|s| s.buffer_owned().unwrap()).collect();
    assert_eq!(frames.len(), count as usize);
    let keyframes = frames
        .iter()
        .filter(|f| !f.flags().contains(gst::BufferFlags::DELTA_UNIT))
        .count();
    assert!(keyframes >= 2, "{keyframes} keyframes");
    (frames, caps)
}

/// Plays `pipeline` (whose `appsrc name=src`, if any, gets `frames`) to EOS
/// and returns what its `appsink name=sink` got; panics on an error or a warning.
fn run_to_eos(pipeline: &gst::Pipeline, frames: &[gst::Buffer]) -> Vec<gst::Sample> {
    let sink = app_sink(pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    if let Some(src) = app_src(pipeline) {
        feed(&src, frames);
    }
    let samples: Vec<_> = std::iter::from_fn(|| sink.pull_sample().ok()).collect();
    let messages = drain(&pipeline.bus().unwrap());
    pipeline.set_state(gst::State::Null).unwrap();
    if let Some(err) = first_error(&messages) {
        panic!("pipeline error: {err}");
    }
    assert_eq!(warnings(&messages), Vec::<String>::new());
    samples
}

/// `appsrc ! {chain} ! appsink` over `frames`: the buffers that came out.
fn through(frames: &[gst::Buffer], caps: &gst::Caps, chain: &str) -> Vec<gst::Sample> {
    let pipeline = launch(&format!(
        "appsrc name=src format=time caps=\"{caps}\" ! {chain} ! appsink name=sink sync=false"
    ));
    run_to_eos(&pipeline, frames)
}

fn bytes_of(samples: &[gst::Sample]) -> Vec<Vec<u8>> {
    samples
        .iter()
        .map(|s| s.buffer().unwrap().map_readable().unwrap().to_vec())
        .collect()
}

fn decoded(frames: &[gst::Buffer], caps: &gst::Caps) -> Vec<Vec<u8>> {
    bytes_of(&through(frames, caps, "vp8dec"))
}

#[test]
fn rtpvp8depay_and_vp8dec_decode_every_frame_as_without_rtp() {
    let (frames, caps) = encoded_frames(60);
    let direct = decoded(&frames, &caps);
    assert_eq!(direct.len(), frames.len());
    for mtu in [200, 1400] {
        let via_rtp = bytes_of(&through(
            &frames,
            &caps,
            &format!("streamcryptrtpvp8pay mtu={mtu} ! rtpvp8depay ! vp8dec"),
        ));
        assert_eq!(via_rtp.len(), direct.len(), "mtu {mtu}");
        for (i, (got, want)) in via_rtp.iter().zip(&direct).enumerate() {
            assert!(got == want, "mtu {mtu}: decoded frame {i} differs");
        }
    }
}

/// The clear bytes LiveKit's end-to-end encryption leaves at the start of a
/// VP8 frame: the frame tag, and on keyframes the start code and size.
fn clear_bytes(frame: &gst::BufferRef) -> usize {
    if frame.flags().contains(gst::BufferFlags::DELTA_UNIT) {
        3
    } else {
        10
    }
}

/// `frame` with every byte after the clear ones changed, as encryption would.
fn scrambled(frame: &gst::Buffer) -> gst::Buffer {
    let mut bytes = frame.map_readable().unwrap().to_vec();
    let clear = clear_bytes(frame);
    for (i, byte) in bytes.iter_mut().enumerate().skip(clear) {
        *byte ^= 0xa5 ^ (i as u8);
    }
    let mut out = gst::Buffer::from_mut_slice(bytes);
    frame
        .copy_into(
            out.get_mut().unwrap(),
            gst::BufferCopyFlags::FLAGS
                | gst::BufferCopyFlags::TIMESTAMPS
                | gst::BufferCopyFlags::META,
            ..,
        )
        .unwrap();
    out
}

/// What rtpvp8depay needs of a frame is in its clear bytes: the frames come
/// out whole, byte for byte, with their keyframe flags and the picture size
/// from the keyframe header, and nothing is dropped or warned about.
#[test]
fn rtpvp8depay_needs_only_the_clear_bytes() {
    let (frames, caps) = encoded_frames(60);
    let frames: Vec<_> = frames.iter().map(scrambled).collect();
    let out = through(&frames, &caps, "streamcryptrtpvp8pay mtu=200 ! rtpvp8depay");
    assert_eq!(out.len(), frames.len());
    for (i, (sample, sent)) in out.iter().zip(&frames).enumerate() {
        let got = sample.buffer().unwrap();
        assert!(
            got.map_readable().unwrap().as_slice() == sent.map_readable().unwrap().as_slice(),
            "frame {i} differs"
        );
        assert_eq!(
            got.flags().contains(gst::BufferFlags::DELTA_UNIT),
            sent.flags().contains(gst::BufferFlags::DELTA_UNIT),
            "keyframe flag of frame {i}"
        );
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(s.get::<i32>("width").unwrap(), 320);
        assert_eq!(s.get::<i32>("height").unwrap(), 240);
    }
}

/// Over real UDP on loopback: `udpsink` paced at the frame rate, `udpsrc`,
/// `rtpvp8depay`, then `vp8dec`.
#[test]
fn frames_cross_udp_loopback() {
    let (frames, caps) = encoded_frames(45);
    common::init();
    let receiver = launch(
        "udpsrc address=127.0.0.1 port=0 name=udp \
         caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=VP8,payload=96\" ! \
         rtpvp8depay ! appsink name=sink sync=false",
    );
    receiver.set_state(gst::State::Playing).unwrap();
    let port = receiver.by_name("udp").unwrap().property::<i32>("port");
    assert_ne!(port, 0);

    let sender = launch(&format!(
        "appsrc name=src format=time caps=\"{caps}\" ! streamcryptrtpvp8pay mtu=200 ! \
         udpsink host=127.0.0.1 port={port} sync=true"
    ));
    sender.set_state(gst::State::Playing).unwrap();
    feed(&app_src(&sender).unwrap(), &frames);

    let sink = app_sink(&receiver);
    let mut received = Vec::new();
    while received.len() < frames.len() {
        match sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            Some(sample) => received.push(sample.buffer_owned().unwrap()),
            None => break,
        }
    }
    // Every message of the sender up to its EOS (or error).
    let sender_bus = sender.bus().unwrap();
    let mut sender_messages = Vec::new();
    while let Some(message) = sender_bus.timed_pop(gst::ClockTime::from_seconds(10)) {
        let end = matches!(
            message.type_(),
            gst::MessageType::Eos | gst::MessageType::Error
        );
        sender_messages.push(message);
        if end {
            break;
        }
    }
    let receiver_messages = drain(&receiver.bus().unwrap());
    sender.set_state(gst::State::Null).unwrap();
    receiver.set_state(gst::State::Null).unwrap();
    if let Some(err) = first_error(&sender_messages).or(first_error(&receiver_messages)) {
        panic!("pipeline error: {err}");
    }
    assert!(
        sender_messages
            .last()
            .is_some_and(|m| m.type_() == gst::MessageType::Eos),
        "the sender did not reach EOS"
    );
    assert_eq!(warnings(&sender_messages), Vec::<String>::new());
    assert_eq!(warnings(&receiver_messages), Vec::<String>::new());

    assert_eq!(received.len(), frames.len(), "frames that arrived");
    for (i, (got, sent)) in received.iter().zip(&frames).enumerate() {
        assert!(
            got.map_readable().unwrap().as_slice() == sent.map_readable().unwrap().as_slice(),
            "frame {i} differs"
        );
    }
    assert_eq!(decoded(&received, &caps), decoded(&frames, &caps));
}
