#!/usr/bin/env bash
# Re-resolve the Python stack from the ranges in envs/requirements.txt and write the exact
# versions to envs/requirements.lock, which envs/setup.sh installs. Run it to upgrade the
# stack, then run the tests (README) before committing the new lock:
#   bash envs/lock.sh && bash envs/setup.sh && <the README's test command>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
PIP=("$scratch/venv/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip setuptools wheel
"${PIP[@]}" install "$TORCH" -r envs/requirements.txt
lock="$(mktemp envs/.requirements.lock.XXXXXX)"
{
    echo "# Exact versions of the whole Python stack that CI tests, written by envs/lock.sh from"
    echo "# the ranges in envs/requirements.txt on $(date -u +%Y-%m-%d). envs/setup.sh installs"
    echo "# these; uni2ts and this project are installed after them, without dependencies."
    # A local build tag (+cpu) stays out so that GPU machines get their own build.
    "${PIP[@]}" freeze --exclude-editable | grep -v -i -E '^(uni2ts|vitalfm|pip|setuptools|wheel)==' |
        sed -E 's/^(torch==[^+]+)\+.*/\1/'
} > "$lock"
mv "$lock" envs/requirements.lock
echo "lock: wrote envs/requirements.lock ($(grep -c '==' envs/requirements.lock) packages)"
