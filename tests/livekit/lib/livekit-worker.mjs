// SPDX-License-Identifier: MPL-2.0
//
// Runs livekit-client's published E2EE worker (the `livekit-client/e2ee-worker` export) inside
// Node, and drives it with the same messages that livekit-client's E2eeManager posts to it in a
// browser. Nothing of LiveKit's algorithm is reimplemented here: key material comes from
// livekit-client's own createKeyMaterialFromString/Buffer, and every frame goes through the
// worker's FrameCryptor over a real TransformStream pipe.
//
// What a browser provides and Node does not is shimmed, no more:
// - the Web Worker globals (`self`, `postMessage`, `onmessage`), in this one realm;
// - RTCEncodedVideoFrame / RTCEncodedAudioFrame: objects with `data`, `timestamp`, `type`
//   (video only; FrameCryptor tells video from audio by the presence of `type`) and
//   `getMetadata()`;
// - a TransformStream subclass that tells the harness when FrameCryptor's transform of a frame
//   has settled and what it enqueued (the worker's own transform function runs unchanged);
// - a look at crypto.subtle.encrypt/decrypt calls (iv, additional data), recorded and passed on
//   unchanged, so the report says what LiveKit authenticated, not what we guess it did.

const FRAME_DONE = Symbol('frameDone');

/** Where the worker's messages and observations go while one step runs. */
let currentSink = null;

function sinkPush(field, value) {
  if (currentSink) {
    (currentSink[field] ??= []).push(value);
  } else {
    (orphanEvents[field] ??= []).push(value);
  }
}

/** Events that arrived while no step was running (should stay empty; reported if not). */
export const orphanEvents = {};

export const toHex = (bytes) => Buffer.from(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes).toString('hex');

function viewBytes(source) {
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) {
    return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  }
  return new Uint8Array(0);
}

// --- Web Worker globals -------------------------------------------------------------------------

const barrierWaiters = new Map();
const ratchetWaiters = [];

function onWorkerPostMessage(msg) {
  const { kind, data } = msg;
  switch (kind) {
    case 'log': {
      const entry = { level: data.level, msg: data.msg };
      const err = data.context?.error;
      if (err) entry.error = String(err?.message ?? err);
      sinkPush('logs', entry);
      break;
    }
    case 'error':
      sinkPush('errors', String(data.error?.message ?? data.error));
      break;
    case 'ratchetKey': {
      const event = {
        keyIndex: data.keyIndex,
        chainKey: toHex(data.ratchetResult.chainKey),
      };
      sinkPush('ratchets', event);
      const waiter = ratchetWaiters.shift();
      if (waiter) waiter(event);
      break;
    }
    case 'enable': {
      // The worker echoes an 'enable' message once its queue reached it: a barrier.
      const resolve = barrierWaiters.get(data.barrierId);
      if (resolve) {
        barrierWaiters.delete(data.barrierId);
        resolve();
      }
      break;
    }
    case 'initAck':
      break;
    default:
      sinkPush('otherMessages', kind);
  }
}

class FakeEncodedFrame {
  #metadata;

  constructor(data, timestamp, metadata) {
    this.data = data;
    this.timestamp = timestamp;
    this.#metadata = metadata;
  }

