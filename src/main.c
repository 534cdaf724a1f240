/* main.c — options and mode selection: the TUI (later), --headless, --demo,
 * `dreamos ctl`, --help and --version. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "build-config.h"
#include "cmd.h"
#include "ctl.h"
#include "log.h"
#include "orch.h"
#include "runtime.h"
#include "tui.h"
#include "util.h"

static void
usage(FILE *f)
{
	fprintf(f,
	        "Usage: dreamos [OPTION]...            run the orchestrator with the TUI\n"
	        "       dreamos --headless [OPTION]... run the orchestrator in the foreground\n"
	        "       dreamos --demo [OPTION]...     run it with the bundled demo agents\n"
	        "       dreamos ctl [--runtime DIR] COMMAND [ARG]...\n"
	        "                                      run one captain command on the running "
	        "instance\n"
	        "\n"
	        "Dream.OS: an agent orchestrator operated from the terminal.\n"
	        "\n"
	        "Options:\n"
	        "  -r, --runtime DIR      runtime directory (default $DREAMOS_RUNTIME, else\n"
	        "                         $XDG_STATE_HOME/dreamos, i.e. ~/.local/state/dreamos)\n"
	        "  -c, --config FILE      configuration file (default $DREAMOS_CONFIG, else\n"
	        "                         $XDG_CONFIG_HOME/dreamos/dreamos.yaml if it exists)\n"
	        "      --bridge-port N    Bridge port (0: ephemeral, shown by 'status')\n"
	        "      --log-level LEVEL  trace, debug, info, warn, error or fatal\n"
	        "      --headless         no TUI: logs to stderr, captain commands from stdin\n"
	        "                         when it is not a terminal; stops on SIGINT/SIGTERM\n"
	        "      --demo             start the demo agents and tasks\n"
	        "  -h, --help             show this help and exit\n"
	        "  -V, --version          show the version and exit\n"
	        "\n"
	        "'dreamos ctl' exits 0 when the command succeeded, 1 when it failed, 2 on a\n"
	        "usage error and 3 when no instance runs in the runtime directory.\n"
	        "Type 'dreamos ctl help' for the captain commands.  See dreamos(1),\n"
	        "dreamos.yaml(5).\n");
}

static void
version(void)
{
	printf("dreamos %s\n"
	       "libuv %s, jansson %s, SQLite %s\n",
	       PACKAGE_VERSION, uv_version_string(), JANSSON_VERSION, sqlite3_libversion());
}

/* ---- dreamos ctl ------------------------------------------------------ */

static int
main_ctl(int argc, char **argv)
{
	const char *runtime = NULL;
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--runtime") == 0 || strcmp(argv[i], "-r") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "dreamos ctl: --runtime needs a directory\n");
				return CTL_EXIT_USAGE;
			}
			runtime = argv[++i];
		} else if (strncmp(argv[i], "--runtime=", 10) == 0) {
			runtime = argv[i] + 10;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("Usage: dreamos ctl [--runtime DIR] COMMAND [ARG]...\n"
			       "Runs one captain command on the instance that owns the runtime "
			       "directory.\n"
			       "Exit status: 0 ok, 1 command failed, 2 usage error, 3 no running "
			       "instance.\n");
			return CTL_EXIT_OK;
		} else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (argv[i][0] == '-') {
			/* Before the command, only ctl's own options. */
			fprintf(stderr,
			        "dreamos ctl: unknown option '%s' (try 'dreamos ctl --help')\n",
			        argv[i]);
			return CTL_EXIT_USAGE;
		} else {
			break;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "dreamos ctl: no command given (try 'dreamos ctl help')\n");
		return CTL_EXIT_USAGE;
	}
	char *dir = runtime_resolve(runtime);
	char *sock = path_join(dir, "dreamos.sock");
	int rc = ctl_client_run(sock, argc - i, argv + i);
	if (rc == CTL_EXIT_NOINSTANCE)
		fprintf(stderr, "dreamos ctl: start one with 'dreamos --headless --runtime %s'\n",
		        dir);
	free(sock);
	free(dir);
	return rc;
}

