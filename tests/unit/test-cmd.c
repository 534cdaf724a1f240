/* test-cmd.c — the command layer: splitting, lookup by exact name and
 * unique prefix, option parsing, rendering, completion, and built-in
 * commands run against a real orchestrator in a temporary runtime. */
#include "testutil.h"

#include <uv.h>

#include "bus.h"
#include "cmd.h"
#include "orch.h"

/* ---- a test table ------------------------------------------------------ */

static enum cmd_retval
echo_exec(struct cmd_ctx *ctx)
{
	json_t *r = json_object();
	json_t *args = json_array();
	for (int i = 0; i < ctx->argc; i++)
		json_array_append_new(args, json_string(ctx->argv[i]));
	json_object_set_new(r, "args", args);
	json_object_set(r, "opts", ctx->opts);
	return cmd_result(ctx, r);
}

static const struct cmd_opt echo_opts[] = {
    {"priority", OPT_VALUE, "P", "priority"},
    {"cap", OPT_MULTI, "C", NULL},
    {"force", OPT_FLAG, NULL, NULL},
    {"limit", OPT_VALUE, "N", NULL},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_entry test_entries[] = {
    {.name = "agent list", .help = "List.", .max_args = 0, .exec = echo_exec},
    {.name = "agent info", .usage = "NAME", .min_args = 1, .max_args = 1, .exec = echo_exec},
    {.name = "agent spawn",
     .usage = "NAME [--cap C]... -- PROGRAM [ARG...]",
     .min_args = 1,
     .max_args = -1,
     .opts = echo_opts,
     .exec = echo_exec},
    {.name = "audit", .max_args = 0, .exec = echo_exec},
    {.name = "history", .usage = "[NAME]", .max_args = 1, .exec = echo_exec},
    {.name = "send",
     .usage = "NAME TEXT...",
     .min_args = 2,
     .max_args = -1,
     .opts = echo_opts,
     .complete_args = "low|lower|high",
     .exec = echo_exec},
    {.name = "sync", .max_args = 0, .exec = echo_exec},
};

static const struct cmd_opt login_opts[] = {
    {"api-key", OPT_VALUE, "K", NULL},
    {"env", OPT_MULTI, "K=V", NULL},
    {"force", OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

/* A result with reals whose shortest form is short but whose 17-digit
 * form is not (0.1 + 0.2, 367.835). */
static enum cmd_retval
gauge_exec(struct cmd_ctx *ctx)
{
	volatile double a = 0.1, b = 0.2;
	return cmd_result(ctx, json_pack("{s:f,s:f}", "sum", a + b, "uptime_s", 367.835));
}

/* Registered into a real orchestrator (whose table has the real "agent"). */
static const struct cmd_entry robot_entries[] = {
    {.name = "robot gauge", .max_args = 0, .exec = gauge_exec},
    {.name = "robot info", .usage = "NAME", .min_args = 1, .max_args = 1, .exec = echo_exec},
    {.name = "robot spawn",
     .usage = "NAME [--cap C]... -- PROGRAM [ARG...]",
     .min_args = 1,
     .max_args = -1,
     .opts = echo_opts,
     .exec = echo_exec},
    {.name = "robot login",
     .usage = "NAME [--api-key K] [--env K=V]... [--force] [-- ARG...]",
     .min_args = 1,
     .max_args = -1,
     .opts = login_opts,
     .role = ROLE_OPERATOR,
     .exec = echo_exec},
};

static struct cmd_table *
test_table(void)
{
	struct cmd_table *t = cmd_table_new();
	assert_int_equal(cmd_register(t, test_entries, nitems(test_entries), "test"), 0);
	return t;
}

/* Looks up line in t; returns the entry name or the error text (static). */
static const char *
lookup(struct cmd_table *t, const char *line, int *consumed)
{
	static char out[256];
	int argc;
	char **argv;
	char *cause = NULL;
	assert_int_equal(cmd_split(line, &argc, &argv, &cause), 0);
	const struct cmd_entry *e = cmd_find(t, argc, argv, consumed, &cause);
	snprintf(out, sizeof out, "%s", e ? e->name : cause);
	free(cause);
	cmd_free_argv(argc, argv);
	return out;
}

static void
test_split(void **state)
{
	int argc;
	char **argv;
	char *cause = NULL;

	assert_int_equal(cmd_split("  send  greeter 'hello world' \"a \\\"b\\\"\" c\\ d ''", &argc,
	                           &argv, &cause),
	                 0);
	assert_int_equal(argc, 6);
	assert_string_equal(argv[0], "send");
	assert_string_equal(argv[1], "greeter");
	assert_string_equal(argv[2], "hello world");
	assert_string_equal(argv[3], "a \"b\"");
	assert_string_equal(argv[4], "c d");
	assert_string_equal(argv[5], "");
	assert_null(argv[6]);
	cmd_free_argv(argc, argv);

	assert_int_equal(cmd_split("", &argc, &argv, &cause), 0);
	assert_int_equal(argc, 0);
	cmd_free_argv(argc, argv);

	assert_int_equal(cmd_split("send 'oops", &argc, &argv, &cause), -1);
	assert_string_equal(cause, "unterminated single quote");
	free(cause);
	assert_int_equal(cmd_split("send \"oops", &argc, &argv, &cause), -1);
	assert_string_equal(cause, "unterminated double quote");
	free(cause);
	assert_int_equal(cmd_split("send x\\", &argc, &argv, &cause), -1);
	assert_string_equal(cause, "trailing backslash");
	free(cause);
}

static void
test_lookup(void **state)
{
	struct cmd_table *t = test_table();
	int consumed = 0;

	assert_string_equal(lookup(t, "agent list", &consumed), "agent list");
	assert_int_equal(consumed, 2);
	assert_string_equal(lookup(t, "ag l", &consumed), "agent list");
	assert_string_equal(lookup(t, "agent i bob", &consumed), "agent info");
	assert_string_equal(lookup(t, "sen bob hi", &consumed), "send");
	assert_int_equal(consumed, 1);
	assert_string_equal(lookup(t, "history", &consumed), "history");
	assert_string_equal(lookup(t, "a", &consumed),
	                    "ambiguous command: a, could be: agent, audit");
	assert_string_equal(lookup(t, "s x", &consumed),
	                    "ambiguous command: s, could be: send, sync");
	assert_string_equal(lookup(t, "frobnicate", &consumed),
	                    "unknown command: frobnicate (try 'help')");
	assert_string_equal(lookup(t, "agent", &consumed),
	                    "agent: missing subcommand (one of: list, info, spawn)");
	assert_string_equal(lookup(t, "agent zap", &consumed),
	                    "agent: unknown subcommand 'zap' (one of: list, info, spawn)");
	/* Exact beats prefix: "sync" is not ambiguous with nothing else. */
	assert_string_equal(lookup(t, "sync", &consumed), "sync");

	/* Registering a taken name fails and adds nothing. */
	size_t before = cmd_table_count(t);
	assert_int_equal(cmd_register(t, test_entries, 1, "other"), -1);
	assert_int_equal(cmd_table_count(t), before);
	assert_int_equal(cmd_unregister_owner(t, "test"), nitems(test_entries));
	assert_int_equal(cmd_table_count(t), 0);
	cmd_table_free(t);
}

static void
add_word(const char *w, void *arg)
{
	struct buf *b = arg;
	buf_addf(b, "%s%s", b->len ? " " : "", w);
}

/* Completes the last word of line (which may be empty) against t. */
static char *
complete(struct cmd_table *t, const char *line)
{
	int argc;
	char **argv;
	char *cause = NULL;
	struct buf b;
	buf_init(&b);
	assert_int_equal(cmd_split(line, &argc, &argv, &cause), 0);
	size_t n = strlen(line);
	const char *partial = "";
	int words = argc;
	if (n > 0 && line[n - 1] != ' ') {
		partial = argv[argc - 1];
		words = argc - 1;
	}
	cmd_complete(t, NULL, words, argv, partial, add_word, &b);
	cmd_free_argv(argc, argv);
	return b.data ? b.data : strdup("");
}

static void
test_complete(void **state)
{
	struct cmd_table *t = test_table();
	char *s;

	s = complete(t, "ag");
	assert_string_equal(s, "agent");
	free(s);
	s = complete(t, "s");
	assert_string_equal(s, "send sync");
	free(s);
	s = complete(t, "agent ");
	assert_string_equal(s, "list info spawn");
	free(s);
	s = complete(t, "agent sp");
	assert_string_equal(s, "spawn");
	free(s);
	s = complete(t, "send bob --pri");
	assert_string_equal(s, "--priority");
	free(s);
	s = complete(t, "send bob --priority u");
	assert_string_equal(s, "urgent");
	free(s);
	s = complete(t, "send lo");
	assert_string_equal(s, "low lower");
	free(s);
	cmd_table_free(t);
}

static void
test_render(void **state)
{
	struct buf b;
	buf_init(&b);
	json_t *rows =
	    json_pack("[{s:s,s:i},{s:s,s:i}]", "name", "alpha", "n", 1, "name", "b", "n", 22);
	cmd_render_generic(rows, &b);
	assert_string_equal(b.data, "NAME   N\nalpha  1\nb      22\n");
	json_decref(rows);
	buf_free(&b);

	json_t *msg = json_pack("{s:s}", "message", "done");
	cmd_render_generic(msg, &b);
	assert_string_equal(b.data, "done\n");
	json_decref(msg);
	buf_free(&b);

	json_t *obj = json_pack("{s:s,s:b,s:{s:i}}", "a", "x", "flag", 1, "sub", "k", 3);
	cmd_render_generic(obj, &b);
	assert_string_equal(b.data, "a     x\nflag  yes\nsub:\n  k  3\n");
	json_decref(obj);
	buf_free(&b);
}

/* ---- against a real orchestrator -------------------------------------- */

struct fixture {
	char *dir;
	uv_loop_t loop;
	struct orch *orch;
};

static int
setup_orch(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	f->dir = testutil_tmpdir();
	uv_loop_init(&f->loop);
	struct orch_opts o = {.runtime = f->dir, .bridge_port = -1, .mode = "test"};
	char *cause = NULL;
	setenv("DREAMOS_CONFIG", "", 1);
	setenv("XDG_CONFIG_HOME", f->dir, 1);
	int rc = orch_new(&f->orch, &f->loop, &o, &cause);
	if (rc != 0)
		fprintf(stderr, "orch_new: %s\n", cause);
	assert_int_equal(rc, 0);
	assert_int_equal(
	    cmd_register(orch_cmds(f->orch), robot_entries, nitems(robot_entries), "test"), 0);
	*state = f;
	return 0;
}

static int
teardown_orch(void **state)
{
	struct fixture *f = *state;
	orch_free(f->orch);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	testutil_rmdir(f->dir);
	free(f);
	return 0;
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

/* Runs line on f's orchestrator and returns the outcome (free its strings). */
static struct outcome
run(struct fixture *f, const char *line)
{
	struct outcome o = {0};
	cmd_run_line(f->orch, line, CLIENT_INTERNAL, "test", ROLE_CAPTAIN, capture_done, NULL, &o);
	assert_int_equal(o.calls, 1);
	return o;
}

static void
outcome_free(struct outcome *o)
{
	free(o->text);
	free(o->error);
}

static void
test_options(void **state)
{
	struct fixture *f = *state;
	struct outcome o = run(f, "robot spawn w1 --cap a --cap=b --force --priority high -- "
	                          "prog --cap x");
	assert_int_equal(o.status, CMD_OK);
	outcome_free(&o);

	o = run(f, "robot spawn w1 --cap a --cap=b --force --priority high -- prog --cap x --json");
	assert_int_equal(o.status, CMD_OK);
	/* --json after -- belongs to the program, so output is text */
	assert_null(strstr(o.text, "\"args\""));
	outcome_free(&o);

	o = run(f, "--json robot spawn w1 --cap a --cap=b --force --priority high -- prog --cap "
	           "x");
	/* --json first is not a command */
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);

	o = run(f, "robot spawn w1 --json --cap a --cap=b --priority low --priority high -- prog "
	           "--cap x");
	assert_int_equal(o.status, CMD_OK);
	json_t *r = json_loads(o.text, 0, NULL);
	assert_non_null(r);
	json_t *args = json_object_get(r, "args");
	assert_int_equal(json_array_size(args), 4);
	assert_string_equal(json_string_value(json_array_get(args, 0)), "w1");
	assert_string_equal(json_string_value(json_array_get(args, 1)), "prog");
	assert_string_equal(json_string_value(json_array_get(args, 3)), "x");
	json_t *opts = json_object_get(r, "opts");
	assert_int_equal(json_array_size(json_object_get(opts, "cap")), 2);
	assert_string_equal(json_string_value(json_object_get(opts, "priority")), "high");
	json_decref(r);
	outcome_free(&o);

	o = run(f, "robot spawn w1 --bogus");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "robot spawn: unknown option --bogus (try 'help robot "
	                             "spawn')");
	outcome_free(&o);

	o = run(f, "robot spawn w1 --priority");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "robot spawn: option --priority needs a value P");
	outcome_free(&o);

	o = run(f, "robot spawn w1 --force=yes");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);

	o = run(f, "robot info");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "robot info: missing argument (usage: robot info NAME)");
	outcome_free(&o);

	o = run(f, "robot info a b");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "robot info: too many arguments (usage: robot info NAME)");
	outcome_free(&o);

	o = run(f, "nosuch --json");
	assert_int_equal(o.status, CMD_USAGE);
	r = json_loads(o.text, 0, NULL);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(r, "error"), "message")),
	    "unknown command: nosuch (try 'help')");
	json_decref(r);
	outcome_free(&o);

	o = run(f, "   ");
	assert_int_equal(o.status, CMD_OK);
	assert_string_equal(o.text, "");
	outcome_free(&o);

	o = run(f, "robot info --help");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "usage: robot info NAME"));
	outcome_free(&o);
}

