/* The NamedSetOfFiles graph on crafted streams: nesting and sharing
 * (diamonds: each file once, in order), a 60-level diamond ladder that plain
 * recursion would walk 2^60 times, forward references, equal files in
 * different sets, inline files; and every error: a set that contains itself
 * (directly and through others), unknown ids (from a set and from a
 * target), chains deeper than the cap (found directly and through a chain
 * resolved earlier), duplicate ids, the set and file caps. An error leaves
 * the graph usable. */
#include "ev_test_util.h"

static char *dir;

struct stream {
	ev_sets *sets;
	ev_event *targets[2048];
	size_t n_targets;
};

/* Reads the whole stream in b into st (the graph's options from o). */
static void load(struct stream *st, tf__buf *b, const ev_sets_options *o)
{
	static int k;
	char path[4200];
	tf_error err = { 0 };
	ev_reader *r;
	ev_event *ev;
	int rc;

	snprintf(path, sizeof(path), "%s/s%d.bin", dir, k++);
	write_file(path, b->data, b->len);
	memset(st, 0, sizeof(*st));
	st->sets = ev_sets_new(o, &err);
	CHECK(st->sets);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES)
			CHECK(ev_sets_add(st->sets, ev, &err) == 0);
		else if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED) {
			CHECK(st->n_targets < 2048);
			st->targets[st->n_targets++] = ev_event_ref(ev);
		}
		ev_event_unref(ev);
	}
	CHECK_INT_EQ(rc, 0);
	ev_reader_free(r);
}

static void unload(struct stream *st)
{
	for (size_t i = 0; i < st->n_targets; i++)
		ev_event_unref(st->targets[i]);
	ev_sets_free(st->sets);
}

/* Expands target t and compares the file names, joined by spaces. */
static void expect_files(struct stream *st, size_t t, const char *want)
{
	char got[8192];
	size_t n = 0;
	tf_error err = { 0 };
	int rc = ev_sets_expand_target(st->sets, st->targets[t], NULL, &err);

	if (rc)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	got[0] = '\0';
	for (const BuildEventStream__File *f; (f = ev_sets_expand_next(st->sets));)
		n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%s", n ? " " : "", f->name);
	CHECK_STR_EQ(got, want);
}

static void expect_error(struct stream *st, size_t t, int code, const char *needle)
{
	tf_error err = { 0 };
	CHECK_INT_EQ(ev_sets_expand_target(st->sets, st->targets[t], NULL, &err), code);
	CHECK_CONTAINS(err.message, needle);
	/* A failed start leaves no expansion running. */
	CHECK(ev_sets_expand_next(st->sets) == NULL);
}

#define L(...) (const char *const[]){ __VA_ARGS__ }, sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *)
#define NONE NULL, 0

