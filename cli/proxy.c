/* topfetch proxy: sits between Bazel and its HTTP cache.
 *
 * Bazel talks to us as to bazel-remote (GET/HEAD/PUT on [/prefix]/ac/<sha256>
 * and [/prefix]/cas/<sha256>); we forward to the upstream cache (HTTP, or a
 * directory in Bazel's --disk_cache layout) and learn every ActionResult that
 * passes. The session (the library) records those, follows Bazel's BEP and
 * fetches the top-level outputs while the build runs.
 *
 * Threads and who owns what:
 *  - libmicrohttpd runs one thread per client connection. A request handler
 *    may block: on the upstream transfer (a condition variable per transfer)
 *    and on the main thread (the bridge below).
 *  - One engine thread owns a curl multi handle: every HTTP upstream transfer
 *    runs there, connections kept alive and shared. A transfer and the
 *    handler exchange bytes through a bounded ring (RING_BYTES) with curl's
 *    pause/unpause as back-pressure in both directions, so a blob of any size
 *    crosses the proxy in bounded memory. Action-cache bodies are buffered
 *    (at most AC_MAX_BYTES) because they are also recorded. CAS bodies are
 *    hashed on the way through, both ways, and the last byte is held back
 *    until the hash matches the key: neither the upstream nor Bazel ever
 *    receives a complete wrong blob.
 *  - The main thread owns the tf_session (only it calls tf_session_*). Handlers
 *    hand it ActionResults and "is this action lost?" questions through the
 *    bridge: a FIFO of items living on the asking thread's stack, an eventfd
 *    to wake the main loop and a condition variable for the answer. The
 *    handler answers Bazel only after the main thread recorded the result, so
 *    a TargetComplete Bazel writes afterwards always finds its outputs known.
 *  - The lost set (actions whose wanted outputs the cache no longer has) is
 *    written by the main thread (on_lost, answers from the store) and read by
 *    every handler under its own mutex.
 *
 * Teardown (close, stop, free): quiesce the listener, let requests in flight
 * finish, close the bridge, abort upstream transfers, stop libmicrohttpd
 * (joins the connection threads), stop the engine, finish the session. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "cli/cli.h"

/* ---- caps ------------------------------------------------------------------------ */

#define AC_MAX_BYTES ((size_t)64 << 20)     /* one ActionResult, buffered */
#define RING_BYTES ((size_t)512 << 10)      /* per streamed transfer, each way */
#define CURL_BUFFER_BYTES (128L << 10)       /* curl's receive and upload buffers */
#define MHD_BLOCK_BYTES ((size_t)128 << 10) /* libmicrohttpd's send block */
#define MHD_MEMORY_BYTES ((size_t)128 << 10) /* per connection: headers and upload chunks */
#define MHD_STACK_BYTES ((size_t)1 << 20)
#define MAX_CONNECTIONS 512u                /* client connections, one thread each */
#define IDLE_TIMEOUT_S 300u                 /* an idle client connection is closed */
#define LOST_SET_MAX ((size_t)1 << 20)      /* remembered lost actions (the store has them all) */
#define VALIDATE_MAX_BLOBS 100000           /* output blobs checked per ActionResult */
#define VALIDATE_BATCH 64                   /* HEAD requests in flight per validation */
#define DRAIN_S 30                          /* wait for requests in flight at shutdown */
#define WAIT_IDLE_S 30                      /* ... and for fetches, with no completion */
#define MSG_MAX 1024
#define KEY_LEN TF_HASH_HEX_LEN

/* ---- small helpers --------------------------------------------------------------------- */

static bool is_hex_key(const char *s, size_t n)
{
	if (n != KEY_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Finishes a SHA-256 into lowercase hex. */
static void md_final_hex(EVP_MD_CTX *md, char out[KEY_LEN + 1])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	EVP_DigestFinal_ex(md, d, &n);
	hex_encode(d, n, out);
}

static const char *area_name(tf_area a)
{
	return a == TF_AREA_AC ? "ac" : "cas";
}

/* bazel-remote's rule: ^/?(.*\/)?(ac/|cas/)([a-f0-9]{64})$ */
static int parse_path(const char *url, tf_area *area, char key[KEY_LEN + 1])
{
	size_t n = strlen(url);
	const char *h, *a;

	if (n < KEY_LEN + 3)
		return -EINVAL;
	h = url + n - KEY_LEN;
	if (!is_hex_key(h, KEY_LEN))
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
	memcpy(key, h, KEY_LEN + 1);
	return 0;
}

/* ---- the lost set: action keys answered as misses ---------------------------------- */

typedef struct keynode {
	struct keynode *next;
	char key[KEY_LEN + 1];
} keynode;

typedef struct keyset {
	keynode **b;
	size_t nb, n;
} keyset;

static size_t key_bucket(const char *k, size_t nb)
{
	uint64_t h = 0;
	for (int i = 0; i < 16; i++)
		h = h << 4 | (uint64_t)(k[i] <= '9' ? k[i] - '0' : k[i] - 'a' + 10);
	return (size_t)(h % nb);
}

static keynode **keyset_find(keyset *s, const char *k)
{
	keynode **p;
	if (!s->nb)
		return NULL;
	for (p = &s->b[key_bucket(k, s->nb)]; *p; p = &(*p)->next)
		if (!memcmp((*p)->key, k, KEY_LEN))
			return p;
	return NULL;
}

static void keyset_add(keyset *s, const char *k)
{
	keynode *n;
	size_t i;

	if (keyset_find(s, k) || s->n >= LOST_SET_MAX)
		return; /* past the cap the store still answers, through the main thread */
	if (s->n >= s->nb) {
		size_t nb = s->nb ? s->nb * 2 : 256;
		keynode **b = calloc(nb, sizeof(*b));
		if (!b)
			return;
		for (i = 0; i < s->nb; i++)
			while (s->b[i]) {
				keynode *x = s->b[i];
				s->b[i] = x->next;
				x->next = b[key_bucket(x->key, nb)];
				b[key_bucket(x->key, nb)] = x;
			}
		free(s->b);
		s->b = b;
		s->nb = nb;
	}
	n = malloc(sizeof(*n));
	if (!n)
		return;
	memcpy(n->key, k, KEY_LEN + 1);
	i = key_bucket(k, s->nb);
	n->next = s->b[i];
	s->b[i] = n;
	s->n++;
}

static void keyset_remove(keyset *s, const char *k)
{
	keynode **p = keyset_find(s, k), *x;
	if (!p)
		return;
	x = *p;
	*p = x->next;
	free(x);
	s->n--;
}

static void keyset_fini(keyset *s)
{
	for (size_t i = 0; i < s->nb; i++)
		while (s->b[i]) {
			keynode *x = s->b[i];
			s->b[i] = x->next;
			free(x);
		}
	free(s->b);
	memset(s, 0, sizeof(*s));
}

/* ---- a bounded byte ring ---------------------------------------------------------------- */

typedef struct ring {
	unsigned char *b;
	size_t cap, head, len;
} ring;

static size_t ring_put(ring *r, const unsigned char *src, size_t n)
{
	size_t w = n < r->cap - r->len ? n : r->cap - r->len;
	size_t tail = (r->head + r->len) % r->cap;
	size_t first = w < r->cap - tail ? w : r->cap - tail;

	memcpy(r->b + tail, src, first);
	memcpy(r->b, src + first, w - first);
	r->len += w;
	return w;
}

static size_t ring_get(ring *r, unsigned char *dst, size_t n)
{
	size_t g = n < r->len ? n : r->len;
	size_t first = g < r->cap - r->head ? g : r->cap - r->head;

	memcpy(dst, r->b + r->head, first);
	memcpy(dst + first, r->b, g - first);
	r->head = (r->head + g) % r->cap;
	r->len -= g;
	return g;
}

/* ---- HTTP upstream: the engine thread and its transfers --------------------------------- */

typedef struct upstream upstream;
typedef struct xfer xfer;

typedef enum xfer_mode {
	XM_GET_STREAM, /* body through the ring to a client */
	XM_GET_BUFFER, /* body into memory (action cache), at most AC_MAX_BYTES */
	XM_HEAD,
	XM_PUT_STREAM, /* body through the ring from a client */
	XM_PUT_BUFFER, /* body from memory (borrowed) */
} xfer_mode;

typedef enum xfer_state {
	XS_QUEUED,  /* handed to the engine */
	XS_RUNNING, /* attached to the multi handle */
	XS_HEADERS, /* the final status line and headers are in */
	XS_DONE,    /* detached: result and status final */
} xfer_state;

struct xfer {
	upstream *u;
	atomic_int refs;
	xfer *next;                  /* u->add list (u->mu) */
	xfer *poke_next;             /* u->poke list (u->mu) */
	bool poked;                  /* (u->mu) */
	xfer *run_prev, *run_next;   /* attached transfers: engine thread only */
	CURL *easy;                  /* engine thread only */
	xfer_mode mode;
	char *url, *what;            /* what: the URL without credentials, for messages */
	int64_t put_size;
	/* Below: x->mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	xfer_state state;
	long status;
	int64_t length;              /* Content-Length of the answer, -1 unknown */
	CURLcode result;
	char errbuf[CURL_ERROR_SIZE];
	ring ring;
	bool recv_paused, send_paused;
	bool eof;                    /* PUT_STREAM: every byte is in the ring */
	bool cancel;                 /* the client side gave up, or the body failed verification */
	unsigned char *body;         /* GET_BUFFER: owned; PUT_BUFFER: borrowed */
	size_t body_len, body_cap, body_pos;
	bool too_big;
	uint64_t moved;              /* body bytes received or sent */
};

struct upstream {
	char *base;    /* http(s)://[user:password@]host[:port][/prefix][/instance] */
	char *display; /* the same without credentials */
	struct curl_slist *headers;
	const char *ca, *cert, *key;
	long timeout_s;
	CURLM *multi;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	xfer *add_head, *add_tail, *poke_head, *poke_tail;
	bool closing;
	xfer *run; /* engine thread only */
};

static void set_state(xfer *x, xfer_state st)
{
	/* x->mu held */
	x->state = st;
	pthread_cond_broadcast(&x->cv);
}

static void xfer_unref(xfer *x)
{
	if (!x || atomic_fetch_sub(&x->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x->ring.b);
	if (x->mode == XM_GET_BUFFER)
		free(x->body);
	free(x->url);
	free(x->what);
	free(x);
}

static xfer *xfer_new(upstream *u, xfer_mode mode, tf_area area, const char *key)
{
	xfer *x = calloc(1, sizeof(*x));

	if (!x)
		return NULL;
	atomic_init(&x->refs, 1);
	x->u = u;
	x->mode = mode;
	x->length = -1;
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	if (asprintf(&x->url, "%s/%s/%s", u->base, area_name(area), key) < 0)
		x->url = NULL;
	if (asprintf(&x->what, "%s/%s/%s", u->display, area_name(area), key) < 0)
		x->what = NULL;
	if (mode == XM_GET_STREAM || mode == XM_PUT_STREAM) {
		x->ring.cap = RING_BYTES;
		x->ring.b = malloc(RING_BYTES);
	}
	if (!x->url || !x->what || ((mode == XM_GET_STREAM || mode == XM_PUT_STREAM) && !x->ring.b)) {
		xfer_unref(x);
		return NULL;
	}
	return x;
}

/* Ends a transfer: detaches it, makes its result final, wakes its waiter and
 * drops the engine's reference. Engine thread (or submit, before attaching). */
static void xfer_finish(upstream *u, xfer *x, CURLcode rc, const char *why)
{
	long code = 0;

	if (x->easy) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
		curl_multi_remove_handle(u->multi, x->easy);
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
		if (x->run_prev)
			x->run_prev->run_next = x->run_next;
		else
			u->run = x->run_next;
		if (x->run_next)
			x->run_next->run_prev = x->run_prev;
	}
	pthread_mutex_lock(&x->mu);
	x->result = rc;
	if (why && !x->errbuf[0])
		snprintf(x->errbuf, sizeof(x->errbuf), "%s", why);
	if (rc == CURLE_OK && !x->status)
		x->status = code;
	set_state(x, XS_DONE);
	pthread_mutex_unlock(&x->mu);
	xfer_unref(x);
}

static size_t on_header(char *b, size_t size, size_t nmemb, void *user)
{
	xfer *x = user;
	size_t n = size * nmemb;
	long code = 0;
	curl_off_t cl = -1;

	/* The blank line ends a header block; 1xx blocks are interim. */
	if (n > 2 || (b[0] != '\r' && b[0] != '\n'))
		return n;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200)
		return n;
	curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	pthread_mutex_lock(&x->mu);
	x->status = code;
	x->length = cl;
	set_state(x, XS_HEADERS);
	pthread_mutex_unlock(&x->mu);
	return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *user)
{
	xfer *x = user;
	size_t n = size * nmemb;

	pthread_mutex_lock(&x->mu);
	if (x->cancel) {
		pthread_mutex_unlock(&x->mu);
		return 0; /* aborts the transfer */
	}
	if (x->status != 200 || (x->mode != XM_GET_STREAM && x->mode != XM_GET_BUFFER)) {
		pthread_mutex_unlock(&x->mu);
		return n; /* an error page, or the answer to a PUT: not forwarded */
	}
	if (x->mode == XM_GET_BUFFER) {
		if (x->body_len + n > AC_MAX_BYTES) {
			x->too_big = true;
			pthread_mutex_unlock(&x->mu);
			return 0;
		}
		if (x->body_len + n > x->body_cap) {
			size_t cap = x->body_cap ? x->body_cap : 4096;
			unsigned char *nb;
			while (cap < x->body_len + n)
				cap *= 2;
			if (cap > AC_MAX_BYTES)
				cap = AC_MAX_BYTES;
			nb = realloc(x->body, cap);
			if (!nb) {
				pthread_mutex_unlock(&x->mu);
				return 0;
			}
			x->body = nb;
			x->body_cap = cap;
		}
		memcpy(x->body + x->body_len, data, n);
		x->body_len += n;
		x->moved += n;
		pthread_mutex_unlock(&x->mu);
		return n;
	}
	if (n > x->ring.cap) {
		pthread_mutex_unlock(&x->mu);
		return 0; /* cannot happen with CURL_BUFFER_BYTES < RING_BYTES */
	}
	if (x->ring.cap - x->ring.len < n) {
		/* curl keeps this chunk and offers it again after unpausing. */
		x->recv_paused = true;
		pthread_mutex_unlock(&x->mu);
		return CURL_WRITEFUNC_PAUSE;
	}
	ring_put(&x->ring, (const unsigned char *)data, n);
	x->moved += n;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *user)
{
	xfer *x = user;
	size_t n = size * nmemb, got;

	pthread_mutex_lock(&x->mu);
	if (x->cancel) {
		pthread_mutex_unlock(&x->mu);
		return CURL_READFUNC_ABORT;
	}
	if (x->mode == XM_PUT_BUFFER) {
		got = x->body_len - x->body_pos < n ? x->body_len - x->body_pos : n;
		memcpy(buf, x->body + x->body_pos, got);
		x->body_pos += got;
	} else if (x->ring.len == 0) {
		if (x->eof) {
			pthread_mutex_unlock(&x->mu);
			return 0;
		}
		x->send_paused = true;
		pthread_mutex_unlock(&x->mu);
		return CURL_READFUNC_PAUSE;
	} else {
		got = ring_get(&x->ring, (unsigned char *)buf, n);
		pthread_cond_broadcast(&x->cv);
	}
	x->moved += got;
	pthread_mutex_unlock(&x->mu);
	return got;
}

