#!/usr/bin/env node
// SPDX-License-Identifier: MPL-2.0
//
// Self-test of the LiveKit harness: frames of every codec through LiveKit's encrypt and decrypt
// (each in its own harness process, as the Rust tests call it), key derivation by passphrase and
// raw key, a key-index switch, sender ratchets followed by the receiver, wrong keys and tampering,
// and the layout LiveKit produces checked against an independent AES-GCM of the same frame.
// Prints the measured layout report. Exits non-zero, naming each failure, if anything is off.

import { spawnSync } from 'node:child_process';
import { createCipheriv, hkdfSync, pbkdf2Sync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addEmulationPrevention, sampleFrames } from './lib/frames.mjs';
import { formatLayout } from './lib/layout.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const harness = join(here, 'harness.mjs');

if (!existsSync(join(here, 'node_modules', 'livekit-client', 'package.json'))) {
  console.error(`livekit-client is not installed: run \`npm ci\` in ${here}`);
  process.exit(1);
}

const RAW_KEY = '0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const SALT = 'LKFrameEncryptionKey';
const CODECS = ['vp8', 'vp9', 'h264', 'h265', 'opus'];
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const bytes = (text) => Uint8Array.from(Buffer.from(text, 'hex'));

let passed = 0;
const failures = [];

function check(name, condition, detail = '') {
  if (condition) {
    passed += 1;
  } else {
    failures.push(`${name}${detail ? `: ${detail}` : ''}`);
    console.error(`FAIL ${name}${detail ? `: ${detail}` : ''}`);
  }
}

/** One harness process: request in, parsed response and exit status out. */
function call(request) {
  const run = spawnSync(process.execPath, [harness], {
    input: JSON.stringify(request),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (run.error) throw run.error;
  let response;
  try {
    response = JSON.parse(run.stdout);
  } catch {
    throw new Error(`harness wrote no JSON (exit ${run.status}): ${run.stdout.slice(0, 200)} ${run.stderr.slice(0, 2000)}`);
  }
  return { response, status: run.status, stderr: run.stderr };
}

function framesOf(codec) {
  return sampleFrames(codec).map((f) => ({ name: f.name, type: f.type, data: hex(f.data) }));
}

/** What a receiver gets back: the clear header as LiveKit sent it, then the rest of the input. */
function sentPlaintext(input, encrypted) {
  return encrypted.additionalData + input.data.slice(2 * encrypted.clearBytesOfInput);
}

/** Start-code positions and NAL header offsets in an Annex B access unit (test-side parser). */
function nalUnitOffsets(data) {
  const offsets = [];
  for (let i = 0; i + 2 < data.length; i++) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) {
      offsets.push(i + 3);
      i += 2;
    }
  }
  return offsets;
}

/**
 * The clear byte count the design expects (VP8 10/3, VP9 0, Opus 1, H.26x through the first
 * slice's NAL header + 1 byte), computed here from the frame itself.
 */
function expectedClearBytes(codec, frame, header) {
  if (codec === 'vp8') return frame.type === 'key' ? 10 : 3;
  if (codec === 'vp9') return 0;
  if (codec === 'opus') return 1;
  const isSlice =
    codec === 'h264'
      ? (b) => [1, 5].includes(b & 0x1f)
      : (b) => {
          const type = (b >> 1) & 0x3f;
          return type <= 9 || (type >= 16 && type <= 21);
        };
  const data = bytes(header);
  const slice = nalUnitOffsets(data).find((offset) => isSlice(data[offset]));
  return slice === undefined ? (frame.type === 'key' ? 10 : 3) : slice + 2;
}

/** The frame LiveKit should output, built here with node:crypto from the facts it reported. */
function independentEncryption({ key, codec, input, encrypted, keyIndex }) {
  const aad = bytes(encrypted.additionalData);
  const plaintext = bytes(input.data).subarray(encrypted.clearBytesOfInput);
  const iv = bytes(encrypted.iv);
  const cipher = createCipheriv('aes-128-gcm', key, iv);
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  let body = Buffer.concat([ciphertext, iv, Uint8Array.of(12, keyIndex)]);
  const nal = (codec === 'h264' || codec === 'h265') && !(encrypted.logs ?? []).some((l) => l.msg.includes('falling back'));
  if (nal) body = Buffer.from(addEmulationPrevention(body));
  return hex(Buffer.concat([aad, body]));
}

