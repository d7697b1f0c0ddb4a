// SPDX-License-Identifier: MPL-2.0
//! `streamcryptrtpvp8pay`: `RTPBasePayload` does the RTP header (payload type,
//! SSRC, sequence numbers, timestamps from the PTS, CSRCs, header extensions);
//! this element cuts each frame at the MTU behind an RFC 7741 descriptor
//! (`crate::rtp_vp8`) and takes the keyframe from the buffer flags, never from
//! the frame's bytes, which may be encrypted.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_rtp::prelude::*;
use gst_rtp::subclass::prelude::*;

use super::PictureIdModeProperty;
use crate::rtp_vp8::{self, PictureIdCounter, PictureIdMode};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "streamcryptrtpvp8pay",
        gst::DebugColorFlags::empty(),
        Some("VP8 RTP payloader for encrypted frames"),
    )
});

const DEFAULT_PICTURE_ID_OFFSET: i32 = -1;
/// RTP allows 15 CSRCs.
const MAX_CSRCS: u32 = 15;

/// The PictureID settings and the counter they start.
struct PictureIds {
    mode: PictureIdModeProperty,
    /// The first PictureID, or -1 for a random one.
    offset: i32,
    counter: PictureIdCounter,
}

impl PictureIds {
    /// The counter from its first value again, as on a new stream.
    fn restart(&mut self) {
        let first = u16::try_from(self.offset).unwrap_or_else(|_| glib::random_int() as u16);
        self.counter = PictureIdCounter::new(self.mode.into(), first);
    }
}

impl Default for PictureIds {
    fn default() -> Self {
        let mut ids = Self {
            mode: PictureIdModeProperty::default(),
            offset: DEFAULT_PICTURE_ID_OFFSET,
            counter: PictureIdCounter::new(PictureIdMode::default(), 0),
        };
        ids.restart();
        ids
    }
}

#[derive(Default)]
pub struct StreamCryptRtpVp8Pay {
    picture_ids: Mutex<PictureIds>,
}

impl StreamCryptRtpVp8Pay {
    /// The RTP packets of one frame, in order.
    fn packets(&self, frame: &gst::Buffer) -> Result<gst::BufferList, gst::FlowError> {
        let obj = self.obj();
        let keyframe = !frame.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let non_reference = frame.flags().contains(gst::BufferFlags::DROPPABLE);
        let csrc_count = obj.source_count(frame).min(MAX_CSRCS);
        let mtu = obj.mtu();

        let picture_id = self.picture_ids.lock().unwrap().counter.take();
        let descriptor_len = rtp_vp8::PayloadDescriptor {
            start: true,
            non_reference,
            picture_id,
        }
        .encoded_len();
        let Some(max_frame_bytes) =
            rtp_vp8::frame_bytes_per_packet(mtu as usize, csrc_count as usize, descriptor_len)
        else {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                [
                    "mtu={mtu} leaves no room for VP8 data: the RTP header takes {} bytes \
                     ({csrc_count} CSRCs) and the payload descriptor {descriptor_len}",
                    rtp_vp8::RTP_HEADER_LEN + rtp_vp8::CSRC_LEN * csrc_count as usize
                ]
            );
            return Err(gst::FlowError::Error);
        };

