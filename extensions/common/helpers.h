/* helpers.h — small helpers the core extensions share (each is its own
 * module, so they are static here).  Include after declaring
 *
 *   static const struct dreamos_host *host;
 *   static struct dreamos_ext *self;
 *
 * and jansson.h. */
#ifndef DREAMOS_EXT_HELPERS_H
#define DREAMOS_EXT_HELPERS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dreamos/extension.h>
#include <jansson.h>

/* s (malloc'd) with every secret the host knows (the API key among them:
 * secret_add) replaced by "[redacted]"; returns the new string. */
static char *
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

/* vprintf into a new string, redacted; NULL if out of memory. */
static char *
vfmt(const char *f, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, f, ap) < 0)
		s = NULL;
	return redact(s);
}

/* printf into a new string, redacted; NULL if out of memory. */
static char *fmt(const char *f, ...) DREAMOS_PRINTF(1, 2);
static char *
fmt(const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *s = vfmt(f, ap);
	va_end(ap);
	return s;
}

/* The string at key k of object o, or NULL. */
static const char *
jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* The number at key k of object o, or dflt. */
static double
jnum(const json_t *o, const char *k, double dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

/* A copy of s, or NULL for NULL. */
static inline char *
xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
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

#endif
