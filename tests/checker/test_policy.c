/* The download policy per mode, with regexes, output groups and targets. */
#include "checker/checker.h"
#include "tf_test.h"

int main(void)
{
	const char *regex[] = { ".*\\.dat", "bazel-out/[^/]+/bin/pkg/treeart_dir" };
	const char *groups[] = { "default", "debug_files" };
	const char *targets[] = { "//pkg:b", "//pkg:a" };
	tf_policy in = { 0 };
	chk_policy p;
	tf_error err = { 0 };
	tf_download_mode m;

	CHECK_INT_EQ(tf_download_mode_parse("all", &m), 0);
	CHECK_INT_EQ(m, TF_DOWNLOAD_ALL);
	CHECK(tf_download_mode_parse("everything", &m) < 0);

	/* toplevel, no regex: nothing on execution; every target and the default group. */
	CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
	CHECK(!chk_policy_fetch_on_execution(&p, "bazel-out/k8-fastbuild/bin/pkg/big.dat"));
	CHECK(chk_policy_target_wanted(&p, "//pkg:any"));
	CHECK(chk_policy_group_wanted(&p, "default"));
	CHECK(!chk_policy_group_wanted(&p, "debug_files"));
	chk_policy_fini(&p);

	/* all: everything on execution. */
	in.mode = TF_DOWNLOAD_ALL;
	CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
	CHECK(chk_policy_fetch_on_execution(&p, "bazel-out/k8-fastbuild/bin/pkg/x.txt"));
	chk_policy_fini(&p);

	/* minimal with regexes: only matches, and no target's files. */
	in.mode = TF_DOWNLOAD_MINIMAL;
	in.regexes = regex;
	in.n_regexes = 2;
	CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
	CHECK(chk_policy_fetch_on_execution(&p, "bazel-out/k8-fastbuild/bin/pkg/big.dat"));
	CHECK(chk_policy_fetch_on_execution(&p, "bazel-out/k8-fastbuild/bin/pkg/treeart_dir"));
	CHECK(!chk_policy_fetch_on_execution(&p, "bazel-out/k8-fastbuild/bin/pkg/big.dat.txt"));
	CHECK(!chk_policy_target_wanted(&p, "//pkg:a"));
	chk_policy_fini(&p);

	/* toplevel with requested targets and groups. */
	in.mode = TF_DOWNLOAD_TOPLEVEL;
	in.n_regexes = 0;
	in.output_groups = groups;
	in.n_output_groups = 2;
	in.targets = targets;
	in.n_targets = 2;
	CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
	CHECK(chk_policy_target_wanted(&p, "//pkg:a"));
	CHECK(chk_policy_target_wanted(&p, "//pkg:b"));
	CHECK(!chk_policy_target_wanted(&p, "//pkg:c"));
	CHECK(chk_policy_group_wanted(&p, "debug_files"));
	chk_policy_fini(&p);

	/* Bazel's regexes: Java syntax (\d, (?:...)), matched against the whole path. */
	{
		const char *java[] = { "bazel-out/[^/]+/bin/pkg/part\\d+(?:\\.txt)?" };
		in.targets = NULL;
		in.n_targets = 0;
		in.output_groups = NULL;
		in.n_output_groups = 0;
		in.regexes = java;
		in.n_regexes = 1;
		CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
		CHECK(chk_policy_regex_matches(&p, "bazel-out/k8-opt/bin/pkg/part12.txt"));
		CHECK(chk_policy_regex_matches(&p, "bazel-out/k8-opt/bin/pkg/part3"));
		CHECK(!chk_policy_regex_matches(&p, "bazel-out/k8-opt/bin/pkg/part3.txt.bak"));
		CHECK(!chk_policy_regex_matches(&p, "x/bazel-out/k8-opt/bin/pkg/part3"));
		chk_policy_fini(&p);
		in.n_regexes = 0;
	}

	/* Output groups as Bazel's determineOutputGroups: +/- relative to the
	 * default (here the listed groups), later entries win; a plain name
	 * replaces the default. */
	{
		const char *rel[] = { "+_hidden", "-default", "+extra", "-extra" };
		const char *plain[] = { "+x", "only" };
		in.listed_groups = true;
		in.output_groups = rel;
		in.n_output_groups = 4;
		CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
		CHECK(chk_policy_group_wanted(&p, "_hidden"));
		CHECK(!chk_policy_group_wanted(&p, "default"));
		CHECK(!chk_policy_group_wanted(&p, "extra"));
		CHECK(chk_policy_group_wanted(&p, "listed"));
		CHECK(!chk_policy_group_wanted(&p, "_other"));
		chk_policy_fini(&p);
		in.output_groups = plain;
		in.n_output_groups = 2;
		CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
		CHECK(chk_policy_group_wanted(&p, "only"));
		CHECK(chk_policy_group_wanted(&p, "x"));
		CHECK(!chk_policy_group_wanted(&p, "default"));
		chk_policy_fini(&p);
		/* Without listed groups the default set is {default}. */
		in.listed_groups = false;
		in.output_groups = rel + 2;
		in.n_output_groups = 1;
		CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
		CHECK(chk_policy_group_wanted(&p, "default"));
		CHECK(chk_policy_group_wanted(&p, "extra"));
		CHECK(!chk_policy_group_wanted(&p, "listed"));
		chk_policy_fini(&p);
		in.output_groups = NULL;
		in.n_output_groups = 0;
	}

	/* Filters find a match anywhere in the path; a regex adds a file its
	 * group or a filter would leave out. */
	{
		const char *filter[] = { "\\.txt$" }, *add[] = { ".*/big\\.dat" }, *none[] = { "nothing" };
		tf_decision_reason why;
		in.filter_regexes = filter;
		in.n_filter_regexes = 1;
		in.regexes = add;
		in.n_regexes = 1;
		in.output_groups = none;
		in.n_output_groups = 1;
		CHECK_INT_EQ(chk_policy_init(&p, &in, &err), 0);
		CHECK(chk_policy_file_wanted(&p, "bazel-out/k8/bin/pkg/a.txt"));
		CHECK(!chk_policy_file_wanted(&p, "bazel-out/k8/bin/pkg/a.txt.gz"));
		CHECK(!chk_decide_target_file(&p, true, "default", "bazel-out/k8/bin/pkg/a.txt", &why));
		CHECK_INT_EQ(why, TF_REASON_GROUP_NOT_WANTED);
		CHECK(chk_decide_target_file(&p, true, "default", "bazel-out/k8/bin/pkg/big.dat", &why));
		CHECK_INT_EQ(why, TF_REASON_REGEX);
		CHECK(!chk_decide_target_file(&p, false, "default", "bazel-out/k8/bin/pkg/big.dat", &why));
		chk_policy_fini(&p);
		in.filter_regexes = NULL;
		in.n_filter_regexes = 0;
		in.output_groups = NULL;
		in.n_output_groups = 0;
	}

	/* A bad regex is an error naming it. */
	{
		const char *bad[] = { "a(b" };
		in.regexes = bad;
		in.n_regexes = 1;
		CHECK(chk_policy_init(&p, &in, &err) < 0);
		CHECK_CONTAINS(err.message, "--remote_download_regex='a(b' is not a valid regular expression");
	}
	return 0;
}
