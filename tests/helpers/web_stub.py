#!/usr/bin/env python3
"""web_stub.py — a small web site on 127.0.0.1 for tests/integration/stealthbrowser.sh.

Prints its port on the first line of stdout, then serves until its stdin
closes (the test holds a fifo open).  Python standard library only.

Pages:
  /hello          known text and title
  /detect         reports what a page can see (navigator.webdriver, the user
                  agent, client hints, languages, platform, window size) in
                  its text, and POSTs it to /report
  /form           a form (name, email, a hidden count of trusted key presses)
                  that POSTs to /submit
  /slow           starts answering, then never finishes (the load never ends)
Records:
  /stub/submissions   the forms submitted (JSON list)
  /stub/reports       the /detect reports, with the request's headers
  /stub/requests      method, path, User-Agent, Accept-Language of each request
"""
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SUBMISSIONS = []
REPORTS = []
REQUESTS = []
STOP = threading.Event()

HELLO = """<!doctype html>
<html><head><title>Hello page</title></head>
<body><h1>Greetings</h1><p>The quick brown fox 4711 jumps.</p></body></html>
"""

DETECT = """<!doctype html>
<html><head><title>Detect</title></head>
<body><pre id="out">pending</pre>
<script>
(async function () {
  var r = {
    webdriver: navigator.webdriver,
    userAgent: navigator.userAgent,
    languages: navigator.languages,
    language: navigator.language,
    platform: navigator.platform,
    innerWidth: window.innerWidth,
    innerHeight: window.innerHeight,
    screenWidth: screen.width,
    screenHeight: screen.height,
    brands: navigator.userAgentData ? navigator.userAgentData.brands.map(function (b) { return b.brand; }) : null,
    uaPlatform: navigator.userAgentData ? navigator.userAgentData.platform : null
  };
  document.getElementById('out').textContent = 'REPORT ' + JSON.stringify(r);
  try {
    await fetch('/report', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(r)});
  } catch (e) {}
})();
</script></body></html>
"""

FORM = """<!doctype html>
<html><head><title>Form</title></head>
<body>
<form id="f" method="post" action="/submit">
  <p><label>Name <input id="name" name="name" autocomplete="off"></label></p>
  <p><label>Email <input id="email" name="email" autocomplete="off"></label></p>
  <input type="hidden" id="keys" name="keys" value="0">
  <input type="hidden" id="clicks" name="clicks" value="0">
  <p><button id="go" type="submit">Send</button></p>
</form>
<script>
var keys = 0, clicks = 0;
document.addEventListener('keydown', function (e) { if (e.isTrusted) keys++; document.getElementById('keys').value = keys; }, true);
document.getElementById('go').addEventListener('click', function (e) { if (e.isTrusted) clicks++; document.getElementById('clicks').value = clicks; }, true);
</script>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def note(self):
        with LOCK:
            REQUESTS.append({
                "method": self.command,
                "path": self.path,
                "user_agent": self.headers.get("User-Agent", ""),
                "accept_language": self.headers.get("Accept-Language", ""),
            })

    def send(self, code, body, ctype="text/html; charset=utf-8"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        self.note()
        path = urllib.parse.urlsplit(self.path).path
        if path == "/hello":
            self.send(200, HELLO)
        elif path == "/detect":
            self.send(200, DETECT)
        elif path == "/form":
            self.send(200, FORM)
        elif path == "/slow":
            # Headers and the start of the page, then nothing: the load
            # event never comes.
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"<!doctype html><html><head><title>Slow</title></head><body>loading")
            self.wfile.flush()
            while not STOP.wait(0.2):
                pass
            self.close_connection = True
        elif path == "/stub/submissions":
            with LOCK:
                self.send(200, json.dumps(SUBMISSIONS), "application/json")
        elif path == "/stub/reports":
            with LOCK:
                self.send(200, json.dumps(REPORTS), "application/json")
        elif path == "/stub/requests":
            with LOCK:
                self.send(200, json.dumps(REQUESTS), "application/json")
        elif path == "/favicon.ico":
            self.send(404, "", "text/plain")
        else:
            self.send(404, "not found\n", "text/plain")

    def do_POST(self):
        self.note()
        path = urllib.parse.urlsplit(self.path).path
        data = self.body()
        if path == "/submit":
            fields = {k: v[0] for k, v in urllib.parse.parse_qs(data.decode("utf-8", "replace")).items()}
            with LOCK:
                SUBMISSIONS.append(fields)
            self.send(200, "<!doctype html><title>Thanks</title><p>Thanks, %s</p>" %
                      fields.get("name", "?").replace("<", "&lt;"))
        elif path == "/report":
            try:
                r = json.loads(data.decode("utf-8"))
            except ValueError:
                r = {"bad": True}
            r["header_user_agent"] = self.headers.get("User-Agent", "")
            r["header_accept_language"] = self.headers.get("Accept-Language", "")
            with LOCK:
                REPORTS.append(r)
            self.send(204, "", "text/plain")
        else:
            self.send(404, "not found\n", "text/plain")


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        while sys.stdin.read(4096):
            pass
    except KeyboardInterrupt:
        pass
    STOP.set()
    srv.shutdown()
    time.sleep(0.1)


if __name__ == "__main__":
    main()
