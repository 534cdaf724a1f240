#!/usr/bin/env python3
"""agents.py -- Dream.OS agent benchmarks (Python 3 standard library only).

(a) fleet:   start 1,000 tiny agents and wait until all of them are ready;
             report the time, the orchestrator's peak RSS (VmHWM) and CPU
             time, then SIGTERM it and report the shutdown time and whether
             any agent process is left.  Two paths: from the configuration
             file (what a launch does) and with `agent spawn` requests sent
             back to back on the control socket (on-demand spawning).
(b) restart: SIGKILL one tiny agent N times and measure how long it takes to
             be up again, under dreamos (restart: always, backoff initial 0)
             and under supervisord (autorestart=true, startsecs=0) running
             the same program, in the same run; print both and the ratio.

Usage: agents.py --dreamos PATH --agent PATH [--tmp DIR] [options]
bench/run builds the tiny agent and calls this; see bench/README.
Exit status: 0 when the measurements were made (whether the targets are met
or not; --strict makes a missed target exit 1), 1 when a benchmark could not
run (dreamos does not start, agents never get ready, ...), 2 on bad usage.
"""
import argparse
import datetime
import http.client
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

CTL_PROTO = 1
MB = 1024 * 1024


class BenchError(Exception):
    pass


def say(*args):
    print(*args, flush=True)


def note(msg):
    print("  note: " + msg, file=sys.stderr, flush=True)


# ---- small helpers ---------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def proc_status(pid):
    """VmRSS / VmHWM (bytes) of a process, from /proc/PID/status."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_cpu_s(pid):
    """User + system CPU seconds of a process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def pids_running(exe):
    """Pids of live (not zombie) processes whose executable is exe."""
    exe = os.path.realpath(exe)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % d) != exe:
                continue
            with open("/proc/%s/stat" % d) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.append(int(d))
        except OSError:
            continue
    return found


def raise_nofile(want):
    """Raises the soft RLIMIT_NOFILE to want (inherited by dreamos)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft, None
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError) as e:
        return soft, "cannot raise the open-files limit from %d: %s" % (soft, e)
    if new < want:
        return new, "open-files limit %d (hard limit) is below the %d wanted" % (new, want)
    return new, None


def iso_ms(ts):
    """dreamos log timestamp '2026-11-21T07:26:30.508Z' -> epoch ms."""
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return d.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000.0


def sv_ms(date, clock):
    """supervisord log timestamp ('2026-11-21', '07:26:30,786'), local -> epoch ms."""
    hms, _, msec = clock.partition(",")
    t = time.mktime(time.strptime(date + " " + hms, "%Y-%m-%d %H:%M:%S"))
    return t * 1000.0 + int(msec)


class FileTail:
    """Reads the lines appended to a file (it may not exist yet)."""

    def __init__(self, path):
        self.path, self.pos, self.part = path, 0, b""

    def skip_to_end(self):
        try:
            self.pos = os.path.getsize(self.path)
        except OSError:
            self.pos = 0
        self.part = b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return []
        self.pos += len(data)
        data = self.part + data
        *done, self.part = data.split(b"\n")
        return [l.decode("utf-8", "replace") for l in done]


# ---- the two control interfaces ------------------------------------------------

class Ctl:
    """A persistent connection to dreamos's control socket (what `dreamos ctl`
    speaks: one JSON request per line, JSON replies)."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, argv):
        self.sock.sendall(json.dumps({"proto": CTL_PROTO, "argv": list(argv)}).encode() + b"\n")

    def reply(self):
        """The next final reply: (status, output, error)."""
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

    def run(self, *argv):
        self.send(argv)
        return self.reply()

    def json(self, *argv):
        status, out, err = self.run(*argv, "--json")
        if status != 0:
            raise BenchError("%s: %s" % (" ".join(argv), err or out))
        return json.loads(out)

    def close(self):
        self.sock.close()


