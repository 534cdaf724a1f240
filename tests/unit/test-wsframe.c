/* test-wsframe.c — the Bridge's WebSocket frame reader (src/bridge/wsframe.c):
 * every length form, masking, fragments with control frames between them,
 * frames cut at every byte boundary, UTF-8 checked across frames, and each
 * rule a client can break with the close code it gets (1002, 1003's binary
 * report, 1007, 1009).  Each test feeds client frames and checks what the
 * reader reports, which is what http.c turns into messages and close frames. */
#include "testutil.h"

#include "util.h"
#include "wsframe.h"
#include "wsframes.h"

/* A masked frame with the shortest length form. */
static size_t
frame(uint8_t *out, bool fin, int opcode, const void *payload, size_t len)
{
	return ws_frame(out, fin, opcode, true, payload, len);
}

/* FNV-1a, to name a long payload in an event log. */
static uint32_t
fnv(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

/* Appends one event to log as text: "text:hello", "text#3000/1a2b3c4d"
 * (long ones), "binary:2", "ping:p!", "pong:", "close:1000:done",
 * "error:1002:reason", "end". */
static void
log_event(struct buf *log, const struct wsframe_event *ev)
{
	if (log->len > 0)
		buf_adds(log, " | ");
	switch (ev->kind) {
	case WSF_TEXT:
		assert_int_equal(ev->data[ev->len], '\0'); /* NUL-terminated */
		if (ev->len <= 40)
			buf_addf(log, "text:%.*s", (int)ev->len, ev->data);
		else
			buf_addf(log, "text#%zu/%08x", ev->len, fnv(ev->data, ev->len));
		break;
	case WSF_BINARY:
		buf_addf(log, "binary:%zu", ev->len);
		break;
	case WSF_PING:
	case WSF_PONG:
		buf_addf(log, "%s:%.*s", ev->kind == WSF_PING ? "ping" : "pong", (int)ev->len,
		         ev->data);
		break;
	case WSF_CLOSE:
		buf_addf(log, "close:%d:%.*s", ev->code, (int)ev->len, ev->data);
		break;
	case WSF_ERROR:
		buf_addf(log, "error:%d:%.*s", ev->code, (int)ev->len, ev->data);
		break;
	case WSF_END:
		buf_adds(log, "end");
		break;
	case WSF_MORE:
		fail_msg("WSF_MORE is not logged");
	}
}

/* Feeds d[0..len) to a new reader (max_msg) in pieces of piece bytes and
 * returns the log of what it reported (malloc'd).  Every byte of a piece
 * must be used unless reading ended (close or error). */
static char *
run(size_t max_msg, const uint8_t *d, size_t len, size_t piece)
{
	struct wsframe r;
	struct buf log;
	wsframe_init(&r, max_msg);
	buf_init(&log);
	bool ended = false;
	for (size_t off = 0; off < len && !ended;) {
		size_t n = len - off < piece ? len - off : piece;
		size_t used = 0;
		while (used < n) {
			struct wsframe_event ev;
			size_t k = wsframe_read(&r, d + off + used, n - used, &ev);
			used += k;
			if (ev.kind == WSF_MORE) {
				assert_int_equal(used, n);
				break;
			}
			log_event(&log, &ev);
			if (ev.kind == WSF_CLOSE || ev.kind == WSF_ERROR) {
				/* nothing more is read */
				struct wsframe_event again;
				assert_int_equal(wsframe_read(&r, d, len, &again), 0);
				assert_int_equal(again.kind, WSF_END);
				assert_int_equal(again.code, ev.code);
				ended = true;
				break;
			}
			assert_true(k > 0);
		}
		off += n;
	}
	wsframe_free(&r);
	char *s = xstrdup(log.len ? log.data : "");
	buf_free(&log);
	return s;
}

/* Checks that d gives want whole, byte by byte, and cut in two at every
 * byte boundary. */
static void
check_all_cuts(size_t max_msg, const uint8_t *d, size_t len, const char *want)
{
	char *got = run(max_msg, d, len, SIZE_MAX);
	assert_string_equal(got, want);
	free(got);
	got = run(max_msg, d, len, 1);
	assert_string_equal(got, want);
	free(got);
	for (size_t cut = 1; cut < len; cut++) {
		struct wsframe r;
		struct buf log;
		wsframe_init(&r, max_msg);
		buf_init(&log);
		const uint8_t *parts[2] = {d, d + cut};
		size_t lens[2] = {cut, len - cut};
		bool ended = false;
		for (int i = 0; i < 2 && !ended; i++) {
			size_t used = 0;
			while (used < lens[i]) {
				struct wsframe_event ev;
				used += wsframe_read(&r, parts[i] + used, lens[i] - used, &ev);
				if (ev.kind == WSF_MORE)
					break;
				log_event(&log, &ev);
				if (ev.kind == WSF_CLOSE || ev.kind == WSF_ERROR) {
					ended = true;
					break;
				}
			}
			if (!ended)
				assert_int_equal(used, lens[i]);
		}
		if (strcmp(log.len ? log.data : "", want) != 0)
			fail_msg("cut at %zu of %zu: got \"%s\", want \"%s\"", cut, len,
			         log.len ? log.data : "", want);
		buf_free(&log);
		wsframe_free(&r);
	}
}

/* The log of one whole feed, compared with want. */
static void
check(size_t max_msg, const uint8_t *d, size_t len, const char *want)
{
	char *got = run(max_msg, d, len, SIZE_MAX);
	assert_string_equal(got, want);
	free(got);
}

static void
test_lengths(void **state)
{
	(void)state;
	/* 7-bit (0, 1, 125), 16-bit (126, 65535), 64-bit (65536, 70000):
	 * each message whole, every byte unmasked */
	const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
	for (size_t i = 0; i < nitems(sizes); i++) {
		size_t n = sizes[i];
		char *payload = xmalloc(n + 1);
		for (size_t k = 0; k < n; k++)
			payload[k] = (char)('a' + (k * 7 + k / 26) % 26);
		uint8_t *f = xmalloc(n + 14);
		size_t fl = frame(f, true, 1, payload, n);
		assert_int_equal(fl, n + (n < 126 ? 6 : n < 65536 ? 8 : 14));
		struct wsframe r;
		wsframe_init(&r, 1 << 20);
		struct wsframe_event ev;
		assert_int_equal(wsframe_read(&r, f, fl, &ev), fl);
		assert_int_equal(ev.kind, WSF_TEXT);
		assert_int_equal(ev.len, n);
		assert_memory_equal(ev.data, n ? payload : "", n);
		assert_int_equal(ev.data[n], '\0');
		wsframe_msg_done(&r);
		/* the same in pieces of 1000 bytes */
		size_t off = 0;
		ev.kind = WSF_MORE;
		while (off < fl) {
			size_t k = fl - off < 1000 ? fl - off : 1000;
			assert_int_equal(wsframe_read(&r, f + off, k, &ev), k);
			off += k;
			assert_int_equal(ev.kind, off < fl ? WSF_MORE : WSF_TEXT);
		}
		assert_int_equal(ev.len, n);
		assert_memory_equal(ev.data, n ? payload : "", n);
		wsframe_free(&r);
		free(f);
		free(payload);
	}
}

static void
test_masking(void **state)
{
	(void)state;
	/* every key byte matters, at every offset, for lengths around the
	 * 8-, 16- and 32-byte steps */
	const uint8_t keys[][4] = {
	    {0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}, {1, 2, 3, 4}, {0x80, 0x00, 0x7f, 0xc3}};
	for (size_t k = 0; k < nitems(keys); k++) {
		for (size_t n = 0; n <= 72; n++) {
			char payload[80];
			for (size_t i = 0; i < n; i++)
				payload[i] = (char)(0x20 + (i * 13 + k) % 95);
			uint8_t f[96];
			size_t fl = ws_frame_ex(f, 0x81, keys[k], LEN_AUTO, payload, n);
			/* the masked bytes differ from the text unless the
			 * key byte is 0 */
			for (size_t i = 0; i < n; i++)
				assert_int_equal(f[6 + i] ^ keys[k][i % 4], (uint8_t)payload[i]);
			struct wsframe r;
			wsframe_init(&r, 1024);
			struct wsframe_event ev;
			assert_int_equal(wsframe_read(&r, f, fl, &ev), fl);
			assert_int_equal(ev.kind, WSF_TEXT);
			assert_int_equal(ev.len, n);
			assert_memory_equal(ev.data, n ? payload : "", n);
			wsframe_free(&r);
		}
	}
	/* a message in frames of odd sizes: each frame has its own key and
	 * starts its mask anew */
	uint8_t f[256];
	const uint8_t k2[4] = {0x11, 0x22, 0x33, 0x44};
	size_t n = ws_frame_ex(f, 0x01, WS_TEST_KEY, LEN_AUTO, "abc", 3);
	n += ws_frame_ex(f + n, 0x00, k2, LEN_AUTO, "defghijklmn", 11);
	/* (long enough that a cut anywhere leaves 32 bytes or more to unmask
	 * from any phase of the key; logged by its hash) */
	static const char tail[] = "opqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-opqrstuvwxyz";
	static const char whole[] =
	    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-opqrstuvwxyz";
	n += ws_frame_ex(f + n, 0x80, WS_TEST_KEY, LEN_AUTO, tail, sizeof tail - 1);
	char want[64];
	snprintf(want, sizeof want, "text#%zu/%08x", sizeof whole - 1,
	         fnv(whole, sizeof whole - 1));
	check_all_cuts(1024, f, n, want);
}

static void
test_fragments_and_control(void **state)
{
	(void)state;
	/* a fragmented message with a ping and a pong between its frames:
	 * the ping is reported at once, the message when it is whole */
	uint8_t f[512];
	size_t n = frame(f, false, 1, "frag", 4);
	n += frame(f + n, true, 9, "p!", 2);
	n += frame(f + n, false, 0, "men", 3);
	n += frame(f + n, true, 10, "", 0);
	n += frame(f + n, false, 0, "", 0); /* an empty continuation */
	n += frame(f + n, true, 0, "ted", 3);
	n += frame(f + n, true, 1, "", 0); /* an empty message */
	n += frame(f + n, true, 1, "next", 4);
	n += frame(f + n, true, 8,
	           "\x03\xe8"
	           "done",
	           6);
	n += frame(f + n, true, 1, "after the close", 15); /* not read */
	check_all_cuts(1024, f, n,
	               "ping:p! | pong: | text:fragmented | text: | text:next | close:1000:done");

	/* a message whose first frames are empty */
	n = frame(f, false, 1, "", 0);
	n += frame(f + n, false, 0, "", 0);
	n += frame(f + n, true, 0, "x", 1);
	check_all_cuts(1024, f, n, "text:x");

	/* a close without a code is 1005; with a code and no reason */
	n = frame(f, true, 8, "", 0);
	check(1024, f, n, "close:1005:");
	n = frame(f, true, 8, "\x0b\xb8", 2);
	check(1024, f, n, "close:3000:");
	n = frame(f, true, 8, "\x13\x87", 2);
	check(1024, f, n, "close:4999:");
}

static void
test_split_everywhere(void **state)
{
	(void)state;
	/* frames of every length form, fragments, control frames, UTF-8
	 * characters cut between frames: the same events however the bytes
	 * arrive */
	static uint8_t f[3 * 70000];
	static char big[66000];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)('A' + i % 23);
	size_t n = frame(f, true, 1, "h\xc3\xa9llo", 6);
	n += frame(f + n, false, 1, "\xf0\x9f", 2);
	n += frame(f + n, true, 9, "?", 1);
	n += frame(f + n, false, 0, "\x98", 1);
	n += frame(f + n, true, 0, "\x80!", 2);
	n += frame(f + n, true, 1, big, 300);
	n += frame(f + n, true, 2, "\x00\x01\x02", 3);
	n += frame(f + n, true, 8, "\x03\xe9gone", 6);
	char want[256];
	snprintf(want, sizeof want,
	         "text:h\xc3\xa9llo | ping:? | text:\xf0\x9f\x98\x80! | text#300/%08x | binary:3 | "
	         "close:1001:gone",
	         fnv(big, 300));
	check_all_cuts(1 << 20, f, n, want);

	/* a 64-bit length frame fed a byte at a time and in two halves */
	n = frame(f, true, 1, big, sizeof big);
	snprintf(want, sizeof want, "text#%zu/%08x", sizeof big, fnv(big, sizeof big));
	char *got = run(1 << 20, f, n, 1);
	assert_string_equal(got, want);
	free(got);
	got = run(1 << 20, f, n, n / 2 + 1);
	assert_string_equal(got, want);
	free(got);
}