/* Reals are shown to 15 significant digits, in --json and in text. */
static void
test_reals(void **state)
{
	struct fixture *f = *state;
	struct outcome o = run(f, "robot gauge --json");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "\"sum\": 0.3,"));
	assert_non_null(strstr(o.text, "\"uptime_s\": 367.835\n"));
	outcome_free(&o);
	o = run(f, "robot gauge");
	assert_int_equal(o.status, CMD_OK);
	assert_null(strstr(o.text, "0000000"));
	assert_non_null(strstr(o.text, "367.835"));
	outcome_free(&o);
}

static void
test_builtin_status(void **state)
{
	struct fixture *f = *state;
	struct outcome o = run(f, "status --json");
	assert_int_equal(o.status, CMD_OK);
	json_t *r = json_loads(o.text, 0, NULL);
	assert_non_null(r);
	assert_int_equal(json_integer_value(json_object_get(r, "pid")), getpid());
	assert_string_equal(json_string_value(json_object_get(r, "runtime")), f->dir);
	assert_string_equal(json_string_value(json_object_get(json_object_get(r, "db"), "state")),
	                    "ok");
	json_decref(r);
	outcome_free(&o);

	o = run(f, "st");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "runtime   "));
	assert_non_null(strstr(o.text, f->dir));
	outcome_free(&o);
}

