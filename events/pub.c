/* The nanomsg PUB sink: each BuildEvent goes out as one message holding its
 * serialized bytes, for subscribers that want the stream live.
 *
 * Why no waiting anywhere: the caller is the event gate, which must never
 * stall behind a slow subscriber. nanomsg's PUB hands a message to every
 * subscriber pipe that is ready and skips the others (nn_dist_send), so a
 * subscriber that falls behind loses messages instead of slowing us down; a
 * send is also made with NN_DONTWAIT, and whatever nanomsg refuses is counted
 * as dropped. Memory is bounded by nanomsg: at most one message in flight
 * per subscriber plus the kernel socket buffer (NN_SNDBUF). */
#include "events/events_int.h"

#include <errno.h>
#include <nanomsg/nn.h>
#include <pthread.h>
#include <nanomsg/pubsub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EV_PUB_CLOSE_GRACE_MS 200

struct ev_pub {
	pthread_mutex_t mu; /* the counters: publishers may send from several threads */
	int sock;
	char *url;
	ev_pub_options o;
	ev_pub_stats stats;
};

void ev_pub_options_init(ev_pub_options *o)
{
	o->max_message_size = EV_DEFAULT_MAX_MESSAGE;
	o->sndbuf = 1 << 20;
}

/* nanomsg's own codes (ETERM, EFSM) lie above the errno range. */
static int nn_code(int e)
{
	return e > 0 && e < 4096 ? -e : -EIO;
}

ev_pub *ev_pub_new(const char *url, const ev_pub_options *opts, tf_error *err)
{
	ev_pub *p = calloc(1, sizeof(*p));
	int e;

	if (!p || !(p->url = strdup(url))) {
		free(p);
		tf__errf(err, -ENOMEM, "%s: out of memory", url);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	if (opts)
		p->o = *opts;
	else
		ev_pub_options_init(&p->o);
	if (p->o.max_message_size == 0)
		p->o.max_message_size = EV_DEFAULT_MAX_MESSAGE;
	if (p->o.sndbuf <= 0)
		p->o.sndbuf = 1 << 20;
	p->sock = nn_socket(AF_SP, NN_PUB);
	if (p->sock < 0) {
		e = nn_errno();
		tf__errf(err, nn_code(e), "%s: cannot create a nanomsg PUB socket: %s", url,
			 nn_strerror(e));
		goto fail;
	}
	if (nn_setsockopt(p->sock, NN_SOL_SOCKET, NN_SNDBUF, &p->o.sndbuf, sizeof(p->o.sndbuf)) < 0) {
		e = nn_errno();
		tf__errf(err, nn_code(e), "%s: cannot set NN_SNDBUF to %d: %s", url, p->o.sndbuf,
			 nn_strerror(e));
		goto fail;
	}
	if (nn_bind(p->sock, url) < 0) {
		e = nn_errno();
		tf__errf(err, nn_code(e), "%s: cannot bind the PUB socket: %s", url, nn_strerror(e));
		goto fail;
	}
	return p;
fail:
	ev_pub_free(p);
	return NULL;
}

static void count(ev_pub *p, bool sent, size_t size)
{
	pthread_mutex_lock(&p->mu);
	if (sent) {
		p->stats.sent++;
		p->stats.bytes += size;
	} else {
		p->stats.dropped++;
	}
	pthread_mutex_unlock(&p->mu);
}

/* Sends msg (an nn_allocmsg of size bytes; nanomsg owns it on success). */
static int send_msg(ev_pub *p, void *msg, size_t size, tf_error *err)
{
	int e;

	/* Zero-copy: on success nanomsg owns msg. nn_send is thread-safe. */
	if (nn_send(p->sock, &msg, NN_MSG, NN_DONTWAIT) >= 0) {
		count(p, true, size);
		return 0;
	}
	e = nn_errno();
	nn_freemsg(msg);
	if (e == EAGAIN || e == EINTR) {
		count(p, false, 0);
		return 0;
	}
	return tf__errf(err, nn_code(e), "%s: cannot publish: %s", p->url, nn_strerror(e));
}

static void *alloc_msg(ev_pub *p, size_t size, tf_error *err)
{
	/* nanomsg messages may be empty; its allocator wants at least a byte. */
	void *msg = nn_allocmsg(size ? size : 1, 0);

	if (!msg) {
		int e = nn_errno();
		tf__errf(err, nn_code(e), "%s: cannot allocate a %zu-byte message: %s", p->url, size, nn_strerror(e));
	}
	return msg;
}

int ev_pub_send(ev_pub *p, const BuildEventStream__BuildEvent *m, tf_error *err)
{
	size_t size = protobuf_c_message_get_packed_size(&m->base);
	void *msg;

	if (size > p->o.max_message_size)
		return tf__errf(err, -EMSGSIZE,
				"%s: a BuildEvent of %zu bytes is over the cap of %zu bytes per message",
				p->url, size, p->o.max_message_size);
	if (size == 0) { /* an empty BuildEvent is zero bytes */
		if (nn_send(p->sock, "", 0, NN_DONTWAIT) >= 0) {
			count(p, true, 0);
			return 0;
		}
		int e = nn_errno();
		if (e == EAGAIN || e == EINTR) {
			count(p, false, 0);
			return 0;
		}
		return tf__errf(err, nn_code(e), "%s: cannot publish: %s", p->url, nn_strerror(e));
	}
	if (!(msg = alloc_msg(p, size, err)))
		return err ? err->code : -ENOMEM;
	protobuf_c_message_pack(&m->base, msg);
	return send_msg(p, msg, size, err);
}

int ev_pub_send_bytes(ev_pub *p, const void *prefix, size_t plen, const void *data, size_t len, tf_error *err)
{
	size_t size = plen + len;
	unsigned char *msg;

	if (len > p->o.max_message_size || size > p->o.max_message_size)
		return tf__errf(err, -EMSGSIZE, "%s: a message of %zu bytes is over the cap of %zu bytes per message",
				p->url, size, p->o.max_message_size);
	if (!(msg = alloc_msg(p, size, err)))
		return err ? err->code : -ENOMEM;
	if (plen)
		memcpy(msg, prefix, plen);
	if (len)
		memcpy(msg + plen, data, len);
	return send_msg(p, msg, size, err);
}

void ev_pub_get_stats(const ev_pub *p, ev_pub_stats *out)
{
	pthread_mutex_lock(&((ev_pub *)p)->mu);
	*out = p->stats;
	pthread_mutex_unlock(&((ev_pub *)p)->mu);
}

void ev_pub_free(ev_pub *p)
{
	if (!p)
		return;
	/* nanomsg 1.x does not implement NN_LINGER: nn_close drops messages its
	 * I/O thread has not handed to the kernel yet (what the kernel holds is
	 * still delivered). Give that thread a moment, so that the last events
	 * of a build (last_message among them) reach the subscribers. */
	if (p->sock >= 0 && p->stats.sent > 0)
		nanosleep(&(struct timespec){ .tv_nsec = EV_PUB_CLOSE_GRACE_MS * 1000000L }, NULL);
	if (p->sock >= 0)
		nn_close(p->sock);
	pthread_mutex_destroy(&p->mu);
	free(p->url);
	free(p);
}
