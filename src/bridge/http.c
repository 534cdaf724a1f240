/* http.c — the Bridge's inbound HTTP/1.1 + WebSocket server on the libuv
 * loop.
 *
 * A connection reads bytes from libuv (through OpenSSL memory BIOs when TLS
 * is on) and feeds them to http_conn_feed, which runs http-parser over a
 * buffer of unparsed input.  The parser is paused at the end of every
 * request: the request goes to the handler, and parsing resumes only once
 * it has been answered, so pipelined requests are answered strictly in
 * order while the bytes that follow wait in the buffer (reading stops when
 * too much is waiting).  Work that must not run inside a caller's stack
 * (resuming after an asynchronous answer, closing after a write error) is
 * deferred to a zero-delay "kick" timer.  Handles are freed from their
 * uv_close callbacks only, so a connection's memory stays valid for the
 * whole of any callback that runs on it.
 *
 * After an upgrade, the input goes to our frame reader (wsframe.c), read in
 * place from what libuv (or OpenSSL) gave us: it unmasks, puts fragments
 * together, checks UTF-8, sizes and RFC 6455's rules, and reports
 * messages, pings and the peer's close one at a time.  wslay is the
 * sending side for pongs, the close we send (its own, or the answer to
 * the peer's) and messages queued under back-pressure; a text message
 * sent while wslay is idle goes straight into the cork (ws_send_text).
 * We read until the peer's close or a broken rule, and watch
 * wslay_event_want_write to know when the WebSocket is finished.
 * (wslay's reader is not used: its byte-at-a-time UTF-8 check and
 * unmasking were a quarter of the loop's instructions per message; see
 * wsframe.h.) */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#ifdef __linux__
#include <linux/sockios.h> /* SIOCOUTQ */
#endif

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <wslay/wslay.h>

#include "http.h"
#include "outq.h"
#include "util.h"
#include "wsframe.h"

#define HTTP_IN_HIGH     (256 * 1024)  /* unparsed input held before reading stops */
#define HTTP_WQ_HIGH     (1024 * 1024) /* queued output before reading/sending stops */
#define HTTP_FLUSH_MS    10000         /* longest wait for a closing connection's output */
#define HTTP_LINGER_MS   1000          /* then how long we read and discard */
#define HTTP_LINGER_MAX  (256 * 1024)  /* and how much */
#define WS_CLOSE_WAIT_MS 2000          /* a close's end without progress (ws_close_drained) */
#define WS_CLOSE_DRAIN   4096          /* progress: bytes read by the peer in that time */
#define WS_CLOSE_MAX_MS  30000         /* a close's end, however slowly it drains */
#define WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum conn_timer {
	CT_NONE,
	CT_IDLE,     /* waiting for a request */
	CT_REQUEST,  /* a request has begun and must end in time */
	CT_FLUSH,    /* closing: output still being written */
	CT_LINGER,   /* closing: reading and discarding before close */
	CT_WS_CLOSE, /* a close is on its way (ws_closing), waiting for the end */
};

enum header_state { HS_NONE, HS_FIELD, HS_VALUE };

/* A request and what only this file sees. */
struct req {
	struct http_request pub; /* first: a struct http_request * is a struct req * */
	struct buf body;
	size_t nalloc;   /* headers allocated */
	bool keep_alive; /* http_should_keep_alive */
	bool upgrade;    /* the parser stopped after it: no more HTTP on this connection */
	bool head;
};

/* A write queued in libuv, with its copy of the bytes. */
struct wreq {
	uv_write_t req; /* first */
	struct http_conn *conn;
	size_t len;
	char data[];
};

struct ws_conn {
	struct http_conn *conn;
	wslay_event_context_ptr ctx; /* the sending side */
	ws_message_fn on_message;
	ws_close_fn on_close;
	void *arg;
	struct wsframe rd; /* the receiving side */
	struct buf in;     /* received and not read yet (reading was paused) */
	bool reading;      /* the peer's frames are read: until its close or a broken rule */
	bool paused;       /* ws_set_reading(false) */
	struct outq outq;  /* the text frames queued, owed an answer or not */
	bool done;         /* on_close called */
	bool close_timer;  /* the CT_WS_CLOSE timer was started */
	size_t close_left; /* ws_close_left when it was last (re)started */
	uint64_t close_at; /* when it was first started (loop ms) */
	int our_code;      /* the close we started (ws_close, 1003, 1001), or 0 */
	char *our_reason;
	int peer_code; /* the peer's close (1005: without a code), or 0 */
	char *peer_reason;
};

struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer; /* the timeouts, see enum conn_timer */
	uv_timer_t kick;  /* deferred processing */
	uv_shutdown_t shutdown_req;
	int nhandles; /* open handles; the connection is freed at 0 */
	enum conn_timer tmode;
	char peer[64];

	bool detached;   /* a test connection: no socket, no loop */
	bool counted;    /* in connections_open */
	bool rejected;   /* over max_connections: 503 and close */
	bool reading;    /* uv_read_start in effect */
	bool processing; /* inside conn_process */
	bool kicked;     /* conn_process must run (again) */
	bool closing;    /* no more requests; maybe still writing */
	bool closed;     /* uv_close called */
	bool draining;   /* shutdown sent: discarding input */
	bool shut_done;  /* the shutdown completed */
	bool eof;        /* the peer has finished sending */
	bool failed;     /* a write failed */
	size_t drained;

	/* Bytes http_conn_feed hands to a WebSocket, read in place by
	 * ws_process (what it leaves goes to ws->in). */
	const char *feed;
	size_t feed_len;

	/* HTTP */
	http_parser parser;
	struct buf in; /* received, not yet parsed */
	size_t in_off;
	struct req *cur;    /* being parsed */
	struct req *ready;  /* parsed, about to go to the handler */
	struct req *active; /* with the handler, not yet answered */
	struct buf url, hfield, hvalue;
	enum header_state hstate;
	size_t header_bytes, nheaders;
	bool in_message, in_trailers;
	int err_status; /* a limit the parser callbacks hit */
	const char *err_code;
	char err_msg[96];

	/* output */
	size_t wq_count, wq_bytes; /* uv_write requests in flight */
	struct buf cork;           /* a WebSocket frame being assembled */
	struct buf out;            /* test connections: everything written */

	SSL *ssl;
	struct ws_conn *ws;
};

struct http_server {
	uv_loop_t *loop; /* NULL for the private server of a test connection */
	uv_tcp_t listener;
	bool stopping;
	bool listener_closed;
	char *host;
	int port;
	struct http_limits limits;
	http_handler_fn handler;
	void *arg;
	SSL_CTX *ssl_ctx;
	struct http_conn *conns;
	uint64_t seq;
	struct http_server_stats stats;
	char readbuf[65536]; /* libuv reads land here, one at a time */
};

static void conn_process(struct http_conn *c);
static void conn_kick(struct http_conn *c);
static void conn_close_now(struct http_conn *c);
static void conn_shutdown(struct http_conn *c);
static void conn_write(struct http_conn *c, const void *data, size_t len);
static void conn_update_reading(struct http_conn *c);
static void ws_process(struct ws_conn *ws);
static void ws_finish(struct ws_conn *ws, bool abrupt);
static void srv_maybe_free(struct http_server *srv);

/* ---- small helpers ------------------------------------------------------ */

/* Returns seconds as timer milliseconds, at least 1. */
static uint64_t
secs_to_ms(double s)
{
	if (!(s > 0))
		return 1;
	if (s > 1e9)
		s = 1e9;
	uint64_t ms = (uint64_t)(s * 1000.0 + 0.5);
	return ms ? ms : 1;
}

/* Returns the reason phrase for status (static). */
static const char *
http_reason(int status)
{
	const char *s = http_status_str((enum http_status)status);
	if (s == NULL || s[0] == '<')
		return "Unknown";
	return s;
}

/* Writes an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out, in
 * English whatever the locale. */
static void
http_date(char *out, size_t len)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
	         months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Appends s to b as a JSON string body (without the quotes). */
static void
json_escape(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			char e[2] = {'\\', (char)ch};
			buf_add(b, e, 2);
		} else if (ch < 0x20) {
			buf_addf(b, "\\u%04x", ch);
		} else {
			buf_add(b, s, 1);
		}
	}
}

