/* fuzz-proto.c — a libFuzzer target for CellPhone protocol v1 (proto.c):
 * the line framer, parsing and validation of every agent → orchestrator
 * message, the field accessors, and the encoding of replies.
 *
 * Input: the first byte chooses how the rest is cut up and the line limit.
 *   bits 0-2  the rest is fed to the framer in pieces of 1, 2, 3, 7, 16,
 *             64, 500 or all at once
 *   bit 3     max_line 64 (reaches line_too_long) instead of 64 KiB
 *   bit 4     the framer is stopped from a callback after the third line
 *   bit 5     each piece is fed as a message (proto_framer_feed_line, as a
 *             WebSocket's are): the reference sees a "\n" after each
 * Checks, beyond the sanitizers':
 *   - the framer hands over the same lines, in the same order, and reports
 *     the same number of oversized lines, as a simple reference splitter
 *     run on the whole input, however the input is cut up;
 *   - a line the fast path (flatjson.c) takes, jansson loads as an equal
 *     object with its keys in the same order, and a value it takes, as an
 *     equal value;
 *   - such a line, parsed as it is (spans, no JSON tree) and as its twin
 *     that only jansson reads (one more member, an array), gives the same
 *     verdict: the same type and fields through every accessor, or the same
 *     error code, detail and ref;
 *   - an accepted message, encoded again as a line, is accepted again with
 *     the same type (validation is stable under re-encoding);
 *   - an error has a code and a one-line, valid UTF-8 detail, and its
 *     `error` reply is one line of a JSON object. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-check.h"
#include "flatjson.h"
#include "proto.h"

struct state {
	struct proto_framer f;
	size_t max_line;
	bool stop_early;
	unsigned lines;
	unsigned overflows;
	/* The reference splitter: the whole input, and how far it has got. */
	const char *all;
	size_t all_len, ref_off;
	unsigned ref_overflows;
};

/* The reference splitter: returns the next line the framer must hand over
 * (setting *len), or NULL at the end; counts the oversized lines it skips.
 * A line is what lies between two '\n', less one trailing '\r'; empty lines
 * are skipped; an unfinished last line is held back (it counts as
 * oversized once more than max_line bytes of it, or max_line + 1 bytes
 * ending in '\r', have come). */
static const char *
ref_next(struct state *st, size_t *len)
{
	while (st->ref_off < st->all_len) {
		const char *p = st->all + st->ref_off;
		size_t rest = st->all_len - st->ref_off;
		const char *nl = memchr(p, '\n', rest);
		if (nl == NULL) {
			if (rest > st->max_line &&
			    !(rest == st->max_line + 1 && p[rest - 1] == '\r'))
				st->ref_overflows++;
			st->ref_off = st->all_len;
			return NULL;
		}
		size_t n = (size_t)(nl - p);
		st->ref_off += n + 1;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > st->max_line) {
			st->ref_overflows++;
			continue;
		}
		if (n == 0)
			continue;
		*len = n;
		return p;
	}
	return NULL;
}

/* Checks that line (len bytes, NUL-terminated) is one JSON object line. */
static void
check_reply_line(const char *line)
{
	size_t n = strlen(line);
	FUZZ_CHECK(!(n == 0 || line[n - 1] != '\n' || memchr(line, '\n', n - 1) != NULL));
	json_error_t je;
	json_t *j = json_loadb(line, n - 1, 0, &je);
	FUZZ_CHECK(json_is_object(j));
	json_decref(j);
}

