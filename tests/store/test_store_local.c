/* What we wrote is compared with what is on disk: a file changed, deleted or
 * replaced behind topfetch's back is noticed; dedup finds a verified copy. */
#include "store_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

static int root = -1;

static void write_file(const char *rel, const char *content, mode_t mode)
{
	char *tmp = NULL;
	CHECK(asprintf(&tmp, "%s.tmp", rel) > 0);
	int fd = openat(root, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	CHECK(fd >= 0);
	CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
	CHECK(fchmod(fd, mode) == 0);
	CHECK(close(fd) == 0);
	CHECK(renameat(root, tmp, root, rel) == 0);
	free(tmp);
}

static st_local stat_of(const char *rel)
{
	struct stat sb;
	st_local l;
	CHECK(fstatat(root, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0);
	st_local_from_stat(&sb, &l);
	return l;
}

/* Records rel as written now. */
static void record(st_store *s, const char *rel, const char *hash, int64_t size, st_kind kind,
		   bool exec)
{
	st_output o = file_output(rel, hash, size);
	o.kind = kind;
	o.executable = exec;
	if (kind == ST_KIND_SYMLINK) {
		o.hash = NULL;
		o.size = 0;
		o.symlink_target = "a.txt";
	}
	st_local l = stat_of(rel);
	OK(st_output_put(s, &o, err));
	OK(st_output_set_state(s, rel, ST_LOCAL, &l, NULL, err));
}

static int check(st_store *s, const char *rel)
{
	tf_error e = { 0 };
	int r = st_output_check_local(s, root, rel, &e);
	if (r < 0) {
		fprintf(stderr, "check of %s: %d %s\n", rel, r, e.message);
		exit(1);
	}
	return r;
}

/* Sets the mtime of rel to the given nanoseconds since the epoch. */
static void set_mtime(const char *rel, int64_t ns)
{
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { (time_t)(ns / 1000000000), (long)(ns % 1000000000) } };
	CHECK(utimensat(root, rel, ts, AT_SYMLINK_NOFOLLOW) == 0);
}

/* A file fetched long ago, edited in place with its size and mtime put
 * back: only its ctime tells, and then its bytes decide. A chmod back and
 * forth moves the ctime too, and the bytes keep it. */
static void test_check_local_ctime(st_store *s)
{
	const char *c = "bazel-out/bin/pkg/c.txt";
	const char *hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; /* "hello" */
	st_local before;
	int fd;

	write_file(c, "hello", 0644);
	set_mtime(c, ((int64_t)time(NULL) - 3600) * 1000000000);
	record(s, c, hello, 5, ST_KIND_FILE, false);
	CHECK_INT_EQ(check(s, c), ST_CHECK_SAME);
	CHECK(fchmodat(root, c, 0600, 0) == 0);
	CHECK(fchmodat(root, c, 0644, 0) == 0);
	CHECK_INT_EQ(check(s, c), ST_CHECK_SAME);

	before = stat_of(c);
	fd = openat(root, c, O_WRONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, "jello", 5, 0) == 5);
	CHECK(close(fd) == 0);
	set_mtime(c, before.mtime_ns);
	CHECK_INT_EQ(stat_of(c).size, before.size);
	CHECK_INT_EQ(stat_of(c).mtime_ns, before.mtime_ns);
	CHECK_INT_EQ(stat_of(c).ino, before.ino);
	CHECK_INT_EQ(check(s, c), ST_CHECK_CHANGED);
}

