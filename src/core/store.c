/* store.c — the SQLite store: WAL mode, versioned schema with ordered
 * migrations, a cache of prepared statements, and group commit.
 *
 * Group commit works with libuv's loop phases.  The first write of a loop
 * turn runs BEGIN IMMEDIATE and starts a uv_check handle (check handles run
 * right after the poll phase, so writes made in I/O callbacks are committed
 * in the same turn) and a uv_idle handle (it does nothing but keep the poll
 * phase from blocking while a transaction is open, for writes made in timer
 * callbacks).  The check callback commits, stops both handles, then runs the
 * after-commit callbacks.  With commit_interval_ms a uv_timer replaces the
 * pair; without a loop only store_flush commits.
 *
 * Under load the commit point adapts (opts.adaptive): when the last commit
 * ended less than busy_us ago (STORE_BUSY_US by default), a turn's writes
 * wait (on a 1 ms timer, or until STORE_BATCH_MAX writes) for the next
 * turns' so that one commit carries many; a quiet store commits at the end
 * of the turn as before, so the latency of an idle system is unchanged.
 * What is acknowledged is still acknowledged only after its commit.
 *
 * After a failed commit the next commit point is delayed by a timer
 * (STORE_RETRY_MS): otherwise a full disk plus a log sink that writes the
 * "commit failed" error back into the store would spin the loop.
 *
 * The store thread (opts.threaded): the commit point hands the open
 * transaction's work (the writes queued with store_queue, then COMMIT) to
 * a second thread as a job, and the loop goes on with the next turn; when
 * the job is done, store_async_cb runs its after-commit callbacks on the
 * loop.  One job is in flight at a time: a commit point that comes before
 * its end waits for it, which batches the turns in between.  The loop's
 * own use of the connection (a read, a store_step_write) first waits for
 * the job (store_wait) and runs the queued writes (store_sync), so it sees
 * everything written before it.  Why: SQLite (the inserts, the COMMIT's
 * WAL writes, checkpoints) was about half the loop's time under a message
 * flood, and the second core sat idle. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpointer.h"
#include "packtab.h"
#include "store.h"
#include "util.h"

#define STORE_BUSY_TIMEOUT_MS 5000
#define STORE_CACHE_KIB       8192
#define STORE_WAL_LIMIT       (64 * 1024 * 1024)
#define STORE_RETRY_MS        250
#define STORE_ADDR_SLOTS      256       /* direct-mapped, by the SQL text's address */
#define STORE_MULTI_ROWS      16        /* queued INSERTs run as one statement of this many rows */
#define STORE_MULTI_SLOTS     16        /* literals with a multi-row form kept (never evicted) */
#define STORE_PACK_ROWS       4096      /* rows of a packed table per block, at most ... */
#define STORE_PACK_BYTES      (1 << 20) /* ... and about this many bytes */
#define STORE_BUSY_US         500       /* commits closer than this: under load */
#define STORE_BATCH_MAX       20000     /* writes that make a commit wait no more */
#define STORE_HANDOFF_MIN     256       /* queued writes store_progress hands off */
#define STORE_SPARE_RECS      8192      /* a job's queue kept for reuse up to this many writes */
#define STORE_SPARE_TEXT      (4 << 20) /* ... and this many bytes of text */

/* One schema migration: sql (and then fn, if set) upgrades the database from
 * version i to version i + 1, where i is the index in store_migrations[].
 * fn is for data migrations that need code; it returns a SQLite code and may
 * set *errmsg (malloc'd, freed by the caller). */
struct store_migration {
	const char *sql;
	int (*fn)(sqlite3 *db, char **errmsg);
};

static int store_pack_messages(sqlite3 *db, char **errmsg);

/* The ordered schema migrations.  To change the schema, APPEND an entry (never
 * edit or reorder a released one): entry i runs in its own transaction on a
 * database at user_version i and leaves it at i + 1.  store_schema_latest()
 * follows automatically. */
static const struct store_migration store_migrations[] = {
    /* 0 -> 1: metadata, extension key-value state, logs. */
    {.sql = "CREATE TABLE meta (\n"
            "  key TEXT PRIMARY KEY,\n"
            "  value TEXT\n"
            ");\n"
            "CREATE TABLE kv (\n"
            "  ns TEXT NOT NULL,\n"
            "  key TEXT NOT NULL,\n"
            "  value TEXT,\n"
            "  updated_ms INTEGER,\n"
            "  PRIMARY KEY (ns, key)\n"
            ");\n"
            "CREATE TABLE logs (\n"
            "  id INTEGER PRIMARY KEY,\n"
            "  ts_ms INTEGER NOT NULL,\n"
            "  level INTEGER NOT NULL,\n"
            "  source TEXT NOT NULL,\n"
            "  msg TEXT NOT NULL,\n"
            "  fields TEXT\n"
            ");\n"
            "CREATE INDEX logs_ts ON logs (ts_ms);\n"
            "CREATE INDEX logs_source ON logs (source);\n"},
    /* 1 -> 2: the agent registry (agent.c). */
    {.sql = "CREATE TABLE agents (\n"
            "  name TEXT PRIMARY KEY,\n"
            "  spec TEXT NOT NULL,\n"
            "  from_config INTEGER NOT NULL,\n"
            "  wanted INTEGER NOT NULL DEFAULT 1,\n"
            "  state TEXT NOT NULL,\n"
            "  pid INTEGER,\n"
            "  restarts INTEGER NOT NULL DEFAULT 0,\n"
            "  last_exit_status INTEGER,\n"
            "  last_signal INTEGER,\n"
            "  started_ms INTEGER,\n"
            "  last_heartbeat_ms INTEGER,\n"
            "  tokens_in INTEGER NOT NULL DEFAULT 0,\n"
            "  tokens_out INTEGER NOT NULL DEFAULT 0,\n"
            "  cost_usd REAL NOT NULL DEFAULT 0,\n"
            "  updated_ms INTEGER NOT NULL\n"
            ");\n"},
    /* 2 -> 3: the message bus (bus.c).  AUTOINCREMENT: ids never go back,
     * even after the newest message is pruned. */
    {.sql = "CREATE TABLE messages (\n"
            "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "  ts_ms INTEGER NOT NULL,\n"
            "  sender TEXT NOT NULL,\n"
            "  target TEXT NOT NULL,\n"
            "  priority INTEGER NOT NULL,\n"
            "  mode TEXT NOT NULL,\n"
            "  body TEXT NOT NULL,\n"
            "  reply_to INTEGER\n"
            ");\n"
            "CREATE INDEX messages_ts ON messages (ts_ms);\n"
            "CREATE TABLE deliveries (\n"
            "  recipient TEXT NOT NULL,\n"
            "  msg_id INTEGER NOT NULL,\n"
            "  state INTEGER NOT NULL,\n"
            "  attempt INTEGER NOT NULL DEFAULT 0,\n"
            "  updated_ms INTEGER,\n"
            "  PRIMARY KEY (recipient, msg_id)\n"
            ") WITHOUT ROWID;\n"
            "CREATE INDEX deliveries_msg ON deliveries (msg_id);\n"
            "CREATE INDEX deliveries_open ON deliveries (state) WHERE state != 1;\n"
            "CREATE TABLE subscriptions (\n"
            "  agent TEXT NOT NULL,\n"
            "  topic TEXT NOT NULL,\n"
            "  PRIMARY KEY (agent, topic)\n"
            ") WITHOUT ROWID;\n"},
    /* 3 -> 4: the task manager (task.c). */
    {.sql = "CREATE TABLE tasks (\n"
            "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "  title TEXT NOT NULL,\n"
            "  payload TEXT,\n"
            "  priority INTEGER NOT NULL,\n"
            "  capability TEXT,\n"
            "  timeout_s REAL NOT NULL,\n"
            "  max_retries INTEGER NOT NULL,\n"
            "  attempt INTEGER NOT NULL DEFAULT 0,\n"
            "  state TEXT NOT NULL,\n"
            "  agent TEXT,\n"
            "  progress REAL NOT NULL DEFAULT 0,\n"
            "  note TEXT,\n"
            "  result TEXT,\n"
            "  error TEXT,\n"
            "  submitter TEXT,\n"
            "  created_ms INTEGER NOT NULL,\n"
            "  updated_ms INTEGER NOT NULL,\n"
            "  retry_at_ms INTEGER\n"
            ");\n"
            "CREATE INDEX tasks_state ON tasks (state);\n"
            "CREATE TABLE task_deps (\n"
            "  task INTEGER NOT NULL,\n"
            "  after INTEGER NOT NULL,\n"
            "  PRIMARY KEY (task, after)\n"
            ") WITHOUT ROWID;\n"},
    /* 4 -> 5: the Bridge's keys, session tokens and audit chain (auth.c). */
    {.sql = "CREATE TABLE apikeys (\n"
            "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "  name TEXT NOT NULL,\n"
            "  role TEXT NOT NULL,\n"
            "  hash TEXT NOT NULL UNIQUE,\n"
            "  created_ms INTEGER NOT NULL,\n"
            "  revoked_ms INTEGER,\n"
            "  last_used_ms INTEGER\n"
            ");\n"
            "CREATE TABLE tokens (\n"
            "  hash TEXT PRIMARY KEY,\n"
            "  key_id INTEGER NOT NULL,\n"
            "  expires_ms INTEGER NOT NULL\n"
            ") WITHOUT ROWID;\n"
            "CREATE TABLE audit (\n"
            "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "  ts_ms INTEGER NOT NULL,\n"
            "  actor TEXT NOT NULL,\n"
            "  action TEXT NOT NULL,\n"
            "  detail TEXT NOT NULL,\n"
            "  ok INTEGER NOT NULL,\n"
            "  prev_hash TEXT NOT NULL,\n"
            "  hash TEXT NOT NULL\n"
            ");\n"},
    /* 5 -> 6: the bus's pending deliveries are no longer indexed: that index
     * was written twice per message (insert, ack) and cost ~15% of the
     * bus's throughput.  Recovery finds them from a floor kept in kv
     * (bus.c); only dead ones, rare, keep an index. */
    {.sql = "DROP INDEX deliveries_open;\n"
            "CREATE INDEX deliveries_dead ON deliveries (state, msg_id) WHERE state = 2;\n"},
    /* 6 -> 7: two b-trees fewer written per message (~1 us each, a
     * quarter of the bus's store time).  deliveries is keyed by (msg_id,
     * recipient) instead of (recipient, msg_id) plus an index on msg_id:
     * every lookup names both or the message (recovery, requeue, history).
     * messages_ts goes: --since and retention find their first id by a
     * binary search over ids (bus_first_id_at). */
    {.sql = "CREATE TABLE deliveries_v7 (\n"
            "  recipient TEXT NOT NULL,\n"
            "  msg_id INTEGER NOT NULL,\n"
            "  state INTEGER NOT NULL,\n"
            "  attempt INTEGER NOT NULL DEFAULT 0,\n"
            "  updated_ms INTEGER,\n"
            "  PRIMARY KEY (msg_id, recipient)\n"
            ") WITHOUT ROWID;\n"
            "INSERT INTO deliveries_v7 (recipient, msg_id, state, attempt, updated_ms)\n"
            "  SELECT recipient, msg_id, state, attempt, updated_ms FROM deliveries;\n"
            "DROP TABLE deliveries;\n"
            "ALTER TABLE deliveries_v7 RENAME TO deliveries;\n"
            "CREATE INDEX deliveries_dead ON deliveries (state, msg_id) WHERE state = 2;\n"
            "DROP INDEX messages_ts;\n"},
    /* 7 -> 8: messages without AUTOINCREMENT, whose sqlite_sequence row
     * was one more b-tree write per message (a fifth of the store's time
     * per message).  Ids come from the reservation in kv (idlease.c),
     * which is at or above every id ever given: the sequence's value is
     * kept there, so an id deleted by retention is still never given
     * again. */
    {.sql = "CREATE TABLE messages_v8 (\n"
            "  id INTEGER PRIMARY KEY,\n"
            "  ts_ms INTEGER NOT NULL,\n"
            "  sender TEXT NOT NULL,\n"
            "  target TEXT NOT NULL,\n"
            "  priority INTEGER NOT NULL,\n"
            "  mode TEXT NOT NULL,\n"
            "  body TEXT NOT NULL,\n"
            "  reply_to INTEGER\n"
            ");\n"
            "INSERT INTO messages_v8 (id, ts_ms, sender, target, priority, mode, body, "
            "reply_to)\n"
            "  SELECT id, ts_ms, sender, target, priority, mode, body, reply_to FROM messages;\n"
            "INSERT INTO kv (ns, key, value, updated_ms)\n"
            "  SELECT 'dreamos', 'message_ids', seq, 0 FROM sqlite_sequence\n"
            "  WHERE name = 'messages'\n"
            "  ON CONFLICT (ns, key) DO UPDATE SET\n"
            "  value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER));\n"
            "DROP TABLE messages;\n"
            "ALTER TABLE messages_v8 RENAME TO messages;\n"},
    /* 8 -> 9: no table changes; a direct message's delivery row is
     * written when it is acked or dies (or its attempt is recorded), and
     * until then the message row alone means pending (bus.h).  The version
     * makes an older dreamos, which would not deliver such a message,
     * refuse the database.  Every row written before keeps its meaning. */
    {.sql = "SELECT 1;\n"},
    /* 9 -> 10: acked-through marks (ackmark.h): a direct message without a
     * delivery row, at or below its target's mark, is acked.  An ack in id
     * order costs no row of its own (it was half of the store's writes per
     * message); an older dreamos would deliver those again, so it must
     * refuse the database. */
    {.sql = "CREATE TABLE acks_through (\n"
            "  recipient TEXT PRIMARY KEY,\n"
            "  msg_id INTEGER NOT NULL\n"
            ") WITHOUT ROWID;\n"},
    /* 10 -> 11: messages are packed, a block of them per row
     * (packtab.h): a row per message was most of the store thread's time
     * per message.  `messages` becomes the virtual table that reads the
     * blocks back as those rows; the rows of the old table move into
     * blocks. */
    {.sql = "CREATE TABLE message_blocks (\n"
            "  first_id INTEGER PRIMARY KEY,\n"
            "  last_id INTEGER NOT NULL,\n"
            "  data BLOB NOT NULL\n"
            ");\n",
     .fn = store_pack_messages},
};

