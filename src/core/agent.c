/* agent.c — the agent registry, the lifecycle state machine, restart
 * policies, heartbeats, and each agent's protocol session. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agent.h"
#include "log.h"
#include "orch.h"
#include "spawn.h"
#include "store.h"

struct agents {
	struct orch *orch;
	struct agent **list; /* creation order */
	size_t n, cap;
	struct strmap byname;
	int next_seq;

	/* agents_stop_all */
	bool stopping_all;
	struct agent **stop_order;
	size_t nstop, stop_next;
	bool in_stop_next, stop_again; /* agents_stop_next is running, and again */
	void (*all_done)(void *);
	void *all_arg;
};

static const char *const state_names[AGENT_NSTATES] = {
    "starting", "ready", "busy", "paused", "unhealthy", "backoff", "stopping", "stopped", "failed",
};

const char *
agent_state_name(enum agent_state s)
{
	return s < AGENT_NSTATES ? state_names[s] : "?";
}

bool
agent_state_parse(const char *s, enum agent_state *out)
{
	for (int i = 0; i < AGENT_NSTATES; i++) {
		if (strcmp(s, state_names[i]) == 0) {
			*out = (enum agent_state)i;
			return true;
		}
	}
	return false;
}

bool
agent_state_connected(enum agent_state s)
{
	return s == AGENT_READY || s == AGENT_BUSY || s == AGENT_PAUSED;
}

/* The edges of the state machine: allowed[from] is a bit set of targets. */
#define B(s) (1u << (s))
static const unsigned allowed[AGENT_NSTATES] = {
    [AGENT_STARTING] = B(AGENT_READY) | B(AGENT_BUSY) | B(AGENT_PAUSED) | B(AGENT_BACKOFF) |
                       B(AGENT_STOPPING) | B(AGENT_STOPPED) | B(AGENT_FAILED) | B(AGENT_STARTING),
    [AGENT_READY] = B(AGENT_BUSY) | B(AGENT_PAUSED) | B(AGENT_UNHEALTHY) | B(AGENT_BACKOFF) |
                    B(AGENT_STOPPING) | B(AGENT_STOPPED) | B(AGENT_FAILED) | B(AGENT_STARTING),
    [AGENT_BUSY] = B(AGENT_READY) | B(AGENT_PAUSED) | B(AGENT_UNHEALTHY) | B(AGENT_BACKOFF) |
                   B(AGENT_STOPPING) | B(AGENT_STOPPED) | B(AGENT_FAILED) | B(AGENT_STARTING),
    [AGENT_PAUSED] = B(AGENT_READY) | B(AGENT_BUSY) | B(AGENT_UNHEALTHY) | B(AGENT_BACKOFF) |
                     B(AGENT_STOPPING) | B(AGENT_STOPPED) | B(AGENT_FAILED) | B(AGENT_STARTING),
    [AGENT_UNHEALTHY] = B(AGENT_BACKOFF) | B(AGENT_STOPPING) | B(AGENT_STOPPED) | B(AGENT_FAILED) |
                        B(AGENT_STARTING),
    [AGENT_BACKOFF] = B(AGENT_STARTING) | B(AGENT_STOPPED) | B(AGENT_FAILED),
    [AGENT_STOPPING] = B(AGENT_STOPPED) | B(AGENT_STARTING) | B(AGENT_FAILED),
    [AGENT_STOPPED] = B(AGENT_STARTING),
    [AGENT_FAILED] = B(AGENT_STARTING),
};
#undef B

/* ---- persistence ------------------------------------------------------ */

/* Returns the spec of an agent (what `agent spawn` gave) as JSON. */
static json_t *
agent_cfg_json(const struct agent_cfg *c)
{
	json_t *args = json_array(), *env = json_array(), *caps = json_array();
	json_t *opts = json_array();
	for (size_t i = 0; i < c->noptions; i++)
		json_array_append_new(opts, json_string(c->options[i]));
	for (size_t i = 0; i < c->nargs; i++)
		json_array_append_new(args, json_string(c->args[i]));
	for (size_t i = 0; i < c->nenv; i++)
		json_array_append_new(env, json_string(c->env[i]));
	for (size_t i = 0; i < c->ncaps; i++)
		json_array_append_new(caps, json_string(c->caps[i]));
	return json_pack("{s:s,s:s?,s:s?,s:o,s:o,s:s?,s:o,s:i,s:s,s:b,s:o}", "name", c->name,
	                 "type", c->type, "command", c->command, "args", args, "env", env, "cwd",
	                 c->cwd, "capabilities", caps, "max_tasks", c->max_tasks, "restart",
	                 restart_policy_name(c->restart), "autostart", c->autostart, "options",
	                 opts);
}

/* Fills c (already holding defaults) from a spec made by agent_cfg_json. */
static void
agent_cfg_from_json(struct agent_cfg *c, const json_t *j)
{
	const char *s;
	size_t i;
	json_t *v;
	free(c->name);
	c->name = xstrdup(json_string_value(json_object_get(j, "name")));
	if ((s = json_string_value(json_object_get(j, "type"))) != NULL) {
		free(c->type);
		c->type = xstrdup(s);
	}
	if ((s = json_string_value(json_object_get(j, "command"))) != NULL) {
		free(c->command);
		c->command = xstrdup(s);
	}
	if ((s = json_string_value(json_object_get(j, "cwd"))) != NULL) {
		free(c->cwd);
		c->cwd = xstrdup(s);
	}
	json_t *args = json_object_get(j, "args"), *env = json_object_get(j, "env"),
	       *caps = json_object_get(j, "capabilities");
	c->args = xreallocarray(c->args, json_array_size(args) + 1, sizeof(char *));
	json_array_foreach(args, i, v) c->args[c->nargs++] = xstrdup(json_string_value(v));
	c->env = xreallocarray(c->env, c->nenv + json_array_size(env) + 1, sizeof(char *));
	json_array_foreach(env, i, v) c->env[c->nenv++] = xstrdup(json_string_value(v));
	c->caps = xreallocarray(c->caps, c->ncaps + json_array_size(caps) + 1, sizeof(char *));
	json_array_foreach(caps, i, v) c->caps[c->ncaps++] = xstrdup(json_string_value(v));
	json_t *opts = json_object_get(j, "options");
	c->options =
	    xreallocarray(c->options, c->noptions + json_array_size(opts) + 1, sizeof(char *));
	json_array_foreach(opts, i, v) c->options[c->noptions++] = xstrdup(json_string_value(v));

	if (json_is_integer(json_object_get(j, "max_tasks")))
		c->max_tasks = (int)json_integer_value(json_object_get(j, "max_tasks"));
	if ((s = json_string_value(json_object_get(j, "restart"))) != NULL)
		restart_policy_parse(s, &c->restart);
	c->autostart = !json_is_false(json_object_get(j, "autostart"));
}

