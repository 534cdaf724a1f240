/* spawn.c — child-process agents: uv_spawn with pipes, the write path with
 * back-pressure, stderr captured as log records, process-group signals, and
 * the end of a child (exit plus end of its output). */
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "orch.h"
#include "outq.h"
#include "spawn.h"

extern char **environ;

/* Reading from an agent stops while this much is queued towards it (it is
 * not reading its stdin), and resumes below the low mark; lines that wait
 * for its answer do not count (outq.h). */
#define SPAWN_HIGH_WATER (1024 * 1024)
#define SPAWN_LOW_WATER  (256 * 1024)
/* After the process exits, how long to wait for the rest of its stdout. */
#define SPAWN_DRAIN_MS 500

struct process_link {
	struct agent *agent; /* NULL once the agent let go of the link */
	uv_process_t proc;
	uv_pipe_t in, out, err;
	uv_timer_t drain;
	struct proto_framer errf;
	int open;           /* handles not yet closed */
	bool exited;        /* exit callback seen */
	bool out_eof;       /* stdout ended */
	bool finished;      /* agent_link_closed called */
	bool reading;       /* stdout read active */
	bool want_reading;  /* the agent's wish (back-pressure) */
	bool writing;       /* a uv_write is in flight */
	bool burst;         /* a line went out this loop turn; the next wait */
	struct buf pending; /* lines waiting for either to end */
	struct buf spare;   /* a written pending buffer, kept for the next lines */
	struct outq outq;   /* what is queued, owed an answer or not */
	uv_prepare_t flush; /* the turn's end: ends the burst */
	int64_t exit_status;
	int term_signal;
	pid_t pid;
};

/* Read buffers shared by every agent: each read is consumed at once (the
 * framers copy partial lines), and reads never nest.  Per-agent buffers
 * cost 72 KiB of resident memory per agent. */
static char spawn_rbuf[65536];
static char spawn_ebuf[8192];

/* Most pending buffer kept as the spare (a bigger one is freed). */
#define PL_SPARE_MAX (1024 * 1024)

struct spawn_write {
	uv_write_t req;
	struct process_link *pl;
	struct buf out; /* pl_write_pending's: the pending buffer itself */
	size_t len;
	char data[]; /* pl_send's: what uv_try_write left of a line */
};

static void
pl_handle_closed(uv_handle_t *h)
{
	struct process_link *pl = h->data;
	if (--pl->open == 0) {
		proto_framer_free(&pl->errf);
		buf_free(&pl->pending);
		buf_free(&pl->spare);
		outq_free(&pl->outq);
		free(pl);
	}
}

/* Closes every handle of the link; the link frees itself afterwards. */
static void
pl_close(struct process_link *pl)
{
	uv_handle_t *hs[] = {(uv_handle_t *)&pl->proc,  (uv_handle_t *)&pl->in,
	                     (uv_handle_t *)&pl->out,   (uv_handle_t *)&pl->err,
	                     (uv_handle_t *)&pl->drain, (uv_handle_t *)&pl->flush};
	for (size_t i = 0; i < nitems(hs); i++) {
		if (!uv_is_closing(hs[i]))
			uv_close(hs[i], pl_handle_closed);
	}
}

/* Reports the end of the child to the agent once it has exited and its
 * stdout has ended (or the drain time has passed). */
static void
pl_maybe_finish(struct process_link *pl, bool force)
{
	if (pl->finished || !pl->exited || (!pl->out_eof && !force))
		return;
	pl->finished = true;
	/* Anything the agent left running in its process group goes too. */
	if (pl->pid > 0)
		kill(-pl->pid, SIGKILL);
	struct agent *a = pl->agent;
	pl->agent = NULL;
	pl_close(pl);
	if (a != NULL) {
		a->proc = NULL;
		struct agent_exit ex = {
		    .exited = true,
		    .status = pl->exit_status,
		    .signal = pl->term_signal,
		    .why = pl->term_signal ? "killed" : "exited",
		};
		agent_link_closed(a, &ex);
	}
}

