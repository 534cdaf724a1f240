/* discord.c — the Discord log mirror (DESIGN sections 8 and 10): log
 * records at or above a level go to a Discord webhook, and, per route, the
 * records of chosen sources (components or agents) each to a webhook of
 * their own, through the Bridge's outbound connection manager.
 *
 *   - Records are queued per webhook (bounded: queue_max; the records that
 *     arrive while a queue is full are counted and dropped, and a line "N
 *     records dropped" takes their place once there is room again) and
 *     sent in order, several to a message, under Discord's 2,000-character
 *     limit of "content".
 *   - One request at a time per webhook, at most 5 per 2 s, and none while
 *     Discord says to wait (X-RateLimit-Remaining 0 + Reset-After, or a
 *     429 with its retry_after: then the same batch is sent again).
 *   - 5xx and transport errors are retried with exponential backoff (the
 *     records stay queued); another 4xx drops the batch (counted).
 *   - The outbound manager's own warning about a failed POST to a webhook
 *     is not mirrored (else every failure would queue one more record).
 *
 * Webhook URLs are secrets: they are handed to the host with secret_add,
 * and no text of this extension (log lines, command output, errors) holds
 * one; webhooks are shown as "#N" with the first digits of their id.
 * Without a webhook the extension only registers its commands: no
 * subscription, no timer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include <dreamos/extension.h>

#define DISCORD_VERSION "1.0"
#define SERVICE         "discord"
/* Discord's limit of a message's "content" (we count bytes: never more
 * characters than that). */
#define CONTENT_MAX 2000
/* Discord allows about 5 requests per 2 s per webhook. */
#define RATE_N      5
#define RATE_WINDOW 2.0
/* Longest wait a 429 or a rate-limit header may ask for, in seconds. */
#define WAIT_MAX 600.0

static const struct dreamos_host *host;
static struct dreamos_ext *self;

/* What helpers.h makes (fmt, vfmt, reply_redacted) is scrubbed of the
 * webhook URLs too, not only of the secrets the host knows. */
static char *scrub(char *s);
#define HELPERS_SCRUB scrub
#include "../common/helpers.h"

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "fatal"};

/* ---- state --------------------------------------------------------------- */

struct test_wait;

/* One queued line. */
struct item {
	char *text;           /* at most CONTENT_MAX bytes */
	struct test_wait *tw; /* a `discord test` waiting for it, or NULL */
};

/* One webhook. */
struct hook {
	int no;         /* 1, 2, ...: "#N" */
	char *url;      /* the secret */
	char *token;    /* its last path segment (also a secret), or NULL */
	char *id_shown; /* "1234…" (the first digits of the webhook's id), or "" */
	char *where;    /* "POST host[:port]/path" as the outbound manager logs it */
	char *hash;     /* FNV-1a of the URL: finds its queue after a reload */
	char *uses;     /* "default", "routes: a, b" */

	struct item *q; /* ring buffer */
	size_t qcap, qhead, qlen;

	uint64_t sent_records, sent_messages, dropped, dropped_pending, rejected;
	uint64_t rate_limited, failures, consecutive;
	uint64_t drop_streak; /* dropped since the queue was last full */
	bool full_logged;     /* "queue full" said; reset when it drains */
	long last_status;
	char *last_error;

	uint64_t http;   /* request in flight, or 0 */
	size_t batch_n;  /* records in it */
	uint64_t timer;  /* one-shot timer pending, or 0 */
	double timer_at; /* when it fires (monotonic s) */
	double not_before;
	double batch_until;
	double sends[RATE_N]; /* times of the last RATE_N requests */
	int nsends;
	struct hook *next;
};

/* A route: records whose source is NAME (or starts with NAME without its
 * trailing '*') go to hook instead of the default webhook. */
struct route {
	char *source;
	bool prefix;
	int min_level;
	struct hook *hook;
	struct route *next;
};

/* A `discord test` waiting for its lines. */
struct test_wait {
	struct dreamos_call *call; /* NULL once answered */
	int pending;               /* items still referring to it */
	int failed;
	char *report; /* one line per webhook */
	uint64_t timer;
};

static struct {
	int min_level;
	size_t queue_max;
	double batch_s;
	double retry_initial_s;
	double retry_max_s;
	double timeout_s;
	double test_timeout_s;
	char *username; /* or NULL */
	char *problem;  /* why there is no default webhook although one was asked for */
} cfg;

static struct hook *hooks;
static struct hook *default_hook;
static struct route *routes;
static int sub_id;
static struct test_wait **tws; /* waiting tests (for fini) */
static size_t ntws;

/* ---- small helpers ----------------------------------------------------- */

/* Replaces every occurrence of needle in s (malloc'd) by "[redacted]";
 * returns the (maybe new) string. */
static char *
cut_out(char *s, const char *needle)
{
	if (s == NULL || needle == NULL || *needle == '\0')
		return s;
	size_t nl = strlen(needle);
	char *p;
	size_t from = 0;
	while ((p = strstr(s + from, needle)) != NULL) {
		size_t pre = (size_t)(p - s);
		size_t rest = strlen(p + nl);
		char *n = malloc(pre + 10 + rest + 1);
		if (n == NULL)
			return s;
		memcpy(n, s, pre);
		memcpy(n + pre, "[redacted]", 10);
		memcpy(n + pre + 10, p + nl, rest + 1);
		free(s);
		s = n;
		from = pre + 10;
	}
	return s;
}

/* s (malloc'd) without any webhook URL or token, nor any other secret
 * the host knows; returns the (maybe new) string, to be freed. */
static char *
scrub(char *s)
{
	for (struct hook *h = hooks; h != NULL && s != NULL; h = h->next) {
		s = cut_out(s, h->url);
		s = cut_out(s, h->token);
	}
	return redact(s);
}

/* *s (malloc'd, or NULL) with sep and what appended (what alone if *s was
 * NULL); left as it was if what is NULL or out of memory. */
