/* counter.c — a test extension that uses most of the host table: a command
 * with options and completion, a command that answers later, a command
 * that starts an HTTP request, an agent type (messages are counted and
 * acknowledged, tasks answered), an agent created at init from its
 * settings, a repeating timer, a subscription to task events, key-value
 * state, and save/restore of its counters across a hot reload.
 *
 * Built three times by the test suite: counter.so (version 1.0),
 * counter2.so (COUNTER_VERSION "2.0", same name) and counter_bad.so
 * (COUNTER_FAIL_INIT: its init refuses, for the failed reload). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dreamos/extension.h>

#ifndef COUNTER_VERSION
#define COUNTER_VERSION "1.0"
#endif

static const struct dreamos_host *host;

static long messages;    /* messages received by its agents */
static long sum;         /* sum of their "n" */
static long bumps;       /* `counter bump` */
static long ticks;       /* timer */
static long task_events; /* task.done events seen */
static long tasks_run;   /* tasks its agents did */
static long generation;  /* reloads survived */
static long agents_up;   /* agents started and not stopped */
static long msg_events;  /* bus events seen */
static long warn_logs;   /* log records at warn or above seen */
static int sub_id;

static long
getl(const char *json, const char *path)
{
	char *s = host->json_get(json, path);
	long v = s ? strtol(s, NULL, 10) : 0;
	host->free(s);
	return v;
}

/* ---- the agent type ------------------------------------------------------ */

static int
agent_start(struct dreamos_ext *ext, struct dreamos_agent *agent, void **state)
{
	agents_up++;
	*state = NULL;
	host->log(ext, DREAMOS_LOG_DEBUG, "agent %s starts", host->agent_name(agent));
	return 0;
}

static void
agent_on_line(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *line)
{
	char *type = host->json_get(line, "type");
	char out[256];
	if (type != NULL && strcmp(type, "message") == 0) {
		long id = getl(line, "id");
		messages++;
		sum += getl(line, "body.n");
		snprintf(out, sizeof out, "{\"type\":\"ack\",\"id\":%ld}", id);
		host->agent_line(ext, agent, out);
	} else if (type != NULL && strcmp(type, "task.assign") == 0) {
		long id = getl(line, "task.id");
		tasks_run++;
		snprintf(out, sizeof out,
		         "{\"type\":\"task.done\",\"task\":%ld,\"result\":{\"messages\":%ld,"
		         "\"version\":\"%s\"}}",
		         id, messages, COUNTER_VERSION);
		host->agent_line(ext, agent, out);
	}
	host->free(type);
}

static void
agent_stop(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *why)
{
	agents_up--;
	host->log(ext, DREAMOS_LOG_DEBUG, "agent %s stops: %s", host->agent_name(agent), why);
}

static const char *const counter_caps[] = {"count", NULL};

/* ---- commands ---------------------------------------------------------------- */

static void
noop_timer(struct dreamos_ext *ext, void *arg)
{
}

static void
never_done(struct dreamos_ext *ext, void *arg, const struct dreamos_http_response *resp)
{
	host->log(ext, DREAMOS_LOG_ERROR, "a cancelled request answered");
}

