/* test-task.c — the task manager against a real orchestrator in a temporary
 * runtime, with in-process agents (agents_attach) whose outgoing protocol
 * lines are captured, and an injected clock so that backoff and timeouts
 * are driven by advancing `now` and calling tasks_tick() — no sleeps.
 *
 * Covers every transition, priority then FIFO order, capability matching,
 * least-loaded balancing with round-robin ties, exact backoff timing, run
 * timeouts, dependency chains (and refused dependencies), give-back when an
 * agent goes away, bad input from agents and from the captain, and
 * recovery of the queue from a copy of the database taken while the
 * orchestrator runs (what a kill -9 leaves behind). */
#include "testutil.h"

#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <uv.h>

#include "agent.h"
#include "cmd.h"
#include "idlease.h"
#include "orch.h"
#include "proto.h"
#include "store.h"
#include "task.h"

/* ---- captured agents ---------------------------------------------------- */

/* Lines the orchestrator sent to one fake agent. */
struct capture {
	char **lines;
	bool *owed; /* each line sent as owed an answer (agent_send_owed) */
	size_t n;
};

static int
cap_send(struct agent *a, const char *line, size_t len, bool owed)
{
	struct capture *c = a->link;
	if (c == NULL)
		return -1;
	/* The welcome of agents_attach is not what these tests look at. */
	if (strstr(line, "\"type\":\"welcome\"") != NULL)
		return 0;
	c->lines = realloc(c->lines, (c->n + 1) * sizeof *c->lines);
	c->owed = realloc(c->owed, (c->n + 1) * sizeof *c->owed);
	c->owed[c->n] = owed;
	c->lines[c->n++] = strndup(line, len);
	return 0;
}

/* True if the task.assign lines, and they alone, were sent as owed an
 * answer: the link does not count them when it stops reading an agent
 * that does not read (outq.h); a task.cancel waits for nothing. */
static bool
only_assign_owed(const struct capture *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->owed[i] != (strstr(c->lines[i], "\"type\":\"task.assign\"") != NULL))
			return false;
	return true;
}

static size_t
cap_queued(struct agent *a)
{
	(void)a;
	return 0;
}

static void
cap_set_reading(struct agent *a, bool on)
{
	(void)a;
	(void)on;
}

static const struct agent_link_ops capture_ops = {
    .kind = "test",
    .send = cap_send,
    .queued = cap_queued,
    .set_reading = cap_set_reading,
};

static void
capture_clear(struct capture *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->lines[i]);
	free(c->lines);
	free(c->owed);
	c->lines = NULL;
	c->owed = NULL;
	c->n = 0;
}

/* ---- the fixture ---------------------------------------------------------- */

#define MAX_AGENTS 8

struct event {
	int64_t id;
	enum task_state from, to;
};

struct fixture {
	char *dir;
	char *cfg;
	uv_loop_t loop;
	struct orch *orch;
	int64_t now; /* the task manager's clock, ms */
	struct capture caps[MAX_AGENTS];
	char *names[MAX_AGENTS];
	size_t nagents;
	struct event *ev;
	size_t nev;
};

static const char test_config[] = "agents:\n"
                                  "  heartbeat_timeout: 0\n"
                                  "tasks:\n"
                                  "  default_retries: 3\n"
                                  "  default_timeout: 10s\n"
                                  "  backoff:\n"
                                  "    initial: 1s\n"
                                  "    factor: 2\n"
                                  "    cap: 8s\n";

static int64_t
fake_clock(void *arg)
{
	return *(int64_t *)arg;
}

static void
on_task_event(void *arg, const struct task *t, enum task_state from)
{
	struct fixture *f = arg;
	f->ev = realloc(f->ev, (f->nev + 1) * sizeof *f->ev);
	f->ev[f->nev++] = (struct event){t->id, from, t->state};
}

/* Opens an orchestrator on runtime dir with the test configuration and the
 * fake clock (started at the real monotonic time, so that deadlines a
 * recovery computed with the real clock stay meaningful). */
static void
fx_open(struct fixture *f, const char *dir)
{
	uv_loop_init(&f->loop);
	struct orch_opts o = {
	    .runtime = dir, .config_path = f->cfg, .bridge_port = -1, .mode = "test"};
	char *cause = NULL;
	int rc = orch_new(&f->orch, &f->loop, &o, &cause);
	if (rc != 0)
		fprintf(stderr, "orch_new: %s\n", cause);
	assert_int_equal(rc, 0);
	f->now = time_mono_ms();
	tasks_set_clock(orch_tasks(f->orch), fake_clock, &f->now);
	tasks_subscribe_events(orch_tasks(f->orch), on_task_event, f);
}

static void
on_quit(void *arg)
{
	*(bool *)arg = true;
}

/* Stops the orchestrator in order (the in-process agents disconnect
 * first), runs the loop until everything is closed, and frees it.
 * (orch_free alone, without the shutdown, frees the bus and the task
 * manager while their timers are still closing: a use after free that
 * ASan reports once the loop runs again.) */
static void
fx_close(struct fixture *f)
{
	struct agents *as = orch_agents(f->orch);
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if (agent_state_connected(a->state))
			agent_detach(a, "test over");
	}
	bool quit = false;
	orch_set_quit_cb(f->orch, on_quit, &quit);
	orch_request_quit(f->orch, "test over");
	while (!quit)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_run(&f->loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
	orch_free(f->orch);
	f->orch = NULL;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	for (size_t i = 0; i < f->nagents; i++) {
		capture_clear(&f->caps[i]);
		free(f->names[i]);
		f->names[i] = NULL;
	}
	f->nagents = 0;
	free(f->ev);
	f->ev = NULL;
	f->nev = 0;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	f->dir = testutil_tmpdir();
	setenv("DREAMOS_CONFIG", "", 1);
	setenv("XDG_CONFIG_HOME", f->dir, 1);
	f->cfg = testutil_write(f->dir, "test.yaml", test_config);
	fx_open(f, f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	fx_close(f);
	free(f->cfg);
	testutil_rmdir(f->dir);
	free(f);
	return 0;
}

static struct tasks *
TM(struct fixture *f)
{
	return orch_tasks(f->orch);
}

/* The capture of agent name (created on first use). */
static struct capture *
cap_of(struct fixture *f, const char *name)
{
	for (size_t i = 0; i < f->nagents; i++)
		if (strcmp(f->names[i], name) == 0)
			return &f->caps[i];
	assert_true(f->nagents < MAX_AGENTS);
	f->names[f->nagents] = strdup(name);
	return &f->caps[f->nagents++];
}

/* Attaches an in-process agent; caps is a NULL-terminated list or NULL. */
static struct agent *
attach(struct fixture *f, const char *name, const char *const *caps, int max_tasks)
{
	size_t ncaps = 0;
	while (caps != NULL && caps[ncaps] != NULL)
		ncaps++;
	char *cause = NULL;
	struct agent *a = agents_attach(orch_agents(f->orch), name, "test", caps, ncaps, max_tasks,
	                                &capture_ops, cap_of(f, name), &cause);
	if (a == NULL)
		fprintf(stderr, "agents_attach: %s\n", cause);
	assert_non_null(a);
	return a;
}

/* Sends an agent → orchestrator line (printf format) through the
 * orchestrator's message hook; the line must be valid protocol. */
static void PRINTFLIKE(3, 4) feed(struct fixture *f, struct agent *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *line = xvasprintf(fmt, ap);
	va_end(ap);
	struct proto_msg m;
	struct proto_err e = {0};
	int rc = proto_parse(line, strlen(line), &m, &e);
	if (rc != 0)
		fprintf(stderr, "proto_parse(%s): %s %s\n", line, e.code, e.detail);
	assert_int_equal(rc, 0);
	assert_true(orch_agent_message(f->orch, a, &m));
	proto_msg_free(&m);
	free(line);
}

/* Submits a task as the captain; returns its id. */
static int64_t
submit_full(struct fixture *f, const char *title, enum proto_priority prio, const char *cap,
            const int64_t *after, size_t nafter, int retries, double timeout_s)
{
	struct task_spec spec = {.title = title,
	                         .priority = prio,
	                         .capability = cap,
	                         .after = after,
	                         .nafter = nafter,
	                         .max_retries = retries,
	                         .timeout_s = timeout_s,
	                         .submitter = "captain"};
	char *cause = NULL;
	struct task *t = tasks_submit(TM(f), &spec, &cause);
	if (t == NULL)
		fprintf(stderr, "tasks_submit(%s): %s\n", title, cause);
	assert_non_null(t);
	return t->id;
}

static int64_t
submit(struct fixture *f, const char *title)
{
	return submit_full(f, title, PRIO_NORMAL, NULL, NULL, 0, -1, 0);
}

/* Submits a task that must be refused; returns the cause (static). */
static const char *
submit_refused(struct fixture *f, const char *title, const char *payload, const int64_t *after,
               size_t nafter)
{
	static char out[256];
	struct task_spec spec = {.title = title,
	                         .payload = payload,
	                         .priority = PRIO_NORMAL,
	                         .after = after,
	                         .nafter = nafter,
	                         .max_retries = -1};
	char *cause = NULL;
	assert_null(tasks_submit(TM(f), &spec, &cause));
	assert_non_null(cause);
	snprintf(out, sizeof out, "%s", cause);
	free(cause);
	return out;
}

/* Advances the clock by ms and processes due deadlines. */
static void
advance(struct fixture *f, int64_t ms)
{
	f->now += ms;
	tasks_tick(TM(f));
}

/* The stored view of a task (flushed first, as the captain would see it);
 * the caller decrefs. */
static json_t *
show(struct fixture *f, int64_t id)
{
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	json_t *j = tasks_show_json(TM(f), id);
	assert_non_null(j);
	return j;
}

/* The state of a task, as stored (static string). */
static const char *
state_of(struct fixture *f, int64_t id)
{
	static char out[32];
	json_t *j = show(f, id);
	snprintf(out, sizeof out, "%s", json_string_value(json_object_get(j, "state")));
	json_decref(j);
	return out;
}

static long long
int_field(struct fixture *f, int64_t id, const char *field)
{
	json_t *j = show(f, id);
	long long v = json_integer_value(json_object_get(j, field));
	json_decref(j);
	return v;
}

/* A string field of the stored task (static copy; "" when null). */
static const char *
str_field(struct fixture *f, int64_t id, const char *field)
{
	static char out[512];
	json_t *j = show(f, id);
	const char *s = json_string_value(json_object_get(j, field));
	snprintf(out, sizeof out, "%s", s ? s : "");
	json_decref(j);
	return out;
}

/* ---- reading captured lines ---------------------------------------------- */

/* Parses line i of c (the caller decrefs). */
static json_t *
cap_line(const struct capture *c, size_t i)
{
	json_t *j = json_loads(c->lines[i], 0, NULL);
	assert_non_null(j);
	return j;
}

static const char *
jtype(json_t *j)
{
	const char *t = json_string_value(json_object_get(j, "type"));
	return t ? t : "";
}

/* Task ids of the task.assign lines of c from line `from` on, in order, as
 * "1,2,3" (static). */
static const char *
assigned(const struct capture *c, size_t from)
{
	static char out[512];
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = from; i < c->n; i++) {
		json_t *j = cap_line(c, i);
		if (strcmp(jtype(j), "task.assign") == 0)
			len +=
			    (size_t)snprintf(out + len, sizeof out - len, "%s%lld", len ? "," : "",
			                     (long long)json_integer_value(json_object_get(
			                         json_object_get(j, "task"), "id")));
		json_decref(j);
	}
	return out;
}

