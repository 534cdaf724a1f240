/* intmap.h — an open-addressing hash map from int64 ids (message and task
 * ids) to pointers.  Ids must be > 0. */
#ifndef DREAMOS_INTMAP_H
#define DREAMOS_INTMAP_H

#include <stddef.h>
#include <stdint.h>

struct intmap_slot {
	int64_t key; /* 0: empty, -1: deleted */
	void *value;
};

struct intmap {
	struct intmap_slot *slots;
	size_t cap, n, used;
};

void intmap_init(struct intmap *m);
void intmap_free(struct intmap *m);
void *intmap_get(const struct intmap *m, int64_t key);
void intmap_set(struct intmap *m, int64_t key, void *value);
void *intmap_del(struct intmap *m, int64_t key);
/* for (size_t i = 0; intmap_next(m, &i, &k, &v);) — no changes meanwhile. */
int intmap_next(const struct intmap *m, size_t *iter, int64_t *key, void **value);

#endif
