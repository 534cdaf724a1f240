/* redis-bench.c — the Redis pub/sub peer of bench/bus.sh: a raw RESP client over TCP (plain
 * C, libc only; no hiredis, no redis-py).
 *
 * Usage:
 *   redis-bench PORT thr PUBLISHERS COUNT WINDOW SIZE
 *       one subscriber (this process) on channel "bench" and PUBLISHERS publisher processes;
 *       each publisher sends COUNT PUBLISH commands with a SIZE-byte payload, pipelined with
 *       at most WINDOW replies outstanding (as bus-producer waits for `sent`).  Prints
 *       "msgs=N secs=S msgs_per_s=R client_cpu_ns=C", counted at the subscriber: messages
 *       received over the time from the first publisher's start to the last message
 *       received; C is the CPU time (CLOCK_PROCESS_CPUTIME_ID) of the clients over their
 *       measured intervals: the subscriber's from the go to the last message, plus each
 *       publisher's from its start to its last reply (sent back through the result pipe).
 *   redis-bench PORT lat RATE COUNT SIZE
 *       one publisher sends a message every 1/RATE s whose payload starts with
 *       "t=<CLOCK_MONOTONIC ns>"; the subscriber takes the one-way latency of each.  Prints
 *       "n=N lat_p50_us=.. lat_p99_us=.. lat_max_us=..".
 * redis-server must run on 127.0.0.1:PORT. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static void
die(const char *msg)
{
	fprintf(stderr, "redis-bench: %s%s%s\n", msg, errno ? ": " : "",
	        errno ? strerror(errno) : "");
	exit(1);
}

static int
dial(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0)
		die("cannot connect to redis-server");
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return s;
}

static void
write_all(int s, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(s, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write");
		p += w;
		n -= (size_t)w;
	}
}

/* ---- RESP: one push message ("*3 $7 message $5 bench $N payload") --------- */

/* Parses "<c><integer>\r\n" at p; returns the position after it or NULL if incomplete. */
static const char *
resp_int(const char *p, const char *end, char c, long *v)
{
	if (p >= end)
		return NULL;
	if (*p != c) {
		errno = 0;
		fprintf(stderr, "redis-bench: unexpected reply: %.*s\n",
		        (int)(end - p > 80 ? 80 : end - p), p);
		exit(1);
	}
	const char *q = memchr(p, '\n', (size_t)(end - p));
	if (!q)
		return NULL;
	*v = strtol(p + 1, NULL, 10);
	return q + 1;
}

/* Parses one array of bulk strings or integers at p.  Returns its length, 0 if incomplete;
 * the last element (the payload of a message) in *last, *lastn. */
static size_t
resp_array(const char *p, const char *end, const char **last, long *lastn)
{
	const char *q = p;
	long n;
	if (!(q = resp_int(q, end, '*', &n)))
		return 0;
	for (long i = 0; i < n; i++) {
		if (q >= end)
			return 0;
		long len;
		if (*q == ':') {
			if (!(q = resp_int(q, end, ':', &len)))
				return 0;
			continue;
		}
		if (!(q = resp_int(q, end, '$', &len)))
			return 0;
		if (end - q < len + 2)
			return 0;
		*last = q;
		*lastn = len;
		q += len + 2;
	}
	return (size_t)(q - p);
}

static char *
publish_cmd(long size, size_t *n)
{
	char head[64];
	int h = snprintf(head, sizeof head, "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%ld\r\n", size);
	char *c = malloc((size_t)h + (size_t)size + 2);
	if (!c)
		die("malloc");
	memcpy(c, head, (size_t)h);
	memset(c + h, 'x', (size_t)size);
	memcpy(c + h + size, "\r\n", 2);
	*n = (size_t)h + (size_t)size + 2;
	return c;
}

