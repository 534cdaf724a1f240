/* wsframe.c — the Bridge's WebSocket frame reader (see wsframe.h).
 *
 * A frame is read in two states: its header (2 to 14 bytes, kept in hdr
 * only when it arrives in pieces) and its payload, which is unmasked
 * straight from the caller's bytes into the message buffer (or, for a
 * control frame, into ctrl), so a message that arrives whole is copied
 * once.  A text message's UTF-8 is checked at the end of each frame with
 * utf8_valid (eight ASCII bytes at a time), a character cut between two
 * frames being checked once it is whole; a message over max_msg is refused
 * at the header of the frame that would take it over. */
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "wsframe.h"

#define WSF_MSG_KEEP (64 * 1024) /* a message buffer kept for the next message */

enum {
	OP_CONT = 0x0,
	OP_TEXT = 0x1,
	OP_BINARY = 0x2,
	OP_CLOSE = 0x8,
	OP_PING = 0x9,
	OP_PONG = 0xa,
};

void
wsframe_init(struct wsframe *r, size_t max_msg)
{
	memset(r, 0, sizeof *r);
	r->max_msg = max_msg;
	r->state = WSF_ST_HEADER;
	buf_init(&r->msg);
}

void
wsframe_free(struct wsframe *r)
{
	buf_free(&r->msg);
}

void
wsframe_msg_done(struct wsframe *r)
{
	if (r->msg.cap > WSF_MSG_KEEP)
		buf_free(&r->msg);
	r->msg.len = 0;
	r->delivered = false;
}

/* Stops reading with close code and reason; returns WSF_ERROR in ev. */
static void
wsf_fail(struct wsframe *r, int code, const char *reason, struct wsframe_event *ev)
{
	r->state = WSF_ST_END;
	r->end_code = code;
	r->end_reason = reason;
	ev->kind = WSF_ERROR;
	ev->code = code;
	ev->data = reason;
	ev->len = strlen(reason);
}

/* dst[i] = src[i] ^ key[(phase + i) % 4] for n bytes, 32 at a time with
 * SSE2, else sixteen (dst and src may be the same). */
static void
wsf_unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], unsigned phase)
{
	uint8_t k[8];
	for (unsigned i = 0; i < 8; i++)
		k[i] = key[(phase + i) & 3];
	uint64_t m;
	memcpy(&m, k, sizeof m);
	size_t i = 0;
#ifdef __SSE2__
	__m128i m2 = _mm_set1_epi64x((long long)m);
	for (; n - i >= 32; i += 32) {
		__m128i a = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 16));
		_mm_storeu_si128((__m128i *)(void *)(dst + i), _mm_xor_si128(a, m2));
		_mm_storeu_si128((__m128i *)(void *)(dst + i + 16), _mm_xor_si128(b, m2));
	}
#endif
	for (; n - i >= 16; i += 16) {
		uint64_t w[2];
		memcpy(w, src + i, 16);
		w[0] ^= m;
		w[1] ^= m;
		memcpy(dst + i, w, 16);
	}
	if (n - i >= 8) {
		uint64_t w;
		memcpy(&w, src + i, 8);
		w ^= m;
		memcpy(dst + i, &w, 8);
		i += 8;
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ k[i & 7];
}

/* The length of the UTF-8 sequence that byte c starts (4 for bytes that
 * start none: utf8_valid refuses those). */
static size_t
wsf_utf8_seqlen(uint8_t c)
{
	return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* Checks the UTF-8 of msg from utf8_done on, at the end of a text frame.
 * Unless fin, a character cut off at the end is left for the next frame,
 * provided some continuation would make it valid.  Returns false if the
 * text is not valid UTF-8. */
static bool
wsf_utf8_check(struct wsframe *r, bool fin)
{
	const uint8_t *s = (const uint8_t *)r->msg.data;
	size_t len = r->msg.len, end = len;
	if (len == r->utf8_done)
		return true; /* nothing new (s may be NULL) */
	if (!fin) {
		for (size_t k = 1; k <= 3 && k <= len - r->utf8_done; k++) {
			uint8_t c = s[len - k];
			if ((c & 0xc0) == 0x80)
				continue; /* a continuation byte: look further back */
			size_t need = wsf_utf8_seqlen(c);
			if (need > k) {
				/* Cut off: valid so far if it is with the
				 * lowest or the highest continuation bytes
				 * (only a second byte has a narrower range,
				 * which holds one or the other). */
				uint8_t t[4];
				memcpy(t, s + len - k, k);
				memset(t + k, 0x80, need - k);
				if (!utf8_valid((const char *)t, need)) {
					memset(t + k, 0xbf, need - k);
					if (!utf8_valid((const char *)t, need))
						return false;
				}
				end = len - k;
			}
			break;
		}
	}
	if (!utf8_valid((const char *)s + r->utf8_done, end - r->utf8_done))
		return false;
	r->utf8_done = end;
	return true;
}

/* True if a close frame may carry code (RFC 6455 7.4). */
static bool
wsf_close_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
	       (code >= 3000 && code <= 4999);
}

