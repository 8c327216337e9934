/* NamedSetOfFiles events decoded without protobuf-c (events/event.c): the
 * result equals protobuf-c's for every kind of File, and every other shape
 * (unknown or repeated fields, non-ASCII strings, more fields on the event,
 * a low depth cap) goes the general way: decoded as protobuf-c decodes it,
 * or refused with pw_check's message. */
#include "ev_test_util.h"

#define HEX_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char *prefix3[] = { "bazel-out", "k8-fastbuild", "bin" };
static char *prefix3b[] = { "bazel-out", "k8-fastbuild", "binx" };
static char *prefix2[] = { "bazel-out", "k8-fastbuild" };
static char *prefix1[] = { "external" };

/* ---- building wire bytes by hand ----------------------------------------------- */

struct wb {
	uint8_t d[4096];
	size_t n;
};

static void wb_varint(struct wb *w, uint64_t v)
{
	CHECK(w->n + 10 <= sizeof(w->d));
	while (v >= 0x80) {
		w->d[w->n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	w->d[w->n++] = (uint8_t)v;
}

static void wb_bytes(struct wb *w, unsigned field, const void *p, size_t n)
{
	wb_varint(w, (uint64_t)field << 3 | 2);
	wb_varint(w, n);
	CHECK(w->n + n <= sizeof(w->d));
	memcpy(w->d + w->n, p, n);
	w->n += n;
}

static void wb_str(struct wb *w, unsigned field, const char *s)
{
	wb_bytes(w, field, s, strlen(s));
}

static void wb_msg(struct wb *w, unsigned field, const struct wb *m)
{
	wb_bytes(w, field, m->d, m->n);
}

/* A BuildEvent: named set `id` holding the one File `file`, then `extra`
 * (raw top-level fields, may be empty). */
static void named_set_event(struct wb *out, const struct wb *file, const struct wb *extra)
{
	struct wb nsid = { .n = 0 }, eid = { .n = 0 }, set = { .n = 0 };

	out->n = 0;
	wb_str(&nsid, 1, "set-1");
	wb_msg(&eid, 13, &nsid);
	wb_msg(&set, 1, file);
	wb_msg(out, 1, &eid);
	wb_msg(out, 15, &set);
	if (extra) {
		memcpy(out->d + out->n, extra->d, extra->n);
		out->n += extra->n;
	}
}

/* A File with path_prefix bazel-out/bin, the given name, a digest, a
 * length and a URI. */
static void plain_file(struct wb *f, const char *name)
{
	f->n = 0;
	wb_str(f, 4, "bazel-out");
	wb_str(f, 4, "bin");
	wb_str(f, 1, name);
	wb_str(f, 5, HEX_A);
	wb_varint(f, 6 << 3 | 0);
	wb_varint(f, 42);
	wb_str(f, 2, "bytestream://c/blobs/" HEX_A "/42");
}

/* ---- comparing with protobuf-c ------------------------------------------------- */

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static void check_file_equal(const BuildEventStream__File *a, const BuildEventStream__File *b)
{
	CHECK_INT_EQ(a->n_path_prefix, b->n_path_prefix);
	for (size_t i = 0; i < a->n_path_prefix; i++)
		CHECK_STR_EQ(a->path_prefix[i], b->path_prefix[i]);
	CHECK_STR_EQ(or_empty(a->name), or_empty(b->name));
	CHECK_STR_EQ(or_empty(a->digest), or_empty(b->digest));
	CHECK_INT_EQ(a->length, b->length);
	CHECK_INT_EQ(a->file_case, b->file_case);
	CHECK_INT_EQ(a->base.n_unknown_fields, b->base.n_unknown_fields);
	switch (a->file_case) {
	case BUILD_EVENT_STREAM__FILE__FILE_URI:
		CHECK_STR_EQ(a->uri, b->uri);
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH:
		CHECK_STR_EQ(a->symlink_target_path, b->symlink_target_path);
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_CONTENTS:
		CHECK_INT_EQ(a->contents.len, b->contents.len);
		/* protobuf-c leaves no data for an empty value. */
		CHECK((a->contents.data == NULL) == (b->contents.data == NULL));
		CHECK(a->contents.len == 0 || memcmp(a->contents.data, b->contents.data, a->contents.len) == 0);
		break;
	default:
		break;
	}
}

/* Decodes the bytes with ev_event_decode and with protobuf-c alone: the
 * same event, field by field and re-encoded byte for byte. Returns ours. */
static ev_event *decode_both(const void *p, size_t n)
{
	tf_error err = { 0 };
	ev_event *ev = NULL;
	BuildEventStream__BuildEvent *want;
	const BuildEventStream__BuildEvent *got;
	uint8_t *a, *b;
	size_t na, nb;

	CHECK_INT_EQ(ev_event_decode(p, n, 0, "decode", 1, 0, &ev, &err), 0);
	want = build_event_stream__build_event__unpack(NULL, n, p);
	CHECK(want);
	got = ev->msg;
	CHECK_INT_EQ(ev->size, n);
	CHECK_INT_EQ(got->payload_case, want->payload_case);
	CHECK_INT_EQ(got->last_message, want->last_message);
	CHECK_INT_EQ(got->n_children, want->n_children);
	CHECK_INT_EQ(got->base.n_unknown_fields, want->base.n_unknown_fields);
	CHECK(got->id && want->id);
	CHECK_INT_EQ(got->id->id_case, want->id->id_case);
	if (want->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET)
		CHECK_STR_EQ(got->id->named_set->id, want->id->named_set->id);
	if (want->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES) {
		const BuildEventStream__NamedSetOfFiles *gs = got->named_set_of_files, *ws = want->named_set_of_files;
		CHECK_INT_EQ(gs->n_files, ws->n_files);
		CHECK_INT_EQ(gs->n_file_sets, ws->n_file_sets);
		for (size_t i = 0; i < ws->n_files; i++)
			check_file_equal(gs->files[i], ws->files[i]);
		for (size_t i = 0; i < ws->n_file_sets; i++)
			CHECK_STR_EQ(gs->file_sets[i]->id, ws->file_sets[i]->id);
	}
	na = build_event_stream__build_event__get_packed_size(got);
	nb = build_event_stream__build_event__get_packed_size(want);
	CHECK_INT_EQ(na, nb);
	a = malloc(na + 1);
	b = malloc(nb + 1);
	CHECK(a && b);
	build_event_stream__build_event__pack(got, a);
	build_event_stream__build_event__pack(want, b);
	CHECK(memcmp(a, b, na) == 0);
	free(a);
	free(b);
	build_event_stream__build_event__free_unpacked(want, NULL);
	return ev;
}

/* ---- the tests ----------------------------------------------------------------- */

TEST(every_kind_of_file_decodes_as_protobuf_c_does)
{
	enum { N = 12 };
	BuildEventStream__File f[N], *fp[N];
	static uint8_t nul_bytes[] = { 'a', 0, 'b', 0xff };
	const char *refs[] = { "child-1", "", "child-3" };
	tf__buf b;
	ev_event *ev;
	const BuildEventStream__NamedSetOfFiles *set;

	for (size_t i = 0; i < N; i++) {
		build_event_stream__file__init(&f[i]);
		f[i].n_path_prefix = 3;
		f[i].path_prefix = prefix3;
		f[i].file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
		fp[i] = &f[i];
	}
	f[0].name = "pkg/a.o", f[0].digest = HEX_A, f[0].length = 1234;
	f[0].uri = "bytestream://cache.example.com:443/blobs/" HEX_A "/1234";
	f[1].name = "pkg/b.o", f[1].digest = HEX_A, f[1].length = 7; /* shares f[0]'s prefix */
	f[1].uri = "bytestream://cache.example.com:443/blobs/" HEX_A "/7";
	f[2].name = "pkg/c.o", f[2].path_prefix = prefix3b; /* the last part differs */
	f[2].uri = "file:///tmp/c.o";
	f[3].name = "pkg/d.o", f[3].n_path_prefix = 2, f[3].path_prefix = prefix2; /* fewer parts */
	f[4].name = "pkg/e.o", f[4].n_path_prefix = 1, f[4].path_prefix = prefix1;
	f[5].name = "stdout", f[5].n_path_prefix = 0, f[5].path_prefix = NULL;
	f[5].file_case = BUILD_EVENT_STREAM__FILE__FILE__NOT_SET;
	f[6].name = "pkg/inline", f[6].file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
	f[6].contents.len = sizeof(nul_bytes), f[6].contents.data = nul_bytes; /* bytes: anything goes */
	f[7].name = "pkg/empty", f[7].file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
	f[8].name = "pkg/link", f[8].file_case = BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH;
	f[8].symlink_target_path = "../target";
	f[9].name = "", f[9].length = -5, f[9].uri = ""; /* empty strings, a negative length */
	f[10].name = "pkg/after", f[10].digest = HEX_A; /* f[0]'s prefix again, after others */
	f[10].uri = "bytestream://c/blobs/" HEX_A "/1";
	f[11].name = "a name of exactly sixteen", f[11].length = INT64_MAX, f[11].uri = "12345678";

	tf__buf_init(&b, 1 << 20);
	add_named_set_of(&b, "set-1", fp, N, refs, 3);
	add_named_set_of(&b, "", NULL, 0, NULL, 0); /* empty id, nothing in it */
	{
		size_t off = 0;
		for (int k = 0; k < 2; k++) {
			uint64_t len = 0;
			size_t p = 0;
			do
				len |= (uint64_t)(b.data[off + p] & 0x7f) << (7 * p);
			while (b.data[off + p++] & 0x80);
			ev = decode_both(b.data + off + p, (size_t)len);
			set = ev->msg->named_set_of_files;
			if (k == 0) {
				CHECK_INT_EQ(set->n_files, N);
				/* Decoded on the fast path: a File with the previous
				 * File's parts shares them. */
				CHECK(set->files[1]->path_prefix == set->files[0]->path_prefix);
				CHECK(set->files[2]->path_prefix != set->files[0]->path_prefix);
				CHECK_STR_EQ(set->files[2]->path_prefix[2], "binx");
				CHECK_STR_EQ(set->files[3]->path_prefix[1], "k8-fastbuild");
				CHECK_STR_EQ(set->file_sets[1]->id, "");
			} else {
				CHECK_INT_EQ(set->n_files, 0);
				CHECK(set->files == NULL && set->file_sets == NULL);
			}
			ev_event_unref(ev);
			off += p + (size_t)len;
		}
	}
	tf__buf_fini(&b);
}

TEST(other_shapes_decode_the_general_way)
{
	struct wb file, extra, ev_bytes;
	ev_event *ev;

	/* UTF-8 in a name: valid, not plain ASCII. */
	plain_file(&file, "pkg/caf\xc3\xa9.o");
	named_set_event(&ev_bytes, &file, NULL);
	ev = decode_both(ev_bytes.d, ev_bytes.n);
	CHECK_STR_EQ(ev->msg->named_set_of_files->files[0]->name, "pkg/caf\xc3\xa9.o");
	ev_event_unref(ev);

	/* A name given twice: the last one wins, as protobuf-c has it. */
	plain_file(&file, "first");
	wb_str(&file, 1, "second");
	named_set_event(&ev_bytes, &file, NULL);
	ev = decode_both(ev_bytes.d, ev_bytes.n);
	CHECK_STR_EQ(ev->msg->named_set_of_files->files[0]->name, "second");
	ev_event_unref(ev);

	/* Two oneof members: the last one is the File's location. */
	plain_file(&file, "pkg/x");
	wb_str(&file, 7, "../elsewhere");
	named_set_event(&ev_bytes, &file, NULL);
	ev = decode_both(ev_bytes.d, ev_bytes.n);
	CHECK_INT_EQ(ev->msg->named_set_of_files->files[0]->file_case,
		     BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH);
	ev_event_unref(ev);

	/* An unknown field in a File is kept, and so written again. */
	plain_file(&file, "pkg/unknown");
	wb_str(&file, 99, "from a newer Bazel");
	named_set_event(&ev_bytes, &file, NULL);
	ev = decode_both(ev_bytes.d, ev_bytes.n);
	CHECK_INT_EQ(ev->msg->named_set_of_files->files[0]->base.n_unknown_fields, 1);
	ev_event_unref(ev);

	/* More on the event: children, last_message. */
	plain_file(&file, "pkg/last");
	extra.n = 0;
	wb_varint(&extra, 20 << 3 | 0);
	wb_varint(&extra, 1);
	named_set_event(&ev_bytes, &file, &extra);
	ev = decode_both(ev_bytes.d, ev_bytes.n);
	CHECK(ev->msg->last_message);
	CHECK_INT_EQ(ev->msg->named_set_of_files->n_files, 1);
	ev_event_unref(ev);

	/* A length written as a 10-byte varint (a negative int64). */
	file.n = 0;
	wb_str(&file, 1, "neg");
	wb_varint(&file, 6 << 3 | 0);
	wb_varint(&file, (uint64_t)-3);
	named_set_event(&ev_bytes, &file, NULL);
	ev = decode_both(ev_bytes.d, ev_bytes.n);
	CHECK_INT_EQ(ev->msg->named_set_of_files->files[0]->length, -3);
	ev_event_unref(ev);
}

TEST(malformed_named_sets_get_the_checks_message)
{
	struct wb file, ev_bytes;
	tf_error err = { 0 };
	ev_event *ev = NULL;

	/* A NUL byte in a name. */
	file.n = 0;
	wb_bytes(&file, 1, "a\0b", 3);
	named_set_event(&ev_bytes, &file, NULL);
	CHECK_INT_EQ(ev_event_decode(ev_bytes.d, ev_bytes.n, 0, "bep", 4, 100, &ev, &err), -EBADMSG);
	CHECK_CONTAINS(err.message, "bep: record 4 does not decode: BuildEvent.named_set_of_files.files.name (field 1) is a string with a NUL byte in it");
	CHECK(ev == NULL);

	/* Not UTF-8. */
	plain_file(&file, "pkg/\xff");
	named_set_event(&ev_bytes, &file, NULL);
	CHECK_INT_EQ(ev_event_decode(ev_bytes.d, ev_bytes.n, 0, "bep", 4, 100, &ev, &err), -EBADMSG);
	CHECK_CONTAINS(err.message, "is a string that is not UTF-8");

	/* A File cut short: its last string runs past the end. */
	plain_file(&file, "pkg/cut");
	named_set_event(&ev_bytes, &file, NULL);
	ev_bytes.d[ev_bytes.n - 3] = 0x7f; /* the URI's length */
	CHECK_INT_EQ(ev_event_decode(ev_bytes.d, ev_bytes.n - 1, 0, "bep", 4, 100, &ev, &err), -EBADMSG);
	CHECK_CONTAINS(err.message, "runs past the end of its enclosing message");

	/* The length with the wire type of a string. */
	file.n = 0;
	wb_str(&file, 6, "42");
	named_set_event(&ev_bytes, &file, NULL);
	CHECK_INT_EQ(ev_event_decode(ev_bytes.d, ev_bytes.n, 0, "bep", 4, 100, &ev, &err), -EBADMSG);
	CHECK_CONTAINS(err.message, "length (field 6) has wire type 2 (length-delimited), but the schema says varint");

	/* A depth cap the File is past. */
	plain_file(&file, "pkg/deep");
	named_set_event(&ev_bytes, &file, NULL);
	CHECK_INT_EQ(ev_event_decode(ev_bytes.d, ev_bytes.n, 2, "bep", 4, 100, &ev, &err), -EBADMSG);
	CHECK_CONTAINS(err.message, "nests messages deeper than the cap of 2");
	CHECK(ev == NULL);
	/* ... and one it is within. */
	CHECK_INT_EQ(ev_event_decode(ev_bytes.d, ev_bytes.n, 3, "bep", 4, 100, &ev, &err), 0);
	CHECK_STR_EQ(ev->msg->named_set_of_files->files[0]->name, "pkg/deep");
	ev_event_unref(ev);
}
