/* store/store.h — the metadata store (prefix st_).
 *
 * One SQLite file recording, for every output of every executed action, its
 * metadata (downloaded or not), its state, and what topfetch wrote to disk,
 * plus the actions that produced them and which of those lost a blob.
 * README.md in this folder says what it owns and why it is built this way.
 *
 * Rules shared by every function below:
 *  - A store is used by one thread at a time; it is not thread-safe.
 *  - Functions that can fail return a negative errno-style code and fill err
 *    (if not NULL) with a sentence naming the store or the input.
 *  - Writes go into an open transaction that is committed every batch_ops
 *    writes, on st_flush() and on st_close(). A committed write survives a
 *    crash of the process (kill -9); the writes not yet committed are lost
 *    together, never half-applied. A commit that cannot be written (disk
 *    full) loses its batch and its error says how many writes went. Every
 *    function may block on disk I/O; a write blocks longer when it completes
 *    a batch.
 *  - Strings passed in are borrowed for the call and copied; nothing passed
 *    in is kept.
 */
#ifndef TF_CHECKER_STORE_H
#define TF_CHECKER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "core/core.h"

/* The newest schema version this build knows (PRAGMA user_version). */
#define ST_SCHEMA_VERSION 1

/* Caps on the strings of an output besides its path (TF__PATH_MAX). */
#define ST_LABEL_MAX 4096 /* target label */
#define ST_LINK_MAX 4096  /* symlink target */

/* Bounds on st_options. */
#define ST_BATCH_OPS_DEFAULT 250000u
#define ST_BATCH_OPS_MAX 10000000u
#define ST_CACHE_MIB_DEFAULT 128u
#define ST_CACHE_MIB_MAX 4096u

typedef struct st_store st_store;

typedef enum st_kind {
	ST_KIND_FILE = 0,      /* a file output */
	ST_KIND_DIRECTORY = 1, /* a directory output; hash/size are those of its Tree */
	ST_KIND_SYMLINK = 2,   /* a symlink output; no hash, size 0, symlink_target set */
	ST_KIND_TREE_FILE = 3, /* a file inside a directory output */
} st_kind;
#define ST_KIND_COUNT 4

typedef enum st_state {
	ST_REMOTE = 0,   /* metadata only: the bytes are in the remote cache */
	ST_FETCHING = 1, /* a download was started and has not finished */
	ST_LOCAL = 2,    /* on disk, verified; local says what we wrote */
	ST_LOST = 3,     /* the cache does not have the blob any more */
} st_state;
#define ST_STATE_COUNT 4

/* Names for messages ("file", "remote", ...); "invalid" for unknown values. */
const char *st_kind_name(st_kind k);
const char *st_state_name(st_state s);

/* What topfetch wrote at a path, to notice later changes behind its back.
 * ctime is not used: our own hard links for dedup change it. */
typedef struct st_local {
	int64_t size;
	int64_t mtime_ns;
	uint64_t ino;
	uint64_t dev;
} st_local;

/* Copies the fields st_local keeps from a stat result. Does not block. */
void st_local_from_stat(const struct stat *sb, st_local *out);

/* One output. For st_output_put the pointers are borrowed for the call and
 * state/local/build are ignored; in what the store hands back they point into
 * an st_record, or are NULL when absent. */
typedef struct st_output {
	const char *path;           /* exec-root relative, normalised, <= TF__PATH_MAX bytes */
	const char *hash;           /* 64 lowercase hex; NULL for symlinks */
	int64_t size;               /* 0..2^53; 0 for symlinks */
	bool executable;
	st_kind kind;
	const char *symlink_target; /* symlinks only (1..ST_LINK_MAX bytes), else NULL */
	const char *action_key;     /* producing action, 64 lowercase hex; NULL = unknown */
	const char *target;         /* producing target label (1..ST_LABEL_MAX bytes); NULL = unknown
				     * (read back: the action's label when the output has none) */
	st_state state;
	st_local local;             /* meaningful when state == ST_LOCAL, zero otherwise */
	uint64_t build;             /* generation (st_build_begin) when last injected */
} st_output;

/* Caller-owned storage for one output read back from the store: o's string
 * pointers point into the arrays below. */
typedef struct st_record {
	st_output o;
	char path[TF__PATH_MAX + 1];
	char hash[TF_HASH_HEX_LEN + 1];
	char symlink_target[ST_LINK_MAX + 1];
	char action_key[TF_HASH_HEX_LEN + 1];
	char target[ST_LABEL_MAX + 1];
} st_record;

