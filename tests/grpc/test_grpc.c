/* The gRPC pieces of the downloader: message framing, reassembly of answers
 * split anywhere, grpc-status/grpc-message trailers, status mapping,
 * resource names. */
#include "tf_test.h"

#include "bytestream.pb-c.h"
#include "downloader/downloader.h"

typedef struct sink_buf {
	unsigned char b[4096];
	size_t n;
	int calls;
} sink_buf;

static int collect(void *arg, const void *p, size_t n)
{
	sink_buf *s = arg;
	if (s->n + n > sizeof(s->b))
		return -E2BIG;
	memcpy(s->b + s->n, p, n);
	s->n += n;
	s->calls++;
	return 0;
}

/* A framed ReadResponse with data. */
static void read_response(tf__buf *out, const char *data)
{
	Google__Bytestream__ReadResponse m = GOOGLE__BYTESTREAM__READ_RESPONSE__INIT;
	unsigned char packed[256];
	size_t len;

	m.data.data = (uint8_t *)data;
	m.data.len = strlen(data);
	len = google__bytestream__read_response__pack(&m, packed);
	CHECK(dl_grpc_frame(out, packed, len) == 0);
}

TEST(frame_prefix_is_flag_and_big_endian_length)
{
	tf__buf b;
	unsigned char msg[300];

	memset(msg, 'x', sizeof(msg));
	tf__buf_init(&b, 1 << 20);
	CHECK(dl_grpc_frame(&b, msg, sizeof(msg)) == 0);
	CHECK_INT_EQ(b.len, 305);
	CHECK_INT_EQ(b.data[0], 0);
	CHECK_INT_EQ(b.data[1], 0);
	CHECK_INT_EQ(b.data[2], 0);
	CHECK_INT_EQ(b.data[3], 1);
	CHECK_INT_EQ(b.data[4], 44);
	tf__buf_fini(&b);
}

TEST(read_data_reassembled_from_any_split)
{
	tf__buf b;

	tf__buf_init(&b, 1 << 20);
	read_response(&b, "hello, ");
	read_response(&b, "");
	read_response(&b, "world");
	/* Every split point, byte by byte and in two pieces. */
	for (size_t cut = 0; cut <= b.len; cut++) {
		dl_grpc_rx rx;
		sink_buf s = { .n = 0 };
		dl_grpc_rx_init(&rx, DL_GRPC_READ_DATA);
		CHECK(dl_grpc_rx_feed(&rx, b.data, cut, collect, &s) == 0);
		CHECK(dl_grpc_rx_feed(&rx, b.data + cut, b.len - cut, collect, &s) == 0);
		CHECK_INT_EQ(s.n, 12);
		CHECK(!memcmp(s.b, "hello, world", 12));
		CHECK_INT_EQ(rx.messages, 3);
		CHECK(!dl_grpc_rx_partial(&rx));
		dl_grpc_rx_fini(&rx);
	}
	{
		dl_grpc_rx rx;
		sink_buf s = { .n = 0 };
		dl_grpc_rx_init(&rx, DL_GRPC_READ_DATA);
		for (size_t i = 0; i < b.len; i++)
			CHECK(dl_grpc_rx_feed(&rx, b.data + i, 1, collect, &s) == 0);
		CHECK_INT_EQ(s.n, 12);
		dl_grpc_rx_fini(&rx);
	}
	tf__buf_fini(&b);
}

TEST(partial_message_is_noticed)
{
	tf__buf b;
	dl_grpc_rx rx;
	sink_buf s = { .n = 0 };

	tf__buf_init(&b, 1 << 20);
	read_response(&b, "abcdef");
	dl_grpc_rx_init(&rx, DL_GRPC_READ_DATA);
	CHECK(dl_grpc_rx_feed(&rx, b.data, b.len - 2, collect, &s) == 0);
	CHECK_INT_EQ(s.n, 0); /* nothing of a message before it is whole */
	CHECK(dl_grpc_rx_partial(&rx));
	dl_grpc_rx_reset(&rx);
	CHECK(!dl_grpc_rx_partial(&rx));
	dl_grpc_rx_fini(&rx);
	tf__buf_fini(&b);
}

