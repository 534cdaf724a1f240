/* agent.h — the agent registry and lifecycle: the state machine (one
 * function per edge, each logged and persisted), restart policies with
 * exponential backoff and restart intensity, heartbeats, discovery by
 * capability, and the CellPhone session of each agent (hello/welcome and
 * the dispatch of its protocol lines).
 *
 * How an agent is reached is a link (struct agent_link): a child process
 * (spawn.c) now, a WebSocket connection through the Bridge later.  The
 * fields of struct agent are read by other core modules (bus, tasks, TUI);
 * only agent.c and spawn.c change them. */
#ifndef DREAMOS_AGENT_H
#define DREAMOS_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "cmd.h"
#include "config.h"
#include "proto.h"
#include "strmap.h"

struct orch;
struct agent;

enum agent_state {
	AGENT_STARTING,  /* spawned, waiting for hello */
	AGENT_READY,     /* connected, has free task slots */
	AGENT_BUSY,      /* connected, every task slot taken */
	AGENT_PAUSED,    /* connected, gets no new work */
	AGENT_UNHEALTHY, /* missed heartbeats; being restarted */
	AGENT_BACKOFF,   /* exited; restarts at next_restart_ms */
	AGENT_STOPPING,  /* asked to stop; escalating to signals */
	AGENT_STOPPED,   /* not running, by request or clean exit */
	AGENT_FAILED,    /* gave up: restart intensity exceeded or policy */
	AGENT_NSTATES
};
const char *agent_state_name(enum agent_state s);
bool agent_state_parse(const char *s, enum agent_state *out);
/* True in the states where the agent is connected (ready, busy, paused). */
bool agent_state_connected(enum agent_state s);

/* A transport to one agent. */
struct agent_link_ops {
	const char *kind; /* "process", "remote" */
	/* Queues a protocol line (with its '\n') to the agent.  owed: the line
	 * waits for the agent's answer (a message, a task): the link does not
	 * count it when it stops reading an agent that does not read (outq.h).
	 * Returns 0, or -1 if the link is gone. */
	int (*send)(struct agent *a, const char *line, size_t len, bool owed);
	/* Bytes queued towards the agent and not yet written. */
	size_t (*queued)(struct agent *a);
	/* Stops or resumes reading from the agent (back-pressure). */
	void (*set_reading)(struct agent *a, bool on);
	/* Closes a link that is not a child process (NULL for processes: they
	 * get signals); agent_detach follows when it is closed. */
	void (*close)(struct agent *a);
	/* True if the agent takes only tasks that ask for one of its
	 * capabilities (a browser is no general worker); NULL: the config's
	 * `specialist` decides. */
	bool (*specialist)(struct agent *a);
};

/* Why an agent's connection ended, for the restart policy. */
struct agent_exit {
	bool exited;     /* a process exit (else a disconnect) */
	int64_t status;  /* exit status */
	int signal;      /* terminating signal, 0 if none */
	const char *why; /* "exited", "killed", "no hello", "protocol", ... */
};

struct process_link; /* spawn.c */

struct agent {
	struct orch *orch;
	char *name;
	struct agent_cfg cfg; /* a copy: command, args, caps, policy, ... */
	char *spec;           /* cfg as JSON for the store, made on first use */
	bool from_config;     /* listed in the config file (else agent spawn) */
	enum agent_state state;
	int64_t state_since_ms; /* monotonic */
	int start_seq;          /* order of the last start, for shutdown */

	/* Connection. */
	const struct agent_link_ops *link_ops;
	struct process_link *proc; /* when a child process */
	void *link;                /* other links' state */
	pid_t pid;
	char *session;
	bool hello_done;
	bool input_utf8; /* the lines being fed were checked as UTF-8 (agent_link_message) */
	int bad_lines;
	struct proto_framer framer;
	char **caps; /* capabilities in force: config ∪ hello */
	size_t ncaps;
	int max_tasks;
	char *version;

	/* Health and restarts. */
	int64_t started_ms;   /* monotonic time of the last spawn */
	int64_t ready_ms;     /* monotonic time of the last hello */
	int64_t last_seen_ms; /* monotonic time of the last line */
	double load;
	int restarts;            /* total since dreamos started the agent */
	int attempt;             /* consecutive failed runs (backoff exponent) */
	int64_t next_restart_ms; /* monotonic, in backoff */
	int64_t *restart_times;  /* ring of recent restart times (intensity) */
	int nrestart_times;
	int64_t last_exit_status;
	int last_signal;
	char *last_exit_why;
	char *kill_reason;      /* why we are ending it, until the end is seen */
	bool stop_requested;    /* by the captain or shutdown */
	bool wanted;            /* should run: false once the captain stops it */
	bool restart_requested; /* stop, then start again */
	bool paused_flag;       /* stays paused across reconnects */
	bool hold_failed;       /* the agent declared itself failed: no restart */
	char *state_why;        /* why it entered its state (shown by agent info) */
	int stop_phase;         /* 0 command stop, 1 SIGTERM, 2 SIGKILL */
	/* While the bus holds it back (agent_throttle): the recipient whose
	 * queue is full, and since when (monotonic). */
	char *throttled_by;
	int64_t throttled_ms;
	/* Allocated apart, so the agent can be freed before the loop has
	 * released them (each frees itself in its close callback). */
	uv_timer_t *timer;    /* hello timeout, backoff, stop escalation */
	uv_timer_t *hb_timer; /* heartbeat deadline */
	bool freeing;

	/* Work and accounting (bus and tasks update these). */
	int running_tasks;
	int64_t tokens_in, tokens_out;
	double cost_usd;
	uint64_t msgs_sent;     /* messages it sent that were stored */
	uint64_t msgs_received; /* deliveries written to it (redeliveries too) */
};

