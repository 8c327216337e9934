/* proto/wire: the one protobuf wire reader — varints, the field walk and
 * the schema check, on hand-made bytes. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "proto/wire.h"
#include "remote_execution.pb-c.h"
#include "tf_test.h"

TEST(varint_bounds)
{
	uint64_t v = 0;
	const uint8_t one[] = {0x01}, big[] = {0xac, 0x02};
	const uint8_t max[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	const uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
	const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};

	CHECK_INT_EQ(pw_varint(one, 1, &v), 1);
	CHECK_INT_EQ(v, 1);
	CHECK_INT_EQ(pw_varint(big, 2, &v), 2);
	CHECK_INT_EQ(v, 300);
	CHECK_INT_EQ(pw_varint(big, 1, &v), 0); /* runs past the end */
	CHECK_INT_EQ(pw_varint(max, sizeof(max), &v), 10);
	CHECK(v == UINT64_MAX);
	CHECK_INT_EQ(pw_varint(over, sizeof(over), &v), -1);
	CHECK_INT_EQ(pw_varint(eleven, sizeof(eleven), &v), -1);
}

TEST(field_walk)
{
	/* field 1 varint 150; field 2 "hi"; field 3 fixed32; field 4 fixed64 */
	const uint8_t msg[] = {0x08, 0x96, 0x01, 0x12, 0x02, 'h', 'i', 0x1d, 1, 2, 3, 4,
			       0x21, 1, 2, 3, 4, 5, 6, 7, 8};
	size_t pos = 0;
	pw_field f;

	CHECK_INT_EQ(pw_next(msg, sizeof(msg), &pos, &f, NULL), 1);
	CHECK_INT_EQ(f.number, 1);
	CHECK_INT_EQ(f.wire_type, PW_VARINT);
	CHECK_INT_EQ(f.value, 150);
	CHECK_INT_EQ(pw_next(msg, sizeof(msg), &pos, &f, NULL), 1);
	CHECK_INT_EQ(f.number, 2);
	CHECK_INT_EQ(f.wire_type, PW_LEN);
	CHECK_INT_EQ(f.value, 2);
	CHECK(f.data == msg + 5);
	CHECK_INT_EQ(f.offset, 3);
	CHECK_INT_EQ(pw_next(msg, sizeof(msg), &pos, &f, NULL), 1);
	CHECK_INT_EQ(f.wire_type, PW_I32);
	CHECK_INT_EQ(pw_next(msg, sizeof(msg), &pos, &f, NULL), 1);
	CHECK_INT_EQ(f.wire_type, PW_I64);
	CHECK_INT_EQ(pw_next(msg, sizeof(msg), &pos, &f, NULL), 0);
	CHECK_INT_EQ(pos, sizeof(msg));
}

TEST(field_walk_refuses_malformed)
{
	const char *why = NULL;
	size_t pos = 0;
	pw_field f;
	const uint8_t past[] = {0x12, 0x05, 'a'};
	const uint8_t group[] = {0x0b};
	const uint8_t zero[] = {0x00, 0x01};

	CHECK_INT_EQ(pw_next(past, sizeof(past), &pos, &f, &why), -EBADMSG);
	CHECK_CONTAINS(why, "runs past the end");
	CHECK_INT_EQ(pos, 0); /* not moved */
	CHECK_INT_EQ(pw_next(group, sizeof(group), &pos, &f, &why), -EBADMSG);
	CHECK_CONTAINS(why, "group");
	CHECK_INT_EQ(pw_next(zero, sizeof(zero), &pos, &f, &why), -EBADMSG);
	CHECK_CONTAINS(why, "field number");
}

