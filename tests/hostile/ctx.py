"""What every attack needs: channels as the attacker (with its client certificate, or
none) and as an administrator, request ids, the leader, and the checks that an attack
changed nothing: the cluster's log (ExportLog) and what honest clients can see."""

import json
import ssl
import urllib.request
import os
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

import pb

L = pb.lic
A = pb.admin
# Room for the 1 MiB requests the attacks send; answers are small.
OPTS = [("grpc.max_send_message_length", 4 << 20)]


class Fail(Exception):
    """An attack got an answer the cluster must not give."""


def check(cond, what):
    if not cond:
        raise Fail(what)


def rid(client=None, seq=1):
    return L.RequestId(client_id=client if client is not None else os.urandom(16), seq=seq)


HISTOGRAMS = ("runtime_lag", "raft_runtime_lag", "thread_lag", "raft_append_rtt", "log_write",
              "raft_quorum_ack_age")


def summarize(metrics):
    """`term 1 leader; runtime_lag n=4651 worst<=300 (>100: 1); ...` from /metrics text."""
    vals, buckets = {}, {}
    for line in metrics.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, v = line.rsplit(" ", 1)
        vals[name] = v
        for h in HISTOGRAMS:
            prefix = f"tally_{h}_ms_bucket{{le=\""
            if name.startswith(prefix):
                buckets.setdefault(h, []).append((name[len(prefix):-2], int(float(v))))
    parts = [f"term {vals.get('tally_raft_term', '?')}"
             + (" leader" if vals.get("tally_raft_is_leader") == "1" else "")]
    for h, bs in buckets.items():
        total = bs[-1][1]
        if not total:
            continue
        worst = next(le for le, c in bs if c == total)
        over = total - dict(bs).get("100", total)
        parts.append(f"{h} n={total} worst<={worst} (>100: {over})")
    return "; ".join(parts)


