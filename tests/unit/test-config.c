/* test-config.c — the YAML configuration: defaults, a full file, the two
 * forms of `agents`, extension settings, the JSON dump and its redaction,
 * agent_cfg helpers, the shipped example, and every kind of error with its
 * exact "FILE:LINE: KEY: what is wrong" message. */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <yaml.h>

#include "util.h"
#include "log.h"
#include "config.h"

/* Loads yaml as "t.yaml"; fails the test with the cause if it is refused.
 * Returns the configuration (free with config_free). */
static struct config *
load_ok(const char *yaml)
{
	struct config *cfg = NULL;
	char *cause = NULL;
	if (config_load_string(yaml, "t.yaml", &cfg, &cause) != 0)
		fail_msg("unexpected error: %s\n--- input:\n%s", cause, yaml);
	assert_null(cause);
	assert_non_null(cfg);
	return cfg;
}

/* Asserts that yaml (as "t.yaml") is refused with exactly the message
 * expected. */
static void
expect_error(const char *yaml, const char *expected)
{
	struct config *cfg = (struct config *)&cfg; /* must be reset to NULL */
	char *cause = NULL;
	int rc = config_load_string(yaml, "t.yaml", &cfg, &cause);
	if (rc != -1 || cause == NULL || strcmp(cause, expected) != 0)
		fail_msg("--- input:\n%s--- expected: %s\n--- got (rc %d): %s", yaml, expected, rc,
		         cause ? cause : "(no error)");
	assert_null(cfg);
	free(cause);
}

struct error_case {
	const char *yaml;
	const char *cause;
};

static void
expect_errors(const struct error_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_error(cases[i].yaml, cases[i].cause);
}

/* True if the JSON dumps of two configurations are equal. */
static bool
same_config(const struct config *a, const struct config *b)
{
	json_t *ja = config_to_json(a), *jb = config_to_json(b);
	bool eq = json_equal(ja, jb);
	if (!eq) {
		char *sa = json_dumps(ja, JSON_SORT_KEYS | JSON_INDENT(1));
		char *sb = json_dumps(jb, JSON_SORT_KEYS | JSON_INDENT(1));
		print_error("first:\n%s\nsecond:\n%s\n", sa, sb);
		free(sa);
		free(sb);
	}
	json_decref(ja);
	json_decref(jb);
	return eq;
}

static void
test_defaults(void **state)
{
	(void)state;
	struct config *cfg = config_defaults();
	assert_null(cfg->path);

	assert_true(cfg->bridge.enabled);
	assert_string_equal(cfg->bridge.host, "127.0.0.1");
	assert_int_equal(cfg->bridge.port, 8000);
	assert_int_equal(cfg->bridge.max_connections, 100);
	assert_true(cfg->bridge.connection_timeout == 30);
	assert_int_equal(cfg->bridge.retry_attempts, 3);
	assert_true(cfg->bridge.retry_delay == 5);
	assert_int_equal(cfg->bridge.max_request, 1024 * 1024);
	assert_null(cfg->bridge.tls_cert);
	assert_null(cfg->bridge.tls_key);

	assert_string_equal(cfg->security.auth_type, "token");
	assert_true(cfg->security.token_expiry == 3600);
	assert_int_equal(cfg->security.rate_limit, 1000);
	assert_int_equal(cfg->security.n_allowed_origins, 0);
	assert_null(cfg->security.allowed_origins);

	assert_true(cfg->monitoring.metrics_enabled);
	assert_true(cfg->monitoring.health_check_interval == 30);
	assert_int_equal(cfg->monitoring.log_level, LVL_INFO);
	assert_false(cfg->monitoring.log_level_set);
	assert_true(cfg->monitoring.alert_threshold == 0.9);

	assert_int_equal(cfg->agents.max_line, 1024 * 1024);
	const struct agent_cfg *d = &cfg->agents.defaults;
	assert_null(d->name);
	assert_string_equal(d->type, "process");
	assert_null(d->command);
	assert_int_equal(d->nargs, 0);
	assert_int_equal(d->nenv, 0);
	assert_null(d->cwd);
	assert_int_equal(d->ncaps, 0);
	assert_int_equal(d->max_tasks, 1);
	assert_int_equal(d->restart, RESTART_ON_FAILURE);
	assert_true(d->backoff.initial == 0.5);
	assert_true(d->backoff.factor == 2);
	assert_true(d->backoff.cap == 30);
	assert_true(d->backoff.reset_after == 60);
	assert_true(d->heartbeat_timeout == 30);
	assert_true(d->hello_timeout == 10);
	assert_true(d->stop_grace == 5);
	assert_int_equal(d->intensity_max, 5);
	assert_true(d->intensity_period == 60);
	assert_true(d->autostart);
	assert_int_equal(cfg->agents.n, 0);
	assert_null(cfg->agents.list);

	assert_true(cfg->bus.ack_timeout == 30);
	assert_int_equal(cfg->bus.max_attempts, 5);
	assert_int_equal(cfg->bus.window, 64);
	assert_int_equal(cfg->bus.high_water, 10000);
	assert_int_equal(cfg->bus.max_body, 256 * 1024);
	assert_true(cfg->bus.retention == 7 * 86400);

	assert_int_equal(cfg->tasks.default_retries, 3);
	assert_true(cfg->tasks.default_timeout == 300);
	assert_true(cfg->tasks.backoff.initial == 1);
	assert_true(cfg->tasks.backoff.factor == 2);
	assert_true(cfg->tasks.backoff.cap == 60);
	assert_true(cfg->tasks.backoff.reset_after == 0);
	assert_true(cfg->tasks.retention == 30 * 86400);

	assert_null(cfg->logging.file);
	assert_int_equal(cfg->logging.max_size, 10 * 1024 * 1024);
	assert_int_equal(cfg->logging.keep, 5);
	assert_int_equal(cfg->logging.level, LVL_INFO);
	assert_int_equal(cfg->logging.ring, 10000);
	assert_true(cfg->logging.retention == 7 * 86400);

	assert_int_equal(cfg->store.durability, STORE_NORMAL);
	assert_int_equal(cfg->store.commit_interval_ms, 0);

	assert_null(cfg->extensions.dir);
	/* The core extensions load unless extensions.load says otherwise. */
	assert_int_equal(cfg->extensions.nload, 5);
	assert_string_equal(cfg->extensions.load[0], "dreamscribe");
	assert_string_equal(cfg->extensions.load[4], "stealthbrowser");
	assert_true(json_is_object(cfg->extensions.settings));
	assert_int_equal(json_object_size(cfg->extensions.settings), 0);

	assert_int_equal(cfg->nservices, 0);
	assert_int_equal(cfg->tui.max_lines, 5000);
	config_free(cfg);
	config_free(NULL);
}

/* Empty files, comments only, an empty document, null sections: all
 * defaults. */
static void
test_empty(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "",
	    "# nothing but a comment\n\n",
	    "---\n",
	    "~\n",
	    "bridge:\nsecurity: ~\nagents:\nservices:\nextensions: null\n",
	};
	struct config *def = config_defaults();
	for (size_t i = 0; i < nitems(texts); i++) {
		struct config *cfg = load_ok(texts[i]);
		assert_string_equal(cfg->path, "t.yaml");
		assert_true(same_config(cfg, def));
		config_free(cfg);
	}
	config_free(def);
}

