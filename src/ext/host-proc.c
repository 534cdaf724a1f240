/* host-proc.c — child processes owned by extensions (proc_spawn,
 * proc_write, proc_kill): uv_spawn with extra socket pairs on fds 3..,
 * output handed to the extension, killed and swept on unload.
 *
 * Each child runs in its own session and process group (signals go to the
 * group, so its own children get them too).  Its output is read from
 * stdout, stderr and every extra pipe and given to the extension's data
 * callback straight from the read callback (the top of the loop, like
 * timers); the exit callback runs once the child has exited and every pipe
 * it writes to has reached end of file (or, if something it left behind
 * holds a pipe open, PROC_DRAIN_MS after its exit).  When the child exits,
 * whatever is left in its process group is killed.
 *
 * The sweep (unload) forgets every process of the extension at once: no
 * callback into it runs afterwards.  A process still running gets SIGTERM
 * and, kill_after_s later, SIGKILL (or SIGKILL at once); the host keeps
 * its handles until it has exited and closes them from callbacks of its
 * own, so nothing of the (dlclose'd) extension is needed. */
#include "build-config.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ext-int.h"
#include "orch.h"
#include "util.h"

extern char **environ;

#define PROC_MAX_EXTRA 4
#define PROC_NPIPES    (3 + PROC_MAX_EXTRA)
/* After the child exits, how long its pipes may stay open. */
#define PROC_DRAIN_MS 1000
/* One read's buffer (per process: reads of one process never nest). */
#define PROC_RBUF 65536
/* proc_write refuses more than this queued towards one child. */
#define PROC_MAX_QUEUED ((size_t)64 * 1024 * 1024)

struct ext_proc {
	struct dreamos_ext *ext; /* NULL once swept: no callback any more */
	uint64_t id;
	pid_t pid;
	uv_process_t proc;
	uv_pipe_t pipes[PROC_NPIPES]; /* 0 stdin, 1 stdout, 2 stderr, 3.. extra */
	bool has[PROC_NPIPES];        /* the pipe exists */
	bool eof[PROC_NPIPES];        /* end of file read (or not read: stdin) */
	bool shut[PROC_NPIPES];       /* our side shut down for writing */
	int npipes;
	uv_timer_t timer; /* drain after the exit; SIGKILL after the sweep's SIGTERM */
	int open;         /* handles not closed yet */
	bool exited;      /* exit callback of libuv seen */
	bool finished;    /* the end handled (exit callback given, or swept) */
	bool closing;     /* handles being closed */
	int64_t status;
	int signum;
	uint64_t kill_ms; /* sweep: SIGTERM, then SIGKILL this much later; 0: SIGKILL */
	dreamos_proc_data_fn data;
	dreamos_proc_exit_fn exit_fn;
	void *arg;
	char *rbuf;
	struct ext_proc *next;
};

/* A write in flight: the data is copied. */
struct proc_write {
	uv_write_t req;
	char data[];
};

/* ---- handles ------------------------------------------------------------ */

static void
proc_handle_closed(uv_handle_t *h)
{
	struct ext_proc *p = h->data;
	if (--p->open == 0) {
		free(p->rbuf);
		free(p);
	}
}

static void
proc_close_handle(struct ext_proc *p, uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, proc_handle_closed);
}

/* Closes the pipes (reads stop; writes in flight are cancelled). */
static void
proc_close_pipes(struct ext_proc *p)
{
	for (int i = 0; i < p->npipes; i++)
		if (p->has[i])
			proc_close_handle(p, (uv_handle_t *)&p->pipes[i]);
}

/* Closes every handle; p frees itself once the last one is closed. */
static void
proc_close_all(struct ext_proc *p)
{
	p->closing = true;
	proc_close_pipes(p);
	proc_close_handle(p, (uv_handle_t *)&p->timer);
	proc_close_handle(p, (uv_handle_t *)&p->proc);
}

/* Sends sig to the child's process group (or to the child alone if the
 * group is gone already). */
static int
proc_signal(struct ext_proc *p, int sig)
{
	if (p->pid <= 0)
		return -1;
	if (kill(-p->pid, sig) == 0 || kill(p->pid, sig) == 0)
		return 0;
	return -1;
}

/* Takes p out of its extension's list. */
static void
proc_unlink(struct ext_proc *p)
{
	struct dreamos_ext *x = p->ext;
	if (x == NULL)
		return;
	for (struct ext_proc **pp = &x->procs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			x->nprocs--;
			break;
		}
	}
	p->next = NULL;
}

