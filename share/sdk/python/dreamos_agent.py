"""dreamos_agent — write Dream.OS agents in Python (standard library only).

An agent is a process that speaks the CellPhone protocol v1 with the Dream.OS
orchestrator: newline-delimited JSON, one object per line, orchestrator ->
agent on the agent's stdin, agent -> orchestrator on its stdout.  Whatever the
agent writes to stderr is captured, line by line, into the central log.  The
protocol is documented in dreamos-protocol(7).

This module is one file with no dependencies beyond the standard library
(Python 3.9 or later).  It runs a single-threaded select() loop: incoming
lines are dispatched to handlers, timers (call_later, call_every) and
heartbeats run between them.  No threads are needed and handlers never race.

Example::

    from dreamos_agent import Agent

    class Echo(Agent):
        def on_welcome(self, info):
            self.subscribe("#news")
            self.log("info", "ready", session=info.get("session"))

        def on_message(self, msg):
            # Returning normally acknowledges the message; raising does not,
            # so the orchestrator delivers it again later.
            self.reply(msg, {"echo": msg["body"]})

        def on_task(self, task):
            self.progress(task["id"], 50, "halfway")
            return {"length": len(str(task["payload"]))}  # -> task.done

    if __name__ == "__main__":
        Echo(capabilities=["echo"]).run()

The same with decorators instead of a subclass::

    agent = Agent(capabilities=["echo"])

    @agent.on("message")
    def handle(msg):
        agent.reply(msg, {"echo": msg["body"]})

    agent.run()

Handlers (override the method, or register a function with ``on(event)``):

=================  ==========================  =================================
event              method                      called on
=================  ==========================  =================================
``welcome``        on_welcome(info)            the orchestrator's ``welcome``
``message``        on_message(msg)             ``message``; auto-ack on return
``task``           on_task(task)               ``task.assign``; return -> done
``task_cancel``    on_task_cancel(task_id)     ``task.cancel``
``command``        on_command(name, args)      ``command`` (pause, stop, ping…)
``error``          on_error(code, detail, ref) ``error``
``sent``           on_sent(ref, id)            ``sent`` (a send is durable)
``stop``           on_stop()                   the loop ends (stop, EOF, signal)
``unknown``        on_unknown(msg)             any other message type
=================  ==========================  =================================

Notes:

* Handlers run inside the loop, one at a time: keep them short.  To wait,
  schedule a timer (``call_later``) instead of sleeping; while a handler
  blocks, no heartbeats go out and the orchestrator may restart the agent.
* Standard output is the protocol channel.  On the first protocol write the
  SDK moves it to a private file descriptor and points fd 1 (and
  ``sys.stdout``) at stderr, so a stray ``print()`` in an agent, or the output
  of a program it runs, ends up in the log instead of corrupting the protocol.
  Pass ``protect_stdout=False`` to keep fd 1 as it is.
* If the orchestrator goes away (EPIPE on write, EOF on read), ``run()``
  returns quietly and the process can exit 0.
* SIGTERM and SIGINT end ``run()`` cleanly too (unless the program installed
  its own handlers).
* Set ``DREAMOS_AGENT_TRACE=1`` to copy every protocol line to stderr.

Remote agents (over the Bridge)
-------------------------------

The same Agent can run on another machine and reach dreamos through the
Bridge (dreamos-bridge(7)) instead of stdin/stdout: give it the Bridge's
address and an API key of role ``agent`` (``dreamos ctl apikey create NAME
--role agent``), as constructor arguments or in the environment::

    Echo(bridge_url="ws://10.0.0.5:8000", api_key="dos_...").run()

    DREAMOS_BRIDGE_URL=wss://bridge.example:8000 DREAMOS_API_KEY=dos_... ./echo.py

The URL may be ``ws://``, ``wss://``, ``http://`` or ``https://`` with an
optional path (default ``/v1/stream``).  On each connection the agent
exchanges the API key for a session token (``POST /v1/auth/token``), opens a
WebSocket to the stream with ``Authorization: Bearer TOKEN`` and speaks the
same protocol, one message per text frame.  Its name defaults to the key's
name (an agent key may only speak as itself).  When the connection drops it
reconnects with exponential backoff (``reconnect_delay`` doubling up to
``reconnect_max_delay``), says hello again and gets its unacknowledged
messages and unfinished tasks back; what the agent sends while disconnected
waits in memory (heartbeats excepted) and goes out after the new hello.
A refused key (401/403), a key of another role or a ``name_mismatch`` close
is not retried: run() raises BridgeError.  For wss:// with a private CA give
``cafile`` (or $DREAMOS_BRIDGE_CAFILE).  Only the standard library is used
(socket, ssl, http.client): no threads either.
"""

import base64
import collections
import errno
import hashlib
import heapq
import http.client
import itertools
import json
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import sys
import time
import traceback
from urllib.parse import urlsplit

__all__ = [
    "Agent",
    "TaskError",
    "ProtocolError",
    "OrchestratorGone",
    "BridgeError",
    "PROTO_VERSION",
    "PRIORITIES",
    "MODES",
    "LEVELS",
]

__version__ = "1.0.0"

#: CellPhone protocol version spoken by this module.
PROTO_VERSION = 1

#: Message priorities, lowest first.
PRIORITIES = ("low", "normal", "high", "urgent")

#: Message modes (the seeds' vocabulary).
MODES = ("NORMAL", "TASK", "SYSTEM", "CAPTAIN", "SYNC", "VERIFY", "REPAIR",
         "BACKUP", "RESTORE", "CLEANUP", "INTEGRATE")

#: Log levels, lowest first.
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")

_LEVEL_ALIASES = {"warning": "warn", "critical": "fatal", "err": "error"}

_DEFAULT_HEARTBEAT = 5.0
_READ_CHUNK = 65536


class TaskError(Exception):
    """Raise from on_task to fail a task with control over retries.

    ``raise TaskError("bad input", retry=False)`` sends
    ``task.fail {error: "bad input", retry: false}``; any other exception
    fails the task with ``retry: true``.
    """

    def __init__(self, error, retry=True):
        super().__init__(error)
        self.error = str(error)
        self.retry = bool(retry)


