#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
#
# The sending side of the browser test (tests/browser/README.md): one VP8 stream, encrypted by
# streamencrypt mode=livekit and packetized by streamcryptrtpvp8pay, sent by webrtcbin to several
# peers at once (the page's receivers), over loopback only.
#
#   videotestsrc ! vp8enc ! streamencrypt mode=livekit ! streamcryptrtpvp8pay ! tee
#       tee ! queue ! webrtcbin (one per peer)
#
# Signalling is JSON lines: stdout carries events, stdin commands.
#   out {"event": "offers", "offers": [sdp, ...]}   one offer per peer, candidates included
#   in  {"answers": [sdp, ...]}                      the page's answers, same order
#   out {"event": "ice", "peer": n, "state": "..."}  each ICE connection state change
#   in  {"colour": "rrggbb"}                         a solid colour from now on (SMPTE bars before)
#   out {"event": "showing", "colour": ..., "frame": n}   n: frames encoded before the change
#   (stdin closed) -> out {"event": "stats", ...} and exit 0
#   out {"event": "error", "message": "..."} and exit 1 on any failure
# Only the peers named by --keyframe-requests-from get keyframes on request; the others' requests
# are counted and dropped, as an SFU throttles them, so that receivers which cannot decode (the
# negative cases) do not turn the whole stream into keyframes.
# The key comes from the environment (STREAMCRYPT_KEY, hex, or STREAMCRYPT_PASSPHRASE), never
# from the command line, so that it does not show in ps.

import argparse
import json
import os
import sys

import gi

try:
    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
except ValueError as e:
    print(
        json.dumps(
            {
                "event": "error",
                "message": f"{e}: install python3-gi, gir1.2-gst-plugins-base-1.0 and "
                "gir1.2-gst-plugins-bad-1.0 (scripts/debian-packages)",
            }
        ),
        flush=True,
    )
    sys.exit(1)
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

LOOPBACK = "127.0.0.1"
RTP_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def fail(message):
    emit("error", message=message)
    sys.stdout.flush()
    os._exit(1)


def with_candidates(sdp_text, candidates):
    """The SDP with our loopback candidates in the (only) media section: non-trickle ICE."""
    lines = sdp_text.rstrip("\r\n").split("\r\n")
    lines += [f"a={c}" for c in candidates if f"a={c}" not in lines]
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def loopback_only(sdp_text):
    """Only the answer's loopback candidates. In a network namespace Chromium offers only
    0.0.0.0/:: host candidates, which are useless (the pair forms through a peer-reflexive
    127.0.0.1 candidate); on the host network, its other addresses are not to be used."""
    kept = []
    for line in sdp_text.split("\r\n"):
        if line.startswith("a=candidate:") and f" {LOOPBACK} " not in line:
            continue
        kept.append(line)
    return "\r\n".join(kept)


