#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""Rotating streamcrypt keys from a Python (PyGObject) application.

A live VP8 stream goes through streamencrypt and streamdecrypt while a second
thread changes the key every 100 ms, alternating:
  - receiver first, with properties: key-id then key on both elements;
  - sender first, with the set-key action signal; the decrypter asks for the
    unknown KID through its request-key signal.
At the end, every decrypted frame must equal the original.

Run with the plugin on GST_PLUGIN_PATH, e.g.
  GST_PLUGIN_PATH=target/release /usr/bin/python3 examples/rotate_keys.py
"""

import secrets
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst, GstApp  # noqa: E402

FPS = 100
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0


def main():
    Gst.init(None)
    frames = int(FPS * SECONDS)
    keys = {1: secrets.token_hex(16)}  # the application's key server
    pipeline = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={frames} "
        f"! video/x-raw,width=160,height=120,framerate={FPS}/1 "
        "! vp8enc deadline=1 ! tee name=t "
        "t. ! queue ! appsink name=original sync=false wait-on-eos=false "
        f"t. ! queue ! streamencrypt name=enc key-id=1 key={keys[1]} "
        f"! streamdecrypt name=dec key-id=1 key={keys[1]} "
        "! appsink name=decrypted sync=false wait-on-eos=false"
    )
    enc = pipeline.get_by_name("enc")
    dec = pipeline.get_by_name("dec")

    def on_request_key(_element, kid):
        # Called from the streaming thread; None means "unknown, drop the frame".
        return keys.get(kid)

    dec.connect("request-key", on_request_key)

    done = threading.Event()

    def rotate():
        kid = 1
        while not done.wait(0.1):
            kid += 1
            keys[kid] = secrets.token_hex(16)
            if kid % 2 == 0:
                # Receiver first, through properties: key-id, then key.
                dec.set_property("key-id", kid)
                dec.set_property("key", keys[kid])
                enc.set_property("key-id", kid)
                enc.set_property("key", keys[kid])
            else:
                # Sender first, through the action signal; dec uses request-key.
                if not enc.emit("set-key", kid, keys[kid]):
                    raise RuntimeError(f"set-key refused for KID {kid}")

    rotator = threading.Thread(target=rotate)
    pipeline.set_state(Gst.State.PLAYING)
    rotator.start()
    bus = pipeline.get_bus()
    message = bus.timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    done.set()
    rotator.join()
    if message.type == Gst.MessageType.ERROR:
        error, debug = message.parse_error()
        sys.exit(f"pipeline error: {error.message} ({debug})")

    def frames_of(name):
        sink = pipeline.get_by_name(name)
        out = []
        while (sample := sink.try_pull_sample(0)) is not None:
            buffer = sample.get_buffer()
            out.append(buffer.extract_dup(0, buffer.get_size()))
        return out

    originals = frames_of("original")
    decrypted = frames_of("decrypted")
    stats = dec.get_property("stats")
    pipeline.set_state(Gst.State.NULL)

    switches = stats.get_uint64("key-switches")[1]
    dropped = stats.get_uint64("dropped")[1]
    print(
        f"{len(decrypted)}/{len(originals)} frames, {switches} key switches, "
        f"{stats.get_uint64('key-requests')[1]} keys requested, {dropped} dropped"
    )
    if len(originals) != frames or decrypted != originals:
        sys.exit("the decrypted stream differs from the original")
    if dropped != 0 or switches < 10:
        sys.exit(f"expected at least 10 clean key switches, got {switches}")


if __name__ == "__main__":
    main()
