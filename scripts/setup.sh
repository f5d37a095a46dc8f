#!/usr/bin/env bash
# Install the non-Rust tools the demo and the tests need, only when missing:
#   moto[server] 5.2.x  local SQS + DynamoDB for the integration tests (scripts/moto_server.py)
#   cfn-lint 1.x        lints template.yaml (scripts/check_template.py)
#   cargo-lambda 1.9.2  builds the Lambda artifact (cargo lambda build; SAM's rust-cargolambda)
# Idempotent and fast (one python3 start and one `cargo lambda --version`) when all is there.
# Usage: scripts/setup.sh            (PYTHON=python3.11 scripts/setup.sh to pick another interpreter)
set -euo pipefail

PYTHON=${PYTHON:-python3}
MOTO_SPEC='moto[server]>=5.2,<5.3'
CFNLINT_SPEC='cfn-lint>=1.0,<2'
CARGO_LAMBDA_SPEC='cargo-lambda==1.9.2'

command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found" >&2; exit 1; }

# One interpreter start answers every Python-side question, without importing the
# (slow to import) packages: "name=version" or "name=missing".
versions=$("$PYTHON" - <<'EOF'
from importlib import metadata, util
def v(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"
# moto[server] = moto + the server extras (flask, flask-cors, werkzeug).
server_ok = all(util.find_spec(m) is not None for m in ("flask", "flask_cors", "werkzeug"))
print("moto=" + (v("moto") if server_ok else "missing"))
print("cfn-lint=" + v("cfn-lint"))
print("cargo-lambda=" + v("cargo-lambda"))
EOF
)
get() { sed -n "s/^$1=//p" <<<"$versions"; }

pip_install() {
    local flags=(--quiet --disable-pip-version-check --no-input)
    # pip >= 22.1 knows --root-user-action; running as root in CI is intended here.
    flags+=(--root-user-action=ignore)
    # A distribution's own Python (PEP 668) refuses a plain pip install.
    if "$PYTHON" -c 'import sys,sysconfig,os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"),"EXTERNALLY-MANAGED")) else 1)'; then
        flags+=(--break-system-packages)
    fi
    "$PYTHON" -m pip install "${flags[@]}" "$@"
}

moto_v=$(get moto)
if [[ $moto_v != 5.* ]]; then
    pip_install "$MOTO_SPEC"
    moto_v=$("$PYTHON" -c 'from importlib.metadata import version; print(version("moto"))')
    "$PYTHON" -c 'import moto.server' # the server really imports
    echo "moto: installed $moto_v"
else
    echo "moto: $moto_v (already installed)"
fi

cfn_v=$(get cfn-lint)
if [[ $cfn_v != 1.* ]]; then
    pip_install "$CFNLINT_SPEC"
    cfn_v=$("$PYTHON" -c 'from importlib.metadata import version; print(version("cfn-lint"))')
    echo "cfn-lint: installed $cfn_v"
else
    echo "cfn-lint: $cfn_v (already installed)"
fi

cl_v=$(get cargo-lambda)
if [[ $cl_v == missing ]] || ! command -v cargo-lambda >/dev/null; then
    # The wheel carries the cargo-lambda binary; it pulls ziglang (the zig linker
    # cargo-lambda uses to cross-compile for arm64/al2023) from PyPI as well.
    pip_install "$CARGO_LAMBDA_SPEC"
    # pyenv: new console scripts need a shim before they are on PATH.
    if ! command -v cargo-lambda >/dev/null && command -v pyenv >/dev/null; then
        pyenv rehash
    fi
    hash -r
    installed=1
else
    installed=0
fi
if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found on PATH (install a Rust toolchain first)" >&2
    exit 1
fi
if ! cl_out=$(cargo lambda --version 2>&1); then
    echo "setup: 'cargo lambda --version' failed: $cl_out" >&2
    echo "setup: is $("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))') on PATH?" >&2
    exit 1
fi
if [[ $installed == 1 ]]; then
    echo "cargo-lambda: installed ($cl_out)"
else
    echo "cargo-lambda: $cl_out (already installed)"
fi
