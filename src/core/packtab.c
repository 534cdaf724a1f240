/* packtab.c — packed tables (see packtab.h): the block format and the
 * virtual table that reads blocks back as rows.  Built into dreamos, and
 * with PACKTAB_SQLITE_EXTENSION as the loadable SQLite module
 * dreamos_sqlite (so it uses nothing but libc and SQLite). */
#ifdef PACKTAB_SQLITE_EXTENSION
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
#else
#include <sqlite3.h>
#endif
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "packtab.h"

const struct packtab packtab_messages = {
    .name = "messages",
    .blocks = "message_blocks",
    .decl = "CREATE TABLE x(id INTEGER, ts_ms INTEGER, sender TEXT, target TEXT, "
            "priority INTEGER, mode TEXT, body TEXT, reply_to INTEGER)",
    .ncols = 8,
    .op = "INSERT INTO messages (id, ts_ms, sender, target, priority, mode, body, reply_to)",
    .insert = "INSERT INTO message_blocks (first_id, last_id, data) VALUES (?1, ?2, ?3)",
    .last_key = "SELECT last_id FROM message_blocks ORDER BY first_id DESC LIMIT 1",
};

static const struct packtab *const packtabs[] = {&packtab_messages};

/* ---- the format ---------------------------------------------------------- */

static size_t
put_varint(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (unsigned char)v;
	return n;
}

static size_t
varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Reads a varint at p (before end) into *v: its length, or 0 if cut off. */
static size_t
get_varint(const unsigned char *p, const unsigned char *end, uint64_t *v)
{
	uint64_t r = 0;
	for (size_t n = 0; n < 10 && p + n < end; n++) {
		r |= (uint64_t)(p[n] & 0x7f) << (7 * n);
		if ((p[n] & 0x80) == 0) {
			*v = r;
			return n + 1;
		}
	}
	return 0;
}

static uint64_t
zigzag(int64_t i)
{
	return (uint64_t)i << 1 ^ (uint64_t)(i >> 63);
}

