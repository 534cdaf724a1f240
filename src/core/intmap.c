/* intmap.c — linear probing with a multiplicative hash. */
#include <stdlib.h>
#include <string.h>

#include "intmap.h"
#include "util.h"

#define INTMAP_EMPTY 0
#define INTMAP_TOMB  (-1)

/* Four consecutive ids share a home run of four slots (one 64-byte cache
 * line), and the runs are spread by a multiplicative hash: the bus's ids
 * come and go in about the order they were made, and with thousands in
 * flight (8 senders, window 1,000) a hash that scattered every id made
 * each lookup a cache miss: intmap_get and intmap_set were 9% of
 * dreamos's perf samples (under 1% with one sender), about 4% now. */
static size_t
intmap_hash(int64_t k)
{
	uint64_t x = ((uint64_t)k >> 2) * 0x9E3779B97F4A7C15ULL;
	x ^= x >> 29;
	return (size_t)(x << 2 | ((uint64_t)k & 3));
}

void
intmap_init(struct intmap *m)
{
	memset(m, 0, sizeof *m);
}

void
intmap_free(struct intmap *m)
{
	free(m->slots);
	intmap_init(m);
}

static struct intmap_slot *
intmap_find(const struct intmap *m, int64_t key)
{
	if (m->cap == 0)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = intmap_hash(key) & mask;; i = (i + 1) & mask) {
		struct intmap_slot *s = &m->slots[i];
		if (s->key == INTMAP_EMPTY)
			return NULL;
		if (s->key == key)
			return s;
	}
}

void *
intmap_get(const struct intmap *m, int64_t key)
{
	struct intmap_slot *s = intmap_find(m, key);
	return s ? s->value : NULL;
}

static void
intmap_resize(struct intmap *m, size_t cap)
{
	struct intmap_slot *old = m->slots;
	size_t oldcap = m->cap;
	m->slots = xcalloc(cap, sizeof *m->slots);
	m->cap = cap;
	m->used = m->n;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].key <= 0)
			continue;
		size_t j = intmap_hash(old[i].key) & (cap - 1);
		while (m->slots[j].key != INTMAP_EMPTY)
			j = (j + 1) & (cap - 1);
		m->slots[j] = old[i];
	}
	free(old);
}

void
intmap_set(struct intmap *m, int64_t key, void *value)
{
	struct intmap_slot *s = intmap_find(m, key);
	if (s != NULL) {
		s->value = value;
		return;
	}
	if ((m->used + 1) * 4 >= m->cap * 3)
		intmap_resize(m, m->cap == 0                   ? 16
		                 : (m->n + 1) * 4 > m->cap * 2 ? m->cap * 2
		                                               : m->cap);
	size_t mask = m->cap - 1;
	size_t i = intmap_hash(key) & mask;
	while (m->slots[i].key > 0)
		i = (i + 1) & mask;
	if (m->slots[i].key == INTMAP_EMPTY)
		m->used++;
	m->slots[i].key = key;
	m->slots[i].value = value;
	m->n++;
}

void *
intmap_del(struct intmap *m, int64_t key)
{
	struct intmap_slot *s = intmap_find(m, key);
	if (s == NULL)
		return NULL;
	void *v = s->value;
	s->value = NULL;
	m->n--;
	size_t mask = m->cap - 1, i = (size_t)(s - m->slots);
	if (m->slots[(i + 1) & mask].key != INTMAP_EMPTY) {
		s->key = INTMAP_TOMB;
		return v;
	}
	/* No probe goes past an empty slot, so this one, and the tombstones
	 * just before it, can be empty again: with ids deleted in about the
	 * order they came (messages, tasks), tombstones would otherwise pile
	 * up and lengthen every probe until the next rehash. */
	do {
		m->slots[i].key = INTMAP_EMPTY;
		m->used--;
		i = (i - 1) & mask;
	} while (m->slots[i].key == INTMAP_TOMB);
	return v;
}

int
intmap_next(const struct intmap *m, size_t *iter, int64_t *key, void **value)
{
	while (*iter < m->cap) {
		struct intmap_slot *s = &m->slots[(*iter)++];
		if (s->key > 0) {
			if (key)
				*key = s->key;
			if (value)
				*value = s->value;
			return 1;
		}
	}
	return 0;
}
