/* tui-int.h — the TUI's internal state, shared by tui.c (terminal, input,
 * prompt) and panes.c (pane state, events, drawing). */
#ifndef DREAMOS_TUI_INT_H
#define DREAMOS_TUI_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "filter.h"
#include "log.h"
#include "tui.h"
#include "util.h"

enum {
	C_RED = 1,
	C_GREEN,
	C_YELLOW,
	C_BLUE,
	C_MAGENTA,
	C_CYAN,
	C_TITLE,
	C_TITLE_FOCUS,
	C_STATUS,
	C_DIM,
};

enum pane_id { PANE_AGENTS, PANE_TASKS, PANE_MESSAGES, PANE_LOGS, PANE_N };

enum scroll_how {
	SCROLL_UP3,
	SCROLL_DOWN3,
	SCROLL_PAGE_UP,
	SCROLL_PAGE_DOWN,
	SCROLL_TOP,
	SCROLL_BOTTOM
};

/* One line of the logs or messages pane. */
struct tline {
	int64_t ts_ms;
	int level;    /* logs */
	int prio;     /* messages */
	char *source; /* log source, or message sender */
	char *dest;   /* message recipient */
	char *mode;
	char *text;
};

/* A bounded ring of lines: memory stays flat under a firehose. */
struct ring {
	struct tline *v;
	size_t cap, head, n; /* head: index of the oldest */
};

/* One row of the tasks pane (a copy: tasks are freed when they end). */
struct trow {
	int64_t id;
	int prio;
	int state;
	char *agent;
	double progress;
	int attempt, max_retries;
	char *title;
};

/* One screen line of the popup: bytes [off, off + len) of its text, drawn
 * indent columns in (continuation lines of a wrapped line are indented). */
struct wline {
	size_t off, len;
	int indent;
};

struct pane {
	int y, x, h, w;
	size_t scroll; /* lines scrolled up from the newest (logs, messages) or down
	                  from the top (agents, tasks) */
	size_t unseen; /* lines arrived while scrolled up */
	struct tui_filter filter;
};

struct tui {
	struct orch *o;
	uv_poll_t poll;
	uv_signal_t winch;
	uv_timer_t frame, clock;
	int handles;
	bool started, stopped, dirty, frame_pending;
	int focus;
	bool zoom;
	int rows, cols;
	struct pane panes[PANE_N];
	bool color;
	const char *ellipsis; /* marks cut text: U+2026, or '~' outside UTF-8 */
	const char *arrow;    /* sender to recipient: " \u2192 ", or " -> " */
	char *stderr_path;
	int saved_stderr;
	char *history_path;
	FILE *devnull;
	bool cmd_busy;

	char *popup_title, *popup_text;
	int popup_scroll;          /* in screen lines */
	struct wline *popup_lines; /* popup_text wrapped at popup_wrap columns */
	size_t popup_nlines;
	int popup_wrap;
	bool popup_streamed;
	char *msgline;
	bool msgline_err;
	char *compl_line; /* the line when Tab listed the candidates shown */

	struct ring logs, msgs;
	struct trow *trows;
	size_t ntrows, trows_cap;
	size_t max_lines;
	int log_sub, bus_sub, task_sub;
	uint64_t msg_events, rate_base;
	double msg_rate;
	json_t *status; /* orch_status_json, at most a second old */
};

/* tui.c */
int tui_attr(const struct tui *t, int pair);
/* Draws s at (y, x) in at most cols display columns; returns the columns
 * used.  Multibyte text is measured with wcwidth, control bytes become ' '. */
int tui_put(int y, int x, int cols, const char *s, int attr);
/* The same, but text cut short ends with t->ellipsis, so that it shows. */
int tui_put_cut(const struct tui *t, int y, int x, int cols, const char *s, int attr);
/* How many of the first n bytes of s fit in cols columns (whole
 * characters); *width (if not NULL) gets their columns. */
size_t tui_fit(const char *s, size_t n, int cols, int *width);
/* The columns s takes. */
int tui_width(const char *s);
void tui_touch(struct tui *t);
void tui_layout(struct tui *t);
void tui_draw_prompt(struct tui *t);

/* panes.c */
void tui_state_init(struct tui *t, size_t max_lines);
void tui_state_free(struct tui *t);
void tui_subscribe(struct tui *t);
void tui_unsubscribe(struct tui *t);
void tui_draw(struct tui *t);
void tui_rate_tick(struct tui *t);
void tui_pane_scroll(struct tui *t, int pane, int how);
void tui_message(struct tui *t, bool error, const char *fmt, ...) PRINTFLIKE(3, 4);
void tui_message_clear(struct tui *t);
/* Adds text (may be several lines) to the logs pane only, as the captain's. */
void tui_log_local(struct tui *t, int level, const char *text);
void tui_popup_set(struct tui *t, const char *title, const char *text);
void tui_popup_append(struct tui *t, const char *text);
void tui_popup_close(struct tui *t);
void tui_popup_scroll(struct tui *t, int how);
void tui_show_help(struct tui *t);

#endif
