/* dreamscribe.c — Dreamscribe, the narrative memory of Dream.OS.
 *
 * Ingests memory fragments (agent, task, time, text, tags) from three
 * sources: devlog lines of agents (log records whose fields carry
 * "devlog": true, see PROTO_DEVLOG), task results (task.done events, and
 * the error of failed or dead tasks) and captain notes (`memory add`).
 * They are kept in the extension's own SQLite database (memory.db, 0600)
 * with an FTS5 index, so that a crash or a bug here never touches the
 * core's store.
 *
 * Fragments are linked into narrative threads: the thread of their task
 * (if any) and the thread of their agent, a run of that agent's fragments
 * where no two consecutive ones are further apart than thread_window_s.
 *
 * Commands: memory add | search | thread | insights | recall | stats.
 * Other extensions' agents (and any agent) recall fragments by sending a
 * message {"recall": TEXT, "k": N} to the in-process agent "dreamscribe"
 * (setting `agent`): the answer comes back as a message
 * {"recall": TEXT, "fragments": [...]} with reply_to set.
 *
 * Settings (extensions.dreamscribe):
 *   dir              directory of memory.db (default: RUNTIME/extensions/dreamscribe)
 *   thread_window_s  agent thread window in seconds (default 3600)
 *   agent            name of the recall agent (default "dreamscribe"; "" for none)
 *   results          ingest task results (default true)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include <dreamos/extension.h>

#define DS_VERSION "1.0"

static const struct dreamos_host *host;
static struct dreamos_ext *self; /* for helpers.h */

#include "../common/helpers.h"

static sqlite3 *db;
static char *db_path;
static int64_t window_ms = 3600 * 1000;
static int sub_id;
static char *agent_name_cfg;
static long ingested_devlog, ingested_results, ingested_notes;

/* ---- small helpers --------------------------------------------------------- */

static int64_t
now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void
iso_time(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03dZ", (int)(ms % 1000));
}

/* A value out of a JSON text through the host (NULL if absent). */
static char *
jget(const char *json, const char *path)
{
	return host->json_get(json, path);
}

static int
mkdir_p(const char *path)
{
	char *p = strdup(path);
	if (p == NULL)
		return -1;
	for (char *s = p + 1; *s; s++) {
		if (*s == '/') {
			*s = '\0';
			if (mkdir(p, 0700) != 0 && errno != EEXIST) {
				free(p);
				return -1;
			}
			*s = '/';
		}
	}
	int rc = mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
	free(p);
	return rc;
}

/* The directory of memory.db: the setting `dir`; else derived from where
 * the loader copied this object (RUNTIME/extensions/.loaded/NAME-N.so; the
 * API has no runtime-directory call); else $DREAMOS_RUNTIME. */
static char *
data_dir(struct dreamos_ext *ext)
{
	char *dir = host->config_get(ext, "dir");
	if (dir != NULL && *dir != '\0') {
		char *r = strdup(dir);
		host->free(dir);
		return r;
	}
	host->free(dir);
	Dl_info info;
	if (dladdr((void *)&data_dir, &info) != 0 && info.dli_fname != NULL) {
		const char *mark = strstr(info.dli_fname, "/extensions/.loaded/");
		if (mark != NULL) {
			char *r = NULL;
			if (asprintf(&r, "%.*s/extensions/dreamscribe",
			             (int)(mark - info.dli_fname), info.dli_fname) < 0)
				return NULL;
			return r;
		}
	}
	const char *env = getenv("DREAMOS_RUNTIME");
	if (env != NULL && *env != '\0') {
		char *r = NULL;
		if (asprintf(&r, "%s/extensions/dreamscribe", env) < 0)
			return NULL;
		return r;
	}
	return NULL;
}

/* ---- the database ------------------------------------------------------------ */

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS fragments("
    " id INTEGER PRIMARY KEY,"
    " ts_ms INTEGER NOT NULL,"
    " agent TEXT NOT NULL,"
    " task INTEGER,"
    " kind TEXT NOT NULL," /* devlog | note | result */
    " text TEXT NOT NULL,"
    " tags TEXT NOT NULL DEFAULT '',"       /* space-separated */
    " athread INTEGER NOT NULL DEFAULT 0);" /* id of the first fragment of its agent thread */
    "CREATE INDEX IF NOT EXISTS fragments_task ON fragments(task, ts_ms, id);"
    "CREATE INDEX IF NOT EXISTS fragments_agent ON fragments(agent, ts_ms, id);"
    "CREATE INDEX IF NOT EXISTS fragments_ts ON fragments(ts_ms);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS memory USING fts5("
    " text, tags, content='fragments', content_rowid='id', tokenize='unicode61');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS memory_vocab USING fts5vocab(memory, 'row');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS memory_inst USING fts5vocab(memory, 'instance');";

static void sql_stopword(sqlite3_context *ctx, int argc, sqlite3_value **argv);

/* SQL function ds_ln(X), the natural logarithm (SQLite's own ln() needs
 * SQLITE_ENABLE_MATH_FUNCTIONS). */
static void
sql_ln(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	double x = sqlite3_value_double(argv[0]);
	if (x > 0)
		sqlite3_result_double(ctx, log(x));
	else
		sqlite3_result_null(ctx);
}

static int
db_open(struct dreamos_ext *ext)
{
	char *dir = data_dir(ext);
	if (dir == NULL) {
		host->set_error(ext, "no directory for memory.db: set extensions.dreamscribe.dir");
		return -1;
	}
	if (mkdir_p(dir) != 0) {
		host->set_error(ext, "cannot create %s: %s", dir, strerror(errno));
		free(dir);
		return -1;
	}
	if (asprintf(&db_path, "%s/memory.db", dir) < 0) {
		free(dir);
		return -1;
	}
	free(dir);
	/* Created 0600 before SQLite opens it. */
	int fd = open(db_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		host->set_error(ext, "cannot create %s: %s", db_path, strerror(errno));
		return -1;
	}
	close(fd);
	if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		host->set_error(ext, "%s: %s", db_path, db ? sqlite3_errmsg(db) : "cannot open");
		sqlite3_close(db);
		db = NULL;
		return -1;
	}
	sqlite3_busy_timeout(db, 200);
	sqlite3_create_function(db, "stopword", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
	                        sql_stopword, NULL, NULL);
	sqlite3_create_function(db, "ds_ln", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_ln,
	                        NULL, NULL);
	char *err = NULL;
	if (sqlite3_exec(db, schema, NULL, NULL, &err) != SQLITE_OK) {
		host->set_error(ext, "%s: schema: %s", db_path, err ? err : "?");
		sqlite3_free(err);
		sqlite3_close(db);
		db = NULL;
		return -1;
	}
	return 0;
}

