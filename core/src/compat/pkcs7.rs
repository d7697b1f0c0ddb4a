// SPDX-License-Identifier: MPL-2.0
//! PKCS#7 padding to 16-byte blocks (RFC 5652, section 6.3).

pub const BLOCK: usize = 16;

/// Padding bytes added after `len` bytes: 1 to 16, never 0.
pub fn pad_len(len: usize) -> usize {
    BLOCK - len % BLOCK
}

/// Writes the padding for `len` data bytes into `out[len..]`; returns the padded
/// length.
pub fn pad(out: &mut [u8], len: usize) -> usize {
    let n = pad_len(len);
    out[len..len + n].fill(n as u8);
    len + n
}

/// Length of the data before the padding, if `padded` ends in valid padding.
/// A random block passes with probability about 1/255 (a last byte of 0x01).
pub fn unpadded_len(padded: &[u8]) -> Option<usize> {
    let n = *padded.last()? as usize;
    if n == 0 || n > BLOCK || n > padded.len() {
        return None;
    }
    padded[padded.len() - n..]
        .iter()
        .all(|&b| b as usize == n)
        .then(|| padded.len() - n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_whole_blocks() {
        for len in 0..40 {
            let mut buf = vec![0xaa; len + 16];
            let padded = pad(&mut buf, len);
            assert_eq!(padded % 16, 0);
            assert!(padded > len && padded <= len + 16);
            assert_eq!(unpadded_len(&buf[..padded]), Some(len));
        }
    }

    #[test]
    fn rejects_bad_padding() {
        assert_eq!(unpadded_len(&[]), None);
        assert_eq!(unpadded_len(&[0u8; 16]), None);
        assert_eq!(unpadded_len(&[17u8; 32]), None);
        let mut block = [3u8; 16];
        block[13] = 2;
        assert_eq!(unpadded_len(&block), None);
        assert_eq!(unpadded_len(&[2, 2]), Some(0));
    }
}
