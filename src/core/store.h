/* store.h — the SQLite store: WAL mode, versioned schema with ordered
 * migrations, cached prepared statements, and group commit.
 *
 * Group commit: the first write of a loop turn opens a transaction; every
 * write of that turn joins it; it is committed at the end of the turn (or
 * after commit_interval_ms), and only then do the after-commit callbacks run.
 * That is how the bus answers `sent` only once a message is durable, while
 * paying one commit for a whole burst of messages.  After a failed commit
 * (disk full...), the next commit point comes after a short delay instead
 * of at the end of the turn, until a commit succeeds again.
 *
 * The store thread (opts.threaded): COMMIT, and the writes queued with
 * store_queue, run on a second thread while the loop goes on with the next
 * turn; the after-commit callbacks still run on the loop, after the commit.
 * Whatever the loop itself does with the database (store_stmt, a write, a
 * read) first waits for that thread and runs the queued writes, so it sees
 * every write made before it, as without the thread. */
#ifndef DREAMOS_STORE_H
#define DREAMOS_STORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

enum store_durability {
	STORE_NORMAL, /* synchronous=NORMAL: survives a crash of dreamos */
	STORE_STRICT, /* synchronous=FULL: fsync before every answer; survives power loss */
};

struct store_opts {
	const char *path; /* database file; ":memory:" works for tests */
	enum store_durability durability;
	unsigned commit_interval_ms; /* 0: commit at the end of each loop turn */
	bool adaptive;               /* with 0: under load, let a few turns share a commit */
	unsigned busy_us;            /* commits closer than this are "under load"; 0: 500 */
	bool threaded;               /* with a loop: commit on the store thread */
};

struct store;

/* The schema version this build writes. */
int store_schema_latest(void);

/* Opens (creating if needed) the database and migrates it to the latest
 * schema.  loop may be NULL: then writes are committed by store_flush only.
 * A database from a newer Dream.OS is refused.  Returns 0, or -1 with *cause
 * set (caller frees). */
int store_open(struct store **out, uv_loop_t *loop, const struct store_opts *opts, char **cause);
/* Commits what is pending, finalises statements, closes the database. The
 * uv handles are closed; run the loop once more to release them. */
void store_close(struct store *st);

sqlite3 *store_db(struct store *st);
int store_schema_version(struct store *st);

/* Returns the prepared statement for sql, compiled once and cached, reset
 * and with bindings cleared.  NULL on a compile error (a programming error;
 * logged through the error callback).  sql must be a string literal (it is
 * cached by its address too); SQL built at run time goes to
 * store_stmt_text, cached by its text only. */
sqlite3_stmt *store_stmt(struct store *st, const char *sql);
sqlite3_stmt *store_stmt_text(struct store *st, const char *sql);

/* Opens the group transaction if none is open and schedules its commit.
 * Call before a write statement.  Returns 0, or the SQLite code BEGIN
 * failed with (then do not write: it would commit on its own). */
int store_write_begin(struct store *st);
/* Rolls the open transaction back now: a write that the rest of it must
 * not commit without has failed (rc says why).  Whatever waits for its
 * commit is told it failed (-1). */
void store_abort_txn(struct store *st, int rc);
/* Counts the transactions begun: writes made under one value went into one
 * transaction (it changes when SQLite rolled one back and a new one began). */
uint64_t store_txn_seq(const struct store *st);
/* store_write_begin, then steps stmt to completion and resets it.  Returns
 * the SQLite result code (SQLITE_DONE on success). */
int store_step_write(struct store *st, sqlite3_stmt *stmt);
/* Runs one or more SQL statements as writes in the group transaction.
 * Returns 0 or -1 with *cause set. */
int store_exec(struct store *st, const char *sql, char **cause);
/* Queues a write of the group transaction: sql (a string literal, cached
 * like store_stmt's) with its parameters ?1, ?2... in the order of types,
 * one letter each: 'i' an int64_t, 't' a NUL-terminated string, 'T' a
 * string and its length (size_t), 'n' NULL.  Strings are copied.  Queued
 * writes run in order at the commit point, on the store thread if there is
 * one, or before any other use of the database.  Returns 0, or the SQLite
 * code an injected fault fails it with (as store_step_write's).  One that
 * fails when it runs takes its whole transaction: every callback of it
 * gets -1, as when the COMMIT fails. */