static int64_t
unzigzag(uint64_t u)
{
	return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static int
grow(char **out, size_t *len, size_t *cap, size_t need)
{
	if (*len + need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 4096;
	while (c < *len + need)
		c *= 2;
	char *p = realloc(*out, c);
	if (p == NULL)
		return -1;
	*out = p;
	*cap = c;
	return 0;
}

int
packtab_begin(char **out, size_t *len, size_t *cap, int ncols)
{
	if (grow(out, len, cap, 3) != 0)
		return -1;
	(*out)[(*len)++] = 'P';
	(*out)[(*len)++] = PACKTAB_VERSION;
	(*out)[(*len)++] = (char)ncols;
	return 0;
}

int
packtab_add_row(char **out, size_t *len, size_t *cap, const struct packtab_val *v, int n)
{
	size_t body = 0;
	for (int k = 0; k < n; k++) {
		body++;
		if (v[k].type == PACKTAB_INT)
			body += varint_len(zigzag(v[k].i));
		else if (v[k].type == PACKTAB_TEXT)
			body += varint_len(v[k].len) + v[k].len;
	}
	if (grow(out, len, cap, varint_len(body) + body) != 0)
		return -1;
	unsigned char *p = (unsigned char *)*out + *len;
	p += put_varint(p, body);
	for (int k = 0; k < n; k++) {
		*p++ = (unsigned char)v[k].type;
		if (v[k].type == PACKTAB_INT) {
			p += put_varint(p, zigzag(v[k].i));
		} else if (v[k].type == PACKTAB_TEXT) {
			p += put_varint(p, v[k].len);
			if (v[k].len > 0)
				memcpy(p, v[k].s, v[k].len);
			p += v[k].len;
		}
	}
	*len = (size_t)((char *)p - *out);
	return 0;
}

size_t
packtab_row(const unsigned char *p, const unsigned char *end, int ncols, struct packtab_val *v)
{
	uint64_t body;
	size_t h = get_varint(p, end, &body);
	if (h == 0 || body > (uint64_t)(end - p - (ptrdiff_t)h))
		return 0;
	const unsigned char *q = p + h, *row_end = q + body;
	for (int k = 0; k < ncols; k++) {
		if (q >= row_end)
			return 0;
		uint64_t u;
		size_t m;
		v[k].type = (enum packtab_type) * q++;
		switch (v[k].type) {
		case PACKTAB_NULL:
			break;
		case PACKTAB_INT:
			if ((m = get_varint(q, row_end, &u)) == 0)
				return 0;
			v[k].i = unzigzag(u);
			q += m;
			break;
		case PACKTAB_TEXT:
			if ((m = get_varint(q, row_end, &u)) == 0 ||
			    u > (uint64_t)(row_end - q - (ptrdiff_t)m))
				return 0;
			v[k].s = (const char *)q + m;
			v[k].len = (size_t)u;
			q += m + u;
			break;
		default:
			return 0;
		}
	}
	return h + (size_t)body;
}

/* ---- the virtual table --------------------------------------------------- */

/* idxNum bits (pt_best_index -> pt_filter): which bounds on the key are
 * in argv, in this order, and the direction. */
#define PT_EQ   1
#define PT_LO   2
#define PT_HI   4
#define PT_DESC 8

struct pt_vtab {
	sqlite3_vtab base;
	sqlite3 *db;
	const struct packtab *pt;
	/* The blocks query (ascending, descending) when no cursor has it:
	 * a lookup by id, as in a join, then prepares nothing. */
	sqlite3_stmt *spare[2];
};

struct pt_cursor {
	sqlite3_vtab_cursor base;
	sqlite3_stmt *stmt; /* on the current block's row */
	bool desc, eof;
	int64_t lo, hi, key;
	const unsigned char *blob; /* the current block: valid while stmt stays on it */
	size_t blen;
	size_t *offs; /* its rows' offsets */
	size_t n, cap;
	long next; /* the row to visit next */
	struct packtab_val v[PACKTAB_COLS_MAX];
};

static int
pt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
           char **err)
{
	(void)argc;
	(void)argv;
	(void)err;
	const struct packtab *pt = aux;
	int rc = sqlite3_declare_vtab(db, pt->decl);
	if (rc != SQLITE_OK)
		return rc;
	struct pt_vtab *t = sqlite3_malloc(sizeof *t);
	if (t == NULL)
		return SQLITE_NOMEM;
	memset(t, 0, sizeof *t);
	t->db = db;
	t->pt = pt;
	*out = &t->base;
	return SQLITE_OK;
}

static int
pt_disconnect(sqlite3_vtab *tab)
{
	struct pt_vtab *t = (struct pt_vtab *)tab;
	sqlite3_finalize(t->spare[0]);
	sqlite3_finalize(t->spare[1]);
	sqlite3_free(t);
	return SQLITE_OK;
}

/* Bounds on the key (column 0, or the rowid, which is the key) become
 * arguments; SQLite still checks each row against them (omit stays 0), so
 * pt_filter's bounds need only hold every matching row. */
static int
pt_best_index(sqlite3_vtab *tab, sqlite3_index_info *ix)
{
	(void)tab;
	int eq = -1, lo = -1, hi = -1;
	for (int i = 0; i < ix->nConstraint; i++) {
		const struct sqlite3_index_constraint *c = &ix->aConstraint[i];
		if (!c->usable || (c->iColumn != 0 && c->iColumn != -1))
			continue;
		switch (c->op) {
		case SQLITE_INDEX_CONSTRAINT_EQ:
			eq = eq < 0 ? i : eq;
			break;
		case SQLITE_INDEX_CONSTRAINT_GT:
		case SQLITE_INDEX_CONSTRAINT_GE:
			lo = lo < 0 ? i : lo;
			break;
		case SQLITE_INDEX_CONSTRAINT_LT:
		case SQLITE_INDEX_CONSTRAINT_LE:
			hi = hi < 0 ? i : hi;
			break;
		default:
			break;
		}
	}
	int num = 0, args = 0;
	double rows = 1e6;
	if (eq >= 0) {
		ix->aConstraintUsage[eq].argvIndex = ++args;
		num |= PT_EQ;
		rows = 1;
		ix->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
	} else {
		if (lo >= 0) {
			ix->aConstraintUsage[lo].argvIndex = ++args;
			num |= PT_LO;
			rows /= 10;
		}
		if (hi >= 0) {
			ix->aConstraintUsage[hi].argvIndex = ++args;
			num |= PT_HI;
			rows /= 10;
		}
	}
	if (ix->nOrderBy == 1 && (ix->aOrderBy[0].iColumn == 0 || ix->aOrderBy[0].iColumn == -1)) {
		ix->orderByConsumed = 1;
		if (ix->aOrderBy[0].desc)
			num |= PT_DESC;
	}
	ix->idxNum = num;
	ix->estimatedRows = (sqlite3_int64)rows;
	ix->estimatedCost = rows * 2 + 10;
	return SQLITE_OK;
}

static int
pt_open(sqlite3_vtab *tab, sqlite3_vtab_cursor **out)
{
	(void)tab;
	struct pt_cursor *c = sqlite3_malloc(sizeof *c);
	if (c == NULL)
		return SQLITE_NOMEM;
	memset(c, 0, sizeof *c);
	c->eof = true;
	*out = &c->base;
	return SQLITE_OK;
}

/* Gives the cursor's query back to its table (or finalizes it). */
static void
pt_release(struct pt_cursor *c)
{
	if (c->stmt == NULL)
		return;
	struct pt_vtab *t = (struct pt_vtab *)c->base.pVtab;
	sqlite3_reset(c->stmt);
	if (t->spare[c->desc] == NULL)
		t->spare[c->desc] = c->stmt;
	else
		sqlite3_finalize(c->stmt);
	c->stmt = NULL;
	c->blob = NULL;
}

static int
pt_close(sqlite3_vtab_cursor *cur)
{
	struct pt_cursor *c = (struct pt_cursor *)cur;
	pt_release(c);
	sqlite3_free(c->offs);
	sqlite3_free(c);
	return SQLITE_OK;
}

static int
pt_corrupt(struct pt_cursor *c)
{
	struct pt_vtab *t = (struct pt_vtab *)c->base.pVtab;
	sqlite3_free(t->base.zErrMsg);
	t->base.zErrMsg =
	    sqlite3_mprintf("%s: a malformed block in %s", t->pt->name, t->pt->blocks);
	return SQLITE_CORRUPT_VTAB;
}

/* Takes the block the query is on: checks its header, finds its rows. */
static int
pt_load_block(struct pt_cursor *c)
{
	struct pt_vtab *t = (struct pt_vtab *)c->base.pVtab;
	c->blob = sqlite3_column_blob(c->stmt, 0);
	c->blen = (size_t)sqlite3_column_bytes(c->stmt, 0);
	c->n = 0;
	if (c->blen < 3 || c->blob[0] != 'P' || c->blob[1] != PACKTAB_VERSION ||
	    c->blob[2] != t->pt->ncols)
		return pt_corrupt(c);
	const unsigned char *p = c->blob + 3, *end = c->blob + c->blen;
	while (p < end) {
		uint64_t body;
		size_t h = get_varint(p, end, &body);
		if (h == 0 || body > (uint64_t)(end - p - (ptrdiff_t)h))
			return pt_corrupt(c);
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 256;
			size_t *o = sqlite3_realloc64(c->offs, cap * sizeof *o);
			if (o == NULL)
				return SQLITE_NOMEM;
			c->offs = o;
			c->cap = cap;
		}
		c->offs[c->n++] = (size_t)(p - c->blob);
		p += h + body;
	}
	/* The first row to visit: by a binary search on the keys (the block
	 * that holds lo may begin far below it). */
	long a = 0, b = (long)c->n;
	while (a < b) {
		long mid = a + (b - a) / 2;
		struct packtab_val k;
		if (packtab_row(c->blob + c->offs[mid], end, 1, &k) == 0 || k.type != PACKTAB_INT)
			return pt_corrupt(c);
		if (c->desc ? k.i <= c->hi : k.i < c->lo)
			a = mid + 1;
		else
			b = mid;
	}
	c->next = c->desc ? a - 1 : a;
	return SQLITE_OK;
}

