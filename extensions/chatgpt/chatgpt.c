/* chatgpt.c — the ChatGPT bridge (DESIGN section 10): OpenAI-compatible
 * chat completions through the Bridge's outbound connection manager.
 *
 *   ask [--model M] [--system TEXT] PROMPT...
 *       streams the answer (server-sent events) to the front end;
 *   chatgpt status|spawn|set|resume|forget ...
 *       settings, usage and the LLM agents;
 *   agent type "chatgpt": an in-process LLM agent that answers messages
 *       (reply to the sender, a bounded conversation per peer), performs
 *       tasks (payload -> prompt -> task.done with the answer), reports
 *       usage (tokens, cost), pauses itself at its budget and when it is
 *       caught in a reply loop with another agent, and fails on a 401.
 *
 * The API key (api_key_env or api_key_file) only ever goes into the
 * Authorization header handed to the host; every text that may reach a log,
 * a reply or an error is scrubbed of it (redact()), and the body of a 401
 * (OpenAI echoes part of the key there) is never shown.
 *
 * Settings of an agent (model, system, budget_usd), key by key, first found
 * wins: what `chatgpt spawn`, `chatgpt set` and `chatgpt resume
 * --budget-usd` stored in the key-value store (`chatgpt forget` drops it),
 * the options of `agent spawn NAME --type chatgpt --model M --system TEXT
 * --budget-usd X` (host->agent_option), extensions.chatgpt.agents.NAME, the
 * extension's defaults. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <dreamos/extension.h>

#define CHATGPT_VERSION "1.0"
#define TYPE_NAME       "chatgpt"

static const struct dreamos_host *host;
static struct dreamos_ext *self;

/* ---- settings ------------------------------------------------------------ */

static struct {
	char *base_url;    /* without a trailing slash */
	char *key_env;     /* api_key_env */
	char *key_file;    /* api_key_file, or NULL */
	char *model;       /* default model */
	char *system;      /* default system prompt, or NULL */
	double timeout_s;  /* per attempt */
	int retries;       /* -1: bridge.retry_attempts */
	double budget_usd; /* default budget of an agent; 0: none */
	int history;       /* messages kept per peer */
	int recall;        /* Dreamscribe fragments added to an agent's prompt */
	int loop_n;        /* loop guard: exchanges ... */
	double loop_s;     /* ... within this many seconds */
	json_t *prices;    /* {model: {input, output}} USD per million tokens */
	json_t *agents;    /* extensions.chatgpt.agents */
} cfg;

static char *api_key;         /* NULL if none */
static char key_problem[256]; /* why there is none */

/* Totals of `ask`. */
static long ask_count, ask_in, ask_out;
static double ask_cost;

/* ---- small helpers ------------------------------------------------------- */

#include "../common/helpers.h"

/* ---- the API key ----------------------------------------------------------- */

static void
key_load(void)
{
	secret_free(api_key);
	api_key = NULL;
	key_problem[0] = '\0';
	if (cfg.key_file != NULL) {
		int fd = open(cfg.key_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) != 0) {
			snprintf(key_problem, sizeof key_problem, "api_key_file %s: %s",
			         cfg.key_file, strerror(errno));
			if (fd >= 0)
				close(fd);
			return;
		}
		if ((st.st_mode & 077) != 0) {
			snprintf(key_problem, sizeof key_problem,
			         "api_key_file %s has mode %04o: group and others must have no "
			         "access (chmod 600 %s)",
			         cfg.key_file, (unsigned)(st.st_mode & 07777), cfg.key_file);
			close(fd);
			return;
		}
		char buf[4096];
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n < 0)
			n = 0;
		buf[n] = '\0';
		size_t l = strcspn(buf, "\r\n");
		buf[l] = '\0';
		while (l > 0 && (buf[l - 1] == ' ' || buf[l - 1] == '\t'))
			buf[--l] = '\0';
		if (l == 0)
			snprintf(key_problem, sizeof key_problem, "api_key_file %s is empty",
			         cfg.key_file);
		else
			api_key = secret_keep(buf);
		explicit_bzero(buf, sizeof buf);
		return;
	}
	const char *v = getenv(cfg.key_env);
	if (v == NULL || *v == '\0')
		snprintf(key_problem, sizeof key_problem, "no API key: $%s is not set",
		         cfg.key_env);
	else
		api_key = secret_keep(v);
}

static const char *
key_source(void)
{
	static char s[300];
	if (cfg.key_file)
		snprintf(s, sizeof s, "file %s", cfg.key_file);
	else
		snprintf(s, sizeof s, "env %s", cfg.key_env);
	return s;
}

/* ---- prices ---------------------------------------------------------------- */

static double
cost_of(const char *model, long tin, long tout, bool *known)
{
	json_t *p = json_object_get(cfg.prices, model);
	if (p == NULL) {
		/* "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini". */
		const char *k;
		json_t *v;
		size_t best = 0;
		json_object_foreach(cfg.prices, k, v)
		{
			size_t l = strlen(k);
			if (l > best && strncmp(model, k, l) == 0 && model[l] == '-') {
				best = l;
				p = v;
			}
		}
	}
	*known = p != NULL;
	if (p == NULL)
		return 0;
	return (tin * jnum(p, "input", 0) + tout * jnum(p, "output", 0)) / 1e6;
}

/* ---- agents ---------------------------------------------------------------- */

struct conv {
	char *peer;
	json_t *msgs; /* [{role, content}] */
	struct conv *next;
};

struct held {
	char *line;
	struct held *next;
};

enum pause_why { RUNNING = 0, PAUSED_BUDGET, PAUSED_LOOP, PAUSED_CAPTAIN };
static const char *const pause_names[] = {"running", "paused: budget reached", "paused: reply loop",
                                          "paused by the captain"};

struct gagent {
	struct dreamos_agent *agent;
	char *name;
	char *model;
	char *system;
	double budget; /* 0: none */
	double spent;  /* all time (kept in the store) */
	long tin, tout, requests, errors;
	enum pause_why paused;
	bool failed;
	char *fail_reason;
	struct conv *convs;
	struct held *held, **held_tail;
	struct gagent *next;
};

static struct gagent *agents;

/* Loop guard: exchanges between an agent and a peer. */
struct pair {
	char *a, *b; /* a < b */
	double *ts;  /* ring of the last loop_n times */
	int n, pos;
	struct pair *next;
};
static struct pair *pairs;

static struct gagent *
agent_find(const char *name)
{
	for (struct gagent *g = agents; g != NULL; g = g->next)
		if (strcmp(g->name, name) == 0)
			return g;
	return NULL;
}

/* A line to the orchestrator as the agent. */
static void
aline(struct gagent *g, json_t *o)
{
	agent_send(g->agent, g->name, o);
}

