/* helpers.h — small helpers the core extensions share (each is its own
 * module, so they are static here, and inline so that an extension may
 * leave some unused).  Include after declaring
 *
 *   static const struct dreamos_host *host;
 *   static struct dreamos_ext *self;
 *
 * and jansson.h.  What fmt, vfmt, reply_redacted and agent_send make
 * passes through redact; an extension with secrets of its own defines
 * HELPERS_SCRUB (a function taking and returning a malloc'd string, like
 * redact) before including this, and it passes through that instead. */
#ifndef DREAMOS_EXT_HELPERS_H
#define DREAMOS_EXT_HELPERS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dreamos/extension.h>
#include <jansson.h>

#ifndef HELPERS_SCRUB
#define HELPERS_SCRUB redact
#endif

/* s (malloc'd) with every secret the host knows (the API key among them:
 * secret_add) replaced by "[redacted]"; returns the new string. */
static inline char *
redact(char *s)
{
	if (s == NULL || !DREAMOS_HOST_HAS(host, redact))
		return s;
	char *r = host->redact(self, s);
	if (r == NULL)
		return s;
	free(s);
	s = strdup(r);
	host->free(r);
	return s;
}

/* vprintf into a new string, redacted (HELPERS_SCRUB); NULL if out of
 * memory.  The caller frees it. */
static inline char *vfmt(const char *f, va_list ap) DREAMOS_PRINTF(1, 0);
static inline char *
vfmt(const char *f, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, f, ap) < 0)
		s = NULL;
	return HELPERS_SCRUB(s);
}

/* printf into a new string, redacted (HELPERS_SCRUB); NULL if out of
 * memory.  The caller frees it. */
static inline char *fmt(const char *f, ...) DREAMOS_PRINTF(1, 2);
static inline char *
fmt(const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *s = vfmt(f, ap);
	va_end(ap);
	return s;
}

