// SPDX-License-Identifier: MPL-2.0
//
// Fake but well-formed encoded frames for each codec LiveKit's E2EE handles: real codec headers
// (VP8 frame tag and keyframe start code, VP9 uncompressed header, H.264/H.265 Annex B NAL units
// with parameter sets and slice headers, Opus TOC byte) in front of seeded pseudo-random payload.
// Payload bytes are deterministic so that every run encrypts the same frames.

/** Seeded pseudo-random bytes (xorshift32), so frames are the same on every run. */
export function pseudoRandomBytes(length, seed) {
  let state = (seed >>> 0) || 0x9e3779b9;
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = state & 0xff;
  }
  return out;
}

function concat(...parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** MSB-first bit writer with Exp-Golomb codes, for H.26x and VP9 headers. */
class BitWriter {
  constructor() {
    this.bits = [];
  }

  u(value, count) {
    for (let i = count - 1; i >= 0; i--) this.bits.push((value >>> i) & 1);
    return this;
  }

  ue(value) {
    const coded = value + 1;
    const length = Math.floor(Math.log2(coded));
    this.u(0, length);
    return this.u(coded, length + 1);
  }

  se(value) {
    return this.ue(value > 0 ? 2 * value - 1 : -2 * value);
  }

  /** rbsp_trailing_bits: a stop bit, then zeros to the byte boundary. */
  trailing() {
    this.bits.push(1);
    while (this.bits.length % 8 !== 0) this.bits.push(0);
    return this;
  }

  bytes() {
    const out = new Uint8Array(Math.ceil(this.bits.length / 8));
    this.bits.forEach((bit, i) => {
      out[i >> 3] |= bit << (7 - (i & 7));
    });
    return out;
  }
}

/**
 * RBSP to NAL payload: a 0x03 after two zeros whenever the next byte is 0..3, as an H.264/H.265
 * encoder writes it (so the payload has no start code inside it).
 */
export function addEmulationPrevention(rbsp) {
  const out = [];
  let zeros = 0;
  for (const byte of rbsp) {
    if (zeros >= 2 && byte <= 3) {
      out.push(3);
      zeros = 0;
    }
    out.push(byte);
    zeros = byte === 0 ? zeros + 1 : 0;
  }
  return Uint8Array.from(out);
}

const START_CODE_4 = Uint8Array.of(0, 0, 0, 1);
const START_CODE_3 = Uint8Array.of(0, 0, 1);

function annexB(nalUnits, startCode) {
  return concat(...nalUnits.flatMap((nal) => [startCode, nal]));
}

// --- VP8 (RFC 6386 section 9.1) ------------------------------------------------------------------

/** A VP8 frame: 3-byte frame tag, and for a keyframe the start code 9d 01 2a and the size. */
export function vp8Frame({ key, width = 320, height = 240, length = 200, seed = 1 }) {
  const headerLength = key ? 10 : 3;
  const firstPartitionSize = Math.max(1, Math.floor((length - headerLength) / 3));
  // frame tag: bit 0 = !key_frame, bits 1-3 version 0, bit 4 show_frame, bits 5-23 size
  const tag = (key ? 0 : 1) | (1 << 4) | (firstPartitionSize << 5);
  const header = [tag & 0xff, (tag >> 8) & 0xff, (tag >> 16) & 0xff];
  if (key) {
    header.push(0x9d, 0x01, 0x2a, width & 0xff, (width >> 8) & 0x3f, height & 0xff, (height >> 8) & 0x3f);
  }
  return concat(Uint8Array.from(header), pseudoRandomBytes(length - headerLength, seed));
}

// --- VP9 (uncompressed header, profile 0) --------------------------------------------------------

export function vp9Frame({ key, width = 320, height = 240, length = 180, seed = 2 }) {
  const bits = new BitWriter();
  bits.u(0b10, 2).u(0, 1).u(0, 1); // frame_marker, profile 0
  bits.u(0, 1); // show_existing_frame
  bits.u(key ? 0 : 1, 1).u(1, 1).u(0, 1); // frame_type, show_frame, error_resilient_mode
  if (key) {
    bits.u(0x49, 8).u(0x83, 8).u(0x42, 8); // frame_sync_code
    bits.u(1, 3).u(0, 1); // color_space BT.601, color_range
    bits.u(width - 1, 16).u(height - 1, 16);
    bits.u(0, 1); // render_and_frame_size_different
  } else {
    bits.u(0, 2); // reset_frame_context
    bits.u(0x01, 8); // refresh_frame_flags
    for (let i = 0; i < 3; i++) bits.u(i, 3).u(0, 1); // ref_frame_idx, sign_bias
  }
  bits.u(1, 1).u(1, 1); // refresh_frame_context, frame_parallel_decoding_mode
  bits.trailing();
  const header = bits.bytes();
  return concat(header, pseudoRandomBytes(length - header.length, seed));
}

// --- H.264 (Annex B) -----------------------------------------------------------------------------

const h264Nal = (nalRefIdc, type, rbsp) =>
  concat(Uint8Array.of((nalRefIdc << 5) | type), addEmulationPrevention(rbsp));

export function h264Sps() {
  const bits = new BitWriter();
  bits.u(66, 8).u(0xc0, 8).u(30, 8); // profile_idc baseline, constraint flags, level 3.0
  bits.ue(0).ue(0).ue(2).ue(1).u(0, 1); // sps id, log2_max_frame_num-4, poc type 2, refs, gaps
  bits.ue(320 / 16 - 1).ue(240 / 16 - 1); // width and height in macroblocks
  bits.u(1, 1).u(1, 1).u(0, 1).u(0, 1); // frame_mbs_only, direct_8x8, cropping, vui
  return h264Nal(3, 7, bits.trailing().bytes());
}

export function h264Pps() {
  const bits = new BitWriter();
  bits.ue(0).ue(0).u(0, 1).u(0, 1).ue(0).ue(0).ue(0).u(0, 1).u(0, 2);
  bits.se(0).se(0).se(0).u(1, 1).u(0, 1).u(0, 1);
  return h264Nal(3, 8, bits.trailing().bytes());
}

/** A slice NAL unit (type 5 IDR or 1 non-IDR): a real slice header, then slice data. */
export function h264Slice({ idr, frameNum = 0, firstMb = 0, length = 160, seed = 3 }) {
  const bits = new BitWriter();
  bits.ue(firstMb).ue(idr ? 7 : 5).ue(0).u(frameNum & 0xf, 4); // first_mb, slice_type, pps, frame_num
  if (idr) bits.ue(0); // idr_pic_id
  const header = bits.bytes();
  // Slice data with runs of zeros, so the NAL payload carries emulation prevention bytes.
  const data = pseudoRandomBytes(length, seed);
  for (let i = 8; i + 3 < data.length; i += 29) data.set([0, 0, i % 4], i);
  return h264Nal(idr ? 3 : 2, idr ? 5 : 1, concat(header, data));
}

const h264Aud = () => Uint8Array.of(0x09, 0xf0);
const h264Sei = () => concat(Uint8Array.of(0x06, 0x05, 0x10), pseudoRandomBytes(16, 77), Uint8Array.of(0x80));

// --- H.265 (Annex B) -----------------------------------------------------------------------------

const h265Nal = (type, rbsp) => concat(Uint8Array.of(type << 1, 0x01), addEmulationPrevention(rbsp));

export function h265ParameterSet(type, seed) {
  // VPS 32, SPS 33, PPS 34: a plausible start (ids, profile space) and filler, stop bit.
  const bits = new BitWriter();
  bits.u(0, 4).u(1, 1).u(1, 1).u(0, 6).u(0, 3).u(1, 1);
  return h265Nal(type, concat(bits.bytes(), pseudoRandomBytes(12, seed), Uint8Array.of(0x80)));
}

/** A slice segment NAL unit: IDR_W_RADL (19), CRA (21) or TRAIL_R (1). */
export function h265Slice({ type, length = 160, seed = 5 }) {
  const bits = new BitWriter();
  bits.u(1, 1); // first_slice_segment_in_pic_flag
  if (type >= 16 && type <= 23) bits.u(0, 1); // no_output_of_prior_pics_flag
  bits.ue(0).ue(type === 1 ? 1 : 2); // slice_pic_parameter_set_id, slice_type
  const data = pseudoRandomBytes(length, seed);
  for (let i = 11; i + 3 < data.length; i += 31) data.set([0, 0, i % 4], i);
  return h265Nal(type, concat(bits.bytes(), data));
}

// --- Opus (RFC 6716 section 3.1) -----------------------------------------------------------------

/** An Opus packet: TOC byte (config, stereo, frame count code), then frame data. */
export function opusPacket({ config = 31, stereo = false, length = 80, seed = 6 }) {
  const toc = (config << 3) | ((stereo ? 1 : 0) << 2);
  return concat(Uint8Array.of(toc), pseudoRandomBytes(length - 1, seed));
}

/**
 * The frames the self-test and the layout report run through LiveKit, per codec: each with a
 * name saying what it exercises, its bytes and (video) its type.
 */
export function sampleFrames(codec) {
  switch (codec) {
    case 'vp8':
      return [
        { name: 'keyframe 320x240', type: 'key', data: vp8Frame({ key: true, seed: 11 }) },
        { name: 'delta frame', type: 'delta', data: vp8Frame({ key: false, seed: 12 }) },
        { name: 'short delta frame (5 bytes)', type: 'delta', data: vp8Frame({ key: false, length: 5, seed: 13 }) },
        { name: 'keyframe 1280x720', type: 'key', data: vp8Frame({ key: true, width: 1280, height: 720, length: 900, seed: 14 }) },
      ];
    case 'vp9':
      return [
        { name: 'keyframe', type: 'key', data: vp9Frame({ key: true, seed: 21 }) },
        { name: 'delta frame', type: 'delta', data: vp9Frame({ key: false, seed: 22 }) },
      ];
    case 'h264':
      return [
        {
          name: 'SPS PPS IDR, 4-byte start codes',
          type: 'key',
          data: annexB([h264Sps(), h264Pps(), h264Slice({ idr: true, seed: 31 })], START_CODE_4),
        },
        { name: 'non-IDR slice, 4-byte start code', type: 'delta', data: annexB([h264Slice({ idr: false, frameNum: 1, seed: 32 })], START_CODE_4) },
        { name: 'non-IDR slice, 3-byte start code', type: 'delta', data: annexB([h264Slice({ idr: false, frameNum: 2, seed: 33 })], START_CODE_3) },
        {
          name: 'AUD SEI SPS PPS IDR, 3-byte start codes',
          type: 'key',
          data: annexB([h264Aud(), h264Sei(), h264Sps(), h264Pps(), h264Slice({ idr: true, seed: 34 })], START_CODE_3),
        },
        {
          name: 'two IDR slices (second slice at mb 150)',
          type: 'key',
          data: annexB(
            [h264Sps(), h264Pps(), h264Slice({ idr: true, seed: 35 }), h264Slice({ idr: true, firstMb: 150, seed: 36 })],
            START_CODE_4,
          ),
        },
        { name: 'SPS PPS only, no slice', type: 'key', data: annexB([h264Sps(), h264Pps()], START_CODE_4) },
      ];
    case 'h265':
      return [
        {
          name: 'VPS SPS PPS IDR_W_RADL, 4-byte start codes',
          type: 'key',
          data: annexB(
            [h265ParameterSet(32, 41), h265ParameterSet(33, 42), h265ParameterSet(34, 43), h265Slice({ type: 19, seed: 44 })],
            START_CODE_4,
          ),
        },
        { name: 'TRAIL_R slice, 4-byte start code', type: 'delta', data: annexB([h265Slice({ type: 1, seed: 45 })], START_CODE_4) },
        {
          name: 'VPS SPS PPS CRA, 3-byte start codes',
          type: 'key',
          data: annexB(
            [h265ParameterSet(32, 46), h265ParameterSet(33, 47), h265ParameterSet(34, 48), h265Slice({ type: 21, seed: 49 })],
            START_CODE_3,
          ),
        },
      ];
    case 'opus':
      return [
        { name: 'CELT FB 20 ms packet', data: opusPacket({ config: 31, seed: 61 }) },
        { name: 'hybrid FB stereo packet', data: opusPacket({ config: 15, stereo: true, length: 120, seed: 62 }) },
        { name: 'TOC byte only (DTX-like)', data: opusPacket({ length: 1 }) },
      ];
    default:
      throw new Error(`no sample frames for codec ${codec}`);
  }
}
