/* checkpointer.c — WAL checkpoints on a thread of their own (see
 * checkpointer.h). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "checkpointer.h"
#include "util.h"

struct checkpointer {
	sqlite3 *writer; /* the hooked connection (not ours) */
	bool threaded;   /* a thread of our own; else the writer checkpoints */
	int cap;         /* WAL pages at which the writer checkpoints itself */
	sqlite3 *db;     /* the thread's own connection */
	pthread_t thread;
	/* mu guards want, quit and the statistics. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool want, quit;
	/* Held for the length of a checkpoint: the thread's, or the writer's
	 * at the cap (which so waits for the thread's to end). */
	pthread_mutex_t run;
	struct checkpointer_stats st;
};

/* The WAL hook: after every commit on the writer's connection, on the
 * thread that committed. */
static int
on_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct checkpointer *c = arg;
	int cap = c->cap;
	if (pages >= cap) {
		pthread_mutex_lock(&c->run);
		(void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_unlock(&c->run);
	}
	pthread_mutex_lock(&c->mu);
	c->st.last_pages = pages;
	if (pages >= cap) {
		c->st.forced++;
	} else if (c->threaded && pages >= CHECKPOINTER_PAGES && !c->want) {
		c->want = true;
		pthread_cond_signal(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return SQLITE_OK;
}

static void *
checkpointer_main(void *arg)
{
	struct checkpointer *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->want && !c->quit)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->quit)
			break;
		c->want = false;
		pthread_mutex_unlock(&c->mu);
		/* Errors (a full disk) leave the WAL as it is: the writer's
		 * commits report them, and the cap retries on its own. */
		pthread_mutex_lock(&c->run);
		(void)sqlite3_wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL,
		                                NULL);
		pthread_mutex_unlock(&c->run);
		pthread_mutex_lock(&c->mu);
		c->st.runs++;
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

struct checkpointer *
checkpointer_start(sqlite3 *writer, const char *path, bool threaded, char **cause)
{
	struct checkpointer *c = xcalloc(1, sizeof *c);
	c->writer = writer;
	c->threaded = threaded;
	c->cap = CHECKPOINTER_CAP_PAGES;
	if (!threaded) {
		/* Every CHECKPOINTER_INLINE_BYTES of WAL: the commit that
		 * checkpoints waits for it, so a small one (16 MiB of pages
		 * made a 6 ms task cycle at p99). */
		sqlite3_stmt *st = NULL;
		int page = 4096;
		if (sqlite3_prepare_v2(writer, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0)
			page = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
		c->cap = CHECKPOINTER_INLINE_BYTES / page;
		pthread_mutex_init(&c->mu, NULL);
		pthread_mutex_init(&c->run, NULL);
		sqlite3_wal_hook(writer, on_commit, c);
		return c;
	}
	int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(c->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		*cause = xasprintf("%s: cannot open a connection for checkpoints: %s", path,
		                   c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
		sqlite3_close_v2(c->db);
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->run, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pthread_create(&c->thread, NULL, checkpointer_main, c) != 0) {
		*cause = xasprintf("%s: cannot start the checkpoint thread", path);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->run);
		pthread_mutex_destroy(&c->mu);
		sqlite3_close_v2(c->db);
		free(c);
		return NULL;
	}
	pthread_setname_np(c->thread, "dreamos-ckpt"); /* (top -H, perf) */
	sqlite3_wal_hook(writer, on_commit, c);
	return c;
}

void
checkpointer_stop(struct checkpointer *c)
{
	if (c == NULL)
		return;
	sqlite3_wal_autocheckpoint(c->writer, CHECKPOINTER_PAGES); /* (removes the hook) */
	if (c->threaded) {
		pthread_mutex_lock(&c->mu);
		c->quit = true;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
		pthread_cond_destroy(&c->cv);
	}
	pthread_mutex_destroy(&c->run);
	pthread_mutex_destroy(&c->mu);
	sqlite3_close_v2(c->db);
	free(c);
}

void
checkpointer_stats(struct checkpointer *c, struct checkpointer_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	pthread_mutex_unlock(&c->mu);
}
