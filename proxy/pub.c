/* The proxy's one PUB socket (--build_event_publish), shared by its own
 * session (the followed BEP) and every BES invocation's session.
 *
 * A PUB socket can be bound once, and several builds publish on it at the
 * same time, so each message names its build: the invocation id, one space,
 * then the serialized BuildEvent. nanomsg's SUB filters on a message's
 * prefix, so a subscriber that wants one build subscribes to "<id> ". The
 * id of a followed build is its BuildStarted uuid, learnt from the stream
 * (Bazel's BES invocation id is the same uuid, so a build reads alike both
 * ways). Sending never waits (events/pub.c), and may come from any thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"
#include "proto/wire.h"
#include "proxy/proxy.h"

struct px_pub {
	ev_pub *sock;
	void (*on_problem)(const char *message, void *user);
	void *user;
	pthread_mutex_t mu;
	bool said;                       /* a send failed and was reported (once) */
	char followed[PX_BES_ID_MAX + 1]; /* the followed build's id; "" before its BuildStarted */
};

px_pub *px_pub_new(const char *url, void (*on_problem)(const char *message, void *user), void *user,
		   tf_error *err)
{
	px_pub *p = calloc(1, sizeof(*p));

	if (!p) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	p->on_problem = on_problem;
	p->user = user;
	if (!(p->sock = ev_pub_new(url, NULL, err))) {
		px_pub_free(p);
		return NULL;
	}
	return p;
}

void px_pub_free(px_pub *p)
{
	if (!p)
		return;
	ev_pub_free(p->sock);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static void send_topic(px_pub *p, const char *topic, size_t tlen, const void *event, size_t len)
{
	tf_error err = { 0 };
	char msg[TF_ERROR_MESSAGE_MAX + 128];
	bool say;

	if (ev_pub_send_bytes(p->sock, topic, tlen, event, len, &err) == 0)
		return;
	pthread_mutex_lock(&p->mu);
	say = !p->said;
	p->said = true;
	pthread_mutex_unlock(&p->mu);
	if (say && p->on_problem) {
		snprintf(msg, sizeof(msg), "topfetch proxy: --build_event_publish: %s (said once; later failures are not)",
			 err.message);
		p->on_problem(msg, p->user);
	}
}

void px_pub_event(px_pub *p, const char *id, const void *event, size_t len)
{
	char topic[PX_BES_ID_MAX + 2];
	size_t n = strlen(id);

	if (n > PX_BES_ID_MAX)
		n = PX_BES_ID_MAX;
	memcpy(topic, id, n);
	topic[n++] = ' ';
	send_topic(p, topic, n, event, len);
}

/* A BuildStarted event's uuid (BuildEvent.started = 5, BuildStarted.uuid = 1),
 * or 0. */
static int started_uuid(const uint8_t *ev, size_t len, const uint8_t **uuid, size_t *ulen)
{
	size_t pos = 0, ipos = 0;
	pw_field f, g;

	while (pw_next(ev, len, &pos, &f, NULL) == 1) {
		if (f.number != 5 || f.wire_type != PW_LEN)
			continue;
		while (pw_next(f.data, (size_t)f.value, &ipos, &g, NULL) == 1)
			if (g.number == 1 && g.wire_type == PW_LEN) {
				*uuid = g.data;
				*ulen = (size_t)g.value;
				return 1;
			}
		return 0;
	}
	return 0;
}

void px_pub_followed(px_pub *p, const void *event, size_t len)
{
	const uint8_t *uuid;
	size_t ulen;

	if (started_uuid(event, len, &uuid, &ulen) == 1) {
		/* A uuid that is no usable id (Bazel's never is one) names no build. */
		bool ok = px_bes_id_ok((const char *)uuid, ulen);
		if (ok)
			memcpy(p->followed, uuid, ulen);
		p->followed[ok ? ulen : 0] = '\0';
	}
	/* Events before a BuildStarted (none in a stream Bazel wrote) go out
	 * with an empty id: the message starts with the space. */
	if (p->followed[0])
		px_pub_event(p, p->followed, event, len);
	else
		send_topic(p, " ", 1, event, len);
}
