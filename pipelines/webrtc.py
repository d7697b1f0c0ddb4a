#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""End-to-end encrypted media (mode=livekit) between two webrtcbins on loopback.

Usage: webrtc.py CODEC...   (CODEC: vp8, h264, opus; each a stream of its own,
                             all bundled in one peer connection)

The sender encodes each stream, encrypts the frames with streamencrypt mode=livekit,
payloads them and gives them to its webrtcbin; the receiving webrtcbin's pads go to
the stock depayloader, streamdecrypt and the decoder. Both webrtcbins live in this
process, which exchanges the SDP offer and answer and the ICE candidates between
them. The sources start once both peers are connected, so no frame is sent before
the receiver can take it. Every decoded frame must equal the decode of the same
encoded frame without encryption, and none may be missing.

Run with the plugin on GST_PLUGIN_PATH. Debian needs gstreamer1.0-nice and
gir1.2-gst-plugins-bad-1.0 (and python3-gi, used from /usr/bin/python3).
"""

import secrets
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstWebRTC  # noqa: E402

TIMEOUT_SECONDS = 30
FRAMES = 90  # of each video stream, at 30 per second
PACKETS = 150  # of Opus, 20 ms each
# key index 0 (LiveKit's default) does not survive rtph264pay: see pipelines/rtp-h264.sh.
KEY_ID = 1
VIDEO = "video/x-raw,width=320,height=240,framerate=30/1"
H264_ACCESS_UNITS = "video/x-h264,stream-format=byte-stream,alignment=au"
OPUS_RTP = "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111"

# Per codec: the frames the receiver must decode, the source (its element named
# source_CODEC), the encoder, the decode of the unencrypted frames (the reference),
# the payloader and its caps, and the receiving side's depayloader and decoder. The
# encoding name in the caps picks the receiving chain.
STREAMS = {
    "vp8": {
        "name": "VP8",
        "frames": FRAMES,
        "source": f"videotestsrc name=source_vp8 is-live=true num-buffers={FRAMES} "
        f"pattern=ball ! {VIDEO}",
        "encoder": "vp8enc keyframe-max-dist=30",
        "reference": "vp8dec",
        # The stock rtpvp8pay parses the (encrypted) partitions and fails.
        "payloader": "streamcryptrtpvp8pay",
        "rtp_caps": "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96",
        "depayloader": "rtpvp8depay",
        "decoder": "vp8dec",
    },
    "h264": {
        "name": "H.264",
        "frames": FRAMES,
        "source": f"videotestsrc name=source_h264 is-live=true num-buffers={FRAMES} "
        f"pattern=smpte ! {VIDEO}",
        "encoder": f"openh264enc gop-size=30 ! h264parse ! {H264_ACCESS_UNITS}",
        "reference": "avdec_h264",
        "payloader": "rtph264pay",
        "rtp_caps": "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102",
        "depayloader": f"rtph264depay ! {H264_ACCESS_UNITS}",
        "decoder": "h264parse ! avdec_h264",
    },
    "opus": {
        "name": "Opus",
        # opusenc sends one packet more than it got buffers: the end of its look-ahead.
        "frames": PACKETS + 1,
        "source": f"audiotestsrc name=source_opus is-live=true num-buffers={PACKETS} "
        "samplesperbuffer=960 wave=pink-noise ! audio/x-raw,rate=48000,channels=2",
        "encoder": "opusenc",
        # RTP carries no Opus header (pre-skip, end trimming): decode the reference
        # from the same RTP payloading, as the receiver does.
        "reference": f"rtpopuspay ! capssetter replace=true caps={OPUS_RTP} "
        "! rtpopusdepay ! opusdec",
        "payloader": "rtpopuspay",
        "rtp_caps": OPUS_RTP,
        "depayloader": "rtpopusdepay",
        "decoder": "opusdec",
    },
}


class Failure(Exception):
    pass


class Frames:
    """Buffers that reach an appsink, kept in order."""

    def __init__(self, sink):
        self.frames = []
        self.ended = False
        self.lock = threading.Lock()
        sink.connect("new-sample", self.on_sample)
        sink.connect("eos", self.on_eos)

    def on_sample(self, sink):
        buffer = sink.emit("pull-sample").get_buffer()
        with self.lock:
            self.frames.append(buffer.extract_dup(0, buffer.get_size()))
        return Gst.FlowReturn.OK

    def on_eos(self, _sink):
        with self.lock:
            self.ended = True

    def snapshot(self):
        with self.lock:
            return list(self.frames), self.ended


def appsink(name):
    return f"appsink name={name} emit-signals=true sync=false async=false"


def sender_description(codecs, key):
    branches = []
    for codec in codecs:
        stream = STREAMS[codec]
        branches.append(
            f"{stream['source']} ! {stream['encoder']} ! tee name=encoded_{codec} "
            f"encoded_{codec}. ! queue ! {stream['reference']} ! {appsink('reference_' + codec)} "
            f"encoded_{codec}. ! queue ! streamencrypt mode=livekit key={key} key-id={KEY_ID} "
            f"! {stream['payloader']} ! {stream['rtp_caps']} ! sender."
        )
    return "webrtcbin name=sender bundle-policy=max-bundle " + " ".join(branches)


class Peer:
    """One webrtcbin in its pipeline, with its ICE agent kept alive on loopback."""

    def __init__(self, name, pipeline):
        self.name = name
        self.pipeline = pipeline
        self.webrtc = pipeline.get_by_name(name)
        # libnice leaves loopback out unless told; and the agent must stay referenced
        # for the whole run, or ICE never starts.
        self.ice_agent = self.webrtc.get_property("ice-agent")
        self.ice_agent.emit("add-local-ip-address", "127.0.0.1")
        self.candidates = []
        self.lock = threading.Lock()
        self.peer = None
        self.has_remote_description = False
        self.webrtc.connect("on-ice-candidate", self.on_ice_candidate)

    def on_ice_candidate(self, _webrtc, mline, candidate):
        if " 127.0.0.1 " not in candidate:
            return
        with self.lock:
            if not self.peer.has_remote_description:
                self.candidates.append((mline, candidate))
                return
        self.peer.webrtc.emit("add-ice-candidate", mline, candidate)

    def call(self, signal, *args, result=None):
        """Emits an action signal that answers through a promise; returns a copy of
        the field `result` of the answer (the promise owns the answer and frees it)."""
        promise = Gst.Promise.new()
        self.webrtc.emit(signal, *args, promise)
        if promise.wait() != Gst.PromiseResult.REPLIED:
            raise Failure(f"{self.name}: {signal} got no reply")
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            raise Failure(f"{self.name}: {signal} failed: {reply.get_value('error').message}")
        if result is None:
            return None
        if reply is None or not reply.has_field(result):
            raise Failure(f"{self.name}: {signal} gave no {result}")
        return reply.get_value(result).copy()

    def set_remote_description(self, description):
        self.call("set-remote-description", description)
        # Candidates the peer found before this side could take them.
        with self.peer.lock:
            self.has_remote_description = True
            pending, self.peer.candidates = self.peer.candidates, []
        for mline, candidate in pending:
            self.webrtc.emit("add-ice-candidate", mline, candidate)

    def state(self):
        return (
            f"{self.name}: connection {self.webrtc.get_property('connection-state').value_nick}, "
            f"ICE {self.webrtc.get_property('ice-connection-state').value_nick}"
        )


def keep_end_of_stream_out(_pad, info):
    """The streams share one transport (bundle), and in webrtcbin 1.22 the end of one
    stream ends it: the last packets of the others would be lost."""
    if info.get_event().type == Gst.EventType.EOS:
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


def negotiate(sender, receiver):
    offer = sender.call("create-offer", None, result="offer")
    sender.call("set-local-description", offer)
    receiver.set_remote_description(offer)
    answer = receiver.call("create-answer", None, result="answer")
    receiver.call("set-local-description", answer)
    sender.set_remote_description(answer)


def connected(peer):
    return peer.webrtc.get_property("connection-state") == (
        GstWebRTC.WebRTCPeerConnectionState.CONNECTED
    )


class Receiver:
    """The receiving side: each webrtcbin pad gets depayloader, decrypter, decoder."""

    def __init__(self, pipeline, key):
        self.pipeline = pipeline
        self.key = key
        self.decoded = {}
        self.error = None
        pipeline.get_by_name("receiver").connect("pad-added", self.on_pad_added)

    def on_pad_added(self, _webrtc, pad):
        # In a streaming thread: failures go to self.error for the main loop.
        try:
            self.decode(pad)
        except Exception as error:  # noqa: BLE001 (reported, not swallowed)
            self.error = f"the receiver cannot decode its {pad.get_name()}: {error}"

    def decode(self, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        encoding = caps.get_structure(0).get_string("encoding-name")
        codec = encoding.lower()
        if codec not in STREAMS:
            self.error = f"the receiver got a stream it did not expect: {encoding}"
            return
        stream = STREAMS[codec]
        chain = Gst.parse_bin_from_description(
            f"{stream['depayloader']} "
            f"! streamdecrypt mode=livekit key={self.key} key-id={KEY_ID} on-error=fail "
            f"! {stream['decoder']} ! {appsink('decrypted_' + codec)}",
            True,
        )
        self.pipeline.add(chain)
        self.decoded[codec] = Frames(chain.get_by_name("decrypted_" + codec))
        chain.sync_state_with_parent()
        if pad.link(chain.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            self.error = f"cannot link the receiver's {encoding} pad"


def compare(codec, reference, decrypted):
    expected = STREAMS[codec]["frames"]
    if len(reference) != expected:
        raise Failure(f"{codec}: the reference decode has {len(reference)} frames, not {expected}")
    if len(decrypted) != expected:
        raise Failure(f"{codec}: the receiver decoded {len(decrypted)} of {expected} frames")
    for index, (want, got) in enumerate(zip(reference, decrypted)):
        if want != got:
            raise Failure(f"{codec}: decoded frame {index} differs from the unencrypted decode")


def run(codecs):
    key = secrets.token_hex(16)
    sending = Gst.parse_launch(sender_description(codecs, key))
    receiving = Gst.Pipeline.new("receiving")
    receiving.add(Gst.parse_launch("webrtcbin name=receiver bundle-policy=max-bundle"))
    sender, receiver = Peer("sender", sending), Peer("receiver", receiving)
    sender.peer, receiver.peer = receiver, sender
    decoder = Receiver(receiving, key)
    references = {c: Frames(sending.get_by_name("reference_" + c)) for c in codecs}

    for pad in sender.webrtc.sinkpads:
        pad.get_property("transceiver").set_property(
            "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
        )
        pad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, keep_end_of_stream_out)
    sources = [sending.get_by_name("source_" + c) for c in codecs]
    for source in sources:
        source.set_locked_state(True)

    errors = []

    def on_message(_bus, message):
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            errors.append(f"{message.src.get_path_string()}: {error.message} ({debug})")
        return True

    for pipeline in (sending, receiving):
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", on_message)

    try:
        for pipeline in (receiving, sending):
            if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
                raise Failure("a pipeline cannot start (are gstreamer1.0-nice and the plugin installed?)")
        negotiate(sender, receiver)

        context = GLib.MainContext.default()
        deadline = time.monotonic() + TIMEOUT_SECONDS
        started = False
        while True:
            context.iteration(False)
            if errors:
                raise Failure(errors[0])
            if decoder.error:
                raise Failure(decoder.error)
            if not started and connected(sender) and connected(receiver):
                for source in sources:
                    source.set_locked_state(False)
                    source.sync_state_with_parent()
                started = True
            done = started
            for codec in codecs:
                reference, ended = references[codec].snapshot()
                decrypted = decoder.decoded[codec].snapshot()[0] if codec in decoder.decoded else []
                done = done and ended and len(decrypted) >= len(reference)
            if done:
                break
            if time.monotonic() > deadline:
                received = ", ".join(
                    f"{c}: {len(decoder.decoded[c].snapshot()[0]) if c in decoder.decoded else 0} frames"
                    for c in codecs
                )
                raise Failure(
                    f"not done within {TIMEOUT_SECONDS} s ({received}; "
                    f"{sender.state()}; {receiver.state()})"
                )
            time.sleep(0.01)
        for codec in codecs:
            compare(codec, references[codec].snapshot()[0], decoder.decoded[codec].snapshot()[0])
    finally:
        for pipeline in (sending, receiving):
            pipeline.set_state(Gst.State.NULL)
    return {c: STREAMS[c]["frames"] for c in codecs}


def main():
    codecs = sys.argv[1:]
    unknown = [c for c in codecs if c not in STREAMS]
    if not codecs or unknown:
        sys.exit(f"usage: webrtc.py CODEC... (of {', '.join(STREAMS)}); unknown: {unknown}")
    Gst.init(None)
    try:
        counts = run(codecs)
    except Failure as failure:
        sys.exit(f"webrtc: FAILED: {failure}")
    print(
        "webrtc: "
        + ", ".join(f"{n} {STREAMS[c]['name']} frames" for c, n in counts.items())
        + " (LiveKit E2EE) through two webrtcbins on loopback, decrypted;"
        " every decoded frame equals the unencrypted decode"
    )


if __name__ == "__main__":
    main()