class Peer:
    """One webrtcbin and its signalling state."""

    def __init__(self, sender, index, webrtc):
        self.sender = sender
        self.index = index
        self.webrtc = webrtc
        # Keep the ICE agent referenced for the whole run: dropped, it is freed and ICE never
        # starts.
        self.agent = webrtc.get_property("ice-agent")
        if not self.agent.emit("add-local-ip-address", LOOPBACK):
            fail(f"peer {index}: the ICE agent refused {LOOPBACK} as a local address")
        self.candidates = []
        self.offer = None
        webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        webrtc.connect("on-ice-candidate", self.on_ice_candidate)
        webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        webrtc.connect("notify::ice-connection-state", self.on_connection_state)

    def on_negotiation_needed(self, webrtc):
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        webrtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise, _data):
        if promise.wait() != Gst.PromiseResult.REPLIED or promise.get_reply() is None:
            fail(f"peer {self.index}: webrtcbin could not create an offer")
        reply = promise.get_reply()
        if reply.has_field("error"):
            error = reply.get_value("error")
            fail(f"peer {self.index}: webrtcbin could not create an offer: {error}")
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, None)

    def on_ice_candidate(self, _webrtc, _mline, candidate):
        loopback_udp = f" {LOOPBACK} " in candidate and " UDP " in candidate
        if loopback_udp and candidate not in self.candidates:
            self.candidates.append(candidate)

    def on_gathering_state(self, webrtc, _pspec):
        state = webrtc.get_property("ice-gathering-state")
        if state != GstWebRTC.WebRTCICEGatheringState.COMPLETE or self.offer is not None:
            return
        if not self.candidates:
            fail(f"peer {self.index}: ICE gathering found no {LOOPBACK} candidate")
        local = webrtc.get_property("local-description")
        self.offer = with_candidates(local.sdp.as_text(), self.candidates)
        GLib.idle_add(self.sender.offer_ready)

    def on_connection_state(self, webrtc, _pspec):
        state = webrtc.get_property("ice-connection-state")
        emit("ice", peer=self.index, state=state.value_nick)
        if state == GstWebRTC.WebRTCICEConnectionState.FAILED:
            fail(f"peer {self.index}: ICE failed")

    def set_answer(self, sdp_text):
        result, message = GstSdp.SDPMessage.new_from_text(loopback_only(sdp_text))
        if result != GstSdp.SDPResult.OK:
            fail(f"peer {self.index}: the answer is not SDP ({result})")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        promise = Gst.Promise.new()
        self.webrtc.emit("set-remote-description", answer, promise)
        promise.wait()
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            fail(f"peer {self.index}: webrtcbin refused the answer: {reply.get_value('error')}")


