/* store-floor.c — what SQLite alone can write on this machine, for bench/bus.sh: the
 * ceiling a bus that stores every message before answering `sent` cannot pass, however
 * little else it does.  No protocol, no pipes, no routing: one thread, prepared
 * statements, COUNT messages of SIZE bytes in transactions of BATCH, WAL mode and
 * the synchronous setting of dreamos's store.durability.
 *
 * Usage:
 *   store-floor bare DB COUNT BATCH SIZE SYNC
 *       a new database DB with one table (id INTEGER PRIMARY KEY, body TEXT): one bare row
 *       per message, the least any SQLite-backed message store writes
 *   store-floor dreamos DB COUNT BATCH SIZE SYNC
 *       DB is a copy of a dreamos.db (its schema, indexes and all): its messages and
 *       deliveries are deleted, then each transaction's messages are one block of
 *       message_blocks, packed as src/core/store.c packs them (src/core/packtab.h), and
 *       the consumer's acked-through mark moves once (in-order acks write no row)
 * SYNC is normal or full.  Prints "msgs=N secs=S msgs_per_s=R". */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "packtab.h"

static double
now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void
die(sqlite3 *db, const char *what)
{
	fprintf(stderr, "store-floor: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
	exit(1);
}

static void
exec(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(db, sql);
}

static sqlite3_stmt *
prepare(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		die(db, sql);
	return s;
}

static void
step(sqlite3 *db, sqlite3_stmt *s)
{
	if (sqlite3_step(s) != SQLITE_DONE)
		die(db, "insert");
	sqlite3_reset(s);
}

int
main(int argc, char **argv)
{
	if (argc != 7 || (strcmp(argv[1], "bare") != 0 && strcmp(argv[1], "dreamos") != 0)) {
		fprintf(stderr,
		        "usage: store-floor bare|dreamos DB COUNT BATCH SIZE normal|full\n");
		return 2;
	}
	int dreamos = strcmp(argv[1], "dreamos") == 0;
	const char *path = argv[2];
	long count = atol(argv[3]), batch = atol(argv[4]), size = atol(argv[5]);
	if (count <= 0 || batch <= 0 || size <= 0) {
		fprintf(stderr, "store-floor: COUNT, BATCH and SIZE must be positive\n");
		return 2;
	}
	if (!dreamos)
		unlink(path);
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK)
		die(db, path);
	/* As store.c sets them (the page size: for a new database; the
	 * dreamos mode's is a copy of dreamos's). */
	exec(db, "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL");
	exec(db, strcmp(argv[6], "full") == 0 ? "PRAGMA synchronous = FULL"
	                                      : "PRAGMA synchronous = NORMAL");
	exec(db, "PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY;"
	         "PRAGMA journal_size_limit = 67108864");
	sqlite3_stmt *m, *d = NULL;
	char *blk = NULL;
	size_t blen = 0, bcap = 0;
	if (dreamos) {
		exec(db, "DELETE FROM deliveries; DELETE FROM message_blocks; DELETE FROM "
		         "acks_through; PRAGMA wal_checkpoint(TRUNCATE)");
		m = prepare(db, packtab_messages.insert);
		d = prepare(db, "INSERT INTO acks_through (recipient, msg_id) VALUES (?1, ?2) ON "
		                "CONFLICT (recipient) DO UPDATE SET msg_id = max(msg_id, "
		                "excluded.msg_id)");
	} else {
		exec(db, "CREATE TABLE m (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
		m = prepare(db, "INSERT INTO m (id, body) VALUES (?1, ?2)");
	}
	char *body = malloc((size_t)size);
	memset(body, 'x', (size_t)size);
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	long long ts = (long long)wall.tv_sec * 1000;

	double t0 = now();
	for (long i = 1; i <= count; i++) {
		if (i % batch == 1 || batch == 1)
			exec(db, "BEGIN IMMEDIATE");
		if (dreamos) {
			struct packtab_val v[8] = {
			    {.type = PACKTAB_INT, .i = i},
			    {.type = PACKTAB_INT, .i = ts + i / 1000},
			    {.type = PACKTAB_TEXT, .s = "producer", .len = 8},
			    {.type = PACKTAB_TEXT, .s = "consumer", .len = 8},
			    {.type = PACKTAB_INT, .i = 1},
			    {.type = PACKTAB_TEXT, .s = "NORMAL", .len = 6},
			    {.type = PACKTAB_TEXT, .s = body, .len = (size_t)size},
			    {.type = PACKTAB_NULL},
			};
			if (i % batch == 1 || batch == 1) {
				blen = 0;
				packtab_begin(&blk, &blen, &bcap, 8);
				sqlite3_bind_int64(m, 1, i);
			}
			packtab_add_row(&blk, &blen, &bcap, v, 8);
			if (i % batch == 0 || i == count) {
				sqlite3_bind_int64(m, 2, i);
				sqlite3_bind_blob(m, 3, blk, (int)blen, SQLITE_STATIC);
				step(db, m);
				sqlite3_bind_text(d, 1, "consumer", -1, SQLITE_STATIC);
				sqlite3_bind_int64(d, 2, i);
				step(db, d);
			}
		} else {
			sqlite3_bind_int64(m, 1, i);
			sqlite3_bind_text(m, 2, body, (int)size, SQLITE_STATIC);
			step(db, m);
		}
		if (i % batch == 0 || i == count)
			exec(db, "COMMIT");
	}
	double secs = now() - t0;
	printf("msgs=%ld secs=%.3f msgs_per_s=%.0f\n", count, secs, (double)count / secs);
	sqlite3_finalize(m);
	if (d)
		sqlite3_finalize(d);
	sqlite3_close(db);
	free(body);
	free(blk);
	return 0;
}
