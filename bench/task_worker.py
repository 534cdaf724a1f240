#!/usr/bin/env python3
"""task_worker.py -- a Dream.OS agent that records when it finishes tasks.

Used by bench/tasks.py for the latency phase: it answers each task.assign
with task.done at once, like bench/tiny-agent.c, and notes the wall-clock
time (ms, float) at which it wrote each task.done, so that submit-to-done
latency is measured with the same clock and the same kind of client (a
Python process) as for beanstalkd's workers.

Usage: task_worker.py CAPABILITY...  Environment: DREAMOS_AGENT_NAME,
WORKER_OUT (required: where [[task id, done ms], ...] is written when the
agent ends: stop command, EOF or SIGTERM).
"""
import json
import os
import signal
import sys
import time


def main():
    name = os.environ.get("DREAMOS_AGENT_NAME", "worker")
    out_path = os.environ["WORKER_OUT"]
    done = []

    def finish(*_):
        with open(out_path + ".tmp", "w") as f:
            json.dump(done, f)
        os.rename(out_path + ".tmp", out_path)
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    w = sys.stdout.buffer
    w.write(json.dumps({"type": "hello", "proto": 1, "name": name,
                        "capabilities": sys.argv[1:], "max_tasks": 1,
                        "version": "bench-1"}).encode() + b"\n")
    w.flush()
    try:
        serve(w, done)
    except BrokenPipeError:
        pass
    finish()


def serve(w, done):
    """Answers the orchestrator until stop or EOF."""
    for line in sys.stdin.buffer:
        try:
            m = json.loads(line)
        except ValueError:
            continue
        t = m.get("type")
        if t == "task.assign":
            tid = m["task"]["id"]
            done.append([tid, time.time() * 1000.0])
            w.write(b'{"type":"task.done","task":%d,"result":null}\n' % tid)
            w.flush()
        elif t == "command" and m.get("name") == "ping":
            w.write(b'{"type":"heartbeat"}\n')
            w.flush()
        elif t == "command" and m.get("name") == "stop":
            break


if __name__ == "__main__":
    main()
