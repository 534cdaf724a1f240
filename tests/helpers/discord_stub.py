#!/usr/bin/env python3
"""discord_stub.py - a local stand-in for Discord webhooks, for
tests/integration/discord.sh.  Only the Python 3 standard library.

Two HTTP servers on 127.0.0.1, on ephemeral ports; the first stdout line is
"WEBHOOK_PORT CONTROL_PORT".  Exits when its stdin is closed or on SIGTERM.

Webhook port (what the extension talks to):

  POST /api/webhooks/ID/TOKEN[?...]
      Checks the request like Discord: Content-Type application/json, a
      JSON object body, "content" a non-empty string of at most 2,000
      characters (else 400 with Discord's error body, and the request is
      recorded as invalid).  Then answers what the script of hook ID says
      (see /stub/script), by default 204 No Content with X-RateLimit-*
      headers that never ask to wait.

Control port (what the test talks to):

  GET  /stub/messages      every request seen, in order of arrival:
                           [{hook, token, content, t, status, valid, error,
                             content_type, username}]  (t: monotonic s)
  POST /stub/script?hook=ID&codes=429,500,500
                           the next requests to hook ID get these statuses
                           (429: {"retry_after": R, "global": false,
                           "message": "You are being rate limited."} with
                           Retry-After and X-RateLimit-* headers, R from
                           &retry_after=, default 0.5; 500: Discord's 500
                           body; 404: "Unknown Webhook"), then 204 again
  POST /stub/down          closes the webhook port and every connection to
                           it: connections are refused
  POST /stub/up            listens on the same webhook port again
  POST /stub/reset         forgets the requests and scripts
"""

import json
import math
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
MESSAGES = []
SCRIPTS = {}  # hook id -> [status, ...]
RETRY_AFTER = {}  # hook id -> seconds
CONNS = set()  # sockets of open webhook connections
HOOK = {"server": None, "port": 0}


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "discord-stub/1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def answer(self, status, obj=None, extra=None):
        data = b"" if obj is None else (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)
        self.wfile.flush()


class Webhook(Base):
    def setup(self):
        super().setup()
        with LOCK:
            CONNS.add(self.connection)

    def finish(self):
        with LOCK:
            CONNS.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_POST(self):
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        raw = self.body()
        if len(parts) != 4 or parts[:2] != ["api", "webhooks"]:
            self.answer(404, {"message": "404: Not Found", "code": 0})
            return
        hook, token = parts[2], parts[3]
        rec = {"hook": hook, "token": token, "t": time.monotonic(), "content": None,
               "valid": False, "error": None, "username": None,
               "content_type": self.headers.get("Content-Type")}
        err = None
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            err = "Content-Type is not application/json"
        else:
            try:
                b = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                b = None
                err = "the body is not JSON"
            if err is None and not isinstance(b, dict):
                err = "the body is not a JSON object"
            if err is None:
                c = b.get("content")
                rec["username"] = b.get("username")
                if not isinstance(c, str) or c == "":
                    err = "no content"
                else:
                    rec["content"] = c
                    if len(c) > 2000:
                        err = "content longer than 2000 characters (%d)" % len(c)
        rec["valid"] = err is None
        rec["error"] = err
        if err is not None:
            rec["status"] = 400
            with LOCK:
                MESSAGES.append(rec)
            self.answer(400, {"message": "Invalid Form Body", "code": 50035,
                              "errors": {"content": err}})
            return
        with LOCK:
            script = SCRIPTS.get(hook) or []
            status = script.pop(0) if script else 204
            ra = RETRY_AFTER.get(hook, 0.5)
            rec["status"] = status
            MESSAGES.append(rec)
        if status == 429:
            self.answer(429, {"retry_after": ra, "global": False,
                              "message": "You are being rate limited."},
                        {"Retry-After": str(int(math.ceil(ra))),
                         "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                         "X-RateLimit-Reset-After": str(ra),
                         "X-RateLimit-Scope": "user"})
        elif status == 500:
            self.answer(500, {"message": "500: Internal Server Error", "code": 0})
        elif status == 404:
            self.answer(404, {"message": "Unknown Webhook", "code": 10015})
        elif status == 204:
            self.answer(204, None, {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4",
                                    "X-RateLimit-Reset-After": "0.4"})
        else:
            self.answer(status, {"message": "scripted %d" % status, "code": 0})


def hook_up(port):
    srv = Server(("127.0.0.1", port), Webhook)
    HOOK["server"] = srv
    HOOK["port"] = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def hook_down():
    srv = HOOK["server"]
    if srv is None:
        return
    HOOK["server"] = None
    srv.shutdown()
    srv.server_close()
    with LOCK:
        conns = list(CONNS)
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Control(Base):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/stub/messages":
            with LOCK:
                self.answer(200, list(MESSAGES))
        else:
            self.answer(404, {"message": "no such path"})

    def do_POST(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        self.body()
        if url.path == "/stub/script":
            hook = q.get("hook", [""])[0]
            codes = [int(c) for c in q.get("codes", [""])[0].split(",") if c]
            with LOCK:
                SCRIPTS[hook] = codes
                if "retry_after" in q:
                    RETRY_AFTER[hook] = float(q["retry_after"][0])
            self.answer(200, {"hook": hook, "codes": codes})
        elif url.path == "/stub/down":
            hook_down()
            self.answer(200, {"down": True})
        elif url.path == "/stub/up":
            if HOOK["server"] is None:
                hook_up(HOOK["port"])
            self.answer(200, {"up": True})
        elif url.path == "/stub/reset":
            with LOCK:
                MESSAGES.clear()
                SCRIPTS.clear()
                RETRY_AFTER.clear()
            self.answer(200, {"reset": True})
        else:
            self.answer(404, {"message": "no such path"})


def main():
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    hook_up(0)
    ctl = Server(("127.0.0.1", 0), Control)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    sys.stdout.write("%d %d\n" % (HOOK["port"], ctl.server_address[1]))
    sys.stdout.flush()
    # Ends when stdin closes (the test holds it open).
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, KeyboardInterrupt):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
