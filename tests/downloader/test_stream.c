/* The downloader's streams against a --disk_cache directory made here (no
 * server): a large blob read in bounded memory, uploads stored atomically in
 * Bazel's sharded layout, a wrong upload refused before its last byte, a
 * corrupt entry never delivered whole, the action cache cap, misses; and
 * --remote_cache URLs split by libcurl's URL parser with no password in any
 * message, also from a failing transfer. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include "downloader/downloader.h"
#include "tf_test.h"
#include "lib/stream_util.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static char *tmpdir(void)
{
	char *d = strdup("/tmp/tf-test-stream.XXXXXX");
	CHECK(d && mkdtemp(d));
	return d;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

static void rmtree(char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	CHECK(f);
	CHECK(fwrite(p, 1, n, f) == n);
	CHECK(fclose(f) == 0);
}

/* Puts bytes into dir's cache at area/hash, sharded or flat. */
static void put_entry(const char *dir, const char *area, const char *hash, const void *p, size_t n, bool flat)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, area);
	mkdir(path, 0755);
	if (flat) {
		snprintf(path, sizeof(path), "%s/%s/%s", dir, area, hash);
	} else {
		snprintf(path, sizeof(path), "%s/%s/%.2s", dir, area, hash);
		mkdir(path, 0755);
		snprintf(path, sizeof(path), "%s/%s/%.2s/%s", dir, area, hash, hash);
	}
	write_file(path, p, n);
}

static tf_downloader *disk_downloader(const char *dir)
{
	tf_remote_options o;
	tf_error err = { 0 };
	tf_downloader *d;

	tf_remote_options_init(&o);
	o.remote_cache = dir;
	d = tf_downloader_new(&o, NULL, &err);
	if (!d)
		fprintf(stderr, "%s\n", err.message);
	CHECK(d);
	return d;
}

/* Temporary files below dir: how many, and the size of the last one seen. */
static int count_tmp(const char *dir, off_t *size)
{
	char path[1024];
	int n = 0;
	DIR *dd = opendir(dir);
	struct dirent *e;

	if (!dd)
		return 0;
	while ((e = readdir(dd))) {
		struct stat st;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			n += count_tmp(path, size);
		} else if (!strncmp(e->d_name, DL_TMP_PREFIX, strlen(DL_TMP_PREFIX))) {
			n++;
			if (size)
				*size = st.st_size;
		}
	}
	closedir(dd);
	return n;
}

/* ---- disk streams ------------------------------------------------------------------------ */

TEST(stream_get_large_blob_in_bounded_memory)
{
	size_t n = (size_t)48 << 20;
	unsigned char *blob = pattern(n, 7), buf[64 * 1024];
	char hash[TF_HASH_HEX_LEN + 1], got[TF_HASH_HEX_LEN + 1], why[1024];
	char *dir = tmpdir();
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	uint64_t total = 0;
	int64_t length = 0;
	long before;
	tf_downloader *dl;
	dl_stream *s;
	ssize_t r;

	sha256_hex(blob, n, hash);
	put_entry(dir, "cas", hash, blob, n, false);
	free(blob); /* what stays resident from here on is the stream's */
	dl = disk_downloader(dir);
	before = vmhwm_kib();
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK(s);
	CHECK_INT_EQ(dl_stream_wait(s, &length, why, sizeof(why)), 0);
	CHECK_INT_EQ(length, n);
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	while ((r = dl_stream_read(s, buf, sizeof(buf), why, sizeof(why))) > 0) {
		EVP_DigestUpdate(md, buf, (size_t)r);
		total += (uint64_t)r;
	}
	CHECK_INT_EQ(r, 0);
	CHECK_INT_EQ(total, n);
	EVP_DigestFinal_ex(md, d, &dlen);
	tf__hex(d, dlen, got);
	CHECK_STR_EQ(got, hash);
	/* 48 MiB went through; the process grew by far less. */
	CHECK(vmhwm_kib() - before < 8 * 1024);
	dl_stream_free(s);
	EVP_MD_CTX_free(md);
	tf_downloader_free(dl);
	rmtree(dir);
}