const hkdfKey = (raw) => Buffer.from(hkdfSync('sha256', Buffer.from(raw, 'hex'), SALT, Buffer.alloc(128), 16));
const pbkdf2Key = (passphrase) => pbkdf2Sync(passphrase, SALT, 100000, 16, 'sha256');

// --- every codec: LiveKit encrypts, LiveKit decrypts, bytes as the format says ------------------

for (const codec of CODECS) {
  const frames = framesOf(codec);
  const enc = call({ op: 'encrypt', codec, key: { raw: RAW_KEY }, keyIndex: 2, sendCount: 4242, frames }).response;
  check(`${codec}: encrypt response`, enc.ok === true && enc.frames.length === frames.length, JSON.stringify(enc).slice(0, 300));
  if (!enc.ok) continue;
  check(`${codec}: livekit-client version reported`, /^\d+\.\d+\.\d+$/.test(enc.livekitClient ?? ''), enc.livekitClient);
  enc.frames.forEach((out, i) => {
    const input = frames[i];
    const where = `${codec} encrypt "${input.name}"`;
    check(`${where}: encrypted`, out.ok && typeof out.iv === 'string', JSON.stringify(out).slice(0, 300));
    if (!out.ok) return;
    check(`${where}: trailer`, out.trailer.ivLength === 12 && out.trailer.keyIndex === 2, JSON.stringify(out.trailer));
    check(`${where}: starts with its clear header`, out.data.startsWith(out.additionalData));
    const expected = expectedClearBytes(codec, input, out.additionalData);
    check(`${where}: clear bytes`, out.clearBytes === expected, `LiveKit kept ${out.clearBytes}, expected ${expected}`);
    const independent = independentEncryption({ key: hkdfKey(RAW_KEY), codec, input, encrypted: out, keyIndex: 2 });
    check(`${where}: bytes equal an independent AES-GCM of the reported layout`, independent === out.data, `LiveKit ${out.data.slice(0, 80)}... independent ${independent.slice(0, 80)}...`);
  });
  const dec = call({
    op: 'decrypt',
    codec,
    key: { raw: RAW_KEY },
    keyIndex: 2,
    frames: enc.frames.map((f, i) => ({ type: frames[i].type, data: f.data })),
  }).response;
  check(`${codec}: decrypt response`, dec.ok === true && dec.frames.length === frames.length, JSON.stringify(dec).slice(0, 300));
  if (!dec.ok) continue;
  dec.frames.forEach((out, i) => {
    const where = `${codec} decrypt "${frames[i].name}"`;
    check(`${where}: round trip`, out.ok && out.data === sentPlaintext(frames[i], enc.frames[i]), JSON.stringify(out).slice(0, 400));
    check(`${where}: no ratchet needed`, out.decryptAttempts === 1 && !out.ratchets, `attempts ${out.decryptAttempts}`);
  });
}

// --- same request twice with a fixed send counter: same bytes (usable as known answers) --------

{
  const request = { op: 'encrypt', codec: 'h264', key: { raw: RAW_KEY }, sendCount: 7, frames: framesOf('h264').slice(0, 2) };
  const first = call(request).response;
  const second = call(request).response;
  check('fixed sendCount: identical output', first.ok && JSON.stringify(first.frames) === JSON.stringify(second.frames));
}

// --- passphrase (PBKDF2) ------------------------------------------------------------------------