/* Writes the agent's row (group-committed). */
static void
agent_persist(struct agent *a)
{
	struct store *st = orch_store(a->orch);
	sqlite3_stmt *s = store_stmt(
	    st, "INSERT INTO agents(name, spec, from_config, wanted, state, pid, restarts, "
	        "last_exit_status, last_signal, started_ms, last_heartbeat_ms, tokens_in, "
	        "tokens_out, cost_usd, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
	        "?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT(name) DO UPDATE SET spec = ?2, "
	        "from_config = ?3, wanted = ?4, state = ?5, pid = ?6, restarts = ?7, "
	        "last_exit_status = ?8, last_signal = ?9, started_ms = ?10, last_heartbeat_ms = "
	        "?11, tokens_in = ?12, tokens_out = ?13, cost_usd = ?14, updated_ms = ?15");
	if (s == NULL)
		return;
	if (a->spec == NULL) {
		/* The spec is fixed once the agent exists: serialised once. */
		json_t *spec = agent_cfg_json(&a->cfg);
		a->spec = json_dumps(spec, JSON_COMPACT);
		json_decref(spec);
	}
	const char *spectext = a->spec;
	int64_t now = time_wall_ms(), mono = time_mono_ms();
	sqlite3_bind_text(s, 1, a->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 2, spectext, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(s, 3, a->from_config);
	sqlite3_bind_int(s, 4, a->wanted);
	sqlite3_bind_text(s, 5, agent_state_name(a->state), -1, SQLITE_STATIC);
	if (a->pid > 0)
		sqlite3_bind_int64(s, 6, a->pid);
	sqlite3_bind_int(s, 7, a->restarts);
	sqlite3_bind_int64(s, 8, a->last_exit_status);
	sqlite3_bind_int(s, 9, a->last_signal);
	if (a->started_ms > 0)
		sqlite3_bind_int64(s, 10, now - (mono - a->started_ms));
	if (a->last_seen_ms > 0)
		sqlite3_bind_int64(s, 11, now - (mono - a->last_seen_ms));
	sqlite3_bind_int64(s, 12, a->tokens_in);
	sqlite3_bind_int64(s, 13, a->tokens_out);
	sqlite3_bind_double(s, 14, a->cost_usd);
	sqlite3_bind_int64(s, 15, now);
	store_step_write(st, s);
}

/* ---- the state machine ------------------------------------------------ */

/* Records why we are about to end the agent's process or connection; it
 * becomes last_exit_why when the end is seen. */
static void
agent_set_kill_reason(struct agent *a, const char *why)
{
	free(a->kill_reason);
	a->kill_reason = xstrdup(why);
}

/* Moves a to state `to` (an allowed edge), logs why and persists it. */
static void
agent_set_state(struct agent *a, enum agent_state to, enum log_level lvl, const char *why)
{
	enum agent_state from = a->state;
	if (from == to && to != AGENT_STARTING)
		return;
	if (!(allowed[from] & (1u << to))) {
		log_error(orch_log(a->orch), a->name, "internal: refused transition %s -> %s",
		          agent_state_name(from), agent_state_name(to));
		return;
	}
	a->state = to;
	a->state_since_ms = time_mono_ms();
	free(a->state_why);
	a->state_why = why != NULL ? xstrdup(why) : NULL;
	if (log_enabled(orch_log(a->orch), lvl))
		log_emit(orch_log(a->orch), lvl, a->name,
		         json_pack("{s:s,s:s}", "from", agent_state_name(from), "to",
		                   agent_state_name(to)),
		         "%s -> %s%s%s", agent_state_name(from), agent_state_name(to),
		         why ? ": " : "", why ? why : "");
	/* Ready <-> busy is only the load (a task taken or finished, twice
	 * per task): nothing a restart needs, so not a write to the store. */
	bool load_only =
	    (from == AGENT_READY && to == AGENT_BUSY) || (from == AGENT_BUSY && to == AGENT_READY);
	if (!load_only)
		agent_persist(a);
	orch_agent_state(a->orch, a, from);
}

/* The state a connected agent is in when nothing is wrong. */
static enum agent_state
agent_live_state(const struct agent *a)
{
	if (a->paused_flag)
		return AGENT_PAUSED;
	return a->max_tasks > 0 && a->running_tasks >= a->max_tasks ? AGENT_BUSY : AGENT_READY;
}

static void agent_on_timer(uv_timer_t *t);

/* Ends the agent's connection: a signal to a child process, or closing
 * another link.  Returns 0, or -1 if there is nothing to end. */
static int
agent_end_link(struct agent *a, int sig)
{
	if (a->proc != NULL)
		return spawn_signal(a, sig);
	if (a->link_ops != NULL && a->link_ops->close != NULL && a->hello_done) {
		a->link_ops->close(a);
		return 0;
	}
	return -1;
}
static void agent_on_hb_timer(uv_timer_t *t);
static void agents_stop_next(struct agents *as);

/* Starts the agent's program: STARTING, hello deadline armed. */
static void
agent_do_start(struct agent *a)
{
	char *cause = NULL;
	a->hello_done = false;
	a->bad_lines = 0;
	a->stop_requested = false;
	a->stop_phase = 0;
	a->start_seq = ++orch_agents(a->orch)->next_seq;
	a->started_ms = time_mono_ms();
	a->last_seen_ms = 0;
	proto_framer_free(&a->framer);
	proto_framer_init(&a->framer, orch_config(a->orch)->agents.max_line, NULL, NULL, a);
	uv_timer_stop(a->hb_timer);

	if (a->cfg.type != NULL && strcmp(a->cfg.type, "process") != 0) {
		/* An extension's agent type connects it now (agents_attach);
		 * other attached agents come back by reattaching. */
		if (orch_agent_wants_link(a->orch, a))
			return;
		agent_set_state(a, AGENT_STOPPED, LVL_INFO, "waiting for its link to reconnect");
		return;
	}
	if (spawn_process(a, &cause) != 0) {
		agent_set_state(a, AGENT_STARTING, LVL_INFO, NULL);
		log_error(orch_log(a->orch), a->name, "%s", cause);
		free(cause);
		struct agent_exit ex = {.exited = true, .status = 127, .why = "cannot start"};
		agent_link_closed(a, &ex);
		return;
	}
	char why[64];
	snprintf(why, sizeof why, "pid %ld", (long)a->pid);
	agent_set_state(a, AGENT_STARTING, LVL_INFO, why);
	uv_timer_start(a->timer, agent_on_timer, (uint64_t)(a->cfg.hello_timeout * 1000.0), 0);
}

/* Escalates a stop: command stop, then SIGTERM, then SIGKILL. */
static void
agent_stop_step(struct agent *a)
{
	uint64_t grace = (uint64_t)(a->cfg.stop_grace * 1000.0);
	if (a->stop_phase == 0) {
		a->stop_phase = 1;
		if (a->hello_done && agent_send_command(a, "stop", NULL) == 0) {
			uv_timer_start(a->timer, agent_on_timer, grace, 0);
			return;
		}
	}
	if (a->stop_phase == 1) {
		a->stop_phase = 2;
		if (agent_end_link(a, SIGTERM) == 0) {
			uv_timer_start(a->timer, agent_on_timer, grace, 0);
			return;
		}
	}
	if (a->stop_phase >= 2) {
		if (a->stop_phase == 2)
			log_warn(orch_log(a->orch), a->name,
			         "did not exit %.1f s after SIGTERM: SIGKILL", a->cfg.stop_grace);
		a->stop_phase = 3;
		agent_end_link(a, SIGKILL);
		uv_timer_start(a->timer, agent_on_timer, grace, 0);
	}
}

/* The per-agent timer: hello deadline, backoff, stop escalation. */
static void
agent_on_timer(uv_timer_t *t)
{
	struct agent *a = t->data;
	switch (a->state) {
	case AGENT_STARTING:
		log_warn(orch_log(a->orch), a->name, "no hello within %.1f s: killing it",
		         a->cfg.hello_timeout);
		agent_set_kill_reason(a, "no hello");
		agent_end_link(a, SIGKILL);
		break;
	case AGENT_BACKOFF:
		agent_do_start(a);
		break;
	case AGENT_STOPPING:
	case AGENT_UNHEALTHY:
		agent_stop_step(a);
		break;
	default:
		break;
	}
}

/* Heartbeat deadline: lazily re-armed, so traffic costs no timer update. */
static void
agent_on_hb_timer(uv_timer_t *t)
{
	struct agent *a = t->data;
	double timeout = a->cfg.heartbeat_timeout;
	if (timeout <= 0 || !agent_state_connected(a->state))
		return;
	int64_t now = time_mono_ms();
	int64_t idle = now - a->last_seen_ms;
	int64_t limit = (int64_t)(timeout * 1000.0);
	if (a->throttled_by != NULL) {
		/* Held back by the bus: its heartbeats wait unread.  For one
		 * timeout at most, then it is let go, so that a link that died
		 * meanwhile shows (its end is read) and heartbeats count again. */
		int64_t held = now - a->throttled_ms;
		if (held >= limit) {
			agent_unthrottle(a);
			held = 0;
		}
		uv_timer_start(a->hb_timer, agent_on_hb_timer, (uint64_t)(limit - held), 0);
		return;
	}
	if (idle < limit) {
		uv_timer_start(a->hb_timer, agent_on_hb_timer, (uint64_t)(limit - idle), 0);
		return;
	}
	char why[96];
	snprintf(why, sizeof why, "no heartbeat for %.1f s; restarting", (double)idle / 1000.0);
	agent_set_state(a, AGENT_UNHEALTHY, LVL_WARN, why);
	agent_set_kill_reason(a, "unhealthy");
	/* A hung agent will not obey `command stop`: go straight to signals. */
	a->stop_phase = 1;
	agent_stop_step(a);
}

/* Decides what follows an unexpected end: backoff, stopped or failed. */
static void
agent_after_failure(struct agent *a, bool failure, const char *desc)
{
	const struct agent_cfg *c = &a->cfg;
	enum restart_policy p = c->restart;

	if (p == RESTART_NEVER || (p == RESTART_ON_FAILURE && !failure)) {
		if (failure)
			agent_set_state(a, AGENT_FAILED, LVL_ERROR, desc);
		else
			agent_set_state(a, AGENT_STOPPED, LVL_INFO, desc);
		return;
	}
	/* Restart intensity: at most intensity_max restarts per period. */
	int64_t now = time_mono_ms();
	int64_t window = (int64_t)(c->intensity_period * 1000.0);
	int recent = 0;
	for (int i = 0; i < a->nrestart_times; i++) {
		if (now - a->restart_times[i] < window)
			recent++;
	}
	if (c->intensity_max > 0 && recent >= c->intensity_max) {
		char why[512];
		snprintf(why, sizeof why,
		         "%s; %d restarts in %.0f s, giving up (restart intensity); 'agent "
		         "restart %s' tries again",
		         desc, recent, c->intensity_period, a->name);
		agent_set_state(a, AGENT_FAILED, LVL_ERROR, why);
		return;
	}
	if (c->intensity_max > 0) {
		if (a->nrestart_times < c->intensity_max) {
			a->restart_times[a->nrestart_times++] = now;
		} else {
			memmove(a->restart_times, a->restart_times + 1,
			        (size_t)(c->intensity_max - 1) * sizeof(int64_t));
			a->restart_times[c->intensity_max - 1] = now;
		}
	}
	/* Backoff: a run that was stable long enough resets the exponent. */
	if (a->ready_ms > 0 && now - a->ready_ms >= (int64_t)(c->backoff.reset_after * 1000.0) &&
	    a->ready_ms >= a->started_ms)
		a->attempt = 0;
	a->attempt++;
	double delay = c->backoff.initial * pow(c->backoff.factor, a->attempt - 1);
	if (delay > c->backoff.cap)
		delay = c->backoff.cap;
	a->restarts++;
	a->next_restart_ms = now + (int64_t)(delay * 1000.0);
	char why[512];
	snprintf(why, sizeof why, "%s; restart in %.1f s, attempt %d", desc, delay, a->attempt);
	agent_set_state(a, AGENT_BACKOFF, failure ? LVL_WARN : LVL_INFO, why);
	/* At least 1 ms: a 0 ms timer re-armed from its own callback would run
	 * again in the same loop pass and starve everything else. */
	uint64_t ms = (uint64_t)(delay * 1000.0);
	uv_timer_start(a->timer, agent_on_timer, ms > 0 ? ms : 1, 0);
}

void
agent_link_closed(struct agent *a, const struct agent_exit *ex)
{
	bool was_connected = a->hello_done;
	enum agent_state prev = a->state;
	uv_timer_stop(a->timer);
	uv_timer_stop(a->hb_timer);
	a->hello_done = false;
	a->link_ops = NULL;
	free(a->throttled_by); /* (its next link starts reading) */
	a->throttled_by = NULL;
	a->pid = 0;
	a->last_exit_status = ex->status;
	a->last_signal = ex->signal;
	free(a->last_exit_why);
	a->last_exit_why = xstrdup(a->kill_reason ? a->kill_reason : ex->why);
	free(a->kill_reason);
	a->kill_reason = NULL;
	if (was_connected)
		orch_agent_gone(a->orch, a);
	a->running_tasks = 0;

	char desc[256];
	if (ex->signal != 0)
		snprintf(desc, sizeof desc, "%s (signal %d)", a->last_exit_why, ex->signal);
	else if (ex->exited)
		snprintf(desc, sizeof desc, "%s (status %lld)", a->last_exit_why,
		         (long long)ex->status);
	else
		snprintf(desc, sizeof desc, "%s", a->last_exit_why);

	if (a->stop_requested) {
		a->stop_requested = false;
		if (a->restart_requested) {
			a->restart_requested = false;
			a->attempt = 0;
			agent_do_start(a);
		} else {
			agent_set_state(a, AGENT_STOPPED, LVL_INFO, desc);
		}
		if (orch_agents(a->orch)->stopping_all)
			agents_stop_next(orch_agents(a->orch));
		return;
	}
	if (a->hold_failed) { /* agent_fail: its own words, no restart */
		a->hold_failed = false;
		agent_set_state(a, AGENT_FAILED, LVL_ERROR, a->last_exit_why);
		return;
	}

	bool clean = ex->exited && ex->status == 0 && ex->signal == 0;
	bool failure = !clean || prev == AGENT_STARTING || prev == AGENT_UNHEALTHY;
	if (prev == AGENT_STARTING && !was_connected)
		a->ready_ms = 0; /* a failed start is never "stable" */
	agent_after_failure(a, failure, desc);
}

/* ---- the protocol session --------------------------------------------- */

static void
agent_on_close_timer(uv_timer_t *t)
{
	agent_end_link(t->data, SIGKILL);
}

/* Ends the connection shortly after a fatal protocol error, so that the
 * agent can still read the error reply sent just before. */
static void
agent_close_after_error(struct agent *a, const char *why)
{
	agent_set_kill_reason(a, why);
	proto_framer_stop(&a->framer);
	uv_timer_stop(a->hb_timer);
	uv_timer_start(a->timer, agent_on_close_timer, 250, 0);
}

/* Counts a bad line; replies with an error, and disconnects after too many. */
static void
agent_bad_line(struct agent *a, const char *code, const char *detail, const char *ref)
{
	agent_send_error(a, code, detail, ref);
	log_warn(orch_log(a->orch), a->name, "protocol error %s: %s", code, detail);
	if (++a->bad_lines >= PROTO_MAX_BAD_LINES) {
		char d[64];
		snprintf(d, sizeof d, "%d bad lines in a row", a->bad_lines);
		agent_send_error(a, PERR_TOO_MANY_ERRORS, d, NULL);
		agent_close_after_error(a, "protocol errors");
	}
}

/* Makes a random session id (hex) for welcome. */
static char *
agent_session_id(void)
{
	unsigned char r[8];
	if (getrandom(r, sizeof r, 0) != sizeof r)
		memset(r, 0, sizeof r);
	char *s = xmalloc(2 * sizeof r + 1);
	for (size_t i = 0; i < sizeof r; i++)
		sprintf(s + 2 * i, "%02x", r[i]);
	return s;
}

/* hello: validates the name, merges capabilities, answers welcome. */
static void
agent_on_hello(struct agent *a, const struct proto_msg *m)
{
	const char *name = proto_str(m, "name");
	if (strcmp(name, a->name) != 0) {
		char d[200];
		snprintf(d, sizeof d, "this agent is '%s', hello says '%s'", a->name, name);
		agent_send_error(a, PERR_NAME_MISMATCH, d, NULL);
		log_error(orch_log(a->orch), a->name, "hello: %s", d);
		agent_close_after_error(a, "name mismatch");
		return;
	}
	for (size_t i = 0; i < a->ncaps; i++)
		free(a->caps[i]);
	free(a->caps);
	json_t *caps = proto_get(m, "capabilities");
	a->caps = xcalloc(a->cfg.ncaps + json_array_size(caps) + 1, sizeof(char *));
	a->ncaps = 0;
	for (size_t i = 0; i < a->cfg.ncaps; i++)
		a->caps[a->ncaps++] = xstrdup(a->cfg.caps[i]);
	size_t i;
	json_t *v;
	json_array_foreach(caps, i, v)
	{
		if (!agent_has_cap(a, json_string_value(v)))
			a->caps[a->ncaps++] = xstrdup(json_string_value(v));
	}
	a->max_tasks = (int)proto_int(m, "max_tasks", a->cfg.max_tasks);
	free(a->version);
	const char *ver = proto_str(m, "version");
	a->version = ver ? xstrdup(ver) : NULL;
	free(a->session);
	a->session = agent_session_id();
	a->hello_done = true;
	a->ready_ms = time_mono_ms();
	uv_timer_stop(a->timer);
	agent_send_line(a, proto_welcome(a->name, a->session));
	if (a->cfg.heartbeat_timeout > 0)
		uv_timer_start(a->hb_timer, agent_on_hb_timer,
		               (uint64_t)(a->cfg.heartbeat_timeout * 1000.0), 0);
	char why[96];
	snprintf(why, sizeof why, "hello, %zu capabilities, max_tasks %d", a->ncaps, a->max_tasks);
	agent_set_state(a, agent_live_state(a), LVL_INFO, why);
	if (a->paused_flag)
		agent_send_command(a, "pause", NULL);
	orch_agent_ready(a->orch, a);
}

/* usage: accumulates tokens and cost. */
static void
agent_on_usage(struct agent *a, const struct proto_msg *m)
{
	a->tokens_in += proto_int(m, "tokens_in", 0);
	a->tokens_out += proto_int(m, "tokens_out", 0);
	a->cost_usd += proto_num(m, "cost_usd", 0);
	agent_persist(a);
}

/* One complete protocol line from the agent. */
static void
agent_on_line(void *arg, const char *line, size_t len)
{
	struct agent *a = arg;
	struct proto_msg m;
	struct proto_err e = {0};

	a->last_seen_ms = time_mono_ms();
	if ((a->input_utf8 ? proto_parse_utf8 : proto_parse)(line, len, &m, &e) != 0) {
		if (strcmp(e.code, PERR_BAD_PROTO) == 0) {
			/* A protocol we do not speak: nothing else can work. */
			agent_send_error(a, e.code, e.detail, e.ref);
			log_warn(orch_log(a->orch), a->name, "protocol error %s: %s; disconnecting",
			         e.code, e.detail);
			agent_close_after_error(a, "bad protocol version");
		} else {
			agent_bad_line(a, e.code, e.detail, e.ref);
		}
		proto_err_clear(&e);
		return;
	}
	if (!a->hello_done) {
		if (m.type == PROTO_HELLO && a->state == AGENT_STARTING) {
			a->bad_lines = 0;
			agent_on_hello(a, &m);
		} else
			agent_bad_line(a, PERR_HELLO_FIRST, "the first message must be hello",
			               proto_str(&m, "ref"));
		proto_msg_free(&m);
		return;
	}
	switch (m.type) {
	case PROTO_HELLO:
		agent_bad_line(a, PERR_DUPLICATE_HELLO, "hello was already received",
		               proto_str(&m, "ref"));
		proto_msg_free(&m);
		return;
	case PROTO_HEARTBEAT:
		a->load = proto_num(&m, "load", a->load);
		break;
	case PROTO_LOG: {
		enum log_level lvl = LVL_INFO;
		log_level_parse(proto_str(&m, "level"), &lvl);
		json_t *fields = proto_get(&m, "fields");
		log_emit(orch_log(a->orch), lvl, a->name, fields ? json_incref(fields) : NULL, "%s",
		         proto_str(&m, "msg"));
		break;
	}
	case PROTO_USAGE:
		agent_on_usage(a, &m);
		break;
	case PROTO_DEVLOG: {
		/* Narrative entries: a log record tagged devlog (Dreamscribe
		 * ingests them when loaded). */
		json_int_t task = proto_int(&m, "task", 0);
		json_t *fields = task > 0 ? json_pack("{s:b,s:I}", "devlog", 1, "task", task)
		                          : json_pack("{s:b}", "devlog", 1);
		log_emit(orch_log(a->orch), LVL_INFO, a->name, fields, "%s", proto_str(&m, "text"));
		break;
	}
	default:
		if (!orch_agent_message(a->orch, a, &m)) {
			agent_bad_line(a, PERR_UNKNOWN_TYPE, "not supported by this orchestrator",
			               proto_str(&m, "ref"));
			proto_msg_free(&m);
			return;
		}
		break;
	}
	/* Only a line that was accepted ends a run of bad ones. */
	a->bad_lines = 0;
	proto_msg_free(&m);
}

/* An oversized line: error and disconnect. */
static void
agent_on_overflow(void *arg, size_t len)
{
	struct agent *a = arg;
	char d[96];
	snprintf(d, sizeof d, "line longer than agents.max_line (%zu bytes)", a->framer.max_line);
	agent_send_error(a, PERR_LINE_TOO_LONG, d, NULL);
	log_warn(orch_log(a->orch), a->name, "protocol error %s: %s; disconnecting",
	         PERR_LINE_TOO_LONG, d);
	agent_close_after_error(a, "line too long");
}

/* (The framer's callbacks are set at each feed: a restart re-initialises
 * it without them.) */
static void
agent_framer_arm(struct agent *a)
{
	a->framer.on_line = agent_on_line;
	a->framer.on_overflow = agent_on_overflow;
	a->framer.arg = a;
}

void
agent_link_input(struct agent *a, const char *data, size_t len)
{
	agent_framer_arm(a);
	time_batch_begin(); /* (the lines of one read arrived together) */
	proto_framer_feed(&a->framer, data, len);
	time_batch_end();
	store_progress(orch_store(a->orch));
}

void
agent_link_message(struct agent *a, const char *data, size_t len, bool utf8_checked)
{
	agent_framer_arm(a);
	time_batch_begin();
	a->input_utf8 = utf8_checked;
	proto_framer_feed_line(&a->framer, data, len);
	a->input_utf8 = false;
	time_batch_end();
	store_progress(orch_store(a->orch));
}

int
agent_send_line(struct agent *a, char *line)
{
	int rc = agent_send_text(a, line, strlen(line));
	free(line);
	return rc;
}

static int
agent_send(struct agent *a, const char *line, size_t len, bool owed)
{
	if (a->link_ops == NULL || a->link_ops->send(a, line, len, owed) != 0)
		return -1;
	return 0;
}

int
agent_send_text(struct agent *a, const char *line, size_t len)
{
	return agent_send(a, line, len, false);
}

int
agent_send_owed(struct agent *a, const char *line, size_t len)
{
	return agent_send(a, line, len, true);
}

int
agent_send_command(struct agent *a, const char *name, json_t *args)
{
	return agent_send_line(a, proto_command(name, args));
}

void
agent_send_error(struct agent *a, const char *code, const char *detail, const char *ref)
{
	agent_send_line(a, proto_error(code, detail, ref));
}

/* ---- registry --------------------------------------------------------- */

struct agents *
agents_new(struct orch *o)
{
	struct agents *as = xcalloc(1, sizeof *as);
	as->orch = o;
	strmap_init(&as->byname);
	return as;
}

static void
agent_free(struct agent *a)
{
	agent_cfg_clear(&a->cfg);
	for (size_t i = 0; i < a->ncaps; i++)
		free(a->caps[i]);
	free(a->caps);
	proto_framer_free(&a->framer);
	free(a->restart_times);
	free(a->session);
	free(a->version);
	free(a->last_exit_why);
	free(a->kill_reason);
	free(a->state_why);
	free(a->throttled_by);
	free(a->spec);
	free(a->name);
	free(a);
}

void
agents_free(struct agents *as)
{
	if (as == NULL)
		return;
	for (size_t i = 0; i < as->n; i++)
		agent_free(as->list[i]);
	free(as->list);
	free(as->stop_order);
	strmap_free(&as->byname);
	free(as);
}

struct agent *
agents_find(struct agents *as, const char *name)
{
	return strmap_get(&as->byname, name);
}

size_t
agents_count(const struct agents *as)
{
	return as->n;
}

struct agent *
agents_at(struct agents *as, size_t i)
{
	return i < as->n ? as->list[i] : NULL;
}

size_t
agents_up(const struct agents *as)
{
	size_t n = 0;
	for (size_t i = 0; i < as->n; i++)
		n += agent_state_connected(as->list[i]->state);
	return n;
}

/* Creates the agent object (not started). */
static struct agent *
agent_new(struct agents *as, const struct agent_cfg *cfg, bool from_config)
{
	struct agent *a = xcalloc(1, sizeof *a);
	a->orch = as->orch;
	a->name = xstrdup(cfg->name);
	agent_cfg_copy(&a->cfg, cfg);
	a->from_config = from_config;
	a->wanted = true;
	a->state = AGENT_STOPPED;
	a->max_tasks = cfg->max_tasks;
	a->restart_times =
	    xcalloc((size_t)(cfg->intensity_max > 0 ? cfg->intensity_max : 1), sizeof(int64_t));
	proto_framer_init(&a->framer, orch_config(as->orch)->agents.max_line, agent_on_line,
	                  agent_on_overflow, a);
	a->timer = xmalloc(sizeof *a->timer);
	a->hb_timer = xmalloc(sizeof *a->hb_timer);
	uv_timer_init(orch_loop(as->orch), a->timer);
	uv_timer_init(orch_loop(as->orch), a->hb_timer);
	a->timer->data = a->hb_timer->data = a;
	a->caps = xcalloc(cfg->ncaps + 1, sizeof(char *));
	for (size_t i = 0; i < cfg->ncaps; i++)
		a->caps[a->ncaps++] = xstrdup(cfg->caps[i]);
	if (as->n == as->cap) {
		as->cap = as->cap ? as->cap * 2 : 16;
		as->list = xreallocarray(as->list, as->cap, sizeof *as->list);
	}
	as->list[as->n++] = a;
	strmap_set(&as->byname, a->name, a);
	return a;
}

struct agent *
agents_spawn(struct agents *as, const struct agent_cfg *cfg, bool from_config, char **cause)
{
	if (cfg->name == NULL || !proto_valid_agent_name(cfg->name)) {
		*cause = xasprintf("invalid agent name '%s' (letters, digits, '_', '.', '-'; at "
		                   "most 64)",
		                   cfg->name ? cfg->name : "");
		return NULL;
	}
	if (agents_find(as, cfg->name) != NULL) {
		*cause = xasprintf("agent '%s' already exists", cfg->name);
		return NULL;
	}
	if ((cfg->type == NULL || strcmp(cfg->type, "process") == 0) && cfg->command == NULL) {
		*cause = xasprintf("agent '%s' has no command", cfg->name);
		return NULL;
	}
	/* A program that cannot run would only be restarted until it fails,
	 * and remembered: refuse it now, with the reason. */
	if ((cfg->type == NULL || strcmp(cfg->type, "process") == 0) &&
	    spawn_check_program(cfg, orch_runtime(as->orch), cause) != 0)
		return NULL;
	struct agent *a = agent_new(as, cfg, from_config);
	agent_persist(a);
	if (orch_quitting(as->orch))
		return a;
	agent_do_start(a);
	return a;
}

/* Restores counters from the agent's row of an earlier run. */
static void
agent_restore_row(struct agent *a, sqlite3_stmt *s)
{
	a->tokens_in = sqlite3_column_int64(s, 3);
	a->tokens_out = sqlite3_column_int64(s, 4);
	a->cost_usd = sqlite3_column_double(s, 5);
}

void
agents_start_configured(struct agents *as)
{
	const struct config *cfg = orch_config(as->orch);
	struct store *st = orch_store(as->orch);
	char *cause = NULL;

	/* Config agents first, in the order of the file. */
	for (size_t i = 0; i < cfg->agents.n; i++) {
		const struct agent_cfg *ac = &cfg->agents.list[i];
		struct agent *a = agent_new(as, ac, true);
		sqlite3_stmt *s =
		    store_stmt(st, "SELECT name, spec, wanted, tokens_in, "
		                   "tokens_out, cost_usd FROM agents WHERE name = ?1");
		if (s != NULL) {
			sqlite3_bind_text(s, 1, ac->name, -1, SQLITE_STATIC);
			if (sqlite3_step(s) == SQLITE_ROW)
				agent_restore_row(a, s);
			sqlite3_reset(s);
		}
		agent_persist(a);
		if (ac->autostart)
			agent_do_start(a);
	}
	/* Then agents spawned by the captain in earlier runs. */
	sqlite3_stmt *s = store_stmt(st, "SELECT name, spec, wanted, tokens_in, tokens_out, "
	                                 "cost_usd FROM agents WHERE from_config = 0 ORDER BY "
	                                 "rowid");
	struct agent **restored = NULL;
	size_t nrestored = 0;
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(s, 0);
		if (agents_find(as, name) != NULL)
			continue; /* now in the config file */
		json_t *spec = json_loads((const char *)sqlite3_column_text(s, 1), 0, NULL);
		if (spec == NULL)
			continue;
		struct agent_cfg ac;
		agent_cfg_init(&ac, cfg);
		agent_cfg_from_json(&ac, spec);
		json_decref(spec);
		struct agent *a = agent_new(as, &ac, false);
		agent_cfg_clear(&ac);
		agent_restore_row(a, s);
		a->wanted = sqlite3_column_int(s, 2) != 0;
		restored = xreallocarray(restored, nrestored + 1, sizeof *restored);
		restored[nrestored++] = a;
	}
	if (s != NULL)
		sqlite3_reset(s);
	/* Rows of config agents that left the config file. */
	sqlite3_stmt *d = store_stmt(st, "SELECT name FROM agents WHERE from_config = 1");
	char **gone = NULL;
	size_t ngone = 0;
	while (d != NULL && sqlite3_step(d) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(d, 0);
		if (agents_find(as, name) == NULL) {
			gone = xreallocarray(gone, ngone + 1, sizeof *gone);
			gone[ngone++] = xstrdup(name);
		}
	}
	if (d != NULL)
		sqlite3_reset(d);
	for (size_t i = 0; i < ngone; i++) {
		sqlite3_stmt *del = store_stmt(st, "DELETE FROM agents WHERE name = ?1");
		sqlite3_bind_text(del, 1, gone[i], -1, SQLITE_TRANSIENT);
		store_step_write(st, del);
		free(gone[i]);
	}
	free(gone);
	for (size_t i = 0; i < nrestored; i++) {
		if (restored[i]->wanted && restored[i]->cfg.autostart)
			agent_do_start(restored[i]);
		else
			agent_persist(restored[i]);
	}
	free(restored);
	(void)cause;
}

