# tests/reliability: included by Makefile.am — chaos commands and verify,
# the crash-consistency loop, fault injection, and check-valgrind.
libdreamos_core_la_SOURCES += src/core/cmd-chaos.c

# The crash-consistency loop (short) and the fault injection tests; the long
# loop is bench/crash-consistency.sh.
INTEGRATION_TESTS += tests/reliability/crash-consistency.sh tests/reliability/faults.sh
EXTRA_DIST += tests/reliability/crashloop.py tests/reliability/valgrind-dreamos.in \
	bench/crash-consistency.sh

# make check-valgrind: the unit tests under valgrind, and VALGRIND_TESTS
# (integration tests) with the orchestrator under valgrind
# --leak-check=full --error-exitcode=1 (through the wrapper
# tests/reliability/valgrind-dreamos: `dreamos ctl` runs natively; one log
# per process in tests/reliability/vg-logs/, empty unless valgrind reports
# something: --quiet prints no summary); fails if a test fails or a log
# reports an error or a definite leak (only definite leaks are shown:
# ncurses's tsearch caches look "possibly lost" at every exit).  It sees
# what ASan cannot: reads of freed memory inside libuv, uninitialised
# values.
VALGRIND = valgrind
VALGRIND_UNIT = $(VALGRIND) --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
	--error-exitcode=1
# (agents.sh, protocol.sh and bridge.sh are left out: their timing windows
# are too short for a ten times slower orchestrator; no valgrind error
# shows in their logs.)
VALGRIND_TESTS = tests/integration/headless.sh tests/integration/bus.sh \
	tests/integration/bus-crash.sh tests/reliability/faults.sh tests/tui/tui.sh
# The tests use $DREAMOS; under check-valgrind it is the wrapper.
AM_TESTS_ENVIRONMENT += if test -n "$(DREAMOS_WRAP)"; then DREAMOS='$(DREAMOS_WRAP)'; export DREAMOS; fi;

check-valgrind: all
	@command -v $(VALGRIND) >/dev/null || { echo "check-valgrind: no $(VALGRIND)" >&2; exit 1; }
	rm -rf tests/reliability/vg-logs && $(MKDIR_P) tests/reliability/vg-logs
	sed -e 's|@VALGRIND@|$(VALGRIND)|' -e 's|@DREAMOS@|$(abs_top_builddir)/dreamos|' \
	    -e 's|@LOGDIR@|$(abs_top_builddir)/tests/reliability/vg-logs|' \
	    $(srcdir)/tests/reliability/valgrind-dreamos.in >tests/reliability/valgrind-dreamos
	chmod +x tests/reliability/valgrind-dreamos
	@rc=0; $(MAKE) $(AM_MAKEFLAGS) check TESTS="$(UNIT_TESTS) $(VALGRIND_TESTS)" \
	    LOG_COMPILER='$(VALGRIND_UNIT)' \
	    DREAMOS_WRAP='$(abs_top_builddir)/tests/reliability/valgrind-dreamos' || rc=$$?; \
	n=$$(ls tests/reliability/vg-logs | wc -l); \
	bad=$$(find tests/reliability/vg-logs -type f -size +0 | sort); \
	echo "check-valgrind: $$n dreamos processes under valgrind"; \
	if test -n "$$bad"; then echo "check-valgrind: errors in: $$bad" >&2; \
	  for f in $$bad; do sed -n '1,60p' $$f >&2; done; exit 1; fi; \
	test $$rc = 0 || exit $$rc; \
	echo "check-valgrind: no error, no definite leak"

.PHONY: check-valgrind