struct stmt_entry {
	char *sql; /* NULL: empty slot */
	uint32_t hash;
	sqlite3_stmt *stmt;
};

struct commit_cb {
	store_commit_fn fn;
	void *arg;
};

struct commit_hook {
	store_hook_fn fn;
	void *arg;
};

#define STORE_REC_VALS 8 /* parameters of a queued write, at most */

/* A write queued by store_queue.  Text values live in the queue's text
 * buffer (offsets, as it grows). */
struct store_rec {
	const char *sql;
	const struct packtab *pt; /* a row of this packed table (sql: its op), or NULL */
	int n;
	char type[STORE_REC_VALS]; /* 'i', 't' (text at iv, len bytes) or 'n' */
	int64_t iv[STORE_REC_VALS];
	size_t len[STORE_REC_VALS];
};

struct store_recs {
	struct store_rec *v;
	size_t n, cap;
	char *text;
	size_t tlen, tcap;
};

/* One commit point's work: the queued writes and COMMIT (run by the store
 * thread, or inline), then the after-commit callbacks (on the loop). */
struct store_job {
	struct store_recs q;
	struct commit_cb *cbs;
	size_t ncbs;
	size_t nlost; /* cbs[0..nlost) belong to a transaction rolled back before */
	int lost_rc;
	bool commit;      /* a transaction is open: commit it */
	bool doomed;      /* ... no: roll it back (see store.doomed) */
	int commit_fault; /* injected into the COMMIT, or 0 */
	/* What running it gave: */
	int rc;                 /* SQLITE_DONE, or why it failed */
	bool write_failed;      /* a queued write failed (rc), not the COMMIT */
	char *err;              /* the failure, one line */
	bool still_open;        /* even ROLLBACK failed */
	uint64_t t0, t1;        /* uv_hrtime around the COMMIT */
	struct store_job *next; /* run, callbacks not yet */
};

struct store {
	sqlite3 *db;
	char *path;
	uv_loop_t *loop;
	enum store_durability durability;
	unsigned commit_interval_ms;
	bool adaptive;
	uint64_t busy_ns;
	int version;

	/* Prepared statements: open addressing, keyed by SQL text. */
	struct stmt_entry *stmts;
	/* In front of it, by the address of the SQL text (a literal: the same
	 * address is always the same text): no hashing of long statements on
	 * the hot paths. */
	struct {
		const char *sql;
		sqlite3_stmt *stmt;
	} by_addr[STORE_ADDR_SLOTS];
	size_t nstmts;
	size_t stmt_cap; /* power of two */
	/* The STORE_MULTI_ROWS-row form of a queued INSERT ... VALUES (...),
	 * made once per literal (store_multi_sql); "" if it has none.  Kept
	 * until close: by_addr may hold a statement by its address. */
	struct {
		const char *sql;
		char *multi;
	} multi[STORE_MULTI_SLOTS];
	size_t nmulti;

	bool in_txn;
	bool doomed;             /* a write failed and ROLLBACK too: never commit this one */
	bool scheduled;          /* a commit point is scheduled on the loop */
	bool batching;           /* under load: the commit point waits on the timer */
	uint64_t last_commit_ns; /* uv_hrtime at the end of the last commit */
	uint64_t txn_writes;     /* writes in the open transaction */
	bool failing;            /* the last commit failed: retry on a timer */
	struct commit_cb *cbs;
	size_t ncbs;
	size_t cbs_cap;
	struct commit_hook *hooks; /* store_before_commit */
	size_t nhooks;
	size_t nlost;     /* cbs[0..nlost) belong to a transaction SQLite rolled back */
	uint64_t txn_seq; /* transactions begun */
	int lost_rc;
	struct store_recs q; /* store_queue's writes, not run yet */
	/* The queue of the last job that ran, emptied, for the next
	 * transaction: regrowing one from nothing at each was about 3% of the
	 * loop's instructions under a message flood. */
	struct store_recs spare;
	/* The block of packed rows being built, and the newest key packed
	 * (keys only grow: packtab.h).  The connection owner's. */
	char *pack;
	size_t pack_len, pack_cap;
	int64_t pack_last;