/* A log record with the agent as its source. */
static void
alog(struct gagent *g, const char *level, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *s = vfmt(f, ap);
	va_end(ap);
	aline(g, json_pack("{s:s,s:s,s:s}", "type", "log", "level", level, "msg", s ? s : ""));
	free(s);
}

/* An alert: a log line and an urgent message to the captain. */
static void
alert(struct gagent *g, const char *kind, const char *text)
{
	alog(g, "warn", "%s", text);
	json_t *b = json_pack("{s:s,s:s,s:s}", "alert", kind, "agent", g->name, "text", text);
	char *s = json_dumps(b, JSON_COMPACT);
	host->send(self, "captain", s, "urgent", NULL, NULL);
	free(s);
	json_decref(b);
}

static char *
kv_key(const char *what, const char *name)
{
	char *k = NULL;
	if (asprintf(&k, "%s.%s", what, name) < 0)
		k = NULL;
	return k;
}

/* The options of `agent spawn NAME --type chatgpt`, as settings. */
static json_t *
spawn_options(const struct gagent *g)
{
	if (g->agent == NULL || !DREAMOS_HOST_HAS(host, agent_option))
		return NULL;
	json_t *o = json_object();
	const char *v;
	if ((v = host->agent_option(g->agent, "model")) != NULL)
		json_object_set_new(o, "model", json_string(v));
	if ((v = host->agent_option(g->agent, "system")) != NULL)
		json_object_set_new(o, "system", json_string(v));
	if ((v = host->agent_option(g->agent, "budget-usd")) != NULL)
		json_object_set_new(o, "budget_usd", json_real(strtod(v, NULL)));
	return o;
}

/* Settings of agent name: kv agent.NAME, spawn options, config agents.NAME,
 * defaults. */
static void
agent_settings(struct gagent *g)
{
	free(g->model);
	free(g->system);
	g->model = xstrdup(cfg.model);
	g->system = xstrdup(cfg.system);
	g->budget = cfg.budget_usd;
	/* Config agents.NAME, then `agent spawn --model ...`, then what
	 * chatgpt spawn/resume stored. */
	json_t *layers[3] = {json_object_get(cfg.agents, g->name), spawn_options(g), NULL};
	char *k = kv_key("agent", g->name);
	char *stored = host->kv_get(self, k);
	free(k);
	if (stored != NULL)
		layers[2] = json_loads(stored, 0, NULL);
	host->free(stored);
	for (int i = 0; i < 3; i++) {
		json_t *o = layers[i];
		if (!json_is_object(o))
			continue;
		if (jstr(o, "model")) {
			free(g->model);
			g->model = strdup(jstr(o, "model"));
		}
		if (jstr(o, "system")) {
			free(g->system);
			g->system = strdup(jstr(o, "system"));
		}
		g->budget = jnum(o, "budget_usd", g->budget);
	}
	json_decref(layers[1]);
	json_decref(layers[2]);
	k = kv_key("spent", g->name);
	char *sp = host->kv_get(self, k);
	free(k);
	g->spent = sp ? strtod(sp, NULL) : 0;
	host->free(sp);
}

static void
agent_save_spent(struct gagent *g)
{
	char v[64];
	snprintf(v, sizeof v, "%.9f", g->spent);
	char *k = kv_key("spent", g->name);
	host->kv_set(self, k, v);
	free(k);
}

static struct conv *
conv_get(struct gagent *g, const char *peer)
{
	for (struct conv *c = g->convs; c != NULL; c = c->next)
		if (strcmp(c->peer, peer) == 0)
			return c;
	struct conv *c = calloc(1, sizeof *c);
	c->peer = strdup(peer);
	c->msgs = json_array();
	c->next = g->convs;
	g->convs = c;
	return c;
}

static void
conv_add(struct gagent *g, const char *peer, const char *role, const char *content)
{
	struct conv *c = conv_get(g, peer);
	json_array_append_new(c->msgs, json_pack("{s:s,s:s}", "role", role, "content", content));
	while ((int)json_array_size(c->msgs) > cfg.history)
		json_array_remove(c->msgs, 0);
	/* A conversation starts with the user's turn. */
	while (json_array_size(c->msgs) > 0 &&
	       strcmp(jstr(json_array_get(c->msgs, 0), "role"), "user") != 0)
		json_array_remove(c->msgs, 0);
}

/* ---- requests -------------------------------------------------------------- */

enum req_kind { REQ_ASK, REQ_MESSAGE, REQ_TASK };

struct req {
	enum req_kind kind;
	struct dreamos_call *call; /* REQ_ASK */
	struct gagent *g;          /* REQ_MESSAGE, REQ_TASK */
	char *peer;                /* REQ_MESSAGE */
	char *prompt;
	int64_t msg_id, task_id;
	char *model;
	uint64_t http;
	bool stream;
	char *sse;
	size_t sselen;
	char *answer;
	size_t anslen;
	long tin, tout;
	bool got_usage, got_done;
	char *stream_error;
	struct req *next;
};
static struct req *reqs;

