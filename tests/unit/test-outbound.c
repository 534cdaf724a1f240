/* test-outbound.c — the outbound connection manager against a real local
 * HTTP server (tests/helpers/httpstub.py, started once for the group): plain
 * and streamed responses, retries (5xx, 429 with Retry-After, connection
 * refused), timeouts, cut-off responses, cancellation, rate limits, health
 * checks, keep-alive reuse, metrics, the `services` command, and that no
 * secret reaches the log.  Each test has its own loop, which must close
 * cleanly (no handle left behind). */
#include "testutil.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <uv.h>

#include "log.h"
#include "outbound.h"
#include "util.h"

/* ---- the orchestrator getter the command uses (stubbed) ----------------- */

struct outbound *orch_outbound(struct orch *o);
static struct outbound *stub_ob;

struct outbound *
orch_outbound(struct orch *o)
{
	(void)o;
	return stub_ob;
}

/* ---- the stub server -------------------------------------------------- */

static pid_t stub_pid = -1;
static int stub_stdin = -1;
static int stub_port;
static char stub_base[64];

/* Returns the path of httpstub.py, or NULL. */
static char *
stub_script(void)
{
	const char *cands[4];
	size_t n = 0;
	const char *top = getenv("top_srcdir");
	if (top != NULL && *top != '\0')
		cands[n++] = top;
#ifdef DREAMOS_SRCDIR
	cands[n++] = DREAMOS_SRCDIR;
#endif
	cands[n++] = ".";
	cands[n++] = "..";
	for (size_t i = 0; i < n; i++) {
		char *p = xasprintf("%s/tests/helpers/httpstub.py", cands[i]);
		if (access(p, R_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

/* Starts the stub and reads its port; its stdin is our pipe, so it exits
 * when we do. */
static int
group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	char *script = stub_script();
	if (script == NULL) {
		fprintf(stderr,
		        "test-outbound: tests/helpers/httpstub.py not found (set top_srcdir)\n");
		return -1;
	}
	const char *py = getenv("PYTHON3");
	if (py == NULL || *py == '\0')
		py = "python3";
	int in[2], out[2];
	if (pipe(in) != 0 || pipe(out) != 0)
		return -1;
	stub_pid = fork();
	if (stub_pid < 0)
		return -1;
	if (stub_pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execlp(py, py, script, (char *)NULL);
		_exit(127);
	}
	free(script);
	close(in[0]);
	close(out[1]);
	stub_stdin = in[1];
	char line[32] = "";
	size_t got = 0;
	while (got < sizeof line - 1 && strchr(line, '\n') == NULL) {
		struct pollfd pfd = {.fd = out[0], .events = POLLIN};
		if (poll(&pfd, 1, 10000) <= 0)
			break;
		ssize_t r = read(out[0], line + got, sizeof line - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		line[got] = '\0';
	}
	close(out[0]);
	stub_port = atoi(line);
	if (stub_port <= 0) {
		fprintf(stderr, "test-outbound: the stub server did not start (%s)\n", py);
		return -1;
	}
	snprintf(stub_base, sizeof stub_base, "http://127.0.0.1:%d", stub_port);
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	if (stub_stdin >= 0)
		close(stub_stdin);
	if (stub_pid > 0) {
		kill(stub_pid, SIGTERM);
		waitpid(stub_pid, NULL, 0);
	}
	return 0;
}

/* Returns stub_base + path (static, rotating buffers). */
static const char *
url(const char *path)
{
	static char bufs[8][256];
	static int i;
	char *b = bufs[i++ % 8];
	snprintf(b, sizeof bufs[0], "%s%s", stub_base, path);
	return b;
}

/* ---- a loop, a log and a manager per test ------------------------------- */

struct fx {
	uv_loop_t loop;
	uv_timer_t tick; /* keeps UV_RUN_ONCE from sleeping for ever */
	struct logmgr *lm;
	struct outbound *ob;
};

static void
tick_cb(uv_timer_t *t)
{
	(void)t;
}

static void
fx_init(struct fx *f, int retries, double delay)
{
	assert_int_equal(uv_loop_init(&f->loop), 0);
	uv_timer_init(&f->loop, &f->tick);
	uv_timer_start(&f->tick, tick_cb, 20, 20);
	struct log_opts lo = {.level = LVL_DEBUG, .ring_size = 1000};
	f->lm = logmgr_new(&lo);
	if (getenv("TEST_OUTBOUND_LOG") != NULL) /* to watch the log lines */
		logmgr_set_stderr(f->lm, true);
	f->ob = outbound_new(&f->loop, f->lm, retries, delay);
	assert_non_null(f->ob);
	stub_ob = f->ob;
}

/* Frees the manager (unless already freed), runs the loop until every
 * handle is closed and checks nothing is left. */
static void
fx_done(struct fx *f)
{
	outbound_free(f->ob);
	stub_ob = NULL;
	uv_close((uv_handle_t *)&f->tick, NULL);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	logmgr_free(f->lm);
}

/* Runs the loop until *counter reaches target or max_s pass.  Returns the
 * seconds it took. */
static double
run_until(struct fx *f, const int *counter, int target, double max_s)
{
	uint64_t t0 = uv_hrtime();
	while (*counter < target && (double)(uv_hrtime() - t0) / 1e9 < max_s)
		uv_run(&f->loop, UV_RUN_ONCE);
	return (double)(uv_hrtime() - t0) / 1e9;
}

/* Runs the loop for s seconds. */
static void
run_for(struct fx *f, double s)
{
	int never = 0;
	run_until(f, &never, 1, s);
}

/* What a request ended with. */
struct result {
	int done;
	long status;
	char *body;
	size_t body_len;
	char *error;
	double seconds;
	int attempts;
	char *content_type;
	struct buf chunks;
	int nchunks;
	int chunks_after_done;
	struct outbound *cancel_in_chunk; /* cancel own id from on_chunk */
	uint64_t id;
};

static void
result_init(struct result *r)
{
	memset(r, 0, sizeof *r);
	buf_init(&r->chunks);
}

static void
result_clear(struct result *r)
{
	free(r->body);
	free(r->error);
	free(r->content_type);
	buf_free(&r->chunks);
	memset(r, 0, sizeof *r);
}

static void
on_done(void *arg, const struct outbound_resp *resp)
{
	struct result *r = arg;
	r->done++;
	r->status = resp->status;
	assert_non_null(resp->body);
	r->body = xstrndup(resp->body, resp->body_len);
	r->body_len = resp->body_len;
	r->error = resp->error ? xstrdup(resp->error) : NULL;
	r->seconds = resp->seconds;
	r->attempts = resp->attempts;
	const char *ct = outbound_resp_header(resp, "content-type");
	r->content_type = ct ? xstrdup(ct) : NULL;
}

static void
on_chunk(void *arg, const char *data, size_t len)
{
	struct result *r = arg;
	if (r->done)
		r->chunks_after_done++;
	buf_add(&r->chunks, data, len);
	r->nchunks++;
	if (r->cancel_in_chunk != NULL)
		assert_true(outbound_cancel(r->cancel_in_chunk, r->id));
}

/* Starts a GET of path with options. */
static uint64_t
get(struct fx *f, const char *path, struct result *r, int retries, double timeout)
{
	struct outbound_req req = {
	    .method = "GET", .url = url(path), .timeout_s = timeout, .max_retries = retries};
	return outbound_request(f->ob, &req, on_done, NULL, r);
}

/* True if some log record's message contains s. */
static bool
log_has(struct logmgr *lm, const char *s)
{
	for (size_t i = 0; i < logmgr_ring_count(lm); i++)
		if (strstr(logmgr_ring_get(lm, i)->msg, s) != NULL)
			return true;
	return false;
}

/* ---- tests ------------------------------------------------------------ */

static void
test_get_json(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 2, 0.05);
	struct result r;
	result_init(&r);
	uint64_t id = get(&f, "/json", &r, -1, 5);
	assert_true(id > 0);
	assert_int_equal(r.done, 0); /* never from inside outbound_request */
	assert_int_equal(outbound_pending(f.ob), 1);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.status, 200);
	assert_null(r.error);
	assert_int_equal(r.attempts, 1);
	assert_non_null(strstr(r.body, "\"ok\": true"));
	assert_int_equal(r.body_len, strlen(r.body));
	assert_string_equal(r.content_type, "application/json");
	assert_int_equal(outbound_pending(f.ob), 0);
	assert_false(outbound_cancel(f.ob, id)); /* finished */

	/* Metrics, under the URL's host. */
	json_t *m = outbound_metrics_json(f.ob);
	json_t *s = json_object_get(json_object_get(m, "services"), "127.0.0.1");
	assert_non_null(s);
	assert_int_equal(json_integer_value(json_object_get(s, "requests")), 1);
	assert_int_equal(json_integer_value(json_object_get(s, "failures")), 0);
	assert_int_equal(json_integer_value(json_object_get(s, "latency_count")), 1);
	assert_true(json_integer_value(json_object_get(s, "bytes_received")) > 10);
	json_decref(m);
	result_clear(&r);
	fx_done(&f);
}

static void
test_post_echo_no_secrets(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 2, 0.05);
	struct result r;
	result_init(&r);
	const char *headers[] = {"Authorization: Bearer sk-SECRETHEADER12345",
	                         "Content-Type: application/json", "X-Test: hello", NULL};
	const char *body = "{\"prompt\":\"hi\"}";
	struct outbound_req req = {.method = "POST",
	                           .url = url("/echo?api_key=SECRETQUERY"),
	                           .headers = headers,
	                           .body = body,
	                           .body_len = strlen(body),
	                           .timeout_s = 5,
	                           .max_retries = -1,
	                           .owner = "chatgpt",
	                           .service = "openai"};
	outbound_request(f.ob, &req, on_done, NULL, &r);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 200);
	assert_null(r.error);
	json_t *j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
	assert_string_equal(json_string_value(json_object_get(j, "query")), "api_key=SECRETQUERY");
	assert_string_equal(json_string_value(json_object_get(j, "body")), body);
	json_t *h = json_object_get(j, "headers");
	assert_string_equal(json_string_value(json_object_get(h, "x-test")), "hello");
	assert_string_equal(json_string_value(json_object_get(h, "content-type")),
	                    "application/json");
	assert_string_equal(json_string_value(json_object_get(h, "authorization")),
	                    "Bearer sk-SECRETHEADER12345");
	assert_null(json_object_get(h, "expect"));
	json_decref(j);

	/* The service bucket, and the log: method, host and path, no secrets. */
	json_t *m = outbound_metrics_json(f.ob);
	json_t *s = json_object_get(json_object_get(m, "services"), "openai");
	assert_int_equal(json_integer_value(json_object_get(s, "requests")), 1);
	assert_int_equal(json_integer_value(json_object_get(s, "bytes_sent")), strlen(body));
	json_decref(m);
	char where[64];
	snprintf(where, sizeof where, "POST 127.0.0.1:%d/echo", stub_port);
	assert_true(log_has(f.lm, where));
	assert_false(log_has(f.lm, "SECRET"));
	assert_false(log_has(f.lm, "api_key"));
	result_clear(&r);

	/* A token in the path (a Discord webhook) is not logged either. */
	result_init(&r);
	get(&f, "/webhooks/1234567890/TOKENx9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1", &r, 0, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 404);
	assert_true(log_has(f.lm, "/webhooks/1234567890/[redacted]"));
	assert_false(log_has(f.lm, "TOKENx"));
	result_clear(&r);
	fx_done(&f);
}

