/* cmd-bus.c — send, broadcast, publish, captain, history, dead list,
 * dead requeue. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "bus.h"
#include "cmd.h"
#include "orch.h"
#include "store.h"

/* Finishes a captain send once the message is durable (or refused). */
static void
cmd_bus_sent(void *arg, int64_t id, int n, const char *code, const char *detail)
{
	struct cmd_ctx *ctx = arg;
	if (id <= 0) {
		cmd_error(ctx, "%s: %s", ctx->entry->name, detail);
		cmd_ctx_finish(ctx, CMD_ERROR);
		return;
	}
	cmd_result(ctx, json_pack("{s:I,s:i,s:s+}", "id", (json_int_t)id, "recipients", n,
	                          "message", "sent", ""));
	char msg[96];
	snprintf(msg, sizeof msg, "message %lld stored for %d recipient%s", (long long)id, n,
	         n == 1 ? "" : "s");
	json_object_set_new(ctx->result, "message", json_string(msg));
	cmd_ctx_finish(ctx, CMD_OK);
}

/* Sends TEXT (args from `first`, or --body JSON) to `to`, asynchronously. */
static enum cmd_retval
cmd_bus_send_common(struct cmd_ctx *ctx, const char *to, int first, enum proto_mode dmode,
                    json_t *body_override)
{
	struct bus_send_req req = {
	    .from = "captain", .to = to, .priority = PRIO_NORMAL, .mode = dmode};
	const char *p = cmd_opt(ctx, "priority"), *m = cmd_opt(ctx, "mode");
	if (p != NULL && !proto_priority_parse(p, &req.priority)) {
		json_decref(body_override);
		return cmd_usage_error(ctx,
		                       "%s: --priority must be low, normal, high or urgent, "
		                       "got '%s'",
		                       ctx->entry->name, p);
	}
	if (m != NULL && !proto_mode_parse(m, &req.mode)) {
		json_decref(body_override);
		return cmd_opt_unknown(ctx, "mode");
	}
	json_t *body = body_override;
	const char *bodyopt = cmd_opt(ctx, "body");
	if (body == NULL && bodyopt != NULL) {
		json_error_t err;
		body = json_loads(bodyopt, JSON_DECODE_ANY, &err);
		if (body == NULL)
			return cmd_usage_error(ctx, "%s: --body is not JSON: %s", ctx->entry->name,
			                       err.text);
	}
	if (body == NULL) {
		if (ctx->argc <= first)
			return cmd_usage_error(ctx, "%s: nothing to send (TEXT or --body JSON)",
			                       ctx->entry->name);
		char *text = cmd_args_join(ctx, first);
		body = json_string(text);
		free(text);
	}
	char *bodytext = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(body);
	req.body = bodytext;
	bus_send(orch_bus(ctx->orch), &req, cmd_bus_sent, ctx);
	free(bodytext);
	return CMD_WAIT;
}

static void
cmd_bus_sent_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	buf_addf(out, "%s\n", json_string_value(json_object_get(r, "message")));
}

static enum cmd_retval
cmd_send_exec(struct cmd_ctx *ctx)
{
	return cmd_bus_send_common(ctx, cmd_arg(ctx, 0), 1, MODE_NORMAL, NULL);
}

static enum cmd_retval
cmd_broadcast_exec(struct cmd_ctx *ctx)
{
	return cmd_bus_send_common(ctx, "*", 0, MODE_NORMAL, NULL);
}

static enum cmd_retval
cmd_publish_exec(struct cmd_ctx *ctx)
{
	const char *t = cmd_arg(ctx, 0);
	char *topic = t[0] == '#' ? xstrdup(t) : xasprintf("#%s", t);
	if (!proto_valid_topic(topic + 1)) {
		enum cmd_retval rv = cmd_usage_error(ctx,
		                                     "publish: '%s' is not a valid topic "
		                                     "(letters, digits, _ . : / -)",
		                                     t);
		free(topic);
		return rv;
	}
	/* The ctx holds only borrowed strings; keep the topic until done. */
	json_object_set_new(ctx->opts, " topic", json_string(topic));
	free(topic);
	return cmd_bus_send_common(ctx, json_string_value(json_object_get(ctx->opts, " topic")), 1,
	                           MODE_NORMAL, NULL);
}

