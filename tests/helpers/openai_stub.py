#!/usr/bin/env python3
"""openai_stub.py - a local stand-in for the OpenAI chat completions API,
for tests/integration/chatgpt.sh.  Only the Python 3 standard library.

Listens on 127.0.0.1 on an ephemeral port (or --port N), prints the port on
its first stdout line, and exits when its stdin is closed or on SIGTERM.

  POST /v1/chat/completions   the real wire format: a chat.completion
                              object, or with "stream": true server-sent
                              events (chat.completion.chunk, a usage chunk
                              when stream_options.include_usage, then
                              "data: [DONE]"), chunked.
  GET  /stub/requests         the requests seen: [{auth, body}, ...]
  GET  /stub/count?tag=T      {"hits": N} requests whose last user message
                              holds "#T"
  POST /stub/reset            forgets the requests and counters

The key expected is --key (Authorization: Bearer KEY); another key gets a
401 with the real error body (the key echoed in the message, as OpenAI
does, so the client must never show the body).

Behaviours are chosen by words in the last user message:

  #fail401      401 invalid_api_key            (whatever the key)
  #fail429      the first request of the tag gets 429 with Retry-After: 1
                (the real rate_limit_exceeded body), then normal answers
  #fail500      the first two requests of the tag get 500, then normal
  #always500    500 every time
  #slow         waits 3 s before answering
  #cut          streams a part of the answer, then drops the connection
                (no [DONE], no last chunk); without stream: a short body
  #expensive    usage of 1,000,000 prompt and 1,000,000 completion tokens
  #chat         answers "pong" with a counter (for agents talking together)
  #recall       answers "system: " and the system messages it got, joined by " | "
  #codex-demo   (counted as tag "codex") for tests/integration/codex.sh
                (calc.py holds "return a - b"):
                a prompt asking for a JSON verdict ('"valid"' in it) gets
                {"valid": true, "feedback", "suggestions"}; otherwise a
                unified diff (in a ```diff fence) that is WRONG ("a * b")
                unless the prompt shows a previous check output with FAILED
                in it (after "check output:"), then RIGHT ("a + b")

Otherwise the answer is "echo: PROMPT" (the last user message) followed by
" [history N]" (N = earlier messages sent), streamed three pieces at a time.
Usage: prompt_tokens = total words of all messages, completion_tokens =
words of the answer.
"""

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
REQUESTS = []
HITS = {}
KEY = None


def hit(tag):
    with LOCK:
        HITS[tag] = HITS.get(tag, 0) + 1
        return HITS[tag]