/* `counter misc`: calls the rest of the host table and reports. */
static int
misc(struct dreamos_ext *ext, struct dreamos_call *call)
{
	char out[2048];
	struct dreamos_task_spec spec = {.title = "from counter",
	                                 .payload = "{\"x\": 1}",
	                                 .capability = "nobody-has-this",
	                                 .priority = "high",
	                                 .max_retries = -1};
	int64_t id = host->task_submit(ext, &spec);
	char *task = id > 0 ? host->task_get(ext, id) : NULL;
	char *title = host->json_get(task, "title");
	int cancel = host->task_cancel(ext, id);
	struct dreamos_task_spec bad = {.title = "bad", .payload = "{nope"};
	int64_t bad_id = host->task_submit(ext, &bad);
	char *bad_err = host->json_quote(host->last_error(ext));
	int pub = host->publish(ext, "news", "[1, 2]", "low", NULL, NULL);
	int badprio = host->send(ext, "captain", "1", "loud", NULL, NULL);
	char *bridge = host->config_core(ext, "bridge.enabled");
	char *missing = host->config_get(ext, "no.such.key");
	uint64_t t = host->timer_add(ext, 100000, 0, noop_timer, NULL);
	int trm = host->timer_remove(ext, t);
	int trm2 = host->timer_remove(ext, t);
	struct dreamos_http_request rq = {.url = "http://127.0.0.1:9/never", .max_retries = 0};
	uint64_t h = host->http_request(ext, &rq, never_done, NULL, NULL);
	int hc = host->http_cancel(ext, h);
	char *q = host->json_quote("a\"b");
	host->log_fields(ext, DREAMOS_LOG_INFO, "{\"k\": 1}", "misc done");
	snprintf(out, sizeof out,
	         "{\"task\":%lld,\"title\":\"%s\",\"cancel\":%d,\"bad_task\":%lld,"
	         "\"bad_error\":%s,\"publish\":%d,\"bad_priority\":%d,\"bridge\":\"%s\","
	         "\"missing\":%s,\"timer_remove\":[%d,%d],\"http\":%s,\"http_cancel\":%d,"
	         "\"quoted\":%s,\"api\":\"%s\",\"self\":\"%s\"}",
	         (long long)id, title ? title : "", cancel, (long long)bad_id, bad_err, pub,
	         badprio, bridge ? bridge : "", missing ? "\"set\"" : "null", trm, trm2,
	         h > 0 ? "true" : "false", hc, q, host->api_version, host->name(ext));
	host->free(task);
	host->free(title);
	host->free(bad_err);
	host->free(bridge);
	host->free(missing);
	host->free(q);
	if (host->call_reply_json(call, out) != 0)
		return host->call_error(call, "bad JSON: %s", out);
	return DREAMOS_CMD_OK;
}

static int
cmd_counter(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	const char *verb = host->call_arg(call, 0);
	if (verb != NULL && strcmp(verb, "bump") == 0) {
		long by = host->call_arg(call, 1) ? strtol(host->call_arg(call, 1), NULL, 10) : 1;
		bumps += by;
		char v[32];
		snprintf(v, sizeof v, "%ld", bumps);
		if (host->kv_set(ext, "bumps", v) != 0)
			return host->call_error(call, "kv_set: %s", host->last_error(ext));
		const char *note = host->call_opt(call, "note");
		char msg[200];
		snprintf(msg, sizeof msg, "bumped to %ld%s%s", bumps, note ? ": " : "",
		         note ? note : "");
		host->call_reply(call, msg);
		return DREAMOS_CMD_OK;
	}
	if (verb != NULL && strcmp(verb, "misc") == 0)
		return misc(ext, call);
	if (verb != NULL && strcmp(verb, "drop") == 0) {
		/* Unregisters counter-send and the agent type. */
		if (host->command_unregister(ext, "counter-send") != 0 ||
		    host->agent_type_unregister(ext, "counter") != 0)
			return host->call_error(call, "%s", host->last_error(ext));
		host->call_reply(call, "dropped");
		return DREAMOS_CMD_OK;
	}
	if (verb != NULL && strcmp(verb, "quiet") == 0) {
		if (sub_id > 0 && host->unsubscribe(ext, sub_id) != 0)
			return host->call_error(call, "%s", host->last_error(ext));
		sub_id = 0;
		host->call_reply(call, "unsubscribed");
		return DREAMOS_CMD_OK;
	}
	if (verb != NULL && strcmp(verb, "show") != 0)
		return host->call_error(call, "counter: unknown verb '%s' (bump, show, quiet)",
		                        verb);
	char *stored = host->kv_get(ext, "bumps");
	char json[600];
	snprintf(json, sizeof json,
	         "{\"version\":\"%s\",\"messages\":%ld,\"sum\":%ld,\"bumps\":%ld,\"ticks\":%ld,"
	         "\"task_events\":%ld,\"tasks_run\":%ld,\"generation\":%ld,\"agents_up\":%ld,"
	         "\"msg_events\":%ld,\"warn_logs\":%ld,\"stored_bumps\":%s}",
	         COUNTER_VERSION, messages, sum, bumps, ticks, task_events, tasks_run, generation,
	         agents_up, msg_events, warn_logs, stored ? stored : "null");
	host->free(stored);
	host->call_reply_json(call, json);
	return DREAMOS_CMD_OK;
}

