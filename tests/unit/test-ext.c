/* test-ext.c — the extension system against a real orchestrator in a
 * temporary runtime, with the test extensions of tests/ext (built by make
 * into tests/ext/.libs, copied into a temporary extensions directory):
 *
 *   - load, commands (options, completion, asynchronous answers), the
 *     `ext` commands, key-value state, settings, timers, events;
 *   - an extension's agent type: messages counted and acknowledged, tasks
 *     answered, `agent spawn NAME --type TYPE`, stop/start/restart;
 *   - hot reload by replacing the file while messages flow: the counters
 *     survive and no message is lost or delivered twice; a new version
 *     that fails (init refuses, wrong API) leaves the old one running;
 *   - refusals: wrong API version, not an extension, a missing or too old
 *     dependency, a cycle — each with its reason, the others still load;
 *   - a dependency chain loaded in order, unload refused while needed,
 *     --force unloading dependents first;
 *   - unload sweeps everything: commands, agents, timers, subscriptions,
 *     HTTP requests in flight, waiting commands (no handle left active). */
#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <uv.h>

#include <dreamos/extension.h>

#include "agent.h"
#include "cmd.h"
#include "ext-int.h"
#include "ext.h"
#include "log.h"
#include "orch.h"
#include "outbound.h"
#include "store.h"

#ifndef TEST_EXT_DIR
#define TEST_EXT_DIR "tests/ext/.libs"
#endif

/* Until the orchestrator owns the extension system, the test makes one
 * itself (and skips what needs the agent.c hook): weak references, NULL
 * when the core library does not have them yet. */
struct exts *orch_exts(struct orch *o);
bool orch_agent_wants_link(struct orch *o, struct agent *a);
#pragma weak orch_exts
#pragma weak orch_agent_wants_link

struct fixture {
	char *dir;
	char *extdir;
	char *cfg;
	uv_loop_t loop;
	struct orch *orch;
	struct exts *es;
	bool own_es;
};

static const char *
ext_src_dir(void)
{
	const char *d = getenv("TEST_EXT_DIR");
	return d != NULL && *d != '\0' ? d : TEST_EXT_DIR;
}

/* Copies TEST_EXT_DIR/from to the extensions directory as name, through
 * a rename (what `mv` of a new build does). */
static void
install(struct fixture *f, const char *from, const char *name)
{
	char src[4096], tmp[4096], dst[4096];
	snprintf(src, sizeof src, "%s/%s", ext_src_dir(), from);
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", f->extdir, name);
	snprintf(dst, sizeof dst, "%s/%s", f->extdir, name);
	FILE *in = fopen(src, "rb");
	if (in == NULL)
		fail_msg("%s: not built (make check builds the test extensions)", src);
	FILE *out = fopen(tmp, "wb");
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
	assert_int_equal(rename(tmp, dst), 0);
}

static void
on_spin_timer(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

/* Runs the loop for ms milliseconds. */
static void
spin(struct fixture *f, unsigned ms)
{
	bool done = false;
	uv_timer_t t;
	uv_timer_init(&f->loop, &t);
	t.data = &done;
	uv_timer_start(&t, on_spin_timer, ms, 0);
	while (!done)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&f->loop, UV_RUN_NOWAIT);
}

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

/* Starts a command; its outcome fills o when it finishes. */
static void
start(struct fixture *f, const char *line, struct outcome *o)
{
	memset(o, 0, sizeof *o);
	cmd_run_line(f->orch, line, CLIENT_INTERNAL, "test", ROLE_CAPTAIN, capture_done, NULL, o);
}

/* Runs a command to its end (asynchronous ones too, 10 s at most). */
static struct outcome
run(struct fixture *f, const char *line)
{
	struct outcome o;
	start(f, line, &o);
	for (int i = 0; i < 10000 && o.calls == 0; i++)
		spin(f, 1);
	if (o.calls != 1)
		fail_msg("'%s' did not finish", line);
	return o;
}

static void
outcome_free(struct outcome *o)
{
	free(o->text);
	free(o->error);
}

/* Runs a command that must succeed; returns its text (caller frees). */
static char *
ok(struct fixture *f, const char *line)
{
	struct outcome o = run(f, line);
	if (o.status != CMD_OK)
		fail_msg("'%s' failed: %s", line, o.error ? o.error : "?");
	free(o.error);
	return o.text;
}

static void
ok_(struct fixture *f, const char *line)
{
	free(ok(f, line));
}

/* Runs a command that must fail; returns its error (caller frees). */
static char *
fails(struct fixture *f, const char *line)
{
	struct outcome o = run(f, line);
	if (o.status == CMD_OK)
		fail_msg("'%s' succeeded: %s", line, o.text);
	free(o.text);
	assert_non_null(o.error);
	return o.error;
}

