/* orch.c — the orchestrator object: startup (runtime, lock, config, log,
 * store, commands, control socket), signals, periodic housekeeping, status,
 * and an orderly shutdown. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"
#include "agent.h"
#include "bus.h"
#include "task.h"
#include "auth.h"
#include "bridge.h"
#include "outbound.h"
#include "cmd.h"
#include "ctl.h"
#include "ext.h"
#include "orch.h"
#include "runtime.h"
#include "strmap.h"

/* How often old log rows are pruned from the store. */
#define ORCH_HOUSEKEEPING_MS (3600 * 1000)

/* The orchestrator's own handles, apart from it: orch_free may run before
 * the loop has closed them (a test, a failed start), and they are freed
 * when the last one has. */
struct orch_handles {
	uv_signal_t sig_int, sig_term, sig_hup;
	uv_timer_t housekeeping;
	int closed;
};

struct orch {
	uv_loop_t *loop;
	char *runtime;
	char *mode;
	struct runtime_lock lock;
	struct config *cfg;
	struct logmgr *log;
	struct store *store;
	struct cmd_table *cmds;
	struct ctl_server *ctl;
	struct agents *agents;
	struct bus *bus;
	struct tasks *tasks;
	struct auth *auth;
	struct bridge *bridge;
	struct outbound *outbound;
	struct exts *exts;
	struct chaos *chaos; /* cmd-chaos.c, made on first use */
	bool demo;
	char *share_dir;
	char *db_path;
	char *log_path;
	char *sock_path;

	struct orch_handles *handles; /* NULL until started */

	int64_t started_ms;      /* wall */
	int64_t started_mono_ms; /* monotonic */
	bool quitting;
	bool finished;
	bool store_closing; /* no more audit rows: it may be in its last commit */
	bool quit_on_hup;   /* a TUI runs: SIGHUP means its terminal is gone */
	uint64_t commands_run;
	void (*quit_cb)(void *);
	void *quit_arg;
};

uv_loop_t *
orch_loop(struct orch *o)
{
	return o->loop;
}

struct logmgr *
orch_log(struct orch *o)
{
	return o->log;
}

struct store *
orch_store(struct orch *o)
{
	return o->store;
}

const struct config *
orch_config(struct orch *o)
{
	return o->cfg;
}

struct cmd_table *
orch_cmds(struct orch *o)
{
	return o->cmds;
}

struct agents *
orch_agents(struct orch *o)
{
	return o->agents;
}

struct bus *
orch_bus(struct orch *o)
{
	return o->bus;
}

struct tasks *
orch_tasks(struct orch *o)
{
	return o->tasks;
}

struct chaos **
orch_chaos(struct orch *o)
{
	return &o->chaos;
}

struct auth *
orch_auth(struct orch *o)
{
	return o->auth;
}

struct outbound *
orch_outbound(struct orch *o)
{
	return o->outbound;
}

struct exts *
orch_exts(struct orch *o)
{
	return o->exts;
}

struct bridge *
orch_bridge(struct orch *o)
{
	return o->bridge;
}

const char *
orch_share_dir(const struct orch *o)
{
	return o->share_dir;
}

/* Finds the shared files: $DREAMOS_SHARE, the source tree beside the binary
 * (running from a build tree), else the installed location. */
static char *
orch_find_share(void)
{
	const char *env = getenv("DREAMOS_SHARE");
	if (env != NULL && *env != '\0')
		return xstrdup(env);
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash != NULL) {
			*slash = '\0';
			char *cand = xasprintf("%s/share/agents", exe);
			bool ok = access(cand, F_OK) == 0;
			free(cand);
			if (ok)
				return xasprintf("%s/share", exe);
		}
	}
	if (access(DREAMOS_PKGDATADIR "/agents", F_OK) == 0)
		return xstrdup(DREAMOS_PKGDATADIR);
	/* Not installed: a build tree outside the source tree. */
	if (access(DREAMOS_SRCDIR "/share/agents", F_OK) == 0)
		return xstrdup(DREAMOS_SRCDIR "/share");
	return xstrdup(DREAMOS_PKGDATADIR);
}

const char *
orch_runtime(const struct orch *o)
{
	return o->runtime;
}

