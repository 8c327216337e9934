/* The proxy core: requests in wire-neutral terms, the upstream through the
 * downloader's streams, the session through a bridge.
 *
 * Threads: requests run on their front end's threads and may block on the
 * upstream (a stream) and on the session's thread (the bridge). Only the
 * session's thread calls tf_session_*: request threads hand it ActionResults
 * and "is this action lost?" questions as items on their own stack, in a FIFO
 * woken through an eventfd, and wait on a condition variable for the answer.
 * A hit is answered only after the session recorded it, so a TargetComplete
 * the client writes afterwards always finds its outputs known.
 *
 * The lost set (actions answered as misses) is written by the session's
 * thread and read by every request under its own mutex. */
#include "proxy/proxy.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "downloader/downloader.h"
#include "proto/wire.h"
#include "remote_execution.pb-c.h"

#define PX_LOST_MAX ((size_t)1 << 20)  /* remembered lost actions (the store has them all) */
#define PX_VALIDATE_MAX_BLOBS 100000   /* output blobs checked per ActionResult */
#define PX_PRESENT_MAX ((size_t)1 << 22) /* blobs known present in this build (validation) */
#define PX_SIZES_MAX ((size_t)1 << 22)   /* blob sizes remembered for a gRPC upstream */
#define PX_TREE_MAX ((size_t)64 << 20)   /* a Tree read whole to learn its files' sizes */

typedef enum px_ask {
	PX_ASK_HIT,     /* a lookup found this result: record it unless the action is lost */
	PX_ASK_PUT,     /* the upstream stored this result: clear the lost mark, record it */
	PX_ASK_IS_LOST, /* only ask */
} px_ask;

/* A question for the session's thread; lives on the asking thread's stack. */
typedef struct px_item {
	struct px_item *next;
	px_ask kind;
	const char *key;
	const void *data; /* borrowed ActionResult */
	size_t len;
	const char *invocation; /* the BES invocation that asked (NULL: none) */
	bool done, lost;
} px_item;

struct px_proxy {
	tf_downloader *up;
	bool disk;
	bool validate;
	void (*on_problem)(const char *message, void *user);
	void *user;
	atomic_bool closing;
	atomic_uint_least64_t c[12]; /* px_counters, in its field order */
	atomic_uint_least64_t builds; /* px_new_build calls */
	uint64_t started_ns;
	/* the bridge */
	pthread_mutex_t bq_mu;
	pthread_cond_t bq_cv;
	px_item *bq_head, *bq_tail;
	bool bq_closed;
	int evfd;
	/* actions answered as misses (values unused) */
	pthread_mutex_t lost_mu;
	tf__map lost;
	/* blobs validation found upstream during this build ("hash/size"; values unused) */
	tf__map present;
	/* A gRPC upstream reads a CAS blob by hash and size, and Bazel's GET
	 * /cas/HASH names no size: the sizes of the blobs the ActionResults,
	 * their Trees and the uploads that passed named ("hash" -> size_value()). */
	bool need_sizes;
	pthread_mutex_t size_mu;
	tf__map sizes;
	tf_session *s; /* the session's thread only */
	px_bes *bes;   /* BES invocations' sessions (the session's thread only) */
};

enum { C_REQUESTS, C_AC_HITS, C_AC_MISSES, C_AC_LOST, C_AC_INVALID, C_AC_PUTS, C_CAS_PUTS, C_REFUSED,
       C_UPSTREAM_ERRORS, C_BYTES_OUT, C_BYTES_IN, C_RECORD_ERRORS };

static void count(px_proxy *p, int which, uint64_t n)
{
	atomic_fetch_add(&p->c[which], n);
}

static void set(px_result *r, px_status st, const char *fmt, ...) TF__PRINTF(3, 4);

static void set(px_result *r, px_status st, const char *fmt, ...)
{
	va_list ap;

	r->status = st;
	r->upstream_code = 0;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
}

