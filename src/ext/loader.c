/* loader.c — loading and unloading extensions, after WeeChat's plugin.c:
 * copy → dlopen(RTLD_NOW | RTLD_LOCAL) → dlsym → API version check →
 * metadata checks → dependencies (topological order, version checks,
 * cycles) → init; every failure closes the handle and gives one clear
 * reason.  Unloading stops the extension's agents, calls fini and sweeps
 * what it registered; a reload is save_state + unload + load +
 * restore_state, and a new version that cannot be loaded leaves (or puts
 * back) the old one.  Each loaded file's directory is watched
 * (uv_fs_event); a change, debounced, reloads it.
 *
 * dlopen gets a private copy of the file (RUNTIME/extensions/.loaded/
 * NAME-N.so): replacing or rewriting the original in place while it is
 * mapped cannot corrupt the running code, and the old version stays
 * mapped until it is unloaded. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "ext-int.h"
#include "log.h"
#include "orch.h"

#define EXT_MAX_DEPS 64

/* "dreamos" is also the core's namespace in the kv table (ids, floor). */
static const char *const reserved_names[] = {"core",    "ext",    "captain",
                                             "process", "remote", "dreamos"};

static void ext_watch_add(struct dreamos_ext *x);
static void ext_watch_remove(struct dreamos_ext *x);

/* ---- small helpers -------------------------------------------------------- */

static bool
ext_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	for (const char *p = name; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
			return false;
	}
	for (size_t i = 0; i < nitems(reserved_names); i++) {
		if (strcmp(name, reserved_names[i]) == 0)
			return false;
	}
	return true;
}

/* True if v is dotted numbers ("1", "1.2.3"). */
static bool
version_valid(const char *v)
{
	if (v == NULL || *v == '\0' || strlen(v) > 32)
		return false;
	bool digit = false;
	for (const char *p = v; *p != '\0'; p++) {
		if (*p >= '0' && *p <= '9') {
			digit = true;
		} else if (*p == '.' && digit) {
			digit = false;
		} else {
			return false;
		}
	}
	return digit;
}

int
ext_version_cmp(const char *a, const char *b)
{
	while (*a != '\0' || *b != '\0') {
		unsigned long x = strtoul(a, (char **)&a, 10);
		unsigned long y = strtoul(b, (char **)&b, 10);
		if (x != y)
			return x < y ? -1 : 1;
		if (*a == '.')
			a++;
		if (*b == '.')
			b++;
	}
	return 0;
}

static void
fileid_of(const struct stat *sb, struct ext_fileid *id)
{
	id->dev = sb->st_dev;
	id->ino = sb->st_ino;
	id->size = sb->st_size;
	id->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
}

static bool
fileid_eq(const struct ext_fileid *a, const struct ext_fileid *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns;
}

/* The file name of a path ("counter.so"). */
static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* True if what is a path rather than a name (has a '/' or ends in .so). */
static bool
looks_like_path(const char *what)
{
	size_t n = strlen(what);
	return strchr(what, '/') != NULL || (n > 3 && strcmp(what + n - 3, ".so") == 0);
}

struct dreamos_ext *
ext_find(const struct exts *es, const char *name)
{
	for (size_t i = 0; i < es->n; i++) {
		if (strcmp(es->v[i]->name, name) == 0)
			return es->v[i];
	}
	return NULL;
}

static struct dreamos_ext *
ext_find_active(const struct exts *es, const char *name)
{
	struct dreamos_ext *x = ext_find(es, name);
	return x != NULL && x->state == EXT_ACTIVE ? x : NULL;
}

static void
v_insert(struct exts *es, size_t pos, struct dreamos_ext *x)
{
	if (es->n == es->cap) {
		es->cap = es->cap ? es->cap * 2 : 8;
		es->v = xreallocarray(es->v, es->cap, sizeof *es->v);
	}
	if (pos > es->n)
		pos = es->n;
	memmove(es->v + pos + 1, es->v + pos, (es->n - pos) * sizeof *es->v);
	es->v[pos] = x;
	es->n++;
}

/* Removes x from the list; returns where it was. */
static size_t
v_remove(struct exts *es, struct dreamos_ext *x)
{
	for (size_t i = 0; i < es->n; i++) {
		if (es->v[i] == x) {
			memmove(es->v + i, es->v + i + 1, (es->n - i - 1) * sizeof *es->v);
			es->n--;
			return i;
		}
	}
	return es->n;
}

static bool
requires_name(const struct dreamos_ext *x, const char *name)
{
	for (size_t i = 0; i < x->ndeps; i++) {
		if (strcmp(x->deps[i].name, name) == 0)
			return true;
	}
	return false;
}

char *
ext_dependents(const struct exts *es, const char *name)
{
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < es->n; i++) {
		struct dreamos_ext *x = es->v[i];
		if (x->state == EXT_ACTIVE && strcmp(x->name, name) != 0 && requires_name(x, name))
			buf_addf(&b, "%s%s", b.len ? ", " : "", x->name);
	}
	return b.data;
}

/* "a >= 1.0, b" */
static char *
deps_text(const struct dreamos_ext *x)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "");
	for (size_t i = 0; i < x->ndeps; i++)
		buf_addf(&b, "%s%s%s%s", i ? ", " : "", x->deps[i].name,
		         x->deps[i].min ? " >= " : "", x->deps[i].min ? x->deps[i].min : "");
	return b.data;
}

/* ---- opening a file -------------------------------------------------------- */