class Sender:
    def __init__(self, args):
        encrypt = f"streamencrypt name=encrypt mode=livekit key-id={args.key_id}"
        self.pipeline = Gst.parse_launch(
            f"videotestsrc name=source is-live=true pattern=smpte "
            f"! video/x-raw,width=320,height=240,framerate=30/1 "
            f"! vp8enc deadline=1 keyframe-max-dist=100000 target-bitrate=800000 "
            f"! {encrypt} ! streamcryptrtpvp8pay name=pay pt=96 picture-id-mode=15-bit "
            f"! {RTP_CAPS} ! tee name=fanout allow-not-linked=true"
        )
        self.source = self.pipeline.get_by_name("source")
        self.encrypt = self.pipeline.get_by_name("encrypt")
        self.set_key()
        self.frames = {"key": 0, "delta": 0}
        self.keyframe_requests_dropped = 0
        self.encrypt.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self.count_frame)
        fanout = self.pipeline.get_by_name("fanout")
        self.peers = []
        for index in range(args.peers):
            queue = Gst.ElementFactory.make("queue")
            webrtc = Gst.ElementFactory.make("webrtcbin", f"peer{index}")
            if webrtc is None:
                fail("no webrtcbin: install gstreamer1.0-plugins-bad and gstreamer1.0-nice")
            webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            if index not in args.keyframe_requests_from:
                queue.get_static_pad("src").add_probe(
                    Gst.PadProbeType.EVENT_UPSTREAM, self.drop_keyframe_request
                )
            self.pipeline.add(queue)
            self.pipeline.add(webrtc)
            fanout.link(queue)
            sink = webrtc.request_pad_simple("sink_%u")
            queue.get_static_pad("src").link(sink)
            transceiver = sink.get_property("transceiver")
            transceiver.set_property(
                "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            )
            # The offer can be made before the first buffer's caps reach webrtcbin.
            transceiver.set_property("codec-preferences", Gst.Caps.from_string(RTP_CAPS))
            self.peers.append(Peer(self, index, webrtc))
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        bus.connect("message::warning", self.on_warning)
        self.loop = GLib.MainLoop()
        self.input = b""
        GLib.io_add_watch(
            sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, self.on_stdin
        )

    def set_key(self):
        key = os.environ.get("STREAMCRYPT_KEY")
        passphrase = os.environ.get("STREAMCRYPT_PASSPHRASE")
        if (key is None) == (passphrase is None):
            fail("set exactly one of STREAMCRYPT_KEY (hex) and STREAMCRYPT_PASSPHRASE")
        if key is not None:
            self.encrypt.set_property("key", key)
        else:
            self.encrypt.set_property("passphrase", passphrase)

    def count_frame(self, _pad, info):
        delta = info.get_buffer().has_flags(Gst.BufferFlags.DELTA_UNIT)
        self.frames["delta" if delta else "key"] += 1
        return Gst.PadProbeReturn.OK

    def drop_keyframe_request(self, _pad, info):
        structure = info.get_event().get_structure()
        if structure is not None and structure.get_name() == "GstForceKeyUnit":
            self.keyframe_requests_dropped += 1
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    def frames_encoded(self):
        return self.frames["key"] + self.frames["delta"]

    def on_error(self, _bus, message):
        error, debug = message.parse_error()
        fail(f"{message.src.get_name()}: {error.message} ({debug})")

    def on_warning(self, _bus, message):
        warning, debug = message.parse_warning()
        emit("warning", message=f"{message.src.get_name()}: {warning.message} ({debug})")

    def offer_ready(self):
        if all(peer.offer is not None for peer in self.peers):
            emit("offers", offers=[peer.offer for peer in self.peers])
        return GLib.SOURCE_REMOVE

    def on_stdin(self, fd, condition):
        chunk = os.read(fd, 65536)
        if not chunk:
            self.finish()
            return GLib.SOURCE_REMOVE
        self.input += chunk
        while b"\n" in self.input:
            line, self.input = self.input.split(b"\n", 1)
            if line.strip():
                try:
                    self.command(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:
                    fail(f"bad command {line[:200]!r}: {e}")
        return GLib.SOURCE_CONTINUE

    def command(self, command):
        if "answers" in command:
            answers = command["answers"]
            if len(answers) != len(self.peers):
                fail(f"{len(answers)} answers for {len(self.peers)} peers")
            for peer, answer in zip(self.peers, answers):
                peer.set_answer(answer)
        elif "colour" in command:
            rgb = int(command["colour"], 16)
            self.source.set_property("foreground-color", 0xFF000000 | rgb)
            self.source.set_property("pattern", "solid-color")
            emit("showing", colour=command["colour"], frame=self.frames_encoded())
        else:
            fail(f"unknown command {command}")

    def finish(self):
        # Stopped first, so that no frame is between the encrypter's count and the probe's.
        self.pipeline.set_state(Gst.State.NULL)
        stats = self.encrypt.get_property("stats")
        emit(
            "stats",
            keyframes=self.frames["key"],
            deltaFrames=self.frames["delta"],
            keyframeRequestsDropped=self.keyframe_requests_dropped,
            encrypted=stats.get_value("buffers"),
            kid=stats.get_value("kid"),
        )
        self.loop.quit()

    def run(self):
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            fail("the pipeline did not start (see the error before)")
        self.loop.run()


def main():
    parser = argparse.ArgumentParser(
        description="streamcrypt's LiveKit-encrypted VP8 over webrtcbin, for the browser test"
    )
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--key-id", type=int, default=0)
    parser.add_argument(
        "--keyframe-requests-from",
        type=int,
        action="append",
        default=[],
        help="a peer whose keyframe requests reach the encoder (repeatable; default none)",
    )
    args = parser.parse_args()
    Gst.init(None)
    for name in ("streamencrypt", "streamcryptrtpvp8pay", "webrtcbin", "nicesrc", "vp8enc"):
        if Gst.ElementFactory.find(name) is None:
            fail(f"GStreamer element {name} not found (GST_PLUGIN_PATH, scripts/debian-packages)")
    Sender(args).run()


if __name__ == "__main__":
    main()
