/* packtab.h — packed tables: many rows in one SQLite row, read back as rows
 * through a virtual table.
 *
 * SQLite spends most of a small row's cost on the row itself (the record,
 * the b-tree cell, the statement); for the bus, whose messages are written
 * once and never changed, that was the store thread's whole time per
 * message, and a bare one-row-per-message table could not reach Redis
 * pub/sub on this hardware (docs/PERFORMANCE.md).  So each commit's
 * messages go into one row of the block table (message_blocks: first_id,
 * last_id, data), and `messages` is an eponymous virtual table that reads
 * them back as the rows they were: every query on it (history, recovery,
 * dead letters, verify) is unchanged, and a constraint or ORDER BY on id
 * goes straight to the right blocks.
 *
 * A block (the data column) is: the bytes 'P', PACKTAB_VERSION, the
 * column count; then rows, each a varint of its length in bytes and its
 * values in column order, each one byte of type and its payload:
 *   0 NULL;  1 an integer, zigzag varint;  2 text, a varint length and
 *   the UTF-8 bytes.
 * Varints are LEB128 (7 bits a byte, low first).  Column 0 is the key:
 * an integer, strictly increasing through a block and across blocks in
 * first_id order, and the block's first_id and last_id are its first and
 * last keys.
 *
 * The virtual table exists on connections where packtab_register ran:
 * dreamos's own, and the sqlite3 shell or any program that loads the
 * dreamos_sqlite module (`.load .../dreamos_sqlite`, built from this file). */
#ifndef DREAMOS_PACKTAB_H
#define DREAMOS_PACKTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PACKTAB_VERSION  1
#define PACKTAB_COLS_MAX 16

enum packtab_type { PACKTAB_NULL = 0, PACKTAB_INT = 1, PACKTAB_TEXT = 2 };

/* One value of a row: an integer (i), or text (s, len bytes, not
 * NUL-terminated), or NULL. */
struct packtab_val {
	enum packtab_type type;
	int64_t i;
	const char *s;
	size_t len;
};

/* One packed table: the virtual table `name` over the blocks of `blocks`,
 * with the columns of `decl` (a CREATE TABLE x(...) for
 * sqlite3_declare_vtab; column 0 the key). */
struct packtab {
	const char *name;
	const char *blocks;
	const char *decl;
	int ncols;
	const char *op;     /* what a queued row is, for fault hooks and errors */
	const char *insert; /* a block's INSERT: ?1 first key, ?2 last key, ?3 the block */
	/* The newest key stored (no row if none): the last key of the block
	 * that starts last (keys grow, and first_id is the primary key, where
	 * max(last_id) would read every block). */
	const char *last_key;
};

/* The packed tables of the schema (store.c writes them). */
extern const struct packtab packtab_messages;

/* Block encoding, for the writer: appends to out (grown with realloc; *cap
 * its size) at *len; returns 0, or -1 out of memory. */
int packtab_begin(char **out, size_t *len, size_t *cap, int ncols);
int packtab_add_row(char **out, size_t *len, size_t *cap, const struct packtab_val *v, int n);

/* Decodes the row at p (end: the block's end) into v[0..ncols): the
 * number of bytes it takes, or 0 if it is malformed.  Text values point
 * into p. */
size_t packtab_row(const unsigned char *p, const unsigned char *end, int ncols,
                   struct packtab_val *v);

struct sqlite3;
struct sqlite3_stmt;
/* Makes every packed table readable on db (its module, eponymous).
 * Returns a SQLite code. */
int packtab_register(struct sqlite3 *db);

/* The table keeps a prepared statement or two of its own between queries
 * (finalised when the connection closes); their SQL starts with this
 * mark, and packtab_owns tells them from the caller's. */
#define PACKTAB_SQL_MARK "/* packtab */ "
bool packtab_owns(struct sqlite3_stmt *stmt);

#endif
