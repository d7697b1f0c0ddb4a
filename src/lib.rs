// SPDX-License-Identifier: MPL-2.0
#![doc = include_str!("../README.md")]

use gst::glib;

pub mod cipher;
mod common;
pub mod compat;
pub mod decrypt;
pub mod encrypt;
pub mod format;
pub mod framing;
pub mod hls;
pub mod hlssink;
pub mod key_requests;
pub mod keyring;
pub mod keys;
pub mod livekit;
pub mod mode;
pub mod rtp_vp8;
pub mod sframe;
pub mod sniff;
#[cfg(test)]
mod test_util;
pub mod vp8pay;

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
