"""Attacks on connections: half-open TLS handshakes on both ports, slowloris on the HTTP
port, and an HTTP/2 client that sends requests and never reads an answer (hand-made
frames: no gRPC library would behave this badly)."""

import select
import socket
import ssl
import struct
import threading
import time

from ctx import A, L, check

HANDSHAKE_S = 10  # the nodes' TLS handshake timeout
HEADERS_S = 5  # the HTTP port's header timeout
SLACK_S = 6  # a loaded 2-core machine


def _host_port(addr):
    h, p = addr.rsplit(":", 1)
    return h, int(p)


def _closed_within(socks, secs, what):
    """Waits until the server has closed every socket (EOF or reset); the seconds taken."""
    t0 = time.monotonic()
    open_ = list(socks)
    while open_:
        left = t0 + secs - time.monotonic()
        check(left > 0, f"{what}: {len(open_)} of {len(socks)} still open after {secs} s")
        ready, _, _ = select.select(open_, [], [], min(left, 1.0))
        for s in ready:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                open_.remove(s)
                s.close()
    return time.monotonic() - t0


def _serving(ctx):
    """The cluster answers a real call while the attack holds its sockets."""
    t0 = time.monotonic()
    ctx.admin().ClusterStatus(A.ClusterStatusRequest(), timeout=10)
    ctx.lic().Heartbeat(L.HeartbeatRequest(), timeout=10)
    return time.monotonic() - t0


def half_open_tls(ctx):
    """100 connections to the leader's gRPC port that never finish the TLS handshake
    (half send nothing, half a first ClientHello byte): the cluster keeps serving, and
    drops each within the handshake timeout."""
    host, port = _host_port(ctx.leader())
    socks = []
    for i in range(100):
        s = socket.create_connection((host, port), timeout=5)
        if i % 2:
            s.sendall(b"\x16")
        socks.append(s)
    took = _serving(ctx)
    secs = _closed_within(socks, HANDSHAKE_S + SLACK_S, "half-open TLS")
    return f"a call answered in {took * 1000:.0f} ms meanwhile; all 100 dropped in {secs:.1f} s"


def _tls(ctx, addr, alpn):
    c = ssl.create_default_context(cadata=ctx.ca.decode())
    c.check_hostname = False
    c.set_alpn_protocols(alpn)
    raw = socket.create_connection(_host_port(addr), timeout=10)
    return c.wrap_socket(raw)


def _get(ctx, addr, path):
    s = _tls(ctx, addr, ["http/1.1"])
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def slowloris(ctx):
    """On a node's HTTP port: 40 connections that never finish the handshake and 40 that
    send a request's headers a byte a second. The header timeout closes the slow ones, the
    handshake timeout the half-open ones; /healthz answers throughout."""
    addr = ctx.http_addrs()[0]
    half = [socket.create_connection(_host_port(addr), timeout=5) for _ in range(40)]
    slow = []
    for _ in range(40):
        s = _tls(ctx, addr, ["http/1.1"])
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    check(b"200 OK" in _get(ctx, addr, "/healthz").split(b"\r\n")[0], "/healthz during slowloris")
    t0 = time.monotonic()
    open_ = list(slow)
    while open_ and time.monotonic() - t0 < HEADERS_S + SLACK_S:
        for s in list(open_):
            try:
                s.sendall(b"X")
                s.setblocking(False)
                try:
                    if s.recv(4096) == b"":
                        open_.remove(s)
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                s.setblocking(True)
            except (OSError, ssl.SSLError):
                open_.remove(s)
        time.sleep(1)
    check(not open_, f"{len(open_)} slowloris connections still open after "
          f"{HEADERS_S + SLACK_S} s")
    slow_s = time.monotonic() - t0
    check(b"200 OK" in _get(ctx, addr, "/healthz").split(b"\r\n")[0], "/healthz after")
    half_s = _closed_within(half, HANDSHAKE_S + SLACK_S, "half-open TLS on the HTTP port")
    return f"slow headers closed within {slow_s:.1f} s, half-open within {half_s:.1f} s more"