#define assert_contains(hay, needle)                                                               \
	do {                                                                                       \
		const char *h_ = (hay);                                                            \
		if (h_ == NULL || strstr(h_, (needle)) == NULL)                                    \
			fail_msg("expected '%s' in: %s", (needle), h_ ? h_ : "(null)");            \
	} while (0)

/* The JSON answer of a command. */
static json_t *
run_json(struct fixture *f, const char *line)
{
	char *cmd = malloc(strlen(line) + 8);
	sprintf(cmd, "%s --json", line);
	char *text = ok(f, cmd);
	free(cmd);
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (j == NULL)
		fail_msg("not JSON: %s", text);
	free(text);
	return j;
}

static long
counter_get(struct fixture *f, const char *key)
{
	json_t *j = run_json(f, "counter");
	long v = (long)json_integer_value(json_object_get(j, key));
	json_decref(j);
	return v;
}

static char *
counter_version(struct fixture *f)
{
	json_t *j = run_json(f, "counter");
	char *v = strdup(json_string_value(json_object_get(j, "version")));
	json_decref(j);
	return v;
}

/* Waits (5 s at most) until the counter command shows key == want. */
static void
wait_counter(struct fixture *f, const char *key, long want)
{
	for (int i = 0; i < 500; i++) {
		if (counter_get(f, key) == want)
			return;
		spin(f, 10);
	}
	fail_msg("counter %s is %ld, not %ld", key, counter_get(f, key), want);
}

static void
wait_version(struct fixture *f, const char *want)
{
	for (int i = 0; i < 500; i++) {
		char *v = counter_version(f);
		bool same = strcmp(v, want) == 0;
		free(v);
		if (same)
			return;
		spin(f, 10);
	}
	fail_msg("counter did not become version %s", want);
}

/* The sequence number of the newest log record containing text, or 0. */
static uint64_t
log_seq(struct fixture *f, const char *text)
{
	struct logmgr *lm = orch_log(f->orch);
	for (size_t i = logmgr_ring_count(lm); i-- > 0;) {
		const struct log_record *r = logmgr_ring_get(lm, i);
		if (strstr(r->msg, text) != NULL)
			return r->seq;
	}
	return 0;
}

static void
wait_log(struct fixture *f, const char *text)
{
	for (int i = 0; i < 500 && log_seq(f, text) == 0; i++)
		spin(f, 10);
	if (log_seq(f, text) == 0)
		fail_msg("no log record with '%s'", text);
}

static struct agent *
agent(struct fixture *f, const char *name)
{
	return agents_find(orch_agents(f->orch), name);
}

static void
wait_agent_state(struct fixture *f, const char *name, enum agent_state st)
{
	for (int i = 0; i < 500; i++) {
		struct agent *a = agent(f, name);
		if (a != NULL && a->state == st)
			return;
		spin(f, 10);
	}
	struct agent *a = agent(f, name);
	fail_msg("agent %s is %s, not %s", name, a ? agent_state_name(a->state) : "missing",
	         agent_state_name(st));
}

/* Active handles of the loop (closing ones excluded). */
static void
count_active(uv_handle_t *h, void *arg)
{
	if (uv_is_active(h) && !uv_is_closing(h))
		(*(int *)arg)++;
}

static int
active_handles(struct fixture *f)
{
	int n = 0;
	uv_walk(&f->loop, count_active, &n);
	return n;
}

/* Number of copies in RUNTIME/extensions/.loaded. */
static int
loaded_copies(struct fixture *f)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/extensions/.loaded", f->dir);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ---- fixture ------------------------------------------------------------- */

static void
fx_open(struct fixture *f)
{
	uv_loop_init(&f->loop);
	/* TEST_EXT_VERBOSE=1 shows the log on stderr. */
	struct orch_opts o = {.runtime = f->dir,
	                      .config_path = f->cfg,
	                      .bridge_port = -1,
	                      .mode = "test",
	                      .log_stderr = getenv("TEST_EXT_VERBOSE") != NULL,
	                      .log_level = getenv("TEST_EXT_VERBOSE")};
	char *cause = NULL;
	int rc = orch_new(&f->orch, &f->loop, &o, &cause);
	if (rc != 0)
		fail_msg("orch_new: %s", cause);
	if (orch_exts != NULL) {
		f->es = orch_exts(f->orch);
	} else {
		f->es = ext_new(f->orch);
		f->own_es = true;
	}
	assert_non_null(f->es);
	assert_int_equal(orch_start(f->orch, &cause), 0);
	if (f->own_es)
		ext_start(f->es);
}

static void
on_quit(void *arg)
{
	*(bool *)arg = true;
}

