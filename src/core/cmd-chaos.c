/* cmd-chaos.c — chaos commands (kill, pause, resume, drop, store faults,
 * status) to exercise the restart policies, redelivery and the store's
 * failure path on a live system; and `verify`, which checks the invariants
 * the crash tests rely on: no stored message lost, every task in one state,
 * a sound database, ids that never go back.
 *
 * The state (pauses in force, the store fault) lives in a struct chaos the
 * orchestrator holds (orch_chaos), made on the first chaos command. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "bus.h"
#include "cmd.h"
#include "log.h"
#include "orch.h"
#include "spawn.h"
#include "store.h"
#include "strmap.h"
#include "task.h"

/* One SIGSTOP in force. */
struct chaos_pause {
	uv_timer_t timer; /* sends the SIGCONT */
	struct chaos *c;
	char *agent;
	pid_t pid;
	int64_t until_ms; /* monotonic */
	struct chaos_pause *next;
};

struct chaos {
	struct orch *orch;
	struct chaos_pause *pauses;
	int store_fault;      /* SQLite code every commit fails with, or 0 */
	const char *store_on; /* NULL: commits fail; else writes to this table */
	char note[128];       /* chaos_agent_note's answer */
};

/* Returns the orchestrator's chaos state, made on first use. */
static struct chaos *
chaos_get(struct orch *o)
{
	struct chaos **cp = orch_chaos(o);
	if (*cp == NULL) {
		*cp = xcalloc(1, sizeof **cp);
		(*cp)->orch = o;
	}
	return *cp;
}

/* Returns the pause in force for agent name, or NULL. */
static struct chaos_pause *
chaos_find_pause(struct chaos *c, const char *name)
{
	for (struct chaos_pause *p = c != NULL ? c->pauses : NULL; p != NULL; p = p->next)
		if (strcmp(p->agent, name) == 0)
			return p;
	return NULL;
}

/* Frees a pause once libuv is done with its timer. */
static void
chaos_pause_closed(uv_handle_t *h)
{
	struct chaos_pause *p = h->data;
	free(p->agent);
	free(p);
}

/* Ends pause p: SIGCONT if signal (and the agent still runs that process),
 * unlinks it and closes its timer.  why is logged. */
