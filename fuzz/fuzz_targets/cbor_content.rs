//! Feeds arbitrary bytes to the router's CBOR envelope `content` decoder,
//! which reads request bodies from anyone: it must decode or reject, never
//! panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = icos_boundary::decode_content(data);
});