/* The string at key k of object o, or NULL. */
static inline const char *
jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* The number at key k of object o, or dflt. */
static inline double
jnum(const json_t *o, const char *k, double dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

/* A copy of s, or NULL for NULL; aborts when out of memory (like xmalloc:
 * the callers do not check). */
static inline char *
xstrdup(const char *s)
{
	if (s == NULL)
		return NULL;
	char *d = strdup(s);
	if (d == NULL)
		abort();
	return d;
}

/* The positional arguments of call from the from-th on, joined with
 * spaces ("" for none); NULL if out of memory.  The caller frees it. */
static inline char *
args_join(struct dreamos_call *call, int from)
{
	size_t len = 0;
	int n = host->call_argc(call);
	for (int i = from; i < n; i++)
		len += strlen(host->call_arg(call, i)) + 1;
	char *s = calloc(1, len + 1);
	if (s == NULL)
		return NULL;
	for (int i = from; i < n; i++) {
		if (i > from)
			strcat(s, " ");
		strcat(s, host->call_arg(call, i));
	}
	return s;
}

/* Answers call with o (consumed) as JSON, redacted (HELPERS_SCRUB);
 * returns DREAMOS_CMD_OK, for the command to return. */
static inline int
reply_redacted(struct dreamos_call *call, json_t *o)
{
	char *s = HELPERS_SCRUB(json_dumps(o, JSON_COMPACT));
	json_decref(o);
	host->call_reply_json(call, s);
	free(s);
	return DREAMOS_CMD_OK;
}

/* Sends o (consumed) as a protocol line of agent (nothing if agent is
 * NULL), redacted (HELPERS_SCRUB); a line the host refuses is logged as a warning that
 * names the agent (name). */
static inline void
agent_send(struct dreamos_agent *agent, const char *name, json_t *o)
{
	char *s = HELPERS_SCRUB(json_dumps(o, JSON_COMPACT));
	if (agent != NULL && host->agent_line(self, agent, s) != 0)
		host->log(self, DREAMOS_LOG_WARN, "agent_line for %s: %s", name,
		          host->last_error(self));
	free(s);
	json_decref(o);
}

/* A copy of the secret k (an API key, a token), which the host now hides
 * wherever it would show (redact); free it with secret_free. */
static inline char *
secret_keep(const char *k)
{
	if (DREAMOS_HOST_HAS(host, secret_add))
		host->secret_add(self, k);
	return strdup(k);
}

/* Frees s (may be NULL) after overwriting it, so that no copy of a secret
 * stays behind in freed memory. */
static inline void
secret_free(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* Seconds on the monotonic clock. */
static inline double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The extension's configuration (the JSON text the host gives init) as an
 * object, an empty one for none; NULL, with the host's error set, when it
 * is not a mapping.  name: the extension's, for the message. */
static inline json_t *
cfg_object(const char *config, const char *name)
{
	json_t *c = json_loads(config ? config : "{}", JSON_DECODE_ANY, NULL);
	if (c == NULL || json_is_null(c)) {
		json_decref(c);
		c = json_object();
	}
	if (!json_is_object(c)) {
		host->set_error(self, "extensions.%s must be a mapping", name);
		json_decref(c);
		return NULL;
	}
	return c;
}

/* c's base_url of an OpenAI-compatible API (default the real one), without
 * trailing slashes or "/v1" ("https://host/v1" works as well as
 * "https://host"); NULL, with the host's error set, unless it is http or
 * https.  The caller frees it. */
static inline char *
cfg_base_url(const json_t *c, const char *name)
{
	const char *u = jstr(c, "base_url");
	char *b = strdup(u ? u : "https://api.openai.com");
	size_t l = strlen(b);
	while (l > 0 && b[l - 1] == '/')
		b[--l] = '\0';
	if (l >= 3 && strcmp(b + l - 3, "/v1") == 0)
		b[l - 3] = '\0';
	if (strncmp(b, "http://", 7) != 0 && strncmp(b, "https://", 8) != 0) {
		host->set_error(self, "extensions.%s.base_url must start with http:// or https://",
		                name);
		free(b);
		return NULL;
	}
	return b;
}

/* Starts a chat completion of an OpenAI-compatible API: body (JSON text)
 * POSTed to base_url's /v1/chat/completions with key as the bearer token,
 * through the host's outbound HTTP (service "openai": the extensions that
 * talk to it share its rate limits).  chunk non-NULL: the answer streams
 * to it as server-sent events; done gets the end.  The header holding the
 * key is wiped once the host has its copy.  Returns the request's id, or 0
 * with *why set (malloc'd). */
static inline uint64_t
chat_request(const char *base_url, const char *key, const char *body, double timeout_s, int retries,
             dreamos_http_done_fn done, dreamos_http_chunk_fn chunk, void *arg, char **why)
{
	char *url = NULL, *auth = NULL;
	if (asprintf(&url, "%s/v1/chat/completions", base_url) < 0)
		url = NULL;
	if (asprintf(&auth, "Authorization: Bearer %s", key) < 0)
		auth = NULL;
	if (url == NULL || auth == NULL) {
		free(url);
		secret_free(auth);
		*why = strdup("out of memory");
		return 0;
	}
	const char *headers[] = {auth, "Content-Type: application/json",
	                         chunk ? "Accept: text/event-stream" : "Accept: application/json",
	                         NULL};
	struct dreamos_http_request rq = {
	    .size = sizeof rq,
	    .method = "POST",
	    .url = url,
	    .headers = headers,
	    .body = body,
	    .timeout_s = timeout_s,
	    .max_retries = retries,
	    .service = "openai",
	};
	uint64_t id = host->http_request(self, &rq, done, chunk, arg);
	secret_free(auth);
	free(url);
	if (id == 0)
		*why = fmt("%s", host->last_error(self));
	return id;
}

/* Defines init as setup, and fini when setup fails: the host does not call
 * fini when init fails, and setup may fail half-way.  After both. */
#define HELPERS_INIT_UNDOING(setup, fini)                                                          \
	static int init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config) \
	{                                                                                          \
		if (setup(ext, h, config) == 0)                                                    \
			return 0;                                                                  \
		fini(ext);                                                                         \
		return -1;                                                                         \
	}

#endif