static void
test_builtin_help(void **state)
{
	struct fixture *f = *state;
	struct outcome o = run(f, "help");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "status"));
	assert_non_null(strstr(o.text, "log level [LEVEL]"));

	/* A summary is the first sentence: a dotted setting or "e.g." inside
	 * does not end it. */
	assert_non_null(strstr(o.text, "not acked after bus.max_attempts\n"));
	assert_non_null(strstr(o.text, "why it waits (e.g. \"no capable agent\")\n"));
	assert_non_null(strstr(o.text, "redelivered after bus.ack_timeout\n"));
	outcome_free(&o);

	o = run(f, "help log level");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "usage: log level [LEVEL]"));
	outcome_free(&o);

	/* A group: its commands, and only those. */
	o = run(f, "help dead");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "dead list [--limit N]"));
	assert_non_null(strstr(o.text, "dead requeue ID"));
	assert_null(strstr(o.text, "status"));
	outcome_free(&o);

	o = run(f, "help nosuch");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "help: unknown command: nosuch (try 'help')");
	outcome_free(&o);

	/* chaos alone is the status, listed once as that, not a second time
	 * as an umbrella of the chaos commands. */
	o = run(f, "help");
	assert_null(strstr(o.text, "chaos kill|"));
	assert_non_null(strstr(o.text, "  chaos  "));
	assert_non_null(strstr(o.text, "Shows the chaos in force, as 'chaos status' does\n"));
	outcome_free(&o);

	/* Every option a command takes is in its usage line (captain took
	 * send's --mode and --body, which it ignores). */
	struct cmd_table *t = orch_cmds(f->orch);
	for (size_t i = 0; i < cmd_table_count(t); i++) {
		const struct cmd_entry *e = cmd_table_get(t, i);
		if (strcmp(cmd_table_owner(t, i), "test") == 0)
			continue;
		for (const struct cmd_opt *op = e->opts; op != NULL && op->name != NULL; op++) {
			char *want = xasprintf("--%s", op->name);
			if (strstr(e->usage, want) == NULL)
				fail_msg("%s: --%s is not in its usage '%s'", e->name, op->name,
				         e->usage);
			free(want);
		}
	}
}

