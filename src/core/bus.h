/* bus.h — the UnifiedMessageSystem: routing (direct, broadcast, topics),
 * priorities, durability before `sent`, at-least-once delivery with acks,
 * redelivery, dead letters, history.
 *
 * Every accepted message gets a monotonic id and is written to SQLite (a
 * row in messages, and for a broadcast or a topic one per recipient in
 * deliveries) in the current group transaction; the sender hears `sent`
 * only after that transaction commits (recipients may get it before).  A
 * direct message's delivery row is written when it dies or has its
 * attempt recorded, or when it is acked behind one still pending: until
 * then the message's row alone says it is pending, and once acked its
 * target's acked-through mark says so (BUS_SQL_DIRECT).  Each recipient
 * has an inbox: four FIFO queues (one per priority, higher first) and an
 * in-flight list bounded by bus.window.  An in-flight message comes back
 * to the front of its queue when its ack does not arrive within
 * bus.ack_timeout or when its recipient disconnects; after
 * bus.max_attempts it is dead. */
#ifndef DREAMOS_BUS_H
#define DREAMOS_BUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmd.h"
#include "proto.h"

/* SQL: whether the messages row aliased `m` is a direct message (to one
 * agent, named by target).  Such a message without a row in deliveries is
 * acked if its id is at or below its target's acked-through mark (table
 * acks_through, see ackmark.h), else pending to its target, with attempt
 * 0.  A row always says more than the mark. */
#define BUS_SQL_DIRECT(m)                                                                          \
	"(" m ".target NOT IN ('*', 'captain') AND substr(" m ".target, 1, 1) != '#')"
/* SQL: the acked-through mark of message `m`'s target (0 if none). */
#define BUS_SQL_MARK(m)                                                                            \
	"coalesce((SELECT a0.msg_id FROM acks_through a0 WHERE a0.recipient = " m ".target), 0)"
/* SQL: message `m` is direct and has no delivery row. */
#define BUS_SQL_NOROW(m)                                                                           \
	BUS_SQL_DIRECT(m)                                                                          \
	" AND NOT EXISTS (SELECT 1 FROM deliveries d0 WHERE "                                      \
	"d0.msg_id = " m ".id)"
/* SQL: whether message `m` has a delivery pending to it in the store
 * without a row (see above). */
#define BUS_SQL_ROWLESS(m) "(" BUS_SQL_NOROW(m) " AND " m ".id > " BUS_SQL_MARK(m) ")"
/* SQL: whether message `m` is direct and acked by its target's mark alone. */
#define BUS_SQL_MARKED(m) "(" BUS_SQL_NOROW(m) " AND " m ".id <= " BUS_SQL_MARK(m) ")"

struct orch;
struct agent;
struct bus;
struct store;

struct bus *bus_new(struct orch *o);
void bus_free(struct bus *b);
/* Loads pending deliveries and subscriptions from the store. */
int bus_recover(struct bus *b, char **cause);
/* Closes the timer (run the loop afterwards). */
void bus_close(struct bus *b);

/* Agent hooks. */
void bus_agent_ready(struct bus *b, struct agent *a);
void bus_agent_gone(struct bus *b, struct agent *a);
/* Handles send, ack, subscribe, unsubscribe; false for other types. */
bool bus_agent_message(struct bus *b, struct agent *a, const struct proto_msg *m);

/* Done callback of a send: id > 0 once durable, or 0 with an error. */
typedef void (*bus_sent_fn)(void *arg, int64_t id, int nrecipients, const char *err_code,
                            const char *err_detail);

struct bus_send_req {
	const char *from; /* agent name or "captain" */
	const char *to;   /* name, "*", "#topic" */
	const char *body; /* JSON text */
	enum proto_priority priority;
	enum proto_mode mode;
	int64_t reply_to; /* 0: none */
};
/* Accepts a message: validates, stores and routes it at once; done is
 * called once, after its commit (or before return on a validation error). */
void bus_send(struct bus *b, const struct bus_send_req *req, bus_sent_fn done, void *arg);

struct bus_stats {
	uint64_t accepted, delivered, redelivered, acked, dead, dropped;
	uint64_t throttled; /* times an agent sender was throttled (bus.high_water) */
	uint64_t pending;   /* queued + in flight */
	uint64_t inflight;
	int64_t last_id;
	int64_t floor; /* no pending delivery in the store below this id */
};
void bus_stats(const struct bus *b, struct bus_stats *out);

/* Chaos: drop a share (0..1) of the deliveries to agent name (they are
 * redelivered after ack_timeout).  0 turns it off. */
void bus_set_drop(struct bus *b, const char *name, double rate);
/* The drop rate in force for name (0 if none). */
double bus_drop_rate(const struct bus *b, const char *name);
/* Calls fn(arg, recipient, id, inflight) for every delivery held in memory
 * (for `verify`), but those of messages whose commit failed. */
typedef void (*bus_pending_fn)(void *arg, const char *recipient, int64_t id, bool inflight);
void bus_foreach_pending(struct bus *b, bus_pending_fn fn, void *arg);

/* Listeners for live traffic (TUI, Bridge observers). */
typedef void (*bus_event_fn)(void *arg, const char *event, const json_t *msg);
/* Events, as a mask: a listener is told only those it asks for (building
 * the JSON for every delivery and ack is not free). */
enum {
	BUS_EV_ACCEPTED = 1,
	BUS_EV_DELIVERED = 2,
	BUS_EV_ACKED = 4,
	BUS_EV_DEAD = 8,
	BUS_EV_ALL = 15,
};
int bus_subscribe_events(struct bus *b, unsigned mask, bus_event_fn fn, void *arg);
void bus_unsubscribe_events(struct bus *b, int id);

/* Requeues the dead deliveries of message id; returns how many, or -1. */
int bus_dead_requeue(struct bus *b, int64_t id);
/* Deletes acknowledged history older than bus.retention. */
void bus_prune(struct bus *b);
/* The lowest id a message stored at or after ts_ms (wall clock) can have. */
int64_t bus_first_id_at(struct store *st, int64_t ts_ms);
/* Deliveries' rows wait for the commit point (one write per delivery, not
 * one per change); this writes them into the open transaction now, so that
 * a query of this loop turn (history) sees every accepted message's. */
void bus_sync_rows(struct bus *b);

extern const struct cmd_entry cmd_bus_entries[];
extern const size_t cmd_bus_count;

#endif