/* Collects SSE events as "type=data;" text. */
static void
sse_event(void *arg, const char *event, const char *data, size_t len)
{
	struct buf *b = arg;
	assert_int_equal(strlen(data), len);
	buf_addf(b, "%s=%s;", event, data);
}

struct sse_stream {
	struct result r;
	struct outbound_sse *parser;
	struct buf events;
};

static void
sse_chunk(void *arg, const char *data, size_t len)
{
	struct sse_stream *s = arg;
	on_chunk(&s->r, data, len);
	outbound_sse_feed(s->parser, data, len);
}

static void
sse_done(void *arg, const struct outbound_resp *resp)
{
	struct sse_stream *s = arg;
	on_done(&s->r, resp);
}

static void
test_sse_stream(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	struct sse_stream s;
	result_init(&s.r);
	buf_init(&s.events);
	s.parser = outbound_sse_new(sse_event, &s.events);
	const char *headers[] = {"Accept: text/event-stream", NULL};
	struct outbound_req req = {.method = "GET",
	                           .url = url("/sse?n=4&delay=0.05"),
	                           .headers = headers,
	                           .timeout_s = 10,
	                           .max_retries = -1};
	outbound_request(f.ob, &req, sse_done, sse_chunk, &s);
	run_until(&f, &s.r.done, 1, 5);
	assert_int_equal(s.r.status, 200);
	assert_null(s.r.error);
	assert_int_equal(s.r.body_len, 0); /* streamed, not collected */
	assert_int_equal(s.r.chunks_after_done, 0);
	assert_true(s.r.nchunks >= 2); /* it did arrive in pieces */
	assert_string_equal(buf_cstr(&s.r.chunks), "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
	                                           "data: [DONE]\n\n");
	assert_string_equal(buf_cstr(&s.events),
	                    "message=0;message=1;message=2;message=3;message=[DONE];");
	assert_string_equal(s.r.content_type, "text/event-stream");
	outbound_sse_free(s.parser);
	buf_free(&s.events);
	result_clear(&s.r);

	/* A stream cut in the middle is not retried: what was streamed stays. */
	result_init(&s.r);
	buf_init(&s.events);
	s.parser = outbound_sse_new(sse_event, &s.events);
	req.url = url("/sse?n=2&delay=0.02&cut=1");
	outbound_request(f.ob, &req, sse_done, sse_chunk, &s);
	run_until(&f, &s.r.done, 1, 5);
	assert_int_equal(s.r.done, 1);
	assert_int_equal(s.r.attempts, 1);
	assert_int_equal(s.r.status, 200);
	assert_non_null(s.r.error);
	assert_string_equal(buf_cstr(&s.events), "message=0;message=1;");
	outbound_sse_free(s.parser);
	buf_free(&s.events);
	result_clear(&s.r);
	fx_done(&f);
}

