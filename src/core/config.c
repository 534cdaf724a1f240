/* config.c — the YAML configuration (DESIGN section 11).
 *
 * The file is parsed with libyaml's document API, so that every node carries
 * the line it came from, and then walked against ONE schema: the tables of
 * struct cfg_key below.  Each entry names a key, its type, its range, its
 * default and where it lives (a field offset).  The same tables drive
 * everything else: the built-in defaults, validation, freeing, deep copies of
 * agent configurations and the JSON dump, so a new key is one new line.
 *
 * Errors are values: the first problem found becomes
 * "FILE:LINE: KEY: what is wrong", KEY being the full dotted path
 * ("agents.list[2].restart"), and the whole load fails. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "util.h"
#include "log.h"
#include "config.h"

#define KiB    1024.0
#define MiB    (1024.0 * 1024.0)
#define GiB    (1024.0 * 1024.0 * 1024.0)
#define MINUTE 60.0
#define HOUR   3600.0
#define DAY    86400.0

/* No upper bound (floats and sizes; integers always name theirs). */
#define NOMAX HUGE_VAL
/* Durations above ten years are surely mistakes, and would overflow the
 * millisecond arithmetic of timers. */
#define DUR_MAX (3650 * DAY)

/* Configuration files larger than this are refused. */
#define CONFIG_MAX_BYTES (16 * 1024 * 1024)
/* Limits on extension settings converted to JSON (aliases can build cycles
 * and exponential trees). */
#define JSON_MAX_DEPTH 64
#define JSON_MAX_NODES 100000

enum key_type {
	K_BOOL,     /* bool */
	K_INT,      /* int, in [min, max] */
	K_UINT,     /* size_t, in [min, max] */
	K_FLOAT,    /* double */
	K_DURATION, /* double seconds; "250ms", "30s", "5m", "2h", "7d" */
	K_SIZE,     /* uint64_t bytes; "64k", "10MB", "1MiB" */
	K_STRING,   /* char *, never empty */
	K_STRLIST,  /* char ** at off, size_t count at off2 */
	K_ENV,      /* mapping NAME: VALUE stored like K_STRLIST as "NAME=VALUE" */
	K_ENUM,     /* int-sized enum, through an enum_desc */
	K_MAP,      /* a mapping of sub keys; the sub struct at base + off */
	K_INCLUDE,  /* not a key: sub's keys are looked up here too, at base + off */
	K_LIST,     /* a list of mappings of sub keys: array at off, count at off2 */
};

#define F_NULLABLE 0x01 /* strings: null (~ or nothing) means unset */
#define F_POSITIVE 0x02 /* numbers: must be more than 0 */
#define F_AGENTDEF 0x04 /* agent keys: also accepted as defaults under agents: */
#define F_LAST     0x08 /* applied after the other keys of its mapping */
#define F_OPEN     0x10 /* maps: unknown keys are kept as JSON (json_t * at off2) */
#define F_SETFLAG  0x20 /* enums: the bool at off2 is set when the key is given */

struct cfg_ctx;
struct cfg_key;

/* An enumeration: parse a name, name a value, and the list for messages. */
struct enum_desc {
	const char *what; /* "always, on-failure or never" */
	bool (*parse)(const char *s, int *out);
	const char *(*name)(int v);
};

typedef int (*key_set_fn)(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base,
                          const char *path);
/* Checks a mapping after all its keys are set. */
typedef int (*map_check_fn)(struct cfg_ctx *c, yaml_node_t *map, void *sub, const char *path);
/* Prepares a fresh list item (zeroed) before its keys are applied. */
typedef void (*item_init_fn)(struct cfg_ctx *c, void *item);
/* Checks item i of a list (required keys, uniqueness). */
typedef int (*item_check_fn)(struct cfg_ctx *c, yaml_node_t *seq, size_t i, void *items,
                             const char *ipath);
/* Returns NULL if s is acceptable, else a complaint (caller frees). */
typedef char *(*valid_fn)(const char *s);

/* One entry of the schema. */
struct cfg_key {
	const char *name;
	enum key_type type;
	unsigned flags;
	size_t off;  /* the field, from the base of the table */
	size_t off2; /* the count (lists), the set flag (F_SETFLAG), the JSON (F_OPEN) */
	double min, max;
	double def;       /* default of numbers, bools and enums */
	const char *defs; /* default of strings (NULL: unset) */
	const struct cfg_key *sub;
	const struct enum_desc *en;
	valid_fn valid;     /* strings and string lists */
	key_set_fn set;     /* replaces the type's own setter */
	map_check_fn check; /* K_MAP */
	size_t size;        /* K_LIST: the size of one item */
	item_init_fn item_init;
	item_check_fn item_check;
};

/* The state of one load. */
struct cfg_ctx {
	const char *name; /* file name for messages */
	const char *text;
	size_t len;
	struct config *cfg;
	yaml_document_t *doc;
	yaml_node_t *key_node; /* the key whose value is being set */
	size_t json_nodes;     /* nodes converted to JSON so far */
	/* the nodes being converted, outermost first, to detect cycles */
	yaml_node_t *json_stack[JSON_MAX_DEPTH];
	char *cause; /* the first error */
};

/* ---- enumerations ------------------------------------------------------ */

static const char *const restart_names[] = {
    [RESTART_ALWAYS] = "always",
    [RESTART_ON_FAILURE] = "on-failure",
    [RESTART_NEVER] = "never",
};

/* Returns the name of a restart policy (static storage). */
const char *
restart_policy_name(enum restart_policy p)
{
	if ((size_t)p < nitems(restart_names))
		return restart_names[p];
	return "unknown";
}

/* Parses "always", "on-failure" or "never", ignoring case.  Returns false if
 * s is none of them (and leaves *out alone). */
bool
restart_policy_parse(const char *s, enum restart_policy *out)
{
	if (s == NULL)
		return false;
	for (size_t i = 0; i < nitems(restart_names); i++) {
		if (strcasecmp(s, restart_names[i]) == 0) {
			*out = (enum restart_policy)i;
			return true;
		}
	}
	return false;
}

static bool
restart_parse_int(const char *s, int *out)
{
	enum restart_policy p;
	if (!restart_policy_parse(s, &p))
		return false;
	*out = (int)p;
	return true;
}

static const char *
restart_name_int(int v)
{
	return restart_policy_name((enum restart_policy)v);
}

static bool
level_parse_int(const char *s, int *out)
{
	enum log_level l;
	if (!log_level_parse(s, &l))
		return false;
	*out = (int)l;
	return true;
}

static const char *
level_name_int(int v)
{
	return log_level_name((enum log_level)v);
}

static bool
durability_parse_int(const char *s, int *out)
{
	if (strcasecmp(s, "normal") == 0)
		*out = STORE_NORMAL;
	else if (strcasecmp(s, "strict") == 0)
		*out = STORE_STRICT;
	else
		return false;
	return true;
}

static const char *
durability_name_int(int v)
{
	return v == STORE_STRICT ? "strict" : "normal";
}

static const struct enum_desc restart_enum = {"always, on-failure or never", restart_parse_int,
                                              restart_name_int};
static const struct enum_desc level_enum = {"trace, debug, info, warn, error or fatal",
                                            level_parse_int, level_name_int};
static const struct enum_desc durability_enum = {"normal or strict", durability_parse_int,
                                                 durability_name_int};

/* Enum fields are stored through an int *. */
_Static_assert(sizeof(enum restart_policy) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum store_durability) == sizeof(int), "enum size");

/* ---- string checks ----------------------------------------------------- */

/* Names of agents, services and extensions: [A-Za-z0-9_.-]{1,64}. */
static char *
valid_name(const char *s)
{
	size_t n = strlen(s);
	bool ok = n >= 1 && n <= 64;
	for (size_t i = 0; ok && i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		ok = isalnum(ch) || ch == '_' || ch == '.' || ch == '-';
	}
	if (ok)
		return NULL;
	return xasprintf("\"%.80s\" is not a valid name (1 to 64 letters, digits, '_', '.' or '-')",
	                 s);
}

static char *
valid_agent_name(const char *s)
{
	if (strcmp(s, "captain") == 0 || strcmp(s, "*") == 0)
		return xasprintf("\"%s\" is reserved", s);
	return valid_name(s);
}

