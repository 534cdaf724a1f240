/* wsframes.h — WebSocket frames as a client sends them, for the unit tests
 * of the Bridge (test-http.c, test-wsframe.c). */
#ifndef DREAMOS_TEST_WSFRAMES_H
#define DREAMOS_TEST_WSFRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The masking key the tests' clients use. */
static const uint8_t WS_TEST_KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Length forms for ws_frame_ex: the shortest, or a given one (to break the
 * shortest-form rule). */
enum lenform { LEN_AUTO, LEN_16, LEN_64 };

/* Builds a frame into out (masked with key unless key is NULL); returns
 * its length.  b0 is the first byte as on the wire (FIN, RSV, opcode). */
static inline size_t
ws_frame_ex(uint8_t *out, uint8_t b0, const uint8_t *key, enum lenform form, const void *payload,
            size_t len)
{
	size_t i = 2;
	out[0] = b0;
	if (form == LEN_AUTO)
		form = len < 126 ? LEN_AUTO : len < 65536 ? LEN_16 : LEN_64;
	if (form == LEN_AUTO) {
		out[1] = (uint8_t)len;
	} else if (form == LEN_16) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		i = 4;
	} else {
		out[1] = 127;
		for (int k = 0; k < 8; k++)
			out[2 + k] = (uint8_t)((uint64_t)len >> (56 - 8 * k));
		i = 10;
	}
	if (key != NULL) {
		out[1] |= 0x80;
		memcpy(out + i, key, 4);
		i += 4;
	}
	const uint8_t *p = payload;
	for (size_t k = 0; k < len; k++)
		out[i + k] = key != NULL ? p[k] ^ key[k % 4] : p[k];
	return i + len;
}

/* A frame in the shortest length form, masked with WS_TEST_KEY if mask. */
static inline size_t
ws_frame(uint8_t *out, bool fin, int opcode, bool mask, const void *payload, size_t len)
{
	return ws_frame_ex(out, (uint8_t)((fin ? 0x80 : 0) | opcode), mask ? WS_TEST_KEY : NULL,
	                   LEN_AUTO, payload, len);
}

#endif
