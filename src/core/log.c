/* log.c — the central log manager: levels, secret redaction, and the sinks
 * (ring, stderr, JSON-lines file with size rotation, SQLite, subscribers).
 *
 * The emit path is built for bursts (agent stderr, traffic): the message is
 * formatted into reused buffers, each sink's line is prepared in a reused
 * buffer and written with one write(2), ring slots keep their string buffers
 * when they are overwritten, and the ISO 8601 second is cached.  A record
 * emitted while another is being emitted (a store error, a subscriber that
 * logs) gets its own scratch buffers and skips the store sink.
 *
 * Once the manager knows the loop (logmgr_use_loop), the file and stderr
 * lines of a turn are gathered and written when the loop is about to wait
 * (a uv_prepare handle): one write(2) per sink per turn, not per record.
 * Warnings and worse are written at once, with what came before them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"
#include "store.h"

#define LOG_OUT_MAX (64 * 1024) /* buffered bytes that force a write */

#define LOG_RING_DEFAULT 10000
#define LOG_MSG_MAX      65536 /* longer messages are cut (at a character) */
#define LOG_MAX_DEPTH    4     /* nested emits beyond this are dropped */
#define LOG_REDACTED     "[redacted]"

/* A ring slot: the record, whose source and msg point into mem. */
struct ring_slot {
	struct log_record rec;
	char *mem;
	size_t cap;
};

struct log_sub {
	int id;
	log_sub_fn fn; /* NULL: unsubscribed during a dispatch */
	void *arg;
};

/* Buffers for one emit. */
struct log_scratch {
	struct buf fmt;    /* the formatted message */
	struct buf msg;    /* ... cleaned and redacted */
	struct buf tmp;    /* redaction work */
	struct buf src;    /* a cleaned source, if needed */
	struct buf fields; /* the fields as compact JSON */
	struct buf line;   /* a sink's output line */
};

struct logmgr {
	enum log_level level;

	struct ring_slot *ring;
	size_t ring_cap;
	size_t ring_count;
	size_t ring_next; /* the slot the next record goes to */

	bool to_stderr;
	int err_fd;    /* stderr, non-blocking where it can wait (-1: not yet) */
	bool err_file; /* stderr is a regular file: writes never wait */
	dev_t err_dev; /* what fd 2 was when err_fd was opened */
	ino_t err_ino;
	bool err_midline;     /* a line was cut short there */
	uint64_t err_dropped; /* lines not shown there since the last note */

	char *path; /* file sink, or NULL */
	int fd;
	uint64_t max_size;
	int keep;
	uint64_t file_size;

	/* Lines waiting for the end of the turn (logmgr_use_loop). */
	uv_prepare_t *prepare; /* NULL: written at once */
	struct buf out_file, out_err;

	struct store *store;
	bool in_store;

	char **secrets;
	size_t nsecrets;

	struct log_sub *subs;
	size_t nsubs;
	int next_sub_id;
	int dispatching;
	bool subs_dirty;

	uint64_t seq;
	int depth;
	struct log_scratch scratch;

	int64_t iso_sec; /* the second iso_prefix shows */
	char iso_prefix[24];

	struct log_stats stats;
};

static const char *const log_level_names[] = {"trace", "debug", "info", "warn", "error", "fatal"};
static const char *const log_level_tags[] = {"TRACE", "DEBUG", "INFO ", "WARN ", "ERROR", "FATAL"};

const char *
log_level_name(enum log_level level)
{
	if ((unsigned)level >= nitems(log_level_names))
		return "unknown";
	return log_level_names[level];
}