static void
chaos_pause_end(struct chaos *c, struct chaos_pause *p, bool signal, const char *why)
{
	for (struct chaos_pause **pp = &c->pauses; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	struct agent *a = c->orch != NULL ? agents_find(orch_agents(c->orch), p->agent) : NULL;
	if (signal) {
		if (a != NULL && a->pid == p->pid)
			spawn_signal(a, SIGCONT);
		else if (a == NULL && kill(-p->pid, SIGCONT) != 0)
			kill(p->pid, SIGCONT);
	}
	if (c->orch != NULL)
		log_info(orch_log(c->orch), p->agent, "chaos: pause of pid %ld ended (%s)",
		         (long)p->pid, why);
	uv_timer_stop(&p->timer);
	uv_close((uv_handle_t *)&p->timer, chaos_pause_closed);
}

/* The pause's time is up. */
static void
chaos_on_pause_timer(uv_timer_t *t)
{
	struct chaos_pause *p = t->data;
	chaos_pause_end(p->c, p, true, "SIGCONT after its duration");
}

void
chaos_agent_state(struct orch *o, struct agent *a, int old_state)
{
	(void)old_state;
	struct chaos *c = *orch_chaos(o);
	struct chaos_pause *p = chaos_find_pause(c, a->name);
	if (p == NULL)
		return;
	/* Stopping (captain, shutdown) or unhealthy (being restarted): let the
	 * process run, so that it can obey; once it has exited, nothing to do. */
	if (a->state == AGENT_STOPPING || a->state == AGENT_UNHEALTHY)
		chaos_pause_end(c, p, true, agent_state_name(a->state));
	else if (!agent_state_connected(a->state))
		chaos_pause_end(c, p, false, agent_state_name(a->state));
}

const char *
chaos_agent_note(struct orch *o, const struct agent *a)
{
	struct chaos *c = *orch_chaos(o);
	struct chaos_pause *p = chaos_find_pause(c, a->name);
	double rate = bus_drop_rate(orch_bus(o), a->name);
	if (p == NULL && rate <= 0)
		return NULL;
	size_t n = 0;
	c = chaos_get(o);
	c->note[0] = '\0';
	if (p != NULL) {
		double left = (double)(p->until_ms - time_mono_ms()) / 1000.0;
		n = (size_t)snprintf(c->note, sizeof c->note,
		                     "paused (SIGSTOP pid %ld), SIGCONT in %.1f s", (long)p->pid,
		                     left > 0 ? left : 0.0);
	}
	if (rate > 0 && n < sizeof c->note)
		snprintf(c->note + n, sizeof c->note - n, "%sdropping %.0f%% of deliveries",
		         n > 0 ? "; " : "", rate * 100.0);
	return c->note;
}

void
chaos_free(struct chaos *c)
{
	if (c == NULL)
		return;
	/* The agents may be gone already: signal the process groups. */
	c->orch = NULL;
	while (c->pauses != NULL)
		chaos_pause_end(c, c->pauses, true, "dreamos quits");
	free(c);
}

/* The tables `chaos store --table` may fail writes to (not logs, whose
 * writes report the failures). */
static const char *const chaos_tables[] = {"messages", "deliveries", "tasks"};

/* Whether sql writes to table. */
static bool
sql_writes_table(const char *sql, const char *table)
{
	static const char *const verbs[] = {"INSERT INTO ", "UPDATE ", "DELETE FROM "};
	size_t n = strlen(table);
	for (size_t i = 0; i < nitems(verbs); i++) {
		size_t v = strlen(verbs[i]);
		if (strncmp(sql, verbs[i], v) == 0 && strncmp(sql + v, table, n) == 0 &&
		    (sql[v + n] == ' ' || sql[v + n] == '('))
			return true;
	}
	return false;
}

/* The store fault hook: every commit, or every write to one table, fails
 * with c->store_fault. */
static int
chaos_store_fault(void *arg, const char *op)
{
	struct chaos *c = arg;
	bool hit = c->store_on ? sql_writes_table(op, c->store_on) : strcmp(op, "commit") == 0;
	return hit ? c->store_fault : 0;
}

/* ---- chaos commands --------------------------------------------------- */

/* Finds the agent named by argument 0, or sets an error. */
static struct agent *
chaos_agent_arg(struct cmd_ctx *ctx)
{
	struct agent *a = agents_find(orch_agents(ctx->orch), cmd_arg(ctx, 0));
	if (a == NULL)
		cmd_error(ctx, "%s: no agent named '%s' (see 'agent list')", ctx->entry->name,
		          cmd_arg(ctx, 0));
	return a;
}

static enum cmd_retval
cmd_chaos_kill_exec(struct cmd_ctx *ctx)
{
	struct agent *a = chaos_agent_arg(ctx);
	if (a == NULL)
		return CMD_ERROR;
	const char *how;
	if (a->proc != NULL && a->pid > 0) {
		pid_t pid = a->pid;
		if (spawn_signal(a, SIGKILL) != 0)
			return cmd_error(ctx, "chaos kill: cannot signal '%s' (pid %ld): %s",
			                 a->name, (long)pid, strerror(errno));
		how = "SIGKILL to its process group";
	} else if (a->link_ops != NULL && a->link_ops->close != NULL &&
	           agent_state_connected(a->state)) {
		a->link_ops->close(a);
		how = "link closed";
	} else {
		return cmd_error(ctx, "chaos kill: agent '%s' is %s: nothing to kill", a->name,
		                 agent_state_name(a->state));
	}
	log_warn(orch_log(ctx->orch), a->name, "chaos: killed (%s)", how);
	return cmd_result(ctx, json_pack("{s:s,s:s,s:s+}", "agent", a->name, "how", how, "message",
	                                 "killed: ", how));
}

static enum cmd_retval
cmd_chaos_pause_exec(struct cmd_ctx *ctx)
{
	struct agent *a = chaos_agent_arg(ctx);
	if (a == NULL)
		return CMD_ERROR;
	double secs;
	if (!parse_duration(cmd_arg(ctx, 1), &secs) || secs <= 0 || secs > 86400)
		return cmd_usage_error(ctx,
		                       "chaos pause: DURATION must be like 10s or 500ms "
		                       "(up to 24h), got '%s'",
		                       cmd_arg(ctx, 1));
	struct chaos *c = chaos_get(ctx->orch);
	struct chaos_pause *p = chaos_find_pause(c, a->name);
	if (p != NULL)
		return cmd_error(ctx, "chaos pause: '%s' is already paused (%s)", a->name,
		                 chaos_agent_note(ctx->orch, a));
	if (a->proc == NULL || a->pid <= 0 || !agent_state_connected(a->state))
		return cmd_error(ctx, "chaos pause: agent '%s' is %s, not a running process",
		                 a->name, agent_state_name(a->state));
	if (spawn_signal(a, SIGSTOP) != 0)
		return cmd_error(ctx, "chaos pause: cannot stop '%s' (pid %ld): %s", a->name,
		                 (long)a->pid, strerror(errno));
	p = xcalloc(1, sizeof *p);
	p->c = c;
	p->agent = xstrdup(a->name);
	p->pid = a->pid;
	p->until_ms = time_mono_ms() + (int64_t)(secs * 1000.0);
	uv_timer_init(orch_loop(ctx->orch), &p->timer);
	p->timer.data = p;
	uv_timer_start(&p->timer, chaos_on_pause_timer, (uint64_t)(secs * 1000.0), 0);
	p->next = c->pauses;
	c->pauses = p;
	char d[32];
	format_duration(secs, d, sizeof d);
	log_warn(orch_log(ctx->orch), a->name, "chaos: SIGSTOP pid %ld for %s", (long)p->pid, d);
	return cmd_result(ctx, json_pack("{s:s,s:I,s:f,s:s+}", "agent", a->name, "pid",
	                                 (json_int_t)p->pid, "seconds", secs, "message",
	                                 "paused (SIGSTOP) for ", d));
}

static enum cmd_retval
cmd_chaos_resume_exec(struct cmd_ctx *ctx)
{
	struct agent *a = chaos_agent_arg(ctx);
	if (a == NULL)
		return CMD_ERROR;
	struct chaos *c = *orch_chaos(ctx->orch);
	struct chaos_pause *p = chaos_find_pause(c, a->name);
	if (p == NULL)
		return cmd_error(ctx, "chaos resume: '%s' is not paused by chaos", a->name);
	chaos_pause_end(c, p, true, "chaos resume");
	return cmd_message(ctx, "%s: SIGCONT", a->name);
}

static enum cmd_retval
cmd_chaos_drop_exec(struct cmd_ctx *ctx)
{
	struct agent *a = chaos_agent_arg(ctx);
	if (a == NULL)
		return CMD_ERROR;
	char *end;
	double rate = strtod(cmd_arg(ctx, 1), &end);
	if (*end != '\0' || end == cmd_arg(ctx, 1) || !(rate >= 0 && rate <= 1))
		return cmd_usage_error(ctx,
		                       "chaos drop: RATE must be a number from 0 to 1, got '%s'",
		                       cmd_arg(ctx, 1));
	bus_set_drop(orch_bus(ctx->orch), a->name, rate);
	log_warn(orch_log(ctx->orch), a->name, "chaos: dropping %.0f%% of its deliveries",
	         rate * 100.0);
	if (rate == 0)
		return cmd_message(ctx, "%s: no more deliveries dropped", a->name);
	return cmd_message(ctx,
	                   "%s: %.0f%% of deliveries dropped (redelivered after bus.ack_timeout)",
	                   a->name, rate * 100.0);
}

static const struct {
	const char *name;
	int code;
} chaos_faults[] = {
    {"off", 0},
    {"full", SQLITE_FULL},
    {"ioerr", SQLITE_IOERR},
    {"busy", SQLITE_BUSY},
};

/* Returns the name of a fault code. */
static const char *
chaos_fault_name(int code)
{
	for (size_t i = 0; i < nitems(chaos_faults); i++)
		if (chaos_faults[i].code == code)
			return chaos_faults[i].name;
	return "?";
}

static enum cmd_retval
cmd_chaos_store_exec(struct cmd_ctx *ctx)
{
	const char *f = cmd_arg(ctx, 0);
	int code = -1;
	for (size_t i = 0; i < nitems(chaos_faults); i++)
		if (strcmp(f, chaos_faults[i].name) == 0)
			code = chaos_faults[i].code;
	if (code < 0)
		return cmd_usage_error(
		    ctx, "chaos store: FAULT is full, ioerr, busy or off, got '%s'", f);
	const char *table = cmd_opt(ctx, "table"), *on = NULL;
	for (size_t i = 0; table != NULL && i < nitems(chaos_tables); i++)
		if (strcmp(table, chaos_tables[i]) == 0)
			on = chaos_tables[i];
	if (table != NULL && on == NULL)
		return cmd_usage_error(
		    ctx, "chaos store: --table is messages, deliveries or tasks, got '%s'", table);
	struct chaos *c = chaos_get(ctx->orch);
	struct store *st = orch_store(ctx->orch);
	c->store_fault = code;
	c->store_on = on;
	if (code == 0) {
		store_set_fault_hook(st, NULL, NULL);
		log_warn(orch_log(ctx->orch), "chaos", "store fault injection off");
		return cmd_message(ctx, "store fault off: commits go through again");
	}
	store_set_fault_hook(st, chaos_store_fault, c);
	if (on != NULL) {
		log_warn(orch_log(ctx->orch), "chaos",
		         "store fault injection: every write to %s fails (%s)", on, f);
		return cmd_message(
		    ctx,
		    "store fault '%s': every write to %s fails, and takes the rest of "
		    "its transaction with it, until 'chaos store off'",
		    f, on);
	}
	log_warn(orch_log(ctx->orch), "chaos", "store fault injection: every commit fails (%s)", f);
	return cmd_message(ctx, "store fault '%s': every commit fails until 'chaos store off'", f);
}

static enum cmd_retval
cmd_chaos_status_exec(struct cmd_ctx *ctx)
{
	struct orch *o = ctx->orch;
	struct chaos *c = *orch_chaos(o);
	json_t *paused = json_array(), *drops = json_array();
	int64_t now = time_mono_ms();
	for (struct chaos_pause *p = c ? c->pauses : NULL; p != NULL; p = p->next) {
		double left = (double)(p->until_ms - now) / 1000.0;
		json_array_append_new(paused, json_pack("{s:s,s:I,s:f}", "agent", p->agent, "pid",
		                                        (json_int_t)p->pid, "remaining_s",
		                                        left > 0 ? left : 0.0));
	}
	struct agents *as = orch_agents(o);
	for (size_t i = 0; i < agents_count(as); i++) {
		double r = bus_drop_rate(orch_bus(o), agents_at(as, i)->name);
		if (r > 0)
			json_array_append_new(drops, json_pack("{s:s,s:f}", "agent",
			                                       agents_at(as, i)->name, "rate", r));
	}
	struct bus_stats bs;
	bus_stats(orch_bus(o), &bs);
	struct store_stats ss;
	store_stats(orch_store(o), &ss);
	int fault = c ? c->store_fault : 0;
	const char *on = fault && c ? c->store_on : NULL;
	json_t *r =
	    json_pack("{s:o,s:o,s:I,s:{s:o,s:o,s:s,s:I}}", "paused", paused, "drops", drops,
	              "dropped_total", (json_int_t)bs.dropped, "store", "fault",
	              fault ? json_string(chaos_fault_name(fault)) : json_null(), "table",
	              on ? json_string(on) : json_null(), "state", store_state(orch_store(o)),
	              "commit_failures", (json_int_t)ss.commit_failures);
	json_object_set_new(
	    r, "active",
	    json_boolean(json_array_size(paused) > 0 || json_array_size(drops) > 0 || fault != 0));
	return cmd_result(ctx, r);
}

static void
cmd_chaos_status_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	(void)ctx;
	size_t i;
	json_t *e;
	if (!json_is_true(json_object_get(r, "active")))
		buf_adds(out, "no chaos in force\n");
	json_array_foreach(json_object_get(r, "paused"), i, e)
	{
		buf_addf(out, "pause  %s (pid %lld): SIGCONT in %.1f s\n",
		         json_string_value(json_object_get(e, "agent")),
		         (long long)json_integer_value(json_object_get(e, "pid")),
		         json_real_value(json_object_get(e, "remaining_s")));
	}
	json_array_foreach(json_object_get(r, "drops"), i, e)
	{
		buf_addf(out, "drop   %s: %.0f%% of deliveries\n",
		         json_string_value(json_object_get(e, "agent")),
		         json_real_value(json_object_get(e, "rate")) * 100.0);
	}
	json_t *st = json_object_get(r, "store");
	const char *fault = json_string_value(json_object_get(st, "fault"));
	const char *on = json_string_value(json_object_get(st, "table"));
	buf_addf(out, "store  fault %s%s%s%s, state %s, %lld failed commits since start\n",
	         fault ? fault : "off", on ? " (writes to " : "", on ? on : "", on ? ")" : "",
	         json_string_value(json_object_get(st, "state")),
	         (long long)json_integer_value(json_object_get(st, "commit_failures")));
	buf_addf(out, "dropped deliveries since start: %lld\n",
	         (long long)json_integer_value(json_object_get(r, "dropped_total")));
}

