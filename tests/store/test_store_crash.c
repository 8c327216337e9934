/* kill -9 in the middle of a big batch of writes: the store reopens with
 * every committed batch present and nothing of the one in flight. */
#include "store_util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#define BATCH 4000

static void crash_path(uint64_t i, char *buf, size_t n)
{
	snprintf(buf, n, "bazel-out/k8-fastbuild/bin/crash/pkg%04llu/sub/generated_source_file_%08llu.pb.cc",
		 (unsigned long long)(i * 7919 % 997), (unsigned long long)i);
}

static void crash_label(uint64_t i, char *buf, size_t n)
{
	snprintf(buf, n, "//crash/pkg%04llu:library_with_a_rather_long_target_name_%llu",
		 (unsigned long long)(i * 7919 % 997), (unsigned long long)(i / 4));
}

/* Writes outputs from where the store ends, reporting each commit, until
 * killed. A 1 MiB cache makes SQLite spill the open batch into the WAL. */
static void writer(const char *db, int report_fd)
{
	st_options opts;
	tf_error e = { 0 };
	char p[256], label[160], h[65];
	uint64_t start;

	st_options_init(&opts);
	opts.batch_ops = BATCH;
	opts.cache_mib = 1;
	st_store *s = st_open(db, &opts, &e);
	if (!s || st_outputs_count(s, -1, &start, &e) < 0) {
		fprintf(stderr, "writer: %s\n", e.message);
		_exit(2);
	}
	for (uint64_t i = start;; i++) {
		crash_path(i, p, sizeof(p));
		crash_label(i, label, sizeof(label));
		hash_of(i, 77, h);
		st_output o = file_output(p, h, (int64_t)i + 1);
		o.target = label;
		o.action_key = h;
		if (st_output_put(s, &o, &e) < 0) {
			fprintf(stderr, "writer: %s\n", e.message);
			_exit(3);
		}
		if ((i + 1) % BATCH == 0) {
			CHECK_INT_EQ(st_pending(s), 0); /* that put committed */
			uint64_t done = i + 1;
			if (write(report_fd, &done, sizeof(done)) != sizeof(done))
				_exit(4);
		}
	}
}

static void verify(const char *db, uint64_t committed)
{
	char p[256], label[160], h[65];
	uint64_t n;
	st_record *rec = malloc(sizeof(*rec));
	tf_error e = { 0 };

	CHECK(rec);
	st_store *s = open_ok(db, NULL);
	OK(st_integrity_check(s, err));
	OK(st_outputs_count(s, -1, &n, err));
	/* Whole batches only: what was reported, or one more if the kill came
	 * between a commit and its report. */
	if (n != committed && n != committed + BATCH) {
		fprintf(stderr, "store has %llu outputs, %llu were reported committed (batch %d)\n",
			(unsigned long long)n, (unsigned long long)committed, BATCH);
		exit(1);
	}
	for (uint64_t i = 0; i < n; i++) {
		crash_path(i, p, sizeof(p));
		crash_label(i, label, sizeof(label));
		hash_of(i, 77, h);
		OK(st_output_get(s, p, rec, err));
		CHECK_STR_EQ(rec->o.hash, h);
		CHECK_STR_EQ(rec->o.action_key, h);
		CHECK_STR_EQ(rec->o.target, label);
		CHECK_INT_EQ(rec->o.size, (int64_t)i + 1);
		CHECK_INT_EQ(rec->o.state, ST_REMOTE);
	}
	/* Nothing of the batch in flight. */
	for (uint64_t i = n; i < n + BATCH; i += 97) {
		crash_path(i, p, sizeof(p));
		CHECK_INT_EQ(st_output_get(s, p, rec, &e), -ENOENT);
	}
	st_close(s);
	free(rec);
	printf("after kill: %llu outputs, %llu reported committed, integrity ok\n",
	       (unsigned long long)n, (unsigned long long)committed);
}

static void test_kill_mid_batch(const char *dir)
{
	char *db = path_join(dir, "crash.db");
	uint64_t committed = 0;

	for (int round = 0; round < 4; round++) {
		int fds[2];
		CHECK(pipe(fds) == 0);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			writer(db, fds[1]);
		}
		close(fds[1]);
		/* Let it commit a few batches, then kill it at a different point
		 * of the next one each round. */
		uint64_t done, want = committed + (uint64_t)(2 + round) * BATCH;
		do {
			CHECK(read(fds[0], &done, sizeof(done)) == sizeof(done));
			committed = done;
		} while (committed < want);
		struct timespec ts = { 0, 1000000L * (round * 7 % 5) + 300000L * round };
		nanosleep(&ts, NULL);
		CHECK(kill(pid, SIGKILL) == 0);
		int status;
		CHECK(waitpid(pid, &status, 0) == pid);
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		/* Reports sent before it died. */
		while (read(fds[0], &done, sizeof(done)) == sizeof(done))
			committed = done;
		close(fds[0]);
		verify(db, committed);
		uint64_t n;
		st_store *s = open_ok(db, NULL);
		OK(st_outputs_count(s, -1, &n, err));
		st_close(s);
		committed = n;
	}
	free(db);
}

