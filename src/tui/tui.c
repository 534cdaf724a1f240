/* tui.c — terminal set-up and restore, the readline prompt on the loop,
 * keys and mouse, layout, redraw scheduling, and the command popup. */
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include <curses.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <uv.h>

#include "agent.h"
#include "bus.h"
#include "cmd.h"
#include "config.h"
#include "orch.h"
#include "task.h"
#include "tui-int.h"

/* readline keeps its state in globals, so its callbacks find the TUI here:
 * the one piece of global state outside the orchestrator, and only while
 * the TUI runs. */
static struct tui *g_tui;
static int g_rl_char = EOF;

#define TUI_FRAME_MS 33 /* at most ~30 redraws per second */
#define PROMPT       "captain> "

/* ---- colours ---------------------------------------------------------- */

static void
tui_colors(struct tui *t)
{
	const char *nc = getenv("NO_COLOR");
	t->color = has_colors() && (nc == NULL || *nc == '\0');
	if (!t->color)
		return;
	start_color();
	use_default_colors();
	init_pair(C_RED, COLOR_RED, -1);
	init_pair(C_GREEN, COLOR_GREEN, -1);
	init_pair(C_YELLOW, COLOR_YELLOW, -1);
	init_pair(C_BLUE, COLOR_BLUE, -1);
	init_pair(C_MAGENTA, COLOR_MAGENTA, -1);
	init_pair(C_CYAN, COLOR_CYAN, -1);
	init_pair(C_TITLE, COLOR_BLACK, COLOR_CYAN);
	init_pair(C_TITLE_FOCUS, COLOR_BLACK, COLOR_YELLOW);
	init_pair(C_STATUS, COLOR_BLACK, COLOR_WHITE);
	init_pair(C_DIM, COLOR_WHITE, -1);
}

int
tui_attr(const struct tui *t, int pair)
{
	if (!t->color) {
		switch (pair) {
		case C_TITLE:
		case C_STATUS:
			return A_REVERSE;
		case C_TITLE_FOCUS:
			return A_REVERSE | A_BOLD;
		case C_RED:
			return A_BOLD;
		default:
			return A_NORMAL;
		}
	}
	if (pair == C_DIM)
		return A_DIM;
	return COLOR_PAIR(pair) | (pair == C_TITLE_FOCUS ? A_BOLD : 0);
}

/* Decodes the character at s (at most n bytes): returns its length and
 * sets *wc to what is drawn for it and *w to its columns.  Control
 * characters are drawn as a space, bytes that are no character as '?'. */
static size_t
tui_char(const char *s, size_t n, mbstate_t *st, wchar_t *wc, int *w)
{
	size_t len = mbrtowc(wc, s, n, st);
	if (len == (size_t)-1 || len == (size_t)-2 || len == 0) {
		memset(st, 0, sizeof *st);
		*wc = L'?';
		len = 1;
	}
	if (*wc < 32 || *wc == 127)
		*wc = L' ';
	*w = wcwidth(*wc);
	if (*w < 0)
		*w = 1, *wc = L'?';
	return len;
}

size_t
tui_fit(const char *s, size_t n, int cols, int *width)
{
	mbstate_t st;
	memset(&st, 0, sizeof st);
	size_t i = 0;
	int used = 0;
	while (i < n && s[i] != '\0') {
		wchar_t wc;
		int w;
		size_t len = tui_char(s + i, n - i, &st, &wc, &w);
		if (used + w > cols)
			break;
		used += w;
		i += len;
	}
	if (width != NULL)
		*width = used;
	return i;
}

int
tui_width(const char *s)
{
	int w;
	tui_fit(s, strlen(s), 1 << 30, &w);
	return w;
}

