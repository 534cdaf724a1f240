/* auth.c — API keys, session tokens, rate limits and the audit chain. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "auth.h"
#include "bridge.h"
#include "intmap.h"
#include "log.h"
#include "orch.h"
#include "proto.h"
#include "store.h"
#include "strmap.h"

struct bucket {
	double tokens;
	int64_t last_ms;
};

/* A session token that was found valid: what auth_token_check needs to
 * answer without the store.  Dropped when its key is revoked. */
struct cached_token {
	int64_t expires_ms;
	struct auth_principal who;
};

/* Failed authentications allowed per peer address and minute (the bucket
 * holds as many: a burst of that size, then one every 3 s). */
#define AUTH_FAIL_PER_MIN 20.0
/* Peer buckets and cached tokens kept before a sweep. */
#define AUTH_MAP_MAX 4096

struct auth {
	struct orch *o;
	struct intmap buckets; /* key id -> bucket */
	struct strmap fails;   /* peer address -> bucket of failed authentications */
	struct strmap tokens;  /* token hash -> cached_token */
	char last_hash[65];    /* head of the audit chain */
	int64_t last_id;       /* id of the newest audit row */
	bool have_last;
};

static const char *const role_names[] = {"observer", "operator", "captain", "agent"};

const char *
auth_role_name(enum auth_role r)
{
	return (unsigned)r < nitems(role_names) ? role_names[r] : "?";
}

bool
auth_role_parse(const char *s, enum auth_role *out)
{
	for (size_t i = 0; i < nitems(role_names); i++) {
		if (strcmp(s, role_names[i]) == 0) {
			*out = (enum auth_role)i;
			return true;
		}
	}
	return false;
}

int64_t
auth_now_ms(void)
{
	int64_t now = time_wall_ms();
	const char *f = getenv("DREAMOS_TEST_CLOCK_FILE");
	if (f != NULL && *f != '\0') {
		FILE *fp = fopen(f, "r");
		if (fp != NULL) {
			double off = 0;
			if (fscanf(fp, "%lf", &off) == 1)
				now += (int64_t)(off * 1000.0);
			fclose(fp);
		}
	}
	return now;
}

/* Hex SHA-256 of data into out (65 bytes). */
static void
sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;
	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[64] = '\0';
}

/* A random secret with a prefix, base64url without padding. */
static char *
random_secret(const char *prefix)
{
	unsigned char r[32];
	if (getrandom(r, sizeof r, 0) != sizeof r)
		return NULL;
	static const char *const alphabet =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char body[64];
	int k = 0, bits = 0;
	unsigned acc = 0;
	for (size_t i = 0; i < sizeof r; i++) {
		acc = (acc << 8) | r[i];
		bits += 8;
		while (bits >= 6) {
			body[k++] = alphabet[(acc >> (bits - 6)) & 63];
			bits -= 6;
		}
	}
	if (bits > 0)
		body[k++] = alphabet[(acc << (6 - bits)) & 63];
	body[k] = '\0';
	return xasprintf("%s%s", prefix, body);
}

struct auth *
auth_new(struct orch *o)
{
	struct auth *a = xcalloc(1, sizeof *a);
	a->o = o;
	intmap_init(&a->buckets);
	strmap_init(&a->fails);
	strmap_init(&a->tokens);
	return a;
}

/* Frees every value of m and empties it. */
static void
strmap_clear_free(struct strmap *m)
{
	size_t it = 0;
	void *v;
	while (strmap_next(m, &it, NULL, &v))
		free(v);
	strmap_free(m);
	strmap_init(m);
}

void
auth_free(struct auth *a)
{
	if (a == NULL)
		return;
	size_t it = 0;
	void *v;
	while (intmap_next(&a->buckets, &it, NULL, &v))
		free(v);
	intmap_free(&a->buckets);
	strmap_clear_free(&a->fails);
	strmap_free(&a->fails);
	strmap_clear_free(&a->tokens);
	strmap_free(&a->tokens);
	free(a);
}

