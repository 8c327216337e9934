/* topfetch collect: the files of a finished build's completed targets, from
 * the cache into a folder (CI artifact collection). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

typedef struct run {
	cli_progress progress;
	uint64_t lost_lines;
	/* What the policy matched, from the session's decisions. */
	const cli_list *targets, *groups;
	bool *target_seen, *group_seen;
	tf__map target_index; /* label -> index + 1 */
	uint64_t completed, filtered;
} run;

static void on_decision(const tf_decision *d, void *user)
{
	run *r = user;

	if (d->kind == TF_DECISION_TARGET) {
		uintptr_t i = (uintptr_t)(d->target ? tf__map_get(&r->target_index, d->target) : NULL);
		r->completed++;
		if (i)
			r->target_seen[i - 1] = true;
		return;
	}
	if (!d->group || d->reason == TF_REASON_TARGET_NOT_WANTED)
		return;
	r->filtered += d->reason == TF_REASON_FILTERED;
	for (size_t i = 0; i < r->groups->n; i++) {
		const char *g = r->groups->items[i];
		if (!strcmp(g + (*g == '+' || *g == '-'), d->group))
			r->group_seen[i] = true;
	}
}

/* A --target, --output_groups or --output_filter that matched nothing, or
 * a BEP that completes no target: the job asked for something that is not
 * there (exit 3, never a green "0 of 0"). */
static bool report_no_match(const run *r, const tf_session_stats *st, bool filters)
{
	bool bad = false;

	for (size_t i = 0; i < r->targets->n; i++)
		if (!r->target_seen[i]) {
			cli_eprintf("topfetch collect: --target=%s matched no completed target of the BEP\n",
				    r->targets->items[i]);
			bad = true;
		}
	for (size_t i = 0; i < r->groups->n; i++)
		if (!r->group_seen[i] && r->groups->items[i][0] != '-') {
			cli_eprintf("topfetch collect: --output_groups: no collected target has an output group '%s'\n",
				    r->groups->items[i] + (r->groups->items[i][0] == '+'));
			bad = true;
		}
	if (bad || st->files_wanted || st->files_unknown || st->targets_failed)
		return bad;
	if (filters && r->filtered)
		fprintf(stderr, "topfetch collect: --output_filter matched none of the %llu files of the completed "
				"targets; nothing was collected\n", (unsigned long long)r->filtered);
	else if (r->groups->n && r->completed)
		fprintf(stderr, "topfetch collect: --output_groups left no file of the %llu completed target%s to "
				"collect\n", (unsigned long long)r->completed, r->completed == 1 ? "" : "s");
	else if (!r->completed)
		fprintf(stderr, "topfetch collect: the BEP completes no target: nothing to collect\n");
	else
		return false; /* targets without files (a test_suite, empty filegroups): nothing was asked for */
	return true;
}

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
	const char *bep = NULL;
	cli_list targets = { 0 }, regexes = { 0 }, filters = { 0 }, groups = { 0 };
	cli_remote rem = CLI_REMOTE_INIT;
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
		CLI_REMOTE_FLAGS(&o.remote, &rem),
		{ "output_dir", CLI_STRING, &o.output_dir, "DIR", "Where the files go; created if missing. Required." },
		{ "store", CLI_STRING, &o.store_path, "FILE",
		  "The metadata store a 'topfetch proxy' run filled: how files named only by file:// URIs are "
		  "found (Bazel before 7 with an HTTP or disk cache records no digests in the BEP)." },
		{ "keep_path_prefix", CLI_BOOL, &keep_prefix, "",
		  "Keep bazel-out/CONFIG/bin/ in the paths (default: short paths, pkg/out.txt)." },
		{ "target", CLI_LIST, &targets, "LABEL",
		  "Only this completed target; repeatable (default: all). One the BEP does not complete is an "
		  "error (exit 3)." },
		{ "output_groups", CLI_CSV, &groups, "[+|-]A,...",
		  "Output groups to collect, as Bazel's flag (repeatable): +A adds to and -A removes from the "
		  "default (every group each TargetComplete lists, hidden '_' ones excepted); a name without "
		  "+ or - replaces the default. A group no collected target has is an error (exit 3)." },
		{ "output_filter", CLI_LIST, &filters, "REGEX",
		  "Only files whose exec-root-relative path contains a match (PCRE2); repeatable (any one "
		  "matches). Nothing matched is an error (exit 3)." },
		{ "remote_download_regex", CLI_LIST, &regexes, "REGEX",
		  "As Bazel's flag: also collect every file of the collected targets whose exec-root-relative "
		  "path the regex matches as a whole (PCRE2), whatever --output_groups and --output_filter "
		  "say; repeatable." },
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
		.remote = &rem,
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN || (rc = cli_progress_init(&r.progress, "collect", &out)) != CLI_RUN)
		goto out;
	if (!bep || !o.remote.remote_cache || !o.output_dir) {
		fprintf(stderr, "topfetch collect: --bep, --remote_cache (or a .bazelrc naming it) and --output_dir are "
				"required.\n"
				"Run 'topfetch collect --help' for the flags.\n");
		rc = EXIT_USAGE;
		goto out;
	}
	o.remote.check_at_start = true;
	rc = cli_remote_finish(cmd.name, &rem, &o.remote);
	if (rc != 0)
		goto out;
	tf__map_init(&r.target_index);
	r.targets = &targets;
	r.groups = &groups;
	r.target_seen = calloc(targets.n + 1, sizeof(bool));
	r.group_seen = calloc(groups.n + 1, sizeof(bool));
	rc = EXIT_USAGE;
	if (!r.target_seen || !r.group_seen)
		goto out;
	for (size_t i = 0; i < targets.n; i++)
		if (tf__map_put(&r.target_index, targets.items[i], (void *)(uintptr_t)(i + 1)) < 0)
			goto out;
	o.short_paths = !keep_prefix;
	o.policy.mode = TF_DOWNLOAD_TOPLEVEL;
	o.policy.targets = targets.items;
	o.policy.n_targets = targets.n;
	o.policy.output_groups = groups.items;
	o.policy.n_output_groups = groups.n;
	o.policy.listed_groups = true; /* as Bazel: the groups each TargetComplete lists */
	o.policy.regexes = regexes.items;
	o.policy.n_regexes = regexes.n;
	o.policy.filter_regexes = filters.items;
	o.policy.n_filter_regexes = filters.n;
	o.on_decision = on_decision;
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
	cli_cache_down_report(&r.progress);
	if (fr < 0) {
		rc = cli_exit_for_error(fr);
	} else if (report_no_match(&r, &st, filters.n > 0)) {
		rc = EXIT_BAD_INPUT;
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
	tf__map_fini(&r.target_index);
	free(r.target_seen);
	free(r.group_seen);
	cli_list_free(&groups);
	cli_remote_free(&rem);
	cli_list_free(&targets);
	cli_list_free(&regexes);
	cli_list_free(&filters);
	return rc;
}