/* Returns the malloc'd JSON error body {"error":{"code":..,"message":..}}. */
static char *
json_error(const char *code, const char *message)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "{\"error\":{\"code\":\"");
	json_escape(&b, code ? code : "error");
	buf_adds(&b, "\",\"message\":\"");
	json_escape(&b, message ? message : "");
	buf_adds(&b, "\"}}");
	return b.data;
}

/* Empties b, keeping its memory. */
static void
buf_clear(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

/* Counts a response status in the server's stats. */
static void
stat_status(struct http_server *srv, int status)
{
	int i = status / 100;
	if (i >= 1 && i <= 5)
		srv->stats.by_status[i]++;
}

/* Returns the value of a hex digit, or -1. */
static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Returns s[0..n) URL-decoded ("+" is a space), malloc'd; the caller frees. */
static char *
url_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			out[j++] = ' ';
		} else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
		           hexval(s[i + 2]) >= 0) {
			out[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			out[j++] = s[i];
		}
	}
	out[j] = '\0';
	return out;
}

/* True if the comma-separated list value contains token (case-insensitive). */
static bool
has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);
	const char *p = value;
	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *start = p;
		while (*p != '\0' && *p != ',')
			p++;
		const char *end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
			return true;
	}
	return false;
}

/* ---- requests ----------------------------------------------------------- */

/* Returns a new empty request on c; free with req_free. */
static struct req *
req_new(struct http_conn *c)
{
	struct req *r = xcalloc(1, sizeof *r);
	r->pub.conn = c;
	r->pub.method = "GET";
	buf_init(&r->body);
	snprintf(r->pub.peer, sizeof r->pub.peer, "%s", c->peer);
	return r;
}

/* Frees r and everything it owns (NULL is fine). */
static void
req_free(struct req *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->pub.nheaders; i++) {
		free(r->pub.headers[i].name);
		free(r->pub.headers[i].value);
	}
	free(r->pub.headers);
	free(r->pub.path);
	free(r->pub.query);
	free(r->pub.always_headers);
	buf_free(&r->body);
	free(r);
}

const char *
http_header(const struct http_request *req, const char *name)
{
	for (size_t i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	}
	return NULL;
}

/* True if any header called name has token in its comma-separated value. */
static bool
header_has_token(const struct http_request *req, const char *name, const char *token)
{
	for (size_t i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, name) == 0 &&
		    has_token(req->headers[i].value, token))
			return true;
	}
	return false;
}

char *
http_query_param(const struct http_request *req, const char *name)
{
	if (req->query == NULL)
		return NULL;
	const char *s = req->query;
	for (;;) {
		const char *amp = strchr(s, '&');
		size_t n = amp ? (size_t)(amp - s) : strlen(s);
		const char *eq = memchr(s, '=', n);
		size_t kn = eq ? (size_t)(eq - s) : n;
		char *k = url_decode(s, kn);
		bool match = strcmp(k, name) == 0;
		free(k);
		if (match)
			return eq ? url_decode(eq + 1, n - kn - 1) : xstrdup("");
		if (amp == NULL)
			return NULL;
		s = amp + 1;
	}
}

/* Moves the header being parsed into the current request (trailers are
 * dropped) and resets the field and value buffers. */
static void
header_commit(struct http_conn *c)
{
	struct req *r = c->cur;
	if (r != NULL && !c->in_trailers) {
		if (r->pub.nheaders == r->nalloc) {
			r->nalloc = r->nalloc ? r->nalloc * 2 : 16;
			r->pub.headers =
			    xreallocarray(r->pub.headers, r->nalloc, sizeof *r->pub.headers);
		}
		struct http_header *h = &r->pub.headers[r->pub.nheaders++];
		h->name = xstrndup(c->hfield.data ? c->hfield.data : "", c->hfield.len);
		for (char *p = h->name; *p != '\0'; p++) {
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		}
		size_t vl = c->hvalue.len;
		while (vl > 0 && (c->hvalue.data[vl - 1] == ' ' || c->hvalue.data[vl - 1] == '\t'))
			vl--;
		h->value = xstrndup(c->hvalue.data ? c->hvalue.data : "", vl);
	}
	buf_clear(&c->hfield);
	buf_clear(&c->hvalue);
	c->hstate = HS_NONE;
}

/* Records a limit hit in a parser callback; returns -1 to stop the parser. */
static int
parse_fail(struct http_conn *c, int status, const char *code, const char *msg)
{
	c->err_status = status;
	c->err_code = code;
	snprintf(c->err_msg, sizeof c->err_msg, "%s", msg);
	return -1;
}

/* Counts n more bytes of request line and headers; false past the limit. */
static bool
header_bytes_add(struct http_conn *c, size_t n)
{
	c->header_bytes += n;
	if (c->header_bytes > c->srv->limits.max_header_bytes) {
		parse_fail(c, 431, "headers_too_large", "request headers too large");
		return false;
	}
	return true;
}

/* True if the key is base64 of 16 bytes, as RFC 6455 asks. */
static bool
ws_key_valid(const char *key)
{
	if (key == NULL || strlen(key) != 24 || strcmp(key + 22, "==") != 0)
		return false;
	for (int i = 0; i < 22; i++) {
		char ch = key[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
			return false;
	}
	return true;
}

/* True if r is a valid WebSocket upgrade request. */
static bool
ws_is_upgrade(const struct req *r, const http_parser *p)
{
	const char *v = http_header(&r->pub, "sec-websocket-version");
	return p->method == HTTP_GET && header_has_token(&r->pub, "upgrade", "websocket") &&
	       header_has_token(&r->pub, "connection", "upgrade") && v != NULL &&
	       strcmp(v, "13") == 0 && ws_key_valid(http_header(&r->pub, "sec-websocket-key"));
}

/* ---- parser callbacks ---------------------------------------------------- */

static void conn_timer(struct http_conn *c, enum conn_timer mode, uint64_t ms);
static void conn_timer_stop(struct http_conn *c);

/* A request's first byte: a new request, and its timeout starts. */
static int
on_message_begin(http_parser *p)
{
	struct http_conn *c = p->data;
	req_free(c->cur);
	c->cur = req_new(c);
	buf_clear(&c->url);
	buf_clear(&c->hfield);
	buf_clear(&c->hvalue);
	c->hstate = HS_NONE;
	c->header_bytes = 16; /* the request line's method, spaces, version */
	c->nheaders = 0;
	c->in_message = true;
	c->in_trailers = false;
	conn_timer(c, CT_REQUEST, secs_to_ms(c->srv->limits.request_timeout));
	return 0;
}

/* A piece of the request target. */
static int
on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (!header_bytes_add(c, len))
		return -1;
	buf_add(&c->url, at, len);
	return 0;
}

/* A piece of a header name (or of a trailer's). */
static int
on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (c->hstate != HS_FIELD) {
		if (c->hstate == HS_VALUE)
			header_commit(c);
		c->hstate = HS_FIELD;
		if (++c->nheaders > c->srv->limits.max_headers)
			return parse_fail(c, 431, "too_many_headers", "too many request headers");
		if (!header_bytes_add(c, 4)) /* ": " and CRLF */
			return -1;
	}
	if (!header_bytes_add(c, len))
		return -1;
	/* http-parser (not strict) lets a space through in a field name;
	 * RFC 9112 5.1 says to reject it (it smuggles "Host :" past others). */
	if (memchr(at, ' ', len) != NULL || memchr(at, '\t', len) != NULL)
		return parse_fail(c, 400, "bad_request", "invalid header name");
	buf_add(&c->hfield, at, len);
	return 0;
}

/* A piece of a header value (possibly empty). */
static int
on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (!header_bytes_add(c, len))
		return -1;
	c->hstate = HS_VALUE;
	buf_add(&c->hvalue, at, len);
	return 0;
}

