#!/usr/bin/env bash
# System packages the test suite needs (run by `make test`; CI starts on a fresh machine).
# Idempotent: when everything is there it only checks and returns.
set -euo pipefail

# Headless Chromium for tests/test_browser.py (Debian's build; browsers are never downloaded).
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi

# The storage fault tests (tests/test_store_diskfull.py) mount a tiny tmpfs and an ext4 file
# system on a loop device (as root): mount, umount, losetup (package mount), mkfs.ext4 (e2fsprogs).
if ! command -v losetup >/dev/null || ! command -v mkfs.ext4 >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends mount e2fsprogs
fi
