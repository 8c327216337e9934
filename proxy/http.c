/* The HTTP front end: Bazel's HTTP cache protocol (GET/HEAD/PUT on
 * [/prefix]/{ac,cas}/<sha256>, as bazel-remote) over libmicrohttpd, adapted
 * to the wire-neutral core.
 *
 * One libmicrohttpd thread polls every connection (epoll) and never blocks:
 * an idle or dripping connection costs a descriptor and a few hundred bytes,
 * not a thread. A request whose headers are complete gets a worker thread
 * for the calls into the core that block (upstream, the session's thread);
 * its connection is suspended while the worker works and resumed when it is
 * done. A CAS body streams from the worker through one buffer: the worker
 * reads the next chunk once the client took the last one (back-pressure).
 *
 * Header deadline: a connection that has not finished its request headers
 * within header_timeout seconds of connecting (or of its request line, for
 * the next request on a kept-alive connection) is shut down, however many
 * bytes it trickles; libmicrohttpd's own idle timeout is reset by each byte.
 * A sweeper thread checks the connections once a second and shuts the
 * socket down (never closes it): libmicrohttpd sees the end and closes the
 * connection itself.
 *
 * An answer decided before a request body was read is given only once it is
 * read (an answer queued earlier makes libmicrohttpd close the connection). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "proxy/proxy.h"

#define MHD_BLOCK_BYTES ((size_t)128 << 10)  /* libmicrohttpd's send block */
#define MHD_MEMORY_BYTES ((size_t)128 << 10) /* per connection: headers and upload chunks */
#define WORKER_STACK_BYTES ((size_t)1 << 20)
#define STREAM_BYTES ((size_t)128 << 10)     /* a CAS body between the worker and the client */
/* Client connections: an idle one costs a descriptor, not a thread. High, so
 * that idle or dripping connections cannot lock new clients out. */
#define MAX_CONNECTIONS 16384u
#define IDLE_TIMEOUT_S 300u /* a silent client connection is closed; so is one kept alive that trickles */
#define SWEEP_NS 1000000000ull

/* Where a connection is, for the header deadline. */
typedef enum conn_phase {
	CONN_FRESH,     /* connected, no request line yet: header deadline from the connect */
	CONN_HEADERS,   /* request line seen: header deadline from it */
	CONN_BODY,      /* headers complete, the body being read (no deadline of ours) */
	CONN_BUSY,      /* the request read: being answered */
	CONN_KEPT,      /* answered, kept alive: the next request line within IDLE_TIMEOUT_S */
	CONN_CUT,       /* shut down by the sweeper; libmicrohttpd closes it */
} conn_phase;

typedef struct conn {
	struct conn *prev, *next;
	MHD_socket fd;
	conn_phase phase;
	uint64_t since; /* tf__now_ns when the phase began */
} conn;

struct px_http {
	px_proxy *p;
	struct MHD_Daemon *mhd;
	MHD_socket lfd;
	unsigned port;
	uint64_t header_ns;
	atomic_int active;
	atomic_bool draining;
	atomic_uint_fast64_t cut; /* connections shut down by the header deadline */
	pthread_mutex_t mu;       /* everything below, and every req's shared part */
	pthread_cond_t cv;        /* a req's state changed, a worker ended, a connection resumed */
	pthread_cond_t sweep_cv;  /* the sweeper's clock (CLOCK_MONOTONIC); stop */
	pthread_t sweeper;
	bool sweeper_running, stopping;
	int workers;   /* worker threads alive */
	int suspended; /* connections suspended for a worker, not yet resumed */
	conn *conns;
};

/* Who waits: a job handed to the worker, and the worker's answer. */
typedef enum job {
	JOB_NONE,
	JOB_LOOKUP, /* GET or HEAD: ask the core; a CAS GET then streams */
	JOB_DATA,   /* hand the copied upload chunk to the PUT */
	JOB_END,    /* the PUT's body is complete: its answer */
} job;

/* The MHD thread suspended the connection (or is about to) until the worker resumes it. */
typedef enum sleep_state { AWAKE, FALLING_ASLEEP, ASLEEP } sleep_state;

/* A streamed CAS body, as the worker left it. */
typedef enum stream_state { STREAM_MORE, STREAM_END, STREAM_FAILED } stream_state;

