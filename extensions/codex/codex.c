/* codex.c — the Codex bridge: code changes by an OpenAI-compatible model,
 * applied with git and verified by a check command.
 *
 *   codex run --workspace DIR [--check CMD] [--attempts N] [--review]
 *             [--in-place] [--file F]... INSTRUCTION...
 *   codex spawn NAME [--cap C]...   codex status
 *   agent type "codex" (capability "code"): a task's payload
 *       {"workspace", "instruction", "check"?, "attempts"?, "review"?,
 *        "in_place"?, "files"?} is run like `codex run`.
 *
 * A job: `git worktree add -b codex/ID RUNTIME/extensions/codex/work/ID
 * HEAD` (the user's checkout is never touched unless --in-place), the
 * tracked text files (or --file) go into the prompt, the model answers a
 * unified diff, `git apply --check` then `git apply`, the check runs; on
 * failure the diff is reverted (`git apply -R`) and the diff with the check
 * output goes back to the model, up to N attempts.  A pass is committed on
 * the branch.  --review: a second call that answers {"valid", "feedback",
 * "suggestions"}.
 *
 * The ABI has no process call: every git and check command is a child
 * (fork + execve of /bin/sh, its own process group) whose stdin/stdout are
 * non-blocking pipes, polled from a host timer; nothing here waits.
 * The model is called like the chatgpt extension does (chat completions
 * through host->http_request, key from the environment, never shown). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <dreamos/extension.h>

#define CODEX_VERSION "1.0"
#define TYPE_NAME     "codex"
#define OUT_MAX       (256 * 1024) /* output kept of a child */
#define FEEDBACK_MAX  8000         /* check output sent back to the model */

extern char **environ;

static const struct dreamos_host *host;
static struct dreamos_ext *self;

static struct {
	char *base_url, *key_env, *model, *work_dir;
	double timeout_s, check_timeout_s;
	int retries, attempts;
	long max_file, max_context;
} cfg;
static char *api_key;

/* ---- helpers ------------------------------------------------------------- */

#include "../common/helpers.h"

static void
sadd(char **s, size_t *len, const char *t, size_t tl)
{
	*s = realloc(*s, *len + tl + 1);
	memcpy(*s + *len, t, tl);
	*len += tl;
	(*s)[*len] = '\0';
}

/* The tail of s, at most max bytes (for feedback and results). */
static char *
tail(const char *s, size_t max)
{
	size_t l = s ? strlen(s) : 0;
	if (l <= max)
		return strdup(s ? s : "");
	return fmt("[... %zu bytes left out ...]\n%s", l - max, s + l - max);
}

/* ---- children: /bin/sh -c SCRIPT, polled from a timer --------------------- */

struct job;
typedef void (*proc_done_fn)(struct job *j, int status, char *out);

struct proc {
	pid_t pid;
	int out, in; /* -1 when closed */
	char *inbuf;
	size_t inlen, inoff;
	char *buf;
	size_t len;
	bool eof, exited, killed;
	int status;
	double deadline, timeout_s; /* timeout_s: for the report when killed */
	uint64_t timer;
	proc_done_fn done;
};

static void
proc_close(struct proc *p)
{
	if (p->timer)
		host->timer_remove(self, p->timer);
	p->timer = 0;
	if (p->out >= 0)
		close(p->out);
	if (p->in >= 0)
		close(p->in);
	p->out = p->in = -1;
	if (p->pid > 0 && !p->exited) {
		kill(-p->pid, SIGKILL);
		waitpid(p->pid, NULL, WNOHANG); /* reaped later if not yet */
	}
	p->pid = 0;
	free(p->inbuf);
	free(p->buf);
	p->inbuf = p->buf = NULL;
	p->len = p->inlen = p->inoff = 0;
}

static void proc_tick(struct dreamos_ext *ext, void *arg);

/* Runs script in dir with the NULL-terminated "NAME=value" vars added to the
 * environment, input (or NULL) on its stdin, stdout and stderr together. */
static int
proc_start(struct job *j, struct proc *p, const char *dir, const char *script,
           const char *const *vars, const char *input, double timeout_s, proc_done_fn done,
           char **why)
{
	int po[2], pi[2];
	if (pipe2(po, O_CLOEXEC) != 0) {
		*why = fmt("pipe: %s", strerror(errno));
		return -1;
	}
	if (pipe2(pi, O_CLOEXEC) != 0) {
		*why = fmt("pipe: %s", strerror(errno));
		close(po[0]);
		close(po[1]);
		return -1;
	}
	/* Everything the child needs is built before fork (another thread may
	 * hold malloc's lock). */
	size_t ne = 0, nv = 0;
	while (environ[ne])
		ne++;
	while (vars[nv])
		nv++;
	char **envp = calloc(ne + nv + 1, sizeof *envp);
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "CODEX_", 6) != 0 &&
		    strncmp(environ[i], "GIT_DIR=", 8) != 0 &&
		    strncmp(environ[i], "GIT_WORK_TREE=", 14) != 0)
			envp[k++] = environ[i];
	for (size_t i = 0; i < nv; i++)
		envp[k++] = (char *)vars[i];
	char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
	pid_t pid = fork();
	if (pid < 0) {
		*why = fmt("fork: %s", strerror(errno));
		free(envp);
		close(po[0]), close(po[1]), close(pi[0]), close(pi[1]);
		return -1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL); /* dreamos ignores it; its children should not */
		dup2(pi[0], 0);
		dup2(po[1], 1);
		dup2(po[1], 2);
		if (chdir(dir) != 0)
			_exit(126);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	setpgid(pid, pid);
	free(envp);
	close(po[1]);
	close(pi[0]);
	fcntl(po[0], F_SETFL, fcntl(po[0], F_GETFL) | O_NONBLOCK);
	fcntl(pi[1], F_SETFL, fcntl(pi[1], F_GETFL) | O_NONBLOCK);
	memset(p, 0, sizeof *p);
	p->pid = pid;
	p->out = po[0];
	p->in = pi[1];
	if (input != NULL && *input) {
		p->inbuf = strdup(input);
		p->inlen = strlen(input);
	} else {
		close(p->in);
		p->in = -1;
	}
	p->timeout_s = timeout_s;
	p->deadline = timeout_s > 0 ? now_s() + timeout_s : 0;
	p->done = done;
	p->timer = host->timer_add(self, 10, 20, proc_tick, j);
	return 0;
}

