#!/usr/bin/env python3
"""tasks.py -- the task cycle benchmark: Dream.OS against beanstalkd.

What is measured, for both systems in the same run, on the same machine:

  cycle rate  M jobs submitted as fast as possible by one producer
              (pipelined, at most --window unanswered), taken and finished
              by N workers, one job at a time each.  Rate = M / (time the
              last job was finished - time the first was submitted).
  latency     P more jobs submitted at a fixed --rate (well below both
              systems' capacity, so no queue builds up); submit-to-done time
              of each, p50 and p99.

Dream.OS: dreamos --headless (an optimised build) with one submitting
agent spawned by dreamos (bench/task_submitter.py, max_tasks 0) that sends
task.submit lines and reads the `sent` replies (sent once the task is
durable); submit time = when it wrote the line.  Cycle rate: N tiny agents
(bench/tiny-agent.c, C: answers task.assign with task.done at once,
max_tasks 1); done time = the task's updated_ms in the database, written
when dreamos processed task.done (wall ms) and committed in that loop turn.
Latency: N Python agents (bench/task_worker.py, the same behaviour) that
note when they write task.done.  Durability: store.durability normal (SQLite
WAL, synchronous=NORMAL: survives a crash of dreamos) and, as a second
pair, strict (fsync at every group commit).  Logging at the default level
(info: each transition is logged to the log file, to stderr in --headless
mode, and to the store), plus one run at --log-level warn to show what
that costs.

beanstalkd: started with -b DIR (its binlog; fsync at most every 50 ms by
default, which like dreamos's normal mode survives a crash of the
process), and -b DIR -f0 (fsync always) as the second pair.  Clients are
Python processes speaking its text protocol over TCP on 127.0.0.1: one
producer (put, pipelined with the same window; put time = when the command
is written) and N worker processes (reserve-with-timeout, then "delete" and
the next "reserve" in one write; done time = when the delete is written).

Both latencies are thus "producer writes the submit/put -> a Python worker
writes its done/delete", on one wall clock.

Usage: tasks.py --dreamos PATH --agent PATH [--workers N] [--tasks M]
                [--latency-tasks P] [--rate R] [--window W] [--repeat K]
                [--beanstalkd PATH] [--tmp DIR] [--only dreamos|beanstalkd]
bench/tasks.sh builds what it needs and calls this.
Exit status: 0 when the measurements were made (--strict: 1 when dreamos's
cycle rate is not at least 2x beanstalkd's), 1 when a benchmark could not
run, 2 on bad usage.
"""
import argparse
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

CTL_PROTO = 1
HERE = os.path.dirname(os.path.abspath(__file__))


class BenchError(Exception):
    pass


def say(*args):
    print(*args, flush=True)


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def now_ms():
    return time.time() * 1000.0


# ---- Dream.OS ----------------------------------------------------------------