static void
test_utf8(void **state)
{
	(void)state;
	uint8_t f[256];
	size_t n;
	/* invalid in one frame */
	n = frame(f, true, 1, "\xff\xfe", 2);
	check(1024, f, n, "error:1007:text message not valid UTF-8");
	n = frame(f, true, 1, "ab\xc3\x28", 4);
	check(1024, f, n, "error:1007:text message not valid UTF-8");
	n = frame(f, true, 1, "\xed\xa0\x80", 3); /* a surrogate */
	check(1024, f, n, "error:1007:text message not valid UTF-8");
	n = frame(f, true, 1, "\xc0\xaf", 2); /* overlong */
	check(1024, f, n, "error:1007:text message not valid UTF-8");

	/* split across frames: a valid start, then a bad end */
	n = frame(f, false, 1, "{\xed", 2);
	n += frame(f + n, true, 0, "\xa0\x80}", 3);
	check_all_cuts(1024, f, n, "error:1007:text message not valid UTF-8");
	n = frame(f, false, 1, "x\xc3", 2);
	n += frame(f + n, true, 0, "\x28", 1);
	check_all_cuts(1024, f, n, "error:1007:text message not valid UTF-8");
	/* a character never finished */
	n = frame(f, false, 1, "x\xe2\x82", 3);
	n += frame(f + n, true, 0, "", 0);
	check_all_cuts(1024, f, n, "error:1007:text message not valid UTF-8");

	/* a start no continuation can make valid fails at its own frame,
	 * before the next one comes: a ping after it is not reported */
	const char *bad_starts[] = {"\xc0",     "\xc1",     "\xf5",     "\xff",        "\xe0\x80",
	                            "\xed\xa0", "\xf0\x80", "\xf4\x90", "\xf0\x90\x20"};
	for (size_t i = 0; i < nitems(bad_starts); i++) {
		n = frame(f, false, 1, bad_starts[i], strlen(bad_starts[i]));
		n += frame(f + n, true, 9, "p", 1);
		check(1024, f, n, "error:1007:text message not valid UTF-8");
	}
	/* and starts that can be made valid wait for the next frame */
	const char *good_starts[][2] = {
	    {"\xc3", "\xa9"},         {"\xe0\xa0", "\x80"},     {"\xed", "\x9f\xbf"},
	    {"\xf0", "\x90\x80\x80"}, {"\xf4\x8f", "\xbf\xbf"}, {"\xe2\x82", "\xac"},
	};
	for (size_t i = 0; i < nitems(good_starts); i++) {
		n = frame(f, false, 1, good_starts[i][0], strlen(good_starts[i][0]));
		n += frame(f + n, true, 9, "p", 1);
		n += frame(f + n, true, 0, good_starts[i][1], strlen(good_starts[i][1]));
		char want[64];
		snprintf(want, sizeof want, "ping:p | text:%s%s", good_starts[i][0],
		         good_starts[i][1]);
		check_all_cuts(1024, f, n, want);
	}
	/* a binary message is not UTF-8 checked */
	n = frame(f, true, 2, "\xff\xfe", 2);
	check(1024, f, n, "binary:2");
	/* a close reason must be UTF-8 too */
	n = frame(f, true, 8, "\x03\xe8\xff", 3);
	check(1024, f, n, "error:1007:close reason not valid UTF-8");
	n = frame(f, true, 8, "\x03\xe8\xc3\xa9", 4);
	check(1024, f, n, "close:1000:\xc3\xa9");
}

