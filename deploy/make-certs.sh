#!/usr/bin/env bash
# Makes a site CA and the certificates of a Tally deployment, with `tallyctl pki`.
#
#   make-certs.sh DIR NODE=HOST[,HOST...] ... [--admin NAME]... [--client NAME]...
#
# e.g.  make-certs.sh /srv/tally-pki 1=tally1.example.com,10.0.0.11 \
#           2=tally2.example.com 3=tally3.example.com --admin alice --client ws-0042
#
# DIR/ca.crt goes to every node and client; DIR/ca.key stays here (offline, backed up).
# DIR/nodeN.crt/.key go to node N (give it every name and address clients dial it by);
# DIR/NAME.crt/.key to each administrator (role admin) and workstation (role client).
# A CA already in DIR is reused, so running it again adds certificates. Set TALLYCTL to
# the tallyctl binary if it is not on PATH.
set -euo pipefail
die() { echo "make-certs.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
dir=$1; shift
ctl=${TALLYCTL:-tallyctl}
command -v "$ctl" >/dev/null || die "no tallyctl (set TALLYCTL=/path/to/tallyctl)"
[ -f "$dir/ca.key" ] || "$ctl" pki init "$dir" --site "${TALLY_SITE:-tally site}"
while [ $# -gt 0 ]; do
  case $1 in
    --admin|--client)
      [ $# -ge 2 ] || die "$1 needs a name"
      "$ctl" pki issue "$dir" --role "${1#--}" --name "$2"
      shift 2 ;;
    [0-9]*=*)
      n=${1%%=*}; hosts=${1#*=}
      [[ $n =~ ^[0-9]+$ ]] || die "node ids are numbers: '$1'"
      args=()
      IFS=, read -ra hs <<<"$hosts"
      for h in "${hs[@]}"; do args+=(--host "$h"); done
      "$ctl" pki issue "$dir" --role peer --name "node$n" "${args[@]}"
      shift ;;
    *) die "expected NODE=HOST[,HOST...], --admin NAME or --client NAME, not '$1'" ;;
  esac
done
