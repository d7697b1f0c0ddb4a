// SPDX-License-Identifier: MPL-2.0
//! `streamencrypt`: encrypts every buffer into one SFrame.

use gst::glib;
use gst::prelude::*;

mod imp;
mod service;

glib::wrapper! {
    pub struct StreamEncrypt(ObjectSubclass<imp::StreamEncrypt>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "streamencrypt",
        gst::Rank::NONE,
        StreamEncrypt::static_type(),
    )
}
