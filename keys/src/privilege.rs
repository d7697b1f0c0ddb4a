// SPDX-License-Identifier: MPL-2.0
//! iLive's privilege string (`privMapEncrypt`, the "开房间权限加密串" of Tencent's
//! interactive live streaming): a record of the user's account, app, room,
//! expiry and privilege bits, encrypted with QQ TEA (`symmetry_encrypt`) under
//! the app's 16-byte audio/video key.
//!
//! Layout, as Tencent documents it (qcloud-documents, 互动直播, "音视频密钥使用
//! 说明"), all numbers big-endian:
//!
//! | field          | type            | meaning                                  |
//! |----------------|-----------------|------------------------------------------|
//! | cVer           | u8              | version, 0                               |
//! | wAccountLen    | u16             | length of the account                    |
//! | buffAccount    | wAccountLen     | the user's account (identifier)          |
//! | dwSdkAppid     | u32             | sdkappid                                 |
//! | dwAuthId       | u32             | the room (group) number                  |
//! | dwExpTime      | u32             | expiry, UNIX seconds (now + validity)    |
//! | dwPrivilegeMap | u32             | privilege bits (0xff all, 0xab watch)    |
//! | dwAccountType  | u32             | the app's account type                   |
//!
//! The encrypted bytes are the string; on the command line they are written in
//! hex (or base64). Nothing authenticates the record but the TEA framing's seven
//! zero bytes (see `streamcrypt_core::compat::qq_tea`).

use std::fmt;

use serde::Serialize;
use streamcrypt_core::compat::qq_tea::{QqTea, RANDOM_LEN};
use zeroize::Zeroizing;

pub const VERSION: u8 = 0;
/// Bytes of the record besides the account.
const FIXED_LEN: usize = 1 + 2 + 5 * 4;

/// The fields of a privilege string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Privilege {
    pub account: String,
    pub sdkappid: u32,
    pub auth_id: u32,
    pub exp: u32,
    pub privilege_map: u32,
    pub account_type: u32,
}

/// Why a privilege string could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivilegeError {
    /// The TEA framing does not check out.
    WrongKeyOrDamaged,
    /// It decrypts, but is not a record of this layout.
    Damaged(String),
}

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivilegeError::WrongKeyOrDamaged => write!(
                f,
                "the privilege string does not decrypt: wrong key, or the string is damaged or truncated"
            ),
            PrivilegeError::Damaged(what) => write!(f, "the privilege string is damaged: {what}"),
        }
    }
}

impl std::error::Error for PrivilegeError {}

impl Privilege {
    /// The plain record.
    pub fn record(&self) -> Result<Vec<u8>, String> {
        let account = self.account.as_bytes();
        let account_len = u16::try_from(account.len())
            .map_err(|_| format!("the account has {} bytes; at most 65535 fit", account.len()))?;
        let mut record = Vec::with_capacity(FIXED_LEN + account.len());
        record.push(VERSION);
        record.extend_from_slice(&account_len.to_be_bytes());
        record.extend_from_slice(account);
        for field in [
            self.sdkappid,
            self.auth_id,
            self.exp,
            self.privilege_map,
            self.account_type,
        ] {
            record.extend_from_slice(&field.to_be_bytes());
        }
        Ok(record)
    }