static char *
valid_auth_type(const char *s)
{
	if (strcmp(s, "token") == 0 || strcmp(s, "none") == 0)
		return NULL;
	return xasprintf("expected token or none, got \"%.80s\"", s);
}

static char *
valid_url(const char *s)
{
	if ((strncmp(s, "http://", 7) == 0 && s[7] != '\0') ||
	    (strncmp(s, "https://", 8) == 0 && s[8] != '\0'))
		return NULL;
	return xasprintf("\"%.80s\" is not an http:// or https:// URL", s);
}

static char *
valid_abs_path(const char *s)
{
	if (s[0] == '/')
		return NULL;
	return xasprintf("\"%.80s\" must start with /", s);
}

/* ---- item hooks (defined below) ---------------------------------------- */

static void agent_item_init(struct cfg_ctx *c, void *item);
static int agent_item_check(struct cfg_ctx *c, yaml_node_t *seq, size_t i, void *items,
                            const char *ipath);
static void service_item_init(struct cfg_ctx *c, void *item);
static int service_item_check(struct cfg_ctx *c, yaml_node_t *seq, size_t i, void *items,
                              const char *ipath);
static int check_tls(struct cfg_ctx *c, yaml_node_t *map, void *sub, const char *path);
static int set_agents(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base,
                      const char *path);

/* ---- the schema -------------------------------------------------------- */

/* Entry constructors; extra designated initializers (.flags, .valid, ...)
 * may follow the fixed arguments. */
#define KBOOL(n, o, d, ...)                                                                        \
	{                                                                                          \
		.name = n, .type = K_BOOL, .off = o, .def = d, __VA_ARGS__                         \
	}
#define KINT(n, o, lo, hi, d, ...)                                                                 \
	{                                                                                          \
		.name = n, .type = K_INT, .off = o, .min = lo, .max = hi, .def = d, __VA_ARGS__    \
	}
#define KUINT(n, o, lo, hi, d, ...)                                                                \
	{                                                                                          \
		.name = n, .type = K_UINT, .off = o, .min = lo, .max = hi, .def = d, __VA_ARGS__   \
	}
#define KFLOAT(n, o, lo, hi, d, ...)                                                               \
	{                                                                                          \
		.name = n, .type = K_FLOAT, .off = o, .min = lo, .max = hi, .def = d, __VA_ARGS__  \
	}
#define KDUR(n, o, d, ...)                                                                         \
	{                                                                                          \
		.name = n, .type = K_DURATION, .off = o, .min = 0, .max = DUR_MAX, .def = d,       \
		__VA_ARGS__                                                                        \
	}
#define KSIZE(n, o, lo, hi, d, ...)                                                                \
	{                                                                                          \
		.name = n, .type = K_SIZE, .off = o, .min = lo, .max = hi, .def = d, __VA_ARGS__   \
	}
#define KSTR(n, o, d, ...)                                                                         \
	{                                                                                          \
		.name = n, .type = K_STRING, .off = o, .defs = d, __VA_ARGS__                      \
	}
#define KSTRLIST(n, o, o2, ...)                                                                    \
	{                                                                                          \
		.name = n, .type = K_STRLIST, .off = o, .off2 = o2, __VA_ARGS__                    \
	}
#define KENV(n, o, o2, ...)                                                                        \
	{                                                                                          \
		.name = n, .type = K_ENV, .off = o, .off2 = o2, __VA_ARGS__                        \
	}
#define KENUM(n, o, e, d, ...)                                                                     \
	{                                                                                          \
		.name = n, .type = K_ENUM, .off = o, .en = e, .def = d, __VA_ARGS__                \
	}
#define KMAP(n, o, s, ...)                                                                         \
	{                                                                                          \
		.name = n, .type = K_MAP, .off = o, .sub = s, __VA_ARGS__                          \
	}
#define KLIST(n, o, o2, s, T, init, chk, ...)                                                      \
	{                                                                                          \
		.name = n, .type = K_LIST, .off = o, .off2 = o2, .sub = s, .size = sizeof(T),      \
		.item_init = init, .item_check = chk, __VA_ARGS__                                  \
	}
#define KEND                                                                                       \
	{                                                                                          \
		.name = NULL                                                                       \
	}

#define C(f) offsetof(struct config, f)
#define A(f) offsetof(struct agent_cfg, f)
#define B(f) offsetof(struct backoff_cfg, f)
#define S(f) offsetof(struct service_cfg, f)

/* Backoff keys (base: struct backoff_cfg); agents and tasks differ only in
 * their defaults. */
#define BACKOFF_KEYS(d_initial, d_cap, d_reset)                                                    \
	{                                                                                          \
		KDUR("initial", B(initial), d_initial), KFLOAT("factor", B(factor), 1, 1000, 2),   \
		    KDUR("cap", B(cap), d_cap, .flags = F_POSITIVE),                               \
		    KDUR("reset_after", B(reset_after), d_reset), KEND                             \
	}

static const struct cfg_key agent_backoff_keys[] = BACKOFF_KEYS(0.5, 30, 60);
static const struct cfg_key task_backoff_keys[] = BACKOFF_KEYS(1, 60, 0);

/* Base: struct agent_cfg (intensity is two fields of it, not a struct). */
static const struct cfg_key intensity_keys[] = {
    KINT("max", A(intensity_max), 0, 1000000, 5),
    KDUR("period", A(intensity_period), 60, .flags = F_POSITIVE),
    KEND,
};

/* One agent (base: struct agent_cfg).  The F_AGENTDEF keys may also be given
 * under `agents:` (mapping form) as defaults for every agent. */
static const struct cfg_key agent_keys[] = {
    KSTR("name", A(name), NULL, .valid = valid_agent_name),
    KSTR("type", A(type), "process", .valid = valid_name),
    KSTR("command", A(command), NULL, .flags = F_NULLABLE),
    KSTRLIST("args", A(args), A(nargs)),
    KENV("env", A(env), A(nenv)),
    KSTR("cwd", A(cwd), NULL, .flags = F_NULLABLE),
    KSTRLIST("capabilities", A(caps), A(ncaps)),
    KENV("options", A(options), A(noptions)),

    KINT("max_tasks", A(max_tasks), 0, 1000, 1, .flags = F_AGENTDEF),
    KBOOL("specialist", A(specialist), 0, .flags = F_AGENTDEF),
    KENUM("restart", A(restart), &restart_enum, RESTART_ON_FAILURE, .flags = F_AGENTDEF),
    KMAP("backoff", A(backoff), agent_backoff_keys, .flags = F_AGENTDEF),
    KDUR("heartbeat_timeout", A(heartbeat_timeout), 30, .flags = F_AGENTDEF),
    KDUR("hello_timeout", A(hello_timeout), 10, .flags = F_AGENTDEF | F_POSITIVE),
    KDUR("stop_grace", A(stop_grace), 5, .flags = F_AGENTDEF),
    KMAP("intensity", 0, intensity_keys, .flags = F_AGENTDEF),
    KBOOL("autostart", A(autostart), 1),
    KEND,
};

/* Everything below has struct config as its base. */
static const struct cfg_key tls_keys[] = {
    KSTR("cert", C(bridge.tls_cert), NULL, .flags = F_NULLABLE),
    KSTR("key", C(bridge.tls_key), NULL, .flags = F_NULLABLE),
    KEND,
};

static const struct cfg_key bridge_keys[] = {
    KBOOL("enabled", C(bridge.enabled), 1),
    KSTR("host", C(bridge.host), "127.0.0.1"),
    KINT("port", C(bridge.port), 0, 65535, 8000),
    KINT("max_connections", C(bridge.max_connections), 1, 100000, 100),
    KDUR("connection_timeout", C(bridge.connection_timeout), 30, .flags = F_POSITIVE),
    KINT("retry_attempts", C(bridge.retry_attempts), 0, 100, 3),
    KDUR("retry_delay", C(bridge.retry_delay), 5),
    KSIZE("max_request", C(bridge.max_request), 1 * KiB, 1 * GiB, 1 * MiB),
    KMAP("tls", 0, tls_keys, .check = check_tls),
    KEND,
};

static const struct cfg_key security_keys[] = {
    KSTR("auth_type", C(security.auth_type), "token", .valid = valid_auth_type),
    KDUR("token_expiry", C(security.token_expiry), 3600, .flags = F_POSITIVE),
    KINT("rate_limit", C(security.rate_limit), 1, 1000000000, 1000),
    KSTRLIST("allowed_origins", C(security.allowed_origins), C(security.n_allowed_origins)),
    KEND,
};