	/* The store thread and what the loop handed it.  mu guards work,
	 * work_done and quit; the rest is the loop's.  While a job is in
	 * flight the thread owns the connection: the loop waits (store_wait)
	 * before it touches it. */
	bool threaded;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct store_job *work;
	bool work_done;
	bool quit;
	struct store_job *inflight;              /* handed over, not reaped */
	struct store_job *done_head, *done_tail; /* reaped, callbacks not run */
	bool want_commit;                        /* a commit point came while a job was in flight */
	uv_async_t async;
	struct checkpointer *ckpt; /* with the thread, on a file: WAL checkpoints */

	const char *state;
	struct store_stats stats;

	store_error_fn error_fn;
	void *error_arg;
	store_fault_fn fault_fn;
	void *fault_arg;

	int busy;           /* depth of store_finish calls (running callbacks) */
	bool closing;       /* store_close was called */
	bool close_pending; /* ... from inside a commit; finish it there */

	uv_check_t check;
	uv_idle_t idle;
	uv_timer_t timer;
	int open_handles;
};

static int store_commit_now(struct store *st, char **cause, bool *closed);
static void store_do_close(struct store *st);
static void store_check_cb(uv_check_t *h);
static void store_idle_cb(uv_idle_t *h);
static void store_timer_cb(uv_timer_t *h);

int
store_schema_latest(void)
{
	return (int)nitems(store_migrations);
}

/* Reports a one-line error through the error callback, if any. */
static void PRINTFLIKE(2, 3) store_error(struct store *st, const char *fmt, ...)
{
	if (st->error_fn == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	st->error_fn(st->error_arg, msg);
	free(msg);
}

/* Returns a short description of a SQLite result code (static string). */
static const char *
store_describe(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return "disk full";
	case SQLITE_IOERR:
		return "I/O error";
	default:
		return sqlite3_errstr(rc);
	}
}

/* Returns the FNV-1a hash of s. */
static uint32_t
store_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

/* Returns the cache slot for sql: its entry, or the empty slot where it
 * belongs. */
static struct stmt_entry *
store_slot(struct stmt_entry *tab, size_t cap, const char *sql, uint32_t hash)
{
	size_t i = hash & (cap - 1);
	for (;;) {
		struct stmt_entry *e = &tab[i];
		if (e->sql == NULL || (e->hash == hash && strcmp(e->sql, sql) == 0))
			return e;
		i = (i + 1) & (cap - 1);
	}
}

/* Doubles the statement cache. */
static void
store_cache_grow(struct store *st)
{
	size_t cap = st->stmt_cap ? st->stmt_cap * 2 : 32;
	struct stmt_entry *tab = xcalloc(cap, sizeof *tab);
	for (size_t i = 0; i < st->stmt_cap; i++) {
		struct stmt_entry *e = &st->stmts[i];
		if (e->sql != NULL)
			*store_slot(tab, cap, e->sql, e->hash) = *e;
	}
	free(st->stmts);
	st->stmts = tab;
	st->stmt_cap = cap;
}

static void store_sync(struct store *st);
static void store_wait(struct store *st);

/* The cached statement for sql, by its text; from the store thread too
 * (which reports nothing itself: report is false). */
static sqlite3_stmt *
store_stmt_by_text(struct store *st, const char *sql, bool report)
{
	uint32_t hash = store_hash(sql);
	if (st->stmt_cap != 0) {
		struct stmt_entry *e = store_slot(st->stmts, st->stmt_cap, sql, hash);
		if (e->sql != NULL) {
			sqlite3_reset(e->stmt);
			sqlite3_clear_bindings(e->stmt);
			return e->stmt;
		}
	}
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
	if (rc != SQLITE_OK || stmt == NULL) {
		if (report)
			store_error(st, "%s: cannot prepare \"%s\": %s", st->path, sql,
			            rc != SQLITE_OK ? sqlite3_errmsg(st->db) : "empty statement");
		return NULL;
	}
	if ((st->nstmts + 1) * 2 > st->stmt_cap)
		store_cache_grow(st);
	struct stmt_entry *e = store_slot(st->stmts, st->stmt_cap, sql, hash);
	e->sql = xstrdup(sql);
	e->hash = hash;
	e->stmt = stmt;
	st->nstmts++;
	return stmt;
}

/* The cached statement for a literal, by its address first. */
static sqlite3_stmt *
store_stmt_get(struct store *st, const char *sql, bool report)
{
	size_t slot = ((uintptr_t)sql >> 3) % STORE_ADDR_SLOTS;
	if (st->by_addr[slot].sql == sql) {
		sqlite3_stmt *stmt = st->by_addr[slot].stmt;
		sqlite3_reset(stmt);
		sqlite3_clear_bindings(stmt);
		return stmt;
	}
	sqlite3_stmt *stmt = store_stmt_by_text(st, sql, report);
	if (stmt != NULL) {
		st->by_addr[slot].sql = sql;
		st->by_addr[slot].stmt = stmt;
	}
	return stmt;
}

sqlite3_stmt *
store_stmt(struct store *st, const char *sql)
{
	store_sync(st);
	return store_stmt_get(st, sql, true);
}

sqlite3_stmt *
store_stmt_text(struct store *st, const char *sql)
{
	store_sync(st);
	return store_stmt_by_text(st, sql, true);
}

/* Resets cached statements a caller left mid-iteration, so that they hold
 * no read snapshot across a commit point (that would stop checkpoints and
 * let the WAL grow without bound). */
static void
store_reset_busy(struct store *st)
{
	for (size_t i = 0; i < st->stmt_cap; i++) {
		struct stmt_entry *e = &st->stmts[i];
		if (e->sql != NULL && sqlite3_stmt_busy(e->stmt))
			sqlite3_reset(e->stmt);
	}
}

/* Runs a cached statement that returns no rows (BEGIN, COMMIT...).  Returns
 * the SQLite code of the step (SQLITE_DONE on success). */
static int
store_run(struct store *st, const char *sql)
{
	sqlite3_stmt *stmt = store_stmt_get(st, sql, false);
	if (stmt == NULL)
		return sqlite3_errcode(st->db) != SQLITE_OK ? sqlite3_errcode(st->db)
		                                            : SQLITE_ERROR;
	int rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	return rc;
}

/* Returns the single integer that sql (a cached query) yields, or -1. */
static int64_t
store_query_int(struct store *st, const char *sql)
{
	sqlite3_stmt *stmt = store_stmt_get(st, sql, true);
	if (stmt == NULL)
		return -1;
	int64_t v = -1;
	if (sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_reset(stmt);
	return v;
}

/* Arms the next commit point on the loop (nothing without a loop).  Not
 * while one waits for the store thread: the end of its job brings it. */
static void
store_schedule(struct store *st)
{
	if (st->loop == NULL || st->scheduled || st->closing || st->want_commit)
		return;
	st->scheduled = true;
	if (st->failing || st->commit_interval_ms > 0)
		uv_update_time(st->loop); /* the cached time may be stale */
	if (st->failing)
		uv_timer_start(&st->timer, store_timer_cb, STORE_RETRY_MS, 0);
	else if (st->commit_interval_ms > 0)
		uv_timer_start(&st->timer, store_timer_cb, st->commit_interval_ms, 0);
	else {
		uv_check_start(&st->check, store_check_cb);
		uv_idle_start(&st->idle, store_idle_cb);
	}
}

/* Disarms the commit point. */
static void
store_unschedule(struct store *st)
{
	if (st->loop == NULL || !st->scheduled)
		return;
	st->scheduled = false;
	st->batching = false;
	uv_check_stop(&st->check);
	uv_idle_stop(&st->idle);
	uv_timer_stop(&st->timer);
}

static void store_commit_handoff(struct store *st);
static bool store_finish(struct store *st);
static void store_hooks_run(struct store *st);
static bool store_collect(struct store *st);

/* The loop reached the commit point. */
static void
store_commit_point(struct store *st)
{
	if (st->inflight != NULL) {
		/* The last commit still runs: this one follows it. */
		store_unschedule(st);
		st->want_commit = true;
		return;
	}
	/* Queued writes go to the store thread; a transaction of the loop's
	 * own writes only (tasks, logs) commits here as before: its COMMIT
	 * alone is not worth two thread switches. */
	/* (The hooks first: writes deferred to here decide it too.) */
	store_hooks_run(st);
	bool offload = st->threaded && st->q.n > 0;
	/* Under load, let the next turns' writes join this commit (with the
	 * thread, waiting for the job in flight does that). */
	if (st->adaptive && !offload && !st->batching && !st->failing && !st->closing &&
	    st->commit_interval_ms == 0 && st->in_txn && st->txn_writes < STORE_BATCH_MAX &&
	    st->last_commit_ns != 0 && uv_hrtime() - st->last_commit_ns < st->busy_ns) {
		st->batching = true;
		uv_idle_stop(&st->idle); /* the loop may wait for I/O or the timer */
		uv_timer_start(&st->timer, store_timer_cb, 1, 0);
		return;
	}
	if (offload) {
		store_commit_handoff(st);
		store_finish(st);
		return;
	}
	bool closed;
	store_commit_now(st, NULL, &closed);
}

static void
store_check_cb(uv_check_t *h)
{
	struct store *st = h->data;
	/* A batch that grew large enough goes at once. */
	if (st->batching && st->txn_writes < STORE_BATCH_MAX)
		return;
	store_commit_point(st);
}

static void
store_idle_cb(uv_idle_t *h)
{
	(void)h; /* only keeps the poll phase from blocking */
}

static void
store_timer_cb(uv_timer_t *h)
{
	store_commit_point(h->data);
}

/* Whether a write failed for the database's sake (disk full, I/O, ...)
 * rather than its own (a constraint, bad SQL). */
static bool
store_env_error(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_NOMEM:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_PROTOCOL:
	case SQLITE_PERM:
	case SQLITE_INTERRUPT:
	case SQLITE_ABORT:
		return true;
	}
	return false;
}