bool
log_level_parse(const char *s, enum log_level *out)
{
	if (s == NULL)
		return false;
	for (size_t i = 0; i < nitems(log_level_names); i++) {
		if (strcasecmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LVL_WARN;
		return true;
	}
	return false;
}

/* Initialises or frees a set of scratch buffers. */
static void
log_scratch_init(struct log_scratch *sc)
{
	buf_init(&sc->fmt);
	buf_init(&sc->msg);
	buf_init(&sc->tmp);
	buf_init(&sc->src);
	buf_init(&sc->fields);
	buf_init(&sc->line);
}

static void
log_scratch_free(struct log_scratch *sc)
{
	buf_free(&sc->fmt);
	buf_free(&sc->msg);
	buf_free(&sc->tmp);
	buf_free(&sc->src);
	buf_free(&sc->fields);
	buf_free(&sc->line);
}

struct logmgr *
logmgr_new(const struct log_opts *opts)
{
	struct logmgr *lm = xcalloc(1, sizeof *lm);
	lm->level = opts ? opts->level : LVL_INFO;
	lm->ring_cap = opts && opts->ring_size ? opts->ring_size : LOG_RING_DEFAULT;
	lm->ring = xcalloc(lm->ring_cap, sizeof *lm->ring);
	lm->fd = -1;
	lm->err_fd = -1;
	lm->next_sub_id = 1;
	lm->iso_sec = -1;
	log_scratch_init(&lm->scratch);
	return lm;
}

void
logmgr_free(struct logmgr *lm)
{
	if (lm == NULL)
		return;
	logmgr_flush(lm);
	buf_free(&lm->out_file);
	buf_free(&lm->out_err);
	if (lm->err_fd > STDERR_FILENO)
		close(lm->err_fd);
	if (lm->prepare != NULL) /* the loop will not run again: let it go */
		lm->prepare->data = NULL;
	if (lm->fd != -1)
		close(lm->fd);
	free(lm->path);
	for (size_t i = 0; i < lm->ring_cap; i++)
		free(lm->ring[i].mem);
	free(lm->ring);
	for (size_t i = 0; i < lm->nsecrets; i++)
		free(lm->secrets[i]);
	free(lm->secrets);
	free(lm->subs);
	log_scratch_free(&lm->scratch);
	free(lm);
}

/* Writes all of p; returns 0 or -1 with errno set. */
static int
log_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Opens lm->path for appending and learns its size.  Returns 0, or -1 with
 * errno set. */
static int
log_file_open(struct logmgr *lm, bool truncate)
{
	int flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0);
	int fd = open(lm->path, flags, 0600);
	if (fd == -1)
		return -1;
	struct stat sb;
	lm->file_size = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	lm->fd = fd;
	return 0;
}

int
logmgr_open_file(struct logmgr *lm, const char *path, uint64_t max_size, int keep, char **cause)
{
	if (lm->fd != -1) {
		close(lm->fd);
		lm->fd = -1;
	}
	free(lm->path);
	lm->path = xstrdup(path);
	lm->max_size = max_size;
	lm->keep = keep < 0 ? 0 : keep;
	if (log_file_open(lm, false) != 0) {
		if (cause != NULL)
			*cause = xasprintf("%s: cannot open log file: %s", path, strerror(errno));
		free(lm->path);
		lm->path = NULL;
		return -1;
	}
	return 0;
}

void
logmgr_reopen(struct logmgr *lm)
{
	if (lm->path == NULL)
		return;
	logmgr_flush(lm);
	if (lm->fd != -1) {
		close(lm->fd);
		lm->fd = -1;
	}
	if (log_file_open(lm, false) != 0)
		lm->stats.file_errors++;
}

/* Rotates the file: path.(keep-1) -> path.keep, ..., path -> path.1, and
 * reopens path; with keep 0 the file is truncated. */
static void
log_rotate(struct logmgr *lm)
{
	logmgr_flush(lm);
	if (lm->fd != -1) {
		close(lm->fd);
		lm->fd = -1;
	}
	if (lm->keep > 0) {
		size_t len = strlen(lm->path) + 16;
		char *from = xmalloc(len), *to = xmalloc(len);
		for (int i = lm->keep - 1; i >= 0; i--) {
			if (i == 0)
				snprintf(from, len, "%s", lm->path);
			else
				snprintf(from, len, "%s.%d", lm->path, i);
			snprintf(to, len, "%s.%d", lm->path, i + 1);
			if (rename(from, to) != 0 && errno != ENOENT)
				lm->stats.file_errors++;
		}
		free(from);
		free(to);
	}
	lm->stats.rotations++;
	if (log_file_open(lm, lm->keep == 0) != 0)
		lm->stats.file_errors++;
}

/* stderr for the sink.  A pipe, FIFO or terminal that nobody reads (a
 * pager left open, a terminal stopped with ^S) must not stop the loop: it
 * gets an open file description of its own, non-blocking, so that the
 * shell's is left as it was.  A socket cannot be opened again; poll() before
 * each write keeps it from waiting in most cases.  Called before each
 * write: fd 2 may have been pointed elsewhere since (the TUI does). */
static void
log_err_open(struct logmgr *lm)
{
	struct stat st;
	if (fstat(STDERR_FILENO, &st) != 0)
		memset(&st, 0, sizeof st);
	if (lm->err_fd != -1 && st.st_dev == lm->err_dev && st.st_ino == lm->err_ino)
		return;
	if (lm->err_fd > STDERR_FILENO)
		close(lm->err_fd);
	lm->err_dev = st.st_dev;
	lm->err_ino = st.st_ino;
	lm->err_fd = STDERR_FILENO;
	lm->err_file = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || st.st_mode == 0;
	if (lm->err_file)
		return;
	int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0)
		lm->err_fd = fd;
}