static void test_check_local(st_store *s)
{
	const char *a = "bazel-out/bin/pkg/a.txt";
	char h[65];
	st_local before;

	hash_of(1, 11, h);
	write_file(a, "hello", 0644);
	record(s, a, h, 5, ST_KIND_FILE, false);
	CHECK_INT_EQ(check(s, a), ST_CHECK_SAME);

	/* Appended to: size differs. */
	write_file(a, "hello!", 0644);
	CHECK_INT_EQ(check(s, a), ST_CHECK_CHANGED);
	write_file(a, "hello", 0644);
	record(s, a, h, 5, ST_KIND_FILE, false);

	/* Rewritten in place with the same size, later: mtime differs. */
	before = stat_of(a);
	int fd = openat(root, a, O_WRONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, "HELLO", 5, 0) == 5);
	CHECK(close(fd) == 0);
	set_mtime(a, before.mtime_ns + 1000000000);
	CHECK_INT_EQ(stat_of(a).ino, before.ino);
	CHECK_INT_EQ(stat_of(a).size, before.size);
	CHECK_INT_EQ(check(s, a), ST_CHECK_CHANGED);
	record(s, a, h, 5, ST_KIND_FILE, false);

	/* Replaced by another file of the same size and the same mtime: only
	 * the inode tells. */
	before = stat_of(a);
	write_file("bazel-out/bin/pkg/other", "jello", 0644);
	set_mtime("bazel-out/bin/pkg/other", before.mtime_ns);
	CHECK(renameat(root, "bazel-out/bin/pkg/other", root, a) == 0);
	CHECK(stat_of(a).ino != before.ino);
	CHECK_INT_EQ(stat_of(a).size, before.size);
	CHECK_INT_EQ(stat_of(a).mtime_ns, before.mtime_ns);
	CHECK_INT_EQ(check(s, a), ST_CHECK_CHANGED);
	record(s, a, h, 5, ST_KIND_FILE, false);

	/* Made executable (mtime untouched by chmod). */
	CHECK(fchmodat(root, a, 0755, 0) == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_CHANGED);
	CHECK(fchmodat(root, a, 0644, 0) == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_SAME);

	/* Deleted. */
	CHECK(unlinkat(root, a, 0) == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_MISSING);
	/* Replaced by a folder. */
	CHECK(mkdirat(root, a, 0755) == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_CHANGED);
	CHECK(unlinkat(root, a, AT_REMOVEDIR) == 0);

	/* Its folder replaced by a symlink (to a copy elsewhere): not followed. */
	write_file(a, "hello", 0644);
	record(s, a, h, 5, ST_KIND_FILE, false);
	CHECK(renameat(root, "bazel-out/bin/pkg", root, "bazel-out/bin/pkg2") == 0);
	CHECK(symlinkat("pkg2", root, "bazel-out/bin/pkg") == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_CHANGED);
	CHECK(unlinkat(root, "bazel-out/bin/pkg", 0) == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_MISSING);
	CHECK(renameat(root, "bazel-out/bin/pkg2", root, "bazel-out/bin/pkg") == 0);
	CHECK_INT_EQ(check(s, a), ST_CHECK_SAME);

	/* Executable outputs, symlinks and folders. */
	const char *tool = "bazel-out/bin/pkg/tool";
	write_file(tool, "#!/bin/sh\n", 0755);
	record(s, tool, h, 10, ST_KIND_FILE, true);
	CHECK_INT_EQ(check(s, tool), ST_CHECK_SAME);
	CHECK(fchmodat(root, tool, 0644, 0) == 0);
	CHECK_INT_EQ(check(s, tool), ST_CHECK_CHANGED);

	const char *link = "bazel-out/bin/pkg/link";
	CHECK(symlinkat("a.txt", root, link) == 0);
	record(s, link, NULL, 0, ST_KIND_SYMLINK, false);
	CHECK_INT_EQ(check(s, link), ST_CHECK_SAME);
	CHECK(unlinkat(root, link, 0) == 0);
	CHECK(symlinkat("tool", root, link) == 0);
	CHECK_INT_EQ(check(s, link), ST_CHECK_CHANGED); /* new inode */

	const char *dir = "bazel-out/bin/pkg/tree";
	CHECK(mkdirat(root, dir, 0755) == 0);
	record(s, dir, h, 99, ST_KIND_DIRECTORY, false);
	CHECK_INT_EQ(check(s, dir), ST_CHECK_SAME);
	CHECK(unlinkat(root, dir, AT_REMOVEDIR) == 0);
	write_file(dir, "not a folder", 0644);
	CHECK_INT_EQ(check(s, dir), ST_CHECK_CHANGED);

	/* Not local, and unknown. */
	st_output r = file_output("bazel-out/bin/pkg/remote_only", h, 5);
	OK(st_output_put(s, &r, err));
	CHECK_INT_EQ(check(s, r.path), ST_CHECK_NOT_LOCAL);
	tf_error e = { 0 };
	CHECK_INT_EQ(st_output_check_local(s, root, "bazel-out/unknown", &e), -ENOENT);
	CHECK_CONTAINS(e.message, "no output 'bazel-out/unknown'");
	/* A bad folder handle is an error, not a verdict. */
	CHECK(st_output_check_local(s, 12345, a, &e) < 0);
	CHECK_CONTAINS(e.message, a);
}