static void
test_sse_parser(void **state)
{
	(void)state;
	struct buf ev;
	buf_init(&ev);
	struct outbound_sse *p = outbound_sse_new(sse_event, &ev);
	const char *text = ": a comment\r\n"
	                   "event: delta\r\n"
	                   "data: {\"a\":1}\r\n"
	                   "data:second line\r\n"
	                   "\r\n"
	                   "id: 7\n"
	                   "data\n"
	                   "\n"
	                   "event: nodata\n"
	                   "\n"
	                   "data: x\r"
	                   "\r"
	                   "data: last\n\n";
	/* Fed one byte at a time: boundaries never matter. */
	for (size_t i = 0; text[i] != '\0'; i++)
		outbound_sse_feed(p, text + i, 1);
	assert_string_equal(buf_cstr(&ev), "delta={\"a\":1}\nsecond line;message=;message=x;"
	                                   "message=last;");
	/* An unfinished event is not delivered. */
	outbound_sse_feed(p, "data: pending\n", 14);
	assert_string_equal(buf_cstr(&ev), "delta={\"a\":1}\nsecond line;message=;message=x;"
	                                   "message=last;");
	outbound_sse_free(p);
	buf_free(&ev);
}

static void
test_retry_5xx(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	struct result r;
	result_init(&r);
	get(&f, "/flaky?key=r500&fail=1&status=500", &r, -1, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 200);
	assert_null(r.error);
	assert_int_equal(r.attempts, 2);
	assert_non_null(strstr(r.body, "\"hit\": 2"));
	result_clear(&r);

	/* Always 503, one retry allowed: the error and the last body. */
	result_init(&r);
	get(&f, "/status/503", &r, 1, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.attempts, 2);
	assert_string_equal(r.error, "HTTP 503 Service Unavailable");
	assert_non_null(strstr(r.body, "503"));
	result_clear(&r);

	/* A 4xx is not retried. */
	result_init(&r);
	get(&f, "/status/404", &r, -1, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.attempts, 1);
	assert_string_equal(r.error, "HTTP 404 Not Found");
	result_clear(&r);

	json_t *m = outbound_metrics_json(f.ob);
	json_t *s = json_object_get(json_object_get(m, "services"), "127.0.0.1");
	assert_int_equal(json_integer_value(json_object_get(s, "requests")), 3);
	assert_int_equal(json_integer_value(json_object_get(s, "retries")), 2);
	assert_int_equal(json_integer_value(json_object_get(s, "failures")), 2);
	json_decref(m);
	fx_done(&f);
}

