/* tf_downloader_read against a real REAPI server (arguments from
 * grpc_read.sh): a CAS blob into memory (ByteStream.Read), an action cache
 * entry (GetActionResult, compared byte for byte with what the server
 * stores), a lost blob and an action cache miss (NOT_FOUND: lost), and an
 * entry over the byte cap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topfetch.h"
#include "tf_test.h"

typedef struct seen {
	tf_result result;
	char message[1024];
	unsigned char data[4096];
	size_t len;
	int calls;
} seen;

static void on_read(const tf_fetch_done *d, void *user)
{
	seen *s = user;
	s->calls++;
	s->result = d->result;
	s->len = d->len;
	if (d->len)
		memcpy(s->data, d->data, d->len < sizeof(s->data) ? d->len : sizeof(s->data));
	snprintf(s->message, sizeof(s->message), "%s", d->message ? d->message : "");
}

int main(int argc, char **argv)
{
	/* argv: URL blob_hash blob_size ac_hash ac_file missing_hash */
	tf_remote_options o;
	tf_error err = { 0 };
	seen blob = { 0 }, ac = { 0 }, lost = { 0 }, miss = { 0 }, big = { 0 };
	unsigned char want[4096];
	size_t want_len;
	FILE *f;
	tf_downloader *d;

	CHECK(argc == 7);
	f = fopen(argv[5], "rb");
	CHECK(f != NULL);
	want_len = fread(want, 1, sizeof(want), f);
	fclose(f);
	tf_remote_options_init(&o);
	o.remote_cache = argv[1];
	o.remote_retries = 1;
	d = tf_downloader_new(&o, NULL, &err);
	if (!d)
		fprintf(stderr, "%s\n", err.message);
	CHECK(d != NULL);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_CAS, argv[2], atoll(argv[3]), 1 << 20, on_read, &blob), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_AC, argv[4], -1, 1 << 20, on_read, &ac), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_CAS, argv[6], 10, 1 << 20, on_read, &lost), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_AC, argv[6], -1, 1 << 20, on_read, &miss), 0);
	CHECK_INT_EQ(tf_downloader_read(d, TF_AREA_AC, argv[4], -1, 4, on_read, &big), 0);
	while (tf_downloader_outstanding(d) > 0)
		tf_downloader_dispatch(d, 1000);

	CHECK_INT_EQ(blob.result, TF_RESULT_OK);
	CHECK_INT_EQ(blob.len, atoll(argv[3]));
	CHECK_INT_EQ(ac.result, TF_RESULT_OK);
	CHECK_INT_EQ(ac.len, want_len);
	CHECK(!memcmp(ac.data, want, want_len));
	CHECK_INT_EQ(lost.result, TF_RESULT_LOST);
	CHECK_CONTAINS(lost.message, "NOT_FOUND");
	CHECK_INT_EQ(miss.result, TF_RESULT_LOST);
	CHECK_CONTAINS(miss.message, "GetActionResult");
	CHECK_INT_EQ(big.result, TF_RESULT_CORRUPT);
	CHECK_CONTAINS(big.message, "larger than the 4 bytes allowed");
	tf_downloader_free(d);
	return 0;
}
