/* ctl.h — the control socket (runtime/dreamos.sock, mode 0600) and the
 * `dreamos ctl` client.
 *
 * Wire format, one JSON object per line:
 *   client → server  {"proto": 1, "argv": ["status", "--json"]}
 *   server → client  {"stream": "partial text"}             (zero or more)
 *                    {"status": 0, "output": "...", "error": "..."}  (last)
 * status is 0 ok, 1 command failed, 2 usage error.  A client may send
 * several requests on one connection; they are answered in order. */
#ifndef DREAMOS_CTL_H
#define DREAMOS_CTL_H

#include <stddef.h>

#define CTL_PROTO       1
#define CTL_MAX_REQUEST (1024 * 1024)

/* Exit codes of `dreamos ctl`. */
enum ctl_exit { CTL_EXIT_OK = 0, CTL_EXIT_FAILED = 1, CTL_EXIT_USAGE = 2, CTL_EXIT_NOINSTANCE = 3 };

struct orch;
struct ctl_server;

/* Listens on path (removing a stale socket left by a crashed instance).
 * Returns 0 or -1 with *cause. */
int ctl_server_start(struct orch *o, const char *path, struct ctl_server **out, char **cause);
/* Stops listening, closes client connections and removes the socket file. */
void ctl_server_stop(struct ctl_server *s);
/* Number of connected clients. */
size_t ctl_server_clients(const struct ctl_server *s);

/* Runs one command against the instance listening on sock_path and prints
 * its output (stdout, errors on stderr).  Returns an enum ctl_exit value. */
int ctl_client_run(const char *sock_path, int argc, char **argv);

#endif