static enum cmd_retval
cmd_captain_exec(struct cmd_ctx *ctx)
{
	static const char *const ops[] = {"resume", "verify",  "sync",   "repair",
	                                  "backup", "restore", "cleanup"};
	const char *name = cmd_arg(ctx, 0), *op = cmd_arg(ctx, 1);
	bool known = false;
	for (size_t i = 0; i < nitems(ops); i++)
		known |= strcmp(op, ops[i]) == 0;
	if (!known)
		return cmd_usage_error(ctx,
		                       "captain: unknown order '%s' (resume, verify, sync, "
		                       "repair, backup, restore, cleanup)",
		                       op);
	struct agent *a = agents_find(orch_agents(ctx->orch), name);
	if (a == NULL)
		return cmd_error(ctx, "captain: no agent named '%s' (see 'agent list')", name);
	if (strcmp(op, "resume") == 0 && a->state == AGENT_PAUSED) {
		char *cause = NULL;
		agent_resume(a, &cause);
		free(cause);
	}
	char *text = cmd_args_join(ctx, 2);
	json_t *body = json_pack("{s:s,s:s}", "command", op, "text", text);
	free(text);
	return cmd_bus_send_common(ctx, name, 2, MODE_CAPTAIN, body);
}

/* ---- history ---------------------------------------------------------- */

static enum cmd_retval
cmd_history_exec(struct cmd_ctx *ctx)
{
	long limit = 20;
	if (!cmd_opt_int(ctx, "limit", 1, 100000, &limit))
		return CMD_USAGE;
	int64_t since = 0;
	const char *s = cmd_opt(ctx, "since");
	if (s != NULL) {
		double secs;
		if (!parse_duration(s, &secs))
			return cmd_usage_error(ctx,
			                       "history: --since expects a duration like 10m, "
			                       "got '%s'",
			                       s);
		since = time_wall_ms() - (int64_t)(secs * 1000.0);
	}
	enum proto_mode mode;
	const char *ms = cmd_opt(ctx, "mode");
	if (ms != NULL && !proto_mode_parse(ms, &mode))
		return cmd_opt_unknown(ctx, "mode");
	struct store *st = orch_store(ctx->orch);
	bus_sync_rows(orch_bus(ctx->orch));
	int64_t from_id = s != NULL ? bus_first_id_at(st, since) : 0;
	sqlite3_stmt *q = store_stmt(
	    st,
	    /* clang-format off */
	    "SELECT id, ts_ms, sender, target, priority, mode, body, coalesce((SELECT "
	    "group_concat(recipient || ':' || CASE state WHEN 0 THEN 'pending' WHEN 1 THEN "
	    "'acked' ELSE 'dead' END, ' ') FROM deliveries d WHERE d.msg_id = m.id), "
	    "CASE WHEN " BUS_SQL_DIRECT("m") " THEN m.target || CASE WHEN m.id <= "
	    BUS_SQL_MARK("m") " THEN ':acked' ELSE ':pending' END END) "
	    "FROM messages m WHERE (?1 IS NULL OR m.sender = ?1 OR m.target = ?1 OR EXISTS "
	    "(SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.recipient = ?1)) AND "
	    "m.id >= ?2 AND (?3 IS NULL OR instr(m.body, ?3) > 0) AND (?4 IS NULL OR "
	    "m.mode = ?4) ORDER BY m.id DESC LIMIT ?5");
	/* clang-format on */
	if (q == NULL)
		return cmd_error(ctx, "history: query failed");
	if (ctx->argc > 0)
		sqlite3_bind_text(q, 1, cmd_arg(ctx, 0), -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(q, 2, from_id);
	if (cmd_opt(ctx, "grep"))
		sqlite3_bind_text(q, 3, cmd_opt(ctx, "grep"), -1, SQLITE_TRANSIENT);
	if (ms != NULL)
		sqlite3_bind_text(q, 4, proto_mode_name(mode), -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 5, limit);
	json_t *rows = json_array();
	while (sqlite3_step(q) == SQLITE_ROW) {
		char ts[40];
		time_iso8601(sqlite3_column_int64(q, 1), ts, sizeof ts);
		int prio = sqlite3_column_int(q, 4);
		json_t *body =
		    json_loads((const char *)sqlite3_column_text(q, 6), JSON_DECODE_ANY, NULL);
		const char *deliv = (const char *)sqlite3_column_text(q, 7);
		json_array_insert_new(
		    rows, 0,
		    json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:o,s:s}", "id",
		              (json_int_t)sqlite3_column_int64(q, 0), "ts", ts, "from",
		              (const char *)sqlite3_column_text(q, 2), "to",
		              (const char *)sqlite3_column_text(q, 3), "priority",
		              proto_priority_name(prio >= 0 && prio < PRIO_N ? prio : PRIO_NORMAL),
		              "mode", (const char *)sqlite3_column_text(q, 5), "body",
		              body ? body : json_null(), "deliveries", deliv ? deliv : ""));
	}
	sqlite3_reset(q);
	/* A name that is no agent's (the captain's is not) and that no message
	 * mentions, whatever the filters: say so, as send does.  A removed
	 * agent still has its history. */
	const char *name = cmd_arg(ctx, 0);
	if (json_array_size(rows) == 0 && name != NULL && strcmp(name, "captain") != 0 &&
	    agents_find(orch_agents(ctx->orch), name) == NULL) {
		sqlite3_clear_bindings(q);
		sqlite3_bind_text(q, 1, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(q, 2, 0);
		sqlite3_bind_int64(q, 5, 1);
		bool mentioned = sqlite3_step(q) == SQLITE_ROW;
		sqlite3_reset(q);
		if (!mentioned) {
			json_decref(rows);
			return cmd_error(
			    ctx,
			    "history: no agent named '%s' and no message from or to it "
			    "(see 'agent list')",
			    name);
		}
	}
	return cmd_result(ctx, rows);
}

