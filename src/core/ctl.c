/* ctl.c — the control socket server (on the loop) and the blocking
 * `dreamos ctl` client. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "cmd.h"
#include "ctl.h"
#include "log.h"
#include "orch.h"
#include "util.h"

struct ctl_conn {
	uv_pipe_t pipe;
	struct ctl_server *server;
	struct ctl_conn *next;
	struct buf in;
	bool busy;    /* a command is running */
	bool closing; /* uv_close called */
	bool closed;  /* close callback ran */
	unsigned id;
};

struct ctl_server {
	struct orch *orch;
	uv_pipe_t pipe;
	char *path;
	struct ctl_conn *conns;
	size_t nconns;
	unsigned next_id;
	bool stopping;
};

struct ctl_write {
	uv_write_t req;
	char *data;
};

static void ctl_conn_process(struct ctl_conn *c);

static void
ctl_write_done(uv_write_t *req, int status)
{
	struct ctl_write *w = (struct ctl_write *)req;
	free(w->data);
	free(w);
}

/* Sends one JSON object as a line; obj is stolen. */
static void
ctl_conn_send(struct ctl_conn *c, json_t *obj)
{
	char *s = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (s == NULL || c->closing) {
		free(s);
		return;
	}
	struct ctl_write *w = xmalloc(sizeof *w);
	w->data = xasprintf("%s\n", s);
	free(s);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)strlen(w->data));
	if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, ctl_write_done) != 0) {
		free(w->data);
		free(w);
	}
}

/* Frees a connection once its handle is closed and no command runs. */
static void
ctl_conn_maybe_free(struct ctl_conn *c)
{
	if (c->closed && !c->busy) {
		buf_free(&c->in);
		free(c);
	}
}

static void
ctl_conn_closed(uv_handle_t *h)
{
	struct ctl_conn *c = h->data;
	c->closed = true;
	ctl_conn_maybe_free(c);
}

/* Unlinks a connection from its server and closes its handle. */
static void
ctl_conn_close(struct ctl_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	struct ctl_server *s = c->server;
	for (struct ctl_conn **pp = s ? &s->conns : NULL; pp != NULL && *pp != NULL;
	     pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	/* Detached now: the close callback may run after the server is freed
	 * (a connection closing while dreamos quits; found by valgrind). */
	if (s != NULL)
		s->nconns--;
	c->server = NULL;
	uv_close((uv_handle_t *)&c->pipe, ctl_conn_closed);
}

static void
ctl_cmd_stream(struct cmd_ctx *ctx, const char *text, void *arg)
{
	struct ctl_conn *c = arg;
	if (!c->closing)
		ctl_conn_send(c, json_pack("{s:s}", "stream", text));
}

static void
ctl_cmd_done(struct cmd_ctx *ctx, void *arg)
{
	struct ctl_conn *c = arg;
	c->busy = false;
	if (c->closing) {
		/* The client went away while the command ran. */
		ctl_conn_maybe_free(c);
		return;
	}
	json_t *reply = json_pack("{s:i,s:s}", "status", (int)ctx->status, "output",
	                          ctx->text ? ctx->text : "");
	if (ctx->status != CMD_OK && ctx->error != NULL)
		json_object_set_new(reply, "error", json_string(ctx->error));
	ctl_conn_send(c, reply);
	/* Further requests that arrived meanwhile. */
	ctl_conn_process(c);
}

/* Answers a malformed request with a usage error. */
static void
ctl_conn_reject(struct ctl_conn *c, const char *why)
{
	ctl_conn_send(c, json_pack("{s:i,s:s,s:s}", "status", 2, "output", "", "error", why));
}

/* Handles one request line. */
static void
ctl_conn_request(struct ctl_conn *c, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, 0, &jerr);
	if (!json_is_object(req)) {
		ctl_conn_reject(c, "malformed control request (not a JSON object)");
		json_decref(req);
		return;
	}
	json_t *proto = json_object_get(req, "proto");
	if (!json_is_integer(proto) || json_integer_value(proto) != CTL_PROTO) {
		ctl_conn_reject(c, "control protocol version mismatch: this dreamos speaks 1");
		json_decref(req);
		return;
	}
	json_t *jargv = json_object_get(req, "argv");
	size_t n = json_array_size(jargv);
	if (!json_is_array(jargv) || n == 0) {
		ctl_conn_reject(c, "no command given (try 'help')");
		json_decref(req);
		return;
	}
	char **argv = xcalloc(n + 1, sizeof *argv);
	for (size_t i = 0; i < n; i++) {
		const char *w = json_string_value(json_array_get(jargv, i));
		argv[i] = xstrdup(w ? w : "");
	}
	json_decref(req);
	c->busy = true;
	char name[32];
	snprintf(name, sizeof name, "ctl#%u", c->id);
	cmd_run_argv(c->server->orch, (int)n, argv, CLIENT_CTL, name, ROLE_CAPTAIN, ctl_cmd_done,
	             ctl_cmd_stream, c);
	cmd_free_argv((int)n, argv);
}

/* Runs complete request lines while no command is in progress. */
static void
ctl_conn_process(struct ctl_conn *c)
{
	while (!c->busy && !c->closing) {
		char *nl = memchr(c->in.data, '\n', c->in.len);
		if (nl == NULL)
			break;
		size_t len = (size_t)(nl - c->in.data);
		char *line = xstrndup(c->in.data, len);
		buf_consume(&c->in, len + 1);
		ctl_conn_request(c, line, len);
		free(line);
	}
}

static void
ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct ctl_conn *c = h->data;
	buf_reserve(&c->in, 65536);
	b->base = c->in.data + c->in.len;
	b->len = c->in.cap - c->in.len - 1;
}