static void
test_unmasked(void **state)
{
	(void)state;
	uint8_t f[64];
	size_t n = frame(f, true, 1, "ok", 2);
	n += ws_frame_ex(f + n, 0x81, NULL, LEN_AUTO, "naked", 5);
	n += frame(f + n, true, 1, "never", 5);
	check_all_cuts(1024, f, n, "text:ok | error:1002:client frame not masked");
	/* control frames too */
	n = ws_frame_ex(f, 0x89, NULL, LEN_AUTO, "p", 1);
	check(1024, f, n, "error:1002:client frame not masked");
}

static void
test_reserved(void **state)
{
	(void)state;
	uint8_t f[64];
	size_t n;
	/* RSV1, RSV2, RSV3 without an extension */
	for (int bit = 0x10; bit <= 0x40; bit <<= 1) {
		n = ws_frame_ex(f, (uint8_t)(0x81 | bit), WS_TEST_KEY, LEN_AUTO, "{}", 2);
		check(1024, f, n, "error:1002:reserved bits set without an extension");
	}
	/* reserved opcodes 3-7 and 0xb-0xf */
	for (int op = 3; op <= 15; op++) {
		if (op >= 8 && op <= 10)
			continue;
		n = frame(f, true, op, "x", 1);
		check(1024, f, n, "error:1002:reserved opcode");
	}
	/* a continuation with no message; a new message inside one */
	n = frame(f, true, 0, "x", 1);
	check(1024, f, n, "error:1002:continuation frame without a message");
	n = frame(f, false, 1, "{", 1);
	n += frame(f + n, true, 1, "}", 1);
	check(1024, f, n, "error:1002:new message inside a fragmented one");
	n = frame(f, false, 2, "{", 1);
	n += frame(f + n, true, 1, "}", 1);
	check(1024, f, n, "error:1002:new message inside a fragmented one");
	/* after a whole message, a continuation has nothing to continue */
	n = frame(f, true, 1, "a", 1);
	n += frame(f + n, true, 0, "b", 1);
	check(1024, f, n, "text:a | error:1002:continuation frame without a message");
}