int
tui_put(int y, int x, int cols, const char *s, int attr)
{
	if (cols <= 0 || s == NULL)
		return 0;
	mbstate_t st;
	memset(&st, 0, sizeof st);
	size_t n = strlen(s);
	int used = 0;
	attron(attr);
	move(y, x);
	while (*s) {
		wchar_t wc;
		int w;
		size_t len = tui_char(s, n, &st, &wc, &w);
		if (used + w > cols)
			break;
		addnwstr(&wc, 1);
		used += w;
		s += len;
		n -= len;
	}
	attroff(attr);
	return used;
}

int
tui_put_cut(const struct tui *t, int y, int x, int cols, const char *s, int attr)
{
	if (cols <= 0 || s == NULL)
		return 0;
	size_t n = strlen(s);
	if (tui_fit(s, n, cols, NULL) == n)
		return tui_put(y, x, cols, s, attr);
	/* The last column shows that there is more. */
	char *head = xstrndup(s, tui_fit(s, n, cols - 1, NULL));
	int used = tui_put(y, x, cols - 1, head, attr);
	free(head);
	return used + tui_put(y, x + used, 1, t->ellipsis, attr);
}

/* ---- redraw scheduling ------------------------------------------------ */

static void
tui_on_frame(uv_timer_t *h)
{
	struct tui *t = h->data;
	t->frame_pending = false;
	if (t->dirty && !t->stopped)
		tui_draw(t);
}

void
tui_touch(struct tui *t)
{
	t->dirty = true;
	if (!t->frame_pending && !t->stopped) {
		t->frame_pending = true;
		uv_timer_start(&t->frame, tui_on_frame, TUI_FRAME_MS, 0);
	}
}

static void
tui_on_clock(uv_timer_t *h)
{
	struct tui *t = h->data;
	tui_rate_tick(t);
	tui_touch(t);
}

/* ---- layout ----------------------------------------------------------- */

/* Sets a pane's place only: its scroll and filter stay (a resize or a
 * focus change used to drop them). */
static void
pane_place(struct pane *p, int y, int x, int h, int w)
{
	p->y = y, p->x = x, p->h = h, p->w = w;
}

void
tui_layout(struct tui *t)
{
	int rows = LINES, cols = COLS;
	int top = rows - 3; /* rows for panes: message line, status bar, prompt */
	if (top < 4)
		top = 4;
	t->rows = rows;
	t->cols = cols;
	if (t->zoom) {
		for (int i = 0; i < PANE_N; i++)
			t->panes[i].h = 0;
		pane_place(&t->panes[t->focus], 0, 0, top, cols);
		return;
	}
	int h1 = top / 2, h2 = top - h1;
	int wl = cols / 2, wr = cols - wl - 1;
	/* Logs want width: give the bottom-right pane more of it. */
	int wl2 = cols * 2 / 5, wr2 = cols - wl2 - 1;
	pane_place(&t->panes[PANE_AGENTS], 0, 0, h1, wl);
	pane_place(&t->panes[PANE_TASKS], 0, wl + 1, h1, wr);
	pane_place(&t->panes[PANE_MESSAGES], h1, 0, h2, wl2);
	pane_place(&t->panes[PANE_LOGS], h1, wl2 + 1, h2, wr2);
}

/* ---- the prompt (readline) -------------------------------------------- */

static int
tui_rl_getc(FILE *f)
{
	(void)f;
	int c = g_rl_char;
	g_rl_char = EOF;
	return c;
}

static int
tui_rl_input_available(void)
{
	return g_rl_char != EOF;
}

static void
tui_rl_prep(int meta)
{
	(void)meta;
}

static void
tui_rl_deprep(void)
{
}