static const struct cfg_key monitoring_keys[] = {
    KBOOL("metrics_enabled", C(monitoring.metrics_enabled), 1),
    KDUR("health_check_interval", C(monitoring.health_check_interval), 30, .flags = F_POSITIVE),
    KENUM("log_level", C(monitoring.log_level), &level_enum, LVL_INFO, .flags = F_SETFLAG,
          .off2 = C(monitoring.log_level_set)),
    KFLOAT("alert_threshold", C(monitoring.alert_threshold), 0, 1, 0.9),
    KEND,
};

static const struct cfg_key agents_keys[] = {
    KSIZE("max_line", C(agents.max_line), 1 * KiB, 64 * MiB, 1 * MiB),
    {.name = "(agent defaults)",
     .type = K_INCLUDE,
     .off = C(agents.defaults),
     .sub = agent_keys,
     .flags = F_AGENTDEF},
    KLIST("list", C(agents.list), C(agents.n), agent_keys, struct agent_cfg, agent_item_init,
          agent_item_check, .flags = F_LAST),
    KEND,
};

static const struct cfg_key bus_keys[] = {
    KDUR("ack_timeout", C(bus.ack_timeout), 30, .flags = F_POSITIVE),
    KINT("max_attempts", C(bus.max_attempts), 1, 1000, 5),
    KINT("window", C(bus.window), 1, 100000, 64),
    KINT("high_water", C(bus.high_water), 1, 100000, 10000),
    KSIZE("max_body", C(bus.max_body), 1 * KiB, 64 * MiB, 256 * KiB),
    KDUR("retention", C(bus.retention), 7 * DAY),
    KEND,
};

static const struct cfg_key tasks_keys[] = {
    KINT("default_retries", C(tasks.default_retries), 0, 1000, 3),
    KDUR("default_timeout", C(tasks.default_timeout), 300, .flags = F_POSITIVE),
    KMAP("backoff", C(tasks.backoff), task_backoff_keys),
    KDUR("retention", C(tasks.retention), 30 * DAY),
    KEND,
};

static const struct cfg_key logging_keys[] = {
    KSTR("file", C(logging.file), NULL, .flags = F_NULLABLE),
    KSIZE("max_size", C(logging.max_size), 4 * KiB, NOMAX, 10 * MiB),
    KINT("keep", C(logging.keep), 0, 100, 5),
    KENUM("level", C(logging.level), &level_enum, LVL_INFO),
    KUINT("ring", C(logging.ring), 100, 10000000, 10000),
    KDUR("retention", C(logging.retention), 7 * DAY),
    KEND,
};

static const struct cfg_key store_keys[] = {
    KENUM("durability", C(store.durability), &durability_enum, STORE_NORMAL),
    KINT("commit_interval_ms", C(store.commit_interval_ms), 0, 1000, 0),
    KBOOL("adaptive_commit", C(store.adaptive_commit), 1),
    KEND,
};

static const struct cfg_key extensions_keys[] = {
    KSTR("dir", C(extensions.dir), NULL, .flags = F_NULLABLE),
    KSTRLIST("load", C(extensions.load), C(extensions.nload), .valid = valid_name,
             .defs = DREAMOS_CORE_EXTENSIONS),
    KEND,
};

static const struct cfg_key service_keys[] = {
    KSTR("name", S(name), NULL, .valid = valid_name),
    KSTR("base_url", S(base_url), NULL, .valid = valid_url),
    KSTR("health_path", S(health_path), NULL, .flags = F_NULLABLE, .valid = valid_abs_path),
    KDUR("interval", S(interval), 30, .flags = F_POSITIVE),
    KFLOAT("rate_limit", S(rate_limit), 0, 1000000, 0),
    KEND,
};

static const struct cfg_key tui_keys[] = {
    KUINT("max_lines", C(tui.max_lines), 100, 1000000, 5000),
    KEND,
};

static const struct cfg_key top_keys[] = {
    KMAP("bridge", 0, bridge_keys),
    KMAP("security", 0, security_keys),
    KMAP("monitoring", 0, monitoring_keys),
    KMAP("agents", 0, agents_keys, .set = set_agents),
    KMAP("bus", 0, bus_keys),
    KMAP("tasks", 0, tasks_keys),
    KMAP("logging", 0, logging_keys),
    KMAP("store", 0, store_keys),
    KMAP("extensions", 0, extensions_keys, .flags = F_OPEN, .off2 = C(extensions.settings)),
    KLIST("services", C(services), C(nservices), service_keys, struct service_cfg,
          service_item_init, service_item_check),
    KMAP("tui", 0, tui_keys),
    KEND,
};

/* ---- small helpers ----------------------------------------------------- */

#define FIELD(base, off, T)  ((T *)(void *)((char *)(base) + (off)))
#define CFIELD(base, off, T) ((T const *)(const void *)((const char *)(base) + (off)))

static void
strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Returns a deep copy of n strings (NULL if n is 0); the caller frees. */
static char **
strv_dup(char *const *v, size_t n)
{
	if (n == 0)
		return NULL;
	char **r = xreallocarray(NULL, n, sizeof *r);
	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

/* Returns "path.name", or name at the top; the caller frees. */
static char *
path_key(const char *path, const char *name)
{
	if (path[0] == '\0')
		return xstrdup(name);
	return xasprintf("%s.%s", path, name);
}

static yaml_node_t *
node_at(struct cfg_ctx *c, int index)
{
	return yaml_document_get_node(c->doc, index);
}

static const char *
scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* True for a plain null scalar: nothing, ~ or null. */
static bool
is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = scalar(n);
	return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* Returns s quoted for a message: escaped, cut after 60 bytes; the caller
 * frees. */
static char *
quote(const char *s, size_t len)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "\"");
	size_t n = len > 60 ? 60 : len;
	/* Do not cut a UTF-8 sequence. */
	while (n < len && n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			buf_addf(&b, "\\%c", ch);
		else if (ch == '\n')
			buf_adds(&b, "\\n");
		else if (ch == '\t')
			buf_adds(&b, "\\t");
		else if (ch < 0x20 || ch == 0x7f)
			buf_addf(&b, "\\x%02x", ch);
		else
			buf_add(&b, &s[i], 1);
	}
	buf_adds(&b, n < len ? "...\"" : "\"");
	return b.data;
}

/* Returns what a node is, for "got ..." in messages; the caller frees. */
static char *
describe(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return xstrdup("a mapping");
	case YAML_SEQUENCE_NODE:
		return xstrdup("a list");
	case YAML_SCALAR_NODE:
		if (is_null(n))
			return xstrdup("nothing");
		return quote(scalar(n), n->data.scalar.length);
	default:
		return xstrdup("an empty node");
	}
}

/* Records "FILE:LINE: PATH: message" as the load's error unless one is
 * already recorded.  Returns -1. */
static int PRINTFLIKE(4, 5)
    cfg_error(struct cfg_ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
	if (c->cause != NULL)
		return -1;
	/* An empty value's mark points at the next token, often on a later
	 * line: use the line of its key. */
	if (c->key_node != NULL && n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0 &&
	    n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
		n = c->key_node;
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	c->cause = xasprintf("%s:%zu: %s: %s", c->name, n->start_mark.line + 1, path, msg);
	utf8_clean_line(c->cause); /* a key may hold line breaks: one line */
	free(msg);
	return -1;
}

/* Reports "expected WHAT, got ...".  Returns -1. */
static int
type_error(struct cfg_ctx *c, const yaml_node_t *v, const char *path, const char *what)
{
	char *got = describe(v);
	cfg_error(c, v, path, "expected %s, got %s", what, got);
	free(got);
	return -1;
}

/* Returns the text of a non-null scalar, or NULL after reporting that WHAT
 * was expected.  The text belongs to the document. */
static const char *
want_scalar(struct cfg_ctx *c, const yaml_node_t *v, const char *path, const char *what)
{
	if (v->type != YAML_SCALAR_NODE || is_null(v)) {
		type_error(c, v, path, what);
		return NULL;
	}
	if (strlen(scalar(v)) != v->data.scalar.length) {
		cfg_error(c, v, path, "must not contain a NUL byte");
		return NULL;
	}
	return scalar(v);
}

/* Returns the earlier key of map equal to the key of pair p, or NULL. */
static yaml_node_t *
dup_key(struct cfg_ctx *c, yaml_node_t *map, yaml_node_pair_t *p)
{
	yaml_node_t *k = node_at(c, p->key);
	for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
		yaml_node_t *e = node_at(c, q->key);
		if (e->type == YAML_SCALAR_NODE && e->data.scalar.length == k->data.scalar.length &&
		    memcmp(e->data.scalar.value, k->data.scalar.value, k->data.scalar.length) == 0)
			return e;
	}
	return NULL;
}