/* Reads every field an accepted message may have. */
static void
read_fields(const struct proto_msg *m)
{
	static const char *const fields[] = {
	    "name", "to",   "topic", "ref",     "reply_to", "task", "note",       "error", "level",
	    "msg",  "text", "model", "version", "priority", "mode", "capability", "title",
	};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
		(void)proto_str_k(m, proto_key_of(fields[i]));
	(void)proto_int(m, "max_tasks", 1);
	(void)proto_int(m, "proto", 0);
	(void)proto_int(m, "id", 0);
	(void)proto_num(m, "pct", 0);
	(void)proto_num(m, "cost_usd", 0);
	(void)proto_num(m, "load", 0);
	(void)proto_bool(m, "retry", true);
	free(proto_json(m, "body"));
	(void)proto_get(m, "body");
	(void)proto_get(m, "capabilities");
	enum proto_priority p = PRIO_NORMAL;
	const char *s = proto_str(m, "priority");
	FUZZ_CHECK(!(s != NULL && m->type == PROTO_SEND &&
	             !proto_priority_parse(s, &p))); /* validated, so it must parse */
	enum proto_mode md = MODE_NORMAL;
	s = proto_str(m, "mode");
	FUZZ_CHECK(!(s != NULL && m->type == PROTO_SEND && !proto_mode_parse(s, &md)));
	(void)proto_priority_name(p);
	(void)proto_mode_name(md);
}

/* Checks an error: a code, a clean one-line detail, a well-formed reply. */
static void
check_error(const struct proto_err *e)
{
	FUZZ_CHECK(!(e->code == NULL || e->detail == NULL));
	for (const unsigned char *p = (const unsigned char *)e->detail; *p; p++) {
		FUZZ_CHECK(!(*p < 0x20 || *p == 0x7f));
	}
	FUZZ_CHECK(utf8_valid(e->detail, strlen(e->detail)));
	char *reply = proto_error(e->code, e->detail, e->ref);
	check_reply_line(reply);
	free(reply);
}

/* The fast path of parsing (flatjson.c) must never take a line that jansson
 * would load differently, or not at all. */
static void
check_fast_path(const char *line, size_t len)
{
	if (!utf8_valid(line, len))
		return;
	json_t *value = flatjson_load_value(line, len);
	if (value != NULL) {
		json_t *slow =
		    json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
		FUZZ_CHECK(slow != NULL && json_equal(value, slow));
		json_decref(slow);
		json_decref(value);
	}
	json_t *fast = flatjson_load(line, len);
	if (fast == NULL)
		return;
	json_t *slow = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	FUZZ_CHECK(slow != NULL && json_equal(fast, slow));
	char *a = json_dumps(fast, JSON_COMPACT), *b = json_dumps(slow, JSON_COMPACT);
	FUZZ_CHECK(a != NULL && b != NULL && strcmp(a, b) == 0); /* the same key order */
	free(a);
	free(b);
	json_decref(slow);
	json_decref(fast);
}

