/* host.c — the host function table of <dreamos/extension.h>: every call an
 * extension can make, each recording what it registers under the
 * extension's handle so that unloading sweeps it; in-process agents (the
 * link of an agent whose lines go to an extension's callbacks); and the
 * job queue that runs every callback into an extension from the top of the
 * loop (an idle handle), never from inside the bus, the task manager or
 * the log, so that an extension may call anything from any callback. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "agent.h"
#include "bus.h"
#include "config.h"
#include "ext-int.h"
#include "log.h"
#include "orch.h"
#include "outbound.h"
#include "proto.h"
#include "store.h"
#include "task.h"

static void ext_subs_update(struct exts *es);
static void ext_agent_close(struct dreamos_agent *ag, const char *why, bool failed);
static struct dreamos_agent *ext_agent_attach(struct ext_type *t, const char *name,
                                              char *const *caps, size_t ncaps, int max_tasks,
                                              char **cause);

/* ---- checks and errors -------------------------------------------------- */

/* True if x is a live extension handle used from the loop's thread; else
 * says why on stderr (there may be no way to log: wrong thread). */
static bool
ext_usable(struct dreamos_ext *x, const char *fn)
{
	if (x == NULL || x->magic != EXT_MAGIC) {
		fprintf(stderr, "dreamos: %s: not an extension handle (a stale one?)\n", fn);
		return false;
	}
	if (!pthread_equal(pthread_self(), x->es->loop_thread)) {
		fprintf(stderr,
		        "dreamos: extension %s called %s from another thread: refused (host "
		        "functions run on the loop's thread only)\n",
		        x->name, fn);
		return false;
	}
	return true;
}

#define EXT_CHECK(x, fail)                                                                         \
	do {                                                                                       \
		if (!ext_usable((x), __func__ + 2))                                                \
			return fail;                                                               \
	} while (0)

void
ext_set_error(struct dreamos_ext *x, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	free(x->error);
	x->error = s;
}

/* Refuses registrations once the extension is being unloaded. */
static bool
ext_can_register(struct dreamos_ext *x, const char *what)
{
	if (x->state == EXT_UNLOADING) {
		ext_set_error(x, "%s: the extension is being unloaded", what);
		return false;
	}
	return true;
}

/* Copies a struct the extension passed in: size 0 means this version's
 * layout; a larger one (a newer header) is cut to what the host knows. */
static bool
ext_copy_in(struct dreamos_ext *x, void *dst, size_t dsize, const void *src, const char *what)
{
	memset(dst, 0, dsize);
	if (src == NULL) {
		ext_set_error(x, "%s: NULL", what);
		return false;
	}
	size_t ssize = *(const size_t *)src;
	size_t n = ssize == 0 ? dsize : ssize;
	if (n < sizeof(size_t)) {
		ext_set_error(x, "%s: size %zu is too small", what, ssize);
		return false;
	}
	memcpy(dst, src, n < dsize ? n : dsize);
	return true;
}

/* A copy of s with every byte of invalid UTF-8 replaced by '?'. */
static char *
utf8_clean(const char *s)
{
	size_t len = strlen(s);
	char *out = xstrndup(s, len);
	if (utf8_valid(out, len))
		return out;
	for (size_t i = 0; i < len;) {
		size_t n = 1;
		unsigned char c = (unsigned char)out[i];
		if (c >= 0xc2 && c <= 0xdf)
			n = 2;
		else if (c >= 0xe0 && c <= 0xef)
			n = 3;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 4;
		if (c < 0x80 || (i + n <= len && n > 1 && utf8_valid(out + i, n))) {
			i += n;
			continue;
		}
		out[i++] = '?';
	}
	return out;
}

/* Parses a JSON text and returns it compact (caller frees), or NULL with
 * the parser's message in err. */
static char *
json_normalize(const char *text, char *err, size_t errlen)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
	if (j == NULL) {
		snprintf(err, errlen, "%s (line %d, column %d)", e.text, e.line, e.column);
		return NULL;
	}
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	return s;
}

/* The value at a dot-separated path ("a.b.0") under root, or NULL. */
static json_t *
json_at(json_t *root, const char *path)
{
	if (path == NULL || *path == '\0')
		return root;
	char *copy = xstrdup(path), *save = NULL;
	json_t *v = root;
	for (char *w = strtok_r(copy, ".", &save); w != NULL && v != NULL;
	     w = strtok_r(NULL, ".", &save)) {
		if (json_is_object(v)) {
			v = json_object_get(v, w);
		} else if (json_is_array(v) && w[strspn(w, "0123456789")] == '\0') {
			v = json_array_get(v, strtoul(w, NULL, 10));
		} else {
			v = NULL;
		}
	}
	free(copy);
	return v;
}

/* A string as its text, anything else as compact JSON; caller frees. */
static char *
json_value_text(const json_t *v)
{
	if (json_is_string(v))
		return xstrndup(json_string_value(v), json_string_length(v));
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* ---- the job queue -------------------------------------------------------- */

static void ext_idle_cb(uv_idle_t *h);

static void
ext_handle_free_cb(uv_handle_t *h)
{
	free(h);
}

static void
job_free(struct ext_job *j)
{
	free(j->text);
	free(j->kind_str);
	free(j);
}

static struct ext_job *
job_new(enum ext_job_kind kind)
{
	struct ext_job *j = xcalloc(1, sizeof *j);
	j->kind = kind;
	return j;
}

/* Appends a job and makes sure the idle handle runs. */
static void
jobs_push(struct exts *es, struct ext_job *j)
{
	if (es->closing) {
		job_free(j);
		return;
	}
	if (es->jobs_tail == NULL)
		es->jobs_tail = &es->jobs;
	*es->jobs_tail = j;
	es->jobs_tail = &j->next;
	es->njobs++;
	if (es->idle == NULL) {
		es->idle = xmalloc(sizeof *es->idle);
		uv_idle_init(orch_loop(es->o), es->idle);
		es->idle->data = es;
	}
	if (!es->idle_on) {
		uv_idle_start(es->idle, ext_idle_cb);
		es->idle_on = true;
	}
}

static struct ext_job *
jobs_pop(struct exts *es)
{
	struct ext_job *j = es->jobs;
	if (j == NULL)
		return NULL;
	es->jobs = j->next;
	if (es->jobs == NULL)
		es->jobs_tail = &es->jobs;
	es->njobs--;
	j->next = NULL;
	return j;
}

/* Drops the queued jobs of one agent (its lines come back through the
 * bus's redelivery). */
static void
jobs_drop_agent(struct exts *es, struct dreamos_agent *ag)
{
	struct ext_job **pp = &es->jobs;
	es->jobs_tail = &es->jobs;
	while (*pp != NULL) {
		struct ext_job *j = *pp;
		if (j->ag == ag) {
			*pp = j->next;
			es->njobs--;
			job_free(j);
			continue;
		}
		es->jobs_tail = &j->next;
		pp = &j->next;
	}
	ag->queued = 0;
}

/* Removes the subscriptions marked dead during a dispatch. */
static void
subs_compact(struct exts *es)
{
	es->subs_dirty = false;
	for (size_t i = 0; i < es->n; i++) {
		struct dreamos_ext *x = es->v[i];
		for (struct ext_sub **pp = &x->subs; *pp != NULL;) {
			struct ext_sub *s = *pp;
			if (s->fn == NULL) {
				*pp = s->next;
				free(s);
				continue;
			}
			pp = &s->next;
		}
	}
}

static void ext_agent_start(struct dreamos_agent *ag);
static void ext_attach_waiting(struct exts *es, const char *name);

/* Gives an event to every subscriber that wants it. */
static void
ext_event_run(struct exts *es, const struct ext_job *j)
{
	for (size_t i = 0; i < es->n && !es->closing; i++) {
		struct dreamos_ext *x = es->v[i];
		if (x->state != EXT_ACTIVE)
			continue;
		for (struct ext_sub *s = x->subs; s != NULL && !es->closing; s = s->next) {
			if (s->fn == NULL || !(s->kinds & j->ev) || s->from_seq > j->seq)
				continue;
			if (j->ev == DREAMOS_EV_LOGS &&
			    (j->level < s->min_level || j->origin == x->serial))
				continue;
			s->fn(x, s->arg, j->kind_str, j->text);
		}
	}
}

static void
ext_job_run(struct exts *es, struct ext_job *j)
{
	struct dreamos_agent *ag = j->ag;
	switch (j->kind) {
	case JOB_START:
		ext_agent_start(ag);
		break;
	case JOB_LINE:
		ag->queued -= j->len < ag->queued ? j->len : ag->queued;
		if (!ag->closing && ag->started)
			ag->type->on_line(ag->ext, ag, ag->state, j->text);
		break;
	case JOB_CLOSE:
		if (!ag->closing)
			ext_agent_close(ag, j->text, false);
		break;
	case JOB_ATTACH:
		ext_attach_waiting(es, j->text);
		break;
	case JOB_EVENT:
		ext_event_run(es, j);
		break;
	}
}

/* The idle callback: runs queued jobs (a bounded number per turn). */
static void
ext_idle_cb(uv_idle_t *h)
{
	struct exts *es = h->data;
	es->dispatching++;
	for (size_t budget = EXT_JOBS_PER_TURN; budget > 0 && !es->closing; budget--) {
		struct ext_job *j = jobs_pop(es);
		if (j == NULL)
			break;
		ext_job_run(es, j);
		job_free(j);
	}
	es->dispatching--;
	if (es->closing)
		return;
	if (es->dispatching == 0 && es->subs_dirty)
		subs_compact(es);
	if (es->jobs == NULL && es->idle_on) {
		uv_idle_stop(es->idle);
		es->idle_on = false;
	}
}

void
ext_jobs_close(struct exts *es)
{
	struct ext_job *j;
	while ((j = jobs_pop(es)) != NULL)
		job_free(j);
	if (es->idle != NULL) {
		uv_close((uv_handle_t *)es->idle, ext_handle_free_cb);
		es->idle = NULL;
		es->idle_on = false;
	}
	es->nsub_msgs = es->nsub_tasks = es->nsub_logs = 0;
	ext_subs_update(es);
}

/* ---- events from the core --------------------------------------------- */

static void
ext_push_event(struct exts *es, unsigned ev, const char *kind, char *json, int level,
               uint64_t origin)
{
	if (json == NULL)
		return;
	struct ext_job *j = job_new(JOB_EVENT);
	j->ev = ev;
	j->kind_str = xstrdup(kind);
	j->text = json;
	j->len = strlen(json);
	j->level = level;
	j->origin = origin;
	j->seq = ++es->event_seq;
	jobs_push(es, j);
}

static void
ext_on_bus(void *arg, const char *event, const json_t *msg)
{
	struct exts *es = arg;
	if (es->nsub_msgs == 0)
		return;
	char kind[64];
	snprintf(kind, sizeof kind, "message.%s", event);
	ext_push_event(es, DREAMOS_EV_MESSAGES, kind,
	               json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY), 0, 0);
}

