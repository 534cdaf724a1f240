/* util.h — allocation that never fails, strings, time, small helpers. */
#ifndef DREAMOS_UTIL_H
#define DREAMOS_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#ifdef __GNUC__
#define PRINTFLIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define PRINTFLIKE(a, b)
#endif

/* Allocators that abort with a message on exhaustion, like tmux's xmalloc:
 * callers never check for NULL. */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a newly allocated formatted string; the caller frees it. */
char *xasprintf(const char *fmt, ...) PRINTFLIKE(1, 2);
char *xvasprintf(const char *fmt, va_list ap);

/* Growable byte buffer. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
};
void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *p, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addf(struct buf *b, const char *fmt, ...) PRINTFLIKE(2, 3);
/* Appends v in decimal (printf costs more than the rest of a hot line). */
void buf_add_int(struct buf *b, int64_t v);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Returns the data NUL-terminated (the buffer keeps ownership). */
const char *buf_cstr(struct buf *b);
/* Appends s as a quoted JSON string (s must be valid UTF-8). */
void buf_add_json_str(struct buf *b, const char *s);
/* s for a terminal: control characters (a newline, ESC, ...) as escapes
 * ("\n", "\x1b"), so that text from an agent cannot fake a line or move the
 * cursor. */
void buf_add_visible(struct buf *b, const char *s);
/* buf_add for the hot paths that build a line piece by piece: inline, so
 * that a piece of known size is copied by a few moves (memcpy with a
 * constant size), not by a call to buf_add and one to memcpy. */
static inline void
buf_add_fast(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap)
		buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}
/* Appends a string literal (its size known at compile time). */
#define buf_add_lit(b, lit) buf_add_fast((b), "" lit, sizeof(lit) - 1)

/* Milliseconds on the monotonic clock and on the wall clock. */
int64_t time_mono_ms(void);
int64_t time_wall_ms(void);
/* Between time_batch_begin and time_batch_end (on one thread; they nest),
 * time_mono_ms and time_wall_ms read each clock once and then give that
 * reading again: for the lines of one read from an agent, which arrived
 * together.  A reading costs about 35 ns, and a bus message took six (the
 * line's arrival, its delivery, its time; the same for its ack), about a
 * tenth of the loop's time per message. */
void time_batch_begin(void);
void time_batch_end(void);
/* Formats a wall-clock time in ms as ISO 8601 UTC with milliseconds into out
 * (at least 32 bytes). */
void time_iso8601(int64_t wall_ms, char *out, size_t len);

/* The longest duration parse_duration accepts: 100 years. */
#define DURATION_MAX_S (100.0 * 365 * 86400)
/* Parses a duration: a number of seconds ("30", "1.5") or a number with a
 * unit ("250ms", "30s", "5m", "2h", "1d").  Returns false if malformed or
 * longer than DURATION_MAX_S. */
bool parse_duration(const char *s, double *seconds);
/* Parses a size: bytes ("1024") or with a unit ("64k", "10MB", "1MiB", "2G").
 * Returns false if malformed. */
bool parse_size(const char *s, uint64_t *bytes);
/* Formats a duration in seconds for people ("3.4 s", "2 m 5 s", "1 h 2 m"). */
void format_duration(double seconds, char *out, size_t len);
/* Formats a byte count for people ("1.2 MiB"). */
void format_size(uint64_t bytes, char *out, size_t len);

/* Creates dir and its parents with mode; returns 0 or -errno. */
int mkdir_p(const char *dir, int mode);
/* Joins two path components; the caller frees the result. */
char *path_join(const char *a, const char *b);

/* True if s[0..len) is valid UTF-8. */
bool utf8_valid(const char *s, size_t len);
/* Makes s one line of valid UTF-8, in place (errors that quote input). */
void utf8_clean_line(char *s);

/* Compares two byte strings in time independent of their content. */
bool const_time_eq(const void *a, const void *b, size_t len);

#endif
