/* The binary and JSON writers.
 *  - Binary round trip: what we read from each real Bazel file, written
 *    again, is byte for byte that file — including the BuildMetrics event,
 *    whose payload (field 24) our schema leaves out and protobuf-c carries
 *    as an unknown field.
 *  - The limit of that claim: protobuf-c writes unknown fields after the
 *    known ones, so an unknown field that came before a known one moves (the
 *    message stays equal, the bytes do not). Bazel writes fields in number
 *    order and our unknown fields are the highest-numbered, so its files
 *    are not affected.
 *  - JSON writer: one line per event, equal to ev_json_append's text.
 *  - Write errors (/dev/full, a pipe nobody reads) are reported naming the
 *    output, and stay reported; buffering flushes past 64 KiB. */
#include <signal.h>

#include "ev_test_util.h"

static char *dir;

static void roundtrip(const char *run)
{
	char bin[4200], json[4200];
	size_t len, jlen;
	unsigned char *orig = slurp(fixture(run, "bep.bin"), &len), *again, *jtext;
	tf_error err = { 0 };
	ev_writer *wb, *wj;
	ev_reader *r;
	ev_event *ev;
	tf__buf expect_json;
	int rc, metrics = 0;

	snprintf(bin, sizeof(bin), "%s/%s.bin", dir, run);
	snprintf(json, sizeof(json), "%s/%s.json", dir, run);
	r = ev_reader_new(fixture(run, "bep.bin"), NULL, &err);
	wb = ev_writer_new(bin, EV_FORMAT_BINARY, &err);
	wj = ev_writer_new(json, EV_FORMAT_JSON, &err);
	CHECK(r && wb && wj);
	tf__buf_init(&expect_json, 1 << 24);
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		const BuildEventStream__BuildEvent *m = ev->msg;
		CHECK(ev_writer_write(wb, m, &err) == 0);
		CHECK(ev_writer_write(wj, m, &err) == 0);
		CHECK(ev_json_append(&expect_json, &m->base, &err) == 0);
		CHECK(tf__buf_append(&expect_json, "\n", 1) == 0);
		if (m->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_METRICS) {
			/* The payload we do not declare is kept, unparsed. */
			metrics++;
			CHECK_INT_EQ(m->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD__NOT_SET);
			CHECK_INT_EQ(m->base.n_unknown_fields, 1);
			CHECK_INT_EQ(m->base.unknown_fields[0].tag, 24);
			CHECK_INT_EQ(m->base.unknown_fields[0].wire_type, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
			CHECK(m->base.unknown_fields[0].len > 20);
		} else {
			CHECK_INT_EQ(m->base.n_unknown_fields, 0);
		}
		ev_event_unref(ev);
	}
	CHECK_INT_EQ(rc, 0);
	CHECK_INT_EQ(metrics, 1);
	CHECK_INT_EQ(ev_reader_finish(r, &err), 0);
	CHECK_INT_EQ(ev_writer_close(wb, &err), 0);
	CHECK_INT_EQ(ev_writer_close(wj, &err), 0);
	CHECK_INT_EQ(ev_writer_bytes(wb), len);
	again = slurp(bin, &len);
	{
		size_t olen;
		free(orig);
		orig = slurp(fixture(run, "bep.bin"), &olen);
		CHECK_INT_EQ(len, olen);
		CHECK(memcmp(orig, again, len) == 0);
	}
	jtext = slurp(json, &jlen);
	CHECK_INT_EQ(jlen, expect_json.len);
	CHECK(memcmp(jtext, expect_json.data, jlen) == 0);
	CHECK_INT_EQ(ev_writer_bytes(wj), jlen);
	ev_writer_free(wb);
	ev_writer_free(wj);
	ev_reader_free(r);
	tf__buf_fini(&expect_json);
	free(orig);
	free(again);
	free(jtext);
}

static void unknown_field_order(void)
{
	/* BuildEvent: unknown field 24 (4 bytes) first, then id (1) with an
	 * empty BuildStartedId (3), then last_message (20). */
	static const uint8_t in[] = { 0xc2, 0x01, 0x04, 0x0a, 0x02, 0x08, 0x01,
				      0x0a, 0x02, 0x1a, 0x00, 0xa0, 0x01, 0x01 };
	static const uint8_t moved[] = { 0x0a, 0x02, 0x1a, 0x00, 0xa0, 0x01, 0x01,
					 0xc2, 0x01, 0x04, 0x0a, 0x02, 0x08, 0x01 };
	tf_error err = { 0 };
	ev_event *a, *b;
	uint8_t out[64];
	size_t n;

	CHECK(ev_event_decode(in, sizeof(in), 0, "unknown-first", 1, 0, &a, &err) == 0);
	CHECK_INT_EQ(a->msg->base.n_unknown_fields, 1);
	CHECK_INT_EQ(a->msg->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED);
	CHECK(a->msg->last_message);
	n = protobuf_c_message_pack(&a->msg->base, out);
	CHECK_INT_EQ(n, sizeof(in));
	CHECK(memcmp(out, in, n) != 0);
	CHECK(memcmp(out, moved, n) == 0);
	/* Same message: decoding the new bytes gives the same fields. */
	CHECK(ev_event_decode(out, n, 0, "moved", 1, 0, &b, &err) == 0);
	CHECK_INT_EQ(b->msg->base.n_unknown_fields, 1);
	CHECK_INT_EQ(b->msg->base.unknown_fields[0].tag, 24);
	/* protobuf-c keeps the bytes after the tag: length prefix + data. */
	CHECK_INT_EQ(a->msg->base.unknown_fields[0].len, 5);
	CHECK_INT_EQ(b->msg->base.unknown_fields[0].len, 5);
	CHECK(memcmp(b->msg->base.unknown_fields[0].data, in + 2, 5) == 0);
	CHECK(b->msg->last_message);
	ev_event_unref(a);
	ev_event_unref(b);
}

