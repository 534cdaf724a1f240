/* test-proto.c — CellPhone protocol v1: framing (partial reads, splits at
 * every byte, CRLF, limits, stop), validation of every message type and of
 * every error code, and the encoders. */
#include "testutil.h"

#include <time.h>

#include "flatjson.h"
#include "proto.h"

/* ---- framing helpers ---------------------------------------------------- */

#define MAX_SEEN 64

/* What the callbacks saw. */
struct seen {
	char *lines[MAX_SEEN];
	size_t lens[MAX_SEEN];
	int nlines;
	int noverflow;
	size_t overflow_len;
	int stop_after; /* stop the framer after this many lines (0: never) */
	struct proto_framer *f;
	const char *last; /* where the last line was passed from */
};

static void
seen_line(void *arg, const char *line, size_t len)
{
	struct seen *s = arg;
	assert_true(s->nlines < MAX_SEEN);
	s->lines[s->nlines] = xstrndup(line, len);
	s->lens[s->nlines] = len;
	s->last = line;
	s->nlines++;
	if (s->stop_after != 0 && s->nlines == s->stop_after)
		proto_framer_stop(s->f);
}

static void
seen_overflow(void *arg, size_t len)
{
	struct seen *s = arg;
	s->noverflow++;
	s->overflow_len = len;
}

static void
seen_clear(struct seen *s)
{
	for (int i = 0; i < s->nlines; i++)
		free(s->lines[i]);
	struct proto_framer *f = s->f;
	memset(s, 0, sizeof *s);
	s->f = f;
}

static void
feeds(struct proto_framer *f, const char *s)
{
	proto_framer_feed(f, s, strlen(s));
}

/* ---- framing ------------------------------------------------------------ */

/* proto_framer_feed_line does what feeding the bytes and a "\n" does, and
 * passes a whole line on from the caller's bytes. */
static void
test_frame_message(void **state)
{
	static const char *const cases[][2] = {
	    /* what was fed before (a partial line), the message */
	    {"", "{\"type\":\"heartbeat\"}"},
	    {"", "crlf\r"},
	    {"", ""},
	    {"", "two\nlines"},
	    {"", "trailing\n"},
	    {"{\"ty", "pe\":\"heartbeat\"}"},
	    {"", "0123456789012345678901234567890123456789"}, /* over max_line 32 */
	    {"0123456789012345678901234567890123456789", "tail"},
	    {"", "01234567890123456789012345678901\r"}, /* max_line with its '\r' */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct proto_framer f, g;
		struct seen s = {.f = &f}, t = {.f = &g};
		proto_framer_init(&f, 32, seen_line, seen_overflow, &s);
		proto_framer_init(&g, 32, seen_line, seen_overflow, &t);
		feeds(&f, cases[i][0]);
		feeds(&g, cases[i][0]);
		const char *m = cases[i][1];
		proto_framer_feed_line(&f, m, strlen(m));
		feeds(&g, m);
		feeds(&g, "\n");
		assert_int_equal(s.nlines, t.nlines);
		for (int k = 0; k < s.nlines; k++)
			assert_string_equal(s.lines[k], t.lines[k]);
		assert_int_equal(s.noverflow, t.noverflow);
		/* Both framers take the next line alike. */
		feeds(&f, "next\n");
		feeds(&g, "next\n");
		assert_int_equal(s.nlines, t.nlines);
		assert_string_equal(s.lines[s.nlines - 1], "next");
		seen_clear(&s);
		seen_clear(&t);
		proto_framer_free(&f);
		proto_framer_free(&g);
	}
	/* A whole line is not copied. */
	struct proto_framer f;
	struct seen s = {.f = &f};
	proto_framer_init(&f, 0, seen_line, seen_overflow, &s);
	const char *m = "{\"type\":\"heartbeat\"}";
	proto_framer_feed_line(&f, m, strlen(m));
	assert_int_equal(s.nlines, 1);
	assert_ptr_equal(s.last, m);
	seen_clear(&s);
	proto_framer_free(&f);
}

static void
test_frame_basic(void **state)
{
	struct proto_framer f;
	struct seen s = {.f = &f};
	proto_framer_init(&f, 0, seen_line, seen_overflow, &s);
	assert_int_equal(f.max_line, PROTO_DEFAULT_MAX_LINE);

	feeds(&f, "{\"type\":\"heartbeat\"}\n");
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], "{\"type\":\"heartbeat\"}");
	assert_int_equal(s.lens[0], 20);
	seen_clear(&s);

	/* Many lines in one read, empty lines skipped, CRLF and a tail. */
	feeds(&f, "a\nbb\n\n\r\nccc\r\n\n\nd");
	assert_int_equal(s.nlines, 3);
	assert_string_equal(s.lines[0], "a");
	assert_string_equal(s.lines[1], "bb");
	assert_string_equal(s.lines[2], "ccc");
	feeds(&f, "dd");
	assert_int_equal(s.nlines, 3);
	feeds(&f, "\r");
	feeds(&f, "\n");
	assert_int_equal(s.nlines, 4);
	assert_string_equal(s.lines[3], "ddd");
	/* Only one trailing '\r' is dropped; a '\r' inside a line stays. */
	feeds(&f, "e\rf\r\r\n");
	assert_int_equal(s.nlines, 5);
	assert_string_equal(s.lines[4], "e\rf\r");
	assert_int_equal(s.noverflow, 0);
	/* A zero-length feed does nothing. */
	proto_framer_feed(&f, "", 0);
	assert_int_equal(s.nlines, 5);
	seen_clear(&s);
	proto_framer_free(&f);
}

/* Feeds text in two pieces split at every position, and in three pieces
 * split at every pair of positions; the lines must always be the same. */
static void
test_frame_split(void **state)
{
	const char *text = "{\"type\":\"hello\"}\r\n\n{\"a\":1}\nxy\r\n\r\nz\n";
	const char *want[] = {"{\"type\":\"hello\"}", "{\"a\":1}", "xy", "z"};
	size_t n = strlen(text);
	for (size_t i = 0; i <= n; i++) {
		for (size_t j = i; j <= n; j++) {
			struct proto_framer f;
			struct seen s = {.f = &f};
			proto_framer_init(&f, 64, seen_line, seen_overflow, &s);
			proto_framer_feed(&f, text, i);
			proto_framer_feed(&f, text + i, j - i);
			proto_framer_feed(&f, text + j, n - j);
			assert_int_equal(s.nlines, 4);
			for (int k = 0; k < 4; k++)
				assert_string_equal(s.lines[k], want[k]);
			assert_int_equal(s.noverflow, 0);
			assert_int_equal(f.buf.len, 0);
			seen_clear(&s);
			proto_framer_free(&f);
		}
	}
}