static void
fx_close(struct fixture *f)
{
	if (f->own_es)
		ext_close(f->es);
	bool quit = false;
	orch_set_quit_cb(f->orch, on_quit, &quit);
	orch_request_quit(f->orch, "test over");
	for (int i = 0; i < 10000 && !quit; i++)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_true(quit);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	if (f->own_es)
		ext_free(f->es);
	orch_free(f->orch);
	f->orch = NULL;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	f->dir = testutil_tmpdir();
	setenv("DREAMOS_CONFIG", "", 1);
	setenv("XDG_CONFIG_HOME", f->dir, 1);
	f->extdir = malloc(strlen(f->dir) + 8);
	sprintf(f->extdir, "%s/ext", f->dir);
	assert_int_equal(mkdir(f->extdir, 0700), 0);
	char cfg[8192];
	snprintf(cfg, sizeof cfg,
	         "bridge:\n"
	         "  enabled: false\n"
	         "agents:\n"
	         "  heartbeat_timeout: 0\n"
	         "  stop_grace: 5s\n"
	         "extensions:\n"
	         "  dir: %s\n"
	         "  counter:\n"
	         "    agent: tally\n"
	         "    tick_ms: 10\n",
	         f->extdir);
	f->cfg = testutil_write(f->dir, "test.yaml", cfg);
	fx_open(f);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	fx_close(f);
	free(f->cfg);
	free(f->extdir);
	testutil_rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void
add_word(const char *word, void *arg)
{
	struct buf *b = arg;
	buf_addf(b, "%s ", word);
}

/* Completion of argv[0..argc) plus partial, as "a b c ". */
static char *
complete(struct fixture *f, const char *line, const char *partial)
{
	int argc;
	char **argv;
	char *cause = NULL;
	assert_int_equal(cmd_split(line, &argc, &argv, &cause), 0);
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "");
	cmd_complete(orch_cmds(f->orch), f->orch, argc, argv, partial, add_word, &b);
	cmd_free_argv(argc, argv);
	return b.data;
}

/* Load, the extension's commands, the `ext` commands, kv, settings, timers. */
static void
test_load_and_commands(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	char *err = fails(f, "counter");
	assert_contains(err, "unknown command");
	free(err);

	char *t = ok(f, "ext load counter");
	assert_contains(t, "loaded counter 1.0");
	free(t);
	assert_int_equal(loaded_copies(f), 1);
	assert_non_null(log_seq(f, "loaded counter 1.0 from"));

	/* Its command, with an option; the bumps are in the store. */
	t = ok(f, "counter bump 2 --note first");
	assert_contains(t, "bumped to 2: first");
	free(t);
	ok_(f, "counter bump");
	assert_int_equal(counter_get(f, "bumps"), 3);
	assert_int_equal(counter_get(f, "stored_bumps"), 3);
	char *kv = store_kv_get(orch_store(f->orch), "counter", "bumps");
	assert_string_equal(kv, "3");
	free(kv);
	err = fails(f, "counter frobnicate");
	assert_contains(err, "unknown verb 'frobnicate'");
	free(err);
	/* Help comes from the registration. */
	t = ok(f, "counter --help");
	assert_contains(t, "Shows the counters, or bumps one.");
	assert_contains(t, "--note TEXT");
	free(t);

	/* The timer runs (tick_ms from the settings). */
	long ticks = counter_get(f, "ticks");
	spin(f, 100);
	assert_true(counter_get(f, "ticks") > ticks);

	/* An asynchronous answer. */
	t = ok(f, "counter-wait 30");
	assert_contains(t, "waited");
	free(t);

	/* Completion: the extension's own, and the `ext` hints (through
	 * orch_complete, once the orchestrator owns the system). */
	install(f, "dep_a.so", "dep_a.so");
	if (orch_exts != NULL) {
		char *c = complete(f, "counter", "b");
		assert_string_equal(c, "bump ");
		free(c);
		c = complete(f, "ext unload", "cou");
		assert_string_equal(c, "counter ");
		free(c);
		c = complete(f, "ext load", "dep");
		assert_string_equal(c, "dep_a ");
		free(c);
	}

	/* ext list / info. */
	t = ok(f, "ext list");
	assert_contains(t, "counter");
	assert_contains(t, "1.0");
	assert_contains(t, "counts messages");
	free(t);
	t = ok(f, "ext list --all");
	assert_contains(t, "available");
	free(t);
	json_t *info = run_json(f, "ext info counter");
	json_t *res = json_object_get(info, "resources");
	assert_int_equal(json_array_size(json_object_get(res, "commands")), 4);
	assert_string_equal(json_string_value(json_array_get(json_object_get(res, "agents"), 0)),
	                    "tally");
	assert_int_equal(json_integer_value(json_object_get(res, "timers")), 1);
	assert_int_equal(json_integer_value(json_object_get(res, "subscriptions")), 1);
	json_decref(info);

	/* Loading it twice is refused. */
	err = fails(f, "ext load counter");
	assert_contains(err, "already loaded");
	free(err);
	err = fails(f, "ext load nosuch");
	assert_contains(err, "nosuch.so: no such file");
	free(err);
	/* The core's own kv namespace (message and task ids) is not a name. */
	err = fails(f, "ext load dreamos");
	assert_contains(err, "invalid extension name 'dreamos'");
	free(err);
}