class ProtocolError(Exception):
    """An ``error`` reply from the orchestrator to a request we wait for
    (``send(..., wait_sent=True)``).  Attributes: code, detail, ref."""

    def __init__(self, code, detail, ref=None):
        super().__init__("%s: %s" % (code, detail))
        self.code = code
        self.detail = detail
        self.ref = ref


class OrchestratorGone(SystemExit):
    """The orchestrator closed the connection (EPIPE or EOF).

    A SystemExit with status 0, so it passes through ``except Exception``
    in handlers and, outside ``run()``, ends the program quietly.  ``run()``
    catches it and returns."""

    def __init__(self):
        super().__init__(0)


class BridgeError(ConnectionError):
    """A Bridge connection that cannot work and is not retried: the API
    key was refused (401/403), it is not an agent key, or the orchestrator
    closed the WebSocket for a reason that another try would not change
    (name_mismatch).  Attributes: status (HTTP status or close code),
    detail."""

    def __init__(self, status, detail):
        super().__init__("Bridge: %s %s" % (status, detail))
        self.status = status
        self.detail = detail


class _LinkDown(Exception):
    """The WebSocket to the Bridge ended (code, reason); retry says whether
    reconnecting may help."""

    def __init__(self, code, reason, retry=True):
        super().__init__("%s %s" % (code, reason))
        self.code = code
        self.reason = reason
        self.retry = retry


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Close codes after which reconnecting cannot help: policy violation,
# name_mismatch (4003), a forbidden key (4001/4403 if a server uses them).
_WS_FATAL_CODES = (1008, 4001, 4003, 4403)
_OUTBOX_MAX = 100000


