/* strmap.c — open addressing with linear probing and FNV-1a hashing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"
#include "util.h"

static char strmap_tomb_key;
#define STRMAP_TOMB (&strmap_tomb_key)

static uint64_t
strmap_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void
strmap_init(struct strmap *m)
{
	memset(m, 0, sizeof *m);
}

void
strmap_free(struct strmap *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key != NULL && m->slots[i].key != STRMAP_TOMB)
			free(m->slots[i].key);
	}
	free(m->slots);
	strmap_init(m);
}

/* Returns the slot holding key, or NULL. */
static struct strmap_slot *
strmap_find(const struct strmap *m, const char *key)
{
	if (m->cap == 0)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = strmap_hash(key) & mask;; i = (i + 1) & mask) {
		struct strmap_slot *s = &m->slots[i];
		if (s->key == NULL)
			return NULL;
		if (s->key != STRMAP_TOMB && strcmp(s->key, key) == 0)
			return s;
	}
}

void *
strmap_get(const struct strmap *m, const char *key)
{
	struct strmap_slot *s = strmap_find(m, key);
	return s ? s->value : NULL;
}

/* Rebuilds the table with capacity cap (dropping tombstones). */
static void
strmap_resize(struct strmap *m, size_t cap)
{
	struct strmap_slot *old = m->slots;
	size_t oldcap = m->cap;
	m->slots = xcalloc(cap, sizeof *m->slots);
	m->cap = cap;
	m->used = m->n;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].key == NULL || old[i].key == STRMAP_TOMB)
			continue;
		size_t mask = cap - 1;
		size_t j = strmap_hash(old[i].key) & mask;
		while (m->slots[j].key != NULL)
			j = (j + 1) & mask;
		m->slots[j] = old[i];
	}
	free(old);
}

void
strmap_set(struct strmap *m, const char *key, void *value)
{
	struct strmap_slot *s = strmap_find(m, key);
	if (s != NULL) {
		s->value = value;
		return;
	}
	if ((m->used + 1) * 4 >= m->cap * 3)
		strmap_resize(m, m->cap ? (m->n + 1) * 4 > m->cap * 2 ? m->cap * 2 : m->cap : 16);
	size_t mask = m->cap - 1;
	size_t i = strmap_hash(key) & mask;
	while (m->slots[i].key != NULL && m->slots[i].key != STRMAP_TOMB)
		i = (i + 1) & mask;
	if (m->slots[i].key == NULL)
		m->used++;
	m->slots[i].key = xstrdup(key);
	m->slots[i].value = value;
	m->n++;
}

void *
strmap_del(struct strmap *m, const char *key)
{
	struct strmap_slot *s = strmap_find(m, key);
	if (s == NULL)
		return NULL;
	void *v = s->value;
	free(s->key);
	s->key = STRMAP_TOMB;
	s->value = NULL;
	m->n--;
	return v;
}

int
strmap_next(const struct strmap *m, size_t *iter, const char **key, void **value)
{
	while (*iter < m->cap) {
		struct strmap_slot *s = &m->slots[(*iter)++];
		if (s->key != NULL && s->key != STRMAP_TOMB) {
			if (key)
				*key = s->key;
			if (value)
				*value = s->value;
			return 1;
		}
	}
	return 0;
}
