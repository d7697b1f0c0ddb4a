// SPDX-License-Identifier: MPL-2.0
//
// The harness's request ops ("encrypt", "decrypt"): one LiveKit E2EE session per request,
// keys set and ratcheted through the worker's messages, frames put through its FrameCryptor.

import {
  Session,
  fixSendCount,
  liveKitVersion,
  isVideoCodec,
  keyProviderOptions,
  loadLiveKit,
  orphanEvents,
  toHex,
} from './livekit-worker.mjs';

const DEFAULT_SSRC = 0x11223344;
// RTP timestamps start at a random value in a browser; a fixed one without zero bytes here.
const DEFAULT_TIMESTAMP = 0x12345678;

export class RequestError extends Error {}

function parseHex(value, what) {
  if (typeof value !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(value)) {
    throw new RequestError(`${what} must be a string of hex byte pairs`);
  }
  return Uint8Array.from(Buffer.from(value, 'hex'));
}

function checkKeyIndex(value, what) {
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new RequestError(`${what} must be an integer 0..255, got ${JSON.stringify(value)}`);
  }
  return value;
}

function checkCount(value, what) {
  if (!Number.isInteger(value) || value < 0 || value > 1000) {
    throw new RequestError(`${what} must be an integer 0..1000, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** {"raw": hex} | {"passphrase": string}, as given in a request (never echoed back). */
function keySpec(key, what) {
  if (key && typeof key === 'object') {
    if (typeof key.passphrase === 'string') return { passphrase: key.passphrase };
    if (typeof key.raw === 'string') {
      if (parseHex(key.raw, `${what}.raw`).length === 0) {
        throw new RequestError(`${what}.raw must not be empty`);
      }
      return { raw: key.raw };
    }
  }
  throw new RequestError(`${what} must be {"raw": "<hex>"} or {"passphrase": "<string>"}`);
}

/** The keys to set before the first frame, in order; the last one becomes the current one. */
function initialKeys(req) {
  const keys = [];
  if (req.keys !== undefined) {
    if (!Array.isArray(req.keys)) throw new RequestError('keys must be an array');
    req.keys.forEach((entry, i) => {
      keys.push({
        key: keySpec(entry.key ?? entry, `keys[${i}]`),
        keyIndex: checkKeyIndex(entry.keyIndex ?? 0, `keys[${i}].keyIndex`),
        ratchets: checkCount(entry.ratchets ?? 0, `keys[${i}].ratchets`),
      });
    });
  }
  if (req.key !== undefined) {
    keys.push({
      key: keySpec(req.key, 'key'),
      keyIndex: checkKeyIndex(req.keyIndex ?? 0, 'keyIndex'),
      ratchets: checkCount(req.ratchets ?? 0, 'ratchets'),
    });
  }
  if (keys.length === 0) throw new RequestError('a request needs "key" (or "keys")');
  return keys;
}

/** Takes the worker's events out of a step record into a result entry. */
function events(record) {
  const out = {};
  for (const field of ['errors', 'ratchets', 'logs', 'otherMessages']) {
    if (record[field]?.length) out[field] = record[field];
  }
  return out;
}

function cryptoCalls(record, op) {
  return (record.cryptoCalls ?? []).filter((call) => call.op === op);
}

async function setKeyWithRatchets(session, { key, keyIndex, ratchets }) {
  await session.setKey(key, keyIndex);
  const chainKeys = [];
  for (let i = 0; i < ratchets; i++) chainKeys.push((await session.ratchet(keyIndex)).chainKey);
  return chainKeys;
}

function frameResult(op, index, frame, record, verbose) {
  const entry = { index };
  if (frame.name) entry.name = frame.name;
  if (record.notProcessed) {
    entry.ok = false;
    entry.notProcessed = record.notProcessed;
    return entry;
  }
  entry.ok = record.output !== null && !record.transformFailure;
  entry.data = record.output === null ? null : toHex(record.output);
  if (record.transformFailure) entry.transformFailure = record.transformFailure;
  if (op === 'encrypt') {
    const [call] = cryptoCalls(record, 'encrypt');
    if (call) {
      entry.clearBytes = call.additionalData.length / 2;
      entry.clearBytesOfInput = frame.data.length - call.plaintextLength;
      entry.iv = call.iv;
      entry.additionalData = call.additionalData;
    } else if (entry.ok) {
      entry.passedThrough = true; // LiveKit enqueued the frame without encrypting it
    }
    if (entry.ok && record.output.length >= 2) {
      entry.trailer = {
        ivLength: record.output[record.output.length - 2],
        keyIndex: record.output[record.output.length - 1],
      };
    }
  } else {
    const attempts = cryptoCalls(record, 'decrypt');
    entry.decryptAttempts = attempts.length;
    if (attempts.length) {
      const last = attempts[attempts.length - 1];
      entry.iv = last.iv;
      entry.additionalData = last.additionalData;
      entry.clearBytes = last.additionalData.length / 2;
    }
    if (!entry.ok && !record.transformFailure) entry.dropped = true;
  }
  Object.assign(entry, events(record));
  const derivations = (record.cryptoCalls ?? []).filter((c) => c.op === 'deriveKey' || c.op === 'deriveBits');
  // A ratchet is one deriveBits (the next chain key) and one deriveKey (its AES key).
  const ratchetSteps = derivations.filter((c) => c.op === 'deriveBits').length;
  if (ratchetSteps) entry.ratchetSteps = ratchetSteps;
  if (verbose && derivations.length) entry.derivations = derivations;
  return entry;
}

/**
 * Handles one "encrypt" or "decrypt" request: the frames (and key actions between them) in
 * order, through one LiveKit session.
 */
export async function handleFramesRequest(req) {
  const op = req.op;
  const codec = req.codec;
  await loadLiveKit();
  if (typeof codec !== 'string') throw new RequestError('codec must be one of vp8, vp9, h264, h265, opus');
  if (!Array.isArray(req.frames)) throw new RequestError('frames must be an array');
  const keys = initialKeys(req);
  const ssrcDefault = req.ssrc ?? DEFAULT_SSRC;
  if (!Number.isInteger(ssrcDefault) || ssrcDefault < 0 || ssrcDefault > 0xffffffff) {
    throw new RequestError('ssrc must be an integer 0..4294967295');
  }
  if (req.sendCount !== undefined) {
    if (!Number.isInteger(req.sendCount) || req.sendCount < 0 || req.sendCount >= 0xffff) {
      throw new RequestError('sendCount must be an integer 0..65534');
    }
    fixSendCount(req.sendCount);
  }
  const timestampStep = isVideoCodec(codec) ? 3000 : 960;

  let options;
  let session;
  try {
    options = keyProviderOptions(req);
    session = new Session({
      operation: op === 'encrypt' ? 'encode' : 'decode',
      codec,
      options,
      logLevel: req.logLevel,
    });
  } catch (e) {
    throw new RequestError(e.message);
  }

  const setupRecord = {};
  const setupKeys = [];
  await session.step(setupRecord, async () => {
    await session.start();
    for (const entry of keys) {
      const chainKeys = await setKeyWithRatchets(session, entry);
      setupKeys.push({ keyIndex: entry.keyIndex, ratchets: entry.ratchets, chainKeys });
    }
    await session.openPipe();
  });
  const setup = { keys: setupKeys, derivations: setupRecord.cryptoCalls ?? [], ...events(setupRecord) };

  const results = [];
  let frameCount = 0;
  for (const [index, item] of req.frames.entries()) {
    if (item && item.action !== undefined) {
      const record = {};
      const entry = { index, action: item.action };
      if (item.action === 'setKey') {
        const spec = {
          key: keySpec(item.key, `frames[${index}].key`),
          keyIndex: checkKeyIndex(item.keyIndex ?? 0, `frames[${index}].keyIndex`),
          ratchets: checkCount(item.ratchets ?? 0, `frames[${index}].ratchets`),
        };
        await session.step(record, async () => {
          entry.chainKeys = await setKeyWithRatchets(session, spec);
        });
        entry.keyIndex = spec.keyIndex;
      } else if (item.action === 'ratchet') {
        const keyIndex = item.keyIndex === undefined ? undefined : checkKeyIndex(item.keyIndex, `frames[${index}].keyIndex`);
        await session.step(record, async () => {
          const event = await session.ratchet(keyIndex);
          entry.keyIndex = event.keyIndex;
          entry.chainKey = event.chainKey;
        });
      } else {
        throw new RequestError(`frames[${index}].action must be "setKey" or "ratchet"`);
      }
      Object.assign(entry, events(record));
      results.push(entry);
      continue;
    }
    if (!item || typeof item !== 'object') throw new RequestError(`frames[${index}] must be an object`);
    const data = parseHex(item.data, `frames[${index}].data`);
    let type;
    if (isVideoCodec(codec)) {
      // Required: LiveKit's VP8 rule (and its H.26x fallback) keys on it.
      type = item.type;
      if (type !== 'key' && type !== 'delta') {
        throw new RequestError(`frames[${index}].type must be "key" or "delta" for a video codec`);
      }
    }
    const frame = {
      data,
      type,
      timestamp: item.timestamp ?? DEFAULT_TIMESTAMP + frameCount * timestampStep,
      ssrc: item.ssrc ?? ssrcDefault,
      payloadType: item.payloadType,
      name: item.name,
    };
    frameCount += 1;
    const record = await session.processFrame(frame);
    results.push(frameResult(op, index, frame, record, req.verbose === true));
  }
  const end = await session.close();

  const response = {
    ok: true,
    livekitClient: liveKitVersion(),
    op,
    codec,
    keyProviderOptions: options,
    setup,
    frames: results,
    pipeEnd: end.pipeEnd,
  };
  const late = events(end);
  if (Object.keys(late).length) response.afterLastFrame = late;
  if (Object.keys(orphanEvents).length) response.unattributedEvents = orphanEvents;
  return response;
}
