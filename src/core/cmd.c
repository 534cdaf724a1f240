/* cmd.c — the command table, line splitting, lookup, option parsing, the
 * run/finish cycle of a command and the generic text renderer. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "orch.h"

/* Reals in results to 15 significant digits: 367.835, not the
 * 367.83499999999998 that 17 give for the same double. */
#define CMD_JSON_REAL JSON_REAL_PRECISION(15)

struct cmd_slot {
	const struct cmd_entry *entry;
	char *owner;
};

struct cmd_table {
	struct cmd_slot *slots;
	size_t n, cap;
};

/* Returns a new empty table; free with cmd_table_free. */
struct cmd_table *
cmd_table_new(void)
{
	return xcalloc(1, sizeof(struct cmd_table));
}

void
cmd_table_free(struct cmd_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->slots[i].owner);
	free(t->slots);
	free(t);
}

/* Returns the slot index of the entry named exactly name, or -1. */
static long
cmd_table_index(const struct cmd_table *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->slots[i].entry->name, name) == 0)
			return (long)i;
	}
	return -1;
}

int
cmd_register(struct cmd_table *t, const struct cmd_entry *entries, size_t n, const char *owner)
{
	for (size_t i = 0; i < n; i++) {
		if (cmd_table_index(t, entries[i].name) >= 0)
			return -1;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(entries[i].name, entries[j].name) == 0)
				return -1;
		}
	}
	if (t->n + n > t->cap) {
		t->cap = (t->n + n) * 2;
		t->slots = xreallocarray(t->slots, t->cap, sizeof *t->slots);
	}
	for (size_t i = 0; i < n; i++) {
		t->slots[t->n].entry = &entries[i];
		t->slots[t->n].owner = xstrdup(owner);
		t->n++;
	}
	return 0;
}

size_t
cmd_unregister_owner(struct cmd_table *t, const char *owner)
{
	size_t kept = 0, removed = 0;
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->slots[i].owner, owner) == 0) {
			free(t->slots[i].owner);
			removed++;
		} else {
			t->slots[kept++] = t->slots[i];
		}
	}
	t->n = kept;
	return removed;
}

size_t
cmd_table_count(const struct cmd_table *t)
{
	return t->n;
}

const struct cmd_entry *
cmd_table_get(const struct cmd_table *t, size_t i)
{
	return i < t->n ? t->slots[i].entry : NULL;
}

const char *
cmd_table_owner(const struct cmd_table *t, size_t i)
{
	return i < t->n ? t->slots[i].owner : NULL;
}

/* ---- splitting -------------------------------------------------------- */

void
cmd_free_argv(int argc, char **argv)
{
	if (argv == NULL)
		return;
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
}

int
cmd_split(const char *line, int *argcp, char ***argvp, char **cause)
{
	int argc = 0, cap = 8;
	char **argv = xcalloc((size_t)cap + 1, sizeof *argv);
	struct buf word;
	const char *p = line;

	buf_init(&word);
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (*p == '\0')
			break;
		bool have = false;
		word.len = 0;
		char quote = 0;
		for (; *p != '\0'; p++) {
			char c = *p;
			if (quote == 0 && (c == ' ' || c == '\t' || c == '\n' || c == '\r'))
				break;
			if (quote == 0 && (c == '\'' || c == '"')) {
				quote = c;
				have = true;
				continue;
			}
			if (quote != 0 && c == quote) {
				quote = 0;
				continue;
			}
			if (c == '\\' && quote != '\'') {
				if (p[1] == '\0') {
					*cause = xstrdup("trailing backslash");
					goto fail;
				}
				p++;
				c = *p;
				if (quote == '"' && c != '"' && c != '\\')
					buf_add(&word, "\\", 1);
			}
			buf_add(&word, &c, 1);
			have = true;
		}
		if (quote != 0) {
			*cause =
			    xasprintf("unterminated %s quote", quote == '"' ? "double" : "single");
			goto fail;
		}
		if (!have)
			continue;
		if (argc == cap) {
			cap *= 2;
			argv = xreallocarray(argv, (size_t)cap + 1, sizeof *argv);
		}
		argv[argc++] = word.len ? xstrndup(word.data, word.len) : xstrdup("");
		argv[argc] = NULL;
	}
	buf_free(&word);
	*argcp = argc;
	*argvp = argv;
	return 0;
fail:
	buf_free(&word);
	cmd_free_argv(argc, argv);
	return -1;
}

/* ---- lookup ----------------------------------------------------------- */

/* Copies the first word of an entry name into out. */
static void
first_word(const char *name, char *out, size_t len)
{
	size_t n = strcspn(name, " ");
	if (n >= len)
		n = len - 1;
	memcpy(out, name, n);
	out[n] = '\0';
}

