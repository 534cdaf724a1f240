/* fuzz-cmd.c — a libFuzzer target for the CaptainPhone command layer
 * (cmd.c): the line splitter, lookup by exact name and unique prefix, the
 * option parser, --help and --json, completion, and the result renderers,
 * against the real command table of a real orchestrator.
 *
 * The orchestrator is made once, in a temporary runtime directory.  Its
 * table keeps every command's name, usage, options, argument counts and
 * completion hints, but the handlers are replaced by one that echoes what it
 * was given (so that fuzzed lines cannot stop the orchestrator, spawn
 * programs or write files), except the read-only `help` and `logs`, which
 * run for real.  The copies run as observer commands so that no line is
 * written to the audit log.
 *
 * Input: the first byte chooses what the rest is.
 *   bit 0   0: a command line (up to the first NUL, at most 4 KiB) run with
 *           cmd_run_line, redacted as the TUI's history keeps it
 *           (cmd_line_redacted), then completed at its last word;
 *           1: a JSON document given to the generic renderer and, if it is
 *           an array, to the table renderer with its first object's keys
 *   bit 1   --json is added to the line
 * Checks: done is called exactly once with text; a failure has a one-line
 * error; with --json the text is one JSON document. */
#include <ftw.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "fuzz-check.h"
#include "cmd.h"
#include "orch.h"

static char *runtime_dir;
static uv_loop_t loop;
static struct orch *orch;

/* Echoes positionals and options, and reads them as handlers do. */
static enum cmd_retval
echo_exec(struct cmd_ctx *ctx)
{
	json_t *r = json_object();
	json_t *args = json_array();
	for (int i = 0; i < ctx->argc; i++)
		json_array_append_new(args, json_string(cmd_arg(ctx, i)));
	json_object_set_new(r, "args", args);
	json_object_set(r, "opts", ctx->opts);
	char *joined = cmd_args_join(ctx, 0);
	json_object_set_new(r, "joined", json_string(joined));
	free(joined);
	for (const struct cmd_opt *o = ctx->entry->opts; o != NULL && o->name != NULL; o++) {
		if (o->kind == OPT_MULTI) {
			for (size_t i = 0; i < cmd_opt_count(ctx, o->name); i++)
				(void)cmd_opt_at(ctx, o->name, i);
		} else if (o->kind == OPT_FLAG) {
			(void)cmd_flag(ctx, o->name);
		} else {
			long v = 0;
			if (!cmd_opt_int(ctx, o->name, -1000, 1000000, &v)) {
				json_decref(r);
				return CMD_ERROR; /* ctx error set */
			}
		}
	}
	if (ctx->argc > 0 && strcmp(ctx->argv[0], "fail") == 0) {
		json_decref(r);
		return cmd_error(ctx, "%s: failed as asked", ctx->entry->name);
	}
	return cmd_result(ctx, r);
}

