# SPDX-License-Identifier: MPL-2.0
# An independent QQ TEA (written from the description in core/src/compat/qq_tea.rs)
# and iLive privilege record: prints the known answer of keys/src/privilege.rs.
# Run: /usr/bin/python3 keys/tests/privilege_reference.py
import struct
def tea_enc(key, v):
    k = struct.unpack(">4I", key); y, z = struct.unpack(">2I", v); s = 0; M = 0xffffffff
    for _ in range(16):
        s = (s + 0x9E3779B9) & M
        y = (y + ((((z << 4) + k[0]) & M) ^ ((z + s) & M) ^ (((z >> 5) + k[1]) & M))) & M
        z = (z + ((((y << 4) + k[2]) & M) ^ ((y + s) & M) ^ (((y >> 5) + k[3]) & M))) & M
    return struct.pack(">2I", y, z)
def qq_encrypt(key, body, rnd):
    pad = (8 - (len(body) + 10) % 8) % 8
    plain = bytes([(rnd[0] & 0xF8) | pad]) + rnd[1:1 + pad + 2] + body + b"\0" * 7
    out = b""; pc = b"\0" * 8; px = b"\0" * 8
    for i in range(0, len(plain), 8):
        x = bytes(a ^ b for a, b in zip(plain[i:i+8], pc))
        c = bytes(a ^ b for a, b in zip(tea_enc(key, x), px))
        out += c; pc, px = c, x
    return out
record = bytes([0]) + struct.pack(">H", 5) + b"alice" + struct.pack(">5I", 1400000000, 1234, 1700000300, 0xab, 0)
print(qq_encrypt(b"0123456789ABCDEF", record, bytes([0xa5,1,2,3,4,5,6,7,8,9])).hex())