/* Lines of exactly max_line bytes pass; max_line + 1 overflow, once. */
static void
test_frame_limit(void **state)
{
	enum { MAX = 16 };
	char exact[MAX + 1], over[MAX + 2];
	memset(exact, 'x', MAX);
	exact[MAX] = '\0';
	memset(over, 'y', MAX + 1);
	over[MAX + 1] = '\0';

	struct proto_framer f;
	struct seen s = {.f = &f};
	proto_framer_init(&f, MAX, seen_line, seen_overflow, &s);

	/* Whole lines in one read. */
	char *in = xasprintf("%s\n%s\r\n%s\nok\n", exact, exact, over);
	feeds(&f, in);
	free(in);
	assert_int_equal(s.nlines, 3);
	assert_string_equal(s.lines[0], exact);
	assert_string_equal(s.lines[1], exact);
	assert_string_equal(s.lines[2], "ok");
	assert_int_equal(s.noverflow, 1);
	assert_int_equal(s.overflow_len, MAX + 1);
	seen_clear(&s);

	/* Byte by byte: the exact line, with CRLF, never overflows. */
	in = xasprintf("%s\r\n", exact);
	for (size_t i = 0; in[i] != '\0'; i++)
		proto_framer_feed(&f, in + i, 1);
	free(in);
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], exact);
	assert_int_equal(s.noverflow, 0);
	assert_true(f.buf.cap <= MAX + 1);
	seen_clear(&s);

	/* An oversized line arriving in pieces: one overflow as soon as it is
	 * too long, the rest is discarded, the next line comes through. */
	feeds(&f, over);
	assert_int_equal(s.noverflow, 1);
	assert_int_equal(s.overflow_len, MAX + 1);
	assert_int_equal(f.buf.len, 0);
	assert_true(f.discarding);
	for (int i = 0; i < 1000; i++)
		feeds(&f, "more and more garbage");
	assert_int_equal(s.noverflow, 1);
	assert_true(f.buf.cap <= MAX + 1);
	feeds(&f, "tail\n{\"type\":\"ack\"}\n");
	assert_false(f.discarding);
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], "{\"type\":\"ack\"}");
	seen_clear(&s);

	/* max_line bytes then '\r' buffered, then a byte that is not '\n'. */
	feeds(&f, exact);
	feeds(&f, "\r");
	assert_int_equal(s.noverflow, 0);
	feeds(&f, "z\nnext\n");
	assert_int_equal(s.noverflow, 1);
	assert_int_equal(s.overflow_len, MAX + 2);
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], "next");
	seen_clear(&s);

	/* Buffered start, then the end of an oversized line in one piece. */
	feeds(&f, "0123456789");
	feeds(&f, "0123456789\nafter\n");
	assert_int_equal(s.noverflow, 1);
	assert_int_equal(s.overflow_len, 20);
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], "after");
	seen_clear(&s);

	/* No overflow callback: the line is dropped silently. */
	proto_framer_free(&f);
	proto_framer_init(&f, MAX, seen_line, NULL, &s);
	in = xasprintf("%s\nfine\n", over);
	feeds(&f, in);
	free(in);
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], "fine");
	seen_clear(&s);
	proto_framer_free(&f);
}

static void
test_frame_stop(void **state)
{
	struct proto_framer f;
	struct seen s = {.f = &f, .stop_after = 2};
	proto_framer_init(&f, 64, seen_line, seen_overflow, &s);
	feeds(&f, "one\ntwo\nthree\nfour");
	assert_int_equal(s.nlines, 2);
	assert_true(f.stopped);
	feeds(&f, "\nfive\n");
	assert_int_equal(s.nlines, 2);
	assert_string_equal(s.lines[1], "two");
	seen_clear(&s);
	proto_framer_free(&f);

	/* Stop from a line that came out of the buffer. */
	s.stop_after = 1;
	proto_framer_init(&f, 64, seen_line, seen_overflow, &s);
	feeds(&f, "o");
	feeds(&f, "ne\ntwo\n");
	assert_int_equal(s.nlines, 1);
	assert_string_equal(s.lines[0], "one");
	seen_clear(&s);
	proto_framer_free(&f);
}

/* A megabyte line fed one byte at a time: linear, so it takes well under a
 * second (a rescanning framer would take minutes). */
static void
test_frame_big_line_bytewise(void **state)
{
	enum { N = PROTO_DEFAULT_MAX_LINE };
	char *line = xmalloc(N + 1);
	for (size_t i = 0; i < N; i++)
		line[i] = (char)('a' + i % 26);
	line[N] = '\n';

	struct proto_framer f;
	struct seen s = {.f = &f};
	proto_framer_init(&f, 0, seen_line, seen_overflow, &s);
	int64_t t0 = time_mono_ms();
	for (size_t i = 0; i <= N; i++)
		proto_framer_feed(&f, line + i, 1);
	int64_t ms = time_mono_ms() - t0;
	assert_true(ms < 10000);
	assert_int_equal(s.nlines, 1);
	assert_int_equal(s.noverflow, 0);
	assert_int_equal(s.lens[0], N);
	assert_memory_equal(s.lines[0], line, N);
	/* The big buffer is released once the line is done. */
	assert_true(f.buf.cap <= 64 * 1024);
	seen_clear(&s);

	/* And one byte more overflows, still byte by byte. */
	for (size_t i = 0; i < N; i++)
		proto_framer_feed(&f, "x", 1);
	assert_int_equal(s.noverflow, 0);
	proto_framer_feed(&f, "x", 1);
	assert_int_equal(s.noverflow, 1);
	assert_int_equal(s.overflow_len, N + 1);
	proto_framer_feed(&f, "\n", 1);
	assert_int_equal(s.nlines, 0);
	seen_clear(&s);
	proto_framer_free(&f);
	free(line);
}

/* ---- parsing helpers ------------------------------------------------------ */

/* Parses a NUL-terminated line that must be valid; returns its type. */
static enum proto_type
parse_ok(const char *line, struct proto_msg *m)
{
	struct proto_err e;
	int rc = proto_parse(line, strlen(line), m, &e);
	if (rc != 0)
		fail_msg("unexpected error %s: %s (line %s)", e.code, e.detail, line);
	assert_null(e.code);
	assert_true(m->obj != NULL || m->nflat >= 0);
	return m->type;
}

/* Parses a line that must fail with code (and detail, when not NULL). */
static void
parse_bad_n(const char *line, size_t len, const char *code, const char *detail)
{
	struct proto_msg m;
	struct proto_err e;
	assert_int_equal(proto_parse(line, len, &m, &e), -1);
	assert_null(m.obj);
	assert_null(m.text);
	assert_non_null(e.code);
	if (strcmp(e.code, code) != 0)
		fail_msg("line %s: want %s, got %s: %s", line, code, e.code, e.detail);
	assert_non_null(e.detail);
	assert_null(strchr(e.detail, '\n'));
	if (detail != NULL)
		assert_string_equal(e.detail, detail);
	proto_err_clear(&e);
	assert_null(e.detail);
}

static void
parse_bad(const char *line, const char *code, const char *detail)
{
	parse_bad_n(line, strlen(line), code, detail);
}

/* ---- parsing --------------------------------------------------------------- */

