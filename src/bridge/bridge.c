/* bridge.c — routes, authentication, roles, rate limits, metrics, remote
 * agents and observers (see bridge.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "auth.h"
#include "bridge.h"
#include "bus.h"
#include "http.h"
#include "log.h"
#include "orch.h"
#include "store.h"
#include "task.h"

/* Request duration histogram buckets (seconds), Prometheus style. */
static const double hist_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1};
#define NHIST (sizeof hist_le / sizeof hist_le[0])

struct wsclient;

struct bridge {
	struct orch *o;
	struct http_server *http;
	int port;
	char address[96];
	bool tls;
	uint64_t rate_limited, auth_failures, denials;
	uint64_t auth_throttled; /* failures refused 429 by auth_fail_take, not audited */
	uint64_t hist[NHIST + 1];
	double hist_sum;
	uint64_t hist_count;
	struct wsclient *clients;
	/* GET /v1/agents without ?state=, serialized: kept AGENTS_CACHE_MS at
	 * most (heartbeat_age_s and next_restart_s change with time) and
	 * dropped at once when an agent changes state (bridge_agent_event). */
	char *agents_cache;
	size_t agents_cache_len;
	int64_t agents_cache_ms;
};

#define AGENTS_CACHE_MS 100

/* A WebSocket client: a remote agent or an observer. */
struct wsclient {
	struct bridge *b;
	struct ws_conn *ws;
	struct auth_principal who;
	struct agent *agent; /* once its hello was accepted */
	bool observer;
	bool ev_agents, ev_messages, ev_tasks, ev_logs;
	int log_sub, bus_sub, task_sub;
	uv_timer_t *timer; /* hello deadline, or a close after an error */
	int close_code;    /* when the timer closes the socket */
	char close_reason[64];
	struct wsclient *next;
};

/* A request being answered by a command (asynchronous). */
struct pending_req {
	struct bridge *b;
	struct http_request *req;
	int64_t t0;
	int created; /* answer 201 on success */
};

/* ---- helpers ---------------------------------------------------------- */

static void
observe_duration(struct bridge *b, int64_t t0)
{
	double s = (double)(time_mono_ms() - t0) / 1000.0;
	size_t i = 0;
	while (i < NHIST && s > hist_le[i])
		i++;
	b->hist[i]++;
	b->hist_sum += s;
	b->hist_count++;
}

static void
respond_json(struct http_request *req, int status, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
	json_decref(j);
	http_respond(req, status, "application/json", s, strlen(s), NULL);
	free(s);
}

/* The CORS headers for an allowed Origin (caller frees), or NULL. */
static char *
cors_headers(const char *origin)
{
	if (origin == NULL)
		return NULL;
	return xasprintf("Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
	                 "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
	                 "Access-Control-Allow-Methods: GET, POST, DELETE, OPTIONS\r\n",
	                 origin);
}

static bool
origin_allowed(struct bridge *b, const char *origin, const char *host)
{
	if (origin == NULL)
		return true; /* not a browser */
	/* Same origin: scheme://HOST where HOST is the request's Host. */
	const char *sep = strstr(origin, "://");
	if (host != NULL && sep != NULL && strcmp(sep + 3, host) == 0)
		return true;
	const struct config *cfg = orch_config(b->o);
	for (size_t i = 0; i < cfg->security.n_allowed_origins; i++) {
		if (strcmp(cfg->security.allowed_origins[i], origin) == 0)
			return true;
	}
	return false;
}

/* The bearer token of a request (header, or ?token= for WebSockets). */
static char *
request_token(const struct http_request *req)
{
	const char *h = http_header(req, "authorization");
	if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0)
		return xstrdup(h + 7);
	return http_query_param(req, "token");
}

/* An unauthenticated failure (no or bad key or token, a refused Origin)
 * from req's peer: returns true if it is to be answered and audited as
 * usual, or false when the peer is over its budget of failures
 * (auth_fail_take): then it has been answered 429 + Retry-After, counted,
 * and not audited, so that a client cannot fill the audit log. */
static bool
failure_allowed(struct bridge *b, struct http_request *req)
{
	int wait = auth_fail_take(orch_auth(b->o), req->peer);
	if (wait == 0)
		return true;
	b->auth_throttled++;
	char *h = xasprintf("Retry-After: %d\r\n", wait);
	http_respond_error(req, 429, "too_many_failures",
	                   "too many failed authentications from this address", h);
	free(h);
	return false;
}

/* ---- commands through HTTP -------------------------------------------- */

static void
bridge_cmd_done(struct cmd_ctx *ctx, void *arg)
{
	struct pending_req *p = arg;
	int status = 200;
	if (ctx->status == CMD_USAGE) {
		status = 400;
	} else if (ctx->status == CMD_ERROR) {
		const char *e = ctx->error ? ctx->error : "";
		status = strstr(e, "permission denied") ? 403
		         : (strstr(e, ": no ") || strstr(e, "no agent") || strstr(e, "no task"))
		             ? 404
		             : 409;
	}
	if (ctx->status == CMD_OK && p->created)
		status = 201;
	if (ctx->status == CMD_OK) {
		const char *text = ctx->text ? ctx->text : "{}";
		http_respond(p->req, status, "application/json", text, strlen(text), NULL);
	} else {
		http_respond_error(p->req, status,
		                   status == 400   ? "bad_request"
		                   : status == 403 ? "forbidden"
		                   : status == 404 ? "not_found"
		                                   : "conflict",
		                   ctx->error ? ctx->error : "command failed", NULL);
	}
	observe_duration(p->b, p->t0);
	free(p);
}

