#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs (kcat from Debian's
# packages when missing, nftables and iproute2 for the cluster tests, the Python clients in
# .venv), then runs fmt, clippy, every Rust
# test (unit, property, fault-injection, black-box over the wire) and the Python
# end-to-end tests with kafka-python, confluent-kafka, aiokafka and kcat.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
REQ="$ROOT/tests/python/requirements.txt"

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
# Debian packages: kcat (a client under test), nftables and iproute2 (the cluster tests cut
# links between broker hosts in network namespaces), openssl (the TLS tests make their
# certificates with it at run time).
missing=""
command -v kcat >/dev/null 2>&1 || command -v kafkacat >/dev/null 2>&1 || missing="$missing kcat"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# Recreate the venv when requirements.txt changed since it was built.
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$stamp"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
cargo build --workspace --quiet

step "rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

step "python end-to-end tests"
# Broker data dirs go under target/ (the build's disk, which takes O_DIRECT; /tmp may be tmpfs).
OSPREY_BIN="$ROOT/target/debug/osprey" "$VENV/bin/python" -m pytest -q --basetemp "$ROOT/target/pytest-tmp" \
  "$ROOT/tests/python" "$@"