/* Number of lines of type `type` for task id (or any task if id == 0). */
static int
count_lines(const struct capture *c, const char *type, int64_t id)
{
	int n = 0;
	for (size_t i = 0; i < c->n; i++) {
		json_t *j = cap_line(c, i);
		json_t *task = json_object_get(j, "task");
		int64_t tid = json_is_object(task) ? json_integer_value(json_object_get(task, "id"))
		                                   : json_integer_value(task);
		if (strcmp(jtype(j), type) == 0 && (id == 0 || tid == id))
			n++;
		json_decref(j);
	}
	return n;
}

/* The last line of c, which must be an error: returns its code, and sets
 * last_error_detail to its detail (static copies). */
static const char *last_error_detail;
static const char *
last_error(const struct capture *c)
{
	static char code[64], detail[256];
	assert_true(c->n > 0);
	json_t *j = cap_line(c, c->n - 1);
	assert_string_equal(jtype(j), "error");
	snprintf(code, sizeof code, "%s", json_string_value(json_object_get(j, "code")));
	snprintf(detail, sizeof detail, "%s", json_string_value(json_object_get(j, "detail")));
	json_decref(j);
	last_error_detail = detail;
	return code;
}

/* The transitions recorded for task id since event index from, as
 * "queued>assigned assigned>done" (static); the submit shows as
 * "queued>queued" (or "blocked>blocked"), and so does a progress report
 * that keeps the state. */
static const char *
transitions(struct fixture *f, int64_t id, size_t from)
{
	static char out[1024];
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = from; i < f->nev; i++) {
		const struct event *e = &f->ev[i];
		if (e->id != id)
			continue;
		len += (size_t)snprintf(out + len, sizeof out - len, "%s%s>%s", len ? " " : "",
		                        task_state_name(e->from), task_state_name(e->to));
	}
	return out;
}

/* ---- the command layer ---------------------------------------------------- */

struct outcome {
	int calls;
	enum cmd_retval status;
	char *text;
	char *error;
};

static void
capture_done(struct cmd_ctx *ctx, void *arg)
{
	struct outcome *o = arg;
	o->calls++;
	o->status = ctx->status;
	o->text = strdup(ctx->text ? ctx->text : "");
	o->error = ctx->error ? strdup(ctx->error) : NULL;
}

static struct outcome
run(struct fixture *f, const char *line)
{
	struct outcome o = {0};
	cmd_run_line(f->orch, line, CLIENT_INTERNAL, "test", ROLE_CAPTAIN, capture_done, NULL, &o);
	/* `task add` answers once the task is committed: the end of the turn,
	 * or the adaptive commit's 1 ms timer. */
	for (int i = 0; i < 100 && o.calls == 0; i++)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(o.calls, 1);
	return o;
}

static void
outcome_free(struct outcome *o)
{
	free(o->text);
	free(o->error);
}

/* ---- the task.assign line ---------------------------------------------------- */

/* A title that needs escaping and a payload typed over several lines (as
 * the captain may) arrive as one JSON line with the same values; a title
 * that is not UTF-8 is refused. */
static void
test_assign_line(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	attach(f, "w1", (const char *const[]){"web", NULL}, 1);
	const char *title = "say \"hi\"\t\\ \x01 \xc3\xbcn\xc3\xaf";
	struct task_spec spec = {.title = title,
	                         .payload = "{\n  \"a\": [1, 2],\n  \"s\": \"x\\ny\"\n}",
	                         .capability = "web",
	                         .max_retries = -1,
	                         .timeout_s = 0.25,
	                         .submitter = "captain"};
	char *cause = NULL;
	assert_non_null(tasks_submit(TM(f), &spec, &cause));
	assert_int_equal(c->n, 1);
	const char *line = c->lines[0];
	const char *nl = strchr(line, '\n');
	assert_true(nl == NULL || nl[1] == '\0'); /* one line */

	json_t *j = cap_line(c, 0);
	json_t *task = json_object_get(j, "task");
	assert_string_equal(json_string_value(json_object_get(task, "title")), title);
	json_t *p = json_object_get(task, "payload");
	assert_int_equal(json_integer_value(json_array_get(json_object_get(p, "a"), 1)), 2);
	assert_string_equal(json_string_value(json_object_get(p, "s")), "x\ny");
	assert_string_equal(json_string_value(json_object_get(task, "capability")), "web");
	assert_true(json_real_value(json_object_get(task, "timeout_s")) == 0.25);
	json_decref(j);

	spec.title = "bad \xff title";
	assert_null(tasks_submit(TM(f), &spec, &cause));
	assert_string_equal(cause, "the title and the capability must be UTF-8 text");
	free(cause);

	/* A timeout beyond 100 years (the Bridge and extensions pass numbers
	 * that no parser bounded) is refused, not turned into an overflow. */
	spec.title = "forever";
	const double bad[] = {1e300, INFINITY, NAN};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		spec.timeout_s = bad[i];
		assert_null(tasks_submit(TM(f), &spec, &cause));
		assert_string_equal(cause, "the timeout must be at most 100 years");
		free(cause);
	}
}

/* ---- the assignment's row ------------------------------------------------------ */

/* The state column of task id as the table holds it right now (no flush). */
static const char *
row_state(struct fixture *f, int64_t id)
{
	static char out[32];
	sqlite3_stmt *s = store_stmt(orch_store(f->orch), "SELECT state FROM tasks WHERE id = ?1");
	sqlite3_bind_int64(s, 1, id);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_reset(s);
	return out;
}

static uint64_t
store_writes(struct fixture *f)
{
	struct store_stats ss;
	store_stats(orch_store(f->orch), &ss);
	return ss.writes;
}

/* An assignment is written at the commit point (or when the table is read
 * through tasks_sync), so that a task assigned and done in one transaction
 * costs one UPDATE, not two; what is committed is the same. */
static void
test_assign_row_deferred(void **state)
{
	struct fixture *f = *state;
	struct agent *w1 = attach(f, "w1", NULL, 1);

	/* Assigned and committed: the row says so. */
	int64_t a = submit(f, "a");
	assert_string_equal(row_state(f, a), "queued"); /* not written yet */
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	assert_string_equal(row_state(f, a), "assigned");
	assert_int_equal(int_field(f, a, "attempt"), 1);
	json_t *j = show(f, a);
	assert_string_equal(json_string_value(json_object_get(j, "agent")), "w1");
	json_decref(j);
	uint64_t w0 = store_writes(f);
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	uint64_t apart = store_writes(f) - w0; /* done, with the next assignment: none */

	/* Submitted, assigned and done in one transaction: one write fewer
	 * than the same with a commit between the submit and the done. */
	w0 = store_writes(f);
	int64_t b = submit(f, "b");
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)b);
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	uint64_t with_commit = store_writes(f) - w0;
	w0 = store_writes(f);
	int64_t c = submit(f, "c");
	assert_string_equal(row_state(f, c), "queued");
	tasks_sync(TM(f)); /* what a reader of the table calls first */
	assert_string_equal(row_state(f, c), "assigned");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)c);
	int64_t d = submit(f, "d");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)d);
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	uint64_t c_writes = store_writes(f) - w0;
	assert_true(apart > 0);
	/* c: synced by hand, so as many writes as b; d: one fewer. */
	assert_int_equal(c_writes, 2 * with_commit - 1);
	assert_string_equal(state_of(f, c), "done");
	assert_string_equal(state_of(f, d), "done");
}

/* ---- transitions ---------------------------------------------------------- */

/* queued → assigned → running → done, with the task.assign line, progress,
 * the result, and the agent's slot. */