/* Runs argv (with --json) as principal who and answers the request. */
static void
run_json_command(struct bridge *b, struct http_request *req, const struct auth_principal *who,
                 int argc, char **argv, int created)
{
	struct pending_req *p = xcalloc(1, sizeof *p);
	p->b = b;
	p->req = req;
	p->t0 = time_mono_ms();
	p->created = created;
	char name[96];
	snprintf(name, sizeof name, "bridge:%s", who->name);
	enum cmd_role role = who->role == AROLE_CAPTAIN    ? ROLE_CAPTAIN
	                     : who->role == AROLE_OPERATOR ? ROLE_OPERATOR
	                                                   : ROLE_OBSERVER;
	cmd_run_argv(b->o, argc, argv, CLIENT_BRIDGE, name, role, bridge_cmd_done, NULL, p);
}

/* Appends "--opt value" to argv when the query has param. */
static void
argv_from_query(struct http_request *req, char **argv, int *argc, const char *param,
                const char *opt)
{
	char *v = http_query_param(req, param);
	if (v != NULL) {
		argv[(*argc)++] = xstrdup(opt);
		argv[(*argc)++] = v;
	}
}

static void
free_argv(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		free(argv[i]);
}

/* ---- /v1/commands ------------------------------------------------------ */

struct cmd_reply {
	struct bridge *b;
	struct http_request *req;
	int64_t t0;
};

static void
bridge_line_done(struct cmd_ctx *ctx, void *arg)
{
	struct cmd_reply *r = arg;
	json_t *j = json_pack("{s:i,s:s}", "status", (int)ctx->status, "output",
	                      ctx->text ? ctx->text : "");
	if (ctx->error)
		json_object_set_new(j, "error", json_string(ctx->error));
	respond_json(r->req, ctx->status == CMD_OK ? 200 : ctx->status == CMD_USAGE ? 400 : 409, j);
	observe_duration(r->b, r->t0);
	free(r);
}

static void
route_commands(struct bridge *b, struct http_request *req, const struct auth_principal *who)
{
	json_error_t err;
	json_t *body = json_loadb(req->body ? req->body : "", req->body_len, 0, &err);
	const char *line = json_string_value(json_object_get(body, "command"));
	if (line == NULL) {
		json_decref(body);
		http_respond_error(req, 400, "bad_request",
		                   "expected a JSON body {\"command\": \"status\"}", NULL);
		return;
	}
	struct cmd_reply *r = xcalloc(1, sizeof *r);
	r->b = b;
	r->req = req;
	r->t0 = time_mono_ms();
	char name[96];
	snprintf(name, sizeof name, "bridge:%s", who->name);
	cmd_run_line(b->o, line, CLIENT_BRIDGE, name, ROLE_CAPTAIN, bridge_line_done, NULL, r);
	json_decref(body);
}

/* ---- POST /v1/messages, POST /v1/tasks --------------------------------- */

static void
bridge_msg_sent(void *arg, int64_t id, int n, const char *code, const char *detail)
{
	struct pending_req *p = arg;
	if (id > 0)
		respond_json(p->req, 201,
		             json_pack("{s:I,s:i}", "id", (json_int_t)id, "recipients", n));
	else
		http_respond_error(p->req,
		                   strcmp(code, PERR_UNKNOWN_RECIPIENT) == 0 ? 404
		                   : strcmp(code, PERR_BACKPRESSURE) == 0    ? 503
		                   : strcmp(code, PERR_STORE) == 0           ? 503
		                                                             : 400,
		                   code, detail, NULL);
	observe_duration(p->b, p->t0);
	free(p);
}

static void
route_post_message(struct bridge *b, struct http_request *req)
{
	json_error_t err;
	json_t *j = json_loadb(req->body ? req->body : "", req->body_len, 0, &err);
	const char *to = json_string_value(json_object_get(j, "to"));
	json_t *body = json_object_get(j, "body");
	if (!json_is_object(j) || to == NULL || body == NULL) {
		json_decref(j);
		http_respond_error(
		    req, 400, "bad_request",
		    "expected {\"to\": NAME, \"body\": ..., \"priority\"?, \"mode\"?}", NULL);
		return;
	}
	struct bus_send_req sr = {
	    .from = "captain", .to = to, .priority = PRIO_NORMAL, .mode = MODE_NORMAL};
	const char *ps = json_string_value(json_object_get(j, "priority"));
	const char *ms = json_string_value(json_object_get(j, "mode"));
	if ((ps && !proto_priority_parse(ps, &sr.priority)) ||
	    (ms && !proto_mode_parse(ms, &sr.mode)) ||
	    (to[0] != '#' && strcmp(to, "*") != 0 && !proto_valid_agent_name(to))) {
		json_decref(j);
		http_respond_error(req, 400, "bad_request", "bad priority, mode or recipient",
		                   NULL);
		return;
	}
	char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	sr.body = text;
	struct pending_req *p = xcalloc(1, sizeof *p);
	p->b = b;
	p->req = req;
	p->t0 = time_mono_ms();
	bus_send(orch_bus(b->o), &sr, bridge_msg_sent, p);
	free(text);
	json_decref(j);
}