static struct proc *job_proc(struct job *j);

static void
proc_tick(struct dreamos_ext *ext, void *arg)
{
	struct job *j = arg;
	struct proc *p = job_proc(j);
	if (p->in >= 0) {
		while (p->inoff < p->inlen) {
			ssize_t n = write(p->in, p->inbuf + p->inoff, p->inlen - p->inoff);
			if (n <= 0)
				break;
			p->inoff += (size_t)n;
		}
		if (p->inoff >= p->inlen || (errno != EAGAIN && errno != EINTR)) {
			close(p->in);
			p->in = -1;
		}
	}
	char b[16384];
	while (!p->eof) {
		ssize_t n = read(p->out, b, sizeof b);
		if (n > 0) {
			if (p->len < OUT_MAX)
				sadd(&p->buf, &p->len, b,
				     (size_t)n < OUT_MAX - p->len ? (size_t)n : OUT_MAX - p->len);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		p->eof = true;
	}
	if (!p->exited) {
		int st;
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid) {
			p->exited = true;
			p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		} else if (r < 0 && errno == ECHILD) { /* reaped by someone else */
			p->exited = true;
			p->status = 255;
		}
	}
	if (p->deadline > 0 && now_s() > p->deadline && !p->killed) {
		kill(-p->pid, SIGKILL);
		p->killed = true;
	}
	if (!p->exited || (!p->eof && !p->killed))
		return;
	/* A killed child's grandchildren may hold the pipe: do not wait. */
	int status = p->killed ? 124 : p->status;
	char *out = p->buf ? p->buf : strdup("");
	p->buf = NULL;
	if (p->killed) {
		char *o2 = fmt("%s\n[killed: no end after %.0f s]", out, p->timeout_s);
		free(out);
		out = o2;
	}
	proc_done_fn done = p->done;
	proc_close(p);
	done(j, status, redact(out));
}

/* ---- jobs ------------------------------------------------------------------ */

struct cagent {
	struct dreamos_agent *agent;
	char *name;
	struct cagent *next;
};
static struct cagent *cagents;

enum step {
	ST_SETUP,
	ST_FILES,
	ST_ASK,
	ST_APPLY,
	ST_CHECK,
	ST_REVERT,
	ST_COMMIT,
	ST_REVIEW,
	ST_DONE
};
static const char *const step_names[] = {"setup",  "files",  "asking the model", "apply", "check",
                                         "revert", "commit", "review",           "done"};

struct job {
	long id;
	char *ws, *check, *instruction, *files;
	bool in_place, review;
	int max_attempts, attempt;
	char *top, *workdir, *branch, *patch;
	char *context;    /* the files, as shown to the model */
	char *diff;       /* the last diff */
	char *check_out;  /* the last check output */
	int check_exit;   /* -1: none ran */
	json_t *attempts; /* [{attempt, applied, check_exit, output}] */
	json_t *verdict;  /* the review, or NULL */
	char *commit;
	bool passed, fatal; /* fatal: an error, not a failing check */
	char *error;
	enum step step;
	struct proc proc;
	uint64_t http;
	struct dreamos_call *call; /* codex run */
	struct cagent *ag;         /* a task */
	int64_t task_id;
	struct job *next;
};
static struct job *jobs;
static long jobs_done, jobs_passed;

static struct proc *
job_proc(struct job *j)
{
	return &j->proc;
}

static void
job_free(struct job *j)
{
	for (struct job **pp = &jobs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	proc_close(&j->proc);
	if (j->http)
		host->http_cancel(self, j->http);
	free(j->ws), free(j->check), free(j->instruction), free(j->files);
	free(j->top), free(j->workdir), free(j->branch), free(j->patch);
	free(j->context), free(j->diff), free(j->check_out), free(j->commit), free(j->error);
	json_decref(j->attempts);
	json_decref(j->verdict);
	free(j);
}

static void
aline(struct cagent *g, json_t *o)
{
	agent_send(g ? g->agent : NULL, g ? g->name : NULL, o);
}

static void
progress(struct job *j, int pct, const char *note)
{
	if (j->ag != NULL)
		aline(j->ag, json_pack("{s:s,s:I,s:i,s:s}", "type", "task.progress", "task",
		                       (json_int_t)j->task_id, "pct", pct, "note", note));
	else /* not streamed to `codex run`: it would spoil its --json */
		host->log(self, DREAMOS_LOG_DEBUG, "codex %ld: %s", j->id, note);
}

static json_t *
job_json(struct job *j)
{
	json_t *o =
	    json_pack("{s:I,s:s,s:b,s:s,s:i,s:s?,s:s?,s:s?,s:s?,s:b,s:s?,s:s,s:s?,s:s?,s:O}", "id",
	              (json_int_t)j->id, "status",
	              j->step != ST_DONE ? "running" : (j->passed ? "pass" : "fail"), "passed",
	              j->passed, "step", step_names[j->step], "attempts", j->attempt, "workspace",
	              j->ws, "branch", j->branch, "workdir", j->workdir, "commit", j->commit,
	              "in_place", j->in_place, "check", j->check, "diff", j->diff ? j->diff : "",
	              "check_output", j->check_out, "error", j->error, "history", j->attempts);
	json_object_set_new(o, "check_exit",
	                    j->check_exit >= 0 ? json_integer(j->check_exit) : json_null());
	json_object_set_new(o, "max_attempts", json_integer(j->max_attempts));
	json_object_set_new(o, "instruction", json_string(j->instruction));
	if (j->verdict != NULL)
		json_object_set(o, "review", j->verdict);
	return o;
}

static void
job_finish(struct job *j)
{
	j->step = ST_DONE;
	jobs_done++;
	jobs_passed += j->passed;
	host->log(self, j->passed ? DREAMOS_LOG_INFO : DREAMOS_LOG_WARN,
	          "codex %ld %s after %d attempt%s%s%s", j->id, j->passed ? "passed" : "failed",
	          j->attempt, j->attempt == 1 ? "" : "s", j->error ? ": " : "",
	          j->error ? j->error : "");
	json_t *r = job_json(j);
	char *s = redact(json_dumps(r, JSON_COMPACT));
	char key[64];
	snprintf(key, sizeof key, "job.%ld", j->id);
	host->kv_set(self, key, s); /* `codex status ID` after the fact */
	if (j->call != NULL && j->fatal) {
		host->call_error(j->call, "codex %ld: %s", j->id, j->error);
		host->call_finish(j->call, DREAMOS_CMD_ERROR);
		j->call = NULL;
	} else if (j->call != NULL) {
		host->call_reply_json(j->call, s);
		host->call_finish(j->call, DREAMOS_CMD_OK);
		j->call = NULL;
	} else if (j->ag != NULL) {
		if (j->passed) {
			aline(j->ag, json_pack("{s:s,s:I,s:O}", "type", "task.done", "task",
			                       (json_int_t)j->task_id, "result", r));
		} else {
			char *e = fmt("codex %ld failed after %d attempt%s: %s (branch %s)", j->id,
			              j->attempt, j->attempt == 1 ? "" : "s",
			              j->error ? j->error : "the check still fails",
			              j->branch ? j->branch : "none");
			aline(j->ag, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task",
			                       (json_int_t)j->task_id, "error", e, "retry", 0));
			free(e);
		}
	}
	free(s);
	json_decref(r);
	job_free(j);
}

