/* dreamos/extension.h — the Dream.OS extension API (installed header).
 *
 * An extension is a shared object (NAME.so) that dreamos loads with
 * dlopen(RTLD_NOW | RTLD_LOCAL) from extensions.dir.  It exports two
 * symbols, both defined by the DREAMOS_EXTENSION() macro below:
 *
 *   dreamos_extension_api  the API version it was built for (a string);
 *   dreamos_extension      its metadata and entry points.
 *
 * The loader compares dreamos_extension_api with its own
 * DREAMOS_EXT_API_VERSION and refuses any difference.  The version is a
 * date ("YYYYMMDD-NN") that changes whenever the ABI changes incompatibly.
 * Compatible growth (a new host function at the end of struct dreamos_host,
 * a new member at the end of a struct the extension passes in) does not
 * change it: an extension can test host->size before calling a function
 * added later (DREAMOS_HOST_HAS), and every struct it passes in starts with
 * a size member (0 or sizeof: see "Structs" below).
 *
 * Everything the extension does goes through the host table it gets in
 * init(): there is no other way into the orchestrator, its store or its
 * agents.  Every host call takes the extension's handle first, so the host
 * knows who owns what: all that an extension registered (commands, agent
 * types and their agents, timers, event subscriptions, HTTP requests in
 * flight, commands waiting for an answer) is swept when it is unloaded.
 *
 * The rules (see dreamos-extension(3) for the whole story):
 *
 *   - One thread.  dreamos runs one libuv event loop; every callback comes
 *     from it, and host functions may only be called from it, during a
 *     callback.  An extension may start threads of its own, but those
 *     threads must never call the host (the host refuses and says so).
 *   - No blocking.  A callback that sleeps, waits on a socket or a child,
 *     or loops for long stops every agent, message and command.  Use the
 *     host's timers and outbound HTTP instead; hand long computations to a
 *     thread of your own and poll for the result with a timer.
 *   - Callbacks run from the top of the loop, never from inside the core:
 *     any host function may be called from any callback.  A host function
 *     never calls back into the extension before it returns.
 *   - All state through host calls.  Durable data goes into the key-value
 *     store (kv_set/kv_get, namespaced by the extension's name); state to
 *     hand over across a hot reload goes through save_state/restore_state.
 *     Static variables are reset by a reload (the new version is a fresh
 *     copy of the shared object).
 *   - Strings passed to the extension (arguments, lines, JSON, records)
 *     are borrowed: valid only until the callback returns.  Copy what you
 *     keep.  Strings and structs the extension passes in are copied by the
 *     host before the call returns, unless a member says otherwise.
 *   - Strings the host returns as "char *" (kv_get, config_get, json_get,
 *     task_get, json_quote) belong to the extension: release them with
 *     host->free.  Strings returned as "const char *" belong to the host.
 *   - Strings the extension returns (save_state) must come from malloc(3)
 *     (or a host function returning char *); the host frees them.
 *   - JSON is exchanged as text (UTF-8), so this header needs no JSON
 *     library; host->json_get reads a value out of a JSON text.
 *   - Errors are values: a host call that fails returns -1 (or 0 for ids,
 *     NULL for strings) and host->last_error(ext) says why, in one line.
 *   - After fini() returns, the extension must not use anything it got
 *     from the host; the host has already let go of everything it owned.
 *
 * A minimal extension:
 *
 *   #include <dreamos/extension.h>
 *
 *   static const struct dreamos_host *host;
 *
 *   static int
 *   hi(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
 *   {
 *           host->call_reply(call, "hi there");
 *           return DREAMOS_CMD_OK;
 *   }
 *
 *   static int
 *   init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
 *   {
 *           host = h;
 *           struct dreamos_command c = {.name = "hi", .help = "Says hi.", .fn = hi};
 *           return host->command_register(ext, &c);
 *   }
 *
 *   DREAMOS_EXTENSION(.name = "hi", .version = "1.0", .description = "Says hi",
 *                     .init = init);
 *
 * built with: cc -shared -fPIC $(pkg-config --cflags dreamos) -o hi.so hi.c
 */
