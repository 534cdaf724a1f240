/* echo.c — the floor of bench/bus.sh: a raw TCP echo over loopback (plain C, libc only).
 *
 * Usage:
 *   echo free-port
 *       prints a TCP port of 127.0.0.1 that is free right now (for redis-server)
 *   echo thr CLIENTS COUNT WINDOW SIZE
 *       throughput: an echo server (one process, poll(2), like redis-server and dreamos) and
 *       CLIENTS client processes; each sends COUNT messages of SIZE bytes, at most WINDOW of
 *       them not yet echoed back (written in pieces as big as the window allows), and
 *       reads the echo.  Bytes only, no framing or parsing: the transport's ceiling.  Prints
 *       "msgs=N secs=S msgs_per_s=R" (from the first client's start to the last one's end).
 *   echo lat RATE COUNT SIZE
 *       latency: one client sends a SIZE-byte message every 1/RATE s and waits for its echo;
 *       prints "n=N rtt_p50_us=.. rtt_p99_us=.. rtt_max_us=.." (round trips).
 * Sockets have TCP_NODELAY, like redis-server's. */
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

#define MAXCONN 64

static void
die(const char *msg)
{
	fprintf(stderr, "echo: %s: %s\n", msg, strerror(errno));
	exit(1);
}

static int
listen_any(int *port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (s < 0)
		die("socket");
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 128) != 0 ||
	    getsockname(s, (struct sockaddr *)&a, &al) != 0)
		die("bind/listen");
	*port = ntohs(a.sin_port);
	return s;
}

static int
dial(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0)
		die("connect");
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return s;
}

/* The server: echoes every byte back on its connection, until killed. */
static void
serve(int ls)
{
	struct pollfd p[MAXCONN + 1];
	int n = 1, one = 1;
	static char buf[1 << 16];
	p[0] = (struct pollfd){.fd = ls, .events = POLLIN};
	for (;;) {
		if (poll(p, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		for (int i = n - 1; i >= 1; i--) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = read(p[i].fd, buf, sizeof buf);
			if (r <= 0) {
				close(p[i].fd);
				p[i] = p[--n];
				continue;
			}
			for (ssize_t off = 0; off < r;) {
				ssize_t w = write(p[i].fd, buf + off, (size_t)(r - off));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					break;
				off += w;
			}
		}
		if ((p[0].revents & POLLIN) && n <= MAXCONN) {
			int c = accept(ls, NULL, NULL);
			if (c >= 0) {
				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				p[n++] = (struct pollfd){.fd = c, .events = POLLIN};
			}
		}
	}
}

static pid_t
start_server(int *port)
{
	int ls = listen_any(port);
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* not outliving a failed run */
		serve(ls);
	}
	close(ls);
	return pid;
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

/* One throughput client: returns its start and end in res[0..1] through the pipe. */
static void
thr_client(int port, long count, long window, long size, int ready_w, int go_r, int res_w)
{
	int s = dial(port);
	fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
	/* Writes go out in as big pieces as the window allows (as redis-bench and
	 * bus-producer batch theirs): the bytes of a window of messages. */
	size_t wcap = (size_t)(window * size);
	char *wbuf = malloc(wcap), *rbuf = malloc(1 << 16);
	if (!wbuf || !rbuf)
		die("malloc");
	memset(wbuf, 'x', wcap);
	char c = 1;
	if (write(ready_w, &c, 1) != 1 || read(go_r, &c, 1) != 0)
		die("sync");
	long long t[2] = {now_ns(), 0};
	long long sent_bytes = 0, recv_bytes = 0, total = (long long)count * size;
	while (recv_bytes < total) {
		/* Write while the window has room. */
		long long room = (long long)wcap - (sent_bytes - recv_bytes);
		if (room > total - sent_bytes)
			room = total - sent_bytes;
		if (room > 0) {
			ssize_t w = write(s, wbuf, (size_t)room);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				die("write");
			if (w > 0)
				sent_bytes += w;
		}
		struct pollfd p = {.fd = s, .events = POLLIN};
		if (sent_bytes < total && sent_bytes - recv_bytes < (long long)wcap)
			p.events |= POLLOUT;
		poll(&p, 1, -1);
		for (;;) {
			ssize_t r = read(s, rbuf, 1 << 16);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (r <= 0)
				die("read");
			recv_bytes += r;
		}
	}
	t[1] = now_ns();
	if (write(res_w, t, sizeof t) != sizeof t)
		die("result");
	exit(0);
}

static void
thr(long clients, long count, long window, long size)
{
	int port, ready[2], go[2], res[2];
	pid_t srv = start_server(&port);
	if (pipe(ready) || pipe(go) || pipe(res))
		die("pipe");
	for (long i = 0; i < clients; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGTERM); /* not outliving a failed run */
			close(go[1]);
			thr_client(port, count, window, size, ready[1], go[0], res[1]);
		}
	}
	close(go[0]);
	char c;
	for (long i = 0; i < clients; i++)
		if (read(ready[0], &c, 1) != 1)
			die("ready");
	close(go[1]); /* go */
	long long t0 = 0, t1 = 0;
	for (long i = 0; i < clients; i++) {
		long long t[2];
		if (read(res[0], t, sizeof t) != sizeof t)
			die("a client failed");
		if (i == 0 || t[0] < t0)
			t0 = t[0];
		if (t[1] > t1)
			t1 = t[1];
	}
	kill(srv, SIGTERM); /* the clients are done: stop the server */
	while (wait(NULL) > 0 || errno == EINTR)
		;
	double secs = (double)(t1 - t0) / 1e9;
	printf("msgs=%ld secs=%.3f msgs_per_s=%.0f\n", clients * count, secs,
	       (double)(clients * count) / secs);
}

