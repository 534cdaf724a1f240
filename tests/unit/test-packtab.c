/* test-packtab.c — packed tables: the block format (every value kind
 * round-trips, a cut or damaged row is refused) and the `messages` virtual
 * table over message_blocks (lookups, ranges, both orders, joins, gaps
 * between blocks, read-only, damaged blocks reported as errors). */
#include <sqlite3.h>

#include "testutil.h"

#include "packtab.h"

/* A block of rows whose ids are ids[0..n): ts_ms id*10, sender "s<id>",
 * target "t", priority id%4, mode NORMAL, body "b<id>", reply_to NULL
 * for even ids and id-1 for odd ones. */
static char *
make_block(const int64_t *ids, int n, size_t *len)
{
	char *out = NULL;
	size_t cap = 0;
	*len = 0;
	assert_int_equal(packtab_begin(&out, len, &cap, 8), 0);
	for (int k = 0; k < n; k++) {
		char sender[32], body[32];
		snprintf(sender, sizeof sender, "s%lld", (long long)ids[k]);
		snprintf(body, sizeof body, "b%lld", (long long)ids[k]);
		struct packtab_val v[8] = {
		    {.type = PACKTAB_INT, .i = ids[k]},
		    {.type = PACKTAB_INT, .i = ids[k] * 10},
		    {.type = PACKTAB_TEXT, .s = sender, .len = strlen(sender)},
		    {.type = PACKTAB_TEXT, .s = "t", .len = 1},
		    {.type = PACKTAB_INT, .i = ids[k] % 4},
		    {.type = PACKTAB_TEXT, .s = "NORMAL", .len = 6},
		    {.type = PACKTAB_TEXT, .s = body, .len = strlen(body)},
		    {.type = ids[k] % 2 ? PACKTAB_INT : PACKTAB_NULL, .i = ids[k] - 1},
		};
		assert_int_equal(packtab_add_row(&out, len, &cap, v, 8), 0);
	}
	return out;
}

static void
insert_block(sqlite3 *db, const int64_t *ids, int n)
{
	size_t len;
	char *blk = make_block(ids, n, &len);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, packtab_messages.insert, -1, &s, NULL), SQLITE_OK);
	sqlite3_bind_int64(s, 1, ids[0]);
	sqlite3_bind_int64(s, 2, ids[n - 1]);
	sqlite3_bind_blob(s, 3, blk, (int)len, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(s), SQLITE_DONE);
	sqlite3_finalize(s);
	free(blk);
}

/* A database with the blocks table and the module: blocks of ids 1-5,
 * 6-10, then 20-30 (nothing in 11-19), and 1000 rows from 100 on. */
static int
setup(void **state)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	assert_int_equal(packtab_register(db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              "CREATE TABLE message_blocks (first_id INTEGER PRIMARY KEY, "
	                              "last_id INTEGER NOT NULL, data BLOB NOT NULL)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	int64_t ids[1000];
	for (int k = 0; k < 11; k++)
		ids[k] = k + 1;
	insert_block(db, ids, 5);
	insert_block(db, ids + 5, 5);
	for (int k = 0; k < 11; k++)
		ids[k] = 20 + k;
	insert_block(db, ids, 11);
	for (int k = 0; k < 1000; k++)
		ids[k] = 100 + k;
	insert_block(db, ids, 1000);
	*state = db;
	return 0;
}

static int
teardown(void **state)
{
	assert_int_equal(sqlite3_close(*state), SQLITE_OK);
	return 0;
}

/* The first column of every row of sql, joined by commas ("ERR: ..." on
 * an error). */
static char *
col(sqlite3 *db, const char *sql)
{
	static char out[8192];
	out[0] = '\0';
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
		snprintf(out, sizeof out, "ERR: %s", sqlite3_errmsg(db));
		return out;
	}
	int rc;
	size_t n = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(s, 0);
		n +=
		    (size_t)snprintf(out + n, sizeof out - n, "%s%s", n ? "," : "", v ? v : "NULL");
		assert_true(n < sizeof out);
	}
	if (rc != SQLITE_DONE)
		snprintf(out, sizeof out, "ERR: %s", sqlite3_errmsg(db));
	sqlite3_finalize(s);
	return out;
}

