/* http.h — the Bridge's inbound HTTP/1.1 + WebSocket server on the libuv
 * loop: Debian's http-parser for requests (keep-alive, pipelining, chunked
 * bodies), our frame reader (wsframe.h) for the WebSocket frames clients
 * send, wslay for pongs, the close handshake and messages queued under
 * back-pressure, optional TLS with OpenSSL (memory BIOs), connection and
 * size limits, idle and slow-loris timeouts.  It knows nothing of routes or auth: every
 * complete request goes to one handler callback, which answers with
 * http_respond (now or later) or upgrades the connection to a WebSocket. */
#ifndef DREAMOS_HTTP_H
#define DREAMOS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_conn;
struct ws_conn;

struct http_header {
	char *name; /* lower-cased */
	char *value;
};

/* One complete request.  Valid until it is answered. */
struct http_request {
	struct http_conn *conn;
	const char *method; /* "GET" */
	char *path;         /* "/v1/tasks/3", without the query */
	char *query;        /* "state=queued&limit=5" or NULL */
	struct http_header *headers;
	size_t nheaders;
	char *body;
	size_t body_len;
	char peer[64];          /* "127.0.0.1:53422" */
	bool upgrade_websocket; /* a valid WebSocket upgrade request */
	/* Header lines ("Name: value\r\n...", malloc'd, freed with the request)
	 * added to whatever answer this request gets, e.g. CORS headers. */
	char *always_headers;
	uint64_t seq; /* per server, for logs */
};

/* Returns the value of header name (case-insensitive), or NULL. */
const char *http_header(const struct http_request *req, const char *name);
/* Returns a query parameter (URL-decoded, malloc'd), or NULL. */
char *http_query_param(const struct http_request *req, const char *name);

struct http_limits {
	size_t max_connections;  /* beyond: 503 and close */
	double idle_timeout;     /* seconds without a request on a kept-alive connection */
	double request_timeout;  /* seconds from a request's first byte to its end */
	size_t max_header_bytes; /* request line + headers; beyond: 431 */
	size_t max_headers;      /* header count; beyond: 431 */
	size_t max_body;         /* beyond: 413 */
	size_t max_ws_message;   /* WebSocket message; beyond: close 1009 */
};

/* The request handler: answer with http_respond, now or later (the
 * connection keeps further pipelined requests until then), or call
 * http_upgrade_websocket for an upgrade request. */
typedef void (*http_handler_fn)(void *arg, struct http_request *req);

struct http_server_opts {
	const char *host; /* "127.0.0.1" */
	int port;         /* 0: ephemeral */
	struct http_limits limits;
	const char *tls_cert; /* PEM paths, or NULL for plain HTTP */
	const char *tls_key;
	http_handler_fn handler;
	void *arg;
};

/* Listens.  Returns 0, or -1 with *cause ("127.0.0.1:8000: address in use"). */
int http_server_start(uv_loop_t *loop, const struct http_server_opts *opts,
                      struct http_server **out, char **cause);
/* The bound port (useful with port 0). */
int http_server_port(const struct http_server *s);
/* Closes the listener and every connection (WebSockets get close 1001). */
void http_server_stop(struct http_server *s);

struct http_server_stats {
	uint64_t connections_total, connections_open, rejected_busy;
	uint64_t requests;
	uint64_t by_status[6]; /* 1xx..5xx at index 1..5 */
	uint64_t ws_open, ws_messages_in, ws_messages_out;
	uint64_t timeouts, bad_requests;
};
void http_server_stats(const struct http_server *s, struct http_server_stats *out);

/* Answers req with status, content type and body (copied), adding
 * Content-Length, Connection and Date; extra_headers is NULL or
 * "Name: value\r\n..." lines.  Frees req. */
void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t body_len, const char *extra_headers);
/* Answers with {"error": {"code": code, "message": message}} JSON. */
void http_respond_error(struct http_request *req, int status, const char *code, const char *message,
                        const char *extra_headers);

/* WebSocket: completes the handshake (101) for an upgrade request and
 * returns the WebSocket, whose text messages go to on_message and whose end
 * (close frame, error, disconnect) to on_close (then it is freed: do not
 * use it afterwards).  Frees req. */
typedef void (*ws_message_fn)(void *arg, struct ws_conn *ws, const char *data, size_t len);
typedef void (*ws_close_fn)(void *arg, struct ws_conn *ws, int code, const char *reason);
struct ws_conn *http_upgrade_websocket(struct http_request *req, ws_message_fn on_message,
                                       ws_close_fn on_close, void *arg);
/* Queues a text message.  Returns 0, or -1 if the connection is closing.
 * Reading from the peer stops while a MiB is queued towards it (it is not
 * reading), not counting the messages sent by ws_send_text_owed: they
 * wait for its answer, and a peer that writes its answers before it
 * reads on would otherwise wait for us while we wait for it (outq.h). */
int ws_send_text(struct ws_conn *ws, const char *data, size_t len);
int ws_send_text_owed(struct ws_conn *ws, const char *data, size_t len);
/* Bytes queued and not yet written (for back-pressure). */
size_t ws_queued(const struct ws_conn *ws);
/* Starts the close handshake with code and reason. */
void ws_close(struct ws_conn *ws, int code, const char *reason);
/* Stops or resumes reading from the peer (back-pressure). */
void ws_set_reading(struct ws_conn *ws, bool on);
const char *ws_peer(const struct ws_conn *ws);

/* Fills l with the defaults that http_server_start uses for any zero field
 * of opts->limits: 1024 connections, 60 s idle, 30 s per request, 32 KiB
 * of headers, 100 headers, 1 MiB bodies and WebSocket messages. */
void http_limits_default(struct http_limits *l);

/* For tests and the fuzz target: the connection logic without a socket.
 * http_conn_test_new returns a connection on a private server (no loop, no
 * timers) whose output is kept in memory and whose deferred work runs at
 * once; free it with http_conn_test_free, which closes it as if the peer
 * had gone (WebSockets see on_close 1006) and frees the private server. */
struct http_conn *http_conn_test_new(const struct http_limits *limits, http_handler_fn handler,
                                     void *arg);
/* Feeds bytes received from the peer (plain text, after TLS): to the HTTP
 * parser, or to the WebSocket frame reader after an upgrade.  The server's
 * read path uses it too. */
void http_conn_feed(struct http_conn *c, const char *data, size_t len);
/* Returns every byte written so far (the connection keeps ownership). */
const char *http_conn_test_output(struct http_conn *c, size_t *len);
/* True once the connection is closed or closing. */
bool http_conn_test_closed(const struct http_conn *c);
void http_conn_test_free(struct http_conn *c);

#endif