class Ctl:
    """A connection to dreamos's control socket (what `dreamos ctl` speaks)."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def run(self, *argv):
        self.sock.sendall(json.dumps({"proto": CTL_PROTO, "argv": list(argv)}).encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise BenchError("dreamos closed the control connection")
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "status" in msg:
                return msg["status"], msg.get("output", ""), msg.get("error")

    def json(self, *argv):
        status, out, err = self.run(*argv, "--json")
        if status != 0:
            raise BenchError("%s: %s" % (" ".join(argv), err or out))
        return json.loads(out)

    def close(self):
        self.sock.close()


def wait_until(what, fn, timeout, proc=None, poll=0.1):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise BenchError("dreamos exited (status %s) while waiting for %s"
                             % (proc.returncode, what))
        if time.monotonic() > end:
            raise BenchError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(poll)


def dreamos_run(args, durability, tmp, log_level=None):
    """One Dream.OS run: returns {"rate", "burst_s", "p50", "p99", ...}."""
    rt = os.path.join(tmp, "rt")
    os.makedirs(tmp, exist_ok=True)
    burst_out = os.path.join(tmp, "burst.json")
    paced_out = os.path.join(tmp, "paced.json")
    py = sys.executable
    sub = os.path.join(HERE, "task_submitter.py")
    lines = [
        "bridge: {enabled: false}",
        "extensions: {load: []}",  # the orchestrator alone
        "store: {durability: %s}" % durability,
        "agents:",
        "  restart: never",
        "  heartbeat_timeout: 0",
        "  list:",
    ]
    for i in range(args.workers):
        lines += ["    - name: tiny-%d" % (i + 1),
                  "      command: %s" % args.agent,
                  "      args: [bench]",
                  "      max_tasks: 1"]
    lat_dir = os.path.join(tmp, "lat")
    os.makedirs(lat_dir, exist_ok=True)
    for i in range(args.workers):
        lines += ["    - name: lat-%d" % (i + 1),
                  "      command: %s" % py,
                  "      args: [-u, %s, lat]" % os.path.join(HERE, "task_worker.py"),
                  "      max_tasks: 1",
                  "      env: {WORKER_OUT: \"%s/lat-%d.json\"}" % (lat_dir, i + 1)]
    for name, mode, cap, count, out in (
            ("sub-burst", "burst", "bench", args.tasks, burst_out),
            ("sub-paced", "paced", "lat", args.latency_tasks, paced_out)):
        lines += ["    - name: %s" % name,
                  "      command: %s" % py,
                  "      args: [-u, %s]" % sub,
                  "      max_tasks: 0",
                  "      autostart: false",
                  "      env: {SUBMIT_MODE: %s, SUBMIT_CAP: %s, SUBMIT_COUNT: \"%d\", "
                  "SUBMIT_WINDOW: \"%d\", SUBMIT_RATE: \"%g\", SUBMIT_OUT: \"%s\"}"
                  % (mode, cap, count, args.window, args.rate, out)]
    cfg = os.path.join(tmp, "dreamos.yaml")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    env = dict(os.environ, DREAMOS_CONFIG="", XDG_CONFIG_HOME=os.path.join(tmp, "xdg"))
    err = open(os.path.join(tmp, "dreamos.err"), "w")
    argv = [args.dreamos, "--headless", "--runtime", rt, "--config", cfg]
    if log_level or args.log_level:
        argv += ["--log-level", log_level or args.log_level]
    proc = subprocess.Popen(argv,
                            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    ctl = None
    try:
        sock = os.path.join(rt, "dreamos.sock")

        def connect():
            try:
                return Ctl(sock)
            except OSError:
                return None
        ctl = wait_until("the control socket", connect, 20, proc)

        def workers_ready():
            ag = ctl.json("agent", "list")
            return sum(1 for a in ag if a["name"].startswith(("tiny-", "lat-"))
                       and a["state"] == "ready") == 2 * args.workers
        wait_until("%d ready workers" % (2 * args.workers), workers_ready, 60, proc)

        def done_count():
            return ctl.json("status")["counts"]["task_states"]["done"]

        results = {}
        total = 0
        for name, out, count in (("sub-burst", burst_out, args.tasks),
                                 ("sub-paced", paced_out, args.latency_tasks)):
            status, o, e = ctl.run("agent", "restart", name)
            if status != 0:
                raise BenchError("agent restart %s: %s" % (name, e or o))
            total += count
            wait_until("%d tasks done" % total, lambda: done_count() >= total,
                       120 + count / 100.0, proc, poll=0.2)
            wait_until("the submitter's measurements", lambda: os.path.exists(out), 30, proc)
            with open(out) as f:
                results[name] = json.load(f)
            if results[name]["errors"]:
                raise BenchError("%s got errors: %s" % (name, results[name]["errors"][:3]))
        st = ctl.json("status")
        if st["counts"]["task_states"]["done"] != total or st["counts"]["tasks"] != total:
            raise BenchError("expected %d tasks, all done: %s" % (total, st["counts"]))
    finally:
        if ctl is not None:
            ctl.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()

    db = sqlite3.connect(os.path.join(rt, "dreamos.db"))
    done = {tid: (st, up) for tid, st, up in
            db.execute("SELECT id, state, updated_ms FROM tasks")}
    db.close()
    last = 0
    for tid, _ in results["sub-burst"]["submits"]:
        st, up = done[tid]
        if st != "done":
            raise BenchError("task %d is %s" % (tid, st))
        last = max(last, up)
    span = last + 0.5 - results["sub-burst"]["first_ms"]
    # Latency: the Python workers' done times (written at their exit).
    lat_done = {}
    for i in range(args.workers):
        path = os.path.join(lat_dir, "lat-%d.json" % (i + 1))
        try:
            with open(path) as f:
                for tid, t in json.load(f):
                    lat_done[tid] = t
        except OSError as e:
            raise BenchError("latency worker %d left no measurements: %s" % (i + 1, e))
    lat = [lat_done[tid] - t for tid, t in results["sub-paced"]["submits"]]
    return {"rate": args.tasks / (span / 1000.0), "burst_s": span / 1000.0,
            "p50": pct(lat, 50), "p99": pct(lat, 99)}


# ---- beanstalkd ---------------------------------------------------------------

class Beans:
    """A minimal beanstalkd text-protocol connection."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def line(self):
        ln = self.f.readline()
        if not ln:
            raise BenchError("beanstalkd closed the connection")
        return ln.rstrip(b"\r\n")

    def stats(self):
        self.sock.sendall(b"stats\r\n")
        head = self.line().split()
        body = self.f.read(int(head[1]) + 2).decode()
        out = {}
        for ln in body.splitlines():
            k, _, v = ln.partition(":")
            out[k.strip()] = v.strip()
        return out

    def close(self):
        self.f.close()
        self.sock.close()