def ctl_connect(path, proc, timeout=30.0):
    """Waits for the control socket of a starting dreamos and connects."""
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError("dreamos exited with status %s while starting" % proc.returncode)
        try:
            return Ctl(path)
        except OSError:
            if time.monotonic() > end:
                raise BenchError("dreamos control socket %s did not appear" % path)
            time.sleep(0.005)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.unix_path)
        self.sock = s


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, _UnixHTTPConnection(self.unix_path)
        return self._connection[1]


def sv_proxy(sock_path):
    """supervisord's XML-RPC interface (what supervisorctl uses), over its socket."""
    return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(sock_path))


# ---- dreamos process management -------------------------------------------------

class Dreamos:
    def __init__(self, exe, workdir, name, config_text):
        self.rt = os.path.join(workdir, name)
        shutil.rmtree(self.rt, ignore_errors=True)
        os.makedirs(self.rt)
        self.cfg = os.path.join(workdir, name + ".yaml")
        if "extensions:" not in config_text:
            config_text += "\nextensions: {load: []}\n"  # the orchestrator alone
        with open(self.cfg, "w") as f:
            f.write(config_text)
        self.sock = os.path.join(self.rt, "dreamos.sock")
        self.logfile = os.path.join(self.rt, "logs", "dreamos.log")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.exe = exe
        self.proc = None

    def start(self):
        self.t_wall = time.time()
        self.t0 = time.monotonic()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.exe, "--headless", "--runtime", self.rt, "--config", self.cfg],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        return self.proc

    def stderr_tail(self, n=5):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return "".join(f.readlines()[-n:]).strip()
        except OSError:
            return ""

    def stop(self, timeout=120.0):
        """SIGTERM; returns (seconds to exit, exit status)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0, self.proc.returncode if self.proc else None
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            return float("nan"), rc
        return time.monotonic() - t, rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ready_count(ctl, names=None):
    """Agents up: status counts.agents_up when dreamos reports it, else the
    `agent list` rows in a connected state."""
    st = ctl.json("status")
    up = st.get("counts", {}).get("agents_up")
    if isinstance(up, int):
        return up, "status counts.agents_up"
    rows = ctl.json("agent", "list")
    return sum(1 for r in rows if r.get("state") in ("ready", "busy", "paused")
               and (names is None or r.get("name") in names)), "agent list"


# ---- (a) the fleet -----------------------------------------------------------

def fleet_config(agent, n, in_config):
    lines = [
        "# written by bench/agents.py",
        "bridge:",
        "  enabled: false",
        "agents:",
        "  restart: on-failure",
        "  heartbeat_timeout: 60s",
        "  hello_timeout: 60s",
        "  list:" if in_config else "  list: []",
    ]
    if in_config:
        for i in range(n):
            lines.append("    - {name: a%04d, command: %s, env: {TINY_AGENT_HEARTBEAT_MS: \"20000\"}}"
                         % (i, json.dumps(agent)))
    return "\n".join(lines) + "\n"


def run_fleet(args, path):
    """One fleet run; path is 'config' or 'spawn'.  Returns a dict of figures."""
    n = args.agents
    d = Dreamos(args.dreamos, args.tmp, "fleet-" + path, fleet_config(args.agent, n, path == "config"))
    res = {"path": path, "n": n}
    names = {"a%04d" % i for i in range(n)}
    if pids_running(args.agent):
        raise BenchError("tiny agents from %s are already running" % args.agent)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        d.start()
        ctl = ctl_connect(d.sock, d.proc)
        t_start, t_start_wall = d.t0, d.t_wall
        res["socket_s"] = time.monotonic() - d.t0
        sender = None
        if path == "config":
            # The configured agents are created before the loop runs, so the
            # first reply already lists all of them -- unless they are not started.
            listed = len(ctl.json("agent", "list"))
            if listed < n:
                res["error"] = ("dreamos lists %d of the %d agents of its configuration: "
                                "config agents are not started at launch" % (listed, n))
                return res
        else:
            spawner = Ctl(d.sock, timeout=120.0)
            failures = []

            def send_all():
                for i in range(n):
                    spawner.send(["agent", "spawn", "a%04d" % i, "--env",
                                  "TINY_AGENT_HEARTBEAT_MS=20000", "--", args.agent])

            def read_all():
                for _ in range(n):
                    st, out, err = spawner.reply()
                    if st != 0:
                        failures.append(err or out)
                res["spawn_replies_s"] = time.monotonic() - t_start

            t_start, t_start_wall = time.monotonic(), time.time()
            sender = threading.Thread(target=send_all, daemon=True)
            reader = threading.Thread(target=read_all, daemon=True)
            sender.start()
            reader.start()
        # Poll every 50 ms until all are up.
        peak_rss, how, up = 0, "", 0
        deadline = time.monotonic() + args.fleet_timeout
        while True:
            up, how = ready_count(ctl, names)
            peak_rss = max(peak_rss, proc_status(d.proc.pid).get("VmRSS", 0))
            if up >= n:
                break
            if d.proc.poll() is not None:
                raise BenchError("dreamos exited (status %s): %s" % (d.proc.returncode, d.stderr_tail()))
            if time.monotonic() > deadline:
                res["error"] = "only %d of %d agents ready after %.0f s" % (up, n, args.fleet_timeout)
                break
            time.sleep(0.05)
        res["ready_poll_s"] = time.monotonic() - t_start
        res["poll_via"] = how
        if path == "spawn":
            reader.join(30)
            res["spawn_failures"] = len(failures)
            if failures:
                note("agent spawn failed %d times, first: %s" % (len(failures), failures[0]))
        if "error" in res:
            return res
        # The exact moment from the orchestrator's own log: the last `-> ready`.
        last = None
        nready = 0
        for line in FileTail(d.logfile).lines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("source") in names and (r.get("fields") or {}).get("to") == "ready":
                nready += 1
                last = iso_ms(r["ts"])
        if nready >= n and last is not None:
            res["ready_log_s"] = (last - t_start_wall * 1000.0) / 1000.0
        st = proc_status(d.proc.pid)
        res["vmhwm"] = st.get("VmHWM", 0)
        res["vmrss"] = st.get("VmRSS", 0)
        res["rss_poll_peak"] = peak_rss
        res["cpu_s"] = proc_cpu_s(d.proc.pid)
        res["fds"] = proc_nfds(d.proc.pid)
        res["agent_procs"] = len(pids_running(args.agent))
        ctl.close()
        res["shutdown_s"], res["exit_status"] = d.stop()
        # dreamos reaped the agents and was reaped by us: our children's
        # rusage now holds the CPU time of dreamos and all its agents.
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res["cpu_all_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        time.sleep(0.2)
        left = pids_running(args.agent)
        res["left_after_stop"] = len(left)
        for pid in left:  # ours: this run's private binary
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return res
    finally:
        d.kill()
        for pid in pids_running(args.agent):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# ---- (b) restart latency -------------------------------------------------------

RE_DOS_PID = re.compile(r"-> starting: pid (\d+)")
RE_SV = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d,\d{3}) \w+ (.*)$")
RE_SV_SPAWNED = re.compile(r"spawned: 'tiny' with pid (\d+)")


class DreamosSide:
    """One tiny agent under dreamos, restart always, backoff initial 0."""
    label = "dreamos"
    up_event = "starting -> ready (hello received)"
    spawn_event = "-> starting: pid N"

    def __init__(self, args):
        self.args = args
        self.notes = []
        self.initial = "0"
        self.d = None

    def config(self):
        return ("# written by bench/agents.py\n"
                "bridge:\n  enabled: false\n"
                "agents:\n"
                "  restart: always\n"
                "  heartbeat_timeout: 60s\n"
                "  backoff: {initial: %s, factor: 1, cap: 1s, reset_after: 0}\n"
                "  intensity: {max: 1000000, period: 60s}\n"
                "  list:\n"
                "    - {name: tiny, command: %s, env: {TINY_AGENT_HEARTBEAT_MS: \"0\"}}\n"
                % (self.initial, json.dumps(self.args.agent)))

    def start(self):
        for initial in ("0", "0.000001"):
            self.initial = initial
            self.d = Dreamos(self.args.dreamos, self.args.tmp, "restart-dreamos", self.config())
            self.d.start()
            try:
                self.ctl = ctl_connect(self.d.sock, self.d.proc)
                break
            except BenchError:
                err = self.d.stderr_tail()
                if initial == "0" and "backoff.initial" in err:
                    self.notes.append("dreamos rejects agents.backoff.initial: 0 (%s); used "
                                      "0.000001 s (1 us), which arms a 0 ms timer"
                                      % err.splitlines()[-1].strip())
                    continue
                raise BenchError("dreamos did not start: %s" % err)
        self.tail = FileTail(self.d.logfile)
        if not any(r.get("name") == "tiny" for r in self.ctl.json("agent", "list")):
            self.notes.append("the config agent was not started at launch; created it with "
                              "'agent spawn tiny --restart always' (same defaults)")
            st, out, err = self.ctl.run("agent", "spawn", "tiny", "--restart", "always", "--env",
                                        "TINY_AGENT_HEARTBEAT_MS=0", "--", self.args.agent)
            if st != 0:
                raise BenchError("agent spawn tiny: %s" % (err or out))
        self.wait_api_up(None, 10.0)

    def api_up(self):
        """(up, pid) as the control interface reports it."""
        info = self.ctl.json("agent", "info", "tiny")
        return info.get("state") == "ready", info.get("pid")

    def wait_api_up(self, old_pid, timeout):
        end = time.monotonic() + timeout
        why = ""
        while True:
            try:
                up, pid = self.api_up()
            except (BenchError, OSError, xmlrpc.client.Error, http.client.HTTPException) as e:
                up, pid, why = False, None, " (last answer: %s)" % e
            if up and pid and pid != old_pid:
                return pid
            if time.monotonic() > end:
                raise BenchError("%s: tiny not up again within %.0f s%s" % (self.label, timeout, why))
            time.sleep(self.args.poll_ms / 1000.0)

    def parse(self, line):
        """A log line -> (event, ts_ms, pid), event 'exited', 'spawned' or 'up'; or None."""
        try:
            r = json.loads(line)
        except ValueError:
            return None
        if r.get("source") != "tiny":
            return None
        to = (r.get("fields") or {}).get("to")
        if to == "backoff":
            return ("exited", iso_ms(r["ts"]), None)
        if to == "starting":
            m = RE_DOS_PID.search(r.get("msg", ""))
            return ("spawned", iso_ms(r["ts"]), int(m.group(1)) if m else None)
        if to == "ready":
            return ("up", iso_ms(r["ts"]), None)
        return None

    def stop(self):
        if self.d is not None:
            try:
                self.ctl.close()
            except Exception:
                pass
            self.d.stop(30)
            self.d.kill()


class SupervisordSide:
    """The same tiny agent under supervisord: autorestart=true, startsecs=0."""
    label = "supervisord"
    up_event = "success: tiny entered RUNNING state"
    spawn_event = "spawned: 'tiny' with pid N"

    def __init__(self, args):
        self.args = args
        self.notes = []
        self.dir = os.path.join(args.tmp, "supervisord")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "supervisor.sock")
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.logfile = os.path.join(self.dir, "supervisord.log")
        self.proc = None

    def start(self):
        exe = shutil.which("supervisord", path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin")
        if exe is None:
            raise BenchError("supervisord is not installed (apt-get install supervisor)")
        with open(self.conf, "w") as f:
            f.write("""; written by bench/agents.py