static void
pl_on_drain(uv_timer_t *t)
{
	pl_maybe_finish(t->data, true);
}

static void pl_update_reading(struct process_link *pl);

static void
pl_on_exit(uv_process_t *p, int64_t status, int sig)
{
	struct process_link *pl = p->data;
	pl->exited = true;
	pl->exit_status = status;
	pl->term_signal = sig;
	pl_update_reading(pl); /* (what it wrote is read, throttled or not) */
	if (!pl->out_eof)
		uv_timer_start(&pl->drain, pl_on_drain, SPAWN_DRAIN_MS, 0);
	pl_maybe_finish(pl, false);
}

static void
pl_alloc_out(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	b->base = spawn_rbuf;
	b->len = sizeof spawn_rbuf;
}

static void
pl_alloc_err(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	b->base = spawn_ebuf;
	b->len = sizeof spawn_ebuf;
}

static void
pl_on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct process_link *pl = s->data;
	if (n < 0) {
		uv_read_stop(s);
		pl->reading = false;
		pl->out_eof = true;
		pl_maybe_finish(pl, false);
		return;
	}
	if (n > 0 && pl->agent != NULL)
		agent_link_input(pl->agent, b->base, (size_t)n);
}

/* A stderr line becomes a log record of the agent. */
static void
pl_on_err_line(void *arg, const char *line, size_t len)
{
	struct process_link *pl = arg;
	if (pl->agent == NULL || len == 0)
		return;
	log_emit(orch_log(pl->agent->orch), LVL_INFO, pl->agent->name,
	         json_pack("{s:s}", "stream", "stderr"), "%.*s", (int)len, line);
}

static void
pl_on_err_overflow(void *arg, size_t len)
{
	struct process_link *pl = arg;
	if (pl->agent != NULL)
		log_warn(orch_log(pl->agent->orch), pl->agent->name,
		         "stderr line longer than %zu bytes dropped", pl->errf.max_line);
}

static void
pl_on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct process_link *pl = s->data;
	if (n < 0) {
		uv_read_stop(s);
		return;
	}
	proto_framer_feed(&pl->errf, b->base, (size_t)n);
}

/* Starts or stops reading stdout per the agent's wish and the queue. */
static void
pl_update_reading(struct process_link *pl)
{
	if (pl->out_eof || uv_is_closing((uv_handle_t *)&pl->out))
		return;
	size_t q = outq_unowed(&pl->outq, uv_stream_get_write_queue_size((uv_stream_t *)&pl->in) +
	                                      pl->pending.len);
	/* Once the child has exited, what it wrote is read whatever else
	 * holds reading back (it is drained before the link ends). */
	bool on = pl->exited ||
	          (pl->want_reading && (pl->reading ? q < SPAWN_HIGH_WATER : q < SPAWN_LOW_WATER));
	if (on && !pl->reading)
		uv_read_start((uv_stream_t *)&pl->out, pl_alloc_out, pl_on_out);
	else if (!on && pl->reading)
		uv_read_stop((uv_stream_t *)&pl->out);
	pl->reading = on;
}

static void pl_write_pending(struct process_link *pl);

static void
pl_write_done(uv_write_t *req, int status)
{
	struct spawn_write *w = (struct spawn_write *)req;
	struct process_link *pl = w->pl;
	if (w->out.cap > 0 && w->out.cap <= PL_SPARE_MAX && pl->spare.cap == 0) {
		w->out.len = 0;
		pl->spare = w->out;
	} else {
		buf_free(&w->out);
	}
	free(w);
	pl->writing = false;
	if (status == 0)
		pl_write_pending(pl);
	else
		buf_free(&pl->pending);
	if (pl->agent != NULL)
		pl_update_reading(pl);
}