/* Returns the second word of an entry name, or NULL for a one-word name. */
static const char *
second_word(const char *name)
{
	const char *sp = strchr(name, ' ');
	return sp ? sp + 1 : NULL;
}

static bool
has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Resolves the first word (the group) to a distinct group name.  Returns 0
 * and the group in out, or -1 with *cause. */
static int
cmd_find_group(const struct cmd_table *t, const char *word, char *out, size_t len, char **cause)
{
	char fw[64];
	struct buf cands;
	int ncands = 0;

	for (size_t i = 0; i < t->n; i++) {
		const struct cmd_entry *e = t->slots[i].entry;
		first_word(e->name, fw, sizeof fw);
		if (strcmp(fw, word) == 0 || (e->alias != NULL && strcmp(e->alias, word) == 0)) {
			first_word(e->name, out, len);
			return 0;
		}
	}
	buf_init(&cands);
	for (size_t i = 0; i < t->n; i++) {
		first_word(t->slots[i].entry->name, fw, sizeof fw);
		if (!has_prefix(fw, word))
			continue;
		/* Count each group once. */
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++) {
			char fw2[64];
			first_word(t->slots[j].entry->name, fw2, sizeof fw2);
			seen = strcmp(fw, fw2) == 0;
		}
		if (seen)
			continue;
		if (ncands++ == 0)
			snprintf(out, len, "%s", fw);
		buf_addf(&cands, "%s%s", cands.len ? ", " : "", fw);
	}
	if (ncands == 1) {
		buf_free(&cands);
		return 0;
	}
	if (ncands == 0)
		*cause = xasprintf("unknown command: %s (try 'help')", word);
	else
		*cause = xasprintf("ambiguous command: %s, could be: %s", word, cands.data);
	buf_free(&cands);
	return -1;
}

const struct cmd_entry *
cmd_find(const struct cmd_table *t, int argc, char **argv, int *consumed, char **cause)
{
	char group[64];
	const struct cmd_entry *single = NULL;
	bool has_subs = false;

	if (argc < 1) {
		*cause = xstrdup("no command given (try 'help')");
		return NULL;
	}
	if (cmd_find_group(t, argv[0], group, sizeof group, cause) != 0)
		return NULL;
	for (size_t i = 0; i < t->n; i++) {
		const struct cmd_entry *e = t->slots[i].entry;
		char fw[64];
		first_word(e->name, fw, sizeof fw);
		if (strcmp(fw, group) != 0)
			continue;
		if (second_word(e->name) == NULL)
			single = e;
		else
			has_subs = true;
	}
	if (!has_subs) {
		*consumed = 1;
		return single;
	}

	/* A group with subcommands: match the second word. */
	struct buf names;
	buf_init(&names);
	const struct cmd_entry *match = NULL;
	int nmatch = 0;
	for (int pass = 0; pass < 2 && nmatch == 0; pass++) {
		for (size_t i = 0; i < t->n; i++) {
			const struct cmd_entry *e = t->slots[i].entry;
			char fw[64];
			first_word(e->name, fw, sizeof fw);
			const char *sw = second_word(e->name);
			if (strcmp(fw, group) != 0 || sw == NULL)
				continue;
			if (pass == 0)
				buf_addf(&names, "%s%s", names.len ? ", " : "", sw);
			if (argc < 2)
				continue;
			bool ok = pass == 0 ? strcmp(sw, argv[1]) == 0 : has_prefix(sw, argv[1]);
			if (ok) {
				if (nmatch++ == 0)
					match = e;
			}
		}
	}
	if (nmatch == 1) {
		buf_free(&names);
		*consumed = 2;
		return match;
	}
	if (single != NULL) {
		/* "history NAME" style: the group is also a command by itself. */
		buf_free(&names);
		*consumed = 1;
		return single;
	}
	if (argc < 2)
		*cause = xasprintf("%s: missing subcommand (one of: %s)", group, names.data);
	else if (nmatch == 0)
		*cause = xasprintf("%s: unknown subcommand '%s' (one of: %s)", group, argv[1],
		                   names.data);
	else
		*cause = xasprintf("%s: ambiguous subcommand '%s' (one of: %s)", group, argv[1],
		                   names.data);
	buf_free(&names);
	return NULL;
}

char *
cmd_usage_line(const struct cmd_entry *e)
{
	if (e->usage == NULL || *e->usage == '\0')
		return xstrdup(e->name);
	return xasprintf("%s %s", e->name, e->usage);
}

/* ---- option parsing --------------------------------------------------- */

static const struct cmd_opt json_opt = {"json", OPT_FLAG, NULL, NULL};
static const struct cmd_opt help_opt = {"help", OPT_FLAG, NULL, NULL};

