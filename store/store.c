/* store/store.c — the SQLite metadata store. See store.h and README.md.
 *
 * Cleanup style: one `out:` label per function that owns resources. */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#if SQLITE_VERSION_NUMBER < 3035000
#error "the store needs SQLite 3.35 or newer"
#endif

/* PRAGMA application_id of a topfetch store: "TFst". Tells our files from
 * other SQLite databases someone pointed --store at. */
#define ST_APP_ID 0x54467374

/* The page size of new stores. Measured with bench/store at a million
 * outputs inserted in random order: 32 KiB pages take ~15% less CPU per
 * output than 8 KiB ones (a shallower tree, fewer splits); the price is
 * that a small commit writes whole 32 KiB pages to the WAL. */
#define ST_PAGE_SIZE 32768

/* Checkpoint the WAL into the main file when it holds this many pages
 * (256 MiB): each checkpoint fsyncs and copies every page changed since the
 * last one, and SQLite's default (1000 pages) checkpoints far too often for
 * the insert rate we need. The WAL file is cut back to ST_WAL_SIZE_LIMIT
 * after a checkpoint. */
#define ST_WAL_CHECKPOINT_PAGES (256 * 1024 * 1024 / ST_PAGE_SIZE)
#define ST_WAL_SIZE_LIMIT (64 * 1024 * 1024)

/* Folder ids cached in memory (direct-mapped by a hash of the folder path). */
#define ST_DIR_SLOTS 8192

/* ---- schema ----------------------------------------------------------------
 *
 * Size per output is what sets the insert rate (how much of the file stays
 * in the page cache, how many pages a batch dirties), so an output row holds
 * no repeated text: its folder is an id into `dirs` (a million outputs live
 * in a few thousand folders), its action an id into `actions`, and its
 * target label only when it differs from its action's. Hashes and action
 * keys are 32-byte blobs. `outputs` is WITHOUT ROWID, keyed by (folder,
 * name), so a plain insert touches one B-tree. The two indexes are partial
 * and cover only rows that are not REMOTE, so injecting metadata (nearly
 * every write) never updates them. */
static const st_migration migrations_builtin[] = {
	{ 1,
	  "CREATE TABLE meta("
	  "  key TEXT PRIMARY KEY NOT NULL,"
	  "  value INTEGER NOT NULL"
	  ") WITHOUT ROWID;"
	  "INSERT INTO meta(key, value) VALUES('build', 0);"
	  "CREATE TABLE dirs("
	  "  id INTEGER PRIMARY KEY,"
	  "  path TEXT NOT NULL UNIQUE"
	  ");"
	  "CREATE TABLE actions("
	  "  id INTEGER PRIMARY KEY,"
	  "  key BLOB NOT NULL UNIQUE,"
	  "  target TEXT,"
	  "  lost INTEGER NOT NULL,"
	  "  build INTEGER NOT NULL"
	  ");"
	  "CREATE TABLE outputs("
	  "  dir INTEGER NOT NULL,"
	  "  name TEXT NOT NULL,"
	  "  hash BLOB,"
	  "  size INTEGER NOT NULL,"
	  "  exec INTEGER NOT NULL,"
	  "  kind INTEGER NOT NULL,"
	  "  link TEXT,"
	  "  action INTEGER,"
	  "  target TEXT,"
	  "  state INTEGER NOT NULL,"
	  "  l_size INTEGER,"
	  "  l_mtime INTEGER,"
	  "  l_ino INTEGER,"
	  "  l_dev INTEGER,"
	  "  build INTEGER NOT NULL,"
	  "  PRIMARY KEY(dir, name)"
	  ") WITHOUT ROWID;"
	  "CREATE INDEX outputs_by_state ON outputs(state, dir, name) WHERE state <> 0;"
	  "CREATE INDEX outputs_local_by_hash ON outputs(hash, dir, name) WHERE state = 2;" },
};

#define N_BUILTIN (sizeof(migrations_builtin) / sizeof(migrations_builtin[0]))

_Static_assert(N_BUILTIN == ST_SCHEMA_VERSION, "one migration step per schema version");
_Static_assert(ST_REMOTE == 0 && ST_LOCAL == 2 && ST_LOST == 3,
	       "state numbers are part of the schema (the partial indexes and SQL below)");

const st_migration *st_schema_migrations(size_t *n)
{
	if (n)
		*n = N_BUILTIN;
	return migrations_builtin;
}

/* ---- statements -------------------------------------------------------- */

/* What every read of an output selects; read_output() knows the order. */
#define OUT_COLS                                                                         \
	"d.path, o.name, o.hash, o.size, o.exec, o.kind, o.link, a.key, "               \
	"coalesce(o.target, a.target), o.state, o.l_size, o.l_mtime, o.l_ino, o.l_dev, " \
	"o.build, o.dir"
#define OUT_FROM                                  \
	" FROM outputs o JOIN dirs d ON d.id = o.dir " \
	"LEFT JOIN actions a ON a.id = o.action "

/* The bytes on disk stay valid only if nothing that is materialised changed
 * and the blob was not lost; evaluated on the old row in DO UPDATE. */
#define SAME_CONTENT                                                                  \
	"(hash IS excluded.hash AND size = excluded.size AND exec = excluded.exec AND " \
	"kind = excluded.kind AND link IS excluded.link AND state <> 3)"

/* Putting outputs: an UPSERT. keep is true when the caller does not know
 * the target: the one stored stays. */
#define OUT_PUT_INTO                                                                        \
	"INSERT INTO outputs(dir, name, hash, size, exec, kind, link, action, target, state, " \
	"l_size, l_mtime, l_ino, l_dev, build) VALUES"
#define OUT_PUT_UPSERT(keep)                                                         \
	" ON CONFLICT(dir, name) DO UPDATE SET "                                     \
	"state = CASE WHEN " SAME_CONTENT " THEN state ELSE 0 END, "                \
	"l_size = CASE WHEN " SAME_CONTENT " THEN l_size END, "                     \
	"l_mtime = CASE WHEN " SAME_CONTENT " THEN l_mtime END, "                   \
	"l_ino = CASE WHEN " SAME_CONTENT " THEN l_ino END, "                       \
	"l_dev = CASE WHEN " SAME_CONTENT " THEN l_dev END, "                       \
	"hash = excluded.hash, size = excluded.size, exec = excluded.exec, "        \
	"kind = excluded.kind, link = excluded.link, "                              \
	"action = coalesce(excluded.action, action), "                              \
	"target = CASE WHEN " keep " THEN target ELSE excluded.target END, build = excluded.build"
/* st_outputs_put: this many rows per statement, parameters in the order of
 * OUT_ROW_PARAMS. Each statement run costs a fixed share (opening cursors,
 * halting, freeing its registers) that a single-row UPSERT pays per output;
 * measured with callgrind, 32 rows per run take about a quarter less than
 * 32 runs of one row. */
#define ST_PUT_ROWS 32
#define OUT_ROW_PARAMS 10
#define OUT_ROW "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, NULL, NULL, ?)"