/* Moves to the next row within the bounds, block by block. */
static int
pt_next(sqlite3_vtab_cursor *cur)
{
	struct pt_cursor *c = (struct pt_cursor *)cur;
	struct pt_vtab *t = (struct pt_vtab *)cur->pVtab;
	for (;;) {
		if (c->blob != NULL && c->next >= 0 && c->next < (long)c->n) {
			const unsigned char *p = c->blob + c->offs[c->next];
			c->next += c->desc ? -1 : 1;
			if (packtab_row(p, c->blob + c->blen, t->pt->ncols, c->v) == 0 ||
			    c->v[0].type != PACKTAB_INT)
				return pt_corrupt(c);
			int64_t key = c->v[0].i;
			if (c->desc ? key > c->hi : key < c->lo)
				continue;
			if (c->desc ? key < c->lo : key > c->hi)
				break;
			c->key = key;
			return SQLITE_OK;
		}
		int rc = sqlite3_step(c->stmt);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			sqlite3_free(t->base.zErrMsg);
			t->base.zErrMsg = sqlite3_mprintf("%s", sqlite3_errmsg(t->db));
			return rc;
		}
		if ((rc = pt_load_block(c)) != SQLITE_OK)
			return rc;
	}
	c->eof = true;
	c->blob = NULL;
	return SQLITE_OK;
}

/* A bound from a constraint's value: whether it bounds the key at all
 * (SQLite checks the rest), and the integer bound that holds every key
 * it lets through. */
static bool
pt_bound(sqlite3_value *v, bool upper, int64_t *out)
{
	switch (sqlite3_value_numeric_type(v)) {
	case SQLITE_INTEGER:
		*out = sqlite3_value_int64(v);
		return true;
	case SQLITE_FLOAT: {
		double d = upper ? floor(sqlite3_value_double(v)) : ceil(sqlite3_value_double(v));
		if (d != d || d >= 9.2e18 || d <= -9.2e18)
			return false;
		*out = (int64_t)d;
		return true;
	}
	default:
		return false;
	}
}