/* Whether two strings are both NULL or equal. */
static bool
same_str(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* A flat line and its twin that only jansson reads (one more member, an
 * array) must look the same to every handler. */
static void
check_two_paths(const char *line, size_t len)
{
	struct flatjson_field f[FLATJSON_FIELDS_MAX];
	if (!utf8_valid(line, len) || flatjson_scan(line, len, f, FLATJSON_FIELDS_MAX) < 0)
		return;
	json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	FUZZ_CHECK(json_is_object(o));
	if (json_object_get(o, "zz_twin") != NULL) {
		json_decref(o);
		return;
	}
	json_t *t = json_deep_copy(o);
	json_object_set_new(t, "zz_twin", json_pack("[i]", 0));
	char *twin = json_dumps(t, JSON_COMPACT);
	json_decref(t);
	FUZZ_CHECK(twin != NULL);
	struct proto_msg a, b;
	struct proto_err ea, eb;
	int ra = proto_parse(line, len, &a, &ea);
	int rb = proto_parse(twin, strlen(twin), &b, &eb);
	FUZZ_CHECK(ra == rb);
	if (ra != 0) {
		FUZZ_CHECK(same_str(ea.code, eb.code) && same_str(ea.detail, eb.detail) &&
		           same_str(ea.ref, eb.ref));
		proto_err_clear(&ea);
		proto_err_clear(&eb);
	} else {
		FUZZ_CHECK(a.type == b.type && a.nflat >= 0 && b.nflat == -1);
		const char *key;
		json_t *v;
		json_object_foreach(o, key, v)
		{
			/* (a key from the line: its tag made at run time) */
			struct proto_key k = proto_key_of(key);
			FUZZ_CHECK(same_str(proto_str_k(&a, k), proto_str_k(&b, k)));
			FUZZ_CHECK(proto_int_k(&a, k, -5) == proto_int_k(&b, k, -5));
			FUZZ_CHECK(proto_num_k(&a, k, -5) == proto_num_k(&b, k, -5));
			FUZZ_CHECK(proto_bool_k(&a, k, true) == proto_bool_k(&b, k, true));
			FUZZ_CHECK(proto_bool_k(&a, k, false) == proto_bool_k(&b, k, false));
			char *ja = proto_json_k(&a, k), *jb = proto_json_k(&b, k);
			FUZZ_CHECK(same_str(ja, jb));
			free(ja);
			free(jb);
		}
		proto_msg_free(&a);
		proto_msg_free(&b);
	}
	free(twin);
	json_decref(o);
}

static void
on_line(void *arg, const char *line, size_t len)
{
	struct state *st = arg;
	size_t want_len = 0;
	const char *want = ref_next(st, &want_len);
	FUZZ_CHECK(want != NULL && len == want_len && memcmp(line, want, len) == 0);
	FUZZ_CHECK(st->overflows == st->ref_overflows);
	check_fast_path(line, len);
	check_two_paths(line, len);
	struct proto_msg m;
	struct proto_err e;
	if (proto_parse(line, len, &m, &e) == 0) {
		FUZZ_CHECK(!(m.type >= PROTO_NTYPES ||
		             strcmp(proto_type_name(m.type), proto_str(&m, "type")) != 0));
		read_fields(&m);
		/* Encoded again, it must be accepted again, with the same type. */
		(void)proto_get(&m, "type"); /* (builds a flat line's object) */
		char *again = proto_encode(json_incref(m.obj));
		FUZZ_CHECK(again != NULL);
		check_reply_line(again);
		struct proto_msg m2;
		struct proto_err e2;
		FUZZ_CHECK(!(proto_parse(again, strlen(again) - 1, &m2, &e2) != 0));
		FUZZ_CHECK(m2.type == m.type);
		proto_msg_free(&m2);
		free(again);
		char *sent = proto_sent(proto_str(&m, "ref"), 1);
		check_reply_line(sent);
		free(sent);
		proto_msg_free(&m);
	} else {
		check_error(&e);
		proto_err_clear(&e);
	}
	if (++st->lines == 3 && st->stop_early)
		proto_framer_stop(&st->f);
}

static void
on_overflow(void *arg, size_t len_so_far)
{
	struct state *st = arg;
	FUZZ_CHECK(len_so_far > st->max_line);
	st->overflows++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t pieces[8] = {1, 2, 3, 7, 16, 64, 500, SIZE_MAX};
	if (size == 0)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;
	struct state st = {.max_line = mode & 8 ? 64 : 64 * 1024,
	                   .stop_early = (mode & 16) != 0,
	                   .all = (const char *)data,
	                   .all_len = size};
	proto_framer_init(&st.f, st.max_line, on_line, on_overflow, &st);
	size_t step = pieces[mode & 7];
	bool messages = (mode & 32) != 0;
	char *joined = NULL;
	if (messages) {
		/* What the reference splits: the pieces, each with its "\n". */
		joined = malloc(2 * size);
		FUZZ_CHECK(joined != NULL);
		size_t j = 0;
		for (size_t off = 0; off < size;) {
			size_t n = size - off < step ? size - off : step;
			memcpy(joined + j, data + off, n);
			j += n;
			joined[j++] = '\n';
			off += n;
		}
		st.all = joined;
		st.all_len = j;
	}
	for (size_t off = 0; off < size;) {
		size_t n = size - off < step ? size - off : step;
		if (messages)
			proto_framer_feed_line(&st.f, (const char *)data + off, n);
		else
			proto_framer_feed(&st.f, (const char *)data + off, n);
		off += n;
	}
	if (!st.f.stopped) {
		/* Every line and oversized line was reported, in order. */
		size_t n;
		FUZZ_CHECK(ref_next(&st, &n) == NULL);
		FUZZ_CHECK(st.overflows == st.ref_overflows);
	}
	proto_framer_free(&st.f);
	free(joined);
	return 0;
}
