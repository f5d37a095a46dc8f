#!/usr/bin/env bash
# Sets up what the tests need (moto's server, cfn-lint, cargo-lambda) and runs
# every test: unit, integration against a local SQS/DynamoDB server, the Lambda
# Runtime API emulator, the examples, and the template checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0 CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Most integration tests wait on the local server's clocks (visibility
# timeouts, retry delays, long polls), not on the CPU: four at a time even on
# CI's 2 cores (set RUST_TEST_THREADS to change it).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
bash scripts/setup.sh
python3 scripts/check_template.py
cargo test --workspace --all-features --locked --no-fail-fast
