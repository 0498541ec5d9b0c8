#!/usr/bin/env bash
# Build the Benthos peer (bench/peers/benthos) into bench/peers/bin/benthos-peer with the Go
# toolchain; modules come from the Go module proxy, pinned by go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")/benthos"
command -v go >/dev/null || { echo "go not found: install Go to build the Benthos peer" >&2; exit 1; }
mkdir -p ../bin
if [ ! -x ../bin/benthos-peer ] || [ main.go -nt ../bin/benthos-peer ] || [ go.sum -nt ../bin/benthos-peer ]; then
    echo "building the Benthos peer (benthos v4.60.0)..."
    go build -trimpath -o ../bin/benthos-peer .
fi
../bin/benthos-peer --version
