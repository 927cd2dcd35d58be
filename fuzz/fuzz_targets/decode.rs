//! Fuzzes the protocol decoder: `cargo +nightly fuzz run decode` from `fuzz/`.
//!
//! The input is split into frames at every `0xFF 0xFE` pair, so the fuzzer explores frame
//! counts as well as frame contents. Whatever decodes must re-encode to frames that decode
//! to it (a compressed payload may come back compressed otherwise).

#![no_main]

use libfuzzer_sys::fuzz_target;

// The protocol and encoding modules depend only on std, `hex`, `half`, `serde` and `zstd`:
// compile them here without burn.
#[allow(dead_code)]
#[path = "../../runtime/src/wire/protocol.rs"]
mod protocol;

#[allow(dead_code)]
#[path = "../../runtime/src/wire/encoding.rs"]
mod encoding;

fuzz_target!(|data: &[u8]| {
    let mut frames: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xFF && data[i + 1] == 0xFE {
            frames.push(&data[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    frames.push(&data[start..]);
    if let Ok(msg) = protocol::Message::decode(&frames) {
        let again = msg.encode();
        assert_eq!(protocol::Message::decode(&again).unwrap(), msg);
    }
});
