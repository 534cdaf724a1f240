# tests/reliability: included by Makefile.am — chaos commands and verify,
# the crash-consistency loop, fault injection, and check-valgrind.
libdreamos_core_la_SOURCES += src/core/cmd-chaos.c