/* Writes not yet committed are lost as a whole; flushed ones are not. */
static void test_uncommitted(const char *dir)
{
	char *db = path_join(dir, "uncommitted.db");
	char h[65], p[64];
	int fds[2];
	uint64_t n;

	CHECK(pipe(fds) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		st_options opts;
		tf_error e = { 0 };
		close(fds[0]);
		st_options_init(&opts);
		opts.batch_ops = 3;
		st_store *s = st_open(db, &opts, &e);
		if (!s)
			_exit(2);
		for (int i = 0; i < 100; i++) {
			snprintf(p, sizeof(p), "bazel-out/u/f%03d", i);
			hash_of((uint64_t)i, 3, h);
			st_output o = file_output(p, h, 1);
			if (st_output_put(s, &o, &e) < 0)
				_exit(3);
		}
		/* 100 = 33 batches of 3 + 1 pending; then FETCHING marks, flushed. */
		for (int i = 0; i < 100; i += 10) {
			snprintf(p, sizeof(p), "bazel-out/u/f%03d", i);
			if (st_output_set_state(s, p, ST_FETCHING, NULL, NULL, &e) < 0)
				_exit(4);
		}
		if (st_flush(s, &e) < 0)
			_exit(5);
		/* Two more writes, one short of a batch: never committed. */
		st_output x = file_output("bazel-out/u/never1", h, 1);
		if (st_output_put(s, &x, &e) < 0 ||
		    st_output_set_state(s, "bazel-out/u/f001", ST_FETCHING, NULL, NULL, &e) < 0 ||
		    st_pending(s) != 2)
			_exit(6);
		CHECK(write(fds[1], "k", 1) == 1);
		for (;;)
			pause();
	}
	close(fds[1]);
	char c;
	CHECK(read(fds[0], &c, 1) == 1);
	close(fds[0]);
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, NULL, 0) == pid);

	st_store *s = open_ok(db, NULL);
	OK(st_outputs_count(s, -1, &n, err));
	CHECK_INT_EQ(n, 100);
	st_record rec;
	tf_error e = { 0 };
	CHECK_INT_EQ(st_output_get(s, "bazel-out/u/never1", &rec, &e), -ENOENT);
	/* The previous run's downloads in flight, to queue again. */
	OK(st_outputs_count(s, ST_FETCHING, &n, err));
	CHECK_INT_EQ(n, 10);
	OK(st_output_get(s, "bazel-out/u/f001", &rec, err));
	CHECK_INT_EQ(rec.o.state, ST_REMOTE);
	OK(st_integrity_check(s, err));
	st_close(s);
	free(db);
}

/* A commit that cannot be written (the file size limit stands in for a
 * full disk) loses its batch and says so; the store goes on working, and
 * the folder and action ids it handed out in the lost batch are not reused
 * for rows that are gone. Runs in a child: the limit is per process. */
static void test_write_failure(const char *dir)
{
	char *db = path_join(dir, "full.db");
	char h[65], k1[65], k2[65];

	hash_of(1, 5, h);
	hash_of(2, 5, k1);
	hash_of(3, 5, k2);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		st_options opts;
		tf_error e = { 0 };
		struct rlimit rl;

		st_options_init(&opts);
		opts.batch_ops = 1000;
		st_store *s = st_open(db, &opts, &e);
		CHECK(s);
		st_output base = file_output("bazel-out/full/a/base", h, 3);
		base.action_key = k1;
		CHECK_INT_EQ(st_output_put(s, &base, &e), 0);
		CHECK_INT_EQ(st_flush(s, &e), 0);

		/* A batch that adds a folder and an action... */
		st_output x = file_output("bazel-out/full/newdir/x", h, 3);
		x.action_key = k2;
		x.target = "//full:x";
		CHECK_INT_EQ(st_output_put(s, &x, &e), 0);
		CHECK_INT_EQ(st_pending(s), 1);
		/* ...and the disk is full when it commits. */
		signal(SIGXFSZ, SIG_IGN);
		CHECK(getrlimit(RLIMIT_FSIZE, &rl) == 0);
		rlim_t old = rl.rlim_cur;
		rl.rlim_cur = 0;
		CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
		int r = st_flush(s, &e);
		rl.rlim_cur = old;
		CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
		if (r >= 0) {
			fprintf(stderr, "a commit with no room to write succeeded\n");
			_exit(2);
		}
		CHECK_CONTAINS(e.message, db);
		CHECK_CONTAINS(e.message, "the 1 writes since the last commit were lost");
		CHECK_INT_EQ(st_pending(s), 0);

		/* The same folder and action again, now that there is room. */
		st_output y = file_output("bazel-out/full/newdir/y", h, 3);
		y.action_key = k2;
		y.target = "//full:x";
		CHECK_INT_EQ(st_output_put(s, &y, &e), 0);
		CHECK_INT_EQ(st_flush(s, &e), 0);
		st_close(s);
		_exit(0);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	st_record rec;
	tf_error e = { 0 };
	st_store *s = open_ok(db, NULL);
	OK(st_integrity_check(s, err));
	OK(st_output_get(s, "bazel-out/full/a/base", &rec, err));
	CHECK_STR_EQ(rec.o.action_key, k1);
	CHECK_INT_EQ(st_output_get(s, "bazel-out/full/newdir/x", &rec, &e), -ENOENT);
	OK(st_output_get(s, "bazel-out/full/newdir/y", &rec, err));
	CHECK_STR_EQ(rec.o.path, "bazel-out/full/newdir/y");
	CHECK_STR_EQ(rec.o.action_key, k2);
	CHECK_STR_EQ(rec.o.target, "//full:x");
	st_action act;
	OK(st_action_get(s, k2, &act, err));
	CHECK_STR_EQ(act.target, "//full:x");
	st_close(s);
	free(db);
}

int main(void)
{
	char *dir = tmpdir_new();

	test_uncommitted(dir);
	test_write_failure(dir);
	test_kill_mid_batch(dir);
	tmpdir_remove(dir);
	return 0;
}