/* A publisher process.  rate > 0: paced, with a timestamp; else pipelined with a window. */
static void
publisher(int port, long count, long window, long size, double rate, int ready_w, int go_r,
          int res_w)
{
	int s = dial(port);
	size_t cn;
	char *cmd = publish_cmd(size, &cn);
	char *tsat = cmd + cn - 2 - size; /* the payload */
	static char rbuf[1 << 16];
	char c = 1;
	if (write(ready_w, &c, 1) != 1 || read(go_r, &c, 1) != 0)
		die("sync");
	long long cpu0 = cpu_ns(), t0 = now_ns();
	long sent = 0, replies = 0;
	size_t batch_cap = (size_t)(window < 1000 ? window : 1000) * cn;
	char *batch = malloc(batch_cap);
	if (!batch)
		die("malloc");
	while (replies < count) {
		if (rate > 0) {
			if (sent < count) {
				long long due = t0 + (long long)(1e9 / rate * (double)sent);
				struct timespec ts = {.tv_sec = due / 1000000000LL,
				                      .tv_nsec = due % 1000000000LL};
				while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
				       EINTR)
					;
				char stamp[32];
				snprintf(stamp, sizeof stamp, "t=%020lld ", now_ns());
				memcpy(tsat, stamp, 23);
				write_all(s, cmd, cn);
				sent++;
			}
		} else {
			size_t bn = 0;
			while (sent < count && sent - replies < window && bn + cn <= batch_cap) {
				memcpy(batch + bn, cmd, cn);
				bn += cn;
				sent++;
			}
			if (bn)
				write_all(s, batch, bn);
		}
		/* Read the replies there are (":<subscribers>\r\n" each); block only when the
		 * window is full or everything is sent. */
		struct pollfd p = {.fd = s, .events = POLLIN};
		int blocking =
		    rate > 0 ? sent == count : (sent == count || sent - replies >= window);
		if (poll(&p, 1, blocking ? -1 : 0) > 0) {
			ssize_t r = read(s, rbuf, sizeof rbuf);
			if (r <= 0)
				die("read");
			for (ssize_t i = 0; i < r; i++) {
				if (rbuf[i] == '-') {
					errno = 0;
					die("redis-server answered an error");
				}
				replies += rbuf[i] == '\n';
			}
		}
	}
	long long t[3] = {t0, now_ns(), 0};
	t[2] = cpu_ns() - cpu0;
	if (write(res_w, t, sizeof t) != sizeof t)
		die("result");
	exit(0);
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
	long i = (long)(p * (double)n + 0.999999) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return n ? (double)v[i] / 1000.0 : 0;
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	int lat_mode = argc == 6 && !strcmp(argv[2], "lat");
	if (!(argc == 7 && !strcmp(argv[2], "thr")) && !lat_mode) {
		fprintf(stderr, "usage: redis-bench PORT thr PUBLISHERS COUNT WINDOW SIZE\n"
		                "       redis-bench PORT lat RATE COUNT SIZE\n");
		return 2;
	}
	int port = atoi(argv[1]);
	long pubs = lat_mode ? 1 : atol(argv[3]);
	double rate = lat_mode ? atof(argv[3]) : 0;
	long count = atol(argv[4]);
	long window = lat_mode ? count : atol(argv[5]);
	long size = atol(argv[lat_mode ? 5 : 6]);
	long total = pubs * count;

	/* Subscribe first, and wait for the confirmation. */
	int sub = dial(port);
	const char *subcmd = "*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n";
	write_all(sub, subcmd, strlen(subcmd));
	size_t cap = 1 << 22, len = 0;
	char *buf = malloc(cap);
	long long *lat = lat_mode ? malloc((size_t)total * sizeof *lat) : NULL;
	if (!buf || (lat_mode && !lat))
		die("malloc");
	for (;;) {
		ssize_t r = read(sub, buf + len, cap - len);
		if (r <= 0)
			die("subscribe");
		len += (size_t)r;
		const char *last;
		long lastn;
		size_t used = resp_array(buf, buf + len, &last, &lastn);
		if (used) {
			memmove(buf, buf + used, len - used);
			len -= used;
			break;
		}
	}

	int ready[2], go[2], res[2];
	if (pipe(ready) || pipe(go) || pipe(res))
		die("pipe");
	for (long i = 0; i < pubs; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGTERM); /* not outliving a failed run */
			close(go[1]);
			close(sub);
			publisher(port, count, window, size, rate, ready[1], go[0], res[1]);
		}
	}
	close(go[0]);
	char c;
	for (long i = 0; i < pubs; i++)
		if (read(ready[0], &c, 1) != 1)
			die("a publisher failed to start");
	close(go[1]); /* go */
	long long sub_cpu0 = cpu_ns(), sub_cpu = 0;

	long got = 0;
	long long last_ns = 0;
	while (got < total) {
		if (len == cap && !(buf = realloc(buf, cap *= 2)))
			die("malloc");
		ssize_t r = read(sub, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("the subscriber was disconnected");
		long long t = now_ns();
		len += (size_t)r;
		size_t off = 0, used;
		const char *last;
		long lastn;
		while (got < total && (used = resp_array(buf + off, buf + len, &last, &lastn))) {
			if (lastn != size) {
				errno = 0;
				die("unexpected payload size");
			}
			if (lat_mode)
				lat[got] = t - strtoll(last + 2, NULL, 10);
			got++;
			off += used;
		}
		last_ns = t;
		if (got == total)
			sub_cpu = cpu_ns() - sub_cpu0;
		memmove(buf, buf + off, len - off);
		len -= off;
	}
	long long t0 = 0, client_cpu = sub_cpu;
	for (long i = 0; i < pubs; i++) {
		long long t[3];
		if (read(res[0], t, sizeof t) != sizeof t)
			die("a publisher failed");
		if (i == 0 || t[0] < t0)
			t0 = t[0];
		client_cpu += t[2];
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	if (lat_mode) {
		qsort(lat, (size_t)total, sizeof *lat, cmp_ll);
		printf("n=%ld lat_p50_us=%.1f lat_p99_us=%.1f lat_max_us=%.1f\n", total,
		       pct_us(lat, total, 0.50), pct_us(lat, total, 0.99), pct_us(lat, total, 1.0));
	} else {
		double secs = (double)(last_ns - t0) / 1e9;
		printf("msgs=%ld secs=%.3f msgs_per_s=%.0f client_cpu_ns=%lld\n", total, secs,
		       (double)total / secs, client_cpu);
	}
	return 0;
}
