/* proto.h — CellPhone protocol v1 (DESIGN section 4): NDJSON framing,
 * validation of every agent → orchestrator message type, and encoding of
 * orchestrator → agent messages.  One module, used by child-process agents
 * (pipes) and by remote agents (the Bridge's WebSocket). */
#ifndef DREAMOS_PROTO_H
#define DREAMOS_PROTO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flatjson.h"
#include "util.h"

#define PROTO_VERSION          1
#define PROTO_DEFAULT_MAX_LINE (1024 * 1024)
/* Bad lines in a row after which the agent is disconnected. */
#define PROTO_MAX_BAD_LINES 16

/* Agent → orchestrator message types. */
enum proto_type {
	PROTO_HELLO,
	PROTO_HEARTBEAT,
	PROTO_SEND,
	PROTO_SUBSCRIBE,
	PROTO_UNSUBSCRIBE,
	PROTO_ACK,
	PROTO_TASK_PROGRESS,
	PROTO_TASK_DONE,
	PROTO_TASK_FAIL,
	PROTO_TASK_SUBMIT,
	PROTO_LOG,
	PROTO_DEVLOG,
	PROTO_USAGE,
	PROTO_NTYPES
};

/* Returns the wire name of a type ("task.done"). */
const char *proto_type_name(enum proto_type t);

/* Error codes sent in `error` replies (documented in dreamos-protocol(7)). */
#define PERR_BAD_UTF8          "bad_utf8"
#define PERR_BAD_JSON          "bad_json"
#define PERR_NOT_OBJECT        "not_object"
#define PERR_UNKNOWN_TYPE      "unknown_type"
#define PERR_MISSING_FIELD     "missing_field"
#define PERR_BAD_FIELD         "bad_field"
#define PERR_LINE_TOO_LONG     "line_too_long"
#define PERR_TOO_MANY_ERRORS   "too_many_errors"
#define PERR_HELLO_FIRST       "hello_first"
#define PERR_DUPLICATE_HELLO   "duplicate_hello"
#define PERR_BAD_PROTO         "bad_proto"
#define PERR_NAME_MISMATCH     "name_mismatch"
#define PERR_NAME_TAKEN        "name_taken"
#define PERR_UNKNOWN_RECIPIENT "unknown_recipient"
#define PERR_BODY_TOO_LARGE    "body_too_large"
#define PERR_BAD_PRIORITY      "bad_priority"
#define PERR_BAD_MODE          "bad_mode"
#define PERR_BAD_TOPIC         "bad_topic"
#define PERR_SEND_TO_SELF      "send_to_self"
#define PERR_UNKNOWN_MESSAGE   "unknown_message"
#define PERR_NOT_YOUR_MESSAGE  "not_your_message"
#define PERR_UNKNOWN_TASK      "unknown_task"
#define PERR_NOT_YOUR_TASK     "not_your_task"
#define PERR_BAD_PCT           "bad_pct"
#define PERR_STORE             "store_failed"
#define PERR_BACKPRESSURE      "backpressure"

/* Message priorities, lowest first. */
enum proto_priority { PRIO_LOW, PRIO_NORMAL, PRIO_HIGH, PRIO_URGENT, PRIO_N };
const char *proto_priority_name(enum proto_priority p);
bool proto_priority_parse(const char *s, enum proto_priority *out);

/* Message modes (the seeds' vocabulary). */
enum proto_mode {
	MODE_NORMAL,
	MODE_TASK,
	MODE_SYSTEM,
	MODE_CAPTAIN,
	MODE_SYNC,
	MODE_VERIFY,
	MODE_REPAIR,
	MODE_BACKUP,
	MODE_RESTORE,
	MODE_CLEANUP,
	MODE_INTEGRATE,
	MODE_N
};
const char *proto_mode_name(enum proto_mode m);
/* Accepts the upper-case names, case-insensitively. */
bool proto_mode_parse(const char *s, enum proto_mode *out);

/* True if name is a valid agent name: [A-Za-z0-9_.-]{1,64}. */
bool proto_valid_agent_name(const char *name);
/* True if topic is a valid topic (without '#'): [A-Za-z0-9_.:/-]{1,128}. */
bool proto_valid_topic(const char *topic);

/* ---- framing ---------------------------------------------------------- */

/* Splits a byte stream into lines.  Feed it what was read; it calls the
 * line callback for each complete line (without the newline; a trailing
 * '\r' is dropped).  A line longer than max_line calls the error callback
 * once with PERR_LINE_TOO_LONG and the rest of that line is discarded.
 *
 * The line passed to on_line is NOT NUL-terminated and is only valid during
 * the call (it may point into the fed data or into the framer's buffer).
 * Empty lines are skipped.  max_line counts the bytes of a line without its
 * "\n" or "\r\n"; at most max_line + 1 bytes are ever buffered.
 * len_so_far is how many bytes of the oversized line had arrived (at least
 * max_line + 1). */
typedef void (*proto_line_fn)(void *arg, const char *line, size_t len);
typedef void (*proto_overflow_fn)(void *arg, size_t len_so_far);

struct proto_framer {
	struct buf buf; /* the start of an unfinished line (holds no '\n') */
	size_t max_line;
	bool discarding; /* inside an oversized line */
	bool stopped;    /* proto_framer_stop was called: feeds are ignored */
	proto_line_fn on_line;
	proto_overflow_fn on_overflow;
	void *arg;
};

/* max_line 0 means PROTO_DEFAULT_MAX_LINE; on_overflow may be NULL. */
void proto_framer_init(struct proto_framer *f, size_t max_line, proto_line_fn on_line,
                       proto_overflow_fn on_overflow, void *arg);
/* Frees the buffer.  Never call it from inside a callback of the same
 * framer: call proto_framer_stop there and free after feed returns. */
