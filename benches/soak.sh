#!/usr/bin/env bash
# Soak: 1,000,000 requests through a real fulcrum with reloads and endpoint
# restarts; prints the proxy's RSS and open descriptors every 100,000
# requests. Not part of CI (it takes a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin fulcrum --example soak
FULCRUM_BIN=target/release/fulcrum target/release/examples/soak