static void
ext_on_task(void *arg, const struct task *t, enum task_state from)
{
	struct exts *es = arg;
	if (es->nsub_tasks == 0)
		return;
	char kind[64];
	if (from == t->state)
		snprintf(kind, sizeof kind, "task.%s",
		         t->state == TASK_RUNNING ? "progress" : "submitted");
	else
		snprintf(kind, sizeof kind, "task.%s", task_state_name(t->state));
	json_t *result = t->result ? json_loads(t->result, JSON_DECODE_ANY, NULL) : NULL;
	json_t *j = json_pack(
	    "{s:I,s:s?,s:s,s:s,s:s?,s:f,s:s?,s:s?,s:s,s:i,s:s?,s:s?,s:o}", "id", (json_int_t)t->id,
	    "title", t->title, "from", task_state_name(from), "to", task_state_name(t->state),
	    "agent", t->agent, "progress", t->progress, "note", t->note, "capability",
	    t->capability, "priority", proto_priority_name(t->priority), "attempt", t->attempt,
	    "error", t->error, "submitter", t->submitter, "result", result ? result : json_null());
	if (j == NULL)
		return;
	ext_push_event(es, DREAMOS_EV_TASKS, kind, json_dumps(j, JSON_COMPACT), 0, 0);
	json_decref(j);
}

static void
ext_on_log(void *arg, const struct log_record *rec)
{
	struct exts *es = arg;
	if (es->nsub_logs == 0 || (int)rec->level < es->log_min)
		return;
	json_t *j = log_record_json(rec);
	ext_push_event(es, DREAMOS_EV_LOGS, "log", json_dumps(j, JSON_COMPACT), (int)rec->level,
	               es->logging);
	json_decref(j);
}

/* Counts the live subscriptions and holds a core subscription for each
 * kind somebody wants (none otherwise: the core then skips the work). */
static void
ext_subs_update(struct exts *es)
{
	size_t nm = 0, nt = 0, nl = 0;
	int lmin = DREAMOS_LOG_FATAL + 1;
	if (!es->closing) {
		for (size_t i = 0; i < es->n; i++) {
			for (struct ext_sub *s = es->v[i]->subs; s != NULL; s = s->next) {
				if (s->fn == NULL)
					continue;
				nm += (s->kinds & DREAMOS_EV_MESSAGES) != 0;
				nt += (s->kinds & DREAMOS_EV_TASKS) != 0;
				if (s->kinds & DREAMOS_EV_LOGS) {
					nl++;
					if (s->min_level < lmin)
						lmin = s->min_level;
				}
			}
		}
	}
	es->nsub_msgs = nm;
	es->nsub_tasks = nt;
	es->nsub_logs = nl;
	es->log_min = lmin;
	struct orch *o = es->o;
	if (nm > 0 && es->bus_sub == 0 && orch_bus(o) != NULL)
		es->bus_sub = bus_subscribe_events(orch_bus(o), BUS_EV_ALL, ext_on_bus, es);
	else if (nm == 0 && es->bus_sub != 0) {
		if (orch_bus(o) != NULL)
			bus_unsubscribe_events(orch_bus(o), es->bus_sub);
		es->bus_sub = 0;
	}
	if (nt > 0 && es->task_sub == 0 && orch_tasks(o) != NULL)
		es->task_sub = tasks_subscribe_events(orch_tasks(o), ext_on_task, es);
	else if (nt == 0 && es->task_sub != 0) {
		if (orch_tasks(o) != NULL)
			tasks_unsubscribe_events(orch_tasks(o), es->task_sub);
		es->task_sub = 0;
	}
	if (nl > 0 && es->log_sub == 0 && orch_log(o) != NULL)
		es->log_sub = logmgr_subscribe(orch_log(o), ext_on_log, es);
	else if (nl == 0 && es->log_sub != 0) {
		if (orch_log(o) != NULL)
			logmgr_unsubscribe(orch_log(o), es->log_sub);
		es->log_sub = 0;
	}
}

/* ---- basics ------------------------------------------------------------- */

static const char *
h_name(struct dreamos_ext *x)
{
	EXT_CHECK(x, "");
	return x->name;
}

static const char *
h_last_error(struct dreamos_ext *x)
{
	EXT_CHECK(x, "");
	return x->error ? x->error : "";
}

static void
h_set_error(struct dreamos_ext *x, const char *fmt, ...)
{
	EXT_CHECK(x, );
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	free(x->error);
	x->error = utf8_clean(s);
	free(s);
}

static void
h_free(void *p)
{
	free(p);
}

static const char *
h_ext_version(struct dreamos_ext *x, const char *name)
{
	EXT_CHECK(x, NULL);
	if (name == NULL)
		return NULL;
	struct dreamos_ext *y = ext_find(x->es, name);
	return y != NULL && (y->state == EXT_ACTIVE || y == x) ? y->version : NULL;
}

/* ---- logging -------------------------------------------------------------- */

static enum log_level
ext_level(int level)
{
	if (level < DREAMOS_LOG_TRACE)
		return LVL_TRACE;
	if (level > DREAMOS_LOG_FATAL)
		return LVL_FATAL;
	return (enum log_level)level;
}

/* Emits a record from x (its own log subscriptions will not see it). */
static void
ext_emit(struct dreamos_ext *x, int level, json_t *fields, const char *msg)
{
	struct exts *es = x->es;
	uint64_t prev = es->logging;
	es->logging = x->serial;
	char *clean = utf8_clean(msg);
	log_emit(orch_log(es->o), ext_level(level), x->name, fields, "%s", clean);
	free(clean);
	es->logging = prev;
}

static void
h_log(struct dreamos_ext *x, int level, const char *fmt, ...)
{
	EXT_CHECK(x, );
	if (fmt == NULL || !log_enabled(orch_log(x->es->o), ext_level(level)))
		return;
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	ext_emit(x, level, NULL, s);
	free(s);
}

static void
h_log_fields(struct dreamos_ext *x, int level, const char *fields_json, const char *msg)
{
	EXT_CHECK(x, );
	if (msg == NULL || !log_enabled(orch_log(x->es->o), ext_level(level)))
		return;
	json_t *fields = fields_json ? json_loads(fields_json, 0, NULL) : NULL;
	if (fields != NULL && !json_is_object(fields)) {
		json_decref(fields);
		fields = NULL;
	}
	ext_emit(x, level, fields, msg);
}

/* ---- messages ------------------------------------------------------------- */

/* The bus's answer to a send of an extension. */
static void
ext_sent_cb(void *arg, int64_t id, int nrecipients, const char *code, const char *detail)
{
	struct ext_send *s = arg;
	(void)nrecipients;
	char *err =
	    id > 0 ? NULL : xasprintf("%s: %s", code ? code : "error", detail ? detail : "refused");
	if (s->in_call) {
		/* Answered before bus_send returned (a refusal): the host call
		 * fails instead, and done is not called. */
		s->completed = true;
		s->sync_error = err;
		return;
	}
	s->es->sends_out--;
	struct dreamos_ext *x = s->ext;
	if (x != NULL) {
		for (struct ext_send **pp = &x->sends; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == s) {
				*pp = s->next;
				x->nsends--;
				break;
			}
		}
		if (s->done != NULL)
			s->done(x, s->arg, id, err);
	}
	free(err);
	free(s);
}

static int
ext_send_to(struct dreamos_ext *x, const char *what, const char *to, const char *body,
            const char *priority, dreamos_sent_fn done, void *arg)
{
	if (body == NULL) {
		ext_set_error(x, "%s: no body", what);
		return -1;
	}
	enum proto_priority prio = PRIO_NORMAL;
	if (priority != NULL && !proto_priority_parse(priority, &prio)) {
		ext_set_error(x, "%s: unknown priority '%s' (low, normal, high, urgent)", what,
		              priority);
		return -1;
	}
	char err[200];
	char *norm = json_normalize(body, err, sizeof err);
	if (norm == NULL) {
		ext_set_error(x, "%s: the body is not JSON: %s", what, err);
		return -1;
	}
	struct exts *es = x->es;
	struct ext_send *s = xcalloc(1, sizeof *s);
	s->es = es;
	s->ext = x;
	s->done = done;
	s->arg = arg;
	s->in_call = true;
	struct bus_send_req req = {
	    .from = x->name, .to = to, .body = norm, .priority = prio, .mode = MODE_NORMAL};
	bus_send(orch_bus(es->o), &req, ext_sent_cb, s);
	free(norm);
	s->in_call = false;
	if (s->completed) {
		int rc = s->sync_error != NULL ? -1 : 0;
		if (rc != 0)
			ext_set_error(x, "%s: %s", what, s->sync_error);
		free(s->sync_error);
		free(s);
		return rc;
	}
	s->next = x->sends;
	x->sends = s;
	x->nsends++;
	es->sends_out++;
	return 0;
}

static int
h_send(struct dreamos_ext *x, const char *to, const char *body, const char *priority,
       dreamos_sent_fn done, void *arg)
{
	EXT_CHECK(x, -1);
	if (to == NULL || *to == '\0' || *to == '#') {
		ext_set_error(x, "send: no recipient (an agent's name, '*' or 'captain'; "
		                 "publish for a topic)");
		return -1;
	}
	return ext_send_to(x, "send", to, body, priority, done, arg);
}