/* Every kind of value comes back as it went in; each cut of a row, and a
 * row with an unknown type, is refused. */
static void
test_format_roundtrip(void **state)
{
	(void)state;
	char *out = NULL;
	size_t len = 0, cap = 0;
	assert_int_equal(packtab_begin(&out, &len, &cap, 5), 0);
	const char text[] = "caf\xc3\xa9 \"x\"";
	struct packtab_val in[5] = {
	    {.type = PACKTAB_INT, .i = INT64_MIN},
	    {.type = PACKTAB_INT, .i = INT64_MAX},
	    {.type = PACKTAB_TEXT, .s = text, .len = sizeof text - 1},
	    {.type = PACKTAB_TEXT, .s = "", .len = 0},
	    {.type = PACKTAB_NULL},
	};
	assert_int_equal(packtab_add_row(&out, &len, &cap, in, 5), 0);
	in[0].i = -1;
	in[1].i = 0;
	assert_int_equal(packtab_add_row(&out, &len, &cap, in, 5), 0);
	const unsigned char *p = (const unsigned char *)out + 3, *end = (unsigned char *)out + len;
	assert_memory_equal(out, "P\x01\x05", 3);
	struct packtab_val v[5];
	size_t a = packtab_row(p, end, 5, v);
	assert_true(a > 0);
	assert_int_equal(v[0].i, INT64_MIN);
	assert_int_equal(v[1].i, INT64_MAX);
	assert_int_equal(v[2].len, sizeof text - 1);
	assert_memory_equal(v[2].s, text, sizeof text - 1);
	assert_int_equal(v[3].type, PACKTAB_TEXT);
	assert_int_equal(v[3].len, 0);
	assert_int_equal(v[4].type, PACKTAB_NULL);
	size_t b = packtab_row(p + a, end, 5, v);
	assert_int_equal(3 + a + b, len);
	assert_int_equal(v[0].i, -1);
	assert_int_equal(v[1].i, 0);
	for (const unsigned char *cut = p; cut < p + a; cut++)
		assert_int_equal(packtab_row(p, cut, 5, v), 0);
	/* An unknown type byte (the first value's, after the length). */
	out[4] = 7;
	assert_int_equal(packtab_row(p, end, 5, v), 0);
	free(out);
}

static void
test_lookup(void **state)
{
	sqlite3 *db = *state;
	assert_string_equal(col(db, "SELECT count(*) FROM messages"), "1021");
	assert_string_equal(
	    col(db, "SELECT id || ' ' || ts_ms || ' ' || sender || ' ' || target || ' ' "
	            "|| priority || ' ' || mode || ' ' || body || ' ' || "
	            "coalesce(reply_to, 'null') FROM messages WHERE id = 7"),
	    "7 70 s7 t 3 NORMAL b7 6");
	assert_string_equal(col(db, "SELECT reply_to IS NULL FROM messages WHERE id = 8"), "1");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 15"), "");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 0"), "");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 2000"), "");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 1099"), "1099");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE rowid = 25"), "25");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id IN (3, 15, 25) ORDER BY id"),
	                    "3,25");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = '5'"), "5");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 5.0"), "5");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 5.5"), "");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = NULL"), "");
	assert_string_equal(col(db, "SELECT body FROM messages WHERE sender = 's21'"), "b21");
}

