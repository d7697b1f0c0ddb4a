// SPDX-License-Identifier: MPL-2.0

fn main() {
    gst_plugin_version_helper::info();
    // What gst-inspect-1.0 shows as the plugin's origin, as GStreamer's own
    // GST_PACKAGE_ORIGIN: where the package came from. Packagers set it (for
    // example to their tracker's URL); a local build says it does not know.
    println!("cargo:rerun-if-env-changed=STREAMCRYPT_PACKAGE_ORIGIN");
    let origin = std::env::var("STREAMCRYPT_PACKAGE_ORIGIN")
        .unwrap_or_else(|_| "Unknown package origin".to_owned());
    println!("cargo:rustc-env=STREAMCRYPT_PACKAGE_ORIGIN={origin}");
}
