/* runtime.h — the runtime directory (dreamos.db, logs/, dreamos.sock) and
 * the lock that lets only one instance own it. */
#ifndef DREAMOS_RUNTIME_H
#define DREAMOS_RUNTIME_H

#include <sys/types.h>

/* Returns the runtime directory to use: opt if given, else $DREAMOS_RUNTIME,
 * else $XDG_STATE_HOME/dreamos, else ~/.local/state/dreamos.  Caller frees. */
char *runtime_resolve(const char *opt);

/* Creates dir (0700, with parents) and logs/ inside it.  Returns 0 or -1
 * with *cause. */
int runtime_prepare(const char *dir, char **cause);

struct runtime_lock {
	int fd;
	char *path;
};

/* Takes the instance lock (dir/dreamos.lock, flock + our pid inside).  If
 * another live process holds it, fails with *cause naming its pid.  Returns
 * 0 or -1. */
int runtime_lock(const char *dir, struct runtime_lock *lock, char **cause);
/* Releases the lock and removes the lock file. */
void runtime_unlock(struct runtime_lock *lock);
/* Returns the pid holding dir's lock, or 0 if nobody does. */
pid_t runtime_lock_holder(const char *dir);

#endif