/* Checks that pair p of map has a scalar key not seen before in map.
 * Returns 0 or -1 with the error recorded. */
static int
check_key(struct cfg_ctx *c, yaml_node_t *map, yaml_node_pair_t *p, const char *path)
{
	yaml_node_t *k = node_at(c, p->key);
	if (k->type != YAML_SCALAR_NODE || is_null(k)) {
		char *got = describe(k);
		cfg_error(c, k, path[0] ? path : "(top level)", "a key must be a string, got %s",
		          got);
		free(got);
		return -1;
	}
	if (strlen(scalar(k)) != k->data.scalar.length)
		return cfg_error(c, k, path[0] ? path : "(top level)",
		                 "a key must not contain a NUL byte");
	yaml_node_t *first = dup_key(c, map, p);
	if (first != NULL) {
		char *kpath = path_key(path, scalar(k));
		cfg_error(c, k, kpath, "duplicate key (first at line %zu)",
		          first->start_mark.line + 1);
		free(kpath);
		return -1;
	}
	return 0;
}

/* Returns the value node of key name in a mapping node, or NULL. */
static yaml_node_t *
map_get(struct cfg_ctx *c, yaml_node_t *map, const char *name)
{
	if (map == NULL || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node_at(c, p->key);
		if (k->type == YAML_SCALAR_NODE && strcmp(scalar(k), name) == 0)
			return node_at(c, p->value);
	}
	return NULL;
}

/* Returns item i of a sequence node. */
static yaml_node_t *
seq_item(struct cfg_ctx *c, yaml_node_t *seq, size_t i)
{
	return node_at(c, seq->data.sequence.items.start[i]);
}