/* ---- verify ----------------------------------------------------------- */

/* The in-memory deliveries, keyed "recipient\x1fid". */
struct verify_mem {
	struct strmap map;
	uint64_t n, duplicates;
};

static void
verify_mem_add(void *arg, const char *recipient, int64_t id, bool inflight)
{
	(void)inflight;
	struct verify_mem *vm = arg;
	char key[160];
	snprintf(key, sizeof key, "%s\x1f%lld", recipient, (long long)id);
	vm->n++;
	if (strmap_get(&vm->map, key) != NULL)
		vm->duplicates++;
	else
		strmap_set(&vm->map, key, (void *)1);
}

/* Returns the first integer column of sql's first row (-1 on error). */
static int64_t
verify_int(struct store *st, const char *sql)
{
	sqlite3_stmt *s = store_stmt(st, sql);
	int64_t v = -1;
	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	if (s != NULL)
		sqlite3_reset(s);
	return v;
}

/* Adds one check to the report; returns ok. */
static bool verify_check(json_t *checks, const char *name, bool ok, const char *fmt, ...)
    PRINTFLIKE(4, 5);
static bool
verify_check(json_t *checks, const char *name, bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *detail = xvasprintf(fmt, ap);
	va_end(ap);
	json_array_append_new(checks,
	                      json_pack("{s:s,s:b,s:s}", "name", name, "ok", ok, "detail", detail));
	free(detail);
	return ok;
}

