// SPDX-License-Identifier: MPL-2.0
//
// The receiving side of the browser test (tests/browser/README.md): RTCPeerConnections that
// receive streamcrypt's VP8 stream, each with or without livekit-client's E2EE worker in its
// receiver's encoded transform, and a look at every video frame they present.
//
// The worker is set up exactly as livekit-client's E2eeManager does in Chromium: a peer
// connection with encodedInsertableStreams, the receiver's createEncodedStreams() handed to the
// worker in a 'decode' message, after 'init' with the key provider's options, 'setKey' with the
// key material the key provider made, and 'enable' for the remote participant. Key material comes
// from LiveKit's own key providers (ExternalE2EEKeyProvider, BaseKeyProvider).
//
// The page API, for the test driver (tests/browser/run.mjs), on window.streamcrypt:
//   answer(receivers, offers, colours)       one receiver per offer (see Receiver below), which
//     -> {answers, livekitClient, userAgent} tells the colours apart; their SDP answers
//   waitFor(name, state, frames, timeoutMs)  resolves once receiver `name` has presented `frames`
//                                            frames in `state` ('smpte' or a colour 'rrggbb')
//   waitConnected(timeoutMs)                 every receiver's ICE connected and packets in
//   report()                                 what each receiver presented, its stats, the
//                                            worker's errors

/* global LivekitClient */

const WORKER_URL = '/livekit/livekit-client.e2ee.worker.mjs';
const REMOTE_PARTICIPANT = 'gstreamer-sender';

// videotestsrc pattern=smpte: seven bars across the top two thirds, left to right, as GStreamer
// 1.22 draws them in RGB (white, yellow, cyan, green, magenta, red, blue at full intensity).
const SMPTE_BARS = [
  [255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
  [255, 0, 255], [255, 0, 0], [0, 0, 255],
];
// After VP8 (4:2:0) and the browser's YUV to RGB, a sample is this close to what was sent
// (measured: within 3 in the middle of a bar or of a solid picture).
const TOLERANCE = 32;

const near = (rgb, expected) => rgb.every((v, i) => Math.abs(v - expected[i]) <= TOLERANCE);
const hexColour = (hex) => [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));

/** What one presented frame shows: 'smpte', a colour 'rrggbb' from `colours`, or 'other'. */
function classify(pixelAt, width, height, colours) {
  const bars = SMPTE_BARS.map((_, i) => pixelAt(Math.floor(((i + 0.5) * width) / 7), Math.floor(height / 3)));
  if (bars.every((rgb, i) => near(rgb, SMPTE_BARS[i]))) return { state: 'smpte' };
  const spots = [[0.5, 0.5], [0.2, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.8]].map(([x, y]) =>
    pixelAt(Math.floor(x * width), Math.floor(y * height)),
  );
  for (const colour of colours) {
    if (spots.every((rgb) => near(rgb, hexColour(colour)))) return { state: colour };
  }
  return { state: 'other', bars, spots };
}

/**
 * Starts the worker as E2eeManager does ('init' with the key provider's options) and gives it the
 * key as E2eeManager does on the key provider's SetKey event, with the key material LiveKit's key
 * provider made.
 */
async function initWorkerWithKey(e2ee, worker) {
  const events = LivekitClient.KeyProviderEvent;
  let provider;
  if (e2ee.provider === 'external') {
    // What a LiveKit app with a shared passphrase does: key index 0.
    provider = new LivekitClient.ExternalE2EEKeyProvider();
  } else {
    // Per-participant keys at a chosen key index, as apps that manage their own keys do.
    provider = new LivekitClient.BaseKeyProvider();
  }
  worker.postMessage({
    kind: 'init',
    data: { keyProviderOptions: provider.getOptions(), loglevel: 'warn' },
  });
  const keySet = new Promise((resolve) => {
    provider.on(events.SetKey, (keyInfo, updateCurrentKeyIndex) => {
      worker.postMessage({
        kind: 'setKey',
        data: {
          participantIdentity: keyInfo.participantIdentity,
          isPublisher: false,
          key: keyInfo.key,
          keyIndex: keyInfo.keyIndex,
          updateCurrentKeyIndex: updateCurrentKeyIndex ?? true,
        },
      });
      resolve();
    });
  });
  if (e2ee.provider === 'external') {
    await provider.setKey(e2ee.passphrase);
  } else {
    const raw = Uint8Array.from(e2ee.key.match(/../g), (h) => parseInt(h, 16));
    const material = await LivekitClient.createKeyMaterialFromBuffer(raw.buffer);
    provider.onSetEncryptionKey(material, REMOTE_PARTICIPANT, e2ee.keyIndex);
  }
  await keySet;
}

