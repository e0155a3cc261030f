#!/usr/bin/env bash
# rehearse.sh BIN_DIR PYTHON WORK_DIR: runs the StatefulSet's pods as real tallyd
# processes on this machine, with the arguments statefulset.yaml gives them and the
# ConfigMap's tally.toml and init, under the pods' DNS names, and walks README.md's
# procedures: the cluster forms by itself, scales to five with tallyctl node add/voters,
# and a follower's volume is replaced. Exits non-zero, saying where, if any step fails.
#
# BIN_DIR holds tallyd and tallyctl; PYTHON has PyYAML (the k8s-venv of the tests).
# Needs root: it re-runs itself under `unshare --mount --net`, in a network namespace of
# its own (only loopback; no port of the machine is used) with a private /etc/hosts
# that maps tally-K.tally-peers.tally.svc to 127.0.0.(11+K). The one deviation from a
# pod: each process listens on its own loopback address and keeps its data in WORK_DIR
# (--listen, --http, --data), since five share one network namespace and one disk.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
B=$(cd "$1" && pwd); PY=$2; D=$3
K=$(cd "$(dirname "$0")" && pwd)
if [ -z "${TALLY_REHEARSAL_INSIDE:-}" ]; then
  exec env TALLY_REHEARSAL_INSIDE=1 unshare --mount --net "$0" "$@"
fi
ip link set lo up

rm -rf "$D"; mkdir -p "$D/tls"
say() { echo "rehearse: $*"; }
fail() { echo "rehearse: FAILED: $*" >&2; for f in "$D"/tally-*.log; do echo "--- $f" >&2; tail -n 5 "$f" >&2; done; exit 1; }

{ cat /etc/hosts; for k in 0 1 2 3 4; do echo "127.0.0.$((11 + k)) tally-$k.tally-peers.tally.svc"; done
  echo "127.0.0.11 tally.tally.svc"; } >"$D/hosts"
mount --bind "$D/hosts" /etc/hosts

# Certificates as README.md's step 1 makes them, renamed as the Secret holds them.
names=()
for k in 0 1 2 3 4; do
  names+=("$((k + 1))=tally-$k.tally-peers.tally.svc,tally-$k.tally-peers.tally.svc.cluster.local,tally.tally.svc,tally.tally.svc.cluster.local")
done
TALLYCTL=$B/tallyctl "$K/../make-certs.sh" "$D/pki" "${names[@]}" --admin admin >"$D/pki.log" 2>&1 \
  || fail "make-certs.sh: $(tail -n 3 "$D/pki.log")"
cp "$D/pki/ca.crt" "$D/tls/"
for k in 0 1 2 3 4; do
  cp "$D/pki/node$((k + 1)).crt" "$D/tls/tally-$k.crt"
  cp "$D/pki/node$((k + 1)).key" "$D/tls/tally-$k.key"
done

"$PY" - "$K" "$D" <<'PY'
import sys, yaml
k, d = sys.argv[1], sys.argv[2]
cm = yaml.safe_load(open(f"{k}/configmap.yaml"))["data"]
open(f"{d}/tally.toml", "w").write(cm["tally.toml"])
open(f"{d}/init", "w").write(cm["init"])
ss = yaml.safe_load(open(f"{k}/statefulset.yaml"))
c = ss["spec"]["template"]["spec"]["containers"][0]
open(f"{d}/args", "w").write("\n".join(c["command"] + c["args"]) + "\n")
PY
init=$(cat "$D/init")

