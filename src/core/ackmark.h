/* ackmark.h — an inbox's acked-through mark: acks of direct messages that
 * need no row of their own.
 *
 * A direct message without a delivery row is pending to its target
 * (bus.h).  Writing a row for each ack was half of the store's work per
 * message.  Most acks come back in id order, so the store instead keeps,
 * per recipient, one id (table acks_through): every direct message to it
 * at or below that id that has no delivery row is acked.  This module
 * tracks, in id order, the inbox's direct deliveries without a row: the
 * mark can move past the leading ones once each is acked or has a row of
 * its own (a row always wins over the mark).  One acked behind a pending
 * one still gets its row, as before.
 *
 * Slots are numbered from 1 and never reused; 0 means none. */
#ifndef DREAMOS_ACKMARK_H
#define DREAMOS_ACKMARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ackmark_state {
	ACKMARK_PENDING = 0, /* no row, not acked: the mark must stay below it */
	ACKMARK_ACKED = 1,   /* acked in memory, no row */
	ACKMARK_DONE = 2,    /* has a row of its own, or its message was never stored */
};

struct ackmark_ent {
	int64_t id;
	int64_t when; /* ACKED: wall ms of the ack */
	int attempt;  /* ACKED: the attempt acked */
	int state;    /* enum ackmark_state */
};

struct ackmark {
	struct ackmark_ent *v; /* v[head..n) are live, in id order */
	size_t head, n, cap;
	uint64_t base;   /* slot - 1 of v[0] */
	int64_t last_id; /* the newest id pushed */
	int64_t mark;    /* every entry at or below it has left */
	uint64_t *acked; /* slots acked since the last ackmark_take_acked */
	size_t nacked, acked_cap;
	bool broken; /* an id came out of order: the mark stays put */
};

void ackmark_init(struct ackmark *am, int64_t mark);
void ackmark_free(struct ackmark *am);

/* Adds a delivery of message id, which must be above every id pushed
 * before; returns its slot, or 0 (and the mark stops moving for good) if it
 * is not. */
uint64_t ackmark_push(struct ackmark *am, int64_t id);
/* The delivery in slot was acked (attempt, wall ms). */
void ackmark_ack(struct ackmark *am, uint64_t slot, int attempt, int64_t when);
/* The delivery in slot has a row now, or its message is not stored. */
void ackmark_done(struct ackmark *am, uint64_t slot);
/* Moves the mark past the leading entries that are acked or done; returns
 * true if it moved. */
bool ackmark_advance(struct ackmark *am);
/* Calls fn for each entry acked but still above the mark (it needs a row)
 * and marks it done. */
typedef void (*ackmark_fn)(void *arg, const struct ackmark_ent *e);
void ackmark_take_acked(struct ackmark *am, ackmark_fn fn, void *arg);

#endif
