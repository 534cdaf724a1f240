/* idlease.c — ids reserved ahead (see idlease.h). */
#include "idlease.h"

#include <stdio.h>
#include <stdlib.h>

#include "store.h"

#define IDLEASE_NS "dreamos"

static void
idlease_write(struct idlease *l, int64_t upto)
{
	char v[32];
	snprintf(v, sizeof v, "%lld", (long long)upto);
	if (store_kv_set(l->st, IDLEASE_NS, l->key, v) == 0)
		l->lease = upto;
}

/* After the commit that carried a new reservation. */
static void
idlease_committed(void *arg, int status)
{
	struct idlease *l = arg;
	if (status == 0)
		l->saved = l->lease;
	else
		l->lease = l->saved; /* not reserved after all: written again later */
}

/* Reserves the next block in this transaction when fewer than half of
 * the committed one are left and none is on its way. */
static void
idlease_extend(struct idlease *l)
{
	if (l->lease != l->saved || l->saved - l->next >= IDLEASE_BLOCK / 2)
		return;
	idlease_write(l, l->next + IDLEASE_BLOCK - 1);
	if (l->lease != l->saved)
		store_after_commit(l->st, idlease_committed, l);
}

void
idlease_open(struct idlease *l, struct store *st, const char *key, int64_t last)
{
	l->st = st;
	l->key = key;
	char *v = store_kv_get(st, IDLEASE_NS, key);
	int64_t reserved = v ? strtoll(v, NULL, 10) : 0;
	free(v);
	l->next = (reserved > last ? reserved : last) + 1;
	l->lease = l->saved = l->next - 1;
	idlease_write(l, l->next + IDLEASE_BLOCK - 1);
	/* The callback tells whether it was committed (a rollback may not
	 * show in store_flush's result); if not, the next take retries. */
	if (l->lease != l->saved)
		store_after_commit(st, idlease_committed, l);
	store_flush(st, NULL);
}

int64_t
idlease_peek(const struct idlease *l)
{
	return l->next <= l->saved ? l->next : 0;
}

int64_t
idlease_take(struct idlease *l)
{
	if (l->st == NULL)
		return 0;
	int64_t id = l->next <= l->saved ? l->next++ : 0;
	idlease_extend(l);
	return id;
}

void
idlease_close(struct idlease *l)
{
	if (l->st != NULL)
		idlease_write(l, l->next - 1);
	l->st = NULL;
}
