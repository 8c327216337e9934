/* core/ — small internals every layer shares: the error record helper,
 * digest checks, hex, capped buffers and confined paths. Private to the
 * library (prefix tf__); the public contract is include/topfetch.h. */
#ifndef TF_CORE_H
#define TF_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "topfetch.h"

#define TF__PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Fills err (if not NULL) with code and a formatted message; returns code so
 * callers can write `return tf__errf(err, -EINVAL, "...")`. */
int tf__errf(tf_error *err, int code, const char *fmt, ...) TF__PRINTF(3, 4);

/* Prefixes an already filled error message with more context. Returns err->code. */
int tf__err_prefix(tf_error *err, const char *fmt, ...) TF__PRINTF(2, 3);

/* Largest blob size we accept from any input (2^53, what JSON can carry). */
#define TF__MAX_BLOB_SIZE ((int64_t)1 << 53)

/* Paths: at most this long, each component at most NAME_MAX. */
#define TF__PATH_MAX 4096
#define TF__NAME_MAX 255

/* True if s is exactly 64 lowercase hex digits. */
bool tf__is_sha256_hex(const char *s, size_t len);

/* Writes 2*n lowercase hex digits and a NUL into out. */
void tf__hex(const unsigned char *in, size_t n, char *out);

/* Reads 2*n lowercase hex digits into n bytes; false at the first character
 * that is not one (uppercase included), with out partly written. */
bool tf__unhex(const char *in, size_t n, unsigned char *out);

/* Checks that path is relative and normalised: no leading '/', no empty,
 * "." or ".." component, no NUL, lengths within TF__PATH_MAX/TF__NAME_MAX.
 * `what` names the input in the message ("manifest line 3"). */
int tf__path_check(const char *path, const char *what, tf_error *err);

/* Opens the folder that will hold `path` below rootfd, walking one component
 * at a time with O_NOFOLLOW so that no symlink on the way is followed, and
 * creating missing folders (mode 0755) when create is true. Returns a new
 * O_DIRECTORY fd and points *leaf at the last component of path. The path
 * must have passed tf__path_check. */
int tf__open_parent_beneath(int rootfd, const char *path, bool create, const char **leaf,
			    tf_error *err);

/* Monotonic clock in nanoseconds. */
uint64_t tf__now_ns(void);

/* A growable byte buffer with a hard cap (curl's dynbuf idea). */
typedef struct tf__buf {
	unsigned char *data;
	size_t len, alloc, cap;
} tf__buf;

void tf__buf_init(tf__buf *b, size_t cap);
/* Makes room for n more bytes (b->len unchanged): -E2BIG past the cap, -ENOMEM. */
int tf__buf_reserve(tf__buf *b, size_t n);
/* Appends n bytes; -E2BIG if that would pass the cap, -ENOMEM. */
int tf__buf_append(tf__buf *b, const void *p, size_t n);
void tf__buf_reset(tf__buf *b);
void tf__buf_fini(tf__buf *b);
/* Appends s as a JSON string (RFC 8259): quotes, backslashes and control
 * characters escaped, bytes that are not UTF-8 (a path from a BEP may hold
 * any) as U+FFFD; NULL as null. -E2BIG past the cap, -ENOMEM. (The BEP's
 * JSON writer escapes as Gson does, in events/.) */
int tf__buf_json_string(tf__buf *b, const char *s);

/* THE hash map: keys are byte strings (copied; string keys through the
 * plain calls, any bytes through the ...n calls), values are borrowed. */
typedef struct tf__map_entry {
	struct tf__map_entry *next;
	uint64_t hash;
	size_t len;
	void *value;
	char key[]; /* len bytes, then a NUL */
} tf__map_entry;

typedef struct tf__map {
	tf__map_entry **buckets;
	size_t nbuckets, n;
} tf__map;

void tf__map_init(tf__map *m);
/* Frees the entries (not the values). */
void tf__map_fini(tf__map *m);
void *tf__map_get(const tf__map *m, const char *key);
void *tf__map_getn(const tf__map *m, const void *key, size_t len);
/* Sets key to value (replacing); -ENOMEM. */
int tf__map_put(tf__map *m, const char *key, void *value);
int tf__map_putn(tf__map *m, const void *key, size_t len, void *value);
/* Removes key; returns its value or NULL. */
void *tf__map_remove(tf__map *m, const char *key);
void *tf__map_removen(tf__map *m, const void *key, size_t len);
/* Calls fn for each entry (no changes to m meanwhile). */
void tf__map_each(const tf__map *m, void (*fn)(const char *key, void *value, void *user), void *user);

/* ---- credjson.c: the answer of a credential helper (Bazel's protocol) ---- */

#define TF__CRED_ANSWER_MAX (256 * 1024) /* bytes of an answer read */
#define TF__CRED_STRING_MAX (64 * 1024)  /* bytes of one string */
#define TF__CRED_HEADERS_MAX 64          /* header values in one answer */
#define TF__CRED_DEPTH_MAX 32            /* nesting of ignored values */

typedef struct tf__cred_header {
	char *name, *value;
} tf__cred_header;

typedef struct tf__cred_answer {
	tf__cred_header *v; /* one per value: a header with two values is two entries */
	size_t n;
	bool has_expires;
	char expires[64]; /* as written, NUL-terminated; checked by the caller */
} tf__cred_answer;

/* Reads {"headers": {"Name": ["value", ...]}, "expires": "..."} strictly
 * (RFC 8259; other keys ignored). 0, or -EBADMSG with why naming what was
 * wrong and the byte offset (never the text: it holds secrets). Every
 * answer is freed with tf__cred_answer_fini. Does not block. */
int tf__cred_answer_parse(const void *data, size_t len, tf__cred_answer *a, char *why, size_t why_len);
/* Frees what the answer holds, wiping the values. */
void tf__cred_answer_fini(tf__cred_answer *a);

#endif
