/* The named-set graph's compact form: every kind of File comes back from an
 * expansion exactly as it went in (bytestream URIs with and without a
 * digest, other digests, contents with a NUL, symlinks, names without a
 * directory, negative lengths, names and URIs too long for the cache), and
 * a BEP of 400,000 files in 4,000 targets with deeply shared sets is read
 * and expanded within a peak-RSS budget proportional to issue 13's (128 MiB
 * for 1,000,000 files): the graph keeps no decoded event. */
#include "ev_test_util.h"
#include "lib/stream_util.h"

#define HEX_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

static char *prefix3[] = { "bazel-out", "k8-fastbuild", "bin" };
static char *prefix1[] = { "external" };

/* Decodes the records of b as events (each with its record number). */
static size_t decode_all(tf__buf *b, ev_event **out, size_t max)
{
	size_t off = 0, n = 0;
	tf_error err = { 0 };

	while (off < b->len) {
		uint64_t len = 0;
		size_t p = 0;
		do
			len |= (uint64_t)(b->data[off + p] & 0x7f) << (7 * p);
		while (b->data[off + p++] & 0x80);
		CHECK(n < max);
		CHECK(ev_event_decode(b->data + off + p, (size_t)len, 0, "compact", n + 1, off, &out[n],
				      &err) == 0);
		n++;
		off += p + (size_t)len;
	}
	return n;
}