static int engine_start(upstream *u, xfer *x)
{
	CURL *h = curl_easy_init();

	if (!h)
		return -ENOMEM;
	curl_easy_setopt(h, CURLOPT_URL, x->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, u->headers);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, u->timeout_s);
	/* --remote_timeout bounds silence, not the whole transfer; a transfer
	 * paused because the client reads slowly is not silent. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, u->timeout_s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, CURL_BUFFER_BYTES);
	if (u->ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, u->ca);
	if (u->cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, u->cert);
	if (u->key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, u->key);
	switch (x->mode) {
	case XM_HEAD:
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		break;
	case XM_PUT_STREAM:
	case XM_PUT_BUFFER:
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->put_size);
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, CURL_BUFFER_BYTES);
		break;
	case XM_GET_STREAM:
	case XM_GET_BUFFER:
		break;
	}
	x->easy = h;
	if (curl_multi_add_handle(u->multi, h) != CURLM_OK) {
		curl_easy_cleanup(h);
		x->easy = NULL;
		return -ENOMEM;
	}
	x->run_prev = NULL;
	x->run_next = u->run;
	if (u->run)
		u->run->run_prev = x;
	u->run = x;
	pthread_mutex_lock(&x->mu);
	if (x->state == XS_QUEUED)
		set_state(x, XS_RUNNING);
	pthread_mutex_unlock(&x->mu);
	return 0;
}

static void engine_poke(upstream *u, xfer *x)
{
	bool cancel;

	if (!x->easy)
		return; /* already finished */
	pthread_mutex_lock(&x->mu);
	cancel = x->cancel;
	pthread_mutex_unlock(&x->mu);
	if (cancel)
		xfer_finish(u, x, CURLE_ABORTED_BY_CALLBACK, "cancelled");
	else
		curl_easy_pause(x->easy, CURLPAUSE_CONT);
}

static void *engine_main(void *arg)
{
	upstream *u = arg;
	int still = 0;

	for (;;) {
		xfer *add, *poke, *x, *n;
		bool closing;
		CURLMsg *m;
		int q;

		pthread_mutex_lock(&u->mu);
		add = u->add_head;
		u->add_head = u->add_tail = NULL;
		poke = u->poke_head;
		u->poke_head = u->poke_tail = NULL;
		for (x = poke; x; x = x->poke_next)
			x->poked = false;
		closing = u->closing;
		pthread_mutex_unlock(&u->mu);

		for (x = add; x; x = n) {
			n = x->next;
			if (closing)
				xfer_finish(u, x, CURLE_ABORTED_BY_CALLBACK, "the proxy is shutting down");
			else if (engine_start(u, x) < 0)
				xfer_finish(u, x, CURLE_FAILED_INIT, "cannot start a transfer (out of memory)");
		}
		for (x = poke; x; x = n) {
			n = x->poke_next;
			engine_poke(u, x);
			xfer_unref(x);
		}
		if (closing) {
			while (u->run)
				xfer_finish(u, u->run, CURLE_ABORTED_BY_CALLBACK, "the proxy is shutting down");
			break;
		}
		curl_multi_perform(u->multi, &still);
		while ((m = curl_multi_info_read(u->multi, &q))) {
			CURLcode rc;
			xfer *done = NULL;
			if (m->msg != CURLMSG_DONE)
				continue;
			rc = m->data.result;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&done);
			if (done)
				xfer_finish(u, done, rc, NULL);
		}
		curl_multi_poll(u->multi, NULL, 0, 1000, NULL);
	}
	return NULL;
}

/* Hands x to the engine, which takes its own reference. Never blocks. */
static void xfer_submit(xfer *x)
{
	upstream *u = x->u;

	pthread_mutex_lock(&u->mu);
	if (u->closing) {
		pthread_mutex_unlock(&u->mu);
		pthread_mutex_lock(&x->mu);
		x->result = CURLE_ABORTED_BY_CALLBACK;
		snprintf(x->errbuf, sizeof(x->errbuf), "the proxy is shutting down");
		set_state(x, XS_DONE);
		pthread_mutex_unlock(&x->mu);
		return;
	}
	atomic_fetch_add(&x->refs, 1);
	x->next = NULL;
	if (u->add_tail)
		u->add_tail->next = x;
	else
		u->add_head = x;
	u->add_tail = x;
	pthread_mutex_unlock(&u->mu);
	curl_multi_wakeup(u->multi);
}

/* Asks the engine to look at x again (unpause, or cancel). */
static void xfer_poke(xfer *x)
{
	upstream *u = x->u;

	pthread_mutex_lock(&u->mu);
	if (!x->poked && !u->closing) {
		x->poked = true;
		atomic_fetch_add(&x->refs, 1);
		x->poke_next = NULL;
		if (u->poke_tail)
			u->poke_tail->poke_next = x;
		else
			u->poke_head = x;
		u->poke_tail = x;
	}
	pthread_mutex_unlock(&u->mu);
	curl_multi_wakeup(u->multi);
}

static void xfer_cancel(xfer *x)
{
	bool running;

	pthread_mutex_lock(&x->mu);
	running = x->state != XS_DONE;
	if (running)
		x->cancel = true;
	pthread_mutex_unlock(&x->mu);
	if (running)
		xfer_poke(x);
}