/* ---- captain commands on stdin (headless) ----------------------------- */

struct stdin_reader {
	struct orch *orch;
	uv_pipe_t pipe;
	uv_fs_t req;
	bool is_pipe;
	bool active;
	bool eof;
	bool busy;
	struct buf in;
	char chunk[16384];
};

static void stdin_process(struct stdin_reader *r);

static void
stdin_cmd_done(struct cmd_ctx *ctx, void *arg)
{
	struct stdin_reader *r = arg;
	if (ctx->text != NULL && *ctx->text != '\0')
		fputs(ctx->text, stdout);
	if (ctx->status != CMD_OK && !ctx->json && ctx->error != NULL)
		fprintf(stderr, "dreamos: %s\n", ctx->error);
	fflush(stdout);
	r->busy = false;
	stdin_process(r);
}

static void
stdin_cmd_stream(struct cmd_ctx *ctx, const char *text, void *arg)
{
	fputs(text, stdout);
	fflush(stdout);
}

/* Runs the complete lines read so far, one command at a time. */
static void
stdin_process(struct stdin_reader *r)
{
	while (!r->busy && r->in.len > 0 && !orch_quitting(r->orch)) {
		char *nl = memchr(r->in.data, '\n', r->in.len);
		if (nl == NULL && !r->eof)
			break;
		size_t len = nl ? (size_t)(nl - r->in.data) : r->in.len;
		char *line = xstrndup(r->in.data, len);
		buf_consume(&r->in, nl ? len + 1 : len);
		r->busy = true;
		cmd_run_line(r->orch, line, CLIENT_STDIN, "stdin", ROLE_CAPTAIN, stdin_cmd_done,
		             stdin_cmd_stream, r);
		free(line);
	}
}

static void
stdin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct stdin_reader *r = h->data;
	b->base = r->chunk;
	b->len = sizeof r->chunk;
}

static void
stdin_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct stdin_reader *r = s->data;
	if (n < 0) {
		r->eof = true;
		uv_read_stop(s);
	} else {
		buf_add(&r->in, b->base, (size_t)n);
	}
	stdin_process(r);
}

static void stdin_fs_read(struct stdin_reader *r);

static void
stdin_on_fs_read(uv_fs_t *req)
{
	struct stdin_reader *r = req->data;
	ssize_t n = req->result;
	uv_fs_req_cleanup(req);
	r->active = false;
	if (n <= 0) {
		r->eof = true;
	} else {
		buf_add(&r->in, r->chunk, (size_t)n);
	}
	stdin_process(r);
	if (!r->eof && !orch_quitting(r->orch))
		stdin_fs_read(r);
}

static void
stdin_fs_read(struct stdin_reader *r)
{
	uv_buf_t b = uv_buf_init(r->chunk, sizeof r->chunk);
	r->req.data = r;
	r->active = true;
	if (uv_fs_read(r->pipe.loop ? r->pipe.loop : uv_default_loop(), &r->req, 0, &b, 1, -1,
	               stdin_on_fs_read) != 0) {
		r->active = false;
		r->eof = true;
	}
}

/* Starts reading commands from stdin unless it is a terminal. */
static void
stdin_start(struct stdin_reader *r, uv_loop_t *loop, struct orch *o)
{
	memset(r, 0, sizeof *r);
	r->orch = o;
	buf_init(&r->in);
	r->pipe.loop = loop;
	uv_handle_type t = uv_guess_handle(0);
	if (t == UV_TTY || fcntl(0, F_GETFD) < 0)
		return;
	if (t == UV_NAMED_PIPE || t == UV_TCP) {
		uv_pipe_init(loop, &r->pipe, 0);
		r->pipe.data = r;
		if (uv_pipe_open(&r->pipe, 0) == 0 &&
		    uv_read_start((uv_stream_t *)&r->pipe, stdin_alloc, stdin_on_read) == 0) {
			r->is_pipe = true;
			return;
		}
		uv_close((uv_handle_t *)&r->pipe, NULL);
		return;
	}
	stdin_fs_read(r);
}