static void
req_free(struct req *r)
{
	for (struct req **pp = &reqs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	free(r->peer);
	free(r->prompt);
	free(r->model);
	free(r->sse);
	free(r->answer);
	free(r->stream_error);
	free(r);
}

static void
ans_add(struct req *r, const char *s)
{
	size_t l = strlen(s);
	r->answer = realloc(r->answer, r->anslen + l + 1);
	memcpy(r->answer + r->anslen, s, l + 1);
	r->anslen += l;
}

/* One server-sent event's data. */
static void
sse_event(struct dreamos_ext *ext, struct req *r, const char *data)
{
	if (strcmp(data, "[DONE]") == 0) {
		r->got_done = true;
		return;
	}
	json_t *j = json_loads(data, 0, NULL);
	if (j == NULL)
		return;
	json_t *err = json_object_get(j, "error");
	if (err != NULL && r->stream_error == NULL) {
		const char *m = jstr(err, "message");
		r->stream_error = fmt("%s", m ? m : "error in the stream");
	}
	json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
	const char *piece =
	    json_string_value(json_object_get(json_object_get(ch, "delta"), "content"));
	if (piece != NULL && *piece != '\0') {
		ans_add(r, piece);
		if (r->call != NULL)
			host->call_stream(r->call, piece);
	}
	json_t *u = json_object_get(j, "usage");
	if (json_is_object(u)) {
		r->tin = (long)jnum(u, "prompt_tokens", 0);
		r->tout = (long)jnum(u, "completion_tokens", 0);
		r->got_usage = true;
	}
	if (jstr(j, "model") && r->model && strcmp(jstr(j, "model"), r->model) != 0) {
		free(r->model);
		r->model = strdup(jstr(j, "model"));
	}
	json_decref(j);
}

static void
on_chunk(struct dreamos_ext *ext, void *arg, const char *data, size_t len)
{
	struct req *r = arg;
	r->sse = realloc(r->sse, r->sselen + len + 1);
	memcpy(r->sse + r->sselen, data, len);
	r->sselen += len;
	r->sse[r->sselen] = '\0';
	/* Events end with a blank line; data: lines are joined by '\n'. */
	for (;;) {
		char *end = strstr(r->sse, "\n\n");
		char *end2 = strstr(r->sse, "\r\n\r\n");
		size_t sep = 2;
		if (end2 != NULL && (end == NULL || end2 < end)) {
			end = end2;
			sep = 4;
		}
		if (end == NULL)
			break;
		*end = '\0';
		char *ev = calloc(1, (size_t)(end - r->sse) + 1);
		size_t dl = 0;
		for (char *line = r->sse; line != NULL && *line;) {
			char *nl = strchr(line, '\n');
			if (nl)
				*nl = '\0';
			size_t ll = strlen(line);
			if (ll > 0 && line[ll - 1] == '\r')
				line[--ll] = '\0';
			if (strncmp(line, "data:", 5) == 0) {
				const char *v = line + 5;
				if (*v == ' ')
					v++;
				if (dl > 0)
					ev[dl++] = '\n';
				memcpy(ev + dl, v, strlen(v));
				dl += strlen(v);
				ev[dl] = '\0';
			}
			line = nl ? nl + 1 : NULL;
		}
		if (dl > 0)
			sse_event(ext, r, ev);
		free(ev);
		size_t used = (size_t)(end - r->sse) + sep;
		memmove(r->sse, r->sse + used, r->sselen - used + 1);
		r->sselen -= used;
	}
}

/* Estimates tokens when the server does not say (4 bytes a token). */
static long
est_tokens(const char *s)
{
	return s ? (long)(strlen(s) + 3) / 4 : 0;
}

static void req_done(struct dreamos_ext *, void *, const struct dreamos_http_response *);

/* Starts a chat completion.  history may be NULL. */
/* Dreamscribe's fragments for a prompt, when it is loaded, as a system
 * message: what the fleet wrote about it before. */
static void
recall_add(json_t *msgs, const char *prompt)
{
	if (cfg.recall <= 0 || !DREAMOS_HOST_HAS(host, call_method) ||
	    host->ext_version(self, "dreamscribe") == NULL)
		return;
	json_t *in = json_pack("{s:s,s:i}", "text", prompt, "k", cfg.recall);
	char *arg = json_dumps(in, JSON_COMPACT);
	json_decref(in);
	char *res = host->call_method(self, "dreamscribe.recall", arg);
	free(arg);
	if (res == NULL) {
		host->log(self, DREAMOS_LOG_DEBUG, "no recall: %s", host->last_error(self));
		return;
	}
	json_t *rows = json_loads(res, 0, NULL);
	host->free(res);
	if (json_array_size(rows) > 0) {
		char *text = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);
		fputs("Memories from earlier work (Dreamscribe), most relevant first:", f);
		size_t i;
		json_t *row;
		json_array_foreach(rows, i, row)
		    fprintf(f, "\n- [%s, %s] %s", jstr(row, "agent") ? jstr(row, "agent") : "?",
		            jstr(row, "ts") ? jstr(row, "ts") : "?",
		            jstr(row, "text") ? jstr(row, "text") : "");
		fclose(f);
		json_array_append_new(msgs,
		                      json_pack("{s:s,s:s}", "role", "system", "content", text));
		free(text);
	}
	json_decref(rows);
}

static int
req_start(struct req *r, const char *system, json_t *history, char **why)
{
	if (api_key == NULL) {
		*why = fmt("%s", key_problem);
		return -1;
	}
	json_t *msgs = json_array();
	if (system != NULL && *system)
		json_array_append_new(msgs,
		                      json_pack("{s:s,s:s}", "role", "system", "content", system));
	if (r->g != NULL) /* an agent remembers; `ask` does not */
		recall_add(msgs, r->prompt);
	size_t i;
	json_t *m;
	json_array_foreach(history, i, m) json_array_append(msgs, m);
	json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", r->prompt));
	json_t *body =
	    json_pack("{s:s,s:o,s:b}", "model", r->model, "messages", msgs, "stream", r->stream);
	if (r->stream)
		json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	r->http = chat_request(cfg.base_url, api_key, text, cfg.timeout_s, cfg.retries, req_done,
	                       r->stream ? on_chunk : NULL, r, why);
	free(text);
	if (r->http == 0)
		return -1;
	r->next = reqs;
	reqs = r;
	return 0;
}

/* The error of a finished request (malloc'd), or NULL; *auth set on 401. */
static char *
resp_error(struct req *r, const struct dreamos_http_response *resp, bool *auth, bool *retry)
{
	*auth = false;
	*retry = true;
	if (resp->status == 401) {
		*auth = true;
		*retry = false;
		return fmt("HTTP 401 Unauthorized from %s: check the API key (%s)", cfg.base_url,
		           key_source());
	}
	if (resp->status >= 400) {
		json_t *j = json_loads(resp->body, 0, NULL);
		const char *m = jstr(json_object_get(j, "error"), "message");
		char *e = fmt("HTTP %ld from %s: %s (%d attempt%s)", resp->status, cfg.base_url,
		              m ? m : (resp->error ? resp->error : "error"), resp->attempts,
		              resp->attempts == 1 ? "" : "s");
		json_decref(j);
		if (resp->status < 500 && resp->status != 429)
			*retry = false;
		return e;
	}
	if (resp->error != NULL) {
		if (resp->status >= 200 && resp->status < 300)
			return fmt("the answer was cut off (%s)", resp->error);
		return fmt("%s: %s (%d attempt%s)", cfg.base_url, resp->error, resp->attempts,
		           resp->attempts == 1 ? "" : "s");
	}
	if (r->stream_error != NULL)
		return fmt("%s", r->stream_error);
	if (r->stream && !r->got_done)
		return fmt("the answer was cut off (no [DONE])");
	if (!r->stream) {
		json_t *j = json_loads(resp->body, 0, NULL);
		json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
		const char *c = jstr(json_object_get(ch, "message"), "content");
		if (c == NULL) {
			json_decref(j);
			return fmt("%s answered without a message (%zu bytes)", cfg.base_url,
			           resp->body_len);
		}
		ans_add(r, c);
		json_t *u = json_object_get(j, "usage");
		if (json_is_object(u)) {
			r->tin = (long)jnum(u, "prompt_tokens", 0);
			r->tout = (long)jnum(u, "completion_tokens", 0);
			r->got_usage = true;
		}
		if (jstr(j, "model") && strcmp(jstr(j, "model"), r->model) != 0) {
			free(r->model);
			r->model = strdup(jstr(j, "model"));
		}
		json_decref(j);
	}
	if (!r->got_usage) {
		r->tin = est_tokens(r->prompt);
		r->tout = est_tokens(r->answer);
	}
	return NULL;
}

