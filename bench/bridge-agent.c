/* bridge-agent.c — the agents of bench/bridge.sh: a CellPhone v1 producer or consumer (plain
 * C, libc only) that speaks either on stdin/stdout, as a child process of dreamos, or over the
 * Bridge's WebSocket, as a remote agent (API key -> POST /v1/auth/token -> GET /v1/stream
 * with the token, RFC 6455 framing, masked client frames).  Everything above the transport is
 * the same code, so the two kinds of run differ only in the transport.
 *
 * Usage: bridge-agent producer --to NAME --count N --out FILE [--window W] [--size S]
 *                              [--go FILE] [--ws HOST:PORT --key KEY]
 *        bridge-agent consumer --count N --out FILE [--ws HOST:PORT --key KEY]
 *   --ws, --key  connect to the Bridge at HOST:PORT (plain ws://) with the agent API key KEY;
 *                the agent's name is the key's.  Without them: stdin/stdout, the name from
 *                DREAMOS_AGENT_NAME.
 *   producer     sends N `send`s of S-byte bodies (default 256) to NAME, at most W (default
 *                1000) waiting for their `sent`; one refused with `backpressure` is sent again
 *                after a backoff (1 ms doubling to 64 ms), as bench/bus-producer.c does.  With
 *                --go it creates OUT.ready after `welcome` and waits for FILE before sending.
 *                Result: sent=N errors=E retries=R start_ns=T0 end_ns=T1 rate=R
 *   consumer     acks every message (the acks of one read go out in one write) and counts
 *                first deliveries until N.  Creates OUT.ready after `welcome`.
 *                Result: received=N first_ns=T0 last_ns=T1 lat_p50_us=.. lat_p99_us=..
 *                (one-way latency from the "t=<CLOCK_MONOTONIC ns>" at the start of a body)
 * The result line goes to OUT (written once, atomically); then the agent stays connected
 * until `command stop`, EOF or a close frame. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "linescan.h"

static void
die(const char *msg)
{
	fprintf(stderr, "bridge-agent: %s\n", msg);
	exit(1);
}

/* ---- transport ------------------------------------------------------------------------- */

static int ws; /* 1: WebSocket, 0: stdin/stdout */
static int in_fd = 0, out_fd = 1;
static char *obuf; /* bytes to write (lines, or frames) */
static size_t olen, ocap, ooff;
static uint32_t rng = 2463534242u;

static void
out_raw(const void *s, size_t n)
{
	if (olen + n > ocap) {
		if (ooff > 0) {
			memmove(obuf, obuf + ooff, olen - ooff);
			olen -= ooff;
			ooff = 0;
		}
		while (olen + n > ocap)
			ocap = ocap ? ocap * 2 : 1 << 20;
		if (!(obuf = realloc(obuf, ocap)))
			die("out of memory");
	}
	memcpy(obuf + olen, s, n);
	olen += n;
}