/* Headers done: the target, the body limit, WebSocket and 100-continue. */
static int
on_headers_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	struct req *r = c->cur;
	if (c->hstate != HS_NONE)
		header_commit(c);
	if (p->http_major != 1 || p->http_minor > 1)
		return parse_fail(c, 505, "http_version_not_supported",
		                  "only HTTP/1.0 and HTTP/1.1 are supported");
	r->pub.method = http_method_str((enum http_method)p->method);
	r->head = p->method == HTTP_HEAD;

	const char *url = c->url.data ? c->url.data : "";
	struct http_parser_url u;
	http_parser_url_init(&u);
	if (c->url.len == 0 ||
	    http_parser_parse_url(url, c->url.len, p->method == HTTP_CONNECT, &u) != 0)
		return parse_fail(c, 400, "bad_request", "invalid request target");
	if (u.field_set & (1 << UF_PATH))
		r->pub.path = xstrndup(url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
	else if ((u.field_set & (1 << UF_HOST)) && p->method != HTTP_CONNECT)
		r->pub.path = xstrdup("/");
	else
		r->pub.path = xstrndup(url, c->url.len);
	if (u.field_set & (1 << UF_QUERY))
		r->pub.query =
		    xstrndup(url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);

	bool chunked = (p->flags & F_CHUNKED) != 0;
	bool has_length = !chunked && p->content_length != ULLONG_MAX;
	if (has_length && p->content_length > c->srv->limits.max_body) {
		char msg[96];
		snprintf(msg, sizeof msg, "request body larger than %zu bytes",
		         c->srv->limits.max_body);
		return parse_fail(c, 413, "body_too_large", msg);
	}
	r->pub.upgrade_websocket = ws_is_upgrade(r, p);
	r->keep_alive = http_should_keep_alive(p) != 0;

	const char *expect = http_header(&r->pub, "expect");
	if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 &&
	    p->http_minor >= 1 && (chunked || (has_length && p->content_length > 0)))
		conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	c->in_trailers = true;
	return 0;
}

/* A piece of the body (already de-chunked). */
static int
on_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	struct req *r = c->cur;
	if (r->body.len + len > c->srv->limits.max_body) {
		char msg[96];
		snprintf(msg, sizeof msg, "request body larger than %zu bytes",
		         c->srv->limits.max_body);
		return parse_fail(c, 413, "body_too_large", msg);
	}
	buf_add(&r->body, at, len);
	return 0;
}

/* The request is complete: make it ready and pause the parser until it has
 * been answered. */
static int
on_message_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	struct req *r = c->cur;
	if (c->hstate != HS_NONE)
		header_commit(c); /* a trailer: dropped */
	r->upgrade = p->upgrade != 0;
	r->keep_alive = r->keep_alive && http_should_keep_alive(p);
	r->pub.body = (char *)buf_cstr(&r->body);
	r->pub.body_len = r->body.len;
	c->ready = r;
	c->cur = NULL;
	c->in_message = false;
	c->in_trailers = false;
	conn_timer_stop(c);
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- output ------------------------------------------------------------- */

/* Marks c as failed; the kick closes it outside the caller's stack. */
static void
conn_fail(struct http_conn *c)
{
	if (c->failed)
		return;
	c->failed = true;
	conn_kick(c);
}

/* Called by libuv when a queued write is done: frees it, and lets a blocked
 * WebSocket send or reading go on. */
static void
write_cb(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct http_conn *c = w->conn;
	c->wq_count--;
	c->wq_bytes -= w->len;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			conn_fail(c);
		return;
	}
	if (c->closing)
		return;
	if (c->ws != NULL && c->wq_bytes < HTTP_WQ_HIGH / 2 && wslay_event_want_write(c->ws->ctx))
		conn_kick(c);
	conn_update_reading(c);
}

/* Writes bytes to the socket: now if it can (uv_try_write), the rest
 * queued in order (uv_write, with a copy). */
static void
raw_write(struct http_conn *c, const char *data, size_t len)
{
	if (c->detached) {
		buf_add(&c->out, data, len);
		return;
	}
	if (c->closed || c->failed || len == 0)
		return;
	if (c->wq_count == 0) {
		while (len > 0) {
			size_t n = len > (1u << 30) ? (1u << 30) : len;
			uv_buf_t b = uv_buf_init((char *)data, (unsigned int)n);
			int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
			if (r == UV_EAGAIN || r == 0)
				break;
			if (r < 0) {
				conn_fail(c);
				return;
			}
			data += r;
			len -= (size_t)r;
		}
		if (len == 0)
			return;
	}
	struct wreq *w = xmalloc(sizeof *w + len);
	w->conn = c;
	w->len = len;
	memcpy(w->data, data, len);
	size_t off = 0;
	uv_buf_t bufs[8];
	unsigned int nb = 0;
	while (off < len && nb < nitems(bufs)) {
		size_t n = len - off > (1u << 30) ? (1u << 30) : len - off;
		bufs[nb++] = uv_buf_init(w->data + off, (unsigned int)n);
		off += n;
	}
	int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nb, write_cb);
	if (r < 0) {
		free(w);
		conn_fail(c);
		return;
	}
	c->wq_count++;
	c->wq_bytes += len;
}

/* Moves what OpenSSL has produced (records, alerts) to the socket. */
static void
tls_flush(struct http_conn *c)
{
	BIO *wbio = SSL_get_wbio(c->ssl);
	size_t n;
	while ((n = BIO_ctrl_pending(wbio)) > 0) {
		if (n > INT_MAX)
			n = INT_MAX;
		char *tmp = xmalloc(n);
		int got = BIO_read(wbio, tmp, (int)n);
		if (got > 0)
			raw_write(c, tmp, (size_t)got);
		free(tmp);
		if (got <= 0)
			break;
	}
}

/* Writes plain bytes to the peer, through TLS when it is on. */
static void
conn_write(struct http_conn *c, const void *data, size_t len)
{
	if (c->closed || c->failed || len == 0)
		return;
	if (c->ssl == NULL) {
		raw_write(c, data, len);
		return;
	}
	const char *p = data;
	while (len > 0) {
		size_t w = 0;
		ERR_clear_error();
		if (SSL_write_ex(c->ssl, p, len, &w) != 1) {
			tls_flush(c);
			conn_fail(c);
			return;
		}
		p += w;
		len -= w;
	}
	tls_flush(c);
}

/* Writes a whole response (head, and body unless HEAD or bodiless) and
 * counts it. */
