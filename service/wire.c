/* A schema walk over a request before protobuf-c unpacks it.
 *
 * Why: protobuf_c_message_unpack says only "failed". A client author needs
 * to hear which field is wrong and where ("Request.target_completed
 * .output_groups.files.size (field 3) has wire type 2 (length-delimited), but
 * the schema says varint at byte offset 57"). The walk also refuses strings
 * that are not UTF-8 (proto3 requires it, and they end up in the BEP, where
 * Bazel's own parsers would refuse them) or that hold a NUL byte (protobuf-c
 * would silently cut a path there), and nesting past a cap. (events/ has
 * the same idea for BuildEvents.) */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "service/service.h"

#define WIRE_MAX_DEPTH 32

typedef struct wctx {
	const uint8_t *start;
	unsigned max_depth;
	tf_error *err;
	const ProtobufCMessageDescriptor *root;
	const ProtobufCFieldDescriptor *field[WIRE_MAX_DEPTH + 1];
	uint32_t number[WIRE_MAX_DEPTH + 1];
} wctx;

static const char *const wire_names[8] = {
	"varint", "64-bit", "length-delimited", "start-group", "end-group", "32-bit", "6", "7",
};

static int varint(const uint8_t *p, size_t avail, uint64_t *out)
{
	uint64_t v = 0;

	for (size_t i = 0; i < 10; i++) {
		if (i >= avail)
			return 0;
		if (i == 9 && p[i] > 1)
			return -1;
		v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			*out = v;
			return (int)i + 1;
		}
	}
	return -1;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
 * Returns the offset of the first bad byte, or n. */
static size_t utf8_bad(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		size_t len;
		uint32_t cp, min;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			len = 2;
			cp = c & 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3;
			cp = c & 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return i;
		}
		if (n - i < len)
			return i;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return i;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += len;
	}
	return n;
}

static int fail(wctx *c, unsigned depth, const uint8_t *at, const char *fmt, ...) TF__PRINTF(4, 5);

static int fail(wctx *c, unsigned depth, const uint8_t *at, const char *fmt, ...)
{
	char path[512], what[256];
	size_t n;
	va_list ap;

	n = (size_t)snprintf(path, sizeof(path), "%s", c->root->short_name);
	for (unsigned i = 0; i <= depth && n < sizeof(path); i++) {
		if (c->field[i])
			n += (size_t)snprintf(path + n, sizeof(path) - n, ".%s", c->field[i]->name);
		else if (c->number[i])
			n += (size_t)snprintf(path + n, sizeof(path) - n, ".<field %u>", c->number[i]);
	}
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return tf__errf(c->err, -EBADMSG, "%s %s at byte offset %zu", path, what, (size_t)(at - c->start));
}

static unsigned expected_wire(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 1;
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return 5;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return 2;
	default:
		return 0;
	}
}

static int walk(wctx *c, const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, unsigned depth)
{
	size_t i = 0;

	while (i < len) {
		const uint8_t *tag_at = p + i;
		const ProtobufCFieldDescriptor *f;
		uint64_t tag, v;
		unsigned wt, want;
		int n;

		c->field[depth] = NULL;
		c->number[depth] = 0;
		n = varint(p + i, len - i, &tag);
		if (n <= 0)
			return fail(c, depth, tag_at, "has a %s field tag", n == 0 ? "truncated" : "malformed");
		i += (size_t)n;
		if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
			return fail(c, depth, tag_at, "has the invalid field number %llu", (unsigned long long)(tag >> 3));
		c->number[depth] = (uint32_t)(tag >> 3);
		wt = (unsigned)(tag & 7);
		f = protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
		c->field[depth] = f;
		if (f) {
			want = expected_wire(f);
			if (wt != want && !(wt == 2 && f->label == PROTOBUF_C_LABEL_REPEATED && want != 2))
				return fail(c, depth, tag_at, "(field %u) has wire type %u (%s), but the schema says %s",
					    f->id, wt, wire_names[wt], wire_names[want]);
		}
		switch (wt) {
		case 0:
			n = varint(p + i, len - i, &v);
			if (n <= 0)
				return fail(c, depth, p + i, "has a %s varint", n == 0 ? "truncated" : "malformed");
			i += (size_t)n;
			break;
		case 1:
		case 5:
			if (len - i < (wt == 1 ? 8u : 4u))
				return fail(c, depth, p + i, "has a truncated %s value", wire_names[wt]);
			i += wt == 1 ? 8 : 4;
			break;
		case 2: {
			const uint8_t *len_at = p + i;
			n = varint(p + i, len - i, &v);
			if (n <= 0)
				return fail(c, depth, len_at, "has a %s length", n == 0 ? "truncated" : "malformed");
			i += (size_t)n;
			if (v > len - i)
				return fail(c, depth, len_at,
					    "has length %llu, which runs past the end of its message (%zu bytes left)",
					    (unsigned long long)v, len - i);
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
				int r;
				if (depth + 1 >= c->max_depth)
					return fail(c, depth, len_at, "nests messages deeper than %u", c->max_depth);
				r = walk(c, f->descriptor, p + i, (size_t)v, depth + 1);
				if (r < 0)
					return r;
			} else if (f && f->type == PROTOBUF_C_TYPE_STRING) {
				size_t bad = utf8_bad(p + i, (size_t)v);
				if (bad < v)
					return fail(c, depth, p + i + bad, "(field %u) is a string that is not UTF-8",
						    f->id);
				if (memchr(p + i, '\0', (size_t)v))
					return fail(c, depth, len_at, "(field %u) is a string with a NUL byte in it",
						    f->id);
			} else if (f && expected_wire(f) != 2) {
				/* A packed repeated scalar: whole elements only. */
				unsigned ew = expected_wire(f);
				size_t j = 0;
				if (ew == 0) {
					while (j < v) {
						n = varint(p + i + j, (size_t)v - j, &tag);
						if (n <= 0)
							return fail(c, depth, p + i + j, "has a bad varint in a packed array");
						j += (size_t)n;
					}
				} else if (v % (ew == 1 ? 8 : 4) != 0) {
					return fail(c, depth, len_at, "is a packed array of %llu bytes, not a multiple of %u",
						    (unsigned long long)v, ew == 1 ? 8 : 4);
				}
			}
			i += (size_t)v;
			break;
		}
		default:
			return fail(c, depth, tag_at, "uses wire type %u (%s), which a request never uses", wt,
				    wire_names[wt]);
		}
	}
	return 0;
}

int svc_wire_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len, unsigned max_depth,
		   tf_error *err)
{
	wctx c = {
		.start = data,
		.max_depth = max_depth == 0 || max_depth > WIRE_MAX_DEPTH ? WIRE_MAX_DEPTH : max_depth,
		.err = err,
		.root = d,
	};

	return walk(&c, d, data, len, 0);
}
