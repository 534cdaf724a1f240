# extensions/stealthbrowser: included by Makefile.am
# --- StealthBrowser: headless Chromium over the DevTools pipe ----------------
extensions_LTLIBRARIES += extensions/stealthbrowser/stealthbrowser.la
extensions_stealthbrowser_stealthbrowser_la_SOURCES = \
	extensions/stealthbrowser/stealthbrowser.c \
	extensions/stealthbrowser/cdp.c extensions/stealthbrowser/cdp.h
extensions_stealthbrowser_stealthbrowser_la_LDFLAGS = $(AM_LDFLAGS) -module -avoid-version -shared
extensions_stealthbrowser_stealthbrowser_la_LIBADD = $(JANSSON_LIBS) $(OPENSSL_LIBS)
EXTRA_DIST += extensions/stealthbrowser/README tests/helpers/web_stub.py tests/fuzz/fuzz-cdp.c
INTEGRATION_TESTS += tests/integration/stealthbrowser.sh
dist_man_MANS += man/dreamos-stealthbrowser.7

# The host's child-process API (proc_spawn, proc_write, proc_kill), driven
# by a small test extension from the same integration test.
check_LTLIBRARIES += tests/ext/procx.la
tests_ext_procx_la_SOURCES = tests/ext/procx.c
tests_ext_procx_la_LDFLAGS = $(TEST_EXT_LDFLAGS)
