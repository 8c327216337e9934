/* Build Event Service invocations as sessions: the events Bazel streams to
 * the gRPC front end (google.devtools.build.v1.PublishBuildEvent), one
 * tf_session per invocation, fed in sequence order.
 *
 * Threads: call threads post events (px_bes_post) into a FIFO with a byte
 * cap and return once the event is queued (so it can be acknowledged); the
 * thread that owns the sessions (the proxy's session thread) takes them in
 * px_bes_run, makes an invocation's session at its first event, feeds it,
 * dispatches every open session and ends those whose stream finished once
 * their fetches settled. Sequence numbers are checked at post time under
 * the mutex, so a retried stream's repeated events are acknowledged again
 * but fed once, and a gap is refused.
 *
 * Each invocation's session gets its own copy of the callbacks' user (its
 * inv), so its gated events reach the shared PUB socket named by its id; the
 * other callbacks are passed on with the proxy's user. An invocation with no
 * stream open that sent nothing for idle_timeout (counted from its last
 * event or the close of its last stream) is ended as if its stream had
 * finished, and its id refused from then on. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/core.h"
#include "downloader/downloader.h"
#include "proxy/proxy.h"

#define QUEUE_MAX_BYTES ((size_t)64 << 20) /* events posted, not yet fed */
#define INVOCATIONS_MAX 65536              /* remembered invocations (their sequence numbers) */

typedef struct inv {
	char id[PX_BES_ID_MAX + 1];
	struct px_bes *b;
	int64_t last;     /* highest sequence number accepted (mutex) */
	uint64_t seen_ns; /* when its last event came or its last stream closed (mutex) */
	int streams;      /* its streams open now (mutex) */
	bool cut;         /* ended for being idle: its events are refused (mutex) */
	tf_session *s;    /* session thread only */
	bool finished;    /* the stream said component_stream_finished (session thread) */
	bool ended;       /* its session ended (session thread) */
	bool failed;      /* no session could be made: events are dropped (session thread) */
} inv;

typedef struct item {
	struct item *next;
	inv *v;
	bool finished;
	size_t len;
	unsigned char data[]; /* a serialized build_event_stream.BuildEvent */
} item;

struct px_bes {
	tf_session_options tmpl; /* its callbacks get tmpl_user */
	void *tmpl_user;
	px_pub *pub;
	uint64_t idle_ns; /* 0: never */
	char *dir;
	void (*on_done)(const char *invocation, const tf_session_stats *st, int status, const char *why, void *user);
	void (*on_problem)(const char *message, void *user);
	void *user;
	int evfd;
	int wfd; /* px_bes_fd: epoll of evfd and every open session's tf_session_fd */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* queue room */
	item *head, *tail;
	size_t queued;
	bool closed;
	tf__map invs; /* id -> inv (mutex for the map and inv.last) */
	inv **list;   /* every invocation, in order of arrival (session thread reads a copy of n) */
	size_t n, cap;
};

static void problem(px_bes *b, const char *fmt, ...) TF__PRINTF(2, 3);

static void problem(px_bes *b, const char *fmt, ...)
{
	char msg[PX_MESSAGE_MAX + 256];
	va_list ap;

	if (!b->on_problem)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	b->on_problem(msg, b->user);
}

px_bes *px_bes_new(const px_bes_options *o, tf_error *err)
{
	px_bes *b = calloc(1, sizeof(*b));

	if (!b) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	b->tmpl = *o->session;
	b->tmpl_user = o->session->user;
	b->pub = o->pub;
	b->idle_ns = o->idle_timeout_ms > 0 ? (uint64_t)o->idle_timeout_ms * 1000000u : 0;
	/* Each invocation's own sinks; the followed BEP's are not its. A PUB
	 * socket can be bound once (the shared one is pub), and a --store is
	 * held by one session. */
	b->tmpl.build_event_binary_file = NULL;
	b->tmpl.build_event_json_file = NULL;
	b->tmpl.build_event_publish = NULL;
	b->tmpl.on_event = NULL;
	b->tmpl.build_event_dir = NULL;
	b->tmpl.store_path = NULL;
	b->tmpl.on_build_done = NULL;
	b->dir = o->build_event_dir ? strdup(o->build_event_dir) : NULL;
	b->evfd = b->wfd = -1;
	b->on_done = o->on_done;
	b->on_problem = o->on_problem;
	b->user = o->user;
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	tf__map_init(&b->invs);
	if (b->dir) {
		int e = dl_mkdirs(b->dir);
		if (e < 0) {
			tf__errf(err, e, "--build_event_dir=%s: cannot make the folder: %s", b->dir, strerror(-e));
			px_bes_free(b);
			return NULL;
		}
	}
	if (o->build_event_dir && !b->dir) {
		tf__errf(err, -ENOMEM, "cannot make the BES receiver: out of memory");
		px_bes_free(b);
		return NULL;
	}
	b->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	b->wfd = epoll_create1(EPOLL_CLOEXEC);
	if (b->evfd < 0 || b->wfd < 0 ||
	    epoll_ctl(b->wfd, EPOLL_CTL_ADD, b->evfd, &(struct epoll_event){ .events = EPOLLIN }) < 0) {
		tf__errf(err, -errno, "cannot make the BES receiver: %s", strerror(errno));
		px_bes_free(b);
		return NULL;
	}
	return b;
}

