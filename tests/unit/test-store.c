/* test-store.c — the SQLite store: schema and migrations, refusal of newer
 * or foreign files, group commit on a real loop, fault injection, kv, the
 * statement cache and closing with and without a loop. */
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "testutil.h"

#include "checkpointer.h"
#include "idlease.h"
#include "packtab.h"
#include "store.h"
#include "util.h"

/* A fresh directory and a database path in it. */
struct fixture {
	char *dir;
	char *path;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	f->dir = testutil_tmpdir();
	f->path = path_join(f->dir, "dreamos.db");
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

/* Opens path with no loop; fails the test on error. */
static struct store *
open_store(const char *path, uv_loop_t *loop, enum store_durability d)
{
	struct store_opts opts = {.path = path, .durability = d};
	struct store *st = NULL;
	char *cause = NULL;
	int rc = store_open(&st, loop, &opts, &cause);
	if (rc != 0)
		fail_msg("store_open: %s", cause);
	assert_non_null(st);
	return st;
}

/* Returns the integer sql yields through a second, independent connection
 * (with the packed tables, as any program that loads them). */
static int64_t
peek_int(const char *path, const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(packtab_register(db), SQLITE_OK);
	sqlite3_stmt *stmt;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	int64_t v = -1;
	if (sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return v;
}

/* Returns the integer a query on the store's own connection yields. */
static int64_t
query_int(struct store *st, const char *sql)
{
	sqlite3_stmt *stmt = store_stmt(st, sql);
	assert_non_null(stmt);
	int64_t v = -1;
	if (sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_reset(stmt);
	return v;
}

static void
test_open_creates_schema(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	assert_true(store_schema_latest() >= 1);
	assert_int_equal(store_schema_version(st), store_schema_latest());
	assert_int_equal(query_int(st, "PRAGMA user_version"), store_schema_latest());
	assert_int_equal(query_int(st, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
	                               "AND name IN ('meta', 'kv', 'logs')"),
	                 3);
	assert_int_equal(query_int(st, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
	                               "AND tbl_name = 'logs' AND sql IS NOT NULL"),
	                 2);
	assert_int_equal(query_int(st, "PRAGMA foreign_keys"), 1);
	assert_int_equal(query_int(st, "PRAGMA synchronous"), 1);   /* NORMAL */
	assert_int_equal(query_int(st, "PRAGMA page_size"), 16384); /* a new database's */
	sqlite3_stmt *stmt = store_stmt(st, "PRAGMA journal_mode");
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
	sqlite3_reset(stmt);
	assert_string_equal(store_state(st), "ok");
	assert_false(store_pending(st));
	int64_t wal = -1;
	int64_t size = store_size_bytes(st, &wal);
	assert_true(wal > 0 && size > wal); /* the schema's pages are in the WAL */

	struct stat sb;
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	store_close(st);
}

static void
test_reopen_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	assert_int_equal(store_kv_set(st, "test", "answer", "42"), 0);
	assert_int_equal(store_flush(st, NULL), 0);
	store_close(st);

	st = open_store(f->path, NULL, STORE_NORMAL);
	assert_int_equal(store_schema_version(st), store_schema_latest());
	char *v = store_kv_get(st, "test", "answer");
	assert_non_null(v);
	assert_string_equal(v, "42");
	free(v);
	store_close(st);
}

/* A database at schema 6 (deliveries keyed by recipient first, plus the
 * indexes deliveries_msg and messages_ts) is migrated to 7 without losing a
 * row: deliveries keyed by (msg_id, recipient), those two indexes gone. */
static void
test_migrate_bus_keys(void **state)
{
	struct fixture *f = *state;
	store_close(open_store(f->path, NULL, STORE_NORMAL));
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	const char *v6 =
	    "DROP TABLE acks_through;\n"
	    "DROP TABLE message_blocks;\n"
	    "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, "
	    "sender TEXT NOT NULL, target TEXT NOT NULL, priority INTEGER NOT NULL, mode TEXT NOT "
	    "NULL, body TEXT NOT NULL, reply_to INTEGER);\n"
	    "DROP TABLE deliveries;\n"
	    "CREATE TABLE deliveries (recipient TEXT NOT NULL, msg_id INTEGER NOT "
	    "NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, "
	    "updated_ms INTEGER, PRIMARY KEY (recipient, msg_id)) WITHOUT ROWID;\n"
	    "CREATE INDEX deliveries_msg ON deliveries (msg_id);\n"
	    "CREATE INDEX deliveries_dead ON deliveries (state, msg_id) WHERE state = 2;\n"
	    "CREATE INDEX messages_ts ON messages (ts_ms);\n"
	    "INSERT INTO messages (id, ts_ms, sender, target, priority, mode, body) "
	    "VALUES (1, 1000, 'a', 'b', 1, 'NORMAL', '\"x\"'), (2, 2000, 'a', '*', 1, "
	    "'NORMAL', '\"y\"');\n"
	    "INSERT INTO deliveries VALUES ('b', 1, 1, 1, 1500), ('b', 2, 0, 0, 2000), "
	    "('c', 2, 2, 5, 2600);\n"
	    "PRAGMA user_version = 6;\n";
	assert_int_equal(sqlite3_exec(db, v6, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	assert_int_equal(store_schema_version(st), store_schema_latest());
	assert_int_equal(query_int(st, "SELECT count(*) FROM messages"), 2);
	assert_int_equal(query_int(st, "SELECT count(*) FROM deliveries WHERE (recipient, msg_id, "
	                               "state, attempt, updated_ms) IN (VALUES ('b', 1, 1, 1, "
	                               "1500), ('b', 2, 0, 0, 2000), ('c', 2, 2, 5, 2600))"),
	                 3);
	assert_int_equal(query_int(st, "SELECT count(*) FROM deliveries"), 3);
	/* Schema 10: no marks yet, so no direct message without a row is
	 * taken for acked. */
	assert_int_equal(query_int(st, "SELECT count(*) FROM acks_through"), 0);
	assert_int_equal(query_int(st, "SELECT pk FROM pragma_table_info('deliveries') WHERE "
	                               "name = 'msg_id'"),
	                 1);
	assert_int_equal(query_int(st, "SELECT pk FROM pragma_table_info('deliveries') WHERE "
	                               "name = 'recipient'"),
	                 2);
	assert_int_equal(query_int(st, "SELECT count(*) FROM sqlite_master WHERE name IN "
	                               "('deliveries_msg', 'messages_ts', 'deliveries_v7')"),
	                 0);
	assert_int_equal(query_int(st, "SELECT count(*) FROM deliveries INDEXED BY deliveries_dead "
	                               "WHERE state = 2"),
	                 1);
	store_close(st);
	/* The primary key still refuses a second row for one recipient. */
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "INSERT INTO deliveries VALUES ('b', 1, 0, 0, 0)", NULL, NULL, NULL),
	    SQLITE_CONSTRAINT);
	sqlite3_close(db);
}

/* Schema 8: messages lose AUTOINCREMENT; the sequence's value, which may be
 * above every stored id (retention deleted the newest), goes to the id
 * reservation, unless that is higher already. */
static void
test_migrate_message_ids(void **state)
{
	struct fixture *f = *state;
	for (int round = 0; round < 2; round++) {
		unlink(f->path);
		store_close(open_store(f->path, NULL, STORE_NORMAL));
		sqlite3 *db;
		assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
		char *v7 = xasprintf(
		    "DROP TABLE acks_through;\n"
		    "DROP TABLE message_blocks;\n"
		    "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER "
		    "NOT "
		    "NULL, sender TEXT NOT NULL, target TEXT NOT NULL, priority INTEGER NOT NULL, "
		    "mode TEXT NOT NULL, body TEXT NOT NULL, reply_to INTEGER);\n"
		    "INSERT INTO messages (id, ts_ms, sender, target, priority, mode, body, "
		    "reply_to) "
		    "VALUES (1, 1000, 'a', 'b', 1, 'NORMAL', '\"x\"', NULL), (2, 2000, 'a', 'b', "
		    "3, "
		    "'CAPTAIN', '\"y\"', 1), (5000, 3000, 'a', 'b', 1, 'NORMAL', '\"z\"', NULL);\n"
		    "DELETE FROM messages WHERE id = 5000;\n"
		    "%s"
		    "PRAGMA user_version = 7;\n",
		    round == 0 ? ""
		               : "INSERT INTO kv VALUES ('dreamos', 'message_ids', '9000', 0);\n");
		assert_int_equal(sqlite3_exec(db, v7, NULL, NULL, NULL), SQLITE_OK);
		free(v7);
		sqlite3_close(db);

		struct store *st = open_store(f->path, NULL, STORE_NORMAL);
		assert_int_equal(store_schema_version(st), store_schema_latest());
		assert_int_equal(query_int(st, "SELECT count(*) FROM messages WHERE (id, ts_ms, "
		                               "sender, target, priority, mode, body, reply_to) IS "
		                               "(2, 2000, 'a', 'b', 3, 'CAPTAIN', '\"y\"', 1)"),
		                 1);
		assert_int_equal(query_int(st, "SELECT count(*) FROM messages"), 2);
		assert_int_equal(query_int(st, "SELECT count(*) FROM sqlite_master WHERE name = "
		                               "'messages' AND sql LIKE '%AUTOINCREMENT%'"),
		                 0);
		assert_int_equal(query_int(st, "SELECT count(*) FROM sqlite_sequence WHERE name IN "
		                               "('messages', 'messages_v8')"),
		                 0);
		char *v = store_kv_get(st, "dreamos", "message_ids");
		assert_non_null(v);
		assert_string_equal(v, round == 0 ? "5000" : "9000");
		free(v);
		/* The next id given is above it. */
		struct idlease l;
		idlease_open(&l, st, "message_ids", 2);
		assert_int_equal(idlease_take(&l), round == 0 ? 5001 : 9001);
		idlease_close(&l);
		store_close(st);
	}
}

static void
test_newer_schema_refused(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	char sql[64];
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", store_schema_latest() + 7);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	struct store_opts opts = {.path = f->path};
	struct store *st = (struct store *)1;
	char *cause = NULL;
	assert_int_equal(store_open(&st, NULL, &opts, &cause), -1);
	assert_null(st);
	char *want = xasprintf("%s: database schema version %d is newer than this dreamos "
	                       "supports (%d); upgrade dreamos",
	                       f->path, store_schema_latest() + 7, store_schema_latest());
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	/* The file is left alone. */
	assert_int_equal(peek_int(f->path, "PRAGMA user_version"), store_schema_latest() + 7);
}

static void
test_not_a_database_refused(void **state)
{
	struct fixture *f = *state;
	char text[2048];
	memset(text, 'x', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	memcpy(text, "agents:\n  - name: a\n", 20);
	free(testutil_write(f->dir, "dreamos.db", text));

	struct store_opts opts = {.path = f->path};
	struct store *st = NULL;
	char *cause = NULL;
	assert_int_equal(store_open(&st, NULL, &opts, &cause), -1);
	assert_null(st);
	char *want = xasprintf("%s: not a SQLite database", f->path);
	assert_string_equal(cause, want);
	free(want);
	free(cause);

	/* A directory that does not exist. */
	opts.path = "/nonexistent-dreamos-dir/x.db";
	assert_int_equal(store_open(&st, NULL, &opts, &cause), -1);
	assert_non_null(strstr(cause, "/nonexistent-dreamos-dir/x.db: cannot open database"));
	free(cause);
}

struct commit_probe {
	const char *path;
	int calls;
	int last_status;
	int64_t rows_seen; /* through a second connection, inside the callback */
};

static void
probe_cb(void *arg, int status)
{
	struct commit_probe *p = arg;
	p->calls++;
	p->last_status = status;
	if (p->path != NULL)
		p->rows_seen = peek_int(p->path, "SELECT count(*) FROM kv");
}

/* Writes several rows and registers callbacks from a timer callback. */
struct burst {
	struct store *st;
	struct commit_probe *probe;
	int base;
};

static void
burst_timer_cb(uv_timer_t *t)
{
	struct burst *b = t->data;
	for (int i = 0; i < 5; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%d", b->base + i);
		assert_int_equal(store_kv_set(b->st, "burst", key, "v"), 0);
		if (i == 2)
			store_after_commit(b->st, probe_cb, b->probe);
	}
	assert_true(store_pending(b->st));
	store_after_commit(b->st, probe_cb, b->probe);
	uv_close((uv_handle_t *)t, NULL);
}

/* Writes from an I/O callback (an async handle runs in the poll phase). */
static void
burst_async_cb(uv_async_t *a)
{
	struct burst *b = a->data;
	assert_int_equal(store_kv_set(b->st, "io", "k", "v"), 0);
	store_after_commit(b->st, probe_cb, b->probe);
	uv_close((uv_handle_t *)a, NULL);
}

static void
test_group_commit_loop(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct store *st = open_store(f->path, &loop, STORE_NORMAL);

	/* Writes made before the loop runs. */
	struct commit_probe p = {.path = f->path};
	for (int i = 0; i < 4; i++) {
		char key[16];
		snprintf(key, sizeof key, "pre%d", i);
		assert_int_equal(store_kv_set(st, "pre", key, "v"), 0);
	}
	store_after_commit(st, probe_cb, &p);
	assert_true(store_pending(st));
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv"), 0);
	assert_int_equal(p.calls, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, 0);
	assert_int_equal(p.rows_seen, 4);
	assert_false(store_pending(st));

	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 1);
	assert_int_equal(stats.writes, 4);
	assert_int_equal(stats.commit_failures, 0);

	/* A burst inside a timer callback: one commit in the same turn. */
	struct commit_probe q = {.path = f->path};
	struct burst b = {st, &q, 0};
	uv_timer_t t;
	uv_timer_init(&loop, &t);
	t.data = &b;
	uv_timer_start(&t, burst_timer_cb, 5, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(q.calls, 2);
	assert_int_equal(q.last_status, 0);
	assert_int_equal(q.rows_seen, 9);
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 2);
	assert_true(stats.max_commit_ms >= stats.last_commit_ms);

	/* Written in the poll phase: committed in that same loop turn. */
	struct commit_probe io = {.path = f->path};
	struct burst ib = {st, &io, 0};
	uv_async_t as;
	uv_async_init(&loop, &as, burst_async_cb);
	as.data = &ib;
	uv_async_send(&as);
	uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(io.calls, 1);
	assert_int_equal(io.last_status, 0);
	assert_int_equal(io.rows_seen, 10);
	uv_run(&loop, UV_RUN_DEFAULT); /* the async handle's close */
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 3);

	/* A callback with nothing written still runs at the commit point. */
	struct commit_probe r = {0};
	store_after_commit(st, probe_cb, &r);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.last_status, 0);
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 3);

	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_commit_interval(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct store_opts opts = {.path = f->path, .commit_interval_ms = 30};
	struct store *st;
	char *cause = NULL;
	assert_int_equal(store_open(&st, &loop, &opts, &cause), 0);
	struct commit_probe p = {.path = f->path};
	uint64_t t0 = uv_hrtime();
	store_kv_set(st, "a", "1", "x");
	store_kv_set(st, "a", "2", "x");
	store_after_commit(st, probe_cb, &p);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_true(uv_hrtime() - t0 >= 25 * 1000000ull);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, 0);
	assert_int_equal(p.rows_seen, 2);
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 1);
	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Adaptive commit: a quiet store commits in the turn of the write; right
 * after a commit (under load) a write waits for the 1 ms timer, and the
 * writes of the turns meanwhile share its commit. */