for (const codec of ['vp8', 'opus', 'h265']) {
  const frames = framesOf(codec);
  const key = { passphrase: 'a shared passphrase' };
  const enc = call({ op: 'encrypt', codec, key, sendCount: 11, frames }).response;
  const derivation = enc.setup?.derivations?.[0]?.params;
  check(`${codec} passphrase: PBKDF2 SHA-256 100000 with the salt`, derivation?.name === 'PBKDF2' && derivation.iterations === 100000 && derivation.salt === SALT, JSON.stringify(derivation));
  const first = enc.frames[0];
  const independent = independentEncryption({ key: pbkdf2Key(key.passphrase), codec, input: frames[0], encrypted: first, keyIndex: 0 });
  check(`${codec} passphrase: bytes equal an independent AES-GCM with the PBKDF2 key`, independent === first.data);
  const dec = call({ op: 'decrypt', codec, key, frames: enc.frames.map((f, i) => ({ type: frames[i].type, data: f.data })) }).response;
  check(`${codec} passphrase: round trip`, dec.frames.every((f, i) => f.ok && f.data === sentPlaintext(frames[i], enc.frames[i])));
  const wrong = call({ op: 'decrypt', codec, key: { passphrase: 'another passphrase' }, frames: enc.frames.slice(0, 1).map((f) => ({ type: frames[0].type, data: f.data })) }).response;
  check(`${codec} passphrase: a wrong passphrase decrypts nothing`, wrong.frames[0].ok === false && wrong.frames[0].data === null && wrong.frames[0].dropped === true);
}

// --- key index switch between frames ------------------------------------------------------------

{
  const [key0, key3] = [{ raw: RAW_KEY }, { raw: 'a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf' }];
  const [keyframe, delta] = framesOf('vp8');
  const enc = call({
    op: 'encrypt',
    codec: 'vp8',
    key: key0,
    keyIndex: 0,
    frames: [keyframe, delta, { action: 'setKey', keyIndex: 3, key: key3 }, keyframe, delta],
  }).response;
  const outputs = enc.frames.filter((f) => f.action === undefined);
  check('key switch: trailer key index follows the switch', outputs.map((f) => f.trailer?.keyIndex).join() === '0,0,3,3', JSON.stringify(outputs.map((f) => f.trailer)));
  const inputs = [keyframe, delta, keyframe, delta];
  const received = outputs.map((f, i) => ({ type: inputs[i].type, data: f.data }));
  const both = call({ op: 'decrypt', codec: 'vp8', keys: [{ key: key0, keyIndex: 0 }, { key: key3, keyIndex: 3 }], frames: received }).response;
  check('key switch: a receiver with both keys decrypts every frame', both.frames.every((f, i) => f.ok && f.data === inputs[i].data), JSON.stringify(both.frames.map((f) => f.ok)));
  const onlyOld = call({ op: 'decrypt', codec: 'vp8', key: key0, frames: received }).response;
  check(
    'key switch: a receiver without key 3 drops those frames and says the key is missing',
    onlyOld.frames[0].ok && onlyOld.frames[1].ok && !onlyOld.frames[2].ok && !onlyOld.frames[3].ok &&
      (onlyOld.frames[2].errors ?? []).some((e) => e.startsWith('MissingKey')),
    JSON.stringify(onlyOld.frames.slice(2)),
  );
  const late = call({
    op: 'decrypt',
    codec: 'vp8',
    key: key0,
    frames: [received[0], received[1], { action: 'setKey', keyIndex: 3, key: key3 }, received[2], received[3]],
  }).response;
  check('key switch: the new key added between frames works from the next frame', late.frames.filter((f) => f.action === undefined).every((f) => f.ok));
}

// --- ratchet: the sender ratchets, the receiver's ratchet window follows ------------------------

