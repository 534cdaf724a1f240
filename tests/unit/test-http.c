/* test-http.c — the Bridge's HTTP/1.1 + WebSocket server: requests, keep-alive,
 * pipelining with late answers, bodies, limits and timeouts, the WebSocket
 * handshake, frames and close codes, TLS.  Each test runs a real server on
 * port 0 on its own loop; the client is a non-blocking socket in the same
 * thread, and waiting means running the loop with UV_RUN_NOWAIT and
 * polling both the loop's and the client's descriptors. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "http.h"
#include "util.h"
#include "wsframes.h"

#define RFC_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* ---- the server side ------------------------------------------------------ */

struct fx {
	uv_loop_t loop;
	uv_timer_t timer; /* answers held requests late */
	struct http_server *srv;
	int port;
	int nreq;
	bool overlap; /* a request reached the handler while another was held */
	char path[256], query[256], custom[256], peer[64], body[256], n[16];
	char order[64]; /* the n= of each request, in handler order */
	struct http_request *held;
	struct ws_conn *ws;
	int ws_msgs, ws_closes, ws_code;
	char ws_reason[128];
	bool ws_peer_ok;
	bool ws_pause; /* each message pauses reading */
};

/* Answers the held request (the timer of /slow). */
static void
answer_held(uv_timer_t *t)
{
	struct fx *fx = t->data;
	struct http_request *req = fx->held;
	fx->held = NULL;
	if (req != NULL)
		http_respond(req, 200, "text/plain", "slow", 4, NULL);
}

/* WebSocket messages: "bye" makes the server close, anything else echoes. */
static void
ws_on_message(void *arg, struct ws_conn *ws, const char *data, size_t len)
{
	struct fx *fx = arg;
	fx->ws_msgs++;
	fx->ws_peer_ok = strncmp(ws_peer(ws), "127.0.0.1:", 10) == 0;
	assert_int_equal(data[len], '\0');
	if (len == 3 && memcmp(data, "bye", 3) == 0)
		ws_close(ws, 1000, "bye");
	else
		assert_int_equal(ws_send_text(ws, data, len), 0);
	if (fx->ws_pause)
		ws_set_reading(ws, false);
}

/* Records how the WebSocket ended. */
static void
ws_on_close(void *arg, struct ws_conn *ws, int code, const char *reason)
{
	struct fx *fx = arg;
	fx->ws_closes++;
	fx->ws_code = code;
	snprintf(fx->ws_reason, sizeof fx->ws_reason, "%s", reason);
	assert_int_equal(ws_send_text(ws, "late", 4), -1);
	fx->ws = NULL;
}

/* The handler: /slow is answered 100 ms later, /hold when the test says,
 * /ws upgrades, everything else echoes what it saw. */
static void
handler(void *arg, struct http_request *req)
{
	struct fx *fx = arg;
	fx->nreq++;
	if (fx->held != NULL)
		fx->overlap = true;
	snprintf(fx->path, sizeof fx->path, "%s", req->path);
	snprintf(fx->query, sizeof fx->query, "%s", req->query ? req->query : "(null)");
	const char *custom = http_header(req, "X-CUSTOM");
	snprintf(fx->custom, sizeof fx->custom, "%s", custom ? custom : "(null)");
	snprintf(fx->peer, sizeof fx->peer, "%s", req->peer);
	snprintf(fx->body, sizeof fx->body, "%.*s", (int)req->body_len, req->body);
	char *n = http_query_param(req, "n");
	snprintf(fx->n, sizeof fx->n, "%s", n ? n : "");
	size_t ol = strlen(fx->order);
	snprintf(fx->order + ol, sizeof fx->order - ol, "%s", n ? n : "-");
	free(n);

	if (strcmp(req->path, "/slow") == 0) {
		fx->held = req;
		uv_timer_start(&fx->timer, answer_held, 100, 0);
		return;
	}
	if (strcmp(req->path, "/hold") == 0) {
		fx->held = req;
		return;
	}
	if (strcmp(req->path, "/ws") == 0) {
		if (req->upgrade_websocket)
			fx->ws = http_upgrade_websocket(req, ws_on_message, ws_on_close, fx);
		else
			http_respond_error(req, 426, "upgrade_required", "use a WebSocket", NULL);
		return;
	}
	if (strcmp(req->path, "/empty") == 0) {
		http_respond(req, 204, NULL, NULL, 0, NULL);
		return;
	}
	char *name = http_query_param(req, "name");
	char *body = xasprintf("path=%s n=%s name=%s body=%.*s", req->path, fx->n,
	                       name ? name : "(null)", (int)req->body_len, req->body);
	http_respond(req, 200, "text/plain", body, strlen(body), "X-Test: yes\r\n");
	free(body);
	free(name);
}

/* Limits for the tests: short enough to test, long enough not to fire. */
static struct http_limits
test_limits(void)
{
	struct http_limits l;
	http_limits_default(&l);
	l.idle_timeout = 5;
	l.request_timeout = 5;
	return l;
}

/* Starts a server on 127.0.0.1:0 with limits (and TLS files or NULL). */
static void
fx_start_tls(struct fx *fx, const struct http_limits *limits, const char *cert, const char *key)
{
	memset(fx, 0, sizeof *fx);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	uv_timer_init(&fx->loop, &fx->timer);
	fx->timer.data = fx;
	struct http_server_opts o = {
	    .host = "127.0.0.1",
	    .port = 0,
	    .limits = *limits,
	    .tls_cert = cert,
	    .tls_key = key,
	    .handler = handler,
	    .arg = fx,
	};
	char *cause = NULL;
	int r = http_server_start(&fx->loop, &o, &fx->srv, &cause);
	if (r != 0)
		fail_msg("http_server_start: %s", cause);
	fx->port = http_server_port(fx->srv);
	assert_true(fx->port > 0);
}

static void
fx_start(struct fx *fx, const struct http_limits *limits)
{
	fx_start_tls(fx, limits, NULL, NULL);
}

