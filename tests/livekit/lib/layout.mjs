// SPDX-License-Identifier: MPL-2.0
//
// The "layout" op: what LiveKit's frame format is, learned by running LiveKit's own worker on
// sample frames with controlled inputs (key index, SSRC, RTP timestamp, send counter) and
// looking at what comes out. Nothing here is taken from documentation; every fact is a
// measurement of this run, and each one is checked against the others (see `consistent`).

import { sampleFrames, pseudoRandomBytes } from './frames.mjs';
import { CODECS, Session, fixSendCount, keyProviderOptions, liveKitVersion, loadLiveKit, toHex } from './livekit-worker.mjs';

const RAW_KEY = { raw: '00112233445566778899aabbccddeeff' };
const PASSPHRASE = { passphrase: 'layout passphrase' };
const KEY_INDEX = 5;
const SEND_COUNT = 100;
const SSRC_PLAIN = 0x11223344;
const SSRC_WITH_ZEROS = 0x00000001; // makes the IV start 00 00 00 01

const fromHex = (text) => Uint8Array.from(Buffer.from(text, 'hex'));
const equal = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/** Removes H.26x emulation prevention (00 00 03 -> 00 00): for reading LiveKit's output. */
function removeEmulationPrevention(bytes) {
  const out = [];
  let zeros = 0;
  for (const byte of bytes) {
    if (zeros >= 2 && byte === 3) {
      zeros = 0;
      continue;
    }
    out.push(byte);
    zeros = byte === 0 ? zeros + 1 : 0;
  }
  return Uint8Array.from(out);
}

/** Offsets of 00 00 00 / 00 00 01 / 00 00 02 (what a depacketizer could take as a start code). */
function startCodeEmulations(bytes) {
  const found = [];
  for (let i = 0; i + 2 < bytes.length; i++) {
    if (bytes[i] === 0 && bytes[i + 1] === 0 && bytes[i + 2] <= 2) found.push(i);
  }
  return found;
}

