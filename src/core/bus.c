/* bus.c — the UnifiedMessageSystem (see bus.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ackmark.h"
#include "packtab.h"
#include "agent.h"
#include "bus.h"
#include "flatjson.h"
#include "idlease.h"
#include "intmap.h"
#include "log.h"
#include "orch.h"
#include "store.h"
#include "strmap.h"

/* A recipient whose queue holds this many messages makes new sends to it
 * fail with `backpressure` until it catches up.  Agents are throttled long
 * before (bus.high_water); this is for senders that cannot be, the captain
 * and HTTP clients. */
#define BUS_MAX_INBOX 100000

/* A step back of the wall clock up to this is absorbed: message times
 * never go back (bus_first_id_at); past it the old times were wrong. */
#define BUS_CLOCK_STEP_MS (60 * 1000)

/* The line and body buffers (bus_scratch) are kept up to this size. */
#define BUS_LINE_KEEP (64 * 1024)

/* SQL: whether stored message `x` (an id expression) is still in the store:
 * the block that held it is there.  Retention deletes whole blocks
 * (bus_prune), so that says it; asking `messages` for the id would read
 * the whole block, up to a MiB, to find one key. */
#define BUS_SQL_KEPT(x)                                                                            \
	"EXISTS (SELECT 1 FROM message_blocks WHERE first_id = (SELECT max(first_id) FROM "        \
	"message_blocks WHERE first_id <= " x ") AND last_id >= " x ")"

/* One accepted message, shared by its deliveries. */
struct bmsg {
	int64_t id;
	int refs;
	char *from;
	char *to;
	char *body;                /* JSON text */
	uint32_t flen, tlen, blen; /* their lengths (a delivery's line needs them) */
	enum proto_priority prio;
	enum proto_mode mode;
	int64_t ts_ms;
	int64_t reply_to;
	bool unstored; /* its commit failed: never delivered again */
	bool direct;   /* to one agent, named by `to`: its delivery may have no row */
	uint64_t txn;  /* store_txn_seq of its transaction until that commits, then 0 */
	/* Room for one delivery in its own allocation (a direct message's, made
	 * by bus_accept), or NULL; d0_used while a delivery is there. */
	struct delivery *d0;
	bool d0_used;
	bool pooled; /* its allocation is BMSG_POOL_BYTES, from or for bus.pool */
};

/* Allocations of messages that fit in BMSG_POOL_BYTES (one with a 256-byte
 * body takes about 580) are kept when freed, up to BMSG_POOL_MAX of them,
 * for the next: thousands are in flight at a time, more than glibc's
 * per-thread cache holds, so each message cost a trip through malloc and
 * free (about 450 instructions with calloc's zeroing). */
#ifdef __SANITIZE_ADDRESS__
#define BMSG_POOL_BYTES 0 /* (none pooled: each freed, so ASan sees a use after it) */
#else
#define BMSG_POOL_BYTES 768
#endif
#define BMSG_POOL_MAX 4096

struct inbox;

/* deliveries.state in the store. */
enum delivery_state {
	DELIVERY_PENDING = 0,
	DELIVERY_ACKED = 1,
	DELIVERY_DEAD = 2,
};

/* One message for one recipient, queued or in flight. */
struct delivery {
	struct bmsg *msg;
	struct inbox *inbox;
	int attempt;
	bool inflight;
	bool stored;      /* its row is in the store or the open transaction (stale only for a
	                   * message whose commit failed, which is never written again) */
	size_t unsaved;   /* 1 + its index in bus.unsaved: row not up to date */
	size_t later;     /* 1 + its index in bus.later: first attempt, row not yet due */
	uint64_t mslot;   /* its entry in its inbox's ackmark (a direct one without a row), or 0 */
	int64_t sent_ms;  /* monotonic ms of its last delivery */
	int64_t deadline; /* monotonic ms, when in flight */
	struct delivery *prev, *next;   /* in a queue or the inbox's in-flight list */
	struct delivery *gprev, *gnext; /* in the bus's in-flight list */
};

struct dlist {
	struct delivery *head, *tail;
	size_t n;
};

/* Deliveries whose row waits for a commit point (slots of dropped ones are
 * NULL; a delivery knows its slot). */
struct dvec {
	struct delivery **v;
	size_t n, cap;
};

struct inbox {
	char *name;
	struct agent *agent; /* the agent of that name, once seen (agents live until exit) */
	struct dlist q[PRIO_N];
	struct dlist inflight;
	struct intmap byid; /* msg id -> delivery */
	/* Its direct deliveries without a row, for its acked-through mark
	 * (ackmark.h), and the mark as last queued for the store. */
	struct ackmark am;
	int64_t mark_saved;
	bool mark_dirty; /* in bus.dirty: the mark may move */
	double drop_rate;
	/* Agents throttled for this inbox's queue (names: one may be gone by
	 * the time the queue is down to half of bus.high_water). */
	char **waiters;
	size_t nwaiters, waiters_cap;
};

/* A message accepted in a group transaction (and already routed), to
 * answer after commit.  It lives in its message's allocation, its strings
 * after it (bmsg_alloc), and holds the reference that keeps it there. */
struct pending {
	struct bmsg *msg;
	int nto;      /* recipients */
	char *sender; /* agent to answer `sent`, or NULL */
	char *ref;    /* or NULL */
	bus_sent_fn done;
	void *done_arg;
	struct pending *next;
};

/* The messages of one transaction, with one after-commit callback: after
 * SQLite rolled a transaction back, later messages go into a new batch
 * (their transaction may commit while the lost one's callback says -1). */
struct batch {
	struct bus *b;
	uint64_t txn; /* store_txn_seq */
	struct pending *head, **tail;
};

struct bus_listener {
	int id;
	unsigned mask;
	bus_event_fn fn;
	void *arg;
};

struct bus {
	struct orch *orch;
	struct strmap inboxes;          /* name -> inbox */
	struct strmap topics;           /* topic -> struct strmap * of subscriber names */
	struct intmap msgs;             /* id -> bmsg, while any delivery is pending */
	struct delivery *ghead, *gtail; /* in flight, by deadline */
	uv_timer_t *timer;              /* allocated: freed by its close callback */
	struct batch *batch;            /* of the open transaction, or NULL */
	struct bus_stats st;
	struct bus_listener *listeners;
	size_t nlisteners;
	int next_listener;
	uint64_t rng;
	/* Deliveries whose row is written at the commit point: new ones (a
	 * delivery acked before it is inserted once, already acked) and new
	 * attempt counts (an ack in the same transaction writes it with the
	 * new state), so that a message acked within its group commit costs
	 * one write per delivery instead of three.  Slots of dropped ones are
	 * NULL. */
	struct dvec unsaved;
	/* The first attempts of direct messages, in the order they went out:
	 * their row is written once they have been in flight BUS_LATER_MS
	 * (later_timer), so that an ack that comes back before is their only
	 * write.  Entries below later_head are gone.  See delivery_write. */
	struct dvec later;
	size_t later_head;
	uv_timer_t *later_timer; /* allocated: freed by its close callback */
	bool hooked;             /* bus_write_unsaved is a store_before_commit hook */
	/* A message is routed (and may be delivered) as soon as it is
	 * accepted, before its group commit; only `sent` waits for that.  So
	 * its id comes from a reservation (see idlease.h). */
	struct idlease ids;
	/* No message below floor has a pending delivery in the store (kv,
	 * saved every BUS_FLOOR_MS at a commit point): recovery reads from
	 * there instead of the whole deliveries table. */
	int64_t floor;
	int64_t floor_saved_ms;
	/* The newest message's time: a new one is never stamped earlier, so
	 * times grow with ids and bus_first_id_at can search by id. */
	int64_t last_ts;
	bool recovered; /* bus_recover is done: memory covers the store */
	/* Inboxes whose acked-through mark may move at the commit point. */
	struct inbox **dirty;
	size_t ndirty, dirty_cap;
	uint64_t commit_failures; /* seen by bus_write_marks */
	/* Where the `message` and `sent` lines are built, and a sent body
	 * copied (bus_scratch): reused, so that neither costs an allocation of
	 * its own. */
	struct buf line, body;
	bool body_busy; /* body holds the send bus_on_send is accepting */
	/* The last inbox a direct send went to, and the last agent that acked
	 * with its inbox: a stream of messages names the same ones (inboxes
	 * and agents live until exit). */
	struct inbox *last_to;
	struct agent *last_acker;
	struct inbox *last_acker_ib;
	void **pool; /* freed message allocations (BMSG_POOL_BYTES each) */
	size_t npool;
};

static void bus_write_unsaved(void *arg);
static void bus_write_later(struct bus *b, int64_t before);
static void bus_save_floor(struct bus *b);

/* How often the recovery floor is saved (at a commit point). */
#define BUS_FLOOR_MS 1000

/* How long the first attempt of a direct message may be in flight before
 * it is recorded in the store (bus.later): acks beat it by far under load
 * (a window of 1,000 at 150,000 msgs/s is 7 ms in flight), so the ack is
 * the delivery's only write; a crash before it counts that attempt again. */
#define BUS_LATER_MS 100