/* The configuration from the seed documents loads as written. */
static void
test_seed(void **state)
{
	(void)state;
	struct config *cfg = load_ok("bridge:\n"
	                             "  host: localhost\n"
	                             "  port: 8000\n"
	                             "  max_connections: 100\n"
	                             "  connection_timeout: 30\n"
	                             "  retry_attempts: 3\n"
	                             "  retry_delay: 5\n"
	                             "security:\n"
	                             "  auth_type: token\n"
	                             "  token_expiry: 3600\n"
	                             "  rate_limit: 1000\n"
	                             "  allowed_origins:\n"
	                             "    - https://api.example.com\n"
	                             "    - https://service.example.com\n"
	                             "monitoring:\n"
	                             "  metrics_enabled: true\n"
	                             "  health_check_interval: 30\n"
	                             "  log_level: INFO\n"
	                             "  alert_threshold: 0.9\n");
	assert_string_equal(cfg->bridge.host, "localhost");
	assert_int_equal(cfg->security.n_allowed_origins, 2);
	assert_string_equal(cfg->security.allowed_origins[0], "https://api.example.com");
	assert_string_equal(cfg->security.allowed_origins[1], "https://service.example.com");
	assert_int_equal(cfg->monitoring.log_level, LVL_INFO);
	assert_true(cfg->monitoring.log_level_set);
	config_free(cfg);
}

/* Every key set to something other than its default. */
/* auth_type none is only for a Bridge on a loopback address. */
static void
test_open_bridge(void **state)
{
	(void)state;
	const char *ok[] = {"127.0.0.1", "127.1.2.3", "::1", "localhost"};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		char *y = xasprintf("bridge: {host: \"%s\"}\nsecurity: {auth_type: none}\n", ok[i]);
		config_free(load_ok(y));
		free(y);
	}
	config_free(
	    load_ok("bridge: {host: 0.0.0.0, enabled: false}\nsecurity: {auth_type: none}\n"));
	config_free(load_ok("bridge: {host: 0.0.0.0}\n"));
	expect_error(
	    "bridge:\n  host: 10.0.0.1\nsecurity:\n  auth_type: none\n",
	    "t.yaml:4: security.auth_type: none lets anyone who reaches the Bridge act as "
	    "the captain; it needs a loopback bridge.host (127.0.0.1, ::1, localhost), not "
	    "\"10.0.0.1\"");
	expect_error(
	    "security: {auth_type: none}\nbridge: {host: \"::\"}\n",
	    "t.yaml:1: security.auth_type: none lets anyone who reaches the Bridge act as "
	    "the captain; it needs a loopback bridge.host (127.0.0.1, ::1, localhost), not "
	    "\"::\"");
}

/* monitoring.log_level overrides logging.level: both given, they must agree. */
static void
test_two_levels(void **state)
{
	(void)state;
	struct config *cfg = load_ok("monitoring: {log_level: warn}\nlogging: {level: warn}\n");
	assert_int_equal(cfg->logging.level, LVL_WARN);
	config_free(cfg);
	cfg = load_ok("monitoring: {log_level: debug}\nlogging: {file: x.log}\n");
	assert_int_equal(cfg->logging.level, LVL_DEBUG);
	config_free(cfg);
	cfg = load_ok("logging: {level: error}\n");
	assert_int_equal(cfg->monitoring.log_level, LVL_ERROR);
	config_free(cfg);
	expect_error(
	    "monitoring:\n  log_level: info\nlogging:\n  level: debug\n",
	    "t.yaml:2: monitoring.log_level: info, but logging.level is debug: give one of "
	    "them (this one would win)");
}

/* Timers count milliseconds: a duration other than 0 is at least 1ms. */
static void
test_short_duration(void **state)
{
	(void)state;
	expect_error(
	    "agents: {hello_timeout: 0.0001}\n",
	    "t.yaml:1: agents.hello_timeout: 0.0001 is less than 1ms (give 0 or at least 1ms)");
	expect_error("bus:\n  ack_timeout: 0.5ms\n",
	             "t.yaml:2: bus.ack_timeout: 0.5ms is less than 1ms (give 0 or at least 1ms)");
	struct config *cfg = load_ok("bus: {ack_timeout: 1ms}\n");
	assert_true(cfg->bus.ack_timeout == 0.001);
	config_free(cfg);
}

