#!/usr/bin/env python3
"""busagent.py -- a Dream.OS test agent for the UnifiedMessageSystem.

Built on the Python SDK (share/sdk/python/dreamos_agent.py), driven by the
environment.  Every event it sees is appended to BUS_LOG as one JSON line,
written with a single write(2) on an O_APPEND descriptor, so the file holds
every line written before the process died, whatever killed it.

BUS_MODE (or the first argument) says what it does:

  record    records every message received as
            {"ev":"msg","id","from","to","body","priority","mode","attempt",
            "reply_to"?,"pid","t"} (t: when it
            arrived, Unix seconds) and then acknowledges it (record first, ack
            second: a message acked is always in the log).
              BUS_TOPICS=a,b   subscribe to these topics after welcome
              BUS_NOACK=1      never acknowledge
              BUS_HOLD=1       do not acknowledge until the file BUS_RELEASE
                               exists; then ack all held messages (and later
                               ones at once)
              BUS_ACK_TWICE=1  acknowledge every message twice
              BUS_DELAY=S      sleep S seconds before each message (a
                               slow reader)
              BUS_STALL=S      sleep S seconds before the first message
                               (more than bus.ack_timeout: the messages
                               waiting for it are sent again, however fast
                               the orchestrator is)
  produce   sends BUS_N messages (body {"seq": S, "pid": PID}) to BUS_TO, as
            fast as the protocol allows: up to BUS_INFLIGHT (default 256)
            sends waiting for their `sent`.  Records {"ev":"sent","ref","id",
            "seq"} for every `sent` and {"ev":"error","code","detail","ref"}
            for every error; a send refused with backpressure or store_failed
            is sent again 0.1 s later.  The sent lines already in BUS_LOG
            count: a producer restarted on the same log sends only the rest
            (so a crash in the middle of a run is resumed, not repeated).
            Records {"ev":"done","sent":N} at the end, then idles.
              BUS_PRIORITY     priority of the messages (default none)
              BUS_PAD=N        add "pad": N x's to each body (bigger
                               messages, the same count)
  script    sends the lines of the file BUS_SCRIPT as they are (one per
            line; a line that is not JSON is written raw), then records
            {"ev":"script_done"}.  A line "#sleep SECONDS" pauses, "#exit"
            ends the process at once (what it wrote stays in the pipe); other
            lines starting with '#' are skipped.  Replies are recorded:
            {"ev":"sent","ref","id"}, {"ev":"error","code","detail","ref"},
            and messages as in record mode (acknowledged unless BUS_NOACK).

In every mode: {"ev":"welcome","session","pid"} after the welcome; the pid
is appended to BUS_PIDFILE if set (so that a test can end every process it
caused); the agent exits when the orchestrator goes away (EOF).

Not an agent:

  busagent.py verify SENT_LOG RECV_LOG [--json]
            compares the ids a producer recorded as `sent` with the ids a
            consumer recorded as received; prints "sent S, received R
            (distinct D), lost L, duplicates M, unrecorded U, reused R" and
            exits 1 if any sent id was never received (lost > 0) or one id
            came with two different bodies (reused > 0), 2 on bad usage.
            Duplicates are receptions beyond the first of an id; unrecorded
            are ids received that the producer never saw `sent` for (stored
            but unanswered when the orchestrator died, or routed before a
            commit the crash prevented: not an error).
"""

import json
import os
import sys
import time


def _find_sdk():
    """Puts the directory holding dreamos_agent.py on sys.path."""
    here = os.path.dirname(os.path.abspath(__file__))
    cands = []
    for var in ("DREAMOS_SDK_PYTHON",):
        if os.environ.get(var):
            cands.append(os.environ[var])
    if os.environ.get("DREAMOS_SHARE"):
        cands.append(os.path.join(os.environ["DREAMOS_SHARE"], "sdk", "python"))
    if os.environ.get("top_srcdir"):
        cands.append(os.path.join(os.environ["top_srcdir"], "share", "sdk", "python"))
    cands.append(os.path.join(here, "..", "..", "share", "sdk", "python"))
    for c in cands:
        if os.path.isfile(os.path.join(c, "dreamos_agent.py")):
            sys.path.insert(0, os.path.abspath(c))
            return
    sys.stderr.write("busagent: cannot find dreamos_agent.py (set DREAMOS_SHARE)\n")
    sys.exit(2)