/* Frees a handle allocated with xmalloc once libuv is done with it. */
static void
handle_free_cb(uv_handle_t *h)
{
	free(h);
}

/* ---- small helpers ---------------------------------------------------- */

static void
dlist_push_back(struct dlist *l, struct delivery *d)
{
	d->next = NULL;
	d->prev = l->tail;
	if (l->tail)
		l->tail->next = d;
	else
		l->head = d;
	l->tail = d;
	l->n++;
}

static void
dlist_push_front(struct dlist *l, struct delivery *d)
{
	d->prev = NULL;
	d->next = l->head;
	if (l->head)
		l->head->prev = d;
	else
		l->tail = d;
	l->head = d;
	l->n++;
}

static void
dlist_remove(struct dlist *l, struct delivery *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		l->head = d->next;
	if (d->next)
		d->next->prev = d->prev;
	else
		l->tail = d->prev;
	d->prev = d->next = NULL;
	l->n--;
}

static void
bmsg_unref(struct bus *b, struct bmsg *m)
{
	if (--m->refs > 0)
		return;
	/* (One lookup: another message of this id, which a requeue may have
	 * put there, goes back.) */
	void *v = intmap_del(&b->msgs, m->id);
	if (v != NULL && v != m)
		intmap_set(&b->msgs, m->id, v);
	if (m->pooled && b->npool < BMSG_POOL_MAX) {
		if (b->pool == NULL)
			b->pool = xcalloc(BMSG_POOL_MAX, sizeof *b->pool);
		b->pool[b->npool++] = m;
	} else
		free(m);
}

static bool bus_target_direct(const char *to);

/* A new delivery of m: in m's own allocation if it has room for one that
 * is free (one allocation fewer for a direct message), else on its own. */
static struct delivery *
delivery_new(struct bmsg *m)
{
	struct delivery *d;
	if (m->d0 != NULL && !m->d0_used) {
		d = memset(m->d0, 0, sizeof *m->d0);
		m->d0_used = true;
	} else {
		d = xcalloc(1, sizeof *d);
	}
	d->msg = m;
	return d;
}

/* Frees d.  Before its message's reference goes: it may live in it. */
static void
delivery_free(struct delivery *d)
{
	if (d == d->msg->d0)
		d->msg->d0_used = false;
	else
		free(d);
}

/* A new message (one reference) with copies of its strings, in one
 * allocation with it: the bus makes one per message.  extra bytes, zeroed,
 * come right after the struct (aligned as it is), at *extrap: a new
 * message's pending answer lives there, one allocation fewer per message. */
static struct bmsg *
bmsg_alloc(struct bus *b, int64_t id, const char *from, const char *to, const char *body,
           size_t blen, size_t extra, void **extrap)
{
	size_t flen = strlen(from) + 1, tlen = strlen(to) + 1;
	extra = (extra + 7) & ~(size_t)7;
	size_t size = sizeof(struct bmsg) + extra + flen + tlen + blen + 1;
	struct bmsg *m;
	if (size > BMSG_POOL_BYTES) {
		m = xcalloc(1, size);
	} else {
		m = b->npool > 0 ? b->pool[--b->npool] : xmalloc(BMSG_POOL_BYTES);
		memset(m, 0, sizeof *m + extra); /* (the strings are copied over) */
		m->pooled = true;
	}
	if (extrap != NULL)
		*extrap = m + 1;
	char *p = (char *)(m + 1) + extra;
	m->id = id;
	m->refs = 1;
	m->from = memcpy(p, from, flen);
	m->to = memcpy(p + flen, to, tlen);
	m->body = memcpy(p + flen + tlen, body, blen);
	m->body[blen] = '\0';
	m->flen = (uint32_t)flen - 1;
	m->tlen = (uint32_t)tlen - 1;
	m->blen = (uint32_t)blen;
	m->direct = bus_target_direct(to);
	return m;
}

static struct bmsg *
bmsg_new(struct bus *b, int64_t id, const char *from, const char *to, const char *body, size_t blen)
{
	return bmsg_alloc(b, id, from, to, body, blen, 0, NULL);
}

/* A message from a row of messages whose columns col.. are ts_ms, sender,
 * target, priority, mode, body and reply_to (recovery, requeue); its
 * reference count is 0. */
static struct bmsg *
bmsg_from_row(struct bus *b, sqlite3_stmt *s, int col, int64_t id)
{
	const char *body = (const char *)sqlite3_column_text(s, col + 5);
	struct bmsg *m = bmsg_new(b, id, (const char *)sqlite3_column_text(s, col + 1),
	                          (const char *)sqlite3_column_text(s, col + 2), body ? body : "",
	                          body ? strlen(body) : 0);
	m->refs = 0;
	m->ts_ms = sqlite3_column_int64(s, col);
	int prio = sqlite3_column_int(s, col + 3);
	m->prio = prio >= 0 && prio < PRIO_N ? (enum proto_priority)prio : PRIO_NORMAL;
	m->mode = MODE_NORMAL;
	proto_mode_parse((const char *)sqlite3_column_text(s, col + 4), &m->mode);
	m->reply_to = sqlite3_column_int64(s, col + 6);
	return m;
}

/* Whether a message to `to` is direct: to one agent, which `to` names (see
 * BUS_SQL_DIRECT). */
static bool
bus_target_direct(const char *to)
{
	return !(to[0] == '*' && to[1] == '\0') && to[0] != '#' &&
	       !(to[0] == 'c' && strcmp(to, "captain") == 0);
}

static struct inbox *
bus_inbox(struct bus *b, const char *name, bool create)
{
	struct inbox *ib = strmap_get(&b->inboxes, name);
	if (ib == NULL && create) {
		ib = xcalloc(1, sizeof *ib);
		ib->name = xstrdup(name);
		intmap_init(&ib->byid);
		ackmark_init(&ib->am, 0);
		strmap_set(&b->inboxes, name, ib);
	}
	return ib;
}

/* The agent ib is for, or NULL if there is none (yet). */
static struct agent *
inbox_agent(struct bus *b, struct inbox *ib)
{
	if (ib->agent == NULL)
		ib->agent = agents_find(orch_agents(b->orch), ib->name);
	return ib->agent;
}

static size_t
inbox_queued(const struct inbox *ib)
{
	size_t n = 0;
	for (int p = 0; p < PRIO_N; p++)
		n += ib->q[p].n;
	return n;
}

/* Returns a pseudo-random number in [0, 1) (xorshift; chaos only). */
static double
bus_random(struct bus *b)
{
	b->rng ^= b->rng << 13;
	b->rng ^= b->rng >> 7;
	b->rng ^= b->rng << 17;
	return (double)(b->rng >> 11) / 9007199254740992.0;
}

static void
bus_emit(struct bus *b, unsigned ev, const char *event, const struct bmsg *m, const char *recipient,
         int attempt)
{
	unsigned wanted = 0;
	for (size_t i = 0; i < b->nlisteners; i++)
		wanted |= b->listeners[i].mask;
	if (!(wanted & ev))
		return;
	size_t blen = strlen(m->body);
	json_t *body = flatjson_load_value(m->body, blen);
	if (body == NULL)
		body = json_loadb(m->body, blen, JSON_DECODE_ANY, NULL);
	json_t *j =
	    json_pack("{s:I,s:s,s:s,s:s?,s:s,s:s,s:I,s:o,s:i}", "id", (json_int_t)m->id, "from",
	              m->from, "to", m->to, "recipient", recipient, "priority",
	              proto_priority_name(m->prio), "mode", proto_mode_name(m->mode), "ts_ms",
	              (json_int_t)m->ts_ms, "body", body ? body : json_null(), "attempt", attempt);
	for (size_t i = 0; i < b->nlisteners; i++) {
		if (b->listeners[i].mask & ev)
			b->listeners[i].fn(b->listeners[i].arg, event, j);
	}
	json_decref(j);
}

/* ---- lifecycle -------------------------------------------------------- */

static void bus_on_timer(uv_timer_t *t);

struct bus *
bus_new(struct orch *o)
{
	struct bus *b = xcalloc(1, sizeof *b);
	b->orch = o;
	strmap_init(&b->inboxes);
	strmap_init(&b->topics);
	intmap_init(&b->msgs);
	b->rng = (uint64_t)time_mono_ms() * 2654435761ULL + 1;
	b->timer = xmalloc(sizeof *b->timer);
	uv_timer_init(orch_loop(o), b->timer);
	b->timer->data = b;
	b->later_timer = xmalloc(sizeof *b->later_timer);
	uv_timer_init(orch_loop(o), b->later_timer);
	b->later_timer->data = b;
	if (orch_store(o) != NULL) {
		store_before_commit(orch_store(o), bus_write_unsaved, b);
		b->hooked = true;
	}
	return b;
}

/* Writes what lags behind and stops deferring. */
static void
bus_unhook(struct bus *b)
{
	if (b == NULL)
		return;
	bus_write_later(b, INT64_MAX); /* (no commit point comes after this one) */
	bus_write_unsaved(b);
	if (b->hooked && orch_store(b->orch) != NULL)
		store_before_commit_remove(orch_store(b->orch), bus_write_unsaved, b);
	b->hooked = false;
}

