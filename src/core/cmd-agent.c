/* cmd-agent.c — agent list | info | find | spawn | stop | restart | kill |
 * pause | resume. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cmd.h"
#include "ext.h"
#include "orch.h"
#include "proto.h"

/* Finds the agent named by the first argument, or sets the error. */
static struct agent *
cmd_agent_arg(struct cmd_ctx *ctx)
{
	const char *name = cmd_arg(ctx, 0);
	struct agent *a = agents_find(orch_agents(ctx->orch), name);
	if (a == NULL)
		cmd_error(ctx, "%s: no agent named '%s' (see 'agent list')", ctx->entry->name,
		          name);
	return a;
}

static enum cmd_retval
cmd_agent_list_exec(struct cmd_ctx *ctx)
{
	struct agents *as = orch_agents(ctx->orch);
	const char *state = cmd_opt(ctx, "state");
	enum agent_state want;
	if (state != NULL && !agent_state_parse(state, &want))
		return cmd_opt_unknown(ctx, "state");
	json_t *rows = json_array();
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if (state == NULL || a->state == want)
			json_array_append_new(rows, agent_json(a, false));
	}
	return cmd_result(ctx, rows);
}

/* Formats a token count compactly ("12.3k"). */
static void
fmt_tokens(json_int_t n, char *out, size_t len)
{
	if (n >= 1000000)
		snprintf(out, len, "%.1fM", (double)n / 1e6);
	else if (n >= 10000)
		snprintf(out, len, "%.1fk", (double)n / 1e3);
	else
		snprintf(out, len, "%lld", (long long)n);
}

static void
cmd_agent_list_print(struct cmd_ctx *ctx, const json_t *rows, struct buf *out)
{
	json_t *table = json_array();
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r)
	{
		char tasks[48], tok[128], hb[32];
		snprintf(tasks, sizeof tasks, "%lld/%lld",
		         (long long)json_integer_value(json_object_get(r, "tasks")),
		         (long long)json_integer_value(json_object_get(r, "max_tasks")));
		char ti[32], to[32];
		fmt_tokens(json_integer_value(json_object_get(r, "tokens_in")), ti, sizeof ti);
		fmt_tokens(json_integer_value(json_object_get(r, "tokens_out")), to, sizeof to);
		snprintf(tok, sizeof tok, "%s/%s $%.2f", ti, to,
		         json_real_value(json_object_get(r, "cost_usd")));
		json_t *age = json_object_get(r, "heartbeat_age_s");
		if (json_is_real(age))
			snprintf(hb, sizeof hb, "%.1fs", json_real_value(age));
		else
			snprintf(hb, sizeof hb, "-");
		json_array_append_new(table, json_pack("{s:O,s:O,s:O,s:s,s:O,s:s,s:s,s:O}", "name",
		                                       json_object_get(r, "name"), "state",
		                                       json_object_get(r, "state"), "pid",
		                                       json_object_get(r, "pid"), "tasks", tasks,
		                                       "restarts", json_object_get(r, "restarts"),
		                                       "heartbeat", hb, "tokens/cost", tok, "info",
		                                       json_object_get(r, "info")));
	}
	static const char *const cols[] = {"name",      "state",       "pid",  "tasks", "restarts",
	                                   "heartbeat", "tokens/cost", "info", NULL};
	if (json_array_size(table) == 0)
		buf_adds(out, "(no agents)\n");
	else
		cmd_render_table(table, cols, out);
	json_decref(table);
}

static enum cmd_retval
cmd_agent_info_exec(struct cmd_ctx *ctx)
{
	struct agent *a = cmd_agent_arg(ctx);
	if (a == NULL)
		return CMD_ERROR;
	return cmd_result(ctx, agent_json(a, true));
}

static enum cmd_retval
cmd_agent_find_exec(struct cmd_ctx *ctx)
{
	struct agents *as = orch_agents(ctx->orch);
	const char *cap = cmd_arg(ctx, 0);
	json_t *rows = json_array();
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if ((a->state == AGENT_READY || a->state == AGENT_BUSY) && agent_has_cap(a, cap))
			json_array_append_new(rows, agent_json(a, false));
	}
	return cmd_result(ctx, rows);
}