enum {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_DIR_GET,
	S_DIR_ADD,
	S_OUT_PUT,
	S_OUT_GET,
	S_OUT_SET_STATE,
	S_OUT_NEXT_REMOTE,
	S_OUT_NEXT_STATE,
	S_OUT_NEXT_LOCAL_HASH,
	S_OUT_COUNT_ALL,
	S_OUT_COUNT_STATE,
	S_ACT_FIND,
	S_ACT_ADD,
	S_ACT_UPDATE,
	S_ACT_GET,
	S_ACT_MARK_LOST,
	S_ACT_CLEAR_LOST,
	S_ACT_IS_LOST,
	S_META_SET_BUILD,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_DIR_GET] = "SELECT id FROM dirs WHERE path = ?1",
	[S_DIR_ADD] = "INSERT INTO dirs(path) VALUES(?1)",
	/* ?11 true: the caller does not know the target, keep the one stored. */
	[S_OUT_PUT] = OUT_PUT_INTO "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, NULL, NULL, NULL, NULL, ?10)"
		OUT_PUT_UPSERT("?11"),
	[S_OUT_GET] = "SELECT " OUT_COLS OUT_FROM "WHERE o.dir = ?1 AND o.name = ?2",
	[S_OUT_SET_STATE] =
		"UPDATE outputs SET state = ?3, l_size = ?4, l_mtime = ?5, l_ino = ?6, l_dev = ?7 "
		"WHERE dir = ?1 AND name = ?2 AND (?8 IS NULL OR hash = ?8)",
	/* Keyset pagination: one row per step, so nothing is held open while
	 * the caller's callback runs (and may write). */
	[S_OUT_NEXT_REMOTE] = "SELECT " OUT_COLS OUT_FROM
			      "WHERE o.state = 0 AND (o.dir, o.name) > (?1, ?2) "
			      "ORDER BY o.dir, o.name LIMIT 1",
	[S_OUT_NEXT_STATE] = "SELECT " OUT_COLS
			     " FROM outputs o INDEXED BY outputs_by_state JOIN dirs d ON d.id = o.dir "
			     "LEFT JOIN actions a ON a.id = o.action "
			     "WHERE o.state = ?3 AND o.state <> 0 AND (o.dir, o.name) > (?1, ?2) "
			     "ORDER BY o.state, o.dir, o.name LIMIT 1",
	[S_OUT_NEXT_LOCAL_HASH] = "SELECT " OUT_COLS
				  " FROM outputs o INDEXED BY outputs_local_by_hash "
				  "JOIN dirs d ON d.id = o.dir LEFT JOIN actions a ON a.id = o.action "
				  "WHERE o.hash = ?3 AND o.state = 2 AND (o.dir, o.name) > (?1, ?2) "
				  "ORDER BY o.hash, o.dir, o.name LIMIT 1",
	[S_OUT_COUNT_ALL] = "SELECT count(*) FROM outputs",
	[S_OUT_COUNT_STATE] = "SELECT count(*) FROM outputs WHERE state = ?1",
	[S_ACT_FIND] = "SELECT id, target FROM actions WHERE key = ?1",
	[S_ACT_ADD] = "INSERT OR IGNORE INTO actions(key, target, lost, build) VALUES(?1, ?2, 0, ?3)",
	/* After S_ACT_ADD found it there: an UPSERT cannot tell the id cheaply
	 * (RETURNING costs more than the second lookup). */
	[S_ACT_UPDATE] = "UPDATE actions SET target = coalesce(?2, target), build = ?3 WHERE id = ?1",
	[S_ACT_GET] = "SELECT target, lost, build FROM actions WHERE key = ?1",
	[S_ACT_MARK_LOST] = "INSERT INTO actions(key, target, lost, build) VALUES(?1, ?2, 1, ?3) "
			    "ON CONFLICT(key) DO UPDATE SET lost = 1, "
			    "target = coalesce(target, excluded.target), build = excluded.build",
	[S_ACT_CLEAR_LOST] = "UPDATE actions SET lost = 0 WHERE key = ?1",
	[S_ACT_IS_LOST] = "SELECT lost FROM actions WHERE key = ?1",
	[S_META_SET_BUILD] = "UPDATE meta SET value = ?1 WHERE key = 'build'",
};

/* A cached folder id. */
typedef struct dir_slot {
	char *path; /* NULL: empty slot */
	size_t len;
	int64_t id;
} dir_slot;

struct st_store {
	sqlite3 *db;
	char *path;
	int lock_fd;
	unsigned batch_ops;
	unsigned pending; /* writes in the open transaction */
	uint64_t build;
	sqlite3_stmt *stmt[S_COUNT];
	/* Ids cached from dirs and actions. A rolled-back transaction may take
	 * the rows they name with it (and SQLite would hand the ids out again),
	 * so every rollback empties them: caches_reset(). */
	dir_slot dirs[ST_DIR_SLOTS];
	bool act_valid; /* the last action resolved: outputs follow their action */
	unsigned char act_key[32];
	int64_t act_id;
	bool act_has_target;
	char act_target[ST_LABEL_MAX + 1];
	/* The last action key parsed from hex: the outputs of one action all
	 * name it, so its text is compared (64 bytes) rather than parsed again.
	 * A pure conversion: valid whatever happens to the database. */
	bool key_memo;
	char key_hex[TF_HASH_HEX_LEN];
	unsigned char key_bin[32];
	/* st_outputs_put: the ST_PUT_ROWS-row UPSERT, setting the target [0]
	 * or keeping the stored one [1]; the hashes of the rows bound to it. */
	sqlite3_stmt *many[2];
	unsigned char many_hash[ST_PUT_ROWS][32], many_act[ST_PUT_ROWS][32];
};

/* ---- small helpers ------------------------------------------------------ */

const char *st_kind_name(st_kind k)
{
	switch (k) {
	case ST_KIND_FILE: return "file";
	case ST_KIND_DIRECTORY: return "directory";
	case ST_KIND_SYMLINK: return "symlink";
	case ST_KIND_TREE_FILE: return "tree file";
	}
	return "invalid";
}

const char *st_state_name(st_state s)
{
	switch (s) {
	case ST_REMOTE: return "remote";
	case ST_FETCHING: return "fetching";
	case ST_LOCAL: return "local";
	case ST_LOST: return "lost";
	}
	return "invalid";
}

void st_local_from_stat(const struct stat *sb, st_local *out)
{
	out->size = (int64_t)sb->st_size;
	out->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + (int64_t)sb->st_mtim.tv_nsec;
	out->ino = (uint64_t)sb->st_ino;
	out->dev = (uint64_t)sb->st_dev;
}

void st_options_init(st_options *o)
{
	memset(o, 0, sizeof(*o));
	o->batch_ops = ST_BATCH_OPS_DEFAULT;
	o->cache_mib = ST_CACHE_MIB_DEFAULT;
}

const char *st_path(const st_store *s)
{
	return s->path;
}

unsigned st_pending(const st_store *s)
{
	return s->pending;
}

uint64_t st_build_current(const st_store *s)
{
	return s->build;
}

/* SQLite result codes to errno, at the boundary where they arise. */
static int sqlite_to_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK: return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return -EBUSY;
	case SQLITE_NOMEM: return -ENOMEM;
	case SQLITE_READONLY: return -EROFS;
	case SQLITE_FULL: return -ENOSPC;
	case SQLITE_CANTOPEN: return -ENOENT;
	case SQLITE_PERM:
	case SQLITE_AUTH: return -EACCES;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: return -EBADMSG;
	case SQLITE_TOOBIG: return -E2BIG;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE: return -EINVAL;
	case SQLITE_INTERRUPT: return -EINTR;
	default: return -EIO;
	}
}

static int sql_err(st_store *s, int rc, const char *doing, tf_error *err)
{
	int sys = sqlite3_system_errno(s->db);

	if (sys && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN ||
		    (rc & 0xff) == SQLITE_FULL))
		return tf__errf(err, sqlite_to_errno(rc), "store %s: cannot %s: %s (%s)", s->path, doing,
				sqlite3_errmsg(s->db), strerror(sys));
	return tf__errf(err, sqlite_to_errno(rc), "store %s: cannot %s: %s", s->path, doing,
			sqlite3_errmsg(s->db));
}

/* Adds to an error already filled that the open batch was lost. */
static int err_lost_writes(tf_error *err, int code, unsigned n)
{
	if (err) {
		size_t len = strlen(err->message);
		snprintf(err->message + len, sizeof(err->message) - len,
			 "; the %u writes since the last commit were lost", n);
	}
	return code;
}

static bool parse_hex32(const char *in, unsigned char out[32])
{
	return tf__unhex(in, 32, out) && in[64] == '\0';
}

static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603u;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211u;
	}
	return h;
}

static void caches_reset(st_store *s)
{
	for (size_t i = 0; i < ST_DIR_SLOTS; i++) {
		free(s->dirs[i].path);
		s->dirs[i].path = NULL;
	}
	s->act_valid = false;
}

static int get_stmt(st_store *s, int id, sqlite3_stmt **out, tf_error *err)
{
	int rc = SQLITE_OK;

	if (!s->stmt[id])
		rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
					&s->stmt[id], NULL);
	*out = s->stmt[id];
	if (rc != SQLITE_OK)
		return sql_err(s, rc, "prepare a statement", err);
	return 0;
}

/* Runs a statement without parameters or rows. */
static int run_simple(st_store *s, int id, const char *doing, tf_error *err)
{
	sqlite3_stmt *st;
	int r = get_stmt(s, id, &st, err);

	if (r < 0)
		return r;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return sql_err(s, rc, doing, err);
	return 0;
}

/* ---- batching -------------------------------------------------------------
 * Every write is wrapped in wr_begin()/wr_end(): the first write opens a
 * transaction, the batch_ops-th commits it. Compound writes (a put that adds
 * a folder and an action, mark_lost) use one pair so that they land in one
 * commit. */

static int wr_begin(st_store *s, tf_error *err)
{
	if (!sqlite3_get_autocommit(s->db))
		return 0;
	s->pending = 0;
	return run_simple(s, S_BEGIN, "start a transaction", err);
}