/* Stops the server, runs the loop dry, and checks nothing is left on it. */
static void
fx_finish(struct fx *fx)
{
	http_server_stop(fx->srv);
	uv_close((uv_handle_t *)&fx->timer, NULL);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static struct http_server_stats
fx_stats(struct fx *fx)
{
	struct http_server_stats st;
	http_server_stats(fx->srv, &st);
	return st;
}

/* ---- the client side ------------------------------------------------------ */

struct resp {
	int status;
	char headers[4096]; /* "\nname: value" for each header, names lower-cased */
	struct buf body;
};

struct cli {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	bool raw_only; /* WebSocket: no HTTP response parsing */
	struct buf raw;
	size_t fed;  /* raw bytes given to the response parser */
	size_t wsat; /* raw offset of the next WebSocket frame */
	http_parser p;
	bool perr;
	int hstate;
	struct resp r[16];
	int n;
	bool eof;
};

/* Appends to a resp's header text, bounded. */
static void
resp_add(struct resp *r, const char *s, size_t len, bool lower)
{
	size_t hl = strlen(r->headers);
	for (size_t i = 0; i < len && hl + 1 < sizeof r->headers; i++) {
		char ch = s[i];
		if (lower && ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		r->headers[hl++] = ch;
	}
	r->headers[hl] = '\0';
}

static int
rp_begin(http_parser *p)
{
	struct cli *c = p->data;
	struct resp *r = &c->r[c->n];
	r->status = 0;
	r->headers[0] = '\0';
	buf_free(&r->body);
	c->hstate = 0;
	return 0;
}

static int
rp_field(http_parser *p, const char *at, size_t len)
{
	struct cli *c = p->data;
	if (c->hstate != 1)
		resp_add(&c->r[c->n], "\n", 1, false);
	c->hstate = 1;
	resp_add(&c->r[c->n], at, len, true);
	return 0;
}

static int
rp_value(http_parser *p, const char *at, size_t len)
{
	struct cli *c = p->data;
	if (c->hstate != 2)
		resp_add(&c->r[c->n], ": ", 2, false);
	c->hstate = 2;
	resp_add(&c->r[c->n], at, len, false);
	return 0;
}

static int
rp_headers(http_parser *p)
{
	struct cli *c = p->data;
	c->r[c->n].status = p->status_code;
	return 0;
}

static int
rp_body(http_parser *p, const char *at, size_t len)
{
	struct cli *c = p->data;
	buf_add(&c->r[c->n].body, at, len);
	return 0;
}

static int
rp_complete(http_parser *p)
{
	struct cli *c = p->data;
	if (c->n + 1 < (int)nitems(c->r))
		c->n++;
	return 0;
}

static const http_parser_settings rp_settings = {
    .on_message_begin = rp_begin,
    .on_header_field = rp_field,
    .on_header_value = rp_value,
    .on_headers_complete = rp_headers,
    .on_body = rp_body,
    .on_message_complete = rp_complete,
};

/* Connects to the fixture's server (blocking), then goes non-blocking. */
static void
cli_open(struct fx *fx, struct cli *c, bool raw_only)
{
	memset(c, 0, sizeof *c);
	c->raw_only = raw_only;
	buf_init(&c->raw);
	http_parser_init(&c->p, HTTP_RESPONSE);
	c->p.data = c;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(c->fd >= 0);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)fx->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sin, sizeof sin), 0);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

/* Closes the client and frees what it holds. */
static void
cli_close(struct cli *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->ctx != NULL)
		SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	for (size_t i = 0; i < nitems(c->r); i++)
		buf_free(&c->r[i].body);
	buf_free(&c->raw);
}

/* Reads whatever has arrived, and parses responses out of it. */
static void
cli_read(struct cli *c)
{
	char tmp[65536];
	while (c->fd >= 0 && !c->eof) {
		ssize_t n;
		if (c->ssl != NULL) {
			size_t got = 0;
			ERR_clear_error();
			if (SSL_read_ex(c->ssl, tmp, sizeof tmp, &got) == 1) {
				n = (ssize_t)got;
			} else {
				int e = SSL_get_error(c->ssl, 0);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					break;
				c->eof = true;
				break;
			}
		} else {
			n = recv(c->fd, tmp, sizeof tmp, 0);
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n <= 0) {
				c->eof = true;
				break;
			}
		}
		buf_add(&c->raw, tmp, (size_t)n);
	}
	if (!c->raw_only && !c->perr && c->fed < c->raw.len) {
		size_t n = http_parser_execute(&c->p, &rp_settings, c->raw.data + c->fed,
		                               c->raw.len - c->fed);
		if (HTTP_PARSER_ERRNO(&c->p) != HPE_OK)
			c->perr = true;
		c->fed += n;
	}
}

/* Runs the loop once, then waits up to ms for the loop or the client. */
static void
fx_step(struct fx *fx, struct cli *c, int ms)
{
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	struct pollfd pfd[2];
	nfds_t n = 0;
	pfd[n].fd = uv_backend_fd(&fx->loop);
	pfd[n++].events = POLLIN;
	if (c != NULL && c->fd >= 0) {
		pfd[n].fd = c->fd;
		pfd[n++].events = POLLIN;
	}
	int t = uv_backend_timeout(&fx->loop);
	if (t < 0 || t > ms)
		t = ms;
	poll(pfd, n, t);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
}

typedef bool (*pred_fn)(struct fx *fx, struct cli *c, const void *arg);

/* Steps until pred holds; false after timeout_ms. */
static bool
fx_wait(struct fx *fx, struct cli *c, pred_fn pred, const void *arg, int timeout_ms)
{
	int64_t end = time_mono_ms() + timeout_ms;
	for (;;) {
		if (c != NULL)
			cli_read(c);
		if (pred(fx, c, arg))
			return true;
		if (time_mono_ms() > end)
			return false;
		fx_step(fx, c, 10);
	}
}

static bool
p_nresp(struct fx *fx, struct cli *c, const void *arg)
{
	return c->n >= *(const int *)arg || c->eof;
}

static bool
p_eof(struct fx *fx, struct cli *c, const void *arg)
{
	return c->eof;
}

static bool
p_raw_has(struct fx *fx, struct cli *c, const void *arg)
{
	return c->raw.len > 0 && strstr(buf_cstr(&c->raw), arg) != NULL;
}

/* Waits until *counter >= want. */
static bool
wait_int(struct fx *fx, struct cli *c, int *counter, int want, int timeout_ms)
{
	int64_t end = time_mono_ms() + timeout_ms;
	for (;;) {
		if (c != NULL)
			cli_read(c);
		if (*counter >= want)
			return true;
		if (time_mono_ms() > end)
			return false;
		fx_step(fx, c, 10);
	}
}

/* Waits for n responses; fails the test if they do not come. */
static void
wait_resp(struct fx *fx, struct cli *c, int n)
{
	assert_true(fx_wait(fx, c, p_nresp, &n, 3000));
	assert_false(c->perr);
	assert_true(c->n >= n);
}

static void
wait_eof(struct fx *fx, struct cli *c)
{
	assert_true(fx_wait(fx, c, p_eof, NULL, 3000));
}

