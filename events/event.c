/* One decoded BuildEvent: its arena, its reference count, and the schema
 * check that runs before protobuf-c sees the bytes.
 *
 * Why an arena: protobuf-c allocates every string and sub-message
 * separately; a NamedSetOfFiles of 50 files is ~300 allocations. Handing
 * protobuf-c an allocator that carves them out of a few chunks owned by the
 * event makes decoding several times faster and freeing one loop.
 *
 * Why a check before unpacking: protobuf_c_message_unpack says only "failed"
 * (and recurses without a depth limit). Walking the wire format against the
 * descriptors first lets us say which field, which wire type and which byte
 * offset is wrong, and refuse nesting past a cap before anything recurses. */
#include "events/events_int.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ev__chunk {
	struct ev__chunk *next;
	size_t cap, used;
	max_align_t data[];
};

#define CHUNK_MIN 1024u
#define CHUNK_MAX ((size_t)1 << 20)

static void *arena_alloc(ev_event *ev, size_t n, size_t align)
{
	struct ev__chunk *c = ev->chunks;
	size_t at;

	if (n == 0)
		n = 1;
	if (c) {
		at = (c->used + align - 1) & ~(align - 1);
		if (at <= c->cap && n <= c->cap - at) {
			c->used = at + n;
			return (unsigned char *)c->data + at;
		}
	}
	{
		size_t cap = c ? c->cap * 2 : CHUNK_MIN;
		struct ev__chunk *nc;

		if (cap > CHUNK_MAX)
			cap = CHUNK_MAX;
		if (cap < n)
			cap = n;
		if (cap > SIZE_MAX - sizeof(*nc))
			return NULL;
		nc = malloc(sizeof(*nc) + cap);
		if (!nc)
			return NULL;
		nc->cap = cap;
		nc->used = n;
		if (c && c->cap - c->used > cap - n) {
			/* An oversized request: keep the current chunk in front, it
			 * has more room left for what follows. */
			nc->next = c->next;
			c->next = nc;
		} else {
			nc->next = c;
			ev->chunks = nc;
		}
		return nc->data;
	}
}

static void *pbc_alloc(void *data, size_t n)
{
	return arena_alloc(data, n, alignof(void *) > 8 ? alignof(void *) : 8);
}

static void pbc_free(void *data, void *p)
{
	(void)data;
	(void)p; /* the arena goes away with the event */
}

static ev_event *event_new_sized(size_t first_chunk)
{
	ev_event *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return NULL;
	ev->refs = 1;
	if (first_chunk > CHUNK_MIN) {
		/* Size the first chunk from the message so that most events
		 * need one or two chunks. */
		struct ev__chunk *c;
		if (first_chunk > CHUNK_MAX)
			first_chunk = CHUNK_MAX;
		c = malloc(sizeof(*c) + first_chunk);
		if (!c) {
			free(ev);
			return NULL;
		}
		c->next = NULL;
		c->cap = first_chunk;
		c->used = 0;
		ev->chunks = c;
	}
	return ev;
}

ev_event *ev_event_new(void)
{
	ev_event *ev = event_new_sized(0);

	if (!ev)
		return NULL;
	ev->msg = ev_event_alloc(ev, sizeof(*ev->msg));
	if (!ev->msg) {
		ev_event_unref(ev);
		return NULL;
	}
	build_event_stream__build_event__init(ev->msg);
	return ev;
}

void *ev_event_alloc(ev_event *ev, size_t n)
{
	void *p = arena_alloc(ev, n, alignof(max_align_t));

	if (p)
		memset(p, 0, n);
	return p;
}

char *ev_event_strdup(ev_event *ev, const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = arena_alloc(ev, n, 1);

	if (p)
		memcpy(p, s, n);
	return p;
}

ev_event *ev_event_ref(ev_event *ev)
{
	ev->refs++;
	return ev;
}

void ev_event_unref(ev_event *ev)
{
	struct ev__chunk *c;

	if (!ev || --ev->refs > 0)
		return;
	c = ev->chunks;
	while (c) {
		struct ev__chunk *next = c->next;
		free(c);
		c = next;
	}
	free(ev);
}

const char *ev_payload_name(const BuildEventStream__BuildEvent *m)
{
	const ProtobufCFieldDescriptor *f;

	if (!m || m->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD__NOT_SET)
		return "none";
	f = protobuf_c_message_descriptor_get_field(&build_event_stream__build_event__descriptor,
						    (unsigned)m->payload_case);
	return f ? f->name : "unknown";
}

/* ---- the schema check ------------------------------------------------------ */

