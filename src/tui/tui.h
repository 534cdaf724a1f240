/* tui.h — the terminal user interface: four live panes (agents, tasks,
 * messages, logs), a status bar and the readline CaptainPhone prompt, all on
 * the orchestrator's libuv loop.
 *
 * UI state (pane rings, scroll positions, filters, focus) lives in
 * struct tui and the pane structs and is updated from orchestrator events;
 * drawing reads that state and happens at most ~30 times per second, only
 * when something changed (plus a once-per-second clock tick). */
#ifndef DREAMOS_TUI_H
#define DREAMOS_TUI_H

#include <stdbool.h>

struct orch;
struct tui;

/* Takes over the terminal (stdin/stdout must be a terminal).  Returns 0,
 * or -1 with *cause. */
int tui_start(struct orch *o, struct tui **out, char **cause);
/* Restores the terminal and releases the loop handles; prints what was
 * written to stderr while the screen was up.  Safe to call twice. */
void tui_stop(struct tui *t);
void tui_free(struct tui *t);

#endif