static size_t
seq_len(const yaml_node_t *seq)
{
	return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

/* Formats a bound of k's range for messages, in k's own units; the caller
 * frees. */
static char *
fmt_bound(const struct cfg_key *k, double v)
{
	static const struct {
		const char *unit;
		double mult;
	} sizes[] = {{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}},
	  durs[] = {{"d", DAY}, {"h", HOUR}, {"m", MINUTE}, {"s", 1}};
	if (k->type == K_SIZE && v > 0) {
		for (size_t i = 0; i < nitems(sizes); i++)
			if (fmod(v, sizes[i].mult) == 0)
				return xasprintf("%.0f%s", v / sizes[i].mult, sizes[i].unit);
	}
	if (k->type == K_DURATION && v > 0) {
		for (size_t i = 0; i < nitems(durs); i++)
			if (fmod(v, durs[i].mult) == 0)
				return xasprintf("%.0f%s", v / durs[i].mult, durs[i].unit);
		return xasprintf("%gs", v);
	}
	if (v == floor(v) && fabs(v) < 1e15)
		return xasprintf("%.0f", v);
	return xasprintf("%g", v);
}

/* Returns k's range for messages ("0-65535", "at least 4KiB"); the caller
 * frees. */
static char *
range_text(const struct cfg_key *k)
{
	char *lo = fmt_bound(k, k->min), *hi = fmt_bound(k, k->max), *r;
	bool nomax = isinf(k->max);
	if ((k->flags & F_POSITIVE) && nomax)
		r = xstrdup("more than 0");
	else if (k->flags & F_POSITIVE)
		r = xasprintf("more than 0, at most %s", hi);
	else if (nomax)
		r = xasprintf("at least %s", lo);
	else
		r = xasprintf("%s-%s", lo, hi);
	free(lo);
	free(hi);
	return r;
}

/* Checks x (given as text) against k's range.  Returns 0 or -1. */
static int
check_range(struct cfg_ctx *c, const struct cfg_key *k, const yaml_node_t *v, const char *path,
            double x, const char *text)
{
	if (!(x < k->min || x > k->max || ((k->flags & F_POSITIVE) && x <= 0)))
		return 0;
	char *r = range_text(k);
	cfg_error(c, v, path, "%s is out of range (%s)", text, r);
	free(r);
	return -1;
}

/* Parses a decimal integer with an optional sign.  Returns false if s is
 * not one; *x is ±HUGE_VAL if it does not fit. */
static bool
parse_integer(const char *s, long long *out, double *x)
{
	const char *p = s + (*s == '+' || *s == '-');
	if (*p == '\0')
		return false;
	for (const char *q = p; *q != '\0'; q++)
		if (!isdigit((unsigned char)*q))
			return false;
	errno = 0;
	*out = strtoll(s, NULL, 10);
	*x = errno == ERANGE ? (*s == '-' ? -HUGE_VAL : HUGE_VAL) : (double)*out;
	return true;
}

/* Parses a finite decimal number.  Returns false if s is not one. */
static bool
parse_float(const char *s, double *out)
{
	const char *p = s + (*s == '+' || *s == '-');
	if (!isdigit((unsigned char)p[0]) && !(p[0] == '.' && isdigit((unsigned char)p[1])))
		return false;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		return false;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (*end != '\0' || errno == ERANGE || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static bool
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no",
	                                                                       "off"};
	for (size_t i = 0; i < nitems(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* ---- walking the schema ------------------------------------------------ */

static int key_set(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base,
                   const char *path);
static json_t *yaml_to_json(struct cfg_ctx *c, yaml_node_t *n, const char *path, int depth);
static void defaults_table(const struct cfg_key *keys, void *base);
static void free_table(const struct cfg_key *keys, void *base);

/* Returns the entry for name in keys (looking through includes, which may
 * only show their F_AGENTDEF keys) and sets *kbase to the base it applies
 * to; NULL if the key is unknown. */
static const struct cfg_key *
key_find(const struct cfg_key *keys, const char *name, unsigned need, void *base, void **kbase)
{
	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		if (k->type == K_INCLUDE) {
			const struct cfg_key *r = key_find(k->sub, name, k->flags & F_AGENTDEF,
			                                   (char *)base + k->off, kbase);
			if (r != NULL)
				return r;
		} else if ((k->flags & need) == need && strcmp(k->name, name) == 0) {
			*kbase = base;
			return k;
		}
	}
	return NULL;
}

/* Applies the pairs of a mapping node to base through keys.  Unknown keys
 * are errors, or with other != NULL are stored there as JSON.  F_LAST keys
 * are applied after the others.  Returns 0 or -1. */
static int
walk_map(struct cfg_ctx *c, yaml_node_t *map, const struct cfg_key *keys, void *base,
         const char *path, json_t *other)
{
	yaml_node_pair_t *start = map->data.mapping.pairs.start, *top = map->data.mapping.pairs.top;
	for (int pass = 0; pass < 2; pass++) {
		for (yaml_node_pair_t *p = start; p < top; p++) {
			if (pass == 0 && check_key(c, map, p, path) != 0)
				return -1;
			yaml_node_t *kn = node_at(c, p->key), *vn = node_at(c, p->value);
			const char *name = scalar(kn);
			void *kbase = NULL;
			const struct cfg_key *k = key_find(keys, name, 0, base, &kbase);
			char *kpath = path_key(path, name);
			int rc = 0;
			if (k == NULL && pass == 0) {
				if (other == NULL) {
					rc = cfg_error(c, kn, kpath, "unknown key");
				} else {
					json_t *j = yaml_to_json(c, vn, kpath, 0);
					if (j == NULL)
						rc = -1;
					else
						json_object_set_new(other, name, j);
				}
			} else if (k != NULL && ((k->flags & F_LAST) != 0) == (pass == 1)) {
				c->key_node = kn;
				rc = key_set(c, k, vn, kbase, kpath);
				c->key_node = NULL;
			}
			free(kpath);
			if (rc != 0)
				return -1;
		}
	}
	return 0;
}

/* Sets a mapping key: null leaves the defaults, anything but a mapping is
 * an error.  Returns 0 or -1. */
static int
set_map(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base, const char *path)
{
	if (is_null(v))
		return 0;
	if (v->type != YAML_MAPPING_NODE)
		return type_error(c, v, path, "a mapping");
	json_t *other = (k->flags & F_OPEN) ? *FIELD(base, k->off2, json_t *) : NULL;
	void *sub = (char *)base + k->off;
	if (walk_map(c, v, k->sub, sub, path, other) != 0)
		return -1;
	return k->check != NULL ? k->check(c, v, sub, path) : 0;
}

/* Sets a list of mappings, replacing the current one.  Items are stored as
 * they are parsed, so a failure leaves nothing unowned.  Returns 0 or -1. */
static int
set_list(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base, const char *path)
{
	char **arr = FIELD(base, k->off, char *);
	size_t *count = FIELD(base, k->off2, size_t);
	if (!is_null(v) && v->type != YAML_SEQUENCE_NODE)
		return type_error(c, v, path, "a list");
	for (size_t i = 0; i < *count; i++)
		free_table(k->sub, *arr + i * k->size);
	free(*arr);
	*arr = NULL;
	*count = 0;
	if (is_null(v))
		return 0;
	size_t n = seq_len(v);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *iv = seq_item(c, v, i);
		char *ipath = xasprintf("%s[%zu]", path, i);
		int rc;
		if (iv->type != YAML_MAPPING_NODE) {
			rc = type_error(c, iv, ipath, "a mapping");
		} else {
			*arr = xreallocarray(*arr, i + 1, k->size);
			void *item = *arr + i * k->size;
			memset(item, 0, k->size);
			*count = i + 1;
			k->item_init(c, item);
			rc = walk_map(c, iv, k->sub, item, ipath, NULL);
			if (rc == 0)
				rc = k->item_check(c, v, i, *arr, ipath);
		}
		free(ipath);
		if (rc != 0)
			return -1;
	}
	return 0;
}

/* Sets a list of strings, replacing the current one.  Returns 0 or -1. */
static int
set_strlist(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base,
            const char *path)
{
	if (!is_null(v) && v->type != YAML_SEQUENCE_NODE)
		return type_error(c, v, path, "a list of strings");
	size_t n = is_null(v) ? 0 : seq_len(v);
	char **list = n ? xreallocarray(NULL, n, sizeof *list) : NULL;
	size_t got = 0;
	for (; got < n; got++) {
		yaml_node_t *iv = seq_item(c, v, got);
		char *ipath = xasprintf("%s[%zu]", path, got);
		const char *s = want_scalar(c, iv, ipath, "a string");
		char *why = NULL;
		if (s != NULL && s[0] == '\0')
			cfg_error(c, iv, ipath, "must not be empty");
		else if (s != NULL && k->valid != NULL && (why = k->valid(s)) != NULL)
			cfg_error(c, iv, ipath, "%s", why);
		free(why);
		free(ipath);
		if (c->cause != NULL) {
			strv_free(list, got);
			return -1;
		}
		list[got] = xstrdup(s);
	}
	char ***field = FIELD(base, k->off, char **);
	size_t *count = FIELD(base, k->off2, size_t);
	strv_free(*field, *count);
	*field = list;
	*count = n;
	return 0;
}

/* Sets an environment mapping NAME: VALUE as "NAME=VALUE" strings. */
static int
set_env(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base, const char *path)
{
	if (!is_null(v) && v->type != YAML_MAPPING_NODE)
		return type_error(c, v, path, "a mapping of NAME: VALUE");
	size_t n =
	    is_null(v) ? 0 : (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
	char **list = n ? xreallocarray(NULL, n, sizeof *list) : NULL;
	size_t got = 0;
	for (; got < n; got++) {
		yaml_node_pair_t *p = v->data.mapping.pairs.start + got;
		if (check_key(c, v, p, path) != 0)
			break;
		yaml_node_t *kn = node_at(c, p->key), *vn = node_at(c, p->value);
		const char *name = scalar(kn), *val = "";
		char *kpath = path_key(path, name);
		if (strchr(name, '=') != NULL)
			cfg_error(c, kn, kpath, "a variable name must not contain '='");
		else if (!is_null(vn))
			val = want_scalar(c, vn, kpath, "a string");
		free(kpath);
		if (c->cause != NULL)
			break;
		list[got] = xasprintf("%s=%s", name, val);
	}
	if (c->cause != NULL) {
		strv_free(list, got);
		return -1;
	}
	char ***field = FIELD(base, k->off, char **);
	size_t *count = FIELD(base, k->off2, size_t);
	strv_free(*field, *count);
	*field = list;
	*count = n;
	return 0;
}

/* Sets one key's value v on base according to its type.  Returns 0 or -1
 * with the error recorded in c. */
static int
key_set(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base, const char *path)
{
	const char *s;
	double x;
	long long ll;
	char *why;

	if (k->set != NULL)
		return k->set(c, k, v, base, path);
	switch (k->type) {
	case K_BOOL:
		if ((s = want_scalar(c, v, path, "true or false")) == NULL)
			return -1;
		if (!parse_bool(s, FIELD(base, k->off, bool)))
			return type_error(c, v, path, "true or false");
		return 0;
	case K_INT:
	case K_UINT:
		if ((s = want_scalar(c, v, path, "an integer")) == NULL)
			return -1;
		if (!parse_integer(s, &ll, &x))
			return type_error(c, v, path, "an integer");
		if (check_range(c, k, v, path, x, s) != 0)
			return -1;
		if (k->type == K_INT)
			*FIELD(base, k->off, int) = (int)ll;
		else
			*FIELD(base, k->off, size_t) = (size_t)ll;
		return 0;
	case K_FLOAT:
		if ((s = want_scalar(c, v, path, "a number")) == NULL)
			return -1;
		if (!parse_float(s, &x))
			return type_error(c, v, path, "a number");
		if (check_range(c, k, v, path, x, s) != 0)
			return -1;
		*FIELD(base, k->off, double) = x;
		return 0;
	case K_DURATION:
#define DUR_WHAT "a duration (seconds, or a number with ms, s, m, h or d)"
		if ((s = want_scalar(c, v, path, DUR_WHAT)) == NULL)
			return -1;
		if (!parse_duration(s, &x))
			return type_error(c, v, path, DUR_WHAT);
		if (check_range(c, k, v, path, x, s) != 0)
			return -1;
		/* timers count milliseconds: less would be 0, which means off */
		if (x > 0 && x < 0.001)
			return cfg_error(c, v, path, "%s is less than 1ms (give 0 or at least 1ms)",
			                 s);
		*FIELD(base, k->off, double) = x;
		return 0;
	case K_SIZE: {
#define SIZE_WHAT "a size (bytes, or a number with k, M or G, as in 64k, 10MB, 1MiB)"
		uint64_t bytes;
		if ((s = want_scalar(c, v, path, SIZE_WHAT)) == NULL)
			return -1;
		if (!parse_size(s, &bytes))
			return type_error(c, v, path, SIZE_WHAT);
		if (check_range(c, k, v, path, (double)bytes, s) != 0)
			return -1;
		*FIELD(base, k->off, uint64_t) = bytes;
		return 0;
	}
	case K_STRING: {
		char **field = FIELD(base, k->off, char *);
		if ((k->flags & F_NULLABLE) && is_null(v)) {
			free(*field);
			*field = NULL;
			return 0;
		}
		if ((s = want_scalar(c, v, path, "a string")) == NULL)
			return -1;
		if (s[0] == '\0')
			return cfg_error(c, v, path, "must not be empty");
		if (k->valid != NULL && (why = k->valid(s)) != NULL) {
			cfg_error(c, v, path, "%s", why);
			free(why);
			return -1;
		}
		free(*field);
		*field = xstrdup(s);
		return 0;
	}
	case K_STRLIST:
		return set_strlist(c, k, v, base, path);
	case K_ENV:
		return set_env(c, k, v, base, path);
	case K_ENUM: {
		int e;
		if ((s = want_scalar(c, v, path, k->en->what)) == NULL)
			return -1;
		if (!k->en->parse(s, &e))
			return type_error(c, v, path, k->en->what);
		*FIELD(base, k->off, int) = e;
		if (k->flags & F_SETFLAG)
			*FIELD(base, k->off2, bool) = true;
		return 0;
	}
	case K_MAP:
		return set_map(c, k, v, base, path);
	case K_LIST:
		return set_list(c, k, v, base, path);
	case K_INCLUDE:
		break;
	}
	return cfg_error(c, v, path, "cannot be set");
}

/* `agents:` is either the list of agents or a mapping of defaults and
 * `list`.  Returns 0 or -1. */
static int
set_agents(struct cfg_ctx *c, const struct cfg_key *k, yaml_node_t *v, void *base, const char *path)
{
	if (v->type == YAML_SEQUENCE_NODE) {
		void *lbase;
		const struct cfg_key *list = key_find(k->sub, "list", 0, base, &lbase);
		return set_list(c, list, v, lbase, path);
	}
	if (v->type == YAML_MAPPING_NODE || is_null(v))
		return set_map(c, k, v, base, path);
	return type_error(c, v, path, "a list of agents or a mapping");
}

/* bridge.tls: both cert and key, or neither. */
static int
check_tls(struct cfg_ctx *c, yaml_node_t *map, void *sub, const char *path)
{
	struct config *cfg = sub;
	if ((cfg->bridge.tls_cert == NULL) == (cfg->bridge.tls_key == NULL))
		return 0;
	return cfg_error(c, map, path, "%s is missing (give both cert and key, or neither)",
	                 cfg->bridge.tls_cert == NULL ? "cert" : "key");
}

static void
agent_item_init(struct cfg_ctx *c, void *item)
{
	agent_cfg_init(item, c->cfg);
}

/* Returns the line of the "name" value of item i of seq (or of the item). */
static size_t
name_line(struct cfg_ctx *c, yaml_node_t *seq, size_t i)
{
	yaml_node_t *item = seq_item(c, seq, i), *n = map_get(c, item, "name");
	return (n != NULL ? n : item)->start_mark.line + 1;
}

/* Reports a missing required key of list item i.  Returns -1. */
static int
missing(struct cfg_ctx *c, yaml_node_t *seq, size_t i, const char *ipath, const char *key,
        const char *why)
{
	char *kpath = path_key(ipath, key);
	cfg_error(c, seq_item(c, seq, i), kpath, "missing (%s)", why);
	free(kpath);
	return -1;
}

/* Reports a name used by an earlier item.  Returns -1. */
static int
duplicate_name(struct cfg_ctx *c, yaml_node_t *seq, size_t i, size_t first, const char *ipath,
               const char *what, const char *name)
{
	yaml_node_t *item = seq_item(c, seq, i), *n = map_get(c, item, "name");
	char *kpath = path_key(ipath, "name");
	cfg_error(c, n != NULL ? n : item, kpath, "duplicate %s name \"%s\" (first at line %zu)",
	          what, name, name_line(c, seq, first));
	free(kpath);
	return -1;
}

static int
agent_item_check(struct cfg_ctx *c, yaml_node_t *seq, size_t i, void *items, const char *ipath)
{
	struct agent_cfg *list = items, *a = &list[i];
	if (a->name == NULL)
		return missing(c, seq, i, ipath, "name", "every agent needs a name");
	if (a->command == NULL && a->type != NULL && strcmp(a->type, "process") == 0)
		return missing(c, seq, i, ipath, "command", "a process agent needs a command");
	for (size_t j = 0; j < i; j++)
		if (strcmp(list[j].name, a->name) == 0)
			return duplicate_name(c, seq, i, j, ipath, "agent", a->name);
	return 0;
}

static void
service_item_init(struct cfg_ctx *c, void *item)
{
	(void)c;
	defaults_table(service_keys, item);
}

static int
service_item_check(struct cfg_ctx *c, yaml_node_t *seq, size_t i, void *items, const char *ipath)
{
	struct service_cfg *list = items, *s = &list[i];
	if (s->name == NULL)
		return missing(c, seq, i, ipath, "name", "every service needs a name");
	if (s->base_url == NULL)
		return missing(c, seq, i, ipath, "base_url", "every service needs a base_url");
	for (size_t j = 0; j < i; j++)
		if (strcmp(list[j].name, s->name) == 0)
			return duplicate_name(c, seq, i, j, ipath, "service", s->name);
	return 0;
}

/* ---- YAML to JSON (extension settings) --------------------------------- */

/* Returns a plain scalar as the JSON value it looks like: null, a boolean,
 * an integer, a real, or else a string.  Quoted scalars are always strings.
 * Returns a new reference, or NULL if the text is not valid UTF-8. */
static json_t *
scalar_to_json(const yaml_node_t *n)
{
	const char *s = scalar(n);
	size_t len = n->data.scalar.length;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return json_stringn(s, len);
	if (is_null(n))
		return json_null();
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return json_true();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return json_false();
	long long ll;
	double x;
	if (parse_integer(s, &ll, &x))
		return isinf(x) ? json_real(strtod(s, NULL)) : json_integer(ll);
	if (parse_float(s, &x))
		return json_real(x);
	return json_stringn(s, len);
}

/* Returns node n as JSON (a new reference), or NULL with the error
 * recorded.  Mapping keys must be unique strings. */
static json_t *
yaml_to_json(struct cfg_ctx *c, yaml_node_t *n, const char *path, int depth)
{
	for (int i = 0; i < depth && i < JSON_MAX_DEPTH; i++) {
		if (c->json_stack[i] == n) {
			cfg_error(c, n, path, "refers to itself through an alias");
			return NULL;
		}
	}
	if (depth >= JSON_MAX_DEPTH) {
		cfg_error(c, n, path, "nested too deeply (more than %d levels)", JSON_MAX_DEPTH);
		return NULL;
	}
	if (++c->json_nodes > JSON_MAX_NODES) {
		cfg_error(c, n, path, "too many values (more than %d, after expanding aliases)",
		          JSON_MAX_NODES);
		return NULL;
	}
	json_t *r = NULL;
	c->json_stack[depth] = n;
	switch (n->type) {
	case YAML_SCALAR_NODE:
		if ((r = scalar_to_json(n)) == NULL)
			cfg_error(c, n, path, "is not valid UTF-8");
		return r;
	case YAML_SEQUENCE_NODE:
		r = json_array();
		for (size_t i = 0; i < seq_len(n); i++) {
			char *ipath = xasprintf("%s[%zu]", path, i);
			json_t *item = yaml_to_json(c, seq_item(c, n, i), ipath, depth + 1);
			free(ipath);
			if (item == NULL) {
				json_decref(r);
				return NULL;
			}
			json_array_append_new(r, item);
		}
		return r;
	case YAML_MAPPING_NODE:
		r = json_object();
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     p < n->data.mapping.pairs.top; p++) {
			if (check_key(c, n, p, path) != 0) {
				json_decref(r);
				return NULL;
			}
			const char *name = scalar(node_at(c, p->key));
			char *kpath = path_key(path, name);
			json_t *item = yaml_to_json(c, node_at(c, p->value), kpath, depth + 1);
			free(kpath);
			if (item == NULL) {
				json_decref(r);
				return NULL;
			}
			json_object_set_new(r, name, item);
		}
		return r;
	default:
		return json_null();
	}
}

/* ---- defaults, free, copy, dump: the same tables ------------------------- */

/* Sets every key of keys on a zeroed base to its default. */
static void
defaults_table(const struct cfg_key *keys, void *base)
{
	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case K_BOOL:
			*FIELD(base, k->off, bool) = k->def != 0;
			break;
		case K_INT:
		case K_ENUM:
			*FIELD(base, k->off, int) = (int)k->def;
			break;
		case K_UINT:
			*FIELD(base, k->off, size_t) = (size_t)k->def;
			break;
		case K_FLOAT:
		case K_DURATION:
			*FIELD(base, k->off, double) = k->def;
			break;
		case K_SIZE:
			*FIELD(base, k->off, uint64_t) = (uint64_t)k->def;
			break;
		case K_STRING:
			*FIELD(base, k->off, char *) = k->defs ? xstrdup(k->defs) : NULL;
			break;
		case K_STRLIST:
			/* A default list is given as "a,b,c". */
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->off2, size_t) = 0;
			for (const char *p = k->defs; p != NULL && *p != '\0';) {
				size_t n = strcspn(p, ",");
				char ***list = FIELD(base, k->off, char **);
				size_t *count = FIELD(base, k->off2, size_t);
				*list = xreallocarray(*list, *count + 1, sizeof **list);
				(*list)[(*count)++] = xstrndup(p, n);
				p += n + (p[n] == ',');
			}
			break;
		case K_ENV:
		case K_LIST:
			*FIELD(base, k->off, void *) = NULL;
			*FIELD(base, k->off2, size_t) = 0;
			break;
		case K_MAP:
		case K_INCLUDE:
			defaults_table(k->sub, (char *)base + k->off);
			if (k->flags & F_OPEN)
				*FIELD(base, k->off2, json_t *) = json_object();
			break;
		}
	}
}

