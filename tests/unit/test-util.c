/* test-util.c — parsing of durations and sizes, UTF-8 validation, buffers,
 * formatting, clock batches, the runtime directory lock and the id map. */
#include "testutil.h"

#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "ackmark.h"
#include "intmap.h"
#include "outq.h"
#include "runtime.h"
#include "util.h"

static void
test_duration(void **state)
{
	double s;
	assert_true(parse_duration("30", &s));
	assert_true(s == 30.0);
	assert_true(parse_duration("1.5", &s));
	assert_true(s == 1.5);
	assert_true(parse_duration("250ms", &s));
	assert_true(s > 0.2499 && s < 0.2501);
	assert_true(parse_duration("5m", &s));
	assert_true(s == 300.0);
	assert_true(parse_duration("2h", &s));
	assert_true(s == 7200.0);
	assert_true(parse_duration("7d", &s));
	assert_true(s == 7 * 86400.0);
	assert_true(parse_duration("10 s", &s));
	assert_false(parse_duration("", &s));
	assert_false(parse_duration("-1", &s));
	assert_false(parse_duration("abc", &s));
	assert_false(parse_duration("5 parsecs", &s));
	assert_false(parse_duration("nan", &s));
	/* Beyond 100 years: refused, not left to overflow a cast to ms. */
	assert_true(parse_duration("36500d", &s));
	assert_false(parse_duration("36501d", &s));
	assert_false(parse_duration("18888888888888888888888888888888888888", &s));
	assert_false(parse_duration("1e300h", &s));
}

static void
test_size(void **state)
{
	uint64_t b;
	assert_true(parse_size("1024", &b));
	assert_int_equal(b, 1024);
	assert_true(parse_size("64k", &b));
	assert_int_equal(b, 65536);
	assert_true(parse_size("10MB", &b));
	assert_int_equal(b, 10 * 1048576);
	assert_true(parse_size("1MiB", &b));
	assert_int_equal(b, 1048576);
	assert_true(parse_size("2G", &b));
	assert_int_equal(b, 2ULL * 1073741824);
	assert_false(parse_size("ten", &b));
	assert_false(parse_size("1 parsec", &b));
	assert_false(parse_size("1e30", &b));
}