static void xfer_wait(xfer *x, xfer_state at_least)
{
	pthread_mutex_lock(&x->mu);
	while (x->state < at_least)
		pthread_cond_wait(&x->cv, &x->mu);
	pthread_mutex_unlock(&x->mu);
}

/* Puts n bytes into a PUT_STREAM ring, waiting for room. Returns 0, or -EPIPE
 * when the transfer ended first (the upstream answered early or failed). */
static int xfer_push(xfer *x, const unsigned char *p, size_t n)
{
	int r = 0;

	pthread_mutex_lock(&x->mu);
	while (n > 0) {
		size_t w;
		if (x->state == XS_DONE || x->cancel) {
			r = -EPIPE;
			break;
		}
		w = ring_put(&x->ring, p, n);
		p += w;
		n -= w;
		if (w && x->send_paused) {
			x->send_paused = false;
			xfer_poke(x);
		}
		if (n)
			pthread_cond_wait(&x->cv, &x->mu);
	}
	pthread_mutex_unlock(&x->mu);
	return r;
}

/* The rest of the body follows no more: curl's read callback returns 0. */
static void xfer_push_eof(xfer *x)
{
	pthread_mutex_lock(&x->mu);
	x->eof = true;
	if (x->send_paused)
		x->send_paused = false;
	pthread_mutex_unlock(&x->mu);
	xfer_poke(x);
}

/* Status code to answer for a finished (or answered) transfer, and why when
 * it is an error. Never names credentials. */
static unsigned xfer_outcome(xfer *x, char *why, size_t n)
{
	unsigned st;

	pthread_mutex_lock(&x->mu);
	if (x->state >= XS_HEADERS && x->status >= 200 && (x->state != XS_DONE || x->result == CURLE_OK)) {
		long s = x->status;
		if (s == 404 || s == 204)
			st = s == 204 && (x->mode == XM_PUT_STREAM || x->mode == XM_PUT_BUFFER) ? 204 : 404;
		else if (s >= 200 && s < 300)
			st = (unsigned)s;
		else {
			snprintf(why, n, "upstream %s answered HTTP %ld", x->what, s);
			st = 502;
		}
	} else if (x->too_big) {
		snprintf(why, n, "upstream %s: the action cache entry is larger than %zu MiB", x->what,
			 AC_MAX_BYTES >> 20);
		st = 502;
	} else if (x->result == CURLE_OPERATION_TIMEDOUT) {
		snprintf(why, n, "upstream %s: no answer within --remote_timeout=%lds (%s)", x->what,
			 x->u->timeout_s, x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
		st = 504;
	} else {
		snprintf(why, n, "upstream %s: %s", x->what,
			 x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
		st = 502;
	}
	pthread_mutex_unlock(&x->mu);
	return st;
}

/* Removes "user:password@" from an http(s) URL. */
static char *strip_credentials(const char *url)
{
	const char *host = strstr(url, "://");
	const char *slash, *at;
	char *out;

	host = host ? host + 3 : url;
	slash = strchr(host, '/');
	at = strchr(host, '@');
	if (!at || (slash && at > slash))
		return strdup(url);
	out = malloc(strlen(url) + 1);
	if (!out)
		return NULL;
	memcpy(out, url, (size_t)(host - url));
	strcpy(out + (host - url), at + 1);
	return out;
}

static void upstream_free(upstream *u)
{
	if (!u)
		return;
	if (u->started) {
		pthread_mutex_lock(&u->mu);
		u->closing = true;
		pthread_mutex_unlock(&u->mu);
		curl_multi_wakeup(u->multi);
		pthread_join(u->thread, NULL);
	}
	if (u->multi)
		curl_multi_cleanup(u->multi);
	curl_slist_free_all(u->headers);
	pthread_mutex_destroy(&u->mu);
	free(u->base);
	free(u->display);
	free(u);
}

/* Stops new transfers and aborts those in flight; their waiters wake. */
static void upstream_close(upstream *u)
{
	if (!u)
		return;
	pthread_mutex_lock(&u->mu);
	u->closing = true;
	pthread_mutex_unlock(&u->mu);
	curl_multi_wakeup(u->multi);
}

static upstream *upstream_new(const tf_remote_options *o, char *why, size_t n)
{
	upstream *u = calloc(1, sizeof(*u));
	const char *inst = o->remote_instance_name;
	size_t len = strlen(o->remote_cache);
	int conns = o->remote_max_connections > 0 ? o->remote_max_connections : 100;

	if (!u) {
		snprintf(why, n, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&u->mu, NULL);
	while (len > 0 && o->remote_cache[len - 1] == '/')
		len--;
	if (inst && *inst && (strstr(inst, "..") || strpbrk(inst, "?#% \r\n\t") || inst[0] == '/')) {
		snprintf(why, n, "--remote_instance_name '%s' cannot go in a URL path", inst);
		goto fail;
	}
	if (asprintf(&u->base, "%.*s%s%s", (int)len, o->remote_cache, inst && *inst ? "/" : "",
		     inst && *inst ? inst : "") < 0) {
		u->base = NULL;
		snprintf(why, n, "out of memory");
		goto fail;
	}
	if (strpbrk(u->base, " \r\n\t")) {
		snprintf(why, n, "--remote_cache URL contains white space");
		goto fail;
	}
	u->display = strip_credentials(u->base);
	u->timeout_s = o->remote_timeout_s > 0 ? o->remote_timeout_s : 60;
	u->ca = o->tls_certificate;
	u->cert = o->tls_client_certificate;
	u->key = o->tls_client_key;
	/* Bazel sends no Expect: 100-continue; neither do we. */
	u->headers = curl_slist_append(NULL, "Expect:");
	for (size_t i = 0; i < o->n_remote_headers && u->headers; i++) {
		const char *spec = o->remote_headers[i], *eq = strchr(spec, '=');
		struct curl_slist *l;
		char *line;
		if (!eq || eq == spec || strcspn(spec, ": \r\n") < (size_t)(eq - spec) || strpbrk(eq + 1, "\r\n")) {
			snprintf(why, n, "--remote_header '%.*s' is not Name=Value", (int)(eq ? eq - spec : 20), spec);
			goto fail;
		}
		if (asprintf(&line, "%.*s: %s", (int)(eq - spec), spec, eq + 1) < 0)
			break;
		l = curl_slist_append(u->headers, line);
		free(line);
		if (!l) {
			curl_slist_free_all(u->headers);
			u->headers = NULL;
		} else {
			u->headers = l;
		}
	}
	u->multi = curl_multi_init();
	if (!u->display || !u->headers || !u->multi) {
		snprintf(why, n, "out of memory");
		goto fail;
	}
	curl_multi_setopt(u->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)conns);
	curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)conns);
	if (pthread_create(&u->thread, NULL, engine_main, u) != 0) {
		snprintf(why, n, "cannot start the upstream thread");
		goto fail;
	}
	u->started = true;
	return u;
fail:
	upstream_free(u);
	return NULL;
}

/* ---- the proxy -------------------------------------------------------------------- */

typedef enum bq_kind {
	BQ_HIT,     /* an AC lookup found this result: record it unless the action is lost */
	BQ_PUT,     /* the upstream accepted this result: clear the lost mark, record it */
	BQ_IS_LOST, /* only ask */
} bq_kind;

/* A question for the main thread; lives on the asking thread's stack. */
typedef struct bq_item {
	struct bq_item *next;
	bq_kind kind;
	const char *key;
	const void *data; /* borrowed ActionResult */
	size_t len;
	bool done, lost;
} bq_item;

typedef struct counters {
	atomic_ulong requests, ac_hits, ac_misses, ac_lost, ac_invalid, ac_puts, cas_puts, bad, upstream_errors,
		bytes_out, bytes_in, record_errors;
} counters;

typedef struct proxy {
	upstream *up;  /* HTTP upstream, or NULL */
	char *disk;    /* disk upstream (absolute directory), or NULL */
	const char *display;
	bool validate;
	atomic_bool draining, closing;
	atomic_int active; /* requests between their first callback and completion */
	atomic_ulong tmp_seq;
	/* The bridge to the main thread. */
	pthread_mutex_t bq_mu;
	pthread_cond_t bq_cv;
	bq_item *bq_head, *bq_tail;
	bool bq_closed;
	int evfd;
	/* Actions answered as misses; written by the main thread. */
	pthread_mutex_t lost_mu;
	keyset lost;
	/* Main thread only. */
	tf_session *s;
	cli_progress progress;
	counters c;
} proxy;

static bool lost_has(proxy *p, const char *key)
{
	bool r;
	pthread_mutex_lock(&p->lost_mu);
	r = keyset_find(&p->lost, key) != NULL;
	pthread_mutex_unlock(&p->lost_mu);
	return r;
}

static void lost_add(proxy *p, const char *key)
{
	pthread_mutex_lock(&p->lost_mu);
	keyset_add(&p->lost, key);
	pthread_mutex_unlock(&p->lost_mu);
}

static void lost_remove(proxy *p, const char *key)
{
	pthread_mutex_lock(&p->lost_mu);
	keyset_remove(&p->lost, key);
	pthread_mutex_unlock(&p->lost_mu);
}

/* Asks the main thread and waits for the answer. Returns 0, or -ESHUTDOWN
 * when the bridge is closed (the proxy is stopping). */
