//! `fulcrum::fuzzing::request_path`: the check, its reasons and its
//! properties are documented there (tests/fuzz_corpus.rs replays this
//! corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fulcrum::fuzzing::request_path(data));
