/* Following a BEP stream while it is written, as Bazel writes
 * --build_event_binary_file during a build:
 *  - a child process appends a real fixture in small pieces, cut inside
 *    length varints and inside messages, with pauses longer than the poll
 *    interval; the parent follows the file and must get all 45 events in
 *    order, byte for byte, most of them while the file is still short;
 *  - the same through a pipe (stdin);
 *  - a writer that stops early: idle timeout with "incomplete stream" (cut
 *    between records and inside one), a pipe closed early;
 *  - records larger than the read buffer (300 KiB, 5 MiB) through a pipe;
 *  - a write to a followed file wakes the follower at once (inotify), not
 *    at the end of its 1 s poll interval;
 *  - the stop flag, a file that shrinks, a file replaced at its path. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "ev_test_util.h"

struct rec {
	size_t off, plen, len; /* record start, prefix bytes, message bytes */
};

static unsigned char *fx;
static size_t fx_len;
static struct rec recs[64];
static size_t n_recs;

static void split_fixture(void)
{
	size_t off = 0;

	fx = slurp(fixture("run1_populate", "bep.bin"), &fx_len);
	while (off < fx_len) {
		uint64_t v = 0;
		size_t p = 0;
		CHECK(n_recs < 64);
		do
			v |= (uint64_t)(fx[off + p] & 0x7f) << (7 * p);
		while (fx[off + p++] & 0x80);
		recs[n_recs].off = off;
		recs[n_recs].plen = p;
		recs[n_recs].len = (size_t)v;
		n_recs++;
		off += p + (size_t)v;
	}
	CHECK_INT_EQ(off, fx_len);
	CHECK_INT_EQ(n_recs, 45);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Writes fx[0, upto) to fd in pieces: every record is cut inside its length
 * varint (when it has 2+ bytes) and in the middle of its message, the rest
 * goes in chunks of 1..500 bytes; pauses of 0-2 ms, and of 45 ms (over two
 * poll intervals) every 10th piece. */
static void write_in_pieces(int fd, size_t upto)
{
	size_t cuts[512], n = 0, at = 0;
	unsigned seed = 12345;

	for (size_t i = 0; i < n_recs && n < 500; i++) {
		if (recs[i].plen >= 2)
			cuts[n++] = recs[i].off + 1;
		cuts[n++] = recs[i].off + recs[i].plen + recs[i].len / 2;
	}
	for (size_t k = 0, piece = 0; at < upto; piece++) {
		size_t end = at + 1 + (seed = seed * 1103515245u + 12345u, (seed >> 16) % 500);
		while (k < n && cuts[k] <= at)
			k++;
		if (k < n && cuts[k] < end)
			end = cuts[k];
		if (end > upto)
			end = upto;
		write_all(fd, fx + at, end - at);
		at = end;
		sleep_ms(piece % 10 == 9 ? 45 : (int)(piece % 3));
	}
}

struct seen {
	size_t n;
	size_t while_short; /* events delivered while the file was not complete */
	const char *path;
};

static int on_event(ev_event *ev, void *user, tf_error *err)
{
	struct seen *s = user;
	const struct rec *r;
	tf__buf b;

	(void)err;
	CHECK(s->n < n_recs);
	r = &recs[s->n++];
	CHECK_INT_EQ(ev->record, s->n);
	CHECK_INT_EQ(ev->offset, r->off);
	CHECK_INT_EQ(ev->size, r->len);
	/* Byte for byte the record Bazel wrote. */
	tf__buf_init(&b, 1 << 20);
	CHECK(ev_binary_append(&b, &ev->msg->base, NULL) == 0);
	CHECK_INT_EQ(b.len, r->plen + r->len);
	CHECK(memcmp(b.data, fx + r->off, b.len) == 0);
	tf__buf_fini(&b);
	CHECK_INT_EQ(ev->msg->last_message, s->n == n_recs);
	if (s->path) {
		struct stat st;
		CHECK(stat(s->path, &st) == 0);
		if ((size_t)st.st_size < fx_len)
			s->while_short++;
	}
	return 0;
}

static pid_t spawn_writer(int fd, size_t upto)
{
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		write_in_pieces(fd, upto);
		close(fd);
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) || WIFSIGNALED(status));
}

