#!/usr/bin/env bash
# Set up everything the study needs, idempotently: PostgreSQL server binaries (for the embedded
# database), a Python venv at .venv with the pinned CPU stack, uni2ts (--no-deps), and this
# project in editable mode. Reruns are quick: nothing is reinstalled unless the pins changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

have_pg_server() {
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_pg_server; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's postgresql server package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        echo "setup: PostgreSQL server binaries (initdb, postgres) are missing." >&2
        echo "  Install them (Debian/Ubuntu: sudo apt-get install postgresql; conda:" >&2
        echo "  conda install -c conda-forge postgresql) or set PG_BIN, or use an external" >&2
        echo "  MIMIC-III server (database.source: external in config.yaml)." >&2
        exit 1
    fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
stamp_file="$VENV/.vitalfm-setup"
stamp="$(cat envs/requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
    echo "setup: installing the Python stack into $VENV (first run: a few minutes)"
    "${PIP[@]}" install -U pip setuptools wheel
    # torch is pinned on every pip command so no resolve can swap it for another build.
    "${PIP[@]}" install torch==2.13.0
    # The exact versions CI tests (envs/requirements.lock, from the ranges in
    # envs/requirements.txt by envs/lock.sh, which is also how to upgrade them).
    "${PIP[@]}" install torch==2.13.0 -r envs/requirements.lock
    # uni2ts pins torch<2.5 / numpy 1.26 in its metadata but works with this stack: no deps.
    "${PIP[@]}" install --no-deps uni2ts==2.0.0
    "${PIP[@]}" install --no-deps -e .
    echo "$stamp" > "$stamp_file"
fi
"$VENV/bin/python" -c "import vitalfm, torch, snakemake, psycopg2, pyarrow" || {
    echo "setup: the environment in $VENV is broken; delete it and rerun envs/setup.sh" >&2
    exit 1
}
echo "setup: ready ($VENV, torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
