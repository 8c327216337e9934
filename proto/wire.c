/* The one reader of the protobuf wire format (see wire.h).
 *
 * Why a check before unpacking: protobuf_c_message_unpack says only "failed"
 * and recurses without a depth limit. Walking the wire format against the
 * descriptors first lets us say which field, which wire type and which byte
 * offset is wrong, and refuse nesting past a cap before anything recurses. */
#include "proto/wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pw_varint(const uint8_t *p, size_t avail, uint64_t *out)
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

size_t pw_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

int pw_next(const uint8_t *buf, size_t len, size_t *pos, pw_field *f, const char **why)
{
	size_t i = *pos;
	uint64_t tag, v;
	int n;
	const char *dummy;

	if (!why)
		why = &dummy;
	if (i >= len)
		return 0;
	memset(f, 0, sizeof(*f));
	f->offset = i;
	n = pw_varint(buf + i, len - i, &tag);
	if (n <= 0) {
		*why = n == 0 ? "a truncated field tag" : "a malformed field tag";
		return -EBADMSG;
	}
	i += (size_t)n;
	f->tag_bytes = (uint8_t)n;
	if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) {
		*why = "an invalid field number";
		return -EBADMSG;
	}
	f->number = (uint32_t)(tag >> 3);
	f->wire_type = (unsigned)(tag & 7);
	switch (f->wire_type) {
	case PW_VARINT:
		n = pw_varint(buf + i, len - i, &v);
		if (n <= 0) {
			*why = n == 0 ? "a truncated varint" : "a malformed varint";
			return -EBADMSG;
		}
		f->value = v;
		i += (size_t)n;
		break;
	case PW_I64:
	case PW_I32:
		v = f->wire_type == PW_I64 ? 8 : 4;
		if (len - i < v) {
			*why = "a truncated fixed-width value";
			return -EBADMSG;
		}
		f->value = v;
		f->data = buf + i;
		i += (size_t)v;
		break;
	case PW_LEN:
		n = pw_varint(buf + i, len - i, &v);
		if (n <= 0) {
			*why = n == 0 ? "a truncated length" : "a malformed length";
			return -EBADMSG;
		}
		i += (size_t)n;
		f->len_bytes = (uint8_t)n;
		if (v > len - i) {
			*why = "a length that runs past the end";
			return -EBADMSG;
		}
		f->value = v;
		f->data = buf + i;
		i += (size_t)v;
		break;
	default:
		*why = f->wire_type == PW_SGROUP || f->wire_type == PW_EGROUP ? "a group (not supported)"
									     : "an invalid wire type";
		return -EBADMSG;
	}
	*pos = i;
	return 1;
}

static const char *const wire_names[8] = {
	"varint", "64-bit", "length-delimited", "start-group", "end-group", "32-bit", "6", "7",
};

struct wctx {
	const uint8_t *start; /* data[0] */
	uint64_t base;        /* its offset in the input */
	unsigned max_depth;
	const char *input;    /* NULL: messages name no input or record */
	uint64_t record;
	bool strict_strings;  /* strings must be UTF-8 without NUL bytes */
	bool short_prefixes;  /* tags and lengths in at most PW_PROTOBUF_C_PREFIX_MAX bytes */
	tf_error *err;
	const ProtobufCMessageDescriptor *root;
	/* The field being read at each nesting level, for the message. */
	const ProtobufCFieldDescriptor *field[PW_MAX_DEPTH_LIMIT + 1];
	uint32_t number[PW_MAX_DEPTH_LIMIT + 1];
};

static int wire_fail(struct wctx *c, unsigned depth, const uint8_t *at, int code, const char *fmt,
		     ...) TF__PRINTF(5, 6);

static int wire_fail(struct wctx *c, unsigned depth, const uint8_t *at, int code, const char *fmt,
		     ...)
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
	if (!c->input)
		return tf__errf(c->err, code, "%s %s at byte offset %llu", path, what,
				(unsigned long long)(c->base + (uint64_t)(at - c->start)));
	return tf__errf(c->err, code, "%s: record %llu does not decode: %s %s at byte offset %llu",
			c->input, (unsigned long long)c->record, path, what,
			(unsigned long long)(c->base + (uint64_t)(at - c->start)));
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

