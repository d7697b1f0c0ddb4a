// SPDX-License-Identifier: MPL-2.0
#![doc = include_str!("../README.md")]

use gst::glib;

mod common;
pub mod decrypt;
pub mod encrypt;
pub mod hlssink;
pub mod key_client;
pub mod mode;
mod service;
pub mod vp8pay;

// The GStreamer-free half, under the names the elements and tests use.
pub use streamcrypt_core::{
    cipher, compat, format, framing, grant, hls, key_requests, key_service, keyring, keys, livekit,
    rtp_vp8, sframe, sniff,
};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    encrypt::register(plugin)?;
    decrypt::register(plugin)?;
    hlssink::register(plugin)?;
    vp8pay::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    streamcrypt,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("STREAMCRYPT_PACKAGE_ORIGIN"),
    env!("BUILD_REL_DATE")
);