static enum cmd_retval
cmd_agent_spawn_exec(struct cmd_ctx *ctx)
{
	struct agent_cfg ac;
	long max_tasks = -1;
	char *cause = NULL;

	if (!cmd_opt_int(ctx, "max-tasks", 1, 1000, &max_tasks))
		return CMD_USAGE;
	if (!proto_valid_agent_name(cmd_arg(ctx, 0)))
		return cmd_usage_error(
		    ctx,
		    "agent spawn: invalid agent name '%s' (letters, digits, '_', "
		    "'.', '-'; at most 64)",
		    cmd_arg(ctx, 0));
	const char *restart = cmd_opt(ctx, "restart");
	enum restart_policy policy = RESTART_ON_FAILURE;
	if (restart != NULL && !restart_policy_parse(restart, &policy))
		return cmd_usage_error(
		    ctx,
		    "agent spawn: --restart must be always, on-failure or never, "
		    "got '%s'",
		    restart);
	const char *type = cmd_opt(ctx, "type");
	int type_tasks = -1;
	if (type != NULL && strcmp(type, "process") != 0 && strcmp(type, "remote") != 0 &&
	    !ext_agent_type_known(orch_exts(ctx->orch), type, &type_tasks)) {
		char *known = ext_agent_types_list(orch_exts(ctx->orch));
		enum cmd_retval rv = cmd_usage_error(
		    ctx, "agent spawn: unknown agent type '%s' (known: process, remote%s%s)", type,
		    *known ? ", " : "", known);
		free(known);
		return rv;
	}
	if (ctx->argc < 2 && (type == NULL || strcmp(type, "process") == 0))
		return cmd_usage_error(ctx, "agent spawn: missing program (usage: agent spawn NAME "
		                            "[OPTIONS] -- PROGRAM [ARG...])");
	for (size_t i = 0; i < cmd_opt_count(ctx, "env"); i++) {
		const char *kv = cmd_opt_at(ctx, "env", i);
		if (strchr(kv, '=') == NULL || kv[0] == '=')
			return cmd_usage_error(
			    ctx, "agent spawn: --env expects KEY=VALUE, got '%s'", kv);
	}

	/* Options of the extension's type: --model etc., or --option K=V. */
	static const char *const named[] = {"model", "system", "budget-usd"};
	size_t nopt = cmd_opt_count(ctx, "option");
	char **opts = xcalloc(nopt + nitems(named) + 1, sizeof(char *));
	size_t nopts = 0;
	for (size_t i = 0; i < nitems(named); i++)
		if (cmd_opt(ctx, named[i]) != NULL)
			opts[nopts++] = xasprintf("%s=%s", named[i], cmd_opt(ctx, named[i]));
	for (size_t i = 0; i < nopt; i++)
		opts[nopts++] = xstrdup(cmd_opt_at(ctx, "option", i));
	for (size_t i = 0; i < nopts; i++) {
		const char *eq = strchr(opts[i], '=');
		char *name = eq ? xstrndup(opts[i], (size_t)(eq - opts[i])) : NULL;
		enum cmd_retval rv = CMD_OK;
		if (name == NULL || *name == '\0')
			rv = cmd_usage_error(
			    ctx, "agent spawn: --option expects NAME=VALUE, got '%s'", opts[i]);
		else if (type == NULL || strcmp(type, "process") == 0 ||
		         strcmp(type, "remote") == 0)
			rv = cmd_usage_error(
			    ctx,
			    "agent spawn: --%s is an option of extension agent types "
			    "(--type TYPE); a %s agent takes none",
			    name, type ? type : "process");
		else if (!ext_agent_type_option(orch_exts(ctx->orch), type, name))
			rv = cmd_usage_error(ctx, "agent spawn: agent type %s takes no option '%s'",
			                     type, name);
		free(name);
		if (rv != CMD_OK) {
			for (size_t j = 0; j < nopts; j++)
				free(opts[j]);
			free(opts);
			return rv;
		}
	}

	agent_cfg_init(&ac, orch_config(ctx->orch));
	ac.name = xstrdup(cmd_arg(ctx, 0));
	if (nopts > 0) {
		for (size_t i = 0; i < ac.noptions; i++)
			free(ac.options[i]);
		free(ac.options);
		ac.options = opts;
		ac.noptions = nopts;
	} else {
		free(opts);
	}
	if (type != NULL) {
		free(ac.type);
		ac.type = xstrdup(type);
	}
	if (ctx->argc >= 2) {
		ac.command = xstrdup(cmd_arg(ctx, 1));
		ac.args = xcalloc((size_t)ctx->argc, sizeof(char *));
		for (int i = 2; i < ctx->argc; i++)
			ac.args[ac.nargs++] = xstrdup(cmd_arg(ctx, i));
	}
	size_t ncap = cmd_opt_count(ctx, "cap");
	if (ncap > 0) {
		ac.caps = xreallocarray(ac.caps, ac.ncaps + ncap + 1, sizeof(char *));
		for (size_t i = 0; i < ncap; i++)
			ac.caps[ac.ncaps++] = xstrdup(cmd_opt_at(ctx, "cap", i));
	}
	size_t nenv = cmd_opt_count(ctx, "env");
	if (nenv > 0) {
		ac.env = xreallocarray(ac.env, ac.nenv + nenv + 1, sizeof(char *));
		for (size_t i = 0; i < nenv; i++)
			ac.env[ac.nenv++] = xstrdup(cmd_opt_at(ctx, "env", i));
	}
	if (cmd_opt(ctx, "cwd") != NULL) {
		free(ac.cwd);
		ac.cwd = xstrdup(cmd_opt(ctx, "cwd"));
	}
	if (max_tasks > 0)
		ac.max_tasks = (int)max_tasks;
	else if (type_tasks >= 0)
		ac.max_tasks = type_tasks; /* the extension type's default */
	if (restart != NULL)
		ac.restart = policy;
	struct agent *a = agents_spawn(orch_agents(ctx->orch), &ac, false, &cause);
	agent_cfg_clear(&ac);
	if (a == NULL) {
		enum cmd_retval rv = cmd_error(ctx, "agent spawn: %s", cause);
		free(cause);
		return rv;
	}
	json_t *r = agent_json(a, false);
	json_object_set_new(
	    r, "message",
	    json_sprintf("agent %s spawned (%s)", a->name, agent_state_name(a->state)));
	return cmd_result(ctx, r);
}

