#!/usr/bin/env python3
"""flaky — a Dream.OS demo agent that crashes, to show restarts with backoff.

It works normally for a random 5-20 seconds (heartbeats, replies to
messages), then crashes: usually with exit status 1, sometimes by killing
itself with SIGSEGV.  The orchestrator restarts it after its backoff delay.

Environment: DREAMOS_FLAKY_SEED seeds the randomness (same lifetime and
way of dying on every run) when set; DREAMOS_FLAKY_LIFETIME (seconds)
overrides the lifetime (tests use it).
"""

import os
import random
import resource
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "sdk", "python"))

from dreamos_agent import Agent  # noqa: E402


class Flaky(Agent):
    """Works for a while, then dies."""

    def __init__(self):
        super().__init__(capabilities=["flaky"], max_tasks=0, version="1.0")
        seed = os.environ.get("DREAMOS_FLAKY_SEED")
        self.rng = random.Random(seed) if seed else random.Random()
        self.lifetime = self.rng.uniform(5.0, 20.0)
        try:
            self.lifetime = float(os.environ["DREAMOS_FLAKY_LIFETIME"])
        except (KeyError, ValueError):
            pass
        self.segv = self.rng.random() < 0.25
        self.born = time.monotonic()

    def on_welcome(self, info):
        self.log("info", "flaky up; will crash in %.1f s" % self.lifetime,
                 lifetime_ms=int(self.lifetime * 1000), how="SIGSEGV" if self.segv else "exit 1")
        self.call_later(self.lifetime, self.crash)

    def left(self):
        return max(0.0, self.lifetime - (time.monotonic() - self.born))

    def on_message(self, msg):
        if (msg.get("to") or "").startswith("#") or msg.get("to") == "*":
            return
        if msg.get("reply_to") is not None or not msg.get("from"):
            return  # never answer a reply: two agents could loop
        self.reply(msg, {"text": "still alive, for about %.0f s more" % self.left()})

    def on_task(self, task):
        return {"ok": True, "note": "done by a flaky agent"}

    def crash(self):
        how = "SIGSEGV" if self.segv else "exit status 1"
        self.log("warn", "flaky is crashing now (%s)" % how)
        self.devlog("Flaky crashed on purpose after %.1f s (%s)." % (self.lifetime, how))
        sys.stderr.write("flaky: crashing (%s)\n" % how)
        sys.stderr.flush()
        if self.segv:
            try:    # no core file in the runtime directory, please
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            except (ValueError, OSError):
                pass
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(1)
        os._exit(1)


if __name__ == "__main__":
    Flaky().run()
