/* tf_downloader_read against a real nginx cache (URL and hashes from read.sh):
 * a CAS blob verified into memory, an AC entry (not verifiable), a lost one,
 * a corrupt one, one over the byte cap, and the empty blob never requested. */
#include <stdlib.h>
#include <string.h>

#include "topfetch.h"
#include "tf_test.h"

typedef struct seen {
	tf_result result;
	char message[1024];
	size_t len;
	unsigned char first;
	int calls;
} seen;

static void on_read(const tf_fetch_done *d, void *user)
{
	seen *s = user;
	s->calls++;
	s->result = d->result;
	s->len = d->len;
	s->first = d->len ? d->data[0] : 0;
	snprintf(s->message, sizeof(s->message), "%s", d->message ? d->message : "");
}

int main(int argc, char **argv)
{
	/* argv: URL OUTDIR blob_hash blob_size ac_hash missing_hash corrupt_hash corrupt_size */
	tf_remote_options o;
	tf_error err = { 0 };
	seen blob = { 0 }, ac = { 0 }, lost = { 0 }, bad = { 0 }, big = { 0 }, empty = { 0 };
	tf_downloader *d;

	CHECK(argc == 9);
	tf_remote_options_init(&o);
	o.remote_cache = argv[1];
	o.remote_retries = 1;
	d = tf_downloader_new(&o, argv[2], &err);
	CHECK(d != NULL);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_CAS, argv[3], atoll(argv[4]), 1 << 20, on_read, &blob), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_AC, argv[5], -1, 1 << 20, on_read, &ac), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_CAS, argv[6], 10, 1 << 20, on_read, &lost), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_CAS, argv[7], atoll(argv[8]), 1 << 20, on_read, &bad), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_AC, argv[5], -1, 4, on_read, &big), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_CAS, TF_EMPTY_SHA256, 0, 16, on_read, &empty), 0);
	/* Bad arguments are refused at once. */
	CHECK(tf_downloader_read(d, TF_AREA_CAS, "xyz", 1, 16, on_read, &empty) < 0);
	CHECK(tf_downloader_read(d, TF_AREA_CAS, argv[3], -1, 16, on_read, &empty) < 0);
	CHECK(tf_downloader_read(d, TF_AREA_CAS, argv[3], 100, 16, on_read, &empty) < 0);
	while (tf_downloader_outstanding(d) > 0)
		tf_downloader_dispatch(d, 1000);

	CHECK_INT_EQ(blob.calls, 1);
	CHECK_INT_EQ(blob.result, TF_RESULT_OK);
	CHECK_INT_EQ(blob.len, atoll(argv[4]));
	CHECK_INT_EQ(ac.result, TF_RESULT_OK);
	CHECK_INT_EQ(ac.len, 11);
	CHECK_INT_EQ(ac.first, 'a');
	CHECK_INT_EQ(lost.result, TF_RESULT_LOST);
	CHECK_CONTAINS(lost.message, "HTTP 404");
	CHECK_INT_EQ(bad.result, TF_RESULT_CORRUPT);
	CHECK_CONTAINS(bad.message, "hashes to");
	CHECK_INT_EQ(big.result, TF_RESULT_CORRUPT);
	CHECK_CONTAINS(big.message, "larger than the 4 bytes allowed");
	CHECK_INT_EQ(empty.result, TF_RESULT_OK);
	CHECK_INT_EQ(empty.len, 0);
	tf_downloader_free(d);
	return 0;
}
