/* config.h — the YAML configuration (DESIGN section 11), parsed with libyaml,
 * validated key by key against one schema table, with documented defaults.
 * Every error names the file, the line and the key. */
#ifndef DREAMOS_CONFIG_H
#define DREAMOS_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "store.h"

/* The core extensions, loaded when extensions.load is not given. */
#define DREAMOS_CORE_EXTENSIONS "dreamscribe,chatgpt,codex,discord,stealthbrowser"

enum restart_policy { RESTART_ALWAYS, RESTART_ON_FAILURE, RESTART_NEVER };
const char *restart_policy_name(enum restart_policy p);
bool restart_policy_parse(const char *s, enum restart_policy *out);

/* Exponential backoff: delay = initial * factor^(n-1), at most cap; the
 * attempt count resets after reset_after seconds of stable running. */
struct backoff_cfg {
	double initial; /* seconds */
	double factor;
	double cap;         /* seconds */
	double reset_after; /* seconds */
};

/* One agent, from the `agents` list or `agent spawn`. */
struct agent_cfg {
	char *name;
	char *type;    /* "process" (default) or an extension's agent type */
	char *command; /* program (process agents) */
	char **args;   /* arguments after the program */
	size_t nargs;
	char **env; /* "KEY=VALUE" added to the environment */
	size_t nenv;
	char *cwd;   /* NULL: the runtime directory */
	char **caps; /* capabilities, added to those from hello */
	size_t ncaps;
	char **options; /* "NAME=VALUE" for an extension's agent type */
	size_t noptions;

	int max_tasks;
	bool specialist; /* takes only tasks that ask for one of its capabilities */
	enum restart_policy restart;
	struct backoff_cfg backoff;
	double heartbeat_timeout; /* seconds; 0 = no heartbeat check */
	double hello_timeout;     /* seconds to say hello */
	double stop_grace;        /* seconds between `command stop`, SIGTERM, SIGKILL */
	int intensity_max;        /* this many restarts ... */
	double intensity_period;  /* ... within this many seconds -> failed */
	bool autostart;
};

struct service_cfg {
	char *name;
	char *base_url;
	char *health_path; /* NULL: no health check */
	double interval;   /* seconds between health checks */
	double rate_limit; /* requests per second; 0 = unlimited */
};

struct config {
	char *path; /* the file loaded, or NULL for built-in defaults */

	struct {
		bool enabled;
		char *host;
		int port; /* 0 = ephemeral */
		int max_connections;
		double connection_timeout;
		int retry_attempts;
		double retry_delay;
		uint64_t max_request; /* bytes */
		char *tls_cert;
		char *tls_key;
	} bridge;

	struct {
		char *auth_type; /* "token" */
		double token_expiry;
		int rate_limit; /* requests per minute per key */
		char **allowed_origins;
		size_t n_allowed_origins;
	} security;

	struct {
		bool metrics_enabled;
		double health_check_interval;
		enum log_level log_level;
		bool log_level_set; /* given in the file */
		double alert_threshold;
	} monitoring;

	struct {
		uint64_t max_line; /* protocol line limit, bytes */
		/* defaults for every agent, overridable per agent */
		struct agent_cfg defaults;
		struct agent_cfg *list;
		size_t n;
	} agents;

	struct {
		double ack_timeout;
		int max_attempts;
		int window;        /* in-flight messages per recipient */
		int high_water;    /* queued for one recipient: its agent senders wait */
		uint64_t max_body; /* bytes */
		double retention;  /* seconds of history kept; 0 = forever */
	} bus;

	struct {
		int default_retries;
		double default_timeout;
		struct backoff_cfg backoff;
		double retention;
	} tasks;

	struct {
		char *file; /* NULL: runtime/logs/dreamos.log */
		uint64_t max_size;
		int keep;
		enum log_level level;
		size_t ring;      /* records in memory */
		double retention; /* seconds kept in the store */
	} logging;

	struct {
		enum store_durability durability;
		int commit_interval_ms;
		bool adaptive_commit; /* under load, a few turns share a commit */
	} store;

	struct {
		char *dir; /* NULL: the installed extensions directory */
		char **load;
		size_t nload;
		json_t *settings; /* object: extension name -> its config (JSON) */
	} extensions;

	struct service_cfg *services;
	size_t nservices;

	struct {
		size_t max_lines; /* lines kept per pane */
	} tui;
};

/* Returns a configuration holding the built-in defaults. */
struct config *config_defaults(void);
/* Loads and validates a YAML file over the defaults.  Returns 0, or -1 with
 * *cause = "FILE:LINE: KEY: what is wrong" (caller frees). */
int config_load(const char *path, struct config **out, char **cause);
/* The same from a string; name stands for the file in messages. */
int config_load_string(const char *text, const char *name, struct config **out, char **cause);
void config_free(struct config *cfg);

/* Fills a fresh agent_cfg with the agents.defaults of cfg (name NULL). */
void agent_cfg_init(struct agent_cfg *ac, const struct config *cfg);
/* Deep copy and free of one agent_cfg. */
void agent_cfg_copy(struct agent_cfg *dst, const struct agent_cfg *src);
void agent_cfg_clear(struct agent_cfg *ac);

/* True if a name (a setting, an option, an environment variable) suggests
 * a secret: it holds key, token, secret, passw or webhook, in any case. */
bool config_secret_name(const char *name);
/* The whole effective configuration as JSON (secrets excluded). */
json_t *config_to_json(const struct config *cfg);

#endif
