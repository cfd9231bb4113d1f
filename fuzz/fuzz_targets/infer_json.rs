//! The inference request decoder on arbitrary JSON bodies: `Ok` or a precise `Err`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    drop(ferry_protocol::decode_infer_request(None, body));
});