static void
conn_send_response(struct http_conn *c, int status, const char *ctype, const char *body, size_t len,
                   const char *extra, bool keep_alive, bool head)
{
	struct buf b;
	char date[64];
	buf_init(&b);
	http_date(date, sizeof date);
	bool bodiless = status < 200 || status == 204 || status == 304;
	buf_addf(&b, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
	if (!bodiless) {
		if (ctype != NULL)
			buf_addf(&b, "Content-Type: %s\r\n", ctype);
		buf_addf(&b, "Content-Length: %zu\r\n", len);
	}
	buf_addf(&b, "Date: %s\r\n", date);
	buf_addf(&b, "Connection: %s\r\n", keep_alive ? "keep-alive" : "close");
	if (extra != NULL && extra[0] != '\0') {
		buf_adds(&b, extra);
		if (b.len < 2 || memcmp(b.data + b.len - 2, "\r\n", 2) != 0)
			buf_adds(&b, "\r\n");
	}
	buf_adds(&b, "\r\n");
	if (!bodiless && !head && len > 0)
		buf_add(&b, body, len);
	conn_write(c, b.data, b.len);
	buf_free(&b);
	stat_status(c->srv, status);
}

/* Sends a JSON error response that closes the connection. */
static void
conn_send_error(struct http_conn *c, int status, const char *code, const char *msg,
                const char *extra)
{
	char *body = json_error(code, msg);
	conn_send_response(c, status, "application/json", body, strlen(body), extra, false, false);
	free(body);
}

/* ---- timers and reading -------------------------------------------------- */

static bool ws_close_drained(struct ws_conn *ws);

/* Called when the connection's timer fires: the timeout of its mode. */
static void
conn_timer_cb(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	enum conn_timer mode = c->tmode;
	c->tmode = CT_NONE;
	switch (mode) {
	case CT_IDLE:
		c->srv->stats.timeouts++;
		conn_shutdown(c);
		break;
	case CT_REQUEST:
		c->srv->stats.timeouts++;
		conn_send_error(c, 408, "request_timeout", "request not received in time", NULL);
		conn_shutdown(c);
		break;
	case CT_FLUSH:
	case CT_LINGER:
		conn_close_now(c);
		break;
	case CT_WS_CLOSE:
		if (c->ws != NULL && ws_close_drained(c->ws)) {
			conn_timer(c, CT_WS_CLOSE, WS_CLOSE_WAIT_MS);
			break;
		}
		if (c->ws != NULL)
			ws_finish(c->ws, false);
		conn_close_now(c);
		break;
	case CT_NONE:
		break;
	}
}

/* (Re)starts the connection's timer in mode. */
static void
conn_timer(struct http_conn *c, enum conn_timer mode, uint64_t ms)
{
	c->tmode = mode;
	if (c->detached || c->closed)
		return;
	uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

/* Stops the connection's timer. */
static void
conn_timer_stop(struct http_conn *c)
{
	c->tmode = CT_NONE;
	if (c->detached || c->closed)
		return;
	uv_timer_stop(&c->timer);
}

/* Called by libuv for a buffer to read into: the server's. */
static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;
	buf->base = c->srv->readbuf;
	buf->len = sizeof c->srv->readbuf;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Output in the socket's write queue that is not owed an answer (a
 * WebSocket's frames sent by ws_send_text_owed are: outq.h).  The write
 * queue holds the oldest of what is queued; the rest waits in the cork
 * and in wslay's queue. */
static size_t
conn_out_unowed(struct http_conn *c)
{
	if (c->ws == NULL)
		return c->wq_bytes;
	return outq_unowed_in(&c->ws->outq, ws_queued(c->ws), c->wq_bytes);
}

/* Starts or stops reading from the socket as the state asks: not while
 * too much input waits or too much output is queued, nor after EOF. */
static void
conn_update_reading(struct http_conn *c)
{
	if (c->detached || c->closed)
		return;
	bool want;
	if (c->draining)
		want = !c->eof;
	else if (c->closing || c->eof)
		want = false;
	else if (conn_out_unowed(c) >= HTTP_WQ_HIGH)
		want = false;
	else if (c->ws != NULL)
		want = !c->ws->paused && c->ws->in.len < HTTP_IN_HIGH;
	else
		want = c->in.len - c->in_off < HTTP_IN_HIGH;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

/* ---- closing ------------------------------------------------------------- */

/* Frees c once its handles are closed, and the server if it was the last. */
static void
conn_free(struct http_conn *c)
{
	struct http_server *srv = c->srv;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	req_free(c->cur);
	req_free(c->ready);
	if (c->active != NULL)
		c->active->pub.conn = NULL;
	if (c->ws != NULL) {
		wslay_event_context_free(c->ws->ctx);
		wsframe_free(&c->ws->rd);
		outq_free(&c->ws->outq);
		buf_free(&c->ws->in);
		free(c->ws->our_reason);
		free(c->ws->peer_reason);
		free(c->ws);
	}
	if (c->ssl != NULL)
		SSL_free(c->ssl); /* and its BIOs */
	buf_free(&c->in);
	buf_free(&c->url);
	buf_free(&c->hfield);
	buf_free(&c->hvalue);
	buf_free(&c->cork);
	buf_free(&c->out);
	free(c);
	srv_maybe_free(srv);
}

/* Called by libuv as each of the connection's handles closes. */
static void
conn_handle_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;
	if (--c->nhandles == 0)
		conn_free(c);
}

/* What every close does first: no more requests, the one with the handler
 * detached from the connection (answering it later just frees it), a live
 * WebSocket ended (1006 if abrupt and no close frame was seen). */
static void
conn_closing_common(struct http_conn *c, bool abrupt)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->counted) {
		c->srv->stats.connections_open--;
		c->counted = false;
	}
	req_free(c->cur);
	c->cur = NULL;
	req_free(c->ready);
	c->ready = NULL;
	if (c->active != NULL) {
		c->active->pub.conn = NULL;
		c->active = NULL;
	}
	if (c->ws != NULL && !c->ws->done)
		ws_finish(c->ws, abrupt);
	conn_timer_stop(c);
}

/* Closes c at once (queued output is dropped); it is freed when libuv has
 * closed its handles. */
static void
conn_close_now(struct http_conn *c)
{
	if (c->closed)
		return;
	conn_closing_common(c, true);
	c->closed = true;
	if (c->detached)
		return;
	uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
	uv_close((uv_handle_t *)&c->kick, conn_handle_closed);
}

/* Called by libuv when our FIN is out (all output written): read and
 * discard for a moment, so the peer gets our last response rather than a
 * reset, then close. */
static void
shutdown_cb(uv_shutdown_t *req, int status)
{
	struct http_conn *c = req->data;
	if (c->closed)
		return;
	c->shut_done = true;
	if (status < 0 || c->eof) {
		conn_close_now(c);
		return;
	}
	conn_timer(c, CT_LINGER, HTTP_LINGER_MS);
}

/* Closes c gracefully: writes what is queued (and TLS close_notify), sends
 * FIN, lingers, then closes. */
static void
conn_shutdown(struct http_conn *c)
{
	if (c->closing)
		return;
	conn_closing_common(c, false);
	if (c->detached) {
		c->closed = true;
		return;
	}
	if (c->failed) {
		conn_close_now(c);
		return;
	}
	if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
		tls_flush(c);
	}
	c->draining = true;
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
		conn_close_now(c);
		return;
	}
	conn_timer(c, CT_FLUSH, HTTP_FLUSH_MS);
	conn_update_reading(c);
}

/* The peer has finished sending.  A request with the handler still gets its
 * answer (then we close); otherwise we close now. */
static void
conn_on_eof(struct http_conn *c)
{
	c->eof = true;
	if (c->ws == NULL && c->active != NULL && !c->in_message && !c->closing) {
		conn_update_reading(c);
		return;
	}
	conn_close_now(c);
}

/* ---- the HTTP side ------------------------------------------------------- */

/* Answers a request the parser rejected (400, or the limit hit: 413, 431)
 * and closes. */
static void
conn_http_error(struct http_conn *c, enum http_errno e)
{
	int status = c->err_status;
	const char *code = c->err_code;
	char msg[160];
	if (status == 0 && e == HPE_HEADER_OVERFLOW) {
		status = 431;
		code = "headers_too_large";
		snprintf(msg, sizeof msg, "request headers too large");
	} else if (status == 0) {
		status = 400;
		code = "bad_request";
		snprintf(msg, sizeof msg, "malformed request: %s", http_errno_description(e));
	} else {
		snprintf(msg, sizeof msg, "%s", c->err_msg);
	}
	c->srv->stats.bad_requests++;
	conn_send_error(c, status, code, msg, NULL);
	conn_shutdown(c);
}

/* Hands the ready request to the handler. */
static void
conn_dispatch(struct http_conn *c)
{
	struct req *r = c->ready;
	c->ready = NULL;
	r->pub.seq = ++c->srv->seq;
	c->active = r;
	c->srv->stats.requests++;
	c->srv->handler(c->srv->arg, &r->pub);
}

/* One round of work: close after a write error, run the WebSocket, or parse
 * requests until one is with the handler or the input is used up. */
static void
conn_process_once(struct http_conn *c)
{
	if (c->failed && !c->closed) {
		conn_close_now(c);
		return;
	}
	if (c->closing)
		return;
	if (c->ws != NULL) {
		if (c->in_off < c->in.len)
			buf_add(&c->ws->in, c->in.data + c->in_off, c->in.len - c->in_off);
		buf_clear(&c->in);
		c->in_off = 0;
		ws_process(c->ws);
		return;
	}
	if (c->rejected)
		return;
	while (!c->closing && !c->failed && c->ws == NULL && c->active == NULL &&
	       c->in_off < c->in.len) {
		size_t avail = c->in.len - c->in_off;
		size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.data + c->in_off,
		                               avail);
		c->in_off += n;
		enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
		if (e == HPE_PAUSED) {
			http_parser_pause(&c->parser, 0);
			if (c->ready != NULL)
				conn_dispatch(c);
			continue;
		}
		if (e != HPE_OK) {
			conn_http_error(c, e);
			break;
		}
		if (n == 0)
			break;
	}
	if (c->ws != NULL && !c->closing)
		c->kicked = true; /* upgraded: give it what followed */
	if (c->in_off > 0) {
		buf_consume(&c->in, c->in_off);
		c->in_off = 0;
	}
}

