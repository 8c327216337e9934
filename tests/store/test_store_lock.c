/* Two processes (or two opens in one process) never share a store: the
 * second gets a clear error naming the holder; the lock goes with its
 * holder, even one killed with SIGKILL. */
#include "store_util.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

static int child_status(pid_t pid)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* In a child: try to open, expect the in-use error naming holder. */
static void child_expect_busy(const char *db, pid_t holder)
{
	tf_error e = { 0 };
	char want[64];
	st_store *s = st_open(db, NULL, &e);

	if (s) {
		fprintf(stderr, "child: opened a store another process holds\n");
		_exit(2);
	}
	snprintf(want, sizeof(want), "in use by another topfetch (pid %ld)", (long)holder);
	if (e.code != -EBUSY || !strstr(e.message, want) || !strstr(e.message, db) ||
	    !strstr(e.message, "wait for it or use another --store")) {
		fprintf(stderr, "child: unexpected error %d '%s'\n", e.code, e.message);
		_exit(3);
	}
	_exit(0);
}

int main(void)
{
	char *dir = tmpdir_new();
	char *db = path_join(dir, "lock.db");
	char h[65];
	tf_error e = { 0 };
	pid_t pid;
	int sync_pipe[2];

	hash_of(1, 1, h);

	/* The parent holds it; a child is refused. */
	st_store *s = open_ok(db, NULL);
	st_output o = file_output("bazel-out/held", h, 1);
	OK(st_output_put(s, &o, err));
	OK(st_flush(s, err));
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		child_expect_busy(db, getppid());
	CHECK_INT_EQ(child_status(pid), 0);

	/* A second open in the same process is refused too. */
	CHECK(st_open(db, NULL, &e) == NULL);
	CHECK_INT_EQ(e.code, -EBUSY);
	CHECK_CONTAINS(e.message, "is in use by another topfetch");
	/* The refused opens changed nothing. */
	st_record rec;
	OK(st_output_get(s, "bazel-out/held", &rec, err));
	OK(st_integrity_check(s, err));
	st_close(s);

	/* A child holds it and writes; the parent is refused, then gets it
	 * once the child was killed without closing. */
	CHECK(pipe(sync_pipe) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(sync_pipe[0]);
		st_store *cs = st_open(db, NULL, &e);
		if (!cs)
			_exit(4);
		st_output co = file_output("bazel-out/child", h, 1);
		if (st_output_put(cs, &co, &e) < 0 || st_flush(cs, &e) < 0)
			_exit(5);
		CHECK(write(sync_pipe[1], "k", 1) == 1);
		for (;;)
			pause();
	}
	close(sync_pipe[1]);
	char c;
	CHECK(read(sync_pipe[0], &c, 1) == 1);
	close(sync_pipe[0]);
	CHECK(st_open(db, NULL, &e) == NULL);
	CHECK_INT_EQ(e.code, -EBUSY);
	char want[64];
	snprintf(want, sizeof(want), "(pid %ld)", (long)pid);
	CHECK_CONTAINS(e.message, want);
	CHECK_CONTAINS(e.message, db);
	CHECK(kill(pid, SIGKILL) == 0);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	s = open_ok(db, NULL);
	OK(st_output_get(s, "bazel-out/child", &rec, err));
	OK(st_output_get(s, "bazel-out/held", &rec, err));
	OK(st_integrity_check(s, err));
	st_close(s);

	/* Closed cleanly: free for the next one. */
	s = open_ok(db, NULL);
	st_close(s);

	free(db);
	tmpdir_remove(dir);
	return 0;
}