static void
str_append(char **s, const char *sep, const char *what)
{
	char *n = NULL;
	if (what == NULL)
		return;
	if (*s == NULL)
		n = strdup(what);
	else if (asprintf(&n, "%s%s%s", *s, sep, what) < 0)
		n = NULL;
	if (n != NULL) {
		free(*s);
		*s = n;
	}
}

static void dlog(int level, const char *f, ...) DREAMOS_PRINTF(2, 3);

/* Logs a line (scrubbed) as the extension. */
static void
dlog(int level, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *s = vfmt(f, ap);
	va_end(ap);
	if (s != NULL)
		host->log(self, level, "%s", s);
	free(s);
}

static int
level_parse(const char *s)
{
	if (s == NULL)
		return -1;
	for (int i = 0; i < 6; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return DREAMOS_LOG_WARN;
	return -1;
}

/* The length of the longest prefix of s (at most max bytes) that does not
 * cut a UTF-8 sequence. */
static size_t
utf8_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	size_t n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

/* ---- webhooks ----------------------------------------------------------- */

/* What the outbound manager shows of url in its log lines: "POST
 * host[:port]/path", segments of 32 characters or more replaced.  Returns
 * a new string, or NULL if url is not http(s)://. */
static char *
url_where(const char *url)
{
	const char *p = strstr(url, "://");
	if (p == NULL)
		return NULL;
	p += 3;
	size_t alen = strcspn(p, "/?#");
	const char *at = memchr(p, '@', alen);
	const char *auth = at ? at + 1 : p;
	size_t authlen = alen - (size_t)(auth - p);
	const char *path = p + alen;
	size_t plen = strcspn(path, "?#");
	char *out = malloc(5 + authlen + plen + 16 * (plen / 32 + 2) + 2);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	memcpy(out, "POST ", 5);
	o = 5;
	for (size_t i = 0; i < authlen; i++)
		out[o++] = (char)tolower((unsigned char)auth[i]);
	if (plen == 0)
		out[o++] = '/';
	for (size_t i = 0; i < plen;) {
		if (path[i] == '/') {
			out[o++] = '/';
			i++;
			continue;
		}
		size_t n = strcspn(path + i, "/");
		if (n > plen - i)
			n = plen - i;
		if (n >= 32) {
			memcpy(out + o, "[redacted]", 10);
			o += 10;
		} else {
			memcpy(out + o, path + i, n);
			o += n;
		}
		i += n;
	}
	out[o] = '\0';
	return out;
}

static char *
url_hash(const char *url)
{
	uint64_t h = 1469598103934665603ull;
	for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
		h ^= *p;
		h *= 1099511628211ull;
	}
	char *s = NULL;
	if (asprintf(&s, "%016llx", (unsigned long long)h) < 0)
		s = NULL;
	return s;
}

/* Finds the hook of url, or makes it. */
static struct hook *
hook_get(const char *url)
{
	struct hook **pp = &hooks;
	int no = 1;
	for (; *pp != NULL; pp = &(*pp)->next, no++)
		if (strcmp((*pp)->url, url) == 0)
			return *pp;
	struct hook *h = calloc(1, sizeof *h);
	h->no = no;
	h->url = strdup(url);
	h->where = url_where(url);
	h->hash = url_hash(url);
	/* .../webhooks/ID/TOKEN */
	const char *p = strstr(url, "/webhooks/");
	char idbuf[16] = "";
	if (p != NULL) {
		p += 10;
		size_t n = strspn(p, "0123456789");
		if (n > 0)
			snprintf(idbuf, sizeof idbuf, "%.*s%s", (int)(n > 4 ? 4 : n), p,
			         n > 4 ? "\u2026" : "");
	}
	h->id_shown = strdup(idbuf);
	const char *e = url + strcspn(url, "?#");
	const char *path = strstr(url, "://");
	path = path ? path + 3 + strcspn(path + 3, "/?#") : e;
	const char *s = e;
	while (s > path && s[-1] != '/')
		s--;
	if (s > path && e - s >= 8)
		h->token = strndup(s, (size_t)(e - s));
	*pp = h;
	return h;
}

static struct item *
hook_at(struct hook *h, size_t i)
{
	return &h->q[(h->qhead + i) % h->qcap];
}

/* Appends text (taken over) to the queue; returns false (text freed) when
 * the queue is full. */
static bool
hook_push(struct hook *h, char *text, struct test_wait *tw)
{
	if (h->qlen >= cfg.queue_max) {
		free(text);
		return false;
	}
	if (h->qlen == h->qcap) {
		size_t ncap = h->qcap ? h->qcap * 2 : 64;
		if (ncap > cfg.queue_max)
			ncap = cfg.queue_max;
		struct item *nq = calloc(ncap, sizeof *nq);
		for (size_t i = 0; i < h->qlen; i++)
			nq[i] = *hook_at(h, i);
		free(h->q);
		h->q = nq;
		h->qcap = ncap;
		h->qhead = 0;
	}
	struct item *it = &h->q[(h->qhead + h->qlen) % h->qcap];
	it->text = text;
	it->tw = tw;
	h->qlen++;
	if (tw != NULL)
		tw->pending++;
	return true;
}

/* Removes the first item (its text freed; a waiting test must have been
 * told before). */
static void
hook_pop(struct hook *h)
{
	struct item *it = hook_at(h, 0);
	free(it->text);
	it->text = NULL;
	it->tw = NULL;
	h->qhead = (h->qhead + 1) % h->qcap;
	h->qlen--;
}

/* The line that takes the place of the records dropped, once there is
 * room for it. */
static void
hook_flush_dropped(struct hook *h)
{
	if (h->dropped_pending == 0 || h->qlen >= cfg.queue_max)
		return;
	char *t = NULL;
	if (asprintf(&t,
	             "**%llu record%s dropped** (the queue of %zu was full: Discord was "
	             "unreachable or slower than the records came)",
	             (unsigned long long)h->dropped_pending, h->dropped_pending == 1 ? "" : "s",
	             cfg.queue_max) < 0)
		return;
	if (hook_push(h, t, NULL))
		h->dropped_pending = 0;
}

