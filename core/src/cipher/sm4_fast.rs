// SPDX-License-Identifier: MPL-2.0
//! SM4 (GB/T 32907-2016) on GFNI or the AES instructions, for SM4-GCM and SM4-ECB:
//! on x86_64 many times faster than the `sm4` crate.
//!
//! The `sm4` crate looks its S-box up in a table, a byte at a time, at about
//! 120 MB/s (and with memory accesses that depend on key and data). But SM4's
//! S-box, like AES's, is the inversion in GF(2^8) between two affine maps, and
//! all fields of 256 elements are isomorphic, so SM4's S-box is an affine map,
//! AES's S-box, then another affine map. With AES-NI and SSSE3 we compute it for
//! 16 bytes at once: each affine map is two 16-entry nibble lookups (PSHUFB), AES's
//! S-box is AESENCLAST with a zero round key. Blocks go in sets of 4, their words
//! transposed across 4 registers (sets of 8 in 256-bit registers with AVX2), and
//! several sets are run together because each round must wait for the one before.
//! CPUs with GFNI (Intel since Ice Lake, AMD since Zen 4) compute the whole S-box
//! in two instructions instead, an affine map, then the inversion in AES's field
//! and another affine map, on 32 bytes at once; with AVX-512VL the rotations and
//! XORs of SM4's linear map take three steps instead of six. No tables in memory,
//! no data-dependent branches. All constants are derived at compile time from the
//! definitions of the fields and S-boxes, and the tests check them against the
//! standard. Other CPUs use the `sm4` crate.

// Without x86_64 only the tests use the constants and the key schedule.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use aes::cipher::consts::U16;
use aes::cipher::{
    AlgorithmName, Block, BlockCipherDecClosure, BlockCipherDecrypt, BlockCipherEncClosure,
    BlockCipherEncrypt, BlockSizeUser, Key, KeyInit, KeySizeUser,
};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

const BLOCK_LEN: usize = 16;
const ROUNDS: usize = 32;
type RoundKeys = [u32; ROUNDS];

/// SM4 with a key schedule built once; encrypts many blocks at a time with
/// AES-NI where the CPU has it (checked once at run time), else a portable path.
#[derive(Clone)]
pub struct Sm4Fast {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    #[cfg(target_arch = "x86_64")]
    AesNi {
        kernels: x86::Kernels,
        encrypt_keys: RoundKeys,
        /// The same keys in reverse order: SM4 decrypts by running them backwards.
        decrypt_keys: RoundKeys,
    },
    /// The `sm4` crate; wipes its own keys on drop.
    Portable(sm4::Sm4),
}

impl Sm4Fast {
    pub fn new(key: &[u8; 16]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(kernels) = x86::Kernels::detect() {
            return Self::aes_ni(key, kernels);
        }
        Self::portable(key)
    }

    fn portable(key: &[u8; 16]) -> Self {
        Self {
            engine: Engine::Portable(sm4::Sm4::new(key.into())),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn aes_ni(key: &[u8; 16], kernels: x86::Kernels) -> Self {
        let encrypt_keys = x86::expand_key(kernels, key);
        let mut decrypt_keys = encrypt_keys;
        decrypt_keys.reverse();
        Self {
            engine: Engine::AesNi {
                kernels,
                encrypt_keys,
                decrypt_keys,
            },
        }
    }

    /// Encrypts whole 16-byte blocks in place (ECB). data.len() must be a multiple of 16 (panic otherwise).
    pub fn encrypt_blocks(&self, data: &mut [u8]) {
        assert_whole_blocks(data);
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi {
                kernels,
                encrypt_keys,
                ..
            } => x86::crypt_blocks(*kernels, encrypt_keys, data),
            Engine::Portable(cipher) => {
                cipher.encrypt_blocks(Block::<Self>::slice_as_chunks_mut(data).0);
            }
        }
    }

    /// Decrypts whole 16-byte blocks in place (ECB). data.len() must be a multiple of 16 (panic otherwise).
    pub fn decrypt_blocks(&self, data: &mut [u8]) {
        assert_whole_blocks(data);
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi {
                kernels,
                decrypt_keys,
                ..
            } => x86::crypt_blocks(*kernels, decrypt_keys, data),
            Engine::Portable(cipher) => {
                cipher.decrypt_blocks(Block::<Self>::slice_as_chunks_mut(data).0);
            }
        }
    }
}

fn assert_whole_blocks(data: &[u8]) {
    assert!(
        data.len().is_multiple_of(BLOCK_LEN),
        "SM4 input of {} bytes is not whole blocks",
        data.len()
    );
}

/// `key` in every engine this CPU can run, named, for the tests of modes built on
/// `Sm4Fast`.
#[cfg(test)]
pub(crate) fn test_engines(key: &[u8; 16]) -> Vec<(&'static str, Sm4Fast)> {
    tests::engines(key)
}

impl Drop for Sm4Fast {
    fn drop(&mut self) {
        match &mut self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi {
                encrypt_keys,
                decrypt_keys,
                ..
            } => {
                encrypt_keys.zeroize();
                decrypt_keys.zeroize();
            }
            Engine::Portable(_) => {}
        }
    }
}

impl ZeroizeOnDrop for Sm4Fast {}

impl fmt::Debug for Sm4Fast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4Fast { ... }")
    }
}

impl AlgorithmName for Sm4Fast {
    fn write_alg_name(f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4")
    }
}

impl KeySizeUser for Sm4Fast {
    type KeySize = U16;
}

impl BlockSizeUser for Sm4Fast {
    type BlockSize = U16;
}

impl KeyInit for Sm4Fast {
    fn new(key: &Key<Self>) -> Self {
        Sm4Fast::new(key.as_ref())
    }
}

impl BlockCipherEncrypt for Sm4Fast {
    fn encrypt_with_backend(&self, f: impl BlockCipherEncClosure<BlockSize = U16>) {
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi {
                kernels,
                encrypt_keys,
                ..
            } => f.call(&x86::Backend::new(*kernels, encrypt_keys)),
            Engine::Portable(cipher) => cipher.encrypt_with_backend(f),
        }
    }

    /// Whole slices take `Sm4Fast::encrypt_blocks`, which batches more blocks.
    fn encrypt_blocks(&self, blocks: &mut [Block<Self>]) {
        Sm4Fast::encrypt_blocks(self, Block::<Self>::slice_as_flattened_mut(blocks));
    }
}

impl BlockCipherDecrypt for Sm4Fast {
    fn decrypt_with_backend(&self, f: impl BlockCipherDecClosure<BlockSize = U16>) {
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi {
                kernels,
                decrypt_keys,
                ..
            } => f.call(&x86::Backend::new(*kernels, decrypt_keys)),
            Engine::Portable(cipher) => cipher.decrypt_with_backend(f),
        }
    }

    /// Whole slices take `Sm4Fast::decrypt_blocks`, which batches more blocks.
    fn decrypt_blocks(&self, blocks: &mut [Block<Self>]) {
        Sm4Fast::decrypt_blocks(self, Block::<Self>::slice_as_flattened_mut(blocks));
    }
}

// ---------------------------------------------------------------------------
// The key schedule (GB/T 32907-2016, 7.3).

/// The system parameter FK.
const FK: [u32; 4] = [0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc];

/// The fixed parameter CK_i: its byte j (from the most significant) is
/// (4i + j) * 7 mod 256.
const CK: [u32; ROUNDS] = {
    let mut ck = [0u32; ROUNDS];
    let mut i = 0;
    while i < ROUNDS {
        let mut j = 0;
        while j < 4 {
            ck[i] = (ck[i] << 8) | ((4 * i + j) * 7 % 256) as u32;
            j += 1;
        }
        i += 1;
    }
    ck
};

/// The round keys for `key`, with `tau` applying the S-box to each byte of a word.
fn key_schedule(key: &[u8; 16], tau: impl Fn(u32) -> u32) -> RoundKeys {
    let mut k: [u32; 4] = std::array::from_fn(|i| {
        u32::from_be_bytes(key[4 * i..4 * i + 4].try_into().unwrap()) ^ FK[i]
    });
    let mut round_keys = [0u32; ROUNDS];
    for (i, round_key) in round_keys.iter_mut().enumerate() {
        let b = tau(k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ CK[i]);
        k[i % 4] ^= b ^ b.rotate_left(13) ^ b.rotate_left(23);
        *round_key = k[i % 4];
    }
    k.zeroize();
    round_keys
}

