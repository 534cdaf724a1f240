/* ext.h — the extension system (DESIGN section 10): the loader (dlopen,
 * API version check, dependencies in topological order, unload with a
 * sweep of everything an extension registered), hot reload of a changed
 * .so with state handed across, the host function table of
 * <dreamos/extension.h>, in-process agent types, and the `ext` commands.
 *
 * One struct exts per orchestrator; nothing global.  Everything runs on
 * the orchestrator's loop. */
#ifndef DREAMOS_EXT_H
#define DREAMOS_EXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "cmd.h"

struct orch;
struct agent;
struct exts;

/* Returns the extension system of o and registers the `ext` commands in
 * o's command table.  Loads nothing yet; allocates no loop handle.  Free
 * with ext_free (after ext_close). */
struct exts *ext_new(struct orch *o);

/* Loads the extensions of extensions.load (and what they require), in
 * dependency order.  Failures are logged (one line each, naming the
 * extension and the reason) and do not stop the others.  Call before the
 * agents start, so that agents of extension types can connect. */
void ext_start(struct exts *es);

/* Unloads every extension (dependents first), stops watching files and
 * closes the loop handles (run the loop afterwards).  Safe to call more
 * than once, and from inside a callback of this module. */
void ext_close(struct exts *es);

/* Frees the system; call ext_close first.  NULL is allowed. */
void ext_free(struct exts *es);

/* Loads the extensions named by what[0..n) (names found in the extensions
 * directory, or paths to .so files) with their dependencies.  Each result
 * is logged.  Returns the number that failed; with *cause (caller frees)
 * set to the failures joined by "; " when any did. */
int ext_load(struct exts *es, const char *const *what, size_t n, char **cause);
/* Unloads one extension.  If others depend on it, refuses with their names
 * unless force, which unloads them first (dependents before what they
 * need).  Returns 0 or -1 with *cause. */
int ext_unload(struct exts *es, const char *name, bool force, char **cause);
/* Reloads one extension from its file: save_state, unload, load the file
 * again, restore_state.  If the new file cannot be loaded, the old version
 * keeps running (or is loaded again with its state) and -1 comes back with
 * *cause. */
int ext_reload(struct exts *es, const char *name, char **cause);

/* The directory NAME.so files are looked up in. */
const char *ext_dir(const struct exts *es);
/* Where extension name's module is: extensions.dir/NAME.so, or, for the
 * dreamos of a build tree, the module built there (caller frees). */
char *ext_module_path(const struct exts *es, const char *name);
/* True if extension name is loaded and running. */
bool ext_loaded(const struct exts *es, const char *name);

/* Number of loaded extensions. */
size_t ext_count(const struct exts *es);

/* Hook for agent.c (through orch): agent a, of a type other than
 * "process", is to be started.  If an extension registered its type, the
 * agent is connected (agents_attach) and true is returned; false means
 * nobody provides it now (it stays waiting for its link).  When the agent
 * cannot be attached at once (it is still stopping), it is attached on
 * the next loop turn and false is returned. */
bool ext_agent_wants_link(struct exts *es, struct agent *a);
/* True if an extension provides agent type type; *max_tasks (may be NULL)
 * is set to the type's default task slots. */
bool ext_agent_type_known(const struct exts *es, const char *type, int *max_tasks);
/* True if agent type type accepts spawn option option (`--model`). */
bool ext_agent_type_option(const struct exts *es, const char *type, const char *option);

/* The agent types provided by extensions, "a, b" (caller frees; "" if
 * none), for error messages. */
char *ext_agent_types_list(const struct exts *es);

/* Completion for the hints "ext" (loaded extensions), "ext-file" (NAME.so
 * files in the directory) and the dynamic completions of extension
 * commands ("x-ext:..."). */
void ext_complete(struct exts *es, const char *hint, const char *partial, cmd_complete_add_fn add,
                  void *arg);

/* {"dir", "loaded": [{name, version}...]} for `status`.  Caller owns it. */
json_t *ext_status_json(const struct exts *es);

/* Counts of what the loaded extensions hold, for tests and `ext info`
 * totals: everything is 0 once all are unloaded. */
struct ext_counts {
	size_t extensions, commands, agent_types, agents, timers, subscriptions, requests,
	    waiting_calls, pending_sends, jobs, watchers;
};
void ext_counts(const struct exts *es, struct ext_counts *out);

#endif
