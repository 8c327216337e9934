/* What the downloader's stream tests share (tests/downloader/test_stream.c,
 * test_stream_http.c, tests/grpc/test_stream_grpc.c): a blob's SHA-256 in
 * hex, deterministic bytes, the peak RSS, and a reader that drains a stream. */
#ifndef TF_TEST_STREAM_UTIL_H
#define TF_TEST_STREAM_UTIL_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "downloader/downloader.h"
#include "tf_test.h"

static inline void sha256_hex(const void *p, size_t n, char out[TF_HASH_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	tf__hex(md, len, out);
}

/* n bytes of a linear congruential sequence from seed (malloc'ed). */
static inline unsigned char *pattern(size_t n, unsigned seed)
{
	unsigned char *b = malloc(n ? n : 1);
	CHECK(b);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
	return b;
}

/* A "NAME: N kB" figure of /proc/self/status, KiB; -1 when absent. */
static inline long proc_status_kib(const char *name)
{
	char line[256];
	size_t n = strlen(name);
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");
	CHECK(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, name, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* This process's peak resident set (VmHWM), KiB. */
static inline long vmhwm_kib(void)
{
	return proc_status_kib("VmHWM");
}

/* Reads s to its end, counting into *total; slow: 0.2 ms per 64 KiB, a
 * reader slower than the loopback. The last dl_stream_read result. */
static inline ssize_t drain(dl_stream *s, uint64_t *total, bool slow, char *why, size_t n)
{
	unsigned char buf[64 * 1024];
	struct timespec pace = { 0, 200000 };
	ssize_t r;

	*total = 0;
	while ((r = dl_stream_read(s, buf, sizeof(buf), why, n)) > 0) {
		*total += (uint64_t)r;
		if (slow)
			nanosleep(&pace, NULL);
	}
	return r;
}

#endif