/* Finds option name in e's options (or the universal ones). */
static const struct cmd_opt *
cmd_find_opt(const struct cmd_entry *e, const char *name)
{
	if (strcmp(name, "json") == 0)
		return &json_opt;
	if (strcmp(name, "help") == 0)
		return &help_opt;
	for (const struct cmd_opt *o = e->opts; o != NULL && o->name != NULL; o++) {
		if (strcmp(o->name, name) == 0)
			return o;
	}
	return NULL;
}

/* Parses the words after the command name into ctx's positionals and
 * options.  Returns 0, or -1 with ctx->error set. */
static int
cmd_parse_args(struct cmd_ctx *ctx, int argc, char **argv)
{
	const struct cmd_entry *e = ctx->entry;
	bool only_pos = false;

	ctx->opts = json_object();
	ctx->argv = xcalloc((size_t)argc + 1, sizeof(char *));
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i];
		if (only_pos || strncmp(w, "--", 2) != 0 || w[2] == '\0') {
			if (!only_pos && strcmp(w, "--") == 0) {
				only_pos = true;
				continue;
			}
			ctx->argv[ctx->argc++] = xstrdup(w);
			continue;
		}
		char name[64];
		const char *eq = strchr(w + 2, '=');
		size_t nlen = eq ? (size_t)(eq - (w + 2)) : strlen(w + 2);
		if (nlen >= sizeof name)
			nlen = sizeof name - 1;
		memcpy(name, w + 2, nlen);
		name[nlen] = '\0';
		const struct cmd_opt *o = cmd_find_opt(e, name);
		if (o == NULL) {
			ctx->error = xasprintf("%s: unknown option --%s (try 'help %s')", e->name,
			                       name, e->name);
			return -1;
		}
		if (o->kind == OPT_FLAG) {
			if (eq != NULL) {
				ctx->error =
				    xasprintf("%s: option --%s takes no value", e->name, name);
				return -1;
			}
			json_object_set_new(ctx->opts, name, json_true());
			continue;
		}
		const char *val;
		if (eq != NULL) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			ctx->error = xasprintf("%s: option --%s needs a value%s%s", e->name, name,
			                       o->arg ? " " : "", o->arg ? o->arg : "");
			return -1;
		}
		if (o->kind == OPT_VALUE) {
			json_object_set_new(ctx->opts, name, json_string(val));
		} else {
			json_t *arr = json_object_get(ctx->opts, name);
			if (arr == NULL) {
				arr = json_array();
				json_object_set_new(ctx->opts, name, arr);
			}
			json_array_append_new(arr, json_string(val));
		}
	}
	if (cmd_flag(ctx, "help"))
		return 0;
	if (ctx->argc < e->min_args || (e->max_args >= 0 && ctx->argc > e->max_args)) {
		char *u = cmd_usage_line(e);
		ctx->error = xasprintf(
		    "%s: %s (usage: %s)", e->name,
		    ctx->argc < e->min_args ? "missing argument" : "too many arguments", u);
		free(u);
		return -1;
	}
	return 0;
}

/* ---- accessors for handlers ------------------------------------------- */

const char *
cmd_arg(const struct cmd_ctx *ctx, int i)
{
	return i >= 0 && i < ctx->argc ? ctx->argv[i] : NULL;
}

char *
cmd_args_join(const struct cmd_ctx *ctx, int from)
{
	struct buf b;
	buf_init(&b);
	for (int i = from; i < ctx->argc; i++)
		buf_addf(&b, "%s%s", i > from ? " " : "", ctx->argv[i]);
	if (b.data == NULL)
		return xstrdup("");
	return b.data;
}

const char *
cmd_opt(const struct cmd_ctx *ctx, const char *name)
{
	json_t *v = json_object_get(ctx->opts, name);
	if (json_is_array(v))
		v = json_array_get(v, json_array_size(v) - 1);
	return json_string_value(v);
}

bool
cmd_flag(const struct cmd_ctx *ctx, const char *name)
{
	return json_is_true(json_object_get(ctx->opts, name));
}

size_t
cmd_opt_count(const struct cmd_ctx *ctx, const char *name)
{
	json_t *v = json_object_get(ctx->opts, name);
	if (json_is_array(v))
		return json_array_size(v);
	return v != NULL ? 1 : 0;
}

const char *
cmd_opt_at(const struct cmd_ctx *ctx, const char *name, size_t i)
{
	json_t *v = json_object_get(ctx->opts, name);
	if (json_is_array(v))
		return json_string_value(json_array_get(v, i));
	return i == 0 ? json_string_value(v) : NULL;
}

bool
cmd_opt_int(struct cmd_ctx *ctx, const char *name, long min, long max, long *out)
{
	const char *s = cmd_opt(ctx, name);
	if (s == NULL)
		return true;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0) {
		cmd_usage_error(ctx, "%s: --%s expects an integer, got '%s'", ctx->entry->name,
		                name, s);
		return false;
	}
	if (v < min || v > max) {
		cmd_usage_error(ctx, "%s: --%s must be between %ld and %ld, got %ld",
		                ctx->entry->name, name, min, max, v);
		return false;
	}
	*out = v;
	return true;
}

