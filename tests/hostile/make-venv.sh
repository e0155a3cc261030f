#!/usr/bin/env bash
# make-venv.sh DIR [REQUIREMENTS]: a virtualenv in DIR with pinned requirements from
# PyPI: by default this directory's requirements.txt (grpcio and grpcio-tools, for the
# hostile-client suite); deploy/k8s/requirements.txt (kubernetes-validate) for the
# manifest checks. Prints DIR/bin/python last. Fails naming the command that failed
# (say, pip without a way to PyPI).
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
reqs=${2:-$here/requirements.txt}
run() { "$@" >&2 || { echo "make-venv.sh: failed: $*" >&2; exit 1; }; }
[ -x "$dir/bin/python" ] || run python3 -m venv "$dir"
# Quiet when everything is installed already: pip checks the pins, downloads nothing.
run "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$reqs"
echo "$dir/bin/python"
