"""The hostile-client suite: throws every attack at a running Tally cluster and checks
each refusal and that nothing honest clients can see changed. Written against the
.proto with Python's grpcio only. Prints one line per attack and, last,
"N passed, M failed"; exits non-zero on any failure.

  hostile.py --endpoints A,B,C --pki DIR [--loop SECONDS]

--loop repeats the floods (no connection attacks, no session flood) for the benchmark."""

import argparse
import sys
import time
import traceback

import attacks_conn as conn
import attacks_creds as creds
import attacks_input as inp
from ctx import Ctx

SUITE = [
    creds.quiet_sees_writes,
    creds.flood_unknown_sessions,
    creds.flood_wrong_secrets,
    creds.flood_followers,
    creds.lockout,
    creds.replay_across_sessions,
    creds.held_refusals,
    inp.huge_and_empty,
    inp.queue_floods,
    inp.session_flood,
    conn.half_open_tls,
    conn.slowloris,
]
# The floods, for the benchmark (hostile.py --loop): every one refused before proposing.
LOOP = [creds.flood_unknown_sessions, creds.flood_wrong_secrets, creds.flood_followers,
        creds.replay_across_sessions, inp.huge_and_empty]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--pki", required=True, help="the site CA's directory (tallyctl pki)")
    p.add_argument("--attacker", default="mallory", help="the attacker's client certificate")
    p.add_argument("--honest", default="honest", help="the honest workload's certificate")
    p.add_argument("--honest-feature", default="work",
                   help="the features the honest workload uses, comma-separated")
    p.add_argument("--http", default="", help="the nodes' HTTP ports, comma-separated")
    p.add_argument("--sessions-per-identity", type=int, default=1000)
    p.add_argument("--per-session-rps", type=int, default=1000)
    p.add_argument("--failed-auth-rps", type=int, default=20)
    p.add_argument("--failed-auth-delay-ms", type=int, default=1000)
    p.add_argument("--max-queue-wait-ms", type=int, default=86_400_000)
    p.add_argument("--loop", type=float, default=0, help="repeat the floods this long")
    args = p.parse_args()
    ctx = Ctx(args)
    passed = failed = 0

    def run(attack, *a):
        nonlocal passed, failed
        t0 = time.monotonic()
        try:
            detail = attack(ctx, *a)
            passed += 1
            print(f"PASS {attack.__name__} ({time.monotonic() - t0:.1f} s): {detail}", flush=True)
        except Exception as e:  # noqa: BLE001  every failure is reported, then counted
            failed += 1
            print(f"FAIL {attack.__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stderr)
        ctx.leader_addr = None  # asked again: a failover must not hide behind a cache

    if args.loop:
        end = time.monotonic() + args.loop
        while time.monotonic() < end:
            for attack in LOOP:
                run(attack)
    else:
        nr = conn.never_reads_start(ctx)
        for attack in SUITE:
            run(attack)
        run(conn.never_reads_check, nr)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
