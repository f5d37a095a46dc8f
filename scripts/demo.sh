#!/usr/bin/env bash
# README command 1: the one-command demo on a fresh machine.
#
# Sets up what is missing (scripts/setup.sh), starts a local SQS server (moto,
# on loopback, a free port), builds the `orders` example and the demo driver,
# then runs the demo driver (crates/sqs-worker-tools/src/bin/sqs-worker-demo.rs): it creates a queue and a dead-letter queue with a
# redrive policy, starts the orders worker as its own process, produces a few
# thousand orders while the worker drains them, shows live progress, sends one
# poison message, stops the worker with SIGTERM and prints a summary.
#
# Environment: DEMO_ORDERS (default 3000), ORDERS_FAIL_EVERY (default 40),
# SQS_WORKER_DEMO_ENDPOINT to use a server that is already running.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

bash scripts/setup.sh

echo "building the orders example and the demo driver..."
cargo build --quiet --example orders
cargo build --quiet -p sqs-worker-tools --bin sqs-worker-demo
target_dir="${CARGO_TARGET_DIR:-target}"

tmp="$(mktemp -d)"
cleanup() {
    # Closing our end of the server's stdin stops it (--exit-on-stdin-eof).
    if [[ -n "${moto_fd:-}" ]]; then exec {moto_fd}>&-; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -z "${SQS_WORKER_DEMO_ENDPOINT:-}" ]]; then
    exec {moto_fd}> >(exec python3 scripts/moto_server.py --exit-on-stdin-eof >"$tmp/url" 2>"$tmp/server.log")
    for _ in $(seq 1 600); do
        [[ -s "$tmp/url" ]] && break
        sleep 0.1
    done
    if [[ ! -s "$tmp/url" ]]; then
        echo "the local SQS server did not start; its log:" >&2
        cat "$tmp/server.log" >&2 || true
        exit 1
    fi
    SQS_WORKER_DEMO_ENDPOINT="$(head -n1 "$tmp/url")"
    echo "local SQS server at $SQS_WORKER_DEMO_ENDPOINT (moto)"
fi

SQS_WORKER_DEMO_ENDPOINT="$SQS_WORKER_DEMO_ENDPOINT" \
SQS_WORKER_DEMO_WORKER="$target_dir/debug/examples/orders" \
    "$target_dir/debug/sqs-worker-demo"