/* Frees everything keys own in base and clears those fields. */
static void
free_table(const struct cfg_key *keys, void *base)
{
	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case K_STRING:
			free(*FIELD(base, k->off, char *));
			*FIELD(base, k->off, char *) = NULL;
			break;
		case K_STRLIST:
		case K_ENV:
			strv_free(*FIELD(base, k->off, char **), *FIELD(base, k->off2, size_t));
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->off2, size_t) = 0;
			break;
		case K_LIST: {
			char *arr = *FIELD(base, k->off, char *);
			size_t n = *FIELD(base, k->off2, size_t);
			for (size_t i = 0; i < n; i++)
				free_table(k->sub, arr + i * k->size);
			free(arr);
			*FIELD(base, k->off, char *) = NULL;
			*FIELD(base, k->off2, size_t) = 0;
			break;
		}
		case K_MAP:
		case K_INCLUDE:
			free_table(k->sub, (char *)base + k->off);
			if (k->flags & F_OPEN) {
				json_decref(*FIELD(base, k->off2, json_t *));
				*FIELD(base, k->off2, json_t *) = NULL;
			}
			break;
		default:
			break;
		}
	}
}

/* Replaces the pointers keys own in dst (a shallow copy of src) by deep
 * copies. */
static void
copy_table(const struct cfg_key *keys, void *dst, const void *src)
{
	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case K_STRING: {
			const char *s = *CFIELD(src, k->off, char *);
			*FIELD(dst, k->off, char *) = s ? xstrdup(s) : NULL;
			break;
		}
		case K_STRLIST:
		case K_ENV:
			*FIELD(dst, k->off, char **) =
			    strv_dup(*CFIELD(src, k->off, char **), *CFIELD(src, k->off2, size_t));
			break;
		case K_LIST: {
			const char *arr = *CFIELD(src, k->off, char *);
			size_t n = *CFIELD(src, k->off2, size_t);
			char *copy = n ? xreallocarray(NULL, n, k->size) : NULL;
			for (size_t i = 0; i < n; i++) {
				memcpy(copy + i * k->size, arr + i * k->size, k->size);
				copy_table(k->sub, copy + i * k->size, arr + i * k->size);
			}
			*FIELD(dst, k->off, char *) = copy;
			break;
		}
		case K_MAP:
		case K_INCLUDE:
			copy_table(k->sub, (char *)dst + k->off, (const char *)src + k->off);
			if (k->flags & F_OPEN)
				*FIELD(dst, k->off2, json_t *) =
				    json_deep_copy(*CFIELD(src, k->off2, json_t *));
			break;
		default:
			break;
		}
	}
}

