/* outbound.c — the outbound connection manager: libcurl's multi interface
 * on the libuv loop, retries, per-service rate limits, health checks and
 * metrics.  See outbound.h.
 *
 * How it runs.  One CURLM handle holds every transfer and the connection
 * cache (so keep-alive connections are shared by all requests).  curl tells
 * us which sockets to watch (ob_sock_fn: one uv_poll_t per socket) and when
 * to call it back (ob_timer_fn: one uv_timer_t); on either event we call
 * curl_multi_socket_action and then read the finished transfers
 * (CURLMSG_DONE).  That is the pattern of libcurl's docs/examples/multi-uv.c.
 *
 * A request (struct obreq) lives from outbound_request to its done callback
 * or its cancellation, across several attempts; each attempt gets a fresh
 * easy handle (the connection, not the handle, is what is reused).  A
 * request is in one of three states:
 *
 *   RQ_DELAY   waiting until due_ms: a retry's backoff, or a request that
 *              could not be started at once (or must fail with pending_error)
 *   RQ_RATE    in its service's FIFO queue, waiting for a token
 *   RQ_ACTIVE  its easy handle is in the multi handle
 *
 * A second uv_timer_t (the scheduler) wakes up for the earliest of: a
 * delayed request, the next token of a service with a queue, the next
 * health check.  It scans the (short) lists instead of keeping a heap.
 *
 * Re-entrancy.  User callbacks (on_done, on_chunk) may call anything here,
 * including outbound_free.  Easy handles cannot be removed from inside a
 * curl callback (on_chunk runs inside one), so a cancellation there only
 * marks the request, and it is reaped when curl_multi_socket_action returns;
 * outbound_free from a callback is finished when the outermost dispatch
 * returns (ob->busy counts the nesting). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "config.h"
#include "outbound.h"
#include "util.h"

#define OB_SRC "outbound"
/* Connect timeout when a request has no total timeout, in seconds. */
#define OB_CONNECT_TIMEOUT 30.0
/* Largest response body collected in memory (a streamed one has no limit). */
#define OB_MAX_BODY (64u * 1024 * 1024)
/* Most response headers kept per attempt. */
#define OB_MAX_HEADERS 256
/* Path segments at least this long are not shown in logs (tokens). */
#define OB_REDACT_SEGMENT 32

struct outbound;
struct obsvc;

enum rq_state { RQ_DELAY, RQ_RATE, RQ_ACTIVE };

/* A socket curl asked us to watch. */
struct obsock {
	uv_poll_t poll;
	curl_socket_t fd;
	struct outbound *ob;
	struct obsock *prev, *next;
};

/* One request, across its attempts. */
struct obreq {
	struct outbound *ob;
	uint64_t id;
	struct obreq *prev, *next;   /* ob's list of live requests */
	struct obreq *qprev, *qnext; /* the service's token queue (RQ_RATE) */
	enum rq_state state;
	struct obsvc *svc;
	bool health;    /* a health check: no rate limit, no counters */
	bool cancelled; /* no callback any more; reaped when curl lets go */

	char *method, *url, *body;
	size_t body_len;
	struct curl_slist *hdrs;
	char *owner;
	char *where;    /* "GET host/path" for logs */
	char *hostport; /* "host:port" for messages */
	double timeout; /* per attempt, seconds; <= 0: none */
	int max_retries;
	int attempts;
	uint64_t start_ns;
	int64_t due_ms;
	char *pending_error; /* fail with this at due_ms */

	outbound_done_fn on_done;
	outbound_chunk_fn on_chunk;
	void *arg;

	/* The current attempt. */
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
	bool decided;   /* streaming or not, fixed at the first body byte */
	bool streaming; /* this attempt's body goes to on_chunk */
	bool streamed;  /* some body went to on_chunk: never retry */
	bool too_large;
	struct buf rbody;
	char **rhdrs;
	size_t nrhdrs;
	char *reason;   /* reason phrase of the status line */
	long os_errno;  /* errno of a failed connect or receive */
	bool connected; /* the attempt got a connection */
};

/* A service: registered with outbound_add_service, or made on the fly for a
 * service name or host that requests used. */
struct obsvc {
	struct outbound *ob;
	char *name;
	bool registered;
	char *base_url;
	char *shown_url; /* host/path for display */
	char *health_path;
	char *health_url;
	struct curl_slist *health_hdrs;
	double interval; /* seconds between health checks */
	double rate;     /* tokens per second; 0 = unlimited */
	double tokens;   /* at most ob_svc_burst() */
	int64_t refill_ms;
	struct obreq *qhead, *qtail;
	size_t nqueued;

	enum outbound_health health;
	long last_status;
	char *last_error;
	double latency_ms;
	int64_t last_check_wall;
	uint64_t checks;
	int64_t next_check_ms; /* 0: no checks */
	uint64_t health_id;    /* the check in flight, or 0 */

	size_t in_flight; /* requests of this service not finished */
	struct {
		uint64_t requests, failures, retries, rate_limited;
		uint64_t bytes_sent, bytes_received;
		uint64_t latency_count;
		double latency_sum;
	} m;
};

struct outbound {
	uv_loop_t *loop;
	struct logmgr *log;
	CURLM *multi;
	uv_timer_t curl_timer;
	uv_timer_t sched_timer;
	int open_handles; /* handles whose close callback is still due */
	int retry_attempts;
	double retry_delay;
	uint64_t next_id;

	struct obreq *rhead, *rtail;
	size_t nreqs;
	struct obsock *socks;
	struct obsvc **svcs;
	size_t nsvcs;

	int busy;       /* nesting of our dispatch from the loop */
	int in_curl;    /* inside curl_multi_socket_action */
	bool need_reap; /* cancelled requests still in the multi handle */
	bool free_pending;
	bool closing;
};

static void ob_sched_arm(struct outbound *ob);
static void ob_sched_cb(uv_timer_t *t);
static void rq_ready(struct obreq *rq);

/* ---- small helpers ---------------------------------------------------- */

/* Milliseconds on the monotonic clock. */
static int64_t
ob_now_ms(void)
{
	return (int64_t)(uv_hrtime() / 1000000);
}

/* Seconds since a uv_hrtime() reading. */
static double
ob_since(uint64_t start_ns)
{
	return (double)(uv_hrtime() - start_ns) / 1e9;
}

/* Returns true if s starts with prefix, ignoring case. */
static bool
ob_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && strncasecmp(s, prefix, n) == 0;
}

/* Formats seconds compactly ("0.5", "30", "1.25"); returns out. */
static const char *
ob_secs(double s, char *out, size_t len)
{
	snprintf(out, len, "%.3g", s);
	return out;
}

/* Returns a copy of the NULL-terminated "Name: value" lines as a curl list,
 * or sets *bad if a line holds a line break or no colon. */
static struct curl_slist *
ob_headers(const char *const *headers, bool *bad)
{
	struct curl_slist *l = NULL;
	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
		const char *h = headers[i];
		if (strpbrk(h, "\r\n") != NULL || strchr(h, ':') == NULL || h[0] == ':') {
			*bad = true;
			continue;
		}
		struct curl_slist *n = curl_slist_append(l, h);
		if (n == NULL) {
			fprintf(stderr, "dreamos: out of memory\n");
			abort();
		}
		l = n;
	}
	return l;
}