/* Runs the connection until there is nothing more to do now, then sets the
 * idle timer and reading as the state asks.  Re-entered calls (from a
 * handler, say) just ask the running one to go round again. */
static void
conn_process(struct http_conn *c)
{
	if (c->processing) {
		c->kicked = true;
		return;
	}
	c->processing = true;
	time_batch_begin(); /* (what one read brought arrived together) */
	do {
		c->kicked = false;
		conn_process_once(c);
	} while (c->kicked && !c->closed);
	time_batch_end();
	c->processing = false;
	if (c->closing)
		return;
	if (c->ws == NULL && !c->rejected) {
		if (c->active != NULL) {
			if (c->tmode == CT_IDLE || c->tmode == CT_REQUEST)
				conn_timer_stop(c);
		} else if (c->eof) {
			conn_close_now(c);
			return;
		} else if (!c->in_message && c->tmode != CT_IDLE) {
			conn_timer(c, CT_IDLE, secs_to_ms(c->srv->limits.idle_timeout));
		}
	}
	conn_update_reading(c);
}

/* Called by libuv for the zero-delay kick timer. */
static void
kick_cb(uv_timer_t *t)
{
	conn_process(t->data);
}

/* Asks for conn_process to run soon, outside the caller's stack (at once
 * for a test connection). */
static void
conn_kick(struct http_conn *c)
{
	if (c->processing) {
		c->kicked = true;
		return;
	}
	if (c->closed)
		return;
	if (c->detached)
		conn_process(c);
	else if (!uv_is_active((uv_handle_t *)&c->kick))
		uv_timer_start(&c->kick, kick_cb, 0, 0); /* (once: each message sent asks) */
}

void
http_conn_feed(struct http_conn *c, const char *data, size_t len)
{
	if (c->closing || len == 0)
		return;
	if (c->ws != NULL && !c->processing && c->feed == NULL) {
		/* Read in place: no copy unless reading stops part way. */
		c->feed = data;
		c->feed_len = len;
		conn_process(c);
		c->feed = NULL;
		c->feed_len = 0;
		return;
	}
	if (c->ws != NULL)
		buf_add(&c->ws->in, data, len);
	else
		buf_add(&c->in, data, len);
	conn_process(c);
}

void
http_respond(struct http_request *req, int status, const char *content_type, const char *body,
             size_t body_len, const char *extra_headers)
{
	struct req *r = (struct req *)req;
	struct http_conn *c = req->conn;
	if (c == NULL || c->active != r || c->closing) {
		req_free(r);
		return;
	}
	c->active = NULL;
	bool keep = r->keep_alive && !r->upgrade && !c->eof && !c->srv->stopping;
	if (body == NULL)
		body_len = 0;
	char *headers = NULL;
	if (req->always_headers != NULL)
		headers =
		    xasprintf("%s%s", req->always_headers, extra_headers ? extra_headers : "");
	conn_send_response(c, status, content_type, body, body_len,
	                   headers ? headers : extra_headers, keep, r->head);
	free(headers);
	req_free(r);
	if (!keep)
		conn_shutdown(c);
	else
		conn_kick(c);
}

void
http_respond_error(struct http_request *req, int status, const char *code, const char *message,
                   const char *extra_headers)
{
	char *body = json_error(code, message);
	http_respond(req, status, "application/json", body, strlen(body), extra_headers);
	free(body);
}

/* ---- WebSocket ----------------------------------------------------------- */

/* The reason on_close gives for a close code we sent. */
static const char *
ws_code_reason(int code)
{
	switch (code) {
	case 1000:
		return "normal closure";
	case 1001:
		return "going away";
	case 1002:
		return "protocol error";
	case 1003:
		return "unsupported data";
	case 1007:
		return "invalid payload data";
	case 1008:
		return "policy violation";
	case 1009:
		return "message too big";
	case 1011:
		return "internal error";
	default:
		return "";
	}
}

/* Ends the WebSocket for its user: on_close once, with the close we started
 * (ws_close, 1003, 1001), else the peer's, else the one we answered a
 * broken rule with (1002, 1007, 1009), else 1006. */
static void
ws_finish(struct ws_conn *ws, bool abrupt)
{
	if (ws->done)
		return;
	ws->done = true;
	ws->conn->srv->stats.ws_open--;
	int code = 1006;
	const char *reason = "connection lost";
	if (ws->our_code != 0) {
		code = ws->our_code;
		reason = ws->our_reason ? ws->our_reason : "";
	} else if (ws->peer_code != 0) {
		code = ws->peer_code;
		reason = ws->peer_reason ? ws->peer_reason : "";
	} else if (!abrupt && wslay_event_get_close_sent(ws->ctx)) {
		code = wslay_event_get_status_code_sent(ws->ctx);
		reason = ws_code_reason(code);
	}
	if (ws->on_close != NULL)
		ws->on_close(ws->arg, ws, code, reason);
}

/* Called by wslay to send frame bytes: gathered in c->cork (after the
 * frames ws_send_text put there itself), written by ws_send_all once wslay
 * has sent all it can (one write for the frames of a turn, not one per
 * frame); WOULDBLOCK while too much is queued. */
static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user_data)
{
	struct ws_conn *ws = user_data;
	struct http_conn *c = ws->conn;
	if (c->closed || c->failed) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	(void)flags;
	if (c->wq_bytes + c->cork.len >= HTTP_WQ_HIGH) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	buf_add(&c->cork, data, len);
	return (ssize_t)len;
}

/* Lets wslay send what it has queued, then writes the frames at once;
 * again while wslay has more and the socket took it all (wslay stops at
 * HTTP_WQ_HIGH in the cork, and a write that went out whole brings no
 * write_cb to resume it). */
static int
ws_send_all(struct ws_conn *ws)
{
	struct http_conn *c = ws->conn;
	int rc;
	do {
		rc = wslay_event_send(ws->ctx);
		if (c->cork.len == 0)
			break;
		conn_write(c, c->cork.data, c->cork.len);
		buf_clear(&c->cork);
	} while (rc == 0 && !c->failed && c->wq_bytes < HTTP_WQ_HIGH &&
	         wslay_event_want_write(ws->ctx));
	return rc;
}

/* wslay sends; we read (wsframe.c).  Its reader is never called. */
static const struct wslay_event_callbacks ws_callbacks = {
    .send_callback = ws_send_cb,
};

/* Acts on what the frame reader reported: a text message to the user
 * (dropped once we are closing), binary refused (1003), a ping answered,
 * the peer's close answered with its code and reason, a broken rule
 * answered with its close code; after those two nothing more is read. */
static void
ws_handle_event(struct ws_conn *ws, const struct wsframe_event *ev)
{
	switch (ev->kind) {
	case WSF_TEXT:
		if (ws->our_code == 0 && ws->on_message != NULL) {
			ws->conn->srv->stats.ws_messages_in++;
			ws->on_message(ws->arg, ws, ev->data, ev->len);
		}
		wsframe_msg_done(&ws->rd);
		break;
	case WSF_BINARY:
		ws_close(ws, 1003, "binary messages are not supported");
		break;
	case WSF_PING: {
		/* Not after our close (wslay refuses it then). */
		struct wslay_event_msg m = {WSLAY_PONG, (const uint8_t *)ev->data, ev->len};
		(void)wslay_event_queue_msg(ws->ctx, &m);
		break;
	}
	case WSF_CLOSE:
		ws->reading = false;
		ws->peer_code = ev->code;
		free(ws->peer_reason);
		ws->peer_reason = ev->len > 0 ? xstrndup(ev->data, ev->len) : NULL;
		/* The answer: the same code and reason (none for 1005); it
		 * fails harmlessly if our close went first. */
		(void)wslay_event_queue_close(ws->ctx, ev->code == 1005 ? 0 : (uint16_t)ev->code,
		                              (const uint8_t *)ev->data, ev->len);
		break;
	case WSF_ERROR:
		ws->reading = false;
		(void)wslay_event_queue_close(ws->ctx, (uint16_t)ev->code,
		                              (const uint8_t *)ev->data, ev->len);
		break;
	case WSF_END:
		ws->reading = false;
		break;
	case WSF_PONG:
	case WSF_MORE:
		break;
	}
}

