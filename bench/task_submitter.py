#!/usr/bin/env python3
"""task_submitter.py -- a Dream.OS agent that submits benchmark tasks.

Spawned by dreamos as an agent (bench/tasks.py puts it in the configuration
with max_tasks 0 and autostart false, and starts it with `agent restart`).
It speaks CellPhone v1 on stdin/stdout with the standard library only:
hello, then `task.submit` lines for tasks that need capability SUBMIT_CAP
(which only the benchmark's workers have), and reads the `sent` replies (the
orchestrator answers `sent` once the task is durable).

Environment:
  SUBMIT_COUNT   tasks to submit (default 1000)
  SUBMIT_CAP     the capability the tasks need (default "bench")
  SUBMIT_MODE    "burst": as fast as possible, pipelined, at most
                 SUBMIT_WINDOW submits not yet answered by `sent`;
                 "paced": one every 1/SUBMIT_RATE seconds
  SUBMIT_WINDOW  default 1000
  SUBMIT_RATE    tasks per second in paced mode (default 500)
  SUBMIT_OUT     where to write the measurements (JSON), required:
                 {"count", "mode", "submits": [[task id, wall ms when its
                 line was written], ...], "first_ms", "last_sent_ms", "errors"}
The agent then stays connected, idle, until EOF or a `stop` command.
"""
import json
import os
import sys
import threading
import time


def main():
    count = int(os.environ.get("SUBMIT_COUNT", "1000"))
    mode = os.environ.get("SUBMIT_MODE", "burst")
    window = max(1, int(os.environ.get("SUBMIT_WINDOW", "1000")))
    rate = float(os.environ.get("SUBMIT_RATE", "500"))
    out_path = os.environ["SUBMIT_OUT"]
    cap = os.environ.get("SUBMIT_CAP", "bench")
    name = os.environ.get("DREAMOS_AGENT_NAME", "submitter")
    fin = sys.stdin.buffer
    fout = sys.stdout.buffer

    def send(data):
        fout.write(data)
        fout.flush()

    send(json.dumps({"type": "hello", "proto": 1, "name": name, "capabilities": [],
                     "version": "bench-1"}).encode() + b"\n")

    sent_at = [0.0] * count        # wall ms when task i's line was written
    ids = [0] * count              # its task id, from `sent`
    answered = threading.Semaphore(window)
    state = {"acks": 0, "last_sent_ms": 0.0, "errors": [], "welcome": False}
    all_acked = threading.Event()
    welcomed = threading.Event()
    stop = threading.Event()

    def reader():
        for line in fin:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            t = m.get("type")
            if t == "welcome":
                welcomed.set()
            elif t == "sent":
                ids[int(m["ref"])] = m["id"]
                state["acks"] += 1
                state["last_sent_ms"] = time.time() * 1000.0
                answered.release()
                if state["acks"] == count:
                    all_acked.set()
            elif t == "error":
                state["errors"].append(m)
                if m.get("ref") is not None:
                    state["acks"] += 1
                    answered.release()
                    if state["acks"] == count:
                        all_acked.set()
            elif t == "command" and m.get("name") == "ping":
                send(b'{"type":"heartbeat"}\n')
            elif t == "command" and m.get("name") == "stop":
                break
        stop.set()
        welcomed.set()
        all_acked.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    welcomed.wait()
    if stop.is_set():
        return 1

    line_a = b'{"type":"task.submit","title":"bench","capability":"%s","ref":"' % cap.encode()
    line_b = b'"}\n'
    if mode == "burst":
        # Batches of lines in one write; each batch waits for window room.
        i = 0
        batch = 64
        while i < count and not stop.is_set():
            n = min(batch, count - i)
            for _ in range(n):
                answered.acquire()
            chunk = b"".join(line_a + str(k).encode() + line_b for k in range(i, i + n))
            now = time.time() * 1000.0
            for k in range(i, i + n):
                sent_at[k] = now
            send(chunk)
            i += n
    else:
        period = 1.0 / rate
        start = time.monotonic()
        for i in range(count):
            if stop.is_set():
                break
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent_at[i] = time.time() * 1000.0
            send(line_a + str(i).encode() + line_b)
    all_acked.wait()
    with open(out_path + ".tmp", "w") as f:
        json.dump({"count": count, "mode": mode,
                   "submits": [[ids[k], sent_at[k]] for k in range(count)],
                   "first_ms": min(sent_at) if count else 0,
                   "last_sent_ms": state["last_sent_ms"],
                   "errors": state["errors"][:20]}, f)
    os.rename(out_path + ".tmp", out_path)
    stop.wait()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
