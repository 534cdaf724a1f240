#!/usr/bin/env python3
"""wsclient.py - a minimal RFC 6455 WebSocket client on the Python 3 standard
library, for the Bridge's tests (tests/integration/bridge.sh).

As a module::

    from wsclient import WebSocket, HandshakeError, Closed
    ws = WebSocket.connect("ws://127.0.0.1:8000/v1/stream",
                           headers={"Authorization": "Bearer dost_..."})
    ws.send_text('{"type": "subscribe"}')
    print(ws.recv_text(timeout=5))
    ws.ping_wait(b"hi")       # sends a ping, waits for its pong
    ws.close(1000, "bye")     # and waits for the peer's close frame

connect() raises HandshakeError(status, headers, body) when the server
answers anything but 101.  recv() returns (opcode, payload) for each
complete message (fragments are joined; pings are answered, pongs kept);
a close frame from the peer is answered and raises Closed(code, reason);
the connection ending without one raises Closed(1006, ...).

connect_agent(port, key) opens a remote agent's connection with an API key
(swapped for a session token first).

For attack tests, send_frame() writes any frame (any opcode, RSV bits, FIN,
masked or not, a lying length) and send_raw() any bytes.

From the command line::

    wsclient.py [-H 'Name: value']... [--origin O] [--cacert F | -k]
                [--send TEXT]... [--stdin] [--ping] [--recv N] [--timeout S] URL

connects (exit 2 with "handshake: STATUS BODY" on stderr if refused), sends
each --send text (and, with --stdin, each line of standard input), with
--ping sends a ping and waits for its pong (printing "pong wsclient"), then
prints every message received, one per line, until N messages (--recv;
default: all until the peer closes or --timeout seconds pass without one),
and closes.  Prints "closed CODE REASON" when the peer closes.  Exit status
0, or 1 on an error (or fewer than N messages), 2 on a refused handshake.
"""

import argparse
import base64
import hashlib
import os
import select
import socket
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit

