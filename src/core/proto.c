/* proto.c — CellPhone protocol v1 (DESIGN section 4, dreamos-protocol(7)).
 *
 * Three parts:
 *  - framing: a byte stream cut into lines, bounded by max_line, never
 *    buffering more than one (bounded) partial line and never scanning a
 *    byte twice: the buffer only ever holds the start of an unfinished line,
 *    which is known to contain no '\n', so each feed searches only the new
 *    bytes;
 *  - validation: one schema table (message type → fields, JSON types,
 *    required or not, numeric ranges, an optional extra check) drives every
 *    check, so the table is the single description of the wire format;
 *  - encoding of the orchestrator → agent messages as compact JSON lines. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "flatjson.h"
#include "proto.h"
#include "util.h"

/* A framer buffer bigger than this is released after its line is done, so an
 * idle agent does not keep a megabyte line's buffer. */
#define FRAMER_KEEP_CAP (64 * 1024)
/* Longest piece of input quoted in an error detail, in bytes. */
#define SNIP_MAX 48

/* ---- names ------------------------------------------------------------ */

static const char *const type_names[PROTO_NTYPES] = {
    [PROTO_HELLO] = "hello",
    [PROTO_HEARTBEAT] = "heartbeat",
    [PROTO_SEND] = "send",
    [PROTO_SUBSCRIBE] = "subscribe",
    [PROTO_UNSUBSCRIBE] = "unsubscribe",
    [PROTO_ACK] = "ack",
    [PROTO_TASK_PROGRESS] = "task.progress",
    [PROTO_TASK_DONE] = "task.done",
    [PROTO_TASK_FAIL] = "task.fail",
    [PROTO_TASK_SUBMIT] = "task.submit",
    [PROTO_LOG] = "log",
    [PROTO_DEVLOG] = "devlog",
    [PROTO_USAGE] = "usage",
};

static const char *const priority_names[PRIO_N] = {
    [PRIO_LOW] = "low",
    [PRIO_NORMAL] = "normal",
    [PRIO_HIGH] = "high",
    [PRIO_URGENT] = "urgent",
};

static const char *const mode_names[MODE_N] = {
    [MODE_NORMAL] = "NORMAL",   [MODE_TASK] = "TASK",           [MODE_SYSTEM] = "SYSTEM",
    [MODE_CAPTAIN] = "CAPTAIN", [MODE_SYNC] = "SYNC",           [MODE_VERIFY] = "VERIFY",
    [MODE_REPAIR] = "REPAIR",   [MODE_BACKUP] = "BACKUP",       [MODE_RESTORE] = "RESTORE",
    [MODE_CLEANUP] = "CLEANUP", [MODE_INTEGRATE] = "INTEGRATE",
};

/* The levels of a `log` line, as in dreamos' log records. */
static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "fatal"};

/* Returns the static wire name of t, or "?" if t is out of range. */
const char *
proto_type_name(enum proto_type t)
{
	if ((unsigned)t >= PROTO_NTYPES)
		return "?";
	return type_names[t];
}

/* Returns the static name of p ("normal"), or "?" if out of range. */
const char *
proto_priority_name(enum proto_priority p)
{
	if ((unsigned)p >= PRIO_N)
		return "?";
	return priority_names[p];
}

/* Returns true and sets *out if s names a priority (case-insensitively). */
bool
proto_priority_parse(const char *s, enum proto_priority *out)
{
	for (int i = 0; s != NULL && i < PRIO_N; i++) {
		if (strcasecmp(s, priority_names[i]) == 0) {
			*out = (enum proto_priority)i;
			return true;
		}
	}
	return false;
}

/* Returns the static name of m ("NORMAL"), or "?" if out of range. */
const char *
proto_mode_name(enum proto_mode m)
{
	if ((unsigned)m >= MODE_N)
		return "?";
	return mode_names[m];
}

/* Returns true and sets *out if s names a mode (case-insensitively). */
bool
proto_mode_parse(const char *s, enum proto_mode *out)
{
	for (int i = 0; s != NULL && i < MODE_N; i++) {
		if (strcasecmp(s, mode_names[i]) == 0) {
			*out = (enum proto_mode)i;
			return true;
		}
	}
	return false;
}

/* Returns true if c is an ASCII letter or digit (locale-independent). */
static bool
is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Returns true if s is 1..max characters, each alphanumeric or in extra. */
static bool
valid_word(const char *s, size_t max, const char *extra)
{
	if (s == NULL)
		return false;
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!is_alnum(c) && strchr(extra, c) == NULL)
			return false;
	}
	return true;
}

/* Returns true if name is a valid agent name ("captain" is reserved). */
bool
proto_valid_agent_name(const char *name)
{
	return valid_word(name, 64, "_.-") && strcmp(name, "captain") != 0;
}

/* Returns true if topic (without its '#') is a valid topic. */
bool
proto_valid_topic(const char *topic)
{
	return valid_word(topic, 128, "_.:/-");
}