/* ---- captain actions -------------------------------------------------- */

int
agent_stop(struct agent *a, char **cause)
{
	a->wanted = false;
	switch (a->state) {
	case AGENT_STOPPED:
	case AGENT_FAILED:
		agent_persist(a);
		*cause = xasprintf("agent '%s' is not running (%s)", a->name,
		                   agent_state_name(a->state));
		return -1;
	case AGENT_STOPPING:
		return 0;
	case AGENT_BACKOFF:
		uv_timer_stop(a->timer);
		agent_set_state(a, AGENT_STOPPED, LVL_INFO, "stopped while in backoff");
		if (orch_agents(a->orch)->stopping_all)
			agents_stop_next(orch_agents(a->orch));
		return 0;
	default:
		break;
	}
	a->stop_requested = true;
	a->stop_phase = a->state == AGENT_UNHEALTHY ? a->stop_phase : 0;
	if (a->state != AGENT_UNHEALTHY) {
		agent_set_state(a, AGENT_STOPPING, LVL_INFO, "stop requested");
		uv_timer_stop(a->hb_timer);
		agent_stop_step(a);
	}
	return 0;
}

int
agent_start(struct agent *a, char **cause)
{
	if (a->state != AGENT_STOPPED && a->state != AGENT_FAILED) {
		*cause = xasprintf("agent '%s' is already %s", a->name, agent_state_name(a->state));
		return -1;
	}
	a->wanted = true;
	a->attempt = 0;
	a->nrestart_times = 0;
	agent_do_start(a);
	return 0;
}

