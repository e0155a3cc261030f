#!/usr/bin/env bash
# A real three-process Tally cluster on loopback, with its data under one directory.
#
#   three-nodes.sh start DIR [BASE_PORT]   start nodes 1-3 on BASE_PORT..BASE_PORT+2
#                                          (default 27000), form the cluster on first
#                                          start, load a license, print the endpoints
#   three-nodes.sh stop DIR                stop every node (SIGTERM, then SIGKILL after 10 s)
#   three-nodes.sh restart DIR N           start node N again on its data (after a kill)
#
# Keys and license: DIR/vendor.pub is trusted if it exists, else DIR/vendor.key and
# DIR/vendor.pub are generated. DIR/license.lic is loaded if it exists, else a demo
# license is signed with DIR/vendor.key into DIR/demo.lic and loaded. Every node keeps
# its data in DIR/nodeN (fsync on every log append: Tally has no way to turn it off),
# logs in DIR/nodeN.log and its process id in DIR/nodeN.pid.
#
# HTTP: each node's dashboard, /metrics, /healthz and /readyz listen on
# TALLY_HTTP_BASE..TALLY_HTTP_BASE+2, by default BASE_PORT+80.. (27080-27082), printed
# at start; TALLY_HTTP_BASE=free puts them on free ports that each node's log names
# ("http serving"). A port already taken stops `start` before any node runs, naming it.
#
# TLS: every node listens and dials its peers over TLS. A site CA is made in DIR/pki on
# first start (tallyctl pki), with a peer certificate per node and an administrator's
# certificate; DIR/tally.env holds the TALLY_* variables (endpoints, CA, the admin's
# certificate and key) that give tallyctl admin access once sourced: `. DIR/tally.env`.
#
# Config: TALLY_NODE_CONFIG=FILE (a node TOML, e.g. just a [limits] table) is given to
# every node as --config; the script's flags (ports, data, TLS, cluster name) win over it.
#
# Binaries: $TALLY_BIN_DIR if set (it must hold tallyd and tallyctl), else the
# workspace's target/release, built first if missing.
#
# The last line `start` prints is the client endpoints, comma-separated, for
# `tallyctl --endpoints` or TALLY_ENDPOINTS.
set -euo pipefail