static void
lat(double rate, long count, long size)
{
	int port;
	pid_t srv = start_server(&port);
	int s = dial(port);
	char *msg = malloc((size_t)size), *rbuf = malloc((size_t)size);
	long long *rtt = malloc((size_t)count * sizeof *rtt);
	if (!msg || !rbuf || !rtt)
		die("malloc");
	memset(msg, 'x', (size_t)size);
	long long t0 = now_ns();
	for (long i = 0; i < count; i++) {
		long long due = t0 + (long long)(1e9 / rate * (double)i);
		struct timespec ts = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		long long t = now_ns();
		snprintf(msg, 32, "t=%020lld", t);
		msg[22] = ' ';
		if (write(s, msg, (size_t)size) != size)
			die("write");
		for (long got = 0; got < size;) {
			ssize_t r = read(s, rbuf + got, (size_t)(size - got));
			if (r <= 0)
				die("read");
			got += r;
		}
		rtt[i] = now_ns() - t;
	}
	kill(srv, SIGTERM);
	waitpid(srv, NULL, 0);
	qsort(rtt, (size_t)count, sizeof *rtt, cmp_ll);
	printf("n=%ld rtt_p50_us=%.1f rtt_p99_us=%.1f rtt_max_us=%.1f\n", count,
	       pct_us(rtt, count, 0.50), pct_us(rtt, count, 0.99), pct_us(rtt, count, 1.0));
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 2 && !strcmp(argv[1], "free-port")) {
		int port, s = listen_any(&port);
		close(s);
		printf("%d\n", port);
	} else if (argc == 6 && !strcmp(argv[1], "thr")) {
		thr(atol(argv[2]), atol(argv[3]), atol(argv[4]), atol(argv[5]));
	} else if (argc == 5 && !strcmp(argv[1], "lat")) {
		lat(atof(argv[2]), atol(argv[3]), atol(argv[4]));
	} else {
		fprintf(stderr, "usage: echo free-port | thr CLIENTS COUNT WINDOW SIZE | "
		                "lat RATE COUNT SIZE\n");
		return 2;
	}
	return 0;
}
