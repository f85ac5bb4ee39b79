//! Config parsing and validation never panic, and every error is located.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(fulcrum::config::LoadError::Invalid(errors)) =
        fulcrum::config::parse(std::path::Path::new("fuzz.toml"), text)
    {
        for e in errors {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(!e.key.is_empty(), "{e}");
        }
    }
});
