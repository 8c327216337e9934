/* Schema versions: a store newer than this build is refused with a clear
 * message and left byte for byte as it was; older ones are migrated one
 * step at a time, each step all or nothing; files that are not stores are
 * refused. */
#include "store_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

static void raw_exec(const char *db, const char *sql)
{
	sqlite3 *h;
	char *msg = NULL;
	CHECK(sqlite3_open(db, &h) == SQLITE_OK);
	if (sqlite3_exec(h, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "raw_exec(%s): %s\n", sql, msg);
		exit(1);
	}
	CHECK(sqlite3_close(h) == SQLITE_OK);
}

static long long raw_int(const char *db, const char *sql)
{
	sqlite3 *h;
	sqlite3_stmt *st;
	long long v = -1;
	CHECK(sqlite3_open(db, &h) == SQLITE_OK);
	CHECK(sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	CHECK(sqlite3_close(h) == SQLITE_OK);
	return v;
}

typedef struct snapshot {
	char *bytes;
	size_t len;
	struct stat sb;
} snapshot;

static snapshot take(const char *path)
{
	snapshot s;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(fstat(fd, &s.sb) == 0);
	s.len = (size_t)s.sb.st_size;
	s.bytes = malloc(s.len + 1);
	CHECK(s.bytes);
	CHECK(read(fd, s.bytes, s.len) == (ssize_t)s.len);
	close(fd);
	return s;
}

static void same_as(const char *path, snapshot *before)
{
	snapshot now = take(path);
	char *side = NULL;
	struct stat sb;

	CHECK_INT_EQ(now.len, before->len);
	CHECK(memcmp(now.bytes, before->bytes, now.len) == 0);
	CHECK_INT_EQ(now.sb.st_mtim.tv_sec, before->sb.st_mtim.tv_sec);
	CHECK_INT_EQ(now.sb.st_mtim.tv_nsec, before->sb.st_mtim.tv_nsec);
	CHECK_INT_EQ(now.sb.st_ino, before->sb.st_ino);
	CHECK(asprintf(&side, "%s-wal", path) > 0);
	CHECK(stat(side, &sb) < 0 && errno == ENOENT);
	free(side);
	CHECK(asprintf(&side, "%s-shm", path) > 0);
	CHECK(stat(side, &sb) < 0 && errno == ENOENT);
	free(side);
	free(now.bytes);
	free(before->bytes);
}

static void expect_refused(const char *db, const st_options *opts, int code, const char *needle)
{
	tf_error e = { 0 };
	st_store *s = st_open(db, opts, &e);

	if (s || e.code != code || !strstr(e.message, needle) || !strstr(e.message, db)) {
		fprintf(stderr, "open %s: got %p %d '%s', want %d containing '%s'\n", db, (void *)s,
			e.code, e.message, code, needle);
		exit(1);
	}
}

static void test_too_new(const char *dir)
{
	char *db = path_join(dir, "new.db");
	char *wal = path_join(dir, "newwal.db");

	raw_exec(db, "PRAGMA application_id = 1413903220; CREATE TABLE future(x);"
		     "INSERT INTO future VALUES('from topfetch 9'); PRAGMA user_version = 7;");
	snapshot snap = take(db);
	expect_refused(db, NULL, -ENOTSUP,
		       "has schema version 7, this topfetch knows up to 1; upgrade topfetch");
	same_as(db, &snap);

	/* A newer topfetch left it in WAL mode. */
	raw_exec(wal, "PRAGMA journal_mode = WAL; PRAGMA application_id = 1413903220;"
		      "CREATE TABLE future(x); PRAGMA user_version = 2;");
	CHECK_INT_EQ(raw_int(wal, "PRAGMA user_version"), 2);
	snap = take(wal);
	expect_refused(wal, NULL, -ENOTSUP, "has schema version 2, this topfetch knows up to 1");
	same_as(wal, &snap);
	free(db);
	free(wal);
}

static void test_not_a_store(const char *dir)
{
	char *junk = path_join(dir, "junk.db");
	char *foreign = path_join(dir, "foreign.db");
	char *zero_ver = path_join(dir, "foreign0.db");

	int fd = open(junk, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	for (int i = 0; i < 200; i++)
		CHECK(write(fd, "this is not a database at all. ", 31) == 31);
	close(fd);
	snapshot snap = take(junk);
	expect_refused(junk, NULL, -EBADMSG, "is not a topfetch store (not an SQLite database)");
	same_as(junk, &snap);

	raw_exec(foreign, "CREATE TABLE users(name); PRAGMA user_version = 3;");
	snap = take(foreign);
	expect_refused(foreign, NULL, -EBADMSG, "is an SQLite database but not a topfetch store");
	same_as(foreign, &snap);

	/* No version, but tables of someone else's. */
	raw_exec(zero_ver, "CREATE TABLE outputs(path);");
	snap = take(zero_ver);
	expect_refused(zero_ver, NULL, -EBADMSG, "not a topfetch store");
	same_as(zero_ver, &snap);
	free(junk);
	free(foreign);
	free(zero_ver);
}

static void put_one(st_store *s, const char *path, uint64_t i)
{
	char h[65];
	hash_of(i, 99, h);
	st_output o = file_output(path, h, 10);
	OK(st_output_put(s, &o, err));
}

static void test_migrations(const char *dir)
{
	char *db = path_join(dir, "mig.db");
	size_t n_builtin;
	const st_migration *builtin = st_schema_migrations(&n_builtin);
	st_options opts;
	st_record rec;

	CHECK_INT_EQ(n_builtin, ST_SCHEMA_VERSION);
	CHECK_INT_EQ(builtin[0].to_version, 1);

	/* A new store is created at the current version, in WAL mode. */
	st_store *s = open_ok(db, NULL);
	put_one(s, "bazel-out/v1/a", 1);
	st_close(s);
	CHECK_INT_EQ(raw_int(db, "PRAGMA user_version"), 1);
	CHECK_INT_EQ(raw_int(db, "PRAGMA application_id"), 0x54467374);
	CHECK_INT_EQ(raw_int(db, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);

	/* A future version 2 adds a column and a table; opening the v1 store
	 * with it migrates and keeps the data. */
	st_migration v2[2] = {
		builtin[0],
		{ 2, "ALTER TABLE outputs ADD COLUMN note TEXT;"
		     "CREATE TABLE v2_marker(x); INSERT INTO v2_marker VALUES(42);" },
	};
	st_options_init(&opts);
	opts.migrations = v2;
	opts.n_migrations = 2;
	s = open_ok(db, &opts);
	OK(st_output_get(s, "bazel-out/v1/a", &rec, err));
	put_one(s, "bazel-out/v2/b", 2);
	st_close(s);
	CHECK_INT_EQ(raw_int(db, "PRAGMA user_version"), 2);
	CHECK_INT_EQ(raw_int(db, "SELECT x FROM v2_marker"), 42);
	CHECK_INT_EQ(raw_int(db, "SELECT count(*) FROM outputs WHERE note IS NULL"), 2);

	/* This build knows only version 1: refused, untouched. */
	snapshot snap = take(db);
	expect_refused(db, NULL, -ENOTSUP, "has schema version 2, this topfetch knows up to 1; upgrade topfetch");
	same_as(db, &snap);

	/* A version 3 step that fails half-way leaves the store at version 2,
	 * with nothing of the step applied and the data intact. */
	st_migration v3[3] = { v2[0], v2[1], { 3, "CREATE TABLE half(x); THIS IS NOT SQL;" } };
	opts.migrations = v3;
	opts.n_migrations = 3;
	expect_refused(db, &opts, -EIO,
		       "migration to schema version 3 failed, the store is left at version 2");
	CHECK_INT_EQ(raw_int(db, "PRAGMA user_version"), 2);
	CHECK_INT_EQ(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'half'"), 0);
	opts.migrations = v2;
	opts.n_migrations = 2;
	s = open_ok(db, &opts);
	OK(st_output_get(s, "bazel-out/v2/b", &rec, err));
	st_close(s);

	/* A new store goes through every step. */
	char *fresh = path_join(dir, "fresh.db");
	s = open_ok(fresh, &opts);
	put_one(s, "bazel-out/fresh", 3);
	st_close(s);
	CHECK_INT_EQ(raw_int(fresh, "PRAGMA user_version"), 2);
	CHECK_INT_EQ(raw_int(fresh, "SELECT x FROM v2_marker"), 42);

	/* Steps must be numbered 1, 2, ... */
	st_migration gap[2] = { builtin[0], { 3, "SELECT 1" } };
	opts.migrations = gap;
	opts.n_migrations = 2;
	expect_refused(fresh, &opts, -EINVAL, "migration step 1 must bring the schema to version 2");
	free(fresh);
	free(db);
}

int main(void)
{
	char *dir = tmpdir_new();

	test_too_new(dir);
	test_not_a_store(dir);
	test_migrations(dir);
	tmpdir_remove(dir);
	return 0;
}
