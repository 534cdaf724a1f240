/* panes.c — the state of the four panes (fed by orchestrator events),
 * their drawing, the status bar, the message line, the popup, help, and the
 * `filter` command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curses.h>

#include "agent.h"
#include "bus.h"
#include "cmd.h"
#include "orch.h"
#include "store.h"
#include "task.h"
#include "tui-int.h"

static const char *const pane_names[PANE_N] = {"agents", "tasks", "messages", "logs"};

/* ---- rings ------------------------------------------------------------ */

static void
tline_free(struct tline *l)
{
	free(l->source); /* the one allocation (see tline_set) */
	memset(l, 0, sizeof *l);
}

/* Sets l's strings (dest and mode may be NULL; text is text_len bytes) in
 * one allocation: a line is freed thousands of lines later, from cold
 * memory, and under a firehose each free was a cost of its own. */
static void
tline_set(struct tline *l, const char *source, const char *dest, const char *mode, const char *text,
          size_t text_len)
{
	size_t ns = strlen(source) + 1, nd = dest ? strlen(dest) + 1 : 0,
	       nm = mode ? strlen(mode) + 1 : 0;
	char *p = xmalloc(ns + nd + nm + text_len + 1);
	l->source = memcpy(p, source, ns);
	p += ns;
	l->dest = dest ? memcpy(p, dest, nd) : NULL;
	p += nd;
	l->mode = mode ? memcpy(p, mode, nm) : NULL;
	p += nm;
	l->text = memcpy(p, text, text_len);
	l->text[text_len] = '\0';
}

/* Returns the slot for a new line, evicting the oldest when full. */
static struct tline *
ring_push(struct ring *r)
{
	struct tline *l;
	if (r->n < r->cap) {
		l = &r->v[(r->head + r->n) % r->cap];
		r->n++;
	} else {
		l = &r->v[r->head];
		tline_free(l);
		r->head = (r->head + 1) % r->cap;
	}
	return l;
}

/* Line i from the newest (0 = newest). */
static struct tline *
ring_from_newest(struct ring *r, size_t i)
{
	return &r->v[(r->head + r->n - 1 - i) % r->cap];
}

static void
ring_free(struct ring *r)
{
	for (size_t i = 0; i < r->n; i++)
		tline_free(&r->v[(r->head + i) % r->cap]);
	free(r->v);
	memset(r, 0, sizeof *r);
}

/* A new line arrived in pane p: keep a scrolled-up view still. */
static void
pane_new_line(struct tui *t, int pane)
{
	struct pane *p = &t->panes[pane];
	if (p->scroll > 0) {
		p->scroll++;
		p->unseen++;
	}
}

/* ---- event sources ---------------------------------------------------- */

static void
tui_on_log(void *arg, const struct log_record *rec)
{
	struct tui *t = arg;
	struct tline *l = ring_push(&t->logs);
	l->ts_ms = rec->ts_ms;
	l->level = rec->level;
	const char *msg = rec->msg ? rec->msg : "";
	tline_set(l, rec->source ? rec->source : "", NULL, NULL, msg, strlen(msg));
	pane_new_line(t, PANE_LOGS);
	tui_touch(t);
}

void
tui_log_local(struct tui *t, int level, const char *text)
{
	/* One pane line per output line. */
	const char *p = text;
	while (*p) {
		size_t n = strcspn(p, "\n");
		struct tline *l = ring_push(&t->logs);
		l->ts_ms = time_wall_ms();
		l->level = level;
		tline_set(l, ">", NULL, NULL, p, n);
		pane_new_line(t, PANE_LOGS);
		p += n;
		if (*p == '\n')
			p++;
	}
	tui_touch(t);
}

static void
tui_on_bus(void *arg, const char *event, const json_t *m)
{
	struct tui *t = arg;
	if (strcmp(event, "accepted") != 0 && strcmp(event, "dead") != 0)
		return;
	t->msg_events++;
	struct tline *l = ring_push(&t->msgs);
	l->ts_ms = json_integer_value(json_object_get(m, "ts_ms"));
	proto_priority_parse(json_string_value(json_object_get(m, "priority")),
	                     (enum proto_priority *)&l->prio);
	bool dead = strcmp(event, "dead") == 0;
	json_t *body = json_object_get(m, "body");
	char *dumped =
	    json_is_string(body) ? NULL : json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	const char *text = dumped ? dumped : json_string_value(body);
	if (text == NULL)
		text = "";
	tline_set(l, json_string_value(json_object_get(m, "from")),
	          json_string_value(json_object_get(m, dead ? "recipient" : "to")),
	          dead ? "DEAD" : json_string_value(json_object_get(m, "mode")), text,
	          dumped ? strlen(dumped) : json_string_length(body));
	free(dumped);
	pane_new_line(t, PANE_MESSAGES);
	tui_touch(t);
}

