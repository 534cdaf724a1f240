/* bus-producer.c — the sending side of bench/bus.sh: a CellPhone v1 agent (plain C, libc only)
 * that sends `send` messages with fixed-size bodies to another agent through dreamos.
 *
 * Usage: bus-producer --to NAME --count N --out FILE [--window W] [--rate R] [--size S]
 *                     [--go FILE]
 *   --count N   messages to send (and to see answered with `sent`)
 *   --window W  throughput mode: at most W sends without their `sent` answer (default 1000)
 *   --rate R    latency mode: send R messages per second at a fixed pace instead (window
 *               unlimited); 0 (default) is throughput mode
 *   --size S    bytes of each body as compact JSON, quotes included (default 256, min 64)
 *   --go FILE   after `welcome`, create OUT.ready and wait for FILE to exist before sending,
 *               so that several producers start together
 *   --out FILE  where the result goes, written once every `sent` has come back
 * The agent's name comes from DREAMOS_AGENT_NAME.
 *
 * A send refused with `backpressure` (the consumer's inbox is full) is sent again after a
 * backoff (1 ms, doubling while refused, up to 64 ms), and no new ones go out meanwhile.
 *
 * Each body is a JSON string "t=<CLOCK_MONOTONIC ns, 20 digits> s=<seq> xxx...", padded to
 * --size bytes; bus-consumer takes the one-way latency from it.  Each send carries ref=<seq>,
 * so the `sent` answer gives the durability round trip (send written -> `sent` read).
 *
 * Result (one line): sent=N errors=E retries=B start_ns=T0 end_ns=T1 rate=R(msgs/s) sent_p50_us=..
 * sent_p99_us=.. cpu_ns=C  where start is when the first send was written and end when the last
 * `sent` was read; cpu_ns is this process's CPU time (CLOCK_PROCESS_CPUTIME_ID) from start to
 * end.  After that the agent stays connected (answering ping, stopping on stop or EOF).
 *
 * I/O: stdin is read(2) in big chunks and stdout written non-blocking from one buffer, both
 * driven by poll(2), so the producer never blocks writing while dreamos waits for it to read
 * its `sent` answers. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "linescan.h"

static void
die(const char *msg)
{
	fprintf(stderr, "bus-producer: %s\n", msg);
	exit(1);
}

/* ---- output buffer, written without blocking ---------------------------- */

static char *obuf;
static size_t olen, ocap, ooff;

static void
out_add(const char *s, size_t n)
{
	if (olen + n > ocap) {
		if (ooff > 0) { /* compact first */
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

/* Writes what it can; exits if dreamos is gone. */
static void
out_flush(void)
{
	while (ooff < olen) {
		ssize_t n = write(1, obuf + ooff, olen - ooff);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
			exit(errno == EPIPE ? 0 : 1);
		ooff += (size_t)n;
	}
	olen = ooff = 0;
}

/* ---- state --------------------------------------------------------------- */

static const char *to = NULL, *out_path = NULL, *go_path = NULL, *name = NULL;
static long count = 0, window = 1000, size = 256;
static double rate = 0;
static long nnew;         /* sequence numbers used so far (each sent at least once) */
static long inflight;     /* sends written, not yet answered */
static long nok, nerrors; /* answered with `sent`; with an error other than backpressure */
static long nretries;     /* sends answered with `backpressure`, sent again */
static long *retry_q;     /* those, to send again (a ring of count entries) */
static long rq_head, rq_len;
static long long retry_at;          /* not before this (monotonic ns) */
static long long backoff = 1000000; /* ns; doubles while refused, up to 64 ms */
static int welcomed, stopping;
static long long *sent_at, *rtt; /* per seq: when written; send -> `sent` in ns */
static long nrtt;

static void
handle(const char *line, size_t len)
{
	struct ls_line l;
	if (ls_scan(&l, line, len) < 0)
		return;
	const struct ls_field *type = ls_get(&l, "type");
	if (ls_is(type, "welcome")) {
		welcomed = 1;
	} else if (ls_is(type, "sent") || ls_is(type, "error")) {
		int is_sent = ls_is(type, "sent");
		if (!is_sent && !welcomed)
			die("rejected by dreamos");
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
			fprintf(stderr, "bus-producer: unexpected answer: %s\n", line);
			return;
		}
		inflight--;
		if (is_sent) {
			rtt[nrtt++] = now_ns() - sent_at[seq];
			nok++;
			backoff = 1000000;
		} else if (ls_is(ls_get(&l, "code"), "backpressure")) {
			/* The consumer's inbox is full: send it again a little later, as an
			 * agent should. */
			retry_q[(rq_head + rq_len++) % count] = seq;
			retry_at = now_ns() + backoff;
			if (backoff < 64000000)
				backoff *= 2;
			nretries++;
		} else {
			if (++nerrors <= 5)
				fprintf(stderr, "bus-producer: %s\n", line);
		}
		sent_at[seq] = 0;
	} else if (ls_is(type, "command")) {
		const struct ls_field *cname = ls_get(&l, "name");
		if (ls_is(cname, "ping"))
			out_add("{\"type\":\"heartbeat\"}\n", 21);
		else if (ls_is(cname, "stop"))
			stopping = 1;
	}
}

/* Reads what is there; returns 0 on EOF. */
static int
read_input(void)
{
	static char *buf;
	static size_t len, cap;
	if (!buf && !(buf = malloc(cap = 1 << 20)))
		die("out of memory");
	if (len == cap && !(buf = realloc(buf, cap *= 2)))
		die("out of memory");
	ssize_t n = read(0, buf + len, cap - len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	if (n <= 0)
		return 0;
	len += (size_t)n;
	char *start = buf, *nl;
	while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
		*nl = '\0';
		handle(start, (size_t)(nl - start));
		start = nl + 1;
	}
	len -= (size_t)(start - buf);
	memmove(buf, start, len);
	return 1;
}

static struct ls_sender sender;

static void
add_send(long seq)
{
	char line[1024];
	long long t = now_ns();
	size_t n = ls_send_line(&sender, line, seq, t);
	line[n++] = '\n';
	sent_at[seq] = t;
	out_add(line, n);
	inflight++;
}

/* Sends again what was refused with backpressure, if it is time, within the window. */
static void
send_retries(long limit)
{
	if (rq_len == 0 || now_ns() < retry_at)
		return;
	while (rq_len > 0 && inflight < limit) {
		add_send(retry_q[rq_head]);
		rq_head = (rq_head + 1) % count;
		rq_len--;
	}
}

/* The poll timeout: until the next retry is due, or timeout_ms. */
static int
retry_wait(int timeout_ms)
{
	if (rq_len == 0)
		return timeout_ms;
	long long left = retry_at - now_ns();
	int ms = left > 0 ? (int)((left + 999999) / 1000000) : 0;
	return timeout_ms < 0 || ms < timeout_ms ? ms : timeout_ms;
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
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return (double)v[i] / 1000.0;
}

static void
wait_poll(int timeout_ms)
{
	struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = 1, .events = POLLOUT}};
	int np = olen > ooff ? 2 : 1;
	int r = poll(p, (nfds_t)np, timeout_ms);
	if (r < 0 && errno != EINTR)
		die("poll failed");
	if (r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)) && !read_input())
		exit(0); /* dreamos is gone */
	if (olen > ooff)
		out_flush();
}

