"""Attacks with malformed or extreme input, queue floods and session floods."""

import os
import time

import grpc

from ctx import A, Fail, L, Quiet, all_of, check, denied, refused, rid

CODE = grpc.StatusCode
MIB = 1 << 20


def _too_large(fn):
    try:
        r = fn()
    except grpc.RpcError as e:
        check(e.code() in (CODE.OUT_OF_RANGE, CODE.RESOURCE_EXHAUSTED)
              and "too large" in e.details(), f"a 1 MiB field: {e.code()} {e.details()!r}")
        return
    raise Fail(f"a 1 MiB field was answered: {r}")


def huge_and_empty(ctx):
    """Names of 1 MiB, empty names, secrets of 0/31/33 bytes, 15-byte client ids, garbage
    and 900 KB versions, counts 0 and 2^32-1, 10,001 heartbeats: each refused naming the
    field, none written. Extremes that are legal (ttl and seq 2^64-1) are clamped."""
    stub = ctx.lic()
    s = ctx.open()
    auth = L.SessionAuth(session_id=s[0], secret=s[1])

    def op(**kw):
        base = dict(request=rid(), user="mallory", host="evil", secret=os.urandom(32))
        base.update(kw)
        return lambda: stub.OpenSession(L.OpenSessionRequest(**base), timeout=20)

    def co(seq, **kw):
        base = dict(request=rid(s[2], seq), auth=auth, feature="target", count=1)
        base.update(kw)
        return stub.Checkout(L.CheckoutRequest(**base), timeout=20)
    with Quiet(ctx, "malformed input") as q:
        _too_large(op(user="u" * MIB))
        _too_large(lambda: co(90, feature="f" * MIB))
        refused(op(user="u" * 300), CODE.INVALID_ARGUMENT, "`user` must be at most 256 bytes")
        refused(op(user=""), CODE.INVALID_ARGUMENT, "`user` must not be empty")
        refused(op(host=""), CODE.INVALID_ARGUMENT, "`host` must not be empty")
        refused(op(display="\x00\x1b[2J"), CODE.INVALID_ARGUMENT, "`display` must be at most")
        for n in (0, 31, 33):
            refused(op(secret=b"s" * n), CODE.INVALID_ARGUMENT,
                    f"`secret` must be 32 random bytes chosen by the client, got {n}")
        refused(op(request=L.RequestId(client_id=b"c" * 15, seq=1)), CODE.INVALID_ARGUMENT,
                "client_id must be 16 bytes, got 15")
        refused(op(request=None), CODE.INVALID_ARGUMENT, "missing `request`")
        refused(lambda: co(91, feature=""), CODE.INVALID_ARGUMENT, "`feature` must not be empty")
        refused(lambda: co(92, auth=None), CODE.INVALID_ARGUMENT, "missing `auth`")
        refused(lambda: co(93, version="\x00garb.age"), CODE.INVALID_ARGUMENT,
                "`version` must look like 2026.1")
        # Under the 1 MiB cap, so decoded: the refusal must not quote it whole (a 900 KB
        # grpc-message header is itself refused by the client).
        e = refused(lambda: co(94, version="1." * 450_000 + "x"), CODE.INVALID_ARGUMENT,
                    "`version` must look like 2026.1")
        check(len(e.details()) < 300, f"refusal quotes {len(e.details())} bytes")
        refused(lambda: stub.Heartbeat(L.HeartbeatRequest(sessions=[auth] * 10_001)),
                CODE.INVALID_ARGUMENT, "at most 10000 sessions per heartbeat")
    # Counts 0 and 2^32-1 are refused by the ledger (they are written, and answered).
    for seq, count in ((95, 0), (96, 2**32 - 1)):
        denied(co(seq, count=count), L.DENIAL_REASON_INVALID_COUNT,
               f"{count} is not a valid seat count")
    client = os.urandom(16)
    r = stub.OpenSession(L.OpenSessionRequest(
        request=rid(client, 2**64 - 1), user="mallory", host="evil", secret=os.urandom(32),
        ttl_ms=2**64 - 1, pid=2**32 - 1), timeout=20)
    check(0 < r.ttl_ms <= 3_600_000, f"ttl 2^64-1 granted {r.ttl_ms}")
    ctx.close(s)
    ctx.close((r.session_id, r.secret, client), seq=5)
    return f"all refused by name; ttl 2^64-1 clamped to {r.ttl_ms}; {q.summary}"


def _queue(ctx):
    return [w for w in ctx.admin().ListQueue(A.ListQueueRequest()).waiters]


def _wait_for(cond, what, secs=20):
    deadline = time.monotonic() + secs
    while not cond():
        check(time.monotonic() < deadline, f"timed out waiting for {what}")
        time.sleep(0.1)


