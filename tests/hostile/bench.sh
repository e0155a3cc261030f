#!/usr/bin/env bash
# Honest clients' checkout p99, quiet vs under the hostile suite's floods: the figure
# issue 14 bars at 2x. One three-node TLS cluster (deploy/local/three-nodes.sh) serves
# every run; each round runs `tallyctl bench cycle` quiet, then with the floods looping
# beside it (hostile.py --loop), then with the attacker niced. Prints one JSON line per
# bench run and a table of ratios last.
#
#   tests/hostile/bench.sh DIR [BASE_PORT] [ROUNDS] [CLIENTS] [SECONDS]
#
# Needs release builds (cargo build --release -p tally-server -p tally-cli) and the
# suite's virtualenv (tests/hostile/make-venv.sh target/hostile-venv). The cluster is
# stopped at the end; DIR keeps its logs.
set -euo pipefail
dir=$1
port=${2:-27400}
rounds=${3:-3}
clients=${4:-8}
secs=${5:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
T=$root/target/release/tallyctl
py=$root/target/hostile-venv/bin/python
[ -x "$py" ] || { echo "bench.sh: no $py; run tests/hostile/make-venv.sh target/hostile-venv" >&2; exit 2; }

"$root/deploy/local/three-nodes.sh" start "$dir" "$port" >/dev/null
trap '"$root/deploy/local/three-nodes.sh" stop "$dir" >/dev/null 2>&1 || true' EXIT
export TALLY_CONFIG=$dir/tally.env
[ -e "$dir/pki/mallory.crt" ] || $T pki issue "$dir/pki" --role client --name mallory --host evil >/dev/null
printf 'VENDOR demo\nFEATURE work demo 1.0 permanent 16\nFEATURE target demo 1.0 permanent 2\nFEATURE scarce demo 1.0 permanent 1\n' >"$dir/hostile.txt"
$T license sign "$dir/hostile.txt" --key "$dir/vendor.key" --out "$dir/hostile.lic" >/dev/null
$T license load "$dir/hostile.lic" >/dev/null
ep=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))
# The floods run from two seconds in (once the bench's sessions are open: one flood aims
# at them) until two seconds before the bench ends.
attack() {
  (sleep 2; $1 /usr/bin/time -f '%U %S' -o "$dir/attack.cpu" "$py" "$root/tests/hostile/hostile.py" \
    --endpoints "$ep" --pki "$dir/pki" --honest admin --honest-feature viewer \
    --loop $((secs - 4)) >"$dir/attack.log" 2>&1) &
}
# CPU seconds (user + system) each node has used so far, from /proc.
ticks() { for n in 1 2 3; do awk '{ printf "%d ", $14 + $15 }' "/proc/$(cat "$dir/node$n.pid")/stat"; done; }
cpu() { # cpu BEFORE AFTER: each node's CPU seconds in between, and the attacker's
  local -a b=($1) a=($2)
  printf 'cpu s: nodes %.1f %.1f %.1f' "$(((a[0] - b[0])))e-2" "$(((a[1] - b[1])))e-2" "$(((a[2] - b[2])))e-2"
  # time(1) puts "Command exited with non-zero status N" first when the suite failed.
  [ -z "${3:-}" ] || printf ', attacker %s' "$(tail -1 "$dir/attack.cpu" | awk '{ print $1 + $2 }')"
  echo
}
p99() { sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p'; }
rate() { sed -n 's/.*"ops_per_s":\([0-9.]*\).*/\1/p'; }
rows=()
for r in $(seq 1 "$rounds"); do
  t=$(ticks); q=$($T bench cycle --clients "$clients" --duration "$secs"); echo "quiet $q"; cpu "$t" "$(ticks)"
  t=$(ticks); attack ""; a=$($T bench cycle --clients "$clients" --duration "$secs"); wait
  echo "attacked $a"; cpu "$t" "$(ticks)" x; grep -E "passed|FAIL" "$dir/attack.log" | cut -c1-300
  t=$(ticks); attack "nice -n 19"; n=$($T bench cycle --clients "$clients" --duration "$secs"); wait
  echo "niced $n"; cpu "$t" "$(ticks)" x; grep -E "passed|FAIL" "$dir/attack.log" | cut -c1-300
  rows+=("$r $(echo "$q" | p99) $(echo "$q" | rate) $(echo "$a" | p99) $(echo "$a" | rate) $(echo "$n" | p99) $(echo "$n" | rate)")
done
echo "| run | quiet p99 ms (cycles/s) | attacked p99 ms (cycles/s) | ratio | niced attacker p99 ms (cycles/s) | ratio |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  set -- $row
  awk -v r="$1" -v q="$2" -v qr="$3" -v a="$4" -v ar="$5" -v n="$6" -v nr="$7" \
    'BEGIN { printf "| %s | %.1f (%.0f) | %.1f (%.0f) | %.2f | %.1f (%.0f) | %.2f |\n", r, q, qr, a, ar, a / q, n, nr, n / q }'
done
