/* test-log.c — the log manager: levels, the ring, the JSON-lines file with
 * rotation and reopen, redaction in every sink, subscribers, and queries
 * through the store and through the ring. */
#include <fcntl.h>
#include <sys/stat.h>

#include "testutil.h"

#include <uv.h>

#include "log.h"
#include "store.h"
#include "util.h"

#define SECRET "sk-TESTSECRET-0123456789"

struct fixture {
	char *dir;
	char *path; /* dir/dreamos.log */
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	f->dir = testutil_tmpdir();
	f->path = path_join(f->dir, "dreamos.log");
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	free(f->path);
	testutil_rmdir(f->dir);
	free(f);
	return 0;
}

/* Returns path's size, or -1 if it does not exist. */
static long
file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Parses every line of the file as JSON; returns an array (caller frees)
 * and fails the test on a line that is not a JSON object. */
static json_t *
read_json_lines(const char *path)
{
	char *text = testutil_read(path);
	assert_non_null(text);
	json_t *a = json_array();
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t err;
		json_t *o = json_loads(line, 0, &err);
		if (o == NULL)
			fail_msg("bad JSON line: %s: %s", err.text, line);
		assert_true(json_is_object(o));
		json_array_append_new(a, o);
	}
	free(text);
	return a;
}

/* Redirects stderr into a file until capture_end. */
struct capture {
	int saved;
	char *path;
};

