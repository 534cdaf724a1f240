/* fuzz-packtab.c — a libFuzzer target for the packed tables (packtab.c):
 * the block reader and the `messages` virtual table over damaged or
 * hand-made blocks, as a database file that was written over or cut short
 * would hold them.
 *
 * Input: byte 0 picks a split point; the rest is cut there into two
 * blocks (the data of message_blocks rows with first_id 1 and 1000).
 * Checks: packtab_row never reads past a block (ASan), and a row it takes
 * encodes back (packtab_add_row) to a row that decodes to the same values;
 * queries on `messages` (a scan, a lookup, both orders, a range) either
 * succeed or fail with an error, and the scan and the descending scan find
 * the same number of rows. */
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-check.h"
#include "packtab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same(const struct packtab_val *a, const struct packtab_val *b, int n)
{
	for (int k = 0; k < n; k++) {
		if (a[k].type != b[k].type)
			return false;
		if (a[k].type == PACKTAB_INT && a[k].i != b[k].i)
			return false;
		if (a[k].type == PACKTAB_TEXT &&
		    (a[k].len != b[k].len || memcmp(a[k].s, b[k].s, a[k].len) != 0))
			return false;
	}
	return true;
}

/* Every row of a block as packtab_row reads it, re-encoded and read again. */
static void
rows_roundtrip(const uint8_t *p, const uint8_t *end)
{
	if (end - p < 3)
		return;
	int ncols = p[2] < PACKTAB_COLS_MAX ? p[2] : PACKTAB_COLS_MAX;
	for (p += 3; p < end;) {
		struct packtab_val v[PACKTAB_COLS_MAX], w[PACKTAB_COLS_MAX];
		size_t n = packtab_row(p, end, ncols, v);
		if (n == 0)
			return;
		FUZZ_CHECK(n <= (size_t)(end - p));
		char *out = NULL;
		size_t len = 0, cap = 0;
		FUZZ_CHECK(packtab_add_row(&out, &len, &cap, v, ncols) == 0);
		FUZZ_CHECK(
		    packtab_row((const uint8_t *)out, (const uint8_t *)out + len, ncols, w) == len);
		FUZZ_CHECK(same(v, w, ncols));
		free(out);
		p += n;
	}
}

/* Runs sql; returns the integer of its first row, or -1 if it failed. */
static long long
query(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	long long v = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? v : -1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t cut = 1 + (size - 1) * data[0] / 256;
	const uint8_t *a = data + 1, *b = data + cut, *end = data + size;
	rows_roundtrip(a, b);
	rows_roundtrip(b, end);

	sqlite3 *db;
	FUZZ_CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
	FUZZ_CHECK(packtab_register(db) == SQLITE_OK);
	FUZZ_CHECK(sqlite3_exec(db,
	                        "CREATE TABLE message_blocks (first_id INTEGER PRIMARY KEY, "
	                        "last_id INTEGER NOT NULL, data BLOB NOT NULL)",
	                        NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_stmt *s;
	FUZZ_CHECK(sqlite3_prepare_v2(db, packtab_messages.insert, -1, &s, NULL) == SQLITE_OK);
	sqlite3_bind_int64(s, 1, 1);
	sqlite3_bind_int64(s, 2, 999);
	sqlite3_bind_blob(s, 3, a, (int)(b - a), SQLITE_STATIC);
	FUZZ_CHECK(sqlite3_step(s) == SQLITE_DONE);
	sqlite3_reset(s);
	sqlite3_bind_int64(s, 1, 1000);
	sqlite3_bind_int64(s, 2, 2000);
	sqlite3_bind_blob(s, 3, b, (int)(end - b), SQLITE_STATIC);
	FUZZ_CHECK(sqlite3_step(s) == SQLITE_DONE);
	sqlite3_finalize(s);

	long long up = query(db, "SELECT count(*) FROM (SELECT * FROM messages ORDER BY id)");
	long long down =
	    query(db, "SELECT count(*) FROM (SELECT * FROM messages ORDER BY id DESC)");
	FUZZ_CHECK(up == down || up == -1 || down == -1);
	(void)query(db, "SELECT sum(length(body)), max(ts_ms) FROM messages");
	(void)query(db, "SELECT count(*) FROM messages WHERE id = 5");
	(void)query(db, "SELECT count(*) FROM messages WHERE id > 2 AND id <= 1500");
	(void)query(db, "SELECT id FROM messages WHERE id < 1200 ORDER BY id DESC LIMIT 3");
	FUZZ_CHECK(sqlite3_close(db) == SQLITE_OK);
	return 0;
}