static void hook_kick(struct hook *h);
static void tw_resolve(struct test_wait *tw, struct hook *h, bool ok, const char *why);

/* Queues a line for h (text taken over). */
static void
hook_enqueue(struct hook *h, char *text, struct test_wait *tw)
{
	hook_flush_dropped(h);
	if (h->qlen == 0 && h->http == 0) {
		double b = now_s() + cfg.batch_s;
		if (b > h->batch_until)
			h->batch_until = b;
	}
	if (!hook_push(h, text, tw)) {
		/* Said once until the queue drains, however often it fills. */
		if (!h->full_logged)
			dlog(DREAMOS_LOG_WARN,
			     "webhook #%d: queue full (%zu records): new records are dropped "
			     "(and counted) until Discord takes them again",
			     h->no, cfg.queue_max);
		h->full_logged = true;
		h->drop_streak++;
		h->dropped++;
		h->dropped_pending++;
		if (tw != NULL) {
			tw->pending++;
			tw_resolve(tw, h, false, "the queue is full");
		}
		return;
	}
	hook_kick(h);
}

static void
timer_fire(struct dreamos_ext *ext, void *arg)
{
	(void)ext;
	struct hook *h = arg;
	h->timer = 0;
	hook_kick(h);
}

/* Makes sure hook_kick runs again after delay seconds. */
static void
hook_wake(struct hook *h, double delay)
{
	double at = now_s() + delay;
	if (h->timer != 0) {
		if (fabs(h->timer_at - at) < 0.005)
			return;
		host->timer_remove(self, h->timer);
		h->timer = 0;
	}
	uint64_t ms = (uint64_t)ceil(delay * 1000.0);
	h->timer = host->timer_add(self, ms, 0, timer_fire, h);
	h->timer_at = at;
}

static void http_done(struct dreamos_ext *ext, void *arg, const struct dreamos_http_response *resp);
static void hook_failed(struct hook *h, long status, const char *why, bool drop);

/* Sends the first records of the queue as one message. */
static void
hook_send(struct hook *h)
{
	size_t n = 0, len = 0;
	for (; n < h->qlen; n++) {
		size_t l = strlen(hook_at(h, n)->text);
		if (n > 0 && len + 1 + l > CONTENT_MAX)
			break;
		len += (n > 0) + l;
	}
	char *content = malloc(len + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			content[o++] = '\n';
		size_t l = strlen(hook_at(h, i)->text);
		memcpy(content + o, hook_at(h, i)->text, l);
		o += l;
	}
	content[o] = '\0';
	json_t *body = json_pack("{s:s,s:{s:[]}}", "content", content, "allowed_mentions", "parse");
	if (cfg.username != NULL)
		json_object_set_new(body, "username", json_string(cfg.username));
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	free(content);
	const char *headers[] = {"Content-Type: application/json", NULL};
	struct dreamos_http_request rq = {
	    .size = sizeof rq,
	    .method = "POST",
	    .url = h->url,
	    .headers = headers,
	    .body = text,
	    .timeout_s = cfg.timeout_s,
	    .max_retries = 0, /* 429s and retries are ours */
	    .service = SERVICE,
	};
	double now = now_s();
	h->sends[h->nsends % RATE_N] = now;
	h->nsends++;
	h->batch_n = n;
	h->http = text != NULL ? host->http_request(self, &rq, http_done, NULL, h) : 0;
	free(text);
	if (h->http == 0) {
		char *why = fmt("%s", host->last_error(self));
		hook_failed(h, 0, why ? why : "cannot send", false);
		free(why);
	}
}

/* Sends now if it may, else sets the timer for when it may. */
static void
hook_kick(struct hook *h)
{
	if (h->http != 0 || h->qlen == 0)
		return;
	double now = now_s();
	double t = h->not_before;
	if (h->batch_until > t) {
		size_t len = 0;
		for (size_t i = 0; i < h->qlen && len <= CONTENT_MAX; i++)
			len += strlen(hook_at(h, i)->text) + 1;
		if (len <= CONTENT_MAX) /* wait for more, unless a message is full */
			t = h->batch_until;
	}
	if (h->nsends >= RATE_N) {
		double w = h->sends[h->nsends % RATE_N] + RATE_WINDOW; /* the oldest */
		if (w > t)
			t = w;
	}
	if (t <= now + 0.001) {
		if (h->timer != 0) {
			host->timer_remove(self, h->timer);
			h->timer = 0;
		}
		hook_send(h);
	} else {
		hook_wake(h, t - now);
	}
}

/* The value of header name in resp, or NULL. */
static const char *
resp_header(const struct dreamos_http_response *resp, const char *name)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i < resp->nheaders; i++) {
		const char *hd = resp->headers[i];
		if (strncasecmp(hd, name, nl) == 0 && hd[nl] == ':') {
			const char *v = hd + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			return v;
		}
	}
	return NULL;
}

static double
secs_of(const char *v)
{
	if (v == NULL)
		return -1;
	char *end;
	double d = strtod(v, &end);
	if (end == v || !isfinite(d) || d < 0)
		return -1;
	return d > WAIT_MAX ? WAIT_MAX : d;
}

/* Tells the tests waiting in the first n items of h. */
static void
hook_resolve_batch(struct hook *h, size_t n, bool ok, const char *why)
{
	for (size_t i = 0; i < n && i < h->qlen; i++) {
		struct item *it = hook_at(h, i);
		if (it->tw != NULL) {
			struct test_wait *tw = it->tw;
			it->tw = NULL;
			tw_resolve(tw, h, ok, why);
		}
	}
}

/* An attempt failed: backoff (the batch stays queued), or, when drop is
 * set, the batch is dropped (Discord refused it). */