/* True if the list has a header named name (case-insensitive). */
static bool
ob_has_header(const struct curl_slist *l, const char *name)
{
	size_t n = strlen(name);
	for (; l != NULL; l = l->next)
		if (strncasecmp(l->data, name, n) == 0 && l->data[n] == ':')
			return true;
	return false;
}

/* Parses an http(s) URL.  Returns "host[:port]/path" for logs (no scheme,
 * user, query or fragment; path segments of OB_REDACT_SEGMENT or more
 * characters replaced by "[redacted]"), and sets *host and *hostport (all
 * three for the caller to free); or returns NULL if url is not a valid
 * http:// or https:// URL. */
static char *
ob_url_parse(const char *url, char **host, char **hostport)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *h = NULL, *port = NULL, *path = NULL, *shown = NULL;
	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0))
		goto out;
	if (curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK || h[0] == '\0')
		goto out;
	curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent when not given */
	if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
		path = NULL;

	struct buf b;
	buf_init(&b);
	buf_adds(&b, h);
	if (port != NULL)
		buf_addf(&b, ":%s", port);
	const char *p = path != NULL ? path : "/";
	while (*p != '\0') {
		if (*p == '/') {
			buf_add(&b, "/", 1);
			p++;
			continue;
		}
		size_t n = strcspn(p, "/");
		if (n >= OB_REDACT_SEGMENT)
			buf_adds(&b, "[redacted]");
		else
			buf_add(&b, p, n);
		p += n;
	}
	shown = xstrdup(buf_cstr(&b));
	buf_free(&b);
	if (host != NULL)
		*host = xstrdup(h);
	if (hostport != NULL) {
		long def = strcasecmp(scheme, "https") == 0 ? 443 : 80;
		*hostport =
		    port != NULL ? xasprintf("%s:%s", h, port) : xasprintf("%s:%ld", h, def);
	}
out:
	curl_free(scheme);
	curl_free(h);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return shown;
}

/* Returns base + path with exactly one slash between them; caller frees. */
static char *
ob_url_join(const char *base, const char *path)
{
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	while (*path == '/')
		path++;
	return xasprintf("%.*s/%s", (int)n, base, path);
}

/* Returns the delay in seconds asked by a Retry-After value (seconds or an
 * HTTP date), or -1 if it cannot be read. */
static double
ob_retry_after(const char *v)
{
	if (v == NULL)
		return -1;
	char *end;
	double s = strtod(v, &end);
	if (end != v && s >= 0 && isfinite(s)) {
		while (isspace((unsigned char)*end))
			end++;
		if (*end == '\0')
			return s;
	}
	time_t t = curl_getdate(v, NULL);
	if (t == (time_t)-1)
		return -1;
	double d = difftime(t, time(NULL));
	return d > 0 ? d : 0;
}

/* ---- services --------------------------------------------------------- */

/* Returns the service called name, or NULL. */
static struct obsvc *
ob_svc_find(const struct outbound *ob, const char *name)
{
	for (size_t i = 0; i < ob->nsvcs; i++)
		if (strcmp(ob->svcs[i]->name, name) == 0)
			return ob->svcs[i];
	return NULL;
}

/* Returns the service called name, made (unregistered) if new. */
static struct obsvc *
ob_svc_get(struct outbound *ob, const char *name)
{
	struct obsvc *svc = ob_svc_find(ob, name);
	if (svc != NULL)
		return svc;
	svc = xcalloc(1, sizeof *svc);
	svc->ob = ob;
	svc->name = xstrdup(name);
	svc->tokens = 1;
	svc->refill_ms = ob_now_ms();
	ob->svcs = xreallocarray(ob->svcs, ob->nsvcs + 1, sizeof *ob->svcs);
	ob->svcs[ob->nsvcs++] = svc;
	return svc;
}

static void
ob_svc_free(struct obsvc *svc)
{
	free(svc->name);
	free(svc->base_url);
	free(svc->shown_url);
	free(svc->health_path);
	free(svc->health_url);
	curl_slist_free_all(svc->health_hdrs);
	free(svc->last_error);
	free(svc);
}

/* Returns the size of the service's bucket: requests are spaced evenly
 * (a burst of one) up to 20 per second; above that, bursts of 50 ms worth
 * of requests keep the timer from limiting the rate to its resolution. */
static double
ob_svc_burst(const struct obsvc *svc)
{
	return svc->rate > 20 ? floor(svc->rate / 20) : 1;
}

/* Adds the tokens earned since the last refill. */
static void
ob_svc_refill(struct obsvc *svc, int64_t now)
{
	if (svc->rate <= 0)
		return;
	svc->tokens += (double)(now - svc->refill_ms) * svc->rate / 1000.0;
	if (svc->tokens > ob_svc_burst(svc))
		svc->tokens = ob_svc_burst(svc);
	svc->refill_ms = now;
}

/* Returns when (monotonic ms) the service's next token is due. */
static int64_t
ob_svc_token_due(const struct obsvc *svc)
{
	if (svc->tokens >= 1)
		return svc->refill_ms;
	return svc->refill_ms + (int64_t)ceil((1 - svc->tokens) * 1000.0 / svc->rate);
}

static void
ob_svc_enqueue(struct obsvc *svc, struct obreq *rq)
{
	rq->qnext = NULL;
	rq->qprev = svc->qtail;
	if (svc->qtail != NULL)
		svc->qtail->qnext = rq;
	else
		svc->qhead = rq;
	svc->qtail = rq;
	svc->nqueued++;
	rq->state = RQ_RATE;
}

static void
ob_svc_dequeue(struct obsvc *svc, struct obreq *rq)
{
	if (rq->qprev != NULL)
		rq->qprev->qnext = rq->qnext;
	else
		svc->qhead = rq->qnext;
	if (rq->qnext != NULL)
		rq->qnext->qprev = rq->qprev;
	else
		svc->qtail = rq->qprev;
	rq->qprev = rq->qnext = NULL;
	svc->nqueued--;
}

/* ---- requests: allocation and lists ----------------------------------- */

/* Resets what an attempt collected. */
static void
rq_reset_response(struct obreq *rq)
{
	for (size_t i = 0; i < rq->nrhdrs; i++)
		free(rq->rhdrs[i]);
	rq->nrhdrs = 0;
	free(rq->reason);
	rq->reason = NULL;
	buf_consume(&rq->rbody, rq->rbody.len);
	rq->decided = rq->streaming = rq->too_large = false;
	rq->errbuf[0] = '\0';
}

static void
rq_free(struct obreq *rq)
{
	if (rq->easy != NULL)
		curl_easy_cleanup(rq->easy);
	rq_reset_response(rq);
	free(rq->rhdrs);
	buf_free(&rq->rbody);
	free(rq->method);
	free(rq->url);
	free(rq->body);
	curl_slist_free_all(rq->hdrs);
	free(rq->owner);
	free(rq->where);
	free(rq->hostport);
	free(rq->pending_error);
	free(rq);
}

static void
rq_link(struct outbound *ob, struct obreq *rq)
{
	rq->next = NULL;
	rq->prev = ob->rtail;
	if (ob->rtail != NULL)
		ob->rtail->next = rq;
	else
		ob->rhead = rq;
	ob->rtail = rq;
	ob->nreqs++;
	if (!rq->health)
		rq->svc->in_flight++;
}