/* The store: PRAGMA integrity_check (or quick_check with --quick). */
static void
verify_store(struct store *st, bool quick, json_t *checks)
{
	sqlite3_stmt *s =
	    store_stmt(st, quick ? "PRAGMA quick_check(5)" : "PRAGMA integrity_check(5)");
	struct buf b;
	buf_init(&b);
	int rows = 0;
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(s, 0);
		buf_addf(&b, "%s%s", rows++ ? "; " : "", t ? t : "?");
	}
	if (s != NULL)
		sqlite3_reset(s);
	bool ok = s != NULL && rows == 1 && b.data != NULL && strcmp(b.data, "ok") == 0;
	verify_check(checks, "integrity", ok, "PRAGMA %s: %s",
	             quick ? "quick_check" : "integrity_check", b.data ? b.data : "no answer");
	buf_free(&b);
}

/* Messages: the store against the bus's memory. */
static json_t *
verify_messages(struct orch *o, json_t *checks, uint64_t *lost, uint64_t *dups)
{
	struct store *st = orch_store(o);
	struct verify_mem vm = {0};
	strmap_init(&vm.map);
	bus_sync_rows(orch_bus(o)); /* (acks of this turn: their marks) */
	bus_foreach_pending(orch_bus(o), verify_mem_add, &vm);

	/* Pending in the store (rows, and direct messages without one): each
	 * must be in memory. */
	uint64_t db_pending = 0, unsynced = 0;
	sqlite3_stmt *s = store_stmt(
	    st, "SELECT recipient, msg_id FROM deliveries WHERE state = 0 "
	        "UNION ALL SELECT m.target, m.id FROM messages m WHERE " BUS_SQL_ROWLESS("m"));
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		char key[160];
		snprintf(key, sizeof key, "%s\x1f%lld", (const char *)sqlite3_column_text(s, 0),
		         (long long)sqlite3_column_int64(s, 1));
		db_pending++;
		if (strmap_get(&vm.map, key) != NULL)
			strmap_set(&vm.map, key, (void *)2);
		else
			unsynced++;
	}
	if (s != NULL)
		sqlite3_reset(s);
	/* In memory but not pending in the store: a restart would forget it. */
	uint64_t mem_only = 0;
	size_t it = 0;
	void *v;
	while (strmap_next(&vm.map, &it, NULL, &v))
		mem_only += v == (void *)1;
	strmap_free(&vm.map);

	int64_t stored = verify_int(st, "SELECT count(*) FROM messages");
	int64_t acked =
	    verify_int(st, "SELECT (SELECT count(*) FROM deliveries WHERE state = 1) + (SELECT "
	                   "count(*) FROM messages m WHERE " BUS_SQL_MARKED("m") ")");
	int64_t dead = verify_int(st, "SELECT count(*) FROM deliveries WHERE state = 2");
	int64_t badstate =
	    verify_int(st, "SELECT count(*) FROM deliveries WHERE state NOT IN (0, 1, 2)");
	int64_t orphans = verify_int(st, "SELECT count(*) FROM deliveries d WHERE NOT EXISTS "
	                                 "(SELECT 1 FROM messages m WHERE m.id = d.msg_id)");
	/* A direct message's only delivery is to its target: a row for anyone
	 * else leaves the target's pending without a row, so unseen. */
	int64_t undelivered = verify_int(
	    /* clang-format off */
	    st, "SELECT count(*) FROM messages m WHERE " BUS_SQL_DIRECT("m") " AND EXISTS "
	        "(SELECT 1 FROM deliveries d WHERE d.msg_id = m.id) AND NOT EXISTS (SELECT 1 "
	        "FROM deliveries d WHERE d.msg_id = m.id AND d.recipient = m.target)");
	/* clang-format on */
	struct store_stats ss;
	store_stats(st, &ss);
	struct bus_stats bs;
	bus_stats(orch_bus(o), &bs);
	sqlite3_stmt *f = store_stmt(st, "SELECT (SELECT count(*) FROM deliveries WHERE state = 0 "
	                                 "AND msg_id < ?1) + (SELECT count(*) FROM messages m "
	                                 "WHERE m.id < ?1 AND " BUS_SQL_ROWLESS("m") ")");
	int64_t below = -1;
	if (f != NULL) {
		sqlite3_bind_int64(f, 1, bs.floor);
		if (sqlite3_step(f) == SQLITE_ROW)
			below = sqlite3_column_int64(f, 0);
		sqlite3_reset(f);
	}

	*lost = mem_only + (uint64_t)(orphans > 0 ? orphans : 0) +
	        (uint64_t)(undelivered > 0 ? undelivered : 0);
	*dups = vm.duplicates;
	verify_check(checks, "messages", *lost == 0 && badstate == 0,
	             "%lld stored; deliveries: %lld acked, %llu pending, %lld dead; lost %llu "
	             "(in memory only %llu, without their message %lld, without a delivery %lld)",
	             (long long)stored, (long long)acked, (unsigned long long)db_pending,
	             (long long)dead, (unsigned long long)*lost, (unsigned long long)mem_only,
	             (long long)orphans, (long long)undelivered);
	verify_check(checks, "deliveries", vm.duplicates == 0,
	             "%llu held in memory, %llu duplicates", (unsigned long long)vm.n,
	             (unsigned long long)vm.duplicates);
	/* Pending in the store, unknown to the bus: delivered only after a
	 * restart.  After a failed commit the memory is ahead of the store
	 * (an ack rolled back): then it is expected, and only reported. */
	/* Recovery reads pending deliveries from the floor up: one below it
	 * would not come back after a restart (same caveat as above). */
	verify_check(checks, "recovery floor", below == 0 || (below > 0 && ss.commit_failures > 0),
	             "%lld pending in the store below message %lld", (long long)below,
	             (long long)bs.floor);
	verify_check(checks, "inbox", unsynced == 0 || ss.commit_failures > 0,
	             "%llu pending in the store but not in an inbox%s",
	             (unsigned long long)unsynced,
	             unsynced > 0 && ss.commit_failures > 0
	                 ? " (after failed commits: acks rolled back, redelivered after a restart)"
	                 : "");
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "stored", (json_int_t)stored,
	                 "acked", (json_int_t)acked, "pending", (json_int_t)db_pending, "dead",
	                 (json_int_t)dead, "in_memory", (json_int_t)vm.n, "lost", (json_int_t)*lost,
	                 "duplicates", (json_int_t)vm.duplicates, "unsynced", (json_int_t)unsynced,
	                 "orphans", (json_int_t)orphans);
}

