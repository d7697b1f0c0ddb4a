// SPDX-License-Identifier: MPL-2.0
//! `streamcrypthlssink`: HLS output with standard AES-128 segment encryption.

use gst::glib;
use gst::prelude::*;

mod imp;
mod service;

glib::wrapper! {
    pub struct StreamCryptHlsSink(ObjectSubclass<imp::StreamCryptHlsSink>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "streamcrypthlssink",
        gst::Rank::NONE,
        StreamCryptHlsSink::static_type(),
    )
}
