/* filter.c — parsing of pane filter expressions. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "log.h"
#include "proto.h"
#include "util.h"

void
tui_filter_clear(struct tui_filter *f)
{
	free(f->source);
	free(f->agent);
	free(f->state);
	free(f->text);
	free(f->desc);
	memset(f, 0, sizeof *f);
	f->min_level = f->min_priority = -1;
}

bool
tui_contains(const char *s, const char *needle)
{
	if (needle == NULL || *needle == '\0')
		return true;
	if (s == NULL)
		return false;
	size_t n = strlen(needle);
	for (; *s; s++) {
		if (strncasecmp(s, needle, n) == 0)
			return true;
	}
	return false;
}

/* Splits "key<op>value"; returns the op ("=", ">=", "~") or NULL. */
static const char *
split_term(const char *w, char *key, size_t klen, const char **value)
{
	static const char *const ops[] = {">=", "=", "~"};
	for (size_t i = 0; i < nitems(ops); i++) {
		const char *p = strstr(w, ops[i]);
		if (p != NULL && p != w) {
			size_t n = (size_t)(p - w);
			if (n >= klen)
				return NULL;
			memcpy(key, w, n);
			key[n] = '\0';
			*value = p + strlen(ops[i]);
			return ops[i];
		}
	}
	return NULL;
}

int
tui_filter_parse(struct tui_filter *f, int argc, char **argv, char **cause)
{
	tui_filter_clear(f);
	struct buf text, desc;
	buf_init(&text);
	buf_init(&desc);
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i], *v = NULL;
		char key[32];
		const char *op = split_term(w, key, sizeof key, &v);
		buf_addf(&desc, "%s%s", desc.len ? " " : "", w);
		if (op == NULL) {
			buf_addf(&text, "%s%s", text.len ? " " : "", w);
			continue;
		}
		if (*v == '\0') {
			*cause = xasprintf("filter: '%s' has no value", w);
			goto fail;
		}
		if (strcmp(key, "level") == 0) {
			enum log_level l;
			if (!log_level_parse(v, &l)) {
				*cause = xasprintf("filter: unknown level '%s'", v);
				goto fail;
			}
			f->min_level = (int)l;
		} else if (strcmp(key, "priority") == 0) {
			enum proto_priority p;
			if (!proto_priority_parse(v, &p)) {
				*cause = xasprintf("filter: unknown priority '%s'", v);
				goto fail;
			}
			f->min_priority = (int)p;
		} else if (strcmp(key, "source") == 0) {
			free(f->source);
			f->source = xstrdup(v);
		} else if (strcmp(key, "agent") == 0) {
			free(f->agent);
			f->agent = xstrdup(v);
		} else if (strcmp(key, "state") == 0) {
			free(f->state);
			f->state = xstrdup(v);
		} else if (strcmp(key, "text") == 0) {
			buf_addf(&text, "%s%s", text.len ? " " : "", v);
		} else {
			*cause =
			    xasprintf("filter: unknown term '%s' (level, source, agent, state, "
			              "priority, text)",
			              key);
			goto fail;
		}
	}
	f->text = text.data;
	f->desc = desc.data;
	f->active = argc > 0;
	return 0;
fail:
	buf_free(&text);
	buf_free(&desc);
	tui_filter_clear(f);
	return -1;
}