/* Tasks: one state each, the same in memory and in the store; running
 * ones on live agents; no dependency on a missing task. */
static json_t *
verify_tasks(struct orch *o, json_t *checks)
{
	struct store *st = orch_store(o);
	struct tasks *tm = orch_tasks(o);
	struct task_counts tc;
	tasks_counts(tm, &tc);
	uint64_t db[TASK_NSTATES] = {0}, bad = 0, mismatch = 0, orphaned = 0;
	sqlite3_stmt *s = store_stmt(st, "SELECT id, state, agent FROM tasks");
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		enum task_state ts;
		if (!task_state_parse((const char *)sqlite3_column_text(s, 1), &ts)) {
			bad++;
			continue;
		}
		db[ts]++;
		if (task_state_final(ts))
			continue;
		struct task *t = tasks_get(tm, id);
		if (t == NULL || t->state != ts) {
			mismatch++;
			continue;
		}
		if (ts == TASK_ASSIGNED || ts == TASK_RUNNING) {
			struct agent *a = t->agent ? agents_find(orch_agents(o), t->agent) : NULL;
			if (a == NULL || !agent_state_connected(a->state))
				orphaned++;
		}
	}
	if (s != NULL)
		sqlite3_reset(s);
	uint64_t total = 0, count_diff = 0;
	json_t *states = json_object();
	for (int i = 0; i < TASK_NSTATES; i++) {
		total += db[i];
		if (db[i] != tc.n[i])
			count_diff++;
		json_object_set_new(states, task_state_name((enum task_state)i),
		                    json_integer((json_int_t)db[i]));
	}
	int64_t missing = verify_int(st, "SELECT count(*) FROM task_deps d WHERE NOT EXISTS "
	                                 "(SELECT 1 FROM tasks t WHERE t.id = d.after) OR NOT "
	                                 "EXISTS (SELECT 1 FROM tasks t WHERE t.id = d.task)");
	verify_check(checks, "tasks", bad == 0 && mismatch == 0 && count_diff == 0,
	             "%llu stored, %llu done; %llu with an unknown state, %llu not in the same "
	             "state in memory, %llu states whose counts differ",
	             (unsigned long long)total, (unsigned long long)db[TASK_DONE],
	             (unsigned long long)bad, (unsigned long long)mismatch,
	             (unsigned long long)count_diff);
	verify_check(checks, "assignments", orphaned == 0,
	             "%llu assigned or running tasks on an agent that is not connected",
	             (unsigned long long)orphaned);
	verify_check(checks, "dependencies", missing == 0, "%lld dependencies on a missing task",
	             (long long)missing);
	json_t *r =
	    json_pack("{s:I,s:o,s:I,s:I,s:I,s:I}", "stored", (json_int_t)total, "states", states,
	              "bad_state", (json_int_t)bad, "mismatch", (json_int_t)mismatch, "orphaned",
	              (json_int_t)orphaned, "missing_deps", (json_int_t)missing);
	return r;
}

