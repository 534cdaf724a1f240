/* flatjson.h — the fast path of protocol parsing: flat JSON objects.
 *
 * jansson reads a string byte by byte through several calls per byte; a
 * `send` line with a 256-byte body took 3.5 µs to load, a third of the bus's
 * CPU per message.  Most protocol lines are flat objects of plain values,
 * which this reads in one pass, as spans of the line (proto.c reads those
 * without any JSON tree) or as the same jansson object.  It does not try to
 * be a JSON parser: anything outside the subset makes it decline, and the
 * caller loads the line with jansson as before, so every error message
 * still comes from jansson. */
#ifndef DREAMOS_FLATJSON_H
#define DREAMOS_FLATJSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Longest key the fast path takes, in bytes. */
#define FLATJSON_KEY_MAX 64
/* Most members of an object the fast path takes. */
#define FLATJSON_FIELDS_MAX 16

enum flatjson_kind { FLATJSON_STR, FLATJSON_INT, FLATJSON_TRUE, FLATJSON_FALSE, FLATJSON_NULL };

/* One member of a flat object, as spans of the scanned text. */
struct flatjson_field {
	const char *key; /* not NUL-terminated */
	size_t klen;
	enum flatjson_kind kind;
	const char *str; /* FLATJSON_STR: its bytes, between the quotes (no escapes) */
	size_t slen;
	int64_t num; /* FLATJSON_INT */
};

/* Scans s (len bytes, valid UTF-8: the caller has checked) if it is a JSON
 * object whose members are all strings without escapes or control
 * characters, integers of at most 18 digits, true, false or null, with
 * distinct keys of at most FLATJSON_KEY_MAX bytes, at most max of them, and
 * JSON whitespace anywhere JSON allows it.  Fills f[] with spans of s and
 * returns the count; -1 if s is not of that form (it may still be valid
 * JSON, or not: the caller asks jansson).  Nothing is allocated: the
 * protocol's hot lines are read without building a JSON tree. */
int flatjson_scan(const char *s, size_t len, struct flatjson_field *f, int max);

/* The object of n scanned members, in their order (a new reference; NULL
 * only when out of memory). */
json_t *flatjson_object(const struct flatjson_field *f, int n);

/* Loads s if flatjson_scan takes it (with max FLATJSON_FIELDS_MAX).
 * Returns a new object equal to what json_loadb(s, len, JSON_DECODE_ANY |
 * JSON_REJECT_DUPLICATES) gives, or NULL if s is not of that form. */
json_t *flatjson_load(const char *s, size_t len);

/* The same for one value of any of those kinds: a flat object as above, a
 * string without escapes, such an integer, true, false or null (the bus
 * rebuilds a stored body this way for its events).  NULL otherwise. */
json_t *flatjson_load_value(const char *s, size_t len);

#endif