void
bus_close(struct bus *b)
{
	if (b != NULL) {
		bus_save_floor(b);
		idlease_close(&b->ids);
	}
	bus_unhook(b);
	/* No close callback: bus_free may run before the loop releases the
	 * handle, and the embedded handle needs nothing more from us. */
	if (b != NULL && !uv_is_closing((uv_handle_t *)b->timer))
		uv_close((uv_handle_t *)b->timer, handle_free_cb);
	if (b != NULL && !uv_is_closing((uv_handle_t *)b->later_timer))
		uv_close((uv_handle_t *)b->later_timer, handle_free_cb);
}

static void
inbox_free(struct bus *b, struct inbox *ib)
{
	struct dlist *lists[PRIO_N + 1];
	for (int p = 0; p < PRIO_N; p++)
		lists[p] = &ib->q[p];
	lists[PRIO_N] = &ib->inflight;
	for (int i = 0; i <= PRIO_N; i++) {
		struct delivery *d = lists[i]->head, *next;
		for (; d != NULL; d = next) {
			next = d->next;
			struct bmsg *m = d->msg;
			delivery_free(d);
			bmsg_unref(b, m);
		}
	}
	intmap_free(&ib->byid);
	ackmark_free(&ib->am);
	for (size_t i = 0; i < ib->nwaiters; i++)
		free(ib->waiters[i]);
	free(ib->waiters);
	free(ib->name);
	free(ib);
}

void
bus_free(struct bus *b)
{
	if (b == NULL)
		return;
	bus_unhook(b);
	size_t it = 0;
	void *v;
	while (strmap_next(&b->inboxes, &it, NULL, &v))
		inbox_free(b, v);
	strmap_free(&b->inboxes);
	free(b->dirty);
	it = 0;
	while (strmap_next(&b->topics, &it, NULL, &v)) {
		strmap_free(v);
		free(v);
	}
	strmap_free(&b->topics);
	/* (None left once the store is closed: it answers every callback.) */
	for (struct pending *p = b->batch ? b->batch->head : NULL, *next; p != NULL; p = next) {
		next = p->next;
		bmsg_unref(b, p->msg); /* (p was in it) */
	}
	free(b->batch);
	intmap_free(&b->msgs);
	for (size_t i = 0; i < b->npool; i++)
		free(b->pool[i]);
	free(b->pool);
	free(b->listeners);
	free(b->unsaved.v);
	free(b->later.v);
	buf_free(&b->line);
	buf_free(&b->body);
	free(b);
}

/* ---- delivery --------------------------------------------------------- */

static void
bus_arm_timer(struct bus *b)
{
	if (b->ghead == NULL) {
		uv_timer_stop(b->timer);
		return;
	}
	int64_t wait = b->ghead->deadline - time_mono_ms();
	uv_timer_start(b->timer, bus_on_timer, wait > 0 ? (uint64_t)wait : 0, 0);
}

static void
global_remove(struct bus *b, struct delivery *d)
{
	if (d->gprev)
		d->gprev->gnext = d->gnext;
	else
		b->ghead = d->gnext;
	if (d->gnext)
		d->gnext->gprev = d->gprev;
	else
		b->gtail = d->gprev;
	d->gprev = d->gnext = NULL;
}

/* Takes d out of flight (not out of the inbox's id map). */
static void
delivery_unflight(struct bus *b, struct delivery *d)
{
	if (!d->inflight)
		return;
	dlist_remove(&d->inbox->inflight, d);
	global_remove(b, d);
	d->inflight = false;
	b->st.inflight--;
}

/* Appends d to v; returns 1 + its slot. */
static size_t
dvec_push(struct dvec *v, struct delivery *d)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 64;
		v->v = xreallocarray(v->v, v->cap, sizeof *v->v);
	}
	v->v[v->n++] = d;
	return v->n;
}

/* ib's acked-through mark may move at the next commit point. */
static void
inbox_mark_dirty(struct bus *b, struct inbox *ib)
{
	if (ib->mark_dirty)
		return;
	if (b->ndirty == b->dirty_cap) {
		b->dirty_cap = b->dirty_cap ? b->dirty_cap * 2 : 16;
		b->dirty = xreallocarray(b->dirty, b->dirty_cap, sizeof *b->dirty);
	}
	b->dirty[b->ndirty++] = ib;
	ib->mark_dirty = true;
	store_write_soon(orch_store(b->orch));
}

/* The mark may pass d: it is acked in memory (and its row says so), or its
 * message is not stored.  Only such final states, true whatever became of
 * d's row: a row written for an attempt may be rolled back with its
 * transaction, and a mark past d would then call a pending message acked.
 * (A death waits for its row's commit: bus_dead_committed.) */
static void
delivery_unmark(struct bus *b, struct delivery *d)
{
	if (d->mslot == 0)
		return;
	ackmark_done(&d->inbox->am, d->mslot);
	d->mslot = 0;
	inbox_mark_dirty(b, d->inbox);
}

/* d's row is up to date: out of bus.unsaved and bus.later. */
static void
delivery_saved(struct bus *b, struct delivery *d)
{
	if (d->unsaved) {
		b->unsaved.v[d->unsaved - 1] = NULL;
		d->unsaved = 0;
	}
	if (d->later) {
		b->later.v[d->later - 1] = NULL;
		d->later = 0;
	}
}

/* Writes d's row as memory has it, state and all: inserted the first time,
 * then updated.  A delivery of a broadcast or a topic message is inserted
 * at its message's commit point (a message's deliveries join its
 * transaction there, so one acked before then is written once, already
 * acked).  A delivery of a direct message needs no row while it is pending:
 * its message's row names its recipient, and a direct message without a
 * delivery row is pending (attempt 0) to recovery, history and verify.  So
 * its row is first written when it is acked or dead, or when its attempt
 * is recorded (bus.later): most cost one write, whenever their ack comes.
 * A message whose commit failed has no rows to write. */
static void
delivery_write(struct bus *b, struct delivery *d, enum delivery_state state, int64_t updated_ms)
{
	delivery_saved(b, d);
	struct store *st = orch_store(b->orch);
	if (d->msg->unstored)
		delivery_unmark(b, d); /* no row will ever be wanted */
	if (st == NULL || d->msg->unstored)
		return;
	/* A new row in a later transaction than its message's (one still
	 * being committed) would outlive the message if that one was rolled
	 * back.  A broadcast's row only joins its message's transaction (the
	 * after-commit callback unroutes it); a direct message's is inserted
	 * only if the message is there by then. */
	bool behind = !d->stored && d->msg->txn != 0 &&
	              !(store_pending(st) && store_txn_seq(st) == d->msg->txn);
	if (behind && !d->msg->direct)
		return;
	/* Queued (store_queue): it runs on the store thread, after the
	 * message's row, which was queued first. */
	int rc;
	int64_t attempt = d->attempt, when = state == DELIVERY_PENDING ? d->msg->ts_ms : updated_ms;
	if (d->stored && state == DELIVERY_PENDING)
		rc = store_queue(st,
		                 "UPDATE deliveries SET attempt = ?1 WHERE recipient = ?2 AND "
		                 "msg_id = ?3",
		                 "iti", attempt, d->inbox->name, d->msg->id);
	else if (d->stored)
		rc =
		    store_queue(st,
		                "UPDATE deliveries SET attempt = ?1, state = ?4, updated_ms = ?5 "
		                "WHERE recipient = ?2 AND msg_id = ?3",
		                "itiii", attempt, d->inbox->name, d->msg->id, (int64_t)state, when);
	else if (behind)
		rc =
		    store_queue(st,
		                "INSERT INTO deliveries (attempt, recipient, msg_id, state, "
		                "updated_ms) SELECT ?1, ?2, ?3, ?4, ?5 WHERE " BUS_SQL_KEPT("?3"),
		                "itiii", attempt, d->inbox->name, d->msg->id, (int64_t)state, when);
	else
		rc =
		    store_queue(st,
		                "INSERT INTO deliveries (attempt, recipient, msg_id, state, "
		                "updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
		                "itiii", attempt, d->inbox->name, d->msg->id, (int64_t)state, when);
	if (rc == 0)
		d->stored = true;
	else if (!d->stored && !d->msg->direct)
		/* Whatever the error: a broadcast must not commit without its
		 * delivery rows, or its sender would get `sent` for a message
		 * no restart delivers.  (A direct message without its row is
		 * still pending.) */
		store_abort_txn(st, rc);
}

/* d's row is written at the next commit point (see bus.unsaved). */
static void
delivery_defer_write(struct bus *b, struct delivery *d)
{
	if (!b->hooked) {
		delivery_write(b, d, DELIVERY_PENDING, 0);
		return;
	}
	if (d->unsaved)
		return;
	if (d->later) {
		b->later.v[d->later - 1] = NULL;
		d->later = 0;
	}
	d->unsaved = dvec_push(&b->unsaved, d);
	store_write_soon(orch_store(b->orch));
}

static void bus_on_later_timer(uv_timer_t *t);

