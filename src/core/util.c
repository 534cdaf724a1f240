/* util.c — allocation that never fails, strings, time, small helpers. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "util.h"

static void
xalloc_fail(size_t size)
{
	fprintf(stderr, "dreamos: out of memory allocating %zu bytes\n", size);
	abort();
}

void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (p == NULL)
		xalloc_fail(size);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		xalloc_fail(n * size);
	return p;
}

void *
xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size ? size : 1);
	if (q == NULL)
		xalloc_fail(size);
	return q;
}

void *
xreallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		xalloc_fail(SIZE_MAX);
	return xrealloc(p, n * size);
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *
xvasprintf(const char *fmt, va_list ap)
{
	char *s;
	if (vasprintf(&s, fmt, ap) < 0)
		xalloc_fail(strlen(fmt));
	return s;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	return s;
}

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void
buf_reserve(struct buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void
buf_add(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_add_int(struct buf *b, int64_t v)
{
	char tmp[24], *p = tmp + sizeof tmp;
	/* In unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

void
buf_addf(struct buf *b, const char *fmt, ...)
{
	/* Formatted in place: no allocation when the buffer has room (it
	 * builds protocol lines on the bus's hot path). */
	va_list ap, again;
	va_start(ap, fmt);
	va_copy(again, ap);
	buf_reserve(b, 128);
	size_t room = b->cap - b->len;
	int n = vsnprintf(b->data + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		xalloc_fail(strlen(fmt));
	if ((size_t)n >= room) {
		buf_reserve(b, (size_t)n);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
	}
	va_end(again);
	b->len += (size_t)n;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
	if (b->data != NULL)
		b->data[b->len] = '\0';
}

const char *
buf_cstr(struct buf *b)
{
	buf_reserve(b, 0);
	b->data[b->len] = '\0';
	return b->data;
}

void
buf_add_visible(struct buf *b, const char *s)
{
	while (*s != '\0') {
		size_t n = 0;
		while (s[n] != '\0' && (unsigned char)s[n] >= 0x20 && s[n] != 0x7f)
			n++;
		buf_add(b, s, n);
		s += n;
		if (*s == '\0')
			break;
		if (*s == '\n')
			buf_adds(b, "\\n");
		else if (*s == '\t')
			buf_adds(b, "\\t");
		else if (*s == '\r')
			buf_adds(b, "\\r");
		else
			buf_addf(b, "\\x%02x", (unsigned)(unsigned char)*s);
		s++;
	}
}

void
buf_add_json_str(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	buf_add(b, "\"", 1);
	const char *run = s;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		buf_add(b, run, (size_t)(s - run));
		run = s + 1;
		switch (c) {
		case '"':
			buf_add(b, "\\\"", 2);
			break;
		case '\\':
			buf_add(b, "\\\\", 2);
			break;
		case '\n':
			buf_add(b, "\\n", 2);
			break;
		case '\r':
			buf_add(b, "\\r", 2);
			break;
		case '\t':
			buf_add(b, "\\t", 2);
			break;
		default: {
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			buf_add(b, esc, 6);
		}
		}
	}
	buf_add(b, run, (size_t)(s - run));
	buf_add(b, "\"", 1);
}

/* The open batch (time_batch_begin) of this thread: its depth and the
 * readings taken in it (-1: not yet). */
static _Thread_local int batch_depth;
static _Thread_local int64_t batch_mono = -1, batch_wall = -1;

static int64_t
clock_ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Clock id now, or the open batch's reading of it (*reading; -1: none yet). */
static int64_t
batch_clock_ms(clockid_t id, int64_t *reading)
{
	if (batch_depth == 0)
		return clock_ms(id);
	if (*reading < 0)
		*reading = clock_ms(id);
	return *reading;
}

int64_t
time_mono_ms(void)
{
	return batch_clock_ms(CLOCK_MONOTONIC, &batch_mono);
}

int64_t
time_wall_ms(void)
{
	return batch_clock_ms(CLOCK_REALTIME, &batch_wall);
}

void
time_batch_begin(void)
{
	batch_depth++;
}

void
time_batch_end(void)
{
	if (--batch_depth == 0)
		batch_mono = batch_wall = -1;
}

void
time_iso8601(int64_t wall_ms, char *out, size_t len)
{
	/* Every message line carries one: the seconds are formatted once per
	 * second (gmtime_r and strftime cost more than the rest of the line). */
	static _Thread_local bool cached;
	static _Thread_local int64_t last_sec;
	static _Thread_local char base[32];
	static _Thread_local size_t blen;
	if (len == 0)
		return;
	int64_t sec = wall_ms / 1000, ms = wall_ms % 1000;
	if (ms < 0) { /* before 1970: round down */
		sec--;
		ms += 1000;
	}
	if (!cached || sec != last_sec) {
		time_t t = (time_t)sec;
		struct tm tm;
		gmtime_r(&t, &tm);
		blen = strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
		last_sec = sec;
		cached = true;
	}
	char full[40];
	memcpy(full, base, blen);
	full[blen] = '.';
	full[blen + 1] = (char)('0' + ms / 100);
	full[blen + 2] = (char)('0' + ms / 10 % 10);
	full[blen + 3] = (char)('0' + ms % 10);
	full[blen + 4] = 'Z';
	size_t n = blen + 5 < len ? blen + 5 : len - 1;
	memcpy(out, full, n);
	out[n] = '\0';
}

