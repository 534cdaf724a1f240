#!/usr/bin/env python3
"""test_sdk.py — tests of the Python agent SDK (share/sdk/python) and the demo
agents (share/agents).

Each test starts an agent in a subprocess and plays the orchestrator's side of
CellPhone protocol v1 over its stdin/stdout pipes.

Run from the repository root (``python3 tests/sdk/test_sdk.py``) or from
anywhere with top_srcdir set to the repository root; ``make check`` does it
through tests/sdk/run.sh.  Exit status is non-zero if a test fails.
"""

import json
import os
import py_compile
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

TOP = os.path.abspath(os.environ.get("top_srcdir")
                      or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SDK = os.path.join(TOP, "share", "sdk", "python")
AGENTS = os.path.join(TOP, "share", "agents")
TIMEOUT = 10.0  # generous: slow CI machines

# The agent under test: each behaviour is triggered by what the test sends.
TEST_AGENT = r'''
import sys
from dreamos_agent import Agent, TaskError, ProtocolError


class T(Agent):
    def on_welcome(self, info):
        self.log("info", "welcomed", agent=info.get("agent"), session=info.get("session"),
                 me=self.agent)

    def on_message(self, msg):
        body = msg.get("body")
        if not isinstance(body, dict):
            return None
        if body.get("raise"):
            raise RuntimeError("handler failed on purpose")
        if body.get("print"):
            print("stray output from a handler")
        if "send_to" in body:
            ref = self.send(body["send_to"], {"x": 1}, priority="high", mode="SYNC",
                            reply_to=msg.get("id"))
            self.log("info", "send-ref", ref=ref)
        if "wait_to" in body:
            try:
                mid = self.send(body["wait_to"], {"x": 2}, wait_sent=True, timeout=5)
            except ProtocolError as e:
                self.log("info", "refused", code=e.code)
                raise
            self.log("info", "waited", id=mid)
        if "publish" in body:
            self.publish(body["publish"], {"p": 1})
            self.broadcast({"b": 1})
            self.subscribe(body["publish"])
            self.unsubscribe("#" + body["publish"])
        if "submit" in body:
            ref = self.submit(body["submit"], payload={"k": 1}, capability="compute",
                              priority="low", after=3, timeout_s=30, max_retries=2)
            self.log("info", "submit-ref", ref=ref)
        if body.get("misc"):
            self.devlog("a devlog line", task=5)
            self.usage(10, 20, 0.5, model="m")
            self.heartbeat(load=0.25)
            self.log("warning", "a warning", k="v")
        if body.get("later"):
            return Agent.LATER
        return None

    def on_sent(self, ref, msg_id):
        self.log("info", "on_sent", ref=ref, id=msg_id)

    def on_task(self, task):
        p = task.get("payload") or {}
        if p.get("raise"):
            raise ValueError(p["raise"])
        if p.get("taskerror"):
            raise TaskError(p["taskerror"], retry=False)
        if p.get("later"):
            self.call_later(p["later"], self.finish, task["id"])
            return Agent.LATER
        self.progress(task["id"], 50, "half")
        return {"ok": True, "title": task.get("title")}

    def finish(self, task_id):
        self.progress(task_id, 90)
        self.done(task_id, {"late": True})

    def on_task_cancel(self, task_id):
        self.log("info", "cancelled", task=task_id)

    def on_command(self, name, args):
        self.log("info", "command", name=name, args=args)
        super().on_command(name, args)

    def on_error(self, code, detail, ref):
        self.log("info", "on_error", code=code, detail=detail, ref=ref)

    def on_stop(self):
        sys.stderr.write("on_stop called\n")


T(capabilities=["test", "x"], max_tasks=3).run()
'''

# The same agent written with decorators instead of a subclass.
DECORATED_AGENT = r'''
from dreamos_agent import Agent

agent = Agent(capabilities=["deco"])


@agent.on("message")
def handle(msg):
    agent.log("info", "decorated", id=msg["id"])


@agent.on("task")
def work(task):
    return {"n": task["payload"]["n"] * 2}


agent.run()
'''


class Orch(object):
    """The orchestrator's side of one agent process."""

    def __init__(self, argv, env=None, name="tester"):
        self.tmp = tempfile.mkdtemp(prefix="dreamos-sdk-test.")
        self.err = open(os.path.join(self.tmp, "stderr"), "w+b")
        e = dict(os.environ)
        e.pop("DREAMOS_AGENT_TRACE", None)
        e["PYTHONPATH"] = SDK + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        e["DREAMOS_HEARTBEAT_INTERVAL"] = "60"   # out of the way unless a test wants them
        if name is None:
            e.pop("DREAMOS_AGENT_NAME", None)
        else:
            e["DREAMOS_AGENT_NAME"] = name
        e.update(env or {})
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=e, cwd=self.tmp)
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.eof = False
        self.seen = []     # every message received, in order

    def put(self, obj):
        """Sends one message (dict) or raw line (str) to the agent."""
        line = obj if isinstance(obj, str) else json.dumps(obj)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def get(self, timeout=TIMEOUT):
        """Returns the next message from the agent, or None on timeout/EOF.
        A line that is not a JSON object with a type fails the test."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            data = os.read(self.fd, 65536)
            if not data:
                self.eof = True
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(line.decode("utf-8"))
        except ValueError:
            raise AssertionError("agent wrote a line that is not JSON: %r\n%s"
                                 % (line, self.stderr()))
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise AssertionError("agent wrote a line that is not a typed object: %r" % line)
        self.seen.append(msg)
        return msg

    def expect(self, mtype, timeout=TIMEOUT, **fields):
        """Returns the next message of type mtype whose fields match,
        skipping others; fails the test if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.get(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise AssertionError("no %s %r from the agent; got %r\nstderr:\n%s"
                                     % (mtype, fields, self.seen[-10:], self.stderr()))
            if msg["type"] == mtype and all(msg.get(k) == v for k, v in fields.items()):
                return msg

    def expect_log(self, text, timeout=TIMEOUT):
        """Returns the next log record whose msg is text."""
        return self.expect("log", timeout, msg=text)

    def collect(self, seconds):
        """Returns the messages that arrive within seconds."""
        out = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            msg = self.get(left)
            if msg is None:
                if self.eof:
                    return out
                continue
            out.append(msg)

    def handshake(self, agent="tester"):
        """Reads hello, answers welcome; returns the hello."""
        hello = self.expect("hello")
        self.put({"type": "welcome", "proto": 1, "agent": agent, "session": "sess-1"})
        return hello

    def wait(self, timeout=TIMEOUT):
        """Returns the agent's exit status (None if it is still running)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr(self):
        """Returns what the agent wrote to stderr so far."""
        self.err.flush()
        self.err.seek(0)
        return self.err.read().decode("utf-8", "replace")

    def close(self):
        """Ends the agent (EOF, then kill) and removes the temporary files."""
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        if self.wait(3) is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def message(mid, body, sender="alice", to="tester", **extra):
    """Returns a `message` from the orchestrator."""
    msg = {"type": "message", "id": mid, "from": sender, "to": to, "body": body,
           "priority": "normal", "mode": "NORMAL", "ts": 1700000000.0, "attempt": 1}
    msg.update(extra)
    return msg


def assign(tid, payload, attempt=1, title="a task"):
    """Returns a `task.assign` from the orchestrator."""
    return {"type": "task.assign",
            "task": {"id": tid, "title": title, "payload": payload, "priority": "normal",
                     "capability": "test", "timeout_s": 60, "attempt": attempt}}


class AgentTestCase(unittest.TestCase):
    """Starts agents and makes sure every one of them is cleaned up."""

    script_text = TEST_AGENT
    script_name = "agent_under_test.py"

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="dreamos-sdk-agents.")
        cls.script = os.path.join(cls.dir, cls.script_name)
        with open(cls.script, "w") as f:
            f.write(cls.script_text)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start(self, argv=None, **kwargs):
        """Starts an agent (default: the test agent) and registers its
        cleanup."""
        orch = Orch(argv or [sys.executable, self.script], **kwargs)
        self.addCleanup(orch.close)
        return orch

    def started(self, **kwargs):
        """Starts the test agent and completes the handshake."""
        orch = self.start(**kwargs)
        orch.handshake()
        orch.expect_log("welcomed")
        return orch


class TestHandshake(AgentTestCase):

    def test_hello_is_first_and_well_formed(self):
        o = self.start()
        hello = o.get()
        self.assertIsNotNone(hello, o.stderr())
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["proto"], 1)
        self.assertEqual(hello["name"], "tester")
        self.assertEqual(hello["capabilities"], ["test", "x"])
        self.assertEqual(hello["max_tasks"], 3)
        self.assertIsInstance(hello["version"], str)

    def test_name_defaults_to_program_name(self):
        o = self.start(name=None)
        self.assertEqual(o.expect("hello")["name"], "agent_under_test")

    def test_welcome_calls_on_welcome(self):
        o = self.start()
        o.handshake(agent="tester")
        rec = o.expect_log("welcomed")
        self.assertEqual(rec["level"], "info")
        self.assertEqual(rec["fields"], {"agent": "tester", "session": "sess-1", "me": "tester"})

    def test_no_heartbeat_before_welcome(self):
        o = self.start(env={"DREAMOS_HEARTBEAT_INTERVAL": "0.1"})
        o.expect("hello")
        self.assertEqual(o.collect(0.6), [])

    def test_heartbeats_every_interval(self):
        o = self.started(env={"DREAMOS_HEARTBEAT_INTERVAL": "0.2"})
        t0 = time.monotonic()
        beats = [m for m in o.collect(1.3) if m["type"] == "heartbeat"]
        self.assertGreaterEqual(len(beats), 3, "heartbeats in %.1f s: %r"
                                % (time.monotonic() - t0, beats))
        self.assertLessEqual(len(beats), 8)


class TestMessages(AgentTestCase):

    def test_message_is_acked_with_its_id(self):
        o = self.started()
        o.put(message(41, "hello"))
        self.assertEqual(o.expect("ack")["id"], 41)

    def test_raising_handler_does_not_ack(self):
        o = self.started()
        o.put(message(42, {"raise": True}))
        o.put(message(43, "fine"))
        self.assertEqual(o.expect("ack")["id"], 43)
        acks = [m["id"] for m in o.seen if m["type"] == "ack"]
        self.assertNotIn(42, acks)
        errs = [m for m in o.seen if m["type"] == "log" and m["level"] == "error"]
        self.assertTrue(errs, "the exception is logged")
        self.assertIn("handler failed on purpose", errs[0]["msg"])
        self.assertIn("RuntimeError", o.stderr())

    def test_later_is_not_acked(self):
        o = self.started()
        o.put(message(44, {"later": True}))
        o.put(message(45, "x"))
        self.assertEqual(o.expect("ack")["id"], 45)
        self.assertNotIn(44, [m["id"] for m in o.seen if m["type"] == "ack"])

    def test_send_returns_ref_and_sent_is_matched(self):
        o = self.started()
        o.put(message(46, {"send_to": "bob"}))
        send = o.expect("send")
        self.assertEqual(send["to"], "bob")
        self.assertEqual(send["body"], {"x": 1})
        self.assertEqual(send["priority"], "high")
        self.assertEqual(send["mode"], "SYNC")
        self.assertEqual(send["reply_to"], 46)
        ref = send["ref"]
        self.assertIsInstance(ref, str)
        self.assertEqual(o.expect_log("send-ref")["fields"]["ref"], ref)
        self.assertEqual(o.expect("ack")["id"], 46)
        o.put({"type": "sent", "ref": ref, "id": 1001})
        self.assertEqual(o.expect_log("on_sent")["fields"], {"ref": ref, "id": 1001})

    def test_refs_are_unique(self):
        o = self.started()
        o.put(message(1, {"send_to": "bob"}))
        o.put(message(2, {"send_to": "carol"}))
        r1, r2 = o.expect("send")["ref"], o.expect("send")["ref"]
        self.assertNotEqual(r1, r2)

    def test_wait_sent_blocks_until_id_and_keeps_order(self):
        o = self.started()
        o.put(message(50, {"wait_to": "bob"}))
        ref = o.expect("send", to="bob")["ref"]
        o.put(message(51, "meanwhile"))   # must wait until the handler is done
        self.assertEqual([m for m in o.collect(0.3) if m["type"] == "ack"], [])
        o.put({"type": "sent", "ref": ref, "id": 77})
        self.assertEqual(o.expect_log("waited")["fields"]["id"], 77)
        self.assertEqual(o.expect("ack")["id"], 50)
        self.assertEqual(o.expect("ack")["id"], 51)

    def test_wait_sent_error_reply_raises(self):
        o = self.started()
        o.put(message(52, {"wait_to": "nobody"}))
        ref = o.expect("send", to="nobody")["ref"]
        o.put({"type": "error", "code": "unknown_recipient", "detail": "no agent nobody",
               "ref": ref})
        self.assertEqual(o.expect_log("refused")["fields"]["code"], "unknown_recipient")
        o.put(message(53, "next"))
        self.assertEqual(o.expect("ack")["id"], 53)
        self.assertNotIn(52, [m["id"] for m in o.seen if m["type"] == "ack"])

    def test_publish_broadcast_subscribe(self):
        o = self.started()
        o.put(message(54, {"publish": "news"}))
        self.assertEqual(o.expect("send")["to"], "#news")
        self.assertEqual(o.expect("send")["to"], "*")
        self.assertEqual(o.expect("subscribe")["topic"], "news")
        self.assertEqual(o.expect("unsubscribe")["topic"], "news")

    def test_submit(self):
        o = self.started()
        o.put(message(55, {"submit": "crunch"}))
        sub = o.expect("task.submit")
        self.assertEqual(sub["title"], "crunch")
        self.assertEqual(sub["payload"], {"k": 1})
        self.assertEqual(sub["capability"], "compute")
        self.assertEqual(sub["priority"], "low")
        self.assertEqual(sub["after"], [3])
        self.assertEqual(sub["timeout_s"], 30)
        self.assertEqual(sub["max_retries"], 2)
        self.assertEqual(o.expect_log("submit-ref")["fields"]["ref"], sub["ref"])

    def test_devlog_usage_heartbeat_log(self):
        o = self.started()
        o.put(message(56, {"misc": True}))
        self.assertEqual(o.expect("devlog"), {"type": "devlog", "text": "a devlog line", "task": 5})
        self.assertEqual(o.expect("usage"), {"type": "usage", "tokens_in": 10, "tokens_out": 20,
                                             "cost_usd": 0.5, "model": "m"})
        self.assertEqual(o.expect("heartbeat"), {"type": "heartbeat", "load": 0.25})
        rec = o.expect_log("a warning")
        self.assertEqual((rec["level"], rec["fields"]), ("warn", {"k": "v"}))

    def test_error_calls_on_error(self):
        o = self.started()
        o.put({"type": "error", "code": "bad_field", "detail": "pct out of range", "ref": "r9"})
        rec = o.expect_log("on_error")
        self.assertEqual(rec["fields"], {"code": "bad_field", "detail": "pct out of range",
                                         "ref": "r9"})

    def test_stray_print_does_not_corrupt_protocol(self):
        o = self.started()
        o.put(message(57, {"print": True}))
        self.assertEqual(o.expect("ack")["id"], 57)   # get() fails on a non-JSON line
        o.put({"type": "command", "name": "stop", "args": None})
        self.assertEqual(o.wait(), 0)
        self.assertIn("stray output from a handler", o.stderr())

    def test_bad_lines_are_skipped(self):
        o = self.started()
        o.put("this is not json")
        o.put("[1, 2, 3]")
        o.put('{"no": "type"}')
        o.put(message(58, "after the garbage"))
        self.assertEqual(o.expect("ack")["id"], 58)


class TestTasks(AgentTestCase):

    def test_task_progress_then_done(self):
        o = self.started()
        o.put(assign(7, {"x": 1}, title="seven"))
        prog = o.expect("task.progress")
        self.assertEqual((prog["task"], prog["pct"], prog["note"]), (7, 50, "half"))
        done = o.expect("task.done")
        self.assertEqual(done, {"type": "task.done", "task": 7,
                                "result": {"ok": True, "title": "seven"}})

    def test_raising_task_fails_with_error(self):
        o = self.started()
        o.put(assign(8, {"raise": "boom"}))
        fail = o.expect("task.fail")
        self.assertEqual((fail["task"], fail["error"], fail["retry"]), (8, "boom", True))

    def test_task_error_controls_retry(self):
        o = self.started()
        o.put(assign(9, {"taskerror": "bad input"}))
        fail = o.expect("task.fail")
        self.assertEqual((fail["task"], fail["error"], fail["retry"]), (9, "bad input", False))

    def test_later_task_finishes_from_timer(self):
        o = self.started()
        o.put(assign(10, {"later": 0.2}))
        self.assertEqual(o.expect("task.progress")["pct"], 90)
        self.assertEqual(o.expect("task.done")["result"], {"late": True})

    def test_cancel_calls_handler_and_drops_late_done(self):
        o = self.started()
        o.put(assign(11, {"later": 0.5}))
        o.put({"type": "task.cancel", "task": 11})
        self.assertEqual(o.expect_log("cancelled")["fields"], {"task": 11})
        later = o.collect(1.0)
        self.assertEqual([m for m in later if m["type"].startswith("task.")], [])


class TestCommandsAndExit(AgentTestCase):

    def test_command_stop_exits_zero(self):
        o = self.started()
        o.put({"type": "command", "name": "stop", "args": None})
        rec = o.expect_log("command")
        self.assertEqual(rec["fields"], {"name": "stop", "args": None})
        self.assertEqual(o.wait(), 0)
        self.assertIn("on_stop called", o.stderr())

    def test_eof_exits_zero(self):
        o = self.started()
        o.proc.stdin.close()
        self.assertEqual(o.wait(), 0)
        self.assertIn("on_stop called", o.stderr())

    def test_eof_before_welcome_exits_zero(self):
        o = self.start()
        o.expect("hello")
        o.proc.stdin.close()
        self.assertEqual(o.wait(), 0)

    def test_ping_answers_heartbeat(self):
        o = self.started()
        o.put({"type": "command", "name": "ping", "args": {}})
        o.expect("heartbeat")

    def test_sigterm_exits_zero(self):
        o = self.started()
        o.proc.send_signal(signal.SIGTERM)
        self.assertEqual(o.wait(), 0)
        self.assertNotIn("Traceback", o.stderr())

    def test_orchestrator_gone_exits_quietly(self):
        o = self.started()
        o.proc.stdout.close()          # the agent's next write gets EPIPE
        o.put(message(60, "anyone?"))
        self.assertEqual(o.wait(), 0)
        self.assertNotIn("Traceback", o.stderr())
        self.assertNotIn("BrokenPipe", o.stderr())


class TestDecorators(AgentTestCase):
    script_text = DECORATED_AGENT
    script_name = "decorated.py"

    def test_decorated_handlers(self):
        o = self.start()
        self.assertEqual(o.handshake()["capabilities"], ["deco"])
        o.put(message(61, "x"))
        self.assertEqual(o.expect_log("decorated")["fields"], {"id": 61})
        self.assertEqual(o.expect("ack")["id"], 61)
        o.put(assign(12, {"n": 21}))
        self.assertEqual(o.expect("task.done")["result"], {"n": 42})


class TestDemoAgents(AgentTestCase):

    def agent(self, name, args=(), env=None):
        """Starts a demo agent and completes the handshake."""
        o = self.start([sys.executable, os.path.join(AGENTS, name + ".py")] + list(args),
                       env=env, name=name)
        hello = o.handshake(agent=name)
        return o, hello

    def test_scripts_compile(self):
        for path in [os.path.join(SDK, "dreamos_agent.py")] + \
                [os.path.join(AGENTS, f) for f in sorted(os.listdir(AGENTS)) if f.endswith(".py")]:
            with tempfile.TemporaryDirectory() as d:
                py_compile.compile(path, cfile=os.path.join(d, "x.pyc"), doraise=True)

    def test_greeter_replies_and_subscribes(self):
        o, hello = self.agent("greeter")
        self.assertEqual(o.expect("subscribe")["topic"], "greetings")
        o.put(message(70, {"text": "hi"}, sender="chatter", to="greeter"))
        send = o.expect("send")
        self.assertEqual((send["to"], send["reply_to"]), ("chatter", 70))
        self.assertIn("chatter", send["body"]["text"])
        self.assertEqual(o.expect("ack")["id"], 70)
        # topic messages and replies are not answered
        o.put(message(71, "all", sender="chatter", to="#greetings"))
        o.put(message(72, "thanks", sender="chatter", to="greeter", reply_to=1))
        self.assertEqual(o.expect("ack")["id"], 71)
        self.assertEqual(o.expect("ack")["id"], 72)
        self.assertEqual([m for m in o.seen if m["type"] == "send"], [send])

    def test_worker_text_task(self):
        o, hello = self.agent("worker")
        self.assertEqual(hello["capabilities"], ["compute", "text"])
        o.put(assign(20, {"text": "hello big world", "duration": 0.2}))
        done = o.expect("task.done", task=20)
        self.assertEqual(done["result"], {"upper": "HELLO BIG WORLD", "words": 3, "chars": 15})
        pcts = [m["pct"] for m in o.seen if m["type"] == "task.progress"]
        self.assertGreaterEqual(len(pcts), 2)
        self.assertEqual(pcts, sorted(pcts))

    def test_worker_primes_and_capabilities_from_argv(self):
        o, hello = self.agent("worker", ["math"])
        self.assertEqual(hello["capabilities"], ["math"])
        o.put(assign(21, {"n": 100, "duration": 0.1}))
        res = o.expect("task.done", task=21)["result"]
        self.assertEqual((res["sum"], res["primes"], res["largest_prime"]), (5050, 25, 97))

    def test_worker_fails_first_attempt_then_succeeds(self):
        o, hello = self.agent("worker")
        o.put(assign(22, {"fail": True, "duration": 0.1}, attempt=1))
        fail = o.expect("task.fail", task=22)
        self.assertTrue(fail["retry"])
        o.put(assign(22, {"fail": True, "duration": 0.1}, attempt=2))
        o.expect("task.done", task=22)

    def test_chatter_talks(self):
        o, hello = self.agent("chatter", env={"CHATTER_INTERVAL": "0.1",
                                               "CHATTER_PEERS": "greeter,chatter"})
        sends = [o.expect("send") for _ in range(4)]
        for s in sends:
            self.assertIn(s["to"], ("greeter", "#greetings"))
            self.assertIn(s.get("priority"), ("low", "normal", "high", "urgent"))
        o.put(message(80, "hey", sender="greeter", to="chatter"))
        self.assertEqual(o.expect("ack")["id"], 80)

    def test_flaky_replies_and_crashes(self):
        o, hello = self.agent("flaky", env={"DREAMOS_FLAKY_SEED": "7",
                                                    "DREAMOS_FLAKY_LIFETIME": "1"})
        o.put(message(90, "alive?", sender="chatter", to="flaky"))
        self.assertEqual(o.expect("send")["to"], "chatter")
        self.assertEqual(o.expect("ack")["id"], 90)
        rc = o.wait()
        self.assertIn(rc, (1, -signal.SIGSEGV), o.stderr())


if __name__ == "__main__":
    unittest.main(verbosity=2)