enum cmd_retval
cmd_error(struct cmd_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	free(ctx->error);
	ctx->error = xvasprintf(fmt, ap);
	va_end(ap);
	ctx->status = CMD_ERROR;
	return CMD_ERROR;
}

enum cmd_retval
cmd_usage_error(struct cmd_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	free(ctx->error);
	ctx->error = xvasprintf(fmt, ap);
	va_end(ap);
	ctx->status = CMD_USAGE;
	return CMD_USAGE;
}

enum cmd_retval
cmd_result(struct cmd_ctx *ctx, json_t *result)
{
	json_decref(ctx->result);
	ctx->result = result;
	return CMD_OK;
}

enum cmd_retval
cmd_message(struct cmd_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	json_t *r = json_pack("{s:s}", "message", s);
	free(s);
	return cmd_result(ctx, r);
}

void
cmd_stream(struct cmd_ctx *ctx, const char *text)
{
	if (ctx->stream != NULL)
		ctx->stream(ctx, text, ctx->cb_arg);
}

/* ---- rendering -------------------------------------------------------- */

/* Appends a scalar JSON value as text. */
static void
render_scalar(const json_t *v, struct buf *out)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		buf_adds(out, json_string_value(v));
		break;
	case JSON_INTEGER:
		buf_addf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		buf_addf(out, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		buf_adds(out, "yes");
		break;
	case JSON_FALSE:
		buf_adds(out, "no");
		break;
	case JSON_NULL:
		buf_adds(out, "-");
		break;
	default: {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | CMD_JSON_REAL);
		buf_adds(out, s ? s : "?");
		free(s);
	}
	}
}

void
cmd_render_table(const json_t *rows, const char *const *columns, struct buf *out)
{
	size_t ncol = 0;
	while (columns[ncol] != NULL)
		ncol++;
	size_t nrows = json_array_size(rows);
	size_t *width = xcalloc(ncol, sizeof *width);
	char **cells = xcalloc((nrows + 1) * ncol, sizeof *cells);

	for (size_t c = 0; c < ncol; c++) {
		cells[c] = xstrdup(columns[c]);
		for (char *p = cells[c]; *p; p++)
			*p = (char)toupper((unsigned char)*p);
	}
	for (size_t r = 0; r < nrows; r++) {
		const json_t *row = json_array_get(rows, r);
		for (size_t c = 0; c < ncol; c++) {
			struct buf b;
			buf_init(&b);
			const json_t *v = json_object_get(row, columns[c]);
			if (v != NULL)
				render_scalar(v, &b);
			else
				buf_adds(&b, "-");
			cells[(r + 1) * ncol + c] = b.data ? b.data : xstrdup("");
		}
	}
	for (size_t i = 0; i < (nrows + 1) * ncol; i++) {
		size_t w = strlen(cells[i]);
		if (w > width[i % ncol])
			width[i % ncol] = w;
	}
	for (size_t r = 0; r <= nrows; r++) {
		for (size_t c = 0; c < ncol; c++) {
			const char *cell = cells[r * ncol + c];
			if (c + 1 < ncol)
				buf_addf(out, "%-*s  ", (int)width[c], cell);
			else
				buf_adds(out, cell);
		}
		buf_adds(out, "\n");
	}
	for (size_t i = 0; i < (nrows + 1) * ncol; i++)
		free(cells[i]);
	free(cells);
	free(width);
}

/* Renders an object as aligned "key  value" lines, nested objects indented. */
static void
render_object(const json_t *obj, int indent, struct buf *out)
{
	const char *key;
	const json_t *v;
	size_t w = 0;
	json_object_foreach((json_t *)obj, key, v)
	{
		if (strlen(key) > w)
			w = strlen(key);
	}
	json_object_foreach((json_t *)obj, key, v)
	{
		if (json_is_object(v)) {
			buf_addf(out, "%*s%s:\n", indent, "", key);
			render_object(v, indent + 2, out);
		} else if (json_is_array(v) && json_array_size(v) > 0 &&
		           json_is_object(json_array_get(v, 0))) {
			buf_addf(out, "%*s%s:\n", indent, "", key);
			for (size_t i = 0; i < json_array_size(v); i++) {
				render_object(json_array_get(v, i), indent + 2, out);
				buf_adds(out, "\n");
			}
		} else if (json_is_array(v)) {
			buf_addf(out, "%*s%-*s  ", indent, "", (int)w, key);
			for (size_t i = 0; i < json_array_size(v); i++) {
				if (i > 0)
					buf_adds(out, ", ");
				render_scalar(json_array_get(v, i), out);
			}
			buf_adds(out, "\n");
		} else {
			buf_addf(out, "%*s%-*s  ", indent, "", (int)w, key);
			render_scalar(v, out);
			buf_adds(out, "\n");
		}
	}
}