/* The agent of the extension's type gets messages and tasks. */
static void
test_agent_type(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	ok_(f, "ext load counter");
	wait_agent_state(f, "tally", AGENT_READY);
	struct agent *a = agent(f, "tally");
	assert_string_equal(a->cfg.type, "counter");
	assert_true(agent_has_cap(a, "count"));
	assert_int_equal(a->max_tasks, 2);
	wait_counter(f, "agents_up", 1); /* start() runs from the loop */

	for (int i = 1; i <= 20; i++) {
		char line[128];
		snprintf(line, sizeof line, "send tally hi --body '{\"n\": %d}'", i);
		ok_(f, line);
	}
	wait_counter(f, "messages", 20);
	assert_int_equal(counter_get(f, "sum"), 210);

	/* A message from the extension itself (from = its name). */
	ok_(f, "counter-send tally 1000");
	wait_counter(f, "sum", 1210);
	char *err = fails(f, "counter-send nobody 1");
	assert_contains(err, "no agent named 'nobody'");
	free(err);

	/* A task for its capability: done, and the task event is seen. */
	ok_(f, "task add count things --cap count");
	wait_counter(f, "tasks_run", 1);
	wait_counter(f, "task_events", 1);
	assert_true(counter_get(f, "msg_events") >= 21 * 3); /* accepted, delivered, acked */

	if (orch_agent_wants_link == NULL)
		return; /* the rest needs the agent.c hook */

	/* `agent spawn NAME --type TYPE` makes one the orchestrator keeps. */
	ok_(f, "agent spawn bob --type counter");
	wait_agent_state(f, "bob", AGENT_READY);
	assert_int_equal(agent(f, "bob")->max_tasks, 2);
	err = fails(f, "agent spawn zed --type nosuchtype");
	assert_contains(err, "unknown agent type 'nosuchtype'");
	assert_contains(err, "counter");
	free(err);
	ok_(f, "send bob hi --body '{\"n\": 1}'");
	wait_counter(f, "messages", 22);

	/* Stop is prompt (no stop_grace wait); restart starts it again. */
	int64_t t0 = time_mono_ms();
	ok_(f, "agent stop bob");
	wait_agent_state(f, "bob", AGENT_STOPPED);
	assert_true(time_mono_ms() - t0 < 1000);
	assert_int_equal(counter_get(f, "agents_up"), 1);
	ok_(f, "agent restart bob");
	wait_agent_state(f, "bob", AGENT_READY);
	ok_(f, "agent restart bob");
	spin(f, 50);
	wait_agent_state(f, "bob", AGENT_READY);
	assert_int_equal(counter_get(f, "agents_up"), 2);

	/* Unloading stops it; loading again brings it back. */
	ok_(f, "ext unload counter");
	wait_agent_state(f, "bob", AGENT_STOPPED);
	assert_true(agent(f, "bob")->wanted);
	ok_(f, "send bob waiting --body '{\"n\": 5}'");
	ok_(f, "ext load counter");
	wait_agent_state(f, "bob", AGENT_READY);
	wait_agent_state(f, "tally", AGENT_READY);
	wait_counter(f, "sum", 5); /* a new process: counters from zero */
}