/* d's row is written once it has been in flight BUS_LATER_MS, unless its
 * ack writes it first (see bus.later). */
static void
delivery_defer_later(struct bus *b, struct delivery *d)
{
	if (!b->hooked || d->unsaved || d->later) {
		delivery_defer_write(b, d);
		return;
	}
	d->later = dvec_push(&b->later, d);
	if (!uv_is_active((uv_handle_t *)b->later_timer))
		uv_timer_start(b->later_timer, bus_on_later_timer, BUS_LATER_MS, 0);
}

/* Saves the recovery floor: the lowest id with a delivery in memory (every
 * pending one in the store is in memory, from recovery or since), or the
 * next id when there is none.  Written in the open transaction.  After a
 * failed commit memory may be ahead of the store (an ack or a death rolled
 * back): then 0, so that the next run reads every delivery, as before the
 * floor existed. */
static void
bus_save_floor(struct bus *b)
{
	struct store *st = orch_store(b->orch);
	if (st == NULL || !b->recovered)
		return;
	int64_t floor = b->ids.next, id;
	size_t it = 0;
	while (intmap_next(&b->msgs, &it, &id, NULL)) {
		if (id < floor)
			floor = id;
	}
	struct store_stats ss;
	store_stats(st, &ss);
	if (ss.commit_failures > 0)
		floor = 0;
	b->floor_saved_ms = time_mono_ms();
	if (floor == b->floor && ss.commit_failures == 0)
		return; /* (after a failure, b->floor may not be what is committed) */
	char v[32];
	snprintf(v, sizeof v, "%lld", (long long)floor);
	if (store_kv_queue(st, "dreamos", "message_floor", v) == 0)
		b->floor = floor;
}

/* An ack that came back behind a pending message: its own row, as
 * delivery_write would have written it (only if its message is there: its
 * transaction may have failed). */
struct acked_rows {
	struct store *st;
	const char *recipient;
};

static void
bus_write_acked_row(void *arg, const struct ackmark_ent *e)
{
	const struct acked_rows *ar = arg;
	store_queue(ar->st,
	            "INSERT INTO deliveries (attempt, recipient, msg_id, state, updated_ms) "
	            "SELECT ?1, ?2, ?3, 1, ?4 WHERE " BUS_SQL_KEPT("?3"),
	            "itii", (int64_t)e->attempt, ar->recipient, e->id, e->when);
}

/* Moves the acked-through marks that can move, into the open transaction,
 * and writes the rows of acks the marks cannot cover.  After a failed
 * commit (a mark may have been rolled back) every mark is written again. */
static void
bus_write_marks(struct bus *b)
{
	struct store *st = orch_store(b->orch);
	if (st == NULL)
		return;
	if (b->ndirty > 0) {
		struct store_stats ss;
		store_stats(st, &ss);
		if (ss.commit_failures != b->commit_failures) {
			b->commit_failures = ss.commit_failures;
			size_t it = 0;
			void *v;
			while (strmap_next(&b->inboxes, &it, NULL, &v)) {
				((struct inbox *)v)->mark_saved = 0;
				inbox_mark_dirty(b, v);
			}
		}
	}
	/* By index: a write may log, and that may lead anywhere. */
	for (size_t i = 0; i < b->ndirty; i++) {
		struct inbox *ib = b->dirty[i];
		ib->mark_dirty = false;
		ackmark_advance(&ib->am);
		struct acked_rows ar = {st, ib->name};
		ackmark_take_acked(&ib->am, bus_write_acked_row, &ar);
		if (ib->am.mark > ib->mark_saved &&
		    store_queue(st,
		                "INSERT INTO acks_through (recipient, msg_id) VALUES (?1, ?2) ON "
		                "CONFLICT (recipient) DO UPDATE SET msg_id = max(msg_id, "
		                "excluded.msg_id)",
		                "ti", ib->name, ib->am.mark) == 0)
			ib->mark_saved = ib->am.mark;
	}
	b->ndirty = 0;
}

void
bus_sync_rows(struct bus *b)
{
	/* By index on the live array: a write may log, and whatever that
	 * leads to may add entries (appended, and written by this loop) or
	 * drop deliveries (their slots become NULL). */
	for (size_t i = 0; i < b->unsaved.n; i++) {
		if (b->unsaved.v[i] != NULL)
			delivery_write(b, b->unsaved.v[i], DELIVERY_PENDING, 0);
	}
	b->unsaved.n = 0;
	bus_write_marks(b);
}

/* Writes the rows of the first attempts in bus.later that went out before
 * `before` (monotonic ms), and drops the entries gone. */
static void
bus_write_later(struct bus *b, int64_t before)
{
	struct dvec *l = &b->later;
	while (b->later_head < l->n) {
		struct delivery *d = l->v[b->later_head];
		if (d != NULL && d->sent_ms >= before)
			break;
		b->later_head++;
		if (d != NULL)
			delivery_write(b, d, DELIVERY_PENDING, 0);
	}
	if (b->later_head == l->n) {
		l->n = b->later_head = 0;
	} else if (b->later_head > 1024 && b->later_head > l->n / 2) {
		/* Under a steady flow it never empties: slide it down. */
		l->n -= b->later_head;
		memmove(l->v, l->v + b->later_head, l->n * sizeof *l->v);
		b->later_head = 0;
		for (size_t i = 0; i < l->n; i++)
			if (l->v[i] != NULL)
				l->v[i]->later = i + 1;
	}
}

static void
bus_on_later_timer(uv_timer_t *t)
{
	struct bus *b = t->data;
	int64_t now = time_mono_ms();
	bus_write_later(b, now - BUS_LATER_MS + 1);
	for (size_t i = b->later_head; i < b->later.n; i++) {
		const struct delivery *d = b->later.v[i];
		if (d != NULL) {
			int64_t wait = d->sent_ms + BUS_LATER_MS - now;
			uv_timer_start(t, bus_on_later_timer, wait > 0 ? (uint64_t)wait : 0, 0);
			return;
		}
	}
}

/* The store_before_commit hook: writes the rows that lag behind. */
static void
bus_write_unsaved(void *arg)
{
	struct bus *b = arg;
	bus_sync_rows(b);
	if (time_mono_ms() - b->floor_saved_ms >= BUS_FLOOR_MS)
		bus_save_floor(b);
}

/* Removes a delivery entirely and frees it.  A row not yet up to date is
 * written now (acks and deaths write theirs first, which clears unsaved). */
static void
delivery_drop(struct bus *b, struct delivery *d)
{
	if (d->unsaved || d->later)
		delivery_write(b, d, DELIVERY_PENDING, 0);
	if (d->msg->unstored)
		delivery_unmark(b, d);
	if (d->inflight)
		delivery_unflight(b, d);
	else
		dlist_remove(&d->inbox->q[d->msg->prio], d);
	intmap_del(&d->inbox->byid, d->msg->id);
	b->st.pending--;
	struct bmsg *m = d->msg;
	delivery_free(d);
	bmsg_unref(b, m);
}

/* ---- flow control ------------------------------------------------------ */
/* An agent that sends to a recipient with bus.high_water messages queued is
 * throttled: its lines are not read (the pipe or socket fills and its
 * writes block) until that queue is down to half, instead of its sends
 * being refused.  An agent with messages in flight to it (or tasks
 * running) is never throttled, and one is let go when a message is
 * delivered to it: its acks must be read.  So two agents sending to each
 * other cannot wait on each other: a throttled agent is one with nothing
 * to acknowledge, and a queue that does not drain belongs to a recipient
 * that is not running.  (Also let go after its heartbeat timeout: agent.c.) */

/* After a send from agent `sender` routed to `to`. */
static void
bus_throttle_check(struct bus *b, const char *sender, struct inbox **to, size_t n)
{
	size_t high = (size_t)orch_config(b->orch)->bus.high_water;
	struct inbox *full = NULL;
	for (size_t i = 0; i < n && full == NULL; i++)
		if (inbox_queued(to[i]) >= high)
			full = to[i];
	if (full == NULL)
		return;
	struct agent *a = agents_find(orch_agents(b->orch), sender);
	if (a == NULL || a->throttled_by != NULL || a->running_tasks > 0)
		return; /* (a task's results must be read too) */
	struct inbox *own = bus_inbox(b, sender, false);
	if (own != NULL && own->inflight.n > 0)
		return;
	if (!agent_throttle(a, full->name))
		return;
	size_t i = 0;
	while (i < full->nwaiters && strcmp(full->waiters[i], sender) != 0)
		i++;
	if (i == full->nwaiters) {
		if (full->nwaiters == full->waiters_cap) {
			full->waiters_cap = full->waiters_cap ? full->waiters_cap * 2 : 4;
			full->waiters =
			    xreallocarray(full->waiters, full->waiters_cap, sizeof *full->waiters);
		}
		full->waiters[full->nwaiters++] = xstrdup(sender);
	}
	b->st.throttled++;
	log_debug(orch_log(b->orch), "bus", "%s throttled: %zu messages wait for %s", sender,
	          inbox_queued(full), full->name);
}

