/* bus-consumer.c — the receiving side of bench/bus.sh: a CellPhone v1 agent (plain C, libc
 * only) that acks every message at once and measures what it receives.
 *
 * Usage: bus-consumer --count N --out FILE [--hold K]
 *   --count N   messages to wait for (the sum over all producers)
 *   --out FILE  where the result goes, written when N messages have arrived; OUT.ready is
 *               created once dreamos has answered `welcome`
 *   --hold K    acks out of order: the ack of every message whose id is a multiple of K
 *               waits for the next read, and goes out after that read's acks (as from a
 *               consumer that is slow on one message in K); 0 (default): none held
 * The agent's name comes from DREAMOS_AGENT_NAME; BUS_CONSUMER_DUMP, if set, names a file
 * that gets every latency (us) in arrival order, for looking at where the outliers fall.
 *
 * A message body made by bus-producer starts with "t=<CLOCK_MONOTONIC ns>": the one-way
 * latency of that message is the time it was read here minus that (same machine, same
 * clock).  Redeliveries (attempt > 1) are acked and not counted.
 *
 * Result (one line): received=N first_ns=T0 last_ns=T1 lat_p50_us=.. lat_p99_us=..
 * lat_max_us=.. dups=.. bad=.. cpu_ns=C  (first/last: when the first and the N-th message were
 * read; cpu_ns: this process's CPU time, CLOCK_PROCESS_CPUTIME_ID, from `welcome` to the
 * N-th message read, before the latencies are sorted).  After that the agent keeps acking,
 * answers ping, and stops on `stop` or EOF.
 *
 * Input is read(2) in big chunks, many lines per call; the acks of one chunk go out in one
 * write, as bench/tiny-agent.c does.  Each line is read in one pass (linescan.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "linescan.h"

static void
die(const char *msg)
{
	fprintf(stderr, "bus-consumer: %s\n", msg);
	exit(1);
}

static char *obuf;
static size_t olen, ocap;

static void
out_add(const char *s, size_t n)
{
	if (olen + n > ocap) {
		while (olen + n > ocap)
			ocap = ocap ? ocap * 2 : 1 << 16;
		if (!(obuf = realloc(obuf, ocap)))
			die("out of memory");
	}
	memcpy(obuf + olen, s, n);
	olen += n;
}

static void
out_flush(void)
{
	size_t off = 0;
	while (off < olen) {
		ssize_t n = write(1, obuf + off, olen - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(errno == EPIPE ? 0 : 1);
		off += (size_t)n;
	}
	olen = 0;
}

static long count, hold;
/* Held acks (--hold): those of the last read, and those of this one. */
static long long *held, *holding;
static size_t nheld, nholding;
static const char *out_path;
static long received, dups, bad;
static long long first_ns, last_ns, *lat;
static long long cpu0_ns, cpu1_ns; /* CPU time at `welcome` and at the N-th message */
static int done, stopping;

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
write_result(void)
{
	const char *dump = getenv("BUS_CONSUMER_DUMP");
	FILE *df = dump && *dump ? fopen(dump, "w") : NULL;
	if (df) { /* the latencies in arrival order, in us, one a line */
		for (long i = 0; i < received; i++)
			fprintf(df, "%.1f\n", (double)lat[i] / 1000.0);
		fclose(df);
	}
	qsort(lat, (size_t)received, sizeof *lat, cmp_ll);
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("cannot write the result");
	fprintf(f,
	        "received=%ld first_ns=%lld last_ns=%lld lat_p50_us=%.1f lat_p99_us=%.1f "
	        "lat_max_us=%.1f dups=%ld bad=%ld cpu_ns=%lld\n",
	        received, first_ns, last_ns, pct_us(lat, received, 0.50),
	        pct_us(lat, received, 0.99), received ? (double)lat[received - 1] / 1000.0 : 0.0,
	        dups, bad, cpu1_ns - cpu0_ns);
	fclose(f);
	rename(tmp, out_path);
}

static void
ack_add(long long id)
{
	char ack[64];
	size_t n = ls_ack_line(ack, id);
	ack[n++] = '\n';
	out_add(ack, n);
}