static void
capture_begin(struct capture *c, const char *dir)
{
	c->path = path_join(dir, "stderr.txt");
	fflush(stderr);
	c->saved = dup(STDERR_FILENO);
	int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

/* Restores stderr; returns what was written (caller frees). */
static char *
capture_end(struct capture *c)
{
	fflush(stderr);
	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	char *text = testutil_read(c->path);
	free(c->path);
	return text;
}

static void
test_level_parse_name(void **state)
{
	(void)state;
	static const char *names[] = {"trace", "debug", "info", "warn", "error", "fatal"};
	for (int i = LVL_TRACE; i <= LVL_FATAL; i++) {
		assert_string_equal(log_level_name((enum log_level)i), names[i]);
		enum log_level l = LVL_FATAL;
		assert_true(log_level_parse(names[i], &l));
		assert_int_equal(l, i);
	}
	enum log_level l;
	assert_true(log_level_parse("INFO", &l));
	assert_int_equal(l, LVL_INFO);
	assert_true(log_level_parse("Warning", &l));
	assert_int_equal(l, LVL_WARN);
	assert_true(log_level_parse("WARN", &l));
	assert_int_equal(l, LVL_WARN);
	assert_true(log_level_parse("eRRoR", &l));
	assert_int_equal(l, LVL_ERROR);
	assert_false(log_level_parse("verbose", &l));
	assert_false(log_level_parse("", &l));
	assert_false(log_level_parse("info ", &l));
	assert_false(log_level_parse(NULL, &l));
}

static void
test_levels_filter(void **state)
{
	(void)state;
	struct log_opts opts = {.level = LVL_WARN};
	struct logmgr *lm = logmgr_new(&opts);
	assert_int_equal(logmgr_level(lm), LVL_WARN);
	assert_false(log_enabled(lm, LVL_INFO));
	assert_true(log_enabled(lm, LVL_WARN));
	assert_true(log_enabled(lm, LVL_FATAL));

	log_debug(lm, "t", "dropped %d", 1);
	log_info(lm, "t", "dropped %d", 2);
	log_warn(lm, "t", "kept %d", 3);
	log_error(lm, "t", "kept %d", 4);
	log_emit(lm, LVL_INFO, "t", json_pack("{s:i}", "n", 1), "dropped with fields");
	assert_int_equal(logmgr_ring_count(lm), 2);
	assert_string_equal(logmgr_ring_get(lm, 0)->msg, "kept 3");
	assert_int_equal(logmgr_ring_get(lm, 0)->level, LVL_WARN);
	assert_string_equal(logmgr_ring_get(lm, 1)->msg, "kept 4");

	logmgr_set_level(lm, LVL_TRACE);
	log_trace(lm, "t", "now kept");
	assert_int_equal(logmgr_ring_count(lm), 3);

	struct log_stats st;
	logmgr_stats(lm, &st);
	assert_int_equal(st.emitted, 3);
	assert_int_equal(st.dropped_level, 3);
	logmgr_free(lm);
}

static void
test_ring_wraps(void **state)
{
	(void)state;
	struct log_opts opts = {.level = LVL_TRACE, .ring_size = 5};
	struct logmgr *lm = logmgr_new(&opts);
	assert_int_equal(logmgr_ring_count(lm), 0);
	assert_null(logmgr_ring_get(lm, 0));
	for (int i = 0; i < 12; i++)
		log_emit(lm, LVL_INFO, "ring", i % 3 ? NULL : json_pack("{s:i}", "i", i),
		         "msg %d%s", i, i == 9 ? " with a much longer text than the others" : "");
	assert_int_equal(logmgr_ring_count(lm), 5);
	for (size_t i = 0; i < 5; i++) {
		const struct log_record *r = logmgr_ring_get(lm, i);
		char want[64];
		snprintf(want, sizeof want, "msg %zu%s", i + 7,
		         i + 7 == 9 ? " with a much longer text than the others" : "");
		assert_string_equal(r->msg, want);
		assert_string_equal(r->source, "ring");
		assert_int_equal(r->seq, i + 8);
		assert_true(r->ts_ms > 0);
		assert_null(r->fields); /* the ring keeps the fields as text */
		if ((i + 7) % 3 == 0) {
			char ftext[32];
			snprintf(ftext, sizeof ftext, "{\"i\":%zu}", i + 7);
			assert_string_equal(r->fields_text, ftext);
			json_t *rj = log_record_json(r);
			assert_int_equal(
			    json_integer_value(json_object_get(json_object_get(rj, "fields"), "i")),
			    i + 7);
			json_decref(rj);
		} else {
			assert_null(r->fields_text);
		}
	}
	assert_null(logmgr_ring_get(lm, 5));

	/* Long messages: kept whole up to 64 KiB, cut beyond. */
	char *big = malloc(70001);
	memset(big, 'a', 70000);
	big[70000] = '\0';
	log_info(lm, "ring", "%.1000s", big);
	assert_int_equal(strlen(logmgr_ring_get(lm, 4)->msg), 1000);
	log_info(lm, "ring", "%s", big);
	assert_int_equal(strlen(logmgr_ring_get(lm, 4)->msg), 65536);
	log_info(lm, "ring", "short again");
	assert_string_equal(logmgr_ring_get(lm, 4)->msg, "short again");
	free(big);

	/* Default capacity. */
	struct logmgr *lm2 = logmgr_new(&(struct log_opts){.level = LVL_INFO});
	for (int i = 0; i < 10005; i++)
		log_info(lm2, "x", "%d", i);
	assert_int_equal(logmgr_ring_count(lm2), 10000);
	assert_string_equal(logmgr_ring_get(lm2, 0)->msg, "5");
	logmgr_free(lm2);
	logmgr_free(lm);
}

static void
test_file_json_lines(void **state)
{
	struct fixture *f = *state;
	struct logmgr *lm = logmgr_new(&(struct log_opts){.level = LVL_DEBUG});
	char *cause = NULL;
	assert_int_equal(logmgr_open_file(lm, f->path, 0, 3, &cause), 0);
	struct stat sb;
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	log_info(lm, "store", "plain message");
	log_emit(lm, LVL_WARN, "agent-1",
	         json_pack("{s:s, s:i, s:{s:[b,n]}}", "path", "/tmp/x y", "n", 42, "o", "a", 1),
	         "quote \" backslash \\ newline \n tab \t ctl \x01 unicode é ✓");
	log_error(lm, "agent-2", "bad bytes \xff\xfe end");
	log_debug(lm, "d", "%s", "");

	json_t *lines = read_json_lines(f->path);
	assert_int_equal(json_array_size(lines), 4);
	json_t *o = json_array_get(lines, 0);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
	assert_string_equal(json_string_value(json_object_get(o, "source")), "store");
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "plain message");
	assert_null(json_object_get(o, "fields"));
	const char *ts = json_string_value(json_object_get(o, "ts"));
	assert_non_null(ts);
	assert_int_equal(strlen(ts), 24); /* 2026-11-21T07:08:09.123Z */
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[23], 'Z');

	o = json_array_get(lines, 1);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(o, "msg")),
	                    "quote \" backslash \\ newline \n tab \t ctl \x01 unicode é ✓");
	json_t *fields = json_object_get(o, "fields");
	assert_true(json_is_object(fields));
	assert_string_equal(json_string_value(json_object_get(fields, "path")), "/tmp/x y");
	assert_int_equal(json_integer_value(json_object_get(fields, "n")), 42);

	o = json_array_get(lines, 2);
	assert_string_equal(json_string_value(json_object_get(o, "msg")),
	                    "bad bytes \xef\xbf\xbd\xef\xbf\xbd end");
	o = json_array_get(lines, 3);
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "");
	json_decref(lines);

	struct log_stats st;
	logmgr_stats(lm, &st);
	assert_int_equal(st.file_errors, 0);
	assert_int_equal(st.rotations, 0);
	logmgr_free(lm);

	/* Opening appends. */
	lm = logmgr_new(NULL);
	assert_int_equal(logmgr_open_file(lm, f->path, 0, 3, &cause), 0);
	log_info(lm, "again", "fifth");
	logmgr_free(lm);
	lines = read_json_lines(f->path);
	assert_int_equal(json_array_size(lines), 5);
	json_decref(lines);

	/* A directory that does not exist. */
	lm = logmgr_new(NULL);
	assert_int_equal(logmgr_open_file(lm, "/nonexistent-dreamos/x.log", 0, 3, &cause), -1);
	assert_non_null(strstr(cause, "/nonexistent-dreamos/x.log: cannot open log file"));
	free(cause);
	log_info(lm, "t", "no file: fine");
	logmgr_free(lm);
}