static void
route_post_task(struct bridge *b, struct http_request *req, const struct auth_principal *who)
{
	json_error_t err;
	json_t *j = json_loadb(req->body ? req->body : "", req->body_len, 0, &err);
	const char *title = json_string_value(json_object_get(j, "title"));
	if (!json_is_object(j) || title == NULL) {
		json_decref(j);
		http_respond_error(req, 400, "bad_request",
		                   "expected {\"title\": ..., \"payload\"?, \"priority\"?, "
		                   "\"capability\"?, \"after\"?, \"timeout_s\"?, \"max_retries\"?}",
		                   NULL);
		return;
	}
	struct task_spec spec = {
	    .title = title, .priority = PRIO_NORMAL, .max_retries = -1, .submitter = who->name};
	const char *ps = json_string_value(json_object_get(j, "priority"));
	if (ps && !proto_priority_parse(ps, &spec.priority)) {
		json_decref(j);
		http_respond_error(req, 400, "bad_request", "bad priority", NULL);
		return;
	}
	spec.capability = json_string_value(json_object_get(j, "capability"));
	if (json_is_number(json_object_get(j, "timeout_s")))
		spec.timeout_s = json_number_value(json_object_get(j, "timeout_s"));
	if (json_is_integer(json_object_get(j, "max_retries")))
		spec.max_retries = (int)json_integer_value(json_object_get(j, "max_retries"));
	json_t *payload = json_object_get(j, "payload");
	char *ptext = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	spec.payload = ptext;
	spec.payload_compact = true;
	json_t *after = json_object_get(j, "after");
	int64_t *deps = xcalloc(json_array_size(after) + 1, sizeof *deps);
	for (size_t i = 0; i < json_array_size(after); i++)
		deps[spec.nafter++] = json_integer_value(json_array_get(after, i));
	spec.after = deps;
	char *cause = NULL;
	struct task *t = tasks_submit(orch_tasks(b->o), &spec, &cause);
	if (t == NULL) {
		http_respond_error(req, 400, "bad_request", cause, NULL);
		free(cause);
	} else {
		json_t *show = tasks_show_json(orch_tasks(b->o), t->id);
		respond_json(req, 201, show ? show : json_pack("{s:I}", "id", (json_int_t)t->id));
	}
	free(deps);
	free(ptext);
	json_decref(j);
}

/* ---- WebSocket: remote agents and observers ---------------------------- */

static int
ws_link_send(struct agent *a, const char *line, size_t len, bool owed)
{
	struct wsclient *c = a->link;
	if (c == NULL || c->ws == NULL)
		return -1;
	if (len > 0 && line[len - 1] == '\n')
		len--;
	return owed ? ws_send_text_owed(c->ws, line, len) : ws_send_text(c->ws, line, len);
}

static size_t
ws_link_queued(struct agent *a)
{
	struct wsclient *c = a->link;
	return c && c->ws ? ws_queued(c->ws) : 0;
}

static void
ws_link_set_reading(struct agent *a, bool on)
{
	struct wsclient *c = a->link;
	if (c && c->ws)
		ws_set_reading(c->ws, on);
}

static void
ws_link_close(struct agent *a)
{
	struct wsclient *c = a->link;
	if (c && c->ws)
		ws_close(c->ws, 1000, "stopped by the orchestrator");
}

static const struct agent_link_ops ws_ops = {
    .kind = "remote",
    .send = ws_link_send,
    .queued = ws_link_queued,
    .set_reading = ws_link_set_reading,
    .close = ws_link_close,
};

static void
ws_event(struct wsclient *c, json_t *ev)
{
	char *s = json_dumps(ev, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
	json_decref(ev);
	if (c->ws != NULL)
		ws_send_text(c->ws, s, strlen(s));
	free(s);
}

static void
obs_on_log(void *arg, const struct log_record *rec)
{
	struct wsclient *c = arg;
	json_t *j = log_record_json(rec);
	ws_event(c, json_pack("{s:s,s:s,s:o}", "type", "event", "kind", "log", "record", j));
}

static void
obs_on_bus(void *arg, const char *event, const json_t *m)
{
	struct wsclient *c = arg;
	ws_event(c, json_pack("{s:s,s:s,s:s,s:O}", "type", "event", "kind", "message", "event",
	                      event, "message", m));
}

static void
obs_on_task(void *arg, const struct task *t, enum task_state from)
{
	struct wsclient *c = arg;
	ws_event(c, json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s?,s:f}", "type", "event", "kind", "task",
	                      "id", (json_int_t)t->id, "title", t->title, "from",
	                      task_state_name(from), "to", task_state_name(t->state), "agent",
	                      t->agent, "progress", t->progress));
}

void
bridge_key_revoked(struct bridge *b, int64_t key_id)
{
	if (b == NULL)
		return;
	for (struct wsclient *c = b->clients; c != NULL; c = c->next) {
		if (c->who.key_id == key_id && c->ws != NULL)
			ws_close(c->ws, 1008, "API key revoked");
	}
}

/* Answers GET /v1/agents[?state=S]: the document of `agent list --json`
 * (agent_json of each agent), built here and compact rather than through
 * the command layer, which indents; the full list is cached briefly (see
 * struct bridge). */
static void
route_agents(struct bridge *b, struct http_request *req)
{
	char *state = http_query_param(req, "state");
	enum agent_state want = AGENT_NSTATES;
	if (state != NULL && !agent_state_parse(state, &want)) {
		char *m = xasprintf("agent list: unknown state '%s'", state);
		http_respond_error(req, 400, "bad_request", m, NULL);
		free(m);
		free(state);
		return;
	}
	int64_t now = time_mono_ms();
	if (state == NULL && b->agents_cache != NULL &&
	    now - b->agents_cache_ms < AGENTS_CACHE_MS && now >= b->agents_cache_ms) {
		http_respond(req, 200, "application/json", b->agents_cache, b->agents_cache_len,
		             NULL);
		return;
	}
	struct agents *as = orch_agents(b->o);
	json_t *rows = json_array();
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if (state == NULL || a->state == want)
			json_array_append_new(rows, agent_json(a, false));
	}
	char *s = json_dumps(rows, JSON_COMPACT);
	json_decref(rows);
	size_t len = strlen(s);
	http_respond(req, 200, "application/json", s, len, NULL);
	if (state == NULL) {
		free(b->agents_cache);
		b->agents_cache = s;
		b->agents_cache_len = len;
		b->agents_cache_ms = now;
	} else {
		free(s);
	}
	free(state);
}