# ---- an HTTP/2 client that never reads ----

def _frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack(headers):
    """Literal header fields without indexing, new names, no Huffman: the simplest HPACK."""
    out = b""
    for k, v in headers:
        k, v = k.encode(), v.encode()
        check(len(k) < 127 and len(v) < 127, "short headers only")
        out += b"\x00" + bytes([len(k)]) + k + bytes([len(v)]) + v
    return out


class NeverReads:
    """One TLS connection speaking HTTP/2 that announces a zero flow-control window, opens
    `streams` Heartbeat calls of 100 sessions each and never reads a byte: it writes until
    the server stops taking its bytes, and no longer."""

    def __init__(self, ctx, streams=1_500):
        self.addr = ctx.leader()
        self.sock = _tls(ctx, self.addr, ["h2"])
        check(self.sock.selected_alpn_protocol() == "h2", "no h2 on the gRPC port")
        body = L.HeartbeatRequest(sessions=[
            L.SessionAuth(session_id=i, secret=b"\x00" * 32) for i in range(1, 101)
        ]).SerializeToString()
        msg = b"\x00" + struct.pack(">I", len(body)) + body
        # SETTINGS: no push, INITIAL_WINDOW_SIZE 0 (the server may send no DATA at all).
        out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, 0))
        hdr = _hpack([(":method", "POST"), (":scheme", "https"),
                      (":path", "/tally.v1.Licensing/Heartbeat"), (":authority", self.addr),
                      ("content-type", "application/grpc"), ("te", "trailers")])
        self.sent = 0
        self.blocked = False
        self.sock.settimeout(5)
        for i in range(streams):
            sid = 2 * i + 1
            out += _frame(1, 0x4, sid, hdr) + _frame(0, 0x1, sid, msg)
            if len(out) > 1 << 16:
                self._send(out)
                out = b""
        self._send(out)
        self.t0 = time.monotonic()

    def _send(self, data):
        if self.blocked:
            return
        try:
            self.sock.sendall(data)
            self.sent += len(data)
        except (socket.timeout, ssl.SSLError, OSError):
            self.blocked = True  # the server stopped reading too: fine, the point is made

    def judge_at(self, secs):
        """At `secs` after the requests (not whenever the suite gets to its check: it may
        run past the deadline, and then the bytes the server sent before closing, still
        buffered here, would be taken for a connection still open), reads at last: the
        server must have given up on this connection (its pings went unanswered), i.e.
        EOF after whatever it managed to send, drained within a second."""
        def judge():
            time.sleep(max(0.0, self.t0 + secs - time.monotonic()))
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            drain_until = time.monotonic() + 1.0
            try:
                while self.sock.recv(1 << 16):
                    if time.monotonic() > drain_until:
                        self.verdict = False
                        return
            except socket.timeout:
                self.verdict = False
                return
            except (ssl.SSLError, OSError):
                pass
            self.verdict = True

        self.verdict = None
        self.judge = threading.Thread(target=judge, daemon=True)
        self.judge.start()

    def closed_by_server(self):
        """The verdict of `judge_at`, once it is in."""
        self.judge.join()
        return self.verdict


def never_reads_start(ctx):
    nr = NeverReads(ctx)
    nr.judge_at(45 + SLACK_S)
    return nr


def never_reads_check(ctx, nr):
    """The cluster served everyone else while the connection sat there; and the server
    dropped it by its keepalive (30 s ping + 10 s timeout), not holding it for ever."""
    took = _serving(ctx)
    ok = nr.closed_by_server()
    check(ok, f"the never-reading connection was still open {45 + SLACK_S} s after its requests")
    return (f"{nr.sent} bytes of requests on one connection never read; others answered "
            f"in {took * 1000:.0f} ms; the server closed it within {time.monotonic() - nr.t0:.0f} s")