static void
hook_failed(struct hook *h, long status, const char *why, bool drop)
{
	h->failures++;
	h->consecutive++;
	h->last_status = status;
	free(h->last_error);
	h->last_error = strdup(why);
	hook_resolve_batch(h, h->batch_n, false, why);
	if (drop) {
		dlog(DREAMOS_LOG_WARN, "webhook #%d: %s: %zu record%s dropped", h->no, why,
		     h->batch_n, h->batch_n == 1 ? "" : "s");
		for (size_t i = 0; i < h->batch_n && h->qlen > 0; i++)
			hook_pop(h);
		h->rejected += h->batch_n;
	} else if (h->consecutive == 1) {
		dlog(DREAMOS_LOG_WARN, "webhook #%d: %s; the records stay queued and are retried",
		     h->no, why);
	}
	h->batch_n = 0;
	double d = cfg.retry_initial_s * pow(2, (double)(h->consecutive - 1));
	if (d > cfg.retry_max_s)
		d = cfg.retry_max_s;
	if (h->not_before < now_s() + d)
		h->not_before = now_s() + d;
	hook_kick(h);
}

static void
http_done(struct dreamos_ext *ext, void *arg, const struct dreamos_http_response *resp)
{
	(void)ext;
	struct hook *h = arg;
	h->http = 0;
	double now = now_s();
	/* Discord's bucket: no more requests until Reset-After. */
	const char *rem = resp_header(resp, "X-RateLimit-Remaining");
	double ra = secs_of(resp_header(resp, "X-RateLimit-Reset-After"));
	if (rem != NULL && strtol(rem, NULL, 10) <= 0 && ra >= 0 && h->not_before < now + ra)
		h->not_before = now + ra;

	if (resp->status >= 200 && resp->status < 300) {
		h->last_status = resp->status;
		if (h->consecutive > 0)
			dlog(DREAMOS_LOG_INFO,
			     "webhook #%d: delivering again (after %llu failed attempt%s)", h->no,
			     (unsigned long long)h->consecutive, h->consecutive == 1 ? "" : "s");
		h->consecutive = 0;
		free(h->last_error);
		h->last_error = NULL;
		hook_resolve_batch(h, h->batch_n, true, NULL);
		for (size_t i = 0; i < h->batch_n && h->qlen > 0; i++)
			hook_pop(h);
		h->sent_records += h->batch_n;
		h->sent_messages++;
		h->batch_n = 0;
		hook_flush_dropped(h);
		if (h->qlen == 0 && h->full_logged) {
			dlog(DREAMOS_LOG_INFO,
			     "webhook #%d: queue drained; %llu record%s dropped while it was full",
			     h->no, (unsigned long long)h->drop_streak,
			     h->drop_streak == 1 ? " was" : "s were");
			h->full_logged = false;
			h->drop_streak = 0;
		}
		hook_kick(h);
		return;
	}
	if (resp->status == 429) {
		/* Wait as long as Discord says, then send the same batch again. */
		json_t *j = json_loads(resp->body, 0, NULL);
		json_t *v = json_object_get(j, "retry_after");
		double wait = json_is_number(v) ? json_number_value(v) : -1;
		json_decref(j);
		if (!(wait >= 0) || !isfinite(wait))
			wait = secs_of(resp_header(resp, "Retry-After"));
		if (wait < 0)
			wait = ra >= 0 ? ra : 1.0;
		if (wait > WAIT_MAX)
			wait = WAIT_MAX;
		h->rate_limited++;
		h->last_status = 429;
		free(h->last_error);
		h->last_error = fmt("HTTP 429: rate limited for %.3f s", wait);
		h->batch_n = 0;
		if (h->not_before < now + wait)
			h->not_before = now + wait;
		hook_kick(h);
		return;
	}
	char *why;
	if (resp->status == 0)
		why = fmt("%s", resp->error ? resp->error : "no answer");
	else {
		json_t *j = json_loads(resp->body, 0, NULL);
		const char *m = jstr(j, "message");
		why = m ? fmt("HTTP %ld: %.200s", resp->status, m) : fmt("HTTP %ld", resp->status);
		json_decref(j);
	}
	/* 5xx and transport errors are Discord's: retried.  Another 4xx is
	 * about the request (or the webhook is gone): the batch is dropped. */
	bool drop = resp->status >= 400 && resp->status < 500;
	hook_failed(h, resp->status, why ? why : "failed", drop);
	free(why);
}

static void
hook_free(struct hook *h)
{
	while (h->qlen > 0) {
		hook_at(h, 0)->tw = NULL;
		hook_pop(h);
	}
	free(h->q);
	secret_free(h->url);
	secret_free(h->token);
	free(h->id_shown);
	free(h->where);
	free(h->hash);
	free(h->uses);
	free(h->last_error);
	free(h);
}

/* ---- `discord test` ------------------------------------------------------ */

static void
tw_forget(struct test_wait *tw)
{
	for (size_t i = 0; i < ntws; i++) {
		if (tws[i] == tw) {
			tws[i] = tws[--ntws];
			break;
		}
	}
	free(tw->report);
	free(tw);
}

/* Answers the command (once). */
static void
tw_answer(struct test_wait *tw)
{
	if (tw->call == NULL)
		return;
	if (tw->timer != 0) {
		host->timer_remove(self, tw->timer);
		tw->timer = 0;
	}
	if (tw->failed > 0) {
		host->call_error(tw->call, "discord test: %s", tw->report ? tw->report : "failed");
		host->call_finish(tw->call, DREAMOS_CMD_ERROR);
	} else {
		host->call_reply(tw->call, tw->report ? tw->report : "delivered");
		host->call_finish(tw->call, DREAMOS_CMD_OK);
	}
	tw->call = NULL;
}