        let packets = rtp_vp8::packetize(frame.size(), max_frame_bytes, picture_id, non_reference);
        gst::trace!(
            CAT,
            imp = self,
            "frame of {} bytes ({}), {picture_id:?}: {} packets",
            frame.size(),
            if keyframe { "keyframe" } else { "delta" },
            packets.len()
        );
        let mut list = gst::BufferList::new_sized(packets.len());
        let list_mut = list.get_mut().unwrap();
        for packet in packets {
            // The base class adds the CSRCs of the frame's RTP source meta
            // itself; this element has none of its own.
            let mut out = obj.allocate_output_buffer(packet.descriptor.encoded_len() as u32, 0, 0);
            let out_mut = out.get_mut().unwrap();
            {
                let mut rtp = gst_rtp::RTPBuffer::from_buffer_writable(out_mut)
                    .map_err(|err| self.failed("cannot map a new RTP packet", err))?;
                let payload = rtp
                    .payload_mut()
                    .map_err(|err| self.failed("no payload in a new RTP packet", err))?;
                packet.descriptor.write(payload);
                rtp.set_marker(packet.marker);
            }
            out_mut.set_pts(frame.pts());
            out_mut.set_duration(frame.duration());
            // Only the packet that starts a keyframe is a place to start decoding.
            let mut flags = gst::BufferFlags::empty();
            if !(keyframe && packet.descriptor.start) {
                flags |= gst::BufferFlags::DELTA_UNIT;
            }
            if packet.marker {
                flags |= gst::BufferFlags::MARKER;
            }
            out_mut.set_flags(flags);
            self.copy_metas(frame, out_mut);
            // The frame's memory is shared, not copied.
            let slice = frame
                .copy_region(gst::BufferCopyFlags::MEMORY, packet.frame_range)
                .map_err(|err| self.failed("cannot take a slice of the frame", err))?;
            out.append(slice);
            list_mut.add(out);
        }
        Ok(list)
    }

    /// Posts an error for a step that only fails when GStreamer itself does
    /// (out of memory, a broken buffer), and stops the stream.
    fn failed(&self, what: &str, err: glib::BoolError) -> gst::FlowError {
        gst::element_imp_error!(self, gst::CoreError::Failed, ["{what}: {err}"]);
        gst::FlowError::Error
    }

    /// The metas that still mean something on a packet, as RTP payloaders
    /// keep them: those without tags (e.g. reference timestamps, RTP source
    /// info) or tagged only "video". `GstVP8Meta` (temporal layers, which the
    /// descriptor does not carry) is left behind.
    fn copy_metas(&self, frame: &gst::BufferRef, packet: &mut gst::BufferRef) {
        for meta in frame.iter_meta::<gst::Meta>() {
            let kept = meta.tags().is_empty() || meta.tags_contain_only(&["video"]);
            let vp8_layers = meta
                .try_as_custom_meta()
                .is_some_and(|custom| custom.has_name("GstVP8Meta"));
            if kept
                && !vp8_layers
                && let Err(err) = meta.transform(packet, &gst::meta::MetaTransformCopy::new(..))
            {
                gst::debug!(CAT, imp = self, "meta {} not copied: {err}", meta.api());
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StreamCryptRtpVp8Pay {
    const NAME: &'static str = "GstStreamCryptRtpVp8Pay";
    type Type = super::StreamCryptRtpVp8Pay;
    type ParentType = gst_rtp::RTPBasePayload;
}

impl ObjectImpl for StreamCryptRtpVp8Pay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default(
                    "picture-id-mode",
                    PictureIdModeProperty::default(),
                )
                .nick("PictureID mode")
                .blurb(
                    "How the RFC 7741 payload descriptor numbers frames, so that receivers \
                     see a lost frame: none, or a 7-bit or 15-bit PictureID that counts up \
                     by one per frame and wraps to 0. Setting it starts the count again \
                     from picture-id-offset",
                )
                .mutable_playing()
                .build(),
                glib::ParamSpecInt::builder("picture-id-offset")
                    .nick("PictureID offset")
                    .blurb(
                        "PictureID of the first frame, cut to the mode's bits (-1 = random); \
                         used at start, and at once when set while playing",
                    )
                    .minimum(-1)
                    .maximum(i32::from(PictureIdMode::FifteenBit.max()))
                    .default_value(DEFAULT_PICTURE_ID_OFFSET)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecInt::builder("picture-id")
                    .nick("Next PictureID")
                    .blurb(
                        "PictureID the next frame will carry (0 with picture-id-mode=none); \
                         frames lost to a gap or a flush skip one",
                    )
                    .minimum(0)
                    .maximum(i32::from(PictureIdMode::FifteenBit.max()))
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut ids = self.picture_ids.lock().unwrap();
        match pspec.name() {
            "picture-id-mode" => ids.mode = value.get().expect("type checked"),
            "picture-id-offset" => ids.offset = value.get().expect("type checked"),
            other => unreachable!("no property {other}"),
        }
        ids.restart();
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let ids = self.picture_ids.lock().unwrap();
        match pspec.name() {
            "picture-id-mode" => ids.mode.to_value(),
            "picture-id-offset" => ids.offset.to_value(),
            "picture-id" => i32::from(ids.counter.peek()).to_value(),
            other => unreachable!("no readable property {other}"),
        }
    }
}

impl GstObjectImpl for StreamCryptRtpVp8Pay {}

impl ElementImpl for StreamCryptRtpVp8Pay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "VP8 RTP payloader for encrypted frames",
                "Codec/Payloader/Network/RTP",
                "Puts VP8 frames in RTP packets (RFC 7741) without parsing them, so frames \
                 encrypted after their codec header (LiveKit end-to-end encryption) can be \
                 sent; the keyframe comes from the DELTA_UNIT flag",
                crate::common::AUTHOR,
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("video/x-vp8").build();
            let src_caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("payload", gst::IntRange::new(96, 127))
                .field("clock-rate", 90_000)
                .field("encoding-name", "VP8")
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src_caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            // A new stream counts its frames from picture-id-offset again.
            self.picture_ids.lock().unwrap().restart();
        }
        self.parent_change_state(transition)
    }
}

impl RTPBasePayloadImpl for StreamCryptRtpVp8Pay {
    fn set_caps(&self, _caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let obj = self.obj();
        obj.set_options("video", true, "VP8", 90_000);
        obj.set_outcaps(None)
            .map_err(|err| gst::loggable_error!(CAT, "cannot set the RTP caps: {err}"))
    }

    fn handle_buffer(&self, frame: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if frame.size() == 0 {
            // No VP8 frame is empty, and an RTP packet of this format carries
            // at least one byte of one. No PictureID is spent, as no frame is lost.
            gst::warning!(CAT, imp = self, "empty buffer at {:?} skipped", frame.pts());
            return Ok(gst::FlowSuccess::Ok);
        }
        let list = self.packets(&frame)?;
        self.obj().push_list(list)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if matches!(
            event.type_(),
            gst::EventType::Gap | gst::EventType::FlushStart
        ) {
            // Frames went missing: a PictureID left out tells the receivers.
            self.picture_ids.lock().unwrap().counter.skip();
        }
        self.parent_sink_event(event)
    }
}