void
logmgr_set_stderr(struct logmgr *lm, bool on)
{
	lm->to_stderr = on;
}

static uint64_t
log_count_lines(const char *p, size_t len)
{
	uint64_t n = 0;
	for (const char *e = p + len; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
		n++;
	return n;
}

/* Writes what it can of p without waiting; returns the bytes written. */
static size_t
log_err_try(struct logmgr *lm, const char *p, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(lm->err_fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	if (done > 0)
		lm->err_midline = p[done - 1] != '\n';
	return done;
}

/* Lines for stderr.  What it cannot take now is dropped and counted (every
 * record is still in the file, the ring and the database); once it takes
 * lines again, a note says how many were not shown. */
static void
log_err_write(struct logmgr *lm, const char *p, size_t len)
{
	log_err_open(lm);
	struct pollfd pfd = {.fd = lm->err_fd, .events = POLLOUT};
	if (!lm->err_file && (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT))) {
		lm->err_dropped += log_count_lines(p, len);
		lm->stats.stderr_dropped += log_count_lines(p, len);
		return;
	}
	if (lm->err_dropped > 0 || lm->err_midline) {
		char note[160] = "\n";
		int n = lm->err_midline ? 1 : 0;
		if (lm->err_dropped > 0)
			n +=
			    snprintf(note + n, sizeof note - (size_t)n,
			             "dreamos: %llu log lines not shown here: stderr was not being "
			             "read (`dreamos ctl logs` has them)\n",
			             (unsigned long long)lm->err_dropped);
		size_t w = log_err_try(lm, note, (size_t)n);
		if (w < (size_t)n) {
			lm->err_dropped += log_count_lines(p, len);
			lm->stats.stderr_dropped += log_count_lines(p, len);
			return;
		}
		lm->err_dropped = 0;
	}
	size_t w = log_err_try(lm, p, len);
	if (w < len) {
		/* a line cut short counts as not shown */
		uint64_t lost = log_count_lines(p + w, len - w);
		lm->err_dropped += lost;
		lm->stats.stderr_dropped += lost;
	}
}

void
logmgr_set_store(struct logmgr *lm, struct store *store)
{
	lm->store = store;
}

void
logmgr_set_level(struct logmgr *lm, enum log_level level)
{
	lm->level = level;
}

enum log_level
logmgr_level(const struct logmgr *lm)
{
	return lm->level;
}

bool
log_enabled(const struct logmgr *lm, enum log_level level)
{
	return lm != NULL && level >= lm->level;
}

void
logmgr_add_secret(struct logmgr *lm, const char *secret)
{
	if (secret == NULL || strlen(secret) < 8)
		return;
	for (size_t i = 0; i < lm->nsecrets; i++)
		if (strcmp(lm->secrets[i], secret) == 0)
			return;
	lm->secrets = xreallocarray(lm->secrets, lm->nsecrets + 1, sizeof *lm->secrets);
	lm->secrets[lm->nsecrets++] = xstrdup(secret);
}

int
logmgr_subscribe(struct logmgr *lm, log_sub_fn fn, void *arg)
{
	lm->subs = xreallocarray(lm->subs, lm->nsubs + 1, sizeof *lm->subs);
	struct log_sub *s = &lm->subs[lm->nsubs++];
	s->id = lm->next_sub_id++;
	s->fn = fn;
	s->arg = arg;
	return s->id;
}

/* Drops the entries unsubscribed during a dispatch. */
static void
log_subs_compact(struct logmgr *lm)
{
	size_t j = 0;
	for (size_t i = 0; i < lm->nsubs; i++)
		if (lm->subs[i].fn != NULL)
			lm->subs[j++] = lm->subs[i];
	lm->nsubs = j;
	lm->subs_dirty = false;
}

void
logmgr_unsubscribe(struct logmgr *lm, int id)
{
	for (size_t i = 0; i < lm->nsubs; i++) {
		if (lm->subs[i].id == id && lm->subs[i].fn != NULL) {
			lm->subs[i].fn = NULL;
			lm->subs_dirty = true;
			break;
		}
	}
	if (lm->dispatching == 0 && lm->subs_dirty)
		log_subs_compact(lm);
}

/* Returns the length of the valid UTF-8 sequence at s (n bytes left), or 0
 * if the bytes there are not one. */
static size_t
log_utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t len;
	uint32_t min, cp;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, min = 0x80, cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, min = 0x800, cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, min = 0x10000, cp = c & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Appends s[0..len) to out with invalid UTF-8 replaced by U+FFFD and NULs
 * dropped. */
static void
log_utf8_clean(struct buf *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		size_t n = log_utf8_seq(p + i, len - i);
		if (n == 0) {
			buf_add(out, "\xef\xbf\xbd", 3);
			i++;
		} else {
			if (p[i] != '\0')
				buf_add(out, p + i, n);
			i += n;
		}
	}
}

