#!/usr/bin/env bash
# A local SQS + DynamoDB server (moto) in the background, for trying the worker by hand.
#   scripts/local-sqs.sh [--port N]   start (or show the running one); prints the endpoint
#   scripts/local-sqs.sh stop         stop it
# Writes .local/moto.endpoint and .local/moto.pid. Then, for example:
#   export AWS_ENDPOINT_URL=$(cat .local/moto.endpoint) AWS_REGION=us-east-1 \
#          AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
#   export SQS_WORKER_TEST_ENDPOINT=$AWS_ENDPOINT_URL   # the integration tests reuse it
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.local pidf=.local/moto.pid endf=.local/moto.endpoint logf=.local/moto.log
mkdir -p "$dir"

running() { [[ -s $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; }

if [[ ${1:-} == stop ]]; then
    if running; then
        pid=$(cat "$pidf")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "stopped moto (pid $pid)"
    else
        echo "moto is not running"
    fi
    rm -f "$pidf" "$endf"
    exit 0
fi

if running; then
    cat "$endf"
    exit 0
fi

rm -f "$endf"
# nohup + its own session: the server outlives this shell and its terminal.
setsid nohup python3 scripts/moto_server.py "$@" >"$endf.tmp" 2>"$logf" </dev/null &
echo $! >"$pidf"
for _ in $(seq 300); do
    if [[ -s $endf.tmp ]]; then
        mv "$endf.tmp" "$endf"
        cat "$endf"
        exit 0
    fi
    if ! running; then break; fi
    sleep 0.1
done
echo "local-sqs: moto did not start; see $logf" >&2
[[ -s $logf ]] && tail -n 20 "$logf" >&2
rm -f "$pidf" "$endf.tmp"
exit 1