static void
ctl_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct ctl_conn *c = st->data;
	if (nread < 0) {
		ctl_conn_close(c);
		return;
	}
	c->in.len += (size_t)nread;
	c->in.data[c->in.len] = '\0';
	if (c->in.len > CTL_MAX_REQUEST && memchr(c->in.data, '\n', c->in.len) == NULL) {
		ctl_conn_reject(c, "control request too large");
		ctl_conn_close(c);
		return;
	}
	ctl_conn_process(c);
}

static void
ctl_on_connection(uv_stream_t *server, int status)
{
	struct ctl_server *s = server->data;
	if (status < 0)
		return;
	struct ctl_conn *c = xcalloc(1, sizeof *c);
	c->server = s;
	c->id = ++s->next_id;
	buf_init(&c->in);
	uv_pipe_init(server->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
		c->closing = true;
		c->server = NULL;
		uv_close((uv_handle_t *)&c->pipe, ctl_conn_closed);
		return;
	}
	c->next = s->conns;
	s->conns = c;
	s->nconns++;
	uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_read);
}

static void
ctl_server_closed(uv_handle_t *h)
{
	struct ctl_server *s = h->data;
	free(s->path);
	free(s);
}

int
ctl_server_start(struct orch *o, const char *path, struct ctl_server **out, char **cause)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof sun.sun_path) {
		*cause = xasprintf("%s: control socket path too long (max %zu bytes): use a "
		                   "shorter --runtime",
		                   path, sizeof sun.sun_path - 1);
		return -1;
	}
	struct ctl_server *s = xcalloc(1, sizeof *s);
	s->orch = o;
	s->path = xstrdup(path);
	/* We hold the runtime lock, so a socket file here is a crashed
	 * instance's leftover. */
	unlink(path);
	uv_pipe_init(orch_loop(o), &s->pipe, 0);
	s->pipe.data = s;
	mode_t old = umask(0077);
	int rc = uv_pipe_bind(&s->pipe, path);
	umask(old);
	if (rc == 0) {
		chmod(path, 0600);
		rc = uv_listen((uv_stream_t *)&s->pipe, 64, ctl_on_connection);
	}
	if (rc != 0) {
		*cause = xasprintf("%s: cannot listen: %s", path, uv_strerror(rc));
		/* s is freed by the close callback when the loop runs. */
		s->stopping = true;
		uv_close((uv_handle_t *)&s->pipe, ctl_server_closed);
		*out = NULL;
		return -1;
	}
	*out = s;
	return 0;
}

void
ctl_server_stop(struct ctl_server *s)
{
	if (s == NULL || s->stopping)
		return;
	s->stopping = true;
	/* Close callbacks may run after the server is freed, so detach. */
	while (s->conns != NULL) {
		struct ctl_conn *c = s->conns;
		ctl_conn_close(c);
		c->server = NULL;
	}
	unlink(s->path);
	uv_close((uv_handle_t *)&s->pipe, ctl_server_closed);
}

size_t
ctl_server_clients(const struct ctl_server *s)
{
	return s ? s->nconns : 0;
}

/* ---- client ----------------------------------------------------------- */

/* Writes all of buf to fd. */
static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int
ctl_client_run(const char *sock_path, int argc, char **argv)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(sock_path) >= sizeof sun.sun_path) {
		fprintf(stderr, "dreamos ctl: %s: socket path too long\n", sock_path);
		return CTL_EXIT_USAGE;
	}
	strcpy(sun.sun_path, sock_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "dreamos ctl: socket: %s\n", strerror(errno));
		return CTL_EXIT_NOINSTANCE;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		fprintf(stderr, "dreamos ctl: no running dreamos instance (%s: %s)\n", sock_path,
		        strerror(errno));
		close(fd);
		return CTL_EXIT_NOINSTANCE;
	}
	json_t *jargv = json_array();
	for (int i = 0; i < argc; i++)
		json_array_append_new(jargv, json_string(argv[i]));
	json_t *req = json_pack("{s:i,s:o}", "proto", CTL_PROTO, "argv", jargv);
	char *s = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	char *line = xasprintf("%s\n", s);
	free(s);
	if (write_all(fd, line, strlen(line)) != 0) {
		fprintf(stderr, "dreamos ctl: write: %s\n", strerror(errno));
		free(line);
		close(fd);
		return CTL_EXIT_NOINSTANCE;
	}
	free(line);

	struct buf in;
	buf_init(&in);
	int rc = CTL_EXIT_NOINSTANCE;
	for (;;) {
		char *nl;
		while ((nl = in.data ? memchr(in.data, '\n', in.len) : NULL) != NULL) {
			size_t len = (size_t)(nl - in.data);
			json_t *msg = json_loadb(in.data, len, 0, NULL);
			buf_consume(&in, len + 1);
			if (msg == NULL)
				continue;
			json_t *stream = json_object_get(msg, "stream");
			if (json_is_string(stream)) {
				fputs(json_string_value(stream), stdout);
				fflush(stdout);
				json_decref(msg);
				continue;
			}
			json_t *st = json_object_get(msg, "status");
			const char *out = json_string_value(json_object_get(msg, "output"));
			const char *err = json_string_value(json_object_get(msg, "error"));
			if (out != NULL)
				fputs(out, stdout);
			if (err != NULL && (out == NULL || *out == '\0'))
				fprintf(stderr, "dreamos: %s\n", err);
			rc = (int)json_integer_value(st);
			json_decref(msg);
			goto done;
		}
		buf_reserve(&in, 65536);
		ssize_t n = read(fd, in.data + in.len, in.cap - in.len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "dreamos ctl: the instance closed the connection\n");
			rc = CTL_EXIT_FAILED;
			goto done;
		}
		in.len += (size_t)n;
	}
done:
	buf_free(&in);
	close(fd);
	fflush(stdout);
	return rc;
}