/* Replaces every occurrence of each secret in s.  Returns s itself when
 * there is none, else a string in one of the two buffers. */
static const char *
log_redact_str(struct logmgr *lm, const char *s, struct buf *a, struct buf *b)
{
	const char *cur = s;
	for (size_t i = 0; i < lm->nsecrets; i++) {
		const char *secret = lm->secrets[i];
		const char *hit = strstr(cur, secret);
		if (hit == NULL)
			continue;
		struct buf *out = cur == a->data ? b : a;
		out->len = 0;
		size_t slen = strlen(secret);
		const char *p = cur;
		do {
			buf_add(out, p, (size_t)(hit - p));
			buf_add(out, LOG_REDACTED, sizeof LOG_REDACTED - 1);
			p = hit + slen;
		} while ((hit = strstr(p, secret)) != NULL);
		buf_adds(out, p);
		cur = buf_cstr(out);
	}
	return cur;
}

char *
logmgr_redact(struct logmgr *lm, const char *s)
{
	struct buf a, b;
	buf_init(&a);
	buf_init(&b);
	char *out = xstrdup(log_redact_str(lm, s, &a, &b));
	buf_free(&a);
	buf_free(&b);
	return out;
}

/* True if a string value somewhere in j contains a secret. */

static bool
log_str_has_secret(const struct logmgr *lm, const char *s)
{
	for (size_t k = 0; k < lm->nsecrets; k++)
		if (strstr(s, lm->secrets[k]) != NULL)
			return true;
	return false;
}

static bool
log_json_has_secret(struct logmgr *lm, json_t *j)
{
	const char *key;
	json_t *v;
	size_t i;
	switch (json_typeof(j)) {
	case JSON_STRING:
		return log_str_has_secret(lm, json_string_value(j));
	case JSON_OBJECT:
		json_object_foreach(j, key, v) if (log_str_has_secret(lm, key) ||
		                                   log_json_has_secret(lm, v)) return true;
		return false;
	case JSON_ARRAY:
		json_array_foreach(j, i, v) if (log_json_has_secret(lm, v)) return true;
		return false;
	default:
		return false;
	}
}

/* Redacts the string values and the keys in j (which the log manager owns). */
static void
log_json_redact(struct logmgr *lm, json_t *j, struct log_scratch *sc)
{
	const char *key;
	json_t *v;
	size_t i;
	switch (json_typeof(j)) {
	case JSON_STRING: {
		const char *s = json_string_value(j);
		const char *r = log_redact_str(lm, s, &sc->tmp, &sc->line);
		if (r != s)
			json_string_set(j, r);
		break;
	}
	case JSON_OBJECT: {
		json_t *renamed = NULL; /* keys that hold a secret: renamed after the walk */
		json_object_foreach(j, key, v)
		{
			log_json_redact(lm, v, sc);
			if (log_str_has_secret(lm, key)) {
				if (renamed == NULL)
					renamed = json_array();
				json_array_append_new(renamed, json_string(key));
			}
		}
		json_t *k;
		json_array_foreach(renamed, i, k)
		{
			const char *old = json_string_value(k);
			json_t *val = json_incref(json_object_get(j, old));
			json_object_del(j, old);
			json_object_set_new(j, log_redact_str(lm, old, &sc->tmp, &sc->line), val);
		}
		json_decref(renamed);
		break;
	}
	case JSON_ARRAY:
		json_array_foreach(j, i, v) log_json_redact(lm, v, sc);
		break;
	default:
		break;
	}
}

/* Returns the cleaned fields to log: an object, a copy when redaction must
 * not touch the caller's (possibly shared) value, or NULL.  Steals fields. */
static json_t *
log_prepare_fields(struct logmgr *lm, json_t *fields, struct log_scratch *sc)
{
	if (fields == NULL)
		return NULL;
	if (!json_is_object(fields)) {
		json_t *o = json_object();
		json_object_set_new(o, "value", fields);
		fields = o;
	}
	if (lm->nsecrets > 0 && log_json_has_secret(lm, fields)) {
		json_t *copy = json_deep_copy(fields);
		json_decref(fields);
		fields = copy;
		log_json_redact(lm, fields, sc);
	}
	return fields;
}