/* Returns true if s is a valid capability: [A-Za-z0-9_.:-]{1,64}. */
static bool
valid_capability(const char *s)
{
	return valid_word(s, 64, "_.:-");
}

/* ---- framing ---------------------------------------------------------- */

/* Initialises f; free it with proto_framer_free. */
void
proto_framer_init(struct proto_framer *f, size_t max_line, proto_line_fn on_line,
                  proto_overflow_fn on_overflow, void *arg)
{
	buf_init(&f->buf);
	f->max_line = max_line ? max_line : PROTO_DEFAULT_MAX_LINE;
	f->discarding = false;
	f->stopped = false;
	f->on_line = on_line;
	f->on_overflow = on_overflow;
	f->arg = arg;
}

/* Frees f's buffer; f may be initialised again. */
void
proto_framer_free(struct proto_framer *f)
{
	buf_free(&f->buf);
}

/* Marks f stopped; the running feed returns after the current callback. */
void
proto_framer_stop(struct proto_framer *f)
{
	f->stopped = true;
}

/* Empties the buffer after a line, releasing it if it grew big. */
static void
framer_reset(struct proto_framer *f)
{
	if (f->buf.cap > FRAMER_KEEP_CAP)
		buf_free(&f->buf);
	f->buf.len = 0;
}

/* Appends n bytes to the buffer, growing it geometrically but never past
 * max_line + 1 bytes (the caller has checked that the total fits). */
