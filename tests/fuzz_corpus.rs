//! Replays the fuzz corpora of the HTTP parsers (`fuzz/corpus/`) through
//! the checks the fuzz targets run (`fulcrum::fuzzing`), on stable: every
//! input the fuzzer kept, and every crash it found (`fuzz/regressions/`),
//! stays a test.

use std::path::Path;

use fulcrum::fuzzing;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            inputs += 1;
        }
    }
    assert!(inputs > 0, "no corpus for {target}");
}

#[test]
fn request_stream() {
    replay("request_stream", fuzzing::request_stream);
}

#[test]
fn response_head() {
    replay("response_head", fuzzing::response_head);
}

#[test]
fn request_path() {
    replay("request_path", fuzzing::request_path);
}

#[test]
fn chunk_line() {
    replay("chunk_line", fuzzing::chunk_line);
}

#[test]
fn chunked_body() {
    replay("chunked_body", fuzzing::chunked_body);
}

#[test]
fn h2_frames() {
    replay("h2_frames", fuzzing::h2_frames);
}

#[test]
fn framing_differential() {
    replay("framing_differential", fuzzing::follower_against_hyper);
}

#[test]
fn forwarding_round_trip() {
    replay("forwarding_round_trip", fuzzing::forwarding_round_trip);
}

#[test]
fn plain_request() {
    replay("plain_request", fuzzing::plain_against_hyper);
}