// ---------------------------------------------------------------------------
// The S-box as AES's S-box between two affine maps, derived at compile time.
//
// A byte is a polynomial over GF(2) with bit i the coefficient of t^i. SM4's S-box
// is S(x) = A·inv(A·x + C) + C, with inv the inverse in GF(2^8) modulo SM4_FIELD
// (inv(0) = 0) and A the circulant bit matrix below (Liu, Ji, Hu et al., "Analysis
// of the SMS4 block cipher", ACISP 2007; the tests check it against the table of
// GB/T 32907). AES's is Saes(z) = Aaes·inv'(z) + 0x63 with inv' modulo AES_FIELD.
// An isomorphism T from SM4's field to AES's is GF(2)-linear and turns inv into inv',
// inv(y) = T⁻¹(inv'(T·y)) = T⁻¹(Aaes⁻¹(Saes(T·y) + 0x63)), hence
//   S(x) = SBOX_OUTPUT(Saes(SBOX_INPUT(x))), with
//   SBOX_INPUT(x)  = T·(A·x + C)                     (affine)
//   SBOX_OUTPUT(z) = A·T⁻¹·Aaes⁻¹·(z + 0x63) + C     (affine).

/// SM4's field polynomial, x^8 + x^7 + x^6 + x^5 + x^4 + x^2 + 1.
const SM4_FIELD: u16 = 0x1f5;
/// AES's field polynomial, x^8 + x^4 + x^3 + x + 1.
const AES_FIELD: u16 = 0x11b;
/// Row 0 of SM4's affine matrix A; row i is this rotated left by i.
const SM4_AFFINE_ROW: u8 = 0xa7;
const SM4_AFFINE_CONST: u8 = 0xd3;
/// Row 0 of AES's affine matrix (FIPS 197, 5.1.1); row i is this rotated left by i.
const AES_AFFINE_ROW: u8 = 0xf1;
const AES_AFFINE_CONST: u8 = 0x63;

/// a·b in GF(2^8) modulo `poly`.
const fn gf_mul(mut a: u8, mut b: u8, poly: u16) -> u8 {
    let mut product = 0;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        let overflows = a & 0x80 != 0;
        a <<= 1;
        if overflows {
            a ^= poly as u8; // x^8 is taken away by the shift
        }
        b >>= 1;
    }
    product
}

/// a^254: the inverse of a in GF(2^8) modulo `poly`, and 0 for 0.
#[cfg(test)]
const fn gf_inv(a: u8, poly: u16) -> u8 {
    let mut result = 1;
    let mut square = a;
    let mut exponent = 254;
    while exponent != 0 {
        if exponent & 1 != 0 {
            result = gf_mul(result, square, poly);
        }
        square = gf_mul(square, square, poly);
        exponent >>= 1;
    }
    result
}

/// M·x for the circulant bit matrix M whose row i is `row0` rotated left by i.
const fn circulant_mul(row0: u8, x: u8) -> u8 {
    let mut product = 0;
    let mut i = 0;
    while i < 8 {
        product |= (((row0.rotate_left(i) & x).count_ones() & 1) as u8) << i;
        i += 1;
    }
    product
}

/// SM4's S-box, straight from its algebraic form (used by the tests).
#[cfg(test)]
const fn sm4_sbox(x: u8) -> u8 {
    let y = circulant_mul(SM4_AFFINE_ROW, x) ^ SM4_AFFINE_CONST;
    circulant_mul(SM4_AFFINE_ROW, gf_inv(y, SM4_FIELD)) ^ SM4_AFFINE_CONST
}

/// The smallest root of SM4's field polynomial in AES's field. Mapping t to it
/// extends to a field isomorphism T (any of the 8 roots would do).
const ROOT_IN_AES_FIELD: u8 = {
    let mut candidate: u8 = 0;
    loop {
        // Horner's rule over the polynomial's coefficients, highest first.
        let mut value = 0;
        let mut bit = 9;
        while bit > 0 {
            bit -= 1;
            value = gf_mul(value, candidate, AES_FIELD) ^ ((SM4_FIELD >> bit) & 1) as u8;
        }
        if value == 0 {
            break candidate;
        }
        assert!(
            candidate < 255,
            "SM4's field polynomial has no root in AES's field"
        );
        candidate += 1;
    }
};

/// T: the sum of x_i t^i in SM4's field goes to the sum of x_i ROOT^i in AES's.
const fn sm4_field_to_aes(x: u8) -> u8 {
    let mut image = 0;
    let mut power = 1;
    let mut i = 0;
    while i < 8 {
        if (x >> i) & 1 != 0 {
            image ^= power;
        }
        power = gf_mul(power, ROOT_IN_AES_FIELD, AES_FIELD);
        i += 1;
    }
    image
}

/// T⁻¹ as a table.
const AES_FIELD_TO_SM4: [u8; 256] = {
    let mut inverse = [0; 256];
    let mut x = 0;
    while x < 256 {
        inverse[sm4_field_to_aes(x as u8) as usize] = x as u8;
        x += 1;
    }
    inverse
};

/// Aaes⁻¹ as a table.
const AES_AFFINE_INVERSE: [u8; 256] = {
    let mut inverse = [0; 256];
    let mut x = 0;
    while x < 256 {
        inverse[circulant_mul(AES_AFFINE_ROW, x as u8) as usize] = x as u8;
        x += 1;
    }
    inverse
};

#[derive(Clone, Copy)]
enum AffineMap {
    /// SBOX_INPUT: from SM4's S-box input to AES's.
    SboxInput,
    /// SBOX_OUTPUT: from AES's S-box output to SM4's.
    SboxOutput,
}

const fn apply_affine(map: AffineMap, x: u8) -> u8 {
    match map {
        AffineMap::SboxInput => {
            sm4_field_to_aes(circulant_mul(SM4_AFFINE_ROW, x) ^ SM4_AFFINE_CONST)
        }
        AffineMap::SboxOutput => {
            let inverse_in_sm4_field =
                AES_FIELD_TO_SM4[AES_AFFINE_INVERSE[(x ^ AES_AFFINE_CONST) as usize] as usize];
            circulant_mul(SM4_AFFINE_ROW, inverse_in_sm4_field) ^ SM4_AFFINE_CONST
        }
    }
}

/// An affine map f on bytes as two lookups: f(x) = low[x & 15] ^ high[x >> 4].
/// The constant goes in `low`, the rest is linear.
struct NibbleTables {
    low: [u8; 16],
    high: [u8; 16],
}

const fn nibble_tables(map: AffineMap) -> NibbleTables {
    let mut low = [0; 16];
    let mut high = [0; 16];
    let mut n = 0;
    while n < 16 {
        low[n] = apply_affine(map, n as u8);
        high[n] = apply_affine(map, (n as u8) << 4) ^ apply_affine(map, 0);
        n += 1;
    }
    NibbleTables { low, high }
}

const SBOX_INPUT: NibbleTables = nibble_tables(AffineMap::SboxInput);
const SBOX_OUTPUT: NibbleTables = nibble_tables(AffineMap::SboxOutput);

/// An affine map f as GF2P8AFFINEQB takes it: bit i of f(x) is the parity of
/// `matrix` byte 7 - i AND x, plus bit i of `constant`.
struct GfniAffine {
    matrix: u64,
    constant: u8,
}

/// GFNI's form of SBOX_INPUT, or with `after_inverse` of the map that takes the
/// inverse in AES's field (which GF2P8AFFINEINVQB computes before its affine map)
/// to SM4's S-box output: A·T⁻¹·w + C, as S(x) = A·T⁻¹·inv'(SBOX_INPUT(x)) + C.
const fn gfni_affine(after_inverse: bool) -> GfniAffine {
    const fn map(after_inverse: bool, x: u8) -> u8 {
        if after_inverse {
            circulant_mul(SM4_AFFINE_ROW, AES_FIELD_TO_SM4[x as usize]) ^ SM4_AFFINE_CONST
        } else {
            apply_affine(AffineMap::SboxInput, x)
        }
    }
    let constant = map(after_inverse, 0);
    let mut matrix = 0u64;
    let mut input_bit = 0;
    while input_bit < 8 {
        // Column `input_bit` of the linear part.
        let column = map(after_inverse, 1 << input_bit) ^ constant;
        let mut output_bit = 0;
        while output_bit < 8 {
            if (column >> output_bit) & 1 != 0 {
                matrix |= 1 << (8 * (7 - output_bit) + input_bit);
            }
            output_bit += 1;
        }
        input_bit += 1;
    }
    GfniAffine { matrix, constant }
}