ENV = os.environ
PID = os.getpid()


def _flag(name):
    return ENV.get(name, "") not in ("", "0")


class Log(object):
    """JSON lines appended with one write(2) each."""

    def __init__(self, path):
        self.fd = None
        if path:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, obj):
        if self.fd is None:
            return
        data = (json.dumps(obj, separators=(",", ":"), sort_keys=False) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]


def _read_log(path):
    """Returns the JSON objects of a log file (bad lines skipped: the last
    line of a killed writer may be cut short)."""
    out = []
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
    except OSError:
        pass
    return out


def make_agent():
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    _find_sdk()
    from dreamos_agent import Agent

    log = Log(ENV.get("BUS_LOG"))
    if ENV.get("BUS_PIDFILE"):
        with open(ENV["BUS_PIDFILE"], "a") as f:
            f.write("%d\n" % PID)

    class BusAgent(Agent):
        mode = "record"

        def on_welcome(self, info):
            log({"ev": "welcome", "session": info.get("session"), "pid": PID})

        def on_error(self, code, detail, ref):
            log({"ev": "error", "code": code, "detail": detail, "ref": ref, "pid": PID})

        def record(self, msg):
            rec = {"ev": "msg"}
            for k in ("id", "from", "to", "body", "priority", "mode", "attempt", "reply_to"):
                if k in msg:
                    rec[k] = msg[k]
            rec["pid"] = PID
            rec["t"] = round(time.time(), 3)
            log(rec)

    class Recorder(BusAgent):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.noack = _flag("BUS_NOACK")
            self.hold = _flag("BUS_HOLD")
            self.release = ENV.get("BUS_RELEASE", "")
            self.twice = _flag("BUS_ACK_TWICE")
            self.delay = float(ENV.get("BUS_DELAY", "0") or 0)
            self.stall = float(ENV.get("BUS_STALL", "0") or 0)
            self.held = []

        def on_welcome(self, info):
            super().on_welcome(info)
            for t in ENV.get("BUS_TOPICS", "").split(","):
                if t.strip():
                    self.subscribe(t.strip())
            if self.hold:
                self.call_every(0.05, self.check_release)

        def released(self):
            return self.release and os.path.exists(self.release)

        def check_release(self):
            if self.held and self.released():
                for i in self.held:
                    self.ack(i)
                    log({"ev": "ack", "id": i, "pid": PID})
                self.held = []

        def on_message(self, msg):
            if self.stall > 0:
                time.sleep(self.stall)
                self.stall = 0
            if self.delay > 0:
                time.sleep(self.delay)
            self.record(msg)
            if self.noack:
                return Agent.LATER
            if self.hold and not self.released():
                if msg["id"] not in self.held:
                    self.held.append(msg["id"])
                return Agent.LATER
            if self.twice:
                self.ack(msg["id"])
            return None

    class Producer(BusAgent):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.to = ENV.get("BUS_TO", "consumer")
            self.n = int(ENV.get("BUS_N", "1000"))
            self.window = max(1, int(ENV.get("BUS_INFLIGHT", "256")))
            self.priority = ENV.get("BUS_PRIORITY") or None
            self.pad = "x" * int(ENV.get("BUS_PAD", "0") or 0)
            done = [r for r in _read_log(ENV.get("BUS_LOG", "")) if r.get("ev") == "sent"]
            seqs = [r["seq"] for r in done if isinstance(r.get("seq"), int)]
            self.next = max(seqs + [len(done) - 1]) + 1
            self.answered = len(done)
            self.refs = {}  # ref -> seq, waiting for sent
            self.retry = []
            self.finished = False

        def on_welcome(self, info):
            super().on_welcome(info)
            log({"ev": "start", "already": self.answered, "next": self.next, "pid": PID})
            self.pump()

        def pump(self):
            while len(self.refs) < self.window:
                if self.retry:
                    seq = self.retry.pop(0)
                elif self.answered + len(self.refs) < self.n:
                    seq = self.next
                    self.next += 1
                else:
                    break
                body = {"seq": seq, "pid": PID}
                if self.pad:
                    body["pad"] = self.pad
                ref = self.send(self.to, body, priority=self.priority)
                self.refs[ref] = seq
            if not self.refs and self.answered >= self.n and not self.finished:
                self.finished = True
                log({"ev": "done", "sent": self.answered, "pid": PID})

        def on_sent(self, ref, msg_id):
            seq = self.refs.pop(ref, None)
            log({"ev": "sent", "ref": ref, "id": msg_id, "seq": seq, "pid": PID})
            self.answered += 1
            self.pump()

        def on_error(self, code, detail, ref):
            super().on_error(code, detail, ref)
            seq = self.refs.pop(ref, None)
            if seq is None:
                return
            if code in ("backpressure", "store_failed"):
                self.retry.append(seq)
                self.call_later(0.1, self.pump)
            else:
                self.answered += 1  # refused for good: counts as done
                self.pump()

        def on_message(self, msg):
            self.record(msg)

    class Scripter(BusAgent):
        def __init__(self, **kw):
            super().__init__(**kw)
            with open(ENV["BUS_SCRIPT"], "rb") as f:
                self.lines = [l.rstrip(b"\r\n") for l in f.read().split(b"\n")]
            self.noack = _flag("BUS_NOACK")

        def on_welcome(self, info):
            super().on_welcome(info)
            self.run_script()

        def run_script(self):
            while self.lines:
                line = self.lines.pop(0)
                if not line.strip():
                    continue
                if line.startswith(b"#sleep "):
                    self.call_later(float(line.split()[1]), self.run_script)
                    return
                if line.strip() == b"#exit":
                    log({"ev": "script_done", "pid": PID})
                    os._exit(0)
                if line.startswith(b"#"):
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    self.write(obj)
                else:
                    self._setup_io()
                    os.write(self._out_fd, line + b"\n")
            log({"ev": "script_done", "pid": PID})

        def on_sent(self, ref, msg_id):
            log({"ev": "sent", "ref": ref, "id": msg_id, "pid": PID})

        def on_unknown(self, msg):
            log({"ev": "other", "msg": msg, "pid": PID})

        def on_message(self, msg):
            self.record(msg)
            if self.noack:
                return Agent.LATER
            return None

    mode = ENV.get("BUS_MODE", "record")
    if len(sys.argv) > 1:
        mode = sys.argv[1]
    cls = {"record": Recorder, "produce": Producer, "script": Scripter}.get(mode)
    if cls is None:
        sys.stderr.write("busagent: unknown mode %r (record, produce, script, verify)\n" % mode)
        sys.exit(2)
    return cls(version="busagent-1")