/* True once a close is on its way: ours (ws_close, 1003, 1001), or our
 * answer to the peer's.  Its frame may wait behind data that the peer is
 * not reading, so the 2 s for the end count from here, not from when it
 * is sent: else a peer that stopped reading would hold the connection,
 * and the messages in flight to its agent, for good. */
static bool
ws_closing(const struct ws_conn *ws)
{
	return ws->our_code != 0 || !ws->reading || wslay_event_get_close_sent(ws->ctx);
}

/* What the peer of a closing WebSocket has still to read, to the byte:
 * libuv's write queue counts down as a write goes out in parts (one of a
 * MiB completes only once it is all out), and the kernel's send queue
 * (SIOCOUTQ, where there is one) as the peer reads what the socket holds,
 * which the kernel lets us refill only in big steps. */
static size_t
ws_close_left(const struct ws_conn *ws)
{
	const struct http_conn *c = ws->conn;
	if (c->detached)
		return ws_queued(ws);
	/* (What wslay holds once its close frame has gone is never sent.) */
	size_t left =
	    wslay_event_get_close_sent(ws->ctx) ? 0 : wslay_event_get_queued_msg_length(ws->ctx);
	left += c->cork.len + uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
#ifdef SIOCOUTQ
	uv_os_fd_t fd;
	int n;
	if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &n) == 0 &&
	    n > 0)
		left += (size_t)n;
#endif
	return left;
}

/* True if a close's wait goes on for WS_CLOSE_WAIT_MS more: the peer has
 * read at least WS_CLOSE_DRAIN bytes of what is queued ahead of our close
 * frame (and the frame) since the wait last started, and WS_CLOSE_MAX_MS
 * have not gone by.  The wait is for a peer that stopped reading, not for
 * one that reads slowly: that one gets what was queued ahead of the close,
 * the close, and the time to answer it (the rule of nginx's send_timeout,
 * with a bound).  (Messages that wslay still holds when it sends the close
 * frame, which goes first, are never sent: they are owed, and come again
 * when the agent does.) */
static bool
ws_close_drained(struct ws_conn *ws)
{
	/* Only an orderly close (ours, 1000 or 1001, or the peer's) waits on:
	 * after a broken rule, a revoked key or the peer's end of input,
	 * nothing more is owed to it. */
	bool orderly = ws->our_code == 1000 || ws->our_code == 1001 ||
	               (ws->our_code == 0 && ws->peer_code != 0);
	if (!orderly)
		return false;
	if (ws->done || uv_now(ws->conn->srv->loop) - ws->close_at >= WS_CLOSE_MAX_MS)
		return false;
	size_t left = ws_close_left(ws);
	if (left + WS_CLOSE_DRAIN > ws->close_left)
		return false;
	ws->close_left = left;
	return true;
}

/* Reads the peer's frames (what waited in ws->in, else what http_conn_feed
 * handed over, in place) until the input is used up, reading is paused or
 * over; keeps what is left in ws->in; sends what is queued, and decides
 * whether the WebSocket is over (nothing more to read or send: finish and
 * close) or closing (start the 2 s timer). */
static void
ws_process(struct ws_conn *ws)
{
	struct http_conn *c = ws->conn;
	const char *feed = c->feed;
	size_t feed_len = c->feed_len;
	c->feed = NULL;
	c->feed_len = 0;
	if (ws->done)
		return;
	if (feed_len > 0 && ws->in.len > 0) {
		buf_add(&ws->in, feed, feed_len); /* after what waited */
		feed_len = 0;
	}
	/* (ws->in may grow under a callback, never shrink: p is taken anew
	 * each time round and len is what there was at the start.) */
	bool from_in = ws->in.len > 0;
	size_t len = from_in ? ws->in.len : feed_len, off = 0;
	while (off < len && ws->reading && !ws->paused) {
		const char *p = from_in ? ws->in.data : feed;
		struct wsframe_event ev;
		size_t n = wsframe_read(&ws->rd, p + off, len - off, &ev);
		off += n;
		ws_handle_event(ws, &ev);
		if (ws->done || c->closing)
			return;
		if (n == 0 && ev.kind == WSF_MORE)
			break; /* (cannot happen: input left is always read) */
	}
	if (!ws->reading) {
		buf_free(&ws->in); /* nothing more will be read */
	} else if (from_in) {
		buf_consume(&ws->in, off);
	} else if (off < len) {
		/* Kept for later, ahead of anything fed meanwhile. */
		struct buf rest;
		buf_init(&rest);
		buf_add(&rest, feed + off, len - off);
		if (ws->in.len > 0)
			buf_add(&rest, ws->in.data, ws->in.len);
		buf_free(&ws->in);
		ws->in = rest;
	}
	if ((c->cork.len > 0 || wslay_event_want_write(ws->ctx)) && ws_send_all(ws) != 0) {
		conn_close_now(c);
		return;
	}
	if (c->failed) {
		conn_close_now(c);
		return;
	}
	if (!ws->reading && !wslay_event_want_write(ws->ctx)) {
		ws_finish(ws, false);
		conn_shutdown(c);
	} else if (ws_closing(ws) && !ws->close_timer) {
		ws->close_timer = true;
		ws->close_left = ws_close_left(ws);
		ws->close_at = c->detached ? 0 : uv_now(c->srv->loop);
		conn_timer(c, CT_WS_CLOSE, WS_CLOSE_WAIT_MS);
	}
}

/* Sends what wslay has queued: now, unless the connection is being
 * processed (then when that round ends). */
static void
ws_flush(struct ws_conn *ws)
{
	struct http_conn *c = ws->conn;
	if (ws->done || c->closing)
		return;
	if (c->processing) {
		conn_kick(c);
		return;
	}
	if (ws_send_all(ws) != 0 || c->failed) {
		conn_fail(c);
		return;
	}
	if ((!ws->reading && !wslay_event_want_write(ws->ctx)) ||
	    (ws_closing(ws) && !ws->close_timer))
		conn_kick(c);
}