static void
job_fail(struct job *j, char *error)
{
	free(j->error);
	j->error = error;
	j->passed = false;
	j->fatal = true;
	job_finish(j);
}

/* ---- the model -------------------------------------------------------------- */

static const char sys_diff[] =
    "You are a careful software engineer. You change code by answering ONE unified diff "
    "(git format: diff --git a/PATH b/PATH, --- a/PATH, +++ b/PATH, @@ hunks with exact "
    "context) against the files as shown, paths relative to the repository root. Answer "
    "the diff only, no explanation.";
static const char sys_review[] =
    "You review code changes. Answer only a JSON object {\"valid\": bool, \"feedback\": "
    "string, \"suggestions\": [string]}.";

static void on_answer(struct dreamos_ext *, void *, const struct dreamos_http_response *);

static int
ask(struct job *j, const char *system, const char *prompt, char **why)
{
	if (api_key == NULL) {
		*why = fmt("no API key: $%s is not set", cfg.key_env);
		return -1;
	}
	json_t *body = json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s}],s:b,s:f}", "model", cfg.model,
	                         "messages", "role", "system", "content", system, "role", "user",
	                         "content", prompt, "stream", 0, "temperature", 0.0);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	j->http = chat_request(cfg.base_url, api_key, text, cfg.timeout_s, cfg.retries, on_answer,
	                       NULL, j, why);
	free(text);
	return j->http == 0 ? -1 : 0;
}

/* The answer's text (malloc'd), or NULL with *why. */
static char *
answer_of(const struct dreamos_http_response *resp, char **why)
{
	if (resp->status == 401) {
		*why = fmt("HTTP 401 Unauthorized from %s: check the API key (env %s)",
		           cfg.base_url, cfg.key_env);
		return NULL;
	}
	json_t *jr = json_loads(resp->body, 0, NULL);
	const char *c =
	    jstr(json_object_get(json_array_get(json_object_get(jr, "choices"), 0), "message"),
	         "content");
	char *a = NULL;
	if (resp->status >= 400 || resp->error != NULL) {
		const char *m = jstr(json_object_get(jr, "error"), "message");
		*why = fmt("HTTP %ld from %s: %s (%d attempt%s)", resp->status, cfg.base_url,
		           m ? m : (resp->error ? resp->error : "error"), resp->attempts,
		           resp->attempts == 1 ? "" : "s");
	} else if (c == NULL) {
		*why = fmt("%s answered without a message", cfg.base_url);
	} else {
		a = strdup(c);
	}
	json_decref(jr);
	return a;
}

/* The diff in an answer: fences dropped, from the first "diff --git" or
 * "--- " line; ends with a newline (git apply wants one). */
static char *
diff_of(const char *a)
{
	const char *s = a;
	for (const char *l = a; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, "diff --git ", 11) == 0 || strncmp(l, "--- ", 4) == 0) {
			s = l;
			break;
		}
	char *d = NULL;
	size_t len = 0;
	for (const char *l = s; l != NULL && *l;) {
		const char *nl = strchr(l, '\n');
		size_t ll = nl ? (size_t)(nl - l) : strlen(l);
		if (strncmp(l, "```", 3) != 0) {
			sadd(&d, &len, l, ll);
			sadd(&d, &len, "\n", 1);
		}
		l = nl ? nl + 1 : NULL;
	}
	return d ? d : strdup("");
}

static void step_apply(struct job *j);
static void step_finish_pass(struct job *j);

static void
step_ask(struct job *j)
{
	j->attempt++;
	j->step = ST_ASK;
	char note[64];
	snprintf(note, sizeof note, "attempt %d/%d: asking the model", j->attempt, j->max_attempts);
	progress(j, 10 + 80 * (j->attempt - 1) / j->max_attempts, note);
	char *p = NULL;
	size_t len = 0;
	char *head = fmt("Task: %s\n\nRepository files:\n%s\n", j->instruction, j->context);
	sadd(&p, &len, head, strlen(head));
	free(head);
	if (j->check != NULL) {
		char *c =
		    fmt("The check command `%s` must pass (exit 0) after your change.\n", j->check);
		sadd(&p, &len, c, strlen(c));
		free(c);
	}
	size_t i;
	json_t *a;
	json_array_foreach(j->attempts, i, a)
	{
		char *c =
		    fmt("\nAttempt %d was this diff:\n%s\nIt %s (exit %d); check output:\n%s\n",
		        (int)jnum(a, "attempt", 0), jstr(a, "diff"),
		        json_is_true(json_object_get(a, "applied")) ? "applied but the check failed"
		                                                    : "did not apply",
		        (int)jnum(a, "check_exit", -1), jstr(a, "output"));
		sadd(&p, &len, c, strlen(c));
		free(c);
	}
	if (json_array_size(j->attempts) > 0) {
		const char *more =
		    "\nThe previous diff was reverted: answer a new diff against the "
		    "files as shown above.\n";
		sadd(&p, &len, more, strlen(more));
	}
	char *why = NULL;
	if (ask(j, sys_diff, p, &why) != 0)
		job_fail(j, why);
	free(p);
}