static void
stdin_stop(struct stdin_reader *r)
{
	if (r->is_pipe && !uv_is_closing((uv_handle_t *)&r->pipe))
		uv_close((uv_handle_t *)&r->pipe, NULL);
	r->is_pipe = false;
	if (r->active)
		uv_cancel((uv_req_t *)&r->req);
}

/* ---- the orchestrator in the foreground ------------------------------- */

struct run_state {
	struct stdin_reader stdin_reader;
	uv_loop_t *loop;
	struct tui *tui;
};

static void
on_quit(void *arg)
{
	struct run_state *rs = arg;
	stdin_stop(&rs->stdin_reader);
	tui_stop(rs->tui);
}

static int
run_foreground(const struct orch_opts *opts, bool tui)
{
	uv_loop_t loop;
	struct orch *o;
	char *cause = NULL;
	struct run_state rs = {0}; /* stdin_reader stays unused under the TUI */

	uv_loop_init(&loop);
	if (orch_new(&o, &loop, opts, &cause) != 0) {
		fprintf(stderr, "dreamos: %s\n", cause);
		free(cause);
		uv_run(&loop, UV_RUN_DEFAULT);
		uv_loop_close(&loop);
		return 1;
	}
	rs.loop = &loop;
	rs.tui = NULL;
	orch_set_quit_cb(o, on_quit, &rs);
	if (orch_start(o, &cause) != 0) {
		fprintf(stderr, "dreamos: %s\n", cause);
		free(cause);
		orch_request_quit(o, "startup failed");
	}
	if (tui && tui_start(o, &rs.tui, &cause) != 0) {
		fprintf(stderr, "dreamos: %s\n", cause);
		free(cause);
		orch_request_quit(o, "no terminal for the TUI");
	}
	orch_set_quit_on_hup(o, tui);
	if (!tui)
		stdin_start(&rs.stdin_reader, &loop, o);
	uv_run(&loop, UV_RUN_DEFAULT);
	int rc = orch_free(o);
	/* Close anything a component left open, then let the loop drain. */
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "dreamos: warning: handles left open at exit\n");
	buf_free(&rs.stdin_reader.in);
	tui_free(rs.tui);
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"runtime", required_argument, NULL, 'r'},
	    {"config", required_argument, NULL, 'c'},
	    {"bridge-port", required_argument, NULL, 'p'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"headless", no_argument, NULL, 'H'},
	    {"demo", no_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct orch_opts opts = {.bridge_port = -1};
	bool headless = false;
	int c;

	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
		return main_ctl(argc - 1, argv + 1);

	while ((c = getopt_long(argc, argv, "r:c:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			opts.runtime = optarg;
			break;
		case 'c':
			opts.config_path = optarg;
			break;
		case 'p': {
			char *end;
			errno = 0;
			long port = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || errno || port < 0 || port > 65535) {
				fprintf(stderr,
				        "dreamos: --bridge-port: expected 0-65535, got '%s'\n",
				        optarg);
				return 2;
			}
			opts.bridge_port = (int)port;
			break;
		}
		case 'l': {
			enum log_level level;
			if (!log_level_parse(optarg, &level)) { /* a usage error: exit 2 */
				fprintf(
				    stderr,
				    "dreamos: --log-level: unknown level '%s' (trace, debug, info, "
				    "warn, error, fatal)\n",
				    optarg);
				return 2;
			}
			opts.log_level = optarg;
			break;
		}
		case 'H':
			headless = true;
			break;
		case 'D':
			opts.demo = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			version();
			return 0;
		default:
			fprintf(stderr, "Try 'dreamos --help' for more information.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr,
		        "dreamos: unexpected argument '%s' (did you mean 'dreamos ctl %s'?)\n",
		        argv[optind], argv[optind]);
		return 2;
	}
	/* Without a terminal there is no TUI: say so and run headless. */
	bool tui = !headless;
	if (tui && (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))) {
		fprintf(stderr, "dreamos: no terminal for the TUI: running headless (logs on "
		                "stderr)\n");
		tui = false;
	}
	opts.log_stderr = !tui;
	opts.mode = opts.demo ? "demo" : tui ? "tui" : "headless";
	return run_foreground(&opts, tui);
}
