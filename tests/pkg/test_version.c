/* tf_version() and tf_version_commit(): the public version API. */
#include <ctype.h>
#include <string.h>

#include "tf_test.h"
#include "topfetch.h"

TEST(version_is_the_project_version)
{
	CHECK_STR_EQ(tf_version(), TF_EXPECT_VERSION);
	CHECK(tf_version() == tf_version()); /* a static string, not a fresh copy */
}

TEST(commit_is_hex_or_unknown)
{
	const char *c = tf_version_commit();
	CHECK(c != NULL);
	if (!strcmp(c, "unknown"))
		return;
	for (int i = 0; i < 12; i++)
		CHECK(isxdigit((unsigned char)c[i]) && !isupper((unsigned char)c[i]));
	CHECK(c[12] == '\0' || !strcmp(c + 12, "-dirty"));
}