def verify(argv):
    """busagent.py verify SENT_LOG RECV_LOG [--json]"""
    if len(argv) < 2:
        sys.stderr.write("usage: busagent.py verify SENT_LOG RECV_LOG [--json]\n")
        return 2
    sent = [r["id"] for r in _read_log(argv[0]) if r.get("ev") == "sent"]
    msgs = [r for r in _read_log(argv[1]) if r.get("ev") == "msg"]
    recv = [r["id"] for r in msgs]
    bodies = {}
    for r in msgs:
        bodies.setdefault(r["id"], set()).add(json.dumps(r.get("body"), sort_keys=True))
    reused = sorted(i for i, b in bodies.items() if len(b) > 1)
    sent_set = set(sent)
    counts = {}
    for i in recv:
        counts[i] = counts.get(i, 0) + 1
    lost = sorted(sent_set - set(counts))
    res = {
        "sent": len(sent),
        "sent_distinct": len(sent_set),
        "received": len(recv),
        "distinct": len(counts),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "duplicates": len(recv) - len(counts),
        "unrecorded": len(set(counts) - sent_set),
        "max_sent_id": max(sent) if sent else 0,
        "reused": len(reused),
        "reused_ids": reused[:20],
    }
    if "--json" in argv:
        print(json.dumps(res))
    else:
        print("sent %d, received %d (distinct %d), lost %d, duplicates %d, unrecorded %d, "
              "reused %d%s%s"
              % (res["sent"], res["received"], res["distinct"], res["lost"],
                 res["duplicates"], res["unrecorded"], res["reused"],
                 " (lost ids %s)" % lost[:20] if lost else "",
                 " (reused ids %s)" % reused[:20] if reused else ""))
    return 1 if lost or reused else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "verify":
        sys.exit(verify(sys.argv[2:]))
    make_agent().run()


if __name__ == "__main__":
    main()