/* Ids: the high-water mark (the message id reservation, the tasks'
 * sqlite_sequence) at or above every id, memory's last id too. */
static json_t *
verify_ids(struct orch *o, json_t *checks)
{
	struct store *st = orch_store(o);
	struct bus_stats bs;
	bus_stats(orch_bus(o), &bs);
	struct task_counts tc;
	tasks_counts(orch_tasks(o), &tc);
	int64_t mmax = verify_int(st, "SELECT coalesce(max(id), 0) FROM messages");
	int64_t mseq = verify_int(st, "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM kv "
	                              "WHERE ns = 'dreamos' AND key = 'message_ids'), 0)");
	int64_t tmax = verify_int(st, "SELECT coalesce(max(id), 0) FROM tasks");
	int64_t tseq = verify_int(
	    st, "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0)");
	verify_check(checks, "message ids", mseq >= mmax && bs.last_id >= mmax,
	             "largest stored %lld, reserved up to %lld, last in memory %lld",
	             (long long)mmax, (long long)mseq, (long long)bs.last_id);
	verify_check(checks, "task ids", tseq >= tmax && tc.last_id >= tmax,
	             "largest stored %lld, sequence %lld, last in memory %lld", (long long)tmax,
	             (long long)tseq, (long long)tc.last_id);
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "message_max", (json_int_t)mmax,
	                 "message_seq", (json_int_t)mseq, "message_last", (json_int_t)bs.last_id,
	                 "task_max", (json_int_t)tmax, "task_seq", (json_int_t)tseq, "task_last",
	                 (json_int_t)tc.last_id);
}