/* Normalises tags: split on commas and spaces, lower case, joined by one
 * space, duplicates dropped. */
static char *
tags_norm(const char *const *v, size_t n)
{
	size_t cap = 1;
	for (size_t i = 0; i < n; i++)
		cap += strlen(v[i]) + 1;
	char *out = calloc(1, cap);
	if (out == NULL)
		return NULL;
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		const char *s = v[i];
		while (*s) {
			while (*s == ',' || isspace((unsigned char)*s) || *s == '#')
				s++;
			const char *b = s;
			while (*s && *s != ',' && !isspace((unsigned char)*s))
				s++;
			size_t l = (size_t)(s - b);
			if (l == 0)
				continue;
			char tmp[256];
			if (l >= sizeof tmp)
				l = sizeof tmp - 1;
			for (size_t k = 0; k < l; k++)
				tmp[k] = (char)tolower((unsigned char)b[k]);
			tmp[l] = '\0';
			/* duplicate? */
			int dup = 0;
			for (const char *p = out; *p;) {
				const char *e = strchr(p, ' ');
				size_t pl = e ? (size_t)(e - p) : strlen(p);
				if (pl == l && memcmp(p, tmp, l) == 0)
					dup = 1;
				p += pl + (e != NULL);
			}
			if (dup)
				continue;
			if (len > 0)
				out[len++] = ' ';
			memcpy(out + len, tmp, l);
			len += l;
			out[len] = '\0';
		}
	}
	return out;
}