/* Sends all of data, stepping the loop while the socket is full. */
static void
cli_send(struct fx *fx, struct cli *c, const void *data, size_t len)
{
	const char *p = data;
	int64_t end = time_mono_ms() + 5000;
	while (len > 0) {
		ssize_t n;
		if (c->ssl != NULL) {
			size_t w = 0;
			ERR_clear_error();
			n = SSL_write_ex(c->ssl, p, len, &w) == 1 ? (ssize_t)w : -1;
			if (n < 0) {
				int e = SSL_get_error(c->ssl, -1);
				assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
				errno = EAGAIN;
			}
		} else {
			n = send(c->fd, p, len, MSG_NOSIGNAL);
		}
		if (n < 0) {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
			assert_true(time_mono_ms() < end);
			fx_step(fx, c, 5);
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
}

static void
cli_sends(struct fx *fx, struct cli *c, const char *s)
{
	cli_send(fx, c, s, strlen(s));
}

/* ---- HTTP tests ---------------------------------------------------------- */

static void
test_get_query(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c,
	          "GET /echo?state=queued&limit=5&name=a%20b+c HTTP/1.1\r\n"
	          "Host: localhost\r\n"
	          "X-Cus");
	fx_step(&fx, &c, 5);
	cli_sends(&fx, &c, "tom: Val");
	fx_step(&fx, &c, 5);
	cli_sends(&fx, &c, "ue  \r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_string_equal(fx.path, "/echo");
	assert_string_equal(fx.query, "state=queued&limit=5&name=a%20b+c");
	assert_string_equal(fx.custom, "Value");
	assert_true(strncmp(fx.peer, "127.0.0.1:", 10) == 0);
	assert_int_equal(c.r[0].status, 200);
	assert_string_equal(buf_cstr(&c.r[0].body), "path=/echo n= name=a b c body=");
	assert_non_null(strstr(c.r[0].headers, "\ncontent-type: text/plain"));
	assert_non_null(strstr(c.r[0].headers, "\ncontent-length: 30"));
	assert_non_null(strstr(c.r[0].headers, "\nconnection: keep-alive"));
	assert_non_null(strstr(c.r[0].headers, "\ndate: "));
	assert_non_null(strstr(c.r[0].headers, " GMT"));
	assert_non_null(strstr(c.r[0].headers, "\nx-test: yes"));
	assert_true(strncmp(c.raw.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
	struct http_server_stats st = fx_stats(&fx);
	assert_int_equal(st.requests, 1);
	assert_int_equal(st.by_status[2], 1);
	assert_int_equal(st.connections_open, 1);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_keepalive(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c, 1);
	cli_sends(&fx, &c, "GET /echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c, 2);
	assert_false(c.eof);
	cli_sends(&fx, &c, "GET /echo?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	wait_resp(&fx, &c, 3);
	assert_non_null(strstr(c.r[1].headers, "\nconnection: keep-alive"));
	assert_non_null(strstr(c.r[2].headers, "\nconnection: close"));
	wait_eof(&fx, &c);
	assert_string_equal(fx.order, "123");
	struct http_server_stats st = fx_stats(&fx);
	assert_int_equal(st.connections_total, 1);
	assert_int_equal(st.requests, 3);
	cli_close(&c);

	/* HTTP/1.0 closes unless asked otherwise */
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /echo?n=4 HTTP/1.0\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_non_null(strstr(c.r[0].headers, "\nconnection: close"));
	wait_eof(&fx, &c);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_pipelining(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c,
	          "GET /slow?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
	          "GET /echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\n"
	          "POST /echo?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
	wait_resp(&fx, &c, 3);
	assert_false(fx.overlap);
	assert_string_equal(fx.order, "123");
	assert_int_equal(c.r[0].status, 200);
	assert_string_equal(buf_cstr(&c.r[0].body), "slow");
	assert_string_equal(buf_cstr(&c.r[1].body), "path=/echo n=2 name=(null) body=");
	assert_string_equal(buf_cstr(&c.r[2].body), "path=/echo n=3 name=(null) body=body");
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_post_body(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello");
	fx_step(&fx, &c, 5);
	assert_int_equal(fx.nreq, 0);
	cli_sends(&fx, &c, " world");
	wait_resp(&fx, &c, 1);
	assert_string_equal(fx.body, "hello world");
	assert_string_equal(buf_cstr(&c.r[0].body), "path=/echo n= name=(null) body=hello world");

	/* Expect: 100-continue gets its interim answer before the body */
	cli_sends(&fx, &c,
	          "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
	          "Content-Length: 2\r\n\r\n");
	assert_true(fx_wait(&fx, &c, p_raw_has, "100 Continue", 3000));
	cli_sends(&fx, &c, "ok");
	assert_true(fx_wait(&fx, &c, p_raw_has, "body=ok", 3000));
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_chunked(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c,
	          "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	          "5\r\nhello\r\n");
	fx_step(&fx, &c, 5);
	cli_sends(&fx, &c, "1;ext=1\r\n \r\n6\r\nwor");
	fx_step(&fx, &c, 5);
	assert_int_equal(fx.nreq, 0);
	cli_sends(&fx, &c, "ld!\r\n0\r\nX-Trailer: t\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_string_equal(fx.body, "hello world!");

	/* a chunked body over the limit is refused while it arrives */
	cli_close(&c);
	fx_finish(&fx);
	l.max_body = 16;
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c,
	          "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	          "a\r\n0123456789\r\na\r\n0123456789\r\n");
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 413);
	wait_eof(&fx, &c);
	assert_int_equal(fx.nreq, 0);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_bad_request(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c, 1);
	cli_sends(&fx, &c, "BR@KEN / HTTP/1.1\r\n\r\n");
	wait_resp(&fx, &c, 2);
	assert_int_equal(c.r[1].status, 400);
	assert_non_null(strstr(c.r[1].headers, "\ncontent-type: application/json"));
	assert_non_null(strstr(c.r[1].headers, "\nconnection: close"));
	assert_non_null(strstr(buf_cstr(&c.r[1].body), "{\"error\":{\"code\":\"bad_request\""));
	wait_eof(&fx, &c);
	cli_close(&c);
	struct http_server_stats st = fx_stats(&fx);
	assert_int_equal(st.bad_requests, 1);
	assert_int_equal(st.by_status[4], 1);
	assert_int_equal(fx.nreq, 1);

	/* a bad request line in pieces, and a bad version */
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /x HTTP/9");
	fx_step(&fx, &c, 5);
	cli_sends(&fx, &c, "9.1\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 400);
	wait_eof(&fx, &c);
	cli_close(&c);

	/* a version the parser takes but we do not speak: 505, closed */
	static const char *const versions[] = {"HTTP/9.9", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9"};
	for (size_t i = 0; i < nitems(versions); i++) {
		char line[96];
		snprintf(line, sizeof line, "GET /echo %s\r\nHost: x\r\n\r\n", versions[i]);
		cli_open(&fx, &c, false);
		cli_sends(&fx, &c, line);
		wait_resp(&fx, &c, 1);
		assert_int_equal(c.r[0].status, 505);
		assert_non_null(strstr(buf_cstr(&c.r[0].body), "http_version_not_supported"));
		wait_eof(&fx, &c);
		cli_close(&c);
	}

	/* a space in a header name: 400, closed, the handler never sees it */
	int nreq = fx.nreq;
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /echo HTTP/1.1\r\nHost: x\r\nX Forwarded: 1\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 400);
	assert_non_null(strstr(buf_cstr(&c.r[0].body), "invalid header name"));
	wait_eof(&fx, &c);
	cli_close(&c);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /echo HTTP/1.1\r\nHost : x\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 400);
	wait_eof(&fx, &c);
	cli_close(&c);
	assert_int_equal(fx.nreq, nreq);
	fx_finish(&fx);
}

static void
test_body_too_large(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	l.max_body = 1024 * 1024;
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	/* the headers only: the answer must come without the 10 MB */
	cli_sends(&fx, &c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 413);
	assert_non_null(strstr(buf_cstr(&c.r[0].body), "body_too_large"));
	assert_non_null(strstr(c.r[0].headers, "\nconnection: close"));
	wait_eof(&fx, &c);
	assert_int_equal(fx.nreq, 0);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_headers_too_large(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	l.max_headers = 100;
	l.max_header_bytes = 8192;
	fx_start(&fx, &l);

	/* 200 headers */
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "GET /echo HTTP/1.1\r\n");
	for (int i = 0; i < 200; i++)
		buf_addf(&b, "X-H%d: %d\r\n", i, i);
	buf_adds(&b, "\r\n");
	cli_open(&fx, &c, false);
	cli_send(&fx, &c, b.data, b.len);
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 431);
	assert_non_null(strstr(buf_cstr(&c.r[0].body), "too_many_headers"));
	wait_eof(&fx, &c);
	cli_close(&c);

	/* a few but very long ones */
	b.len = 0;
	buf_adds(&b, "GET /echo HTTP/1.1\r\nX-Big: ");
	for (int i = 0; i < 10000; i++)
		buf_adds(&b, "a");
	buf_adds(&b, "\r\n\r\n");
	cli_open(&fx, &c, false);
	cli_send(&fx, &c, b.data, b.len);
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 431);
	assert_non_null(strstr(buf_cstr(&c.r[0].body), "headers_too_large"));
	wait_eof(&fx, &c);
	cli_close(&c);
	buf_free(&b);
	assert_int_equal(fx.nreq, 0);
	assert_int_equal(fx_stats(&fx).bad_requests, 2);
	fx_finish(&fx);
}

static void
test_slow_client(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	l.request_timeout = 0.3;
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	int64_t t0 = time_mono_ms();
	cli_sends(&fx, &c, "GET /echo HTTP/1.1\r\nHost: x\r\n");
	wait_resp(&fx, &c, 1);
	int64_t took = time_mono_ms() - t0;
	assert_int_equal(c.r[0].status, 408);
	assert_true(took >= 250);
	wait_eof(&fx, &c);
	assert_int_equal(fx.nreq, 0);
	assert_int_equal(fx_stats(&fx).timeouts, 1);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_idle_close(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	l.idle_timeout = 0.2;
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c, 1);
	int64_t t0 = time_mono_ms();
	size_t had = c.raw.len;
	wait_eof(&fx, &c);
	assert_true(time_mono_ms() - t0 >= 150);
	assert_int_equal(c.raw.len, had); /* closed without a word */
	assert_int_equal(fx_stats(&fx).timeouts, 1);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_max_connections(void **state)
{
	struct fx fx;
	struct cli c1, c2, c3;
	struct http_limits l = test_limits();
	l.max_connections = 2;
	fx_start(&fx, &l);
	cli_open(&fx, &c1, false);
	cli_sends(&fx, &c1, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c1, 1);
	cli_open(&fx, &c2, false);
	cli_sends(&fx, &c2, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c2, 1);
	cli_open(&fx, &c3, false);
	wait_resp(&fx, &c3, 1);
	assert_int_equal(c3.r[0].status, 503);
	assert_non_null(strstr(c3.r[0].headers, "\nretry-after: 1"));
	assert_non_null(strstr(buf_cstr(&c3.r[0].body), "{\"error\":"));
	wait_eof(&fx, &c3);
	struct http_server_stats st = fx_stats(&fx);
	assert_int_equal(st.rejected_busy, 1);
	assert_int_equal(st.connections_open, 2);
	assert_int_equal(st.by_status[5], 1);
	cli_close(&c3);

	/* a slot frees up when a client leaves */
	cli_close(&c1);
	int64_t end = time_mono_ms() + 3000;
	while (fx_stats(&fx).connections_open != 1 && time_mono_ms() < end)
		fx_step(&fx, NULL, 10);
	cli_open(&fx, &c3, false);
	cli_sends(&fx, &c3, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	wait_resp(&fx, &c3, 1);
	assert_int_equal(c3.r[0].status, 200);
	cli_close(&c3);
	cli_close(&c2);
	fx_finish(&fx);
}

static void
test_stop_with_pending(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_true(wait_int(&fx, &c, &fx.nreq, 1, 3000));
	assert_non_null(fx.held);
	http_server_stop(fx.srv);
	uv_run(&fx.loop, UV_RUN_NOWAIT);
	/* answering after the connection is gone just frees the request */
	struct http_request *req = fx.held;
	fx.held = NULL;
	assert_null(req->conn);
	http_respond(req, 200, "text/plain", "late", 4, NULL);
	wait_eof(&fx, &c);
	assert_int_equal(c.n, 0);
	cli_close(&c);
	uv_close((uv_handle_t *)&fx.timer, NULL);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
}

static void
test_start_errors(void **state)
{
	struct fx fx;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	struct http_server_opts o = {.host = "127.0.0.1", .port = fx.port, .handler = handler};
	struct http_server *s2;
	char *cause = NULL;
	assert_int_equal(http_server_start(&fx.loop, &o, &s2, &cause), -1);
	assert_null(s2);
	char want[64];
	snprintf(want, sizeof want, "127.0.0.1:%d: address already in use", fx.port);
	assert_string_equal(cause, want);
	free(cause);

	o.port = 0;
	o.tls_cert = "/nonexistent/cert.pem";
	o.tls_key = "/nonexistent/key.pem";
	assert_int_equal(http_server_start(&fx.loop, &o, &s2, &cause), -1);
	assert_non_null(strstr(cause, "/nonexistent/cert.pem"));
	assert_non_null(strstr(cause, "No such file"));
	free(cause);

	o.tls_key = NULL;
	assert_int_equal(http_server_start(&fx.loop, &o, &s2, &cause), -1);
	assert_non_null(strstr(cause, "tls_key"));
	free(cause);

	o.tls_cert = NULL;
	o.host = "not a host name!";
	assert_int_equal(http_server_start(&fx.loop, &o, &s2, &cause), -1);
	assert_non_null(strstr(cause, "not a host name!:0: "));
	free(cause);
	fx_finish(&fx);
}

/* ---- test connections (no socket) ---------------------------------------- */

static void
test_feed_bytewise(void **state)
{
	struct fx fx;
	memset(&fx, 0, sizeof fx);
	struct http_limits l = test_limits();
	struct http_conn *c = http_conn_test_new(&l, handler, &fx);
	const char *in = "POST /echo?n=7 HTTP/1.1\r\nHost: x\r\nX-Custom: Va lue \r\n"
	                 "Content-Length: 5\r\n\r\nhello"
	                 "HEAD /echo?n=8 HTTP/1.1\r\nHost: x\r\n\r\n"
	                 "GET /empty HTTP/1.1\r\n\r\n";
	for (size_t i = 0; in[i] != '\0'; i++)
		http_conn_feed(c, in + i, 1);
	assert_int_equal(fx.nreq, 3);
	assert_string_equal(fx.order, "78-");
	size_t len;
	const char *out = http_conn_test_output(c, &len);
	const char *r1 = strstr(out, "HTTP/1.1 200 OK\r\n");
	assert_non_null(r1);
	assert_non_null(strstr(r1, "body=hello"));
	/* HEAD: the length of the body, not the body */
	const char *r2 = strstr(r1 + 1, "HTTP/1.1 200 OK\r\n");
	assert_non_null(r2);
	const char *r3 = strstr(r2, "HTTP/1.1 204 No Content\r\n");
	assert_non_null(r3);
	assert_null(strstr(r2, "n=8"));
	assert_null(strstr(r3, "Content-Length"));
	assert_false(http_conn_test_closed(c));
	http_conn_test_free(c);

	/* held: the next request waits until the first is answered */
	memset(&fx, 0, sizeof fx);
	c = http_conn_test_new(&l, handler, &fx);
	const char *two = "GET /hold?n=1 HTTP/1.1\r\n\r\nGET /echo?n=2 HTTP/1.1\r\n\r\n";
	http_conn_feed(c, two, strlen(two));
	assert_int_equal(fx.nreq, 1);
	out = http_conn_test_output(c, &len);
	assert_int_equal(len, 0);
	struct http_request *req = fx.held;
	fx.held = NULL;
	http_respond(req, 202, "text/plain", "first", 5, NULL);
	assert_int_equal(fx.nreq, 2);
	out = http_conn_test_output(c, &len);
	const char *a = strstr(out, "202 Accepted");
	const char *b = strstr(out, "n=2");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a < b);

	/* a held request outlives its connection */
	const char *three = "GET /hold?n=3 HTTP/1.1\r\n\r\n";
	http_conn_feed(c, three, strlen(three));
	assert_non_null(fx.held);
	http_conn_test_free(c);
	assert_null(fx.held->conn);
	http_respond(fx.held, 200, NULL, NULL, 0, NULL);
}

static void
test_query_param(void **state)
{
	struct http_request req;
	memset(&req, 0, sizeof req);
	req.query = "a=1&b=x%2By+z&c&d=&a=2&e=%zz&%66=f";
	char *v;
	assert_string_equal(v = http_query_param(&req, "a"), "1");
	free(v);
	assert_string_equal(v = http_query_param(&req, "b"), "x+y z");
	free(v);
	assert_string_equal(v = http_query_param(&req, "c"), "");
	free(v);
	assert_string_equal(v = http_query_param(&req, "d"), "");
	free(v);
	assert_string_equal(v = http_query_param(&req, "e"), "%zz");
	free(v);
	assert_string_equal(v = http_query_param(&req, "f"), "f");
	free(v);
	assert_null(http_query_param(&req, "zz"));
	req.query = NULL;
	assert_null(http_query_param(&req, "a"));
}

/* ---- WebSocket ------------------------------------------------------------ */

struct frame {
	int opcode;
	bool fin;
	char payload[4096];
	size_t len;
};

/* Parses the next server frame from c's raw bytes into f; false if it has
 * not all arrived. */
static bool
ws_next_frame(struct cli *c, struct frame *f)
{
	const uint8_t *p = (const uint8_t *)c->raw.data + c->wsat;
	size_t avail = c->raw.len - c->wsat;
	if (avail < 2)
		return false;
	assert_int_equal(p[1] & 0x80, 0); /* the server never masks */
	size_t len = p[1] & 0x7f, i = 2;
	if (len == 126) {
		if (avail < 4)
			return false;
		len = (size_t)p[2] << 8 | p[3];
		i = 4;
	} else if (len == 127) {
		if (avail < 10)
			return false;
		len = 0;
		for (int k = 0; k < 8; k++)
			len = len << 8 | p[2 + k];
		i = 10;
	}
	if (avail < i + len)
		return false;
	f->fin = (p[0] & 0x80) != 0;
	f->opcode = p[0] & 0x0f;
	f->len = len < sizeof f->payload ? len : sizeof f->payload - 1;
	memcpy(f->payload, p + i, f->len);
	f->payload[f->len] = '\0';
	c->wsat += i + len;
	return true;
}

static bool
p_frame(struct fx *fx, struct cli *c, const void *arg)
{
	return ws_next_frame(c, (struct frame *)arg);
}

/* Waits for the next frame from the server. */
static void
wait_frame(struct fx *fx, struct cli *c, struct frame *f)
{
	assert_true(fx_wait(fx, c, p_frame, f, 3000));
}

/* Asks for a WebSocket on /ws with the RFC's example key on the connected
 * client c, and checks the 101. */
static void
ws_handshake(struct fx *fx, struct cli *c)
{
	c->raw_only = true;
	cli_sends(fx, c,
	          "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
	          "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " RFC_KEY "\r\n"
	          "Sec-WebSocket-Version: 13\r\n\r\n");
	assert_true(fx_wait(fx, c, p_raw_has, "\r\n\r\n", 3000));
	const char *raw = buf_cstr(&c->raw);
	assert_true(strncmp(raw, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
	assert_non_null(strstr(raw, "\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n"));
	assert_non_null(strstr(raw, "\r\nUpgrade: websocket\r\n"));
	c->wsat = (size_t)(strstr(raw, "\r\n\r\n") + 4 - raw);
	assert_non_null(fx->ws);
}

/* Opens a WebSocket to /ws. */
static void
ws_open(struct fx *fx, struct cli *c)
{
	cli_open(fx, c, true);
	ws_handshake(fx, c);
}

/* Returns the status code of a close frame. */
static int
close_code(const struct frame *f)
{
	assert_int_equal(f->opcode, 8);
	assert_true(f->len >= 2);
	return (uint8_t)f->payload[0] << 8 | (uint8_t)f->payload[1];
}

static void
test_ws_echo(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	ws_open(&fx, &c);
	assert_int_equal(fx_stats(&fx).ws_open, 1);
	assert_int_equal(fx_stats(&fx).by_status[1], 1);
	uint8_t fr[8192];
	struct frame f;

	size_t n = ws_frame(fr, true, 1, true, "hello", 5);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(f.opcode, 1);
	assert_true(f.fin);
	assert_string_equal(f.payload, "hello");
	assert_true(fx.ws_peer_ok);

	/* fragments are put together; a ping in between is answered */
	n = ws_frame(fr, false, 1, true, "frag", 4);
	n += ws_frame(fr + n, true, 9, true, "p!", 2);
	n += ws_frame(fr + n, true, 0, true, "mented", 6);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(f.opcode, 10);
	assert_string_equal(f.payload, "p!");
	wait_frame(&fx, &c, &f);
	assert_int_equal(f.opcode, 1);
	assert_string_equal(f.payload, "fragmented");

	/* a bigger message, in a 16-bit length frame, sent in pieces */
	char big[3000];
	memset(big, 'x', sizeof big);
	n = ws_frame(fr, true, 1, true, big, sizeof big);
	cli_send(&fx, &c, fr, 7);
	fx_step(&fx, &c, 5);
	cli_send(&fx, &c, fr + 7, n - 7);
	wait_frame(&fx, &c, &f);
	assert_int_equal(f.len, sizeof big);
	assert_int_equal(ws_queued(fx.ws), 0);

	/* the close handshake: our code comes back, then the server closes */
	n = ws_frame(fr, true, 8, true,
	             "\x03\xe8"
	             "done",
	             6);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1000);
	wait_eof(&fx, &c);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1000);
	assert_string_equal(fx.ws_reason, "done");
	struct http_server_stats st = fx_stats(&fx);
	assert_int_equal(st.ws_messages_in, 3);
	assert_int_equal(st.ws_messages_out, 3);
	assert_int_equal(st.ws_open, 0);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_ws_unmasked(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	ws_open(&fx, &c);
	uint8_t fr[64];
	struct frame f;
	size_t n = ws_frame(fr, true, 1, false, "naked", 5);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1002);
	wait_eof(&fx, &c);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1002);
	assert_string_equal(fx.ws_reason, "protocol error");
	assert_int_equal(fx.ws_msgs, 0);
	cli_close(&c);
	fx_finish(&fx);
}

/* RFC 6455 5.5: a fragmented ping, a ping over 125 bytes and a close
 * frame with a 1-byte body get close 1002 (what came before is handled). */
static void
test_ws_bad_control(void **state)
{
	char big[126];
	memset(big, 'p', sizeof big);
	const struct {
		bool fin;
		int opcode;
		const char *payload;
		size_t len;
	} cases[] = {
	    {false, 9, "x", 1},   {true, 9, big, sizeof big}, {true, 10, big, sizeof big},
	    {true, 8, "\x03", 1}, {false, 8, "\x03\xe8", 2},
	};
	for (size_t i = 0; i < nitems(cases); i++) {
		struct fx fx;
		struct cli c;
		struct http_limits l = test_limits();
		fx_start(&fx, &l);
		ws_open(&fx, &c);
		uint8_t fr[512];
		struct frame f;
		size_t n = ws_frame(fr, true, 1, true, "before", 6);
		n += ws_frame(fr + n, cases[i].fin, cases[i].opcode, true, cases[i].payload,
		              cases[i].len);
		n += ws_frame(fr + n, true, 1, true, "after", 5);
		/* in two pieces, the bad frame's header split */
		cli_send(&fx, &c, fr, 13);
		fx_step(&fx, &c, 5);
		cli_send(&fx, &c, fr + 13, n - 13);
		wait_frame(&fx, &c, &f);
		assert_int_equal(f.opcode, 1);
		assert_string_equal(f.payload, "before");
		wait_frame(&fx, &c, &f);
		assert_int_equal(close_code(&f), 1002);
		wait_eof(&fx, &c);
		assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
		assert_int_equal(fx.ws_code, 1002);
		assert_int_equal(fx.ws_msgs, 1);
		cli_close(&c);
		fx_finish(&fx);
	}
}

static void
test_ws_too_big(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	l.max_ws_message = 1024;
	fx_start(&fx, &l);
	ws_open(&fx, &c);
	static uint8_t fr[4096];
	char big[2000];
	memset(big, 'y', sizeof big);
	struct frame f;
	size_t n = ws_frame(fr, true, 1, true, big, sizeof big);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1009);
	wait_eof(&fx, &c);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1009);
	assert_int_equal(fx.ws_msgs, 0);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_ws_server_close(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);

	/* the server closes (on "bye"); the client answers */
	ws_open(&fx, &c);
	uint8_t fr[64];
	struct frame f;
	size_t n = ws_frame(fr, true, 1, true, "bye", 3);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1000);
	assert_string_equal(f.payload + 2, "bye");
	assert_int_equal(fx.ws_closes, 0); /* waiting for our answer */
	n = ws_frame(fr, true, 8, true, "\x03\xe8", 2);
	cli_send(&fx, &c, fr, n);
	wait_eof(&fx, &c);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1000);
	assert_string_equal(fx.ws_reason, "bye");
	cli_close(&c);

	/* binary is refused with 1003; a client that never answers the close
	 * is cut off after 2 s */
	fx.ws_closes = 0;
	ws_open(&fx, &c);
	n = ws_frame(fr, true, 2, true, "\x01\x02", 2);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1003);
	int64_t t0 = time_mono_ms();
	wait_eof(&fx, &c);
	assert_true(time_mono_ms() - t0 >= 1500);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1003);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_ws_backpressure(void **state)
{
	/* messages sent faster than the client reads: once 1 MiB waits in
	 * libuv, wslay queues them (ws_queued grows); a ping read meanwhile
	 * is answered ahead of the messages wslay still holds; all arrive
	 * whole and in order */
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	ws_open(&fx, &c);
	static char msg[60000];
	memset(msg, 'm', sizeof msg);
	int sent = 0;
	while (ws_queued(fx.ws) < 3 * 1024 * 1024 && sent < 1000) {
		char seq[16];
		snprintf(seq, sizeof seq, "%05d:", sent % 100000);
		memcpy(msg, seq, 6);
		assert_int_equal(ws_send_text(fx.ws, msg, sizeof msg), 0);
		sent++;
		fx_step(&fx, NULL, 0);
	}
	assert_true(ws_queued(fx.ws) >= 3 * 1024 * 1024);
	uint8_t fr[64];
	size_t n = ws_frame(fr, true, 9, true, "bp", 2);
	cli_send(&fx, &c, fr, n);
	int got = 0, pong_at = -1;
	while (got < sent) {
		struct frame f;
		if (!fx_wait(&fx, &c, p_frame, &f, 3000))
			fail_msg("message %d of %d not received (%zu bytes still queued)", got,
			         sent, ws_queued(fx.ws));
		if (f.opcode == 10) {
			assert_int_equal(pong_at, -1);
			assert_string_equal(f.payload, "bp");
			pong_at = got;
			continue;
		}
		char want[16];
		snprintf(want, sizeof want, "%05d:", got % 100000);
		assert_int_equal(f.opcode, 1);
		assert_memory_equal(f.payload, want, 6);
		for (size_t i = 6; i < f.len; i++)
			assert_int_equal(f.payload[i], 'm');
		got++;
	}
	assert_true(pong_at >= 0 && pong_at < sent - 1);
	assert_int_equal(ws_queued(fx.ws), 0);
	assert_int_equal(fx_stats(&fx).ws_messages_out, (uint64_t)sent);
	/* and the close handshake still works */
	n = ws_frame(fr, true, 8, true, "\x03\xe8", 2);
	cli_send(&fx, &c, fr, n);
	struct frame f;
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1000);
	wait_eof(&fx, &c);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1000);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_ws_disappear(void **state)
{
	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);
	ws_open(&fx, &c);
	uint8_t fr[256];
	char msg[100];
	memset(msg, 'z', sizeof msg);
	size_t n = ws_frame(fr, true, 1, true, msg, sizeof msg);
	cli_send(&fx, &c, fr, n / 2);
	fx_step(&fx, &c, 5);
	close(c.fd);
	c.fd = -1;
	assert_true(wait_int(&fx, NULL, &fx.ws_closes, 1, 3000));
	assert_int_equal(fx.ws_code, 1006);
	assert_string_equal(fx.ws_reason, "connection lost");
	assert_int_equal(fx.ws_msgs, 0);
	cli_close(&c);
	fx_finish(&fx);
}