static void agent_pause(struct gagent *g, enum pause_why why, const char *text);
static char *budget_text(const struct gagent *g);
static void agent_process(struct gagent *g, const char *line);

/* Accounts a request's usage to its agent; pauses it at its budget. */
static double
account(struct req *r)
{
	bool known;
	double cost = cost_of(r->model, r->tin, r->tout, &known);
	if (r->g == NULL) {
		ask_count++;
		ask_in += r->tin;
		ask_out += r->tout;
		ask_cost += cost;
		return cost;
	}
	struct gagent *g = r->g;
	g->tin += r->tin;
	g->tout += r->tout;
	g->spent += cost;
	agent_save_spent(g);
	json_t *u =
	    json_pack("{s:s,s:I,s:I,s:f,s:s}", "type", "usage", "tokens_in", (json_int_t)r->tin,
	              "tokens_out", (json_int_t)r->tout, "cost_usd", cost, "model", r->model);
	aline(g, u);
	if (g->budget > 0 && g->spent >= g->budget && g->paused != PAUSED_BUDGET) {
		char *text = budget_text(g);
		agent_pause(g, PAUSED_BUDGET, text);
		alert(g, "budget", text);
		free(text);
	}
	return cost;
}

static void
req_done(struct dreamos_ext *ext, void *arg, const struct dreamos_http_response *resp)
{
	struct req *r = arg;
	r->http = 0;
	if (r->stream && r->sselen > 0)
		on_chunk(ext, r, "\n\n", 2); /* a last event without its blank line */
	bool auth, retry;
	char *err = resp_error(r, resp, &auth, &retry);
	if (r->kind == REQ_ASK) {
		if (err != NULL) {
			if (r->anslen > 0)
				host->call_stream(r->call, "\n");
			host->call_error(r->call, "ask: %s", err);
			host->log(self, DREAMOS_LOG_WARN, "ask failed: %s", err);
			host->call_finish(r->call, DREAMOS_CMD_ERROR);
		} else {
			double cost = account(r);
			char line[300];
			snprintf(line, sizeof line, "%s[%s: %ld tokens in, %ld out, $%.6f%s]",
			         r->anslen > 0 && r->answer[r->anslen - 1] == '\n' ? "" : "\n",
			         r->model, r->tin, r->tout, cost,
			         r->got_usage ? "" : ", estimated");
			if (!r->stream) /* not expected, but then the answer goes here */
				host->call_stream(r->call, r->answer ? r->answer : "");
			host->call_reply(r->call, line);
			host->call_finish(r->call, DREAMOS_CMD_OK);
		}
		free(err);
		req_free(r);
		return;
	}
	struct gagent *g = r->g;
	g->requests++;
	if (err != NULL) {
		g->errors++;
		if (r->kind == REQ_TASK) {
			aline(g, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task",
			                   (json_int_t)r->task_id, "error", err, "retry", retry));
		} else if (!auth) {
			/* The sender is told; the message is taken. */
			json_t *b =
			    json_pack("{s:s,s:I}", "error", err, "reply_to", (json_int_t)r->msg_id);
			aline(g, json_pack("{s:s,s:s,s:o,s:I}", "type", "send", "to", r->peer,
			                   "body", b, "reply_to", (json_int_t)r->msg_id));
			aline(g,
			      json_pack("{s:s,s:I}", "type", "ack", "id", (json_int_t)r->msg_id));
		}
		if (auth) {
			if (!g->failed) {
				g->failed = true;
				free(g->fail_reason);
				g->fail_reason = strdup(err);
				alog(g, "error",
				     "agent %s failed: %s; 'agent restart %s' once fixed", g->name,
				     err, g->name);
				/* Failed in the orchestrator too: not restarted until the
				 * captain says so (the key will not fix itself). */
				if (DREAMOS_HOST_HAS(host, agent_set_state)) {
					char *why =
					    fmt("%s; 'agent restart %s' once fixed", err, g->name);
					host->agent_set_state(self, g->agent, "failed", why);
					free(why);
				}
			}
		} else {
			alog(g, "warn", "%s %s: %s", r->kind == REQ_TASK ? "task" : "message",
			     r->kind == REQ_TASK ? "failed" : "not answered", err);
		}
		free(err);
		req_free(r);
		return;
	}
	account(r);
	if (r->kind == REQ_TASK) {
		json_t *res = json_pack("{s:s,s:s,s:I,s:I}", "answer", r->answer ? r->answer : "",
		                        "model", r->model, "tokens_in", (json_int_t)r->tin,
		                        "tokens_out", (json_int_t)r->tout);
		aline(g, json_pack("{s:s,s:I,s:o}", "type", "task.done", "task",
		                   (json_int_t)r->task_id, "result", res));
	} else {
		conv_add(g, r->peer, "user", r->prompt);
		conv_add(g, r->peer, "assistant", r->answer ? r->answer : "");
		json_t *b = json_pack("{s:s,s:I}", "text", r->answer ? r->answer : "", "reply_to",
		                      (json_int_t)r->msg_id);
		aline(g, json_pack("{s:s,s:s,s:o,s:I}", "type", "send", "to", r->peer, "body", b,
		                   "reply_to", (json_int_t)r->msg_id));
		aline(g, json_pack("{s:s,s:I}", "type", "ack", "id", (json_int_t)r->msg_id));
	}
	req_free(r);
}

/* ---- the agent type ---------------------------------------------------------- */

static char *
budget_text(const struct gagent *g)
{
	return fmt("budget reached: agent %s spent $%.6f of its $%.6f budget; paused, not "
	           "stopped ('chatgpt resume %s --budget-usd N' raises it)",
	           g->name, g->spent, g->budget, g->name);
}

/* Paused here and in the orchestrator (agent list shows it, with text). */
static void
agent_pause(struct gagent *g, enum pause_why why, const char *text)
{
	g->paused = why;
	if (DREAMOS_HOST_HAS(host, agent_set_state) &&
	    host->agent_set_state(self, g->agent, "paused", text) != 0)
		host->log(self, DREAMOS_LOG_DEBUG, "%s: %s", g->name, host->last_error(self));
}

/* Lines held while paused or failed are replayed. */
static void
agent_replay(struct gagent *g)
{
	while (g->held != NULL && g->paused == RUNNING && !g->failed) {
		struct held *h = g->held;
		g->held = h->next;
		if (g->held == NULL)
			g->held_tail = &g->held;
		agent_process(g, h->line);
		free(h->line);
		free(h);
	}
}