/* Returns the number of bytes of the varint at p, 0 if it runs past end,
 * -1 if it is longer than 10 bytes or overflows 64 bits. */
int ev__varint(const uint8_t *p, size_t avail, uint64_t *out)
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
	tf_error *err;
	const ProtobufCMessageDescriptor *root;
	/* The field being read at each nesting level, for the message. */
	const ProtobufCFieldDescriptor *field[EV__MAX_DEPTH_LIMIT + 1];
	uint32_t number[EV__MAX_DEPTH_LIMIT + 1];
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
		n = ev__varint(p + i, len - i, &tag);
		if (n <= 0)
			return wire_fail(c, depth, tag_at, -EBADMSG, "has a %s field tag",
					 n == 0 ? "truncated" : "malformed (over 10 bytes)");
		i += (size_t)n;
		if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
			return wire_fail(c, depth, tag_at, -EBADMSG, "has the invalid field number %llu",
					 (unsigned long long)(tag >> 3));
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
			n = ev__varint(p + i, len - i, &v);
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
			n = ev__varint(p + i, len - i, &v);
			if (n <= 0)
				return wire_fail(c, depth, len_at, -EBADMSG, "has a %s length",
						 n == 0 ? "truncated" : "malformed (over 10 bytes)");
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
						n = ev__varint(p + i + j, (size_t)v - j, &tag);
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

int ev__wire_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len,
		   unsigned max_depth, const char *input, uint64_t record, uint64_t base, tf_error *err)
{
	struct wctx *c = malloc(sizeof(*c));
	int r;

	if (!c)
		return tf__errf(err, -ENOMEM, "%s: out of memory decoding record %llu", input,
				(unsigned long long)record);
	c->start = data;
	c->base = base;
	c->max_depth = max_depth == 0 ? EV_DEFAULT_MAX_DEPTH : max_depth;
	if (c->max_depth > EV__MAX_DEPTH_LIMIT)
		c->max_depth = EV__MAX_DEPTH_LIMIT;
	c->input = input;
	c->record = record;
	c->strict_strings = false;
	c->err = err;
	c->root = d;
	r = check_message(c, d, data, len, 0);
	free(c);
	return r;
}

int ev_wire_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len, unsigned max_depth,
		  bool strict_strings, tf_error *err)
{
	struct wctx *c = malloc(sizeof(*c));
	int r;

	if (!c)
		return tf__errf(err, -ENOMEM, "out of memory checking a message");
	c->start = data;
	c->base = 0;
	c->max_depth = max_depth == 0 ? EV_DEFAULT_MAX_DEPTH : max_depth;
	if (c->max_depth > EV__MAX_DEPTH_LIMIT)
		c->max_depth = EV__MAX_DEPTH_LIMIT;
	c->input = NULL;
	c->record = 0;
	c->strict_strings = strict_strings;
	c->err = err;
	c->root = d;
	r = check_message(c, d, data, len, 0);
	free(c);
	return r;
}

int ev_event_decode(const void *data, size_t len, unsigned max_depth, const char *input,
		    uint64_t record, uint64_t base, ev_event **out, tf_error *err)
{
	ProtobufCAllocator alloc;
	ProtobufCMessage *m;
	ev_event *ev;
	int r;

	*out = NULL;
	if (!input)
		input = "BuildEvent";
	r = ev__wire_check(&build_event_stream__build_event__descriptor, data, len, max_depth, input,
			   record, base, err);
	if (r < 0)
		return r;
	/* Decoded events take about twice their wire size (struct headers,
	 * pointer arrays, NUL-terminated and aligned strings). */
	ev = event_new_sized(len < CHUNK_MAX / 2 ? 2 * len + 1024 : CHUNK_MAX);
	if (!ev)
		goto nomem;
	alloc.alloc = pbc_alloc;
	alloc.free = pbc_free;
	alloc.allocator_data = ev;
	m = protobuf_c_message_unpack(&build_event_stream__build_event__descriptor, &alloc, len, data);
	if (!m) {
		ev_event_unref(ev);
		/* The wire check passed, so this is protobuf-c's own refusal
		 * (or its allocator failing). */
		return tf__errf(err, -EBADMSG,
				"%s: record %llu (%zu bytes at byte offset %llu) does not decode as a BuildEvent",
				input, (unsigned long long)record, len, (unsigned long long)base);
	}
	ev->msg = (BuildEventStream__BuildEvent *)m;
	ev->record = record;
	ev->offset = base;
	ev->size = len;
	*out = ev;
	return 0;
nomem:
	return tf__errf(err, -ENOMEM, "%s: out of memory decoding record %llu", input,
			(unsigned long long)record);
}