int
agent_restart(struct agent *a, char **cause)
{
	a->wanted = true;
	switch (a->state) {
	case AGENT_STOPPED:
	case AGENT_FAILED:
		return agent_start(a, cause);
	case AGENT_BACKOFF:
		uv_timer_stop(a->timer);
		a->attempt = 0;
		agent_do_start(a);
		return 0;
	case AGENT_STOPPING:
		a->restart_requested = true;
		return 0;
	default:
		a->restart_requested = true;
		a->attempt = 0;
		a->nrestart_times = 0;
		if (a->state != AGENT_UNHEALTHY) {
			a->stop_requested = true;
			agent_set_state(a, AGENT_STOPPING, LVL_INFO, "restart requested");
			uv_timer_stop(a->hb_timer);
			a->stop_phase = 0;
			agent_stop_step(a);
		} else {
			a->stop_requested = true;
		}
		return 0;
	}
}

int
agent_kill(struct agent *a, int sig, char **cause)
{
	if (a->pid <= 0 || spawn_signal(a, sig) != 0) {
		*cause = xasprintf("agent '%s' has no process (%s)", a->name,
		                   agent_state_name(a->state));
		return -1;
	}
	agent_set_kill_reason(a, "killed by the captain");
	log_warn(orch_log(a->orch), a->name, "sent signal %d (pid %ld) by the captain", sig,
	         (long)a->pid);
	return 0;
}

