/* outq.c — runs of owed and other bytes queued towards an agent (see
 * outq.h). */
#include <stdlib.h>
#include <string.h>

#include "outq.h"
#include "util.h"

void
outq_init(struct outq *q)
{
	memset(q, 0, sizeof *q);
}

void
outq_free(struct outq *q)
{
	free(q->r);
	outq_init(q);
}

void
outq_push(struct outq *q, size_t len, bool owed)
{
	if (len == 0)
		return;
	q->pushed += len;
	if (!owed)
		q->unowed += len;
	if (q->n > 0) {
		struct outq_run *last = &q->r[(q->head + q->n - 1) % q->cap];
		if (last->owed == owed) { /* (a run of them: one entry) */
			last->end = q->pushed;
			return;
		}
	}
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 8;
		struct outq_run *r = xreallocarray(NULL, cap, sizeof *r);
		for (size_t i = 0; i < q->n; i++)
			r[i] = q->r[(q->head + i) % q->cap];
		free(q->r);
		q->r = r;
		q->cap = cap;
		q->head = 0;
	}
	q->r[(q->head + q->n) % q->cap] = (struct outq_run){q->pushed, owed};
	q->n++;
}

/* Forgets the runs written (all before the last `queued` bytes pushed);
 * returns the offset of the first byte not written. */
static uint64_t
outq_drop_written(struct outq *q, size_t queued)
{
	uint64_t written = q->pushed > queued ? q->pushed - queued : 0;
	while (q->n > 0 && q->r[q->head].end <= written) {
		const struct outq_run *f = &q->r[q->head];
		if (!f->owed)
			q->unowed -= (size_t)(f->end - q->start);
		q->start = f->end;
		q->head = (q->head + 1) % q->cap;
		q->n--;
	}
	if (q->n == 0)
		q->head = 0;
	return written;
}

size_t
outq_unowed(struct outq *q, size_t queued)
{
	uint64_t written = outq_drop_written(q, queued);
	if (q->n == 0)
		return 0;
	/* The oldest run may be written in part. */
	const struct outq_run *f = &q->r[q->head];
	size_t gone = written > q->start ? (size_t)(written - q->start) : 0;
	return f->owed ? q->unowed : q->unowed - gone;
}

size_t
outq_unowed_in(struct outq *q, size_t queued, size_t first)
{
	uint64_t from = outq_drop_written(q, queued), to = from + first, start = q->start;
	size_t sum = 0;
	for (size_t i = 0; i < q->n && start < to; i++) {
		const struct outq_run *r = &q->r[(q->head + i) % q->cap];
		uint64_t a = start > from ? start : from, b = r->end < to ? r->end : to;
		if (!r->owed && b > a)
			sum += (size_t)(b - a);
		start = r->end;
	}
	return sum;
}