static void
framer_append(struct proto_framer *f, const char *p, size_t n)
{
	struct buf *b = &f->buf;
	size_t need = b->len + n;
	if (need > b->cap) {
		size_t limit = f->max_line + 1;
		size_t cap = b->cap ? b->cap : 64;
		while (cap < need)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		if (cap < need)
			cap = need;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len = need;
}

/* Reports an oversized line of len bytes (so far). */
static void
framer_overflow(struct proto_framer *f, size_t len)
{
	framer_reset(f);
	if (f->on_overflow != NULL)
		f->on_overflow(f->arg, len);
}

/* Handles the bytes of an unfinished line (no '\n' among them). */
static void
framer_partial(struct proto_framer *f, const char *p, size_t n)
{
	if (f->discarding)
		return;
	size_t total = f->buf.len + n;
	/* One byte past max_line is allowed only for a '\r' that may turn out
	 * to be the end of a "\r\n". */
	if (total > f->max_line && !(total == f->max_line + 1 && p[n - 1] == '\r')) {
		f->discarding = true;
		framer_overflow(f, total);
		return;
	}
	framer_append(f, p, n);
}

/* Handles the end of a line: the n bytes before a '\n'. */
static void
framer_complete(struct proto_framer *f, const char *p, size_t n)
{
	if (f->discarding) {
		f->discarding = false;
		return;
	}
	size_t total = f->buf.len + n;
	if (total == 0)
		return;
	char last = n > 0 ? p[n - 1] : f->buf.data[f->buf.len - 1];
	size_t len = last == '\r' ? total - 1 : total;
	if (len > f->max_line) {
		framer_overflow(f, len);
		return;
	}
	if (len == 0) {
		framer_reset(f);
		return;
	}
	if (f->buf.len == 0) {
		f->on_line(f->arg, p, len); /* straight from the caller's data */
		return;
	}
	framer_append(f, p, n);
	f->on_line(f->arg, f->buf.data, len);
	framer_reset(f);
}

/* Feeds n bytes to f, calling back for each complete line. */
void
proto_framer_feed(struct proto_framer *f, const char *data, size_t n)
{
	while (n > 0 && !f->stopped) {
		const char *nl = memchr(data, '\n', n);
		if (nl == NULL) {
			framer_partial(f, data, n);
			break;
		}
		size_t seg = (size_t)(nl - data);
		framer_complete(f, data, seg);
		data = nl + 1;
		n -= seg + 1;
	}
	if (f->stopped)
		buf_free(&f->buf);
}

void
proto_framer_feed_line(struct proto_framer *f, const char *data, size_t n)
{
	if (memchr(data, '\n', n) != NULL) {
		proto_framer_feed(f, data, n);
		proto_framer_feed(f, "\n", 1);
		return;
	}
	/* As the two feeds above, without copying a line that arrives whole
	 * (framer_complete passes it on straight from data). */
	if (!f->stopped)
		framer_complete(f, data, n);
	if (f->stopped)
		buf_free(&f->buf);
}

/* ---- errors ------------------------------------------------------------ */

/* Frees what e holds and zeroes it. */
void
proto_err_clear(struct proto_err *e)
{
	free(e->detail);
	free(e->ref);
	e->code = NULL;
	e->detail = NULL;
	e->ref = NULL;
}

/* Copies at most SNIP_MAX bytes of s (valid UTF-8) into out, cut at a
 * character boundary, with "..." when cut; returns out. */
static const char *
snip(const char *s, char out[static SNIP_MAX + 4])
{
	size_t n = strlen(s);
	if (n <= SNIP_MAX) {
		memcpy(out, s, n + 1);
	} else {
		n = SNIP_MAX;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
		memcpy(out, s, n);
		memcpy(out + n, "...", 4);
	}
	utf8_clean_line(out);
	return out;
}

static bool perr(struct proto_err *e, const char *code, const char *fmt, ...) PRINTFLIKE(3, 4);

/* Fills e with code and a formatted detail; returns false (for `return
 * perr(...)` in checks). */
static bool
perr(struct proto_err *e, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	free(e->detail);
	e->code = code;
	e->detail = xvasprintf(fmt, ap);
	va_end(ap);
	utf8_clean_line(e->detail);
	return false;
}

/* ---- the schema --------------------------------------------------------- */

/* JSON types a field may have. */
#define T_STR  0x01u
#define T_INT  0x02u
#define T_REAL 0x04u
#define T_NUM  (T_INT | T_REAL)
#define T_BOOL 0x08u
#define T_OBJ  0x10u
#define T_ARR  0x20u
#define T_NULL 0x40u
#define T_ANY  0x7fu

/* Numeric range checks. */
#define R_MIN 0x1u /* value >= lo */
#define R_MAX 0x2u /* value <= hi */
#define R_GT  0x4u /* value > lo */

/* A field's value, whichever way its line was read: from a flat line's
 * spans (no JSON tree) or from jansson's object. */
struct pval {
	unsigned t;    /* T_* bit */
	const char *s; /* T_STR */
	size_t len;    /* T_STR: its length */
	json_int_t i;  /* T_INT */
	double d;      /* T_INT, T_REAL */
	json_t *j;     /* jansson's value (NULL for a flat line's) */
};

struct field;
/* An extra check of a present, well-typed value; returns false with *err
 * filled. */
typedef bool (*field_check_fn)(const char *type, const struct field *fd, const struct pval *v,
                               struct proto_err *err);

struct field {
	const char *name;
	uint32_t tag;   /* PROTO_KEY_TAG(name) */
	unsigned types; /* T_* */
	bool required;
	unsigned range; /* R_* */
	double lo, hi;
	const char *range_code; /* NULL: PERR_BAD_FIELD */
	field_check_fn check;
};

#define MAX_FIELDS 9

struct msg_schema {
	struct field fields[MAX_FIELDS]; /* ended by a NULL name */
};

/* clang-format off */
#define REQ(n, t, ...) {.name = (n), .tag = PROTO_KEY_TAG(n), .types = (t), .required = true, __VA_ARGS__}
#define OPT(n, t, ...) {.name = (n), .tag = PROTO_KEY_TAG(n), .types = (t), .required = false, __VA_ARGS__}
#define ID             .range = R_MIN, .lo = 1 /* an id: an integer >= 1 */
/* clang-format on */

static bool check_proto(const char *, const struct field *, const struct pval *,
                        struct proto_err *);
static bool check_agent_name(const char *, const struct field *, const struct pval *,
                             struct proto_err *);
static bool check_caps(const char *, const struct field *, const struct pval *, struct proto_err *);
static bool check_cap(const char *, const struct field *, const struct pval *, struct proto_err *);
static bool check_to(const char *, const struct field *, const struct pval *, struct proto_err *);
static bool check_priority(const char *, const struct field *, const struct pval *,
                           struct proto_err *);
static bool check_mode(const char *, const struct field *, const struct pval *, struct proto_err *);
static bool check_topic(const char *, const struct field *, const struct pval *,
                        struct proto_err *);
static bool check_title(const char *, const struct field *, const struct pval *,
                        struct proto_err *);
static bool check_ids(const char *, const struct field *, const struct pval *, struct proto_err *);
static bool check_level(const char *, const struct field *, const struct pval *,
                        struct proto_err *);

/* Every agent → orchestrator message and its fields (see
 * dreamos-protocol(7), which must be kept in step with this table). */
static const struct msg_schema schemas[PROTO_NTYPES] = {
    [PROTO_HELLO] = {{
        REQ("proto", T_INT, .check = check_proto),
        REQ("name", T_STR, .check = check_agent_name),
        OPT("capabilities", T_ARR, .check = check_caps),
        OPT("max_tasks", T_INT, .range = R_MIN | R_MAX, .lo = 0, .hi = 1000),
        OPT("version", T_STR),
    }},
    [PROTO_HEARTBEAT] = {{
        OPT("load", T_NUM),
    }},
    [PROTO_SEND] = {{
        REQ("to", T_STR, .check = check_to),
        REQ("body", T_ANY),
        OPT("priority", T_STR, .check = check_priority),
        OPT("mode", T_STR, .check = check_mode),
        OPT("reply_to", T_INT),
        OPT("ref", T_STR),
    }},
    [PROTO_SUBSCRIBE] = {{
        REQ("topic", T_STR, .check = check_topic),
    }},
    [PROTO_UNSUBSCRIBE] = {{
        REQ("topic", T_STR, .check = check_topic),
    }},
    [PROTO_ACK] = {{
        REQ("id", T_INT, ID),
    }},
    [PROTO_TASK_PROGRESS] = {{
        REQ("task", T_INT, ID),
        REQ("pct", T_NUM, .range = R_MIN | R_MAX, .lo = 0, .hi = 100, .range_code = PERR_BAD_PCT),
        OPT("note", T_STR),
    }},
    [PROTO_TASK_DONE] = {{
        REQ("task", T_INT, ID),
        OPT("result", T_ANY),
    }},
    [PROTO_TASK_FAIL] = {{
        REQ("task", T_INT, ID),
        REQ("error", T_STR),
        OPT("retry", T_BOOL),
    }},
    [PROTO_TASK_SUBMIT] = {{
        REQ("title", T_STR, .check = check_title),
        OPT("payload", T_ANY),
        OPT("priority", T_STR, .check = check_priority),
        OPT("capability", T_STR, .check = check_cap),
        OPT("after", T_ARR, .check = check_ids),
        OPT("timeout_s", T_NUM, .range = R_GT | R_MAX, .lo = 0, .hi = DURATION_MAX_S),
        OPT("max_retries", T_INT, .range = R_MIN | R_MAX, .lo = 0, .hi = 1000),
        OPT("ref", T_STR),
    }},
    [PROTO_LOG] = {{
        REQ("level", T_STR, .check = check_level),
        REQ("msg", T_STR),
        OPT("fields", T_OBJ),
    }},
    [PROTO_DEVLOG] = {{
        REQ("text", T_STR),
        OPT("task", T_INT, ID),
    }},
    [PROTO_USAGE] = {{
        REQ("tokens_in", T_INT, .range = R_MIN, .lo = 0),
        REQ("tokens_out", T_INT, .range = R_MIN, .lo = 0),
        REQ("cost_usd", T_NUM, .range = R_MIN, .lo = 0),
        OPT("model", T_STR),
    }},
};

/* Returns the T_* bit of v's JSON type. */
static unsigned
json_tbit(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return T_STR;
	case JSON_INTEGER:
		return T_INT;
	case JSON_REAL:
		return T_REAL;
	case JSON_TRUE:
	case JSON_FALSE:
		return T_BOOL;
	case JSON_OBJECT:
		return T_OBJ;
	case JSON_ARRAY:
		return T_ARR;
	default:
		return T_NULL;
	}
}