int
agent_pause(struct agent *a, char **cause)
{
	if (!agent_state_connected(a->state)) {
		*cause =
		    xasprintf("agent '%s' is %s, not running", a->name, agent_state_name(a->state));
		return -1;
	}
	if (a->state == AGENT_PAUSED) {
		*cause = xasprintf("agent '%s' is already paused", a->name);
		return -1;
	}
	a->paused_flag = true;
	agent_send_command(a, "pause", NULL);
	agent_set_state(a, AGENT_PAUSED, LVL_INFO, "paused by the captain");
	return 0;
}

int
agent_pause_why(struct agent *a, const char *why, char **cause)
{
	if (!agent_state_connected(a->state)) {
		*cause =
		    xasprintf("agent '%s' is %s, not running", a->name, agent_state_name(a->state));
		return -1;
	}
	a->paused_flag = true;
	if (a->state == AGENT_PAUSED) { /* a new reason */
		free(a->state_why);
		a->state_why = xstrdup(why);
		log_warn(orch_log(a->orch), a->name, "paused: %s", why);
		agent_persist(a);
		return 0;
	}
	agent_set_state(a, AGENT_PAUSED, LVL_WARN, why);
	return 0;
}

int
agent_resume_why(struct agent *a, const char *why, char **cause)
{
	if (a->state != AGENT_PAUSED) {
		*cause =
		    xasprintf("agent '%s' is not paused (%s)", a->name, agent_state_name(a->state));
		return -1;
	}
	a->paused_flag = false;
	agent_set_state(a, agent_live_state(a), LVL_INFO, why);
	orch_agent_ready(a->orch, a);
	return 0;
}

