/* cmd-task.c — task add | list | show | cancel | retry. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "orch.h"
#include "store.h"
#include "task.h"

/* Parses a task id argument; sets the usage error and returns 0 if bad. */
static int64_t
cmd_task_id(struct cmd_ctx *ctx, const char *s)
{
	char *end;
	errno = 0;
	long long id = strtoll(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || id <= 0) {
		cmd_usage_error(ctx, "%s: '%s' is not a task id", ctx->entry->name, s);
		return 0;
	}
	return id;
}

/* Finishes `task add` after the group commit: the task is stored, or not. */
static void
cmd_task_add_committed(void *arg, int status)
{
	struct cmd_ctx *ctx = arg;
	if (status != 0) {
		json_int_t id = json_integer_value(json_object_get(ctx->result, "id"));
		json_decref(ctx->result);
		ctx->result = NULL;
		cmd_error(ctx, "task add: task %lld not stored (store failure: %s); add it again",
		          (long long)id, store_state(orch_store(ctx->orch)));
		cmd_ctx_finish(ctx, CMD_ERROR);
		return;
	}
	cmd_ctx_finish(ctx, CMD_OK);
}

static enum cmd_retval
cmd_task_add_exec(struct cmd_ctx *ctx)
{
	struct task_spec spec = {.priority = PRIO_NORMAL, .max_retries = -1};
	const char *p = cmd_opt(ctx, "priority");
	if (p != NULL && !proto_priority_parse(p, &spec.priority))
		return cmd_usage_error(ctx,
		                       "task add: --priority must be low, normal, high or "
		                       "urgent, got '%s'",
		                       p);
	long retries = -1;
	if (!cmd_opt_int(ctx, "retries", 0, 1000, &retries))
		return CMD_USAGE;
	spec.max_retries = (int)retries;
	const char *to = cmd_opt(ctx, "timeout");
	if (to != NULL && !parse_duration(to, &spec.timeout_s))
		return cmd_usage_error(ctx,
		                       "task add: --timeout expects a duration like 30s (at most "
		                       "100 years), got '%s'",
		                       to);
	if (to != NULL && spec.timeout_s <= 0)
		return cmd_usage_error(ctx, "task add: --timeout must be positive, got '%s'", to);
	const char *payload = cmd_opt(ctx, "payload");
	if (payload != NULL) {
		json_error_t err;
		json_t *j = json_loads(payload, JSON_DECODE_ANY, &err);
		if (j == NULL)
			return cmd_usage_error(ctx, "task add: --payload is not JSON: %s",
			                       err.text);
		json_decref(j);
	}
	size_t n = cmd_opt_count(ctx, "after");
	int64_t *after = xcalloc(n + 1, sizeof *after);
	for (size_t i = 0; i < n; i++) {
		after[i] = cmd_task_id(ctx, cmd_opt_at(ctx, "after", i));
		if (after[i] == 0) {
			free(after);
			return CMD_USAGE;
		}
	}
	char *title = cmd_args_join(ctx, 0);
	spec.title = title;
	spec.payload = payload;
	spec.capability = cmd_opt(ctx, "cap");
	spec.after = after;
	spec.nafter = n;
	spec.submitter = "captain";
	char *cause = NULL;
	struct tasks *tm = orch_tasks(ctx->orch);
	struct task *t = tasks_submit(tm, &spec, &cause);
	free(title);
	free(after);
	if (t == NULL) {
		enum cmd_retval rv = cmd_error(ctx, "task add: %s", cause);
		free(cause);
		return rv;
	}
	json_t *r = tasks_show_json(tm, t->id);
	if (r == NULL)
		r = json_pack("{s:I}", "id", (json_int_t)t->id);
	cmd_result(ctx, r);
	/* Answer once the task is durable, like `sent` (a kill -9 or a failed
	 * commit must not lose a task the captain was told about). */
	store_after_commit(orch_store(ctx->orch), cmd_task_add_committed, ctx);
	return CMD_WAIT;
}