static void
test_retry_429(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.01); /* the backoff alone would be 10 ms */
	struct result r;
	result_init(&r);
	get(&f, "/ratelimit?key=r429&after=1", &r, -1, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 200);
	assert_null(r.error);
	assert_int_equal(r.attempts, 2);
	assert_true(r.seconds >= 0.9);
	assert_true(r.seconds < 3);
	assert_true(log_has(f.lm, "Retry-After"));
	result_clear(&r);
	fx_done(&f);
}

static void
test_timeout(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	struct result r;
	result_init(&r);
	get(&f, "/slow?delay=2", &r, 0, 0.3);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.done, 1);
	assert_string_equal(r.error, "timeout after 0.3 s");
	assert_int_equal(r.attempts, 1);
	assert_true(r.seconds >= 0.25 && r.seconds < 1.5);
	result_clear(&r);
	fx_done(&f);
}

static void
test_refused(void **state)
{
	(void)state;
	/* A port nobody listens on: bind one, note it, close it. */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
	int port = ntohs(sa.sin_port);
	close(s);

	struct fx f;
	fx_init(&f, 2, 0.02);
	struct result r;
	result_init(&r);
	char u[64];
	snprintf(u, sizeof u, "http://127.0.0.1:%d/x", port);
	struct outbound_req req = {.url = u, .timeout_s = 2, .max_retries = -1};
	outbound_request(f.ob, &req, on_done, NULL, &r);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.attempts, 3); /* 1 + retry_attempts */
	assert_non_null(r.error);
	assert_non_null(strstr(r.error, "connection refused"));
	assert_true(r.seconds >=
	            0.05); /* 0.02 + 0.04 of backoff, less the loop clock's granularity */
	result_clear(&r);
	fx_done(&f);
}