/* Returns "a string", "an integer", ... for the types in mask (static). */
static const char *
types_phrase(unsigned mask)
{
	switch (mask) {
	case T_STR:
		return "a string";
	case T_INT:
		return "an integer";
	case T_NUM:
		return "a number";
	case T_BOOL:
		return "a boolean";
	case T_OBJ:
		return "an object";
	case T_ARR:
		return "an array";
	default:
		return "of another type";
	}
}

/* Formats a JSON number into out; returns out. */
static const char *
fmt_num(const struct pval *v, char *out, size_t len)
{
	if (v->t == T_INT)
		snprintf(out, len, "%" JSON_INTEGER_FORMAT, v->i);
	else
		snprintf(out, len, "%.15g", v->d);
	return out;
}

/* Checks the numeric range of fd on v; returns false with *err filled. */
static bool
check_range(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	double x = v->d;
	bool ok = true;
	if ((fd->range & R_MIN) && !(x >= fd->lo))
		ok = false;
	if ((fd->range & R_MAX) && !(x <= fd->hi))
		ok = false;
	if ((fd->range & R_GT) && !(x > fd->lo))
		ok = false;
	/* A big integer must not pass by rounding to a double. */
	if (v->t == T_INT) {
		json_int_t i = v->i;
		if ((fd->range & R_MIN) && i < (json_int_t)fd->lo)
			ok = false;
		if ((fd->range & R_MAX) && i > (json_int_t)fd->hi)
			ok = false;
	}
	if (ok)
		return true;
	const char *code = fd->range_code ? fd->range_code : PERR_BAD_FIELD;
	char got[40];
	fmt_num(v, got, sizeof got);
	if ((fd->range & (R_MIN | R_MAX)) == (R_MIN | R_MAX))
		return perr(err, code, "%s: field '%s' must be between %g and %g, not %s", type,
		            fd->name, fd->lo, fd->hi, got);
	if ((fd->range & (R_GT | R_MAX)) == (R_GT | R_MAX))
		return perr(err, code,
		            "%s: field '%s' must be greater than %g and at most %g, not %s", type,
		            fd->name, fd->lo, fd->hi, got);
	if (fd->range & R_GT)
		return perr(err, code, "%s: field '%s' must be greater than %g, not %s", type,
		            fd->name, fd->lo, got);
	if (fd->range & R_MIN)
		return perr(err, code, "%s: field '%s' must be at least %g, not %s", type, fd->name,
		            fd->lo, got);
	return perr(err, code, "%s: field '%s' must be at most %g, not %s", type, fd->name, fd->hi,
	            got);
}

/* hello.proto: only PROTO_VERSION is spoken (bad_proto). */
static bool
check_proto(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	if (v->i == PROTO_VERSION)
		return true;
	return perr(err, PERR_BAD_PROTO,
	            "%s: protocol version %" JSON_INTEGER_FORMAT
	            " is not supported (this orchestrator speaks version %d)",
	            type, v->i, PROTO_VERSION);
}

