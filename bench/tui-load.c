/* tui-load.c — a load-generator agent (CellPhone v1) for bench/tui.sh.  Plain C, libc only.
 * Usage: tui-load [LOGS_PER_S [MSGS_PER_S [TO [MAX_LOGS [MAX_MSGS]]]]]
 *   LOGS_PER_S  `log` lines per second (default 20000; 0: none)
 *   MSGS_PER_S  `send` lines per second to agent TO (default 5000; 0: none)
 *   TO          the recipient of the messages (default "sink")
 *   MAX_LOGS, MAX_MSGS  stop emitting after that many (default 0: never stop)
 * A rate of -1 means "as fast as the orchestrator takes them" (until MAX_*).
 * Environment: DREAMOS_AGENT_NAME (default "load").
 * Sends hello, waits for welcome, then every 5 ms writes the lines that are due by the
 * clock since the start (so a stall is caught up, at most 1 s worth at a time), one
 * buffered write per batch.  Lines from the orchestrator (welcome, sent, commands) are
 * read and discarded, except command "stop" (exit 0) and "ping" (heartbeat); a heartbeat
 * also goes out every 2 s.  Writes block when the orchestrator back-pressures: the rate
 * then drops to what it takes, which the benchmark measures from the orchestrator side.
 * Log messages are ~100 bytes of text, message bodies a small JSON object. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char out[1 << 20];
static size_t outlen;

static void
flush_out(void)
{
	size_t off = 0;
	while (off < outlen) {
		ssize_t n = write(1, out + off, outlen - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(0); /* the orchestrator is gone */
		off += (size_t)n;
	}
	outlen = 0;
}

static void
put(const char *s, size_t n)
{
	if (outlen + n > sizeof out)
		flush_out();
	memcpy(out + outlen, s, n);
	outlen += n;
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads what is there on stdin (non-blocking); returns 1 on "stop" or EOF. */
static int
drain_in(void)
{
	static char buf[1 << 16];
	static size_t len;
	for (;;) {
		ssize_t n = read(0, buf + len, sizeof buf - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return 0; /* EAGAIN */
		if (n == 0)
			return 1;
		len += (size_t)n;
		buf[len] = '\0';
		char *start = buf, *nl;
		while ((nl = strchr(start, '\n')) != NULL) {
			*nl = '\0';
			if (strstr(start, "\"type\":\"command\"") ||
			    strstr(start, "\"type\": \"command\"")) {
				if (strstr(start, "\"stop\""))
					return 1;
				if (strstr(start, "\"ping\""))
					put("{\"type\":\"heartbeat\"}\n", 21);
			}
			start = nl + 1;
		}
		len -= (size_t)(start - buf);
		memmove(buf, start, len);
		if (len >= sizeof buf - 1)
			len = 0; /* a line we do not care about */
	}
}

int
main(int argc, char **argv)
{
	double log_rate = argc > 1 ? strtod(argv[1], NULL) : 20000;
	double msg_rate = argc > 2 ? strtod(argv[2], NULL) : 5000;
	const char *to = argc > 3 ? argv[3] : "sink";
	long long max_logs = argc > 4 ? strtoll(argv[4], NULL, 10) : 0;
	long long max_msgs = argc > 5 ? strtoll(argv[5], NULL, 10) : 0;
	const char *name = getenv("DREAMOS_AGENT_NAME");
	char line[512];
	signal(SIGPIPE, SIG_IGN);

	int n = snprintf(line, sizeof line,
	                 "{\"type\":\"hello\",\"proto\":1,\"name\":\"%s\",\"capabilities\":[],"
	                 "\"max_tasks\":0,\"version\":\"tui-load-1\"}\n",
	                 name && *name ? name : "load");
	put(line, (size_t)n);
	flush_out();
	/* Wait for the welcome (blocking), then read without blocking. */
	{
		char buf[4096];
		size_t len = 0;
		for (;;) {
			ssize_t r = read(0, buf + len, sizeof buf - 1 - len);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return 1;
			len += (size_t)r;
			buf[len] = '\0';
			if (strstr(buf, "welcome"))
				break;
			if (len >= sizeof buf - 1)
				len = 0;
		}
	}
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

	double t0 = now_s(), next_hb = t0 + 2;
	long long logs = 0, msgs = 0;
	for (;;) {
		if (drain_in())
			break;
		double t = now_s();
		if (t >= next_hb) {
			put("{\"type\":\"heartbeat\"}\n", 21);
			next_hb = t + 2;
		}
		long long want_logs = log_rate < 0 ? logs + 2000 : (long long)((t - t0) * log_rate);
		long long want_msgs = msg_rate < 0 ? msgs + 500 : (long long)((t - t0) * msg_rate);
		if (max_logs > 0 && want_logs > max_logs)
			want_logs = max_logs;
		if (max_msgs > 0 && want_msgs > max_msgs)
			want_msgs = max_msgs;
		if (log_rate > 0 && want_logs - logs > (long long)log_rate)
			logs = want_logs - (long long)log_rate; /* at most 1 s of backlog */
		if (msg_rate > 0 && want_msgs - msgs > (long long)msg_rate)
			msgs = want_msgs - (long long)msg_rate;
		/* Interleaved in proportion, one buffered write for the batch. */
		long long dl = want_logs > logs ? want_logs - logs : 0;
		long long dm = want_msgs > msgs ? want_msgs - msgs : 0;
		for (long long el = 0, em = 0; el < dl || em < dm;) {
			if (em >= dm || (el < dl && el * dm <= em * dl)) {
				n = snprintf(
				    line, sizeof line,
				    "{\"type\":\"log\",\"level\":\"info\",\"msg\":\"load line "
				    "%lld: "
				    "the quick brown fox jumps over the lazy dog, step %lld of "
				    "the benchmark\"}\n",
				    logs, logs % 1000);
				put(line, (size_t)n);
				logs++, el++;
			} else {
				n = snprintf(
				    line, sizeof line,
				    "{\"type\":\"send\",\"to\":\"%s\",\"body\":{\"n\":%lld,"
				    "\"text\":\"status report from the load generator\"}}\n",
				    to, msgs);
				put(line, (size_t)n);
				msgs++, em++;
			}
		}
		flush_out();
		struct pollfd pfd = {.fd = 0, .events = POLLIN};
		int done = (log_rate == 0 || (max_logs > 0 && logs >= max_logs)) &&
		           (msg_rate == 0 || (max_msgs > 0 && msgs >= max_msgs));
		poll(&pfd, 1, done ? 1000 : 5);
	}
	flush_out();
	return 0;
}
