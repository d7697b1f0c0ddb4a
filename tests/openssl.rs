// SPDX-License-Identifier: MPL-2.0
//! Cross-checks with the `openssl` command line, for every mode it can speak to:
//! SM4-ECB and AES-CBC byte for byte, and for every SFrame suite the key
//! derivation (`openssl kdf`), the ciphertext (`openssl enc` in CTR mode) and,
//! for AES-CTR-HMAC, the tag (`openssl mac`). (The command line has no AEAD, so
//! GCM tags are left to the known-answer tests; QQ TEA is not in OpenSSL.)

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use gststreamcrypt::sframe::Header;

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command (Debian package openssl)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// Buffers of several sizes around block boundaries.
fn inputs() -> Vec<Vec<u8>> {
    [0usize, 1, 15, 16, 17, 100, 1500]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (i * 91 + j * 13) as u8).collect())
        .collect()
}

fn encrypt_with(description: &str, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let element = make(description);
    let buffers = inputs.iter().map(|i| gst::Buffer::from_slice(i.clone()));
    AppPipeline::new(&[&element])
        .run(buffers)
        .iter()
        .map(|b| b.map_readable().unwrap().to_vec())
        .collect()
}

fn decrypt_with(description: &str, inputs: &[Vec<u8>]) -> Vec<u8> {
    encrypt_with(description, inputs).concat()
}

#[test]
fn sm4_ecb_is_openssl_enc_sm4_ecb() {
    let key = "0123456789abcdeffedcba9876543210";
    let ours = encrypt_with(&format!("streamencrypt mode=sm4-ecb key={key}"), &inputs());
    let theirs: Vec<Vec<u8>> = inputs()
        .iter()
        .map(|input| openssl(&["enc", "-sm4-ecb", "-K", key], input))
        .collect();
    assert_eq!(ours, theirs);
    let decrypted = decrypt_with(
        &format!("streamdecrypt mode=sm4-ecb key={key} on-error=fail"),
        &theirs,
    );
    assert_eq!(decrypted, inputs().concat());
}

/// PKCS#7-pads one buffer, as aesenc's per-buffer padding does.
fn padded(input: &[u8]) -> Vec<u8> {
    let pad = 16 - input.len() % 16;
    let mut out = input.to_vec();
    out.resize(input.len() + pad, pad as u8);
    out
}

#[test]
fn aes_cbc_is_openssl_enc_aes_cbc() {
    let iv = "00112233445566778899aabbccddeeff";
    for (cipher, key) in [("aes-128-cbc", KEY_A), ("aes-256-cbc", KEY_256)] {
        let openssl_cbc = |args: &[&str], data: &[u8]| {
            let cipher_arg = format!("-{cipher}");
            let mut all = vec!["enc", cipher_arg.as_str(), "-K", key, "-iv", iv];
            all.extend(args);
            openssl(&all, data)
        };
        // Per-buffer padding: one CBC chain over the separately padded buffers.
        let padded_stream: Vec<u8> = inputs().iter().flat_map(|i| padded(i)).collect();
        let expected = openssl_cbc(&["-nopad"], &padded_stream);
        let ours = encrypt_with(
            &format!("streamencrypt mode={cipher} key={key} iv={iv}"),
            &inputs(),
        );
        assert_eq!(ours.concat(), expected, "{cipher} per-buffer padding");

        // Padding at the end only: plain `openssl enc` over the whole stream, here
        // with the IV serialized in front.
        let whole = openssl_cbc(&[], &inputs().concat());
        let ours = encrypt_with(
            &format!(
                "streamencrypt mode={cipher} key={key} iv={iv} serialize-iv=true \
                 per-buffer-padding=false"
            ),
            &inputs(),
        );
        assert_eq!(
            ours.concat(),
            [unhex(iv), whole.clone()].concat(),
            "{cipher} stream"
        );

        // OpenSSL's stream, cut anywhere, decrypts with ours.
        let chunks: Vec<Vec<u8>> = whole.chunks(7).map(<[u8]>::to_vec).collect();
        let decrypted = decrypt_with(
            &format!(
                "streamdecrypt mode={cipher} key={key} iv={iv} per-buffer-padding=false \
                 on-error=fail"
            ),
            &chunks,
        );
        assert_eq!(decrypted, inputs().concat(), "{cipher} openssl to ours");
    }
}

