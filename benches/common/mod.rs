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
