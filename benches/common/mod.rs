// SPDX-License-Identifier: MPL-2.0
//! What the benchmarks share: starting GStreamer with the plugin, and reading
//! their arguments (numbers narrow the sizes or stream counts, names the modes).

use gststreamcrypt::mode::Mode;

/// Initialises GStreamer, registers the plugin and reads the command line:
/// the numbers given, and the modes named (every mode of `Mode::ALL` whose
/// nick is given; empty when no mode is named). Any other word stops the run.
pub fn start() -> (Vec<usize>, Vec<Mode>) {
    gst::init().unwrap();
    gststreamcrypt::plugin_register_static().unwrap();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (numbers, names): (Vec<&String>, Vec<&String>) =
        filters.iter().partition(|f| f.parse::<usize>().is_ok());
    for name in &names {
        if !Mode::ALL.iter().any(|m| m.nick() == name.as_str()) {
            let known: Vec<&str> = Mode::ALL.iter().map(|m| m.nick()).collect();
            eprintln!("unknown mode {name:?}; modes: {}", known.join(", "));
            std::process::exit(2);
        }
    }
    let numbers = numbers.iter().map(|n| n.parse().unwrap()).collect();
    let modes = Mode::ALL
        .into_iter()
        .filter(|m| names.iter().any(|f| *f == m.nick()))
        .collect();
    (numbers, modes)
}

/// Buffers allocated as an encoder allocates its output: `GstVideoEncoder` and
/// `GstAudioEncoder` ask downstream once caps are set (the ALLOCATION query) and
/// allocate every buffer with the allocator and parameters (prefix, padding,
/// alignment) they are given, or the defaults when nobody answers.
#[derive(Default)]
pub struct EncoderAllocation {
    allocator: Option<gst::Allocator>,
    params: Option<gst::AllocationParams>,
}

impl EncoderAllocation {
    /// What downstream of `pad` (which has its caps) proposes.
    pub fn query(pad: &gst::Pad) -> Self {
        use gst::prelude::*;
        let caps = pad.current_caps();
        let mut query = gst::query::Allocation::new(caps.as_ref(), false);
        if !pad.peer_query(&mut query) {
            return Self::default();
        }
        match query.allocation_params().next() {
            Some((allocator, params)) => Self {
                allocator,
                params: Some(params),
            },
            None => Self::default(),
        }
    }

    /// A new buffer of `size` bytes (`gst_buffer_new_allocate`, as the encoders
    /// call it).
    pub fn buffer(&self, size: usize) -> gst::Buffer {
        use gst::glib::translate::ToGlibPtr;
        let params = self
            .params
            .as_ref()
            .map_or(std::ptr::null(), |params| params.as_ptr());
        // SAFETY: allocator and params are valid for the call (or NULL, the
        // defaults); the buffer returned is ours.
        unsafe {
            gst::Buffer::from_glib_full(gst::ffi::gst_buffer_new_allocate(
                self.allocator.to_glib_none().0,
                size,
                params as *mut _,
            ))
        }
    }
}