/**
 * One receiver: `name`, and `e2ee` = null (a plain WebRTC receiver) or
 * {provider: 'external', passphrase} | {provider: 'base', key (hex), keyIndex}.
 */
class Receiver {
  constructor({ name, e2ee }, colours) {
    this.name = name;
    this.e2ee = e2ee;
    this.colours = colours;
    this.runs = []; // consecutive presented frames in one state: {state, frames, atMs, sample?}
    this.presented = 0;
    this.framesIn = new Map(); // state -> frames presented in it
    this.workerErrors = [];
    this.workerLogs = [];
    this.waiters = [];
    this.pc = new RTCPeerConnection(e2ee ? { encodedInsertableStreams: true } : {});
    this.video = document.createElement('video');
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    document.body.append(this.video);
    this.canvas = document.createElement('canvas');
    this.context = this.canvas.getContext('2d', { willReadFrequently: true });
    this.pc.ontrack = (event) => this.onTrack(event);
  }

  onTrack(event) {
    if (this.e2ee) {
      // E2eeManager.handleReceiver, the createEncodedStreams path it takes in Chromium.
      const { readable, writable } = event.receiver.createEncodedStreams();
      this.worker.postMessage({
        kind: 'decode',
        data: {
          readableStream: readable,
          writableStream: writable,
          trackId: event.track.id,
          codec: 'vp8',
          participantIdentity: REMOTE_PARTICIPANT,
          hasPacketTrailer: false,
        },
      }, [readable, writable]);
    }
    this.video.srcObject = new MediaStream([event.track]);
    this.video.requestVideoFrameCallback(() => this.onFrame());
    this.video.play().catch((e) => {
      this.videoError = `video.play(): ${e}`;
    });
  }

  async start() {
    if (!this.e2ee) return;
    this.worker = new Worker(WORKER_URL, { type: 'module', name: `livekit-e2ee-${this.name}` });
    this.worker.onmessage = ({ data: { kind, data } }) => {
      if (kind === 'error') this.workerErrors.push(String(data.error?.message ?? data.error));
      else if (kind === 'log' && this.workerLogs.length < 50) this.workerLogs.push(`${data.level}: ${data.msg}`);
    };
    this.worker.onerror = (e) => this.workerErrors.push(`worker: ${e.message}`);
    await initWorkerWithKey(this.e2ee, this.worker);
    // E2eeManager posts 'enable' for each remote participant that publishes encrypted tracks.
    this.worker.postMessage({ kind: 'enable', data: { enabled: true, participantIdentity: REMOTE_PARTICIPANT } });
  }

  onFrame() {
    const { videoWidth: width, videoHeight: height } = this.video;
    if (width > 0 && height > 0) {
      if (this.canvas.width !== width || this.canvas.height !== height) {
        this.canvas.width = width;
        this.canvas.height = height;
      }
      this.context.drawImage(this.video, 0, 0, width, height);
      const pixels = this.context.getImageData(0, 0, width, height).data;
      const pixelAt = (x, y) => Array.from(pixels.subarray((y * width + x) * 4, (y * width + x) * 4 + 3));
      const seen = classify(pixelAt, width, height, this.colours);
      this.presented += 1;
      this.framesIn.set(seen.state, (this.framesIn.get(seen.state) ?? 0) + 1);
      const last = this.runs[this.runs.length - 1];
      if (last && last.state === seen.state) {
        last.frames += 1;
      } else {
        const run = { state: seen.state, frames: 1, atMs: Math.round(performance.now()), width, height };
        if (seen.state === 'other') run.sample = { bars: seen.bars, spots: seen.spots };
        this.runs.push(run);
      }
      this.waiters = this.waiters.filter((w) => (this.reached(w) ? (w.resolve(), false) : true));
    }
    this.video.requestVideoFrameCallback(() => this.onFrame());
  }