static void
test_cut_off(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.02);
	struct result r;
	result_init(&r);
	get(&f, "/cut", &r, 0, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.error, "response cut off before its end");
	result_clear(&r);

	/* Not streamed: retried until the attempts run out. */
	result_init(&r);
	get(&f, "/cut", &r, 2, 5);
	run_until(&f, &r.done, 1, 5);
	assert_int_equal(r.attempts, 3);
	assert_non_null(r.error);
	result_clear(&r);
	fx_done(&f);
}

static void
test_invalid(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.02);
	struct result r1, r2, r3;
	result_init(&r1);
	result_init(&r2);
	result_init(&r3);
	struct outbound_req req = {.url = "ftp://example.com/x?token=SECRETQ"};
	assert_true(outbound_request(f.ob, &req, on_done, NULL, &r1) > 0);
	const char *bad[] = {"X-Evil: a\r\nX-Injected: b", NULL};
	struct outbound_req req2 = {.url = url("/json"), .headers = bad};
	outbound_request(f.ob, &req2, on_done, NULL, &r2);
	struct outbound_req req3 = {.method = "G ET", .url = url("/json")};
	outbound_request(f.ob, &req3, on_done, NULL, &r3);
	assert_int_equal(r1.done + r2.done + r3.done, 0);
	run_until(&f, &r3.done, 1, 2);
	assert_int_equal(r1.done + r2.done + r3.done, 3);
	assert_non_null(strstr(r1.error, "invalid URL"));
	assert_non_null(strstr(r2.error, "invalid header"));
	assert_non_null(strstr(r3.error, "invalid HTTP method"));
	assert_int_equal(r1.attempts, 0);
	assert_false(log_has(f.lm, "SECRETQ"));
	result_clear(&r1);
	result_clear(&r2);
	result_clear(&r3);
	fx_done(&f);
}

