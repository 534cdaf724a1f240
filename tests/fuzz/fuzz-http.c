/* fuzz-http.c — a libFuzzer target for the Bridge's request parser and
 * WebSocket frame reader, run without sockets through a test connection
 * (http_conn_test_new / http_conn_feed).
 *
 * Input: the first byte chooses the mode and how the rest is cut up.
 *   bit 0   0: the rest is raw HTTP;  1: a valid WebSocket upgrade is fed
 *           first and the rest is frames
 *   bits 1-3  the rest is fed in pieces of 1, 2, 3, 7, 16, 64, 500 or all
 *   bit 4   requests to /h... are held and answered after the next piece
 *           (pipelining with late answers)
 * Small limits, so that the fuzzer reaches 413, 431 and 1009. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-check.h"
#include "http.h"

struct state {
	bool hold;
	struct http_request *held;
	struct ws_conn *ws;
};

/* Text messages are echoed; "close" starts the close handshake. */
static void
on_message(void *arg, struct ws_conn *ws, const char *data, size_t len)
{
	if (len == 5 && memcmp(data, "close", 5) == 0)
		ws_close(ws, 1000, "bye");
	else
		ws_send_text(ws, data, len);
	(void)ws_queued(ws);
}

static void
on_close(void *arg, struct ws_conn *ws, int code, const char *reason)
{
	struct state *st = arg;
	st->ws = NULL;
	(void)code;
	(void)reason;
}

/* Upgrades when asked, holds /h..., answers the rest with what it saw. */
static void
handler(void *arg, struct http_request *req)
{
	struct state *st = arg;
	if (req->upgrade_websocket) {
		st->ws = http_upgrade_websocket(req, on_message, on_close, st);
		return;
	}
	if (st->hold && st->held == NULL && req->path[0] == '/' && req->path[1] == 'h') {
		st->held = req;
		return;
	}
	char *v = http_query_param(req, "a");
	const char *h = http_header(req, "host");
	char body[256];
	int n = snprintf(body, sizeof body, "%s %s %s %zu %zu", req->method, v ? v : "-",
	                 h ? h : "-", req->nheaders, req->body_len);
	free(v);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof body)
		n = sizeof body - 1; /* snprintf returns the untruncated length */
	FUZZ_CHECK(!(req->body_len > 0 &&
	             req->body[req->body_len] != '\0')); /* bodies are NUL-terminated */
	http_respond(req, req->body_len % 2 ? 201 : 200, "text/plain", body, (size_t)n,
	             "X-Fuzz: 1\r\n");
}

/* Answers a held request. */
static void
answer(struct state *st)
{
	struct http_request *req = st->held;
	st->held = NULL;
	if (req != NULL)
		http_respond_error(req, 503, "held", "answered late", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t pieces[8] = {1, 2, 3, 7, 16, 64, 500, SIZE_MAX};
	if (size == 0)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;
	struct http_limits l;
	http_limits_default(&l);
	l.max_header_bytes = 2048;
	l.max_headers = 16;
	l.max_body = 4096;
	l.max_ws_message = 1024;
	struct state st = {.hold = (mode & 0x10) != 0};
	struct http_conn *c = http_conn_test_new(&l, handler, &st);
	if (mode & 1) {
		static const char up[] = "GET /ws HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\n"
		                         "Connection: Upgrade\r\n"
		                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		                         "Sec-WebSocket-Version: 13\r\n\r\n";
		http_conn_feed(c, up, sizeof up - 1);
	}
	size_t step = pieces[(mode >> 1) & 7];
	for (size_t off = 0; off < size;) {
		size_t n = size - off < step ? size - off : step;
		http_conn_feed(c, (const char *)data + off, n);
		off += n;
		answer(&st);
	}
	size_t outlen;
	const char *out = http_conn_test_output(c, &outlen);
	FUZZ_CHECK(
	    !(outlen > 0 && out[0] != 'H')); /* everything written starts with a status line */
	(void)http_conn_test_closed(c);
	http_conn_test_free(c);
	answer(&st); /* a request held when the connection went */
	return 0;
}