/* `X --help` prints exactly what `help X` prints, text and JSON, for every
 * command (those whose arguments are all optional printed their own
 * renderer's garbage), and never runs X. */
static void
test_help_flag(void **state)
{
	struct fixture *f = *state;
	struct cmd_table *t = orch_cmds(f->orch);
	for (size_t i = 0; i < cmd_table_count(t); i++) {
		const char *name = cmd_table_get(t, i)->name;
		for (int json = 0; json < 2; json++) {
			char *flag = xasprintf("%s --help%s", name, json ? " --json" : "");
			char *cmd = xasprintf("help %s%s", name, json ? " --json" : "");
			struct outcome a = run(f, flag), b = run(f, cmd);
			assert_int_equal(a.status, CMD_OK);
			assert_int_equal(b.status, CMD_OK);
			assert_string_equal(a.text, b.text);
			outcome_free(&a);
			outcome_free(&b);
			free(flag);
			free(cmd);
		}
	}

	struct outcome o = run(f, "status --help");
	assert_string_equal(o.text, "usage: status\n\nShows the instance: version, pid, uptime, "
	                            "runtime directory, database size and state, counts of "
	                            "agents, messages, tasks and log records, the Bridge "
	                            "address.\n  --json  print the result as one JSON document\n");
	outcome_free(&o);
	o = run(f, "send --help");
	assert_non_null(strstr(o.text, "usage: send NAME TEXT..."));
	outcome_free(&o);
	o = run(f, "task list --help");
	assert_non_null(strstr(o.text, "usage: task list"));
	outcome_free(&o);

	/* Nothing ran: no task was added, no command counted or audited. */
	o = run(f, "task add --help");
	assert_non_null(strstr(o.text, "usage: task add TITLE..."));
	outcome_free(&o);
	o = run(f, "task add x --priority high --help");
	assert_int_equal(o.status, CMD_OK);
	outcome_free(&o);
	o = run(f, "task list --json");
	assert_string_equal(o.text, "[]\n");
	outcome_free(&o);
	o = run(f, "audit --json");
	assert_null(strstr(o.text, "task add"));
	outcome_free(&o);
}

