"""Attacks with credentials that prove nothing: unknown sessions, wrong secrets, other
sessions' request ids, a lockout of a victim's write budget."""

import os
import random
import time

import grpc

from ctx import A, Fail, L, Quiet, all_of, at_once, check, denied, refused, rid

CODE = grpc.StatusCode
UNKNOWN = "unknown session"
BAD = "the session secret does not match"


def _bogus_calls(ctx, sessions, secret, n, addr=None):
    """n checkouts, checkins and closes naming `sessions`, each from a fresh client id,
    half with the attacker's certificate and half with none."""
    stubs = [ctx.lic(addr=addr), ctx.lic(None, addr=addr)]
    calls = []
    for i in range(n):
        sid = sessions[i % len(sessions)]
        auth = L.SessionAuth(session_id=sid, secret=secret())
        kind, stub = i % 3, stubs[i % 2]
        if kind == 0:
            calls.append(("checkout", lambda a=auth, stub=stub: stub.Checkout(L.CheckoutRequest(
                request=rid(), auth=a, feature="target", count=1), timeout=20)))
        elif kind == 1:
            calls.append(("checkin", lambda a=auth, stub=stub: stub.Checkin(L.CheckinRequest(
                request=rid(), auth=a, lease_id=random.getrandbits(64)), timeout=20)))
        else:
            calls.append(("close", lambda a=auth, stub=stub: stub.CloseSession(L.CloseSessionRequest(
                request=rid(), auth=a), timeout=20)))
    return [k for k, _ in calls], all_of(ctx, [c for _, c in calls])


def _expect(kinds, results, reason, code, text):
    for kind, r in zip(kinds, results):
        if kind == "checkout":
            check(not isinstance(r, grpc.RpcError), f"checkout failed: {r}")
            denied(r, reason, text)
        else:
            check(isinstance(r, grpc.RpcError) and r.code() == code and text in r.details(),
                  f"{kind}: expected {code} saying {text!r}, got {r}")


def quiet_sees_writes(ctx):
    """The control for every `Quiet` below: a write of the attacker's inside it fails."""
    s = ctx.open()
    try:
        with Quiet(ctx, "control"):
            refused(lambda: ctx.lic().Checkin(L.CheckinRequest(
                request=rid(s[2], 2), auth=L.SessionAuth(session_id=s[0], secret=s[1]),
                lease_id=1), timeout=20), CODE.NOT_FOUND, "no such lease")
    except Fail as e:
        check("log entries of the attacker's requests" in str(e), f"control: {e}")
        return f"a real write was seen: {e}"
    finally:
        ctx.close(s)
    raise Fail("Quiet saw no log entry for a real write: it would pass anything")


def flood_unknown_sessions(ctx):
    """Writes naming sessions that do not exist (ids 0 and 2^64-1 among them), from fresh
    client ids: refused before anything is proposed."""
    ids = [0, 2**64 - 1] + [random.randrange(1 << 40, 1 << 63) for _ in range(8)]
    with Quiet(ctx, "unknown sessions") as q:
        kinds, rs = _bogus_calls(ctx, ids, lambda: os.urandom(32), 600)
        _expect(kinds, rs, L.DENIAL_REASON_UNKNOWN_SESSION, CODE.NOT_FOUND, UNKNOWN)
    return f"600 refused; {q.summary}"


def flood_wrong_secrets(ctx):
    """Writes and heartbeats naming live sessions (an honest one, the attacker's own) with
    wrong secrets, well-formed and not: refused, no log entry, the honest session lives."""
    own = ctx.open()
    victims = [s.session_id for s in ctx.admin().ListSessions(A.ListSessionsRequest()).sessions
               if s.cert_name == ctx.args.honest][:2] + [own[0]]
    check(len(victims) >= 2, f"no honest session to aim at: {victims}")
    with Quiet(ctx, "wrong secrets") as q:
        kinds, rs = _bogus_calls(ctx, victims, lambda: os.urandom(32), 600)
        _expect(kinds, rs, L.DENIAL_REASON_BAD_SECRET, CODE.PERMISSION_DENIED, BAD)
        for size in (0, 31, 33):
            refused(lambda: ctx.lic().Checkin(L.CheckinRequest(
                request=rid(), auth=L.SessionAuth(session_id=victims[0], secret=b"x" * size),
                lease_id=1)), CODE.UNAUTHENTICATED, f"must be 32 bytes, got {size}")
        hb = ctx.lic().Heartbeat(L.HeartbeatRequest(sessions=[
            L.SessionAuth(session_id=v, secret=os.urandom(32)) for v in victims]))
        check(all(s.state == L.SESSION_STATE_BAD_SECRET and s.deadline_ms == 0
                  for s in hb.sessions), f"a forged heartbeat renewed: {hb}")
    ctx.close(own)
    return f"600 refused, forged heartbeats renew nothing; {q.summary}"


