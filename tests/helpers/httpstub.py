#!/usr/bin/env python3
"""httpstub.py - a local HTTP/1.1 stand-in server for the tests of the
outbound connection manager (tests/unit/test-outbound.c).

Listens on 127.0.0.1 on an ephemeral port (or --port N) and prints the port
on its first stdout line.  It exits when its stdin is closed (so it never
outlives the test that started it), or on SIGTERM/SIGINT.  Only the Python 3
standard library is used.  Connections are kept alive (HTTP/1.1).

Endpoints (all also accept POST unless said otherwise; K names a counter):

  GET  /json                    200 {"ok": true, "conn": C, "hits": N}
  *    /echo                    200 JSON of the request: method, path, query,
                                headers (lower-case names), body
  GET  /sse?n=N&delay=S&cut=1   200 text/event-stream, chunked: "data: 0\\n\\n"
                                ... "data: N-1\\n\\n" then "data: [DONE]\\n\\n",
                                S seconds apart; cut=1 drops the connection
                                before the end (no [DONE], no last chunk)
  GET  /flaky?key=K&fail=N&status=S
                                the first N requests of K get S (500), then 200
  GET  /ratelimit?key=K&after=A&fail=N
                                the first N (1) requests of K get 429 with
                                Retry-After: A (1), then 200
  GET  /status/S                always status S with a small JSON body
  GET  /slow?delay=S            waits S seconds, then 200
  GET  /cut                     promises 100 bytes, sends 10, closes
  GET  /conn                    200 {"conn": C}: the id of this connection
  GET  /health                  200 {"status":"up"} or 503 while down
  GET  /health/set?up=0|1       sets the health state
  GET  /count?key=K             200 {"hits": N} requests seen for K
  GET  /stats                   200 {"connections": N, "requests": N}
"""

import argparse
import json
import os
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.hits = {}
        self.connections = 0
        self.requests = 0
        self.health_up = True

    def hit(self, key):
        with self.lock:
            self.hits[key] = self.hits.get(key, 0) + 1
            return self.hits[key]


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpstub/1"
    # Headers and body go out in separate writes: without TCP_NODELAY the
    # body would wait for the client's delayed ACK (40 ms) on a kept-alive
    # connection.
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        with STATE.lock:
            STATE.connections += 1
            self.conn_id = STATE.connections

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- helpers ---------------------------------------------------------
    def send_json(self, status, obj, extra=None):
        data = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- dispatch --------------------------------------------------------
    def handle_any(self):
        body = self.read_body()
        with STATE.lock:
            STATE.requests += 1
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        p = u.path
        if p == "/json":
            n = STATE.hit("json")
            return self.send_json(200, {"ok": True, "conn": self.conn_id, "hits": n})
        if p == "/echo":
            return self.send_json(200, {
                "method": self.command,
                "path": p,
                "query": u.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            })
        if p == "/sse":
            return self.sse(int(q.get("n", "3")), float(q.get("delay", "0")),
                            q.get("cut") == "1")
        if p == "/flaky":
            key = q.get("key", "flaky")
            n = STATE.hit(key)
            if n <= int(q.get("fail", "1")):
                return self.send_json(int(q.get("status", "500")),
                                      {"error": "flaky", "hit": n})
            return self.send_json(200, {"ok": True, "hit": n})
        if p == "/ratelimit":
            key = q.get("key", "rl")
            n = STATE.hit(key)
            if n <= int(q.get("fail", "1")):
                return self.send_json(429, {"error": "slow down"},
                                      {"Retry-After": q.get("after", "1")})
            return self.send_json(200, {"ok": True, "hit": n})
        if p.startswith("/status/"):
            return self.send_json(int(p.split("/")[2]), {"status": p.split("/")[2]})
        if p == "/slow":
            time.sleep(float(q.get("delay", "1")))
            return self.send_json(200, {"ok": True, "slow": True})
        if p == "/cut":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if p == "/conn":
            return self.send_json(200, {"conn": self.conn_id})
        if p == "/health":
            if STATE.health_up:
                return self.send_json(200, {"status": "up"})
            return self.send_json(503, {"status": "down"})
        if p == "/health/set":
            STATE.health_up = q.get("up", "1") == "1"
            return self.send_json(200, {"up": STATE.health_up})
        if p == "/count":
            with STATE.lock:
                n = STATE.hits.get(q.get("key", ""), 0)
            return self.send_json(200, {"hits": n})
        if p == "/stats":
            with STATE.lock:
                return self.send_json(200, {"connections": STATE.connections,
                                            "requests": STATE.requests})
        return self.send_json(404, {"error": "no such endpoint"})

    def sse(self, n, delay, cut):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for i in range(n):
            if delay > 0:
                time.sleep(delay)
            self.chunk(b"data: %d\n\n" % i)
        if cut:
            self.close_connection = True
            return
        if delay > 0:
            time.sleep(delay)
        self.chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default 5 drops bursts of connects

    def handle_error(self, request, client_address):
        # A client that hangs up (a cancelled or timed-out request) is normal
        # here; anything else is worth a line on stderr.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            print("httpstub: %r" % (exc,), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    signal.signal(signal.SIGINT, lambda *a: os._exit(0))

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
