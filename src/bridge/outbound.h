/* outbound.h — the outbound connection manager (DESIGN section 9, outbound
 * part): HTTP requests to external services (LLM APIs, Discord webhooks)
 * for the core and the extensions, on the orchestrator's libuv loop.
 *
 * One libcurl multi handle driven by the loop (a uv_poll per socket, one
 * uv_timer for curl's timeouts), so connections are pooled and reused
 * (HTTP/1.1 keep-alive) across requests.  On top of it:
 *
 *   - retries with exponential backoff (retry_delay * 2^n) for connection
 *     errors, timeouts, 5xx and 429 (whose Retry-After is honoured, capped
 *     at OUTBOUND_RETRY_AFTER_MAX); a request that already streamed part of
 *     its body to the caller is never retried;
 *   - a token bucket per service (requests per second; evenly spaced up
 *     to 20/s, above that bursts of 50 ms worth): requests over the limit
 *     wait in a FIFO queue, they are never dropped;
 *   - health checks per registered service (GET base_url + health_path
 *     every interval), with state up/down/unknown, last error and latency;
 *   - counters per service (requests, failures, retries, rate-limited
 *     waits, bytes, latency), as JSON for `status`, /metrics and the
 *     `services` captain command.
 *
 * Secrets: nothing here logs a query string, a header value or a body.  Log
 * lines name the method, the host, the path (path segments of 32 or more
 * characters, such as the token in a Discord webhook URL, are shown as
 * "[redacted]"), the status and the time.
 *
 * Everything runs on the loop's thread; no function here may be called from
 * another thread.  Callbacks are never called from inside outbound_request,
 * outbound_cancel or outbound_cancel_owner: always later, from the loop. */
#ifndef DREAMOS_OUTBOUND_H
#define DREAMOS_OUTBOUND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cmd.h"
#include "log.h"

struct config;
struct outbound;

/* Timeout of one attempt when a request gives 0. */
#define OUTBOUND_DEFAULT_TIMEOUT 30.0
/* Longest wait a Retry-After header can impose, in seconds. */
#define OUTBOUND_RETRY_AFTER_MAX 60.0
/* Longest backoff between two attempts, in seconds. */
#define OUTBOUND_BACKOFF_MAX 300.0

/* One request.  Every string is copied by outbound_request, so the caller
 * may free them as soon as it returns. */
struct outbound_req {
	const char *method;         /* "GET" (NULL), "POST", "PUT", "DELETE", ... */
	const char *url;            /* http:// or https:// */
	const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
	const char *body;           /* request body, or NULL */
	size_t body_len;            /* bytes of body */
	double timeout_s;           /* per attempt: > 0 seconds; 0 = default; < 0 = none */
	int max_retries;            /* retries after the first attempt; -1 = the default
	                             * (retry_attempts): 0, as in a zeroed struct, = none */
	const char *owner;          /* tag (an extension's name) for cancel_owner, or NULL */
	const char *service;        /* rate-limit and metrics bucket; NULL = the URL's host */
};

/* The outcome of a request, given to the done callback.  Everything it
 * points to is valid only during the callback. */
struct outbound_resp {
	long status;                /* HTTP status of the last attempt, 0 if none came */
	const char *body;           /* never NULL, NUL-terminated (body_len excludes it) */
	size_t body_len;            /* the whole body; 0 when it was streamed to on_chunk */
	const char *error;          /* NULL on success (a 1xx-3xx response), else one line:
	                             * "timeout after 30 s", "connection refused (host:port)",
	                             * "HTTP 503 Service Unavailable", ... */
	double seconds;             /* from outbound_request to now, waits included */
	int attempts;               /* HTTP attempts made (1 + retries) */
	const char *const *headers; /* response headers of the last attempt, "Name: value" */
	size_t nheaders;
};

/* Called once when a request ends, unless it was cancelled. */
typedef void (*outbound_done_fn)(void *arg, const struct outbound_resp *resp);
/* Called with each piece of a 2xx response body as it arrives (in order;
 * pieces are not aligned on lines or events).  A non-2xx body is not
 * streamed: it is collected and given to the done callback. */
typedef void (*outbound_chunk_fn)(void *arg, const char *data, size_t len);

/* Returns a new connection manager on loop.  log may be NULL (no logging).
 * retry_attempts (bridge.retry_attempts) is the default number of retries
 * and retry_delay (bridge.retry_delay, seconds) the first backoff delay.
 * Free with outbound_free. */
struct outbound *outbound_new(uv_loop_t *loop, struct logmgr *log, int retry_attempts,
                              double retry_delay);