/* ---- keys ------------------------------------------------------------- */

char *
auth_key_create(struct auth *a, const char *name, enum auth_role role, int64_t *id, char **cause)
{
	if (!proto_valid_agent_name(name)) {
		*cause = xasprintf("invalid key name '%s' (letters, digits, '_', '.', '-')", name);
		return NULL;
	}
	char *key = random_secret("dos_");
	if (key == NULL) {
		*cause = xstrdup("no randomness available");
		return NULL;
	}
	char hash[65];
	sha256_hex(key, strlen(key), hash);
	struct store *st = orch_store(a->o);
	sqlite3_stmt *s = store_stmt(st, "INSERT INTO apikeys (name, role, hash, created_ms) "
	                                 "VALUES (?1, ?2, ?3, ?4)");
	if (s == NULL) {
		free(key);
		*cause = xstrdup("store failure");
		return NULL;
	}
	sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 2, auth_role_name(role), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, hash, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 4, time_wall_ms());
	if (store_step_write(st, s) != SQLITE_DONE) {
		free(key);
		*cause = xasprintf("key not stored: %s", store_state(st));
		return NULL;
	}
	*id = sqlite3_last_insert_rowid(store_db(st));
	logmgr_add_secret(orch_log(a->o), key);
	return key;
}

int
auth_key_revoke(struct auth *a, int64_t id, char **cause)
{
	struct store *st = orch_store(a->o);
	sqlite3_stmt *s = store_stmt(st, "UPDATE apikeys SET revoked_ms = ?1 WHERE id = ?2 AND "
	                                 "revoked_ms IS NULL");
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, time_wall_ms());
	sqlite3_bind_int64(s, 2, id);
	store_step_write(st, s);
	if (sqlite3_changes(store_db(st)) == 0) {
		*cause = xasprintf("no active API key with id %lld", (long long)id);
		return -1;
	}
	/* Its tokens are no longer good: forget the ones cached. */
	struct strmap keep;
	strmap_init(&keep);
	size_t it = 0;
	const char *k;
	void *v;
	while (strmap_next(&a->tokens, &it, &k, &v)) {
		struct cached_token *ct = v;
		if (ct->who.key_id == id)
			free(ct);
		else
			strmap_set(&keep, k, ct);
	}
	strmap_free(&a->tokens);
	a->tokens = keep;
	return 0;
}

json_t *
auth_key_list(struct auth *a)
{
	sqlite3_stmt *s = store_stmt(orch_store(a->o), "SELECT id, name, role, created_ms, "
	                                               "revoked_ms, last_used_ms FROM apikeys "
	                                               "ORDER BY id");
	json_t *rows = json_array();
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		char created[40], used[40] = "-";
		time_iso8601(sqlite3_column_int64(s, 3), created, sizeof created);
		if (sqlite3_column_type(s, 5) != SQLITE_NULL)
			time_iso8601(sqlite3_column_int64(s, 5), used, sizeof used);
		json_array_append_new(
		    rows, json_pack("{s:I,s:s,s:s,s:s,s:b,s:s}", "id",
		                    (json_int_t)sqlite3_column_int64(s, 0), "name",
		                    (const char *)sqlite3_column_text(s, 1), "role",
		                    (const char *)sqlite3_column_text(s, 2), "created", created,
		                    "revoked", sqlite3_column_type(s, 4) != SQLITE_NULL,
		                    "last_used", used));
	}
	if (s != NULL)
		sqlite3_reset(s);
	return rows;
}

/* ---- tokens ----------------------------------------------------------- */