/* ---- the end of a child ---------------------------------------------------- */

/* Reports the end once the child has exited and its output has ended (or
 * force: the drain time passed). */
static void
proc_maybe_finish(struct ext_proc *p, bool force)
{
	if (p->finished || !p->exited)
		return;
	for (int i = 0; i < p->npipes && !force; i++)
		if (p->has[i] && !p->eof[i])
			return;
	p->finished = true;
	struct dreamos_ext *x = p->ext;
	proc_unlink(p);
	p->ext = NULL;
	proc_close_all(p);
	if (x != NULL && p->exit_fn != NULL)
		p->exit_fn(x, p->arg, p->id, p->signum ? -1 : (int)p->status, p->signum);
}

static void
proc_on_drain(uv_timer_t *t)
{
	proc_maybe_finish(t->data, true);
}

static void
proc_on_kill_timer(uv_timer_t *t)
{
	struct ext_proc *p = t->data;
	if (!p->exited)
		proc_signal(p, SIGKILL);
}

static void
proc_on_exit(uv_process_t *h, int64_t status, int sig)
{
	struct ext_proc *p = h->data;
	p->exited = true;
	p->status = status;
	p->signum = sig;
	/* Whatever it left in its group goes too: the pipes then end. */
	kill(-p->pid, SIGKILL);
	uv_timer_stop(&p->timer);
	if (p->ext == NULL) {
		/* Swept: nobody to tell. */
		p->finished = true;
		proc_close_all(p);
		return;
	}
	uv_timer_start(&p->timer, proc_on_drain, PROC_DRAIN_MS, 0);
	proc_maybe_finish(p, false);
}

/* ---- reading ---------------------------------------------------------------- */

static void
proc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct ext_proc *p = h->data;
	(void)suggested;
	b->base = p->rbuf;
	b->len = PROC_RBUF;
}

static void
proc_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct ext_proc *p = s->data;
	int fd = (int)((uv_pipe_t *)s - p->pipes);
	if (n == 0)
		return;
	if (n < 0) {
		uv_read_stop(s);
		p->eof[fd] = true;
		if (p->ext != NULL && p->data != NULL)
			p->data(p->ext, p->arg, p->id, fd, "", 0);
		proc_maybe_finish(p, false);
		return;
	}
	if (p->ext != NULL && p->data != NULL)
		p->data(p->ext, p->arg, p->id, fd, b->base, (size_t)n);
}

/* ---- spawning ------------------------------------------------------------------ */

/* The child's environment: ours without the names env sets, then env.
 * NULL-terminated; free each string and the array. */
static char **
proc_env(const char *const *env)
{
	size_t n = 0, m = 0;
	while (environ[n] != NULL)
		n++;
	while (env != NULL && env[m] != NULL)
		m++;
	char **out = xcalloc(n + m + 1, sizeof *out);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		bool skip = false;
		for (size_t j = 0; j < m && !skip; j++) {
			size_t kl = strcspn(env[j], "=");
			skip = strncmp(environ[i], env[j], kl + 1) == 0;
		}
		if (!skip)
			out[k++] = xstrdup(environ[i]);
	}
	for (size_t j = 0; j < m; j++)
		out[k++] = xstrdup(env[j]);
	return out;
}

static void
proc_env_free(char **env)
{
	for (size_t i = 0; env[i] != NULL; i++)
		free(env[i]);
	free(env);
}

/* Copies the spec (size 0: this layout; a larger one is cut). */
static bool
proc_spec_copy(struct dreamos_ext *x, struct dreamos_proc_spec *dst,
               const struct dreamos_proc_spec *src)
{
	memset(dst, 0, sizeof *dst);
	if (src == NULL) {
		ext_set_error(x, "proc_spawn: no spec");
		return false;
	}
	size_t n = src->size == 0 ? sizeof *dst : src->size;
	if (n < sizeof(size_t)) {
		ext_set_error(x, "proc_spawn: spec size %zu is too small", src->size);
		return false;
	}
	memcpy(dst, src, n < sizeof *dst ? n : sizeof *dst);
	return true;
}