/* The length of a frame header whose second byte is b1. */
static size_t
wsf_header_len(uint8_t b1)
{
	size_t n = 2 + ((b1 & 0x80) ? 4 : 0);
	if ((b1 & 0x7f) == 126)
		n += 2;
	else if ((b1 & 0x7f) == 127)
		n += 8;
	return n;
}

/* Returns the next frame header once it is whole: in place in p when it
 * arrived whole, else in r->hdr, where it is gathered as it comes.  Moves
 * *off past what it used; NULL when the input ran out first. */
static const uint8_t *
wsf_take_header(struct wsframe *r, const uint8_t *p, size_t len, size_t *off)
{
	size_t avail = len - *off;
	if (avail == 0)
		return NULL;
	if (r->hlen == 0 && avail >= 2) {
		size_t need = wsf_header_len(p[*off + 1]);
		if (avail >= need) {
			const uint8_t *h = p + *off;
			*off += need;
			return h;
		}
	}
	if (r->hlen < 2) {
		size_t n = 2 - r->hlen < avail ? 2 - r->hlen : avail;
		memcpy(r->hdr + r->hlen, p + *off, n);
		r->hlen += (unsigned)n;
		*off += n;
		avail -= n;
		if (r->hlen < 2)
			return NULL;
	}
	size_t need = wsf_header_len(r->hdr[1]);
	size_t n = need - r->hlen < avail ? need - r->hlen : avail;
	memcpy(r->hdr + r->hlen, p + *off, n);
	r->hlen += (unsigned)n;
	*off += n;
	if (r->hlen < need)
		return NULL;
	r->hlen = 0;
	return r->hdr;
}

/* Checks the whole frame header h and starts its frame.  Returns false
 * with ev filled (WSF_ERROR) if the peer broke a rule. */
static bool
wsf_header(struct wsframe *r, const uint8_t *h, struct wsframe_event *ev)
{
	bool fin = (h[0] & 0x80) != 0;
	unsigned rsv = h[0] & 0x70, op = h[0] & 0x0f;
	bool masked = (h[1] & 0x80) != 0;
	uint64_t plen = h[1] & 0x7f;
	size_t i = 2;
	if (plen == 126) {
		plen = (uint64_t)h[2] << 8 | h[3];
		i = 4;
		if (plen < 126) {
			wsf_fail(r, 1002, "frame length not in its shortest form", ev);
			return false;
		}
	} else if (plen == 127) {
		plen = 0;
		for (int k = 0; k < 8; k++)
			plen = plen << 8 | h[2 + k];
		i = 10;
		if (plen >> 63) {
			wsf_fail(r, 1002, "frame length over 2^63", ev);
			return false;
		}
		if (plen < 65536) {
			wsf_fail(r, 1002, "frame length not in its shortest form", ev);
			return false;
		}
	}
	if (rsv != 0) {
		wsf_fail(r, 1002, "reserved bits set without an extension", ev);
		return false;
	}
	if (!masked) {
		wsf_fail(r, 1002, "client frame not masked", ev);
		return false;
	}
	switch (op) {
	case OP_CONT:
		if (!r->in_msg) {
			wsf_fail(r, 1002, "continuation frame without a message", ev);
			return false;
		}
		break;
	case OP_TEXT:
	case OP_BINARY:
		if (r->in_msg) {
			wsf_fail(r, 1002, "new message inside a fragmented one", ev);
			return false;
		}
		break;
	case OP_CLOSE:
	case OP_PING:
	case OP_PONG:
		/* RFC 6455 5.5: final, at most 125 bytes; a close body
		 * starts with a 2-byte code (5.5.1). */
		if (!fin) {
			wsf_fail(r, 1002, "fragmented control frame", ev);
			return false;
		}
		if (plen > 125) {
			wsf_fail(r, 1002, "control frame over 125 bytes", ev);
			return false;
		}
		if (op == OP_CLOSE && plen == 1) {
			wsf_fail(r, 1002, "close frame with a 1-byte payload", ev);
			return false;
		}
		break;
	default:
		wsf_fail(r, 1002, "reserved opcode", ev);
		return false;
	}
	if (op == OP_TEXT || op == OP_BINARY) {
		r->msg.len = 0;
		r->msg_len = 0;
		r->utf8_done = 0;
		r->msg_op = (uint8_t)op;
	}
	if ((op & 0x8) == 0 && plen > (uint64_t)(r->max_msg - r->msg_len)) {
		wsf_fail(r, 1009, "message too big", ev);
		return false;
	}
	if ((op & 0x8) == 0)
		r->in_msg = true;
	r->opcode = (uint8_t)op;
	r->fin = fin;
	memcpy(r->key, h + i, 4);
	r->phase = 0;
	r->left = plen;
	r->ctrl_len = 0;
	r->state = WSF_ST_PAYLOAD;
	return true;
}