static void
complete_counter(struct dreamos_ext *ext, void *arg, const char *partial,
                 dreamos_complete_add_fn add, void *add_arg)
{
	static const char *const words[] = {"bump", "show", "quiet", "misc", "drop"};
	for (size_t i = 0; i < 5; i++) {
		if (strncmp(words[i], partial, strlen(partial)) == 0)
			add(words[i], add_arg);
	}
}

/* counter-wait MS: answers after MS milliseconds (an asynchronous command). */
static void
wait_done(struct dreamos_ext *ext, void *arg)
{
	struct dreamos_call *call = arg;
	host->call_reply(call, "waited");
	host->call_finish(call, DREAMOS_CMD_OK);
}

static int
cmd_wait(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	long ms = strtol(host->call_arg(call, 0), NULL, 10);
	if (host->timer_add(ext, (uint64_t)ms, 0, wait_done, call) == 0)
		return host->call_error(call, "%s", host->last_error(ext));
	return DREAMOS_CMD_WAIT;
}

/* counter-fetch URL: answers with the HTTP status (or the error). */
static void
fetch_done(struct dreamos_ext *ext, void *arg, const struct dreamos_http_response *resp)
{
	struct dreamos_call *call = arg;
	char msg[300];
	snprintf(msg, sizeof msg, "status %ld%s%s", resp->status, resp->error ? ": " : "",
	         resp->error ? resp->error : "");
	host->call_reply(call, msg);
	host->call_finish(call, resp->error ? DREAMOS_CMD_ERROR : DREAMOS_CMD_OK);
}

static int
cmd_fetch(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	struct dreamos_http_request rq = {
	    .size = sizeof rq, .url = host->call_arg(call, 0), .timeout_s = 60, .max_retries = 0};
	if (host->http_request(ext, &rq, fetch_done, NULL, call) == 0)
		return host->call_error(call, "%s", host->last_error(ext));
	return DREAMOS_CMD_WAIT;
}

/* counter-send TO N: sends {"n": N} as the extension. */
static int
cmd_send(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	char body[64];
	snprintf(body, sizeof body, "{\"n\":%s}", host->call_arg(call, 1));
	if (host->send(ext, host->call_arg(call, 0), body, NULL, NULL, NULL) != 0)
		return host->call_error(call, "%s", host->last_error(ext));
	host->call_reply(call, "sent");
	return DREAMOS_CMD_OK;
}

static const struct dreamos_cmd_opt counter_opts[] = {
    {"note", DREAMOS_OPT_VALUE, "TEXT", NULL},
    {NULL, 0, NULL, NULL},
};

/* ---- timer and events ----------------------------------------------------------- */

static void
tick(struct dreamos_ext *ext, void *arg)
{
	ticks++;
}

static void
on_event(struct dreamos_ext *ext, void *arg, const char *kind, const char *json)
{
	if (strcmp(kind, "task.done") == 0)
		task_events++;
	else if (strncmp(kind, "message.", 8) == 0)
		msg_events++;
	else if (strcmp(kind, "log") == 0 && getl(json, "seq") > 0)
		warn_logs++;
}

/* ---- entry points ------------------------------------------------------------------ */

static int
init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	host = h;
#ifdef COUNTER_FAIL_INIT
	host->set_error(ext, "this build of counter refuses to start");
	return -1;