/* Draws the prompt line with the cursor at readline's point. */
void
tui_draw_prompt(struct tui *t)
{
	int y = t->rows - 1;
	move(y, 0);
	clrtoeol();
	int pw = tui_put(y, 0, t->cols, PROMPT, A_BOLD);
	const char *line = rl_line_buffer ? rl_line_buffer : "";
	/* Columns before the point, to scroll long lines horizontally. */
	char *head = xstrndup(line, (size_t)(rl_point >= 0 ? rl_point : 0));
	size_t wn = mbstowcs(NULL, head, 0);
	int before = 0;
	if (wn != (size_t)-1) {
		wchar_t *w = xcalloc(wn + 1, sizeof *w);
		mbstowcs(w, head, wn + 1);
		before = wcswidth(w, wn);
		free(w);
		if (before < 0)
			before = (int)wn;
	} else {
		before = (int)strlen(head);
	}
	free(head);
	int avail = t->cols - pw - 1;
	int skip = before > avail ? before - avail : 0;
	/* Skip `skip` columns of the line. */
	const char *p = line;
	mbstate_t st;
	memset(&st, 0, sizeof st);
	int skipped = 0;
	while (*p && skipped < skip) {
		wchar_t wc;
		size_t n = mbrtowc(&wc, p, MB_CUR_MAX, &st);
		if (n == (size_t)-1 || n == (size_t)-2 || n == 0)
			n = 1, wc = L'?';
		int w = wcwidth(wc);
		skipped += w > 0 ? w : 1;
		p += n;
	}
	tui_put(y, pw, avail + 1, p, A_NORMAL);
	move(y, pw + before - skip);
}

static void
tui_rl_redisplay(void)
{
	if (g_tui == NULL || g_tui->stopped)
		return;
	tui_draw_prompt(g_tui);
	refresh();
}

/* Candidates for readline from the command table. */
struct compl
{
	char **v;
	size_t n;
};

static void
tui_compl_add(const char *w, void *arg)
{
	struct compl *c = arg;
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(c->v[i], w) == 0)
			return;
	}
	c->v = xreallocarray(c->v, c->n + 2, sizeof *c->v);
	c->v[c->n++] = xstrdup(w);
	c->v[c->n] = NULL;
}

static char **
tui_rl_complete(const char *text, int start, int end)
{
	(void)end;
	rl_attempted_completion_over = 1;
	char *before = xstrndup(rl_line_buffer, (size_t)start);
	int argc = 0;
	char **argv = NULL, *cause = NULL;
	if (cmd_split(before, &argc, &argv, &cause) != 0) {
		free(cause);
		free(before);
		return NULL;
	}
	free(before);
	struct compl c = {0};
	cmd_complete(orch_cmds(g_tui->o), g_tui->o, argc, argv, text, tui_compl_add, &c);
	cmd_free_argv(argc, argv);
	if (c.n == 0) {
		free(c.v);
		return NULL;
	}
	/* readline wants the common prefix first. */
	size_t common = strlen(c.v[0]);
	for (size_t i = 1; i < c.n; i++) {
		size_t k = 0;
		while (k < common && c.v[i][k] == c.v[0][k])
			k++;
		common = k;
	}
	char **out = xcalloc(c.n + 2, sizeof *out);
	out[0] = c.n == 1 ? xstrdup(c.v[0]) : xstrndup(c.v[0], common);
	for (size_t i = 0; i < c.n; i++)
		out[i + 1] = c.v[i];
	out[c.n + 1] = NULL;
	free(c.v);
	return out;
}

/* Several candidates: shown on the message line instead of stdout. */
static void
tui_rl_display_matches(char **matches, int n, int maxlen)
{
	(void)maxlen;
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "candidates:");
	for (int i = 1; i <= n; i++)
		buf_addf(&b, " %s", matches[i]);
	tui_message(g_tui, false, "%s", b.data);
	buf_free(&b);
	/* They stay while the line goes on from there (see tui_on_input). */
	g_tui->compl_line = xstrndup(rl_line_buffer, (size_t)(rl_point > 0 ? rl_point : 0));
	tui_draw(g_tui);
}

/* ---- commands --------------------------------------------------------- */

static void
tui_cmd_stream(struct cmd_ctx *ctx, const char *text, void *arg)
{
	struct tui *t = arg;
	tui_popup_append(t, text);
	tui_touch(t);
}

/* Whether a result holds a secret: a string named like one (key, token,
 * password...) at its top level, not redacted. */
