/* Malformed BEP streams: each gets a clear error naming the input, the
 * record and the byte offset, never a crash, and errors stay final:
 * truncated and over-long length varints, a length over the cap, a record
 * running past the end, wrong wire types (top level and nested, with the
 * field path), a nested length running past its parent, groups, field
 * number 0, nesting past the depth cap, data after last_message, an empty
 * file. Also: unknown fields are skipped and kept; and 3,000 randomly
 * damaged copies of a real stream (bytes changed, inserted, cut) are read
 * and expanded: each ends in success or a described error, never a crash
 * (run under ASan/UBSan in CI). */
#include "ev_test_util.h"

static char *dir;
static int case_no;

/* Writes bytes to a new file; returns its path (static storage). */
static const char *stream_file(const void *p, size_t n)
{
	static char path[4096];
	snprintf(path, sizeof(path), "%s/case%d.bin", dir, ++case_no);
	write_file(path, p, n);
	return path;
}

/* Reads everything; returns the first non-1 code of next (0 or error) and
 * the number of events. */
static int read_all(ev_reader *r, int *events, tf_error *err)
{
	ev_event *ev;
	int rc;

	*events = 0;
	while ((rc = ev_reader_next(r, &ev, err)) == 1) {
		ev_event_unref(ev);
		(*events)++;
	}
	return rc;
}

static void good_records(tf__buf *b, int n)
{
	for (int i = 0; i < n; i++)
		add_progress(b, i, "some console output\n", false);
}

/* A stream of `good` valid records followed by `tail`; expects next() to
 * fail with `code` and a message containing each of the needles. */
static void expect_next_error(int good, const void *tail, size_t tail_len,
			      const ev_reader_options *o, int code, const char *const *needles)
{
	tf__buf b;
	tf_error err = { 0 };
	const char *path;
	ev_reader *r;
	ev_event *ev;
	int n, rc;

	tf__buf_init(&b, 1 << 24);
	good_records(&b, good);
	CHECK(tf__buf_append(&b, tail, tail_len) == 0);
	path = stream_file(b.data, b.len);
	r = ev_reader_new(path, o, &err);
	CHECK(r);
	rc = read_all(r, &n, &err);
	if (rc != code || n != good)
		fprintf(stderr, "case %d: got %d after %d events (%s)\n", case_no, rc, n, err.message);
	CHECK_INT_EQ(rc, code);
	CHECK_INT_EQ(n, good);
	CHECK_CONTAINS(err.message, path);
	for (size_t i = 0; needles[i]; i++)
		CHECK_CONTAINS(err.message, needles[i]);
	/* Final: the same error again, from next and from finish. */
	memset(&err, 0, sizeof(err));
	CHECK_INT_EQ(ev_reader_next(r, &ev, &err), code);
	CHECK(ev == NULL);
	CHECK_CONTAINS(err.message, needles[0]);
	CHECK_INT_EQ(ev_reader_finish(r, &err), code);
	ev_reader_free(r);
	tf__buf_fini(&b);
}

/* As above, but next() only runs dry (0) and finish() reports the error. */
static void expect_finish_error(int good, const void *tail, size_t tail_len, int code,
				const char *const *needles)
{
	tf__buf b;
	tf_error err = { 0 };
	const char *path;
	ev_reader *r;
	int n;

	tf__buf_init(&b, 1 << 24);
	good_records(&b, good);
	CHECK(tf__buf_append(&b, tail, tail_len) == 0);
	path = stream_file(b.data, b.len);
	r = ev_reader_new(path, NULL, &err);
	CHECK(r);
	CHECK_INT_EQ(read_all(r, &n, &err), 0);
	CHECK_INT_EQ(n, good);
	CHECK(ev_reader_at_eof(r));
	CHECK(!ev_reader_complete(r));
	CHECK_INT_EQ(ev_reader_finish(r, &err), code);
	CHECK_CONTAINS(err.message, path);
	for (size_t i = 0; needles[i]; i++)
		CHECK_CONTAINS(err.message, needles[i]);
	ev_reader_free(r);
	tf__buf_fini(&b);
}

/* Offset of the end of `good` progress records. */
static size_t good_len(int good)
{
	tf__buf b;
	size_t n;
	tf__buf_init(&b, 1 << 20);
	good_records(&b, good);
	n = b.len;
	tf__buf_fini(&b);
	return n;
}