int store_queue(struct store *st, const char *sql, const char *types, ...);
struct packtab;
/* store_queue of a row of the packed table pt (packtab.h): its values in
 * column order, the key first.  A run of them queued together is written
 * as one block (a row of pt->blocks); a key not above every key packed
 * before fails the write (as a duplicate primary key would). */
int store_queue_packed(struct store *st, const struct packtab *pt, const char *types, ...);
/* A commit point will come: for writes an owner defers to a
 * store_before_commit hook.  Touches no database (does not wait for the
 * store thread). */
void store_write_soon(struct store *st);

typedef void (*store_commit_fn)(void *arg, int status);
/* Calls fn(arg, 0) once the current group transaction is committed, or
 * fn(arg, -1) if the commit failed.  With no write pending, it still runs
 * after the next commit point (the end of this loop turn). */
void store_after_commit(struct store *st, store_commit_fn fn, void *arg);
typedef void (*store_hook_fn)(void *arg);
/* Calls fn(arg) at every commit point (and store_flush), inside the
 * transaction and before COMMIT: for writes its owner deferred so that
 * several changes to one row in a transaction cost one statement.  The
 * owner calls store_write_soon when it defers one (so that a commit point
 * comes) and removes the hook before it goes away. */
void store_before_commit(struct store *st, store_hook_fn fn, void *arg);
void store_before_commit_remove(struct store *st, store_hook_fn fn, void *arg);
/* Commits the open transaction now and runs the callbacks.  Returns 0, or
 * -1 with *cause set (cause may be NULL). */
int store_flush(struct store *st, char **cause);
/* True while a group transaction is open. */
bool store_pending(const struct store *st);
/* After a piece of agent input (a read, a WebSocket message): if the job
 * in flight is done, reaps it and runs its after-commit callbacks now
 * rather than at the loop's next poll (not from inside a callback); then,
 * with the store thread idle and enough writes queued, hands them to it
 * now instead of at the end of the loop turn, so that it commits them
 * while the loop reads on (and their senders hear `sent` sooner). */
void store_progress(struct store *st);

/* Size of the database and its WAL in bytes; *wal_bytes (if not NULL):
 * the WAL's part. */
int64_t store_size_bytes(struct store *st, int64_t *wal_bytes);
/* "ok", or a short description of the last failure ("disk full"). */
const char *store_state(const struct store *st);

struct store_stats {
	uint64_t commits;
	uint64_t commit_failures;
	uint64_t writes;
	double last_commit_ms;
	double max_commit_ms;
	uint64_t checkpoints; /* WAL checkpoints counted by checkpointer.h (0 without one) */
	int wal_pages;        /* the WAL's size in pages at the last commit (0: not known) */
};
void store_stats(const struct store *st, struct store_stats *out);

/* Called (if set) with a one-line message whenever a commit or statement
 * fails, so the orchestrator can log it without store.c depending on log.c. */
typedef void (*store_error_fn)(void *arg, const char *msg);
void store_set_error_cb(struct store *st, store_error_fn fn, void *arg);

/* Fault injection, like beanstalkd's falloc hook: when set, fn is asked
 * before each commit (op "commit") and each write (op: its SQL), and a
 * non-zero SQLite code it returns makes that fail with the code (e.g.
 * SQLITE_FULL), a write as SQLite fails one.  For tests and `chaos`. */
typedef int (*store_fault_fn)(void *arg, const char *op);
void store_set_fault_hook(struct store *st, store_fault_fn fn, void *arg);

/* Key-value state in the kv table (namespaced: extensions use their name).
 * kv_get returns a malloc'd string or NULL. */
int store_kv_set(struct store *st, const char *ns, const char *key, const char *value);
/* store_kv_set as a queued write (store_queue): the loop does not wait for
 * the store thread; store_kv_get sees it all the same. */
int store_kv_queue(struct store *st, const char *ns, const char *key, const char *value);
char *store_kv_get(struct store *st, const char *ns, const char *key);
int store_kv_del(struct store *st, const char *ns, const char *key);

#endif