int
agent_fail(struct agent *a, const char *why, char **cause)
{
	if (a->proc != NULL || !agent_state_connected(a->state)) {
		*cause = xasprintf("agent '%s' is %s%s", a->name, agent_state_name(a->state),
		                   a->proc != NULL ? " (a process: it fails by exiting)" : "");
		return -1;
	}
	a->hold_failed = true;
	agent_set_kill_reason(a, why);
	if (agent_end_link(a, SIGKILL) != 0) {
		a->hold_failed = false;
		*cause = xasprintf("agent '%s' has no link to end", a->name);
		return -1;
	}
	return 0;
}

int
agent_resume(struct agent *a, char **cause)
{
	if (a->state != AGENT_PAUSED) {
		*cause =
		    xasprintf("agent '%s' is not paused (%s)", a->name, agent_state_name(a->state));
		return -1;
	}
	a->paused_flag = false;
	agent_send_command(a, "resume", NULL);
	agent_set_state(a, agent_live_state(a), LVL_INFO, "resumed by the captain");
	orch_agent_ready(a->orch, a);
	return 0;
}

bool
agent_takes_any_task(const struct agent *a)
{
	if (a->cfg.specialist)
		return false;
	return a->link_ops == NULL || a->link_ops->specialist == NULL ||
	       !a->link_ops->specialist((struct agent *)a);
}