/* Lets the agents waiting for ib go once its queue is down to half. */
static void
inbox_release(struct bus *b, struct inbox *ib)
{
	if (ib->nwaiters == 0 ||
	    inbox_queued(ib) > (size_t)orch_config(b->orch)->bus.high_water / 2)
		return;
	for (size_t i = 0; i < ib->nwaiters; i++) {
		struct agent *a = agents_find(orch_agents(b->orch), ib->waiters[i]);
		if (a != NULL && a->throttled_by != NULL && strcmp(a->throttled_by, ib->name) == 0)
			agent_unthrottle(a);
		free(ib->waiters[i]);
	}
	ib->nwaiters = 0;
}

/* One of the bus's reused buffers, emptied.  One that a big body grew is
 * let go. */
static struct buf *
bus_scratch(struct buf *s)
{
	if (s->cap > BUS_LINE_KEEP)
		buf_free(s);
	s->len = 0;
	return s;
}

/* Appends the `message` line for a delivery to out.  Names and topics are
 * from a safe character set and the body is already JSON, so no
 * re-encoding. */
static void
delivery_line(const struct delivery *d, struct buf *out)
{
	const struct bmsg *m = d->msg;
	char ts[40];
	time_iso8601(m->ts_ms, ts, sizeof ts);
	size_t blen = m->blen;
	buf_reserve(out, blen + 256);
	buf_add_lit(out, "{\"type\":\"message\",\"id\":");
	buf_add_int(out, m->id);
	buf_add_lit(out, ",\"from\":\"");
	buf_add_fast(out, m->from, m->flen);
	buf_add_lit(out, "\",\"to\":\"");
	buf_add_fast(out, m->to, m->tlen);
	buf_add_lit(out, "\",\"body\":");
	buf_add_fast(out, m->body, blen);
	buf_add_lit(out, ",\"priority\":\"");
	const char *prio = proto_priority_name(m->prio), *mode = proto_mode_name(m->mode);
	buf_add_fast(out, prio, strlen(prio));
	buf_add_lit(out, "\",\"mode\":\"");
	buf_add_fast(out, mode, strlen(mode));
	buf_add_lit(out, "\",\"ts\":\"");
	buf_add_fast(out, ts, strlen(ts));
	buf_add_lit(out, "\",\"attempt\":");
	buf_add_int(out, d->attempt);
	if (m->reply_to > 0) {
		buf_add_lit(out, ",\"reply_to\":");
		buf_add_int(out, m->reply_to);
	}
	buf_add_lit(out, "}\n");
}

/* A dead delivery's entry in its inbox's ackmark, until its row commits. */
struct dead_mark {
	struct bus *b;
	struct inbox *ib;
	uint64_t slot;
};

/* After the commit of a dead delivery's row: the mark may pass it (its row
 * says dead).  If that commit failed, it stays below the mark. */
static void
bus_dead_committed(void *arg, int status)
{
	struct dead_mark *dm = arg;
	if (status == 0) {
		ackmark_done(&dm->ib->am, dm->slot);
		inbox_mark_dirty(dm->b, dm->ib);
	}
	free(dm);
}

/* Marks a delivery dead in the store and drops it. */
static void
delivery_dead(struct bus *b, struct delivery *d)
{
	delivery_write(b, d, DELIVERY_DEAD, time_wall_ms());
	if (d->mslot != 0 && d->stored) {
		struct dead_mark *dm = xmalloc(sizeof *dm);
		*dm = (struct dead_mark){b, d->inbox, d->mslot};
		store_after_commit(orch_store(b->orch), bus_dead_committed, dm);
		d->mslot = 0;
	}
	log_warn(orch_log(b->orch), "bus",
	         "message %lld from %s to %s is dead after %d attempts ('dead requeue %lld' "
	         "retries it)",
	         (long long)d->msg->id, d->msg->from, d->inbox->name, d->attempt,
	         (long long)d->msg->id);
	b->st.dead++;
	bus_emit(b, BUS_EV_DEAD, "dead", d->msg, d->inbox->name, d->attempt);
	delivery_drop(b, d);
}

/* Sends queued messages of an inbox while its window has room. */
static void
bus_dispatch(struct bus *b, struct inbox *ib)
{
	struct agent *a = inbox_agent(b, ib);
	if (a == NULL || (a->state != AGENT_READY && a->state != AGENT_BUSY))
		return;
	const struct config *cfg = orch_config(b->orch);
	size_t window = (size_t)cfg->bus.window;
	int64_t now = time_mono_ms();
	bool armed = b->ghead != NULL;
	while (ib->inflight.n < window) {
		struct delivery *d = NULL;
		for (int p = PRIO_N - 1; p >= 0 && d == NULL; p--)
			d = ib->q[p].head;
		if (d == NULL)
			break;
		if (d->msg->unstored) {
			delivery_drop(b, d);
			continue;
		}
		dlist_remove(&ib->q[d->msg->prio], d);
		d->attempt++;
		d->inflight = true;
		d->sent_ms = now;
		d->deadline = now + (int64_t)(cfg->bus.ack_timeout * 1000.0);
		dlist_push_back(&ib->inflight, d);
		d->gprev = b->gtail;
		d->gnext = NULL;
		if (b->gtail)
			b->gtail->gnext = d;
		else
			b->ghead = d;
		b->gtail = d;
		b->st.inflight++;
		if (d->attempt > 1)
			b->st.redelivered++;
		/* Every attempt is recorded (at its commit point; the first of
		 * a direct message after BUS_LATER_MS, unless acked by then),
		 * so that after a crash the count goes on and max_attempts
		 * holds even for a message that crashes us. */
		if (d->msg->direct && !d->stored && d->attempt == 1)
			delivery_defer_later(b, d);
		else
			delivery_defer_write(b, d);
		agent_unthrottle(a); /* (its ack must be read) */
		if (ib->drop_rate > 0 && bus_random(b) < ib->drop_rate) {
			b->st.dropped++; /* chaos: lost on the way; redelivered later */
			continue;
		}
		struct buf *line = bus_scratch(&b->line);
		delivery_line(d, line);
		if (agent_send_owed(a, line->data, line->len) == 0) /* (its ack is owed) */
			a->msgs_received++;
		b->st.delivered++;
		bus_emit(b, BUS_EV_DELIVERED, "delivered", d->msg, ib->name, d->attempt);
	}
	if (!armed && b->ghead != NULL)
		bus_arm_timer(b);
	inbox_release(b, ib);
}

/* Ack deadlines: overdue messages go back to the front of their queue, or
 * die after max_attempts. */
static void
bus_on_timer(uv_timer_t *t)
{
	struct bus *b = t->data;
	int64_t now = time_mono_ms();
	int max = orch_config(b->orch)->bus.max_attempts;
	struct strmap touched;
	strmap_init(&touched);
	while (b->ghead != NULL && b->ghead->deadline <= now) {
		struct delivery *d = b->ghead;
		/* Its inbox has room in flight now, whatever happens next. */
		strmap_set(&touched, d->inbox->name, d->inbox);
		if (d->msg->unstored) {
			delivery_drop(b, d);
			continue;
		}
		if (d->attempt >= max) {
			/* Straight from flight: unflighted first, delivery_drop
			 * would unlink it from a queue it is not in (and empty
			 * that queue; found by check-valgrind). */
			delivery_dead(b, d);
			continue;
		}
		delivery_unflight(b, d);
		dlist_push_front(&d->inbox->q[d->msg->prio], d);
		log_debug(orch_log(b->orch), "bus",
		          "message %lld to %s not acked in time (attempt %d)",
		          (long long)d->msg->id, d->inbox->name, d->attempt);
	}
	size_t it = 0;
	void *v;
	while (strmap_next(&touched, &it, NULL, &v))
		bus_dispatch(b, v);
	strmap_free(&touched);
	bus_arm_timer(b);
}

void
bus_agent_ready(struct bus *b, struct agent *a)
{
	struct inbox *ib = bus_inbox(b, a->name, false);
	if (ib != NULL)
		bus_dispatch(b, ib);
}

void
bus_agent_gone(struct bus *b, struct agent *a)
{
	struct inbox *ib = bus_inbox(b, a->name, false);
	if (ib == NULL)
		return;
	/* Its unacked messages come back first, in their order. */
	while (ib->inflight.tail != NULL) {
		struct delivery *d = ib->inflight.tail;
		if (d->msg->unstored) {
			delivery_drop(b, d);
			continue;
		}
		delivery_unflight(b, d);
		dlist_push_front(&ib->q[d->msg->prio], d);
	}
	bus_arm_timer(b);
}

/* ---- accepting -------------------------------------------------------- */

/* Drops what a message left in the inboxes, once its commit has failed.
 * Deliveries in flight stay until acked, so that their recipients' acks
 * are not refused, but are never delivered again (bus_dispatch, the ack
 * timer and bus_agent_gone drop them instead). */
static void
bus_unroute(struct bus *b, struct bmsg *m)
{
	m->unstored = true;
	size_t it = 0;
	void *v;
	while (strmap_next(&b->inboxes, &it, NULL, &v)) {
		struct inbox *ib = v;
		struct delivery *d = intmap_get(&ib->byid, m->id);
		if (d != NULL && !d->inflight)
			delivery_drop(b, d);
	}
}