static void
test_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 1);

	struct task_spec spec = {.title = "first job",
	                         .payload = "{\"n\":3}",
	                         .priority = PRIO_HIGH,
	                         .max_retries = -1,
	                         .timeout_s = 30,
	                         .submitter = "captain"};
	char *cause = NULL;
	struct task *t = tasks_submit(TM(f), &spec, &cause);
	assert_non_null(t);
	int64_t id = t->id;
	assert_int_equal(id, 1);
	assert_string_equal(state_of(f, id), "assigned");
	assert_int_equal(w1->running_tasks, 1);
	assert_int_equal(w1->state, AGENT_BUSY);

	assert_int_equal(c->n, 1);
	assert_true(c->owed[0]); /* (it waits for the agent's answer) */
	json_t *j = cap_line(c, 0);
	assert_string_equal(jtype(j), "task.assign");
	json_t *task = json_object_get(j, "task");
	assert_int_equal(json_integer_value(json_object_get(task, "id")), id);
	assert_string_equal(json_string_value(json_object_get(task, "title")), "first job");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(task, "payload"), "n")),
	                 3);
	assert_string_equal(json_string_value(json_object_get(task, "priority")), "high");
	assert_true(json_is_null(json_object_get(task, "capability")));
	assert_true(json_real_value(json_object_get(task, "timeout_s")) == 30.0);
	assert_int_equal(json_integer_value(json_object_get(task, "attempt")), 1);
	json_decref(j);

	feed(f, w1, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":40,\"note\":\"halfway\"}",
	     (long long)id);
	assert_string_equal(state_of(f, id), "running");
	j = show(f, id);
	assert_true(json_real_value(json_object_get(j, "progress")) == 40.0);
	assert_string_equal(json_string_value(json_object_get(j, "note")), "halfway");
	assert_string_equal(json_string_value(json_object_get(j, "agent")), "w1");
	json_decref(j);
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":80}", (long long)id);
	assert_string_equal(state_of(f, id), "running");

	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld,\"result\":{\"ok\":true}}",
	     (long long)id);
	assert_string_equal(state_of(f, id), "done");
	assert_null(tasks_get(TM(f), id)); /* finished tasks leave memory */
	j = show(f, id);
	assert_true(json_is_true(json_object_get(json_object_get(j, "result"), "ok")));
	assert_true(json_real_value(json_object_get(j, "progress")) == 100.0);
	assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 1);
	assert_null(json_object_get(j, "waiting"));
	json_decref(j);
	assert_int_equal(w1->running_tasks, 0);
	assert_int_equal(w1->state, AGENT_READY);

	/* Submit (queued, shown as from == to), then one event per edge; the
	 * second progress report keeps the state. */
	assert_string_equal(transitions(f, id, 0), "queued>queued queued>assigned "
	                                           "assigned>running running>running "
	                                           "running>done");

	struct task_counts tc;
	tasks_counts(TM(f), &tc);
	assert_int_equal(tc.n[TASK_DONE], 1);
	assert_int_equal(tc.n[TASK_QUEUED] + tc.n[TASK_ASSIGNED] + tc.n[TASK_RUNNING], 0);
	assert_int_equal(tc.submitted, 1);
	assert_int_equal(tc.last_id, 1);
}

/* A failed attempt waits 1 s, 2 s, 4 s (initial 1s, factor 2): before the
 * deadline the task stays failed, at it it is queued (and assigned again);
 * after default_retries (3) retries it is dead. */
static void
test_backoff_timing(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 1);
	int64_t id = submit(f, "flaky");
	size_t ev0 = f->nev;

	static const int64_t delays[] = {1000, 2000, 4000};
	for (int attempt = 1; attempt <= 3; attempt++) {
		assert_string_equal(state_of(f, id), "assigned");
		assert_int_equal(int_field(f, id, "attempt"), attempt);
		feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"boom %d\"}",
		     (long long)id, attempt);
		assert_string_equal(state_of(f, id), "failed");
		assert_int_equal(w1->running_tasks, 0); /* the slot is free meanwhile */
		json_t *j = show(f, id);
		assert_true(json_real_value(json_object_get(j, "retry_in_s")) ==
		            (double)delays[attempt - 1] / 1000.0);
		char err[32];
		snprintf(err, sizeof err, "boom %d", attempt);
		assert_string_equal(json_string_value(json_object_get(j, "error")), err);
		json_decref(j);
		advance(f, delays[attempt - 1] - 1);
		assert_string_equal(state_of(f, id), "failed");
		advance(f, 1);
		assert_string_equal(state_of(f, id), "assigned");
	}
	assert_int_equal(int_field(f, id, "attempt"), 4);
	assert_int_equal(count_lines(c, "task.assign", id), 4);
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"boom 4\"}", (long long)id);
	assert_string_equal(state_of(f, id), "dead");
	assert_string_equal(str_field(f, id, "error"), "boom 4; out of retries after 4 attempts");
	assert_string_equal(transitions(f, id, ev0),
	                    "assigned>failed failed>queued queued>assigned "
	                    "assigned>failed failed>queued queued>assigned "
	                    "assigned>failed failed>queued queued>assigned "
	                    "assigned>dead");
	/* Nothing is left to time. */
	assert_int_equal(tasks_tick(TM(f)), -1);
}

/* The delay grows to the cap (8 s) and stays there: 1, 2, 4, 8, 8. */
static void
test_backoff_cap(void **state)
{
	struct fixture *f = *state;
	struct agent *w1 = attach(f, "w1", NULL, 1);
	int64_t id = submit_full(f, "capped", PRIO_NORMAL, NULL, NULL, 0, 10, 0);
	static const int64_t delays[] = {1000, 2000, 4000, 8000, 8000};
	for (size_t i = 0; i < nitems(delays); i++) {
		feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"x\"}",
		     (long long)id);
		assert_string_equal(state_of(f, id), "failed");
		assert_int_equal(tasks_tick(TM(f)), delays[i]); /* ms to the next deadline */
		advance(f, delays[i] - 1);
		assert_string_equal(state_of(f, id), "failed");
		advance(f, 1);
		assert_string_equal(state_of(f, id), "assigned");
	}
	assert_int_equal(int_field(f, id, "attempt"), 6);
}

/* retry: false is final; zero retries dies at the first failure. */
static void
test_fail_final(void **state)
{
	struct fixture *f = *state;
	struct agent *w1 = attach(f, "w1", NULL, 2);
	int64_t a = submit(f, "no retry");
	int64_t b = submit_full(f, "zero retries", PRIO_NORMAL, NULL, NULL, 0, 0, 0);
	size_t ev0 = f->nev;
	feed(f, w1,
	     "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"bad input\",\"retry\":false}",
	     (long long)a);
	assert_string_equal(state_of(f, a), "dead");
	assert_string_equal(str_field(f, a, "error"), "bad input (no retry)");
	assert_string_equal(transitions(f, a, ev0), "assigned>dead");
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"nope\"}", (long long)b);
	assert_string_equal(state_of(f, b), "dead");
	assert_string_equal(str_field(f, b, "error"), "nope; out of retries after 1 attempts");
	assert_int_equal(w1->running_tasks, 0);
	assert_int_equal(tasks_tick(TM(f)), -1);
}

/* A run timeout (like beanstalkd's TTR): task.cancel to the agent, failed,
 * then queued after the backoff and assigned again. */
static void
test_timeout(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 1);
	int64_t id = submit_full(f, "slow", PRIO_NORMAL, NULL, NULL, 0, -1, 5);
	int64_t other = submit(f, "waits for the slot");
	assert_string_equal(state_of(f, other), "queued");
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":10}", (long long)id);
	size_t ev0 = f->nev;
	/* Progress does not extend the deadline. */
	advance(f, 4999);
	assert_string_equal(state_of(f, id), "running");
	assert_int_equal(count_lines(c, "task.cancel", id), 0);
	advance(f, 1);
	assert_int_equal(count_lines(c, "task.cancel", id), 1);
	assert_string_equal(state_of(f, id), "failed");
	assert_string_equal(str_field(f, id, "error"), "timed out after 5.0 s on w1");
	/* The freed slot went to the other task at once. */
	assert_string_equal(state_of(f, other), "assigned");
	assert_int_equal(w1->running_tasks, 1);
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)other);
	advance(f, 999);
	assert_string_equal(state_of(f, id), "failed");
	advance(f, 1);
	assert_string_equal(state_of(f, id), "assigned");
	assert_int_equal(int_field(f, id, "attempt"), 2);
	assert_string_equal(transitions(f, id, ev0),
	                    "running>failed failed>queued queued>assigned");
	/* The default timeout (10 s) applies when the task sets none. */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)id);
	int64_t d = submit(f, "default timeout");
	assert_int_equal(tasks_tick(TM(f)), 10000);
	advance(f, 10000);
	assert_string_equal(state_of(f, d), "failed");
	/* A late task.done from the agent that timed out is refused. */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)d);
	assert_string_equal(last_error(c), PERR_NOT_YOUR_TASK);
	assert_string_equal(state_of(f, d), "failed");
	assert_true(count_lines(c, "task.cancel", d) > 0);
	assert_true(only_assign_owed(c));
}

/* Cancel: a queued task; a running one (its agent gets task.cancel and the
 * slot goes to the next task); a finished one is refused. */