/* Stores a fragment; returns its id or 0. */
static int64_t
fragment_add(int64_t ts, const char *agent, int64_t task, const char *kind, const char *text,
             const char *tags)
{
	if (db == NULL || text == NULL || *text == '\0')
		return 0;
	if (agent == NULL || *agent == '\0')
		agent = "unknown";
	if (tags == NULL)
		tags = "";
	int64_t id = 0, athread = 0;
	sqlite3_stmt *st = NULL;
	sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	/* The agent thread: continues the agent's latest one if close enough. */
	if (sqlite3_prepare_v2(
	        db,
	        "SELECT ts_ms, athread FROM fragments WHERE agent = ?1 AND ts_ms <= ?2 "
	        "ORDER BY ts_ms DESC, id DESC LIMIT 1",
	        -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, agent, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, ts);
		if (sqlite3_step(st) == SQLITE_ROW && ts - sqlite3_column_int64(st, 0) <= window_ms)
			athread = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(
	        db,
	        "INSERT INTO fragments(ts_ms, agent, task, kind, text, tags, athread) "
	        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	        -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_int64(st, 1, ts);
	sqlite3_bind_text(st, 2, agent, -1, SQLITE_TRANSIENT);
	if (task > 0)
		sqlite3_bind_int64(st, 3, task);
	else
		sqlite3_bind_null(st, 3);
	sqlite3_bind_text(st, 4, kind, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, text, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, tags, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 7, athread);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;
	id = sqlite3_last_insert_rowid(db);
	if (athread == 0) {
		char sql[128];
		snprintf(sql, sizeof sql, "UPDATE fragments SET athread = id WHERE id = %lld",
		         (long long)id);
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	}
	if (sqlite3_prepare_v2(db, "INSERT INTO memory(rowid, text, tags) VALUES (?1, ?2, ?3)", -1,
	                       &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, tags, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail2;
	return id;
fail:
	sqlite3_finalize(st);
fail2:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return 0;
}

/* A fragment row (columns id, ts_ms, agent, task, kind, text, tags, athread
 * from column c0) as a JSON object. */
static json_t *
row_json(sqlite3_stmt *st, int c0)
{
	char ts[40];
	iso_time(sqlite3_column_int64(st, c0 + 1), ts, sizeof ts);
	json_t *tags = json_array();
	const char *t = (const char *)sqlite3_column_text(st, c0 + 6);
	while (t && *t) {
		const char *e = strchr(t, ' ');
		size_t l = e ? (size_t)(e - t) : strlen(t);
		json_array_append_new(tags, json_stringn(t, l));
		t += l + (e != NULL);
	}
	json_t *o = json_pack("{s:I,s:s,s:I,s:s,s:s,s:s,s:o,s:I}", "id",
	                      (json_int_t)sqlite3_column_int64(st, c0), "ts", ts, "ts_ms",
	                      (json_int_t)sqlite3_column_int64(st, c0 + 1), "agent",
	                      (const char *)sqlite3_column_text(st, c0 + 2), "kind",
	                      (const char *)sqlite3_column_text(st, c0 + 4), "text",
	                      (const char *)sqlite3_column_text(st, c0 + 5), "tags", tags,
	                      "agent_thread", (json_int_t)sqlite3_column_int64(st, c0 + 7));
	if (o == NULL)
		return json_object();
	if (sqlite3_column_type(st, c0 + 3) == SQLITE_NULL)
		json_object_set_new(o, "task", json_null());
	else
		json_object_set_new(o, "task", json_integer(sqlite3_column_int64(st, c0 + 3)));
	return o;
}

#define FRAG_COLS "f.id, f.ts_ms, f.agent, f.task, f.kind, f.text, f.tags, f.athread"

/* "--since": "30m", "2h", "7d", "1w", "90s", epoch seconds, or an ISO date
 * or time SQLite understands.  Returns ms or -1. */
static int64_t
parse_since(const char *s)
{
	if (s == NULL || *s == '\0')
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end != s && errno == 0 && v >= 0) {
		int64_t mult = -1;
		if (strcmp(end, "s") == 0)
			mult = 1000;
		else if (strcmp(end, "m") == 0)
			mult = 60 * 1000;
		else if (strcmp(end, "h") == 0)
			mult = 3600 * 1000;
		else if (strcmp(end, "d") == 0)
			mult = 86400 * 1000;
		else if (strcmp(end, "w") == 0)
			mult = 7 * 86400 * 1000;
		if (mult > 0)
			return now_ms() - (int64_t)(v * (double)mult);
		if (*end == '\0' && v > 100000000)
			return (int64_t)(v * 1000);
	}
	sqlite3_stmt *st = NULL;
	int64_t r = -1;
	if (sqlite3_prepare_v2(
	        db, "SELECT CAST(ROUND((julianday(?1) - 2440587.5) * 86400000) AS INTEGER)", -1,
	        &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, s, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
			r = sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	return r;
}

/* Common English words: left out of recall queries and of insights (they
 * carry no meaning of their own).  Sorted, for bsearch. */
static const char *const stopwords[] = {
    "a",    "about", "after", "again",  "all",    "also",  "am",    "an",    "and", "any",   "are",
    "as",   "at",    "be",    "been",   "before", "being", "but",   "by",    "can", "could", "did",
    "do",   "does",  "done",  "for",    "from",   "had",   "has",   "have",  "he",  "her",   "here",
    "him",  "his",   "how",   "i",      "if",     "in",    "into",  "is",    "it",  "its",   "just",
    "me",   "more",  "my",    "no",     "not",    "now",   "of",    "on",    "one", "or",    "our",
    "out",  "over",  "she",   "should", "so",     "some",  "than",  "that",  "the", "their", "them",
    "then", "there", "these", "they",   "this",   "those", "to",    "too",   "up",  "us",    "very",
    "was",  "we",    "were",  "what",   "when",   "where", "which", "while", "who", "why",   "will",
    "with", "would", "you",   "your",
};

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
is_stopword(const char *w, size_t len)
{
	char tmp[16];
	if (len >= sizeof tmp)
		return 0;
	for (size_t i = 0; i < len; i++)
		tmp[i] = (char)tolower((unsigned char)w[i]);
	tmp[len] = '\0';
	const char *k = tmp;
	return bsearch(&k, stopwords, sizeof stopwords / sizeof stopwords[0], sizeof stopwords[0],
	               cmp_str) != NULL;
}

/* SQL function stopword(TERM): 1 for a common word. */
static void
sql_stopword(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const char *t = (const char *)sqlite3_value_text(argv[0]);
	sqlite3_result_int(ctx, t != NULL && is_stopword(t, strlen(t)));
}

/* A free-text prompt as an FTS5 query: its words, quoted, joined with op
 * ("OR" or "AND"; with OR, common words are left out); NULL if none. */
static char *
fts_words(const char *text, const char *op)
{
	int skip_stop = strcmp(op, "OR") == 0;
	size_t cap = strlen(text) * 3 + 16, len = 0;
	char *q = malloc(cap + strlen(op) * strlen(text) + 16);
	if (q == NULL)
		return NULL;
	q[0] = '\0';
	const unsigned char *s = (const unsigned char *)text;
	int n = 0;
	while (*s) {
		while (*s && !(isalnum(*s) || *s >= 0x80 || *s == '_'))
			s++;
		const unsigned char *b = s;
		while (*s && (isalnum(*s) || *s >= 0x80 || *s == '_'))
			s++;
		if (s == b || (skip_stop && is_stopword((const char *)b, (size_t)(s - b))))
			continue;
		if (n++ > 0)
			len += (size_t)sprintf(q + len, " %s ", op);
		q[len++] = '"';
		memcpy(q + len, b, (size_t)(s - b));
		len += (size_t)(s - b);
		q[len++] = '"';
		q[len] = '\0';
	}
	if (n == 0) {
		free(q);
		return NULL;
	}
	return q;
}

/* Runs a ranked search; returns a JSON array or NULL with *err (static). */
static json_t *
search_run(const char *match, const char *agent, int64_t since, int limit, const char **err)
{
	static char errbuf[512];
	sqlite3_stmt *st = NULL;
	const char *sql =
	    "SELECT " FRAG_COLS ", bm25(memory) AS score, "
	    " snippet(memory, 0, '[', ']', '...', 16), highlight(memory, 1, '[', ']') "
	    "FROM memory JOIN fragments f ON f.id = memory.rowid "
	    "WHERE memory MATCH ?1 AND (?2 IS NULL OR f.agent = ?2) AND f.ts_ms >= ?3 "
	    "ORDER BY score, f.id LIMIT ?4";
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		snprintf(errbuf, sizeof errbuf, "%s", sqlite3_errmsg(db));
		*err = errbuf;
		return NULL;
	}
	sqlite3_bind_text(st, 1, match, -1, SQLITE_TRANSIENT);
	if (agent)
		sqlite3_bind_text(st, 2, agent, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, since < 0 ? INT64_MIN : since);
	sqlite3_bind_int(st, 4, limit);
	json_t *rows = json_array();
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o = row_json(st, 0);
		/* bm25() is lower for better matches; give a positive score. */
		json_object_set_new(o, "score", json_real(-sqlite3_column_double(st, 8)));
		json_object_set_new(o, "snippet",
		                    json_string((const char *)sqlite3_column_text(st, 9)));
		json_object_set_new(o, "tags_highlighted",
		                    json_string((const char *)sqlite3_column_text(st, 10)));
		json_array_append_new(rows, o);
	}
	if (rc != SQLITE_DONE) {
		snprintf(errbuf, sizeof errbuf, "%s", sqlite3_errmsg(db));
		*err = errbuf;
		json_decref(rows);
		rows = NULL;
	}
	sqlite3_finalize(st);
	return rows;
}

/* ---- ingest ------------------------------------------------------------------ */

static void
on_event(struct dreamos_ext *ext, void *arg, const char *kind, const char *json)
{
	if (strcmp(kind, "log") == 0) {
		char *dv = jget(json, "fields.devlog");
		int is = dv != NULL && strcmp(dv, "true") == 0;
		host->free(dv);
		if (!is)
			return;
		char *src = jget(json, "source"), *msg = jget(json, "msg");
		char *tms = jget(json, "ts_ms"), *task = jget(json, "fields.task");
		char *tg = jget(json, "fields.tags");
		char *tags = NULL;
		if (tg != NULL) {
			/* A string or a JSON array of strings. */
			json_t *a = json_loads(tg, JSON_DECODE_ANY, NULL);
			if (json_is_array(a)) {
				const char *v[32];
				size_t n = 0, i;
				json_t *e;
				json_array_foreach(a, i, e) if (json_is_string(e) && n < 32)
				    v[n++] = json_string_value(e);
				tags = tags_norm(v, n);
			} else {
				const char *v[1] = {tg};
				tags = tags_norm(v, 1);
			}
			json_decref(a);
		}
		int64_t ts = tms ? strtoll(tms, NULL, 10) : now_ms();
		if (fragment_add(ts, src, task ? strtoll(task, NULL, 10) : 0, "devlog", msg, tags) >
		    0)
			ingested_devlog++;
		else
			host->log(ext, DREAMOS_LOG_WARN, "devlog from %s not stored: %s",
			          src ? src : "?", db ? sqlite3_errmsg(db) : "no database");
		free(tags);
		host->free(src);
		host->free(msg);
		host->free(tms);
		host->free(task);
		host->free(tg);
		return;
	}
	int done = strcmp(kind, "task.done") == 0;
	if (!done && strcmp(kind, "task.failed") != 0 && strcmp(kind, "task.dead") != 0)
		return;
	char *id = jget(json, "id"), *title = jget(json, "title"), *agent = jget(json, "agent");
	char *res = jget(json, done ? "result" : "error");
	char *text = NULL;
	const char *what = done ? "done" : (strcmp(kind, "task.dead") == 0 ? "dead" : "failed");
	int have = res != NULL && strcmp(res, "null") != 0 && *res != '\0';
	if (asprintf(&text, "task %s %s (%s)%s%s", id ? id : "?", what, title ? title : "",
	             have ? ": " : "", have ? res : "") < 0)
		text = NULL;
	if (text != NULL &&
	    fragment_add(now_ms(), agent ? agent : "tasks", id ? strtoll(id, NULL, 10) : 0,
	                 "result", text, done ? "result" : "failure") > 0)
		ingested_results++;
	free(text);
	host->free(id);
	host->free(title);
	host->free(agent);
	host->free(res);
}

/* ---- commands ---------------------------------------------------------------- */

static int
reply_json(struct dreamos_call *call, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	if (s == NULL || host->call_reply_json(call, s) != 0) {
		free(s);
		return host->call_error(call, "cannot encode the answer");
	}
	free(s);
	return DREAMOS_CMD_OK;
}

static int
need_db(struct dreamos_call *call)
{
	if (db == NULL) {
		host->call_error(call, "memory: no database");
		return -1;
	}
	return 0;
}

/* Parses an integer option; returns def if absent, -2 if bad. */
static long long
opt_int(struct dreamos_call *call, const char *name, long long def)
{
	const char *v = host->call_opt(call, name);
	if (v == NULL)
		return def;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || *end || end == v || n < 0)
		return -2;
	return n;
}

static void
text_line(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	char *nb = realloc(*buf, *len + (size_t)n + 1);
	if (nb == NULL) {
		free(s);
		return;
	}
	memcpy(nb + *len, s, (size_t)n + 1);
	*buf = nb;
	*len += (size_t)n;
	free(s);
}

static void
fragment_line(char **buf, size_t *len, json_t *o, const char *text_key)
{
	const char *ts = json_string_value(json_object_get(o, "ts"));
	json_t *task = json_object_get(o, "task");
	char taskbuf[32] = "";
	if (json_is_integer(task))
		snprintf(taskbuf, sizeof taskbuf, " task %lld",
		         (long long)json_integer_value(task));
	char tagbuf[256] = "";
	json_t *tags = json_object_get(o, "tags");
	size_t i;
	json_t *t;
	size_t tl = 0;
	json_array_foreach(tags, i, t)
	{
		int w = snprintf(tagbuf + tl, sizeof tagbuf - tl, " #%s", json_string_value(t));
		if (w < 0 || (size_t)w >= sizeof tagbuf - tl)
			break;
		tl += (size_t)w;
	}
	text_line(buf, len, "#%lld %.19s %s%s [%s]%s\n    %s\n",
	          (long long)json_integer_value(json_object_get(o, "id")), ts ? ts : "",
	          json_string_value(json_object_get(o, "agent")), taskbuf,
	          json_string_value(json_object_get(o, "kind")), tagbuf,
	          json_string_value(json_object_get(o, text_key)));
}

static int
reply_fragments(struct dreamos_call *call, json_t *j, json_t *rows, const char *text_key,
                const char *header, const char *empty)
{
	if (host->call_flag(call, "json"))
		return reply_json(call, j);
	char *buf = NULL;
	size_t len = 0;
	if (header)
		text_line(&buf, &len, "%s\n", header);
	size_t i;
	json_t *o;
	json_array_foreach(rows, i, o) fragment_line(&buf, &len, o, text_key);
	if (json_array_size(rows) == 0)
		text_line(&buf, &len, "%s", empty);
	else if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	host->call_reply(call, buf ? buf : "");
	free(buf);
	json_decref(j);
	return DREAMOS_CMD_OK;
}

/* memory add TEXT... [--tags T]... [--task N] [--agent NAME] */
static int
cmd_add(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (need_db(call))
		return DREAMOS_CMD_ERROR;
	long long task = opt_int(call, "task", 0);
	if (task == -2)
		return host->call_error(call, "memory add: --task wants a task id");
	int64_t at = now_ms();
	const char *atv = host->call_opt(call, "at");
	if (atv != NULL && (at = parse_since(atv)) < 0)
		return host->call_error(call, "memory add: --at '%s': not a time", atv);
	char *text = args_join(call, 0);
	size_t nt = host->call_opt_count(call, "tags");
	const char **tv = calloc(nt + 1, sizeof *tv);
	for (size_t i = 0; tv && i < nt; i++)
		tv[i] = host->call_opt_at(call, "tags", i);
	char *tags = tv ? tags_norm(tv, nt) : NULL;
	free(tv);
	const char *agent = host->call_opt(call, "agent");
	int64_t id = fragment_add(at, agent ? agent : "captain", task, "note", text, tags);
	free(text);
	free(tags);
	if (id == 0)
		return host->call_error(call, "memory add: %s", sqlite3_errmsg(db));
	ingested_notes++;
	if (host->call_flag(call, "json"))
		return reply_json(call, json_pack("{s:I}", "id", (json_int_t)id));
	char msg[64];
	snprintf(msg, sizeof msg, "fragment %lld stored", (long long)id);
	host->call_reply(call, msg);
	return DREAMOS_CMD_OK;
}

/* memory search QUERY... [--agent NAME] [--since WHEN] [--limit N] */
static int
cmd_search(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (need_db(call))
		return DREAMOS_CMD_ERROR;
	long long limit = opt_int(call, "limit", 10);
	if (limit == -2 || limit == 0)
		return host->call_error(call, "memory search: --limit wants a number >= 1");
	int64_t since = -1;
	const char *s = host->call_opt(call, "since");
	if (s != NULL && (since = parse_since(s)) < 0)
		return host->call_error(call, "memory search: --since '%s': not a time", s);
	char *query = args_join(call, 0);
	const char *err = NULL;
	/* The query in FTS5 syntax first; on a syntax error, its words. */
	json_t *rows = search_run(query, host->call_opt(call, "agent"), since, (int)limit, &err);
	if (rows == NULL) {
		char *q = fts_words(query, "AND");
		if (q != NULL)
			rows =
			    search_run(q, host->call_opt(call, "agent"), since, (int)limit, &err);
		free(q);
	}
	if (rows == NULL) {
		int rv = host->call_error(call, "memory search: %s", err ? err : "bad query");
		free(query);
		return rv;
	}
	json_t *j = json_pack("{s:s,s:O}", "query", query, "results", rows);
	free(query);
	int rv = reply_fragments(call, j, rows, "snippet", NULL, "no match");
	json_decref(rows);
	return rv;
}

static json_t *
query_rows(const char *sql, int64_t a, const char *s)
{
	sqlite3_stmt *st = NULL;
	json_t *rows = json_array();
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return rows;
	if (s != NULL)
		sqlite3_bind_text(st, 1, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int64(st, 1, a);
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(rows, row_json(st, 0));
	sqlite3_finalize(st);
	return rows;
}

/* memory thread [ID] [--task N] [--agent NAME] [--by task|agent] */
static int
cmd_thread(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (need_db(call))
		return DREAMOS_CMD_ERROR;
	const char *idarg = host->call_arg(call, 0);
	long long task = opt_int(call, "task", 0);
	const char *agent = host->call_opt(call, "agent");
	const char *by = host->call_opt(call, "by");
	int nsel = (idarg != NULL) + (task != 0) + (agent != NULL);
	if (nsel != 1 || task == -2)
		return host->call_error(call,
		                        "memory thread: give one of ID, --task N, --agent NAME");
	if (by != NULL && strcmp(by, "task") != 0 && strcmp(by, "agent") != 0)
		return host->call_error(call, "memory thread: --by is task or agent");
	json_t *rows, *j;
	char header[256];
	if (idarg != NULL) {
		char *end;
		long long id = strtoll(idarg, &end, 10);
		if (*end || id <= 0)
			return host->call_error(call, "memory thread: '%s' is not a fragment id",
			                        idarg);
		sqlite3_stmt *st = NULL;
		long long ftask = 0, athread = 0;
		char *fagent = NULL;
		int found = 0;
		if (sqlite3_prepare_v2(db,
		                       "SELECT task, athread, agent FROM fragments WHERE id = ?1",
		                       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, id);
			if (sqlite3_step(st) == SQLITE_ROW) {
				found = 1;
				ftask = sqlite3_column_int64(st, 0);
				athread = sqlite3_column_int64(st, 1);
				fagent = strdup((const char *)sqlite3_column_text(st, 2));
			}
		}
		sqlite3_finalize(st);
		if (!found)
			return host->call_error(call, "memory thread: no fragment %lld", id);
		if (ftask > 0 && (by == NULL || strcmp(by, "task") == 0)) {
			rows = query_rows("SELECT " FRAG_COLS " FROM fragments f WHERE f.task = ?1 "
			                  "ORDER BY f.ts_ms, f.id",
			                  ftask, NULL);
			j = json_pack("{s:s,s:I,s:I,s:O}", "by", "task", "task", (json_int_t)ftask,
			              "fragment", (json_int_t)id, "fragments", rows);
			snprintf(header, sizeof header, "thread of task %lld (%zu fragments)",
			         ftask, json_array_size(rows));
		} else {
			rows =
			    query_rows("SELECT " FRAG_COLS " FROM fragments f WHERE f.athread = ?1 "
			               "ORDER BY f.ts_ms, f.id",
			               athread, NULL);
			j = json_pack("{s:s,s:s,s:I,s:I,s:O}", "by", "agent", "agent",
			              fagent ? fagent : "", "thread", (json_int_t)athread,
			              "fragment", (json_int_t)id, "fragments", rows);
			snprintf(header, sizeof header, "thread %lld of %s (%zu fragments)",
			         athread, fagent ? fagent : "?", json_array_size(rows));
		}
		free(fagent);
	} else if (task != 0) {
		rows = query_rows("SELECT " FRAG_COLS " FROM fragments f WHERE f.task = ?1 "
		                  "ORDER BY f.ts_ms, f.id",
		                  task, NULL);
		j = json_pack("{s:s,s:I,s:O}", "by", "task", "task", (json_int_t)task, "fragments",
		              rows);
		snprintf(header, sizeof header, "thread of task %lld (%zu fragments)", task,
		         json_array_size(rows));
	} else {
		rows = query_rows("SELECT " FRAG_COLS " FROM fragments f WHERE f.agent = ?1 "
		                  "ORDER BY f.ts_ms, f.id",
		                  0, agent);
		/* Split into its threads. */
		json_t *threads = json_array();
		size_t i;
		json_t *o, *cur = NULL;
		json_int_t curid = -1;
		json_array_foreach(rows, i, o)
		{
			json_int_t t = json_integer_value(json_object_get(o, "agent_thread"));
			if (cur == NULL || t != curid) {
				cur = json_array();
				curid = t;
				json_array_append_new(
				    threads, json_pack("{s:I,s:o}", "thread", t, "fragments", cur));
			}
			json_array_append(cur, o);
		}
		j = json_pack("{s:s,s:s,s:O,s:o}", "by", "agent", "agent", agent, "fragments", rows,
		              "threads", threads);
		snprintf(header, sizeof header, "story of %.64s (%zu fragments, %zu threads)",
		         agent, json_array_size(rows), json_array_size(threads));
	}
	int rv = reply_fragments(call, j, rows, "text", header, "(empty)");
	json_decref(rows);
	return rv;
}

/* memory insights [--agent NAME] [--since WHEN] [--period hour|day|week|month] [--top N] */
static int
cmd_insights(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (need_db(call))
		return DREAMOS_CMD_ERROR;
	const char *agent = host->call_opt(call, "agent");
	const char *period = host->call_opt(call, "period");
	long long top = opt_int(call, "top", 5);
	if (top <= 0)
		return host->call_error(call, "memory insights: --top wants a number >= 1");
	const char *fmt;
	if (period == NULL || strcmp(period, "day") == 0)
		fmt = "%Y-%m-%d", period = "day";
	else if (strcmp(period, "hour") == 0)
		fmt = "%Y-%m-%dT%H";
	else if (strcmp(period, "week") == 0)
		fmt = "%Y-W%W";
	else if (strcmp(period, "month") == 0)
		fmt = "%Y-%m";
	else if (strcmp(period, "all") == 0)
		fmt = "all";
	else
		return host->call_error(
		    call, "memory insights: --period is hour, day, week, month or all");
	int64_t since = -1;
	const char *s = host->call_opt(call, "since");
	if (s != NULL && (since = parse_since(s)) < 0)
		return host->call_error(call, "memory insights: --since '%s': not a time", s);
	/* Significance of a term in a period, from the FTS5 vocabulary: its
	 * document frequency in the period (fts5vocab 'instance' restricted to
	 * the period's fragments) times the log of its lift, how much more
	 * often it occurs in the period than overall (fts5vocab 'row'):
	 *   score = df_p * ln(1 + (df_p / N_p) / (df / N))
	 * Common words, numbers and terms shorter than 3 are left out. */
	const char *sql =
	    "WITH sel AS ("
	    "  SELECT id, CASE WHEN ?1 = 'all' THEN 'all' "
	    "   ELSE strftime(?1, ts_ms / 1000, 'unixepoch') END AS period "
	    "  FROM fragments WHERE (?2 IS NULL OR agent = ?2) AND ts_ms >= ?3),"
	    " np AS (SELECT period, count(*) AS n FROM sel GROUP BY period),"
	    " tot AS (SELECT count(*) AS n FROM fragments),"
	    " dp AS (SELECT sel.period, i.term, count(DISTINCT i.doc) AS df"
	    "  FROM memory_inst i JOIN sel ON sel.id = i.doc"
	    "  WHERE length(i.term) >= 3 AND NOT (i.term GLOB '[0-9]*') AND NOT stopword(i.term)"
	    "  GROUP BY sel.period, i.term),"
	    " scored AS (SELECT dp.period, dp.term, dp.df, np.n AS np, v.doc AS dfall,"
	    "  dp.df * ds_ln(1.0 + (CAST(dp.df AS REAL) / np.n) / (CAST(v.doc AS REAL) / tot.n))"
	    "   AS score"
	    "  FROM dp JOIN np ON np.period = dp.period JOIN memory_vocab v ON v.term = dp.term,"
	    "  tot),"
	    " ranked AS (SELECT *, row_number() OVER (PARTITION BY period"
	    "  ORDER BY score DESC, df DESC, term) AS rk FROM scored)"
	    "SELECT period, term, df, np, dfall, score FROM ranked WHERE rk <= ?4 "
	    "ORDER BY period, rk";
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return host->call_error(call, "memory insights: %s", sqlite3_errmsg(db));
	sqlite3_bind_text(st, 1, fmt, -1, SQLITE_TRANSIENT);
	if (agent)
		sqlite3_bind_text(st, 2, agent, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, since < 0 ? INT64_MIN : since);
	sqlite3_bind_int64(st, 4, top);
	json_t *periods = json_array(), *cur = NULL;
	char curp[64] = "";
	int rc;
	char *buf = NULL;
	size_t len = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *p = (const char *)sqlite3_column_text(st, 0);
		if (cur == NULL || strcmp(p, curp) != 0) {
			snprintf(curp, sizeof curp, "%s", p);
			cur = json_array();
			json_array_append_new(periods,
			                      json_pack("{s:s,s:I,s:o}", "period", p, "fragments",
			                                (json_int_t)sqlite3_column_int64(st, 3),
			                                "terms", cur));
			text_line(&buf, &len, "%s%s (%lld fragments):", len ? "\n" : "", p,
			          (long long)sqlite3_column_int64(st, 3));
		}
		const char *term = (const char *)sqlite3_column_text(st, 1);
		json_array_append_new(cur,
		                      json_pack("{s:s,s:I,s:I,s:f}", "term", term, "df",
		                                (json_int_t)sqlite3_column_int64(st, 2), "df_all",
		                                (json_int_t)sqlite3_column_int64(st, 4), "score",
		                                sqlite3_column_double(st, 5)));
		text_line(&buf, &len, " %s(%lld)", term, (long long)sqlite3_column_int64(st, 2));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		free(buf);
		json_decref(periods);
		return host->call_error(call, "memory insights: %s", sqlite3_errmsg(db));
	}
	if (host->call_flag(call, "json")) {
		free(buf);
		return reply_json(call, json_pack("{s:s,s:s?,s:o}", "period", period, "agent",
		                                  agent, "periods", periods));
	}
	host->call_reply(call, buf ? buf : "no fragments");
	free(buf);
	json_decref(periods);
	return DREAMOS_CMD_OK;
}

/* The top-k fragments for a prompt: its words OR'ed, ranked by bm25. */
static json_t *
recall(const char *text, const char *agent, int k, const char **err)
{
	char *q = fts_words(text, "OR");
	if (q == NULL)
		return json_array();
	json_t *rows = search_run(q, agent, -1, k, err);
	free(q);
	return rows;
}

/* The method "dreamscribe.recall" other extensions call: {"text": T,
 * "k": N, "agent": A} -> the fragments, best first. */
static char *
method_recall(struct dreamos_ext *ext, void *arg, const char *json)
{
	(void)arg;
	json_t *in = json_loads(json, 0, NULL);
	const char *text = json_string_value(json_object_get(in, "text"));
	json_int_t k = json_integer_value(json_object_get(in, "k"));
	if (text == NULL) {
		json_decref(in);
		host->set_error(ext, "recall: wants {\"text\": TEXT, \"k\": N}");
		return NULL;
	}
	const char *err = NULL;
	json_t *rows = recall(text, json_string_value(json_object_get(in, "agent")),
	                      k > 0 && k <= 100 ? (int)k : 5, &err);
	json_decref(in);
	if (rows == NULL) {
		host->set_error(ext, "recall: %s", err ? err : "failed");
		return NULL;
	}
	char *out = json_dumps(rows, JSON_COMPACT);
	json_decref(rows);
	return out;
}

/* memory recall TEXT... [--k N] [--agent NAME] */
static int
cmd_recall(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (need_db(call))
		return DREAMOS_CMD_ERROR;
	long long k = opt_int(call, "k", 5);
	if (k <= 0)
		return host->call_error(call, "memory recall: --k wants a number >= 1");
	char *text = args_join(call, 0);
	const char *err = NULL;
	json_t *rows = recall(text, host->call_opt(call, "agent"), (int)k, &err);
	if (rows == NULL) {
		free(text);
		return host->call_error(call, "memory recall: %s", err ? err : "failed");
	}
	json_t *j = json_pack("{s:s,s:O}", "recall", text, "fragments", rows);
	free(text);
	int rv = reply_fragments(call, j, rows, "text", NULL, "nothing recalled");
	json_decref(rows);
	return rv;
}

/* memory stats */
static int
cmd_stats(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	if (need_db(call))
		return DREAMOS_CMD_ERROR;
	sqlite3_stmt *st = NULL;
	long long n = 0, agents = 0, tasks = 0, terms = 0;
	if (sqlite3_prepare_v2(db,
	                       "SELECT (SELECT count(*) FROM fragments),"
	                       " (SELECT count(DISTINCT agent) FROM fragments),"
	                       " (SELECT count(DISTINCT task) FROM fragments),"
	                       " (SELECT count(*) FROM memory_vocab)",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		n = sqlite3_column_int64(st, 0);
		agents = sqlite3_column_int64(st, 1);
		tasks = sqlite3_column_int64(st, 2);
		terms = sqlite3_column_int64(st, 3);
	}
	sqlite3_finalize(st);
	json_t *j =
	    json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I}}", "db", db_path, "fragments",
	              (json_int_t)n, "agents", (json_int_t)agents, "tasks", (json_int_t)tasks,
	              "terms", (json_int_t)terms, "thread_window_s", (json_int_t)(window_ms / 1000),
	              "ingested", "devlog", (json_int_t)ingested_devlog, "results",
	              (json_int_t)ingested_results, "notes", (json_int_t)ingested_notes);
	return reply_json(call, j);
}