void
bridge_agent_event(struct bridge *b, struct agent *a, int old_state)
{
	if (b == NULL)
		return;
	free(b->agents_cache);
	b->agents_cache = NULL;
	for (struct wsclient *c = b->clients; c != NULL; c = c->next) {
		if (c->observer && c->ev_agents)
			ws_event(c, json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "event", "kind",
			                      "agent", "agent", a->name, "from",
			                      agent_state_name((enum agent_state)old_state), "to",
			                      agent_state_name(a->state)));
	}
}

/* An observer's subscribe request: {"type":"subscribe","events":[...]}. */
static void
obs_subscribe(struct wsclient *c, json_t *req)
{
	struct orch *o = c->b->o;
	json_t *evs = json_object_get(req, "events");
	size_t i;
	json_t *v;
	bool all = !json_is_array(evs);
	json_array_foreach(evs, i, v)
	{
		const char *e = json_string_value(v);
		if (e == NULL)
			continue;
		c->ev_agents |= strcmp(e, "agents") == 0;
		c->ev_messages |= strcmp(e, "messages") == 0;
		c->ev_tasks |= strcmp(e, "tasks") == 0;
		c->ev_logs |= strcmp(e, "logs") == 0;
	}
	if (all)
		c->ev_agents = c->ev_messages = c->ev_tasks = c->ev_logs = true;
	if (c->ev_logs && c->log_sub == 0)
		c->log_sub = logmgr_subscribe(orch_log(o), obs_on_log, c);
	if (c->ev_messages && c->bus_sub == 0)
		c->bus_sub = bus_subscribe_events(orch_bus(o), BUS_EV_ALL, obs_on_bus, c);
	if (c->ev_tasks && c->task_sub == 0)
		c->task_sub = tasks_subscribe_events(orch_tasks(o), obs_on_task, c);
	ws_event(c,
	         json_pack("{s:s,s:b,s:b,s:b,s:b}", "type", "subscribed", "agents", c->ev_agents,
	                   "messages", c->ev_messages, "tasks", c->ev_tasks, "logs", c->ev_logs));
}

static void
wsclient_timer_freed(uv_handle_t *h)
{
	free(h);
}

static void
wsclient_on_timer(uv_timer_t *t)
{
	struct wsclient *c = t->data;
	if (c->ws == NULL)
		return;
	if (c->close_code == 0 && c->agent == NULL) {
		/* An agent key that never said hello. */
		char *line =
		    proto_error(PERR_HELLO_FIRST, "no hello within agents.hello_timeout", NULL);
		ws_send_text(c->ws, line, strlen(line) - 1);
		free(line);
		c->close_code = 1008;
		snprintf(c->close_reason, sizeof c->close_reason, "no hello");
		uv_timer_start(c->timer, wsclient_on_timer, 250, 0);
		return;
	}
	if (c->close_code != 0)
		ws_close(c->ws, c->close_code, c->close_reason);
}

/* Closes the socket shortly, so that the error just queued reaches the peer
 * first (wslay sends control frames ahead of queued data). */
static void
wsclient_close_soon(struct wsclient *c, int code, const char *reason)
{
	c->close_code = code;
	snprintf(c->close_reason, sizeof c->close_reason, "%s", reason);
	uv_timer_start(c->timer, wsclient_on_timer, 250, 0);
}

static void
ws_on_message(void *arg, struct ws_conn *ws, const char *data, size_t len)
{
	struct wsclient *c = arg;
	struct bridge *b = c->b;
	if (c->observer) {
		json_t *j = json_loadb(data, len, 0, NULL);
		const char *type = json_string_value(json_object_get(j, "type"));
		if (type != NULL && strcmp(type, "subscribe") == 0)
			obs_subscribe(c, j);
		else
			ws_event(c, json_pack("{s:s,s:s,s:s}", "type", "error", "code",
			                      "bad_request", "detail",
			                      "observers send {\"type\":\"subscribe\", "
			                      "\"events\": [...]}"));
		json_decref(j);
		return;
	}
	if (c->agent != NULL) {
		agent_link_message(c->agent, data, len, true); /* (wsframe.c checked it) */
		return;
	}
	/* The first line of a remote agent: hello, as itself. */
	struct proto_msg m;
	struct proto_err e = {0};
	if (proto_parse(data, len, &m, &e) != 0) {
		char *line = proto_error(e.code, e.detail, e.ref);
		ws_send_text(ws, line, strlen(line) - 1);
		free(line);
		proto_err_clear(&e);
		return;
	}
	if (m.type != PROTO_HELLO) {
		char *line = proto_error(PERR_HELLO_FIRST, "the first message must be hello",
		                         proto_str(&m, "ref"));
		ws_send_text(ws, line, strlen(line) - 1);
		free(line);
		proto_msg_free(&m);
		return;
	}
	const char *name = proto_str(&m, "name");
	if (strcmp(name, c->who.name) != 0) {
		char *d =
		    xasprintf("this key is for agent '%s', hello says '%s'", c->who.name, name);
		char *line = proto_error(PERR_NAME_MISMATCH, d, NULL);
		ws_send_text(ws, line, strlen(line) - 1);
		auth_audit(orch_auth(b->o), c->who.name, "agent.denied", d, false);
		free(line);
		free(d);
		proto_msg_free(&m);
		wsclient_close_soon(c, 4003, "name mismatch");
		return;
	}
	json_t *caps = proto_get(&m, "capabilities");
	const char **cv = xcalloc(json_array_size(caps) + 1, sizeof *cv);
	size_t nc = 0;
	for (size_t i = 0; i < json_array_size(caps); i++)
		cv[nc++] = json_string_value(json_array_get(caps, i));
	char *cause = NULL;
	struct agent *a = agents_attach(orch_agents(b->o), name, "remote", cv, nc,
	                                (int)proto_int(&m, "max_tasks", 1), &ws_ops, c, &cause);
	free(cv);
	if (a == NULL) {
		char *line = proto_error(PERR_NAME_TAKEN, cause, NULL);
		ws_send_text(ws, line, strlen(line) - 1);
		free(line);
		free(cause);
		proto_msg_free(&m);
		wsclient_close_soon(c, 4009, "name taken");
		return;
	}
	c->agent = a;
	uv_timer_stop(c->timer);
	auth_audit(orch_auth(b->o), c->who.name, "agent.connect", ws_peer(ws), true);
	proto_msg_free(&m);
}

