/* ackmark.c — an inbox's acked-through mark (see ackmark.h). */
#include "ackmark.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void
ackmark_init(struct ackmark *am, int64_t mark)
{
	memset(am, 0, sizeof *am);
	am->mark = mark;
	am->last_id = mark;
}

void
ackmark_free(struct ackmark *am)
{
	free(am->v);
	free(am->acked);
	memset(am, 0, sizeof *am);
}

/* The live entry of slot, or NULL if it has left. */
static struct ackmark_ent *
ackmark_at(struct ackmark *am, uint64_t slot)
{
	if (slot == 0 || slot - 1 < am->base + am->head || slot - 1 >= am->base + am->n)
		return NULL;
	return &am->v[slot - 1 - am->base];
}

uint64_t
ackmark_push(struct ackmark *am, int64_t id)
{
	if (id <= am->last_id) {
		/* The mark means "all below are resolved": past an id that
		 * came late it could claim a pending one acked. */
		am->broken = true;
		return 0;
	}
	am->last_id = id;
	if (am->head == am->n) {
		am->base += am->n;
		am->head = am->n = 0;
	} else if (am->n == am->cap && am->head > 0) {
		/* Slide the live entries down rather than grow. */
		memmove(am->v, am->v + am->head, (am->n - am->head) * sizeof *am->v);
		am->base += am->head;
		am->n -= am->head;
		am->head = 0;
	}
	if (am->n == am->cap) {
		am->cap = am->cap ? am->cap * 2 : 64;
		am->v = xrealloc(am->v, am->cap * sizeof *am->v);
	}
	am->v[am->n] = (struct ackmark_ent){.id = id, .state = ACKMARK_PENDING};
	am->n++;
	return am->base + am->n;
}

void
ackmark_ack(struct ackmark *am, uint64_t slot, int attempt, int64_t when)
{
	struct ackmark_ent *e = ackmark_at(am, slot);
	if (e == NULL || e->state != ACKMARK_PENDING)
		return;
	e->state = ACKMARK_ACKED;
	e->attempt = attempt;
	e->when = when;
	if (am->nacked == am->acked_cap) {
		am->acked_cap = am->acked_cap ? am->acked_cap * 2 : 64;
		am->acked = xrealloc(am->acked, am->acked_cap * sizeof *am->acked);
	}
	am->acked[am->nacked++] = slot;
}

void
ackmark_done(struct ackmark *am, uint64_t slot)
{
	struct ackmark_ent *e = ackmark_at(am, slot);
	if (e != NULL)
		e->state = ACKMARK_DONE;
}

bool
ackmark_advance(struct ackmark *am)
{
	if (am->broken)
		return false;
	size_t h = am->head;
	while (h < am->n && am->v[h].state != ACKMARK_PENDING)
		h++;
	if (h == am->head)
		return false;
	am->mark = am->v[h - 1].id;
	am->head = h;
	return true;
}

void
ackmark_take_acked(struct ackmark *am, ackmark_fn fn, void *arg)
{
	for (size_t i = 0; i < am->nacked; i++) {
		struct ackmark_ent *e = ackmark_at(am, am->acked[i]);
		if (e != NULL && e->state == ACKMARK_ACKED) {
			fn(arg, e);
			e->state = ACKMARK_DONE;
		}
	}
	am->nacked = 0;
}