#ifndef DREAMOS_EXTENSION_H
#define DREAMOS_EXTENSION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The API version this header describes. */
#define DREAMOS_EXT_API_VERSION "20261121-01"

#if defined(__GNUC__) || defined(__clang__)
#define DREAMOS_EXPORT         __attribute__((visibility("default")))
#define DREAMOS_PRINTF(fa, va) __attribute__((format(printf, fa, va)))
#else
#define DREAMOS_EXPORT
#define DREAMOS_PRINTF(fa, va)
#endif

/* Opaque handles.  A dreamos_ext is one loaded extension (a new one after
 * every reload); a dreamos_call is one captain command being run; a
 * dreamos_agent is one in-process agent of an agent type. */
struct dreamos_ext;
struct dreamos_call;
struct dreamos_agent;
struct dreamos_host;

/* ---- metadata and entry points ----------------------------------------- */

/* A dependency: another extension, loaded first, at least min_version
 * (dotted numbers, "1.2"; NULL: any). */
struct dreamos_dep {
	const char *name;
	const char *min_version;
};

struct dreamos_ext_info {
	/* DREAMOS_EXT_API_VERSION (set by DREAMOS_EXTENSION). */
	const char *api_version;
	/* sizeof(struct dreamos_ext_info) (set by DREAMOS_EXTENSION), so
	 * that members can be added at the end later. */
	size_t size;
	/* 1 to 64 of [A-Za-z0-9_.-]; the file is NAME.so.  "core", "ext",
	 * "captain", "process" and "remote" are reserved. */
	const char *name;
	/* Dotted numbers ("1.0", "2.3.1"), compared number by number. */
	const char *version;
	const char *description;
	/* Terminated by an entry whose name is NULL; NULL for none.  Missing
	 * ones are loaded from extensions.dir first. */
	const struct dreamos_dep *requires;

	/* Called once after loading, dependencies first.  host is valid until
	 * fini returns; config is the extension's settings (the value of
	 * extensions.NAME in the configuration) as JSON text, "{}" if none.
	 * Returns 0, or non-zero to refuse to load (say why with
	 * host->set_error): whatever it registered is then swept, but fini is
	 * not called, so free what init allocated before returning. */
	int (*init)(struct dreamos_ext *ext, const struct dreamos_host *host, const char *config);
	/* Called before unloading (or before a reload hands over to the new
	 * version), after the extension's agents were stopped.  May be NULL. */
	void (*fini)(struct dreamos_ext *ext);
	/* Hot reload: returns the state to hand to the new version, as a
	 * malloc'd NUL-terminated string (JSON by convention; the host frees
	 * it), or NULL for none.  Called before fini.  May be NULL. */
	char *(*save_state)(struct dreamos_ext *ext);
	/* Hot reload: receives what the old version's save_state returned,
	 * right after init of the new version and before its agents start.
	 * Returns 0, or non-zero to refuse the new version (the old one is
	 * then loaded again and gets the state back).  May be NULL. */
	int (*restore_state)(struct dreamos_ext *ext, const char *state);
};

/* Defines the two exported symbols.  Use once, at file scope:
 *   DREAMOS_EXTENSION(.name = "x", .version = "1.0", .init = x_init, ...); */
#define DREAMOS_EXTENSION(...)                                                                     \
	DREAMOS_EXPORT extern const char dreamos_extension_api[];                                  \
	DREAMOS_EXPORT const char dreamos_extension_api[] = DREAMOS_EXT_API_VERSION;               \
	DREAMOS_EXPORT extern const struct dreamos_ext_info dreamos_extension;                     \
	DREAMOS_EXPORT const struct dreamos_ext_info dreamos_extension = {                         \
	    .api_version = DREAMOS_EXT_API_VERSION,                                                \
	    .size = sizeof(struct dreamos_ext_info),                                               \
	    __VA_ARGS__}

/* ---- constants --------------------------------------------------------- */

/* Log levels. */
enum dreamos_level {
	DREAMOS_LOG_TRACE = 0,
	DREAMOS_LOG_DEBUG = 1,
	DREAMOS_LOG_INFO = 2,
	DREAMOS_LOG_WARN = 3,
	DREAMOS_LOG_ERROR = 4,
	DREAMOS_LOG_FATAL = 5,
};