static void
test_too_big(void **state)
{
	(void)state;
	static uint8_t f[4096];
	static char big[2048];
	memset(big, 'y', sizeof big);
	size_t n;
	/* exactly the limit is fine, one more byte is not */
	n = frame(f, true, 1, big, 1024);
	char want[64];
	snprintf(want, sizeof want, "text#1024/%08x", fnv(big, 1024));
	check(1024, f, n, want);
	n = frame(f, true, 1, big, 1025);
	check(1024, f, n, "error:1009:message too big");
	/* refused at its header, before the payload comes */
	struct wsframe r;
	struct wsframe_event ev;
	wsframe_init(&r, 1024);
	assert_int_equal(wsframe_read(&r, f, 8, &ev), 8);
	assert_int_equal(ev.kind, WSF_ERROR);
	assert_int_equal(ev.code, 1009);
	wsframe_free(&r);
	/* each frame under the limit, the message over it; binary too */
	n = frame(f, false, 1, big, 600);
	n += frame(f + n, true, 9, "p", 1);
	n += frame(f + n, true, 0, big, 600);
	check_all_cuts(1024, f, n, "ping:p | error:1009:message too big");
	n = frame(f, false, 2, big, 600);
	n += frame(f + n, true, 0, big, 600);
	check(1024, f, n, "error:1009:message too big");
	/* a length of 2^62, with no payload following */
	n = ws_frame_ex(f, 0x81, WS_TEST_KEY, LEN_64, "", 0);
	f[2] = 0x40;
	check(1024, f, n, "error:1009:message too big");
	/* a length with the top bit set is not allowed at all */
	f[2] = 0x80;
	check(1024, f, n, "error:1002:frame length over 2^63");
	/* lengths not in their shortest form */
	n = ws_frame_ex(f, 0x81, WS_TEST_KEY, LEN_16, "short", 5);
	check(1024, f, n, "error:1002:frame length not in its shortest form");
	n = ws_frame_ex(f, 0x81, WS_TEST_KEY, LEN_64, big, 200);
	check(1024, f, n, "error:1002:frame length not in its shortest form");
	/* a size limit of its own per reader; messages after a big one */
	n = frame(f, true, 1, big, 2000);
	n += frame(f + n, true, 1, "small", 5);
	snprintf(want, sizeof want, "text#2000/%08x | text:small", fnv(big, 2000));
	check(4096, f, n, want);
}

