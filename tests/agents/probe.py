#!/usr/bin/env python3
"""probe.py -- a configurable, possibly misbehaving Dream.OS test agent.

It speaks the CellPhone protocol v1 (dreamos-protocol(7)) on stdin/stdout
with the Python standard library only, and is driven by the environment:

PROBE_MODE      what to do (default normal):
  normal        hello, then a heartbeat every DREAMOS_HEARTBEAT_INTERVAL
                seconds; `command stop` makes it exit 0
  nohello       never says hello (keeps reading stdin)
  exit-now      exits at once with status PROBE_EXIT (default 1), without
                hello; with PROBE_EXIT_AFTER_HELLO=1 it says hello, waits for
                welcome and then exits
  ignore-term   like normal, but ignores SIGTERM and `command stop`
  hang          after hello: stops reading stdin, sends no heartbeats
  script        after hello, sends the lines of the file PROBE_SCRIPT verbatim
                (bytes, one per line, all at once), then behaves as normal;
                with PROBE_HELLO=0 it sends no hello of its own (the script
                must hold it); PROBE_SCRIPT_DELAY (seconds) pauses between
                lines
  hello-first   sends {"type":"heartbeat","ref":"r-early"} before its hello
  flood         after hello, sends PROBE_COUNT (default 20000) log lines as
                fast as it can ("flood 0" ... ), then behaves as normal
  bighello      a hello carrying a "pad" member of PROBE_PAD bytes (default
                2 MiB)
  wrongname     a hello with the name PROBE_NAME (default NAME-wrong)
  twohello      says hello twice (the second one with ref "r-hello2")

Other variables:
PROBE_LOG       file that gets every line received, as it arrives, and
                lines starting with '#' about what the probe itself does
PROBE_LOGDIR    when PROBE_LOG is unset: use PROBE_LOGDIR/AGENT-NAME.log
PROBE_PIDFILE   file to which the probe appends its pid (and its child's)
PROBE_CAPS      comma-separated capabilities for the hello
PROBE_GRANDCHILD=1  starts a `sleep 1000` child (pid noted in PROBE_PIDFILE)
PROBE_MAX_LIFE  exits after this many seconds whatever happens (default 300)

The probe also exits when its parent (dreamos) goes away, so that a failed
test never leaves it behind, and, unless it hangs or ignores stop, at the
end of its stdin.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

ENV = os.environ
MODE = ENV.get("PROBE_MODE", "normal")
NAME = ENV.get("DREAMOS_AGENT_NAME", "probe")
try:
    HB = float(ENV.get("DREAMOS_HEARTBEAT_INTERVAL", "10"))
except ValueError:
    HB = 10.0
if HB <= 0:
    HB = 10.0

LOGPATH = ENV.get("PROBE_LOG") or None
if LOGPATH is None and ENV.get("PROBE_LOGDIR"):
    LOGPATH = os.path.join(ENV["PROBE_LOGDIR"], NAME + ".log")

out = sys.stdout.buffer
out_lock = threading.Lock()
log_lock = threading.Lock()
welcomed = threading.Event()
parent = os.getppid()


def note(data):
    """Appends raw bytes (one line) to PROBE_LOG."""
    if LOGPATH is None:
        return
    with log_lock:
        with open(LOGPATH, "ab") as f:
            f.write(data if data.endswith(b"\n") else data + b"\n")


def note_self(text):
    note(("# " + text).encode())


def send_raw(lines):
    """Writes raw protocol lines (bytes, without newline) in one go."""
    with out_lock:
        try:
            for line in lines:
                out.write(line + b"\n")
            out.flush()
        except (BrokenPipeError, OSError):
            os._exit(0)


def send(obj):
    send_raw([json.dumps(obj, separators=(",", ":")).encode()])


def hello(name=None, extra=None):
    msg = {"type": "hello", "proto": 1, "name": name or NAME, "version": "probe-1"}
    caps = [c for c in ENV.get("PROBE_CAPS", "").split(",") if c]
    if caps:
        msg["capabilities"] = caps
    if extra:
        msg.update(extra)
    send(msg)


def record_pid(pid):
    path = ENV.get("PROBE_PIDFILE")
    if path:
        with log_lock:
            with open(path, "a") as f:
                f.write("%d\n" % pid)


def reader():
    """Records every line received; obeys stop and ping."""
    inp = sys.stdin.buffer
    while True:
        try:
            line = inp.readline()
        except OSError:
            line = b""
        if not line:
            note_self("eof")
            if MODE not in ("ignore-term",):
                os._exit(0)
            return
        note(line)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        kind = msg.get("type")
        if kind == "welcome":
            welcomed.set()
        elif kind == "command":
            name = msg.get("name")
            if name == "stop":
                if MODE == "ignore-term":
                    note_self("ignoring stop")
                    continue
                note_self("stopping")
                os._exit(0)
            elif name == "ping":
                send({"type": "heartbeat"})


def watchdog():
    """Ends the probe when dreamos is gone or after PROBE_MAX_LIFE."""
    deadline = time.monotonic() + float(ENV.get("PROBE_MAX_LIFE", "300"))
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.2)
    os._exit(4)


def heartbeats():
    while True:
        send({"type": "heartbeat"})
        time.sleep(HB)


def main():
    record_pid(os.getpid())
    note_self("start pid=%d mode=%s" % (os.getpid(), MODE))
    threading.Thread(target=watchdog, daemon=True).start()

    if ENV.get("PROBE_GRANDCHILD") == "1":
        child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
        record_pid(child.pid)
        note_self("child pid=%d" % child.pid)

    if MODE == "exit-now" and ENV.get("PROBE_EXIT_AFTER_HELLO") != "1":
        out.flush()
        os._exit(int(ENV.get("PROBE_EXIT", "1")))

    if MODE == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    if MODE != "hang":
        threading.Thread(target=reader, daemon=True).start()

    if MODE == "nohello":
        while True:
            time.sleep(3600)
    elif MODE == "hello-first":
        send({"type": "heartbeat", "ref": "r-early"})
        hello()
    elif MODE == "bighello":
        hello(extra={"pad": "x" * int(ENV.get("PROBE_PAD", str(2 * 1024 * 1024)))})
    elif MODE == "wrongname":
        hello(name=ENV.get("PROBE_NAME", NAME + "-wrong"))
    elif MODE == "twohello":
        hello()
        welcomed.wait(10)
        hello(extra={"ref": "r-hello2"})
    elif MODE == "script" and ENV.get("PROBE_HELLO") == "0":
        pass
    else:
        hello()

    if MODE == "exit-now":
        welcomed.wait(10)
        note_self("exiting")
        os._exit(int(ENV.get("PROBE_EXIT", "1")))

    if MODE == "hang":
        note_self("hanging")
        while True:
            time.sleep(3600)

    if MODE == "script":
        with open(ENV["PROBE_SCRIPT"], "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        delay = float(ENV.get("PROBE_SCRIPT_DELAY", "0"))
        if ENV.get("PROBE_HELLO") != "0":
            welcomed.wait(10)
        if delay > 0:
            for line in lines:
                send_raw([line])
                time.sleep(delay)
        else:
            send_raw(lines)
        note_self("script sent (%d lines)" % len(lines))

    if MODE == "flood":
        count = int(ENV.get("PROBE_COUNT", "20000"))
        batch = []
        for i in range(count):
            batch.append(b'{"type":"log","level":"info","msg":"flood %d"}' % i)
            if len(batch) == 500:
                send_raw(batch)
                batch = []
        if batch:
            send_raw(batch)
        note_self("flood done (%d lines)" % count)

    heartbeats()


if __name__ == "__main__":
    main()
