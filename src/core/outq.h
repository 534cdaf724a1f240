/* outq.h — what is queued towards an agent, in runs of bytes that wait for
 * its answer (owed: the bus's messages, task assignments) or not (all the
 * rest: `sent`, errors, commands).
 *
 * A link stops reading an agent that does not read what is queued to it,
 * or the answers to its own lines would pile up without bound.  But it
 * must not count what is owed an answer: an agent that writes each ack
 * before it reads on (a blocking write) would block on its acks, which we
 * would no longer read, and we would wait for it to read its messages.
 *
 * The link pushes the length of each line as it takes it, in order, and
 * asks how much of what is still queued is not owed, giving the size of
 * its queue: the queue is first in, first out, so the bytes written so
 * far are the first (pushed - queued) of those pushed. */
#ifndef DREAMOS_OUTQ_H
#define DREAMOS_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct outq_run {
	uint64_t end; /* offset after its last byte, counted from the first push */
	bool owed;
};

struct outq {
	struct outq_run *r; /* a ring of runs, oldest first, from head */
	size_t head, n, cap;
	uint64_t pushed; /* bytes pushed */
	uint64_t start;  /* offset of the oldest run's first byte */
	size_t unowed;   /* bytes of the runs not owed, whole */
};

void outq_init(struct outq *q);
void outq_free(struct outq *q);
/* len more bytes queued, after all the others. */
void outq_push(struct outq *q, size_t len, bool owed);
/* The bytes not owed among the last `queued` pushed (the link's queue
 * now); forgets the runs written before them. */
size_t outq_unowed(struct outq *q, size_t queued);
/* The same among the oldest `first` of those `queued` bytes (the part of
 * the queue already handed to the socket, say). */
size_t outq_unowed_in(struct outq *q, size_t queued, size_t first);

#endif
