/* task.c — the task manager (see task.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "idlease.h"
#include "intmap.h"
#include "log.h"
#include "orch.h"
#include "store.h"
#include "strmap.h"
#include "task.h"

/* The ready heap of one capability ("" for tasks without one). */
struct capq {
	struct heap ready;
};

struct deplist {
	struct task **v;
	size_t n;
};

struct task_listener {
	int id;
	task_event_fn fn;
	void *arg;
};

struct tasks {
	struct orch *orch;
	struct intmap live;       /* id -> task, every unfinished task */
	struct intmap dependents; /* id -> struct deplist */
	/* Tasks whose submission is not committed yet: id -> 1 while live,
	 * 2 + final state once ended (to undo its count if the commit fails). */
	struct intmap uncommitted;
	struct strmap capqs; /* capability -> capq */
	struct heap timers;  /* assigned/running (timeout) and failed (retry) */
	uv_timer_t *timer;   /* allocated: freed by its close callback */
	task_clock_fn clock;
	void *clock_arg;
	size_t rr; /* round-robin start for ties */
	struct task_counts counts;
	struct task_listener *listeners;
	size_t nlisteners;
	int next_listener;
	/* Ids of tasks whose row is written at the commit point (the
	 * assignment: its done usually comes in the same transaction, and then
	 * one UPDATE carries both). */
	int64_t *deferred;
	size_t ndeferred, deferred_cap;
	bool hooked; /* tasks_write_deferred is a store_before_commit hook */
	/* A task may be assigned before its submission commits: ids come
	 * from a reservation (see idlease.h). */
	struct idlease ids;
};

static const char *const task_state_names[TASK_NSTATES] = {
    "queued", "blocked", "assigned", "running", "failed", "done", "dead", "cancelled",
};

const char *
task_state_name(enum task_state s)
{
	return s < TASK_NSTATES ? task_state_names[s] : "?";
}

bool
task_state_parse(const char *s, enum task_state *out)
{
	for (int i = 0; i < TASK_NSTATES; i++) {
		if (strcmp(s, task_state_names[i]) == 0) {
			*out = (enum task_state)i;
			return true;
		}
	}
	return false;
}

bool
task_state_final(enum task_state s)
{
	return s == TASK_DONE || s == TASK_DEAD || s == TASK_CANCELLED;
}

/* Frees a handle allocated with xmalloc once libuv is done with it. */
static void
handle_free_cb(uv_handle_t *h)
{
	free(h);
}

/* ---- heaps ------------------------------------------------------------ */

