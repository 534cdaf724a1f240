/* ext-int.h — what the files of the extension system share: the loaded
 * extension (struct dreamos_ext), the resources it owns, and the
 * functions loader.c, host.c and cmd-ext.c call in each other.  Nothing
 * outside src/ext includes this. */
#ifndef DREAMOS_EXT_INT_H
#define DREAMOS_EXT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <uv.h>

#include <dreamos/extension.h>

#include "cmd.h"
#include "ext.h"

/* Debounce of file-change events before a hot reload. */
#define EXT_DEBOUNCE_MS 200
/* Jobs handled per turn of the loop before yielding. */
#define EXT_JOBS_PER_TURN 4096
/* Limits of the key-value store for extensions. */
#define EXT_KV_MAX_KEY   256
#define EXT_KV_MAX_VALUE (1024 * 1024)

#define EXT_MAGIC  0x44784578u /* "DxEx" */
#define CALL_MAGIC 0x44784361u /* "DxCa" */

enum ext_state {
	EXT_OPENED,    /* dlopen'd and checked; init not called yet */
	EXT_INIT,      /* inside init / restore_state */
	EXT_ACTIVE,    /* running */
	EXT_UNLOADING, /* save_state / fini / sweep under way */
};

/* Which file an extension was loaded from, to tell a real change. */
struct ext_fileid {
	dev_t dev;
	ino_t ino;
	off_t size;
	int64_t mtime_ns;
};

struct ext_dep {
	char *name;
	char *min; /* NULL: any version */
};

/* A command an extension registered (the cmd_entry comes first, so the
 * core's ctx->entry leads back here). */
struct ext_cmd {
	struct cmd_entry entry;
	struct dreamos_ext *ext;
	char *name, *usage, *help, *complete;
	struct cmd_opt *opts;
	size_t nopts;
	dreamos_cmd_fn fn;
	dreamos_complete_fn complete_fn;
	void *arg;
	struct ext_cmd *next;
};

struct ext_type {
	struct dreamos_ext *ext;
	char *name, *description;
	char **caps;
	size_t ncaps;
	char **options; /* spawn options it accepts (NULL-terminated) */
	bool specialist;
	int max_tasks;
	int (*start)(struct dreamos_ext *, struct dreamos_agent *, void **);

	void (*on_line)(struct dreamos_ext *, struct dreamos_agent *, void *, const char *);
	void (*stop)(struct dreamos_ext *, struct dreamos_agent *, void *, const char *);
	struct ext_type *next;
};

/* An agent asked for with agent_create before the extension is active. */
struct ext_pending_agent {
	char *type, *name;
	char **caps; /* NULL: the type's */
	size_t ncaps;
	int max_tasks;
	struct ext_pending_agent *next;
};

struct ext_timer {
	struct dreamos_ext *ext;
	uint64_t id;
	uv_timer_t h;
	dreamos_timer_fn fn;
	void *arg;
	bool repeat;
	struct ext_timer *next;
};

struct ext_sub {
	struct dreamos_ext *ext;
	int id;
	unsigned kinds;
	int min_level;
	uint64_t from_seq;   /* events before this one are not for it */
	dreamos_event_fn fn; /* NULL: unsubscribed during a dispatch */
	void *arg;
	struct ext_sub *next;
};

struct ext_http {
	struct dreamos_ext *ext;
	uint64_t id;
	dreamos_http_done_fn done;
	dreamos_http_chunk_fn chunk;
	void *arg;
	struct ext_http *next;
};

/* A message sent and not yet stored.  Outlives its extension if that is
 * unloaded meanwhile (ext is then NULL and the answer is dropped). */
struct ext_send {
	struct exts *es;
	struct dreamos_ext *ext;
	dreamos_sent_fn done;
	void *arg;
	bool in_call;   /* bus_send has not returned yet */
	bool completed; /* answered while in_call */
	char *sync_error;
	struct ext_send *next;
};

/* A running captain command of an extension. */
struct dreamos_call {
	uint32_t magic;
	struct cmd_ctx *ctx;
	struct dreamos_ext *ext;
	struct ext_cmd *cmd;
	bool waiting;  /* the handler returned DREAMOS_CMD_WAIT */
	bool finished; /* call_finish ran */
	struct dreamos_call *next;
};

/* One in-process agent: the link of a struct agent (a->link). */
struct dreamos_agent {
	struct dreamos_ext *ext;
	struct ext_type *type;
	struct agent *a;
	char *name;
	void *state;
	bool started; /* start() succeeded */
	bool closing;
	size_t queued; /* bytes of lines waiting for on_line */
	struct dreamos_agent *next;
};

/* A method offered to other extensions (method_register). */
struct ext_method {
	char *name;
	dreamos_method_fn fn;
	void *arg;
	struct ext_method *next;
};

struct ext_watch {
	struct exts *es;
	char *dir;
	uv_fs_event_t h;
	int refs;
	struct ext_watch *next;
};

struct dreamos_ext {
	uint32_t magic;
	struct exts *es;
	uint64_t serial; /* unique per load, for log records' origin */
	void *dl;
	const struct dreamos_ext_info *info;
	char *name, *version, *description;
	char *path; /* the file it was loaded from (watched) */
	char *copy; /* the private copy that was dlopen'd */
	bool keep_copy;
	struct ext_dep *deps;
	size_t ndeps;
	enum ext_state state;
	char *dep_of;      /* loaded as a dependency of this one, or NULL */
	int64_t loaded_ms; /* wall */
	int reloads;
	struct ext_fileid seen; /* identity of the file last loaded or seen */
	char *error;            /* last_error */
	char *data_dir;         /* runtime/extensions/NAME, once asked for */

