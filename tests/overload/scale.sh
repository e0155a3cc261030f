#!/usr/bin/env bash
# One overload sitting for issue 24: a fresh three-node TLS cluster, `tallyctl bench scale`
# (its JSON: heartbeat batch failures by cause, sessions lost while opening and while
# living), then what each node saw: heartbeat refusals by reason, the Raft term, and the
# leader's quorum-acknowledgement age histogram (sampled every 100 ms).
#
#   tests/overload/scale.sh DIR [BASE_PORT] [SESSIONS] [TTL_S]
#
# Needs release builds (cargo build --release -p tally-server -p tally-cli). HTTP ports
# are BASE_PORT+80..+82. The bench kills the leader for its failover phase; the cluster
# is stopped at the end and DIR keeps the logs and metrics (DIR/metrics-nodeN.txt).
set -euo pipefail
dir=$1
port=${2:-28000}
sessions=${3:-20000}
ttl=${4:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
T=$root/target/release/tallyctl
TALLY_HTTP_BASE=$((port + 80)) "$root/deploy/local/three-nodes.sh" start "$dir" "$port" >/dev/null
trap '"$root/deploy/local/three-nodes.sh" stop "$dir" >/dev/null 2>&1 || true' EXIT
export TALLY_CONFIG=$dir/tally.env
echo "commit $(git -C "$root" rev-parse --short HEAD), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
$T bench scale --sessions "$sessions" --ttl "$ttl" --settle "$ttl" --pid-dir "$dir" --json
for n in 1 2 3; do
  m=$dir/metrics-node$n.txt
  curl -sk --http1.1 --max-time 5 "https://127.0.0.1:$((port + 80 + n - 1))/metrics" >"$m" || { echo "node $n: no metrics (killed by the failover phase)"; continue; }
  echo "node $n: $(grep -E '^tally_raft_term ' "$m")"
  grep -E '^tally_heartbeats_(refused|waited)_total' "$m" | sed 's/^/  /'
  grep -E '^tally_(raft_quorum_ack_age_ms|raft_append_rtt_ms|log_write_ms|runtime_lag_ms|raft_runtime_lag_ms|thread_lag_ms)_(bucket|count|sum)|^tally_raft_appends_overran_total' "$m" | sed 's/^/  /'
done
