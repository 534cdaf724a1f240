/* clock.h — the clocks of the benchmark programs (header only, like
 * linescan.h): each is one C file built with `cc -O2` by its script. */
#ifndef DREAMOS_BENCH_CLOCK_H
#define DREAMOS_BENCH_CLOCK_H

#include <time.h>

/* CLOCK_MONOTONIC in ns: the same clock in every process, so a time sent
 * in a message body can be compared where it arrives. */
static inline long long
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* This process's CPU time (user + system, all threads), in ns; 0 if it
 * cannot be read. */
static inline long long
cpu_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
		return 0;
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