  async answer(offer) {
    await this.pc.setRemoteDescription({ type: 'offer', sdp: offer });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    // Non-trickle: the answer carries every candidate.
    if (this.pc.iceGatheringState !== 'complete') {
      await new Promise((resolve) => {
        this.pc.addEventListener('icegatheringstatechange', () => {
          if (this.pc.iceGatheringState === 'complete') resolve();
        });
      });
    }
    return this.pc.localDescription.sdp;
  }

  async inbound() {
    const stats = await this.pc.getStats();
    for (const s of stats.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        const fields = ['packetsReceived', 'bytesReceived', 'packetsLost', 'framesReceived',
          'framesDecoded', 'keyFramesDecoded', 'framesDropped', 'pliCount', 'firCount',
          'nackCount', 'decoderImplementation', 'frameWidth', 'frameHeight'];
        return Object.fromEntries(fields.map((f) => [f, s[f]]));
      }
    }
    return null;
  }

  reached({ state, frames }) {
    return (this.framesIn.get(state) ?? 0) >= frames;
  }

  waitFor(state, frames) {
    if (this.reached({ state, frames })) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ state, frames, resolve }));
  }

  async report() {
    return {
      name: this.name,
      e2ee: this.e2ee ? { provider: this.e2ee.provider, keyIndex: this.e2ee.keyIndex ?? 0 } : null,
      iceConnectionState: this.pc.iceConnectionState,
      videoError: this.videoError ?? null,
      presented: this.presented,
      framesIn: Object.fromEntries(this.framesIn),
      runs: this.runs,
      inbound: await this.inbound(),
      workerErrors: this.workerErrors.slice(0, 20),
      workerErrorCount: this.workerErrors.length,
      workerLogs: this.workerLogs,
    };
  }
}

const receivers = new Map();

function withTimeout(promise, timeoutMs, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function report() {
  return Promise.all([...receivers.values()].map((r) => r.report()));
}

window.streamcrypt = {
  async answer(specs, offers, colours) {
    if (typeof LivekitClient === 'undefined') throw new Error('livekit-client.umd.js did not load');
    if (specs.length !== offers.length) throw new Error(`${specs.length} receivers, ${offers.length} offers`);
    const answers = [];
    for (const [i, spec] of specs.entries()) {
      const receiver = new Receiver(spec, colours);
      receivers.set(spec.name, receiver);
      await receiver.start();
      answers.push(await receiver.answer(offers[i]));
    }
    return { answers, livekitClient: LivekitClient.version, userAgent: navigator.userAgent };
  },

  async waitConnected(timeoutMs) {
    const connected = async (r) => {
      for (;;) {
        const state = r.pc.iceConnectionState;
        if (state === 'failed' || state === 'closed') throw new Error(`receiver ${r.name}: ICE ${state}`);
        const inbound = state === 'connected' || state === 'completed' ? await r.inbound() : null;
        if (inbound && inbound.packetsReceived > 0) return;
        await new Promise((resolve) => {
          // Whichever comes first: an ICE change, or the next frame-sized slice of time for the
          // packet counter (getStats has no event).
          const done = () => {
            r.pc.removeEventListener('iceconnectionstatechange', done);
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(done, 50);
          r.pc.addEventListener('iceconnectionstatechange', done);
        });
      }
    };
    await withTimeout(Promise.all([...receivers.values()].map(connected)), timeoutMs,
      'waiting for every receiver to connect and receive packets');
  },

  async waitFor(name, state, frames, timeoutMs) {
    const receiver = receivers.get(name);
    if (!receiver) throw new Error(`no receiver ${name}`);
    try {
      await withTimeout(receiver.waitFor(state, frames), timeoutMs,
        `waiting for receiver ${name} to present ${frames} frames of ${state}`);
    } catch (e) {
      e.message += `; it presented ${JSON.stringify(receiver.runs.slice(-5))}`;
      throw e;
    }
  },

  report,
};