TEST(malformed_answers_are_refused_with_a_reason)
{
	dl_grpc_rx rx;
	sink_buf s = { .n = 0 };
	/* compressed flag set */
	unsigned char comp[] = { 1, 0, 0, 0, 1, 0x52 };
	/* a ReadResponse whose field 10 is a varint, not bytes */
	unsigned char badwire[] = { 0, 0, 0, 0, 2, 0x50, 0x01 };
	/* a length past any cap */
	unsigned char huge[] = { 0, 0xff, 0xff, 0xff, 0xff };

	dl_grpc_rx_init(&rx, DL_GRPC_READ_DATA);
	CHECK(dl_grpc_rx_feed(&rx, comp, sizeof(comp), collect, &s) == -EBADMSG);
	CHECK(strstr(rx.why, "compressed"));
	dl_grpc_rx_reset(&rx);
	CHECK(dl_grpc_rx_feed(&rx, badwire, sizeof(badwire), collect, &s) == -EBADMSG);
	CHECK(strstr(rx.why, "ReadResponse"));
	dl_grpc_rx_reset(&rx);
	CHECK(dl_grpc_rx_feed(&rx, huge, sizeof(huge), collect, &s) == -EBADMSG);
	CHECK(strstr(rx.why, "bytes"));
	CHECK_INT_EQ(s.n, 0);
	dl_grpc_rx_fini(&rx);
}

TEST(raw_answers_pass_whole_messages)
{
	unsigned char two[] = { 0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0 };
	dl_grpc_rx rx;
	sink_buf s = { .n = 0 };

	dl_grpc_rx_init(&rx, DL_GRPC_RAW);
	CHECK(dl_grpc_rx_feed(&rx, two, sizeof(two), collect, &s) == 0);
	CHECK_INT_EQ(s.n, 3);
	CHECK_INT_EQ(rx.messages, 2);
	dl_grpc_rx_fini(&rx);
}

TEST(trailers_give_status_and_decoded_message)
{
	dl_grpc_rx rx;
	char why[512];
	const char *msg = "grpc-message: RequestMetadata not received%20from the client%0Afor Read\r\n";

	dl_grpc_rx_init(&rx, DL_GRPC_READ_DATA);
	dl_grpc_rx_header(&rx, "content-type: application/grpc\r\n", 32);
	CHECK_INT_EQ(rx.status, -1);
	dl_grpc_rx_header(&rx, "grpc-status: 3\r\n", 16);
	dl_grpc_rx_header(&rx, msg, strlen(msg));
	CHECK_INT_EQ(rx.status, 3);
	CHECK_STR_EQ(rx.message, "RequestMetadata not received from the client for Read");
	CHECK(dl_grpc_classify(&rx, CURLE_OK, 200, NULL, 60, why, sizeof(why)) == DL_OUTCOME_FATAL);
	CHECK_STR_EQ(why, "INVALID_ARGUMENT: RequestMetadata not received from the client for Read");
	dl_grpc_rx_fini(&rx);
}