/* hello.name: a valid agent name. */
static bool
check_agent_name(const char *type, const struct field *fd, const struct pval *v,
                 struct proto_err *err)
{
	const char *s = v->s;
	if (proto_valid_agent_name(s))
		return true;
	char sn[SNIP_MAX + 4];
	return perr(err, PERR_BAD_FIELD,
	            "%s: field '%s': '%s' is not a valid agent name (1 to 64 letters, digits, "
	            "'_', '.' or '-'; not 'captain')",
	            type, fd->name, snip(s, sn));
}

/* Returns false with *err filled if s is not a valid capability. */
static bool
cap_ok(const char *type, const char *field, const char *s, struct proto_err *err)
{
	if (valid_capability(s))
		return true;
	char sn[SNIP_MAX + 4];
	return perr(err, PERR_BAD_FIELD,
	            "%s: field '%s': '%s' is not a valid capability (1 to 64 letters, digits, "
	            "'_', '.', ':' or '-')",
	            type, field, snip(s, sn));
}

/* hello.capabilities: an array of valid capabilities. */
static bool
check_caps(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	for (size_t i = 0; i < json_array_size(v->j); i++) {
		json_t *e = json_array_get(v->j, i);
		if (!json_is_string(e))
			return perr(err, PERR_BAD_FIELD,
			            "%s: field '%s' must be an array of strings", type, fd->name);
		if (!cap_ok(type, fd->name, json_string_value(e), err))
			return false;
	}
	return true;
}

/* task.submit.capability: one valid capability. */
static bool
check_cap(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	return cap_ok(type, fd->name, v->s, err);
}

/* send.to: an agent name, '*', or '#' and a valid topic (bad_topic). */
static bool
check_to(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	const char *s = v->s;
	char sn[SNIP_MAX + 4];
	if (strcmp(s, "*") == 0 || strcmp(s, "captain") == 0 || proto_valid_agent_name(s))
		return true;
	if (s[0] == '#') {
		if (proto_valid_topic(s + 1))
			return true;
		return perr(err, PERR_BAD_TOPIC,
		            "%s: field '%s': '%s' is not a valid topic (1 to 128 letters, digits, "
		            "'_', '.', ':', '/' or '-' after the '#')",
		            type, fd->name, snip(s, sn));
	}
	return perr(err, PERR_BAD_FIELD,
	            "%s: field '%s' must be an agent name, '*' or '#topic', not '%s'", type,
	            fd->name, snip(s, sn));
}

/* A priority name (bad_priority). */
static bool
check_priority(const char *type, const struct field *fd, const struct pval *v,
               struct proto_err *err)
{
	enum proto_priority p;
	if (proto_priority_parse(v->s, &p))
		return true;
	char sn[SNIP_MAX + 4];
	return perr(err, PERR_BAD_PRIORITY,
	            "%s: bad priority '%s' (expected low, normal, high or urgent)", type,
	            snip(v->s, sn));
}

/* A mode name, any case (bad_mode). */
static bool
check_mode(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	enum proto_mode m;
	if (proto_mode_parse(v->s, &m))
		return true;
	char sn[SNIP_MAX + 4];
	return perr(err, PERR_BAD_MODE,
	            "%s: bad mode '%s' (expected NORMAL, TASK, SYSTEM, CAPTAIN, SYNC, VERIFY, "
	            "REPAIR, BACKUP, RESTORE, CLEANUP or INTEGRATE)",
	            type, snip(v->s, sn));
}

/* A topic, with or without its '#' (bad_topic). */
static bool
check_topic(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	const char *s = v->s;
	if (proto_valid_topic(s[0] == '#' ? s + 1 : s))
		return true;
	char sn[SNIP_MAX + 4];
	return perr(err, PERR_BAD_TOPIC,
	            "%s: bad topic '%s' (1 to 128 letters, digits, '_', '.', ':', '/' or '-', "
	            "optionally after a '#')",
	            type, snip(s, sn));
}

/* task.submit.title: 1 to 200 characters (code points). */
static bool
check_title(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	const char *s = v->s;
	size_t chars = 0;
	for (const char *p = s; *p != '\0'; p++)
		chars += ((unsigned char)*p & 0xc0) != 0x80;
	if (chars >= 1 && chars <= 200)
		return true;
	return perr(err, PERR_BAD_FIELD, "%s: field '%s' must be 1 to 200 characters, not %zu",
	            type, fd->name, chars);
}

/* task.submit.after: an array of task ids. */
static bool
check_ids(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	for (size_t i = 0; i < json_array_size(v->j); i++) {
		json_t *e = json_array_get(v->j, i);
		if (!json_is_integer(e) || json_integer_value(e) < 1)
			return perr(err, PERR_BAD_FIELD,
			            "%s: field '%s' must be an array of task ids (integers >= 1)",
			            type, fd->name);
	}
	return true;
}