/* Takes rq off every list (not out of the multi handle). */
static void
rq_unlink(struct obreq *rq)
{
	struct outbound *ob = rq->ob;
	if (rq->state == RQ_RATE)
		ob_svc_dequeue(rq->svc, rq);
	if (rq->prev != NULL)
		rq->prev->next = rq->next;
	else
		ob->rhead = rq->next;
	if (rq->next != NULL)
		rq->next->prev = rq->prev;
	else
		ob->rtail = rq->prev;
	rq->prev = rq->next = NULL;
	ob->nreqs--;
	if (!rq->health)
		rq->svc->in_flight--;
	if (rq->health && rq->svc->health_id == rq->id)
		rq->svc->health_id = 0;
}

/* Takes rq's easy handle out of the multi handle and frees it. */
static void
rq_drop_easy(struct obreq *rq)
{
	if (rq->easy == NULL)
		return;
	curl_multi_remove_handle(rq->ob->multi, rq->easy);
	curl_easy_cleanup(rq->easy);
	rq->easy = NULL;
}

/* Makes rq wait (state RQ_DELAY, off any token queue) until due_ms. */
static void
rq_delay_until(struct obreq *rq, int64_t due_ms)
{
	rq->state = RQ_DELAY;
	rq->due_ms = due_ms;
	ob_sched_arm(rq->ob);
}

/* Makes rq fail with reason at the next scheduler run. */
static void
rq_fail_later(struct obreq *rq, const char *reason)
{
	free(rq->pending_error);
	rq->pending_error = xstrdup(reason);
	rq_delay_until(rq, ob_now_ms());
}

/* Drops a request without calling anything.  Inside curl a request in the
 * multi handle is only marked, and reaped by ob_reap. */
static void
rq_cancel(struct obreq *rq)
{
	struct outbound *ob = rq->ob;
	rq->cancelled = true;
	if (rq->easy != NULL && ob->in_curl > 0) {
		ob->need_reap = true;
		return;
	}
	rq_drop_easy(rq);
	rq_unlink(rq);
	rq_free(rq);
}

/* Frees the cancelled requests curl still held (outside curl only). */
static void
ob_reap(struct outbound *ob)
{
	if (!ob->need_reap || ob->in_curl > 0)
		return;
	ob->need_reap = false;
	for (struct obreq *rq = ob->rhead, *next; rq != NULL; rq = next) {
		next = rq->next;
		if (rq->cancelled)
			rq_cancel(rq);
	}
}

/* ---- attempts --------------------------------------------------------- */

/* curl's write callback: streams a 2xx body to on_chunk, else collects it.
 * Returning less than given aborts the transfer. */
static size_t
rq_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct obreq *rq = userp;
	struct outbound *ob = rq->ob;
	size_t n = size * nmemb;
	if (rq->cancelled || ob->free_pending)
		return n == 0 ? 1 : 0; /* anything but n aborts */
	if (!rq->decided) {
		long status = 0;
		curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &status);
		rq->streaming = rq->on_chunk != NULL && status >= 200 && status < 300;
		rq->decided = true;
	}
	if (!rq->health)
		rq->svc->m.bytes_received += n;
	if (rq->streaming) {
		if (n == 0)
			return 0;
		rq->streamed = true;
		rq->on_chunk(rq->arg, data, n);
		return rq->cancelled || ob->free_pending ? 0 : n;
	}
	if (rq->rbody.len + n > OB_MAX_BODY) {
		rq->too_large = true;
		return 0;
	}
	buf_add(&rq->rbody, data, n);
	return n;
}

/* curl's header callback: keeps the headers of the last response (a new
 * status line, after a 100 Continue say, starts over). */
static size_t
rq_header_cb(char *data, size_t size, size_t nitems, void *userp)
{
	struct obreq *rq = userp;
	size_t n = size * nitems, len = n;
	while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n'))
		len--;
	if (ob_prefix(data, len, "HTTP/")) {
		for (size_t i = 0; i < rq->nrhdrs; i++)
			free(rq->rhdrs[i]);
		rq->nrhdrs = 0;
		free(rq->reason);
		rq->reason = NULL;
		/* "HTTP/1.1 503 Service Unavailable" */
		const char *sp = memchr(data, ' ', len);
		if (sp != NULL) {
			const char *end = data + len;
			const char *r = memchr(sp + 1, ' ', (size_t)(end - sp - 1));
			if (r != NULL && end - r > 1)
				rq->reason = xstrndup(r + 1, (size_t)(end - r - 1));
		}
		return n;
	}
	if (len == 0 || memchr(data, ':', len) == NULL || rq->nrhdrs >= OB_MAX_HEADERS)
		return n;
	rq->rhdrs = xreallocarray(rq->rhdrs, rq->nrhdrs + 1, sizeof *rq->rhdrs);
	rq->rhdrs[rq->nrhdrs++] = xstrndup(data, len);
	return n;
}