bool
config_secret_name(const char *name)
{
	static const char *const words[] = {"key", "token", "secret", "passw", "webhook"};
	char *lower = xstrdup(name);
	for (char *p = lower; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	bool r = false;
	for (size_t i = 0; i < nitems(words) && !r; i++)
		r = strstr(lower, words[i]) != NULL;
	free(lower);
	return r;
}

/* Replaces, at any depth, the values of secret-looking keys by
 * "[redacted]".  Numbers, booleans and null are kept: they are not secrets,
 * and settings like max_tokens stay readable. */
static void
redact(json_t *v)
{
	if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++)
			redact(json_array_get(v, i));
		return;
	}
	if (!json_is_object(v))
		return;
	for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
		json_t *val = json_object_iter_value(it);
		if (config_secret_name(json_object_iter_key(it)) &&
		    (json_is_string(val) || json_is_object(val) || json_is_array(val)))
			json_object_iter_set_new(v, it, json_string("[redacted]"));
		else
			redact(val);
	}
}

/* Returns a string as JSON, null for NULL. */
static json_t *
json_str_or_null(const char *s)
{
	json_t *j = s != NULL ? json_string(s) : NULL;
	return j != NULL ? j : json_null();
}

static void emit_table(const struct cfg_key *keys, unsigned need, const void *base, json_t *obj);

/* Returns one key's value as JSON (a new reference). */
static json_t *
emit_key(const struct cfg_key *k, const void *base)
{
	switch (k->type) {
	case K_BOOL:
		return json_boolean(*CFIELD(base, k->off, bool));
	case K_INT:
		return json_integer(*CFIELD(base, k->off, int));
	case K_UINT:
		return json_integer((json_int_t)*CFIELD(base, k->off, size_t));
	case K_FLOAT:
	case K_DURATION:
		return json_real(*CFIELD(base, k->off, double));
	case K_SIZE:
		return json_integer((json_int_t)*CFIELD(base, k->off, uint64_t));
	case K_STRING:
		return json_str_or_null(*CFIELD(base, k->off, char *));
	case K_ENUM:
		return json_string(k->en->name(*CFIELD(base, k->off, int)));
	case K_STRLIST: {
		json_t *a = json_array();
		char *const *v = *CFIELD(base, k->off, char **);
		for (size_t i = 0; i < *CFIELD(base, k->off2, size_t); i++)
			json_array_append_new(a, json_str_or_null(v[i]));
		return a;
	}
	case K_ENV: {
		json_t *o = json_object();
		char *const *v = *CFIELD(base, k->off, char **);
		for (size_t i = 0; i < *CFIELD(base, k->off2, size_t); i++) {
			const char *eq = strchr(v[i], '=');
			char *name = xstrndup(v[i], eq ? (size_t)(eq - v[i]) : strlen(v[i]));
			json_object_set_new(o, name, json_str_or_null(eq ? eq + 1 : ""));
			free(name);
		}
		return o;
	}
	case K_LIST: {
		json_t *a = json_array();
		const char *arr = *CFIELD(base, k->off, char *);
		for (size_t i = 0; i < *CFIELD(base, k->off2, size_t); i++) {
			json_t *o = json_object();
			emit_table(k->sub, 0, arr + i * k->size, o);
			json_array_append_new(a, o);
		}
		return a;
	}
	case K_MAP: {
		json_t *o = json_object();
		emit_table(k->sub, 0, (const char *)base + k->off, o);
		if (k->flags & F_OPEN) {
			json_t *other = json_deep_copy(*CFIELD(base, k->off2, json_t *));
			redact(other);
			json_object_update(o, other);
			json_decref(other);
		}
		return o;
	}
	case K_INCLUDE:
		break;
	}
	return json_null();
}

/* Adds the keys of keys (those with the flags in need) to obj. */
static void
emit_table(const struct cfg_key *keys, unsigned need, const void *base, json_t *obj)
{
	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		if (k->type == K_INCLUDE)
			emit_table(k->sub, k->flags & F_AGENTDEF, (const char *)base + k->off, obj);
		else if ((k->flags & need) == need)
			json_object_set_new(obj, k->name, emit_key(k, base));
	}
}

/* ---- the public functions ---------------------------------------------- */

/* Returns a new configuration holding the built-in defaults; free it with
 * config_free. */
struct config *
config_defaults(void)
{
	struct config *cfg = xcalloc(1, sizeof *cfg);
	defaults_table(top_keys, cfg);
	return cfg;
}

/* Frees cfg and everything it owns.  NULL is allowed. */
void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	free_table(top_keys, cfg);
	free(cfg->path);
	free(cfg);
}

/* Fills ac (its old contents are not freed) with a deep copy of cfg's
 * agents.defaults, or with the built-in defaults if cfg is NULL.  Release
 * with agent_cfg_clear. */
void
agent_cfg_init(struct agent_cfg *ac, const struct config *cfg)
{
	if (cfg != NULL) {
		agent_cfg_copy(ac, &cfg->agents.defaults);
		return;
	}
	memset(ac, 0, sizeof *ac);
	defaults_table(agent_keys, ac);
}

/* Makes dst (its old contents are not freed) a deep copy of src.  Release
 * with agent_cfg_clear. */
void
agent_cfg_copy(struct agent_cfg *dst, const struct agent_cfg *src)
{
	memcpy(dst, src, sizeof *dst);
	copy_table(agent_keys, dst, src);
}

/* Frees what ac owns and zeroes it (ac itself is the caller's). */
void
agent_cfg_clear(struct agent_cfg *ac)
{
	free_table(agent_keys, ac);
	memset(ac, 0, sizeof *ac);
}