static void
test_adaptive_commit(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	/* "Under load" is any commit within 10 s: the timing of a slow or
	 * loaded machine cannot change what is tested. */
	struct store_opts opts = {.path = f->path, .adaptive = true, .busy_us = 10000000};
	struct store *st;
	char *cause = NULL;
	assert_int_equal(store_open(&st, &loop, &opts, &cause), 0);

	/* Quiet: committed in the same turn. */
	struct commit_probe a = {.path = f->path};
	struct burst ba = {st, &a, 0};
	uv_async_t as;
	uv_async_init(&loop, &as, burst_async_cb);
	as.data = &ba;
	uv_async_send(&as);
	uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(a.calls, 1);

	/* Busy: the next write, right after that commit, waits for the timer;
	 * a second one meanwhile joins it. */
	struct commit_probe b = {.path = f->path};
	assert_int_equal(store_kv_set(st, "busy", "1", "v"), 0);
	store_after_commit(st, probe_cb, &b);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(b.calls, 0);
	assert_true(store_pending(st));
	assert_int_equal(store_kv_set(st, "busy", "2", "v"), 0);
	store_after_commit(st, probe_cb, &b);
	uint64_t t0 = uv_hrtime();
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(b.calls, 2);
	assert_int_equal(b.last_status, 0);
	assert_int_equal(b.rows_seen, 3);
	assert_true(uv_hrtime() - t0 < 2000 * 1000000ull); /* 1 ms; a slow machine: less than 2 s */
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 2);
	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_flush_without_loop(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	struct commit_probe p = {.path = f->path};
	assert_int_equal(store_kv_set(st, "n", "k", "v"), 0);
	char *cause = NULL;
	assert_int_equal(store_exec(st,
	                            "INSERT INTO meta VALUES ('a', 'b');"
	                            "INSERT INTO meta VALUES ('c', 'd')",
	                            &cause),
	                 0);
	store_after_commit(st, probe_cb, &p);
	assert_true(store_pending(st));
	assert_int_equal(p.calls, 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM meta"), 0);
	assert_int_equal(store_flush(st, &cause), 0);
	assert_null(cause);
	assert_false(store_pending(st));
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, 0);
	assert_int_equal(p.rows_seen, 1);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM meta"), 2);

	/* A failing statement: -1 and a cause naming the database. */
	assert_int_equal(store_exec(st, "INSERT INTO nosuchtable VALUES (1)", &cause), -1);
	assert_non_null(strstr(cause, "no such table"));
	assert_non_null(strstr(cause, f->path));
	free(cause);
	store_close(st);
}