static void
noop_timer(uv_timer_t *t)
{
	(void)t;
}

/* With a loop, a turn's lines are written when the loop is about to wait;
 * a warning takes everything before it along at once. */
static void
test_file_turn_buffer(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct logmgr *lm = logmgr_new(NULL);
	char *cause = NULL;
	assert_int_equal(logmgr_open_file(lm, f->path, 0, 3, &cause), 0);
	logmgr_use_loop(lm, &loop);

	log_info(lm, "t", "first");
	log_info(lm, "t", "second");
	json_t *lines = read_json_lines(f->path);
	assert_int_equal(json_array_size(lines), 0); /* not yet */
	json_decref(lines);
	/* The handle does not keep the loop alive: a timer does, as the
	 * orchestrator's handles do. */
	uv_timer_t timer;
	uv_timer_init(&loop, &timer);
	uv_timer_start(&timer, noop_timer, 60000, 0);
	uv_run(&loop, UV_RUN_NOWAIT); /* the prepare handle flushes */
	uv_close((uv_handle_t *)&timer, NULL);
	lines = read_json_lines(f->path);
	assert_int_equal(json_array_size(lines), 2);
	json_decref(lines);

	log_info(lm, "t", "third");
	log_warn(lm, "t", "fourth, a warning");
	lines = read_json_lines(f->path);
	assert_int_equal(json_array_size(lines), 4);
	assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 2), "msg")),
	                    "third");
	json_decref(lines);

	log_info(lm, "t", "fifth");
	logmgr_leave_loop(lm); /* writes what is left, then each line at once */
	log_info(lm, "t", "sixth");
	lines = read_json_lines(f->path);
	assert_int_equal(json_array_size(lines), 6);
	json_decref(lines);
	uv_run(&loop, UV_RUN_DEFAULT); /* the handle's close */
	assert_int_equal(uv_loop_close(&loop), 0);
	logmgr_free(lm);
}

/* Emits n records of about 100 bytes each. */
static void
emit_many(struct logmgr *lm, int n)
{
	for (int i = 0; i < n; i++)
		log_info(lm, "rot", "record %05d %s", i, "padding padding padding padding");
}

