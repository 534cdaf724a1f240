/* log.h — the central log manager: one structured record type, levels, and
 * sinks (in-memory ring, JSON-lines file with size rotation, SQLite table,
 * stderr, and subscribers such as the TUI, the Bridge and extensions). */
#ifndef DREAMOS_LOG_H
#define DREAMOS_LOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct store;

enum log_level { LVL_TRACE, LVL_DEBUG, LVL_INFO, LVL_WARN, LVL_ERROR, LVL_FATAL };

/* Returns the lower-case name of a level ("info"). */
const char *log_level_name(enum log_level level);
/* Parses a level name, case-insensitively ("INFO", "warning" also work).
 * Returns false if s names no level. */
bool log_level_parse(const char *s, enum log_level *out);

/* One log record.  In the ring and in subscriber callbacks the strings are
 * owned by the log manager and valid only during the callback (ring entries:
 * until evicted). */
struct log_record {
	uint64_t seq;  /* increasing per process, from 1 */
	int64_t ts_ms; /* wall clock, ms since the epoch */
	enum log_level level;
	const char *source; /* component ("store", "ctl") or agent name */
	const char *msg;
	json_t *fields; /* JSON object or NULL */
	/* The fields as compact JSON text, or NULL.  Records kept in the ring
	 * (logmgr_ring_get) carry only this: fields is NULL there. */
	const char *fields_text;
};

struct log_opts {
	enum log_level level; /* records below it are dropped */
	size_t ring_size;     /* records kept in memory (0 = 10000) */
};

struct logmgr;

/* Returns a new log manager with only the ring sink; free with logmgr_free. */
struct logmgr *logmgr_new(const struct log_opts *opts);
/* Closes the file sink, drops the ring and subscribers. */
void logmgr_free(struct logmgr *lm);

/* Opens (or creates, 0600) the JSON-lines file sink at path.  When it grows
 * past max_size bytes it is rotated: path -> path.1 -> ... -> path.keep.
 * Returns 0, or -1 with *cause set (caller frees). */
int logmgr_open_file(struct logmgr *lm, const char *path, uint64_t max_size, int keep,
                     char **cause);
/* Closes and reopens the file (for SIGHUP after an outside rotation). */
void logmgr_reopen(struct logmgr *lm);
/* From now on the file and stderr lines of a loop turn are written
 * together when the loop is about to wait (warnings and worse at once). */
struct uv_loop_s;
void logmgr_use_loop(struct logmgr *lm, struct uv_loop_s *loop);
/* Writes what is gathered and goes back to writing each line at once. */
void logmgr_leave_loop(struct logmgr *lm);
/* Writes what is gathered. */
void logmgr_flush(struct logmgr *lm);

/* Mirrors records to stderr as "TIME LEVEL source: msg" lines. */
void logmgr_set_stderr(struct logmgr *lm, bool on);
/* Writes records into the store's logs table (group-committed); NULL stops. */
void logmgr_set_store(struct logmgr *lm, struct store *store);

void logmgr_set_level(struct logmgr *lm, enum log_level level);
enum log_level logmgr_level(const struct logmgr *lm);
/* True if a record at level would be kept (cheap; use before costly work). */
bool log_enabled(const struct logmgr *lm, enum log_level level);

/* Registers a secret (API key, token): any occurrence in a message or in a
 * field's string value is replaced by "[redacted]" before any sink sees it.
 * The string is copied.  Strings shorter than 8 bytes are ignored. */
void logmgr_add_secret(struct logmgr *lm, const char *secret);
/* s with every registered secret replaced by "[redacted]" (caller frees). */
char *logmgr_redact(struct logmgr *lm, const char *s);

typedef void (*log_sub_fn)(void *arg, const struct log_record *rec);
/* Calls fn for every kept record.  Returns an id for logmgr_unsubscribe. */
int logmgr_subscribe(struct logmgr *lm, log_sub_fn fn, void *arg);
void logmgr_unsubscribe(struct logmgr *lm, int id);

/* Emits a record.  fields (a JSON object or NULL) is stolen. */
void log_emit(struct logmgr *lm, enum log_level level, const char *source, json_t *fields,
              const char *fmt, ...) PRINTFLIKE(5, 6);
void log_emitv(struct logmgr *lm, enum log_level level, const char *source, json_t *fields,
               const char *fmt, va_list ap);

#define log_trace(lm, src, ...) log_emit((lm), LVL_TRACE, (src), NULL, __VA_ARGS__)
#define log_debug(lm, src, ...) log_emit((lm), LVL_DEBUG, (src), NULL, __VA_ARGS__)
#define log_info(lm, src, ...)  log_emit((lm), LVL_INFO, (src), NULL, __VA_ARGS__)
#define log_warn(lm, src, ...)  log_emit((lm), LVL_WARN, (src), NULL, __VA_ARGS__)
#define log_error(lm, src, ...) log_emit((lm), LVL_ERROR, (src), NULL, __VA_ARGS__)

/* The in-memory ring: number of records held, and record i (0 = oldest). */
size_t logmgr_ring_count(const struct logmgr *lm);
const struct log_record *logmgr_ring_get(const struct logmgr *lm, size_t i);

/* Returns a record as a JSON object {seq, ts, level, source, msg, fields};
 * ts is ISO 8601 UTC.  Caller owns the result. */
json_t *log_record_json(const struct log_record *rec);

struct log_query {
	bool has_level;
	enum log_level min_level;
	const char *source; /* exact match, or NULL */
	const char *grep;   /* substring of msg, or NULL */
	int64_t since_ms;   /* wall clock; 0 = no bound */
	int limit;          /* newest N, returned oldest first; 0 = 100 */
};
/* Searches the store's logs table (or the ring when no store is set).
 * Returns a JSON array of records oldest first, or NULL with *cause set. */
json_t *logmgr_query(struct logmgr *lm, const struct log_query *q, char **cause);

/* Counters for status output. */
struct log_stats {
	uint64_t emitted;       /* records kept */
	uint64_t dropped_level; /* below the level */
	uint64_t file_errors;   /* failed writes to the file sink */
	uint64_t rotations;
	uint64_t stderr_dropped; /* lines stderr could not take without waiting */
};
void logmgr_stats(const struct logmgr *lm, struct log_stats *out);

#endif
