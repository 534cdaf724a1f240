/* runtime.c — runtime directory resolution and the single-instance lock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

char *
runtime_resolve(const char *opt)
{
	const char *env;
	if (opt != NULL && *opt != '\0')
		return xstrdup(opt);
	if ((env = getenv("DREAMOS_RUNTIME")) != NULL && *env != '\0')
		return xstrdup(env);
	if ((env = getenv("XDG_STATE_HOME")) != NULL && *env == '/')
		return path_join(env, "dreamos");
	env = getenv("HOME");
	return xasprintf("%s/.local/state/dreamos", env != NULL && *env ? env : "/tmp");
}

int
runtime_prepare(const char *dir, char **cause)
{
	int rc = mkdir_p(dir, 0700);
	if (rc != 0) {
		*cause = xasprintf("%s: cannot create runtime directory: %s", dir, strerror(-rc));
		return -1;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		*cause = xasprintf("%s: not a directory", dir);
		return -1;
	}
	if ((sb.st_mode & 0077) != 0 && sb.st_uid == getuid())
		chmod(dir, 0700);
	if (access(dir, W_OK) != 0) {
		*cause =
		    xasprintf("%s: runtime directory is not writable: %s", dir, strerror(errno));
		return -1;
	}
	char *logs = path_join(dir, "logs");
	rc = mkdir_p(logs, 0700);
	free(logs);
	if (rc != 0) {
		*cause = xasprintf("%s/logs: cannot create: %s", dir, strerror(-rc));
		return -1;
	}
	return 0;
}

/* Reads the pid written in an open lock file; 0 if none. */
static pid_t
read_pid(int fd)
{
	char buf[32] = {0};
	if (pread(fd, buf, sizeof buf - 1, 0) <= 0)
		return 0;
	return (pid_t)strtol(buf, NULL, 10);
}

int
runtime_lock(const char *dir, struct runtime_lock *lock, char **cause)
{
	char *path = path_join(dir, "dreamos.lock");
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		*cause = xasprintf("%s: cannot open lock file: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		pid_t pid = read_pid(fd);
		if (pid > 0)
			*cause = xasprintf("runtime directory %s is in use by dreamos pid %ld", dir,
			                   (long)pid);
		else
			*cause =
			    xasprintf("runtime directory %s is in use by another dreamos", dir);
		close(fd);
		free(path);
		return -1;
	}
	char pidbuf[32];
	int n = snprintf(pidbuf, sizeof pidbuf, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pidbuf, (size_t)n, 0) != n) {
		*cause = xasprintf("%s: cannot write lock file: %s", path, strerror(errno));
		close(fd);
		free(path);
		return -1;
	}
	lock->fd = fd;
	lock->path = path;
	return 0;
}

void
runtime_unlock(struct runtime_lock *lock)
{
	if (lock->fd < 0)
		return;
	/* Unlink while still holding the lock so no one else's lock is removed. */
	unlink(lock->path);
	close(lock->fd);
	lock->fd = -1;
	free(lock->path);
	lock->path = NULL;
}

pid_t
runtime_lock_holder(const char *dir)
{
	char *path = path_join(dir, "dreamos.lock");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return 0;
	pid_t pid = 0;
	if (flock(fd, LOCK_SH | LOCK_NB) != 0)
		pid = read_pid(fd);
	else
		flock(fd, LOCK_UN);
	close(fd);
	return pid;
}