static void
test_parse_every_type(void **state)
{
	struct proto_msg m;

	assert_int_equal(parse_ok("{\"type\":\"hello\",\"proto\":1,\"name\":\"scout-1\","
	                          "\"capabilities\":[\"web.search\",\"llm:gpt-4\"],"
	                          "\"max_tasks\":4,\"version\":\"0.3\"}",
	                          &m),
	                 PROTO_HELLO);
	assert_string_equal(proto_str(&m, "name"), "scout-1");
	assert_int_equal(proto_int(&m, "max_tasks", 1), 4);
	assert_int_equal(json_array_size(proto_get(&m, "capabilities")), 2);
	proto_msg_free(&m);
	assert_null(m.obj);

	assert_int_equal(parse_ok("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\"}", &m),
	                 PROTO_HELLO);
	assert_int_equal(proto_int(&m, "max_tasks", 1), 1);
	assert_null(proto_str(&m, "version"));
	assert_null(proto_get(&m, "capabilities"));
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"heartbeat\"}", &m), PROTO_HEARTBEAT);
	assert_true(proto_num(&m, "load", -1) == -1);
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"heartbeat\",\"load\":0.5}", &m), PROTO_HEARTBEAT);
	assert_true(proto_num(&m, "load", -1) == 0.5);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"send\",\"to\":\"writer\",\"body\":{\"q\":[1,2]},"
	                          "\"priority\":\"high\",\"mode\":\"task\",\"reply_to\":7,"
	                          "\"ref\":\"r1\"}",
	                          &m),
	                 PROTO_SEND);
	assert_string_equal(proto_str(&m, "to"), "writer");
	assert_true(json_is_object(proto_get(&m, "body")));
	assert_int_equal(proto_int(&m, "reply_to", 0), 7);
	assert_string_equal(proto_str(&m, "ref"), "r1");
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"send\",\"to\":\"*\",\"body\":null}", &m),
	                 PROTO_SEND);
	assert_true(json_is_null(proto_get(&m, "body")));
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"send\",\"to\":\"#news/tech\",\"body\":\"hi\"}", &m),
	                 PROTO_SEND);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"subscribe\",\"topic\":\"#news\"}", &m),
	                 PROTO_SUBSCRIBE);
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"unsubscribe\",\"topic\":\"news:x/y\"}", &m),
	                 PROTO_UNSUBSCRIBE);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"ack\",\"id\":42}", &m), PROTO_ACK);
	assert_int_equal(proto_int(&m, "id", 0), 42);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"task.progress\",\"task\":3,\"pct\":37.5,"
	                          "\"note\":\"halfway\"}",
	                          &m),
	                 PROTO_TASK_PROGRESS);
	assert_true(proto_num(&m, "pct", 0) == 37.5);
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"task.progress\",\"task\":3,\"pct\":100}", &m),
	                 PROTO_TASK_PROGRESS);
	assert_true(proto_num(&m, "pct", 0) == 100);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"task.done\",\"task\":3,\"result\":[1]}", &m),
	                 PROTO_TASK_DONE);
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"task.done\",\"task\":3}", &m), PROTO_TASK_DONE);
	assert_null(proto_get(&m, "result"));
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"task.fail\",\"task\":3,\"error\":\"boom\"}", &m),
	                 PROTO_TASK_FAIL);
	assert_true(proto_bool(&m, "retry", true));
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"task.fail\",\"task\":3,\"error\":\"x\","
	                          "\"retry\":false}",
	                          &m),
	                 PROTO_TASK_FAIL);
	assert_false(proto_bool(&m, "retry", true));
	proto_msg_free(&m);

	assert_int_equal(
	    parse_ok("{\"type\":\"task.submit\",\"title\":\"Summarise \xc3\xa9t\xc3\xa9\","
	             "\"payload\":{\"url\":\"x\"},\"priority\":\"urgent\","
	             "\"capability\":\"web.search\",\"after\":[1,2],\"timeout_s\":0.5,"
	             "\"max_retries\":0,\"ref\":\"t1\"}",
	             &m),
	    PROTO_TASK_SUBMIT);
	assert_true(proto_num(&m, "timeout_s", 0) == 0.5);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"log\",\"level\":\"warn\",\"msg\":\"disk\","
	                          "\"fields\":{\"free\":12}}",
	                          &m),
	                 PROTO_LOG);
	proto_msg_free(&m);

	assert_int_equal(
	    parse_ok("{\"type\":\"devlog\",\"text\":\"Today I learned\",\"task\":3}", &m),
	    PROTO_DEVLOG);
	proto_msg_free(&m);

	assert_int_equal(parse_ok("{\"type\":\"usage\",\"tokens_in\":1200,\"tokens_out\":0,"
	                          "\"cost_usd\":0,\"model\":\"gpt-4o\"}",
	                          &m),
	                 PROTO_USAGE);
	assert_int_equal(proto_int(&m, "tokens_in", 0), 1200);
	assert_true(proto_num(&m, "cost_usd", 1) == 0);
	/* Accessors on a field of another type give the default. */
	assert_null(proto_str(&m, "tokens_in"));
	assert_int_equal(proto_int(&m, "model", -5), -5);
	assert_true(proto_num(&m, "model", 2.5) == 2.5);
	assert_true(proto_bool(&m, "model", true));
	proto_msg_free(&m);

	/* Extra fields are allowed (forward compatibility); surrounding
	 * whitespace is fine; the input need not be NUL-terminated. */
	assert_int_equal(parse_ok(" {\"type\":\"heartbeat\",\"future\":{\"x\":1}} ", &m),
	                 PROTO_HEARTBEAT);
	proto_msg_free(&m);
	const char *two = "{\"type\":\"heartbeat\"}{\"type\":\"ack\"}";
	struct proto_err e;
	assert_int_equal(proto_parse(two, 20, &m, &e), 0);
	assert_int_equal(m.type, PROTO_HEARTBEAT);
	proto_msg_free(&m);
}

