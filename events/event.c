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

/* ---- NamedSetOfFiles without protobuf-c ---------------------------------------
 *
 * A large build's stream is mostly NamedSetOfFiles events, and checking
 * then unpacking each File costs ~7,000 instructions in pw_check and
 * protobuf-c. The usual shape (a BuildEvent of just an id and the set, its
 * Files made of known fields with plain ASCII strings) is decoded here in
 * one pass into the same structs protobuf-c would make, in the event's
 * arena. Anything else — an unknown or repeated singular field, a non-ASCII
 * or NUL byte in a string, a bad tag, varint or length, a depth cap under 3
 * — returns "not this shape" and goes the general way (pw_check names the
 * problem, protobuf-c keeps unknown fields), so this path accepts nothing
 * the general one would refuse and decodes nothing differently. */

/* Field numbers, from build_event_stream.proto. */
enum {
	BE_ID = 1,
	BE_NAMED_SET_OF_FILES = 15,
	ID_NAMED_SET = 13,
	NSID_ID = 1,
	NS_FILES = 1,
	NS_FILE_SETS = 2,
	FILE_NAME = 1,
	FILE_URI = 2,
	FILE_CONTENTS = 3,
	FILE_PATH_PREFIX = 4,
	FILE_DIGEST = 5,
	FILE_LENGTH = 6,
	FILE_SYMLINK_TARGET = 7,
};
/* path_prefix parts a File may have on this path (Bazel's have 1 to 3). */
#define FAST_MAX_PARTS 16u

struct fast {
	ev_event *ev;
	char *str; /* the next string's place: one block holds them all */
	/* The previous File's path_prefix: the next one mostly has the same
	 * parts, and then shares them (and their array) instead of copying. */
	char **prefix;
	size_t n_prefix;
	size_t prefix_len[FAST_MAX_PARTS];
};

struct fast_field {
	uint64_t number;
	unsigned wire_type;
	uint64_t value;      /* a varint's value; a length */
	const uint8_t *data; /* PW_LEN: the bytes */
};

static inline int fast_varint(const uint8_t *p, size_t avail, uint64_t *out)
{
	if (avail && p[0] < 0x80) {
		*out = p[0];
		return 1;
	}
	return pw_varint(p, avail, out);
}

/* The field at p[*pos]: false unless it is a well-formed varint or
 * length-delimited field that fits. Inlined: it runs ~8 times per File. */
static inline __attribute__((always_inline)) bool fast_next(const uint8_t *p, size_t len, size_t *pos, struct fast_field *f)
{
	uint64_t tag;
	int n = fast_varint(p + *pos, len - *pos, &tag);

	if (n <= 0)
		return false;
	*pos += (size_t)n;
	f->number = tag >> 3;
	f->wire_type = (unsigned)(tag & 7);
	if (f->wire_type != PW_VARINT && f->wire_type != PW_LEN)
		return false;
	n = fast_varint(p + *pos, len - *pos, &f->value);
	if (n <= 0)
		return false;
	*pos += (size_t)n;
	if (f->wire_type == PW_LEN) {
		if (f->value > len - *pos)
			return false;
		f->data = p + *pos;
		*pos += (size_t)f->value;
	}
	return true;
}

/* A string field's value copied into the string block with its NUL; NULL
 * unless it is a length-delimited plain ASCII string: none of its bytes is
 * NUL or above 0x7f (checked 8 at a time while copying: a byte b < 0x80 has
 * its top bit set in b + 0x7f exactly when b is not 0). */
static char *fast_str(struct fast *c, const struct fast_field *f)
{
	const uint64_t top = 0x8080808080808080ull, low = 0x7f7f7f7f7f7f7f7full;
	const uint8_t *p = f->data;
	size_t n = (size_t)f->value, i = 0;
	uint64_t any = 0, nonzero = top;
	char *s = c->str;

	if (f->wire_type != PW_LEN)
		return NULL;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		memcpy(s + i, &w, 8);
		any |= w;
		nonzero &= w + low;
	}
	if ((any & top) || (nonzero & top) != top)
		return NULL;
	for (; i < n; i++) {
		if (p[i] == 0 || p[i] > 0x7f)
			return NULL;
		s[i] = (char)p[i];
	}
	s[n] = '\0';
	c->str += n + 1;
	return s;
}

