/* stealthbrowser.c — the StealthBrowser extension (DESIGN section 10):
 * Chromium, headless, driven over the DevTools protocol through
 * --remote-debugging-pipe (fd 3: commands to it, fd 4: its answers and
 * events; NUL-separated JSON, see cdp.h).  No WebSocket, no driver.
 *
 *   browse open|text|eval|click|type|shot|close|status
 *       captain commands; each waits for the browser without blocking the
 *       loop (DREAMOS_CMD_WAIT, answered by call_finish);
 *   agent type "browser" (capability "web"): a task's payload is a URL and
 *       a list of actions; the result (text, values, screenshot files)
 *       comes back with task.done, a failure with task.fail.
 *
 * One browser process for the extension, started on first use (not at
 * load), through the host's child-process API (proc_spawn: its own process
 * group, killed by the host when the extension unloads).  Work is queued:
 * one job (a command, or a task) at a time, each a list of actions run as
 * a small state machine that sends one DevTools command and waits for its
 * answer, for a page load, or for a pause.  If the browser dies, the job
 * running fails with the reason and the next one starts it again (counted
 * in `browse status` as a restart).
 *
 * Low detection: the user agent is the browser's own without "Headless"
 * (and client hints to match), navigator.webdriver is false (the
 * AutomationControlled blink feature is off), language, platform and
 * window size agree with each other, and clicks and keystrokes come with
 * pauses drawn from a seeded generator (deterministic for tests). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include <dreamos/extension.h>

#include "cdp.h"

#define SB_VERSION "1.0"
#define TYPE_NAME  "browser"

static const struct dreamos_host *host;
static struct dreamos_ext *self;

#include "../common/helpers.h"

/* ---- settings ------------------------------------------------------------ */

static struct {
	char *chromium;    /* the binary, or NULL: looked up on PATH at launch */
	json_t *args;      /* extra arguments (array of strings) */
	int width, height; /* window and viewport */
	char *lang;        /* --lang */
	char *accept_lang; /* --accept-lang and Accept-Language ("en-US,en") */
	char *user_agent;  /* NULL: the browser's own without "Headless" */
	char *platform;    /* navigator.platform */
	long nav_timeout_ms, cmd_timeout_ms, start_timeout_ms;
	long pause_min, pause_max; /* before a click or typing */
	long key_min, key_max;     /* between keystrokes */
	uint64_t seed;
	double kill_after_s;
	size_t max_message;
	char *agent; /* the agent created at load, or NULL */
	bool stealth;
	int no_sandbox; /* -1: when running as root */
	bool headless;
	bool allow_files; /* file:// URLs (local files readable through the page) */
} cfg;

/* ---- small helpers ------------------------------------------------------------ */

static char *xfmt(const char *f, ...) DREAMOS_PRINTF(1, 2);

/* printf into a new string; aborts when out of memory.  Not redacted,
 * unlike fmt (helpers.h): it makes the browser's arguments, file names
 * and scripts as well as messages.  The caller frees it. */
