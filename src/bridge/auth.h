/* auth.h — the Bridge's security: API keys (shown once, stored as SHA-256
 * hashes), session tokens with expiry, roles, per-key token-bucket rate
 * limits, and the append-only audit log whose rows are chained by SHA-256
 * so that an edited or deleted row is detected. */
#ifndef DREAMOS_AUTH_H
#define DREAMOS_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmd.h"

struct orch;
struct auth;

/* Roles, most powerful first in meaning: captain ⊃ operator ⊃ observer;
 * agent may only speak the protocol as the agent named by its key. */
enum auth_role { AROLE_OBSERVER = 0, AROLE_OPERATOR = 1, AROLE_CAPTAIN = 2, AROLE_AGENT = 3 };
const char *auth_role_name(enum auth_role r);
bool auth_role_parse(const char *s, enum auth_role *out);

/* Who a request is. */
struct auth_principal {
	int64_t key_id;
	char name[72]; /* key name (= agent name for agent keys) */
	enum auth_role role;
};

struct auth *auth_new(struct orch *o);
void auth_free(struct auth *a);

/* Creates a key; returns it (malloc'd, shown once) or NULL with *cause. */
char *auth_key_create(struct auth *a, const char *name, enum auth_role role, int64_t *id,
                      char **cause);
int auth_key_revoke(struct auth *a, int64_t id, char **cause);
json_t *auth_key_list(struct auth *a);

/* Exchanges an API key for a session token (malloc'd).  Returns NULL with
 * *cause ("invalid API key", "revoked API key"). */
char *auth_token_issue(struct auth *a, const char *api_key, struct auth_principal *who,
                       double *expires_in, char **cause);
/* Checks a session token.  Returns 0 with *who, or -1 with *cause
 * ("invalid token", "expired token", "revoked API key").  A valid token is
 * remembered (hash -> principal, expiry) so that the next checks need no
 * query; auth_key_revoke forgets its key's tokens. */
int auth_token_check(struct auth *a, const char *token, struct auth_principal *who, char **cause);

/* Rate limit: takes one token from the key's bucket.  Returns 0, or the
 * seconds to wait (>= 1) when empty. */
int auth_rate_take(struct auth *a, int64_t key_id);

/* Failed authentications (and refused Origins) per peer address: takes
 * one from the bucket of peer's address ("ip:port", the port ignored; 20
 * a minute).  Returns 0, or the seconds to wait (>= 1) when empty. */
int auth_fail_take(struct auth *a, const char *peer);

/* Deletes expired session tokens, cached ones too, and the failure
 * buckets that have refilled (housekeeping). */
void auth_prune(struct auth *a);

/* Appends an audit row (actor, action, detail, ok). */
void auth_audit(struct auth *a, const char *actor, const char *action, const char *detail, bool ok);
/* Recomputes the chain.  Returns the number of rows checked and sets
 * *bad_id to the first row that does not match (0 if none). */
int64_t auth_audit_verify(struct auth *a, int64_t *bad_id, char **why);

/* The current time in ms for expiry (wall clock, plus the offset read from
 * $DREAMOS_TEST_CLOCK_FILE when set: tests move time forward with it). */
int64_t auth_now_ms(void);

extern const struct cmd_entry auth_cmd_entries[];
extern const size_t auth_cmd_count;

#endif
