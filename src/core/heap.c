/* heap.c — binary heap with position tracking. */
#include <stdlib.h>

#include "heap.h"
#include "util.h"

void
heap_init(struct heap *h, heap_cmp_fn cmp, heap_pos_fn pos)
{
	h->v = NULL;
	h->n = h->cap = 0;
	h->cmp = cmp;
	h->pos = pos;
}

void
heap_free(struct heap *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}

static void
heap_set(struct heap *h, size_t i, void *e)
{
	h->v[i] = e;
	if (h->pos)
		h->pos(e, i);
}

static void
heap_up(struct heap *h, size_t i)
{
	void *e = h->v[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h->cmp(e, h->v[p]) >= 0)
			break;
		heap_set(h, i, h->v[p]);
		i = p;
	}
	heap_set(h, i, e);
}

static void
heap_down(struct heap *h, size_t i)
{
	void *e = h->v[i];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		void *best = e;
		if (l < h->n && h->cmp(h->v[l], best) < 0) {
			m = l;
			best = h->v[l];
		}
		if (r < h->n && h->cmp(h->v[r], best) < 0)
			m = r;
		if (m == i)
			break;
		heap_set(h, i, h->v[m]);
		i = m;
	}
	heap_set(h, i, e);
}

void
heap_push(struct heap *h, void *elem)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 16;
		h->v = xreallocarray(h->v, h->cap, sizeof *h->v);
	}
	h->v[h->n++] = elem;
	heap_up(h, h->n - 1);
}

void *
heap_peek(const struct heap *h)
{
	return h->n ? h->v[0] : NULL;
}

void *
heap_remove(struct heap *h, size_t i)
{
	if (i >= h->n)
		return NULL;
	void *e = h->v[i];
	h->n--;
	if (i != h->n) {
		heap_set(h, i, h->v[h->n]);
		heap_down(h, i);
		heap_up(h, i);
	}
	if (h->pos)
		h->pos(e, HEAP_NOWHERE);
	return e;
}

void *
heap_pop(struct heap *h)
{
	return heap_remove(h, 0);
}