const GFNI_INPUT: GfniAffine = gfni_affine(false);
const GFNI_OUTPUT: GfniAffine = gfni_affine(true);

// ---------------------------------------------------------------------------
// Byte shuffles. Blocks live in registers as little-endian 32-bit lanes, each
// holding one SM4 word, so that rotations act on the lanes.

/// Swaps the bytes of each 32-bit lane: SM4's big-endian words to lanes and back.
const BYTE_SWAP_LANES: [u8; 16] = {
    let mut indices = [0; 16];
    let mut i = 0;
    while i < 16 {
        indices[i] = ((i & !3) | (3 - i % 4)) as u8;
        i += 1;
    }
    indices
};

/// AESENCLAST also applies ShiftRows, which moves row r of the AES state left by r
/// columns (the state is column-major: byte i is in row i % 4, column i / 4).
/// This undoes it (the S-box works on each byte alone, so undoing it after the
/// output map is the same), then rotates each lane left by `bits`, a multiple of 8:
/// one PSHUFB for both.
/// With `undo_shift_rows` false, only the rotation (for the GFNI S-box, which
/// leaves the bytes in place).
const fn unshift_rows_rotate_lanes(bits: usize, undo_shift_rows: bool) -> [u8; 16] {
    let mut shift_rows_inverse = [0; 16];
    let mut i = 0;
    while i < 16 {
        let (row, column) = (i % 4, i / 4);
        let shift_rows_source = if undo_shift_rows {
            row + 4 * ((column + row) % 4)
        } else {
            i
        };
        shift_rows_inverse[shift_rows_source] = i as u8;
        i += 1;
    }
    let mut indices = [0; 16];
    let mut i = 0;
    while i < 16 {
        // Rotating left by 8k moves byte j of a lane to byte j + k.
        let source = (i & !3) | ((i + 4 - bits / 8) % 4);
        indices[i] = shift_rows_inverse[source];
        i += 1;
    }
    indices
}

