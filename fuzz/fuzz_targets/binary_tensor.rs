//! The binary tensor extension: a JSON header of any claimed length followed by raw tensor bytes, and the raw
//! decoder for every datatype and element count.
#![no_main]

use ferry_types::DataType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first two bytes pick the header length (as `Inference-Header-Content-Length`), possibly past the end.
    let Some((head, body)) = input.split_first_chunk::<2>() else { return };
    let json_len = usize::from(u16::from_le_bytes(*head));
    drop(ferry_protocol::decode_infer_request(Some(json_len), body));
    // The raw decoder alone: a datatype and an element count from the first bytes, the rest as the payload.
    let datatype = DataType::ALL[usize::from(head[0]) % DataType::ALL.len()];
    let count = usize::from(head[1]);
    drop(ferry_protocol::decode_raw(datatype, count, body));
});