static int
h_publish(struct dreamos_ext *x, const char *topic, const char *body, const char *priority,
          dreamos_sent_fn done, void *arg)
{
	EXT_CHECK(x, -1);
	if (topic == NULL) {
		ext_set_error(x, "publish: no topic");
		return -1;
	}
	char *to = xasprintf("#%s", topic[0] == '#' ? topic + 1 : topic);
	int rc = ext_send_to(x, "publish", to, body, priority, done, arg);
	free(to);
	return rc;
}

/* ---- tasks ---------------------------------------------------------------- */

static int64_t
h_task_submit(struct dreamos_ext *x, const struct dreamos_task_spec *in)
{
	EXT_CHECK(x, 0);
	struct dreamos_task_spec spec;
	if (!ext_copy_in(x, &spec, sizeof spec, in, "task_submit"))
		return 0;
	if (spec.title == NULL || *spec.title == '\0') {
		ext_set_error(x, "task_submit: no title");
		return 0;
	}
	enum proto_priority prio = PRIO_NORMAL;
	if (spec.priority != NULL && !proto_priority_parse(spec.priority, &prio)) {
		ext_set_error(x, "task_submit: unknown priority '%s'", spec.priority);
		return 0;
	}
	char *payload = NULL;
	if (spec.payload != NULL) {
		char err[200];
		if ((payload = json_normalize(spec.payload, err, sizeof err)) == NULL) {
			ext_set_error(x, "task_submit: the payload is not JSON: %s", err);
			return 0;
		}
	}
	char *title = utf8_clean(spec.title);
	struct task_spec ts = {
	    .title = title,
	    .payload = payload,
	    .payload_compact = true, /* json_normalize made it so */
	    .priority = prio,
	    .capability = spec.capability,
	    .after = spec.after,
	    .nafter = spec.after ? spec.nafter : 0,
	    .timeout_s = spec.timeout_s,
	    .max_retries = spec.max_retries,
	    .submitter = x->name,
	};
	char *cause = NULL;
	struct task *t = tasks_submit(orch_tasks(x->es->o), &ts, &cause);
	free(title);
	free(payload);
	if (t == NULL) {
		ext_set_error(x, "task_submit: %s", cause ? cause : "refused");
		free(cause);
		return 0;
	}
	return t->id;
}

static int
h_task_cancel(struct dreamos_ext *x, int64_t id)
{
	EXT_CHECK(x, -1);
	char *cause = NULL;
	if (tasks_cancel(orch_tasks(x->es->o), id, &cause) != 0) {
		ext_set_error(x, "task_cancel: %s", cause ? cause : "refused");
		free(cause);
		return -1;
	}
	return 0;
}

static char *
h_task_get(struct dreamos_ext *x, int64_t id)
{
	EXT_CHECK(x, NULL);
	json_t *j = tasks_show_json(orch_tasks(x->es->o), id);
	if (j == NULL) {
		ext_set_error(x, "task_get: no task %lld", (long long)id);
		return NULL;
	}
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

/* ---- commands ------------------------------------------------------------- */

/* True if name is "word" or "word sub" of [a-z0-9_-], starting with a
 * letter or digit, at most 63 bytes. */
static bool
cmd_name_valid(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > 63)
		return false;
	int words = 0;
	const char *p = name;
	while (*p != '\0') {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return false;
		words++;
		while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		       *p == '-')
			p++;
		if (*p == ' ' && p[1] != '\0')
			p++;
		else if (*p != '\0')
			return false;
	}
	return words <= 2;
}

static void
ext_cmd_free(struct ext_cmd *c)
{
	for (size_t i = 0; i < c->nopts; i++) {
		free((char *)c->opts[i].name);
		free((char *)c->opts[i].arg);
		free((char *)c->opts[i].complete);
	}
	free(c->opts);
	free(c->name);
	free(c->usage);
	free(c->help);
	free(c->complete);
	free(c);
}

static void
call_free(struct dreamos_call *call)
{
	call->magic = 0;
	free(call);
}

/* Finishes a waiting command of x with an error (unload, unregister). */
static void
ext_call_abort(struct dreamos_ext *x, struct dreamos_call *call, const char *why)
{
	for (struct dreamos_call **pp = &x->calls; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == call) {
			*pp = call->next;
			x->ncalls--;
			break;
		}
	}
	call->finished = true;
	cmd_error(call->ctx, "%s: %s", call->cmd->name, why);
	cmd_ctx_finish(call->ctx, CMD_ERROR);
	call_free(call);
}

/* The core's handler for every extension command. */
static enum cmd_retval
ext_cmd_exec(struct cmd_ctx *ctx)
{
	struct ext_cmd *c = (struct ext_cmd *)(uintptr_t)ctx->entry;
	struct dreamos_ext *x = c->ext;
	struct dreamos_call *call = xcalloc(1, sizeof *call);
	call->magic = CALL_MAGIC;
	call->ctx = ctx;
	call->ext = x;
	call->cmd = c;
	int rv = c->fn(x, call, c->arg);
	if (call->finished) {
		/* call_finish ran inside the handler: ctx is gone. */
		call_free(call);
		return CMD_WAIT;
	}
	if (rv == DREAMOS_CMD_WAIT) {
		call->waiting = true;
		call->next = x->calls;
		x->calls = call;
		x->ncalls++;
		return CMD_WAIT;
	}
	call_free(call);
	enum cmd_retval r = rv == DREAMOS_CMD_OK      ? CMD_OK
	                    : rv == DREAMOS_CMD_USAGE ? CMD_USAGE
	                                              : CMD_ERROR;
	if (r != CMD_OK && ctx->error == NULL)
		ctx->error = xasprintf("%s failed", c->name);
	return r;
}

static enum cmd_role
ext_role(int role)
{
	switch (role) {
	case DREAMOS_ROLE_OBSERVER:
		return ROLE_OBSERVER;
	case DREAMOS_ROLE_CAPTAIN:
		return ROLE_CAPTAIN;
	default:
		return ROLE_OPERATOR;
	}
}

/* Copies the first word of name into out (64 bytes). */
static void
cmd_first_word(const char *name, char *out)
{
	size_t n = strcspn(name, " ");
	if (n > 63)
		n = 63;
	memcpy(out, name, n);
	out[n] = '\0';
}

static int
h_command_register(struct dreamos_ext *x, const struct dreamos_command *in)
{
	EXT_CHECK(x, -1);
	if (!ext_can_register(x, "command_register"))
		return -1;
	struct dreamos_command dc;
	if (!ext_copy_in(x, &dc, sizeof dc, in, "command_register"))
		return -1;
	if (dc.name == NULL || !cmd_name_valid(dc.name)) {
		ext_set_error(x,
		              "command_register: invalid name '%s' (one or two words of a-z, "
		              "0-9, '_', '-')",
		              dc.name ? dc.name : "");
		return -1;
	}
	if (dc.fn == NULL) {
		ext_set_error(x, "command_register: %s: no handler", dc.name);
		return -1;
	}
	if (dc.min_args < 0 || dc.max_args < -1 ||
	    (dc.max_args >= 0 && dc.max_args < dc.min_args)) {
		ext_set_error(x, "command_register: %s: bad min_args/max_args", dc.name);
		return -1;
	}
	struct cmd_table *t = orch_cmds(x->es->o);
	char fw[64];
	cmd_first_word(dc.name, fw);
	for (size_t i = 0; i < cmd_table_count(t); i++) {
		const char *other = cmd_table_get(t, i)->name;
		const char *owner = cmd_table_owner(t, i);
		char ow[64];
		cmd_first_word(other, ow);
		if (strcmp(other, dc.name) == 0) {
			ext_set_error(x, "command_register: '%s' already exists (registered by %s)",
			              dc.name, owner);
			return -1;
		}
		if (strcmp(ow, fw) == 0 && strcmp(owner, x->name) != 0) {
			ext_set_error(x, "command_register: the command group '%s' belongs to %s",
			              fw, owner);
			return -1;
		}
	}
	size_t nopts = 0;
	for (const struct dreamos_cmd_opt *o = dc.opts; o != NULL && o->name != NULL; o++) {
		if (o->kind < DREAMOS_OPT_FLAG || o->kind > DREAMOS_OPT_MULTI || *o->name == '\0' ||
		    strcmp(o->name, "json") == 0 || strcmp(o->name, "help") == 0) {
			ext_set_error(x, "command_register: %s: bad option '%s'", dc.name, o->name);
			return -1;
		}
		nopts++;
	}
	struct ext_cmd *c = xcalloc(1, sizeof *c);
	c->ext = x;
	c->name = xstrdup(dc.name);
	c->usage = dc.usage ? utf8_clean(dc.usage) : NULL;
	c->help = dc.help ? utf8_clean(dc.help) : NULL;
	c->fn = dc.fn;
	c->complete_fn = dc.complete_fn;
	c->arg = dc.arg;
	if (dc.complete_fn != NULL)
		c->complete = xasprintf("x-ext:%s:%s", x->name, dc.name);
	else if (dc.complete != NULL)
		c->complete = xstrdup(dc.complete);
	c->opts = xcalloc(nopts + 1, sizeof *c->opts);
	c->nopts = nopts;
	for (size_t i = 0; i < nopts; i++) {
		const struct dreamos_cmd_opt *o = &dc.opts[i];
		c->opts[i].name = xstrdup(o->name);
		c->opts[i].kind = (enum cmd_opt_kind)o->kind;
		c->opts[i].arg = o->arg ? xstrdup(o->arg) : NULL;
		c->opts[i].complete = o->complete ? xstrdup(o->complete) : NULL;
	}
	c->entry = (struct cmd_entry){
	    .name = c->name,
	    .usage = c->usage,
	    .help = c->help,
	    .min_args = dc.min_args,
	    .max_args = dc.max_args,
	    .opts = c->opts,
	    .complete_args = c->complete,
	    .role = ext_role(dc.role),
	    .exec = ext_cmd_exec,
	};
	if (cmd_register(t, &c->entry, 1, x->name) != 0) {
		ext_set_error(x, "command_register: '%s' is taken", dc.name);
		ext_cmd_free(c);
		return -1;
	}
	struct ext_cmd **pp = &x->cmds;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = c;
	x->ncmds++;
	return 0;
}