/* Finds or makes the row of task id (rows sorted by id). */
static struct trow *
trow_get(struct tui *t, int64_t id)
{
	size_t lo = 0, hi = t->ntrows;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (t->trows[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < t->ntrows && t->trows[lo].id == id)
		return &t->trows[lo];
	/* Bounded: forget the oldest finished rows first. */
	if (t->ntrows >= t->max_lines) {
		size_t k = 0;
		while (k < t->ntrows && !task_state_final(t->trows[k].state))
			k++;
		if (k == t->ntrows)
			k = 0;
		free(t->trows[k].agent);
		free(t->trows[k].title);
		memmove(&t->trows[k], &t->trows[k + 1], (t->ntrows - k - 1) * sizeof *t->trows);
		t->ntrows--;
		if (k < lo)
			lo--;
	}
	if (t->ntrows == t->trows_cap) {
		t->trows_cap = t->trows_cap ? t->trows_cap * 2 : 64;
		t->trows = xreallocarray(t->trows, t->trows_cap, sizeof *t->trows);
	}
	memmove(&t->trows[lo + 1], &t->trows[lo], (t->ntrows - lo) * sizeof *t->trows);
	t->ntrows++;
	memset(&t->trows[lo], 0, sizeof *t->trows);
	t->trows[lo].id = id;
	return &t->trows[lo];
}

static void
trow_fill(struct trow *r, int prio, int state, const char *agent, double progress, int attempt,
          int max_retries, const char *title)
{
	r->prio = prio;
	r->state = state;
	free(r->agent);
	r->agent = agent ? xstrdup(agent) : NULL;
	r->progress = progress;
	r->attempt = attempt;
	r->max_retries = max_retries;
	if (r->title == NULL)
		r->title = xstrdup(title ? title : "");
}

static void
tui_on_task(void *arg, const struct task *tk, enum task_state from)
{
	struct tui *t = arg;
	struct trow *r = trow_get(t, tk->id);
	trow_fill(r, tk->priority, tk->state, tk->agent, tk->progress, tk->attempt, tk->max_retries,
	          tk->title);
	tui_touch(t);
}

/* Loads recent tasks and messages so the panes are not empty at start. */
static void
tui_load_recent(struct tui *t)
{
	struct store *st = orch_store(t->o);
	tasks_sync(orch_tasks(t->o));
	sqlite3_stmt *s =
	    store_stmt(st, "SELECT id, priority, state, agent, progress, attempt, "
	                   "max_retries, title FROM tasks ORDER BY id DESC LIMIT 200");
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		enum task_state ts = TASK_QUEUED;
		task_state_parse((const char *)sqlite3_column_text(s, 2), &ts);
		struct trow *r = trow_get(t, sqlite3_column_int64(s, 0));
		trow_fill(r, sqlite3_column_int(s, 1), ts, (const char *)sqlite3_column_text(s, 3),
		          sqlite3_column_double(s, 4), sqlite3_column_int(s, 5),
		          sqlite3_column_int(s, 6), (const char *)sqlite3_column_text(s, 7));
	}
	if (s != NULL)
		sqlite3_reset(s);
	s = store_stmt(st, "SELECT ts_ms, priority, sender, target, mode, body FROM (SELECT * FROM "
	                   "messages ORDER BY id DESC LIMIT 100) ORDER BY id");
	while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
		struct tline *l = ring_push(&t->msgs);
		l->ts_ms = sqlite3_column_int64(s, 0);
		l->prio = sqlite3_column_int(s, 1);
		const char *raw = (const char *)sqlite3_column_text(s, 5);
		json_t *b = json_loads(raw, JSON_DECODE_ANY, NULL);
		const char *text = json_is_string(b) ? json_string_value(b) : raw;
		tline_set(l, (const char *)sqlite3_column_text(s, 2),
		          (const char *)sqlite3_column_text(s, 3),
		          (const char *)sqlite3_column_text(s, 4), text,
		          json_is_string(b) ? json_string_length(b) : strlen(raw));
		json_decref(b);
	}
	if (s != NULL)
		sqlite3_reset(s);
	struct logmgr *lm = orch_log(t->o);
	size_t n = logmgr_ring_count(lm);
	for (size_t i = n > t->max_lines ? n - t->max_lines : 0; i < n; i++)
		tui_on_log(t, logmgr_ring_get(lm, i));
}

/* ---- the filter command ----------------------------------------------- */

/* Command handlers get the orchestrator, not the TUI: the running TUI is
 * found here (set while it runs, like g_tui in tui.c). */
static struct tui *filter_tui;

static enum cmd_retval
cmd_filter_exec(struct cmd_ctx *ctx)
{
	struct tui *t = filter_tui;
	if (t == NULL)
		return cmd_error(ctx, "filter: only in the TUI");
	const char *name = cmd_arg(ctx, 0);
	int pane = -1;
	for (int i = 0; i < PANE_N; i++) {
		if (strncmp(pane_names[i], name, strlen(name)) == 0 && *name)
			pane = pane < 0 ? i : -2;
	}
	if (pane < 0)
		return cmd_usage_error(ctx,
		                       "filter: unknown pane '%s' (agents, tasks, messages, "
		                       "logs)",
		                       name);
	struct pane *p = &t->panes[pane];
	if (ctx->argc == 2 && strcmp(cmd_arg(ctx, 1), "clear") == 0) {
		tui_filter_clear(&p->filter);
		tui_touch(t);
		return cmd_message(ctx, "%s: filter cleared", pane_names[pane]);
	}
	char *cause = NULL;
	if (tui_filter_parse(&p->filter, ctx->argc - 1, ctx->argv + 1, &cause) != 0) {
		enum cmd_retval rv = cmd_usage_error(ctx, "%s", cause);
		free(cause);
		return rv;
	}
	p->scroll = p->unseen = 0;
	tui_touch(t);
	return cmd_message(ctx, "%s: filter %s", pane_names[pane], p->filter.desc);
}

static const struct cmd_entry filter_entries[] = {
    {
        .name = "filter",
        .usage = "PANE EXPR... | PANE clear",
        .help = "Filters a pane of the TUI (agents, tasks, messages, logs).  Terms: "
                "level>=LEVEL, priority>=P, source=S, agent=NAME, state=STATE, text=WORD or a "
                "bare word (all must match); 'clear' removes the filter.  The pane title shows "
                "the active filter.",
        .min_args = 2,
        .max_args = -1,
        .complete_args = "pane",
        .role = ROLE_OBSERVER,
        .exec = cmd_filter_exec,
    },
};

void
tui_subscribe(struct tui *t)
{
	tui_load_recent(t);
	t->log_sub = logmgr_subscribe(orch_log(t->o), tui_on_log, t);
	t->bus_sub =
	    bus_subscribe_events(orch_bus(t->o), BUS_EV_ACCEPTED | BUS_EV_DEAD, tui_on_bus, t);
	t->task_sub = tasks_subscribe_events(orch_tasks(t->o), tui_on_task, t);
	filter_tui = t;
	cmd_register(orch_cmds(t->o), filter_entries, nitems(filter_entries), "tui");
}