/* ---- the recall agent -------------------------------------------------------- */

static void
agent_on_line(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *line)
{
	char *type = jget(line, "type");
	if (type == NULL || strcmp(type, "message") != 0) {
		host->free(type);
		return;
	}
	host->free(type);
	char *id = jget(line, "id"), *from = jget(line, "from");
	char *text = jget(line, "body.recall"), *k = jget(line, "body.k");
	char *ag = jget(line, "body.agent");
	char ack[64];
	snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"id\":%s}", id ? id : "0");
	host->agent_line(ext, agent, ack);
	if (text != NULL && from != NULL && strcmp(from, "captain") != 0) {
		const char *err = NULL;
		int kk = k ? atoi(k) : 5;
		json_t *rows = recall(text, ag, kk > 0 && kk <= 100 ? kk : 5, &err);
		json_t *body =
		    rows ? json_pack("{s:s,s:o}", "recall", text, "fragments", rows)
		         : json_pack("{s:s,s:s}", "recall", text, "error", err ? err : "failed");
		json_t *out =
		    json_pack("{s:s,s:s,s:o,s:I}", "type", "send", "to", from, "body", body,
		              "reply_to", (json_int_t)(id ? strtoll(id, NULL, 10) : 0));
		char *s = json_dumps(out, JSON_COMPACT);
		if (s != NULL)
			host->agent_line(ext, agent, s);
		free(s);
		json_decref(out);
	}
	host->free(id);
	host->free(from);
	host->free(text);
	host->free(k);
	host->free(ag);
}