/* What a command handler returns. */
enum dreamos_cmd_status {
	DREAMOS_CMD_OK = 0,    /* done; the reply (if any) was set */
	DREAMOS_CMD_ERROR = 1, /* failed; call_error was called */
	DREAMOS_CMD_USAGE = 2, /* bad command line; call_error was called */
	DREAMOS_CMD_WAIT = 3,  /* answers later with call_finish */
};

/* Who may run a command through the Bridge (roles nest).  0 is operator. */
enum dreamos_role {
	DREAMOS_ROLE_DEFAULT = 0, /* operator */
	DREAMOS_ROLE_OBSERVER = 1,
	DREAMOS_ROLE_OPERATOR = 2,
	DREAMOS_ROLE_CAPTAIN = 3,
};

/* Option kinds. */
enum dreamos_opt_kind {
	DREAMOS_OPT_FLAG = 0,  /* --name */
	DREAMOS_OPT_VALUE = 1, /* --name VALUE; the last one wins */
	DREAMOS_OPT_MULTI = 2, /* repeatable --name VALUE */
};

/* Event kinds for subscribe (a bit set). */
#define DREAMOS_EV_MESSAGES 0x1u /* bus traffic */
#define DREAMOS_EV_TASKS    0x2u /* task transitions */
#define DREAMOS_EV_LOGS     0x4u /* log records */

/* ---- structs the extension passes in ----------------------------------- */
/*
 * Each starts with a size member: set it to sizeof the struct (or leave it
 * 0, which means the layout of this API version).  Later versions of this
 * header may add members at the end; the host reads only what size covers.
 */

/* An option of a command, like the core's. */
struct dreamos_cmd_opt {
	const char *name;     /* without the dashes; NULL ends the list */
	int kind;             /* enum dreamos_opt_kind */
	const char *arg;      /* placeholder shown in help ("N") */
	const char *complete; /* completion hint of the value (see below) */
};

/* Completion: a dreamos_complete_fn calls add(word, add_arg) for each
 * candidate that starts with partial, the word being typed. */
typedef void (*dreamos_complete_add_fn)(const char *word, void *add_arg);
typedef void (*dreamos_complete_fn)(struct dreamos_ext *ext, void *arg, const char *partial,
                                    dreamos_complete_add_fn add, void *add_arg);
/* A command handler: reads its arguments with call_arg/call_opt, answers
 * with call_reply/call_reply_json/call_error and returns a status. */
typedef int (*dreamos_cmd_fn)(struct dreamos_ext *ext, struct dreamos_call *call, void *arg);

/* A captain command.  It is listed by `help`, runs from every front end
 * (TUI prompt, `dreamos ctl`, the Bridge), and its help text and
 * completion come from here.  Completion hints are the core's: "agent",
 * "task", "ext", "cap", "level", "priority", "mode", or a literal list
 * "a|b|c". */
struct dreamos_command {
	size_t size;
	/* "word" or "word sub"; the first word must not belong to the core
	 * or to another extension. */
	const char *name;
	const char *usage;                  /* arguments after the name: "[NAME] [--loud]" */
	const char *help;                   /* one short paragraph */
	int min_args;                       /* positional arguments */
	int max_args;                       /* -1: unlimited */
	const struct dreamos_cmd_opt *opts; /* NULL-name-terminated, or NULL */
	const char *complete;               /* hint for the positionals, or NULL */
	dreamos_complete_fn complete_fn;    /* dynamic completion (wins over complete) */
	int role;                           /* enum dreamos_role */
	dreamos_cmd_fn fn;
	void *arg; /* passed to fn and complete_fn */
};

/* An agent type implemented by the extension.  Its agents are agents like
 * any other: listed in the agents pane and by `agent list`, sent messages
 * and assigned tasks, stopped and restarted by the captain.  They speak
 * the CellPhone protocol (dreamos-protocol(7)) in-process: on_line gets
 * each line the orchestrator sends ("message", "task.assign",
 * "task.cancel", "command", "error", ...) and the agent answers by giving
 * lines to host->agent_line ("ack", "task.done", "send", ...).  There is no
 * hello (the agent is ready as soon as it starts) and no heartbeat. */