static void
test_cancel(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.5);
	assert_int_equal(outbound_add_service(f.ob, "slowsvc", stub_base, NULL, 0, 1), 0);
	struct result queued_ok, rq[6];
	result_init(&queued_ok);
	for (int i = 0; i < 6; i++)
		result_init(&rq[i]);

	/* Cancelled before it started. */
	uint64_t a = get(&f, "/slow?delay=0.3", &rq[0], 0, 5);
	assert_true(outbound_cancel(f.ob, a));
	assert_false(outbound_cancel(f.ob, a));
	/* Cancelled in flight. */
	uint64_t b = get(&f, "/slow?delay=0.3", &rq[1], 0, 5);

	/* An owner's requests: in flight, waiting for a retry (503, 0.5 s of
	 * backoff), and queued behind the rate limit (1/s, the first token
	 * taken by queued_ok). */
	struct outbound_req first = {.url = url("/json"), .service = "slowsvc", .owner = "other"};
	outbound_request(f.ob, &first, on_done, NULL, &queued_ok);
	struct outbound_req e1 = {.url = url("/slow?delay=0.3"), .owner = "ext", .timeout_s = 5};
	struct outbound_req e2 = {
	    .url = url("/status/503"), .owner = "ext", .timeout_s = 5, .max_retries = -1};
	struct outbound_req e3 = {.url = url("/json"), .owner = "ext", .service = "slowsvc"};
	outbound_request(f.ob, &e1, on_done, NULL, &rq[2]);
	outbound_request(f.ob, &e2, on_done, NULL, &rq[3]);
	outbound_request(f.ob, &e3, on_done, NULL, &rq[4]);
	run_for(&f, 0.15); /* everything has started or is waiting */
	assert_true(outbound_cancel(f.ob, b));
	assert_int_equal(outbound_cancel_owner(f.ob, "ext"), 3);
	assert_int_equal(outbound_cancel_owner(f.ob, "ext"), 0);
	assert_int_equal(outbound_pending(f.ob), 0);
	assert_int_equal(queued_ok.done, 1);

	/* Cancelling itself from on_chunk: no done callback. */
	rq[5].cancel_in_chunk = f.ob;
	struct outbound_req st = {.url = url("/sse?n=5&delay=0.05"), .timeout_s = 5};
	rq[5].id = outbound_request(f.ob, &st, on_done, on_chunk, &rq[5]);
	run_for(&f, 0.8);
	for (int i = 0; i < 6; i++)
		assert_int_equal(rq[i].done, 0);
	assert_int_equal(rq[5].nchunks, 1);
	assert_int_equal(outbound_pending(f.ob), 0);
	for (int i = 0; i < 6; i++)
		result_clear(&rq[i]);
	result_clear(&queued_ok);
	fx_done(&f);
}

/* Frees the manager from inside a done callback. */
static void
free_in_done(void *arg, const struct outbound_resp *resp)
{
	struct fx *f = arg;
	(void)resp;
	outbound_free(f->ob);
	stub_ob = NULL;
}

static void
test_free_in_callback(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	struct result other;
	result_init(&other);
	struct outbound_req r1 = {.url = url("/json")};
	struct outbound_req r2 = {.url = url("/slow?delay=0.5")};
	outbound_request(f.ob, &r1, free_in_done, NULL, &f);
	outbound_request(f.ob, &r2, on_done, NULL, &other);
	run_for(&f, 0.8);
	assert_int_equal(other.done, 0);
	/* The manager is gone; only the loop's tick is left. */
	f.ob = NULL;
	result_clear(&other);
	fx_done(&f);
}

static void
test_rate_limit(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	assert_int_equal(outbound_add_service(f.ob, "rl", stub_base, NULL, 0, 5), 0);
	struct result r[10];
	int done = 0;
	uint64_t t0 = uv_hrtime();
	for (int i = 0; i < 10; i++) {
		result_init(&r[i]);
		struct outbound_req req = {.url = url("/json"), .service = "rl", .timeout_s = 5};
		outbound_request(f.ob, &req, on_done, NULL, &r[i]);
	}
	while (done < 10 && (double)(uv_hrtime() - t0) / 1e9 < 6) {
		uv_run(&f.loop, UV_RUN_ONCE);
		done = 0;
		for (int i = 0; i < 10; i++)
			done += r[i].done;
	}
	double took = (double)(uv_hrtime() - t0) / 1e9;
	assert_int_equal(done, 10);
	assert_true(took >= 1.6);
	assert_true(took < 4);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(r[i].status, 200);
		assert_true(r[i].seconds >= 0.19 * i);
		result_clear(&r[i]);
	}
	json_t *m = outbound_metrics_json(f.ob);
	json_t *s = json_object_get(json_object_get(m, "services"), "rl");
	assert_int_equal(json_integer_value(json_object_get(s, "requests")), 10);
	assert_int_equal(json_integer_value(json_object_get(s, "rate_limited")), 9);
	assert_int_equal(json_integer_value(json_object_get(m, "queued")), 0);
	json_decref(m);
	fx_done(&f);
}