/* Parses a leading non-negative decimal number; returns the end or NULL. */
static const char *
parse_number(const char *s, double *out)
{
	char *end;
	if (!isdigit((unsigned char)*s) && *s != '.')
		return NULL;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno != 0 || !isfinite(v) || v < 0)
		return NULL;
	*out = v;
	return end;
}

bool
parse_duration(const char *s, double *seconds)
{
	static const struct {
		const char *unit;
		double mult;
	} units[] = {{"", 1},   {"ms", 0.001}, {"s", 1},    {"sec", 1},
	             {"m", 60}, {"min", 60},   {"h", 3600}, {"d", 86400}};
	double v;
	const char *end = parse_number(s, &v);
	if (end == NULL)
		return false;
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < nitems(units); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			double secs = v * units[i].mult;
			if (secs > DURATION_MAX_S)
				return false; /* callers turn it into int64 ms and deadlines */
			*seconds = secs;
			return true;
		}
	}
	return false;
}

bool
parse_size(const char *s, uint64_t *bytes)
{
	static const struct {
		const char *unit;
		double mult;
	} units[] = {{"", 1},
	             {"b", 1},
	             {"k", 1024.0},
	             {"kb", 1024.0},
	             {"kib", 1024.0},
	             {"m", 1048576.0},
	             {"mb", 1048576.0},
	             {"mib", 1048576.0},
	             {"g", 1073741824.0},
	             {"gb", 1073741824.0},
	             {"gib", 1073741824.0}};
	double v;
	const char *end = parse_number(s, &v);
	if (end == NULL)
		return false;
	while (*end == ' ')
		end++;
	char unit[8];
	size_t n = strlen(end);
	if (n >= sizeof unit)
		return false;
	for (size_t i = 0; i <= n; i++)
		unit[i] = (char)tolower((unsigned char)end[i]);
	for (size_t i = 0; i < nitems(units); i++) {
		if (strcmp(unit, units[i].unit) == 0) {
			double b = v * units[i].mult;
			if (b > 9.0e18)
				return false;
			*bytes = (uint64_t)b;
			return true;
		}
	}
	return false;
}

void
format_duration(double seconds, char *out, size_t len)
{
	if (seconds < 0)
		seconds = 0;
	if (seconds < 60)
		snprintf(out, len, "%.1f s", seconds);
	else if (seconds < 3600)
		snprintf(out, len, "%d m %d s", (int)seconds / 60, (int)seconds % 60);
	else if (seconds < 86400)
		snprintf(out, len, "%d h %d m", (int)seconds / 3600, ((int)seconds % 3600) / 60);
	else
		snprintf(out, len, "%d d %d h", (int)(seconds / 86400),
		         (int)((int64_t)seconds % 86400) / 3600);
}

void
format_size(uint64_t bytes, char *out, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)bytes;
	size_t u = 0;
	while (v >= 1024 && u + 1 < nitems(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(out, len, "%.1f %s", v, units[u]);
}

int
mkdir_p(const char *dir, int mode)
{
	char *p = xstrdup(dir);
	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
			int e = errno;
			free(p);
			return -e;
		}
		*s = '/';
	}
	int rc = 0;
	if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
}

char *
path_join(const char *a, const char *b)
{
	size_t la = strlen(a);
	if (la > 0 && a[la - 1] == '/')
		return xasprintf("%s%s", a, b);
	return xasprintf("%s/%s", a, b);
}

/* Control characters and each byte that does not start a valid UTF-8
 * sequence become '?', in place. */
void
utf8_clean_line(char *s)
{
	unsigned char *p = (unsigned char *)s;
	while (*p != '\0') {
		size_t n = *p < 0x80 ? 1 : *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 0;
		if (n == 1 && *p >= 0x20 && *p != 0x7f)
			p++;
		else if (n > 1 && strnlen((char *)p, n) == n && utf8_valid((char *)p, n))
			p += n;
		else
			*p++ = '?';
	}
}

bool
utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < len) {
		/* Protocol lines are mostly ASCII: sixteen bytes at a time
		 * (SSE2), then eight, while none has its high bit set; a tail
		 * under eight bytes as the line's last eight, once. */
#ifdef __SSE2__
		while (len - i >= 16) {
			__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
			if (_mm_movemask_epi8(v) != 0)
				break;
			i += 16;
		}
#endif
		uint64_t w;
		while (len - i >= sizeof w) {
			memcpy(&w, s + i, sizeof w);
			if ((w & UINT64_C(0x8080808080808080)) != 0)
				break;
			i += sizeof w;
		}
		if (i == len)
			break;
		if (len >= sizeof w && len - i < sizeof w) {
			/* (Its bytes before i are checked already.) */
			memcpy(&w, s + len - sizeof w, sizeof w);
			if ((w & UINT64_C(0x8080808080808080)) == 0)
				break;
		}
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + n >= len)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* Overlong forms, surrogates and values past U+10FFFF. */
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += n + 1;
	}
	return true;
}

bool
const_time_eq(const void *a, const void *b, size_t len)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;
	for (size_t i = 0; i < len; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}