static void
test_parse_errors(void **state)
{
	/* Encoding and syntax. */
	parse_bad("{\"type\":\"heartbeat\",\"x\":\"\xc0\xaf\"}", PERR_BAD_UTF8,
	          "line is not valid UTF-8"); /* overlong '/' */
	parse_bad("{\"type\":\"heartbeat\",\"x\":\"\xe2\x82\"}", PERR_BAD_UTF8, NULL); /* cut */
	parse_bad("{\"type\":\"heartbeat\"}\xe2\x82", PERR_BAD_UTF8, NULL); /* cut at the end */
	parse_bad("{\"type\":\"heartbeat\",\"x\":\"\xed\xa0\x80\"}", PERR_BAD_UTF8, NULL);
	/* proto_parse_utf8 (a WebSocket message its reader checked) reads a
	 * line as proto_parse does, only without checking it again. */
	{
		static const char l[] = "{\"type\":\"send\",\"to\":\"b\",\"body\":\"\xc3\xa9\"}";
		struct proto_msg m;
		struct proto_err e;
		assert_int_equal(proto_parse_utf8(l, sizeof l - 1, &m, &e), 0);
		assert_int_equal(m.type, PROTO_SEND);
		assert_string_equal(proto_str(&m, "body"), "\xc3\xa9");
		proto_msg_free(&m);
		assert_int_equal(proto_parse_utf8("{\"type\":1}", 10, &m, &e), -1);
		assert_string_equal(e.code, PERR_BAD_FIELD);
		proto_err_clear(&e);
	}
	parse_bad("{\"type\":\"heartbeat\",}", PERR_BAD_JSON, NULL);
	parse_bad("{\"type\":\"heartbeat\"", PERR_BAD_JSON, NULL);
	parse_bad("{\"type\":\"heartbeat\"} x", PERR_BAD_JSON, NULL);
	parse_bad("hello", PERR_BAD_JSON, NULL);
	parse_bad_n("{\"type\":\"heart\0beat\"}", 21, PERR_BAD_JSON, NULL);
	{
		struct proto_msg m;
		struct proto_err e;
		const char *l = "{\"type\":\"ack\",\"id\":1,\"id\":2}";
		assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
		assert_string_equal(e.code, PERR_BAD_JSON);
		assert_non_null(strstr(e.detail, "invalid JSON at column "));
		assert_non_null(strstr(e.detail, "duplicate object key"));
		proto_err_clear(&e);
		l = "{\"type\":\"ack\",\"id\":1,}";
		assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
		assert_string_equal(e.code, PERR_BAD_JSON);
		assert_non_null(strstr(e.detail, "invalid JSON at column 22: "));
		proto_err_clear(&e);
	}
	parse_bad("[1,2]", PERR_NOT_OBJECT, "a message must be a JSON object");
	parse_bad("42", PERR_NOT_OBJECT, NULL);
	parse_bad("\"hello\"", PERR_NOT_OBJECT, NULL);

	/* The type. */
	parse_bad("{}", PERR_MISSING_FIELD, "missing field 'type'");
	parse_bad("{\"type\":3}", PERR_BAD_FIELD, "field 'type' must be a string");
	parse_bad("{\"type\":\"launch\"}", PERR_UNKNOWN_TYPE, "unknown message type 'launch'");
	parse_bad("{\"type\":\"HELLO\"}", PERR_UNKNOWN_TYPE, "unknown message type 'HELLO'");
	parse_bad("{\"type\":\"a\\nb\"}", PERR_UNKNOWN_TYPE, "unknown message type 'a?b'");

	/* Fields: missing, wrong type. */
	parse_bad("{\"type\":\"send\",\"body\":1}", PERR_MISSING_FIELD, "send: missing field 'to'");
	parse_bad("{\"type\":\"send\",\"to\":\"x\"}", PERR_MISSING_FIELD,
	          "send: missing field 'body'");
	parse_bad("{\"type\":\"send\",\"to\":\"x\",\"body\":1,\"priority\":2}", PERR_BAD_FIELD,
	          "send: field 'priority' must be a string");
	parse_bad("{\"type\":\"send\",\"to\":\"x\",\"body\":1,\"reply_to\":\"7\"}", PERR_BAD_FIELD,
	          "send: field 'reply_to' must be an integer");
	parse_bad("{\"type\":\"send\",\"to\":\"x\",\"body\":1,\"ref\":7}", PERR_BAD_FIELD,
	          "send: field 'ref' must be a string");
	parse_bad("{\"type\":\"send\",\"to\":\"a b\",\"body\":1}", PERR_BAD_FIELD,
	          "send: field 'to' must be an agent name, '*' or '#topic', not 'a b'");
	parse_bad("{\"type\":\"ack\",\"id\":1.0}", PERR_BAD_FIELD,
	          "ack: field 'id' must be an integer");
	parse_bad("{\"type\":\"ack\",\"id\":0}", PERR_BAD_FIELD,
	          "ack: field 'id' must be at least 1, not 0");
	parse_bad("{\"type\":\"ack\"}", PERR_MISSING_FIELD, "ack: missing field 'id'");
	parse_bad("{\"type\":\"heartbeat\",\"load\":\"high\"}", PERR_BAD_FIELD,
	          "heartbeat: field 'load' must be a number");
	parse_bad("{\"type\":\"task.fail\",\"task\":1,\"error\":\"x\",\"retry\":1}", PERR_BAD_FIELD,
	          "task.fail: field 'retry' must be a boolean");
	parse_bad("{\"type\":\"task.fail\",\"task\":1}", PERR_MISSING_FIELD,
	          "task.fail: missing field 'error'");
	parse_bad("{\"type\":\"task.done\"}", PERR_MISSING_FIELD,
	          "task.done: missing field 'task'");
	parse_bad("{\"type\":\"task.done\",\"task\":-2}", PERR_BAD_FIELD, NULL);
	parse_bad("{\"type\":\"log\",\"level\":\"info\",\"msg\":\"m\",\"fields\":[]}",
	          PERR_BAD_FIELD, "log: field 'fields' must be an object");
	parse_bad("{\"type\":\"log\",\"level\":\"loud\",\"msg\":\"m\"}", PERR_BAD_FIELD,
	          "log: bad level 'loud' (expected trace, debug, info, warn, error or fatal)");
	parse_bad("{\"type\":\"log\",\"level\":\"info\"}", PERR_MISSING_FIELD,
	          "log: missing field 'msg'");
	parse_bad("{\"type\":\"devlog\"}", PERR_MISSING_FIELD, "devlog: missing field 'text'");
	parse_bad("{\"type\":\"usage\",\"tokens_in\":-1,\"tokens_out\":0,\"cost_usd\":0}",
	          PERR_BAD_FIELD, "usage: field 'tokens_in' must be at least 0, not -1");
	parse_bad("{\"type\":\"usage\",\"tokens_in\":1,\"tokens_out\":0,\"cost_usd\":-0.5}",
	          PERR_BAD_FIELD, "usage: field 'cost_usd' must be at least 0, not -0.5");
	parse_bad("{\"type\":\"usage\",\"tokens_in\":1,\"tokens_out\":0}", PERR_MISSING_FIELD,
	          "usage: missing field 'cost_usd'");

	/* hello. */
	parse_bad("{\"type\":\"hello\",\"name\":\"a\"}", PERR_MISSING_FIELD,
	          "hello: missing field 'proto'");
	parse_bad("{\"type\":\"hello\",\"proto\":\"1\",\"name\":\"a\"}", PERR_BAD_FIELD,
	          "hello: field 'proto' must be an integer");
	parse_bad(
	    "{\"type\":\"hello\",\"proto\":2,\"name\":\"a\"}", PERR_BAD_PROTO,
	    "hello: protocol version 2 is not supported (this orchestrator speaks version 1)");
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"captain\"}", PERR_BAD_FIELD,
	          "hello: field 'name': 'captain' is not a valid agent name (1 to 64 letters, "
	          "digits, '_', '.' or '-'; not 'captain')");
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"\"}", PERR_BAD_FIELD, NULL);
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"max_tasks\":1001}",
	          PERR_BAD_FIELD, NULL);
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"max_tasks\":1e2}",
	          PERR_BAD_FIELD, "hello: field 'max_tasks' must be an integer");
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"capabilities\":\"x\"}",
	          PERR_BAD_FIELD, "hello: field 'capabilities' must be an array");
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"capabilities\":[\"x\",1]}",
	          PERR_BAD_FIELD, "hello: field 'capabilities' must be an array of strings");
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"capabilities\":[\"x y\"]}",
	          PERR_BAD_FIELD,
	          "hello: field 'capabilities': 'x y' is not a valid capability (1 to 64 letters, "
	          "digits, '_', '.', ':' or '-')");
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"capabilities\":[\"\"]}",
	          PERR_BAD_FIELD, NULL);
	parse_bad("{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"version\":1}", PERR_BAD_FIELD,
	          "hello: field 'version' must be a string");

	/* Enumerations, topics, percentages. */
	parse_bad("{\"type\":\"send\",\"to\":\"x\",\"body\":1,\"priority\":\"asap\"}",
	          PERR_BAD_PRIORITY,
	          "send: bad priority 'asap' (expected low, normal, high or urgent)");
	parse_bad("{\"type\":\"send\",\"to\":\"x\",\"body\":1,\"mode\":\"panic\"}", PERR_BAD_MODE,
	          "send: bad mode 'panic' (expected NORMAL, TASK, SYSTEM, CAPTAIN, SYNC, VERIFY, "
	          "REPAIR, BACKUP, RESTORE, CLEANUP or INTEGRATE)");
	parse_bad("{\"type\":\"send\",\"to\":\"#\",\"body\":1}", PERR_BAD_TOPIC, NULL);
	parse_bad("{\"type\":\"send\",\"to\":\"#a b\",\"body\":1}", PERR_BAD_TOPIC, NULL);
	parse_bad("{\"type\":\"subscribe\",\"topic\":\"no spaces\"}", PERR_BAD_TOPIC,
	          "subscribe: bad topic 'no spaces' (1 to 128 letters, digits, '_', '.', ':', '/' "
	          "or '-', optionally after a '#')");
	parse_bad("{\"type\":\"unsubscribe\",\"topic\":\"#\"}", PERR_BAD_TOPIC, NULL);
	parse_bad("{\"type\":\"subscribe\",\"topic\":\"##x\"}", PERR_BAD_TOPIC, NULL);
	parse_bad("{\"type\":\"subscribe\"}", PERR_MISSING_FIELD,
	          "subscribe: missing field 'topic'");
	parse_bad("{\"type\":\"task.progress\",\"task\":1,\"pct\":100.5}", PERR_BAD_PCT,
	          "task.progress: field 'pct' must be between 0 and 100, not 100.5");
	parse_bad("{\"type\":\"task.progress\",\"task\":1,\"pct\":-1}", PERR_BAD_PCT, NULL);
	parse_bad("{\"type\":\"task.progress\",\"task\":1,\"pct\":\"50\"}", PERR_BAD_FIELD,
	          "task.progress: field 'pct' must be a number");
	parse_bad("{\"type\":\"task.progress\",\"task\":0,\"pct\":5}", PERR_BAD_FIELD, NULL);

	/* task.submit. */
	parse_bad("{\"type\":\"task.submit\"}", PERR_MISSING_FIELD,
	          "task.submit: missing field 'title'");
	parse_bad("{\"type\":\"task.submit\",\"title\":\"\"}", PERR_BAD_FIELD,
	          "task.submit: field 'title' must be 1 to 200 characters, not 0");
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"priority\":\"now\"}",
	          PERR_BAD_PRIORITY, NULL);
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"after\":[1,\"2\"]}", PERR_BAD_FIELD,
	          "task.submit: field 'after' must be an array of task ids (integers >= 1)");
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"after\":[0]}", PERR_BAD_FIELD, NULL);
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"timeout_s\":0}", PERR_BAD_FIELD,
	          "task.submit: field 'timeout_s' must be greater than 0 and at most 3.1536e+09, "
	          "not 0");
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"timeout_s\":1e300}", PERR_BAD_FIELD,
	          "task.submit: field 'timeout_s' must be greater than 0 and at most 3.1536e+09, "
	          "not 1e+300");
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"max_retries\":1001}", PERR_BAD_FIELD,
	          "task.submit: field 'max_retries' must be between 0 and 1000, not 1001");
	parse_bad("{\"type\":\"task.submit\",\"title\":\"t\",\"capability\":\"a b\"}",
	          PERR_BAD_FIELD, NULL);
	/* 200 characters (two bytes each) pass, 201 do not. */
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "{\"type\":\"task.submit\",\"title\":\"");
	for (int i = 0; i < 200; i++)
		buf_adds(&b, "\xc3\xa9");
	buf_adds(&b, "\"}");
	struct proto_msg m;
	assert_int_equal(parse_ok(buf_cstr(&b), &m), PROTO_TASK_SUBMIT);
	proto_msg_free(&m);
	b.len -= 2;
	buf_adds(&b, "x\"}");
	parse_bad(buf_cstr(&b), PERR_BAD_FIELD,
	          "task.submit: field 'title' must be 1 to 200 characters, not 201");
	buf_free(&b);
}