void
cmd_render_generic(const json_t *result, struct buf *out)
{
	if (result == NULL)
		return;
	if (json_is_string(result)) {
		buf_adds(out, json_string_value(result));
		buf_adds(out, "\n");
		return;
	}
	if (json_is_object(result) && json_object_size(result) == 1 &&
	    json_is_string(json_object_get(result, "message"))) {
		buf_addf(out, "%s\n", json_string_value(json_object_get(result, "message")));
		return;
	}
	if (json_is_array(result)) {
		if (json_array_size(result) == 0) {
			buf_adds(out, "(none)\n");
			return;
		}
		const json_t *first = json_array_get(result, 0);
		if (json_is_object(first)) {
			size_t n = json_object_size(first), i = 0;
			const char **cols = xcalloc(n + 1, sizeof *cols);
			const char *key;
			const json_t *v;
			json_object_foreach((json_t *)first, key, v)
			{
				if (!json_is_object(v) && !json_is_array(v))
					cols[i++] = key;
			}
			cmd_render_table(result, cols, out);
			free(cols);
			return;
		}
		for (size_t i = 0; i < json_array_size(result); i++) {
			render_scalar(json_array_get(result, i), out);
			buf_adds(out, "\n");
		}
		return;
	}
	if (json_is_object(result)) {
		render_object(result, 0, out);
		return;
	}
	render_scalar(result, out);
	buf_adds(out, "\n");
}

/* ---- running ---------------------------------------------------------- */

static void
cmd_ctx_free(struct cmd_ctx *ctx)
{
	cmd_free_argv(ctx->argc, ctx->argv);
	free(ctx->line);
	json_decref(ctx->opts);
	json_decref(ctx->result);
	free(ctx->error);
	free(ctx->text);
	free(ctx->client_name);
	free(ctx);
}

/* Renders the final text of ctx (text or JSON) and calls done. */
static void
cmd_ctx_complete(struct cmd_ctx *ctx)
{
	struct buf out;
	buf_init(&out);
	if (ctx->error != NULL)
		utf8_clean_line(ctx->error);
	if (ctx->line != NULL)
		orch_command_finished(ctx->orch, ctx);
	if (ctx->status == CMD_OK) {
		if (ctx->json) {
			json_t *r = ctx->result ? json_incref(ctx->result) : json_object();
			char *s = json_dumps(r, JSON_INDENT(2) | JSON_ENCODE_ANY | CMD_JSON_REAL);
			buf_addf(&out, "%s\n", s ? s : "null");
			free(s);
			json_decref(r);
		} else if (ctx->entry != NULL && ctx->entry->print != NULL && ctx->result) {
			ctx->entry->print(ctx, ctx->result, &out);
		} else {
			cmd_render_generic(ctx->result, &out);
		}
	} else {
		if (ctx->error == NULL)
			ctx->error = xstrdup("command failed");
		if (ctx->json) {
			json_t *r = json_pack("{s:{s:s,s:s}}", "error", "code",
			                      ctx->status == CMD_USAGE ? "usage" : "failed",
			                      "message", ctx->error);
			/* A failed check may still carry its report (verify). */
			if (ctx->result != NULL)
				json_object_set(r, "result", ctx->result);
			char *s = json_dumps(r, JSON_INDENT(2) | CMD_JSON_REAL);
			buf_addf(&out, "%s\n", s);
			free(s);
			json_decref(r);
		} else if (ctx->result != NULL && ctx->entry != NULL && ctx->entry->print != NULL) {
			ctx->entry->print(ctx, ctx->result, &out);
		}
	}
	ctx->text = out.data ? out.data : xstrdup("");
	if (ctx->done != NULL)
		ctx->done(ctx, ctx->cb_arg);
	cmd_ctx_free(ctx);
}

void
cmd_ctx_finish(struct cmd_ctx *ctx, enum cmd_retval status)
{
	ctx->status = status;
	cmd_ctx_complete(ctx);
}

/* Returns a new context with the common fields filled. */
static struct cmd_ctx *
cmd_ctx_new(struct orch *orch, enum cmd_client client, const char *client_name, enum cmd_role role,
            cmd_done_fn done, cmd_stream_fn stream, void *arg)
{
	struct cmd_ctx *ctx = xcalloc(1, sizeof *ctx);
	ctx->orch = orch;
	ctx->client = client;
	ctx->client_name = xstrdup(client_name ? client_name : "internal");
	ctx->role = role;
	ctx->done = done;
	ctx->stream = stream;
	ctx->cb_arg = arg;
	return ctx;
}

/* True if argv asks for JSON output (so even lookup errors come as JSON). */
static bool
argv_wants_json(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--json") == 0)
			return true;
	}
	return false;
}

