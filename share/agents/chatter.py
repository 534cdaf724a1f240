#!/usr/bin/env python3
"""chatter — a Dream.OS demo agent that keeps the Messages pane alive.

Every few seconds it either sends a message to a random other demo agent or
publishes to #greetings, with varied priorities; it acknowledges (and logs)
whatever it receives.  Now and then it also submits a small task.

Usage: chatter.py [PEER...]
Environment: CHATTER_PEERS (comma-separated, default greeter,worker,flaky),
CHATTER_INTERVAL (mean seconds between messages, default 3),
CHATTER_SUBMIT_EVERY (seconds between tasks, default 20; 0 = never).
"""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "sdk", "python"))

from dreamos_agent import Agent  # noqa: E402

PRIORITIES = ("low", "normal", "normal", "normal", "high", "high", "urgent")
LINES = ("how is it going?", "any news?", "status report, please",
         "the queue looks busy", "coffee break soon?", "ping from the chatter",
         "did you see the last task?", "all systems nominal", "who's on watch?")
WORDS = "the quick brown fox jumps over the lazy dog while agents chat".split()


def env_float(name, default):
    """Returns the environment variable as a float, else default."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Chatter(Agent):
    """Sends and publishes chit-chat."""

    def __init__(self, peers):
        super().__init__(capabilities=["chat"], max_tasks=0, version="1.0")
        self.peers = peers
        self.interval = max(0.1, env_float("CHATTER_INTERVAL", 3.0))
        self.submit_every = env_float("CHATTER_SUBMIT_EVERY", 20.0)
        self.rng = random.Random()
        self.count = 0

    def on_welcome(self, info):
        self.peers = [p for p in self.peers if p and p != self.agent]
        self.log("info", "chatter ready", peers=self.peers)
        self.schedule()
        if self.submit_every > 0:
            self.call_every(self.submit_every, self.make_work)

    def schedule(self):
        self.call_later(self.rng.uniform(0.5, 1.5) * self.interval, self.chat)

    def chat(self):
        self.schedule()
        self.count += 1
        prio = self.rng.choice(PRIORITIES)
        line = self.rng.choice(LINES)
        if not self.peers or self.rng.random() < 0.35:
            self.publish("#greetings", {"text": "hello everyone — %s" % line, "n": self.count},
                         priority=prio)
            self.log("debug", "published to #greetings", priority=prio)
        else:
            peer = self.rng.choice(self.peers)
            mode = "SYNC" if self.rng.random() < 0.1 else None
            self.send(peer, {"text": line, "n": self.count}, priority=prio, mode=mode)
            self.log("debug", "sent to %s" % peer, priority=prio)

    def make_work(self):
        if self.rng.random() < 0.5:
            text = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(3, 9)))
            self.submit("shout: " + text, payload={"text": text}, capability="text")
        else:
            n = self.rng.randint(10, 200000)
            self.submit("primes up to %d" % n, payload={"n": n}, capability="compute",
                        priority=self.rng.choice(("low", "normal", "high")))

    def on_message(self, msg):
        self.log("info", "got %s from %s" % (msg.get("id"), msg.get("from")),
                 priority=msg.get("priority"))

    def on_error(self, code, detail, ref):
        # Peers come and go (flaky!): a refused send is expected now and then.
        self.log("debug", "orchestrator said %s: %s" % (code, detail), ref=ref)


if __name__ == "__main__":
    peers = sys.argv[1:] or os.environ.get("CHATTER_PEERS", "greeter,worker,flaky").split(",")
    Chatter([p.strip() for p in peers]).run()
