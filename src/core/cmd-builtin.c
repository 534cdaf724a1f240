/* cmd-builtin.c — the core's own captain commands: help, status, logs,
 * log level, quit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "orch.h"

/* ---- help ------------------------------------------------------------- */

/* The length of a help text's first sentence, without its period: it ends
 * at a line break, at the end, or at a period followed by spaces and a
 * capital.  So "bus.max_attempts", "document.body" and "(e.g. \"x\")" do
 * not end it. */
static size_t
help_summary_len(const char *help)
{
	for (size_t i = 0;; i++) {
		char c = help[i];
		if (c == '\0' || c == '\n')
			return i;
		if (c != '.')
			continue;
		size_t k = i + 1;
		while (help[k] == ' ')
			k++;
		char n = help[k];
		if (n == '\0' || n == '\n' || (k > i + 1 && n >= 'A' && n <= 'Z'))
			return i;
	}
}

/* The commands whose names start with prefix ("" for all): name, usage,
 * first sentence, owner. */
static json_t *
help_list(struct cmd_table *t, const char *prefix)
{
	json_t *list = json_array();
	size_t pl = strlen(prefix);
	for (size_t i = 0; i < cmd_table_count(t); i++) {
		const struct cmd_entry *e = cmd_table_get(t, i);
		if (strncmp(e->name, prefix, pl) != 0)
			continue;
		char *u = cmd_usage_line(e);
		const char *help = e->help ? e->help : "";
		json_t *summary = json_stringn(help, help_summary_len(help));
		json_array_append_new(list, json_pack("{s:s,s:s,s:o,s:s}", "name", e->name, "usage",
		                                      u, "summary", summary, "owner",
		                                      cmd_table_owner(t, i)));
		free(u);
	}
	return list;
}

static enum cmd_retval
cmd_help_exec(struct cmd_ctx *ctx)
{
	struct cmd_table *t = orch_cmds(ctx->orch);
	if (ctx->argc == 0)
		return cmd_result(ctx, json_pack("{s:o}", "commands", help_list(t, "")));
	int consumed = 0;
	char *cause = NULL;
	const struct cmd_entry *e = cmd_find(t, ctx->argc, ctx->argv, &consumed, &cause);
	if (e == NULL) {
		/* "help dead": a group's commands ("dead list", "dead requeue"). */
		struct buf prefix = {0};
		for (int i = 0; i < ctx->argc; i++)
			buf_addf(&prefix, "%s ", ctx->argv[i]);
		json_t *list = help_list(t, buf_cstr(&prefix));
		buf_free(&prefix);
		if (json_array_size(list) > 0) {
			free(cause);
			return cmd_result(ctx, json_pack("{s:o}", "commands", list));
		}
		json_decref(list);
		enum cmd_retval rv = cmd_usage_error(ctx, "help: %s", cause);
		free(cause);
		return rv;
	}
	char *u = cmd_usage_line(e);
	json_t *opts = json_array();
	for (const struct cmd_opt *o = e->opts; o != NULL && o->name != NULL; o++) {
		json_array_append_new(opts, json_pack("{s:s,s:s?,s:b}", "name", o->name, "arg",
		                                      o->arg, "repeatable", o->kind == OPT_MULTI));
	}
	json_t *r = json_pack("{s:s,s:s,s:s,s:o}", "name", e->name, "usage", u, "help",
	                      e->help ? e->help : "", "options", opts);
	free(u);
	return cmd_result(ctx, r);
}