static void
test_full(void **state)
{
	(void)state;
	struct config *cfg =
	    load_ok("bridge:\n"
	            "  enabled: false\n"
	            "  host: 0.0.0.0\n"
	            "  port: 0\n"
	            "  max_connections: 5000\n"
	            "  connection_timeout: 1m\n"
	            "  retry_attempts: 0\n"
	            "  retry_delay: 250ms\n"
	            "  max_request: 64k\n"
	            "  tls:\n"
	            "    cert: /etc/dreamos/cert.pem\n"
	            "    key: /etc/dreamos/key.pem\n"
	            "security:\n"
	            "  auth_type: none\n"
	            "  token_expiry: 2h\n"
	            "  rate_limit: 60\n"
	            "  allowed_origins: [\"*\"]\n"
	            "monitoring:\n"
	            "  metrics_enabled: no\n"
	            "  health_check_interval: 10s\n"
	            "  log_level: warning\n"
	            "  alert_threshold: 0.5\n"
	            "agents:\n"
	            "  max_line: 4MiB\n"
	            "  hello_timeout: 3s\n"
	            "  heartbeat_timeout: 0\n"
	            "  stop_grace: 1.5\n"
	            "  restart: always\n"
	            "  max_tasks: 4\n"
	            "  backoff: {initial: 1s, factor: 3, cap: 2m, reset_after: 10m}\n"
	            "  intensity: {max: 2, period: 30s}\n"
	            "  list:\n"
	            "    - name: scout\n"
	            "      command: ./scout\n"
	            "bus:\n"
	            "  ack_timeout: 5s\n"
	            "  max_attempts: 9\n"
	            "  window: 8\n"
	            "  max_body: 1MB\n"
	            "  retention: 0\n"
	            "tasks:\n"
	            "  default_retries: 0\n"
	            "  default_timeout: 1h\n"
	            "  backoff:\n"
	            "    initial: 2s\n"
	            "    factor: 1\n"
	            "    cap: 5m\n"
	            "    reset_after: 1d\n"
	            "  retention: 90d\n"
	            "logging:\n"
	            "  file: /var/log/dreamos.log\n"
	            "  max_size: 1G\n"
	            "  keep: 0\n"
	            "  level: WARN\n"
	            "  ring: 100\n"
	            "  retention: 1d\n"
	            "store:\n"
	            "  durability: strict\n"
	            "  commit_interval_ms: 20\n"
	            "extensions:\n"
	            "  dir: /opt/dreamos/ext\n"
	            "  load: [dreamscribe, chatgpt]\n"
	            "services:\n"
	            "  - name: openai\n"
	            "    base_url: https://api.openai.com/v1\n"
	            "    health_path: /models\n"
	            "    interval: 2m\n"
	            "    rate_limit: 2.5\n"
	            "  - name: local\n"
	            "    base_url: http://127.0.0.1:11434\n"
	            "tui:\n"
	            "  max_lines: 100000\n");
	assert_false(cfg->bridge.enabled);
	assert_string_equal(cfg->bridge.host, "0.0.0.0");
	assert_int_equal(cfg->bridge.port, 0);
	assert_int_equal(cfg->bridge.max_connections, 5000);
	assert_true(cfg->bridge.connection_timeout == 60);
	assert_int_equal(cfg->bridge.retry_attempts, 0);
	assert_true(cfg->bridge.retry_delay == 0.25);
	assert_int_equal(cfg->bridge.max_request, 64 * 1024);
	assert_string_equal(cfg->bridge.tls_cert, "/etc/dreamos/cert.pem");
	assert_string_equal(cfg->bridge.tls_key, "/etc/dreamos/key.pem");

	assert_string_equal(cfg->security.auth_type, "none");
	assert_true(cfg->security.token_expiry == 7200);
	assert_int_equal(cfg->security.rate_limit, 60);
	assert_int_equal(cfg->security.n_allowed_origins, 1);
	assert_string_equal(cfg->security.allowed_origins[0], "*");

	assert_false(cfg->monitoring.metrics_enabled);
	assert_true(cfg->monitoring.health_check_interval == 10);
	assert_int_equal(cfg->monitoring.log_level, LVL_WARN);
	assert_true(cfg->monitoring.log_level_set);
	assert_true(cfg->monitoring.alert_threshold == 0.5);

	assert_int_equal(cfg->agents.max_line, 4 * 1024 * 1024);
	const struct agent_cfg *d = &cfg->agents.defaults;
	assert_true(d->hello_timeout == 3);
	assert_true(d->heartbeat_timeout == 0);
	assert_true(d->stop_grace == 1.5);
	assert_int_equal(d->restart, RESTART_ALWAYS);
	assert_int_equal(d->max_tasks, 4);
	assert_true(d->backoff.initial == 1);
	assert_true(d->backoff.factor == 3);
	assert_true(d->backoff.cap == 120);
	assert_true(d->backoff.reset_after == 600);
	assert_int_equal(d->intensity_max, 2);
	assert_true(d->intensity_period == 30);
	assert_int_equal(cfg->agents.n, 1);
	/* The agent inherits all of those. */
	const struct agent_cfg *a = &cfg->agents.list[0];
	assert_string_equal(a->name, "scout");
	assert_string_equal(a->command, "./scout");
	assert_true(a->hello_timeout == 3);
	assert_int_equal(a->restart, RESTART_ALWAYS);
	assert_int_equal(a->max_tasks, 4);
	assert_true(a->backoff.cap == 120);
	assert_int_equal(a->intensity_max, 2);

	assert_true(cfg->bus.ack_timeout == 5);
	assert_int_equal(cfg->bus.max_attempts, 9);
	assert_int_equal(cfg->bus.window, 8);
	assert_int_equal(cfg->bus.max_body, 1024 * 1024);
	assert_true(cfg->bus.retention == 0);

	assert_int_equal(cfg->tasks.default_retries, 0);
	assert_true(cfg->tasks.default_timeout == 3600);
	assert_true(cfg->tasks.backoff.initial == 2);
	assert_true(cfg->tasks.backoff.factor == 1);
	assert_true(cfg->tasks.backoff.cap == 300);
	assert_true(cfg->tasks.backoff.reset_after == 86400);
	assert_true(cfg->tasks.retention == 90 * 86400);

	assert_string_equal(cfg->logging.file, "/var/log/dreamos.log");
	assert_int_equal(cfg->logging.max_size, 1024ULL * 1024 * 1024);
	assert_int_equal(cfg->logging.keep, 0);
	assert_int_equal(cfg->logging.level, LVL_WARN);
	assert_int_equal(cfg->logging.ring, 100);
	assert_true(cfg->logging.retention == 86400);

	assert_int_equal(cfg->store.durability, STORE_STRICT);
	assert_int_equal(cfg->store.commit_interval_ms, 20);

	assert_string_equal(cfg->extensions.dir, "/opt/dreamos/ext");
	assert_int_equal(cfg->extensions.nload, 2);
	assert_string_equal(cfg->extensions.load[0], "dreamscribe");
	assert_string_equal(cfg->extensions.load[1], "chatgpt");

	assert_int_equal(cfg->nservices, 2);
	assert_string_equal(cfg->services[0].name, "openai");
	assert_string_equal(cfg->services[0].base_url, "https://api.openai.com/v1");
	assert_string_equal(cfg->services[0].health_path, "/models");
	assert_true(cfg->services[0].interval == 120);
	assert_true(cfg->services[0].rate_limit == 2.5);
	assert_string_equal(cfg->services[1].name, "local");
	assert_null(cfg->services[1].health_path);
	assert_true(cfg->services[1].interval == 30);
	assert_true(cfg->services[1].rate_limit == 0);

	assert_int_equal(cfg->tui.max_lines, 100000);
	config_free(cfg);
}

/* `agents:` as a plain list: built-in defaults, per-agent values. */
static void
test_agents_sequence(void **state)
{
	(void)state;
	struct config *cfg = load_ok("agents:\n"
	                             "  - name: scout\n"
	                             "    command: /usr/bin/python3\n"
	                             "    args: [-u, scout.py, --fast]\n"
	                             "    env:\n"
	                             "      PYTHONPATH: /opt/lib\n"
	                             "      LEVEL: 3\n"
	                             "      EMPTY:\n"
	                             "    cwd: /srv/scout\n"
	                             "    capabilities: [search, summarize]\n"
	                             "    max_tasks: 8\n"
	                             "    restart: never\n"
	                             "    backoff: {cap: 10s}\n"
	                             "    heartbeat_timeout: 1m\n"
	                             "    hello_timeout: 2s\n"
	                             "    stop_grace: 0\n"
	                             "    intensity: {max: 1}\n"
	                             "    autostart: false\n"
	                             "  - name: gpt\n"
	                             "    type: chatgpt\n");
	assert_int_equal(cfg->agents.n, 2);
	const struct agent_cfg *a = &cfg->agents.list[0];
	assert_string_equal(a->name, "scout");
	assert_string_equal(a->type, "process");
	assert_string_equal(a->command, "/usr/bin/python3");
	assert_int_equal(a->nargs, 3);
	assert_string_equal(a->args[0], "-u");
	assert_string_equal(a->args[2], "--fast");
	assert_int_equal(a->nenv, 3);
	assert_string_equal(a->env[0], "PYTHONPATH=/opt/lib");
	assert_string_equal(a->env[1], "LEVEL=3");
	assert_string_equal(a->env[2], "EMPTY=");
	assert_string_equal(a->cwd, "/srv/scout");
	assert_int_equal(a->ncaps, 2);
	assert_string_equal(a->caps[1], "summarize");
	assert_int_equal(a->max_tasks, 8);
	assert_int_equal(a->restart, RESTART_NEVER);
	assert_true(a->backoff.cap == 10);
	assert_true(a->backoff.initial == 0.5); /* the rest stays default */
	assert_true(a->backoff.factor == 2);
	assert_true(a->heartbeat_timeout == 60);
	assert_true(a->hello_timeout == 2);
	assert_true(a->stop_grace == 0);
	assert_int_equal(a->intensity_max, 1);
	assert_true(a->intensity_period == 60);
	assert_false(a->autostart);

	const struct agent_cfg *b = &cfg->agents.list[1];
	assert_string_equal(b->name, "gpt");
	assert_string_equal(b->type, "chatgpt");
	assert_null(b->command); /* not needed by other types */
	assert_int_equal(b->max_tasks, 1);
	assert_int_equal(b->restart, RESTART_ON_FAILURE);
	assert_true(b->autostart);
	config_free(cfg);
}

