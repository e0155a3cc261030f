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
# Checks of something started earlier: there is nothing to run again.
NOT_AGAIN = {conn.never_reads_check}
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
        for attempt in (1, 2):
            t0 = time.monotonic()
            term = ctx.term()
            try:
                detail = attack(ctx, *a)
                passed += 1
                print(f"PASS {attack.__name__} ({time.monotonic() - t0:.1f} s): {detail}",
                      flush=True)
                break
            except Exception as e:  # noqa: BLE001  every failure is reported, then counted
                traceback.print_exc(file=sys.stderr)
                ctx.leader_addr = None  # asked again: a failover must not hide behind a cache
                after = ctx.term()
                # An election mid-attack spoils what the attack watches (its leader, the
                # log window it reads), not what it proves: it runs once more, and says so.
                if attempt == 1 and after != term and attack not in NOT_AGAIN:
                    print(f"AGAIN {attack.__name__}: the leader changed during it (term "
                          f"{term} -> {after}); first run: {e}", flush=True)
                    continue
                failed += 1
                print(f"FAIL {attack.__name__}: {e}", flush=True)
                break
        ctx.leader_addr = None

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
        for line in ctx.health():
            print(f"HEALTH {line}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