static int
pt_filter(sqlite3_vtab_cursor *cur, int num, const char *str, int argc, sqlite3_value **argv)
{
	(void)str;
	struct pt_cursor *c = (struct pt_cursor *)cur;
	struct pt_vtab *t = (struct pt_vtab *)cur->pVtab;
	pt_release(c);
	c->desc = (num & PT_DESC) != 0;
	c->lo = INT64_MIN;
	c->hi = INT64_MAX;
	c->eof = false;
	int a = 0;
	int64_t x;
	if ((num & PT_EQ) && a < argc && pt_bound(argv[a++], false, &x))
		c->lo = c->hi = x;
	if ((num & PT_LO) && a < argc && pt_bound(argv[a++], false, &x))
		c->lo = x;
	if ((num & PT_HI) && a < argc && pt_bound(argv[a++], true, &x))
		c->hi = x;
	c->stmt = t->spare[c->desc];
	t->spare[c->desc] = NULL;
	if (c->stmt == NULL) {
		/* From the block that holds lo (the last to start at or below
		 * it) to the last that starts at or below hi. */
		char *sql = sqlite3_mprintf(
		    PACKTAB_SQL_MARK
		    "SELECT data FROM \"%w\" WHERE first_id >= coalesce((SELECT max(first_id) FROM "
		    "\"%w\" WHERE first_id <= ?1), ?1) AND first_id <= ?2 ORDER BY first_id %s",
		    t->pt->blocks, t->pt->blocks, c->desc ? "DESC" : "ASC");
		if (sql == NULL)
			return SQLITE_NOMEM;
		int rc =
		    sqlite3_prepare_v3(t->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->stmt, NULL);
		sqlite3_free(sql);
		if (rc != SQLITE_OK) {
			sqlite3_free(t->base.zErrMsg);
			t->base.zErrMsg = sqlite3_mprintf("%s", sqlite3_errmsg(t->db));
			return rc;
		}
	}
	sqlite3_bind_int64(c->stmt, 1, c->lo);
	sqlite3_bind_int64(c->stmt, 2, c->hi);
	if (c->lo > c->hi) {
		c->eof = true;
		return SQLITE_OK;
	}
	return pt_next(cur);
}

static int
pt_eof(sqlite3_vtab_cursor *cur)
{
	return ((struct pt_cursor *)cur)->eof;
}

static int
pt_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i)
{
	struct pt_cursor *c = (struct pt_cursor *)cur;
	const struct packtab_val *v = &c->v[i];
	if (v->type == PACKTAB_INT)
		sqlite3_result_int64(ctx, v->i);
	else if (v->type == PACKTAB_TEXT)
		sqlite3_result_text64(ctx, v->s, v->len, SQLITE_TRANSIENT, SQLITE_UTF8);
	return SQLITE_OK;
}

static int
pt_rowid(sqlite3_vtab_cursor *cur, sqlite_int64 *out)
{
	*out = ((struct pt_cursor *)cur)->key;
	return SQLITE_OK;
}

/* Eponymous only (no xCreate): the table exists on every connection with
 * the module, under the module's name; read-only (no xUpdate). */
static sqlite3_module pt_module = {
    .iVersion = 0,
    .xConnect = pt_connect,
    .xBestIndex = pt_best_index,
    .xDisconnect = pt_disconnect,
    .xDestroy = pt_disconnect,
    .xOpen = pt_open,
    .xClose = pt_close,
    .xFilter = pt_filter,
    .xNext = pt_next,
    .xEof = pt_eof,
    .xColumn = pt_column,
    .xRowid = pt_rowid,
};

/* True if stmt is one the virtual table prepared for itself (see
 * PACKTAB_SQL_MARK). */
bool
packtab_owns(struct sqlite3_stmt *stmt)
{
	const char *sql = sqlite3_sql(stmt);
	return sql != NULL && strncmp(sql, PACKTAB_SQL_MARK, strlen(PACKTAB_SQL_MARK)) == 0;
}

int
packtab_register(struct sqlite3 *db)
{
	for (size_t i = 0; i < sizeof packtabs / sizeof packtabs[0]; i++) {
		int rc = sqlite3_create_module_v2(db, packtabs[i]->name, &pt_module,
		                                  (void *)packtabs[i], NULL);
		if (rc != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

#ifdef PACKTAB_SQLITE_EXTENSION
/* The loadable module's entry point (`.load dreamos_sqlite` in the sqlite3
 * shell, load_extension() elsewhere). */
int sqlite3_extension_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

int
sqlite3_extension_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
	SQLITE_EXTENSION_INIT2(api);
	(void)err;
	return packtab_register(db);
}
#endif
