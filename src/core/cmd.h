/* cmd.h — the CaptainPhone command layer: one table of captain commands
 * (tmux/WeeChat style: name, usage, help, options, completion hints,
 * handler), the line splitter, lookup by exact name then unique prefix, the
 * option parser, and rendering of results as text or JSON.
 *
 * Every front end (the TUI prompt, `dreamos ctl`, the Bridge's
 * POST /v1/commands, commands on stdin in --headless mode) goes through
 * cmd_run_argv/cmd_run_line, so parsing, help and completion are the same
 * everywhere. */
#ifndef DREAMOS_CMD_H
#define DREAMOS_CMD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct orch;
struct cmd_ctx;

enum cmd_retval {
	CMD_OK = 0,    /* done, result set */
	CMD_ERROR = 1, /* the command failed; ctx error set */
	CMD_USAGE = 2, /* bad command line; ctx error set */
	CMD_WAIT = 3,  /* asynchronous: the command calls cmd_ctx_finish later */
};

/* Who may run a command through the Bridge (roles nest). */
enum cmd_role { ROLE_OBSERVER = 0, ROLE_OPERATOR = 1, ROLE_CAPTAIN = 2 };

/* Option kinds. */
enum cmd_opt_kind {
	OPT_FLAG,  /* --name */
	OPT_VALUE, /* --name VALUE or --name=VALUE; the last one wins */
	OPT_MULTI, /* repeatable --name VALUE */
};

struct cmd_opt {
	const char *name; /* without the dashes */
	enum cmd_opt_kind kind;
	const char *arg;      /* placeholder for help ("LEVEL") */
	const char *complete; /* completion hint for the value, see below */
};

/* Completion hints: "agent", "task", "ext", "command", "level", "priority",
 * "mode", "state", "pane", "cap", or a literal list "a|b|c".  NULL: none. */

struct cmd_entry {
	const char *name;           /* "status", or "agent list" for a subcommand */
	const char *alias;          /* another exact name, or NULL */
	const char *usage;          /* arguments after the name: "NAME [--limit N]" */
	const char *help;           /* what it does, one short paragraph */
	int min_args;               /* positional arguments */
	int max_args;               /* -1: unlimited */
	const struct cmd_opt *opts; /* terminated by an entry with name NULL */
	const char *complete_args;  /* completion hint for positionals */
	enum cmd_role role;
	enum cmd_retval (*exec)(struct cmd_ctx *ctx);
	/* Renders ctx's result for people; NULL uses the generic renderer. */
	void (*print)(struct cmd_ctx *ctx, const json_t *result, struct buf *out);
};

/* The registry: built-in commands plus those extensions register. */
struct cmd_table;
struct cmd_table *cmd_table_new(void);
void cmd_table_free(struct cmd_table *t);
/* Adds entries (an array of n, not copied: it must outlive the table or be
 * unregistered) under owner ("core" or an extension name).  Returns 0, or -1
 * if a name is already taken (then nothing is added). */
int cmd_register(struct cmd_table *t, const struct cmd_entry *entries, size_t n, const char *owner);
/* Removes every entry registered by owner; returns how many. */
size_t cmd_unregister_owner(struct cmd_table *t, const char *owner);
size_t cmd_table_count(const struct cmd_table *t);
const struct cmd_entry *cmd_table_get(const struct cmd_table *t, size_t i);
const char *cmd_table_owner(const struct cmd_table *t, size_t i);

/* Splits a command line into words, honouring 'single' and "double" quotes
 * and backslash escapes.  Returns 0 with *argv (NULL-terminated, free with
 * cmd_free_argv), or -1 with *cause (e.g. "unterminated quote"). */
int cmd_split(const char *line, int *argc, char ***argv, char **cause);
void cmd_free_argv(int argc, char **argv);

/* Finds the entry for argv.  On success returns it and sets *consumed to the
 * number of words its name took (1 or 2).  Otherwise returns NULL with *cause
 * ("unknown command: x (try 'help')", "ambiguous command: a, could be:
 * agent, audit"). */
const struct cmd_entry *cmd_find(const struct cmd_table *t, int argc, char **argv, int *consumed,
                                 char **cause);

/* Where a command came from (for audit and for `quit`). */
enum cmd_client { CLIENT_INTERNAL, CLIENT_TUI, CLIENT_CTL, CLIENT_STDIN, CLIENT_BRIDGE };

typedef void (*cmd_done_fn)(struct cmd_ctx *ctx, void *arg);
/* Streams partial text (e.g. an answer as it arrives) to the front end. */
typedef void (*cmd_stream_fn)(struct cmd_ctx *ctx, const char *text, void *arg);

struct cmd_ctx {
	struct orch *orch;
	const struct cmd_entry *entry;
	enum cmd_client client;
	char *client_name; /* "ctl", "tui", "bridge:KEYNAME" */
	enum cmd_role role;
	bool json; /* --json given */

	char *line; /* the command as given, secrets redacted; set if it ran */
	int argc;   /* positional arguments */
	char **argv;
	json_t *opts; /* object: option name -> string, true, or array */