/* Finishes the waiting calls of command c (or of every command: NULL). */
static void
ext_calls_abort(struct dreamos_ext *x, struct ext_cmd *c, const char *why)
{
	for (struct dreamos_call *call = x->calls, *next; call != NULL; call = next) {
		next = call->next;
		if (c == NULL || call->cmd == c)
			ext_call_abort(x, call, why);
	}
}

static int
h_command_unregister(struct dreamos_ext *x, const char *name)
{
	EXT_CHECK(x, -1);
	struct ext_cmd **pp = &x->cmds;
	while (*pp != NULL && (name == NULL || strcmp((*pp)->name, name) != 0))
		pp = &(*pp)->next;
	if (*pp == NULL) {
		ext_set_error(x, "command_unregister: no command '%s' of this extension",
		              name ? name : "");
		return -1;
	}
	struct ext_cmd *c = *pp;
	ext_calls_abort(x, c, "the command was unregistered");
	*pp = c->next;
	x->ncmds--;
	/* The table removes by owner: take all of x's out, put the rest back. */
	struct cmd_table *t = orch_cmds(x->es->o);
	cmd_unregister_owner(t, x->name);
	for (struct ext_cmd *k = x->cmds; k != NULL; k = k->next)
		cmd_register(t, &k->entry, 1, x->name);
	ext_cmd_free(c);
	return 0;
}

/* The call behind a handle, or NULL (with a message) if it is not live. */
static struct dreamos_call *
call_ok(struct dreamos_call *call, const char *fn)
{
	if (call == NULL || call->magic != CALL_MAGIC || call->finished) {
		fprintf(stderr, "dreamos: %s: not a running command (finished already?)\n", fn);
		return NULL;
	}
	if (!pthread_equal(pthread_self(), call->ext->es->loop_thread)) {
		fprintf(stderr, "dreamos: %s called from another thread: refused\n", fn);
		return NULL;
	}
	return call;
}

#define CALL_CHECK(c, fail)                                                                        \
	do {                                                                                       \
		if (call_ok((c), __func__ + 2) == NULL)                                            \
			return fail;                                                               \
	} while (0)

static int
h_call_argc(struct dreamos_call *call)
{
	CALL_CHECK(call, 0);
	return call->ctx->argc;
}

static const char *
h_call_arg(struct dreamos_call *call, int i)
{
	CALL_CHECK(call, NULL);
	return cmd_arg(call->ctx, i);
}

static const char *
h_call_opt(struct dreamos_call *call, const char *name)
{
	CALL_CHECK(call, NULL);
	return name ? cmd_opt(call->ctx, name) : NULL;
}

static int
h_call_flag(struct dreamos_call *call, const char *name)
{
	CALL_CHECK(call, 0);
	return name ? cmd_flag(call->ctx, name) : 0;
}

static size_t
h_call_opt_count(struct dreamos_call *call, const char *name)
{
	CALL_CHECK(call, 0);
	return name ? cmd_opt_count(call->ctx, name) : 0;
}

static const char *
h_call_opt_at(struct dreamos_call *call, const char *name, size_t i)
{
	CALL_CHECK(call, NULL);
	return name ? cmd_opt_at(call->ctx, name, i) : NULL;
}

static const char *
h_call_client(struct dreamos_call *call)
{
	CALL_CHECK(call, "");
	return call->ctx->client_name;
}

static void
h_call_reply(struct dreamos_call *call, const char *text)
{
	CALL_CHECK(call, );
	char *clean = utf8_clean(text ? text : "");
	cmd_message(call->ctx, "%s", clean);
	free(clean);
}

static int
h_call_reply_json(struct dreamos_call *call, const char *json)
{
	CALL_CHECK(call, -1);
	json_t *j = json ? json_loads(json, JSON_DECODE_ANY, NULL) : NULL;
	if (j == NULL)
		return -1;
	cmd_result(call->ctx, j);
	return 0;
}

static int
h_call_error(struct dreamos_call *call, const char *fmt, ...)
{
	CALL_CHECK(call, DREAMOS_CMD_ERROR);
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt ? fmt : "failed", ap);
	va_end(ap);
	char *clean = utf8_clean(s);
	cmd_error(call->ctx, "%s", clean);
	free(clean);
	free(s);
	return DREAMOS_CMD_ERROR;
}

static void
h_call_stream(struct dreamos_call *call, const char *text)
{
	CALL_CHECK(call, );
	if (text != NULL)
		cmd_stream(call->ctx, text);
}

static void
h_call_finish(struct dreamos_call *call, int status)
{
	CALL_CHECK(call, );
	struct dreamos_ext *x = call->ext;
	enum cmd_retval r = status == DREAMOS_CMD_OK      ? CMD_OK
	                    : status == DREAMOS_CMD_USAGE ? CMD_USAGE
	                                                  : CMD_ERROR;
	call->finished = true;
	if (r != CMD_OK && call->ctx->error == NULL)
		call->ctx->error = xasprintf("%s failed", call->cmd->name);
	if (call->waiting) {
		for (struct dreamos_call **pp = &x->calls; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == call) {
				*pp = call->next;
				x->ncalls--;
				break;
			}
		}
		cmd_ctx_finish(call->ctx, r);
		call_free(call);
		return;
	}
	/* Still inside the handler: ext_cmd_exec frees the call. */
	cmd_ctx_finish(call->ctx, r);
}

void
ext_complete_dynamic(struct exts *es, const char *hint, const char *partial,
                     cmd_complete_add_fn add, void *arg)
{
	if (strncmp(hint, "x-ext:", 6) != 0)
		return;
	const char *name = hint + 6;
	const char *colon = strchr(name, ':');
	if (colon == NULL)
		return;
	char *ename = xstrndup(name, (size_t)(colon - name));
	struct dreamos_ext *x = ext_find(es, ename);
	free(ename);
	if (x == NULL || x->state != EXT_ACTIVE)
		return;
	for (struct ext_cmd *c = x->cmds; c != NULL; c = c->next) {
		if (strcmp(c->name, colon + 1) == 0 && c->complete_fn != NULL) {
			c->complete_fn(x, c->arg, partial, add, arg);
			return;
		}
	}
}

/* ---- in-process agents ------------------------------------------------------ */

/* True if line (len bytes) is the protocol's `command stop`. */
static bool
line_is_stop(const char *line, size_t len)
{
	if (memmem(line, len, "\"command\"", 9) == NULL)
		return false;
	json_t *j = json_loadb(line, len, 0, NULL);
	bool stop = j != NULL && json_is_string(json_object_get(j, "type")) &&
	            strcmp(json_string_value(json_object_get(j, "type")), "command") == 0 &&
	            json_is_string(json_object_get(j, "name")) &&
	            strcmp(json_string_value(json_object_get(j, "name")), "stop") == 0;
	json_decref(j);
	return stop;
}

/* The link: lines for the agent go through the job queue to on_line; a
 * `command stop` (or a close) stops the agent from the queue. */
static int
ext_link_send(struct agent *a, const char *line, size_t len, bool owed)
{
	(void)owed; /* (an extension's agent is never held for its queue) */
	struct dreamos_agent *ag = a->link;
	if (ag == NULL || ag->closing)
		return -1;
	if (len > 0 && line[len - 1] == '\n')
		len--;
	struct ext_job *j;
	if (line_is_stop(line, len)) {
		j = job_new(JOB_CLOSE);
		j->text = xstrdup("stopped");
	} else {
		j = job_new(JOB_LINE);
		j->text = xstrndup(line, len);
		j->len = len;
		ag->queued += len;
	}
	j->ag = ag;
	jobs_push(ag->ext->es, j);
	return 0;
}

static size_t
ext_link_queued(struct agent *a)
{
	struct dreamos_agent *ag = a->link;
	return ag ? ag->queued : 0;
}

static void
ext_link_close(struct agent *a)
{
	struct dreamos_agent *ag = a->link;
	if (ag == NULL || ag->closing)
		return;
	struct ext_job *j = job_new(JOB_CLOSE);
	j->ag = ag;
	j->text = xstrdup("closed by the orchestrator");
	jobs_push(ag->ext->es, j);
}

static bool
ext_link_specialist(struct agent *a)
{
	struct dreamos_agent *ag = a->link;
	return ag != NULL && ag->type->specialist;
}

static const struct agent_link_ops ext_link_ops = {
    .kind = "extension",
    .specialist = ext_link_specialist,
    .send = ext_link_send,
    .queued = ext_link_queued,
    /* No reading to stop: the bus does not throttle extension agents. */
    .set_reading = NULL,
    .close = ext_link_close,
};

/* The first job of an agent: its start callback. */
static void
ext_agent_start(struct dreamos_agent *ag)
{
	if (ag->closing)
		return;
	struct dreamos_ext *x = ag->ext;
	void *state = NULL;
	free(x->error);
	x->error = NULL;
	int rc = ag->type->start ? ag->type->start(x, ag, &state) : 0;
	if (rc == 0) {
		ag->state = state;
		ag->started = true;
		return;
	}
	log_error(orch_log(x->es->o), ag->name, "extension %s could not start the agent: %s",
	          x->name, x->error ? x->error : "start failed");
	ext_agent_close(ag, "start failed", true);
}

/* Stops an agent: its stop callback, then the registry hears the link is
 * gone (failed: as a failed run, for the restart policy). */