/* What a downloader error code means for the client. */
static void set_upstream(px_proxy *p, px_result *r, int e, const char *why)
{
	switch (e) {
	case -ENOENT: set(r, PX_NOT_FOUND, "%s", why); return;
	case -ETIMEDOUT: set(r, PX_TIMEOUT, "upstream %s", why); break;
	case -ESHUTDOWN: set(r, PX_UNAVAILABLE, "the proxy is shutting down"); return;
	case -ENOMEM: set(r, PX_INTERNAL, "topfetch proxy: out of memory"); return;
	default: set(r, PX_UPSTREAM, "upstream %s", why); break;
	}
	count(p, C_UPSTREAM_ERRORS, 1);
}

/* ---- setup ----------------------------------------------------------------------------- */

px_proxy *px_new(const px_options *o, tf_error *err)
{
	const char *rc = o->remote->remote_cache;
	tf_remote_options ro = *o->remote;
	px_proxy *p;

	if (!rc || !*rc) {
		tf__errf(err, -EINVAL, "no upstream: pass --remote_cache=URL or a directory");
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	p->evfd = -1;
	pthread_mutex_init(&p->bq_mu, NULL);
	pthread_cond_init(&p->bq_cv, NULL);
	pthread_mutex_init(&p->lost_mu, NULL);
	pthread_mutex_init(&p->size_mu, NULL);
	tf__map_init(&p->sizes);
	tf__map_init(&p->lost);
	tf__map_init(&p->present);
	p->started_ns = tf__now_ns();
	p->validate = o->validate;
	p->on_problem = o->on_problem;
	p->user = o->user;
	p->disk = !strstr(rc, "://") || !strncmp(rc, "file://", 7);
	if (p->disk) {
		/* A proxy fills its disk cache: make the directory, as Bazel does. */
		const char *dir = !strncmp(rc, "file://", 7) ? rc + 7 : rc;
		int e = dl_mkdirs(dir);
		if (e < 0) {
			tf__errf(err, e, "--remote_cache=%s: cannot use the directory: %s", dir, strerror(-e));
			goto fail;
		}
	}
	/* Forwarded requests are not retried (the client retries them). */
	ro.remote_retries = 0;
	p->up = tf_downloader_new(&ro, NULL, err);
	if (!p->up)
		goto fail;
	p->need_sizes = dl_downloader_needs_sizes(p->up);
	p->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->evfd < 0) {
		tf__errf(err, -errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	return p;
fail:
	px_free(p);
	return NULL;
}

void px_free(px_proxy *p)
{
	if (!p)
		return;
	if (p->up)
		dl_downloader_close(p->up);
	tf_downloader_free(p->up);
	if (p->evfd >= 0)
		close(p->evfd);
	pthread_mutex_destroy(&p->bq_mu);
	pthread_cond_destroy(&p->bq_cv);
	pthread_mutex_destroy(&p->lost_mu);
	pthread_mutex_destroy(&p->size_mu);
	tf__map_fini(&p->sizes);
	tf__map_fini(&p->lost);
	tf__map_fini(&p->present);
	free(p);
}

const char *px_upstream(const px_proxy *p)
{
	return dl_downloader_display(p->up);
}

void px_get_counters(const px_proxy *p, px_counters *out)
{
	uint64_t *f[] = { &out->requests, &out->ac_hits, &out->ac_misses, &out->ac_lost, &out->ac_invalid,
			  &out->ac_puts, &out->cas_puts, &out->refused, &out->upstream_errors, &out->bytes_out,
			  &out->bytes_in, &out->record_errors };
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		*f[i] = atomic_load(&((px_proxy *)p)->c[i]);
}

void px_count_request(px_proxy *p)
{
	count(p, C_REQUESTS, 1);
}

void px_count_refused(px_proxy *p)
{
	count(p, C_REFUSED, 1);
}

/* ---- blob sizes (a gRPC upstream) ------------------------------------------------------ */

/* A map value: never NULL; the size, and whether the blob is a Tree. */
#define SIZE_VALUE(size, tree) ((void *)(uintptr_t)((uint64_t)(size) << 2 | (tree) << 1 | 1u))

static void size_note(px_proxy *p, const char *hash, int64_t size, bool tree)
{
	if (!p->need_sizes || !hash || size <= 0 || !tf__is_sha256_hex(hash, strlen(hash)))
		return;
	pthread_mutex_lock(&p->size_mu);
	if (p->sizes.n >= PX_SIZES_MAX) { /* bounded: start over (a forgotten blob reads as a miss) */
		tf__map_fini(&p->sizes);
		tf__map_init(&p->sizes);
	}
	/* A Tree stays known as one when an upload names the same hash. */
	if (!tree) {
		uintptr_t old = (uintptr_t)tf__map_get(&p->sizes, hash);
		tree = old & 2u;
	}
	tf__map_put(&p->sizes, hash, SIZE_VALUE(size, tree ? 1u : 0u)); /* out of memory: a later miss */
	pthread_mutex_unlock(&p->size_mu);
}

/* The size of a blob seen before (0: unknown); *tree: it is a Tree. */
static int64_t size_find(px_proxy *p, const char *hash, bool *tree)
{
	uintptr_t v;

	*tree = false;
	if (!p->need_sizes)
		return 0;
	pthread_mutex_lock(&p->size_mu);
	v = (uintptr_t)tf__map_get(&p->sizes, hash);
	pthread_mutex_unlock(&p->size_mu);
	*tree = v & 2u;
	return (int64_t)(v >> 2);
}

static void size_note_digest(px_proxy *p, const Build__Bazel__Remote__Execution__V2__Digest *d, bool tree)
{
	if (d)
		size_note(p, d->hash, d->size_bytes, tree);
}

/* The blobs an ActionResult names. */
static void sizes_from_result(px_proxy *p, const void *data, size_t len)
{
	Build__Bazel__Remote__Execution__V2__ActionResult *m;

	if (!p->need_sizes ||
	    pw_check(&build__bazel__remote__execution__v2__action_result__descriptor, data, len, NULL, NULL) < 0 ||
	    !(m = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, data)))
		return;
	for (size_t i = 0; i < m->n_output_files; i++)
		size_note_digest(p, m->output_files[i]->digest, false);
	for (size_t i = 0; i < m->n_output_directories; i++)
		size_note_digest(p, m->output_directories[i]->tree_digest, true);
	size_note_digest(p, m->stdout_digest, false);
	size_note_digest(p, m->stderr_digest, false);
	build__bazel__remote__execution__v2__action_result__free_unpacked(m, NULL);
}

static void sizes_from_dir(px_proxy *p, const Build__Bazel__Remote__Execution__V2__Directory *d)
{
	for (size_t i = 0; d && i < d->n_files; i++)
		size_note_digest(p, d->files[i]->digest, false);
}

/* The files a Tree (an output directory) holds. */
static void sizes_from_tree(px_proxy *p, const void *data, size_t len)
{
	Build__Bazel__Remote__Execution__V2__Tree *t;

	if (pw_check(&build__bazel__remote__execution__v2__tree__descriptor, data, len, NULL, NULL) < 0 ||
	    !(t = build__bazel__remote__execution__v2__tree__unpack(NULL, len, data)))
		return;
	sizes_from_dir(p, t->root);
	for (size_t i = 0; i < t->n_children; i++)
		sizes_from_dir(p, t->children[i]);
	build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
}

/* ---- the lost set and the bridge ------------------------------------------------------ */

static bool lost_has(px_proxy *p, const char *key)
{
	bool r;
	pthread_mutex_lock(&p->lost_mu);
	r = tf__map_get(&p->lost, key) != NULL;
	pthread_mutex_unlock(&p->lost_mu);
	return r;
}

static void lost_add(px_proxy *p, const char *key)
{
	pthread_mutex_lock(&p->lost_mu);
	/* Past the cap (or out of memory) the store still answers, through the bridge. */
	if (p->lost.n < PX_LOST_MAX)
		tf__map_put(&p->lost, key, p);
	pthread_mutex_unlock(&p->lost_mu);
}

static void lost_remove(px_proxy *p, const char *key)
{
	pthread_mutex_lock(&p->lost_mu);
	tf__map_remove(&p->lost, key);
	pthread_mutex_unlock(&p->lost_mu);
}

void px_note_lost(px_proxy *p, const char *action_key)
{
	if (action_key && tf__is_sha256_hex(action_key, strlen(action_key)))
		lost_add(p, action_key);
}

uint64_t px_builds_served(const px_proxy *p)
{
	return atomic_load(&((px_proxy *)p)->builds);
}

double px_uptime_s(const px_proxy *p)
{
	return (double)(tf__now_ns() - p->started_ns) / 1e9;
}

void px_new_build(px_proxy *p)
{
	atomic_fetch_add(&p->builds, 1);
	pthread_mutex_lock(&p->lost_mu);
	tf__map_fini(&p->present);
	tf__map_init(&p->present);
	pthread_mutex_unlock(&p->lost_mu);
}

static void present_key(const tf_digest *d, char *key, size_t n)
{
	snprintf(key, n, "%s/%lld", d->hash, (long long)d->size);
}

/* Drops from v the blobs already found upstream in this build. */
static size_t drop_present(px_proxy *p, tf_digest *v, size_t n)
{
	char key[TF_HASH_HEX_LEN + 32];
	size_t k = 0;

	pthread_mutex_lock(&p->lost_mu);
	for (size_t i = 0; i < n; i++) {
		present_key(&v[i], key, sizeof(key));
		if (!tf__map_get(&p->present, key))
			v[k++] = v[i];
	}
	pthread_mutex_unlock(&p->lost_mu);
	return k;
}

static void note_present(px_proxy *p, const tf_digest *v, size_t n)
{
	char key[TF_HASH_HEX_LEN + 32];

	pthread_mutex_lock(&p->lost_mu);
	for (size_t i = 0; i < n && p->present.n < PX_PRESENT_MAX; i++) {
		present_key(&v[i], key, sizeof(key));
		tf__map_put(&p->present, key, p);
	}
	pthread_mutex_unlock(&p->lost_mu);
}

void px_set_session(px_proxy *p, tf_session *s)
{
	p->s = s;
}

void px_set_bes(px_proxy *p, px_bes *b)
{
	p->bes = b;
}

int px_fd(const px_proxy *p)
{
	return p->evfd;
}

/* Asks the session's thread and waits for the answer. -ESHUTDOWN when the
 * bridge is closed. */
static int bridge_call(px_proxy *p, px_item *it)
{
	uint64_t one = 1;
	bool wake;

	pthread_mutex_lock(&p->bq_mu);
	if (p->bq_closed || !p->s) {
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
		/* The counter cannot overflow; the session's loop also polls. */
	}
	while (!it->done)
		pthread_cond_wait(&p->bq_cv, &p->bq_mu);
	pthread_mutex_unlock(&p->bq_mu);
	return 0;
}

static bool session_lost(px_proxy *p, const char *key)
{
	if (lost_has(p, key))
		return true;
	if (tf_session_action_lost(p->s, key)) {
		lost_add(p, key);
		return true;
	}
	return false;
}

static void record(px_proxy *p, const char *key, const char *invocation, const void *data, size_t len)
{
	tf_error err = { 0 };
	char msg[TF_ERROR_MESSAGE_MAX + 64];

	if (tf_session_action_executed(p->s, key, NULL, data, len, &err) < 0) {
		count(p, C_RECORD_ERRORS, 1);
		snprintf(msg, sizeof(msg), "topfetch proxy: not recorded: %s", err.message);
		if (p->on_problem)
			p->on_problem(msg, p->user);
	}
	if (p->bes)
		px_bes_record(p->bes, invocation, key, data, len);
}

int px_run(px_proxy *p)
{
	px_item *list, *it, *next;
	tf_error err = { 0 };
	uint64_t v;
	int n = 0;

	if (read(p->evfd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing signalled; the list is looked at anyway */
	}
	pthread_mutex_lock(&p->bq_mu);
	list = p->bq_head;
	p->bq_head = p->bq_tail = NULL;
	pthread_mutex_unlock(&p->bq_mu);
	for (it = list; it; it = it->next) {
		n++;
		switch (it->kind) {
		case PX_ASK_HIT:
			it->lost = session_lost(p, it->key);
			if (!it->lost)
				record(p, it->key, it->invocation, it->data, it->len);
			break;
		case PX_ASK_PUT:
			/* The client ran the action again: its new result replaces the lost
			 * one (the session clears the store's mark when it records it). */
			lost_remove(p, it->key);
			record(p, it->key, it->invocation, it->data, it->len);
			break;
		case PX_ASK_IS_LOST:
			it->lost = session_lost(p, it->key);
			break;
		}
	}
	if (!list)
		return 0;
	/* Bazel gets its answers once what they recorded is durable: one
	 * commit for the whole batch. */
	if (tf_session_commit(p->s, &err) < 0) {
		count(p, C_RECORD_ERRORS, 1);
		if (p->on_problem) {
			char msg[TF_ERROR_MESSAGE_MAX + 64];
			snprintf(msg, sizeof(msg), "topfetch proxy: not recorded: %s", err.message);
			p->on_problem(msg, p->user);
		}
	}
	pthread_mutex_lock(&p->bq_mu);
	for (it = list; it; it = next) {
		next = it->next;
		it->done = true;
	}
	pthread_cond_broadcast(&p->bq_cv);
	pthread_mutex_unlock(&p->bq_mu);
	return n;
}

void px_close(px_proxy *p)
{
	atomic_store(&p->closing, true);
	px_run(p);
	pthread_mutex_lock(&p->bq_mu);
	p->bq_closed = true;
	pthread_mutex_unlock(&p->bq_mu);
	px_run(p);
	dl_downloader_close(p->up);
}

/* ---- --remote_validate_outputs ---------------------------------------------------------- */

/* Adds a digest to the list; empty blobs always exist and are not listed.
 * false: not a digest, or too many. */
static bool add_blob(const Build__Bazel__Remote__Execution__V2__Digest *d, tf_digest **v, size_t *n,
		     size_t *cap)
{
	if (!d || !d->hash || tf_digest_parse(d->hash, d->size_bytes, &(tf_digest){ 0 }, NULL) < 0)
		return false;
	if (d->size_bytes == 0 || !strcmp(d->hash, TF_EMPTY_SHA256))
		return true;
	if (*n >= PX_VALIDATE_MAX_BLOBS)
		return false;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		tf_digest *nv = realloc(*v, c * sizeof(*nv));
		if (!nv)
			return false;
		*v = nv;
		*cap = c;
	}
	tf_digest_parse(d->hash, d->size_bytes, &(*v)[(*n)++], NULL);
	return true;
}

/* Is every blob the ActionResult names (output files unless inlined, output
 * directories' Trees, stdout, stderr) upstream? 1 yes; 0 no (why names the
 * first missing one); negative: the upstream could not tell (why). */
static int validate(px_proxy *p, const unsigned char *ar, size_t len, char *why, size_t n)
{
	Build__Bazel__Remote__Execution__V2__ActionResult *m =
		build__bazel__remote__execution__v2__action_result__unpack(NULL, len, ar);
	tf_digest *v = NULL;
	size_t nv = 0, cap = 0, missing = 0;
	bool ok = m != NULL;
	int r;

	for (size_t i = 0; ok && i < m->n_output_files; i++)
		if (!m->output_files[i]->contents.len)
			ok = add_blob(m->output_files[i]->digest, &v, &nv, &cap);
	for (size_t i = 0; ok && i < m->n_output_directories; i++)
		ok = add_blob(m->output_directories[i]->tree_digest, &v, &nv, &cap);
	if (ok && m->stdout_digest)
		ok = add_blob(m->stdout_digest, &v, &nv, &cap);
	if (ok && m->stderr_digest)
		ok = add_blob(m->stderr_digest, &v, &nv, &cap);
	if (m)
		build__bazel__remote__execution__v2__action_result__free_unpacked(m, NULL);
	if (!ok) {
		free(v);
		snprintf(why, n, "the ActionResult does not parse (or names more than %d blobs)",
			 PX_VALIDATE_MAX_BLOBS);
		return 0;
	}
	/* One HEAD per blob and build: the rest were found before. */
	nv = drop_present(p, v, nv);
	r = nv ? dl_find_missing(p->up, TF_AREA_CAS, v, nv, &missing, why, n) : 1;
	if (r == 1)
		note_present(p, v, nv);
	if (r == 0)
		snprintf(why, n, "output blob %s/%lld is missing %s", v[missing].hash, (long long)v[missing].size,
			 p->disk ? "from the disk cache" : "upstream");
	free(v);
	return r;
}

/* ---- requests -------------------------------------------------------------------------- */

static bool closing(px_proxy *p, px_result *r)
{
	if (!atomic_load(&p->closing))
		return false;
	set(r, PX_UNAVAILABLE, "the proxy is shutting down");
	return true;
}

static void answer_lost(px_proxy *p, const char *key, px_result *r)
{
	count(p, C_AC_LOST, 1);
	set(r, PX_NOT_FOUND, "ac/%s: outputs of this action are lost from the cache; a miss, so that it runs again",
	    key);
}

void px_ac_get(px_proxy *p, const char *key, tf__buf *body, px_result *r)
{
	px_ac_get_for(p, key, NULL, body, r);
}

void px_ac_get_for(px_proxy *p, const char *key, const char *invocation, tf__buf *body, px_result *r)
{
	px_item it = { .kind = PX_ASK_HIT, .key = key, .invocation = invocation };
	char why[PX_MESSAGE_MAX];
	int e;

	tf__buf_init(body, PX_AC_MAX_BYTES);
	if (closing(p, r))
		return;
	if (lost_has(p, key)) {
		answer_lost(p, key, r);
		return;
	}
	e = dl_get_mem(p->up, TF_AREA_AC, key, PX_AC_MAX_BYTES, body, why, sizeof(why));
	if (e == -ENOENT) {
		count(p, C_AC_MISSES, 1);
		set(r, PX_NOT_FOUND, "ac/%s not found", key);
		return;
	}
	if (e < 0) {
		set_upstream(p, r, e, why);
		return;
	}
	if (p->validate) {
		int v = validate(p, body->data, body->len, why, sizeof(why));
		if (v <= 0) {
			tf__buf_fini(body);
			if (v < 0) {
				count(p, C_UPSTREAM_ERRORS, 1);
				set(r, PX_UPSTREAM, "topfetch proxy: cannot validate ac/%s: %s", key, why);
				return;
			}
			count(p, C_AC_INVALID, 1);
			set(r, PX_NOT_FOUND, "ac/%s: %s; a miss, so that the action runs again", key, why);
			return;
		}
	}
	it.data = body->data ? body->data : (const void *)"";
	it.len = body->len;
	if (bridge_call(p, &it) < 0) {
		tf__buf_fini(body);
		set(r, PX_UNAVAILABLE, "the proxy is shutting down");
		return;
	}
	if (it.lost) {
		tf__buf_fini(body);
		answer_lost(p, key, r);
		return;
	}
	sizes_from_result(p, body->data, body->len);
	count(p, C_AC_HITS, 1);
	count(p, C_BYTES_OUT, body->len);
	set(r, PX_OK, "%s", "");
}

void px_head(px_proxy *p, tf_area area, const char *key, int64_t *length, px_result *r)
{
	char why[PX_MESSAGE_MAX];
	tf_error err = { 0 };
	dl_stream *s;
	int e;

	*length = -1;
	if (closing(p, r))
		return;
	if (area == TF_AREA_CAS && !strcmp(key, TF_EMPTY_SHA256)) { /* the empty blob always exists */
		*length = 0;
		set(r, PX_OK, "%s", "");
		return;
	}
	if (area == TF_AREA_AC) {
		px_item it = { .kind = PX_ASK_IS_LOST, .key = key };
		if (lost_has(p, key)) {
			answer_lost(p, key, r);
			return;
		}
		if (bridge_call(p, &it) < 0) {
			set(r, PX_UNAVAILABLE, "the proxy is shutting down");
			return;
		}
		if (it.lost) {
			answer_lost(p, key, r);
			return;
		}
	}
	{
		bool tree;
		int64_t size = area == TF_AREA_CAS ? size_find(p, key, &tree) : 0;
		s = dl_stream_open(p->up, DL_OP_HEAD, area, key, size, 0, &err);
	}
	if (!s) {
		set(r, PX_INTERNAL, "topfetch proxy: %s", err.message);
		return;
	}
	e = dl_stream_wait(s, length, why, sizeof(why));
	dl_stream_free(s);
	if (e < 0) {
		set_upstream(p, r, e, why);
		return;
	}
	set(r, PX_OK, "%s", "");
}

struct px_get {
	px_proxy *p;
	dl_stream *s; /* NULL: the empty blob */
	bool tree;    /* a Tree of a gRPC upstream: read whole (capped) to learn its files' sizes */
	tf__buf body;
};

px_get *px_cas_get(px_proxy *p, const char *key, int64_t *length, px_result *r)
{
	char why[PX_MESSAGE_MAX];
	tf_error err = { 0 };
	px_get *g;
	int e;

	*length = -1;
	if (closing(p, r))
		return NULL;
	g = calloc(1, sizeof(*g));
	if (!g) {
		set(r, PX_INTERNAL, "topfetch proxy: out of memory");
		return NULL;
	}
	g->p = p;
	tf__buf_init(&g->body, PX_TREE_MAX);
	set(r, PX_OK, "%s", "");
	if (!strcmp(key, TF_EMPTY_SHA256)) { /* the empty blob always exists */
		*length = 0;
		return g;
	}
	g->s = dl_stream_open(p->up, DL_OP_GET, TF_AREA_CAS, key, size_find(p, key, &g->tree), 0, &err);
	if (!g->s) {
		free(g);
		set(r, PX_INTERNAL, "topfetch proxy: %s", err.message);
		return NULL;
	}
	e = dl_stream_wait(g->s, length, why, sizeof(why));
	if (e < 0) {
		px_get_free(g);
		set_upstream(p, r, e, why);
		return NULL;
	}
	return g;
}

ssize_t px_get_read(px_get *g, void *buf, size_t max)
{
	char why[PX_MESSAGE_MAX], msg[PX_MESSAGE_MAX + 128];
	ssize_t n;

	if (!g->s)
		return 0;
	n = dl_stream_read(g->s, buf, max, why, sizeof(why));
	if (n > 0) {
		count(g->p, C_BYTES_OUT, (uint64_t)n);
		if (g->tree && tf__buf_append(&g->body, buf, (size_t)n) < 0)
			g->tree = false; /* past the cap: its files' sizes stay unknown */
		return n;
	}
	if (n == 0 && g->tree) /* verified whole */
		sizes_from_tree(g->p, g->body.data, g->body.len);
	if (n < 0 && n != -ECANCELED) {
		count(g->p, C_UPSTREAM_ERRORS, 1);
		snprintf(msg, sizeof(msg), "topfetch proxy: %s: %s; the client's transfer was cut short",
			 dl_stream_what(g->s),
			 n == -EBADMSG ? "the upstream sent bytes of another hash" : why);
		if (g->p->on_problem)
			g->p->on_problem(msg, g->p->user);
	}
	return n;
}

void px_get_free(px_get *g)
{
	if (!g)
		return;
	dl_stream_free(g->s);
	tf__buf_fini(&g->body);
	free(g);
}

struct px_put {
	px_proxy *p;
	tf_area area;
	char key[TF_HASH_HEX_LEN + 1];
	int64_t size;
	uint64_t got;
	dl_stream *s;  /* CAS */
	tf__buf body;  /* AC */
	px_result fail; /* decided before the end: given then */
	bool failed;
	char invocation[PX_BES_ID_MAX + 1]; /* "" none */
};

void px_put_set_invocation(px_put *u, const char *invocation)
{
	if (invocation && px_bes_id_ok(invocation, strlen(invocation)))
		snprintf(u->invocation, sizeof(u->invocation), "%s", invocation);
}

px_put *px_put_begin(px_proxy *p, tf_area area, const char *key, int64_t size, px_result *r)
{
	tf_error err = { 0 };
	px_put *u;

	if (closing(p, r))
		return NULL;
	count(p, area == TF_AREA_AC ? C_AC_PUTS : C_CAS_PUTS, 1);
	if (area == TF_AREA_AC && (uint64_t)size > PX_AC_MAX_BYTES) {
		count(p, C_REFUSED, 1);
		set(r, PX_TOO_LARGE, "an action cache entry is limited to %zu MiB", PX_AC_MAX_BYTES >> 20);
		return NULL;
	}
	u = calloc(1, sizeof(*u));
	if (!u) {
		set(r, PX_INTERNAL, "topfetch proxy: out of memory");
		return NULL;
	}
	u->p = p;
	u->area = area;
	u->size = size;
	memcpy(u->key, key, TF_HASH_HEX_LEN + 1);
	tf__buf_init(&u->body, PX_AC_MAX_BYTES);
	if (area == TF_AREA_CAS && size == 0) {
		if (!strcmp(key, TF_EMPTY_SHA256))
			set(&u->fail, PX_OK, "%s", ""); /* the empty blob always exists */
		else
			set(&u->fail, PX_BAD_REQUEST, "cas/%s: an empty body does not hash to this key; not stored", key);
		u->failed = true;
		return u;
	}
	if (area == TF_AREA_CAS) {
		u->s = dl_stream_open(p->up, DL_OP_PUT, TF_AREA_CAS, key, size, 0, &err);
		if (!u->s) {
			set(&u->fail, PX_INTERNAL, "topfetch proxy: %s", err.message);
			u->failed = true;
		}
	}
	return u;
}

static void put_fail(px_put *u, int e, const char *why)
{
	if (u->failed)
		return;
	u->failed = true;
	if (e == -EMSGSIZE) {
		set(&u->fail, PX_BAD_REQUEST, "the body is longer than its Content-Length");
		return;
	}
	set_upstream(u->p, &u->fail, e, why);
}

void px_put_data(px_put *u, const void *data, size_t n)
{
	char why[PX_MESSAGE_MAX];
	int e;

	if (u->failed)
		return; /* read and dropped: the answer is already decided */
	if (n > (uint64_t)u->size - u->got) {
		put_fail(u, -EMSGSIZE, NULL);
		return;
	}
	u->got += n;
	count(u->p, C_BYTES_IN, n);
	if (u->area == TF_AREA_AC) {
		if (tf__buf_append(&u->body, data, n) < 0) {
			set(&u->fail, PX_INTERNAL, "topfetch proxy: out of memory");
			u->failed = true;
		}
		return;
	}
	e = dl_stream_write(u->s, data, n);
	if (e == -EPIPE) {
		/* The upstream ended first: its answer says why. */
		e = dl_stream_finish(u->s, NULL, why, sizeof(why));
		if (e != 0) /* 0: a gRPC cache had the blob and said so before the body went */
			put_fail(u, e == -ENOENT ? -EIO : e, why);
	} else if (e < 0) {
		put_fail(u, e, strerror(-e));
	}
}

void px_put_end(px_put *u, px_result *r)
{
	px_proxy *p = u->p;
	char why[PX_MESSAGE_MAX];
	long code = 0;
	int e;

	if (!u->failed && u->got != (uint64_t)u->size) {
		set(&u->fail, PX_BAD_REQUEST, "the body is shorter than its Content-Length");
		u->failed = true;
	}
	if (u->failed) {
		*r = u->fail;
		if (r->status == PX_BAD_REQUEST)
			count(p, C_REFUSED, 1);
		return;
	}
	if (u->area == TF_AREA_AC) {
		px_item it = { .kind = PX_ASK_PUT, .key = u->key, .data = u->body.data ? u->body.data : (void *)"",
			       .len = u->body.len, .invocation = u->invocation[0] ? u->invocation : NULL };
		e = dl_put_mem(p->up, TF_AREA_AC, u->key, u->body.data ? u->body.data : (void *)"", u->body.len,
			       &code, why, sizeof(why));
		if (e < 0) {
			set_upstream(p, r, e == -ENOENT ? -EIO : e, why);
			return;
		}
		sizes_from_result(p, it.data, it.len);
		if (bridge_call(p, &it) < 0) {
			set(r, PX_UNAVAILABLE, "the proxy is shutting down");
			return;
		}
		set(r, PX_OK, "%s", "");
		r->upstream_code = code;
		return;
	}
	e = dl_stream_finish(u->s, &code, why, sizeof(why));
	if (e == -EBADMSG) {
		count(p, C_REFUSED, 1);
		set(r, PX_BAD_REQUEST, "%s", why);
		return;
	}
	if (e < 0) {
		set_upstream(p, r, e == -ENOENT ? -EIO : e, why);
		return;
	}
	size_note(p, u->key, u->size, false);
	set(r, PX_OK, "%s", "");
	r->upstream_code = code;
}

void px_put_free(px_put *u)
{
	if (!u)
		return;
	dl_stream_free(u->s);
	tf__buf_fini(&u->body);
	free(u);
}