TEST(status_mapping)
{
	static const struct {
		int code;
		dl_outcome o;
	} cases[] = {
		{ 0, DL_OUTCOME_BODY },	      { 5, DL_OUTCOME_MISS },	  { 14, DL_OUTCOME_TRANSIENT },
		{ 8, DL_OUTCOME_TRANSIENT },  { 10, DL_OUTCOME_TRANSIENT }, { 4, DL_OUTCOME_TIMEOUT },
		{ 16, DL_OUTCOME_FATAL },     { 7, DL_OUTCOME_FATAL },	  { 3, DL_OUTCOME_FATAL },
		{ 12, DL_OUTCOME_FATAL },     { 13, DL_OUTCOME_FATAL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		dl_grpc_rx rx;
		char why[256], line[32];
		dl_grpc_rx_init(&rx, DL_GRPC_RAW);
		snprintf(line, sizeof(line), "grpc-status: %d\r\n", cases[i].code);
		dl_grpc_rx_header(&rx, line, strlen(line));
		CHECK_INT_EQ(dl_grpc_classify(&rx, CURLE_OK, 200, NULL, 60, why, sizeof(why)), cases[i].o);
		if (cases[i].code)
			CHECK_STR_EQ(why, dl_grpc_code_name(cases[i].code));
		dl_grpc_rx_fini(&rx);
	}
	{
		/* no status at all: a cut stream (retried); a transport error too */
		dl_grpc_rx rx;
		char why[256];
		dl_grpc_rx_init(&rx, DL_GRPC_RAW);
		CHECK_INT_EQ(dl_grpc_classify(&rx, CURLE_OK, 200, NULL, 60, why, sizeof(why)), DL_OUTCOME_TRANSIENT);
		CHECK(strstr(why, "grpc-status"));
		CHECK_INT_EQ(dl_grpc_classify(&rx, CURLE_COULDNT_CONNECT, 0, NULL, 60, why, sizeof(why)),
			     DL_OUTCOME_TRANSIENT);
		CHECK_INT_EQ(dl_grpc_classify(&rx, CURLE_OK, 404, NULL, 60, why, sizeof(why)), DL_OUTCOME_FATAL);
		CHECK(strstr(why, "HTTP 404"));
		dl_grpc_rx_fini(&rx);
	}
}

TEST(whole_answer_without_trailers)
{
	unsigned char one[] = { 0, 0, 0, 0, 3, 'a', 'b', 'c' };
	dl_grpc_rx rx;
	sink_buf s = { .n = 0 };

	dl_grpc_rx_init(&rx, DL_GRPC_RAW);
	CHECK(!dl_grpc_rx_whole_untrailed(&rx, CURLE_OK, 200)); /* no message: a cut stream */
	CHECK(dl_grpc_rx_feed(&rx, one, sizeof(one) - 1, collect, &s) == 0);
	CHECK(!dl_grpc_rx_whole_untrailed(&rx, CURLE_OK, 200)); /* cut inside the message */
	CHECK(dl_grpc_rx_feed(&rx, one + sizeof(one) - 1, 1, collect, &s) == 0);
	CHECK(dl_grpc_rx_whole_untrailed(&rx, CURLE_OK, 200));
	CHECK(!dl_grpc_rx_whole_untrailed(&rx, CURLE_RECV_ERROR, 200));
	CHECK(!dl_grpc_rx_whole_untrailed(&rx, CURLE_OK, 503));
	dl_grpc_rx_header(&rx, "grpc-status: 14\r\n", 17);
	CHECK(!dl_grpc_rx_whole_untrailed(&rx, CURLE_OK, 200)); /* the server's own status stands */
	dl_grpc_rx_fini(&rx);
}

TEST(resource_names)
{
	char out[256];
	const char *h = "ec0ebf98b6f2954bf0f7b839402b1ba245996c39d18e155414e91a2b4353c157";

	CHECK(dl_grpc_resource_name(out, sizeof(out), "", h, 6) == 0);
	CHECK_STR_EQ(out, "blobs/ec0ebf98b6f2954bf0f7b839402b1ba245996c39d18e155414e91a2b4353c157/6");
	CHECK(dl_grpc_resource_name(out, sizeof(out), "main/ci", h, 1234567890123LL) == 0);
	CHECK_STR_EQ(out, "main/ci/blobs/ec0ebf98b6f2954bf0f7b839402b1ba245996c39d18e155414e91a2b4353c157/1234567890123");
	CHECK(dl_grpc_resource_name(out, 20, "", h, 6) == -ENAMETOOLONG);
}

TEST(backend_refuses_bad_grpc_urls_and_instances)
{
	tf_remote_options o;
	tf_error err = { 0 };
	dl_backend *b;

	tf_remote_options_init(&o);
	o.remote_cache = "grpc://user:secret@127.0.0.1:1";
	CHECK(!dl_backend_new(&o, &err));
	CHECK(strstr(err.message, "grpc://HOST:PORT"));
	CHECK(!strstr(err.message, "secret"));
	o.remote_cache = "grpc://127.0.0.1:1/prefix";
	CHECK(!dl_backend_new(&o, &err));
	o.remote_cache = "grpc://127.0.0.1:1";
	o.remote_instance_name = "main/blobs";
	CHECK(!dl_backend_new(&o, &err));
	CHECK(strstr(err.message, "'blobs'"));
	o.remote_instance_name = "main/ci";
	b = dl_backend_new(&o, &err);
	CHECK(b);
	CHECK_STR_EQ(dl_backend_kind(b), "grpc");
	CHECK_STR_EQ(dl_backend_display(b), "grpc://127.0.0.1:1/main/ci");
	dl_backend_free(b);
}