static void
ext_agent_close(struct dreamos_agent *ag, const char *why, bool failed)
{
	struct dreamos_ext *x = ag->ext;
	ag->closing = true;
	jobs_drop_agent(x->es, ag);
	/* Out of the list first: the stop callback may unregister its type. */
	for (struct dreamos_agent **pp = &x->agents; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == ag) {
			*pp = ag->next;
			x->nagents--;
			break;
		}
	}
	if (ag->started && ag->type->stop != NULL)
		ag->type->stop(x, ag, ag->state, why);
	ag->started = false;
	struct agent *a = ag->a;
	char *w = xstrdup(why);
	if (a != NULL && a->link == ag) {
		if (failed) {
			a->link = NULL;
			struct agent_exit ex = {.exited = true, .status = 1, .why = w};
			agent_link_closed(a, &ex);
		} else {
			agent_detach(a, w);
		}
		/* A restart may have attached a new link already. */
		if (a->link == ag)
			a->link = NULL;
	}
	free(w);
	free(ag->name);
	free(ag);
}

void
ext_agents_stop(struct dreamos_ext *x, const char *why)
{
	while (x->agents != NULL)
		ext_agent_close(x->agents, why, false);
}

/* The type called name among the loaded extensions (active ones only if
 * active), or NULL. */
static struct ext_type *
ext_type_find(const struct exts *es, const char *name, bool active)
{
	if (name == NULL)
		return NULL;
	for (size_t i = 0; i < es->n; i++) {
		struct dreamos_ext *x = es->v[i];
		if (active && x->state != EXT_ACTIVE)
			continue;
		for (struct ext_type *t = x->types; t != NULL; t = t->next) {
			if (strcmp(t->name, name) == 0)
				return t;
		}
	}
	return NULL;
}

static bool
caps_has(char **v, size_t n, const char *c)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i], c) == 0)
			return true;
	}
	return false;
}

/* Connects agent name (new, or existing and waiting) as an agent of type
 * t.  Capabilities: the type's, the agent's configured ones and caps;
 * max_tasks < 0: the existing agent's, else the type's.  Returns the link,
 * or NULL with *cause. */
static struct dreamos_agent *
ext_agent_attach(struct ext_type *t, const char *name, char *const *caps, size_t ncaps,
                 int max_tasks, char **cause)
{
	struct dreamos_ext *x = t->ext;
	struct exts *es = x->es;
	struct agents *as = orch_agents(es->o);
	struct agent *old = agents_find(as, name);
	if (old != NULL && (old->cfg.type == NULL || strcmp(old->cfg.type, t->name) != 0)) {
		*cause = xasprintf("agent '%s' exists and is of type '%s', not '%s'", name,
		                   old->cfg.type ? old->cfg.type : "process", t->name);
		return NULL;
	}
	if (max_tasks < 0)
		max_tasks = old != NULL ? old->max_tasks : t->max_tasks;
	size_t cap = t->ncaps + ncaps + (old ? old->cfg.ncaps : 0) + 1, n = 0;
	char **v = xcalloc(cap, sizeof *v);
	for (size_t i = 0; i < t->ncaps; i++)
		if (!caps_has(v, n, t->caps[i]))
			v[n++] = t->caps[i];
	for (size_t i = 0; old != NULL && i < old->cfg.ncaps; i++)
		if (!caps_has(v, n, old->cfg.caps[i]))
			v[n++] = old->cfg.caps[i];
	for (size_t i = 0; i < ncaps; i++)
		if (!caps_has(v, n, caps[i]))
			v[n++] = caps[i];

	struct dreamos_agent *ag = xcalloc(1, sizeof *ag);
	ag->ext = x;
	ag->type = t;
	ag->name = xstrdup(name);
	/* The start job goes first: lines may be queued during the attach. */
	struct ext_job *j = job_new(JOB_START);
	j->ag = ag;
	jobs_push(es, j);
	struct agent *a = agents_attach(as, name, t->name, (const char *const *)v, n, max_tasks,
	                                &ext_link_ops, ag, cause);
	free(v);
	if (a == NULL) {
		jobs_drop_agent(es, ag);
		free(ag->name);
		free(ag);
		return NULL;
	}
	ag->a = a;
	ag->next = x->agents;
	x->agents = ag;
	x->nagents++;
	/* In-process: it cannot hang apart from dreamos, so no heartbeat
	 * deadline (it would need the extension to send heartbeats). */
	a->cfg.heartbeat_timeout = 0;
	uv_timer_stop(a->hb_timer);
	return ag;
}

/* True if agent a waits for a link (not connected, not stopping). */
static bool
agent_waiting(const struct agent *a)
{
	return a->link_ops == NULL && a->proc == NULL &&
	       (a->state == AGENT_STOPPED || a->state == AGENT_BACKOFF || a->state == AGENT_FAILED);
}

/* Connects the agents of type t that wait for it (autostart, not stopped
 * by the captain). */
static void
ext_type_scan(struct ext_type *t)
{
	struct exts *es = t->ext->es;
	struct agents *as = orch_agents(es->o);
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if (a->cfg.type == NULL || strcmp(a->cfg.type, t->name) != 0 || !agent_waiting(a) ||
		    !a->wanted || !a->cfg.autostart)
			continue;
		char *cause = NULL;
		if (ext_agent_attach(t, a->name, NULL, 0, -1, &cause) == NULL) {
			log_error(orch_log(es->o), a->name, "extension %s: %s", t->ext->name,
			          cause);
			free(cause);
		}
	}
}

/* The deferred attach of an agent that was still stopping. */
static void
ext_attach_waiting(struct exts *es, const char *name)
{
	struct agent *a = agents_find(orch_agents(es->o), name);
	if (a == NULL || !agent_waiting(a) || !a->wanted)
		return;
	struct ext_type *t = ext_type_find(es, a->cfg.type, true);
	if (t == NULL)
		return;
	char *cause = NULL;
	if (ext_agent_attach(t, name, NULL, 0, -1, &cause) == NULL) {
		log_error(orch_log(es->o), name, "extension %s: %s", t->ext->name, cause);
		free(cause);
	}
}

bool
ext_agent_wants_link(struct exts *es, struct agent *a)
{
	if (es == NULL || es->closing)
		return false;
	struct ext_type *t = ext_type_find(es, a->cfg.type, true);
	if (t == NULL)
		return false;
	if (!agent_waiting(a)) {
		/* Still stopping (a restart): attach on the next turn. */
		struct ext_job *j = job_new(JOB_ATTACH);
		j->text = xstrdup(a->name);
		jobs_push(es, j);
		return false;
	}
	char *cause = NULL;
	if (ext_agent_attach(t, a->name, NULL, 0, -1, &cause) == NULL) {
		log_error(orch_log(es->o), a->name, "extension %s: %s", t->ext->name, cause);
		free(cause);
		return false;
	}
	return true;
}

bool
ext_agent_type_known(const struct exts *es, const char *type, int *max_tasks)
{
	struct ext_type *t = es ? ext_type_find(es, type, true) : NULL;
	if (t != NULL && max_tasks != NULL)
		*max_tasks = t->max_tasks;
	return t != NULL;
}

bool
ext_agent_type_option(const struct exts *es, const char *type, const char *option)
{
	struct ext_type *t = es ? ext_type_find(es, type, true) : NULL;
	for (char **o = t ? t->options : NULL; o != NULL && *o != NULL; o++)
		if (strcmp(*o, option) == 0)
			return true;
	return false;
}

char *
ext_agent_types_list(const struct exts *es)

{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "");
	for (size_t i = 0; es != NULL && i < es->n; i++) {
		if (es->v[i]->state != EXT_ACTIVE)
			continue;
		for (struct ext_type *t = es->v[i]->types; t != NULL; t = t->next)
			buf_addf(&b, "%s%s", b.len ? ", " : "", t->name);
	}
	return b.data;
}

static void
ext_type_free(struct ext_type *t)
{
	for (size_t i = 0; i < t->ncaps; i++)
		free(t->caps[i]);
	free(t->caps);
	for (char **o = t->options; o != NULL && *o != NULL; o++)
		free(*o);
	free(t->options);
	free(t->name);
	free(t->description);
	free(t);
}

static int
h_agent_type_register(struct dreamos_ext *x, const struct dreamos_agent_type *in)
{
	EXT_CHECK(x, -1);
	if (!ext_can_register(x, "agent_type_register"))
		return -1;
	struct dreamos_agent_type dt;
	if (!ext_copy_in(x, &dt, sizeof dt, in, "agent_type_register"))
		return -1;
	if (dt.name == NULL || !proto_valid_agent_name(dt.name) ||
	    strcmp(dt.name, "process") == 0 || strcmp(dt.name, "remote") == 0) {
		ext_set_error(x, "agent_type_register: invalid type name '%s'",
		              dt.name ? dt.name : "");
		return -1;
	}
	if (dt.on_line == NULL) {
		ext_set_error(x, "agent_type_register: %s: no on_line callback", dt.name);
		return -1;
	}
	if (dt.max_tasks < 0 || dt.max_tasks > 1000) {
		ext_set_error(x, "agent_type_register: %s: max_tasks must be 0 to 1000", dt.name);
		return -1;
	}
	struct ext_type *other = ext_type_find(x->es, dt.name, false);
	if (other != NULL) {
		ext_set_error(x, "agent_type_register: type '%s' is already provided by %s",
		              dt.name, other->ext->name);
		return -1;
	}
	struct ext_type *t = xcalloc(1, sizeof *t);
	t->ext = x;
	t->name = xstrdup(dt.name);
	t->description = dt.description ? utf8_clean(dt.description) : NULL;
	size_t n = 0;
	for (const char *const *c = dt.caps; c != NULL && *c != NULL; c++)
		n++;
	t->caps = xcalloc(n + 1, sizeof *t->caps);
	for (size_t i = 0; i < n; i++)
		if (*dt.caps[i] != '\0' && !caps_has(t->caps, t->ncaps, dt.caps[i]))
			t->caps[t->ncaps++] = xstrdup(dt.caps[i]);
	n = 0;
	for (const char *const *o = dt.options; o != NULL && *o != NULL; o++)
		n++;
	t->options = xcalloc(n + 1, sizeof *t->options);
	for (size_t i = 0; i < n; i++)
		t->options[i] = xstrdup(dt.options[i]);
	t->max_tasks = dt.max_tasks;
	t->specialist = dt.specialist != 0;
	t->start = dt.start;
	t->on_line = dt.on_line;
	t->stop = dt.stop;
	t->next = x->types;
	x->types = t;
	x->ntypes++;
	if (x->state == EXT_ACTIVE)
		ext_type_scan(t);
	return 0;
}