// ---------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use aes::cipher::consts::U8;
    use aes::cipher::inout::{InOut, InOutBuf};
    use aes::cipher::typenum::Unsigned;
    use aes::cipher::{BlockCipherDecBackend, BlockCipherEncBackend, ParBlocks, ParBlocksSizeUser};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Proof that the CPU has AES-NI and SSSE3, and whether it has AVX2. Only
    /// `detect` makes one (tests may then drop AVX2), so holding one makes the
    /// kernels safe to call.
    #[derive(Clone, Copy)]
    pub(super) struct Kernels {
        avx2: bool,
        /// GFNI, with AVX2.
        gfni: bool,
        /// AVX-512VL, with GFNI: rotations and three-way XORs in one instruction.
        avx512vl: bool,
    }

    impl Kernels {
        /// What the CPU supports, `None` without AES-NI or SSSE3; CPUID is asked once.
        pub(super) fn detect() -> Option<Self> {
            static DETECTED: OnceLock<Option<Kernels>> = OnceLock::new();
            *DETECTED.get_or_init(|| {
                (is_x86_feature_detected!("aes") && is_x86_feature_detected!("ssse3")).then(|| {
                    let avx2 = is_x86_feature_detected!("avx2");
                    let gfni = avx2 && is_x86_feature_detected!("gfni");
                    Kernels {
                        avx2,
                        gfni,
                        avx512vl: gfni
                            && is_x86_feature_detected!("avx512f")
                            && is_x86_feature_detected!("avx512vl"),
                    }
                })
            })
        }

        /// The same, without the AVX2 kernel.
        #[cfg(test)]
        pub(super) fn without_avx2(self) -> Self {
            Self {
                avx2: false,
                gfni: false,
                avx512vl: false,
            }
        }

        /// The same, without the GFNI kernels.
        #[cfg(test)]
        pub(super) fn without_gfni(self) -> Self {
            Self {
                gfni: false,
                avx512vl: false,
                ..self
            }
        }

        /// The same, without the AVX-512VL kernel.
        #[cfg(test)]
        pub(super) fn without_avx512vl(self) -> Self {
            Self {
                avx512vl: false,
                ..self
            }
        }

        #[cfg(test)]
        pub(super) fn has_avx512vl(self) -> bool {
            self.avx512vl
        }

        #[cfg(test)]
        pub(super) fn has_avx2(self) -> bool {
            self.avx2
        }

        #[cfg(test)]
        pub(super) fn has_gfni(self) -> bool {
            self.gfni
        }
    }

    /// The round keys for `key`.
    pub(super) fn expand_key(_: Kernels, key: &[u8; 16]) -> RoundKeys {
        // SAFETY: a `Kernels` exists only where the CPU has AES-NI and SSSE3.
        unsafe { sse::expand_key(key) }
    }

    /// ECB over whole blocks in place, with `round_keys` in encryption or
    /// decryption order.
    pub(super) fn crypt_blocks(kernels: Kernels, round_keys: &RoundKeys, mut data: &mut [u8]) {
        if kernels.gfni {
            let (chunks, rest) = data.as_chunks_mut::<{ 4 * 128 }>();
            for chunk in chunks {
                let (sets, _) = chunk.as_chunks_mut::<128>();
                crypt_gfni::<4>(kernels, round_keys, sets.try_into().unwrap());
            }
            crypt_few(kernels, round_keys, rest);
            return;
        }
        if kernels.avx2 {
            // Four sets of 8 blocks: fewer sets leave the CPU waiting on latency.
            let (chunks, rest) = data.as_chunks_mut::<{ 4 * 128 }>();
            for chunk in chunks {
                let (sets, _) = chunk.as_chunks_mut::<128>();
                // SAFETY: `kernels.avx2` is set only where the CPU has AES-NI,
                // SSSE3 and AVX2.
                unsafe { avx2::crypt::<4>(round_keys, sets.try_into().unwrap()) };
            }
            data = rest;
            if data.len() > 16 * BLOCK_LEN {
                // SAFETY: as above.
                padded(data, |sets| unsafe { avx2::crypt::<4>(round_keys, sets) });
                return;
            }
        }
        let (chunks, rest) = data.as_chunks_mut::<{ 4 * 64 }>();
        for chunk in chunks {
            let (sets, _) = chunk.as_chunks_mut::<64>();
            // SAFETY: a `Kernels` exists only where the CPU has AES-NI and SSSE3.
            unsafe { sse::crypt::<4>(round_keys, sets.try_into().unwrap()) };
        }
        crypt_few(kernels, round_keys, rest);
    }

    /// Runs `kernel` on `data` (whole blocks, at most SETS sets of SET bytes)
    /// copied into zero-padded sets on the stack, copies the result back and
    /// wipes the copy, which held plaintext or keystream.
    fn padded<const SET: usize, const SETS: usize>(
        data: &mut [u8],
        kernel: impl FnOnce(&mut [[u8; SET]; SETS]),
    ) {
        let mut sets = [[0u8; SET]; SETS];
        sets.as_flattened_mut()[..data.len()].copy_from_slice(data);
        kernel(&mut sets);
        data.copy_from_slice(&sets.as_flattened()[..data.len()]);
        sets.zeroize();
    }

    /// The GFNI kernel for these sets, with AVX-512VL where the CPU has it.
    ///
    /// # Panics
    /// Without GFNI (`kernels.gfni`).
    fn crypt_gfni<const SETS: usize>(
        kernels: Kernels,
        round_keys: &RoundKeys,
        sets: &mut [[u8; 128]; SETS],
    ) {
        assert!(kernels.gfni, "GFNI kernel without GFNI");
        // SAFETY: `kernels.gfni` is set only where the CPU has GFNI and AVX2, and
        // `kernels.avx512vl` only where it also has AVX-512F and VL.
        unsafe {
            if kernels.avx512vl {
                avx2::crypt_gfni_avx512vl::<SETS>(round_keys, sets)
            } else {
                avx2::crypt_gfni::<SETS>(round_keys, sets)
            }
        }
    }

    /// Up to 16 blocks (32 with GFNI), padded to 1, 2 or 4 sets: one set takes
    /// about as long as two, since the CPU waits on latency, and four not much
    /// longer.
    fn crypt_few(kernels: Kernels, round_keys: &RoundKeys, data: &mut [u8]) {
        fn padded_sse<const SETS: usize>(_: Kernels, round_keys: &RoundKeys, data: &mut [u8]) {
            // SAFETY: a `Kernels` exists only where the CPU has AES-NI and SSSE3.
            padded(data, |sets| unsafe { sse::crypt::<SETS>(round_keys, sets) });
        }
        fn padded_gfni<const SETS: usize>(
            kernels: Kernels,
            round_keys: &RoundKeys,
            data: &mut [u8],
        ) {
            padded(data, |sets| crypt_gfni::<SETS>(kernels, round_keys, sets));
        }
        if kernels.gfni {
            // Whole sets run where they lie, without the copies of padding.
            let (sets, partial) = data.as_chunks_mut::<128>();
            if partial.is_empty() {
                match sets.len() {
                    0 => return,
                    1 => return crypt_gfni::<1>(kernels, round_keys, sets.try_into().unwrap()),
                    2 => return crypt_gfni::<2>(kernels, round_keys, sets.try_into().unwrap()),
                    4 => return crypt_gfni::<4>(kernels, round_keys, sets.try_into().unwrap()),
                    _ => {}
                }
            }
            match data.len().div_ceil(128) {
                0 => {}
                1 => padded_gfni::<1>(kernels, round_keys, data),
                2 => padded_gfni::<2>(kernels, round_keys, data),
                3 | 4 => padded_gfni::<4>(kernels, round_keys, data),
                _ => unreachable!("{} bytes are more than 32 blocks", data.len()),
            }
            return;
        }
        match data.len().div_ceil(64) {
            0 => {}
            1 => padded_sse::<1>(kernels, round_keys, data),
            2 => padded_sse::<2>(kernels, round_keys, data),
            3 | 4 => padded_sse::<4>(kernels, round_keys, data),
            _ => unreachable!("{} bytes are more than 16 blocks", data.len()),
        }
    }

    /// The cipher traits' backend, for the round keys in encryption or decryption
    /// order. GCM's CTR mode hands it 8 blocks at a time and the blocks left over
    /// one by one, each taking about as long as 8. With 4 at a time, 64-byte
    /// messages were twice as fast and messages of 1 KB and more half as fast.
    pub(super) struct Backend<'a> {
        kernels: Kernels,
        round_keys: &'a RoundKeys,
    }

    type ParBlocksSize = U8;

    impl<'a> Backend<'a> {
        pub(super) fn new(kernels: Kernels, round_keys: &'a RoundKeys) -> Self {
            Self {
                kernels,
                round_keys,
            }
        }

        /// Up to `ParBlocksSize` blocks from the input to the output.
        fn crypt(&self, mut blocks: InOutBuf<'_, '_, Block<Self>>) {
            let mut buffer = [0u8; ParBlocksSize::USIZE * BLOCK_LEN];
            let data = &mut buffer[..blocks.len() * BLOCK_LEN];
            data.copy_from_slice(Block::<Self>::slice_as_flattened(blocks.get_in()));
            crypt_few(self.kernels, self.round_keys, data);
            Block::<Self>::slice_as_flattened_mut(blocks.get_out()).copy_from_slice(data);
            buffer.zeroize();
        }

        fn crypt_one(&self, mut block: InOut<'_, '_, Block<Self>>) {
            let input = block.clone_in();
            self.crypt(InOutBuf::from_ref_mut(&input, block.get_out()));
        }
    }

    impl BlockSizeUser for Backend<'_> {
        type BlockSize = U16;
    }

    impl ParBlocksSizeUser for Backend<'_> {
        type ParBlocksSize = ParBlocksSize;
    }

    impl BlockCipherEncBackend for Backend<'_> {
        fn encrypt_block(&self, block: InOut<'_, '_, Block<Self>>) {
            self.crypt_one(block);
        }

        fn encrypt_par_blocks(&self, blocks: InOut<'_, '_, ParBlocks<Self>>) {
            self.crypt(blocks.into_buf());
        }

        fn encrypt_tail_blocks(&self, blocks: InOutBuf<'_, '_, Block<Self>>) {
            self.crypt(blocks);
        }
    }

    impl BlockCipherDecBackend for Backend<'_> {
        fn decrypt_block(&self, block: InOut<'_, '_, Block<Self>>) {
            self.crypt_one(block);
        }

        fn decrypt_par_blocks(&self, blocks: InOut<'_, '_, ParBlocks<Self>>) {
            self.crypt(blocks.into_buf());
        }

        fn decrypt_tail_blocks(&self, blocks: InOutBuf<'_, '_, Block<Self>>) {
            self.crypt(blocks);
        }
    }

    /// Undo ShiftRows and rotate the lanes left by 0, 8, 16 and 24 bits.
    const UNSHIFT_ROTATE: [[u8; 16]; 4] = [
        unshift_rows_rotate_lanes(0, true),
        unshift_rows_rotate_lanes(8, true),
        unshift_rows_rotate_lanes(16, true),
        unshift_rows_rotate_lanes(24, true),
    ];

    /// Rotate the lanes left by 0, 8, 16 and 24 bits.
    const ROTATE: [[u8; 16]; 4] = [
        unshift_rows_rotate_lanes(0, false),
        unshift_rows_rotate_lanes(8, false),
        unshift_rows_rotate_lanes(16, false),
        unshift_rows_rotate_lanes(24, false),
    ];

    #[inline]
    #[target_feature(enable = "sse2")]
    fn vector(bytes: [u8; 16]) -> __m128i {
        let value = u128::from_le_bytes(bytes);
        _mm_set_epi64x((value >> 64) as i64, value as i64)
    }

    /// 4 blocks per set in 128-bit registers.
    pub(super) mod sse {
        use super::*;

        /// The round function's constant vectors.
        struct Constants {
            low_nibbles: __m128i,
            input_low: __m128i,
            input_high: __m128i,
            output_low: __m128i,
            output_high: __m128i,
            unshift_rotate: [__m128i; 4],
            byte_swap: __m128i,
        }

        impl Constants {
            #[inline]
            #[target_feature(enable = "sse2")]
            fn new() -> Self {
                Self {
                    low_nibbles: _mm_set1_epi8(0x0f),
                    input_low: vector(SBOX_INPUT.low),
                    input_high: vector(SBOX_INPUT.high),
                    output_low: vector(SBOX_OUTPUT.low),
                    output_high: vector(SBOX_OUTPUT.high),
                    unshift_rotate: UNSHIFT_ROTATE.map(|p| vector(p)),
                    byte_swap: vector(BYTE_SWAP_LANES),
                }
            }
        }

        /// An affine map on each byte, by two nibble lookups.
        #[inline]
        #[target_feature(enable = "ssse3")]
        fn affine(x: __m128i, low: __m128i, high: __m128i, c: &Constants) -> __m128i {
            let low_nibbles = _mm_and_si128(x, c.low_nibbles);
            let high_nibbles = _mm_and_si128(_mm_srli_epi16::<4>(x), c.low_nibbles);
            _mm_xor_si128(
                _mm_shuffle_epi8(low, low_nibbles),
                _mm_shuffle_epi8(high, high_nibbles),
            )
        }

        /// SM4's S-box on every byte, ShiftRows still applied.
        #[inline]
        #[target_feature(enable = "aes,ssse3")]
        fn sbox_shifted(x: __m128i, c: &Constants) -> __m128i {
            let aes_input = affine(x, c.input_low, c.input_high, c);
            // With a zero key: ShiftRows(SubBytes(aes_input)).
            let shifted = _mm_aesenclast_si128(aes_input, _mm_setzero_si128());
            affine(shifted, c.output_low, c.output_high, c)
        }

        /// One round on each lane: `x0 ^ L(τ(mixed))`, SM4's T being L∘τ. The
        /// XORs are ordered so that the values that arrive last go in last.
        #[inline]
        #[target_feature(enable = "aes,ssse3")]
        fn round(x0: __m128i, mixed: __m128i, c: &Constants) -> __m128i {
            let output = sbox_shifted(mixed, c);
            // L(s) = s ^ rotl(s, 2) ^ rotl(s, 10) ^ rotl(s, 18) ^ rotl(s, 24)
            //      = s ^ rotl(s, 24) ^ rotl(s ^ rotl(s, 8) ^ rotl(s, 16), 2).
            let s = _mm_shuffle_epi8(output, c.unshift_rotate[0]);
            let s8 = _mm_shuffle_epi8(output, c.unshift_rotate[1]);
            let s16 = _mm_shuffle_epi8(output, c.unshift_rotate[2]);
            let s24 = _mm_shuffle_epi8(output, c.unshift_rotate[3]);
            let sum = _mm_xor_si128(_mm_xor_si128(s, s8), s16);
            let sum_rotl2 = _mm_or_si128(_mm_slli_epi32::<2>(sum), _mm_srli_epi32::<30>(sum));
            _mm_xor_si128(_mm_xor_si128(_mm_xor_si128(x0, s), s24), sum_rotl2)
        }

        /// Transposes a 4×4 matrix of 32-bit lanes (its own inverse).
        #[inline]
        #[target_feature(enable = "sse2")]
        fn transpose([a, b, c, d]: [__m128i; 4]) -> [__m128i; 4] {
            let ab_low = _mm_unpacklo_epi32(a, b);
            let cd_low = _mm_unpacklo_epi32(c, d);
            let ab_high = _mm_unpackhi_epi32(a, b);
            let cd_high = _mm_unpackhi_epi32(c, d);
            [
                _mm_unpacklo_epi64(ab_low, cd_low),
                _mm_unpackhi_epi64(ab_low, cd_low),
                _mm_unpacklo_epi64(ab_high, cd_high),
                _mm_unpackhi_epi64(ab_high, cd_high),
            ]
        }

        /// Encrypts (or, with reversed keys, decrypts) `SETS` sets of 4 blocks in
        /// place. The sets are independent, so their instructions overlap.
        #[target_feature(enable = "aes,ssse3")]
        pub(in super::super) fn crypt<const SETS: usize>(
            round_keys: &RoundKeys,
            blocks: &mut [[u8; 64]; SETS],
        ) {
            let c = Constants::new();
            // state[set][i] holds word i of the set's blocks.
            let mut state: [[__m128i; 4]; SETS] = std::array::from_fn(|set| {
                transpose(std::array::from_fn(|i| {
                    // SAFETY: bytes 16·i..16·i + 16 of a [u8; 64].
                    let block = unsafe { _mm_loadu_si128(blocks[set][16 * i..].as_ptr().cast()) };
                    _mm_shuffle_epi8(block, c.byte_swap)
                }))
            });
            for four_keys in round_keys.as_chunks::<4>().0 {
                for (i, &round_key) in four_keys.iter().enumerate() {
                    let round_key = _mm_set1_epi32(round_key as i32);
                    for x in &mut state {
                        // The word computed last round goes in last.
                        let older = _mm_xor_si128(x[(i + 1) % 4], x[(i + 2) % 4]);
                        let mixed = _mm_xor_si128(_mm_xor_si128(older, round_key), x[(i + 3) % 4]);
                        x[i] = round(x[i], mixed, &c);
                    }
                }
            }
            for (set, x) in state.iter().enumerate() {
                // The output is the last four words in reverse order.
                for (i, row) in transpose([x[3], x[2], x[1], x[0]]).into_iter().enumerate() {
                    let block = _mm_shuffle_epi8(row, c.byte_swap);
                    // SAFETY: bytes 16·i..16·i + 16 of a [u8; 64].
                    unsafe { _mm_storeu_si128(blocks[set][16 * i..].as_mut_ptr().cast(), block) };
                }
            }
        }

        /// SM4's τ on one word.
        #[target_feature(enable = "aes,ssse3")]
        fn tau(word: u32, c: &Constants) -> u32 {
            let shifted = sbox_shifted(_mm_cvtsi32_si128(word as i32), c);
            _mm_cvtsi128_si32(_mm_shuffle_epi8(shifted, c.unshift_rotate[0])) as u32
        }

        /// The round keys, computed with the constant-time S-box.
        #[target_feature(enable = "aes,ssse3")]
        pub(in super::super) fn expand_key(key: &[u8; 16]) -> RoundKeys {
            let c = Constants::new();
            key_schedule(key, |word| tau(word, &c))
        }

        /// SM4's S-box of every byte.
        #[cfg(test)]
        #[target_feature(enable = "aes,ssse3")]
        pub(in super::super) fn sbox_bytes(bytes: [u8; 16]) -> [u8; 16] {
            let c = Constants::new();
            let shifted = sbox_shifted(vector(bytes), &c);
            let mut out = [0u8; 16];
            // SAFETY: 16 bytes into a [u8; 16].
            unsafe {
                _mm_storeu_si128(
                    out.as_mut_ptr().cast(),
                    _mm_shuffle_epi8(shifted, c.unshift_rotate[0]),
                )
            };
            out
        }
    }

    /// 8 blocks per set in 256-bit registers: the same steps as `sse`, but
    /// AESENCLAST works on 128-bit halves. (VAES would do both at once, but fewer
    /// CPUs have it and on the one measured it was slower.)
    pub(super) mod avx2 {
        use super::*;

        struct Constants {
            low_nibbles: __m256i,
            input_low: __m256i,
            input_high: __m256i,
            output_low: __m256i,
            output_high: __m256i,
            /// UNSHIFT_ROTATE after AESENCLAST, ROTATE after GFNI.
            unshift_rotate: [__m256i; 4],
            byte_swap: __m256i,
            gfni_input: __m256i,
            gfni_output: __m256i,
        }

        /// `bytes` in both halves.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn vector256(bytes: [u8; 16]) -> __m256i {
            _mm256_broadcastsi128_si256(vector(bytes))
        }

        impl Constants {
            #[inline]
            #[target_feature(enable = "avx2")]
            fn new(gfni: bool) -> Self {
                Self {
                    low_nibbles: _mm256_set1_epi8(0x0f),
                    input_low: vector256(SBOX_INPUT.low),
                    input_high: vector256(SBOX_INPUT.high),
                    output_low: vector256(SBOX_OUTPUT.low),
                    output_high: vector256(SBOX_OUTPUT.high),
                    unshift_rotate: if gfni { ROTATE } else { UNSHIFT_ROTATE }
                        .map(|p| vector256(p)),
                    byte_swap: vector256(BYTE_SWAP_LANES),
                    gfni_input: _mm256_set1_epi64x(GFNI_INPUT.matrix as i64),
                    gfni_output: _mm256_set1_epi64x(GFNI_OUTPUT.matrix as i64),
                }
            }
        }

        const GFNI_INPUT_CONSTANT: i32 = GFNI_INPUT.constant as i32;
        const GFNI_OUTPUT_CONSTANT: i32 = GFNI_OUTPUT.constant as i32;

        #[inline]
        #[target_feature(enable = "avx2")]
        fn affine(x: __m256i, low: __m256i, high: __m256i, c: &Constants) -> __m256i {
            let low_nibbles = _mm256_and_si256(x, c.low_nibbles);
            let high_nibbles = _mm256_and_si256(_mm256_srli_epi16::<4>(x), c.low_nibbles);
            _mm256_xor_si256(
                _mm256_shuffle_epi8(low, low_nibbles),
                _mm256_shuffle_epi8(high, high_nibbles),
            )
        }

        /// SM4's S-box on every byte, ShiftRows still applied.
        #[inline]
        #[target_feature(enable = "aes,avx2")]
        fn sbox_shifted(x: __m256i, c: &Constants) -> __m256i {
            let aes_input = affine(x, c.input_low, c.input_high, c);
            let zero = _mm_setzero_si128();
            let low = _mm_aesenclast_si128(_mm256_castsi256_si128(aes_input), zero);
            let high = _mm_aesenclast_si128(_mm256_extracti128_si256::<1>(aes_input), zero);
            affine(_mm256_set_m128i(high, low), c.output_low, c.output_high, c)
        }

        /// SM4's S-box on every byte, in place.
        #[inline]
        #[target_feature(enable = "gfni,avx2")]
        fn sbox_gfni(x: __m256i, c: &Constants) -> __m256i {
            let aes_input = _mm256_gf2p8affine_epi64_epi8::<GFNI_INPUT_CONSTANT>(x, c.gfni_input);
            _mm256_gf2p8affineinv_epi64_epi8::<GFNI_OUTPUT_CONSTANT>(aes_input, c.gfni_output)
        }

        /// As `sse::round`, with the S-box on AES-NI or (`GFNI`) on GFNI, and (`VL`)
        /// L on AVX-512VL.
        ///
        /// # Safety
        /// The CPU has AVX2, and AES-NI or GFNI, and AVX-512F/VL for `VL`.
        #[inline(always)]
        unsafe fn round<const GFNI: bool, const VL: bool>(
            x0: __m256i,
            mixed: __m256i,
            c: &Constants,
        ) -> __m256i {
            // SAFETY: the caller vouches for the features.
            unsafe {
                let output = if GFNI {
                    sbox_gfni(mixed, c)
                } else {
                    sbox_shifted(mixed, c)
                };
                if VL {
                    round_after_sbox_avx512vl(x0, output)
                } else {
                    round_after_sbox(x0, output, c)
                }
            }
        }

        /// `round_after_sbox` for an S-box output in place: four rotations and
        /// two three-way XORs, so L takes three steps instead of six.
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl")]
        fn round_after_sbox_avx512vl(x0: __m256i, s: __m256i) -> __m256i {
            // L(s) = s ^ rotl(s, 2) ^ rotl(s, 10) ^ rotl(s, 18) ^ rotl(s, 24).
            const XOR3: i32 = 0x96;
            let near = _mm256_ternarylogic_epi32::<XOR3>(x0, s, _mm256_rol_epi32::<2>(s));
            let far = _mm256_ternarylogic_epi32::<XOR3>(
                _mm256_rol_epi32::<10>(s),
                _mm256_rol_epi32::<18>(s),
                _mm256_rol_epi32::<24>(s),
            );
            _mm256_xor_si256(near, far)
        }

        /// The rest of the round: the linear map L and the XOR into `x0`.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn round_after_sbox(x0: __m256i, output: __m256i, c: &Constants) -> __m256i {
            let s = _mm256_shuffle_epi8(output, c.unshift_rotate[0]);
            let s8 = _mm256_shuffle_epi8(output, c.unshift_rotate[1]);
            let s16 = _mm256_shuffle_epi8(output, c.unshift_rotate[2]);
            let s24 = _mm256_shuffle_epi8(output, c.unshift_rotate[3]);
            let sum = _mm256_xor_si256(_mm256_xor_si256(s, s8), s16);
            let sum_rotl2 =
                _mm256_or_si256(_mm256_slli_epi32::<2>(sum), _mm256_srli_epi32::<30>(sum));
            _mm256_xor_si256(_mm256_xor_si256(_mm256_xor_si256(x0, s), s24), sum_rotl2)
        }

        /// Transposes the 4×4 matrices of 32-bit lanes in each half.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn transpose([a, b, c, d]: [__m256i; 4]) -> [__m256i; 4] {
            let ab_low = _mm256_unpacklo_epi32(a, b);
            let cd_low = _mm256_unpacklo_epi32(c, d);
            let ab_high = _mm256_unpackhi_epi32(a, b);
            let cd_high = _mm256_unpackhi_epi32(c, d);
            [
                _mm256_unpacklo_epi64(ab_low, cd_low),
                _mm256_unpackhi_epi64(ab_low, cd_low),
                _mm256_unpacklo_epi64(ab_high, cd_high),
                _mm256_unpackhi_epi64(ab_high, cd_high),
            ]
        }

        /// Encrypts (or, with reversed keys, decrypts) `SETS` sets of 8 blocks in
        /// place. Blocks i and i + 4 of a set share register i before the transpose.
        #[target_feature(enable = "aes,avx2")]
        pub(in super::super) fn crypt<const SETS: usize>(
            round_keys: &RoundKeys,
            blocks: &mut [[u8; 128]; SETS],
        ) {
            // SAFETY: AES-NI and AVX2, enabled here.
            unsafe { crypt_with::<SETS, false, false>(round_keys, blocks) }
        }

        /// `crypt` with the S-box on GFNI.
        #[target_feature(enable = "gfni,avx2")]
        pub(in super::super) fn crypt_gfni<const SETS: usize>(
            round_keys: &RoundKeys,
            blocks: &mut [[u8; 128]; SETS],
        ) {
            // SAFETY: GFNI and AVX2, enabled here.
            unsafe { crypt_with::<SETS, true, false>(round_keys, blocks) }
        }

        /// `crypt_gfni` with L on AVX-512VL.
        #[target_feature(enable = "gfni,avx2,avx512f,avx512vl")]
        pub(in super::super) fn crypt_gfni_avx512vl<const SETS: usize>(
            round_keys: &RoundKeys,
            blocks: &mut [[u8; 128]; SETS],
        ) {
            // SAFETY: GFNI, AVX2 and AVX-512F/VL, enabled here.
            unsafe { crypt_with::<SETS, true, true>(round_keys, blocks) }
        }

        /// # Safety
        /// As `round`.
        #[inline(always)]
        unsafe fn crypt_with<const SETS: usize, const GFNI: bool, const VL: bool>(
            round_keys: &RoundKeys,
            blocks: &mut [[u8; 128]; SETS],
        ) {
            // SAFETY: the caller vouches for AVX2 and the S-box's features; the loads
            // and stores are of bytes 16·i..16·i + 16 and 16·(i + 4)..16·(i + 4) + 16
            // of a [u8; 128].
            unsafe {
                let c = Constants::new(GFNI);
                let mut state: [[__m256i; 4]; SETS] = std::array::from_fn(|set| {
                    transpose(std::array::from_fn(|i| {
                        let set = &blocks[set];
                        let pair = _mm256_loadu2_m128i(
                            set[16 * (i + 4)..].as_ptr().cast(),
                            set[16 * i..].as_ptr().cast(),
                        );
                        _mm256_shuffle_epi8(pair, c.byte_swap)
                    }))
                });
                for four_keys in round_keys.as_chunks::<4>().0 {
                    for (i, &round_key) in four_keys.iter().enumerate() {
                        let round_key = _mm256_set1_epi32(round_key as i32);
                        for x in &mut state {
                            let older = _mm256_xor_si256(x[(i + 1) % 4], x[(i + 2) % 4]);
                            let mixed = _mm256_xor_si256(
                                _mm256_xor_si256(older, round_key),
                                x[(i + 3) % 4],
                            );
                            x[i] = round::<GFNI, VL>(x[i], mixed, &c);
                        }
                    }
                }
                for (set, x) in state.iter().enumerate() {
                    for (i, row) in transpose([x[3], x[2], x[1], x[0]]).into_iter().enumerate() {
                        let pair = _mm256_shuffle_epi8(row, c.byte_swap);
                        let set = &mut blocks[set];
                        _mm256_storeu2_m128i(
                            set[16 * (i + 4)..].as_mut_ptr().cast(),
                            set[16 * i..].as_mut_ptr().cast(),
                            pair,
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{XorShift, hex, measure_mbps};
    use aes::cipher::consts::U12;
    use aes_gcm::AesGcm;
    use aes_gcm::aead::AeadInOut;

    /// GB/T 32907-2016, table 1: the S-box, the reference for the derived one.
    #[rustfmt::skip]
    const STANDARD_SBOX: [u8; 256] = [
        0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05,
        0x2b, 0x67, 0x9a, 0x76, 0x2a, 0xbe, 0x04, 0xc3, 0xaa, 0x44, 0x13, 0x26, 0x49, 0x86, 0x06, 0x99,
        0x9c, 0x42, 0x50, 0xf4, 0x91, 0xef, 0x98, 0x7a, 0x33, 0x54, 0x0b, 0x43, 0xed, 0xcf, 0xac, 0x62,
        0xe4, 0xb3, 0x1c, 0xa9, 0xc9, 0x08, 0xe8, 0x95, 0x80, 0xdf, 0x94, 0xfa, 0x75, 0x8f, 0x3f, 0xa6,
        0x47, 0x07, 0xa7, 0xfc, 0xf3, 0x73, 0x17, 0xba, 0x83, 0x59, 0x3c, 0x19, 0xe6, 0x85, 0x4f, 0xa8,
        0x68, 0x6b, 0x81, 0xb2, 0x71, 0x64, 0xda, 0x8b, 0xf8, 0xeb, 0x0f, 0x4b, 0x70, 0x56, 0x9d, 0x35,
        0x1e, 0x24, 0x0e, 0x5e, 0x63, 0x58, 0xd1, 0xa2, 0x25, 0x22, 0x7c, 0x3b, 0x01, 0x21, 0x78, 0x87,
        0xd4, 0x00, 0x46, 0x57, 0x9f, 0xd3, 0x27, 0x52, 0x4c, 0x36, 0x02, 0xe7, 0xa0, 0xc4, 0xc8, 0x9e,
        0xea, 0xbf, 0x8a, 0xd2, 0x40, 0xc7, 0x38, 0xb5, 0xa3, 0xf7, 0xf2, 0xce, 0xf9, 0x61, 0x15, 0xa1,
        0xe0, 0xae, 0x5d, 0xa4, 0x9b, 0x34, 0x1a, 0x55, 0xad, 0x93, 0x32, 0x30, 0xf5, 0x8c, 0xb1, 0xe3,
        0x1d, 0xf6, 0xe2, 0x2e, 0x82, 0x66, 0xca, 0x60, 0xc0, 0x29, 0x23, 0xab, 0x0d, 0x53, 0x4e, 0x6f,
        0xd5, 0xdb, 0x37, 0x45, 0xde, 0xfd, 0x8e, 0x2f, 0x03, 0xff, 0x6a, 0x72, 0x6d, 0x6c, 0x5b, 0x51,
        0x8d, 0x1b, 0xaf, 0x92, 0xbb, 0xdd, 0xbc, 0x7f, 0x11, 0xd9, 0x5c, 0x41, 0x1f, 0x10, 0x5a, 0xd8,
        0x0a, 0xc1, 0x31, 0x88, 0xa5, 0xcd, 0x7b, 0xbd, 0x2d, 0x74, 0xd0, 0x12, 0xb8, 0xe5, 0xb4, 0xb0,
        0x89, 0x69, 0x97, 0x4a, 0x0c, 0x96, 0x77, 0x7e, 0x65, 0xb9, 0xf1, 0x09, 0xc5, 0x6e, 0xc6, 0x84,
        0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48,
    ];

    /// `key` in every engine this CPU can run, named: the portable one always, the
    /// AES-NI ones where the CPU has the features.
    pub(super) fn engines(key: &[u8; 16]) -> Vec<(&'static str, Sm4Fast)> {
        #[allow(unused_mut)]
        let mut engines = vec![("portable", Sm4Fast::portable(key))];
        #[cfg(target_arch = "x86_64")]
        match x86::Kernels::detect() {
            Some(kernels) => {
                engines.push(("AES-NI", Sm4Fast::aes_ni(key, kernels.without_avx2())));
                if kernels.has_avx2() {
                    engines.push(("AES-NI+AVX2", Sm4Fast::aes_ni(key, kernels.without_gfni())));
                } else {
                    println!("note: no AVX2 on this CPU, not testing that kernel");
                }
                if kernels.has_gfni() {
                    engines.push((
                        "GFNI+AVX2",
                        Sm4Fast::aes_ni(key, kernels.without_avx512vl()),
                    ));
                } else {
                    println!("note: no GFNI on this CPU, not testing that kernel");
                }
                if kernels.has_avx512vl() {
                    engines.push(("GFNI+AVX-512VL", Sm4Fast::aes_ni(key, kernels)));
                } else {
                    println!("note: no AVX-512VL on this CPU, not testing that kernel");
                }
            }
            None => println!("note: no AES-NI/SSSE3 on this CPU, testing the portable engine only"),
        }
        engines
    }

    #[test]
    fn algebraic_sbox_is_the_standard_one() {
        for x in 0..=255u8 {
            assert_eq!(sm4_sbox(x), STANDARD_SBOX[x as usize], "S({x:#04x})");
        }
    }

    #[test]
    fn affine_maps_around_the_aes_sbox_give_the_sm4_sbox() {
        // FIPS 197, 5.1.1.
        let aes_sbox =
            |z: u8| circulant_mul(AES_AFFINE_ROW, gf_inv(z, AES_FIELD)) ^ AES_AFFINE_CONST;
        let by_nibbles = |tables: &NibbleTables, x: u8| {
            tables.low[(x & 15) as usize] ^ tables.high[(x >> 4) as usize]
        };
        for x in 0..=255u8 {
            let aes_output = aes_sbox(by_nibbles(&SBOX_INPUT, x));
            assert_eq!(
                by_nibbles(&SBOX_OUTPUT, aes_output),
                STANDARD_SBOX[x as usize],
                "S({x:#04x})"
            );
        }
    }

    #[test]
    fn gfni_maps_around_the_field_inverse_give_the_sm4_sbox() {
        // GF2P8AFFINEQB as the Intel SDM defines it, bit by bit.
        let affine = |map: &GfniAffine, x: u8| {
            (0..8).fold(map.constant, |out, bit| {
                let row = (map.matrix >> (8 * (7 - bit))) as u8;
                out ^ ((((row & x).count_ones() & 1) as u8) << bit)
            })
        };
        for x in 0..=255u8 {
            let inverse = gf_inv(affine(&GFNI_INPUT, x), AES_FIELD);
            assert_eq!(
                affine(&GFNI_OUTPUT, inverse),
                STANDARD_SBOX[x as usize],
                "S({x:#04x})"
            );
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn aes_ni_sbox_is_the_standard_one() {
        if x86::Kernels::detect().is_none() {
            println!("note: no AES-NI/SSSE3 on this CPU, skipping");
            return;
        }
        for (chunk, expected) in STANDARD_SBOX.chunks_exact(16).enumerate() {
            let input = std::array::from_fn(|i| (16 * chunk + i) as u8);
            // SAFETY: the CPU has AES-NI and SSSE3, checked above.
            let output = unsafe { x86::sse::sbox_bytes(input) };
            assert_eq!(&output[..], expected, "S-box of {input:02x?}");
        }
    }

    const EXAMPLE: &str = "0123456789abcdeffedcba9876543210";

    #[test]
    fn standard_example_1() {
        // GB/T 32907-2016, appendix A, example 1: key and plaintext are EXAMPLE.
        let key: [u8; 16] = hex(EXAMPLE).try_into().unwrap();
        for (name, cipher) in engines(&key) {
            let mut block = key;
            cipher.encrypt_blocks(&mut block);
            assert_eq!(
                block.to_vec(),
                hex("681edf34d206965e86b3e94f536e4246"),
                "{name}"
            );
            cipher.decrypt_blocks(&mut block);
            assert_eq!(block, key, "{name}");
        }
    }

    /// Example 2: the plaintext encrypted 1,000,000 times.
    fn standard_example_2(cipher: &Sm4Fast) {
        let mut block: [u8; 16] = hex(EXAMPLE).try_into().unwrap();
        for _ in 0..1_000_000 {
            cipher.encrypt_blocks(&mut block);
        }
        assert_eq!(block.to_vec(), hex("595298c7c6fd271f0402f804c33d3f66"));
    }

    // Example 2 takes seconds in debug builds, so it runs on the portable engine and
    // the one `new` picks in parallel. Both AES-NI engines run single blocks alike.
    #[test]
    fn standard_example_2_portable() {
        standard_example_2(&Sm4Fast::portable(&hex(EXAMPLE).try_into().unwrap()));
    }

    #[test]
    fn standard_example_2_default_engine() {
        let cipher = Sm4Fast::new(&hex(EXAMPLE).try_into().unwrap());
        if matches!(cipher.engine, Engine::Portable(_)) {
            println!("note: no AES-NI/SSSE3 on this CPU, the portable engine is tested above");
            return;
        }
        standard_example_2(&cipher);
    }

    /// `plaintext` encrypted by the `sm4` crate block by block.
    fn reference_encryption(key: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
        let reference = sm4::Sm4::new(key.into());
        let mut ciphertext = plaintext.to_vec();
        for block in Block::<sm4::Sm4>::slice_as_chunks_mut(&mut ciphertext).0 {
            BlockCipherEncrypt::encrypt_block(&reference, block);
        }
        let mut decrypted = ciphertext.clone();
        for block in Block::<sm4::Sm4>::slice_as_chunks_mut(&mut decrypted).0 {
            BlockCipherDecrypt::decrypt_block(&reference, block);
        }
        assert_eq!(decrypted, plaintext);
        ciphertext
    }

    fn as_blocks(data: &mut [u8]) -> &mut [Block<Sm4Fast>] {
        Block::<Sm4Fast>::slice_as_chunks_mut(data).0
    }

    /// Every way in to `cipher` turns `plaintext` into `ciphertext` and back.
    fn check_every_path(name: &str, cipher: &Sm4Fast, plaintext: &[u8], ciphertext: &[u8]) {
        let blocks = plaintext.len() / BLOCK_LEN;

        let mut data = plaintext.to_vec();
        cipher.encrypt_blocks(&mut data);
        assert_eq!(data, ciphertext, "{name}: encrypt {blocks} blocks");
        cipher.decrypt_blocks(&mut data);
        assert_eq!(data, plaintext, "{name}: decrypt {blocks} blocks");

        // The traits' whole-slice methods, which take the same path.
        BlockCipherEncrypt::encrypt_blocks(cipher, as_blocks(&mut data));
        assert_eq!(data, ciphertext, "{name}: trait encrypts {blocks} blocks");
        BlockCipherDecrypt::decrypt_blocks(cipher, as_blocks(&mut data));
        assert_eq!(data, plaintext, "{name}: trait decrypts {blocks} blocks");

        // The backend, as modes use it: 8 blocks at a time, then the rest together.
        let mut input = plaintext.to_vec();
        cipher
            .encrypt_blocks_b2b(as_blocks(&mut input), as_blocks(&mut data))
            .unwrap();
        assert_eq!(data, ciphertext, "{name}: backend encrypts {blocks} blocks");
        let mut input = ciphertext.to_vec();
        cipher
            .decrypt_blocks_b2b(as_blocks(&mut input), as_blocks(&mut data))
            .unwrap();
        assert_eq!(data, plaintext, "{name}: backend decrypts {blocks} blocks");

        // The backend, one block at a time.
        for block in as_blocks(&mut data) {
            BlockCipherEncrypt::encrypt_block(cipher, block);
        }
        assert_eq!(data, ciphertext, "{name}: encrypt {blocks} blocks singly");
        for block in as_blocks(&mut data) {
            BlockCipherDecrypt::decrypt_block(cipher, block);
        }
        assert_eq!(data, plaintext, "{name}: decrypt {blocks} blocks singly");
    }

    #[test]
    fn matches_the_sm4_crate() {
        let mut rng = XorShift(0x5eed_0123_4567_89ab);
        for _ in 0..20 {
            let mut key = [0u8; 16];
            rng.fill(&mut key);
            let engines = engines(&key);
            // Every remainder of the batches of 4, 8, 16 and 32 blocks.
            for blocks in 1..=40 {
                let mut plaintext = vec![0u8; blocks * BLOCK_LEN];
                rng.fill(&mut plaintext);
                let ciphertext = reference_encryption(&key, &plaintext);
                for (name, cipher) in &engines {
                    check_every_path(name, cipher, &plaintext, &ciphertext);
                }
            }
        }
    }

    #[test]
    fn long_inputs_match_the_sm4_crate() {
        let mut rng = XorShift(0x10ff);
        let key = [0x42; 16];
        let engines = engines(&key);
        for blocks in [63, 64, 65, 80, 95, 96, 97, 128 + 17, 1000] {
            let mut plaintext = vec![0u8; blocks * BLOCK_LEN];
            rng.fill(&mut plaintext);
            let ciphertext = reference_encryption(&key, &plaintext);
            for (name, cipher) in &engines {
                check_every_path(name, cipher, &plaintext, &ciphertext);
            }
        }
    }

    #[test]
    #[should_panic(expected = "not whole blocks")]
    fn rejects_partial_blocks() {
        Sm4Fast::new(&[0; 16]).encrypt_blocks(&mut [0; 20]);
    }

    #[test]
    fn gcm_matches_the_sm4_crate() {
        // RFC 8998, appendix A.1.
        let crate::test_util::GcmVector {
            key,
            nonce,
            aad,
            plaintext,
            ciphertext,
            tag,
        } = crate::test_util::rfc_8998_sm4_gcm();

        let reference = AesGcm::<sm4::Sm4, U12>::new(&key.into());
        for (name, cipher) in engines(&key) {
            let fast = AesGcm::<Sm4Fast, U12>::from(cipher);
            let mut buf = plaintext.clone();
            let got_tag = fast
                .encrypt_inout_detached(&nonce.into(), &aad, buf.as_mut_slice().into())
                .unwrap();
            assert_eq!(
                (&buf, got_tag.to_vec()),
                (&ciphertext, tag.clone()),
                "{name}"
            );

            let mut rng = XorShift(0x6c6d);
            for len in [
                0, 1, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 200, 1000, 4099,
            ] {
                let mut message = vec![0u8; len];
                rng.fill(&mut message);
                let mut expected = message.clone();
                let expected_tag = reference
                    .encrypt_inout_detached(&nonce.into(), &aad, expected.as_mut_slice().into())
                    .unwrap();
                let mut got = message.clone();
                let got_tag = fast
                    .encrypt_inout_detached(&nonce.into(), &aad, got.as_mut_slice().into())
                    .unwrap();
                assert_eq!(
                    (&got, got_tag),
                    (&expected, expected_tag),
                    "{name}: {len} bytes"
                );
                fast.decrypt_inout_detached(
                    &nonce.into(),
                    &aad,
                    got.as_mut_slice().into(),
                    &got_tag,
                )
                .unwrap();
                assert_eq!(got, message);
            }
        }
    }

    /// Run with `cargo test --release --lib sm4_fast -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn throughput() {
        let key = [7u8; 16];
        let reference = sm4::Sm4::new(&key.into());
        println!("ECB (Sm4Fast::encrypt_blocks), MB/s:");
        for len in [64, 256, 1024, 16 << 10, 1 << 20] {
            let mut data = vec![0x5au8; len];
            let reference_rate = measure_mbps(len, || {
                BlockCipherEncrypt::encrypt_blocks(&reference, as_blocks(&mut data));
            });
            let mut line = format!("{len:>8} bytes: sm4 crate {reference_rate:4.0}");
            for (name, cipher) in engines(&key) {
                let rate = measure_mbps(len, || cipher.encrypt_blocks(&mut data));
                line += &format!(", {name} {rate:4.0} ({:.1}x)", rate / reference_rate);
            }
            println!("{line}");
        }
        println!("GCM (aes_gcm::AesGcm<_, U12>), MB/s:");
        let fast = AesGcm::<Sm4Fast, U12>::new(&key.into());
        let reference = AesGcm::<sm4::Sm4, U12>::new(&key.into());
        for len in [64, 188, 1200, 16 << 10, 1 << 20] {
            let reference_rate = seal_rate(&reference, len);
            let fast_rate = seal_rate(&fast, len);
            println!(
                "{len:>8} bytes: sm4 crate {reference_rate:4.0}, Sm4Fast {fast_rate:4.0} ({:.1}x)",
                fast_rate / reference_rate
            );
        }
    }

    /// MB/s of `aead` sealing `len` bytes.
    fn seal_rate(aead: &impl AeadInOut<NonceSize = U12>, len: usize) -> f64 {
        let mut data = vec![0x5au8; len];
        measure_mbps(len, || {
            aead.encrypt_inout_detached(&[3; 12].into(), &[], data.as_mut_slice().into())
                .unwrap();
        })
    }
}