static void
cmd_task_add_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	buf_addf(out, "task %lld added (%s",
	         (long long)json_integer_value(json_object_get(r, "id")),
	         json_string_value(json_object_get(r, "state")));
	const char *agent = json_string_value(json_object_get(r, "agent"));
	const char *why = json_string_value(json_object_get(r, "waiting"));
	if (agent != NULL)
		buf_addf(out, " to %s", agent);
	else if (why != NULL)
		buf_addf(out, ": %s", why);
	buf_adds(out, ")\n");
}

static enum cmd_retval
cmd_task_list_exec(struct cmd_ctx *ctx)
{
	long limit = 50;
	if (!cmd_opt_int(ctx, "limit", 1, 100000, &limit))
		return CMD_USAGE;
	const char *state = cmd_opt(ctx, "state");
	enum task_state st;
	if (state != NULL && strcmp(state, "active") != 0 && !task_state_parse(state, &st))
		return cmd_opt_unknown(ctx, "state");
	tasks_sync(orch_tasks(ctx->orch));
	sqlite3_stmt *s = store_stmt(
	    orch_store(ctx->orch),
	    "SELECT id, priority, state, agent, progress, attempt, max_retries, title, capability "
	    "FROM tasks WHERE (?1 IS NULL OR state = ?1) AND (?2 = 0 OR state NOT IN ('done', "
	    "'dead', 'cancelled')) ORDER BY id DESC LIMIT ?3");
	if (s == NULL)
		return cmd_error(ctx, "task list: query failed");
	bool active = state != NULL && strcmp(state, "active") == 0;
	if (state != NULL && !active)
		sqlite3_bind_text(s, 1, task_state_name(st), -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, active);
	sqlite3_bind_int64(s, 3, limit);
	json_t *rows = json_array();
	while (sqlite3_step(s) == SQLITE_ROW) {
		int p = sqlite3_column_int(s, 1);
		const char *agent = (const char *)sqlite3_column_text(s, 3);
		const char *cap = (const char *)sqlite3_column_text(s, 8);
		json_array_insert_new(
		    rows, 0,
		    json_pack("{s:I,s:s,s:s,s:s?,s:f,s:i,s:i,s:s,s:s?}", "id",
		              (json_int_t)sqlite3_column_int64(s, 0), "priority",
		              proto_priority_name(p >= 0 && p < PRIO_N ? p : PRIO_NORMAL), "state",
		              (const char *)sqlite3_column_text(s, 2), "agent", agent, "progress",
		              sqlite3_column_double(s, 4), "attempt", sqlite3_column_int(s, 5),
		              "max_retries", sqlite3_column_int(s, 6), "title",
		              (const char *)sqlite3_column_text(s, 7), "capability", cap));
	}
	sqlite3_reset(s);
	return cmd_result(ctx, rows);
}

static void
cmd_task_list_print(struct cmd_ctx *ctx, const json_t *rows, struct buf *out)
{
	json_t *table = json_array();
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r)
	{
		char pct[16], att[24];
		snprintf(pct, sizeof pct, "%.0f%%",
		         json_real_value(json_object_get(r, "progress")));
		snprintf(att, sizeof att, "%lld/%lld",
		         (long long)json_integer_value(json_object_get(r, "attempt")),
		         (long long)json_integer_value(json_object_get(r, "max_retries")) + 1);
		json_array_append_new(
		    table,
		    json_pack("{s:O,s:O,s:O,s:O,s:s,s:s,s:O,s:O}", "id", json_object_get(r, "id"),
		              "priority", json_object_get(r, "priority"), "state",
		              json_object_get(r, "state"), "agent",
		              json_object_get(r, "agent") ? json_object_get(r, "agent")
		                                          : json_null(),
		              "progress", pct, "attempts", att, "capability",
		              json_object_get(r, "capability") ? json_object_get(r, "capability")
		                                               : json_null(),
		              "title", json_object_get(r, "title")));
	}
	static const char *const cols[] = {"id",       "priority",   "state", "agent", "progress",
	                                   "attempts", "capability", "title", NULL};
	if (json_array_size(table) == 0)
		buf_adds(out, "(no tasks)\n");
	else
		cmd_render_table(table, cols, out);
	json_decref(table);
}