struct errlog {
	int n;
	char last[512];
	char all[2048]; /* every message, one per line, while it fits */
};

static void
error_cb(void *arg, const char *msg)
{
	struct errlog *e = arg;
	e->n++;
	snprintf(e->last, sizeof e->last, "%s", msg);
	size_t n = strlen(e->all);
	snprintf(e->all + n, sizeof e->all - n, "%s\n", msg);
	assert_null(strchr(msg, '\n'));
}

static int fault_code;
static int fault_calls;

static int
fault_hook(void *arg, const char *op)
{
	(void)arg;
	if (strcmp(op, "commit") != 0)
		return 0; /* a write: these tests fail commits */
	fault_calls++;
	return fault_code;
}

/* Fails, with SQLITE_FULL, the writes whose SQL starts with arg. */
static int
write_fault_hook(void *arg, const char *op)
{
	const char *prefix = arg;
	return strncmp(op, prefix, strlen(prefix)) == 0 ? SQLITE_FULL : 0;
}

/* A write that fails for the database's sake (disk full, I/O) takes its
 * whole transaction with it, though SQLite undid only the statement: a
 * message must not be committed without its delivery row.  A statement's
 * own error (bad SQL, a constraint) does not. */
static void
test_write_failure(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct store *st = open_store(f->path, &loop, STORE_NORMAL);
	struct errlog e = {0};
	store_set_error_cb(st, error_cb, &e);

	struct commit_probe p = {0}, q = {0};
	assert_int_equal(store_kv_set(st, "w", "first", "v"), 0);
	store_after_commit(st, probe_cb, &p);
	uint64_t seq = store_txn_seq(st);
	store_set_fault_hook(st, write_fault_hook, "INSERT INTO meta");
	sqlite3_stmt *s = store_stmt(st, "INSERT INTO meta VALUES ('x', 'y')");
	assert_int_equal(store_step_write(st, s), SQLITE_FULL);
	assert_false(store_pending(st)); /* rolled back at once */
	assert_non_null(strstr(e.last, "disk full"));
	store_set_fault_hook(st, NULL, NULL);
	/* A write after it, in the same loop turn, is a transaction of its own. */
	assert_int_equal(store_kv_set(st, "w", "second", "v"), 0);
	assert_true(store_txn_seq(st) != seq);
	store_after_commit(st, probe_cb, &q);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, -1);
	assert_int_equal(q.calls, 1);
	assert_int_equal(q.last_status, 0);
	assert_null(store_kv_get(st, "w", "first"));
	char *v = store_kv_get(st, "w", "second");
	assert_non_null(v);
	free(v);
	assert_string_equal(store_state(st), "ok");
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commit_failures, 1);

	/* A statement's own error undoes that statement only. */
	assert_int_equal(store_kv_set(st, "w", "third", "v"), 0);
	char *cause = NULL;
	assert_int_equal(store_exec(st, "INSERT INTO nosuchtable VALUES (1)", &cause), -1);
	free(cause);
	assert_true(store_pending(st));
	assert_int_equal(store_flush(st, NULL), 0);
	v = store_kv_get(st, "w", "third");
	assert_non_null(v);
	free(v);

	/* The real thing: the database may not grow.  SQLite fails the
	 * insert with SQLITE_FULL and undoes only it; the store undoes the
	 * transaction. */
	assert_int_equal(store_kv_set(st, "w", "fourth", "v"), 0);
	char pragma[64];
	snprintf(pragma, sizeof pragma, "PRAGMA max_page_count = %lld",
	         (long long)query_int(st, "PRAGMA page_count"));
	assert_int_equal(sqlite3_exec(store_db(st), pragma, NULL, NULL, NULL), SQLITE_OK);
	s = store_stmt(st, "INSERT INTO meta VALUES ('big', zeroblob(200000))");
	assert_int_equal(store_step_write(st, s), SQLITE_FULL);
	assert_false(store_pending(st));
	assert_int_equal(
	    sqlite3_exec(store_db(st), "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL),
	    SQLITE_OK);
	assert_int_equal(store_flush(st, NULL), 0);
	assert_null(store_kv_get(st, "w", "fourth"));
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM meta WHERE key = 'big'"), 0);

	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_fault_disk_full(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct store *st = open_store(f->path, &loop, STORE_NORMAL);
	struct errlog e = {0};
	store_set_error_cb(st, error_cb, &e);
	fault_code = SQLITE_FULL;
	fault_calls = 0;
	store_set_fault_hook(st, fault_hook, NULL);

	struct commit_probe p = {0};
	assert_int_equal(store_kv_set(st, "f", "lost", "v"), 0);
	store_after_commit(st, probe_cb, &p);
	store_after_commit(st, probe_cb, &p);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(fault_calls, 1);
	assert_int_equal(p.calls, 2);
	assert_int_equal(p.last_status, -1);
	assert_string_equal(store_state(st), "disk full");
	assert_int_equal(e.n, 1);
	assert_non_null(strstr(e.last, "disk full"));
	assert_false(store_pending(st));
	assert_null(store_kv_get(st, "f", "lost"));
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv"), 0);
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 0);
	assert_int_equal(stats.commit_failures, 1);

	/* I/O errors are named too. */
	fault_code = SQLITE_IOERR_WRITE;
	char *cause = NULL;
	store_kv_set(st, "f", "lost2", "v");
	assert_int_equal(store_flush(st, &cause), -1);
	assert_non_null(cause);
	assert_non_null(strstr(cause, "I/O error"));
	free(cause);
	assert_string_equal(store_state(st), "I/O error");

	/* The disk has room again: the store recovers. */
	store_set_fault_hook(st, NULL, NULL);
	struct commit_probe q = {.path = f->path};
	assert_int_equal(store_kv_set(st, "f", "kept", "v"), 0);
	store_after_commit(st, probe_cb, &q);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(q.calls, 1);
	assert_int_equal(q.last_status, 0);
	assert_int_equal(q.rows_seen, 1);
	assert_string_equal(store_state(st), "ok");
	char *v = store_kv_get(st, "f", "kept");
	assert_non_null(v);
	free(v);
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 1);
	assert_int_equal(stats.commit_failures, 2);

	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* When the group transaction cannot begin (another process holds the
 * write lock), a write is refused, not run on its own: it would commit
 * apart from the rest of its turn. */