/* The line of tw for hook h is delivered (ok) or failed (why). */
static void
tw_resolve(struct test_wait *tw, struct hook *h, bool ok, const char *why)
{
	char line[400];
	if (ok)
		snprintf(line, sizeof line, "webhook #%d%s%s%s: delivered", h->no,
		         *h->id_shown ? " (id " : "", h->id_shown, *h->id_shown ? ")" : "");
	else
		snprintf(line, sizeof line, "webhook #%d%s%s%s: failed: %s", h->no,
		         *h->id_shown ? " (id " : "", h->id_shown, *h->id_shown ? ")" : "", why);
	if (tw->call != NULL) {
		str_append(&tw->report, "\n", line);
		if (!ok)
			tw->failed++;
	}
	tw->pending--;
	if (tw->pending <= 0) {
		tw_answer(tw);
		tw_forget(tw);
	}
}

static void
tw_timeout(struct dreamos_ext *ext, void *arg)
{
	(void)ext;
	struct test_wait *tw = arg;
	tw->timer = 0;
	char line[200];
	snprintf(line, sizeof line,
	         "%d webhook%s did not take the message within %.0f s (it stays queued)",
	         tw->pending, tw->pending == 1 ? "" : "s", cfg.test_timeout_s);
	str_append(&tw->report, "\n", line);
	tw->failed++;
	tw_answer(tw); /* freed when the last item lets go of it */
}

/* ---- log records --------------------------------------------------------- */