/* The registry. */
struct agents;

struct agents *agents_new(struct orch *o);
/* Frees every agent (their handles must be closed: call agents_stop_all
 * and run the loop first). */
void agents_free(struct agents *as);

/* Loads agents persisted by earlier runs (agent spawn) and the config's
 * agents, and starts those set to autostart, in order. */
void agents_start_configured(struct agents *as);

/* Creates an agent from cfg (copied) and starts it.  Returns it, or NULL
 * with *cause (name taken, bad name). */
struct agent *agents_spawn(struct agents *as, const struct agent_cfg *cfg, bool from_config,
                           char **cause);

struct agent *agents_find(struct agents *as, const char *name);
size_t agents_count(const struct agents *as);
/* Agents in creation order; i < agents_count. */
struct agent *agents_at(struct agents *as, size_t i);
/* Number of agents in a connected state. */
size_t agents_up(const struct agents *as);

/* Captain actions.  Each returns 0, or -1 with *cause. */
int agent_stop(struct agent *a, char **cause);
int agent_start(struct agent *a, char **cause); /* a stopped or failed agent */
int agent_restart(struct agent *a, char **cause);
int agent_kill(struct agent *a, int sig, char **cause);
int agent_pause(struct agent *a, char **cause);
int agent_resume(struct agent *a, char **cause);
/* The same, asked by the agent's own extension (a budget, a reply loop):
 * why is shown by `agent info`; the agent is not sent `command pause`. */
int agent_pause_why(struct agent *a, const char *why, char **cause);
int agent_resume_why(struct agent *a, const char *why, char **cause);
/* A non-process agent declares itself failed (a bad API key): its link
 * ends and it stays failed, not restarted, until the captain starts it. */
int agent_fail(struct agent *a, const char *why, char **cause);

/* True if the agent has capability cap. */
bool agent_has_cap(const struct agent *a, const char *cap);
/* True if the agent takes tasks that ask for no capability. */
bool agent_takes_any_task(const struct agent *a);
/* True if the agent may be given new work (ready with a free slot). */
bool agent_can_take_task(const struct agent *a);
/* Flow control (bus.c): stops reading the agent's lines because it sends to
 * `by`, whose queue is full; false if its link cannot stop.  Released by
 * agent_unthrottle, or after heartbeat_timeout (so that a link that died
 * meanwhile is noticed). */
bool agent_throttle(struct agent *a, const char *by);
void agent_unthrottle(struct agent *a);

/* Sends a protocol line to a connected agent; line is freed.  Returns 0 or
 * -1 if it is not connected. */
int agent_send_line(struct agent *a, char *line);
/* The same for a line of len bytes that stays the caller's. */
int agent_send_text(struct agent *a, const char *line, size_t len);
/* The same for a line that waits for the agent's answer: a message, a
 * task (agent_link_ops.send's owed). */
int agent_send_owed(struct agent *a, const char *line, size_t len);
/* Sends a `command` message (pause, resume, stop, ping, ...). */
int agent_send_command(struct agent *a, const char *name, json_t *args);
/* Sends an `error` reply. */
void agent_send_error(struct agent *a, const char *code, const char *detail, const char *ref);

/* Tells the registry a task slot was taken or freed (ready <-> busy). */
void agent_tasks_changed(struct agent *a);

/* Stops every agent: all asked at once, in reverse start order (each with
 * its own stop_grace, so the slowest bounds the whole); calls done(arg)
 * when all have stopped (at once if none runs). */
void agents_stop_all(struct agents *as, void (*done)(void *arg), void *arg);

/* Connects an agent that is not a child process: an in-process agent of an
 * extension, a remote agent of the Bridge, or a test double.  ops sends its
 * lines; link is its state (a->link).  If an agent of that name exists and
 * is not connected and not a process, it is reattached (a reconnect: its
 * inbox and tasks come back).  The agent is ready at once (no hello).
 * Returns it, or NULL with *cause. */
struct agent *agents_attach(struct agents *as, const char *name, const char *type,
                            const char *const *caps, size_t ncaps, int max_tasks,
                            const struct agent_link_ops *ops, void *link, char **cause);
/* The link of an attached agent went away (why: "disconnected", ...). */
void agent_detach(struct agent *a, const char *why);

/* Tears every agent down at once, without waiting (SIGKILL, handles
 * closed); for orch_free without an orderly shutdown. */
void agents_abandon(struct agents *as);

/* Milliseconds since the agent was last heard from, or -1 where that means
 * nothing (not connected; an extension's in-process agent). */
int64_t agent_heartbeat_age_ms(const struct agent *a);
/* JSON views for agent list / agent info / status / the TUI. */
json_t *agent_json(const struct agent *a, bool detail);
/* "restart in 3.4 s, attempt 5", "up 2 m 5 s", "failed: 6 restarts in 60 s". */
void agent_describe(const struct agent *a, char *out, size_t len);

/* ---- for links (spawn.c, the Bridge) ----------------------------------- */

/* Feeds bytes read from the agent (protocol lines). */
void agent_link_input(struct agent *a, const char *data, size_t len);
/* Feeds one message of a transport that frames its own (a WebSocket
 * message, an extension's line): as its bytes and a "\n".  utf8_checked:
 * the transport has checked that it is valid UTF-8 (a WebSocket text
 * message), so it is not checked again. */
void agent_link_message(struct agent *a, const char *data, size_t len, bool utf8_checked);
/* The connection ended (process exit, disconnect). */
void agent_link_closed(struct agent *a, const struct agent_exit *ex);

/* The captain commands (cmd-agent.c). */
extern const struct cmd_entry cmd_agent_entries[];
extern const size_t cmd_agent_count;

#endif
