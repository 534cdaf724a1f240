/* hello.c — a complete, minimal Dream.OS extension (see dreamos-extension(3)).
 *
 * It shows the parts every extension has: the metadata, init and fini, a
 * captain command with an option and completion, durable state in the
 * key-value store, state handed across a hot reload (save_state and
 * restore_state), its settings, and an agent type whose agents echo every
 * message back to its sender and answer tasks.
 *
 *   hello [NAME] [--shout]   greets NAME (default: the setting "name",
 *                            else "world") and counts greetings
 *   agent spawn echo1 --type echo
 *   send echo1 hi            echo1 sends {"echo": ...} back to the captain
 *
 * Build: make (uses pkg-config --cflags dreamos); install: make install,
 * or set extensions.dir to this directory; then `ext load hello` or
 * extensions.load: [hello] in dreamos.yaml, with optional settings:
 *
 *   extensions:
 *     load: [hello]
 *     hello:
 *       name: captain
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dreamos/extension.h>

static const struct dreamos_host *host;
static long echoes; /* messages echoed; handed to the next version on reload */

/* ---- the command ----------------------------------------------------------- */

static int
cmd_hello(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)arg;
	char *dflt = host->config_get(ext, "name"); /* NULL if not set */
	const char *name = host->call_arg(call, 0);
	if (name == NULL)
		name = dflt ? dflt : "world";

	/* Durable: the count survives restarts of dreamos. */
	char *stored = host->kv_get(ext, "greetings");
	long n = (stored ? strtol(stored, NULL, 10) : 0) + 1;
	host->free(stored);
	char buf[32];
	snprintf(buf, sizeof buf, "%ld", n);
	if (host->kv_set(ext, "greetings", buf) != 0) {
		host->free(dflt);
		return host->call_error(call, "hello: %s", host->last_error(ext));
	}

	char msg[256];
	snprintf(msg, sizeof msg, "%s, %s%s (greeting #%ld, %ld messages echoed)",
	         host->call_flag(call, "shout") ? "HELLO" : "Hello", name,
	         host->call_flag(call, "shout") ? "!!!" : "!", n, echoes);
	host->call_reply(call, msg);
	host->free(dflt);
	return DREAMOS_CMD_OK;
}

static const struct dreamos_cmd_opt hello_opts[] = {
    {"shout", DREAMOS_OPT_FLAG, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

/* ---- the agent type: echo ---------------------------------------------------- */

/* Each line from the orchestrator is one JSON object (dreamos-protocol(7)). */
static void
echo_on_line(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *line)
{
	(void)state;
	char *type = host->json_get(line, "type");
	if (type == NULL)
		return;
	if (strcmp(type, "message") == 0) {
		char *id = host->json_get(line, "id");
		char *from = host->json_get(line, "from");
		char *body = host->json_get(line, "body");
		char *to = host->json_quote(from ? from : "captain");
		char *text = host->json_quote(body ? body : "");
		size_t len = strlen(to) + strlen(text) + 64;
		char *out = malloc(len);
		/* Answer first, then acknowledge: an unacknowledged message is
		 * delivered again (after a reload, for instance). */
		snprintf(out, len, "{\"type\":\"send\",\"to\":%s,\"body\":{\"echo\":%s}}", to,
		         text);
		host->agent_line(ext, agent, out);
		snprintf(out, len, "{\"type\":\"ack\",\"id\":%s}", id ? id : "0");
		host->agent_line(ext, agent, out);
		echoes++;
		free(out);
		host->free(to);
		host->free(text);
		host->free(id);
		host->free(from);
		host->free(body);
	} else if (strcmp(type, "task.assign") == 0) {
		char *id = host->json_get(line, "task.id");
		char *payload = host->json_get(line, "task.payload");
		char *text = host->json_quote(payload ? payload : "");
		size_t len = strlen(text) + 96;
		char *out = malloc(len);
		snprintf(out, len, "{\"type\":\"task.done\",\"task\":%s,\"result\":{\"echo\":%s}}",
		         id ? id : "0", text);
		host->agent_line(ext, agent, out);
		free(out);
		host->free(text);
		host->free(id);
		host->free(payload);
	}
	/* Anything else (command pause/resume, task.cancel, error) is ignored. */
	host->free(type);
}

static const char *const echo_caps[] = {"echo", NULL};

/* ---- entry points ---------------------------------------------------------------- */

static int
hello_init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	(void)config; /* the same settings are read with config_get */
	host = h;
	struct dreamos_command hello = {
	    .size = sizeof hello,
	    .name = "hello",
	    .usage = "[NAME] [--shout]",
	    .help = "Greets NAME and counts the greetings (an example extension).",
	    .max_args = 1,
	    .opts = hello_opts,
	    .complete = "world|captain",
	    .role = DREAMOS_ROLE_OBSERVER,
	    .fn = cmd_hello,
	};
	if (host->command_register(ext, &hello) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	struct dreamos_agent_type echo = {
	    .size = sizeof echo,
	    .name = "echo",
	    .description = "sends every message back to its sender",
	    .caps = echo_caps,
	    .max_tasks = 4,
	    .on_line = echo_on_line,
	};
	if (host->agent_type_register(ext, &echo) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	host->log(ext, DREAMOS_LOG_INFO, "hello %s ready", "1.0");
	return 0;
}

static void
hello_fini(struct dreamos_ext *ext)
{
	/* Nothing to release: the host sweeps the command and the agent type. */
	host->log(ext, DREAMOS_LOG_INFO, "goodbye after %ld echoes", echoes);
}

static char *
hello_save(struct dreamos_ext *ext)
{
	(void)ext;
	char *s = malloc(64); /* the host frees it */
	if (s != NULL)
		snprintf(s, 64, "{\"echoes\":%ld}", echoes);
	return s;
}

static int
hello_restore(struct dreamos_ext *ext, const char *state)
{
	(void)ext;
	char *v = host->json_get(state, "echoes");
	echoes = v ? strtol(v, NULL, 10) : 0;
	host->free(v);
	return 0;
}

DREAMOS_EXTENSION(.name = "hello", .version = "1.0",
                  .description = "greets, counts, and echoes (the example extension)",
                  .init = hello_init, .fini = hello_fini, .save_state = hello_save,
                  .restore_state = hello_restore);