bool pw_string_ok(const uint8_t *p, size_t n)
{
	/* Paths and digests are ASCII without NUL: eight bytes at a time (a
	 * byte with its top bit set, or a zero byte), and only a string that
	 * has either is looked at closely. */
	const uint64_t ones = 0x0101010101010101u, tops = 0x8080808080808080u;
	size_t i = 0;

	for (; n - i >= 8; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if ((w | ((w - ones) & ~w)) & tops)
			goto closely;
	}
	for (; i < n; i++)
		if (p[i] == 0 || p[i] >= 0x80)
			goto closely;
	return true;
closely:
	return !memchr(p, '\0', n) && utf8_bad(p, n) == n;
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

static int check_message(struct wctx *c, const ProtobufCMessageDescriptor *d, const uint8_t *p,
			 size_t len, unsigned depth)
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
		n = pw_varint(p + i, len - i, &tag);
		if (n <= 0)
			return wire_fail(c, depth, tag_at, -EBADMSG, "has a %s field tag",
					 n == 0 ? "truncated" : "malformed (over 10 bytes)");
		i += (size_t)n;
		if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
			return wire_fail(c, depth, tag_at, -EBADMSG, "has the invalid field number %llu",
					 (unsigned long long)(tag >> 3));
		if (c->short_prefixes && (unsigned)n > PW_PROTOBUF_C_PREFIX_MAX)
			return wire_fail(c, depth, tag_at, -EBADMSG,
					 "has a field tag of %d bytes (protobuf-c reads at most %u)", n,
					 PW_PROTOBUF_C_PREFIX_MAX);
		c->number[depth] = (uint32_t)(tag >> 3);
		wt = (unsigned)(tag & 7);
		f = protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
		c->field[depth] = f;
		if (f) {
			want = expected_wire(f);
			if (wt != want && !(wt == 2 && f->label == PROTOBUF_C_LABEL_REPEATED && want != 2))
				return wire_fail(c, depth, tag_at, -EBADMSG,
						 "(field %u) has wire type %u (%s), but the schema says %s",
						 f->id, wt, wire_names[wt], wire_names[want]);
		}
		switch (wt) {
		case 0:
			n = pw_varint(p + i, len - i, &v);
			if (n <= 0)
				return wire_fail(c, depth, p + i, -EBADMSG, "has a %s varint",
						 n == 0 ? "truncated" : "malformed (over 10 bytes)");
			i += (size_t)n;
			break;
		case 1:
		case 5: {
			size_t w = wt == 1 ? 8 : 4;
			if (len - i < w)
				return wire_fail(c, depth, p + i, -EBADMSG,
						 "has a truncated %s value (%zu of %zu bytes)", wire_names[wt],
						 len - i, w);
			i += w;
			break;
		}
		case 2: {
			const uint8_t *len_at = p + i;
			n = pw_varint(p + i, len - i, &v);
			if (n <= 0)
				return wire_fail(c, depth, len_at, -EBADMSG, "has a %s length",
						 n == 0 ? "truncated" : "malformed (over 10 bytes)");
			if (c->short_prefixes && (unsigned)n > PW_PROTOBUF_C_PREFIX_MAX)
				return wire_fail(c, depth, len_at, -EBADMSG,
						 "has a length prefix of %d bytes (protobuf-c reads at most %u)", n,
						 PW_PROTOBUF_C_PREFIX_MAX);
			i += (size_t)n;
			if (v > len - i)
				return wire_fail(c, depth, len_at, -EBADMSG,
						 "has length %llu, which runs past the end of its enclosing message (%zu bytes left)",
						 (unsigned long long)v, len - i);
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
				int r;
				if (depth + 1 >= c->max_depth)
					return wire_fail(c, depth, len_at, -EBADMSG,
							 "nests messages deeper than the cap of %u", c->max_depth);
				r = check_message(c, f->descriptor, p + i, (size_t)v, depth + 1);
				if (r < 0)
					return r;
			} else if (f && f->type == PROTOBUF_C_TYPE_STRING && c->strict_strings) {
				size_t bad = utf8_bad(p + i, (size_t)v);
				if (bad < v)
					return wire_fail(c, depth, p + i + bad, -EBADMSG,
							 "(field %u) is a string that is not UTF-8", f->id);
				if (memchr(p + i, '\0', (size_t)v))
					return wire_fail(c, depth, len_at, -EBADMSG,
							 "(field %u) is a string with a NUL byte in it", f->id);
			} else if (f && expected_wire(f) != 2) {
				/* A packed repeated scalar: whole elements only. */
				unsigned ew = expected_wire(f);
				size_t j = 0;
				if (ew == 0) {
					while (j < v) {
						n = pw_varint(p + i + j, (size_t)v - j, &tag);
						if (n <= 0)
							return wire_fail(c, depth, p + i + j, -EBADMSG,
									 "has a %s varint in a packed array",
									 n == 0 ? "truncated" : "malformed");
						j += (size_t)n;
					}
				} else if (v % (ew == 1 ? 8 : 4) != 0) {
					return wire_fail(c, depth, len_at, -EBADMSG,
							 "is a packed array of %llu bytes, not a multiple of %u",
							 (unsigned long long)v, ew == 1 ? 8 : 4);
				}
			}
			i += (size_t)v;
			break;
		}
		case 3:
		case 4:
			return wire_fail(c, depth, tag_at, -EBADMSG,
					 "uses wire type %u (%s): protobuf groups are not supported", wt,
					 wire_names[wt]);
		default:
			return wire_fail(c, depth, tag_at, -EBADMSG, "has the invalid wire type %u", wt);
		}
	}
	return 0;
}

int pw_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len, const pw_check_opts *opts,
	     tf_error *err)
{
	static const pw_check_opts none;
	struct wctx *c;
	int r;

	if (!opts)
		opts = &none;
	c = malloc(sizeof(*c));
	if (!c) {
		if (opts->input)
			return tf__errf(err, -ENOMEM, "%s: out of memory decoding record %llu", opts->input,
					(unsigned long long)opts->record);
		return tf__errf(err, -ENOMEM, "out of memory checking a message");
	}
	c->start = data;
	c->base = opts->base;
	c->max_depth = opts->max_depth == 0 ? PW_DEFAULT_MAX_DEPTH : opts->max_depth;
	if (c->max_depth > PW_MAX_DEPTH_LIMIT)
		c->max_depth = PW_MAX_DEPTH_LIMIT;
	c->input = opts->input;
	c->record = opts->record;
	c->strict_strings = opts->strict_strings;
	c->short_prefixes = opts->short_prefixes;
	c->err = err;
	c->root = d;
	r = check_message(c, d, data, len, 0);
	free(c);
	return r;
}