static bool fast_file(struct fast *c, const uint8_t *p, size_t len, BuildEventStream__File *out)
{
	static const BuildEventStream__File init = BUILD_EVENT_STREAM__FILE__INIT;
	char *parts[FAST_MAX_PARTS];
	size_t pos = 0, np = 0, same_parts = 0;
	unsigned seen = 0; /* bit n: field n was there */
	struct fast_field f;

	*out = init;
	while (pos < len) {
		if (!fast_next(p, len, &pos, &f) || f.number > FILE_SYMLINK_TARGET || f.number == 0)
			return false;
		if (f.number != FILE_PATH_PREFIX) {
			/* A second value would replace or merge: the general way. */
			unsigned bit = 1u << f.number, oneof = 1u << FILE_URI | 1u << FILE_CONTENTS |
								     1u << FILE_SYMLINK_TARGET;
			if (seen & ((bit & oneof) ? oneof : bit))
				return false;
			seen |= bit;
		}
		switch (f.number) {
		case FILE_NAME:
			if (!(out->name = fast_str(c, &f)))
				return false;
			break;
		case FILE_URI:
			if (!(out->uri = fast_str(c, &f)))
				return false;
			out->file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
			break;
		case FILE_CONTENTS:
			if (f.wire_type != PW_LEN)
				return false;
			out->file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
			out->contents.len = (size_t)f.value;
			/* As protobuf-c: no data for an empty value. */
			out->contents.data = NULL;
			if (f.value) {
				out->contents.data = (uint8_t *)c->str;
				memcpy(c->str, f.data, (size_t)f.value);
				c->str += f.value;
			}
			break;
		case FILE_PATH_PREFIX:
			if (np == FAST_MAX_PARTS || f.wire_type != PW_LEN)
				return false;
			if (np < c->n_prefix && c->prefix_len[np] == f.value &&
			    memcmp(c->prefix[np], f.data, (size_t)f.value) == 0) {
				parts[np] = c->prefix[np]; /* checked when it was copied */
				same_parts++;
			} else if (!(parts[np] = fast_str(c, &f))) {
				return false;
			}
			np++;
			break;
		case FILE_DIGEST:
			if (!(out->digest = fast_str(c, &f)))
				return false;
			break;
		case FILE_LENGTH:
			if (f.wire_type != PW_VARINT)
				return false;
			out->length = (int64_t)f.value;
			break;
		default: /* FILE_SYMLINK_TARGET */
			if (!(out->symlink_target_path = fast_str(c, &f)))
				return false;
			out->file_case = BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH;
			break;
		}
	}
	if (np && same_parts == np && np == c->n_prefix) {
		out->path_prefix = c->prefix;
		out->n_path_prefix = np;
	} else if (np) {
		if (!(out->path_prefix = arena_alloc(c->ev, np * sizeof(char *), alignof(char *))))
			return false;
		memcpy(out->path_prefix, parts, np * sizeof(char *));
		out->n_path_prefix = np;
		c->prefix = out->path_prefix;
		c->n_prefix = np;
		for (size_t i = 0; i < np; i++)
			c->prefix_len[i] = strlen(parts[i]);
	}
	return true;
}

/* A NamedSetOfFilesId message (the event's own id or a reference). */
static bool fast_set_id(struct fast *c, const uint8_t *p, size_t len,
			BuildEventStream__BuildEventId__NamedSetOfFilesId *out)
{
	size_t pos = 0;
	struct fast_field f;

	build_event_stream__build_event_id__named_set_of_files_id__init(out);
	if (len == 0)
		return true;
	return fast_next(p, len, &pos, &f) && f.number == NSID_ID && pos == len &&
	       (out->id = fast_str(c, &f)) != NULL;
}

static bool fast_set(struct fast *c, const uint8_t *p, size_t len, BuildEventStream__NamedSetOfFiles *out)
{
	size_t pos = 0, nf = 0, nk = 0;
	struct fast_field f;

	build_event_stream__named_set_of_files__init(out);
	while (pos < len) {
		if (!fast_next(p, len, &pos, &f) || f.wire_type != PW_LEN)
			return false;
		if (f.number == NS_FILES)
			nf++;
		else if (f.number == NS_FILE_SETS)
			nk++;
		else
			return false;
	}
	if (nf) {
		BuildEventStream__File *files;
		if (!(out->files = arena_alloc(c->ev, nf * sizeof(*out->files), alignof(void *))) ||
		    !(files = arena_alloc(c->ev, nf * sizeof(*files), alignof(BuildEventStream__File))))
			return false;
		for (size_t i = 0; i < nf; i++)
			out->files[i] = &files[i];
	}
	if (nk) {
		BuildEventStream__BuildEventId__NamedSetOfFilesId *ids;
		if (!(out->file_sets = arena_alloc(c->ev, nk * sizeof(*out->file_sets), alignof(void *))) ||
		    !(ids = arena_alloc(c->ev, nk * sizeof(*ids), alignof(BuildEventStream__BuildEventId__NamedSetOfFilesId))))
			return false;
		for (size_t i = 0; i < nk; i++)
			out->file_sets[i] = &ids[i];
	}
	for (pos = 0; pos < len;) {
		fast_next(p, len, &pos, &f); /* checked above */
		if (f.number == NS_FILES) {
			if (!fast_file(c, f.data, (size_t)f.value, out->files[out->n_files++]))
				return false;
		} else if (!fast_set_id(c, f.data, (size_t)f.value, out->file_sets[out->n_file_sets++])) {
			return false;
		}
	}
	return true;
}