static void
agent_hold(struct gagent *g, const char *line)
{
	struct held *h = calloc(1, sizeof *h);
	h->line = strdup(line);
	*g->held_tail = h;
	g->held_tail = &h->next;
}

static void
agent_resume(struct gagent *g)
{
	g->paused = RUNNING;
	/* Not paused in the orchestrator any more (an error if it was not). */
	if (DREAMOS_HOST_HAS(host, agent_set_state))
		host->agent_set_state(self, g->agent, "ready", "resumed");
	/* The loop guard starts over for this agent's pairs. */
	for (struct pair *p = pairs; p != NULL; p = p->next)
		if (strcmp(p->a, g->name) == 0 || strcmp(p->b, g->name) == 0)
			p->n = p->pos = 0;
	agent_replay(g);
}

/* Records an exchange with peer; true if it makes a loop. */
static bool
loop_check(struct gagent *g, const char *peer)
{
	if (cfg.loop_n <= 0 || strcmp(peer, "captain") == 0)
		return false;
	const char *a = strcmp(g->name, peer) < 0 ? g->name : peer;
	const char *b = a == g->name ? peer : g->name;
	struct pair *p = pairs;
	while (p != NULL && !(strcmp(p->a, a) == 0 && strcmp(p->b, b) == 0))
		p = p->next;
	if (p == NULL) {
		p = calloc(1, sizeof *p);
		p->a = strdup(a);
		p->b = strdup(b);
		p->ts = calloc((size_t)cfg.loop_n, sizeof *p->ts);
		p->next = pairs;
		pairs = p;
	}
	double t = now_s();
	p->ts[p->pos] = t;
	p->pos = (p->pos + 1) % cfg.loop_n;
	if (p->n < cfg.loop_n)
		p->n++;
	/* The oldest of the last loop_n is at pos once the ring is full. */
	return p->n == cfg.loop_n && t - p->ts[p->pos] <= cfg.loop_s;
}

static char *
text_of(json_t *v, const char *const *keys)
{
	if (json_is_string(v))
		return strdup(json_string_value(v));
	for (size_t i = 0; keys[i] != NULL; i++)
		if (json_is_string(json_object_get(v, keys[i])))
			return strdup(json_string_value(json_object_get(v, keys[i])));
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static void
agent_message(struct gagent *g, json_t *m, const char *line)
{
	json_int_t id = json_integer_value(json_object_get(m, "id"));
	const char *from = jstr(m, "from");
	json_t *body = json_object_get(m, "body");
	if (from == NULL)
		from = "captain";
	/* Error replies (of another LLM agent) are taken, not answered. */
	if (json_is_object(body) && json_object_get(body, "error") != NULL &&
	    json_object_get(body, "text") == NULL) {
		aline(g, json_pack("{s:s,s:I}", "type", "ack", "id", id));
		return;
	}
	if (loop_check(g, from)) {
		char text[400];
		snprintf(text, sizeof text,
		         "loop guard: agents %s and %s exchanged %d messages within %.0f s; %s%s%s "
		         "paused ('chatgpt resume NAME' resumes)",
		         g->name, from, cfg.loop_n, cfg.loop_s, g->name,
		         agent_find(from) ? " and " : "", agent_find(from) ? from : "");
		agent_pause(g, PAUSED_LOOP, text);
		struct gagent *other = agent_find(from);
		if (other != NULL && other->paused == RUNNING)
			agent_pause(other, PAUSED_LOOP, text);
		alert(g, "loop", text);
		agent_hold(g, line);
		return;
	}
	static const char *const keys[] = {"text", "prompt", "content", "message", NULL};
	struct req *r = calloc(1, sizeof *r);
	r->kind = REQ_MESSAGE;
	r->g = g;
	/* {"text": T, "to": NAME}: the answer goes to NAME (the captain
	 * introduces two agents to each other).  The conversation is the one
	 * with the peer the answer goes to, both for the prompt and for
	 * keeping the exchange. */
	const char *to = json_is_object(body) ? jstr(body, "to") : NULL;
	r->peer = strdup(to ? to : from);
	r->msg_id = id;
	r->prompt = text_of(body, keys);
	r->model = strdup(g->model);
	char *why = NULL;
	if (req_start(r, g->system, conv_get(g, r->peer)->msgs, &why) != 0) {
		alog(g, "error", "message %lld: %s", (long long)id, why);
		free(why);
		req_free(r);
	}
}

static void
agent_task(struct gagent *g, json_t *m)
{
	json_t *t = json_object_get(m, "task");
	json_int_t id = json_integer_value(json_object_get(t, "id"));
	json_t *payload = json_object_get(t, "payload");
	struct req *r = calloc(1, sizeof *r);
	r->kind = REQ_TASK;
	r->g = g;
	r->task_id = id;
	const char *system = g->system;
	if (json_is_string(payload)) {
		r->prompt = strdup(json_string_value(payload));
	} else if (json_is_object(payload) &&
	           (jstr(payload, "prompt") != NULL || jstr(payload, "text") != NULL)) {
		r->prompt = strdup(jstr(payload, "prompt") ? jstr(payload, "prompt")
		                                           : jstr(payload, "text"));
		if (jstr(payload, "system"))
			system = jstr(payload, "system");
		if (jstr(payload, "model"))
			r->model = strdup(jstr(payload, "model"));
	} else {
		const char *title = jstr(t, "title");
		char *p = json_is_null(payload) || payload == NULL
		              ? NULL
		              : json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
		if (asprintf(&r->prompt, "%s%s%s", title ? title : "", p ? "\n\n" : "",
		             p ? p : "") < 0)
			r->prompt = NULL;
		free(p);
	}
	if (r->model == NULL)
		r->model = strdup(g->model);
	aline(g, json_pack("{s:s,s:I,s:i,s:s}", "type", "task.progress", "task", id, "pct", 0,
	                   "note", "asking the model"));
	char *why = NULL;
	if (req_start(r, system, NULL, &why) != 0) {
		aline(g, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task", id, "error",
		                   why, "retry", 0));
		free(why);
		req_free(r);
	}
}