die() { echo "three-nodes.sh: $*" >&2; exit 1; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
mkdir -p "$dir" 2>/dev/null || true
# Absolute, so tally.env works from anywhere.
dir=$(cd "$dir" 2>/dev/null && pwd) || die "cannot use directory $2"
root=$(cd "$(dirname "$0")/../.." && pwd)

bins() {
  if [ -n "${TALLY_BIN_DIR:-}" ]; then
    bin=$TALLY_BIN_DIR
  else
    bin=$root/target/release
    if [ ! -x "$bin/tallyd" ] || [ ! -x "$bin/tallyctl" ]; then
      echo "three-nodes.sh: building tallyd and tallyctl (release) ..." >&2
      (cd "$root" && cargo build --release --bin tallyd --bin tallyctl >&2)
    fi
  fi
  [ -x "$bin/tallyd" ] && [ -x "$bin/tallyctl" ] || die "no tallyd/tallyctl in $bin"
}

# Running, and not a zombie (in a container, PID 1 may never reap an orphan).
alive() {
  local pid
  [ -f "$dir/node$1.pid" ] || return 1
  pid=$(cat "$dir/node$1.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  [ ! -r "/proc/$pid/stat" ] || ! awk '{ sub(/.*\) /, ""); exit ($1 == "Z") ? 0 : 1 }' "/proc/$pid/stat"
}

# The HTTP port (dashboard, /metrics, /healthz, /readyz) of node N: the HTTP base chosen at
# `start` + N - 1, or any free port (the node's log names it) if that was `free`.
http_addr() {
  local hb
  hb=$(cat "$dir/http_base" 2>/dev/null || true)
  if [ -n "$hb" ]; then echo "127.0.0.1:$((hb + $1 - 1))"; else echo "127.0.0.1:0"; fi
}

# Fails, naming the port and who needed it, if something already listens on one of node
# N's ports (a tallyd left running, another cluster): at once, instead of a node that
# exits on start and a leader that never comes.
ports_free() {
  local n=$1 port what
  for what in grpc http; do
    if [ $what = grpc ]; then port=$((base + n - 1)); else port=$(http_addr "$n"); port=${port##*:}; fi
    [ "$port" != 0 ] || continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port (node $n's $([ $what = grpc ] && echo gRPC || echo HTTP) port) is taken: something already listens on 127.0.0.1:$port; stop it, or choose other ports (BASE_PORT, TALLY_HTTP_BASE)"
    fi
  done
}

# A name of this cluster's own, the same on every start: derived from DIR.
cluster_name() {
  echo "local-$(printf %s "$dir" | cksum | cut -d' ' -f1)"
}

# tallyctl with this cluster's admin credentials.
ctl() {
  TALLY_CONFIG="$dir/tally.env" "$bin/tallyctl" "$@"
}

# The site CA and certificates, made once; tally.env written every start.
pki() {
  local p=$dir/pki
  if [ ! -f "$p/ca.key" ]; then
    "$bin/tallyctl" pki init "$p" --site "three-nodes $dir" >&2
  fi
  for n in 1 2 3; do
    [ -f "$p/node$n.crt" ] || "$bin/tallyctl" pki issue "$p" --role peer --name "node$n" >&2
  done
  [ -f "$p/admin.crt" ] || "$bin/tallyctl" pki issue "$p" --role admin --name admin >&2
  cat >"$dir/tally.env" <<ENV
export TALLY_ENDPOINTS=$(endpoints)
export TALLY_CA=$p/ca.crt
export TALLY_CERT=$p/admin.crt
export TALLY_KEY=$p/admin.key
ENV
}

endpoints() {
  echo "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
}

vendor_name() {
  # The vendor the trusted key stands for: the license's VENDOR line, else the demo's.
  local v=""
  [ -f "$dir/license.lic" ] && v=$(awk '$1 == "VENDOR" { print $2; exit }' "$dir/license.lic")
  echo "${v:-demo}"
}

start_node() {
  local n=$1 init=() config=()
  alive "$n" && die "node $n is already running (pid $(cat "$dir/node$n.pid"))"
  # Only a brand-new cluster is formed; a node with data rejoins by itself.
  if [ "$n" = 1 ] && [ "${2:-}" = fresh ]; then
    init=(--init "1=127.0.0.1:$base,2=127.0.0.1:$((base + 1)),3=127.0.0.1:$((base + 2))")
  fi
  [ -z "${TALLY_NODE_CONFIG:-}" ] || config=(--config "$TALLY_NODE_CONFIG")
  "$bin/tallyd" run "${config[@]}" --cluster-name "$(cluster_name)" --id "$n" --listen "127.0.0.1:$((base + n - 1))" --data "$dir/node$n" \
    --http "$(http_addr "$n")" \
    --vendor-key "$(vendor_name)=$dir/vendor.pub" "${init[@]}" \
    --tls-cert "$dir/pki/node$n.crt" --tls-key "$dir/pki/node$n.key" --tls-ca "$dir/pki/ca.crt" \
    >>"$dir/node$n.log" 2>&1 </dev/null &
  echo $! >"$dir/node$n.pid"
}

wait_leader() {
  local deadline=$((SECONDS + 30))
  until ctl --json status 2>/dev/null \
      | grep -q '"leader_id":[1-9]'; do
    [ $SECONDS -lt $deadline ] || die "no leader elected within 30 s; see $dir/node*.log"
    for n in 1 2 3; do
      alive "$n" || die "node $n exited; its log says: $(tail -n 3 "$dir/node$n.log")"
    done
    sleep 0.2
  done
}

case $cmd in
  start)
    base=${3:-27000}
    [[ $base =~ ^[0-9]+$ ]] && [ "$base" -gt 0 ] && [ "$base" -le 65533 ] \
      || die "BASE_PORT must be a number from 1 to 65533, not '$base'"
    bins
    echo "$base" >"$dir/base_port"
    hb=${TALLY_HTTP_BASE:-$((base + 80))}
    [ "$hb" = free ] && hb=""
    [ -z "$hb" ] || { [[ $hb =~ ^[0-9]+$ ]] && [ "$hb" -gt 0 ] && [ "$hb" -le 65533 ]; } \
      || die "TALLY_HTTP_BASE must be a number from 1 to 65533 or 'free', not '$hb' (default: BASE_PORT + 80)"
    echo "$hb" >"$dir/http_base"
    for n in 1 2 3; do alive "$n" || ports_free "$n"; done
    pki
    if [ ! -f "$dir/vendor.pub" ]; then
      "$bin/tallyctl" license keygen --out "$dir" >&2
    fi
    fresh=fresh
    [ -e "$dir/node1" ] && fresh=""
    for n in 1 2 3; do start_node "$n" "$fresh"; done
    wait_leader
    if [ -f "$dir/license.lic" ]; then
      lic=$dir/license.lic
    else
      [ -f "$dir/vendor.key" ] \
        || die "$dir/vendor.pub is trusted but there is no $dir/vendor.key to sign the demo license, and no $dir/license.lic"
      "$bin/tallyd" demo-license >"$dir/demo.unsigned"
      "$bin/tallyctl" license sign "$dir/demo.unsigned" --key "$dir/vendor.key" --out "$dir/demo.lic"
      lic=$dir/demo.lic
    fi
    ctl license load "$lic" >&2
    echo "three nodes up, data in $dir, pids $(cat "$dir"/node{1,2,3}.pid | tr '\n' ' ')" >&2
    if [ -n "$hb" ]; then
      echo "dashboards: https://127.0.0.1:$hb/ https://127.0.0.1:$((hb + 1))/ https://127.0.0.1:$((hb + 2))/ (trust $dir/pki/ca.crt)" >&2
    fi
    endpoints
    ;;
  stop)
    for n in 1 2 3; do
      if alive "$n"; then kill -TERM "$(cat "$dir/node$n.pid")"; fi
    done
    for n in 1 2 3; do
      deadline=$((SECONDS + 10))
      while alive "$n" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
      if alive "$n"; then
        echo "three-nodes.sh: node $n ignored SIGTERM for 10 s; killing it" >&2
        kill -KILL "$(cat "$dir/node$n.pid")"
      fi
      rm -f "$dir/node$n.pid"
    done
    ;;
  restart)
    n=${3:-}
    [[ $n =~ ^[123]$ ]] || die "restart takes a node number, 1 to 3"
    [ -f "$dir/base_port" ] || die "$dir was never started (no $dir/base_port)"
    base=$(cat "$dir/base_port")
    bins
    alive "$n" || ports_free "$n"
    start_node "$n"
    echo "node $n started again (pid $(cat "$dir/node$n.pid"))" >&2
    endpoints
    ;;
  *) usage ;;
esac
