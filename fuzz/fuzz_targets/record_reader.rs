// SPDX-License-Identifier: MPL-2.0
//! Byte-stream reassembly under any chunking: the records a `RecordReader` returns
//! and how it ends match a reference parse of the whole stream, and after an error
//! it reads nothing more. Input: see `streamcrypt_fuzz::records::RecordInput`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt::framing::RecordReader;
use streamcrypt_fuzz::records::{RecordInput, reference_parse, same_error};

fuzz_target!(|data: &[u8]| {
    let input = RecordInput::read(data);
    let mut reader = RecordReader::new(input.code);
    let mut records = Vec::new();
    let mut error = None;
    for chunk in input.chunks() {
        reader.push(chunk);
        loop {
            match reader.next_record() {
                Ok(Some(record)) => {
                    assert!(error.is_none(), "a record after an error");
                    records.push(record.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(error.is_none(), "a second error");
                    let _ = e.to_string();
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let end = match error {
        Some(e) => {
            assert_eq!(reader.finish(), Ok(()), "finish after an error");
            Err(e)
        }
        None => reader.finish(),
    };

    let (expected_records, expected_end) = reference_parse(input.code, input.stream);
    assert_eq!(records, expected_records);
    match (&end, &expected_end) {
        (Ok(()), Ok(())) => {}
        (Err(got), Err(expected)) => assert!(
            same_error(got, expected, input.stream),
            "got {got:?}, expected {expected:?}"
        ),
        _ => panic!("got {end:?}, expected {expected_end:?}"),
    }
});