/* Runs the loop until svc's health is h (or max_s pass). */
static void
run_until_health(struct fx *f, const char *svc, enum outbound_health h, double max_s)
{
	uint64_t t0 = uv_hrtime();
	while (outbound_service_health(f->ob, svc) != h && (double)(uv_hrtime() - t0) / 1e9 < max_s)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_string_equal(outbound_health_name(outbound_service_health(f->ob, svc)),
	                    outbound_health_name(h));
}

/* Sets the stub's health through a request and waits for the answer. */
static void
set_stub_health(struct fx *f, bool up)
{
	struct result r;
	result_init(&r);
	get(f, up ? "/health/set?up=1" : "/health/set?up=0", &r, 0, 5);
	run_until(f, &r.done, 1, 5);
	assert_int_equal(r.status, 200);
	result_clear(&r);
}

/* Runs the `services` command as the command layer would. */
static char *
run_services_cmd(enum cmd_retval *rv, char **error)
{
	assert_int_equal(outbound_cmd_count, 1);
	const struct cmd_entry *e = &outbound_cmd_entries[0];
	assert_string_equal(e->name, "services");
	struct cmd_ctx ctx = {.entry = e};
	*rv = e->exec(&ctx);
	*error = ctx.error;
	struct buf out;
	buf_init(&out);
	if (*rv == CMD_OK)
		e->print(&ctx, ctx.result, &out);
	json_decref(ctx.result);
	char *s = xstrdup(out.len ? buf_cstr(&out) : "");
	buf_free(&out);
	return s;
}

static void
test_health(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	enum cmd_retval rv;
	char *err, *text;
	text = run_services_cmd(&rv, &err);
	assert_int_equal(rv, CMD_OK);
	assert_string_equal(text, "no outbound services\n");
	free(text);

	assert_int_equal(outbound_add_service(f.ob, "bad", "not a url", NULL, 1, 0), -1);
	assert_int_equal(outbound_add_service(f.ob, "stub", stub_base, "/health", 0.2, 0), 0);
	assert_int_equal(outbound_service_health(f.ob, "stub"), OUTBOUND_UNKNOWN);
	run_until_health(&f, "stub", OUTBOUND_UP, 3);

	set_stub_health(&f, false);
	run_until_health(&f, "stub", OUTBOUND_DOWN, 3);
	json_t *svcs = outbound_services_json(f.ob);
	json_t *row = NULL;
	for (size_t i = 0; i < json_array_size(svcs); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(svcs, i), "name")),
		           "stub") == 0)
			row = json_array_get(svcs, i);
	assert_non_null(row);
	assert_string_equal(json_string_value(json_object_get(row, "state")), "down");
	assert_int_equal(json_integer_value(json_object_get(row, "status")), 503);
	assert_string_equal(json_string_value(json_object_get(row, "last_error")),
	                    "HTTP 503 Service Unavailable");
	assert_string_equal(json_string_value(json_object_get(row, "health_path")), "/health");
	assert_true(json_is_number(json_object_get(row, "latency_ms")));
	assert_true(json_integer_value(json_object_get(row, "checks")) >= 2);
	json_decref(svcs);
	assert_true(log_has(f.lm, "service stub is down: HTTP 503"));

	text = run_services_cmd(&rv, &err);
	assert_int_equal(rv, CMD_OK);
	assert_non_null(strstr(text, "NAME"));
	assert_non_null(strstr(text, "stub"));
	assert_non_null(strstr(text, "down"));
	assert_non_null(strstr(text, "HTTP 503"));
	free(text);

	set_stub_health(&f, true);
	run_until_health(&f, "stub", OUTBOUND_UP, 3);
	assert_true(log_has(f.lm, "service stub is up"));

	/* Without a manager the command fails with a clear error. */
	stub_ob = NULL;
	text = run_services_cmd(&rv, &err);
	assert_int_equal(rv, CMD_ERROR);
	assert_non_null(strstr(err, "not running"));
	free(err);
	free(text);
	fx_done(&f);
}