void px_bes_free(px_bes *b)
{
	item *it, *next;

	if (!b)
		return;
	for (it = b->head; it; it = next) {
		next = it->next;
		free(it);
	}
	for (size_t i = 0; i < b->n; i++) {
		tf_session_free(b->list[i]->s);
		free(b->list[i]);
	}
	free(b->list);
	tf__map_fini(&b->invs);
	if (b->evfd >= 0)
		close(b->evfd);
	if (b->wfd >= 0)
		close(b->wfd);
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	free(b->dir);
	free(b);
}

int px_bes_fd(const px_bes *b)
{
	return b->wfd;
}

bool px_bes_id_ok(const char *id, size_t len)
{
	if (len == 0 || len > PX_BES_ID_MAX || id[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= '0' && id[i] <= '9') ||
		      id[i] == '-' || id[i] == '_' || id[i] == '.'))
			return false;
	return true;
}

int px_bes_post(px_bes *b, const char *id, int64_t seq, const void *event, size_t len, bool finished, char *why,
		size_t n)
{
	uint64_t one = 1;
	item *it;
	inv *v;
	bool wake;

	if (!px_bes_id_ok(id, strlen(id))) {
		snprintf(why, n, "invocation id '%.80s': want 1 to %d letters, digits, '-', '_' or '.'", id, PX_BES_ID_MAX);
		return -EINVAL;
	}
	it = malloc(sizeof(*it) + len);
	if (!it) {
		snprintf(why, n, "topfetch proxy: out of memory");
		return -ENOMEM;
	}
	it->next = NULL;
	it->finished = finished;
	it->len = len;
	if (len)
		memcpy(it->data, event, len);
	pthread_mutex_lock(&b->mu);
	while (!b->closed && b->queued > 0 && b->queued + len > QUEUE_MAX_BYTES)
		pthread_cond_wait(&b->cv, &b->mu);
	if (b->closed) {
		pthread_mutex_unlock(&b->mu);
		free(it);
		snprintf(why, n, "the proxy is shutting down");
		return -ESHUTDOWN;
	}
	v = tf__map_get(&b->invs, id);
	if (!v) {
		if (b->n == b->cap && b->n < INVOCATIONS_MAX) {
			inv **nl = realloc(b->list, (b->cap ? b->cap * 2 : 16) * sizeof(*nl));
			if (nl) {
				b->list = nl;
				b->cap = b->cap ? b->cap * 2 : 16;
			}
		}
		if (b->n >= b->cap || !(v = calloc(1, sizeof(*v)))) {
			pthread_mutex_unlock(&b->mu);
			free(it);
			snprintf(why, n, "topfetch proxy: no room for another invocation (%d at most)", INVOCATIONS_MAX);
			return -ENOMEM;
		}
		snprintf(v->id, sizeof(v->id), "%s", id);
		v->b = b;
		if (tf__map_put(&b->invs, v->id, v) < 0) {
			pthread_mutex_unlock(&b->mu);
			free(v);
			free(it);
			snprintf(why, n, "topfetch proxy: out of memory");
			return -ENOMEM;
		}
		b->list[b->n++] = v;
	}
	if (v->cut) {
		pthread_mutex_unlock(&b->mu);
		free(it);
		snprintf(why, n, "invocation %s: its session was ended after %llu s without an event "
			 "(--bes_idle_timeout); start a new invocation", id, (unsigned long long)(b->idle_ns / 1000000000u));
		return -ESTALE;
	}
	v->seen_ns = tf__now_ns();
	if (seq <= v->last) { /* a retried stream sends again what was not acknowledged */
		pthread_mutex_unlock(&b->mu);
		free(it);
		return 0;
	}
	if (seq != v->last + 1) {
		int64_t last = v->last;
		pthread_mutex_unlock(&b->mu);
		free(it);
		snprintf(why, n, "invocation %s: sequence number %lld after %lld: events must come in order, from 1",
			 id, (long long)seq, (long long)last);
		return -EINVAL;
	}
	v->last = seq;
	it->v = v;
	wake = !b->head;
	if (b->tail)
		b->tail->next = it;
	else
		b->head = it;
	b->tail = it;
	b->queued += len;
	pthread_mutex_unlock(&b->mu);
	if (wake && write(b->evfd, &one, sizeof(one)) < 0) {
		/* cannot overflow; the session thread also polls */
	}
	return 1;
}

