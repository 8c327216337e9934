/* topfetch fetch: put the blobs a manifest names into a folder, verified. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

/* Reads the whole manifest first, so that a malformed one fetches nothing. */
static int read_manifest(const char *name, cli_manifest *m)
{
	FILE *f = strcmp(name, "-") ? fopen(name, "r") : stdin;
	int r;

	if (!f) {
		fprintf(stderr, "topfetch fetch: cannot read the manifest %s: %s\n", name, strerror(errno));
		return -errno;
	}
	r = cli_manifest_read(f, name, m, stderr);
	if (f != stdin)
		fclose(f);
	return r;
}

typedef struct run {
	cli_progress progress;
	uint64_t settled_bytes; /* sizes of the files settled (in place or not) */
	uint64_t empty;         /* zero-length files written */
} run;

static void on_done(const tf_fetch_done *d, void *user)
{
	run *r = user;

	r->settled_bytes += (uint64_t)d->digest.size;
	if (d->result == TF_RESULT_OK) {
		r->empty += d->digest.size == 0;
		return;
	}
	cli_progress_problem(&r->progress, d->result, d->path, &d->digest, NULL, NULL, d->message, NULL);
}

static void show_progress(run *r, const tf_downloader_stats *st, uint64_t total_bytes, bool force)
{
	cli_figures f = {
		.files_done = st->files_ok + st->lost + st->corrupt + st->failed + st->local,
		.files_total = st->requests,
		.bytes = r->settled_bytes + st->bytes_in_flight,
		.bytes_total = total_bytes,
		.wire_bytes = st->bytes + st->bytes_in_flight,
		.errors = st->lost + st->corrupt + st->failed + st->local,
	};
	cli_progress_show(&r->progress, &f, force);
}

int cmd_fetch(int argc, char **argv)
{
	tf_remote_options opts;
	const char *output_dir = NULL, *manifest_path = NULL;
	cli_remote rem = CLI_REMOTE_INIT;
	tf_downloader_stats st;
	uint64_t stale = 0;
	tf_downloader *d = NULL;
	tf_error err = { 0 };
	cli_manifest m = { 0 };
	cli_output out = { 0 };
	cli_summary sum = { 0 };
	uint64_t total_bytes = 0;
	run r = { 0 };
	int rc;

	tf_remote_options_init(&opts);
	const cli_flag flags[] = {
		CLI_REMOTE_FLAGS(&opts, &rem),
		{ "output_dir", CLI_STRING, &output_dir, "DIR",
		  "Where files go; created if missing. Nothing is written outside it. Required." },
		{ "manifest", CLI_STRING, &manifest_path, "FILE|-",
		  "Lines 'HASH SIZE [x] PATH' (x = executable; PATH relative to --output_dir; '#' starts a "
		  "comment). Required." },
		CLI_OUTPUT_FLAGS(&out),
	};
	const cli_command cmd = {
		.name = "fetch",
		.usage = "topfetch fetch --remote_cache=URL|DIR --output_dir=DIR --manifest=FILE [flags]",
		.summary =
			"Fetches the blobs a manifest lists from a Bazel remote cache (HTTP, gRPC or disk) into\n"
			"--output_dir, many at a time. Every file is verified against its SHA-256 and size and\n"
			"renamed into place only then; a blob wanted at several paths is fetched once; a file\n"
			"already in place with the right digest is not fetched again. Ends with one summary line.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
		.remote = &rem,
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN || (rc = cli_progress_init(&r.progress, "fetch", &out)) != CLI_RUN)
		goto out;
	if (!opts.remote_cache || !output_dir || !manifest_path) {
		fprintf(stderr, "topfetch fetch: --remote_cache, --output_dir and --manifest are required.\n"
				"Run 'topfetch fetch --help' for the flags.\n");
		rc = EXIT_USAGE;
		goto out;
	}
	opts.check_at_start = true;
	rc = cli_remote_finish(cmd.name, &rem, &opts);
	if (rc != 0)
		goto out;
	if (read_manifest(manifest_path, &m) < 0) {
		fprintf(stderr, "topfetch fetch: the manifest is malformed; nothing was fetched.\n");
		rc = EXIT_BAD_INPUT;
		goto out;
	}
	d = tf_downloader_new(&opts, output_dir, &err);
	if (!d) {
		cli_eprintf("topfetch fetch: %s\n", err.message);
		rc = EXIT_USAGE;
		goto out;
	}
	/* A run killed mid-transfer (kill -9) left its temporaries behind. */
	if (tf_downloader_remove_dead_temporaries(d, &stale, &err) < 0)
		cli_eprintf("topfetch fetch: %s\n", err.message);
	else if (stale)
		fprintf(stderr, "topfetch fetch: removed %llu temporary file%s a killed run left behind\n",
			(unsigned long long)stale, stale == 1 ? "" : "s");
	cli_install_signals();
	r.progress.start_ns = tf__now_ns();
	for (size_t i = 0; i < m.n; i++)
		if (i == 0 || strcmp(m.v[i].path, m.v[i - 1].path))
			total_bytes += (uint64_t)m.v[i].digest.size;
	for (size_t i = 0; i < m.n && !cli_interrupted; i++) {
		cli_manifest_entry *e = &m.v[i];
		if (i > 0 && !strcmp(e->path, m.v[i - 1].path))
			continue; /* the same file listed twice */
		while ((rc = tf_downloader_fetch(d, &e->digest, e->executable, e->path, on_done, &r)) == -EAGAIN)
			tf_downloader_dispatch(d, 100);
		if (rc < 0) {
			fprintf(stderr, "topfetch fetch: cannot queue '%s': %s\n", e->path, strerror(-rc));
			break;
		}
		if ((i & 255) == 0)
			tf_downloader_dispatch(d, 0);
	}
	tf_downloader_get_stats(d, &st);
	while (tf_downloader_outstanding(d) > 0 && !cli_interrupted) {
		/* Take completions in batches: waking for each one costs a context
		 * switch that the transfer thread and nginx would rather have. */
		if (tf_downloader_dispatch(d, 100) > 0)
			nanosleep(&(struct timespec){ .tv_nsec = 2 * 1000 * 1000 }, NULL);
		tf_downloader_get_stats(d, &st);
		show_progress(&r, &st, total_bytes, false);
	}
	tf_downloader_get_stats(d, &st);
	cli_cache_down_report(&r.progress);
	cli_summary_from_downloader(&sum, &st, r.empty);
	sum.interrupted = cli_interrupted != 0;
	if (cli_interrupted)
		sum.exit_code = EXIT_INTERRUPTED;
	else
		sum.exit_code = st.files_ok == st.requests ? EXIT_ALL_OK : EXIT_SOME_FAILED;
	rc = cli_summary_print(&r.progress, stdout, &sum);
out:
	cli_progress_fini(&r.progress);
	tf_downloader_free(d);
	cli_manifest_free(&m);
	cli_remote_free(&rem);
	return rc;
}