static void
ws_on_close(void *arg, struct ws_conn *ws, int code, const char *reason)
{
	struct wsclient *c = arg;
	struct bridge *b = c->b;
	c->ws = NULL;
	uv_close((uv_handle_t *)c->timer, wsclient_timer_freed);
	if (c->agent != NULL) {
		struct agent *a = c->agent;
		c->agent = NULL;
		if (a->link == c)
			agent_detach(a, "disconnected");
	}
	if (c->log_sub)
		logmgr_unsubscribe(orch_log(b->o), c->log_sub);
	if (c->bus_sub)
		bus_unsubscribe_events(orch_bus(b->o), c->bus_sub);
	if (c->task_sub)
		tasks_unsubscribe_events(orch_tasks(b->o), c->task_sub);
	for (struct wsclient **pp = &b->clients; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	free(c);
}

static void
route_stream(struct bridge *b, struct http_request *req, const struct auth_principal *who)
{
	if (!req->upgrade_websocket) {
		http_respond_error(req, 400, "bad_request",
		                   "GET /v1/stream is a WebSocket endpoint", NULL);
		return;
	}
	struct wsclient *c = xcalloc(1, sizeof *c);
	c->b = b;
	c->who = *who;
	c->observer = who->role != AROLE_AGENT;
	c->ws = http_upgrade_websocket(req, ws_on_message, ws_on_close, c);
	if (c->ws == NULL) {
		free(c);
		return;
	}
	c->timer = xmalloc(sizeof *c->timer);
	uv_timer_init(orch_loop(b->o), c->timer);
	c->timer->data = c;
	if (!c->observer)
		uv_timer_start(
		    c->timer, wsclient_on_timer,
		    (uint64_t)(orch_config(b->o)->agents.defaults.hello_timeout * 1000.0), 0);
	c->next = b->clients;
	b->clients = c;
}

/* ---- routing ---------------------------------------------------------- */

/* Minimum role of an endpoint; -1 if the path is unknown, -2 if the method
 * is not allowed (allow gets the Allow header value). */
static int
route_role(const char *method, const char *path, const char **allow)
{
	static const struct {
		const char *path; /* "*" matches one segment */
		const char *method;
		int role;
	} routes[] = {
	    {"/metrics", "GET", AROLE_OBSERVER},     {"/v1/agents", "GET", AROLE_OBSERVER},
	    {"/v1/tasks", "GET", AROLE_OBSERVER},    {"/v1/tasks", "POST", AROLE_OPERATOR},
	    {"/v1/tasks/*", "GET", AROLE_OBSERVER},  {"/v1/tasks/*", "DELETE", AROLE_OPERATOR},
	    {"/v1/messages", "GET", AROLE_OBSERVER}, {"/v1/messages", "POST", AROLE_OPERATOR},
	    {"/v1/logs", "GET", AROLE_OBSERVER},     {"/v1/commands", "POST", AROLE_CAPTAIN},
	    {"/v1/stream", "GET", AROLE_OBSERVER},
	};
	bool known = false;
	for (size_t i = 0; i < nitems(routes); i++) {
		const char *rp = routes[i].path;
		bool match;
		size_t n = strlen(rp);
		if (rp[n - 1] == '*')
			match = strncmp(path, rp, n - 1) == 0 && path[n - 1] != '\0' &&
			        strchr(path + n - 1, '/') == NULL;
		else
			match = strcmp(path, rp) == 0;
		if (!match)
			continue;
		known = true;
		if (strcmp(method, routes[i].method) == 0)
			return routes[i].role;
		*allow = strcmp(rp, "/v1/tasks") == 0      ? "GET, POST"
		         : strcmp(rp, "/v1/tasks/*") == 0  ? "GET, DELETE"
		         : strcmp(rp, "/v1/messages") == 0 ? "GET, POST"
		         : strcmp(rp, "/v1/commands") == 0 ? "POST"
		                                           : "GET";
	}
	return known ? -2 : -1;
}

static void
route_token(struct bridge *b, struct http_request *req)
{
	struct auth *au = orch_auth(b->o);
	char *key = NULL;
	const char *h = http_header(req, "authorization");
	if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
		key = xstrdup(h + 7);
	} else {
		json_t *j = json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
		const char *k = json_string_value(json_object_get(j, "api_key"));
		key = k ? xstrdup(k) : NULL;
		json_decref(j);
	}
	if (key == NULL) {
		if (!failure_allowed(b, req))
			return;
		b->auth_failures++;
		auth_audit(au, req->peer, "auth.token", "no API key", false);
		http_respond_error(req, 401, "unauthorized",
		                   "send the API key as 'Authorization: Bearer KEY' or "
		                   "{\"api_key\": KEY}",
		                   "WWW-Authenticate: Bearer\r\n");
		return;
	}
	struct auth_principal who;
	double ttl = 0;
	char *cause = NULL;
	char *token = auth_token_issue(au, key, &who, &ttl, &cause);
	free(key);
	if (token == NULL) {
		if (!failure_allowed(b, req)) {
			free(cause);
			return;
		}
		b->auth_failures++;
		auth_audit(au, req->peer, "auth.token", cause, false);
		http_respond_error(req, 401, "unauthorized", cause, "WWW-Authenticate: Bearer\r\n");
		free(cause);
		return;
	}
	auth_audit(au, who.name, "auth.token", auth_role_name(who.role), true);
	respond_json(req, 200,
	             json_pack("{s:s,s:s,s:I,s:s,s:s}", "token", token, "token_type", "Bearer",
	                       "expires_in", (json_int_t)ceil(ttl), "role", auth_role_name(who.role), "name",
	                       who.name));
	free(token);
}