/* Hot reload: replace the file while messages flow. */
static void
test_hot_reload(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	ok_(f, "ext load counter");
	wait_agent_state(f, "tally", AGENT_READY);
	ok_(f, "counter bump 7");
	long sum = 0;
	int n = 0;
	char line[128];
	for (; n < 50; n++) {
		snprintf(line, sizeof line, "send tally m --body '{\"n\": %d}'", n + 1);
		ok_(f, line);
		sum += n + 1;
	}
	wait_counter(f, "messages", 50);
	long ticks = counter_get(f, "ticks");

	/* A new build replaces the file: sends go on across the reload. */
	install(f, "counter2.so", "counter.so");
	for (; n < 150; n++) {
		snprintf(line, sizeof line, "send tally m --body '{\"n\": %d}'", n + 1);
		ok_(f, line);
		sum += n + 1;
		spin(f, 4);
	}
	wait_version(f, "2.0");
	wait_counter(f, "messages", 150);
	spin(f, 100);
	/* Exactly once each: none lost, none twice. */
	assert_int_equal(counter_get(f, "messages"), 150);
	assert_int_equal(counter_get(f, "sum"), sum);
	assert_int_equal(counter_get(f, "generation"), 1);
	assert_int_equal(counter_get(f, "bumps"), 7);
	assert_true(counter_get(f, "ticks") >= ticks);
	assert_int_equal(counter_get(f, "agents_up"), 1);
	assert_non_null(log_seq(f, "reloaded counter 1.0 -> 2.0"));
	assert_int_equal(loaded_copies(f), 1); /* the old copy is gone */
	json_t *info = run_json(f, "ext info counter");
	assert_int_equal(json_integer_value(json_object_get(info, "reloads")), 1);
	json_decref(info);

	/* An event on the file that changes nothing in it (its mode) does
	 * not reload it... */
	char path[4096];
	snprintf(path, sizeof path, "%s/counter.so", f->extdir);
	assert_int_equal(chmod(path, 0600), 0);
	spin(f, 2 * EXT_DEBOUNCE_MS);
	assert_int_equal(counter_get(f, "generation"), 1);
	/* ...and `ext reload` reloads on demand. */
	ok_(f, "ext reload counter");
	assert_int_equal(counter_get(f, "generation"), 2);
	assert_int_equal(counter_get(f, "messages"), 150);

	/* A new version whose init fails: the old one runs again, with its
	 * state. */
	install(f, "counter_bad.so", "counter.so");
	wait_log(f, "is running again");
	assert_non_null(log_seq(f, "this build of counter refuses to start"));
	char *v = counter_version(f);
	assert_string_equal(v, "2.0");
	free(v);
	assert_int_equal(counter_get(f, "messages"), 150);
	assert_int_equal(counter_get(f, "generation"), 3);
	wait_agent_state(f, "tally", AGENT_READY);
	ok_(f, "send tally m --body '{\"n\": 1}'");
	wait_counter(f, "messages", 151);

	/* A new file for another API version: refused before anything stops. */
	install(f, "badver.so", "counter.so");
	wait_log(f, "keeps running");
	assert_non_null(log_seq(f, "built for extension API 19700101-01"));
	assert_int_equal(counter_get(f, "generation"), 3);
	assert_int_equal(counter_get(f, "messages"), 151);
	char *err = fails(f, "ext reload counter");
	assert_contains(err, "built for extension API 19700101-01");
	assert_contains(err, "keeps running");
	free(err);
	assert_int_equal(loaded_copies(f), 1);
}

/* Wrong API version, not an extension: clear refusals, nothing left. */
static void
test_refusals(void **state)
{
	struct fixture *f = *state;
	install(f, "badver.so", "badver.so");
	install(f, "notext.so", "notext.so");
	install(f, "dep_a.so", "dep_a.so");
	char *err = fails(f, "ext load badver");
	assert_contains(err, "built for extension API 19700101-01");
	assert_contains(err, DREAMOS_EXT_API_VERSION);
	free(err);
	err = fails(f, "ext load notext");
	assert_contains(err, "not a Dream.OS extension");
	free(err);
	/* A failure does not stop the others of the same request. */
	err = fails(f, "ext load badver dep_a notext");
	assert_contains(err, "badver");
	assert_contains(err, "loaded: dep_a");
	free(err);
	assert_int_equal(ext_count(f->es), 1);
	assert_int_equal(loaded_copies(f), 1);
	/* By path, and a file that is not a shared object at all. */
	char line[4096];
	char *junk = testutil_write(f->extdir, "junk.so", "not ELF\n");
	snprintf(line, sizeof line, "ext load %s", junk);
	err = fails(f, line);
	assert_contains(err, "dlopen");
	free(err);
	free(junk);
	assert_non_null(log_seq(f, "cannot load badver"));
}

/* A dependency chain, in order; unload refused while needed; --force. */
static void
test_dependencies(void **state)
{
	struct fixture *f = *state;
	install(f, "dep_a.so", "dep_a.so");
	install(f, "dep_b.so", "dep_b.so");
	install(f, "dep_c.so", "dep_c.so");
	char *t = ok(f, "ext load dep_c");
	assert_contains(t, "loaded dep_a 1.0");
	assert_contains(t, "loaded dep_b 1.0");
	assert_contains(t, "loaded dep_c 1.0");
	free(t);
	uint64_t a = log_seq(f, "dep_a 1.0 initialised"), b = log_seq(f, "dep_b 1.0 initialised"),
	         c = log_seq(f, "dep_c 1.0 initialised");
	assert_true(a > 0 && a < b && b < c);
	t = ok(f, "dep_b");
	assert_contains(t, "dep_b 1.0");
	free(t);
	json_t *info = run_json(f, "ext info dep_b");
	assert_string_equal(json_string_value(json_object_get(info, "requires")), "dep_a >= 1.0");
	assert_string_equal(json_string_value(json_object_get(info, "required_by")), "dep_c");
	assert_string_equal(json_string_value(json_object_get(info, "dependency_of")), "dep_c");
	json_decref(info);

	char *err = fails(f, "ext unload dep_a");
	assert_contains(err, "cannot unload dep_a: needed by dep_b");
	assert_contains(err, "--force");
	free(err);
	assert_int_equal(ext_count(f->es), 3);
	t = ok(f, "ext unload dep_a --force");
	assert_contains(t, "unloaded dep_a and 2 extensions");
	free(t);
	assert_int_equal(ext_count(f->es), 0);
	/* Dependents first. */
	uint64_t uc = log_seq(f, "unloaded dep_c"), ub = log_seq(f, "unloaded dep_b"),
	         ua = log_seq(f, "unloaded dep_a");
	assert_true(uc > 0 && uc < ub && ub < ua);
	err = fails(f, "dep_a");
	assert_contains(err, "unknown command");
	free(err);

	/* Listed in the wrong order in one request: still loaded in order. */
	t = ok(f, "ext load dep_c dep_b dep_a");
	free(t);
	assert_int_equal(ext_count(f->es), 3);
}