struct dreamos_agent_type {
	size_t size;
	const char *name;        /* the type, for `agent spawn NAME --type TYPE` */
	const char *description; /* shown by `ext info` */
	const char *const *caps; /* default capabilities, NULL-terminated, or NULL */
	int max_tasks;           /* default task slots; 0: takes no tasks */
	/* An agent starts: *state may be set to anything (given back to the
	 * other callbacks).  Returns 0, or non-zero to fail the start (the
	 * agent's restart policy applies).  May be NULL. */
	int (*start)(struct dreamos_ext *ext, struct dreamos_agent *agent, void **state);
	/* One protocol line for the agent (JSON text, no newline). */
	void (*on_line)(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state,
	                const char *line);
	/* The agent stops (stopped by the captain, dreamos shutting down, the
	 * extension unloading or reloading): release state.  Lines not yet
	 * acknowledged are delivered again to its next incarnation.  May be
	 * NULL. */
	void (*stop)(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state,
	             const char *why);
	/* Spawn options the type accepts (`agent spawn NAME --type TYPE
	 * --model M`): names without dashes, NULL-terminated, or NULL.  The
	 * agent reads them with host->agent_option.  (Added later: set size.) */
	const char *const *options;
	/* Non-zero: its agents take only tasks that ask for one of their
	 * capabilities, never a task that asks for none.  (Added later.) */
	int specialist;
};

/* A task to submit (see `task submit`). */
struct dreamos_task_spec {
	size_t size;
	const char *title;      /* required */
	const char *payload;    /* JSON text, or NULL */
	const char *priority;   /* "low", "normal" (NULL), "high", "urgent" */
	const char *capability; /* required capability, or NULL for any agent */
	const int64_t *after;   /* ids of tasks that must be done first */
	size_t nafter;
	double timeout_s; /* <= 0: tasks.default_timeout */
	int max_retries;  /* < 0: tasks.default_retries; 0: none */
};

/* An outbound HTTP request, through the Bridge's connection manager:
 * pooled connections, retries with backoff, rate limits per service. */
struct dreamos_http_request {
	size_t size;
	const char *method;         /* NULL: GET */
	const char *url;            /* http:// or https:// */
	const char *const *headers; /* "Name: value", NULL-terminated, or NULL */
	const char *body;           /* or NULL */
	size_t body_len;            /* 0 with a body: strlen(body) */
	double timeout_s;           /* per attempt; 0: 30 s; < 0: none */
	int max_retries;            /* -1: bridge.retry_attempts; 0: none */
	const char *service;        /* rate-limit and metrics bucket; NULL: the host */
};

/* ---- what the host passes to callbacks --------------------------------- */

/* The outcome of an HTTP request (valid during the callback). */
struct dreamos_http_response {
	long status;                /* HTTP status, 0 if none came */
	const char *body;           /* never NULL, NUL-terminated */
	size_t body_len;            /* 0 when streamed to the chunk callback */
	const char *error;          /* NULL on success, else one line */
	double seconds;             /* from the request to now */
	int attempts;               /* 1 + retries */
	const char *const *headers; /* "Name: value" of the last attempt */
	size_t nheaders;
};

typedef void (*dreamos_http_done_fn)(struct dreamos_ext *ext, void *arg,
                                     const struct dreamos_http_response *resp);
typedef void (*dreamos_http_chunk_fn)(struct dreamos_ext *ext, void *arg, const char *data,
                                      size_t len);
/* A message was stored (id > 0, error NULL) or refused (id 0, error set). */
typedef void (*dreamos_sent_fn)(struct dreamos_ext *ext, void *arg, int64_t id, const char *error);
typedef void (*dreamos_timer_fn)(struct dreamos_ext *ext, void *arg);
/* An event.  kind is "message.accepted", "message.delivered",
 * "message.acked", "message.dead"; "task.submitted", "task.progress" or
 * "task.STATE" for a transition to STATE (queued, assigned, running,
 * failed, done, dead, cancelled, blocked); or "log".  json is the event as
 * one JSON object (a message with its recipient and attempt; a task with
 * from and to; a log record {seq, ts, level, source, msg, fields}).
 * Events are delivered shortly after they happen, from the loop, in order. */
