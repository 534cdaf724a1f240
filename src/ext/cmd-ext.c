/* cmd-ext.c — ext list | info | load | unload | reload.  The entries live
 * in the extension system (struct exts), one registration each, so a
 * handler finds its system from ctx->entry without a global. */
#include <stdlib.h>
#include <string.h>

#include "ext-int.h"

/* The system behind a command context. */
static struct exts *
ext_of(const struct cmd_ctx *ctx)
{
	return ((const struct ext_core_cmd *)(const void *)ctx->entry)->es;
}

static enum cmd_retval
cmd_ext_list_exec(struct cmd_ctx *ctx)
{
	struct exts *es = ext_of(ctx);
	json_t *rows = json_array();
	for (size_t i = 0; i < es->n; i++)
		json_array_append_new(rows, ext_json(es->v[i], false));
	if (cmd_flag(ctx, "all")) {
		json_t *more = ext_available_json(es);
		json_array_extend(rows, more);
		json_decref(more);
	}
	return cmd_result(ctx, rows);
}

static void
cmd_ext_list_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	struct exts *es = ext_of(ctx);
	if (json_array_size(r) == 0) {
		buf_addf(out, "no extensions loaded (directory %s)\n", es->dir);
		return;
	}
	static const char *const cols[] = {"name",     "version",     "state", "reloads",
	                                   "requires", "description", NULL};
	cmd_render_table(r, cols, out);
}

static enum cmd_retval
cmd_ext_info_exec(struct cmd_ctx *ctx)
{
	struct exts *es = ext_of(ctx);
	struct dreamos_ext *x = ext_find(es, cmd_arg(ctx, 0));
	if (x == NULL)
		return cmd_error(ctx, "ext info: extension '%s' is not loaded", cmd_arg(ctx, 0));
	return cmd_result(ctx, ext_json(x, true));
}

static enum cmd_retval
cmd_ext_load_exec(struct cmd_ctx *ctx)
{
	struct exts *es = ext_of(ctx);
	const char **what = xcalloc((size_t)ctx->argc + 1, sizeof *what);
	for (int i = 0; i < ctx->argc; i++)
		what[i] = cmd_arg(ctx, i);
	size_t before = es->n;
	char *cause = NULL;
	int failed = ext_load(es, what, (size_t)ctx->argc, &cause);
	free(what);
	json_t *loaded = json_array();
	for (size_t i = before; i < es->n; i++)
		json_array_append_new(loaded, ext_json(es->v[i], false));
	if (failed > 0) {
		enum cmd_retval rv;
		if (json_array_size(loaded) > 0) {
			struct buf b;
			buf_init(&b);
			for (size_t i = 0; i < json_array_size(loaded); i++)
				buf_addf(&b, "%s%s", i ? ", " : "",
				         json_string_value(
				             json_object_get(json_array_get(loaded, i), "name")));
			rv = cmd_error(ctx, "ext load: %s (loaded: %s)", cause, b.data);
			buf_free(&b);
		} else {
			rv = cmd_error(ctx, "ext load: %s", cause);
		}
		json_decref(loaded);
		free(cause);
		return rv;
	}
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < json_array_size(loaded); i++) {
		json_t *r = json_array_get(loaded, i);
		buf_addf(&b, "%sloaded %s %s", i ? "\n" : "",
		         json_string_value(json_object_get(r, "name")),
		         json_string_value(json_object_get(r, "version")));
	}
	json_t *res = json_pack("{s:s,s:o}", "message", b.data ? b.data : "", "loaded", loaded);
	buf_free(&b);
	return cmd_result(ctx, res);
}

/* `ext load` prints its message only. */
static void
cmd_ext_message_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	(void)ctx;
	buf_addf(out, "%s\n", json_string_value(json_object_get(r, "message")));
}

static enum cmd_retval
cmd_ext_unload_exec(struct cmd_ctx *ctx)
{
	struct exts *es = ext_of(ctx);
	const char *name = cmd_arg(ctx, 0);
	size_t before = es->n;
	char *cause = NULL;
	if (ext_unload(es, name, cmd_flag(ctx, "force"), &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "ext unload: %s", cause);
		free(cause);
		return rv;
	}
	size_t gone = before - es->n;
	if (gone > 1)
		return cmd_message(ctx, "unloaded %s and %zu extension%s that required it", name,
		                   gone - 1, gone == 2 ? "" : "s");
	return cmd_message(ctx, "unloaded %s", name);
}

static enum cmd_retval
cmd_ext_reload_exec(struct cmd_ctx *ctx)
{
	struct exts *es = ext_of(ctx);
	const char *name = cmd_arg(ctx, 0);
	char *cause = NULL;
	if (ext_reload(es, name, &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "ext reload: %s", cause);
		free(cause);
		return rv;
	}
	struct dreamos_ext *x = ext_find(es, name);
	return cmd_message(ctx, "reloaded %s %s", name, x ? x->version : "?");
}

static const struct cmd_opt list_opts[] = {
    {"all", OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_opt unload_opts[] = {
    {"force", OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

static const struct cmd_entry ext_entries[EXT_CORE_CMDS] = {
    {
        .name = "ext list",
        .usage = "[--all]",
        .help = "Lists the loaded extensions: version, state, how often they were "
                "reloaded, what they require.  With --all, also the extensions of the "
                "directory that are not loaded.",
        .max_args = 0,
        .opts = list_opts,
        .role = ROLE_OBSERVER,
        .exec = cmd_ext_list_exec,
        .print = cmd_ext_list_print,
    },
    {
        .name = "ext info",
        .usage = "NAME",
        .help = "Shows one extension: its file and private copy, what it requires and what "
                "requires it, and what it holds (commands, agent types, agents, timers, "
                "subscriptions, requests in flight).",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "ext",
        .role = ROLE_OBSERVER,
        .exec = cmd_ext_info_exec,
    },
    {
        .name = "ext load",
        .usage = "NAME|PATH...",
        .help = "Loads extensions by name from the extensions directory, or by path, with "
                "what they require, dependencies first.  One that fails (a missing or too "
                "old requirement, a cycle, a wrong API version) does not stop the others.",
        .min_args = 1,
        .max_args = -1,
        .complete_args = "ext-file",
        .role = ROLE_CAPTAIN,
        .exec = cmd_ext_load_exec,
        .print = cmd_ext_message_print,
    },
    {
        .name = "ext unload",
        .usage = "NAME [--force]",
        .help = "Unloads an extension: its agents stop, and everything it registered "
                "(commands, agent types, timers, subscriptions, requests) is swept.  "
                "Refused if other extensions require it, unless --force, which unloads them "
                "first.",
        .min_args = 1,
        .max_args = 1,
        .opts = unload_opts,
        .complete_args = "ext",
        .role = ROLE_CAPTAIN,
        .exec = cmd_ext_unload_exec,
    },
    {
        .name = "ext reload",
        .usage = "NAME",
        .help = "Loads the extension's file again, handing its state to the new version "
                "(save_state, unload, load, restore_state).  If the new version cannot be "
                "loaded, the old one keeps running.  Changed files are reloaded by "
                "themselves.",
        .min_args = 1,
        .max_args = 1,
        .complete_args = "ext",
        .role = ROLE_CAPTAIN,
        .exec = cmd_ext_reload_exec,
    },
};

void
ext_cmds_init(struct exts *es)
{
	for (size_t i = 0; i < EXT_CORE_CMDS; i++) {
		es->cmds[i].entry = ext_entries[i];
		es->cmds[i].es = es;
	}
}
