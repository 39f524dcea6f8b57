#!/usr/bin/env bash
# System packages onecard needs, installed with apt on Debian when missing (as root).
# Elsewhere it checks and names what is missing.
set -euo pipefail

missing=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v gcc >/dev/null || missing+=(build-essential python3-dev)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "onecard needs these system packages: ${missing[*]}" >&2
    echo "install them (on Debian: apt-get install ${missing[*]}) and run make again" >&2
    exit 1
fi