/* config_secret_name of the first len bytes of name. */
static bool
secret_name(const char *name, size_t len)
{
	char *s = xstrndup(name, len);
	bool r = config_secret_name(s);
	free(s);
	return r;
}

/* The value of option opt as the audit shows it: "[redacted]" if the
 * option is named like a secret (--api-key), KEY=[redacted] if the value's
 * KEY is (--env API_TOKEN=...).  Caller frees. */
static char *
audit_value(const char *opt, size_t optlen, const char *val, bool *redacted)
{
	size_t klen = strcspn(val, "=");
	if (secret_name(opt, optlen)) {
		*redacted = true;
		return xstrdup("[redacted]");
	}
	if (val[klen] == '=' && secret_name(val, klen)) {
		*redacted = true;
		return xasprintf("%.*s=[redacted]", (int)klen, val);
	}
	return xstrdup(val);
}

/* Appends word w as cmd_split reads it back: quoted if it has to be. */
static void
add_word(struct buf *b, const char *w)
{
	if (*w != '\0' && strpbrk(w, " \t\n\r'\"\\") == NULL) {
		buf_adds(b, w);
	} else if (strchr(w, '\'') == NULL) {
		buf_addf(b, "'%s'", w);
	} else {
		buf_adds(b, "\"");
		for (const char *p = w; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				buf_adds(b, "\\");
			buf_add(b, p, 1);
		}
		buf_adds(b, "\"");
	}
}

/* The command line for the audit log: e's name and the words after it
 * (parsed already), options included, secret values redacted (*redacted
 * set if one was). */
static char *
cmd_audit_line(const struct cmd_entry *e, int argc, char **argv, bool *redacted)
{
	struct buf b;
	bool only_pos = false;
	buf_init(&b);
	buf_adds(&b, e->name);
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i];
		char *word = NULL;
		buf_adds(&b, " ");
		if (only_pos || strncmp(w, "--", 2) != 0 || w[2] == '\0') {
			only_pos = only_pos || strcmp(w, "--") == 0;
			add_word(&b, w);
			continue;
		}
		const char *name = w + 2;
		size_t n = strcspn(name, "=");
		if (name[n] == '=') {
			char *v = audit_value(name, n, name + n + 1, redacted);
			word = xasprintf("--%.*s=%s", (int)n, name, v);
			free(v);
			add_word(&b, word);
			free(word);
			continue;
		}
		add_word(&b, w);
		const struct cmd_opt *o = cmd_find_opt(e, name);
		if (o != NULL && o->kind != OPT_FLAG && i + 1 < argc) {
			word = audit_value(name, n, argv[++i], redacted);
			buf_adds(&b, " ");
			add_word(&b, word);
			free(word);
		}
	}
	return b.data;
}

/* `X --help` runs `help X` in X's place, so that both print the same (text
 * or JSON) and X itself never runs. */
static void
cmd_run_help(struct cmd_ctx *ctx)
{
	long h = cmd_table_index(orch_cmds(ctx->orch), "help");
	char *cause = NULL;
	cmd_free_argv(ctx->argc, ctx->argv);
	ctx->argc = 0;
	ctx->argv = NULL;
	if (h < 0 || cmd_split(ctx->entry->name, &ctx->argc, &ctx->argv, &cause) != 0) {
		cmd_error(ctx, "%s: no help available", ctx->entry->name);
		free(cause);
		cmd_ctx_complete(ctx);
		return;
	}
	json_object_clear(ctx->opts);
	ctx->entry = cmd_table_get(orch_cmds(ctx->orch), (size_t)h);
	ctx->status = ctx->entry->exec(ctx);
	cmd_ctx_complete(ctx);
}

void
cmd_run_argv(struct orch *orch, int argc, char **argv, enum cmd_client client,
             const char *client_name, enum cmd_role role, cmd_done_fn done, cmd_stream_fn stream,
             void *arg)
{
	struct cmd_ctx *ctx = cmd_ctx_new(orch, client, client_name, role, done, stream, arg);
	int consumed = 0;
	char *cause = NULL;

	ctx->json = argv_wants_json(argc, argv);
	ctx->entry = cmd_find(orch_cmds(orch), argc, argv, &consumed, &cause);
	if (ctx->entry == NULL) {
		ctx->error = cause;
		ctx->status = CMD_USAGE;
		cmd_ctx_complete(ctx);
		return;
	}
	if (cmd_parse_args(ctx, argc - consumed, argv + consumed) != 0) {
		ctx->status = CMD_USAGE;
		cmd_ctx_complete(ctx);
		return;
	}
	if (cmd_flag(ctx, "help")) {
		cmd_run_help(ctx);
		return;
	}
	if (role < ctx->entry->role) {
		static const char *const names[] = {"observer", "operator", "captain"};
		cmd_error(ctx, "%s: permission denied (needs role %s)", ctx->entry->name,
		          names[ctx->entry->role]);
		cmd_ctx_complete(ctx);
		return;
	}
	bool redacted = false;
	ctx->line = cmd_audit_line(ctx->entry, argc - consumed, argv + consumed, &redacted);
	orch_command_started(orch, ctx);
	enum cmd_retval rv = ctx->entry->exec(ctx);
	if (rv == CMD_WAIT)
		return;
	ctx->status = rv;
	cmd_ctx_complete(ctx);
}

