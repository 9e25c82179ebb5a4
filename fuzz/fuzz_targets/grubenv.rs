//! Feeds arbitrary bytes to the grubenv parser: it must return an environment
//! or an error, never panic; whatever it accepts must serialize back to a
//! block that parses to the same variables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = icos_grubenv::parse(data) {
        if let Ok(bytes) = env.to_bytes() {
            let again = icos_grubenv::parse(&bytes).expect("re-parse of a written block");
            assert_eq!(again, env);
        }
    }
});