static void
cmd_history_print(struct cmd_ctx *ctx, const json_t *rows, struct buf *out)
{
	size_t i;
	json_t *r;
	if (json_array_size(rows) == 0)
		buf_adds(out, "(no messages)\n");
	json_array_foreach(rows, i, r)
	{
		json_t *body = json_object_get(r, "body");
		char *b = json_is_string(body) ? xstrdup(json_string_value(body))
		                               : json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
		buf_addf(out, "#%lld %s %s -> %s [%s %s] %s  (%s)\n",
		         (long long)json_integer_value(json_object_get(r, "id")),
		         json_string_value(json_object_get(r, "ts")),
		         json_string_value(json_object_get(r, "from")),
		         json_string_value(json_object_get(r, "to")),
		         json_string_value(json_object_get(r, "priority")),
		         json_string_value(json_object_get(r, "mode")), b,
		         json_string_value(json_object_get(r, "deliveries")));
		free(b);
	}
}

/* ---- dead letters ----------------------------------------------------- */

static enum cmd_retval
cmd_dead_list_exec(struct cmd_ctx *ctx)
{
	long limit = 100;
	if (!cmd_opt_int(ctx, "limit", 1, 100000, &limit))
		return CMD_USAGE;
	struct store *st = orch_store(ctx->orch);
	sqlite3_stmt *q = store_stmt(st, "SELECT m.id, d.recipient, m.sender, d.attempt, "
	                                 "d.updated_ms, m.body FROM deliveries d JOIN messages m "
	                                 "ON m.id = d.msg_id WHERE d.state = 2 ORDER BY m.id LIMIT "
	                                 "?1");
	if (q == NULL)
		return cmd_error(ctx, "dead list: query failed");
	sqlite3_bind_int64(q, 1, limit);
	json_t *rows = json_array();
	while (sqlite3_step(q) == SQLITE_ROW) {
		char ts[40];
		time_iso8601(sqlite3_column_int64(q, 4), ts, sizeof ts);
		const char *body = (const char *)sqlite3_column_text(q, 5);
		char excerpt[61];
		snprintf(excerpt, sizeof excerpt, "%s", body ? body : "");
		json_array_append_new(
		    rows, json_pack("{s:I,s:s,s:s,s:i,s:s,s:s}", "id",
		                    (json_int_t)sqlite3_column_int64(q, 0), "to",
		                    (const char *)sqlite3_column_text(q, 1), "from",
		                    (const char *)sqlite3_column_text(q, 2), "attempts",
		                    sqlite3_column_int(q, 3), "since", ts, "body", excerpt));
	}
	sqlite3_reset(q);
	return cmd_result(ctx, rows);
}

static enum cmd_retval
cmd_dead_requeue_exec(struct cmd_ctx *ctx)
{
	char *end;
	long long id = strtoll(cmd_arg(ctx, 0), &end, 10);
	if (*end != '\0' || id <= 0)
		return cmd_usage_error(ctx, "dead requeue: '%s' is not a message id",
		                       cmd_arg(ctx, 0));
	int n = bus_dead_requeue(orch_bus(ctx->orch), id);
	if (n < 0)
		return cmd_error(ctx, "dead requeue: message %lld is not dead (see 'dead list')",
		                 id);
	return cmd_result(ctx, json_pack("{s:I,s:i,s:s}", "id", (json_int_t)id, "requeued", n,
	                                 "message", "requeued"));
}

