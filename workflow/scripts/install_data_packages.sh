#!/usr/bin/env bash
# Install the Debian package the mini benchmark is built from (Fashion-MNIST, MIT). Idempotent: does nothing when the
# files are present. As root it installs; otherwise it prints the command and exits 0, and `prepare` then fails with
# the same command in its message (so `make setup` never needs sudo).
set -euo pipefail

PACKAGE=dataset-fashion-mnist
MARKER=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
COMMAND="sudo apt-get update && sudo apt-get install -y $PACKAGE"

if [[ -f "$MARKER" ]]; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "install_data_packages: $PACKAGE is missing; install it with: $COMMAND" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_data_packages: no apt-get here; install $PACKAGE by hand or set data.allow_download=true" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$PACKAGE"
test -f "$MARKER"
