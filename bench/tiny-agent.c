/* tiny-agent.c — the smallest useful CellPhone v1 agent, for benchmarks.  Plain C, libc only.
 * Usage: tiny-agent [CAPABILITY...].  Environment: DREAMOS_AGENT_NAME (default "tiny"),
 * TINY_AGENT_MAX_TASKS (default 1), TINY_AGENT_HEARTBEAT_MS (heartbeat period; 0: none; unset:
 * DREAMOS_HEARTBEAT_INTERVAL, which the orchestrator sets, else none).
 * Sends hello, then for each line: "message" -> ack its id, "task.assign" -> task.done at
 * once, command "ping" -> heartbeat, command "stop" -> exit 0.  Input is read(2) into one
 * growing buffer (many lines per system call), not stdio, since poll(2) cannot see lines
 * already sitting in a FILE buffer; output is buffered and flushed once per batch.  Ids are
 * echoed verbatim; only top-level keys (and "id" in the top-level "task") count, so a body
 * holding "id" or "type" keys changes nothing. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUF (64u << 20) /* a longer line is skipped */
#define FIELD   64
struct fields {
	char type[FIELD], name[FIELD], key1[FIELD], id[FIELD], task_id[FIELD];
};

/* Flushes stdout; exits quietly if the orchestrator has gone away. */
static void
flush_out(void)
{
	if (fflush(stdout) != 0)
		exit(errno == EPIPE ? 0 : 1);
}

/* Writes s as a JSON string literal. */
static void
put_json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) /* escape '"' and '\\', control characters as \u00XX */
		printf(*s == '"' || *s == '\\' ? "\\%c"
		       : (*s > 0 && *s < 0x20) ? "\\u%04x"
		                               : "%c",
		       *s);
	putchar('"');
}

/* Skips the JSON string at p (on its opening quote) and copies up to
 * FIELD-1 bytes of it to out: its contents, or if raw the literal with its
 * quotes.  Returns the position after the closing quote. */
static const char *
scan_str(const char *p, char *out, int raw)
{
	const char *q = p + 1;
	while (*q && *q != '"')
		q += (*q == '\\' && q[1]) ? 2 : 1;
	const char *from = raw ? p : p + 1, *to = (raw && *q) ? q + 1 : q;
	size_t n = (size_t)(to - from) < FIELD ? (size_t)(to - from) : FIELD - 1;
	memcpy(out, from, n);
	out[n] = '\0';
	return *q ? q + 1 : q;
}

/* Extracts the fields we need from one line (see the file comment). */
static void
scan_line(const char *p, struct fields *f)
{
	int depth = 0;
	char key[FIELD], *dst;
	memset(f, 0, sizeof *f);
	while (*p) {
		if (*p != '"') {
			depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
			p++;
			continue;
		}
		for (p = scan_str(p, key, 0); isspace((unsigned char)*p);)
			p++;
		if (*p != ':')
			continue; /* that was a string value, not a key */
		for (p++; isspace((unsigned char)*p);)
			p++;
		if (depth == 1)
			strcpy(f->key1, key);
		dst = NULL;
		if (depth == 1 && !strcmp(key, "type"))
			dst = f->type;
		else if (depth == 1 && !strcmp(key, "name"))
			dst = f->name;
		else if (depth == 1 && !strcmp(key, "id"))
			dst = f->id;
		else if (depth == 2 && !strcmp(f->key1, "task") && !strcmp(key, "id"))
			dst = f->task_id;
		if (!dst || *p == '{' || *p == '[') {
			continue; /* the loop walks through (and counts) the value */
		} else if (*p == '"') {
			p = scan_str(p, dst, dst == f->id || dst == f->task_id);
		} else {
			size_t n = strcspn(p, ",}] \t\r");
			memcpy(dst, p, n < FIELD ? n : FIELD - 1);
			p += n;
		}
	}
}

/* Handles one line; returns 1 when the agent must stop. */
static int
handle(const char *line)
{
	struct fields f;
	scan_line(line, &f);
	if (!strcmp(f.type, "message") && f.id[0])
		printf("{\"type\":\"ack\",\"id\":%s}\n", f.id);
	else if (!strcmp(f.type, "task.assign") && f.task_id[0])
		printf("{\"type\":\"task.done\",\"task\":%s,\"result\":null}\n", f.task_id);
	else if (!strcmp(f.type, "command") && !strcmp(f.name, "stop"))
		return 1;
	else if (!strcmp(f.type, "command") && !strcmp(f.name, "ping"))
		fputs("{\"type\":\"heartbeat\"}\n", stdout);
	return 0;
}

/* Returns a monotonic clock in milliseconds. */
static long long
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
main(int argc, char **argv)
{
	const char *name = getenv("DREAMOS_AGENT_NAME"), *e;
	long max_tasks = (e = getenv("TINY_AGENT_MAX_TASKS")) ? strtol(e, NULL, 10) : 1;
	long hb_ms =
	    (e = getenv("DREAMOS_HEARTBEAT_INTERVAL")) ? (long)(strtod(e, NULL) * 1000) : 0;
	hb_ms = (e = getenv("TINY_AGENT_HEARTBEAT_MS")) ? strtol(e, NULL, 10) : hb_ms;
	size_t cap = 65536, len = 0, skip = 0; /* buf grows to hold the longest line */
	char *buf = malloc(cap);
	if (!buf)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOFBF, 65536);
	fputs("{\"type\":\"hello\",\"proto\":1,\"name\":", stdout);
	put_json_str(name && *name ? name : "tiny");
	fputs(",\"capabilities\":[", stdout);
	for (int i = 1; i < argc; i++)
		fputs(i > 1 ? "," : "", stdout), put_json_str(argv[i]);
	printf("],\"max_tasks\":%ld,\"version\":\"tiny-1\"}\n", max_tasks < 1 ? 1 : max_tasks);
	flush_out();
	long long next_hb = hb_ms > 0 ? now_ms() + hb_ms : 0;
	for (;;) {
		if (hb_ms > 0) {
			long long now = now_ms();
			if (now >= next_hb) {
				fputs("{\"type\":\"heartbeat\"}\n", stdout);
				flush_out();
				next_hb = now + hb_ms;
			}
			struct pollfd pfd = {.fd = 0, .events = POLLIN};
			int r = poll(&pfd, 1, (int)(next_hb - now));
			if (r == 0 || (r < 0 && errno == EINTR))
				continue;
		}
		if (len == cap && cap >= MAX_BUF)
			skip = 1, len = 0; /* an endless line: drop it */
		else if (len == cap && !(buf = realloc(buf, cap *= 2)))
			return 1;
		ssize_t n = read(0, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* EOF (or an error): the orchestrator is gone */
		len += (size_t)n;
		char *start = buf, *nl;
		while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
			*nl = '\0';
			if (!skip && handle(start)) {
				free(buf);
				flush_out();
				return 0;
			}
			skip = 0;
			start = nl + 1;
		}
		len -= (size_t)(start - buf);
		memmove(buf, start, len);
		flush_out();
	}
	if (len > 0 && !skip && len < cap) /* a last line without newline */
		buf[len] = '\0', handle(buf);
	free(buf);
	flush_out();
	return 0;
}