    /// Reads a plain record.
    pub fn from_record(record: &[u8]) -> Result<Self, PrivilegeError> {
        let damaged = |what: String| PrivilegeError::Damaged(what);
        let (&version, rest) = record
            .split_first()
            .ok_or_else(|| damaged("the record is empty".into()))?;
        if version != VERSION {
            return Err(damaged(format!(
                "version {version}; only version {VERSION} (iLive's) is known"
            )));
        }
        let (length, rest) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| damaged("the record ends before the account length".into()))?;
        let account_len = usize::from(u16::from_be_bytes(*length));
        if rest.len() != account_len + 5 * 4 {
            return Err(damaged(format!(
                "an account of {account_len} bytes needs a record of {} bytes; this one has {}",
                FIXED_LEN + account_len,
                record.len()
            )));
        }
        let (account, numbers) = rest.split_at(account_len);
        let account = std::str::from_utf8(account)
            .map_err(|_| damaged("the account is not UTF-8 text".into()))?
            .to_owned();
        let field = |index: usize| {
            u32::from_be_bytes(
                numbers[4 * index..4 * index + 4]
                    .try_into()
                    .expect("4 bytes"),
            )
        };
        Ok(Privilege {
            account,
            sdkappid: field(0),
            auth_id: field(1),
            exp: field(2),
            privilege_map: field(3),
            account_type: field(4),
        })
    }

    /// The privilege string under `key`, framed with `random` bytes.
    pub fn encrypt(&self, key: &[u8; 16], random: &[u8; RANDOM_LEN]) -> Result<Vec<u8>, String> {
        let record = Zeroizing::new(self.record()?);
        let mut out = vec![0u8; QqTea::encrypted_len(record.len())];
        let len = QqTea::new(key).encrypt_into(&record, random, &mut out);
        out.truncate(len);
        Ok(out)
    }

    pub fn decrypt(string: &[u8], key: &[u8; 16]) -> Result<Self, PrivilegeError> {
        let mut plain = Zeroizing::new(vec![0u8; string.len()]);
        let len = QqTea::new(key)
            .decrypt_into(string, &mut plain)
            .map_err(|_| PrivilegeError::WrongKeyOrDamaged)?;
        Self::from_record(&plain[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Privilege {
        Privilege {
            account: "alice".into(),
            sdkappid: 1_400_000_000,
            auth_id: 1234,
            exp: 1_700_000_300,
            privilege_map: 0xab,
            account_type: 0,
        }
    }

    const KEY: &[u8; 16] = b"0123456789ABCDEF";
    const RANDOM: [u8; RANDOM_LEN] = [0xa5, 1, 2, 3, 4, 5, 6, 7, 8, 9];

    #[test]
    fn record_layout() {
        // Field by field from the documented table.
        let expected: Vec<u8> = [
            &[0u8][..],                      // cVer
            &[0, 5],                         // wAccountLen
            b"alice",                        // buffAccount
            &1_400_000_000u32.to_be_bytes(), // dwSdkAppid
            &1234u32.to_be_bytes(),          // dwAuthId
            &1_700_000_300u32.to_be_bytes(), // dwExpTime
            &[0, 0, 0, 0xab],                // dwPrivilegeMap
            &[0, 0, 0, 0],                   // dwAccountType
        ]
        .concat();
        assert_eq!(sample().record().unwrap(), expected);
    }

    #[test]
    fn known_answer() {
        // Computed independently by keys/tests/privilege_reference.py, a Python
        // QQ TEA written from the description in qq_tea.rs, over the record of
        // `record_layout` with the same random bytes.
        let string = sample().encrypt(KEY, &RANDOM).unwrap();
        assert_eq!(
            string
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            KNOWN_STRING
        );
        assert_eq!(Privilege::decrypt(&string, KEY), Ok(sample()));
    }

    const KNOWN_STRING: &str =
        "1cfa6d0b2accc1353f3029fa5d7ad6becedb1124ddfbc0f7b4fe19649eff8972bfb83f699919755c";

    #[test]
    fn round_trip_and_errors() {
        let privilege = Privilege {
            account: "用户-1".into(),
            privilege_map: 0xffff_ffff,
            account_type: 36862,
            ..sample()
        };
        for random in [[0u8; RANDOM_LEN], [0xff; RANDOM_LEN], RANDOM] {
            let string = privilege.encrypt(KEY, &random).unwrap();
            assert_eq!(Privilege::decrypt(&string, KEY), Ok(privilege.clone()));
        }
        let string = privilege.encrypt(KEY, &RANDOM).unwrap();
        assert_eq!(
            Privilege::decrypt(&string, b"0123456789ABCDEE"),
            Err(PrivilegeError::WrongKeyOrDamaged)
        );
        let mut damaged = string.clone();
        damaged[3] ^= 0x40;
        assert_eq!(
            Privilege::decrypt(&damaged, KEY),
            Err(PrivilegeError::WrongKeyOrDamaged)
        );
        assert_eq!(
            Privilege::decrypt(&string[..string.len() - 8], KEY),
            Err(PrivilegeError::WrongKeyOrDamaged)
        );
        assert_eq!(
            Privilege::decrypt(&[], KEY),
            Err(PrivilegeError::WrongKeyOrDamaged)
        );
    }

    #[test]
    fn records_that_decrypt_but_do_not_parse() {
        let mut record = sample().record().unwrap();
        record[0] = 1;
        let err = Privilege::from_record(&record).unwrap_err();
        assert!(err.to_string().contains("version 1"), "{err}");
        let record = sample().record().unwrap();
        let err = Privilege::from_record(&record[..record.len() - 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the privilege string is damaged: an account of 5 bytes needs a record of 28 bytes; \
             this one has 27"
        );
        assert!(Privilege::from_record(&[]).is_err());
        assert!(Privilege::from_record(&[0, 0]).is_err());
        let mut bad_text = sample().record().unwrap();
        bad_text[3] = 0xff;
        assert!(
            Privilege::from_record(&bad_text)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let long = Privilege {
            account: "a".repeat(70_000),
            ..sample()
        };
        assert!(long.record().unwrap_err().contains("70000 bytes"));
    }
}
