#!/usr/bin/env bash
# Copies the Compose cluster's administrator identity to the host and writes a tally.env
# for tallyctl:
#
#   deploy/compose/admin.sh DIR [docker-compose options, e.g. -p PROJECT]
#   . DIR/tally.env && tallyctl status
#
# The admin certificate and key live in the `ca` volume, beside the site CA's key, which
# no node mounts; `docker cp` from the stopped one-shot `admin-cert` container reads them
# out with this user's ownership (the files inside belong to uid 10001, mode 0600).
# TALLY_ADVERTISE_HOST and TALLY_GRPC_PORT1..3 must be as for `up`.
set -euo pipefail
die() { echo "admin.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: admin.sh DIR [docker-compose options]"
dir=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
# Debian's docker-compose (1.29), else the `docker compose` plugin.
if command -v docker-compose >/dev/null; then
  compose=(docker-compose -f "$here/docker-compose.yml" "$@")
else
  compose=(docker compose -f "$here/docker-compose.yml" "$@")
fi
cid=$("${compose[@]}" ps -a -q admin-cert)
[ -n "$cid" ] || die "no admin-cert container: run \`${compose[*]} up -d\` first"
mkdir -p "$dir"
# Absolute, so tally.env works from anywhere.
dir=$(cd "$dir" && pwd)
# The key is written 0600 by docker cp as it was inside; keep the directory private too.
chmod 0700 "$dir"
for f in ca.crt admin.crt admin.key; do
  docker cp "$cid:/etc/tally/ca/$f" "$dir/$f"
done
chmod 0600 "$dir/admin.key"
host=${TALLY_ADVERTISE_HOST:-127.0.0.1}
cat >"$dir/tally.env" <<ENV
export TALLY_ENDPOINTS=$host:${TALLY_GRPC_PORT1:-27000},$host:${TALLY_GRPC_PORT2:-27001},$host:${TALLY_GRPC_PORT3:-27002}
export TALLY_CA=$dir/ca.crt
export TALLY_CERT=$dir/admin.crt
export TALLY_KEY=$dir/admin.key
ENV
echo "$dir/tally.env"