#endif
	if (!DREAMOS_HOST_HAS(host, json_quote))
		return -1;
	struct dreamos_command c = {
	    .size = sizeof c,
	    .name = "counter",
	    .usage = "[bump [N] [--note TEXT]|show|quiet|misc|drop]",
	    .help = "Shows the counters, or bumps one.",
	    .max_args = 2,
	    .opts = counter_opts,
	    .complete_fn = complete_counter,
	    .role = DREAMOS_ROLE_OBSERVER,
	    .fn = cmd_counter,
	};
	struct dreamos_command w = {.name = "counter-wait",
	                            .usage = "MS",
	                            .help = "Answers after MS milliseconds.",
	                            .min_args = 1,
	                            .max_args = 1,
	                            .fn = cmd_wait};
	struct dreamos_command f = {.name = "counter-fetch",
	                            .usage = "URL",
	                            .help = "Fetches URL through the outbound manager.",
	                            .min_args = 1,
	                            .max_args = 1,
	                            .fn = cmd_fetch};
	struct dreamos_command s = {.name = "counter-send",
	                            .usage = "TO N",
	                            .help = "Sends {\"n\": N} to TO.",
	                            .min_args = 2,
	                            .max_args = 2,
	                            .fn = cmd_send};
	if (host->command_register(ext, &c) != 0 || host->command_register(ext, &w) != 0 ||
	    host->command_register(ext, &f) != 0 || host->command_register(ext, &s) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	struct dreamos_agent_type t = {
	    .size = sizeof t,
	    .name = "counter",
	    .description = "counts the messages it gets",
	    .caps = counter_caps,
	    .max_tasks = 2,
	    .start = agent_start,
	    .on_line = agent_on_line,
	    .stop = agent_stop,
	};
	if (host->agent_type_register(ext, &t) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	char *name = host->config_get(ext, "agent");
	if (name != NULL && host->agent_create(ext, "counter", name, NULL, -1) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		host->free(name);
		return -1;
	}
	host->free(name);
	char *ms = host->config_get(ext, "tick_ms");
	long tick_ms = ms ? strtol(ms, NULL, 10) : 50;
	host->free(ms);
	if (host->timer_add(ext, (uint64_t)tick_ms, (uint64_t)tick_ms, tick, NULL) == 0)
		return -1;
	sub_id = host->subscribe(ext, DREAMOS_EV_TASKS | DREAMOS_EV_MESSAGES | DREAMOS_EV_LOGS,
	                         DREAMOS_LOG_WARN, on_event, NULL);
	if (sub_id < 0)
		return -1;
	char *stored = host->kv_get(ext, "bumps");
	if (stored != NULL)
		bumps = strtol(stored, NULL, 10);
	host->free(stored);
	host->log(ext, DREAMOS_LOG_INFO, "counter %s ready", COUNTER_VERSION);
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	host->log(ext, DREAMOS_LOG_INFO, "counter %s stops after %ld messages", COUNTER_VERSION,
	          messages);
}

static char *
save_state(struct dreamos_ext *ext)
{
	char *s = malloc(256);
	snprintf(s, 256,
	         "{\"messages\":%ld,\"sum\":%ld,\"ticks\":%ld,\"task_events\":%ld,"
	         "\"tasks_run\":%ld,\"generation\":%ld}",
	         messages, sum, ticks, task_events, tasks_run, generation);
	return s;
}

static int
restore_state(struct dreamos_ext *ext, const char *state)
{
	char *v = host->json_get(state, "messages");
	if (v == NULL) {
		host->set_error(ext, "no counters in the state");
		return -1;
	}
	host->free(v);
	messages = getl(state, "messages");
	sum = getl(state, "sum");
	ticks = getl(state, "ticks");
	task_events = getl(state, "task_events");
	tasks_run = getl(state, "tasks_run");
	generation = getl(state, "generation") + 1;
	return 0;
}

DREAMOS_EXTENSION(.name = "counter", .version = COUNTER_VERSION,
                  .description = "counts messages (a test extension)", .init = init, .fini = fini,
                  .save_state = save_state, .restore_state = restore_state);