static void test_growing_file(const char *dir)
{
	char path[4096];
	tf_error err = { 0 };
	ev_follow_options fo;
	struct seen s = { 0 };
	ev_reader *r;
	pid_t pid;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/growing.bin", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	CHECK(fd >= 0);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	pid = spawn_writer(fd, fx_len);
	close(fd);
	ev_follow_options_init(&fo);
	fo.idle_timeout_ms = 10000;
	fo.poll_interval_ms = 20;
	s.path = path;
	rc = ev_reader_follow(r, &fo, on_event, &s, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(s.n, 45);
	CHECK(ev_reader_complete(r));
	/* The writer takes well over a second; most events must have been
	 * delivered while it was still writing. */
	CHECK(s.while_short >= 30);
	reap(pid);
	CHECK_INT_EQ(ev_reader_finish(r, &err), 0);
	ev_reader_free(r);
}

static void test_growing_pipe(void)
{
	tf_error err = { 0 };
	ev_follow_options fo;
	struct seen s = { 0 };
	ev_reader *r;
	int fds[2], rc;
	pid_t pid;

	CHECK(pipe(fds) == 0);
	pid = spawn_writer(fds[1], fx_len);
	close(fds[1]);
	r = ev_reader_new_fd(fds[0], "stdin", NULL, &err);
	CHECK(r);
	ev_follow_options_init(&fo);
	fo.idle_timeout_ms = 10000;
	fo.poll_interval_ms = 20;
	rc = ev_reader_follow(r, &fo, on_event, &s, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(s.n, 45);
	ev_reader_free(r);
	close(fds[0]);
	reap(pid);
}

/* The writer stops after `upto` bytes and never closes the file. */
static void test_stalled_file(const char *dir, size_t upto, size_t want_events, const char *want)
{
	char path[4096];
	tf_error err = { 0 };
	ev_follow_options fo;
	struct seen s = { 0 };
	uint64_t t0;
	ev_reader *r;
	pid_t pid;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/stalled.bin", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	CHECK(fd >= 0);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	pid = spawn_writer(fd, upto);
	close(fd);
	ev_follow_options_init(&fo);
	fo.idle_timeout_ms = 400;
	fo.poll_interval_ms = 20;
	t0 = tf__now_ns();
	rc = ev_reader_follow(r, &fo, on_event, &s, &err);
	CHECK_INT_EQ(rc, -ETIMEDOUT);
	CHECK_INT_EQ(s.n, want_events);
	CHECK_CONTAINS(err.message, path);
	CHECK_CONTAINS(err.message, "no new data for 400 ms");
	CHECK_CONTAINS(err.message, want);
	/* It gave up because of the idle time, not much later. */
	CHECK(tf__now_ns() - t0 < 10ull * 1000000000ull);
	/* A timeout is not final: the stream may still continue. */
	CHECK_INT_EQ(ev_reader_next(r, &(ev_event *){ NULL }, &err), 0);
	ev_reader_free(r);
	reap(pid);
}

static void test_pipe_closed_early(void)
{
	tf_error err = { 0 };
	struct seen s = { 0 };
	char want[200];
	ev_reader *r;
	int fds[2], rc;
	pid_t pid;

	CHECK(pipe(fds) == 0);
	pid = spawn_writer(fds[1], recs[20].off);
	close(fds[1]);
	r = ev_reader_new_fd(fds[0], "stdin", NULL, &err);
	CHECK(r);
	rc = ev_reader_follow(r, NULL, on_event, &s, &err);
	CHECK_INT_EQ(rc, -ENODATA);
	CHECK_INT_EQ(s.n, 20);
	snprintf(want, sizeof(want),
		 "stdin: incomplete stream: ended after record 20 at byte offset %zu without last_message",
		 recs[20].off);
	CHECK_STR_EQ(err.message, want);
	CHECK(ev_reader_at_eof(r));
	ev_reader_free(r);
	close(fds[0]);
	reap(pid);
}

static atomic_bool stop_flag;

static void *set_stop(void *arg)
{
	(void)arg;
	sleep_ms(150);
	atomic_store(&stop_flag, true);
	return NULL;
}

static void test_stop_flag(const char *dir)
{
	char path[4096];
	tf_error err = { 0 };
	ev_follow_options fo;
	struct seen s = { 0 };
	pthread_t th;
	uint64_t t0;
	ev_reader *r;
	int rc;

	snprintf(path, sizeof(path), "%s/stopped.bin", dir);
	write_file(path, fx, recs[3].off);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	ev_follow_options_init(&fo);
	fo.poll_interval_ms = 50;
	fo.stop = &stop_flag;
	atomic_store(&stop_flag, false);
	CHECK(pthread_create(&th, NULL, set_stop, NULL) == 0);
	t0 = tf__now_ns();
	rc = ev_reader_follow(r, &fo, on_event, &s, &err);
	CHECK_INT_EQ(rc, -ECANCELED);
	CHECK_INT_EQ(s.n, 3);
	CHECK_CONTAINS(err.message, "stopped");
	/* Noticed within a few poll intervals of being set. */
	CHECK(tf__now_ns() - t0 < 2ull * 1000000000ull);
	CHECK(pthread_join(th, NULL) == 0);
	ev_reader_free(r);
}

static void test_shrunk(const char *dir)
{
	char path[4096];
	tf_error err = { 0 };
	ev_event *ev;
	ev_reader *r;
	int n = 0, rc;

	snprintf(path, sizeof(path), "%s/shrunk.bin", dir);
	write_file(path, fx, recs[10].off);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		ev_event_unref(ev);
		n++;
	}
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(n, 10);
	CHECK(truncate(path, 5) == 0);
	rc = ev_reader_next(r, &ev, &err);
	CHECK_INT_EQ(rc, -ESTALE);
	CHECK_CONTAINS(err.message, "shrank to 5 bytes");
	/* Errors are final. */
	CHECK_INT_EQ(ev_reader_next(r, &ev, &err), -ESTALE);
	CHECK_INT_EQ(ev_reader_finish(r, &err), -ESTALE);
	ev_reader_free(r);
}

static void test_replaced(const char *dir)
{
	char path[4096], other[4096];
	tf_error err = { 0 };
	ev_follow_options fo;
	struct seen s = { 0 };
	ev_reader *r;
	pid_t pid;
	int rc;

	snprintf(path, sizeof(path), "%s/replaced.bin", dir);
	snprintf(other, sizeof(other), "%s/replaced.new", dir);
	write_file(path, fx, recs[5].off);
	write_file(other, fx, recs[2].off);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		sleep_ms(200);
		_exit(rename(other, path) == 0 ? 0 : 1);
	}
	ev_follow_options_init(&fo);
	fo.idle_timeout_ms = 5000;
	fo.poll_interval_ms = 20;
	rc = ev_reader_follow(r, &fo, on_event, &s, &err);
	CHECK_INT_EQ(rc, -ESTALE);
	CHECK_INT_EQ(s.n, 5);
	CHECK_CONTAINS(err.message, "replaced");
	ev_reader_free(r);
	reap(pid);
}

