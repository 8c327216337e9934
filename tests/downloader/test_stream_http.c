/* The downloader's streams against a real nginx cache (stream_http.sh starts
 * it and passes TF_NGINX_URL and TF_NGINX_CACHE): a large upload and a slow
 * download both in bounded memory (the ring plus curl's pause/unpause), a
 * wrong upload refused before its last byte leaves, a corrupt entry never
 * delivered whole, misses, the action cache cap. */
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "downloader/downloader.h"
#include "tf_test.h"
#include "lib/stream_util.h"

static tf_downloader *nginx(void)
{
	tf_remote_options o;
	tf_error err = { 0 };
	tf_downloader *d;

	tf_remote_options_init(&o);
	o.remote_cache = getenv("TF_NGINX_URL");
	CHECK(o.remote_cache);
	d = tf_downloader_new(&o, NULL, &err);
	CHECK(d);
	return d;
}

static bool in_cache(const char *area, const char *hash, off_t *size)
{
	char path[1024];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s/%s", getenv("TF_NGINX_CACHE"), area, hash);
	if (stat(path, &st) < 0)
		return false;
	*size = st.st_size;
	return true;
}

/* Reads a stream to its end in chunks, pausing between them when slow. */

TEST(http_large_upload_and_slow_download_in_bounded_memory)
{
	size_t n = (size_t)64 << 20, chunk = (size_t)1 << 20;
	unsigned char *blob = pattern(n, 11);
	char hash[TF_HASH_HEX_LEN + 1], why[1024];
	tf_downloader *dl = nginx();
	long status = 0, before;
	uint64_t total = 0;
	int64_t length = 0;
	off_t size = 0;
	dl_stream *s;

	sha256_hex(blob, n, hash);
	before = vmhwm_kib();
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK(s);
	for (size_t at = 0; at < n; at += chunk)
		CHECK_INT_EQ(dl_stream_write(s, blob + at, chunk), 0);
	CHECK_INT_EQ(dl_stream_finish(s, &status, why, sizeof(why)), 0);
	CHECK_INT_EQ(status, 201);
	dl_stream_free(s);
	CHECK(in_cache("cas", hash, &size) && size == (off_t)n);
	free(blob);

	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, &length, why, sizeof(why)), 0);
	CHECK_INT_EQ(length, n);
	CHECK_INT_EQ(drain(s, &total, true, why, sizeof(why)), 0);
	CHECK_INT_EQ(total, n);
	dl_stream_free(s);
	/* 128 MiB crossed (besides the 64 MiB source, allocated before); the
	 * process grew by a few MiB at most. */
	if (vmhwm_kib() - before >= 16 * 1024)
		fprintf(stderr, "peak grew by %ld KiB\n", vmhwm_kib() - before);
	CHECK(vmhwm_kib() - before < 16 * 1024);
	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, &length, why, sizeof(why)), 0);
	CHECK_INT_EQ(length, n);
	dl_stream_free(s);
	tf_downloader_free(dl);
}

TEST(http_wrong_upload_refused_before_last_byte)
{
	size_t n = 3000000;
	unsigned char *blob = pattern(n, 12);
	char hash[TF_HASH_HEX_LEN + 1], why[1024];
	tf_downloader *dl = nginx();
	off_t size = 0;
	dl_stream *s;

	sha256_hex("not these bytes", 15, hash);
	s = dl_stream_open(dl, DL_OP_PUT, TF_AREA_CAS, hash, (int64_t)n, 0, NULL);
	CHECK_INT_EQ(dl_stream_write(s, blob, n), 0);
	CHECK_INT_EQ(dl_stream_finish(s, NULL, why, sizeof(why)), -EBADMSG);
	CHECK_CONTAINS(why, "not stored");
	dl_stream_free(s);
	tf_downloader_free(dl); /* waits for the engine: the cancelled upload has ended */
	CHECK(!in_cache("cas", hash, &size));
	free(blob);
}

TEST(http_corrupt_entry_never_delivered_whole)
{
	size_t n = 2000000;
	unsigned char *blob = pattern(n, 13);
	char hash[TF_HASH_HEX_LEN + 1], why[1024], path[1024];
	tf_downloader *dl = nginx();
	uint64_t total = 0;
	dl_stream *s;
	FILE *f;

	sha256_hex(blob, n, hash);
	blob[10] ^= 0x40;
	snprintf(path, sizeof(path), "%s/cas/%s", getenv("TF_NGINX_CACHE"), hash);
	f = fopen(path, "wb");
	CHECK(f && fwrite(blob, 1, n, f) == n && fclose(f) == 0);
	chmod(path, 0644);
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, hash, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), 0);
	CHECK_INT_EQ(drain(s, &total, false, why, sizeof(why)), -EBADMSG);
	CHECK_CONTAINS(why, "hashes to");
	CHECK_INT_EQ(total, n - 1);
	dl_stream_free(s);
	free(blob);
	tf_downloader_free(dl);
}

TEST(http_misses_and_ac_cap)
{
	char absent[TF_HASH_HEX_LEN + 1], key[TF_HASH_HEX_LEN + 1], why[1024];
	tf_downloader *dl = nginx();
	long status = 0;
	tf__buf mem;
	dl_stream *s;
	int r;

	sha256_hex("absent", 6, absent);
	s = dl_stream_open(dl, DL_OP_GET, TF_AREA_CAS, absent, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	CHECK_CONTAINS(why, "HTTP 404");
	dl_stream_free(s);
	s = dl_stream_open(dl, DL_OP_HEAD, TF_AREA_AC, absent, 0, 0, NULL);
	CHECK_INT_EQ(dl_stream_wait(s, NULL, why, sizeof(why)), -ENOENT);
	dl_stream_free(s);
	sha256_hex("an action", 9, key);
	r = dl_put_mem(dl, TF_AREA_AC, key, "0123456789", 10, &status, why, sizeof(why));
	if (r)
		fprintf(stderr, "dl_put_mem: %s\n", why);
	CHECK_INT_EQ(r, 0);
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, key, 4, &mem, why, sizeof(why)), -EFBIG);
	CHECK_CONTAINS(why, "larger than the 4 bytes allowed");
	CHECK_INT_EQ(dl_get_mem(dl, TF_AREA_AC, key, 10, &mem, why, sizeof(why)), 0);
	CHECK_INT_EQ(mem.len, 10);
	tf__buf_fini(&mem);
	tf_downloader_free(dl);
}
