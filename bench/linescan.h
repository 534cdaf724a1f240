/* linescan.h — the bench agents' reader of CellPhone lines: one pass over a line (a JSON
 * object) that finds the value of each top-level member, and small writers of the digits
 * they put in their own lines.  Header-only, because each bench agent is one file built with
 * a plain `cc -O2`.
 *
 * A bench agent reads hundreds of thousands of lines a second on the same two cores as
 * dreamos, so what it spends is taken from what it measures: one pass, strings skipped with
 * memchr, instead of a search from the start of the line for each field it wants (which
 * cost the consumer about as much CPU per message as dreamos's own loop).  It is not a
 * validator: dreamos's lines are valid JSON, and a line this cannot follow reads as having
 * no members. */
#ifndef DREAMOS_BENCH_LINESCAN_H
#define DREAMOS_BENCH_LINESCAN_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LS_FIELDS_MAX 16

/* One member: its key, and its value's text (a string's contents without the quotes and
 * escapes left as they are; a number, literal, object or array as it stands). */
struct ls_field {
	const char *key, *val;
	size_t klen, vlen;
	int str; /* the value is a string */
};

struct ls_line {
	int n;
	struct ls_field f[LS_FIELDS_MAX];
};

static inline const char *
ls_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* p is just past an opening quote: returns the closing quote, or NULL. */
static inline const char *
ls_str_end(const char *p, const char *end)
{
	for (;;) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		if (q == NULL)
			return NULL;
		size_t bs = 0; /* an odd run of backslashes before it escapes it */
		while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
			bs++;
		if (bs % 2 == 0)
			return q;
		p = q + 1;
	}
}

/* p is at a value: returns just past it, or NULL. */
static inline const char *
ls_value_end(const char *p, const char *end)
{
	if (*p == '"') {
		const char *q = ls_str_end(p + 1, end);
		return q ? q + 1 : NULL;
	}
	if (*p == '{' || *p == '[') {
		int depth = 0;
		while (p < end) {
			if (*p == '"') {
				if (!(p = ls_str_end(p + 1, end)))
					return NULL;
			} else if (*p == '{' || *p == '[') {
				depth++;
			} else if ((*p == '}' || *p == ']') && --depth == 0) {
				return p + 1;
			}
			p++;
		}
		return NULL;
	}
	while (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\t' && *p != '\r' &&
	       *p != '\n')
		p++;
	return p;
}

/* Reads the top-level members of the object in line[0..len).  Returns how many (at most
 * LS_FIELDS_MAX are kept), or -1 if the line is not an object it can follow. */
static inline int
ls_scan(struct ls_line *l, const char *line, size_t len)
{
	const char *p = line, *end = line + len;
	l->n = 0;
	p = ls_ws(p, end);
	if (p == end || *p++ != '{')
		return -1;
	for (;;) {
		p = ls_ws(p, end);
		if (p < end && *p == '}')
			return l->n;
		if (p == end || *p != '"')
			return -1;
		const char *k = p + 1, *ke = ls_str_end(k, end);
		if (ke == NULL)
			return -1;
		p = ls_ws(ke + 1, end);
		if (p == end || *p++ != ':')
			return -1;
		p = ls_ws(p, end);
		if (p == end)
			return -1;
		const char *v = p, *ve = ls_value_end(p, end);
		if (ve == NULL)
			return -1;
		if (l->n < LS_FIELDS_MAX) {
			struct ls_field *f = &l->f[l->n++];
			f->key = k;
			f->klen = (size_t)(ke - k);
			f->str = *v == '"';
			f->val = f->str ? v + 1 : v;
			f->vlen = (size_t)(ve - v) - (f->str ? 2 : 0);
		}
		p = ls_ws(ve, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		return p < end && *p == '}' ? l->n : -1;
	}
}

/* The member named key, or NULL. */
static inline const struct ls_field *
ls_get(const struct ls_line *l, const char *key)
{
	size_t n = strlen(key);
	for (int i = 0; i < l->n; i++)
		if (l->f[i].klen == n && !memcmp(l->f[i].key, key, n))
			return &l->f[i];
	return NULL;
}

/* Whether f is the string s. */
static inline int
ls_is(const struct ls_field *f, const char *s)
{
	size_t n = strlen(s);
	return f && f->str && f->vlen == n && !memcmp(f->val, s, n);
}

/* f's value as an integer (a number, or a string of digits); dflt if absent. */
static inline long long
ls_int(const struct ls_field *f, long long dflt)
{
	return f ? strtoll(f->val, NULL, 10) : dflt;
}

/* Writes v in decimal at p; returns the end. */
static inline char *
ls_put_uint(char *p, unsigned long long v)
{
	char tmp[24];
	int n = 0;
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* Writes v in exactly width digits, zero-padded (as printf's %0*llu), at p; returns the
 * end. */
static inline char *
ls_put_digits(char *p, unsigned long long v, int width)
{
	for (int i = width - 1; i >= 0; i--, v /= 10)
		p[i] = (char)('0' + v % 10);
	return p + width;
}

/* Writes {"type":"ack","id":ID} at out (at least 48 bytes), without a
 * newline; returns its length. */
static inline size_t
ls_ack_line(char *out, long long id)
{
	static const char head[] = "{\"type\":\"ack\",\"id\":";
	memcpy(out, head, sizeof head - 1);
	char *e = ls_put_uint(out + sizeof head - 1, (unsigned long long)id);
	*e++ = '}';
	return (size_t)(e - out);
}

/* The `send` lines of a bench producer:
 *   {"type":"send","to":"TO","ref":"SEQ","body":"t=<20 digits> s=<10 digits> xxx..."}
 * with a body of size bytes as JSON (quotes included; bench/bus-consumer.c
 * takes the latency from its t=), made from pieces made once: the head up
 * to the ref's digits, and the padding and the end after the stamp. */
struct ls_sender {
	char head[160], tail[512];
	size_t head_n, tail_n;
};

/* Returns -1 if `to` or size does not fit (size: 64 to 400). */
static inline int
ls_sender_init(struct ls_sender *s, const char *to, long size)
{
	int h =
	    snprintf(s->head, sizeof s->head, "{\"type\":\"send\",\"to\":\"%s\",\"ref\":\"", to);
	if (h <= 0 || (size_t)h >= sizeof s->head || size < 64 || size > 400)
		return -1;
	s->head_n = (size_t)h;
	/* body = '"' + "t=" 20 digits " s=" 10 digits " " + padding + '"' */
	size_t padn = (size_t)size - 2 - 36;
	memset(s->tail, 'x', padn);
	memcpy(s->tail + padn, "\"}", 2);
	s->tail_n = padn + 2;
	return 0;
}

/* Writes the line of seq stamped t at line (at least 600 bytes), without a
 * newline; returns its length. */
static inline size_t
ls_send_line(const struct ls_sender *s, char *line, long seq, long long t)
{
	static const char mid[] = "\",\"body\":\"t=";
	char *p = line;
	memcpy(p, s->head, s->head_n);
	p = ls_put_uint(p + s->head_n, (unsigned long long)seq);
	memcpy(p, mid, sizeof mid - 1);
	p = ls_put_digits(p + sizeof mid - 1, (unsigned long long)t, 20);
	memcpy(p, " s=", 3);
	p = ls_put_digits(p + 3, (unsigned long long)seq, 10);
	*p++ = ' ';
	memcpy(p, s->tail, s->tail_n);
	return (size_t)(p + s->tail_n - line);
}

#endif
