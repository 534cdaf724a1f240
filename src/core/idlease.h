/* idlease.h — ids reserved ahead, so that none is handed out twice.
 *
 * The bus routes a message, and the task manager assigns a task, as soon
 * as it is accepted, before the group commit that stores it.  A crash
 * before that commit rolls the row back, but a recipient or an agent may
 * have seen its id; the id must not come back for something else.  So
 * ids come from a reservation (kept in the kv table) that is committed
 * before any id in it is handed out: a run after a crash starts above it,
 * a clean stop gives back what is left (no gap then). */
#ifndef DREAMOS_IDLEASE_H
#define DREAMOS_IDLEASE_H

#include <stdbool.h>
#include <stdint.h>

struct store;

/* Ids reserved at a time; a new reservation is written (in the current
 * transaction) once fewer than half of the committed one are left. */
#define IDLEASE_BLOCK 1000000

struct idlease {
	struct store *st;
	const char *key; /* kv key (namespace "dreamos") */
	int64_t next;    /* the next id to hand out */
	int64_t lease;   /* reserved up to here, perhaps not committed yet */
	int64_t saved;   /* reserved up to here, committed */
};

/* Starts above last (the highest id stored) and above any reservation of
 * an earlier run, reserves the next block and commits it (store_flush;
 * if that fails, the first idlease_take tries again). */
void idlease_open(struct idlease *l, struct store *st, const char *key, int64_t last);

/* The id the next idlease_take returns (0 when none is reserved). */
int64_t idlease_peek(const struct idlease *l);

/* Hands out the next id, or returns 0 when none is reserved (the store
 * is failing: the reservation could not be committed). */
int64_t idlease_take(struct idlease *l);

/* A clean stop: gives back the ids not handed out (written in the open
 * transaction: the caller's final flush commits it). */
void idlease_close(struct idlease *l);

#endif
