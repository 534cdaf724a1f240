/* orch.h — the orchestrator: owns the loop's handles, the runtime directory
 * and its lock, the configuration, the store, the central log, the command
 * table and the control socket; runs startup, recovery and shutdown.  All
 * state lives in this object (no globals), so tests can make many. */
#ifndef DREAMOS_ORCH_H
#define DREAMOS_ORCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "cmd.h"
#include "config.h"
#include "log.h"
#include "store.h"

struct orch_opts {
	const char *runtime;     /* --runtime, or NULL to resolve */
	const char *config_path; /* --config, or NULL to resolve */
	int bridge_port;         /* --bridge-port, or -1 for the config's */
	const char *log_level;   /* --log-level, or NULL */
	bool log_stderr;         /* mirror logs to stderr (--headless) */
	bool demo;               /* --demo */
	const char *mode;        /* "headless", "tui", "demo" — for status */
};

struct orch;

/* Creates the orchestrator on loop: resolves and locks the runtime
 * directory, loads the configuration, opens the log and the store, and
 * listens on the control socket.  Returns 0, or -1 with *cause (caller
 * frees); on failure nothing is left behind (no lock, no socket). */
int orch_new(struct orch **out, uv_loop_t *loop, const struct orch_opts *opts, char **cause);

/* Starts the agents of the configuration (and, with --demo, the demo
 * fleet).  Returns 0 or -1 with *cause. */
int orch_start(struct orch *o, char **cause);

/* Asks the orchestrator to stop: agents are stopped, the store flushed, the
 * socket and lock removed; then the quit callback runs.  Safe to call more
 * than once.  why is logged. */
void orch_request_quit(struct orch *o, const char *why);
bool orch_quitting(const struct orch *o);
/* Called once shutdown has finished (from the loop). */
void orch_set_quit_cb(struct orch *o, void (*fn)(void *arg), void *arg);
/* With a TUI, SIGHUP (the terminal hung up) stops the orchestrator instead
 * of reopening the log file. */
void orch_set_quit_on_hup(struct orch *o, bool on);
/* Frees everything; call after the loop has run out.  Exit status the
 * process should use (0 normally). */
int orch_free(struct orch *o);

uv_loop_t *orch_loop(struct orch *o);
struct logmgr *orch_log(struct orch *o);
struct store *orch_store(struct orch *o);
const struct config *orch_config(struct orch *o);
struct cmd_table *orch_cmds(struct orch *o);
const char *orch_runtime(const struct orch *o);
const char *orch_mode(const struct orch *o);
int64_t orch_started_ms(const struct orch *o);

struct agents *orch_agents(struct orch *o);
struct bus *orch_bus(struct orch *o);
struct tasks *orch_tasks(struct orch *o);
/* Where cmd-chaos.c keeps its state (NULL until the first chaos command). */
struct chaos;
struct chaos **orch_chaos(struct orch *o);
struct auth *orch_auth(struct orch *o);
struct bridge *orch_bridge(struct orch *o);
struct outbound;
struct outbound *orch_outbound(struct orch *o);
/* The extension system (src/ext/ext.h). */
struct exts;
struct exts *orch_exts(struct orch *o);
/* Directory of the shared files (demo agents, SDK): $DREAMOS_SHARE, else the
 * source tree next to the binary, else the installed $(pkgdatadir). */
const char *orch_share_dir(const struct orch *o);

/* Hooks from agent.c: state changes, an agent that said hello (or was
 * resumed), an agent whose connection ended, and protocol messages for the
 * bus and the task manager (returns false if nobody handles the type). */
struct agent;
void orch_agent_state(struct orch *o, struct agent *a, int old_state);
void orch_agent_ready(struct orch *o, struct agent *a);
void orch_agent_unthrottled(struct orch *o, struct agent *a);
void orch_agent_gone(struct orch *o, struct agent *a);
struct proto_msg;
bool orch_agent_message(struct orch *o, struct agent *a, const struct proto_msg *m);
/* Hook from agent.c: agent a, of a type other than "process", is to be
 * started.  Returns true if an extension provides its type and connected
 * it (agents_attach); false leaves it waiting for its link. */
bool orch_agent_wants_link(struct orch *o, struct agent *a);

/* Builds the `status` document (also used by the TUI's status bar and the
 * Bridge's /healthz).  Caller owns the result. */
json_t *orch_status_json(struct orch *o);

/* Hooks from cmd.c: a command is about to run (counted and logged), and
 * one that ran has its outcome (audited). */
void orch_command_started(struct orch *o, struct cmd_ctx *ctx);
void orch_command_finished(struct orch *o, struct cmd_ctx *ctx);
/* Dynamic completion for hints such as "agent" and "task". */
void orch_complete(struct orch *o, const char *hint, const char *partial, cmd_complete_add_fn add,
                   void *arg);

#endif