/* Starts an attempt: a new easy handle into the multi handle. */
static void
rq_start(struct obreq *rq)
{
	struct outbound *ob = rq->ob;
	rq_reset_response(rq);
	CURL *e = curl_easy_init();
	if (e == NULL) {
		rq_fail_later(rq, "cannot start a transfer (out of memory)");
		return;
	}
	rq->easy = e;
	rq->attempts++;

	curl_easy_setopt(e, CURLOPT_URL, rq->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, rq);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, rq->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, rq_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, rq);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, rq_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, rq);
	/* HTTP/1.1 with keep-alive: connections are reused from the multi
	 * handle's cache; no multiplexing, so no PIPEWAIT. */
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "dreamos");
	/* Redirects are not followed: they could carry credentials elsewhere. */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	if (rq->timeout > 0) {
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(rq->timeout * 1000.0));
		double ct = rq->timeout < OB_CONNECT_TIMEOUT ? rq->timeout : OB_CONNECT_TIMEOUT;
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(ct * 1000.0));
	} else {
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(OB_CONNECT_TIMEOUT * 1000.0));
	}

	const char *m = rq->method;
	bool post = strcmp(m, "POST") == 0;
	if (strcmp(m, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (rq->body != NULL || post || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body != NULL ? rq->body : "");
		if (!post)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
	} else if (strcmp(m, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
	}
	if (rq->hdrs != NULL)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, rq->hdrs);

	if (curl_multi_add_handle(ob->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		rq->easy = NULL;
		rq_fail_later(rq, "cannot start a transfer");
		return;
	}
	rq->state = RQ_ACTIVE;
}

/* A request is ready for an attempt: start it now if its service has a
 * token (and nobody queued before it), else queue it. */
static void
rq_ready(struct obreq *rq)
{
	struct outbound *ob = rq->ob;
	struct obsvc *svc = rq->svc;
	if (ob->in_curl > 0) {
		/* No curl_multi_add_handle inside curl: let the scheduler do it. */
		rq_delay_until(rq, ob_now_ms());
		return;
	}
	if (!rq->health && svc->rate > 0) {
		ob_svc_refill(svc, ob_now_ms());
		if (svc->qhead != NULL || svc->tokens < 1) {
			ob_svc_enqueue(svc, rq);
			svc->m.rate_limited++;
			if (log_enabled(ob->log, LVL_DEBUG))
				log_debug(ob->log, OB_SRC,
				          "%s: waiting for the rate limit of %s (%zu queued)",
				          rq->where, svc->name, svc->nqueued);
			ob_sched_arm(ob);
			return;
		}
		svc->tokens -= 1;
	}
	rq_start(rq);
}

/* Returns the one-line reason of a failed transfer; caller frees. */
static char *
rq_curl_error(struct obreq *rq, CURLcode code)
{
	char t[32];
	switch (code) {
	case CURLE_OPERATION_TIMEDOUT:
		if (rq->timeout > 0 && (rq->connected || rq->timeout <= OB_CONNECT_TIMEOUT))
			return xasprintf("timeout after %s s", ob_secs(rq->timeout, t, sizeof t));
		return xasprintf("connect timeout after %s s (%s)",
		                 ob_secs(OB_CONNECT_TIMEOUT, t, sizeof t), rq->hostport);
	case CURLE_COULDNT_CONNECT:
		/* curl's own text lost the reason ("Couldn't connect to
		 * server"): the connect(2) errno has it. */
		if (rq->os_errno != 0) {
			char *r = xstrdup(strerror(rq->os_errno));
			r[0] = (char)tolower((unsigned char)r[0]);
			char *s = xasprintf("%s (%s)", r, rq->hostport);
			free(r);
			return s;
		}
		return xasprintf("cannot connect to %s", rq->hostport);
	case CURLE_COULDNT_RESOLVE_HOST:
		return xasprintf("cannot resolve the host of %s", rq->hostport);
	case CURLE_GOT_NOTHING:
		return xasprintf("empty reply from %s", rq->hostport);
	case CURLE_PARTIAL_FILE:
		return xstrdup("response cut off before its end");
	case CURLE_RECV_ERROR:
		if (rq->os_errno != 0)
			return xasprintf("connection lost while receiving the response: %s",
			                 strerror(rq->os_errno));
		return xstrdup("connection lost while receiving the response");
	case CURLE_SEND_ERROR:
		return xstrdup("connection lost while sending the request");
	case CURLE_WRITE_ERROR:
		return xstrdup("transfer aborted");
	default: {
		char *s = xstrdup(curl_easy_strerror(code));
		s[0] = (char)tolower((unsigned char)s[0]);
		return s;
	}
	}
}

/* True for transport errors worth another attempt. */
static bool
ob_code_retryable(CURLcode code)
{
	switch (code) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* Ends a request: logs, counts, calls on_done (unless cancelled) and frees
 * it.  err (NULL on success) is freed. */
static void
rq_finish(struct obreq *rq, long status, char *err)
{
	struct outbound *ob = rq->ob;
	rq_unlink(rq);
	double secs = ob_since(rq->start_ns);
	if (!rq->health && err != NULL)
		rq->svc->m.failures++;
	if (err != NULL && !rq->health)
		log_warn(ob->log, OB_SRC, "%s failed: %s (%d attempt%s, %.2f s)", rq->where, err,
		         rq->attempts, rq->attempts == 1 ? "" : "s", secs);
	else if (log_enabled(ob->log, LVL_DEBUG))
		log_debug(ob->log, OB_SRC, "%s: %ld%s%s in %.3f s (%d attempt%s)", rq->where,
		          status, err ? ", " : "", err ? err : "", secs, rq->attempts,
		          rq->attempts == 1 ? "" : "s");
	struct outbound_resp resp = {
	    .status = status,
	    .body = buf_cstr(&rq->rbody),
	    .body_len = rq->rbody.len,
	    .error = err,
	    .seconds = secs,
	    .attempts = rq->attempts,
	    .headers = (const char *const *)rq->rhdrs,
	    .nheaders = rq->nrhdrs,
	};
	if (!rq->cancelled && !ob->free_pending && rq->on_done != NULL)
		rq->on_done(rq->arg, &resp);
	rq_free(rq);
	free(err);
}

/* An attempt ended (CURLMSG_DONE): retry, or finish the request. */
static void
rq_attempt_done(struct obreq *rq, CURLcode code)
{
	struct outbound *ob = rq->ob;
	long status = 0;
	curl_off_t up = 0, total_us = 0;
	curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(rq->easy, CURLINFO_SIZE_UPLOAD_T, &up);
	curl_easy_getinfo(rq->easy, CURLINFO_TOTAL_TIME_T, &total_us);
	rq->os_errno = 0;
	curl_easy_getinfo(rq->easy, CURLINFO_OS_ERRNO, &rq->os_errno);
	curl_off_t connect_us = 0;
	curl_easy_getinfo(rq->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
	rq->connected = connect_us > 0;
	rq_drop_easy(rq);
	rq->state = RQ_DELAY;
	if (rq->cancelled) {
		rq_unlink(rq);
		rq_free(rq);
		return;
	}
	if (!rq->health) {
		rq->svc->m.bytes_sent += (uint64_t)up;
		if (status > 0) {
			rq->svc->m.latency_sum += (double)total_us / 1e6;
			rq->svc->m.latency_count++;
		}
	}

	bool transport = code != CURLE_OK;
	char *err = NULL;
	if (rq->too_large)
		err = xasprintf("response body larger than %u MiB", OB_MAX_BODY >> 20);
	else if (transport)
		err = rq_curl_error(rq, code);
	else if (status >= 400)
		err = rq->reason != NULL ? xasprintf("HTTP %ld %s", status, rq->reason)
		                         : xasprintf("HTTP %ld", status);

	bool retry = !rq->streamed && !rq->too_large && rq->attempts <= rq->max_retries &&
	             !ob->free_pending &&
	             ((transport && ob_code_retryable(code)) || status == 429 || status >= 500);
	if (!retry) {
		rq_finish(rq, status, err);
		return;
	}

	double delay = ob->retry_delay * pow(2, rq->attempts - 1);
	if (delay > OUTBOUND_BACKOFF_MAX)
		delay = OUTBOUND_BACKOFF_MAX;
	double ra = -1;
	if (!transport && (status == 429 || status == 503)) {
		struct outbound_resp tmp = {.headers = (const char *const *)rq->rhdrs,
		                            .nheaders = rq->nrhdrs};
		ra = ob_retry_after(outbound_resp_header(&tmp, "retry-after"));
		if (ra >= 0)
			delay = ra < OUTBOUND_RETRY_AFTER_MAX ? ra : OUTBOUND_RETRY_AFTER_MAX;
	}
	if (!rq->health)
		rq->svc->m.retries++;
	char t[32];
	log_info(ob->log, OB_SRC, "%s: %s; retry %d of %d in %s s%s", rq->where, err, rq->attempts,
	         rq->max_retries, ob_secs(delay, t, sizeof t), ra >= 0 ? " (Retry-After)" : "");
	free(err);
	rq_delay_until(rq, ob_now_ms() + (int64_t)ceil(delay * 1000.0));
}

/* Reads the transfers curl finished and handles them. */
static void
ob_check_done(struct outbound *ob)
{
	CURLMsg *msg;
	int left;
	while (!ob->free_pending && (msg = curl_multi_info_read(ob->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *e = msg->easy_handle;
		CURLcode code = msg->data.result;
		struct obreq *rq = NULL;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&rq);
		if (rq == NULL || rq->easy != e) {
			curl_multi_remove_handle(ob->multi, e);
			continue;
		}
		rq_attempt_done(rq, code);
	}
}

/* ---- the loop side: sockets and timers -------------------------------- */

static void ob_teardown(struct outbound *ob);

/* Releases the manager's memory once every handle is closed. */
static void
ob_handle_closed(struct outbound *ob)
{
	if (--ob->open_handles == 0 && ob->closing)
		free(ob);
}

static void
ob_sock_closed(uv_handle_t *h)
{
	struct obsock *sk = h->data;
	struct outbound *ob = sk->ob;
	free(sk);
	ob_handle_closed(ob);
}

static void
ob_timer_closed(uv_handle_t *h)
{
	ob_handle_closed(h->data);
}

/* Stops watching a socket and closes its handle. */
static void
ob_sock_close(struct outbound *ob, struct obsock *sk)
{
	if (sk->prev != NULL)
		sk->prev->next = sk->next;
	else
		ob->socks = sk->next;
	if (sk->next != NULL)
		sk->next->prev = sk->prev;
	uv_poll_stop(&sk->poll);
	uv_close((uv_handle_t *)&sk->poll, ob_sock_closed);
}

/* Enters a dispatch from the loop. */
static void
ob_enter(struct outbound *ob)
{
	ob->busy++;
}

/* Leaves a dispatch; finishes an outbound_free asked meanwhile. */
static void
ob_leave(struct outbound *ob)
{
	if (--ob->busy == 0 && ob->free_pending && !ob->closing)
		ob_teardown(ob);
}

/* Tells curl about socket activity (or a timeout), then handles what
 * finished. */
static void
ob_action(struct outbound *ob, curl_socket_t fd, int flags)
{
	int running;
	ob_enter(ob);
	ob->in_curl++;
	curl_multi_socket_action(ob->multi, fd, flags, &running);
	ob->in_curl--;
	ob_reap(ob);
	if (!ob->free_pending)
		ob_check_done(ob);
	ob_leave(ob);
}

static void
ob_poll_cb(uv_poll_t *h, int status, int events)
{
	struct obsock *sk = h->data;
	int flags = 0;
	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & (UV_READABLE | UV_DISCONNECT))
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	ob_action(sk->ob, sk->fd, flags);
}

static void
ob_curl_timer_cb(uv_timer_t *t)
{
	ob_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl wants. */
static int
ob_sock_fn(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct outbound *ob = userp;
	struct obsock *sk = socketp;
	if (ob->closing)
		return 0;
	if (what == CURL_POLL_REMOVE) {
		if (sk != NULL) {
			curl_multi_assign(ob->multi, s, NULL);
			ob_sock_close(ob, sk);
		}
		return 0;
	}
	if (sk == NULL) {
		sk = xcalloc(1, sizeof *sk);
		if (uv_poll_init_socket(ob->loop, &sk->poll, s) != 0) {
			free(sk);
			return -1;
		}
		sk->fd = s;
		sk->ob = ob;
		sk->poll.data = sk;
		sk->next = ob->socks;
		if (ob->socks != NULL)
			ob->socks->prev = sk;
		ob->socks = sk;
		ob->open_handles++;
		curl_multi_assign(ob->multi, s, sk);
	}
	int events = 0;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&sk->poll, events, ob_poll_cb);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: call curl back in timeout_ms (-1: never).  Never
 * calls curl from here (curl forbids it): 0 fires on the next loop turn. */
static int
ob_timer_fn(CURLM *m, long timeout_ms, void *userp)
{
	struct outbound *ob = userp;
	if (ob->closing)
		return 0;
	if (timeout_ms < 0)
		uv_timer_stop(&ob->curl_timer);
	else
		uv_timer_start(&ob->curl_timer, ob_curl_timer_cb, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- the scheduler: delays, token queues, health checks ---------------- */

static void ob_health_done(void *arg, const struct outbound_resp *resp);

/* Allocates a request (not linked). */
static struct obreq *
rq_new(struct outbound *ob)
{
	struct obreq *rq = xcalloc(1, sizeof *rq);
	rq->ob = ob;
	rq->id = ++ob->next_id;
	rq->start_ns = uv_hrtime();
	buf_init(&rq->rbody);
	return rq;
}

/* Starts a health check of svc. */
static void
ob_health_start(struct outbound *ob, struct obsvc *svc, int64_t now)
{
	struct obreq *rq = rq_new(ob);
	rq->health = true;
	rq->svc = svc;
	rq->method = xstrdup("GET");
	rq->url = xstrdup(svc->health_url);
	char *shown = ob_url_parse(rq->url, NULL, &rq->hostport);
	rq->where = xasprintf("GET %s", shown != NULL ? shown : "(invalid URL)");
	free(shown);
	if (rq->hostport == NULL)
		rq->hostport = xstrdup("?");
	for (struct curl_slist *l = svc->health_hdrs; l != NULL; l = l->next)
		rq->hdrs = curl_slist_append(rq->hdrs, l->data);
	rq->timeout = svc->interval < 10 ? (svc->interval < 1 ? 1 : svc->interval) : 10;
	rq->max_retries = 0;
	rq->on_done = ob_health_done;
	rq->arg = svc;
	rq_link(ob, rq);
	svc->health_id = rq->id;
	svc->next_check_ms = now + (int64_t)(svc->interval * 1000.0);
	rq_start(rq);
}

/* A health check ended: update the state, log a change. */
static void
ob_health_done(void *arg, const struct outbound_resp *resp)
{
	struct obsvc *svc = arg;
	struct outbound *ob = svc->ob;
	bool answered = resp->status > 0 && (resp->error == NULL || resp->status >= 400);
	bool up = answered && resp->status < 500;
	enum outbound_health old = svc->health;
	svc->health = up ? OUTBOUND_UP : OUTBOUND_DOWN;
	svc->checks++;
	svc->last_status = resp->status;
	svc->latency_ms = resp->seconds * 1000.0;
	svc->last_check_wall = time_wall_ms();
	free(svc->last_error);
	svc->last_error = up ? NULL : xstrdup(resp->error ? resp->error : "no answer");
	if (up && old != OUTBOUND_UP)
		log_info(ob->log, OB_SRC, "service %s is up (HTTP %ld, %.0f ms)", svc->name,
		         resp->status, svc->latency_ms);
	else if (!up && old != OUTBOUND_DOWN)
		log_warn(ob->log, OB_SRC, "service %s is down: %s", svc->name, svc->last_error);
	ob_sched_arm(ob);
}

/* Arms the scheduler timer for the earliest thing due, or stops it. */
static void
ob_sched_arm(struct outbound *ob)
{
	if (ob->closing)
		return;
	int64_t due = INT64_MAX;
	for (struct obreq *rq = ob->rhead; rq != NULL; rq = rq->next)
		if (rq->state == RQ_DELAY && !rq->cancelled && rq->due_ms < due)
			due = rq->due_ms;
	for (size_t i = 0; i < ob->nsvcs; i++) {
		struct obsvc *svc = ob->svcs[i];
		if (svc->qhead != NULL) {
			int64_t t = ob_svc_token_due(svc);
			if (t < due)
				due = t;
		}
		if (svc->next_check_ms > 0 && svc->health_id == 0 && svc->next_check_ms < due)
			due = svc->next_check_ms;
	}
	if (due == INT64_MAX) {
		uv_timer_stop(&ob->sched_timer);
		return;
	}
	uv_update_time(ob->loop);
	int64_t wait = due - ob_now_ms();
	uv_timer_start(&ob->sched_timer, ob_sched_cb, wait > 0 ? (uint64_t)wait : 0, 0);
}

/* Runs what is due: delayed requests (and requests that must fail), token
 * queues, health checks.  User callbacks may change every list, so after
 * one the scan starts over. */
static void
ob_sched_run(struct outbound *ob)
{
	int64_t now = ob_now_ms();
again:
	if (ob->free_pending)
		return;
	for (struct obreq *rq = ob->rhead, *next; rq != NULL; rq = next) {
		next = rq->next;
		if (rq->state != RQ_DELAY || rq->cancelled || rq->due_ms > now)
			continue;
		if (rq->pending_error != NULL) {
			char *err = rq->pending_error;
			rq->pending_error = NULL;
			rq_finish(rq, 0, err);
			goto again;
		}
		rq_ready(rq);
	}
	for (size_t i = 0; i < ob->nsvcs; i++) {
		struct obsvc *svc = ob->svcs[i];
		if (svc->qhead != NULL) {
			ob_svc_refill(svc, now);
			while (svc->qhead != NULL && svc->tokens >= 1) {
				struct obreq *rq = svc->qhead;
				ob_svc_dequeue(svc, rq);
				rq->state = RQ_DELAY;
				svc->tokens -= 1;
				rq_start(rq);
			}
		}
		if (svc->next_check_ms > 0 && svc->health_id == 0 && svc->next_check_ms <= now)
			ob_health_start(ob, svc, now);
	}
	ob_sched_arm(ob);
}

static void
ob_sched_cb(uv_timer_t *t)
{
	struct outbound *ob = t->data;
	ob_enter(ob);
	ob_sched_run(ob);
	ob_leave(ob);
}

/* ---- creation and teardown -------------------------------------------- */

struct outbound *
outbound_new(uv_loop_t *loop, struct logmgr *log, int retry_attempts, double retry_delay)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error(log, OB_SRC, "cannot initialise libcurl");
		return NULL;
	}
	struct outbound *ob = xcalloc(1, sizeof *ob);
	ob->loop = loop;
	ob->log = log;
	ob->retry_attempts = retry_attempts < 0 ? 0 : retry_attempts;
	ob->retry_delay = retry_delay < 0 ? 0 : retry_delay;
	ob->multi = curl_multi_init();
	if (ob->multi == NULL) {
		free(ob);
		curl_global_cleanup();
		log_error(log, OB_SRC, "cannot initialise libcurl");
		return NULL;
	}
	curl_multi_setopt(ob->multi, CURLMOPT_SOCKETFUNCTION, ob_sock_fn);
	curl_multi_setopt(ob->multi, CURLMOPT_SOCKETDATA, ob);
	curl_multi_setopt(ob->multi, CURLMOPT_TIMERFUNCTION, ob_timer_fn);
	curl_multi_setopt(ob->multi, CURLMOPT_TIMERDATA, ob);
	uv_timer_init(loop, &ob->curl_timer);
	ob->curl_timer.data = ob;
	uv_timer_init(loop, &ob->sched_timer);
	ob->sched_timer.data = ob;
	ob->open_handles = 2;
	return ob;
}

/* Drops everything and closes the handles; the memory goes with the last
 * close callback. */
static void
ob_teardown(struct outbound *ob)
{
	ob->closing = true;
	while (ob->rhead != NULL) {
		struct obreq *rq = ob->rhead;
		rq_drop_easy(rq);
		rq_unlink(rq);
		rq_free(rq);
	}
	while (ob->socks != NULL)
		ob_sock_close(ob, ob->socks);
	curl_multi_cleanup(ob->multi);
	ob->multi = NULL;
	curl_global_cleanup();
	for (size_t i = 0; i < ob->nsvcs; i++)
		ob_svc_free(ob->svcs[i]);
	free(ob->svcs);
	ob->svcs = NULL;
	ob->nsvcs = 0;
	uv_close((uv_handle_t *)&ob->curl_timer, ob_timer_closed);
	uv_close((uv_handle_t *)&ob->sched_timer, ob_timer_closed);
}

void
outbound_free(struct outbound *ob)
{
	if (ob == NULL || ob->free_pending)
		return;
	ob->free_pending = true;
	if (ob->busy == 0)
		ob_teardown(ob);
}

int
outbound_add_config_services(struct outbound *ob, const struct config *cfg, char **cause)
{
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct service_cfg *s = &cfg->services[i];
		if (outbound_add_service(ob, s->name, s->base_url, s->health_path, s->interval,
		                         s->rate_limit) != 0) {
			if (cause != NULL)
				*cause = xasprintf("services: %s: base_url must be an http:// or "
				                   "https:// URL",
				                   s->name);
			return -1;
		}
	}
	return 0;
}

/* ---- requests: the public side ---------------------------------------- */

/* True if m is an HTTP method token (upper-case letters). */
static bool
ob_valid_method(const char *m)
{
	if (*m == '\0' || strlen(m) > 16)
		return false;
	for (; *m != '\0'; m++)
		if (!isupper((unsigned char)*m))
			return false;
	return true;
}

uint64_t
outbound_request(struct outbound *ob, const struct outbound_req *req, outbound_done_fn on_done,
                 outbound_chunk_fn on_chunk, void *arg)
{
	if (ob == NULL || ob->free_pending || req == NULL)
		return 0;
	struct obreq *rq = rq_new(ob);
	rq->method = xstrdup(req->method != NULL ? req->method : "GET");
	rq->url = xstrdup(req->url != NULL ? req->url : "");
	if (req->body != NULL) {
		rq->body = xmalloc(req->body_len + 1);
		memcpy(rq->body, req->body, req->body_len);
		rq->body[req->body_len] = '\0';
		rq->body_len = req->body_len;
	}
	bool bad_header = false;
	rq->hdrs = ob_headers(req->headers, &bad_header);
	/* curl would wait a second for "100 Continue" before a large body. */
	if (rq->body != NULL && !ob_has_header(rq->hdrs, "Expect"))
		rq->hdrs = curl_slist_append(rq->hdrs, "Expect:");
	rq->timeout = req->timeout_s > 0    ? req->timeout_s
	              : req->timeout_s == 0 ? OUTBOUND_DEFAULT_TIMEOUT
	                                    : 0;
	rq->max_retries = req->max_retries < 0 ? ob->retry_attempts : req->max_retries;
	rq->owner = req->owner != NULL ? xstrdup(req->owner) : NULL;
	rq->on_done = on_done;
	rq->on_chunk = on_chunk;
	rq->arg = arg;

	char *host = NULL;
	char *shown = ob_url_parse(rq->url, &host, &rq->hostport);
	const char *error = NULL;
	if (shown == NULL)
		error = "invalid URL (http:// or https:// expected)";
	else if (!ob_valid_method(rq->method))
		error = "invalid HTTP method";
	else if (bad_header)
		error = "invalid header (\"Name: value\" on one line expected)";
	if (ob_valid_method(rq->method))
		rq->where = xasprintf("%s %s", rq->method, shown != NULL ? shown : "(invalid URL)");
	else
		rq->where = xasprintf("? %s", shown != NULL ? shown : "(invalid URL)");
	if (rq->hostport == NULL)
		rq->hostport = xstrdup("?");
	free(shown);

	const char *sname = req->service != NULL ? req->service : host != NULL ? host : "(invalid)";
	rq->svc = ob_svc_get(ob, sname);
	free(host);
	rq->svc->m.requests++;
	rq_link(ob, rq);

	uint64_t id = rq->id;
	if (error != NULL)
		rq_fail_later(rq, error);
	else
		rq_ready(rq);
	return id;
}

/* Returns the live request with this id, or NULL. */
static struct obreq *
ob_find(const struct outbound *ob, uint64_t id)
{
	for (struct obreq *rq = ob->rhead; rq != NULL; rq = rq->next)
		if (rq->id == id && !rq->health)
			return rq;
	return NULL;
}

bool
outbound_cancel(struct outbound *ob, uint64_t id)
{
	if (ob == NULL || ob->closing || id == 0)
		return false;
	struct obreq *rq = ob_find(ob, id);
	if (rq == NULL || rq->cancelled)
		return false;
	if (log_enabled(ob->log, LVL_DEBUG))
		log_debug(ob->log, OB_SRC, "%s: cancelled", rq->where);
	rq_cancel(rq);
	ob_sched_arm(ob);
	return true;
}

size_t
outbound_cancel_owner(struct outbound *ob, const char *owner)
{
	if (ob == NULL || ob->closing || owner == NULL)
		return 0;
	size_t n = 0;
	for (struct obreq *rq = ob->rhead, *next; rq != NULL; rq = next) {
		next = rq->next;
		if (rq->cancelled || rq->owner == NULL || strcmp(rq->owner, owner) != 0)
			continue;
		rq_cancel(rq);
		n++;
	}
	if (n > 0) {
		log_info(ob->log, OB_SRC, "cancelled %zu request%s of %s", n, n == 1 ? "" : "s",
		         owner);
		ob_sched_arm(ob);
	}
	return n;
}

size_t
outbound_pending(const struct outbound *ob)
{
	size_t n = 0;
	for (const struct obreq *rq = ob->rhead; rq != NULL; rq = rq->next)
		if (!rq->health && !rq->cancelled)
			n++;
	return n;
}

const char *
outbound_resp_header(const struct outbound_resp *resp, const char *name)
{
	size_t n = strlen(name);
	const char *found = NULL;
	for (size_t i = 0; i < resp->nheaders; i++) {
		const char *h = resp->headers[i];
		if (strncasecmp(h, name, n) != 0 || h[n] != ':')
			continue;
		const char *v = h + n + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		found = v;
	}
	return found;
}

/* ---- services: the public side ---------------------------------------- */

int
outbound_add_service(struct outbound *ob, const char *name, const char *base_url,
                     const char *health_path, double interval_s, double rate_limit)
{
	if (ob == NULL || ob->free_pending || name == NULL || name[0] == '\0' || base_url == NULL)
		return -1;
	char *shown = ob_url_parse(base_url, NULL, NULL);
	if (shown == NULL)
		return -1;
	struct obsvc *svc = ob_svc_get(ob, name);
	svc->registered = true;
	free(svc->base_url);
	svc->base_url = xstrdup(base_url);
	free(svc->shown_url);
	svc->shown_url = shown;
	free(svc->health_path);
	free(svc->health_url);
	svc->health_path = health_path != NULL ? xstrdup(health_path) : NULL;
	svc->health_url = health_path != NULL ? ob_url_join(base_url, health_path) : NULL;
	svc->interval = interval_s > 0 ? interval_s : 30;
	svc->rate = rate_limit > 0 ? rate_limit : 0;
	svc->tokens = ob_svc_burst(svc);
	svc->refill_ms = ob_now_ms();
	svc->health = OUTBOUND_UNKNOWN;
	free(svc->last_error);
	svc->last_error = NULL;
	svc->next_check_ms = svc->health_url != NULL ? ob_now_ms() : 0;
	/* Queued requests of a service that is no longer limited go now. */
	if (svc->rate == 0) {
		while (svc->qhead != NULL) {
			struct obreq *rq = svc->qhead;
			ob_svc_dequeue(svc, rq);
			rq_delay_until(rq, ob_now_ms());
		}
	}
	char rate[32] = "none";
	if (svc->rate > 0)
		snprintf(rate, sizeof rate, "%g/s", svc->rate);
	log_info(ob->log, OB_SRC, "service %s: %s%s%s, rate limit %s", name, svc->shown_url,
	         svc->health_path ? ", health check " : "",
	         svc->health_path ? svc->health_path : "", rate);
	ob_sched_arm(ob);
	return 0;
}

int
outbound_service_set_headers(struct outbound *ob, const char *name, const char *const *headers)
{
	struct obsvc *svc = ob != NULL ? ob_svc_find(ob, name) : NULL;
	if (svc == NULL)
		return -1;
	bool bad = false;
	struct curl_slist *l = ob_headers(headers, &bad);
	if (bad) {
		curl_slist_free_all(l);
		return -1;
	}
	curl_slist_free_all(svc->health_hdrs);
	svc->health_hdrs = l;
	return 0;
}

const char *
outbound_health_name(enum outbound_health h)
{
	switch (h) {
	case OUTBOUND_UP:
		return "up";
	case OUTBOUND_DOWN:
		return "down";
	default:
		return "unknown";
	}
}

enum outbound_health
outbound_service_health(const struct outbound *ob, const char *name)
{
	const struct obsvc *svc = ob != NULL ? ob_svc_find(ob, name) : NULL;
	return svc != NULL ? svc->health : OUTBOUND_UNKNOWN;
}

static int
ob_svc_cmp(const void *a, const void *b)
{
	const struct obsvc *x = *(const struct obsvc *const *)a;
	const struct obsvc *y = *(const struct obsvc *const *)b;
	return strcmp(x->name, y->name);
}

json_t *
outbound_services_json(const struct outbound *ob)
{
	json_t *rows = json_array();
	if (ob == NULL || ob->nsvcs == 0)
		return rows;
	struct obsvc **v = xreallocarray(NULL, ob->nsvcs, sizeof *v);
	memcpy(v, ob->svcs, ob->nsvcs * sizeof *v);
	qsort(v, ob->nsvcs, sizeof *v, ob_svc_cmp);
	for (size_t i = 0; i < ob->nsvcs; i++) {
		const struct obsvc *s = v[i];
		json_t *r = json_object();
		json_object_set_new(r, "name", json_string(s->name));
		json_object_set_new(r, "url",
		                    s->shown_url ? json_string(s->shown_url) : json_null());
		json_object_set_new(r, "health_path",
		                    s->health_path ? json_string(s->health_path) : json_null());
		json_object_set_new(r, "state", json_string(outbound_health_name(s->health)));
		json_object_set_new(r, "status", json_integer(s->last_status));
		json_object_set_new(r, "last_error",
		                    s->last_error ? json_string(s->last_error) : json_null());
		json_object_set_new(r, "latency_ms",
		                    s->checks ? json_real(round(s->latency_ms * 10) / 10)
		                              : json_null());
		if (s->checks) {
			char ts[40];
			time_iso8601(s->last_check_wall, ts, sizeof ts);
			json_object_set_new(r, "last_check", json_string(ts));
		} else {
			json_object_set_new(r, "last_check", json_null());
		}
		json_object_set_new(r, "checks", json_integer((json_int_t)s->checks));
		json_object_set_new(r, "interval",
		                    s->health_url ? json_real(s->interval) : json_null());
		json_object_set_new(r, "rate_limit", json_real(s->rate));
		json_object_set_new(r, "requests", json_integer((json_int_t)s->m.requests));
		json_object_set_new(r, "failures", json_integer((json_int_t)s->m.failures));
		json_object_set_new(r, "retries", json_integer((json_int_t)s->m.retries));
		json_object_set_new(r, "in_flight", json_integer((json_int_t)s->in_flight));
		json_array_append_new(rows, r);
	}
	free(v);
	return rows;
}

json_t *
outbound_metrics_json(const struct outbound *ob)
{
	json_t *svcs = json_object();
	size_t queued = 0, in_flight = 0;
	for (size_t i = 0; ob != NULL && i < ob->nsvcs; i++) {
		const struct obsvc *s = ob->svcs[i];
		queued += s->nqueued;
		in_flight += s->in_flight;
		json_object_set_new(
		    svcs, s->name,
		    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I}", "requests",
		              (json_int_t)s->m.requests, "failures", (json_int_t)s->m.failures,
		              "retries", (json_int_t)s->m.retries, "rate_limited",
		              (json_int_t)s->m.rate_limited, "bytes_sent",
		              (json_int_t)s->m.bytes_sent, "bytes_received",
		              (json_int_t)s->m.bytes_received, "latency_sum", s->m.latency_sum,
		              "latency_count", (json_int_t)s->m.latency_count, "in_flight",
		              (json_int_t)s->in_flight, "queued", (json_int_t)s->nqueued));
	}
	return json_pack("{s:I,s:I,s:o}", "in_flight", (json_int_t)in_flight, "queued",
	                 (json_int_t)queued, "services", svcs);
}

/* ---- server-sent events ----------------------------------------------- */

struct outbound_sse {
	outbound_sse_fn fn;
	void *arg;
	struct buf line;
	struct buf data;
	char *event;
	bool has_data;
	bool skip_lf; /* the last line ended with \r: a \n next is part of it */
};

struct outbound_sse *
outbound_sse_new(outbound_sse_fn on_event, void *arg)
{
	struct outbound_sse *p = xcalloc(1, sizeof *p);
	p->fn = on_event;
	p->arg = arg;
	buf_init(&p->line);
	buf_init(&p->data);
	return p;
}

void
outbound_sse_free(struct outbound_sse *p)
{
	if (p == NULL)
		return;
	buf_free(&p->line);
	buf_free(&p->data);
	free(p->event);
	free(p);
}

/* Handles one complete line (in p->line). */
static void
ob_sse_line(struct outbound_sse *p)
{
	const char *l = buf_cstr(&p->line);
	size_t n = p->line.len;
	if (n == 0) {
		if (p->has_data)
			p->fn(p->arg, p->event != NULL ? p->event : "message", buf_cstr(&p->data),
			      p->data.len);
		buf_consume(&p->data, p->data.len);
		free(p->event);
		p->event = NULL;
		p->has_data = false;
		return;
	}
	if (l[0] == ':')
		return;
	const char *colon = memchr(l, ':', n);
	size_t flen = colon != NULL ? (size_t)(colon - l) : n;
	const char *v = colon != NULL ? colon + 1 : l + n;
	if (*v == ' ')
		v++;
	size_t vlen = (size_t)(l + n - v);
	if (flen == 4 && memcmp(l, "data", 4) == 0) {
		if (p->has_data)
			buf_add(&p->data, "\n", 1);
		buf_add(&p->data, v, vlen);
		p->has_data = true;
	} else if (flen == 5 && memcmp(l, "event", 5) == 0) {
		free(p->event);
		p->event = xstrndup(v, vlen);
	}
}

void
outbound_sse_feed(struct outbound_sse *p, const char *data, size_t len)
{
	size_t i = 0;
	while (i < len) {
		if (p->skip_lf) {
			p->skip_lf = false;
			if (data[i] == '\n') {
				i++;
				continue;
			}
		}
		size_t j = i;
		while (j < len && data[j] != '\r' && data[j] != '\n')
			j++;
		buf_add(&p->line, data + i, j - i);
		if (j == len)
			break;
		p->skip_lf = data[j] == '\r';
		ob_sse_line(p);
		buf_consume(&p->line, p->line.len);
		i = j + 1;
	}
}

/* ---- captain commands ------------------------------------------------- */

/* The orchestrator's manager (orch.c). */
extern struct outbound *orch_outbound(struct orch *o);

/* The result and error are set by hand, as cmd_result and cmd_error would:
 * so this module needs nothing from cmd.c and orch.c but orch_outbound, and
 * its unit test links without the orchestrator. */
static enum cmd_retval
ob_cmd_services_exec(struct cmd_ctx *ctx)
{
	struct outbound *ob = orch_outbound(ctx->orch);
	if (ob == NULL) {
		free(ctx->error);
		ctx->error = xstrdup("services: the outbound connection manager is not running");
		ctx->status = CMD_ERROR;
		return CMD_ERROR;
	}
	json_decref(ctx->result);
	ctx->result = outbound_services_json(ob);
	return CMD_OK;
}

/* Renders the services as a table for people. */
static void
ob_cmd_services_print(struct cmd_ctx *ctx, const json_t *rows, struct buf *out)
{
	size_t n = json_array_size(rows);
	if (n == 0) {
		buf_adds(out, "no outbound services\n");
		return;
	}
	enum { NCOL = 7 };
	static const char *const head[NCOL] = {"NAME",     "STATE", "LATENCY",   "REQUESTS",
	                                       "FAILURES", "RATE",  "LAST ERROR"};
	char **cells = xcalloc((n + 1) * NCOL, sizeof *cells);
	size_t width[NCOL] = {0};
	for (size_t c = 0; c < NCOL; c++)
		cells[c] = xstrdup(head[c]);
	for (size_t r = 0; r < n; r++) {
		const json_t *row = json_array_get(rows, r);
		char **cl = cells + (r + 1) * NCOL;
		const json_t *lat = json_object_get(row, "latency_ms");
		double rate = json_number_value(json_object_get(row, "rate_limit"));
		const char *err = json_string_value(json_object_get(row, "last_error"));
		cl[0] = xstrdup(json_string_value(json_object_get(row, "name")));
		cl[1] = xstrdup(json_string_value(json_object_get(row, "state")));
		cl[2] = json_is_number(lat) ? xasprintf("%.0f ms", json_number_value(lat))
		                            : xstrdup("-");
		cl[3] = xasprintf("%" JSON_INTEGER_FORMAT,
		                  json_integer_value(json_object_get(row, "requests")));
		cl[4] = xasprintf("%" JSON_INTEGER_FORMAT,
		                  json_integer_value(json_object_get(row, "failures")));
		cl[5] = rate > 0 ? xasprintf("%g/s", rate) : xstrdup("-");
		cl[6] = xstrdup(err != NULL ? err : "-");
	}
	for (size_t i = 0; i < (n + 1) * NCOL; i++)
		if (strlen(cells[i]) > width[i % NCOL])
			width[i % NCOL] = strlen(cells[i]);
	for (size_t r = 0; r <= n; r++) {
		for (size_t c = 0; c < NCOL; c++) {
			if (c == NCOL - 1)
				buf_addf(out, "%s\n", cells[r * NCOL + c]);
			else
				buf_addf(out, "%-*s  ", (int)width[c], cells[r * NCOL + c]);
		}
	}
	for (size_t i = 0; i < (n + 1) * NCOL; i++)
		free(cells[i]);
	free(cells);
}

const struct cmd_entry outbound_cmd_entries[] = {
    {
        .name = "services",
        .usage = "",
        .help = "Lists the outbound services (external APIs used through the Bridge's "
                "connection manager): health (up, down or unknown) from the periodic check, its "
                "latency and last error, the requests made and failed, and the rate limit.",
        .min_args = 0,
        .max_args = 0,
        .role = ROLE_OBSERVER,
        .exec = ob_cmd_services_exec,
        .print = ob_cmd_services_print,
    },
};
const size_t outbound_cmd_count = nitems(outbound_cmd_entries);
