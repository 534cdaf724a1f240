/* flatjson.c — flat JSON objects in one pass (see flatjson.h).
 *
 * A recogniser, not a parser: it accepts a strict subset of what jansson
 * accepts and builds the same object, and declines everything else
 * (escapes, numbers with a fraction or exponent, nesting, duplicate keys),
 * leaving it, and every error message, to jansson.  fuzz-proto checks that
 * whatever it accepts, jansson accepts as an equal object. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

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

/* p is just past an opening quote: returns its closing quote, or NULL if
 * the string has an escape or a control character (jansson's to judge) or
 * does not end. */
static const char *
scan_str(const char *p, const char *end)
{
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

/* Reads one value at p into *out; returns the byte after it, or NULL. */
static const char *
read_value(const char *p, const char *end, json_t **out)
{
	if (p == end)
		return NULL;
	if (*p == '"') {
		const char *q = scan_str(p + 1, end);
		if (q == NULL)
			return NULL;
		*out = json_stringn_nocheck(p + 1, (size_t)(q - p - 1));
		return q + 1;
	}
	static const struct {
		const char *word;
		size_t len;
	} words[] = {{"true", 4}, {"false", 5}, {"null", 4}};
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
		if ((size_t)(end - p) >= words[i].len &&
		    memcmp(p, words[i].word, words[i].len) == 0) {
			*out = i == 0 ? json_true() : i == 1 ? json_false() : json_null();
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
	*out = json_integer(neg ? -v : v);
	return q;
}

json_t *
flatjson_load(const char *s, size_t len)
{
	const char *p = s, *end = s + len;
	p = skip_ws(p, end);
	if (p == end || *p != '{')
		return NULL;
	json_t *obj = json_object();
	if (obj == NULL)
		return NULL;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		if (p == end || *p != '"')
			goto decline;
		const char *kq = scan_str(p + 1, end);
		if (kq == NULL || kq - p - 1 > FLATJSON_KEY_MAX)
			goto decline;
		char key[FLATJSON_KEY_MAX + 1];
		memcpy(key, p + 1, (size_t)(kq - p - 1));
		key[kq - p - 1] = '\0';
		/* A duplicate is an error for jansson (JSON_REJECT_DUPLICATES). */
		if (json_object_get(obj, key) != NULL)
			goto decline;
		p = skip_ws(kq + 1, end);
		if (p == end || *p != ':')
			goto decline;
		json_t *v = NULL;
		p = read_value(skip_ws(p + 1, end), end, &v);
		if (p == NULL || v == NULL || json_object_set_new_nocheck(obj, key, v) != 0)
			goto decline;
		p = skip_ws(p, end);
		if (p < end && *p == '}') {
			p++;
			break;
		}
		if (p == end || *p != ',')
			goto decline;
		p = skip_ws(p + 1, end);
	}
done:
	if (skip_ws(p, end) == end)
		return obj;
decline:
	json_decref(obj);
	return NULL;
}

json_t *
flatjson_load_value(const char *s, size_t len)
{
	const char *end = s + len, *p = skip_ws(s, end);
	if (p < end && *p == '{')
		return flatjson_load(s, len);
	json_t *v = NULL;
	const char *q = read_value(p, end, &v);
	if (q != NULL && skip_ws(q, end) == end)
		return v;
	json_decref(v);
	return NULL;
}