typedef void (*dreamos_event_fn)(struct dreamos_ext *ext, void *arg, const char *kind,
                                 const char *json);

/* A method offered to other extensions: json in, malloc'd JSON out (NULL
 * with host->set_error on failure). */
typedef char *(*dreamos_method_fn)(struct dreamos_ext *ext, void *arg, const char *json);

/* A child process (proc_spawn). */
struct dreamos_proc_spec {
	size_t size;
	const char *file;        /* looked up on PATH when it has no slash */
	const char *const *argv; /* NULL-terminated, argv[0] included */
	const char *const *env;  /* "NAME=value" added to the host's, or NULL */
	const char *cwd;         /* NULL: the host's */
	int extra_pipes;         /* 0 to 4: socket pairs on fds 3, 4, ... */
	double kill_after_s;     /* unload: SIGTERM, SIGKILL after this; 0: at once */
};
typedef void (*dreamos_proc_data_fn)(struct dreamos_ext *ext, void *arg, uint64_t id, int fd,
                                     const char *data, size_t len);
/* status: the exit status, or -1 when killed by signum. */
typedef void (*dreamos_proc_exit_fn)(struct dreamos_ext *ext, void *arg, uint64_t id, int status,
                                     int signum);

/* ---- the host function table ------------------------------------------- */

/* True if the host table has member m (it may be older than this header). */
#define DREAMOS_HOST_HAS(host, m)                                                                  \
	((host)->size >= offsetof(struct dreamos_host, m) + sizeof((host)->m) && (host)->m != NULL)

struct dreamos_host {
	size_t size;              /* sizeof(struct dreamos_host) of the host */
	const char *api_version;  /* DREAMOS_EXT_API_VERSION of the host */
	const char *host_version; /* the dreamos version ("0.1.0") */

	/* ---- basics */
	/* The extension's name (as in its metadata). */
	const char *(*name)(struct dreamos_ext *ext);
	/* Why the last host call of this extension failed ("" if none). */
	const char *(*last_error)(struct dreamos_ext *ext);
	/* Sets the reason reported when init or restore_state fails. */
	void (*set_error)(struct dreamos_ext *ext, const char *fmt, ...) DREAMOS_PRINTF(2, 3);
	/* Frees a string the host returned as char *. */
	void (*free)(void *p);
	/* The version of a loaded extension, or NULL if it is not loaded. */
	const char *(*ext_version)(struct dreamos_ext *ext, const char *name);

	/* ---- logging: records with the extension's name as their source */
	void (*log)(struct dreamos_ext *ext, int level, const char *fmt, ...) DREAMOS_PRINTF(3, 4);
	/* The same with structured fields (a JSON object text, or NULL). */
	void (*log_fields)(struct dreamos_ext *ext, int level, const char *fields_json,
	                   const char *msg);

	/* ---- messages, sent as the extension (from = its name).  body is a
	 * JSON text; priority "low", "normal" (NULL), "high" or "urgent".
	 * done (may be NULL) is called once the message is stored, or refused.
	 * Returns 0, or -1 if the request is malformed (then done is not
	 * called). */
	int (*send)(struct dreamos_ext *ext, const char *to, const char *body, const char *priority,
	            dreamos_sent_fn done, void *arg);
	/* To every agent subscribed to topic (with or without '#'). */
	int (*publish)(struct dreamos_ext *ext, const char *topic, const char *body,
	               const char *priority, dreamos_sent_fn done, void *arg);

	/* ---- tasks: returns the new task's id, or 0 */
	int64_t (*task_submit)(struct dreamos_ext *ext, const struct dreamos_task_spec *spec);
	int (*task_cancel)(struct dreamos_ext *ext, int64_t id);
	/* The task as JSON (see `task show --json`), or NULL. */
	char *(*task_get)(struct dreamos_ext *ext, int64_t id);