static void
test_bad_control(void **state)
{
	(void)state;
	uint8_t f[512];
	char big[126];
	memset(big, 'p', sizeof big);
	size_t n;
	/* RFC 6455 5.5: not fragmented, at most 125 bytes */
	n = frame(f, true, 9, big, 125);
	char want[160];
	snprintf(want, sizeof want, "ping:%.125s", big);
	check(1024, f, n, want);
	n = frame(f, true, 9, big, 126);
	check(1024, f, n, "error:1002:control frame over 125 bytes");
	n = frame(f, true, 10, big, 126);
	check(1024, f, n, "error:1002:control frame over 125 bytes");
	n = frame(f, false, 9, "x", 1);
	check(1024, f, n, "error:1002:fragmented control frame");
	n = frame(f, false, 8, "\x03\xe8", 2);
	check(1024, f, n, "error:1002:fragmented control frame");
	/* 5.5.1: a close body starts with a 2-byte code */
	n = frame(f, true, 8, "\x03", 1);
	check(1024, f, n, "error:1002:close frame with a 1-byte payload");
	/* 7.4: codes a peer may not send */
	const unsigned bad[] = {0, 999, 1004, 1005, 1006, 1012, 1016, 2999, 5000, 65535};
	for (size_t i = 0; i < nitems(bad); i++) {
		uint8_t body[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
		n = frame(f, true, 8, body, 2);
		check(1024, f, n, "error:1002:invalid close code");
	}
	const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999};
	for (size_t i = 0; i < nitems(good); i++) {
		uint8_t body[2] = {(uint8_t)(good[i] >> 8), (uint8_t)good[i]};
		n = frame(f, true, 8, body, 2);
		snprintf(want, sizeof want, "close:%u:", good[i]);
		check(1024, f, n, want);
	}
}

