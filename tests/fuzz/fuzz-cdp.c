/* fuzz-cdp.c — libFuzzer target for the StealthBrowser's DevTools reader
 * (extensions/stealthbrowser/cdp.c): arbitrary bytes, fed in chunks whose
 * sizes come from the input itself, through the framing and the message
 * parser, with commands pending so that responses are matched; a small
 * bound on the message size so the dropping path runs too.
 *
 * Build (not part of make check):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 \
 *     -Iextensions/stealthbrowser $(pkg-config --cflags jansson) \
 *     -o fuzz-cdp tests/fuzz/fuzz-cdp.c extensions/stealthbrowser/cdp.c \
 *     $(pkg-config --libs jansson)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cdp.h"

static int cookies[8];

static void
failed(void *cookie, uint64_t id, void *arg)
{
	(void)cookie, (void)id, (void)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cdp *c = cdp_new(size > 0 ? 16 + data[0] * 64 : 0);
	for (int i = 0; i < 8; i++) {
		char *out;
		size_t len;
		cdp_command(c, "Runtime.evaluate", json_pack("{s:s}", "expression", "1"),
		            i % 2 ? "S" : NULL, &cookies[i], &out, &len);
		if (len == 0 || out[len - 1] != '\0')
			abort();
		free(out);
	}
	cdp_forget(c, 3);
	size_t i = size > 0 ? 1 : 0;
	while (i < size) {
		size_t n = 1 + data[i] % 97;
		i++;
		if (n > size - i)
			n = size - i;
		cdp_feed(c, (const char *)data + i, n);
		i += n;
		struct cdp_msg m;
		char err[128];
		int rc;
		while ((rc = cdp_next(c, &m, err, sizeof err)) != 0) {
			if (rc < 0)
				continue;
			if (m.kind == CDP_RESPONSE && m.result == NULL)
				abort();
			if (m.kind == CDP_EVENT && (m.method == NULL || m.params == NULL))
				abort();
			if (m.known &&
			    (m.cookie < (void *)cookies || m.cookie >= (void *)(cookies + 8)))
				abort();
			cdp_msg_clear(&m);
		}
	}
	(void)cdp_buffered(c);
	cdp_fail_all(c, failed, NULL);
	if (cdp_pending(c) != 0)
		abort();
	cdp_free(c);
	return 0;
}