static int commit(st_store *s, tf_error *err)
{
	unsigned n = s->pending;
	int r;

	if (sqlite3_get_autocommit(s->db)) {
		s->pending = 0;
		return 0;
	}
	r = run_simple(s, S_COMMIT, "commit", err);
	if (r < 0) {
		/* Leave no half-done transaction behind whatever SQLite did. */
		if (!sqlite3_get_autocommit(s->db)) {
			sqlite3_stmt *st;
			if (get_stmt(s, S_ROLLBACK, &st, NULL) == 0) {
				sqlite3_step(st);
				sqlite3_reset(st);
			}
		}
		caches_reset(s);
		s->pending = 0;
		return err_lost_writes(err, r, n);
	}
	s->pending = 0;
	return 0;
}

static int wr_end_n(st_store *s, int r, unsigned n, tf_error *err);

static int wr_end(st_store *s, int r, tf_error *err)
{
	return wr_end_n(s, r, 1, err);
}

/* Ends a write of n rows. */
static int wr_end_n(st_store *s, int r, unsigned n, tf_error *err)
{
	if (r < 0) {
		/* Disk full or I/O errors make SQLite abandon the transaction. */
		if (sqlite3_get_autocommit(s->db)) {
			unsigned lost = s->pending;
			caches_reset(s);
			s->pending = 0;
			if (lost > 0)
				return err_lost_writes(err, r, lost);
		}
		return r;
	}
	s->pending += n;
	if (s->pending >= s->batch_ops)
		return commit(s, err);
	return 0;
}

int st_flush(st_store *s, tf_error *err)
{
	return commit(s, err);
}

/* ---- input checks ---------------------------------------------------------- */

static int check_path(const char *path, tf_error *err)
{
	if (!path)
		return tf__errf(err, -EINVAL, "output: no path given");
	if (strnlen(path, TF__PATH_MAX + 1) > TF__PATH_MAX)
		return tf__errf(err, -ENAMETOOLONG, "output: path '%.60s...' is %zu bytes long (limit %d)",
				path, strlen(path), TF__PATH_MAX);
	return tf__path_check(path, "output", err);
}

/* Checks an action key and converts it. */
static int parse_action_key(const char *key, const char *what, unsigned char bin[32],
			    tf_error *err)
{
	if (!key)
		return tf__errf(err, -EINVAL, "%s: no action key given", what);
	if (!parse_hex32(key, bin))
		return tf__errf(err, -EINVAL,
				"%s: action key '%.80s' is not a SHA-256 digest (64 lowercase hex digits)",
				what, key);
	return 0;
}

static int check_label(const char *label, const char *what, tf_error *err)
{
	size_t n = strnlen(label, ST_LABEL_MAX + 1);

	if (n == 0)
		return tf__errf(err, -EINVAL, "%s: target label is empty (pass NULL when it is unknown)",
				what);
	if (n > ST_LABEL_MAX)
		return tf__errf(err, -ENAMETOOLONG, "%s: target label '%.60s...' is %zu bytes long (limit %d)",
				what, label, strlen(label), ST_LABEL_MAX);
	return 0;
}

static void output_what(const char *path, char *what, size_t n)
{
	snprintf(what, n, "output '%.60s%s'", path, strlen(path) > 60 ? "..." : "");
}

/* Checks an output and converts its hash and action key (hash/action set
 * to NULL when absent). */
static int check_output(st_store *s, const st_output *o, unsigned char hash_buf[32],
			const unsigned char **hash, const unsigned char **action, tf_error *err)
{
	char what[96];
	int r;

	*hash = *action = NULL;
	if (!o)
		return tf__errf(err, -EINVAL, "output: no output given");
	r = check_path(o->path, err);
	if (r < 0)
		return r;
	if ((unsigned)o->kind >= ST_KIND_COUNT) {
		output_what(o->path, what, sizeof(what));
		return tf__errf(err, -EINVAL, "%s: kind %d is not file, directory, symlink or tree file",
				what, (int)o->kind);
	}
	if (o->kind == ST_KIND_SYMLINK) {
		size_t n = o->symlink_target ? strnlen(o->symlink_target, ST_LINK_MAX + 1) : 0;
		output_what(o->path, what, sizeof(what));
		if (n == 0)
			return tf__errf(err, -EINVAL, "%s: a symlink needs a non-empty target", what);
		if (n > ST_LINK_MAX)
			return tf__errf(err, -ENAMETOOLONG, "%s: symlink target is %zu bytes long (limit %d)",
					what, strlen(o->symlink_target), ST_LINK_MAX);
		if (o->hash)
			return tf__errf(err, -EINVAL, "%s: a symlink has no hash (got '%.80s')", what,
					o->hash);
		if (o->size != 0)
			return tf__errf(err, -EINVAL, "%s: a symlink has size 0 (got %lld)", what,
					(long long)o->size);
	} else {
		if (o->symlink_target) {
			output_what(o->path, what, sizeof(what));
			return tf__errf(err, -EINVAL, "%s: only symlinks have a symlink target (this is a %s)",
					what, st_kind_name(o->kind));
		}
		if (!o->hash) {
			output_what(o->path, what, sizeof(what));
			return tf__errf(err, -EINVAL, "%s: a %s needs a hash", what, st_kind_name(o->kind));
		}
		/* The common case quickly; anything unusual (the empty blob, or an
		 * error to word) through tf_digest_parse, the one set of rules. */
		if (!parse_hex32(o->hash, hash_buf) || o->size <= 0 || o->size > TF__MAX_BLOB_SIZE ||
		    !strcmp(o->hash, TF_EMPTY_SHA256)) {
			tf_digest d;
			if (tf_digest_parse(o->hash, o->size, &d, err) < 0) {
				output_what(o->path, what, sizeof(what));
				return tf__err_prefix(err, "%s", what);
			}
		}
		*hash = hash_buf;
	}
	if (o->action_key) {
		if (!s->key_memo || strncmp(o->action_key, s->key_hex, TF_HASH_HEX_LEN) != 0 ||
		    o->action_key[TF_HASH_HEX_LEN] != '\0') {
			s->key_memo = false;
			if (!parse_hex32(o->action_key, s->key_bin)) {
				output_what(o->path, what, sizeof(what));
				return parse_action_key(o->action_key, what, s->key_bin, err);
			}
			memcpy(s->key_hex, o->action_key, TF_HASH_HEX_LEN);
			s->key_memo = true;
		}
		*action = s->key_bin;
	}
	if (o->target) {
		size_t n = strnlen(o->target, ST_LABEL_MAX + 1);
		if (n == 0 || n > ST_LABEL_MAX) {
			output_what(o->path, what, sizeof(what));
			return check_label(o->target, what, err);
		}
	}
	return 0;
}

/* Splits a checked path into its folder ("" at the top) and name. */
static void split_path(const char *path, size_t *dir_len, const char **name)
{
	const char *slash = strrchr(path, '/');

	*dir_len = slash ? (size_t)(slash - path) : 0;
	*name = slash ? slash + 1 : path;
}

/* ---- folder and action ids ------------------------------------------------ */

/* Finds the id of folder path[0..len) into *id: 1 found, 0 unknown (and
 * create false), or an error. With create, adds unknown folders (a write:
 * the caller opened one). */
