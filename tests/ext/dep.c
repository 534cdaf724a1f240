/* dep.c — small test extensions for dependency resolution, built several
 * times with different macros:
 *
 *   DEP_NAME     its name (a string), also the name of its command
 *   DEP_VERSION  its version (default "1.0")
 *   DEP_REQ      the extension it requires (a string), if any
 *   DEP_MIN      the minimum version of DEP_REQ (a string), if any
 *
 * dep_a; dep_b (requires dep_a >= 1.0); dep_c (requires dep_b >= 1.0);
 * dep_old (requires dep_a >= 9.0); dep_missing (requires nosuchext);
 * cycle_x (requires cycle_y) and cycle_y (requires cycle_x).
 *
 * init checks that what it requires is already loaded (so a wrong load
 * order fails), and the command NAME answers "NAME VERSION".
 *
 * Methods for call_method: NAME.echo answers {"from": NAME, "in": JSON},
 * NAME.fail fails, NAME.recurse calls itself; the command NAME-call
 * TARGET [JSON] calls a method and answers its result or the error. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dreamos/extension.h>

#ifndef DEP_VERSION
#define DEP_VERSION "1.0"
#endif
#ifndef DEP_MIN
#define DEP_MIN NULL
#endif

static const struct dreamos_host *host;

#ifdef DEP_REQ
static const struct dreamos_dep deps[] = {{DEP_REQ, DEP_MIN}, {NULL, NULL}};
#define DEPS deps
#else
#define DEPS NULL
#endif

static int
cmd(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	host->call_reply(call, DEP_NAME " " DEP_VERSION);
	return DREAMOS_CMD_OK;
}

static char *
m_echo(struct dreamos_ext *ext, void *arg, const char *json)
{
	char *out = NULL;
	if (asprintf(&out, "{\"from\": \"%s\", \"in\": %s}", DEP_NAME, json) < 0)
		return NULL;
	return out;
}

static char *
m_fail(struct dreamos_ext *ext, void *arg, const char *json)
{
	host->set_error(ext, "failed on purpose");
	return NULL;
}

static char *
m_recurse(struct dreamos_ext *ext, void *arg, const char *json)
{
	char *r = host->call_method(ext, DEP_NAME ".recurse", json);
	if (r == NULL) {
		host->set_error(ext, "%s", host->last_error(ext));
		return NULL;
	}
	char *out = strdup(r);
	host->free(r);
	return out;
}

static int
cmd_call(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	const char *json = host->call_argc(call) > 1 ? host->call_arg(call, 1) : "null";
	char *r = host->call_method(ext, host->call_arg(call, 0), json);
	if (r == NULL)
		return host->call_error(call, "%s", host->last_error(ext));
	host->call_reply(call, r);
	host->free(r);
	return DREAMOS_CMD_OK;
}

static int
init(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	host = h;
#ifdef DEP_REQ
	if (host->ext_version(ext, DEP_REQ) == NULL) {
		host->set_error(ext, "%s is not loaded before me", DEP_REQ);
		return -1;
	}
#endif
	struct dreamos_command c = {.name = DEP_NAME, .help = "Says its name.", .fn = cmd};
	struct dreamos_command cc = {.name = DEP_NAME "-call",
	                             .usage = "EXT.METHOD [JSON]",
	                             .help = "Calls a method of an extension.",
	                             .min_args = 1,
	                             .max_args = 2,
	                             .fn = cmd_call};
	if (host->command_register(ext, &c) != 0 || host->command_register(ext, &cc) != 0 ||
	    host->method_register(ext, "echo", m_echo, NULL) != 0 ||
	    host->method_register(ext, "fail", m_fail, NULL) != 0 ||
	    host->method_register(ext, "recurse", m_recurse, NULL) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	host->log(ext, DREAMOS_LOG_INFO, "%s %s initialised", DEP_NAME, DEP_VERSION);
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	host->log(ext, DREAMOS_LOG_INFO, "%s finishes", DEP_NAME);
}

DREAMOS_EXTENSION(.name = DEP_NAME, .version = DEP_VERSION, .description = "dependency test",
                  .requires = DEPS, .init = init, .fini = fini);