/// SFrame modes: (mode, suite id, `openssl kdf` digest, key length, `openssl enc`
/// CTR cipher, tag length, whether the tag is an HMAC).
const SFRAME_MODES: [(&str, u16, &str, usize, &str, usize, bool); 7] = [
    (
        "aes-128-ctr-hmac-80",
        1,
        "SHA2-256",
        48,
        "aes-128-ctr",
        10,
        true,
    ),
    (
        "aes-128-ctr-hmac-64",
        2,
        "SHA2-256",
        48,
        "aes-128-ctr",
        8,
        true,
    ),
    (
        "aes-128-ctr-hmac-32",
        3,
        "SHA2-256",
        48,
        "aes-128-ctr",
        4,
        true,
    ),
    ("aes-128-gcm", 4, "SHA2-256", 16, "aes-128-ctr", 16, false),
    ("aes-256-gcm", 5, "SHA2-512", 32, "aes-256-ctr", 16, false),
    (
        "aes-192-gcm",
        0xF001,
        "SHA2-256",
        24,
        "aes-192-ctr",
        16,
        false,
    ),
    ("sm4-gcm", 0xF002, "SM3", 16, "sm4-ctr", 16, false),
];

#[test]
fn sframe_key_derivation_and_ciphertext_match_openssl() {
    for (mode, suite, digest, key_len, ctr_cipher, tag_len, hmac) in SFRAME_MODES {
        let base_key = match mode {
            "aes-256-gcm" => KEY_256.to_string(),
            "aes-192-gcm" => KEY_256[..48].to_string(),
            _ => KEY_B.to_string(),
        };
        let kid = 0x1234u64;
        let plaintext = b"a frame of media, longer than one block of the cipher".to_vec();
        let frame = encrypt_with(
            &format!("streamencrypt mode={mode} key={base_key} key-id={kid}"),
            std::slice::from_ref(&plaintext),
        )
        .remove(0);
        let (header, header_len) = Header::decode(&frame).unwrap();
        assert_eq!(header.kid, kid);

        // RFC 9605 4.4.2 with openssl kdf: HKDF, salt "", info = label.
        let label = |what: &str| {
            let mut label = format!("SFrame 1.0 Secret {what} ").into_bytes();
            label.extend(kid.to_be_bytes());
            label.extend(suite.to_be_bytes());
            hex(&label)
        };
        let kdf = |len: usize, info: String| {
            let len = len.to_string();
            let digest = format!("digest:{digest}");
            let key = format!("hexkey:{base_key}");
            let info = format!("hexinfo:{info}");
            let args = ["kdf", "-keylen", &len, "-kdfopt", &digest, "-kdfopt", &key];
            let args = [&args[..], &["-kdfopt", "salt:", "-kdfopt", &info, "HKDF"]].concat();
            unhex(&String::from_utf8(openssl(&args, &[])).unwrap())
        };
        let sframe_key = kdf(key_len, label("key"));
        let salt = kdf(12, label("salt"));
        let mut nonce = salt.clone();
        for (n, c) in nonce[4..].iter_mut().zip(header.ctr.to_be_bytes()) {
            *n ^= c;
        }

        // The ciphertext is CTR keystream over the plaintext: from counter block
        // nonce||0 (AES-CTR-HMAC) or nonce||2 (GCM's first data block).
        let (enc_key, auth_key) = sframe_key.split_at(if hmac { 16 } else { key_len });
        let first_block = if hmac { "00000000" } else { "00000002" };
        let iv = format!("{}{first_block}", hex(&nonce));
        let expected = openssl(
            &[
                "enc",
                &format!("-{ctr_cipher}"),
                "-K",
                &hex(enc_key),
                "-iv",
                &iv,
            ],
            &plaintext,
        );
        let body = &frame[header_len..frame.len() - tag_len];
        assert_eq!(body, &expected[..], "{mode}: ciphertext");

        if hmac {
            // Tag: HMAC-SHA256(auth_key, len(aad) | len(ct) | tag_len | nonce | aad | ct).
            let aad = &frame[..header_len];
            let mut data = Vec::new();
            data.extend((aad.len() as u64).to_be_bytes());
            data.extend((body.len() as u64).to_be_bytes());
            data.extend((tag_len as u64).to_be_bytes());
            data.extend(&nonce);
            data.extend(aad);
            data.extend(body);
            let macopt = format!("hexkey:{}", hex(auth_key));
            let mac = openssl(
                &["mac", "-digest", "SHA256", "-macopt", &macopt, "HMAC"],
                &data,
            );
            let mac = unhex(&String::from_utf8(mac).unwrap());
            assert_eq!(
                &frame[frame.len() - tag_len..],
                &mac[..tag_len],
                "{mode}: tag"
            );
        }
    }
}
