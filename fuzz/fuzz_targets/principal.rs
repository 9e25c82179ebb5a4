//! Feeds arbitrary text to the textual principal parser of the router: it
//! must accept or reject, never panic; what it accepts prints back to the
//! same canonical text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(principal) = icos_boundary::parse_principal(text) {
            assert_eq!(principal.to_string(), text);
        }
    }
});