def _ws_mask(key, data):
    """XORs data with the 4-byte masking key (RFC 6455 section 5.3) as one
    big-integer operation, which is much faster than a loop over bytes."""
    n = len(data)
    if n == 0:
        return b""
    reps = key * (n // 4 + 1)
    return (int.from_bytes(data, "little")
            ^ int.from_bytes(reps[:n], "little")).to_bytes(n, "little")


def _ws_frame(opcode, payload):
    """Returns one masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + _ws_mask(key, payload)


class _BridgeLink(object):
    """One agent's connection to the Bridge: the token exchange, the
    WebSocket handshake and RFC 6455 framing over a non-blocking socket
    (TLS for wss:// and https://).  Received text messages collect in
    self.inbox (bytes); the Agent's loop takes them from there."""

    def __init__(self, url, api_key, cafile=None, ssl_context=None, timeout=10.0):
        u = urlsplit(url if "://" in url else "ws://" + url)
        if u.scheme not in ("ws", "wss", "http", "https"):
            raise ValueError("bridge URL must be ws://, wss://, http:// or https://: %r" % url)
        self.url = url
        self.tls = u.scheme in ("wss", "https")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.tls else 80)
        path = u.path.rstrip("/")
        if path.endswith("/v1/stream"):
            prefix = path[:-len("/v1/stream")]
            self.stream_path = path
        elif path:
            prefix = ""
            self.stream_path = path
        else:
            prefix = ""
            self.stream_path = "/v1/stream"
        self.token_path = prefix + "/v1/auth/token"
        self.api_key = api_key
        self.timeout = float(timeout)
        self.ssl_context = ssl_context
        if self.tls and ssl_context is None:
            self.ssl_context = ssl.create_default_context(cafile=cafile)
        self.sock = None
        self.inbuf = bytearray()
        self.out = bytearray()       # frames not yet written
        self.inbox = collections.deque()
        self.frags = []              # a fragmented message being received
        self.close_sent = False
        self.principal = None        # the token answer: name, role, ...

    @property
    def connected(self):
        return self.sock is not None

    def fileno(self):
        return self.sock.fileno()

    # -- connecting ----------------------------------------------------

    def _token(self):
        """Exchanges the API key for a session token; returns the answer."""
        if self.tls:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.token_path, body=b"",
                         headers={"Authorization": "Bearer " + self.api_key,
                                  "Content-Length": "0"})
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
        finally:
            conn.close()
        try:
            j = json.loads(body.decode("utf-8", "replace"))
        except ValueError:
            j = None
        if status == 200 and isinstance(j, dict) and isinstance(j.get("token"), str):
            return j
        detail = body.decode("utf-8", "replace")[:300]
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            detail = str(j["error"].get("message") or detail)
        if status in (401, 403):
            raise BridgeError(status, "POST %s: %s" % (self.token_path, detail))
        raise _LinkDown(status, "POST %s: %s" % (self.token_path, detail))

    def connect(self):
        """Gets a token and opens the WebSocket.  Returns the token answer
        ({token, name, role, ...}).  Raises BridgeError (do not retry),
        _LinkDown or OSError (retry)."""
        info = self._token()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            key = base64.b64encode(os.urandom(16)).decode()
            req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (self.stream_path, self.host, self.port, key, info["token"]))
            sock.sendall(req.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise _LinkDown(1006, "connection closed during the WebSocket handshake")
                data += chunk
                if len(data) > 65536:
                    raise _LinkDown(1002, "WebSocket handshake answer too long")
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.decode("iso-8859-1").split("\r\n")
            try:
                status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                raise _LinkDown(1002, "bad handshake answer %r" % lines[0][:100])
            hdrs = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip()
            if status != 101:
                detail = "GET %s: %d %s" % (self.stream_path, status,
                                            rest.decode("utf-8", "replace")[:300])
                if status in (401, 403):
                    raise BridgeError(status, detail)
                raise _LinkDown(status, detail)
            want = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            if hdrs.get("sec-websocket-accept") != want:
                raise _LinkDown(1002, "bad Sec-WebSocket-Accept")
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        self.inbuf = bytearray(rest)
        self.out = bytearray()
        self.frags = []
        self.close_sent = False
        self.principal = info
        self._parse()
        return info

    def close(self, code=1000, reason=""):
        """Sends a close frame (best effort) and closes the socket."""
        if self.sock is None:
            return
        if not self.close_sent:
            self.close_sent = True
            self.out += _ws_frame(0x8, struct.pack("!H", code) + reason.encode()[:120])
            try:
                self._flush(wait=0.5)
            except (_LinkDown, OSError):
                pass
        self.drop()

    def drop(self):
        """Closes the socket at once."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.out = bytearray()

    # -- reading -------------------------------------------------------

    def pending(self):
        """True if TLS holds decrypted bytes that select() cannot see."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def pump(self, flush=True):
        """Reads what the socket has (without blocking) and parses it;
        complete text messages go to self.inbox, pongs to self.out (sent
        now unless flush is false).  Raises _LinkDown when the connection
        has ended."""
        if self.sock is None:
            raise _LinkDown(1006, "not connected")
        while True:
            try:
                chunk = self.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                break
            except (OSError, ssl.SSLError) as e:
                self.drop()
                raise _LinkDown(1006, "connection lost: %s" % e)
            if not chunk:
                self.drop()
                raise _LinkDown(1006, "connection closed without a close frame")
            self.inbuf += chunk
            if len(chunk) < _READ_CHUNK and not self.pending():
                break
        self._parse()
        if flush and self.out:
            self._flush(wait=0)          # pongs

    def _parse(self):
        """Takes the complete frames out of inbuf."""
        b = self.inbuf
        pos = 0
        end = len(b)
        while end - pos >= 2:
            b0, b1 = b[pos], b[pos + 1]
            n = b1 & 0x7F
            off = pos + 2
            if n == 126:
                if end - off < 2:
                    break
                n = (b[off] << 8) | b[off + 1]
                off += 2
            elif n == 127:
                if end - off < 8:
                    break
                n = int.from_bytes(b[off:off + 8], "big")
                off += 8
            mkey = None
            if b1 & 0x80:                # servers do not mask; accept it anyway
                if end - off < 4:
                    break
                mkey = bytes(b[off:off + 4])
                off += 4
            if end - off < n:
                break
            payload = bytes(b[off:off + n])
            if mkey is not None:
                payload = _ws_mask(mkey, payload)
            pos = off + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.sock is None:
                break
        if pos:
            del b[:pos]

    def _frame(self, fin, op, payload):
        """Handles one received frame."""
        if op == 0x9:                    # ping
            if not self.close_sent:
                self.out += _ws_frame(0xA, payload)
        elif op == 0xA:                  # pong
            pass
        elif op == 0x8:                  # close: answer it, then it is over
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            if not self.close_sent:
                self.close_sent = True
                self.out += _ws_frame(0x8, payload[:2])
                try:
                    self._flush(wait=0.2)
                except (_LinkDown, OSError):
                    pass
            self.drop()
            raise _LinkDown(code, reason, retry=code not in _WS_FATAL_CODES)
        elif op in (0x0, 0x1, 0x2):
            self.frags.append(payload)
            if fin:
                msg = b"".join(self.frags)
                self.frags = []
                self.inbox.append(msg)

    # -- writing -------------------------------------------------------

    def send(self, data):
        """Sends data (bytes) as one text frame.  While the socket is full
        it keeps reading, so that neither side waits for the other."""
        if self.sock is None:
            raise _LinkDown(1006, "not connected")
        self.out += _ws_frame(0x1, data)
        self._flush(wait=None)

    def _flush(self, wait):
        """Writes self.out: wait None means until all is written, else at
        most wait seconds."""
        deadline = None if wait is None else time.monotonic() + wait
        while self.out and self.sock is not None:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                n = 0
            except (OSError, ssl.SSLError) as e:
                self.drop()
                raise _LinkDown(1006, "connection lost: %s" % e)
            if n:
                del self.out[:n]
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            r, w, _ = select.select([self.sock], [self.sock], [],
                                    1.0 if left is None else min(left, 1.0))
            if r and not w:
                # Read while we cannot write (the peer may be waiting for us
                # to read before it reads again); pongs queue behind.
                self.pump(flush=False)


class _Later(object):
    """The type of Agent.LATER (a singleton marker)."""

    def __repr__(self):
        return "Agent.LATER"

    def __reduce__(self):
        return "LATER"


LATER = _Later()


class _SignalStop(BaseException):
    """Raised by the signal handler to interrupt a blocking select()."""


class Timer(object):
    """A handle returned by call_later / call_every; cancel() stops it."""

    __slots__ = ("when", "fn", "args", "interval", "cancelled")

    def __init__(self, when, fn, args, interval=None):
        self.when = when
        self.fn = fn
        self.args = args
        self.interval = interval
        self.cancelled = False

    def cancel(self):
        """Stops the timer; safe to call more than once."""
        self.cancelled = True


def _default_name():
    """Returns $DREAMOS_AGENT_NAME, else argv[0]'s basename without .py,
    reduced to the characters allowed in agent names."""
    name = os.environ.get("DREAMOS_AGENT_NAME")
    if name:
        return name
    base = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "")
    if base.endswith(".py"):
        base = base[:-3]
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", base)[:64].strip("-")
    if not base or base in ("-c", "c", "-m", "m"):
        base = "agent"
    return base


def _default_heartbeat():
    """Returns $DREAMOS_HEARTBEAT_INTERVAL as seconds, else 5."""
    raw = os.environ.get("DREAMOS_HEARTBEAT_INTERVAL")
    if raw:
        try:
            return float(raw)
        except ValueError:
            pass
    return _DEFAULT_HEARTBEAT


def _json_default(obj):
    """Makes non-JSON values encodable: sets and tuples become lists, bytes
    text, anything else its str()."""
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, _Later):
        return None
    return str(obj)