static void
step_review(struct job *j)
{
	j->step = ST_REVIEW;
	progress(j, 95, "review");
	char *p =
	    fmt("Review this change.\n\nTask: %s\n\nDiff:\n%s\nCheck `%s`: %s (exit %d), "
	        "output:\n%s\n\nAnswer only JSON: {\"valid\": true|false, \"feedback\": "
	        "\"...\", \"suggestions\": [\"...\"]}",
	        j->instruction, j->diff ? j->diff : "", j->check ? j->check : "none",
	        j->passed ? "passed" : "failed", j->check_exit, j->check_out ? j->check_out : "");
	char *why = NULL;
	if (ask(j, sys_review, p, &why) != 0) {
		j->verdict =
		    json_pack("{s:b,s:s,s:[]}", "valid", 0, "feedback", why, "suggestions");
		free(why);
		job_finish(j);
	}
	free(p);
}

/* The attempts are over (the change committed, left in the checkout, or
 * reverted): the review if one was asked for, else the end. */
static void
review_or_finish(struct job *j)
{
	if (j->review)
		step_review(j);
	else
		job_finish(j);
}

/* The review's verdict: {valid, feedback, suggestions}, or an error. */
static json_t *
verdict_of(const char *a)
{
	const char *b = strchr(a, '{'), *e = strrchr(a, '}');
	json_t *v = b && e > b ? json_loadb(b, (size_t)(e - b + 1), 0, NULL) : NULL;
	if (!json_is_object(v) || !json_is_boolean(json_object_get(v, "valid"))) {
		json_decref(v);
		char *t = tail(a, 500);
		json_t *r = json_pack("{s:b,s:s,s:[],s:s}", "valid", 0, "feedback",
		                      "the review did not answer the JSON verdict", "suggestions",
		                      "answer", t);
		free(t);
		return r;
	}
	json_t *s = json_object_get(v, "suggestions");
	json_t *r = json_pack("{s:O,s:s,s:O}", "valid", json_object_get(v, "valid"), "feedback",
	                      jstr(v, "feedback") ? jstr(v, "feedback") : "", "suggestions",
	                      json_is_array(s) ? s : json_array());
	if (!json_is_array(s))
		json_decref(json_object_get(r, "suggestions")); /* the json_array() above */
	json_decref(v);
	return r;
}

static void
on_answer(struct dreamos_ext *ext, void *arg, const struct dreamos_http_response *resp)
{
	struct job *j = arg;
	j->http = 0;
	char *why = NULL;
	char *a = answer_of(resp, &why);
	if (j->step == ST_REVIEW) {
		j->verdict =
		    a ? verdict_of(a)
		      : json_pack("{s:b,s:s,s:[]}", "valid", 0, "feedback", why, "suggestions");
		free(a), free(why);
		job_finish(j);
		return;
	}
	if (a == NULL) {
		job_fail(j, why);
		return;
	}
	free(j->diff);
	j->diff = diff_of(a);
	free(a);
	step_apply(j);
}

/* ---- the git steps ----------------------------------------------------------- */

/* NAME=value strings for a child (freed by vars_free). */
static void
vars_free(char **v)
{
	for (size_t i = 0; v[i] != NULL; i++)
		free(v[i]);
}

static int
run(struct job *j, enum step st, const char *dir, const char *script, const char *input,
    double timeout_s, proc_done_fn done)
{
	char *v[8] = {0};
	size_t n = 0;
	v[n++] = fmt("CODEX_WS=%s", j->ws);
	v[n++] = fmt("CODEX_WD=%s", j->workdir ? j->workdir : "");
	v[n++] = fmt("CODEX_BRANCH=%s", j->branch ? j->branch : "");
	v[n++] = fmt("CODEX_PATCH=%s", j->patch);
	v[n++] = fmt("CODEX_CHECK=%s", j->check ? j->check : "true");
	v[n++] = fmt("CODEX_FILES=%s", j->files ? j->files : "");
	v[n++] = fmt("CODEX_MAXF=%ld", cfg.max_file);
	j->step = st;
	char *why = NULL;
	int rc = proc_start(j, &j->proc, dir, script, (const char *const *)v, input, timeout_s,
	                    done, &why);
	vars_free(v);
	if (rc != 0)
		job_fail(j, why);
	return rc;
}

static void
after_commit(struct job *j, int status, char *out)
{
	if (status == 0) {
		size_t l = strcspn(out, "\r\n");
		out[l] = '\0';
		j->commit = strdup(out);
	} else {
		host->log(self, DREAMOS_LOG_WARN, "codex %ld: commit failed: %s", j->id, out);
	}
	free(out);
	review_or_finish(j);
}

static void
step_finish_pass(struct job *j)
{
	j->passed = true;
	if (!j->in_place) {
		progress(j, 92, "commit on the branch");
		run(j, ST_COMMIT, j->workdir,
		    "git add -A && git -c user.name=codex -c user.email=codex@dreamos.invalid "
		    "commit -q --no-verify -m \"codex: $CODEX_BRANCH\" >&2 && git rev-parse HEAD",
		    NULL, 60, after_commit);
		return;
	}
	review_or_finish(j);
}

static void
record_attempt(struct job *j, bool applied, int exit_code, const char *out)
{
	char *t = tail(out, FEEDBACK_MAX);
	json_array_append_new(j->attempts, json_pack("{s:i,s:b,s:i,s:s,s:s}", "attempt", j->attempt,
	                                             "applied", applied, "check_exit", exit_code,
	                                             "output", t, "diff", j->diff ? j->diff : ""));
	free(t);
}

static void
after_revert(struct job *j, int status, char *out)
{
	if (status != 0) {
		job_fail(j, fmt("git apply -R (revert of attempt %d) failed: %s", j->attempt, out));
		free(out);
		return;
	}
	free(out);
	step_ask(j);
}

static void
after_last_revert(struct job *j, int status, char *out)
{
	if (status != 0)
		host->log(self, DREAMOS_LOG_WARN, "codex %ld: revert failed: %s", j->id, out);
	free(out);
	review_or_finish(j);
}

/* An attempt failed: the next one, or the end (a failed change is reverted:
 * neither the user's files nor the branch keep it). */
static void
attempt_failed(struct job *j, bool applied)
{
	if (j->attempt >= j->max_attempts) {
		j->error = fmt("%s after %d attempt%s",
		               applied ? "the check still fails" : "the diff does not apply",
		               j->attempt, j->attempt == 1 ? "" : "s");
		if (applied)
			run(j, ST_REVERT, j->workdir, "git apply -R \"$CODEX_PATCH\"", NULL, 60,
			    after_last_revert);
		else
			after_last_revert(j, 0, strdup(""));
		return;
	}
	if (applied)
		run(j, ST_REVERT, j->workdir, "git apply -R \"$CODEX_PATCH\"", NULL, 60,
		    after_revert);
	else
		step_ask(j);
}

