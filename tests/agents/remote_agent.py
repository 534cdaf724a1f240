#!/usr/bin/env python3
"""remote_agent.py -- a Dream.OS agent that reaches the orchestrator through
the Bridge (a WebSocket), built on the Python SDK (share/sdk/python), for
tests/integration/bridge.sh.

Configuration, all from the environment:

DREAMOS_BRIDGE_URL     the Bridge (ws://127.0.0.1:PORT or wss://...)
DREAMOS_API_KEY        an API key of role agent; the agent's name is the key's
DREAMOS_BRIDGE_CAFILE  CA file for wss:// (optional)
REMOTE_LOG             a file that gets one JSON object per event, as it
                       happens: {"ev": "welcome", "agent", "connections"},
                       {"ev": "message", "id", "body", "attempt"},
                       {"ev": "task", "id", "payload", "attempt"},
                       {"ev": "stop"}
REMOTE_CAPS            capabilities, comma-separated (default "remote")

Behaviour:
  * a message is acknowledged when its handler returns, except a message
    whose body is {"drop": true} seen for the first time: the agent then drops
    its connection without acknowledging it (SDK reconnect(): what a network
    failure does), reconnects with backoff, gets it again and acks it then;
  * a message whose body has "reply" is answered to its sender with
    {"reply": BODY};
  * a task is done with the result {"echo": PAYLOAD, "by": NAME};
  * `command stop` (or SIGTERM) ends it with status 0.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "share", "sdk", "python"))

from dreamos_agent import Agent  # noqa: E402


class Remote(Agent):
    def __init__(self, **kw):
        caps = os.environ.get("REMOTE_CAPS", "remote").split(",")
        super().__init__(capabilities=[c for c in caps if c], heartbeat_interval=1.0,
                         reconnect_delay=0.2, reconnect_max_delay=2.0, **kw)
        self.seen = set()
        path = os.environ.get("REMOTE_LOG")
        self.out = open(path, "a", buffering=1) if path else None

    def event(self, **fields):
        if self.out is not None:
            self.out.write(json.dumps(fields) + "\n")

    def on_welcome(self, info):
        self.event(ev="welcome", agent=info.get("agent"), connections=self.connections)

    def on_message(self, msg):
        body = msg.get("body")
        self.event(ev="message", id=msg.get("id"), body=body, attempt=msg.get("attempt"))
        if isinstance(body, dict) and body.get("drop") and msg.get("id") not in self.seen:
            self.seen.add(msg.get("id"))
            self.reconnect()
            return Agent.LATER          # not acknowledged
        if isinstance(body, dict) and "reply" in body:
            self.reply(msg, {"reply": body})
        return None

    def on_task(self, task):
        self.event(ev="task", id=task.get("id"), payload=task.get("payload"),
                   attempt=task.get("attempt"))
        return {"echo": task.get("payload"), "by": self.agent}

    def on_stop(self):
        self.event(ev="stop")


if __name__ == "__main__":
    Remote().run()