void
cmd_run_line(struct orch *orch, const char *line, enum cmd_client client, const char *client_name,
             enum cmd_role role, cmd_done_fn done, cmd_stream_fn stream, void *arg)
{
	int argc;
	char **argv;
	char *cause = NULL;

	if (cmd_split(line, &argc, &argv, &cause) != 0) {
		struct cmd_ctx *ctx =
		    cmd_ctx_new(orch, client, client_name, role, done, stream, arg);
		ctx->error = cause;
		ctx->status = CMD_USAGE;
		cmd_ctx_complete(ctx);
		return;
	}
	if (argc == 0) {
		struct cmd_ctx *ctx =
		    cmd_ctx_new(orch, client, client_name, role, done, stream, arg);
		ctx->status = CMD_OK;
		cmd_ctx_complete(ctx);
		cmd_free_argv(argc, argv);
		return;
	}
	cmd_run_argv(orch, argc, argv, client, client_name, role, done, stream, arg);
	cmd_free_argv(argc, argv);
}

/* The length of the word at p, first split at n bytes on blanks, when a
 * quote it opens is closed further on: the rest of a secret typed in quotes
 * ('--api-key "two words"'), or the whole line's rest if it never closes. */
static size_t
quoted_word_len(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\'' && p[i] != '"')
			continue;
		const char *close = strchr(p + i + 1, p[i]);
		if (close == NULL)
			return strlen(p);
		i = (size_t)(close - p);
		if (i >= n)
			n = i + 1 + strcspn(close + 1, " \t");
	}
	return n;
}

/* line, which is no command (a typo in its name, a quote left open), with
 * secrets redacted word by word as typed: the audit's rules, where any
 * option named like a secret is taken to have a value.  A redacted value
 * takes the words its quotes span with it.  NULL if none. */
static char *
raw_line_redacted(const char *line)
{
	struct buf b;
	bool redacted = false, value_next = false;
	buf_init(&b);
	for (const char *p = line; *p != '\0';) {
		size_t n = strspn(p, " \t");
		buf_add(&b, p, n);
		p += n;
		n = strcspn(p, " \t");
		char *w = xstrndup(p, n);
		const char *name = w + strspn(w, "-'\"");
		size_t k = strcspn(name, "=");
		bool word_redacted = false;
		if (value_next) {
			buf_adds(&b, "[redacted]");
			word_redacted = true;
			value_next = false;
		} else if (name[k] == '=' && name[k + 1] != '\0') {
			char *v = audit_value(name, k, name + k + 1, &word_redacted);
			buf_add(&b, w, (size_t)(name + k + 1 - w));
			buf_adds(&b, v);
			free(v);
		} else {
			buf_add(&b, w, n);
			value_next =
			    strncmp(w, "--", 2) == 0 && name[k] == '\0' && secret_name(name, k);
		}
		p += word_redacted ? quoted_word_len(p, n) : n;
		redacted = redacted || word_redacted;
		free(w);
	}
	if (!redacted)
		buf_free(&b);
	return redacted ? b.data : NULL;
}

char *
cmd_line_redacted(struct orch *orch, const char *line)
{
	int argc, consumed = 0;
	char **argv;
	char *cause = NULL, *r = NULL;
	if (cmd_split(line, &argc, &argv, &cause) != 0) {
		free(cause);
		return raw_line_redacted(line);
	}
	const struct cmd_entry *e =
	    argc > 0 ? cmd_find(orch_cmds(orch), argc, argv, &consumed, &cause) : NULL;
	free(cause);
	if (e != NULL) {
		bool redacted = false;
		r = cmd_audit_line(e, argc - consumed, argv + consumed, &redacted);
		if (!redacted) {
			free(r);
			r = NULL;
		}
	} else {
		r = raw_line_redacted(line);
	}
	cmd_free_argv(argc, argv);
	return r;
}

/* ---- completion ------------------------------------------------------- */

/* The "a|b|c" list of a completion hint, or NULL for a dynamic one. */
static const char *
hint_list(const char *hint)
{
	static const char *const named[][2] = {
	    {"level", "trace|debug|info|warn|error|fatal"},
	    {"priority", "low|normal|high|urgent"},
	    {"pane", "agents|tasks|messages|logs"},
	    {"mode", "NORMAL|TASK|SYSTEM|CAPTAIN|SYNC|VERIFY|REPAIR|BACKUP|RESTORE|CLEANUP|"
	             "INTEGRATE"},
	};
	if (hint == NULL || strchr(hint, '|') != NULL)
		return hint;
	for (size_t i = 0; i < nitems(named); i++)
		if (strcmp(hint, named[i][0]) == 0)
			return named[i][1];
	return NULL;
}