static void
after_check(struct job *j, int status, char *out)
{
	free(j->check_out);
	j->check_out = tail(out, OUT_MAX);
	j->check_exit = status;
	record_attempt(j, true, status, out);
	free(out);
	if (status == 0)
		step_finish_pass(j);
	else
		attempt_failed(j, true);
}

static void
after_apply(struct job *j, int status, char *out)
{
	if (status != 0) {
		char *o = fmt("git apply failed:\n%s", out);
		free(j->check_out);
		j->check_out = strdup(o);
		j->check_exit = -1;
		record_attempt(j, false, -1, o);
		free(o), free(out);
		attempt_failed(j, false);
		return;
	}
	free(out);
	if (j->check == NULL) {
		j->check_exit = 0;
		record_attempt(j, true, 0, "");
		step_finish_pass(j);
		return;
	}
	char note[64];
	snprintf(note, sizeof note, "attempt %d/%d: check", j->attempt, j->max_attempts);
	progress(j, 10 + 80 * (j->attempt - 1) / j->max_attempts + 40 / j->max_attempts, note);
	run(j, ST_CHECK, j->workdir, j->check, NULL, cfg.check_timeout_s, after_check);
}

static void
step_apply(struct job *j)
{
	if (j->diff == NULL || strstr(j->diff, "\n+++ ") == NULL) {
		char *o = strdup("the answer held no unified diff (no +++ line)");
		record_attempt(j, false, -1, o);
		free(j->check_out);
		j->check_out = o;
		j->check_exit = -1;
		attempt_failed(j, false);
		return;
	}
	run(j, ST_APPLY, j->workdir,
	    "cat >\"$CODEX_PATCH\" && git apply --check \"$CODEX_PATCH\" && git apply "
	    "\"$CODEX_PATCH\"",
	    j->diff, 60, after_apply);
}

static void
after_files(struct job *j, int status, char *out)
{
	if (status != 0) {
		job_fail(j, fmt("listing the files failed: %s", out));
		free(out);
		return;
	}
	if ((long)strlen(out) > cfg.max_context) {
		j->context = fmt("%.*s\n[... the rest left out: %zu bytes ...]\n",
		                 (int)cfg.max_context, out, strlen(out) - (size_t)cfg.max_context);
		free(out);
	} else {
		j->context = out;
	}
	step_ask(j);
}

static void
after_setup(struct job *j, int status, char *out)
{
	/* The last line is the repository's top level. */
	size_t l = strlen(out);
	while (l > 0 && (out[l - 1] == '\n' || out[l - 1] == '\r'))
		out[--l] = '\0';
	if (status != 0) {
		job_fail(j,
		         fmt("workspace %s: %s", j->ws,
		             strstr(out, "not a git repository") ? "not a git repository" : out));
		free(out);
		return;
	}
	char *last = strrchr(out, '\n');
	j->top = strdup(last ? last + 1 : out);
	free(out);
	if (j->in_place) {
		free(j->workdir);
		j->workdir = strdup(j->top);
	}
	progress(j, 5, j->in_place ? "in place" : "worktree ready");
	run(j, ST_FILES, j->workdir,
	    "{ if [ -n \"$CODEX_FILES\" ]; then printf '%s\\n' \"$CODEX_FILES\"; else git "
	    "ls-files; "
	    "fi; } | while IFS= read -r f; do\n"
	    " [ -f \"$f\" ] || { printf '=== %s (no such file) ===\\n' \"$f\"; continue; }\n"
	    " n=$(wc -c <\"$f\")\n"
	    " [ \"$n\" -le \"$CODEX_MAXF\" ] || { printf '=== %s (%s bytes, left out) ===\\n' "
	    "\"$f\" "
	    "\"$n\"; continue; }\n"
	    " [ \"$n\" -eq 0 ] || grep -Iq . \"$f\" || continue\n"
	    " printf '=== %s ===\\n' \"$f\"; cat \"$f\"; printf '\\n'\n"
	    "done",
	    NULL, 60, after_files);
}

/* A new job from its parameters (files: newline-separated, or NULL).
 * Returns NULL with *why. */
static struct job *
job_start(const char *ws, const char *check, const char *instruction, const char *files,
          int attempts, bool review, bool in_place, char **why)
{
	if (ws == NULL || *ws != '/') {
		*why = fmt("the workspace must be an absolute path (got '%s')", ws ? ws : "");
		return NULL;
	}
	if (instruction == NULL || *instruction == '\0') {
		*why = fmt("no instruction");
		return NULL;
	}
	if (cfg.work_dir == NULL) {
		*why = fmt("no work directory (set extensions.codex.work_dir)");
		return NULL;
	}
	if (attempts < 1 || attempts > 20) {
		*why = fmt("attempts must be 1 to 20 (got %d)", attempts);
		return NULL;
	}
	char *n = host->kv_get(self, "next_id");
	long id = n ? strtol(n, NULL, 10) : 1;
	host->free(n);
	char nb[32];
	snprintf(nb, sizeof nb, "%ld", id + 1);
	host->kv_set(self, "next_id", nb);
	struct job *j = calloc(1, sizeof *j);
	j->id = id;
	j->ws = strdup(ws);
	j->check = check && *check ? strdup(check) : NULL;
	j->instruction = strdup(instruction);
	j->files = files && *files ? strdup(files) : NULL;
	j->max_attempts = attempts;
	j->review = review;
	j->in_place = in_place;
	j->check_exit = -1;
	j->attempts = json_array();
	j->patch = fmt("%s/%ld.patch", cfg.work_dir, id);
	if (!in_place) {
		j->workdir = fmt("%s/%ld", cfg.work_dir, id);
		j->branch = fmt("codex/%ld", id);
	}
	j->next = jobs;
	jobs = j;
	static const char setup_wt[] =
	    "set -e\n"
	    "top=$(git -C \"$CODEX_WS\" rev-parse --show-toplevel)\n"
	    "mkdir -p \"${CODEX_PATCH%/*}\"\n"
	    "git -C \"$top\" worktree add -q -b \"$CODEX_BRANCH\" \"$CODEX_WD\" HEAD >&2\n"
	    "echo \"$top\"";
	static const char setup_ip[] = "set -e\n"
	                               "top=$(git -C \"$CODEX_WS\" rev-parse --show-toplevel)\n"
	                               "mkdir -p \"${CODEX_PATCH%/*}\"\n"
	                               "echo \"$top\"";
	host->log(self, DREAMOS_LOG_INFO, "codex %ld: %s in %s%s", id, instruction, ws,
	          in_place ? " (in place)" : "");
	if (run(j, ST_SETUP, "/", in_place ? setup_ip : setup_wt, NULL, 60, after_setup) != 0) {
		*why = fmt("could not start git");
		return NULL; /* j was freed by job_fail (no call, no agent) */
	}
	return j;
}