static void
test_ws_stop_and_bad_upgrade(void **state)
{
	struct fx fx;
	struct cli c, c2;
	struct http_limits l = test_limits();
	fx_start(&fx, &l);

	/* an upgrade with the wrong version is a plain request */
	cli_open(&fx, &c2, false);
	cli_sends(&fx, &c2,
	          "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	          "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n");
	wait_resp(&fx, &c2, 1);
	assert_int_equal(c2.r[0].status, 426);
	wait_eof(&fx, &c2);
	cli_close(&c2);

	/* stopping the server closes WebSockets with 1001 */
	ws_open(&fx, &c);
	http_server_stop(fx.srv);
	assert_int_equal(fx.ws_closes, 1);
	assert_int_equal(fx.ws_code, 1001);
	struct frame f;
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1001);
	wait_eof(&fx, &c);
	cli_close(&c);
	uv_close((uv_handle_t *)&fx.timer, NULL);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
}

/* Copies the upgrade request of the socketless WebSocket tests into in;
 * returns its length. */
static size_t
ws_upgrade_head(uint8_t *in)
{
	static const char head[] =
	    "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n";
	memcpy(in, head, sizeof head - 1);
	return sizeof head - 1;
}

static void
test_ws_feed(void **state)
{
	/* the same without a socket: what follows the upgrade in the same
	 * bytes is read as frames */
	struct fx fx;
	memset(&fx, 0, sizeof fx);
	struct http_limits l = test_limits();
	struct http_conn *c = http_conn_test_new(&l, handler, &fx);
	uint8_t in[512];
	size_t n = ws_upgrade_head(in);
	n += ws_frame(in + n, true, 1, true, "one", 3);
	n += ws_frame(in + n, true, 1, true, "two", 3);
	http_conn_feed(c, (const char *)in, n);
	assert_int_equal(fx.ws_msgs, 2);
	size_t len;
	const char *out = http_conn_test_output(c, &len);
	assert_non_null(strstr(out, RFC_ACCEPT));
	const char *body = strstr(out, "\r\n\r\n") + 4;
	assert_int_equal(len - (size_t)(body - out), 10);
	assert_memory_equal(body, "\x81\x03one\x81\x03two", 10);
	/* an echo of each length form: 7, 16 and 64-bit */
	static const size_t sizes[] = {125, 126, 65535, 70000};
	static uint8_t big[70100];
	static char text[70000];
	for (size_t i = 0; i < nitems(sizes); i++) {
		for (size_t k = 0; k < sizes[i]; k++)
			text[k] = (char)('a' + (k + i) % 26);
		size_t before = len;
		n = ws_frame(big, true, 1, true, text, sizes[i]);
		http_conn_feed(c, (const char *)big, n);
		out = http_conn_test_output(c, &len);
		const uint8_t *f = (const uint8_t *)out + before;
		size_t hl = sizes[i] < 126 ? 2 : sizes[i] < 65536 ? 4 : 10;
		assert_int_equal(len - before, hl + sizes[i]);
		assert_int_equal(f[0], 0x81);
		if (hl == 2)
			assert_int_equal(f[1], sizes[i]);
		else if (hl == 4)
			assert_int_equal(f[1], 126);
		else
			assert_int_equal(f[1], 127);
		uint64_t got = 0;
		for (size_t k = 2; k < hl; k++)
			got = got << 8 | f[k];
		assert_int_equal(hl == 2 ? f[1] : got, sizes[i]);
		assert_memory_equal(f + hl, text, sizes[i]);
	}
	assert_int_equal(fx.ws_msgs, 6);
	http_conn_test_free(c);
	assert_int_equal(fx.ws_closes, 1);
	assert_int_equal(fx.ws_code, 1006);
}