static void
test_begin_busy(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	sqlite3_busy_timeout(store_db(st), 0);
	sqlite3 *other;
	assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
	assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

	struct store_stats before, after;
	store_stats(st, &before);
	sqlite3_stmt *s = store_stmt(st, "INSERT INTO meta VALUES ('alone', 'x')");
	assert_int_equal(store_step_write(st, s), SQLITE_BUSY);
	store_stats(st, &after);
	assert_int_equal(after.writes, before.writes); /* not run */
	assert_false(store_pending(st));
	char *cause = NULL;
	assert_int_equal(store_exec(st, "INSERT INTO meta VALUES ('alone2', 'x')", &cause), -1);
	assert_non_null(strstr(cause, "cannot begin a transaction"));
	free(cause);

	/* The lock is free again: writes work. */
	assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	assert_int_equal(store_kv_set(st, "b", "k", "v"), 0);
	assert_int_equal(store_flush(st, NULL), 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM meta WHERE key LIKE 'alone%'"), 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE ns = 'b'"), 1);
	store_close(st);
}

static void
test_strict_durability(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_STRICT);
	assert_int_equal(query_int(st, "PRAGMA synchronous"), 2); /* FULL */
	store_close(st);
}

static void
test_kv(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	assert_null(store_kv_get(st, "ext", "k"));
	assert_int_equal(store_kv_set(st, "ext", "k", "one"), 0);
	assert_int_equal(store_kv_set(st, "other", "k", "two"), 0);
	char *v = store_kv_get(st, "ext", "k");
	assert_string_equal(v, "one");
	free(v);
	assert_int_equal(store_kv_set(st, "ext", "k", "three"), 0);
	v = store_kv_get(st, "ext", "k");
	assert_string_equal(v, "three");
	free(v);
	assert_int_equal(query_int(st, "SELECT count(*) FROM kv"), 2);
	assert_true(query_int(st, "SELECT updated_ms FROM kv WHERE ns = 'ext'") > 0);
	assert_int_equal(store_kv_del(st, "ext", "k"), 0);
	assert_null(store_kv_get(st, "ext", "k"));
	v = store_kv_get(st, "other", "k");
	assert_string_equal(v, "two");
	free(v);
	assert_int_equal(store_kv_del(st, "ext", "absent"), 0);

	/* One transaction, one store_txn_seq (the bus's batches rely on it). */
	assert_int_equal(store_flush(st, NULL), 0);
	uint64_t seq = store_txn_seq(st);
	assert_int_equal(store_kv_set(st, "t", "a", "1"), 0);
	assert_int_equal(store_txn_seq(st), seq + 1);
	assert_int_equal(store_kv_set(st, "t", "b", "2"), 0);
	assert_int_equal(store_txn_seq(st), seq + 1);
	assert_int_equal(store_flush(st, NULL), 0);
	assert_int_equal(store_kv_set(st, "t", "c", "3"), 0);
	assert_int_equal(store_txn_seq(st), seq + 2);
	store_close(st);
}

/* Ids reserved ahead (idlease.c): no gap across a clean stop, a start
 * above the reservation after a crash, a new block written once half is
 * used, and none handed out while the reservation cannot be committed. */
static void
test_idlease(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	struct idlease l;
	idlease_open(&l, st, "ids", 0);
	assert_int_equal(peek_int(f->path, "SELECT value FROM kv WHERE key = 'ids'"),
	                 IDLEASE_BLOCK); /* committed before any id is used */
	assert_int_equal(idlease_peek(&l), 1);
	assert_int_equal(idlease_take(&l), 1);
	assert_int_equal(idlease_take(&l), 2);
	idlease_close(&l); /* a clean stop */
	assert_int_equal(store_flush(st, NULL), 0);
	idlease_open(&l, st, "ids", 2);
	assert_int_equal(idlease_take(&l), 3);

	/* A crash (no close): the next run starts above the reservation,
	 * whatever the highest id stored. */
	idlease_open(&l, st, "ids", 3);
	assert_int_equal(idlease_take(&l), 3 + IDLEASE_BLOCK);

	/* Half a block used: the next block goes with the next commit. */
	int64_t id = 0;
	for (int i = 0; i < IDLEASE_BLOCK / 2; i++)
		id = idlease_take(&l);
	assert_int_equal(id, 3 + IDLEASE_BLOCK + IDLEASE_BLOCK / 2);
	assert_true(store_pending(st));
	assert_int_equal(store_flush(st, NULL), 0);
	/* (written by the take that left fewer than half: the one before) */
	int64_t last = id - 1 + IDLEASE_BLOCK;
	assert_int_equal(peek_int(f->path, "SELECT value FROM kv WHERE key = 'ids'"), last);

	/* The disk is full: the block after that cannot be committed, so once
	 * the committed one is used up no id is handed out; with room again,
	 * the next take writes the reservation and the one after gets an id. */
	fault_code = SQLITE_FULL;
	store_set_fault_hook(st, fault_hook, NULL);
	l.next = last - 10; /* skip ahead (a million takes is slow under valgrind) */
	int64_t got = 0;
	for (int i = 0; i < 10; i++)
		got = idlease_take(&l);
	assert_int_equal(got, last - 1);
	assert_int_equal(store_flush(st, NULL), -1);
	assert_int_equal(idlease_take(&l), last);
	assert_int_equal(idlease_take(&l), 0);
	assert_int_equal(idlease_peek(&l), 0);
	store_flush(st, NULL);
	store_set_fault_hook(st, NULL, NULL);
	assert_int_equal(idlease_take(&l), 0); /* writes the reservation */
	assert_int_equal(store_flush(st, NULL), 0);
	assert_int_equal(idlease_take(&l), last + 1);
	store_close(st);
}

