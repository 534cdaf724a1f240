/* cdp.h — the Chrome DevTools protocol over --remote-debugging-pipe, as a
 * pure module: no I/O and no host calls, so that it can be fuzzed.
 *
 * Framing: each message is one JSON object followed by a NUL byte, in
 * both directions.  The reader takes bytes as they come (cdp_feed) and
 * hands out complete messages (cdp_next), parsed: a response to a command
 * (it has an "id"), matched to the command's cookie, or an event (it has a
 * "method").  A message longer than the bound given to cdp_new is dropped
 * (up to its NUL) and reported once.  Commands are built by cdp_command,
 * which numbers them and remembers their cookies until the response comes
 * or cdp_forget/cdp_fail_all drops them. */
#ifndef STEALTHBROWSER_CDP_H
#define STEALTHBROWSER_CDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum cdp_kind {
	CDP_RESPONSE = 1, /* "id" with "result" or "error" */
	CDP_EVENT = 2,    /* "method" with "params" */
};

/* One message.  Everything in it belongs to root (freed by cdp_msg_clear). */
struct cdp_msg {
	enum cdp_kind kind;
	uint64_t id;         /* RESPONSE */
	bool known;          /* RESPONSE: the id was pending (cookie is its cookie) */
	void *cookie;        /* RESPONSE: the cookie given to cdp_command */
	json_t *result;      /* RESPONSE: the result object (an empty one if none) */
	const char *error;   /* RESPONSE: the error's message, NULL on success */
	const char *method;  /* EVENT */
	json_t *params;      /* EVENT: an object (an empty one if none) */
	const char *session; /* "sessionId" of either, or NULL */
	json_t *root;
};

struct cdp;

/* A reader/writer for one connection.  max_message bounds one message
 * (bytes before its NUL); 0 means 64 MiB.  Free with cdp_free. */
struct cdp *cdp_new(size_t max_message);
void cdp_free(struct cdp *c);
/* Forgets buffered bytes and pending commands (a new connection); ids go
 * on increasing. */
void cdp_reset(struct cdp *c);

/* Appends bytes read from the browser. */
void cdp_feed(struct cdp *c, const char *data, size_t len);
/* The next complete message: 1 with *m filled (release it with
 * cdp_msg_clear), 0 if there is none yet, -1 if a message was dropped
 * (too long, not JSON, neither a response nor an event): err (may be
 * NULL) then says why; call again for the next one. */
int cdp_next(struct cdp *c, struct cdp_msg *m, char *err, size_t errlen);
void cdp_msg_clear(struct cdp_msg *m);

/* Builds a command: method, params (an object, stolen; NULL for none),
 * session (NULL: the browser).  Returns its id (> 0) and sets *out to the
 * framed bytes (JSON and the NUL; caller frees) and *outlen to their
 * length.  cookie comes back with the response. */
uint64_t cdp_command(struct cdp *c, const char *method, json_t *params, const char *session,
                     void *cookie, char **out, size_t *outlen);
/* Drops a pending command (its response will be !known).  Returns its
 * cookie, or NULL if it was not pending. */
void *cdp_forget(struct cdp *c, uint64_t id);
/* Drops every pending command, calling fn for each (in the order sent). */
void cdp_fail_all(struct cdp *c, void (*fn)(void *cookie, uint64_t id, void *arg), void *arg);
/* Commands waiting for their response. */
size_t cdp_pending(const struct cdp *c);
/* Bytes buffered (a message not complete yet). */
size_t cdp_buffered(const struct cdp *c);

#endif