/* Errors carry the line's ref, and details never quote the whole input. */
static void
test_parse_ref_and_detail(void **state)
{
	struct proto_msg m;
	struct proto_err e;
	const char *l = "{\"type\":\"send\",\"to\":\"x\",\"ref\":\"r-17\"}";
	assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
	assert_string_equal(e.code, PERR_MISSING_FIELD);
	assert_string_equal(e.ref, "r-17");
	proto_err_clear(&e);
	assert_null(e.ref);
	assert_null(e.code);

	/* On any type, even an unknown one. */
	l = "{\"type\":\"nope\",\"ref\":\"abc\"}";
	assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
	assert_string_equal(e.code, PERR_UNKNOWN_TYPE);
	assert_string_equal(e.ref, "abc");
	proto_err_clear(&e);
	l = "{\"type\":\"ack\",\"id\":\"1\",\"ref\":\"q\"}";
	assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
	assert_string_equal(e.ref, "q");
	proto_err_clear(&e);

	/* A ref that is not a string is not echoed; nor one from bad JSON. */
	l = "{\"type\":\"nope\",\"ref\":5}";
	assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
	assert_null(e.ref);
	proto_err_clear(&e);
	l = "{\"type\":\"nope\",\"ref\":\"r\"";
	assert_int_equal(proto_parse(l, strlen(l), &m, &e), -1);
	assert_null(e.ref);
	proto_err_clear(&e);

	/* A huge value is quoted only in part, cut at a character. */
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "{\"type\":\"x");
	for (int i = 0; i < 10000; i++)
		buf_adds(&b, "\xe2\x82\xac");
	buf_adds(&b, "\"}");
	assert_int_equal(proto_parse(b.data, b.len, &m, &e), -1);
	assert_string_equal(e.code, PERR_UNKNOWN_TYPE);
	assert_true(strlen(e.detail) < 120);
	assert_true(utf8_valid(e.detail, strlen(e.detail)));
	assert_non_null(strstr(e.detail, "...'"));
	/* The detail can be sent as is. */
	char *line = proto_error(e.code, e.detail, e.ref);
	assert_non_null(line);
	free(line);
	proto_err_clear(&e);
	buf_free(&b);

	/* A JSON error far into a long line: the detail stays short. */
	buf_init(&b);
	buf_adds(&b, "{\"type\":\"log\",\"msg\":\"");
	for (int i = 0; i < 5000; i++)
		buf_adds(&b, "\xe2\x82\xac");
	buf_adds(&b, "\\q\"}");
	assert_int_equal(proto_parse(b.data, b.len, &m, &e), -1);
	assert_string_equal(e.code, PERR_BAD_JSON);
	assert_true(strlen(e.detail) < 300);
	assert_true(utf8_valid(e.detail, strlen(e.detail)));
	proto_err_clear(&e);
	buf_free(&b);
}

/* ---- encoding ---------------------------------------------------------------- */

/* Checks that line is one '\n'-terminated JSON object; returns it parsed. */
static json_t *
decode_line(const char *line)
{
	size_t n = strlen(line);
	assert_true(n > 1);
	assert_int_equal(line[n - 1], '\n');
	assert_ptr_equal(strchr(line, '\n'), line + n - 1);
	json_error_t je;
	json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &je);
	assert_non_null(o);
	assert_true(json_is_object(o));
	return o;
}

static void
test_encode(void **state)
{
	char *l = proto_welcome("scout", "s-1");
	assert_string_equal(
	    l, "{\"type\":\"welcome\",\"proto\":1,\"agent\":\"scout\",\"session\":\"s-1\"}\n");
	free(l);

	l = proto_error(PERR_BAD_JSON, "invalid JSON at column 3: x", "r1");
	assert_string_equal(l, "{\"type\":\"error\",\"code\":\"bad_json\","
	                       "\"detail\":\"invalid JSON at column 3: x\",\"ref\":\"r1\"}\n");
	free(l);
	l = proto_error(PERR_LINE_TOO_LONG, "line \"too\"\nlong", NULL);
	json_t *o = decode_line(l);
	assert_string_equal(json_string_value(json_object_get(o, "detail")), "line \"too\"\nlong");
	assert_null(json_object_get(o, "ref"));
	json_decref(o);
	free(l);

	l = proto_command("stop", NULL);
	assert_string_equal(l, "{\"type\":\"command\",\"name\":\"stop\",\"args\":{}}\n");
	free(l);
	l = proto_command("verify", json_pack("{s:s}", "text", "all"));
	assert_string_equal(
	    l, "{\"type\":\"command\",\"name\":\"verify\",\"args\":{\"text\":\"all\"}}\n");
	free(l);

	l = proto_sent("r9", 12345678901LL);
	assert_string_equal(l, "{\"type\":\"sent\",\"ref\":\"r9\",\"id\":12345678901}\n");
	free(l);
	l = proto_sent(NULL, 1);
	assert_string_equal(l, "{\"type\":\"sent\",\"ref\":null,\"id\":1}\n");
	free(l);
	/* A ref that needs escaping comes back as the same string, on one line;
	 * one that is not UTF-8 (cannot come from a parsed line) is cleaned. */
	static const char odd[] = "q\"\\\n\x01\xc3\xa9/";
	l = proto_sent(odd, 7);
	assert_ptr_equal(strchr(l, '\n'), l + strlen(l) - 1);
	json_t *pj = json_loads(l, 0, NULL);
	assert_non_null(pj);
	assert_string_equal(json_string_value(json_object_get(pj, "ref")), odd);
	assert_int_equal(json_integer_value(json_object_get(pj, "id")), 7);
	json_decref(pj);
	free(l);
	l = proto_sent("a\xff"
	               "b",
	               8);
	assert_string_equal(l, "{\"type\":\"sent\",\"ref\":\"a?b\",\"id\":8}\n");
	free(l);
	/* proto_sent_add appends (the bus reuses one buffer), both ways. */
	struct buf sb;
	buf_init(&sb);
	buf_add_lit(&sb, "x");
	proto_sent_add(&sb, "r", 2);
	proto_sent_add(&sb, "a\xff", 3);
	assert_string_equal(buf_cstr(&sb), "x{\"type\":\"sent\",\"ref\":\"r\",\"id\":2}\n"
	                                   "{\"type\":\"sent\",\"ref\":\"a?\",\"id\":3}\n");
	buf_free(&sb);

	/* Generic encoding: non-ASCII stays UTF-8, control characters are
	 * escaped, so the line is one line. */
	l = proto_encode(
	    json_pack("{s:s, s:s}", "type", "message", "body", "\xc3\xa9t\xc3\xa9\n\t"));
	assert_string_equal(l, "{\"type\":\"message\",\"body\":\"\xc3\xa9t\xc3\xa9\\n\\t\"}\n");
	assert_true(utf8_valid(l, strlen(l)));
	free(l);
	assert_null(proto_encode(NULL));

	/* Invalid UTF-8 given to an encoder still gives a valid line. */
	l = proto_welcome("bad\xff", "s");
	assert_true(utf8_valid(l, strlen(l)));
	o = decode_line(l);
	assert_string_equal(json_string_value(json_object_get(o, "agent")), "bad?");
	json_decref(o);
	free(l);

	/* What the encoders produce, the framer and a JSON parser take back. */
	l = proto_error(PERR_UNKNOWN_TYPE, "unknown message type 'x'", "a\"b");
	o = decode_line(l);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "error");
	assert_string_equal(json_string_value(json_object_get(o, "code")), "unknown_type");
	assert_string_equal(json_string_value(json_object_get(o, "ref")), "a\"b");
	json_decref(o);
	free(l);
}