BODY = b'{"title":"bench"}'


def beans_worker(port, out_path, stop):
    """Reserves and deletes jobs until told to stop; writes [[id, done ms]]."""
    c = Beans(port)
    done = []
    c.sock.sendall(b"reserve-with-timeout 1\r\n")
    while True:
        ln = c.line()
        if ln.startswith(b"RESERVED "):
            _, jid, n = ln.split()
            c.f.read(int(n) + 2)
            done.append((int(jid), now_ms()))
            c.sock.sendall(b"delete " + jid + b"\r\nreserve-with-timeout 1\r\n")
        elif ln == b"DELETED":
            pass
        elif ln == b"TIMED_OUT" or ln == b"DEADLINE_SOON":
            if stop.is_set():
                break
            c.sock.sendall(b"reserve-with-timeout 1\r\n")
        else:
            raise BenchError("beanstalkd worker: unexpected %r" % ln)
    c.close()
    with open(out_path, "w") as f:
        json.dump(done, f)


def beans_produce(port, count, mode, window, rate):
    """Puts count jobs; returns [[id, put ms]] in order."""
    c = Beans(port)
    put = b"put 1024 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
    times = [0.0] * count
    ids = [0] * count
    got = 0

    def read_one():
        nonlocal got
        ln = c.line()
        if not ln.startswith(b"INSERTED "):
            raise BenchError("put: %r" % ln)
        ids[got] = int(ln.split()[1])
        got += 1

    if mode == "burst":
        i = 0
        batch = 64
        while i < count:
            n = min(batch, count - i)
            while i + n - got > window:
                read_one()
            t = now_ms()
            for k in range(i, i + n):
                times[k] = t
            c.sock.sendall(put * n)
            i += n
    else:
        period = 1.0 / rate
        start = time.monotonic()
        for i in range(count):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            times[i] = now_ms()
            c.sock.sendall(put)
            read_one()
    while got < count:
        read_one()
    c.close()
    return [[ids[k], times[k]] for k in range(count)]