	/* ---- captain commands */
	int (*command_register)(struct dreamos_ext *ext, const struct dreamos_command *cmd);
	int (*command_unregister)(struct dreamos_ext *ext, const char *name);
	/* Inside a handler: positional arguments, options, who runs it. */
	int (*call_argc)(struct dreamos_call *call);
	const char *(*call_arg)(struct dreamos_call *call, int i); /* NULL past the end */
	const char *(*call_opt)(struct dreamos_call *call, const char *name);
	int (*call_flag)(struct dreamos_call *call, const char *name);
	size_t (*call_opt_count)(struct dreamos_call *call, const char *name);
	const char *(*call_opt_at)(struct dreamos_call *call, const char *name, size_t i);
	const char *(*call_client)(struct dreamos_call *call); /* "ctl", "tui", "bridge:KEY" */
	/* The answer: a line of text, or any JSON (rendered like the core's
	 * results, and given as is with --json).  Returns 0 or -1 (bad JSON). */
	void (*call_reply)(struct dreamos_call *call, const char *text);
	int (*call_reply_json)(struct dreamos_call *call, const char *json);
	/* Sets the one-line error; returns DREAMOS_CMD_ERROR. */
	int (*call_error)(struct dreamos_call *call, const char *fmt, ...) DREAMOS_PRINTF(2, 3);
	/* Sends partial text to a front end that streams. */
	void (*call_stream)(struct dreamos_call *call, const char *text);
	/* Finishes a command whose handler returned DREAMOS_CMD_WAIT; call is
	 * invalid afterwards.  Unloading finishes waiting commands with an
	 * error. */
	void (*call_finish)(struct dreamos_call *call, int status);

	/* ---- in-process agents */
	int (*agent_type_register)(struct dreamos_ext *ext, const struct dreamos_agent_type *type);
	/* Stops its agents first. */
	int (*agent_type_unregister)(struct dreamos_ext *ext, const char *name);
	/* Creates (or brings back) an agent of one of the extension's types.
	 * caps NULL: the type's; max_tasks < 0: the type's.  Agents created
	 * this way live as long as the extension; `agent spawn NAME --type
	 * TYPE` makes one the orchestrator remembers.  Started after init. */
	int (*agent_create)(struct dreamos_ext *ext, const char *type, const char *name,
	                    const char *const *caps, int max_tasks);
	/* A protocol line from the agent (JSON text, one line). */
	int (*agent_line)(struct dreamos_ext *ext, struct dreamos_agent *agent, const char *line);
	const char *(*agent_name)(struct dreamos_agent *agent);

	/* ---- outbound HTTP: returns the request's id, or 0.  done is called
	 * once (never from inside http_request), unless cancelled; chunk (may
	 * be NULL) streams a 2xx body. */
	uint64_t (*http_request)(struct dreamos_ext *ext, const struct dreamos_http_request *req,
	                         dreamos_http_done_fn done, dreamos_http_chunk_fn chunk, void *arg);
	int (*http_cancel)(struct dreamos_ext *ext, uint64_t id);

	/* ---- key-value state in the store, in the extension's namespace.
	 * Keys: 1 to 256 bytes; values: UTF-8, at most 1 MiB.  Written in the
	 * store's group transaction (durable at the end of the loop turn). */
	int (*kv_set)(struct dreamos_ext *ext, const char *key, const char *value);
	char *(*kv_get)(struct dreamos_ext *ext, const char *key); /* NULL if absent */
	int (*kv_del)(struct dreamos_ext *ext, const char *key);

	/* ---- timers: fn runs after delay_ms, then every repeat_ms (0: once).
	 * Returns the timer's id, or 0.  A one-shot timer is gone once it ran. */
	uint64_t (*timer_add)(struct dreamos_ext *ext, uint64_t delay_ms, uint64_t repeat_ms,
	                      dreamos_timer_fn fn, void *arg);
	int (*timer_remove)(struct dreamos_ext *ext, uint64_t id);