/* Cancels every request (no callback is called any more), stops the health
 * checks and closes the handles.  The memory is released from the handles'
 * close callbacks: run the loop once more (uv_run) afterwards, like the other
 * modules' _close.  May be called from inside a callback of this module (the
 * work is then done when the callback returns).  NULL is allowed. */
void outbound_free(struct outbound *ob);

/* Adds the services of a configuration (cfg->services).  Returns 0, or -1
 * with *cause (caller frees) naming the first bad one. */
int outbound_add_config_services(struct outbound *ob, const struct config *cfg, char **cause);

/* Starts a request.  on_done(arg, resp) is called once when it ends (after
 * any retries), never before this returns; on_chunk may be NULL, then the
 * body is collected.  Returns the request's id (> 0), for outbound_cancel;
 * 0 only once outbound_free was called.  A malformed request (bad URL, a
 * header with a line break) ends with an error through on_done. */
uint64_t outbound_request(struct outbound *ob, const struct outbound_req *req,
                          outbound_done_fn on_done, outbound_chunk_fn on_chunk, void *arg);
/* Cancels a request: it is dropped wherever it is (queued, waiting for a
 * retry, in flight) and its callbacks are not called any more.  Returns
 * false if no such request is running (already done, or unknown). */
bool outbound_cancel(struct outbound *ob, uint64_t id);
/* Cancels every request started with this owner (an extension that
 * unloads).  Returns how many were cancelled. */
size_t outbound_cancel_owner(struct outbound *ob, const char *owner);
/* Number of requests not finished yet (queued, waiting or in flight). */
size_t outbound_pending(const struct outbound *ob);

/* Returns the value of the response header name (case-insensitive; the
 * last one if repeated), or NULL. */
const char *outbound_resp_header(const struct outbound_resp *resp, const char *name);

/* Registers (or reconfigures) a service: requests naming it are limited to
 * rate_limit per second (0 = unlimited); if health_path is not NULL,
 * base_url + health_path is fetched (GET) every interval_s seconds (<= 0:
 * 30), the first time at once.  A service answering with any status below
 * 500 is up (a 401 from an API that wants a key still answers); a 5xx, a
 * timeout or a connection error marks it down.  Returns 0, or -1 if name is
 * empty or base_url is not an http(s) URL. */
int outbound_add_service(struct outbound *ob, const char *name, const char *base_url,
                         const char *health_path, double interval_s, double rate_limit);
/* Sets headers ("Name: value", NULL-terminated, copied) sent with the health
 * checks of a service (an API key, say).  Returns -1 if no such service. */
int outbound_service_set_headers(struct outbound *ob, const char *name, const char *const *headers);

enum outbound_health { OUTBOUND_UNKNOWN, OUTBOUND_UP, OUTBOUND_DOWN };
/* "unknown", "up", "down". */
const char *outbound_health_name(enum outbound_health h);
/* Health of a service (OUTBOUND_UNKNOWN if not checked or not known). */
enum outbound_health outbound_service_health(const struct outbound *ob, const char *name);

/* Returns an array of the services, sorted by name: {name, url, health_path,
 * state, status, last_error, latency_ms, last_check, checks, interval,
 * rate_limit, requests, failures, retries, in_flight}.  Services known only
 * from requests (a host) are included with state "unknown".  Caller owns
 * the result. */
json_t *outbound_services_json(const struct outbound *ob);
/* Returns the counters: {"in_flight": N, "queued": N, "services": {NAME:
 * {requests, failures, retries, rate_limited, bytes_sent, bytes_received,
 * latency_sum, latency_count, in_flight}}} (latency in seconds, summed over
 * attempts that got a response).  Caller owns the result. */
json_t *outbound_metrics_json(const struct outbound *ob);

/* A parser of server-sent events (text/event-stream), for on_chunk: feed it
 * the pieces, it calls on_event for each complete event with its type
 * ("message" when none was given) and its data lines joined by "\n"
 * (NUL-terminated; valid during the call).  Comments and ids are ignored. */
typedef void (*outbound_sse_fn)(void *arg, const char *event, const char *data, size_t len);
struct outbound_sse;
struct outbound_sse *outbound_sse_new(outbound_sse_fn on_event, void *arg);
void outbound_sse_feed(struct outbound_sse *p, const char *data, size_t len);
void outbound_sse_free(struct outbound_sse *p);

/* The captain commands of this module (`services`).  Their handlers find
 * the manager with orch_outbound(). */
extern const struct cmd_entry outbound_cmd_entries[];
extern const size_t outbound_cmd_count;

#endif