/* ---- the agent type ------------------------------------------------------------ */

static void
agent_task(struct cagent *g, json_t *m)
{
	json_t *t = json_object_get(m, "task");
	json_int_t tid = json_integer_value(json_object_get(t, "id"));
	json_t *p = json_object_get(t, "payload");
	char *files = NULL;
	size_t fl = 0, i;
	json_t *f;
	json_array_foreach(json_object_get(p, "files"), i, f) if (json_is_string(f))
	{
		if (fl)
			sadd(&files, &fl, "\n", 1);
		sadd(&files, &fl, json_string_value(f), strlen(json_string_value(f)));
	}
	const char *instr = jstr(p, "instruction") ? jstr(p, "instruction") : jstr(p, "prompt");
	if (instr == NULL && jstr(t, "title"))
		instr = jstr(t, "title");
	char *why = NULL;
	struct job *j = NULL;
	if (!json_is_object(p) || jstr(p, "workspace") == NULL)
		why = fmt("the payload must be {\"workspace\", \"instruction\", \"check\"?, "
		          "\"attempts\"?, \"review\"?, \"in_place\"?, \"files\"?}");
	else
		j = job_start(jstr(p, "workspace"), jstr(p, "check"), instr, files,
		              (int)jnum(p, "attempts", cfg.attempts),
		              json_is_true(json_object_get(p, "review")),
		              json_is_true(json_object_get(p, "in_place")), &why);
	free(files);
	if (j == NULL) {
		aline(g, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task", tid, "error",
		                   why ? why : "error", "retry", 0));
		free(why);
		return;
	}
	j->ag = g;
	j->task_id = tid;
	progress(j, 1, "setting up the worktree");
}

static void
agent_on_line(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *line)
{
	struct cagent *g = state;
	json_t *m = json_loads(line, 0, NULL);
	const char *type = jstr(m, "type");
	if (type == NULL) {
	} else if (strcmp(type, "task.assign") == 0) {
		agent_task(g, m);
	} else if (strcmp(type, "task.cancel") == 0) {
		json_int_t id = json_integer_value(json_object_get(m, "task"));
		for (struct job *j = jobs; j != NULL; j = j->next)
			if (j->ag == g && j->task_id == id) {
				host->log(self, DREAMOS_LOG_INFO, "codex %ld cancelled", j->id);
				job_free(j);
				break;
			}
	} else if (strcmp(type, "message") == 0) {
		/* Messages are not work for this agent: taken, answered with how. */
		json_int_t id = json_integer_value(json_object_get(m, "id"));
		const char *from = jstr(m, "from");
		json_t *b = json_pack("{s:s,s:I}", "text",
		                      "I take tasks with capability code: payload {workspace, "
		                      "instruction, check}",
		                      "reply_to", id);
		aline(g, json_pack("{s:s,s:s,s:o,s:I}", "type", "send", "to",
		                   from ? from : "captain", "body", b, "reply_to", id));
		aline(g, json_pack("{s:s,s:I}", "type", "ack", "id", id));
	}
	json_decref(m);
}

static int
agent_start(struct dreamos_ext *ext, struct dreamos_agent *agent, void **state)
{
	struct cagent *g = calloc(1, sizeof *g);
	g->agent = agent;
	g->name = strdup(host->agent_name(agent));
	g->next = cagents;
	cagents = g;
	*state = g;
	host->log(self, DREAMOS_LOG_INFO, "codex agent %s ready (model %s)", g->name, cfg.model);
	return 0;
}

