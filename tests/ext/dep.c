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
 * order fails), and the command NAME answers "NAME VERSION". */
#include <stdio.h>
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
	if (host->command_register(ext, &c) != 0) {
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