static void
cmd_help_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	json_t *list = json_object_get(r, "commands");
	if (list != NULL) {
		size_t w = 0, i;
		json_t *c;
		json_array_foreach(list, i, c)
		{
			size_t n = strlen(json_string_value(json_object_get(c, "usage")));
			if (n > w && n < 60)
				w = n;
		}
		buf_adds(out, "Captain commands (help COMMAND for details, --json on any):\n");
		json_array_foreach(list, i, c)
		{
			const char *usage = json_string_value(json_object_get(c, "usage"));
			const char *summary = json_string_value(json_object_get(c, "summary"));
			if (strlen(usage) > w)
				buf_addf(out, "  %s\n  %-*s  %s\n", usage, (int)w, "", summary);
			else
				buf_addf(out, "  %-*s  %s\n", (int)w, usage, summary);
		}
		return;
	}
	buf_addf(out, "usage: %s\n\n%s\n", json_string_value(json_object_get(r, "usage")),
	         json_string_value(json_object_get(r, "help")));
	json_t *opts = json_object_get(r, "options");
	if (json_array_size(opts) > 0) {
		buf_adds(out, "\noptions:\n");
		size_t i;
		json_t *o;
		json_array_foreach(opts, i, o)
		{
			const char *arg = json_string_value(json_object_get(o, "arg"));
			buf_addf(
			    out, "  --%s%s%s%s\n", json_string_value(json_object_get(o, "name")),
			    arg ? " " : "", arg ? arg : "",
			    json_is_true(json_object_get(o, "repeatable")) ? " (repeatable)" : "");
		}
	}
	buf_adds(out, "  --json  print the result as one JSON document\n");
}

/* ---- status ----------------------------------------------------------- */

static enum cmd_retval
cmd_status_exec(struct cmd_ctx *ctx)
{
	return cmd_result(ctx, orch_status_json(ctx->orch));
}

static void
cmd_status_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	char up[32], size[32], wal[32];
	json_t *db = json_object_get(r, "db");
	json_t *counts = json_object_get(r, "counts");
	json_t *bridge = json_object_get(r, "bridge");
	format_duration(json_real_value(json_object_get(r, "uptime_s")), up, sizeof up);
	format_size((uint64_t)json_integer_value(json_object_get(db, "size_bytes")), size,
	            sizeof size);
	buf_addf(out, "dreamos %s, pid %lld, %s mode, up %s (since %s)\n",
	         json_string_value(json_object_get(r, "version")),
	         (long long)json_integer_value(json_object_get(r, "pid")),
	         json_string_value(json_object_get(r, "mode")), up,
	         json_string_value(json_object_get(r, "started")));
	buf_addf(out, "runtime   %s\n", json_string_value(json_object_get(r, "runtime")));
	const char *cfg = json_string_value(json_object_get(r, "config"));
	buf_addf(out, "config    %s\n", cfg ? cfg : "(built-in defaults)");
	/* The WAL can be most of it (it is reused, not shrunk): say so. */
	format_size((uint64_t)json_integer_value(json_object_get(db, "wal_bytes")), wal,
	            sizeof wal);
	buf_addf(out, "database  %s, %s (WAL %s), schema v%lld, %s\n",
	         json_string_value(json_object_get(db, "path")), size, wal,
	         (long long)json_integer_value(json_object_get(db, "schema")),
	         json_string_value(json_object_get(db, "state")));
	buf_addf(out, "agents    %lld up of %lld\n",
	         (long long)json_integer_value(json_object_get(counts, "agents_up")),
	         (long long)json_integer_value(json_object_get(counts, "agents")));
	buf_addf(out,
	         "messages  %lld accepted this run, %lld pending (%lld in flight), %lld dead, last "
	         "id %lld\n",
	         (long long)json_integer_value(json_object_get(counts, "messages")),
	         (long long)json_integer_value(json_object_get(counts, "messages_pending")),
	         (long long)json_integer_value(json_object_get(counts, "messages_inflight")),
	         (long long)json_integer_value(json_object_get(counts, "messages_dead")),
	         (long long)json_integer_value(json_object_get(counts, "last_message_id")));
	json_t *ts = json_object_get(counts, "task_states");
#define TS(k) ((long long)json_integer_value(json_object_get(ts, (k))))
	buf_addf(out,
	         "tasks     %lld queued, %lld blocked, %lld running, %lld failed, %lld done, %lld "
	         "dead, %lld cancelled\n",
	         TS("queued"), TS("blocked"), TS("assigned") + TS("running"), TS("failed"),
	         TS("done"), TS("dead"), TS("cancelled"));
