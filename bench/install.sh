#!/usr/bin/env bash
# What `make bench` needs besides the venv: wrk (Debian's package) and bench/requirements.txt.
# Idempotent: when everything is there it only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    # Other installs may hold the dpkg lock for a while: wait for it instead of failing.
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends wrk
fi
.venv/bin/python -m pip install -q -r bench/requirements.txt