void
tui_unsubscribe(struct tui *t)
{
	logmgr_unsubscribe(orch_log(t->o), t->log_sub);
	bus_unsubscribe_events(orch_bus(t->o), t->bus_sub);
	tasks_unsubscribe_events(orch_tasks(t->o), t->task_sub);
	cmd_unregister_owner(orch_cmds(t->o), "tui");
	filter_tui = NULL;
}

void
tui_state_init(struct tui *t, size_t max_lines)
{
	t->max_lines = max_lines > 0 ? max_lines : 5000;
	t->logs.cap = t->msgs.cap = t->max_lines;
	t->logs.v = xcalloc(t->logs.cap, sizeof *t->logs.v);
	t->msgs.v = xcalloc(t->msgs.cap, sizeof *t->msgs.v);
	t->saved_stderr = -1;
	for (int i = 0; i < PANE_N; i++)
		tui_filter_clear(&t->panes[i].filter);
}

void
tui_state_free(struct tui *t)
{
	ring_free(&t->logs);
	ring_free(&t->msgs);
	for (size_t i = 0; i < t->ntrows; i++) {
		free(t->trows[i].agent);
		free(t->trows[i].title);
	}
	free(t->trows);
	for (int i = 0; i < PANE_N; i++)
		tui_filter_clear(&t->panes[i].filter);
	free(t->popup_title);
	free(t->popup_text);
	free(t->popup_lines);
	free(t->msgline);
	free(t->compl_line);
	json_decref(t->status);
}

void
tui_rate_tick(struct tui *t)
{
	t->msg_rate = (double)(t->msg_events - t->rate_base);
	t->rate_base = t->msg_events;
	json_decref(t->status);
	t->status = NULL;
}

/* ---- message line and popup ------------------------------------------- */

void
tui_message(struct tui *t, bool error, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tui_message_clear(t);
	t->msgline = xvasprintf(fmt, ap);
	va_end(ap);
	t->msgline_err = error;
}

void
tui_message_clear(struct tui *t)
{
	free(t->msgline);
	free(t->compl_line);
	t->msgline = t->compl_line = NULL;
	tui_touch(t);
}

/* The text changed (or went): wrap it again when drawn. */
static void
popup_unwrap(struct tui *t)
{
	free(t->popup_lines);
	t->popup_lines = NULL;
	t->popup_nlines = 0;
	t->popup_wrap = 0;
}

void
tui_popup_set(struct tui *t, const char *title, const char *text)
{
	free(t->popup_title);
	free(t->popup_text);
	popup_unwrap(t);
	t->popup_title = xstrdup(title);
	t->popup_text = xstrdup(text);
	t->popup_scroll = 0;
	tui_touch(t);
}

void
tui_popup_append(struct tui *t, const char *text)
{
	if (t->popup_text == NULL) {
		tui_popup_set(t, "output", text);
	} else {
		char *s = xasprintf("%s%s", t->popup_text, text);
		free(t->popup_text);
		t->popup_text = s;
		popup_unwrap(t);
	}
	t->popup_streamed = true;
}

void
tui_popup_close(struct tui *t)
{
	free(t->popup_title);
	free(t->popup_text);
	t->popup_title = t->popup_text = NULL;
	popup_unwrap(t);
	tui_touch(t);
}

void
tui_popup_scroll(struct tui *t, int how)
{
	int page = t->rows / 2;
	switch (how) {
	case SCROLL_UP3:
	case SCROLL_PAGE_UP:
		t->popup_scroll -= how == SCROLL_UP3 ? 3 : page;
		break;
	case SCROLL_DOWN3:
	case SCROLL_PAGE_DOWN:
		t->popup_scroll += how == SCROLL_DOWN3 ? 3 : page;
		break;
	case SCROLL_TOP:
		t->popup_scroll = 0;
		break;
	case SCROLL_BOTTOM:
		t->popup_scroll = 1 << 20;
		break;
	}
	if (t->popup_scroll < 0)
		t->popup_scroll = 0;
	tui_touch(t);
}

void
tui_show_help(struct tui *t)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b,
	         "Keys\n"
	         "  F1               this help (Esc closes it; keys typed right after Esc count)\n"
	         "  F2 F3 F4 F5      focus agents, tasks, messages, logs (also Alt-1 .. Alt-4)\n"
	         "  PgUp PgDn        scroll the focused pane (or this popup)\n"
	         "  Home End         oldest / newest (End follows the tail again)\n"
	         "  Alt-z            zoom the focused pane\n"
	         "  mouse            click focuses a pane, the wheel scrolls it\n"
	         "  Ctrl-L           redraw\n"
	         "  Tab              complete commands, agents, tasks, options\n"
	         "  Up Down          command history (kept across runs)\n"
	         "  Ctrl-C           clear the line; on an empty line: quit\n"
	         "  Ctrl-D           on an empty line: quit\n"
	         "\nCommands\n");
	struct cmd_table *ct = orch_cmds(t->o);
	for (size_t i = 0; i < cmd_table_count(ct); i++) {
		char *u = cmd_usage_line(cmd_table_get(ct, i));
		buf_addf(&b, "  %s\n", u);
		free(u);
	}
	tui_popup_set(t, "help", b.data);
	buf_free(&b);
}

/* ---- scrolling -------------------------------------------------------- */

void
tui_pane_scroll(struct tui *t, int pane, int how)
{
	struct pane *p = &t->panes[pane];
	size_t page = p->h > 2 ? (size_t)(p->h - 2) : 1;
	bool tail = pane == PANE_LOGS || pane == PANE_MESSAGES;
	size_t max = tail ? (pane == PANE_LOGS ? t->logs.n : t->msgs.n) : 100000;
	switch (how) {
	case SCROLL_UP3:
	case SCROLL_PAGE_UP: {
		size_t d = how == SCROLL_UP3 ? 3 : page;
		if (tail)
			p->scroll = p->scroll + d > max ? max : p->scroll + d;
		else
			p->scroll = p->scroll > d ? p->scroll - d : 0;
		break;
	}
	case SCROLL_DOWN3:
	case SCROLL_PAGE_DOWN: {
		size_t d = how == SCROLL_DOWN3 ? 3 : page;
		if (tail)
			p->scroll = p->scroll > d ? p->scroll - d : 0;
		else
			p->scroll += d;
		break;
	}
	case SCROLL_TOP:
		p->scroll = tail ? max : 0;
		break;
	case SCROLL_BOTTOM:
		p->scroll = tail ? 0 : 100000;
		break;
	}
	if (p->scroll == 0)
		p->unseen = 0;
	tui_touch(t);
}

