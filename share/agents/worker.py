#!/usr/bin/env python3
"""worker — a Dream.OS demo agent that performs tasks.

Usage: worker.py [CAPABILITY...]   (default: compute text)

Each task reports progress in a few steps over 1-3 seconds (timers in the
agent's loop, no sleeping), then finishes with a small result:

* payload {"text": S}      -> {"upper": S.upper(), "words": N, "chars": N}
* payload {"n": N}         -> {"n": N, "sum": 1+...+N, "primes": count of
                              primes <= N, "largest_prime": P}  (N <= 5e6)
* payload {"fail": true}   -> fails (retry) on attempt 1, succeeds after,
                              so the demo shows a retry
* payload {"duration": S}  -> takes S seconds instead (0-600)
* anything else            -> {"echo": payload}

Environment: WORKER_MAX_TASKS (tasks at once, default 2).
"""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "sdk", "python"))

from dreamos_agent import Agent, TaskError  # noqa: E402

MAX_N = 5000000


def primes_upto(n):
    """Returns (count, largest) of the primes <= n (sieve of Eratosthenes)."""
    if n < 2:
        return 0, None
    sieve = bytearray([1]) * (n + 1)
    sieve[0] = sieve[1] = 0
    i = 2
    while i * i <= n:
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, n + 1, i)))
        i += 1
    largest = sieve.rindex(1)
    return sieve.count(1), largest


def compute(task):
    """Returns the result of a task's payload; raises TaskError on bad input."""
    payload = task.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        text = payload["text"]
        return {"upper": text.upper(), "words": len(text.split()), "chars": len(text)}
    if isinstance(payload, dict) and "n" in payload:
        n = payload["n"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise TaskError("payload n must be a non-negative integer", retry=False)
        if n > MAX_N:
            raise TaskError("payload n must be at most %d" % MAX_N, retry=False)
        count, largest = primes_upto(n)
        return {"n": n, "sum": n * (n + 1) // 2, "primes": count, "largest_prime": largest}
    return {"echo": payload, "title": task.get("title")}


class Worker(Agent):
    """Performs compute/text tasks step by step."""

    def __init__(self, capabilities):
        try:
            max_tasks = max(1, int(os.environ.get("WORKER_MAX_TASKS", "2")))
        except ValueError:
            max_tasks = 2
        super().__init__(capabilities=capabilities, max_tasks=max_tasks, version="1.0")
        self.rng = random.Random()
        self.finished = 0

    def on_welcome(self, info):
        self.log("info", "worker ready", capabilities=self.capabilities,
                 max_tasks=self.max_tasks)

    def on_task(self, task):
        tid = task["id"]
        payload = task.get("payload")
        duration = self.rng.uniform(1.0, 3.0)
        if isinstance(payload, dict) and isinstance(payload.get("duration"), (int, float)) \
                and not isinstance(payload.get("duration"), bool):
            duration = max(0.0, min(600.0, float(payload["duration"])))
        steps = self.rng.randint(3, 6)
        self.log("info", "starting task %s: %s" % (tid, task.get("title")), task=tid,
                 attempt=task.get("attempt"), steps=steps)
        self.call_later(duration / steps, self.step, task, 1, steps, duration / steps)
        return Agent.LATER

    def step(self, task, i, steps, delay):
        tid = task["id"]
        if tid not in self.tasks:
            return  # cancelled meanwhile
        payload = task.get("payload")
        if i < steps:
            self.progress(tid, int(100 * i / steps), "step %d of %d" % (i, steps))
            if isinstance(payload, dict) and payload.get("fail") and task.get("attempt", 1) <= 1 \
                    and i * 2 >= steps:
                self.log("warn", "task %s: simulated failure on attempt 1" % tid, task=tid)
                self.fail(tid, "simulated failure on the first attempt", retry=True)
                return
            self.call_later(delay, self.step, task, i + 1, steps, delay)
            return
        try:
            result = compute(task)
        except TaskError as e:
            self.fail(tid, e.error, retry=e.retry)
            return
        self.done(tid, result)
        self.finished += 1
        words = len(str(payload).split())
        self.usage(words, len(str(result).split()), 0.0, model="local")
        if self.finished % 3 == 1:
            self.devlog("Worker finished task %s (%s) on attempt %s; %d done so far."
                        % (tid, task.get("title"), task.get("attempt"), self.finished), task=tid)

    def on_task_cancel(self, task_id):
        self.log("info", "task %s cancelled" % task_id, task=task_id)

    def on_message(self, msg):
        self.log("info", "message %s from %s" % (msg.get("id"), msg.get("from")))


if __name__ == "__main__":
    Worker(sys.argv[1:] or ["compute", "text"]).run()
