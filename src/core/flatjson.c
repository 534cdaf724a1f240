/* flatjson.c — flat JSON objects in one pass (see flatjson.h).
 *
 * A recogniser, not a parser: it accepts a strict subset of what jansson
 * accepts (and flatjson_load builds the same object), and declines everything else
 * (escapes, numbers with a fraction or exponent, nesting, duplicate keys),
 * leaving it, and every error message, to jansson.  fuzz-proto checks that
 * whatever it accepts, jansson accepts as an equal object. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "flatjson.h"

/* Most digits an integer may have here: 18 never overflows int64_t. */
#define INT_DIGITS_MAX 18

static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Whether any byte of w is '"', '\\' or a control character (below 0x20):
 * eight bytes per test, with the classic has-zero-byte trick. */
static bool
word_special(uint64_t w)
{
	const uint64_t ones = UINT64_C(0x0101010101010101), high = UINT64_C(0x8080808080808080);
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
	uint64_t special = ((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w);
	return (special & high) != 0;
}

/* p is just past an opening quote: returns its closing quote, or NULL if
 * the string has an escape or a control character (jansson's to judge) or
 * does not end.  (A message body is most of a line: it is skipped sixteen
 * bytes at a time with SSE2, which also says where in those sixteen the
 * first special byte is, else eight at a time up to the word that holds
 * its end.  With SSE2 a bus message's two lines took about 1,000
 * instructions fewer to scan.) */
static const char *
scan_str(const char *p, const char *end)
{
#ifdef __SSE2__
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
	              ctl = _mm_set1_epi8(0x1f);
	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		/* (max(v, 0x1f) == 0x1f: the bytes below 0x20, unsigned) */
		__m128i special =
		    _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
		                 _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
		int mask = _mm_movemask_epi8(special);
		if (mask != 0) {
			p += __builtin_ctz((unsigned)mask);
			return *p == '"' ? p : NULL;
		}
		p += 16;
	}
#endif
	uint64_t w;
	while (end - p >= (ptrdiff_t)sizeof w) {
		memcpy(&w, p, sizeof w);
		if (word_special(w))
			break;
		p += sizeof w;
	}
	for (; p < end; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"')
			return p;
		if (c == '\\' || c < 0x20)
			return NULL;
	}
	return NULL;
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Reads one value at p into *f (its kind and value); returns the byte
 * after it, or NULL. */
static const char *
read_value(const char *p, const char *end, struct flatjson_field *f)
{
	if (p == end)
		return NULL;
	if (*p == '"') {
		const char *q = scan_str(p + 1, end);
		if (q == NULL)
			return NULL;
		f->kind = FLATJSON_STR;
		f->str = p + 1;
		f->slen = (size_t)(q - p - 1);
		return q + 1;
	}
	static const struct {
		const char *word;
		size_t len;
		enum flatjson_kind kind;
	} words[] = {
	    {"true", 4, FLATJSON_TRUE}, {"false", 5, FLATJSON_FALSE}, {"null", 4, FLATJSON_NULL}};
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
		if ((size_t)(end - p) >= words[i].len &&
		    memcmp(p, words[i].word, words[i].len) == 0) {
			f->kind = words[i].kind;
			return p + words[i].len;
		}
	}
	bool neg = *p == '-';
	const char *d = neg ? p + 1 : p;
	if (d == end || !is_digit(*d) || (*d == '0' && d + 1 < end && is_digit(d[1])))
		return NULL;
	int64_t v = 0;
	const char *q = d;
	while (q < end && is_digit(*q)) {
		if (q - d == INT_DIGITS_MAX)
			return NULL;
		v = v * 10 + (*q - '0');
		q++;
	}
	if (q < end && (*q == '.' || *q == 'e' || *q == 'E'))
		return NULL;
	f->kind = FLATJSON_INT;
	f->num = neg ? -v : v;
	return q;
}

int
flatjson_scan(const char *s, size_t len, struct flatjson_field *f, int max)
{
	const char *p = s, *end = s + len;
	p = skip_ws(p, end);
	if (p == end || *p != '{')
		return -1;
	int n = 0;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		if (p == end || *p != '"' || n == max)
			return -1;
		const char *kq = scan_str(p + 1, end);
		if (kq == NULL || kq - p - 1 > FLATJSON_KEY_MAX)
			return -1;
		struct flatjson_field *fd = &f[n];
		fd->key = p + 1;
		fd->klen = (size_t)(kq - p - 1);
		/* A duplicate is an error for jansson (JSON_REJECT_DUPLICATES). */
		for (int i = 0; i < n; i++)
			if (f[i].klen == fd->klen && memcmp(f[i].key, fd->key, fd->klen) == 0)
				return -1;
		p = skip_ws(kq + 1, end);
		if (p == end || *p != ':')
			return -1;
		p = read_value(skip_ws(p + 1, end), end, fd);
		if (p == NULL)
			return -1;
		n++;
		p = skip_ws(p, end);
		if (p < end && *p == '}') {
			p++;
			break;
		}
		if (p == end || *p != ',')
			return -1;
		p = skip_ws(p + 1, end);
	}
done:
	return skip_ws(p, end) == end ? n : -1;
}

/* The jansson value of a scanned member (a new reference). */
static json_t *
flatjson_field_json(const struct flatjson_field *f)
{
	switch (f->kind) {
	case FLATJSON_STR:
		return json_stringn_nocheck(f->str, f->slen);
	case FLATJSON_INT:
		return json_integer(f->num);
	case FLATJSON_TRUE:
		return json_true();
	case FLATJSON_FALSE:
		return json_false();
	default:
		return json_null();
	}
}

json_t *
flatjson_object(const struct flatjson_field *f, int n)
{
	json_t *obj = json_object();
	for (int i = 0; obj != NULL && i < n; i++) {
		char key[FLATJSON_KEY_MAX + 1];
		memcpy(key, f[i].key, f[i].klen);
		key[f[i].klen] = '\0';
		if (json_object_set_new_nocheck(obj, key, flatjson_field_json(&f[i])) != 0) {
			json_decref(obj);
			obj = NULL;
		}
	}
	return obj;
}

json_t *
flatjson_load(const char *s, size_t len)
{
	struct flatjson_field f[FLATJSON_FIELDS_MAX];
	int n = flatjson_scan(s, len, f, FLATJSON_FIELDS_MAX);
	return n < 0 ? NULL : flatjson_object(f, n);
}

json_t *
flatjson_load_value(const char *s, size_t len)
{
	const char *end = s + len, *p = skip_ws(s, end);
	if (p < end && *p == '{')
		return flatjson_load(s, len);
	struct flatjson_field f;
	const char *q = read_value(p, end, &f);
	if (q != NULL && skip_ws(q, end) == end)
		return flatjson_field_json(&f);
	return NULL;
}