/* Runs line and the loop until an asynchronous command has finished. */
static struct outcome
run_async(struct fixture *f, const char *line)
{
	struct outcome o = {0};
	cmd_run_line(f->orch, line, CLIENT_INTERNAL, "test", ROLE_CAPTAIN, capture_done, NULL, &o);
	for (int i = 0; i < 5000 && o.calls == 0; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(o.calls, 1);
	return o;
}

/* The "command" rows of the audit log as "DETAIL yes|no" lines. */
static char *
audit_commands(struct fixture *f)
{
	struct outcome o = run(f, "audit --json --limit 1000");
	json_t *rows = json_loads(o.text, 0, NULL);
	assert_non_null(rows);
	struct buf b;
	buf_init(&b);
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r)
	{
		if (strcmp(json_string_value(json_object_get(r, "action")), "command") == 0)
			buf_addf(&b, "%s %s\n", json_string_value(json_object_get(r, "detail")),
			         json_is_true(json_object_get(r, "ok")) ? "yes" : "no");
	}
	json_decref(rows);
	outcome_free(&o);
	return b.data ? b.data : xstrdup("");
}

/* A command is audited once its outcome is known, failed ones as failed,
 * asynchronous ones when they finish, with every word the user gave
 * (options too) but no secret; the chain stays intact. */
