// SPDX-License-Identifier: MPL-2.0
//! `streamdecrypt`: authenticates and decrypts SFrames, picking the key by KID.

use gst::glib;
use gst::prelude::*;

mod imp;
mod service;

/// What the decrypter does with a buffer it cannot authenticate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStreamDecryptOnError")]
pub enum OnError {
    #[default]
    #[enum_value(
        name = "Drop the buffer, count it in stats and post a rate-limited warning",
        nick = "drop"
    )]
    Drop = 0,
    #[enum_value(name = "Post an error and stop the stream", nick = "fail")]
    Fail = 1,
}

glib::wrapper! {
    pub struct StreamDecrypt(ObjectSubclass<imp::StreamDecrypt>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "streamdecrypt",
        gst::Rank::NONE,
        StreamDecrypt::static_type(),
    )
}