/* Writes the ISO 8601 time of ts into out (at least 32 bytes). */
static void
log_iso(struct logmgr *lm, int64_t ts, char *out)
{
	int64_t sec = ts / 1000;
	if (sec != lm->iso_sec) {
		time_t t = (time_t)sec;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(lm->iso_prefix, sizeof lm->iso_prefix, "%Y-%m-%dT%H:%M:%S", &tm);
		lm->iso_sec = sec;
	}
	snprintf(out, 32, "%s.%03dZ", lm->iso_prefix, (int)(ts % 1000));
}

/* jansson dump callback appending to a struct buf. */
static int
log_dump_cb(const char *p, size_t n, void *arg)
{
	buf_add(arg, p, n);
	return 0;
}

/* Appends a field value for the stderr line: plain strings bare, others as
 * compact JSON. */
static void
log_stderr_value(struct buf *b, json_t *v)
{
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		bool bare = *s != '\0';
		for (const char *p = s; *p != '\0' && bare; p++)
			if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\')
				bare = false;
		if (bare)
			buf_adds(b, s);
		else
			buf_add_json_str(b, s);
	} else
		json_dump_callback(v, log_dump_cb, b,
		                   JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
}

/* Writes the buffered lines of the file and stderr sinks. */
void
logmgr_flush(struct logmgr *lm)
{
	if (lm->out_err.len > 0) {
		log_err_write(lm, lm->out_err.data, lm->out_err.len);
		lm->out_err.len = 0;
	}
	if (lm->out_file.len > 0) {
		if (lm->fd == -1 || log_write_all(lm->fd, lm->out_file.data, lm->out_file.len) != 0)
			lm->stats.file_errors++;
		lm->out_file.len = 0;
	}
}

/* A sink's line: written now, or gathered until the end of the turn. */
static void
log_out(struct logmgr *lm, int fd, struct buf *out, const struct buf *line, bool now)
{
	if (lm->prepare == NULL) {
		if (fd == STDERR_FILENO)
			log_err_write(lm, line->data, line->len);
		else if (log_write_all(fd, line->data, line->len) != 0)
			lm->stats.file_errors++;
		return;
	}
	buf_add(out, line->data, line->len);
	if (now || out->len >= LOG_OUT_MAX)
		logmgr_flush(lm);
}

static void
log_prepare_cb(uv_prepare_t *h)
{
	if (h->data != NULL)
		logmgr_flush(h->data);
}

static void
log_prepare_closed(uv_handle_t *h)
{
	free(h);
}

void
logmgr_use_loop(struct logmgr *lm, uv_loop_t *loop)
{
	if (lm->prepare != NULL)
		return;
	lm->prepare = xmalloc(sizeof *lm->prepare);
	uv_prepare_init(loop, lm->prepare);
	lm->prepare->data = lm;
	uv_prepare_start(lm->prepare, log_prepare_cb);
	uv_unref((uv_handle_t *)lm->prepare); /* it never keeps the loop alive */
}

void
logmgr_leave_loop(struct logmgr *lm)
{
	logmgr_flush(lm);
	if (lm->prepare == NULL)
		return;
	lm->prepare->data = NULL;
	uv_close((uv_handle_t *)lm->prepare, log_prepare_closed);
	lm->prepare = NULL;
}

/* "2026-11-21T07:08:09.123Z INFO  source: msg k=v" on stderr. */
static void
log_sink_stderr(const struct log_record *rec, const char *iso, struct buf *b)
{
	b->len = 0;
	buf_adds(b, iso);
	buf_add(b, " ", 1);
	buf_adds(b, log_level_tags[rec->level]);
	buf_add(b, " ", 1);
	buf_add_visible(b, rec->source);
	buf_add(b, ": ", 2);
	buf_add_visible(b, rec->msg);
	if (rec->fields != NULL) {
		const char *key;
		json_t *v;
		json_object_foreach(rec->fields, key, v)
		{
			buf_add(b, " ", 1);
			buf_adds(b, key);
			buf_add(b, "=", 1);
			log_stderr_value(b, v);
		}
	}
	buf_add(b, "\n", 1);
}