	/* ---- configuration lookups.  path is dot-separated ("a.b.0");
	 * NULL or "" is the whole value.  A string comes back as its text,
	 * anything else as compact JSON; NULL if absent. */
	/* In the extension's own settings (extensions.NAME). */
	char *(*config_get)(struct dreamos_ext *ext, const char *path);
	/* In the orchestrator's configuration ("bridge.port"), secrets hidden. */
	char *(*config_core)(struct dreamos_ext *ext, const char *path);

	/* ---- events: kinds is a set of DREAMOS_EV_*; log_min_level filters
	 * log records.  Returns a subscription id (> 0), or -1.  Records the
	 * extension logs itself are not given back to it. */
	int (*subscribe)(struct dreamos_ext *ext, unsigned kinds, int log_min_level,
	                 dreamos_event_fn fn, void *arg);
	int (*unsubscribe)(struct dreamos_ext *ext, int id);

	/* ---- JSON helpers (no extension ext handle needed) */
	/* The value at path in a JSON text, like config_get; NULL if the text
	 * is not JSON or the path is absent. */
	char *(*json_get)(const char *json, const char *path);
	/* s as a JSON string literal, quotes included ("a\"b" for a"b). */
	char *(*json_quote)(const char *s);

	/* ==== added after the first release: test with DREAMOS_HOST_HAS ==== */

	/* ---- the extension's own directory, runtime/extensions/NAME, made
	 * (0700) on first use; survives reloads and restarts. */
	const char *(*data_dir)(struct dreamos_ext *ext);

	/* ---- secrets: text with every secret the host knows (API keys,
	 * tokens, webhook URLs, values of *_KEY, _TOKEN, _SECRET settings and
	 * those given to secret_add) replaced by "[redacted]". */
	char *(*redact)(struct dreamos_ext *ext, const char *text);
	/* Adds a secret (8 bytes or more) the host must never log or show,
	 * e.g. a webhook URL read from the environment.  Kept as long as
	 * dreamos runs (a reload does not bring it back into the logs). */
	int (*secret_add)(struct dreamos_ext *ext, const char *secret);

	/* ---- agents of the extension's types: the spawn options and the
	 * state the captain sees.  */
	/* The value of `agent spawn NAME --type TYPE --OPTION VALUE` (or of
	 * the agent's config entry), NULL if not given.  Options a type
	 * accepts are listed in dreamos_agent_type.options. */
	const char *(*agent_option)(struct dreamos_agent *agent, const char *name);
	/* Pauses (state "paused", no new messages or tasks) or resumes
	 * ("ready") the agent, or fails it ("failed", its restart policy
	 * applies), with a reason shown by `agent info` and logged. */
	int (*agent_set_state)(struct dreamos_ext *ext, struct dreamos_agent *agent,
	                       const char *state, const char *reason);

	/* ---- calls between extensions.  An extension offers named methods
	 * (JSON in, JSON out, synchronous, on the loop); another calls them
	 * by "EXT.METHOD".  The caller owns the result (host->free). */
	int (*method_register)(struct dreamos_ext *ext, const char *name, dreamos_method_fn fn,
	                       void *arg);
	char *(*call_method)(struct dreamos_ext *ext, const char *target, const char *json);

	/* ---- child processes the extension owns: killed (SIGKILL) when it
	 * unloads.  Output arrives through data (fd 1, 2, or 3 + i for the
	 * extra pipe i; len 0 is end of file), the end through exited (once,
	 * after every pipe reached end of file). */
	uint64_t (*proc_spawn)(struct dreamos_ext *ext, const struct dreamos_proc_spec *spec,
	                       dreamos_proc_data_fn data, dreamos_proc_exit_fn exited, void *arg);
	/* Writes to the child's stdin (fd 0) or to extra pipe fd (3 + i):
	 * copied, written at once or queued in order (64 MiB at most per fd).
	 * len 0 closes that fd for the child once the queue is written. */
	int (*proc_write)(struct dreamos_ext *ext, uint64_t id, int fd, const char *data,
	                  size_t len);
	int (*proc_kill)(struct dreamos_ext *ext, uint64_t id, int signum);
};

#ifdef __cplusplus
}
#endif

#endif /* DREAMOS_EXTENSION_H */