static void
agent_process(struct gagent *g, const char *line)
{
	json_t *m = json_loads(line, 0, NULL);
	const char *type = jstr(m, "type");
	if (type == NULL) {
		json_decref(m);
		return;
	}
	if (strcmp(type, "message") == 0 || strcmp(type, "task.assign") == 0) {
		if (g->failed && strcmp(type, "task.assign") == 0) {
			json_int_t id =
			    json_integer_value(json_object_get(json_object_get(m, "task"), "id"));
			char *e = fmt("agent %s failed: %s", g->name, g->fail_reason);
			aline(g, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task", id,
			                   "error", e, "retry", 1));
			free(e);
		} else if (g->failed) {
			/* Not acknowledged: delivered again once restarted. */
		} else if (g->paused != RUNNING) {
			agent_hold(g, line);
		} else if (strcmp(type, "message") == 0) {
			agent_message(g, m, line);
		} else {
			agent_task(g, m);
		}
	} else if (strcmp(type, "task.cancel") == 0) {
		json_int_t id = json_integer_value(json_object_get(m, "task"));
		for (struct req *r = reqs; r != NULL; r = r->next)
			if (r->g == g && r->kind == REQ_TASK && r->task_id == id) {
				host->http_cancel(self, r->http);
				req_free(r);
				break;
			}
	} else if (strcmp(type, "command") == 0) {
		const char *name = jstr(m, "name");
		if (name && strcmp(name, "pause") == 0 && g->paused == RUNNING) {
			g->paused = PAUSED_CAPTAIN;
		} else if (name && strcmp(name, "resume") == 0 && g->paused != RUNNING) {
			/* `agent resume`: the captain's word, except over budget. */
			if (g->paused == PAUSED_BUDGET && g->budget > 0 && g->spent >= g->budget) {
				char *text = budget_text(g);
				agent_pause(g, PAUSED_BUDGET, text);
				free(text);
			} else {
				agent_resume(g);
			}
		}
	}
	json_decref(m);
}

static void
agent_on_line(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *line)
{
	agent_process(state, line);
}

static int
agent_start(struct dreamos_ext *ext, struct dreamos_agent *agent, void **state)
{
	const char *name = host->agent_name(agent);
	const char *b =
	    DREAMOS_HOST_HAS(host, agent_option) ? host->agent_option(agent, "budget-usd") : NULL;
	char *end = NULL;
	if (b != NULL && (strtod(b, &end) < 0 || end == b || *end != '\0')) {
		host->set_error(ext, "agent %s: --budget-usd expects a number >= 0, got '%s'", name,
		                b);
		return -1;
	}
	struct gagent *g = calloc(1, sizeof *g);
	g->agent = agent;
	g->name = strdup(name);
	g->held_tail = &g->held;
	agent_settings(g);
	key_load();
	g->next = agents;
	agents = g;
	*state = g;
	if (api_key == NULL) {
		host->log(self, DREAMOS_LOG_ERROR, "agent %s cannot start: %s", name, key_problem);
		agents = g->next;
		free(g->name);
		free(g->model);
		free(g->system);
		free(g);
		return -1;
	}
	if (g->budget > 0 && g->spent >= g->budget) {
		host->log(self, DREAMOS_LOG_WARN,
		          "agent %s starts paused: it spent $%.6f of its $%.6f budget", name,
		          g->spent, g->budget);
		char *text = budget_text(g);
		agent_pause(g, PAUSED_BUDGET, text);
		free(text);
	}
	host->log(self, DREAMOS_LOG_INFO, "agent %s ready (model %s, budget %s%.4f)", name,
	          g->model, g->budget > 0 ? "$" : "none ", g->budget);
	return 0;
}

static void
agent_free(struct gagent *g)
{
	for (struct req *r = reqs, *n; r != NULL; r = n) {
		n = r->next;
		if (r->g == g) {
			host->http_cancel(self, r->http);
			req_free(r);
		}
	}
	while (g->convs) {
		struct conv *c = g->convs;
		g->convs = c->next;
		free(c->peer);
		json_decref(c->msgs);
		free(c);
	}
	while (g->held) {
		struct held *h = g->held;
		g->held = h->next;
		free(h->line);
		free(h);
	}
	free(g->name);
	free(g->model);
	free(g->system);
	free(g->fail_reason);
	free(g);
}