char *
auth_token_issue(struct auth *a, const char *api_key, struct auth_principal *who,
                 double *expires_in, char **cause)
{
	char hash[65];
	sha256_hex(api_key, strlen(api_key), hash);
	struct store *st = orch_store(a->o);
	sqlite3_stmt *s = store_stmt(st, "SELECT id, name, role, revoked_ms, hash FROM apikeys "
	                                 "WHERE hash = ?1");
	if (s == NULL)
		return NULL;
	sqlite3_bind_text(s, 1, hash, -1, SQLITE_TRANSIENT);
	bool found = false, revoked = false;
	if (sqlite3_step(s) == SQLITE_ROW) {
		/* The lookup is by hash; compare in constant time all the same. */
		found = const_time_eq(sqlite3_column_text(s, 4), hash, 64);
		who->key_id = sqlite3_column_int64(s, 0);
		snprintf(who->name, sizeof who->name, "%s", sqlite3_column_text(s, 1));
		auth_role_parse((const char *)sqlite3_column_text(s, 2), &who->role);
		revoked = sqlite3_column_type(s, 3) != SQLITE_NULL;
	}
	sqlite3_reset(s);
	if (!found || revoked) {
		*cause = xstrdup(found ? "revoked API key" : "invalid API key");
		return NULL;
	}
	char *token = random_secret("dost_");
	char thash[65];
	sha256_hex(token, strlen(token), thash);
	double ttl = orch_config(a->o)->security.token_expiry;
	s = store_stmt(st, "INSERT INTO tokens (hash, key_id, expires_ms) VALUES (?1, ?2, ?3)");
	if (s != NULL) {
		sqlite3_bind_text(s, 1, thash, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 2, who->key_id);
		sqlite3_bind_int64(s, 3, auth_now_ms() + (int64_t)(ttl * 1000.0));
		store_step_write(st, s);
	}
	s = store_stmt(st, "UPDATE apikeys SET last_used_ms = ?1 WHERE id = ?2");
	if (s != NULL) {
		sqlite3_bind_int64(s, 1, time_wall_ms());
		sqlite3_bind_int64(s, 2, who->key_id);
		store_step_write(st, s);
	}
	logmgr_add_secret(orch_log(a->o), token);
	*expires_in = ttl;
	return token;
}

int
auth_token_check(struct auth *a, const char *token, struct auth_principal *who, char **cause)
{
	char thash[65];
	sha256_hex(token, strlen(token), thash);
	/* A token seen valid before is answered from memory (revocation
	 * drops it, expiry is checked here as below). */
	struct cached_token *ct = strmap_get(&a->tokens, thash);
	if (ct != NULL) {
		if (ct->expires_ms > auth_now_ms()) {
			*who = ct->who;
			return 0;
		}
		free(strmap_del(&a->tokens, thash));
	}
	sqlite3_stmt *s = store_stmt(
	    orch_store(a->o), "SELECT t.expires_ms, k.id, k.name, k.role, k.revoked_ms, t.hash "
	                      "FROM tokens t JOIN apikeys k ON k.id = t.key_id WHERE t.hash = "
	                      "?1");
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, thash, -1, SQLITE_TRANSIENT);
	int rc = -1;
	if (sqlite3_step(s) == SQLITE_ROW && const_time_eq(sqlite3_column_text(s, 5), thash, 64)) {
		if (sqlite3_column_type(s, 4) != SQLITE_NULL) {
			*cause = xstrdup("revoked API key");
		} else if (sqlite3_column_int64(s, 0) <= auth_now_ms()) {
			*cause = xstrdup("expired token");
		} else {
			who->key_id = sqlite3_column_int64(s, 1);
			snprintf(who->name, sizeof who->name, "%s", sqlite3_column_text(s, 2));
			auth_role_parse((const char *)sqlite3_column_text(s, 3), &who->role);
			rc = 0;
			if (a->tokens.n >= AUTH_MAP_MAX)
				strmap_clear_free(&a->tokens);
			ct = xcalloc(1, sizeof *ct);
			ct->expires_ms = sqlite3_column_int64(s, 0);
			ct->who = *who;
			strmap_set(&a->tokens, thash, ct);
		}
	} else {
		*cause = xstrdup("invalid token");
	}
	sqlite3_reset(s);
	return rc;
}