static const struct cmd_opt send_opts[] = {
    {"priority", OPT_VALUE, "P", "priority"},
    {"mode", OPT_VALUE, "MODE", "mode"},
    {"body", OPT_VALUE, "JSON", NULL},
    {NULL, 0, NULL, NULL},
};

/* An order's mode is CAPTAIN and its body the order: only the priority. */
static const struct cmd_opt captain_opts[] = {
    {"priority", OPT_VALUE, "P", "priority"},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt history_opts[] = {
    {"limit", OPT_VALUE, "N", NULL},
    {"since", OPT_VALUE, "DURATION", NULL},
    {"grep", OPT_VALUE, "TEXT", NULL},
    {"mode", OPT_VALUE, "MODE", "mode"},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt dead_opts[] = {
    {"limit", OPT_VALUE, "N", NULL},
    {NULL, 0, NULL, NULL},
};

const struct cmd_entry cmd_bus_entries[] = {
    {
        .name = "send",
        .usage = "NAME TEXT... [--priority P] [--mode M] [--body JSON]",
        .help = "Sends a message from the captain to an agent.  The body is TEXT as a JSON "
                "string, or --body JSON.  Answers with the message id once it is stored; the "
                "agent gets it when it is connected, and until it acks it.",
        .min_args = 1,
        .max_args = -1,
        .opts = send_opts,
        .complete_args = "agent",
        .role = ROLE_OPERATOR,
        .exec = cmd_send_exec,
        .print = cmd_bus_sent_print,
    },
    {
        .name = "broadcast",
        .usage = "TEXT... [--priority P] [--mode M] [--body JSON]",
        .help = "Sends a message from the captain to every agent.",
        .min_args = 0,
        .max_args = -1,
        .opts = send_opts,
        .role = ROLE_OPERATOR,
        .exec = cmd_broadcast_exec,
        .print = cmd_bus_sent_print,
    },
    {
        .name = "publish",
        .usage = "TOPIC TEXT... [--priority P] [--mode M] [--body JSON]",
        .help = "Publishes a message to the agents subscribed to #TOPIC.",
        .min_args = 1,
        .max_args = -1,
        .opts = send_opts,
        .role = ROLE_OPERATOR,
        .exec = cmd_publish_exec,
        .print = cmd_bus_sent_print,
    },
    {
        .name = "captain",
        .usage = "NAME resume|verify|sync|repair|backup|restore|cleanup [TEXT...] [--priority P]",
        .help = "Sends a CAPTAIN-mode order to an agent: a durable message whose body is "
                "{\"command\": ORDER, \"text\": TEXT}.  'resume' also resumes a paused agent.",
        .min_args = 2,
        .max_args = -1,
        .opts = captain_opts,
        .complete_args = "agent",
        .role = ROLE_CAPTAIN,
        .exec = cmd_captain_exec,
        .print = cmd_bus_sent_print,
    },
    {
        .name = "history",
        .usage = "[NAME] [--limit N] [--since DURATION] [--grep TEXT] [--mode M]",
        .help = "Shows stored messages (newest N, default 20, oldest first): sent by, "
                "addressed to or delivered to NAME, younger than DURATION, whose body contains "
                "TEXT, of mode M; with each recipient's delivery state.  A NAME that is no "
                "agent's and that no stored message mentions is an error.",
        .min_args = 0,
        .max_args = 1,
        .opts = history_opts,
        .complete_args = "agent",
        .role = ROLE_OBSERVER,
        .exec = cmd_history_exec,
        .print = cmd_history_print,
    },
    {
        .name = "dead list",
        .usage = "[--limit N]",
        .help = "Lists dead messages: deliveries that were not acked after bus.max_attempts.",
        .min_args = 0,
        .max_args = 0,
        .opts = dead_opts,
        .role = ROLE_OBSERVER,
        .exec = cmd_dead_list_exec,
    },
    {
        .name = "dead requeue",
        .usage = "ID",
        .help = "Puts a dead message back in its recipients' inboxes, with its attempt count "
                "reset.",
        .min_args = 1,
        .max_args = 1,
        .role = ROLE_OPERATOR,
        .exec = cmd_dead_requeue_exec,
    },
};
const size_t cmd_bus_count = nitems(cmd_bus_entries);
