/* beans-worker.c — a beanstalkd worker for bench/tasks.py, in C like the
 * tiny agent on the dreamos side, so that the cycle rate compares the two
 * servers and not a C client with a Python one.
 *
 * usage: beans-worker PORT OUT
 *
 * Connects to beanstalkd on 127.0.0.1:PORT and loops: reserve-with-timeout
 * 1; on RESERVED, notes (job id, wall-clock ms) and writes "delete ID" and
 * the next reserve in one write (one round trip per job, as the tiny agent
 * answers task.assign with task.done).  SIGTERM asks it to stop: it leaves
 * at the next TIMED_OUT (within a second, once the queue is empty) and
 * writes [[id, ms], ...] as JSON to OUT.  Exit 0, or 1 with a message. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

struct done {
	long long id;
	double ms;
};

static void
on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

static void
die(const char *what)
{
	fprintf(stderr, "beans-worker: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void
send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write");
		p += w;
		n -= (size_t)w;
	}
}

int
main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: beans-worker PORT OUT\n");
		return 2;
	}
	struct sigaction sa = {.sa_handler = on_term}; /* no SA_RESTART: read returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	struct sockaddr_in addr = {.sin_family = AF_INET,
	                           .sin_port = htons((uint16_t)atoi(argv[1]))};
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
		die("connect");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	size_t cap = 1 << 16, n = 0;
	struct done *done = malloc(cap * sizeof *done);
	if (done == NULL)
		die("malloc");
	static char buf[1 << 16];
	size_t len = 0, skip = 0; /* skip: body bytes (and CRLF) still to drop */
	const char reserve[] = "reserve-with-timeout 1\r\n";
	send_all(fd, reserve, sizeof reserve - 1);
	for (;;) {
		if (len == sizeof buf) {
			fprintf(stderr, "beans-worker: a reply line longer than %zu bytes\n", len);
			return 1;
		}
		ssize_t r = read(fd, buf + len, sizeof buf - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			errno = r == 0 ? ECONNRESET : errno;
			die("read");
		}
		len += (size_t)r;
		size_t pos = 0;
		for (;;) {
			if (skip > 0) {
				size_t k = len - pos < skip ? len - pos : skip;
				pos += k;
				skip -= k;
				if (skip > 0)
					break;
			}
			char *eol = memchr(buf + pos, '\n', len - pos);
			if (eol == NULL)
				break;
			char *line = buf + pos;
			pos = (size_t)(eol - buf) + 1;
			*eol = '\0'; /* sscanf and strncmp below see one line */
			long long id;
			size_t bytes;
			if (sscanf(line, "RESERVED %lld %zu", &id, &bytes) == 2) {
				skip = bytes + 2;
				if (n == cap) {
					cap *= 2;
					if ((done = realloc(done, cap * sizeof *done)) == NULL)
						die("realloc");
				}
				done[n].id = id;
				done[n++].ms = now_ms();
				char out[96];
				int m = snprintf(out, sizeof out, "delete %lld\r\n%s", id, reserve);
				send_all(fd, out, (size_t)m);
			} else if (strncmp(line, "DELETED", 7) == 0) {
				/* the reply to a delete: nothing to do */
			} else if (strncmp(line, "TIMED_OUT", 9) == 0 ||
			           strncmp(line, "DEADLINE_SOON", 13) == 0) {
				if (stopping)
					goto out;
				send_all(fd, reserve, sizeof reserve - 1);
			} else {
				fprintf(stderr, "beans-worker: unexpected reply: %s\n", line);
				return 1;
			}
		}
		memmove(buf, buf + pos, len - pos);
		len -= pos;
	}
out:
	close(fd);
	FILE *f = fopen(argv[2], "w");
	if (f == NULL)
		die(argv[2]);
	fputc('[', f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s[%lld,%.3f]", i ? "," : "", done[i].id, done[i].ms);
	fputs("]\n", f);
	if (fclose(f) != 0)
		die(argv[2]);
	free(done);
	return 0;
}