/* `agents:` as a mapping: the defaults apply to the list wherever the list
 * is written, and each agent may override them. */
static void
test_agents_mapping(void **state)
{
	(void)state;
	struct config *cfg = load_ok("agents:\n"
	                             "  list:\n"
	                             "    - name: a\n"
	                             "      command: ./a\n"
	                             "    - name: b\n"
	                             "      command: ./b\n"
	                             "      restart: on-failure\n"
	                             "      backoff:\n"
	                             "        factor: 1.5\n"
	                             "  restart: always\n"
	                             "  max_tasks: 3\n"
	                             "  backoff:\n"
	                             "    initial: 2s\n"
	                             "  intensity:\n"
	                             "    period: 5m\n");
	assert_int_equal(cfg->agents.n, 2);
	const struct agent_cfg *a = &cfg->agents.list[0], *b = &cfg->agents.list[1];
	assert_int_equal(a->restart, RESTART_ALWAYS);
	assert_int_equal(a->max_tasks, 3);
	assert_true(a->backoff.initial == 2);
	assert_true(a->backoff.factor == 2);
	assert_true(a->intensity_period == 300);
	assert_int_equal(b->restart, RESTART_ON_FAILURE);
	assert_int_equal(b->max_tasks, 3);
	assert_true(b->backoff.initial == 2);
	assert_true(b->backoff.factor == 1.5);
	config_free(cfg);
}

static void
test_units(void **state)
{
	(void)state;
	struct config *cfg = load_ok("bridge:\n"
	                             "  connection_timeout: 250ms\n"
	                             "  retry_delay: \"1.5\"\n"
	                             "  max_request: 2048\n"
	                             "bus:\n"
	                             "  ack_timeout: 5m\n"
	                             "  retention: 7d\n"
	                             "  max_body: 10MB\n"
	                             "tasks:\n"
	                             "  default_timeout: 2h\n"
	                             "logging:\n"
	                             "  max_size: 1MiB\n"
	                             "  level: Error\n"
	                             "agents:\n"
	                             "  max_line: 64k\n");
	assert_true(fabs(cfg->bridge.connection_timeout - 0.25) < 1e-9);
	assert_true(cfg->bridge.retry_delay == 1.5);
	assert_int_equal(cfg->bridge.max_request, 2048);
	assert_true(cfg->bus.ack_timeout == 300);
	assert_true(cfg->bus.retention == 7 * 86400);
	assert_int_equal(cfg->bus.max_body, 10 * 1024 * 1024);
	assert_true(cfg->tasks.default_timeout == 7200);
	assert_int_equal(cfg->logging.max_size, 1024 * 1024);
	assert_int_equal(cfg->logging.level, LVL_ERROR);
	assert_int_equal(cfg->agents.max_line, 64 * 1024);
	config_free(cfg);
}

/* An empty extensions.load means none: not the core ones. */
static void
test_extensions_load_none(void **state)
{
	(void)state;
	struct config *cfg = load_ok("extensions:\n  load: []\n");
	assert_int_equal(cfg->extensions.nload, 0);
	config_free(cfg);
}

static const char ext_yaml[] = "extensions:\n"
                               "  load: [chatgpt, discord]\n"
                               "  chatgpt:\n"
                               "    base_url: http://localhost:11434/v1\n"
                               "    api_key: sk-0123456789\n"
                               "    max_tokens: 4096\n"
                               "    temperature: 0.7\n"
                               "    stream: true\n"
                               "    model: \"1234\"\n"
                               "    quoted_bool: 'false'\n"
                               "    nothing: ~\n"
                               "    tags: [a, 1, -2.5e3, false]\n"
                               "  discord:\n"
                               "    webhook_url: https://discord.com/api/webhooks/1/abc\n"
                               "    nested:\n"
                               "      Auth_Token: abc\n"
                               "      items:\n"
                               "        - secret: s3\n"
                               "          name: visible\n"
                               "  empty:\n";

/* Extension settings are kept as JSON, scalars converted by their look. */
static void
test_extensions(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ext_yaml);
	json_t *s = cfg->extensions.settings;
	assert_int_equal(json_object_size(s), 3);
	json_t *g = json_object_get(s, "chatgpt");
	assert_true(json_is_object(g));
	assert_string_equal(json_string_value(json_object_get(g, "api_key")), "sk-0123456789");
	assert_true(json_is_integer(json_object_get(g, "max_tokens")));
	assert_int_equal(json_integer_value(json_object_get(g, "max_tokens")), 4096);
	assert_true(json_is_real(json_object_get(g, "temperature")));
	assert_true(json_real_value(json_object_get(g, "temperature")) == 0.7);
	assert_true(json_is_true(json_object_get(g, "stream")));
	assert_string_equal(json_string_value(json_object_get(g, "model")), "1234");
	assert_string_equal(json_string_value(json_object_get(g, "quoted_bool")), "false");
	assert_true(json_is_null(json_object_get(g, "nothing")));
	json_t *tags = json_object_get(g, "tags");
	assert_int_equal(json_array_size(tags), 4);
	assert_string_equal(json_string_value(json_array_get(tags, 0)), "a");
	assert_int_equal(json_integer_value(json_array_get(tags, 1)), 1);
	assert_true(json_real_value(json_array_get(tags, 2)) == -2500);
	assert_true(json_is_false(json_array_get(tags, 3)));
	assert_true(json_is_null(json_object_get(s, "empty")));
	config_free(cfg);
}

/* The dump hides secret-looking settings, is shaped like the file, and
 * loads back to the same configuration. */
