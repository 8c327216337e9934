/* The downloader's streams over grpc:// against Bazel's own remote worker
 * (grpc_stream.sh starts it and passes TF_GRPC_URL and TF_WORKER_CAS): a
 * large ByteStream.Write and a slow ByteStream.Read in bounded memory, HEAD
 * by FindMissingBlobs, a GET or HEAD of unknown size answered as a miss, a
 * wrong upload refused before its last byte leaves, UpdateActionResult and
 * GetActionResult byte for byte, NOT_FOUND as a miss, the action cache cap,
 * and dl_find_missing across several FindMissingBlobs calls. */
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "downloader/downloader.h"
#include "tf_test.h"
#include "lib/stream_util.h"

static tf_downloader *worker(void)
{
	tf_remote_options o;
	tf_error err = { 0 };
	tf_downloader *d;

	tf_remote_options_init(&o);
	o.remote_cache = getenv("TF_GRPC_URL");
	CHECK(o.remote_cache);
	d = tf_downloader_new(&o, NULL, &err);
	if (!d)
		fprintf(stderr, "%s\n", err.message);
	CHECK(d);
	return d;
}

/* The worker's own file for an entry (its storage: {cas,ac}/<2 hex>/<hash>). */
static bool in_worker(const char *area, const char *hash, off_t *size)
{
	char path[1024];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s/%.2s/%s", getenv("TF_WORKER_CAS"), area, hash, hash);
	if (stat(path, &st) < 0)
		return false;
	*size = st.st_size;
	return true;
}

TEST(grpc_large_write_and_slow_read_in_bounded_memory)
{
	size_t n = (size_t)48 << 20, chunk = (size_t)1 << 20;
	unsigned char *blob = pattern(n, 21);
	char hash[TF_HASH_HEX_LEN + 1], why[1024];
	tf_downloader *dl = worker();
	long status = 0, before;
	uint64_t total = 0;
	int64_t length = 0;
	off_t size = 0;
	dl_stream *s;
	int r;

	sha256_hex(blob, n, hash);
	before = vmhwm_kib();
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK(s);
	for (size_t at = 0; at < n; at += chunk)
		CHECK_INT_EQ(dl_stream_write(s, blob + at, chunk), 0);
	r = dl_stream_finish(s, &status, why, sizeof(why));
	if (r)
		fprintf(stderr, "finish: %s\n", why);
	CHECK_INT_EQ(r, 0);
	CHECK_INT_EQ(status, 200);
	dl_stream_free(s);
	CHECK(in_worker("cas", hash, &size) && size == (off_t)n);

	/* Again: the worker has it and commits at the first message, before the
	 * body went; that is a success, and the rest is not sent. */
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	r = 0;
	for (size_t at = 0; at < n && r == 0; at += chunk)
		r = dl_stream_write(s, blob + at, chunk);
	CHECK(r == 0 || r == -EPIPE);
	r = dl_stream_finish(s, &status, why, sizeof(why));
	if (r)
		fprintf(stderr, "finish (again): %s\n", why);
	CHECK_INT_EQ(r, 0);
	dl_stream_free(s);
	free(blob);

	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	r = dl_stream_wait(s, &length, why, sizeof(why));
	if (r)
		fprintf(stderr, "wait: %s\n", why);
	CHECK_INT_EQ(r, 0);
	CHECK_INT_EQ(length, n);
	r = (int)drain(s, &total, true, why, sizeof(why));
	if (r)
		fprintf(stderr, "drain: %s\n", why);
	CHECK_INT_EQ(r, 0);
	CHECK_INT_EQ(total, n);
	dl_stream_free(s);
	if (vmhwm_kib() - before >= 16 * 1024)
		fprintf(stderr, "peak grew by %ld KiB\n", vmhwm_kib() - before);
#ifndef __SANITIZE_ADDRESS__
	/* (AddressSanitizer keeps freed blocks in quarantine: no bound there.) */
	CHECK(vmhwm_kib() - before < 16 * 1024);
#endif

	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, &length, why, sizeof(why)), 0);
	CHECK_INT_EQ(length, n);
	dl_stream_free(s);
	/* The same blob by hash alone: a gRPC cache cannot be asked. */
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	CHECK_CONTAINS(why, "size is not known");
	dl_stream_free(s);
	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_CAS, hash, -1, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	CHECK_CONTAINS(why, "size is not known");
	dl_stream_free(s);
	tf_downloader_free(dl);
}

TEST(grpc_wrong_upload_refused_before_last_byte)
{
	size_t n = 3000000;
	unsigned char *blob = pattern(n, 22);
	char hash[TF_HASH_HEX_LEN + 1], why[1024];
	tf_downloader *dl = worker();
	off_t size = 0;
	dl_stream *s;

	sha256_hex("not these bytes", 15, hash);
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK_INT_EQ(dl_stream_write(s, blob, n), 0);
	CHECK_INT_EQ(dl_stream_finish(s, NULL, why, sizeof(why)), -EBADMSG);
	CHECK_CONTAINS(why, "not stored");
	dl_stream_free(s);
	tf_downloader_free(dl);
	CHECK(!in_worker("cas", hash, &size));
	free(blob);
}

