/* fuzz-check.h — FUZZ_CHECK(cond): an invariant of a fuzz target.  When it
 * does not hold, it says which one (file, line, condition) on stderr and
 * aborts, so that libFuzzer keeps the input as a crash. */
#ifndef DREAMOS_FUZZ_CHECK_H
#define DREAMOS_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__,      \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