/* Prepends tag + varint(length of msg[start, end)) before start. */
static size_t wrap(unsigned char *msg, size_t start, size_t end, unsigned char tag)
{
	size_t inner = end - start, k = 0;
	unsigned char v[5];

	do {
		v[k++] = (unsigned char)((inner & 0x7f) | (inner > 0x7f ? 0x80 : 0));
		inner >>= 7;
	} while (inner);
	start -= k;
	memcpy(msg + start, v, k);
	msg[--start] = tag;
	return start;
}

/* "at byte offset N", in one of 8 rotating static buffers. */
static const char *at(size_t v)
{
	static char s[8][64];
	static int k;
	char *p = s[k++ & 7];
	snprintf(p, 64, "at byte offset %zu", v);
	return p;
}

/* Reads a damaged stream to the end like a consumer would (reader, named
 * sets, every target expanded); returns the first error or 0. */
static int consume(const unsigned char *p, size_t n, tf_error *err)
{
	const char *path = stream_file(p, n);
	ev_reader *r = ev_reader_new(path, NULL, err);
	ev_sets *s = ev_sets_new(NULL, err);
	ev_event *ev;
	int rc, first = 0;

	CHECK(r && s);
	while ((rc = ev_reader_next(r, &ev, err)) == 1) {
		const BuildEventStream__BuildEvent *m = ev->msg;
		if (m->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES &&
		    m->named_set_of_files) {
			rc = ev_sets_add(s, ev, err);
			if (rc < 0 && !first)
				first = rc;
		} else if (m->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED &&
			   m->completed) {
			rc = ev_sets_expand_target(s, ev, NULL, err);
			if (rc == 0)
				while (ev_sets_expand_next(s))
					;
			else if (!first)
				first = rc;
		}
		{
			tf__buf j;
			tf__buf_init(&j, 1 << 24);
			CHECK_INT_EQ(ev_json_append(&j, &m->base, err), 0);
			tf__buf_fini(&j);
		}
		ev_event_unref(ev);
	}
	if (rc == 0)
		rc = ev_reader_finish(r, err);
	if (rc < 0) {
		CHECK(err->code == rc);
		CHECK_CONTAINS(err->message, path);
		if (!first)
			first = rc;
	}
	ev_sets_free(s);
	ev_reader_free(r);
	unlink(path);
	return first;
}

static void damaged_copies(void)
{
	size_t len;
	unsigned char *orig = slurp(fixture("run1_populate", "bep.bin"), &len);
	unsigned char *buf = malloc(len + 64);
	unsigned seed = 4242;
	int ok = 0, failed = 0;

	CHECK(buf);
	for (int i = 0; i < 3000; i++) {
		size_t n = len;
		int edits = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 4;
		tf_error err = { 0 };

		memcpy(buf, orig, len);
		for (int e = 0; e < edits; e++) {
			size_t at = ((seed = seed * 1103515245u + 12345u) >> 8) % n;
			unsigned kind = (seed >> 4) % 4;
			unsigned char v = (unsigned char)(seed >> 20);
			if (kind == 0 || kind == 1) {
				buf[at] = v;                       /* change a byte */
			} else if (kind == 2 && n < len + 60) {
				memmove(buf + at + 1, buf + at, n - at); /* insert one */
				buf[at] = v;
				n++;
			} else {
				n = at;                            /* cut */
				if (n == 0)
					n = 1;
			}
		}
		if (consume(buf, n, &err) == 0)
			ok++;
		else
			failed++;
	}
	/* Some damage is harmless (a changed letter in a path), most is not. */
	CHECK(ok > 0);
	CHECK(failed > 1000);
	free(buf);
	free(orig);
}