/* ---- the flat-object fast path -------------------------------------------- */

/* What jansson makes of s, as proto_parse would load it. */
static json_t *
jansson_load(const char *s)
{
	return json_loadb(s, strlen(s), JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
}

/* Checks that the fast path takes s and builds what jansson builds, in the
 * same key order (an encoder walks it in that order). */
static void
assert_flat_same(const char *s)
{
	json_t *fast = flatjson_load(s, strlen(s));
	json_t *slow = jansson_load(s);
	if (fast == NULL)
		fail_msg("the fast path declined %s", s);
	assert_non_null(slow);
	assert_true(json_equal(fast, slow));
	char *a = json_dumps(fast, JSON_COMPACT), *b = json_dumps(slow, JSON_COMPACT);
	assert_string_equal(a, b);
	free(a);
	free(b);
	json_decref(fast);
	json_decref(slow);
}

static void
assert_flat_declines(const char *s)
{
	json_t *fast = flatjson_load(s, strlen(s));
	if (fast != NULL)
		fail_msg("the fast path took %s", s);
}

static void
test_flatjson(void **state)
{
	/* The shapes agents send, with the whitespace of Python's json.dumps. */
	assert_flat_same(
	    "{\"type\":\"send\",\"to\":\"consumer\",\"ref\":\"17\",\"body\":\"xxxx\"}");
	assert_flat_same("{\"type\": \"ack\", \"id\": 123456}");
	assert_flat_same(
	    " \t\r\n{ \"a\" : -0 , \"b\":true,\"c\":false,\"d\":null,\"e\":\"\"}\r\n ");
	assert_flat_same("{}");
	assert_flat_same("{ }");
	assert_flat_same("{\"n\":999999999999999999,\"m\":-999999999999999999,\"z\":0}");
	assert_flat_same("{\"u\":\"caf\xc3\xa9 \xe2\x82\xac / ' \x7f\"}");
	assert_flat_same("{\"\":1}");
	/* The longest key it takes, and one byte more. */
	char line[FLATJSON_KEY_MAX + 32];
	snprintf(line, sizeof line, "{\"%0*d\":1}", FLATJSON_KEY_MAX, 7);
	assert_flat_same(line);
	snprintf(line, sizeof line, "{\"%0*d\":1}", FLATJSON_KEY_MAX + 1, 7);
	assert_flat_declines(line);
	json_t *long_key = jansson_load(line);
	assert_non_null(long_key);
	json_decref(long_key);
	/* Left to jansson: escapes, control characters, fractions, exponents,
	 * nesting, long numbers, and anything that is not JSON. */
	static const char *const declined[] = {
	    "{\"a\":\"x\\ny\"}",
	    "{\"a\\u0062\":1}",
	    "{\"a\":\"tab\there\"}",
	    "{\"a\":1.5}",
	    "{\"a\":1e3}",
	    "{\"a\":1E3}",
	    "{\"a\":[1]}",
	    "{\"a\":{}}",
	    "{\"a\":1234567890123456789}",
	    "{\"a\":01}",
	    "{\"a\":-}",
	    "{\"a\":+1}",
	    "{\"a\":1,\"a\":2}",
	    "{\"a\":1,}",
	    "{,}",
	    "{\"a\" 1}",
	    "{\"a\":1",
	    "{\"a\":\"x",
	    "{\"a\":truex}",
	    "{\"a\":nul}",
	    "{a:1}",
	    "{\"a\":1}x",
	    "{\"a\":1}{}",
	    "[1]",
	    "\"x\"",
	    "",
	    "   ",
	    "\xef\xbb\xbf{}",
	};
	for (size_t i = 0; i < nitems(declined); i++)
		assert_flat_declines(declined[i]);
	/* One value of any kind (how the bus rebuilds a stored body). */
	static const char *const values[] = {
	    "\"a body\"", " 42 ", "-7", "true", "null", "{\"k\":\"v\",\"n\":1}", "\"\""};
	for (size_t i = 0; i < nitems(values); i++) {
		json_t *fast = flatjson_load_value(values[i], strlen(values[i]));
		json_t *slow = jansson_load(values[i]);
		if (fast == NULL)
			fail_msg("flatjson_load_value declined %s", values[i]);
		assert_true(json_equal(fast, slow));
		json_decref(fast);
		json_decref(slow);
	}
	static const char *const not_values[] = {"\"a\\nb\"", "1.5",         "[1]", "\"x\" 1",
	                                         "",          "{\"a\":[1]}", "nul", "\"x"};
	for (size_t i = 0; i < nitems(not_values); i++)
		assert_null(flatjson_load_value(not_values[i], strlen(not_values[i])));
	/* An embedded NUL is a control character: declined, not cut short. */
	assert_null(flatjson_load("{\"a\":\"x\0\"}", 10));
	assert_null(flatjson_load("{}\0", 3));
	/* Strings are scanned sixteen bytes at a time (SSE2), else eight: a
	 * closing quote, an escape or a control character at every offset of
	 * the first two blocks and the bytes after them. */
	static const char *const specials[] = {"\\n", "\\\"", "\x01", "\x1f", "\t"};
	char body[48];
	for (int n = 1; n < 40; n++) {
		memset(body, 'y', (size_t)n);
		body[n] = '\0';
		for (int k = 0; k < n; k++) {
			for (size_t i = 0; i < nitems(specials); i++) {
				snprintf(line, sizeof line, "{\"a\":\"%.*s%s%s\"}", k, body,
				         specials[i], body + k);
				assert_flat_declines(line);
			}
			snprintf(line, sizeof line, "{\"a\":\"%.*s\",\"b\":\"%s\"}", k, body,
			         body + k);
			assert_flat_same(line);
			snprintf(line, sizeof line, "{\"a\":\"%.*s\xc3\xa9%s\"}", k, body,
			         body + k);
			assert_flat_same(line);
		}
	}
	/* That errors stay jansson's (a duplicate key, a trailing comma, a
	 * NUL) through proto_parse is checked in test_parse_errors. */
}

/* The line s with one more member (an array) that only jansson reads: the
 * same message, parsed the other way. */
static char *
jansson_twin(const char *s)
{
	json_t *o = jansson_load(s);
	assert_non_null(o);
	json_object_set_new(o, "zz_twin", json_pack("[i]", 0));
	char *t = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return t;
}

/* Parses s (a flat line) both ways, as is and as its jansson twin, and
 * checks that everything a handler can see is the same: the verdict, the
 * type, every field through every accessor, the body's JSON text, or the
 * error's code, detail and ref. */
static void
assert_paths_agree(const char *s)
{
	char *twin = jansson_twin(s);
	struct proto_msg a, b;
	struct proto_err ea, eb;
	int ra = proto_parse(s, strlen(s), &a, &ea);
	int rb = proto_parse(twin, strlen(twin), &b, &eb);
	if (ra != rb)
		fail_msg("%s: flat %d, jansson %d", s, ra, rb);
	if (ra != 0) {
		assert_string_equal(ea.code, eb.code);
		assert_string_equal(ea.detail, eb.detail);
		assert_true((ea.ref == NULL) == (eb.ref == NULL));
		if (ea.ref != NULL)
			assert_string_equal(ea.ref, eb.ref);
		proto_err_clear(&ea);
		proto_err_clear(&eb);
		free(twin);
		return;
	}
	assert_true(a.nflat >= 0); /* the fast path was taken ... */
	assert_null(a.obj);        /* ... with no JSON tree */
	assert_int_equal(b.nflat, -1);
	assert_int_equal(a.type, b.type);
	json_t *o = jansson_load(s);
	const char *key;
	json_t *v;
	json_object_foreach(o, key, v)
	{
		struct proto_key k = proto_key_of(key);
		const char *sa = proto_str_k(&a, k), *sb = proto_str_k(&b, k);
		assert_true((sa == NULL) == (sb == NULL));
		if (sa != NULL)
			assert_string_equal(sa, sb);
		assert_int_equal(proto_int_k(&a, k, -5), proto_int_k(&b, k, -5));
		assert_true(proto_num_k(&a, k, -5) == proto_num_k(&b, k, -5));
		assert_int_equal(proto_bool_k(&a, k, false), proto_bool_k(&b, k, false));
		assert_int_equal(proto_bool_k(&a, k, true), proto_bool_k(&b, k, true));
		char *ja = proto_json_k(&a, k), *jb = proto_json_k(&b, k);
		assert_string_equal(ja, jb);
		free(ja);
		free(jb);
	}
	assert_null(proto_str(&a, "absent"));
	assert_null(proto_json(&a, "absent"));
	/* The object is built when asked for, equal to jansson's. */
	assert_true(json_equal(proto_get(&a, "type"), json_object_get(o, "type")));
	assert_non_null(a.obj);
	assert_true(json_equal(a.obj, o));
	json_decref(o);
	proto_msg_free(&a);
	proto_msg_free(&b);
	free(twin);
}

static void
test_parse_flat_same(void **state)
{
	static const char *const lines[] = {
	    /* accepted */
	    "{\"type\":\"send\",\"to\":\"consumer\",\"ref\":\"17\",\"body\":\"xx / \xc3\xa9\"}",
	    "{\"type\":\"send\",\"to\":\"#news\",\"body\":42,\"priority\":\"urgent\","
	    "\"mode\":\"sync\",\"reply_to\":9}",
	    "{\"type\":\"send\",\"to\":\"*\",\"body\":true}",
	    "{\"type\":\"send\",\"to\":\"b\",\"body\":null,\"ref\":\"\"}",
	    "{\"type\": \"ack\", \"id\": 123456}",
	    "{\"type\":\"hello\",\"proto\":1,\"name\":\"w-1\",\"max_tasks\":3}",
	    "{\"type\":\"heartbeat\",\"load\":2}",
	    "{\"type\":\"task.fail\",\"task\":3,\"error\":\"no\",\"retry\":false}",
	    "{\"type\":\"task.progress\",\"task\":3,\"pct\":100}",
	    "{\"type\":\"usage\",\"tokens_in\":1,\"tokens_out\":0,\"cost_usd\":0}",
	    "{\"type\":\"log\",\"level\":\"warn\",\"msg\":\"m\"}",
	    /* refused, each for another reason */
	    "{\"type\":\"send\",\"to\":\"b\",\"ref\":\"r9\"}",
	    "{\"type\":\"send\",\"to\":\"b\",\"body\":1,\"priority\":\"soon\",\"ref\":\"r\"}",
	    "{\"type\":\"send\",\"to\":\"b\",\"body\":1,\"mode\":\"x\"}",
	    "{\"type\":\"send\",\"to\":\"#bad topic\",\"body\":1}",
	    "{\"type\":\"send\",\"to\":7,\"body\":1}",
	    "{\"type\":\"send\",\"to\":\"b\",\"body\":1,\"reply_to\":\"7\"}",
	    "{\"type\":\"ack\",\"id\":0,\"ref\":\"a0\"}",
	    "{\"type\":\"ack\",\"id\":true}",
	    "{\"type\":\"ack\"}",
	    "{\"type\":\"hello\",\"proto\":2,\"name\":\"w\"}",
	    "{\"type\":\"hello\",\"proto\":1,\"name\":\"bad name\"}",
	    "{\"type\":\"task.progress\",\"task\":3,\"pct\":101}",
	    "{\"type\":\"usage\",\"tokens_in\":-1,\"tokens_out\":0,\"cost_usd\":0}",
	    "{\"type\":\"nope\",\"ref\":\"n\"}",
	    "{\"type\":null}",
	    "{\"ref\":\"t\"}",
	};
	for (size_t i = 0; i < nitems(lines); i++)
		assert_paths_agree(lines[i]);
	/* A line under 512 bytes is kept in proto_msg itself, a longer one in
	 * an allocation: the same either way, at the edge and far past it. */
	struct buf b;
	buf_init(&b);
	static const size_t sizes[] = {500, 510, 511, 512, 513, 520, 4000};
	for (size_t i = 0; i < nitems(sizes); i++) {
		static const char head[] = "{\"type\":\"send\",\"to\":\"b\",\"body\":\"";
		b.len = 0;
		buf_add(&b, head, sizeof head - 1);
		while (b.len < sizes[i] - 2)
			buf_add(&b, "x", 1);
		buf_adds(&b, "\"}");
		assert_int_equal(b.len, sizes[i]);
		assert_paths_agree(b.data);
		struct proto_msg m;
		assert_int_equal(parse_ok(b.data, &m), PROTO_SEND);
		assert_int_equal(strlen(proto_str(&m, "body")), sizes[i] - sizeof head - 1);
		assert_string_equal(proto_str(&m, "to"), "b");
		proto_msg_free(&m);
	}
	b.len = 0;
	/* The fast path takes up to FLATJSON_FIELDS_MAX members. */
	buf_adds(&b, "{\"type\":\"heartbeat\"");
	for (int i = 1; i < FLATJSON_FIELDS_MAX; i++)
		buf_addf(&b, ",\"k%d\":%d", i, i);
	buf_adds(&b, "}");
	struct flatjson_field f[FLATJSON_FIELDS_MAX + 1];
	assert_int_equal(flatjson_scan(b.data, b.len, f, FLATJSON_FIELDS_MAX), FLATJSON_FIELDS_MAX);
	assert_paths_agree(b.data);
	b.len--;
	buf_adds(&b, ",\"one_more\":1}");
	assert_int_equal(flatjson_scan(b.data, b.len, f, FLATJSON_FIELDS_MAX), -1);
	struct proto_msg m;
	assert_int_equal(parse_ok(b.data, &m), PROTO_HEARTBEAT);
	assert_int_equal(m.nflat, -1); /* jansson's */
	assert_int_equal(proto_int(&m, "one_more", 0), 1);
	proto_msg_free(&m);
	buf_free(&b);

	/* Members are found by tag (length, first and last byte), then by
	 * the bytes between: keys that share a tag are told apart, and a
	 * name's tag is the same made at compile time or at run time. */
	assert_int_equal(PROTO_KEY("reply_to").tag, proto_key_of("reply_to").tag);
	assert_int_equal(PROTO_KEY("x").tag, proto_key_of("x").tag);
	assert_int_equal(parse_ok("{\"type\":\"heartbeat\",\"xaay\":\"1\",\"xaby\":\"2\",\"x\":3,"
	                          "\"xy\":4}",
	                          &m),
	                 PROTO_HEARTBEAT);
	assert_true(m.nflat >= 0);
	assert_string_equal(proto_str(&m, "xaay"), "1");
	assert_string_equal(proto_str(&m, "xaby"), "2");
	assert_null(proto_str(&m, "xbay"));
	assert_null(proto_str(&m, "xacy"));
	assert_int_equal(proto_int(&m, "x", 0), 3);
	assert_int_equal(proto_int(&m, "xy", 0), 4);
	assert_int_equal(proto_int(&m, "yx", 0), 0);
	/* A name longer than any flat key never matches one, even one with its
	 * first and last byte; the empty key is a key too. */
	char longname[300];
	memset(longname, 'x', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_int_equal(proto_int_k(&m, proto_key_of(longname), 0), 0);
	proto_msg_free(&m);
	assert_int_equal(parse_ok("{\"type\":\"heartbeat\",\"\":5,\"x\":6}", &m), PROTO_HEARTBEAT);
	assert_true(m.nflat >= 0);
	assert_int_equal(proto_int_k(&m, proto_key_of(""), 0), 5);
	assert_int_equal(proto_int(&m, "x", 0), 6);
	proto_msg_free(&m);
}

/* ---- robustness ---------------------------------------------------------- */

/* Parses every framed line; checks what a reply would carry, and that the
 * fast path never takes a line jansson would load differently. */
static void
fuzz_line(void *arg, const char *line, size_t len)
{
	int *counts = arg;
	struct proto_msg m;
	struct proto_err e;
	if (utf8_valid(line, len)) {
		json_t *fast = flatjson_load(line, len);
		if (fast != NULL) {
			json_t *slow =
			    json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
			assert_non_null(slow);
			assert_true(json_equal(fast, slow));
			json_decref(slow);
			json_decref(fast);
			counts[2]++;
		}
	}
	if (proto_parse(line, len, &m, &e) == 0) {
		counts[0]++;
		proto_msg_free(&m);
		return;
	}
	counts[1]++;
	assert_non_null(e.code);
	assert_non_null(e.detail);
	assert_null(strchr(e.detail, '\n'));
	assert_true(utf8_valid(e.detail, strlen(e.detail)));
	assert_true(strlen(e.detail) < 400);
	char *reply = proto_error(e.code, e.detail, e.ref);
	assert_non_null(reply);
	free(reply);
	proto_err_clear(&e);
}

/* Mutated valid lines in random chunks: nothing crashes or leaks, every
 * error can be sent back.  (A deterministic generator: reproducible.) */
static void
test_fuzz_smoke(void **state)
{
	static const char *seeds[] = {
	    "{\"type\":\"hello\",\"proto\":1,\"name\":\"a\",\"capabilities\":[\"x\"]}",
	    "{\"type\":\"send\",\"to\":\"#t\",\"body\":{\"k\":[1,2.5,null,true]},\"ref\":\"r\"}",
	    "{\"type\":\"task.progress\",\"task\":1,\"pct\":50}",
	    "{\"type\":\"task.submit\",\"title\":\"\xc3\xa9\",\"after\":[1]}",
	    "{\"type\":\"usage\",\"tokens_in\":1,\"tokens_out\":2,\"cost_usd\":0.1}",
	};
	static const char noise[] = "{}[]\":,\\\n\r \x80\xc3\xff"
	                            "0a-#*.e";
	uint32_t rnd = 12345;
#define RND() (rnd = rnd * 1103515245u + 12345u, (rnd >> 16) & 0x7fff)
	int counts[3] = {0, 0, 0};
	struct proto_framer f;
	proto_framer_init(&f, 256, fuzz_line, NULL, counts);
	struct buf b;
	buf_init(&b);
	for (int round = 0; round < 20000; round++) {
		const char *seed = seeds[RND() % nitems(seeds)];
		b.len = 0;
		buf_adds(&b, seed);
		int edits = (int)(RND() % 4);
		for (int k = 0; k < edits && b.len > 0; k++) {
			size_t at = RND() % b.len;
			char c = noise[RND() % (sizeof noise - 1)];
			switch (RND() % 3) {
			case 0:
				b.data[at] = c;
				break;
			case 1:
				memmove(b.data + at, b.data + at + 1, b.len - at - 1);
				b.len--;
				break;
			default:
				buf_reserve(&b, 1);
				memmove(b.data + at + 1, b.data + at, b.len - at);
				b.data[at] = c;
				b.len++;
				break;
			}
		}
		buf_add(&b, "\n", 1);
		for (size_t off = 0; off < b.len;) {
			size_t n = 1 + RND() % 40;
			if (n > b.len - off)
				n = b.len - off;
			proto_framer_feed(&f, b.data + off, n);
			off += n;
		}
	}
#undef RND
	assert_true(counts[0] > 1000);
	assert_true(counts[1] > 1000);
	assert_true(counts[2] > 1000); /* the fast path was exercised */
	buf_free(&b);
	proto_framer_free(&f);
}

/* ---- names ----------------------------------------------------------------- */

static void
test_names(void **state)
{
	assert_true(proto_valid_agent_name("scout"));
	assert_true(proto_valid_agent_name("a.b-c_D9"));
	char n64[65], n65[66];
	memset(n64, 'a', 64);
	n64[64] = '\0';
	memset(n65, 'a', 65);
	n65[65] = '\0';
	assert_true(proto_valid_agent_name(n64));
	assert_false(proto_valid_agent_name(n65));
	assert_false(proto_valid_agent_name(""));
	assert_false(proto_valid_agent_name(NULL));
	assert_false(proto_valid_agent_name("captain"));
	assert_true(proto_valid_agent_name("Captain2"));
	assert_false(proto_valid_agent_name("*"));
	assert_false(proto_valid_agent_name("a b"));
	assert_false(proto_valid_agent_name("a/b"));
	assert_false(proto_valid_agent_name("#a"));
	assert_false(proto_valid_agent_name("caf\xc3\xa9"));

	assert_true(proto_valid_topic("news"));
	assert_true(proto_valid_topic("news/tech:ai.v2_x-y"));
	char t128[129], t129[130];
	memset(t128, 't', 128);
	t128[128] = '\0';
	memset(t129, 't', 129);
	t129[129] = '\0';
	assert_true(proto_valid_topic(t128));
	assert_false(proto_valid_topic(t129));
	assert_false(proto_valid_topic(""));
	assert_false(proto_valid_topic("#news"));
	assert_false(proto_valid_topic("a b"));
	assert_false(proto_valid_topic(NULL));

	for (int t = 0; t < PROTO_NTYPES; t++)
		assert_string_not_equal(proto_type_name((enum proto_type)t), "?");
	assert_string_equal(proto_type_name(PROTO_TASK_DONE), "task.done");
	assert_string_equal(proto_type_name(PROTO_NTYPES), "?");

	enum proto_priority p;
	for (int i = 0; i < PRIO_N; i++) {
		assert_true(proto_priority_parse(proto_priority_name((enum proto_priority)i), &p));
		assert_int_equal(p, i);
	}
	assert_true(proto_priority_parse("URGENT", &p));
	assert_int_equal(p, PRIO_URGENT);
	assert_false(proto_priority_parse("critical", &p));
	assert_false(proto_priority_parse(NULL, &p));
	assert_string_equal(proto_priority_name(PRIO_LOW), "low");
	assert_string_equal(proto_priority_name(PRIO_N), "?");

	enum proto_mode md;
	for (int i = 0; i < MODE_N; i++) {
		assert_true(proto_mode_parse(proto_mode_name((enum proto_mode)i), &md));
		assert_int_equal(md, i);
	}
	assert_true(proto_mode_parse("integrate", &md));
	assert_int_equal(md, MODE_INTEGRATE);
	assert_true(proto_mode_parse("Captain", &md));
	assert_int_equal(md, MODE_CAPTAIN);
	assert_false(proto_mode_parse("PANIC", &md));
	assert_string_equal(proto_mode_name(MODE_NORMAL), "NORMAL");
	assert_string_equal(proto_mode_name(MODE_N), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frame_basic),
	    cmocka_unit_test(test_frame_message),
	    cmocka_unit_test(test_frame_split),
	    cmocka_unit_test(test_frame_limit),
	    cmocka_unit_test(test_frame_stop),
	    cmocka_unit_test(test_frame_big_line_bytewise),
	    cmocka_unit_test(test_parse_every_type),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_parse_ref_and_detail),
	    cmocka_unit_test(test_encode),
	    cmocka_unit_test(test_flatjson),
	    cmocka_unit_test(test_parse_flat_same),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_fuzz_smoke),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