/* The current frame has all arrived.  Returns true with ev filled when it
 * completes something (or breaks a rule), false when reading goes on. */
static bool
wsf_frame_end(struct wsframe *r, struct wsframe_event *ev)
{
	r->state = WSF_ST_HEADER;
	ev->code = 0;
	ev->data = NULL;
	ev->len = 0;
	switch (r->opcode) {
	case OP_PING:
	case OP_PONG:
		ev->kind = r->opcode == OP_PING ? WSF_PING : WSF_PONG;
		ev->data = (const char *)r->ctrl;
		ev->len = r->ctrl_len;
		return true;
	case OP_CLOSE: {
		unsigned code = 1005;
		if (r->ctrl_len >= 2) {
			code = (unsigned)r->ctrl[0] << 8 | r->ctrl[1];
			if (!wsf_close_code_valid(code)) {
				wsf_fail(r, 1002, "invalid close code", ev);
				return true;
			}
			if (!utf8_valid((const char *)r->ctrl + 2, r->ctrl_len - 2)) {
				wsf_fail(r, 1007, "close reason not valid UTF-8", ev);
				return true;
			}
			ev->data = (const char *)r->ctrl + 2;
			ev->len = r->ctrl_len - 2;
		}
		r->state = WSF_ST_END;
		r->end_code = (int)code;
		r->end_reason = "";
		ev->kind = WSF_CLOSE;
		ev->code = (int)code;
		return true;
	}
	default:
		break;
	}
	if (r->msg_op == OP_TEXT && !wsf_utf8_check(r, r->fin)) {
		wsf_fail(r, 1007, "text message not valid UTF-8", ev);
		return true;
	}
	if (!r->fin)
		return false;
	r->in_msg = false;
	if (r->msg_op == OP_BINARY) {
		ev->kind = WSF_BINARY;
		ev->len = (size_t)r->msg_len;
		return true;
	}
	buf_reserve(&r->msg, 0);
	r->msg.data[r->msg.len] = '\0';
	r->delivered = true;
	ev->kind = WSF_TEXT;
	ev->data = r->msg.data;
	ev->len = r->msg.len;
	return true;
}

size_t
wsframe_read(struct wsframe *r, const void *data, size_t len, struct wsframe_event *ev)
{
	const uint8_t *p = data;
	size_t off = 0;
	ev->code = 0;
	ev->data = NULL;
	ev->len = 0;
	if (r->delivered)
		wsframe_msg_done(r);
	for (;;) {
		if (r->state == WSF_ST_END) {
			ev->kind = WSF_END;
			ev->code = r->end_code;
			ev->data = r->end_reason;
			ev->len = strlen(r->end_reason);
			return off;
		}
		if (r->state == WSF_ST_HEADER) {
			const uint8_t *h = wsf_take_header(r, p, len, &off);
			if (h == NULL) {
				ev->kind = WSF_MORE;
				return off;
			}
			if (!wsf_header(r, h, ev))
				return off;
		}
		size_t n = r->left < len - off ? (size_t)r->left : len - off;
		if (n > 0) {
			if (r->opcode & 0x8) {
				wsf_unmask(r->ctrl + r->ctrl_len, p + off, n, r->key, r->phase);
				r->ctrl_len += n;
			} else {
				if (r->msg_op == OP_TEXT) {
					buf_reserve(&r->msg, n);
					wsf_unmask((uint8_t *)r->msg.data + r->msg.len, p + off, n,
					           r->key, r->phase);
					r->msg.len += n;
				}
				r->msg_len += n;
			}
			r->phase = (r->phase + (unsigned)n) & 3;
			r->left -= n;
			off += n;
		}
		if (r->left > 0) {
			ev->kind = WSF_MORE;
			return off;
		}
		if (wsf_frame_end(r, ev))
			return off;
	}
}
