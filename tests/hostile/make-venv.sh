#!/usr/bin/env bash
# make-venv.sh DIR: a virtualenv in DIR with the pinned requirements.txt (grpcio and
# grpcio-tools from PyPI), for the hostile-client suite. Prints DIR/bin/python last.
# Fails naming the command that failed (say, pip without a way to PyPI).
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
run() { "$@" >&2 || { echo "make-venv.sh: failed: $*" >&2; exit 1; }; }
[ -x "$dir/bin/python" ] || run python3 -m venv "$dir"
# Quiet when everything is installed already: pip checks the pins, downloads nothing.
run "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt"
echo "$dir/bin/python"