/* One JSON object per line, rotated by size. */
static void
log_sink_file(struct logmgr *lm, const struct log_record *rec, const char *iso,
              struct log_scratch *sc)
{
	struct buf *b = &sc->line;
	b->len = 0;
	buf_add(b, "{\"ts\":\"", 7);
	buf_adds(b, iso);
	buf_add(b, "\",\"level\":\"", 11);
	buf_adds(b, log_level_name(rec->level));
	buf_add(b, "\",\"source\":", 11);
	buf_add_json_str(b, rec->source);
	buf_add(b, ",\"msg\":", 7);
	buf_add_json_str(b, rec->msg);
	if (rec->fields != NULL) {
		buf_add(b, ",\"fields\":", 10);
		buf_add(b, sc->fields.data, sc->fields.len);
	}
	buf_add(b, "}\n", 2);

	if (lm->max_size > 0 && lm->file_size > 0 && lm->file_size + b->len > lm->max_size)
		log_rotate(lm);
	if (lm->fd == -1) {
		lm->stats.file_errors++;
		return;
	}
	log_out(lm, lm->fd, &lm->out_file, b, rec->level >= LVL_WARN);
	lm->file_size += b->len;
}

/* INSERT into the store's logs table, in the group transaction. */
static void
log_sink_store(struct logmgr *lm, const struct log_record *rec, struct log_scratch *sc)
{
	lm->in_store = true;
	sqlite3_stmt *stmt = store_stmt(lm->store, "INSERT INTO logs (ts_ms, level, source, "
	                                           "msg, fields) VALUES (?, ?, ?, ?, ?)");
	if (stmt != NULL) {
		sqlite3_bind_int64(stmt, 1, rec->ts_ms);
		sqlite3_bind_int(stmt, 2, (int)rec->level);
		sqlite3_bind_text(stmt, 3, rec->source, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 4, rec->msg, -1, SQLITE_STATIC);
		if (rec->fields != NULL)
			sqlite3_bind_text(stmt, 5, sc->fields.data, (int)sc->fields.len,
			                  SQLITE_STATIC);
		store_step_write(lm->store, stmt);
	}
	lm->in_store = false;
}

/* Copies rec into the next ring slot, evicting the oldest when full.  The
 * fields are kept as their text (ftext, flen): holding the objects would
 * free each one thousands of records later, from cold memory. */
static void
log_ring_push(struct logmgr *lm, const struct log_record *rec, const char *ftext, size_t flen)
{
	struct ring_slot *slot = &lm->ring[lm->ring_next];
	size_t slen = strlen(rec->source) + 1, mlen = strlen(rec->msg) + 1;
	size_t need = slen + mlen + (ftext ? flen + 1 : 0);
	if (need > slot->cap || slot->cap > 4 * need + 1024) {
		slot->cap = (need + 63) & ~(size_t)63;
		free(slot->mem);
		slot->mem = xmalloc(slot->cap);
	}
	memcpy(slot->mem, rec->source, slen);
	memcpy(slot->mem + slen, rec->msg, mlen);
	slot->rec = *rec;
	slot->rec.source = slot->mem;
	slot->rec.msg = slot->mem + slen;
	slot->rec.fields = NULL;
	slot->rec.fields_text = NULL;
	if (ftext != NULL) {
		char *f = slot->mem + slen + mlen;
		memcpy(f, ftext, flen);
		f[flen] = '\0';
		slot->rec.fields_text = f;
	}
	lm->ring_next = (lm->ring_next + 1) % lm->ring_cap;
	if (lm->ring_count < lm->ring_cap)
		lm->ring_count++;
}

/* Calls the subscribers; they may subscribe or unsubscribe meanwhile. */
static void
log_dispatch(struct logmgr *lm, const struct log_record *rec)
{
	lm->dispatching++;
	size_t n = lm->nsubs;
	for (size_t i = 0; i < n && i < lm->nsubs; i++) {
		struct log_sub s = lm->subs[i];
		if (s.fn != NULL)
			s.fn(s.arg, rec);
	}
	if (--lm->dispatching == 0 && lm->subs_dirty)
		log_subs_compact(lm);
}

