# tests/reliability: included by Makefile.am — chaos commands and verify,
# the crash-consistency loop, fault injection, and check-valgrind.
libdreamos_core_la_SOURCES += src/core/cmd-chaos.c

# The crash-consistency loop (short) and the fault injection tests; the long
# loop is bench/crash-consistency.sh.
INTEGRATION_TESTS += tests/reliability/crash-consistency.sh tests/reliability/faults.sh
EXTRA_DIST += tests/reliability/crashloop.py tests/reliability/valgrind-dreamos.in \
	bench/crash-consistency.sh

# make check-valgrind: VALGRIND_TESTS (integration tests) with the
# orchestrator under valgrind --leak-check=full --error-exitcode=1 (through
# the wrapper tests/reliability/valgrind-dreamos: `dreamos ctl` runs
# natively; one log per process in tests/reliability/vg-logs/); fails if a
# test fails or a log reports an error or a definite leak.
VALGRIND = valgrind
# (agents.sh is left out: its restart-backoff windows are too short for a
# ten times slower orchestrator; no valgrind error shows in its logs.)
VALGRIND_TESTS = tests/integration/headless.sh tests/integration/bus.sh \
	tests/integration/bus-crash.sh tests/reliability/faults.sh
# The tests use $DREAMOS; under check-valgrind it is the wrapper.
AM_TESTS_ENVIRONMENT += if test -n "$(DREAMOS_WRAP)"; then DREAMOS='$(DREAMOS_WRAP)'; export DREAMOS; fi;

check-valgrind: all
	@command -v $(VALGRIND) >/dev/null || { echo "check-valgrind: no $(VALGRIND)" >&2; exit 1; }
	rm -rf tests/reliability/vg-logs && $(MKDIR_P) tests/reliability/vg-logs
	sed -e 's|@VALGRIND@|$(VALGRIND)|' -e 's|@DREAMOS@|$(abs_top_builddir)/dreamos|' \
	    -e 's|@LOGDIR@|$(abs_top_builddir)/tests/reliability/vg-logs|' \
	    $(srcdir)/tests/reliability/valgrind-dreamos.in >tests/reliability/valgrind-dreamos
	chmod +x tests/reliability/valgrind-dreamos
	$(MAKE) $(AM_MAKEFLAGS) check TESTS="$(VALGRIND_TESTS)" \
	    DREAMOS_WRAP='$(abs_top_builddir)/tests/reliability/valgrind-dreamos'
	@n=$$(ls tests/reliability/vg-logs | wc -l); \
	bad=$$(grep -l -E 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]' tests/reliability/vg-logs/* 2>/dev/null); \
	echo "check-valgrind: $$n dreamos processes under valgrind"; \
	if test -n "$$bad"; then echo "check-valgrind: errors in: $$bad" >&2; \
	  for f in $$bad; do sed -n '1,60p' $$f >&2; done; exit 1; fi; \
	echo "check-valgrind: no error, no definite leak"

.PHONY: check-valgrind
