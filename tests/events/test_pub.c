/* The nanomsg PUB sink with a real NN_SUB subscriber in the same process:
 *  - the 45 events of a real stream arrive in order, each message exactly
 *    the serialized BuildEvent (and an empty event as an empty message);
 *  - a subscriber that never reads does not block the publisher: 20,000
 *    events (about 10 MiB) are published at once, the subscriber later finds
 *    fewer (nanomsg dropped the rest for it), still in increasing order;
 *  - an event over the size cap and a bad URL are refused with clear
 *    errors. */
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>

#include "ev_test_util.h"

static char *dir;

static int subscriber(const char *url, int timeout_ms)
{
	int s = nn_socket(AF_SP, NN_SUB);

	CHECK(s >= 0);
	CHECK(nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, "", 0) == 0);
	CHECK(nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout_ms, sizeof(timeout_ms)) == 0);
	CHECK(nn_connect(s, url) >= 0);
	return s;
}

static void progress_event(BuildEventStream__BuildEvent *ev, BuildEventStream__BuildEventId *id,
			   BuildEventStream__BuildEventId__ProgressId *pid,
			   BuildEventStream__Progress *pr, int count, const char *text)
{
	build_event_stream__build_event__init(ev);
	build_event_stream__build_event_id__init(id);
	build_event_stream__build_event_id__progress_id__init(pid);
	build_event_stream__progress__init(pr);
	pid->opaque_count = count;
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
	id->progress = pid;
	pr->stderr = (char *)text;
	ev->id = id;
	ev->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS;
	ev->progress = pr;
}

/* Connecting is asynchronous and PUB drops for a pipe not yet there:
 * publish probes (opaque_count -1) until one arrives, then drain. */
static void wait_connected(ev_pub *p, int sub)
{
	BuildEventStream__BuildEvent ev;
	BuildEventStream__BuildEventId id;
	BuildEventStream__BuildEventId__ProgressId pid;
	BuildEventStream__Progress pr;
	tf_error err = { 0 };
	void *msg;
	int got = -1;

	progress_event(&ev, &id, &pid, &pr, -1, "probe");
	for (int i = 0; i < 100 && got < 0; i++) {
		CHECK_INT_EQ(ev_pub_send(p, &ev, &err), 0);
		got = nn_recv(sub, &msg, NN_MSG, 0);
		if (got >= 0)
			nn_freemsg(msg);
	}
	CHECK(got >= 0);
	while (nn_recv(sub, &msg, NN_MSG, 0) >= 0)
		nn_freemsg(msg);
}

static void test_in_order(void)
{
	char url[4200];
	tf_error err = { 0 };
	ev_event *events[64];
	size_t n = 0;
	ev_reader *r;
	ev_pub *p;
	ev_pub_stats st, before;
	int sub;

	snprintf(url, sizeof(url), "ipc://%s/bep.ipc", dir);
	p = ev_pub_new(url, NULL, &err);
	if (!p)
		fprintf(stderr, "%s\n", err.message);
	CHECK(p);
	sub = subscriber(url, 200);
	wait_connected(p, sub);
	ev_pub_get_stats(p, &before);

	r = ev_reader_new(fixture("run1_populate", "bep.bin"), NULL, &err);
	CHECK(r);
	while (ev_reader_next(r, &events[n], &err) == 1)
		n++;
	CHECK_INT_EQ(n, 45);
	for (size_t i = 0; i < n; i++)
		CHECK_INT_EQ(ev_pub_send(p, events[i]->msg, &err), 0);
	/* An empty BuildEvent is an empty message. */
	{
		BuildEventStream__BuildEvent empty = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
		CHECK_INT_EQ(ev_pub_send(p, &empty, &err), 0);
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t want[65536];
		size_t wlen = protobuf_c_message_pack(&events[i]->msg->base, want);
		void *msg;
		int got = nn_recv(sub, &msg, NN_MSG, 0);
		CHECK(got >= 0);
		CHECK_INT_EQ(got, wlen);
		CHECK_INT_EQ(wlen, events[i]->size);
		CHECK(memcmp(msg, want, wlen) == 0);
		nn_freemsg(msg);
	}
	{
		void *msg;
		CHECK_INT_EQ(nn_recv(sub, &msg, NN_MSG, 0), 0);
		nn_freemsg(msg);
	}
	ev_pub_get_stats(p, &st);
	CHECK_INT_EQ(st.sent - before.sent, 46);
	CHECK_INT_EQ(st.dropped, 0);
	/* Over the cap: refused, nothing sent. */
	{
		ev_pub_options o;
		ev_pub *small;
		char url2[4200];
		snprintf(url2, sizeof(url2), "ipc://%s/small.ipc", dir);
		ev_pub_options_init(&o);
		o.max_message_size = 100;
		small = ev_pub_new(url2, &o, &err);
		CHECK(small);
		CHECK_INT_EQ(ev_pub_send(small, events[0]->msg, &err), -EMSGSIZE);
		CHECK_CONTAINS(err.message, url2);
		CHECK_CONTAINS(err.message, "over the cap of 100 bytes");
		ev_pub_free(small);
	}
	for (size_t i = 0; i < n; i++)
		ev_event_unref(events[i]);
	ev_reader_free(r);
	nn_close(sub);
	ev_pub_free(p);
}