static void
test_ranges(void **state)
{
	sqlite3 *db = *state;
	assert_string_equal(
	    col(db, "SELECT id FROM messages WHERE id > 8 AND id <= 21 ORDER BY id"), "9,10,20,21");
	assert_string_equal(
	    col(db, "SELECT id FROM messages WHERE id >= 9 AND id < 21 ORDER BY id DESC"),
	    "20,10,9");
	assert_string_equal(col(db, "SELECT id FROM messages ORDER BY id DESC LIMIT 3"),
	                    "1099,1098,1097");
	assert_string_equal(col(db, "SELECT id FROM messages ORDER BY id LIMIT 3"), "1,2,3");
	assert_string_equal(
	    col(db, "SELECT id FROM messages WHERE id < 12 ORDER BY id DESC LIMIT 2"), "10,9");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id >= 9.5 LIMIT 2"), "10,20");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id < 2.5"), "1,2");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id > 30 AND id < 100"), "");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id > 10 AND id < 5"), "");
	assert_string_equal(col(db, "SELECT count(*) FROM messages WHERE id BETWEEN 150 AND 649"),
	                    "500");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id > 'a'"), "");
	assert_string_equal(col(db, "SELECT count(*) FROM messages WHERE id < 'a'"), "1021");
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id > 9223372036854775807"), "");
	assert_string_equal(col(db, "SELECT max(id) FROM messages"), "1099");
	assert_string_equal(
	    col(db, "SELECT ts_ms FROM messages WHERE id >= 11 ORDER BY id LIMIT 1"), "200");
}

/* A join looks each row up by id; two cursors on the table at once. */
static void
test_joins(void **state)
{
	sqlite3 *db = *state;
	assert_int_equal(sqlite3_exec(db,
	                              "CREATE TABLE d (msg_id INTEGER); INSERT INTO d VALUES (4), "
	                              "(15), (26), (1050), (4)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	assert_string_equal(
	    col(db, "SELECT m.body FROM d JOIN messages m ON m.id = d.msg_id ORDER BY d.rowid"),
	    "b4,b26,b1050,b4");
	assert_string_equal(col(db, "SELECT count(*) FROM d WHERE NOT EXISTS (SELECT 1 FROM "
	                            "messages m WHERE m.id = d.msg_id)"),
	                    "1");
	assert_string_equal(col(db, "SELECT count(*) FROM messages a JOIN messages b ON b.id = "
	                            "a.reply_to"),
	                    "509");
}

static void
test_read_only(void **state)
{
	sqlite3 *db = *state;
	assert_int_not_equal(
	    sqlite3_exec(db, "DELETE FROM messages WHERE id = 1", NULL, NULL, NULL), SQLITE_OK);
	assert_int_not_equal(
	    sqlite3_exec(db, "INSERT INTO messages (id) VALUES (5000)", NULL, NULL, NULL),
	    SQLITE_OK);
	assert_string_equal(col(db, "SELECT count(*) FROM messages"), "1021");
}

/* A damaged block is an error for the query that reaches it, not a crash
 * or a wrong answer; the blocks before it still read. */
static void
test_damaged_block(void **state)
{
	sqlite3 *db = *state;
	assert_int_equal(
	    sqlite3_exec(db,
	                 "INSERT INTO message_blocks VALUES (2000, 2001, x'50010801ff'), "
	                 "(3000, 3000, x'50020801'), (4000, 4000, x'5001080401c03e07')",
	                 NULL, NULL, NULL),
	    SQLITE_OK);
	assert_string_equal(col(db, "SELECT id FROM messages WHERE id = 10"), "10");
	assert_non_null(strstr(col(db, "SELECT id FROM messages WHERE id = 2000"), "ERR: "));
	assert_non_null(strstr(col(db, "SELECT id FROM messages WHERE id = 3000"), "malformed"));
	assert_non_null(strstr(col(db, "SELECT id FROM messages WHERE id = 4000"), "malformed"));
	assert_non_null(strstr(col(db, "SELECT count(*) FROM messages"), "ERR: "));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_roundtrip),
	    cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ranges, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_joins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_block, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
