/* proto/wire: the one protobuf wire reader — varints, the field walk and
 * the schema check, on hand-made bytes. */
#include <errno.h>
#include <stdint.h>

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