[unix_http_server]
file=%(dir)s/supervisor.sock
[supervisord]
nodaemon=true
logfile=%(dir)s/supervisord.log
pidfile=%(dir)s/supervisord.pid
childlogdir=%(dir)s
loglevel=info
user=%(user)s
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://%(dir)s/supervisor.sock
[program:tiny]
command=%(agent)s
environment=DREAMOS_AGENT_NAME="tiny",TINY_AGENT_HEARTBEAT_MS="0"
autostart=true
autorestart=true
startsecs=0
startretries=1000000
stopwaitsecs=5
stdout_logfile=%(dir)s/tiny.out
stderr_logfile=%(dir)s/tiny.err
""" % {"dir": self.dir, "agent": self.args.agent, "user": _user()})
        self.tail = FileTail(self.logfile)
        with open(os.path.join(self.dir, "supervisord.stderr"), "wb") as err:
            self.proc = subprocess.Popen([exe, "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        self.version = subprocess.run([exe, "--version"], capture_output=True,
                                      text=True).stdout.strip()
        end = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise BenchError("supervisord did not start (see %s)" % self.dir)
            time.sleep(0.01)
        self.rpc = sv_proxy(self.sock)
        self.wait_api_up(None, 10.0)

    def api_up(self):
        info = self.rpc.supervisor.getProcessInfo("tiny")
        return info.get("statename") == "RUNNING", info.get("pid")

    wait_api_up = DreamosSide.wait_api_up

    def parse(self, line):
        m = RE_SV.match(line)
        if not m:
            return None
        ts, msg = sv_ms(m.group(1), m.group(2)), m.group(3)
        s = RE_SV_SPAWNED.search(msg)
        if s:
            return ("spawned", ts, int(s.group(1)))
        if msg.startswith("exited: tiny "):
            return ("exited", ts, None)
        if msg.startswith("success: tiny entered RUNNING state"):
            return ("up", ts, None)
        return None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _user():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def kill_and_watch_log(side, pid, timeout=15.0):
    """Unobserved run: SIGKILL, then read the supervisor's log file (no request
    is made to the supervisor) until it records the program up again.
    Returns (kill->exit noticed, kill->spawned, kill->up) in ms from the log
    timestamps, and the new pid."""
    side.tail.skip_to_end()
    kill_ms = time.time() * 1000.0
    os.kill(pid, signal.SIGKILL)
    exited = spawned = up = new_pid = None
    end = time.monotonic() + timeout
    while up is None:
        for line in side.tail.lines():
            ev = side.parse(line)
            if ev is None:
                continue
            kind, ts, p = ev
            if kind == "exited" and exited is None:
                exited = ts
            elif kind == "spawned" and spawned is None:
                spawned, new_pid = ts, p
            elif kind == "up" and spawned is not None:
                up = ts
                break
        if up is None:
            if time.monotonic() > end:
                raise BenchError("%s: no '%s' record within %.0f s of the kill"
                                 % (side.label, side.up_event, timeout))
            time.sleep(side.args.poll_ms / 1000.0)
    # Log times are whole milliseconds (truncated): compare with the kill's.
    k = math.floor(kill_ms)
    return tuple(max(0.0, t - k) if t is not None else float("nan")
                 for t in (exited, spawned, up)) + (new_pid,)


def kill_and_poll_api(side, pid, timeout=15.0):
    """Observed run: SIGKILL, then ask the supervisor every poll_ms until it
    reports the program running with a new pid.  Returns ms (monotonic)."""
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new_pid = side.wait_api_up(pid, timeout)
    return (time.monotonic() - t) * 1000.0, new_pid


def run_restart(args, side, rng):
    """Both methods for one supervisor.  Returns a dict of latency lists (ms)."""
    out = {"exited": [], "spawned": [], "up": [], "api": []}
    try:
        side.start()
        pid = side.wait_api_up(None, 10.0)
        # Unobserved: settle a random 0.05-1.05 s first, so that the kill falls
        # at a random phase of any periodic (1 s) wake-up of the supervisor.
        for _ in range(args.iterations):
            time.sleep(rng.uniform(0.05, 1.05))
            e, s, u, pid = kill_and_watch_log(side, pid)
            out["exited"].append(e)
            out["spawned"].append(s)
            out["up"].append(u)
        time.sleep(0.2)
        pid = side.wait_api_up(None, 10.0)
        for _ in range(args.iterations):
            time.sleep(rng.uniform(0.05, 1.05))
            ms, pid = kill_and_poll_api(side, pid)
            out["api"].append(ms)
    finally:
        side.stop()
    out["notes"] = side.notes
    return out


# ---- the report ------------------------------------------------------------------

def fmt_s(v):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else "%.2f s" % v


def fmt_mb(v):
    return "-" if not v else "%.1f MB" % (v / MB)


def fmt_ms(v):
    return "%.1f ms" % v if v < 100 else "%.0f ms" % v


def verdict(ok):
    return "MET" if ok else "NOT MET"


def report_fleet(by_path, args):
    """by_path: [(path, [run, ...]), ...].  Times: median (min-max) of the runs;
    peak RSS: the largest; processes left: the largest."""
    say("")
    say("(a) %d tiny agents until all are ready, %d run(s) per path; times: median (min-max)"
        % (args.agents, args.repeat))
    W = 30

    def med(runs, key):
        v = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        return statistics.median(v) if v else None

    def t(runs, key):
        v = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        if not v:
            return "-"
        if len(v) == 1:
            return "%.2f s" % v[0]
        return "%.2f s (%.2f-%.2f)" % (statistics.median(v), min(v), max(v))

    def mx(runs, key, fmt):
        v = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        return fmt(max(v)) if v else "-"

    def mn(runs, key, fmt):
        v = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        return fmt(min(v)) if v else "-"

    heads = {"config": "from the config file", "spawn": "agent spawn x%d (ctl)" % args.agents}
    say("  %-40s" % "" + "".join("%-*s" % (W, heads.get(p, p)) for p, _ in by_path))
    rows = [
        ("time to all ready (orchestrator log)", lambda rs: t(rs, "ready_log_s")),
        ("time to all ready (seen by 50 ms poll)", lambda rs: t(rs, "ready_poll_s")),
        ("all spawn requests answered", lambda rs: t(rs, "spawn_replies_s")),
        ("peak RSS of dreamos (VmHWM, largest)", lambda rs: mx(rs, "vmhwm", fmt_mb)),
        ("CPU time of dreamos (user+sys)", lambda rs: t(rs, "cpu_s")),
        ("CPU, dreamos + agents, start to exit", lambda rs: t(rs, "cpu_all_s")),
        ("open fds of dreamos", lambda rs: mx(rs, "fds", str)),
        ("agent processes running (fewest)", lambda rs: mn(rs, "agent_procs", str)),
        ("shutdown: SIGTERM to exit", lambda rs: t(rs, "shutdown_s")),
        ("agent processes left after exit", lambda rs: mx(rs, "left_after_stop", str)),
    ]
    for label, f in rows:
        say("  %-40s" % label + "".join("%-*s" % (W, f([r for r in rs if not r.get("error")]))
                                        for _, rs in by_path))
    results = []
    for path, rs in by_path:
        bad = [r for r in rs if r.get("error")]
        for r in bad:
            say("  %s path: NOT MEASURED: %s" % (path, r["error"]))
        ok = [r for r in rs if not r.get("error")]
        if bad or not ok:
            results.append((path, False, False, False))
            continue
        for r in ok:
            if r.get("exit_status") not in (0, None):
                say("  %s path: dreamos exited with status %s" % (path, r["exit_status"]))
        tm = med(ok, "ready_log_s") or med(ok, "ready_poll_s")
        rss = max(r["vmhwm"] for r in ok)
        left = max(r.get("left_after_stop", 1) for r in ok)
        res = (path, tm is not None and tm < args.target_ready_s,
               rss < args.target_rss_mb * MB, left == 0)
        results.append(res)
        say("  target (%s): all ready in < %.0f s: %s (%.2f s); peak RSS < %d MB: %s (%.1f MB); "
            "no agent left: %s" % (path, args.target_ready_s, verdict(res[1]), tm,
                                   args.target_rss_mb, verdict(res[2]), rss / MB, verdict(res[3])))
    return results


def report_restart(dos, sv, args):
    say("")
    say("(b) restart latency: SIGKILL of the agent -> up again, %d kills each, same tiny agent"
        % args.iterations)
    say("  %-52s %10s %10s %10s" % ("", "p50", "p90", "max"))

    def row(label, v):
        v = [x for x in v if not math.isnan(x)]
        if not v:
            say("  %-52s %10s %10s %10s" % (label, "-", "-", "-"))
        else:
            say("  %-52s %10s %10s %10s" % (label, fmt_ms(pct(v, 50)), fmt_ms(pct(v, 90)),
                                           fmt_ms(max(v))))

    def ratio(label, a, b):
        if a and b:
            r = [pct(b, p) / max(pct(a, p), 1.0) for p in (50, 90)]
            say("  %-52s %10s %10s" % (label, "%.0fx" % r[0], "%.0fx" % r[1]))
            return r
        return None

    say("  unobserved (times from each supervisor's own log, 1 ms resolution; no requests made):")
    row("dreamos      kill -> exit noticed (-> backoff)", dos["exited"])
    row("dreamos      kill -> new process (-> starting)", dos["spawned"])
    row("dreamos      kill -> ready (hello received)", dos["up"])
    if sv:
        row("supervisord  kill -> exit noticed (exited:)", sv["exited"])
        row("supervisord  kill -> new process (spawned:)", sv["spawned"])
        row("supervisord  kill -> RUNNING (startsecs=0)", sv["up"])
    r_up = ratio("ratio supervisord/dreamos, kill -> up (>= 1 ms each)", dos["up"],
                 sv and sv["up"])
    say("  observed (control interface polled every %d ms; includes the poll interval):" % args.poll_ms)
    row("dreamos      agent info: ready, new pid", dos["api"])
    if sv:
        row("supervisord  getProcessInfo: RUNNING, new pid", sv["api"])
    r_api = ratio("ratio supervisord/dreamos, observed", dos["api"], sv and sv["api"])
    met = None
    if r_up:
        met = r_up[0] >= args.target_ratio
        say("  target: restart latency >= %.0fx lower than supervisord's (p50, unobserved): %s "
            "(%.0fx)" % (args.target_ratio, verdict(met), r_up[0]))
        if r_api and r_api[0] < args.target_ratio:
            say("  (polled every %d ms the ratio is only %.0fx: each request wakes supervisord's "
                "1 s poll loop, which then restarts the program sooner than it would alone)"
                % (args.poll_ms, r_api[0]))
    else:
        say("  target: restart latency >= %.0fx lower than supervisord's: NOT CHECKED (no supervisord)"
            % args.target_ratio)
    return met


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    deb = "?"
    try:
        with open("/etc/debian_version") as f:
            deb = f.read().strip()
    except OSError:
        pass
    return "%d CPUs (%s), %s RAM, Linux %s, Debian %s" % (os.cpu_count(), cpu, mem,
                                                         os.uname().release, deb)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dreamos", required=True, help="the dreamos binary")
    ap.add_argument("--agent", required=True, help="the tiny agent binary (bench/tiny-agent.c)")
    ap.add_argument("--tmp", help="scratch directory (default: a new one in /tmp)")
    ap.add_argument("--agents", type=int, default=1000, help="fleet size (default 1000)")
    ap.add_argument("--paths", default="config,spawn",
                    help="fleet paths to run: config, spawn or both (default config,spawn)")
    ap.add_argument("--repeat", type=int, default=3, help="fleet runs per path (default 3)")
    ap.add_argument("--iterations", type=int, default=50, help="kills per supervisor (default 50)")
    ap.add_argument("--poll-ms", type=int, default=2, help="poll interval of (b) (default 2)")
    ap.add_argument("--fleet-timeout", type=float, default=120.0)
    ap.add_argument("--skip-fleet", action="store_true")
    ap.add_argument("--skip-restart", action="store_true")
    ap.add_argument("--no-supervisord", action="store_true", help="skip the supervisord peer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--target-ready-s", type=float, default=10.0)
    ap.add_argument("--target-rss-mb", type=int, default=100)
    ap.add_argument("--target-ratio", type=float, default=10.0)
    args = ap.parse_args()
    for p in args.paths.split(","):
        if p.strip() not in ("config", "spawn"):
            ap.error("--paths: expected config and/or spawn, got %r" % p)
    args.dreamos = os.path.realpath(args.dreamos)
    args.agent = os.path.realpath(args.agent)
    for p in (args.dreamos, args.agent):
        if not os.access(p, os.X_OK):
            ap.error("%s is not an executable" % p)
    own_tmp = args.tmp is None
    if own_tmp:
        args.tmp = tempfile.mkdtemp(prefix="dreamos-bench-")
    os.makedirs(args.tmp, exist_ok=True)

    version = subprocess.run([args.dreamos, "--version"], capture_output=True,
                             text=True).stdout.split("\n")[0]
    say("Dream.OS agent benchmarks: %s" % version)
    say("machine: %s" % machine())
    try:
        with open("/proc/loadavg") as f:
            say("load average at start: %s" % " ".join(f.read().split()[:3]))
    except OSError:
        pass
    want_fds = 6 * args.agents + 256
    nofile, problem = raise_nofile(want_fds)
    say("open-files limit: %s%s" % (nofile, "" if problem is None else " -- " + problem))
    figures = {"machine": machine(), "dreamos": version, "nofile": nofile}
    failed, missed = False, False

    if not args.skip_fleet:
        by_path = []
        for path in [p.strip() for p in args.paths.split(",") if p.strip()]:
            runs = []
            for i in range(args.repeat):
                say("... (a) %d agents, %s path, run %d of %d" % (args.agents, path, i + 1,
                                                                  args.repeat))
                try:
                    runs.append(run_fleet(args, path))
                except BenchError as e:
                    runs.append({"path": path, "error": str(e)})
                if runs[-1].get("error"):
                    break
            by_path.append((path, runs))
        results = report_fleet(by_path, args)
        figures["fleet"] = dict(by_path)
        if not any(not r.get("error") for _, rs in by_path for r in rs):
            failed = True  # no fleet run got through
        missed |= not all(all(r[1:]) for r in results)

    if not args.skip_restart:
        rng = random.Random(args.seed)
        dos = sv = None
        try:
            say("... (b) dreamos, %d kills unobserved + %d polled" % (args.iterations, args.iterations))
            dos = run_restart(args, DreamosSide(args), rng)
            if not args.no_supervisord:
                say("... (b) supervisord, %d kills unobserved + %d polled" % (args.iterations,
                                                                           args.iterations))
                try:
                    sv = run_restart(args, SupervisordSide(args), rng)
                except BenchError as e:
                    say("  supervisord peer NOT MEASURED: %s" % e)
        except BenchError as e:
            say("  (b) NOT MEASURED: %s" % e)
            failed = True
        if dos:
            met = report_restart(dos, sv, args)
            for n in dos["notes"] + (sv["notes"] if sv else []):
                say("  note: " + n)
            figures["restart"] = {"dreamos": dos, "supervisord": sv}
            missed |= met is not True
        figures["restart_method"] = {"poll_ms": args.poll_ms, "iterations": args.iterations}

    try:
        with open("/proc/loadavg") as f:
            say("")
            say("load average at the end: %s" % " ".join(f.read().split()[:3]))
    except OSError:
        pass
    say("")
    say("targets: %s" % ("all met" if not missed and not failed else
                         "NOT all met (see above)" if not failed else "benchmark failed"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2, default=str)
    if own_tmp:
        shutil.rmtree(args.tmp, ignore_errors=True)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