static void
test_audit(void **state)
{
	struct fixture *f = *state;
	static const char *const lines[] = {
	    "log level verbose",
	    "apikey create nonrole",
	    "apikey revoke 999",
	    "task add big job --priority ultra",
	    "log level warn --json",
	    "robot login r1 --api-key=abc --env API_TOKEN=xyz --env HOME=/h --force --api-key "
	    "def -- --api-key literal",
	    "robot login 'the sekrit-value-123 here' \"it's\"",
	};
	for (size_t i = 0; i < nitems(lines); i++) {
		struct outcome o = run(f, lines[i]);
		outcome_free(&o);
	}
	struct outcome o = run_async(f, "task add 'big job' --priority high --retries 2");
	assert_int_equal(o.status, CMD_OK);
	outcome_free(&o);
	logmgr_add_secret(orch_log(f->orch), "sekrit-value-123");
	o = run(f, "robot login 'the sekrit-value-123 here'");
	outcome_free(&o);
	o = run(f, "apikey create ops --role operator --json");
	assert_int_equal(o.status, CMD_OK);
	json_t *r = json_loads(o.text, 0, NULL);
	char *key = xstrdup(json_string_value(json_object_get(r, "key")));
	json_decref(r);
	outcome_free(&o);

	char *got = audit_commands(f);
	assert_string_equal(
	    got, "log level verbose no\n"
	         "apikey create nonrole no\n"
	         "apikey revoke 999 no\n"
	         "task add big job --priority ultra no\n"
	         "log level warn --json yes\n"
	         "robot login r1 --api-key=[redacted] --env API_TOKEN=[redacted] --env HOME=/h "
	         "--force --api-key [redacted] -- --api-key literal yes\n"
	         "robot login 'the sekrit-value-123 here' \"it's\" yes\n"
	         "task add 'big job' --priority high --retries 2 yes\n"
	         "robot login 'the [redacted] here' yes\n"
	         "apikey create ops --role operator --json yes\n");
	free(got);
	/* The key printed once is nowhere in the audit log. */
	o = run(f, "audit --json --limit 1000");
	assert_null(strstr(o.text, key));
	outcome_free(&o);
	free(key);

	o = run(f, "audit verify --json");
	assert_int_equal(o.status, CMD_OK);
	r = json_loads(o.text, 0, NULL);
	json_int_t rows = json_integer_value(json_object_get(r, "rows"));
	assert_true(rows >= 13);
	char want[64];
	snprintf(want, sizeof want, "audit chain intact: %lld rows verified", (long long)rows);
	assert_string_equal(json_string_value(json_object_get(r, "message")), want);
	json_decref(r);
	outcome_free(&o);
	o = run(f, "audit verify");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "rows verified\n"));
	outcome_free(&o);
}

/* What the prompt keeps of a typed line: the audit's redaction when the
 * line holds a secret, else nothing (the line is kept as typed). */
