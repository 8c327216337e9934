/* The three real Bazel 4.2.3 BEP files: every record reads, in order, with
 * consistent numbering and offsets; the stream is complete; and each of the
 * 7 targets' "default" output group expands to exactly the files Bazel
 * built for it (checked against a table taken from the fixtures README and
 * against Bazel's own flattened importantOutput). Read once from the file
 * and once through a pipe, as stdin would be. */
#include <poll.h>
#include <sys/wait.h>

#include "ev_test_util.h"

#define BIN "bazel-out/k8-fastbuild/bin/"
#define EXEC_ROOT "file:///tmp/bwob/obase/a8f883b5734fbee2049b495b8b191471/execroot/btb_demo/"

struct expect {
	const char *label;
	const char *files[5]; /* prefix joined + name; NULL-terminated */
};

static const struct expect expected[] = {
	{ "//pkg:combined", { BIN "pkg/combined.txt" } },
	{ "//pkg:multi", { BIN "pkg/multi/one.txt", BIN "pkg/multi/two.txt", BIN "pkg/multi/three.bin" } },
	{ "//pkg:exe", { BIN "pkg/hello.sh" } },
	{ "//pkg:big", { BIN "pkg/big.dat" } },
	{ "//pkg:treeart",
	  { BIN "pkg/treeart_dir/a.txt", BIN "pkg/treeart_dir/copy_of_input.txt",
	    BIN "pkg/treeart_dir/sub/b.txt", BIN "pkg/treeart_dir/sub/empty.txt" } },
	{ "//pkg:tool", { "pkg/tool.sh", BIN "pkg/tool" } },
	{ "//pkg:empty", { BIN "pkg/empty.txt" } },
};
#define N_TARGETS (sizeof(expected) / sizeof(expected[0]))

static void file_path(const BuildEventStream__File *f, char *out, size_t n)
{
	size_t k = 0;
	out[0] = '\0';
	for (size_t i = 0; i < f->n_path_prefix; i++)
		k += (size_t)snprintf(out + k, n - k, "%s/", f->path_prefix[i]);
	snprintf(out + k, n - k, "%s", f->name);
}

struct run_state {
	ev_sets *sets;
	ev_event *targets[16];
	size_t n_targets, n_events, n_named, n_last;
	uint64_t next_offset;
	const unsigned char *bytes; /* the fixture, to check sizes and offsets */
	size_t len;
};

static int on_event(ev_event *ev, void *user, tf_error *err)
{
	struct run_state *st = user;
	uint64_t v = 0;
	size_t plen = 0;

	st->n_events++;
	CHECK_INT_EQ(ev->record, st->n_events);
	CHECK_INT_EQ(ev->offset, st->next_offset);
	/* The offset points at the length prefix, which says ev->size. */
	do {
		CHECK(ev->offset + plen < st->len);
		v |= (uint64_t)(st->bytes[ev->offset + plen] & 0x7f) << (7 * plen);
	} while (st->bytes[ev->offset + plen++] & 0x80);
	CHECK_INT_EQ(v, ev->size);
	st->next_offset = ev->offset + plen + ev->size;
	CHECK(ev->msg->id != NULL);
	if (ev->msg->last_message)
		st->n_last++;
	if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES) {
		st->n_named++;
		CHECK(ev_sets_add(st->sets, ev, err) == 0);
	}
	if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED) {
		CHECK(st->n_targets < 16);
		st->targets[st->n_targets++] = ev_event_ref(ev);
	}
	return 0;
}

