/* fuzz-ws.c — a libFuzzer target for the Bridge's WebSocket side (http.c,
 * its frame reader wsframe.c, wslay for sending): frames from the peer on
 * an upgraded test connection (http_conn_test_new / http_conn_feed, no
 * sockets), fragmentation, control frames between fragments, the close
 * handshake, size limits, back-pressure (reading paused and resumed) and
 * messages sent back; and the same bytes given to a frame reader of its
 * own, whole and in the pieces of the mode, which must report the same.
 * fuzz-http covers the HTTP side (and raw bytes after an upgrade); this
 * target spends its time past the handshake.
 *
 * Input: the first byte is the mode, the rest the frames.
 *   bit 0     0: the rest is frame descriptions, turned into well-formed
 *             masked frames (so that the fuzzer need not learn masking);
 *             1: the rest is fed as raw bytes
 *   bits 1-3  the frames are fed in pieces of 1, 2, 3, 7, 16, 64, 500 or
 *             all at once
 *   bit 4     each text message is echoed twice and a large one sent
 *   bit 5     reading is paused after each message and resumed after the
 *             next piece
 *   bit 6     the server starts a close after the second message
 * A frame description: byte A = FIN, RSV1-3 and opcode as on the wire;
 * byte B: bits 0-6 the payload length L, bit 7 set: L * 37 bytes (to pass
 * 125 and the 16-bit length form); then the payload bytes (padded with
 * 'x' if the input runs out).  Every frame is masked with a key taken from
 * the input position.
 * Checks: what the server writes after its 101 is a sequence of complete,
 * unmasked frames with valid opcodes and no reserved bits, control frames
 * final and at most 125 bytes; the frame reader reports the same events
 * however its input is cut, text messages NUL-terminated, valid UTF-8 and
 * within the limit, close codes a peer may send, errors 1002/1007/1009. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-check.h"
#include "http.h"
#include "util.h"
#include "wsframe.h"

struct state {
	uint8_t mode;
	struct ws_conn *ws;
	unsigned messages;
	bool paused;
	bool closed;
};

static void
on_message(void *arg, struct ws_conn *ws, const char *data, size_t len)
{
	struct state *st = arg;
	st->messages++;
	FUZZ_CHECK(!(data[len] != '\0')); /* messages are NUL-terminated */
	ws_send_text(ws, data, len);
	if (st->mode & 0x10) {
		static char big[70000];
		memset(big, 'b', sizeof big);
		ws_send_text(ws, data, len);
		ws_send_text(ws, big, st->messages % 2 ? 200 : sizeof big);
	}
	(void)ws_queued(ws);
	(void)ws_peer(ws);
	if ((st->mode & 0x20) && !st->paused) {
		ws_set_reading(ws, false);
		st->paused = true;
	}
	if ((st->mode & 0x40) && st->messages == 2)
		ws_close(ws, 1000, "enough");
}

static void
on_close(void *arg, struct ws_conn *ws, int code, const char *reason)
{
	struct state *st = arg;
	FUZZ_CHECK(!(st->closed || code < 1000 || code > 4999)); /* once, with a real code */
	st->closed = true;
	st->ws = NULL;
	(void)reason;
}

static void
handler(void *arg, struct http_request *req)
{
	struct state *st = arg;
	if (req->upgrade_websocket)
		st->ws = http_upgrade_websocket(req, on_message, on_close, st);
	else
		http_respond(req, 404, "text/plain", "no", 2, NULL);
}

/* Turns frame descriptions into masked frames; returns a malloc'd buffer. */
static uint8_t *
build_frames(const uint8_t *d, size_t n, size_t *outlen)
{
	size_t cap = 256, len = 0;
	uint8_t *out = malloc(cap);
	size_t i = 0;
	while (i + 2 <= n) {
		uint8_t a = d[i], b = d[i + 1];
		size_t plen = b & 0x7f;
		if (b & 0x80)
			plen *= 37;
		i += 2;
		if (len + plen + 14 > cap) {
			cap = (len + plen + 14) * 2;
			out = realloc(out, cap);
		}
		out[len++] = a;
		if (plen <= 125) {
			out[len++] = 0x80 | (uint8_t)plen;
		} else {
			out[len++] = 0x80 | 126;
			out[len++] = (uint8_t)(plen >> 8);
			out[len++] = (uint8_t)plen;
		}
		uint8_t key[4] = {(uint8_t)i, (uint8_t)(i >> 8), 0x5a, (uint8_t)(plen ^ 0xa5)};
		memcpy(out + len, key, 4);
		len += 4;
		for (size_t k = 0; k < plen; k++) {
			uint8_t c = i < n ? d[i++] : 'x';
			out[len++] = c ^ key[k % 4];
		}
	}
	*outlen = len;
	return out;
}

/* Checks the server's frames in out (after the 101 response). */
static void
check_output(const uint8_t *out, size_t len)
{
	const uint8_t *end = (const uint8_t *)memmem(out, len, "\r\n\r\n", 4);
	if (len == 0)
		return;
	FUZZ_CHECK(!(end == NULL || memcmp(out, "HTTP/1.1 101", 12) != 0));
	size_t off = (size_t)(end + 4 - out);
	while (off < len) {
		FUZZ_CHECK(!(len - off < 2));
		const uint8_t *h = out + off;
		bool fin = (h[0] & 0x80) != 0;
		unsigned rsv = h[0] & 0x70, op = h[0] & 0x0f;
		FUZZ_CHECK(!((h[1] & 0x80) || rsv != 0)); /* servers never mask; no extensions */
		FUZZ_CHECK(!(op != 0 && op != 1 && op != 2 && op != 8 && op != 9 && op != 10));
		uint64_t plen = h[1] & 0x7f;
		size_t hlen = 2;
		if (plen == 126) {
			FUZZ_CHECK(!(len - off < 4));
			plen = ((uint64_t)h[2] << 8) | h[3];
			hlen = 4;
		} else if (plen == 127) {
			FUZZ_CHECK(!(len - off < 10));
			plen = 0;
			for (int i = 0; i < 8; i++)
				plen = (plen << 8) | h[2 + i];
			hlen = 10;
		}
		FUZZ_CHECK(!((op & 8) && (!fin || plen > 125)));
		FUZZ_CHECK(!(plen > len - off - hlen)); /* a frame cut short */
		off += hlen + (size_t)plen;
	}
}