/* Starts one write of everything that accumulated while the previous write
 * was in flight or since the first line of this turn: under load, many
 * lines cost one system call.  Nothing while a write is in flight (its
 * completion calls this again), nothing once the child is gone.  The write
 * takes the pending buffer itself, and the spare (the one written before)
 * takes its place: copying it was 2-3% of the loop's instructions under
 * a message flood (about 100 KB per write). */
static void
pl_write_pending(struct process_link *pl)
{
	if (pl->writing || pl->pending.len == 0 || pl->exited ||
	    uv_is_closing((uv_handle_t *)&pl->in))
		return;
	struct spawn_write *w = xmalloc(sizeof *w);
	w->pl = pl;
	w->out = pl->pending;
	w->len = w->out.len;
	pl->pending = pl->spare;
	buf_init(&pl->spare);
	uv_buf_t b = uv_buf_init(w->out.data, (unsigned)w->len);
	if (uv_write(&w->req, (uv_stream_t *)&pl->in, &b, 1, pl_write_done) != 0) {
		buf_free(&w->out);
		free(w);
		return;
	}
	pl->writing = true;
}

/* The end of a loop turn in which lines were sent: what the turn added
 * after the first goes out in one write. */
static void
pl_on_flush(uv_prepare_t *h)
{
	struct process_link *pl = h->data;
	uv_prepare_stop(h);
	pl->burst = false;
	pl_write_pending(pl);
}

static int
pl_send(struct agent *a, const char *line, size_t len, bool owed)
{
	struct process_link *pl = a->proc;
	if (pl == NULL || pl->exited || uv_is_closing((uv_handle_t *)&pl->in))
		return -1;
	outq_push(&pl->outq, len, owed); /* (what goes out at once is counted out) */
	uv_stream_t *s = (uv_stream_t *)&pl->in;
	size_t off = 0;
	if (pl->writing || pl->burst) {
		/* Joins the next write: when the current one completes, or at
		 * the end of this turn.  The first line of a turn goes at once
		 * (no added latency); the `sent` replies of a group commit, or
		 * a burst of deliveries, then cost two system calls, not one
		 * per line. */
		buf_add(&pl->pending, line, len);
		/* A write that never completes (the agent reads nothing) would
		 * not weigh the queue again: weigh it here once it is large. */
		if (pl->reading && pl->pending.len >= SPAWN_HIGH_WATER)
			pl_update_reading(pl);
		return 0;
	}
	pl->burst = true;
	uv_prepare_start(&pl->flush, pl_on_flush);
	/* Write at once when nothing is queued: no allocation in the usual case. */
	if (uv_stream_get_write_queue_size(s) == 0) {
		uv_buf_t b = uv_buf_init((char *)line, (unsigned)len);
		int n = uv_try_write(s, &b, 1);
		if (n == (int)len)
			return 0;
		if (n > 0)
			off = (size_t)n;
		else if (n != UV_EAGAIN && n != UV_ENOSYS)
			return -1;
	}
	struct spawn_write *w = xmalloc(sizeof *w + len - off);
	w->pl = pl;
	buf_init(&w->out);
	w->len = len - off;
	memcpy(w->data, line + off, len - off);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
	if (uv_write(&w->req, s, &b, 1, pl_write_done) != 0) {
		free(w);
		return -1;
	}
	pl->writing = true;
	pl_update_reading(pl);
	return 0;
}

static size_t
pl_queued(struct agent *a)
{
	struct process_link *pl = a->proc;
	return pl ? uv_stream_get_write_queue_size((uv_stream_t *)&pl->in) + pl->pending.len : 0;
}

static void
pl_set_reading(struct agent *a, bool on)
{
	struct process_link *pl = a->proc;
	if (pl == NULL)
		return;
	pl->want_reading = on;
	pl_update_reading(pl);
}

static const struct agent_link_ops process_ops = {
    .kind = "process",
    .send = pl_send,
    .queued = pl_queued,
    .set_reading = pl_set_reading,
};

