// SPDX-License-Identifier: MPL-2.0
//! Helpers the unit tests share.

/// Bytes from hex digits, whitespace ignored (test vectors are well-formed).
pub fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// MB/s of `run` over `len` bytes, the best of three runs of 0.3 s (for the
/// ignored throughput tests, which print rather than assert).
pub fn measure_mbps(len: usize, mut run: impl FnMut()) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let mut iterations = 0u64;
        while started.elapsed().as_secs_f64() < 0.3 {
            for _ in 0..16 {
                run();
            }
            iterations += 16;
        }
        let rate = (iterations * len as u64) as f64 / started.elapsed().as_secs_f64() / 1e6;
        best = best.max(rate);
    }
    best
}

/// A vector file from tests/data/.
pub fn vectors(name: &str) -> serde_json::Value {
    // The vectors live with the workspace's tests.
    let path = format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A GCM known-answer vector.
pub struct GcmVector {
    pub key: [u8; 16],
    pub nonce: [u8; 12],
    pub aad: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

/// RFC 8998, appendix A.1: SM4-GCM.
pub fn rfc_8998_sm4_gcm() -> GcmVector {
    GcmVector {
        key: hex("0123456789abcdeffedcba9876543210").try_into().unwrap(),
        nonce: hex("00001234567800000000abcd").try_into().unwrap(),
        aad: hex("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
        plaintext: hex(
            "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd\
             eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa",
        ),
        ciphertext: hex(
            "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735\
             d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d",
        ),
        tag: hex("83de3541e4c2b58177e065a9bf7b62ec"),
    }
}

/// A small deterministic generator (xorshift64*), for tests that want many
/// repeatable random inputs without a random-number dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            *byte = self.next() as u8;
        }
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut array = [0; N];
        self.fill(&mut array);
        array
    }
}

/// `len` repeatable pseudo-random bytes for `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}