static int dir_resolve(st_store *s, const char *path, size_t len, bool create, int64_t *id,
		       tf_error *err)
{
	dir_slot *slot = &s->dirs[fnv1a(path, len) % ST_DIR_SLOTS];
	sqlite3_stmt *st;
	int r, rc;

	if (slot->path && slot->len == len && !memcmp(slot->path, path, len)) {
		*id = slot->id;
		return 1;
	}
	if ((r = get_stmt(s, S_DIR_GET, &st, err)) < 0)
		return r;
	sqlite3_bind_text(st, 1, path, (int)len, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sql_err(s, rc, "look up a folder", err);
	if (rc == SQLITE_DONE) {
		if (!create)
			return 0;
		if ((r = get_stmt(s, S_DIR_ADD, &st, err)) < 0)
			return r;
		sqlite3_bind_text(st, 1, path, (int)len, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return sql_err(s, rc, "record a folder", err);
		*id = sqlite3_last_insert_rowid(s->db);
	}
	char *copy = malloc(len + 1);
	if (copy) { /* without memory the cache just stays cold */
		memcpy(copy, path, len);
		copy[len] = '\0';
		free(slot->path);
		slot->path = copy;
		slot->len = len;
		slot->id = *id;
	}
	return 1;
}

static void act_cache_set(st_store *s, const unsigned char key[32], int64_t id,
			  const unsigned char *target, int target_len)
{
	if (target && (size_t)target_len > ST_LABEL_MAX) {
		s->act_valid = false;
		return;
	}
	memcpy(s->act_key, key, 32);
	s->act_id = id;
	s->act_has_target = target != NULL;
	if (target) {
		memcpy(s->act_target, target, (size_t)target_len);
		s->act_target[target_len] = '\0';
	}
	s->act_valid = true;
}

/* Caches the (id, target) row a statement is on. */
static void act_cache_from_row(st_store *s, const unsigned char key[32], sqlite3_stmt *st)
{
	const unsigned char *target = sqlite3_column_text(st, 1); /* text first, then its length */
	int len = sqlite3_column_bytes(st, 1);

	act_cache_set(s, key, sqlite3_column_int64(st, 0), target, len);
}
/* Runs an action statement whose parameters are (key blob, target or NULL,
 * build): adding an action and marking one lost share them. Returns the
 * SQLite step result. */
static int step_action_row(st_store *s, sqlite3_stmt *st, const unsigned char *key, const char *target)
{
	int rc;

	sqlite3_bind_blob(st, 1, key, 32, SQLITE_STATIC);
	if (target)
		sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, (int64_t)s->build);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc;
}


/* Finds the action with this key, or adds it with target, and leaves it in
 * the one-entry cache (outputs arrive right after their action). With
 * refresh, also sets its target (if given) and build, as st_action_put
 * does. A write. New actions, the common case, cost one statement. */
static int act_resolve(st_store *s, const unsigned char key[32], const char *target, bool refresh,
		       tf_error *err)
{
	sqlite3_stmt *st;
	int r, rc;

	if (!refresh && s->act_valid && !memcmp(s->act_key, key, 32))
		return 0;
	s->act_valid = false;
	if ((r = get_stmt(s, S_ACT_ADD, &st, err)) < 0)
		return r;
	rc = step_action_row(s, st, key, target);
	if (rc != SQLITE_DONE)
		return sql_err(s, rc, "record an action", err);
	if (sqlite3_changes(s->db) == 1) {
		act_cache_set(s, key, sqlite3_last_insert_rowid(s->db), (const unsigned char *)target,
			      target ? (int)strlen(target) : 0);
		return 0;
	}

	/* Known already. */
	if ((r = get_stmt(s, S_ACT_FIND, &st, err)) < 0)
		return r;
	sqlite3_bind_blob(st, 1, key, 32, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		act_cache_from_row(s, key, st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return tf__errf(err, -EBADMSG, "store %s is damaged: an action is both there and not", s->path);
	if (rc != SQLITE_ROW)
		return sql_err(s, rc, "look up an action", err);
	if (!s->act_valid)
		return tf__errf(err, -EBADMSG, "store %s is damaged: an action target is too long", s->path);
	if (!refresh)
		return 0;
	if ((r = get_stmt(s, S_ACT_UPDATE, &st, err)) < 0)
		return r;
	sqlite3_bind_int64(st, 1, s->act_id);
	if (target)
		sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, (int64_t)s->build);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		s->act_valid = false;
		return sql_err(s, rc, "record an action", err);
	}
	if (target)
		act_cache_set(s, key, s->act_id, (const unsigned char *)target, (int)strlen(target));
	return 0;
}

/* ---- reading rows ---------------------------------------------------------- */

static int copy_text(st_store *s, sqlite3_stmt *st, int col, char *buf, size_t cap,
		     const char **ptr, tf_error *err)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (!t) {
		buf[0] = '\0';
		*ptr = NULL;
		return 0;
	}
	if ((size_t)n >= cap || memchr(t, '\0', (size_t)n))
		return tf__errf(err, -EBADMSG, "store %s is damaged: a %s of %d bytes does not fit (limit %zu)",
				s->path, sqlite3_column_name(st, col), n, cap - 1);
	memcpy(buf, t, (size_t)n);
	buf[n] = '\0';
	*ptr = buf;
	return 0;
}

static int copy_hash(st_store *s, sqlite3_stmt *st, int col, char *buf, const char **ptr,
		     tf_error *err)
{
	const void *b = sqlite3_column_blob(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		buf[0] = '\0';
		*ptr = NULL;
		return 0;
	}
	if (n != 32 || !b)
		return tf__errf(err, -EBADMSG, "store %s is damaged: a %s of %d bytes (expected 32)",
				s->path, sqlite3_column_name(st, col), n);
	tf__hex(b, 32, buf);
	*ptr = buf;
	return 0;
}

/* Copies the current row of a statement selecting OUT_COLS; *dir gets the
 * folder id (for keyset pagination). */
static int read_output(st_store *s, sqlite3_stmt *st, st_record *r, int64_t *dir, tf_error *err)
{
	st_output *o = &r->o;
	const unsigned char *dpath = sqlite3_column_text(st, 0);
	const unsigned char *name = sqlite3_column_text(st, 1);
	size_t dlen = (size_t)sqlite3_column_bytes(st, 0), nlen = (size_t)sqlite3_column_bytes(st, 1);
	int64_t kind, state;
	int e;

	memset(o, 0, sizeof(*o));
	if (!dpath || !name || nlen == 0 || dlen + 1 + nlen > TF__PATH_MAX)
		return tf__errf(err, -EBADMSG, "store %s is damaged: an output path is missing or too long",
				s->path);
	if (dlen) {
		memcpy(r->path, dpath, dlen);
		r->path[dlen++] = '/';
	}
	memcpy(r->path + dlen, name, nlen);
	r->path[dlen + nlen] = '\0';
	o->path = r->path;
	if ((e = copy_hash(s, st, 2, r->hash, &o->hash, err)) < 0 ||
	    (e = copy_text(s, st, 6, r->symlink_target, sizeof(r->symlink_target), &o->symlink_target, err)) < 0 ||
	    (e = copy_hash(s, st, 7, r->action_key, &o->action_key, err)) < 0 ||
	    (e = copy_text(s, st, 8, r->target, sizeof(r->target), &o->target, err)) < 0)
		return e;
	o->size = sqlite3_column_int64(st, 3);
	o->executable = sqlite3_column_int64(st, 4) != 0;
	kind = sqlite3_column_int64(st, 5);
	state = sqlite3_column_int64(st, 9);
	if (kind < 0 || kind >= ST_KIND_COUNT || state < 0 || state >= ST_STATE_COUNT)
		return tf__errf(err, -EBADMSG, "store %s is damaged: output '%s' has kind %lld, state %lld",
				s->path, o->path, (long long)kind, (long long)state);
	o->kind = (st_kind)kind;
	o->state = (st_state)state;
	if (o->state == ST_LOCAL) {
		o->local.size = sqlite3_column_int64(st, 10);
		o->local.mtime_ns = sqlite3_column_int64(st, 11);
		o->local.ino = (uint64_t)sqlite3_column_int64(st, 12);
		o->local.dev = (uint64_t)sqlite3_column_int64(st, 13);
	}
	o->build = (uint64_t)sqlite3_column_int64(st, 14);
	if (dir)
		*dir = sqlite3_column_int64(st, 15);
	return 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

static int take_lock(st_store *s, tf_error *err)
{
	size_t n = strlen(s->path) + sizeof(".lock");
	char *lock_path = malloc(n);
	char pidbuf[32];
	int r = 0;

	if (!lock_path)
		return tf__errf(err, -ENOMEM, "store %s: out of memory", s->path);
	snprintf(lock_path, n, "%s.lock", s->path);
	s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
	if (s->lock_fd < 0) {
		r = tf__errf(err, -errno, "store %s: cannot open its lock file %s: %s", s->path,
			     lock_path, strerror(errno));
		goto out;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			ssize_t got = pread(s->lock_fd, pidbuf, sizeof(pidbuf) - 1, 0);
			long pid = 0;
			if (got > 0) {
				pidbuf[got] = '\0';
				pid = strtol(pidbuf, NULL, 10);
			}
			if (pid > 0)
				r = tf__errf(err, -EBUSY,
					     "store %s is in use by another topfetch (pid %ld); wait for it or use another --store",
					     s->path, pid);
			else
				r = tf__errf(err, -EBUSY,
					     "store %s is in use by another topfetch (pid unknown); wait for it or use another --store",
					     s->path);
		} else {
			r = tf__errf(err, -errno, "store %s: cannot lock %s: %s", s->path, lock_path,
				     strerror(errno));
		}
		goto out;
	}
	/* The pid is only for the message a second opener shows. */
	int len = snprintf(pidbuf, sizeof(pidbuf), "%ld\n", (long)getpid());
	if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, pidbuf, (size_t)len, 0) != len) {
		r = tf__errf(err, -errno, "store %s: cannot write its lock file %s: %s", s->path,
			     lock_path, strerror(errno));
		goto out;
	}
