// SPDX-License-Identifier: MPL-2.0
//! Grants as clients send them: never a panic, errors on one line (the service
//! answers them as the body), and what `verify` accepts `peek` reads alike.
//! Input: byte 0 chooses how the rest is used: even, as a whole token; odd, as
//! the payload of a token signed with a fixed key, so that the claims parser is
//! reached past the signature check.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use streamcrypt::grant::{
    Claims, GrantError, MAX_TOKEN_LEN, SigningKey, VerifyingKey, is_stream_name,
    is_stream_pattern, verify,
};

const NOW: u64 = 1_700_000_000;

/// A fixed issuer key (PKCS#8 v1 of the seed 0x00..0x1f).
fn issuer() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(0u8..32);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(&der)
        );
        SigningKey::from_pem(&pem).expect("a valid key")
    })
}

fn check_error(error: &GrantError) {
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text:?}");
    assert!(!text.is_empty());
}

fn check(token: &str, keys: &[VerifyingKey]) {
    let peeked = Claims::peek(token);
    let verified = verify(keys, token, NOW);
    if token.len() > MAX_TOKEN_LEN {
        assert_eq!(peeked, Err(GrantError::TooLong { len: token.len() }));
        assert_eq!(verified, Err(GrantError::TooLong { len: token.len() }));
    }
    match &peeked {
        Ok(claims) => assert!(is_stream_pattern(&claims.stream)),
        Err(error) => check_error(error),
    }
    match verified {
        Ok(claims) => {
            assert_eq!(peeked.as_ref(), Ok(&claims));
            assert!(claims.nbf <= NOW && NOW < claims.exp);
            for stream in ["room1", "..", "", "a/b"] {
                assert!(!claims.covers(stream) || is_stream_name(stream));
            }
        }
        Err(error) => check_error(&error),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = [issuer().verifying_key()];
    if mode % 2 == 0 {
        check(&String::from_utf8_lossy(rest), &keys);
    } else {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA"}"#);
        let token = issuer().sign_jws(&format!("{header}.{}", URL_SAFE_NO_PAD.encode(rest)));
        check(&token, &keys);
    }
});