static void set_event(tf__buf *b, const char *id, BuildEventStream__File **files, size_t nf,
		      const char *ref)
{
	add_named_set_of(b, id, files, nf, &ref, ref ? 1 : 0);
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static void check_same(const BuildEventStream__File *got, const BuildEventStream__File *want)
{
	CHECK_INT_EQ(got->n_path_prefix, want->n_path_prefix);
	for (size_t i = 0; i < want->n_path_prefix; i++)
		CHECK_STR_EQ(got->path_prefix[i], want->path_prefix[i]);
	CHECK_STR_EQ(or_empty(got->name), or_empty(want->name));
	CHECK_STR_EQ(or_empty(got->digest), or_empty(want->digest));
	CHECK_INT_EQ(got->length, want->length);
	CHECK_INT_EQ(got->file_case, want->file_case);
	switch (want->file_case) {
	case BUILD_EVENT_STREAM__FILE__FILE_URI:
		CHECK_STR_EQ(got->uri, or_empty(want->uri));
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH:
		CHECK_STR_EQ(got->symlink_target_path, or_empty(want->symlink_target_path));
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_CONTENTS:
		CHECK_INT_EQ(got->contents.len, want->contents.len);
		CHECK(want->contents.len == 0 ||
		      memcmp(got->contents.data, want->contents.data, want->contents.len) == 0);
		break;
	default:
		break;
	}
}

TEST(every_kind_of_file_round_trips)
{
	enum { N = 18 };
	BuildEventStream__File f[N], *fp[N], twin;
	char long_name[400], long_uri[600], long_uri2[1200];
	static uint8_t nul_bytes[] = { 'a', 0, 'b' };
	tf__buf b;
	ev_event *ev[4];
	ev_sets *s;
	tf_error err = { 0 };

	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	memcpy(long_name, "deep/", 5);
	snprintf(long_uri, sizeof(long_uri), "bytestream://%0300d.example.com/blobs/%s/77", 0, HEX_B);
	snprintf(long_uri2, sizeof(long_uri2), "bytestream://%01000d.example.com/blobs/%s/9223372036854775807",
		 0, HEX_A);
	for (size_t i = 0; i < N; i++) {
		build_event_stream__file__init(&f[i]);
		f[i].n_path_prefix = 3;
		f[i].path_prefix = prefix3;
		f[i].file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
		fp[i] = &f[i];
	}
	/* Bazel 7: digest and length, and a URI made of them. */
	f[0].name = "pkg/a/b.o", f[0].digest = HEX_A, f[0].length = 1234;
	f[0].uri = "bytestream://cache.example.com:443/blobs/" HEX_A "/1234";
	/* Bazel 4: the URI alone carries the digest. */
	f[1].name = "pkg/a/c.o", f[1].uri = "bytestream://cache.example.com:443/blobs/" HEX_B "/99";
	/* An instance name, and a URI hash that is not the digest. */
	f[2].name = "pkg/a/d.o", f[2].digest = HEX_A, f[2].length = 5;
	f[2].uri = "bytestream://cache/my/instance/blobs/" HEX_B "/5";
	/* The same hash, another size. */
	f[3].name = "pkg/a/e.o", f[3].digest = HEX_A, f[3].length = 5;
	f[3].uri = "bytestream://cache/blobs/" HEX_A "/6";
	/* Digests that are not 64 lowercase hex digits. */
	f[4].name = "pkg/up", f[4].digest = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF";
	f[4].uri = "file:///x/bazel-out/k8-fastbuild/bin/pkg/up";
	f[5].name = "pkg/sha1", f[5].digest = "da39a3ee5e6b4b0d3255bfef95601890afd80709", f[5].length = -5;
	f[5].uri = "bytestream://c/blobs/da39a3ee5e6b4b0d3255bfef95601890afd80709/0";
	/* Sizes written in another way stay as they were. */
	f[6].name = "pkg/zero", f[6].uri = "bytestream://c/blobs/" HEX_A "/0";
	f[7].name = "pkg/lead", f[7].uri = "bytestream://c/blobs/" HEX_A "/0123";
	f[8].name = "pkg/plus", f[8].uri = "bytestream://c/blobs/" HEX_A "/+1";
	f[9].name = "pkg/trailing-slash", f[9].uri = "bytestream://c/blobs/" HEX_A "/1/";
	/* Other locations. */
	f[10].name = "pkg/inline", f[10].file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
	f[10].contents.len = sizeof(nul_bytes), f[10].contents.data = nul_bytes;
	f[11].name = "pkg/link", f[11].file_case = BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH;
	f[11].symlink_target_path = "../target";
	f[12].name = "stdout", f[12].n_path_prefix = 0, f[12].path_prefix = NULL;
	f[12].file_case = BUILD_EVENT_STREAM__FILE__FILE__NOT_SET;
	f[13].name = "dir/", f[13].n_path_prefix = 1, f[13].path_prefix = prefix1, f[13].uri = "";
	f[14].name = "/abs", f[14].digest = HEX_B, f[14].length = INT64_MAX;
	f[14].uri = "bytestream://c/blobs/" HEX_B "/9223372036854775807";
	/* Too long for a cache slot: rebuilt into the scratch File. */
	f[15].name = long_name, f[15].digest = HEX_B, f[15].length = 77, f[15].uri = long_uri;
	f[16].name = "pkg/a/b.o", f[16].digest = HEX_B, f[16].length = 1234; /* f[0]'s path, another digest */
	f[16].uri = "bytestream://cache.example.com:443/blobs/" HEX_B "/1234";
	/* A long templated URI with the longest size, its name without a
	 * directory, and no digest: the scratch holds the URI alone. */
	f[17].name = "top", f[17].uri = long_uri2;

	tf__buf_init(&b, 1 << 20);
	set_event(&b, "all", fp, N, NULL);
	twin = f[0];
	{
		BuildEventStream__File *again[] = { &twin, &f[15] };
		set_event(&b, "again", again, 2, "all");
	}
	CHECK_INT_EQ(decode_all(&b, ev, 4), 2);
	s = ev_sets_new(NULL, &err);
	CHECK(s);
	CHECK_INT_EQ(ev_sets_add(s, ev[0], &err), 0);
	CHECK_INT_EQ(ev_sets_add(s, ev[1], &err), 0);
	/* The graph keeps nothing of the events. */
	CHECK_INT_EQ(ev[0]->refs, 1);
	ev_event_unref(ev[0]);
	ev_event_unref(ev[1]);
	CHECK_INT_EQ(ev_sets_count(s), 2);
	CHECK_INT_EQ(ev_sets_distinct_files(s), N); /* the twin is f[0]; f[16] is not */
	/* Three times: rebuilt, then from the cache (and the scratch). */
	for (int round = 0; round < 3; round++) {
		BuildEventStream__BuildEventId__NamedSetOfFilesId id =
			BUILD_EVENT_STREAM__BUILD_EVENT_ID__NAMED_SET_OF_FILES_ID__INIT, *ip = &id;
		const BuildEventStream__File *g;
		size_t n = 0;

		id.id = round == 1 ? "all" : "again";
		CHECK_INT_EQ(ev_sets_expand_begin(s, &ip, 1, NULL, 0, "test", &err), 0);
		if (round != 1) {
			/* "again": its own two files (f[0]'s twin, f[15]), then the rest of "all". */
			g = ev_sets_expand_next(s);
			CHECK(g);
			check_same(g, &f[0]);
			g = ev_sets_expand_next(s);
			CHECK(g);
			check_same(g, &f[15]);
		}
		while ((g = ev_sets_expand_next(s))) {
			while (round != 1 && (n == 0 || n == 15))
				n++;
			CHECK(n < N);
			check_same(g, &f[n]);
			n++;
		}
		CHECK_INT_EQ(n, N);
	}
	ev_sets_free(s);
	tf__buf_fini(&b);
}

/* ---- memory ------------------------------------------------------------------- */

#define CHAIN 100

struct gen {
	FILE *out;
	tf__buf b;
};

static void flush_gen(struct gen *g, bool force)
{
	if (g->b.len > (1u << 20) || (force && g->b.len)) {
		CHECK(fwrite(g->b.data, 1, g->b.len, g->out) == g->b.len);
		g->b.len = 0;
	}
}

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

/* File j of (kind, owner): a Bazel 7 output with digest, length and URI. */
static void make_file(BuildEventStream__File *f, char *name, char *digest, char *uri, char kind,
		      size_t owner, size_t j)
{
	uint64_t seed = mix(((uint64_t)owner << 20) ^ j ^ ((uint64_t)kind << 56));

	build_event_stream__file__init(f);
	snprintf(name, 64, "pkg%zu/%c%zu/obj_%zu.o", owner / CHAIN, kind, owner, j);
	for (int w = 0; w < 4; w++)
		snprintf(digest + 16 * w, 17, "%016llx", (unsigned long long)mix(seed * 4 + (uint64_t)w));
	f->length = (int64_t)(mix(seed) % 100000) + 1;
	snprintf(uri, 160, "bytestream://remote.example.com:443/blobs/%s/%lld", digest, (long long)f->length);
	f->n_path_prefix = 3;
	f->path_prefix = prefix3;
	f->name = name;
	f->digest = digest;
	f->file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
	f->uri = uri;
}

static void gen_set(struct gen *g, char kind, size_t owner, size_t per, const char *const *refs, size_t nr)
{
	BuildEventStream__File f[64], *fp[64];
	char names[64][64], digests[64][65], uris[64][160], id[32];

	CHECK(per <= 64);
	for (size_t j = 0; j < per; j++) {
		make_file(&f[j], names[j], digests[j], uris[j], kind, owner, j);
		fp[j] = &f[j];
	}
	snprintf(id, sizeof(id), "%c%zu", kind, owner);
	add_named_set_of(&g->b, id, fp, per, refs, nr);
	flush_gen(g, false);
}

/* Target i: own set O_i (per files, referencing L_i); library set L_i (per
 * files) references L_{i-1} and L_{i-2} within chains of CHAIN. Returns
 * the files target i's expansion returns. */
static size_t gen_target(struct gen *g, size_t i, size_t per)
{
	char lib[32], lib1[32], lib2[32], label[64];
	const char *refs[2] = { lib1, lib2 };
	size_t pos = i % CHAIN;

	snprintf(lib, sizeof(lib), "L%zu", i);
	snprintf(lib1, sizeof(lib1), "L%zu", i - (pos >= 1 ? 1 : 0));
	snprintf(lib2, sizeof(lib2), "L%zu", i - (pos >= 2 ? 2 : 0));
	gen_set(g, 'L', i, per, refs, pos >= 2 ? 2 : pos);
	refs[0] = lib;
	gen_set(g, 'O', i, per, refs, 1);
	snprintf(label, sizeof(label), "//pkg%zu:t%zu", i / CHAIN, i);
	{
		char own[32];
		const char *r[] = { own };
		snprintf(own, sizeof(own), "O%zu", i);
		add_target(&g->b, label, r, 1);
	}
	flush_gen(g, false);
	return per * (pos + 2);
}

TEST(large_shared_bep_fits_in_its_budget)
{
	const size_t targets = 4000, per = 50; /* 400,000 files */
	char *dir = make_tmpdir(), path[4200];
	struct gen g;
	size_t want_visits = 0, visits = 0, n_targets = 0;
	ev_event **tev = calloc(targets, sizeof(*tev)), *ev;
	tf_error err = { 0 };
	ev_reader *r;
	ev_sets *s;
	long before, grew;
	int rc;

	CHECK(tev);
	snprintf(path, sizeof(path), "%s/big.bin", dir);
	g.out = fopen(path, "wb");
	CHECK(g.out);
	tf__buf_init(&g.b, 1 << 24);
	for (size_t i = 0; i < targets; i++)
		want_visits += gen_target(&g, i, per);
	add_progress(&g.b, 1, "", true);
	flush_gen(&g, true);
	CHECK(fclose(g.out) == 0);
	tf__buf_fini(&g.b);

	before = proc_status_kib("VmRSS");
	r = ev_reader_new(path, NULL, &err);
	s = ev_sets_new(NULL, &err);
	CHECK(r && s);
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES)
			CHECK_INT_EQ(ev_sets_add(s, ev, &err), 0);
		else if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED)
			tev[n_targets++] = ev_event_ref(ev);
		ev_event_unref(ev);
	}
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(ev_reader_finish(r, &err), 0);
	CHECK_INT_EQ(n_targets, targets);
	CHECK_INT_EQ(ev_sets_count(s), 2 * targets);
	CHECK_INT_EQ(ev_sets_distinct_files(s), 2 * targets * per);
	for (size_t i = 0; i < n_targets; i++) {
		const BuildEventStream__File *f;
		bool first = true;
		CHECK_INT_EQ(ev_sets_expand_target(s, tev[i], "default", &err), 0);
		while ((f = ev_sets_expand_next(s))) {
			if (first) {
				/* The target's own first file, exactly as written. */
				BuildEventStream__File want;
				char name[64], digest[65], uri[160];
				make_file(&want, name, digest, uri, 'O', i, 0);
				check_same(f, &want);
				first = false;
			}
			visits++;
		}
	}
	CHECK_INT_EQ(visits, want_visits);
	grew = vmhwm_kib() - before;
	fprintf(stderr, "%zu files, %zu visits: peak RSS grew by %ld KiB (budget %d KiB)\n",
		2 * targets * per, visits, grew, 128 * 1024 * 2 / 5);
#ifndef __SANITIZE_ADDRESS__
	/* 128 MiB for 1,000,000 files, so 51.2 MiB for 400,000 (keeping the
	 * decoded events took ~230 MiB here; the compact form ~46 MiB, of
	 * which ~5 MiB is the fixed cache of rebuilt Files). AddressSanitizer's
	 * redzones and quarantine change every size: no bound there. */
	CHECK(grew <= 128 * 1024 * 2 / 5);
#endif
	for (size_t i = 0; i < n_targets; i++)
		ev_event_unref(tev[i]);
	free(tev);
	ev_sets_free(s);
	ev_reader_free(r);
	unlink(path);
	rm_tree(dir);
}