#undef TS
	buf_addf(out, "logs      %lld records this run\n",
	         (long long)json_integer_value(json_object_get(counts, "log_records")));
	if (json_is_object(bridge))
		buf_addf(out, "bridge    %s\n",
		         json_string_value(json_object_get(bridge, "address")));
	else
		buf_adds(out, "bridge    not running\n");
	buf_addf(out, "log level %s\n", json_string_value(json_object_get(r, "log_level")));
}

/* ---- logs ------------------------------------------------------------- */

static enum cmd_retval
cmd_logs_exec(struct cmd_ctx *ctx)
{
	struct log_query q = {0};
	long limit = 50;
	const char *lv = cmd_opt(ctx, "level");
	const char *since = cmd_opt(ctx, "since");

	if (lv != NULL) {
		if (!log_level_parse(lv, &q.min_level))
			return cmd_usage_error(ctx,
			                       "logs: unknown level '%s' (trace, debug, info, "
			                       "warn, error, fatal)",
			                       lv);
		q.has_level = true;
	}
	if (since != NULL) {
		double secs;
		if (!parse_duration(since, &secs))
			return cmd_usage_error(ctx,
			                       "logs: --since expects a duration like 10m, "
			                       "got '%s'",
			                       since);
		q.since_ms = time_wall_ms() - (int64_t)(secs * 1000.0);
	}
	if (!cmd_opt_int(ctx, "limit", 1, 100000, &limit))
		return CMD_USAGE;
	q.limit = (int)limit;
	q.source = cmd_opt(ctx, "source");
	q.grep = cmd_opt(ctx, "grep");
	char *cause = NULL;
	json_t *rows = logmgr_query(orch_log(ctx->orch), &q, &cause);
	if (rows == NULL) {
		enum cmd_retval rv = cmd_error(ctx, "logs: %s", cause ? cause : "query failed");
		free(cause);
		return rv;
	}
	return cmd_result(ctx, rows);
}

static void
cmd_logs_print(struct cmd_ctx *ctx, const json_t *rows, struct buf *out)
{
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r)
	{
		const char *ts = json_string_value(json_object_get(r, "ts"));
		const char *lvl = json_string_value(json_object_get(r, "level"));
		char up[8] = "";
		for (size_t k = 0; lvl && lvl[k] && k < sizeof up - 1; k++)
			up[k] = (char)(lvl[k] >= 'a' && lvl[k] <= 'z' ? lvl[k] - 32 : lvl[k]);
		const char *src = json_string_value(json_object_get(r, "source"));
		const char *msg = json_string_value(json_object_get(r, "msg"));
		buf_addf(out, "%s %-5s ", ts ? ts : "", up);
		buf_add_visible(out, src ? src : "");
		buf_adds(out, ": ");
		buf_add_visible(out, msg ? msg : "");
		json_t *fields = json_object_get(r, "fields");
		if (json_object_size(fields) > 0) {
			char *f = json_dumps(fields, JSON_COMPACT);
			buf_addf(out, " %s", f);
			free(f);
		}
		buf_adds(out, "\n");
	}
	if (json_array_size(rows) == 0)
		buf_adds(out, "(no matching log records)\n");
}

/* ---- log level -------------------------------------------------------- */

static enum cmd_retval
cmd_log_level_exec(struct cmd_ctx *ctx)
{
	struct logmgr *lm = orch_log(ctx->orch);
	if (ctx->argc == 0)
		return cmd_result(ctx,
		                  json_pack("{s:s}", "level", log_level_name(logmgr_level(lm))));
	enum log_level lv;
	if (!log_level_parse(cmd_arg(ctx, 0), &lv))
		return cmd_usage_error(ctx,
		                       "log level: unknown level '%s' (trace, debug, info, warn, "
		                       "error, fatal)",
		                       cmd_arg(ctx, 0));
	enum log_level old = logmgr_level(lm);
	logmgr_set_level(lm, lv);
	log_info(lm, "captain", "log level changed from %s to %s by %s", log_level_name(old),
	         log_level_name(lv), ctx->client_name);
	return cmd_result(ctx, json_pack("{s:s,s:s,s:s}", "level", log_level_name(lv), "previous",
	                                 log_level_name(old), "message", "log level set"));
}