static void test_slow_subscriber(void)
{
	enum { N = 20000 };
	static char text[500];
	char url[4200];
	tf_error err = { 0 };
	ev_pub_options o;
	ev_pub_stats st;
	ev_pub *p;
	uint64_t t0, took;
	int sub, received = 0, last = -1;

	memset(text, 'x', sizeof(text) - 1);
	snprintf(url, sizeof(url), "ipc://%s/slow.ipc", dir);
	ev_pub_options_init(&o);
	o.sndbuf = 8192;
	p = ev_pub_new(url, &o, &err);
	CHECK(p);
	sub = subscriber(url, 300);
	wait_connected(p, sub);
	/* The subscriber now stops reading while ~10 MiB go out. */
	t0 = tf__now_ns();
	for (int i = 0; i < N; i++) {
		BuildEventStream__BuildEvent ev;
		BuildEventStream__BuildEventId id;
		BuildEventStream__BuildEventId__ProgressId pid;
		BuildEventStream__Progress pr;
		progress_event(&ev, &id, &pid, &pr, i, text);
		CHECK_INT_EQ(ev_pub_send(p, &ev, &err), 0);
	}
	took = tf__now_ns() - t0;
	/* Never waited for the subscriber: a few microseconds per event. */
	CHECK(took < 5ull * 1000000000ull);
	ev_pub_get_stats(p, &st);
	CHECK(st.sent + st.dropped >= N);
	/* What reached the subscriber is a subsequence, in order. */
	for (;;) {
		void *msg;
		BuildEventStream__BuildEvent *ev;
		int got = nn_recv(sub, &msg, NN_MSG, 0);
		if (got < 0)
			break;
		ev = build_event_stream__build_event__unpack(NULL, (size_t)got, msg);
		CHECK(ev && ev->id && ev->id->progress);
		CHECK(ev->id->progress->opaque_count > last);
		last = ev->id->progress->opaque_count;
		build_event_stream__build_event__free_unpacked(ev, NULL);
		nn_freemsg(msg);
		received++;
	}
	CHECK(received > 0);
	CHECK(received < N);
	nn_close(sub);
	ev_pub_free(p);
}

static void test_bad_url(void)
{
	tf_error err = { 0 };

	CHECK(ev_pub_new("bogus://nowhere", NULL, &err) == NULL);
	CHECK(err.code < 0);
	CHECK_CONTAINS(err.message, "bogus://nowhere: cannot bind the PUB socket");
	ev_pub_free(NULL);
}

int main(void)
{
	dir = make_tmpdir();
	test_in_order();
	test_slow_subscriber();
	test_bad_url();
	rm_tree(dir);
	return 0;
}