	struct ext_cmd *cmds;
	struct ext_type *types;
	struct dreamos_agent *agents;
	struct ext_pending_agent *pending;
	struct ext_timer *timers;
	struct ext_sub *subs;
	struct ext_http *https;
	struct ext_send *sends;
	struct dreamos_call *calls;
	struct ext_proc *procs; /* host-proc.c */
	struct ext_method *methods;
	int call_depth; /* nested call_method into this extension */

	size_t ntimers, nsubs, nhttps, nsends, ncalls, nagents, ncmds, ntypes, nprocs;

	struct ext_watch *watch;
	uv_timer_t *debounce;
};

/* Work handed to the loop: lines for in-process agents, agent starts and
 * stops, events for subscribers. */
enum ext_job_kind { JOB_START, JOB_LINE, JOB_CLOSE, JOB_ATTACH, JOB_EVENT };

struct ext_job {
	struct ext_job *next;
	enum ext_job_kind kind;
	struct dreamos_agent *ag; /* START, LINE, CLOSE */
	unsigned ev;              /* EVENT: DREAMOS_EV_* */
	int level;                /* EVENT of a log record */
	uint64_t origin;          /* EVENT of a log record: serial of the extension, or 0 */
	uint64_t seq;
	char *kind_str; /* EVENT */
	char *text;     /* LINE: the line; CLOSE: why; ATTACH: agent name; EVENT: JSON */
	size_t len;
};

/* The `ext` commands: each entry knows its system. */
#define EXT_CORE_CMDS 5
struct ext_core_cmd {
	struct cmd_entry entry;
	struct exts *es;
};

struct exts {
	struct orch *o;
	pthread_t loop_thread;
	char *dir;
	char *loaded_dir; /* RUNTIME/extensions/.loaded */
	bool build_tree;  /* dreamos runs from its build tree: modules there too */

	unsigned copy_seq;
	uint64_t next_serial;
	struct dreamos_ext **v; /* loaded, in load order */
	size_t n, cap;
	bool closing;

	/* jobs (host.c) */
	struct ext_job *jobs, **jobs_tail;
	size_t njobs;
	uv_idle_t *idle;
	bool idle_on;
	int dispatching;
	uint64_t event_seq;
	bool subs_dirty;
	int bus_sub, task_sub, log_sub;          /* core subscriptions, 0: none */
	size_t nsub_msgs, nsub_tasks, nsub_logs; /* live subscriptions per kind */
	int log_min;                             /* lowest level a log subscriber wants */
	uint64_t logging;                        /* serial of the extension logging now */
	uint64_t next_id;                        /* timers */
	int next_sub_id;
	size_t sends_out; /* ext_send not answered yet */

	struct ext_watch *watches;
	struct ext_core_cmd cmds[EXT_CORE_CMDS];
	bool cmds_registered;
};

/* ---- host.c ------------------------------------------------------------ */

extern const struct dreamos_host ext_host_table;

/* Sets x's last error (printf-style). */
void ext_set_error(struct dreamos_ext *x, const char *fmt, ...) PRINTFLIKE(2, 3);
/* Stops x's agents (their stop callbacks run) and disconnects them. */
void ext_agents_stop(struct dreamos_ext *x, const char *why);
/* Starts what x asked for during init: pending agents, and the agents of
 * its types that wait for a link. */
void ext_activate(struct dreamos_ext *x);
/* Releases everything x still holds (after fini): commands, agent types,
 * timers, subscriptions, HTTP requests, waiting commands, pending sends.
 * Returns a one-line summary ("2 commands, 1 timer") in out, counting
 * stopped_agents agents stopped before fini. */
void ext_sweep(struct dreamos_ext *x, size_t stopped_agents, char *out, size_t len);
/* Closes the job queue's handle and drops the jobs and the core
 * subscriptions. */
void ext_jobs_close(struct exts *es);
/* What x holds, as JSON (for `ext info`). */
json_t *ext_resources_json(const struct dreamos_ext *x);
/* Dynamic completion of an extension command ("x-ext:EXT:ID" hints). */
void ext_complete_dynamic(struct exts *es, const char *hint, const char *partial,
                          cmd_complete_add_fn add, void *arg);

/* ---- loader.c ---------------------------------------------------------- */

/* The loaded extension called name (active or not), or NULL. */
struct dreamos_ext *ext_find(const struct exts *es, const char *name);
/* Compares dotted versions: <0, 0, >0. */
int ext_version_cmp(const char *a, const char *b);
/* Names of the loaded extensions that require name, ", "-joined (caller
 * frees), or NULL if none. */
char *ext_dependents(const struct exts *es, const char *name);
/* One row of `ext list` (detail: the document of `ext info`).  Caller
 * owns it. */
json_t *ext_json(const struct dreamos_ext *x, bool detail);
/* Rows for the NAME.so files of the directory that are not loaded
 * (`ext list --all`).  Caller owns it. */
json_t *ext_available_json(const struct exts *es);

/* ---- cmd-ext.c --------------------------------------------------------- */

/* Fills es->cmds (the `ext` commands) for registration. */
void ext_cmds_init(struct exts *es);

/* host-proc.c: child processes of extensions. */
uint64_t ext_proc_spawn(struct dreamos_ext *x, const struct dreamos_proc_spec *spec,
                        dreamos_proc_data_fn data, dreamos_proc_exit_fn exited, void *arg);
int ext_proc_write(struct dreamos_ext *x, uint64_t id, int fd, const char *data, size_t len);
int ext_proc_kill(struct dreamos_ext *x, uint64_t id, int signum);
/* Kills and forgets every process of x (no callback runs afterwards);
 * returns how many there were. */
size_t ext_procs_sweep(struct dreamos_ext *x);

#endif
