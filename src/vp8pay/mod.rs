// SPDX-License-Identifier: MPL-2.0
//! `streamcryptrtpvp8pay`: an RFC 7741 VP8 RTP payloader that never parses the
//! frame, for frames encrypted after their codec header (LiveKit's end-to-end
//! encryption), which `rtpvp8pay` refuses.

use gst::glib;
use gst::prelude::*;

use crate::rtp_vp8::PictureIdMode;

mod imp;

glib::wrapper! {
    pub struct StreamCryptRtpVp8Pay(ObjectSubclass<imp::StreamCryptRtpVp8Pay>)
        @extends gst_rtp::RTPBasePayload, gst::Element, gst::Object;
}

/// The `picture-id-mode` property: values and nicks as `rtpvp8pay`'s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStreamCryptVp8PictureIdMode")]
pub enum PictureIdModeProperty {
    #[enum_value(name = "No PictureID", nick = "none")]
    None = 0,
    #[enum_value(name = "7-bit PictureID", nick = "7-bit")]
    SevenBit = 1,
    #[default]
    #[enum_value(name = "15-bit PictureID (what browsers send)", nick = "15-bit")]
    FifteenBit = 2,
}

impl From<PictureIdModeProperty> for PictureIdMode {
    fn from(mode: PictureIdModeProperty) -> Self {
        match mode {
            PictureIdModeProperty::None => PictureIdMode::None,
            PictureIdModeProperty::SevenBit => PictureIdMode::SevenBit,
            PictureIdModeProperty::FifteenBit => PictureIdMode::FifteenBit,
        }
    }
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    PictureIdModeProperty::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "streamcryptrtpvp8pay",
        gst::Rank::NONE,
        StreamCryptRtpVp8Pay::static_type(),
    )
}