/* Events to write: the 45 of run 1, kept. */
static ev_event *events[64];
static size_t n_events;

static void load_events(void)
{
	tf_error err = { 0 };
	ev_reader *r = ev_reader_new(fixture("run1_populate", "bep.bin"), NULL, &err);
	ev_event *ev;

	CHECK(r);
	while (ev_reader_next(r, &ev, &err) == 1)
		events[n_events++] = ev;
	CHECK_INT_EQ(n_events, 45);
	ev_reader_free(r);
}

static void write_errors(void)
{
	tf_error err = { 0 };
	ev_writer *w;
	int fds[2], rc;
	char path[4200];

	/* /dev/full: the events fit the buffer; the flush at close fails. */
	w = ev_writer_new("/dev/full", EV_FORMAT_JSON, &err);
	CHECK(w);
	for (size_t i = 0; i < n_events; i++)
		CHECK_INT_EQ(ev_writer_write(w, events[i]->msg, &err), 0);
	CHECK_INT_EQ(ev_writer_close(w, &err), -ENOSPC);
	CHECK_CONTAINS(err.message, "/dev/full: write failed after 0 bytes");
	CHECK_CONTAINS(err.message, strerror(ENOSPC));
	/* Final. */
	memset(&err, 0, sizeof(err));
	CHECK_INT_EQ(ev_writer_write(w, events[0]->msg, &err), -ENOSPC);
	CHECK_CONTAINS(err.message, "/dev/full");
	CHECK_INT_EQ(ev_writer_flush(w, &err), -ENOSPC);
	ev_writer_free(w);

	/* A pipe whose reader is gone: EPIPE once the buffer passes 64 KiB,
	 * during a write (not only at close). */
	signal(SIGPIPE, SIG_IGN);
	CHECK(pipe(fds) == 0);
	close(fds[0]);
	w = ev_writer_new_fd(fds[1], "the pipe", EV_FORMAT_BINARY, &err);
	CHECK(w);
	rc = 0;
	for (int round = 0; round < 10 && rc == 0; round++)
		for (size_t i = 0; i < n_events && rc == 0; i++)
			rc = ev_writer_write(w, events[i]->msg, &err);
	CHECK_INT_EQ(rc, -EPIPE);
	CHECK_CONTAINS(err.message, "the pipe: write failed after 0 bytes");
	CHECK_INT_EQ(ev_writer_close(w, &err), -EPIPE);
	ev_writer_free(w);
	close(fds[1]);

	/* Past 64 KiB the data goes out before close. */
	snprintf(path, sizeof(path), "%s/flush.bin", dir);
	w = ev_writer_new(path, EV_FORMAT_BINARY, &err);
	CHECK(w);
	for (int round = 0; round < 4; round++)
		for (size_t i = 0; i < n_events; i++)
			CHECK_INT_EQ(ev_writer_write(w, events[i]->msg, &err), 0);
	{
		struct stat st;
		CHECK(stat(path, &st) == 0);
		CHECK(st.st_size >= 65536);
		CHECK_INT_EQ((uint64_t)st.st_size, ev_writer_bytes(w));
	}
	CHECK_INT_EQ(ev_writer_close(w, &err), 0);
	ev_writer_free(w);

	/* A folder that does not exist. */
	snprintf(path, sizeof(path), "%s/no/such/dir/out.json", dir);
	CHECK(ev_writer_new(path, EV_FORMAT_JSON, &err) == NULL);
	CHECK_INT_EQ(err.code, -ENOENT);
	CHECK_CONTAINS(err.message, path);
	CHECK_CONTAINS(err.message, "cannot create the BEP JSON file");
}

int main(void)
{
	dir = make_tmpdir();
	for (int i = 0; i < EV_N_RUNS; i++)
		roundtrip(ev_runs[i]);
	unknown_field_order();
	load_events();
	write_errors();
	for (size_t i = 0; i < n_events; i++)
		ev_event_unref(events[i]);
	rm_tree(dir);
	return 0;
}