static void
bridge_handle(void *arg, struct http_request *req)
{
	struct bridge *b = arg;
	struct auth *au = orch_auth(b->o);
	int64_t t0 = time_mono_ms();
	const char *origin = http_header(req, "origin");
	if (!origin_allowed(b, origin, http_header(req, "host"))) {
		if (!failure_allowed(b, req))
			return;
		b->denials++;
		auth_audit(au, req->peer, "origin.denied", origin, false);
		http_respond_error(req, 403, "forbidden",
		                   "Origin not allowed (security.allowed_origins)", NULL);
		return;
	}
	char *cors = cors_headers(origin);
	if (strcmp(req->method, "OPTIONS") == 0) {
		http_respond(req, 204, "text/plain", "", 0, cors);
		free(cors);
		return;
	}
	/* Every answer to an allowed Origin carries the CORS headers. */
	req->always_headers = cors;
	cors = NULL;
	if (strcmp(req->path, "/healthz") == 0) {
		json_t *st = orch_status_json(b->o);
		json_t *j = json_pack(
		    "{s:s,s:O,s:O,s:O}", "status",
		    strcmp(json_string_value(json_object_get(json_object_get(st, "db"), "state")),
		           "ok") == 0
		        ? "ok"
		        : "degraded",
		    "uptime_s", json_object_get(st, "uptime_s"), "db",
		    json_object_get(json_object_get(st, "db"), "state"), "agents_up",
		    json_object_get(json_object_get(st, "counts"), "agents_up"));
		json_decref(st);
		char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
		json_decref(j);
		http_respond(req, 200, "application/json", s, strlen(s), cors);
		free(s);
		free(cors);
		observe_duration(b, t0);
		return;
	}
	if (strcmp(req->path, "/v1/auth/token") == 0) {
		free(cors);
		if (strcmp(req->method, "POST") != 0) {
			http_respond_error(req, 405, "method_not_allowed", "use POST",
			                   "Allow: POST\r\n");
			return;
		}
		route_token(b, req);
		observe_duration(b, t0);
		return;
	}
	const char *allow = NULL;
	int need = route_role(req->method, req->path, &allow);
	if (need == -1) {
		free(cors);
		http_respond_error(req, 404, "not_found", "no such endpoint", NULL);
		return;
	}
	if (need == -2) {
		char *h = xasprintf("Allow: %s\r\n", allow);
		http_respond_error(req, 405, "method_not_allowed", "method not allowed here", h);
		free(h);
		free(cors);
		return;
	}
	free(cors);
	/* Authentication, rate limit, role. */
	char *token = request_token(req);
	struct auth_principal who;
	char *cause = NULL;
	if (strcmp(orch_config(b->o)->security.auth_type, "none") == 0) {
		/* security.auth_type: none — everyone is the captain.  Only sane
		 * on a loopback address; dreamos.yaml(5) says so. */
		free(token);
		token = NULL;
		memset(&who, 0, sizeof who);
		snprintf(who.name, sizeof who.name, "anonymous");
		who.role = AROLE_CAPTAIN;
	} else if (token == NULL || auth_token_check(au, token, &who, &cause) != 0) {
		if (!failure_allowed(b, req)) {
			free(token);
			free(cause);
			return;
		}
		b->auth_failures++;
		auth_audit(au, req->peer, "auth", cause ? cause : "no token", false);
		http_respond_error(req, 401, "unauthorized",
		                   cause ? cause
		                         : "send a session token: 'Authorization: Bearer TOKEN' "
		                           "(POST /v1/auth/token gives one)",
		                   "WWW-Authenticate: Bearer\r\n");
		free(token);
		free(cause);
		return;
	}
	free(token);
	int wait = auth_rate_take(au, who.key_id);
	if (wait > 0) {
		b->rate_limited++;
		char *h = xasprintf("Retry-After: %d\r\n", wait);
		http_respond_error(req, 429, "rate_limited", "too many requests for this key", h);
		free(h);
		return;
	}
	bool is_stream = strcmp(req->path, "/v1/stream") == 0;
	bool ok_role = who.role == AROLE_AGENT ? is_stream : (int)who.role >= need;
	if (!ok_role) {
		b->denials++;
		char *d = xasprintf("%s %s needs role %s, key '%s' is %s", req->method, req->path,
		                    auth_role_name((enum auth_role)need), who.name,
		                    auth_role_name(who.role));
		auth_audit(au, who.name, "denied", d, false);
		http_respond_error(req, 403, "forbidden", d, NULL);
		free(d);
		return;
	}

	char *argv[16];
	int argc = 0;
	if (is_stream) {
		route_stream(b, req, &who);
	} else if (strcmp(req->path, "/metrics") == 0 &&
	           !orch_config(b->o)->monitoring.metrics_enabled) {
		http_respond_error(req, 404, "not_found",
		                   "metrics are off (monitoring.metrics_enabled)", NULL);
	} else if (strcmp(req->path, "/metrics") == 0) {
		char *m = bridge_metrics_text(b);
		http_respond(req, 200, "text/plain; version=0.0.4", m, strlen(m), NULL);
		free(m);
	} else if (strcmp(req->path, "/v1/commands") == 0) {
		route_commands(b, req, &who);
		return;
	} else if (strcmp(req->path, "/v1/agents") == 0) {
		route_agents(b, req);
	} else if (strcmp(req->path, "/v1/tasks") == 0 && strcmp(req->method, "GET") == 0) {
		argv[argc++] = xstrdup("task");
		argv[argc++] = xstrdup("list");
		argv[argc++] = xstrdup("--json");
		argv_from_query(req, argv, &argc, "state", "--state");
		argv_from_query(req, argv, &argc, "limit", "--limit");
		run_json_command(b, req, &who, argc, argv, 0);
		free_argv(argc, argv);
		return;
	} else if (strcmp(req->path, "/v1/tasks") == 0) {
		route_post_task(b, req, &who);
	} else if (strncmp(req->path, "/v1/tasks/", 10) == 0) {
		argv[argc++] = xstrdup("task");
		argv[argc++] = xstrdup(strcmp(req->method, "DELETE") == 0 ? "cancel" : "show");
		argv[argc++] = xstrdup(req->path + 10);
		argv[argc++] = xstrdup("--json");
		run_json_command(b, req, &who, argc, argv, 0);
		free_argv(argc, argv);
		return;
	} else if (strcmp(req->path, "/v1/messages") == 0 && strcmp(req->method, "GET") == 0) {
		argv[argc++] = xstrdup("history");
		argv[argc++] = xstrdup("--json");
		char *agent = http_query_param(req, "agent");
		if (agent != NULL)
			argv[argc++] = agent;
		argv_from_query(req, argv, &argc, "limit", "--limit");
		argv_from_query(req, argv, &argc, "since", "--since");
		argv_from_query(req, argv, &argc, "grep", "--grep");
		argv_from_query(req, argv, &argc, "mode", "--mode");
		run_json_command(b, req, &who, argc, argv, 0);
		free_argv(argc, argv);
		return;
	} else if (strcmp(req->path, "/v1/messages") == 0) {
		route_post_message(b, req);
		return;
	} else if (strcmp(req->path, "/v1/logs") == 0) {
		argv[argc++] = xstrdup("logs");
		argv[argc++] = xstrdup("--json");
		argv_from_query(req, argv, &argc, "level", "--level");
		argv_from_query(req, argv, &argc, "source", "--source");
		argv_from_query(req, argv, &argc, "grep", "--grep");
		argv_from_query(req, argv, &argc, "since", "--since");
		argv_from_query(req, argv, &argc, "limit", "--limit");
		run_json_command(b, req, &who, argc, argv, 0);
		free_argv(argc, argv);
		return;
	}
	observe_duration(b, t0);
}