/* After the group commit: answer the senders. */
static void
bus_batch_committed(void *arg, int status)
{
	struct batch *bt = arg;
	struct bus *b = bt->b;
	if (b->batch == bt)
		b->batch = NULL;
	struct pending *p = bt->head;
	free(bt);
	/* A batch's answers mostly go to one sender in a row: its agent is
	 * looked up once per run (agents are freed only at exit). */
	struct agent *sender = NULL;
	for (struct pending *next; p != NULL; p = next) {
		next = p->next;
		if (p->sender == NULL)
			sender = NULL;
		else if (sender == NULL || strcmp(p->sender, sender->name) != 0)
			sender = agents_find(orch_agents(b->orch), p->sender);
		if (status != 0) {
			bus_unroute(b, p->msg);
			if (sender != NULL)
				agent_send_error(
				    sender, PERR_STORE,
				    "message not stored (store failure); send it again", p->ref);
			if (p->done)
				p->done(p->done_arg, 0, 0, PERR_STORE,
				        "message not stored (store failure)");
		} else {
			p->msg->txn = 0;
			b->st.accepted++;
			if (sender != NULL) {
				sender->msgs_sent++;
				struct buf *line = bus_scratch(&b->line);
				proto_sent_add(line, p->ref, p->msg->id);
				agent_send_text(sender, line->data, line->len);
			}
			if (p->done)
				p->done(p->done_arg, p->msg->id, p->nto, NULL, NULL);
		}
		bmsg_unref(b, p->msg); /* (p was in it) */
	}
}

/* Queues a just-accepted message for its recipients and sends what their
 * windows allow. */
static void
bus_route_msg(struct bus *b, struct bmsg *m, struct inbox **to, size_t n)
{
	intmap_set(&b->msgs, m->id, m);
	for (size_t i = 0; i < n; i++) {
		struct delivery *d = delivery_new(m);
		d->inbox = to[i];
		m->refs++;
		dlist_push_back(&to[i]->q[m->prio], d);
		intmap_set(&to[i]->byid, m->id, d);
		b->st.pending++;
		/* A broadcast's row joins the message's transaction at the
		 * commit point: one insert, of the state it has by then.  A
		 * direct message's waits (delivery_write), and its ack may
		 * need none (the mark: ackmark.h). */
		if (!m->direct)
			delivery_defer_write(b, d);
		else if (b->hooked)
			d->mslot = ackmark_push(&to[i]->am, m->id);
	}
	bus_emit(b, BUS_EV_ACCEPTED, "accepted", m, NULL, 0);
	for (size_t i = 0; i < n; i++)
		bus_dispatch(b, to[i]);
}

static void
route_free(struct inbox **v, struct inbox *one[1])
{
	if (v != one)
		free(v);
}

/* Resolves the recipients of `to`.  Returns the count (array in *out, may
 * be empty for a topic) or -1 with an error code and detail.  *out is
 * `one` for a direct message or one to the captain (no allocation for the
 * usual case), else allocated; route_free frees it. */
static long
bus_route(struct bus *b, const char *from, const char *to, struct inbox *one[1],
          struct inbox ***out, const char **code, char **detail)
{
	struct agents *as = orch_agents(b->orch);
	struct inbox **v = one;
	size_t n = 0;
	if (strcmp(to, "*") == 0) {
		v = xcalloc(agents_count(as) + 1, sizeof *v);
		for (size_t i = 0; i < agents_count(as); i++) {
			struct agent *a = agents_at(as, i);
			if (strcmp(a->name, from) != 0)
				v[n++] = bus_inbox(b, a->name, true);
		}
	} else if (to[0] == '#') {
		if (!proto_valid_topic(to + 1)) {
			*code = PERR_BAD_TOPIC;
			*detail = xasprintf("'%s' is not a valid topic", to);
			return -1;
		}
		struct strmap *subs = strmap_get(&b->topics, to + 1);
		v = xcalloc((subs ? subs->n : 0) + 1, sizeof *v);
		size_t it = 0;
		const char *name;
		while (subs != NULL && strmap_next(subs, &it, &name, NULL)) {
			if (strcmp(name, from) != 0)
				v[n++] = bus_inbox(b, name, true);
		}
	} else if (strcmp(to, from) == 0) {
		*code = PERR_SEND_TO_SELF;
		*detail = xasprintf("%s cannot send a message to itself", from);
		return -1;
	} else if (strcmp(to, "captain") == 0) {
		/* To the operator: stored and shown (history, the TUI), with no
		 * delivery to wait for. */
	} else if (b->last_to != NULL && strcmp(to, b->last_to->name) == 0) {
		v[n++] = b->last_to;
	} else {
		struct inbox *ib = bus_inbox(b, to, false);
		if ((ib != NULL ? inbox_agent(b, ib) : agents_find(as, to)) == NULL) {
			*code = PERR_UNKNOWN_RECIPIENT;
			*detail = xasprintf("no agent named '%s'", to);
			return -1;
		}
		v[n++] = b->last_to = ib != NULL ? ib : bus_inbox(b, to, true);
	}
	for (size_t i = 0; i < n; i++) {
		if (inbox_queued(v[i]) >= BUS_MAX_INBOX) {
			*code = PERR_BACKPRESSURE;
			*detail = xasprintf("'%s' has %d messages waiting; try again later",
			                    v[i]->name, BUS_MAX_INBOX);
			route_free(v, one);
			return -1;
		}
	}
	*out = v;
	return (long)n;
}

/* Validates, stores and batches one message.  Returns 0, or -1 with an
 * error code and detail (caller frees detail). */
static int
bus_accept(struct bus *b, const struct bus_send_req *req, const char *sender, const char *ref,
           bus_sent_fn done, void *done_arg, const char **code, char **detail)
{
	const struct config *cfg = orch_config(b->orch);
	size_t blen = strlen(req->body);
	if (blen > cfg->bus.max_body) {
		*code = PERR_BODY_TOO_LARGE;
		*detail = xasprintf("body is %zu bytes, bus.max_body is %llu", blen,
		                    (unsigned long long)cfg->bus.max_body);
		return -1;
	}
	struct inbox *one[1], **to = NULL;
	long n = bus_route(b, req->from, req->to, one, &to, code, detail);
	if (n < 0)
		return -1;

	struct store *st = orch_store(b->orch);
	int64_t id = idlease_take(&b->ids);
	if (id == 0) {
		route_free(to, one);
		*code = PERR_STORE;
		*detail = xasprintf("message not stored: no message id reserved (%s)",
		                    st ? store_state(st) : "no store");
		return -1;
	}
	int64_t now = time_wall_ms();
	/* The clock went back: keep times growing with ids (bus_first_id_at),
	 * unless by more than a minute, then the earlier time was wrong. */
	if (now < b->last_ts && b->last_ts - now <= BUS_CLOCK_STEP_MS)
		now = b->last_ts;
	/* Queued: the loop goes on while the store thread packs it with the
	 * rest of the commit's (packtab.h; no reply_to: the last value is
	 * NULL, its argument unused). */
	int rc =
	    store_queue_packed(st, &packtab_messages, req->reply_to > 0 ? "iittitTi" : "iittitTn",
	                       id, now, req->from, req->to, (int64_t)req->priority,
	                       proto_mode_name(req->mode), req->body, blen, req->reply_to);
	if (rc != 0) {
		route_free(to, one);
		*code = PERR_STORE;
		*detail = xasprintf("message not stored: %s", store_state(st));
		return -1;
	}
	/* Its one reference is the pending answer's, which lives in it (and
	 * is done with when that reference goes). */
	size_t slen = sender ? strlen(sender) + 1 : 0, rlen = ref ? strlen(ref) + 1 : 0;
	size_t dlen = bus_target_direct(req->to) ? sizeof(struct delivery) : 0;
	struct pending *p;
	struct bmsg *m = bmsg_alloc(b, id, req->from, req->to, req->body, blen,
	                            sizeof *p + dlen + slen + rlen, (void **)&p);
	/* A direct message's one delivery goes right after its answer. */
	_Static_assert(sizeof(struct pending) % _Alignof(struct delivery) == 0,
	               "a delivery after a pending answer must be aligned");
	char *strs = (char *)(p + 1);
	if (dlen > 0) {
		m->d0 = (struct delivery *)(void *)(p + 1);
		strs += dlen;
	}
	m->prio = req->priority;
	m->mode = req->mode;
	m->ts_ms = now;
	b->last_ts = now;
	m->reply_to = req->reply_to;
	m->txn = store_txn_seq(st);
	if (id > b->st.last_id)
		b->st.last_id = id;

	p->msg = m;
	p->nto = (int)n;
	if (sender != NULL)
		p->sender = memcpy(strs, sender, slen);
	if (ref != NULL)
		p->ref = memcpy(strs + slen, ref, rlen);
	p->done = done;
	p->done_arg = done_arg;
	if (b->batch == NULL || b->batch->txn != store_txn_seq(st)) {
		b->batch = xcalloc(1, sizeof *b->batch);
		b->batch->b = b;
		b->batch->txn = store_txn_seq(st);
		b->batch->tail = &b->batch->head;
		store_after_commit(st, bus_batch_committed, b->batch);
	}
	*b->batch->tail = p;
	b->batch->tail = &p->next;
	bus_route_msg(b, m, to, (size_t)n);
	if (sender != NULL)
		bus_throttle_check(b, sender, to, (size_t)n);
	route_free(to, one);
	return 0;
}