static void
agent_stop(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *why)
{
	struct gagent *g = state;
	for (struct gagent **pp = &agents; *pp != NULL; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	agent_free(g);
}

/* ---- commands ---------------------------------------------------------------- */

static int
cmd_ask(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	struct req *r = calloc(1, sizeof *r);
	r->kind = REQ_ASK;
	r->call = call;
	r->stream = true;
	r->prompt = args_join(call, 0);
	const char *model = host->call_opt(call, "model");
	r->model = strdup(model ? model : cfg.model);
	const char *system = host->call_opt(call, "system");
	char *why = NULL;
	if (api_key == NULL)
		key_load();
	if (req_start(r, system ? system : cfg.system, NULL, &why) != 0) {
		host->call_error(call, "ask: %s", why);
		free(why);
		req_free(r);
		return DREAMOS_CMD_ERROR;
	}
	return DREAMOS_CMD_WAIT;
}

static json_t *
agent_json(struct gagent *g)
{
	json_t *o =
	    json_pack("{s:s,s:s,s:s?,s:f,s:f,s:I,s:I,s:I,s:I,s:s,s:b,s:s?,s:I}", "name", g->name,
	              "model", g->model, "system", g->system, "budget_usd", g->budget, "spent_usd",
	              g->spent, "tokens_in", (json_int_t)g->tin, "tokens_out", (json_int_t)g->tout,
	              "requests", (json_int_t)g->requests, "errors", (json_int_t)g->errors, "state",
	              pause_names[g->paused], "failed", g->failed, "failure", g->fail_reason,
	              "held", (json_int_t)0);
	json_int_t held = 0;
	for (struct held *h = g->held; h != NULL; h = h->next)
		held++;
	json_object_set_new(o, "held", json_integer(held));
	json_t *peers = json_object();
	for (struct conv *c = g->convs; c != NULL; c = c->next)
		json_object_set_new(peers, c->peer,
		                    json_integer((json_int_t)json_array_size(c->msgs)));
	json_object_set_new(o, "conversations", peers);
	return o;
}

/* Stores settings of NAME from the command's options (merged with what was
 * stored before). */
static int
store_settings(struct dreamos_call *call, const char *name)
{
	char *k = kv_key("agent", name);
	char *old = host->kv_get(self, k);
	json_t *o = old ? json_loads(old, 0, NULL) : NULL;
	host->free(old);
	if (!json_is_object(o)) {
		json_decref(o);
		o = json_object();
	}
	if (host->call_opt(call, "model"))
		json_object_set_new(o, "model", json_string(host->call_opt(call, "model")));
	if (host->call_opt(call, "system"))
		json_object_set_new(o, "system", json_string(host->call_opt(call, "system")));
	const char *b = host->call_opt(call, "budget-usd");
	if (b != NULL) {
		char *end;
		double v = strtod(b, &end);
		if (*end != '\0' || !(v >= 0) || !isfinite(v)) {
			json_decref(o);
			free(k);
			host->call_error(
			    call, "chatgpt: --budget-usd expects a number >= 0, got '%s'", b);
			return -1;
		}
		json_object_set_new(o, "budget_usd", json_real(v));
	}
	char *s = json_dumps(o, JSON_COMPACT);
	int rc = host->kv_set(self, k, s);
	if (rc != 0)
		host->call_error(call, "chatgpt: %s", host->last_error(self));
	free(s);
	free(k);
	json_decref(o);
	return rc;
}

/* Names created with `chatgpt spawn`, created again at every load. */
static json_t *
spawned_list(void)
{
	char *s = host->kv_get(self, "spawned");
	json_t *l = s ? json_loads(s, 0, NULL) : NULL;
	host->free(s);
	return json_is_object(l) ? l : (json_decref(l), json_object());
}

static int
cmd_chatgpt(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	const char *verb = host->call_arg(call, 0);
	const char *name = host->call_arg(call, 1);
	if (verb == NULL || strcmp(verb, "status") == 0) {
		json_t *list = json_array();
		for (struct gagent *g = agents; g != NULL; g = g->next)
			if (name == NULL || strcmp(name, g->name) == 0)
				json_array_append_new(list, agent_json(g));
		if (name != NULL && json_array_size(list) == 0) {
			json_decref(list);
			return host->call_error(call, "chatgpt: no running chatgpt agent '%s'",
			                        name);
		}
		json_t *o;
		if (name != NULL) {
			o = json_incref(json_array_get(list, 0));
		} else {
			o = json_pack(
			    "{s:s,s:s,s:s,s:b,s:s?,s:f,s:i,s:f,s:o,s:o,s:{s:I,s:I,s:I,s:f}}",
			    "base_url", cfg.base_url, "model", cfg.model, "api_key", key_source(),
			    "api_key_present", api_key != NULL, "api_key_problem",
			    api_key ? NULL : key_problem, "timeout_s", cfg.timeout_s, "retries",
			    cfg.retries, "budget_usd", cfg.budget_usd, "prices",
			    json_deep_copy(cfg.prices), "agents", json_incref(list), "ask",
			    "requests", (json_int_t)ask_count, "tokens_in", (json_int_t)ask_in,
			    "tokens_out", (json_int_t)ask_out, "cost_usd", ask_cost);
		}
		json_decref(list);
		return reply_redacted(call, o);
	}
	if (name == NULL) {
		host->call_error(call, "chatgpt %s: missing agent NAME", verb);
		return DREAMOS_CMD_USAGE;
	}
	if (strcmp(verb, "spawn") == 0 || strcmp(verb, "set") == 0) {
		if (store_settings(call, name) != 0)
			return DREAMOS_CMD_ERROR;
		struct gagent *g = agent_find(name);
		if (g != NULL) {
			double spent = g->spent;
			agent_settings(g);
			g->spent = spent;
		}
		if (strcmp(verb, "set") == 0) {
			host->call_reply(call, g ? "settings changed"
			                         : "settings stored (used when it starts)");
			return DREAMOS_CMD_OK;
		}
		/* The capabilities given, or without --cap those of its last
		 * spawn (a spawn to change its model keeps them). */
		size_t ncap = host->call_opt_count(call, "cap");
		json_t *l = spawned_list();
		json_t *cl = json_object_get(l, name);
		if (ncap > 0 || !json_is_array(cl)) {
			cl = json_array();
			for (size_t i = 0; i < ncap; i++)
				json_array_append_new(
				    cl, json_string(host->call_opt_at(call, "cap", i)));
			json_object_set_new(l, name, cl);
		}
		size_t n = json_array_size(cl);
		const char **caps = n > 0 ? calloc(n + 1, sizeof *caps) : NULL;
		for (size_t i = 0; i < n; i++)
			caps[i] = json_string_value(json_array_get(cl, i));
		int rc = host->agent_create(self, TYPE_NAME, name, caps, -1);
		free(caps);
		if (rc != 0) {
			json_decref(l);
			return host->call_error(call, "chatgpt spawn: %s", host->last_error(self));
		}
		char *s = json_dumps(l, JSON_COMPACT);
		host->kv_set(self, "spawned", s);
		free(s);
		json_decref(l);
		char msg[200];
		snprintf(msg, sizeof msg, "chatgpt agent %s spawned", name);
		host->call_reply(call, msg);
		return DREAMOS_CMD_OK;
	}
	if (strcmp(verb, "resume") == 0) {
		struct gagent *g = agent_find(name);
		if (g == NULL)
			return host->call_error(call, "chatgpt: no running chatgpt agent '%s'",
			                        name);
		if (host->call_opt(call, "budget-usd") != NULL) {
			if (store_settings(call, name) != 0)
				return DREAMOS_CMD_ERROR;
			double spent = g->spent;
			agent_settings(g);
			g->spent = spent;
		}
		if (g->paused == RUNNING)
			return host->call_error(call, "chatgpt: agent %s is not paused", name);
		if (g->paused == PAUSED_BUDGET && g->budget > 0 && g->spent >= g->budget)
			return host->call_error(
			    call,
			    "chatgpt: agent %s spent $%.6f of its $%.6f budget: raise it "
			    "with --budget-usd",
			    name, g->spent, g->budget);
		alog(g, "info", "resumed (%s)", pause_names[g->paused]);
		agent_resume(g);
		host->call_reply(call, "resumed");
		return DREAMOS_CMD_OK;
	}
	if (strcmp(verb, "forget") == 0) {
		json_t *l = spawned_list();
		json_object_del(l, name);
		char *s = json_dumps(l, JSON_COMPACT);
		host->kv_set(self, "spawned", s);
		free(s);
		json_decref(l);
		char *k = kv_key("agent", name);
		host->kv_del(self, k);
		free(k);
		host->call_reply(call, "forgotten (stop it with 'agent stop')");
		return DREAMOS_CMD_OK;
	}
	host->call_error(call, "chatgpt: unknown verb '%s' (status, spawn, set, resume, forget)",
	                 verb);
	return DREAMOS_CMD_USAGE;
}

static void
complete_chatgpt(struct dreamos_ext *ext, void *arg, const char *partial,
                 dreamos_complete_add_fn add, void *add_arg)
{
	static const char *const words[] = {"status", "spawn", "set", "resume", "forget"};
	for (size_t i = 0; i < 5; i++)
		if (strncmp(words[i], partial, strlen(partial)) == 0)
			add(words[i], add_arg);
	for (struct gagent *g = agents; g != NULL; g = g->next)
		if (strncmp(g->name, partial, strlen(partial)) == 0)
			add(g->name, add_arg);
}

static const struct dreamos_cmd_opt ask_opts[] = {
    {"model", DREAMOS_OPT_VALUE, "MODEL", NULL},
    {"system", DREAMOS_OPT_VALUE, "TEXT", NULL},
    {NULL, 0, NULL, NULL},
};

static const struct dreamos_cmd_opt chatgpt_opts[] = {
    {"model", DREAMOS_OPT_VALUE, "MODEL", NULL},
    {"system", DREAMOS_OPT_VALUE, "TEXT", NULL},
    {"cap", DREAMOS_OPT_MULTI, "CAPABILITY", "cap"},
    {"budget-usd", DREAMOS_OPT_VALUE, "USD", NULL},
    {NULL, 0, NULL, NULL},
};

/* ---- configuration and entry points --------------------------------------------- */

static void
cfg_free(void)
{
	free(cfg.base_url);
	free(cfg.key_env);
	free(cfg.key_file);
	free(cfg.model);
	free(cfg.system);
	json_decref(cfg.prices);
	json_decref(cfg.agents);
	memset(&cfg, 0, sizeof cfg);
}

static int
cfg_load(const char *config)
{
	json_t *c = cfg_object(config, "chatgpt");
	if (c == NULL)
		return -1;
	cfg.base_url = cfg_base_url(c, "chatgpt");
	if (cfg.base_url == NULL) {
		json_decref(c);
		return -1;
	}
	cfg.key_env = strdup(jstr(c, "api_key_env") ? jstr(c, "api_key_env") : "OPENAI_API_KEY");
	cfg.key_file = xstrdup(jstr(c, "api_key_file"));
	if (json_object_get(c, "api_key") != NULL) {
		host->set_error(self, "extensions.chatgpt.api_key is not read: put the key in the "
		                      "environment (api_key_env) or in a 0600 file (api_key_file)");
		json_decref(c);
		return -1;
	}
	cfg.model = strdup(jstr(c, "model") ? jstr(c, "model") : "gpt-4o-mini");
	cfg.system = xstrdup(jstr(c, "system"));
	cfg.timeout_s = jnum(c, "timeout_s", 120);
	cfg.retries = (int)jnum(c, "retries", -1);
	cfg.budget_usd = jnum(c, "budget_usd", 0);
	cfg.history = (int)jnum(c, "history", 20);
	cfg.recall = (int)jnum(c, "recall", 3);
	if (cfg.recall < 0 || cfg.recall > 20)
		cfg.recall = cfg.recall < 0 ? 0 : 20;
	if (cfg.history < 0)
		cfg.history = 0;
	json_t *lg = json_object_get(c, "loop_guard");
	cfg.loop_n = (int)jnum(lg, "exchanges", 6);
	cfg.loop_s = jnum(lg, "seconds", 60);
	if (cfg.loop_n > 10000)
		cfg.loop_n = 10000;
	cfg.prices =
	    json_pack("{s:{s:f,s:f},s:{s:f,s:f},s:{s:f,s:f},s:{s:f,s:f},s:{s:f,s:f}}",
	              "gpt-4o-mini", "input", 0.15, "output", 0.60, "gpt-4o", "input", 2.50,
	              "output", 10.0, "gpt-4.1", "input", 2.0, "output", 8.0, "gpt-4.1-mini",
	              "input", 0.40, "output", 1.60, "gpt-4.1-nano", "input", 0.10, "output", 0.40);
	json_t *p = json_object_get(c, "prices");
	if (json_is_object(p))
		json_object_update(cfg.prices, p);
	cfg.agents = json_incref(json_object_get(c, "agents"));
	json_decref(c);
	return 0;
}

static int
setup(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	host = h;
	self = ext;
	if (cfg_load(config) != 0)
		return -1;
	key_load();
	if (cfg.key_file != NULL && api_key == NULL) {
		host->set_error(ext, "%s", key_problem);
		return -1;
	}
	if (api_key == NULL)
		host->log(ext, DREAMOS_LOG_INFO, "%s: ask and the chatgpt agents will fail",
		          key_problem);
	struct dreamos_command a = {
	    .size = sizeof a,
	    .name = "ask",
	    .usage = "[--model M] [--system TEXT] PROMPT...",
	    .help = "Asks the model (OpenAI-compatible chat completions); the answer streams in.",
	    .min_args = 1,
	    .max_args = -1,
	    .opts = ask_opts,
	    .fn = cmd_ask,
	};
	struct dreamos_command c = {
	    .size = sizeof c,
	    .name = "chatgpt",
	    .usage = "[status [NAME]|spawn NAME [--model M] [--system TEXT] [--cap C]... "
	             "[--budget-usd X]|set NAME [...]|resume NAME [--budget-usd X]|forget NAME]",
	    .help = "The ChatGPT bridge: settings and usage, LLM agents (spawn with settings, "
	            "change them, resume a paused one, forget one).",
	    .max_args = 2,
	    .opts = chatgpt_opts,
	    .complete_fn = complete_chatgpt,
	    .fn = cmd_chatgpt,
	};
	static const char *const options[] = {"model", "system", "budget-usd", NULL};
	struct dreamos_agent_type t = {
	    .size = sizeof t,
	    .options = options,
	    .name = TYPE_NAME,
	    .description = "an LLM agent (OpenAI-compatible chat completions)",
	    .max_tasks = 4,
	    .start = agent_start,
	    .on_line = agent_on_line,
	    .stop = agent_stop,
	};
	if (host->command_register(ext, &a) != 0 || host->command_register(ext, &c) != 0 ||
	    host->agent_type_register(ext, &t) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	json_t *l = spawned_list();
	const char *k;
	json_t *v;
	json_object_foreach(l, k, v)
	{
		size_t n = json_array_size(v);
		const char **caps = n ? calloc(n + 1, sizeof *caps) : NULL;
		for (size_t i = 0; i < n; i++)
			caps[i] = json_string_value(json_array_get(v, i));
		if (host->agent_create(ext, TYPE_NAME, k, caps, -1) != 0)
			host->log(ext, DREAMOS_LOG_WARN, "agent %s: %s", k, host->last_error(ext));
		free(caps);
	}
	json_decref(l);
	host->log(ext, DREAMOS_LOG_INFO, "chatgpt %s ready: %s, model %s, key from %s",
	          CHATGPT_VERSION, cfg.base_url, cfg.model, key_source());
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	while (agents) {
		struct gagent *g = agents;
		agents = g->next;
		agent_free(g);
	}
	while (reqs) /* ask requests: the host cancels them and finishes the calls */
		req_free(reqs);
	while (pairs) {
		struct pair *p = pairs;
		pairs = p->next;
		free(p->a);
		free(p->b);
		free(p->ts);
		free(p);
	}
	secret_free(api_key);
	api_key = NULL;
	cfg_free();
}

HELPERS_INIT_UNDOING(setup, fini)

DREAMOS_EXTENSION(.name = "chatgpt", .version = CHATGPT_VERSION,
                  .description = "ChatGPT bridge: ask, LLM agents, token and cost accounting",
                  .init = init, .fini = fini);