int
auth_rate_take(struct auth *a, int64_t key_id)
{
	double per_min = orch_config(a->o)->security.rate_limit;
	struct bucket *b = intmap_get(&a->buckets, key_id);
	int64_t now = time_mono_ms();
	if (b == NULL) {
		b = xcalloc(1, sizeof *b);
		b->tokens = per_min;
		b->last_ms = now;
		intmap_set(&a->buckets, key_id, b);
	}
	b->tokens += (double)(now - b->last_ms) / 60000.0 * per_min;
	if (b->tokens > per_min)
		b->tokens = per_min;
	b->last_ms = now;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return 0;
	}
	double wait = (1.0 - b->tokens) / (per_min / 60.0);
	return wait < 1.0 ? 1 : (int)(wait + 0.999);
}

/* Refills b at per_min per minute up to per_min; takes one token if it
 * can (returns 0), else returns the seconds to wait (>= 1). */
static int
bucket_take(struct bucket *b, double per_min, int64_t now)
{
	b->tokens += (double)(now - b->last_ms) / 60000.0 * per_min;
	if (b->tokens > per_min)
		b->tokens = per_min;
	b->last_ms = now;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return 0;
	}
	double wait = (1.0 - b->tokens) / (per_min / 60.0);
	return wait < 1.0 ? 1 : (int)(wait + 0.999);
}

/* Drops the peer buckets that have refilled (they hold nothing). */
static void
fails_sweep(struct auth *a, int64_t now)
{
	struct strmap keep;
	strmap_init(&keep);
	size_t it = 0;
	const char *k;
	void *v;
	while (strmap_next(&a->fails, &it, &k, &v)) {
		struct bucket *b = v;
		if (b->tokens + (double)(now - b->last_ms) / 60000.0 * AUTH_FAIL_PER_MIN >=
		    AUTH_FAIL_PER_MIN)
			free(b);
		else
			strmap_set(&keep, k, b);
	}
	strmap_free(&a->fails);
	a->fails = keep;
}

int
auth_fail_take(struct auth *a, const char *peer)
{
	/* "ip:port" or "[ip6]:port": the address without the port. */
	char ip[64];
	snprintf(ip, sizeof ip, "%s", peer ? peer : "?");
	char *end = ip[0] == '[' ? strchr(ip, ']') : strrchr(ip, ':');
	if (end != NULL)
		end[ip[0] == '[' ? 1 : 0] = '\0';
	int64_t now = time_mono_ms();
	struct bucket *b = strmap_get(&a->fails, ip);
	if (b == NULL) {
		if (a->fails.n >= AUTH_MAP_MAX) {
			fails_sweep(a, now);
			if (a->fails.n >= AUTH_MAP_MAX)
				strmap_clear_free(&a->fails); /* a flood of addresses */
		}
		b = xcalloc(1, sizeof *b);
		b->tokens = AUTH_FAIL_PER_MIN;
		b->last_ms = now;
		strmap_set(&a->fails, ip, b);
	}
	return bucket_take(b, AUTH_FAIL_PER_MIN, now);
}

void
auth_prune(struct auth *a)
{
	fails_sweep(a, time_mono_ms());
	int64_t now = auth_now_ms();
	struct strmap keep;
	strmap_init(&keep);
	size_t it = 0;
	const char *k;
	void *v;
	while (strmap_next(&a->tokens, &it, &k, &v)) {
		struct cached_token *ct = v;
		if (ct->expires_ms <= now)
			free(ct);
		else
			strmap_set(&keep, k, ct);
	}
	strmap_free(&a->tokens);
	a->tokens = keep;
	struct store *st = orch_store(a->o);
	sqlite3_stmt *s = store_stmt(st, "DELETE FROM tokens WHERE expires_ms < ?1");
	if (s != NULL) {
		sqlite3_bind_int64(s, 1, auth_now_ms());
		store_step_write(st, s);
	}
}

/* ---- audit ------------------------------------------------------------ */