static void
test_stmt_cache(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	struct errlog e = {0};
	store_set_error_cb(st, error_cb, &e);

	const char *sql = "SELECT ?1";
	sqlite3_stmt *a = store_stmt(st, sql);
	assert_non_null(a);
	char copy[32];
	snprintf(copy, sizeof copy, "%s", sql); /* keyed by text, not pointer */
	assert_ptr_equal(store_stmt(st, copy), a);
	assert_ptr_not_equal(store_stmt(st, "SELECT ?1 + 1"), a);

	/* Returned reset, with bindings cleared. */
	sqlite3_bind_int(a, 1, 99);
	assert_int_equal(sqlite3_step(a), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(a, 0), 99);
	a = store_stmt(st, sql);
	assert_int_equal(sqlite3_step(a), SQLITE_ROW);
	assert_int_equal(sqlite3_column_type(a, 0), SQLITE_NULL);
	sqlite3_reset(a);

	/* Many statements: the cache grows and still finds each one. */
	sqlite3_stmt *many[100];
	for (int i = 0; i < 100; i++) {
		char q[32];
		snprintf(q, sizeof q, "SELECT %d", i);
		many[i] = store_stmt(st, q);
		assert_non_null(many[i]);
	}
	for (int i = 0; i < 100; i++) {
		char q[32];
		snprintf(q, sizeof q, "SELECT %d", i);
		assert_ptr_equal(store_stmt(st, q), many[i]);
	}

	/* A compile error: NULL, reported once through the error callback. */
	assert_null(store_stmt(st, "SELEKT nonsense"));
	assert_int_equal(e.n, 1);
	assert_non_null(strstr(e.last, "SELEKT nonsense"));
	store_close(st);
}

/* Closes the store from inside its own after-commit callback. */
static void
close_from_cb(void *arg, int status)
{
	assert_int_equal(status, 0);
	store_close(arg);
}

static void
test_close_with_loop(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);

	/* Closing commits what is pending and runs the callbacks. */
	struct store *st = open_store(f->path, &loop, STORE_NORMAL);
	struct commit_probe p = {.path = f->path};
	store_kv_set(st, "c", "1", "x");
	store_after_commit(st, probe_cb, &p);
	store_close(st);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, 0);
	assert_int_equal(p.rows_seen, 1);
	uv_run(&loop, UV_RUN_DEFAULT);

	/* Closing from an after-commit callback. */
	st = open_store(f->path, &loop, STORE_NORMAL);
	store_kv_set(st, "c", "2", "x");
	store_after_commit(st, close_from_cb, st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv"), 2);

	/* Opened and closed without ever writing. */
	st = open_store(f->path, &loop, STORE_NORMAL);
	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_close_without_loop(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	struct commit_probe p = {.path = f->path};
	store_kv_set(st, "c", "1", "x");
	store_after_commit(st, probe_cb, &p);
	store_close(st);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv"), 1);
	store_close(NULL);

	/* In memory. */
	struct store_opts opts = {.path = ":memory:"};
	char *cause = NULL;
	assert_int_equal(store_open(&st, NULL, &opts, &cause), 0);
	assert_int_equal(store_schema_version(st), store_schema_latest());
	store_kv_set(st, "m", "k", "v");
	char *v = store_kv_get(st, "m", "k");
	assert_string_equal(v, "v");
	free(v);
	assert_true(store_size_bytes(st, NULL) > 0);
	store_close(st);
}

/* ---- the store thread (opts.threaded) ------------------------------------ */

/* A loop, and a store with a thread on it whose errors go to e. */
static struct store *
open_threaded(const char *path, uv_loop_t *loop, struct errlog *e)
{
	assert_int_equal(uv_loop_init(loop), 0);
	struct store_opts opts = {.path = path, .durability = STORE_NORMAL, .threaded = true};
	struct store *st = NULL;
	char *cause = NULL;
	if (store_open(&st, loop, &opts, &cause) != 0)
		fail_msg("store_open: %s", cause);
	store_set_error_cb(st, error_cb, e);
	return st;
}

static void
close_threaded(struct store *st, uv_loop_t *loop)
{
	store_close(st);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

static const char KV_INSERT[] =
    "INSERT INTO kv (ns, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)";

/* Callbacks in the order they ran. */
struct order {
	int seen[8];
	int n;
	int status[8];
};
struct order_arg {
	struct order *o;
	int id;
};

static void
order_cb(void *arg, int status)
{
	struct order_arg *a = arg;
	a->o->status[a->o->n] = status;
	a->o->seen[a->o->n++] = a->id;
}

/* Callbacks 1 and 2 ran, in that order, after commits that worked. */
static void
assert_both_committed(const struct order *o)
{
	assert_int_equal(o->n, 2);
	assert_int_equal(o->seen[0], 1);
	assert_int_equal(o->seen[1], 2);
	assert_int_equal(o->status[0], 0);
	assert_int_equal(o->status[1], 0);
}

/* Queued writes run on the thread and commit there; the callbacks run on
 * the loop after the commit, in order; whatever the loop reads or writes
 * meanwhile sees every write queued before it. */
/* Queued INSERTs of one literal run STORE_MULTI_ROWS at a time as one
 * statement: every row arrives with its own values (placeholders out of
 * order, text, NULL, an interleaved other statement), in order, and a row
 * that fails inside such a run takes the whole transaction, as alone. */
static const char MSG_INSERT[] = "INSERT INTO msgs (id, ts_ms, sender, target, priority, "
                                 "mode, body, reply_to) VALUES (?7, ?1, ?2, ?3, ?4, ?5, ?6, ?8)";

static void
test_thread_multi_row(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	struct errlog e = {0};
	store_close(open_store(f->path, NULL, STORE_NORMAL));
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              "CREATE TABLE msgs (id INTEGER PRIMARY KEY, ts_ms INTEGER, "
	                              "sender TEXT, target TEXT, priority INTEGER, mode TEXT, "
	                              "body TEXT, reply_to INTEGER)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	struct store *st = open_threaded(f->path, &loop, &e);
	for (int i = 1; i <= 45; i++) {
		char body[32];
		snprintf(body, sizeof body, "\"b%d\"", i);
		if (i == 20) /* breaks a run: 16 + 3 + this + 16 + 9 */
			assert_int_equal(
			    store_queue(st, KV_INSERT, "ttti", "q", "mid", "x", (int64_t)i), 0);
		assert_int_equal(store_queue(st, MSG_INSERT, i % 3 ? "ittitTii" : "ittitTin",
		                             (int64_t)(1000 + i), "s", i % 2 ? "t1" : "t2",
		                             (int64_t)(i % 4), "NORMAL", body, strlen(body),
		                             (int64_t)i, (int64_t)(i - 1)),
		                 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM msgs"), 45);
	/* Each row as queued: ts 1000 + id, target by parity, priority id % 4,
	 * body "b<id>", reply_to id - 1 or NULL every third. */
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM msgs WHERE ts_ms = 1000 + id "
	                                   "AND target = CASE id % 2 WHEN 1 THEN 't1' ELSE 't2' "
	                                   "END AND priority = id % 4 AND body = '\"b' || id || "
	                                   "'\"' AND sender = 's' AND mode = 'NORMAL' AND reply_to "
	                                   "IS CASE WHEN id % 3 = 0 THEN NULL ELSE id - 1 END"),
	                 45);
	/* In queue order: the kv row went in between messages 19 and 20. */
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE key = 'mid'"), 1);

	/* A duplicate id in the middle of a full run: all 16 rolled back. */
	for (int i = 0; i < 16; i++) {
		int64_t id = i == 7 ? 3 : 100 + i;
		assert_int_equal(store_queue(st, MSG_INSERT, "ittitTin", (int64_t)1, "s", "t",
		                             (int64_t)1, "NORMAL", "1", (size_t)1, id),
		                 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM msgs WHERE id >= 100"), 0);
	assert_true(e.n > 0);
	assert_non_null(strstr(e.last, "rolled back: constraint failed"));
	close_threaded(st, &loop);
}

static void
test_thread_commits(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	struct errlog e = {0};
	struct store *st = open_threaded(f->path, &loop, &e);

	uint64_t seq = store_txn_seq(st);
	struct commit_probe p = {.path = f->path};
	for (int i = 0; i < 100; i++) {
		char key[16];
		snprintf(key, sizeof key, "q%d", i);
		assert_int_equal(store_queue(st, KV_INSERT, "ttti", "q", key, "v", (int64_t)i), 0);
	}
	assert_int_equal(store_txn_seq(st), seq + 1); /* one transaction */
	store_after_commit(st, probe_cb, &p);
	assert_true(store_pending(st));
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv"), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, 0);
	assert_int_equal(p.rows_seen, 100); /* committed before the callback */
	assert_false(store_pending(st));
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 1);
	assert_int_equal(stats.writes, 100);

	/* Read your writes: a read runs the queue first. */
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "q", "mine", "seen", (int64_t)1), 0);
	char *v = store_kv_get(st, "q", "mine");
	assert_non_null(v);
	assert_string_equal(v, "seen");
	free(v);
	/* Strings with their length, empty ones, and NULL. */
	assert_int_equal(store_queue(st, KV_INSERT, "tTni", "q", "lenXXX", (size_t)3, (int64_t)2),
	                 0);
	assert_int_equal(store_queue(st, KV_INSERT, "tTti", "q", "e", (size_t)1, "", (int64_t)3),
	                 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE key = 'len' AND value "
	                                   "IS NULL"),
	                 1);
	assert_int_equal(
	    peek_int(f->path, "SELECT count(*) FROM kv WHERE key = 'e' AND value = ''"), 1);

	/* A commit in flight while the next transaction fills: A is handed
	 * to the thread at the first commit point, B waits for it; a write
	 * of the loop's own in between waits for A and joins B. */
	struct order o = {0};
	struct order_arg a = {&o, 1}, b = {&o, 2};
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "o", "a", "v", (int64_t)0), 0);
	store_after_commit(st, order_cb, &a);
	uv_run(&loop, UV_RUN_NOWAIT); /* the commit point: A goes */
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "o", "b", "v", (int64_t)0), 0);
	assert_int_equal(store_kv_set(st, "o", "sync", "v"), 0);
	store_after_commit(st, order_cb, &b);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_both_committed(&o);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE ns = 'o'"), 3);
	assert_int_equal(e.n, 0);

	/* Closing with a commit in flight: it completes, its callback runs. */
	struct commit_probe c = {0};
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "c", "last", "v", (int64_t)0), 0);
	store_after_commit(st, probe_cb, &c);
	uv_run(&loop, UV_RUN_NOWAIT);
	close_threaded(st, &loop);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.last_status, 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE ns = 'c'"), 1);
}

