/* testutil.h — helpers shared by the cmocka unit tests: a fresh temporary
 * directory per test, removed afterwards, and small file helpers. */
#ifndef DREAMOS_TESTUTIL_H
#define DREAMOS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
testutil_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Returns a new empty directory under $TMPDIR; free with testutil_rmdir. */
static inline char *
testutil_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[4096];
	snprintf(tmpl, sizeof tmpl, "%s/dreamos-test-XXXXXX", base ? base : "/tmp");
	char *d = mkdtemp(tmpl);
	assert_non_null(d);
	return strdup(d);
}

/* Removes dir and everything in it, and frees the string. */
static inline void
testutil_rmdir(char *dir)
{
	if (dir == NULL)
		return;
	nftw(dir, testutil_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

/* Writes text to dir/name; returns the malloc'd path. */
static inline char *
testutil_write(const char *dir, const char *name, const char *text)
{
	char *path = malloc(strlen(dir) + strlen(name) + 2);
	sprintf(path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

/* Reads a whole file; returns a malloc'd NUL-terminated string or NULL. */
static inline char *
testutil_read(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *s = malloc((size_t)n + 1);
	size_t got = fread(s, 1, (size_t)n, f);
	s[got] = '\0';
	fclose(f);
	return s;
}

#endif