/* Builds the child's environment: ours, the agent's env, and DREAMOS_*.
 * Returns a NULL-terminated array; free with free_env. */
static char **
build_env(struct agent *a)
{
	size_t n = 0;
	while (environ[n] != NULL)
		n++;
	char **env = xcalloc(n + a->cfg.nenv + 8, sizeof(char *));
	size_t k = 0;
	static const char *const ours[] = {"DREAMOS_AGENT_NAME=", "DREAMOS_HEARTBEAT_INTERVAL=",
	                                   "DREAMOS_RUNTIME=", "DREAMOS_SESSION="};
	for (size_t i = 0; i < n; i++) {
		bool skip = false;
		for (size_t j = 0; j < nitems(ours) && !skip; j++)
			skip = strncmp(environ[i], ours[j], strlen(ours[j])) == 0;
		for (size_t j = 0; j < a->cfg.nenv && !skip; j++) {
			size_t kl = strcspn(a->cfg.env[j], "=");
			skip = strncmp(environ[i], a->cfg.env[j], kl + 1) == 0;
		}
		if (!skip)
			env[k++] = xstrdup(environ[i]);
	}
	for (size_t j = 0; j < a->cfg.nenv; j++)
		env[k++] = xstrdup(a->cfg.env[j]);
	env[k++] = xasprintf("DREAMOS_AGENT_NAME=%s", a->name);
	double hb = a->cfg.heartbeat_timeout > 0 ? a->cfg.heartbeat_timeout / 3.0 : 10.0;
	env[k++] = xasprintf("DREAMOS_HEARTBEAT_INTERVAL=%.3f", hb);
	env[k++] = xasprintf("DREAMOS_RUNTIME=%s", orch_runtime(a->orch));
	env[k] = NULL;
	return env;
}

static void
free_env(char **env)
{
	for (size_t i = 0; env[i] != NULL; i++)
		free(env[i]);
	free(env);
}

/* 0 if path is an executable regular file, else why not (an errno). */
static int
program_error(const char *path)
{
	struct stat sb;
	if (stat(path, &sb) != 0)
		return errno;
	if (S_ISDIR(sb.st_mode))
		return EISDIR;
	if (!S_ISREG(sb.st_mode))
		return EACCES;
	return access(path, X_OK) == 0 ? 0 : errno;
}

int
spawn_check_program(const struct agent_cfg *cfg, const char *cwd, char **cause)
{
	const char *prog = cfg->command;
	if (cfg->cwd != NULL)
		cwd = cfg->cwd;
	if (strchr(prog, '/') != NULL) {
		char *path = prog[0] == '/' ? xstrdup(prog) : xasprintf("%s/%s", cwd, prog);
		int err = program_error(path);
		free(path);
		if (err != 0)
			*cause = xasprintf("cannot run '%s': %s", prog, strerror(err));
		return err != 0 ? -1 : 0;
	}
	const char *search = getenv("PATH");
	for (size_t i = 0; i < cfg->nenv; i++)
		if (strncmp(cfg->env[i], "PATH=", 5) == 0)
			search = cfg->env[i] + 5;
	if (search == NULL)
		search = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = search;; p += strcspn(p, ":") + 1) {
		size_t n = strcspn(p, ":");
		/* An empty PATH entry is the working directory. */
		char *path =
		    n == 0 ? xasprintf("%s/%s", cwd, prog) : xasprintf("%.*s/%s", (int)n, p, prog);
		int err = program_error(path);
		free(path);
		if (err == 0)
			return 0;
		if (p[n] == '\0')
			break;
	}
	*cause = xasprintf("cannot run '%s': not found on the PATH", prog);
	return -1;
}