static char *
xfmt(const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *s = NULL;
	if (vasprintf(&s, f, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Pauses come from splitmix64, seeded by `seed` (or the clock). */
static uint64_t rng_state;

static uint64_t
rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A number in [lo, hi]. */
static long
rng_between(long lo, long hi)
{
	if (hi <= lo)
		return lo;
	return lo + (long)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* ---- the browser ----------------------------------------------------------------- */

enum bstate { B_DOWN, B_STARTING, B_READY };

/* Page setup steps, after Browser.getVersion. */
enum pstep {
	P_NONE,
	P_CREATE,
	P_ATTACH,
	P_PAGE_ENABLE,
	P_INSPECTOR,
	P_LIFECYCLE,
	P_UA,
	P_METRICS,
	P_SCRIPT,
	P_DONE
};

#define LOADS_KEPT 8
#define ERRTAIL    1024

static struct {
	enum bstate state;
	uint64_t proc; /* host process id, 0: none */
	long pid;
	char *path; /* the binary started */
	struct cdp *cdp;
	bool closing;     /* an exit now is expected (browse close, unload) */
	bool crashed;     /* the last exit was not: the next launch is a restart */
	char *fail_why;   /* why we killed it (start timeout) */
	uint64_t timer;   /* start timeout, or the close's SIGKILL */
	char *version;    /* "Chrome/156.0.8078.79" */
	char *ua;         /* the user agent in use */
	char *session;    /* the page's session, or NULL */
	char *target;     /* the page's target id */
	enum pstep pstep; /* page setup under way (P_NONE: none) */
	bool page_ready;
	char *loads[LOADS_KEPT]; /* loaderIds whose load event came */
	int loads_pos;
	int launches, restarts, crashes;
	int64_t launched_ms;
	long ready_ms; /* launch to first page ready, last launch */
	uint64_t commands, events;
	char errtail[ERRTAIL]; /* the end of its stderr */
	size_t errlen;
	int last_status, last_signal;
} br;

/* The cookies of the browser's own commands: setup, its pid. */
static char br_cookie, br_pid_cookie;

static void br_send_page_setup(void);
static void jobs_browser_ready(void);
static void jobs_browser_failed(const char *why);
static void jobs_browser_exited(const char *why);
static void jobs_page_lost(const char *why);
static void job_on_load(const char *loader);

/* Sends a command; cookie comes back with the answer (NULL: none wanted).
 * page: to the page's session.  Returns its id, or 0 (logged). */
static uint64_t
br_send(const char *method, json_t *params, bool page, void *cookie)
{
	if (br.proc == 0 || (page && br.session == NULL)) {
		json_decref(params);
		return 0;
	}
	char *out;
	size_t len;
	uint64_t id =
	    cdp_command(br.cdp, method, params, page ? br.session : NULL, cookie, &out, &len);
	if (host->proc_write(self, br.proc, 3, out, len) != 0) {
		host->log(self, DREAMOS_LOG_WARN, "%s: %s", method, host->last_error(self));
		cdp_forget(br.cdp, id);
		free(out);
		return 0;
	}
	free(out);
	br.commands++;
	return id;
}

/* The binary to start: the setting, else the first of the usual names on
 * PATH.  Caller frees; NULL if none. */
static char *
br_find_binary(void)
{
	if (cfg.chromium != NULL)
		return access(cfg.chromium, X_OK) == 0 ? xstrdup(cfg.chromium) : NULL;
	static const char *const names[] = {"chromium", "chromium-browser", "google-chrome",
	                                    "google-chrome-stable"};
	const char *path = getenv("PATH");
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		const char *p = path;
		while (*p != '\0') {
			size_t n = strcspn(p, ":");
			char *f = xfmt("%.*s/%s", (int)n, p, names[i]);
			if (n > 0 && access(f, X_OK) == 0)
				return f;
			free(f);
			p += n;
			if (*p == ':')
				p++;
		}
	}
	return NULL;
}

/* dir/name made with mode 0700 (and set to it if it exists).  Caller
 * frees; NULL with *why. */
static char *
private_dir(const char *name, char **why)
{
	const char *base = host->data_dir(self);
	if (base == NULL) {
		*why = xfmt("no data directory: %s", host->last_error(self));
		return NULL;
	}
	char *d = xfmt("%s/%s", base, name);
	if (mkdir(d, 0700) != 0 && errno != EEXIST) {
		*why = xfmt("cannot create %s: %s", d, strerror(errno));
		free(d);
		return NULL;
	}
	chmod(d, 0700);
	return d;
}

static void
br_forget_page(void)
{
	free(br.session);
	free(br.target);
	br.session = br.target = NULL;
	br.page_ready = false;
	br.pstep = P_NONE;
}

static void
br_timer_clear(void)
{
	if (br.timer != 0)
		host->timer_remove(self, br.timer);
	br.timer = 0;
}

static void
br_on_start_timeout(struct dreamos_ext *ext, void *arg)
{
	(void)ext, (void)arg;
	br.timer = 0;
	free(br.fail_why);
	br.fail_why = xfmt("it did not answer within %ld ms", cfg.start_timeout_ms);
	if (br.proc != 0)
		host->proc_kill(self, br.proc, 9);
}

static void
br_on_close_timeout(struct dreamos_ext *ext, void *arg)
{
	(void)ext, (void)arg;
	br.timer = 0;
	if (br.proc != 0)
		host->proc_kill(self, br.proc, 9);
}

/* The last lines of its stderr, for an error message (static buffer). */
static const char *
br_errtail(void)
{
	static char out[400];
	size_t n = br.errlen;
	while (n > 0 && (br.errtail[n - 1] == '\n' || br.errtail[n - 1] == ' '))
		n--;
	size_t from = n > 300 ? n - 300 : 0;
	snprintf(out, sizeof out, "%.*s", (int)(n - from), br.errtail + from);
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = '|';
	return out;
}

static void br_on_data(struct dreamos_ext *ext, void *arg, uint64_t id, int fd, const char *data,
                       size_t len);
static void br_on_exit(struct dreamos_ext *ext, void *arg, uint64_t id, int status, int signum);

/* Starts the browser.  Returns 0, or -1 with *why (caller frees). */
static int
br_launch(char **why)
{
	char *bin = br_find_binary();
	if (bin == NULL) {
		*why = cfg.chromium ? xfmt("cannot run %s (extensions.stealthbrowser.chromium): %s",
		                           cfg.chromium, strerror(errno))
		                    : xfmt("no chromium on PATH: install it or set "
		                           "extensions.stealthbrowser.chromium");
		return -1;
	}
	char *profile = private_dir("profile", why);
	if (profile == NULL) {
		free(bin);
		return -1;
	}
	bool no_sandbox = cfg.no_sandbox < 0 ? geteuid() == 0 : cfg.no_sandbox;
	size_t nextra = json_array_size(cfg.args);
	const char **argv = calloc(32 + nextra, sizeof *argv);
	char *owned[8];
	int nowned = 0, n = 0;
	argv[n++] = bin;
	if (cfg.headless)
		argv[n++] = "--headless=new";
	if (no_sandbox)
		argv[n++] = "--no-sandbox";
	argv[n++] = "--disable-gpu";
	argv[n++] = "--no-first-run";
	argv[n++] = "--no-default-browser-check";
	argv[n++] = "--disable-dev-shm-usage";
	argv[n++] = "--remote-debugging-pipe";
	argv[n++] = "--password-store=basic";
	argv[n++] = "--mute-audio";
	argv[n++] = "--disable-breakpad";
	argv[n++] = owned[nowned++] = xfmt("--user-data-dir=%s", profile);
	argv[n++] = owned[nowned++] = xfmt("--window-size=%d,%d", cfg.width, cfg.height);
	argv[n++] = owned[nowned++] = xfmt("--lang=%s", cfg.lang);
	argv[n++] = owned[nowned++] = xfmt("--accept-lang=%s", cfg.accept_lang);
	if (cfg.stealth)
		argv[n++] = "--disable-blink-features=AutomationControlled";
	for (size_t i = 0; i < nextra; i++)
		argv[n++] = json_string_value(json_array_get(cfg.args, i));
	argv[n++] = "about:blank";
	argv[n] = NULL;
	const char *env[] = {"LANG=C.UTF-8", NULL};
	struct dreamos_proc_spec spec = {
	    .size = sizeof spec,
	    .file = bin,
	    .argv = argv,
	    .env = env,
	    .cwd = host->data_dir(self),
	    .extra_pipes = 2,
	    .kill_after_s = cfg.kill_after_s,
	};
	uint64_t id = host->proc_spawn(self, &spec, br_on_data, br_on_exit, NULL);
	for (int i = 0; i < nowned; i++)
		free(owned[i]);
	free(argv);
	free(profile);
	if (id == 0) {
		*why = xfmt("%s", host->last_error(self));
		free(bin);
		return -1;
	}
	br.proc = id;
	br.pid = 0;
	free(br.path);
	br.path = bin;
	br.state = B_STARTING;
	br.closing = false;
	br.errlen = 0;
	free(br.fail_why);
	br.fail_why = NULL;
	br.launches++;
	if (br.crashed) {
		br.restarts++;
		br.crashed = false;
	}
	br.launched_ms = now_ms();
	cdp_reset(br.cdp);
	br_forget_page();
	br.timer =
	    host->timer_add(self, (uint64_t)cfg.start_timeout_ms, 0, br_on_start_timeout, NULL);
	br_send("Browser.getVersion", NULL, false, &br_cookie);
	host->log(self, DREAMOS_LOG_INFO, "starting %s (profile in %s/profile)", bin,
	          host->data_dir(self));
	return 0;
}

/* Asks the browser to close; the host kills it if it does not (and on
 * unload). */
static void
br_close(void)
{
	if (br.proc == 0)
		return;
	br.closing = true;
	br_send("Browser.close", NULL, false, NULL);
	br_timer_clear();
	br.timer = host->timer_add(self, 5000, 0, br_on_close_timeout, NULL);
}

/* The user agent without "Headless", from Browser.getVersion. */
static char *
ua_clean(const char *ua)
{
	if (ua == NULL)
		return xstrdup("");
	char *out = xstrdup(ua);
	char *p;
	while ((p = strstr(out, "HeadlessChrome")) != NULL)
		memmove(p, p + 8, strlen(p + 8) + 1);
	return out;
}

/* Client hints that agree with the user agent. */
static json_t *
ua_metadata(void)
{
	const char *v = br.version ? strchr(br.version, '/') : NULL;
	const char *full = v ? v + 1 : "0.0.0.0";
	char major[16];
	snprintf(major, sizeof major, "%.*s", (int)strcspn(full, "."), full);
	return json_pack("{s:[{s:s,s:s},{s:s,s:s}],s:[{s:s,s:s},{s:s,s:s}],s:s,s:s,s:s,s:s,"
	                 "s:s,s:s,s:b}",
	                 "brands", "brand", "Chromium", "version", major, "brand", "Not_A Brand",
	                 "version", "24", "fullVersionList", "brand", "Chromium", "version", full,
	                 "brand", "Not_A Brand", "version", "24.0.0.0", "fullVersion", full,
	                 "platform", "Linux", "platformVersion", "", "architecture", "x86",
	                 "bitness", "64", "model", "", "mobile", 0);
}

/* Hides what the flags cannot (navigator.webdriver, should a version
 * ignore the flag), without touching what is already right. */
static const char stealth_script[] =
    "(() => { try { if (navigator.webdriver) { Object.defineProperty(Navigator.prototype, "
    "'webdriver', { get: () => false, configurable: true }); } } catch (e) {} })();";

/* Sends the next command of the page setup. */
static void
br_send_page_setup(void)
{
	switch (br.pstep) {
	case P_NONE:
	case P_CREATE:
		br.pstep = P_CREATE;
		br_send("Target.createTarget", json_pack("{s:s}", "url", "about:blank"), false,
		        &br_cookie);
		break;
	case P_ATTACH:
		br_send("Target.attachToTarget",
		        json_pack("{s:s,s:b}", "targetId", br.target, "flatten", 1), false,
		        &br_cookie);
		break;
	case P_PAGE_ENABLE:
		br_send("Page.enable", NULL, true, &br_cookie);
		break;
	case P_INSPECTOR:
		/* For Inspector.targetCrashed. */
		br_send("Inspector.enable", NULL, true, &br_cookie);
		break;
	case P_LIFECYCLE:
		br_send("Page.setLifecycleEventsEnabled", json_pack("{s:b}", "enabled", 1), true,
		        &br_cookie);
		break;
	case P_UA: {
		json_t *p = json_pack("{s:s,s:s,s:s}", "userAgent", br.ua, "acceptLanguage",
		                      cfg.accept_lang, "platform", cfg.platform);
		if (cfg.user_agent == NULL)
			json_object_set_new(p, "userAgentMetadata", ua_metadata());
		br_send("Emulation.setUserAgentOverride", p, true, &br_cookie);
		break;
	}
	case P_METRICS:
		br_send("Emulation.setDeviceMetricsOverride",
		        json_pack("{s:i,s:i,s:i,s:b,s:i,s:i}", "width", cfg.width, "height",
		                  cfg.height, "deviceScaleFactor", 1, "mobile", 0, "screenWidth",
		                  cfg.width, "screenHeight", cfg.height),
		        true, &br_cookie);
		break;
	case P_SCRIPT:
		br_send("Page.addScriptToEvaluateOnNewDocument",
		        json_pack("{s:s}", "source", stealth_script), true, &br_cookie);
		break;
	case P_DONE:
		break;
	}
}

/* An answer to one of the browser's own commands (version, page setup). */
static void
br_on_setup_reply(const struct cdp_msg *m)
{
	if (br.state == B_STARTING) {
		br_timer_clear();
		if (m->error != NULL) {
			free(br.fail_why);
			br.fail_why = xfmt("Browser.getVersion: %s", m->error);
			host->proc_kill(self, br.proc, 9);
			return;
		}
		free(br.version);
		br.version = xstrdup(jstr(m->result, "product"));
		free(br.ua);
		br.ua = cfg.user_agent ? xstrdup(cfg.user_agent)
		        : cfg.stealth  ? ua_clean(jstr(m->result, "userAgent"))
		                       : xstrdup(jstr(m->result, "userAgent"));
		br.state = B_READY;
		br.pid = 0;
		host->log(self, DREAMOS_LOG_INFO, "%s is up (%ld ms)",
		          br.version ? br.version : "the browser",
		          (long)(now_ms() - br.launched_ms));
		/* Its pid (the host's process ids are not pids). */
		br_send("SystemInfo.getProcessInfo", NULL, false, &br_pid_cookie);
		br.pstep = P_CREATE;
		br_send_page_setup();
		return;
	}
	if (m->error != NULL) {
		char *why = xfmt("setting up the page: %s", m->error);
		br_forget_page();
		jobs_page_lost(why);
		free(why);
		return;
	}
	switch (br.pstep) {
	case P_CREATE:
		free(br.target);
		br.target = xstrdup(jstr(m->result, "targetId"));
		br.pstep = P_ATTACH;
		break;
	case P_ATTACH:
		free(br.session);
		br.session = xstrdup(jstr(m->result, "sessionId"));
		br.pstep = P_PAGE_ENABLE;
		break;
	case P_PAGE_ENABLE:
		br.pstep = P_INSPECTOR;
		break;
	case P_INSPECTOR:
		br.pstep = P_LIFECYCLE;
		break;
	case P_LIFECYCLE:
		br.pstep = cfg.stealth ? P_UA : P_METRICS;
		break;
	case P_UA:
		br.pstep = P_METRICS;
		break;
	case P_METRICS:
		br.pstep = cfg.stealth ? P_SCRIPT : P_DONE;
		break;
	case P_SCRIPT:
		br.pstep = P_DONE;
		break;
	default:
		return;
	}
	if (br.target == NULL || (br.pstep > P_ATTACH && br.session == NULL)) {
		br_forget_page();
		jobs_page_lost("setting up the page: no target or session");
		return;
	}
	if (br.pstep != P_DONE) {
		br_send_page_setup();
		return;
	}
	br.page_ready = true;
	br.pstep = P_NONE;
	if (br.ready_ms == 0 || br.launches > 0)
		br.ready_ms = (long)(now_ms() - br.launched_ms);
	jobs_browser_ready();
}

/* A page setup is needed (the browser is up, the page is not). */
static void
br_page_setup(void)
{
	if (br.state == B_READY && !br.page_ready && br.pstep == P_NONE) {
		br.pstep = P_CREATE;
		br_send_page_setup();
	}
}

static void job_on_reply(void *cookie, const struct cdp_msg *m);

static void
br_on_pid_reply(const struct cdp_msg *m)
{
	json_t *v = json_object_get(m->result, "processInfo");
	for (size_t i = 0; i < json_array_size(v); i++) {
		json_t *p = json_array_get(v, i);
		const char *type = jstr(p, "type");
		if (type != NULL && strcmp(type, "browser") == 0 &&
		    json_is_integer(json_object_get(p, "id")))
			br.pid = (long)json_integer_value(json_object_get(p, "id"));
	}
}

static void
br_on_event(const struct cdp_msg *m)
{
	br.events++;
	const char *method = m->method;
	bool ours = m->session != NULL && br.session != NULL && strcmp(m->session, br.session) == 0;
	if (ours && strcmp(method, "Page.lifecycleEvent") == 0) {
		const char *name = jstr(m->params, "name");
		const char *loader = jstr(m->params, "loaderId");
		if (name == NULL || loader == NULL || strcmp(name, "load") != 0)
			return;
		free(br.loads[br.loads_pos]);
		br.loads[br.loads_pos] = xstrdup(loader);
		br.loads_pos = (br.loads_pos + 1) % LOADS_KEPT;
		job_on_load(loader);
	} else if (ours && strcmp(method, "Inspector.targetCrashed") == 0) {
		/* The dead page goes; the next job opens a new one. */
		host->log(self, DREAMOS_LOG_WARN,
		          "the page crashed; the next command opens a new one");
		if (br.target != NULL)
			br_send("Target.closeTarget", json_pack("{s:s}", "targetId", br.target),
			        false, NULL);
		br_forget_page();
		jobs_page_lost("the page crashed");
	} else if (strcmp(method, "Target.detachedFromTarget") == 0 && br.session != NULL &&
	           jstr(m->params, "sessionId") != NULL &&
	           strcmp(jstr(m->params, "sessionId"), br.session) == 0) {
		br_forget_page();
		jobs_page_lost("the page was closed");
	}
}

/* Output of the browser: fd 4 is the DevTools pipe, fd 2 its stderr. */
static void
br_on_data(struct dreamos_ext *ext, void *arg, uint64_t id, int fd, const char *data, size_t len)
{
	(void)ext, (void)arg;
	if (id != br.proc || len == 0)
		return;
	if (fd == 2) {
		/* Kept for error messages; logged at debug (it is chatty). */
		if (len >= ERRTAIL) {
			memcpy(br.errtail, data + len - ERRTAIL, ERRTAIL);
			br.errlen = ERRTAIL;
		} else {
			if (br.errlen + len > ERRTAIL) {
				size_t drop = br.errlen + len - ERRTAIL;
				memmove(br.errtail, br.errtail + drop, br.errlen - drop);
				br.errlen -= drop;
			}
			memcpy(br.errtail + br.errlen, data, len);
			br.errlen += len;
		}
		host->log(self, DREAMOS_LOG_DEBUG, "chromium: %.*s", (int)(len > 500 ? 500 : len),
		          data);
		return;
	}
	if (fd != 4)
		return;
	cdp_feed(br.cdp, data, len);
	struct cdp_msg m;
	char err[200];
	int rc;
	while (id == br.proc && (rc = cdp_next(br.cdp, &m, err, sizeof err)) != 0) {
		if (rc < 0) {
			host->log(self, DREAMOS_LOG_WARN, "DevTools: %s", err);
			continue;
		}
		if (m.kind == CDP_EVENT)
			br_on_event(&m);
		else if (m.known && m.cookie == &br_cookie)
			br_on_setup_reply(&m);
		else if (m.known && m.cookie == &br_pid_cookie)
			br_on_pid_reply(&m);
		else if (m.known && m.cookie != NULL)
			job_on_reply(m.cookie, &m);
		cdp_msg_clear(&m);
	}
}

static void
br_on_exit(struct dreamos_ext *ext, void *arg, uint64_t id, int status, int signum)
{
	(void)ext, (void)arg;
	if (id != br.proc)
		return;
	bool expected = br.closing;
	bool starting = br.state == B_STARTING;
	br.proc = 0;
	br.pid = 0;
	br.state = B_DOWN;
	br.last_status = status;
	br.last_signal = signum;
	br_timer_clear();
	br_forget_page();
	cdp_reset(br.cdp);
	char how[64];
	if (signum != 0)
		snprintf(how, sizeof how, "killed by signal %d", signum);
	else
		snprintf(how, sizeof how, "exit status %d", status);
	if (expected) {
		host->log(self, DREAMOS_LOG_INFO, "the browser closed (%s)", how);
		jobs_browser_exited(NULL);
		return;
	}
	br.crashes++;
	br.crashed = true;
	char *why;
	if (starting)
		why = xfmt("the browser (%s) did not start: %s%s%s", br.path ? br.path : "chromium",
		           br.fail_why ? br.fail_why : how, br.errlen ? "; stderr: " : "",
		           br.errlen ? br_errtail() : "");
	else
		why = xfmt("the browser died (%s); it restarts with the next command", how);
	host->log(self, DREAMOS_LOG_WARN, "%s", why);
	if (starting)
		jobs_browser_failed(why);
	else
		jobs_browser_exited(why);
	free(why);
}

/* ---- jobs: commands and tasks ---------------------------------------------------------- */

enum act_kind { A_OPEN, A_TEXT, A_EVAL, A_CLICK, A_TYPE, A_SHOT, A_WAIT, A_CLOSE };

static const char *const act_names[] = {"open", "text", "eval", "click",
                                        "type", "shot", "wait", "close"};

struct act {
	enum act_kind kind;
	char *s1, *s2; /* open: URL; eval: JS; click/type: selector, text; shot: file */
	long n;        /* open: timeout (ms, 0: the setting); wait: ms */
};

enum wait_kind { W_NONE, W_BROWSER, W_REPLY, W_LOAD, W_TIMER, W_EXIT };

struct bagent;

struct job {
	struct act *acts;
	size_t nacts, i;
	int step;
	bool started;
	struct dreamos_call *call; /* a command, or NULL */
	struct bagent *ag;         /* a task's agent, or NULL */
	int64_t task;
	enum wait_kind wait;
	uint64_t waiting; /* DevTools command awaited */
	uint64_t timer;   /* pause, reply or navigation timeout */
	bool nav_timer;   /* timer is the navigation's */
	json_t *res;      /* the last answer's result */
	char *err;        /* the last answer's error */
	char *loader;     /* open: the loaderId whose load is awaited */
	int64_t t0;
	double x, y;   /* click point */
	size_t pos;    /* type: bytes typed */
	json_t *out;   /* task: everything; command: the last action's record */
	json_t *steps; /* records of the actions */
	struct job *next;
};

struct bagent {
	struct dreamos_agent *agent;
	char *name;
	long done, failed;
	struct bagent *next;
};

static struct job *jobs; /* the first one runs */
static uint64_t kick_timer;
static struct bagent *agents;
static long shots_taken;
static json_t *history; /* URLs opened, for completion */

static void job_step(struct job *j);
static void jobs_kick(void);

static void
act_free(struct act *a)
{
	free(a->s1);
	free(a->s2);
}

static void
job_free(struct job *j)
{
	for (size_t i = 0; i < j->nacts; i++)
		act_free(&j->acts[i]);
	free(j->acts);
	json_decref(j->res);
	free(j->err);
	free(j->loader);
	json_decref(j->out);
	json_decref(j->steps);
	free(j);
}

static struct job *
job_new(size_t nacts)
{
	struct job *j = calloc(1, sizeof *j);
	j->acts = calloc(nacts ? nacts : 1, sizeof *j->acts);
	j->nacts = nacts;
	j->out = json_object();
	j->steps = json_array();
	return j;
}

/* Takes j out of the queue and lets go of what it waits for. */
static void
job_unlink(struct job *j)
{
	for (struct job **pp = &jobs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	if (j->timer != 0)
		host->timer_remove(self, j->timer);
	j->timer = 0;
	if (j->waiting != 0)
		cdp_forget(br.cdp, j->waiting);
	j->waiting = 0;
	jobs_kick();
}

static void
aline(struct bagent *g, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (g != NULL && g->agent != NULL && s != NULL && host->agent_line(self, g->agent, s) != 0)
		host->log(self, DREAMOS_LOG_WARN, "agent_line for %s: %s", g->name,
		          host->last_error(self));
	free(s);
}

/* The job succeeded: the answer goes to its command or its task. */
static void
job_done(struct job *j)
{
	job_unlink(j);
	if (j->call != NULL) {
		/* A command's answer: what its one action did. */
		json_t *step = json_array_get(j->steps, 0);
		json_t *r =
		    j->nacts == 1 && step != NULL ? json_deep_copy(step) : json_incref(j->out);
		json_object_del(r, "action");
		char *s = json_dumps(r, JSON_COMPACT);
		json_decref(r);
		host->call_reply_json(j->call, s);
		free(s);
		host->call_finish(j->call, DREAMOS_CMD_OK);
	} else if (j->ag != NULL) {
		json_object_set(j->out, "steps", j->steps);
		j->ag->done++;
		aline(j->ag, json_pack("{s:s,s:I,s:O}", "type", "task.done", "task",
		                       (json_int_t)j->task, "result", j->out));
	}
	job_free(j);
}

/* The job failed with a reason (the action is named first). */
static void
job_fail(struct job *j, bool retry, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *why = NULL;
	if (vasprintf(&why, f, ap) < 0)
		abort();
	va_end(ap);
	job_unlink(j);
	if (j->call != NULL) {
		host->call_error(j->call, "browse %s", why);
		host->call_finish(j->call, DREAMOS_CMD_ERROR);
	} else if (j->ag != NULL) {
		j->ag->failed++;
		char *e = xfmt("browser: %s", why);
		aline(j->ag, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task",
		                       (json_int_t)j->task, "error", e, "retry", retry));
		free(e);
	}
	free(why);
	job_free(j);
}

static void
job_on_timer(struct dreamos_ext *ext, void *arg)
{
	(void)ext;
	struct job *j = arg;
	j->timer = 0;
	if (j->nav_timer) {
		struct act *a = &j->acts[j->i];
		long ms = a->n > 0 ? a->n : cfg.nav_timeout_ms;
		br_send("Page.stopLoading", NULL, true, NULL);
		job_fail(j, true,
		         "open %s: timed out after %ld ms (the page did not finish loading)", a->s1,
		         ms);
		return;
	}
	if (j->wait == W_REPLY) {
		job_fail(j, true, "%s: the browser did not answer within %ld ms",
		         act_names[j->acts[j->i].kind], cfg.cmd_timeout_ms);
		return;
	}
	j->wait = W_NONE;
	job_step(j);
}

/* Waits ms, then goes on. */
static void
job_pause(struct job *j, long ms)
{
	j->wait = W_TIMER;
	j->nav_timer = false;
	j->timer = host->timer_add(self, ms > 0 ? (uint64_t)ms : 0, 0, job_on_timer, j);
}

/* Sends a DevTools command for j and waits for its answer.  Returns 0, or
 * -1 if j failed (and is gone). */
static int
job_cmd(struct job *j, const char *method, json_t *params, bool page)
{
	json_decref(j->res);
	j->res = NULL;
	free(j->err);
	j->err = NULL;
	uint64_t id = br_send(method, params, page, j);
	if (id == 0) {
		job_fail(j, true, "%s: the browser is not reachable (%s)",
		         act_names[j->acts[j->i].kind], method);
		return -1;
	}
	j->waiting = id;
	j->wait = W_REPLY;
	if (j->timer == 0) {
		j->nav_timer = false;
		j->timer = host->timer_add(self, (uint64_t)cfg.cmd_timeout_ms, 0, job_on_timer, j);
	}
	return 0;
}

static void
job_on_reply(void *cookie, const struct cdp_msg *m)
{
	struct job *j = cookie;
	if (j->waiting != m->id)
		return;
	j->waiting = 0;
	if (j->timer != 0 && !j->nav_timer) {
		host->timer_remove(self, j->timer);
		j->timer = 0;
	}
	j->res = json_incref(m->result);
	j->err = m->error ? xstrdup(m->error) : NULL;
	j->wait = W_NONE;
	job_step(j);
}

static void
job_on_load(const char *loader)
{
	struct job *j = jobs;
	if (j != NULL && j->wait == W_LOAD && j->loader != NULL && strcmp(j->loader, loader) == 0) {
		j->wait = W_NONE;
		job_step(j);
	}
}

static bool
load_seen(const char *loader)
{
	for (int i = 0; i < LOADS_KEPT; i++)
		if (br.loads[i] != NULL && strcmp(br.loads[i], loader) == 0)
			return true;
	return false;
}

/* The value of a Runtime.evaluate answer (new reference), or NULL with
 * *why (caller frees) for an exception. */
static json_t *
eval_value(const json_t *res, char **why)
{
	json_t *ex = json_object_get(res, "exceptionDetails");
	if (ex != NULL) {
		const char *d = jstr(json_object_get(ex, "exception"), "description");
		const char *t = jstr(ex, "text");
		*why = xfmt("%s", d ? d : t ? t : "an exception");
		char *nl = strchr(*why, '\n');
		if (nl != NULL)
			*nl = '\0';
		return NULL;
	}
	json_t *r = json_object_get(res, "result");
	json_t *v = json_object_get(r, "value");
	if (v != NULL)
		return json_incref(v);
	const char *type = jstr(r, "type");
	if (type != NULL && strcmp(type, "undefined") == 0)
		return json_null();
	const char *d = jstr(r, "description");
	return d ? json_string(d) : json_null();
}

static int
job_eval(struct job *j, const char *expr)
{
	return job_cmd(j, "Runtime.evaluate",
	               json_pack("{s:s,s:b,s:b,s:b}", "expression", expr, "returnByValue", 1,
	                         "awaitPromise", 1, "userGesture", 1),
	               true);
}

/* Records what an action did. */
static void
job_record(struct job *j, json_t *rec)
{
	json_array_append_new(j->steps, rec);
}

static char *
b64_decode(const char *in, size_t *outlen)
{
	size_t n = strlen(in);
	if (n % 4 != 0 || n > (size_t)INT_MAX)
		return NULL;
	unsigned char *out = malloc(n / 4 * 3 + 1);
	int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (len < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	if (n >= 1 && in[n - 1] == '=')
		len--;
	if (n >= 2 && in[n - 2] == '=')
		len--;
	*outlen = (size_t)len;
	return (char *)out;
}

/* Writes a screenshot; returns the record, or NULL with *why. */
static json_t *
shot_save(const char *b64, const char *name, char **why)
{
	size_t len = 0;
	char *png = b64 ? b64_decode(b64, &len) : NULL;
	if (png == NULL) {
		*why = xfmt("the browser sent no image");
		return NULL;
	}
	if (len < 24 || memcmp(png, "\x89PNG\r\n\x1a\n", 8) != 0) {
		free(png);
		*why = xfmt("the browser sent something that is not a PNG");
		return NULL;
	}
	unsigned w = (unsigned)(unsigned char)png[16] << 24 |
	             (unsigned)(unsigned char)png[17] << 16 |
	             (unsigned)(unsigned char)png[18] << 8 | (unsigned char)png[19];
	unsigned h = (unsigned)(unsigned char)png[20] << 24 |
	             (unsigned)(unsigned char)png[21] << 16 |
	             (unsigned)(unsigned char)png[22] << 8 | (unsigned char)png[23];
	char *dir = private_dir("shots", why);
	if (dir == NULL) {
		free(png);
		return NULL;
	}
	char *path;
	if (name != NULL) {
		size_t nl = strlen(name);
		path = xfmt("%s/%s%s", dir, name,
		            nl > 4 && strcmp(name + nl - 4, ".png") == 0 ? "" : ".png");
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		struct tm tm;
		localtime_r(&ts.tv_sec, &tm);
		char stamp[32];
		strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
		path = xfmt("%s/shot-%s-%ld.png", dir, stamp, ++shots_taken);
	}
	free(dir);
	char *tmp = xfmt("%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t off = 0;
	while (fd >= 0 && off < len) {
		ssize_t n = write(fd, png + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	bool ok = fd >= 0 && off == len && close(fd) == 0 && rename(tmp, path) == 0;
	if (!ok) {
		*why = xfmt("cannot write %s: %s", path, strerror(errno));
		if (fd >= 0 && off != len)
			close(fd);
		unlink(tmp);
		free(tmp);
		free(path);
		free(png);
		return NULL;
	}
	free(tmp);
	free(png);
	json_t *rec = json_pack("{s:s,s:s,s:I,s:i,s:i}", "action", "shot", "file", path, "bytes",
	                        (json_int_t)len, "width", (int)w, "height", (int)h);
	free(path);
	return rec;
}

/* The length of the UTF-8 character at s (1 for a bad byte). */
static size_t
utf8_len(const char *s)
{
	unsigned char c = (unsigned char)*s;
	size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
	for (size_t i = 1; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			return 1;
	return n;
}

/* Runs action a of j from j->step.  Returns 1 when the action is done, 0
 * while it waits, -1 if j failed (and is gone). */
static int
act_step(struct job *j, struct act *a)
{
	const char *name = act_names[a->kind];
	char *why = NULL;
	if (j->err != NULL && j->step > 0 && j->wait == W_NONE && a->kind != A_CLOSE) {
		if (a->kind == A_OPEN)
			job_fail(j, true, "open %s: %s", a->s1, j->err);
		else
			job_fail(j, true, "%s: %s", name, j->err);
		return -1;
	}
	switch (a->kind) {
	case A_OPEN:
		switch (j->step) {
		case 0: {
			j->t0 = now_ms();
			long ms = a->n > 0 ? a->n : cfg.nav_timeout_ms;
			free(j->loader);
			j->loader = NULL;
			j->step = 1;
			j->nav_timer = true;
			j->timer = host->timer_add(self, (uint64_t)ms, 0, job_on_timer, j);
			return job_cmd(j, "Page.navigate", json_pack("{s:s}", "url", a->s1), true);
		}
		case 1: {
			const char *e = jstr(j->res, "errorText");
			if (e != NULL && *e != '\0') {
				job_fail(j, true, "open %s: %s", a->s1, e);
				return -1;
			}
			const char *loader = jstr(j->res, "loaderId");
			if (loader != NULL && !load_seen(loader)) {
				j->loader = xstrdup(loader);
				j->step = 2;
				j->wait = W_LOAD;
				return 0;
			}
			/* Loaded already, or no new document. */
		}
		/* fall through */
		case 2:
			if (j->timer != 0)
				host->timer_remove(self, j->timer);
			j->timer = 0;
			j->nav_timer = false;
			j->step = 3;
			return job_eval(j, "JSON.stringify([location.href, document.title])");
		case 3: {
			json_t *v = eval_value(j->res, &why);
			json_t *arr = v && json_is_string(v)
			                  ? json_loads(json_string_value(v), 0, NULL)
			                  : NULL;
			json_decref(v);
			free(why);
			const char *url = json_string_value(json_array_get(arr, 0));
			const char *title = json_string_value(json_array_get(arr, 1));
			json_object_set_new(j->out, "url", json_string(url ? url : a->s1));
			json_object_set_new(j->out, "title", json_string(title ? title : ""));
			job_record(j, json_pack("{s:s,s:s,s:s,s:I}", "action", "open", "url",
			                        url ? url : a->s1, "title", title ? title : "",
			                        "ms", (json_int_t)(now_ms() - j->t0)));
			json_decref(arr);
			json_array_append_new(history, json_string(a->s1));
			while (json_array_size(history) > 20)
				json_array_remove(history, 0);
			return 1;
		}
		}
		break;
	case A_TEXT:
	case A_EVAL:
		if (j->step == 0) {
			j->step = 1;
			return job_eval(j, a->kind == A_TEXT
			                       ? "document.body ? document.body.innerText : "
			                         "(document.documentElement ? "
			                         "document.documentElement.innerText : '')"
			                       : a->s1);
		} else {
			json_t *v = eval_value(j->res, &why);
			if (v == NULL) {
				job_fail(j, false, "%s: %s", name, why);
				free(why);
				return -1;
			}
			if (a->kind == A_TEXT) {
				json_object_set(j->out, "text", v);
				job_record(j, json_pack("{s:s,s:o}", "action", "text", "text", v));
			} else {
				json_t *ev = json_object_get(j->out, "evals");
				if (ev == NULL)
					json_object_set_new(j->out, "evals", ev = json_array());
				json_array_append(ev, v);
				job_record(j, json_pack("{s:s,s:o}", "action", "eval", "value", v));
			}
			return 1;
		}
	case A_CLICK:
	case A_TYPE:
		switch (j->step) {
		case 0:
			j->step = 1;
			job_pause(j, rng_between(cfg.pause_min, cfg.pause_max));
			return 0;
		case 1: {
			json_t *sel = json_string(a->s1);
			char *q = json_dumps(sel, JSON_ENCODE_ANY);
			json_decref(sel);
			char *js =
			    xfmt("(function (s) { var e = document.querySelector(s); if (!e) "
			         "return null; e.scrollIntoView({block: 'center', inline: "
			         "'center'}); var r = e.getBoundingClientRect(); return "
			         "[r.left, r.top, r.width, r.height]; })(%s)",
			         q);
			free(q);
			j->step = 2;
			int rc = job_eval(j, js);
			free(js);
			return rc;
		}
		case 2: {
			json_t *v = eval_value(j->res, &why);
			if (v == NULL || !json_is_array(v) || json_array_size(v) != 4) {
				if (v == NULL)
					job_fail(j, false, "%s: %s: %s", name, a->s1, why);
				else
					job_fail(j, false, "%s: no element matches '%s'", name,
					         a->s1);
				json_decref(v);
				free(why);
				return -1;
			}
			double l = json_number_value(json_array_get(v, 0));
			double t = json_number_value(json_array_get(v, 1));
			double w = json_number_value(json_array_get(v, 2));
			double h = json_number_value(json_array_get(v, 3));
			json_decref(v);
			/* Somewhere around the middle, as a hand would. */
			j->x = l + w / 2 +
			       (w > 8 ? (double)rng_between(-(long)(w / 4), (long)(w / 4)) : 0);
			j->y = t + h / 2 +
			       (h > 8 ? (double)rng_between(-(long)(h / 4), (long)(h / 4)) : 0);
			j->step = 3;
			return job_cmd(
			    j, "Input.dispatchMouseEvent",
			    json_pack("{s:s,s:f,s:f}", "type", "mouseMoved", "x", j->x, "y", j->y),
			    true);
		}
		case 3:
			j->step = 4;
			return job_cmd(j, "Input.dispatchMouseEvent",
			               json_pack("{s:s,s:f,s:f,s:s,s:i,s:i}", "type",
			                         "mousePressed", "x", j->x, "y", j->y, "button",
			                         "left", "buttons", 1, "clickCount", 1),
			               true);
		case 4:
			j->step = 5;
			job_pause(j, rng_between(cfg.key_min, cfg.key_max));
			return 0;
		case 5:
			j->step = 6;
			return job_cmd(j, "Input.dispatchMouseEvent",
			               json_pack("{s:s,s:f,s:f,s:s,s:i,s:i}", "type",
			                         "mouseReleased", "x", j->x, "y", j->y, "button",
			                         "left", "buttons", 0, "clickCount", 1),
			               true);
		case 6:
			if (a->kind == A_CLICK) {
				job_record(j, json_pack("{s:s,s:s}", "action", "click", "selector",
				                        a->s1));
				return 1;
			}
			j->pos = 0;
			j->step = 7;
			/* fall through */
		case 7: {
			if (a->s2[j->pos] == '\0') {
				job_record(j,
				           json_pack("{s:s,s:s,s:I}", "action", "type", "selector",
				                     a->s1, "chars", (json_int_t)j->pos));
				return 1;
			}
			const char *c = a->s2 + j->pos;
			size_t n = utf8_len(c);
			char ch[8];
			snprintf(ch, sizeof ch, "%.*s", (int)n, c);
			j->step = 8;
			if (*c == '\n')
				return job_cmd(j, "Input.dispatchKeyEvent",
				               json_pack("{s:s,s:s,s:s,s:s,s:i}", "type", "keyDown",
				                         "key", "Enter", "code", "Enter", "text",
				                         "\r", "windowsVirtualKeyCode", 13),
				               true);
			return job_cmd(j, "Input.dispatchKeyEvent",
			               json_pack("{s:s,s:s,s:s,s:s}", "type", "keyDown", "key", ch,
			                         "text", ch, "unmodifiedText", ch),
			               true);
		}
		case 8: {
			const char *c = a->s2 + j->pos;
			size_t n = utf8_len(c);
			char ch[8];
			snprintf(ch, sizeof ch, "%.*s", (int)n, c);
			j->pos += n;
			j->step = 9;
			return job_cmd(j, "Input.dispatchKeyEvent",
			               json_pack("{s:s,s:s}", "type", "keyUp", "key",
			                         *c == '\n' ? "Enter" : ch),
			               true);
		}
		case 9:
			j->step = 7;
			job_pause(j, rng_between(cfg.key_min, cfg.key_max));
			return 0;
		}
		break;
	case A_SHOT:
		if (j->step == 0) {
			j->step = 1;
			return job_cmd(j, "Page.captureScreenshot",
			               json_pack("{s:s,s:b}", "format", "png", "fromSurface", 1),
			               true);
		} else {
			json_t *rec = shot_save(jstr(j->res, "data"), a->s1, &why);
			if (rec == NULL) {
				job_fail(j, false, "shot: %s", why);
				free(why);
				return -1;
			}
			json_t *sv = json_object_get(j->out, "shots");
			if (sv == NULL)
				json_object_set_new(j->out, "shots", sv = json_array());
			json_array_append_new(sv, json_string(jstr(rec, "file")));
			job_record(j, rec);
			return 1;
		}
	case A_WAIT:
		if (j->step == 0) {
			j->step = 1;
			job_pause(j, a->n);
			return 0;
		}
		job_record(j, json_pack("{s:s,s:I}", "action", "wait", "ms", (json_int_t)a->n));
		return 1;
	case A_CLOSE:
		if (j->step == 0) {
			if (br.state == B_DOWN) {
				job_record(
				    j, json_pack("{s:s,s:b}", "action", "close", "was_running", 0));
				return 1;
			}
			j->step = 1;
			j->wait = W_EXIT;
			br_close();
			return 0;
		}
		job_record(j, json_pack("{s:s,s:b}", "action", "close", "was_running", 1));
		return 1;
	}
	job_fail(j, false, "%s: internal error (step %d)", name, j->step);
	return -1;
}

/* Runs j until it waits, fails or is done. */
static void
job_step(struct job *j)
{
	j->started = true;
	for (;;) {
		if (j->i >= j->nacts) {
			job_done(j);
			return;
		}
		struct act *a = &j->acts[j->i];
		bool needs_page = a->kind != A_CLOSE && a->kind != A_WAIT;
		if (needs_page && !(br.state == B_READY && br.page_ready)) {
			if (br.state == B_DOWN) {
				char *why = NULL;
				if (br_launch(&why) != 0) {
					job_fail(j, false, "%s: %s", act_names[a->kind], why);
					free(why);
					return;
				}
			}
			br_page_setup();
			j->wait = W_BROWSER;
			return;
		}
		int r = act_step(j, a);
		if (r <= 0)
			return;
		j->i++;
		j->step = 0;
		free(j->err);
		j->err = NULL;
	}
}

static void
kick_cb(struct dreamos_ext *ext, void *arg)
{
	(void)ext, (void)arg;
	kick_timer = 0;
	if (jobs != NULL && !jobs->started)
		job_step(jobs);
}

/* Starts the first job from the loop (never from inside a handler). */
static void
jobs_kick(void)
{
	if (kick_timer == 0 && jobs != NULL && !jobs->started)
		kick_timer = host->timer_add(self, 0, 0, kick_cb, NULL);
}

static void
job_enqueue(struct job *j)
{
	struct job **pp = &jobs;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = j;
	jobs_kick();
}

static void
jobs_browser_ready(void)
{
	if (jobs != NULL && jobs->wait == W_BROWSER) {
		jobs->wait = W_NONE;
		job_step(jobs);
	}
}

static void
jobs_browser_failed(const char *why)
{
	if (jobs != NULL && jobs->started)
		job_fail(jobs, true, "%s: %s", act_names[jobs->acts[jobs->i].kind], why);
}

static void
jobs_page_lost(const char *why)
{
	struct job *j = jobs;
	if (j == NULL || !j->started || j->wait == W_EXIT)
		return;
	job_fail(j, true, "%s: %s", act_names[j->acts[j->i].kind], why);
}

/* The browser exited (why NULL: as asked). */
static void
jobs_browser_exited(const char *why)
{
	struct job *j = jobs;
	if (j == NULL || !j->started)
		return;
	if (j->wait == W_EXIT) {
		j->wait = W_NONE;
		job_step(j);
		return;
	}
	struct act *a = &j->acts[j->i];
	if (a->kind == A_OPEN)
		job_fail(j, true, "open %s: %s", a->s1, why ? why : "the browser closed");
	else
		job_fail(j, true, "%s: %s", act_names[a->kind], why ? why : "the browser closed");
}

/* ---- the agent type ----------------------------------------------------------------------- */

/* Fills act from one payload action; NULL on success, else why. */
static char *
act_parse(json_t *o, struct act *a)
{
	if (!json_is_object(o) || json_object_size(o) != 1)
		return xfmt("each action is an object with one key (click, type, eval, text, shot, "
		            "wait_ms)");
	const char *k = json_object_iter_key(json_object_iter(o));
	json_t *v = json_object_iter_value(json_object_iter(o));
	if (strcmp(k, "click") == 0 && json_is_string(v)) {
		a->kind = A_CLICK;
		a->s1 = xstrdup(json_string_value(v));
	} else if (strcmp(k, "type") == 0 && json_is_array(v) && json_array_size(v) == 2 &&
	           json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
		a->kind = A_TYPE;
		a->s1 = xstrdup(json_string_value(json_array_get(v, 0)));
		a->s2 = xstrdup(json_string_value(json_array_get(v, 1)));
	} else if (strcmp(k, "eval") == 0 && json_is_string(v)) {
		a->kind = A_EVAL;
		a->s1 = xstrdup(json_string_value(v));
	} else if (strcmp(k, "text") == 0 && json_is_true(v)) {
		a->kind = A_TEXT;
	} else if (strcmp(k, "shot") == 0 && (json_is_true(v) || json_is_string(v))) {
		a->kind = A_SHOT;
		a->s1 = json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
	} else if (strcmp(k, "wait_ms") == 0 && json_is_integer(v) && json_integer_value(v) >= 0 &&
	           json_integer_value(v) <= 600000) {
		a->kind = A_WAIT;
		a->n = (long)json_integer_value(v);
	} else {
		return xfmt("bad action '%s' (click: SEL, type: [SEL, TEXT], eval: JS, text: true, "
		            "shot: true|NAME, wait_ms: 0..600000)",
		            k);
	}
	return NULL;
}

static bool shot_name_ok(const char *name);
static bool url_ok(const char *u);

/* The job of a task's payload, or NULL with *why. */
static struct job *
task_job(json_t *payload, char **why)
{
	if (json_is_string(payload)) {
		json_t *p = json_pack("{s:s}", "url", json_string_value(payload));
		struct job *j = task_job(p, why);
		json_decref(p);
		return j;
	}
	if (!json_is_object(payload)) {
		*why = xfmt("the payload must be {\"url\": ..., \"actions\": [...]}");
		return NULL;
	}
	const char *url = jstr(payload, "url");
	json_t *acts = json_object_get(payload, "actions");
	if (acts != NULL && !json_is_array(acts)) {
		*why = xfmt("payload: actions must be a list");
		return NULL;
	}
	if (url == NULL && json_array_size(acts) == 0) {
		*why = xfmt("payload: no url and no actions");
		return NULL;
	}
	if (url != NULL && !url_ok(url)) {
		*why = xfmt(
		    "payload: '%s' is not a URL it may open (http://, https://, about:, data:%s)",
		    url, cfg.allow_files ? ", file://" : "");
		return NULL;
	}
	size_t na = json_array_size(acts);
	struct job *j = job_new((url ? 1 : 0) + (na ? na : 1));
	size_t k = 0;
	if (url != NULL) {
		j->acts[k].kind = A_OPEN;
		j->acts[k].s1 = xstrdup(url);
		json_t *t = json_object_get(payload, "timeout_ms");
		j->acts[k].n = json_is_integer(t) ? (long)json_integer_value(t) : 0;
		k++;
	}
	if (na == 0) {
		j->acts[k++].kind = A_TEXT; /* just a URL: its text */
	}
	for (size_t i = 0; i < na; i++, k++) {
		char *e = act_parse(json_array_get(acts, i), &j->acts[k]);
		if (e == NULL && j->acts[k].kind == A_SHOT && j->acts[k].s1 != NULL &&
		    !shot_name_ok(j->acts[k].s1))
			e = xfmt("bad screenshot name '%s' (letters, digits, '.', '_', '-')",
			         j->acts[k].s1);
		if (e != NULL) {
			*why = xfmt("payload: action %zu: %s", i + 1, e);
			free(e);
			j->nacts = k + 1;
			job_free(j);
			return NULL;
		}
	}
	j->nacts = k;
	return j;
}

static void
agent_task(struct bagent *g, json_t *m)
{
	json_t *t = json_object_get(m, "task");
	json_int_t id = json_integer_value(json_object_get(t, "id"));
	char *why = NULL;
	struct job *j = task_job(json_object_get(t, "payload"), &why);
	if (j == NULL) {
		g->failed++;
		char *e = xfmt("browser: %s", why);
		aline(g, json_pack("{s:s,s:I,s:s,s:b}", "type", "task.fail", "task", id, "error", e,
		                   "retry", 0));
		free(e);
		free(why);
		return;
	}
	j->ag = g;
	j->task = id;
	aline(g, json_pack("{s:s,s:I,s:i,s:s}", "type", "task.progress", "task", id, "pct", 0,
	                   "note", "queued for the browser"));
	job_enqueue(j);
}

/* Drops the jobs of an agent, or of one of its tasks (task 0: all). */
static void
agent_drop_jobs(struct bagent *g, int64_t task)
{
	for (struct job *j = jobs, *next; j != NULL; j = next) {
		next = j->next;
		if (j->ag == g && (task == 0 || j->task == task)) {
			job_unlink(j);
			job_free(j);
			next = jobs; /* the list may have changed */
		}
	}
}

static void
agent_on_line(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *line)
{
	(void)ext, (void)agent;
	struct bagent *g = state;
	json_t *m = json_loads(line, 0, NULL);
	const char *type = jstr(m, "type");
	if (type == NULL) {
		json_decref(m);
		return;
	}
	if (strcmp(type, "task.assign") == 0) {
		agent_task(g, m);
	} else if (strcmp(type, "task.cancel") == 0) {
		agent_drop_jobs(g, json_integer_value(json_object_get(m, "task")));
	} else if (strcmp(type, "message") == 0) {
		/* It takes tasks, not messages: taken, so not delivered again. */
		json_t *id = json_object_get(m, "id");
		if (json_is_integer(id))
			aline(g, json_pack("{s:s,s:O}", "type", "ack", "id", id));
	}
	json_decref(m);
}

static int
agent_start(struct dreamos_ext *ext, struct dreamos_agent *agent, void **state)
{
	(void)ext;
	struct bagent *g = calloc(1, sizeof *g);
	g->agent = agent;
	g->name = xstrdup(host->agent_name(agent));
	g->next = agents;
	agents = g;
	*state = g;
	return 0;
}

static void
bagent_free(struct bagent *g)
{
	agent_drop_jobs(g, 0);
	free(g->name);
	free(g);
}

static void
agent_stop(struct dreamos_ext *ext, struct dreamos_agent *agent, void *state, const char *why)
{
	(void)ext, (void)agent, (void)why;
	struct bagent *g = state;
	for (struct bagent **pp = &agents; *pp != NULL; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	bagent_free(g);
}

/* ---- commands ----------------------------------------------------------------------------------
 */

static bool
url_ok(const char *u)
{
	static const char *const schemes[] = {"http://", "https://", "about:", "data:"};
	for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
		if (strncasecmp(u, schemes[i], strlen(schemes[i])) == 0)
			return true;
	return cfg.allow_files && strncasecmp(u, "file://", 7) == 0;
}

static bool
shot_name_ok(const char *name)
{
	if (*name == '\0' || *name == '.' || strlen(name) > 100)
		return false;
	return name[strspn(name,
	                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")] ==
	       '\0';
}

/* One command = one job of one action. */
static int
cmd_act(struct dreamos_call *call, enum act_kind kind, char *s1, char *s2, long n)
{
	struct job *j = job_new(1);
	j->acts[0].kind = kind;
	j->acts[0].s1 = s1;
	j->acts[0].s2 = s2;
	j->acts[0].n = n;
	j->call = call;
	job_enqueue(j);
	return DREAMOS_CMD_WAIT;
}

static int
cmd_open(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	const char *url = host->call_arg(call, 0);
	if (!url_ok(url))
		return host->call_error(call,
		                        "browse open: '%s' is not a URL it may open (http://, "
		                        "https://, about:, data:%s)",
		                        url, cfg.allow_files ? ", file://" : "");
	long ms = 0;
	const char *t = host->call_opt(call, "timeout-ms");
	if (t != NULL) {
		char *end;
		ms = strtol(t, &end, 10);
		if (*end != '\0' || ms <= 0 || ms > 3600000)
			return host->call_error(call,
			                        "browse open: --timeout-ms must be 1 to 3600000");
	}
	return cmd_act(call, A_OPEN, xstrdup(url), NULL, ms);
}

static int
cmd_text(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	return cmd_act(call, A_TEXT, NULL, NULL, 0);
}

static int
cmd_eval(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	return cmd_act(call, A_EVAL, args_join(call, 0), NULL, 0);
}

static int
cmd_click(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	return cmd_act(call, A_CLICK, args_join(call, 0), NULL, 0);
}

static int
cmd_type(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	return cmd_act(call, A_TYPE, xstrdup(host->call_arg(call, 0)), args_join(call, 1), 0);
}

static int
cmd_shot(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	const char *name = host->call_arg(call, 0);
	if (name != NULL && !shot_name_ok(name))
		return host->call_error(
		    call,
		    "browse shot: '%s' is not a file name (letters, digits, '.', "
		    "'_', '-'; it goes into %s/shots)",
		    name, host->data_dir(self));
	return cmd_act(call, A_SHOT, xstrdup(name), NULL, 0);
}

static int
cmd_close(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	return cmd_act(call, A_CLOSE, NULL, NULL, 0);
}

static json_t *
status_json(void)
{
	static const char *const states[] = {"down", "starting", "ready"};
	size_t queued = 0;
	for (struct job *j = jobs; j != NULL; j = j->next)
		queued++;
	json_t *ags = json_array();
	for (struct bagent *g = agents; g != NULL; g = g->next)
		json_array_append_new(ags, json_pack("{s:s,s:I,s:I}", "name", g->name, "done",
		                                     (json_int_t)g->done, "failed",
		                                     (json_int_t)g->failed));
	json_t *s = json_pack(
	    "{s:s,s:I,s:i,s:i,s:i,s:i,s:s?,s:s?,s:s?,s:I,s:I,s:I,s:I,s:o,s:s?,s:{s:i,s:i},s:b}",
	    "state", states[br.state], "pid", (json_int_t)br.pid, "pages", br.page_ready ? 1 : 0,
	    "restarts", br.restarts, "crashes", br.crashes, "launches", br.launches, "chromium",
	    br.path, "version", br.version, "user_agent", br.ua, "ready_ms",
	    (json_int_t)br.ready_ms, "jobs", (json_int_t)queued, "commands_sent",
	    (json_int_t)br.commands, "events", (json_int_t)br.events, "agents", ags, "data_dir",
	    host->data_dir(self), "window", "width", cfg.width, "height", cfg.height, "stealth",
	    cfg.stealth);
	return s;
}

static int
cmd_status(struct dreamos_ext *ext, struct dreamos_call *call, void *arg)
{
	(void)ext, (void)arg;
	json_t *s = status_json();
	char *t = json_dumps(s, JSON_COMPACT);
	json_decref(s);
	host->call_reply_json(call, t);
	free(t);
	return DREAMOS_CMD_OK;
}

static void
complete_open(struct dreamos_ext *ext, void *arg, const char *partial, dreamos_complete_add_fn add,
              void *add_arg)
{
	(void)ext, (void)arg;
	static const char *const schemes[] = {"http://", "https://", "file://", "about:blank"};
	for (size_t i = 0; i < 4; i++)
		if (strncmp(schemes[i], partial, strlen(partial)) == 0)
			add(schemes[i], add_arg);
	for (size_t i = json_array_size(history); i-- > 0;) {
		const char *u = json_string_value(json_array_get(history, i));
		if (u != NULL && strncmp(u, partial, strlen(partial)) == 0)
			add(u, add_arg);
	}
}

static const struct dreamos_cmd_opt open_opts[] = {
    {"timeout-ms", DREAMOS_OPT_VALUE, "MS", NULL},
    {NULL, 0, NULL, NULL},
};

/* ---- configuration and entry points
 * ----------------------------------------------------------------- */

static void
cfg_free(void)
{
	free(cfg.chromium);
	json_decref(cfg.args);
	free(cfg.lang);
	free(cfg.accept_lang);
	free(cfg.user_agent);
	free(cfg.platform);
	free(cfg.agent);
	memset(&cfg, 0, sizeof cfg);
}

/* An integer setting in [lo, hi]; -1 (set_error) if it is not one. */
static int
cfg_int(json_t *c, const char *k, long dflt, long lo, long hi, long *out)
{
	json_t *v = json_object_get(c, k);
	if (v == NULL || json_is_null(v)) {
		*out = dflt;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		host->set_error(self,
		                "extensions.stealthbrowser.%s must be an integer from %ld to %ld",
		                k, lo, hi);
		return -1;
	}
	*out = (long)json_integer_value(v);
	return 0;
}

static int
cfg_str(json_t *c, const char *k, const char *dflt, char **out)
{
	json_t *v = json_object_get(c, k);
	if (v == NULL || json_is_null(v)) {
		*out = xstrdup(dflt);
		return 0;
	}
	if (!json_is_string(v)) {
		host->set_error(self, "extensions.stealthbrowser.%s must be a string", k);
		return -1;
	}
	*out = xstrdup(json_string_value(v));
	return 0;
}

static int
cfg_bool(json_t *c, const char *k, bool dflt, bool *out)
{
	json_t *v = json_object_get(c, k);
	if (v == NULL || json_is_null(v)) {
		*out = dflt;
		return 0;
	}
	if (!json_is_boolean(v)) {
		host->set_error(self, "extensions.stealthbrowser.%s must be true or false", k);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

static int
cfg_load(const char *config)
{
	/* The settings, each between spaces. */
	static const char keys[] =
	    " chromium args window_width window_height lang accept_language user_agent platform"
	    " timeout_ms command_timeout_ms start_timeout_ms pause_ms_min pause_ms_max key_ms_min"
	    " key_ms_max seed kill_after_s max_message_mb agent stealth no_sandbox headless"
	    " allow_file_urls ";
	json_t *c = cfg_object(config, "stealthbrowser");
	if (c == NULL)
		return -1;
	const char *k;
	json_t *v;
	json_object_foreach(c, k, v)
	{
		char *word = xfmt(" %s ", k);
		bool known = strstr(keys, word) != NULL;
		free(word);
		if (!known) {
			host->set_error(self, "extensions.stealthbrowser.%s: unknown setting", k);
			json_decref(c);
			return -1;
		}
	}
	long w, h, pmin, pmax, kmin, kmax, seed, mm, kill;
	char *ns = NULL;
	int rc = 0;
	rc |= cfg_str(c, "chromium", NULL, &cfg.chromium);
	rc |= cfg_int(c, "window_width", 1280, 200, 7680, &w);
	rc |= cfg_int(c, "window_height", 800, 200, 4320, &h);
	rc |= cfg_str(c, "lang", "en-US", &cfg.lang);
	rc |= cfg_str(c, "accept_language", "en-US,en", &cfg.accept_lang);
	rc |= cfg_str(c, "user_agent", NULL, &cfg.user_agent);
	rc |= cfg_str(c, "platform", "Linux x86_64", &cfg.platform);
	rc |= cfg_int(c, "timeout_ms", 30000, 100, 3600000, &cfg.nav_timeout_ms);
	rc |= cfg_int(c, "command_timeout_ms", 30000, 100, 3600000, &cfg.cmd_timeout_ms);
	rc |= cfg_int(c, "start_timeout_ms", 20000, 500, 600000, &cfg.start_timeout_ms);
	rc |= cfg_int(c, "pause_ms_min", 250, 0, 600000, &pmin);
	rc |= cfg_int(c, "pause_ms_max", 1200, 0, 600000, &pmax);
	rc |= cfg_int(c, "key_ms_min", 40, 0, 60000, &kmin);
	rc |= cfg_int(c, "key_ms_max", 160, 0, 60000, &kmax);
	rc |= cfg_int(c, "seed", 0, 0, LONG_MAX, &seed);
	rc |= cfg_int(c, "kill_after_s", 3, 0, 600, &kill);
	rc |= cfg_int(c, "max_message_mb", 64, 1, 1024, &mm);
	rc |= cfg_bool(c, "stealth", true, &cfg.stealth);
	rc |= cfg_bool(c, "headless", true, &cfg.headless);
	rc |= cfg_bool(c, "allow_file_urls", false, &cfg.allow_files);
	json_t *a = json_object_get(c, "agent");
	if (rc == 0 && json_is_false(a))
		cfg.agent = NULL;
	else if (rc == 0)
		rc |= cfg_str(c, "agent", TYPE_NAME, &cfg.agent);
	if (rc == 0 && cfg.agent != NULL && *cfg.agent == '\0') {
		free(cfg.agent);
		cfg.agent = NULL;
	}
	json_t *nsv = json_object_get(c, "no_sandbox");
	cfg.no_sandbox = -1;
	if (rc == 0 && nsv != NULL && !json_is_null(nsv)) {
		if (json_is_boolean(nsv))
			cfg.no_sandbox = json_is_true(nsv);
		else if (json_is_string(nsv) && strcmp(json_string_value(nsv), "auto") == 0)
			cfg.no_sandbox = -1;
		else {
			host->set_error(
			    self,
			    "extensions.stealthbrowser.no_sandbox must be true, false or auto");
			rc = -1;
		}
	}
	free(ns);
	json_t *args = json_object_get(c, "args");
	if (rc == 0 && args != NULL && !json_is_null(args)) {
		bool ok = json_is_array(args) && json_array_size(args) <= 64;
		for (size_t i = 0; ok && i < json_array_size(args); i++)
			ok = json_is_string(json_array_get(args, i));
		if (!ok) {
			host->set_error(self,
			                "extensions.stealthbrowser.args must be a list of strings");
			rc = -1;
		}
	}
	if (rc == 0 && (pmax < pmin || kmax < kmin)) {
		host->set_error(self, "extensions.stealthbrowser: pause_ms_max < pause_ms_min or "
		                      "key_ms_max < key_ms_min");
		rc = -1;
	}
	json_decref(c);
	if (rc != 0)
		return -1;
	cfg.args = json_is_array(args) ? json_deep_copy(args) : json_array();
	cfg.width = (int)w;
	cfg.height = (int)h;
	cfg.pause_min = pmin;
	cfg.pause_max = pmax;
	cfg.key_min = kmin;
	cfg.key_max = kmax;
	cfg.seed = (uint64_t)seed;
	cfg.kill_after_s = (double)kill;
	cfg.max_message = (size_t)mm * 1024 * 1024;
	return 0;
}

static int
setup(struct dreamos_ext *ext, const struct dreamos_host *h, const char *config)
{
	host = h;
	self = ext;
	if (!DREAMOS_HOST_HAS(h, proc_spawn) || !DREAMOS_HOST_HAS(h, data_dir)) {
		h->set_error(ext, "this dreamos has no child-process API (proc_spawn): too old");
		return -1;
	}
	memset(&br, 0, sizeof br);
	if (cfg_load(config) != 0)
		return -1;
	rng_state = cfg.seed ? cfg.seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	br.cdp = cdp_new(cfg.max_message);
	history = json_array();

	struct dreamos_command cmds[] = {
	    {.name = "browse open",
	     .usage = "URL [--timeout-ms MS]",
	     .help = "Opens URL in the browser's page and waits until it has loaded (or the "
	             "timeout, extensions.stealthbrowser.timeout_ms by default, has passed). The "
	             "browser starts on first use.",
	     .min_args = 1,
	     .max_args = 1,
	     .opts = open_opts,
	     .complete_fn = complete_open,
	     .fn = cmd_open},
	    {.name = "browse text",
	     .help = "The text of the page (document.body.innerText).",
	     .fn = cmd_text},
	    {.name = "browse eval",
	     .usage = "JS...",
	     .help = "Evaluates JavaScript in the page (promises are awaited); answers its value "
	             "as JSON.",
	     .min_args = 1,
	     .max_args = -1,
	     .fn = cmd_eval},
	    {.name = "browse click",
	     .usage = "SELECTOR",
	     .help = "Clicks the first element matching the CSS selector (mouse moved, pressed, "
	             "released at its middle, after a pause).",
	     .min_args = 1,
	     .max_args = -1,
	     .fn = cmd_click},
	    {.name = "browse type",
	     .usage = "SELECTOR TEXT...",
	     .help = "Clicks the element matching the CSS selector, then types TEXT key by key "
	             "with pauses.",
	     .min_args = 2,
	     .max_args = -1,
	     .fn = cmd_type},
	    {.name = "browse shot",
	     .usage = "[NAME]",
	     .help = "Screenshot of the page as PNG, into runtime/extensions/stealthbrowser/shots "
	             "(NAME.png, or a name with the time).",
	     .max_args = 1,
	     .fn = cmd_shot},
	    {.name = "browse close",
	     .help = "Closes the browser (it starts again on the next command).",
	     .fn = cmd_close},
	    {.name = "browse status",
	     .help = "The browser: state, pid, pages, restarts, version, user agent, queue.",
	     .role = DREAMOS_ROLE_OBSERVER,
	     .fn = cmd_status},
	};
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		cmds[i].size = sizeof cmds[i];
		if (host->command_register(ext, &cmds[i]) != 0) {
			host->set_error(ext, "%s", host->last_error(ext));
			return -1;
		}
	}
	static const char *const caps[] = {"web", NULL};
	struct dreamos_agent_type t = {
	    .size = sizeof t,
	    .name = TYPE_NAME,
	    .description = "a headless browser: tasks with capability web ({url, actions})",
	    .caps = caps,
	    .max_tasks = 4,
	    .specialist = 1, /* only tasks that ask for web */
	    .start = agent_start,
	    .on_line = agent_on_line,
	    .stop = agent_stop,
	};
	if (host->agent_type_register(ext, &t) != 0) {
		host->set_error(ext, "%s", host->last_error(ext));
		return -1;
	}
	if (cfg.agent != NULL && host->agent_create(ext, TYPE_NAME, cfg.agent, NULL, -1) != 0)
		host->log(ext, DREAMOS_LOG_WARN, "agent %s: %s", cfg.agent, host->last_error(ext));
	host->log(ext, DREAMOS_LOG_INFO,
	          "stealthbrowser %s ready (window %dx%d, %s; the browser starts on first use)",
	          SB_VERSION, cfg.width, cfg.height, cfg.stealth ? "stealth" : "plain headless");
	return 0;
}

static void
fini(struct dreamos_ext *ext)
{
	(void)ext;
	while (agents != NULL) {
		struct bagent *g = agents;
		agents = g->next;
		bagent_free(g);
	}
	while (jobs != NULL) {
		/* Waiting commands are finished by the host with an error. */
		struct job *j = jobs;
		jobs = j->next;
		if (j->timer != 0)
			host->timer_remove(self, j->timer);
		job_free(j);
	}
	/* Browser.close is written now; the host's sweep then ends it
	 * (SIGTERM, SIGKILL after kill_after_s). */
	br_close();
	br_timer_clear();
	cdp_free(br.cdp);
	free(br.path);
	free(br.fail_why);
	free(br.version);
	free(br.ua);
	br_forget_page();
	for (int i = 0; i < LOADS_KEPT; i++)
		free(br.loads[i]);
	memset(&br, 0, sizeof br);
	json_decref(history);
	history = NULL;
	kick_timer = 0;
	cfg_free();
}

HELPERS_INIT_UNDOING(setup, fini)

DREAMOS_EXTENSION(.name = "stealthbrowser", .version = SB_VERSION,
                  .description = "StealthBrowser: headless Chromium over the DevTools pipe "
                                 "(open, text, eval, click, type, screenshots; a web agent)",
                  .init = init, .fini = fini);
