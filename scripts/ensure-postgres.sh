#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use answers at ONECARD_TEST_POSTGRES_URL.
# On a Debian machine, as root, install and start a local cluster if nothing answers; anywhere
# else fail with a clear message. ONECARD_TEST_POSTGRES=0 skips PostgreSQL (its tests are skipped).
set -euo pipefail

url="${ONECARD_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}"
py="${VENV_PYTHON:-.venv/bin/python}"

if [ "${ONECARD_TEST_POSTGRES:-1}" = 0 ]; then
    echo "ONECARD_TEST_POSTGRES=0: not using PostgreSQL; its tests will be skipped"
    exit 0
fi

probe() {
    "$py" - "$url" <<'PY' 2>/dev/null
import sys
import psycopg
from sqlalchemy.engine import make_url
u = make_url(sys.argv[1])
psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                password=u.password, dbname=u.database, connect_timeout=3).close()
PY
}

if probe; then
    exit 0
fi

if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL does not answer at $url." >&2
    echo "Start one there, set ONECARD_TEST_POSTGRES_URL, or run the tests without it:" >&2
    echo "  ONECARD_TEST_POSTGRES=0 make test" >&2
    exit 1
fi

installed_here=0
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "installing PostgreSQL (Debian package postgresql)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    installed_here=1
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
if [ ! -d "/etc/postgresql/$version/main" ]; then
    pg_createcluster "$version" main >/dev/null
    installed_here=1
fi
if [ "$installed_here" = 1 ]; then
    # A cluster we made for the tests: let the postgres role in over loopback without a password.
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q "onecard-tests" "$hba"; then
        sed -i '1i host all postgres 127.0.0.1/32 trust # onecard-tests\nhost all postgres ::1/128 trust # onecard-tests' "$hba"
    fi
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
for _ in $(seq 1 30); do
    if probe; then
        echo "PostgreSQL $version is running"
        exit 0
    fi
    sleep 1
done
echo "PostgreSQL $version was started but does not accept connections at $url" >&2
exit 1