static void
test_rotation(void **state)
{
	struct fixture *f = *state;
	const uint64_t max = 1000;
	struct logmgr *lm = logmgr_new(NULL);
	char *cause = NULL;
	assert_int_equal(logmgr_open_file(lm, f->path, max, 2, &cause), 0);
	emit_many(lm, 200);

	char *p1 = xasprintf("%s.1", f->path), *p2 = xasprintf("%s.2", f->path);
	char *p3 = xasprintf("%s.3", f->path);
	assert_true(file_size(f->path) > 0);
	assert_true(file_size(f->path) <= (long)max);
	assert_true(file_size(p1) > (long)max / 2);
	assert_true(file_size(p1) <= (long)max);
	assert_true(file_size(p2) > (long)max / 2);
	assert_true(file_size(p2) <= (long)max);
	assert_int_equal(file_size(p3), -1);

	/* The newest records are in path, the ones before in path.1. */
	json_t *cur = read_json_lines(f->path), *old = read_json_lines(p1);
	const char *last = json_string_value(
	    json_object_get(json_array_get(cur, json_array_size(cur) - 1), "msg"));
	assert_non_null(strstr(last, "record 00199"));
	const char *prev = json_string_value(
	    json_object_get(json_array_get(old, json_array_size(old) - 1), "msg"));
	const char *first = json_string_value(json_object_get(json_array_get(cur, 0), "msg"));
	assert_int_equal(atoi(prev + 7) + 1, atoi(first + 7));
	json_decref(cur);
	json_decref(old);

	struct log_stats st;
	logmgr_stats(lm, &st);
	assert_true(st.rotations >= 20);
	assert_int_equal(st.file_errors, 0);
	logmgr_free(lm);

	/* keep 0: the file is just truncated. */
	char *p = path_join(f->dir, "k0.log");
	lm = logmgr_new(NULL);
	assert_int_equal(logmgr_open_file(lm, p, max, 0, &cause), 0);
	emit_many(lm, 100);
	assert_true(file_size(p) > 0);
	assert_true(file_size(p) <= (long)max);
	char *k1 = xasprintf("%s.1", p);
	assert_int_equal(file_size(k1), -1);
	logmgr_stats(lm, &st);
	assert_true(st.rotations >= 5);
	logmgr_free(lm);

	free(k1);
	free(p);
	free(p1);
	free(p2);
	free(p3);
}

static void
test_reopen(void **state)
{
	struct fixture *f = *state;
	struct logmgr *lm = logmgr_new(NULL);
	char *cause = NULL;
	assert_int_equal(logmgr_open_file(lm, f->path, 0, 3, &cause), 0);
	log_info(lm, "t", "before");
	char *moved = path_join(f->dir, "moved.log");
	assert_int_equal(rename(f->path, moved), 0);
	log_info(lm, "t", "still to the old file");
	logmgr_reopen(lm); /* as on SIGHUP */
	log_info(lm, "t", "after");

	json_t *a = read_json_lines(moved), *b = read_json_lines(f->path);
	assert_int_equal(json_array_size(a), 2);
	assert_int_equal(json_array_size(b), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(b, 0), "msg")),
	                    "after");
	struct stat sb;
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	json_decref(a);
	json_decref(b);
	free(moved);
	logmgr_free(lm);
}

static void
test_file_errors(void **state)
{
	(void)state;
	if (access("/dev/full", W_OK) != 0)
		skip();
	struct logmgr *lm = logmgr_new(NULL);
	char *cause = NULL;
	assert_int_equal(logmgr_open_file(lm, "/dev/full", 0, 0, &cause), 0);
	log_info(lm, "t", "one");
	log_info(lm, "t", "two");
	struct log_stats st;
	logmgr_stats(lm, &st);
	assert_int_equal(st.file_errors, 2);
	assert_int_equal(st.emitted, 2);
	assert_int_equal(logmgr_ring_count(lm), 2);
	logmgr_free(lm);
}

struct sub_probe {
	int n;
	char last_msg[256];
	char last_source[64];
	char *fields_json;
	uint64_t last_seq;
};

static void
sub_cb(void *arg, const struct log_record *rec)
{
	struct sub_probe *p = arg;
	p->n++;
	snprintf(p->last_msg, sizeof p->last_msg, "%s", rec->msg);
	snprintf(p->last_source, sizeof p->last_source, "%s", rec->source);
	free(p->fields_json);
	p->fields_json = rec->fields ? json_dumps(rec->fields, JSON_COMPACT) : NULL;
	p->last_seq = rec->seq;
}

