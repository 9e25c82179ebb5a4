//! Feeds arbitrary bytes to the grubenv parser: it must return an environment
//! or an error, never panic; whatever it accepts must serialize back to a
//! block that parses to the same variables.
//!
//! The input is tried twice: as it is (mostly exercising the size and header
//! checks) and framed as a block (the header, the input, `#` padding up to
//! 1024 bytes), which reaches the line parser.
#![no_main]

use icos_grubenv::{BLOCK_SIZE, HEADER};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(env) = icos_grubenv::parse(bytes) {
        if let Ok(written) = env.to_bytes() {
            let again = icos_grubenv::parse(&written).expect("re-parse of a written block");
            assert_eq!(again, env);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut block = HEADER.as_bytes().to_vec();
    block.extend_from_slice(data);
    block.resize(BLOCK_SIZE, b'#');
    check(&block);
});
