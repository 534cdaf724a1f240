/* spawn.h — child-process agents: uv_spawn with stdin/stdout pipes for the
 * protocol and stderr captured line by line into the central log, in their
 * own process group so that stopping an agent stops its children too. */
#ifndef DREAMOS_SPAWN_H
#define DREAMOS_SPAWN_H

struct agent;

/* Starts a's program (a->cfg.command, args, env, cwd).  On success sets
 * a->pid, a->proc and a->link_ops and returns 0; otherwise returns -1 with
 * *cause ("cannot start 'x': no such file or directory"). */
int spawn_process(struct agent *a, char **cause);
/* Whether cfg's program can be run: a path (relative to cfg->cwd, else
 * cwd) must be an executable file; a bare name must be one on the PATH
 * the child gets (cfg->env's PATH=, else ours).  Returns 0, or -1 with
 * *cause ("cannot run 'x': no such file or directory"). */
struct agent_cfg;
int spawn_check_program(const struct agent_cfg *cfg, const char *cwd, char **cause);
/* Sends sig to the agent's process group.  Returns 0 or -1 if not running. */
int spawn_signal(struct agent *a, int sig);

/* Kills the process group and lets go of the link without waiting (used
 * when the orchestrator is torn down without an orderly shutdown). */
void spawn_abandon(struct agent *a);

#endif