static void
test_redaction(void **state)
{
	struct fixture *f = *state;
	char *dbpath = path_join(f->dir, "dreamos.db");
	struct store *st;
	char *cause = NULL;
	assert_int_equal(store_open(&st, NULL, &(struct store_opts){.path = dbpath}, &cause), 0);

	struct logmgr *lm = logmgr_new(NULL);
	assert_int_equal(logmgr_open_file(lm, f->path, 0, 1, &cause), 0);
	logmgr_set_store(lm, st);
	logmgr_add_secret(lm, SECRET);
	logmgr_add_secret(lm, SECRET);  /* twice: harmless */
	logmgr_add_secret(lm, "short"); /* under 8 bytes: ignored */
	logmgr_add_secret(lm, NULL);
	struct sub_probe p = {0};
	logmgr_subscribe(lm, sub_cb, &p);

	/* The caller keeps a reference: its object must not be changed. */
	json_t *fields = json_pack("{s:s, s:{s:[s,i], s:i}, s:s, s:s}", "auth", "Bearer " SECRET,
	                           "nested", "list", "x" SECRET "y" SECRET, 7, "in-" SECRET, 1,
	                           "short", "short", "key-" SECRET, "v"); /* keys too */
	json_incref(fields);
	struct capture c;
	logmgr_set_stderr(lm, true);
	capture_begin(&c, f->dir);
	log_emit(lm, LVL_WARN, "bridge", fields, "token=%s again %s.", SECRET, SECRET);
	char *err = capture_end(&c);
	logmgr_set_stderr(lm, false);

	const char *want = "token=[redacted] again [redacted].";
	/* stderr */
	assert_null(strstr(err, SECRET));
	assert_non_null(strstr(err, want));
	assert_non_null(strstr(err, "auth=\"Bearer [redacted]\""));
	free(err);
	/* ring */
	const struct log_record *r = logmgr_ring_get(lm, 0);
	assert_string_equal(r->msg, want);
	const char *rf = r->fields_text;
	assert_non_null(rf);
	assert_null(strstr(rf, SECRET));
	assert_non_null(strstr(rf, "x[redacted]y[redacted]"));
	assert_non_null(strstr(rf, "\"short\":\"short\""));
	assert_non_null(strstr(rf, "\"key-[redacted]\":\"v\""));
	assert_non_null(strstr(rf, "\"in-[redacted]\":1"));

	/* subscriber */
	assert_string_equal(p.last_msg, want);
	assert_null(strstr(p.fields_json, SECRET));
	assert_non_null(strstr(p.fields_json, "Bearer [redacted]"));
	/* file */
	char *text = testutil_read(f->path);
	assert_null(strstr(text, SECRET));
	assert_non_null(strstr(text, "[redacted]"));
	free(text);
	/* store */
	assert_int_equal(store_flush(st, NULL), 0);
	sqlite3_stmt *q = store_stmt(st, "SELECT msg, fields FROM logs");
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(q, 0), want);
	assert_null(strstr((const char *)sqlite3_column_text(q, 1), SECRET));
	assert_non_null(strstr((const char *)sqlite3_column_text(q, 1), "[redacted]"));
	sqlite3_reset(q);
	/* the caller's object */
	assert_string_equal(json_string_value(json_object_get(fields, "auth")), "Bearer " SECRET);
	assert_string_equal(json_string_value(json_object_get(fields, "key-" SECRET)), "v");
	json_decref(fields);

	/* A secret added later applies from then on; no secret, no change. */
	log_info(lm, "t", "nothing secret here");
	assert_string_equal(p.last_msg, "nothing secret here");

	free(p.fields_json);
	logmgr_set_store(lm, NULL);
	logmgr_free(lm);
	store_close(st);
	free(dbpath);
}

/* A subscriber that unsubscribes itself on its second record. */
struct self_unsub {
	struct logmgr *lm;
	int id;
	int n;
};

static void
self_unsub_cb(void *arg, const struct log_record *rec)
{
	(void)rec;
	struct self_unsub *s = arg;
	if (++s->n == 2)
		logmgr_unsubscribe(s->lm, s->id);
}

/* A subscriber that logs (the TUI might): nested records work. */
static void
logging_sub_cb(void *arg, const struct log_record *rec)
{
	struct logmgr *lm = arg;
	if (strcmp(rec->source, "echo") != 0)
		log_info(lm, "echo", "saw %s", rec->msg);
}

/* A subscriber that logs on every record, its own included. */
static void
runaway_sub_cb(void *arg, const struct log_record *rec)
{
	log_info(arg, "loop", "again: %s", rec->msg);
}

