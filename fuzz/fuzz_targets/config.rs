//! The config parser: any text gives a config or errors that name a line within the file;
//! it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match tiketo_gate::config::parse(text, std::path::Path::new("fuzz.toml")) {
        Ok(cfg) => {
            let _ = cfg.summary();
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let lines = text.lines().count().max(1) + 1;
            for p in &e.problems {
                if let Some(l) = p.line {
                    assert!(l >= 1 && l <= lines, "line {l} of a {lines}-line file");
                }
            }
            let _ = e.to_string();
        }
    }
});
