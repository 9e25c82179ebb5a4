//! Feeds arbitrary text to the SetupOS `config.ini` parser: it must return
//! settings or a list of problems, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = icos_setupos_config::parse_config_ini(text);
    }
});
