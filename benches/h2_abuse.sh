#!/usr/bin/env bash
# HTTP/2 abuse harness: every attack of tests/h2_abuse.rs for a few seconds
# against a real fulcrum (one worker), with another client's latency and the
# proxy's RSS measured throughout. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin fulcrum --example h2_abuse
FULCRUM_BIN=target/release/fulcrum target/release/examples/h2_abuse