static void
test_binary(void **state)
{
	(void)state;
	/* binary messages are reported with their size (the Bridge answers
	 * 1003); their bytes are not kept */
	uint8_t f[512];
	size_t n = frame(f, true, 2, "\x01\x02", 2);
	check(1024, f, n, "binary:2");
	n = frame(f, false, 2, "\x00\x01", 2);
	n += frame(f + n, true, 9, "", 0);
	n += frame(f + n, true, 0, "\x02", 1);
	n += frame(f + n, true, 1, "text after", 10);
	check_all_cuts(1024, f, n, "ping: | binary:3 | text:text after");
}

static void
test_buffer_reuse(void **state)
{
	(void)state;
	/* a message over 64 KiB, then small ones: each arrives whole (the big
	 * buffer is given back, a small one kept) */
	static uint8_t f[200000];
	static char big[100000];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)('0' + i % 10);
	struct wsframe r;
	wsframe_init(&r, 1 << 20);
	struct wsframe_event ev;
	size_t n = frame(f, true, 1, big, sizeof big);
	assert_int_equal(wsframe_read(&r, f, n, &ev), n);
	assert_int_equal(ev.kind, WSF_TEXT);
	assert_int_equal(ev.len, sizeof big);
	assert_memory_equal(ev.data, big, sizeof big);
	wsframe_msg_done(&r);
	n = frame(f, true, 1, "one", 3);
	n += frame(f + n, true, 1, "two", 3);
	size_t used = wsframe_read(&r, f, n, &ev);
	assert_int_equal(ev.kind, WSF_TEXT);
	assert_string_equal(ev.data, "one");
	/* without wsframe_msg_done: the next read does it */
	assert_int_equal(wsframe_read(&r, f + used, n - used, &ev), n - used);
	assert_int_equal(ev.kind, WSF_TEXT);
	assert_string_equal(ev.data, "two");
	/* nothing in: nothing out */
	assert_int_equal(wsframe_read(&r, NULL, 0, &ev), 0);
	assert_int_equal(ev.kind, WSF_MORE);
	wsframe_free(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lengths),
	    cmocka_unit_test(test_masking),
	    cmocka_unit_test(test_fragments_and_control),
	    cmocka_unit_test(test_split_everywhere),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_unmasked),
	    cmocka_unit_test(test_reserved),
	    cmocka_unit_test(test_too_big),
	    cmocka_unit_test(test_bad_control),
	    cmocka_unit_test(test_binary),
	    cmocka_unit_test(test_buffer_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