static void test_nesting_and_sharing(void)
{
	struct stream st;
	tf__buf b;

	tf__buf_init(&b, 1 << 24);
	/* bottom <- left, right <- top (a diamond) plus a shared leaf used by
	 * two targets; "x.txt" appears in two sets and counts once. */
	add_named_set(&b, "bottom", L("b1", "b2"), NONE);
	add_named_set(&b, "left", L("l1", "x.txt"), L("bottom"));
	add_named_set(&b, "right", L("r1", "x.txt"), L("bottom"));
	add_named_set(&b, "top", L("t1"), L("left", "right"));
	add_target(&b, "//a:top", L("top"));
	add_target(&b, "//a:right", L("right"));
	add_target(&b, "//a:both", L("right", "left", "right"));
	/* Forward reference: "late" is named before it is posted. */
	add_named_set(&b, "early", L("e1"), L("late"));
	add_named_set(&b, "late", L("z1"), NONE);
	add_target(&b, "//a:early", L("early"));
	/* Sets without files of their own, one without anything. */
	add_named_set(&b, "empty", NONE, NONE);
	add_named_set(&b, "refs-only", NONE, L("empty", "late", "empty"));
	add_target(&b, "//a:refs-only", L("empty", "refs-only"));
	add_progress(&b, 1, "", true);
	load(&st, &b, NULL);
	CHECK_INT_EQ(ev_sets_count(st.sets), 8);
	CHECK_INT_EQ(ev_sets_distinct_files(st.sets), 8);
	expect_files(&st, 4, "z1");
	expect_files(&st, 0, "t1 l1 x.txt b1 b2 r1");
	expect_files(&st, 1, "r1 x.txt b1 b2");
	expect_files(&st, 2, "r1 x.txt b1 b2 l1");
	expect_files(&st, 3, "e1 z1");
	/* Expansions do not disturb each other (epochs). */
	expect_files(&st, 0, "t1 l1 x.txt b1 b2 r1");
	/* Only one group, so naming it gives the same. */
	{
		tf_error err = { 0 };
		size_t n = 0;
		CHECK(ev_sets_expand_target(st.sets, st.targets[0], "default", &err) == 0);
		while (ev_sets_expand_next(st.sets))
			n++;
		CHECK_INT_EQ(n, 6);
	}
	/* Starting a new expansion abandons the one in progress. */
	{
		tf_error err = { 0 };
		CHECK(ev_sets_expand_target(st.sets, st.targets[0], NULL, &err) == 0);
		CHECK_STR_EQ(ev_sets_expand_next(st.sets)->name, "t1");
		expect_files(&st, 1, "r1 x.txt b1 b2");
	}
	/* Roots given directly, plus inline files; an inline file equal to a
	 * set's file is returned once. */
	{
		tf_error err = { 0 };
		BuildEventStream__BuildEventId__NamedSetOfFilesId id =
			BUILD_EVENT_STREAM__BUILD_EVENT_ID__NAMED_SET_OF_FILES_ID__INIT;
		BuildEventStream__BuildEventId__NamedSetOfFilesId *ids[] = { &id };
		BuildEventStream__File other = BUILD_EVENT_STREAM__FILE__INIT, copy;
		BuildEventStream__File *inl[2];
		char names[8][32];
		size_t n = 0;

		/* A copy of the first file of set "left" (equal, another
		 * object), and a file no set has. */
		id.id = "left";
		CHECK(ev_sets_expand_begin(st.sets, ids, 1, NULL, 0, "test", &err) == 0);
		/* A returned File lives until the next call on the graph: the
		 * copy gets its own strings. */
		copy = *ev_sets_expand_next(st.sets);
		copy.name = strdup(copy.name);
		CHECK(copy.name);
		CHECK_STR_EQ(copy.name, "l1");
		other.name = "inline.txt";
		inl[0] = &other;
		inl[1] = &copy;
		CHECK(ev_sets_expand_begin(st.sets, ids, 1, inl, 2, "test", &err) == 0);
		for (const BuildEventStream__File *f; (f = ev_sets_expand_next(st.sets));) {
			CHECK(n < 8);
			snprintf(names[n++], sizeof(names[0]), "%s", f->name);
		}
		CHECK_INT_EQ(n, 5);
		CHECK_STR_EQ(names[0], "inline.txt");
		CHECK_STR_EQ(names[1], "l1");
		CHECK_STR_EQ(names[2], "x.txt");
		CHECK_STR_EQ(names[3], "b1");
		CHECK_STR_EQ(names[4], "b2");
		free(copy.name);
	}
	unload(&st);
	tf__buf_fini(&b);
}

/* 60 levels, each two sets that both reference both sets of the next
 * level: 2^60 paths from the top, 120 sets, 120 files. */