uint64_t
ext_proc_spawn(struct dreamos_ext *x, const struct dreamos_proc_spec *in, dreamos_proc_data_fn data,
               dreamos_proc_exit_fn exited, void *arg)
{
	struct dreamos_proc_spec spec;
	if (!proc_spec_copy(x, &spec, in))
		return 0;
	if (x->state == EXT_UNLOADING) {
		ext_set_error(x, "proc_spawn: the extension is being unloaded");
		return 0;
	}
	if (spec.file == NULL || *spec.file == '\0' || spec.argv == NULL || spec.argv[0] == NULL) {
		ext_set_error(x, "proc_spawn: no file or no argv[0]");
		return 0;
	}
	if (spec.extra_pipes < 0 || spec.extra_pipes > PROC_MAX_EXTRA) {
		ext_set_error(x, "proc_spawn: extra_pipes must be 0 to %d, not %d", PROC_MAX_EXTRA,
		              spec.extra_pipes);
		return 0;
	}
	if (!(spec.kill_after_s >= 0) || !isfinite(spec.kill_after_s)) {
		ext_set_error(x, "proc_spawn: kill_after_s must be 0 or more");
		return 0;
	}
	for (const char *const *e = spec.env; e != NULL && *e != NULL; e++) {
		if (strchr(*e, '=') == NULL || **e == '=') {
			ext_set_error(x, "proc_spawn: environment entry '%s' is not NAME=value",
			              *e);
			return 0;
		}
	}
	if (spec.cwd != NULL && access(spec.cwd, X_OK) != 0) {
		ext_set_error(x, "proc_spawn: cannot start '%s': working directory %s: %s",
		              spec.file, spec.cwd, strerror(errno));
		return 0;
	}

	uv_loop_t *loop = orch_loop(x->es->o);
	struct ext_proc *p = xcalloc(1, sizeof *p);
	p->ext = x;
	p->data = data;
	p->exit_fn = exited;
	p->arg = arg;
	p->npipes = 3 + spec.extra_pipes;
	p->rbuf = xmalloc(PROC_RBUF);
	uv_stdio_container_t stdio[PROC_NPIPES];
	for (int i = 0; i < p->npipes; i++) {
		uv_pipe_init(loop, &p->pipes[i], 0);
		p->pipes[i].data = p;
		p->has[i] = true;
		int flags = UV_CREATE_PIPE;
		if (i == 0)
			flags |= UV_READABLE_PIPE; /* the child reads its stdin */
		else if (i < 3)
			flags |= UV_WRITABLE_PIPE;
		else
			flags |= UV_READABLE_PIPE | UV_WRITABLE_PIPE; /* a socket pair */
		stdio[i].flags = (uv_stdio_flags)flags;
		stdio[i].data.stream = (uv_stream_t *)&p->pipes[i];
	}
	p->eof[0] = true; /* never read */
	uv_timer_init(loop, &p->timer);
	p->timer.data = p;
	p->proc.data = p;
	p->open = p->npipes + 1;
	p->kill_ms = (uint64_t)llround(spec.kill_after_s * 1000.0);

	char **env = proc_env(spec.env);
	uv_process_options_t opts = {
	    .exit_cb = proc_on_exit,
	    .file = spec.file,
	    .args = (char **)(uintptr_t)spec.argv,
	    .env = env,
	    .cwd = spec.cwd,
	    /* Its own session and process group. */
	    .flags = UV_PROCESS_DETACHED,
	    .stdio_count = p->npipes,
	    .stdio = stdio,
	};
	int rc = uv_spawn(loop, &p->proc, &opts);
	proc_env_free(env);
	/* uv_spawn initialises the process handle even when it fails. */
	p->open++;
	if (rc != 0) {
		ext_set_error(x, "proc_spawn: cannot start '%s': %s", spec.file, uv_strerror(rc));
		p->ext = NULL;
		p->finished = true;
		proc_close_all(p);
		return 0;
	}
	p->pid = p->proc.pid;
	p->id = ++x->es->next_id;
	for (int i = 1; i < p->npipes; i++)
		uv_read_start((uv_stream_t *)&p->pipes[i], proc_alloc, proc_on_read);
	p->next = x->procs;
	x->procs = p;
	x->nprocs++;
	return p->id;
}

/* ---- writing, signals ----------------------------------------------------------- */

static struct ext_proc *
proc_find(struct dreamos_ext *x, uint64_t id, const char *what)
{
	for (struct ext_proc *p = x->procs; p != NULL; p = p->next)
		if (p->id == id)
			return p;
	ext_set_error(x, "%s: no process %llu of this extension", what, (unsigned long long)id);
	return NULL;
}

static void
proc_write_done(uv_write_t *req, int status)
{
	(void)status;
	free(req);
}