  getMetadata() {
    return { ...this.#metadata };
  }
}

/** Stands for the browser's RTCEncodedVideoFrame: has `type` ('key' | 'delta'). */
class RTCEncodedVideoFrame extends FakeEncodedFrame {
  constructor(data, type, timestamp, metadata) {
    super(data, timestamp, metadata);
    this.type = type;
  }
}

/** Stands for the browser's RTCEncodedAudioFrame: no `type`. */
class RTCEncodedAudioFrame extends FakeEncodedFrame {}

const NativeTransformStream = globalThis.TransformStream;

/**
 * TransformStream as the browser has it, plus a notification when each transform() call has
 * settled, with what it enqueued. The transformer the worker passes runs unchanged.
 */
class ObservedTransformStream extends NativeTransformStream {
  constructor(transformer = {}, writableStrategy, readableStrategy) {
    const transform = transformer.transform;
    const observed = { ...transformer };
    if (transform) {
      observed.transform = async (chunk, controller) => {
        const enqueued = [];
        const proxy = {
          enqueue(out) {
            enqueued.push(viewBytes(out?.data).slice());
            controller.enqueue(out);
          },
          error: (e) => controller.error(e),
          terminate: () => controller.terminate(),
          get desiredSize() {
            return controller.desiredSize;
          },
        };
        let failure;
        try {
          await transform(chunk, proxy);
        } catch (e) {
          failure = e;
          throw e;
        } finally {
          chunk[FRAME_DONE]?.({ enqueued, failure });
        }
      };
    }
    super(observed, writableStrategy, readableStrategy);
  }
}

// Key derivation: parameters only (salt as text, hash, iterations, info length), never keys.
function describeKdf(algorithm) {
  const params = { name: algorithm.name, hash: algorithm.hash };
  if (algorithm.salt) params.salt = Buffer.from(viewBytes(algorithm.salt)).toString('latin1');
  if (algorithm.iterations !== undefined) params.iterations = algorithm.iterations;
  if (algorithm.info !== undefined) {
    const info = viewBytes(algorithm.info);
    params.info = info.every((b) => b === 0) ? `${info.length} zero bytes` : toHex(info);
  }
  return params;
}

/** What each observed WebCrypto call records about its arguments (and result). */
const OBSERVED_SUBTLE_CALLS = {
  encrypt: (algorithm, key, data) => ({
    iv: toHex(viewBytes(algorithm.iv)),
    additionalData: toHex(viewBytes(algorithm.additionalData)),
    plaintextLength: viewBytes(data).byteLength,
  }),
  decrypt: (algorithm, key, data) => ({
    iv: toHex(viewBytes(algorithm.iv)),
    additionalData: toHex(viewBytes(algorithm.additionalData)),
    ciphertextLength: viewBytes(data).byteLength,
  }),
  deriveKey: (algorithm, baseKey, derivedKeyType) => ({
    from: baseKey.algorithm.name,
    params: describeKdf(algorithm),
    derived: `${derivedKeyType.name}-${derivedKeyType.length}`,
  }),
  deriveBits: (algorithm, baseKey, length) => ({
    from: baseKey.algorithm.name,
    params: describeKdf(algorithm),
    bits: length,
  }),
};

/** Records each observed call into the current step, then runs it unchanged. */
function observeSubtleCrypto() {
  const subtle = globalThis.crypto.subtle;
  for (const [op, describe] of Object.entries(OBSERVED_SUBTLE_CALLS)) {
    const original = subtle[op].bind(subtle);
    subtle[op] = async (...args) => {
      const call = { op, ...describe(...args), ok: false };
      sinkPush('cryptoCalls', call);
      const result = await original(...args);
      call.ok = true;
      if (op === 'deriveBits') {
        // Tells ratchet results apart (same input material -> same result) without showing them.
        call.resultFingerprint = toHex(new Uint8Array(await subtle.digest('SHA-256', result)).subarray(0, 4));
      }
      return result;
    };
  }
}

/**
 * LiveKit starts each SSRC's IV send counter at floor(Math.random() * 0xffff); fixing it makes
 * the IVs, and so the output, reproducible.
 */
export function fixSendCount(sendCount) {
  const fraction = (sendCount + 0.5) / 0xffff;
  Math.random = () => fraction;
}

let workerOnMessage;
let livekit;

/** The version livekit-client reports of itself (its exported `version`). */
export const liveKitVersion = () => livekit?.version;

/** Loads livekit-client (main entry and E2EE worker) once per process. */
export async function loadLiveKit() {
  if (workerOnMessage) return livekit;
  // Keep stdout for the harness's JSON: anything LiveKit prints goes to stderr.
  for (const level of ['log', 'info', 'debug', 'trace', 'warn']) {
    console[level] = (...args) => console.error(...args);
  }
  globalThis.self = globalThis;
  globalThis.onmessage = null;
  globalThis.postMessage = onWorkerPostMessage;
  globalThis.RTCEncodedVideoFrame = RTCEncodedVideoFrame;
  globalThis.RTCEncodedAudioFrame = RTCEncodedAudioFrame;
  globalThis.TransformStream = ObservedTransformStream;
  observeSubtleCrypto();

  livekit = await import('livekit-client');
  livekit.setLogLevel('silent');
  await import('livekit-client/e2ee-worker');
  workerOnMessage = globalThis.onmessage;
  if (typeof workerOnMessage !== 'function') {
    throw new Error('livekit-client/e2ee-worker did not install an onmessage handler');
  }
  return livekit;
}

function post(kind, data) {
  workerOnMessage({ data: { kind, data } });
}

let nextBarrierId = 1;

/** Resolves once the worker has handled every message posted before it. */
function barrier(participantIdentity) {
  const barrierId = nextBarrierId++;
  const done = new Promise((resolve) => barrierWaiters.set(barrierId, resolve));
  post('enable', { enabled: true, participantIdentity, barrierId });
  return done;
}

const VIDEO_CODECS = new Set(['vp8', 'vp9', 'h264', 'h265', 'av1']);
export const CODECS = ['vp8', 'vp9', 'h264', 'h265', 'opus'];
const MIME_TYPES = {
  vp8: 'video/VP8',
  vp9: 'video/VP9',
  h264: 'video/H264',
  h265: 'video/H265',
  av1: 'video/AV1',
  opus: 'audio/opus',
};
const PAYLOAD_TYPES = { vp8: 96, vp9: 98, h264: 102, h265: 104, av1: 35, opus: 111 };

export const isVideoCodec = (codec) => VIDEO_CODECS.has(codec);

/** LiveKit's key provider options: its defaults (BaseKeyProvider) or ExternalE2EEKeyProvider's. */
export function keyProviderOptions(req) {
  const overrides = {};
  for (const name of ['ratchetSalt', 'ratchetWindowSize', 'failureTolerance', 'keyringSize', 'keySize']) {
    if (req[name] !== undefined) overrides[name] = req[name];
  }
  const provider = req.keyProvider ?? 'base';
  let options;
  if (provider === 'external') {
    options = new livekit.ExternalE2EEKeyProvider(overrides).getOptions();
  } else if (provider === 'base') {
    options = new livekit.BaseKeyProvider(overrides).getOptions();
  } else {
    throw new Error(`keyProvider must be "base" or "external", got ${JSON.stringify(provider)}`);
  }
  // One worker may hold several sessions; each keeps its own key handler.
  return { ...options, sharedKey: false };
}

/** Key material exactly as livekit-client's key providers make it. */
export async function keyMaterial(key) {
  if (key && typeof key.passphrase === 'string') {
    return livekit.createKeyMaterialFromString(key.passphrase);
  }
  if (key && typeof key.raw === 'string' && /^([0-9a-fA-F]{2})+$/.test(key.raw)) {
    const bytes = Buffer.from(key.raw, 'hex');
    return livekit.createKeyMaterialFromBuffer(
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    );
  }
  throw new Error('key must be {"raw": "<hex, at least one byte>"} or {"passphrase": "<string>"}');
}

let nextSessionId = 1;

/**
 * One end of a LiveKit E2EE track: a participant with its own key handler and one FrameCryptor
 * whose transform pipe stays up for the whole session, as in a browser.
 */
export class Session {
  constructor({ operation, codec, options, logLevel }) {
    if (!CODECS.includes(codec) && codec !== 'av1') {
      throw new Error(`codec must be one of ${CODECS.join(', ')}, got ${JSON.stringify(codec)}`);
    }
    this.operation = operation;
    this.codec = codec;
    this.options = options;
    this.logLevel = logLevel ?? 'warn';
    const id = nextSessionId++;
    this.participantIdentity = `${operation === 'encode' ? 'local' : 'remote'}-participant-${id}`;
    this.trackId = `track-${id}`;
    this.pipeBroken = null;
  }