const char *
orch_mode(const struct orch *o)
{
	return o->mode;
}

int64_t
orch_started_ms(const struct orch *o)
{
	return o->started_ms;
}

bool
orch_quitting(const struct orch *o)
{
	return o->quitting;
}

void
orch_set_quit_on_hup(struct orch *o, bool on)
{
	o->quit_on_hup = on;
}

void
orch_set_quit_cb(struct orch *o, void (*fn)(void *arg), void *arg)
{
	o->quit_cb = fn;
	o->quit_arg = arg;
}

/* Store failures become error log records. */
static void
orch_store_error(void *arg, const char *msg)
{
	struct orch *o = arg;
	log_error(o->log, "store", "%s", msg);
}

/* Resolves the configuration file: --config, $DREAMOS_CONFIG, then the XDG
 * location if it exists.  Returns a malloc'd path, or NULL for built-in
 * defaults; *explicit says whether it was asked for by name. */
static char *
orch_config_path(const char *opt, bool *explicit)
{
	const char *env;
	*explicit = true;
	if (opt != NULL && *opt != '\0')
		return xstrdup(opt);
	if ((env = getenv("DREAMOS_CONFIG")) != NULL && *env != '\0')
		return xstrdup(env);
	*explicit = false;
	char *path;
	if ((env = getenv("XDG_CONFIG_HOME")) != NULL && *env == '/')
		path = xasprintf("%s/dreamos/dreamos.yaml", env);
	else if ((env = getenv("HOME")) != NULL && *env != '\0')
		path = xasprintf("%s/.config/dreamos/dreamos.yaml", env);
	else
		return NULL;
	if (access(path, F_OK) != 0) {
		free(path);
		return NULL;
	}
	return path;
}

