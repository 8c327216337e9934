/* Helpers shared by the store tests: a scratch folder, digests, outputs. */
#ifndef TF_TEST_STORE_UTIL_H
#define TF_TEST_STORE_UTIL_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "tf_test.h"

/* A fresh folder under $TMPDIR (or /tmp); removed by tmpdir_remove. */
static inline char *tmpdir_new(void)
{
	const char *base = getenv("TMPDIR");
	char *p = NULL;

	if (!base || !*base)
		base = "/tmp";
	CHECK(asprintf(&p, "%s/tf-store-XXXXXX", base) > 0);
	CHECK(mkdtemp(p) != NULL);
	return p;
}

static inline int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline void tmpdir_remove(char *p)
{
	CHECK(nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0);
	free(p);
}

static inline char *path_join(const char *dir, const char *name)
{
	char *p = NULL;
	CHECK(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static inline uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* A distinct, deterministic 64-hex "digest" for i (salt varies the series). */
static inline void hash_of(uint64_t i, uint64_t salt, char out[TF_HASH_HEX_LEN + 1])
{
	uint64_t x = i * 0x100000001b3u ^ salt;
	for (int w = 0; w < 4; w++)
		snprintf(out + 16 * w, 17, "%016llx", (unsigned long long)splitmix64(&x));
}

/* Fills a file output with the given path and digest. */
static inline st_output file_output(const char *path, const char *hash, int64_t size)
{
	st_output o;
	memset(&o, 0, sizeof(o));
	o.path = path;
	o.hash = hash;
	o.size = size;
	o.kind = ST_KIND_FILE;
	return o;
}

static inline st_store *open_ok(const char *path, const st_options *opts)
{
	tf_error err = { 0 };
	st_store *s = st_open(path, opts, &err);
	if (!s) {
		fprintf(stderr, "st_open(%s): %d %s\n", path, err.code, err.message);
		exit(1);
	}
	return s;
}

/* Runs a call that must succeed, printing its message if not. */
#define OK(call)                                                                       \
	do {                                                                           \
		tf_error e_ = { 0 };                                                   \
		tf_error *err = &e_;                                                   \
		int r_ = (call);                                                       \
		if (r_ < 0) {                                                          \
			fprintf(stderr, "%s:%d: %s failed: %d %s\n", __FILE__, __LINE__, #call, \
				r_, e_.message);                                       \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

#endif