/* ---- drawing ---------------------------------------------------------- */

static int
state_color(enum agent_state s)
{
	switch (s) {
	case AGENT_READY:
		return C_GREEN;
	case AGENT_BUSY:
		return C_CYAN;
	case AGENT_PAUSED:
	case AGENT_BACKOFF:
	case AGENT_STARTING:
	case AGENT_STOPPING:
		return C_YELLOW;
	case AGENT_UNHEALTHY:
		return C_MAGENTA;
	case AGENT_FAILED:
		return C_RED;
	default:
		return C_DIM;
	}
}

static int
task_color(int s)
{
	switch (s) {
	case TASK_RUNNING:
	case TASK_ASSIGNED:
		return C_CYAN;
	case TASK_DONE:
		return C_GREEN;
	case TASK_FAILED:
	case TASK_BLOCKED:
		return C_YELLOW;
	case TASK_DEAD:
		return C_RED;
	case TASK_CANCELLED:
		return C_DIM;
	default:
		return 0;
	}
}

static int
level_color(int lvl)
{
	switch (lvl) {
	case LVL_FATAL:
	case LVL_ERROR:
		return C_RED;
	case LVL_WARN:
		return C_YELLOW;
	case LVL_TRACE:
	case LVL_DEBUG:
		return C_DIM;
	default:
		return 0;
	}
}

static int
prio_color(int p)
{
	return p == PRIO_URGENT ? C_RED : p == PRIO_HIGH ? C_YELLOW : p == PRIO_LOW ? C_DIM : 0;
}

/* Draws a pane's title bar: the first of texts (the longest first) that
 * fits with the pane's filter, else the last one cut; right (if not NULL:
 * new lines, rows out of view) at the right end. */
static void
draw_title(struct tui *t, int pane, const char *const *texts, size_t n, const char *right)
{
	struct pane *p = &t->panes[pane];
	int attr = tui_attr(t, pane == t->focus ? C_TITLE_FOCUS : C_TITLE);
	attron(attr);
	mvhline(p->y, p->x, ' ', p->w);
	attroff(attr);
	int rw = right != NULL ? tui_width(right) : 0;
	if (rw > p->w - 12)
		rw = 0; /* the pane's name first */
	int avail = p->w - rw;
	char *s = NULL;
	/* The last try: the shortest text and the filter without its label. */
	for (size_t i = 0; i <= n; i++) {
		free(s);
		const char *text = texts[i < n ? i : n - 1];
		if (!p->filter.active)
			s = xasprintf(" F%d %s", pane + 2, text);
		else if (i < n)
			s = xasprintf(" F%d %s  [filter: %s]", pane + 2, text, p->filter.desc);
		else
			s = xasprintf(" F%d %s [%s]", pane + 2, text, p->filter.desc);
		if (tui_width(s) <= avail)
			break;
	}
	tui_put_cut(t, p->y, p->x, avail, s, attr);
	free(s);
	if (rw > 0)
		tui_put(p->y, p->x + p->w - rw, rw, right,
		        attr | (t->color ? COLOR_PAIR(C_TITLE_FOCUS) : A_BOLD));
}

/* The title's mark for lines that arrived while the pane is scrolled up. */
static char *
new_lines_mark(size_t n)
{
	return xasprintf(" %zu new line%s (End) ", n, n == 1 ? "" : "s");
}

/* The title's mark for rows out of view in the agents and tasks panes;
 * NULL when all show. */
static char *
more_mark(size_t above, size_t below)
{
	if (above > 0 && below > 0)
		return xasprintf(" %zu above, +%zu more ", above, below);
	if (above > 0)
		return xasprintf(" %zu above ", above);
	if (below > 0)
		return xasprintf(" +%zu more ", below);
	return NULL;
}

/* Clamps a top-down pane's scroll to its rows (End sets it far out), and
 * returns the rows that show. */
static size_t
clamp_scroll(struct pane *p, size_t total)
{
	size_t rows = p->h > 2 ? (size_t)(p->h - 2) : 0;
	if (p->scroll + rows > total)
		p->scroll = total > rows ? total - rows : 0;
	return total - p->scroll < rows ? total - p->scroll : rows;
}

/* Draws cells of a row in columns; widths <= 0 are skipped.  A cell cut
 * short ends with an ellipsis. */
struct col {
	const char *text;
	int width;
	int attr;
};

static void
draw_cols(const struct tui *t, int y, int x, int w, const struct col *c, size_t n)
{
	int at = 0;
	for (size_t i = 0; i < n && at < w; i++) {
		if (c[i].width <= 0)
			continue;
		int cw = c[i].width > w - at ? w - at : c[i].width;
		tui_put_cut(t, y, x + at, cw, c[i].text ? c[i].text : "-", c[i].attr);
		at += cw + 1;
	}
}

static bool
agent_matches(const struct tui_filter *f, const struct agent *a)
{
	if (!f->active)
		return true;
	if (f->state && strcmp(f->state, agent_state_name(a->state)) != 0)
		return false;
	if (f->agent && strcmp(f->agent, a->name) != 0)
		return false;
	if (f->text && !tui_contains(a->name, f->text))
		return false;
	return true;
}

/* INFO (uptime, the backoff countdown, why an agent failed) is what the
 * agents pane is read for: the optional columns show only while it keeps
 * at least this many columns (RST and TASKS, the most useful, at least
 * INFO_NARROW). */