static void
orch_on_signal(uv_signal_t *h, int signum)
{
	struct orch *o = h->data;
	if (signum == SIGHUP && o->quit_on_hup) {
		/* The TUI's terminal hung up: nobody is left to operate it. */
		orch_request_quit(o, "SIGHUP: terminal hung up");
		return;
	}
	if (signum == SIGHUP) {
		logmgr_reopen(o->log);
		log_info(o->log, "orch", "SIGHUP: log file reopened");
		return;
	}
	orch_request_quit(o, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* Deletes log rows older than logging.retention. */
static void
orch_prune(struct orch *o)
{
	if (o->cfg->logging.retention <= 0)
		return;
	sqlite3_stmt *st = store_stmt(o->store, "DELETE FROM logs WHERE ts_ms < ?1");
	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, time_wall_ms() - (int64_t)(o->cfg->logging.retention * 1000.0));
	store_step_write(o->store, st);
	int n = sqlite3_changes(store_db(o->store));
	if (n > 0)
		log_debug(o->log, "store", "pruned %d log records older than retention", n);
}

static void
orch_on_housekeeping(uv_timer_t *t)
{
	struct orch *o = t->data;
	orch_prune(o);
	bus_prune(o->bus);
	auth_prune(o->auth);
}

/* Frees what orch_new built; used on failure and by orch_free. */
static void
orch_release(struct orch *o)
{
	/* First: it unregisters its commands from o->cmds. */
	ext_free(o->exts);
	o->exts = NULL;
	if (o->store != NULL) {
		logmgr_set_store(o->log, NULL);
		o->store_closing = true;
		store_close(o->store);
		o->store = NULL;
	}
	chaos_free(o->chaos);
	o->chaos = NULL;
	agents_free(o->agents);
	o->agents = NULL;
	bus_free(o->bus);
	o->bus = NULL;
	tasks_free(o->tasks);
	o->tasks = NULL;
	bridge_free(o->bridge);
	o->bridge = NULL;
	auth_free(o->auth);
	o->auth = NULL;
	outbound_free(o->outbound);
	o->outbound = NULL;
	cmd_table_free(o->cmds);
	o->cmds = NULL;
	if (o->log != NULL)
		logmgr_leave_loop(o->log);
	logmgr_free(o->log);
	o->log = NULL;
	config_free(o->cfg);
	o->cfg = NULL;
	runtime_unlock(&o->lock);
	free(o->runtime);
	free(o->mode);
	free(o->share_dir);
	free(o->db_path);
	free(o->log_path);
	free(o->sock_path);
}

int
orch_new(struct orch **out, uv_loop_t *loop, const struct orch_opts *opts, char **cause)
{
	struct orch *o = xcalloc(1, sizeof *o);
	o->loop = loop;
	o->lock.fd = -1;
	o->mode = xstrdup(opts->mode ? opts->mode : "headless");
	o->started_ms = time_wall_ms();
	o->started_mono_ms = time_mono_ms();

	/* Configuration first: nothing starts on a bad config. */
	bool explicit;
	char *cfgpath = orch_config_path(opts->config_path, &explicit);
	if (cfgpath != NULL) {
		if (config_load(cfgpath, &o->cfg, cause) != 0) {
			free(cfgpath);
			goto fail;
		}
		free(cfgpath);
	} else {
		o->cfg = config_defaults();
	}
	if (opts->bridge_port >= 0)
		o->cfg->bridge.port = opts->bridge_port;

	enum log_level level = o->cfg->logging.level;
	/* The seed's monitoring.log_level, when given, wins (dreamos.yaml(5)). */
	if (o->cfg->monitoring.log_level_set)
		level = o->cfg->monitoring.log_level;
	if (opts->log_level != NULL && !log_level_parse(opts->log_level, &level)) {
		*cause = xasprintf("--log-level: unknown level '%s' (trace, debug, info, warn, "
		                   "error, fatal)",
		                   opts->log_level);
		goto fail;
	}

	o->runtime = runtime_resolve(opts->runtime);
	if (runtime_prepare(o->runtime, cause) != 0)
		goto fail;
	if (runtime_lock(o->runtime, &o->lock, cause) != 0)
		goto fail;

	struct log_opts lo = {.level = level, .ring_size = o->cfg->logging.ring};
	o->log = logmgr_new(&lo);
	logmgr_set_stderr(o->log, opts->log_stderr);
	logmgr_use_loop(o->log, loop);
	o->log_path = o->cfg->logging.file ? xstrdup(o->cfg->logging.file)
	                                   : path_join(o->runtime, "logs/dreamos.log");
	if (logmgr_open_file(o->log, o->log_path, o->cfg->logging.max_size, o->cfg->logging.keep,
	                     cause) != 0)
		goto fail;

	o->db_path = path_join(o->runtime, "dreamos.db");
	struct store_opts so = {
	    .path = o->db_path,
	    .durability = o->cfg->store.durability,
	    .commit_interval_ms = (unsigned)o->cfg->store.commit_interval_ms,
	    .adaptive = o->cfg->store.adaptive_commit,
	    .threaded = true,
	};
	if (store_open(&o->store, loop, &so, cause) != 0)
		goto fail;
	store_set_error_cb(o->store, orch_store_error, o);
	logmgr_set_store(o->log, o->store);

	o->cmds = cmd_table_new();
	cmd_register(o->cmds, cmd_builtin_entries, cmd_builtin_count, "core");
	cmd_register(o->cmds, cmd_agent_entries, cmd_agent_count, "core");
	cmd_register(o->cmds, cmd_bus_entries, cmd_bus_count, "core");
	cmd_register(o->cmds, cmd_task_entries, cmd_task_count, "core");
	cmd_register(o->cmds, cmd_chaos_entries, cmd_chaos_count, "core");
	cmd_register(o->cmds, auth_cmd_entries, auth_cmd_count, "core");
	cmd_register(o->cmds, outbound_cmd_entries, outbound_cmd_count, "core");
	cmd_register(o->cmds, bridge_cmd_entries, bridge_cmd_count, "core");
	o->agents = agents_new(o);
	o->bus = bus_new(o);
	if (bus_recover(o->bus, cause) != 0)
		goto fail;
	o->auth = auth_new(o);
	o->outbound =
	    outbound_new(loop, o->log, o->cfg->bridge.retry_attempts, o->cfg->bridge.retry_delay);
	if (o->outbound == NULL) {
		*cause = xstrdup("cannot initialise libcurl");
		goto fail;
	}
	if (outbound_add_config_services(o->outbound, o->cfg, cause) != 0)
		goto fail;
	o->tasks = tasks_new(o);
	if (tasks_recover(o->tasks, cause) != 0)
		goto fail;
	o->exts = ext_new(o);
	o->demo = opts->demo;
	o->share_dir = orch_find_share();

	o->sock_path = path_join(o->runtime, "dreamos.sock");
	if (ctl_server_start(o, o->sock_path, &o->ctl, cause) != 0)
		goto fail;

	struct orch_handles *h = o->handles = xcalloc(1, sizeof *h);
	uv_signal_init(loop, &h->sig_int);
	uv_signal_init(loop, &h->sig_term);
	uv_signal_init(loop, &h->sig_hup);
	h->sig_int.data = h->sig_term.data = h->sig_hup.data = o;
	uv_signal_start(&h->sig_int, orch_on_signal, SIGINT);
	uv_signal_start(&h->sig_term, orch_on_signal, SIGTERM);
	uv_signal_start(&h->sig_hup, orch_on_signal, SIGHUP);
	uv_timer_init(loop, &h->housekeeping);
	h->housekeeping.data = o;
	uv_timer_start(&h->housekeeping, orch_on_housekeeping, ORCH_HOUSEKEEPING_MS,
	               ORCH_HOUSEKEEPING_MS);
	uv_unref((uv_handle_t *)&h->housekeeping);

	orch_prune(o);
	bus_prune(o->bus);
	log_info(o->log, "orch", "dreamos %s started (pid %ld, %s mode, runtime %s, config %s)",
	         PACKAGE_VERSION, (long)getpid(), o->mode, o->runtime,
	         o->cfg->path ? o->cfg->path : "built-in defaults");
	*out = o;
	return 0;

fail:
	orch_release(o);
	free(o);
	*out = NULL;
	return -1;
}

static void
orch_handle_closed(uv_handle_t *handle)
{
	struct orch_handles *h = handle->data;
	if (++h->closed == 4)
		free(h);
}

/* Runs the last steps of shutdown once every component has stopped. */
static void
orch_finish(struct orch *o)
{
	if (o->finished)
		return;
	o->finished = true;
	/* Extensions go first, while the bus, the store and outbound HTTP
	 * they use are still there. */
	ext_close(o->exts);
	ctl_server_stop(o->ctl);
	o->ctl = NULL;
	bridge_stop(o->bridge);
	outbound_free(o->outbound);
	o->outbound = NULL;
	bus_close(o->bus);
	tasks_close(o->tasks);
	if (o->handles != NULL) {
		struct orch_handles *h = o->handles;
		o->handles = NULL;
		h->sig_int.data = h->sig_term.data = h->sig_hup.data = h->housekeeping.data = h;
		uv_close((uv_handle_t *)&h->sig_int, orch_handle_closed);
		uv_close((uv_handle_t *)&h->sig_term, orch_handle_closed);
		uv_close((uv_handle_t *)&h->sig_hup, orch_handle_closed);
		uv_close((uv_handle_t *)&h->housekeeping, orch_handle_closed);
	}
	int64_t up = time_mono_ms() - o->started_mono_ms;
	log_info(o->log, "orch", "stopped after %.1f s, %llu commands run", (double)up / 1000.0,
	         (unsigned long long)o->commands_run);
	char *cause = NULL;
	if (store_flush(o->store, &cause) != 0) {
		fprintf(stderr, "dreamos: final commit failed: %s\n", cause ? cause : "?");
		free(cause);
	}
	logmgr_set_store(o->log, NULL);
	logmgr_leave_loop(o->log);
	o->store_closing = true;
	store_close(o->store);
	o->store = NULL;
	runtime_unlock(&o->lock);

	if (o->quit_cb != NULL)
		o->quit_cb(o->quit_arg);
}

static void
orch_agents_stopped(void *arg)
{
	orch_finish(arg);
}

void
orch_request_quit(struct orch *o, const char *why)
{
	if (o->quitting)
		return;
	o->quitting = true;
	log_info(o->log, "orch", "shutting down (%s)", why);
	/* Agents stop asynchronously, all at once (asked in reverse start
	 * order); then the rest. */
	agents_stop_all(o->agents, orch_agents_stopped, o);
}

int
orch_free(struct orch *o)
{
	if (o == NULL)
		return 0;
	if (!o->finished) {
		o->quitting = true;
		agents_abandon(o->agents);
		orch_finish(o);
	}
	orch_release(o);
	free(o);
	return 0;
}

json_t *
orch_status_json(struct orch *o)
{
	char started[40];
	time_iso8601(o->started_ms, started, sizeof started);
	struct store_stats ss = {0};
	struct log_stats ls = {0};
	if (o->store != NULL)
		store_stats(o->store, &ss);
	logmgr_stats(o->log, &ls);
	int64_t wal_bytes = 0;
	int64_t size_bytes = o->store ? store_size_bytes(o->store, &wal_bytes) : 0;
	json_t *db =
	    json_pack("{s:s,s:I,s:I,s:s,s:i,s:I,s:f,s:I,s:i}", "path", o->db_path, "size_bytes",
	              (json_int_t)size_bytes, "wal_bytes", (json_int_t)wal_bytes, "state",
	              o->store ? store_state(o->store) : "closed", "schema",
	              o->store ? store_schema_version(o->store) : 0, "commits",
	              (json_int_t)ss.commits, "last_commit_ms", ss.last_commit_ms, "checkpoints",
	              (json_int_t)ss.checkpoints, "wal_pages", ss.wal_pages);
	struct bus_stats bs;
	struct task_counts tc;
	bus_stats(o->bus, &bs);
	tasks_counts(o->tasks, &tc);
	json_t *tstates = json_object();
	for (int i = 0; i < TASK_NSTATES; i++)
		json_object_set_new(tstates, task_state_name((enum task_state)i),
		                    json_integer((json_int_t)tc.n[i]));
	json_t *counts = json_pack(
	    "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I,s:I}", "agents",
	    (json_int_t)agents_count(o->agents), "agents_up", (json_int_t)agents_up(o->agents),
	    "messages", (json_int_t)bs.accepted, "messages_pending", (json_int_t)bs.pending,
	    "messages_inflight", (json_int_t)bs.inflight, "messages_dead", (json_int_t)bs.dead,
	    "last_message_id", (json_int_t)bs.last_id, "messages_throttled",
	    (json_int_t)bs.throttled, "tasks", (json_int_t)tc.submitted, "last_task_id",
	    (json_int_t)tc.last_id, "task_states", tstates, "log_records", (json_int_t)ls.emitted,
	    "log_file_errors", (json_int_t)ls.file_errors, "log_stderr_dropped",
	    (json_int_t)ls.stderr_dropped);
	json_t *bridge = bridge_status_json(o->bridge);
	json_t *st =
	    json_pack("{s:s,s:I,s:s,s:f,s:s,s:s,s:s?,s:s,s:o,s:o,s:o,s:s,s:I}", "version",
	              PACKAGE_VERSION, "pid", (json_int_t)getpid(), "mode", o->mode, "uptime_s",
	              (double)(time_mono_ms() - o->started_mono_ms) / 1000.0, "started", started,
	              "runtime", o->runtime, "config", o->cfg->path, "socket", o->sock_path, "db",
	              db, "counts", counts, "bridge", bridge ? bridge : json_null(), "log_level",
	              log_level_name(logmgr_level(o->log)), "ctl_clients",
	              (json_int_t)ctl_server_clients(o->ctl));
	if (st != NULL && o->exts != NULL)
		json_object_set_new(st, "extensions", ext_status_json(o->exts));
	return st;
}

void
orch_command_started(struct orch *o, struct cmd_ctx *ctx)
{
	o->commands_run++;
	log_debug(o->log, "captain", "%s runs '%s'", ctx->client_name, ctx->entry->name);
}

void
orch_command_finished(struct orch *o, struct cmd_ctx *ctx)
{
	/* Commands that change something go to the audit log, from every
	 * front end, with their outcome as the user saw it; secrets the log
	 * knows are redacted there too. */
	if (o->auth == NULL || o->store == NULL || o->store_closing ||
	    ctx->entry->role == ROLE_OBSERVER)
		return;
	char *detail = logmgr_redact(o->log, ctx->line);
	auth_audit(o->auth, ctx->client_name, "command", detail, ctx->status == CMD_OK);
	free(detail);
}

void
orch_complete(struct orch *o, const char *hint, const char *partial, cmd_complete_add_fn add,
              void *arg)
{
	if (strcmp(hint, "agent") == 0) {
		for (size_t i = 0; i < agents_count(o->agents); i++) {
			const char *name = agents_at(o->agents, i)->name;
			if (strncmp(name, partial, strlen(partial)) == 0)
				add(name, arg);
		}
	} else if (strcmp(hint, "task") == 0) {
		/* Unfinished tasks, newest first. */
		struct task_counts tc;
		tasks_counts(o->tasks, &tc);
		for (int64_t id = tc.last_id; id > 0 && id > tc.last_id - 10000; id--) {
			if (tasks_get(o->tasks, id) == NULL)
				continue;
			char w[24];
			snprintf(w, sizeof w, "%lld", (long long)id);
			if (strncmp(w, partial, strlen(partial)) == 0)
				add(w, arg);
		}
	} else if (strcmp(hint, "cap") == 0) {
		struct strmap seen;
		strmap_init(&seen);
		for (size_t i = 0; i < agents_count(o->agents); i++) {
			struct agent *a = agents_at(o->agents, i);
			for (size_t k = 0; k < a->ncaps; k++) {
				const char *c = a->caps[k];
				if (strncmp(c, partial, strlen(partial)) == 0 &&
				    strmap_get(&seen, c) == NULL) {
					strmap_set(&seen, c, a);
					add(c, arg);
				}
			}
		}
		strmap_free(&seen);
	} else if (o->exts != NULL) {
		/* "ext", "ext-file" and the completions of extension commands. */
		ext_complete(o->exts, hint, partial, add, arg);
	}
}

void
orch_agent_state(struct orch *o, struct agent *a, int old_state)
{
	bridge_agent_event(o->bridge, a, old_state);
	chaos_agent_state(o, a, old_state);
}

void
orch_agent_ready(struct orch *o, struct agent *a)
{
	bus_agent_ready(o->bus, a);
	tasks_agent_ready(o->tasks, a);
}

/* It can be handed tasks again (agent_can_take_task). */
void
orch_agent_unthrottled(struct orch *o, struct agent *a)
{
	tasks_agent_ready(o->tasks, a);
}

void
orch_agent_gone(struct orch *o, struct agent *a)
{
	bus_agent_gone(o->bus, a);
	tasks_agent_gone(o->tasks, a);
}

bool
orch_agent_message(struct orch *o, struct agent *a, const struct proto_msg *m)
{
	return bus_agent_message(o->bus, a, m) || tasks_agent_message(o->tasks, a, m);
}

bool
orch_agent_wants_link(struct orch *o, struct agent *a)
{
	return o->exts != NULL && ext_agent_wants_link(o->exts, a);
}

/* The demo's LLM agent: the ChatGPT extension and one assistant, when an
 * OpenAI key is in the environment; otherwise a line saying how. */
static void
orch_demo_llm(struct orch *o)
{
	const char *key = getenv("OPENAI_API_KEY");
	if (key == NULL || *key == '\0') {
		log_info(o->log, "demo",
		         "no LLM agent in this demo: set OPENAI_API_KEY to add one (with "
		         "extensions.chatgpt.base_url for a local OpenAI-compatible server)");
		return;
	}
	char *path = ext_module_path(o->exts, "chatgpt");
	const char *what[] = {path};
	char *cause = NULL;
	if (!ext_loaded(o->exts, "chatgpt") && ext_load(o->exts, what, 1, &cause) != 0) {

		log_warn(o->log, "demo", "no LLM agent: %s", cause);
		free(cause);
	} else {
		cmd_run_line(o, "chatgpt spawn assistant --cap text", CLIENT_INTERNAL, "demo",
		             ROLE_CAPTAIN, NULL, NULL, NULL);
	}
	free(path);
}

/* The demo fleet: Python agents from share/agents. */
static void
orch_start_demo(struct orch *o)
{
	static const struct {
		const char *name;
		const char *script;
		const char *caps;
		int max_tasks;
	} demo[] = {
	    {"greeter", "greeter.py", NULL, 1},      {"worker-1", "worker.py", "compute", 2},
	    {"worker-2", "worker.py", "compute", 2}, {"flaky", "flaky.py", NULL, 1},
	    {"chatter", "chatter.py", NULL, 1},
	};
	const char *python = getenv("PYTHON3");
	if (python == NULL || *python == '\0')
		python = "python3";
	for (size_t i = 0; i < nitems(demo); i++) {
		if (agents_find(o->agents, demo[i].name) != NULL)
			continue;
		struct agent_cfg ac;
		agent_cfg_init(&ac, o->cfg);
		ac.name = xstrdup(demo[i].name);
		ac.command = xstrdup(python);
		ac.args = xcalloc(2, sizeof(char *));
		ac.args[ac.nargs++] = xasprintf("%s/agents/%s", o->share_dir, demo[i].script);
		ac.max_tasks = demo[i].max_tasks;
		ac.restart = RESTART_ALWAYS;
		ac.env = xcalloc(2, sizeof(char *));
		ac.env[ac.nenv++] = xstrdup("CHATTER_PEERS=greeter,worker-1,worker-2,flaky");
		if (demo[i].caps != NULL) {
			ac.caps = xcalloc(2, sizeof(char *));
			ac.caps[ac.ncaps++] = xstrdup(demo[i].caps);
		}
		char *cause = NULL;
		/* Marked as config agents: not remembered once the demo ends. */
		if (agents_spawn(o->agents, &ac, true, &cause) == NULL) {
			log_error(o->log, "demo", "%s", cause);
			free(cause);
		}
		agent_cfg_clear(&ac);
	}
	/* A few tasks, so the task pane moves from the first second: one
	 * fails once and is retried, two form a chain. */
	static const struct {
		const char *title, *cap, *payload;
		enum proto_priority prio;
		int after; /* index into this table + 1, or 0 */
	} tasks[] = {
	    {"count the words of a poem", "text",
	     "{\"text\": \"the quick brown fox jumps over the lazy dog\"}", PRIO_NORMAL, 0},
	    {"sum the numbers to 100000", "compute", "{\"n\": 100000}", PRIO_HIGH, 0},
	    {"a job that fails once", "compute", "{\"fail\": true}", PRIO_NORMAL, 0},
	    {"prepare the report", "compute", "{\"duration\": 2}", PRIO_LOW, 0},
	    {"publish the report", "text", "{\"text\": \"report ready\"}", PRIO_URGENT, 4},
	};
	int64_t ids[nitems(tasks)] = {0};
	for (size_t i = 0; i < nitems(tasks); i++) {
		int64_t dep = tasks[i].after > 0 ? ids[tasks[i].after - 1] : 0;
		struct task_spec spec = {.title = tasks[i].title,
		                         .payload = tasks[i].payload,
		                         .priority = tasks[i].prio,
		                         .capability = tasks[i].cap,
		                         .after = dep > 0 ? &dep : NULL,
		                         .nafter = dep > 0 ? 1 : 0,
		                         .max_retries = -1,
		                         .submitter = "demo"};
		char *cause = NULL;
		struct task *t = tasks_submit(o->tasks, &spec, &cause);
		if (t == NULL) {
			log_error(o->log, "demo", "%s", cause);
			free(cause);
			continue;
		}
		ids[i] = t->id;
	}
	orch_demo_llm(o);
	log_info(o->log, "demo", "demo fleet started from %s/agents, %zu tasks queued",
	         o->share_dir, nitems(tasks));
}

int
orch_start(struct orch *o, char **cause)
{
	(void)cause;
	if (o->cfg->bridge.enabled) {
		char *why = NULL;
		/* A Bridge that cannot listen is an error, not a reason to
		 * stop the agents: everything else keeps working. */
		if (bridge_start(o, &o->bridge, &why) != 0) {
			log_error(o->log, "bridge", "%s; the Bridge is off", why);
			free(why);
		}
	}
	/* Extensions before the agents: agents of their types connect as
	 * they start. */
	ext_start(o->exts);
	agents_start_configured(o->agents);
	if (o->demo)
		orch_start_demo(o);
	return 0;
}