static int
h_agent_type_unregister(struct dreamos_ext *x, const char *name)
{
	EXT_CHECK(x, -1);
	struct ext_type **pp = &x->types;
	while (*pp != NULL && (name == NULL || strcmp((*pp)->name, name) != 0))
		pp = &(*pp)->next;
	if (*pp == NULL) {
		ext_set_error(x, "agent_type_unregister: no type '%s' of this extension",
		              name ? name : "");
		return -1;
	}
	struct ext_type *t = *pp;
	for (struct dreamos_agent *ag = x->agents, *next; ag != NULL; ag = next) {
		next = ag->next;
		if (ag->type == t)
			ext_agent_close(ag, "agent type unregistered", false);
	}
	/* The list may have changed under the stop callbacks. */
	for (pp = &x->types; *pp != NULL && *pp != t; pp = &(*pp)->next)
		;
	if (*pp == t)
		*pp = t->next;
	x->ntypes--;
	ext_type_free(t);
	return 0;
}

static void
pending_free(struct ext_pending_agent *p)
{
	for (size_t i = 0; i < p->ncaps; i++)
		free(p->caps[i]);
	free(p->caps);
	free(p->type);
	free(p->name);
	free(p);
}

/* agent_create once the extension is active. */
static int
ext_agent_create_now(struct dreamos_ext *x, struct ext_type *t, const char *name, char **caps,
                     size_t ncaps, int max_tasks, char **cause)
{
	struct agent *a = agents_find(orch_agents(x->es->o), name);
	if (a != NULL && a->link != NULL && a->link_ops == &ext_link_ops) {
		struct dreamos_agent *ag = a->link;
		if (ag->ext == x && ag->type == t)
			return 0; /* running already */
	}
	if (a != NULL && !a->wanted && agent_waiting(a)) {
		log_info(orch_log(x->es->o), name,
		         "stopped by the captain: extension %s does not start it ('agent start "
		         "%s' does)",
		         x->name, name);
		return 0;
	}
	return ext_agent_attach(t, name, caps, ncaps, max_tasks, cause) ? 0 : -1;
}

static int
h_agent_create(struct dreamos_ext *x, const char *type, const char *name, const char *const *caps,
               int max_tasks)
{
	EXT_CHECK(x, -1);
	if (!ext_can_register(x, "agent_create"))
		return -1;
	struct ext_type *t = x->types;
	while (t != NULL && (type == NULL || strcmp(t->name, type) != 0))
		t = t->next;
	if (t == NULL) {
		ext_set_error(x, "agent_create: '%s' is not an agent type of this extension",
		              type ? type : "");
		return -1;
	}
	if (name == NULL || !proto_valid_agent_name(name)) {
		ext_set_error(x, "agent_create: invalid agent name '%s'", name ? name : "");
		return -1;
	}
	if (max_tasks > 1000) {
		ext_set_error(x, "agent_create: max_tasks must be at most 1000");
		return -1;
	}
	size_t n = 0;
	for (const char *const *c = caps; c != NULL && *c != NULL; c++)
		n++;
	char **cv = xcalloc(n + 1, sizeof *cv);
	for (size_t i = 0; i < n; i++)
		cv[i] = xstrdup(caps[i]);
	if (x->state != EXT_ACTIVE) {
		/* During init: started once init (and restore_state) succeeded. */
		struct ext_pending_agent *p = xcalloc(1, sizeof *p);
		p->type = xstrdup(t->name);
		p->name = xstrdup(name);
		p->caps = cv;
		p->ncaps = n;
		p->max_tasks = max_tasks;
		struct ext_pending_agent **pp = &x->pending;
		while (*pp != NULL)
			pp = &(*pp)->next;
		*pp = p;
		return 0;
	}
	char *cause = NULL;
	int rc = ext_agent_create_now(x, t, name, cv, n, max_tasks, &cause);
	for (size_t i = 0; i < n; i++)
		free(cv[i]);
	free(cv);
	if (rc != 0) {
		ext_set_error(x, "agent_create: %s", cause);
		free(cause);
	}
	return rc;
}

static int
h_agent_line(struct dreamos_ext *x, struct dreamos_agent *ag, const char *line)
{
	EXT_CHECK(x, -1);
	if (ag == NULL || ag->ext != x) {
		ext_set_error(x, "agent_line: not an agent of this extension");
		return -1;
	}
	if (ag->closing || ag->a == NULL || ag->a->link != ag) {
		ext_set_error(x, "agent_line: agent '%s' is not connected", ag->name);
		return -1;
	}
	if (line == NULL) {
		ext_set_error(x, "agent_line: no line");
		return -1;
	}
	size_t len = strlen(line);
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (memchr(line, '\n', len) != NULL) {
		ext_set_error(x, "agent_line: one line at a time (a newline inside)");
		return -1;
	}
	agent_link_message(ag->a, line, len, false);
	return 0;
}

static const char *
h_agent_name(struct dreamos_agent *ag)
{
	return ag != NULL ? ag->name : "";
}

/* ---- outbound HTTP ------------------------------------------------------------ */

static void
ext_http_unlink(struct dreamos_ext *x, struct ext_http *h)
{
	for (struct ext_http **pp = &x->https; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			x->nhttps--;
			return;
		}
	}
}

static void
ext_http_done(void *arg, const struct outbound_resp *resp)
{
	struct ext_http *h = arg;
	struct dreamos_ext *x = h->ext;
	ext_http_unlink(x, h);
	if (h->done != NULL) {
		struct dreamos_http_response r = {
		    .status = resp->status,
		    .body = resp->body,
		    .body_len = resp->body_len,
		    .error = resp->error,
		    .seconds = resp->seconds,
		    .attempts = resp->attempts,
		    .headers = resp->headers,
		    .nheaders = resp->nheaders,
		};
		h->done(x, h->arg, &r);
	}
	free(h);
}

static void
ext_http_chunk(void *arg, const char *data, size_t len)
{
	struct ext_http *h = arg;
	if (h->chunk != NULL)
		h->chunk(h->ext, h->arg, data, len);
}

static uint64_t
h_http_request(struct dreamos_ext *x, const struct dreamos_http_request *in,
               dreamos_http_done_fn done, dreamos_http_chunk_fn chunk, void *arg)
{
	EXT_CHECK(x, 0);
	if (!ext_can_register(x, "http_request"))
		return 0;
	struct dreamos_http_request rq;
	if (!ext_copy_in(x, &rq, sizeof rq, in, "http_request"))
		return 0;
	if (rq.url == NULL) {
		ext_set_error(x, "http_request: no URL");
		return 0;
	}
	struct outbound *ob = orch_outbound(x->es->o);
	if (ob == NULL) {
		ext_set_error(x, "http_request: outbound HTTP is not available (shutting down)");
		return 0;
	}
	struct ext_http *h = xcalloc(1, sizeof *h);
	h->ext = x;
	h->done = done;
	h->chunk = chunk;
	h->arg = arg;
	struct outbound_req r = {
	    .method = rq.method,
	    .url = rq.url,
	    .headers = rq.headers,
	    .body = rq.body,
	    .body_len = rq.body != NULL && rq.body_len == 0 ? strlen(rq.body) : rq.body_len,
	    .timeout_s = rq.timeout_s,
	    .max_retries = rq.max_retries,
	    .owner = x->name,
	    .service = rq.service,
	};
	h->id = outbound_request(ob, &r, ext_http_done, chunk ? ext_http_chunk : NULL, h);
	if (h->id == 0) {
		free(h);
		ext_set_error(x, "http_request: outbound HTTP is shut down");
		return 0;
	}
	h->next = x->https;
	x->https = h;
	x->nhttps++;
	return h->id;
}

static int
h_http_cancel(struct dreamos_ext *x, uint64_t id)
{
	EXT_CHECK(x, -1);
	for (struct ext_http *h = x->https; h != NULL; h = h->next) {
		if (h->id == id) {
			outbound_cancel(orch_outbound(x->es->o), id);
			ext_http_unlink(x, h);
			free(h);
			return 0;
		}
	}
	ext_set_error(x, "http_cancel: no request %llu in flight", (unsigned long long)id);
	return -1;
}

/* ---- key-value state ---------------------------------------------------------- */

static bool
kv_key_ok(struct dreamos_ext *x, const char *what, const char *key)
{
	size_t n = key ? strlen(key) : 0;
	if (n == 0 || n > EXT_KV_MAX_KEY || !utf8_valid(key, n)) {
		ext_set_error(x, "%s: keys are 1 to %d bytes of UTF-8", what, EXT_KV_MAX_KEY);
		return false;
	}
	return true;
}

static int
h_kv_set(struct dreamos_ext *x, const char *key, const char *value)
{
	EXT_CHECK(x, -1);
	if (!kv_key_ok(x, "kv_set", key))
		return -1;
	size_t n = value ? strlen(value) : 0;
	if (value == NULL || n > EXT_KV_MAX_VALUE || !utf8_valid(value, n)) {
		ext_set_error(x, "kv_set: values are UTF-8 text of at most %d bytes",
		              EXT_KV_MAX_VALUE);
		return -1;
	}
	if (store_kv_set(orch_store(x->es->o), x->name, key, value) != 0) {
		ext_set_error(x, "kv_set: not stored: %s", store_state(orch_store(x->es->o)));
		return -1;
	}
	return 0;
}

static char *
h_kv_get(struct dreamos_ext *x, const char *key)
{
	EXT_CHECK(x, NULL);
	if (!kv_key_ok(x, "kv_get", key))
		return NULL;
	char *v = store_kv_get(orch_store(x->es->o), x->name, key);
	if (v == NULL)
		ext_set_error(x, "kv_get: no key '%s'", key);
	return v;
}

static int
h_kv_del(struct dreamos_ext *x, const char *key)
{
	EXT_CHECK(x, -1);
	if (!kv_key_ok(x, "kv_del", key))
		return -1;
	if (store_kv_del(orch_store(x->es->o), x->name, key) != 0) {
		ext_set_error(x, "kv_del: %s", store_state(orch_store(x->es->o)));
		return -1;
	}
	return 0;
}