static void
test_ws_feed_pieces(void **state)
{
	/* frames fed a byte at a time: the same messages and pong as whole;
	 * invalid UTF-8 split between two frames gets close 1007 with its
	 * reason, and nothing after it is read */
	struct fx fx;
	memset(&fx, 0, sizeof fx);
	struct http_limits l = test_limits();
	struct http_conn *c = http_conn_test_new(&l, handler, &fx);
	uint8_t in[512];
	size_t n = ws_upgrade_head(in);
	n += ws_frame(in + n, true, 1, true, "one", 3);
	n += ws_frame(in + n, false, 1, true, "fr", 2);
	n += ws_frame(in + n, true, 9, true, "p", 1);
	n += ws_frame(in + n, true, 0, true, "ag", 2);
	n += ws_frame(in + n, false, 1, true, "{\xc3", 2);
	n += ws_frame(in + n, true, 0, true, "\x28}", 2);
	n += ws_frame(in + n, true, 1, true, "never", 5);
	for (size_t i = 0; i < n; i++)
		http_conn_feed(c, (const char *)in + i, 1);
	assert_int_equal(fx.ws_msgs, 2);
	size_t len;
	const char *out = http_conn_test_output(c, &len);
	const char *body = strstr(out, "\r\n\r\n") + 4;
	static const char want[] = "\x81\x03one"
	                           "\x8a\x01p"
	                           "\x81\x04"
	                           "frag"
	                           "\x88\x1e\x03\xef"
	                           "text message not valid UTF-8";
	assert_int_equal(len - (size_t)(body - out), sizeof want - 1);
	assert_memory_equal(body, want, sizeof want - 1);
	assert_int_equal(fx.ws_closes, 1);
	assert_int_equal(fx.ws_code, 1007);
	assert_string_equal(fx.ws_reason, "invalid payload data");
	assert_true(http_conn_test_closed(c));
	http_conn_test_free(c);
	assert_int_equal(fx.ws_closes, 1);

	/* reading paused by the user: the next message waits until it is
	 * resumed, and the order holds */
	memset(&fx, 0, sizeof fx);
	fx.ws_pause = true;
	c = http_conn_test_new(&l, handler, &fx);
	n = ws_upgrade_head(in);
	n += ws_frame(in + n, true, 1, true, "a", 1);
	n += ws_frame(in + n, true, 1, true, "b", 1);
	size_t cut = n - 3; /* "b" arrives in two reads, the second while paused */
	n += ws_frame(in + n, true, 1, true, "c", 1);
	http_conn_feed(c, (const char *)in, cut);
	assert_int_equal(fx.ws_msgs, 1);
	http_conn_feed(c, (const char *)in + cut, n - cut);
	assert_int_equal(fx.ws_msgs, 1);
	ws_set_reading(fx.ws, true);
	assert_int_equal(fx.ws_msgs, 2);
	ws_set_reading(fx.ws, true);
	assert_int_equal(fx.ws_msgs, 3);
	out = http_conn_test_output(c, &len);
	body = strstr(out, "\r\n\r\n") + 4;
	assert_int_equal(len - (size_t)(body - out), 9);
	assert_memory_equal(body,
	                    "\x81\x01"
	                    "a\x81\x01"
	                    "b\x81\x01"
	                    "c",
	                    9);
	http_conn_test_free(c);
	assert_int_equal(fx.ws_closes, 1);
	assert_int_equal(fx.ws_code, 1006);
}