#define INFO_MIN    30
#define INFO_NARROW 16

static void
draw_agents(struct tui *t)
{
	struct pane *p = &t->panes[PANE_AGENTS];
	struct agents *as = orch_agents(t->o);
	size_t total = 0;
	int longest = 0;
	for (size_t i = 0; i < agents_count(as); i++) {
		struct agent *a = agents_at(as, i);
		if (!agent_matches(&p->filter, a))
			continue;
		total++;
		int w = tui_width(a->name);
		longest = w > longest ? w : longest;
	}
	size_t shown = clamp_scroll(p, total);
	char title[96];
	snprintf(title, sizeof title, "Agents  %zu/%zu up", agents_up(as), agents_count(as));
	char *more = more_mark(p->scroll, total - p->scroll - shown);
	draw_title(t, PANE_AGENTS, (const char *[]){title, "Agents"}, 2, more);
	free(more);
	/* NAME (12 columns) and STATE; then the optional columns, the most
	 * useful first, while INFO keeps its minimum; then NAME grows to the
	 * longest name (up to 20) with what INFO has beyond INFO_MIN; INFO
	 * takes the rest. */
	int name_w = 12;
	int fixed = name_w + 1 + 10, rst_w = 0, tasks_w = 0, hb_w = 0, tok_w = 0, pid_w = 0;
	const struct {
		int *w, width, info_min;
	} opt[] = {
	    {&rst_w, 3, INFO_NARROW}, {&tasks_w, 5, INFO_NARROW}, {&hb_w, 5, INFO_MIN},
	    {&tok_w, 14, INFO_MIN},   {&pid_w, 7, INFO_MIN},
	};
	for (size_t i = 0; i < nitems(opt); i++) {
		if (p->w - fixed - opt[i].width - 1 >= opt[i].info_min) {
			*opt[i].w = opt[i].width;
			fixed += opt[i].width + 1;
		}
	}
	int grow = (longest < 20 ? longest : 20) - name_w, spare = p->w - fixed - INFO_MIN;
	if (grow > 0 && spare > 0) {
		name_w += grow < spare ? grow : spare;
		fixed += grow < spare ? grow : spare;
	}
	int info_w = p->w - fixed > 1 ? p->w - fixed : 1;
	struct col head[] = {
	    {"NAME", name_w, A_BOLD},       {"STATE", 9, A_BOLD},     {"PID", pid_w, A_BOLD},
	    {"TASKS", tasks_w, A_BOLD},     {"RST", rst_w, A_BOLD},   {"HB", hb_w, A_BOLD},
	    {"TOKENS/COST", tok_w, A_BOLD}, {"INFO", info_w, A_BOLD},
	};
	draw_cols(t, p->y + 1, p->x, p->w, head, nitems(head));
	int row = p->y + 2;
	size_t skip = p->scroll;
	for (size_t i = 0; i < agents_count(as) && row < p->y + p->h; i++) {
		struct agent *a = agents_at(as, i);
		if (!agent_matches(&p->filter, a))
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		char pid[16], tasks[16], rst[12], hb[16], tok[40], info[160];
		snprintf(pid, sizeof pid, "%ld", (long)a->pid);
		snprintf(tasks, sizeof tasks, "%d/%d", a->running_tasks, a->max_tasks);
		snprintf(rst, sizeof rst, "%d", a->restarts);
		/* None for an in-process agent: it sends no heartbeats. */
		int64_t age = agent_heartbeat_age_ms(a);
		if (age >= 0)
			snprintf(hb, sizeof hb, "%.0fs", (double)age / 1000.0);
		else
			snprintf(hb, sizeof hb, "-");
		snprintf(tok, sizeof tok, "%lld $%.2f", (long long)(a->tokens_in + a->tokens_out),
		         a->cost_usd);
		agent_describe(a, info, sizeof info);
		struct col c[] = {
		    {a->name, name_w, 0},
		    {agent_state_name(a->state), 9, tui_attr(t, state_color(a->state))},
		    {a->pid > 0 ? pid : "-", pid_w, 0},
		    {tasks, tasks_w, 0},
		    {rst, rst_w, a->restarts > 0 ? tui_attr(t, C_YELLOW) : 0},
		    {hb, hb_w, 0},
		    {tok, tok_w, 0},
		    {info, info_w, tui_attr(t, C_DIM)},
		};
		draw_cols(t, row++, p->x, p->w, c, nitems(c));
	}
	if (agents_count(as) == 0)
		tui_put_cut(t, p->y + 2, p->x + 1, p->w - 1,
		            "no agents: 'agent spawn NAME -- PROGRAM'", tui_attr(t, C_DIM));
}

static bool
trow_matches(const struct tui_filter *f, const struct trow *r)
{
	if (!f->active)
		return true;
	if (f->state && strcmp(f->state, task_state_name(r->state)) != 0)
		return false;
	if (f->agent && (r->agent == NULL || strcmp(f->agent, r->agent) != 0))
		return false;
	if (f->min_priority >= 0 && r->prio < f->min_priority)
		return false;
	if (f->text && !tui_contains(r->title, f->text))
		return false;
	return true;
}

/* Draws one task row. */
static void
draw_trow(struct tui *t, struct pane *p, int row, const struct trow *r)
{
	char id[16], bar[16], att[16];
	snprintf(id, sizeof id, "%lld", (long long)r->id);
	int filled = (int)(r->progress / 10.0 + 0.5);
	if (filled > 10)
		filled = 10;
	for (int k = 0; k < 10; k++)
		bar[k] = k < filled ? '#' : '.';
	bar[10] = '\0';
	snprintf(att, sizeof att, "%d/%d", r->attempt, r->max_retries + 1);
	struct col c[] = {
	    {id, 5, 0},
	    {proto_priority_name(r->prio), 6, tui_attr(t, prio_color(r->prio))},
	    {task_state_name(r->state), 9, tui_attr(t, task_color(r->state))},
	    {r->agent ? r->agent : "-", p->w >= 70 ? 10 : 0, 0},
	    {bar, p->w >= 60 ? 10 : 0, tui_attr(t, C_CYAN)},
	    {att, 5, 0},
	    {r->title, 200, 0},
	};
	draw_cols(t, row, p->x, p->w, c, nitems(c));
}

