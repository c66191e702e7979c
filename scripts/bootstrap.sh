#!/bin/sh
# Create the project's virtual environment, installing Debian's python3-venv when it is missing.
set -eu
PYTHON="${1:-python3}"
VENV="${2:-.venv}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "karkhana needs Python 3.11 or newer: install it (Debian: apt-get install python3)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "karkhana needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)" >&2
  exit 1
fi
if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
  rm -rf "$VENV"
  version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing python$version-venv (Debian leaves venv out of the base Python)" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "python$version-venv" || $SUDO apt-get install -y -qq python3-venv
    "$PYTHON" -m venv "$VENV"
  else
    echo "cannot create a virtual environment: install the venv module for $PYTHON" >&2
    exit 1
  fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