static int bridge_call(proxy *p, bq_item *it)
{
	bool wake;
	uint64_t one = 1;

	pthread_mutex_lock(&p->bq_mu);
	if (p->bq_closed) {
		pthread_mutex_unlock(&p->bq_mu);
		return -ESHUTDOWN;
	}
	it->next = NULL;
	it->done = false;
	wake = !p->bq_head;
	if (p->bq_tail)
		p->bq_tail->next = it;
	else
		p->bq_head = it;
	p->bq_tail = it;
	if (wake && write(p->evfd, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow; the main loop also polls. */
	}
	while (!it->done)
		pthread_cond_wait(&p->bq_cv, &p->bq_mu);
	pthread_mutex_unlock(&p->bq_mu);
	return 0;
}

static bool session_lost(proxy *p, const char *key)
{
	if (lost_has(p, key))
		return true;
	if (tf_session_action_lost(p->s, key)) {
		lost_add(p, key);
		return true;
	}
	return false;
}

static void record(proxy *p, const char *key, const void *data, size_t len)
{
	tf_error err = { 0 };

	if (tf_session_action_executed(p->s, key, NULL, data, len, &err) < 0) {
		atomic_fetch_add(&p->c.record_errors, 1);
		cli_progress_error(&p->progress, "topfetch proxy: not recorded: %s", err.message);
		return;
	}
}

/* Main thread: answers every waiting question. Returns how many. */
static int bridge_run(proxy *p)
{
	bq_item *list, *it, *next;
	int n = 0;

	pthread_mutex_lock(&p->bq_mu);
	list = p->bq_head;
	p->bq_head = p->bq_tail = NULL;
	pthread_mutex_unlock(&p->bq_mu);
	for (it = list; it; it = it->next) {
		n++;
		switch (it->kind) {
		case BQ_HIT:
			it->lost = session_lost(p, it->key);
			if (!it->lost)
				record(p, it->key, it->data, it->len);
			break;
		case BQ_PUT:
			/* Bazel ran the action again: its new result replaces the lost one
			 * (the session clears the store's mark when it records it). */
			lost_remove(p, it->key);
			record(p, it->key, it->data, it->len);
			break;
		case BQ_IS_LOST:
			it->lost = session_lost(p, it->key);
			break;
		}
	}
	if (!list)
		return 0;
	pthread_mutex_lock(&p->bq_mu);
	for (it = list; it; it = next) {
		next = it->next;
		it->done = true;
	}
	pthread_cond_broadcast(&p->bq_cv);
	pthread_mutex_unlock(&p->bq_mu);
	return n;
}

/* Answers what is queued, then refuses further questions. */
static void bridge_close(proxy *p)
{
	bridge_run(p);
	pthread_mutex_lock(&p->bq_mu);
	p->bq_closed = true;
	pthread_mutex_unlock(&p->bq_mu);
	bridge_run(p);
}

/* ---- requests ---------------------------------------------------------------------- */

typedef struct req {
	proxy *p;
	char method; /* 'G', 'H', 'P' */
	tf_area area;
	char key[KEY_LEN + 1];
	bool responded;
	/* PUT */
	uint64_t expect, got;
	EVP_MD_CTX *md;
	xfer *x;              /* HTTP CAS upload */
	int fd;               /* disk CAS upload: the temporary file */
	char *tmp;
	unsigned char *body;  /* AC upload */
	unsigned char hold;   /* HTTP CAS upload: the last byte, sent once verified */
	bool held;
	/* An answer decided before the request was read to its end: given once
	 * it is (a response queued earlier would close the connection). */
	unsigned fail;        /* status; 0: none */
	bool fail_allow;      /* 405: add Allow */
	char fail_msg[MSG_MAX]; /* "" for an empty body */
} req;

static enum MHD_Result respond(req *r, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	if (atomic_load(&r->p->draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	r->responded = true;
	rc = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result respond_text(req *r, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static enum MHD_Result respond_text(req *r, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
	char buf[MSG_MAX + 64];
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
	if (status >= 500)
		atomic_fetch_add(&r->p->c.upstream_errors, 1);
	else if (status == 400 || status == 405 || status == 411 || status == 413)
		atomic_fetch_add(&r->p->c.bad, 1);
	resp = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	return respond(r, c, status, resp);
}

static enum MHD_Result respond_empty(req *r, struct MHD_Connection *c, unsigned status)
{
	return respond(r, c, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

static enum MHD_Result respond_miss(req *r, struct MHD_Connection *c)
{
	return respond_text(r, c, 404, "%s/%s not found", area_name(r->area), r->key);
}

/* A streamed CAS body on its way to a client, verified as it goes: the last
 * byte is held back until the whole blob hashes to its key, so a client never
 * receives a complete wrong blob. */
typedef struct body_stream {
	proxy *p;
	xfer *x;
	EVP_MD_CTX *md;
	char key[KEY_LEN + 1];
	bool verified;
} body_stream;

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	body_stream *bs = cls;
	xfer *x = bs->x;
	size_t n;
	(void)pos;

	if (bs->verified)
		return MHD_CONTENT_READER_END_OF_STREAM;
	pthread_mutex_lock(&x->mu);
	for (;;) {
		bool done = x->state == XS_DONE;
		size_t avail = x->ring.len;

		if (avail > 1 || (avail == 1 && done)) {
			bool last;
			if (avail > 1)
				avail--; /* hold back one byte until the transfer ends */
			n = ring_get(&x->ring, (unsigned char *)buf, avail < max ? avail : max);
			last = done && x->ring.len == 0;
			if (x->recv_paused && x->ring.cap - x->ring.len >= x->ring.cap / 2) {
				x->recv_paused = false;
				xfer_poke(x);
			}
			if (last) {
				bool ok = x->result == CURLE_OK && (x->length < 0 || (int64_t)x->moved == x->length);
				char got[KEY_LEN + 1];
				pthread_mutex_unlock(&x->mu);
				EVP_DigestUpdate(bs->md, buf, n);
				md_final_hex(bs->md, got);
				if (!ok || strcmp(got, bs->key)) {
					/* A connection thread: one stdio call, no progress state. */
					fprintf(stderr, "topfetch proxy: %s: %s%s; the client's transfer was cut short\n",
						x->what, ok ? "the upstream sent bytes of another hash"
							    : "the upstream transfer failed: ",
						ok ? "" : (x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result)));
					atomic_fetch_add(&bs->p->c.upstream_errors, 1);
					return MHD_CONTENT_READER_END_WITH_ERROR;
				}
				bs->verified = true;
			} else {
				pthread_mutex_unlock(&x->mu);
				EVP_DigestUpdate(bs->md, buf, n);
			}
			atomic_fetch_add(&bs->p->c.bytes_out, n);
			return (ssize_t)n;
		}
		if (done) {
			pthread_mutex_unlock(&x->mu);
			return MHD_CONTENT_READER_END_WITH_ERROR; /* ended early, or an empty answer */
		}
		pthread_cond_wait(&x->cv, &x->mu);
	}
}

static void free_body(void *cls)
{
	body_stream *bs = cls;

	xfer_cancel(bs->x); /* the client left early: stop the upstream transfer */
	xfer_unref(bs->x);
	EVP_MD_CTX_free(bs->md);
	free(bs);
}

/* The two places a key lives in a disk cache: Bazel 4.2+ shards
 * ({ac,cas}/ab/abcd...); a plain HTTP cache root copied to disk is flat. */
static int disk_open(proxy *p, tf_area area, const char *key)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s/%.2s/%s", p->disk, area_name(area), key, key);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		snprintf(path, sizeof(path), "%s/%s/%s", p->disk, area_name(area), key);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	return fd < 0 ? -errno : fd;
}

/* Reads a whole action cache entry. Returns 0 and *out (malloc'd), -ENOENT,
 * -EFBIG, or another error with why filled. */
static int ac_read(proxy *p, const char *key, unsigned char **out, size_t *len, unsigned *status, char *why,
		   size_t n)
{
	if (p->up) {
		xfer *x = xfer_new(p->up, XM_GET_BUFFER, TF_AREA_AC, key);
		unsigned st;
		if (!x) {
			snprintf(why, n, "out of memory");
			*status = 500;
			return -ENOMEM;
		}
		xfer_submit(x);
		xfer_wait(x, XS_DONE);
		st = xfer_outcome(x, why, n);
		if (st == 200) {
			pthread_mutex_lock(&x->mu);
			*out = x->body ? x->body : malloc(1);
			*len = x->body_len;
			x->body = NULL;
			pthread_mutex_unlock(&x->mu);
		}
		xfer_unref(x);
		*status = st;
		if (st == 200 && !*out) {
			snprintf(why, n, "out of memory");
			*status = 500;
			return -ENOMEM;
		}
		return st == 200 ? 0 : st == 404 ? -ENOENT : -EIO;
	} else {
		int fd = disk_open(p, TF_AREA_AC, key);
		struct stat sb;
		ssize_t got;
		size_t at = 0;
		if (fd == -ENOENT) {
			*status = 404;
			return -ENOENT;
		}
		if (fd < 0 || fstat(fd, &sb) < 0) {
			snprintf(why, n, "cannot read ac/%s in the disk cache %s: %s", key, p->disk,
				 strerror(fd < 0 ? -fd : errno));
			if (fd >= 0)
				close(fd);
			*status = 502;
			return -EIO;
		}
		if ((uint64_t)sb.st_size > AC_MAX_BYTES) {
			close(fd);
			snprintf(why, n, "ac/%s in the disk cache %s is larger than %zu MiB", key, p->disk,
				 AC_MAX_BYTES >> 20);
			*status = 502;
			return -EFBIG;
		}
		*out = malloc((size_t)sb.st_size + 1);
		while (*out && at < (size_t)sb.st_size && (got = read(fd, *out + at, (size_t)sb.st_size - at)) > 0)
			at += (size_t)got;
		close(fd);
		if (!*out || at != (size_t)sb.st_size) {
			free(*out);
			*out = NULL;
			snprintf(why, n, "cannot read ac/%s in the disk cache %s", key, p->disk);
			*status = 502;
			return -EIO;
		}
		*len = at;
		*status = 200;
		return 0;
	}
}

/* ---- --remote_validate_outputs: the blobs an ActionResult names ------------------------- */

typedef struct blob_ref {
	char hash[KEY_LEN + 1];
	int64_t size;
} blob_ref;

typedef struct blob_list {
	blob_ref *v;
	size_t n, cap;
} blob_list;

static bool pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		unsigned char b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

/* Reads the next field: its number, wire type, and for length-delimited
 * fields the bytes. Other fields are skipped. */
static bool pb_field(const unsigned char **p, const unsigned char *end, uint32_t *num, const unsigned char **sub,
		     size_t *sublen, uint64_t *val)
{
	uint64_t key, len;

	if (!pb_varint(p, end, &key) || (key >> 3) == 0 || (key >> 3) > UINT32_MAX)
		return false;
	*num = (uint32_t)(key >> 3);
	*sub = NULL;
	*sublen = 0;
	switch (key & 7) {
	case 0:
		return pb_varint(p, end, val);
	case 1:
		if (end - *p < 8)
			return false;
		*p += 8;
		return true;
	case 2:
		if (!pb_varint(p, end, &len) || len > (uint64_t)(end - *p))
			return false;
		*sub = *p;
		*sublen = (size_t)len;
		*p += len;
		return true;
	case 5:
		if (end - *p < 4)
			return false;
		*p += 4;
		return true;
	default:
		return false; /* groups: not in REAPI */
	}
}

/* A Digest message (1 hash, 2 size_bytes) into the list; empty blobs are
 * always present and not listed. */
static bool pb_digest(const unsigned char *p, size_t len, blob_list *l)
{
	const unsigned char *end = p + len, *sub;
	size_t sublen;
	uint32_t num;
	uint64_t val = 0;
	blob_ref b = { .size = 0 };
	bool have_hash = false;

	while (p < end) {
		if (!pb_field(&p, end, &num, &sub, &sublen, &val))
			return false;
		if (num == 1 && sub) {
			if (!is_hex_key((const char *)sub, sublen))
				return false;
			memcpy(b.hash, sub, KEY_LEN);
			b.hash[KEY_LEN] = '\0';
			have_hash = true;
		} else if (num == 2 && !sub) {
			if (val > ((uint64_t)1 << 53))
				return false;
			b.size = (int64_t)val;
		}
	}
	if (!have_hash)
		return false;
	if (b.size == 0 || !strcmp(b.hash, TF_EMPTY_SHA256))
		return true;
	if (l->n >= VALIDATE_MAX_BLOBS)
		return false;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		blob_ref *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return false;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = b;
	return true;
}

/* The output files' blobs (unless inlined), the output directories' Tree
 * blobs, and stdout/stderr. false: the ActionResult does not parse. */
static bool ar_blobs(const unsigned char *p, size_t len, blob_list *l)
{
	const unsigned char *end = p + len, *sub;
	size_t sublen;
	uint32_t num;
	uint64_t val;

	while (p < end) {
		if (!pb_field(&p, end, &num, &sub, &sublen, &val))
			return false;
		if ((num == 2 || num == 3) && sub) { /* OutputFile, OutputDirectory */
			const unsigned char *q = sub, *qend = sub + sublen, *d = NULL, *s2;
			size_t dlen = 0, s2len;
			uint32_t n2;
			bool inlined = false;
			while (q < qend) {
				if (!pb_field(&q, qend, &n2, &s2, &s2len, &val))
					return false;
				if (num == 2 && n2 == 2 && s2) {
					d = s2;
					dlen = s2len;
				} else if (num == 2 && n2 == 5 && s2 && s2len > 0) {
					inlined = true;
				} else if (num == 3 && n2 == 3 && s2) {
					d = s2;
					dlen = s2len;
				}
			}
			if (!d)
				return false; /* an output without a digest */
			if (!inlined && !pb_digest(d, dlen, l))
				return false;
		} else if ((num == 6 || num == 8) && sub) { /* stdout_digest, stderr_digest */
			if (!pb_digest(sub, sublen, l))
				return false;
		}
	}
	return true;
}

/* Is every blob the ActionResult names in the upstream? 1 yes; 0 no (why
 * names the first missing one); -1 the upstream could not tell (why). */
static int validate(proxy *p, const unsigned char *ar, size_t len, char *why, size_t n)
{
	blob_list l = { 0 };
	int r = 1;

	if (!ar_blobs(ar, len, &l)) {
		snprintf(why, n, "the ActionResult does not parse (or names more than %d blobs)", VALIDATE_MAX_BLOBS);
		free(l.v);
		return 0;
	}
	for (size_t i = 0; i < l.n && r == 1; i += VALIDATE_BATCH) {
		size_t m = l.n - i < VALIDATE_BATCH ? l.n - i : VALIDATE_BATCH;
		xfer *xs[VALIDATE_BATCH] = { 0 };
		if (p->disk) {
			for (size_t k = 0; k < m && r == 1; k++) {
				struct stat sb;
				int fd = disk_open(p, TF_AREA_CAS, l.v[i + k].hash);
				if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size == l.v[i + k].size) {
					close(fd);
					continue;
				}
				if (fd >= 0)
					close(fd);
				snprintf(why, n, "output blob %s/%lld is missing from the disk cache", l.v[i + k].hash,
					 (long long)l.v[i + k].size);
				r = 0;
			}
			continue;
		}
		for (size_t k = 0; k < m; k++) {
			xs[k] = xfer_new(p->up, XM_HEAD, TF_AREA_CAS, l.v[i + k].hash);
			if (xs[k])
				xfer_submit(xs[k]);
		}
		for (size_t k = 0; k < m; k++) {
			char w[MSG_MAX];
			unsigned st;
			if (!xs[k]) {
				if (r == 1) {
					snprintf(why, n, "out of memory");
					r = -1;
				}
				continue;
			}
			xfer_wait(xs[k], XS_DONE);
			st = xfer_outcome(xs[k], w, sizeof(w));
			if (r == 1 && st == 404) {
				snprintf(why, n, "output blob %s/%lld is missing upstream", l.v[i + k].hash,
					 (long long)l.v[i + k].size);
				r = 0;
			} else if (r == 1 && st == 200 && xs[k]->length >= 0 && xs[k]->length != l.v[i + k].size) {
				snprintf(why, n, "output blob %s/%lld has %lld bytes upstream", l.v[i + k].hash,
					 (long long)l.v[i + k].size, (long long)xs[k]->length);
				r = 0;
			} else if (r == 1 && st != 200) {
				snprintf(why, n, "%s", w);
				r = -1;
			}
			xfer_unref(xs[k]);
		}
	}
	free(l.v);
	return r;
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

/* The answer to a HEAD: the entry's length, no body. libmicrohttpd sends a
 * callback response's size as Content-Length and, for HEAD, never reads it. */
static struct MHD_Response *head_response(int64_t length)
{
	return MHD_create_response_from_callback(length >= 0 ? (uint64_t)length : MHD_SIZE_UNKNOWN, 1024,
						 read_nothing, NULL, NULL);
}

static enum MHD_Result blob_get(proxy *p, struct MHD_Connection *c, req *r);

static enum MHD_Result ac_get(proxy *p, struct MHD_Connection *c, req *r)
{
	char why[MSG_MAX] = "";
	unsigned char *body = NULL;
	size_t len = 0;
	unsigned st;
	bq_item it = { .kind = BQ_HIT, .key = r->key };
	struct MHD_Response *resp;

	if (lost_has(p, r->key)) {
		atomic_fetch_add(&p->c.ac_lost, 1);
		return respond_text(r, c, 404, "ac/%s: outputs of this action are lost from the cache; a miss, "
					       "so that it runs again", r->key);
	}
	if (r->method == 'H') {
		it.kind = BQ_IS_LOST;
		if (bridge_call(p, &it) < 0)
			return respond_text(r, c, 503, "the proxy is shutting down");
		if (it.lost) {
			atomic_fetch_add(&p->c.ac_lost, 1);
			return respond_miss(r, c);
		}
		return blob_get(p, c, r); /* forwarded as a HEAD */
	}
	if (ac_read(p, r->key, &body, &len, &st, why, sizeof(why)) < 0) {
		if (st == 404) {
			atomic_fetch_add(&p->c.ac_misses, 1);
			return respond_miss(r, c);
		}
		return respond_text(r, c, st, "topfetch proxy: %s", why);
	}
	if (p->validate) {
		int v = validate(p, body, len, why, sizeof(why));
		if (v <= 0) {
			free(body);
			if (v < 0)
				return respond_text(r, c, 502, "topfetch proxy: cannot validate ac/%s: %s", r->key, why);
			atomic_fetch_add(&p->c.ac_invalid, 1);
			return respond_text(r, c, 404, "ac/%s: %s; a miss, so that the action runs again", r->key, why);
		}
	}
	it.data = body;
	it.len = len;
	if (bridge_call(p, &it) < 0) {
		free(body);
		return respond_text(r, c, 503, "the proxy is shutting down");
	}
	if (it.lost) {
		free(body);
		atomic_fetch_add(&p->c.ac_lost, 1);
		return respond_text(r, c, 404, "ac/%s: outputs of this action are lost from the cache; a miss, "
					       "so that it runs again", r->key);
	}
	atomic_fetch_add(&p->c.ac_hits, 1);
	atomic_fetch_add(&p->c.bytes_out, len);
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	return respond(r, c, 200, resp);
}

/* A CAS GET (streamed) or HEAD, or an AC HEAD. */
static enum MHD_Result blob_get(proxy *p, struct MHD_Connection *c, req *r)
{
	char why[MSG_MAX];
	struct MHD_Response *resp;
	body_stream *bs;
	unsigned st;
	xfer *x;

	if (r->area == TF_AREA_CAS && !strcmp(r->key, TF_EMPTY_SHA256)) /* the empty blob always exists */
		return respond_empty(r, c, 200);
	if (p->disk) {
		struct stat sb;
		int fd = disk_open(p, r->area, r->key);
		if (fd == -ENOENT)
			return respond_miss(r, c);
		if (fd < 0 || fstat(fd, &sb) < 0) {
			int e = fd < 0 ? -fd : errno;
			if (fd >= 0)
				close(fd);
			return respond_text(r, c, 502, "topfetch proxy: cannot read %s/%s in the disk cache %s: %s",
					    area_name(r->area), r->key, p->disk, strerror(e));
		}
		resp = MHD_create_response_from_fd64((uint64_t)sb.st_size, fd);
		if (!resp) {
			close(fd);
			return MHD_NO;
		}
		if (r->method == 'G')
			atomic_fetch_add(&p->c.bytes_out, (unsigned long)sb.st_size);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
		return respond(r, c, 200, resp);
	}
	x = xfer_new(p->up, r->method == 'H' ? XM_HEAD : XM_GET_STREAM, r->area, r->key);
	if (!x)
		return respond_text(r, c, 500, "topfetch proxy: out of memory");
	xfer_submit(x);
	xfer_wait(x, XS_HEADERS);
	st = xfer_outcome(x, why, sizeof(why));
	if (st != 200) {
		/* An error page is read and dropped: the connection stays usable. */
		xfer_unref(x);
		if (st == 404)
			return respond_miss(r, c);
		return respond_text(r, c, st, "topfetch proxy: %s", why);
	}
	if (r->method == 'H') {
		resp = head_response(x->length);
		xfer_unref(x);
		return respond(r, c, 200, resp);
	}
	bs = calloc(1, sizeof(*bs));
	if (bs)
		bs->md = EVP_MD_CTX_new();
	if (!bs || !bs->md || !EVP_DigestInit_ex(bs->md, EVP_sha256(), NULL)) {
		if (bs)
			EVP_MD_CTX_free(bs->md);
		free(bs);
		xfer_cancel(x);
		xfer_unref(x);
		return respond_text(r, c, 500, "topfetch proxy: out of memory");
	}
	bs->p = p;
	bs->x = x; /* the request's reference moves to the response */
	memcpy(bs->key, r->key, sizeof(bs->key));
	resp = MHD_create_response_from_callback(x->length >= 0 ? (uint64_t)x->length : MHD_SIZE_UNKNOWN,
						 MHD_BLOCK_BYTES, read_body, bs, free_body);
	if (!resp) {
		free_body(bs);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	return respond(r, c, 200, resp);
}

/* ---- PUT -------------------------------------------------------------------------------- */

static void req_fail(req *r, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void req_fail(req *r, unsigned status, const char *fmt, ...)
{
	va_list ap;

	if (r->fail)
		return;
	r->fail = status;
	va_start(ap, fmt);
	vsnprintf(r->fail_msg, sizeof(r->fail_msg), fmt, ap);
	va_end(ap);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* A temporary file in the sharded folder of key: renamed into place only
 * once complete (and, for CAS, verified). */
static int disk_tmp(proxy *p, req *r)
{
	char dir[PATH_MAX];
	int e;

	snprintf(dir, sizeof(dir), "%s/%s/%.2s", p->disk, area_name(r->area), r->key);
	if ((e = mkdir_p(dir, 0755)) < 0)
		return e;
	if (asprintf(&r->tmp, "%s/.tftmp.%ld.%lu", dir, (long)getpid(), atomic_fetch_add(&p->tmp_seq, 1)) < 0) {
		r->tmp = NULL;
		return -ENOMEM;
	}
	r->fd = open(r->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (r->fd < 0) {
		e = -errno;
		free(r->tmp);
		r->tmp = NULL;
		return e;
	}
	return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void disk_tmp_discard(req *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	if (r->tmp)
		unlink(r->tmp);
	free(r->tmp);
	r->tmp = NULL;
}

/* Closes and renames the temporary file into place. */
static int disk_tmp_commit(proxy *p, req *r)
{
	char final[PATH_MAX];
	int e = 0;

	if (close(r->fd) < 0)
		e = -errno;
	r->fd = -1;
	snprintf(final, sizeof(final), "%s/%s/%.2s/%s", p->disk, area_name(r->area), r->key, r->key);
	if (e == 0 && rename(r->tmp, final) < 0)
		e = -errno;
	if (e < 0)
		unlink(r->tmp);
	free(r->tmp);
	r->tmp = NULL;
	return e;
}

static enum MHD_Result put_begin(proxy *p, struct MHD_Connection *c, req *r)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	char *end;
	unsigned long long n;
	int e;

	if (!cl) {
		req_fail(r, 411, "a PUT needs a Content-Length");
		return MHD_YES;
	}
	errno = 0;
	n = strtoull(cl, &end, 10);
	if (errno || end == cl || *end || cl[0] == '-') {
		req_fail(r, 400, "bad Content-Length '%.40s'", cl);
		return MHD_YES;
	}
	r->expect = n;
	if (r->area == TF_AREA_AC) {
		atomic_fetch_add(&p->c.ac_puts, 1);
		if (n > AC_MAX_BYTES) /* answered at once (closing the connection): not worth reading */
			return respond_text(r, c, 413, "an action cache entry is limited to %zu MiB", AC_MAX_BYTES >> 20);
		r->body = malloc(n ? (size_t)n : 1);
		if (!r->body)
			req_fail(r, 500, "topfetch proxy: out of memory");
		return MHD_YES;
	}
	atomic_fetch_add(&p->c.cas_puts, 1);
	if (n == 0) {
		if (!strcmp(r->key, TF_EMPTY_SHA256)) {
			req_fail(r, 200, "%s", ""); /* the empty blob always exists */
		} else {
			req_fail(r, 400, "cas/%s: an empty body does not hash to this key; not stored", r->key);
		}
		return MHD_YES;
	}
	r->md = EVP_MD_CTX_new();
	if (!r->md || !EVP_DigestInit_ex(r->md, EVP_sha256(), NULL)) {
		req_fail(r, 500, "topfetch proxy: out of memory");
		return MHD_YES;
	}
	if (p->disk) {
		if ((e = disk_tmp(p, r)) < 0)
			req_fail(r, 500, "topfetch proxy: cannot write to the disk cache %s: %s", p->disk, strerror(-e));
		return MHD_YES;
	}
	r->x = xfer_new(p->up, XM_PUT_STREAM, TF_AREA_CAS, r->key);
	if (!r->x) {
		req_fail(r, 500, "topfetch proxy: out of memory");
		return MHD_YES;
	}
	r->x->put_size = (int64_t)n;
	xfer_submit(r->x);
	return MHD_YES;
}

static void put_data(proxy *p, req *r, const unsigned char *data, size_t n)
{
	char why[MSG_MAX];
	int e;

	if (r->fail)
		return; /* read and dropped: the answer is already decided */
	if (n > r->expect - r->got) {
		req_fail(r, 400, "the body is longer than its Content-Length");
		return;
	}
	atomic_fetch_add(&p->c.bytes_in, n);
	if (r->area == TF_AREA_AC) {
		memcpy(r->body + r->got, data, n);
		r->got += n;
		return;
	}
	r->got += n;
	EVP_DigestUpdate(r->md, data, n);
	if (p->disk) {
		if ((e = write_all(r->fd, data, n)) < 0)
			req_fail(r, 500, "topfetch proxy: cannot write to the disk cache %s: %s", p->disk, strerror(-e));
		return;
	}
	/* The last byte waits until the whole body hashes to the key: the
	 * upstream never receives a complete wrong blob. */
	if (r->got == r->expect) {
		r->hold = data[n - 1];
		r->held = true;
		n--;
	}
	if (n && xfer_push(r->x, data, n) < 0) {
		unsigned st = xfer_outcome(r->x, why, sizeof(why));
		if (st < 300)
			snprintf(why, sizeof(why), "upstream %s answered before the body was complete", r->x->what);
		req_fail(r, st < 300 ? 502 : st, "topfetch proxy: %s", why);
	}
}

/* Gives the answer decided earlier; drops what an upload started. */
static enum MHD_Result respond_fail(req *r, struct MHD_Connection *c)
{
	struct MHD_Response *resp;

	if (r->x)
		xfer_cancel(r->x);
	disk_tmp_discard(r);
	if (r->fail_msg[0] && !r->fail_allow)
		return respond_text(r, c, r->fail, "%s", r->fail_msg);
	if (r->fail_allow)
		atomic_fetch_add(&r->p->c.bad, 1);
	resp = MHD_create_response_from_buffer(strlen(r->fail_msg), r->fail_msg, MHD_RESPMEM_MUST_COPY);
	if (resp && r->fail_allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, PUT");
	return respond(r, c, r->fail, resp);
}

static enum MHD_Result put_end(proxy *p, struct MHD_Connection *c, req *r)
{
	char why[MSG_MAX], got[KEY_LEN + 1];
	unsigned st;
	int e;

	if (!r->fail && r->got != r->expect)
		req_fail(r, 400, "the body is shorter than its Content-Length");
	if (r->fail)
		return respond_fail(r, c);
	if (r->area == TF_AREA_AC) {
		bq_item it = { .kind = BQ_PUT, .key = r->key, .data = r->body, .len = (size_t)r->expect };
		if (p->disk) {
			if ((e = disk_tmp(p, r)) < 0 || (e = write_all(r->fd, r->body, (size_t)r->expect)) < 0 ||
			    (e = disk_tmp_commit(p, r)) < 0) {
				disk_tmp_discard(r);
				return respond_text(r, c, 500, "topfetch proxy: cannot write ac/%s to the disk cache %s: %s",
						    r->key, p->disk, strerror(-e));
			}
			st = 200;
		} else {
			xfer *x = xfer_new(p->up, XM_PUT_BUFFER, TF_AREA_AC, r->key);
			if (!x)
				return respond_text(r, c, 500, "topfetch proxy: out of memory");
			x->body = r->body; /* borrowed: this request waits for the transfer */
			x->body_len = (size_t)r->expect;
			x->put_size = (int64_t)r->expect;
			xfer_submit(x);
			xfer_wait(x, XS_DONE);
			st = xfer_outcome(x, why, sizeof(why));
			xfer_unref(x);
			if (st >= 300)
				return respond_text(r, c, st == 404 ? 502 : st, "topfetch proxy: %s",
						    st == 404 ? "the upstream answered 404 to a PUT" : why);
		}
		if (bridge_call(p, &it) < 0)
			return respond_text(r, c, 503, "the proxy is shutting down");
		return respond_empty(r, c, st);
	}
	md_final_hex(r->md, got);
	if (strcmp(got, r->key)) {
		if (r->x)
			xfer_cancel(r->x);
		disk_tmp_discard(r);
		return respond_text(r, c, 400, "cas/%s: the body's SHA-256 is %s; not stored", r->key, got);
	}
	if (p->disk) {
		if ((e = disk_tmp_commit(p, r)) < 0)
			return respond_text(r, c, 500, "topfetch proxy: cannot write cas/%s to the disk cache %s: %s",
					    r->key, p->disk, strerror(-e));
		return respond_empty(r, c, 200);
	}
	if (r->held && xfer_push(r->x, &r->hold, 1) < 0) {
		/* answered early: the outcome below says how */
	}
	xfer_push_eof(r->x);
	xfer_wait(r->x, XS_DONE);
	st = xfer_outcome(r->x, why, sizeof(why));
	if (st >= 300)
		return respond_text(r, c, st == 404 ? 502 : st, "topfetch proxy: %s",
				    st == 404 ? "the upstream answered 404 to a PUT" : why);
	return respond_empty(r, c, st);
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	proxy *p = cls;
	req *r = *con_cls;
	(void)version;

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		r->p = p;
		r->fd = -1;
		*con_cls = r;
		atomic_fetch_add(&p->active, 1);
		atomic_fetch_add(&p->c.requests, 1);
		/* Decide now, answer once the request is read: an answer queued
		 * before that makes libmicrohttpd close the connection. */
		if (!strcmp(method, MHD_HTTP_METHOD_GET))
			r->method = 'G';
		else if (!strcmp(method, MHD_HTTP_METHOD_HEAD))
			r->method = 'H';
		else if (!strcmp(method, MHD_HTTP_METHOD_PUT))
			r->method = 'P';
		if (parse_path(url, &r->area, r->key) < 0) {
			req_fail(r, 400, "bad path '%.200s': want [/prefix]/ac/<64 lowercase hex> or "
					 "[/prefix]/cas/<64 lowercase hex>", url);
		} else if (!r->method) {
			req_fail(r, 405, "method %.20s not allowed: GET, HEAD or PUT\n", method);
			r->fail_allow = true;
		} else if (atomic_load(&p->closing)) {
			req_fail(r, 503, "the proxy is shutting down");
		} else if (r->method == 'P') {
			return put_begin(p, c, r);
		}
		return MHD_YES;
	}
	if (r->responded) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (r->method == 'P')
			put_data(p, r, (const unsigned char *)upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->fail)
		return respond_fail(r, c);
	if (r->method == 'P')
		return put_end(p, c, r);
	return r->area == TF_AREA_AC ? ac_get(p, c, r) : blob_get(p, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	proxy *p = cls;
	req *r = *con_cls;
	(void)c;
	(void)toe;

	if (!r)
		return;
	*con_cls = NULL;
	if (r->x) {
		xfer_cancel(r->x); /* no-op once it ended */
		xfer_wait(r->x, XS_DONE);
		xfer_unref(r->x);
	}
	disk_tmp_discard(r);
	EVP_MD_CTX_free(r->md);
	free(r->body);
	free(r);
	atomic_fetch_sub(&p->active, 1);
}

/* ---- the command ---------------------------------------------------------------------------- */

static void on_lost(const tf_lost_output *l, void *user)
{
	proxy *p = user;

	if (l->action_key && is_hex_key(l->action_key, strlen(l->action_key)))
		lost_add(p, l->action_key);
	cli_report_lost(&p->progress, l, "lookups of that action now answer a cache miss");
}

/* HOST:PORT or [V6]:PORT into a socket address. Loopback only unless any. */
static int parse_listen(const char *spec, bool any, struct sockaddr_storage *ss, socklen_t *sslen, char *why,
			size_t n)
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
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	if (ss->ss_family == AF_INET)
		loopback = (ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	else {
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

static uint64_t progress_sig(const proxy *p, const tf_session_stats *st)
{
	return atomic_load(&p->c.requests) * 1000003u + st->files_fetched * 7919u + st->files_present * 31u +
	       st->lost * 17u + st->failed * 13u + st->targets_completed * 11u + st->actions;
}

static void progress_line(proxy *p, bool force, uint64_t *last_sig)
{
	tf_session_stats st;
	uint64_t now = cli_now_ns(), sig;
	char bytes[32];

	tf_session_get_stats(p->s, &st);
	sig = progress_sig(p, &st);
	if (!force && (now - p->progress.last_ns < (p->progress.tty ? 100000000ull : 5000000000ull) ||
		       sig == *last_sig))
		return;
	*last_sig = sig;
	p->progress.last_ns = now;
	cli_human_bytes((double)st.bytes_fetched, bytes, sizeof(bytes));
	fprintf(stderr,
		"%s[proxy] %lu requests (%lu AC hits, %lu misses, %lu answered lost); %llu actions; %llu of %llu "
		"files in place, %s fetched%s; %llu targets complete%s",
		p->progress.tty ? "\r\033[K" : "", atomic_load(&p->c.requests), atomic_load(&p->c.ac_hits),
		atomic_load(&p->c.ac_misses), atomic_load(&p->c.ac_lost), (unsigned long long)st.actions,
		(unsigned long long)(st.files_fetched + st.files_present), (unsigned long long)st.files_wanted, bytes,
		st.lost + st.failed ? ", with errors" : "", (unsigned long long)st.targets_completed,
		p->progress.tty ? "" : "\n");
	fflush(stderr);
}

/* One turn of the main loop: wait for work (at most timeout_ms), answer the
 * bridge, let the session handle what finished (and read new BEP). */
static int main_turn(proxy *p, int timeout_ms, bool *session_failed)
{
	struct pollfd pf[2] = { { .fd = tf_session_fd(p->s), .events = POLLIN }, { .fd = p->evfd, .events = POLLIN } };
	tf_error err = { 0 };
	uint64_t v;
	int n;

	if (poll(pf, 2, timeout_ms) > 0 && (pf[1].revents & POLLIN) && read(p->evfd, &v, sizeof(v)) < 0) {
		/* EAGAIN: another turn took it */
	}
	n = bridge_run(p);
	if (tf_session_dispatch(p->s, 0, &err) < 0) {
		if (!*session_failed)
			cli_progress_error(&p->progress,
					   "topfetch proxy: %s (requests are still forwarded; nothing more is recorded)",
					   err.message);
		*session_failed = true;
	}
	return n;
}

static void proxy_free(proxy *p)
{
	if (p->evfd >= 0)
		close(p->evfd);
	pthread_mutex_destroy(&p->bq_mu);
	pthread_cond_destroy(&p->bq_cv);
	pthread_mutex_destroy(&p->lost_mu);
	keyset_fini(&p->lost);
	free(p->disk);
}

int cmd_proxy(int argc, char **argv)
{
	tf_session_options o = { 0 };
	const char *listen = NULL, *bep = NULL, *mode = NULL, *groups_csv = NULL;
	cli_list headers = { 0 }, regexes = { 0 }, groups = { 0 };
	char *groups_buf = NULL, why[MSG_MAX], bytes[32], down[32], up[32];
	bool listen_any = false, exit_after_build = false, session_failed = false, forced = false;
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	struct MHD_Daemon *mhd = NULL;
	MHD_socket lfd = MHD_INVALID_SOCKET;
	tf_session_stats st;
	tf_error err = { 0 };
	proxy p;
	uint64_t last_sig = 0;
	int rc, fr;

	memset(&p, 0, sizeof(p));
	p.evfd = -1;
	curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread starts */
	pthread_mutex_init(&p.bq_mu, NULL);
	pthread_cond_init(&p.bq_cv, NULL);
	pthread_mutex_init(&p.lost_mu, NULL);
	tf_remote_options_init(&o.remote);
	const cli_flag flags[] = {
		{ "listen", CLI_STRING, &listen, "HOST:PORT",
		  "Where Bazel connects (bazel --remote_cache=http://HOST:PORT). Loopback only (127.0.0.1:PORT, "
		  "[::1]:PORT, localhost:PORT) unless --listen_any; port 0 picks a free one (printed). Required." },
		{ "listen_any", CLI_BOOL, &listen_any, "",
		  "Allow a non-loopback --listen address. Whoever reaches it reads and writes the cache with your "
		  "credentials." },
		CLI_REMOTE_FLAGS(&o.remote, &headers),
		{ "output_dir", CLI_STRING, &o.output_dir, "DIR",
		  "Where wanted outputs go, at their exec-root-relative path (bazel-out/k8-fastbuild/bin/pkg/a.txt); "
		  "created if missing. Required." },
		{ "store", CLI_STRING, &o.store_path, "FILE",
		  "The metadata store (SQLite): every output of every ActionResult seen, and lost actions, kept "
		  "across runs (default: a private store removed at exit)." },
		{ "bep_follow", CLI_STRING, &bep, "FILE",
		  "Follow the build's BEP as Bazel writes it (its --build_event_binary_file; it need not exist "
		  "yet): each TargetComplete makes its files top-level and they are fetched during the build. "
		  "One build per proxy run." },
		{ "exit_after_build", CLI_BOOL, &exit_after_build, "",
		  "With --bep_follow: stop on our own once the followed BEP reached last_message and every fetch "
		  "ended (for CI: start the proxy in the background, run bazel, wait for the proxy)." },
		{ "remote_download_outputs", CLI_STRING, &mode, "toplevel|all|minimal",
		  "Which outputs to fetch: of top-level targets (default), of every action, or only what "
		  "--remote_download_regex asks for." },
		{ "remote_download_regex", CLI_LIST, &regexes, "REGEX",
		  "Also fetch every output whose exec-root-relative path matches (POSIX extended); repeatable." },
		{ "output_groups", CLI_STRING, &groups_csv, "A,B",
		  "Output groups of a completed target whose files are wanted (default: default)." },
		{ "remote_validate_outputs", CLI_BOOL, &p.validate, "",
		  "On an action cache hit, check (HEAD) that every output blob, Tree and stdout/stderr it names is "
		  "still in the cache; if one is gone, answer a miss so the action runs again." },
		{ "build_event_binary_file", CLI_STRING, &o.build_event_binary_file, "FILE",
		  "Write the followed BEP again, each TargetComplete only once its files are in place, with digest "
		  "and length filled in." },
		{ "build_event_json_file", CLI_STRING, &o.build_event_json_file, "FILE", "The same as JSON lines." },
		{ "build_event_publish", CLI_STRING, &o.build_event_publish, "URL",
		  "Publish the same events on a nanomsg PUB socket (ipc://PATH or tcp://127.0.0.1:PORT)." },
	};
	const cli_command cmd = {
		.name = "proxy",
		.usage = "topfetch proxy --listen=127.0.0.1:PORT --remote_cache=URL|DIR --output_dir=DIR "
			 "[--bep_follow=FILE] [flags]",
		.summary =
			"Sits between Bazel and its HTTP cache: bazel build --remote_cache=http://127.0.0.1:PORT ...\n"
			"GET, HEAD and PUT on [/prefix]/ac/<sha256> and [/prefix]/cas/<sha256> are forwarded to\n"
			"--remote_cache (an HTTP cache, or a directory in Bazel's --disk_cache layout; the prefix\n"
			"is ignored, as bazel-remote does), bodies streamed both ways; a CAS upload whose bytes do\n"
			"not hash to its key is refused (400) and not stored. Every ActionResult that passes (an\n"
			"action cache hit, an accepted upload) is recorded; with --bep_follow each completed\n"
			"target's files are fetched into --output_dir while the build runs, verified and written\n"
			"atomically. When a wanted file is gone from the cache, the action that made it is marked\n"
			"lost (in --store too) and its next lookup answers a miss, so Bazel runs it again.\n"
			"Upstream misses (404, 204) answer 404; upstream failures 502 (504 on a timeout) with a\n"
			"text body naming the upstream URL (never its credentials). Forwarded requests are not\n"
			"retried (Bazel retries them); --remote_retries is for topfetch's own fetches.\n\n"
			"Stopping: SIGINT or SIGTERM is the normal way to stop the proxy. It stops accepting, lets\n"
			"requests in flight finish (up to 30 s), waits for the fetches already started, flushes the\n"
			"store and the BEP files, prints a summary line and exits with the code of the work: 0, 1,\n"
			"or 3 if the followed BEP ended without last_message (or was never created). A second\n"
			"signal abandons what is left and exits 8. --exit_after_build stops the same way on its\n"
			"own once the followed build ended.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN)
		goto out;
	rc = EXIT_USAGE;
	if (!listen || !o.remote.remote_cache || !o.output_dir) {
		fprintf(stderr, "topfetch proxy: --listen, --remote_cache and --output_dir are required.\n"
				"Run 'topfetch proxy --help' for the flags.\n");
		goto out;
	}
	if (exit_after_build && !bep) {
		fprintf(stderr, "topfetch proxy: --exit_after_build needs --bep_follow (the build whose end it waits for).\n");
		goto out;
	}
	if (mode && tf_download_mode_parse(mode, &o.policy.mode) < 0) {
		fprintf(stderr, "topfetch proxy: --remote_download_outputs=%s: want toplevel, all or minimal\n", mode);
		goto out;
	}
	if (groups_csv && cli_split_csv(groups_csv, &groups, &groups_buf) < 0)
		goto out;
	if (parse_listen(listen, listen_any, &ss, &sslen, why, sizeof(why)) < 0) {
		fprintf(stderr, "topfetch proxy: %s\n", why);
		goto out;
	}
	o.remote.remote_headers = headers.items;
	o.remote.n_remote_headers = headers.n;
	o.policy.regexes = regexes.items;
	o.policy.n_regexes = regexes.n;
	o.policy.output_groups = groups.items;
	o.policy.n_output_groups = groups.n;
	o.on_lost = on_lost;
	o.user = &p;

	/* The upstream. */
	if (!strncmp(o.remote.remote_cache, "http://", 7) || !strncmp(o.remote.remote_cache, "https://", 8)) {
		p.up = upstream_new(&o.remote, why, sizeof(why));
		if (!p.up) {
			fprintf(stderr, "topfetch proxy: %s\n", why);
			goto out;
		}
		p.display = p.up->display;
	} else if (strstr(o.remote.remote_cache, "://") && strncmp(o.remote.remote_cache, "file://", 7)) {
		fprintf(stderr, "topfetch proxy: --remote_cache=%s: use an http(s):// URL or a directory\n",
			o.remote.remote_cache);
		goto out;
	} else {
		const char *dir = !strncmp(o.remote.remote_cache, "file://", 7) ? o.remote.remote_cache + 7
										 : o.remote.remote_cache;
		char real[PATH_MAX];
		int e = mkdir_p(dir, 0755);
		if (e < 0 || !realpath(dir, real)) {
			fprintf(stderr, "topfetch proxy: --remote_cache=%s: cannot use the directory: %s\n", dir,
				strerror(e < 0 ? -e : errno));
			goto out;
		}
		p.disk = strdup(real);
		if (!p.disk)
			goto out;
		o.remote.remote_cache = p.disk;
		p.display = p.disk;
	}
	p.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p.evfd < 0) {
		fprintf(stderr, "topfetch proxy: eventfd: %s\n", strerror(errno));
		goto out;
	}
	p.s = tf_session_new(&o, &err);
	if (!p.s) {
		fprintf(stderr, "topfetch proxy: %s\n", err.message);
		goto out;
	}
	if (bep && tf_session_add_bep_file(p.s, bep, &err) < 0) {
		fprintf(stderr, "topfetch proxy: %s\n", err.message);
		goto out;
	}
	cli_install_signals();
	cli_progress_init(&p.progress);
	mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
				       MHD_USE_ITC | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			       0, NULL, NULL, on_request, &p, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			       MHD_OPTION_NOTIFY_COMPLETED, on_completed, &p, MHD_OPTION_CONNECTION_LIMIT,
			       MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S,
			       MHD_OPTION_CONNECTION_MEMORY_LIMIT, MHD_MEMORY_BYTES, MHD_OPTION_THREAD_STACK_SIZE,
			       MHD_STACK_BYTES, MHD_OPTION_END);
	if (!mhd) {
		fprintf(stderr, "topfetch proxy: cannot listen on %s (in use, or not an address of this machine?)\n",
			listen);
		goto out;
	}
	{
		const union MHD_DaemonInfo *di = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT);
		char host[INET6_ADDRSTRLEN] = "?";
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
		else
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
		fprintf(stderr, "topfetch proxy: listening on http://%s%s%s:%u, forwarding to %s\n",
			ss.ss_family == AF_INET6 ? "[" : "", host, ss.ss_family == AF_INET6 ? "]" : "",
			di ? (unsigned)di->port : 0u, p.display);
		fflush(stderr);
	}

	/* Serve until a signal, or (--exit_after_build) the followed build ended. */
	for (;;) {
		main_turn(&p, 50, &session_failed);
		progress_line(&p, false, &last_sig);
		if (cli_interrupted)
			break;
		if (exit_after_build && (tf_session_bep_complete(p.s) || session_failed))
			break;
	}
	cli_interrupted = 0;

	/* close: stop accepting, let requests in flight finish. */
	atomic_store(&p.draining, true);
	lfd = MHD_quiesce_daemon(mhd);
	/* New connections are refused at once rather than left in the backlog;
	 * the descriptor itself stays open until libmicrohttpd stopped, as its
	 * documentation asks. */
	if (lfd != MHD_INVALID_SOCKET)
		shutdown(lfd, SHUT_RDWR);
	{
		uint64_t deadline = cli_now_ns() + (uint64_t)DRAIN_S * 1000000000ull;
		while (atomic_load(&p.active) > 0 && cli_now_ns() < deadline && !cli_interrupted)
			main_turn(&p, 20, &session_failed);
	}
	forced = cli_interrupted != 0;
	/* stop: no more questions, no more upstream transfers; handlers still
	 * waiting wake with an error, then the connection threads end. */
	atomic_store(&p.closing, true);
	bridge_close(&p);
	upstream_close(p.up);
	MHD_stop_daemon(mhd);
	mhd = NULL;
	if (lfd != MHD_INVALID_SOCKET)
		close(lfd);
	upstream_free(p.up);
	p.up = NULL;

	/* Wait for the fetches already started (a second signal abandons them),
	 * then finish: the rest of the BEP, the gate, the store, the sinks.
	 * The session tells no count of fetches in flight; its counters settle
	 * when every wanted file did, and tf_session_finish (which cannot be
	 * interrupted) waits for whatever the counters miss, such as Tree reads.
	 * WAIT_IDLE_S bounds the wait if they never settle. */
	if (!forced) {
		uint64_t idle_since = cli_now_ns();
		for (;;) {
			tf_session_stats now;
			int n = tf_session_dispatch(p.s, 100, &err);
			tf_session_get_stats(p.s, &now);
			progress_line(&p, false, &last_sig);
			if (cli_interrupted || n < 0)
				break;
			if (n > 0)
				idle_since = cli_now_ns();
			if (now.files_wanted <= now.files_fetched + now.files_present + now.lost + now.failed ||
			    cli_now_ns() - idle_since > (uint64_t)WAIT_IDLE_S * 1000000000ull)
				break; /* finish below waits for whatever is left */
		}
		forced = cli_interrupted != 0;
	}
	if (forced) {
		tf_session_get_stats(p.s, &st);
		cli_progress_clear(&p.progress);
		fprintf(stderr, "topfetch proxy: interrupted twice; fetches in flight abandoned (files already in place "
				"stay, nothing partial is left); held build events dropped\n");
		fr = 0;
	} else {
		fr = tf_session_finish(p.s, &st, &err);
		cli_progress_clear(&p.progress);
	}
	cli_human_bytes((double)st.bytes_fetched, bytes, sizeof(bytes));
	cli_human_bytes((double)atomic_load(&p.c.bytes_out), down, sizeof(down));
	cli_human_bytes((double)atomic_load(&p.c.bytes_in), up, sizeof(up));
	printf("topfetch: %s%llu of %llu files in place (%llu fetched, %llu already present), %s in %.2f s; %llu lost, "
	       "%llu failed, %llu without a digest; %llu actions recorded, %llu of %llu targets complete; %lu requests "
	       "(%lu AC hits, %lu AC misses, %lu answered lost, %lu failed validation, %lu uploads, %lu refused, "
	       "%lu upstream errors; %s to Bazel, %s from it)\n",
	       forced ? "INTERRUPTED: " : "", (unsigned long long)(st.files_fetched + st.files_present),
	       (unsigned long long)st.files_wanted, (unsigned long long)st.files_fetched,
	       (unsigned long long)st.files_present, bytes, cli_elapsed_s(&p.progress), (unsigned long long)st.lost,
	       (unsigned long long)st.failed, (unsigned long long)st.files_unknown, (unsigned long long)st.actions,
	       (unsigned long long)(st.targets_completed - st.targets_failed), (unsigned long long)st.targets_completed,
	       atomic_load(&p.c.requests), atomic_load(&p.c.ac_hits), atomic_load(&p.c.ac_misses),
	       atomic_load(&p.c.ac_lost), atomic_load(&p.c.ac_invalid),
	       atomic_load(&p.c.ac_puts) + atomic_load(&p.c.cas_puts), atomic_load(&p.c.bad),
	       atomic_load(&p.c.upstream_errors), down, up);
	fflush(stdout);
	if (st.files_unknown)
		fprintf(stderr,
			"topfetch proxy: %llu file%s of completed targets had no digest: no ActionResult that passed through "
			"the proxy (in this run or, with --store, an earlier one) names %s. Outputs of actions Bazel does "
			"not cache (sh_binary's symlink, for one) are never in the cache; the failed targets in the BEP "
			"name the files.\n",
			(unsigned long long)st.files_unknown, st.files_unknown == 1 ? "" : "s",
			st.files_unknown == 1 ? "it" : "them");
	if (forced) {
		rc = EXIT_INTERRUPTED;
	} else if (fr < 0) {
		fprintf(stderr, "topfetch proxy: %s\n", err.message);
		rc = cli_exit_for_error(fr);
	} else {
		rc = st.lost || st.failed || st.files_unknown || st.conflicts || st.targets_failed ||
				     atomic_load(&p.c.record_errors)
			     ? EXIT_SOME_FAILED
			     : EXIT_ALL_OK;
	}
out:
	if (mhd) {
		atomic_store(&p.closing, true);
		bridge_close(&p);
		upstream_close(p.up);
		MHD_stop_daemon(mhd);
	}
	upstream_free(p.up);
	tf_session_free(p.s);
	proxy_free(&p);
	cli_list_free(&headers);
	cli_list_free(&regexes);
	cli_list_free(&groups);
	free(groups_buf);
	curl_global_cleanup();
	return rc;
}