static void
draw_tasks(struct tui *t)
{
	struct pane *p = &t->panes[PANE_TASKS];
	struct task_counts tc;
	tasks_counts(orch_tasks(t->o), &tc);
	unsigned long long nq = tc.n[TASK_QUEUED], nr = tc.n[TASK_RUNNING] + tc.n[TASK_ASSIGNED],
	                   nb = tc.n[TASK_BLOCKED], nd = tc.n[TASK_DEAD];
	/* The counts, shorter as the pane narrows: blocked and dead go when
	 * zero, then altogether. */
	char full[160], some[160], least[96], bs[48] = "", ds[48] = "";
	snprintf(full, sizeof full, "Tasks  queued %llu  running %llu  blocked %llu  dead %llu", nq,
	         nr, nb, nd);
	if (nb > 0)
		snprintf(bs, sizeof bs, "  blocked %llu", nb);
	if (nd > 0)
		snprintf(ds, sizeof ds, "  dead %llu", nd);
	snprintf(some, sizeof some, "Tasks  queued %llu  running %llu%s%s", nq, nr, bs, ds);
	snprintf(least, sizeof least, "Tasks  queued %llu  running %llu", nq, nr);
	size_t total = 0;
	for (size_t i = 0; i < t->ntrows; i++)
		total += trow_matches(&p->filter, &t->trows[i]);
	size_t shown = clamp_scroll(p, total);
	char *more = more_mark(p->scroll, total - p->scroll - shown);
	draw_title(t, PANE_TASKS, (const char *[]){full, some, least, "Tasks"}, 4, more);
	free(more);
	struct col head[] = {
	    {"ID", 5, A_BOLD},
	    {"PRIO", 6, A_BOLD},
	    {"STATE", 9, A_BOLD},
	    {"AGENT", p->w >= 70 ? 10 : 0, A_BOLD},
	    {"PROGRESS", p->w >= 60 ? 10 : 0, A_BOLD},
	    {"TRY", 5, A_BOLD},
	    {"TITLE", 200, A_BOLD},
	};
	draw_cols(t, p->y + 1, p->x, p->w, head, nitems(head));
	int row = p->y + 2;
	size_t skip = p->scroll;
	/* Unfinished tasks first (by priority, then id), then the newest
	 * finished ones. */
	for (int pr = PRIO_URGENT; pr >= PRIO_LOW; pr--) {
		for (size_t i = 0; i < t->ntrows && row < p->y + p->h; i++) {
			const struct trow *r = &t->trows[i];
			if (task_state_final(r->state) || r->prio != pr ||
			    !trow_matches(&p->filter, r))
				continue;
			if (skip > 0) {
				skip--;
				continue;
			}
			draw_trow(t, p, row++, r);
		}
	}
	for (size_t i = t->ntrows; i-- > 0 && row < p->y + p->h;) {
		const struct trow *r = &t->trows[i];
		if (!task_state_final(r->state) || !trow_matches(&p->filter, r))
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		draw_trow(t, p, row++, r);
	}
}

static void
fmt_clock(int64_t ms, char *out, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	localtime_r(&s, &tm);
	strftime(out, len, "%H:%M:%S", &tm);
}

static bool
msg_matches(const struct tui_filter *f, const struct tline *l)
{
	if (!f->active)
		return true;
	if (f->agent && strcmp(f->agent, l->source) != 0 && strcmp(f->agent, l->dest) != 0)
		return false;
	if (f->source && strcmp(f->source, l->source) != 0)
		return false;
	if (f->min_priority >= 0 && l->prio < f->min_priority)
		return false;
	if (f->text && !tui_contains(l->text, f->text))
		return false;
	return true;
}

static void
draw_messages(struct tui *t)
{
	struct pane *p = &t->panes[PANE_MESSAGES];
	char title[64], *unseen = NULL;
	snprintf(title, sizeof title, "Messages  %.0f/s", t->msg_rate);
	if (p->unseen > 0)
		unseen = new_lines_mark(p->unseen);
	draw_title(t, PANE_MESSAGES, (const char *[]){title, "Messages"}, 2, unseen);
	free(unseen);
	int rows = p->h - 1;
	/* Collect the lines to show, newest at the bottom. */
	struct tline **show = xcalloc((size_t)(rows > 0 ? rows : 1), sizeof *show);
	int n = 0;
	size_t skip = p->scroll;
	for (size_t i = 0; i < t->msgs.n && n < rows; i++) {
		struct tline *l = ring_from_newest(&t->msgs, i);
		if (!msg_matches(&p->filter, l))
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		show[n++] = l;
	}
	for (int k = 0; k < n; k++) {
		struct tline *l = show[n - 1 - k];
		int y = p->y + 1 + (rows - n) + k;
		char ts[16];
		fmt_clock(l->ts_ms, ts, sizeof ts);
		int x = p->x;
		int end = p->x + p->w;
		x += tui_put_cut(t, y, x, end - x, ts, tui_attr(t, C_DIM)) + 1;
		x += tui_put_cut(t, y, x, end - x, l->source, A_BOLD);
		x += tui_put_cut(t, y, x, end - x, t->arrow, 0);
		x += tui_put_cut(t, y, x, end - x, l->dest, A_BOLD) + 1;
		if (l->prio != PRIO_NORMAL)
			x += tui_put_cut(t, y, x, end - x, proto_priority_name(l->prio),
			                 tui_attr(t, prio_color(l->prio))) +
			     1;
		if (l->mode && strcmp(l->mode, "NORMAL") != 0)
			x += tui_put_cut(
			         t, y, x, end - x, l->mode,
			         tui_attr(t, strcmp(l->mode, "DEAD") == 0 ? C_RED : C_MAGENTA)) +
			     1;
		tui_put_cut(t, y, x, end - x, l->text, 0);
	}
	free(show);
}