/* log.level: one of the log levels. */
static bool
check_level(const char *type, const struct field *fd, const struct pval *v, struct proto_err *err)
{
	const char *s = v->s;
	for (size_t i = 0; i < nitems(level_names); i++)
		if (strcmp(s, level_names[i]) == 0)
			return true;
	char sn[SNIP_MAX + 4];
	return perr(err, PERR_BAD_FIELD,
	            "%s: bad level '%s' (expected trace, debug, info, warn, error or fatal)", type,
	            snip(s, sn));
}

_Static_assert(FLATJSON_KEY_MAX < 255, "a flat key's length must fit a key tag");

/* A key's tag from its bytes: PROTO_KEY_TAG at run time. */
static uint32_t
key_tag(const char *key, size_t len)
{
	return len == 0 ? 0
	                : (uint32_t)(len < 255 ? len : 255) | (uint32_t)(unsigned char)key[0] << 8 |
	                      (uint32_t)(unsigned char)key[len - 1] << 16;
}

struct proto_key
proto_key_of(const char *name)
{
	return (struct proto_key){name, key_tag(name, strlen(name))};
}

/* The member of a flat line named k, or NULL: by tag, then by name (a
 * flat key is at most FLATJSON_KEY_MAX bytes, so its length is all in the
 * tag). */
static const struct flatjson_field *
flat_field(const struct proto_msg *m, struct proto_key k)
{
	for (int i = 0; i < m->nflat; i++) {
		if (m->tags[i] != k.tag)
			continue;
		/* Same length, first and last byte (all of a key of two bytes
		 * or fewer): the bytes between. */
		const char *key = m->flat[i].key;
		size_t klen = m->flat[i].klen;
		if (klen <= 2)
			return &m->flat[i];
		size_t j = 1;
		while (j < klen - 1 && key[j] == k.name[j])
			j++;
		if (j == klen - 1)
			return &m->flat[i];
	}
	return NULL;
}

/* Reads field k of m into *v; false if absent. */
static bool
msg_field(const struct proto_msg *m, struct proto_key k, struct pval *v)
{
	memset(v, 0, sizeof *v);
	if (m->nflat >= 0) {
		const struct flatjson_field *f = flat_field(m, k);
		if (f == NULL)
			return false;
		switch (f->kind) {
		case FLATJSON_STR:
			v->t = T_STR;
			v->s = f->str; /* NUL-terminated in m->text */
			v->len = f->slen;
			break;
		case FLATJSON_INT:
			v->t = T_INT;
			v->i = f->num;
			v->d = (double)f->num;
			break;
		case FLATJSON_NULL:
			v->t = T_NULL;
			break;
		default:
			v->t = T_BOOL;
			v->i = f->kind == FLATJSON_TRUE;
		}
		return true;
	}
	json_t *j = json_object_get(m->obj, k.name);
	if (j == NULL)
		return false;
	v->j = j;
	v->t = json_tbit(j);
	v->s = json_string_value(j);
	v->len = json_string_length(j);
	v->i = json_is_integer(j) ? json_integer_value(j) : json_is_true(j);
	v->d = json_number_value(j);
	return true;
}

/* Checks m against the schema of t; returns false with *err filled. */
static bool
validate(enum proto_type t, const struct proto_msg *m, struct proto_err *err)
{
	const char *tname = type_names[t];
	for (const struct field *fd = schemas[t].fields; fd->name != NULL; fd++) {
		struct pval v;
		if (!msg_field(m, (struct proto_key){fd->name, fd->tag}, &v)) {
			if (fd->required)
				return perr(err, PERR_MISSING_FIELD, "%s: missing field '%s'",
				            tname, fd->name);
			continue;
		}
		if ((v.t & fd->types) == 0)
			return perr(err, PERR_BAD_FIELD, "%s: field '%s' must be %s", tname,
			            fd->name, types_phrase(fd->types));
		if (fd->range != 0 && !check_range(tname, fd, &v, err))
			return false;
		if (fd->check != NULL && !fd->check(tname, fd, &v, err))
			return false;
	}
	return true;
}

/* ---- parsing ------------------------------------------------------------ */

/* Returns true and sets *out if s is the wire name of a type. */
static bool
type_lookup(const char *s, enum proto_type *out)
{
	for (int i = 0; i < PROTO_NTYPES; i++) {
		if (s[0] == type_names[i][0] && strcmp(s, type_names[i]) == 0) {
			*out = (enum proto_type)i;
			return true;
		}
	}
	return false;
}

/* Reads a flat line into msg without a JSON tree: a copy of the line, each
 * string value NUL-terminated in place (where its closing quote was: the
 * fast path takes no string with a NUL or an escape in it), and the spans
 * of its members.  False if the line is not flat. */