class CWorker:
    """bench/beans-worker (C), with the join/exitcode of a multiprocessing.Process."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.exitcode = None

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def join(self, timeout):
        try:
            self.exitcode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exitcode = self.proc.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def beanstalkd_run(args, fsync_always, tmp):
    os.makedirs(os.path.join(tmp, "binlog"), exist_ok=True)
    port = free_port()
    argv = [args.beanstalkd, "-l", "127.0.0.1", "-p", str(port), "-b", os.path.join(tmp, "binlog")]
    if fsync_always:
        argv += ["-f", "0"]
    err = open(os.path.join(tmp, "beanstalkd.err"), "w")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    ctx = multiprocessing.get_context("fork")
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until("beanstalkd on port %d" % port, up, 10, proc)
        mon = Beans(port)
        res = {}
        deleted = 0
        for phase, count in (("burst", args.tasks), ("paced", args.latency_tasks)):
            stop = ctx.Event()
            outs = [os.path.join(tmp, "%s-w%d.json" % (phase, i)) for i in range(args.workers)]
            if phase == "burst":  # C workers, as the tiny agents on the dreamos side
                ws = [CWorker([args.beans_worker, str(port), outs[i]])
                      for i in range(args.workers)]
            else:
                ws = [ctx.Process(target=beans_worker, args=(port, outs[i], stop))
                      for i in range(args.workers)]
                for w in ws:
                    w.start()
            wait_until("%d workers connected" % args.workers,
                       lambda: int(mon.stats()["current-waiting"]) >= args.workers, 20, proc)
            puts = beans_produce(port, count, phase, args.window, args.rate)
            deleted += count
            wait_until("%d jobs deleted" % deleted,
                       lambda: int(mon.stats()["cmd-delete"]) >= deleted,
                       120 + count / 100.0, proc, poll=0.2)
            stop.set()
            for w in ws:
                w.terminate() if isinstance(w, CWorker) else None
            for w in ws:
                w.join(30)
                if w.exitcode != 0:
                    raise BenchError("a beanstalkd worker failed (exit %s)" % w.exitcode)
            done = {}
            for o in outs:
                with open(o) as f:
                    for jid, t in json.load(f):
                        if jid in done:
                            raise BenchError("job %d done twice" % jid)
                        done[jid] = t
            lat = [done[jid] - t for jid, t in puts]
            span = max(done[jid] for jid, _ in puts) - min(t for _, t in puts)
            res[phase] = (lat, span)
        st = mon.stats()
        mon.close()
        if int(st["current-jobs-ready"]) + int(st["current-jobs-reserved"]) != 0:
            raise BenchError("jobs left in beanstalkd: %s" % st)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
    _, span = res["burst"]
    lat_p, _ = res["paced"]
    return {"rate": args.tasks / (span / 1000.0), "burst_s": span / 1000.0,
            "p50": pct(lat_p, 50), "p99": pct(lat_p, 99)}


# ---- main ----------------------------------------------------------------------

def summarize(runs):
    """The run with the median rate (its latencies go with it)."""
    s = sorted(runs, key=lambda r: r["rate"])
    med = dict(s[len(s) // 2])
    med["rates"] = [r["rate"] for r in runs]
    return med


def main():
    ap = argparse.ArgumentParser(description="task cycle: Dream.OS vs beanstalkd")
    ap.add_argument("--dreamos", required=True)
    ap.add_argument("--agent", required=True, help="the tiny agent binary")
    ap.add_argument("--beans-worker", help="bench/beans-worker binary (beanstalkd's burst "
                    "workers; required unless --only dreamos)")
    ap.add_argument("--beanstalkd", default=shutil.which("beanstalkd") or "beanstalkd")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--latency-tasks", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("dreamos", "beanstalkd"))
    ap.add_argument("--log-level", help="dreamos --log-level for every dreamos run (default: "
                    "its default, info, plus one run at warn to show the cost of logging)")
    ap.add_argument("--tmp")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    if args.workers < 1 or args.tasks < 1 or args.latency_tasks < 1 or args.rate <= 0:
        ap.error("--workers, --tasks, --latency-tasks and --rate must be positive")
    for p in (args.dreamos, args.agent) + ((args.beans_worker,) if args.only != "dreamos" else ()):
        if p is None or not os.access(p, os.X_OK):
            ap.error("%s is not an executable" % p)
    tmp = args.tmp or tempfile.mkdtemp(prefix="dreamos-taskbench.")
    keep = args.tmp is not None

    systems = []
    if args.only != "beanstalkd":
        systems += [("dreamos (durability normal)", lambda d: dreamos_run(args, "normal", d)),
                    ("dreamos (durability strict)", lambda d: dreamos_run(args, "strict", d))]
        if not args.log_level:
            # What logging every transition at info costs.
            systems += [("dreamos (normal, --log-level warn)",
                         lambda d: dreamos_run(args, "normal", d, "warn"))]
    if args.only != "dreamos":
        if not shutil.which(args.beanstalkd) and not os.access(args.beanstalkd, os.X_OK):
            raise BenchError("no beanstalkd (apt-get install beanstalkd)")
        systems += [("beanstalkd -b (fsync <= 50 ms)", lambda d: beanstalkd_run(args, False, d)),
                    ("beanstalkd -b -f0 (fsync always)", lambda d: beanstalkd_run(args, True, d))]

    say("tasks: %d workers, %d jobs as fast as possible (window %d), then %d jobs at %g/s "
        "for latency; %d repeats, median shown" % (args.workers, args.tasks, args.window,
                                                     args.latency_tasks, args.rate, args.repeat))
    say("  machine: %d CPUs, Linux %s, load average %.2f %.2f %.2f"
        % ((os.cpu_count() or 0, os.uname().release) + os.getloadavg()))
    out = {}
    try:
        for rep in range(args.repeat):
            # Interleaved, so that slow phases of the machine hit both.
            for k, (label, fn) in enumerate(systems):
                d = os.path.join(tmp, "run%d-%d" % (rep, k))
                r = fn(d)
                out.setdefault(label, []).append(r)
                say("  run %d %-34s %8.0f cycles/s (burst %.2f s); latency p50 %.2f ms p99 %.2f ms"
                    % (rep + 1, label, r["rate"], r["burst_s"], r["p50"], r["p99"]))
                if not keep:
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)

    say("")
    say("load average at the end: %.2f %.2f %.2f" % os.getloadavg())
    say("")
    say("%-34s %10s %10s %10s   %s" % ("system", "cycles/s", "p50", "p99", "cycles/s of each run"))
    med = {}
    for label, _ in systems:
        m = med[label] = summarize(out[label])
        say("%-34s %10.0f %7.2f ms %7.2f ms   %s"
            % (label, m["rate"], m["p50"], m["p99"], " ".join("%.0f" % r for r in m["rates"])))
    rc = 0
    pairs = (("dreamos (durability normal)", "beanstalkd -b (fsync <= 50 ms)"),
             ("dreamos (durability strict)", "beanstalkd -b -f0 (fsync always)"))
    for d, b in pairs:
        if d in med and b in med:
            ratio = med[d]["rate"] / med[b]["rate"]
            say("ratio %s / %s: %.2fx (target >= 2x: %s)"
                % (d, b, ratio, "met" if ratio >= 2 else "NOT met"))
            if args.strict and d.endswith("normal)") and ratio < 2:
                rc = 1
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print("tasks.py: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
