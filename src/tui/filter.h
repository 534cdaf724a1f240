/* filter.h — pane filters: `filter PANE EXPR...` with terms such as
 * level>=warn, source=scout, agent=w1, state=ready, priority>=high, and
 * bare words that must appear in the text. */
#ifndef DREAMOS_TUI_FILTER_H
#define DREAMOS_TUI_FILTER_H

#include <stdbool.h>

struct tui_filter {
	bool active;
	int min_level;    /* -1: any */
	int min_priority; /* -1: any */
	char *source;     /* exact, or NULL */
	char *agent;      /* from, to, assigned or name, or NULL */
	char *state;      /* exact, or NULL */
	char *text;       /* substring (case-insensitive), or NULL */
	char *desc;       /* as typed, for the pane title */
};

/* Parses argv into f (cleared first).  Returns 0, or -1 with *cause. */
int tui_filter_parse(struct tui_filter *f, int argc, char **argv, char **cause);
void tui_filter_clear(struct tui_filter *f);
/* True if s contains needle, ignoring ASCII case. */
bool tui_contains(const char *s, const char *needle);

#endif