/* Copies the open file fd to path (mode 0700).  Returns 0 or -1 with *cause. */
static int
copy_fd(int fd, const char *path, char **cause)
{
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
	if (out < 0) {
		*cause = xasprintf("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*cause = xasprintf("cannot read: %s", strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				*cause = xasprintf("cannot write %s: %s", path, strerror(errno));
				goto fail;
			}
			off += w;
		}
	}
	if (close(out) != 0) {
		*cause = xasprintf("cannot write %s: %s", path, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
fail:
	close(out);
	unlink(path);
	return -1;
}

static void
ext_free_struct(struct dreamos_ext *x)
{
	for (size_t i = 0; i < x->ndeps; i++) {
		free(x->deps[i].name);
		free(x->deps[i].min);
	}
	free(x->deps);
	free(x->name);
	free(x->version);
	free(x->description);
	free(x->path);
	free(x->copy);
	free(x->data_dir);
	free(x->dep_of);
	free(x->error);
	x->magic = 0;
	free(x);
}

/* Closes the shared object, removes its copy (unless kept) and frees x.
 * x must hold nothing any more (swept, or never initialised). */
static void
ext_discard(struct dreamos_ext *x)
{
	if (x->dl != NULL)
		dlclose(x->dl);
	if (x->copy != NULL && !x->keep_copy)
		unlink(x->copy);
	ext_free_struct(x);
}

/* Checks the metadata of a loaded object.  Returns NULL if good, else the
 * reason (caller frees). */
static char *
ext_check_info(const struct dreamos_ext_info *info)
{
	if (info->api_version == NULL || strcmp(info->api_version, DREAMOS_EXT_API_VERSION) != 0)
		return xasprintf("its metadata is for extension API %.40s, not %s",
		                 info->api_version ? info->api_version : "(none)",
		                 DREAMOS_EXT_API_VERSION);
	if (info->size <
	    offsetof(struct dreamos_ext_info, restore_state) + sizeof info->restore_state)
		return xasprintf("its metadata is %zu bytes, too small for extension API %s (use "
		                 "DREAMOS_EXTENSION)",
		                 info->size, DREAMOS_EXT_API_VERSION);
	if (info->name == NULL || !ext_name_valid(info->name))
		return xasprintf("invalid extension name '%.64s' (1 to 64 of A-Z a-z 0-9 _ . -; "
		                 "not core, ext, captain, process or remote)",
		                 info->name ? info->name : "");
	if (!version_valid(info->version))
		return xasprintf("%s: invalid version '%.32s' (dotted numbers, like 1.2.0)",
		                 info->name, info->version ? info->version : "");
	if (info->init == NULL)
		return xasprintf("%s: no init function", info->name);
	size_t n = 0;
	for (const struct dreamos_dep *d = info->requires; d != NULL && d->name != NULL; d++) {
		if (++n > EXT_MAX_DEPS)
			return xasprintf("%s: more than %d requirements", info->name, EXT_MAX_DEPS);
		if (!ext_name_valid(d->name))
			return xasprintf("%s: requires an invalid name '%.64s'", info->name,
			                 d->name);
		if (strcmp(d->name, info->name) == 0)
			return xasprintf("%s: requires itself", info->name);
		if (d->min_version != NULL && !version_valid(d->min_version))
			return xasprintf("%s: requires %s with an invalid version '%.32s'",
			                 info->name, d->name, d->min_version);
	}
	return NULL;
}

/* Opens the extension in path: copies it (unless it is already our own
 * copy: copy false), dlopens the copy, looks the symbols up and checks
 * the API version and the metadata.  want: the name it must declare, or
 * NULL.  Returns it (not initialised, not in the list), or NULL with
 * *cause; on failure nothing is left open. */
static struct dreamos_ext *
ext_open(struct exts *es, const char *path, bool copy, const char *want, char **cause)
{
	struct stat sb;
	char *copy_path = NULL;
	void *dl = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*cause = errno == ENOENT ? xasprintf("%s: no such file", path)
		                         : xasprintf("%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		*cause = xasprintf("%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (copy) {
		int rc = mkdir_p(es->loaded_dir, 0700);
		if (rc != 0) {
			*cause = xasprintf("cannot create %s: %s", es->loaded_dir, strerror(-rc));
			close(fd);
			return NULL;
		}
		const char *b = base_name(path);
		size_t bl = strlen(b);
		if (bl > 3 && strcmp(b + bl - 3, ".so") == 0)
			bl -= 3;
		copy_path = xasprintf("%s/%.*s-%u.so", es->loaded_dir, (int)bl, b, ++es->copy_seq);
		if (copy_fd(fd, copy_path, cause) != 0) {
			close(fd);
			free(copy_path);
			return NULL;
		}
	} else {
		copy_path = xstrdup(path);
	}
	close(fd);

	dlerror();
	dl = dlopen(copy_path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		const char *e = dlerror();
		/* dlerror names the copy: show the file the user knows. */
		const char *colon = e ? strstr(e, copy_path) : NULL;
		if (colon != NULL && strncmp(colon + strlen(copy_path), ": ", 2) == 0)
			e = colon + strlen(copy_path) + 2;
		*cause = xasprintf("dlopen: %s", e ? e : "unknown error");
		goto fail;
	}
	const char *api = dlsym(dl, "dreamos_extension_api");
	if (api == NULL) {
		*cause = xstrdup("not a Dream.OS extension (no symbol dreamos_extension_api)");
		goto fail;
	}
	if (strncmp(api, DREAMOS_EXT_API_VERSION, sizeof DREAMOS_EXT_API_VERSION) != 0) {
		*cause = xasprintf("built for extension API %.40s, but this dreamos provides %s "
		                   "(rebuild it against this dreamos's <dreamos/extension.h>)",
		                   api, DREAMOS_EXT_API_VERSION);
		goto fail;
	}
	const struct dreamos_ext_info *info = dlsym(dl, "dreamos_extension");
	if (info == NULL) {
		*cause = xstrdup("no symbol dreamos_extension (use DREAMOS_EXTENSION(...))");
		goto fail;
	}
	char *bad = ext_check_info(info);
	if (bad != NULL) {
		*cause = bad;
		goto fail;
	}
	if (want != NULL && strcmp(info->name, want) != 0) {
		*cause = xasprintf("%s declares the name '%s', not '%s'", path, info->name, want);
		goto fail;
	}

	struct dreamos_ext *x = xcalloc(1, sizeof *x);
	x->magic = EXT_MAGIC;
	x->es = es;
	x->serial = ++es->next_serial;
	x->dl = dl;
	x->info = info;
	x->name = xstrdup(info->name);
	x->version = xstrdup(info->version);
	x->description = info->description ? xstrdup(info->description) : NULL;
	/* The real path: a symbolic link to a build output is watched
	 * where the file really changes. */
	char *real = realpath(path, NULL);
	x->path = real ? real : xstrdup(path);
	x->copy = copy_path;
	x->state = EXT_OPENED;
	fileid_of(&sb, &x->seen);
	for (const struct dreamos_dep *d = info->requires; d != NULL && d->name != NULL; d++)
		x->ndeps++;
	x->deps = xcalloc(x->ndeps + 1, sizeof *x->deps);
	for (size_t i = 0; i < x->ndeps; i++) {
		x->deps[i].name = xstrdup(info->requires[i].name);
		x->deps[i].min =
		    info->requires[i].min_version ? xstrdup(info->requires[i].min_version) : NULL;
	}
	return x;

fail:
	if (dl != NULL)
		dlclose(dl);
	if (copy)
		unlink(copy_path);
	free(copy_path);
	return NULL;
}

/* ---- init and teardown ------------------------------------------------------ */

/* The extension's settings as JSON text (caller frees); "{}" if none. */
static char *
ext_config_json(struct exts *es, const char *name)
{
	json_t *v = json_object_get(orch_config(es->o)->extensions.settings, name);
	if (v == NULL)
		return xstrdup("{}");
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Runs init (and restore_state with state, if any) of an opened x, at
 * position pos of the list.  On success x is active, its agents are
 * starting and its file is watched.  On failure whatever it registered is
 * swept, x is out of the list (still open: the caller discards it), and
 * -1 comes back with *cause. */
static int
ext_init(struct dreamos_ext *x, const char *state, size_t pos, char **cause)
{
	struct exts *es = x->es;
	char summary[256];
	x->state = EXT_INIT;
	v_insert(es, pos, x);
	char *cfg = ext_config_json(es, x->name);
	free(x->error);
	x->error = NULL;
	int rc = x->info->init(x, &ext_host_table, cfg);
	free(cfg);
	if (rc != 0) {
		*cause = x->error ? xasprintf("init failed: %s", x->error)
		                  : xasprintf("init failed (returned %d)", rc);
		x->state = EXT_UNLOADING;
		ext_sweep(x, 0, summary, sizeof summary);
		v_remove(es, x);
		return -1;
	}
	if (state != NULL && x->info->restore_state != NULL) {
		free(x->error);
		x->error = NULL;
		rc = x->info->restore_state(x, state);
		if (rc != 0) {
			*cause = x->error ? xasprintf("restore_state failed: %s", x->error)
			                  : xasprintf("restore_state failed (returned %d)", rc);
			x->state = EXT_UNLOADING;
			if (x->info->fini != NULL)
				x->info->fini(x);
			ext_sweep(x, 0, summary, sizeof summary);
			v_remove(es, x);
			return -1;
		}
	}
	x->state = EXT_ACTIVE;
	x->loaded_ms = time_wall_ms();
	ext_activate(x);
	ext_watch_add(x);
	return 0;
}

/* Unloads an active extension: saves its state (if state_out), stops its
 * agents, calls fini, sweeps what it registered, takes it out of the
 * list.  The object stays open: the caller discards it.  Returns its
 * position in the list. */
static size_t
ext_teardown(struct dreamos_ext *x, const char *why, char **state_out)
{
	struct exts *es = x->es;
	ext_watch_remove(x);
	if (state_out != NULL)
		*state_out = x->info->save_state ? x->info->save_state(x) : NULL;
	x->state = EXT_UNLOADING;
	size_t nagents = x->nagents;
	ext_agents_stop(x, why);
	if (x->info->fini != NULL)
		x->info->fini(x);
	char summary[256];
	ext_sweep(x, nagents, summary, sizeof summary);
	size_t pos = v_remove(es, x);
	log_info(orch_log(es->o), "ext", "unloaded %s %s (%s); swept %s", x->name, x->version, why,
	         summary);
	return pos;
}

/* Active extensions, dependencies before their dependents (caller frees
 * the array; *n is its length). */
static struct dreamos_ext **
ext_topo(struct exts *es, size_t *n)
{
	struct dreamos_ext **out = xcalloc(es->n + 1, sizeof *out);
	unsigned char *mark = xcalloc(es->n + 1, 1);
	size_t *stack = xcalloc(es->n + 1, sizeof *stack);
	size_t *dep_i = xcalloc(es->n + 1, sizeof *dep_i);
	size_t k = 0;
	for (size_t r = 0; r < es->n; r++) {
		if (mark[r] || es->v[r]->state != EXT_ACTIVE)
			continue;
		size_t sp = 0;
		stack[sp++] = r;
		mark[r] = 1;
		dep_i[r] = 0;
		while (sp > 0) {
			size_t i = stack[sp - 1];
			struct dreamos_ext *x = es->v[i];
			if (dep_i[i] < x->ndeps) {
				const char *d = x->deps[dep_i[i]++].name;
				for (size_t j = 0; j < es->n; j++) {
					if (!mark[j] && es->v[j]->state == EXT_ACTIVE &&
					    strcmp(es->v[j]->name, d) == 0) {
						mark[j] = 1;
						dep_i[j] = 0;
						stack[sp++] = j;
						break;
					}
				}
				continue;
			}
			out[k++] = x;
			sp--;
		}
	}
	free(mark);
	free(stack);
	free(dep_i);
	*n = k;
	return out;
}

/* ---- loading ------------------------------------------------------------------ */

/* One extension of a load request. */
struct cand {
	struct dreamos_ext *x; /* NULL if it could not be opened */
	char *label;           /* what was asked for: a name or a path */
	char *name;            /* the extension's name (or the label) */
	char *dep_of;          /* asked for as a dependency of this one */
	char *error;
	bool requested; /* asked for (else only as a dependency) */
	bool unneeded;  /* a dependency of extensions that all failed */
	int mark;       /* DFS: 0 new, 1 on the stack, 2 done */
};

struct batch {
	struct exts *es;
	struct cand *c;
	size_t n, cap;
	size_t *order;
	size_t norder;
	size_t *stack;
	size_t sp;
};

static void cand_fail(struct cand *c, const char *fmt, ...) PRINTFLIKE(2, 3);

static void
cand_fail(struct cand *c, const char *fmt, ...)
{
	if (c->error != NULL)
		return; /* the first reason is the one that counts */
	va_list ap;
	va_start(ap, fmt);
	c->error = xvasprintf(fmt, ap);
	va_end(ap);
}

static long
batch_find(const struct batch *b, const char *name)
{
	for (size_t i = 0; i < b->n; i++) {
		if (strcmp(b->c[i].name, name) == 0)
			return (long)i;
	}
	return -1;
}

/* Adds what (a name or a path) to the request and opens it.  Returns its
 * index (an earlier one if the name was there already). */
static size_t
batch_add(struct batch *b, const char *what, const char *dep_of)
{
	struct exts *es = b->es;
	bool is_path = looks_like_path(what);
	long known = is_path ? -1 : batch_find(b, what);
	if (known >= 0)
		return (size_t)known;
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 8;
		b->c = xreallocarray(b->c, b->cap, sizeof *b->c);
	}
	struct cand *c = &b->c[b->n++];
	memset(c, 0, sizeof *c);
	c->label = xstrdup(what);
	c->name = xstrdup(what);
	c->dep_of = dep_of ? xstrdup(dep_of) : NULL;
	size_t idx = b->n - 1;
	if (!is_path && !ext_name_valid(what)) {
		cand_fail(c, "invalid extension name '%s'", what);
		return idx;
	}
	struct dreamos_ext *old = is_path ? NULL : ext_find(es, what);
	if (old != NULL) {
		cand_fail(c, "already loaded (version %s from %s)", old->version, old->path);
		return idx;
	}
	char *path = is_path ? xstrdup(what) : ext_module_path(es, what);
	char *cause = NULL;
	c->x = ext_open(es, path, true, is_path ? NULL : what, &cause);
	free(path);
	if (c->x == NULL) {
		cand_fail(c, "%s", cause);
		free(cause);
		return idx;
	}
	free(c->name);
	c->name = xstrdup(c->x->name);
	if ((old = ext_find(es, c->x->name)) != NULL) {
		cand_fail(c, "'%s' is already loaded (version %s from %s)", c->x->name,
		          old->version, old->path);
		return idx;
	}
	for (size_t i = 0; i < idx; i++) {
		if (strcmp(b->c[i].name, c->name) == 0) {
			cand_fail(c, "'%s' is asked for twice", c->name);
			return idx;
		}
	}
	return idx;
}

/* Depth-first visit for the topological order; finds cycles and failed
 * or too old dependencies. */
static void
batch_visit(struct batch *b, size_t i)
{
	struct cand *c = &b->c[i];
	c->mark = 1;
	b->stack[b->sp++] = i;
	for (size_t k = 0; c->x != NULL && k < c->x->ndeps; k++) {
		const struct ext_dep *d = &c->x->deps[k];
		long jl = batch_find(b, d->name);
		if (jl < 0)
			continue; /* loaded already: checked before */
		size_t j = (size_t)jl;
		if (b->c[j].mark == 1) {
			/* A cycle: the stack from j to here, and j again. */
			struct buf path;
			buf_init(&path);
			size_t from = 0;
			while (b->stack[from] != j)
				from++;
			for (size_t s = from; s < b->sp; s++)
				buf_addf(&path, "%s -> ", b->c[b->stack[s]].name);
			buf_adds(&path, b->c[j].name);
			for (size_t s = from; s < b->sp; s++)
				cand_fail(&b->c[b->stack[s]], "dependency cycle: %s", path.data);
			buf_free(&path);
			continue;
		}
		if (b->c[j].mark == 0)
			batch_visit(b, j);
		if (b->c[j].error != NULL) {
			cand_fail(c, "requires %s, which could not be loaded (%s)", d->name,
			          b->c[j].error);
		} else if (d->min != NULL && ext_version_cmp(b->c[j].x->version, d->min) < 0) {
			cand_fail(c, "requires %s >= %s, but %s is version %s", d->name, d->min,
			          d->name, b->c[j].x->version);
		}
	}
	b->sp--;
	c->mark = 2;
	if (c->error == NULL)
		b->order[b->norder++] = i;
}

/* Dependencies that were only added for extensions that cannot be
 * loaded are not loaded either. */
static void
batch_prune(struct batch *b)
{
	bool changed = true;
	while (changed) {
		changed = false;
		for (size_t i = 0; i < b->n; i++) {
			struct cand *c = &b->c[i];
			if (c->requested || c->unneeded || c->error != NULL)
				continue;
			bool needed = false;
			for (size_t j = 0; j < b->n && !needed; j++) {
				struct cand *d = &b->c[j];
				needed = d->x != NULL && d->error == NULL && !d->unneeded &&
				         requires_name(d->x, c->name);
			}
			if (!needed) {
				c->unneeded = true;
				changed = true;
			}
		}
	}
}

int
ext_load(struct exts *es, const char *const *what, size_t n, char **cause)
{
	struct batch b = {.es = es};
	if (es->closing) {
		*cause = xstrdup("dreamos is stopping");
		return (int)n;
	}
	for (size_t i = 0; i < n; i++) {
		size_t k = batch_add(&b, what[i], NULL);
		b.c[k].requested = true;
	}
	/* Dependencies: loaded already (version check), in the request, or
	 * added to it from the directory. */
	for (size_t i = 0; i < b.n; i++) {
		struct dreamos_ext *x = b.c[i].x;
		for (size_t k = 0; x != NULL && b.c[i].error == NULL && k < x->ndeps; k++) {
			const struct ext_dep *d = &x->deps[k];
			struct dreamos_ext *y = ext_find(es, d->name);
			if (y != NULL) {
				if (y->state != EXT_ACTIVE)
					cand_fail(&b.c[i], "requires %s, which is busy", d->name);
				else if (d->min != NULL && ext_version_cmp(y->version, d->min) < 0)
					cand_fail(&b.c[i], "requires %s >= %s, but %s %s is loaded",
					          d->name, d->min, d->name, y->version);
				continue;
			}
			if (batch_find(&b, d->name) >= 0)
				continue;
			char *path = ext_module_path(es, d->name);
			bool there = access(path, F_OK) == 0;
			free(path);
			if (!there) {
				cand_fail(
				    &b.c[i], "requires %s%s%s, which is not loaded and not in %s",
				    d->name, d->min ? " >= " : "", d->min ? d->min : "", es->dir);
				continue;
			}
			batch_add(&b, d->name, x->name);
			x = b.c[i].x; /* b.c may have moved */
		}
	}
	b.order = xcalloc(b.n + 1, sizeof *b.order);
	b.stack = xcalloc(b.n + 1, sizeof *b.stack);
	for (size_t i = 0; i < b.n; i++) {
		if (b.c[i].mark == 0)
			batch_visit(&b, i);
	}
	batch_prune(&b);
	/* Initialise in order; a failure fails its dependents. */
	for (size_t k = 0; k < b.norder; k++) {
		struct cand *c = &b.c[b.order[k]];
		for (size_t d = 0; c->error == NULL && d < c->x->ndeps; d++) {
			long j = batch_find(&b, c->x->deps[d].name);
			if (j >= 0 && b.c[j].error != NULL)
				cand_fail(c, "requires %s, which could not be loaded (%s)",
				          c->x->deps[d].name, b.c[j].error);
		}
		if (c->error != NULL || c->unneeded)
			continue;
		char *why = NULL;
		if (ext_init(c->x, NULL, es->n, &why) != 0) {
			cand_fail(c, "%s", why);
			free(why);
			continue;
		}
		c->x->dep_of = c->dep_of ? xstrdup(c->dep_of) : NULL;
		char *deps = deps_text(c->x);
		log_info(orch_log(es->o), "ext", "loaded %s %s from %s%s%s%s%s%s", c->x->name,
		         c->x->version, c->x->path, *deps ? " (requires " : "", deps,
		         *deps ? ")" : "", c->dep_of ? " as a dependency of " : "",
		         c->dep_of ? c->dep_of : "");
		free(deps);
		c->x = NULL; /* now owned by the list */
	}
	int failed = 0;
	struct buf err;
	buf_init(&err);
	for (size_t i = 0; i < b.n; i++) {
		struct cand *c = &b.c[i];
		if (c->error != NULL) {
			failed++;
			log_error(orch_log(es->o), "ext", "cannot load %s%s%s%s: %s", c->label,
			          c->dep_of ? " (required by " : "", c->dep_of ? c->dep_of : "",
			          c->dep_of ? ")" : "", c->error);
			buf_addf(&err, "%s%s: %s", err.len ? "; " : "", c->label, c->error);
		}
		if (c->x != NULL)
			ext_discard(c->x);
		free(c->label);
		free(c->name);
		free(c->dep_of);
		free(c->error);
	}
	free(b.c);
	free(b.order);
	free(b.stack);
	if (failed > 0)
		*cause = err.data;
	else
		buf_free(&err);
	return failed;
}

/* ---- unloading ------------------------------------------------------------------ */

/* Marks in set[] (indexed like es->v) everything that requires v[i],
 * directly or not. */
static void
mark_dependents(struct exts *es, size_t i, bool *set)
{
	for (size_t j = 0; j < es->n; j++) {
		if (!set[j] && es->v[j]->state == EXT_ACTIVE &&
		    requires_name(es->v[j], es->v[i]->name)) {
			set[j] = true;
			mark_dependents(es, j, set);
		}
	}
}

int
ext_unload(struct exts *es, const char *name, bool force, char **cause)
{
	struct dreamos_ext *x = ext_find(es, name);
	if (x == NULL) {
		*cause = xasprintf("extension '%s' is not loaded", name);
		return -1;
	}
	if (x->state != EXT_ACTIVE) {
		*cause = xasprintf("extension '%s' is busy (being loaded or unloaded)", name);
		return -1;
	}
	char *deps = ext_dependents(es, name);
	if (deps != NULL && !force) {
		*cause =
		    xasprintf("cannot unload %s: needed by %s ('ext unload %s --force' unloads "
		              "them too)",
		              name, deps, name);
		free(deps);
		return -1;
	}
	free(deps);
	bool *set = xcalloc(es->n + 1, sizeof *set);
	for (size_t i = 0; i < es->n; i++) {
		if (es->v[i] == x) {
			set[i] = true;
			mark_dependents(es, i, set);
		}
	}
	size_t nt;
	struct dreamos_ext **topo = ext_topo(es, &nt);
	struct dreamos_ext **victims = xcalloc(nt + 1, sizeof *victims);
	size_t nv = 0;
	for (size_t k = nt; k-- > 0;) {
		for (size_t i = 0; i < es->n; i++) {
			if (es->v[i] == topo[k] && set[i])
				victims[nv++] = topo[k];
		}
	}
	free(set);
	free(topo);
	char why[160];
	for (size_t k = 0; k < nv; k++) {
		if (victims[k] == x)
			snprintf(why, sizeof why, "unloaded by the captain");
		else
			snprintf(why, sizeof why, "it requires %s, which is unloaded", name);
		ext_teardown(victims[k], why, NULL);
		ext_discard(victims[k]);
	}
	free(victims);
	return 0;
}

/* True if ext y requires name, directly or through other active ones. */
static bool
requires_deep(struct exts *es, struct dreamos_ext *y, const char *name, int depth)
{
	if (depth > 64)
		return true;
	for (size_t i = 0; i < y->ndeps; i++) {
		if (strcmp(y->deps[i].name, name) == 0)
			return true;
		struct dreamos_ext *z = ext_find_active(es, y->deps[i].name);
		if (z != NULL && requires_deep(es, z, name, depth + 1))
			return true;
	}
	return false;
}

/* Checks that nx (a new version of an active extension) fits: its
 * requirements are loaded and new enough, no cycle, and it is still new
 * enough for the extensions that require it.  NULL if so, else why. */
static char *
reload_check(struct exts *es, const struct dreamos_ext *nx)
{
	for (size_t i = 0; i < nx->ndeps; i++) {
		const struct ext_dep *d = &nx->deps[i];
		struct dreamos_ext *y = ext_find_active(es, d->name);
		if (y == NULL)
			return xasprintf("requires %s, which is not loaded", d->name);
		if (d->min != NULL && ext_version_cmp(y->version, d->min) < 0)
			return xasprintf("requires %s >= %s, but %s %s is loaded", d->name, d->min,
			                 d->name, y->version);
		if (requires_deep(es, y, nx->name, 0))
			return xasprintf("dependency cycle: %s -> %s -> ... -> %s", nx->name,
			                 d->name, nx->name);
	}
	for (size_t i = 0; i < es->n; i++) {
		struct dreamos_ext *z = es->v[i];
		for (size_t k = 0; z->state == EXT_ACTIVE && k < z->ndeps; k++) {
			const struct ext_dep *d = &z->deps[k];
			if (strcmp(d->name, nx->name) == 0 && d->min != NULL &&
			    ext_version_cmp(nx->version, d->min) < 0)
				return xasprintf(
				    "%s requires %s >= %s, and the new file is version %s", z->name,
				    nx->name, d->min, nx->version);
		}
	}
	return NULL;
}

int
ext_reload(struct exts *es, const char *name, char **cause)
{
	struct dreamos_ext *x = ext_find(es, name);
	if (x == NULL || x->state != EXT_ACTIVE) {
		*cause = x == NULL ? xasprintf("extension '%s' is not loaded", name)
		                   : xasprintf("extension '%s' is busy", name);
		return -1;
	}
	struct orch *o = es->o;
	char *why = NULL;
	struct dreamos_ext *nx = ext_open(es, x->path, true, NULL, &why);
	if (nx != NULL && strcmp(nx->name, x->name) != 0) {
		why = xasprintf("%s now declares the name '%s'", x->path, nx->name);
		ext_discard(nx);
		nx = NULL;
	}
	if (nx != NULL && (why = reload_check(es, nx)) != NULL) {
		ext_discard(nx);
		nx = NULL;
	}
	if (nx == NULL) {
		*cause = xasprintf("reload of %s failed: %s; version %s keeps running", name, why,
		                   x->version);
		log_error(orch_log(o), "ext", "%s", *cause);
		free(why);
		return -1;
	}

	/* Hand over: the old one saves its state and goes. */
	char *state = NULL;
	char *old_version = xstrdup(x->version);
	char *old_copy = xstrdup(x->copy);
	char *old_path = xstrdup(x->path);
	char *dep_of = x->dep_of ? xstrdup(x->dep_of) : NULL;
	int reloads = x->reloads;
	x->keep_copy = true;
	size_t pos = ext_teardown(x, "reloading", &state);
	ext_discard(x);
	nx->reloads = reloads + 1;
	nx->dep_of = dep_of ? xstrdup(dep_of) : NULL;
	if (ext_init(nx, state, pos, &why) == 0) {
		log_info(orch_log(o), "ext",
		         "reloaded %s %s -> %s from %s (state handed over: %zu bytes)", name,
		         old_version, nx->version, nx->path, state ? strlen(state) : 0);
		unlink(old_copy);
		free(state);
		free(old_version);
		free(old_copy);
		free(old_path);
		free(dep_of);
		return 0;
	}

	/* The new version refused: put the old one back, with its state. */
	struct ext_fileid seen = nx->seen;
	*cause = xasprintf("reload of %s failed: version %s: %s", name, nx->version, why);
	free(why);
	ext_discard(nx);
	char *again = NULL;
	struct dreamos_ext *ox = ext_open(es, old_copy, false, name, &again);
	if (ox != NULL) {
		free(ox->path);
		ox->path = old_path;
		old_path = NULL;
		ox->seen = seen; /* not reloaded again until the file changes */
		ox->reloads = reloads;
		ox->dep_of = dep_of;
		dep_of = NULL;
		if (ext_init(ox, state, pos, &again) == 0) {
			log_error(orch_log(o), "ext",
			          "%s; version %s is running again (state restored)", *cause,
			          old_version);
			char *full =
			    xasprintf("%s; version %s is running again", *cause, old_version);
			free(*cause);
			*cause = full;
			ox = NULL;
		} else {
			ext_discard(ox);
		}
	}
	if (again != NULL) {
		log_error(orch_log(o), "ext",
		          "%s; and version %s could not be loaded again: %s; %s is "
		          "unloaded",
		          *cause, old_version, again, name);
		free(again);
		unlink(old_copy);
	}
	free(state);
	free(old_version);
	free(old_copy);
	free(old_path);
	free(dep_of);
	return -1;
}

/* ---- watching files ------------------------------------------------------------- */

static void
ext_watch_closed(uv_handle_t *h)
{
	struct ext_watch *w = h->data;
	free(w->dir);
	free(w);
}

static void
ext_handle_closed(uv_handle_t *h)
{
	free(h);
}

/* The debounce delay is over: reload if the file really changed. */
static void
ext_debounce_cb(uv_timer_t *t)
{
	struct dreamos_ext *x = t->data;
	struct exts *es = x->es;
	struct stat sb;
	if (stat(x->path, &sb) != 0) {
		log_debug(orch_log(es->o), "ext", "%s: %s is gone; version %s keeps running",
		          x->name, x->path, x->version);
		return;
	}
	struct ext_fileid id;
	fileid_of(&sb, &id);
	if (fileid_eq(&id, &x->seen))
		return;
	x->seen = id;
	log_info(orch_log(es->o), "ext", "%s: %s changed: reloading", x->name, x->path);
	char *name = xstrdup(x->name);
	char *cause = NULL;
	ext_reload(es, name, &cause); /* x is gone afterwards */
	free(cause);
	free(name);
}

static void
ext_fs_event_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct ext_watch *w = h->data;
	struct exts *es = w->es;
	(void)events;
	if (status < 0 || es->closing)
		return;
	for (size_t i = 0; i < es->n; i++) {
		struct dreamos_ext *x = es->v[i];
		if (x->watch != w || x->state != EXT_ACTIVE)
			continue;
		if (filename != NULL && strcmp(base_name(x->path), filename) != 0)
			continue;
		if (x->debounce == NULL) {
			x->debounce = xmalloc(sizeof *x->debounce);
			uv_timer_init(orch_loop(es->o), x->debounce);
			x->debounce->data = x;
		}
		uv_timer_start(x->debounce, ext_debounce_cb, EXT_DEBOUNCE_MS, 0);
	}
}

/* Watches the directory of x's file (one watcher per directory). */
static void
ext_watch_add(struct dreamos_ext *x)
{
	struct exts *es = x->es;
	const char *slash = strrchr(x->path, '/');
	char *dir = slash == NULL
	                ? xstrdup(".")
	                : xstrndup(x->path, slash == x->path ? 1 : (size_t)(slash - x->path));
	for (struct ext_watch *w = es->watches; w != NULL; w = w->next) {
		if (strcmp(w->dir, dir) == 0) {
			w->refs++;
			x->watch = w;
			free(dir);
			return;
		}
	}
	struct ext_watch *w = xcalloc(1, sizeof *w);
	w->es = es;
	w->dir = dir;
	w->refs = 1;
	uv_fs_event_init(orch_loop(es->o), &w->h);
	w->h.data = w;
	int rc = uv_fs_event_start(&w->h, ext_fs_event_cb, dir, 0);
	if (rc < 0) {
		log_warn(orch_log(es->o), "ext",
		         "cannot watch %s for changes (%s): no hot reload for %s ('ext reload %s' "
		         "still works)",
		         dir, uv_strerror(rc), x->name, x->name);
		uv_close((uv_handle_t *)&w->h, ext_watch_closed);
		return;
	}
	w->next = es->watches;
	es->watches = w;
	x->watch = w;
}

static void
ext_watch_remove(struct dreamos_ext *x)
{
	struct exts *es = x->es;
	if (x->debounce != NULL) {
		uv_close((uv_handle_t *)x->debounce, ext_handle_closed);
		x->debounce = NULL;
	}
	struct ext_watch *w = x->watch;
	x->watch = NULL;
	if (w == NULL || --w->refs > 0)
		return;
	for (struct ext_watch **pp = &es->watches; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	uv_close((uv_handle_t *)&w->h, ext_watch_closed);
}

/* ---- the system ---------------------------------------------------------------- */

/* Where NAME.so files are: extensions.dir (relative to the configuration
 * file's directory, ~ for $HOME), else $DREAMOS_EXTENSIONS_DIR, else the
 * installed $(pkglibdir)/extensions. */
static char *
ext_resolve_dir(const struct config *cfg)
{
	const char *d = cfg->extensions.dir;
	if (d != NULL && *d != '\0') {
		const char *home = getenv("HOME");
		if (d[0] == '~' && (d[1] == '/' || d[1] == '\0') && home != NULL)
			return xasprintf("%s%s", home, d + 1);
		if (d[0] == '/' || cfg->path == NULL)
			return xstrdup(d);
		const char *slash = strrchr(cfg->path, '/');
		if (slash == NULL)
			return xstrdup(d);
		return xasprintf("%.*s/%s", (int)(slash - cfg->path), cfg->path, d);
	}
	const char *env = getenv("DREAMOS_EXTENSIONS_DIR");
	if (env != NULL && *env != '\0')
		return xstrdup(env);
	return xstrdup(DREAMOS_PKGLIBDIR "/extensions");
}

/* True when this dreamos is the one in its build tree and no directory
 * was asked for: `./dreamos` right after `make` finds the core extensions
 * in extensions/NAME/.libs/ before they are installed. */
static bool
ext_in_build_tree(const struct config *cfg)
{
	const char *env = getenv("DREAMOS_EXTENSIONS_DIR");
	if ((cfg->extensions.dir != NULL && *cfg->extensions.dir != '\0') ||
	    (env != NULL && *env != '\0'))
		return false;
	char *self = realpath("/proc/self/exe", NULL);
	char *built = realpath(DREAMOS_BUILDDIR "/dreamos", NULL);
	bool same = self != NULL && built != NULL && strcmp(self, built) == 0;
	free(self);
	free(built);
	return same;
}

char *
ext_module_path(const struct exts *es, const char *name)
{
	char *path = xasprintf("%s/%s.so", es->dir, name);
	if (es->build_tree && access(path, F_OK) != 0) {
		char *built =
		    xasprintf("%s/extensions/%s/.libs/%s.so", DREAMOS_BUILDDIR, name, name);
		if (access(built, F_OK) == 0) {
			free(path);
			return built;
		}
		free(built);
	}
	return path;
}

struct exts *
ext_new(struct orch *o)
{
	struct exts *es = xcalloc(1, sizeof *es);
	es->o = o;
	es->loop_thread = pthread_self();
	es->jobs_tail = &es->jobs;
	es->dir = ext_resolve_dir(orch_config(o));
	es->build_tree = ext_in_build_tree(orch_config(o));
	es->loaded_dir = path_join(orch_runtime(o), "extensions/.loaded");
	ext_cmds_init(es);
	struct cmd_table *t = orch_cmds(o);
	es->cmds_registered = true;
	for (size_t i = 0; i < EXT_CORE_CMDS; i++) {
		if (cmd_register(t, &es->cmds[i].entry, 1, "ext") != 0)
			es->cmds_registered = false;
	}
	return es;
}

/* Removes the copies left by an earlier run that did not stop cleanly. */
static void
ext_clean_loaded(struct exts *es)
{
	DIR *d = opendir(es->loaded_dir);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char *p = path_join(es->loaded_dir, e->d_name);
		unlink(p);
		free(p);
	}
	closedir(d);
}

void
ext_start(struct exts *es)
{
	const struct config *cfg = orch_config(es->o);
	ext_clean_loaded(es);
	if (cfg->extensions.nload == 0)
		return;
	char *cause = NULL;
	int failed =
	    ext_load(es, (const char *const *)cfg->extensions.load, cfg->extensions.nload, &cause);
	if (failed > 0)
		log_warn(orch_log(es->o), "ext",
		         "%d of the extensions to load at start failed "
		         "(see above); the others run",
		         failed);
	free(cause);
}

void
ext_close(struct exts *es)
{
	if (es == NULL || es->closing)
		return;
	es->closing = true;
	size_t n;
	struct dreamos_ext **topo = ext_topo(es, &n);
	for (size_t k = n; k-- > 0;) {
		struct dreamos_ext *x = topo[k];
		/* One being unloaded right now is finished by its caller. */
		if (x->state != EXT_ACTIVE)
			continue;
		ext_teardown(x, "dreamos is stopping", NULL);
		ext_discard(x);
	}
	free(topo);
	ext_jobs_close(es);
	while (es->watches != NULL) {
		struct ext_watch *w = es->watches;
		es->watches = w->next;
		uv_close((uv_handle_t *)&w->h, ext_watch_closed);
	}
}

void
ext_free(struct exts *es)
{
	if (es == NULL)
		return;
	ext_close(es);
	if (es->cmds_registered && orch_cmds(es->o) != NULL)
		cmd_unregister_owner(orch_cmds(es->o), "ext");
	free(es->v);
	free(es->dir);
	free(es->loaded_dir);
	free(es);
}

const char *
ext_dir(const struct exts *es)
{
	return es->dir;
}

size_t
ext_count(const struct exts *es)
{
	return es->n;
}

void
ext_counts(const struct exts *es, struct ext_counts *out)
{
	memset(out, 0, sizeof *out);
	out->extensions = es->n;
	for (size_t i = 0; i < es->n; i++) {
		const struct dreamos_ext *x = es->v[i];
		out->commands += x->ncmds;
		out->agent_types += x->ntypes;
		out->agents += x->nagents;
		out->timers += x->ntimers;
		out->subscriptions += x->nsubs;
		out->requests += x->nhttps;
		out->waiting_calls += x->ncalls;
	}
	out->pending_sends = es->sends_out;
	out->jobs = es->njobs;
	for (const struct ext_watch *w = es->watches; w != NULL; w = w->next)
		out->watchers++;
}

json_t *
ext_status_json(const struct exts *es)
{
	json_t *loaded = json_array();
	for (size_t i = 0; i < es->n; i++) {
		if (es->v[i]->state == EXT_ACTIVE)
			json_array_append_new(loaded, json_pack("{s:s,s:s}", "name", es->v[i]->name,
			                                        "version", es->v[i]->version));
	}
	return json_pack("{s:s,s:o}", "dir", es->dir, "loaded", loaded);
}

void
ext_complete(struct exts *es, const char *hint, const char *partial, cmd_complete_add_fn add,
             void *arg)
{
	if (es == NULL)
		return;
	size_t plen = strlen(partial);
	if (strcmp(hint, "ext") == 0) {
		for (size_t i = 0; i < es->n; i++) {
			if (strncmp(es->v[i]->name, partial, plen) == 0)
				add(es->v[i]->name, arg);
		}
	} else if (strcmp(hint, "ext-file") == 0) {
		DIR *d = opendir(es->dir);
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL) {
			size_t n = strlen(e->d_name);
			if (n <= 3 || strcmp(e->d_name + n - 3, ".so") != 0)
				continue;
			char *name = xstrndup(e->d_name, n - 3);
			if (strncmp(name, partial, plen) == 0 && ext_find(es, name) == NULL)
				add(name, arg);
			free(name);
		}
		if (d != NULL)
			closedir(d);
	} else {
		ext_complete_dynamic(es, hint, partial, add, arg);
	}
}