void
bus_send(struct bus *b, const struct bus_send_req *req, bus_sent_fn done, void *arg)
{
	const char *code = NULL;
	char *detail = NULL;
	if (bus_accept(b, req, NULL, NULL, done, arg, &code, &detail) != 0) {
		done(arg, 0, 0, code, detail);
		free(detail);
	}
}

/* send from an agent. */
static void
bus_on_send(struct bus *b, struct agent *a, const struct proto_msg *m)
{
	const char *ref = proto_str(m, "ref");
	struct bus_send_req req = {.from = a->name, .to = proto_str(m, "to")};
	const char *ps = proto_str(m, "priority"), *ms = proto_str(m, "mode");
	req.priority = PRIO_NORMAL;
	req.mode = MODE_NORMAL;
	if (ps != NULL)
		proto_priority_parse(ps, &req.priority);
	if (ms != NULL)
		proto_mode_parse(ms, &req.mode);
	req.reply_to = proto_int(m, "reply_to", 0);
	/* The body is kept as compact JSON text (a flat line's string is
	 * copied as it came), in the bus's body buffer unless a send that
	 * bus_accept's events led to (an extension's agent answering, say) is
	 * using it: then in one of its own. */
	struct buf own, *body = &own;
	buf_init(&own);
	bool scratch = !b->body_busy;
	if (scratch) {
		body = bus_scratch(&b->body);
		b->body_busy = true;
	}
	proto_json_add(m, "body", body);
	req.body = buf_cstr(body);
	const char *code = NULL;
	char *detail = NULL;
	if (bus_accept(b, &req, a->name, ref, NULL, NULL, &code, &detail) != 0) {
		char *d = xasprintf("send: %s", detail);
		agent_send_error(a, code, d, ref);
		free(d);
		free(detail);
	}
	if (scratch)
		b->body_busy = false;
	buf_free(&own);
}

/* ack from an agent. */
static void
bus_on_ack(struct bus *b, struct agent *a, const struct proto_msg *m)
{
	int64_t id = proto_int(m, "id", 0);
	struct inbox *ib = b->last_acker_ib;
	if (a != b->last_acker) {
		ib = bus_inbox(b, a->name, false);
		if (ib != NULL) {
			b->last_acker = a;
			b->last_acker_ib = ib;
		}
	}
	struct delivery *d = ib ? intmap_get(&ib->byid, id) : NULL;
	struct store *st = orch_store(b->orch);
	if (d != NULL && d->attempt == 0) {
		/* Queued for this agent but never delivered: it cannot know the id. */
		char why[96];
		snprintf(why, sizeof why, "ack: message %lld was not delivered to you yet",
		         (long long)id);
		agent_send_error(a, PERR_UNKNOWN_MESSAGE, why, proto_str(m, "ref"));
		return;
	}
	if (d != NULL) {
		if (d->mslot != 0 && !d->stored && !d->msg->unstored) {
			/* Its row, if the mark cannot cover it, is written at
			 * the commit point (bus_write_marks). */
			delivery_saved(b, d);
			ackmark_ack(&ib->am, d->mslot, d->attempt, time_wall_ms());
			d->mslot = 0;
			inbox_mark_dirty(b, ib);
		} else {
			delivery_write(b, d, DELIVERY_ACKED, time_wall_ms());
			delivery_unmark(b, d);
		}
		b->st.acked++;
		bus_emit(b, BUS_EV_ACKED, "acked", d->msg, ib->name, d->attempt);
		delivery_drop(b, d);
		if (b->ghead == NULL)
			uv_timer_stop(b->timer);
		bus_dispatch(b, ib);
		return;
	}
	/* Not pending for this agent: a repeated ack is harmless; anything
	 * else is an error.  (The marks first: the first ack may be this
	 * turn's.) */
	bus_sync_rows(b);
	sqlite3_stmt *s =
	    store_stmt(st, "SELECT coalesce((SELECT state FROM deliveries WHERE "
	                   "recipient = ?1 AND msg_id = ?2), (SELECT 1 FROM "
	                   "messages m WHERE id = ?2 AND target = ?1 AND " BUS_SQL_MARKED(
	                       "m") ")), EXISTS (SELECT 1 FROM "
	                            "messages WHERE id = ?2)");
	int mine = -1, exists = 0;
	if (s != NULL) {
		sqlite3_bind_text(s, 1, a->name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 2, id);
		if (sqlite3_step(s) == SQLITE_ROW) {
			mine = sqlite3_column_type(s, 0) == SQLITE_NULL ? -1
			                                                : sqlite3_column_int(s, 0);
			exists = sqlite3_column_int(s, 1);
		}
		sqlite3_reset(s);
	}
	if (mine >= 0)
		return;
	char why[96];
	if (exists) {
		snprintf(why, sizeof why, "ack: message %lld was not sent to you", (long long)id);
		agent_send_error(a, PERR_NOT_YOUR_MESSAGE, why, proto_str(m, "ref"));
	} else {
		snprintf(why, sizeof why, "ack: no message %lld", (long long)id);
		agent_send_error(a, PERR_UNKNOWN_MESSAGE, why, proto_str(m, "ref"));
	}
}

/* subscribe / unsubscribe from an agent. */
static void
bus_on_subscribe(struct bus *b, struct agent *a, const struct proto_msg *m, bool on)
{
	const char *topic = proto_str(m, "topic");
	if (topic[0] == '#')
		topic++;
	struct strmap *subs = strmap_get(&b->topics, topic);
	struct store *st = orch_store(b->orch);
	if (on) {
		if (subs == NULL) {
			subs = xcalloc(1, sizeof *subs);
			strmap_init(subs);
			strmap_set(&b->topics, topic, subs);
		}
		strmap_set(subs, a->name, a);
		sqlite3_stmt *s = store_stmt(st, "INSERT OR IGNORE INTO subscriptions (agent, "
		                                 "topic) VALUES (?1, ?2)");
		if (s != NULL) {
			sqlite3_bind_text(s, 1, a->name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(s, 2, topic, -1, SQLITE_TRANSIENT);
			store_step_write(st, s);
		}
	} else {
		if (subs != NULL)
			strmap_del(subs, a->name);
		sqlite3_stmt *s = store_stmt(st, "DELETE FROM subscriptions WHERE agent = ?1 AND "
		                                 "topic = ?2");
		if (s != NULL) {
			sqlite3_bind_text(s, 1, a->name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(s, 2, topic, -1, SQLITE_TRANSIENT);
			store_step_write(st, s);
		}
	}
	log_debug(orch_log(b->orch), a->name, "%s #%s", on ? "subscribed to" : "unsubscribed from",
	          topic);
}

bool
bus_agent_message(struct bus *b, struct agent *a, const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_SEND:
		bus_on_send(b, a, m);
		return true;
	case PROTO_ACK:
		bus_on_ack(b, a, m);
		return true;
	case PROTO_SUBSCRIBE:
	case PROTO_UNSUBSCRIBE:
		bus_on_subscribe(b, a, m, m->type == PROTO_SUBSCRIBE);
		return true;
	default:
		return false;
	}
}

/* ---- recovery --------------------------------------------------------- */

int
bus_recover(struct bus *b, char **cause)
{
	struct store *st = orch_store(b->orch);
	/* (The reservation in kv is at or above every id ever given: no id
	 * comes back, even one that retention deleted.) */
	sqlite3_stmt *s = store_stmt(st, packtab_messages.last_key);
	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		b->st.last_id = sqlite3_column_int64(s, 0);
	if (s != NULL)
		sqlite3_reset(s);
	idlease_open(&b->ids, st, "message_ids", b->st.last_id);
	s = store_stmt(st, "SELECT ts_ms FROM messages ORDER BY id DESC LIMIT 1");
	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		b->last_ts = sqlite3_column_int64(s, 0);
	if (s != NULL)
		sqlite3_reset(s);

	s = store_stmt(st, "SELECT agent, topic FROM subscriptions");
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		const char *agent = (const char *)sqlite3_column_text(s, 0);
		const char *topic = (const char *)sqlite3_column_text(s, 1);
		struct strmap *subs = strmap_get(&b->topics, topic);
		if (subs == NULL) {
			subs = xcalloc(1, sizeof *subs);
			strmap_init(subs);
			strmap_set(&b->topics, topic, subs);
		}
		strmap_set(subs, agent, b);
	}
	if (s != NULL)
		sqlite3_reset(s);

	char *fl = store_kv_get(st, "dreamos", "message_floor");
	b->floor = fl ? strtoll(fl, NULL, 10) : 0;
	free(fl);
	b->floor_saved_ms = time_mono_ms();
	/* Pending rows, and direct messages without a delivery row. */
	s = store_stmt(st, "SELECT d.recipient, d.attempt, m.id, m.ts_ms, m.sender, m.target, "
	                   "m.priority, m.mode, m.body, m.reply_to, 1 FROM deliveries d JOIN "
	                   "messages m ON m.id = d.msg_id WHERE d.msg_id >= ?1 AND d.state = 0 "
	                   "UNION ALL SELECT m.target, 0, m.id, m.ts_ms, m.sender, m.target, "
	                   "m.priority, m.mode, m.body, m.reply_to, 0 FROM messages m WHERE "
	                   "m.id >= ?1 AND " BUS_SQL_ROWLESS("m") " ORDER BY 3");
	if (s != NULL)
		sqlite3_bind_int64(s, 1, b->floor);
	size_t n = 0;
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 2);
		struct bmsg *m = intmap_get(&b->msgs, id);
		if (m == NULL) {
			m = bmsg_from_row(b, s, 3, id);
			intmap_set(&b->msgs, id, m);
		}
		struct inbox *ib = bus_inbox(b, (const char *)sqlite3_column_text(s, 0), true);
		struct delivery *d = delivery_new(m);
		d->inbox = ib;
		d->stored = sqlite3_column_int(s, 10) != 0;
		d->attempt = sqlite3_column_int(s, 1);
		if (!d->stored && b->hooked) /* (in id order: ORDER BY) */
			d->mslot = ackmark_push(&ib->am, id);
		m->refs++;
		dlist_push_back(&ib->q[m->prio], d);
		intmap_set(&ib->byid, id, d);
		b->st.pending++;
		n++;
	}
	if (s != NULL)
		sqlite3_reset(s);
	s = store_stmt(st, "SELECT count(*) FROM deliveries WHERE state = 2");
	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		b->st.dead = (uint64_t)sqlite3_column_int64(s, 0);
	if (s != NULL)
		sqlite3_reset(s);
	if (n > 0)
		log_info(orch_log(b->orch), "bus",
		         "recovered %zu pending deliveries (last id %lld)", n,
		         (long long)b->st.last_id);
	b->recovered = true;
	(void)cause;
	return 0;
}

