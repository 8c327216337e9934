/* The store keeps every field, resets state when content changes, marks
 * actions lost, iterates by state, batches writes, and refuses bad input
 * with a message naming it. */
#include "store_util.h"

#include <errno.h>

static const char *A_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static void check_same(const st_output *got, const st_output *want)
{
	CHECK_STR_EQ(got->path, want->path);
	if (want->hash)
		CHECK_STR_EQ(got->hash, want->hash);
	else
		CHECK(got->hash == NULL);
	CHECK_INT_EQ(got->size, want->size);
	CHECK_INT_EQ(got->executable, want->executable);
	CHECK_INT_EQ(got->kind, want->kind);
	if (want->symlink_target)
		CHECK_STR_EQ(got->symlink_target, want->symlink_target);
	else
		CHECK(got->symlink_target == NULL);
	if (want->action_key)
		CHECK_STR_EQ(got->action_key, want->action_key);
	else
		CHECK(got->action_key == NULL);
	if (want->target)
		CHECK_STR_EQ(got->target, want->target);
	else
		CHECK(got->target == NULL);
}

static void test_round_trip(const char *dir)
{
	char *db = path_join(dir, "rt.db");
	char h1[65], h2[65], h3[65], hk[65];
	st_record *rec = malloc(sizeof(*rec));
	st_output outs[5];
	uint64_t build = 0, n = 0;
	st_local loc = { 12345, 1700000000123456789LL, 0xfffffffffffffff0ull, 0x8000000000000001ull };

	CHECK(rec);
	hash_of(1, 7, h1);
	hash_of(2, 7, h2);
	hash_of(3, 7, h3);
	hash_of(4, 7, hk);

	st_store *s = open_ok(db, NULL);
	CHECK_INT_EQ(st_build_current(s), 0);
	OK(st_build_begin(s, &build, err));
	CHECK_INT_EQ(build, 1);
	OK(st_build_begin(s, &build, err));
	CHECK_INT_EQ(build, 2);

	outs[0] = file_output("bazel-out/k8-fastbuild/bin/pkg/a.txt", h1, 12345);
	outs[0].action_key = A_KEY;
	outs[0].target = "//pkg:a";
	outs[1] = file_output("bazel-out/k8-fastbuild/bin/pkg/tool", h2, (int64_t)1 << 53);
	outs[1].executable = true;
	outs[1].action_key = hk;
	outs[2] = file_output("bazel-out/k8-fastbuild/bin/pkg/dir", h3, 77);
	outs[2].kind = ST_KIND_DIRECTORY;
	outs[2].target = "@repo//pkg/sub:dir_target";
	outs[3] = file_output("bazel-out/k8-fastbuild/bin/pkg/dir/sub/empty", TF_EMPTY_SHA256, 0);
	outs[3].kind = ST_KIND_TREE_FILE;
	outs[3].executable = true;
	outs[4] = file_output("bazel-out/k8-fastbuild/bin/pkg/link", NULL, 0);
	outs[4].kind = ST_KIND_SYMLINK;
	outs[4].symlink_target = "../../../external/x/ünï code/target with spaces";
	outs[4].action_key = A_KEY;
	for (int i = 0; i < 5; i++)
		OK(st_output_put(s, &outs[i], err));

	/* Visible before the batch is committed... */
	for (int i = 0; i < 5; i++) {
		OK(st_output_get(s, outs[i].path, rec, err));
		if (i == 4) {
			/* No label given, but its action (outs[0]'s) has one. */
			CHECK_STR_EQ(rec->o.target, "//pkg:a");
			rec->o.target = NULL;
		}
		check_same(&rec->o, &outs[i]);
		CHECK_INT_EQ(rec->o.state, ST_REMOTE);
		CHECK_INT_EQ(rec->o.build, 2);
		CHECK_INT_EQ(rec->o.local.size, 0);
	}
	OK(st_output_set_state(s, outs[0].path, ST_LOCAL, &loc, h1, err));
	OK(st_output_set_state(s, outs[1].path, ST_FETCHING, NULL, NULL, err));
	OK(st_output_set_state(s, outs[2].path, ST_LOST, NULL, NULL, err));
	OK(st_action_put(s, A_KEY, "//pkg:a", err));
	OK(st_action_put(s, hk, NULL, err));
	st_close(s);

	/* ...and after a close and reopen, from the file. */
	s = open_ok(db, NULL);
	CHECK_INT_EQ(st_build_current(s), 2);
	for (int i = 0; i < 5; i++) {
		OK(st_output_get(s, outs[i].path, rec, err));
		if (i == 4) {
			CHECK_STR_EQ(rec->o.target, "//pkg:a");
			rec->o.target = NULL;
		}
		check_same(&rec->o, &outs[i]);
		CHECK_INT_EQ(rec->o.build, 2);
	}
	OK(st_output_get(s, outs[0].path, rec, err));
	CHECK_INT_EQ(rec->o.state, ST_LOCAL);
	CHECK_INT_EQ(rec->o.local.size, loc.size);
	CHECK_INT_EQ(rec->o.local.mtime_ns, loc.mtime_ns);
	CHECK(rec->o.local.ino == loc.ino);
	CHECK(rec->o.local.dev == loc.dev);
	OK(st_output_get(s, outs[1].path, rec, err));
	CHECK_INT_EQ(rec->o.state, ST_FETCHING);
	OK(st_output_get(s, outs[2].path, rec, err));
	CHECK_INT_EQ(rec->o.state, ST_LOST);
	OK(st_output_get(s, outs[4].path, rec, err));
	CHECK_INT_EQ(rec->o.state, ST_REMOTE);

	st_action act;
	OK(st_action_get(s, A_KEY, &act, err));
	CHECK_STR_EQ(act.key, A_KEY);
	CHECK_STR_EQ(act.target, "//pkg:a");
	CHECK(!act.lost);
	CHECK_INT_EQ(act.build, 2);
	OK(st_action_get(s, hk, &act, err));
	CHECK_STR_EQ(act.target, "");

	OK(st_outputs_count(s, -1, &n, err));
	CHECK_INT_EQ(n, 5);
	OK(st_outputs_count(s, ST_REMOTE, &n, err));
	CHECK_INT_EQ(n, 2);
	OK(st_outputs_count(s, ST_LOCAL, &n, err));
	CHECK_INT_EQ(n, 1);

	/* A later put with unknown action/target keeps what was known; a new
	 * build stamps it. */
	OK(st_build_begin(s, &build, err));
	st_output again = outs[0];
	again.action_key = NULL;
	again.target = NULL;
	OK(st_output_put(s, &again, err));
	OK(st_output_get(s, outs[0].path, rec, err));
	check_same(&rec->o, &outs[0]);
	CHECK_INT_EQ(rec->o.build, 3);
	CHECK_INT_EQ(rec->o.state, ST_LOCAL);

	tf_error e = { 0 };
	CHECK_INT_EQ(st_output_get(s, "bazel-out/none", rec, &e), -ENOENT);
	CHECK_CONTAINS(e.message, "has no output 'bazel-out/none'");
	CHECK_INT_EQ(st_action_get(s, h1, &act, &e), -ENOENT);
	OK(st_integrity_check(s, err));
	st_close(s);
	free(rec);
	free(db);
}