static void
test_subscribers(void **state)
{
	(void)state;
	struct logmgr *lm = logmgr_new(NULL);
	struct sub_probe a = {0}, b = {0};
	int ida = logmgr_subscribe(lm, sub_cb, &a);
	int idb = logmgr_subscribe(lm, sub_cb, &b);
	assert_int_not_equal(ida, idb);
	log_emit(lm, LVL_INFO, "src", json_pack("{s:b}", "ok", 1), "one %d", 1);
	assert_int_equal(a.n, 1);
	assert_int_equal(b.n, 1);
	assert_string_equal(a.last_msg, "one 1");
	assert_string_equal(a.last_source, "src");
	assert_string_equal(a.fields_json, "{\"ok\":true}");
	assert_int_equal(a.last_seq, 1);
	logmgr_unsubscribe(lm, ida);
	logmgr_unsubscribe(lm, ida); /* twice: harmless */
	logmgr_unsubscribe(lm, 12345);
	log_info(lm, "src", "two");
	assert_int_equal(a.n, 1);
	assert_int_equal(b.n, 2);
	assert_string_equal(b.last_msg, "two");

	struct self_unsub s = {lm, 0, 0};
	s.id = logmgr_subscribe(lm, self_unsub_cb, &s);
	for (int i = 0; i < 4; i++)
		log_info(lm, "src", "x");
	assert_int_equal(s.n, 2);
	assert_int_equal(b.n, 6);

	int idl = logmgr_subscribe(lm, logging_sub_cb, lm);
	log_info(lm, "src", "hello");
	/* b saw "hello" and the nested "saw hello". */
	assert_int_equal(b.n, 8);
	assert_string_equal(logmgr_ring_get(lm, logmgr_ring_count(lm) - 1)->msg, "saw hello");
	assert_string_equal(logmgr_ring_get(lm, logmgr_ring_count(lm) - 2)->msg, "hello");
	logmgr_unsubscribe(lm, idl);

	/* A subscriber that logs on every record cannot recurse forever. */
	int idr = logmgr_subscribe(lm, runaway_sub_cb, lm);
	int before = b.n;
	log_info(lm, "src", "start");
	assert_true(b.n > before + 1);
	assert_true(b.n < before + 10);
	logmgr_unsubscribe(lm, idr);
	logmgr_unsubscribe(lm, idb);
	free(a.fields_json);
	free(b.fields_json);
	logmgr_free(lm);
}

/* Emits the records both query tests search. */
static void
emit_query_set(struct logmgr *lm)
{
	log_info(lm, "alpha", "starting up");
	log_warn(lm, "alpha", "disk at 100%% soon");
	log_error(lm, "beta", "connection lost");
	log_info(lm, "beta", "name a_b here");
	log_debug(lm, "alpha", "debug detail");
	log_emit(lm, LVL_WARN, "alpha", json_pack("{s:i}", "n", 5), "disk at 1000 MB");
	log_info(lm, "gamma", "axb matches no underscore");
}

/* Returns the msg of item i of a query result. */
static const char *
msg_at(json_t *a, size_t i)
{
	return json_string_value(json_object_get(json_array_get(a, i), "msg"));
}