static const char *const recall_caps[] = {"memory.recall", NULL};

/* ---- registration ------------------------------------------------------------ */

static const struct dreamos_cmd_opt add_opts[] = {
    {"tags", DREAMOS_OPT_MULTI, "TAGS", NULL},
    {"task", DREAMOS_OPT_VALUE, "ID", "task"},
    {"agent", DREAMOS_OPT_VALUE, "NAME", "agent"},
    {"at", DREAMOS_OPT_VALUE, "WHEN", NULL},
    {NULL, 0, NULL, NULL},
};
static const struct dreamos_cmd_opt search_opts[] = {
    {"agent", DREAMOS_OPT_VALUE, "NAME", "agent"},
    {"since", DREAMOS_OPT_VALUE, "WHEN", NULL},
    {"limit", DREAMOS_OPT_VALUE, "N", NULL},
    {NULL, 0, NULL, NULL},
};
static const struct dreamos_cmd_opt thread_opts[] = {
    {"task", DREAMOS_OPT_VALUE, "ID", "task"},
    {"agent", DREAMOS_OPT_VALUE, "NAME", "agent"},
    {"by", DREAMOS_OPT_VALUE, "task|agent", "task|agent"},
    {NULL, 0, NULL, NULL},
};
static const struct dreamos_cmd_opt insights_opts[] = {
    {"agent", DREAMOS_OPT_VALUE, "NAME", "agent"},
    {"since", DREAMOS_OPT_VALUE, "WHEN", NULL},
    {"period", DREAMOS_OPT_VALUE, "PERIOD", "hour|day|week|month|all"},
    {"top", DREAMOS_OPT_VALUE, "N", NULL},
    {NULL, 0, NULL, NULL},
};
static const struct dreamos_cmd_opt recall_opts[] = {
    {"k", DREAMOS_OPT_VALUE, "N", NULL},
    {"agent", DREAMOS_OPT_VALUE, "NAME", "agent"},
    {NULL, 0, NULL, NULL},
};