static void
cmd_agent_spawn_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	buf_addf(out, "%s\n", json_string_value(json_object_get(r, "message")));
}

/* Runs one lifecycle action on the named agent and reports its state. */
static enum cmd_retval
cmd_agent_action(struct cmd_ctx *ctx, int (*fn)(struct agent *, char **), const char *done)
{
	struct agent *a = cmd_agent_arg(ctx);
	char *cause = NULL;
	if (a == NULL)
		return CMD_ERROR;
	if (fn(a, &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "%s: %s", ctx->entry->name, cause);
		free(cause);
		return rv;
	}
	return cmd_result(ctx, json_pack("{s:s,s:s,s:s+}", "agent", a->name, "state",
	                                 agent_state_name(a->state), "message", done, a->name));
}

static enum cmd_retval
cmd_agent_stop_exec(struct cmd_ctx *ctx)
{
	return cmd_agent_action(ctx, agent_stop, "stopping ");
}

static enum cmd_retval
cmd_agent_restart_exec(struct cmd_ctx *ctx)
{
	return cmd_agent_action(ctx, agent_restart, "restarting ");
}

static enum cmd_retval
cmd_agent_pause_exec(struct cmd_ctx *ctx)
{
	return cmd_agent_action(ctx, agent_pause, "paused ");
}

static enum cmd_retval
cmd_agent_resume_exec(struct cmd_ctx *ctx)
{
	return cmd_agent_action(ctx, agent_resume, "resumed ");
}

