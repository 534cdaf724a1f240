/* task.h — the task manager (DESIGN section 6), after beanstalkd's job
 * state machine: one transition function per edge that updates memory and
 * the store together (in the bus's group commit); a ready heap per
 * capability ordered by priority then id; one deadline heap for run
 * timeouts and retry backoff, driven by a single timer.  Scheduling is
 * event-driven: on submit, when a slot frees, when an agent becomes ready. */
#ifndef DREAMOS_TASK_H
#define DREAMOS_TASK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmd.h"
#include "heap.h"
#include "proto.h"

struct orch;
struct agent;

enum task_state {
	TASK_QUEUED,
	TASK_BLOCKED,  /* waiting for dependencies */
	TASK_ASSIGNED, /* sent to an agent */
	TASK_RUNNING,  /* the agent reported progress */
	TASK_FAILED,   /* an attempt failed; queued again after backoff */
	TASK_DONE,
	TASK_DEAD, /* out of retries, failed for good, or a dependency died */
	TASK_CANCELLED,
	TASK_NSTATES
};
const char *task_state_name(enum task_state s);
bool task_state_parse(const char *s, enum task_state *out);
bool task_state_final(enum task_state s);

struct task {
	int64_t id;
	char *title;
	char *payload; /* JSON text */
	enum proto_priority priority;
	char *capability; /* NULL: any agent that takes tasks */
	double timeout_s;
	int max_retries;
	int attempt; /* assignments so far */
	enum task_state state;
	char *agent; /* assigned agent */
	double progress;
	char *note;
	char *result; /* JSON text */
	char *error;
	char *submitter;
	int64_t created_ms, updated_ms; /* wall */
	int64_t deadline;               /* clock ms: run timeout or retry time */
	size_t ready_pos, timer_pos;
	int64_t *after; /* dependencies */
	size_t nafter;
	size_t waiting; /* unfinished dependencies */
	bool unsaved;   /* its row lags behind (written at the commit point) */
};

struct tasks;

/* The clock the manager reads (monotonic ms); injectable for tests. */
typedef int64_t (*task_clock_fn)(void *arg);

struct tasks *tasks_new(struct orch *o);
void tasks_free(struct tasks *tm);
/* Loads unfinished tasks from the store; running ones go back to queued,
 * counted as an attempt. */
int tasks_recover(struct tasks *tm, char **cause);
void tasks_close(struct tasks *tm);
void tasks_set_clock(struct tasks *tm, task_clock_fn fn, void *arg);

struct task_spec {
	const char *title;
	const char *payload;  /* JSON text or NULL */
	bool payload_compact; /* payload is trusted compact JSON (no re-parse) */
	enum proto_priority priority;
	const char *capability; /* or NULL */
	const int64_t *after;
	size_t nafter;
	double timeout_s; /* <= 0: tasks.default_timeout */
	int max_retries;  /* < 0: tasks.default_retries */
	const char *submitter;
};
/* Writes the rows of the tasks table that lag behind memory (assignments
 * are written at the commit point); call before reading that table. */
void tasks_sync(struct tasks *tm);
/* Creates a task.  Returns it (queued or blocked), or NULL with *cause. */
struct task *tasks_submit(struct tasks *tm, const struct task_spec *spec, char **cause);
struct task *tasks_get(struct tasks *tm, int64_t id);

/* Captain actions; 0 or -1 with *cause. */
int tasks_cancel(struct tasks *tm, int64_t id, char **cause);
int tasks_retry(struct tasks *tm, int64_t id, char **cause);

/* Processes due deadlines; returns ms to the next one, or -1 if none. */
int64_t tasks_tick(struct tasks *tm);

/* Agent hooks. */
void tasks_agent_ready(struct tasks *tm, struct agent *a);
void tasks_agent_gone(struct tasks *tm, struct agent *a);
bool tasks_agent_message(struct tasks *tm, struct agent *a, const struct proto_msg *m);

struct task_counts {
	uint64_t n[TASK_NSTATES];
	uint64_t submitted, transitions;
	int64_t last_id;
};
void tasks_counts(const struct tasks *tm, struct task_counts *out);

/* JSON of a task (from memory or the store); NULL if no such task. */
json_t *tasks_show_json(struct tasks *tm, int64_t id);
/* Why a queued task waits ("no capable agent", ...). */
const char *tasks_wait_reason(struct tasks *tm, const struct task *t);

/* Listeners for task transitions (TUI, Bridge, extensions). */
typedef void (*task_event_fn)(void *arg, const struct task *t, enum task_state from);
int tasks_subscribe_events(struct tasks *tm, task_event_fn fn, void *arg);
void tasks_unsubscribe_events(struct tasks *tm, int id);

extern const struct cmd_entry cmd_task_entries[];
extern const size_t cmd_task_count;

#endif