out:
	free(lock_path);
	return r;
}

static int exec_sql(st_store *s, const char *sql, const char *doing, tf_error *err)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		int r = tf__errf(err, sqlite_to_errno(rc), "store %s: cannot %s: %s", s->path, doing,
				 msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return r;
	}
	return 0;
}

/* Runs a query that returns one integer (0 if no row). */
static int query_int(st_store *s, const char *sql, int64_t *out, tf_error *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*out = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			*out = 0;
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_NOTADB)
		return tf__errf(err, -EBADMSG,
				"store %s is not a topfetch store (not an SQLite database); move it away or use another --store",
				s->path);
	if (rc != SQLITE_OK)
		return sql_err(s, rc, "read it", err);
	return 0;
}

static int set_wal(st_store *s, tf_error *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL), r = 0;

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(st, 0);
		if (!mode || strcmp(mode, "wal") != 0)
			r = tf__errf(err, -EIO, "store %s: cannot switch to WAL journaling (journal mode is %s)",
				     s->path, mode ? mode : "unknown");
	} else {
		r = sql_err(s, rc, "switch to WAL journaling", err);
	}
	sqlite3_finalize(st);
	return r;
}

static int migrate(st_store *s, const st_migration *list, size_t n, int64_t from, tf_error *err)
{
	char sql[128];
	int r;

	for (size_t i = (size_t)from; i < n; i++) {
		const st_migration *m = &list[i];

		r = exec_sql(s, "BEGIN IMMEDIATE", "start a schema migration", err);
		if (r < 0)
			return r;
		r = exec_sql(s, m->sql, "migrate", err);
		if (r == 0) {
			snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d",
				 ST_APP_ID, m->to_version);
			r = exec_sql(s, sql, "record the schema version", err);
		}
		if (r == 0)
			r = exec_sql(s, "COMMIT", "commit a schema migration", err);
		if (r < 0) {
			if (!sqlite3_get_autocommit(s->db))
				sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return tf__err_prefix(err, "store %s: migration to schema version %d failed, the store is left at version %d",
					      s->path, m->to_version, m->to_version - 1);
		}
	}
	return 0;
}

void st_pragma_sql(const st_options *opts, char *buf, size_t n)
{
	st_options defaults;

	if (!opts) {
		st_options_init(&defaults);
		opts = &defaults;
	}
	snprintf(buf, n,
		 "PRAGMA locking_mode = EXCLUSIVE; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -%u;"
		 "PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = %d; PRAGMA journal_size_limit = %d",
		 opts->cache_mib * 1024u, ST_WAL_CHECKPOINT_PAGES, ST_WAL_SIZE_LIMIT);
}

static int open_db(st_store *s, const st_options *opts, const st_migration *list, size_t n,
		   tf_error *err)
{
	int64_t app_id, version, n_objects, build;
	char sql[ST_PRAGMA_SQL_MAX];
	int r, rc;

	rc = sqlite3_open_v2(s->path, &s->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		int sys = s->db ? sqlite3_system_errno(s->db) : 0;
		r = tf__errf(err, sys ? -sys : sqlite_to_errno(rc), "store %s: cannot open: %s%s%s",
			     s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc),
			     sys ? ": " : "", sys ? strerror(sys) : "");
		sqlite3_close_v2(s->db);
		s->db = NULL;
		return r;
	}
	sqlite3_extended_result_codes(s->db, 1);
	/* We hold the lock file; EXCLUSIVE also keeps the WAL index in our heap
	 * (no -shm file) and keeps any other process out of the database. */
	r = exec_sql(s, "PRAGMA locking_mode = EXCLUSIVE", "set the locking mode", err);
	if (r < 0)
		return r;

	/* Only reads until we know the file is ours and not too new. */
	if ((r = query_int(s, "PRAGMA application_id", &app_id, err)) < 0 ||
	    (r = query_int(s, "PRAGMA user_version", &version, err)) < 0 ||
	    (r = query_int(s, "SELECT count(*) FROM sqlite_master", &n_objects, err)) < 0)
		return r;
	if (app_id != ST_APP_ID && (app_id != 0 || version != 0 || n_objects != 0))
		return tf__errf(err, -EBADMSG,
				"store %s is an SQLite database but not a topfetch store (application id %#llx, version %lld); move it away or use another --store",
				s->path, (unsigned long long)app_id, (long long)version);
	if (version > (int64_t)n)
		return tf__errf(err, -ENOTSUP,
				"store %s has schema version %lld, this topfetch knows up to %zu; upgrade topfetch",
				s->path, (long long)version, n);
	if (version < 0)
		return tf__errf(err, -EBADMSG, "store %s has a negative schema version %lld", s->path,
				(long long)version);

	if (n_objects == 0) {
		snprintf(sql, sizeof(sql), "PRAGMA page_size = %d", ST_PAGE_SIZE);
		if ((r = exec_sql(s, sql, "set the page size", err)) < 0)
			return r;
	}
	if ((r = set_wal(s, err)) < 0)
		return r;
	st_pragma_sql(opts, sql, sizeof(sql));
	if ((r = exec_sql(s, sql, "configure", err)) < 0)
		return r;
	if ((r = migrate(s, list, n, version, err)) < 0)
		return r;
	if ((r = query_int(s, "SELECT value FROM meta WHERE key = 'build'", &build, err)) < 0)
		return r;
	s->build = (uint64_t)build;
	return 0;
}

st_store *st_open(const char *path, const st_options *opts, tf_error *err)
{
	st_options defaults;
	const st_migration *list;
	size_t n;
	st_store *s = NULL;

	if (!opts) {
		st_options_init(&defaults);
		opts = &defaults;
	}
	if (!path || !*path) {
		tf__errf(err, -EINVAL, "store: no path given");
		return NULL;
	}
	if (strnlen(path, TF__PATH_MAX + 1) > TF__PATH_MAX) {
		tf__errf(err, -ENAMETOOLONG, "store: path '%.60s...' is %zu bytes long (limit %d)", path,
			 strlen(path), TF__PATH_MAX);
		return NULL;
	}
	if (opts->batch_ops < 1 || opts->batch_ops > ST_BATCH_OPS_MAX) {
		tf__errf(err, -EINVAL, "store %s: batch of %u writes is out of range (1..%u)", path,
			 opts->batch_ops, ST_BATCH_OPS_MAX);
		return NULL;
	}
	if (opts->cache_mib < 1 || opts->cache_mib > ST_CACHE_MIB_MAX) {
		tf__errf(err, -EINVAL, "store %s: cache of %u MiB is out of range (1..%u)", path,
			 opts->cache_mib, ST_CACHE_MIB_MAX);
		return NULL;
	}
	list = opts->migrations ? opts->migrations : migrations_builtin;
	n = opts->migrations ? opts->n_migrations : N_BUILTIN;
	if (n == 0) {
		tf__errf(err, -EINVAL, "store %s: no schema migrations given", path);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (list[i].to_version != (int)i + 1 || !list[i].sql) {
			tf__errf(err, -EINVAL, "store %s: migration step %zu must bring the schema to version %zu",
				 path, i, i + 1);
			return NULL;
		}
	}

	s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(path))) {
		free(s);
		tf__errf(err, -ENOMEM, "store %s: out of memory", path);
		return NULL;
	}
	s->lock_fd = -1;
	s->batch_ops = opts->batch_ops;
	if (take_lock(s, err) < 0 || open_db(s, opts, list, n, err) < 0) {
		st_close(s);
		return NULL;
	}
	return s;
}

void st_close(st_store *s)
{
	if (!s)
		return;
	if (s->db) {
		if (!sqlite3_get_autocommit(s->db))
			commit(s, NULL);
		for (int i = 0; i < S_COUNT; i++)
			sqlite3_finalize(s->stmt[i]);
		sqlite3_finalize(s->many[0]);
		sqlite3_finalize(s->many[1]);
		sqlite3_close_v2(s->db);
	}
	caches_reset(s);
	/* Closing the descriptor releases the lock; the file stays, so that no
	 * one can lock a file we are about to unlink. */
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s->path);
	free(s);
}

int st_build_begin(st_store *s, uint64_t *build, tf_error *err)
{
	sqlite3_stmt *st;
	uint64_t next = s->build + 1;
	int r = wr_begin(s, err);

	if (r < 0)
		return r;
	r = get_stmt(s, S_META_SET_BUILD, &st, err);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, (int64_t)next);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			r = sql_err(s, rc, "start a build", err);
	}
	r = wr_end(s, r, err);
	/* A generation number must never be handed out twice: commit now. */
	if (r == 0)
		r = commit(s, err);
	if (r < 0)
		return r;
	s->build = next;
	if (build)
		*build = next;
	return 0;
}