static enum cmd_retval
cmd_agent_kill_exec(struct cmd_ctx *ctx)
{
	struct agent *a = cmd_agent_arg(ctx);
	char *cause = NULL;
	if (a == NULL)
		return CMD_ERROR;
	int sig = SIGKILL;
	const char *s = cmd_opt(ctx, "signal");
	if (s != NULL) {
		static const struct {
			const char *name;
			int sig;
		} sigs[] = {{"KILL", SIGKILL}, {"TERM", SIGTERM}, {"INT", SIGINT},
		            {"HUP", SIGHUP},   {"STOP", SIGSTOP}, {"CONT", SIGCONT},
		            {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};
		const char *n = strncmp(s, "SIG", 3) == 0 ? s + 3 : s;
		sig = 0;
		for (size_t i = 0; i < nitems(sigs); i++) {
			if (strcasecmp(n, sigs[i].name) == 0)
				sig = sigs[i].sig;
		}
		if (sig == 0)
			return cmd_usage_error(ctx, "agent kill: unknown signal '%s'", s);
	}
	if (agent_kill(a, sig, &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "agent kill: %s", cause);
		free(cause);
		return rv;
	}
	return cmd_result(ctx, json_pack("{s:s,s:i,s:s+}", "agent", a->name, "signal", sig,
	                                 "message", "signal sent to ", a->name));
}

static const struct cmd_opt list_opts[] = {
    {"state", OPT_VALUE, "STATE",
     "starting|ready|busy|paused|unhealthy|backoff|stopping|stopped|failed"},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt spawn_opts[] = {
    {"cap", OPT_MULTI, "CAPABILITY", NULL},
    {"max-tasks", OPT_VALUE, "N", NULL},
    {"restart", OPT_VALUE, "POLICY", "always|on-failure|never"},
    {"env", OPT_MULTI, "KEY=VALUE", NULL},
    {"cwd", OPT_VALUE, "DIR", NULL},
    {"type", OPT_VALUE, "TYPE", NULL},
    {"model", OPT_VALUE, "MODEL", NULL},
    {"system", OPT_VALUE, "TEXT", NULL},
    {"budget-usd", OPT_VALUE, "USD", NULL},
    {"option", OPT_MULTI, "NAME=VALUE", NULL},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt kill_opts[] = {
    {"signal", OPT_VALUE, "SIG", "KILL|TERM|INT|HUP|STOP|CONT|USR1|USR2"},
    {NULL, 0, NULL, NULL},
};

const struct cmd_entry cmd_agent_entries[] = {
    {
        .name = "agent list",
        .usage = "[--state STATE]",
        .help = "Lists the agents: state, pid, tasks running/max, restarts, heartbeat age, "
                "tokens and cost, and what is going on (uptime, next restart and attempt).",
        .max_args = 0,
        .opts = list_opts,
        .role = ROLE_OBSERVER,
        .exec = cmd_agent_list_exec,
        .print = cmd_agent_list_print,
    },
    {
        .name = "agent info",
        .usage = "NAME",
        .help = "Shows one agent in detail: command, capabilities, restart policy, uptime, "
                "restarts and the attempt count, the time to the next restart, the last exit, "
                "heartbeat, usage.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_OBSERVER,
        .exec = cmd_agent_info_exec,
    },
    {
        .name = "agent find",
        .usage = "CAPABILITY",
        .help = "Lists the running agents (ready or busy) that have a capability.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "cap",
        .role = ROLE_OBSERVER,
        .exec = cmd_agent_find_exec,
        .print = cmd_agent_list_print,
    },
    {
        .name = "agent spawn",
        .usage = "NAME [--cap C]... [--max-tasks N] [--restart always|on-failure|never] "
                 "[--env K=V]... [--cwd DIR] -- PROGRAM [ARG...] | NAME --type TYPE "
                 "[--cap C]... [--model M] [--system TEXT] [--budget-usd X] "
                 "[--option NAME=VALUE]...",
        .help = "Creates an agent and starts it: a program (the default type, process), or an "
                "in-process agent of an extension's type (ext info NAME lists them; --model, "
                "--system, --budget-usd and --option are that type's options).  The agent is "
                "remembered: it comes back when dreamos restarts, until 'agent stop'.",

        .min_args = 1,
        .max_args = -1,
        .opts = spawn_opts,
        .role = ROLE_OPERATOR,
        .exec = cmd_agent_spawn_exec,
        .print = cmd_agent_spawn_print,
    },
    {
        .name = "agent stop",
        .usage = "NAME",
        .help = "Stops an agent: the protocol's 'command stop', then SIGTERM after "
                "stop_grace, then SIGKILL.  It stays stopped until 'agent restart'.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_OPERATOR,
        .exec = cmd_agent_stop_exec,
    },
    {
        .name = "agent restart",
        .usage = "NAME",
        .help = "Stops an agent if it runs and starts it again, resetting its backoff and "
                "restart-intensity counters (also brings back a failed agent).",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_OPERATOR,
        .exec = cmd_agent_restart_exec,
    },
    {
        .name = "agent kill",
        .usage = "NAME [--signal SIG]",
        .help = "Sends a signal (default KILL) to the agent's process group.  Its restart "
                "policy then applies as for a crash.",
        .min_args = 1,
        .max_args = 1,
        .opts = kill_opts,
        .complete_args = "agent",
        .role = ROLE_OPERATOR,
        .exec = cmd_agent_kill_exec,
    },
    {
        .name = "agent pause",
        .usage = "NAME",
        .help = "Pauses an agent: it is sent 'command pause' and gets no new tasks or "
                "messages until resumed (they wait for it).",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_OPERATOR,
        .exec = cmd_agent_pause_exec,
    },
    {
        .name = "agent resume",
        .usage = "NAME",
        .help = "Resumes a paused agent.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "agent",
        .role = ROLE_OPERATOR,
        .exec = cmd_agent_resume_exec,
    },
};
const size_t cmd_agent_count = nitems(cmd_agent_entries);