function u32(value) {
  return Uint8Array.of((value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
}

async function newSession(operation, codec, { key = RAW_KEY, keyIndex = KEY_INDEX, ratchets = 0, options = {} } = {}) {
  const session = new Session({ operation, codec, options: keyProviderOptions(options) });
  const record = {};
  await session.step(record, async () => {
    await session.start();
    await session.setKey(key, keyIndex);
    for (let i = 0; i < ratchets; i++) await session.ratchet(keyIndex);
    await session.openPipe();
  });
  session.setupRecord = record;
  return session;
}

/** Encrypts with LiveKit, decrypts with LiveKit, and measures the frame's layout. */
async function measureFrame(sample, { ssrc, timestamp, sendCount, encoder, decoder }) {
  const input = sample.data;
  const record = await encoder.processFrame({ data: input, type: sample.type, timestamp, ssrc });
  const fact = { frame: sample.name, type: sample.type, inputLength: input.length };
  if (record.transformFailure || record.notProcessed) {
    fact.encryptFailure = record.transformFailure ?? record.notProcessed;
    return fact;
  }
  const out = record.output;
  fact.outputLength = out?.length ?? null;
  const call = (record.cryptoCalls ?? []).find((c) => c.op === 'encrypt');
  if (!call) {
    fact.encrypted = false;
    fact.passedThroughUnchanged = out !== null && equal(out, input);
    return fact;
  }
  fact.encrypted = true;
  if (record.logs?.length) fact.workerLogs = record.logs.map((l) => `${l.level}: ${l.msg}${l.error ? ` (${l.error})` : ''}`);
  const aad = fromHex(call.additionalData);
  const iv = fromHex(call.iv);
  fact.clearBytesOfInput = input.length - call.plaintextLength;
  fact.clearBytesOfOutput = aad.length;
  fact.clearHeaderIsAdditionalData = equal(out.subarray(0, aad.length), aad);
  fact.clearHeaderEqualsInputPrefix = equal(aad, input.subarray(0, fact.clearBytesOfInput));
  if (!fact.clearHeaderEqualsInputPrefix) {
    fact.clearHeaderChange = `${fact.clearBytesOfInput} input bytes became ${aad.length}: ${toHex(input.subarray(0, fact.clearBytesOfInput))} -> ${toHex(aad)}`;
  }
  const body = out.subarray(aad.length);
  const unescaped = removeEmulationPrevention(body);
  const expectedBodyLength = call.plaintextLength + 16 + iv.length + 2;
  fact.emulationPreventionBytes = body.length - expectedBodyLength;
  const readable = fact.emulationPreventionBytes === 0 ? body : unescaped;
  fact.bodyParses = readable.length === expectedBodyLength;
  fact.ciphertextLength = call.plaintextLength + 16;
  fact.gcmTagBytes = 16;
  fact.trailerIv = toHex(readable.subarray(readable.length - 14, readable.length - 2));
  fact.trailerIvIsTheIv = equal(readable.subarray(readable.length - 14, readable.length - 2), iv);
  fact.trailerIvLengthByte = out[out.length - 2];
  fact.trailerKeyIndexByte = out[out.length - 1];
  fact.iv = call.iv;
  fact.ivIsSsrcTimestampCounter = equal(iv, Uint8Array.of(...u32(ssrc), ...u32(timestamp), ...u32((timestamp - sendCount) >>> 0)));
  fact.startCodeEmulationsInBody = startCodeEmulations(body).length;

  const back = await decoder.processFrame({ data: out, type: sample.type, timestamp, ssrc });
  // What the receiver should get back: the clear header as sent (start codes normalized), then
  // the rest of the input.
  const sentPlaintext = new Uint8Array(aad.length + call.plaintextLength);
  sentPlaintext.set(aad);
  sentPlaintext.set(input.subarray(fact.clearBytesOfInput), aad.length);
  fact.decryptsToSentPlaintext = back.output !== null && equal(back.output, sentPlaintext);
  fact.decryptsToInput = back.output !== null && equal(back.output, input);
  if (back.output === null) {
    fact.receiverDropped = true;
    fact.receiverDecryptCalls = (back.cryptoCalls ?? []).filter((c) => c.op === 'decrypt').length;
    if (back.logs?.length) fact.receiverLogs = back.logs.map((l) => `${l.level}: ${l.msg}`);
  } else if (!fact.decryptsToSentPlaintext) {
    fact.decryptsTo = toHex(back.output);
  }
  return fact;
}

async function codecLayout(codec) {
  const facts = [];
  for (const [label, ssrc] of [
    ['ssrc 0x11223344', SSRC_PLAIN],
    ['ssrc 0x00000001 (IV starts with 00 00 00 01)', SSRC_WITH_ZEROS],
  ]) {
    fixSendCount(SEND_COUNT);
    const encoder = await newSession('encode', codec);
    const decoder = await newSession('decode', codec);
    let counter = SEND_COUNT;
    let timestamp = 90000;
    for (const sample of sampleFrames(codec)) {
      const fact = await measureFrame(sample, { ssrc, timestamp, sendCount: counter, encoder, decoder });
      fact.ssrc = label;
      facts.push(fact);
      counter += 1;
      timestamp += 3000;
    }
    const empty = await encoder.processFrame({ data: new Uint8Array(0), type: 'delta', timestamp, ssrc });
    facts.push({
      frame: 'empty frame',
      ssrc: label,
      inputLength: 0,
      encrypted: (empty.cryptoCalls ?? []).some((c) => c.op === 'encrypt'),
      passedThroughUnchanged: empty.output !== null && empty.output.length === 0,
    });
    await encoder.close();
    await decoder.close();
  }
  return facts;
}

/** VP8: does the clear count follow frame.type or the bitstream's own keyframe bit? */
async function vp8TypeExperiment() {
  const [keyframe] = sampleFrames('vp8');
  fixSendCount(SEND_COUNT);
  const encoder = await newSession('encode', 'vp8');
  const asDelta = await encoder.processFrame({ data: keyframe.data, type: 'delta', timestamp: 1, ssrc: SSRC_PLAIN });
  const tooShort = await encoder.processFrame({ data: pseudoRandomBytes(6, 9), type: 'key', timestamp: 2, ssrc: SSRC_PLAIN });
  await encoder.close();
  const clear = (record) => {
    const call = (record.cryptoCalls ?? []).find((c) => c.op === 'encrypt');
    return call ? call.additionalData.length / 2 : null;
  };
  return {
    keyframeBytesSentAsDelta: { clearBytes: clear(asDelta) },
    sixByteFrameSentAsKey: {
      ok: tooShort.output !== null && !tooShort.transformFailure,
      transformFailure: tooShort.transformFailure ?? null,
      errors: tooShort.errors ?? [],
    },
  };
}

/** Key index byte: the same frame under several key indexes. */
async function keyIndexExperiment() {
  const [frame] = sampleFrames('vp8');
  const seen = [];
  for (const keyIndex of [0, 1, 15]) {
    const encoder = await newSession('encode', 'vp8', { keyIndex });
    const record = await encoder.processFrame({ data: frame.data, type: frame.type, timestamp: 1, ssrc: SSRC_PLAIN });
    await encoder.close();
    seen.push({ keyIndex, lastByte: record.output[record.output.length - 1] });
  }
  // keyringSize 16 (LiveKit's default) is the ring size: index 16 lands in slot 0.
  const encoder = await newSession('encode', 'vp8', { keyIndex: 16 });
  const wrapped = await encoder.processFrame({ data: frame.data, type: frame.type, timestamp: 1, ssrc: SSRC_PLAIN });
  await encoder.close();
  seen.push({ keyIndex: 16, lastByte: wrapped.output?.[wrapped.output.length - 1] ?? null, note: 'keyringSize 16' });
  return seen;
}

/** Key derivation and ratcheting as the worker calls WebCrypto. */
async function derivationExperiment() {
  const out = {};
  for (const [name, key] of [
    ['raw key', RAW_KEY],
    ['passphrase', PASSPHRASE],
  ]) {
    const session = await newSession('encode', 'vp8', { key, ratchets: 1 });
    await session.close();
    out[name] = (session.setupRecord.cryptoCalls ?? []).map((c) => ({ op: c.op, from: c.from, ...c.params, ...(c.bits ? { bits: c.bits } : { derived: c.derived }) }));
    out[`${name} chain key after one ratchet`] = session.setupRecord.ratchets?.[0]?.chainKey;
  }
  return out;
}

/** Sender ratchets n times before its first frame; receiver has the original key. */
async function ratchetWindowExperiment() {
  const [frame] = sampleFrames('vp8');
  const rows = [];
  for (const senderRatchets of [1, 2, 3]) {
    const encoder = await newSession('encode', 'vp8', { ratchets: senderRatchets });
    const decoder = await newSession('decode', 'vp8');
    const enc = await encoder.processFrame({ data: frame.data, type: frame.type, timestamp: 1, ssrc: SSRC_PLAIN });
    const dec = await decoder.processFrame({ data: enc.output, type: frame.type, timestamp: 1, ssrc: SSRC_PLAIN });
    await encoder.close();
    await decoder.close();
    rows.push({
      senderRatchets,
      receiverRatchetWindowSize: decoder.options.ratchetWindowSize,
      decrypted: dec.output !== null && equal(dec.output, frame.data),
      decryptAttempts: (dec.cryptoCalls ?? []).filter((c) => c.op === 'decrypt').length,
      receiverRatchetDerivations: (dec.cryptoCalls ?? []).filter((c) => c.op === 'deriveBits').length,
      distinctRatchetResults: new Set((dec.cryptoCalls ?? []).filter((c) => c.op === 'deriveBits').map((c) => c.resultFingerprint)).size,
      receiverRatchetedTo: (dec.ratchets ?? []).map((r) => r.chainKey),
      errors: dec.errors ?? [],
    });
  }
  return rows;
}

/** Runs every experiment and returns the facts, with a list of any that contradict the rest. */
export async function layoutReport() {
  await loadLiveKit();
  const codecs = {};
  for (const codec of CODECS) codecs[codec] = await codecLayout(codec);
  const report = {
    ok: true,
    livekitClient: liveKitVersion(),
    op: 'layout',
    codecs,
    vp8FrameType: await vp8TypeExperiment(),
    keyIndexByte: await keyIndexExperiment(),
    derivation: await derivationExperiment(),
    ratchetWindow: await ratchetWindowExperiment(),
  };
  report.inconsistencies = inconsistencies(report);
  report.liveKitLimitations = limitations(report);
  return report;
}

/**
 * LiveKit encrypts an H.26x access unit without a slice NAL unit by the VP8 rule (10 or 3 clear
 * bytes) and without emulation prevention; when its IV then holds 00 00 01, LiveKit's own
 * receiver takes that for a NAL unit, computes another clear header, and drops the frame.
 * A LiveKit limitation, reported as such (WebRTC's H.26x access units always carry a slice).
 */
function isFallbackStartCodeLimitation(fact) {
  return (
    fact.receiverDropped === true &&
    fact.startCodeEmulationsInBody > 0 &&
    (fact.workerLogs ?? []).some((line) => line.includes('falling back to VP8 handling'))
  );
}

/** LiveKit behaviours measured here that a sender of this format has to avoid. */
function limitations(report) {
  const found = [];
  for (const [codec, facts] of Object.entries(report.codecs)) {
    for (const f of facts) {
      if (isFallbackStartCodeLimitation(f)) {
        found.push(
          `${codec} / ${f.frame} / ${f.ssrc}: no slice NAL unit, so LiveKit used the VP8 rule without ` +
            `emulation prevention; a start code in the IV made LiveKit's receiver drop the frame`,
        );
      }
    }
  }
  const shortKey = report.vp8FrameType.sixByteFrameSentAsKey;
  if (!shortKey.ok) {
    found.push(`vp8: a frame shorter than 10 bytes given as "key" breaks the transform pipe (${shortKey.transformFailure}); later frames of the track are not processed`);
  }
  for (const row of report.ratchetWindow) {
    if (!row.decrypted) {
      found.push(
        `ratchet: a receiver holding the original key does not follow a sender that ratcheted ${row.senderRatchets} times ` +
          `(ratchetWindowSize ${row.receiverRatchetWindowSize}: its ${row.receiverRatchetDerivations} ratchet derivations gave ` +
          `${row.distinctRatchetResults} distinct key(s), i.e. each attempt ratchets the stored key one step again)`,
      );
    }
  }
  return found;
}

/** Facts every encrypted frame must show, whatever the codec; a list of those that do not. */
function inconsistencies(report) {
  const problems = [];
  for (const [codec, facts] of Object.entries(report.codecs)) {
    for (const f of facts) {
      const where = `${codec} / ${f.frame} / ${f.ssrc}`;
      if (f.encryptFailure) {
        problems.push(`${where}: encryption failed: ${f.encryptFailure}`);
        continue;
      }
      if (!f.encrypted) {
        if (!f.passedThroughUnchanged) problems.push(`${where}: not encrypted, yet changed`);
        continue;
      }
      for (const check of ['clearHeaderIsAdditionalData', 'bodyParses', 'trailerIvIsTheIv', 'ivIsSsrcTimestampCounter']) {
        if (f[check] !== true) problems.push(`${where}: ${check} is ${f[check]}`);
      }
      if (!f.decryptsToSentPlaintext && !isFallbackStartCodeLimitation(f)) {
        problems.push(`${where}: LiveKit's receiver did not return what LiveKit's sender encrypted`);
      }
      if (f.trailerIvLengthByte !== 12) problems.push(`${where}: IV length byte ${f.trailerIvLengthByte}`);
      if (f.trailerKeyIndexByte !== KEY_INDEX) problems.push(`${where}: key index byte ${f.trailerKeyIndexByte}`);
    }
  }
  return problems;
}

/** The report as text, for people. */
export function formatLayout(report) {
  const lines = [`LiveKit E2EE frame layout, measured with livekit-client ${report.livekitClient}`];
  for (const [codec, facts] of Object.entries(report.codecs)) {
    lines.push('', `${codec}:`);
    for (const f of facts) {
      if (f.encryptFailure) {
        lines.push(`  ${f.frame} [${f.ssrc}]: encryption failed: ${f.encryptFailure}`);
      } else if (!f.encrypted) {
        lines.push(`  ${f.frame} [${f.ssrc}]: not encrypted, passed through unchanged: ${f.passedThroughUnchanged}`);
      } else {
        const clear =
          f.clearBytesOfInput === f.clearBytesOfOutput
            ? `${f.clearBytesOfOutput} clear`
            : `${f.clearBytesOfInput} clear in input -> ${f.clearBytesOfOutput} in output`;
        lines.push(
          `  ${f.frame}${f.type ? ` (${f.type})` : ''} [${f.ssrc}]: ${f.inputLength} -> ${f.outputLength} bytes, ${clear}, ` +
            `ciphertext ${f.ciphertextLength} (incl. 16-byte tag), trailer IV(12) ${f.trailerIvLengthByte} ${f.trailerKeyIndexByte}, ` +
            `emulation prevention bytes ${f.emulationPreventionBytes}, start-code-like runs after the clear header ${f.startCodeEmulationsInBody}, ` +
            `round trip ${f.decryptsToInput ? 'ok' : f.decryptsToSentPlaintext ? 'ok (clear header as sent)' : 'FAILED'}`,
        );
        if (f.receiverDropped) {
          lines.push(`      receiver dropped it after ${f.receiverDecryptCalls} AES-GCM decrypt calls${f.receiverLogs ? `; ${f.receiverLogs.join('; ')}` : ''}`);
        }
        if (f.clearHeaderChange) lines.push(`      clear header rewritten: ${f.clearHeaderChange}`);
        if (f.workerLogs) lines.push(`      worker said: ${f.workerLogs.join('; ')}`);
      }
    }
  }
  lines.push('', 'VP8 frame type:');
  lines.push(`  keyframe bytes given as type "delta": ${report.vp8FrameType.keyframeBytesSentAsDelta.clearBytes} clear bytes`);
  const short = report.vp8FrameType.sixByteFrameSentAsKey;
  lines.push(`  6-byte frame given as type "key": ${short.ok ? 'encrypted' : `not encrypted (${short.transformFailure ?? 'dropped'})`}`);
  lines.push('', 'Key index byte (last byte of the frame):');
  for (const row of report.keyIndexByte) lines.push(`  key index ${row.keyIndex}: last byte ${row.lastByte}${row.note ? ` (${row.note})` : ''}`);
  lines.push('', 'Key derivation (WebCrypto calls the worker made):');
  for (const [name, value] of Object.entries(report.derivation)) {
    if (Array.isArray(value)) {
      for (const call of value) lines.push(`  ${name}: ${JSON.stringify(call)}`);
    } else {
      lines.push(`  ${name}: ${value}`);
    }
  }
  lines.push('', 'Receiver ratchet window (sender ratchets before its first frame, receiver has the original key):');
  for (const row of report.ratchetWindow) {
    lines.push(
      `  sender ratcheted ${row.senderRatchets}x, receiver ratchetWindowSize ${row.receiverRatchetWindowSize}: ` +
        `${row.decrypted ? 'decrypted' : 'NOT decrypted'} after ${row.decryptAttempts} attempts, ` +
        `${row.receiverRatchetDerivations} ratchet derivations giving ${row.distinctRatchetResults} distinct key(s)` +
        `${row.errors.length ? `; ${row.errors.join('; ')}` : ''}`,
    );
  }
  if (report.liveKitLimitations.length) {
    lines.push('', 'LiveKit limitations seen in this run:');
    for (const line of report.liveKitLimitations) lines.push(`  ${line}`);
  }
  lines.push('', report.inconsistencies.length ? `INCONSISTENCIES:\n  ${report.inconsistencies.join('\n  ')}` : 'All measured frames are self-consistent.');
  return lines.join('\n');
}