/* Methods between extensions: a call, and every way it can fail. */
static void
test_methods(void **state)
{
	struct fixture *f = *state;
	install(f, "dep_a.so", "dep_a.so");
	install(f, "dep_b.so", "dep_b.so");
	free(ok(f, "ext load dep_b"));
	char *t = ok(f, "dep_b-call dep_a.echo '{\"x\": 1}'");
	assert_contains(t, "{\"from\":\"dep_a\",\"in\":{\"x\":1}}"); /* compact JSON */
	free(t);
	char *err = fails(f, "dep_b-call nosuch.echo");
	assert_contains(err, "extension nosuch is not loaded");
	free(err);
	err = fails(f, "dep_b-call dep_a.nope");
	assert_contains(err, "dep_a offers no method 'nope'");
	free(err);
	err = fails(f, "dep_b-call dep_a");
	assert_contains(err, "'dep_a' is not EXT.METHOD");
	free(err);
	err = fails(f, "dep_b-call dep_a.fail");
	assert_contains(err, "dep_a.fail: failed on purpose");
	free(err);
	err = fails(f, "dep_b-call dep_a.echo '{not json'");
	assert_contains(err, "arguments are not JSON");
	free(err);
	err = fails(f, "dep_b-call dep_a.recurse");
	assert_contains(err, "calls nested too deep");
	free(err);
	/* Swept on unload: the methods go with their extension. */
	free(ok(f, "ext unload dep_a --force"));
	free(ok(f, "ext load dep_a"));
	err = fails(f, "dep_a-call dep_b.echo");
	assert_contains(err, "extension dep_b is not loaded");
	free(err);
}

/* Missing, too old and cyclic dependencies: clear errors, others load. */
static void
test_dependency_errors(void **state)
{
	struct fixture *f = *state;
	install(f, "dep_a.so", "dep_a.so");
	install(f, "dep_old.so", "dep_old.so");
	install(f, "dep_missing.so", "dep_missing.so");
	install(f, "cycle_x.so", "cycle_x.so");
	install(f, "cycle_y.so", "cycle_y.so");

	char *err = fails(f, "ext load dep_old");
	assert_contains(err, "requires dep_a >= 9.0, but dep_a is version 1.0");
	free(err);
	assert_int_equal(ext_count(f->es), 0);
	err = fails(f, "ext load dep_missing");
	assert_contains(err, "requires nosuchext, which is not loaded and not in");
	free(err);
	err = fails(f, "ext load cycle_x");
	assert_contains(err, "dependency cycle: cycle_x -> cycle_y -> cycle_x");
	free(err);
	assert_int_equal(ext_count(f->es), 0);
	assert_int_equal(loaded_copies(f), 0);

	/* Together with a good one: it loads, the others fail. */
	err = fails(f, "ext load cycle_y dep_a dep_missing dep_old");
	assert_contains(err, "dependency cycle");
	assert_contains(err, "nosuchext");
	assert_contains(err, "loaded: dep_a");
	free(err);
	assert_int_equal(ext_count(f->es), 1);
	/* Too old against a loaded one. */
	err = fails(f, "ext load dep_old");
	assert_contains(err, "requires dep_a >= 9.0, but dep_a 1.0 is loaded");
	free(err);
}