/* ---- lifecycle, status, metrics ---------------------------------------- */

int
bridge_start(struct orch *o, struct bridge **out, char **cause)
{
	const struct config *cfg = orch_config(o);
	struct bridge *b = xcalloc(1, sizeof *b);
	b->o = o;
	struct http_server_opts opts = {
	    .host = cfg->bridge.host,
	    .port = cfg->bridge.port,
	    .limits = {.max_connections = (size_t)cfg->bridge.max_connections,
	               .idle_timeout = cfg->bridge.connection_timeout,
	               .request_timeout = cfg->bridge.connection_timeout,
	               .max_header_bytes = 16384,
	               .max_headers = 64,
	               .max_body = cfg->bridge.max_request,
	               .max_ws_message = cfg->agents.max_line},
	    .tls_cert = cfg->bridge.tls_cert,
	    .tls_key = cfg->bridge.tls_key,
	    .handler = bridge_handle,
	    .arg = b,
	};
	if (http_server_start(orch_loop(o), &opts, &b->http, cause) != 0) {
		free(b);
		return -1;
	}
	b->port = http_server_port(b->http);
	b->tls = cfg->bridge.tls_cert != NULL;
	snprintf(b->address, sizeof b->address, "%s://%s:%d", b->tls ? "https" : "http",
	         cfg->bridge.host, b->port);
	log_info(orch_log(o), "bridge", "listening on %s", b->address);
	*out = b;
	return 0;
}

void
bridge_stop(struct bridge *b)
{
	if (b == NULL || b->http == NULL)
		return;
	http_server_stop(b->http);
	b->http = NULL;
}

void
bridge_free(struct bridge *b)
{
	if (b == NULL)
		return;
	bridge_stop(b);
	free(b->agents_cache);
	free(b);
}

json_t *
bridge_status_json(struct bridge *b)
{
	if (b == NULL || b->http == NULL)
		return NULL;
	struct http_server_stats s;
	http_server_stats(b->http, &s);
	return json_pack("{s:s,s:i,s:b,s:I,s:I,s:I,s:I,s:I,s:I}", "address", b->address, "port",
	                 b->port, "tls", b->tls, "connections", (json_int_t)s.connections_open,
	                 "requests", (json_int_t)s.requests, "websockets", (json_int_t)s.ws_open,
	                 "rate_limited", (json_int_t)b->rate_limited, "auth_failures",
	                 (json_int_t)b->auth_failures, "auth_throttled",
	                 (json_int_t)b->auth_throttled);
}