/* The id field of a BuildEvent: true when it is a named set's. */
static bool fast_is_set_id(const uint8_t *p, size_t len, const uint8_t **id, size_t *id_len)
{
	size_t pos = 0;
	struct fast_field f;

	if (!fast_next(p, len, &pos, &f) || f.number != ID_NAMED_SET || f.wire_type != PW_LEN || pos != len)
		return false;
	*id = f.data;
	*id_len = (size_t)f.value;
	return true;
}

/* Where the id and the set are when p is a BuildEvent of just a named
 * set's id and a NamedSetOfFiles, each once; false otherwise (other events
 * leave here after a field or two, nothing allocated). */
struct fast_shape {
	const uint8_t *id, *set;
	size_t id_len, set_len;
};

static bool fast_named_set_shape(const uint8_t *p, size_t len, struct fast_shape *sh)
{
	size_t pos = 0;
	struct fast_field f;

	*sh = (struct fast_shape){ 0 };
	while (pos < len) {
		if (!fast_next(p, len, &pos, &f) || f.wire_type != PW_LEN)
			return false;
		if (f.number == BE_ID && !sh->id) {
			if (!fast_is_set_id(f.data, (size_t)f.value, &sh->id, &sh->id_len))
				return false;
		} else if (f.number == BE_NAMED_SET_OF_FILES && !sh->set) {
			sh->set = f.data;
			sh->set_len = (size_t)f.value;
		} else {
			return false;
		}
	}
	return sh->id && sh->set;
}

/* Decodes the event of shape sh (len bytes on the wire) into ev's arena:
 * false when a part is not of the shape above, or out of memory (ev's
 * arena may then hold some of it). */
static bool fast_named_set(ev_event *ev, size_t len, const struct fast_shape *sh)
{
	struct fast c = { .ev = ev };
	BuildEventStream__BuildEvent *m;
	BuildEventStream__BuildEventId *eid;
	BuildEventStream__BuildEventId__NamedSetOfFilesId *nsid;
	BuildEventStream__NamedSetOfFiles *ns;

	/* Every string is shorter than its field on the wire (tag and length
	 * come first), so one block of len bytes holds them with their NULs. */
	if (!(c.str = arena_alloc(ev, len, 1)) || !(m = arena_alloc(ev, sizeof(*m), alignof(max_align_t))) ||
	    !(eid = arena_alloc(ev, sizeof(*eid), alignof(max_align_t))) ||
	    !(nsid = arena_alloc(ev, sizeof(*nsid), alignof(max_align_t))) ||
	    !(ns = arena_alloc(ev, sizeof(*ns), alignof(max_align_t))))
		return false;
	build_event_stream__build_event__init(m);
	build_event_stream__build_event_id__init(eid);
	if (!fast_set_id(&c, sh->id, sh->id_len, nsid) || !fast_set(&c, sh->set, sh->set_len, ns))
		return false;
	eid->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
	eid->named_set = nsid;
	m->id = eid;
	m->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
	m->named_set_of_files = ns;
	ev->msg = m;
	return true;
}

int ev_event_decode(const void *data, size_t len, unsigned max_depth, const char *input,
		    uint64_t record, uint64_t base, ev_event **out, tf_error *err)
{
	ProtobufCAllocator alloc;
	ProtobufCMessage *m;
	struct fast_shape shape = { 0 };
	ev_event *ev;
	size_t first;
	int r;

	*out = NULL;
	if (!input)
		input = "BuildEvent";
	/* Decoded events take about twice their wire size (struct headers,
	 * pointer arrays, NUL-terminated and aligned strings). */
	first = len < CHUNK_MAX / 4 ? 3 * len + EV_DECODE_SLACK : CHUNK_MAX;
	/* Its nesting is 3 deep (BuildEvent, NamedSetOfFiles, File). */
	if ((max_depth == 0 || max_depth >= 3) && fast_named_set_shape(data, len, &shape)) {
		if (!(ev = event_new_sized(first)))
			goto nomem;
		if (fast_named_set(ev, len, &shape))
			goto done;
		/* Not that shape after all (or out of memory): start over. */
		ev_event_unref(ev);
	}
	r = pw_check(&build_event_stream__build_event__descriptor, data, len,
		     &(pw_check_opts){.max_depth = max_depth, .input = input, .record = record, .base = base,
					 .strict_strings = true /* a NUL would cut a File.name short */},
		     err);
	if (r < 0)
		return r;
	ev = event_new_sized(first);
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
done:
	ev->record = record;
	ev->offset = base;
	ev->size = len;
	*out = ev;
	return 0;
nomem:
	return tf__errf(err, -ENOMEM, "%s: out of memory decoding record %llu", input,
			(unsigned long long)record);
}
