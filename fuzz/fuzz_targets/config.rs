//! `Config::parse` on arbitrary UTF-8 text: it must never panic, and its error must
//! render (the renderer points into the source by line and column).
#![no_main]

use gobalancer::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text, "<fuzz>") {
        Ok(config) => {
            // A valid config compares equal to itself (Config implements Eq by hand).
            assert!(config == config.clone(), "a parsed config is not equal to its clone");
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = format!("{e:?}");
        }
    }
});