bool
agent_has_cap(const struct agent *a, const char *cap)
{
	for (size_t i = 0; i < a->ncaps; i++) {
		if (strcmp(a->caps[i], cap) == 0)
			return true;
	}
	return false;
}

bool
agent_can_take_task(const struct agent *a)
{
	/* hello_done is cleared before orch_agent_gone: an agent whose link
	 * just closed must not be handed back its own tasks. */
	return a->hello_done && a->state == AGENT_READY && a->running_tasks < a->max_tasks &&
	       a->throttled_by == NULL; /* (its results would wait unread) */
}

bool
agent_throttle(struct agent *a, const char *by)
{
	if (a->throttled_by != NULL)
		return true;
	if (a->link_ops == NULL || a->link_ops->set_reading == NULL)
		return false;
	a->throttled_by = xstrdup(by);
	a->throttled_ms = time_mono_ms();
	a->link_ops->set_reading(a, false);
	return true;
}

void
agent_unthrottle(struct agent *a)
{
	if (a->throttled_by == NULL)
		return;
	free(a->throttled_by);
	a->throttled_by = NULL;
	/* Its heartbeats waited unread: count from now. */
	a->last_seen_ms = time_mono_ms();
	if (a->link_ops != NULL && a->link_ops->set_reading != NULL)
		a->link_ops->set_reading(a, true);
	orch_agent_unthrottled(a->orch, a);
}

void
agent_tasks_changed(struct agent *a)
{
	if (a->state == AGENT_READY && a->max_tasks > 0 && a->running_tasks >= a->max_tasks)
		agent_set_state(a, AGENT_BUSY, LVL_DEBUG, NULL);
	else if (a->state == AGENT_BUSY && a->running_tasks < a->max_tasks)
		agent_set_state(a, AGENT_READY, LVL_DEBUG, NULL);
}

/* ---- shutdown --------------------------------------------------------- */

static int
cmp_start_seq_desc(const void *x, const void *y)
{
	const struct agent *a = *(struct agent *const *)x, *b = *(struct agent *const *)y;
	return (b->start_seq > a->start_seq) - (b->start_seq < a->start_seq);
}

/* The agent's timers are allocated apart: freed once libuv is done. */
static void
agent_handle_closed_cb(uv_handle_t *h)
{
	free(h);
}

/* Asks every agent not asked yet to stop, in reverse start order but
 * without waiting for one before the next: each has its stop_grace, so a
 * shutdown takes the longest of them, not their sum.  Then, once none is
 * stopping any more, finishes.  Called again at every exit. */
static void
agents_stop_next(struct agents *as)
{
	if (as->in_stop_next) { /* (agent_stop of one in backoff calls back) */
		as->stop_again = true;
		return;
	}
	as->in_stop_next = true;
	do {
		as->stop_again = false;
		while (as->stop_next < as->nstop) {
			struct agent *a = as->stop_order[as->stop_next++];
			if (a->state == AGENT_STOPPED || a->state == AGENT_FAILED ||
			    a->state == AGENT_STOPPING)
				continue;
			bool was_wanted = a->wanted;
			char *cause = NULL;
			agent_stop(a, &cause);
			free(cause);
			/* Shutdown is not the captain's wish: keep it for next start. */
			a->wanted = was_wanted;
		}
	} while (as->stop_again);
	as->in_stop_next = false;
	for (size_t i = 0; i < as->nstop; i++)
		if (as->stop_order[i]->state == AGENT_STOPPING)
			return; /* wait for its exit */
	if (!as->stopping_all)
		return;
	as->stopping_all = false;
	for (size_t i = 0; i < as->n; i++) {
		struct agent *a = as->list[i];
		agent_persist(a);
		uv_close((uv_handle_t *)a->timer, agent_handle_closed_cb);
		uv_close((uv_handle_t *)a->hb_timer, agent_handle_closed_cb);
	}
	if (as->all_done != NULL)
		as->all_done(as->all_arg);
}

void
agents_stop_all(struct agents *as, void (*done)(void *arg), void *arg)
{
	as->all_done = done;
	as->all_arg = arg;
	as->stopping_all = true;
	free(as->stop_order);
	as->stop_order = xcalloc(as->n + 1, sizeof *as->stop_order);
	if (as->n > 0)
		memcpy(as->stop_order, as->list, as->n * sizeof *as->list);
	as->nstop = as->n;
	as->stop_next = 0;
	qsort(as->stop_order, as->nstop, sizeof *as->stop_order, cmp_start_seq_desc);
	if (as->nstop > 0)
		log_info(orch_log(as->orch), "agents",
		         "stopping %zu agents (asked in reverse start order, all at once)",
		         agents_up(as));
	agents_stop_next(as);
}

struct agent *
agents_attach(struct agents *as, const char *name, const char *type, const char *const *caps,
              size_t ncaps, int max_tasks, const struct agent_link_ops *ops, void *link,
              char **cause)
{
	struct agent *a = agents_find(as, name);
	if (a != NULL) {
		if (agent_state_connected(a->state) || a->proc != NULL ||
		    a->state == AGENT_STARTING || a->state == AGENT_STOPPING) {
			*cause = xasprintf("agent '%s' is already connected (%s)", name,
			                   agent_state_name(a->state));
			return NULL;
		}
		if (a->cfg.command != NULL) {
			*cause = xasprintf("agent '%s' is a process agent", name);
			return NULL;
		}
		uv_timer_stop(a->timer);
	} else {
		if (!proto_valid_agent_name(name)) {
			*cause = xasprintf("invalid agent name '%s'", name);
			return NULL;
		}
		struct agent_cfg ac;
		agent_cfg_init(&ac, orch_config(as->orch));
		ac.name = xstrdup(name);
		free(ac.type);
		ac.type = xstrdup(type);
		ac.restart = RESTART_NEVER;
		ac.autostart = false;
		/* A remote agent is remembered (as agent spawn's are), so its
		 * inbox keeps filling across a restart until it reconnects;
		 * an extension's agents come back with the extension. */
		a = agent_new(as, &ac, strcmp(type, "remote") != 0);
		agent_cfg_clear(&ac);
	}
	for (size_t i = 0; i < a->ncaps; i++)
		free(a->caps[i]);
	a->caps = xreallocarray(a->caps, ncaps + 1, sizeof(char *));
	a->ncaps = 0;
	for (size_t i = 0; i < ncaps; i++)
		a->caps[a->ncaps++] = xstrdup(caps[i]);
	a->max_tasks = max_tasks;
	a->link_ops = ops;
	a->link = link;
	a->hello_done = true;
	a->stop_requested = false;
	a->start_seq = ++as->next_seq;
	a->started_ms = a->ready_ms = a->last_seen_ms = time_mono_ms();
	free(a->session);
	a->session = agent_session_id();
	agent_set_state(a, AGENT_STARTING, LVL_DEBUG, type);
	agent_set_state(a, agent_live_state(a), LVL_INFO, "connected");
	if (a->cfg.heartbeat_timeout > 0)
		uv_timer_start(a->hb_timer, agent_on_hb_timer,
		               (uint64_t)(a->cfg.heartbeat_timeout * 1000.0), 0);
	/* welcome before anything else: the inbox and tasks follow it. */
	agent_send_line(a, proto_welcome(a->name, a->session));
	if (a->paused_flag)
		agent_send_command(a, "pause", NULL);
	orch_agent_ready(a->orch, a);
	return a;
}