/* ---- TLS ------------------------------------------------------------------ */

/* Connects c over TLS, trusting cert and checking the name "localhost". */
static void
tls_open(struct fx *fx, struct cli *c, const char *cert)
{
	cli_open(fx, c, false);
	c->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(c->ctx);
	assert_int_equal(SSL_CTX_load_verify_locations(c->ctx, cert, NULL), 1);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	c->ssl = SSL_new(c->ctx);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set1_host(c->ssl, "localhost");
	int64_t end = time_mono_ms() + 5000;
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(c->ssl);
		if (r == 1)
			break;
		int e = SSL_get_error(c->ssl, r);
		assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
		assert_true(time_mono_ms() < end);
		fx_step(fx, c, 5);
	}
	assert_true(SSL_version(c->ssl) >= TLS1_2_VERSION);
}

static void
test_tls(void **state)
{
	if (system("command -v openssl >/dev/null 2>&1") != 0)
		skip();
	char *dir = testutil_tmpdir();
	char *cmd = xasprintf("cd '%s' && openssl req -x509 -newkey ec -pkeyopt "
	                      "ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem "
	                      "-days 1 -subj /CN=localhost >/dev/null 2>&1",
	                      dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	char *cert = xasprintf("%s/cert.pem", dir);
	char *key = xasprintf("%s/key.pem", dir);

	struct fx fx;
	struct cli c;
	struct http_limits l = test_limits();
	fx_start_tls(&fx, &l, cert, key);
	tls_open(&fx, &c, cert);
	cli_sends(&fx, &c, "GET /echo?n=5 HTTP/1.1\r\nHost: localhost\r\n\r\n");
	wait_resp(&fx, &c, 1);
	assert_int_equal(c.r[0].status, 200);
	assert_string_equal(buf_cstr(&c.r[0].body), "path=/echo n=5 name=(null) body=");
	cli_sends(&fx, &c,
	          "POST /echo?n=6 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
	          "Connection: close\r\n\r\nabc");
	wait_resp(&fx, &c, 2);
	assert_string_equal(buf_cstr(&c.r[1].body), "path=/echo n=6 name=(null) body=abc");
	wait_eof(&fx, &c);
	cli_close(&c);

	/* a WebSocket over TLS */
	tls_open(&fx, &c, cert);
	ws_handshake(&fx, &c);
	uint8_t fr[64];
	struct frame f;
	size_t n = ws_frame(fr, true, 1, true, "secret", 6);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_string_equal(f.payload, "secret");
	n = ws_frame(fr, true, 8, true, "\x03\xe8", 2);
	cli_send(&fx, &c, fr, n);
	wait_frame(&fx, &c, &f);
	assert_int_equal(close_code(&f), 1000);
	wait_eof(&fx, &c);
	assert_true(wait_int(&fx, &c, &fx.ws_closes, 1, 3000));
	cli_close(&c);

	/* plain HTTP to a TLS port goes nowhere */
	cli_open(&fx, &c, false);
	cli_sends(&fx, &c, "GET / HTTP/1.1\r\n\r\n");
	wait_eof(&fx, &c);
	assert_int_equal(c.n, 0);
	cli_close(&c);
	fx_finish(&fx);

	/* a key that is not PEM is named in the error */
	char *bad = testutil_write(dir, "bad.pem", "not a key\n");
	struct http_server_opts o = {
	    .host = "127.0.0.1", .tls_cert = cert, .tls_key = bad, .handler = handler};
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct http_server *s;
	char *cause = NULL;
	assert_int_equal(http_server_start(&loop, &o, &s, &cause), -1);
	assert_non_null(strstr(cause, "tls_key "));
	assert_non_null(strstr(cause, "bad.pem"));
	free(cause);
	o.tls_cert = bad;
	o.tls_key = key;
	assert_int_equal(http_server_start(&loop, &o, &s, &cause), -1);
	assert_non_null(strstr(cause, "tls_cert "));
	free(cause);
	cmd = xasprintf("cd '%s' && openssl genpkey -algorithm ec -pkeyopt "
	                "ec_paramgen_curve:prime256v1 -out key2.pem >/dev/null 2>&1",
	                dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	char *key2 = xasprintf("%s/key2.pem", dir);
	o.tls_cert = cert;
	o.tls_key = key2;
	assert_int_equal(http_server_start(&loop, &o, &s, &cause), -1);
	char *want = xasprintf("tls_key %s does not match tls_cert %s", key2, cert);
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	free(key2);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	free(bad);
	free(cert);
	free(key);
	testutil_rmdir(dir);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN); /* as src/main.c: libuv writes with write(2) */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_query),
	    cmocka_unit_test(test_keepalive),
	    cmocka_unit_test(test_pipelining),
	    cmocka_unit_test(test_post_body),
	    cmocka_unit_test(test_chunked),
	    cmocka_unit_test(test_bad_request),
	    cmocka_unit_test(test_body_too_large),
	    cmocka_unit_test(test_headers_too_large),
	    cmocka_unit_test(test_slow_client),
	    cmocka_unit_test(test_idle_close),
	    cmocka_unit_test(test_max_connections),
	    cmocka_unit_test(test_stop_with_pending),
	    cmocka_unit_test(test_start_errors),
	    cmocka_unit_test(test_feed_bytewise),
	    cmocka_unit_test(test_query_param),
	    cmocka_unit_test(test_ws_echo),
	    cmocka_unit_test(test_ws_unmasked),
	    cmocka_unit_test(test_ws_bad_control),
	    cmocka_unit_test(test_ws_too_big),
	    cmocka_unit_test(test_ws_server_close),
	    cmocka_unit_test(test_ws_backpressure),
	    cmocka_unit_test(test_ws_disappear),
	    cmocka_unit_test(test_ws_stop_and_bad_upgrade),
	    cmocka_unit_test(test_ws_feed),
	    cmocka_unit_test(test_ws_feed_pieces),
	    cmocka_unit_test(test_tls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