/* The hash of one audit row, chained to prev. */
static void
audit_hash(const char *prev, int64_t id, int64_t ts, const char *actor, const char *action,
           const char *detail, int ok, char out[65])
{
	char *s = xasprintf("%s|%lld|%lld|%s|%s|%s|%d", prev, (long long)id, (long long)ts, actor,
	                    action, detail, ok);
	sha256_hex(s, strlen(s), out);
	free(s);
}

/* Reads the head of the chain (the newest row's id and hash) and the
 * highest id AUTOINCREMENT has given (sqlite_sequence), so that the next
 * row's id is known before it is inserted. */
static void
audit_load_head(struct auth *a)
{
	struct store *st = orch_store(a->o);
	snprintf(a->last_hash, sizeof a->last_hash, "%s", "genesis");
	a->last_id = 0;
	sqlite3_stmt *q = store_stmt(st, "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1");
	if (q != NULL && sqlite3_step(q) == SQLITE_ROW) {
		a->last_id = sqlite3_column_int64(q, 0);
		snprintf(a->last_hash, sizeof a->last_hash, "%s", sqlite3_column_text(q, 1));
	}
	if (q != NULL)
		sqlite3_reset(q);
	q = store_stmt(st, "SELECT seq FROM sqlite_sequence WHERE name = 'audit'");
	if (q != NULL && sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) > a->last_id)
		a->last_id = sqlite3_column_int64(q, 0);
	if (q != NULL)
		sqlite3_reset(q);
	a->have_last = true;
}

/* One statement per row: the id is the last one + 1 (given explicitly, as
 * AUTOINCREMENT would), so the hash is computed before the INSERT.  The
 * end of the chain needs no separate record: AUTOINCREMENT keeps the
 * highest id ever given in sqlite_sequence, which auth_audit_verify checks
 * against the newest row. */
void
auth_audit(struct auth *a, const char *actor, const char *action, const char *detail, bool ok)
{
	struct store *st = orch_store(a->o);
	if (!a->have_last)
		audit_load_head(a);
	sqlite3_stmt *s = store_stmt(st, "INSERT INTO audit (id, ts_ms, actor, action, detail, "
	                                 "ok, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
	                                 "?7, ?8)");
	if (s == NULL)
		return;
	if (detail == NULL)
		detail = "";
	int64_t id = a->last_id + 1;
	int64_t ts = time_wall_ms();
	char h[65];
	audit_hash(a->last_hash, id, ts, actor, action, detail, ok, h);
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, ts);
	sqlite3_bind_text(s, 3, actor, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 4, action, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 5, detail, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(s, 6, ok);
	sqlite3_bind_text(s, 7, a->last_hash, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 8, h, -1, SQLITE_TRANSIENT);
	if (store_step_write(st, s) != SQLITE_DONE) {
		a->have_last = false; /* read the head again next time */
		return;
	}
	a->last_id = id;
	memcpy(a->last_hash, h, sizeof h);
}