static void
test_cancel(void **state)
{
	struct fixture *f = *state;
	int64_t q = submit(f, "queued, no agent yet");
	char *cause = NULL;
	assert_int_equal(tasks_cancel(TM(f), q, &cause), 0);
	assert_string_equal(state_of(f, q), "cancelled");
	assert_string_equal(transitions(f, q, 0), "queued>queued queued>cancelled");

	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 1);
	int64_t r = submit(f, "running");
	int64_t next = submit(f, "next");
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":5}", (long long)r);
	struct outcome o = run(f, "task cancel 2");
	assert_int_equal(o.status, CMD_OK);
	outcome_free(&o);
	assert_string_equal(state_of(f, r), "cancelled");
	assert_int_equal(count_lines(c, "task.cancel", r), 1);
	assert_string_equal(state_of(f, next), "assigned");
	assert_string_equal(assigned(c, 0), "2,3");
	assert_int_equal(w1->running_tasks, 1);
	/* The cancelled task's agent reporting on it is told it is not its. */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)r);
	assert_string_equal(last_error(c), PERR_NOT_YOUR_TASK);
	assert_string_equal(state_of(f, r), "cancelled");

	/* Finished tasks cannot be cancelled. */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)next);
	assert_int_equal(tasks_cancel(TM(f), next, &cause), -1);
	assert_string_equal(cause, "task 3 is already done");
	free(cause);
	assert_int_equal(tasks_cancel(TM(f), r, &cause), -1);
	assert_string_equal(cause, "task 2 is already cancelled");
	free(cause);
	assert_int_equal(tasks_cancel(TM(f), 99, &cause), -1);
	assert_string_equal(cause, "no task 99");
	free(cause);
	o = run(f, "task cancel 3");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "task cancel: task 3 is already done");
	outcome_free(&o);
	o = run(f, "task cancel 0");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);
	assert_string_equal(state_of(f, next), "done");
}

/* Retry: dead, cancelled and failed tasks are queued again (dead and
 * cancelled with a fresh set of attempts); done and unfinished tasks are
 * refused. */
static void
test_retry(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 1);
	char *cause = NULL;

	int64_t dead = submit_full(f, "dies", PRIO_NORMAL, NULL, NULL, 0, 1, 0);
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"e\"}", (long long)dead);
	advance(f, 1000);
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"e\"}", (long long)dead);
	assert_string_equal(state_of(f, dead), "dead");
	assert_int_equal(int_field(f, dead, "attempt"), 2);
	size_t ev0 = f->nev;
	struct outcome o = run(f, "task retry 1 --json");
	assert_int_equal(o.status, CMD_OK);
	json_t *j = json_loads(o.text, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(j, "message")), "queued again");
	json_decref(j);
	outcome_free(&o);
	assert_string_equal(transitions(f, dead, ev0), "dead>queued queued>assigned");
	assert_int_equal(int_field(f, dead, "attempt"), 1);
	assert_string_equal(str_field(f, dead, "error"), "");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)dead);
	assert_string_equal(state_of(f, dead), "done");

	/* done: refused. */
	assert_int_equal(tasks_retry(TM(f), dead, &cause), -1);
	assert_string_equal(cause, "task 1 is done; submit a new one");
	free(cause);
	o = run(f, "task retry 1");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "task retry: task 1 is done; submit a new one");
	outcome_free(&o);
	assert_int_equal(tasks_retry(TM(f), 42, &cause), -1);
	assert_string_equal(cause, "no task 42");
	free(cause);

	/* cancelled → queued → assigned. */
	int64_t busy = submit(f, "holds the slot");
	int64_t canc = submit(f, "cancelled");
	assert_int_equal(tasks_cancel(TM(f), canc, &cause), 0);
	assert_int_equal(tasks_retry(TM(f), canc, &cause), 0);
	assert_string_equal(state_of(f, canc), "queued");
	/* queued, assigned: refused. */
	assert_int_equal(tasks_retry(TM(f), canc, &cause), -1);
	assert_string_equal(cause, "task 3 is queued; only failed, dead and cancelled tasks can be "
	                           "retried");
	free(cause);
	assert_int_equal(tasks_retry(TM(f), busy, &cause), -1);
	assert_string_equal(cause, "task 2 is assigned; only failed, dead and cancelled tasks "
	                           "can be retried");
	free(cause);

	/* failed (in backoff) → queued at once, attempts kept. */
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"e\"}", (long long)busy);
	assert_string_equal(state_of(f, canc), "assigned"); /* took the free slot */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)canc);
	assert_string_equal(state_of(f, busy), "failed");
	ev0 = f->nev;
	assert_int_equal(tasks_retry(TM(f), busy, &cause), 0);
	assert_string_equal(transitions(f, busy, ev0), "failed>queued queued>assigned");
	assert_int_equal(int_field(f, busy, "attempt"), 2);
	/* Its backoff deadline is gone: nothing happens when it would have come. */
	advance(f, 1000);
	assert_string_equal(state_of(f, busy), "assigned");
	assert_string_equal(assigned(c, 0), "1,1,1,2,3,2");
}

/* ---- scheduling ------------------------------------------------------------ */

/* Highest priority first, FIFO within a priority. */
static void
test_priority_fifo(void **state)
{
	struct fixture *f = *state;
	submit_full(f, "low 1", PRIO_LOW, NULL, NULL, 0, -1, 0);       /* 1 */
	submit_full(f, "normal 1", PRIO_NORMAL, NULL, NULL, 0, -1, 0); /* 2 */
	submit_full(f, "urgent 1", PRIO_URGENT, NULL, NULL, 0, -1, 0); /* 3 */
	submit_full(f, "normal 2", PRIO_NORMAL, NULL, NULL, 0, -1, 0); /* 4 */
	submit_full(f, "high 1", PRIO_HIGH, NULL, NULL, 0, -1, 0);     /* 5 */
	submit_full(f, "low 2", PRIO_LOW, NULL, NULL, 0, -1, 0);       /* 6 */
	submit_full(f, "urgent 2", PRIO_URGENT, NULL, NULL, 0, -1, 0); /* 7 */
	submit_full(f, "normal 3", PRIO_NORMAL, NULL, NULL, 0, -1, 0); /* 8 */
	for (int64_t id = 1; id <= 8; id++) {
		assert_string_equal(state_of(f, id), "queued");
		assert_string_equal(str_field(f, id, "waiting"), "no capable agent");
	}
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 1);
	for (int i = 0; i < 8; i++) {
		json_t *j = cap_line(c, c->n - 1);
		assert_string_equal(jtype(j), "task.assign");
		long long id =
		    json_integer_value(json_object_get(json_object_get(j, "task"), "id"));
		json_decref(j);
		feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", id);
	}
	assert_string_equal(assigned(c, 0), "3,7,5,2,4,8,1,6");
	/* A task submitted while others wait is ordered among them. */
	submit(f, "n9");                                          /* 9 → w1 now */
	submit_full(f, "l10", PRIO_LOW, NULL, NULL, 0, -1, 0);    /* 10 */
	submit_full(f, "u11", PRIO_URGENT, NULL, NULL, 0, -1, 0); /* 11 */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":9}");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":11}");
	assert_string_equal(assigned(c, 0), "3,7,5,2,4,8,1,6,9,11,10");
}

/* A task that needs capability x only goes to agents that have it, and
 * says why it waits. */
static void
test_capability(void **state)
{
	struct fixture *f = *state;
	struct capture *cp = cap_of(f, "plain");
	struct capture *cy = cap_of(f, "ygent");
	struct capture *cx = cap_of(f, "xgent");
	struct agent *plain = attach(f, "plain", NULL, 4);
	static const char *const ycaps[] = {"y", NULL};
	attach(f, "ygent", ycaps, 4);
	int64_t id = submit_full(f, "needs x", PRIO_URGENT, "x", NULL, 0, -1, 0);
	int64_t any = submit(f, "anyone");
	assert_string_equal(state_of(f, id), "queued");
	assert_string_equal(state_of(f, any), "assigned");
	assert_string_equal(tasks_wait_reason(TM(f), tasks_get(TM(f), id)), "no capable agent");
	assert_string_equal(str_field(f, id, "waiting"), "no capable agent");
	assert_string_equal(str_field(f, id, "capability"), "x");

	struct outcome o = run(f, "task show 1");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "no capable agent"));
	outcome_free(&o);
	o = run(f, "task show 1 --json");
	json_t *j = json_loads(o.text, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(j, "waiting")), "no capable agent");
	json_decref(j);
	outcome_free(&o);
	o = run(f, "task add another x job --cap x");
	assert_int_equal(o.status, CMD_OK);
	assert_string_equal(o.text, "task 3 added (queued: no capable agent)\n");
	outcome_free(&o);

	/* Agents coming and going without x change nothing. */
	feed(f, plain, "{\"type\":\"task.done\",\"task\":%lld}", (long long)any);
	assert_string_equal(state_of(f, id), "queued");
	assert_int_equal(count_lines(cp, "task.assign", id), 0);
	assert_int_equal(count_lines(cy, "task.assign", id), 0);

	/* An x agent: both x tasks go to it, in priority order. */
	static const char *const xcaps[] = {"a", "x", NULL};
	struct agent *xa = attach(f, "xgent", xcaps, 1);
	assert_string_equal(state_of(f, id), "assigned");
	assert_string_equal(str_field(f, id, "agent"), "xgent");
	assert_string_equal(str_field(f, 3, "waiting"),
	                    "waiting for a free slot on a capable agent");
	feed(f, xa, "{\"type\":\"task.done\",\"task\":%lld}", (long long)id);
	assert_string_equal(state_of(f, 3), "assigned");
	assert_string_equal(assigned(cx, 0), "1,3");
	assert_int_equal(count_lines(cp, "task.assign", 0), 1);
	assert_int_equal(count_lines(cy, "task.assign", 0), 0);

	/* With the x agent gone, the capable agent exists but is not running. */
	int64_t third = submit_full(f, "x again", PRIO_NORMAL, "x", NULL, 0, -1, 0);
	agent_detach(xa, "gone");
	assert_string_equal(state_of(f, 3), "queued");
	assert_string_equal(str_field(f, third, "waiting"),
	                    "capable agents exist but none is running");
	assert_int_equal(count_lines(cp, "task.assign", 3), 0);
	assert_int_equal(count_lines(cy, "task.assign", third), 0);
}