static int
ready_cmp(const void *x, const void *y)
{
	const struct task *a = x, *b = y;
	if (a->priority != b->priority)
		return a->priority > b->priority ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

static void
ready_pos(void *e, size_t pos)
{
	((struct task *)e)->ready_pos = pos;
}

static int
timer_cmp(const void *x, const void *y)
{
	const struct task *a = x, *b = y;
	if (a->deadline != b->deadline)
		return a->deadline < b->deadline ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

static void
timer_pos(void *e, size_t pos)
{
	((struct task *)e)->timer_pos = pos;
}

static int64_t
default_clock(void *arg)
{
	(void)arg;
	return time_mono_ms();
}

static int64_t
tm_now(struct tasks *tm)
{
	return tm->clock(tm->clock_arg);
}

static struct capq *
tm_capq(struct tasks *tm, const char *cap, bool create)
{
	const char *key = cap ? cap : "";
	struct capq *q = strmap_get(&tm->capqs, key);
	if (q == NULL && create) {
		q = xcalloc(1, sizeof *q);
		heap_init(&q->ready, ready_cmp, ready_pos);
		strmap_set(&tm->capqs, key, q);
	}
	return q;
}

static void
ready_remove(struct tasks *tm, struct task *t)
{
	if (t->ready_pos == HEAP_NOWHERE)
		return;
	struct capq *q = tm_capq(tm, t->capability, false);
	if (q != NULL)
		heap_remove(&q->ready, t->ready_pos);
}

static void tm_on_timer(uv_timer_t *h);

/* Re-arms the single uv timer for the earliest deadline. */
static void
tm_arm(struct tasks *tm)
{
	struct task *t = heap_peek(&tm->timers);
	if (t == NULL) {
		uv_timer_stop(tm->timer);
		return;
	}
	int64_t wait = t->deadline - tm_now(tm);
	uv_timer_start(tm->timer, tm_on_timer, wait > 0 ? (uint64_t)wait : 0, 0);
}

static void
timer_set(struct tasks *tm, struct task *t, int64_t deadline)
{
	if (t->timer_pos != HEAP_NOWHERE)
		heap_remove(&tm->timers, t->timer_pos);
	t->deadline = deadline;
	heap_push(&tm->timers, t);
	tm_arm(tm);
}

static void
timer_clear(struct tasks *tm, struct task *t)
{
	if (t->timer_pos != HEAP_NOWHERE) {
		heap_remove(&tm->timers, t->timer_pos);
		tm_arm(tm);
	}
}

/* ---- lifecycle -------------------------------------------------------- */

static void tasks_write_deferred(void *arg);

struct tasks *
tasks_new(struct orch *o)
{
	struct tasks *tm = xcalloc(1, sizeof *tm);
	tm->orch = o;
	intmap_init(&tm->live);
	intmap_init(&tm->uncommitted);
	intmap_init(&tm->dependents);
	strmap_init(&tm->capqs);
	heap_init(&tm->timers, timer_cmp, timer_pos);
	tm->clock = default_clock;
	tm->timer = xmalloc(sizeof *tm->timer);
	uv_timer_init(orch_loop(o), tm->timer);
	tm->timer->data = tm;
	if (orch_store(o) != NULL) {
		store_before_commit(orch_store(o), tasks_write_deferred, tm);
		tm->hooked = true;
	}
	return tm;
}

void
tasks_set_clock(struct tasks *tm, task_clock_fn fn, void *arg)
{
	tm->clock = fn ? fn : default_clock;
	tm->clock_arg = arg;
}

static void
task_free(struct task *t)
{
	free(t->title);
	free(t->payload);
	free(t->capability);
	free(t->agent);
	free(t->note);
	free(t->result);
	free(t->error);
	free(t->submitter);
	free(t->after);
	free(t);
}

/* Writes the deferred rows and stops deferring. */
static void
tasks_unhook(struct tasks *tm)
{
	tasks_write_deferred(tm);
	if (tm->hooked && orch_store(tm->orch) != NULL)
		store_before_commit_remove(orch_store(tm->orch), tasks_write_deferred, tm);
	tm->hooked = false;
}

void
tasks_close(struct tasks *tm)
{
	if (tm == NULL)
		return;
	idlease_close(&tm->ids);
	tasks_unhook(tm);
	if (!uv_is_closing((uv_handle_t *)tm->timer))
		uv_close((uv_handle_t *)tm->timer, handle_free_cb);
}

void
tasks_free(struct tasks *tm)
{
	if (tm == NULL)
		return;
	tasks_unhook(tm);
	free(tm->deferred);
	size_t it = 0;
	void *v;
	while (intmap_next(&tm->live, &it, NULL, &v))
		task_free(v);
	intmap_free(&tm->live);
	intmap_free(&tm->uncommitted);
	it = 0;
	while (intmap_next(&tm->dependents, &it, NULL, &v)) {
		free(((struct deplist *)v)->v);
		free(v);
	}
	intmap_free(&tm->dependents);
	it = 0;
	while (strmap_next(&tm->capqs, &it, NULL, &v)) {
		heap_free(&((struct capq *)v)->ready);
		free(v);
	}
	strmap_free(&tm->capqs);
	heap_free(&tm->timers);
	free(tm->listeners);
	free(tm);
}

/* ---- persistence and events ------------------------------------------- */

/* Writes the mutable fields of t (group-committed); the caller has set
 * t->updated_ms.  Strings are bound SQLITE_STATIC here and in the INSERT:
 * they outlive the step (store_step_write resets the statement, store_stmt
 * clears its bindings before the next use), and copies cost a malloc each. */

static void
task_persist(struct tasks *tm, struct task *t)
{
	struct store *st = orch_store(tm->orch);
	sqlite3_stmt *s = store_stmt(
	    st, "UPDATE tasks SET state = ?1, agent = ?2, attempt = ?3, progress = ?4, note = ?5, "
	        "result = ?6, error = ?7, updated_ms = ?8, retry_at_ms = ?9 WHERE id = ?10");
	t->unsaved = false;
	if (s == NULL)
		return;
	sqlite3_bind_text(s, 1, task_state_name(t->state), -1, SQLITE_STATIC);
	if (t->agent)
		sqlite3_bind_text(s, 2, t->agent, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, t->attempt);
	sqlite3_bind_double(s, 4, t->progress);
	if (t->note)
		sqlite3_bind_text(s, 5, t->note, -1, SQLITE_STATIC);
	if (t->result)
		sqlite3_bind_text(s, 6, t->result, -1, SQLITE_STATIC);
	if (t->error)
		sqlite3_bind_text(s, 7, t->error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 8, t->updated_ms);
	if (t->state == TASK_FAILED)
		sqlite3_bind_int64(s, 9, t->updated_ms + (t->deadline - tm_now(tm)));
	sqlite3_bind_int64(s, 10, t->id);
	store_step_write(st, s);
}

/* Writes t's row at the commit point instead of now (see deferred). */
static void
task_defer_persist(struct tasks *tm, struct task *t)
{
	if (t->unsaved)
		return;
	if (tm->ndeferred == tm->deferred_cap) {
		tm->deferred_cap = tm->deferred_cap ? tm->deferred_cap * 2 : 64;
		tm->deferred = xreallocarray(tm->deferred, tm->deferred_cap, sizeof *tm->deferred);
	}
	tm->deferred[tm->ndeferred++] = t->id;
	t->unsaved = true;
	store_write_soon(orch_store(tm->orch));
}

void
tasks_sync(struct tasks *tm)
{
	if (tm != NULL)
		tasks_write_deferred(tm);
}

/* The store_before_commit hook: writes the rows that lag behind.  A task
 * written since (or ended: it is written then) has unsaved clear. */
static void
tasks_write_deferred(void *arg)
{

	struct tasks *tm = arg;
	/* By index on the live array: a write may log, and a log subscriber
	 * may defer another task (appended, and written by this loop).  Ids,
	 * not pointers: a task may end and be freed meanwhile. */
	for (size_t i = 0; i < tm->ndeferred && orch_store(tm->orch) != NULL; i++) {
		struct task *t = intmap_get(&tm->live, tm->deferred[i]);
		if (t != NULL && t->unsaved)
			task_persist(tm, t);
	}
	tm->ndeferred = 0;
}

/* Records a transition: state, counters, store, log, listeners. */
static void task_set_state(struct tasks *tm, struct task *t, enum task_state to, enum log_level lvl,
                           const char *fmt, ...) PRINTFLIKE(5, 6);

static void
task_set_state(struct tasks *tm, struct task *t, enum task_state to, enum log_level lvl,
               const char *fmt, ...)
{
	enum task_state from = t->state;
	if (tm->counts.n[from] > 0)
		tm->counts.n[from]--;
	tm->counts.n[to]++;
	tm->counts.transitions++;
	t->state = to;
	t->updated_ms = time_wall_ms();
	if (to == TASK_ASSIGNED && tm->hooked)
		task_defer_persist(tm, t);
	else
		task_persist(tm, t);

	if (log_enabled(orch_log(tm->orch), lvl)) {
		va_list ap;
		va_start(ap, fmt);
		char *why = fmt ? xvasprintf(fmt, ap) : NULL;
		va_end(ap);
		log_emit(orch_log(tm->orch), lvl, "tasks",
		         json_pack("{s:I,s:s,s:s}", "task", (json_int_t)t->id, "from",
		                   task_state_name(from), "to", task_state_name(to)),
		         "task %lld '%s' %s -> %s%s%s", (long long)t->id, t->title,
		         task_state_name(from), task_state_name(to), why ? ": " : "",
		         why ? why : "");
		free(why);
	}
	for (size_t i = 0; i < tm->nlisteners; i++)
		tm->listeners[i].fn(tm->listeners[i].arg, t, from);
}

/* ---- scheduling ------------------------------------------------------- */

static void task_assign(struct tasks *tm, struct task *t, struct agent *a);

/* True if a may take t. */
static bool
agent_fits(const struct agent *a, const struct task *t)
{
	return agent_can_take_task(a) &&
	       (t->capability == NULL ? agent_takes_any_task(a) : agent_has_cap(a, t->capability));
}

/* Gives a queued task to the least-loaded capable agent (ties: round
 * robin), if any. */
static void
schedule_task(struct tasks *tm, struct task *t)
{
	struct agents *as = orch_agents(tm->orch);
	size_t n = agents_count(as);
	struct agent *best = NULL;
	double best_load = 2.0;
	size_t best_i = 0;
	for (size_t k = 0; k < n; k++) {
		size_t i = (tm->rr + k) % n;
		struct agent *a = agents_at(as, i);
		if (!agent_fits(a, t))
			continue;
		double load = (double)a->running_tasks / (double)a->max_tasks;
		if (load < best_load) {
			best = a;
			best_load = load;
			best_i = i;
		}
	}
	if (best != NULL) {
		tm->rr = best_i + 1;
		task_assign(tm, t, best);
	}
}

/* Fills a's free slots with the best queued tasks it can do. */
static void
schedule_agent(struct tasks *tm, struct agent *a)
{
	while (agent_can_take_task(a)) {
		struct task *best = NULL;
		struct capq *q = tm_capq(tm, NULL, false);
		if (q != NULL)
			best = heap_peek(&q->ready);
		for (size_t i = 0; i < a->ncaps; i++) {
			q = tm_capq(tm, a->caps[i], false);
			struct task *t = q ? heap_peek(&q->ready) : NULL;
			if (t != NULL && (best == NULL || ready_cmp(t, best) < 0))
				best = t;
		}
		if (best == NULL)
			return;
		task_assign(tm, best, a);
	}
}

/* ---- transitions ------------------------------------------------------ */

static void task_to_dead(struct tasks *tm, struct task *t, const char *reason);

/* Queued: into its ready heap, then offered to the agents. */
static void
task_to_queued(struct tasks *tm, struct task *t, const char *why)
{
	free(t->agent);
	t->agent = NULL;
	t->progress = 0;
	timer_clear(tm, t);
	task_set_state(tm, t, TASK_QUEUED, LVL_DEBUG, "%s", why);
	heap_push(&tm_capq(tm, t->capability, true)->ready, t);
	schedule_task(tm, t);
}

/* Returns the `task.assign` line for t (malloc'd).  Written by hand, not
 * through jansson: it is sent once per task, and the payload is already
 * JSON text (stored compact, so it is copied as it is). */
static char *
task_assign_line(const struct task *t)
{
	struct buf b;
	buf_init(&b);
	buf_reserve(&b, 160 + (t->payload ? strlen(t->payload) : 0));
	buf_addf(&b,
	         "{\"type\":\"task.assign\",\"task\":{\"id\":%lld,\"title\":", (long long)t->id);
	buf_add_json_str(&b, t->title);
	buf_adds(&b, ",\"payload\":");
	if (t->payload == NULL) {
		buf_adds(&b, "null");
	} else if (strpbrk(t->payload, "\r\n") == NULL) {
		buf_adds(&b, t->payload);
	} else { /* stored by an older version as the captain typed it */
		json_t *p = json_loads(t->payload, JSON_DECODE_ANY, NULL);
		char *c = p ? json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		buf_adds(&b, c ? c : "null");
		free(c);
		json_decref(p);
	}
	buf_addf(&b, ",\"priority\":\"%s\",\"capability\":", proto_priority_name(t->priority));
	if (t->capability != NULL)
		buf_add_json_str(&b, t->capability);
	else
		buf_adds(&b, "null");
	char num[40];
	snprintf(num, sizeof num, "%.17g", t->timeout_s);
	if (strpbrk(num, ".eEni") == NULL)
		strcat(num, ".0"); /* a real, as jansson writes it */
	buf_addf(&b, ",\"timeout_s\":%s,\"attempt\":%d}}\n", num, t->attempt);
	return (char *)buf_cstr(&b);
}

/* Sends t to a: the assignment starts its run timeout. */
static void
task_assign(struct tasks *tm, struct task *t, struct agent *a)
{
	ready_remove(tm, t);
	t->attempt++;
	free(t->agent);
	t->agent = xstrdup(a->name);
	t->progress = 0;
	a->running_tasks++;
	timer_set(tm, t, tm_now(tm) + (int64_t)(t->timeout_s * 1000.0));
	task_set_state(tm, t, TASK_ASSIGNED, LVL_DEBUG, "to %s, attempt %d", a->name, t->attempt);
	char *line = task_assign_line(t);
	agent_send_owed(a, line, strlen(line)); /* (its task.done is owed) */
	free(line);
	agent_tasks_changed(a);
}

/* Frees the agent's slot of t and lets the agent take more work. */
static void
task_release_agent(struct tasks *tm, struct task *t)
{
	if (t->agent == NULL)
		return;
	struct agent *a = agents_find(orch_agents(tm->orch), t->agent);
	if (a != NULL && a->running_tasks > 0) {
		a->running_tasks--;
		agent_tasks_changed(a);
	}
}

/* Drops a finished task from memory (it stays in the store). */
static void
task_forget(struct tasks *tm, struct task *t)
{
	if (intmap_get(&tm->uncommitted, t->id) != NULL) /* ended in its first turn */
		intmap_set(&tm->uncommitted, t->id, (void *)(intptr_t)(2 + (int)t->state));
	ready_remove(tm, t);
	timer_clear(tm, t);
	intmap_del(&tm->live, t->id);
	/* A task that ends while blocked (cancelled, or dead through another
	 * dependency) must not stay in its other dependencies' lists. */
	for (size_t k = 0; k < t->nafter; k++) {
		struct deplist *dl = intmap_get(&tm->dependents, t->after[k]);
		for (size_t i = 0; dl != NULL && i < dl->n;) {
			if (dl->v[i] == t)
				dl->v[i] = dl->v[--dl->n];
			else
				i++;
		}
	}
	task_free(t);
}

/* A dependency finished: unblock (done) or fail (dead, cancelled) its
 * dependents. */
static void
task_notify_dependents(struct tasks *tm, int64_t id, enum task_state how)
{
	struct deplist *dl = intmap_del(&tm->dependents, id);
	if (dl == NULL)
		return;
	for (size_t i = 0; i < dl->n; i++) {
		struct task *d = dl->v[i];
		if (d->state != TASK_BLOCKED)
			continue;
		if (how == TASK_DONE) {
			if (d->waiting > 0 && --d->waiting == 0)
				task_to_queued(tm, d, "dependencies done");
		} else {
			char why[96];
			snprintf(why, sizeof why, "dependency %lld ended %s", (long long)id,
			         task_state_name(how));
			task_to_dead(tm, d, why);
		}
	}
	free(dl->v);
	free(dl);
}

/* Ends a task (done, dead, cancelled) and settles what depended on it. */
static void
task_end(struct tasks *tm, struct task *t, enum task_state to, enum log_level lvl, const char *why)
{
	int64_t id = t->id;
	struct agent *a = t->agent ? agents_find(orch_agents(tm->orch), t->agent) : NULL;
	bool held = t->state == TASK_ASSIGNED || t->state == TASK_RUNNING;
	if (held)
		task_release_agent(tm, t);
	timer_clear(tm, t);
	ready_remove(tm, t);
	task_set_state(tm, t, to, lvl, "%s", why);
	task_forget(tm, t);
	task_notify_dependents(tm, id, to);
	if (held && a != NULL)
		schedule_agent(tm, a);
}

static void
task_to_dead(struct tasks *tm, struct task *t, const char *reason)
{
	free(t->error);
	t->error = xstrdup(reason);
	task_end(tm, t, TASK_DEAD, LVL_WARN, reason);
}

/* A failed attempt: retry after backoff, or dead when out of retries or
 * when the failure is final. */
static void
task_attempt_failed(struct tasks *tm, struct task *t, const char *error, bool retry, bool backoff)
{
	free(t->error);
	t->error = xstrdup(error);
	if (!retry || t->attempt > t->max_retries) {
		char why[512];
		if (!retry)
			snprintf(why, sizeof why, "%s (no retry)", error);
		else
			snprintf(why, sizeof why, "%s; out of retries after %d attempts", error,
			         t->attempt);
		task_to_dead(tm, t, why);
		return;
	}
	struct agent *a = t->agent ? agents_find(orch_agents(tm->orch), t->agent) : NULL;
	bool held = t->state == TASK_ASSIGNED || t->state == TASK_RUNNING;
	if (held)
		task_release_agent(tm, t);
	const struct backoff_cfg *b = &orch_config(tm->orch)->tasks.backoff;
	double delay = backoff ? b->initial * pow(b->factor, t->attempt - 1) : 0;
	if (delay > b->cap)
		delay = b->cap;
	if (delay <= 0) {
		task_to_queued(tm, t, error);
	} else {
		ready_remove(tm, t);
		timer_set(tm, t, tm_now(tm) + (int64_t)(delay * 1000.0));
		task_set_state(tm, t, TASK_FAILED, LVL_WARN,
		               "%s; retry in %.1f s (attempt %d of %d)", error, delay, t->attempt,
		               t->max_retries + 1);
	}
	if (held && a != NULL)
		schedule_agent(tm, a);
}

/* Processes due deadlines: run timeouts and ends of backoff. */
int64_t
tasks_tick(struct tasks *tm)
{
	int64_t now = tm_now(tm);
	struct task *t;
	while ((t = heap_peek(&tm->timers)) != NULL && t->deadline <= now) {
		heap_pop(&tm->timers);
		if (t->state == TASK_FAILED) {
			task_to_queued(tm, t, "backoff over");
		} else if (t->state == TASK_ASSIGNED || t->state == TASK_RUNNING) {
			struct agent *a = agents_find(orch_agents(tm->orch), t->agent);
			if (a != NULL)
				agent_send_line(
				    a, xasprintf("{\"type\":\"task.cancel\",\"task\":%lld}\n",
				                 (long long)t->id));
			char why[96];
			snprintf(why, sizeof why, "timed out after %.1f s on %s", t->timeout_s,
			         t->agent ? t->agent : "?");
			task_attempt_failed(tm, t, why, true, true);
		}
	}
	t = heap_peek(&tm->timers);
	return t ? (t->deadline > now ? t->deadline - now : 0) : -1;
}

static void
tm_on_timer(uv_timer_t *h)
{
	struct tasks *tm = h->data;
	tasks_tick(tm);
	tm_arm(tm);
}

/* ---- submit ----------------------------------------------------------- */

/* Returns the state of a task that is not in memory (from the store), or
 * -1 if there is no such task. */
static int
task_stored_state(struct tasks *tm, int64_t id)
{
	sqlite3_stmt *s = store_stmt(orch_store(tm->orch), "SELECT state FROM tasks WHERE id = ?1");
	int rc = -1;
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		enum task_state st;
		if (task_state_parse((const char *)sqlite3_column_text(s, 0), &st))
			rc = (int)st;
	}
	sqlite3_reset(s);
	return rc;
}

static void
deplist_add(struct tasks *tm, int64_t dep, struct task *t)
{
	struct deplist *dl = intmap_get(&tm->dependents, dep);
	if (dl == NULL) {
		dl = xcalloc(1, sizeof *dl);
		intmap_set(&tm->dependents, dep, dl);
	}
	dl->v = xreallocarray(dl->v, dl->n + 1, sizeof *dl->v);
	dl->v[dl->n++] = t;
}

/* True if `target` is reachable from `from` through dependencies (a cycle
 * would form if target then depended on from). */
static bool
task_reaches(struct tasks *tm, int64_t from, int64_t target, int depth)
{
	if (from == target)
		return true;
	struct task *t = intmap_get(&tm->live, from);
	if (t == NULL || depth > 10000)
		return false;
	for (size_t i = 0; i < t->nafter; i++) {
		if (task_reaches(tm, t->after[i], target, depth + 1))
			return true;
	}
	return false;
}

/* A submission whose commit failed: the task was never stored, so it must
 * not run either (its submitter is told to send it again), and memory must
 * not keep an id the store will hand out again. */
struct unstored {
	struct tasks *tm;
	int64_t id;
};

static void
task_submit_stored(void *arg, int status)
{
	struct unstored *u = arg;
	struct tasks *tm = u->tm;
	int64_t id = u->id;
	free(u);
	intptr_t mark = (intptr_t)intmap_del(&tm->uncommitted, id);
	if (status == 0)
		return;
	struct task *t = intmap_get(&tm->live, id);
	if (t == NULL) { /* it ended in the same turn: undo its count */
		if (mark >= 2) {
			tm->counts.n[mark - 2]--;
			tm->counts.submitted--;
		}
		return;
	}
	struct agent *a = t->agent ? agents_find(orch_agents(tm->orch), t->agent) : NULL;
	bool held = t->state == TASK_ASSIGNED || t->state == TASK_RUNNING;
	if (held) {
		if (a != NULL)
			agent_send_line(a, xasprintf("{\"type\":\"task.cancel\",\"task\":%lld}\n",
			                             (long long)id));
		task_release_agent(tm, t);
	}
	log_warn(orch_log(tm->orch), "tasks",
	         "task %lld dropped: its submission was not stored (%s)", (long long)id,
	         store_state(orch_store(tm->orch)));
	tm->counts.n[t->state]--;
	tm->counts.submitted--;
	task_forget(tm, t);
	task_notify_dependents(tm, id, TASK_CANCELLED);
	if (held && a != NULL)
		schedule_agent(tm, a);
}

struct task *
tasks_submit(struct tasks *tm, const struct task_spec *spec, char **cause)
{
	const struct config *cfg = orch_config(tm->orch);
	size_t waiting = 0;
	if (spec->title == NULL || *spec->title == '\0') {
		*cause = xstrdup("a task needs a title");
		return NULL;
	}
	int64_t next_id = idlease_peek(&tm->ids);
	if (next_id == 0) {
		*cause = xasprintf("task not stored: no task id reserved (%s)",
		                   store_state(orch_store(tm->orch)));
		return NULL;
	}
	for (size_t i = 0; i < spec->nafter; i++) {
		int64_t d = spec->after[i];
		if (d >= next_id || task_reaches(tm, d, next_id, 0)) {
			*cause = d >= next_id
			             ? xasprintf("no task %lld to wait for", (long long)d)
			             : xasprintf("--after %lld would make a cycle", (long long)d);
			return NULL;
		}
		struct task *dt = intmap_get(&tm->live, d);
		int st = dt ? (int)dt->state : task_stored_state(tm, d);
		if (st < 0) {
			*cause = xasprintf("no task %lld to wait for", (long long)d);
			return NULL;
		}
		if (st == TASK_DEAD || st == TASK_CANCELLED) {
			*cause = xasprintf("dependency %lld is %s", (long long)d,
			                   task_state_name((enum task_state)st));
			return NULL;
		}
		if (st != TASK_DONE)
			waiting++;
	}
	if (isnan(spec->timeout_s) || spec->timeout_s > DURATION_MAX_S) {
		/* Every way in (protocol, Bridge, extensions) ends here. */
		*cause = xstrdup("the timeout must be at most 100 years");
		return NULL;
	}
	if (!utf8_valid(spec->title, strlen(spec->title)) ||
	    (spec->capability != NULL && !utf8_valid(spec->capability, strlen(spec->capability)))) {
		*cause = xstrdup("the title and the capability must be UTF-8 text");
		return NULL;
	}
	/* Stored compact (one line, as task.assign carries it); a payload
	 * from the protocol was dumped compact already. */
	char *payload = NULL;
	if (spec->payload != NULL && spec->payload_compact) {
		payload = xstrdup(spec->payload);
	} else if (spec->payload != NULL) {
		json_t *p = json_loads(spec->payload, JSON_DECODE_ANY, NULL);
		if (p == NULL) {
			*cause = xstrdup("the payload is not JSON");
			return NULL;
		}
		payload = json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(p);
	}

	struct task *t = xcalloc(1, sizeof *t);
	t->title = xstrdup(spec->title);
	t->payload = payload;
	t->priority = spec->priority;
	t->capability = spec->capability && *spec->capability ? xstrdup(spec->capability) : NULL;
	t->timeout_s = spec->timeout_s > 0 ? spec->timeout_s : cfg->tasks.default_timeout;
	t->max_retries = spec->max_retries >= 0 ? spec->max_retries : cfg->tasks.default_retries;
	t->submitter = xstrdup(spec->submitter ? spec->submitter : "captain");
	t->created_ms = t->updated_ms = time_wall_ms();
	t->ready_pos = t->timer_pos = HEAP_NOWHERE;
	t->state = waiting > 0 ? TASK_BLOCKED : TASK_QUEUED;
	t->waiting = waiting;

	struct store *st = orch_store(tm->orch);
	sqlite3_stmt *s = store_stmt(
	    st,
	    "INSERT INTO tasks (title, payload, priority, capability, timeout_s, max_retries, "
	    "attempt, state, submitter, created_ms, updated_ms, id) VALUES (?1, ?2, ?3, ?4, ?5, "
	    "?6, 0, ?7, ?8, ?9, ?9, ?10)");
	int rc = SQLITE_ERROR;
	if (s != NULL) {
		sqlite3_bind_text(s, 1, t->title, -1, SQLITE_STATIC);
		if (t->payload)
			sqlite3_bind_text(s, 2, t->payload, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 3, t->priority);
		if (t->capability)
			sqlite3_bind_text(s, 4, t->capability, -1, SQLITE_STATIC);
		sqlite3_bind_double(s, 5, t->timeout_s);
		sqlite3_bind_int(s, 6, t->max_retries);
		sqlite3_bind_text(s, 7, task_state_name(t->state), -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 8, t->submitter, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 9, t->created_ms);
		/* Taken even if the insert fails: one whose insert a failed
		 * commit rolled back is never handed out again either. */
		sqlite3_bind_int64(s, 10, idlease_take(&tm->ids));
		rc = store_step_write(st, s);
	}
	if (rc != SQLITE_DONE) {
		*cause = xasprintf("task not stored: %s", store_state(st));
		task_free(t);
		return NULL;
	}
	t->id = next_id;
	tm->counts.last_id = t->id;
	tm->counts.submitted++;
	tm->counts.n[t->state]++;
	if (spec->nafter > 0) {
		t->after = xcalloc(spec->nafter, sizeof *t->after);
		sqlite3_stmt *ds = store_stmt(st, "INSERT OR IGNORE INTO task_deps (task, after) "
		                                  "VALUES (?1, ?2)");
		for (size_t i = 0; i < spec->nafter; i++) {
			int64_t d = spec->after[i];
			t->after[t->nafter++] = d;
			if (ds != NULL) {
				sqlite3_bind_int64(ds, 1, t->id);
				sqlite3_bind_int64(ds, 2, d);
				store_step_write(st, ds);
			}
			if (intmap_get(&tm->live, d) != NULL)
				deplist_add(tm, d, t);
		}
	}
	intmap_set(&tm->live, t->id, t);
	struct unstored *u = xmalloc(sizeof *u);
	u->tm = tm;
	u->id = t->id;
	intmap_set(&tm->uncommitted, t->id, (void *)(intptr_t)1);
	store_after_commit(st, task_submit_stored, u);
	log_debug(orch_log(tm->orch), "tasks", "task %lld '%s' submitted by %s (%s%s%s)",
	          (long long)t->id, t->title, t->submitter, task_state_name(t->state),
	          t->capability ? ", needs " : "", t->capability ? t->capability : "");
	for (size_t i = 0; i < tm->nlisteners; i++)
		tm->listeners[i].fn(tm->listeners[i].arg, t, t->state);
	if (t->state == TASK_QUEUED) {
		heap_push(&tm_capq(tm, t->capability, true)->ready, t);
		schedule_task(tm, t);
	}
	return intmap_get(&tm->live, t->id);
}

struct task *
tasks_get(struct tasks *tm, int64_t id)
{
	return intmap_get(&tm->live, id);
}

/* ---- captain actions -------------------------------------------------- */

int
tasks_cancel(struct tasks *tm, int64_t id, char **cause)
{
	struct task *t = intmap_get(&tm->live, id);
	if (t == NULL) {
		int st = task_stored_state(tm, id);
		*cause = st < 0 ? xasprintf("no task %lld", (long long)id)
		                : xasprintf("task %lld is already %s", (long long)id,
		                            task_state_name((enum task_state)st));
		return -1;
	}
	if (t->state == TASK_ASSIGNED || t->state == TASK_RUNNING) {
		struct agent *a = agents_find(orch_agents(tm->orch), t->agent);
		if (a != NULL)
			agent_send_line(a, xasprintf("{\"type\":\"task.cancel\",\"task\":%lld}\n",
			                             (long long)t->id));
	}
	task_end(tm, t, TASK_CANCELLED, LVL_INFO, "cancelled by the captain");
	return 0;
}

/* Loads a finished task back into memory (for task retry). */
static struct task *
task_load(struct tasks *tm, int64_t id)
{
	sqlite3_stmt *s = store_stmt(
	    orch_store(tm->orch), "SELECT title, payload, priority, capability, timeout_s, "
	                          "max_retries, attempt, state, submitter, created_ms FROM tasks "
	                          "WHERE id = ?1");
	if (s == NULL)
		return NULL;
	sqlite3_bind_int64(s, 1, id);
	struct task *t = NULL;
	if (sqlite3_step(s) == SQLITE_ROW) {
		t = xcalloc(1, sizeof *t);
		t->id = id;
		t->title = xstrdup((const char *)sqlite3_column_text(s, 0));
		if (sqlite3_column_type(s, 1) != SQLITE_NULL)
			t->payload = xstrdup((const char *)sqlite3_column_text(s, 1));
		int p = sqlite3_column_int(s, 2);
		t->priority = p >= 0 && p < PRIO_N ? (enum proto_priority)p : PRIO_NORMAL;
		if (sqlite3_column_type(s, 3) != SQLITE_NULL)
			t->capability = xstrdup((const char *)sqlite3_column_text(s, 3));
		t->timeout_s = sqlite3_column_double(s, 4);
		if (!(t->timeout_s > 0 && t->timeout_s <= DURATION_MAX_S))
			t->timeout_s =
			    orch_config(tm->orch)->tasks.default_timeout; /* an old row */
		t->max_retries = sqlite3_column_int(s, 5);
		t->attempt = sqlite3_column_int(s, 6);
		task_state_parse((const char *)sqlite3_column_text(s, 7), &t->state);
		t->submitter = xstrdup((const char *)sqlite3_column_text(s, 8));
		t->created_ms = sqlite3_column_int64(s, 9);
		t->ready_pos = t->timer_pos = HEAP_NOWHERE;
	}
	sqlite3_reset(s);
	return t;
}

int
tasks_retry(struct tasks *tm, int64_t id, char **cause)
{
	struct task *t = intmap_get(&tm->live, id);
	if (t != NULL && t->state == TASK_FAILED) {
		task_to_queued(tm, t, "retried by the captain");
		return 0;
	}
	if (t != NULL) {
		*cause = xasprintf("task %lld is %s; only failed, dead and cancelled tasks can be "
		                   "retried",
		                   (long long)id, task_state_name(t->state));
		return -1;
	}
	t = task_load(tm, id);
	if (t == NULL) {
		*cause = xasprintf("no task %lld", (long long)id);
		return -1;
	}
	if (t->state == TASK_DONE) {
		*cause = xasprintf("task %lld is done; submit a new one", (long long)id);
		task_free(t);
		return -1;
	}
	/* Its dependencies still hold: wait for unfinished ones, refuse if
	 * one can never finish. */
	sqlite3_stmt *ds =
	    store_stmt(orch_store(tm->orch), "SELECT after FROM task_deps WHERE task = ?1");
	if (ds != NULL) {
		sqlite3_bind_int64(ds, 1, id);
		while (sqlite3_step(ds) == SQLITE_ROW) {
			t->after = xreallocarray(t->after, t->nafter + 1, sizeof *t->after);
			t->after[t->nafter++] = sqlite3_column_int64(ds, 0);
		}
		sqlite3_reset(ds);
	}
	for (size_t k = 0; k < t->nafter; k++) {
		struct task *dt = intmap_get(&tm->live, t->after[k]);
		int st = dt ? (int)dt->state : task_stored_state(tm, t->after[k]);
		if (st == TASK_DEAD || st == TASK_CANCELLED) {
			*cause =
			    xasprintf("task %lld waits for task %lld, which is %s", (long long)id,
			              (long long)t->after[k], task_state_name((enum task_state)st));
			task_free(t);
			return -1;
		}
		if (st != TASK_DONE)
			t->waiting++;
	}
	/* A fresh set of attempts. */
	t->attempt = 0;
	free(t->error);
	t->error = NULL;
	intmap_set(&tm->live, id, t);
	if (t->waiting > 0) {
		for (size_t k = 0; k < t->nafter; k++)
			if (intmap_get(&tm->live, t->after[k]) != NULL)
				deplist_add(tm, t->after[k], t);
		task_set_state(tm, t, TASK_BLOCKED, LVL_INFO, "retried by the captain");
		return 0;
	}
	task_to_queued(tm, t, "retried by the captain");
	return 0;
}

/* ---- agents ----------------------------------------------------------- */

void
tasks_agent_ready(struct tasks *tm, struct agent *a)
{
	schedule_agent(tm, a);
}

static int
held_cmp(const void *x, const void *y)
{
	return ready_cmp(*(struct task *const *)x, *(struct task *const *)y);
}

void
tasks_agent_gone(struct tasks *tm, struct agent *a)
{
	/* Every task it held comes back at once, counted as an attempt. */
	struct task **held = NULL;
	size_t n = 0, it = 0;
	void *v;
	while (intmap_next(&tm->live, &it, NULL, &v)) {
		struct task *t = v;
		if ((t->state == TASK_ASSIGNED || t->state == TASK_RUNNING) && t->agent &&
		    strcmp(t->agent, a->name) == 0) {
			held = xreallocarray(held, n + 1, sizeof *held);
			held[n++] = t;
		}
	}
	/* In scheduling order (priority, then id), not hash order, so that
	 * the best of them get the free slots. */
	if (n > 1)
		qsort(held, n, sizeof *held, held_cmp);
	for (size_t i = 0; i < n; i++) {
		char why[96];
		snprintf(why, sizeof why, "agent %s went away", a->name);
		task_attempt_failed(tm, held[i], why, true, false);
	}
	free(held);
}

/* Finds the task an agent reports on; replies with an error if it is not
 * this agent's. */
static struct task *
tasks_for_agent(struct tasks *tm, struct agent *a, const struct proto_msg *m)
{
	int64_t id = proto_int(m, "task", 0);
	struct task *t = intmap_get(&tm->live, id);
	char d[128];
	if (t != NULL && (t->state == TASK_ASSIGNED || t->state == TASK_RUNNING) && t->agent &&
	    strcmp(t->agent, a->name) == 0)
		return t;
	if (t == NULL && (id > tm->counts.last_id || task_stored_state(tm, id) < 0)) {
		snprintf(d, sizeof d, "%s: no task %lld", proto_type_name(m->type), (long long)id);
		agent_send_error(a, PERR_UNKNOWN_TASK, d, proto_str(m, "ref"));
	} else {
		snprintf(d, sizeof d, "%s: task %lld is not assigned to you",
		         proto_type_name(m->type), (long long)id);
		agent_send_error(a, PERR_NOT_YOUR_TASK, d, proto_str(m, "ref"));
	}
	return NULL;
}

struct submit_reply {
	char *agent;
	char *ref;
	int64_t id;
	struct tasks *tm;
};

static void
tasks_submit_committed(void *arg, int status)
{
	struct submit_reply *r = arg;
	struct agent *a = agents_find(orch_agents(r->tm->orch), r->agent);
	if (a != NULL) {
		if (status == 0)
			agent_send_line(a, proto_sent(r->ref, r->id));
		else
			agent_send_error(a, PERR_STORE, "task.submit: not stored (store failure)",
			                 r->ref);
	}
	free(r->agent);
	free(r->ref);
	free(r);
}

/* task.submit from an agent. */
static void
tasks_on_submit(struct tasks *tm, struct agent *a, const struct proto_msg *m)
{
	struct task_spec spec = {.title = proto_str(m, "title"),
	                         .priority = PRIO_NORMAL,
	                         .max_retries = -1,
	                         .submitter = a->name};
	const char *ps = proto_str(m, "priority");
	if (ps != NULL)
		proto_priority_parse(ps, &spec.priority);
	spec.capability = proto_str(m, "capability");
	spec.timeout_s = proto_num(m, "timeout_s", 0);
	spec.max_retries = (int)proto_int(m, "max_retries", -1);
	json_t *payload = proto_get(m, "payload");
	char *ptext = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	spec.payload = ptext;
	spec.payload_compact = true;
	json_t *after = proto_get(m, "after");
	int64_t *deps = xcalloc(json_array_size(after) + 1, sizeof *deps);
	for (size_t i = 0; i < json_array_size(after); i++)
		deps[spec.nafter++] = json_integer_value(json_array_get(after, i));
	spec.after = deps;
	char *cause = NULL;
	struct task *t = tasks_submit(tm, &spec, &cause);
	const char *ref = proto_str(m, "ref");
	if (t == NULL) {
		char *d = xasprintf("task.submit: %s", cause);
		agent_send_error(a, strstr(cause, "no task") ? PERR_UNKNOWN_TASK : PERR_BAD_FIELD,
		                 d, ref);
		free(d);
		free(cause);
	} else {
		struct submit_reply *r = xcalloc(1, sizeof *r);
		r->agent = xstrdup(a->name);
		r->ref = ref ? xstrdup(ref) : NULL;
		r->id = t->id;
		r->tm = tm;
		store_after_commit(orch_store(tm->orch), tasks_submit_committed, r);
	}
	free(deps);
	free(ptext);
}

bool
tasks_agent_message(struct tasks *tm, struct agent *a, const struct proto_msg *m)
{
	struct task *t;
	switch (m->type) {
	case PROTO_TASK_SUBMIT:
		tasks_on_submit(tm, a, m);
		return true;
	case PROTO_TASK_PROGRESS:
		if ((t = tasks_for_agent(tm, a, m)) == NULL)
			return true;
		t->progress = proto_num(m, "pct", t->progress);
		if (proto_str(m, "note") != NULL) {
			free(t->note);
			t->note = xstrdup(proto_str(m, "note"));
		}
		if (t->state == TASK_ASSIGNED)
			task_set_state(tm, t, TASK_RUNNING, LVL_DEBUG, "%.0f%%", t->progress);
		else {
			t->updated_ms = time_wall_ms();
			task_persist(tm, t);
			for (size_t i = 0; i < tm->nlisteners; i++)
				tm->listeners[i].fn(tm->listeners[i].arg, t, t->state);
		}
		return true;
	case PROTO_TASK_DONE: {
		if ((t = tasks_for_agent(tm, a, m)) == NULL)
			return true;
		json_t *res = proto_get(m, "result");
		free(t->result);
		t->result = res ? json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		t->progress = 100;
		char why[96];
		snprintf(why, sizeof why, "by %s, attempt %d", a->name, t->attempt);
		/* Routine success is a debug record, like submitted, assigned and
		 * running: under load an info record per task is a log row, two
		 * lines and a quarter of the task cycle's time, and the tasks
		 * pane, `task list` and the task events show it already.  What
		 * needs the operator (failures, timeouts, dead, cancelled) stays
		 * at info or warn. */
		task_end(tm, t, TASK_DONE, LVL_DEBUG, why);
		return true;
	}
	case PROTO_TASK_FAIL:
		if ((t = tasks_for_agent(tm, a, m)) == NULL)
			return true;
		task_attempt_failed(tm, t, proto_str(m, "error"), proto_bool(m, "retry", true),
		                    true);
		return true;
	default:
		return false;
	}
}

/* ---- recovery --------------------------------------------------------- */

int
tasks_recover(struct tasks *tm, char **cause)
{
	struct store *st = orch_store(tm->orch);
	sqlite3_stmt *s = store_stmt(st, "SELECT seq FROM sqlite_sequence WHERE name = 'tasks'");
	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		tm->counts.last_id = sqlite3_column_int64(s, 0);
	if (s != NULL)
		sqlite3_reset(s);
	idlease_open(&tm->ids, st, "task_ids", tm->counts.last_id);
	s = store_stmt(st, "SELECT state, count(*) FROM tasks GROUP BY state");
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		enum task_state ts;
		if (task_state_parse((const char *)sqlite3_column_text(s, 0), &ts) &&
		    task_state_final(ts))
			tm->counts.n[ts] = (uint64_t)sqlite3_column_int64(s, 1);
	}
	if (s != NULL)
		sqlite3_reset(s);

	s = store_stmt(st, "SELECT id FROM tasks WHERE state NOT IN ('done', 'dead', "
	                   "'cancelled') ORDER BY id");
	int64_t *ids = NULL;
	size_t n = 0;
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		ids = xreallocarray(ids, n + 1, sizeof *ids);
		ids[n++] = sqlite3_column_int64(s, 0);
	}
	if (s != NULL)
		sqlite3_reset(s);
	sqlite3_stmt *rs = store_stmt(st, "SELECT agent, progress, note, error, retry_at_ms FROM "
	                                  "tasks WHERE id = ?1");
	sqlite3_stmt *ds = store_stmt(st, "SELECT after FROM task_deps WHERE task = ?1");
	struct task **loaded = xcalloc(n + 1, sizeof *loaded);
	for (size_t i = 0; i < n; i++) {
		struct task *t = task_load(tm, ids[i]);
		if (t == NULL)
			continue;
		if (rs != NULL) {
			sqlite3_bind_int64(rs, 1, t->id);
			if (sqlite3_step(rs) == SQLITE_ROW) {
				if (sqlite3_column_type(rs, 0) != SQLITE_NULL)
					t->agent =
					    xstrdup((const char *)sqlite3_column_text(rs, 0));
				t->progress = sqlite3_column_double(rs, 1);
				if (sqlite3_column_type(rs, 2) != SQLITE_NULL)
					t->note = xstrdup((const char *)sqlite3_column_text(rs, 2));
				if (sqlite3_column_type(rs, 3) != SQLITE_NULL)
					t->error =
					    xstrdup((const char *)sqlite3_column_text(rs, 3));
				int64_t at = sqlite3_column_int64(rs, 4);
				int64_t left = at > 0 ? at - time_wall_ms() : 0;
				t->deadline = tm_now(tm) + (left > 0 ? left : 0);
			}
			sqlite3_reset(rs);
		}
		while (ds != NULL) {
			sqlite3_bind_int64(ds, 1, t->id);
			while (sqlite3_step(ds) == SQLITE_ROW) {
				t->after = xreallocarray(t->after, t->nafter + 1, sizeof *t->after);
				t->after[t->nafter++] = sqlite3_column_int64(ds, 0);
			}
			sqlite3_reset(ds);
			break;
		}
		intmap_set(&tm->live, t->id, t);
		tm->counts.n[t->state]++;
		loaded[i] = t;
	}
	free(ids);
	/* Second pass, once every live task is known: dependencies and queues. */
	size_t requeued = 0;
	for (size_t i = 0; i < n; i++) {
		struct task *t = loaded[i];
		if (t == NULL)
			continue;
		t->waiting = 0;
		for (size_t k = 0; k < t->nafter; k++) {
			struct task *d = intmap_get(&tm->live, t->after[k]);
			if (d != NULL) {
				t->waiting++;
				deplist_add(tm, d->id, t);
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct task *t = loaded[i];
		if (t == NULL)
			continue;
		switch (t->state) {
		case TASK_ASSIGNED:
		case TASK_RUNNING:
			/* Its agent is gone with the old process. */
			free(t->agent);
			t->agent = NULL;
			requeued++;
			if (t->attempt > t->max_retries)
				task_to_dead(tm, t,
				             "dreamos restarted while it ran; out of retries");
			else
				task_to_queued(tm, t, "dreamos restarted while it ran");
			break;
		case TASK_FAILED:
			heap_push(&tm->timers, t);
			break;
		case TASK_BLOCKED:
			if (t->waiting == 0)
				task_to_queued(tm, t, "dependencies done");
			break;
		default:
			heap_push(&tm_capq(tm, t->capability, true)->ready, t);
			break;
		}
	}
	free(loaded);
	tm_arm(tm);
	if (n > 0)
		log_info(orch_log(tm->orch), "tasks",
		         "recovered %zu unfinished tasks (%zu were running and are queued again); "
		         "last id %lld",
		         n, requeued, (long long)tm->counts.last_id);
	(void)cause;
	return 0;
}

/* ---- views ------------------------------------------------------------ */

void
tasks_counts(const struct tasks *tm, struct task_counts *out)
{
	*out = tm->counts;
}

const char *
tasks_wait_reason(struct tasks *tm, const struct task *t)
{
	if (t->state == TASK_BLOCKED)
		return "waiting for dependencies";
	if (t->state != TASK_QUEUED)
		return NULL;
	struct agents *as = orch_agents(tm->orch);
	bool capable = false;
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if (a->max_tasks > 0 && (t->capability == NULL ? agent_takes_any_task(a)
		                                               : agent_has_cap(a, t->capability))) {
			capable = true;
			if (agent_state_connected(a->state))
				return "waiting for a free slot on a capable agent";
		}
	}
	return capable ? "capable agents exist but none is running" : "no capable agent";
}