static void
test_to_json(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ext_yaml);
	json_t *j = config_to_json(cfg);
	json_t *ext = json_object_get(j, "extensions");
	json_t *g = json_object_get(ext, "chatgpt"), *d = json_object_get(ext, "discord");
	assert_string_equal(json_string_value(json_object_get(g, "api_key")), "[redacted]");
	assert_int_equal(json_integer_value(json_object_get(g, "max_tokens")), 4096);
	assert_string_equal(json_string_value(json_object_get(g, "base_url")),
	                    "http://localhost:11434/v1");
	assert_string_equal(json_string_value(json_object_get(d, "webhook_url")), "[redacted]");
	json_t *nested = json_object_get(d, "nested");
	assert_string_equal(json_string_value(json_object_get(nested, "Auth_Token")), "[redacted]");
	json_t *item = json_array_get(json_object_get(nested, "items"), 0);
	assert_string_equal(json_string_value(json_object_get(item, "secret")), "[redacted]");
	assert_string_equal(json_string_value(json_object_get(item, "name")), "visible");
	/* Nothing secret anywhere in the text. */
	char *text = json_dumps(j, JSON_SORT_KEYS);
	assert_null(strstr(text, "sk-0123456789"));
	assert_null(strstr(text, "webhooks/1/abc"));
	assert_null(strstr(text, "s3"));
	/* The real values are untouched. */
	assert_string_equal(json_string_value(json_object_get(
	                        json_object_get(cfg->extensions.settings, "chatgpt"), "api_key")),
	                    "sk-0123456789");
	/* Shape and units. */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "bridge"), "port")),
	                 8000);
	assert_true(json_real_value(json_object_get(json_object_get(j, "bus"), "retention")) ==
	            7 * 86400);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "store"), "durability")),
	    "normal");
	json_t *agents = json_object_get(j, "agents");
	assert_string_equal(json_string_value(json_object_get(agents, "restart")), "on-failure");
	assert_true(json_is_array(json_object_get(agents, "list")));
	assert_null(json_object_get(agents, "name")); /* not a default */
	free(text);
	json_decref(j);
	config_free(cfg);

	/* Round trip of a rich configuration through its own dump. */
	cfg = load_ok("bridge: {port: 9000, tls: {cert: /c, key: /k}}\n"
	              "security: {allowed_origins: [https://a.example]}\n"
	              "monitoring: {log_level: debug}\n"
	              "agents:\n"
	              "  - name: a\n"
	              "    command: ./a\n"
	              "    args: [x, y]\n"
	              "    env: {K: V, EMPTY: ''}\n"
	              "    capabilities: [c]\n"
	              "    restart: never\n"
	              "services: [{name: s, base_url: 'https://s', health_path: /h}]\n"
	              "extensions: {load: [x], x: {a: [1, {b: c}], api_key: k}}\n");
	j = config_to_json(cfg);
	text = json_dumps(j, 0);
	struct config *again = load_ok(text);
	assert_true(same_config(cfg, again));
	assert_string_equal(again->agents.list[0].env[0], "K=V");
	assert_string_equal(again->agents.list[0].env[1], "EMPTY=");
	free(text);
	json_decref(j);
	config_free(again);
	config_free(cfg);
}

static void
test_agent_cfg(void **state)
{
	(void)state;
	struct agent_cfg a, b, c;
	agent_cfg_init(&a, NULL);
	assert_null(a.name);
	assert_string_equal(a.type, "process");
	assert_int_equal(a.max_tasks, 1);
	assert_int_equal(a.restart, RESTART_ON_FAILURE);
	assert_true(a.autostart);
	agent_cfg_clear(&a);
	assert_null(a.type);

	struct config *cfg = load_ok("agents:\n"
	                             "  restart: never\n"
	                             "  list:\n"
	                             "    - name: x\n"
	                             "      command: ./x\n"
	                             "      args: [1, 2]\n"
	                             "      env: {A: b}\n"
	                             "      capabilities: [cap]\n"
	                             "      cwd: /tmp\n");
	agent_cfg_init(&b, cfg);
	assert_null(b.name);
	assert_int_equal(b.restart, RESTART_NEVER);
	assert_string_equal(b.type, "process");
	assert_ptr_not_equal(b.type, cfg->agents.defaults.type);
	agent_cfg_clear(&b);

	agent_cfg_copy(&c, &cfg->agents.list[0]);
	assert_string_equal(c.name, "x");
	assert_ptr_not_equal(c.name, cfg->agents.list[0].name);
	assert_int_equal(c.nargs, 2);
	assert_ptr_not_equal(c.args, cfg->agents.list[0].args);
	assert_string_equal(c.args[1], "2");
	assert_string_equal(c.env[0], "A=b");
	assert_string_equal(c.caps[0], "cap");
	assert_string_equal(c.cwd, "/tmp");
	assert_int_equal(c.restart, RESTART_NEVER);
	config_free(cfg); /* the copy must survive its source */
	assert_string_equal(c.args[0], "1");
	agent_cfg_clear(&c);
	assert_null(c.args);
	assert_int_equal(c.nargs, 0);
}

static void
test_restart_policy(void **state)
{
	(void)state;
	enum restart_policy p = RESTART_NEVER;
	assert_string_equal(restart_policy_name(RESTART_ALWAYS), "always");
	assert_string_equal(restart_policy_name(RESTART_ON_FAILURE), "on-failure");
	assert_string_equal(restart_policy_name(RESTART_NEVER), "never");
	assert_true(restart_policy_parse("always", &p));
	assert_int_equal(p, RESTART_ALWAYS);
	assert_true(restart_policy_parse("On-Failure", &p));
	assert_int_equal(p, RESTART_ON_FAILURE);
	assert_true(restart_policy_parse("never", &p));
	assert_int_equal(p, RESTART_NEVER);
	assert_false(restart_policy_parse("sometimes", &p));
	assert_false(restart_policy_parse("", &p));
	assert_false(restart_policy_parse(NULL, &p));
	assert_int_equal(p, RESTART_NEVER);
}

static void
test_error_unknown_key(void **state)
{
	(void)state;
	static const struct error_case cases[] = {
	    {"colour: red\n", "t.yaml:1: colour: unknown key"},
	    {"# comment\nbridge:\n  prot: 8000\n", "t.yaml:3: bridge.prot: unknown key"},
	    {"bridge:\n  tls:\n    ca: x\n", "t.yaml:3: bridge.tls.ca: unknown key"},
	    {"tasks:\n  backoff:\n    jitter: 1\n", "t.yaml:3: tasks.backoff.jitter: unknown key"},
	    /* A key holding line breaks (found by fuzz-config): one line. */
	    {"\"a\\nb\": 1\n", "t.yaml:1: a?b: unknown key"},
	    {"agents:\n  - name: a\n    command: x\n    colour: red\n",
	     "t.yaml:4: agents[0].colour: unknown key"},
	    /* name, command, ... are per-agent only, not defaults */
	    {"agents:\n  name: a\n", "t.yaml:2: agents.name: unknown key"},
	    {"agents:\n  list:\n    - name: a\n      command: x\n      intensity: {min: 1}\n",
	     "t.yaml:5: agents.list[0].intensity.min: unknown key"},
	    {"services:\n  - name: s\n    url: http://x\n",
	     "t.yaml:3: services[0].url: unknown key"},
	    {"extensions:\n  dir: /x\n  load: [a]\n  a: {x: 1}\n\nstore:\n  commit: 1\n",
	     "t.yaml:7: store.commit: unknown key"},
	};
	expect_errors(cases, nitems(cases));
}