/* The size of the file at path, 0 if there is none. */
static off_t
file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? sb.st_size : 0;
}

/* With the thread, the WAL is checkpointed off the writer's way
 * (checkpointer.h): the checkpoints happen, the WAL stays within the cap
 * however fast transactions come, the database gets the pages, and
 * nothing is lost.  The database was made with 4 KiB pages, as before
 * dreamos chose 16 KiB: it keeps them (and the cap, 4,000 pages, is
 * reached in 24 MiB). */
static void
test_thread_checkpoints(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; "
	                              "CREATE TABLE older (x)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	uv_loop_t loop;
	struct errlog e = {0};
	struct store *st = open_threaded(f->path, &loop, &e);
	assert_int_equal(query_int(st, "PRAGMA page_size"), 4096);
	char *wal = xasprintf("%s-wal", f->path);
	char value[1024];
	memset(value, 'v', sizeof value - 1);
	value[sizeof value - 1] = '\0';
	/* 24 MiB in transactions of 256 KiB, three times the cap's WAL. */
	off_t wal_max = 0;
	for (int t = 0; t < 96; t++) {
		for (int i = 0; i < 256; i++) {
			char key[24];
			snprintf(key, sizeof key, "k%d.%d", t, i);
			assert_int_equal(
			    store_queue(st, KV_INSERT, "ttti", "ck", key, value, (int64_t)i), 0);
		}
		uv_run(&loop, UV_RUN_DEFAULT);
		if (file_size(wal) > wal_max)
			wal_max = file_size(wal);
	}
	struct store_stats ss;
	store_stats(st, &ss);
	assert_true(ss.checkpoints >= 1);
	assert_true(ss.wal_pages > 0);
	/* The cap, plus one transaction's pages that cross it. */
	assert_true(wal_max <= (off_t)(CHECKPOINTER_CAP_PAGES + 200) * (4096 + 24));
	assert_true(file_size(f->path) > 16 * 1024 * 1024); /* checkpointed there */
	assert_int_equal(e.n, 0);
	close_threaded(st, &loop);
	assert_int_equal(file_size(wal), 0); /* the last close checkpoints it all */
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE ns = 'ck'"), 96 * 256);
	free(wal);
}

/* The checkpointer by itself, on a connection of the test's: a commit that
 * takes the WAL past 1,000 pages wakes the thread; one past the cap is
 * checkpointed by the writer at once, and the next transaction starts the
 * WAL over; stopping it gives the connection SQLite's checkpoints back.
 * Then without a thread. */