static int
rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Removes the runtime directory at exit. */
static void
rm_runtime(void)
{
	if (runtime_dir != NULL)
		nftw(runtime_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Makes the orchestrator and swaps the handlers (see above). */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("TMPDIR");
	char tmpl[4096];
	snprintf(tmpl, sizeof tmpl, "%s/dreamos-fuzz-cmd-XXXXXX", base ? base : "/tmp");
	if (mkdtemp(tmpl) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	runtime_dir = strdup(tmpl);
	atexit(rm_runtime);
	setenv("DREAMOS_CONFIG", "", 1);
	setenv("XDG_CONFIG_HOME", runtime_dir, 1);
	uv_loop_init(&loop);
	struct orch_opts o = {.runtime = runtime_dir, .bridge_port = -1, .mode = "fuzz"};
	char *cause = NULL;
	if (orch_new(&orch, &loop, &o, &cause) != 0) {
		fprintf(stderr, "fuzz-cmd: orch_new: %s\n", cause);
		exit(1);
	}
	struct cmd_table *t = orch_cmds(orch);
	size_t n = cmd_table_count(t);
	struct cmd_entry *copies = calloc(n, sizeof *copies);
	char **owners = calloc(n, sizeof *owners);
	for (size_t i = 0; i < n; i++) {
		copies[i] = *cmd_table_get(t, i);
		owners[i] = strdup(cmd_table_owner(t, i));
		if (strcmp(copies[i].name, "help") != 0 && strcmp(copies[i].name, "logs") != 0) {
			copies[i].exec = echo_exec;
			copies[i].print = NULL; /* the real ones expect the real results */
		}
		copies[i].role = ROLE_OBSERVER;
	}
	for (size_t i = 0; i < n; i++)
		cmd_unregister_owner(t, owners[i]);
	if (cmd_table_count(t) != 0 || cmd_register(t, copies, n, "fuzz") != 0) {
		fprintf(stderr, "fuzz-cmd: cannot swap the command table\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		free(owners[i]);
	free(owners);
	fprintf(stderr, "fuzz-cmd: %zu commands\n", n);
	return 0;
}

struct outcome {
	int calls;
};

static void
done(struct cmd_ctx *ctx, void *arg)
{
	struct outcome *o = arg;
	o->calls++;
	FUZZ_CHECK(ctx->text != NULL);
	FUZZ_CHECK(ctx->status == CMD_OK || (ctx->error != NULL && ctx->error[0] != '\0' &&
	                                     strchr(ctx->error, '\n') == NULL));
	if (ctx->json && ctx->text[0] != '\0') {
		json_error_t je;
		json_t *j = json_loads(ctx->text, JSON_DECODE_ANY, &je);
		if (j == NULL) {
			fprintf(stderr, "not JSON: %s\n(%s)\n", ctx->text, je.text);
			abort();
		}
		json_decref(j);
	}
}

static void
add_candidate(const char *word, void *arg)
{
	size_t *n = arg;
	FUZZ_CHECK(word != NULL);
	(*n)++;
}

/* Runs line and completes its last word. */
static void
run_line(const char *line)
{
	struct outcome o = {0};
	cmd_run_line(orch, line, CLIENT_INTERNAL, "fuzz", ROLE_CAPTAIN, done, NULL, &o);
	FUZZ_CHECK(o.calls == 1);

	/* what the TUI's history keeps of the line: NULL, or a redacted copy */
	char *kept = cmd_line_redacted(orch, line);
	FUZZ_CHECK(kept == NULL || strstr(kept, "[redacted]") != NULL);
	free(kept);

	int argc;
	char **argv;
	char *cause = NULL;
	if (cmd_split(line, &argc, &argv, &cause) != 0) {
		FUZZ_CHECK(cause != NULL);
		free(cause);
		return;
	}
	size_t n = 0;
	const char *partial = argc > 0 ? argv[argc - 1] : "";
	cmd_complete(orch_cmds(orch), orch, argc > 0 ? argc - 1 : 0, argv, partial, add_candidate,
	             &n);
	int consumed = 0;
	const struct cmd_entry *e = cmd_find(orch_cmds(orch), argc, argv, &consumed, &cause);
	if (e == NULL) {
		FUZZ_CHECK(argc == 0 || cause != NULL);
		free(cause);
	} else {
		FUZZ_CHECK(consumed >= 1 && consumed <= 2 && consumed <= argc);
		char *u = cmd_usage_line(e);
		free(u);
	}
	cmd_free_argv(argc, argv);
}

/* Renders the JSON document in data. */
static void
render(const char *data, size_t size)
{
	json_error_t je;
	json_t *j = json_loadb(data, size, JSON_DECODE_ANY, &je);
	if (j == NULL)
		return;
	struct buf out;
	buf_init(&out);
	cmd_render_generic(j, &out);
	if (json_is_array(j) && json_is_object(json_array_get(j, 0))) {
		const char *cols[9];
		size_t n = 0;
		const char *key;
		json_t *v;
		json_object_foreach(json_array_get(j, 0), key, v)
		{
			if (n < 8)
				cols[n++] = key;
		}
		cols[n] = NULL;
		cmd_render_table(j, cols, &out);
	}
	buf_free(&out);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > 4096)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;
	if (mode & 1) {
		render((const char *)data, size);
		return 0;
	}
	char *line = malloc(size + 8);
	memcpy(line, data, size);
	line[size] = '\0';
	if (mode & 2) {
		size_t n = strlen(line);
		memcpy(line + n, " --json", 8);
	}
	run_line(line);
	free(line);
	return 0;
}
