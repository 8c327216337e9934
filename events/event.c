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
/* Bytes the decoded structs of an event take beyond ~3x its wire size. */
#define EV_DECODE_SLACK 256u

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
	if (first_chunk > 0) {
		/* Size the first chunk from the message so that most events
		 * need one chunk (and a small one for a small event: a build
		 * may hold a million tiny named sets). */
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
	r = pw_check(&build_event_stream__build_event__descriptor, data, len,
		     &(pw_check_opts){.max_depth = max_depth, .input = input, .record = record, .base = base,
					 .strict_strings = true /* a NUL would cut a File.name short */},
		     err);
	if (r < 0)
		return r;
	/* Decoded events take about twice their wire size (struct headers,
	 * pointer arrays, NUL-terminated and aligned strings). */
	ev = event_new_sized(len < CHUNK_MAX / 4 ? 3 * len + EV_DECODE_SLACK : CHUNK_MAX);
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