int64_t
auth_audit_verify(struct auth *a, int64_t *bad_id, char **why)
{
	store_flush(orch_store(a->o), NULL);
	sqlite3_stmt *s = store_stmt(orch_store(a->o), "SELECT id, ts_ms, actor, action, detail, "
	                                               "ok, prev_hash, hash FROM audit ORDER BY "
	                                               "id");
	char prev[65] = "genesis";
	int64_t n = 0, expect_id = 0;
	*bad_id = 0;
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		n++;
		if (expect_id > 0 && id != expect_id) {
			*bad_id = expect_id;
			*why = xasprintf("row %lld is missing (deleted)", (long long)expect_id);
			break;
		}
		expect_id = id + 1;
		const char *p = (const char *)sqlite3_column_text(s, 6);
		if (strcmp(p, prev) != 0) {
			*bad_id = id;
			*why =
			    xasprintf("row %lld does not follow the row before it", (long long)id);
			break;
		}
		char h[65];
		audit_hash(prev, id, sqlite3_column_int64(s, 1),
		           (const char *)sqlite3_column_text(s, 2),
		           (const char *)sqlite3_column_text(s, 3),
		           (const char *)sqlite3_column_text(s, 4), sqlite3_column_int(s, 5), h);
		if (strcmp(h, (const char *)sqlite3_column_text(s, 7)) != 0) {
			*bad_id = id;
			*why = xasprintf("row %lld was edited (its hash does not match)",
			                 (long long)id);
			break;
		}
		memcpy(prev, h, sizeof prev);
	}
	if (s != NULL)
		sqlite3_reset(s);
	if (*bad_id == 0) {
		/* AUTOINCREMENT's highest id given: past the newest row, the
		 * newest rows were deleted. */
		sqlite3_stmt *m = store_stmt(orch_store(a->o), "SELECT seq FROM sqlite_sequence "
		                                               "WHERE name = 'audit'");
		int64_t last = expect_id > 0 ? expect_id - 1 : 0;
		if (m != NULL && sqlite3_step(m) == SQLITE_ROW &&
		    sqlite3_column_int64(m, 0) > last) {
			int64_t seq = sqlite3_column_int64(m, 0);
			*bad_id = last + 1;
			if (seq == last + 1)
				*why = xasprintf("row %lld was deleted (the chain ends early)",
				                 (long long)*bad_id);
			else
				*why = xasprintf("rows %lld to %lld were deleted (the chain ends "
				                 "early)",
				                 (long long)*bad_id, (long long)seq);
		}
		if (m != NULL)
			sqlite3_reset(m);
	}
	return n;
}

/* ---- commands --------------------------------------------------------- */

static enum cmd_retval
cmd_apikey_create_exec(struct cmd_ctx *ctx)
{
	struct auth *a = orch_auth(ctx->orch);
	const char *r = cmd_opt(ctx, "role");
	enum auth_role role;
	if (r == NULL || !auth_role_parse(r, &role))
		return cmd_usage_error(ctx, "apikey create: --role must be captain, operator, "
		                            "observer or agent");
	int64_t id = 0;
	char *cause = NULL;
	char *key = auth_key_create(a, cmd_arg(ctx, 0), role, &id, &cause);
	if (key == NULL) {
		enum cmd_retval rv = cmd_error(ctx, "apikey create: %s", cause);
		free(cause);
		return rv;
	}
	auth_audit(a, ctx->client_name, "apikey.create", cmd_arg(ctx, 0), true);
	json_t *j = json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)id, "name",
	                      cmd_arg(ctx, 0), "role", auth_role_name(role), "key", key, "note",
	                      "shown once: only its hash is stored");
	free(key);
	return cmd_result(ctx, j);
}

static enum cmd_retval
cmd_apikey_list_exec(struct cmd_ctx *ctx)
{
	return cmd_result(ctx, auth_key_list(orch_auth(ctx->orch)));
}

static enum cmd_retval
cmd_apikey_revoke_exec(struct cmd_ctx *ctx)
{
	struct auth *a = orch_auth(ctx->orch);
	char *end;
	long long id = strtoll(cmd_arg(ctx, 0), &end, 10);
	if (*end != '\0' || id <= 0)
		return cmd_usage_error(ctx, "apikey revoke: '%s' is not a key id", cmd_arg(ctx, 0));
	char *cause = NULL;
	if (auth_key_revoke(a, id, &cause) != 0) {
		enum cmd_retval rv = cmd_error(ctx, "apikey revoke: %s", cause);
		free(cause);
		return rv;
	}
	auth_audit(a, ctx->client_name, "apikey.revoke", cmd_arg(ctx, 0), true);
	bridge_key_revoked(orch_bridge(ctx->orch), id);
	return cmd_message(ctx, "API key %lld revoked", id);
}