static bool
result_has_secret(const json_t *result)
{
	const char *name;
	json_t *v;
	json_object_foreach((json_t *)result, name, v)
	{
		const char *s = json_string_value(v);
		if (s != NULL && *s != '\0' && strcmp(s, "[redacted]") != 0 &&
		    config_secret_name(name))
			return true;
	}
	return false;
}

static void
tui_cmd_done(struct cmd_ctx *ctx, void *arg)
{
	struct tui *t = arg;
	t->cmd_busy = false;
	if (t->stopped)
		return;
	if (ctx->status != CMD_OK) {
		const char *err = ctx->error ? ctx->error : "command failed";
		tui_message(t, true, "%s", err);
		/* Too long for the message line: all of it in a popup too. */
		if (tui_width(err) > t->cols)
			tui_popup_set(t, ctx->entry ? ctx->entry->name : "error", err);
		tui_log_local(t, LVL_ERROR, err);
	} else if (ctx->text != NULL && *ctx->text != '\0') {
		const char *nl = strchr(ctx->text, '\n');
		bool one_line = nl == NULL || nl[1] == '\0';
		char *line = xstrndup(ctx->text, nl ? (size_t)(nl - ctx->text) : strlen(ctx->text));
		if (one_line && !t->popup_streamed && tui_width(line) <= t->cols) {
			tui_message(t, false, "%s", line);
		} else {
			tui_popup_set(t, ctx->entry ? ctx->entry->name : "output", ctx->text);
		}
		free(line);
		/* Kept in the logs pane too, so output is never lost; but a
		 * secret shown once (apikey create's key) only in the popup. */
		if (result_has_secret(ctx->result))
			tui_log_local(t, LVL_INFO, "(output not kept here: it holds a secret)");
		else
			tui_log_local(t, LVL_INFO, ctx->text);
	}
	t->popup_streamed = false;
	tui_touch(t);
}

static void
tui_rl_line(char *line)
{
	struct tui *t = g_tui;
	if (line == NULL) {
		/* Ctrl-D on an empty line. */
		orch_request_quit(t->o, "Ctrl-D at the prompt");
		return;
	}
	char *s = line;
	while (*s == ' ')
		s++;
	if (*s != '\0') {
		HIST_ENTRY *last =
		    history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
		/* A secret typed in an option (--env API_TOKEN=...) is kept in
		 * this session's history, for Up to fix a typo, but redacted in
		 * the history file and the logs pane, as the audit log has it. */
		char *redacted = cmd_line_redacted(t->o, s);
		if (last == NULL || strcmp(last->line, line) != 0) {
			add_history(redacted ? redacted : line);
			if (t->history_path != NULL)
				append_history(1, t->history_path);
			if (redacted != NULL) {
				HIST_ENTRY *old =
				    replace_history_entry(history_length - 1, line, NULL);
				if (old != NULL)
					free_history_entry(old);
			}
		}
		tui_popup_close(t);
		/* The last command's result goes: this one's replaces it. */
		tui_message_clear(t);
		char *echo = xasprintf("%s%s", PROMPT, redacted ? redacted : s);
		free(redacted);
		tui_log_local(t, LVL_INFO, echo);
		free(echo);
		t->cmd_busy = true;
		cmd_run_line(t->o, s, CLIENT_TUI, "tui", ROLE_CAPTAIN, tui_cmd_done, tui_cmd_stream,
		             t);
	}
	free(line);
	tui_touch(t);
}

/* ---- keys ------------------------------------------------------------- */

static void
tui_feed_readline(int c)
{
	g_rl_char = c;
	rl_callback_read_char();
}

/* Whether readline gives Esc c (Alt-c) a meaning of its own: M-b, M-f,
 * M-d, M-DEL, or a prefix like Esc [ of the keys ncurses does not know. */
