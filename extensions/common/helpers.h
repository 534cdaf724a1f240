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

#endif
