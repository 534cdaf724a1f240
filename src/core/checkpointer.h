/* checkpointer.h — WAL checkpoints on a thread of their own (or, with
 * store.durability strict, by the writer at a bound of its own: below).
 *
 * SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
 * past 1,000 pages: it copies those pages into the database and fsyncs it,
 * and the writer (the store thread, under a message flood) waits.  That was
 * a fifth of the store thread's time.  Here a WAL hook on the writer's
 * connection asks a second thread, with a connection of its own, for a
 * PASSIVE checkpoint instead (one never blocks a writer), and the writer
 * goes on.  Under a steady flow the WAL is never wholly copied at the moment
 * a transaction begins, so SQLite cannot start it over from the beginning
 * and it would grow: at CHECKPOINTER_CAP_PAGES the writer checkpoints
 * itself (after the thread's run, if one is going), which copies the rest
 * while nothing is written, and the next transaction starts the WAL over. */
#ifndef DREAMOS_CHECKPOINTER_H
#define DREAMOS_CHECKPOINTER_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

/* WAL pages that ask the thread for a checkpoint (SQLite's default). */
#define CHECKPOINTER_PAGES 1000
/* WAL pages at which the writer checkpoints itself. */
#define CHECKPOINTER_CAP_PAGES 4000
/* Without the thread: WAL bytes at which the writer checkpoints itself. */
#define CHECKPOINTER_INLINE_BYTES (4 * 1024 * 1024)

struct checkpointer;

/* Installs the WAL hook on db (the writer's connection), which replaces
 * SQLite's automatic checkpoints.  threaded: opens a second connection to
 * path and starts the thread, as above.  Else the writer checkpoints
 * itself in the commit that takes the WAL past CHECKPOINTER_INLINE_BYTES,
 * as SQLite's automatic checkpoint would, counted in the statistics: for
 * store.durability strict, where every commit waits for an fsync and a
 * checkpoint's fsyncs on another thread made those waits longer (the task
 * cycle ran at 18,000-22,000 cycles/s with the thread, 27,000-37,000
 * without).  Returns NULL with *cause set (caller frees) if it cannot: db
 * keeps its automatic checkpoints. */
struct checkpointer *checkpointer_start(sqlite3 *db, const char *path, bool threaded, char **cause);
/* Stops the thread (after its run), closes its connection and gives db its
 * automatic checkpoints back.  Call before closing db. */
void checkpointer_stop(struct checkpointer *c);

struct checkpointer_stats {
	uint64_t runs;   /* checkpoints the thread ran */
	uint64_t forced; /* ... the writer ran itself (at the cap, or all of them unthreaded) */
	int last_pages;  /* the WAL's size, in pages, at the last commit */
};
/* A snapshot (from any thread). */
void checkpointer_stats(struct checkpointer *c, struct checkpointer_stats *out);

#endif