static void
agent_stop(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *why)
{
	struct cagent *g = state;
	for (struct job *j = jobs, *n; j != NULL; j = n) {
		n = j->next;
		if (j->ag == g)
			job_free(j); /* its task is given to another agent */
	}
	for (struct cagent **pp = &cagents; *pp != NULL; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	free(g->name);
	free(g);
}

/* ---- commands ---------------------------------------------------------------- */

static int
cmd_run(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	char *instr = NULL, *files = NULL;
	size_t il = 0, fl = 0;
	for (int i = 0; i < host->call_argc(call); i++) {
		if (i)
			sadd(&instr, &il, " ", 1);
		sadd(&instr, &il, host->call_arg(call, i), strlen(host->call_arg(call, i)));
	}
	for (size_t i = 0; i < host->call_opt_count(call, "file"); i++) {
		const char *f = host->call_opt_at(call, "file", i);
		if (fl)
			sadd(&files, &fl, "\n", 1);
		sadd(&files, &fl, f, strlen(f));
	}
	int attempts = cfg.attempts;
	const char *a = host->call_opt(call, "attempts");
	if (a != NULL) {
		char *end;
		attempts = (int)strtol(a, &end, 10);
		if (*end != '\0' || end == a)
			attempts = 0;
	}
	char *why = NULL;
	struct job *j = job_start(host->call_opt(call, "workspace"), host->call_opt(call, "check"),
	                          instr, files, attempts, host->call_flag(call, "review"),
	                          host->call_flag(call, "in-place"), &why);
	free(instr), free(files);
	if (j == NULL) {
		host->call_error(call, "codex run: %s", why);
		free(why);
		return DREAMOS_CMD_ERROR;
	}
	j->call = call;
	return DREAMOS_CMD_WAIT;
}

static int
cmd_status(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	const char *id = host->call_arg(call, 0);
	if (id != NULL) {
		for (struct job *j = jobs; j != NULL; j = j->next)
			if (j->id == strtol(id, NULL, 10))
				return reply_redacted(call, job_json(j));
		char key[64];
		snprintf(key, sizeof key, "job.%ld", strtol(id, NULL, 10));
		char *s = host->kv_get(self, key);
		if (s == NULL)
			return host->call_error(call, "codex status: no job %s", id);
		host->call_reply_json(call, s);
		host->free(s);
		return DREAMOS_CMD_OK;
	}
	json_t *list = json_array(), *ags = json_array();
	for (struct job *j = jobs; j != NULL; j = j->next)
		json_array_append_new(list, job_json(j));
	for (struct cagent *g = cagents; g != NULL; g = g->next)
		json_array_append_new(ags, json_string(g->name));
	json_t *o =
	    json_pack("{s:s,s:s,s:s,s:b,s:s?,s:i,s:f,s:I,s:I,s:o,s:o}", "base_url", cfg.base_url,
	              "model", cfg.model, "api_key", cfg.key_env, "api_key_present",
	              api_key != NULL, "work_dir", cfg.work_dir, "attempts", cfg.attempts,
	              "check_timeout_s", cfg.check_timeout_s, "jobs_done", (json_int_t)jobs_done,
	              "jobs_passed", (json_int_t)jobs_passed, "running", list, "agents", ags);
	return reply_redacted(call, o);
}

static int
cmd_spawn(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	size_t ncap = host->call_opt_count(call, "cap");
	const char **caps = ncap ? calloc(ncap + 1, sizeof *caps) : NULL;
	for (size_t i = 0; i < ncap; i++)
		caps[i] = host->call_opt_at(call, "cap", i);
	int rc = host->agent_create(self, TYPE_NAME, host->call_arg(call, 0), caps, -1);
	free(caps);
	if (rc != 0)
		return host->call_error(call, "codex spawn: %s", host->last_error(self));
	host->call_reply(call, "codex agent spawned");
	return DREAMOS_CMD_OK;
}

static const struct dreamos_cmd_opt run_opts[] = {
    {"workspace", DREAMOS_OPT_VALUE, "DIR", NULL},
    {"check", DREAMOS_OPT_VALUE, "CMD", NULL},
    {"attempts", DREAMOS_OPT_VALUE, "N", NULL},
    {"review", DREAMOS_OPT_FLAG, NULL, NULL},
    {"in-place", DREAMOS_OPT_FLAG, NULL, NULL},
    {"file", DREAMOS_OPT_MULTI, "PATH", NULL},
    {NULL, 0, NULL, NULL},
};
/* ---- codex clean: worktrees (and branches) of finished jobs --------------------- */

struct clean {
	struct dreamos_call *call;
	char *out;
	size_t len;
	char *script_in; /* "WORKSPACE\tWORKDIR\tBRANCH\n" per job */
};

static void
clean_data(struct dreamos_ext *ext, void *arg, uint64_t id, int fd, const char *data, size_t len)
{
	struct clean *c = arg;
	if (len == 0 || c->len > 65536)
		return;
	char *n = realloc(c->out, c->len + len + 1);
	if (n == NULL)
		return;
	memcpy(n + c->len, data, len);
	c->len += len;
	n[c->len] = '\0';
	c->out = n;
}

static void
clean_exited(struct dreamos_ext *ext, void *arg, uint64_t id, int status, int signum)
{
	struct clean *c = arg;
	const char *out = c->out ? c->out : "";
	if (status == 0) {
		host->call_reply(c->call, *out ? out : "nothing to clean");
		host->call_finish(c->call, DREAMOS_CMD_OK);
	} else {
		host->call_error(c->call, "codex clean: %s", *out ? out : "git failed");
		host->call_finish(c->call, DREAMOS_CMD_ERROR);
	}
	free(c->out);
	free(c->script_in);
	free(c);
}

/* codex clean ID... [--branches]: removes the worktrees of finished jobs
 * (the branches keep their commits), and with --branches the branches. */
static int
cmd_clean(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (!DREAMOS_HOST_HAS(host, proc_spawn))
		return host->call_error(call, "codex clean: this dreamos cannot run programs for "
		                              "extensions");
	char *in = NULL;
	size_t inl = 0;
	for (int i = 0; i < host->call_argc(call); i++) {
		const char *a = host->call_arg(call, i);
		char *end = NULL;
		long id = strtol(a, &end, 10);
		if (end == a || *end != '\0' || id <= 0) {
			free(in);
			return host->call_error(call, "codex clean: '%s' is not a job id", a);
		}
		for (struct job *j = jobs; j != NULL; j = j->next)
			if (j->id == id) {
				free(in);
				return host->call_error(
				    call, "codex clean: job %ld is still running", id);
			}
		char key[64];
		snprintf(key, sizeof key, "job.%ld", id);
		char *s = host->kv_get(self, key);
		json_t *o = s ? json_loads(s, 0, NULL) : NULL;
		host->free(s);
		if (o == NULL) {
			free(in);
			return host->call_error(call, "codex clean: no job %ld", id);
		}
		const char *ws = jstr(o, "workspace"), *wd = jstr(o, "workdir"),
		           *br = jstr(o, "branch");
		if (ws != NULL && wd != NULL && br != NULL) { /* not --in-place */
			char *line = fmt("%s\t%s\t%s\n", ws, wd, br);
			sadd(&in, &inl, line, strlen(line));
			free(line);
		}
		json_decref(o);
	}
	/* Paths go through stdin, never through the shell's parser. */
	static const char script[] = "tab=$(printf '\\t'); rc=0\n"
	                             "while IFS=$tab read -r ws wd br; do\n"
	                             "  if [ -d \"$wd\" ]; then\n"
	                             "    git -C \"$ws\" worktree remove --force \"$wd\" 2>&1 && "
	                             "echo \"removed $wd\" || rc=1\n"
	                             "  fi\n"
	                             "  if [ -n \"$CODEX_BRANCHES\" ] && git -C \"$ws\" rev-parse "
	                             "-q --verify \"refs/heads/$br\" "
	                             ">/dev/null; then\n"
	                             "    git -C \"$ws\" branch -D \"$br\" >/dev/null 2>&1 && echo "
	                             "\"deleted branch $br\" || rc=1\n"
	                             "  fi\n"
	                             "done\n"
	                             "exit $rc\n";
	const char *argv[] = {"sh", "-c", script, NULL};
	const char *env[] = {host->call_flag(call, "branches") ? "CODEX_BRANCHES=1" : NULL, NULL};
	struct dreamos_proc_spec ps = {.size = sizeof ps,
	                               .file = "sh",
	                               .argv = argv,
	                               .env = env[0] ? env : NULL,
	                               .kill_after_s = 5};
	struct clean *c = calloc(1, sizeof *c);
	c->call = call;
	c->script_in = in;
	uint64_t pid = host->proc_spawn(self, &ps, clean_data, clean_exited, c);
	if (pid == 0) {
		free(in);
		free(c);
		return host->call_error(call, "codex clean: %s", host->last_error(self));
	}
	if (in != NULL)
		host->proc_write(self, pid, 0, in, inl);
	host->proc_write(self, pid, 0, "", 0); /* end of input */
	return DREAMOS_CMD_WAIT;
}

static const struct dreamos_cmd_opt clean_opts[] = {
    {"branches", DREAMOS_OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

static const struct dreamos_cmd_opt spawn_opts[] = {
    {"cap", DREAMOS_OPT_MULTI, "CAPABILITY", "cap"},
    {NULL, 0, NULL, NULL},
};

/* ---- configuration and entry points ---------------------------------------------- */

/* RUNTIME/extensions/codex/work, from where the loader copied this object
 * (RUNTIME/extensions/.loaded/NAME-N.so), else $DREAMOS_RUNTIME. */
/* RUNTIME/extensions/codex/work: the host's directory for this extension. */
static char *
default_work_dir(void)
{
	const char *d = DREAMOS_HOST_HAS(host, data_dir) ? host->data_dir(self) : NULL;
	return d != NULL ? fmt("%s/work", d) : NULL;
}

static int
cfg_load(const char *config)
{
	json_t *c = cfg_object(config, "codex");
	if (c == NULL)
		return -1;
	if (json_object_get(c, "api_key") != NULL) {
		host->set_error(self, "extensions.codex.api_key is not read: put the key in the "
		                      "environment (api_key_env)");
		json_decref(c);
		return -1;
	}
	cfg.base_url = cfg_base_url(c, "codex");
	if (cfg.base_url == NULL) {
		json_decref(c);
		return -1;
	}
	cfg.key_env = strdup(jstr(c, "api_key_env") ? jstr(c, "api_key_env") : "OPENAI_API_KEY");
	cfg.model = strdup(jstr(c, "model") ? jstr(c, "model") : "gpt-4.1");
	cfg.work_dir = jstr(c, "work_dir") ? strdup(jstr(c, "work_dir")) : default_work_dir();
	cfg.timeout_s = jnum(c, "timeout_s", 180);
	cfg.retries = (int)jnum(c, "retries", -1);
	cfg.attempts = (int)jnum(c, "attempts", 3);
	cfg.check_timeout_s = jnum(c, "check_timeout_s", 300);
	cfg.max_file = (long)jnum(c, "max_file_bytes", 32768);
	cfg.max_context = (long)jnum(c, "max_context_bytes", 131072);
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
	const char *k = getenv(cfg.key_env);
	api_key = k && *k ? secret_keep(k) : NULL;
	if (api_key == NULL)
		host->log(ext, DREAMOS_LOG_INFO, "no API key: $%s is not set; codex jobs will fail",
		          cfg.key_env);
	static const char *const caps[] = {"code", NULL};
	struct dreamos_command cr = {
	    .size = sizeof cr,
	    .name = "codex run",
	    .usage = "--workspace DIR [--check CMD] [--attempts N] [--review] [--in-place] "
	             "[--file PATH]... INSTRUCTION...",
	    .help = "Asks the model for a diff, applies it with git on a branch codex/ID (a "
	            "worktree; --in-place: the checkout itself), runs the check, and feeds "
	            "failures back, up to N attempts.  --review adds a verdict.",
	    .min_args = 1,
	    .max_args = -1,
	    .opts = run_opts,
	    .fn = cmd_run,
	};
	struct dreamos_command cs = {
	    .size = sizeof cs,
	    .name = "codex status",
	    .usage = "[ID]",
	    .help = "Settings and running jobs of the Codex bridge, or one job (also finished).",
	    .max_args = 1,
	    .role = DREAMOS_ROLE_OBSERVER,
	    .fn = cmd_status,
	};
	struct dreamos_command cp = {
	    .size = sizeof cp,
	    .name = "codex spawn",
	    .usage = "NAME [--cap C]...",
	    .help = "Creates a codex agent (tasks with capability code) for this session.",
	    .min_args = 1,
	    .max_args = 1,
	    .opts = spawn_opts,
	    .fn = cmd_spawn,
	};
	struct dreamos_agent_type t = {
	    .size = sizeof t,
	    .name = TYPE_NAME,
	    .description = "a coding agent: tasks {workspace, instruction, check} -> a verified "
	                   "diff on a git branch",
	    .caps = caps,
	    .max_tasks = 2,
	    .specialist = 1, /* only tasks that ask for code */
	    .start = agent_start,
	    .on_line = agent_on_line,
	    .stop = agent_stop,
	};
	struct dreamos_command cc = {
	    .size = sizeof cc,
	    .name = "codex clean",
	    .usage = "ID... [--branches]",
	    .help = "Removes the worktrees of finished jobs (their branches keep the commits); "
	            "--branches deletes the branches codex/ID too.",
	    .min_args = 1,
	    .max_args = -1,
	    .opts = clean_opts,
	    .fn = cmd_clean,
	};
	if (host->command_register(ext, &cr) != 0 || host->command_register(ext, &cs) != 0 ||
	    host->command_register(ext, &cp) != 0 || host->command_register(ext, &cc) != 0 ||
	    host->agent_type_register(ext, &t) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	host->log(ext, DREAMOS_LOG_INFO, "codex %s ready: %s, model %s, work in %s", CODEX_VERSION,
	          cfg.base_url, cfg.model, cfg.work_dir ? cfg.work_dir : "(none)");
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	while (jobs) /* children killed; waiting commands finished by the host */
		job_free(jobs);
	while (cagents) {
		struct cagent *g = cagents;
		cagents = g->next;
		free(g->name);
		free(g);
	}
	secret_free(api_key);
	api_key = NULL;
	free(cfg.base_url), free(cfg.key_env), free(cfg.model), free(cfg.work_dir);
	memset(&cfg, 0, sizeof cfg);
}

HELPERS_INIT_UNDOING(setup, fini)

DREAMOS_EXTENSION(.name = "codex", .version = CODEX_VERSION,
                  .description = "Codex bridge: model-written diffs applied with git and "
                                 "verified by a check, on a branch",
                  .init = init, .fini = fini);
