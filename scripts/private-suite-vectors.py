#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""Known-answer vectors for streamcrypt's private-use SFrame suites, computed
independently of the plugin: Python's `cryptography` (OpenSSL) for HKDF, AES and
SM4, and a GCM written out below from NIST SP 800-38D (cryptography's own AES-GCM
checks it first). Writes JSON in the layout of the RFC 9605 vectors.

  0xF001 AES_192_GCM_SHA256_128: suite 4 with a 24-byte key
  0xF002 SM4_128_GCM_SM3_128:    suite 4 with SM4 and HKDF-SM3

Usage: scripts/private-suite-vectors.py > tests/data/sframe-private-suites.json
"""

import json
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def block_encryptor(algorithm):
    encryptor = Cipher(algorithm, modes.ECB()).encryptor()
    return encryptor.update


def gf128_mul(x, y):
    """Multiplication in GF(2^128) with GCM's bit order (SP 800-38D, 6.3)."""
    r = 0xE1 << 120
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ r if v & 1 else v >> 1
    return z


def ghash(h, data):
    y = 0
    for i in range(0, len(data), 16):
        block = data[i : i + 16].ljust(16, b"\0")
        y = gf128_mul(y ^ int.from_bytes(block, "big"), h)
    return y


def gcm_encrypt(encrypt_block, nonce, aad, plaintext):
    """GCM-AE with a 96-bit IV and a 128-bit tag (SP 800-38D, 7.1)."""
    h = int.from_bytes(encrypt_block(bytes(16)), "big")
    j0 = nonce + b"\0\0\0\1"
    counter = int.from_bytes(j0, "big")
    ciphertext = bytearray()
    for i in range(0, len(plaintext), 16):
        counter = (counter & ~0xFFFFFFFF) | ((counter + 1) & 0xFFFFFFFF)
        keystream = encrypt_block(counter.to_bytes(16, "big"))
        chunk = plaintext[i : i + 16]
        ciphertext += bytes(a ^ b for a, b in zip(chunk, keystream))
    pad = lambda b: b + bytes(-len(b) % 16)  # noqa: E731
    lengths = struct.pack(">QQ", len(aad) * 8, len(ciphertext) * 8)
    s = ghash(h, pad(aad) + pad(bytes(ciphertext)) + lengths)
    tag = (int.from_bytes(encrypt_block(j0), "big") ^ s).to_bytes(16, "big")
    return bytes(ciphertext) + tag


def hkdf(hash_algorithm, length, ikm, info):
    return HKDF(algorithm=hash_algorithm, length=length, salt=b"", info=info).derive(ikm)


def header(kid, ctr):
    """SFrame header (RFC 9605, 4.3) for KID and CTR of 8 or more."""
    kid_bytes = kid.to_bytes((kid.bit_length() + 7) // 8, "big")
    ctr_bytes = ctr.to_bytes((ctr.bit_length() + 7) // 8, "big")
    config = 0x80 | (len(kid_bytes) - 1) << 4 | 0x08 | (len(ctr_bytes) - 1)
    return bytes([config]) + kid_bytes + ctr_bytes


SUITES = [
    # id, name, hash, key length, block cipher
    (0xF001, "AES_192_GCM_SHA256_128", hashes.SHA256(), 24, algorithms.AES),
    (0xF002, "SM4_128_GCM_SM3_128", hashes.SM3(), 16, algorithms.SM4),
]
KID, CTR = 0x123, 0x4567
METADATA = b"IETF SFrame WG"
PLAINTEXT = b"draft-ietf-sframe-enc"


def self_check():
    """The GCM above agrees with OpenSSL's AES-GCM, for several lengths."""
    key = bytes(range(24))
    for length in (0, 1, 15, 16, 17, 64, 100):
        nonce, aad, pt = bytes(range(12)), bytes(range(length // 2)), bytes(range(length))
        ours = gcm_encrypt(block_encryptor(algorithms.AES(key)), nonce, aad, pt)
        assert ours == AESGCM(key).encrypt(nonce, pt, aad), length


def vector(suite_id, name, hash_algorithm, key_len, block_cipher):
    base_key = bytes(range(key_len))
    suffix = KID.to_bytes(8, "big") + suite_id.to_bytes(2, "big")
    key_label = b"SFrame 1.0 Secret key " + suffix
    salt_label = b"SFrame 1.0 Secret salt " + suffix
    sframe_key = hkdf(hash_algorithm, key_len, base_key, key_label)
    sframe_salt = hkdf(hash_algorithm, 12, base_key, salt_label)
    nonce = bytes(a ^ b for a, b in zip(sframe_salt, CTR.to_bytes(12, "big")))
    hdr = header(KID, CTR)
    aad = hdr + METADATA
    sealed = gcm_encrypt(block_encryptor(block_cipher(sframe_key)), nonce, aad, PLAINTEXT)
    return {
        "cipher_suite": suite_id,
        "name": name,
        "kid": KID,
        "ctr": CTR,
        "base_key": base_key.hex(),
        "sframe_key_label": key_label.hex(),
        "sframe_salt_label": salt_label.hex(),
        "sframe_key": sframe_key.hex(),
        "sframe_salt": sframe_salt.hex(),
        "metadata": METADATA.hex(),
        "nonce": nonce.hex(),
        "aad": aad.hex(),
        "pt": PLAINTEXT.hex(),
        "ct": (hdr + sealed).hex(),
    }


def main():
    self_check()
    vectors = {"sframe": [vector(*suite) for suite in SUITES]}
    json.dump(vectors, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