static void
test_line_redacted(void **state)
{
	struct fixture *f = *state;
	char *r = cmd_line_redacted(f->orch, "robot login r1 --env API_TOKEN=xyz --force");
	assert_string_equal(r, "robot login r1 --env API_TOKEN=[redacted] --force");
	free(r);
	r = cmd_line_redacted(f->orch, "robot login r1 --api-key 'two words'");
	assert_string_equal(r, "robot login r1 --api-key [redacted]");
	free(r);
	assert_null(cmd_line_redacted(f->orch, "robot login r1 --env HOME=/h  'as  typed'"));
	assert_null(cmd_line_redacted(f->orch, "robot login 'unterminated"));
	assert_null(cmd_line_redacted(f->orch, "nosuchcommand --env HOME=/h --force x"));
	assert_null(cmd_line_redacted(f->orch, ""));
	/* No command: a typo in its name, a quote left open.  Word by word,
	 * as typed; an option named like a secret is taken to have a value. */
	static const char *const raw[][2] = {
	    {"nosuchcommand --api-key abc", "nosuchcommand --api-key [redacted]"},
	    {"robt login r1  --env API_TOKEN=xyz -- prog",
	     "robt login r1  --env API_TOKEN=[redacted] -- prog"},
	    {"robot login r1 --api-key 'sk-abc", "robot login r1 --api-key [redacted]"},
	    {"robot login r1 --api-key=sk-abc 'x", "robot login r1 --api-key=[redacted] 'x"},
	    {"robot login 'x --env=PASSWORD=hunter2", "robot login 'x --env=PASSWORD=[redacted]"},
	    {"nosuchcommand --token", "nosuchcommand --token"},
	    /* A quoted value takes its spaces with it, closed or not. */
	    {"robt login r1 --api-key 'two words' --force",
	     "robt login r1 --api-key [redacted] --force"},
	    {"robt login r1 --api-key=\"two words\" x", "robt login r1 --api-key=[redacted] x"},
	    {"robt login r1 --env \"API_TOKEN=two words\" x",
	     "robt login r1 --env \"API_TOKEN=[redacted] x"},
	    {"robot login r1 --api-key 'sk abc --force", "robot login r1 --api-key [redacted]"},
	    {"robot login 'x --api-key \"a b\" y", "robot login 'x --api-key [redacted] y"},
	    {"robt login --env HOME='/h x' y", "robt login --env HOME='/h x' y"},
	};
	for (size_t i = 0; i < nitems(raw); i++) {
		r = cmd_line_redacted(f->orch, raw[i][0]);
		if (strcmp(raw[i][0], raw[i][1]) == 0) {
			assert_null(r);
			continue;
		}
		assert_non_null(r);
		assert_string_equal(r, raw[i][1]);
		free(r);
	}
}

static void
sent(void *arg, int64_t id, int n, const char *code, const char *detail)
{
	*(int64_t *)arg = id;
}

/* Errors say what is wrong and what would do, the same way everywhere. */
static void
test_error_messages(void **state)
{
	struct fixture *f = *state;
	static const char *const cases[][2] = {
	    {"agent list --state bogus", "agent list: unknown state 'bogus' (starting, ready, "
	                                 "busy, paused, unhealthy, backoff, "
	                                 "stopping, stopped, failed)"},
	    {"task list --state bogus",
	     "task list: unknown state 'bogus' (queued, blocked, assigned, running, failed, done, "
	     "dead, cancelled, active)"},
	    {"history --mode bogus",
	     "history: unknown mode 'bogus' (NORMAL, TASK, SYSTEM, CAPTAIN, SYNC, VERIFY, REPAIR, "
	     "BACKUP, RESTORE, CLEANUP, INTEGRATE)"},
	    {"send x hi --mode bogus",
	     "send: unknown mode 'bogus' (NORMAL, TASK, SYSTEM, CAPTAIN, SYNC, VERIFY, REPAIR, "
	     "BACKUP, RESTORE, CLEANUP, INTEGRATE)"},
	    {"task add --timeout 0 zero", "task add: --timeout must be positive, got '0'"},
	    {"task add --timeout soon x",
	     "task add: --timeout expects a duration like 30s (at most 100 years), got 'soon'"},
	};
	for (size_t i = 0; i < nitems(cases); i++) {
		struct outcome o = run(f, cases[i][0]);
		assert_int_equal(o.status, CMD_USAGE);
		assert_string_equal(o.error, cases[i][1]);
		outcome_free(&o);
	}

	/* history of a name: no such agent and nothing mentions it is an
	 * error, as for send; the captain, or a name only messages mention
	 * (an agent since removed), is history, empty or not. */
	struct outcome o = run(f, "history nosuchagent");
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "history: no agent named 'nosuchagent' and no message from "
	                             "or to it (see 'agent list')");
	outcome_free(&o);
	o = run(f, "history captain");
	assert_int_equal(o.status, CMD_OK);
	assert_string_equal(o.text, "(no messages)\n");
	outcome_free(&o);
	int64_t id = 0;
	struct bus_send_req req = {.from = "ghost", .to = "captain", .body = "\"boo\""};
	bus_send(orch_bus(f->orch), &req, sent, &id);
	for (int i = 0; i < 5000 && id == 0; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(id > 0);
	o = run(f, "history ghost");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "ghost -> captain"));
	outcome_free(&o);
	o = run(f, "history ghost --grep nothing-like-it");
	assert_int_equal(o.status, CMD_OK);
	assert_string_equal(o.text, "(no messages)\n");
	outcome_free(&o);
}