static void
test_error_types(void **state)
{
	(void)state;
	static const struct error_case cases[] = {
	    {"bridge:\n  enabled: maybe\n",
	     "t.yaml:2: bridge.enabled: expected true or false, got \"maybe\""},
	    {"bridge:\n  port: abc\n", "t.yaml:2: bridge.port: expected an integer, got \"abc\""},
	    {"bridge:\n  port: 80.5\n", "t.yaml:2: bridge.port: expected an integer, got \"80.5\""},
	    {"bridge:\n  port: [80]\n", "t.yaml:2: bridge.port: expected an integer, got a list"},
	    {"bridge:\n  port:\n  host: x\n",
	     "t.yaml:2: bridge.port: expected an integer, got nothing"},
	    {"monitoring:\n  alert_threshold: high\n",
	     "t.yaml:2: monitoring.alert_threshold: expected a number, got \"high\""},
	    {"monitoring:\n  alert_threshold: nan\n",
	     "t.yaml:2: monitoring.alert_threshold: expected a number, got \"nan\""},
	    {"bus:\n  ack_timeout: soon\n",
	     "t.yaml:2: bus.ack_timeout: expected a duration (seconds, or a number with ms, s, m, "
	     "h or d), got \"soon\""},
	    {"bridge:\n  retry_delay: -5\n",
	     "t.yaml:2: bridge.retry_delay: expected a duration (seconds, or a number with ms, s, "
	     "m, h or d), got \"-5\""},
	    {"bridge:\n  retry_delay: 5 minutes\n",
	     "t.yaml:2: bridge.retry_delay: expected a duration (seconds, or a number with ms, s, "
	     "m, h or d), got \"5 minutes\""},
	    {"logging:\n  max_size: big\n", "t.yaml:2: logging.max_size: expected a size (bytes, "
	                                    "or a number with k, M or G, as in "
	                                    "64k, 10MB, 1MiB), got \"big\""},
	    {"bus:\n  max_body: 10XB\n",
	     "t.yaml:2: bus.max_body: expected a size (bytes, or a number with k, M or G, as in "
	     "64k, 10MB, 1MiB), got \"10XB\""},
	    {"bridge:\n  host: {a: 1}\n",
	     "t.yaml:2: bridge.host: expected a string, got a mapping"},
	    {"bridge:\n  host: \"\"\n", "t.yaml:2: bridge.host: must not be empty"},
	    {"security:\n  allowed_origins: https://x\n",
	     "t.yaml:2: security.allowed_origins: expected a list of strings, got \"https://x\""},
	    {"security:\n  allowed_origins:\n    - https://a\n    - {b: 1}\n",
	     "t.yaml:4: security.allowed_origins[1]: expected a string, got a mapping"},
	    {"security:\n  auth_type: basic\n",
	     "t.yaml:2: security.auth_type: expected token or none, got \"basic\""},
	    {"store:\n  durability: fast\n",
	     "t.yaml:2: store.durability: expected normal or strict, got \"fast\""},
	    {"logging:\n  level: loud\n",
	     "t.yaml:2: logging.level: expected trace, debug, info, warn, error or fatal, got "
	     "\"loud\""},
	    {"monitoring:\n  log_level: 3\n", "t.yaml:2: monitoring.log_level: expected trace, "
	                                      "debug, info, warn, error or fatal, got "
	                                      "\"3\""},
	    {"agents:\n  - name: a\n    command: x\n    restart: sometimes\n",
	     "t.yaml:4: agents[0].restart: expected always, on-failure or never, got "
	     "\"sometimes\""},
	    {"bridge: 5\n", "t.yaml:1: bridge: expected a mapping, got \"5\""},
	    {"bridge:\n  tls: [a, b]\n", "t.yaml:2: bridge.tls: expected a mapping, got a list"},
	    {"agents: 5\n", "t.yaml:1: agents: expected a list of agents or a mapping, got \"5\""},
	    {"agents:\n  list: {a: 1}\n", "t.yaml:2: agents.list: expected a list, got a mapping"},
	    {"agents:\n  - just-a-string\n",
	     "t.yaml:2: agents[0]: expected a mapping, got \"just-a-string\""},
	    {"agents:\n  - name: a\n    command: x\n    env: [A=1]\n",
	     "t.yaml:4: agents[0].env: expected a mapping of NAME: VALUE, got a list"},
	    {"agents:\n  - name: a\n    command: x\n    env:\n      A: [1]\n",
	     "t.yaml:5: agents[0].env.A: expected a string, got a list"},
	    {"agents:\n  - name: a\n    command: x\n    env:\n      A=B: 1\n",
	     "t.yaml:5: agents[0].env.A=B: a variable name must not contain '='"},
	    {"agents:\n  - name: a\n    command: x\n    args: -v\n",
	     "t.yaml:4: agents[0].args: expected a list of strings, got \"-v\""},
	    {"services: {a: 1}\n", "t.yaml:1: services: expected a list, got a mapping"},
	    {"extensions:\n  load: [ok, \"not ok\"]\n",
	     "t.yaml:2: extensions.load[1]: \"not ok\" is not a valid name (1 to 64 letters, "
	     "digits, '_', '.' or '-')"},
	    {"- bridge\n", "t.yaml:1: expected a mapping of sections at the top level, got a list"},
	    {"hello\n", "t.yaml:1: expected a mapping of sections at the top level, got \"hello\""},
	    {"[a]: 1\n", "t.yaml:1: (top level): a key must be a string, got a list"},
	    {"bridge:\n  host: \"a\\0b\"\n", "t.yaml:2: bridge.host: must not contain a NUL byte"},
	};
	expect_errors(cases, nitems(cases));
}

static void
test_error_range(void **state)
{
	(void)state;
	static const struct error_case cases[] = {
	    {"bridge:\n  port: 70000\n", "t.yaml:2: bridge.port: 70000 is out of range (0-65535)"},
	    {"bridge:\n  port: -1\n", "t.yaml:2: bridge.port: -1 is out of range (0-65535)"},
	    {"bridge:\n  port: 99999999999999999999\n",
	     "t.yaml:2: bridge.port: 99999999999999999999 is out of range (0-65535)"},
	    {"bridge:\n  max_connections: 0\n",
	     "t.yaml:2: bridge.max_connections: 0 is out of range (1-100000)"},
	    {"bridge:\n  retry_attempts: 101\n",
	     "t.yaml:2: bridge.retry_attempts: 101 is out of range (0-100)"},
	    {"bridge:\n  max_request: 2GiB\n",
	     "t.yaml:2: bridge.max_request: 2GiB is out of range (1KiB-1GiB)"},
	    {"security:\n  rate_limit: 0\n",
	     "t.yaml:2: security.rate_limit: 0 is out of range (1-1000000000)"},
	    {"security:\n  token_expiry: 0s\n",
	     "t.yaml:2: security.token_expiry: 0s is out of range (more than 0, at most 3650d)"},
	    {"monitoring:\n  alert_threshold: 1.5\n",
	     "t.yaml:2: monitoring.alert_threshold: 1.5 is out of range (0-1)"},
	    {"agents:\n  max_line: 128MiB\n",
	     "t.yaml:2: agents.max_line: 128MiB is out of range (1KiB-64MiB)"},
	    {"agents:\n  max_line: 100\n",
	     "t.yaml:2: agents.max_line: 100 is out of range (1KiB-64MiB)"},
	    {"agents:\n  backoff:\n    factor: 0.5\n",
	     "t.yaml:3: agents.backoff.factor: 0.5 is out of range (1-1000)"},
	    {"agents:\n  - name: a\n    command: x\n    intensity:\n      period: 0\n",
	     "t.yaml:5: agents[0].intensity.period: 0 is out of range (more than 0, at most "
	     "3650d)"},
	    {"bus:\n  max_attempts: 0\n", "t.yaml:2: bus.max_attempts: 0 is out of range (1-1000)"},
	    {"bus:\n  window: 100001\n", "t.yaml:2: bus.window: 100001 is out of range (1-100000)"},
	    {"bus:\n  high_water: 0\n", "t.yaml:2: bus.high_water: 0 is out of range (1-100000)"},
	    {"bus:\n  ack_timeout: 0\n",
	     "t.yaml:2: bus.ack_timeout: 0 is out of range (more than 0, at most 3650d)"},
	    {"tasks:\n  default_retries: 1001\n",
	     "t.yaml:2: tasks.default_retries: 1001 is out of range (0-1000)"},
	    {"tasks:\n  retention: 5000d\n",
	     "t.yaml:2: tasks.retention: 5000d is out of range (0-3650d)"},
	    {"logging:\n  max_size: 1k\n",
	     "t.yaml:2: logging.max_size: 1k is out of range (at least 4KiB)"},
	    {"logging:\n  keep: 101\n", "t.yaml:2: logging.keep: 101 is out of range (0-100)"},
	    {"logging:\n  ring: 99\n", "t.yaml:2: logging.ring: 99 is out of range (100-10000000)"},
	    {"store:\n  commit_interval_ms: 1001\n",
	     "t.yaml:2: store.commit_interval_ms: 1001 is out of range (0-1000)"},
	    {"services:\n  - name: s\n    base_url: http://s\n    rate_limit: -1\n",
	     "t.yaml:4: services[0].rate_limit: -1 is out of range (0-1000000)"},
	    {"tui:\n  max_lines: 2000000\n",
	     "t.yaml:2: tui.max_lines: 2000000 is out of range (100-1000000)"},
	};
	expect_errors(cases, nitems(cases));
}

