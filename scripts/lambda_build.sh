#!/usr/bin/env bash
# Builds the Lambda function as `sam build` does for template.yaml
# (BuildMethod: rust-cargolambda, CodeUri: deploy/orders): `cargo lambda build
# --release` in deploy/orders, then checks that the bootstrap exists and is an
# ELF executable. CI runs it (.ci/run). Extra arguments go to cargo lambda
# (e.g. --arm64, which needs `rustup target add aarch64-unknown-linux-gnu`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/setup.sh >/dev/null
start=$(date +%s)
(cd deploy/orders && cargo lambda build --release --locked "$@")
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bootstrap="$target_dir/lambda/orders/bootstrap"
if [[ ! -x "$bootstrap" ]]; then
    echo "lambda-build: no executable $bootstrap after cargo lambda build" >&2
    ls -R "$target_dir/lambda" >&2 2>/dev/null || true
    exit 1
fi
if [[ "$(head -c 4 "$bootstrap" | od -An -c | tr -d ' ')" != '177ELF' ]]; then
    echo "lambda-build: $bootstrap is not an ELF executable" >&2
    exit 1
fi
echo "lambda-build: $bootstrap ($(du -h "$bootstrap" | cut -f1)) in $(( $(date +%s) - start )) s"