static enum cmd_retval
cmd_verify_exec(struct cmd_ctx *ctx)
{
	struct orch *o = ctx->orch;
	json_t *checks = json_array();
	uint64_t lost = 0, dups = 0;
	/* Writes of this turn first: a message stored but not yet committed
	 * is in no inbox until its commit (it would look unsynced). */
	char *cause = NULL;
	if (store_flush(orch_store(o), &cause) != 0) {
		log_warn(orch_log(o), "verify", "commit before verifying failed: %s",
		         cause ? cause : "?");
		free(cause);
	}
	verify_store(orch_store(o), cmd_flag(ctx, "quick"), checks);
	json_t *msgs = verify_messages(o, checks, &lost, &dups);
	json_t *tasks = verify_tasks(o, checks);
	json_t *ids = verify_ids(o, checks);
	size_t i, failed = 0;
	json_t *c;
	json_array_foreach(checks, i, c) failed += !json_is_true(json_object_get(c, "ok"));
	json_t *r =
	    json_pack("{s:b,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "ok", failed == 0, "failed",
	              (json_int_t)failed, "lost", (json_int_t)lost, "duplicates", (json_int_t)dups,
	              "checks", checks, "messages", msgs, "tasks", tasks, "ids", ids);
	cmd_result(ctx, r);
	if (failed > 0) {
		log_error(orch_log(o), "verify", "%zu invariants failed (lost %llu)", failed,
		          (unsigned long long)lost);
		return cmd_error(ctx, "verify: %zu invariant%s failed", failed,
		                 failed == 1 ? "" : "s");
	}
	return CMD_OK;
}

static void
cmd_verify_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	(void)ctx;
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(r, "checks"), i, c)
	{
		buf_addf(out, "%-4s  %-12s  %s\n",
		         json_is_true(json_object_get(c, "ok")) ? "ok" : "FAIL",
		         json_string_value(json_object_get(c, "name")),
		         json_string_value(json_object_get(c, "detail")));
	}
	long long failed = (long long)json_integer_value(json_object_get(r, "failed"));
	buf_addf(out, "lost %lld, duplicates %lld: %s\n",
	         (long long)json_integer_value(json_object_get(r, "lost")),
	         (long long)json_integer_value(json_object_get(r, "duplicates")),
	         failed == 0 ? "all invariants hold" : "INVARIANTS FAILED");
}

/* `chaos` alone: the status; anything else after it is not a subcommand. */
static enum cmd_retval
cmd_chaos_exec(struct cmd_ctx *ctx)
{
	if (ctx->argc > 0)
		return cmd_usage_error(
		    ctx,
		    "chaos: unknown subcommand '%s' (one of: kill, pause, resume, "
		    "drop, store, status; try 'help chaos')",
		    cmd_arg(ctx, 0));
	return cmd_chaos_status_exec(ctx);
}

