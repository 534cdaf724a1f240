/* procx.c — a test extension for the host's child-process API: commands
 * that spawn a child (extra socket pairs, environment, kill delay), write
 * to its stdin or an extra pipe (or close it), signal it, and show what
 * came back: the output per fd, the ends of file, the exit callback (how
 * often, and whether data came after it).  Used by
 * tests/integration/stealthbrowser.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dreamos/extension.h>

#define MAXP  16
#define MAXFD 7

static const struct dreamos_host *host;
static struct dreamos_ext *self;

struct px {
	uint64_t id;
	char *out[MAXFD];
	size_t len[MAXFD];
	int eof[MAXFD];
	int exited, exit_calls, late_data, status, signum;
	int eof_before_exit; /* every pipe it wrote to ended before exited */
	int npipes;
	struct dreamos_call *waiter;
};

static struct px procs[MAXP];

static struct px *
px_find(uint64_t id)
{
	for (int i = 0; i < MAXP; i++)
		if (procs[i].id == id && id != 0)
			return &procs[i];
	return NULL;
}

/* The state of p as JSON (caller frees). */
static char *
px_json(struct px *p)
{
	size_t cap = 256, len = 0;
	for (int i = 0; i < MAXFD; i++)
		cap += p->len[i] * 6 + 32;
	char *s = malloc(cap);
	len += (size_t)snprintf(s + len, cap - len, "{\"id\":%llu,\"out\":{",
	                        (unsigned long long)p->id);
	int first = 1;
	for (int i = 1; i < MAXFD; i++) {
		if (p->out[i] == NULL && !p->eof[i])
			continue;
		char *q = host->json_quote(p->out[i] ? p->out[i] : "");
		len += (size_t)snprintf(s + len, cap - len, "%s\"%d\":%s", first ? "" : ",", i, q);
		host->free(q);
		first = 0;
	}
	len += (size_t)snprintf(s + len, cap - len, "},\"eof\":[");
	first = 1;
	for (int i = 1; i < MAXFD; i++)
		if (p->eof[i]) {
			len += (size_t)snprintf(s + len, cap - len, "%s%d", first ? "" : ",", i);
			first = 0;
		}
	snprintf(s + len, cap - len,
	         "],\"exited\":%s,\"exit_calls\":%d,\"late_data\":%d,\"status\":%d,\"signum\":%d,"
	         "\"eof_before_exit\":%s}",
	         p->exited ? "true" : "false", p->exit_calls, p->late_data, p->status, p->signum,
	         p->eof_before_exit ? "true" : "false");
	return s;
}

static void
on_data(struct dreamos_ext *ext, void *arg, uint64_t id, int fd, const char *data, size_t len)
{
	struct px *p = arg;
	(void)ext;
	if (p->id != id || fd < 0 || fd >= MAXFD)
		return;
	if (p->exited)
		p->late_data++;
	if (len == 0) {
		p->eof[fd] = 1;
		return;
	}
	p->out[fd] = realloc(p->out[fd], p->len[fd] + len + 1);
	memcpy(p->out[fd] + p->len[fd], data, len);
	p->len[fd] += len;
	p->out[fd][p->len[fd]] = '\0';
}

static void
on_exit_cb(struct dreamos_ext *ext, void *arg, uint64_t id, int status, int signum)
{
	struct px *p = arg;
	(void)ext;
	if (p->id != id)
		return;
	p->exit_calls++;
	p->exited = 1;
	p->status = status;
	p->signum = signum;
	p->eof_before_exit = 1;
	for (int i = 1; i < p->npipes; i++)
		if (!p->eof[i])
			p->eof_before_exit = 0;
	if (p->waiter != NULL) {
		char *j = px_json(p);
		host->call_reply_json(p->waiter, j);
		free(j);
		host->call_finish(p->waiter, DREAMOS_CMD_OK);
		p->waiter = NULL;
	}
}

static int
cmd_spawn(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)arg;
	struct px *p = NULL;
	for (int i = 0; i < MAXP && p == NULL; i++)
		if (procs[i].id == 0 || (procs[i].exited && procs[i].waiter == NULL))
			p = &procs[i];
	if (p == NULL)
		return host->call_error(call, "procx: too many processes");
	for (int i = 0; i < MAXFD; i++)
		free(p->out[i]);
	memset(p, 0, sizeof *p);
	int argc = host->call_argc(call);
	const char **argv = calloc((size_t)argc + 1, sizeof *argv);
	for (int i = 0; i < argc; i++)
		argv[i] = host->call_arg(call, i);
	size_t nenv = host->call_opt_count(call, "env");
	const char **env = calloc(nenv + 1, sizeof *env);
	for (size_t i = 0; i < nenv; i++)
		env[i] = host->call_opt_at(call, "env", i);
	const char *pipes = host->call_opt(call, "pipes");
	const char *ka = host->call_opt(call, "kill-after");
	struct dreamos_proc_spec spec = {
	    .size = sizeof spec,
	    .file = argv[0],
	    .argv = argv,
	    .env = env,
	    .cwd = host->call_opt(call, "cwd"),
	    .extra_pipes = pipes ? atoi(pipes) : 0,
	    .kill_after_s = ka ? atof(ka) : 0,
	};
	p->npipes = 3 + (spec.extra_pipes > 0 && spec.extra_pipes <= 4 ? spec.extra_pipes : 0);
	uint64_t id = host->proc_spawn(ext, &spec, on_data, on_exit_cb, p);
	free(argv);
	free(env);
	if (id == 0)
		return host->call_error(call, "%s", host->last_error(ext));
	p->id = id;
	char j[64];
	snprintf(j, sizeof j, "{\"id\":%llu}", (unsigned long long)id);
	host->call_reply_json(call, j);
	return DREAMOS_CMD_OK;
}