int st_integrity_check(st_store *s, tf_error *err)
{
	sqlite3_stmt *st = NULL;
	int r = commit(s, err), rc;

	if (r < 0)
		return r;
	rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check(1)", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *res = (const char *)sqlite3_column_text(st, 0);
		if (!res || strcmp(res, "ok") != 0)
			r = tf__errf(err, -EBADMSG, "store %s is damaged: %s", s->path, res ? res : "?");
	} else {
		r = sql_err(s, rc, "check its integrity", err);
	}
	sqlite3_finalize(st);
	return r;
}

/* ---- outputs -------------------------------------------------------------- */

/* Binds output o (checked; hash as 32 bytes or NULL, action key as 32
 * bytes or NULL) to parameters base+1..base+OUT_ROW_PARAMS of st, after
 * resolving its folder and action ids (a write the caller opened: either
 * may be added). The strings and hash stay borrowed until the step. */
static int output_bind(st_store *s, sqlite3_stmt *st, int base, const st_output *o,
		       const unsigned char *hash, const unsigned char *action, tf_error *err)
{
	const char *name, *target = o->target;
	size_t dir_len;
	int64_t dir;
	int r;

	split_path(o->path, &dir_len, &name);
	if ((r = dir_resolve(s, o->path, dir_len, true, &dir, err)) < 0)
		return r;
	if (action) {
		if ((r = act_resolve(s, action, o->target, false, err)) < 0)
			return r;
		/* The label is kept once, on the action, when they agree. */
		if (target && s->act_has_target && !strcmp(target, s->act_target))
			target = NULL;
	}
	sqlite3_bind_int64(st, base + 1, dir);
	sqlite3_bind_text(st, base + 2, name, -1, SQLITE_STATIC);
	if (hash)
		sqlite3_bind_blob(st, base + 3, hash, 32, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, base + 3);
	sqlite3_bind_int64(st, base + 4, o->size);
	sqlite3_bind_int(st, base + 5, o->executable ? 1 : 0);
	sqlite3_bind_int(st, base + 6, (int)o->kind);
	if (o->symlink_target)
		sqlite3_bind_text(st, base + 7, o->symlink_target, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, base + 7);
	if (action)
		sqlite3_bind_int64(st, base + 8, s->act_id);
	else
		sqlite3_bind_null(st, base + 8);
	if (target)
		sqlite3_bind_text(st, base + 9, target, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, base + 9);
	sqlite3_bind_int64(st, base + 10, (int64_t)s->build);
	return 0;
}

/* The put itself, inside a write the caller opened. */
static int output_put(st_store *s, const st_output *o, const unsigned char *hash,
		      const unsigned char *action, tf_error *err)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = get_stmt(s, S_OUT_PUT, &st, err)) < 0)
		return r;
	if ((r = output_bind(s, st, 0, o, hash, action, err)) < 0)
		return r;
	sqlite3_bind_int(st, 11, o->target == NULL);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return sql_err(s, rc, "record an output", err);
	return 0;
}

static int get_many(st_store *s, bool keep, sqlite3_stmt **out, tf_error *err)
{
	static const char *const upsert[2] = { OUT_PUT_UPSERT("0"), OUT_PUT_UPSERT("1") };
	size_t row = strlen(OUT_ROW), n = strlen(OUT_PUT_INTO) + ST_PUT_ROWS * (row + 1) + strlen(upsert[keep]) + 1;
	char *sql, *p;
	int rc;

	if (s->many[keep]) {
		*out = s->many[keep];
		return 0;
	}
	if (!(sql = malloc(n)))
		return tf__errf(err, -ENOMEM, "store %s: out of memory", s->path);
	p = sql + strlen(strcpy(sql, OUT_PUT_INTO));
	for (int i = 0; i < ST_PUT_ROWS; i++) {
		if (i)
			*p++ = ',';
		memcpy(p, OUT_ROW, row);
		p += row;
	}
	strcpy(p, upsert[keep]);
	rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->many[keep], NULL);
	free(sql);
	*out = s->many[keep];
	if (rc != SQLITE_OK)
		return sql_err(s, rc, "prepare a statement", err);
	return 0;
}

int st_output_put(st_store *s, const st_output *o, tf_error *err)
{
	unsigned char hash_buf[32];
	const unsigned char *hash, *action;
	int r = check_output(s, o, hash_buf, &hash, &action, err);

	if (r < 0)
		return r;
	if ((r = wr_begin(s, err)) < 0)
		return r;
	return wr_end(s, output_put(s, o, hash, action, err), err);
}

/* Reads one output; 0, -ENOENT (message filled) or another error. */
static int get_output(st_store *s, const char *path, st_record *out, tf_error *err)
{
	const char *name;
	size_t dir_len;
	int64_t dir;
	sqlite3_stmt *st;
	int r, rc;

	split_path(path, &dir_len, &name);
	r = dir_resolve(s, path, dir_len, false, &dir, err);
	if (r == 0)
		return tf__errf(err, -ENOENT, "store %s has no output '%s'", s->path, path);
	if (r < 0)
		return r;
	if ((r = get_stmt(s, S_OUT_GET, &st, err)) < 0)
		return r;
	sqlite3_bind_int64(st, 1, dir);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = read_output(s, st, out, NULL, err);
	else if (rc == SQLITE_DONE)
		r = tf__errf(err, -ENOENT, "store %s has no output '%s'", s->path, path);
	else
		r = sql_err(s, rc, "read an output", err);
	sqlite3_reset(st);
	return r;
}

int st_outputs_put(st_store *s, const st_output *o, size_t n, tf_error *err)
{
	const unsigned char *hash[ST_PUT_ROWS], *action[ST_PUT_ROWS];
	sqlite3_stmt *st = NULL;
	tf_error scratch;
	size_t i = 0;
	int r, rc;

	/* Whole groups of valid rows that agree on keeping the target, in one run. */
	while (n - i >= ST_PUT_ROWS) {
		bool keep = o[i].target == NULL;
		size_t j;

		for (j = 0; j < ST_PUT_ROWS && (o[i + j].target == NULL) == keep; j++) {
			if (check_output(s, &o[i + j], s->many_hash[j], &hash[j], &action[j], &scratch) < 0)
				break;
			if (action[j]) { /* the memo moves on with the next action */
				memcpy(s->many_act[j], action[j], 32);
				action[j] = s->many_act[j];
			}
		}
		if (j < ST_PUT_ROWS)
			break; /* one at a time from here: the error names the output */
		if ((r = get_many(s, keep, &st, err)) < 0 || (r = wr_begin(s, err)) < 0)
			return r;
		for (j = 0; j < ST_PUT_ROWS && r == 0; j++)
			r = output_bind(s, st, (int)j * OUT_ROW_PARAMS, &o[i + j], hash[j], action[j], err);
		if (r == 0) {
			rc = sqlite3_step(st);
			if (rc != SQLITE_DONE)
				r = sql_err(s, rc, "record outputs", err);
		}
		sqlite3_reset(st);
		if ((r = wr_end_n(s, r, ST_PUT_ROWS, err)) < 0)
			return r;
		i += ST_PUT_ROWS;
	}
	for (; i < n; i++)
		if ((r = st_output_put(s, &o[i], err)) < 0)
			return r;
	return 0;
}

int st_output_get(st_store *s, const char *path, st_record *out, tf_error *err)
{
	int r = check_path(path, err);

	if (r < 0)
		return r;
	return get_output(s, path, out, err);
}

/* The state change itself, inside a write the caller opened. Returns 1 if
 * no row matched. */
static int set_state(st_store *s, const char *path, st_state state, const st_local *local,
		     const unsigned char *expect, tf_error *err)
{
	const char *name;
	size_t dir_len;
	int64_t dir;
	sqlite3_stmt *st;
	int r, rc;

	split_path(path, &dir_len, &name);
	r = dir_resolve(s, path, dir_len, false, &dir, err);
	if (r <= 0)
		return r < 0 ? r : 1;
	if ((r = get_stmt(s, S_OUT_SET_STATE, &st, err)) < 0)
		return r;
	sqlite3_bind_int64(st, 1, dir);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, (int)state);
	if (state == ST_LOCAL) {
		sqlite3_bind_int64(st, 4, local->size);
		sqlite3_bind_int64(st, 5, local->mtime_ns);
		sqlite3_bind_int64(st, 6, (int64_t)local->ino);
		sqlite3_bind_int64(st, 7, (int64_t)local->dev);
	} else {
		for (int i = 4; i <= 7; i++)
			sqlite3_bind_null(st, i);
	}
	if (expect)
		sqlite3_bind_blob(st, 8, expect, 32, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 8);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return sql_err(s, rc, "change the state of an output", err);
	return sqlite3_changes(s->db) > 0 ? 0 : 1;
}