char *
bridge_metrics_text(struct bridge *b)
{
	struct buf m;
	buf_init(&m);
	struct orch *o = b->o;
	struct agents *as = orch_agents(o);
	size_t by_state[AGENT_NSTATES] = {0};
	for (size_t i = 0; i < agents_count(as); i++)
		by_state[agents_at(as, i)->state]++;
	buf_adds(&m, "# HELP dreamos_agents Agents by state.\n# TYPE dreamos_agents gauge\n");
	for (int i = 0; i < AGENT_NSTATES; i++)
		buf_addf(&m, "dreamos_agents{state=\"%s\"} %zu\n",
		         agent_state_name((enum agent_state)i), by_state[i]);
	struct bus_stats bs;
	bus_stats(orch_bus(o), &bs);
	buf_adds(&m, "# HELP dreamos_messages_total Messages by outcome.\n"
	             "# TYPE dreamos_messages_total counter\n");
	buf_addf(&m,
	         "dreamos_messages_total{event=\"accepted\"} %llu\n"
	         "dreamos_messages_total{event=\"delivered\"} %llu\n"
	         "dreamos_messages_total{event=\"redelivered\"} %llu\n"
	         "dreamos_messages_total{event=\"acked\"} %llu\n"
	         "dreamos_messages_total{event=\"dead\"} %llu\n",
	         (unsigned long long)bs.accepted, (unsigned long long)bs.delivered,
	         (unsigned long long)bs.redelivered, (unsigned long long)bs.acked,
	         (unsigned long long)bs.dead);
	buf_addf(&m,
	         "# HELP dreamos_messages_pending Messages waiting for an ack.\n"
	         "# TYPE dreamos_messages_pending gauge\ndreamos_messages_pending %llu\n"
	         "# TYPE dreamos_messages_inflight gauge\ndreamos_messages_inflight %llu\n",
	         (unsigned long long)bs.pending, (unsigned long long)bs.inflight);
	struct task_counts tc;
	tasks_counts(orch_tasks(o), &tc);
	buf_adds(&m, "# HELP dreamos_tasks Tasks by state.\n# TYPE dreamos_tasks gauge\n");
	for (int i = 0; i < TASK_NSTATES; i++)
		buf_addf(&m, "dreamos_tasks{state=\"%s\"} %llu\n",
		         task_state_name((enum task_state)i), (unsigned long long)tc.n[i]);
	buf_addf(&m,
	         "# TYPE dreamos_task_transitions_total counter\ndreamos_task_transitions_total "
	         "%llu\n",
	         (unsigned long long)tc.transitions);
	struct http_server_stats hs;
	http_server_stats(b->http, &hs);
	buf_addf(&m,
	         "# TYPE dreamos_bridge_connections gauge\ndreamos_bridge_connections %llu\n"
	         "# TYPE dreamos_bridge_websockets gauge\ndreamos_bridge_websockets %llu\n"
	         "# TYPE dreamos_bridge_requests_total counter\n",
	         (unsigned long long)hs.connections_open, (unsigned long long)hs.ws_open);
	for (int i = 1; i <= 5; i++)
		buf_addf(&m, "dreamos_bridge_requests_total{code=\"%dxx\"} %llu\n", i,
		         (unsigned long long)hs.by_status[i]);
	buf_addf(&m,
	         "# TYPE dreamos_bridge_rate_limited_total counter\n"
	         "dreamos_bridge_rate_limited_total %llu\n"
	         "# TYPE dreamos_bridge_auth_failures_total counter\n"
	         "dreamos_bridge_auth_failures_total %llu\n"
	         "# HELP dreamos_bridge_auth_throttled_total Failed authentications refused "
	         "429 (over 20 a minute from one address), not audited.\n"
	         "# TYPE dreamos_bridge_auth_throttled_total counter\n"
	         "dreamos_bridge_auth_throttled_total %llu\n",
	         (unsigned long long)b->rate_limited, (unsigned long long)b->auth_failures,
	         (unsigned long long)b->auth_throttled);
	buf_adds(&m, "# HELP dreamos_bridge_request_seconds Request handling time.\n"
	             "# TYPE dreamos_bridge_request_seconds histogram\n");
	uint64_t cum = 0;
	for (size_t i = 0; i < NHIST; i++) {
		cum += b->hist[i];
		buf_addf(&m, "dreamos_bridge_request_seconds_bucket{le=\"%g\"} %llu\n", hist_le[i],
		         (unsigned long long)cum);
	}
	cum += b->hist[NHIST];
	buf_addf(&m,
	         "dreamos_bridge_request_seconds_bucket{le=\"+Inf\"} %llu\n"
	         "dreamos_bridge_request_seconds_sum %g\n"
	         "dreamos_bridge_request_seconds_count %llu\n",
	         (unsigned long long)cum, b->hist_sum, (unsigned long long)b->hist_count);
	struct store_stats ss;
	store_stats(orch_store(o), &ss);
	buf_addf(&m,
	         "# TYPE dreamos_store_commits_total counter\ndreamos_store_commits_total %llu\n"
	         "# TYPE dreamos_store_commit_failures_total counter\n"
	         "dreamos_store_commit_failures_total %llu\n"
	         "# TYPE dreamos_store_last_commit_seconds gauge\n"
	         "dreamos_store_last_commit_seconds %g\n"
	         "# TYPE dreamos_store_max_commit_seconds gauge\n"
	         "dreamos_store_max_commit_seconds %g\n",
	         (unsigned long long)ss.commits, (unsigned long long)ss.commit_failures,
	         ss.last_commit_ms / 1000.0, ss.max_commit_ms / 1000.0);
	return m.data;
}

/* ---- bridge status ---------------------------------------------------- */

static enum cmd_retval
cmd_bridge_status_exec(struct cmd_ctx *ctx)
{
	json_t *j = bridge_status_json(orch_bridge(ctx->orch));
	if (j == NULL)
		return cmd_result(ctx,
		                  json_pack("{s:b,s:s}", "running", 0, "message",
		                            "the Bridge is not running (bridge.enabled: false)"));
	json_object_set_new(j, "running", json_true());
	return cmd_result(ctx, j);
}

const struct cmd_entry bridge_cmd_entries[] = {
    {
        .name = "bridge status",
        .usage = "",
        .help = "Shows the Bridge: its address (with the port chosen when bridge.port is 0), "
                "TLS, open connections and WebSockets, requests, rate-limit rejections and "
                "authentication failures.",
        .max_args = 0,
        .role = ROLE_OBSERVER,
        .exec = cmd_bridge_status_exec,
    },
};
const size_t bridge_cmd_count = nitems(bridge_cmd_entries);
