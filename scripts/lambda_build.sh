#!/usr/bin/env bash
# Builds the Lambda function as `sam build` does (BuildMethod: rust-cargolambda):
# `cargo lambda build --release` at the repository root, which reads
# CargoLambda.toml (the example `orders` and its features), then checks that
# the bootstrap exists and is an executable.
#
# Not part of scripts/test.sh: a release build of the whole dependency tree
# (about 220 crates, aws-lc-sys among them) did not finish in 14 minutes on the
# shared 2-core machine, which CI's 15-minute budget cannot absorb next to the
# test suite. CI may call it when its budget allows. Extra arguments go to
# cargo lambda (e.g. --arm64). The bootstrap path is cargo-lambda's layout for
# a binary named `orders`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
start=$(date +%s)
cargo lambda build --release "$@"
target_dir="${CARGO_TARGET_DIR:-target}"
bootstrap="$target_dir/lambda/orders/bootstrap"
if [[ ! -x "$bootstrap" ]]; then
    echo "lambda-build: no executable $bootstrap after cargo lambda build" >&2
    ls -R "$target_dir/lambda" >&2 2>/dev/null || true
    exit 1
fi
echo "lambda-build: $bootstrap ($(du -h "$bootstrap" | cut -f1)) in $(( $(date +%s) - start )) s"