class Ctx:
    def __init__(self, args):
        self.args = args
        pki = args.pki
        self.ca = open(os.path.join(pki, "ca.crt"), "rb").read()
        self.pki = pki
        self.endpoints = args.endpoints.split(",")
        self.channels = {}
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.leader_addr = None

    def creds(self, who):
        if who is None:
            return grpc.ssl_channel_credentials(self.ca)
        key = open(os.path.join(self.pki, f"{who}.key"), "rb").read()
        crt = open(os.path.join(self.pki, f"{who}.crt"), "rb").read()
        return grpc.ssl_channel_credentials(self.ca, key, crt)

    def channel(self, who, addr):
        k = (who, addr)
        if k not in self.channels:
            self.channels[k] = grpc.secure_channel(addr, self.creds(who), options=OPTS)
        return self.channels[k]

    def admin(self, addr=None):
        return pb.admin_grpc.AdminStub(self.channel("admin", addr or self.leader()))

    def lic(self, who="attacker", addr=None):
        who = self.args.attacker if who == "attacker" else who
        return pb.lic_grpc.LicensingStub(self.channel(who, addr or self.leader()))

    def status(self):
        last = None
        for _ in range(100):
            for ep in self.endpoints:
                try:
                    st = pb.admin_grpc.AdminStub(self.channel("admin", ep)).ClusterStatus(
                        A.ClusterStatusRequest(), timeout=5)
                    if st.leader_id:
                        return st
                except grpc.RpcError as e:
                    last = e
            time.sleep(0.1)
        raise Fail(f"no leader known: {last}")

    def leader(self):
        if self.leader_addr is None:
            st = self.status()
            self.leader_addr = next(n.grpc_addr for n in st.nodes if n.id == st.leader_id)
        return self.leader_addr

    def followers(self):
        st = self.status()
        return [n.grpc_addr for n in st.nodes if n.id != st.leader_id]

    def health(self):
        """One line per node from its /metrics: term, leadership, and the worst bucket of
        the lag, append, log-write and quorum-ack histograms. Printed after
        the suite, so a failure shows whether the leader changed under attack and why."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.args.pki, "ca.crt"))
        out = []
        for n, addr in enumerate(self.http_addrs(), 1):
            try:
                url = f"https://{addr}/metrics"
                with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
                    text = r.read().decode()
            except Exception as e:  # noqa: BLE001  a dead node is what this reports
                out.append(f"node {n}: unreachable: {e}")
                continue
            out.append(f"node {n}: " + summarize(text))
        return out

    def http_addrs(self):
        return self.args.http.split(",") if self.args.http else []

    def live_sessions_of(self, who):
        """Live sessions the cluster counts against `who` (a certificate name, or None
        for the address 127.0.0.1 without a certificate)."""
        ss = self.admin().ListSessions(A.ListSessionsRequest(), timeout=20).sessions
        if who is None:
            return [s for s in ss if not s.cert_name and s.client_addr == "127.0.0.1"]
        return [s for s in ss if s.cert_name == who]

    # ---- what the attacks assert ----

    def on_leader(self, call):
        """`call()` against the current leader, asked again after a leader change (the
        honest library follows one; so do the suite's own set-up and clean-up calls)."""
        for attempt in range(5):
            try:
                return call()
            except grpc.RpcError as e:
                if attempt == 4 or e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                self.leader_addr = None
                time.sleep(0.2)

    def open(self, who="attacker", user="mallory", host="evil", ttl_ms=30_000, client=None):
        """A session of the attacker's own: (id, secret, client id)."""
        client = client or os.urandom(16)
        secret = os.urandom(32)
        r = self.on_leader(lambda: self.lic(who).OpenSession(L.OpenSessionRequest(
            request=rid(client, 1), user=user, host=host, secret=secret, ttl_ms=ttl_ms),
            timeout=20))
        return r.session_id, secret, client

    def close(self, s, who="attacker", seq=1_000_000):
        sid, secret, client = s
        self.on_leader(lambda: self.lic(who).CloseSession(L.CloseSessionRequest(
            request=rid(client, seq), auth=L.SessionAuth(session_id=sid, secret=secret)),
            timeout=20))

    def term(self):
        return self.status().term

    def last_index(self):
        """The leader's own last log index, as the leader itself reports it (another
        node's idea of the leader's log trails it, or is nothing at all)."""
        for _ in range(50):
            st = self.status()
            addr = next(n.grpc_addr for n in st.nodes if n.id == st.leader_id)
            own = pb.admin_grpc.AdminStub(self.channel("admin", addr)).ClusterStatus(
                A.ClusterStatusRequest(), timeout=5)
            if own.answered_by == own.leader_id:
                return next(n.last_log_index for n in own.nodes if n.id == own.leader_id)
            time.sleep(0.1)
        raise Fail("no node reports its own log as the leader's")

    def entries_since(self, index):
        """The ledger entries after `index`, as (index, kind, body) from ExportLog."""
        out = []
        for r in self.admin().ExportLog(A.ExportLogRequest(from_index=index + 1), timeout=30):
            if not r.entry_json:
                continue
            op = json.loads(r.entry_json)["op"]
            kind, body = (op, None) if isinstance(op, str) else next(iter(op.items()))
            out.append((r.index, kind, body))
        return out

    def honest_clients(self):
        """Client ids of the honest workload's sessions (its own certificate)."""
        ss = self.admin().ListSessions(A.ListSessionsRequest(), timeout=20).sessions
        return {bytes(s.client_id) for s in ss if s.cert_name == self.args.honest}

    def visible(self):
        """What honest clients can see: their sessions, the licensed counts, and the use
        and queues of the features only the attacker touches."""
        ss = self.admin().ListSessions(A.ListSessionsRequest(), timeout=20).sessions
        fs = self.admin().ListFeatures(A.ListFeaturesRequest(), timeout=20).features
        honest = sorted(s.session_id for s in ss if s.cert_name == self.args.honest)
        mine = set(self.args.honest_feature.split(","))
        feats = sorted((f.name, f.issued, f.overdraft_limit,
                        (f.in_use, f.queued) if f.name not in mine else None)
                       for f in fs)
        return {"honest_sessions": honest, "features": feats}


class Quiet:
    """`with Quiet(ctx, what):` the attack inside writes nothing to the log: every client
    entry that appears meanwhile is the honest workload's, and the leader's own entries
    (ticks, heartbeat checkpoints) stay within a few a second. Also checks that what the
    honest clients see is the same after as before."""

    def __init__(self, ctx, what, allowed=()):
        self.ctx, self.what, self.allowed = ctx, what, set(allowed)

    def __enter__(self):
        self.summary = "log not checked (--loop)"
        if self.ctx.args.loop:
            # The benchmark measures what a hostile client costs honest ones; exporting
            # and parsing the whole log around every flood is an administrator's work
            # that no client can make the cluster do, so the loop leaves it out (the
            # suite's own run checks every flood).
            return self
        # Honest sessions may end meanwhile (a benchmark's, closing): theirs still count.
        self.honest = self.ctx.honest_clients()
        self.before = self.ctx.visible()
        self.index = self.ctx.last_index()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, kind, *_):
        if kind is not None or self.ctx.args.loop:
            return False
        secs = time.monotonic() - self.t0
        honest = self.honest | self.ctx.honest_clients() | self.allowed
        entries = self.ctx.entries_since(self.index)
        foreign = [(i, k) for i, k, b in entries
                   if isinstance(b, dict) and "req" in b
                   and bytes(b["req"]["client"]) not in honest]
        check(not foreign, f"{self.what}: {len(foreign)} log entries of the attacker's "
              f"requests, first {foreign[:3]}")
        keeper = [(i, k) for i, k, b in entries if not (isinstance(b, dict) and "req" in b)]
        bound = 2 * secs + 10
        check(len(keeper) <= bound, f"{self.what}: {len(keeper)} leader entries in "
              f"{secs:.1f} s (bound {bound:.0f}): {keeper[:5]}")
        after = self.ctx.visible()
        check(after == self.before, f"{self.what}: honest view changed: "
              f"{self.before} -> {after}")
        self.summary = f"{len(entries)} entries, none the attacker's, {len(keeper)} leader's"
        return False


def refused(fn, code, text):
    """Calls fn, which must fail with `code` saying `text`."""
    try:
        r = fn()
    except grpc.RpcError as e:
        check(e.code() == code and text in (e.details() or ""),
              f"expected {code} saying {text!r}, got {e.code()}: {e.details()!r}")
        return e
    raise Fail(f"expected {code} saying {text!r}, got an answer: {r}")


def denied(r, reason, text):
    """A checkout answer that must be a denial for `reason` saying `text`."""
    check(r.WhichOneof("result") == "denied",
          f"expected a denial ({L.DenialReason.Name(reason)}), got {r}")
    check(r.denied.reason == reason and text in r.denied.message,
          f"expected {L.DenialReason.Name(reason)} saying {text!r}, got "
          f"{L.DenialReason.Name(r.denied.reason)}: {r.denied.message!r}")


def at_once(futures):
    """Waits for calls started together (stub.Method.future(...)): results or RpcErrors."""
    out = []
    for f in futures:
        try:
            out.append(f.result())
        except grpc.RpcError as e:
            out.append(e)
    return out


def all_of(ctx, calls):
    """Runs the calls concurrently; their results (or RpcErrors) in order."""
    def run(f):
        try:
            return f()
        except grpc.RpcError as e:
            return e
    return list(ctx.pool.map(run, calls))
