/* libFuzzer harness: a serialized REAPI Tree (an output directory's blob,
 * untrusted) walked into its files and symlinks. */
#include "checker/checker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_entry(const chk_tree_entry *e, void *user)
{
	size_t *n = user;
	*n += e->path[0] != '\0';
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tf_error err = { 0 };
	size_t n = 0;

	chk_tree_walk(data, size, "0000000000000000000000000000000000000000000000000000000000000000",
		      "bazel-out/k8-fastbuild/bin/pkg/dir", on_entry, &n, &err);
	return 0;
}
