/* bridge.h — the Bridge: the HTTP + WebSocket API of DESIGN section 9 on top
 * of http.c and auth.c — endpoints, token authentication, roles, rate
 * limits, Origin checks, metrics, audit, remote agents and observers. */
#ifndef DREAMOS_BRIDGE_H
#define DREAMOS_BRIDGE_H

#include <jansson.h>

#include "cmd.h"

struct orch;
struct agent;
struct bridge;

/* Starts listening on bridge.host:bridge.port (the port may be 0).
 * Returns 0, or -1 with *cause. */
int bridge_start(struct orch *o, struct bridge **out, char **cause);
void bridge_stop(struct bridge *b);
void bridge_free(struct bridge *b);
/* {"address", "port", "tls", "connections", ...} or NULL if not running. */
json_t *bridge_status_json(struct bridge *b);
/* Closes the WebSockets opened with a key that was just revoked. */
void bridge_key_revoked(struct bridge *b, int64_t key_id);
/* Agent state changes, for observers. */
void bridge_agent_event(struct bridge *b, struct agent *a, int old_state);
/* Prometheus text (caller frees). */
char *bridge_metrics_text(struct bridge *b);

extern const struct cmd_entry bridge_cmd_entries[];
extern const size_t bridge_cmd_count;

#endif