TEST(stream_put_stores_sharded_atomically)
{
	size_t n = 300000;
	unsigned char *blob = pattern(n, 3), *back;
	char hash[TF_HASH_HEX_LEN + 1], why[1024], path[1024];
	char *dir = tmpdir();
	tf_downloader *dl = disk_downloader(dir);
	tf__buf mem;
	struct stat st;
	long status = 0;
	dl_stream *s;

	sha256_hex(blob, n, hash);
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK(s);
	for (size_t at = 0; at < n; at += 70000)
		CHECK_INT_EQ(dl_stream_write(s, blob + at, n - at < 70000 ? n - at : 70000), 0);
	/* Not at its final path before the end. */
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s", dir, hash, hash);
	CHECK(stat(path, &st) < 0);
	CHECK_INT_EQ(dl_stream_finish(s, &status, why, sizeof(why)), 0);
	CHECK_INT_EQ(status, 200);
	dl_stream_free(s);
	CHECK(stat(path, &st) == 0);
	CHECK_INT_EQ(st.st_size, n);
	CHECK_INT_EQ(st.st_mode & 0777, 0644);
	CHECK_INT_EQ(count_tmp(dir, NULL), 0);
	/* And back, through the same interface. */
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_CAS, hash, n, &mem, why, sizeof(why)), 0);
	back = mem.data;
	CHECK_INT_EQ(mem.len, n);
	CHECK(!memcmp(back, blob, n));
	tf__buf_fini(&mem);
	/* An action cache entry is stored as given (its key names an action). */
	CHECK_INT_EQ(dl_put_mem(dl, TF_AREA_AC, hash, "result", 6, &status, why, sizeof(why)), 0);
	snprintf(path, sizeof(path), "%s/ac/%.2s/%s", dir, hash, hash);
	CHECK(stat(path, &st) == 0 && st.st_size == 6);
	free(blob);
	tf_downloader_free(dl);
	rmtree(dir);
}

TEST(stream_put_wrong_hash_refused_before_last_byte)
{
	size_t n = 200000;
	unsigned char *blob = pattern(n, 5);
	char hash[TF_HASH_HEX_LEN + 1], why[1024], tmpd[1024];
	char *dir = tmpdir();
	tf_downloader *dl = disk_downloader(dir);
	off_t size = -1;
	dl_stream *s;

	sha256_hex("something else", 14, hash);
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK(s);
	CHECK_INT_EQ(dl_stream_write(s, blob, n), 0);
	/* Every byte handed over, and the cache holds all but the last one. */
	snprintf(tmpd, sizeof(tmpd), "%s/cas", dir);
	CHECK_INT_EQ(count_tmp(tmpd, &size), 1);
	CHECK_INT_EQ(size, n - 1);
	CHECK_INT_EQ(dl_stream_finish(s, NULL, why, sizeof(why)), -EBADMSG);
	CHECK_CONTAINS(why, "the body's SHA-256 is");
	CHECK_CONTAINS(why, "not stored");
	dl_stream_free(s);
	CHECK_INT_EQ(count_tmp(dir, NULL), 0);
	snprintf(tmpd, sizeof(tmpd), "%s/cas/%.2s/%s", dir, hash, hash);
	CHECK(access(tmpd, F_OK) < 0);
	/* A body shorter than announced is refused too. */
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK_INT_EQ(dl_stream_write(s, blob, 10), 0);
	CHECK_INT_EQ(dl_stream_write(s, blob, n), -EMSGSIZE);
	CHECK_INT_EQ(dl_stream_finish(s, NULL, why, sizeof(why)), -EMSGSIZE);
	dl_stream_free(s);
	CHECK_INT_EQ(count_tmp(dir, NULL), 0);
	free(blob);
	tf_downloader_free(dl);
	rmtree(dir);
}

TEST(stream_get_corrupt_entry_never_delivered_whole)
{
	size_t n = 100000;
	unsigned char *blob = pattern(n, 9), buf[4096];
	char hash[TF_HASH_HEX_LEN + 1], why[1024];
	char *dir = tmpdir();
	tf_downloader *dl = disk_downloader(dir);
	uint64_t total = 0;
	dl_stream *s;
	ssize_t r;

	sha256_hex(blob, n, hash);
	blob[n / 2] ^= 1; /* bit rot */
	put_entry(dir, "cas", hash, blob, n, true);
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), 0);
	while ((r = dl_stream_read(s, buf, sizeof(buf), why, sizeof(why))) > 0)
		total += (uint64_t)r;
	CHECK_INT_EQ(r, -EBADMSG);
	CHECK_CONTAINS(why, "hashes to");
	CHECK_INT_EQ(total, n - 1);
	dl_stream_free(s);
	free(blob);
	tf_downloader_free(dl);
	rmtree(dir);
}

TEST(ac_read_is_capped)
{
	char hash[TF_HASH_HEX_LEN + 1], why[1024];
	unsigned char *entry = pattern(1000, 1);
	char *dir = tmpdir();
	tf_downloader *dl = disk_downloader(dir);
	tf__buf mem;

	sha256_hex("an action", 9, hash);
	put_entry(dir, "ac", hash, entry, 1000, false);
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, hash, 100, &mem, why, sizeof(why)), -EFBIG);
	CHECK_CONTAINS(why, "larger than the 100 bytes allowed");
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, hash, 1000, &mem, why, sizeof(why)), 0);
	CHECK_INT_EQ(mem.len, 1000);
	CHECK(!memcmp(mem.data, entry, 1000));
	tf__buf_fini(&mem);
	free(entry);
	tf_downloader_free(dl);
	rmtree(dir);
}