def flood_followers(ctx):
    """The same bogus writes sent to followers: told where the leader is, nothing written."""
    n = 0
    with Quiet(ctx, "bogus writes to followers") as q:
        for f in ctx.followers():
            kinds, rs = _bogus_calls(ctx, [1, 2**64 - 1], lambda: os.urandom(32), 150, addr=f)
            for kind, r in zip(kinds, rs):
                check(isinstance(r, grpc.RpcError) and r.code() == CODE.UNAVAILABLE
                      and "not the leader" in r.details(), f"{kind} at follower {f}: {r}")
            n += len(rs)
    return f"{n} answered not-the-leader; {q.summary}"


def lockout(ctx):
    """A victim's id is sequential, so anyone can name it: forged-secret writes beyond the
    victim's whole per-session burst do not use up its budget. The control: the victim's
    own burst of the same size is cut off, so the limit is live."""
    victim = ctx.open(who=None, user="vic", host="ws-v")
    sid, secret, client = victim
    burst = 2 * ctx.args.per_session_rps
    stub = ctx.lic()
    n = 2 * burst + 200
    with Quiet(ctx, "forged writes naming a victim", allowed={client}) as q:
        rs = at_once([stub.Checkin.future(L.CheckinRequest(
            request=rid(), auth=L.SessionAuth(session_id=sid, secret=os.urandom(32)),
            lease_id=7), timeout=30) for _ in range(n)])
        bad = [r for r in rs if not (isinstance(r, grpc.RpcError)
                                     and r.code() == CODE.PERMISSION_DENIED)]
        check(not bad, f"{len(bad)} forged writes not refused as such: {bad[:2]}")
    own = ctx.lic(None)
    auth = L.SessionAuth(session_id=sid, secret=secret)
    refused(lambda: own.Checkin(L.CheckinRequest(request=rid(client, 2), auth=auth,
                                                 lease_id=7), timeout=20),
            CODE.NOT_FOUND, "no such lease")
    rs = at_once([own.Checkin.future(L.CheckinRequest(
        request=rid(client, s), auth=auth, lease_id=7), timeout=30)
        for s in range(10, 10 + n)])
    limited = [r for r in rs if isinstance(r, grpc.RpcError)
               and r.code() == CODE.RESOURCE_EXHAUSTED and "limits.per_session_rps" in r.details()]
    check(limited, "the victim's own burst was never limited: the control failed")
    ctx.close(victim, who=None)
    return (f"{n} forged refused, victim then answered on its merits; its own "
            f"burst limited {len(limited)}x; {q.summary}")