static bool
tui_rl_meta(int c)
{
	if (c <= 0 || c > 255 || c == 27)
		return false;
	char seq[3] = {27, (char)c, '\0'};
	int type = ISFUNC;
	rl_command_func_t *f = rl_function_of_keyseq(seq, NULL, &type);
	if (f == rl_do_lowercase_version && c >= 'A' && c <= 'Z')
		return tui_rl_meta(c - 'A' + 'a');
	return f != NULL && (type != ISFUNC || f != rl_insert);
}

/* Ctrl-C: clears the line (or a search) like a shell; on an empty line it
 * quits, as `quit` does. */
static void
tui_ctrl_c(struct tui *t)
{
	if (rl_end == 0 && !RL_ISSTATE(RL_STATE_ISEARCH | RL_STATE_NSEARCH | RL_STATE_NUMERICARG |
	                               RL_STATE_MULTIKEY)) {
		orch_request_quit(t->o, "Ctrl-C at the prompt");
		return;
	}
	rl_free_line_state();
	rl_callback_sigcleanup();
	rl_replace_line("", 1);
	rl_point = rl_mark = 0;
	using_history(); /* Up starts from the newest command again */
}

static void
tui_scroll(struct tui *t, int pane, int how)
{
	if (t->popup_text != NULL) {
		tui_popup_scroll(t, how);
		return;
	}
	tui_pane_scroll(t, pane, how);
}

/* Mouse: a click focuses the pane under it, the wheel scrolls it. */
static void
tui_mouse(struct tui *t)
{
	MEVENT ev;
	if (getmouse(&ev) != OK)
		return;
	for (int i = 0; i < PANE_N; i++) {
		struct pane *p = &t->panes[i];
		if (p->h <= 0 || ev.y < p->y || ev.y >= p->y + p->h || ev.x < p->x ||
		    ev.x >= p->x + p->w)
			continue;
		if (ev.bstate & (BUTTON1_CLICKED | BUTTON1_PRESSED | BUTTON1_RELEASED))
			t->focus = i;
#ifdef BUTTON5_PRESSED
		if (ev.bstate & BUTTON5_PRESSED)
			tui_pane_scroll(t, i, SCROLL_DOWN3);
#endif
		if (ev.bstate & BUTTON4_PRESSED)
			tui_pane_scroll(t, i, SCROLL_UP3);
	}
}

static void
tui_key(struct tui *t, int c)
{
	switch (c) {
	case KEY_RESIZE:
		tui_layout(t);
		clearok(stdscr, TRUE);
		break;
	case KEY_F(1):
		tui_show_help(t);
		break;
	case KEY_F(2):
	case KEY_F(3):
	case KEY_F(4):
	case KEY_F(5):
		t->focus = c - KEY_F(2);
		tui_layout(t);
		break;
	case KEY_PPAGE:
		tui_scroll(t, t->focus, SCROLL_PAGE_UP);
		break;
	case KEY_NPAGE:
		tui_scroll(t, t->focus, SCROLL_PAGE_DOWN);
		break;
	case KEY_HOME:
		tui_scroll(t, t->focus, SCROLL_TOP);
		break;
	case KEY_END:
		tui_scroll(t, t->focus, SCROLL_BOTTOM);
		break;
	case KEY_MOUSE:
		tui_mouse(t);
		break;
	case 3: /* Ctrl-C (raw mode: no SIGINT) */
		tui_ctrl_c(t);
		break;
	case 12: /* Ctrl-L */
		clearok(stdscr, TRUE);
		break;
	case KEY_UP:
		rl_get_previous_history(1, 0);
		break;
	case KEY_DOWN:
		rl_get_next_history(1, 0);
		break;
	case KEY_LEFT:
		rl_backward_char(1, 0);
		break;
	case KEY_RIGHT:
		rl_forward_char(1, 0);
		break;
	case KEY_BACKSPACE:
	case 127:
	case 8:
		rl_rubout(1, 0);
		break;
	case KEY_DC:
		rl_delete(1, 0);
		break;
	case KEY_ENTER:
		tui_feed_readline('\n');
		return;
	case 27: { /* Esc, or Alt-key: terminals send Alt-x as Esc x */
		int n = getch();
		if (n >= '1' && n <= '4') {
			t->focus = n - '1';
			tui_layout(t);
		} else if (n == 'z' || n == 'Z') {
			t->zoom = !t->zoom;
			tui_layout(t);
		} else if (tui_rl_meta(n)) {
			tui_feed_readline(27);
			tui_feed_readline(n);
			return;
		} else {
			/* Esc alone closes the popup.  A key that came with it
			 * but is no Alt-key was typed after Esc: it counts. */
			tui_popup_close(t);
			if (n != ERR)
				tui_key(t, n);
		}
		break;
	}
	default:
		if (c >= KEY_MIN)
			return; /* other function keys: nothing */
		tui_feed_readline(c);
		return;
	}
	tui_touch(t);
}