/* One action; target is "" when unknown. */
typedef struct st_action {
	char key[TF_HASH_HEX_LEN + 1];
	char target[ST_LABEL_MAX + 1];
	bool lost;
	uint64_t build; /* generation when last put or marked */
} st_action;

/* One schema step: running sql on a store at version to_version - 1 brings it
 * to to_version. Steps run in one transaction each, with the version bump. */
typedef struct st_migration {
	int to_version;
	const char *sql;
} st_migration;

/* The built-in steps (1..ST_SCHEMA_VERSION); static storage. Does not block. */
const st_migration *st_schema_migrations(size_t *n);

typedef struct st_options {
	unsigned batch_ops; /* commit after this many writes (1..ST_BATCH_OPS_MAX) */
	unsigned cache_mib; /* SQLite page cache in MiB (1..ST_CACHE_MIB_MAX) */
	/* Tests only: steps to use instead of st_schema_migrations(), which must
	 * be numbered 1, 2, 3...; NULL means the built-in ones. Borrowed until
	 * st_open returns. */
	const st_migration *migrations;
	size_t n_migrations;
} st_options;

/* Fills *o with the defaults. Does not block. */
void st_options_init(st_options *o);

/* The PRAGMA statements st_open runs on every connection with opts (NULL:
 * the defaults), into buf (ST_PRAGMA_SQL_MAX bytes suffice): for a
 * benchmark peer that writes to a store file with the store's own settings.
 * Page size and WAL journaling are set once, when st_open creates the file.
 * Does not block. */
#define ST_PRAGMA_SQL_MAX 512
void st_pragma_sql(const st_options *opts, char *buf, size_t n);

/* ---- lifecycle ------------------------------------------------------------ */

/* Opens (creating if missing) the store at path and brings its schema up to
 * date; opts may be NULL for the defaults. Takes an exclusive lock on
 * "<path>.lock" first: a second opener, in this process or another, gets
 * -EBUSY naming the holder's pid. A store whose schema is newer than this
 * build is refused (-ENOTSUP) and left untouched. Returns a store the
 * caller frees with st_close, or NULL with err filled. Blocks on disk I/O
 * (crash recovery of the WAL included); never waits for the lock. */
st_store *st_open(const char *path, const st_options *opts, tf_error *err);

/* Commits the pending batch (a failure there is lost: call st_flush first to
 * see it), closes the file and releases the lock. Accepts NULL. Blocks on
 * disk I/O. */
void st_close(st_store *s);

/* Commits the pending batch now. Blocks on disk I/O. */
int st_flush(st_store *s, tf_error *err);

/* Writes made since the last commit. Does not block. */
unsigned st_pending(const st_store *s);

/* The store's file path; owned by the store. Does not block. */
const char *st_path(const st_store *s);

/* Starts a new build generation (persisted, strictly increasing across
 * restarts) and stores it in *build; later puts are stamped with it.
 * Commits at once, with the pending batch. Blocks on disk I/O. */
int st_build_begin(st_store *s, uint64_t *build, tf_error *err);

/* The current generation (0 before the first st_build_begin). Does not block. */
uint64_t st_build_current(const st_store *s);

/* Runs SQLite's integrity check over the whole file; 0 if sound, -EBADMSG
 * with the first problem otherwise. Commits the pending batch first. Blocks
 * while it reads the whole file. */
int st_integrity_check(st_store *s, tf_error *err);

/* ---- outputs -------------------------------------------------------------- */

/* Injects (inserts or updates) the metadata of one output, copying every
 * string, stamped with the current build. If what belongs on disk changed
 * (hash, size, executable bit, kind, symlink target), or the output was
 * LOST, its state goes back to REMOTE and its local record is dropped;
 * otherwise the state is kept. A NULL action_key or target keeps what the
 * store knew. An action key not seen before records the action too (with
 * this target). Counts as one write. */
int st_output_put(st_store *s, const st_output *o, tf_error *err);

/* Records o[0..n) as n calls of st_output_put would, in that order, with
 * fewer statement runs (rows go in groups of 32 to one multi-row UPSERT,
 * which costs about a quarter less per output). On an error the outputs
 * before the one it names are recorded, that one and the rest are not: an
 * invalid output is refused with the same message st_output_put gives; a
 * group that cannot be written is not written at all. Borrowed for the
 * call. Blocks on disk I/O. */
int st_outputs_put(st_store *s, const st_output *o, size_t n, tf_error *err);

/* Reads the output at path into the caller's *out. Returns 0, or -ENOENT
 * when the store has no such output. Blocks on disk reads. */
int st_output_get(st_store *s, const char *path, st_record *out, tf_error *err);

