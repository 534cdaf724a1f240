/* host-proc.c — child processes owned by extensions (proc_spawn,
 * proc_write, proc_kill): uv_spawn with extra socket pairs on fds 3..,
 * output handed to the extension, killed and swept on unload. */
#include "build-config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "ext-int.h"
#include "util.h"

/* Not implemented yet: every call fails with a clear error. */
uint64_t
ext_proc_spawn(struct dreamos_ext *x, const struct dreamos_proc_spec *spec,
               dreamos_proc_data_fn data, dreamos_proc_exit_fn exited, void *arg)
{
	(void)spec, (void)data, (void)exited, (void)arg;
	ext_set_error(x, "proc_spawn: not supported by this host");
	return 0;
}

int
ext_proc_write(struct dreamos_ext *x, uint64_t id, int fd, const char *data, size_t len)
{
	(void)id, (void)fd, (void)data, (void)len;
	ext_set_error(x, "proc_write: not supported by this host");
	return -1;
}

int
ext_proc_kill(struct dreamos_ext *x, uint64_t id, int signum)
{
	(void)id, (void)signum;
	ext_set_error(x, "proc_kill: not supported by this host");
	return -1;
}

size_t
ext_procs_sweep(struct dreamos_ext *x)
{
	size_t n = x->nprocs;
	x->procs = NULL;
	x->nprocs = 0;
	return n;
}