/* ---- timers ----------------------------------------------------------------- */

static void
ext_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Unlinks a timer from x and closes it (freed from the close callback). */
static void
ext_timer_release(struct dreamos_ext *x, struct ext_timer *tm)
{
	for (struct ext_timer **pp = &x->timers; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == tm) {
			*pp = tm->next;
			x->ntimers--;
			break;
		}
	}
	uv_close((uv_handle_t *)&tm->h, ext_timer_closed);
}

static void
ext_timer_cb(uv_timer_t *h)
{
	struct ext_timer *tm = h->data;
	struct dreamos_ext *x = tm->ext;
	dreamos_timer_fn fn = tm->fn;
	void *arg = tm->arg;
	if (!tm->repeat)
		ext_timer_release(x, tm);
	/* tm may be released by fn: not used afterwards. */
	fn(x, arg);
}

static uint64_t
h_timer_add(struct dreamos_ext *x, uint64_t delay_ms, uint64_t repeat_ms, dreamos_timer_fn fn,
            void *arg)
{
	EXT_CHECK(x, 0);
	if (!ext_can_register(x, "timer_add"))
		return 0;
	if (fn == NULL) {
		ext_set_error(x, "timer_add: no callback");
		return 0;
	}
	struct ext_timer *tm = xcalloc(1, sizeof *tm);
	tm->ext = x;
	tm->id = ++x->es->next_id;
	tm->fn = fn;
	tm->arg = arg;
	tm->repeat = repeat_ms > 0;
	uv_timer_init(orch_loop(x->es->o), &tm->h);
	tm->h.data = tm;
	uv_timer_start(&tm->h, ext_timer_cb, delay_ms, repeat_ms);
	tm->next = x->timers;
	x->timers = tm;
	x->ntimers++;
	return tm->id;
}

static int
h_timer_remove(struct dreamos_ext *x, uint64_t id)
{
	EXT_CHECK(x, -1);
	for (struct ext_timer *tm = x->timers; tm != NULL; tm = tm->next) {
		if (tm->id == id) {
			ext_timer_release(x, tm);
			return 0;
		}
	}
	ext_set_error(x, "timer_remove: no timer %llu", (unsigned long long)id);
	return -1;
}

/* ---- configuration -------------------------------------------------------------- */

static char *
h_config_get(struct dreamos_ext *x, const char *path)
{
	EXT_CHECK(x, NULL);
	json_t *settings = orch_config(x->es->o)->extensions.settings;
	json_t *v = json_at(json_object_get(settings, x->name), path);
	if (v == NULL) {
		ext_set_error(x, "config_get: no setting '%s'", path ? path : "");
		return NULL;
	}
	return json_value_text(v);
}

static char *
h_config_core(struct dreamos_ext *x, const char *path)
{
	EXT_CHECK(x, NULL);
	json_t *all = config_to_json(orch_config(x->es->o));
	json_t *v = json_at(all, path);
	char *s = v ? json_value_text(v) : NULL;
	json_decref(all);
	if (s == NULL)
		ext_set_error(x, "config_core: no key '%s'", path ? path : "");
	return s;
}

/* ---- events ---------------------------------------------------------------------- */

static int
h_subscribe(struct dreamos_ext *x, unsigned kinds, int log_min_level, dreamos_event_fn fn,
            void *arg)
{
	EXT_CHECK(x, -1);
	if (!ext_can_register(x, "subscribe"))
		return -1;
	kinds &= DREAMOS_EV_MESSAGES | DREAMOS_EV_TASKS | DREAMOS_EV_LOGS;
	if (fn == NULL || kinds == 0) {
		ext_set_error(x, "subscribe: no callback or no event kind");
		return -1;
	}
	struct exts *es = x->es;
	struct ext_sub *s = xcalloc(1, sizeof *s);
	s->ext = x;
	s->id = ++es->next_sub_id;
	s->kinds = kinds;
	s->min_level = log_min_level;
	s->from_seq = es->event_seq + 1;
	s->fn = fn;
	s->arg = arg;
	struct ext_sub **pp = &x->subs;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = s;
	x->nsubs++;
	ext_subs_update(es);
	return s->id;
}

static int
h_unsubscribe(struct dreamos_ext *x, int id)
{
	EXT_CHECK(x, -1);
	struct exts *es = x->es;
	for (struct ext_sub **pp = &x->subs; *pp != NULL; pp = &(*pp)->next) {
		struct ext_sub *s = *pp;
		if (s->id != id || s->fn == NULL)
			continue;
		x->nsubs--;
		if (es->dispatching > 0) {
			s->fn = NULL; /* freed after the dispatch */
			es->subs_dirty = true;
		} else {
			*pp = s->next;
			free(s);
		}
		ext_subs_update(es);
		return 0;
	}
	ext_set_error(x, "unsubscribe: no subscription %d", id);
	return -1;
}

/* ---- JSON helpers ------------------------------------------------------------------ */

static char *
h_json_get(const char *text, const char *path)
{
	if (text == NULL)
		return NULL;
	json_t *root = json_loads(text, JSON_DECODE_ANY, NULL);
	if (root == NULL)
		return NULL;
	json_t *v = json_at(root, path);
	char *s = v ? json_value_text(v) : NULL;
	json_decref(root);
	return s;
}

static char *
h_json_quote(const char *s)
{
	char *clean = utf8_clean(s ? s : "");
	json_t *j = json_string(clean);
	free(clean);
	char *out = json_dumps(j, JSON_ENCODE_ANY);
	json_decref(j);
	return out;
}

/* ---- activation and the sweep --------------------------------------------------------- */

void
ext_activate(struct dreamos_ext *x)
{
	struct ext_pending_agent *p = x->pending;
	x->pending = NULL;
	while (p != NULL) {
		struct ext_pending_agent *next = p->next;
		struct ext_type *t = x->types;
		while (t != NULL && strcmp(t->name, p->type) != 0)
			t = t->next;
		char *cause = NULL;
		if (t == NULL)
			cause = xasprintf("agent type '%s' was unregistered", p->type);
		else
			ext_agent_create_now(x, t, p->name, p->caps, p->ncaps, p->max_tasks,
			                     &cause);
		if (cause != NULL) {
			log_error(orch_log(x->es->o), p->name, "extension %s: %s", x->name, cause);
			free(cause);
		}
		pending_free(p);
		p = next;
	}
	for (struct ext_type *t = x->types; t != NULL; t = t->next)
		ext_type_scan(t);
}

/* Appends "N what" (plural with 's') to a summary. */
static void
summary_add(char *out, size_t len, size_t n, const char *what)
{
	if (n == 0)
		return;
	size_t used = strlen(out);
	size_t wl = strlen(what);
	bool es = wl > 0 && what[wl - 1] == 's'; /* process -> processes */
	snprintf(out + used, len - used, "%s%zu %s%s", used ? ", " : "", n, what,
	         n == 1 ? ""
	         : es   ? "es"
	                : "s");
}

void
ext_sweep(struct dreamos_ext *x, size_t stopped_agents, char *out, size_t len)
{
	struct exts *es = x->es;
	struct orch *o = es->o;
	size_t ncalls = x->ncalls, nagents = x->nagents + stopped_agents, ncmds = x->ncmds,
	       ntypes = x->ntypes, ntimers = x->ntimers, nsubs = x->nsubs, nhttps = x->nhttps;
	char why[128];
	snprintf(why, sizeof why, "extension '%s' was unloaded", x->name);

	/* Waiting commands, before their entries go. */
	ext_calls_abort(x, NULL, why);
	/* Agents started by fini (stopped before it normally). */
	ext_agents_stop(x, why);
	while (x->pending != NULL) {
		struct ext_pending_agent *p = x->pending;
		x->pending = p->next;
		pending_free(p);
	}
	if (orch_cmds(o) != NULL)
		cmd_unregister_owner(orch_cmds(o), x->name);
	while (x->cmds != NULL) {
		struct ext_cmd *c = x->cmds;
		x->cmds = c->next;
		ext_cmd_free(c);
	}
	x->ncmds = 0;
	while (x->types != NULL) {
		struct ext_type *t = x->types;
		x->types = t->next;
		ext_type_free(t);
	}
	x->ntypes = 0;
	while (x->timers != NULL)
		ext_timer_release(x, x->timers);
	while (x->subs != NULL) {
		struct ext_sub *s = x->subs;
		x->subs = s->next;
		free(s);
	}
	x->nsubs = 0;
	ext_subs_update(es);
	if (x->https != NULL && orch_outbound(o) != NULL)
		outbound_cancel_owner(orch_outbound(o), x->name);
	while (x->https != NULL) {
		struct ext_http *h = x->https;
		x->https = h->next;
		free(h);
	}
	x->nhttps = 0;
	/* Messages not stored yet: their answers are dropped. */
	while (x->sends != NULL) {
		struct ext_send *s = x->sends;
		x->sends = s->next;
		s->ext = NULL;
	}
	x->nsends = 0;
	size_t nprocs = ext_procs_sweep(x);
	while (x->methods != NULL) {
		struct ext_method *m = x->methods;
		x->methods = m->next;
		free(m->name);
		free(m);
	}

	out[0] = '\0';
	summary_add(out, len, ncmds, "command");
	summary_add(out, len, ntypes, "agent type");
	summary_add(out, len, nagents, "agent");
	summary_add(out, len, ntimers, "timer");
	summary_add(out, len, nsubs, "subscription");
	summary_add(out, len, nhttps, "request");
	summary_add(out, len, ncalls, "waiting command");
	summary_add(out, len, nprocs, "process");
	if (out[0] == '\0')
		snprintf(out, len, "nothing");
}