/* A paused agent gets no new work (its running task finishes normally); on
 * resume it takes the queue.  An agent with max_tasks 0 takes no tasks and
 * does not count as capable. */
static void
test_paused_and_zero_slots(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 2);
	static const char *const xcaps[] = {"x", NULL};
	struct capture *cz = cap_of(f, "zero");
	attach(f, "zero", xcaps, 0);
	int64_t a = submit(f, "A");
	char *cause = NULL;
	assert_int_equal(agent_pause(w1, &cause), 0);
	int64_t b = submit(f, "B");
	assert_string_equal(state_of(f, b), "queued");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(state_of(f, a), "done");
	assert_string_equal(state_of(f, b), "queued");
	assert_string_equal(str_field(f, b, "waiting"),
	                    "waiting for a free slot on a capable agent");
	assert_int_equal(agent_resume(w1, &cause), 0);
	assert_string_equal(state_of(f, b), "assigned");
	assert_string_equal(assigned(c, 0), "1,2");

	int64_t x = submit_full(f, "needs x", PRIO_NORMAL, "x", NULL, 0, -1, 0);
	assert_string_equal(state_of(f, x), "queued");
	assert_string_equal(str_field(f, x, "waiting"), "no capable agent");
	assert_int_equal(count_lines(cz, "task.assign", 0), 0);
}

/* Least loaded first, ties round robin: 6 tasks over 3 agents of 4 slots
 * go 2 to each, in turn; then the least-loaded agent gets the next ones. */
static void
test_least_loaded(void **state)
{
	struct fixture *f = *state;
	struct capture *c1 = cap_of(f, "w1"), *c2 = cap_of(f, "w2"), *c3 = cap_of(f, "w3");
	struct agent *w1 = attach(f, "w1", NULL, 4);
	struct agent *w2 = attach(f, "w2", NULL, 4);
	struct agent *w3 = attach(f, "w3", NULL, 4);
	for (int i = 0; i < 6; i++)
		submit(f, "balanced");
	assert_int_equal(w1->running_tasks, 2);
	assert_int_equal(w2->running_tasks, 2);
	assert_int_equal(w3->running_tasks, 2);
	assert_string_equal(assigned(c1, 0), "1,4");
	assert_string_equal(assigned(c2, 0), "2,5");
	assert_string_equal(assigned(c3, 0), "3,6");

	/* w2 finishes both: it is the least loaded, so it gets the next two. */
	feed(f, w2, "{\"type\":\"task.done\",\"task\":2}");
	feed(f, w2, "{\"type\":\"task.done\",\"task\":5}");
	submit(f, "to w2"); /* 7 */
	assert_string_equal(assigned(c2, 0), "2,5,7");
	submit(f, "to w2"); /* 8 */
	assert_string_equal(assigned(c2, 0), "2,5,7,8");
	/* All at 2/4 again: round robin resumes after w2. */
	submit(f, "w3"); /* 9 */
	submit(f, "w1"); /* 10 */
	submit(f, "w2"); /* 11 */
	assert_string_equal(assigned(c3, 0), "3,6,9");
	assert_string_equal(assigned(c1, 0), "1,4,10");
	assert_string_equal(assigned(c2, 0), "2,5,7,8,11");

	/* Load is relative to max_tasks: a bigger agent takes more. */
	struct capture *cb = cap_of(f, "big");
	attach(f, "big", NULL, 12);
	for (int i = 0; i < 4; i++)
		submit(f, "big"); /* 12..15: big is at 0/12..3/12 < 3/4 */
	assert_string_equal(assigned(cb, 0), "12,13,14,15");
	/* Full agents get nothing: 12 more fill the 3 small ones (3 free
	 * slots) and big; the rest waits. */
	for (int i = 0; i < 20; i++)
		submit(f, "fill");
	assert_int_equal(w1->running_tasks, 4);
	assert_int_equal(w2->running_tasks, 4);
	assert_int_equal(w3->running_tasks, 4);
	assert_int_equal(w1->state, AGENT_BUSY);
	struct task_counts tc;
	tasks_counts(TM(f), &tc);
	assert_int_equal(tc.n[TASK_ASSIGNED], 24);
	assert_int_equal(tc.n[TASK_QUEUED], 35 - 2 - 24);
	assert_string_equal(str_field(f, 35, "waiting"),
	                    "waiting for a free slot on a capable agent");
}

/* ---- dependencies ------------------------------------------------------------ */

static void
test_dependency_chain(void **state)
{
	struct fixture *f = *state;
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 4);
	int64_t a = submit(f, "A");
	int64_t after_a[] = {a};
	int64_t b = submit_full(f, "B", PRIO_URGENT, NULL, after_a, 1, -1, 0);
	int64_t after_b[] = {b};
	int64_t cc = submit_full(f, "C", PRIO_URGENT, NULL, after_b, 1, -1, 0);
	assert_string_equal(state_of(f, b), "blocked");
	assert_string_equal(state_of(f, cc), "blocked");
	assert_string_equal(str_field(f, b, "waiting"), "waiting for dependencies");
	json_t *j = show(f, cc);
	assert_int_equal(json_array_size(json_object_get(j, "after")), 1);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "after"), 0)), b);
	json_decref(j);
	/* Free slots do not unblock anything. */
	assert_string_equal(assigned(c, 0), "1");
	/* A failing and being retried keeps B blocked. */
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"e\"}", (long long)a);
	assert_string_equal(state_of(f, b), "blocked");
	advance(f, 1000);
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(state_of(f, b), "assigned");
	assert_string_equal(state_of(f, cc), "blocked");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)b);
	assert_string_equal(state_of(f, cc), "assigned");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)cc);
	assert_string_equal(assigned(c, 0), "1,1,2,3");
	assert_string_equal(transitions(f, b, 0),
	                    "blocked>blocked blocked>queued queued>assigned assigned>done");

	/* Depending on a finished task: queued at once.  On two tasks: waits
	 * for both. */
	int64_t d = submit_full(f, "after done A", PRIO_NORMAL, NULL, after_a, 1, -1, 0);
	assert_string_equal(state_of(f, d), "assigned");
	int64_t x = submit_full(f, "X", PRIO_NORMAL, NULL, NULL, 0, -1, 0); /* 5 */
	int64_t y = submit_full(f, "Y", PRIO_NORMAL, NULL, NULL, 0, -1, 0); /* 6 */
	int64_t xy[] = {x, y, a};
	int64_t z = submit_full(f, "Z", PRIO_NORMAL, NULL, xy, 3, -1, 0);
	assert_string_equal(state_of(f, z), "blocked");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)y);
	assert_string_equal(state_of(f, z), "blocked");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)x);
	assert_string_equal(state_of(f, z), "assigned");
}

/* A dead (or cancelled) dependency kills what waits on it, naming it. */
static void
test_dependency_dead(void **state)
{
	struct fixture *f = *state;
	struct agent *w1 = attach(f, "w1", NULL, 1);
	int64_t a = submit(f, "A");
	int64_t after_a[] = {a};
	int64_t b = submit_full(f, "B", PRIO_NORMAL, NULL, after_a, 1, -1, 0);
	int64_t after_b[] = {b};
	int64_t c = submit_full(f, "C", PRIO_NORMAL, NULL, after_b, 1, -1, 0);
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"fatal\",\"retry\":false}",
	     (long long)a);
	assert_string_equal(state_of(f, a), "dead");
	assert_string_equal(state_of(f, b), "dead");
	assert_string_equal(state_of(f, c), "dead");
	assert_string_equal(str_field(f, b, "error"), "dependency 1 ended dead");
	assert_string_equal(str_field(f, c, "error"), "dependency 2 ended dead");
	assert_int_equal(w1->running_tasks, 0);

	/* Cancelling a dependency. */
	int64_t p = submit(f, "P"); /* 4 → w1 */
	int64_t q = submit(f, "Q"); /* 5 queued */
	int64_t after_q[] = {q};
	int64_t r = submit_full(f, "R", PRIO_NORMAL, NULL, after_q, 1, -1, 0);
	char *cause = NULL;
	assert_int_equal(tasks_cancel(TM(f), q, &cause), 0);
	assert_string_equal(state_of(f, r), "dead");
	assert_string_equal(str_field(f, r, "error"), "dependency 5 ended cancelled");
	assert_string_equal(state_of(f, p), "assigned");

	struct task_counts tc;
	tasks_counts(TM(f), &tc);
	assert_int_equal(tc.n[TASK_DEAD], 4);
	assert_int_equal(tc.n[TASK_CANCELLED], 1);
	assert_int_equal(tc.n[TASK_BLOCKED], 0);
}

/* A blocked task that ends (cancelled, or dead through another of its
 * dependencies) leaves nothing behind: its other dependencies finishing
 * later touch nothing (run under ASan to see a use after free). */