/* After a failed write: if the group transaction is gone (SQLite rolls it
 * back on its own after some errors) or must go (SQLite undid only the
 * statement, and a disk-full or I/O error must not let the rest commit
 * without it: a message stored without its delivery row would be answered
 * `sent`, then lost), the callbacks registered so far will get -1. */
static void
store_check_lost(struct store *st, int rc)
{
	if (st->in_txn && !sqlite3_get_autocommit(st->db) && !store_env_error(rc))
		return;
	store_abort_txn(st, rc);
}

void
store_abort_txn(struct store *st, int rc)
{
	if (!st->in_txn)
		return;
	store_wait(st);
	st->q.n = st->q.tlen = 0; /* its queued writes go with it */
	if (!sqlite3_get_autocommit(st->db)) {
		store_run(st, "ROLLBACK");
		if (!sqlite3_get_autocommit(st->db)) {
			/* Never committed: the commit point (or close) rolls it
			 * back instead, and its callbacks get -1 then. */
			st->doomed = true;
			return;
		}
	}
	st->doomed = false;
	st->in_txn = false;
	st->txn_writes = 0;
	st->nlost = st->ncbs;
	st->lost_rc = rc;
	st->state = store_describe(rc);
	st->stats.commit_failures++;
	st->failing = true;
	store_error(st, "%s: transaction rolled back: %s (%s)", st->path, store_describe(rc),
	            sqlite3_errmsg(st->db));
}