static bool
log_matches(const struct tui_filter *f, const struct tline *l)
{
	if (!f->active)
		return true;
	if (f->min_level >= 0 && l->level < f->min_level)
		return false;
	if (f->source && strcmp(f->source, l->source) != 0)
		return false;
	if (f->agent && strcmp(f->agent, l->source) != 0)
		return false;
	if (f->text && !tui_contains(l->text, f->text))
		return false;
	return true;
}

static void
draw_logs(struct tui *t)
{
	struct pane *p = &t->panes[PANE_LOGS];
	char *unseen = p->unseen > 0 ? new_lines_mark(p->unseen) : NULL;
	if (p->scroll > 0)
		draw_title(
		    t, PANE_LOGS,
		    (const char *[]){"Logs  (scrolled; End follows)", "Logs  (scrolled)", "Logs"},
		    3, unseen);
	else
		draw_title(t, PANE_LOGS, (const char *[]){"Logs"}, 1, unseen);
	free(unseen);
	int rows = p->h - 1;
	struct tline **show = xcalloc((size_t)(rows > 0 ? rows : 1), sizeof *show);
	int n = 0;
	size_t skip = p->scroll;
	for (size_t i = 0; i < t->logs.n && n < rows; i++) {
		struct tline *l = ring_from_newest(&t->logs, i);
		if (!log_matches(&p->filter, l))
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		show[n++] = l;
	}
	static const char *const lv[] = {"TRACE", "DEBUG", "INFO ", "WARN ", "ERROR", "FATAL"};
	for (int k = 0; k < n; k++) {
		struct tline *l = show[n - 1 - k];
		int y = p->y + 1 + (rows - n) + k;
		char ts[16];
		fmt_clock(l->ts_ms, ts, sizeof ts);
		int x = p->x, end = p->x + p->w;
		x += tui_put_cut(t, y, x, end - x, ts, tui_attr(t, C_DIM)) + 1;
		x +=
		    tui_put_cut(t, y, x, end - x, lv[l->level >= 0 && l->level <= 5 ? l->level : 2],
		                tui_attr(t, level_color(l->level))) +
		    1;
		x += tui_put_cut(t, y, x, end - x, l->source, A_BOLD);
		x += tui_put_cut(t, y, x, end - x, ": ", 0);
		tui_put_cut(t, y, x, end - x, l->text,
		            l->level >= LVL_ERROR ? tui_attr(t, C_RED) : 0);
	}
	free(show);
}

static void
draw_status(struct tui *t)
{
	int y = t->rows - 2;
	int attr = tui_attr(t, C_STATUS);
	attron(attr);
	mvhline(y, 0, ' ', t->cols);
	attroff(attr);
	struct agents *as = orch_agents(t->o);
	struct task_counts tc;
	tasks_counts(orch_tasks(t->o), &tc);
	/* Refreshed by the clock tick: it costs queries and a stat. */
	if (t->status == NULL)
		t->status = orch_status_json(t->o);
	json_t *st = t->status;
	json_t *db = json_object_get(st, "db");
	json_t *br = json_object_get(st, "bridge");
	char size[32], clock[16], agents[48], rate[32], tasks[80], bridge[160], dbf[96],
	    db_state[64];
	format_size((uint64_t)json_integer_value(json_object_get(db, "size_bytes")), size,
	            sizeof size);
	fmt_clock(time_wall_ms(), clock, sizeof clock);
	const char *state = json_string_value(json_object_get(db, "state"));
	snprintf(agents, sizeof agents, "agents %zu/%zu", agents_up(as), agents_count(as));
	snprintf(rate, sizeof rate, "%.0f msg/s", t->msg_rate);
	snprintf(tasks, sizeof tasks, "tasks %llu queued %llu running",
	         (unsigned long long)tc.n[TASK_QUEUED],
	         (unsigned long long)(tc.n[TASK_RUNNING] + tc.n[TASK_ASSIGNED]));
	snprintf(bridge, sizeof bridge, "bridge %s",
	         json_is_object(br) ? json_string_value(json_object_get(br, "address")) : "off");
	snprintf(dbf, sizeof dbf, "db %s %s", state ? state : "?", size);
	snprintf(db_state, sizeof db_state, "db %s", state ? state : "?");
	const char *field[] = {agents, rate, tasks, bridge, dbf, clock};
	/* Too narrow: fields go, the least needed first (the Bridge address,
	 * the rate, the database size, tasks, agents); the database state and
	 * the clock stay.  Step i sets field[drop[i].f] to drop[i].to. */
	const struct {
		int f;
		const char *to;
	} drop[] = {
	    {3, json_is_object(br) ? "bridge on" : "bridge off"},
	    {3, NULL},
	    {1, NULL},
	    {4, db_state},
	    {2, NULL},
	    {0, NULL},
	};
	char *s = NULL;
	for (size_t step = 0; step <= nitems(drop); step++) {
		if (step > 0)
			field[drop[step - 1].f] = drop[step - 1].to;
		struct buf b;
		buf_init(&b);
		for (size_t i = 0; i < nitems(field); i++) {
			if (field[i] != NULL)
				buf_addf(&b, "%s%s", b.len > 0 ? " | " : " ", field[i]);
		}
		buf_adds(&b, " ");
		free(s);
		s = b.data;
		if (tui_width(s) <= t->cols)
			break;
	}
	tui_put_cut(t, y, 0, t->cols, s, attr);
	free(s);
}

static void
draw_msgline(struct tui *t)
{
	int y = t->rows - 3;
	move(y, 0);
	clrtoeol();
	if (t->msgline != NULL)
		tui_put_cut(t, y, 0, t->cols, t->msgline,
		            t->msgline_err ? (int)(tui_attr(t, C_RED) | A_BOLD)
		                           : tui_attr(t, C_DIM));
}