static void test_find_local(st_store *s)
{
	char h[65], other[65];
	st_record rec;
	tf_error e = { 0 };

	hash_of(2, 11, h);
	hash_of(3, 11, other);
	CHECK_INT_EQ(st_find_local(s, h, root, &rec, &e), 0);

	/* Two local copies of one blob, and a remote third. */
	write_file("bazel-out/bin/d1", "blob", 0644);
	write_file("bazel-out/bin/d2", "blob", 0644);
	record(s, "bazel-out/bin/d1", h, 4, ST_KIND_FILE, false);
	record(s, "bazel-out/bin/d2", h, 4, ST_KIND_TREE_FILE, false);
	st_output d0 = file_output("bazel-out/bin/d0", h, 4);
	OK(st_output_put(s, &d0, err));
	st_output x = file_output("bazel-out/bin/x", other, 4);
	OK(st_output_put(s, &x, err));

	CHECK_INT_EQ(st_find_local(s, h, root, &rec, &e), 1);
	CHECK_STR_EQ(rec.o.path, "bazel-out/bin/d1");
	CHECK_STR_EQ(rec.o.hash, h);
	CHECK_INT_EQ(rec.o.state, ST_LOCAL);
	CHECK_INT_EQ(st_find_local(s, other, root, &rec, &e), 0);

	/* d1 vanished: skipped and set back to remote; d2 is found. */
	CHECK(unlinkat(root, "bazel-out/bin/d1", 0) == 0);
	CHECK_INT_EQ(st_find_local(s, h, -1, &rec, &e), 1); /* unchecked: stale answer */
	CHECK_STR_EQ(rec.o.path, "bazel-out/bin/d1");
	CHECK_INT_EQ(st_find_local(s, h, root, &rec, &e), 1);
	CHECK_STR_EQ(rec.o.path, "bazel-out/bin/d2");
	CHECK_INT_EQ(rec.o.kind, ST_KIND_TREE_FILE);
	OK(st_output_get(s, "bazel-out/bin/d1", &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);

	/* d2 changed too: nothing left to link from. */
	write_file("bazel-out/bin/d2", "blob-changed", 0644);
	CHECK_INT_EQ(st_find_local(s, h, root, &rec, &e), 0);
	OK(st_output_get(s, "bazel-out/bin/d2", &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
}

typedef struct count_ctx {
	int n;
} count_ctx;

static int count_cb(const st_output *o, void *user)
{
	(void)o;
	((count_ctx *)user)->n++;
	return 0;
}

static void test_verify_local(const char *dbpath)
{
	char h[65], p[64];
	uint64_t demoted = 99, n;

	hash_of(4, 11, h);
	st_store *s = open_ok(dbpath, NULL);
	for (int i = 0; i < 10; i++) {
		snprintf(p, sizeof(p), "bazel-out/bin/v/f%d", i);
		write_file(p, "data", 0644);
		record(s, p, h, 4, ST_KIND_FILE, false);
	}
	st_close(s);

	/* While topfetch was not running: two deleted, one edited. */
	CHECK(unlinkat(root, "bazel-out/bin/v/f3", 0) == 0);
	CHECK(unlinkat(root, "bazel-out/bin/v/f7", 0) == 0);
	write_file("bazel-out/bin/v/f5", "edited", 0644);

	s = open_ok(dbpath, NULL);
	uint64_t local_before;
	OK(st_outputs_count(s, ST_LOCAL, &local_before, err));
	OK(st_recover_verify_local(s, root, &demoted, err));
	CHECK_INT_EQ(demoted, 3);
	OK(st_outputs_count(s, ST_LOCAL, &n, err));
	CHECK_INT_EQ(n, local_before - 3);
	st_record rec;
	OK(st_output_get(s, "bazel-out/bin/v/f5", &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	OK(st_output_get(s, "bazel-out/bin/v/f4", &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOCAL);
	/* Idempotent. */
	OK(st_recover_verify_local(s, root, &demoted, err));
	CHECK_INT_EQ(demoted, 0);
	count_ctx c = { 0 };
	OK(st_outputs_by_state(s, ST_LOCAL, count_cb, &c, err));
	CHECK_INT_EQ((uint64_t)c.n, n);
	tf_error e = { 0 };
	CHECK_INT_EQ(st_recover_verify_local(s, -1, NULL, &e), -EBADF);
	st_close(s);
}

int main(void)
{
	char *dir = tmpdir_new();
	char *out = path_join(dir, "out");
	char *db = path_join(dir, "store.db");

	CHECK(mkdir(out, 0755) == 0);
	root = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(root >= 0);
	CHECK(mkdirat(root, "bazel-out", 0755) == 0);
	CHECK(mkdirat(root, "bazel-out/bin", 0755) == 0);
	CHECK(mkdirat(root, "bazel-out/bin/pkg", 0755) == 0);
	CHECK(mkdirat(root, "bazel-out/bin/v", 0755) == 0);

	st_store *s = open_ok(db, NULL);
	test_check_local(s);
	test_check_local_ctime(s);
	test_find_local(s);
	st_close(s);
	char *db2 = path_join(dir, "verify.db");
	test_verify_local(db2);
	free(db2);

	close(root);
	free(out);
	free(db);
	tmpdir_remove(dir);
	return 0;
}
