/* Small helpers shared by the proto tests: read a file, pack a message,
 * count unknown fields in a whole message tree. Header-only (static inline)
 * so each test stays one translation unit. */
#ifndef TF_TESTS_PROTO_UTIL_H
#define TF_TESTS_PROTO_UTIL_H

#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "tf_test.h"

/* Larger than any fixture file (big.dat, 4.9 MiB, is the largest blob). */
#define PU_MAX_FILE_SIZE (64u << 20)

struct pu_buf {
	uint8_t *data;
	size_t len;
};

/* Reads a whole file into a new buffer; a missing file fails the test. */
static inline struct pu_buf pu_slurp(const char *path)
{
	struct pu_buf b = { NULL, 0 };
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		exit(1);
	}
	b.data = malloc(PU_MAX_FILE_SIZE);
	CHECK(b.data);
	b.len = fread(b.data, 1, PU_MAX_FILE_SIZE, f);
	CHECK(!ferror(f));
	CHECK(b.len < PU_MAX_FILE_SIZE);
	fclose(f);
	return b;
}

/* Serializes a message with our generated code into a new buffer. */
static inline struct pu_buf pu_pack(const ProtobufCMessage *m)
{
	struct pu_buf b;
	b.len = protobuf_c_message_get_packed_size(m);
	b.data = malloc(b.len ? b.len : 1);
	CHECK(b.data);
	CHECK_INT_EQ(protobuf_c_message_pack(m, b.data), b.len);
	return b;
}

/* Unknown fields anywhere in the message tree, i.e. fields our subset does
 * not declare. Walks sub-messages through the generated descriptors. */
static inline size_t pu_unknown_fields(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	size_t n = m->n_unknown_fields;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t count = *(const size_t *)(const void *)(base + f->quantifier_offset);
			ProtobufCMessage *const *items =
				*(ProtobufCMessage *const *const *)(const void *)(base + f->offset);
			for (size_t j = 0; j < count; j++)
				n += pu_unknown_fields(items[j]);
			continue;
		}
		/* A oneof member is valid only while the case field names it. */
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
			continue;
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(const void *)(base + f->offset);
		if (sub)
			n += pu_unknown_fields(sub);
	}
	return n;
}

#endif