# Pod tally-K as the kubelet would start it: $(VAR)s expanded, the mounts at WORK_DIR.
start() {
  local pod=$1 init=$2 k=${1#tally-} a=() l
  while IFS= read -r l; do
    l=${l//'$(POD_NAME)'/$pod}; l=${l//'$(POD_NAMESPACE)'/tally}; l=${l//'$(TALLY_INIT)'/$init}
    l=${l//\/etc\/tally\/config/$D}; l=${l//\/etc\/tally\/tls/$D/tls}
    a+=("$l")
  done <"$D/args"
  [ "${a[0]}" = tallyd ] || fail "the container's command is ${a[0]}, not tallyd"
  "$B/tallyd" "${a[@]:1}" --listen "127.0.0.$((11 + k)):27000" --http "127.0.0.$((11 + k)):27080" \
    --data "$D/data-$pod" >>"$D/$pod.log" 2>&1 </dev/null &
  echo $! >"$D/$pod.pid"
}
# SIGTERM, as the kubelet stops a pod; SIGKILL (and a failure) after 10 s. The nodes are
# this shell's children, so `wait` reaps them (kill -0 would see a zombie as alive).
stop() {
  local p w rc=0
  p=$(cat "$D/$1.pid")
  kill -TERM "$p"
  (sleep 10; kill -9 "$p" 2>/dev/null) & w=$!
  wait "$p" || rc=$?
  kill "$w" 2>/dev/null || true
  rm -f "$D/$1.pid"
  [ "$rc" -eq 0 ] || fail "$1 exited $rc on SIGTERM"
}
cleanup() { local f; for f in "$D"/*.pid; do [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done; return 0; }
trap cleanup EXIT

export TALLY_ENDPOINTS=tally.tally.svc:27000 TALLY_CA=$D/pki/ca.crt TALLY_CERT=$D/pki/admin.crt TALLY_KEY=$D/pki/admin.key HOME=/nonexistent
ctl() { "$B/tallyctl" "$@"; }
status() { ctl --json status 2>/dev/null || true; }
# Waits up to 30 s for `tallyctl status` to satisfy a Python expression over `v`.
until_status() {
  local what=$1 cond=$2
  for _ in $(seq 150); do
    if status | "$PY" -c "import json, sys; v = json.load(sys.stdin); sys.exit(0 if ($cond) else 1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  fail "$what: last status $(status)"
}

say "forming: tally-0, tally-1, tally-2 with init from the ConfigMap"
for k in 0 1 2; do start "tally-$k" "$init"; done
until_status "three voters and a leader" "v['verdict'] == 'healthy' and sorted(v['voters']) == [1, 2, 3]"
for k in 0 1 2; do
  "$PY" - "$D/pki/ca.crt" "tally-$k.tally-peers.tally.svc" <<'PY' || fail "tally-$k's /readyz"
import ssl, sys, time, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
for _ in range(100):
    try:
        body = urllib.request.urlopen(f"https://{sys.argv[2]}:27080/readyz", context=ctx, timeout=3).read()
        print(f"rehearse: {sys.argv[2]} /readyz: {body.decode().strip()}")
        sys.exit(0)
    except Exception as e:
        last = e
        time.sleep(0.2)
sys.exit(f"{sys.argv[2]} /readyz: {last}")
PY
done

say "scaling to five"
for k in 3 4; do start "tally-$k" "$init"; done
ctl node add 4 tally-3.tally-peers.tally.svc:27000 || fail "node add 4"
ctl node add 5 tally-4.tally-peers.tally.svc:27000 || fail "node add 5"
ctl node voters 1,2,3,4,5 || fail "node voters 1,2,3,4,5"
until_status "five voters" "v['verdict'] == 'healthy' and sorted(v['voters']) == [1, 2, 3, 4, 5]"

leader=$(status | "$PY" -c "import json, sys; print(json.load(sys.stdin)['leader_id'])")
n=3; [ "$leader" != 3 ] || n=4
pod=tally-$((n - 1))
say "replacing $pod's volume (node $n; the leader is node $leader), init emptied"
ctl node remove "$n" || fail "node remove $n"
stop "$pod"
rm -rf "$D/data-$pod"
start "$pod" ""
ctl node add "$n" "$pod.tally-peers.tally.svc:27000" || fail "node add $n"
ctl node voters 1,2,3,4,5 || fail "node voters after the replacement"
until_status "five voters after the replacement" "v['verdict'] == 'healthy' and sorted(v['voters']) == [1, 2, 3, 4, 5] and len({n['applied_index'] for n in v['nodes']}) == 1"
ctl status | sed 's/^/rehearse: /'
if grep -l panicked "$D"/tally-*.log; then fail "a node panicked"; fi
for k in 0 1 2 3 4; do stop "tally-$k"; done
say "ok"