static void
test_checkpointer(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (x)", NULL, NULL, NULL),
	    SQLITE_OK);
	char *cause = NULL;
	struct checkpointer *c = checkpointer_start(db, f->path, true, &cause);
	assert_non_null(c);
	static const char fill[] = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
	                           "WHERE i < %d) INSERT INTO t SELECT zeroblob(1000) FROM n";
	char sql[256];
	snprintf(sql, sizeof sql, fill, 6000); /* about 1,500 pages */
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	struct checkpointer_stats cs;
	for (int i = 0; i < 500; i++) { /* the thread's run: up to 5 s */
		checkpointer_stats(c, &cs);
		if (cs.runs > 0)
			break;
		usleep(10000);
	}
	assert_int_equal(cs.runs, 1);
	assert_int_equal(cs.forced, 0);
	assert_true(cs.last_pages >= CHECKPOINTER_PAGES && cs.last_pages < CHECKPOINTER_CAP_PAGES);

	snprintf(sql, sizeof sql, fill, 20000); /* past the cap in one commit */
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	checkpointer_stats(c, &cs);
	assert_int_equal(cs.forced, 1);
	assert_true(cs.last_pages >= CHECKPOINTER_CAP_PAGES);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
	checkpointer_stats(c, &cs);
	assert_true(cs.last_pages < 10); /* started over */

	checkpointer_stop(c);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM t"), 26001);

	/* Without a thread (store.durability strict): a commit that takes
	 * the WAL past 4 MiB (1,024 pages of 4 KiB here) is checkpointed by
	 * the writer at once and counted, and the next transaction starts the
	 * WAL over. */
	c = checkpointer_start(db, f->path, false, &cause);
	assert_non_null(c);
	snprintf(sql, sizeof sql, fill, 600); /* about 150 pages: no checkpoint */
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	checkpointer_stats(c, &cs);
	assert_int_equal(cs.forced, 0);
	snprintf(sql, sizeof sql, fill, 6000);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	checkpointer_stats(c, &cs);
	assert_int_equal(cs.runs, 0);
	assert_int_equal(cs.forced, 1);
	assert_true(cs.last_pages >= CHECKPOINTER_INLINE_BYTES / 4096);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
	checkpointer_stats(c, &cs);
	assert_true(cs.last_pages < 10); /* started over */
	checkpointer_stop(c);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM t"), 32602);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* store_progress: mid-turn, with the thread idle and 256 writes queued, the
 * transaction goes to the thread at once (not before: fewer stay for the
 * commit point); the writes queued after it form the next transaction,
 * which waits for it; the callbacks run on the loop only, in order. */
/* Queues packed message id, with ts 1000 + id and body "b<id>" (or body
 * of blen bytes), reply_to id - 1 for odd ids. */
static int
queue_msg(struct store *st, int64_t id, const char *body, size_t blen)
{
	char b[32];
	if (body == NULL) {
		snprintf(b, sizeof b, "b%lld", (long long)id);
		body = b;
		blen = strlen(b);
	}
	return store_queue_packed(st, &packtab_messages, id % 2 ? "iittitTi" : "iittitTn", id,
	                          1000 + id, "s", "t", (int64_t)1, "NORMAL", body, blen, id - 1);
}

/* Packed rows: a run of them goes in blocks of STORE_PACK_ROWS rows (or
 * of about STORE_PACK_BYTES), a write queued between them ends a block and
 * lands between them, every row reads back as queued, and a key that does
 * not grow fails its transaction, as a duplicate primary key did. */