static void
test_error_agents(void **state)
{
	(void)state;
	static const struct error_case cases[] = {
	    {"agents:\n"
	     "  - name: a\n"
	     "    command: x\n"
	     "  - name: a\n"
	     "    command: y\n",
	     "t.yaml:4: agents[1].name: duplicate agent name \"a\" (first at line 2)"},
	    {"agents:\n  - command: x\n",
	     "t.yaml:2: agents[0].name: missing (every agent needs a name)"},
	    {"agents:\n  - name: a\n",
	     "t.yaml:2: agents[0].command: missing (a process agent needs a command)"},
	    {"agents:\n  - name: captain\n    command: x\n",
	     "t.yaml:2: agents[0].name: \"captain\" is reserved"},
	    {"agents:\n  - name: \"*\"\n    command: x\n",
	     "t.yaml:2: agents[0].name: \"*\" is reserved"},
	    {"agents:\n  - name: bad name\n    command: x\n",
	     "t.yaml:2: agents[0].name: \"bad name\" is not a valid name (1 to 64 letters, digits, "
	     "'_', '.' or '-')"},
	    {"agents:\n  - name: "
	     "a123456789b123456789c123456789d123456789e123456789f123456789g1234\n    command: x\n",
	     "t.yaml:2: agents[0].name: "
	     "\"a123456789b123456789c123456789d123456789e123456789f123456789g1234\" is not a valid "
	     "name (1 to 64 letters, digits, '_', '.' or '-')"},
	    {"agents:\n"
	     "  max_tasks: 2\n"
	     "  list:\n"
	     "    - name: a\n"
	     "      command: x\n"
	     "    - name: b\n"
	     "      command: y\n"
	     "      restart: sometimes\n",
	     "t.yaml:8: agents.list[1].restart: expected always, on-failure or never, got "
	     "\"sometimes\""},
	    {"agents:\n  list:\n    - name: a\n      command: x\n    - name: a\n      command: x\n",
	     "t.yaml:5: agents.list[1].name: duplicate agent name \"a\" (first at line 3)"},
	    {"agents:\n  - name: a\n    command: ~\n",
	     "t.yaml:2: agents[0].command: missing (a process agent needs a command)"},
	};
	expect_errors(cases, nitems(cases));
}

static void
test_error_tls_services(void **state)
{
	(void)state;
	static const struct error_case cases[] = {
	    {"bridge:\n  tls:\n    cert: /c.pem\n",
	     "t.yaml:3: bridge.tls: key is missing (give both cert and key, or neither)"},
	    {"bridge:\n  tls:\n    key: /k.pem\n    cert: ~\n",
	     "t.yaml:3: bridge.tls: cert is missing (give both cert and key, or neither)"},
	    {"services:\n  - name: llm\n    base_url: ftp://x\n",
	     "t.yaml:3: services[0].base_url: \"ftp://x\" is not an http:// or https:// URL"},
	    {"services:\n  - name: llm\n    base_url: https://\n",
	     "t.yaml:3: services[0].base_url: \"https://\" is not an http:// or https:// URL"},
	    {"services:\n  - name: llm\n",
	     "t.yaml:2: services[0].base_url: missing (every service needs a base_url)"},
	    {"services:\n  - base_url: http://x\n",
	     "t.yaml:2: services[0].name: missing (every service needs a name)"},
	    {"services:\n  - {name: s, base_url: 'http://a'}\n  - {name: s, base_url: "
	     "'http://b'}\n",
	     "t.yaml:3: services[1].name: duplicate service name \"s\" (first at line 2)"},
	    {"services:\n  - name: s\n    base_url: http://a\n    health_path: health\n",
	     "t.yaml:4: services[0].health_path: \"health\" must start with /"},
	};
	expect_errors(cases, nitems(cases));
}

static void
test_error_yaml(void **state)
{
	(void)state;
	static const struct error_case cases[] = {
	    {"bridge:\n  port: 1\n  port: 2\n",
	     "t.yaml:3: bridge.port: duplicate key (first at line 2)"},
	    {"bridge: {}\nbus: {}\nbridge: {}\n",
	     "t.yaml:3: bridge: duplicate key (first at line 1)"},
	    {"agents:\n  - name: a\n    command: x\n    env: {A: 1, A: 2}\n",
	     "t.yaml:4: agents[0].env.A: duplicate key (first at line 4)"},
	    {"extensions:\n  x:\n    a: 1\n    a: 2\n",
	     "t.yaml:4: extensions.x.a: duplicate key (first at line 3)"},
	    {"bridge:\n  port: [1, 2\n",
	     "t.yaml:3: syntax error: did not find expected ',' or ']' (while parsing a flow "
	     "sequence at line 2)"},
	    {"bridge:\n\tport: 1\n",
	     "t.yaml:2: syntax error: found character that cannot start any token (while scanning "
	     "for the next token at line 2)"},
	    {"bridge:\n  port: 1\n bus: 2\n",
	     "t.yaml:3: syntax error: did not find expected key (while parsing a block mapping at "
	     "line 1)"},
	    {"bridge: *nowhere\n", "t.yaml:1: syntax error: found undefined alias"},
	    {"bridge: {}\n---\nbus: {}\n", "t.yaml:3: only one YAML document is allowed"},
	};
	expect_errors(cases, nitems(cases));
}

