//! Hostile bytes never panic the wire decoders: thousands of seeded mutations of valid requests (byte flips,
//! truncations, insertions, splices of JSON tokens, absurd header lengths, deep nesting) go through the JSON and
//! binary-extension decoders, which must answer `Ok` or a precise `Err`. Seeded, so a failure reproduces; bounded in
//! count, so it runs with every `cargo test`; the coverage-guided fuzz targets in `fuzz/` run in CI for a bounded time.

use ferry_protocol::{decode_infer_request, decode_raw};
use ferry_types::DataType;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"BYTES\"",
    b"\"FP32\"",
    b"\"shape\"",
    b"\"data\"",
    b"\\u0000",
    b"NaN",
    b"true",
    b"\xff\xfe",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => b.truncate(rng.below(b.len())),
            2 => {
                let i = rng.below(b.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(i..i, t.iter().copied());
            }
            3 if b.len() > 2 => {
                let i = rng.below(b.len());
                let j = (i + rng.below(16)).min(b.len());
                b.drain(i..j);
            }
            _ => {
                let i = rng.below(b.len() + 1);
                b.insert(i, u8::try_from(rng.below(256)).unwrap_or(0));
            }
        }
    }
    b
}

#[test]
fn mutated_json_and_binary_requests_never_panic() {
    let seeds: [&[u8]; 4] = [
        br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}]}"#,
        br#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["ab","cd"]}],"parameters":{"timeout":100}}"#,
        br#"{"inputs":[{"name":"u","shape":[1],"datatype":"UINT64","data":[18446744073709551615]}]}"#,
        br#"{"inputs":[{"name":"b","shape":[3],"datatype":"BOOL","data":[true,false,true]}]}"#,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut refused = 0;
    for i in 0..20_000 {
        let seed = seeds[i % seeds.len()];
        let body = mutate(&mut rng, seed);
        if decode_infer_request(None, &body).is_err() {
            refused += 1;
        }
        // The same bytes as a binary-extension body, with a random JSON length.
        let json_len = rng.below(body.len() + 8);
        drop(decode_infer_request(Some(json_len), &body));
    }
    assert!(refused > 1_000, "the mutations do produce bad input ({refused} refused)");

    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(decode_infer_request(None, deep.as_bytes()).is_err());
}

#[test]
fn binary_tensor_data_of_any_length_is_checked_not_trusted() {
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let len = rng.below(64);
        let raw: Vec<u8> = (0..len).map(|_| u8::try_from(rng.below(256)).unwrap_or(0)).collect();
        let count = rng.below(32);
        for dt in [DataType::Fp32, DataType::Bytes, DataType::Bool, DataType::Int64] {
            drop(decode_raw(dt, count, &raw));
        }
    }
    assert!(decode_raw(DataType::Fp32, usize::MAX, &[0; 4]).is_err(), "no overflow");
}