static void
proc_shutdown_done(uv_shutdown_t *req, int status)
{
	(void)status;
	free(req);
}

int
ext_proc_write(struct dreamos_ext *x, uint64_t id, int fd, const char *data, size_t len)
{
	struct ext_proc *p = proc_find(x, id, "proc_write");
	if (p == NULL)
		return -1;
	if (fd != 0 && (fd < 3 || fd >= p->npipes)) {
		ext_set_error(x,
		              "proc_write: process %llu has no fd %d to write to (0, or 3 to %d)",
		              (unsigned long long)id, fd, p->npipes - 1);
		return -1;
	}
	if (p->exited || p->closing) {
		ext_set_error(x, "proc_write: process %llu has exited", (unsigned long long)id);
		return -1;
	}
	if (p->shut[fd]) {
		ext_set_error(x, "proc_write: fd %d of process %llu is closed", fd,
		              (unsigned long long)id);
		return -1;
	}
	uv_stream_t *s = (uv_stream_t *)&p->pipes[fd];
	if (len == 0) {
		/* End of file for the child, after what is queued. */
		uv_shutdown_t *req = xmalloc(sizeof *req);
		int rc = uv_shutdown(req, s, proc_shutdown_done);
		if (rc != 0) {
			free(req);
			ext_set_error(x, "proc_write: fd %d: %s", fd, uv_strerror(rc));
			return -1;
		}
		p->shut[fd] = true;
		return 0;
	}
	if (data == NULL) {
		ext_set_error(x, "proc_write: no data");
		return -1;
	}
	size_t queued = uv_stream_get_write_queue_size(s);
	if (queued + len > PROC_MAX_QUEUED) {
		ext_set_error(x,
		              "proc_write: %zu bytes already queued to fd %d of process %llu (it "
		              "does not read)",
		              queued, fd, (unsigned long long)id);
		return -1;
	}
	size_t off = 0;
	if (queued == 0) {
		/* Written at once when possible: a write just before an unload
		 * (a last "quit" command) still reaches the child. */
		uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
		int n = uv_try_write(s, &b, 1);
		if (n == (int)len)
			return 0;
		if (n > 0)
			off = (size_t)n;
		else if (n != UV_EAGAIN && n != UV_ENOSYS) {
			ext_set_error(x, "proc_write: fd %d of process %llu: %s", fd,
			              (unsigned long long)id, uv_strerror(n));
			return -1;
		}
	}
	struct proc_write *w = xmalloc(sizeof *w + (len - off));
	memcpy(w->data, data + off, len - off);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)(len - off));
	int rc = uv_write(&w->req, s, &b, 1, proc_write_done);
	if (rc != 0) {
		free(w);
		ext_set_error(x, "proc_write: fd %d of process %llu: %s", fd,
		              (unsigned long long)id, uv_strerror(rc));
		return -1;
	}
	return 0;
}

int
ext_proc_kill(struct dreamos_ext *x, uint64_t id, int signum)
{
	struct ext_proc *p = proc_find(x, id, "proc_kill");
	if (p == NULL)
		return -1;
	if (signum < 0 || signum >= 65) {
		ext_set_error(x, "proc_kill: bad signal %d", signum);
		return -1;
	}
	if (p->exited) {
		ext_set_error(x, "proc_kill: process %llu has exited", (unsigned long long)id);
		return -1;
	}
	if (proc_signal(p, signum) != 0) {
		ext_set_error(x, "proc_kill: process %llu (pid %ld): %s", (unsigned long long)id,
		              (long)p->pid, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- the sweep ------------------------------------------------------------------ */

size_t
ext_procs_sweep(struct dreamos_ext *x)
{
	size_t n = x->nprocs;
	while (x->procs != NULL) {
		struct ext_proc *p = x->procs;
		x->procs = p->next;
		p->next = NULL;
		p->ext = NULL;
		if (p->exited) {
			/* Exited, output draining: done. */
			p->finished = true;
			proc_close_all(p);
			continue;
		}
		/* The pipes close now: the child sees end of file, and no
		 * output of it is read any more. */
		proc_close_pipes(p);
		if (p->kill_ms > 0 && proc_signal(p, SIGTERM) == 0) {
			uv_timer_stop(&p->timer);
			uv_timer_start(&p->timer, proc_on_kill_timer, p->kill_ms, 0);
		} else {
			proc_signal(p, SIGKILL);
		}
	}
	x->nprocs = 0;
	return n;
}