/* Writes base64(SHA1(key + GUID)) into out (at least 29 bytes). */
static void
ws_accept_key(const char *key, char *out)
{
	char cat[128];
	unsigned char md[SHA_DIGEST_LENGTH];
	int n = snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
	SHA1((const unsigned char *)cat, (size_t)n, md);
	EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

struct ws_conn *
http_upgrade_websocket(struct http_request *req, ws_message_fn on_message, ws_close_fn on_close,
                       void *arg)
{
	struct req *r = (struct req *)req;
	struct http_conn *c = req->conn;
	if (c == NULL || c->active != r || c->closing) {
		req_free(r);
		return NULL;
	}
	if (!req->upgrade_websocket) {
		http_respond_error(req, 400, "bad_request", "not a WebSocket upgrade request",
		                   NULL);
		return NULL;
	}
	char accept[32], head[256];
	ws_accept_key(http_header(req, "sec-websocket-key"), accept);
	int n = snprintf(head, sizeof head,
	                 "HTTP/1.1 101 Switching Protocols\r\n"
	                 "Upgrade: websocket\r\n"
	                 "Connection: Upgrade\r\n"
	                 "Sec-WebSocket-Accept: %s\r\n\r\n",
	                 accept);
	conn_write(c, head, (size_t)n);
	stat_status(c->srv, 101);

	struct ws_conn *ws = xcalloc(1, sizeof *ws);
	ws->conn = c;
	ws->on_message = on_message;
	ws->on_close = on_close;
	ws->arg = arg;
	buf_init(&ws->in);
	wsframe_init(&ws->rd, c->srv->limits.max_ws_message);
	ws->reading = true;
	if (wslay_event_context_server_init(&ws->ctx, &ws_callbacks, ws) != 0) {
		fprintf(stderr, "dreamos: out of memory creating a WebSocket\n");
		abort();
	}
	c->ws = ws;
	c->active = NULL;
	c->srv->stats.ws_open++;
	req_free(r);
	conn_timer_stop(c);
	conn_kick(c); /* the bytes that followed the request, if any */
	return ws;
}

/* The header's length of an unmasked frame of len bytes. */
static size_t
ws_frame_header_len(size_t len)
{
	return len < 126 ? 2 : len < 65536 ? 4 : 10;
}

/* Appends a final, unmasked text frame of data to c->cork. */
static void
ws_cork_text(struct http_conn *c, const char *data, size_t len)
{
	uint8_t h[10];
	size_t hl = ws_frame_header_len(len);
	h[0] = 0x80 | WSLAY_TEXT_FRAME;
	if (hl == 2) {
		h[1] = (uint8_t)len;
	} else if (hl == 4) {
		h[1] = 126;
		h[2] = (uint8_t)(len >> 8);
		h[3] = (uint8_t)len;
	} else {
		h[1] = 127;
		for (int k = 0; k < 8; k++)
			h[2 + k] = (uint8_t)((uint64_t)len >> (56 - 8 * k));
	}
	buf_reserve(&c->cork, hl + len);
	memcpy(c->cork.data + c->cork.len, h, hl);
	memcpy(c->cork.data + c->cork.len + hl, data, len);
	c->cork.len += hl + len;
}

static int
ws_queue_text(struct ws_conn *ws, const char *data, size_t len, bool owed)
{
	if (ws == NULL || ws->done || ws->conn->closing || ws->our_code != 0)
		return -1;
	struct http_conn *c = ws->conn;
	if (wslay_event_get_write_enabled(ws->ctx) && !wslay_event_want_write(ws->ctx) &&
	    c->wq_bytes + c->cork.len < HTTP_WQ_HIGH) {
		/* wslay has nothing queued (no close either) and there is
		 * room: the frame goes to the cork as wslay_event_send would
		 * put it there, without its two allocations and two copies
		 * (two thirds of what a WebSocket message cost the loop
		 * beyond a pipe message).  Otherwise wslay queues it, behind
		 * its control frames, or refuses it after a close. */
		ws_cork_text(c, data, len);
	} else {
		struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
		if (wslay_event_queue_msg(ws->ctx, &m) != 0)
			return -1;
	}
	outq_push(&ws->outq, ws_frame_header_len(len) + len, owed);
	c->srv->stats.ws_messages_out++;
	/* Sent when the connection is next processed (a 0 ms timer): the
	 * messages of a turn go out together. */
	conn_kick(ws->conn);
	return 0;
}

int
ws_send_text(struct ws_conn *ws, const char *data, size_t len)
{
	return ws_queue_text(ws, data, len, false);
}

int
ws_send_text_owed(struct ws_conn *ws, const char *data, size_t len)
{
	return ws_queue_text(ws, data, len, true);
}

size_t
ws_queued(const struct ws_conn *ws)
{
	return wslay_event_get_queued_msg_length(ws->ctx) + ws->conn->wq_bytes + ws->conn->cork.len;
}

void
ws_close(struct ws_conn *ws, int code, const char *reason)
{
	if (ws == NULL || ws->done || ws->conn->closing || ws->our_code != 0)
		return;
	if (reason == NULL)
		reason = "";
	size_t rl = strlen(reason);
	if (rl > 123) {
		rl = 123;
		while (rl > 0 && ((unsigned char)reason[rl] & 0xc0) == 0x80)
			rl--; /* not in the middle of a UTF-8 character */
	}
	if (wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rl) != 0)
		return;
	ws->our_code = code;
	ws->our_reason = xstrndup(reason, rl);
	ws_flush(ws);
}

void
ws_set_reading(struct ws_conn *ws, bool on)
{
	if (ws == NULL || ws->done)
		return;
	ws->paused = !on;
	conn_update_reading(ws->conn);
	if (on)
		conn_kick(ws->conn);
}

const char *
ws_peer(const struct ws_conn *ws)
{
	return ws->conn->peer;
}

/* ---- sockets and TLS ------------------------------------------------------ */

/* Gives received TLS records to OpenSSL, and what it decrypts to the
 * connection; handshake and alerts go back out. */
static void
tls_feed(struct http_conn *c, const char *data, size_t len)
{
	char plain[16384];
	BIO_write(SSL_get_rbio(c->ssl), data, (int)len);
	while (!c->closing) {
		size_t n = 0;
		ERR_clear_error();
		if (SSL_read_ex(c->ssl, plain, sizeof plain, &n) == 1) {
			http_conn_feed(c, plain, n);
			continue;
		}
		int err = SSL_get_error(c->ssl, 0);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			break;
		tls_flush(c);
		if (err == SSL_ERROR_ZERO_RETURN)
			conn_on_eof(c);
		else
			conn_close_now(c); /* handshake failure or bad record */
		return;
	}
	if (!c->closed)
		tls_flush(c);
}

/* Called by libuv with bytes from the peer, EOF or an error. */
static void
read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;
	if (nread == 0 || c->closed)
		return;
	if (nread < 0) {
		c->reading = false;
		uv_read_stop(s);
		if (c->draining) {
			c->eof = true;
			if (c->shut_done || nread != UV_EOF)
				conn_close_now(c);
			return;
		}
		if (nread == UV_EOF)
			conn_on_eof(c);
		else
			conn_close_now(c);
		return;
	}
	if (c->draining || c->rejected) {
		c->drained += (size_t)nread;
		if (c->drained > HTTP_LINGER_MAX)
			conn_close_now(c);
		return;
	}
	if (c->ssl != NULL)
		tls_feed(c, buf->base, (size_t)nread);
	else
		http_conn_feed(c, buf->base, (size_t)nread);
}

/* Returns a new connection on srv, in its list (no handles yet). */
static struct http_conn *
conn_new(struct http_server *srv)
{
	struct http_conn *c = xcalloc(1, sizeof *c);
	c->srv = srv;
	buf_init(&c->in);
	buf_init(&c->url);
	buf_init(&c->hfield);
	buf_init(&c->hvalue);
	buf_init(&c->cork);
	buf_init(&c->out);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	return c;
}