/* Sequential requests: each starts from the previous one's done. */
struct chain {
	struct fx *f;
	int done;
	long conns[5];
};

static void
chain_done(void *arg, const struct outbound_resp *resp)
{
	struct chain *c = arg;
	assert_int_equal(resp->status, 200);
	json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
	c->conns[c->done++] = (long)json_integer_value(json_object_get(j, "conn"));
	json_decref(j);
	if (c->done < 5) {
		struct outbound_req req = {.url = url("/conn")};
		outbound_request(c->f->ob, &req, chain_done, NULL, c);
	}
}

static void
test_keepalive(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 3, 0.05);
	struct chain c = {.f = &f};
	struct outbound_req req = {.url = url("/conn")};
	outbound_request(f.ob, &req, chain_done, NULL, &c);
	run_until(&f, &c.done, 5, 5);
	assert_int_equal(c.done, 5);
	for (int i = 1; i < 5; i++)
		assert_int_equal(c.conns[i], c.conns[0]); /* one connection, reused */
	fx_done(&f);
}

/* Other methods reach the server as themselves, with or without a body. */
static void
test_methods(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 0, 0);
	static const char *const methods[] = {"PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
	struct result r[5];
	for (int i = 0; i < 5; i++) {
		result_init(&r[i]);
		struct outbound_req req = {.method = methods[i],
		                           .url = url("/echo"),
		                           .body = i < 2 ? "x=1" : NULL,
		                           .body_len = i < 2 ? 3 : 0,
		                           .timeout_s = 5};
		outbound_request(f.ob, &req, on_done, NULL, &r[i]);
	}
	run_until(&f, &r[4].done, 1, 5);
	for (int i = 0; i < 5; i++) {
		run_until(&f, &r[i].done, 1, 5);
		assert_int_equal(r[i].status, 200);
		if (strcmp(methods[i], "HEAD") == 0) {
			assert_int_equal(r[i].body_len, 0);
			continue;
		}
		json_t *j = json_loads(r[i].body, 0, NULL);
		assert_string_equal(json_string_value(json_object_get(j, "method")), methods[i]);
		assert_string_equal(json_string_value(json_object_get(j, "body")),
		                    i < 2 ? "x=1" : "");
		json_decref(j);
	}
	for (int i = 0; i < 5; i++)
		result_clear(&r[i]);
	fx_done(&f);
}

/* Many requests at once all complete, over a pool of connections. */
static void
test_parallel(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 2, 0.05);
	enum { N = 60 };
	struct result *r = xcalloc(N, sizeof *r);
	int done = 0;
	for (int i = 0; i < N; i++) {
		result_init(&r[i]);
		struct outbound_req req = {.url = url(i % 3 ? "/json" : "/sse?n=3"),
		                           .timeout_s = 10};
		outbound_request(f.ob, &req, on_done, i % 2 ? on_chunk : NULL, &r[i]);
	}
	uint64_t t0 = uv_hrtime();
	while (done < N && (double)(uv_hrtime() - t0) / 1e9 < 8) {
		uv_run(&f.loop, UV_RUN_ONCE);
		done = 0;
		for (int i = 0; i < N; i++)
			done += r[i].done;
	}
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r[i].status, 200);
		assert_null(r[i].error);
		if (i % 3 == 0)
			assert_non_null(
			    strstr(i % 2 ? buf_cstr(&r[i].chunks) : r[i].body, "[DONE]"));
		result_clear(&r[i]);
	}
	free(r);
	fx_done(&f);
}

int
main(void)
{
	/* clang-format off */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_json),
	    cmocka_unit_test(test_post_echo_no_secrets),
	    cmocka_unit_test(test_sse_stream),
	    cmocka_unit_test(test_sse_parser),
	    cmocka_unit_test(test_retry_5xx),
	    cmocka_unit_test(test_retry_429),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_cut_off),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_free_in_callback),
	    cmocka_unit_test(test_rate_limit),
	    cmocka_unit_test(test_health),
	    cmocka_unit_test(test_keepalive),
	    cmocka_unit_test(test_methods),
	    cmocka_unit_test(test_parallel),
	};
	/* clang-format on */
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