static bool
load_flat(const char *line, size_t len, struct proto_msg *msg)
{
	int n = flatjson_scan(line, len, msg->flat, FLATJSON_FIELDS_MAX);
	if (n < 0)
		return false;
	msg->text = len < sizeof msg->small ? msg->small : xmalloc(len + 1);
	memcpy(msg->text, line, len);
	msg->text[len] = '\0';
	for (int i = 0; i < n; i++) {
		struct flatjson_field *f = &msg->flat[i];
		f->key = msg->text + (f->key - line);
		msg->tags[i] = key_tag(f->key, f->klen);
		if (f->kind == FLATJSON_STR) {
			f->str = msg->text + (f->str - line);
			msg->text[f->str - msg->text + (ptrdiff_t)f->slen] = '\0';
		}
	}
	msg->nflat = n;
	return true;
}

static int parse_line(const char *line, size_t len, bool checked, struct proto_msg *msg,
                      struct proto_err *err);

/* Parses and validates one line (see proto.h). */
int
proto_parse(const char *line, size_t len, struct proto_msg *msg, struct proto_err *err)
{
	return parse_line(line, len, false, msg, err);
}

int
proto_parse_utf8(const char *line, size_t len, struct proto_msg *msg, struct proto_err *err)
{
	return parse_line(line, len, true, msg, err);
}

/* checked: line is known to be valid UTF-8. */
static int
parse_line(const char *line, size_t len, bool checked, struct proto_msg *msg, struct proto_err *err)
{
	err->code = NULL;
	err->detail = NULL;
	err->ref = NULL;
	msg->obj = NULL;
	msg->text = NULL;
	msg->nflat = -1;

	if (!checked && !utf8_valid(line, len)) {
		perr(err, PERR_BAD_UTF8, "line is not valid UTF-8");
		return -1;
	}
	if (!load_flat(line, len, msg)) {
		json_error_t je;
		json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
		if (obj == NULL) {
			perr(err, PERR_BAD_JSON, "invalid JSON at column %d: %s", je.column,
			     je.text);
			return -1;
		}
		if (!json_is_object(obj)) {
			perr(err, PERR_NOT_OBJECT, "a message must be a JSON object");
			json_decref(obj);
			return -1;
		}
		msg->obj = obj;
	}

	bool ok = false;
	enum proto_type t = PROTO_HELLO;
	struct pval type;
	if (!msg_field(msg, PROTO_KEY("type"), &type)) {
		perr(err, PERR_MISSING_FIELD, "missing field 'type'");
	} else if (type.t != T_STR) {
		perr(err, PERR_BAD_FIELD, "field 'type' must be a string");
	} else if (!type_lookup(type.s, &t)) {
		char sn[SNIP_MAX + 4];
		perr(err, PERR_UNKNOWN_TYPE, "unknown message type '%s'", snip(type.s, sn));
	} else {
		ok = validate(t, msg, err);
	}
	if (!ok) {
		const char *ref = proto_str(msg, "ref");
		if (ref != NULL)
			err->ref = xstrdup(ref);
		proto_msg_free(msg);
		return -1;
	}
	msg->type = t;
	return 0;
}

/* Releases msg's object and text. */
void
proto_msg_free(struct proto_msg *msg)
{
	json_decref(msg->obj);
	msg->obj = NULL;
	if (msg->text != msg->small)
		free(msg->text);
	msg->text = NULL;
	msg->nflat = -1;
}

/* Returns field's value (borrowed from m), or NULL if absent.  A flat
 * line's object is built on the first call (m's cache: the hot paths read
 * fields through the accessors below and never need it). */
json_t *
proto_get(const struct proto_msg *m, const char *field)
{
	if (m->obj == NULL && m->nflat >= 0)
		((struct proto_msg *)m)->obj = flatjson_object(m->flat, m->nflat);
	return json_object_get(m->obj, field);
}

/* Returns field's string (owned by m), or NULL if absent or not a string. */
const char *
proto_str_k(const struct proto_msg *m, struct proto_key field)
{
	if (m->nflat >= 0) { /* (the hot path: a flat line's span, directly) */
		const struct flatjson_field *f = flat_field(m, field);
		return f != NULL && f->kind == FLATJSON_STR ? f->str : NULL;
	}
	struct pval v;
	return msg_field(m, field, &v) && v.t == T_STR ? v.s : NULL;
}

/* Returns field's integer, or dflt if absent or not an integer. */
json_int_t
proto_int_k(const struct proto_msg *m, struct proto_key field, json_int_t dflt)
{
	if (m->nflat >= 0) {
		const struct flatjson_field *f = flat_field(m, field);
		return f != NULL && f->kind == FLATJSON_INT ? f->num : dflt;
	}
	struct pval v;
	return msg_field(m, field, &v) && v.t == T_INT ? v.i : dflt;
}

/* Returns field's number (integer or real), or dflt if absent or not one. */
double
proto_num_k(const struct proto_msg *m, struct proto_key field, double dflt)
{
	struct pval v;
	return msg_field(m, field, &v) && (v.t & T_NUM) ? v.d : dflt;
}

/* Returns field's boolean, or dflt if absent or not a boolean. */
bool
proto_bool_k(const struct proto_msg *m, struct proto_key field, bool dflt)
{
	struct pval v;
	return msg_field(m, field, &v) && v.t == T_BOOL ? v.i != 0 : dflt;
}