enum cmd_retval
cmd_opt_unknown(struct cmd_ctx *ctx, const char *name)
{
	const struct cmd_opt *o = cmd_find_opt(ctx->entry, name);
	const char *list = o != NULL ? hint_list(o->complete) : NULL;
	struct buf b;
	buf_init(&b);
	buf_addf(&b, "%s: unknown %s '%s'", ctx->entry->name, name, cmd_opt(ctx, name));
	for (const char *p = list; p != NULL && *p != '\0';) {
		size_t n = strcspn(p, "|");
		buf_addf(&b, "%s%.*s", p == list ? " (" : ", ", (int)n, p);
		p += n + (p[n] == '|');
	}
	if (list != NULL)
		buf_adds(&b, ")");
	enum cmd_retval rv = cmd_usage_error(ctx, "%s", b.data);
	buf_free(&b);
	return rv;
}

/* Offers each "a|b|c" alternative of a literal hint that starts with partial. */
static void
complete_literal(const char *hint, const char *partial, cmd_complete_add_fn add, void *arg)
{
	char *copy = xstrdup(hint), *save = NULL;
	for (char *w = strtok_r(copy, "|", &save); w != NULL; w = strtok_r(NULL, "|", &save)) {
		if (has_prefix(w, partial))
			add(w, arg);
	}
	free(copy);
}

/* Offers candidates for a hint: literal lists here, dynamic ones from orch. */
static void
complete_hint(const struct cmd_table *t, struct orch *orch, const char *hint, const char *partial,
              cmd_complete_add_fn add, void *arg)
{
	if (hint == NULL)
		return;
	if (hint_list(hint) != NULL) {
		complete_literal(hint_list(hint), partial, add, arg);
	} else if (strcmp(hint, "command") == 0) {
		char last[64] = "";
		for (size_t i = 0; i < t->n; i++) {
			char fw[64];
			first_word(t->slots[i].entry->name, fw, sizeof fw);
			if (strcmp(fw, last) != 0 && has_prefix(fw, partial))
				add(fw, arg);
			snprintf(last, sizeof last, "%s", fw);
		}
	} else if (orch != NULL) {
		orch_complete(orch, hint, partial, add, arg);
	}
}

void
cmd_complete(const struct cmd_table *t, struct orch *orch, int argc, char **argv,
             const char *partial, cmd_complete_add_fn add, void *arg)
{
	if (argc == 0) {
		complete_hint(t, orch, "command", partial, add, arg);
		return;
	}
	char group[64];
	char *cause = NULL;
	if (cmd_find_group(t, argv[0], group, sizeof group, &cause) != 0) {
		free(cause);
		return;
	}
	/* Second word of a group with subcommands. */
	bool has_subs = false;
	for (size_t i = 0; i < t->n; i++) {
		char fw[64];
		first_word(t->slots[i].entry->name, fw, sizeof fw);
		if (strcmp(fw, group) == 0 && second_word(t->slots[i].entry->name) != NULL)
			has_subs = true;
	}
	if (argc == 1 && has_subs) {
		for (size_t i = 0; i < t->n; i++) {
			const char *name = t->slots[i].entry->name;
			char fw[64];
			first_word(name, fw, sizeof fw);
			const char *sw = second_word(name);
			if (strcmp(fw, group) == 0 && sw != NULL && has_prefix(sw, partial))
				add(sw, arg);
		}
		return;
	}
	int consumed = 0;
	const struct cmd_entry *e = cmd_find(t, argc, argv, &consumed, &cause);
	if (e == NULL) {
		free(cause);
		return;
	}
	/* The value of an option just typed? */
	const char *prev = argv[argc - 1];
	if (argc > consumed && strncmp(prev, "--", 2) == 0) {
		const struct cmd_opt *o = cmd_find_opt(e, prev + 2);
		if (o != NULL && o->kind != OPT_FLAG) {
			complete_hint(t, orch, o->complete, partial, add, arg);
			return;
		}
	}
	if (strncmp(partial, "--", 2) == 0) {
		for (const struct cmd_opt *o = e->opts; o != NULL && o->name != NULL; o++) {
			char *w = xasprintf("--%s", o->name);
			if (has_prefix(w, partial))
				add(w, arg);
			free(w);
		}
		if (has_prefix("--json", partial))
			add("--json", arg);
		return;
	}
	if (e->complete_args != NULL)
		complete_hint(t, orch, e->complete_args, partial, add, arg);
}