/* The line of a record (malloc'd, at most CONTENT_MAX bytes), or NULL. */
static char *
record_line(json_t *rec, int level)
{
	const char *ts = jstr(rec, "ts");
	const char *src = jstr(rec, "source");
	const char *msg = jstr(rec, "msg");
	char tbuf[16] = "";
	if (ts != NULL && strlen(ts) >= 19 && ts[10] == 'T')
		snprintf(tbuf, sizeof tbuf, "%.8s", ts + 11);
	char lv[8];
	snprintf(lv, sizeof lv, "%s", level_names[level]);
	for (char *p = lv; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	char *s = fmt("`%s` **%s** %s: %s", tbuf[0] ? tbuf : "--:--:--", lv, src ? src : "?",
	              msg ? msg : "");
	if (s == NULL)
		return NULL;
	size_t l = strlen(s);
	if (l > CONTENT_MAX) {
		size_t n = utf8_cut(s, l, CONTENT_MAX - 3);
		memcpy(s + n, "\u2026", 3);
		s[n + 3] = '\0';
	}
	return s;
}

static struct route *
route_of(const char *source)
{
	for (struct route *r = routes; r != NULL; r = r->next) {
		if (r->prefix ? strncmp(source, r->source, strlen(r->source)) == 0
		              : strcmp(source, r->source) == 0)
			return r;
	}
	return NULL;
}

/* True if rec is the outbound manager's warning about a request to one of
 * our webhooks (mirroring it would queue a record per failure). */
static bool
is_own_failure(const char *source, const char *msg)
{
	if (strcmp(source, "outbound") != 0 || msg == NULL)
		return false;
	/* "POST host:port/api/webhooks/ID/" then the token as it was shown
	 * (itself, or "[redacted]" by the manager or the host), then " " or
	 * ":". */
	for (struct hook *h = hooks; h != NULL; h = h->next) {
		const char *slash = h->where ? strrchr(h->where, '/') : NULL;
		if (slash == NULL)
			continue;
		size_t pl = (size_t)(slash + 1 - h->where);
		if (strncmp(msg, h->where, pl) != 0)
			continue;
		const char *rest = msg + pl;
		size_t n = strcspn(rest, " :/");
		if (rest[n] == ' ' || rest[n] == ':')
			return true;
	}
	return false;
}

static void
on_event(struct dreamos_ext *ext, void *arg, const char *kind, const char *json)
{
	(void)ext, (void)arg;
	if (strcmp(kind, "log") != 0)
		return;
	json_t *rec = json_loads(json, 0, NULL);
	if (!json_is_object(rec)) {
		json_decref(rec);
		return;
	}
	int level = level_parse(jstr(rec, "level"));
	const char *source = jstr(rec, "source");
	const char *msg = jstr(rec, "msg");
	if (level < 0 || source == NULL || is_own_failure(source, msg)) {
		json_decref(rec);
		return;
	}
	struct route *r = route_of(source);
	struct hook *h = r ? r->hook : default_hook;
	int min = r ? r->min_level : cfg.min_level;
	if (h != NULL && level >= min) {
		char *line = record_line(rec, level);
		if (line != NULL)
			hook_enqueue(h, line, NULL);
	}
	json_decref(rec);
}

/* ---- commands ------------------------------------------------------------ */

static json_t *
hook_json(struct hook *h)
{
	double now = now_s();
	double wait = h->http ? 0 : (h->timer ? h->timer_at - now : 0);
	json_t *o = json_pack(
	    "{s:s,s:s,s:s,s:I,s:I,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s?,s:f}", "webhook", "",
	    "id", h->id_shown, "for", h->uses ? h->uses : "", "queued", (json_int_t)h->qlen,
	    "queue_max", (json_int_t)cfg.queue_max, "in_flight", h->http != 0, "sent_records",
	    (json_int_t)h->sent_records, "sent_messages", (json_int_t)h->sent_messages, "dropped",
	    (json_int_t)h->dropped, "dropped_not_yet_reported", (json_int_t)h->dropped_pending,
	    "rejected", (json_int_t)h->rejected, "rate_limited", (json_int_t)h->rate_limited,
	    "failures", (json_int_t)h->failures, "last_status", (json_int_t)h->last_status,
	    "last_error", h->last_error, "next_attempt_s", wait > 0 ? wait : 0.0);
	char no[16];
	snprintf(no, sizeof no, "#%d", h->no);
	json_object_set_new(o, "webhook", json_string(no));
	return o;
}

static int
cmd_status(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	json_t *o;
	if (hooks == NULL) {
		o = json_pack("{s:b,s:s}", "configured", 0, "status",
		              cfg.problem ? cfg.problem
		                          : "not configured: set extensions.discord.webhook_url "
		                            "or webhook_url_env");
	} else {
		json_t *l = json_array();
		for (struct hook *h = hooks; h != NULL; h = h->next)
			json_array_append_new(l, hook_json(h));
		json_t *rl = json_object();
		for (struct route *r = routes; r != NULL; r = r->next) {
			char *k = NULL;
			if (asprintf(&k, "%s%s", r->source, r->prefix ? "*" : "") < 0)
				continue;
			char no[64];
			snprintf(no, sizeof no, "#%d (%s and above)", r->hook->no,
			         level_names[r->min_level]);
			json_object_set_new(rl, k, json_string(no));
			free(k);
		}
		o = json_pack("{s:b,s:s,s:s?,s:o,s:o}", "configured", 1, "min_level",
		              level_names[cfg.min_level], "problem", cfg.problem, "routes", rl,
		              "webhooks", l);
	}
	return reply_redacted(call, o); /* scrubbed (HELPERS_SCRUB) */
}

static int
cmd_test(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	if (hooks == NULL)
		return host->call_error(call, "discord test: %s",
		                        cfg.problem ? cfg.problem
		                                    : "not configured (no webhook_url or "
		                                      "webhook_url_env in extensions.discord)");
	size_t len = 0;
	int n = host->call_argc(call);
	for (int i = 0; i < n; i++)
		len += strlen(host->call_arg(call, i)) + 1;
	char *text = malloc(len + 1);
	text[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (i > 0)
			strcat(text, " ");
		strcat(text, host->call_arg(call, i));
	}
	struct test_wait *tw = calloc(1, sizeof *tw);
	tw->call = call;
	tw->pending = 1; /* held while queueing */
	struct test_wait **ntw = realloc(tws, (ntws + 1) * sizeof *ntw);
	if (ntw == NULL) {
		free(tw);
		free(text);
		return host->call_error(call, "discord test: out of memory");
	}
	tws = ntw;
	tws[ntws++] = tw;
	for (struct hook *h = hooks; h != NULL; h = h->next) {
		char *line = NULL;
		if (asprintf(&line, "**test** from Dream.OS (webhook #%d): %s", h->no,
		             *text ? text : "the Discord mirror works") < 0)
			continue;
		size_t l = strlen(line);
		if (l > CONTENT_MAX)
			line[utf8_cut(line, l, CONTENT_MAX)] = '\0';
		line = scrub(line);
		if (line != NULL)
			hook_enqueue(h, line, tw);
	}
	free(text);
	tw->pending--;
	if (tw->pending <= 0) { /* all answered already (full queues) */
		tw_answer(tw);
		tw_forget(tw);
		return DREAMOS_CMD_WAIT;
	}
	if (cfg.test_timeout_s > 0)
		tw->timer =
		    host->timer_add(self, (uint64_t)(cfg.test_timeout_s * 1000), 0, tw_timeout, tw);
	return DREAMOS_CMD_WAIT;
}

/* ---- configuration ------------------------------------------------------- */

static const char *const known_keys[] = {
    "webhook_url",     "webhook_url_env", "min_level", "routes",         "queue_max", "batch_ms",
    "retry_initial_s", "retry_max_s",     "timeout_s", "test_timeout_s", "username",  NULL,
};

/* The URL of a webhook setting (a mapping with webhook_url or
 * webhook_url_env): *url is set (malloc'd) or left NULL with *problem set
 * (malloc'd) when an environment variable is empty.  Returns -1 on a bad
 * setting (set_error called). */
static int
url_of(json_t *o, const char *where, char **url, char **problem)
{
	*url = NULL;
	json_t *u = json_object_get(o, "webhook_url");
	json_t *e = json_object_get(o, "webhook_url_env");
	if (u != NULL && e != NULL) {
		host->set_error(self, "%s: webhook_url and webhook_url_env both set: choose one",
		                where);
		return -1;
	}
	if ((u != NULL && !json_is_string(u)) || (e != NULL && !json_is_string(e))) {
		host->set_error(self, "%s: webhook_url/webhook_url_env must be a string", where);
		return -1;
	}
	const char *v = json_string_value(u);
	if (e != NULL) {
		v = getenv(json_string_value(e));
		if (v == NULL || *v == '\0') {
			if (asprintf(problem, "%s: $%s is not set", where, json_string_value(e)) <
			    0)
				*problem = NULL;
			return 0;
		}
	}
	if (v == NULL)
		return 0;
	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) {
		/* The value is not shown: it may be the secret. */
		host->set_error(self, "%s: the webhook URL must start with https:// (or http://)",
		                where);
		return -1;
	}
	if (strpbrk(v, " \t\r\n") != NULL) {
		host->set_error(self, "%s: the webhook URL holds white space", where);
		return -1;
	}
	*url = strdup(v);
	return 0;
}

static int
level_of(json_t *o, int dflt, const char *where)
{
	json_t *v = json_object_get(o, "min_level");
	if (v == NULL)
		return dflt;
	int l = level_parse(json_string_value(v));
	if (l < 0)
		host->set_error(
		    self, "%s.min_level: expected trace, debug, info, warn, error or fatal", where);
	return l;
}

static double
num_of(json_t *c, const char *k, double dflt, double min, double max, bool *bad)
{
	json_t *v = json_object_get(c, k);
	if (v == NULL)
		return dflt;
	double d = json_is_number(v) ? json_number_value(v) : NAN;
	if (!(d >= min && d <= max)) {
		host->set_error(self, "extensions.discord.%s: expected a number from %g to %g", k,
		                min, max);
		*bad = true;
		return dflt;
	}
	return d;
}

static void
secret(const char *s)
{
	if (s != NULL && *s && DREAMOS_HOST_HAS(host, secret_add))
		host->secret_add(self, s);
}

