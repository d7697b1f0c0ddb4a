// SPDX-License-Identifier: MPL-2.0
//! streamcrypt's formats, ciphers and keys, without GStreamer: what the
//! elements of `gst-plugin-streamcrypt` drive buffer by buffer, and what the
//! key service and the fuzz targets build on.

pub mod cipher;
pub mod compat;
pub mod format;
pub mod framing;
pub mod grant;
pub mod hls;
pub mod key_requests;
pub mod key_service;
pub mod keyring;
pub mod keys;
pub mod livekit;
pub mod rtp_vp8;
pub mod sframe;
pub mod sniff;
#[cfg(test)]
mod test_util;