/* Records of 0 bytes to 5 MiB through a pipe: the buffer grows to a whole
 * record and the record arrives intact. */
static int on_big(ev_event *ev, void *user, tf_error *err)
{
	static const size_t sizes[] = { 10, 300 << 10, 0, 5 << 20, 1, 70000 };
	size_t *n = user;
	const char *text;

	(void)err;
	CHECK(*n < sizeof(sizes) / sizeof(sizes[0]));
	CHECK_INT_EQ(ev->record, *n + 1);
	CHECK_INT_EQ(ev->msg->id->progress->opaque_count, (int)*n);
	text = ev->msg->progress->stderr;
	CHECK_INT_EQ(strlen(text), sizes[*n]);
	for (size_t i = 0; i < sizes[*n]; i++)
		CHECK(text[i] == (char)('a' + (i + *n) % 26));
	(*n)++;
	return 0;
}

static void test_large_records(void)
{
	static const size_t sizes[] = { 10, 300 << 10, 0, 5 << 20, 1, 70000 };
	const size_t count = sizeof(sizes) / sizeof(sizes[0]);
	tf_error err = { 0 };
	ev_follow_options fo;
	ev_reader *r;
	tf__buf b;
	size_t n = 0;
	int fds[2], rc;
	pid_t pid;

	tf__buf_init(&b, 64 << 20);
	for (size_t k = 0; k < count; k++) {
		char *text = malloc(sizes[k] + 1);
		CHECK(text);
		for (size_t i = 0; i < sizes[k]; i++)
			text[i] = (char)('a' + (i + k) % 26);
		text[sizes[k]] = '\0';
		add_progress(&b, (int)k, text, k + 1 == count);
		free(text);
	}
	CHECK(pipe(fds) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		/* Uneven pieces, some tiny, some larger than a pipe buffer. */
		for (size_t at = 0, i = 0; at < b.len; i++) {
			size_t piece = i % 3 == 0 ? 7 : i % 3 == 1 ? 100000 : 333333;
			if (piece > b.len - at)
				piece = b.len - at;
			write_all(fds[1], b.data + at, piece);
			at += piece;
		}
		_exit(0);
	}
	close(fds[1]);
	r = ev_reader_new_fd(fds[0], "big records", NULL, &err);
	CHECK(r);
	ev_follow_options_init(&fo);
	fo.idle_timeout_ms = 10000;
	fo.poll_interval_ms = 20;
	rc = ev_reader_follow(r, &fo, on_big, &n, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(n, count);
	CHECK_INT_EQ(ev_reader_offset(r), b.len);
	ev_reader_free(r);
	close(fds[0]);
	reap(pid);
	tf__buf_fini(&b);
}

static void test_wakeup(const char *dir)
{
	char path[4096];
	tf_error err = { 0 };
	ev_follow_options fo;
	struct seen s = { 0 };
	uint64_t t0, took;
	ev_reader *r;
	pid_t pid;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/wakeup.bin", dir);
	write_file(path, fx, recs[40].off);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		sleep_ms(300);
		fd = open(path, O_WRONLY | O_APPEND);
		write_all(fd, fx + recs[40].off, fx_len - recs[40].off);
		_exit(0);
	}
	ev_follow_options_init(&fo);
	fo.poll_interval_ms = 1000;
	t0 = tf__now_ns();
	rc = ev_reader_follow(r, &fo, on_event, &s, &err);
	took = (tf__now_ns() - t0) / 1000000u;
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(s.n, 45);
	/* About 300 ms; sleeping through the interval would take 1000. */
	if (took >= 800)
		fprintf(stderr, "follow took %llu ms\n", (unsigned long long)took);
	CHECK(took < 800);
	ev_reader_free(r);
	reap(pid);
}

int main(void)
{
	char *dir = make_tmpdir();
	char want[300];

	split_fixture();
	test_growing_file(dir);
	test_growing_pipe();
	snprintf(want, sizeof(want),
		 "incomplete stream: ended after record 20 at byte offset %zu without last_message",
		 recs[20].off);
	test_stalled_file(dir, recs[20].off, 20, want);
	snprintf(want, sizeof(want),
		 "incomplete stream: record 21 at byte offset %zu is truncated: its length prefix says %zu bytes, but the input ends after %zu",
		 recs[20].off, recs[20].len, recs[20].len / 2);
	test_stalled_file(dir, recs[20].off + recs[20].plen + recs[20].len / 2, 20, want);
	test_pipe_closed_early();
	test_large_records();
	test_wakeup(dir);
	test_stop_flag(dir);
	test_shrunk(dir);
	test_replaced(dir);
	rm_tree(dir);
	free(fx);
	return 0;
}