class Agent(object):
    """A Dream.OS agent speaking CellPhone protocol v1 over stdin/stdout.

    Arguments:
        name: agent name sent in ``hello``; default $DREAMOS_AGENT_NAME (the
            orchestrator sets it), else the program's basename.
        capabilities: capabilities announced in ``hello`` (task routing).
        max_tasks: tasks this agent accepts at once.
        version: the agent's version string, sent in ``hello``.
        heartbeat_interval: seconds between heartbeats; default
            $DREAMOS_HEARTBEAT_INTERVAL, else 5; 0 or less disables them.
        auto_ack: acknowledge each message after on_message returns.
        protect_stdout: move the protocol off fd 1 (see the module notes).
        bridge_url: connect to the Bridge at this URL (ws://, wss://,
            http:// or https://) instead of speaking on stdin/stdout;
            default $DREAMOS_BRIDGE_URL (see "Remote agents" above).
        api_key: the agent's API key for the Bridge; default
            $DREAMOS_API_KEY.
        cafile: CA certificates (PEM) for a wss:// Bridge; default
            $DREAMOS_BRIDGE_CAFILE, else the system's.
        ssl_context: an ssl.SSLContext to use instead (wss://).
        reconnect: reconnect when the Bridge connection drops (default
            True); without it a drop ends run() as EOF does.
        reconnect_delay, reconnect_max_delay: the first wait before
            reconnecting and its cap (seconds); it doubles on each failed
            try and is reset by a welcome.

    After ``welcome``: ``self.agent`` is the name the orchestrator knows us
    by, ``self.session`` its session id, ``self.welcome_info`` the message.
    ``self.tasks`` maps the ids of tasks in progress to their task dicts;
    ``self.paused`` follows the pause/resume commands.
    """

    #: Return this from on_task (or on_message) to finish later yourself
    #: with done()/fail() (or ack()).
    LATER = LATER

    def __init__(self, name=None, capabilities=(), max_tasks=1,
                 version=__version__, heartbeat_interval=None, auto_ack=True,
                 protect_stdout=True, bridge_url=None, api_key=None, cafile=None,
                 ssl_context=None, reconnect=True, reconnect_delay=0.5,
                 reconnect_max_delay=30.0):
        self._name_given = bool(name or os.environ.get("DREAMOS_AGENT_NAME"))
        self.name = name or _default_name()
        if isinstance(capabilities, str):
            capabilities = [capabilities]
        self.capabilities = [str(c) for c in capabilities]
        self.max_tasks = int(max_tasks)
        self.version = str(version)
        if heartbeat_interval is None:
            heartbeat_interval = _default_heartbeat()
        self.heartbeat_interval = float(heartbeat_interval)
        self.auto_ack = auto_ack
        self.protect_stdout = protect_stdout
        self.trace = os.environ.get("DREAMOS_AGENT_TRACE", "") not in ("", "0")

        self.agent = self.name
        self.session = None
        self.welcome_info = None
        self.welcomed = False
        self.paused = False
        self.running = False
        self.tasks = {}              # task id -> task dict, in progress
        self.sent_ids = {}           # ref -> message id, for answered sends
        self._pending = {}           # ref -> callback or None, awaiting `sent`
        self._cancelled = set()      # task ids cancelled while in progress
        self._handlers = {}
        self._timers = []            # heap of (when, seq, Timer)
        self._seq = itertools.count()
        self._refs = itertools.count(1)
        self._backlog = collections.deque()
        self._inbuf = b""
        self._in_fd = None
        self._out_fd = None
        self._eof = False
        self._gone = False
        self._stopping = False
        self._in_select = False
        self._next_heartbeat = None
        self._hello_sent = False

        # The Bridge transport (None: stdin/stdout).
        self._link = None
        if bridge_url is None:
            bridge_url = os.environ.get("DREAMOS_BRIDGE_URL") or None
        if bridge_url:
            if api_key is None:
                api_key = os.environ.get("DREAMOS_API_KEY") or None
            if not api_key:
                raise ValueError("a Bridge connection needs an agent API key "
                                 "(api_key= or $DREAMOS_API_KEY)")
            if cafile is None:
                cafile = os.environ.get("DREAMOS_BRIDGE_CAFILE") or None
            self._link = _BridgeLink(bridge_url, api_key, cafile=cafile,
                                     ssl_context=ssl_context)
        self.reconnect_enabled = bool(reconnect)
        self.reconnect_delay = max(0.01, float(reconnect_delay))
        self.reconnect_max_delay = max(self.reconnect_delay, float(reconnect_max_delay))
        self.bridge_error = None     # a BridgeError that ended the connection
        self.connections = 0         # Bridge connections made so far
        self._backoff = self.reconnect_delay
        self._reconnect_at = None    # monotonic time of the next try
        self._link_started = False
        self._outbox = collections.deque()   # encoded lines sent while down
        self._outbox_warned = False

    # ------------------------------------------------------------------
    # handler registration

    def on(self, event):
        """Decorator registering fn as the handler of event (see the table
        in the module docstring); it replaces the on_<event> method and is
        called with the same arguments, without self."""
        names = ("welcome", "message", "task", "task_cancel", "command",
                 "error", "sent", "stop", "unknown")
        if event not in names:
            raise ValueError("unknown event %r (one of %s)" % (event, ", ".join(names)))

        def register(fn):
            self._handlers[event] = fn
            return fn
        return register

    def _handler(self, event):
        """Returns the function to call for event."""
        return self._handlers.get(event) or getattr(self, "on_" + event)

    # ------------------------------------------------------------------
    # overridable handlers (defaults)

    def on_welcome(self, info):
        """Called once the orchestrator has accepted our hello.  info is the
        welcome message: {proto, agent, session}."""

    def on_message(self, msg):
        """Called for each message {id, from, to, body, priority, mode, ts,
        attempt, reply_to?}.  Returning acknowledges it (unless auto_ack is
        off or it returns Agent.LATER); raising leaves it unacknowledged so
        the orchestrator redelivers it."""

    def on_task(self, task):
        """Called for each task.assign with the task dict {id, title,
        payload, priority, capability, timeout_s, attempt}.  The return
        value is sent as the result (task.done); Agent.LATER means the agent
        calls done()/fail() itself later; an exception fails the task."""
        raise TaskError("agent %s has no task handler" % self.agent, retry=True)

    def on_task_cancel(self, task_id):
        """Called when the orchestrator cancels a task in progress.  Later
        done()/fail()/progress() calls for it are dropped."""

    def on_command(self, name, args):
        """Called for captain commands.  The default answers ``ping`` with
        a heartbeat and tracks ``pause``/``resume`` in self.paused; ``stop``
        ends run() after this handler returns, whatever it does."""
        if name == "ping":
            self.heartbeat()
        elif name == "pause":
            self.paused = True
            self.log("info", "paused")
        elif name == "resume":
            self.paused = False
            self.log("info", "resumed")
        elif name != "stop":
            self.log("debug", "command %s ignored" % name)

    def on_error(self, code, detail, ref):
        """Called for error replies from the orchestrator; the default
        writes them to stderr (and so to the central log)."""
        self._stderr("orchestrator error %s: %s%s"
                     % (code, detail, " (ref %s)" % ref if ref else ""))

    def on_sent(self, ref, msg_id):
        """Called when a message we sent is durable: ref is what send()
        returned, msg_id the id the orchestrator gave it."""

    def on_stop(self):
        """Called once when run() ends (stop command, EOF or signal)."""

    def on_unknown(self, msg):
        """Called for message types this SDK does not know."""
        self._stderr("ignoring message of type %r" % msg.get("type"))

    # ------------------------------------------------------------------
    # agent -> orchestrator

    def _new_ref(self, prefix="r"):
        """Returns a fresh request reference, unique for this process."""
        return "%s%d" % (prefix, next(self._refs))

    @property
    def transport(self):
        """"bridge" for a remote agent, else "stdio"."""
        return "stdio" if self._link is None else "bridge"

    def _hello_msg(self):
        return {"type": "hello", "proto": PROTO_VERSION, "name": self.name,
                "capabilities": self.capabilities,
                "max_tasks": self.max_tasks, "version": self.version}

    def hello(self):
        """Sends hello (run() does it; call it only when driving the loop
        yourself)."""
        self._setup_io()    # over the Bridge the name may come from the key
        self._hello_sent = True
        self.write(self._hello_msg())

    def reconnect(self):
        """Over the Bridge: drops the connection at once and connects again
        after the usual backoff, as after a network failure (the
        orchestrator then redelivers what was not acknowledged).  Raises
        RuntimeError for an agent on stdin/stdout."""
        if self._link is None:
            raise RuntimeError("reconnect() is for agents connected through the Bridge")
        self._setup_io()
        if self._link.connected:
            self._link.drop()
            self._bridge_down(_LinkDown(1006, "reconnect() called"))

    def heartbeat(self, load=None):
        """Sends a heartbeat, with the optional load figure."""
        msg = {"type": "heartbeat"}
        if load is not None:
            msg["load"] = load
        self.write(msg)

    def send(self, to, body, priority=None, mode=None, reply_to=None,
             wait_sent=False, timeout=30.0, on_sent=None):
        """Sends body (any JSON value) to an agent name, "*" (everyone) or
        "#topic".  Returns the request ref; the orchestrator answers
        ``sent`` {ref, id} once the message is durable, which calls
        on_sent(ref, id) and the optional per-call callback on_sent(id).

        With wait_sent=True it waits (reading, but not dispatching, other
        messages) for that answer and returns the message id instead;
        raises ProtocolError if the orchestrator refuses the message and
        TimeoutError after timeout seconds."""
        ref = self._new_ref("r")
        msg = {"type": "send", "to": to, "body": body, "ref": ref}
        if priority is not None:
            msg["priority"] = priority
        if mode is not None:
            msg["mode"] = mode
        if reply_to is not None:
            msg["reply_to"] = reply_to
        self._pending[ref] = on_sent
        try:
            self.write(msg)
        except (TypeError, ValueError):
            del self._pending[ref]
            raise
        if wait_sent:
            return self.wait_for(ref, timeout)
        return ref

    def reply(self, msg, body, **kwargs):
        """Sends body back to the sender of msg, as a reply to it."""
        kwargs.setdefault("reply_to", msg.get("id"))
        return self.send(msg.get("from"), body, **kwargs)

    def broadcast(self, body, **kwargs):
        """Sends body to every agent; same options as send()."""
        return self.send("*", body, **kwargs)

    def publish(self, topic, body, **kwargs):
        """Sends body to the subscribers of topic ("news" or "#news");
        same options as send()."""
        return self.send("#" + topic.lstrip("#"), body, **kwargs)

    def subscribe(self, topic):
        """Subscribes to topic ("news" or "#news"; sent without the '#')."""
        self.write({"type": "subscribe", "topic": topic.lstrip("#")})

    def unsubscribe(self, topic):
        """Unsubscribes from topic."""
        self.write({"type": "unsubscribe", "topic": topic.lstrip("#")})

    def ack(self, msg_id):
        """Acknowledges message msg_id: the agent has taken it."""
        self.write({"type": "ack", "id": msg_id})

    def _task_live(self, task_id, what):
        """Returns False (and says why on stderr) if task_id was cancelled."""
        if task_id in self._cancelled:
            self._stderr("task %s was cancelled: %s dropped" % (task_id, what))
            return False
        return True

    def progress(self, task_id, pct, note=None):
        """Reports progress on a task, pct in 0-100 (clamped)."""
        if not self._task_live(task_id, "progress"):
            return
        pct = max(0, min(100, pct))
        msg = {"type": "task.progress", "task": task_id, "pct": pct}
        if note is not None:
            msg["note"] = note
        self.write(msg)

    def done(self, task_id, result=None):
        """Finishes a task successfully, with an optional JSON result."""
        self.tasks.pop(task_id, None)
        if not self._task_live(task_id, "done"):
            self._cancelled.discard(task_id)
            return
        msg = {"type": "task.done", "task": task_id}
        if result is not None:
            msg["result"] = result
        self.write(msg)

    def fail(self, task_id, error, retry=True):
        """Fails a task; with retry the orchestrator may try it again."""
        self.tasks.pop(task_id, None)
        if not self._task_live(task_id, "fail"):
            self._cancelled.discard(task_id)
            return
        self.write({"type": "task.fail", "task": task_id, "error": str(error),
                    "retry": bool(retry)})

    def submit(self, title, payload=None, priority=None, capability=None,
               after=None, timeout_s=None, max_retries=None):
        """Submits a new task (like the captain's ``task add``); returns the
        request ref, which the orchestrator's answer carries.  after is a
        task id or a list of them (dependencies)."""
        if isinstance(after, int) and not isinstance(after, bool):
            after = [after]
        ref = self._new_ref("t")
        msg = {"type": "task.submit", "title": title, "ref": ref}
        for key, val in (("payload", payload), ("priority", priority),
                         ("capability", capability), ("after", after),
                         ("timeout_s", timeout_s), ("max_retries", max_retries)):
            if val is not None:
                msg[key] = val
        self._pending[ref] = None
        self.write(msg)
        return ref

    def log(self, level, msg, **fields):
        """Sends a structured record to the central log.  level is one of
        trace, debug, info, warn, error, fatal; fields become its fields."""
        level = str(level).lower()
        level = _LEVEL_ALIASES.get(level, level)
        if level not in LEVELS:
            level = "info"
        rec = {"type": "log", "level": level, "msg": str(msg)}
        if fields:
            rec["fields"] = fields
        self.write(rec)

    def devlog(self, text, task=None):
        """Sends a narrative devlog entry (Dreamscribe ingests these)."""
        msg = {"type": "devlog", "text": str(text)}
        if task is not None:
            msg["task"] = task
        self.write(msg)

    def usage(self, tokens_in, tokens_out, cost_usd, model=None):
        """Reports LLM spend, shown per agent."""
        msg = {"type": "usage", "tokens_in": int(tokens_in),
               "tokens_out": int(tokens_out), "cost_usd": float(cost_usd)}
        if model is not None:
            msg["model"] = model
        self.write(msg)

    # ------------------------------------------------------------------
    # timers

    def call_later(self, delay, fn, *args):
        """Calls fn(*args) from the loop after delay seconds; returns a
        Timer whose cancel() stops it.  Exceptions in fn are logged."""
        t = Timer(time.monotonic() + max(0.0, float(delay)), fn, args)
        heapq.heappush(self._timers, (t.when, next(self._seq), t))
        return t

    def call_every(self, interval, fn, *args):
        """Calls fn(*args) every interval seconds (first after one
        interval) until the returned Timer is cancelled."""
        interval = max(0.001, float(interval))
        t = Timer(time.monotonic() + interval, fn, args, interval)
        heapq.heappush(self._timers, (t.when, next(self._seq), t))
        return t

    def stop(self):
        """Ends run() after the current handler returns."""
        self._stopping = True

    # ------------------------------------------------------------------
    # the loop

    def run(self):
        """Sends hello, then dispatches messages, timers and heartbeats
        until stdin reaches EOF, a ``stop`` command arrives, stop() is
        called or SIGTERM/SIGINT arrives.  Returns None; the program can
        then exit 0."""
        self._setup_io()
        old = self._install_signals()
        self.running = True
        try:
            if not self._hello_sent:
                self.hello()
            self._loop()
        except (OrchestratorGone, _SignalStop):
            pass
        finally:
            self.running = False
            self._restore_signals(old)
        try:
            self._handler("stop")()
        except (OrchestratorGone, _SignalStop):
            pass
        except Exception:
            self._report("on_stop")
        if self._link is not None:
            self._link.close(1000, "agent stopped")
            if self.bridge_error is not None:
                raise self.bridge_error

    def _loop(self):
        """The select() loop proper."""
        while not self._stopping:
            timeout = self._run_timers()
            if self._stopping:
                break
            if self._backlog:
                self._dispatch(self._backlog.popleft())
                continue
            if self._eof:
                break
            self._read_some(timeout)

    def _run_timers(self):
        """Runs due timers and heartbeats (only once welcomed).  Returns the
        seconds until the next one is due, or None if there is none."""
        if not self.welcomed:
            return None
        now = time.monotonic()
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self.heartbeat()
            self._next_heartbeat = now + self.heartbeat_interval
        while self._timers and not self._stopping:
            when, _, t = self._timers[0]
            if t.cancelled:
                heapq.heappop(self._timers)
                continue
            if when > now:
                break
            heapq.heappop(self._timers)
            if t.interval is not None:
                t.when = max(when + t.interval, now)
                heapq.heappush(self._timers, (t.when, next(self._seq), t))
            try:
                t.fn(*t.args)
            except (OrchestratorGone, _SignalStop):
                raise
            except Exception:
                self._report("timer %s" % getattr(t.fn, "__name__", "?"))
            now = time.monotonic()
        due = []
        if self._next_heartbeat is not None:
            due.append(self._next_heartbeat)
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            due.append(self._timers[0][0])
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _read_some(self, timeout):
        """Waits up to timeout seconds (None: forever) for input, reads what
        is there and queues the complete lines in the backlog.  Sets _eof
        at end of input."""
        if self._link is not None:
            self._bridge_read_some(timeout)
            return
        self._in_select = True
        try:
            if self._stopping:          # a signal came just before
                return
            ready, _, _ = select.select([self._in_fd], [], [], timeout)
        finally:
            self._in_select = False
        if not ready:
            return
        try:
            data = os.read(self._in_fd, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.EIO):
                raise
            data = b""
        if not data:
            self._eof = True
            if self._inbuf.strip():
                self._queue_line(self._inbuf)
            self._inbuf = b""
            return
        self._inbuf += data
        if b"\n" not in data:
            return
        *lines, self._inbuf = self._inbuf.split(b"\n")
        for line in lines:
            self._queue_line(line)

    def _queue_line(self, line):
        """Parses one input line and appends it to the backlog; bad lines
        are reported on stderr and skipped."""
        line = line.strip()
        if not line:
            return
        if self.trace:
            self._stderr("<- " + line.decode("utf-8", "replace"))
        try:
            msg = json.loads(line.decode("utf-8", "replace"))
        except ValueError as e:
            self._stderr("bad line from orchestrator (%s): %.200r" % (e, line))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._stderr("line from orchestrator is not a typed object: %.200r" % line)
            return
        self._backlog.append(msg)

    def wait_for(self, ref, timeout=30.0):
        """Waits until the orchestrator answers the request ref and returns
        the id it gave.  Other messages are read and kept for the loop.
        Raises ProtocolError on an error reply for ref, TimeoutError after
        timeout seconds, OrchestratorGone at EOF."""
        self._setup_io()
        deadline = time.monotonic() + timeout
        while True:
            if ref in self.sent_ids:
                return self.sent_ids[ref]
            keep = collections.deque()
            found_err = None
            while self._backlog:
                m = self._backlog.popleft()
                t = m.get("type")
                if t == "error" and m.get("ref") == ref and found_err is None:
                    found_err = m
                elif t == "sent" or (t != "error" and m.get("ref") in self._pending):
                    self._dispatch(m)
                else:
                    keep.append(m)
            self._backlog = keep
            if found_err is not None:
                self._pending.pop(ref, None)
                raise ProtocolError(found_err.get("code"), found_err.get("detail"), ref)
            if ref in self.sent_ids:
                return self.sent_ids[ref]
            if self._eof:
                if self.bridge_error is not None:
                    raise self.bridge_error
                self._went_away()
                raise OrchestratorGone()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the orchestrator for %s" % ref)
            self._read_some(left)

    # ------------------------------------------------------------------
    # dispatch

    def _dispatch(self, msg):
        """Handles one message from the orchestrator."""
        t = msg.get("type")
        if t == "welcome":
            self._backoff = self.reconnect_delay
            self.welcomed = True
            self.welcome_info = msg
            self.agent = msg.get("agent") or self.name
            self.session = msg.get("session")
            if self.heartbeat_interval > 0:
                self._next_heartbeat = time.monotonic() + self.heartbeat_interval
            self._call("welcome", msg)
        elif t == "message":
            self._dispatch_message(msg)
        elif t == "task.assign":
            self._dispatch_task(msg.get("task") or {})
        elif t == "task.cancel":
            task_id = msg.get("task")
            if isinstance(task_id, dict):
                task_id = task_id.get("id")
            if task_id in self.tasks:
                self.tasks.pop(task_id, None)
                self._cancelled.add(task_id)
            self._call("task_cancel", task_id)
        elif t == "command":
            name = msg.get("name")
            try:
                self._call("command", name, msg.get("args"))
            finally:
                if name == "stop":
                    self._stopping = True
        elif t == "error":
            ref = msg.get("ref")
            if ref is not None:
                self._pending.pop(ref, None)
            self._call("error", msg.get("code"), msg.get("detail"), ref)
        elif t == "sent" or (msg.get("ref") in self._pending and msg.get("ref") is not None):
            ref = msg.get("ref")
            msg_id = msg.get("id", msg.get("task"))
            self.sent_ids[ref] = msg_id
            callback = self._pending.pop(ref, None)
            if callback is not None:
                try:
                    callback(msg_id)
                except (OrchestratorGone, _SignalStop):
                    raise
                except Exception:
                    self._report("on_sent callback for %s" % ref)
            if ref is not None:
                self._call("sent", ref, msg_id)
        else:
            self._call("unknown", msg)

    def _call(self, event, *args):
        """Calls the handler of event; logs (and swallows) its exceptions.
        Returns (ok, value)."""
        try:
            return True, self._handler(event)(*args)
        except (OrchestratorGone, _SignalStop):
            raise
        except Exception:
            self._report("on_" + event)
            return False, None

    def _dispatch_message(self, msg):
        """Calls on_message, then acks unless it raised or returned LATER."""
        try:
            ret = self._handler("message")(msg)
        except (OrchestratorGone, _SignalStop):
            raise
        except Exception:
            self._report("on_message", message=msg.get("id"))
            return
        if self.auto_ack and ret is not LATER and msg.get("id") is not None:
            self.ack(msg["id"])

    def _dispatch_task(self, task):
        """Calls on_task and turns its outcome into task.done/task.fail."""
        task_id = task.get("id")
        self._cancelled.discard(task_id)
        self.tasks[task_id] = task
        try:
            ret = self._handler("task")(task)
        except (OrchestratorGone, _SignalStop):
            raise
        except TaskError as e:
            if task_id in self.tasks:
                self.fail(task_id, e.error, retry=e.retry)
            return
        except Exception as e:
            self._report("on_task", task=task_id)
            if task_id in self.tasks:
                self.fail(task_id, str(e) or type(e).__name__, retry=True)
            return
        if ret is LATER or task_id not in self.tasks:
            return  # finishes later, or the handler already called done/fail
        try:
            self.done(task_id, ret)
        except (TypeError, ValueError) as e:
            self.fail(task_id, "result is not JSON: %s" % e, retry=False)

    def _report(self, where, **fields):
        """Logs the exception being handled: traceback on stderr, one
        structured error record."""
        etype, value, _ = sys.exc_info()
        self._stderr("exception in %s:\n%s" % (where, traceback.format_exc().rstrip()))
        try:
            fields["exception"] = "%s: %s" % (etype.__name__ if etype else "?", value)
            self.log("error", "exception in %s: %s" % (where, value), **fields)
        except (OrchestratorGone, _SignalStop):
            raise
        except Exception:
            pass

    # ------------------------------------------------------------------
    # I/O

    def _setup_io(self):
        """Picks the protocol file descriptors (once); over the Bridge,
        makes the first connection attempt."""
        if self._link is not None:
            if not self._link_started:
                self._link_started = True
                self._bridge_connect()
            return
        if self._out_fd is not None:
            return
        self._in_fd = sys.stdin.fileno() if sys.stdin is not None else 0
        if self.protect_stdout:
            try:
                sys.stdout.flush()
            except Exception:
                pass
            self._out_fd = os.dup(1)          # not inherited by children
            try:
                os.dup2(2, 1)                 # stray output goes to the log
            except OSError:
                pass
        else:
            self._out_fd = 1

    def write(self, obj):
        """Writes obj as one JSON line to the orchestrator and flushes.
        Every protocol write goes through here.  Raises OrchestratorGone if
        the orchestrator went away (and is silent after that), TypeError or
        ValueError if obj cannot be encoded as JSON."""
        if self._gone:
            return
        self._setup_io()
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False, default=_json_default)
        if self.trace:
            self._stderr("-> " + text)
        if self._link is not None:
            self._bridge_write(obj, text.encode("utf-8", "replace"))
            return
        data = memoryview((text + "\n").encode("utf-8", "replace"))
        while data:
            try:
                n = os.write(self._out_fd, data)
            except BlockingIOError:
                select.select([], [self._out_fd], [])
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                    self._went_away()
                    raise OrchestratorGone()
                raise
            data = data[n:]

    def _went_away(self):
        """Marks the orchestrator gone: later writes are dropped."""
        self._gone = True
        self._eof = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._out_fd)
            os.close(devnull)
        except (OSError, TypeError):
            pass

    def _stderr(self, text):
        """Writes a line to stderr, which the orchestrator logs as ours."""
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            pass

    # ------------------------------------------------------------------
    # the Bridge transport

    def _bridge_connect(self):
        """One connection attempt.  On success, after a reconnection, says
        hello again and sends what waited.  On failure schedules the next
        try (or records a BridgeError that ends the loop)."""
        link = self._link
        try:
            info = link.connect()
        except BridgeError as e:
            self._bridge_fatal(e)
            return False
        except (_LinkDown, OSError, http.client.HTTPException, ValueError) as e:
            if not self.reconnect_enabled:
                self._bridge_fatal(BridgeError(getattr(e, "code", 0), "connect: %s" % e))
            else:
                self._bridge_retry("connect: %s" % e)
            return False
        role = info.get("role")
        if role is not None and role != "agent":
            link.close(1000, "not an agent key")
            self._bridge_fatal(BridgeError(
                403, "the API key '%s' has role %s; a remote agent needs a key of role agent"
                % (info.get("name"), role)))
            return False
        if not self._name_given and info.get("name"):
            self.name = self.agent = str(info["name"])
        self.connections += 1
        self._reconnect_at = None
        self.welcomed = False
        self._next_heartbeat = None
        if self._hello_sent:
            try:
                hello = json.dumps(self._hello_msg(), separators=(",", ":"))
                if self.trace:
                    self._stderr("-> " + hello)
                link.send(hello.encode())
                while self._outbox:
                    link.send(self._outbox[0])
                    self._outbox.popleft()
            except _LinkDown as e:
                self._bridge_down(e)
                return False
        return True

    def _bridge_retry(self, why):
        """Schedules the next connection attempt after the backoff."""
        delay = self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2.0, self.reconnect_max_delay)
        self._reconnect_at = time.monotonic() + delay
        self._stderr("Bridge: %s; reconnecting in %.2f s" % (why, delay))

    def _bridge_fatal(self, err):
        """Ends the loop with err (raised by run())."""
        self._stderr("Bridge: %s (not retrying)" % err)
        if self._link is not None:
            self._link.drop()
        self.bridge_error = err
        self._eof = True
        self._gone = True

    def _bridge_down(self, e):
        """The connection ended (e is a _LinkDown): reconnect later, or
        stop."""
        self._link.drop()
        self.welcomed = False
        self._next_heartbeat = None
        if not e.retry:
            self._bridge_fatal(BridgeError(e.code, e.reason or "closed by the orchestrator"))
        elif not self.reconnect_enabled:
            self._stderr("Bridge: connection ended (%s %s)" % (e.code, e.reason))
            self._eof = True
        else:
            self._bridge_retry("connection ended (%s %s)" % (e.code, e.reason))

    def _bridge_write(self, obj, data):
        """Sends one encoded message over the Bridge, or keeps it for after
        the reconnection (hello and heartbeats are not kept: a new hello
        is sent on reconnecting)."""
        if self._gone:
            return
        self._setup_io()
        kind = obj.get("type") if isinstance(obj, dict) else None
        keep = kind not in ("hello", "heartbeat")
        link = self._link
        if link.connected:
            try:
                link.send(data)
                return
            except _LinkDown as e:
                self._bridge_down(e)
        if self._eof:
            if self.bridge_error is None:
                self._went_away()
                raise OrchestratorGone()
            return
        if keep:
            if len(self._outbox) >= _OUTBOX_MAX:
                self._outbox.popleft()
                if not self._outbox_warned:
                    self._outbox_warned = True
                    self._stderr("Bridge: %d messages waiting for the connection; "
                                 "dropping the oldest" % _OUTBOX_MAX)
            self._outbox.append(data)

    def _sleep(self, secs):
        """Sleeps, but a SIGTERM/SIGINT ends it (see _install_signals)."""
        self._in_select = True
        try:
            if not self._stopping and secs > 0:
                time.sleep(secs)
        finally:
            self._in_select = False

    def _bridge_read_some(self, timeout):
        """_read_some over the Bridge: (re)connects when it is time, else
        waits for frames and queues the messages they carry."""
        link = self._link
        self._setup_io()
        if not link.connected:
            if self._eof:
                return
            if self._reconnect_at is None:
                self._reconnect_at = time.monotonic()
            wait = self._reconnect_at - time.monotonic()
            if timeout is not None and timeout < wait:
                self._sleep(timeout)
                return
            self._sleep(wait)
            if self._stopping:
                return
            self._bridge_connect()
            return
        if not link.inbox:
            if not link.pending():
                self._in_select = True
                try:
                    if self._stopping:
                        return
                    ready, _, _ = select.select([link.sock], [], [], timeout)
                finally:
                    self._in_select = False
                if not ready:
                    return
            try:
                link.pump()
            except _LinkDown as e:
                self._bridge_down(e)
        while link.inbox:
            payload = link.inbox.popleft()
            for line in payload.split(b"\n"):
                self._queue_line(line)

    # ------------------------------------------------------------------
    # signals

    def _install_signals(self):
        """Makes SIGTERM/SIGINT end run() cleanly, where the program kept
        the default handlers.  Returns what to restore."""
        old = {}

        def handler(signum, frame):
            self._stopping = True
            if self._in_select:
                raise _SignalStop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                cur = signal.getsignal(sig)
                if cur in (signal.SIG_DFL, signal.default_int_handler):
                    old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):   # not the main thread
                pass
        return old

    @staticmethod
    def _restore_signals(old):
        """Puts back the handlers _install_signals replaced."""
        for sig, h in old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):
                pass


def main():
    """``python3 dreamos_agent.py [CAPABILITY...]``: a do-nothing agent
    that acks messages and echoes task payloads (handy for trying things)."""
    agent = Agent(capabilities=sys.argv[1:] or ["echo"])

    @agent.on("task")
    def echo(task):
        return {"echo": task.get("payload")}

    agent.run()


if __name__ == "__main__":
    main()