TEST(schema_check_names_field_and_offset)
{
	/* Digest.hash (field 1) sent as a varint. */
	const uint8_t bad[] = {0x08, 0x01};
	/* Digest.size_bytes = 3, hash "abc" */
	const uint8_t good[] = {0x0a, 0x03, 'a', 'b', 'c', 0x10, 0x03};
	const uint8_t nul[] = {0x0a, 0x03, 'a', 0, 'c'};
	tf_error err = {0};

	CHECK_INT_EQ(pw_check(&build__bazel__remote__execution__v2__digest__descriptor, good, sizeof(good), NULL,
			      &err), 0);
	CHECK_INT_EQ(pw_check(&build__bazel__remote__execution__v2__digest__descriptor, bad, sizeof(bad), NULL,
			      &err), -EBADMSG);
	CHECK_CONTAINS(err.message, "Digest.hash (field 1) has wire type 0 (varint), but the schema says "
				    "length-delimited at byte offset 0");
	CHECK_INT_EQ(pw_check(&build__bazel__remote__execution__v2__digest__descriptor, nul, sizeof(nul), NULL,
			      &err), 0);
	CHECK_INT_EQ(pw_check(&build__bazel__remote__execution__v2__digest__descriptor, nul, sizeof(nul),
			      &(pw_check_opts){.strict_strings = true, .input = "blob.bin", .record = 7}, &err),
		     -EBADMSG);
	CHECK_CONTAINS(err.message, "blob.bin: record 7 does not decode: Digest.hash (field 1) is a string with a NUL");
}

TEST(field_walk_says_how_long_tag_and_length_are)
{
	/* field 2, length 1, both written longer than needed (legal protobuf) */
	const uint8_t msg[] = {0x92, 0x80, 0x80, 0x80, 0x80, 0x00, 0x81, 0x80, 0x00, 'x'};
	size_t pos = 0;
	pw_field f;

	CHECK_INT_EQ(pw_next(msg, sizeof(msg), &pos, &f, NULL), 1);
	CHECK_INT_EQ(f.number, 2);
	CHECK_INT_EQ(f.tag_bytes, 6);
	CHECK_INT_EQ(f.len_bytes, 3);
	CHECK_INT_EQ(f.value, 1);
	CHECK(f.data == msg + 9);
}

TEST(schema_check_short_prefixes)
{
	/* Digest.hash with a 6-byte tag; then a 6-byte length. protobuf-c
	 * reads neither: with short_prefixes they are refused, named. */
	const uint8_t tag6[] = {0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 'a'};
	const uint8_t len6[] = {0x0a, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 'a'};
	const uint8_t len5[] = {0x0a, 0x81, 0x80, 0x80, 0x80, 0x00, 'a'};
	const ProtobufCMessageDescriptor *d = &build__bazel__remote__execution__v2__digest__descriptor;
	tf_error err = {0};

	CHECK_INT_EQ(pw_check(d, tag6, sizeof(tag6), NULL, &err), 0);
	CHECK_INT_EQ(pw_check(d, len6, sizeof(len6), NULL, &err), 0);
	CHECK_INT_EQ(pw_check(d, tag6, sizeof(tag6), &(pw_check_opts){.short_prefixes = true}, &err), -EBADMSG);
	CHECK_STR_EQ(err.message, "Digest has a field tag of 6 bytes (protobuf-c reads at most 5) at byte offset 0");
	CHECK_INT_EQ(pw_check(d, len6, sizeof(len6), &(pw_check_opts){.short_prefixes = true}, &err), -EBADMSG);
	CHECK_STR_EQ(err.message, "Digest.hash has a length prefix of 6 bytes (protobuf-c reads at most 5) at byte "
				  "offset 1");
	CHECK_INT_EQ(pw_check(d, len5, sizeof(len5), &(pw_check_opts){.short_prefixes = true}, &err), 0);
}

TEST(string_ok_is_strict_utf8_without_nul)
{
	const char *good[] = { "", "a", "bazel-out/k8-fastbuild/bin/pkg/a.txt", "\xc3\xa9t\xc3\xa9",
			       "0123456789abcdef0123456789abcdef\xf0\x9f\x98\x80", "\xef\xbf\xbf" };
	/* NUL at each place of an 8-byte word and in the tail; overlong,
	 * surrogate, past U+10FFFF, truncated, a lone continuation byte */
	const struct { const char *s; size_t n; } bad[] = {
		{ "\0bcdefgh", 8 }, { "abcdefg\0", 8 }, { "abcdefghij\0", 11 }, { "abc\0", 4 },
		{ "\xc0\xaf", 2 }, { "\xed\xa0\x80", 3 }, { "\xf4\x90\x80\x80", 4 }, { "abcdefgh\xc3", 9 },
		{ "\x80", 1 }, { "\xc3\xa9\0", 3 },
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(pw_string_ok((const uint8_t *)good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!pw_string_ok((const uint8_t *)bad[i].s, bad[i].n));
}
