/* How the CLI reports an output it could not place (cli/report.c), as a user
 * reads it on stderr: with the blob's digest when one is known, and without
 * the empty '(/0)' an over-cap Tree printed before (issue 11, defect 12). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "tf_test.h"

/* What cli_report_lost prints for l, read back from stderr. */
static void report(const tf_lost_output *l, char *out, size_t n)
{
	char path[] = "/tmp/tf-test-report.XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	cli_progress p;
	FILE *f;
	size_t got;

	CHECK(fd >= 0 && saved >= 0);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	CHECK_INT_EQ(cli_progress_init(&p, "collect", NULL), CLI_RUN);
	cli_report_lost(&p, l, "the next build runs it again");
	cli_progress_fini(&p);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	f = fdopen(fd, "r");
	CHECK(f != NULL);
	rewind(f);
	got = fread(out, 1, n - 1, f);
	out[got] = '\0';
	fclose(f);
	unlink(path);
}

TEST(an_over_cap_tree_is_reported_without_an_empty_digest)
{
	char out[4096];
	tf_lost_output l = {
		.result = TF_RESULT_CORRUPT,
		.path = "bazel-out/k8-fastbuild/bin/pkg/tree_wide",
		.digest = { .hash = "", .size = 0 },
		.action_key = "1111111111111111111111111111111111111111111111111111111111111111",
		.target = "//pkg:wide",
		.message = "tree 97a3: more than 1000000 entries (a directory named N times counts N times); the "
			   "output directory is refused",
	};

	report(&l, out, sizeof(out));
	CHECK_CONTAINS(out, "topfetch: corrupt: bazel-out/k8-fastbuild/bin/pkg/tree_wide, produced by action "
			    "1111111111111111111111111111111111111111111111111111111111111111 of //pkg:wide: tree 97a3: "
			    "more than 1000000 entries");
	CHECK_CONTAINS(out, "; the next build runs it again");
	CHECK(strstr(out, "(/0)") == NULL);
	CHECK(strstr(out, "()") == NULL);
}

TEST(a_lost_file_is_reported_with_its_digest)
{
	char out[4096];
	tf_lost_output l = {
		.result = TF_RESULT_LOST,
		.path = "bazel-out/k8-fastbuild/bin/pkg/a.txt",
		.digest = { .hash = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", .size = 6 },
		.message = "not in the cache",
	};

	report(&l, out, sizeof(out));
	CHECK_CONTAINS(out, "topfetch: lost: bazel-out/k8-fastbuild/bin/pkg/a.txt "
			    "(5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03/6): not in the cache");
}