def queue_floods(ctx):
    """A waiter that could never be served (3 seats of a 2-seat pool) is refused; one
    session's 17th wait is refused; a request numbered 2^64-1 after 16 waits is answered
    twice alike; a wait of 2^64-1 ms is bounded. Ending the session ends its waits."""
    stub = ctx.lic()
    holder, waiter = ctx.open(user="hold-m"), ctx.open(user="wait-m")
    ha = L.SessionAuth(session_id=holder[0], secret=holder[1])
    wa = L.SessionAuth(session_id=waiter[0], secret=waiter[1])
    denied(stub.Checkout(L.CheckoutRequest(request=rid(holder[2], 2), auth=ha, feature="target",
                                           count=3, wait=True, wait_timeout_ms=2**64 - 1)),
           L.DENIAL_REASON_NO_SEATS, "only 2 are licensed")
    check(not _queue(ctx), "a waiter that can never fit was queued")
    g = stub.Checkout(L.CheckoutRequest(request=rid(holder[2], 3), auth=ha, feature="scarce",
                                        count=1), timeout=20)
    check(g.WhichOneof("result") == "granted", f"the scarce seat: {g}")
    waits = [stub.Checkout.future(L.CheckoutRequest(
        request=rid(waiter[2], 10 + i), auth=wa, feature="scarce", count=1, wait=True,
        wait_timeout_ms=2**64 - 1 if i == 0 else 120_000), timeout=60) for i in range(16)]
    _wait_for(lambda: len(_queue(ctx)) == 16, "16 waiters")
    q = _queue(ctx)
    first = min(q, key=lambda w: w.place)
    check(0 < first.deadline_ms - first.queued_at_ms <= ctx.args.max_queue_wait_ms,
          f"a wait of 2^64-1 ms: {first}")
    denied(stub.Checkout(L.CheckoutRequest(request=rid(waiter[2], 40), auth=wa, feature="scarce",
                                           count=1, wait=True), timeout=20),
           L.DENIAL_REASON_QUEUE_FULL, "already waits for 16 checkouts")
    # The window is full of waits, so the answer to 2^64-1 is the one forgotten: the
    # floor moves to 2^64-1 without overflowing, a retry runs again alike, and every
    # lower number of this client is stale from then on (it used up its numbers).
    last = L.CheckinRequest(request=rid(waiter[2], 2**64 - 1), auth=wa, lease_id=424242)
    for _ in range(2):
        refused(lambda: stub.Checkin(last, timeout=20), CODE.NOT_FOUND, "no such lease")
    refused(lambda: ctx.close(waiter, seq=50), CODE.FAILED_PRECONDITION, "request superseded")
    check(len(_queue(ctx)) == 16, "the waits survive")
    ctx.admin().CloseSession(A.AdminCloseSessionRequest(session_id=waiter[0],
                                                        reason="hostile suite"))
    _wait_for(lambda: not _queue(ctx), "the waits to end with their session")
    for f in waits:
        r = f.result()
        check(r.WhichOneof("result") == "denied" and r.denied.reason in (
            L.DENIAL_REASON_UNKNOWN_SESSION, L.DENIAL_REASON_WAIT_CANCELLED),
            f"a wait of a closed session: {r}")
    ctx.close(holder)
    return "never-fitting wait refused, 17th wait QUEUE_FULL, seq 2^64-1 twice alike"


def session_flood(ctx):
    """Opens from one identity, each with a fresh client id, up to the limit and beyond:
    the one past it is refused naming the identity and the setting; another identity
    (the no-certificate attacker's address) is counted apart. All closed after."""
    n = ctx.args.sessions_per_identity
    out = []
    for who, ident in ((ctx.args.attacker, f"cert {ctx.args.attacker}"), (None, "addr 127.0.0.1")):
        # Up to the limit, counting what the identity holds already (the honest-looking
        # victims of other attacks may still be closing).
        have = len(ctx.live_sessions_of(who))
        opened = [ctx.open(who=who, ttl_ms=60_000) for _ in range(n - have)]
        extra = n // 4 + 2
        rs = all_of(ctx, [lambda: ctx.open(who=who) for _ in range(extra)])
        for r in rs:
            check(isinstance(r, grpc.RpcError) and r.code() == CODE.RESOURCE_EXHAUSTED
                  and f"{ident} already holds {n} live sessions" in r.details()
                  and "limits.sessions_per_identity" in r.details(), f"open #{n + 1}: {r}")
        for s in opened:
            ctx.close(s, who=who)
        out.append(f"{ident}: {n} opened, {extra} refused")
    s = ctx.open(who=None)
    ctx.close(s, who=None)
    return "; ".join(out) + "; a slot is free again after closing"