static void
test_dependency_ended_waiter(void **state)
{
	struct fixture *f = *state;
	int64_t a = submit(f, "A"); /* 1, queued: no agent */
	int64_t b = submit(f, "B"); /* 2 */
	int64_t ab[] = {a, b};
	int64_t w = submit_full(f, "waits for A and B", PRIO_NORMAL, NULL, ab, 2, -1, 0); /* 3 */
	int64_t only_a[] = {a};
	int64_t v = submit_full(f, "waits for A", PRIO_NORMAL, NULL, only_a, 1, -1, 0); /* 4 */
	char *cause = NULL;
	assert_int_equal(tasks_cancel(TM(f), v, &cause), 0);
	assert_string_equal(state_of(f, v), "cancelled");
	/* B dies: W dies with it, while A still lists W as a dependent. */
	assert_int_equal(tasks_cancel(TM(f), b, &cause), 0);
	assert_string_equal(state_of(f, w), "dead");
	assert_string_equal(str_field(f, w, "error"), "dependency 2 ended cancelled");
	/* A runs and finishes: W and V stay as they are. */
	struct agent *w1 = attach(f, "w1", NULL, 4);
	assert_string_equal(state_of(f, a), "assigned");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(state_of(f, w), "dead");
	assert_string_equal(state_of(f, v), "cancelled");
	struct task_counts tc;
	tasks_counts(TM(f), &tc);
	assert_int_equal(tc.n[TASK_DONE], 1);
	assert_int_equal(tc.n[TASK_QUEUED] + tc.n[TASK_BLOCKED] + tc.n[TASK_ASSIGNED], 0);
}

/* Retrying a task that was cancelled while blocked must not skip its
 * dependencies: it waits (blocked) until they are done. */
static void
test_dependency_retry_blocked(void **state)
{
	struct fixture *f = *state;
	int64_t a = submit(f, "A"); /* queued: no agent */
	int64_t only_a[] = {a};
	int64_t b = submit_full(f, "B after A", PRIO_URGENT, NULL, only_a, 1, -1, 0);
	char *cause = NULL;
	assert_int_equal(tasks_cancel(TM(f), b, &cause), 0);
	assert_int_equal(tasks_retry(TM(f), b, &cause), 0);
	assert_string_equal(state_of(f, b), "blocked");
	struct capture *c = cap_of(f, "w1");
	struct agent *w1 = attach(f, "w1", NULL, 2);
	assert_string_equal(assigned(c, 0), "1");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(assigned(c, 0), "1,2");
}

/* A specialist (a browser) takes only tasks that ask for one of its
 * capabilities; a task that asks for none waits for a general agent. */
static void
test_specialist(void **state)
{
	struct fixture *f = *state;
	static const char *const web[] = {"web", NULL};
	struct agent *b = attach(f, "browser", web, 4);
	b->cfg.specialist = true;
	int64_t any = submit(f, "anyone");
	int64_t page = submit_full(f, "a page", PRIO_NORMAL, "web", NULL, 0, -1, 0);
	assert_string_equal(state_of(f, any), "queued");
	assert_string_equal(tasks_wait_reason(TM(f), tasks_get(TM(f), any)), "no capable agent");
	assert_string_equal(state_of(f, page), "assigned");
	attach(f, "plain", NULL, 1);
	assert_string_equal(state_of(f, any), "assigned");
	assert_int_equal(count_lines(cap_of(f, "plain"), "task.assign", any), 1);
	assert_int_equal(count_lines(cap_of(f, "browser"), "task.assign", any), 0);
}

static int
fail_commits(void *arg, const char *op)
{
	(void)arg;
	return strcmp(op, "commit") == 0 ? SQLITE_FULL : 0; /* not the writes */
}

/* A submission whose commit fails is not kept in memory, whether it is
 * still queued, already running on an agent (which is told to cancel), or
 * already finished in the same turn; the counts stay those of the store. */
static void
test_submit_not_stored(void **state)
{
	struct fixture *f = *state;
	struct capture *cw = cap_of(f, "w");
	struct agent *w = attach(f, "w", NULL, 1);
	struct store *st = orch_store(f->orch);
	assert_int_equal(store_flush(st, NULL), 0);
	struct task_counts before;
	tasks_counts(TM(f), &before);

	store_set_fault_hook(st, fail_commits, NULL);
	char *cause = NULL;
	struct task *t1 = tasks_submit(TM(f), &(struct task_spec){.title = "runs"}, &cause);
	struct task *t2 = tasks_submit(TM(f), &(struct task_spec){.title = "waits"}, &cause);
	assert_non_null(t1);
	assert_non_null(t2);
	int64_t id1 = t1->id, id2 = t2->id;
	assert_int_equal(count_lines(cw, "task.assign", id1), 1);
	/* Done in the same turn, before the commit; the next one starts. */
	feed(f, w, "{\"type\":\"task.done\",\"task\":%lld}", (long long)id1);
	assert_int_equal(count_lines(cw, "task.assign", id2), 1);
	struct task *t3 = tasks_submit(TM(f), &(struct task_spec){.title = "queued"}, &cause);
	int64_t id3 = t3->id;
	assert_int_equal(store_flush(st, NULL), -1);

	assert_null(tasks_get(TM(f), id1));
	assert_null(tasks_get(TM(f), id2));
	assert_null(tasks_get(TM(f), id3));
	assert_int_equal(count_lines(cw, "task.cancel", id2), 1);
	struct task_counts after;
	tasks_counts(TM(f), &after);
	for (int i = 0; i < TASK_NSTATES; i++)
		assert_int_equal(after.n[i], before.n[i]);
	assert_int_equal(after.submitted, before.submitted);

	/* The store works again: the next task is stored and runs. */
	store_set_fault_hook(st, NULL, NULL);
	int64_t id4 = submit(f, "after the fault");
	assert_int_equal(id4, id3 + 1); /* a rolled-back id is not used again */
	assert_string_equal(state_of(f, id4), "assigned");
	assert_int_equal(count_lines(cw, "task.assign", id4), 1);
}

/* Dependencies that cannot be: a future id (which is how a cycle would
 * start), a missing id, a dead or cancelled task. */
static void
test_dependency_refused(void **state)
{
	struct fixture *f = *state;
	int64_t a = submit(f, "A"); /* 1 */
	int64_t self[] = {2};
	assert_string_equal(submit_refused(f, "self", NULL, self, 1), "no task 2 to wait for");
	int64_t future[] = {a, 7};
	assert_string_equal(submit_refused(f, "future", NULL, future, 2), "no task 7 to wait for");
	int64_t neg[] = {-3};
	assert_string_equal(submit_refused(f, "neg", NULL, neg, 1), "no task -3 to wait for");
	char *cause = NULL;
	assert_int_equal(tasks_cancel(TM(f), a, &cause), 0);
	int64_t on_cancelled[] = {a};
	assert_string_equal(submit_refused(f, "c", NULL, on_cancelled, 1),
	                    "dependency 1 is cancelled");
	/* Nothing was stored for the refused ones: ids continue. */
	assert_int_equal(submit(f, "B"), 2);

	struct outcome o = run(f, "task add later --after 9");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "task add: no task 9 to wait for");
	outcome_free(&o);
	o = run(f, "task add later --after 3");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "task add: no task 3 to wait for");
	outcome_free(&o);
	o = run(f, "task add later --after x");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "task add: 'x' is not a task id");
	outcome_free(&o);
	o = run(f, "task add later --after 1");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "task add: dependency 1 is cancelled");
	outcome_free(&o);
	o = run(f, "task add later --after 2 --json");
	assert_int_equal(o.status, CMD_OK);
	json_t *j = json_loads(o.text, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(j, "id")), 3);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "blocked");
	json_decref(j);
	outcome_free(&o);
}

/* ---- agents going away ------------------------------------------------------- */

/* An agent that goes away gives its tasks back at once (queued, the attempt
 * counted) and they go to another capable agent, never back to it. */
static void
test_agent_death(void **state)
{
	struct fixture *f = *state;
	struct capture *c1 = cap_of(f, "w1"), *c2 = cap_of(f, "w2");
	struct agent *w1 = attach(f, "w1", NULL, 2);
	int64_t a = submit(f, "A");
	int64_t b = submit(f, "B");
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":50}", (long long)b);
	assert_string_equal(assigned(c1, 0), "1,2");
	struct agent *w2 = attach(f, "w2", NULL, 2);
	assert_int_equal(w2->running_tasks, 0);
	size_t ev0 = f->nev;
	size_t n1 = c1->n;

	agent_detach(w1, "gone");
	assert_false(agent_state_connected(w1->state));
	assert_int_equal(w1->running_tasks, 0);
	/* Nothing more was sent to (or assigned to) the dead agent. */
	assert_int_equal(c1->n, n1);
	assert_string_equal(state_of(f, a), "assigned");
	assert_string_equal(state_of(f, b), "assigned");
	assert_string_equal(str_field(f, a, "agent"), "w2");
	assert_string_equal(str_field(f, b, "agent"), "w2");
	assert_int_equal(w2->running_tasks, 2);
	assert_string_equal(assigned(c2, 0), "1,2");
	assert_int_equal(int_field(f, a, "attempt"), 2);
	assert_int_equal(int_field(f, b, "attempt"), 2);
	assert_string_equal(transitions(f, b, ev0), "running>queued queued>assigned");
	/* No backoff for a give-back, and the old run timeout is gone. */
	assert_int_equal(tasks_tick(TM(f)), 10000);

	/* The agent comes back (a reconnect): it gets new work again, and its
	 * stale reports are refused. */
	struct agent *again = attach(f, "w1", NULL, 2);
	assert_ptr_equal(again, w1);
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(last_error(c1), PERR_NOT_YOUR_TASK);
	int64_t c = submit(f, "C");
	assert_string_equal(str_field(f, c, "agent"), "w1");

	/* Every agent dying: the tasks wait, queued, for the next one. */
	agent_detach(w1, "gone");
	assert_string_equal(state_of(f, c), "queued"); /* w2 is full */
	agent_detach(w2, "gone");
	assert_string_equal(state_of(f, a), "queued");
	assert_string_equal(state_of(f, b), "queued");
	assert_string_equal(state_of(f, c), "queued");
	assert_string_equal(str_field(f, a, "waiting"), "capable agents exist but none is running");
	struct capture *c3 = cap_of(f, "w3");
	attach(f, "w3", NULL, 3);
	assert_string_equal(assigned(c3, 0), "1,2,3");
	assert_int_equal(int_field(f, a, "attempt"), 3);
	assert_int_equal(int_field(f, c, "attempt"), 2);
}