  /** Runs fn with the worker's messages collected into the returned record. */
  async step(record, fn) {
    const previous = currentSink;
    currentSink = record;
    try {
      await fn();
    } finally {
      currentSink = previous;
    }
    return record;
  }

  async start() {
    post('init', { keyProviderOptions: this.options, loglevel: this.logLevel });
    post('enable', { enabled: true, participantIdentity: this.participantIdentity });
    await barrier(this.participantIdentity);
  }

  /** Sets a key as E2eeManager does for a key provider's SetKey event with a key index. */
  async setKey(key, keyIndex) {
    const material = await keyMaterial(key);
    post('setKey', {
      participantIdentity: this.participantIdentity,
      isPublisher: this.operation === 'encode',
      key: material,
      keyIndex,
      updateCurrentKeyIndex: true,
    });
    await barrier(this.participantIdentity);
  }

  /** keyProvider.ratchetKey(): the worker ratchets the key at keyIndex and reports the result. */
  async ratchet(keyIndex) {
    const ratcheted = new Promise((resolve) => ratchetWaiters.push(resolve));
    post('ratchetRequest', { participantIdentity: this.participantIdentity, keyIndex });
    const event = await ratcheted;
    // The worker resets the key status right after the ratchet resolves.
    await barrier(this.participantIdentity);
    return event;
  }