static void
test_utf8(void **state)
{
	assert_true(utf8_valid("plain", 5));
	assert_true(utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
	assert_false(utf8_valid("\xc3", 1));             /* truncated */
	assert_false(utf8_valid("\xc0\xaf", 2));         /* overlong */
	assert_false(utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
	assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(utf8_valid("\xff", 1));
	assert_false(utf8_valid("a\x80", 2));
	/* Long ASCII runs are checked a word at a time: a bad byte, a good
	 * character or a cut one at every offset around the word edges. */
	char s[48];
	for (size_t at = 0; at + 3 <= sizeof s; at++) {
		memset(s, 'a', sizeof s);
		s[at] = '\x80';
		assert_false(utf8_valid(s, sizeof s));
		memcpy(s + at, "\xe2\x82\xac", 3); /* U+20AC */
		assert_true(utf8_valid(s, sizeof s));
		assert_false(utf8_valid(s, at + 2)); /* cut after two of its three bytes */
		s[at + 1] = 'a';                     /* a lead byte without its continuation */
		assert_false(utf8_valid(s, sizeof s));
	}
	memset(s, 'a', sizeof s);
	assert_true(utf8_valid(s, sizeof s));
	assert_true(utf8_valid(s, 0));
	/* Every length, for the blocks of sixteen, the words of eight and a
	 * tail checked as the last eight bytes: a bad byte anywhere, and a
	 * good character at the very end. */
	for (size_t len = 1; len < sizeof s; len++) {
		memset(s, 'a', sizeof s);
		assert_true(utf8_valid(s, len));
		for (size_t at = 0; at < len; at++) {
			s[at] = '\x80';
			assert_false(utf8_valid(s, len));
			s[at] = 'a';
		}
		if (len >= 3) {
			memcpy(s + len - 3, "\xe2\x82\xac", 3);
			assert_true(utf8_valid(s, len));
			assert_false(utf8_valid(s, len - 1));
		}
	}
}

/* Text from an agent shown on a terminal: no control character gets through. */
static void
test_buf_visible(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_add_visible(&b, "ok\n2026 ERROR orch: fake\x1b[2J\x1b]0;t\x07\ttab\r\x7f caf\xc3\xa9");
	assert_string_equal(
	    buf_cstr(&b),
	    "ok\\n2026 ERROR orch: fake\\x1b[2J\\x1b]0;t\\x07\\ttab\\r\\x7f caf\xc3\xa9");
	b.len = 0;
	buf_add_visible(&b, "");
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void
test_buf(void **state)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "hello ");
	buf_addf(&b, "%d %s", 42, "world");
	assert_string_equal(buf_cstr(&b), "hello 42 world");
	buf_consume(&b, 6);
	assert_string_equal(buf_cstr(&b), "42 world");
	buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	for (int i = 0; i < 10000; i++)
		buf_add(&b, "x", 1);
	assert_int_equal(b.len, 10000);
	buf_free(&b);

	/* buf_add_int: what printf's %lld writes, at the edges too. */
	static const int64_t ints[] = {0,     7,         -7,        10,           999,
	                               -1000, INT64_MAX, INT64_MIN, INT64_MIN + 1};
	for (size_t i = 0; i < nitems(ints); i++) {
		char want[32];
		snprintf(want, sizeof want, "%lld|", (long long)ints[i]);
		buf_init(&b);
		buf_add_int(&b, ints[i]);
		buf_adds(&b, "|");
		assert_string_equal(buf_cstr(&b), want);
		buf_free(&b);
	}

	/* buf_addf formats in place: output longer than the room left (the
	 * second pass) and shorter, at every fill level around a boundary. */
	char big[3000];
	memset(big, 'y', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	for (size_t pre = 0; pre < 300; pre += 7) {
		buf_init(&b);
		for (size_t i = 0; i < pre; i++)
			buf_add(&b, "p", 1);
		buf_addf(&b, "[%s|%d]", big, 7);
		buf_addf(&b, "<%s>", "z");
		assert_int_equal(b.len, pre + sizeof big - 1 + 4 + 3);
		assert_int_equal(strlen(buf_cstr(&b)), b.len);
		assert_int_equal(b.data[pre], '[');
		assert_memory_equal(b.data + pre + 1, big, sizeof big - 1);
		assert_string_equal(b.data + pre + sizeof big, "|7]<z>");
		buf_free(&b);
	}
	buf_init(&b);
	buf_addf(&b, "%s", "");
	assert_int_equal(b.len, 0);
	assert_string_equal(buf_cstr(&b), "");
	buf_free(&b);
}

/* Sleeps ms milliseconds. */
static void
sleep_ms(long ms)
{
	struct timespec ts = {0, ms * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Within a batch each clock is read once; outside, every call reads it. */
static void
test_time_batch(void **state)
{
	(void)state;
	int64_t m0 = time_mono_ms(), w0 = time_wall_ms();
	sleep_ms(5);
	time_batch_begin();
	int64_t m1 = time_mono_ms(), w1 = time_wall_ms();
	assert_true(m1 >= m0 + 5);
	assert_true(w1 >= w0 + 4); /* (the wall clock may be stepped; not by NTP in 5 ms) */
	sleep_ms(5);
	assert_int_equal(time_mono_ms(), m1);
	assert_int_equal(time_wall_ms(), w1);
	time_batch_begin(); /* nested: still the same reading */
	sleep_ms(2);
	assert_int_equal(time_mono_ms(), m1);
	time_batch_end();
	assert_int_equal(time_mono_ms(), m1);
	time_batch_end();
	/* Closed: fresh readings again, and a new batch takes new ones. */
	assert_true(time_mono_ms() >= m1 + 7);
	time_batch_begin();
	assert_true(time_mono_ms() >= m1 + 7);
	assert_true(time_wall_ms() >= w1 + 6);
	time_batch_end();
}

static void
test_format(void **state)
{
	char s[32];
	format_duration(3.44, s, sizeof s);
	assert_string_equal(s, "3.4 s");
	format_duration(125, s, sizeof s);
	assert_string_equal(s, "2 m 5 s");
	format_duration(3720, s, sizeof s);
	assert_string_equal(s, "1 h 2 m");
	format_size(512, s, sizeof s);
	assert_string_equal(s, "512 B");
	format_size(1536, s, sizeof s);
	assert_string_equal(s, "1.5 KiB");
	time_iso8601(1700000000123LL, s, sizeof s);
	assert_string_equal(s, "2023-11-14T22:13:20.123Z");
	/* The seconds are cached: the same second, the next, and back. */
	time_iso8601(1700000000007LL, s, sizeof s);
	assert_string_equal(s, "2023-11-14T22:13:20.007Z");
	time_iso8601(1700000001999LL, s, sizeof s);
	assert_string_equal(s, "2023-11-14T22:13:21.999Z");
	time_iso8601(1700000000050LL, s, sizeof s);
	assert_string_equal(s, "2023-11-14T22:13:20.050Z");
	time_iso8601(0, s, sizeof s);
	assert_string_equal(s, "1970-01-01T00:00:00.000Z");
	time_iso8601(-1500, s, sizeof s);
	assert_string_equal(s, "1969-12-31T23:59:58.500Z");
	char small[11];
	time_iso8601(1700000000123LL, small, sizeof small);
	assert_string_equal(small, "2023-11-14");
}

static void
test_runtime_lock(void **state)
{
	char *dir = testutil_tmpdir();
	char *rt = path_join(dir, "a/b/runtime");
	char *cause = NULL;
	assert_int_equal(runtime_prepare(rt, &cause), 0);
	struct stat sb;
	assert_int_equal(stat(rt, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	char *logs = path_join(rt, "logs");
	assert_int_equal(stat(logs, &sb), 0);
	free(logs);

	struct runtime_lock l1 = {.fd = -1}, l2 = {.fd = -1};
	assert_int_equal(runtime_lock(rt, &l1, &cause), 0);
	assert_int_equal(runtime_lock_holder(rt), getpid());
	assert_int_equal(runtime_lock(rt, &l2, &cause), -1);
	char want[256];
	snprintf(want, sizeof want, "runtime directory %s is in use by dreamos pid %ld", rt,
	         (long)getpid());
	assert_string_equal(cause, want);
	free(cause);
	runtime_unlock(&l1);
	char *lockfile = path_join(rt, "dreamos.lock");
	assert_int_not_equal(access(lockfile, F_OK), 0);
	free(lockfile);
	assert_int_equal(runtime_lock_holder(rt), 0);
	assert_int_equal(runtime_lock(rt, &l2, &cause), 0);
	runtime_unlock(&l2);

	setenv("DREAMOS_RUNTIME", "/x/y", 1);
	char *r = runtime_resolve(NULL);
	assert_string_equal(r, "/x/y");
	free(r);
	r = runtime_resolve("/opt/z");
	assert_string_equal(r, "/opt/z");
	free(r);
	unsetenv("DREAMOS_RUNTIME");
	setenv("XDG_STATE_HOME", "/state", 1);
	r = runtime_resolve(NULL);
	assert_string_equal(r, "/state/dreamos");
	free(r);
	free(rt);
	testutil_rmdir(dir);
}

/* intmap against a plain array, through the patterns the bus makes (ids
 * added in order, removed in about that order, a window in between) and
 * random ones, with deletes that turn tombstones back into empty slots. */
static void
test_intmap(void **state)
{
	(void)state;
	enum { RANGE = 5000 };
	static char model[RANGE + 1]; /* 1: present, with value id * 2 */
	struct intmap m;
	intmap_init(&m);
	assert_null(intmap_get(&m, 1));
	assert_null(intmap_del(&m, 1));
	size_t n = 0;
	uint64_t rng = 42;
	for (int round = 0; round < 200000; round++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		int64_t k;
		if (round < 100000) /* a sliding window of ~300 ids */
			k = 1 + (round / 2 + (int64_t)(rng % 300)) % RANGE;
		else
			k = 1 + (int64_t)(rng % RANGE);
		void *want = model[k] ? (void *)(intptr_t)(k * 2) : NULL;
		switch (rng >> 60 & 3) {
		case 0:
		case 1:
			intmap_set(&m, k, (void *)(intptr_t)(k * 2));
			n += !model[k];
			model[k] = 1;
			break;
		case 2:
			assert_ptr_equal(intmap_del(&m, k), want);
			n -= model[k];
			model[k] = 0;
			break;
		default:
			assert_ptr_equal(intmap_get(&m, k), want);
		}
		assert_int_equal(m.n, n);
		assert_true(m.used >= m.n && m.used < m.cap);
	}
	for (int64_t k = 1; k <= RANGE; k++)
		assert_ptr_equal(intmap_get(&m, k), model[k] ? (void *)(intptr_t)(k * 2) : NULL);
	size_t seen = 0, it = 0;
	int64_t key;
	void *v;
	while (intmap_next(&m, &it, &key, &v)) {
		assert_true(model[key]);
		assert_ptr_equal(v, (void *)(intptr_t)(key * 2));
		seen++;
	}
	assert_int_equal(seen, n);
	/* Deleting everything leaves no tombstone behind. */
	for (int64_t k = 1; k <= RANGE; k++)
		if (model[k])
			intmap_del(&m, k);
	assert_int_equal(m.n, 0);
	assert_int_equal(m.used, 0);
	intmap_free(&m);
}

/* ackmark: the mark moves past leading acked or done entries only, never
 * past a pending one; acks behind it are handed out for rows once; an id
 * out of order stops the mark for good; slots survive the ring sliding. */
static void
collect_acked(void *arg, const struct ackmark_ent *e)
{
	int64_t *ids = arg;
	ids[++ids[0]] = e->id * 100 + e->attempt;
}

static void
test_ackmark(void **state)
{
	(void)state;
	struct ackmark am;
	ackmark_init(&am, 10);
	assert_false(ackmark_advance(&am));
	assert_int_equal(am.mark, 10);
	assert_int_equal(ackmark_push(&am, 10), 0); /* not above the mark */
	ackmark_free(&am);

	ackmark_init(&am, 0);
	uint64_t a = ackmark_push(&am, 5), b = ackmark_push(&am, 7), c = ackmark_push(&am, 9);
	assert_true(a != 0 && b != 0 && c != 0 && a != b && b != c);
	ackmark_ack(&am, b, 1, 1000);
	ackmark_ack(&am, c, 2, 1001);
	assert_false(ackmark_advance(&am)); /* 5 is pending */
	assert_int_equal(am.mark, 0);
	int64_t got[8] = {0};
	ackmark_take_acked(&am, collect_acked, got);
	assert_int_equal(got[0], 2);
	assert_int_equal(got[1], 701);
	assert_int_equal(got[2], 902);
	got[0] = 0;
	ackmark_take_acked(&am, collect_acked, got); /* once only */
	assert_int_equal(got[0], 0);
	ackmark_done(&am, a);
	assert_true(ackmark_advance(&am));
	assert_int_equal(am.mark, 9);
	/* Acks of entries the mark passed need no row; an ack of a slot gone
	 * is ignored. */
	ackmark_ack(&am, a, 1, 1);
	ackmark_take_acked(&am, collect_acked, got);
	assert_int_equal(got[0], 0);

	/* Many entries, acked in order with one straggler: the ring slides
	 * and grows, slots stay valid. */
	uint64_t slots[1000];
	for (int i = 0; i < 1000; i++)
		slots[i] = ackmark_push(&am, 100 + i);
	for (int i = 0; i < 1000; i++)
		if (i != 500)
			ackmark_ack(&am, slots[i], 1, 0);
	ackmark_advance(&am);
	assert_int_equal(am.mark, 100 + 499);
	got[0] = 0;
	int64_t *many = calloc(1001, sizeof *many);
	ackmark_take_acked(&am, collect_acked, many);
	assert_int_equal(many[0], 499); /* 501..999, behind 500 */
	free(many);
	for (int i = 0; i < 300; i++)
		ackmark_push(&am, 2000 + i); /* slides past the gone ones */
	ackmark_ack(&am, slots[500], 3, 0);
	ackmark_advance(&am);
	assert_int_equal(am.mark, 100 + 999); /* to 2000, pending */
	/* Out of order: the mark stops. */
	assert_int_equal(ackmark_push(&am, 50), 0);
	assert_true(am.broken);
	ackmark_free(&am);
}

/* outq: the bytes not owed an answer among what is still queued, as the
 * queue (first in, first out) is written; runs of a kind are one entry. */
static void
test_outq(void **state)
{
	(void)state;
	struct outq q;
	outq_init(&q);
	assert_int_equal(outq_unowed(&q, 0), 0);
	/* 100 owed (a message), 30 not (a `sent`), 200 owed, 10 not. */
	outq_push(&q, 100, true);
	outq_push(&q, 30, false);
	outq_push(&q, 200, true);
	outq_push(&q, 10, false);
	assert_int_equal(q.n, 4);
	assert_int_equal(outq_unowed(&q, 340), 40);
	assert_int_equal(outq_unowed_in(&q, 340, 130), 30);  /* the oldest 130 */
	assert_int_equal(outq_unowed_in(&q, 340, 1000), 40); /* (more than queued) */
	assert_int_equal(outq_unowed(&q, 250), 40);          /* 90 of the first written */
	assert_int_equal(outq_unowed(&q, 220), 20);          /* into the `sent`: 10 left */
	assert_int_equal(q.n, 3);
	assert_int_equal(outq_unowed_in(&q, 220, 20), 10);
	assert_int_equal(outq_unowed_in(&q, 220, 5), 5);
	/* A message sent twice (redelivered while its first copy waits) is
	 * owed twice; the queue's own size says what is left. */
	outq_push(&q, 200, true);
	assert_int_equal(outq_unowed(&q, 420), 20);
	outq_push(&q, 5, false);
	outq_push(&q, 7, false); /* joins the run before */
	assert_int_equal(q.n, 5);
	assert_int_equal(outq_unowed(&q, 432), 32);
	assert_int_equal(outq_unowed(&q, 12), 12); /* all but the last run written */
	assert_int_equal(q.n, 1);
	assert_int_equal(outq_unowed(&q, 0), 0); /* all written: nothing left */
	assert_int_equal(q.n, 0);
	/* A queue larger than what was pushed (bytes the link wrote itself). */
	outq_push(&q, 50, false);
	assert_int_equal(outq_unowed(&q, 80), 50);
	/* The ring grows, in order, past its first size. */
	for (int i = 0; i < 100; i++)
		outq_push(&q, 1, i % 2 == 0);
	assert_int_equal(outq_unowed(&q, 150), 100);
	assert_int_equal(outq_unowed(&q, 99), 50);
	assert_int_equal(outq_unowed(&q, 1), 1);
	outq_free(&q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_duration),     cmocka_unit_test(test_size),
	    cmocka_unit_test(test_utf8),         cmocka_unit_test(test_buf),
	    cmocka_unit_test(test_buf_visible),  cmocka_unit_test(test_format),
	    cmocka_unit_test(test_runtime_lock), cmocka_unit_test(test_time_batch),
	    cmocka_unit_test(test_intmap),       cmocka_unit_test(test_ackmark),
	    cmocka_unit_test(test_outq),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