/* The same checks against either backend. */
static void
check_queries(struct logmgr *lm, int64_t t0)
{
	char *cause = NULL;
	json_t *a = logmgr_query(lm, &(struct log_query){0}, &cause);
	assert_non_null(a);
	assert_int_equal(json_array_size(a), 7);
	assert_string_equal(msg_at(a, 0), "starting up");
	assert_string_equal(msg_at(a, 6), "axb matches no underscore");
	json_t *o = json_array_get(a, 5);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(o, "source")), "alpha");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "fields"), "n")), 5);
	assert_true(json_integer_value(json_object_get(o, "seq")) >
	            json_integer_value(json_object_get(json_array_get(a, 4), "seq")));
	assert_non_null(json_string_value(json_object_get(o, "ts")));
	json_decref(a);

	a = logmgr_query(lm, &(struct log_query){.has_level = true, .min_level = LVL_WARN}, &cause);
	assert_int_equal(json_array_size(a), 3);
	assert_string_equal(msg_at(a, 0), "disk at 100% soon");
	assert_string_equal(msg_at(a, 1), "connection lost");
	assert_string_equal(msg_at(a, 2), "disk at 1000 MB");
	json_decref(a);

	a = logmgr_query(lm, &(struct log_query){.source = "beta"}, &cause);
	assert_int_equal(json_array_size(a), 2);
	assert_string_equal(msg_at(a, 0), "connection lost");
	json_decref(a);

	/* grep is a plain substring: % and _ are not wildcards. */
	a = logmgr_query(lm, &(struct log_query){.grep = "100%"}, &cause);
	assert_int_equal(json_array_size(a), 1);
	assert_string_equal(msg_at(a, 0), "disk at 100% soon");
	json_decref(a);
	a = logmgr_query(lm, &(struct log_query){.grep = "a_b"}, &cause);
	assert_int_equal(json_array_size(a), 1);
	assert_string_equal(msg_at(a, 0), "name a_b here");
	json_decref(a);

	a = logmgr_query(
	    lm,
	    &(struct log_query){
	        .source = "alpha", .grep = "disk", .has_level = true, .min_level = LVL_WARN},
	    &cause);
	assert_int_equal(json_array_size(a), 2);
	json_decref(a);

	/* The newest N, oldest first. */
	a = logmgr_query(lm, &(struct log_query){.limit = 3}, &cause);
	assert_int_equal(json_array_size(a), 3);
	assert_string_equal(msg_at(a, 0), "debug detail");
	assert_string_equal(msg_at(a, 2), "axb matches no underscore");
	json_decref(a);

	a = logmgr_query(lm, &(struct log_query){.since_ms = t0}, &cause);
	assert_int_equal(json_array_size(a), 7);
	json_decref(a);
	a = logmgr_query(lm, &(struct log_query){.since_ms = time_wall_ms() + 60000}, &cause);
	assert_int_equal(json_array_size(a), 0);
	json_decref(a);
	a = logmgr_query(lm, &(struct log_query){.source = "nobody"}, &cause);
	assert_int_equal(json_array_size(a), 0);
	json_decref(a);
}

/* A store error callback that logs, as the orchestrator wires it. */
static void
store_error_to_log(void *arg, const char *msg)
{
	log_error(arg, "store", "%s", msg);
}

static void
test_query_store(void **state)
{
	struct fixture *f = *state;
	char *dbpath = path_join(f->dir, "dreamos.db");
	struct store *st;
	char *cause = NULL;
	assert_int_equal(store_open(&st, NULL, &(struct store_opts){.path = dbpath}, &cause), 0);
	struct logmgr *lm = logmgr_new(&(struct log_opts){.level = LVL_DEBUG});
	store_set_error_cb(st, store_error_to_log, lm);

	log_info(lm, "old", "before the store was set");
	logmgr_set_store(lm, st);
	int64_t t0 = time_wall_ms();
	emit_query_set(lm);
	assert_true(store_pending(st));
	check_queries(lm, t0); /* the open transaction is visible */
	assert_int_equal(store_flush(st, NULL), 0);
	check_queries(lm, t0);

	/* Query results carry the row id as seq. */
	json_t *a = logmgr_query(lm, &(struct log_query){.limit = 1}, &cause);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "seq")), 7);
	json_decref(a);

	/* The store failing while logging: reported, no recursion, no crash. */
	assert_int_equal(store_exec(st, "DROP TABLE logs", &cause), 0);
	log_info(lm, "t", "cannot be stored");
	size_t n = logmgr_ring_count(lm);
	assert_string_equal(logmgr_ring_get(lm, n - 2)->msg, "cannot be stored");
	const struct log_record *r = logmgr_ring_get(lm, n - 1);
	assert_string_equal(r->source, "store");
	assert_non_null(strstr(r->msg, "no such table"));
	a = logmgr_query(lm, &(struct log_query){0}, &cause);
	assert_null(a);
	assert_non_null(strstr(cause, "log query failed"));
	free(cause);

	logmgr_set_store(lm, NULL);
	store_close(st);
	logmgr_free(lm);
	free(dbpath);
}

static void
test_query_ring(void **state)
{
	(void)state;
	struct logmgr *lm = logmgr_new(&(struct log_opts){.level = LVL_DEBUG});
	int64_t t0 = time_wall_ms();
	emit_query_set(lm);
	check_queries(lm, t0);
	json_t *a = logmgr_query(lm, NULL, NULL);
	assert_int_equal(json_array_size(a), 7);
	json_decref(a);
	logmgr_free(lm);
}