  /** Opens the encoded-frame pipe, as E2eeManager does with a sender's or receiver's streams. */
  async openPipe() {
    let source;
    this.readable = new ReadableStream(
      {
        start(controller) {
          source = controller;
        },
      },
      { highWaterMark: 0 },
    );
    this.source = source;
    this.drained = new Promise((resolve) => {
      this.writable = new WritableStream({
        write() {},
        close: () => resolve('closed'),
        abort: (reason) => resolve(`aborted: ${reason?.message ?? reason}`),
      });
    });
    post(this.operation, {
      readableStream: this.readable,
      writableStream: this.writable,
      trackId: this.trackId,
      codec: isVideoCodec(this.codec) ? this.codec : undefined,
      participantIdentity: this.participantIdentity,
      hasPacketTrailer: false,
    });
    await barrier(this.participantIdentity);
  }

  /**
   * Puts one frame through LiveKit's transform. Returns what the transform enqueued (zero or one
   * frame), the worker's messages while it ran, and the crypto calls it made.
   */
  async processFrame({ data, type, timestamp, ssrc, payloadType }) {
    const record = {};
    if (this.pipeBroken) {
      record.notProcessed = `the transform pipe stopped at an earlier frame: ${this.pipeBroken}`;
      return record;
    }
    const bytes = new Uint8Array(data);
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    const metadata = {
      synchronizationSource: ssrc,
      payloadType: payloadType ?? PAYLOAD_TYPES[this.codec],
      mimeType: MIME_TYPES[this.codec],
      rtpTimestamp: timestamp,
      contributingSources: [],
    };
    const frame = isVideoCodec(this.codec)
      ? new RTCEncodedVideoFrame(buffer, type, timestamp, metadata)
      : new RTCEncodedAudioFrame(buffer, timestamp, metadata);
    await this.step(record, async () => {
      const settled = new Promise((resolve) => {
        frame[FRAME_DONE] = resolve;
      });
      this.source.enqueue(frame);
      const { enqueued, failure } = await settled;
      record.output = enqueued.length > 0 ? enqueued[enqueued.length - 1] : null;
      if (enqueued.length > 1) record.enqueuedCount = enqueued.length;
      if (failure) {
        record.transformFailure = String(failure?.message ?? failure);
        this.pipeBroken = record.transformFailure;
        // The pipe's own error handling (an 'error' message) runs after the failure.
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    });
    return record;
  }

  /** Closes the pipe and waits until every enqueued frame has left it. */
  async close() {
    const record = {};
    await this.step(record, async () => {
      if (!this.pipeBroken) this.source.close();
      record.pipeEnd = await this.drained;
    });
    return record;
  }
}
