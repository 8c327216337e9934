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