/* Adds p (malloc'd, or NULL; freed here) to cfg.problem. */
static void
problem_add(char *p)
{
	str_append(&cfg.problem, "; ", p);
	free(p);
}

static int
cfg_load(const char *config)
{
	json_t *c = cfg_object(config, "discord");
	if (c == NULL)
		return -1;
	const char *k;
	json_t *v;
	json_object_foreach(c, k, v)
	{
		bool known = false;
		for (size_t i = 0; known_keys[i] != NULL; i++)
			known = known || strcmp(k, known_keys[i]) == 0;
		if (!known) {
			host->set_error(self,
			                "extensions.discord: unknown key '%s' (known: webhook_url, "
			                "webhook_url_env, min_level, routes, queue_max, batch_ms, "
			                "retry_initial_s, retry_max_s, timeout_s, test_timeout_s, "
			                "username)",
			                k);
			json_decref(c);
			return -1;
		}
	}
	bool bad = false;
	cfg.min_level = level_of(c, DREAMOS_LOG_WARN, "extensions.discord");
	cfg.queue_max = (size_t)num_of(c, "queue_max", 1000, 1, 1000000, &bad);
	cfg.batch_s = num_of(c, "batch_ms", 1000, 0, 60000, &bad) / 1000.0;
	cfg.retry_initial_s = num_of(c, "retry_initial_s", 1, 0.01, 3600, &bad);
	cfg.retry_max_s = num_of(c, "retry_max_s", 60, 0.01, 86400, &bad);
	cfg.timeout_s = num_of(c, "timeout_s", 15, 0.1, 600, &bad);
	cfg.test_timeout_s = num_of(c, "test_timeout_s", 30, 0, 3600, &bad);
	json_t *un = json_object_get(c, "username");
	if (un != NULL && !json_is_string(un)) {
		host->set_error(self, "extensions.discord.username must be a string");
		bad = true;
	}
	cfg.username = xstrdup(json_string_value(un));
	if (cfg.min_level < 0 || bad) {
		json_decref(c);
		return -1;
	}
	char *url = NULL, *problem = NULL;
	if (url_of(c, "extensions.discord", &url, &problem) != 0) {
		json_decref(c);
		return -1;
	}
	problem_add(problem);
	if (url != NULL) {
		default_hook = hook_get(url);
		str_append(&default_hook->uses, ", ", "default");
		free(url);
	}
	json_t *rs = json_object_get(c, "routes");
	if (rs != NULL && !json_is_object(rs)) {
		host->set_error(self, "extensions.discord.routes must be a mapping (source: "
		                      "webhook URL or {webhook_url_env: NAME, min_level: L})");
		json_decref(c);
		return -1;
	}
	json_object_foreach(rs, k, v)
	{
		char where[200];
		snprintf(where, sizeof where, "extensions.discord.routes.%.100s", k);
		json_t *o =
		    json_is_string(v) ? json_pack("{s:O}", "webhook_url", v) : json_incref(v);
		if (!json_is_object(o) || *k == '\0') {
			host->set_error(self, "%s: expected a webhook URL or a mapping", where);
			json_decref(o);
			json_decref(c);
			return -1;
		}
		const char *rk;
		json_t *rv;
		json_object_foreach(o, rk, rv)
		{
			if (strcmp(rk, "webhook_url") != 0 && strcmp(rk, "webhook_url_env") != 0 &&
			    strcmp(rk, "min_level") != 0) {
				host->set_error(self,
				                "%s: unknown key '%s' (known: webhook_url, "
				                "webhook_url_env, min_level)",
				                where, rk);
				json_decref(o);
				json_decref(c);
				return -1;
			}
		}
		int lvl = level_of(o, cfg.min_level, where);
		problem = NULL;
		if (lvl < 0 || url_of(o, where, &url, &problem) != 0) {
			json_decref(o);
			json_decref(c);
			return -1;
		}
		json_decref(o);
		problem_add(problem);
		if (url == NULL) {
			if (problem == NULL) {
				host->set_error(self, "%s: no webhook_url or webhook_url_env",
				                where);
				json_decref(c);
				return -1;
			}
			continue;
		}
		struct route *r = calloc(1, sizeof *r);
		r->source = strdup(k);
		size_t kl = strlen(k);
		if (kl > 1 && k[kl - 1] == '*') {
			r->source[kl - 1] = '\0';
			r->prefix = true;
		}
		r->min_level = lvl;
		r->hook = hook_get(url);
		free(url);
		char *use = NULL;
		if (asprintf(&use, "route %s", k) >= 0) {
			str_append(&r->hook->uses, ", ", use);
			free(use);
		}
		struct route **pp = &routes;
		while (*pp != NULL)
			pp = &(*pp)->next;
		*pp = r;
	}
	json_decref(c);
	return 0;
}

static void
state_free(void)
{
	while (hooks != NULL) {
		struct hook *h = hooks;
		hooks = h->next;
		hook_free(h);
	}
	default_hook = NULL;
	while (routes != NULL) {
		struct route *r = routes;
		routes = r->next;
		free(r->source);
		free(r);
	}
	for (size_t i = 0; i < ntws; i++) {
		free(tws[i]->report);
		free(tws[i]);
	}
	free(tws);
	tws = NULL;
	ntws = 0;
	free(cfg.username);
	free(cfg.problem);
	memset(&cfg, 0, sizeof cfg);
	sub_id = 0;
}

/* ---- entry points -------------------------------------------------------- */