/* Aliases cannot make the JSON conversion loop or explode. */
static void
test_error_aliases(void **state)
{
	(void)state;
	expect_error("extensions:\n  x: &a\n    - *a\n",
	             "t.yaml:2: extensions.x[0]: refers to itself through an alias");
	expect_error("extensions:\n  x: &a\n    y: [1, {z: *a}]\n",
	             "t.yaml:2: extensions.x.y[1].z: refers to itself through an alias");
	expect_error("extensions:\n"
	             "  x:\n"
	             "    a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
	             "    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
	             "    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
	             "    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
	             "    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
	             "    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
	             "t.yaml:3: extensions.x.e[7][8][8][8][9]: too many values (more than 100000, "
	             "after expanding aliases)");
	/* Plain aliases are fine, here and in the schema. */
	struct config *cfg = load_ok("agents:\n"
	                             "  backoff: &b {initial: 2s}\n"
	                             "tasks: {backoff: *b}\n"
	                             "extensions: {x: &c {a: 1}, y: [*c, *c]}\n");
	assert_true(cfg->agents.defaults.backoff.initial == 2);
	assert_true(cfg->tasks.backoff.initial == 2);
	assert_true(cfg->tasks.backoff.cap == 60);
	assert_int_equal(json_array_size(json_object_get(cfg->extensions.settings, "y")), 2);
	config_free(cfg);
}

/* A NULL cause pointer is allowed; nothing leaks. */
static void
test_error_no_cause(void **state)
{
	(void)state;
	struct config *cfg = NULL;
	assert_int_equal(config_load_string("bridge: {port: x}\n", "t.yaml", &cfg, NULL), -1);
	assert_null(cfg);
	assert_int_equal(config_load("/nonexistent/dreamos.yaml", &cfg, NULL), -1);
	assert_null(cfg);
}

/* Files: the path is the file in messages, a missing file and a directory
 * are reported. */
static void
test_files(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	struct config *cfg = NULL;
	char *cause = NULL;

	char *missing = xasprintf("%s/nope.yaml", dir);
	assert_int_equal(config_load(missing, &cfg, &cause), -1);
	assert_null(cfg);
	char *want = xasprintf("%s: cannot open: No such file or directory", missing);
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	free(missing);

	assert_int_equal(config_load(dir, &cfg, &cause), -1);
	want = xasprintf("%s: cannot read: Is a directory", dir);
	assert_string_equal(cause, want);
	free(want);
	free(cause);

	char *bad = testutil_write(dir, "bad.yaml", "# bridge\nbridge:\n  port: 70000\n");
	assert_int_equal(config_load(bad, &cfg, &cause), -1);
	want = xasprintf("%s:3: bridge.port: 70000 is out of range (0-65535)", bad);
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	free(bad);

	char *empty = testutil_write(dir, "empty.yaml", "");
	assert_int_equal(config_load(empty, &cfg, &cause), 0);
	assert_string_equal(cfg->path, empty);
	config_free(cfg);
	free(empty);

	char *good = testutil_write(dir, "good.yaml",
	                            "agents:\n  - name: a\n    command: ./a\nbridge:\n  port: 1\n");
	assert_int_equal(config_load(good, &cfg, &cause), 0);
	assert_string_equal(cfg->path, good);
	assert_int_equal(cfg->bridge.port, 1);
	assert_int_equal(cfg->agents.n, 1);
	config_free(cfg);
	free(good);

	/* A NUL byte inside a file. */
	char *nul = xasprintf("%s/nul.yaml", dir);
	FILE *f = fopen(nul, "wb");
	assert_non_null(f);
	fwrite("bridge:\n  port: 1\0\n", 1, 19, f);
	fclose(f);
	assert_int_equal(config_load(nul, &cfg, &cause), -1);
	want = xasprintf("%s:2: syntax error: the file contains a NUL byte", nul);
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	free(nul);

	testutil_rmdir(dir);
}

/* Adds the dotted paths of every mapping key under node to keys (a JSON
 * object used as a set), not descending into lists. */
static void
yaml_key_paths(yaml_document_t *doc, yaml_node_t *node, const char *path, json_t *keys)
{
	if (node->type != YAML_MAPPING_NODE)
		return;
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		char *kp = path[0] ? xasprintf("%s.%s", path, (char *)k->data.scalar.value)
		                   : xstrdup((char *)k->data.scalar.value);
		json_object_set_new(keys, kp, json_true());
		yaml_key_paths(doc, yaml_document_get_node(doc, p->value), kp, keys);
		free(kp);
	}
}

/* Adds the dotted paths of every key of a JSON object, not into arrays. */
static void
json_key_paths(json_t *obj, const char *path, json_t *keys)
{
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v)
	{
		char *kp = path[0] ? xasprintf("%s.%s", path, k) : xstrdup(k);
		json_object_set_new(keys, kp, json_true());
		if (json_is_object(v))
			json_key_paths(v, kp, keys);
		free(kp);
	}
}

/* share/dreamos.yaml, installed as the documented defaults, loads, holds
 * exactly the defaults, and names every key. */
static void
test_example_file(void **state)
{
	(void)state;
	const char *top = getenv("top_srcdir");
	if (top == NULL) {
		skip();
		return;
	}
	char *path = xasprintf("%s/share/dreamos.yaml", top);
	struct config *cfg = NULL, *def = config_defaults();
	char *cause = NULL;
	if (config_load(path, &cfg, &cause) != 0)
		fail_msg("%s", cause);
	assert_true(same_config(cfg, def));

	char *text = testutil_read(path);
	assert_non_null(text);
	yaml_parser_t parser;
	yaml_document_t doc;
	assert_true(yaml_parser_initialize(&parser));
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
	assert_true(yaml_parser_load(&parser, &doc));
	json_t *in_file = json_object(), *in_cfg = json_object();
	yaml_key_paths(&doc, yaml_document_get_root_node(&doc), "", in_file);
	json_t *j = config_to_json(def);
	json_key_paths(j, "", in_cfg);
	const char *k;
	json_t *v;
	json_object_foreach(in_cfg, k, v)
	{
		if (json_object_get(in_file, k) == NULL)
			fail_msg("%s does not document %s", path, k);
	}
	json_decref(j);
	json_decref(in_file);
	json_decref(in_cfg);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	free(text);
	config_free(cfg);
	config_free(def);
	free(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_extensions_load_none),
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_seed),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_open_bridge),
	    cmocka_unit_test(test_two_levels),
	    cmocka_unit_test(test_short_duration),
	    cmocka_unit_test(test_agents_sequence),
	    cmocka_unit_test(test_agents_mapping),
	    cmocka_unit_test(test_units),
	    cmocka_unit_test(test_extensions),
	    cmocka_unit_test(test_to_json),
	    cmocka_unit_test(test_agent_cfg),
	    cmocka_unit_test(test_restart_policy),
	    cmocka_unit_test(test_error_unknown_key),
	    cmocka_unit_test(test_error_types),
	    cmocka_unit_test(test_error_range),
	    cmocka_unit_test(test_error_agents),
	    cmocka_unit_test(test_error_tls_services),
	    cmocka_unit_test(test_error_yaml),
	    cmocka_unit_test(test_error_aliases),
	    cmocka_unit_test(test_error_no_cause),
	    cmocka_unit_test(test_files),
	    cmocka_unit_test(test_example_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