__all__ = ["WebSocket", "HandshakeError", "Closed", "mask_bytes", "connect_agent",
           "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class HandshakeError(Exception):
    """The server did not switch protocols: status (int, 0 if the
    connection closed first), headers (dict, lower-case names), body."""

    def __init__(self, status, headers, body):
        super().__init__("handshake: %s %s" % (status, body[:200]))
        self.status = status
        self.headers = headers
        self.body = body


class Closed(Exception):
    """The WebSocket is closed: code (1006 if it just ended), reason."""

    def __init__(self, code, reason=""):
        super().__init__("closed %s %s" % (code, reason))
        self.code = code
        self.reason = reason


def mask_bytes(key, data):
    """XORs data with the 4-byte masking key (RFC 6455 5.3), fast enough
    for megabytes: one big-integer XOR instead of a loop over bytes."""
    n = len(data)
    if n == 0:
        return b""
    reps = key * (n // 4 + 1)
    x = int.from_bytes(data, "little") ^ int.from_bytes(reps[:n], "little")
    return x.to_bytes(n, "little")


def _ssl_context(cafile=None, insecure=False):
    ctx = ssl.create_default_context(cafile=cafile)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class WebSocket(object):
    """One client WebSocket over a connected (maybe TLS) socket."""

    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.buf = bytearray(leftover)
        self.pongs = []          # payloads of pongs received
        self.closed = None       # Closed once the connection is over
        self.close_sent = False

    # ------------------------------------------------------------------
    # connecting

    @classmethod
    def connect(cls, url, headers=None, origin=None, timeout=10.0, cafile=None,
                insecure=False, ssl_context=None, key=None, extra_request=b""):
        """Opens url (ws:// or wss://), sends the upgrade request with the
        extra headers (a dict or a list of pairs) and checks the 101 answer.
        key overrides Sec-WebSocket-Key (for tests of bad keys)."""
        u = urlsplit(url)
        if u.scheme not in ("ws", "wss", "http", "https"):
            raise ValueError("not a ws:// or wss:// URL: %s" % url)
        tls = u.scheme in ("wss", "https")
        host = u.hostname or "127.0.0.1"
        port = u.port or (443 if tls else 80)
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl_context or _ssl_context(cafile, insecure)
            sock = ctx.wrap_socket(sock, server_hostname=host)
        if key is None:
            key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path,
                 "Host: %s:%d" % (host, port),
                 "Upgrade: websocket",
                 "Connection: Upgrade",
                 "Sec-WebSocket-Key: %s" % key,
                 "Sec-WebSocket-Version: 13"]
        if origin is not None:
            lines.append("Origin: %s" % origin)
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in items:
            lines.append("%s: %s" % (k, v))
        req = ("\r\n".join(lines) + "\r\n\r\n").encode() + extra_request
        sock.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                chunk = b""
            if not chunk:
                sock.close()
                raise HandshakeError(0, {}, data.decode("utf-8", "replace"))
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        hl = head.decode("iso-8859-1").split("\r\n")
        try:
            status = int(hl[0].split()[1])
        except (IndexError, ValueError):
            status = 0
        hdrs = {}
        for line in hl[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            n = int(hdrs.get("content-length", "0") or 0)
            sock.settimeout(2.0)
            try:
                while len(rest) < n:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            except (OSError, socket.timeout):
                pass
            sock.close()
            raise HandshakeError(status, hdrs, rest.decode("utf-8", "replace"))
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            sock.close()
            raise HandshakeError(status, hdrs, "bad Sec-WebSocket-Accept")
        sock.settimeout(None)
        return cls(sock, rest)

    # ------------------------------------------------------------------
    # sending

    @staticmethod
    def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None, mask_key=None):
        """Returns the bytes of one frame; length lies about the payload
        length when given."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            k = mask_key if mask_key is not None else os.urandom(4)
            return head + k + mask_bytes(k, payload)
        return head + payload

    def send_raw(self, data):
        """Writes bytes as they are."""
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        """Writes one frame (see frame() for the options)."""
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def ping(self, data=b""):
        self.send_frame(OP_PING, data)

    def ping_wait(self, data=b"ping", timeout=5.0):
        """Sends a ping and reads until its pong comes back; returns the
        messages (opcode, payload) that arrived meanwhile.  Raises
        TimeoutError if no pong comes in time."""
        self.ping(data)
        got = []
        deadline = time.monotonic() + timeout
        while True:
            op, payload = self.recv(timeout=max(0.0, deadline - time.monotonic()),
                                    want_pong=data)
            if op == OP_PONG:
                return got
            got.append((op, payload))

    def pong(self, data=b""):
        self.send_frame(OP_PONG, data)

    def close(self, code=1000, reason="", timeout=3.0):
        """Starts (or answers) the close handshake and waits up to timeout
        seconds for the peer's close frame; returns the peer's (code,
        reason), or None if none came.  Closes the socket."""
        peer = None
        try:
            if not self.close_sent:
                self.close_sent = True
                payload = b"" if code is None else struct.pack("!H", code) + reason.encode()
                self.send_frame(OP_CLOSE, payload)
            if self.closed is not None:
                peer = (self.closed.code, self.closed.reason)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.recv(timeout=left)
        except Closed as e:
            peer = (e.code, e.reason) if e.code != 1006 else None
        except (OSError, TimeoutError):
            pass
        self.shutdown()
        return peer

    def shutdown(self):
        """Closes the socket without a handshake."""
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------
    # receiving

    def _fill(self, deadline):
        """Reads more bytes into buf; raises TimeoutError at the deadline,
        Closed(1006) at EOF."""
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("no WebSocket frame in time")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                raise TimeoutError("no WebSocket frame in time")
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.closed = Closed(1006, "connection reset: %s" % e)
            raise self.closed
        except ssl.SSLError as e:
            self.closed = Closed(1006, "TLS error: %s" % e)
            raise self.closed
        if not chunk:
            self.closed = Closed(1006, "connection ended without a close frame")
            raise self.closed
        self.buf += chunk

    def recv_frame(self, timeout=None):
        """Returns the next frame as (fin, opcode, payload, rsv, masked)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            b = self.buf
            if len(b) >= 2:
                n = b[1] & 0x7F
                off = 2
                if n == 126:
                    off = 4
                elif n == 127:
                    off = 10
                masked = bool(b[1] & 0x80)
                if len(b) >= off:
                    if n == 126:
                        n = struct.unpack("!H", bytes(b[2:4]))[0]
                    elif n == 127:
                        n = struct.unpack("!Q", bytes(b[2:10]))[0]
                    moff = off + (4 if masked else 0)
                    if len(b) >= moff + n:
                        payload = bytes(b[moff:moff + n])
                        if masked:
                            payload = mask_bytes(bytes(b[off:moff]), payload)
                        fin = bool(b[0] & 0x80)
                        op = b[0] & 0x0F
                        rsv = (b[0] >> 4) & 7
                        del self.buf[:moff + n]
                        return fin, op, payload, rsv, masked
            if self.closed is not None:
                raise self.closed
            self._fill(deadline)

    def recv(self, timeout=None, want_pong=None):
        """Returns the next message as (opcode, payload bytes).  Pings are
        answered, pongs kept in self.pongs (a pong whose payload is
        want_pong is returned as (OP_PONG, payload)); a close frame is
        answered and raises Closed(code, reason)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parts, first_op = [], None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            fin, op, payload, _, _ = self.recv_frame(left)
            if op == OP_PING:
                if not self.close_sent:
                    self.pong(payload)
                continue
            if op == OP_PONG:
                self.pongs.append(payload)
                if want_pong is not None and payload == want_pong:
                    return OP_PONG, payload
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                if not self.close_sent:
                    self.close_sent = True
                    try:
                        self.send_frame(OP_CLOSE, payload[:2])
                    except OSError:
                        pass
                self.closed = Closed(code, reason)
                raise self.closed
            if op != OP_CONT:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def recv_text(self, timeout=None):
        """Returns the next message's text (binary is decoded too)."""
        _, payload = self.recv(timeout)
        return payload.decode("utf-8", "replace")

    def wait_closed(self, timeout=5.0):
        """Reads (and drops) messages until the peer closes; returns the
        Closed exception, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the peer did not close in time")
            try:
                self.recv(timeout=left)
            except Closed as e:
                return e


def connect_agent(port, key, timeout=10.0):
    """Swaps an API key for a session token (POST /v1/auth/token) and opens
    the Bridge's stream on 127.0.0.1:port with it: a remote agent's
    connection, before its hello."""
    import json
    import urllib.request
    req = urllib.request.Request("http://127.0.0.1:%s/v1/auth/token" % port, method="POST",
                                 headers={"Authorization": "Bearer " + key})
    tok = json.load(urllib.request.urlopen(req, timeout=timeout))["token"]
    return WebSocket.connect("ws://127.0.0.1:%s/v1/stream" % port,
                             headers={"Authorization": "Bearer " + tok}, timeout=timeout)


def main(argv=None):
    ap = argparse.ArgumentParser(description="A minimal WebSocket client.")
    ap.add_argument("url")
    ap.add_argument("-H", "--header", action="append", default=[],
                    help="an extra request header, 'Name: value'")
    ap.add_argument("--origin")
    ap.add_argument("--cacert", help="CA file for wss://")
    ap.add_argument("-k", "--insecure", action="store_true", help="no certificate check")
    ap.add_argument("--send", action="append", default=[], help="a text message to send")
    ap.add_argument("--stdin", action="store_true", help="send each line of stdin too")
    ap.add_argument("--recv", type=int, default=None, help="messages to wait for")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--ping", action="store_true", help="send a ping and wait for its pong")
    a = ap.parse_args(argv)
    headers = []
    for h in a.header:
        if ":" not in h:
            ap.error("bad header %r" % h)
        k, v = h.split(":", 1)
        headers.append((k.strip(), v.strip()))
    try:
        ws = WebSocket.connect(a.url, headers=headers, origin=a.origin, timeout=a.timeout,
                               cafile=a.cacert, insecure=a.insecure)
    except HandshakeError as e:
        sys.stderr.write("handshake: %s %s\n" % (e.status, e.body))
        return 2
    except OSError as e:
        sys.stderr.write("wsclient: %s\n" % e)
        return 1
    try:
        msgs = list(a.send)
        if a.stdin:
            msgs += [line.rstrip("\n") for line in sys.stdin]
        for m in msgs:
            ws.send_text(m)
        got = 0
        if a.ping:
            try:
                before = ws.ping_wait(b"wsclient", timeout=a.timeout)
            except TimeoutError:
                sys.stderr.write("wsclient: no pong\n")
                return 1
            for _, payload in before:
                print(payload.decode("utf-8", "replace"), flush=True)
                got += 1
            print("pong wsclient", flush=True)
        while a.recv is None or got < a.recv:
            try:
                op, payload = ws.recv(timeout=a.timeout)
            except TimeoutError:
                if a.recv is not None:
                    sys.stderr.write("wsclient: %d of %d messages\n" % (got, a.recv))
                    return 1
                break
            print(payload.decode("utf-8", "replace"), flush=True)
            got += 1
        ws.close()
        return 0
    except Closed as e:
        print("closed %s %s" % (e.code, e.reason), flush=True)
        ws.shutdown()
        return 0
    except OSError as e:
        sys.stderr.write("wsclient: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