TEST(grpc_action_cache_and_misses)
{
	/* An ActionResult {output_files {path "out" digest {hash size 3}} exit_code 0}. */
	char blob_hash[TF_HASH_HEX_LEN + 1], key[TF_HASH_HEX_LEN + 1], absent[TF_HASH_HEX_LEN + 1], why[1024];
	unsigned char ar[128];
	size_t arlen = 0, dlen;
	tf_downloader *dl = worker();
	long status = 0;
	off_t size = 0;
	tf__buf mem;
	dl_stream *s;
	int r;

	sha256_hex("abc", 3, blob_hash);
	dlen = 2 + 64 + 2;
	ar[arlen++] = 2 << 3 | 2;          /* output_files */
	ar[arlen++] = (unsigned char)(2 + 3 + 2 + dlen);
	ar[arlen++] = 1 << 3 | 2;          /* path */
	ar[arlen++] = 3;
	memcpy(ar + arlen, "out", 3);
	arlen += 3;
	ar[arlen++] = 2 << 3 | 2;          /* digest */
	ar[arlen++] = (unsigned char)dlen;
	ar[arlen++] = 1 << 3 | 2;
	ar[arlen++] = 64;
	memcpy(ar + arlen, blob_hash, 64);
	arlen += 64;
	ar[arlen++] = 2 << 3;
	ar[arlen++] = 3;
	sha256_hex("an action", 9, key);
	r = dl_put_mem(dl, TF_AREA_AC, key, ar, arlen, &status, why, sizeof(why));
	if (r)
		fprintf(stderr, "dl_put_mem: %s\n", why);
	CHECK_INT_EQ(r, 0);
	CHECK(in_worker("ac", key, &size));
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, key, 4, &mem, why, sizeof(why)), -EFBIG);
	CHECK_CONTAINS(why, "larger than the 4 bytes allowed");
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, key, 1000, &mem, why, sizeof(why)), 0);
	CHECK_INT_EQ(mem.len, arlen);
	CHECK(!memcmp(mem.data, ar, arlen));
	tf__buf_fini(&mem);
	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_AC, key, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), 0);
	dl_stream_free(s);

	sha256_hex("absent", 6, absent);
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, absent, 1000, &mem, why, sizeof(why)), -ENOENT);
	CHECK_CONTAINS(why, "NOT_FOUND");
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, absent, 1234, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	CHECK_CONTAINS(why, "NOT_FOUND");
	dl_stream_free(s);
	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_CAS, absent, 1234, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	CHECK_CONTAINS(why, "FindMissingBlobs names it missing");
	dl_stream_free(s);
	tf_downloader_free(dl);
}

TEST(grpc_find_missing_in_batches)
{
	size_t count = 4100, missing = 0;
	tf_digest *v = calloc(count, sizeof(*v));
	tf_downloader *dl = worker();
	char why[1024], path[1024];

	CHECK(v);
	/* 4099 blobs in the worker's storage, and one it lacks last: the second call finds it. */
	for (size_t i = 0; i < count; i++) {
		char data[32];
		int len = snprintf(data, sizeof(data), "blob %zu", i);
		sha256_hex(data, (size_t)len, v[i].hash);
		v[i].size = len;
		if (i + 1 < count) {
			FILE *f;
			snprintf(path, sizeof(path), "%s/cas/%.2s", getenv("TF_WORKER_CAS"), v[i].hash);
			CHECK_INT_EQ(dl_mkdirs(path), 0);
			snprintf(path, sizeof(path), "%s/cas/%.2s/%s", getenv("TF_WORKER_CAS"), v[i].hash, v[i].hash);
			f = fopen(path, "wb");
			CHECK(f && fwrite(data, 1, (size_t)len, f) == (size_t)len && fclose(f) == 0);
		}
	}
	CHECK_INT_EQ(dl_find_missing(dl, TF_AREA_CAS, v, count - 1, &missing, why, sizeof(why)), 1);
	CHECK_INT_EQ(dl_find_missing(dl, TF_AREA_CAS, v, count, &missing, why, sizeof(why)), 0);
	CHECK_INT_EQ(missing, count - 1);
	CHECK_CONTAINS(why, "is missing from grpc://");
	/* The first one missing is the one named (the worker keys its CAS by hash alone). */
	v[7].hash[0] = v[7].hash[0] == '0' ? '1' : '0';
	v[9].hash[0] = v[9].hash[0] == '0' ? '1' : '0';
	CHECK_INT_EQ(dl_find_missing(dl, TF_AREA_CAS, v, 10, &missing, why, sizeof(why)), 0);
	CHECK_INT_EQ(missing, 7);
	free(v);
	tf_downloader_free(dl);
}