{
  const key = { raw: RAW_KEY };
  const [keyframe, delta] = framesOf('vp8');
  const enc = call({
    op: 'encrypt',
    codec: 'vp8',
    key,
    frames: [keyframe, { action: 'ratchet' }, delta, { action: 'ratchet' }, delta],
  }).response;
  const senderChain = enc.frames.filter((f) => f.action === 'ratchet').map((f) => f.chainKey);
  const inputs = [keyframe, delta, delta];
  const received = enc.frames.filter((f) => f.action === undefined).map((f, i) => ({ type: inputs[i].type, data: f.data }));
  const dec = call({ op: 'decrypt', codec: 'vp8', key, frames: received }).response;
  check('ratchet: receiver decrypts across two sender ratchets, one per frame', dec.frames.every((f, i) => f.ok && f.data === inputs[i].data), JSON.stringify(dec.frames.map((f) => [f.ok, f.decryptAttempts])));
  const receiverChain = dec.frames.flatMap((f) => (f.ratchets ?? []).map((r) => r.chainKey));
  check('ratchet: receiver ratchets to the chain keys the sender reported', receiverChain.join() === senderChain.join(), `${receiverChain} vs ${senderChain}`);
  const expectedFirst = hex(hkdfSync('sha256', Buffer.from(RAW_KEY, 'hex'), SALT, Buffer.alloc(128), 32));
  check('ratchet: chain key = HKDF-SHA256(key, salt, 128 zero bytes, 32)', senderChain[0] === expectedFirst, `${senderChain[0]} vs ${expectedFirst}`);

  const preRatcheted = call({ op: 'encrypt', codec: 'vp8', key, ratchets: 1, frames: [keyframe] }).response;
  const followed = call({ op: 'decrypt', codec: 'vp8', key, frames: [{ type: 'key', data: preRatcheted.frames[0].data }] }).response;
  check('ratchet: "ratchets": 1 on the sender, receiver recovers', followed.frames[0].ok && followed.frames[0].ratchetSteps === 1);
  const same = call({ op: 'decrypt', codec: 'vp8', key, ratchets: 1, frames: [{ type: 'key', data: preRatcheted.frames[0].data }] }).response;
  check('ratchet: a receiver ratcheted as far decrypts at the first attempt', same.frames[0].ok && same.frames[0].decryptAttempts === 1);
  const noWindow = call({ op: 'decrypt', codec: 'vp8', key, keyProvider: 'external', frames: [{ type: 'key', data: preRatcheted.frames[0].data }] }).response;
  check(
    'ratchet: ExternalE2EEKeyProvider options (ratchetWindowSize 0) do not follow',
    noWindow.keyProviderOptions.ratchetWindowSize === 0 && !noWindow.frames[0].ok && (noWindow.frames[0].errors ?? []).some((e) => e.startsWith('InvalidKey: Decryption failed')),
    JSON.stringify(noWindow.frames[0]),
  );
}

// --- tampering and bad requests -----------------------------------------------------------------

{
  const frames = framesOf('h264').slice(0, 1);
  const enc = call({ op: 'encrypt', codec: 'h264', key: { raw: RAW_KEY }, frames }).response;
  const data = bytes(enc.frames[0].data);
  data[enc.frames[0].clearBytes + 20] ^= 0x40;
  const dec = call({ op: 'decrypt', codec: 'h264', key: { raw: RAW_KEY }, frames: [{ type: 'key', data: hex(data) }] }).response;
  check('tampered ciphertext is dropped', dec.frames[0].ok === false && dec.frames[0].data === null, JSON.stringify(dec.frames[0]).slice(0, 300));
  const header = bytes(enc.frames[0].data);
  header[5] ^= 0x01; // inside the clear SPS: authenticated as additional data
  const dec2 = call({ op: 'decrypt', codec: 'h264', key: { raw: RAW_KEY }, frames: [{ type: 'key', data: hex(header) }] }).response;
  check('tampered clear header is dropped', dec2.frames[0].ok === false);

  const bad = call({ op: 'encrypt', codec: 'vp8', key: { raw: 'xyz' }, frames: [] });
  check('bad request: exit 2 and a message naming the field', bad.status === 2 && bad.response.ok === false && /key/.test(bad.response.error), JSON.stringify(bad.response));
  const badOp = call({ op: 'frobnicate' });
  check('unknown op: exit 2', badOp.status === 2 && /op must be/.test(badOp.response.error));
}

// --- the layout report --------------------------------------------------------------------------

{
  const { response, status } = call({ op: 'layout' });
  check('layout: report produced', status === 0 && response.ok === true);
  if (response.ok) {
    console.log(formatLayout(response));
    check('layout: every measured frame is self-consistent', response.inconsistencies.length === 0, response.inconsistencies.join('; '));
  }
}

console.log('');
if (failures.length) console.log(`Failures:\n  ${failures.join('\n  ')}`);
console.log(`${passed} passed, ${failures.length} failed`);
process.exitCode = failures.length ? 1 : 0;
