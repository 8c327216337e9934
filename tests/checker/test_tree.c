/* Tree blobs: the real one from the fixture cache, and hostile ones. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#include "checker/checker.h"
#include "remote_execution.pb-c.h"
#include "tf_test.h"

typedef Build__Bazel__Remote__Execution__V2__Directory Dir;
typedef Build__Bazel__Remote__Execution__V2__FileNode FileNode;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode DirNode;
typedef Build__Bazel__Remote__Execution__V2__Digest Digest;
typedef Build__Bazel__Remote__Execution__V2__Tree Tree;

typedef struct got {
	int n;
	char paths[16][256];
	bool exec[16];
	int64_t sizes[16];
} got;

static int collect(const chk_tree_entry *e, void *user)
{
	got *g = user;
	CHECK(g->n < 16);
	snprintf(g->paths[g->n], 256, "%s", e->path);
	g->exec[g->n] = e->executable;
	g->sizes[g->n] = e->digest.size;
	g->n++;
	return 0;
}

static unsigned char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;
	CHECK(f != NULL);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	CHECK(fread(b, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void digest_of(const Dir *d, char *hash, int64_t *size)
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

/* Packs a tree of root + children. */
static unsigned char *pack_tree(Dir *root, Dir **children, size_t n, size_t *len)
{
	Tree t = BUILD__BAZEL__REMOTE__EXECUTION__V2__TREE__INIT;
	unsigned char *b;
	t.root = root;
	t.children = children;
	t.n_children = n;
	*len = build__bazel__remote__execution__v2__tree__get_packed_size(&t);
	b = malloc(*len);
	build__bazel__remote__execution__v2__tree__pack(&t, b);
	return b;
}

static void expect_error(Dir *root, Dir **children, size_t n, const char *msg)
{
	tf_error err = { 0 };
	got g = { 0 };
	size_t len;
	unsigned char *b = pack_tree(root, children, n, &len);
	CHECK(chk_tree_walk(b, len, "t", "out/dir", collect, &g, &err) < 0);
	CHECK_CONTAINS(err.message, msg);
	CHECK_INT_EQ(g.n, 0); /* nothing reported from a bad tree */
	free(b);
}