json_t *
ext_resources_json(const struct dreamos_ext *x)
{
	json_t *cmds = json_array(), *types = json_array(), *agents = json_array();
	for (struct ext_cmd *c = x->cmds; c != NULL; c = c->next)
		json_array_append_new(cmds, json_string(c->name));
	for (struct ext_type *t = x->types; t != NULL; t = t->next)
		json_array_append_new(types,
		                      json_pack("{s:s,s:s?,s:i}", "name", t->name, "description",
		                                t->description, "max_tasks", t->max_tasks));
	for (struct dreamos_agent *ag = x->agents; ag != NULL; ag = ag->next)
		json_array_append_new(agents, json_string(ag->name));
	json_t *methods = json_array();
	for (struct ext_method *m = x->methods; m != NULL; m = m->next)
		json_array_append_new(methods, json_sprintf("%s.%s", x->name, m->name));
	return json_pack("{s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "commands", cmds,
	                 "agent_types", types, "agents", agents, "timers", (json_int_t)x->ntimers,
	                 "subscriptions", (json_int_t)x->nsubs, "requests", (json_int_t)x->nhttps,
	                 "waiting_commands", (json_int_t)x->ncalls, "pending_sends",
	                 (json_int_t)x->nsends, "processes", (json_int_t)x->nprocs, "methods",
	                 methods);
}

/* ---- added after the first release ---------------------------------------------------- */

static const char *
h_data_dir(struct dreamos_ext *x)
{
	EXT_CHECK(x, NULL);
	if (x->data_dir == NULL) {
		char *base = path_join(orch_runtime(x->es->o), "extensions");
		char *dir = path_join(base, x->name);
		free(base);
		int rc = mkdir_p(dir, 0700);
		if (rc != 0) {
			ext_set_error(x, "cannot create %s: %s", dir, strerror(-rc));
			free(dir);
			return NULL;
		}
		x->data_dir = dir;
	}
	return x->data_dir;
}

static char *
h_redact(struct dreamos_ext *x, const char *text)
{
	EXT_CHECK(x, NULL);
	if (text == NULL) {
		ext_set_error(x, "redact: no text");
		return NULL;
	}
	return logmgr_redact(orch_log(x->es->o), text);
}

static int
h_secret_add(struct dreamos_ext *x, const char *secret)
{
	EXT_CHECK(x, -1);
	if (secret == NULL || strlen(secret) < 8) {
		ext_set_error(x, "secret_add: a secret must be at least 8 bytes");
		return -1;
	}
	logmgr_add_secret(orch_log(x->es->o), secret);
	return 0;
}

static const char *
h_agent_option(struct dreamos_agent *ag, const char *name)
{
	if (ag == NULL || ag->a == NULL || name == NULL)
		return NULL;
	size_t len = strlen(name);
	for (size_t i = 0; i < ag->a->cfg.noptions; i++) {
		const char *o = ag->a->cfg.options[i];
		if (strncmp(o, name, len) == 0 && o[len] == '=')
			return o + len + 1;
	}
	return NULL;
}

static int
h_agent_set_state(struct dreamos_ext *x, struct dreamos_agent *ag, const char *state,
                  const char *reason)
{
	EXT_CHECK(x, -1);
	if (ag == NULL || ag->ext != x || ag->a == NULL) {
		ext_set_error(x, "agent_set_state: not an agent of %s", x->name);
		return -1;
	}
	if (state == NULL || reason == NULL || *reason == '\0') {
		ext_set_error(x, "agent_set_state: a state and a reason are needed");
		return -1;
	}
	char *why = logmgr_redact(orch_log(x->es->o), reason), *cause = NULL;
	int rc;
	if (strcmp(state, "paused") == 0)
		rc = agent_pause_why(ag->a, why, &cause);
	else if (strcmp(state, "ready") == 0)
		rc = agent_resume_why(ag->a, why, &cause);
	else if (strcmp(state, "failed") == 0)
		rc = agent_fail(ag->a, why, &cause);
	else {
		rc = -1;
		cause = xasprintf("unknown state '%s' (paused, ready or failed)", state);
	}
	free(why);
	if (rc != 0) {
		ext_set_error(x, "agent_set_state: %s", cause);
		free(cause);
	}
	return rc;
}

/* Method names: like command words, [a-z0-9_-]{1,64}. */
static bool
method_name_ok(const char *s)
{
	size_t n = 0;
	for (; s[n] != '\0'; n++)
		if (!(islower((unsigned char)s[n]) || isdigit((unsigned char)s[n]) || s[n] == '_' ||
		      s[n] == '-'))
			return false;
	return n > 0 && n <= 64;
}

static int
h_method_register(struct dreamos_ext *x, const char *name, dreamos_method_fn fn, void *arg)
{
	EXT_CHECK(x, -1);
	if (name == NULL || !method_name_ok(name) || fn == NULL) {
		ext_set_error(x, "method_register: invalid method '%s' (a-z, 0-9, _ and -)",
		              name ? name : "");
		return -1;
	}
	for (struct ext_method *m = x->methods; m != NULL; m = m->next)
		if (strcmp(m->name, name) == 0) {
			ext_set_error(x, "method_register: %s.%s is already registered", x->name,
			              name);
			return -1;
		}
	struct ext_method *m = xcalloc(1, sizeof *m);
	m->name = xstrdup(name);
	m->fn = fn;
	m->arg = arg;
	m->next = x->methods;
	x->methods = m;
	return 0;
}

/* Deep enough for A -> B -> A, not for a runaway recursion. */
#define EXT_CALL_DEPTH 4

static char *
h_call_method(struct dreamos_ext *x, const char *target, const char *json)
{
	EXT_CHECK(x, NULL);
	const char *dot = target ? strchr(target, '.') : NULL;
	if (dot == NULL || dot == target || dot[1] == '\0') {
		ext_set_error(x, "call_method: '%s' is not EXT.METHOD", target ? target : "");
		return NULL;
	}
	char err[256];
	char *in = json_normalize(json ? json : "null", err, sizeof err);
	if (in == NULL) {
		ext_set_error(x, "call_method: %s: arguments are not JSON: %s", target, err);
		return NULL;
	}
	char *ename = xstrndup(target, (size_t)(dot - target));
	struct dreamos_ext *y = ext_find(x->es, ename);
	struct ext_method *m = NULL;
	for (m = (y && y->state == EXT_ACTIVE) ? y->methods : NULL; m != NULL; m = m->next)
		if (strcmp(m->name, dot + 1) == 0)
			break;
	char *out = NULL;
	if (y == NULL || y->state != EXT_ACTIVE)
		ext_set_error(x, "call_method: extension %s is not loaded", ename);
	else if (m == NULL)
		ext_set_error(x, "call_method: %s offers no method '%s'", ename, dot + 1);
	else if (y->call_depth >= EXT_CALL_DEPTH)
		ext_set_error(x, "call_method: %s: calls nested too deep", target);
	else {
		y->call_depth++;
		char *res = m->fn(y, m->arg, in);
		y->call_depth--;
		if (res == NULL) {
			ext_set_error(x, "call_method: %s: %s", target,
			              y->error ? y->error : "failed");
		} else {
			out = json_normalize(res, err, sizeof err);
			if (out == NULL)
				ext_set_error(x, "call_method: %s returned bad JSON: %s", target,
				              err);
			free(res);
		}
	}
	free(ename);
	free(in);
	return out;
}

static uint64_t
h_proc_spawn(struct dreamos_ext *x, const struct dreamos_proc_spec *spec, dreamos_proc_data_fn data,
             dreamos_proc_exit_fn exited, void *arg)
{
	EXT_CHECK(x, 0);
	return ext_proc_spawn(x, spec, data, exited, arg);
}

static int
h_proc_write(struct dreamos_ext *x, uint64_t id, int fd, const char *data, size_t len)
{
	EXT_CHECK(x, -1);
	return ext_proc_write(x, id, fd, data, len);
}

static int
h_proc_kill(struct dreamos_ext *x, uint64_t id, int signum)
{
	EXT_CHECK(x, -1);
	return ext_proc_kill(x, id, signum);
}

/* ---- the table -------------------------------------------------------------------------- */

const struct dreamos_host ext_host_table = {
    .size = sizeof(struct dreamos_host),
    .api_version = DREAMOS_EXT_API_VERSION,
    .host_version = PACKAGE_VERSION,

    .name = h_name,
    .last_error = h_last_error,
    .set_error = h_set_error,
    .free = h_free,
    .ext_version = h_ext_version,

    .log = h_log,
    .log_fields = h_log_fields,

    .send = h_send,
    .publish = h_publish,

    .task_submit = h_task_submit,
    .task_cancel = h_task_cancel,
    .task_get = h_task_get,

    .command_register = h_command_register,
    .command_unregister = h_command_unregister,
    .call_argc = h_call_argc,
    .call_arg = h_call_arg,
    .call_opt = h_call_opt,
    .call_flag = h_call_flag,
    .call_opt_count = h_call_opt_count,
    .call_opt_at = h_call_opt_at,
    .call_client = h_call_client,
    .call_reply = h_call_reply,
    .call_reply_json = h_call_reply_json,
    .call_error = h_call_error,
    .call_stream = h_call_stream,
    .call_finish = h_call_finish,

    .agent_type_register = h_agent_type_register,
    .agent_type_unregister = h_agent_type_unregister,
    .agent_create = h_agent_create,
    .agent_line = h_agent_line,
    .agent_name = h_agent_name,

    .http_request = h_http_request,
    .http_cancel = h_http_cancel,

    .kv_set = h_kv_set,
    .kv_get = h_kv_get,
    .kv_del = h_kv_del,

    .timer_add = h_timer_add,
    .timer_remove = h_timer_remove,

    .config_get = h_config_get,
    .config_core = h_config_core,

    .subscribe = h_subscribe,
    .unsubscribe = h_unsubscribe,

    .json_get = h_json_get,
    .json_quote = h_json_quote,

    .data_dir = h_data_dir,
    .redact = h_redact,
    .secret_add = h_secret_add,
    .agent_option = h_agent_option,
    .agent_set_state = h_agent_set_state,
    .method_register = h_method_register,
    .call_method = h_call_method,
    .proc_spawn = h_proc_spawn,
    .proc_write = h_proc_write,
    .proc_kill = h_proc_kill,
};