/* One frame: FIN, opcode, masked with a fresh key. */
static void
out_frame(int opcode, const char *p, size_t n)
{
	unsigned char h[14];
	size_t hl = 0;
	h[hl++] = (unsigned char)(0x80 | opcode);
	if (n < 126) {
		h[hl++] = (unsigned char)(0x80 | n);
	} else if (n < 65536) {
		h[hl++] = 0x80 | 126;
		h[hl++] = (unsigned char)(n >> 8);
		h[hl++] = (unsigned char)n;
	} else {
		h[hl++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
	}
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	unsigned char key[4] = {(unsigned char)rng, (unsigned char)(rng >> 8),
	                        (unsigned char)(rng >> 16), (unsigned char)(rng >> 24)};
	memcpy(h + hl, key, 4);
	hl += 4;
	out_raw(h, hl);
	out_raw(p, n);
	unsigned char *m = (unsigned char *)obuf + olen - n;
	for (size_t i = 0; i < n; i++)
		m[i] ^= key[i & 3];
}

/* One protocol message (line without its newline). */
static void
out_line(const char *s, size_t n)
{
	if (ws) {
		out_frame(0x1, s, n);
	} else {
		out_raw(s, n);
		out_raw("\n", 1);
	}
}

/* Writes what it can without blocking; exits quietly if dreamos has gone. */
static void
out_flush(void)
{
	while (ooff < olen) {
		ssize_t n = write(out_fd, obuf + ooff, olen - ooff);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
			exit(errno == EPIPE || errno == ECONNRESET ? 0 : 1);
		ooff += (size_t)n;
	}
	olen = ooff = 0;
}

/* Blocking TCP connection to host:port. */
static int
tcp_connect(const char *host, const char *port)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		die("cannot resolve the Bridge address");
	int fd = socket(res->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0)
		die("cannot connect to the Bridge");
	freeaddrinfo(res);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

/* Sends req and reads the answer until the end of its headers (hdr_only) or EOF.  Returns it
 * (malloc'd, NUL-terminated) and its length in *len. */
static char *
http_exchange(int fd, const char *req, int hdr_only, size_t *len)
{
	size_t n = strlen(req), off = 0;
	while (off < n) {
		ssize_t w = write(fd, req + off, n - off);
		if (w <= 0)
			die("write to the Bridge failed");
		off += (size_t)w;
	}
	size_t cap = 1 << 16, l = 0;
	char *b = malloc(cap);
	for (;;) {
		if (l + 1 >= cap && !(b = realloc(b, cap *= 2)))
			die("out of memory");
		ssize_t r = read(fd, b + l, cap - l - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		l += (size_t)r;
		b[l] = '\0';
		if (hdr_only && strstr(b, "\r\n\r\n"))
			break;
	}
	b[l] = '\0';
	*len = l;
	return b;
}

/* The value of "key": "..." in a JSON text (no escapes needed here), malloc'd. */
static char *
json_str(const char *s, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(s, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	if (*p++ != '"')
		return NULL;
	const char *e = strchr(p, '"');
	if (!e)
		return NULL;
	char *v = malloc((size_t)(e - p) + 1);
	memcpy(v, p, (size_t)(e - p));
	v[e - p] = '\0';
	return v;
}

static char *ibuf; /* received, not yet handled */
static size_t ilen, icap;

static void
in_add(const char *s, size_t n)
{
	if (ilen + n > icap) {
		while (ilen + n > icap)
			icap = icap ? icap * 2 : 1 << 20;
		if (!(ibuf = realloc(ibuf, icap + 1)))
			die("out of memory");
	}
	memcpy(ibuf + ilen, s, n);
	ilen += n;
}

/* Connects to the Bridge: token, then the WebSocket.  Returns the agent's name. */
static char *
ws_connect(const char *hostport, const char *key)
{
	char host[256], *port;
	snprintf(host, sizeof host, "%s", hostport);
	if (!(port = strrchr(host, ':')))
		die("--ws wants HOST:PORT");
	*port++ = '\0';
	char req[2048];
	int fd = tcp_connect(host, port);
	snprintf(req, sizeof req,
	         "POST /v1/auth/token HTTP/1.1\r\nHost: %s:%s\r\nAuthorization: Bearer %s\r\n"
	         "Content-Length: 0\r\nConnection: close\r\n\r\n",
	         host, port, key);
	size_t len;
	char *resp = http_exchange(fd, req, 0, &len);
	close(fd);
	char *token = json_str(resp, "token"), *name = json_str(resp, "name");
	if (strncmp(resp, "HTTP/1.1 200 ", 13) != 0 || !token || !name) {
		fprintf(stderr, "bridge-agent: token refused: %.300s\n", resp);
		exit(1);
	}
	free(resp);
	fd = tcp_connect(host, port);
	snprintf(req, sizeof req,
	         "GET /v1/stream HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	         "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
	         host, port, token);
	resp = http_exchange(fd, req, 1, &len);
	char *end = strstr(resp, "\r\n\r\n");
	if (strncmp(resp, "HTTP/1.1 101 ", 13) != 0 || !end) {
		fprintf(stderr, "bridge-agent: upgrade refused: %.300s\n", resp);
		exit(1);
	}
	end += 4;
	in_add(end, len - (size_t)(end - resp)); /* frames that came with the answer */
	free(resp);
	free(token);
	in_fd = out_fd = fd;
	return name;
}

/* ---- agent logic ------------------------------------------------------------------------- */

static int producer;
static const char *to, *out_path, *go_path;
static long count, window = 1000, size = 256;
static int welcomed, stopping, done;
/* producer */
static long nnew, inflight, nok, nerrors, nretries, rq_head, rq_len;
static long *retry_q;
static long long *sent_at, retry_at, backoff = 1000000, t_start;
static struct ls_sender sender;
/* consumer */
static long received;
static long long first_ns, last_ns, *lat;

static void
write_result(const char *line)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("cannot write the result");
	fputs(line, f);
	fclose(f);
	rename(tmp, out_path);
}

static void
touch_ready(void)
{
	char ready[4096];
	snprintf(ready, sizeof ready, "%s.ready", out_path);
	FILE *f = fopen(ready, "w");
	if (!f)
		die("cannot create the ready file");
	fclose(f);
}

static int
cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return (x > y) - (x < y);
}

static double
pct_us(long long *v, long n, double p)
{
	if (n == 0)
		return 0;
	long i = (long)(p * (double)n + 0.999999) - 1;
	i = i < 0 ? 0 : i >= n ? n - 1 : i;
	return (double)v[i] / 1000.0;
}

static void
consumer_done(void)
{
	qsort(lat, (size_t)received, sizeof *lat, cmp_ll);
	char line[512];
	snprintf(line, sizeof line,
	         "received=%ld first_ns=%lld last_ns=%lld lat_p50_us=%.1f lat_p99_us=%.1f\n",
	         received, first_ns, last_ns, pct_us(lat, received, 0.5),
	         pct_us(lat, received, 0.99));
	write_result(line);
	done = 1;
}

static void
handle(const char *line, size_t len, long long t_read)
{
	struct ls_line l;
	if (ls_scan(&l, line, len) < 0)
		return;
	const struct ls_field *type = ls_get(&l, "type");
	if (ls_is(type, "welcome")) {
		welcomed = 1;
	} else if (ls_is(type, "message")) {
		const struct ls_field *id = ls_get(&l, "id");
		if (!id)
			return;
		char ack[64];
		out_line(ack, ls_ack_line(ack, ls_int(id, 0)));
		if (producer || done || ls_int(ls_get(&l, "attempt"), 0) != 1)
			return;
		const struct ls_field *body = ls_get(&l, "body");
		if (body && body->str && body->vlen > 2 && !strncmp(body->val, "t=", 2))
			lat[received] = t_read - atoll(body->val + 2);
		if (received == 0)
			first_ns = t_read;
		last_ns = t_read;
		if (++received == count)
			consumer_done();
	} else if (ls_is(type, "sent") || ls_is(type, "error")) {
		if (!producer)
			return;
		int is_sent = ls_is(type, "sent");
		if (!is_sent && !welcomed) {
			fprintf(stderr, "bridge-agent: %.*s\n", (int)len, line);
			die("rejected by dreamos");
		}
		long seq = -1;
		const struct ls_field *ref = ls_get(&l, "ref");
		if (ref && ref->str && ref->vlen > 0) {
			char *end;
			seq = strtol(ref->val, &end, 10);
			if (end != ref->val + ref->vlen || seq < 0 || seq >= count ||
			    sent_at[seq] == 0)
				seq = -1;
		}
		if (seq < 0) {
			fprintf(stderr, "bridge-agent: unexpected answer: %.*s\n", (int)len, line);
			return;
		}
		inflight--;
		if (is_sent) {
			nok++;
			backoff = 1000000;
		} else if (ls_is(ls_get(&l, "code"), "backpressure")) {
			retry_q[(rq_head + rq_len++) % count] = seq;
			retry_at = now_ns() + backoff;
			if (backoff < 64000000)
				backoff *= 2;
			nretries++;
		} else if (++nerrors <= 5) {
			fprintf(stderr, "bridge-agent: %.*s\n", (int)len, line);
		}
		sent_at[seq] = 0;
	} else if (ls_is(type, "command")) {
		const struct ls_field *name = ls_get(&l, "name");
		if (ls_is(name, "ping"))
			out_line("{\"type\":\"heartbeat\"}", 20);
		else if (ls_is(name, "stop"))
			stopping = 1;
	}
}

/* Takes the complete lines (stdio) or frames (WebSocket) out of ibuf. */
static void
in_process(void)
{
	long long t = now_ns();
	size_t pos = 0;
	if (!ws) {
		char *nl;
		while ((nl = memchr(ibuf + pos, '\n', ilen - pos))) {
			handle(ibuf + pos, (size_t)(nl - (ibuf + pos)), t);
			pos = (size_t)(nl - ibuf) + 1;
		}
	} else {
		while (ilen - pos >= 2) {
			unsigned char *h = (unsigned char *)ibuf + pos;
			uint64_t n = h[1] & 0x7f;
			size_t hl = 2;
			if (n == 126) {
				if (ilen - pos < 4)
					break;
				n = ((uint64_t)h[2] << 8) | h[3];
				hl = 4;
			} else if (n == 127) {
				if (ilen - pos < 10)
					break;
				n = 0;
				for (int i = 0; i < 8; i++)
					n = (n << 8) | h[2 + i];
				hl = 10;
			}
			if (h[1] & 0x80)
				die("masked frame from the server");
			if (ilen - pos - hl < n)
				break;
			int op = h[0] & 0x0f;
			char *p = ibuf + pos + hl;
			if (!(h[0] & 0x80))
				die("fragmented frame (not expected from dreamos)");
			if (op == 0x1) {
				handle(p, (size_t)n, t);
			} else if (op == 0x9) {
				out_frame(0xA, p, (size_t)n);
			} else if (op == 0x8) {
				out_frame(0x8, p, n >= 2 ? 2 : 0);
				out_flush();
				exit(0);
			}
			pos += hl + (size_t)n;
		}
	}
	memmove(ibuf, ibuf + pos, ilen - pos);
	ilen -= pos;
}

static void
wait_poll(int timeout_ms)
{
	struct pollfd p[2];
	nfds_t np = 1;
	p[0].fd = in_fd;
	p[0].events = POLLIN;
	if (olen > ooff) {
		if (in_fd == out_fd) {
			p[0].events |= POLLOUT;
		} else {
			p[1].fd = out_fd;
			p[1].events = POLLOUT;
			np = 2;
		}
	}
	int r = poll(p, np, timeout_ms);
	if (r < 0 && errno != EINTR)
		die("poll failed");
	if (r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
		if (icap - ilen < 65536 && !(ibuf = realloc(ibuf, (icap = icap * 2 + 65536) + 1)))
			die("out of memory");
		ssize_t n = read(in_fd, ibuf + ilen, icap - ilen);
		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			exit(0); /* dreamos is gone */
		if (n > 0) {
			ilen += (size_t)n;
			in_process();
		}
	}
	if (olen > ooff)
		out_flush();
}

static void
add_send(long seq)
{
	char line[1024];
	long long t = now_ns();
	size_t n = ls_send_line(&sender, line, seq, t);
	sent_at[seq] = t;
	out_line(line, n);
	inflight++;
}

int
main(int argc, char **argv)
{
	const char *wsaddr = NULL, *key = NULL;
	if (argc < 2 || (strcmp(argv[1], "producer") && strcmp(argv[1], "consumer")))
		die("usage: bridge-agent producer|consumer ... (see the file comment)");
	producer = !strcmp(argv[1], "producer");
	for (int i = 2; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			die("missing value");
		if (!strcmp(a, "--to"))
			to = v;
		else if (!strcmp(a, "--count"))
			count = atol(v);
		else if (!strcmp(a, "--window"))
			window = atol(v);
		else if (!strcmp(a, "--size"))
			size = atol(v);
		else if (!strcmp(a, "--go"))
			go_path = v;
		else if (!strcmp(a, "--out"))
			out_path = v;
		else if (!strcmp(a, "--ws"))
			wsaddr = v;
		else if (!strcmp(a, "--key"))
			key = v;
		else
			die("unknown option (see the file comment)");
	}
	if (!out_path || count <= 0 || window <= 0 || size < 64 || size > 400 ||
	    (producer && !to) || (!wsaddr != !key))
		die("bad arguments (see the file comment)");
	signal(SIGPIPE, SIG_IGN);
	const char *name;
	if (wsaddr) {
		ws = 1;
		name = ws_connect(wsaddr, key);
	} else {
		name = getenv("DREAMOS_AGENT_NAME");
		if (!name || !*name)
			name = producer ? "producer" : "consumer";
	}
	fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) | O_NONBLOCK);
	if (producer) {
		sent_at = calloc((size_t)count, sizeof *sent_at);
		retry_q = calloc((size_t)count, sizeof *retry_q);
		if (!sent_at || !retry_q)
			die("out of memory");
		if (ls_sender_init(&sender, to, size) != 0)
			die("bad --to or --size");
	} else if (!(lat = calloc((size_t)count, sizeof *lat))) {
		die("out of memory");
	}
	char hello[256];
	int n = snprintf(hello, sizeof hello,
	                 "{\"type\":\"hello\",\"proto\":1,\"name\":\"%s\",\"capabilities\":"
	                 "[\"bench\"],\"max_tasks\":0,\"version\":\"bridge-agent-1\"}",
	                 name);
	out_line(hello, (size_t)n);
	if (ilen > 0)
		in_process();
	while (!welcomed)
		wait_poll(-1);
	touch_ready();
	if (producer) {
		if (go_path) {
			struct stat sb;
			while (stat(go_path, &sb) != 0)
				wait_poll(1);
		}
		t_start = now_ns();
		while (nok + nerrors < count) {
			if (rq_len > 0 && now_ns() >= retry_at) {
				while (rq_len > 0 && inflight < window) {
					add_send(retry_q[rq_head]);
					rq_head = (rq_head + 1) % count;
					rq_len--;
				}
			}
			while (rq_len == 0 && nnew < count && inflight < window)
				add_send(nnew++);
			out_flush();
			int ms = -1;
			if (rq_len > 0) {
				long long left = retry_at - now_ns();
				ms = left > 0 ? (int)((left + 999999) / 1000000) : 0;
			}
			wait_poll(ms);
		}
		long long t1 = now_ns();
		char line[512];
		snprintf(line, sizeof line,
		         "sent=%ld errors=%ld retries=%ld start_ns=%lld end_ns=%lld rate=%.0f\n",
		         nok, nerrors, nretries, t_start, t1,
		         (double)count * 1e9 / (double)(t1 - t_start));
		write_result(line);
	}
	while (!stopping)
		wait_poll(-1);
	out_flush();
	return 0;
}