int main(void)
{
	char path[4096], cmd[8192];
	const char *fx = getenv("TF_FIXTURES");
	const char *tree_hash = "bb2e91f95fa10d09f4bc3f9a0be9e4d1ebcb3dd9bd8d6b5ec8e0f0d1d9e37420";
	char dir[] = "/tmp/tf-tree-XXXXXX";
	tf_error err = { 0 };
	got g = { 0 };
	unsigned char *buf;
	size_t len;
	FILE *ls;

	CHECK(fx != NULL);
	CHECK(mkdtemp(dir) != NULL);
	snprintf(cmd, sizeof(cmd), "tar -xzf '%s/cache.tar.gz' -C '%s'", fx, dir);
	CHECK_INT_EQ(system(cmd), 0);
	/* The fixture README gives the tree's hash only as bb2e91f9...7420. */
	snprintf(cmd, sizeof(cmd), "ls %s/cas | grep '^bb2e91f9.*7420$'", dir);
	ls = popen(cmd, "r");
	CHECK(ls && fgets(path, sizeof(path), ls));
	pclose(ls);
	path[64] = '\0';
	(void)tree_hash;
	snprintf(cmd, sizeof(cmd), "%s/cas/%s", dir, path);
	buf = read_all(cmd, &len);
	CHECK_INT_EQ(len, 416);
	CHECK_INT_EQ(chk_tree_walk(buf, len, path, "bazel-out/k8-fastbuild/bin/pkg/treeart_dir", collect, &g, &err), 0);
	CHECK_INT_EQ(g.n, 4);
	CHECK_STR_EQ(g.paths[0], "bazel-out/k8-fastbuild/bin/pkg/treeart_dir/a.txt");
	CHECK_INT_EQ(g.sizes[0], 6);
	CHECK_STR_EQ(g.paths[1], "bazel-out/k8-fastbuild/bin/pkg/treeart_dir/copy_of_input.txt");
	CHECK_INT_EQ(g.sizes[1], 25);
	CHECK_STR_EQ(g.paths[2], "bazel-out/k8-fastbuild/bin/pkg/treeart_dir/sub/b.txt");
	CHECK_STR_EQ(g.paths[3], "bazel-out/k8-fastbuild/bin/pkg/treeart_dir/sub/empty.txt");
	CHECK_INT_EQ(g.sizes[3], 0);
	free(buf);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_INT_EQ(system(cmd), 0);

	/* Truncated and garbage blobs. */
	CHECK(chk_tree_walk((const unsigned char *)"\x0a\x10", 2, "t", "d", collect, &g, &err) < 0);
	CHECK_CONTAINS(err.message, "runs past the end");
	CHECK(chk_tree_walk((const unsigned char *)"", 0, "t", "d", collect, &g, &err) < 0);
	CHECK_CONTAINS(err.message, "has no root directory");

	{
		Digest dg = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
		FileNode f1 = BUILD__BAZEL__REMOTE__EXECUTION__V2__FILE_NODE__INIT, f2 = f1;
		FileNode *files[2] = { &f1, &f2 };
		Dir root = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY__INIT;
		char hex[65];

		dg.hash = (char *)"c7d9472e1db1bfbf9b3d5fa3a1d9c1d94c9e2ba6b4b4d74fc4f7e7d3f80d427d";
		dg.size_bytes = 25;
		f1.digest = f2.digest = &dg;
		root.files = files;
		root.n_files = 1;
		const char *bad_names[] = { "a/b", "..", ".", "" };
		for (int i = 0; i < 4; i++) {
			f1.name = (char *)bad_names[i];
			expect_error(&root, NULL, 0, "is not a plain file name");
		}
		f1.name = (char *)"same";
		f2.name = (char *)"same";
		root.n_files = 2;
		expect_error(&root, NULL, 0, "the name 'same' appears twice");

		/* A folder that names a child the tree does not contain (or its own parent). */
		{
			DirNode dn = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY_NODE__INIT;
			DirNode *dns[1] = { &dn };
			Digest cd = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
			int64_t sz;
			root.n_files = 1;
			f1.name = (char *)"f";
			dn.name = (char *)"loop";
			digest_of(&root, hex, &sz); /* the root's own digest */
			cd.hash = hex;
			cd.size_bytes = sz;
			dn.digest = &cd;
			root.directories = dns;
			root.n_directories = 1;
			expect_error(&root, NULL, 0, "which the tree does not contain");
			root.n_directories = 0;
		}

		/* Nesting deeper than the cap: a chain of CHK_TREE_MAX_DEPTH + 2 folders. */
		{
			enum { N = CHK_TREE_MAX_DEPTH + 2 };
			Dir *chain[N];
			DirNode nodes[N];
			DirNode *nodep[N];
			Digest digs[N];
			char hexes[N][65];
			for (int i = N - 1; i >= 0; i--) {
				Dir init = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY__INIT;
				chain[i] = malloc(sizeof(Dir));
				*chain[i] = init;
				if (i < N - 1) {
					DirNode ninit = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY_NODE__INIT;
					Digest dinit = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
					int64_t sz;
					nodes[i] = ninit;
					digs[i] = dinit;
					digest_of(chain[i + 1], hexes[i], &sz);
					digs[i].hash = hexes[i];
					digs[i].size_bytes = sz;
					nodes[i].name = (char *)"d";
					nodes[i].digest = &digs[i];
					nodep[i] = &nodes[i];
					chain[i]->directories = &nodep[i];
					chain[i]->n_directories = 1;
				}
			}
			expect_error(chain[0], chain + 1, N - 1, "levels deep");
			for (int i = 0; i < N; i++)
				free(chain[i]);
		}
	}
	return 0;
}