typedef struct req {
	px_http *h;
	struct MHD_Connection *c;
	px_http_head head;
	bool responded;
	bool put_ended; /* JOB_END was handed over */
	px_put *put;
	/* Shared with the worker, under h->mu. */
	int refs;       /* the MHD side until on_completed, the worker while it runs */
	bool gone;      /* on_completed: the client's side ended */
	bool has_worker;
	job job;        /* handed over, JOB_NONE once done */
	sleep_state sleep;
	/* The worker's results: written by it while job != JOB_NONE, read after. */
	px_result res;
	int64_t length;
	tf__buf body;   /* an AC hit */
	px_get *g;      /* a CAS GET */
	char *data;     /* JOB_DATA: the chunk */
	size_t data_len, data_cap;
	/* The stream: the worker fills buf when it is empty, the client drains it. */
	char *sbuf;
	size_t s_off, s_len;
	stream_state s_state;
	px_page page; /* GET /status or /metrics (status.c) */
} req;

/* ---- the request's line and headers ---------------------------------------------------- */

/* bazel-remote's rule: ^/?(.*\/)?(ac/|cas/)([a-f0-9]{64})$ */
int px_http_parse_path(const char *url, tf_area *area, char key[TF_HASH_HEX_LEN + 1])
{
	size_t n = strlen(url);
	const char *h, *a;

	if (n < TF_HASH_HEX_LEN + 3)
		return -EINVAL;
	h = url + n - TF_HASH_HEX_LEN;
	if (!tf__is_sha256_hex(h, TF_HASH_HEX_LEN))
		return -EINVAL;
	if (h - url >= 4 && !memcmp(h - 4, "cas/", 4)) {
		*area = TF_AREA_CAS;
		a = h - 4;
	} else if (!memcmp(h - 3, "ac/", 3)) {
		*area = TF_AREA_AC;
		a = h - 3;
	} else {
		return -EINVAL;
	}
	/* What comes before must be empty, "/" or end with "/". */
	if (a != url && a[-1] != '/')
		return -EINVAL;
	memcpy(key, h, TF_HASH_HEX_LEN + 1);
	return 0;
}

static void head_fail(px_http_head *hd, unsigned status, const char *fmt, ...) TF__PRINTF(3, 4);

static void head_fail(px_http_head *hd, unsigned status, const char *fmt, ...)
{
	va_list ap;

	hd->status = status;
	va_start(ap, fmt);
	vsnprintf(hd->message, sizeof(hd->message), fmt, ap);
	va_end(ap);
}

void px_http_read_head(const char *method, const char *url, const char *content_length,
		       const char *transfer_encoding, px_http_head *hd)
{
	unsigned long long n;
	char *end;

	memset(hd, 0, sizeof(*hd));
	hd->length = -1;
	/* A body of unknown end, or one not wanted: libmicrohttpd may wait for
	 * its end past the client's close, so a refusal is given before it. */
	hd->now = transfer_encoding || (content_length && strcmp(content_length, "0") != 0);
	if (!strcmp(method, MHD_HTTP_METHOD_GET))
		hd->method = 'G';
	else if (!strcmp(method, MHD_HTTP_METHOD_HEAD))
		hd->method = 'H';
	else if (!strcmp(method, MHD_HTTP_METHOD_PUT))
		hd->method = 'P';
	if (px_http_parse_path(url, &hd->area, hd->key) < 0) {
		head_fail(hd, 400, "bad path '%.200s': want [/prefix]/ac/<64 lowercase hex> or "
				   "[/prefix]/cas/<64 lowercase hex>", url);
		hd->refused = true;
		return;
	}
	if (!hd->method) {
		head_fail(hd, 405, "method %.20s not allowed: GET, HEAD or PUT\n", method);
		hd->allow = true;
		hd->refused = true;
		return;
	}
	if (hd->method != 'P') {
		if (hd->now)
			head_fail(hd, 400, "a %s carries no body", method);
		return;
	}
	hd->now = true; /* any refusal of a PUT: its body is not worth reading */
	if (!content_length) {
		head_fail(hd, 411, "a PUT needs a Content-Length");
		return;
	}
	errno = 0;
	n = strtoull(content_length, &end, 10);
	if (errno || end == content_length || *end || content_length[0] == '-' || content_length[0] == '+' ||
	    content_length[0] == ' ' || n > (unsigned long long)TF__MAX_BLOB_SIZE) {
		head_fail(hd, 400, "bad Content-Length '%.40s'", content_length);
		return;
	}
	hd->length = (int64_t)n;
}