int st_output_set_state(st_store *s, const char *path, st_state state, const st_local *local,
			const char *expect_hash, tf_error *err)
{
	unsigned char expect[32];
	int r = check_path(path, err);

	if (r < 0)
		return r;
	if ((unsigned)state >= ST_STATE_COUNT)
		return tf__errf(err, -EINVAL, "output '%s': state %d is not remote, fetching, local or lost",
				path, (int)state);
	if (state == ST_LOCAL && !local)
		return tf__errf(err, -EINVAL, "output '%s': marking it local needs what was written (size, mtime, inode)",
				path);
	if (state != ST_LOCAL && local)
		return tf__errf(err, -EINVAL, "output '%s': only a local output has a local record (state %s)",
				path, st_state_name(state));
	if (local && (local->size < 0 || local->size > TF__MAX_BLOB_SIZE))
		return tf__errf(err, -ERANGE, "output '%s': local size %lld is out of range (0..2^53)",
				path, (long long)local->size);
	if (expect_hash && !parse_hex32(expect_hash, expect))
		return tf__errf(err, -EINVAL,
				"output '%s': expected hash '%.80s' is not a SHA-256 digest (64 lowercase hex digits)",
				path, expect_hash);
	if ((r = wr_begin(s, err)) < 0)
		return r;
	r = set_state(s, path, state, local, expect_hash ? expect : NULL, err);
	if (r == 1) {
		/* Nothing matched: tell a missing output from a changed hash. */
		st_record *rec = malloc(sizeof(*rec));
		if (!rec)
			r = tf__errf(err, -ENOMEM, "store %s: out of memory", s->path);
		else if ((r = get_output(s, path, rec, err)) == 0)
			r = tf__errf(err, -ESTALE,
				     "output '%s' now has hash %s, not %s: its metadata changed while it was fetched; state not changed",
				     path, rec->o.hash ? rec->o.hash : "(none)", expect_hash);
		free(rec);
		return r; /* nothing written */
	}
	return wr_end(s, r, err);
}

static int action_mark_lost(st_store *s, const unsigned char key[32], const char *target,
			    tf_error *err)
{
	sqlite3_stmt *st;
	int r = get_stmt(s, S_ACT_MARK_LOST, &st, err), rc;

	if (r < 0)
		return r;
	s->act_valid = false; /* its target may be filled in */
	rc = step_action_row(s, st, key, target);
	if (rc != SQLITE_DONE)
		return sql_err(s, rc, "mark an action lost", err);
	return 0;
}

int st_output_mark_lost(st_store *s, const char *path, st_record *out, tf_error *err)
{
	st_record *rec = out ? out : malloc(sizeof(*rec));
	unsigned char key[32];
	int r;

	if (!rec)
		return tf__errf(err, -ENOMEM, "store %s: out of memory", s->path);
	if ((r = check_path(path, err)) < 0 || (r = get_output(s, path, rec, err)) < 0 ||
	    (r = wr_begin(s, err)) < 0)
		goto out;
	r = set_state(s, path, ST_LOST, NULL, NULL, err);
	if (r == 0 && rec->o.action_key && parse_hex32(rec->o.action_key, key))
		r = action_mark_lost(s, key, rec->o.target, err);
	r = wr_end(s, r < 0 ? r : 0, err);
	if (r == 0) {
		rec->o.state = ST_LOST;
		memset(&rec->o.local, 0, sizeof(rec->o.local));
	}
out:
	if (rec != out)
		free(rec);
	return r;
}

/* Steps through the rows of one of the S_OUT_NEXT_* statements. */
static int iterate(st_store *s, int id, const unsigned char *hash, st_state state,
		   st_output_cb cb, void *user, tf_error *err)
{
	st_record *rec = malloc(sizeof(*rec));
	char *last = malloc(TF__NAME_MAX + 1);
	int64_t last_dir = -1;
	int r = 0;

	if (!rec || !last) {
		r = tf__errf(err, -ENOMEM, "store %s: out of memory", s->path);
		goto out;
	}
	last[0] = '\0';
	for (;;) {
		sqlite3_stmt *st;
		int rc;

		if ((r = get_stmt(s, id, &st, err)) < 0)
			goto out;
		sqlite3_bind_int64(st, 1, last_dir);
		sqlite3_bind_text(st, 2, last, -1, SQLITE_TRANSIENT);
		if (id == S_OUT_NEXT_STATE)
			sqlite3_bind_int(st, 3, (int)state);
		else if (id == S_OUT_NEXT_LOCAL_HASH)
			sqlite3_bind_blob(st, 3, hash, 32, SQLITE_TRANSIENT);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			r = read_output(s, st, rec, &last_dir, err);
		else if (rc != SQLITE_DONE)
			r = sql_err(s, rc, "list outputs", err);
		sqlite3_reset(st);
		if (r < 0 || rc == SQLITE_DONE)
			goto out;
		/* The name is the last component of the path just read. */
		const char *slash = strrchr(rec->path, '/'), *name = slash ? slash + 1 : rec->path;
		size_t nlen = strnlen(name, TF__NAME_MAX);
		memcpy(last, name, nlen);
		last[nlen] = '\0';
		r = cb(&rec->o, user);
		if (r != 0)
			goto out;
	}
out:
	free(rec);
	free(last);
	return r;
}

int st_outputs_by_state(st_store *s, st_state state, st_output_cb cb, void *user, tf_error *err)
{
	if ((unsigned)state >= ST_STATE_COUNT)
		return tf__errf(err, -EINVAL, "store %s: state %d is not remote, fetching, local or lost",
				s->path, (int)state);
	if (!cb)
		return tf__errf(err, -EINVAL, "store %s: no callback given", s->path);
	return iterate(s, state == ST_REMOTE ? S_OUT_NEXT_REMOTE : S_OUT_NEXT_STATE, NULL, state, cb,
		       user, err);
}

int st_outputs_count(st_store *s, int state, uint64_t *n, tf_error *err)
{
	sqlite3_stmt *st;
	int r, rc;

	if (state < -1 || state >= ST_STATE_COUNT)
		return tf__errf(err, -EINVAL, "store %s: state %d is not remote, fetching, local or lost",
				s->path, state);
	if ((r = get_stmt(s, state < 0 ? S_OUT_COUNT_ALL : S_OUT_COUNT_STATE, &st, err)) < 0)
		return r;
	if (state >= 0)
		sqlite3_bind_int(st, 1, state);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*n = (uint64_t)sqlite3_column_int64(st, 0);
	else
		r = sql_err(s, rc, "count outputs", err);
	sqlite3_reset(st);
	return r;
}

/* Size, mtime, inode and device as recorded, but the inode changed well
 * after the last write (ctime past mtime by more than a second): written in
 * place with its size and mtime put back (Bazel checks ctime too), or only
 * chmod'ed or hard-linked. In doubt: the bytes tell. (A file we write gets
 * its ctime from the rename right after its last write.) */
static bool in_doubt(const struct stat *sb)
{
	int64_t ctime_ns = (int64_t)sb->st_ctim.tv_sec * 1000000000 + (int64_t)sb->st_ctim.tv_nsec;
	int64_t mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + (int64_t)sb->st_mtim.tv_nsec;

	return ctime_ns > mtime_ns + 1000000000;
}