void px_bes_stream(px_bes *b, const char *id, int delta)
{
	inv *v;

	pthread_mutex_lock(&b->mu);
	if ((v = tf__map_get(&b->invs, id))) {
		v->streams += delta;
		v->seen_ns = tf__now_ns();
	}
	pthread_mutex_unlock(&b->mu);
}

void px_bes_broken(px_bes *b, const char *id, int64_t seq)
{
	problem(b, "topfetch proxy: invocation %s: its event stream broke after event %lld; the session waits for "
		   "the client to resend what was not acknowledged", id, (long long)seq);
}

void px_bes_close(px_bes *b)
{
	pthread_mutex_lock(&b->mu);
	b->closed = true;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

/* ---- the session thread ---- */

/* The i-th invocation (the list may grow under the mutex meanwhile). */
static inv *inv_at(px_bes *b, size_t i)
{
	inv *v;

	pthread_mutex_lock(&b->mu);
	v = b->list[i];
	pthread_mutex_unlock(&b->mu);
	return v;
}

/* The proxy's callbacks, with its user, for an invocation's session. */
static void inv_lost(const tf_lost_output *l, void *user)
{
	inv *v = user;
	v->b->tmpl.on_lost(l, v->b->tmpl_user);
}

static void inv_file(const tf_fetch_done *d, void *user)
{
	inv *v = user;
	v->b->tmpl.on_file(d, v->b->tmpl_user);
}

static void inv_decision(const tf_decision *d, void *user)
{
	inv *v = user;
	v->b->tmpl.on_decision(d, v->b->tmpl_user);
}

static void inv_note(const char *message, void *user)
{
	inv *v = user;
	v->b->tmpl.on_note(message, v->b->tmpl_user);
}

static void inv_target_failed(const char *label, const char *why, void *user)
{
	inv *v = user;
	v->b->tmpl.on_target_failed(label, why, v->b->tmpl_user);
}

static void inv_event(const void *event, size_t len, void *user)
{
	inv *v = user;
	px_pub_event(v->b->pub, v->id, event, len);
}

static void open_session(px_bes *b, inv *v)
{
	tf_session_options o = b->tmpl;
	char bin[4096], json[4096];
	tf_error err = { 0 };

	if (b->dir) {
		snprintf(bin, sizeof(bin), "%s/%s.bin", b->dir, v->id);
		snprintf(json, sizeof(json), "%s/%s.json", b->dir, v->id);
		o.build_event_binary_file = bin;
		o.build_event_json_file = json;
	}
	o.user = v;
	o.on_lost = b->tmpl.on_lost ? inv_lost : NULL;
	o.on_file = b->tmpl.on_file ? inv_file : NULL;
	o.on_decision = b->tmpl.on_decision ? inv_decision : NULL;
	o.on_note = b->tmpl.on_note ? inv_note : NULL;
	o.on_target_failed = b->tmpl.on_target_failed ? inv_target_failed : NULL;
	o.on_event = b->pub ? inv_event : NULL;
	v->s = tf_session_new(&o, &err);
	if (!v->s) {
		v->failed = true;
		problem(b, "topfetch proxy: invocation %s: no session: %s (its events are acknowledged and dropped)", v->id,
			err.message);
		return;
	}
	/* Its finished fetches wake the session thread (without, it would
	 * notice them at its loop's next timeout). */
	epoll_ctl(b->wfd, EPOLL_CTL_ADD, tf_session_fd(v->s), &(struct epoll_event){ .events = EPOLLIN });
}

static void idle_why(px_bes *b, const inv *v, char *why, size_t n)
{
	snprintf(why, n, "invocation %s: its event stream sent nothing for %llu s (--bes_idle_timeout) and never "
		 "finished: its session ended with what completed, and its gated BEP has no last_message", v->id,
		 (unsigned long long)(b->idle_ns / 1000000000u));
}

static void end_session(px_bes *b, inv *v)
{
	tf_session_stats st = { 0 };
	tf_error err = { 0 };
	int r = tf_session_finish(v->s, &st, &err);

	if (r == 0 && v->cut) {
		r = -ENODATA;
		idle_why(b, v, err.message, sizeof(err.message));
	}
	if (b->on_done)
		b->on_done(v->id, &st, r, r < 0 ? err.message : NULL, b->user);
	epoll_ctl(b->wfd, EPOLL_CTL_DEL, tf_session_fd(v->s), NULL);
	tf_session_free(v->s);
	v->s = NULL;
	v->ended = true;
}

/* Ends (as finished) every open invocation whose stream went quiet before
 * its end; the next event of it is refused. */
static void cut_idle(px_bes *b, size_t n)
{
	uint64_t now = tf__now_ns();

	for (size_t i = 0; i < n; i++) {
		inv *v = inv_at(b, i);
		bool quiet;

		if (v->finished || v->ended || (!v->s && !v->failed))
			continue;
		pthread_mutex_lock(&b->mu);
		quiet = v->streams == 0 && now > v->seen_ns && now - v->seen_ns > b->idle_ns;
		if (quiet)
			v->cut = true;
		pthread_mutex_unlock(&b->mu);
		if (!quiet)
			continue;
		v->finished = true;
		problem(b, "topfetch proxy: invocation %s: no event for %llu s (--bes_idle_timeout) and its stream never "
			   "finished: ending its session with what completed", v->id,
			(unsigned long long)(b->idle_ns / 1000000000u));
		if (v->failed) {
			tf_session_stats none = { 0 };
			char why[PX_MESSAGE_MAX];
			v->ended = true;
			idle_why(b, v, why, sizeof(why));
			if (b->on_done)
				b->on_done(v->id, &none, -ENODATA, why, b->user);
		}
	}
}

int px_bes_run(px_bes *b)
{
	item *list, *it, *next;
	tf_error err = { 0 };
	uint64_t x;
	size_t n, fed = 0;

	if (read(b->evfd, &x, sizeof(x)) < 0) {
		/* EAGAIN: nothing signalled; the queue is looked at anyway */
	}
	pthread_mutex_lock(&b->mu);
	list = b->head;
	b->head = b->tail = NULL;
	b->queued = 0;
	n = b->n;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	for (it = list; it; it = next) {
		inv *v = it->v;
		next = it->next;
		fed++;
		if (!v->s && !v->failed && !v->ended)
			open_session(b, v);
		if (v->s && it->len && tf_session_build_event(v->s, it->data, it->len, &err) < 0) {
			problem(b, "topfetch proxy: invocation %s: %s", v->id, err.message);
			err.message[0] = '\0';
		}
		if (it->finished)
			v->finished = true;
		if (it->finished && v->failed && !v->ended) {
			tf_session_stats none = { 0 };
			v->ended = true;
			if (b->on_done)
				b->on_done(v->id, &none, -EIO, "no session could be made for it", b->user);
		}
		free(it);
	}
	if (b->idle_ns)
		cut_idle(b, n);
	for (size_t i = 0; i < n; i++) {
		inv *v = inv_at(b, i);
		if (!v->s)
			continue;
		if (tf_session_dispatch(v->s, 0, &err) < 0) {
			problem(b, "topfetch proxy: invocation %s: %s", v->id, err.message);
			err.message[0] = '\0';
		}
		if (v->finished && tf_session_outstanding(v->s) == 0)
			end_session(b, v);
	}
	return (int)fed;
}

void px_bes_record(px_bes *b, const char *invocation, const char *key, const void *data, size_t len)
{
	tf_error err = { 0 };
	inv *v = NULL;
	size_t n;

	pthread_mutex_lock(&b->mu);
	n = b->n;
	if (invocation)
		v = tf__map_get(&b->invs, invocation);
	pthread_mutex_unlock(&b->mu);
	if (v) { /* its own session only (none once it ended) */
		if (!v->s && !v->failed && !v->ended)
			open_session(b, v); /* its first event is still queued */
		if (v->s)
			tf_session_action_executed(v->s, key, NULL, data, len, &err);
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (inv_at(b, i)->s)
			tf_session_action_executed(inv_at(b, i)->s, key, NULL, data, len, &err);
}

uint64_t px_bes_outstanding(const px_bes *b)
{
	px_bes *m = (px_bes *)b;
	uint64_t o = 0;
	size_t n;

	pthread_mutex_lock(&m->mu);
	n = m->n;
	o = m->head ? 1 : 0;
	pthread_mutex_unlock(&m->mu);
	for (size_t i = 0; i < n; i++) {
		inv *v = inv_at(m, i);
		if (v->s)
			o += tf_session_outstanding(v->s) + (v->finished ? 1 : 0);
	}
	return o;
}

void px_bes_finish(px_bes *b)
{
	size_t n;

	px_bes_close(b);
	px_bes_run(b);
	pthread_mutex_lock(&b->mu);
	n = b->n;
	pthread_mutex_unlock(&b->mu);
	for (size_t i = 0; i < n; i++)
		if (inv_at(b, i)->s)
			end_session(b, inv_at(b, i));
}