json_t *
tasks_show_json(struct tasks *tm, int64_t id)
{
	tasks_sync(tm);
	sqlite3_stmt *s = store_stmt(
	    orch_store(tm->orch),
	    "SELECT id, title, payload, priority, capability, timeout_s, max_retries, attempt, "
	    "state, agent, progress, note, result, error, submitter, created_ms, updated_ms, "
	    "(SELECT group_concat(after) FROM task_deps WHERE task = tasks.id) FROM tasks WHERE "
	    "id = ?1");
	if (s == NULL)
		return NULL;
	sqlite3_bind_int64(s, 1, id);
	json_t *j = NULL;
	if (sqlite3_step(s) == SQLITE_ROW) {
		char created[40], updated[40];
		time_iso8601(sqlite3_column_int64(s, 15), created, sizeof created);
		time_iso8601(sqlite3_column_int64(s, 16), updated, sizeof updated);
		int p = sqlite3_column_int(s, 3);
#define COLSTR(i)                                                                                  \
	(sqlite3_column_type(s, (i)) == SQLITE_NULL ? NULL                                         \
	                                            : (const char *)sqlite3_column_text(s, (i)))
		json_t *payload = COLSTR(2) ? json_loads(COLSTR(2), JSON_DECODE_ANY, NULL) : NULL;
		json_t *result = COLSTR(12) ? json_loads(COLSTR(12), JSON_DECODE_ANY, NULL) : NULL;
		json_t *after = json_array();
		if (COLSTR(17) != NULL) {
			char *list = xstrdup(COLSTR(17)), *save = NULL;
			for (char *w = strtok_r(list, ",", &save); w;
			     w = strtok_r(NULL, ",", &save))
				json_array_append_new(after, json_integer(strtoll(w, NULL, 10)));
			free(list);
		}
		j = json_pack(
		    "{s:I,s:s,s:o,s:s,s:s?,s:f,s:i,s:i,s:s,s:s?,s:f,s:s?,s:o,s:s?,s:s?,s:s,"
		    "s:s,s:o}",
		    "id", (json_int_t)sqlite3_column_int64(s, 0), "title", COLSTR(1), "payload",
		    payload ? payload : json_null(), "priority",
		    proto_priority_name(p >= 0 && p < PRIO_N ? p : PRIO_NORMAL), "capability",
		    COLSTR(4), "timeout_s", sqlite3_column_double(s, 5), "max_retries",
		    sqlite3_column_int(s, 6), "attempt", sqlite3_column_int(s, 7), "state",
		    COLSTR(8), "agent", COLSTR(9), "progress", sqlite3_column_double(s, 10), "note",
		    COLSTR(11), "result", result ? result : json_null(), "error", COLSTR(13),
		    "submitter", COLSTR(14), "created", created, "updated", updated, "after",
		    after);
#undef COLSTR
	}
	sqlite3_reset(s);
	if (j == NULL)
		return NULL;
	struct task *t = intmap_get(&tm->live, id);
	if (t != NULL) {
		const char *why = tasks_wait_reason(tm, t);
		if (why != NULL)
			json_object_set_new(j, "waiting", json_string(why));
		if (t->state == TASK_FAILED)
			json_object_set_new(j, "retry_in_s",
			                    json_real((double)(t->deadline - tm_now(tm)) / 1000.0));
	}
	return j;
}

int
tasks_subscribe_events(struct tasks *tm, task_event_fn fn, void *arg)
{
	tm->listeners = xreallocarray(tm->listeners, tm->nlisteners + 1, sizeof *tm->listeners);
	tm->listeners[tm->nlisteners++] = (struct task_listener){++tm->next_listener, fn, arg};
	return tm->next_listener;
}

void
tasks_unsubscribe_events(struct tasks *tm, int id)
{
	for (size_t i = 0; i < tm->nlisteners; i++) {
		if (tm->listeners[i].id == id) {
			memmove(&tm->listeners[i], &tm->listeners[i + 1],
			        (tm->nlisteners - i - 1) * sizeof *tm->listeners);
			tm->nlisteners--;
			return;
		}
	}
}