/* Unload sweeps everything, including work in progress. */
static void
test_unload_sweeps(void **state)
{
	struct fixture *f = *state;
	spin(f, 20);
	int handles0 = active_handles(f);
	install(f, "counter.so", "counter.so");
	ok_(f, "ext load counter");
	wait_agent_state(f, "tally", AGENT_READY);

	/* An HTTP server that accepts and never answers. */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(s, 8), 0);
	socklen_t sl = sizeof sa;
	getsockname(s, (struct sockaddr *)&sa, &sl);
	char line[256];
	snprintf(line, sizeof line, "counter-fetch http://127.0.0.1:%d/slow", ntohs(sa.sin_port));
	struct outcome fetch, wait;
	start(f, line, &fetch);
	start(f, "counter-wait 600000", &wait);
	spin(f, 100);
	assert_int_equal(fetch.calls, 0);
	assert_int_equal(wait.calls, 0);

	struct ext_counts c;
	ext_counts(f->es, &c);
	assert_int_equal(c.extensions, 1);
	assert_int_equal(c.commands, 4);
	assert_int_equal(c.agent_types, 1);
	assert_int_equal(c.agents, 1);
	assert_int_equal(c.timers, 2);
	assert_int_equal(c.subscriptions, 1);
	assert_int_equal(c.requests, 1);
	assert_int_equal(c.waiting_calls, 2);
	assert_int_equal(c.watchers, 1);
	assert_int_equal(outbound_pending(orch_outbound(f->orch)), 1);

	char *t = ok(f, "ext unload counter");
	assert_contains(t, "unloaded counter");
	free(t);
	/* The waiting commands were answered. */
	assert_int_equal(fetch.calls, 1);
	assert_int_equal(fetch.status, CMD_ERROR);
	assert_contains(fetch.error, "extension 'counter' was unloaded");
	assert_int_equal(wait.calls, 1);
	assert_contains(wait.error, "was unloaded");
	outcome_free(&fetch);
	outcome_free(&wait);
	assert_non_null(log_seq(f, "swept 4 commands, 1 agent type, 1 agent, 2 timers, "
	                           "1 subscription, 1 request, 2 waiting commands"));

	ext_counts(f->es, &c);
	assert_int_equal(c.extensions + c.commands + c.agent_types + c.agents + c.timers +
	                     c.subscriptions + c.requests + c.waiting_calls + c.watchers,
	                 0);
	assert_int_equal(outbound_pending(orch_outbound(f->orch)), 0);
	char *err = fails(f, "counter");
	assert_contains(err, "unknown command");
	free(err);
	wait_agent_state(f, "tally", AGENT_STOPPED);
	assert_int_equal(loaded_copies(f), 0);
	spin(f, 50);
	ext_counts(f->es, &c);
	assert_int_equal(c.jobs, 0);
	assert_int_equal(c.pending_sends, 0);
	/* No timer, watcher or idle handle of the extension is left running. */
	assert_int_equal(active_handles(f), handles0);
	close(s);

	/* And it loads again cleanly. */
	ok_(f, "ext load counter");
	wait_agent_state(f, "tally", AGENT_READY);
	assert_int_equal(counter_get(f, "bumps"), 0);
}

/* Extensions listed in the configuration load at start, with their
 * dependencies; a bad one does not stop the others. */
static void
test_config_load(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	install(f, "dep_a.so", "dep_a.so");
	install(f, "dep_b.so", "dep_b.so");
	install(f, "badver.so", "badver.so");
	bool hook = orch_agent_wants_link != NULL;
	if (hook) {
		/* A spawned agent of an extension type is remembered. */
		ok_(f, "ext load counter");
		ok_(f, "agent spawn bob --type counter");
		wait_agent_state(f, "bob", AGENT_READY);
	}
	fx_close(f);
	char cfg[8192];
	snprintf(cfg, sizeof cfg,
	         "bridge:\n"
	         "  enabled: false\n"
	         "agents:\n"
	         "  heartbeat_timeout: 0\n"
	         "  list:\n"
	         "    - name: cfgagent\n"
	         "      type: counter\n"
	         "extensions:\n"
	         "  dir: %s\n"
	         "  load: [badver, dep_b, counter]\n"
	         "  counter:\n"
	         "    tick_ms: 10\n",
	         f->extdir);
	free(f->cfg);
	f->cfg = testutil_write(f->dir, "test.yaml", cfg);
	fx_open(f);
	assert_int_equal(ext_count(f->es), 3); /* dep_a, dep_b, counter */
	assert_non_null(log_seq(f, "cannot load badver"));
	assert_non_null(log_seq(f, "as a dependency of dep_b"));
	char *t = ok(f, "dep_a");
	free(t);
	if (hook) {
		wait_agent_state(f, "cfgagent", AGENT_READY);
		wait_agent_state(f, "bob", AGENT_READY);
		wait_counter(f, "agents_up", 2);
	}
}

/* Event subscriptions: log records at its level, not its own; unsubscribe
 * drops the core's subscription. */
static void
test_events(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	ok_(f, "ext load counter");
	long warn = counter_get(f, "warn_logs");
	char *err = fails(f, "ext load nosuch"); /* an error record */
	free(err);
	wait_counter(f, "warn_logs", warn + 1);
	ok_(f, "counter bump"); /* info: below its level */
	spin(f, 30);
	assert_int_equal(counter_get(f, "warn_logs"), warn + 1);
	struct ext_counts c;
	ext_counts(f->es, &c);
	assert_int_equal(c.subscriptions, 1);
	assert_true(f->es->log_sub != 0 && f->es->bus_sub != 0 && f->es->task_sub != 0);
	char *t = ok(f, "counter quiet");
	assert_contains(t, "unsubscribed");
	free(t);
	ext_counts(f->es, &c);
	assert_int_equal(c.subscriptions, 0);
	assert_true(f->es->log_sub == 0 && f->es->bus_sub == 0 && f->es->task_sub == 0);
	err = fails(f, "ext load nosuch");
	free(err);
	spin(f, 30);
	assert_int_equal(counter_get(f, "warn_logs"), warn + 1);
}

