/* strmap.h — a small open-addressing hash map from strings to pointers
 * (agent names, topics).  Keys are copied; values are not owned. */
#ifndef DREAMOS_STRMAP_H
#define DREAMOS_STRMAP_H

#include <stddef.h>

struct strmap_slot {
	char *key; /* NULL: empty; STRMAP_TOMB: deleted */
	void *value;
};

struct strmap {
	struct strmap_slot *slots;
	size_t cap;  /* power of two */
	size_t n;    /* live keys */
	size_t used; /* live + tombstones */
};

void strmap_init(struct strmap *m);
/* Frees the keys and the table (not the values). */
void strmap_free(struct strmap *m);
/* Returns the value for key, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);
/* Sets key to value (replacing any earlier value). */
void strmap_set(struct strmap *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *strmap_del(struct strmap *m, const char *key);

/* Iteration: for (size_t i = 0; strmap_next(m, &i, &k, &v);) — do not
 * modify the map meanwhile. */
int strmap_next(const struct strmap *m, size_t *iter, const char **key, void **value);

#endif