void
agent_detach(struct agent *a, const char *why)
{
	if (!a->hello_done)
		return;
	a->link = NULL;
	/* Not a crash: it stops and waits to be reattached. */
	struct agent_exit ex = {.exited = true, .status = 0, .why = why};
	agent_link_closed(a, &ex);
}

void
agents_abandon(struct agents *as)
{
	as->stopping_all = false;
	for (size_t i = 0; i < as->n; i++) {
		struct agent *a = as->list[i];
		spawn_abandon(a);
		if (!uv_is_closing((uv_handle_t *)a->timer)) {
			uv_close((uv_handle_t *)a->timer, agent_handle_closed_cb);
			uv_close((uv_handle_t *)a->hb_timer, agent_handle_closed_cb);
		}
	}
}

/* ---- views ------------------------------------------------------------ */

void
agent_describe(const struct agent *a, char *out, size_t len)
{
	int64_t now = time_mono_ms();
	char d[32];
	switch (a->state) {
	case AGENT_BACKOFF:
		snprintf(out, len, "restart in %.1f s, attempt %d",
		         (double)(a->next_restart_ms - now) / 1000.0 > 0
		             ? (double)(a->next_restart_ms - now) / 1000.0
		             : 0.0,
		         a->attempt);
		break;
	case AGENT_PAUSED:
		format_duration((double)(now - a->ready_ms) / 1000.0, d, sizeof d);
		if (a->state_why != NULL)
			snprintf(out, len, "%s; up %s", a->state_why, d);
		else
			snprintf(out, len, "up %s", d);
		break;
	case AGENT_READY:
	case AGENT_BUSY:
		format_duration((double)(now - a->ready_ms) / 1000.0, d, sizeof d);
		if (a->throttled_by != NULL)
			snprintf(out, len, "up %s; held: %s's queue is full", d, a->throttled_by);
		else
			snprintf(out, len, "up %s", d);
		break;

	case AGENT_STARTING:
		format_duration((double)(now - a->started_ms) / 1000.0, d, sizeof d);
		snprintf(out, len, "starting for %s", d);
		break;
	case AGENT_FAILED:
	case AGENT_STOPPED:
		if (a->last_exit_why != NULL && a->last_signal != 0)
			snprintf(out, len, "%s (signal %d)", a->last_exit_why, a->last_signal);
		else if (a->last_exit_why != NULL)
			snprintf(out, len, "%s (status %lld)", a->last_exit_why,
			         (long long)a->last_exit_status);
		else
			snprintf(out, len, "-");
		break;
	default:
		format_duration((double)(now - a->state_since_ms) / 1000.0, d, sizeof d);
		snprintf(out, len, "for %s", d);
	}
}

int64_t
agent_heartbeat_age_ms(const struct agent *a)
{
	/* An in-process agent sends no heartbeats: its age would only grow. */
	if (a->last_seen_ms <= 0 || !agent_state_connected(a->state) ||
	    (a->link_ops != NULL && strcmp(a->link_ops->kind, "extension") == 0))
		return -1;
	return time_mono_ms() - a->last_seen_ms;
}

json_t *
agent_json(const struct agent *a, bool detail)
{
	int64_t now = time_mono_ms();
	char desc[160];
	agent_describe(a, desc, sizeof desc);
	json_t *caps = json_array();
	for (size_t i = 0; i < a->ncaps; i++)
		json_array_append_new(caps, json_string(a->caps[i]));
	json_t *j = json_pack("{s:s,s:s,s:o,s:i,s:i,s:i,s:o,s:s}", "name", a->name, "state",
	                      agent_state_name(a->state), "pid",
	                      a->pid > 0 ? json_integer(a->pid) : json_null(), "tasks",
	                      a->running_tasks, "max_tasks", a->max_tasks, "restarts", a->restarts,
	                      "capabilities", caps, "info", desc);
	int64_t hb = agent_heartbeat_age_ms(a);
	json_object_set_new(j, "heartbeat_age_s",
	                    hb >= 0 ? json_real((double)hb / 1000.0) : json_null());
	json_object_set_new(j, "next_restart_s",
	                    a->state == AGENT_BACKOFF
	                        ? json_real((double)(a->next_restart_ms - now) / 1000.0)
	                        : json_null());
	json_object_set_new(j, "tokens_in", json_integer(a->tokens_in));
	json_object_set_new(j, "tokens_out", json_integer(a->tokens_out));
	json_object_set_new(j, "cost_usd", json_real(a->cost_usd));
	const char *chaos = chaos_agent_note(a->orch, a);
	if (chaos != NULL)
		json_object_set_new(j, "chaos", json_string(chaos));
	if (a->throttled_by != NULL)
		json_object_set_new(j, "throttled_by", json_string(a->throttled_by));
	if (!detail)
		return j;
	json_t *args = json_array();
	for (size_t i = 0; i < a->cfg.nargs; i++)
		json_array_append_new(args, json_string(a->cfg.args[i]));
	json_object_set_new(j, "attempt", json_integer(a->attempt));
	json_object_set_new(j, "command",
	                    a->cfg.command ? json_string(a->cfg.command) : json_null());
	json_object_set_new(j, "args", args);
	json_object_set_new(j, "restart", json_string(restart_policy_name(a->cfg.restart)));
	json_object_set_new(j, "source", json_string(a->from_config ? "config" : "spawn"));
	json_object_set_new(j, "version", a->version ? json_string(a->version) : json_null());
	json_object_set_new(j, "session", a->session ? json_string(a->session) : json_null());
	json_object_set_new(j, "uptime_s",
	                    agent_state_connected(a->state)
	                        ? json_real((double)(now - a->ready_ms) / 1000.0)
	                        : json_null());
	json_object_set_new(j, "last_exit_status", json_integer(a->last_exit_status));
	json_object_set_new(j, "last_signal", json_integer(a->last_signal));
	json_object_set_new(j, "last_exit",
	                    a->last_exit_why ? json_string(a->last_exit_why) : json_null());
	json_object_set_new(j, "load", json_real(a->load));
	json_object_set_new(j, "messages_sent", json_integer((json_int_t)a->msgs_sent));
	json_object_set_new(j, "messages_received", json_integer((json_int_t)a->msgs_received));
	json_object_set_new(j, "heartbeat_timeout_s", json_real(a->cfg.heartbeat_timeout));
	json_object_set_new(j, "state_reason",
	                    a->state_why ? json_string(a->state_why) : json_null());
	json_t *opts = json_object();
	for (size_t i = 0; i < a->cfg.noptions; i++) {
		const char *eq = strchr(a->cfg.options[i], '=');
		char *k = xstrndup(a->cfg.options[i], (size_t)(eq - a->cfg.options[i]));
		json_object_set_new(opts, k, json_string(eq + 1));
		free(k);
	}
	json_object_set_new(j, "options", opts);
	return j;
}