CODEX_DIFF = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a %s b
"""


def codex_answer(prompt):
    if '"valid"' in prompt:
        return json.dumps({"valid": True, "feedback": "add() now adds; the check passes.",
                           "suggestions": ["add a test for negative numbers"]})
    fixed = "check output:" in prompt and "FAILED" in prompt.split("check output:", 1)[1]
    return "Here is the change:\n```diff\n" + CODEX_DIFF % ("+" if fixed else "*") + "```\n"


def err_body(message, etype, code):
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-stub/1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj, extra=None):
        data = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, obj):
        self.chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def do_GET(self):
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        if u.path == "/stub/requests":
            with LOCK:
                return self.send_json(200, list(REQUESTS))
        if u.path == "/stub/count":
            with LOCK:
                return self.send_json(200, {"hits": HITS.get(q.get("tag", ""), 0)})
        self.send_json(404, err_body("Unknown request URL: GET %s" % u.path,
                                     "invalid_request_error", "unknown_url"))

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        u = urlsplit(self.path)
        if u.path == "/stub/reset":
            with LOCK:
                REQUESTS.clear()
                HITS.clear()
            return self.send_json(200, {"ok": True})
        if u.path != "/v1/chat/completions":
            return self.send_json(404, err_body("Unknown request URL: POST %s" % u.path,
                                                "invalid_request_error", "unknown_url"))
        auth = self.headers.get("Authorization") or ""
        try:
            req = json.loads(raw.decode("utf-8"))
        except ValueError:
            return self.send_json(400, err_body(
                "We could not parse the JSON body of your request.",
                "invalid_request_error", None))
        with LOCK:
            REQUESTS.append({"auth": auth, "body": req})
        msgs = req.get("messages") or []
        if not isinstance(msgs, list) or not msgs or "model" not in req:
            return self.send_json(400, err_body(
                "you must provide a model parameter" if "model" not in req
                else "'messages' must contain at least one message",
                "invalid_request_error", None))
        prompt = ""
        for m in msgs:
            if m.get("role") == "user":
                prompt = str(m.get("content", ""))
        tags = set(re.findall(r"#(\w+)", prompt))
        for t in tags:
            hit(t)
        given = auth[7:] if auth.startswith("Bearer ") else ""
        if "fail401" in tags or given != KEY:
            return self.send_json(401, err_body(
                "Incorrect API key provided: %s. You can find your API key at "
                "https://platform.openai.com/account/api-keys." % given,
                "invalid_request_error", "invalid_api_key"))
        if "fail429" in tags and HITS["fail429"] == 1:
            return self.send_json(429, err_body(
                "Rate limit reached for requests. Please try again in 1s.",
                "requests", "rate_limit_exceeded"), {"Retry-After": "1"})
        if ("fail500" in tags and HITS["fail500"] <= 2) or "always500" in tags:
            return self.send_json(500, err_body(
                "The server had an error while processing your request. Sorry about that!",
                "server_error", None))
        if "slow" in tags:
            time.sleep(3)
        model = req["model"]
        if "chat" in tags:
            answer = "pong %d #chat" % HITS["chat"]
        elif "#codex-demo" in prompt:
            answer = codex_answer(prompt)
        elif "recall" in tags:
            answer = "system: " + " | ".join(
                str(m.get("content", "")) for m in msgs if m.get("role") == "system")
        else:
            answer = "echo: %s [history %d]" % (prompt, len(
                [m for m in msgs if m.get("role") != "system"]) - 1)
        words = sum(len(str(m.get("content", "")).split()) for m in msgs)
        usage = {"prompt_tokens": words, "completion_tokens": len(answer.split()),
                 "total_tokens": words + len(answer.split())}
        if "expensive" in tags:
            usage = {"prompt_tokens": 1000000, "completion_tokens": 1000000,
                     "total_tokens": 2000000}
        cid = "chatcmpl-stub%d" % len(REQUESTS)
        created = int(time.time())
        if not req.get("stream"):
            if "cut" in tags:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "500")
                self.end_headers()
                self.wfile.write(b'{"id": "x", "choices": [')
                self.wfile.flush()
                self.close_connection = True
                return
            return self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage, "system_fingerprint": "fp_stub"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_stub"}
        with_usage = bool((req.get("stream_options") or {}).get("include_usage"))

        def ev(choices, **kw):
            o = dict(base, choices=choices, **kw)
            if with_usage and "usage" not in kw:
                o["usage"] = None
            self.event(o)

        ev([{"index": 0, "delta": {"role": "assistant", "content": ""},
             "logprobs": None, "finish_reason": None}])
        pieces = re.findall(r"\S+\s*", answer)
        if "cut" in tags:
            pieces = pieces[: max(1, len(pieces) // 2)]
        for i in range(0, len(pieces), 3):
            ev([{"index": 0, "delta": {"content": "".join(pieces[i:i + 3])},
                 "logprobs": None, "finish_reason": None}])
            time.sleep(0.05)
        if "cut" in tags:
            self.close_connection = True
            self.wfile.flush()
            return  # no [DONE], no last chunk
        ev([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if with_usage:
            ev([], usage=usage)
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True


def main():
    global KEY
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--key", default=os.environ.get("STUB_KEY", "sk-test"))
    a = ap.parse_args()
    KEY = a.key
    srv = Server(("127.0.0.1", a.port), Handler)
    print(srv.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def watch():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