static void check_targets(struct run_state *st, const char *run)
{
	tf_error err = { 0 };

	CHECK_INT_EQ(st->n_events, 45);
	CHECK_INT_EQ(st->n_named, 7);
	CHECK_INT_EQ(st->n_targets, 7);
	CHECK_INT_EQ(st->n_last, 1);
	CHECK_INT_EQ(ev_sets_count(st->sets), 7);
	CHECK_INT_EQ(ev_sets_distinct_files(st->sets), 13);
	for (size_t t = 0; t < st->n_targets; t++) {
		ev_event *ev = st->targets[t];
		const char *label = ev->msg->id->target_completed->label;
		const BuildEventStream__TargetComplete *tc = ev->msg->completed;
		const struct expect *e = NULL;
		/* A returned File lives until the next call on the graph: keep
		 * copies of what is checked. */
		struct got {
			char path[512], name[256], uri[512];
			int file_case;
			size_t n_path_prefix;
		} got[16];
		size_t n = 0;

		for (size_t i = 0; i < N_TARGETS; i++)
			if (strcmp(expected[i].label, label) == 0)
				e = &expected[i];
		if (!e) {
			fprintf(stderr, "%s: unexpected target %s\n", run, label);
			exit(1);
		}
		CHECK(ev_sets_expand_target(st->sets, ev, "default", &err) == 0);
		for (const BuildEventStream__File *f; (f = ev_sets_expand_next(st->sets));) {
			CHECK(n < 16);
			file_path(f, got[n].path, sizeof(got[n].path));
			snprintf(got[n].name, sizeof(got[n].name), "%s", f->name);
			snprintf(got[n].uri, sizeof(got[n].uri), "%s",
				 f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI ? f->uri : "");
			got[n].file_case = (int)f->file_case;
			got[n].n_path_prefix = f->n_path_prefix;
			n++;
		}
		CHECK(ev_sets_expand_next(st->sets) == NULL);
		for (size_t i = 0; i < 5; i++) {
			if (!e->files[i]) {
				CHECK_INT_EQ(n, i);
				break;
			}
			CHECK(i < n);
			CHECK_STR_EQ(got[i].path, e->files[i]);
			CHECK_INT_EQ(got[i].file_case, BUILD_EVENT_STREAM__FILE__FILE_URI);
			if (got[i].n_path_prefix)
				CHECK(strncmp(got[i].uri, EXEC_ROOT BIN, strlen(EXEC_ROOT BIN)) == 0);
			else
				CHECK_STR_EQ(got[i].uri, "file:///tmp/bwob/ws/pkg/tool.sh");
		}
		/* Bazel's own flattening of the same group: importantOutput lists
		 * the outputs (not the source file of //pkg:tool) in order. */
		{
			size_t j = 0;
			for (size_t i = 0; i < n && j < tc->n_important_output; i++) {
				const BuildEventStream__File *io = tc->important_output[j];
				if (strcmp(got[i].name, io->name) == 0 && strcmp(got[i].uri, io->uri) == 0)
					j++;
			}
			CHECK_INT_EQ(j, tc->n_important_output);
			CHECK_INT_EQ(tc->n_important_output,
				     strcmp(label, "//pkg:tool") == 0 ? n - 1 : n);
		}
		/* All groups (there is only "default") give the same list; a
		 * group the target does not have gives nothing. */
		CHECK(ev_sets_expand_target(st->sets, ev, NULL, &err) == 0);
		for (size_t i = 0; i < n; i++) {
			const BuildEventStream__File *f = ev_sets_expand_next(st->sets);
			char path[512];
			CHECK(f != NULL);
			file_path(f, path, sizeof(path));
			CHECK_STR_EQ(path, got[i].path);
			CHECK_STR_EQ(f->uri, got[i].uri);
		}
		CHECK(ev_sets_expand_next(st->sets) == NULL);
		CHECK(ev_sets_expand_target(st->sets, ev, "no_such_group", &err) == 0);
		CHECK(ev_sets_expand_next(st->sets) == NULL);
		/* Not a TargetComplete. */
		CHECK_INT_EQ(ev_sets_expand_target(st->sets, NULL, NULL, &err), -EINVAL);
		if (strcmp(label, "//pkg:treeart") == 0) {
			CHECK_INT_EQ(tc->n_directory_output, 1);
			CHECK_STR_EQ(tc->directory_output[0]->name, "pkg/treeart_dir");
		}
	}
}

static void run_state_fini(struct run_state *st)
{
	for (size_t i = 0; i < st->n_targets; i++)
		ev_event_unref(st->targets[i]);
	ev_sets_free(st->sets);
}

static void read_file(const char *run)
{
	struct run_state st = { 0 };
	tf_error err = { 0 };
	ev_reader *r;
	ev_event *ev;
	int rc;

	st.bytes = slurp(fixture(run, "bep.bin"), &st.len);
	st.sets = ev_sets_new(NULL, &err);
	CHECK(st.sets);
	r = ev_reader_new(fixture(run, "bep.bin"), NULL, &err);
	CHECK(r);
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		CHECK(on_event(ev, &st, &err) == 0);
		ev_event_unref(ev);
	}
	CHECK_INT_EQ(rc, 0);
	CHECK(ev_reader_at_eof(r));
	CHECK(ev_reader_complete(r));
	CHECK_INT_EQ(ev_reader_records(r), 45);
	CHECK_INT_EQ(ev_reader_offset(r), st.len);
	CHECK_INT_EQ(st.next_offset, st.len);
	rc = ev_reader_finish(r, &err);
	if (rc != 0)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	/* The last record is BuildToolLogs; nothing reads after it. */
	CHECK_INT_EQ(ev_reader_next(r, &ev, &err), 0);
	ev_reader_free(r);
	check_targets(&st, run);
	run_state_fini(&st);
	free((void *)st.bytes);
}

static void read_pipe(const char *run)
{
	struct run_state st = { 0 };
	tf_error err = { 0 };
	ev_reader *r;
	int fds[2], status, rc;
	pid_t pid;

	st.bytes = slurp(fixture(run, "bep.bin"), &st.len);
	st.sets = ev_sets_new(NULL, &err);
	CHECK(st.sets);
	CHECK(pipe(fds) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		write_all(fds[1], st.bytes, st.len);
		_exit(0);
	}
	close(fds[1]);
	r = ev_reader_new_fd(fds[0], "stdin", NULL, &err);
	CHECK(r);
	rc = ev_reader_follow(r, NULL, on_event, &st, &err);
	if (rc != 0)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	CHECK(ev_reader_complete(r));
	ev_reader_free(r);
	close(fds[0]);
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	check_targets(&st, run);
	run_state_fini(&st);
	free((void *)st.bytes);
}

int main(void)
{
	for (int i = 0; i < EV_N_RUNS; i++) {
		read_file(ev_runs[i]);
		read_pipe(ev_runs[i]);
	}
	return 0;
}