static const struct dreamos_command commands[] = {
    {.name = "memory add",
     .usage = "TEXT... [--tags TAGS]... [--task ID] [--agent NAME] [--at WHEN]",
     .help = "Stores a captain note as a memory fragment (tags: comma- or space-separated, "
             "repeatable; --task links it to a task's thread; --agent files it under "
             "another agent, default captain; --at backdates it).",
     .min_args = 1,
     .max_args = -1,
     .opts = add_opts,
     .role = DREAMOS_ROLE_OPERATOR,
     .fn = cmd_add},
    {.name = "memory search",
     .usage = "QUERY... [--agent NAME] [--since WHEN] [--limit N]",
     .help = "Full-text search of the fragments (FTS5 query syntax; plain words otherwise), "
             "best first by bm25, with [highlighted] snippets.  WHEN: 30m, 2h, 7d, an ISO "
             "date or time.",
     .min_args = 1,
     .max_args = -1,
     .opts = search_opts,
     .role = DREAMOS_ROLE_OBSERVER,
     .fn = cmd_search},
    {.name = "memory thread",
     .usage = "ID | --task ID | --agent NAME [--by task|agent]",
     .help = "Prints a narrative thread in order: the thread of fragment ID (its task's, "
             "else its agent's; --by chooses), a task's, or an agent's whole story split "
             "into its threads.",
     .min_args = 0,
     .max_args = 1,
     .opts = thread_opts,
     .role = DREAMOS_ROLE_OBSERVER,
     .fn = cmd_thread},
    {.name = "memory insights",
     .usage = "[--agent NAME] [--since WHEN] [--period hour|day|week|month|all] [--top N]",
     .help = "The most significant terms of each period (document frequency in the period "
             "against the whole memory, from the FTS5 vocabulary).",
     .min_args = 0,
     .max_args = 0,
     .opts = insights_opts,
     .role = DREAMOS_ROLE_OBSERVER,
     .fn = cmd_insights},
    {.name = "memory recall",
     .usage = "TEXT... [--k N] [--agent NAME]",
     .help = "The k fragments most relevant to a prompt (any of its words, by bm25); "
             "agents get the same by sending {\"recall\": TEXT, \"k\": N} to the "
             "dreamscribe agent.",
     .min_args = 1,
     .max_args = -1,
     .opts = recall_opts,
     .role = DREAMOS_ROLE_OBSERVER,
     .fn = cmd_recall},
    {.name = "memory stats",
     .help = "Counts of fragments, agents, tasks and terms, and what was ingested.",
     .min_args = 0,
     .max_args = 0,
     .role = DREAMOS_ROLE_OBSERVER,
     .fn = cmd_stats},
};