/* Formats the peer's address as "ip:port" ("[ip6]:port") into out. */
static void
peer_name(uv_tcp_t *tcp, char *out, size_t len)
{
	struct sockaddr_storage ss;
	int sl = sizeof ss;
	char ip[INET6_ADDRSTRLEN] = "?";
	snprintf(out, len, "?");
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		uv_ip4_name(sin, ip, sizeof ip);
		snprintf(out, len, "%s:%d", ip, ntohs(sin->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		uv_ip6_name(sin6, ip, sizeof ip);
		snprintf(out, len, "[%s]:%d", ip, ntohs(sin6->sin6_port));
	}
}

/* Called by libuv for a new connection: accept it, and serve it, or answer
 * 503 when max_connections are open. */
static void
on_connection(uv_stream_t *server, int status)
{
	struct http_server *srv = server->data;
	if (status < 0 || srv->stopping)
		return;
	struct http_conn *c = conn_new(srv);
	uv_tcp_init(srv->loop, &c->tcp);
	uv_timer_init(srv->loop, &c->timer);
	uv_timer_init(srv->loop, &c->kick);
	c->tcp.data = c->timer.data = c->kick.data = c;
	c->nhandles = 3;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close_now(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	peer_name(&c->tcp, c->peer, sizeof c->peer);
	if (srv->stats.connections_open >= srv->limits.max_connections) {
		srv->stats.rejected_busy++;
		c->rejected = true;
		if (srv->ssl_ctx != NULL) {
			conn_close_now(c); /* no handshake just to say no */
			return;
		}
		conn_send_error(c, 503, "busy", "too many connections", "Retry-After: 1\r\n");
		conn_shutdown(c);
		return;
	}
	c->counted = true;
	srv->stats.connections_total++;
	srv->stats.connections_open++;
	if (srv->ssl_ctx != NULL) {
		c->ssl = SSL_new(srv->ssl_ctx);
		BIO *rbio = BIO_new(BIO_s_mem());
		BIO *wbio = BIO_new(BIO_s_mem());
		if (c->ssl == NULL || rbio == NULL || wbio == NULL) {
			BIO_free(rbio);
			BIO_free(wbio);
			conn_close_now(c);
			return;
		}
		SSL_set_bio(c->ssl, rbio, wbio);
		SSL_set_accept_state(c->ssl);
	}
	conn_timer(c, CT_IDLE, secs_to_ms(srv->limits.idle_timeout));
	conn_update_reading(c);
}

/* Returns the first OpenSSL error as text ("PEM routines: no start line")
 * into buf, and clears the queue. */
static const char *
ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	const char *lib = ERR_lib_error_string(e);
	const char *reason = ERR_reason_error_string(e);
	if (e == 0)
		snprintf(buf, len, "unknown error");
	else if (ERR_GET_LIB(e) == ERR_LIB_SYS)
		snprintf(buf, len, "%s", strerror(ERR_GET_REASON(e)));
	else if (reason != NULL)
		snprintf(buf, len, "%s%s%s", lib ? lib : "", lib ? ": " : "", reason);
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static void set_cause(char **cause, const char *fmt, ...) PRINTFLIKE(2, 3);

/* Sets *cause (if cause is not NULL) to a formatted message; the caller
 * frees it. */
static void
set_cause(char **cause, const char *fmt, ...)
{
	if (cause == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	*cause = xvasprintf(fmt, ap);
	va_end(ap);
}

/* Loads the certificate chain and key into a new TLS 1.2+ server context.
 * Returns it, or NULL with *cause naming the file. */
static SSL_CTX *
tls_ctx_new(const char *cert, const char *key, char **cause)
{
	char err[256];
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		set_cause(cause, "TLS: %s", ssl_error(err, sizeof err));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	FILE *f = fopen(cert, "r");
	if (f == NULL) {
		set_cause(cause, "tls_cert %s: %s", cert, strerror(errno));
		goto fail;
	}
	fclose(f);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		set_cause(cause, "tls_cert %s: %s", cert, ssl_error(err, sizeof err));
		goto fail;
	}
	f = fopen(key, "r");
	if (f == NULL) {
		set_cause(cause, "tls_key %s: %s", key, strerror(errno));
		goto fail;
	}
	fclose(f);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			set_cause(cause, "tls_key %s does not match tls_cert %s", key, cert);
		else
			set_cause(cause, "tls_key %s: %s", key, ssl_error(err, sizeof err));
		ERR_clear_error();
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		set_cause(cause, "tls_key %s does not match tls_cert %s", key, cert);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- the server ---------------------------------------------------------- */

void
http_limits_default(struct http_limits *l)
{
	l->max_connections = 1024;
	l->idle_timeout = 60;
	l->request_timeout = 30;
	l->max_header_bytes = 32 * 1024;
	l->max_headers = 100;
	l->max_body = 1024 * 1024;
	l->max_ws_message = 1024 * 1024;
}

/* Copies in into out, taking the default for every zero field. */
static void
limits_fill(struct http_limits *out, const struct http_limits *in)
{
	http_limits_default(out);
	if (in == NULL)
		return;
	if (in->max_connections)
		out->max_connections = in->max_connections;
	if (in->idle_timeout > 0)
		out->idle_timeout = in->idle_timeout;
	if (in->request_timeout > 0)
		out->request_timeout = in->request_timeout;
	if (in->max_header_bytes)
		out->max_header_bytes = in->max_header_bytes;
	if (in->max_headers)
		out->max_headers = in->max_headers;
	if (in->max_body)
		out->max_body = in->max_body;
	if (in->max_ws_message)
		out->max_ws_message = in->max_ws_message;
}

/* Frees the server itself (its connections are gone). */
static void
srv_free(struct http_server *srv)
{
	SSL_CTX_free(srv->ssl_ctx);
	free(srv->host);
	free(srv);
}

/* Frees a stopped server once its listener and connections are closed. */
static void
srv_maybe_free(struct http_server *srv)
{
	if (srv->loop != NULL && srv->stopping && srv->listener_closed && srv->conns == NULL)
		srv_free(srv);
}

/* Called by libuv when the listener has closed. */
static void
listener_closed_cb(uv_handle_t *h)
{
	struct http_server *srv = h->data;
	srv->listener_closed = true;
	srv_maybe_free(srv);
}

int
http_server_start(uv_loop_t *loop, const struct http_server_opts *opts, struct http_server **out,
                  char **cause)
{
	*out = NULL;
	if (cause != NULL)
		*cause = NULL;
	const char *host = opts->host ? opts->host : "127.0.0.1";
	if (opts->handler == NULL) {
		set_cause(cause, "%s:%d: no request handler", host, opts->port);
		return -1;
	}
	if (opts->port < 0 || opts->port > 65535) {
		set_cause(cause, "%s:%d: invalid port", host, opts->port);
		return -1;
	}
	SSL_CTX *ctx = NULL;
	if (opts->tls_cert != NULL || opts->tls_key != NULL) {
		if (opts->tls_cert == NULL || opts->tls_key == NULL) {
			set_cause(cause, "%s:%d: TLS needs both tls_cert and tls_key", host,
			          opts->port);
			return -1;
		}
		ctx = tls_ctx_new(opts->tls_cert, opts->tls_key, cause);
		if (ctx == NULL)
			return -1;
	}

	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	char port[16];
	snprintf(port, sizeof port, "%d", opts->port);
	int gr = getaddrinfo(host, port, &hints, &res);
	if (gr != 0) {
		set_cause(cause, "%s:%d: %s", host, opts->port, gai_strerror(gr));
		SSL_CTX_free(ctx);
		return -1;
	}

	struct http_server *srv = xcalloc(1, sizeof *srv);
	srv->loop = loop;
	srv->host = xstrdup(host);
	srv->ssl_ctx = ctx;
	srv->handler = opts->handler;
	srv->arg = opts->arg;
	limits_fill(&srv->limits, &opts->limits);
	uv_tcp_init(loop, &srv->listener);
	srv->listener.data = srv;
	int r = uv_tcp_bind(&srv->listener, res->ai_addr, 0);
	freeaddrinfo(res);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&srv->listener, SOMAXCONN, on_connection);
	if (r < 0) {
		set_cause(cause, "%s:%d: %s", host, opts->port, uv_strerror(r));
		srv->stopping = true;
		uv_close((uv_handle_t *)&srv->listener, listener_closed_cb);
		return -1;
	}
	struct sockaddr_storage ss;
	int sl = sizeof ss;
	srv->port = opts->port;
	if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET)
			srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			srv->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	*out = srv;
	return 0;
}

int
http_server_port(const struct http_server *s)
{
	return s->port;
}

void
http_server_stop(struct http_server *s)
{
	if (s == NULL || s->stopping)
		return;
	s->stopping = true;
	uv_close((uv_handle_t *)&s->listener, listener_closed_cb);
	for (struct http_conn *c = s->conns, *next; c != NULL; c = next) {
		next = c->next;
		if (c->closed)
			continue;
		struct ws_conn *ws = c->ws;
		if (ws != NULL && !ws->done && !c->closing) {
			const char *why = "server shutting down";
			if (ws->our_code == 0 &&
			    wslay_event_queue_close(ws->ctx, 1001, (const uint8_t *)why,
			                            strlen(why)) == 0) {
				ws->our_code = 1001;
				ws->our_reason = xstrdup(why);
			}
			ws_send_all(ws); /* best effort */
			ws_finish(ws, false);
		}
		conn_close_now(c);
	}
}

void
http_server_stats(const struct http_server *s, struct http_server_stats *out)
{
	*out = s->stats;
}

/* ---- test connections ---------------------------------------------------- */

struct http_conn *
http_conn_test_new(const struct http_limits *limits, http_handler_fn handler, void *arg)
{
	struct http_server *srv = xcalloc(1, sizeof *srv);
	srv->host = xstrdup("test");
	srv->handler = handler;
	srv->arg = arg;
	limits_fill(&srv->limits, limits);
	struct http_conn *c = conn_new(srv);
	c->detached = true;
	c->counted = true;
	srv->stats.connections_total++;
	srv->stats.connections_open++;
	snprintf(c->peer, sizeof c->peer, "test:0");
	return c;
}

const char *
http_conn_test_output(struct http_conn *c, size_t *len)
{
	*len = c->out.len;
	return buf_cstr(&c->out);
}

bool
http_conn_test_closed(const struct http_conn *c)
{
	return c->closing;
}

void
http_conn_test_free(struct http_conn *c)
{
	struct http_server *srv = c->srv;
	conn_close_now(c);
	conn_free(c);
	srv_free(srv);
}