/* ---- misc ------------------------------------------------------------- */

void
bus_stats(const struct bus *b, struct bus_stats *out)
{
	*out = b->st;
	out->floor = b->floor;
}

void
bus_set_drop(struct bus *b, const char *name, double rate)
{
	struct inbox *ib = bus_inbox(b, name, true);
	ib->drop_rate = rate;
}

int
bus_subscribe_events(struct bus *b, unsigned mask, bus_event_fn fn, void *arg)
{
	b->listeners = xreallocarray(b->listeners, b->nlisteners + 1, sizeof *b->listeners);
	b->listeners[b->nlisteners] = (struct bus_listener){++b->next_listener, mask, fn, arg};
	b->nlisteners++;
	return b->next_listener;
}

void
bus_unsubscribe_events(struct bus *b, int id)
{
	for (size_t i = 0; i < b->nlisteners; i++) {
		if (b->listeners[i].id == id) {
			memmove(&b->listeners[i], &b->listeners[i + 1],
			        (b->nlisteners - i - 1) * sizeof *b->listeners);
			b->nlisteners--;
			return;
		}
	}
}

/* Requeues a dead message for all its dead deliveries.  Returns the number
 * requeued, or -1 if the id has no dead delivery. */
int
bus_dead_requeue(struct bus *b, int64_t id)
{
	struct store *st = orch_store(b->orch);
	sqlite3_stmt *s =
	    store_stmt(st, "SELECT d.recipient, m.ts_ms, m.sender, m.target, "
	                   "m.priority, m.mode, m.body, m.reply_to FROM deliveries d "
	                   "JOIN messages m ON m.id = d.msg_id WHERE d.msg_id = ?1 AND "
	                   "d.state = 2");
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	char **names = NULL;
	size_t n = 0;
	struct bmsg *m = intmap_get(&b->msgs, id);
	bool fresh = m == NULL;
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (m == NULL)
			m = bmsg_from_row(b, s, 1, id);
		names = xreallocarray(names, n + 1, sizeof *names);
		names[n++] = xstrdup((const char *)sqlite3_column_text(s, 0));
	}
	sqlite3_reset(s);
	if (n == 0) {
		free(names);
		return -1;
	}
	if (fresh)
		intmap_set(&b->msgs, id, m);
	b->st.dead = b->st.dead >= (uint64_t)n ? b->st.dead - (uint64_t)n : 0;
	sqlite3_stmt *u = store_stmt(st, "UPDATE deliveries SET state = 0, attempt = 0, "
	                                 "updated_ms = ?1 WHERE msg_id = ?2 AND state = 2");
	if (u != NULL) {
		sqlite3_bind_int64(u, 1, time_wall_ms());
		sqlite3_bind_int64(u, 2, id);
		store_step_write(st, u);
	}
	bus_save_floor(b); /* (m is in b->msgs) recovery must find it */
	for (size_t i = 0; i < n; i++) {
		struct inbox *ib = bus_inbox(b, names[i], true);
		struct delivery *d = delivery_new(m);
		d->stored = true; /* its row, made pending again above */
		d->inbox = ib;
		m->refs++;
		dlist_push_back(&ib->q[m->prio], d);
		intmap_set(&ib->byid, id, d);
		b->st.pending++;
		bus_dispatch(b, ib);
		free(names[i]);
	}
	free(names);
	return (int)n;
}

/* The lowest id a message stored at or after ts_ms can have (one past the
 * newest if none is).  messages has no index on ts_ms: it would be a b-tree
 * written per message for the rare --since and retention.  Times never go
 * back as ids grow (bus_accept), so a binary search over ids finds it in
 * about 40 lookups of the primary key.  (A clock step back of more than
 * BUS_CLOCK_STEP_MS, or rows written before schema 7, make it approximate
 * around the step.) */
int64_t
bus_first_id_at(struct store *st, int64_t ts_ms)
{
	int64_t lo = 0, hi = 0;
	sqlite3_stmt *s = store_stmt(st, packtab_messages.last_key);
	if (s == NULL)
		return 0;
	if (sqlite3_step(s) == SQLITE_ROW)
		hi = sqlite3_column_int64(s, 0) + 1;
	sqlite3_reset(s);
	s = store_stmt(st, "SELECT ts_ms FROM messages WHERE id >= ?1 ORDER BY id LIMIT 1");
	if (s == NULL)
		return 0;
	while (lo < hi) { /* the answer lies in [lo, hi] */
		int64_t mid = lo + (hi - lo) / 2;
		sqlite3_bind_int64(s, 1, mid);
		bool newer = sqlite3_step(s) != SQLITE_ROW || sqlite3_column_int64(s, 0) >= ts_ms;
		sqlite3_reset(s);
		if (newer)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Deletes acknowledged history older than bus.retention. */
void
bus_prune(struct bus *b)
{
	double keep = orch_config(b->orch)->bus.retention;
	if (keep <= 0)
		return;
	struct store *st = orch_store(b->orch);
	int64_t below = bus_first_id_at(st, time_wall_ms() - (int64_t)(keep * 1000.0));
	/* Messages first, a block of them at a time (packtab.h): one whose
	 * messages are all older and none pending.  A direct message without
	 * a delivery row is pending, so one goes only with its acked row,
	 * which goes after it, and only once its block has gone. */
	sqlite3_stmt *s = store_stmt(
	    st, "DELETE FROM message_blocks AS b WHERE b.first_id < ?1 AND b.last_id < ?1 AND NOT "
	        "EXISTS (SELECT 1 FROM messages m WHERE m.id >= b.first_id AND m.id <= b.last_id "
	        "AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.state != 1) "
	        "OR " BUS_SQL_ROWLESS("m") "))");
	if (s != NULL) {
		sqlite3_bind_int64(s, 1, below);
		store_step_write(st, s);
	}
	s = store_stmt(st, "DELETE FROM deliveries AS d WHERE d.msg_id < ?1 AND d.state = 1 AND "
	                   "NOT " BUS_SQL_KEPT("d.msg_id"));
	if (s != NULL) {
		sqlite3_bind_int64(s, 1, below);
		store_step_write(st, s);
	}
}

/* For `verify` (cmd-chaos.c): calls fn once per delivery the bus holds in
 * memory (queued or in flight), inbox by inbox. */
void
bus_foreach_pending(struct bus *b, bus_pending_fn fn, void *arg)
{
	size_t it = 0;
	void *v;
	while (strmap_next(&b->inboxes, &it, NULL, &v)) {
		struct inbox *ib = v;
		for (int p = 0; p <= PRIO_N; p++) {
			const struct dlist *l = p < PRIO_N ? &ib->q[p] : &ib->inflight;
			for (const struct delivery *d = l->head; d != NULL; d = d->next) {
				if (!d->msg->unstored)
					fn(arg, ib->name, d->msg->id, d->inflight);
			}
		}
	}
}

/* The chaos drop rate in force for name (0 if none). */
double
bus_drop_rate(const struct bus *b, const char *name)
{
	const struct inbox *ib = strmap_get(&b->inboxes, name);
	return ib != NULL ? ib->drop_rate : 0.0;
}