void proto_framer_free(struct proto_framer *f);
/* Feeds n bytes.  Callbacks may run; a callback may call
 * proto_framer_stop to make feed return early (the rest is dropped). */
void proto_framer_feed(struct proto_framer *f, const char *data, size_t n);
/* Feeds n bytes and a "\n" after them (a message of a transport that
 * frames its own messages, as a WebSocket does). */
void proto_framer_feed_line(struct proto_framer *f, const char *data, size_t n);
/* Makes the running feed return after the current callback, and every
 * later feed return at once. */
void proto_framer_stop(struct proto_framer *f);

/* ---- parsing and validation ------------------------------------------- */

/* A parsed, validated agent → orchestrator message; the accessors below
 * read its fields (strings stay valid until proto_msg_free).  Optional
 * fields absent from the line read as NULL / defaults.  A flat line (see
 * flatjson.h: most of them, `send` and `ack` among them) is kept as spans
 * of a copy of it, without a JSON tree; any other line as jansson's
 * object.  Do not copy the struct. */
struct proto_msg {
	enum proto_type type;
	json_t *obj; /* jansson's object; for a flat line, built if proto_get asks */
	char *text;  /* a flat line: its copy, each string NUL-terminated in place */
	int nflat;   /* a flat line: how many members flat[] has; else -1 */
	struct flatjson_field flat[FLATJSON_FIELDS_MAX];
	uint32_t tags[FLATJSON_FIELDS_MAX]; /* each flat member's key tag (PROTO_KEY_TAG) */
	char small[512];                    /* text, for a line that fits (most do: no malloc) */
};

/* A validation failure: code (PERR_*), a one-line detail, and the `ref` of
 * the offending line if it had a string one (else NULL). All malloc'd. */
struct proto_err {
	const char *code;
	char *detail;
	char *ref;
};
void proto_err_clear(struct proto_err *e);

/* Parses and validates one line.  Returns 0 with *msg filled (free with
 * proto_msg_free), or -1 with *err filled (free with proto_err_clear; *err
 * is overwritten on entry, not freed). Unknown extra fields are allowed.
 * Checks: valid UTF-8, JSON
 * object, known type, every required field present with the right type,
 * optional fields well typed, enumerations (priority, mode, level) valid,
 * ranges (pct 0-100, max_tasks 1-1000, proto integer). */
int proto_parse(const char *line, size_t len, struct proto_msg *msg, struct proto_err *err);
/* The same for a line known to be valid UTF-8 (from a WebSocket text
 * message, which its reader has checked): not checked again. */
int proto_parse_utf8(const char *line, size_t len, struct proto_msg *msg, struct proto_err *err);
void proto_msg_free(struct proto_msg *msg);

/* A field's name and its tag (length, first and last byte), made from a
 * string literal at compile time by PROTO_KEY: a flat line's members are
 * matched by tag, one compare each, and only a match by name.  A line is
 * looked up about 16 times on the bus's path, and comparing names byte by
 * byte was a tenth of the loop's instructions. */
struct proto_key {
	const char *name;
	uint32_t tag;
};
/* (A length of 255 or more is 255: no flat key is that long, FLATJSON_KEY_MAX.) */
#define PROTO_KEY_TAG(lit)                                                                         \
	((uint32_t)(sizeof(lit) - 1 < 255 ? sizeof(lit) - 1 : 255) |                               \
	 (uint32_t)(unsigned char)(lit)[0] << 8 |                                                  \
	 (uint32_t)(unsigned char)(lit)[sizeof(lit) - 2] << 16)
#define PROTO_KEY(lit) ((struct proto_key){"" lit, PROTO_KEY_TAG(lit)})
/* The key of a name known only at run time. */
struct proto_key proto_key_of(const char *name);

/* Field accessors (NULL / 0 / default when absent); field is a string
 * literal (see PROTO_KEY). */
#define proto_str(m, field)        proto_str_k((m), PROTO_KEY(field))
#define proto_int(m, field, dflt)  proto_int_k((m), PROTO_KEY(field), (dflt))
#define proto_num(m, field, dflt)  proto_num_k((m), PROTO_KEY(field), (dflt))
#define proto_bool(m, field, dflt) proto_bool_k((m), PROTO_KEY(field), (dflt))
/* field's value as compact JSON text (malloc'd), or NULL if absent. */
#define proto_json(m, field) proto_json_k((m), PROTO_KEY(field))
/* The same, appended to b; false if absent. */
#define proto_json_add(m, field, b) proto_json_add_k((m), PROTO_KEY(field), (b))
const char *proto_str_k(const struct proto_msg *m, struct proto_key k);
json_int_t proto_int_k(const struct proto_msg *m, struct proto_key k, json_int_t dflt);
double proto_num_k(const struct proto_msg *m, struct proto_key k, double dflt);
bool proto_bool_k(const struct proto_msg *m, struct proto_key k, bool dflt);
char *proto_json_k(const struct proto_msg *m, struct proto_key k);
bool proto_json_add_k(const struct proto_msg *m, struct proto_key k, struct buf *b);
json_t *proto_get(const struct proto_msg *m, const char *field);

/* ---- encoding (orchestrator → agent) ---------------------------------- */

/* Each returns a malloc'd line ending in '\n'; the caller frees it. */
char *proto_encode(json_t *obj); /* obj is stolen */
char *proto_welcome(const char *agent, const char *session);
char *proto_error(const char *code, const char *detail, const char *ref);
char *proto_command(const char *name, json_t *args); /* args stolen, may be NULL */
char *proto_sent(const char *ref, int64_t id);
/* Appends the `sent` line to b (the bus builds its lines in one reused buffer). */
void proto_sent_add(struct buf *b, const char *ref, int64_t id);

#endif