/* Returns the effective configuration as a new JSON object shaped like the
 * YAML file (agents in the mapping form; durations in seconds, sizes in
 * bytes), with secret-looking extension settings redacted.  Caller owns the
 * reference. */
json_t *
config_to_json(const struct config *cfg)
{
	json_t *o = json_object();
	emit_table(top_keys, 0, cfg, o);
	return o;
}

/* Returns the 1-based line of byte offset off in text. */
static size_t
line_of_offset(const char *text, size_t len, size_t off)
{
	size_t line = 1;
	for (size_t i = 0; i < off && i < len; i++)
		if (text[i] == '\n')
			line++;
	return line;
}

/* Records libyaml's error as "FILE:LINE: syntax error: PROBLEM ...". */
static void
syntax_error(struct cfg_ctx *c, const yaml_parser_t *p)
{
	if (c->cause != NULL)
		return;
	if (p->error == YAML_MEMORY_ERROR) {
		c->cause = xasprintf("%s: out of memory while parsing", c->name);
		return;
	}
	size_t line = p->error == YAML_READER_ERROR
	                  ? line_of_offset(c->text, c->len, p->problem_offset)
	                  : p->problem_mark.line + 1;
	const char *problem = p->problem != NULL ? p->problem : "malformed YAML";
	if (p->context != NULL)
		c->cause = xasprintf("%s:%zu: syntax error: %s (%s at line %zu)", c->name, line,
		                     problem, p->context, p->context_mark.line + 1);
	else
		c->cause = xasprintf("%s:%zu: syntax error: %s", c->name, line, problem);
}

static bool
is_loopback(const char *host)
{
	unsigned char a[16];
	if (strcmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, a) == 1)
		return a[0] == 127;
	return inet_pton(AF_INET6, host, a) == 1 && memcmp(a, &in6addr_loopback, 16) == 0;
}

/* security.auth_type none makes whoever reaches the Bridge the captain,
 * who can spawn programs: only on a loopback address. */
static int
check_open_bridge(struct cfg_ctx *c, yaml_node_t *root)
{
	const struct config *cfg = c->cfg;
	if (strcmp(cfg->security.auth_type, "none") != 0 || !cfg->bridge.enabled ||
	    is_loopback(cfg->bridge.host))
		return 0;
	yaml_node_t *at = map_get(c, map_get(c, root, "security"), "auth_type");
	return cfg_error(c, at != NULL ? at : root, "security.auth_type",
	                 "none lets anyone who reaches the Bridge act as the captain; it needs "
	                 "a loopback bridge.host (127.0.0.1, ::1, localhost), not \"%.80s\"",
	                 cfg->bridge.host);
}

/* monitoring.log_level (the seeds' key) and logging.level name one level:
 * either sets both; given both, they must agree, or one would be ignored. */
static int
check_two_levels(struct cfg_ctx *c, yaml_node_t *root)
{
	struct config *cfg = c->cfg;
	yaml_node_t *ml = map_get(c, map_get(c, root, "monitoring"), "log_level");
	bool level_given = map_get(c, map_get(c, root, "logging"), "level") != NULL;
	if (!cfg->monitoring.log_level_set || ml == NULL) {
		cfg->monitoring.log_level = cfg->logging.level;
		return 0;
	}
	if (!level_given || cfg->monitoring.log_level == cfg->logging.level) {
		cfg->logging.level = cfg->monitoring.log_level;
		return 0;
	}
	return cfg_error(c, ml, "monitoring.log_level",
	                 "%s, but logging.level is %s: give one of them (this one would win)",
	                 log_level_name(cfg->monitoring.log_level),
	                 log_level_name(cfg->logging.level));
}

/* Applies the root node of a document to c->cfg.  Returns 0 or -1. */
static int
apply_root(struct cfg_ctx *c, yaml_node_t *root)
{
	if (is_null(root))
		return 0;
	if (root->type != YAML_MAPPING_NODE) {
		char *got = describe(root);
		c->cause =
		    xasprintf("%s:%zu: expected a mapping of sections at the top level, got %s",
		              c->name, root->start_mark.line + 1, got);
		free(got);
		return -1;
	}
	if (walk_map(c, root, top_keys, c->cfg, "", NULL) != 0)
		return -1;
	return check_open_bridge(c, root) != 0 || check_two_levels(c, root) != 0 ? -1 : 0;
}

/* Parses text over cfg's values.  Returns 0, or -1 with c->cause set. */
static int
config_parse(struct cfg_ctx *c)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser)) {
		c->cause = xasprintf("%s: out of memory while parsing", c->name);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)c->text, c->len);
	if (!yaml_parser_load(&parser, &doc)) {
		syntax_error(c, &parser);
		yaml_parser_delete(&parser);
		return -1;
	}
	c->doc = &doc;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	int rc = root != NULL ? apply_root(c, root) : 0;
	yaml_document_delete(&doc);
	c->doc = NULL;
	if (rc == 0 && root != NULL) {
		/* One document only: a second one is more likely a mistake
		 * than something to ignore. */
		if (!yaml_parser_load(&parser, &doc)) {
			syntax_error(c, &parser);
			rc = -1;
		} else {
			yaml_node_t *next = yaml_document_get_root_node(&doc);
			if (next != NULL) {
				c->cause = xasprintf("%s:%zu: only one YAML document is allowed",
				                     c->name, next->start_mark.line + 1);
				rc = -1;
			}
			yaml_document_delete(&doc);
		}
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* Hands the result of a load to the caller: *out on success, *cause on
 * failure (or frees it if cause is NULL). */
static int
config_finish(struct config *cfg, struct cfg_ctx *c, struct config **out, char **cause)
{
	if (c->cause != NULL) {
		config_free(cfg);
		*out = NULL;
		if (cause != NULL)
			*cause = c->cause;
		else
			free(c->cause);
		return -1;
	}
	*out = cfg;
	return 0;
}

/* Loads text (name stands for the file in messages and becomes cfg->path)
 * over the defaults.  Returns 0 with *out set (free with config_free), or
 * -1 with *out NULL and *cause set (caller frees). */
int
config_load_string(const char *text, const char *name, struct config **out, char **cause)
{
	struct config *cfg = config_defaults();
	struct cfg_ctx c = {
	    .name = name != NULL ? name : "<string>",
	    .text = text != NULL ? text : "",
	    .cfg = cfg,
	};
	c.len = strlen(c.text);
	if (name != NULL)
		cfg->path = xstrdup(name);
	config_parse(&c);
	return config_finish(cfg, &c, out, cause);
}

/* Returns the contents of path (NUL-terminated, *len bytes; caller frees),
 * or NULL with *cause set. */
static char *
read_file(const char *path, size_t *len, char **cause)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		*cause = xasprintf("%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	struct buf b;
	buf_init(&b);
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		buf_add(&b, chunk, n);
		if (b.len > CONFIG_MAX_BYTES) {
			*cause = xasprintf("%s: cannot read: larger than %d MiB", path,
			                   CONFIG_MAX_BYTES / (1024 * 1024));
			buf_free(&b);
			fclose(f);
			return NULL;
		}
	}
	if (ferror(f)) {
		*cause = xasprintf("%s: cannot read: %s", path, strerror(errno));
		buf_free(&b);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = b.len;
	return b.data != NULL ? b.data : xstrdup("");
}

/* Loads the file at path over the defaults.  Returns 0 with *out set (free
 * with config_free), or -1 with *out NULL and *cause =
 * "FILE:LINE: KEY: what is wrong" (caller frees). */
int
config_load(const char *path, struct config **out, char **cause)
{
	size_t len = 0;
	char *err = NULL;
	char *text = read_file(path, &len, &err);
	if (text == NULL) {
		*out = NULL;
		if (cause != NULL)
			*cause = err;
		else
			free(err);
		return -1;
	}
	struct config *cfg = config_defaults();
	cfg->path = xstrdup(path);
	struct cfg_ctx c = {.name = path, .text = text, .len = len, .cfg = cfg};
	const char *nul = memchr(text, '\0', len);
	if (nul != NULL)
		c.cause = xasprintf("%s:%zu: syntax error: the file contains a NUL byte", path,
		                    line_of_offset(text, len, (size_t)(nul - text)));
	else
		config_parse(&c);
	free(text);
	return config_finish(cfg, &c, out, cause);
}