/* Given-back tasks are scheduled like any queued task: when there are
 * fewer free slots than tasks coming back, the highest priority (then the
 * oldest) gets them. */
static void
test_agent_death_priority(void **state)
{
	struct fixture *f = *state;
	struct capture *c2 = cap_of(f, "w2");
	struct agent *w1 = attach(f, "w1", NULL, 3);
	int64_t u = submit_full(f, "urgent", PRIO_URGENT, NULL, NULL, 0, -1, 0); /* 1 */
	int64_t l = submit_full(f, "low", PRIO_LOW, NULL, NULL, 0, -1, 0);       /* 2 */
	int64_t n = submit_full(f, "normal", PRIO_NORMAL, NULL, NULL, 0, -1, 0); /* 3 */
	attach(f, "w2", NULL, 1);
	agent_detach(w1, "gone");
	assert_string_equal(assigned(c2, 0), "1");
	assert_string_equal(state_of(f, u), "assigned");
	assert_string_equal(state_of(f, l), "queued");
	assert_string_equal(state_of(f, n), "queued");
	/* And the rest follow in order. */
	feed(f, agents_find(orch_agents(f->orch), "w2"), "{\"type\":\"task.done\",\"task\":1}");
	feed(f, agents_find(orch_agents(f->orch), "w2"), "{\"type\":\"task.done\",\"task\":3}");
	assert_string_equal(assigned(c2, 0), "1,3,2");
}

/* A give-back past the last retry is dead. */
static void
test_agent_death_out_of_retries(void **state)
{
	struct fixture *f = *state;
	struct agent *w1 = attach(f, "w1", NULL, 1);
	int64_t a = submit_full(f, "fragile", PRIO_NORMAL, NULL, NULL, 0, 0, 0);
	agent_detach(w1, "gone");
	assert_string_equal(state_of(f, a), "dead");
	assert_string_equal(str_field(f, a, "error"),
	                    "agent w1 went away; out of retries after 1 attempts");
}

/* ---- bad input ------------------------------------------------------------------ */

static void
test_bad_input(void **state)
{
	struct fixture *f = *state;
	struct capture *c1 = cap_of(f, "w1"), *c2 = cap_of(f, "w2");
	struct agent *w1 = attach(f, "w1", NULL, 1);
	struct agent *w2 = attach(f, "w2", NULL, 1);
	int64_t a = submit(f, "A"); /* → w1 */
	assert_string_equal(str_field(f, a, "agent"), "w1");

	/* Unknown task ids. */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":999,\"ref\":\"r1\"}");
	assert_string_equal(last_error(c1), PERR_UNKNOWN_TASK);
	assert_string_equal(last_error_detail, "task.done: no task 999");
	json_t *j = cap_line(c1, c1->n - 1);
	assert_string_equal(json_string_value(json_object_get(j, "ref")), "r1");
	json_decref(j);
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":998,\"error\":\"x\"}");
	assert_string_equal(last_error(c1), PERR_UNKNOWN_TASK);
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":997,\"pct\":1}");
	assert_string_equal(last_error(c1), PERR_UNKNOWN_TASK);

	/* done / fail / progress from an agent the task is not assigned to. */
	size_t n2 = c2->n;
	feed(f, w2, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(last_error(c2), PERR_NOT_YOUR_TASK);
	assert_string_equal(last_error_detail, "task.done: task 1 is not assigned to you");
	feed(f, w2, "{\"type\":\"task.fail\",\"task\":%lld,\"error\":\"x\"}", (long long)a);
	assert_string_equal(last_error(c2), PERR_NOT_YOUR_TASK);
	feed(f, w2, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":50}", (long long)a);
	assert_string_equal(last_error(c2), PERR_NOT_YOUR_TASK);
	assert_int_equal(c2->n, n2 + 3);
	assert_string_equal(state_of(f, a), "assigned");
	j = show(f, a);
	assert_true(json_real_value(json_object_get(j, "progress")) == 0.0);
	json_decref(j);
	/* A queued task is nobody's either. */
	int64_t q = submit(f, "to w2");
	assert_string_equal(str_field(f, q, "agent"), "w2");
	int64_t q2 = submit(f, "queued");
	assert_string_equal(state_of(f, q2), "queued");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)q2);
	assert_string_equal(last_error(c1), PERR_NOT_YOUR_TASK);
	assert_string_equal(state_of(f, q2), "queued");

	/* Progress outside 0-100: refused by the protocol layer, through the
	 * agent's input like any line (the connection stays). */
	struct proto_msg m;
	struct proto_err e = {0};
	char line[128];
	snprintf(line, sizeof line, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":150}",
	         (long long)a);
	assert_int_equal(proto_parse(line, strlen(line), &m, &e), -1);
	assert_string_equal(e.code, PERR_BAD_PCT);
	proto_err_clear(&e);
	snprintf(line, sizeof line, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":-1}\n",
	         (long long)a);
	assert_int_equal(proto_parse(line, strlen(line) - 1, &m, &e), -1);
	assert_string_equal(e.code, PERR_BAD_PCT);
	proto_err_clear(&e);
	agent_link_input(w1, line, strlen(line));
	assert_string_equal(last_error(c1), PERR_BAD_PCT);
	assert_true(agent_state_connected(w1->state));
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":%lld,\"pct\":100}", (long long)a);
	assert_string_equal(state_of(f, a), "running");

	/* A task id that is not a positive integer. */
	const char *bad_id = "{\"type\":\"task.done\",\"task\":\"1\"}";
	assert_int_equal(proto_parse(bad_id, strlen(bad_id), &m, &e), -1);
	proto_err_clear(&e);

	/* A second done for a finished task is not the agent's any more. */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	feed(f, w1, "{\"type\":\"task.done\",\"task\":%lld}", (long long)a);
	assert_string_equal(last_error(c1), PERR_NOT_YOUR_TASK);
	assert_string_equal(state_of(f, a), "done");

	/* A payload that is not JSON, from the captain: a usage error, and
	 * nothing is stored. */
	struct task_counts before, after;
	tasks_counts(TM(f), &before);
	struct outcome o = run(f, "task add x --payload {bad");
	assert_int_equal(o.status, CMD_USAGE);
	assert_non_null(strstr(o.error, "task add: --payload is not JSON"));
	outcome_free(&o);
	assert_string_equal(submit_refused(f, "x", "{bad", NULL, 0), "the payload is not JSON");
	assert_string_equal(submit_refused(f, "", NULL, NULL, 0), "a task needs a title");
	tasks_counts(TM(f), &after);
	assert_int_equal(after.last_id, before.last_id);
	assert_int_equal(after.submitted, before.submitted);
	/* Other bad options. */
	o = run(f, "task add x --priority huge");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);
	o = run(f, "task add x --timeout soon");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);
	o = run(f, "task add x --retries -1");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);
	o = run(f, "task show 999");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "task show: no task 999");
	outcome_free(&o);
	o = run(f, "task show abc");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);
	o = run(f, "task list --state bogus");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);

	/* task.submit from an agent with a bad dependency: an error reply. */
	feed(f, w2, "{\"type\":\"task.submit\",\"title\":\"t\",\"after\":[500],\"ref\":\"s1\"}");
	assert_string_equal(last_error(c2), PERR_UNKNOWN_TASK);
	assert_string_equal(last_error_detail, "task.submit: no task 500 to wait for");
}

/* An agent submits work: the task is stored, `sent` answers once it is
 * committed, and the submitter is recorded. */
static void
test_agent_submit(void **state)
{
	struct fixture *f = *state;
	struct capture *c1 = cap_of(f, "w1");
	static const char *const zcaps[] = {"z", NULL};
	struct agent *w1 = attach(f, "w1", zcaps, 1);
	size_t n0 = c1->n;
	feed(f, w1,
	     "{\"type\":\"task.submit\",\"title\":\"child\",\"payload\":{\"k\":[1,2]},"
	     "\"priority\":\"high\",\"capability\":\"q\",\"timeout_s\":7,\"max_retries\":2,"
	     "\"ref\":\"s1\"}");
	assert_int_equal(c1->n, n0); /* not answered before the commit */
	/* (on the store thread: its end wakes the loop) */
	for (int i = 0; i < 100 && c1->n == n0; i++)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(c1->n, n0 + 1);
	json_t *j = cap_line(c1, c1->n - 1);
	assert_string_equal(jtype(j), "sent");
	assert_string_equal(json_string_value(json_object_get(j, "ref")), "s1");
	assert_int_equal(json_integer_value(json_object_get(j, "id")), 1);
	json_decref(j);
	j = show(f, 1);
	assert_string_equal(json_string_value(json_object_get(j, "submitter")), "w1");
	assert_string_equal(json_string_value(json_object_get(j, "priority")), "high");
	assert_string_equal(json_string_value(json_object_get(j, "capability")), "q");
	assert_true(json_real_value(json_object_get(j, "timeout_s")) == 7.0);
	assert_int_equal(json_integer_value(json_object_get(j, "max_retries")), 2);
	assert_int_equal(json_array_size(json_object_get(json_object_get(j, "payload"), "k")), 2);
	assert_string_equal(json_string_value(json_object_get(j, "waiting")), "no capable agent");
	json_decref(j);
}