int
main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			die("missing value");
		if (!strcmp(a, "--to"))
			to = v;
		else if (!strcmp(a, "--count"))
			count = atol(v);
		else if (!strcmp(a, "--window"))
			window = atol(v);
		else if (!strcmp(a, "--rate"))
			rate = atof(v);
		else if (!strcmp(a, "--size"))
			size = atol(v);
		else if (!strcmp(a, "--go"))
			go_path = v;
		else if (!strcmp(a, "--out"))
			out_path = v;
		else
			die("usage: bus-producer --to NAME --count N --out FILE [--window W] "
			    "[--rate R] [--size S] [--go FILE]");
		i++;
	}
	if (!to || !out_path || count <= 0 || window <= 0 || size < 64 || size > 400)
		die("bad arguments (see the file comment)");
	name = getenv("DREAMOS_AGENT_NAME");
	if (!name || !*name)
		name = "producer";
	signal(SIGPIPE, SIG_IGN);
	fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
	sent_at = calloc((size_t)count, sizeof *sent_at);
	retry_q = calloc((size_t)count, sizeof *retry_q);
	rtt = calloc((size_t)count, sizeof *rtt);
	if (!sent_at || !rtt || !retry_q)
		die("out of memory");
	if (ls_sender_init(&sender, to, size) != 0)
		die("bad --to or --size");

	char hello[256];
	int n = snprintf(hello, sizeof hello,
	                 "{\"type\":\"hello\",\"proto\":1,\"name\":\"%s\",\"capabilities\":"
	                 "[\"bench\"],\"max_tasks\":0,\"version\":\"bus-producer-1\"}\n",
	                 name);
	out_add(hello, (size_t)n);
	while (!welcomed)
		wait_poll(-1);
	if (go_path) {
		char ready[4096];
		snprintf(ready, sizeof ready, "%s.ready", out_path);
		FILE *f = fopen(ready, "w");
		if (!f)
			die("cannot create the ready file");
		fclose(f);
		struct stat sb;
		while (stat(go_path, &sb) != 0)
			wait_poll(1);
	}

	long long cpu0 = cpu_ns(), t0 = now_ns();
	if (rate > 0) {
		/* Latency mode: a fixed pace, one send every 1/rate s. */
		double step = 1e9 / rate;
		while (nok + nerrors < count) {
			while (nnew < count && now_ns() >= t0 + (long long)(step * (double)nnew))
				add_send(nnew++);
			send_retries(count);
			out_flush();
			/* Sleep until the next send is due (poll rounds up to the millisecond; the
			 * body's timestamp is taken when the line is made, so lateness does not
			 * count as latency). */
			long long left = t0 + (long long)(step * (double)nnew) - now_ns();
			int ms =
			    nnew < count ? (left > 0 ? (int)((left + 999999) / 1000000) : 0) : -1;
			wait_poll(retry_wait(ms));
		}
	} else {
		while (nok + nerrors < count) {
			send_retries(window);
			while (rq_len == 0 && nnew < count && inflight < window)
				add_send(nnew++); /* nothing new while refused ones wait */
			out_flush();
			wait_poll(retry_wait(-1));
		}
	}
	long long t1 = now_ns(), cpu1 = cpu_ns();
	qsort(rtt, (size_t)nrtt, sizeof *rtt, cmp_ll);
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("cannot write the result");
	fprintf(f,
	        "sent=%ld errors=%ld retries=%ld start_ns=%lld end_ns=%lld rate=%.0f "
	        "sent_p50_us=%.1f sent_p99_us=%.1f cpu_ns=%lld\n",
	        nok, nerrors, nretries, t0, t1, (double)count * 1e9 / (double)(t1 - t0),
	        pct_us(rtt, nrtt, 0.50), pct_us(rtt, nrtt, 0.99), cpu1 - cpu0);
	fclose(f);
	rename(tmp, out_path);
	while (!stopping)
		wait_poll(-1);
	out_flush();
	return 0;
}