/* Sets the state of the output at path. local (copied) is required for
 * ST_LOCAL and must be NULL otherwise; leaving ST_LOCAL drops the local
 * record. With expect_hash not NULL the change applies only while the
 * output's hash is still that one (-ESTALE otherwise: the metadata changed
 * while the old blob was being fetched). -ENOENT if there is no such output.
 * Counts as one write. */
int st_output_set_state(st_store *s, const char *path, st_state state, const st_local *local,
			const char *expect_hash, tf_error *err);

/* Marks the output at path LOST and its producing action (if known) lost,
 * as one write, and copies the output into *out (may be NULL) for the
 * report naming the action and target. -ENOENT if there is no such output. */
int st_output_mark_lost(st_store *s, const char *path, st_record *out, tf_error *err);

/* Visited outputs; the pointers live until the callback returns. Return 0 to
 * go on, anything else to stop the iteration with that value. */
typedef int (*st_output_cb)(const st_output *o, void *user);

/* Calls cb for each output in state, each at most once, grouped by folder
 * (in no particular order otherwise). The callback may call any st_
 * function on the same store, writes included; an output whose state
 * changes before it is reached is visited only if it is still in that state
 * then. Returns 0 when done, the callback's value if it stopped, or a
 * negative error. Blocks on disk reads and the callback. */
int st_outputs_by_state(st_store *s, st_state state, st_output_cb cb, void *user, tf_error *err);

/* Counts the outputs in state, or all of them when state is -1, into *n.
 * Blocks while it scans. */
int st_outputs_count(st_store *s, int state, uint64_t *n, tf_error *err);

/* What st_output_check_local found. */
typedef enum st_check {
	ST_CHECK_SAME = 0,      /* the file is as we wrote it */
	ST_CHECK_CHANGED = 1,   /* size, mtime, inode, device, type or executable bit differ */
	ST_CHECK_MISSING = 2,   /* nothing at the path any more */
	ST_CHECK_NOT_LOCAL = 3, /* the store does not say it is on disk */
} st_check;

/* Compares the file at path below dirfd (the folder output paths are
 * relative to, walked without following symlinks) with what the store says
 * we wrote there. Returns an st_check value (>= 0), -ENOENT if the store has
 * no such output, or another negative error if it cannot look. Does not
 * change the store. Blocks on disk I/O. */
int st_output_check_local(st_store *s, int dirfd, const char *path, tf_error *err);

/* Finds a LOCAL output with the given hash, for dedup by hard link, into
 * *out. With dirfd >= 0 each candidate is checked on disk first and those
 * changed or missing are set back to REMOTE (writes) and skipped; with
 * dirfd < 0 the first candidate is returned unchecked. Returns 1 when found,
 * 0 when none. Blocks on disk I/O. */
int st_find_local(st_store *s, const char *hash, int dirfd, st_record *out, tf_error *err);

/* ---- actions -------------------------------------------------------------- */

/* Records (or refreshes) an action by its key, with its target label (NULL =
 * unknown, keeps what the store knew), stamped with the current build. Keeps
 * its lost mark. Counts as one write. */
int st_action_put(st_store *s, const char *key, const char *target, tf_error *err);

/* Reads an action into the caller's *out. Returns 0, or -ENOENT if unknown.
 * Blocks on disk reads. */
int st_action_get(st_store *s, const char *key, st_action *out, tf_error *err);

/* Marks an action lost (recording it if unknown): in proxy mode its next
 * lookup must be a cache miss. Counts as one write. */
int st_action_mark_lost(st_store *s, const char *key, tf_error *err);

/* Clears the lost mark, when a new result for the action was seen. Unknown
 * actions are left alone. Counts as one write. */
int st_action_clear_lost(st_store *s, const char *key, tf_error *err);

/* Returns 1 if the action is marked lost, 0 if not or unknown. Blocks on
 * disk reads. */
int st_action_is_lost(st_store *s, const char *key, tf_error *err);

/* ---- recovery after a restart or a crash ---------------------------------- */

/* Calls cb for every output left FETCHING by a previous run, so the caller
 * can queue it again (the state stays FETCHING; removing stale temporary
 * files is the downloader's job). Same contract as st_outputs_by_state. */
int st_recover_fetching(st_store *s, st_output_cb cb, void *user, tf_error *err);

/* Checks every LOCAL output on disk below dirfd as st_output_check_local
 * does and sets those changed or missing back to REMOTE (writes), counting
 * them into *demoted (may be NULL). Blocks while it stats every file. */
int st_recover_verify_local(st_store *s, int dirfd, uint64_t *demoted, tf_error *err);

#endif