static enum cmd_retval
cmd_audit_exec(struct cmd_ctx *ctx)
{
	long limit = 50;
	if (!cmd_opt_int(ctx, "limit", 1, 100000, &limit))
		return CMD_USAGE;
	store_flush(orch_store(ctx->orch), NULL);
	sqlite3_stmt *s = store_stmt(orch_store(ctx->orch),
	                             "SELECT id, ts_ms, actor, action, detail, ok FROM (SELECT * "
	                             "FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id");
	if (s == NULL)
		return cmd_error(ctx, "audit: query failed");
	sqlite3_bind_int64(s, 1, limit);
	json_t *rows = json_array();
	while (sqlite3_step(s) == SQLITE_ROW) {
		char ts[40];
		time_iso8601(sqlite3_column_int64(s, 1), ts, sizeof ts);
		json_array_append_new(rows,
		                      json_pack("{s:I,s:s,s:s,s:s,s:s,s:b}", "id",
		                                (json_int_t)sqlite3_column_int64(s, 0), "ts", ts,
		                                "actor", (const char *)sqlite3_column_text(s, 2),
		                                "action", (const char *)sqlite3_column_text(s, 3),
		                                "detail", (const char *)sqlite3_column_text(s, 4),
		                                "ok", sqlite3_column_int(s, 5)));
	}
	sqlite3_reset(s);
	return cmd_result(ctx, rows);
}

static enum cmd_retval
cmd_audit_verify_exec(struct cmd_ctx *ctx)
{
	int64_t bad = 0;
	char *why = NULL;
	int64_t n = auth_audit_verify(orch_auth(ctx->orch), &bad, &why);
	if (bad != 0) {
		enum cmd_retval rv =
		    cmd_error(ctx, "audit verify: chain broken after %lld rows: %s", (long long)n,
		              why ? why : "?");
		free(why);
		return rv;
	}
	char *msg = xasprintf("audit chain intact: %lld rows verified", (long long)n);
	json_t *r = json_pack("{s:I,s:b,s:s}", "rows", (json_int_t)n, "ok", 1, "message", msg);
	free(msg);
	return cmd_result(ctx, r);
}

static void
cmd_audit_verify_print(struct cmd_ctx *ctx, const json_t *r, struct buf *out)
{
	buf_addf(out, "%s\n", json_string_value(json_object_get(r, "message")));
}

static const struct cmd_opt create_opts[] = {
    {"role", OPT_VALUE, "ROLE", "captain|operator|observer|agent"},
    {NULL, 0, NULL, NULL},
};
static const struct cmd_opt audit_opts[] = {
    {"limit", OPT_VALUE, "N", NULL},
    {NULL, 0, NULL, NULL},
};

const struct cmd_entry auth_cmd_entries[] = {
    {
        .name = "apikey create",
        .usage = "NAME --role captain|operator|observer|agent",
        .help = "Creates a Bridge API key and prints it once (only its SHA-256 hash is "
                "stored).  An agent key lets a remote agent named NAME connect.",
        .min_args = 1,
        .max_args = 1,
        .opts = create_opts,
        .role = ROLE_CAPTAIN,
        .exec = cmd_apikey_create_exec,
    },
    {
        .name = "apikey list",
        .usage = "",
        .help = "Lists the API keys (never the keys themselves).",
        .max_args = 0,
        .role = ROLE_CAPTAIN,
        .exec = cmd_apikey_list_exec,
    },
    {
        .name = "apikey revoke",
        .usage = "ID",
        .help = "Revokes an API key and every session token issued for it.",
        .min_args = 1,
        .max_args = 1,
        .role = ROLE_CAPTAIN,
        .exec = cmd_apikey_revoke_exec,
    },
    {
        .name = "audit",
        .usage = "[--limit N]",
        .help = "Shows the audit log: authentications, denials, key changes, captain commands "
                "(as given, options included, secret values redacted, and whether they "
                "succeeded).",
        .max_args = 0,
        .opts = audit_opts,
        .role = ROLE_OPERATOR,
        .exec = cmd_audit_exec,
    },
    {
        .name = "audit verify",
        .usage = "",
        .help = "Checks the audit log's SHA-256 chain: an edited or deleted row is reported.",
        .max_args = 0,
        .role = ROLE_OPERATOR,
        .exec = cmd_audit_verify_exec,
        .print = cmd_audit_verify_print,
    },
};
const size_t auth_cmd_count = nitems(auth_cmd_entries);
