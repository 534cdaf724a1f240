/* heap.h — a binary min-heap of pointers ordered by a comparison function
 * (the task manager's ready queues and deadlines).  Each element may keep
 * its position, so it can be removed from the middle (beanstalkd style). */
#ifndef DREAMOS_HEAP_H
#define DREAMOS_HEAP_H

#include <stddef.h>

/* Returns < 0 if a comes before b. */
typedef int (*heap_cmp_fn)(const void *a, const void *b);
/* Told where an element now sits (index), or (size_t)-1 when it left. */
typedef void (*heap_pos_fn)(void *elem, size_t pos);

struct heap {
	void **v;
	size_t n, cap;
	heap_cmp_fn cmp;
	heap_pos_fn pos; /* may be NULL */
};

#define HEAP_NOWHERE ((size_t)-1)

void heap_init(struct heap *h, heap_cmp_fn cmp, heap_pos_fn pos);
void heap_free(struct heap *h);
void heap_push(struct heap *h, void *elem);
/* The first element, or NULL. */
void *heap_peek(const struct heap *h);
void *heap_pop(struct heap *h);
/* Removes the element at index i (as reported through pos). */
void *heap_remove(struct heap *h, size_t i);

#endif