static void
test_builtin_logs(void **state)
{
	struct fixture *f = *state;
	log_warn(orch_log(f->orch), "unit", "something odd %d", 42);
	log_info(orch_log(f->orch), "unit", "all fine");
	log_error(orch_log(f->orch), "other", "broken");

	struct outcome o = run(f, "logs --source unit --level warn --json");
	assert_int_equal(o.status, CMD_OK);
	json_t *r = json_loads(o.text, 0, NULL);
	assert_int_equal(json_array_size(r), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "msg")),
	                    "something odd 42");
	json_decref(r);
	outcome_free(&o);

	o = run(f, "logs --grep broken");
	assert_int_equal(o.status, CMD_OK);
	assert_non_null(strstr(o.text, "ERROR other: broken"));
	outcome_free(&o);

	o = run(f, "logs --level loud");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);
	o = run(f, "logs --limit 0");
	assert_int_equal(o.status, CMD_USAGE);
	assert_string_equal(o.error, "logs: --limit must be between 1 and 100000, got 0");
	outcome_free(&o);
	o = run(f, "logs --limit ten");
	assert_int_equal(o.status, CMD_USAGE);
	outcome_free(&o);

	o = run(f, "log level debug");
	assert_int_equal(o.status, CMD_OK);
	assert_string_equal(o.text, "log level: debug (was info)\n");
	assert_int_equal(logmgr_level(orch_log(f->orch)), LVL_DEBUG);
	outcome_free(&o);
	o = run(f, "log level shout");
	assert_int_equal(o.status, CMD_USAGE);
	assert_int_equal(logmgr_level(orch_log(f->orch)), LVL_DEBUG);
	outcome_free(&o);
}

static void
test_role(void **state)
{
	struct fixture *f = *state;
	struct outcome o = {0};
	cmd_run_line(f->orch, "quit", CLIENT_BRIDGE, "bridge:obs", ROLE_OBSERVER, capture_done,
	             NULL, &o);
	assert_int_equal(o.status, CMD_ERROR);
	assert_string_equal(o.error, "quit: permission denied (needs role captain)");
	assert_false(orch_quitting(f->orch));
	outcome_free(&o);
}

/* An error that quotes invalid UTF-8 or a line break the user typed (in
 * quotes) is still one line, and renders as JSON (found by fuzz-cmd: the
 * JSON output was "(null)"). */
static void
test_error_clean_line(void **state)
{
	struct fixture *f = *state;
	struct outcome o = run(f, "stat\xf7\xf7x --json");
	assert_int_equal(o.status, CMD_USAGE);
	json_t *r = json_loads(o.text, 0, NULL);
	assert_non_null(r);
	const char *msg =
	    json_string_value(json_object_get(json_object_get(r, "error"), "message"));
	assert_non_null(msg);
	assert_non_null(strstr(msg, "stat??x"));
	assert_non_null(strstr(o.error, "stat??x"));
	json_decref(r);
	outcome_free(&o);

	o = run(f, "'a\nb\tc' x");
	assert_int_equal(o.status, CMD_USAGE);
	assert_non_null(strstr(o.error, "a?b?c"));
	assert_null(strchr(o.error, '\n'));
	outcome_free(&o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_split),
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_complete),
	    cmocka_unit_test(test_render),
	    cmocka_unit_test_setup_teardown(test_options, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_reals, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_builtin_status, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_builtin_help, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_help_flag, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_audit, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_line_redacted, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_error_messages, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_builtin_logs, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_role, setup_orch, teardown_orch),
	    cmocka_unit_test_setup_teardown(test_error_clean_line, setup_orch, teardown_orch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