static int
setup(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	host = h;
	self = ext;
	char *w = host->config_get(ext, "thread_window_s");
	if (w != NULL) {
		double v = strtod(w, NULL);
		if (v > 0)
			window_ms = (int64_t)(v * 1000);
		host->free(w);
	}
	if (db_open(ext) != 0)
		return -1;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (host->command_register(ext, &commands[i]) != 0) {
			host->set_error(ext, "%s: %s", commands[i].name, host->last_error(ext));
			return -1;
		}
	unsigned kinds = DREAMOS_EV_LOGS;
	char *res = host->config_get(ext, "results");
	if (res == NULL || strcmp(res, "false") != 0)
		kinds |= DREAMOS_EV_TASKS;
	host->free(res);
	sub_id = host->subscribe(ext, kinds, DREAMOS_LOG_TRACE, on_event, NULL);
	if (sub_id <= 0) {
		host->set_error(ext, "subscribe: %s", host->last_error(ext));
		return -1;
	}
	if (DREAMOS_HOST_HAS(host, method_register) &&
	    host->method_register(ext, "recall", method_recall, NULL) != 0) {
		host->set_error(ext, "method_register: %s", host->last_error(ext));
		return -1;
	}
	char *an = host->config_get(ext, "agent");
	agent_name_cfg = strdup(an ? an : "dreamscribe");
	host->free(an);
	if (*agent_name_cfg != '\0') {
		struct dreamos_agent_type t = {.size = sizeof t,
		                               .name = "dreamscribe",
		                               .description = "answers recall requests",
		                               .caps = recall_caps,
		                               .max_tasks = 0,
		                               .on_line = agent_on_line};
		if (host->agent_type_register(ext, &t) != 0 ||
		    host->agent_create(ext, "dreamscribe", agent_name_cfg, NULL, -1) != 0)
			host->log(ext, DREAMOS_LOG_WARN, "no recall agent '%s': %s", agent_name_cfg,
			          host->last_error(ext));
	}
	host->log(ext, DREAMOS_LOG_INFO, "memory in %s", db_path);
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	if (db != NULL)
		sqlite3_close(db);
	db = NULL;
	free(db_path);
	db_path = NULL;
	free(agent_name_cfg);
	agent_name_cfg = NULL;
}

HELPERS_INIT_UNDOING(setup, fini)

DREAMOS_EXTENSION(.name = "dreamscribe", .version = DS_VERSION,
                  .description = "Narrative memory: devlogs, notes and results, searchable",
                  .init = init, .fini = fini);