static int
init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	host = h;
	self = ext;
	if (cfg_load(config) != 0) {
		state_free();
		return -1;
	}
	struct dreamos_command st = {
	    .size = sizeof st,
	    .name = "discord status",
	    .usage = "",
	    .help = "The Discord log mirror: per webhook (shown as #N and the first digits of "
	            "its id, never its URL) the records queued, sent (records and messages), "
	            "dropped while the queue was full, refused, rate-limited, the last HTTP "
	            "status and error.",
	    .max_args = 0,
	    .role = DREAMOS_ROLE_OBSERVER,
	    .fn = cmd_status,
	};
	struct dreamos_command te = {
	    .size = sizeof te,
	    .name = "discord test",
	    .usage = "[TEXT...]",
	    .help = "Sends a test message to every webhook (after the records already queued) "
	            "and answers once each delivered it or failed.",
	    .max_args = -1,
	    .fn = cmd_test,
	};
	if (host->command_register(ext, &st) != 0 || host->command_register(ext, &te) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		state_free();
		return -1;
	}
	if (hooks == NULL) {
		/* Info, like the other core extensions' missing keys: it is loaded
		 * by default, and an unset variable is no fault of this instance. */
		if (cfg.problem != NULL)
			dlog(DREAMOS_LOG_INFO, "%s: nothing is mirrored to Discord", cfg.problem);
		return 0; /* quiet and cheap: no subscription, no timer */
	}
	for (struct hook *k = hooks; k != NULL; k = k->next) {
		secret(k->url);
		secret(k->token);
	}
	int min = cfg.min_level;
	for (struct route *r = routes; r != NULL; r = r->next)
		if (r->min_level < min)
			min = r->min_level;
	/* Without a default webhook only routed sources are wanted. */
	if (default_hook == NULL && routes != NULL) {
		min = DREAMOS_LOG_FATAL;
		for (struct route *r = routes; r != NULL; r = r->next)
			if (r->min_level < min)
				min = r->min_level;
	}
	sub_id = host->subscribe(ext, DREAMOS_EV_LOGS, min, on_event, NULL);
	if (sub_id < 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		state_free();
		return -1;
	}
	int n = 0;
	for (struct hook *k = hooks; k != NULL; k = k->next)
		n++;
	size_t nr = 0;
	for (struct route *r = routes; r != NULL; r = r->next)
		nr++;
	dlog(DREAMOS_LOG_INFO, "discord %s: mirroring %s and above to %d webhook%s (%zu route%s)",
	     DISCORD_VERSION, level_names[cfg.min_level], n, n == 1 ? "" : "s", nr,
	     nr == 1 ? "" : "s");
	if (cfg.problem != NULL)
		dlog(DREAMOS_LOG_INFO, "%s: that webhook is left out", cfg.problem);
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	(void)ext;
	/* The host sweeps our timers, requests and subscription and answers
	 * the waiting `discord test` commands. */
	state_free();
}

/* The queues and counters, by webhook (its URL's hash, not the URL). */
static char *
save_state(struct dreamos_ext *ext)
{
	(void)ext;
	if (hooks == NULL)
		return NULL;
	json_t *l = json_array();
	for (struct hook *h = hooks; h != NULL; h = h->next) {
		json_t *q = json_array();
		for (size_t i = 0; i < h->qlen; i++)
			json_array_append_new(q, json_string(hook_at(h, i)->text));
		json_t *e = json_pack(
		    "{s:s,s:o,s:I,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "hash", h->hash, "queue", q,
		    "drop_streak", (json_int_t)h->drop_streak, "full_logged", h->full_logged,
		    "sent_records", (json_int_t)h->sent_records, "sent_messages",
		    (json_int_t)h->sent_messages, "dropped", (json_int_t)h->dropped,
		    "dropped_pending", (json_int_t)h->dropped_pending, "rejected",
		    (json_int_t)h->rejected, "rate_limited", (json_int_t)h->rate_limited,
		    "failures", (json_int_t)h->failures);
		json_array_append_new(l, e);
	}
	json_t *o = json_pack("{s:i,s:o}", "version", 1, "hooks", l);
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static uint64_t
juint(json_t *o, const char *k)
{
	json_int_t v = json_integer_value(json_object_get(o, k));
	return v > 0 ? (uint64_t)v : 0;
}

static int
restore_state(struct dreamos_ext *ext, const char *state)
{
	(void)ext;
	json_t *o = json_loads(state ? state : "", 0, NULL);
	json_t *l = json_object_get(o, "hooks");
	size_t i;
	json_t *v;
	uint64_t lost = 0;
	json_array_foreach(l, i, v)
	{
		const char *hash = jstr(v, "hash");
		json_t *q = json_object_get(v, "queue");
		struct hook *h = hooks;
		while (h != NULL && (hash == NULL || strcmp(h->hash, hash) != 0))
			h = h->next;
		if (h == NULL) {
			lost += json_array_size(q);
			continue;
		}
		h->sent_records += juint(v, "sent_records");
		h->sent_messages += juint(v, "sent_messages");
		h->dropped += juint(v, "dropped");
		h->dropped_pending += juint(v, "dropped_pending");
		h->rejected += juint(v, "rejected");
		h->rate_limited += juint(v, "rate_limited");
		h->failures += juint(v, "failures");
		h->drop_streak += juint(v, "drop_streak");
		h->full_logged = h->full_logged || json_is_true(json_object_get(v, "full_logged"));
		size_t j;
		json_t *t;
		json_array_foreach(q, j, t)
		{
			const char *s = json_string_value(t);
			if (s == NULL)
				continue;
			if (!hook_push(h, strndup(s, CONTENT_MAX), NULL)) {
				h->dropped++;
				h->dropped_pending++;
			}
		}
		hook_kick(h);
	}
	json_decref(o);
	if (lost > 0)
		dlog(DREAMOS_LOG_WARN,
		     "%llu queued record%s of webhooks no longer configured %s dropped",
		     (unsigned long long)lost, lost == 1 ? "" : "s", lost == 1 ? "was" : "were");
	return 0;
}

DREAMOS_EXTENSION(.name = "discord", .version = DISCORD_VERSION,
                  .description = "Discord log mirror: log records to webhooks, batched and "
                                 "rate-limited",
                  .init = init, .fini = fini, .save_state = save_state,
                  .restore_state = restore_state);
