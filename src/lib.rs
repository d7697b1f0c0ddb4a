// SPDX-License-Identifier: MPL-2.0
#![doc = include_str!("../README.md")]

pub mod cipher;
pub mod keys;
pub mod sframe;