static void
tui_on_input(uv_poll_t *h, int status, int events)
{
	struct tui *t = h->data;
	int c;
	if (status < 0 || (events & UV_DISCONNECT)) {
		/* The terminal went away (window closed, ssh dropped). */
		orch_request_quit(t->o, "the terminal went away");
		return;
	}
	while (!t->stopped && (c = getch()) != ERR)
		tui_key(t, c);
	/* Tab's candidates stay while the line goes on from where they were
	 * listed; once it is cleared or edited before that, they go. */
	if (!t->stopped && t->compl_line != NULL &&
	    strncmp(rl_line_buffer, t->compl_line, strlen(t->compl_line)) != 0)
		tui_message_clear(t);
	if (!t->stopped)
		tui_draw_prompt(t), refresh();
}

static void
tui_on_winch(uv_signal_t *h, int signum)
{
	struct tui *t = h->data;
	/* ncurses notices the new size through KEY_RESIZE once it reads. */
	endwin();
	refresh();
	tui_layout(t);
	clearok(stdscr, TRUE);
	tui_draw(t);
}

/* ---- fatal signals ---------------------------------------------------- */

static void
tui_fatal(int sig)
{
	/* Not async-signal-safe, but the process is going down anyway and a
	 * terminal left in raw mode is worse (htop does the same). */
	endwin();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- start and stop --------------------------------------------------- */

int
tui_start(struct orch *o, struct tui **out, char **cause)
{
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		*cause = xstrdup("the TUI needs a terminal (use --headless without one)");
		return -1;
	}
	setlocale(LC_ALL, "");
	struct tui *t = xcalloc(1, sizeof *t);
	t->o = o;
	bool utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
	t->ellipsis = utf8 ? "\xe2\x80\xa6" : "~";
	t->arrow = utf8 ? " \xe2\x86\x92 " : " -> ";
	t->focus = PANE_LOGS;
	const struct config *cfg = orch_config(o);
	tui_state_init(t, cfg->tui.max_lines);

	/* stderr goes to a file while the screen is up; shown after exit. */
	t->stderr_path = path_join(orch_runtime(o), "logs/tui-stderr.log");
	t->saved_stderr = dup(STDERR_FILENO);
	int fd = open(t->stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, STDERR_FILENO);
		close(fd);
	}

	if (initscr() == NULL) {
		*cause = xstrdup("cannot initialise the terminal");
		return -1;
	}
	t->started = true;
	raw();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	/* Home and End as tmux, screen and rxvt send them whatever TERM says
	 * (they were Esc [ 1 ~ to readline, not scrolling). */
	define_key("\033[1~", KEY_HOME);
	define_key("\033[4~", KEY_END);
	nodelay(stdscr, TRUE);
	set_escdelay(25);
	mousemask(BUTTON1_CLICKED | BUTTON1_PRESSED | BUTTON4_PRESSED
#ifdef BUTTON5_PRESSED
	              | BUTTON5_PRESSED
#endif
	          ,
	          NULL);
	mouseinterval(0);
	tui_colors(t);
	signal(SIGSEGV, tui_fatal);
	signal(SIGBUS, tui_fatal);
	signal(SIGFPE, tui_fatal);
	signal(SIGABRT, tui_fatal);

	g_tui = t;
	rl_catch_signals = 0;
	rl_catch_sigwinch = 0;
	rl_change_environment = 0;
	rl_prep_term_function = tui_rl_prep;
	rl_deprep_term_function = tui_rl_deprep;
	rl_getc_function = tui_rl_getc;
	rl_input_available_hook = tui_rl_input_available;
	rl_redisplay_function = tui_rl_redisplay;
	rl_attempted_completion_function = tui_rl_complete;
	rl_completion_display_matches_hook = tui_rl_display_matches;
	t->devnull = fopen("/dev/null", "w");
	rl_outstream = t->devnull;
	rl_readline_name = "dreamos";
	rl_variable_bind("bell-style", "none");
	rl_variable_bind("horizontal-scroll-mode", "on");
	using_history();
	stifle_history(1000);
	t->history_path = path_join(orch_runtime(o), "history");
	/* append_history does not create the file: make it on the first run. */
	if (read_history(t->history_path) == ENOENT)
		write_history(t->history_path);
	rl_callback_handler_install(PROMPT, tui_rl_line);

	uv_loop_t *loop = orch_loop(o);
	uv_poll_init(loop, &t->poll, STDIN_FILENO);
	t->poll.data = t;
	uv_poll_start(&t->poll, UV_READABLE | UV_DISCONNECT, tui_on_input);
	uv_signal_init(loop, &t->winch);
	t->winch.data = t;
	uv_signal_start(&t->winch, tui_on_winch, SIGWINCH);
	uv_timer_init(loop, &t->frame);
	t->frame.data = t;
	uv_timer_init(loop, &t->clock);
	t->clock.data = t;
	uv_timer_start(&t->clock, tui_on_clock, 1000, 1000);
	t->handles = 4;

	tui_subscribe(t);
	tui_layout(t);
	tui_message(t, false, "F1 help  F2-F5 focus  PgUp/PgDn scroll  Alt-z zoom  'quit' exits");
	tui_draw(t);
	*out = t;
	return 0;
}