int main(void)
{
	dir = make_tmpdir();

	/* Truncated length varint at the end of the input. */
	{
		unsigned char tail[] = { 0x85 };
		const char *n[] = { "truncated length prefix of record 4",
				    at(good_len(3)),
				    "last complete record: 3", NULL };
		expect_finish_error(3, tail, sizeof(tail), -EBADMSG, n);
	}
	/* A length prefix that is not a 32-bit varint. */
	{
		unsigned char tail[] = { 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00 };
		const char *n[] = { "length prefix of record 2",
				    at(good_len(1)), "not a 32-bit varint",
				    NULL };
		expect_next_error(1, tail, sizeof(tail), NULL, -EBADMSG, n);
	}
	/* Over the message cap: refused at once, without waiting for the
	 * bytes (the default 64 MiB cap and a 4 GiB - 1 claim)... */
	{
		unsigned char tail[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
		const char *n[] = { "record 3", at(good_len(2)),
				    "claims 4294967295 bytes", "over the cap of 67108864", NULL };
		expect_next_error(2, tail, sizeof(tail), NULL, -EMSGSIZE, n);
	}
	/* ... and a small cap with a real record behind it. */
	{
		tf__buf t;
		ev_reader_options o;
		char big[300];
		const char *n[] = { "record 2", at(good_len(1)),
				    "over the cap of 100 bytes", NULL };
		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		tf__buf_init(&t, 1 << 20);
		add_progress(&t, 7, big, false);
		ev_reader_options_init(&o);
		o.max_message_size = 100;
		expect_next_error(1, t.data, t.len, &o, -EMSGSIZE, n);
		tf__buf_fini(&t);
	}
	/* A record whose length runs past the end of the input. */
	{
		unsigned char tail[1 + 40];
		const char *n[] = { "incomplete stream", "record 3",
				    at(good_len(2)),
				    "length prefix says 100 bytes, but the input ends after 40", NULL };
		memset(tail, 0, sizeof(tail));
		tail[0] = 100;
		expect_finish_error(2, tail, sizeof(tail), -EBADMSG, n);
	}
	/* Wrong wire type at the top level: BuildEvent.id (a message) sent as
	 * a varint. The tag is 1 byte after the record's 1-byte prefix. */
	{
		unsigned char tail[] = { 2, 0x08, 0x05 };
		const char *n[] = { "record 2 does not decode",
				    "BuildEvent.id (field 1) has wire type 0 (varint), but the schema says length-delimited",
				    at(good_len(1) + 1), NULL };
		expect_next_error(1, tail, sizeof(tail), NULL, -EBADMSG, n);
	}
	/* Wrong wire type three levels down: ProgressId.opaque_count (int32)
	 * sent length-delimited, at record offset + 5. */
	{
		unsigned char tail[] = { 7, 0x0a, 0x05, 0x12, 0x03, 0x0a, 0x01, 0x41 };
		const char *n[] = { "record 3 does not decode",
				    "BuildEvent.id.progress.opaque_count (field 1) has wire type 2 (length-delimited), but the schema says varint",
				    at(good_len(2) + 5), NULL };
		expect_next_error(2, tail, sizeof(tail), NULL, -EBADMSG, n);
	}
	/* A nested length that runs past its enclosing message. */
	{
		unsigned char tail[] = { 6, 0x0a, 0x04, 0x12, 0x09, 0x08, 0x01 };
		const char *n[] = { "record 1 does not decode", "BuildEvent.id.progress",
				    "has length 9, which runs past the end of its enclosing message (2 bytes left)",
				    at(4), NULL };
		expect_next_error(0, tail, sizeof(tail), NULL, -EBADMSG, n);
	}
	/* A protobuf group (wire type 3) in an unknown field. */
	{
		unsigned char tail[] = { 2, 0xab, 0x06 }; /* field 101, wire type 3 */
		const char *n[] = { "record 2 does not decode", "BuildEvent.<field 101>",
				    "groups are not supported", NULL };
		expect_next_error(1, tail, sizeof(tail), NULL, -EBADMSG, n);
	}
	/* Field number 0. */
	{
		unsigned char tail[] = { 2, 0x00, 0x00 };
		const char *n[] = { "record 1 does not decode", "invalid field number 0",
				    "at byte offset 1", NULL };
		expect_next_error(0, tail, sizeof(tail), NULL, -EBADMSG, n);
	}
	/* Nesting past the cap: TestResult.execution_info.timing_breakdown
	 * and then TimingBreakdown.child 150 times. */
	{
		unsigned char msg[2048];
		size_t end = sizeof(msg), start = end, len;
		tf__buf t;
		const char *n[] = { "record 2 does not decode",
				    "BuildEvent.test_result.execution_info.timing_breakdown.child.child",
				    "nests messages deeper than the cap of 100", NULL };
		/* From the inside out: 150 x TimingBreakdown.child (1), then
		 * ExecutionInfo.timing_breakdown (4), TestResult.execution_info
		 * (8), BuildEvent.test_result (10), all length-delimited. */
		for (int i = 0; i < 150; i++)
			start = wrap(msg, start, end, 0x0a);
		start = wrap(msg, start, end, 0x22);
		start = wrap(msg, start, end, 0x42);
		start = wrap(msg, start, end, 0x52);
		len = end - start;
		tf__buf_init(&t, 1 << 20);
		add_raw_record(&t, msg + start, len);
		expect_next_error(1, t.data, t.len, NULL, -EBADMSG, n);
		tf__buf_fini(&t);
	}
	/* Anything after the last_message record. */
	{
		tf__buf t;
		tf_error err = { 0 };
		ev_reader *r;
		int n;

		tf__buf_init(&t, 1 << 20);
		good_records(&t, 2);
		add_progress(&t, 9, "last", true);
		add_progress(&t, 10, "too late", false);
		r = ev_reader_new(stream_file(t.data, t.len), NULL, &err);
		CHECK(r);
		CHECK_INT_EQ(read_all(r, &n, &err), -EBADMSG);
		CHECK_INT_EQ(n, 3);
		CHECK(ev_reader_complete(r));
		CHECK_CONTAINS(err.message, "data follows the last_message record (record 3, which ends at byte offset");
		CHECK_INT_EQ(ev_reader_finish(r, &err), -EBADMSG);
		ev_reader_free(r);
		tf__buf_fini(&t);
	}
	/* An empty file and a stream that just stops are incomplete. */
	{
		const char *n[] = { "incomplete stream: ended after record 0 at byte offset 0 without last_message",
				    NULL };
		expect_finish_error(0, "", 0, -ENODATA, n);
	}
	{
		char want[128];
		const char *n[] = { want, NULL };
		snprintf(want, sizeof(want),
			 "incomplete stream: ended after record 5 at byte offset %zu without last_message",
			 good_len(5));
		expect_finish_error(5, "", 0, -ENODATA, n);
	}
	/* Unknown fields are skipped (and kept for re-encoding): field 99
	 * (varint) and field 98 (bytes) around a normal Progress event. */
	{
		tf__buf t, rec;
		tf_error err = { 0 };
		unsigned char unknown[] = { 0x98, 0x06, 0x2a, 0x92, 0x06, 0x03, 'a', 'b', 'c' };
		const char *path;
		ev_reader *r;
		ev_event *ev;

		tf__buf_init(&t, 1 << 20);
		tf__buf_init(&rec, 1 << 20);
		add_progress(&rec, 3, "hello", true);
		/* rec = prefix + message; splice the unknown fields in front. */
		CHECK(rec.data[0] < 0x80);
		{
			unsigned char *m = malloc(rec.len - 1 + sizeof(unknown));
			CHECK(m);
			memcpy(m, unknown, sizeof(unknown));
			memcpy(m + sizeof(unknown), rec.data + 1, rec.len - 1);
			add_raw_record(&t, m, rec.len - 1 + sizeof(unknown));
			free(m);
		}
		path = stream_file(t.data, t.len);
		r = ev_reader_new(path, NULL, &err);
		CHECK(r);
		CHECK_INT_EQ(ev_reader_next(r, &ev, &err), 1);
		CHECK_INT_EQ(ev->msg->base.n_unknown_fields, 2);
		CHECK_INT_EQ(ev->msg->base.unknown_fields[0].tag, 99);
		CHECK_INT_EQ(ev->msg->base.unknown_fields[1].tag, 98);
		CHECK_INT_EQ(ev->msg->id->progress->opaque_count, 3);
		CHECK_STR_EQ(ev->msg->progress->stderr, "hello");
		CHECK(ev->msg->last_message);
		ev_event_unref(ev);
		CHECK_INT_EQ(ev_reader_next(r, &ev, &err), 0);
		CHECK_INT_EQ(ev_reader_finish(r, &err), 0);
		ev_reader_free(r);
		tf__buf_fini(&t);
		tf__buf_fini(&rec);
	}
	/* ev_reader_finish with records still unread is the caller's mistake,
	 * not the stream's: it says so, and the records are still there. */
	{
		tf__buf t;
		tf_error err = { 0 };
		ev_reader *r;
		int n;

		tf__buf_init(&t, 1 << 20);
		good_records(&t, 2);
		add_progress(&t, 2, "end", true);
		r = ev_reader_new(stream_file(t.data, t.len), NULL, &err);
		CHECK(r);
		CHECK_INT_EQ(ev_reader_finish(r, &err), -EINVAL);
		CHECK_CONTAINS(err.message, "record 1 is still unread");
		CHECK_INT_EQ(read_all(r, &n, &err), 0);
		CHECK_INT_EQ(n, 3);
		CHECK_INT_EQ(ev_reader_finish(r, &err), 0);
		ev_reader_free(r);
		tf__buf_fini(&t);
	}
	/* A missing file. */
	{
		tf_error err = { 0 };
		char path[4200];
		snprintf(path, sizeof(path), "%s/missing.bin", dir);
		CHECK(ev_reader_new(path, NULL, &err) == NULL);
		CHECK_INT_EQ(err.code, -ENOENT);
		CHECK_CONTAINS(err.message, path);
	}
	damaged_copies();
	rm_tree(dir);
	return 0;
}