TEST(misses_and_find_missing)
{
	char there[TF_HASH_HEX_LEN + 1], absent[TF_HASH_HEX_LEN + 1], why[1024];
	char *dir = tmpdir();
	tf_downloader *dl = disk_downloader(dir);
	tf_digest v[3];
	size_t missing = 99;
	tf__buf mem;
	dl_stream *s;

	sha256_hex("there", 5, there);
	sha256_hex("absent", 6, absent);
	put_entry(dir, "cas", there, "there", 5, false);
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, absent, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	dl_stream_free(s);
	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_AC, absent, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	dl_stream_free(s);
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, absent, 100, &mem, why, sizeof(why)), -ENOENT);
	/* Present with its size; present with another size; absent. */
	CHECK_INT_EQ(tf_digest_parse(there, 5, &v[0], NULL), 0);
	CHECK_INT_EQ(dl_find_missing(dl, TF_AREA_CAS, v, 1, &missing, why, sizeof(why)), 1);
	CHECK_INT_EQ(tf_digest_parse(there, 6, &v[1], NULL), 0);
	CHECK_INT_EQ(dl_find_missing(dl, TF_AREA_CAS, v, 2, &missing, why, sizeof(why)), 0);
	CHECK_INT_EQ(missing, 1);
	CHECK_CONTAINS(why, "has 5 bytes");
	CHECK_INT_EQ(tf_digest_parse(absent, 6, &v[1], NULL), 0);
	CHECK_INT_EQ(dl_find_missing(dl, TF_AREA_CAS, v, 2, &missing, why, sizeof(why)), 0);
	CHECK_INT_EQ(missing, 1);
	CHECK_CONTAINS(why, "is missing");
	/* Bad keys are refused at once. */
	CHECK(dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, "xyz", 0, 0, NULL) == NULL);
	tf_downloader_free(dl);
	rmtree(dir);
}

/* ---- URLs and credentials ---------------------------------------------------------------- */

static dl_backend *backend(const char *url, const char *instance, tf_error *err)
{
	tf_remote_options o;
	tf_remote_options_init(&o);
	o.remote_cache = url;
	o.remote_instance_name = instance;
	return dl_backend_new(&o, err);
}

TEST(url_credentials_stripped_by_curl_url)
{
	tf_error err = { 0 };
	dl_backend *b = backend("http://alice:s3%2Fcret@cache.example:8080/prefix/", NULL, &err);

	CHECK(b);
	CHECK_STR_EQ(dl_backend_display(b), "http://cache.example:8080/prefix");
	dl_backend_free(b);
	b = backend("https://bob:pw@cache.example/", "team/main", &err);
	CHECK(b);
	CHECK_STR_EQ(dl_backend_display(b), "https://cache.example/team/main");
	dl_backend_free(b);
	b = backend("http://cache.example", NULL, &err);
	CHECK(b);
	CHECK_STR_EQ(dl_backend_display(b), "http://cache.example");
	dl_backend_free(b);
}

TEST(url_errors_never_name_the_password)
{
	const char *bad[] = {
		"http://alice:s3/cret@cache.example", /* '/' in a password must be %2F: not a URL */
		"grpc://alice:s3cret@cache.example",
		"ftp://alice:s3cret@cache.example",
		"http://alice:s3cret@cache.example/?q=1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tf_error err = { 0 };
		dl_backend *b = backend(bad[i], NULL, &err);
		CHECK(b == NULL);
		CHECK(err.code < 0);
		CHECK(err.message[0]);
		CHECK(!strstr(err.message, "s3"));
		CHECK(!strstr(err.message, "cret"));
	}
}

TEST(failed_transfer_message_has_no_password)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t alen = sizeof(a);
	char url[256], why[1024], hash[TF_HASH_HEX_LEN + 1];
	tf_remote_options o;
	tf_error err = { 0 };
	tf_downloader *dl;
	dl_stream *s;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	/* A port nobody listens on: bound, never listening, so connects are refused. */
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
	snprintf(url, sizeof(url), "http://alice:s3%%2Fcret@127.0.0.1:%u", ntohs(a.sin_port));
	tf_remote_options_init(&o);
	o.remote_cache = url;
	dl = tf_downloader_new(&o, NULL, &err);
	CHECK(dl);
	sha256_hex("x", 1, hash);
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -EIO);
	CHECK_CONTAINS(why, "http://127.0.0.1:");
	CHECK(!strstr(why, "s3") && !strstr(why, "cret") && !strstr(why, "alice"));
	CHECK(!strstr(dl_stream_what(s), "s3"));
	dl_stream_free(s);
	tf_downloader_free(dl);
	close(fd);
}