/* The rest of the host table, through `counter misc` and `counter drop`. */
static void
test_host_calls(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	ok_(f, "ext load counter");
	wait_agent_state(f, "tally", AGENT_READY);
	json_t *j = run_json(f, "counter misc");
	assert_true(json_integer_value(json_object_get(j, "task")) > 0);
	assert_string_equal(json_string_value(json_object_get(j, "title")), "from counter");
	assert_int_equal(json_integer_value(json_object_get(j, "cancel")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "bad_task")), 0);
	assert_contains(json_string_value(json_object_get(j, "bad_error")),
	                "task_submit: the payload is not JSON");
	assert_int_equal(json_integer_value(json_object_get(j, "publish")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "bad_priority")), -1);
	assert_string_equal(json_string_value(json_object_get(j, "bridge")), "false");
	assert_true(json_is_null(json_object_get(j, "missing")));
	json_t *tr = json_object_get(j, "timer_remove");
	assert_int_equal(json_integer_value(json_array_get(tr, 0)), 0);
	assert_int_equal(json_integer_value(json_array_get(tr, 1)), -1);
	assert_true(json_is_true(json_object_get(j, "http")));
	assert_int_equal(json_integer_value(json_object_get(j, "http_cancel")), 0);
	assert_string_equal(json_string_value(json_object_get(j, "quoted")), "a\"b");
	assert_string_equal(json_string_value(json_object_get(j, "api")), DREAMOS_EXT_API_VERSION);
	assert_string_equal(json_string_value(json_object_get(j, "self")), "counter");
	json_decref(j);
	json_t *task = run_json(f, "task show 1");
	assert_string_equal(json_string_value(json_object_get(task, "submitter")), "counter");
	assert_string_equal(json_string_value(json_object_get(task, "state")), "cancelled");
	json_decref(task);
	assert_int_equal(outbound_pending(orch_outbound(f->orch)), 0);
	spin(f, 50);
	assert_int_equal(log_seq(f, "a cancelled request answered"), 0);
	assert_non_null(log_seq(f, "misc done"));
	struct ext_counts c;
	ext_counts(f->es, &c);
	assert_int_equal(c.timers, 1); /* the tick only */

	/* Unregistering one command keeps the others; unregistering the
	 * agent type stops its agent. */
	char *t = ok(f, "counter drop");
	assert_contains(t, "dropped");
	free(t);
	char *err = fails(f, "counter-send tally 1");
	assert_contains(err, "unknown command");
	free(err);
	ok_(f, "counter-wait 1");
	wait_agent_state(f, "tally", AGENT_STOPPED);
	ext_counts(f->es, &c);
	assert_int_equal(c.commands, 3);
	assert_int_equal(c.agent_types, 0);
	assert_int_equal(c.agents, 0);
}

struct thread_arg {
	struct dreamos_ext *x;
	int rc;
	char *kv;
};

static void *
thread_main(void *p)
{
	struct thread_arg *ta = p;
	ta->rc = ext_host_table.kv_set(ta->x, "from-thread", "no");
	ta->kv = ext_host_table.kv_get(ta->x, "from-thread");
	return NULL;
}

/* Host functions refuse to run on another thread. */
static void
test_threads_refused(void **state)
{
	struct fixture *f = *state;
	install(f, "counter.so", "counter.so");
	ok_(f, "ext load counter");
	struct thread_arg ta = {.x = ext_find(f->es, "counter")};
	assert_non_null(ta.x);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, thread_main, &ta), 0);
	pthread_join(th, NULL);
	assert_int_equal(ta.rc, -1);
	assert_null(ta.kv);
	assert_null(store_kv_get(orch_store(f->orch), "counter", "from-thread"));
	/* On the loop's thread it works, in the extension's namespace only. */
	assert_int_equal(ext_host_table.kv_set(ta.x, "k", "v"), 0);
	char *v = store_kv_get(orch_store(f->orch), "counter", "k");
	assert_string_equal(v, "v");
	free(v);
	assert_int_equal(ext_host_table.kv_set(ta.x, "", "v"), -1);
	assert_contains(ext_host_table.last_error(ta.x), "keys are 1 to 256 bytes");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_load_and_commands, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_type, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hot_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependencies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dependency_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_methods, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unload_sweeps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_config_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_events, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_calls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