/* Feeds in[0..len) to a new frame reader in pieces of step bytes, checks
 * each event and appends it to log (kind, code, length, FNV-1a of the
 * data). */
static void
read_frames(const uint8_t *in, size_t len, size_t step, size_t max, struct buf *log)
{
	struct wsframe r;
	wsframe_init(&r, max);
	bool ended = false;
	for (size_t off = 0; off < len && !ended;) {
		size_t n = len - off < step ? len - off : step;
		size_t used = 0;
		while (used < n) {
			struct wsframe_event ev;
			size_t k = wsframe_read(&r, in + off + used, n - used, &ev);
			FUZZ_CHECK(k <= n - used);
			used += k;
			if (ev.kind == WSF_MORE) {
				FUZZ_CHECK(used == n); /* all input is taken */
				break;
			}
			FUZZ_CHECK(ev.kind != WSF_END); /* reported once, then not read */
			uint32_t h = 2166136261u;
			for (size_t i = 0; i < ev.len && ev.data != NULL; i++)
				h = (h ^ (uint8_t)ev.data[i]) * 16777619u;
			buf_addf(log, "%d/%d/%zu/%08x ", (int)ev.kind, ev.code, ev.len, h);
			switch (ev.kind) {
			case WSF_TEXT:
				FUZZ_CHECK(ev.data[ev.len] == '\0');
				FUZZ_CHECK(ev.len <= max);
				FUZZ_CHECK(utf8_valid(ev.data, ev.len));
				break;
			case WSF_BINARY:
				FUZZ_CHECK(ev.len <= max);
				break;
			case WSF_PING:
			case WSF_PONG:
				FUZZ_CHECK(ev.len <= 125);
				break;
			case WSF_CLOSE:
				FUZZ_CHECK(ev.code == 1005 ||
				           (ev.code >= 1000 && ev.code <= 1011) ||
				           (ev.code >= 3000 && ev.code <= 4999));
				FUZZ_CHECK(ev.len <= 123 && utf8_valid(ev.data, ev.len));
				ended = true;
				break;
			case WSF_ERROR:
				FUZZ_CHECK(ev.code == 1002 || ev.code == 1007 || ev.code == 1009);
				FUZZ_CHECK(ev.len > 0 && ev.len <= 123);
				ended = true;
				break;
			default:
				break;
			}
			if (ended) {
				struct wsframe_event again;
				FUZZ_CHECK(wsframe_read(&r, in, len, &again) == 0);
				FUZZ_CHECK(again.kind == WSF_END && again.code == ev.code);
				break;
			}
		}
		off += n;
	}
	wsframe_free(&r);
}

/* The frame reader reports the same whole and in pieces. */
static void
check_reader(const uint8_t *in, size_t len, size_t step, size_t max)
{
	struct buf whole, pieces;
	buf_init(&whole);
	buf_init(&pieces);
	read_frames(in, len, SIZE_MAX, max, &whole);
	read_frames(in, len, step, max, &pieces);
	FUZZ_CHECK(whole.len == pieces.len &&
	           (whole.len == 0 || memcmp(whole.data, pieces.data, whole.len) == 0));
	buf_free(&whole);
	buf_free(&pieces);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t pieces[8] = {1, 2, 3, 7, 16, 64, 500, SIZE_MAX};
	if (size == 0)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;
	struct http_limits l;
	http_limits_default(&l);
	l.max_ws_message = 4096;
	struct state st = {.mode = mode};
	struct http_conn *c = http_conn_test_new(&l, handler, &st);
	static const char up[] = "GET /ws HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\n"
	                         "Connection: Upgrade\r\n"
	                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                         "Sec-WebSocket-Version: 13\r\n\r\n";
	http_conn_feed(c, up, sizeof up - 1);
	FUZZ_CHECK(st.ws != NULL);

	uint8_t *frames = NULL;
	const uint8_t *in = data;
	size_t inlen = size;
	if (!(mode & 1)) {
		frames = build_frames(data, size, &inlen);
		in = frames;
	}
	size_t step = pieces[(mode >> 1) & 7];
	check_reader(in, inlen, step, l.max_ws_message);
	for (size_t off = 0; off < inlen;) {
		size_t n = inlen - off < step ? inlen - off : step;
		http_conn_feed(c, (const char *)in + off, n);
		off += n;
		if (st.paused && st.ws != NULL) {
			st.paused = false;
			ws_set_reading(st.ws, true);
		}
	}
	if (st.paused && st.ws != NULL)
		ws_set_reading(st.ws, true);
	size_t outlen;
	const char *out = http_conn_test_output(c, &outlen);
	check_output((const uint8_t *)out, outlen);
	(void)http_conn_test_closed(c);
	http_conn_test_free(c);
	FUZZ_CHECK(st.closed); /* on_close always runs */
	free(frames);
	return 0;
}