static void
test_stderr_format(void **state)
{
	struct fixture *f = *state;
	struct logmgr *lm = logmgr_new(NULL);
	logmgr_set_stderr(lm, true);
	struct capture c;
	capture_begin(&c, f->dir);
	log_emit(lm, LVL_INFO, "ctl", json_pack("{s:s, s:i, s:s}", "k", "v", "n", 3, "s", "a b"),
	         "hello");
	log_error(lm, "agent-7", "boom");
	char *text = capture_end(&c);
	/* 2026-11-21T07:08:09.123Z INFO  ctl: hello k=v n=3 s="a b" */
	char *nl = strchr(text, '\n');
	assert_non_null(nl);
	*nl = '\0';
	assert_int_equal(text[4], '-');
	assert_int_equal(text[10], 'T');
	assert_int_equal(text[23], 'Z');
	assert_string_equal(text + 24, " INFO  ctl: hello k=v n=3 s=\"a b\"");
	assert_string_equal(nl + 1 + 24, " ERROR agent-7: boom\n");
	free(text);
	logmgr_free(lm);
}

static void
test_record_json(void **state)
{
	(void)state;
	json_t *fields = json_pack("{s:s}", "a", "b");
	struct log_record rec = {
	    .seq = 9,
	    .ts_ms = 1795244889123, /* 2026-11-21T07:08:09.123Z */
	    .level = LVL_ERROR,
	    .source = "src",
	    .msg = "m",
	    .fields = fields,
	};
	json_t *o = log_record_json(&rec);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 9);
	assert_string_equal(json_string_value(json_object_get(o, "ts")),
	                    "2026-11-21T07:08:09.123Z");
	assert_string_equal(json_string_value(json_object_get(o, "level")), "error");
	assert_string_equal(json_string_value(json_object_get(o, "source")), "src");
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "m");
	assert_ptr_equal(json_object_get(o, "fields"), fields);
	json_decref(o);
	json_decref(fields);
}

static void
test_throughput(void **state)
{
	struct fixture *f = *state;
	char *dbpath = path_join(f->dir, "dreamos.db");
	struct store *st;
	char *cause = NULL;
	assert_int_equal(store_open(&st, NULL, &(struct store_opts){.path = dbpath}, &cause), 0);
	struct logmgr *lm = logmgr_new(NULL);
	assert_int_equal(logmgr_open_file(lm, f->path, 1 << 20, 2, &cause), 0);
	logmgr_set_store(lm, st);
	logmgr_add_secret(lm, SECRET);
	const int n = 50000;
	int64_t t0 = time_mono_ms();
	for (int i = 0; i < n; i++) {
		log_emit(lm, LVL_INFO, "bench", i % 4 ? NULL : json_pack("{s:i}", "i", i),
		         "record %d from the agent with some text", i);
		if (i % 1000 == 999)
			store_flush(st, NULL);
	}
	store_flush(st, NULL);
	int64_t ms = time_mono_ms() - t0;
	print_message("%d records (ring + file + store) in %lld ms\n", n, (long long)ms);
	assert_true(ms < 20000); /* generous: sanitizers and valgrind are slow */
	struct log_stats ls;
	logmgr_stats(lm, &ls);
	assert_int_equal(ls.emitted, n);
	assert_int_equal(ls.file_errors, 0);
	logmgr_set_store(lm, NULL);
	logmgr_free(lm);
	store_close(st);
	free(dbpath);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_level_parse_name),
	    cmocka_unit_test(test_levels_filter),
	    cmocka_unit_test(test_ring_wraps),
	    cmocka_unit_test_setup_teardown(test_file_turn_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_json_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
	    cmocka_unit_test(test_file_errors),
	    cmocka_unit_test_setup_teardown(test_redaction, setup, teardown),
	    cmocka_unit_test(test_subscribers),
	    cmocka_unit_test_setup_teardown(test_query_store, setup, teardown),
	    cmocka_unit_test(test_query_ring),
	    cmocka_unit_test_setup_teardown(test_stderr_format, setup, teardown),
	    cmocka_unit_test(test_record_json),
	    cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