/* Returns field's value as compact JSON text (malloc'd), or NULL if
 * absent.  A flat line's string needs no escaping: it is copied as it
 * came, with no scan and no JSON tree (the bus stores every body so). */
char *
proto_json_k(const struct proto_msg *m, struct proto_key field)
{
	struct buf b;
	buf_init(&b);
	if (!proto_json_add_k(m, field, &b)) {
		buf_free(&b);
		return NULL;
	}
	return (char *)buf_cstr(&b);
}

static int dump_to_buf(const char *p, size_t n, void *arg);

/* Appends field's value as compact JSON text to b; false if absent (or
 * out of memory). */
bool
proto_json_add_k(const struct proto_msg *m, struct proto_key field, struct buf *b)
{
	struct pval v;
	if (!msg_field(m, field, &v))
		return false;
	if (v.t == T_STR) {
		if (v.j == NULL) {
			buf_reserve(b, v.len + 2);
			buf_add_lit(b, "\"");
			buf_add_fast(b, v.s, v.len);
			buf_add_lit(b, "\"");
		} else {
			buf_reserve(b, v.len + 16);
			buf_add_json_str(b, v.s);
		}
		return true;
	}
	return json_dump_callback(proto_get(m, field.name), dump_to_buf, b,
	                          JSON_COMPACT | JSON_ENCODE_ANY) == 0;
}

/* ---- encoding ------------------------------------------------------------ */

/* Returns a new JSON string of s; invalid UTF-8 in s (which should not
 * happen) becomes '?', so the result is never NULL.  NULL s gives null. */
static json_t *
jstr(const char *s)
{
	if (s == NULL)
		return json_null();
	json_t *j = json_string(s);
	if (j != NULL)
		return j;
	char *copy = xstrdup(s);
	utf8_clean_line(copy);
	j = json_string(copy);
	free(copy);
	return j;
}

/* json_dump_callback sink: appends to a struct buf. */
static int
dump_to_buf(const char *p, size_t n, void *arg)
{
	buf_add(arg, p, n);
	return 0;
}

/* Returns obj as one compact line ending in '\n' (malloc'd; the caller
 * frees it), or NULL if obj is NULL.  Steals obj. */
char *
proto_encode(json_t *obj)
{
	if (obj == NULL)
		return NULL;
	struct buf b;
	buf_init(&b);
	buf_reserve(&b, 128);
	if (json_dump_callback(obj, dump_to_buf, &b, JSON_COMPACT) != 0) {
		json_decref(obj);
		buf_free(&b);
		return NULL;
	}
	json_decref(obj);
	buf_add(&b, "\n", 1);
	return b.data;
}

/* Returns the `welcome` line (malloc'd; the caller frees it). */
char *
proto_welcome(const char *agent, const char *session)
{
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string("welcome"));
	json_object_set_new(o, "proto", json_integer(PROTO_VERSION));
	json_object_set_new(o, "agent", jstr(agent));
	json_object_set_new(o, "session", jstr(session));
	return proto_encode(o);
}

/* Returns the `error` line (malloc'd; the caller frees it); ref NULL
 * leaves the field out. */
char *
proto_error(const char *code, const char *detail, const char *ref)
{
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string("error"));
	json_object_set_new(o, "code", jstr(code));
	json_object_set_new(o, "detail", jstr(detail ? detail : ""));
	if (ref != NULL)
		json_object_set_new(o, "ref", jstr(ref));
	return proto_encode(o);
}

/* Returns the `command` line (malloc'd; the caller frees it); steals args,
 * NULL meaning {}. */
char *
proto_command(const char *name, json_t *args)
{
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string("command"));
	json_object_set_new(o, "name", jstr(name));
	json_object_set_new(o, "args", args ? args : json_object());
	return proto_encode(o);
}

/* Returns the `sent` line (malloc'd; the caller frees it); ref NULL is
 * sent as null. */
char *
proto_sent(const char *ref, int64_t id)
{
	struct buf b;
	buf_init(&b);
	proto_sent_add(&b, ref, id);
	return (char *)buf_cstr(&b);
}

void
proto_sent_add(struct buf *b, const char *ref, int64_t id)
{
	/* Built by hand: one per message on the bus's hot path. */
	if (ref != NULL && !utf8_valid(ref, strlen(ref))) {
		json_t *o = json_object();
		json_object_set_new(o, "type", json_string("sent"));
		json_object_set_new(o, "ref", jstr(ref));
		json_object_set_new(o, "id", json_integer((json_int_t)id));
		char *line = proto_encode(o);
		buf_adds(b, line);
		free(line);
		return;
	}
	buf_reserve(b, 64 + (ref != NULL ? strlen(ref) : 0));
	buf_add_lit(b, "{\"type\":\"sent\",\"ref\":");
	if (ref != NULL)
		buf_add_json_str(b, ref);
	else
		buf_add_lit(b, "null");
	buf_add_lit(b, ",\"id\":");
	buf_add_int(b, id);
	buf_add_lit(b, "}\n");
}