static void test_diamond_ladder(void)
{
	struct stream st;
	tf__buf b;
	tf_error err = { 0 };
	size_t n = 0;
	uint64_t t0;

	tf__buf_init(&b, 1 << 24);
	for (int lvl = 59; lvl >= 0; lvl--) {
		for (int side = 0; side < 2; side++) {
			char id[32], f[32], a[32], c[32];
			const char *files[] = { f };
			const char *refs[] = { a, c };
			snprintf(id, sizeof(id), "%d%c", lvl, side ? 'b' : 'a');
			snprintf(f, sizeof(f), "f%d%c", lvl, side ? 'b' : 'a');
			snprintf(a, sizeof(a), "%da", lvl + 1);
			snprintf(c, sizeof(c), "%db", lvl + 1);
			add_named_set(&b, id, files, 1, refs, lvl == 59 ? 0 : 2);
		}
	}
	add_target(&b, "//ladder:top", L("0a", "0b"));
	load(&st, &b, NULL);
	t0 = tf__now_ns();
	CHECK(ev_sets_expand_target(st.sets, st.targets[0], NULL, &err) == 0);
	while (ev_sets_expand_next(st.sets))
		n++;
	CHECK_INT_EQ(n, 120);
	/* Linear: a few microseconds, not 2^60 steps. */
	CHECK(tf__now_ns() - t0 < 1000000000ull);
	unload(&st);
	tf__buf_fini(&b);
}

static void test_cycles_and_unknown(void)
{
	struct stream st;
	tf__buf b;

	tf__buf_init(&b, 1 << 24);
	add_named_set(&b, "self", L("s"), L("self"));                 /* record 1 */
	add_named_set(&b, "a", L("fa"), L("b"));                      /* record 2 */
	add_named_set(&b, "b", L("fb"), L("c"));                      /* record 3 */
	add_named_set(&b, "c", L("fc"), L("a"));                      /* record 4 */
	add_named_set(&b, "dangling", L("fd"), L("nowhere"));         /* record 5 */
	add_target(&b, "//t:self", L("self"));                       /* record 6 */
	add_target(&b, "//t:cycle", L("a"));                         /* record 7 */
	add_target(&b, "//t:dangling", L("dangling"));               /* record 8 */
	add_target(&b, "//t:unknown", L("missing"));                 /* record 9 */
	load(&st, &b, NULL);
	expect_error(&st, 0, -ELOOP, "named set 'self' (record 1) contains itself: 'self' -> 'self'");
	expect_error(&st, 1, -ELOOP, "named set 'a' (record 2) contains itself: 'a' -> 'b' -> 'c' -> 'a'");
	expect_error(&st, 2, -ENOENT,
		     "named set 'nowhere' is unknown: referenced by named set 'dangling' (record 5)");
	expect_error(&st, 3, -ENOENT,
		     "named set 'missing' is unknown: referenced by TargetComplete //t:unknown (record 9)");
	/* Still usable, and the same errors again (nothing was half-resolved). */
	expect_error(&st, 1, -ELOOP, "'a' -> 'b' -> 'c' -> 'a'");
	expect_error(&st, 2, -ENOENT, "'nowhere'");
	/* Once the missing set arrives, the dangling one expands. */
	{
		tf__buf more;
		tf_error err = { 0 };
		ev_event *ev;
		tf__buf_init(&more, 1 << 20);
		add_named_set(&more, "nowhere", L("fn"), NONE);
		/* Skip the 1-byte length prefix. */
		CHECK(more.data[0] < 0x80);
		CHECK(ev_event_decode(more.data + 1, more.len - 1, 0, "extra", 10, 0, &ev, &err) == 0);
		CHECK(ev_sets_add(st.sets, ev, &err) == 0);
		ev_event_unref(ev);
		/* A second set with the same id is refused, naming both records. */
		CHECK(ev_event_decode(more.data + 1, more.len - 1, 0, "extra", 11, 0, &ev, &err) == 0);
		CHECK_INT_EQ(ev_sets_add(st.sets, ev, &err), -EEXIST);
		CHECK_CONTAINS(err.message, "record 11: named set 'nowhere' was already defined by record 10");
		ev_event_unref(ev);
		tf__buf_fini(&more);
		expect_files(&st, 2, "fd fn");
	}
	/* Not a named set. */
	{
		tf_error err = { 0 };
		CHECK_INT_EQ(ev_sets_add(st.sets, st.targets[0], &err), -EINVAL);
		CHECK_CONTAINS(err.message, "record 6 is a 'completed' event, not a named_set_of_files");
	}
	unload(&st);
	tf__buf_fini(&b);
}

