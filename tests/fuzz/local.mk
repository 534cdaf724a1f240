# tests/fuzz: included by Makefile.am
# --- fuzzing (clang's libFuzzer; not part of make check) -------------------
#
# ./configure --enable-fuzzing, then
#   make fuzz-targets               builds tests/fuzz/fuzz-* with $(FUZZ_CC)
#   make fuzz [FUZZ_SECONDS=60]     runs each for FUZZ_SECONDS on a scratch
#                                   copy of its seed corpus; fails on a crash
#   make fuzz-ci                    the same, 30 s each (what .ci/run does)
# See tests/fuzz/README.
#
# The core (every .c of libdreamos-core) is compiled once with clang,
# -fsanitize=fuzzer-no-link and the sanitizers, into a static archive; each
# target is its tests/fuzz/fuzz-NAME.c linked against it (only the objects
# it uses are pulled in).  A target fuzz-NAME takes its seeds from
# tests/fuzz/corpus/NAME/, its dictionary from tests/fuzz/dict/NAME.dict and
# extra libFuzzer flags from tests/fuzz/NAME.options, each optional.

# The targets, one source each.  To add one: its source here, and any source
# it needs beyond the core in FUZZ_EXTRA_SRCS.
FUZZ_SRCS = tests/fuzz/fuzz-proto.c tests/fuzz/fuzz-cmd.c tests/fuzz/fuzz-config.c \
	tests/fuzz/fuzz-http.c tests/fuzz/fuzz-ws.c tests/fuzz/fuzz-packtab.c
FUZZ_EXTRA_SRCS =

FUZZ_SECONDS = 60
FUZZ_SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fsanitize-recover=pointer-overflow,nonnull-attribute
FUZZ_CFLAGS = -std=gnu11 -g -O1 -fno-omit-frame-pointer -Wall -Wno-unused-parameter \
	$(FUZZ_SANITIZE)
FUZZ_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/fuzz $(UV_CFLAGS) $(JANSSON_CFLAGS) \
	$(SQLITE_CFLAGS) $(YAML_CFLAGS) $(OPENSSL_CFLAGS) $(CURL_CFLAGS)
FUZZ_LIB = tests/fuzz/libfuzz-core.a
# --- fuzz-cdp (the DevTools message reader of extensions/stealthbrowser) ---
FUZZ_SRCS += tests/fuzz/fuzz-cdp.c
FUZZ_EXTRA_SRCS += extensions/stealthbrowser/cdp.c
FUZZ_CPPFLAGS += -I$(top_srcdir)/extensions/stealthbrowser
FUZZ_BINS = $(FUZZ_SRCS:.c=)

EXTRA_DIST += $(FUZZ_SRCS) tests/fuzz/fuzz-check.h tests/fuzz/README tests/fuzz/run-fuzz.sh \
	tests/fuzz/corpus tests/fuzz/dict
CLEANFILES = tests/fuzz/*.o $(FUZZ_LIB) $(FUZZ_BINS)
.PHONY: fuzz fuzz-ci fuzz-targets

if FUZZING
# Every object is rebuilt when any core source changes (one rule, no
# pattern rules, so that it stays portable automake).
$(FUZZ_LIB): $(libdreamos_core_la_SOURCES) $(FUZZ_EXTRA_SRCS) Makefile
	@$(MKDIR_P) tests/fuzz
	@rm -f $@ tests/fuzz/*.o
	@for s in $(libdreamos_core_la_SOURCES) $(FUZZ_EXTRA_SRCS); do \
	  case $$s in *.c) ;; *) continue ;; esac; \
	  o=tests/fuzz/`echo "$$s" | sed 's|/|_|g; s|\.c$$|.o|'`; \
	  echo "  FUZZCC   $$s"; \
	  $(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
	    -c -o $$o $(top_srcdir)/$$s || exit 1; \
	done
	$(AM_V_GEN)$(AR) rcs $@ tests/fuzz/*.o

fuzz-targets: $(FUZZ_LIB) $(FUZZ_SRCS) tests/fuzz/fuzz-check.h
	@$(MKDIR_P) tests/fuzz
	@for t in $(FUZZ_BINS); do \
	  echo "  FUZZLD   $$t"; \
	  $(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer \
	    -o $$t $(top_srcdir)/$$t.c $(FUZZ_LIB) \
	    $(CORE_LIBS) $(LIBS) || exit 1; \
	done

fuzz: fuzz-targets
	$(SHELL) $(top_srcdir)/tests/fuzz/run-fuzz.sh -s $(FUZZ_SECONDS) \
	  -d $(top_srcdir)/tests/fuzz $(FUZZ_BINS)

fuzz-ci:
	$(MAKE) $(AM_MAKEFLAGS) fuzz FUZZ_SECONDS=30
else
fuzz-targets fuzz fuzz-ci:
	@echo "$@: configure with --enable-fuzzing (needs the Debian package clang)" >&2; exit 1
endif
