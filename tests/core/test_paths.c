/* Path confinement and digest checks: the first line of defence against
 * untrusted paths and sizes. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "tf_test.h"

static void refused(const char *path, const char *why)
{
	tf_error err = { 0 };
	CHECK(tf__path_check(path, "test", &err) < 0);
	CHECK_CONTAINS(err.message, why);
}

int main(void)
{
	tf_error err = { 0 };
	tf_digest dg;
	char root[] = "/tmp/tf-core-XXXXXX", big[5000];
	const char *leaf;
	int rootfd, dfd;

	CHECK_INT_EQ(tf__path_check("a/b/c.txt", "test", &err), 0);
	CHECK_INT_EQ(tf__path_check("..a/b..", "test", &err), 0);
	refused("../x", "'..' component");
	refused("a/../../x", "'..' component");
	refused("/etc/x", "absolute");
	refused("a//b", "empty component");
	refused("a/b/", "ends with '/'");
	refused("./a", "'.' component");
	refused("", "empty path");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	refused(big, "limit");

	CHECK_INT_EQ(tf_digest_parse(TF_EMPTY_SHA256, 0, &dg, &err), 0);
	CHECK(tf_digest_parse("ABC", 1, &dg, &err) < 0);
	CHECK_CONTAINS(err.message, "not a SHA-256");
	CHECK(tf_digest_parse(TF_EMPTY_SHA256, 5, &dg, &err) < 0);
	CHECK(tf_digest_parse("c7d9472e1db1bfbf9b3d5fa3a1d9c1d94c9e2ba6b4b4d74fc4f7e7d3f80d427d", -1, &dg, &err) < 0);
	CHECK_CONTAINS(err.message, "out of range");

	/* A symlinked folder inside the root must not be followed. */
	CHECK(mkdtemp(root) != NULL);
	rootfd = open(root, O_RDONLY | O_DIRECTORY);
	CHECK(rootfd >= 0);
	CHECK_INT_EQ(symlinkat("/tmp", rootfd, "escape"), 0);
	CHECK(tf__open_parent_beneath(rootfd, "escape/x", true, &leaf, &err) < 0);
	CHECK_CONTAINS(err.message, "symlink");
	dfd = tf__open_parent_beneath(rootfd, "made/deep/x.txt", true, &leaf, &err);
	CHECK(dfd >= 0);
	CHECK_STR_EQ(leaf, "x.txt");
	close(dfd);
	unlinkat(rootfd, "escape", 0);
	unlinkat(rootfd, "made/deep", AT_REMOVEDIR);
	unlinkat(rootfd, "made", AT_REMOVEDIR);
	close(rootfd);
	rmdir(root);
	return 0;
}