static int
cmd_write(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)arg;
	uint64_t id = strtoull(host->call_arg(call, 0), NULL, 10);
	int fd = atoi(host->call_arg(call, 1));
	char buf[4096] = "";
	for (int i = 2; i < host->call_argc(call); i++) {
		if (i > 2)
			strncat(buf, " ", sizeof buf - strlen(buf) - 1);
		strncat(buf, host->call_arg(call, i), sizeof buf - strlen(buf) - 1);
	}
	if (host->call_flag(call, "nl"))
		strncat(buf, "\n", sizeof buf - strlen(buf) - 1);
	size_t len = host->call_flag(call, "eof") ? 0 : strlen(buf);
	if (host->proc_write(ext, id, fd, buf, len) != 0)
		return host->call_error(call, "%s", host->last_error(ext));
	host->call_reply(call, "written");
	return DREAMOS_CMD_OK;
}

static int
cmd_kill(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)arg;
	uint64_t id = strtoull(host->call_arg(call, 0), NULL, 10);
	if (host->proc_kill(ext, id, atoi(host->call_arg(call, 1))) != 0)
		return host->call_error(call, "%s", host->last_error(ext));
	host->call_reply(call, "signalled");
	return DREAMOS_CMD_OK;
}

static int
cmd_show(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	struct px *p = px_find(strtoull(host->call_arg(call, 0), NULL, 10));
	if (p == NULL)
		return host->call_error(call, "procx: no such process");
	char *j = px_json(p);
	host->call_reply_json(call, j);
	free(j);
	return DREAMOS_CMD_OK;
}

static int
cmd_wait(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)arg;
	struct px *p = px_find(strtoull(host->call_arg(call, 0), NULL, 10));
	if (p == NULL)
		return host->call_error(call, "procx: no such process");
	if (p->exited)
		return cmd_show(ext, call, arg);
	if (p->waiter != NULL)
		return host->call_error(call, "procx: somebody waits already");
	p->waiter = call;
	return DREAMOS_CMD_WAIT;
}

static const struct dreamos_cmd_opt spawn_opts[] = {
    {"pipes", DREAMOS_OPT_VALUE, "N", NULL},
    {"kill-after", DREAMOS_OPT_VALUE, "S", NULL},
    {"env", DREAMOS_OPT_MULTI, "NAME=VALUE", NULL},
    {"cwd", DREAMOS_OPT_VALUE, "DIR", NULL},
    {NULL, 0, NULL, NULL},
};

static const struct dreamos_cmd_opt write_opts[] = {
    {"nl", DREAMOS_OPT_FLAG, NULL, NULL},
    {"eof", DREAMOS_OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

static int
init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	(void)config;
	host = h;
	self = ext;
	if (!DREAMOS_HOST_HAS(h, proc_spawn)) {
		h->set_error(ext, "no proc_spawn in this host");
		return -1;
	}
	struct dreamos_command c[] = {
	    {.name = "procx spawn",
	     .usage = "ARGV...",
	     .min_args = 1,
	     .max_args = -1,
	     .opts = spawn_opts,
	     .fn = cmd_spawn},
	    {.name = "procx write",
	     .usage = "ID FD [TEXT...]",
	     .min_args = 2,
	     .max_args = -1,
	     .opts = write_opts,
	     .fn = cmd_write},
	    {.name = "procx kill",
	     .usage = "ID SIGNAL",
	     .min_args = 2,
	     .max_args = 2,
	     .fn = cmd_kill},
	    {.name = "procx show", .usage = "ID", .min_args = 1, .max_args = 1, .fn = cmd_show},
	    {.name = "procx wait", .usage = "ID", .min_args = 1, .max_args = 1, .fn = cmd_wait},
	};
	for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
		c[i].size = sizeof c[i];
		c[i].help = "Child-process API test.";
		if (host->command_register(ext, &c[i]) != 0)
			return -1;
	}
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	(void)ext;
	for (int i = 0; i < MAXP; i++) {
		for (int k = 0; k < MAXFD; k++)
			free(procs[i].out[k]);
		memset(&procs[i], 0, sizeof procs[i]);
	}
}

DREAMOS_EXTENSION(.name = "procx", .version = "1.0", .description = "proc API test", .init = init,
                  .fini = fini);
