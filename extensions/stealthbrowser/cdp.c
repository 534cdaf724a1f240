/* cdp.c — DevTools protocol framing and messages (see cdp.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdp.h"

#define CDP_DEFAULT_MAX ((size_t)64 * 1024 * 1024)

struct cdp_pend {
	uint64_t id;
	void *cookie;
};

struct cdp {
	char *buf;       /* complete messages (each with its NUL), then a partial one */
	size_t off, len; /* unread bytes: buf[off, len) */
	size_t cap;
	size_t partial;  /* bytes of the message not complete yet (at the end) */
	size_t complete; /* complete messages in buf */
	size_t max;
	bool skipping;  /* dropping a message that grew too long, up to its NUL */
	size_t dropped; /* messages dropped, not reported yet */
	uint64_t next_id;
	struct cdp_pend *pend;
	size_t npend, cappend;
};

static void *
cdp_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL) {
		fprintf(stderr, "stealthbrowser: out of memory\n");
		abort();
	}
	return q;
}

struct cdp *
cdp_new(size_t max_message)
{
	struct cdp *c = cdp_xrealloc(NULL, sizeof *c);
	memset(c, 0, sizeof *c);
	c->max = max_message ? max_message : CDP_DEFAULT_MAX;
	return c;
}

void
cdp_free(struct cdp *c)
{
	if (c == NULL)
		return;
	free(c->buf);
	free(c->pend);
	free(c);
}

void
cdp_reset(struct cdp *c)
{
	c->off = c->len = c->partial = c->complete = c->dropped = 0;
	c->skipping = false;
	c->npend = 0;
}

/* Appends n bytes to the buffer, compacting it first when half is read. */
static void
cdp_append(struct cdp *c, const char *p, size_t n)
{
	if (n == 0) /* nothing to add (and buf may still be NULL) */
		return;
	if (c->off > 0 && (c->off >= c->len || c->off > c->cap / 2)) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len + n > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		while (cap < c->len + n)
			cap *= 2;
		c->buf = cdp_xrealloc(c->buf, cap);
		c->cap = cap;
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
}

void
cdp_feed(struct cdp *c, const char *data, size_t len)
{
	while (len > 0) {
		const char *z = memchr(data, '\0', len);
		size_t n = z ? (size_t)(z - data) : len;
		if (c->skipping) {
			if (z != NULL)
				c->skipping = false;
		} else if (c->partial + n > c->max) {
			/* Too long: what is buffered of it goes, the rest is
			 * skipped up to its NUL. */
			c->len -= c->partial;
			c->partial = 0;
			c->dropped++;
			c->skipping = z == NULL;
		} else {
			cdp_append(c, data, n);
			c->partial += n;
			if (z != NULL) {
				cdp_append(c, "", 1);
				c->partial = 0;
				c->complete++;
			}
		}
		n += z != NULL;
		data += n;
		len -= n;
	}
}

void
cdp_msg_clear(struct cdp_msg *m)
{
	json_decref(m->root);
	memset(m, 0, sizeof *m);
}

/* Takes the pending entry of id out; returns whether there was one. */
static bool
cdp_take(struct cdp *c, uint64_t id, void **cookie)
{
	for (size_t i = 0; i < c->npend; i++) {
		if (c->pend[i].id == id) {
			*cookie = c->pend[i].cookie;
			memmove(&c->pend[i], &c->pend[i + 1], (c->npend - i - 1) * sizeof *c->pend);
			c->npend--;
			return true;
		}
	}
	*cookie = NULL;
	return false;
}

int
cdp_next(struct cdp *c, struct cdp_msg *m, char *err, size_t errlen)
{
	memset(m, 0, sizeof *m);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (c->dropped > 0) {
		c->dropped--;
		if (err != NULL)
			snprintf(err, errlen, "a message longer than %zu bytes was dropped",
			         c->max);
		return -1;
	}
	if (c->complete == 0)
		return 0;
	const char *start = c->buf + c->off;
	size_t n = strlen(start); /* the NUL is there: complete > 0 */
	c->off += n + 1;
	c->complete--;
	json_error_t je;
	json_t *root = json_loadb(start, n, 0, &je);
	if (root == NULL || !json_is_object(root)) {
		if (err != NULL)
			snprintf(err, errlen, "not a JSON object: %s",
			         root ? "other JSON" : je.text);
		json_decref(root);
		return -1;
	}
	m->root = root;
	json_t *sess = json_object_get(root, "sessionId");
	m->session = json_is_string(sess) ? json_string_value(sess) : NULL;
	json_t *id = json_object_get(root, "id");
	json_t *method = json_object_get(root, "method");
	if (json_is_integer(id) && json_integer_value(id) >= 0) {
		m->kind = CDP_RESPONSE;
		m->id = (uint64_t)json_integer_value(id);
		m->known = cdp_take(c, m->id, &m->cookie);
		json_t *e = json_object_get(root, "error");
		if (e != NULL) {
			json_t *msg = json_object_get(e, "message");
			m->error = json_is_string(msg) ? json_string_value(msg) : "error";
		}
		json_t *r = json_object_get(root, "result");
		if (!json_is_object(r)) {
			r = json_object();
			json_object_set_new(root, "result", r);
		}
		m->result = r;
		return 1;
	}
	if (json_is_string(method)) {
		m->kind = CDP_EVENT;
		m->method = json_string_value(method);
		json_t *p = json_object_get(root, "params");
		if (!json_is_object(p)) {
			p = json_object();
			json_object_set_new(root, "params", p);
		}
		m->params = p;
		return 1;
	}
	if (err != NULL)
		snprintf(err, errlen, "neither a response nor an event");
	cdp_msg_clear(m);
	return -1;
}

uint64_t
cdp_command(struct cdp *c, const char *method, json_t *params, const char *session, void *cookie,
            char **out, size_t *outlen)
{
	uint64_t id = ++c->next_id;
	json_t *j = json_pack("{s:I,s:s}", "id", (json_int_t)id, "method", method);
	json_object_set_new(j, "params", params ? params : json_object());
	if (session != NULL)
		json_object_set_new(j, "sessionId", json_string(session));
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	size_t n = strlen(s);
	/* json_dumps leaves room for its NUL: it is the frame's. */
	*out = s;
	*outlen = n + 1;
	if (c->npend == c->cappend) {
		c->cappend = c->cappend ? 2 * c->cappend : 16;
		c->pend = cdp_xrealloc(c->pend, c->cappend * sizeof *c->pend);
	}
	c->pend[c->npend].id = id;
	c->pend[c->npend].cookie = cookie;
	c->npend++;
	return id;
}

void *
cdp_forget(struct cdp *c, uint64_t id)
{
	void *cookie;
	cdp_take(c, id, &cookie);
	return cookie;
}

void
cdp_fail_all(struct cdp *c, void (*fn)(void *cookie, uint64_t id, void *arg), void *arg)
{
	size_t n = c->npend;
	struct cdp_pend *v = n ? cdp_xrealloc(NULL, n * sizeof *v) : NULL;
	if (n)
		memcpy(v, c->pend, n * sizeof *v);
	c->npend = 0;
	for (size_t i = 0; i < n; i++)
		fn(v[i].cookie, v[i].id, arg);
	free(v);
}

size_t
cdp_pending(const struct cdp *c)
{
	return c->npend;
}

size_t
cdp_buffered(const struct cdp *c)
{
	return c->len - c->off;
}