int
spawn_process(struct agent *a, char **cause)
{
	uv_loop_t *loop = orch_loop(a->orch);
	struct process_link *pl = xcalloc(1, sizeof *pl);
	pl->agent = a;
	pl->want_reading = true;
	uv_pipe_init(loop, &pl->in, 0);
	uv_pipe_init(loop, &pl->out, 0);
	uv_pipe_init(loop, &pl->err, 0);
	uv_timer_init(loop, &pl->drain);
	uv_prepare_init(loop, &pl->flush);
	pl->in.data = pl->out.data = pl->err.data = pl->drain.data = pl->proc.data = pl;
	pl->flush.data = pl;
	pl->open = 5;
	proto_framer_init(&pl->errf, 16384, pl_on_err_line, pl_on_err_overflow, pl);

	char **args = xcalloc(a->cfg.nargs + 2, sizeof(char *));
	args[0] = a->cfg.command;
	for (size_t i = 0; i < a->cfg.nargs; i++)
		args[i + 1] = a->cfg.args[i];
	char **env = build_env(a);
	uv_stdio_container_t stdio[3] = {
	    {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&pl->in},
	    {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&pl->out},
	    {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&pl->err},
	};
	uv_process_options_t opts = {
	    .exit_cb = pl_on_exit,
	    .file = a->cfg.command,
	    .args = args,
	    .env = env,
	    .cwd = a->cfg.cwd ? a->cfg.cwd : orch_runtime(a->orch),
	    /* Its own session and process group, so signals reach its
	     * children and a Ctrl-C at the terminal does not. */
	    .flags = UV_PROCESS_DETACHED,
	    .stdio_count = 3,
	    .stdio = stdio,
	};
	const char *cwd = opts.cwd;
	int rc = access(cwd, X_OK) == 0 ? uv_spawn(loop, &pl->proc, &opts) : UV_ENOENT;
	if (rc == UV_ENOENT && access(cwd, X_OK) != 0) {
		*cause = xasprintf("cannot start '%s': working directory %s: %s", a->cfg.command,
		                   cwd, strerror(errno));
		free(args);
		free_env(env);
		pl->agent = NULL;
		pl->open = 5;
		/* The process handle was never initialised: close the rest. */
		uv_close((uv_handle_t *)&pl->in, pl_handle_closed);
		uv_close((uv_handle_t *)&pl->out, pl_handle_closed);
		uv_close((uv_handle_t *)&pl->err, pl_handle_closed);
		uv_close((uv_handle_t *)&pl->drain, pl_handle_closed);
		uv_close((uv_handle_t *)&pl->flush, pl_handle_closed);
		return -1;
	}
	free(args);
	free_env(env);
	if (rc != 0) {
		*cause = xasprintf("cannot start '%s': %s", a->cfg.command, uv_strerror(rc));
		pl->agent = NULL;
		/* uv_spawn leaves the process handle initialised on failure. */
		pl->open = 6;
		pl_close(pl);
		return -1;
	}
	pl->open = 6;
	pl->pid = pl->proc.pid;
	a->pid = pl->proc.pid;
	a->proc = pl;
	a->link_ops = &process_ops;
	uv_read_start((uv_stream_t *)&pl->out, pl_alloc_out, pl_on_out);
	pl->reading = true;
	uv_read_start((uv_stream_t *)&pl->err, pl_alloc_err, pl_on_err);
	return 0;
}

int
spawn_signal(struct agent *a, int sig)
{
	struct process_link *pl = a->proc;
	if (pl == NULL || pl->exited || pl->pid <= 0)
		return -1;
	pl_write_pending(pl); /* what this turn said to it (a stop command) first */
	if (kill(-pl->pid, sig) != 0 && kill(pl->pid, sig) != 0)
		return -1;
	return 0;
}

void
spawn_abandon(struct agent *a)
{
	struct process_link *pl = a->proc;
	if (pl == NULL)
		return;
	if (!pl->exited && pl->pid > 0)
		kill(-pl->pid, SIGKILL);
	pl->agent = NULL;
	pl->finished = true;
	a->proc = NULL;
	a->link_ops = NULL;
	pl_close(pl);
}
