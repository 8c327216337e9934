/* Hostile Trees (issue 11, defect 5): a small DAG whose directories name
 * each other twice per level expands to 2^40 paths. It is refused with a
 * clear error after looking at each directory once, so 100 output
 * directories naming it (one 2.4 KB ActionResult) cost nothing. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checker/checker.h"
#include "remote_execution.pb-c.h"
#include "tf_test.h"

typedef Build__Bazel__Remote__Execution__V2__Directory Dir;
typedef Build__Bazel__Remote__Execution__V2__FileNode FileNode;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode DirNode;
typedef Build__Bazel__Remote__Execution__V2__Digest Digest;
typedef Build__Bazel__Remote__Execution__V2__Tree Tree;

#define LEVELS 40

static int count(const chk_tree_entry *e, void *user)
{
	(*(size_t *)user)++;
	return 0;
}

static void digest_of(const Dir *d, char hash[65], int64_t *size)
{
	size_t n = build__bazel__remote__execution__v2__directory__get_packed_size(d);
	unsigned char *b = malloc(n ? n : 1), md[32];
	unsigned mdlen;
	build__bazel__remote__execution__v2__directory__pack(d, b);
	EVP_Digest(b, n, md, &mdlen, EVP_sha256(), NULL);
	tf__hex(md, 32, hash);
	*size = (int64_t)n;
	free(b);
}

static int leaf_files_n = 1; /* 0: the lowest directory is empty */

/* levels directories; each names the one below twice (a and b). */
static unsigned char *dag_bomb(int levels, size_t *len)
{
	static Dir dirs[LEVELS];
	static DirNode nodes[LEVELS][2];
	static DirNode *node_ptrs[LEVELS][2];
	static Digest digests[LEVELS];
	static char hashes[LEVELS][65];
	static FileNode leaf_file;
	static FileNode *leaf_files[1];
	static Digest leaf_digest;
	Dir *children[LEVELS];
	Tree t = BUILD__BAZEL__REMOTE__EXECUTION__V2__TREE__INIT;
	unsigned char *b;

	build__bazel__remote__execution__v2__file_node__init(&leaf_file);
	build__bazel__remote__execution__v2__digest__init(&leaf_digest);
	leaf_digest.hash = (char *)"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
	leaf_digest.size_bytes = 5;
	leaf_file.name = (char *)"f";
	leaf_file.digest = &leaf_digest;
	leaf_files[0] = &leaf_file;
	for (int i = 0; i < levels; i++) {
		build__bazel__remote__execution__v2__directory__init(&dirs[i]);
		if (i == 0) {
			dirs[i].files = leaf_files;
			dirs[i].n_files = (size_t)leaf_files_n;
		} else {
			build__bazel__remote__execution__v2__digest__init(&digests[i - 1]);
			digest_of(&dirs[i - 1], hashes[i - 1], &digests[i - 1].size_bytes);
			digests[i - 1].hash = hashes[i - 1];
			for (int k = 0; k < 2; k++) {
				build__bazel__remote__execution__v2__directory_node__init(&nodes[i][k]);
				nodes[i][k].name = (char *)(k ? "b" : "a");
				nodes[i][k].digest = &digests[i - 1];
				node_ptrs[i][k] = &nodes[i][k];
			}
			dirs[i].directories = node_ptrs[i];
			dirs[i].n_directories = 2;
		}
		children[i] = &dirs[i];
	}
	t.root = &dirs[levels - 1];
	t.children = children;
	t.n_children = (size_t)levels - 1;
	*len = build__bazel__remote__execution__v2__tree__get_packed_size(&t);
	b = malloc(*len);
	build__bazel__remote__execution__v2__tree__pack(&t, b);
	return b;
}

TEST(dag_bomb_refused_quickly_with_a_clear_error)
{
	size_t len, n = 0;
	unsigned char *b = dag_bomb(LEVELS, &len);
	clock_t t0 = clock();
	tf_error err = { 0 };

	CHECK(len < 8192); /* a small blob */
	for (int i = 0; i < 100; i++) { /* one ActionResult naming it as 100 output directories */
		CHECK_INT_EQ(chk_tree_walk(b, len, "bomb", "out/d", count, &n, &err), -E2BIG);
		CHECK_CONTAINS(err.message, "tree bomb: more than 1000000 entries");
		CHECK_CONTAINS(err.message, "a directory named N times counts N times");
	}
	CHECK_INT_EQ(n, 0); /* nothing reported from a refused tree */
	/* Each walk looks at 40 directories, not 1M paths: well under a second
	 * for all 100 (main spent 14 s of CPU on this). */
	CHECK((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0);
	free(b);
}

TEST(shared_directories_within_the_cap_are_reported_at_every_path)
{
	size_t len, n = 0;
	unsigned char *b = dag_bomb(11, &len); /* 2^10 paths to the one file */
	tf_error err = { 0 };

	CHECK_INT_EQ(chk_tree_walk(b, len, "dag", "out/d", count, &n, &err), 0);
	CHECK_INT_EQ(n, 1024);
	free(b);
}

TEST(a_work_budget_shared_by_the_trees_of_one_action_result)
{
	size_t len, n = 0, left = 4000, counted = 0;
	unsigned char *b = dag_bomb(11, &len); /* 1024 file paths under 2046 directory paths */
	tf_error err = { 0 };
	const char *whose = "the ActionResult of action 1111";

	/* The first naming fits and uses 3070 of the 4000 entries left... */
	CHECK_INT_EQ(chk_tree_walk_budget(b, len, "dag", "out/d1", left, whose, count, &n, &counted, &err), 0);
	CHECK_INT_EQ(n, 1024);
	CHECK_INT_EQ(counted, 3070);
	left -= counted;
	/* ...the second does not: refused naming the budget, nothing reported. */
	n = 0;
	CHECK_INT_EQ(chk_tree_walk_budget(b, len, "dag", "out/d2", left, whose, count, &n, NULL, &err), -E2BIG);
	CHECK_CONTAINS(err.message, "tree dag: its entries would take the ActionResult of action 1111 past its work "
				    "budget of 930 tree entries");
	CHECK_INT_EQ(n, 0);
	free(b);
}

/* Directories are entries too: a Tree of nothing but empty directories, 2^21
 * directory paths in a few hundred bytes, is refused as quickly (it cost
 * 18 s of CPU for 100 namings while only files counted). */
TEST(a_bomb_of_empty_directories_is_refused_too)
{
	size_t len, n = 0, counted = 0;
	unsigned char *b;
	clock_t t0 = clock();
	tf_error err = { 0 };

	leaf_files_n = 0;
	b = dag_bomb(22, &len);
	for (int i = 0; i < 100; i++) {
		CHECK_INT_EQ(chk_tree_walk(b, len, "empty", "out/d", count, &n, &err), -E2BIG);
		CHECK_CONTAINS(err.message, "tree empty: more than 1000000 entries");
	}
	CHECK_INT_EQ(n, 0);
	CHECK((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0);
	free(b);
	/* Within the cap: every directory path counts against the budget. */
	b = dag_bomb(11, &len);
	CHECK_INT_EQ(chk_tree_walk_budget(b, len, "empty", "out/d", 5000, "x", count, &n, &counted, &err), 0);
	CHECK_INT_EQ(n, 0);
	CHECK_INT_EQ(counted, 2046);
	leaf_files_n = 1;
	free(b);
}
