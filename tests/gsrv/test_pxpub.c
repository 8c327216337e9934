/* The proxy's shared PUB socket (proxy/pub.c) with real NN_SUB subscribers
 * in the same process:
 *  - every message is the invocation id, one space, then the event's bytes
 *    unchanged; a followed BEP's messages carry the uuid of its last
 *    BuildStarted (and an empty id before any);
 *  - a subscriber of "<id> " gets that build's messages only, in order;
 *  - events published from several threads at once all arrive, each whole;
 *  - a URL that cannot be bound is refused with the URL in the message. */
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"
#include "tf_test.h"

static int subscribe(const char *url, const char *topic)
{
	int s = nn_socket(AF_SP, NN_SUB), ms = 10000;

	CHECK(s >= 0);
	CHECK(nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, topic, strlen(topic)) == 0);
	CHECK(nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof(ms)) == 0);
	CHECK(nn_connect(s, url) >= 0);
	/* nanomsg connects in the background; a PUB drops what it sends before. */
	for (int waited = 0; nn_get_statistic(s, NN_STAT_CURRENT_CONNECTIONS) < 1; waited++) {
		CHECK(waited < 10000);
		nanosleep(&(struct timespec){ .tv_nsec = 1000000L }, NULL);
	}
	return s;
}

/* The next message is exactly want (len bytes). */
static void want(int s, const void *w, size_t len)
{
	void *m = NULL;
	int n = nn_recv(s, &m, NN_MSG, 0);

	CHECK(n >= 0);
	CHECK_INT_EQ(n, len);
	CHECK(memcmp(m, w, len) == 0);
	nn_freemsg(m);
}

static char url[256], dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tf-pxpub.XXXXXX");
	CHECK(mkdtemp(dir));
	snprintf(url, sizeof(url), "ipc://%s/bep.ipc", dir);
}

static void teardown(void)
{
	unlink(url + strlen("ipc://"));
	rmdir(dir);
}

/* A BuildEvent with only BuildStarted { uuid } (BuildEvent.started = 5). */
static size_t started(uint8_t *b, const char *uuid)
{
	size_t n = strlen(uuid);

	b[0] = 0x2a;
	b[1] = (uint8_t)(n + 2);
	b[2] = 0x0a;
	b[3] = (uint8_t)n;
	memcpy(b + 4, uuid, n);
	return n + 4;
}

TEST(topics_name_each_build)
{
	static const uint8_t progress[] = { 0x0a, 0x02, 0x0a, 0x00, 0x1a, 0x00 }; /* id { progress {} } progress {} */
	uint8_t st[64], exp[128];
	size_t sl, el;
	px_pub *p;
	tf_error err = { 0 };
	int all, one;

	setup();
	CHECK((p = px_pub_new(url, NULL, NULL, &err)) != NULL);
	all = subscribe(url, "");
	one = subscribe(url, "a4f8-1 ");

	/* Before any BuildStarted: an empty id. */
	px_pub_followed(p, progress, sizeof(progress));
	exp[0] = ' ';
	memcpy(exp + 1, progress, sizeof(progress));
	want(all, exp, 1 + sizeof(progress));

	sl = started(st, "a4f8-1");
	px_pub_followed(p, st, sl);
	px_pub_event(p, "a4f8-10", progress, sizeof(progress)); /* a longer id with the same start */
	px_pub_followed(p, progress, sizeof(progress));
	px_pub_event(p, "bes-2", progress, sizeof(progress));
	px_pub_event(p, "a4f8-1", st, sl); /* a BES invocation of the same id reads alike */

	el = (size_t)snprintf((char *)exp, sizeof(exp), "a4f8-1 ");
	memcpy(exp + el, st, sl);
	want(all, exp, el + sl);
	want(one, exp, el + sl);
	el = (size_t)snprintf((char *)exp, sizeof(exp), "a4f8-10 ");
	memcpy(exp + el, progress, sizeof(progress));
	want(all, exp, el + sizeof(progress));
	el = (size_t)snprintf((char *)exp, sizeof(exp), "a4f8-1 ");
	memcpy(exp + el, progress, sizeof(progress));
	want(all, exp, el + sizeof(progress));
	want(one, exp, el + sizeof(progress)); /* not a4f8-10's, nor bes-2's */
	el = (size_t)snprintf((char *)exp, sizeof(exp), "bes-2 ");
	memcpy(exp + el, progress, sizeof(progress));
	want(all, exp, el + sizeof(progress));
	el = (size_t)snprintf((char *)exp, sizeof(exp), "a4f8-1 ");
	memcpy(exp + el, st, sl);
	want(all, exp, el + sl);
	want(one, exp, el + sl);

	nn_close(all);
	nn_close(one);
	px_pub_free(p);
	teardown();
}

#define THREADS 4
#define PER_THREAD 200

static px_pub *shared;

static void *publisher(void *arg)
{
	char id[16];
	uint8_t ev[8];

	snprintf(id, sizeof(id), "t%d", (int)(intptr_t)arg);
	for (uint32_t i = 0; i < PER_THREAD; i++) {
		memcpy(ev, "seq:", 4);
		memcpy(ev + 4, &i, 4);
		px_pub_event(shared, id, ev, sizeof(ev));
	}
	return NULL;
}

TEST(threads_publish_at_once)
{
	pthread_t t[THREADS];
	uint32_t next[THREADS] = { 0 };
	tf_error err = { 0 };
	int s;

	setup();
	CHECK((shared = px_pub_new(url, NULL, NULL, &err)) != NULL);
	s = subscribe(url, "");
	for (int i = 0; i < THREADS; i++)
		CHECK(pthread_create(&t[i], NULL, publisher, (void *)(intptr_t)i) == 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	/* 800 small messages stay far below the subscriber's buffer: none dropped. */
	for (int k = 0; k < THREADS * PER_THREAD; k++) {
		char *m = NULL;
		uint32_t seq;
		int n = nn_recv(s, &m, NN_MSG, 0), th;

		CHECK_INT_EQ(n, 3 + 8);
		CHECK(m[0] == 't' && m[2] == ' ' && !memcmp(m + 3, "seq:", 4));
		th = m[1] - '0';
		CHECK(th >= 0 && th < THREADS);
		memcpy(&seq, m + 7, 4);
		CHECK_INT_EQ(seq, next[th]); /* each thread's in its order */
		next[th]++;
		nn_freemsg(m);
	}
	nn_close(s);
	px_pub_free(shared);
	teardown();
}

TEST(bad_url_refused)
{
	tf_error err = { 0 };

	/* (A URL nanomsg refuses before it allocates: its ipc transport leaks
	 * what a failed bind allocated.) */
	CHECK(px_pub_new("bogus://nowhere", NULL, NULL, &err) == NULL);
	CHECK(err.code < 0);
	CHECK_CONTAINS(err.message, "bogus://nowhere: cannot bind the PUB socket");
}