/* After a read's acks: the acks held from the read before go out, and this
 * read's held ones wait for the next. */
static void
acks_release(void)
{
	for (size_t i = 0; i < nheld; i++)
		ack_add(held[i]);
	long long *t = held;
	held = holding;
	holding = t;
	nheld = nholding;
	nholding = 0;
}

static void
handle(const char *line, size_t len, long long t)
{
	struct ls_line l;
	if (ls_scan(&l, line, len) < 0)
		return;
	const struct ls_field *type = ls_get(&l, "type");
	if (ls_is(type, "message")) {
		const struct ls_field *id = ls_get(&l, "id");
		if (!id)
			return;
		long long mid = ls_int(id, 0);
		if (hold > 0 && mid % hold == 0 && nholding < (size_t)count)
			holding[nholding++] = mid;
		else
			ack_add(mid);
		if (ls_int(ls_get(&l, "attempt"), 1) > 1) {
			dups++;
			return;
		}
		if (done)
			return;
		const struct ls_field *body = ls_get(&l, "body");
		long long sent = 0;
		if (body && body->str && body->vlen > 2 && !strncmp(body->val, "t=", 2))
			sent = strtoll(body->val + 2, NULL, 10);
		if (sent <= 0)
			bad++;
		if (received == 0)
			first_ns = t;
		lat[received++] = sent > 0 ? t - sent : 0;
		last_ns = t;
		if (received == count) {
			cpu1_ns = cpu_ns(); /* before the dump and the sort */
			done = 1;
			write_result();
		}
	} else if (ls_is(type, "welcome")) {
		cpu0_ns = cpu_ns();
		char ready[4096];
		snprintf(ready, sizeof ready, "%s.ready", out_path);
		FILE *f = fopen(ready, "w");
		if (f)
			fclose(f);
	} else if (ls_is(type, "command")) {
		const struct ls_field *name = ls_get(&l, "name");
		if (ls_is(name, "ping"))
			out_add("{\"type\":\"heartbeat\"}\n", 21);
		else if (ls_is(name, "stop"))
			stopping = 1;
	} else if (ls_is(type, "error")) {
		fprintf(stderr, "bus-consumer: %s\n", line);
	}
}

int
main(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--count"))
			count = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--out"))
			out_path = argv[i + 1];
		else if (!strcmp(argv[i], "--hold"))
			hold = atol(argv[i + 1]);
		else
			die("usage: bus-consumer --count N --out FILE [--hold K]");
	}
	if (count <= 0 || !out_path || hold < 0)
		die("usage: bus-consumer --count N --out FILE [--hold K]");
	const char *name = getenv("DREAMOS_AGENT_NAME");
	if (!name || !*name)
		name = "consumer";
	signal(SIGPIPE, SIG_IGN);
	if (!(lat = calloc((size_t)count, sizeof *lat)) ||
	    (hold > 0 && (!(held = calloc((size_t)count, sizeof *held)) ||
	                  !(holding = calloc((size_t)count, sizeof *holding)))))
		die("out of memory");
	char hello[256];
	int hn = snprintf(hello, sizeof hello,
	                  "{\"type\":\"hello\",\"proto\":1,\"name\":\"%s\",\"capabilities\":"
	                  "[\"bench\"],\"max_tasks\":0,\"version\":\"bus-consumer-1\"}\n",
	                  name);
	out_add(hello, (size_t)hn);
	out_flush();

	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		die("out of memory");
	while (!stopping) {
		if (len == cap && !(buf = realloc(buf, cap *= 2)))
			die("out of memory");
		ssize_t n = read(0, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		long long t = now_ns(); /* one clock read per chunk: when it was read */
		len += (size_t)n;
		char *start = buf, *nl;
		while (!stopping && (nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
			*nl = '\0';
			handle(start, (size_t)(nl - start), t);
			start = nl + 1;
		}
		len -= (size_t)(start - buf);
		memmove(buf, start, len);
		acks_release();
		if (done) /* (nothing more to wait for) */
			acks_release();
		out_flush();
	}
	out_flush();
	return 0;
}