static void
test_thread_packed(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	struct errlog e = {0};
	struct store *st = open_threaded(f->path, &loop, &e);
	for (int64_t id = 1; id <= 10000; id++) {
		if (id == 3000)
			assert_int_equal(
			    store_queue(st, KV_INSERT, "ttti", "q", "mid", "x", (int64_t)id), 0);
		assert_int_equal(queue_msg(st, id, NULL, 0), 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(e.n, 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages"), 10000);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages WHERE ts_ms = 1000 + id "
	                                   "AND sender = 's' AND target = 't' AND priority = 1 AND "
	                                   "mode = 'NORMAL' AND body = 'b' || id AND reply_to IS "
	                                   "CASE WHEN id % 2 = 1 THEN id - 1 ELSE NULL END"),
	                 10000);
	/* 1-2999, then the kv row, then 3000-7095 (4096 rows) and the rest. */
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM message_blocks"), 3);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM message_blocks WHERE (first_id, "
	                                   "last_id) IN (VALUES (1, 2999), (3000, 7095), (7096, "
	                                   "10000))"),
	                 3);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE key = 'mid'"), 1);

	/* Big rows: a block ends once it holds about a megabyte. */
	size_t big = 300000;
	char *body = malloc(big);
	memset(body, 'x', big);
	for (int64_t id = 20001; id <= 20008; id++)
		assert_int_equal(queue_msg(st, id, body, big), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	free(body);
	assert_int_equal(e.n, 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM message_blocks WHERE first_id > "
	                                   "20000"),
	                 2);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages WHERE id > 20000 AND "
	                                   "length(body) = 300000"),
	                 8);

	/* A key below the last: the transaction goes, with the rows before
	 * it; the next goes on from the last stored. */
	assert_int_equal(queue_msg(st, 30000, NULL, 0), 0);
	assert_int_equal(queue_msg(st, 30001, NULL, 0), 0);
	assert_int_equal(queue_msg(st, 15, NULL, 0), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_true(e.n > 0);
	assert_non_null(strstr(e.all, "key 15 after 30001"));
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages WHERE id >= 30000"), 0);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages"), 10008);
	assert_int_equal(queue_msg(st, 30002, NULL, 0), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages WHERE id = 30002"), 1);

	/* A fault on the packed table's writes fails them as any write. */
	store_set_fault_hook(st, write_fault_hook, "INSERT INTO messages ");
	assert_int_equal(queue_msg(st, 30003, NULL, 0), SQLITE_FULL);
	store_set_fault_hook(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages WHERE id = 30003"), 0);
	close_threaded(st, &loop);

	/* Reopened, keys go on from the newest stored. */
	memset(&e, 0, sizeof e);
	st = open_threaded(f->path, &loop, &e);
	assert_int_equal(queue_msg(st, 30002, NULL, 0), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_non_null(strstr(e.all, "key 30002 after 30002"));
	assert_int_equal(queue_msg(st, 30004, NULL, 0), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT max(id) FROM messages"), 30004);
	/* Read through the store's own connection (recovery and history do):
	 * the table's statements go with it, and closing reports nothing. */
	assert_int_equal(query_int(st, "SELECT count(*) FROM messages WHERE id >= 30002"), 2);
	assert_int_equal(query_int(st, "SELECT id FROM messages ORDER BY id DESC LIMIT 1"), 30004);
	close_threaded(st, &loop);
	assert_int_equal(e.n, 2); /* (the key refused above, and its rollback) */
	assert_null(strstr(e.all, "not finalised"));
}

/* Schema 11: the rows of the messages table move into blocks, exactly. */
static void
test_migrate_packed(void **state)
{
	struct fixture *f = *state;
	store_close(open_store(f->path, NULL, STORE_NORMAL));
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	const char *v10 =
	    "DROP TABLE message_blocks;\n"
	    "CREATE TABLE messages (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, sender TEXT "
	    "NOT NULL, target TEXT NOT NULL, priority INTEGER NOT NULL, mode TEXT NOT NULL, body "
	    "TEXT NOT NULL, reply_to INTEGER);\n"
	    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)\n"
	    "INSERT INTO messages SELECT i * 3, 5000 + i, 'a' || i, CASE WHEN i % 2 THEN '*' ELSE "
	    "'b' END, i % 4, 'SYNC', '{\"k\": \"caf\xc3\xa9 ' || i || '\"}', CASE WHEN i % 5 "
	    "= 0 THEN NULL ELSE i END FROM n;\n"
	    "CREATE TABLE expect AS SELECT * FROM messages;\n"
	    "PRAGMA user_version = 10;\n";
	assert_int_equal(sqlite3_exec(db, v10, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	struct store *st = open_store(f->path, NULL, STORE_NORMAL);
	assert_int_equal(store_schema_version(st), store_schema_latest());
	assert_int_equal(query_int(st, "SELECT count(*) FROM messages"), 5000);
	/* Every row as it was, in id order. */
	assert_int_equal(query_int(st, "SELECT count(*) FROM (SELECT * FROM messages EXCEPT SELECT "
	                               "* FROM expect)"),
	                 0);
	assert_int_equal(query_int(st, "SELECT count(*) FROM messages m JOIN expect e ON e.id = "
	                               "m.id AND e.reply_to IS m.reply_to AND e.body = m.body"),
	                 5000);
	assert_int_equal(query_int(st, "SELECT count(*) FROM message_blocks"), 2);
	assert_int_equal(
	    query_int(st, "SELECT count(*) FROM sqlite_master WHERE name = 'messages'"), 0);
	store_close(st);
	/* New rows go on from the newest. */
	uv_loop_t loop;
	struct errlog e = {0};
	st = open_threaded(f->path, &loop, &e);
	assert_int_equal(queue_msg(st, 15000, NULL, 0), 0);
	assert_int_equal(queue_msg(st, 15001, NULL, 0), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_non_null(strstr(e.all, "key 15000 after 15000"));
	assert_int_equal(queue_msg(st, 15001, NULL, 0), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM messages"), 5001);
	close_threaded(st, &loop);
}

static void
test_thread_progress(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	struct errlog e = {0};
	struct store *st = open_threaded(f->path, &loop, &e);
	struct order o = {0};
	struct order_arg a = {&o, 1}, b = {&o, 2};
	char key[16];
	for (int i = 0; i < 255; i++) {
		snprintf(key, sizeof key, "a%d", i);
		assert_int_equal(store_queue(st, KV_INSERT, "ttti", "p", key, "v", (int64_t)i), 0);
	}
	store_after_commit(st, order_cb, &a);
	uint64_t seq = store_txn_seq(st);
	store_progress(st); /* 255: stays */
	assert_true(store_pending(st));
	assert_int_equal(store_txn_seq(st), seq);
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "p", "a255", "v", (int64_t)0), 0);
	store_progress(st); /* 256: handed off */
	assert_false(store_pending(st));
	assert_int_equal(o.n, 0); /* (its callback comes once it is done) */
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof key, "b%d", i);
		assert_int_equal(store_queue(st, KV_INSERT, "ttti", "p", key, "v", (int64_t)i), 0);
	}
	assert_int_equal(store_txn_seq(st), seq + 1);
	store_after_commit(st, order_cb, &b);
	/* While one is in flight the next waits for it; once it is done,
	 * store_progress runs its callback (not the loop's next poll: no
	 * uv_run here) and hands the next off. */
	for (int i = 0; i < 10000 && store_pending(st); i++) {
		store_progress(st);
		if (store_pending(st)) {
			assert_int_equal(o.n, 0);
			usleep(1000);
		}
	}
	assert_false(store_pending(st));
	assert_int_equal(o.n, 1);
	assert_int_equal(o.seen[0], 1);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_both_committed(&o);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE ns = 'p'"), 556);
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commits, 2);
	assert_int_equal(e.n, 0);
	store_progress(NULL); /* (no store: nothing) */
	close_threaded(st, &loop);
}

/* A queued write that fails when it runs takes its whole transaction:
 * nothing of it is committed, every callback of it gets -1, the log says
 * which write and that the transaction was rolled back; the next one
 * commits.  One failed by an injected fault fails at once, as a write. */
static void
test_thread_write_failure(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	struct errlog e = {0};
	struct store *st = open_threaded(f->path, &loop, &e);

	assert_int_equal(store_kv_set(st, "w", "taken", "v"), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	struct commit_probe p = {0}, q = {0};
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "w", "good", "v", (int64_t)0), 0);
	/* (the key exists: a constraint error, found only when it runs) */
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "w", "taken", "v", (int64_t)0), 0);
	store_after_commit(st, probe_cb, &p);
	store_after_commit(st, probe_cb, &q);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.last_status, -1);
	assert_int_equal(q.last_status, -1);
	assert_int_equal(e.n, 2);
	assert_non_null(strstr(e.last, "transaction rolled back"));
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE key = 'good'"), 0);
	struct store_stats stats;
	store_stats(st, &stats);
	assert_int_equal(stats.commit_failures, 1);
	assert_string_not_equal(store_state(st), "ok");

	struct commit_probe r = {0};
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "w", "good", "v", (int64_t)0), 0);
	store_after_commit(st, probe_cb, &r);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.last_status, 0);
	assert_string_equal(store_state(st), "ok");
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE key = 'good'"), 1);

	/* An injected fault: refused at once, and the transaction with it. */
	struct commit_probe s = {0};
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "w", "before", "v", (int64_t)0), 0);
	store_after_commit(st, probe_cb, &s);
	store_set_fault_hook(st, write_fault_hook, "INSERT INTO kv");
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "w", "faulty", "v", (int64_t)0),
	                 SQLITE_FULL);
	assert_false(store_pending(st));
	assert_non_null(strstr(e.last, "transaction rolled back"));
	store_set_fault_hook(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(s.last_status, -1);
	assert_int_equal(peek_int(f->path, "SELECT count(*) FROM kv WHERE key IN ('before', "
	                                   "'faulty')"),
	                 0);

	close_threaded(st, &loop);
}

/* A failed commit on the thread delays the next one by the retry delay, as
 * on the loop (a full disk must not spin it), even when that next commit
 * point was armed before the failure was known. */
struct timed {
	int status;
	uint64_t at;
};

static void
timed_cb(void *arg, int status)
{
	struct timed *t = arg;
	t->status = status;
	t->at = uv_hrtime();
}

static void
test_thread_retry_delay(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	struct errlog e = {0};
	struct store *st = open_threaded(f->path, &loop, &e);
	fault_code = SQLITE_FULL;
	fault_calls = 0;
	store_set_fault_hook(st, fault_hook, NULL);
	struct timed a = {1, 0}, b = {1, 0};
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "r", "a", "v", (int64_t)0), 0);
	store_after_commit(st, timed_cb, &a);
	uv_run(&loop, UV_RUN_NOWAIT); /* A goes to the thread, its COMMIT fails */
	store_set_fault_hook(st, NULL, NULL);
	assert_int_equal(store_queue(st, KV_INSERT, "ttti", "r", "b", "v", (int64_t)0), 0);
	store_after_commit(st, timed_cb, &b);    /* (arms the end of this turn) */
	char *v = store_kv_get(st, "r", "none"); /* waits for A */
	assert_null(v);
	assert_string_equal(store_state(st), "disk full");
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(fault_calls, 1);
	assert_int_equal(a.status, -1);
	assert_int_equal(b.status, 0);
	assert_true(b.at - a.at >= 200 * 1000000ull); /* STORE_RETRY_MS is 250 */
	assert_string_equal(store_state(st), "ok");
	close_threaded(st, &loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_creates_schema, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_bus_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_message_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_a_database_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_loop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_interval, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_adaptive_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flush_without_loop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fault_disk_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_begin_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_strict_durability, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idlease, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stmt_cache, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_with_loop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_without_loop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_commits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_multi_row, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_packed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_packed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_progress, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_write_failure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_retry_delay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thread_checkpoints, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpointer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
