// SPDX-License-Identifier: MPL-2.0
//! The SFrame header: any bytes decode to a header or a clear error, a decoded
//! header re-encodes minimally and decodes back, and any (KID, CTR) round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt::sframe::{Header, HeaderError, MAX_HEADER_LEN};
use streamcrypt_fuzz::Input;

/// Bytes a value takes after the config byte: none up to 7, else big-endian
/// without leading zeros (RFC 9605, section 4.3).
fn extra_len(value: u64) -> usize {
    if value < 8 {
        0
    } else {
        8 - value.leading_zeros() as usize / 8
    }
}

fn encode(header: Header) -> Vec<u8> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let len = header.encode(&mut buf);
    assert_eq!(len, header.encoded_len());
    assert_eq!(len, 1 + extra_len(header.kid) + extra_len(header.ctr));
    buf[..len].to_vec()
}

fuzz_target!(|data: &[u8]| {
    match Header::decode(data) {
        Ok((header, len)) => {
            assert!((1..=MAX_HEADER_LEN.min(data.len())).contains(&len));
            // The header ends where it says, whatever follows.
            assert_eq!(Header::decode(&data[..len]), Ok((header, len)));
            assert!(Header::decode(&data[..len - 1]).is_err());
            let minimal = encode(header);
            assert!(minimal.len() <= len, "re-encoded longer than received");
            assert_eq!(Header::decode(&minimal), Ok((header, minimal.len())));
        }
        Err(error @ HeaderError::Truncated { needed, got }) => {
            assert_eq!(got, data.len());
            assert!(got < needed && needed <= MAX_HEADER_LEN);
            assert!(!error.to_string().is_empty());
        }
    }

    let mut input = Input::new(data);
    let header = Header {
        kid: input.u64(),
        ctr: input.u64(),
    };
    let encoded = encode(header);
    assert_eq!(Header::decode(&encoded), Ok((header, encoded.len())));
});
