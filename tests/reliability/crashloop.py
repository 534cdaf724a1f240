#!/usr/bin/env python3
"""crashloop.py -- crash-consistency loop for Dream.OS (standard library only).

Runs N iterations on one runtime directory (kept across them).  Each
iteration starts `dreamos --headless`, checks `dreamos ctl verify`, lets the
work run, and kills the orchestrator with SIGKILL at a random moment (a
seeded PRNG: the seed is printed, --seed repeats a run).  The work:

  producer   tests/agents/busagent.py produce: sends messages to the
             consumer, records every id it got `sent` for (it resumes after
             a restart where it stopped)
  consumer   busagent.py record: records every message, then acks it
  workers    two agents of this file (`crashloop.py worker`): take tasks,
             record each, report task.done after a short while
  submitter  a thread of the driver running `dreamos ctl task add --json`
             and recording every task id it was answered

After the last kill, dreamos runs once more without a kill until the
producer is done, no message is pending and every task is finished; then
`verify` again, `quit`, and the checks on the stopped instance's database:

  * every id the producer got `sent` for reached the consumer (lost: 0;
    duplicates, i.e. redeliveries, are allowed and counted)
  * every task id the submitter was answered is in the store and done,
    and reached `done` exactly once (the logs table holds every transition,
    written in the same transaction as the task's state)
  * PRAGMA integrity_check is ok
  * ids never go back: after every restart, status's last message and
    task ids are at or above the largest id any client was answered

Prints one line per iteration and a summary; exits 1 on a lost message, a
lost or twice-done task, a failed verify or integrity check, 2 on bad usage.

Usage: crashloop.py [--iterations N] [--seed S] [--tasks-per-iter K]
                    [--messages M] [--min-delay S] [--max-delay S]
                    [--keep] [--json]
DREAMOS names the binary (required), DREAMOS_SHARE the share directory
(default: ../../share from here).

Not a driver: `crashloop.py worker` is the worker agent (CRASH_LOG: where
it records {"ev":"task","task":ID,"attempt":A,"pid":P} lines).
"""

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "agents"))
sys.dont_write_bytecode = True
import busagent  # noqa: E402  (shared helpers: the SDK lookup, JSON-line logs)


# ---- the worker agent ----------------------------------------------------