void
log_emitv(struct logmgr *lm, enum log_level level, const char *source, json_t *fields,
          const char *fmt, va_list ap)
{
	if (lm == NULL || (unsigned)level > LVL_FATAL) {
		json_decref(fields);
		return;
	}
	if (level < lm->level) {
		lm->stats.dropped_level++;
		json_decref(fields);
		return;
	}
	if (lm->depth >= LOG_MAX_DEPTH) {
		json_decref(fields);
		return;
	}
	struct log_scratch local, *sc = &lm->scratch;
	if (lm->depth++ > 0) {
		log_scratch_init(&local);
		sc = &local;
	}

	/* The message: formatted, cut, cleaned, redacted; it ends up in
	 * sc->fmt or sc->msg, so that sc->tmp and sc->line stay free. */
	va_list aq;
	va_copy(aq, ap);
	sc->fmt.len = 0;
	buf_reserve(&sc->fmt, 255);
	int n = vsnprintf(sc->fmt.data, sc->fmt.cap, fmt, aq);
	va_end(aq);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sc->fmt.cap) {
		size_t want = (size_t)n < LOG_MSG_MAX ? (size_t)n : LOG_MSG_MAX;
		buf_reserve(&sc->fmt, want);
		vsnprintf(sc->fmt.data, want + 1, fmt, ap);
		n = (int)want;
	}
	sc->fmt.len = (size_t)n;
	const char *msg = sc->fmt.data;
	if (!utf8_valid(msg, sc->fmt.len) || memchr(msg, '\0', sc->fmt.len) != NULL) {
		sc->msg.len = 0;
		log_utf8_clean(&sc->msg, msg, sc->fmt.len);
		msg = buf_cstr(&sc->msg);
	}
	if (lm->nsecrets > 0) {
		const char *r = log_redact_str(lm, msg, &sc->tmp, &sc->line);
		if (r != msg) {
			sc->msg.len = 0;
			buf_adds(&sc->msg, r);
			msg = sc->msg.data;
		}
	}

	if (source == NULL)
		source = "dreamos";
	else if (!utf8_valid(source, strlen(source))) {
		sc->src.len = 0;
		log_utf8_clean(&sc->src, source, strlen(source));
		source = buf_cstr(&sc->src);
	}
	fields = log_prepare_fields(lm, fields, sc);

	struct log_record rec = {
	    .seq = ++lm->seq,
	    .ts_ms = time_wall_ms(),
	    .level = level,
	    .source = source,
	    .msg = msg,
	    .fields = fields,
	};
	lm->stats.emitted++;
	if (fields != NULL) { /* the text the ring, the file and the store keep */
		sc->fields.len = 0;
		json_dump_callback(fields, log_dump_cb, &sc->fields,
		                   JSON_COMPACT | JSON_REAL_PRECISION(15));
		rec.fields_text = buf_cstr(&sc->fields);
	}
	log_ring_push(lm, &rec, rec.fields_text, sc->fields.len);

	char iso[32];
	bool want_file = lm->path != NULL;
	bool want_store = lm->store != NULL && !lm->in_store;
	if (lm->to_stderr || want_file)
		log_iso(lm, rec.ts_ms, iso);
	if (lm->to_stderr) {
		log_sink_stderr(&rec, iso, &sc->line);
		log_out(lm, STDERR_FILENO, &lm->out_err, &sc->line, rec.level >= LVL_WARN);
	}

	if (want_file)
		log_sink_file(lm, &rec, iso, sc);
	if (want_store)
		log_sink_store(lm, &rec, sc);
	if (lm->nsubs > 0)
		log_dispatch(lm, &rec);

	json_decref(fields);
	if (sc == &local)
		log_scratch_free(&local);
	lm->depth--;
}

void
log_emit(struct logmgr *lm, enum log_level level, const char *source, json_t *fields,
         const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emitv(lm, level, source, fields, fmt, ap);
	va_end(ap);
}

size_t
logmgr_ring_count(const struct logmgr *lm)
{
	return lm->ring_count;
}

const struct log_record *
logmgr_ring_get(const struct logmgr *lm, size_t i)
{
	if (i >= lm->ring_count)
		return NULL;
	size_t start = lm->ring_count < lm->ring_cap ? 0 : lm->ring_next;
	return &lm->ring[(start + i) % lm->ring_cap].rec;
}

/* Returns a JSON string for s, cleaning invalid UTF-8. */
static json_t *
log_json_string(const char *s)
{
	size_t len = strlen(s);
	if (utf8_valid(s, len))
		return json_stringn(s, len);
	struct buf b;
	buf_init(&b);
	log_utf8_clean(&b, s, len);
	json_t *j = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return j;
}

json_t *
log_record_json(const struct log_record *rec)
{
	char iso[32];
	time_iso8601(rec->ts_ms, iso, sizeof iso);
	json_t *o = json_object();
	json_object_set_new(o, "seq", json_integer((json_int_t)rec->seq));
	json_object_set_new(o, "ts", json_string(iso));
	json_object_set_new(o, "ts_ms", json_integer(rec->ts_ms));
	json_object_set_new(o, "level", json_string(log_level_name(rec->level)));
	json_object_set_new(o, "source", log_json_string(rec->source ? rec->source : ""));
	json_object_set_new(o, "msg", log_json_string(rec->msg ? rec->msg : ""));
	if (rec->fields != NULL)
		json_object_set(o, "fields", rec->fields);
	else if (rec->fields_text != NULL)
		json_object_set_new(o, "fields", json_loads(rec->fields_text, 0, NULL));
	return o;
}