static void
tui_handle_closed(uv_handle_t *h)
{
	struct tui *t = h->data;
	t->handles--;
}

void
tui_stop(struct tui *t)
{
	if (t == NULL || t->stopped)
		return;
	t->stopped = true;
	tui_unsubscribe(t);
	if (t->handles > 0) {
		uv_close((uv_handle_t *)&t->poll, tui_handle_closed);
		uv_close((uv_handle_t *)&t->winch, tui_handle_closed);
		uv_close((uv_handle_t *)&t->frame, tui_handle_closed);
		uv_close((uv_handle_t *)&t->clock, tui_handle_closed);
	}
	rl_callback_handler_remove();
	if (t->history_path != NULL)
		history_truncate_file(t->history_path, 1000);
	if (t->started) {
		endwin();
		t->started = false;
	}
	signal(SIGSEGV, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
	signal(SIGFPE, SIG_DFL);
	signal(SIGABRT, SIG_DFL);
	if (t->saved_stderr >= 0) {
		dup2(t->saved_stderr, STDERR_FILENO);
		close(t->saved_stderr);
		t->saved_stderr = -1;
		/* Whatever was written to stderr meanwhile. */
		FILE *f = fopen(t->stderr_path, "r");
		if (f != NULL) {
			char buf[4096];
			size_t n;
			while ((n = fread(buf, 1, sizeof buf, f)) > 0)
				fwrite(buf, 1, n, stderr);
			fclose(f);
		}
	}
}

void
tui_free(struct tui *t)
{
	if (t == NULL)
		return;
	tui_stop(t);
	tui_state_free(t);
	if (t->devnull != NULL)
		fclose(t->devnull);
	clear_history();
	free(t->history_path);
	free(t->stderr_path);
	if (g_tui == t)
		g_tui = NULL;
	free(t);
}
