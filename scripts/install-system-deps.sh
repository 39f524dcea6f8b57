#!/usr/bin/env bash
# System packages onecard needs, installed with apt on Debian when missing (as root).
# Elsewhere it checks and names what is missing.
set -euo pipefail

missing=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v gcc >/dev/null || missing+=(build-essential python3-dev)
# PC/SC: pyscard is built against libpcsclite with swig; the card tests run pcscd with vsmartcard's
# virtual reader driver (vpcd) and look at it with pcsc_scan and scriptor (pcsc-tools).
command -v swig >/dev/null || missing+=(swig)
[ -e /usr/include/PCSC/winscard.h ] || missing+=(libpcsclite-dev)
command -v pcscd >/dev/null || [ -x /usr/sbin/pcscd ] || missing+=(pcscd)
[ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || missing+=(vsmartcard-vpcd)
command -v pcsc_scan >/dev/null || missing+=(pcsc-tools)
# The console: receipts are PDFs made by weasyprint (pango) with a CJK font, looked at as PNG with
# pdftoppm (poppler-utils); the browser tests drive Debian's chromium with Playwright.
ldconfig -p 2>/dev/null | grep -q libpangoft2-1.0.so.0 || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Remote meters: serial pty pairs for the RTU, DL/T 645 and CJ/T 188 tests (socat), and an
# independent Modbus client that reads the meter emulator (mbpoll).
command -v socat >/dev/null || missing+=(socat)
command -v mbpoll >/dev/null || missing+=(mbpoll)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
else
    echo "onecard needs these system packages: ${missing[*]}" >&2
    echo "install them (on Debian: apt-get install ${missing[*]}) and run make again" >&2
    exit 1
fi