def replay_across_sessions(ctx):
    """Request ids are the session's own: another session (or a forger) that sends ann's
    client id and number gets neither her answer nor a place in her window."""
    a, b = ctx.open(user="ann-m"), ctx.open(user="bob-m")
    stub = ctx.lic()
    auth_a = L.SessionAuth(session_id=a[0], secret=a[1])
    auth_b = L.SessionAuth(session_id=b[0], secret=b[1])
    co = L.CheckoutRequest(request=rid(a[2], 2), auth=auth_a, feature="target", count=1)
    first = stub.Checkout(co, timeout=20)
    check(first.WhichOneof("result") == "granted", f"ann's checkout: {first}")

    def as_(auth, req=co.request):
        return stub.Checkout(L.CheckoutRequest(request=req, auth=auth, feature="target",
                                               count=1), timeout=20)
    with Quiet(ctx, "replayed request ids") as q:
        denied(as_(auth_b), L.DENIAL_REASON_WRONG_CLIENT, "another client id opened this session")
        denied(as_(L.SessionAuth(session_id=a[0], secret=os.urandom(32))),
               L.DENIAL_REASON_BAD_SECRET, BAD)
        denied(as_(L.SessionAuth(session_id=2**64 - 1, secret=os.urandom(32))),
               L.DENIAL_REASON_UNKNOWN_SESSION, UNKNOWN)
        # Bob's new request under ann's client id is refused, and kept nowhere.
        denied(as_(auth_b, rid(a[2], 3)), L.DENIAL_REASON_WRONG_CLIENT, "another client id")
        refused(lambda: stub.Checkin(L.CheckinRequest(request=rid(a[2], 4), auth=auth_b,
                                                      lease_id=first.granted.lease_id)),
                grpc.StatusCode.PERMISSION_DENIED, "another client id opened this session")
        refused(lambda: stub.OpenSession(L.OpenSessionRequest(
            request=rid(a[2], 1), user="ann-m", host="evil", secret=os.urandom(32))),
            CODE.PERMISSION_DENIED, BAD)
    again = stub.Checkout(co, timeout=20)
    check(again == first, f"ann's own retry: {again} (first {first})")
    mine = as_(auth_a, rid(a[2], 3))
    check(mine.WhichOneof("result") == "granted" and mine.granted.lease_id != first.granted.lease_id,
          f"ann's request 3 was not run for her: {mine}")
    leases = ctx.admin().ListLeases(A.ListLeasesRequest(feature="target")).leases
    owners = {l.lease_id: l.session_id for l in leases}
    check(owners.get(first.granted.lease_id) == a[0] and owners.get(mine.granted.lease_id) == a[0]
          and b[0] not in owners.values(), f"lease owners: {owners}")
    # Bob cannot check in ann's lease with his own request id either.
    refused(lambda: stub.Checkin(L.CheckinRequest(request=rid(b[2], 2), auth=auth_b,
                                                  lease_id=first.granted.lease_id)),
            CODE.NOT_FOUND, "no such lease")
    ctx.close(a)
    ctx.close(b)
    return f"WRONG_CLIENT / BAD_SECRET / UNKNOWN_SESSION, ann's leases intact; {q.summary}"


def held_refusals(ctx):
    """A caller past its failed-authentication budget (limits.failed_auth_rps, bursts of
    twice that) has each further refusal held limits.failed_auth_delay_ms, with the same
    answer; its own honest write meanwhile is answered without waiting, and another
    certificate's failure is not charged to it."""
    delay = ctx.args.failed_auth_delay_ms / 1000
    burst = 2 * ctx.args.failed_auth_rps
    own = ctx.open()
    stub = ctx.lic()
    n = burst + 60
    done = {}
    t0 = time.monotonic()
    futs = []
    for i in range(n):
        f = stub.Checkin.future(L.CheckinRequest(
            request=rid(), auth=L.SessionAuth(session_id=own[0], secret=os.urandom(32)),
            lease_id=7), timeout=60)
        f.add_done_callback(lambda _f, i=i: done.setdefault(i, time.monotonic()))
        futs.append(f)
    # The refusals within the budget come back at once; wait for them, so the budget is
    # surely spent, then write honestly as the same certificate, and fail as another.
    deadline = time.monotonic() + 30
    while len(done) < burst // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    t1 = time.monotonic()
    refused(lambda: stub.Checkin(L.CheckinRequest(
        request=rid(own[2], 2), auth=L.SessionAuth(session_id=own[0], secret=own[1]),
        lease_id=7), timeout=20), CODE.NOT_FOUND, "no such lease")
    honest = time.monotonic()
    refused(lambda: ctx.lic("admin").Checkin(L.CheckinRequest(
        request=rid(), auth=L.SessionAuth(session_id=own[0], secret=os.urandom(32)),
        lease_id=7), timeout=20), CODE.PERMISSION_DENIED, BAD)
    other = time.monotonic()
    rs = at_once(futs)
    bad = [r for r in rs if not (isinstance(r, grpc.RpcError)
                                 and r.code() == CODE.PERMISSION_DENIED and BAD in r.details())]
    check(not bad, f"{len(bad)} held refusals answered otherwise: {bad[:2]}")
    waits = sorted(done[i] - t0 for i in range(n))
    held = [w for w in waits if w >= delay]
    # Sending takes a moment, in which the budget refills a little: most past the burst
    # must have been held the whole delay, measured from before they were sent.
    check(len(held) >= 40, f"only {len(held)} of {n} refusals held {delay} s: {waits[-5:]}")
    first_held = min(held)
    check(honest < t0 + first_held, f"the caller's honest write took {honest - t1:.2f} s: "
          f"held with the refusals (first held one back at {first_held:.2f} s)")
    check(other < t0 + first_held, f"another certificate's failure took {other - honest:.2f} s:"
          f" it was charged to the first caller")
    ctx.close(own)
    return (f"{len(held)} of {n} refusals held {delay} s or more; the caller's honest write "
            f"{honest - t1:.2f} s, another certificate's refusal {other - honest:.2f} s")