/* Where the continuation lines of a wrapped line start: under the text
 * after its first gap of two spaces ("usage    what it does", "key   value")
 * when that is in the left two thirds; else under the line's own text when
 * that is a column far right (a description under a long usage), or two
 * columns in from it. */
static int
hang_indent(const char *s, size_t n, int width)
{
	size_t lead = strspn(s, " ");
	if (lead > n)
		lead = n;
	const char *gap = NULL;
	for (size_t i = lead; i + 1 < n && gap == NULL; i++) {
		if (s[i] == ' ' && s[i + 1] == ' ')
			gap = s + i;
	}
	if (gap != NULL) {
		size_t j = (size_t)(gap - s);
		while (j < n && s[j] == ' ')
			j++;
		int col;
		tui_fit(s, j, 1 << 30, &col);
		if (j < n && col <= width * 2 / 3)
			return col;
	}
	int indent = (int)lead > width / 3 ? (int)lead : (int)lead + 2;
	return indent < width * 2 / 3 ? indent : width * 2 / 3;
}

static void
popup_add_line(struct tui *t, size_t *cap, size_t off, size_t len, int indent)
{
	if (t->popup_nlines == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		t->popup_lines = xreallocarray(t->popup_lines, *cap, sizeof *t->popup_lines);
	}
	t->popup_lines[t->popup_nlines++] = (struct wline){off, len, indent};
}

/* Wraps the popup's text at width columns: at the last space that fits, or
 * inside a word only when it is longer than the line. */
static void
popup_wrap(struct tui *t, int width)
{
	popup_unwrap(t);
	t->popup_wrap = width;
	const char *text = t->popup_text;
	size_t cap = 0, end = strlen(text);
	for (size_t off = 0; off < end;) {
		const char *s = text + off;
		size_t n = strcspn(s, "\n"), i = 0;
		int indent = 0;
		do {
			size_t fit = tui_fit(s + i, n - i, width - indent, NULL);
			size_t len = fit, next = i + fit;
			if (next < n) {
				size_t k = fit, e;
				while (k > 0 && s[i + k] != ' ')
					k--;
				for (e = k; e > 0 && s[i + e - 1] == ' '; e--)
					;
				if (e > 0)
					len = e, next = i + k;
				else if (fit == 0) /* not even one character fits */
					len = 1, next = i + 1;
				while (next < n && s[next] == ' ')
					next++;
			}
			popup_add_line(t, &cap, off + i, len, indent);
			if (i == 0)
				indent = hang_indent(s, n, width);
			i = next;
		} while (i < n);
		off += n + 1;
	}
}

static void
draw_popup(struct tui *t)
{
	if (t->popup_text == NULL)
		return;
	int maxh = t->rows - 6, w = t->cols - 6;
	if (maxh < 3 || w < 10)
		return;
	int y0 = 2, x0 = 3, tw = w - 4;
	if (t->popup_wrap != tw)
		popup_wrap(t, tw);
	int nlines = (int)t->popup_nlines;
	/* As high as the text, up to the screen. */
	int h = nlines + 2 < maxh ? nlines + 2 : maxh;
	if (h < 3)
		h = 3;
	int body = h - 2;
	if (t->popup_scroll > nlines - body)
		t->popup_scroll = nlines - body > 0 ? nlines - body : 0;
	for (int r = 0; r < h; r++) {
		move(y0 + r, x0);
		hline(' ', w);
	}
	attron(A_BOLD);
	mvhline(y0, x0, ACS_HLINE, w);
	mvhline(y0 + h - 1, x0, ACS_HLINE, w);
	mvvline(y0, x0, ACS_VLINE, h);
	mvvline(y0, x0 + w - 1, ACS_VLINE, h);
	mvaddch(y0, x0, ACS_ULCORNER);
	mvaddch(y0, x0 + w - 1, ACS_URCORNER);
	mvaddch(y0 + h - 1, x0, ACS_LLCORNER);
	mvaddch(y0 + h - 1, x0 + w - 1, ACS_LRCORNER);
	attroff(A_BOLD);
	char *title = xasprintf(" %s  (Esc closes, PgUp/PgDn scroll) ", t->popup_title);
	tui_put_cut(t, y0, x0 + 2, w - 4, title, A_BOLD);
	free(title);
	for (int r = 0; r < body && t->popup_scroll + r < nlines; r++) {
		const struct wline *l = &t->popup_lines[t->popup_scroll + r];
		char *s = xstrndup(t->popup_text + l->off, l->len);
		tui_put(y0 + 1 + r, x0 + 2 + l->indent, tw - l->indent, s, A_NORMAL);
		free(s);
	}
	if (nlines > body) {
		/* Where the view is, since not all of it shows. */
		char pos[64];
		snprintf(pos, sizeof pos, " %d-%d of %d ", t->popup_scroll + 1,
		         t->popup_scroll + body, nlines);
		int pw = (int)strlen(pos);
		tui_put(y0 + h - 1, x0 + w - 2 - pw, pw, pos, A_BOLD);
	}
}

void
tui_draw(struct tui *t)
{
	if (t->stopped)
		return;
	t->dirty = false;
	erase();
	if (t->rows != LINES || t->cols != COLS)
		tui_layout(t);
	void (*draw[PANE_N])(struct tui *) = {draw_agents, draw_tasks, draw_messages, draw_logs};
	for (int i = 0; i < PANE_N; i++) {
		if (t->panes[i].h > 0 && t->panes[i].w > 0)
			draw[i](t);
	}
	if (!t->zoom) {
		/* Separators between the left and right panes. */
		struct pane *r1 = &t->panes[PANE_TASKS], *r2 = &t->panes[PANE_LOGS];
		mvvline(r1->y, r1->x - 1, ACS_VLINE, r1->h);
		mvvline(r2->y, r2->x - 1, ACS_VLINE, r2->h);
	}
	draw_msgline(t);
	draw_status(t);
	draw_popup(t);
	tui_draw_prompt(t);
	refresh();
}