static void
cmd_log_level_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	const char *prev = json_string_value(json_object_get(r, "previous"));
	if (prev != NULL)
		buf_addf(out, "log level: %s (was %s)\n",
		         json_string_value(json_object_get(r, "level")), prev);
	else
		buf_addf(out, "log level: %s\n", json_string_value(json_object_get(r, "level")));
}

/* ---- quit ------------------------------------------------------------- */

static void
cmd_quit_deferred(uv_timer_t *t)
{
	struct orch *o = t->data;
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
	orch_request_quit(o, "quit command");
}

static enum cmd_retval
cmd_quit_exec(struct cmd_ctx *ctx)
{
	/* Answer first, then stop on the next loop turn, so `ctl quit` gets
	 * its reply before the socket closes. */
	uv_timer_t *t = xmalloc(sizeof *t);
	uv_timer_init(orch_loop(ctx->orch), t);
	t->data = ctx->orch;
	uv_timer_start(t, cmd_quit_deferred, 0, 0);
	return cmd_message(ctx, "shutting down");
}

/* ---- the table -------------------------------------------------------- */

static const struct cmd_opt logs_opts[] = {
    {"level", OPT_VALUE, "LEVEL", "level"}, {"source", OPT_VALUE, "SOURCE", "agent"},
    {"grep", OPT_VALUE, "TEXT", NULL},      {"since", OPT_VALUE, "DURATION", NULL},
    {"limit", OPT_VALUE, "N", NULL},        {NULL, 0, NULL, NULL},
};

const struct cmd_entry cmd_builtin_entries[] = {
    {
        .name = "help",
        .usage = "[COMMAND]",
        .help = "Lists the captain commands, or shows the usage, options and description of "
                "one command, or lists a group's commands (help dead).",
        .min_args = 0,
        .max_args = 2,
        .complete_args = "command",
        .role = ROLE_OBSERVER,
        .exec = cmd_help_exec,
        .print = cmd_help_print,
    },
    {
        .name = "status",
        .usage = "",
        .help = "Shows the instance: version, pid, uptime, runtime directory, database size and "
                "state, counts of agents, messages, tasks and log records, the Bridge address.",
        .min_args = 0,
        .max_args = 0,
        .role = ROLE_OBSERVER,
        .exec = cmd_status_exec,
        .print = cmd_status_print,
    },
    {
        .name = "logs",
        .usage = "[--level L] [--source S] [--grep TEXT] [--since DURATION] [--limit N]",
        .help = "Searches the central log (newest N records, shown oldest first; default 50). "
                "--level keeps records at or above a level, --source one component or agent, "
                "--grep records whose message contains TEXT, --since those younger than a "
                "duration such as 10m.",
        .min_args = 0,
        .max_args = 0,
        .opts = logs_opts,
        .role = ROLE_OBSERVER,
        .exec = cmd_logs_exec,
        .print = cmd_logs_print,
    },
    {
        .name = "log level",
        .usage = "[LEVEL]",
        .help = "Shows or sets the level below which log records are dropped: trace, debug, "
                "info, warn, error or fatal.",
        .min_args = 0,
        .max_args = 1,
        .complete_args = "level",
        .role = ROLE_OPERATOR,
        .exec = cmd_log_level_exec,
        .print = cmd_log_level_print,
    },
    {
        .name = "quit",
        .usage = "",
        .help = "Stops the orchestrator: agents are stopped, the store is flushed, the control "
                "socket and the lock are removed.",
        .min_args = 0,
        .max_args = 0,
        .role = ROLE_CAPTAIN,
        .exec = cmd_quit_exec,
    },
};
const size_t cmd_builtin_count = nitems(cmd_builtin_entries);
