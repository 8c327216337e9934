/* topfetch collect: the files of a finished build's completed targets, from
 * the cache into a folder (CI artifact collection). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

typedef struct run {
	cli_progress progress;
	uint64_t lost_lines;
} run;

static void on_target_failed(const char *label, const char *why, void *user)
{
	run *r = user;
	cli_progress_error(&r->progress, "topfetch collect: target %s failed: %s", label, why);
}

static void on_lost(const tf_lost_output *l, void *user)
{
	run *r = user;
	r->lost_lines++;
	cli_report_lost(&r->progress, l, NULL);
}

int cmd_collect(int argc, char **argv)
{
	tf_session_options o = { 0 };
	const char *bep = NULL, *groups_csv = NULL;
	cli_list headers = { 0 }, targets = { 0 }, regexes = { 0 }, groups = { 0 };
	char *groups_buf = NULL;
	bool keep_prefix = false;
	tf_session_stats st;
	tf_error err = { 0 };
	tf_session *s = NULL;
	cli_output out = { 0 };
	cli_summary sum = { 0 };
	run r = { 0 };
	int rc, fr;

	tf_remote_options_init(&o.remote);
	const cli_flag flags[] = {
		{ "bep", CLI_ONCE, &bep, "FILE|-",
		  "The build's BEP (--build_event_binary_file), or - for standard input. Required." },
		CLI_REMOTE_FLAGS(&o.remote, &headers),
		{ "output_dir", CLI_STRING, &o.output_dir, "DIR", "Where the files go; created if missing. Required." },
		{ "store", CLI_STRING, &o.store_path, "FILE",
		  "The metadata store a 'topfetch proxy' run filled: how files named only by file:// URIs are "
		  "found (Bazel before 7 with an HTTP or disk cache records no digests in the BEP)." },
		{ "keep_path_prefix", CLI_BOOL, &keep_prefix, "",
		  "Keep bazel-out/CONFIG/bin/ in the paths (default: short paths, pkg/out.txt)." },
		{ "target", CLI_LIST, &targets, "LABEL", "Only this completed target; repeatable (default: all)." },
		{ "output_groups", CLI_STRING, &groups_csv, "A,B",
		  "Output groups to collect (default: every group each TargetComplete lists, hidden '_' ones excepted)." },
		{ "remote_download_regex", CLI_LIST, &regexes, "REGEX",
		  "Only files whose exec-root-relative path matches (POSIX extended); repeatable." },
		{ "build_event_binary_file", CLI_STRING, &o.build_event_binary_file, "FILE",
		  "Write the BEP again, each TargetComplete only once its files are in place, with digest and "
		  "length filled in." },
		{ "build_event_json_file", CLI_STRING, &o.build_event_json_file, "FILE", "The same as JSON lines." },
		{ "build_event_publish", CLI_STRING, &o.build_event_publish, "URL",
		  "Publish the same events on a nanomsg PUB socket (ipc://PATH or tcp://127.0.0.1:PORT)." },
		CLI_OUTPUT_FLAGS(&out),
	};
	const cli_command cmd = {
		.name = "collect",
		.usage = "topfetch collect --bep=FILE|- --remote_cache=URL|DIR --output_dir=DIR [--store=FILE] [flags]",
		.summary =
			"Fetches the files of the targets a finished build completed (its BEP) from the cache into\n"
			"--output_dir: CI artifact collection after a --remote_download_minimal build. Each file is\n"
			"found by the digest and length in the BEP (Bazel 7+), by a bytestream:// URI (gRPC caches;\n"
			"the host is replaced by --remote_cache), or by its path in a --store that 'topfetch proxy'\n"
			"filled. Files are verified and written atomically; one blob is fetched once.\n"
			"Executable bits: a BEP File has no such field, so the BEP alone cannot say whether a file\n"
			"is executable. A file lands executable (0755) when topfetch knows the bit from the\n"
			"ActionResult that made it (recorded in --store by a proxy run); otherwise it lands 0644.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN || (rc = cli_progress_init(&r.progress, "collect", &out)) != CLI_RUN)
		goto out;
	if (!bep || !o.remote.remote_cache || !o.output_dir) {
		fprintf(stderr, "topfetch collect: --bep, --remote_cache and --output_dir are required.\n"
				"Run 'topfetch collect --help' for the flags.\n");
		rc = EXIT_USAGE;
		goto out;
	}
	if (groups_csv && cli_split_csv(groups_csv, &groups, &groups_buf) < 0) {
		rc = EXIT_USAGE;
		goto out;
	}
	o.remote.remote_headers = headers.items;
	o.remote.n_remote_headers = headers.n;
	o.short_paths = !keep_prefix;
	o.policy.mode = TF_DOWNLOAD_TOPLEVEL;
	o.policy.targets = targets.items;
	o.policy.n_targets = targets.n;
	o.policy.output_groups = groups.items;
	o.policy.n_output_groups = groups.n;
	o.policy.listed_groups = !groups.n; /* as Bazel: the groups each TargetComplete lists */
	o.policy.filter_regexes = regexes.items;
	o.policy.n_filter_regexes = regexes.n;
	o.on_lost = on_lost;
	o.on_target_failed = on_target_failed;
	o.user = &r;

	s = tf_session_new(&o, &err);
	if (!s) {
		cli_eprintf("topfetch collect: %s\n", err.message);
		rc = EXIT_USAGE;
		goto out;
	}
	if (tf_session_add_bep_file(s, bep, &err) < 0) {
		cli_eprintf("topfetch collect: %s\n", err.message);
		rc = EXIT_USAGE;
		goto out;
	}
	cli_install_signals();
	r.progress.start_ns = tf__now_ns();
	/* The BEP is finished: read it all, fetching as targets complete. */
	while (!cli_interrupted && !tf_session_bep_complete(s)) {
		int n = tf_session_dispatch(s, 20, &err);
		tf_session_get_stats(s, &st);
		cli_report_session_progress(&r.progress, &st, false);
		if (n < 0)
			break;
		if (n == 0 && !tf_session_bep_complete(s) && st.files_wanted == st.files_fetched + st.files_present +
								      st.lost + st.failed)
			break; /* nothing in flight and the reader is at its end: finish judges it */
	}
	if (cli_interrupted) {
		tf_session_free(s);
		s = NULL;
		fprintf(stderr, "topfetch collect: interrupted; files already in place stay, nothing partial is left\n");
		rc = EXIT_INTERRUPTED;
		goto out;
	}
	fr = tf_session_finish(s, &st, &err);
	if (fr < 0) {
		rc = cli_exit_for_error(fr);
	} else if (st.files_unknown && !st.files_wanted) {
		/* Not one file could be located: the input cannot be collected. */
		rc = EXIT_BAD_INPUT;
	} else {
		rc = st.lost || st.failed || st.files_unknown || st.conflicts || st.targets_failed ? EXIT_SOME_FAILED
													 : EXIT_ALL_OK;
	}
	cli_summary_from_session(&sum, &st);
	sum.exit_code = rc;
	rc = cli_summary_print(&r.progress, stdout, &sum);
	if (fr < 0)
		cli_eprintf("topfetch collect: %s\n", err.message);
	if (st.files_unknown)
		fprintf(stderr,
			"topfetch collect: %llu file%s of completed targets %s no digest and exist%s nowhere: the BEP names "
			"%s only by a file:// URI (Bazel before 7 with an HTTP or disk cache records no digests in it) "
			"and Bazel's output tree no longer holds %s (bazel clean, or another machine)%s%s.\n"
			"Outputs Bazel never caches (sh_binary's symlink, no-remote actions) are copied from its output "
			"tree: collect on the machine that built, before the next bazel clean. For the others, run the "
			"build through 'topfetch proxy' (it records every output's digest) and pass its --store here; "
			"or use Bazel 7+, or a gRPC cache (bytestream:// URIs).\n",
			(unsigned long long)st.files_unknown, st.files_unknown == 1 ? "" : "s",
			st.files_unknown == 1 ? "has" : "have", st.files_unknown == 1 ? "s" : "",
			st.files_unknown == 1 ? "it" : "them", st.files_unknown == 1 ? "it" : "them", o.store_path ? ", and the --store has no record of " : "",
			o.store_path ? (st.files_unknown == 1 ? "it from a proxy run" : "them from a proxy run") : "");
	if (st.conflicts)
		fprintf(stderr, "topfetch collect: %llu path%s named with two different files (see the target errors "
				"above): nothing was overwritten; if they differ only in their bazel-out/CONFIG/bin/ "
				"prefix, --keep_path_prefix keeps both.\n",
			(unsigned long long)st.conflicts, st.conflicts == 1 ? " is" : "s are");
	if (st.targets_failed)
		fprintf(stderr, "topfetch collect: %llu target%s failed (see above); the exit code is %d.\n",
			(unsigned long long)st.targets_failed, st.targets_failed == 1 ? "" : "s", EXIT_SOME_FAILED);
out:
	cli_progress_fini(&r.progress);
	tf_session_free(s);
	free(groups_buf);
	cli_list_free(&groups);
	cli_list_free(&headers);
	cli_list_free(&targets);
	cli_list_free(&regexes);
	return rc;
}
