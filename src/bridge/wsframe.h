/* wsframe.h — the Bridge's WebSocket frame reader: the server side of
 * RFC 6455 5.2 for what a client sends.  It parses frame headers (the 7,
 * 16 and 64-bit length forms), requires masking, unmasks eight bytes at a
 * time straight into the message being gathered, puts fragments together
 * with control frames between them, checks a text message's UTF-8 frame by
 * frame and the whole message's size, and reports one thing at a time: a
 * message, a ping, a pong, the peer's close, or the rule the peer broke
 * with the close code to answer (1002, 1007, 1009).  No sockets, no
 * sending: http.c answers (pongs, closes) through wslay.
 *
 * Why not wslay's reader (wslay_event_recv): it runs a UTF-8 automaton one
 * byte at a time over every text payload, unmasks one byte at a time, and
 * takes its input through a copy into a buffer of its own.  On the
 * Bridge's message benchmark (about 330-byte frames) that was about 3,900
 * instructions per frame received, a quarter of the loop's instructions
 * per WebSocket message, against about 600 here; with this reader alone
 * the WebSocket agents' rate went from 0.70x to 0.86-0.90x that of child
 * processes in quiet alternating runs (docs/PERFORMANCE.md, "WebSocket
 * frames read without wslay's byte loops").  wslay has no setting to skip
 * its UTF-8 check. */
#ifndef DREAMOS_WSFRAME_H
#define DREAMOS_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum wsframe_kind {
	WSF_MORE,   /* the input is used up and nothing is complete yet */
	WSF_TEXT,   /* a whole text message: data, len (valid UTF-8, NUL-terminated) */
	WSF_BINARY, /* a whole binary message: len only (its bytes are not kept) */
	WSF_PING,   /* data, len: the payload a pong must carry back */
	WSF_PONG,   /* data, len */
	WSF_CLOSE,  /* the peer's close: code (1005 for none), data/len its reason */
	WSF_ERROR,  /* the peer broke a rule: code (1002, 1007, 1009), data the reason */
	WSF_END,    /* a close or an error was reported: nothing more is read */
};

struct wsframe_event {
	enum wsframe_kind kind;
	int code;         /* WSF_CLOSE, WSF_ERROR */
	const char *data; /* valid until the next wsframe_read or wsframe_msg_done */
	size_t len;
};

enum wsframe_state { WSF_ST_HEADER, WSF_ST_PAYLOAD, WSF_ST_END };

/* A reader; its fields are private to wsframe.c. */
struct wsframe {
	size_t max_msg; /* a message's size limit (all its frames) */
	enum wsframe_state state;
	/* The current frame. */
	uint8_t hdr[14]; /* its header while it arrives in pieces */
	unsigned hlen;
	uint8_t opcode;
	bool fin;
	uint8_t key[4];
	unsigned phase; /* payload bytes read so far, mod 4 */
	uint64_t left;  /* payload bytes still to come */
	/* The data message (text or binary) being gathered. */
	bool in_msg;
	uint8_t msg_op;
	uint64_t msg_len; /* its size so far (a binary one is not kept) */
	size_t utf8_done; /* msg.data[0..utf8_done) is checked UTF-8 */
	bool delivered;   /* msg was reported: cleared on the next read */
	struct buf msg;
	/* A control frame's payload. */
	uint8_t ctrl[126];
	size_t ctrl_len;
	/* What ended reading (WSF_CLOSE or WSF_ERROR), reported again as WSF_END. */
	int end_code;
	const char *end_reason;
};

/* Sets up r for messages of at most max_msg bytes. */
void wsframe_init(struct wsframe *r, size_t max_msg);
/* Frees what r holds (not r). */
void wsframe_free(struct wsframe *r);
/* Reads frames from data[0..len) until something is complete (a message,
 * a control frame) or the input is used up, which is WSF_MORE (a frame cut
 * short is kept in r: pass the bytes that follow next time).  Fills ev and
 * returns the bytes used.  After WSF_CLOSE or WSF_ERROR nothing more is
 * read (WSF_END, 0 bytes used). */
size_t wsframe_read(struct wsframe *r, const void *data, size_t len, struct wsframe_event *ev);
/* Says the caller is done with a WSF_TEXT event's data: the buffer is
 * emptied (and given back if it grew past 64 KiB).  The next wsframe_read
 * does it otherwise. */
void wsframe_msg_done(struct wsframe *r);

#endif