int
store_write_begin(struct store *st)
{
	store_sync(st);
	int rc = SQLITE_DONE;
	if (!st->in_txn && !sqlite3_get_autocommit(st->db)) {
		st->in_txn = true; /* a transaction is open already: adopt it */
		st->txn_seq++;
	} else if (!st->in_txn) {
		rc = store_run(st, "BEGIN IMMEDIATE");
		if (rc == SQLITE_DONE) {
			st->in_txn = true;
			st->txn_seq++;
		} else
			store_error(st, "%s: cannot begin a transaction: %s", st->path,
			            sqlite3_errmsg(st->db));
	}
	store_schedule(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

uint64_t
store_txn_seq(const struct store *st)
{
	return st->txn_seq;
}

int
store_step_write(struct store *st, sqlite3_stmt *stmt)
{
	/* Never outside the group transaction: a write that committed on its
	 * own would not go with the rest of its turn (a message without its
	 * deliveries). */
	int rc = store_write_begin(st);
	if (rc != 0) {
		sqlite3_reset(stmt);
		return rc;
	}
	/* An injected fault fails the write as SQLite would: not run at all. */
	int fault = st->fault_fn ? st->fault_fn(st->fault_arg, sqlite3_sql(stmt)) : 0;
	if (fault != 0)
		rc = fault;
	else
		while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
			;
	st->stats.writes++;
	st->txn_writes++;
	if (rc != SQLITE_DONE) {
		store_error(st, "%s: write failed: %s: %s", st->path,
		            fault != 0 ? store_describe(rc) : sqlite3_errmsg(st->db),
		            sqlite3_sql(stmt));
		sqlite3_reset(stmt);
		store_check_lost(st, rc);
	} else
		sqlite3_reset(stmt);
	return rc;
}

int
store_exec(struct store *st, const char *sql, char **cause)
{
	int brc = store_write_begin(st);
	if (brc != 0) {
		if (cause != NULL)
			*cause = xasprintf("%s: cannot begin a transaction: %s", st->path,
			                   sqlite3_errstr(brc));
		return -1;
	}
	char *err = NULL;
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, &err);
	st->stats.writes++;
	if (rc != SQLITE_OK) {
		if (cause != NULL)
			*cause = xasprintf("%s: %s", st->path, err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
		store_check_lost(st, rc);
		return -1;
	}
	return 0;
}

void
store_before_commit(struct store *st, store_hook_fn fn, void *arg)
{
	st->hooks = xreallocarray(st->hooks, st->nhooks + 1, sizeof *st->hooks);
	st->hooks[st->nhooks].fn = fn;
	st->hooks[st->nhooks].arg = arg;
	st->nhooks++;
}

void
store_before_commit_remove(struct store *st, store_hook_fn fn, void *arg)
{
	for (size_t i = 0; i < st->nhooks; i++) {
		if (st->hooks[i].fn == fn && st->hooks[i].arg == arg) {
			memmove(&st->hooks[i], &st->hooks[i + 1],
			        (st->nhooks - i - 1) * sizeof *st->hooks);
			st->nhooks--;
			return;
		}
	}
}

void
store_after_commit(struct store *st, store_commit_fn fn, void *arg)
{
	if (st->ncbs == st->cbs_cap) {
		st->cbs_cap = st->cbs_cap ? st->cbs_cap * 2 : 16;
		st->cbs = xreallocarray(st->cbs, st->cbs_cap, sizeof *st->cbs);
	}
	st->cbs[st->ncbs].fn = fn;
	st->cbs[st->ncbs].arg = arg;
	st->ncbs++;
	store_schedule(st);
}

/* ---- queued writes ------------------------------------------------------ */

/* store_queue and store_queue_packed: a write of sql, or a row of pt. */
static int
store_queue_v(struct store *st, const char *sql, const struct packtab *pt, const char *types,
              va_list ap)
{
	int fault = st->fault_fn ? st->fault_fn(st->fault_arg, sql) : 0;
	if (fault != 0) {
		/* As store_step_write fails one: in the transaction, which
		 * goes with it. */
		if (store_write_begin(st) == 0) {
			st->stats.writes++;
			st->txn_writes++;
		}
		store_error(st, "%s: write failed: %s: %s", st->path, store_describe(fault), sql);
		store_check_lost(st, fault);
		return fault;
	}
	if (!st->in_txn) {
		st->in_txn = true; /* it begins where the queue runs */
		st->txn_seq++;
	}
	struct store_recs *q = &st->q;
	if (q->n == q->cap) {
		q->cap = q->cap ? q->cap * 2 : 256;
		q->v = xreallocarray(q->v, q->cap, sizeof *q->v);
	}
	struct store_rec *r = &q->v[q->n++];
	r->sql = sql;
	r->pt = pt;
	r->n = 0;
	for (const char *t = types; *t != '\0'; t++) {
		if (r->n == STORE_REC_VALS) {
			fprintf(stderr, "store_queue: more than %d values: %s\n", STORE_REC_VALS,
			        sql);
			abort(); /* a programming error */
		}
		int k = r->n++;
		r->type[k] = 'n';
		if (*t == 'i') {
			r->type[k] = 'i';
			r->iv[k] = va_arg(ap, int64_t);
		} else if (*t == 't' || *t == 'T') {
			const char *s = va_arg(ap, const char *);
			size_t len = *t == 'T' ? va_arg(ap, size_t) : s ? strlen(s) : 0;
			if (s == NULL)
				continue;
			if (q->tlen + len > q->tcap) {
				while (q->tlen + len > q->tcap)
					q->tcap = q->tcap ? q->tcap * 2 : 65536;
				q->text = xrealloc(q->text, q->tcap);
			}
			memcpy(q->text + q->tlen, s, len);
			r->type[k] = 't';
			r->iv[k] = (int64_t)q->tlen;
			r->len[k] = len;
			q->tlen += len;
		} else if (*t != 'n') {
			/* (an unknown letter would misread every value after it) */
			fprintf(stderr, "store_queue: bad type '%c': %s\n", *t, sql);
			abort(); /* a programming error */
		}
	}
	st->stats.writes++;
	st->txn_writes++;
	store_schedule(st);
	return 0;
}

int
store_queue(struct store *st, const char *sql, const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	int rc = store_queue_v(st, sql, NULL, types, ap);
	va_end(ap);
	return rc;
}

int
store_queue_packed(struct store *st, const struct packtab *pt, const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	int rc = store_queue_v(st, pt->op, pt, types, ap);
	va_end(ap);
	return rc;
}

void
store_write_soon(struct store *st)
{
	store_schedule(st);
}

/* The STORE_MULTI_ROWS-row form of sql, an "INSERT INTO t (...) VALUES
 * (?a, ?b, ...)" of nvals values: its group of values repeated, row j's
 * ?N renumbered N + j * nvals.  NULL for any other statement.  Each
 * queued statement pays SQLite's start and end (cursors, the statement
 * journal, halting: about a third of a row's cost); a run of queued
 * INSERTs of one literal pays them once per STORE_MULTI_ROWS rows. */
static const char *
store_multi_sql(struct store *st, const char *sql, int nvals)
{
	for (size_t i = 0; i < st->nmulti; i++)
		if (st->multi[i].sql == sql)
			return st->multi[i].multi[0] ? st->multi[i].multi : NULL;
	if (st->nmulti == STORE_MULTI_SLOTS)
		return NULL;
	const char *v = strstr(sql, " VALUES (");
	bool ok = strncmp(sql, "INSERT INTO ", 12) == 0 && v != NULL && nvals > 0;
	const char *group = ok ? v + 8 : NULL;
	/* Only placeholders in the group, and nothing after it. */
	for (const char *p = group ? group + 1 : NULL; ok && *p != ')'; p++)
		ok = *p == '?' || *p == ',' || *p == ' ' || (*p >= '0' && *p <= '9');
	ok = ok && strcmp(strchr(group, ')'), ")") == 0;
	struct buf b = {0};
	if (ok) {
		/* OR ROLLBACK: a statement of many rows that could fail halfway
		 * (ABORT, the default) keeps a journal of every page it changes,
		 * to undo its own rows; here a failed write takes the whole
		 * transaction with it anyway (store_recs_run), so SQLite may as
		 * well do that and keep none.  That journal was an eighth of the
		 * store thread's instructions. */
		buf_adds(&b, "INSERT OR ROLLBACK INTO ");
		buf_add(&b, sql + 12, (size_t)(group - sql) - 12);
		for (int j = 0; j < STORE_MULTI_ROWS; j++) {
			if (j > 0)
				buf_adds(&b, ", ");
			for (const char *p = group; *p != '\0';) {
				if (*p != '?') {
					buf_add(&b, p++, 1);
					continue;
				}
				char *end;
				long n = strtol(p + 1, &end, 10);
				buf_adds(&b, "?");
				buf_add_int(&b, n + (long)j * nvals);
				p = end;
			}
		}
	}
	st->multi[st->nmulti].sql = sql;
	st->multi[st->nmulti].multi = ok ? (char *)buf_cstr(&b) : xstrdup("");
	st->nmulti++; /* (one without a form is kept too: asked once) */
	return ok ? st->multi[st->nmulti - 1].multi : NULL;
}

/* Inserts a block of packed rows (keys first..last) with the block table's
 * INSERT s; returns sqlite3_step's code. */
static int
store_pack_insert(sqlite3_stmt *s, int64_t first, int64_t last, const char *blk, size_t len)
{
	sqlite3_bind_int64(s, 1, first);
	sqlite3_bind_int64(s, 2, last);
	sqlite3_bind_blob(s, 3, blk, (int)len, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc;
}

/* Packs the run of q's rows of one packed table that starts at q->v[i]
 * into blocks of at most STORE_PACK_ROWS rows (about STORE_PACK_BYTES
 * bytes) and inserts each: one row of the block table for them all.
 * Returns how many records it took; *rc is SQLITE_DONE, or why one
 * failed (*err). */
static size_t
store_pack_run(struct store *st, const struct store_recs *q, size_t i, int *rc, char **err)
{
	const struct packtab *pt = q->v[i].pt;
	size_t j = i;
	while (j < q->n && q->v[j].pt == pt) {
		int64_t first = 0, last = 0;
		st->pack_len = 0;
		bool oom = packtab_begin(&st->pack, &st->pack_len, &st->pack_cap, pt->ncols) != 0;
		for (size_t rows = 0; !oom && j < q->n && q->v[j].pt == pt &&
		                      rows < STORE_PACK_ROWS && st->pack_len < STORE_PACK_BYTES;
		     j++, rows++) {
			const struct store_rec *r = &q->v[j];
			struct packtab_val v[STORE_REC_VALS] = {0};
			for (int k = 0; k < r->n; k++) {
				if (r->type[k] == 'i') {
					v[k].type = PACKTAB_INT;
					v[k].i = r->iv[k];
				} else if (r->type[k] == 't') {
					v[k].type = PACKTAB_TEXT;
					v[k].s = q->text + r->iv[k];
					v[k].len = r->len[k];
				}
			}
			/* Keys only grow (the blocks are found by them). */
			if (r->n != pt->ncols || v[0].type != PACKTAB_INT ||
			    v[0].i <= st->pack_last) {
				*rc = SQLITE_CONSTRAINT;
				*err =
				    xasprintf("%s: write failed: key %lld after %lld, or not a row "
				              "of %d values: %s",
				              st->path, (long long)v[0].i, (long long)st->pack_last,
				              pt->ncols, r->sql);
				return j - i + 1;
			}
			st->pack_last = last = v[0].i;
			if (rows == 0)
				first = last;
			oom =
			    packtab_add_row(&st->pack, &st->pack_len, &st->pack_cap, v, r->n) != 0;
		}
		sqlite3_stmt *s = oom ? NULL : store_stmt_get(st, pt->insert, false);
		if (s == NULL) {
			*rc = oom ? SQLITE_NOMEM : SQLITE_ERROR;
			*err =
			    xasprintf("%s: write failed: %s: %s", st->path,
			              oom ? "out of memory" : sqlite3_errmsg(st->db), pt->insert);
			return j - i;
		}
		*rc = store_pack_insert(s, first, last, st->pack, st->pack_len);
		if (*rc != SQLITE_DONE) {
			*err = xasprintf("%s: write failed: %s: %s", st->path,
			                 sqlite3_errmsg(st->db), pt->insert);
			break;
		}
	}
	/* (A block of a megabyte is not kept for the next.) */
	if (st->pack_cap > 4 * STORE_PACK_BYTES) {
		free(st->pack);
		st->pack = NULL;
		st->pack_cap = 0;
	}
	return j - i;
}

/* Migration 10 -> 11: moves the rows of the old messages table into
 * blocks of message_blocks, then drops it (the virtual table of
 * packtab.h takes its name). */
static int
store_pack_messages(sqlite3 *db, char **errmsg)
{
	const struct packtab *pt = &packtab_messages;
	sqlite3_stmt *sel = NULL, *ins = NULL;
	int rc = sqlite3_prepare_v2(db,
	                            "SELECT id, ts_ms, sender, target, priority, mode, body, "
	                            "reply_to FROM main.messages ORDER BY id",
	                            -1, &sel, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, pt->insert, -1, &ins, NULL);
	char *blk = NULL;
	size_t len = 0, cap = 0, rows = 0;
	int64_t first = 0, last = 0;
	while (rc == SQLITE_OK) {
		int step = sqlite3_step(sel);
		if (step == SQLITE_ROW) {
			struct packtab_val v[PACKTAB_COLS_MAX] = {0};
			for (int k = 0; k < pt->ncols; k++) {
				int t = sqlite3_column_type(sel, k);
				if (t == SQLITE_INTEGER) {
					v[k].type = PACKTAB_INT;
					v[k].i = sqlite3_column_int64(sel, k);
				} else if (t != SQLITE_NULL) {
					v[k].type = PACKTAB_TEXT;
					v[k].s = (const char *)sqlite3_column_text(sel, k);
					v[k].len = (size_t)sqlite3_column_bytes(sel, k);
				}
			}
			last = v[0].i;
			if (rows++ == 0) {
				first = last;
				len = 0;
				rc = packtab_begin(&blk, &len, &cap, pt->ncols) ? SQLITE_NOMEM : rc;
			}
			if (rc == SQLITE_OK && packtab_add_row(&blk, &len, &cap, v, pt->ncols) != 0)
				rc = SQLITE_NOMEM;
		} else if (step != SQLITE_DONE) {
			rc = step;
		}
		if (rc == SQLITE_OK && rows > 0 &&
		    (step != SQLITE_ROW || rows == STORE_PACK_ROWS || len >= STORE_PACK_BYTES)) {
			rc = store_pack_insert(ins, first, last, blk, len) == SQLITE_DONE
			         ? SQLITE_OK
			         : sqlite3_errcode(db);
			rows = 0;
		}
		if (step != SQLITE_ROW)
			break;
	}
	sqlite3_finalize(sel);
	sqlite3_finalize(ins);
	free(blk);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "DROP TABLE main.messages", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		*errmsg = xstrdup(sqlite3_errmsg(db));
	return rc;
}

/* Binds record r's values from parameter first + 1 on. */
static void
store_rec_bind(sqlite3_stmt *s, const struct store_recs *q, const struct store_rec *r, int first)
{
	for (int k = 0; k < r->n; k++) {
		if (r->type[k] == 'i')
			sqlite3_bind_int64(s, first + k + 1, r->iv[k]);
		else if (r->type[k] == 't')
			sqlite3_bind_text(s, first + k + 1, r->len[k] ? q->text + r->iv[k] : "",
			                  (int)r->len[k], SQLITE_STATIC);
	}
}

/* Runs the queued writes q in order, in the open transaction (begun if
 * none is), and empties q.  On the loop or the store thread: reports
 * nothing itself.  Returns SQLITE_DONE, or the code one failed with and
 * *err. */
static int
store_recs_run(struct store *st, struct store_recs *q, char **err)
{
	int rc = SQLITE_DONE;
	if (q->n > 0 && sqlite3_get_autocommit(st->db)) {
		rc = store_run(st, "BEGIN IMMEDIATE");
		if (rc != SQLITE_DONE)
			*err = xasprintf("%s: cannot begin a transaction: %s", st->path,
			                 sqlite3_errmsg(st->db));
	}
	for (size_t i = 0, rows; i < q->n && rc == SQLITE_DONE; i += rows) {
		struct store_rec *r = &q->v[i];
		if (r->pt != NULL) {
			rows = store_pack_run(st, q, i, &rc, err);
			continue;
		}
		/* A run of STORE_MULTI_ROWS of one INSERT goes as one statement
		 * (the same rows, in the same order; if one fails, the
		 * transaction goes as it would have). */
		rows = 1;
		while (i + rows < q->n && rows < STORE_MULTI_ROWS && q->v[i + rows].sql == r->sql &&
		       q->v[i + rows].n == r->n && q->v[i + rows].pt == NULL)
			rows++;
		const char *multi =
		    rows == STORE_MULTI_ROWS ? store_multi_sql(st, r->sql, r->n) : NULL;
		if (multi == NULL)
			rows = 1;
		sqlite3_stmt *s = store_stmt_get(st, multi ? multi : r->sql, false);
		if (s == NULL) {
			rc = SQLITE_ERROR;
			*err = xasprintf("%s: cannot prepare \"%s\": %s", st->path, r->sql,
			                 sqlite3_errmsg(st->db));
			break;
		}
		for (size_t j = 0; j < rows; j++)
			store_rec_bind(s, q, &q->v[i + j], (int)j * r->n);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW)
			;
		if (rc != SQLITE_DONE)
			*err = xasprintf("%s: write failed: %s: %s", st->path,
			                 sqlite3_errmsg(st->db), r->sql);
		sqlite3_reset(s);
	}
	q->n = q->tlen = 0;
	return rc;
}

/* ---- commits: jobs, the store thread ----------------------------------- */

/* Takes the open transaction's work (queued writes, callbacks, whether to
 * commit) into a job; the next write begins a new transaction. */
static struct store_job *
store_job_take(struct store *st)
{
	struct store_job *j = xcalloc(1, sizeof *j);
	j->q = st->q;
	st->q = st->spare;
	memset(&st->spare, 0, sizeof st->spare);
	j->cbs = st->cbs;
	j->ncbs = st->ncbs;
	j->nlost = st->nlost;
	j->lost_rc = st->lost_rc;
	st->cbs = NULL;
	st->ncbs = st->cbs_cap = st->nlost = 0;
	j->rc = SQLITE_DONE;
	if (st->in_txn) {
		j->commit = true;
		j->doomed = st->doomed;
		j->commit_fault = st->fault_fn ? st->fault_fn(st->fault_arg, "commit") : 0;
	}
	st->in_txn = false;
	st->doomed = false;
	st->txn_writes = 0;
	return j;
}

static void
store_job_free(struct store *st, struct store_job *j)
{
	if (st->spare.v == NULL && st->spare.text == NULL && j->q.cap <= STORE_SPARE_RECS &&
	    j->q.tcap <= STORE_SPARE_TEXT) {
		st->spare = j->q;
		st->spare.n = st->spare.tlen = 0;
	} else {
		free(j->q.v);
		free(j->q.text);
	}
	free(j->cbs);
	free(j->err);
	free(j);
}

/* Runs a job's writes and COMMIT (ROLLBACK if any fails).  On the store
 * thread, or the loop when there is none: touches only the connection,
 * the statement cache and j. */
static void
store_job_run(struct store *st, struct store_job *j)
{
	if (!j->commit)
		return;
	if (j->doomed)
		j->rc = SQLITE_ABORT;
	else {
		j->rc = store_recs_run(st, &j->q, &j->err);
		j->write_failed = j->rc != SQLITE_DONE;
	}
	j->t0 = uv_hrtime();
	if (j->rc == SQLITE_DONE) {
		store_reset_busy(st);
		j->rc = j->commit_fault != 0 ? j->commit_fault : store_run(st, "COMMIT");
	}
	j->t1 = uv_hrtime();
	if (j->rc != SQLITE_DONE && !j->write_failed)
		j->err = xasprintf("%s: commit failed: %s (%s)", st->path, store_describe(j->rc),
		                   j->commit_fault != 0 || j->doomed ? sqlite3_errstr(j->rc)
		                                                     : sqlite3_errmsg(st->db));
	if (j->rc != SQLITE_DONE && !sqlite3_get_autocommit(st->db))
		store_run(st, "ROLLBACK");
	j->still_open = !sqlite3_get_autocommit(st->db);
}

/* On the loop, once j ran: the statistics, the state, the error report;
 * its callbacks wait in the done list for store_finish. */
static void
store_reap(struct store *st, struct store_job *j)
{
	if (j->commit) {
		st->last_commit_ns = j->t1;
		if (j->rc == SQLITE_DONE) {
			double ms = (double)(j->t1 - j->t0) / 1e6;
			st->stats.commits++;
			st->stats.last_commit_ms = ms;
			if (ms > st->stats.max_commit_ms)
				st->stats.max_commit_ms = ms;
			st->state = "ok";
			st->failing = false;
		} else {
			st->stats.commit_failures++;
			st->state = store_describe(j->rc);
			st->failing = true;
			if (j->still_open) {
				/* Even ROLLBACK failed: whatever joins that
				 * transaction is rolled back with it at the
				 * next commit point, never committed. */
				if (!st->in_txn) {
					st->in_txn = true;
					st->txn_seq++;
				}
				st->doomed = true;
				store_schedule(st);
			}
			/* A commit point armed before the failure was known
			 * moves to the retry timer too. */
			if (st->scheduled) {
				store_unschedule(st);
				store_schedule(st);
			}
			/* (The error callback may close the store: under busy,
			 * the close waits for the end of store_finish.) */
			st->busy++;
			if (j->write_failed) {
				store_error(st, "%s", j->err);
				free(j->err);
				j->err = xasprintf("%s: transaction rolled back: %s", st->path,
				                   store_describe(j->rc));
			}
			if (st->error_fn != NULL)
				st->error_fn(st->error_arg, j->err);
			st->busy--;
		}
	}
	if (st->done_tail != NULL)
		st->done_tail->next = j;
	else
		st->done_head = j;
	st->done_tail = j;
}

/* Waits for the job in flight, if any, and reaps it: the loop may use the
 * connection again. */
static void
store_wait(struct store *st)
{
	struct store_job *j = st->inflight;
	if (j == NULL)
		return;
	pthread_mutex_lock(&st->mu);
	while (!st->work_done)
		pthread_cond_wait(&st->cv, &st->mu);
	st->work_done = false;
	pthread_mutex_unlock(&st->mu);
	st->inflight = NULL;
	store_reap(st, j);
}

/* Before the loop uses the connection: the store thread is done and the
 * queued writes have run, in the open transaction. */
static void
store_sync(struct store *st)
{
	store_wait(st);
	if (st->q.n == 0)
		return;
	char *err = NULL;
	int rc = store_recs_run(st, &st->q, &err);
	if (rc != SQLITE_DONE) {
		store_error(st, "%s", err);
		free(err);
		store_abort_txn(st, rc);
	}
}

/* Runs the callbacks of the jobs that ran, in order.  Returns true if one
 * closed the store (st is gone). */
static bool
store_finish(struct store *st)
{
	st->busy++;
	while (st->done_head != NULL) {
		struct store_job *j = st->done_head;
		st->done_head = j->next;
		if (st->done_head == NULL)
			st->done_tail = NULL;
		bool failed = j->rc != SQLITE_DONE;
		for (size_t i = 0; i < j->ncbs; i++)
			j->cbs[i].fn(j->cbs[i].arg, i < j->nlost || failed ? -1 : 0);
		store_job_free(st, j);
	}
	if (--st->busy == 0 && st->close_pending && !st->closing) {
		store_do_close(st);
		return true;
	}
	return false;
}

static void
store_hooks_run(struct store *st)
{
	/* Deferred writes join this transaction (they may open it). */
	for (size_t i = 0; i < st->nhooks; i++)
		st->hooks[i].fn(st->hooks[i].arg);
}

/* The commit point with a store thread: the transaction's work goes to it,
 * and the loop goes on; store_async_cb runs the callbacks (store_finish). */
static void
store_commit_handoff(struct store *st)
{
	store_hooks_run(st);
	store_unschedule(st);
	if (!st->in_txn) {
		/* Nothing to commit: callbacks only (the caller runs them). */
		if (st->ncbs > 0 || st->nlost > 0)
			store_reap(st, store_job_take(st));
		return;
	}
	struct store_job *j = store_job_take(st);
	st->inflight = j;
	uv_ref((uv_handle_t *)&st->async); /* the loop runs until its callbacks have */
	pthread_mutex_lock(&st->mu);
	st->work = j;
	st->work_done = false;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
}

static void *
store_thread_main(void *arg)
{
	struct store *st = arg;
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (st->work == NULL && !st->quit)
			pthread_cond_wait(&st->cv, &st->mu);
		if (st->work == NULL)
			break;
		struct store_job *j = st->work;
		pthread_mutex_unlock(&st->mu);
		store_job_run(st, j);
		pthread_mutex_lock(&st->mu);
		st->work = NULL;
		st->work_done = true;
		pthread_cond_broadcast(&st->cv);
		uv_async_send(&st->async);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* The store thread finished a job (maybe reaped already by store_wait). */
static void
store_async_cb(uv_async_t *h)
{
	store_collect(h->data);
}

/* Whether the job in flight is done (then store_wait will not block). */
static bool
store_job_done(struct store *st)
{
	pthread_mutex_lock(&st->mu);
	bool done = st->work_done;
	pthread_mutex_unlock(&st->mu);
	return done;
}

/* Reaps the job in flight if it is done, hands the next off if a commit
 * point waited for it, and runs the callbacks: on the thread's signal, or
 * sooner (store_progress).  Returns true if a callback closed the store
 * (st is gone). */
static bool
store_collect(struct store *st)
{
	if (st->inflight != NULL && store_job_done(st))
		store_wait(st);
	if (st->inflight == NULL && st->want_commit && !st->closing) {
		/* The commit point that waited (the wait was its batching)
		 * goes first, so that the thread works while the loop runs the
		 * callbacks; they still run in order (store_finish).  Unless
		 * the job failed: then the next one waits STORE_RETRY_MS as
		 * on the loop (a full disk must not spin it). */
		st->want_commit = false;
		if (st->failing)
			store_schedule(st);
		else
			store_commit_handoff(st);
	}
	if (store_finish(st))
		return true;
	if (st->inflight == NULL)
		uv_unref((uv_handle_t *)&st->async);
	return false;
}

void
store_progress(struct store *st)
{
	if (st == NULL || !st->threaded || st->failing || st->closing || st->commit_interval_ms > 0)
		return;
	/* A job done while the loop read: its senders hear `sent` now, and
	 * the next job starts, instead of at the loop's next poll (a read of
	 * many lines takes a while, and a sender's window waits on it). */
	if (st->inflight != NULL && st->busy == 0 && store_job_done(st) && store_collect(st))
		return; /* (busy: input fed by a callback itself: they stay in order) */
	if (st->inflight != NULL || st->q.n < STORE_HANDOFF_MIN || st->failing || st->closing)
		return;
	store_commit_handoff(st);
}

/* Commits the open transaction (if any) here and now, then runs the
 * pending after-commit callbacks.  Returns 0, or -1 with *cause set (if
 * cause is not NULL; the caller frees it).  *closed is set if a callback
 * closed the store: st is then gone. */
static int
store_commit_now(struct store *st, char **cause, bool *closed)
{
	store_wait(st);
	store_hooks_run(st);
	store_unschedule(st);
	st->want_commit = false;
	struct store_job *j = store_job_take(st);
	store_job_run(st, j);
	store_reap(st, j);
	int status = 0;
	if (j->rc != SQLITE_DONE) {
		status = -1;
		if (cause != NULL)
			*cause = xstrdup(j->err);
	} else if (j->nlost > 0) {
		status = -1;
		if (cause != NULL)
			*cause = xasprintf("%s: transaction rolled back: %s", st->path,
			                   store_describe(j->lost_rc));
	}
	*closed = store_finish(st);
	return status;
}

int
store_flush(struct store *st, char **cause)
{
	if (cause != NULL)
		*cause = NULL;
	bool closed;
	/* Not a loop commit point: it does not make the loop's next one
	 * think the store is under load. */
	store_wait(st);
	uint64_t last = st->last_commit_ns;
	int rc = store_commit_now(st, cause, &closed);
	if (!closed)
		st->last_commit_ns = last;
	return rc;
}

bool
store_pending(const struct store *st)
{
	return st->in_txn;
}

/* Frees the store once its handles are closed. */
static void
store_handle_closed(uv_handle_t *h)
{
	struct store *st = h->data;
	if (--st->open_handles == 0)
		free(st);
}

/* Commits what is pending (callbacks may write again: a few rounds),
 * finalises the statements, closes the database and the handles; frees st
 * now (no loop) or from the last close callback. */
static void
store_do_close(struct store *st)
{
	bool closed;
	st->closing = true;
	store_wait(st);
	store_finish(st);
	for (int i = 0; i < 8 && (st->in_txn || st->ncbs > 0); i++)
		store_commit_now(st, NULL, &closed);
	if (st->threaded) {
		pthread_mutex_lock(&st->mu);
		st->quit = true;
		pthread_cond_broadcast(&st->cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->thread, NULL);
		pthread_cond_destroy(&st->cv);
		pthread_mutex_destroy(&st->mu);
	}
	store_sync(st); /* (queued writes after the last round) */
	if (st->in_txn && st->doomed)
		store_run(st, "ROLLBACK");
	else if (st->in_txn && store_run(st, "COMMIT") != SQLITE_DONE)
		store_error(st, "%s: final commit failed: %s", st->path, sqlite3_errmsg(st->db));
	for (size_t i = 0; i < st->ncbs; i++)
		st->cbs[i].fn(st->cbs[i].arg, -1);
	for (size_t i = 0; i < st->stmt_cap; i++) {
		struct stmt_entry *e = &st->stmts[i];
		if (e->sql != NULL) {
			sqlite3_finalize(e->stmt);
			free(e->sql);
		}
	}
	free(st->stmts);
	st->stmts = NULL;
	memset(st->by_addr, 0, sizeof st->by_addr);
	for (size_t i = 0; i < st->nmulti; i++)
		free(st->multi[i].multi);
	st->nmulti = 0;
	st->stmt_cap = st->nstmts = 0;
	for (sqlite3_stmt *s = sqlite3_next_stmt(st->db, NULL); s != NULL;
	     s = sqlite3_next_stmt(st->db, s))
		if (!packtab_owns(s)) { /* (those go with the connection) */
			store_error(st, "%s: closed with statements not finalised: %s", st->path,
			            sqlite3_sql(s));
			break;
		}
	checkpointer_stop(st->ckpt);
	st->ckpt = NULL;
	sqlite3_close_v2(st->db);
	st->db = NULL;
	free(st->cbs);
	free(st->hooks);
	free(st->path);
	free(st->q.v);
	free(st->q.text);
	free(st->spare.v);
	free(st->spare.text);
	free(st->pack);
	if (st->loop == NULL) {
		free(st);
		return;
	}
	store_unschedule(st);
	st->open_handles = st->threaded ? 4 : 3;
	uv_close((uv_handle_t *)&st->check, store_handle_closed);
	uv_close((uv_handle_t *)&st->idle, store_handle_closed);
	uv_close((uv_handle_t *)&st->timer, store_handle_closed);
	if (st->threaded)
		uv_close((uv_handle_t *)&st->async, store_handle_closed);
}

void
store_close(struct store *st)
{
	if (st == NULL || st->closing || st->close_pending)
		return;
	if (st->busy > 0) {
		/* Called from an after-commit callback: finish after it. */
		st->close_pending = true;
		return;
	}
	store_do_close(st);
}

sqlite3 *
store_db(struct store *st)
{
	store_sync(st);
	return st->db;
}

int
store_schema_version(struct store *st)
{
	return st->version;
}

int64_t
store_size_bytes(struct store *st, int64_t *wal_bytes)
{
	int64_t wal_size = 0;
	store_sync(st);
	int64_t pages = store_query_int(st, "PRAGMA page_count");
	int64_t size = store_query_int(st, "PRAGMA page_size");
	int64_t total = pages > 0 && size > 0 ? pages * size : 0;
	if (strcmp(st->path, ":memory:") != 0 && st->path[0] != '\0') {
		char *wal = xasprintf("%s-wal", st->path);
		struct stat sb;
		if (stat(wal, &sb) == 0)
			wal_size = (int64_t)sb.st_size;
		free(wal);
	}
	if (wal_bytes != NULL)
		*wal_bytes = wal_size;
	return total + wal_size;
}

const char *
store_state(const struct store *st)
{
	return st->state;
}

void
store_stats(const struct store *st, struct store_stats *out)
{
	*out = st->stats;
	if (st->ckpt != NULL) {
		struct checkpointer_stats cs;
		checkpointer_stats(st->ckpt, &cs);
		out->checkpoints = cs.runs + cs.forced;
		out->wal_pages = cs.last_pages;
	}
}

void
store_set_error_cb(struct store *st, store_error_fn fn, void *arg)
{
	st->error_fn = fn;
	st->error_arg = arg;
}

void
store_set_fault_hook(struct store *st, store_fault_fn fn, void *arg)
{
	st->fault_fn = fn;
	st->fault_arg = arg;
}

/* Runs sql outside the group transaction (setup and migrations).  Returns
 * the SQLite code; on failure *cause is "PATH: what: error" (caller frees). */
static int
store_setup_exec(struct store *st, const char *sql, const char *what, char **cause)
{
	char *err = NULL;
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		*cause = xasprintf("%s: %s: %s", st->path, what, err ? err : sqlite3_errstr(rc));
	sqlite3_free(err);
	return rc;
}

/* Applies the migrations from st->version up to the latest, each in its own
 * transaction.  Returns 0, or -1 with *cause set. */
static int
store_migrate(struct store *st, char **cause)
{
	int latest = store_schema_latest();
	while (st->version < latest) {
		int v = st->version;
		const struct store_migration *m = &store_migrations[v];
		char what[64];
		snprintf(what, sizeof what, "migration to schema version %d failed", v + 1);
		if (store_setup_exec(st, "BEGIN IMMEDIATE", what, cause) != SQLITE_OK)
			return -1;
		int rc = SQLITE_OK;
		if (m->sql != NULL)
			rc = store_setup_exec(st, m->sql, what, cause);
		if (rc == SQLITE_OK && m->fn != NULL) {
			char *err = NULL;
			rc = m->fn(st->db, &err);
			if (rc != SQLITE_OK)
				*cause = xasprintf("%s: %s: %s", st->path, what,
				                   err ? err : sqlite3_errstr(rc));
			free(err);
		}
		if (rc == SQLITE_OK) {
			char sql[64];
			snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
			rc = store_setup_exec(st, sql, what, cause);
		}
		if (rc == SQLITE_OK)
			rc = store_setup_exec(st, "COMMIT", what, cause);
		if (rc != SQLITE_OK) {
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
		st->version = v + 1;
	}
	return 0;
}

/* Opens the connection and configures it.  Returns 0, or -1 with *cause. */
static int
store_connect(struct store *st, char **cause)
{
	bool file = strcmp(st->path, ":memory:") != 0 && st->path[0] != '\0';
	if (file) {
		/* Create it ourselves so that it is 0600 (the WAL and shm
		 * files take the database file's mode). */
		int fd = open(st->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd == -1) {
			*cause =
			    xasprintf("%s: cannot open database: %s", st->path, strerror(errno));
			return -1;
		}
		close(fd);
	}
	/* Memory statistics take a global mutex on every SQLite allocation;
	 * nothing here reads them.  Only possible before SQLite initialises
	 * (the first open), so later calls fail harmlessly. */
	static bool configured;
	if (!configured) {
		configured = true;
		(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	}
	int rc =
	    sqlite3_open_v2(st->path, &st->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		*cause = xasprintf("%s: cannot open database: %s", st->path,
		                   st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		return -1;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
	rc = packtab_register(st->db);
	if (rc != SQLITE_OK) {
		*cause = xasprintf("%s: cannot register the packed tables: %s", st->path,
		                   sqlite3_errstr(rc));
		return -1;
	}

	/* The first read of the file: this is where a file that is not a
	 * database shows up. */
	sqlite3_stmt *stmt;
	rc = sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &stmt, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(stmt);
		if (rc == SQLITE_ROW) {
			st->version = sqlite3_column_int(stmt, 0);
			rc = SQLITE_OK;
		}
		sqlite3_finalize(stmt);
	}
	if (rc != SQLITE_OK) {
		if ((rc & 0xff) == SQLITE_NOTADB)
			*cause = xasprintf("%s: not a SQLite database", st->path);
		else
			*cause = xasprintf("%s: cannot read database: %s", st->path,
			                   sqlite3_errmsg(st->db));
		return -1;
	}
	if (st->version > store_schema_latest()) {
		*cause = xasprintf("%s: database schema version %d is newer than this dreamos "
		                   "supports (%d); upgrade dreamos",
		                   st->path, st->version, store_schema_latest());
		return -1;
	}

	/* A new database gets 16 KiB pages (a file that has tables keeps
	 * its own): a bus message is a few hundred bytes, and four times
	 * fewer pages mean four times fewer page writes for the checkpoints
	 * and B-tree splits for the store thread.  Under a message flood the
	 * checkpointer's CPU per message fell from 0.55-0.80 to 0.25-0.45 us
	 * and the store thread's from 1.15-1.30 to 0.95-1.15 us
	 * (PERFORMANCE.md, "16 KiB pages").  It must come before WAL mode. */
	if (file && st->version == 0) {
		rc = store_setup_exec(st, "PRAGMA page_size = 16384", "cannot set the page size",
		                      cause);
		if (rc != SQLITE_OK)
			return -1;
	}
	if (file) {
		rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
		if (rc == SQLITE_OK) {
			rc = sqlite3_step(stmt);
			if (rc == SQLITE_ROW) {
				const char *mode = (const char *)sqlite3_column_text(stmt, 0);
				rc = mode != NULL && strcmp(mode, "wal") == 0 ? SQLITE_OK
				                                              : SQLITE_ERROR;
			}
			sqlite3_finalize(stmt);
		}
		if (rc != SQLITE_OK) {
			*cause = xasprintf("%s: cannot switch to WAL mode: %s", st->path,
			                   sqlite3_errmsg(st->db));
			return -1;
		}
	}
	char *setup = xasprintf("PRAGMA synchronous = %s;"
	                        "PRAGMA foreign_keys = ON;"
	                        "PRAGMA cache_size = -%d;"
	                        "PRAGMA temp_store = MEMORY;"
	                        "PRAGMA journal_size_limit = %d;",
	                        st->durability == STORE_STRICT ? "FULL" : "NORMAL", STORE_CACHE_KIB,
	                        STORE_WAL_LIMIT);
	rc = store_setup_exec(st, setup, "cannot configure the database", cause);
	free(setup);
	return rc == SQLITE_OK ? 0 : -1;
}

/* With the store thread, the WAL is checkpointed on a thread of its own
 * (checkpointer.h), or with store.durability strict by the writer in the
 * commit that takes it past 4 MiB; without the store thread (or if the
 * checkpointer cannot start), by SQLite in the commit that crosses 1,000
 * pages. */
static void
store_start_checkpointer(struct store *st)
{
	if (strcmp(st->path, ":memory:") == 0 || st->path[0] == '\0')
		return;
	char *cause = NULL;
	st->ckpt = checkpointer_start(st->db, st->path, st->durability != STORE_STRICT, &cause);
	free(cause); /* (automatic checkpoints go on: nothing is lost) */
}

int
store_open(struct store **out, uv_loop_t *loop, const struct store_opts *opts, char **cause)
{
	*out = NULL;
	struct store *st = xcalloc(1, sizeof *st);
	st->path = xstrdup(opts->path ? opts->path : ":memory:");
	st->loop = loop;
	st->durability = opts->durability;
	st->commit_interval_ms = opts->commit_interval_ms;
	st->adaptive = opts->adaptive;
	st->busy_ns = (uint64_t)(opts->busy_us ? opts->busy_us : STORE_BUSY_US) * 1000u;
	st->state = "ok";

	if (store_connect(st, cause) != 0 || store_migrate(st, cause) != 0) {
		sqlite3_close_v2(st->db);
		free(st->path);
		free(st);
		return -1;
	}
	/* Packed keys go on from the newest stored (-1: none). */
	int64_t last = store_query_int(st, packtab_messages.last_key);
	st->pack_last = last > 0 ? last : 0;
	if (loop != NULL) {
		uv_check_init(loop, &st->check);
		uv_idle_init(loop, &st->idle);
		uv_timer_init(loop, &st->timer);
		st->check.data = st->idle.data = st->timer.data = st;
	}
	/* (A SQLite built single-threaded must not be used from two threads,
	 * even in turn; without the thread, commits run on the loop.) */
	if (loop != NULL && opts->threaded && sqlite3_threadsafe() != 0) {
		pthread_mutex_init(&st->mu, NULL);
		pthread_cond_init(&st->cv, NULL);
		/* The thread sends nothing before it is handed a job. */
		st->threaded = pthread_create(&st->thread, NULL, store_thread_main, st) == 0;
		if (st->threaded) {
			pthread_setname_np(st->thread, "dreamos-store"); /* (top -H, perf) */
			store_start_checkpointer(st);
			uv_async_init(loop, &st->async, store_async_cb);
			st->async.data = st;
			uv_unref((uv_handle_t *)&st->async);
		} else {
			pthread_cond_destroy(&st->cv);
			pthread_mutex_destroy(&st->mu);
		}
	}
	*out = st;
	return 0;
}

/* Key-value state. */

/* (One literal for both: statements are cached by the SQL's address.) */
static const char kv_upsert_sql[] = "INSERT INTO kv (ns, key, value, updated_ms) "
                                    "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (ns, key) "
                                    "DO UPDATE SET value = ?3, updated_ms = ?4";

int
store_kv_queue(struct store *st, const char *ns, const char *key, const char *value)
{
	return store_queue(st, kv_upsert_sql, "ttti", ns, key, value, time_wall_ms());
}

int
store_kv_set(struct store *st, const char *ns, const char *key, const char *value)
{
	sqlite3_stmt *stmt = store_stmt(st, kv_upsert_sql);
	if (stmt == NULL)
		return -1;
	sqlite3_bind_text(stmt, 1, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 4, time_wall_ms());
	return store_step_write(st, stmt) == SQLITE_DONE ? 0 : -1;
}

char *
store_kv_get(struct store *st, const char *ns, const char *key)
{
	sqlite3_stmt *stmt = store_stmt(st, "SELECT value FROM kv WHERE ns = ?1 AND key = ?2");
	if (stmt == NULL)
		return NULL;
	sqlite3_bind_text(stmt, 1, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
	char *value = NULL;
	if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL)
		value = xstrdup((const char *)sqlite3_column_text(stmt, 0));
	sqlite3_reset(stmt);
	return value;
}

int
store_kv_del(struct store *st, const char *ns, const char *key)
{
	sqlite3_stmt *stmt = store_stmt(st, "DELETE FROM kv WHERE ns = ?1 AND key = ?2");
	if (stmt == NULL)
		return -1;
	sqlite3_bind_text(stmt, 1, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
	return store_step_write(st, stmt) == SQLITE_DONE ? 0 : -1;
}