static void test_digest_change(const char *dir)
{
	char *db = path_join(dir, "dc.db");
	char h1[65], h2[65];
	st_record rec;
	st_local loc = { 5, 42, 7, 8 };
	const char *p = "bazel-out/k8-opt/bin/x/y.o";

	hash_of(10, 1, h1);
	hash_of(11, 1, h2);
	st_store *s = open_ok(db, NULL);
	st_output o = file_output(p, h1, 5);

	OK(st_output_put(s, &o, err));
	OK(st_output_set_state(s, p, ST_LOCAL, &loc, NULL, err));
	/* Same content again: stays local, record kept. */
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOCAL);
	CHECK_INT_EQ(rec.o.local.mtime_ns, 42);

	/* New digest: back to remote, local record gone. */
	o.hash = h2;
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	CHECK_INT_EQ(rec.o.local.mtime_ns, 0);
	CHECK_INT_EQ(rec.o.local.ino, 0);
	CHECK_STR_EQ(rec.o.hash, h2);

	/* Size alone, executable bit alone, kind alone: each resets. */
	OK(st_output_set_state(s, p, ST_LOCAL, &loc, NULL, err));
	o.size = 6;
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	OK(st_output_set_state(s, p, ST_LOCAL, &loc, NULL, err));
	o.executable = true;
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	OK(st_output_set_state(s, p, ST_LOCAL, &loc, NULL, err));
	o.kind = ST_KIND_TREE_FILE;
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);

	/* Fetching survives a re-injection of the same content... */
	OK(st_output_set_state(s, p, ST_FETCHING, NULL, NULL, err));
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_FETCHING);
	/* ...lost does not: a fresh result means the blob was uploaded again. */
	OK(st_output_set_state(s, p, ST_LOST, NULL, NULL, err));
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);

	/* A symlink whose target changes goes back to remote too. */
	st_output l = file_output("bazel-out/k8-opt/bin/x/l", NULL, 0);
	l.kind = ST_KIND_SYMLINK;
	l.symlink_target = "y.o";
	OK(st_output_put(s, &l, err));
	OK(st_output_set_state(s, l.path, ST_LOCAL, &loc, NULL, err));
	OK(st_output_put(s, &l, err));
	OK(st_output_get(s, l.path, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOCAL);
	l.symlink_target = "z.o";
	OK(st_output_put(s, &l, err));
	OK(st_output_get(s, l.path, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	CHECK_STR_EQ(rec.o.symlink_target, "z.o");

	/* Marking local only if the hash is still the one fetched. */
	tf_error e = { 0 };
	CHECK_INT_EQ(st_output_set_state(s, p, ST_LOCAL, &loc, h1, &e), -ESTALE);
	CHECK_CONTAINS(e.message, "changed while it was fetched");
	CHECK_CONTAINS(e.message, p);
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	OK(st_output_set_state(s, p, ST_LOCAL, &loc, h2, err));
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOCAL);
	CHECK_INT_EQ(st_output_set_state(s, "bazel-out/nope", ST_REMOTE, NULL, NULL, &e), -ENOENT);
	CHECK_CONTAINS(e.message, "no output 'bazel-out/nope'");
	st_close(s);
	free(db);
}

static void test_lost(const char *dir)
{
	char *db = path_join(dir, "lost.db");
	char h1[65], key2[65];
	st_record rec;
	const char *p = "bazel-out/k8-fastbuild/bin/gen/out.bin";

	hash_of(20, 3, h1);
	hash_of(21, 3, key2);
	st_store *s = open_ok(db, NULL);
	CHECK_INT_EQ(st_action_is_lost(s, A_KEY, NULL), 0); /* unknown: not lost */

	OK(st_action_put(s, A_KEY, "//gen:out", err));
	CHECK_INT_EQ(st_action_is_lost(s, A_KEY, NULL), 0);
	st_output o = file_output(p, h1, 100);
	o.action_key = A_KEY;
	o.target = "//gen:out";
	OK(st_output_put(s, &o, err));

	/* The downloader got a 404: output and action are lost, the report
	 * names both. */
	OK(st_output_mark_lost(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOST);
	CHECK_STR_EQ(rec.o.action_key, A_KEY);
	CHECK_STR_EQ(rec.o.target, "//gen:out");
	CHECK_STR_EQ(rec.o.hash, h1);
	CHECK_INT_EQ(st_action_is_lost(s, A_KEY, NULL), 1);

	/* Re-recording the action (a cache hit seen again) keeps it lost. */
	OK(st_action_put(s, A_KEY, NULL, err));
	CHECK_INT_EQ(st_action_is_lost(s, A_KEY, NULL), 1);
	st_close(s);

	/* Durable. */
	s = open_ok(db, NULL);
	CHECK_INT_EQ(st_action_is_lost(s, A_KEY, NULL), 1);
	OK(st_output_get(s, p, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOST);
	st_action act;
	OK(st_action_get(s, A_KEY, &act, err));
	CHECK(act.lost);
	CHECK_STR_EQ(act.target, "//gen:out");

	/* The action re-ran and uploaded a new result. */
	OK(st_action_clear_lost(s, A_KEY, err));
	CHECK_INT_EQ(st_action_is_lost(s, A_KEY, NULL), 0);

	/* An action unknown until it is lost; clearing an unknown one is a no-op. */
	OK(st_action_mark_lost(s, key2, err));
	CHECK_INT_EQ(st_action_is_lost(s, key2, NULL), 1);
	OK(st_action_get(s, key2, &act, err));
	CHECK_STR_EQ(act.target, "");
	char key3[65];
	hash_of(22, 3, key3);
	OK(st_action_clear_lost(s, key3, err));
	CHECK_INT_EQ(st_action_get(s, key3, &act, NULL), -ENOENT);

	/* An output without a known action: lost alone. */
	st_output q = file_output("bazel-out/q", h1, 100);
	OK(st_output_put(s, &q, err));
	OK(st_output_mark_lost(s, q.path, NULL, err));
	OK(st_output_get(s, q.path, &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_LOST);
	tf_error e = { 0 };
	CHECK_INT_EQ(st_output_mark_lost(s, "bazel-out/none", NULL, &e), -ENOENT);
	CHECK_CONTAINS(e.message, "bazel-out/none");
	st_close(s);
	free(db);
}

typedef struct visit {
	st_store *s;
	int n;
	bool seen[100];
	st_state want;
	int stop_at;
	bool requeue;
} visit;

static int visit_cb(const st_output *o, void *user)
{
	visit *v = user;
	int i;

	/* Each once, and only in the state asked for. */
	CHECK(sscanf(o->path, "bazel-out/k8/bin/it/d%*d/f%d", &i) == 1);
	CHECK(i >= 0 && i < 100);
	CHECK(!v->seen[i]);
	v->seen[i] = true;
	CHECK_INT_EQ(o->state, v->want);
	v->n++;
	if (v->requeue) {
		/* Writes from inside the callback are allowed. */
		tf_error e = { 0 };
		CHECK_INT_EQ(st_output_set_state(v->s, o->path, ST_REMOTE, NULL, NULL, &e), 0);
	}
	return v->n == v->stop_at ? 42 : 0;
}

static void test_iteration_and_batching(const char *dir)
{
	char *db = path_join(dir, "it.db");
	char h[65], p[128];
	st_options opts;
	uint64_t n;

	st_options_init(&opts);
	opts.batch_ops = 7;
	st_store *s = open_ok(db, &opts);
	for (int i = 0; i < 100; i++) {
		hash_of((uint64_t)i, 5, h);
		int j = (i * 37) % 100;
		snprintf(p, sizeof(p), "bazel-out/k8/bin/it/d%d/f%03d", j % 7, j);
		st_output o = file_output(p, h, 1 + i);
		OK(st_output_put(s, &o, err));
		/* A batch commits on its 7th write. */
		CHECK_INT_EQ(st_pending(s), (unsigned)((i + 1) % 7));
	}
	OK(st_flush(s, err));
	CHECK_INT_EQ(st_pending(s), 0);
	for (int i = 0; i < 100; i += 3) {
		snprintf(p, sizeof(p), "bazel-out/k8/bin/it/d%d/f%03d", i % 7, i);
		OK(st_output_set_state(s, p, ST_FETCHING, NULL, NULL, err));
	}

	visit v = { .s = s, .want = ST_FETCHING };
	CHECK_INT_EQ(st_outputs_by_state(s, ST_FETCHING, visit_cb, &v, NULL), 0);
	CHECK_INT_EQ(v.n, 34);
	for (int i = 0; i < 100; i++)
		CHECK_INT_EQ(v.seen[i], i % 3 == 0);
	memset(&v, 0, sizeof(v));
	v.s = s;
	v.want = ST_REMOTE;
	CHECK_INT_EQ(st_outputs_by_state(s, ST_REMOTE, visit_cb, &v, NULL), 0);
	CHECK_INT_EQ(v.n, 66);
	memset(&v, 0, sizeof(v));
	v.want = ST_FETCHING;
	v.stop_at = 5;
	CHECK_INT_EQ(st_outputs_by_state(s, ST_FETCHING, visit_cb, &v, NULL), 42);
	CHECK_INT_EQ(v.n, 5);
	CHECK_INT_EQ(st_outputs_by_state(s, ST_LOST, visit_cb, &v, NULL), 0);

	/* Crash recovery: hand back the FETCHING ones, re-queue them as remote
	 * from inside the callback; every one is visited exactly once. */
	memset(&v, 0, sizeof(v));
	v.s = s;
	v.want = ST_FETCHING;
	v.requeue = true;
	CHECK_INT_EQ(st_recover_fetching(s, visit_cb, &v, NULL), 0);
	CHECK_INT_EQ(v.n, 34);
	OK(st_outputs_count(s, ST_FETCHING, &n, err));
	CHECK_INT_EQ(n, 0);
	OK(st_outputs_count(s, ST_REMOTE, &n, err));
	CHECK_INT_EQ(n, 100);
	st_close(s);
	free(db);
}

/* Every bad input gets an error code and a message naming it. */
static void expect_put_error(st_store *s, const st_output *o, int code, const char *needle)
{
	tf_error e = { 0 };
	int r = st_output_put(s, o, &e);

	if (r != code || !strstr(e.message, needle)) {
		fprintf(stderr, "put of '%.40s': got %d '%s', want %d containing '%s'\n",
			o && o->path ? o->path : "(null)", r, e.message, code, needle);
		exit(1);
	}
}

static void test_bad_inputs(const char *dir)
{
	char *db = path_join(dir, "bad.db");
	char h[65];
	char *longp = malloc(TF__PATH_MAX + 2);
	char *longl = malloc(ST_LABEL_MAX + 2);
	tf_error e = { 0 };
	st_record rec;
	uint64_t n;

	CHECK(longp && longl);
	memset(longp, 'a', TF__PATH_MAX + 1);
	for (int i = 100; i < TF__PATH_MAX; i += 100)
		longp[i] = '/';
	longp[TF__PATH_MAX + 1] = '\0';
	memset(longl, 'l', ST_LABEL_MAX + 1);
	longl[ST_LABEL_MAX + 1] = '\0';
	hash_of(1, 9, h);
	st_store *s = open_ok(db, NULL);

	st_output o = file_output("bazel-out/ok", h, 3);
	expect_put_error(s, NULL, -EINVAL, "no output given");
	o.path = NULL;
	expect_put_error(s, &o, -EINVAL, "no path");
	o.path = "";
	expect_put_error(s, &o, -EINVAL, "empty path");
	o.path = "/etc/passwd";
	expect_put_error(s, &o, -EINVAL, "'/etc/passwd' is absolute");
	o.path = "bazel-out/../../etc";
	expect_put_error(s, &o, -EINVAL, "'..' component");
	o.path = "bazel-out//x";
	expect_put_error(s, &o, -EINVAL, "empty component");
	o.path = longp;
	expect_put_error(s, &o, -ENAMETOOLONG, "4097 bytes long (limit 4096)");
	o.path = "bazel-out/ok";
	o.hash = "ABCDEF";
	expect_put_error(s, &o, -EINVAL, "output 'bazel-out/ok': 'ABCDEF' is not a SHA-256 digest");
	char upper[65];
	memcpy(upper, h, 65);
	upper[10] = 'A';
	o.hash = upper;
	expect_put_error(s, &o, -EINVAL, "is not a SHA-256 digest");
	char longh[70];
	snprintf(longh, sizeof(longh), "%s0", h);
	o.hash = longh;
	expect_put_error(s, &o, -EINVAL, "is not a SHA-256 digest");
	o.hash = NULL;
	expect_put_error(s, &o, -EINVAL, "a file needs a hash");
	o.hash = h;
	o.size = -1;
	expect_put_error(s, &o, -ERANGE, "output 'bazel-out/ok': size -1");
	o.size = ((int64_t)1 << 53) + 1;
	expect_put_error(s, &o, -ERANGE, "out of range");
	o.size = 0;
	expect_put_error(s, &o, -EINVAL, "has size 0 but is not the empty blob");
	o.size = 3;
	o.kind = (st_kind)9;
	expect_put_error(s, &o, -EINVAL, "kind 9");
	o.kind = ST_KIND_FILE;
	o.symlink_target = "x";
	expect_put_error(s, &o, -EINVAL, "only symlinks have a symlink target");
	o.symlink_target = NULL;
	o.kind = ST_KIND_SYMLINK;
	o.hash = NULL;
	o.size = 0;
	expect_put_error(s, &o, -EINVAL, "needs a non-empty target");
	o.symlink_target = longp;
	expect_put_error(s, &o, -ENAMETOOLONG, "symlink target is 4097 bytes");
	o.symlink_target = "t";
	o.hash = h;
	expect_put_error(s, &o, -EINVAL, "a symlink has no hash");
	o.hash = NULL;
	o.size = 4;
	expect_put_error(s, &o, -EINVAL, "a symlink has size 0");
	o = file_output("bazel-out/ok", h, 3);
	o.action_key = "xyz";
	expect_put_error(s, &o, -EINVAL, "output 'bazel-out/ok': action key 'xyz' is not a SHA-256");
	o.action_key = NULL;
	o.target = "";
	expect_put_error(s, &o, -EINVAL, "target label is empty");
	o.target = longl;
	expect_put_error(s, &o, -ENAMETOOLONG, "target label");
	/* None of them wrote anything. */
	OK(st_outputs_count(s, -1, &n, err));
	CHECK_INT_EQ(n, 0);
	CHECK_INT_EQ(st_pending(s), 0);

	CHECK_INT_EQ(st_output_get(s, "../x", &rec, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "'..'");
	CHECK_INT_EQ(st_output_set_state(s, "bazel-out/ok", (st_state)7, NULL, NULL, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "state 7");
	CHECK_INT_EQ(st_output_set_state(s, "bazel-out/ok", ST_LOCAL, NULL, NULL, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "needs what was written");
	st_local loc = { -5, 0, 0, 0 };
	CHECK_INT_EQ(st_output_set_state(s, "bazel-out/ok", ST_LOCAL, &loc, NULL, &e), -ERANGE);
	CHECK_CONTAINS(e.message, "local size -5");
	CHECK_INT_EQ(st_output_set_state(s, "bazel-out/ok", ST_REMOTE, &loc, NULL, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "only a local output has a local record");
	CHECK_INT_EQ(st_output_set_state(s, "bazel-out/ok", ST_REMOTE, NULL, "beef", &e), -EINVAL);
	CHECK_CONTAINS(e.message, "expected hash 'beef'");
	CHECK_INT_EQ(st_action_put(s, "ABC", NULL, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "action key 'ABC' is not a SHA-256 digest");
	CHECK_INT_EQ(st_action_put(s, NULL, NULL, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "no action key");
	CHECK_INT_EQ(st_action_put(s, A_KEY, longl, &e), -ENAMETOOLONG);
	CHECK_CONTAINS(e.message, A_KEY);
	CHECK_INT_EQ(st_action_is_lost(s, "00", &e), -EINVAL);
	CHECK_INT_EQ(st_action_mark_lost(s, "zz", &e), -EINVAL);
	CHECK_INT_EQ(st_find_local(s, "nothex", -1, &rec, &e), -EINVAL);
	CHECK_CONTAINS(e.message, "'nothex' is not a SHA-256");
	CHECK_INT_EQ(st_outputs_by_state(s, (st_state)4, visit_cb, NULL, &e), -EINVAL);
	CHECK_INT_EQ(st_outputs_count(s, 9, &n, &e), -EINVAL);

	/* Open arguments. */
	st_options opts;
	st_options_init(&opts);
	opts.batch_ops = 0;
	CHECK(st_open(db, &opts, &e) == NULL);
	CHECK_INT_EQ(e.code, -EINVAL);
	CHECK_CONTAINS(e.message, "batch of 0 writes is out of range");
	st_options_init(&opts);
	opts.cache_mib = ST_CACHE_MIB_MAX + 1;
	CHECK(st_open(db, &opts, &e) == NULL);
	CHECK_CONTAINS(e.message, "cache of");
	CHECK(st_open(NULL, NULL, &e) == NULL);
	CHECK_CONTAINS(e.message, "no path given");
	CHECK(st_open(longp, NULL, &e) == NULL);
	CHECK_INT_EQ(e.code, -ENAMETOOLONG);
	char *nodir = path_join(dir, "no/such/dir/x.db");
	CHECK(st_open(nodir, NULL, &e) == NULL);
	CHECK_INT_EQ(e.code, -ENOENT);
	CHECK_CONTAINS(e.message, nodir);
	CHECK_CONTAINS(e.message, "lock file");

	st_close(s);
	st_close(NULL);
	free(nodir);
	free(longp);
	free(longl);
	free(db);
}

/* A label is kept once on the action when output and action agree, and
 * read back the same way either way. */
static void test_labels(const char *dir)
{
	char *db = path_join(dir, "labels.db");
	char h[65], k1[65], k2[65];
	st_record rec;
	st_action act;

	hash_of(1, 42, h);
	hash_of(2, 42, k1);
	hash_of(3, 42, k2);
	st_store *s = open_ok(db, NULL);
	OK(st_action_put(s, k1, "//a:one", err));
	st_output o = file_output("bazel-out/bin/a/one.o", h, 9);
	o.action_key = k1;
	o.target = "//a:one";
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, o.path, &rec, err));
	CHECK_STR_EQ(rec.o.target, "//a:one");
	/* Its own label when it differs (an alias, say). */
	o.target = "//a:alias";
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, o.path, &rec, err));
	CHECK_STR_EQ(rec.o.target, "//a:alias");
	/* Back to the action's: not stuck on the old one. */
	o.target = "//a:one";
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, o.path, &rec, err));
	CHECK_STR_EQ(rec.o.target, "//a:one");
	/* Unknown keeps it. */
	o.target = NULL;
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, o.path, &rec, err));
	CHECK_STR_EQ(rec.o.target, "//a:one");

	/* An output naming an action never put records it, with its label. */
	st_output p = file_output("bazel-out/bin/b/two.o", h, 9);
	p.action_key = k2;
	p.target = "//b:two";
	OK(st_output_put(s, &p, err));
	OK(st_action_get(s, k2, &act, err));
	CHECK_STR_EQ(act.target, "//b:two");
	CHECK(!act.lost);
	/* Re-putting the action without a label keeps it; with one, sets it. */
	OK(st_action_put(s, k2, NULL, err));
	OK(st_action_get(s, k2, &act, err));
	CHECK_STR_EQ(act.target, "//b:two");
	OK(st_action_put(s, k2, "//b:renamed", err));
	OK(st_action_get(s, k2, &act, err));
	CHECK_STR_EQ(act.target, "//b:renamed");
	OK(st_output_get(s, p.path, &rec, err));
	CHECK_STR_EQ(rec.o.target, "//b:renamed");
	CHECK_STR_EQ(rec.o.action_key, k2);
	/* An output that moves to another action follows it. */
	o.action_key = k2;
	OK(st_output_put(s, &o, err));
	OK(st_output_get(s, o.path, &rec, err));
	CHECK_STR_EQ(rec.o.action_key, k2);
	st_close(s);
	free(db);
}

/* More folders than the id cache holds, a top-level file, and names that
 * differ only in the folder: every one reads back as written. */
static void test_many_folders(const char *dir)
{
	char *db = path_join(dir, "folders.db");
	char h[65], p[96];
	st_record rec;
	uint64_t n;
	st_options opts;

	st_options_init(&opts);
	opts.batch_ops = 1000;
	st_store *s = open_ok(db, &opts);
	for (int i = 0; i < 30000; i++) {
		hash_of((uint64_t)i, 43, h);
		snprintf(p, sizeof(p), "bazel-out/bin/pkg%05d/same_name", (i * 7919) % 30000);
		st_output o = file_output(p, h, i + 1);
		OK(st_output_put(s, &o, err));
	}
	st_output top = file_output("top_level_file", h, 1);
	OK(st_output_put(s, &top, err));
	st_close(s);

	s = open_ok(db, &opts);
	OK(st_outputs_count(s, -1, &n, err));
	CHECK_INT_EQ(n, 30001);
	for (int i = 0; i < 30000; i++) {
		hash_of((uint64_t)i, 43, h);
		snprintf(p, sizeof(p), "bazel-out/bin/pkg%05d/same_name", (i * 7919) % 30000);
		OK(st_output_get(s, p, &rec, err));
		CHECK_STR_EQ(rec.o.path, p);
		CHECK_STR_EQ(rec.o.hash, h);
		CHECK_INT_EQ(rec.o.size, i + 1);
	}
	OK(st_output_get(s, "top_level_file", &rec, err));
	CHECK_STR_EQ(rec.o.path, "top_level_file");
	tf_error e = { 0 };
	CHECK_INT_EQ(st_output_get(s, "bazel-out/bin/pkg00001", &rec, &e), -ENOENT);
	CHECK_INT_EQ(st_output_get(s, "bazel-out/bin/nope/same_name", &rec, &e), -ENOENT);
	st_close(s);
	free(db);
}

/* st_outputs_put records what the same st_output_put calls would: every
 * field, in groups and one by one, the target kept or set per output, state
 * reset only for changed content; an invalid output stops it there. */
#define MANY 100
static void test_many_puts(const char *dir)
{
	char *db = path_join(dir, "many.db");
	static char paths[MANY][64], hashes[MANY][65], keys[3][65];
	st_output outs[MANY];
	st_record *rec = malloc(sizeof(*rec));
	st_local loc = { 10, 1700000000000000000LL, 5, 6 };
	tf_error e = { 0 };
	uint64_t build;

	CHECK(rec);
	for (int k = 0; k < 3; k++)
		hash_of(900 + (uint64_t)k, 3, keys[k]);
	st_store *s = open_ok(db, NULL);
	OK(st_build_begin(s, &build, err));
	OK(st_action_put(s, keys[0], "//m:labelled", err));
	for (int i = 0; i < MANY; i++) {
		snprintf(paths[i], sizeof(paths[i]), "bazel-out/bin/m/d%02d/f%03d", i / 7, i);
		hash_of((uint64_t)i, 11, hashes[i]);
		outs[i] = file_output(paths[i], hashes[i], 1 + i);
		outs[i].executable = i % 3 == 0;
		/* The first 64 (two groups) name a target, the rest do not (a
		 * group that keeps the stored target, then single rows). */
		outs[i].target = i < 64 ? (i % 2 ? "//m:labelled" : "//m:other") : NULL;
		outs[i].action_key = i < 64 ? keys[i / 32] : (i % 5 ? keys[2] : NULL);
	}
	outs[10].kind = ST_KIND_SYMLINK;
	outs[10].hash = NULL;
	outs[10].size = 0;
	outs[10].symlink_target = "../f000";
	outs[70].kind = ST_KIND_TREE_FILE;
	outs[70].hash = TF_EMPTY_SHA256;
	outs[70].size = 0;
	OK(st_outputs_put(s, outs, MANY, err));
	for (int i = 0; i < MANY; i++) {
		OK(st_output_get(s, paths[i], rec, err));
		check_same(&rec->o, &outs[i]);
		CHECK_INT_EQ(rec->o.state, ST_REMOTE);
		CHECK_INT_EQ(rec->o.build, build);
	}

	/* Again, same content: local files stay local; changed content (23)
	 * goes back to remote; a known target stays when none is given (80). */
	OK(st_output_set_state(s, paths[22], ST_LOCAL, &loc, NULL, err));
	OK(st_output_set_state(s, paths[23], ST_LOCAL, &loc, NULL, err));
	OK(st_output_set_state(s, paths[80], ST_LOCAL, &loc, NULL, err));
	hash_of(12345, 11, hashes[23]);
	outs[80].action_key = NULL;
	st_output with_target = outs[80];
	with_target.target = "//m:eighty";
	OK(st_output_put(s, &with_target, err));
	OK(st_outputs_put(s, outs, MANY, err));
	OK(st_output_get(s, paths[22], rec, err));
	CHECK_INT_EQ(rec->o.state, ST_LOCAL);
	CHECK_INT_EQ(rec->o.local.ino, 5);
	OK(st_output_get(s, paths[23], rec, err));
	CHECK_INT_EQ(rec->o.state, ST_REMOTE);
	CHECK_STR_EQ(rec->o.hash, hashes[23]);
	OK(st_output_get(s, paths[80], rec, err));
	CHECK_INT_EQ(rec->o.state, ST_LOCAL);
	CHECK_STR_EQ(rec->o.target, "//m:eighty");

	/* An invalid output in a group: those before it are recorded, it and
	 * the rest are not, and the message names it. */
	for (int i = 0; i < MANY; i++)
		paths[i][9] = 'X'; /* bazel-out/Xin/...: new paths */
	outs[40].hash = "not-a-digest";
	CHECK_INT_EQ(st_outputs_put(s, outs, MANY, &e), -EINVAL);
	CHECK(strstr(e.message, paths[40]) != NULL);
	for (int i = 0; i < MANY; i++)
		CHECK_INT_EQ(st_output_get(s, paths[i], rec, &e), i < 40 ? 0 : -ENOENT);
	OK(st_flush(s, err));
	st_close(s);
	free(rec);
	free(db);
}

int main(void)
{
	char *dir = tmpdir_new();

	test_round_trip(dir);
	test_digest_change(dir);
	test_lost(dir);
	test_iteration_and_batching(dir);
	test_labels(dir);
	test_many_folders(dir);
	test_many_puts(dir);
	test_bad_inputs(dir);
	tmpdir_remove(dir);
	return 0;
}