static enum cmd_retval
cmd_task_show_exec(struct cmd_ctx *ctx)
{
	int64_t id = cmd_task_id(ctx, cmd_arg(ctx, 0));
	if (id == 0)
		return CMD_USAGE;
	json_t *j = tasks_show_json(orch_tasks(ctx->orch), id);
	if (j == NULL)
		return cmd_error(ctx, "task show: no task %lld", (long long)id);
	return cmd_result(ctx, j);
}

static enum cmd_retval
cmd_task_cancel_exec(struct cmd_ctx *ctx)
{
	int64_t id = cmd_task_id(ctx, cmd_arg(ctx, 0));
	char *cause = NULL;
	if (id == 0)
		return CMD_USAGE;
	if (tasks_cancel(orch_tasks(ctx->orch), id, &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "task cancel: %s", cause);
		free(cause);
		return rv;
	}
	return cmd_result(ctx, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "state",
	                                 "cancelled", "message", "cancelled"));
}

static enum cmd_retval
cmd_task_retry_exec(struct cmd_ctx *ctx)
{
	int64_t id = cmd_task_id(ctx, cmd_arg(ctx, 0));
	char *cause = NULL;
	if (id == 0)
		return CMD_USAGE;
	struct tasks *tm = orch_tasks(ctx->orch);
	if (tasks_retry(tm, id, &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "task retry: %s", cause);
		free(cause);
		return rv;
	}
	json_t *j = tasks_show_json(tm, id);
	json_object_set_new(j, "message", json_string("queued again"));
	return cmd_result(ctx, j);
}

static const struct cmd_opt add_opts[] = {
    {"priority", OPT_VALUE, "P", "priority"},
    {"cap", OPT_VALUE, "CAPABILITY", "cap"},
    {"after", OPT_MULTI, "ID", "task"},
    {"timeout", OPT_VALUE, "DURATION", NULL},
    {"retries", OPT_VALUE, "N", NULL},
    {"payload", OPT_VALUE, "JSON", NULL},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt list_opts[] = {
    {"state", OPT_VALUE, "STATE",
     "queued|blocked|assigned|running|failed|done|dead|cancelled|active"},
    {"limit", OPT_VALUE, "N", NULL},
    {NULL, 0, NULL, NULL},
};

const struct cmd_entry cmd_task_entries[] = {
    {
        .name = "task add",
        .usage = "TITLE... [--priority P] [--cap C] [--after ID]... [--timeout DURATION] "
                 "[--retries N] [--payload JSON]",
        .help = "Queues a task.  It goes to the least-loaded ready agent that has the "
                "capability (any agent that takes tasks when there is no --cap), highest "
                "priority first; --after makes it wait until those tasks are done.",
        .min_args = 1,
        .max_args = -1,
        .opts = add_opts,
        .role = ROLE_OPERATOR,
        .exec = cmd_task_add_exec,
        .print = cmd_task_add_print,
    },
    {
        .name = "task list",
        .usage = "[--state STATE|active] [--limit N]",
        .help = "Lists tasks (newest N, default 50, oldest first), optionally in one state, or "
                "'active' for the unfinished ones.",
        .max_args = 0,
        .opts = list_opts,
        .role = ROLE_OBSERVER,
        .exec = cmd_task_list_exec,
        .print = cmd_task_list_print,
    },
    {
        .name = "task show",
        .usage = "ID",
        .help = "Shows one task: payload, state, agent, progress, attempts, result or error, "
                "dependencies, and why it waits (e.g. \"no capable agent\").",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "task",
        .role = ROLE_OBSERVER,
        .exec = cmd_task_show_exec,
    },
    {
        .name = "task cancel",
        .usage = "ID",
        .help = "Cancels a task that has not finished; a running one's agent gets task.cancel.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "task",
        .role = ROLE_OPERATOR,
        .exec = cmd_task_cancel_exec,
    },
    {
        .name = "task retry",
        .usage = "ID",
        .help = "Queues a failed, dead or cancelled task again now, with a fresh set of "
                "attempts.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "task",
        .role = ROLE_OPERATOR,
        .exec = cmd_task_retry_exec,
    },
};
const size_t cmd_task_count = nitems(cmd_task_entries);