/* ---- recovery ---------------------------------------------------------------------- */

/* Copies the live database to dir/dreamos.db while the orchestrator runs
 * (after a flush: what a kill -9 at that point leaves on disk). */
static void
snapshot_db(struct fixture *f, const char *dir)
{
	assert_int_equal(store_flush(orch_store(f->orch), NULL), 0);
	char *sql = sqlite3_mprintf("VACUUM INTO '%q/dreamos.db'", dir);
	char *err = NULL;
	int rc = sqlite3_exec(store_db(orch_store(f->orch)), sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fprintf(stderr, "VACUUM INTO: %s\n", err);
	assert_int_equal(rc, SQLITE_OK);
	sqlite3_free(sql);
}

static void
test_recovery(void **state)
{
	struct fixture *f = *state;
	static const char *const ycaps[] = {"y", NULL};
	struct agent *w1 = attach(f, "w1", ycaps, 2);
	int64_t done = submit(f, "done one"); /* 1 → w1 */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":1,\"result\":42}");
	int64_t running = submit(f, "runner"); /* 2 → w1 */
	feed(f, w1, "{\"type\":\"task.progress\",\"task\":2,\"pct\":30,\"note\":\"n\"}");
	int64_t failed = submit_full(f, "fails", PRIO_NORMAL, "y", NULL, 0, -1, 0); /* 3 → w1 */
	feed(f, w1, "{\"type\":\"task.fail\",\"task\":3,\"error\":\"oops\"}");
	/* 4 has no retries left once assigned: after the crash it is dead. */
	int64_t last = submit_full(f, "last chance", PRIO_NORMAL, NULL, NULL, 0, 0, 0); /* 4 → w1 */
	int64_t low = submit_full(f, "low", PRIO_LOW, NULL, NULL, 0, -1, 0);            /* 5 */
	int64_t high = submit_full(f, "high", PRIO_HIGH, NULL, NULL, 0, -1, 0);         /* 6 */
	int64_t dep[] = {running};
	int64_t blocked = submit_full(f, "after 2", PRIO_URGENT, NULL, dep, 1, -1, 0); /* 7 */
	int64_t canc = submit(f, "cancelled");                                         /* 8 */
	char *cause = NULL;
	assert_int_equal(tasks_cancel(TM(f), canc, &cause), 0);
	feed(f, w1,
	     "{\"type\":\"task.submit\",\"title\":\"by w1\",\"capability\":\"none\"}"); /* 9 */
	assert_string_equal(state_of(f, running), "running");
	assert_string_equal(state_of(f, failed), "failed");
	assert_string_equal(state_of(f, last), "assigned");
	assert_string_equal(state_of(f, high), "queued");
	assert_string_equal(state_of(f, blocked), "blocked");

	char *dir2 = testutil_tmpdir();
	snapshot_db(f, dir2);
	/* The first instance goes on a little: none of this is in the copy. */
	submit(f, "lost with the crash");
	feed(f, w1, "{\"type\":\"task.done\",\"task\":2}");

	fx_close(f);
	fx_open(f, dir2);
	assert_string_equal(orch_runtime(f->orch), dir2);

	struct task_counts tc;
	tasks_counts(TM(f), &tc);
	assert_int_equal(tc.last_id, 9);
	assert_int_equal(tc.n[TASK_DONE], 1);
	assert_int_equal(tc.n[TASK_CANCELLED], 1);
	assert_int_equal(tc.n[TASK_DEAD], 1);
	assert_int_equal(tc.n[TASK_QUEUED], 4); /* 2, 5, 6, 9 */
	assert_int_equal(tc.n[TASK_BLOCKED], 1);
	assert_int_equal(tc.n[TASK_FAILED], 1);
	assert_int_equal(tc.n[TASK_ASSIGNED] + tc.n[TASK_RUNNING], 0);

	assert_string_equal(state_of(f, done), "done");
	json_t *j = show(f, done);
	assert_int_equal(json_integer_value(json_object_get(j, "result")), 42);
	json_decref(j);
	/* The running task is queued again, its attempt counted, its agent
	 * and progress cleared. */
	j = show(f, running);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "queued");
	assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 1);
	assert_true(json_is_null(json_object_get(j, "agent")));
	assert_true(json_real_value(json_object_get(j, "progress")) == 0.0);
	json_decref(j);
	assert_string_equal(state_of(f, low), "queued");
	assert_string_equal(state_of(f, high), "queued");
	assert_string_equal(state_of(f, blocked), "blocked");
	assert_string_equal(state_of(f, canc), "cancelled");
	assert_string_equal(state_of(f, last), "dead");
	assert_string_equal(str_field(f, last, "error"),
	                    "dreamos restarted while it ran; out of retries");
	assert_string_equal(state_of(f, 9), "queued");
	assert_string_equal(str_field(f, 9, "submitter"), "w1");
	/* The failed task keeps its attempt and its backoff (about 1 s left). */
	j = show(f, failed);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "failed");
	assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 1);
	assert_string_equal(json_string_value(json_object_get(j, "error")), "oops");
	double left = json_real_value(json_object_get(j, "retry_in_s"));
	assert_true(left > 0.0 && left <= 1.0);
	json_decref(j);

	/* Ids go on above the crashed run's reservation: its task.assign
	 * lines may have carried ids whose rows the crash rolled back. */
	int64_t fresh = submit_full(f, "fresh", PRIO_LOW, NULL, NULL, 0, -1, 0);
	assert_int_equal(fresh, IDLEASE_BLOCK + 1);

	/* The queue drains in the same order as before the crash: high (6),
	 * then runner (2, attempt 2), which unblocks 7 (urgent), then low 5
	 * and the fresh low 10; 9 (cap none) and 3 (cap y) are left. */
	struct capture *c = cap_of(f, "w1");
	struct agent *n1 = attach(f, "w1", NULL, 1);
	for (int i = 0; i < 5; i++) {
		json_t *l = cap_line(c, c->n - 1);
		assert_string_equal(jtype(l), "task.assign");
		json_t *t = json_object_get(l, "task");
		long long id = json_integer_value(json_object_get(t, "id"));
		if (id == running)
			assert_int_equal(json_integer_value(json_object_get(t, "attempt")), 2);
		json_decref(l);
		feed(f, n1, "{\"type\":\"task.done\",\"task\":%lld}", id);
	}
	assert_string_equal(assigned(c, 0), "6,2,7,5,1000001");
	assert_string_equal(state_of(f, 9), "queued");
	assert_string_equal(str_field(f, 9, "waiting"), "no capable agent");
	/* The backoff ends; with no y agent the failed task waits, queued; a
	 * y agent takes it as attempt 2. */
	advance(f, 1000);
	assert_string_equal(state_of(f, failed), "queued");
	struct capture *cy = cap_of(f, "w2");
	attach(f, "w2", ycaps, 1);
	assert_string_equal(assigned(cy, 0), "3");
	assert_int_equal(int_field(f, failed, "attempt"), 2);

	testutil_rmdir(dir2);
}

/* A clean stop and a restart on the same runtime keep the queue: states,
 * order, dependencies, ids. */
static void
test_restart_same_runtime(void **state)
{
	struct fixture *f = *state;
	struct agent *w1 = attach(f, "w1", NULL, 1);
	submit(f, "A");                                       /* 1 → w1 */
	submit_full(f, "B", PRIO_LOW, NULL, NULL, 0, -1, 0);  /* 2 */
	submit_full(f, "C", PRIO_HIGH, NULL, NULL, 0, -1, 0); /* 3 */
	int64_t after_b[] = {2};
	submit_full(f, "D", PRIO_URGENT, NULL, after_b, 1, -1, 0); /* 4 */
	feed(f, w1, "{\"type\":\"task.done\",\"task\":1}");        /* 3 → w1 */
	fx_close(f);
	fx_open(f, f->dir);
	assert_string_equal(state_of(f, 1), "done");
	assert_string_equal(state_of(f, 2), "queued");
	assert_string_equal(state_of(f, 4), "blocked");
	assert_int_equal(submit(f, "E"), 5);
	struct capture *c = cap_of(f, "w1");
	struct agent *again = attach(f, "w1", NULL, 1);
	for (int i = 0; i < 4; i++) {
		json_t *l = cap_line(c, c->n - 1);
		long long id =
		    json_integer_value(json_object_get(json_object_get(l, "task"), "id"));
		json_decref(l);
		feed(f, again, "{\"type\":\"task.done\",\"task\":%lld}", id);
	}
	/* 3 came back from w1 (the clean stop gave it back), then E, then the
	 * low B, which unblocks the urgent D. */
	assert_string_equal(assigned(c, 0), "3,5,2,4");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_assign_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_assign_row_deferred, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_timing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fail_final, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_priority_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_capability, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_specialist, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_submit_not_stored, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paused_and_zero_slots, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_least_loaded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependency_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependency_dead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependency_ended_waiter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependency_retry_blocked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependency_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_death, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_death_priority, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_death_out_of_retries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_submit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart_same_runtime, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