/* Returns a new array with the items of a in reverse order; frees a. */
static json_t *
log_reverse(json_t *a)
{
	json_t *r = json_array();
	for (size_t i = json_array_size(a); i > 0; i--)
		json_array_append(r, json_array_get(a, i - 1));
	json_decref(a);
	return r;
}

/* Searches the ring, newest first. */
static json_t *
log_query_ring(struct logmgr *lm, const struct log_query *q, int limit)
{
	json_t *a = json_array();
	for (size_t i = lm->ring_count; i > 0 && (int)json_array_size(a) < limit; i--) {
		const struct log_record *r = logmgr_ring_get(lm, i - 1);
		if (q->has_level && r->level < q->min_level)
			continue;
		if (q->source != NULL && strcmp(r->source, q->source) != 0)
			continue;
		if (q->grep != NULL && strstr(r->msg, q->grep) == NULL)
			continue;
		if (q->since_ms > 0 && r->ts_ms < q->since_ms)
			continue;
		json_array_append_new(a, log_record_json(r));
	}
	return log_reverse(a);
}

/* Searches the store's logs table, newest first. */
static json_t *
log_query_store(struct logmgr *lm, const struct log_query *q, int limit, char **cause)
{
	struct buf sql;
	buf_init(&sql);
	buf_adds(&sql, "SELECT id, ts_ms, level, source, msg, fields FROM logs WHERE 1");
	if (q->has_level)
		buf_adds(&sql, " AND level >= ?1");
	if (q->source != NULL)
		buf_adds(&sql, " AND source = ?2");
	if (q->grep != NULL)
		buf_adds(&sql, " AND instr(msg, ?3) > 0");
	if (q->since_ms > 0)
		buf_adds(&sql, " AND ts_ms >= ?4");
	buf_adds(&sql, " ORDER BY id DESC LIMIT ?5");
	sqlite3_stmt *stmt = store_stmt_text(lm->store, buf_cstr(&sql));
	buf_free(&sql);
	if (stmt == NULL) {
		if (cause != NULL)
			*cause =
			    xasprintf("log query failed: %s", sqlite3_errmsg(store_db(lm->store)));
		return NULL;
	}
	if (q->has_level)
		sqlite3_bind_int(stmt, 1, (int)q->min_level);
	if (q->source != NULL)
		sqlite3_bind_text(stmt, 2, q->source, -1, SQLITE_STATIC);
	if (q->grep != NULL)
		sqlite3_bind_text(stmt, 3, q->grep, -1, SQLITE_STATIC);
	if (q->since_ms > 0)
		sqlite3_bind_int64(stmt, 4, q->since_ms);
	sqlite3_bind_int(stmt, 5, limit);

	json_t *a = json_array();
	int rc;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *ftext = (const char *)sqlite3_column_text(stmt, 5);
		struct log_record r = {
		    .seq = (uint64_t)sqlite3_column_int64(stmt, 0),
		    .ts_ms = sqlite3_column_int64(stmt, 1),
		    .level = (enum log_level)sqlite3_column_int(stmt, 2),
		    .source = (const char *)sqlite3_column_text(stmt, 3),
		    .msg = (const char *)sqlite3_column_text(stmt, 4),
		    .fields = ftext ? json_loads(ftext, 0, NULL) : NULL,
		};
		if ((unsigned)r.level > LVL_FATAL)
			r.level = LVL_FATAL;
		json_array_append_new(a, log_record_json(&r));
		json_decref(r.fields);
	}
	if (rc != SQLITE_DONE) {
		if (cause != NULL)
			*cause =
			    xasprintf("log query failed: %s", sqlite3_errmsg(store_db(lm->store)));
		sqlite3_reset(stmt);
		json_decref(a);
		return NULL;
	}
	sqlite3_reset(stmt);
	return log_reverse(a);
}

json_t *
logmgr_query(struct logmgr *lm, const struct log_query *q, char **cause)
{
	static const struct log_query none;
	if (q == NULL)
		q = &none;
	int limit = q->limit > 0 ? q->limit : 100;
	if (lm->store != NULL)
		return log_query_store(lm, q, limit, cause);
	return log_query_ring(lm, q, limit);
}

void
logmgr_stats(const struct logmgr *lm, struct log_stats *out)
{
	*out = lm->stats;
}