	enum cmd_retval status;
	json_t *result; /* set by the command */
	char *error;    /* one line, set on failure */
	char *text;     /* rendered output, set when finished */

	cmd_done_fn done;
	cmd_stream_fn stream;
	void *cb_arg;
};

/* Runs one command.  done(ctx, arg) is called exactly once, maybe before this
 * returns; ctx (with status, text and result) is freed right after done
 * returns.  stream may be NULL. */
void cmd_run_argv(struct orch *orch, int argc, char **argv, enum cmd_client client,
                  const char *client_name, enum cmd_role role, cmd_done_fn done,
                  cmd_stream_fn stream, void *arg);
/* Splits line and runs it like cmd_run_argv.  An empty line does nothing and
 * calls done with status CMD_OK and empty text. */
void cmd_run_line(struct orch *orch, const char *line, enum cmd_client client,
                  const char *client_name, enum cmd_role role, cmd_done_fn done,
                  cmd_stream_fn stream, void *arg);

/* line with the values of secret options redacted, as the audit log shows
 * it ("--env API_TOKEN=[redacted]"), or NULL if it holds none.  A line that
 * is no command (unknown, a quote left open) is redacted word by word as
 * typed.  For what is kept of a typed line: the prompt's history file.
 * Caller frees. */
char *cmd_line_redacted(struct orch *orch, const char *line);
/* Finishes an asynchronous command (one whose exec returned CMD_WAIT). */
void cmd_ctx_finish(struct cmd_ctx *ctx, enum cmd_retval status);

/* For command handlers. */
const char *cmd_arg(const struct cmd_ctx *ctx, int i);
/* Joins positionals from i on with spaces; caller frees. */
char *cmd_args_join(const struct cmd_ctx *ctx, int from);
/* The value of a VALUE option, or NULL. */
const char *cmd_opt(const struct cmd_ctx *ctx, const char *name);
bool cmd_flag(const struct cmd_ctx *ctx, const char *name);
/* Number of values of a MULTI option and value i. */
size_t cmd_opt_count(const struct cmd_ctx *ctx, const char *name);
const char *cmd_opt_at(const struct cmd_ctx *ctx, const char *name, size_t i);
/* Parses an integer option; returns false (with ctx error set) if present
 * and malformed or outside [min, max]. *out is left alone when absent. */
bool cmd_opt_int(struct cmd_ctx *ctx, const char *name, long min, long max, long *out);
/* The usage error for a value option name does not accept: "CMD: unknown
 * NAME 'VALUE' (a, b, c)", the values from the option's completion hint. */
enum cmd_retval cmd_opt_unknown(struct cmd_ctx *ctx, const char *name);
/* Sets the one-line error and returns CMD_ERROR (or CMD_USAGE for usage). */
enum cmd_retval cmd_error(struct cmd_ctx *ctx, const char *fmt, ...) PRINTFLIKE(2, 3);
enum cmd_retval cmd_usage_error(struct cmd_ctx *ctx, const char *fmt, ...) PRINTFLIKE(2, 3);
/* Sets the result (stolen) and returns CMD_OK. */
enum cmd_retval cmd_result(struct cmd_ctx *ctx, json_t *result);
/* Sets a result {"message": TEXT} and returns CMD_OK. */
enum cmd_retval cmd_message(struct cmd_ctx *ctx, const char *fmt, ...) PRINTFLIKE(2, 3);
/* Sends partial text to the front end now (if it streams). */
void cmd_stream(struct cmd_ctx *ctx, const char *text);

/* The generic renderer: strings as is, {"message"} as its text, objects as
 * aligned "key  value" lines, arrays of objects as tables. */
void cmd_render_generic(const json_t *result, struct buf *out);
/* Renders rows (array of objects) as a table of the given columns. */
void cmd_render_table(const json_t *rows, const char *const *columns, struct buf *out);

/* Full usage line of an entry ("agent info NAME"); caller frees. */
char *cmd_usage_line(const struct cmd_entry *e);

/* Completion: calls add(word, arg) for each candidate for the word being
 * typed (partial) after the complete words argv[0..argc).  Dynamic hints
 * (agent names, task ids) are asked from the orchestrator. */
typedef void (*cmd_complete_add_fn)(const char *word, void *arg);
void cmd_complete(const struct cmd_table *t, struct orch *orch, int argc, char **argv,
                  const char *partial, cmd_complete_add_fn add, void *arg);

/* The core's built-in commands (cmd-builtin.c). */
extern const struct cmd_entry cmd_builtin_entries[];
extern const size_t cmd_builtin_count;

/* Chaos testing and `verify` (cmd-chaos.c). */
extern const struct cmd_entry cmd_chaos_entries[];
extern const size_t cmd_chaos_count;
struct agent;
/* Hook from orch.c: a chaos pause ends when its agent stops or fails. */
void chaos_agent_state(struct orch *o, struct agent *a, int old_state);
/* What chaos does to agent a ("paused by chaos ..."), or NULL; the string
 * lives until the next call. */
const char *chaos_agent_note(struct orch *o, const struct agent *a);
/* Ends every chaos pause (SIGCONT) and frees the state; from orch_free. */
struct chaos;
void chaos_free(struct chaos *c);

#endif