def worker():
    """An agent that records each task it is given and finishes it after a
    short while (so that a kill often lands while tasks run)."""
    busagent._find_sdk()
    from dreamos_agent import Agent

    log = busagent.Log(os.environ.get("CRASH_LOG"))
    pidfile = os.environ.get("BUS_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as f:
            f.write("%d\n" % os.getpid())
    rng = random.Random(os.getpid())

    class Worker(Agent):
        def on_task(self, task):
            log({"ev": "task", "task": task["id"], "attempt": task.get("attempt"),
                 "pid": os.getpid()})
            self.call_later(rng.uniform(0.01, 0.15), self.done, task["id"], {"ok": True})
            return Agent.LATER

    Worker(capabilities=["crash"], max_tasks=2, version="crashloop-1").run()


# ---- the driver ----------------------------------------------------------

class Fail(Exception):
    pass


class Loop(object):
    def __init__(self, args):
        self.args = args
        self.dreamos = os.environ.get("DREAMOS")
        if not self.dreamos:
            raise SystemExit("crashloop: DREAMOS must name the dreamos binary")
        self.share = os.environ.get("DREAMOS_SHARE") or os.path.join(TOP, "share")
        self.tmp = tempfile.mkdtemp(prefix="dreamos-crash.")
        self.rt = os.path.join(self.tmp, "rt")
        self.sent_log = os.path.join(self.tmp, "producer.log")
        self.recv_log = os.path.join(self.tmp, "consumer.log")
        self.work_log = os.path.join(self.tmp, "workers.log")
        self.pidfile = os.path.join(self.tmp, "pids")
        open(self.pidfile, "w").close()
        self.proc = None
        self.sent = Counter(self.sent_log, b'"ev":"sent"')
        self.recv = Counter(self.recv_log, b'"ev":"msg"')
        self.submitted = []  # task ids a `task add` was answered with
        self.max_task_answered = 0
        self.verify_failures = []
        self.env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(self.tmp, "xdg"),
                        DREAMOS_CONFIG="", DREAMOS_RUNTIME="", DREAMOS_SHARE=self.share,
                        BUS_PIDFILE=self.pidfile)
        self.write_config()

    def write_config(self):
        py = sys.executable
        busa = os.path.join(TOP, "tests", "agents", "busagent.py")
        me = os.path.abspath(__file__)
        self.config = os.path.join(self.tmp, "crash.yaml")
        n = self.args.messages
        with open(self.config, "w") as f:
            # debug: the logs table then holds every task transition, the
            # journal check_db reads ("done" is a debug record).
            f.write("""bridge:
  enabled: false
logging:
  level: debug
tasks:
  default_retries: 1000
  default_timeout: 30s
  backoff: {initial: 0.1s, cap: 0.5s}
agents:
  hello_timeout: 10s
  stop_grace: 2s
  backoff: {initial: 0.1s, cap: 1s}
  list:
    - name: producer
      command: %(py)s
      args: [-u, %(busa)s, produce]
      env: {BUS_LOG: "%(sent)s", BUS_TO: consumer, BUS_N: "%(n)d", BUS_INFLIGHT: "%(inflight)s"}
    - name: consumer
      command: %(py)s
      args: [-u, %(busa)s, record]
      env: {BUS_LOG: "%(recv)s"}
    - name: worker-1
      command: %(py)s
      args: [-u, %(me)s, worker]
      env: {CRASH_LOG: "%(work)s"}
      max_tasks: 2
    - name: worker-2
      command: %(py)s
      args: [-u, %(me)s, worker]
      env: {CRASH_LOG: "%(work)s"}
      max_tasks: 2
""" % {"py": py, "busa": busa, "me": me, "sent": self.sent_log, "recv": self.recv_log,
                "work": self.work_log, "n": n, "inflight": self.args.inflight})

    # -- processes --

    def ctl(self, *argv, timeout=30):
        """Runs `dreamos ctl ARGV`; returns (exit status, stdout)."""
        try:
            p = subprocess.run([self.dreamos, "ctl", "--runtime", self.rt] + list(argv),
                               env=self.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, ""
        return p.returncode, p.stdout.decode(errors="replace")

    def ctl_json(self, *argv):
        rc, out = self.ctl(*(list(argv) + ["--json"]))
        try:
            return rc, json.loads(out)
        except ValueError:
            return rc, None

    def start(self):
        err = open(os.path.join(self.tmp, "dreamos.err"), "ab")
        self.proc = subprocess.Popen(
            [self.dreamos, "--headless", "--runtime", self.rt, "--config", self.config],
            env=self.env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.time() + self.args.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Fail("dreamos exited at startup (status %s); see %s"
                           % (self.proc.returncode, err.name))
            if os.path.exists(os.path.join(self.rt, "dreamos.sock")):
                rc, st = self.ctl_json("status")
                if rc == 0 and st:
                    return st
            time.sleep(0.02)
        raise Fail("dreamos did not answer within %.0f s" % self.args.start_timeout)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def agents_gone(self, timeout=20):
        """Waits until no agent process is left (they see EOF and leave)."""
        deadline = time.time() + timeout
        while True:
            # Only this run's agents: a pid of an earlier iteration may
            # belong to another program by now.
            alive = [p for p in self.agent_pids() if _alive(p) and _ours(p)]
            if not alive:
                return
            if time.time() > deadline:
                raise Fail("agents still running after the orchestrator died: %s" % alive)
            time.sleep(0.02)

    def agent_pids(self):
        try:
            with open(self.pidfile) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in self.agent_pids():
            if not _ours(p):
                continue
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if self.args.keep:
            print("crashloop: kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- work --

    def submit_tasks(self, n, stop):
        """Submits up to n tasks with `ctl task add`, recording the answered
        ids; stops early when stop is set or dreamos is gone."""
        for _ in range(n):
            if stop.is_set():
                return
            rc, j = self.ctl_json("task", "add", "crash job", "--cap", "crash",
                                  "--retries", "1000")
            if rc == 0 and j and isinstance(j.get("id"), int):
                self.submitted.append(j["id"])
                self.max_task_answered = max(self.max_task_answered, j["id"])
            elif rc != 0:
                return  # the instance died (or refused): stop this round

    def max_sent_id(self):
        ids = [r["id"] for r in busagent._read_log(self.sent_log) if r.get("ev") == "sent"]
        return max(ids) if ids else 0

    def verify(self, when):
        rc, j = self.ctl_json("verify")
        if rc != 0 or not j:
            failed = [c for c in (j or {}).get("result", j or {}).get("checks", [])
                      if not c.get("ok")]
            self.verify_failures.append((when, rc, failed))
            return False
        return True

    def check_ids(self, st, when, top_msg):
        """Ids never go back: status, read at the restart, knows ids at or
        above every one answered before it (top_msg: the largest `sent` id
        recorded before the start; the producer goes on at once)."""
        c = st["counts"]
        if c["last_message_id"] < top_msg or c["last_task_id"] < self.max_task_answered:
            raise Fail("%s: ids went back: status last message id %d (answered up to %d), "
                       "last task id %d (answered up to %d)"
                       % (when, c["last_message_id"], top_msg, c["last_task_id"],
                          self.max_task_answered))

    def iteration(self, k, rng):
        # The kill: after a random number of further `sent` (so that it
        # lands in the stream whatever the speed; a few times a second);
        # once the producer is done, after a random delay.
        gap = rng.randint(self.args.min_gap, self.args.max_gap)
        delay = rng.uniform(self.args.min_delay, self.args.max_delay)
        by_gap = True
        top = self.max_sent_id()
        st = self.start()
        self.check_ids(st, "restart %d" % k, top)
        ok = self.verify("after restart %d" % k)
        stop = threading.Event()
        th = threading.Thread(target=self.submit_tasks, args=(self.args.tasks_per_iter, stop))
        th.start()
        t0 = time.time()
        target = self.sent.count() + gap
        if by_gap and target <= self.args.messages:
            while self.sent.count() < target and time.time() - t0 < 30:
                time.sleep(0.005)
            how = "after %d more sent" % gap
        else:
            time.sleep(delay)
            how = "%.2f s after start" % delay
        self.kill()
        stop.set()
        th.join()
        self.agents_gone()
        line = ("iteration %d: kill -9 %s; sent %d, received %d, tasks answered %d%s"
                % (k, how, self.sent.count(), self.recv.count(), len(self.submitted),
                   "" if ok else "; VERIFY FAILED"))
        if not self.args.json:
            print(line, flush=True)

    def wait(self, what, fn, timeout):
        deadline = time.time() + timeout
        while not fn():
            if time.time() > deadline:
                raise Fail("timed out (%d s) waiting for %s" % (timeout, what))
            time.sleep(0.05)

    def final(self):
        top = self.max_sent_id()
        st = self.start()
        self.check_ids(st, "final start", top)
        self.verify("after the final start")
        n = self.args.messages
        self.wait("the producer to finish (%d of %d sent)" % (self.sent.count(), n),
                  lambda: self.sent.count() >= n, 300)

        def drained():
            rc, s = self.ctl_json("status")
            if rc != 0 or not s:
                return False
            c = s["counts"]
            ts = c["task_states"]
            unfinished = sum(v for k, v in ts.items() if k not in ("done", "dead", "cancelled"))
            return c["messages_pending"] == 0 and unfinished == 0
        self.wait("no message pending and every task finished", drained, 300)
        self.verify("after the drain")
        rc, _ = self.ctl("quit")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Fail("dreamos did not quit")
        if self.proc.returncode != 0:
            raise Fail("quit: exit status %d" % self.proc.returncode)
        self.proc = None
        self.agents_gone()

    def check_db(self):
        db = sqlite3.connect(os.path.join(self.rt, "dreamos.db"))
        ic = db.execute("PRAGMA integrity_check").fetchone()[0]
        states = dict(db.execute("SELECT id, state FROM tasks").fetchall())
        done = {}
        for (fields,) in db.execute("SELECT fields FROM logs WHERE source = 'tasks' AND "
                                    "fields IS NOT NULL"):
            try:
                f = json.loads(fields)
            except ValueError:
                continue
            if f.get("to") == "done":
                done[f.get("task")] = done.get(f.get("task"), 0) + 1
        seq = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        # (message ids: the reservation in kv is their high-water mark)
        seq["messages"] = int(db.execute(
            "SELECT coalesce((SELECT value FROM kv WHERE ns = 'dreamos' AND key = 'message_ids'), 0)"
        ).fetchone()[0])
        mmax = db.execute("SELECT coalesce(max(last_id), 0) FROM message_blocks").fetchone()[0]
        tmax = db.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0]
        db.close()
        return ic, states, done, seq, mmax, tmax

    def run(self):
        seed = self.args.seed
        rng = random.Random(seed)
        t0 = time.time()
        if not self.args.json:
            print("crashloop: %d iterations, seed %d, %d messages, %d tasks per iteration, "
                  "runtime %s" % (self.args.iterations, seed, self.args.messages,
                                  self.args.tasks_per_iter, self.rt), flush=True)
        for k in range(1, self.args.iterations + 1):
            self.iteration(k, rng)
        t1 = time.time()
        self.final()
        ic, states, done, seq, mmax, tmax = self.check_db()

        sent = [r["id"] for r in busagent._read_log(self.sent_log) if r.get("ev") == "sent"]
        recv = [r["id"] for r in busagent._read_log(self.recv_log) if r.get("ev") == "msg"]
        rset = set(recv)
        lost = sorted(set(sent) - rset)
        sub = set(self.submitted)
        tasks_lost = sorted(i for i in sub if i not in states)
        not_done = sorted(i for i in sub if states.get(i) not in (None, "done"))
        task_dups = sum(v - 1 for v in done.values() if v > 1)
        done_sub = sum(1 for i in sub if states.get(i) == "done")
        runs = [r["task"] for r in busagent._read_log(self.work_log) if r.get("ev") == "task"]
        res = {
            "seed": seed,
            "iterations": self.args.iterations,
            "sent": len(sent),
            "delivered": len(rset),
            "received": len(recv),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "duplicates": len(recv) - len(rset),
            "unrecorded": len(rset - set(sent)),
            "tasks_submitted": len(sub),
            "tasks_done": done_sub,
            "tasks_lost": len(tasks_lost) + len(not_done),
            "tasks_lost_ids": (tasks_lost + not_done)[:20],
            "task_duplicates": task_dups,
            "task_reruns": len(runs) - len(set(runs)),
            "integrity": ic,
            "ids_ok": seq.get("messages", 0) >= mmax and seq.get("tasks", 0) >= tmax,
            "verify_failures": len(self.verify_failures),
            "elapsed_s": round(time.time() - t0, 1),
            "drain_s": round(time.time() - t1, 1),
        }
        ok = (res["lost"] == 0 and res["tasks_lost"] == 0 and task_dups == 0 and ic == "ok"
              and res["ids_ok"] and not self.verify_failures)
        res["ok"] = ok
        if self.args.json:
            print(json.dumps(res))
        else:
            for w in self.verify_failures[:5]:
                print("verify failed %s (exit %d): %s" % w)
            print("iterations %(iterations)d, seed %(seed)d: sent %(sent)d, delivered "
                  "%(delivered)d, lost %(lost)d, duplicates %(duplicates)d; tasks submitted "
                  "%(tasks_submitted)d, done %(tasks_done)d, lost %(tasks_lost)d, done twice "
                  "%(task_duplicates)d (re-run after a crash %(task_reruns)d); integrity "
                  "%(integrity)s; ids %(ids)s; verify failures %(verify_failures)d; "
                  "elapsed %(elapsed_s).1f s" % dict(res, ids="ok" if res["ids_ok"] else "WENT BACK"))
            print("crashloop: %s" % ("ok" if ok else "FAILED"))
        return 0 if ok else 1


class Counter(object):
    """Counts the lines of an append-only log that contain a marker, reading
    only what was added since the last call."""

    def __init__(self, path, marker):
        self.path, self.marker = path, marker
        self.off, self.n, self.rest = 0, 0, b""

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except OSError:
            return self.n
        self.off += len(data)
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        self.n += sum(1 for l in lines if self.marker in l)
        return self.n


def _ours(pid):
    """True if pid runs one of this suite's agents (not a reused pid)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return True  # no /proc: trust the pid
    return b"busagent.py" in cmd or b"crashloop.py" in cmd


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
        return st not in ("Z", "X")
    except (OSError, IndexError):
        return True


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker()
        return 0
    ap = argparse.ArgumentParser(description="Dream.OS crash-consistency loop")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--messages", type=int, default=None,
                    help="messages the producer sends in all (default 800 per iteration, "
                         "at least 1000)")
    ap.add_argument("--inflight", type=int, default=2,
                    help="sends the producer keeps waiting for `sent` (default 2: "
                         "a slow stream, so that kills land in the middle of it)")
    ap.add_argument("--tasks-per-iter", type=int, default=15)
    ap.add_argument("--min-gap", type=int, default=50)
    ap.add_argument("--max-gap", type=int, default=1500)
    ap.add_argument("--min-delay", type=float, default=0.05)
    ap.add_argument("--max-delay", type=float, default=1.2)
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.iterations < 0 or args.max_delay < args.min_delay:
        ap.error("bad --iterations or delays")
    if args.seed is None:
        args.seed = int(time.time() * 1000) % 1000000007
    if args.messages is None:
        args.messages = max(2000, 800 * args.iterations)
    loop = Loop(args)
    try:
        return loop.run()
    except Fail as e:
        print("crashloop: FAIL: %s (seed %d)" % (e, args.seed))
        args.keep = True
        return 1
    finally:
        loop.cleanup()


if __name__ == "__main__":
    sys.exit(main())