json_t *
ext_available_json(const struct exts *es)
{
	json_t *rows = json_array();
	DIR *d = opendir(es->dir);
	struct dirent *e;
	while (d != NULL && (e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n <= 3 || strcmp(e->d_name + n - 3, ".so") != 0)
			continue;
		char *name = xstrndup(e->d_name, n - 3);
		if (ext_find(es, name) == NULL) {
			char *path = path_join(es->dir, e->d_name);
			json_array_append_new(rows, json_pack("{s:s,s:n,s:s,s:s}", "name", name,
			                                      "version", "state", "available",
			                                      "file", path));
			free(path);
		}
		free(name);
	}
	if (d != NULL)
		closedir(d);
	return rows;
}

json_t *
ext_json(const struct dreamos_ext *x, bool detail)
{
	static const char *const states[] = {"opened", "starting", "active", "unloading"};
	char *deps = deps_text(x);
	char loaded[40] = "";
	if (x->loaded_ms > 0)
		time_iso8601(x->loaded_ms, loaded, sizeof loaded);
	json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s?}", "name", x->name, "version",
	                      x->version, "state", states[x->state], "requires", deps, "reloads",
	                      x->reloads, "file", x->path, "description", x->description);
	free(deps);
	if (!detail)
		return j;
	char *dependents = ext_dependents(x->es, x->name);
	json_object_set_new(j, "required_by", json_string(dependents ? dependents : ""));
	free(dependents);
	json_object_set_new(j, "loaded", json_string(loaded));
	json_object_set_new(j, "copy", json_string(x->copy));
	json_object_set_new(j, "dependency_of", x->dep_of ? json_string(x->dep_of) : json_null());
	json_object_set_new(j, "watched", json_boolean(x->watch != NULL));
	json_object_set_new(j, "resources", ext_resources_json(x));
	return j;
}

bool
ext_loaded(const struct exts *es, const char *name)
{
	const struct dreamos_ext *x = es ? ext_find(es, name) : NULL;
	return x != NULL && x->state == EXT_ACTIVE;
}