static void test_depth_cap(void)
{
	struct stream st;
	ev_sets_options o;
	tf__buf b;
	char ids[61][16];

	/* A chain c0 -> c1 -> ... -> c59, one file each; the cap is 50. */
	tf__buf_init(&b, 1 << 24);
	for (int i = 0; i < 61; i++)
		snprintf(ids[i], sizeof(ids[i]), "c%d", i);
	for (int i = 0; i < 60; i++) {
		const char *f[] = { ids[i] };
		const char *r[] = { ids[i + 1] };
		add_named_set(&b, ids[i], f, 1, r, i == 59 ? 0 : 1);
	}
	add_target(&b, "//deep:c10", L("c10")); /* 50 levels: allowed */
	add_target(&b, "//deep:c0", L("c0"));   /* 60 levels */
	add_target(&b, "//deep:c5", L("c5"));   /* 55 levels */
	add_target(&b, "//deep:c9", L("c9"));   /* 51 levels */
	ev_sets_options_init(&o);
	o.max_depth = 50;
	load(&st, &b, &o);
	/* Deepest first: the DFS stack itself passes the cap. */
	expect_error(&st, 1, -E2BIG,
		     "named sets nest deeper than the cap of 50: the chain from 'c0' (referenced by TargetComplete //deep:c0 (record 62)) reaches 'c50' (record 51) at depth 51");
	{
		char want[600];
		size_t n = 0;
		want[0] = '\0';
		for (int i = 10; i < 60; i++)
			n += (size_t)snprintf(want + n, sizeof(want) - n, "%s%s", n ? " " : "", ids[i]);
		expect_files(&st, 0, want);
	}
	/* Now c10..c59 are resolved (depth 50); from c5 the cap is passed
	 * through that remembered depth. */
	expect_error(&st, 2, -E2BIG, "named set 'c9' (record 10) nests 51 levels deep, over the cap of 50");
	expect_error(&st, 3, -E2BIG, "named set 'c9' (record 10) nests 51 levels deep");
	unload(&st);
	tf__buf_fini(&b);
}

static void test_caps(void)
{
	tf__buf b;
	tf_error err = { 0 };
	ev_sets_options o;
	ev_sets *s;
	ev_event *ev[3];
	size_t off = 0;

	tf__buf_init(&b, 1 << 20);
	add_named_set(&b, "six", L("1", "2", "3", "4", "5", "6"), NONE);
	add_named_set(&b, "five", L("a", "b", "c", "d", "e"), NONE);
	add_named_set(&b, "one", L("z"), NONE);
	for (int i = 0; i < 3; i++) {
		size_t len = 0, p = 0;
		do
			len |= (size_t)(b.data[off + p] & 0x7f) << (7 * p);
		while (b.data[off + p++] & 0x80);
		CHECK(ev_event_decode(b.data + off + p, len, 0, "caps", (uint64_t)i + 1, off + p, &ev[i],
				      &err) == 0);
		off += p + len;
	}
	ev_sets_options_init(&o);
	o.max_files = 10;
	o.max_sets = 2;
	s = ev_sets_new(&o, &err);
	CHECK(s);
	CHECK(ev_sets_add(s, ev[0], &err) == 0);
	CHECK_INT_EQ(ev_sets_add(s, ev[1], &err), -E2BIG);
	CHECK_CONTAINS(err.message, "record 2: named set 'five' brings the files in named sets to 11, over the cap of 10");
	CHECK(ev_sets_add(s, ev[2], &err) == 0);
	CHECK_INT_EQ(ev_sets_add(s, ev[1], &err), -E2BIG);
	CHECK_CONTAINS(err.message, "one more than the cap of 2 named sets");
	CHECK_INT_EQ(ev_sets_count(s), 2);
	ev_sets_free(s);
	for (int i = 0; i < 3; i++)
		ev_event_unref(ev[i]);
	tf__buf_fini(&b);
}

int main(void)
{
	dir = make_tmpdir();
	test_nesting_and_sharing();
	test_diamond_ladder();
	test_cycles_and_unknown();
	test_depth_cap();
	test_caps();
	rm_tree(dir);
	return 0;
}