/* ---- answers ------------------------------------------------------------------------------ */

static unsigned http_status(const px_result *r)
{
	switch (r->status) {
	case PX_OK: return r->upstream_code >= 200 && r->upstream_code < 300 ? (unsigned)r->upstream_code : 200;
	case PX_NOT_FOUND: return 404;
	case PX_BAD_REQUEST: return 400;
	case PX_TOO_LARGE: return 413;
	case PX_UPSTREAM: return 502;
	case PX_TIMEOUT: return 504;
	case PX_UNAVAILABLE: return 503;
	case PX_INTERNAL: return 500;
	}
	return 500;
}

static enum MHD_Result respond(req *r, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	if (atomic_load(&r->h->draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	r->responded = true;
	rc = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result respond_text(req *r, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
	TF__PRINTF(4, 5);

static enum MHD_Result respond_text(req *r, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
	char buf[PX_MESSAGE_MAX + 64];
	struct MHD_Response *resp;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	buf[n] = '\0';
	resp = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	return respond(r, c, status, resp);
}

static enum MHD_Result respond_empty(req *r, struct MHD_Connection *c, unsigned status)
{
	return respond(r, c, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

/* Anything but a success: its status and a text body saying why. */
static enum MHD_Result respond_result(req *r, struct MHD_Connection *c, const px_result *res)
{
	if (res->status == PX_OK)
		return respond_empty(r, c, http_status(res));
	return respond_text(r, c, http_status(res), "%s", res->message);
}

/* The answer decided from the request's head, given once its body was read. */
static enum MHD_Result respond_refused(req *r, struct MHD_Connection *c)
{
	struct MHD_Response *resp;

	if (!r->head.allow)
		return respond_text(r, c, r->head.status, "%s", r->head.message);
	resp = MHD_create_response_from_buffer(strlen(r->head.message), r->head.message, MHD_RESPMEM_MUST_COPY);
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, PUT");
	return respond(r, c, r->head.status, resp);
}

static void refuse(req *r, unsigned status, const char *fmt, ...) TF__PRINTF(3, 4);

/* An answer decided while the body is read: given once it is read. */
static void refuse(req *r, unsigned status, const char *fmt, ...)
{
	va_list ap;

	if (r->head.status)
		return;
	r->head.status = status;
	va_start(ap, fmt);
	vsnprintf(r->head.message, sizeof(r->head.message), fmt, ap);
	va_end(ap);
}

/* ---- the request and its worker ---------------------------------------------------------- */

static void lock(px_http *h)
{
	pthread_mutex_lock(&h->mu);
}

static void unlock(px_http *h)
{
	pthread_mutex_unlock(&h->mu);
}

/* Drops a reference (h->mu held); the last frees r and what it holds (a CAS
 * download still running upstream is stopped). */
static void req_release_locked(req *r)
{
	if (--r->refs > 0)
		return;
	px_get_free(r->g);
	px_put_free(r->put);
	tf__buf_fini(&r->body);
	free(r->data);
	free(r->sbuf);
	free(r->page.body);
	free(r);
}

/* MHD thread, h->mu held: suspend the connection until the worker wakes it.
 * Marked first, so that a worker done before the suspension waits for it. */
static void fall_asleep_locked(req *r)
{
	px_http *h = r->h;

	r->sleep = FALLING_ASLEEP;
	h->suspended++;
	unlock(h);
	MHD_suspend_connection(r->c);
	lock(h);
	r->sleep = ASLEEP;
	pthread_cond_broadcast(&h->cv);
}

/* Worker, h->mu held: resume the connection if it sleeps (waiting for a
 * suspension under way to be complete). */
static void wake_locked(req *r)
{
	px_http *h = r->h;

	while (r->sleep == FALLING_ASLEEP)
		pthread_cond_wait(&h->cv, &h->mu);
	if (r->sleep != ASLEEP)
		return;
	r->sleep = AWAKE;
	unlock(h);
	MHD_resume_connection(r->c);
	lock(h);
	h->suspended--; /* after the resume: px_http_stop must not stop the daemon before it */
	pthread_cond_broadcast(&h->cv);
}

/* Worker: streams a CAS body into r->sbuf, one chunk whenever the client took the last. */
static void stream_locked(req *r)
{
	px_http *h = r->h;
	ssize_t n;

	for (;;) {
		while (r->s_len > 0 && !r->gone && !h->stopping)
			pthread_cond_wait(&h->cv, &h->mu);
		if (r->gone || h->stopping) {
			r->s_state = STREAM_FAILED;
			break;
		}
		unlock(h);
		n = px_get_read(r->g, r->sbuf, STREAM_BYTES);
		lock(h);
		if (n > 0) {
			r->s_off = 0;
			r->s_len = (size_t)n;
		} else {
			r->s_state = n == 0 ? STREAM_END : STREAM_FAILED;
			break;
		}
		wake_locked(r);
	}
	wake_locked(r);
}

static void run_job(req *r, job j)
{
	px_proxy *p = r->h->p;

	switch (j) {
	case JOB_LOOKUP:
		if (r->head.method == 'H')
			px_head(p, r->head.area, r->head.key, &r->length, &r->res);
		else if (r->head.area == TF_AREA_AC)
			px_ac_get(p, r->head.key, &r->body, &r->res);
		else
			r->g = px_cas_get(p, r->head.key, &r->length, &r->res);
		break;
	case JOB_DATA:
		px_put_data(r->put, r->data, r->data_len);
		break;
	case JOB_END:
		px_put_end(r->put, &r->res);
		break;
	case JOB_NONE:
		break;
	}
}

static void *worker_main(void *arg)
{
	req *r = arg;
	px_http *h = r->h;
	job j;

	lock(h);
	for (;;) {
		while (r->job == JOB_NONE && !r->gone && !h->stopping)
			pthread_cond_wait(&h->cv, &h->mu);
		j = r->job;
		if (j == JOB_NONE)
			break; /* the client left, or the proxy stops */
		unlock(h);
		run_job(r, j);
		lock(h);
		r->job = JOB_NONE;
		if (j == JOB_LOOKUP && r->g && r->sbuf) {
			/* The answer can be queued now; the body follows. */
			wake_locked(r);
			stream_locked(r);
			break;
		}
		wake_locked(r);
		if (j != JOB_DATA)
			break; /* the request's last job */
	}
	h->workers--;
	req_release_locked(r);
	pthread_cond_broadcast(&h->cv);
	unlock(h);
	return NULL;
}

/* MHD thread: hands j to r's worker (started on the first job) and suspends
 * the connection until it is done. 0; -ESHUTDOWN when the proxy stops,
 * -EAGAIN when no thread can be started. */
static int hand_over(req *r, job j)
{
	px_http *h = r->h;
	pthread_attr_t attr;
	pthread_t t;
	int e = 0;

	lock(h);
	if (h->stopping) {
		unlock(h);
		return -ESHUTDOWN;
	}
	if (!r->has_worker) {
		e = pthread_attr_init(&attr) == 0 ? 0 : -EAGAIN;
		if (e == 0) {
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
			pthread_attr_setstacksize(&attr, WORKER_STACK_BYTES);
			if (pthread_create(&t, &attr, worker_main, r) != 0)
				e = -EAGAIN;
			pthread_attr_destroy(&attr);
		}
		if (e == 0) {
			r->has_worker = true;
			r->refs++;
			h->workers++;
		}
	}
	if (e == 0) {
		r->job = j;
		pthread_cond_broadcast(&h->cv);
		fall_asleep_locked(r);
	}
	unlock(h);
	return e;
}

static const char *hand_over_why(int e)
{
	return e == -ESHUTDOWN ? "the proxy is shutting down"
			       : "topfetch proxy: cannot start a thread for the request; try again";
}

/* ---- GET and HEAD ------------------------------------------------------------------------ */

static ssize_t read_nothing(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* MHD thread: what the worker streamed so far; none yet, the connection
 * sleeps until there is. */
static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	req *r = cls;
	px_http *h = r->h;
	ssize_t n;
	(void)pos;

	lock(h);
	if (r->s_len > 0) {
		size_t k = r->s_len < max ? r->s_len : max;
		memcpy(buf, r->sbuf + r->s_off, k);
		r->s_off += k;
		r->s_len -= k;
		if (r->s_len == 0)
			pthread_cond_broadcast(&h->cv);
		n = (ssize_t)k;
	} else if (r->s_state == STREAM_END) {
		n = MHD_CONTENT_READER_END_OF_STREAM;
	} else if (r->s_state == STREAM_FAILED || h->stopping) {
		n = MHD_CONTENT_READER_END_WITH_ERROR;
	} else {
		fall_asleep_locked(r);
		n = 0; /* called again once resumed */
	}
	unlock(h);
	return n;
}

/* The worker's answer to a GET or HEAD. */
static enum MHD_Result respond_lookup(req *r, struct MHD_Connection *c)
{
	struct MHD_Response *resp;

	if (r->res.status != PX_OK || (r->head.method == 'G' && r->head.area == TF_AREA_CAS && !r->g))
		return respond_result(r, c, &r->res);
	if (r->head.method == 'H') {
		/* libmicrohttpd sends a callback response's size as Content-Length
		 * and, for HEAD, never reads it. */
		return respond(r, c, 200,
			       MHD_create_response_from_callback(r->length >= 0 ? (uint64_t)r->length
										 : MHD_SIZE_UNKNOWN,
								 1024, read_nothing, NULL, NULL));
	}
	if (r->head.area == TF_AREA_AC) {
		if (r->body.len == 0) {
			resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		} else {
			resp = MHD_create_response_from_buffer(r->body.len, r->body.data, MHD_RESPMEM_MUST_COPY);
		}
		tf__buf_fini(&r->body);
	} else {
		resp = MHD_create_response_from_callback(r->length >= 0 ? (uint64_t)r->length : MHD_SIZE_UNKNOWN,
							 MHD_BLOCK_BYTES, read_body, r, NULL);
	}
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	return respond(r, c, 200, resp);
}

/* ---- connections: the header deadline ----------------------------------------------------- */

static conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

static void conn_enter(px_http *h, struct MHD_Connection *c, conn_phase phase)
{
	conn *k = conn_of(c);

	if (!k)
		return;
	lock(h);
	if (k->phase != CONN_CUT) {
		k->phase = phase;
		k->since = tf__now_ns();
	}
	unlock(h);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	px_http *h = cls;
	conn *k = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		k = ci ? calloc(1, sizeof(*k)) : NULL;
		*socket_context = k;
		if (!k)
			return; /* out of memory: libmicrohttpd's idle timeout alone */
		k->fd = ci->connect_fd;
		k->phase = CONN_FRESH;
		k->since = tf__now_ns();
		lock(h);
		k->next = h->conns;
		if (h->conns)
			h->conns->prev = k;
		h->conns = k;
		unlock(h);
		return;
	}
	/* Closed: libmicrohttpd closes the descriptor only after this, so the
	 * sweeper never shuts down a descriptor another connection reuses. */
	if (!k)
		return;
	lock(h);
	if (k->prev)
		k->prev->next = k->next;
	else
		h->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	unlock(h);
	free(k);
	*socket_context = NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	(void)uri;
	conn_enter(cls, c, CONN_HEADERS);
	return NULL;
}

/* The client closed its side (or reset): a request it has not finished
 * sending can never end. libmicrohttpd's epoll loop may not notice a close
 * while it waits for more of a request (the connection stays in CLOSE-WAIT
 * until its idle timeout). */
static bool peer_gone(MHD_socket fd)
{
	struct tcp_info ti;
	socklen_t n = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &n) < 0)
		return false;
	return ti.tcpi_state == TCP_CLOSE_WAIT || ti.tcpi_state == TCP_CLOSE;
}

static void *sweeper_main(void *arg)
{
	px_http *h = arg;
	struct timespec ts;
	uint64_t now, limit;

	lock(h);
	while (h->sweeper_running) {
		now = tf__now_ns();
		for (conn *k = h->conns; k; k = k->next) {
			if (k->phase == CONN_CUT || k->phase == CONN_BUSY)
				continue;
			limit = k->phase == CONN_FRESH || k->phase == CONN_HEADERS ? h->header_ns
				: k->phase == CONN_KEPT				 ? (uint64_t)IDLE_TIMEOUT_S * 1000000000ull
											 : 0;
			if ((limit && now - k->since >= limit) || peer_gone(k->fd)) {
				shutdown(k->fd, SHUT_RDWR);
				k->phase = CONN_CUT;
				atomic_fetch_add(&h->cut, 1);
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&h->sweep_cv, &h->mu, &ts);
	}
	unlock(h);
	return NULL;
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------- */

/* The first call, with the headers complete. */
static enum MHD_Result begin(px_http *h, struct MHD_Connection *c, const char *url, const char *method,
			     void **con_cls)
{
	px_result res;
	req *r = calloc(1, sizeof(*r));

	if (!r)
		return MHD_NO;
	r->h = h;
	r->c = c;
	r->refs = 1;
	tf__buf_init(&r->body, PX_AC_MAX_BYTES);
	*con_cls = r;
	conn_enter(h, c, CONN_BODY);
	atomic_fetch_add(&h->active, 1);
	if (!strcmp(method, MHD_HTTP_METHOD_GET) && px_status_page(h->p, url, &r->page) == 0)
		return MHD_YES; /* not a cache request: not counted */
	px_count_request(h->p);
	px_http_read_head(method, url, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH),
			  MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING), &r->head);
	if (r->head.status) {
		if (r->head.refused)
			px_count_refused(h->p);
		/* Answered at once (closing the connection) or once the request is read. */
		return r->head.now ? respond_refused(r, c) : MHD_YES;
	}
	if (r->head.method == 'G' && r->head.area == TF_AREA_CAS && !(r->sbuf = malloc(STREAM_BYTES)))
		return MHD_NO;
	if (r->head.method != 'P')
		return MHD_YES;
	/* Does not block: an upload to the upstream is only opened here. */
	r->put = px_put_begin(h->p, r->head.area, r->head.key, r->head.length, &res);
	if (r->put)
		return MHD_YES;
	if (res.status == PX_TOO_LARGE) /* answered at once (closing the connection): not worth reading */
		return respond_result(r, c, &res);
	refuse(r, http_status(&res), "%s", res.message);
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	px_http *h = cls;
	req *r = *con_cls;
	int e;
	(void)version;

	if (!r)
		return begin(h, c, url, method, con_cls);
	if (r->responded) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (!r->put || r->head.status)
			return MHD_YES; /* read and dropped: the answer is decided */
		if (n > r->data_cap) { /* at most libmicrohttpd's buffer; copied, as it reuses it */
			char *d = realloc(r->data, n);
			if (!d) {
				refuse(r, 500, "topfetch proxy: out of memory");
				return MHD_YES;
			}
			r->data = d;
			r->data_cap = n;
		}
		memcpy(r->data, upload_data, n);
		r->data_len = n;
		e = hand_over(r, JOB_DATA);
		if (e < 0)
			refuse(r, 503, "%s", hand_over_why(e));
		return MHD_YES;
	}
	/* The request is complete: the decided answer, the worker's, or a job for it. */
	conn_enter(h, c, CONN_BUSY);
	if (r->page.body) {
		struct MHD_Response *resp =
			MHD_create_response_from_buffer(r->page.len, r->page.body, MHD_RESPMEM_MUST_FREE);
		if (resp) {
			r->page.body = NULL; /* MHD frees it */
			MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->page.content_type);
		}
		return respond(r, c, MHD_HTTP_OK, resp);
	}
	if (r->head.status)
		return respond_refused(r, c);
	if (r->head.method == 'P') {
		if (r->put_ended)
			return respond_result(r, c, &r->res);
		r->put_ended = true;
		e = hand_over(r, JOB_END);
	} else {
		if (r->has_worker)
			return respond_lookup(r, c);
		e = hand_over(r, JOB_LOOKUP);
	}
	return e < 0 ? respond_text(r, c, 503, "%s", hand_over_why(e)) : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	px_http *h = cls;
	req *r = *con_cls;
	(void)toe;

	conn_enter(h, c, CONN_KEPT);
	if (!r)
		return;
	*con_cls = NULL;
	lock(h);
	r->gone = true;
	pthread_cond_broadcast(&h->cv);
	req_release_locked(r);
	unlock(h);
	atomic_fetch_sub(&h->active, 1);
}

static void stop_sweeper(px_http *h)
{
	if (!h->sweeper_running)
		return;
	lock(h);
	h->sweeper_running = false;
	pthread_cond_signal(&h->sweep_cv);
	unlock(h);
	pthread_join(h->sweeper, NULL);
}

/* ---- the listener ------------------------------------------------------------------------- */

int px_http_parse_listen(const char *spec, bool any, struct sockaddr_storage *ss, char *why, size_t n)
{
	char host[256];
	const char *port;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL;
	char *end;
	long pn;
	bool loopback;
	int e;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host)) {
			snprintf(why, n, "--listen=%s: want HOST:PORT or [IPV6]:PORT", spec);
			return -EINVAL;
		}
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(host)) {
			snprintf(why, n, "--listen=%s: want HOST:PORT, e.g. 127.0.0.1:9090", spec);
			return -EINVAL;
		}
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	errno = 0;
	pn = strtol(port, &end, 10);
	if (errno || end == port || *end || pn < 0 || pn > 65535) {
		snprintf(why, n, "--listen=%s: '%s' is not a port number", spec, port);
		return -EINVAL;
	}
	e = getaddrinfo(host, port, &hints, &res);
	if (e || !res) {
		snprintf(why, n, "--listen=%s: cannot resolve '%s': %s", spec, host, gai_strerror(e));
		if (res)
			freeaddrinfo(res);
		return -EINVAL;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (ss->ss_family == AF_INET) {
		loopback = (ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	} else {
		const struct in6_addr *a = &((struct sockaddr_in6 *)ss)->sin6_addr;
		loopback = IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	if (!loopback && !any) {
		snprintf(why, n,
			 "--listen=%s is not a loopback address: anyone who can reach it could read and write the cache "
			 "with your credentials. Pass --listen_any if that is what you want.",
			 spec);
		return -EPERM;
	}
	return 0;
}

px_http *px_http_start(px_proxy *p, const struct sockaddr_storage *ss, unsigned header_timeout_s)
{
	px_http *h = calloc(1, sizeof(*h));
	const union MHD_DaemonInfo *di;
	pthread_condattr_t ca;
	struct rlimit rl;

	if (!h)
		return NULL;
	h->p = p;
	h->lfd = MHD_INVALID_SOCKET;
	h->header_ns = (uint64_t)(header_timeout_s ? header_timeout_s : PX_HEADER_TIMEOUT_S) * 1000000000ull;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->sweep_cv, &ca);
	pthread_condattr_destroy(&ca);
	/* Room for every connection and its upstream side, as far as the hard limit allows. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * MAX_CONNECTIONS + 256) {
		rl.rlim_cur = rl.rlim_max < 2 * MAX_CONNECTIONS + 256 ? rl.rlim_max : 2 * MAX_CONNECTIONS + 256;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	h->sweeper_running = true;
	if (pthread_create(&h->sweeper, NULL, sweeper_main, h) != 0) {
		h->sweeper_running = false;
		goto fail;
	}
	h->mhd = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
					  (ss->ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)ss,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION,
				  on_connection, h, MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
				  MHD_OPTION_CONNECTION_LIMIT, MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
				  IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, MHD_MEMORY_BYTES,
				  MHD_OPTION_END);
	if (!h->mhd)
		goto fail;
	di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
	h->port = di ? (unsigned)di->port : 0u;
	return h;
fail:
	stop_sweeper(h);
	pthread_cond_destroy(&h->sweep_cv);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
	return NULL;
}

unsigned px_http_port(const px_http *h)
{
	return h->port;
}

int px_http_active(const px_http *h)
{
	return atomic_load(&((px_http *)h)->active);
}

uint64_t px_http_cut(const px_http *h)
{
	return atomic_load(&((px_http *)h)->cut);
}

void px_http_quiesce(px_http *h)
{
	atomic_store(&h->draining, true);
	h->lfd = MHD_quiesce_daemon(h->mhd);
	/* New connections are refused at once rather than left in the backlog;
	 * the descriptor itself stays open until libmicrohttpd stopped, as its
	 * documentation asks. */
	if (h->lfd != MHD_INVALID_SOCKET)
		shutdown(h->lfd, SHUT_RDWR);
}

void px_http_stop(px_http *h)
{
	if (!h)
		return;
	/* No job is handed over from now on; the workers end (px_close woke
	 * those waiting on the upstream) and resume what they suspended: a
	 * daemon must not be stopped with a connection suspended. */
	lock(h);
	h->stopping = true;
	pthread_cond_broadcast(&h->cv);
	while (h->workers > 0 || h->suspended > 0)
		pthread_cond_wait(&h->cv, &h->mu);
	unlock(h);
	stop_sweeper(h);
	MHD_stop_daemon(h->mhd);
	if (h->lfd != MHD_INVALID_SOCKET)
		close(h->lfd);
	pthread_cond_destroy(&h->sweep_cv);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}