static const struct cmd_opt chaos_store_opts[] = {
    {"table", OPT_VALUE, "TABLE", "messages|deliveries|tasks"},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt verify_opts[] = {
    {"quick", OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

const struct cmd_entry cmd_chaos_entries[] = {
    {
        .name = "chaos",
        .usage = "",
        .help = "Shows the chaos in force, as 'chaos status' does.  Chaos testing on the live "
                "system: 'chaos kill AGENT' (SIGKILL), 'chaos pause AGENT DURATION' (SIGSTOP, "
                "then SIGCONT), 'chaos resume AGENT', 'chaos drop AGENT RATE' (lose a share of "
                "its deliveries), 'chaos store full|ioerr|busy|off' (failing commits), 'chaos "
                "status'.  'verify' checks the invariants afterwards.  See 'help chaos pause' and "
                "so on.",
        .min_args = 0,
        .max_args = -1,
        .complete_args = "kill|pause|resume|drop|store|status",
        .role = ROLE_OBSERVER,
        .exec = cmd_chaos_exec,
        .print = cmd_chaos_status_print,
    },
    {
        .name = "chaos kill",
        .usage = "AGENT",
        .help = "Kills an agent the hard way: SIGKILL to its process group (a remote or "
                "in-process agent has its link closed).  Its restart policy applies, as after "
                "a crash.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_CAPTAIN,
        .exec = cmd_chaos_kill_exec,
    },
    {
        .name = "chaos pause",
        .usage = "AGENT DURATION",
        .help = "Freezes an agent's process group with SIGSTOP, and sends SIGCONT after "
                "DURATION (10s, 500ms).  Its heartbeats stop: past heartbeat_timeout it is "
                "unhealthy and restarted.  Shown by 'agent info' and 'chaos status'; undone if "
                "the agent is stopped or dreamos quits.",
        .min_args = 2,
        .max_args = 2,
        .complete_args = "agent",
        .role = ROLE_CAPTAIN,
        .exec = cmd_chaos_pause_exec,
    },
    {
        .name = "chaos resume",
        .usage = "AGENT",
        .help = "Ends a chaos pause now (SIGCONT).",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_CAPTAIN,
        .exec = cmd_chaos_resume_exec,
    },
    {
        .name = "chaos drop",
        .usage = "AGENT RATE",
        .help = "Drops a share RATE (0 to 1) of the messages delivered to an agent, as if lost "
                "on the way: they are redelivered after bus.ack_timeout.  RATE 0 turns it off.",
        .min_args = 2,
        .max_args = 2,
        .complete_args = "agent",
        .role = ROLE_CAPTAIN,
        .exec = cmd_chaos_drop_exec,
    },
    {
        .name = "chaos store",
        .usage = "full|ioerr|busy|off [--table messages|deliveries|tasks]",
        .help = "Makes every commit of the store fail as if the disk were full (or an I/O "
                "error, or a lock), through the store's fault hook, until 'chaos store off'.  "
                "With --table, every write to that table fails instead, as SQLite fails a "
                "statement, and the rest of its transaction is rolled back with it.  Writes "
                "meanwhile are refused with an error, never acknowledged.",
        .opts = chaos_store_opts,
        .min_args = 1,
        .max_args = 1,
        .complete_args = "full|ioerr|busy|off",
        .role = ROLE_CAPTAIN,
        .exec = cmd_chaos_store_exec,
    },
    {
        .name = "chaos status",
        .usage = "",
        .help = "Shows the chaos in force: paused agents, drop rates, the store fault.",
        .min_args = 0,
        .max_args = 0,
        .role = ROLE_OBSERVER,
        .exec = cmd_chaos_status_exec,
        .print = cmd_chaos_status_print,
    },
    {
        .name = "verify",
        .usage = "[--quick]",
        .help = "Checks the invariants on the live system and prints each: the database passes "
                "PRAGMA integrity_check (quick_check with --quick); no stored message is lost "
                "(every delivery acked, pending in an inbox or dead; none held only in memory); "
                "every task in one state, the same in memory and in the store, running ones on "
                "connected agents, no dependency on a missing task; ids never go back "
                "(the id reservation or sqlite_sequence, and memory, at or above the largest "
                "id).  Fails (exit status 1 "
                "from 'dreamos ctl') if one does not hold.",
        .min_args = 0,
        .max_args = 0,
        .opts = verify_opts,
        .role = ROLE_OBSERVER,
        .exec = cmd_verify_exec,
        .print = cmd_verify_print,
    },
};
const size_t cmd_chaos_count = nitems(cmd_chaos_entries);