/* Do the bytes of leaf (below dirfd, not followed if a symlink) hash to hex? */
static bool same_bytes(int dirfd, const char *leaf, const char *hex)
{
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	char got[TF_HASH_HEX_LEN + 1];
	unsigned len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int fd = openat(dirfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	ssize_t n = 0;
	bool ok = ctx && fd >= 0 && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

	while (ok && (n = read(fd, buf, sizeof(buf))) > 0)
		ok = EVP_DigestUpdate(ctx, buf, (size_t)n);
	ok = ok && n == 0 && EVP_DigestFinal_ex(ctx, md, &len) && len == 32;
	if (ok)
		tf__hex(md, 32, got);
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(ctx);
	return ok && !strcmp(got, hex);
}

/* Compares what is on disk with the local record of a LOCAL output. */
static int check_on_disk(st_store *s, int dirfd, const st_output *o, tf_error *err)
{
	const char *leaf;
	struct stat sb;
	st_local now;
	bool type_ok;
	tf_error walk;
	int pfd = tf__open_parent_beneath(dirfd, o->path, false, &leaf, &walk), r;

	if (pfd == -ENOENT)
		return ST_CHECK_MISSING;
	if (pfd == -ENOTDIR)
		return ST_CHECK_CHANGED; /* a folder on the way became a file or a symlink */
	if (pfd < 0)
		return tf__errf(err, pfd, "store %s: cannot check output '%s': %s", s->path, o->path,
				walk.message);
	r = fstatat(pfd, leaf, &sb, AT_SYMLINK_NOFOLLOW);
	if (r < 0) {
		int e = errno;
		close(pfd);
		if (e == ENOENT)
			return ST_CHECK_MISSING;
		if (e == ENOTDIR)
			return ST_CHECK_CHANGED;
		return tf__errf(err, -e, "store %s: cannot check output '%s': %s", s->path, o->path,
				strerror(e));
	}
	switch (o->kind) {
	case ST_KIND_DIRECTORY: type_ok = S_ISDIR(sb.st_mode); break;
	case ST_KIND_SYMLINK: type_ok = S_ISLNK(sb.st_mode); break;
	default:
		type_ok = S_ISREG(sb.st_mode) && ((sb.st_mode & S_IXUSR) != 0) == o->executable;
		break;
	}
	st_local_from_stat(&sb, &now);
	if (!type_ok || now.size != o->local.size || now.mtime_ns != o->local.mtime_ns ||
	    now.ino != o->local.ino || now.dev != o->local.dev)
		r = ST_CHECK_CHANGED;
	else if (o->kind == ST_KIND_FILE && o->hash && in_doubt(&sb))
		r = same_bytes(pfd, leaf, o->hash) ? ST_CHECK_SAME : ST_CHECK_CHANGED;
	else
		r = ST_CHECK_SAME;
	close(pfd);
	return r;
}

int st_output_check_local(st_store *s, int dirfd, const char *path, tf_error *err)
{
	st_record *rec;
	int r = check_path(path, err);

	if (r < 0)
		return r;
	if (!(rec = malloc(sizeof(*rec))))
		return tf__errf(err, -ENOMEM, "store %s: out of memory", s->path);
	r = get_output(s, path, rec, err);
	if (r == 0)
		r = rec->o.state == ST_LOCAL ? check_on_disk(s, dirfd, &rec->o, err) : ST_CHECK_NOT_LOCAL;
	free(rec);
	return r;
}

/* Sets a LOCAL output whose file changed back to REMOTE. */
static int demote(st_store *s, const char *path, tf_error *err)
{
	int r = wr_begin(s, err);

	if (r < 0)
		return r;
	r = set_state(s, path, ST_REMOTE, NULL, NULL, err);
	return wr_end(s, r < 0 ? r : 0, err);
}

typedef struct find_ctx {
	st_store *s;
	int dirfd;
	st_record *out;
	tf_error *err;
	uint64_t demoted;
} find_ctx;

static int find_cb(const st_output *o, void *user)
{
	find_ctx *c = user;
	int r = c->dirfd >= 0 ? check_on_disk(c->s, c->dirfd, o, c->err) : ST_CHECK_SAME;

	if (r < 0)
		return r;
	if (r != ST_CHECK_SAME) {
		c->demoted++;
		r = demote(c->s, o->path, c->err);
		return r < 0 ? r : 0;
	}
	if (!c->out)
		return 0; /* verifying only */
	/* Copy the record: o points into the iteration's own storage. */
	st_record *d = c->out;
	memcpy(d->path, o->path, strlen(o->path) + 1);
	memcpy(d->hash, o->hash, TF_HASH_HEX_LEN + 1);
	d->symlink_target[0] = d->action_key[0] = d->target[0] = '\0';
	if (o->symlink_target)
		memcpy(d->symlink_target, o->symlink_target, strlen(o->symlink_target) + 1);
	if (o->action_key)
		memcpy(d->action_key, o->action_key, TF_HASH_HEX_LEN + 1);
	if (o->target)
		memcpy(d->target, o->target, strlen(o->target) + 1);
	d->o = *o;
	d->o.path = d->path;
	d->o.hash = d->hash;
	d->o.symlink_target = o->symlink_target ? d->symlink_target : NULL;
	d->o.action_key = o->action_key ? d->action_key : NULL;
	d->o.target = o->target ? d->target : NULL;
	return 1;
}

int st_find_local(st_store *s, const char *hash, int dirfd, st_record *out, tf_error *err)
{
	unsigned char bin[32];
	find_ctx c = { s, dirfd, out, err, 0 };

	if (!hash || !parse_hex32(hash, bin))
		return tf__errf(err, -EINVAL, "store %s: hash '%.80s' is not a SHA-256 digest (64 lowercase hex digits)",
				s->path, hash ? hash : "");
	if (!out)
		return tf__errf(err, -EINVAL, "store %s: no record to fill given", s->path);
	return iterate(s, S_OUT_NEXT_LOCAL_HASH, bin, ST_LOCAL, find_cb, &c, err);
}

int st_recover_fetching(st_store *s, st_output_cb cb, void *user, tf_error *err)
{
	return st_outputs_by_state(s, ST_FETCHING, cb, user, err);
}

int st_recover_verify_local(st_store *s, int dirfd, uint64_t *demoted, tf_error *err)
{
	find_ctx c = { s, dirfd, NULL, err, 0 };
	int r;

	if (dirfd < 0)
		return tf__errf(err, -EBADF, "store %s: no output directory to verify against", s->path);
	r = iterate(s, S_OUT_NEXT_STATE, NULL, ST_LOCAL, find_cb, &c, err);
	if (demoted)
		*demoted = c.demoted;
	return r;
}

/* ---- actions -------------------------------------------------------------- */

int st_action_put(st_store *s, const char *key, const char *target, tf_error *err)
{
	unsigned char bin[32];
	char what[96];
	int r = parse_action_key(key, "action", bin, err);

	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "action %s", key);
	if (target && (r = check_label(target, what, err)) < 0)
		return r;
	if ((r = wr_begin(s, err)) < 0)
		return r;
	return wr_end(s, act_resolve(s, bin, target, true, err), err);
}

int st_action_get(st_store *s, const char *key, st_action *out, tf_error *err)
{
	unsigned char bin[32];
	const char *target;
	sqlite3_stmt *st;
	int r = parse_action_key(key, "action", bin, err), rc;

	if (r < 0)
		return r;
	if ((r = get_stmt(s, S_ACT_GET, &st, err)) < 0)
		return r;
	sqlite3_bind_blob(st, 1, bin, 32, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memcpy(out->key, key, TF_HASH_HEX_LEN + 1);
		r = copy_text(s, st, 0, out->target, sizeof(out->target), &target, err);
		out->lost = sqlite3_column_int64(st, 1) != 0;
		out->build = (uint64_t)sqlite3_column_int64(st, 2);
	} else if (rc == SQLITE_DONE) {
		r = tf__errf(err, -ENOENT, "store %s has no action %s", s->path, key);
	} else {
		r = sql_err(s, rc, "read an action", err);
	}
	sqlite3_reset(st);
	return r;
}

int st_action_mark_lost(st_store *s, const char *key, tf_error *err)
{
	unsigned char bin[32];
	int r = parse_action_key(key, "action", bin, err);

	if (r < 0)
		return r;
	if ((r = wr_begin(s, err)) < 0)
		return r;
	return wr_end(s, action_mark_lost(s, bin, NULL, err), err);
}

int st_action_clear_lost(st_store *s, const char *key, tf_error *err)
{
	unsigned char bin[32];
	sqlite3_stmt *st;
	int r = parse_action_key(key, "action", bin, err), rc;

	if (r < 0)
		return r;
	if ((r = wr_begin(s, err)) < 0)
		return r;
	if ((r = get_stmt(s, S_ACT_CLEAR_LOST, &st, err)) < 0)
		return wr_end(s, r, err);
	sqlite3_bind_blob(st, 1, bin, 32, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		r = sql_err(s, rc, "clear the lost mark of an action", err);
	return wr_end(s, r, err);
}

int st_action_is_lost(st_store *s, const char *key, tf_error *err)
{
	unsigned char bin[32];
	sqlite3_stmt *st;
	int r = parse_action_key(key, "action", bin, err), rc;

	if (r < 0)
		return r;
	if ((r = get_stmt(s, S_ACT_IS_LOST, &st, err)) < 0)
		return r;
	sqlite3_bind_blob(st, 1, bin, 32, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = sqlite3_column_int64(st, 0) != 0;
	else if (rc == SQLITE_DONE)
		r = 0;
	else
		r = sql_err(s, rc, "read an action", err);
	sqlite3_reset(st);
	return r;
}
