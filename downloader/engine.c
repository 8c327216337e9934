/* The background transfer engine.
 *
 * One thread owns a libcurl multi handle and every transfer. Callers hand it
 * requests through a bounded queue (tf_downloader_fetch) and take finished
 * requests back through a completion list that tf_downloader_dispatch drains
 * in the caller's thread, so callbacks never run concurrently with the
 * caller's own code.
 *
 * A transfer is one blob. Requests for a blob already in flight join its
 * transfer as extra destinations; a blob placed earlier in this downloader's
 * life is hard-linked (or copied) instead of fetched again. Bytes stream
 * through SHA-256 into a temporary file in the first destination's folder,
 * and only a verified file of the right size is renamed into place.
 *
 * A transfer is one of four modes: a verified file (tf_downloader_fetch), a
 * capped read into memory (tf_downloader_read), or a stream (dl_stream_*):
 * a GET whose body goes to a reader thread, a HEAD, or a PUT whose body comes
 * from a writer thread. A stream's bytes cross a bounded ring; when the ring
 * is full (GET) or empty (PUT) the curl transfer is paused and the other side
 * unpauses it through the poke list, so a blob of any size crosses in bounded
 * memory. Streams of a --disk_cache directory are plain file I/O in the
 * caller's thread with the same states and the same checks.
 *
 * Every transfer is in exactly one state (dl_state) and changes state only
 * through set_state(), which checks the transition. */
#include "downloader/downloader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define DL_MAX_OUTSTANDING 65536 /* accepted requests whose callback has not run */
#define DL_INDEX_MAX (1u << 20) /* blobs remembered; past this, ended ones are forgotten */
#define DL_URL_MAX 2048
#define DL_BACKOFF_INITIAL_MS 100
#define DL_BACKOFF_MAX_MS 5000
#define DL_CORRUPT_RETRIES 1 /* a wrong hash is tried once more, then reported */
#define DL_BUFFER_SIZE (64 * 1024)        /* receive buffer of a transfer... */
#define DL_BUFFER_SIZE_LARGE (1024 * 1024) /* ...and of one of a large blob: fewer, larger writes */
#define DL_BUFFER_SMALL_BLOB (12 * 1024) /* blobs up to this size fit libcurl's default 16 KiB */
/* Small blobs in the writer thread's hands (arriving, queued, being written)
 * at most: past it the engine writes them itself, so both threads do file
 * work when the file system is the slower side, and memory stays bounded
 * (256 x 12 KiB). */
#define DL_WRITE_JOBS 256
#define DL_OFFLOAD_MIN (4 * 1024 * 1024) /* blobs this large are hashed by the verifier thread */
#define DL_DIR_CACHE 16 /* open folders kept while transfers run */
#define DL_EVENTS 256   /* socket events taken per epoll_wait */
#define DL_RING_BYTES ((size_t)512 << 10) /* a stream's ring, each way */
#define DL_STREAM_BUFFER (128L << 10)      /* curl's receive and upload buffers for streams */
#define DL_BATCH_BLOB_MAX ((int64_t)1 << 20) /* blobs up to this size go in BatchReadBlobs calls... */
#define DL_BATCH_MAX_BLOBS 1000              /* ...at most this many a call */
#define DL_BATCH_OVERHEAD 100                /* answer bytes per blob besides its data */

typedef enum dl_state {
	DL_NEW,      /* created, not yet scheduled */
	DL_QUEUED,   /* waiting for a connection slot */
	DL_RUNNING,  /* its easy handle is in the multi */
	DL_ANSWERED, /* a stream: the cache's status line and headers are in */
	DL_VERIFYING, /* all bytes written; the verifier thread is finishing the hash */
	DL_BACKOFF,  /* a transient failure; waits until retry_at */
	DL_PLACED,   /* verified and at its final path; serves later requests by link */
	DL_FINISHED, /* ended without a file (lost, corrupt, failed, local) */
} dl_state;

static const char *const state_names[] = {
	[DL_NEW] = "new",         [DL_QUEUED] = "queued", [DL_RUNNING] = "running", [DL_ANSWERED] = "answered",
	[DL_VERIFYING] = "verifying",
	[DL_BACKOFF] = "backoff", [DL_PLACED] = "placed", [DL_FINISHED] = "finished",
};

typedef enum dl_mode {
	DL_MODE_FILE,   /* into a verified file at its destinations */
	DL_MODE_MEM,    /* into capped memory */
	DL_MODE_STREAM, /* a dl_stream: GET to a reader, HEAD, or PUT from a writer */
	DL_MODE_BATCH,  /* a gRPC BatchReadBlobs for several file transfers (its members) */
} dl_mode;

struct dl_completion;

/* One destination of a blob: a request waiting for its callback. */
typedef struct dl_dest {
	struct dl_dest *next;
	char *path;
	bool executable;
	tf_fetch_cb cb;
	void *user;
	struct dl_completion *c; /* allocated with the request: completing never allocates */
} dl_dest;

/* A bounded byte ring. */
typedef struct dl_ring {
	unsigned char *b;
	size_t cap, head, len;
} dl_ring;

/* The part of a stream transfer the engine and the caller's thread share
 * (under mu). The engine's dl_xfer holds one reference until it ends, the
 * caller one until dl_stream_free. */
struct dl_stream {
	tf_downloader *d;
	dl_op op;
	tf_area area;
	char hash[TF_HASH_HEX_LEN + 1];
	int64_t put_size;  /* PUT: the body's length */
	int64_t size;      /* GET, HEAD of a CAS blob: its size when known (> 0); PUT: put_size */
	size_t cap;        /* GET: most body bytes accepted (0: no cap) */
	char *what;        /* the URL or path without credentials, for messages */
	int refs;          /* under d->mu */
	struct dl_stream *add_next, *poke_next; /* under d->mu */
	bool poked;                  /* under d->mu */
	struct dl_xfer *x; /* engine thread only: the running transfer, NULL before and after */
	/* caller's thread only */
	EVP_MD_CTX *md;    /* CAS: the hash of the bytes so far */
	uint64_t done_bytes;  /* bytes handed to or taken from the caller */
	unsigned char hold;   /* PUT CAS: the last byte, sent once the hash matched */
	bool held, verified;
	int fd;               /* disk: the entry (GET/HEAD) or the temporary file (PUT) */
	char *tmp;            /* disk PUT: the temporary file's path */
	/* under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	dl_state state;    /* mirrors the transfer's: new, queued, running, answered, finished */
	long status;       /* HTTP status of the answer; 0 none */
	int64_t length;    /* Content-Length (disk: the file size), -1 unknown */
	int err;           /* 0, or why it ended early: -EFBIG (past cap), -ECANCELED, -ESHUTDOWN,
			      -ENOMEM */
	CURLcode result;   /* once finished */
	char errbuf[CURL_ERROR_SIZE];
	dl_ring ring;
	tf__buf over;      /* grpc GET: data past a full ring (one chunk's messages), read after it */
	size_t over_off;
	uint64_t moved;    /* body bytes through the ring */
	bool paused;       /* the curl side waits for the caller (ring full or empty) */
	bool eof;          /* PUT: every byte is in the ring */
	bool cancel;       /* the caller gave up */
	/* grpc: the bytes the call's body starts with (made at start; DL_OP_FIND:
	 * by the opener), and the answer of a HEAD, PUT or FIND (read once finished) */
	tf__buf greq, gans;
};

typedef struct dl_xfer {
	struct tf_downloader *d;
	dl_state state;
	dl_mode mode;
	tf_digest digest;
	struct dl_xfer *lnext;  /* reads or streams list */
	struct dl_xfer *qnext;  /* queued or backoff list */
	dl_dest *dests;         /* waiting requests; the first one gets the transfer's file */
	CURL *easy;
	EVP_MD_CTX *md;         /* inline hashing (small blobs) */
	dl_hashjob *job;        /* verifier-thread hashing (large blobs) */
	dl_writejob *wj;        /* a small blob's body, while it arrives (writer thread) */
	bool small;             /* this attempt's file is made by the writer thread */
	int dirfd, fd;          /* the temporary file and its folder, while running */
	struct dl_dir *dir;     /* the cache slot dirfd belongs to (NULL: dirfd is x's own) */
	char tmpname[32];
	int64_t received;
	int64_t in_flight; /* bytes of `received` counted in d->bytes_in_flight */
	int attempts, corrupt_attempts;
	bool h2c_again; /* asked again once after its cleartext HTTP/2 connection went (dl_backend_h2c_note) */
	uint64_t retry_at_ns;
	tf_result result;       /* meaningful once placed or finished */
	int local_errno;        /* set by the write callback when the disk refuses */
	/* Where the verified copy lives (placed), to link later requests from. */
	char *placed_path;
	bool placed_exec;
	struct stat placed_st;
	/* Reads into memory and streams: never indexed or shared. */
	tf_area area;
	tf__buf *mem;
	dl_stream *s;
	/* While the transfer is active (queued to finished): */
	char *url;    /* without credentials, for messages */
	char *errbuf; /* CURL_ERROR_SIZE */
	/* grpc: the answer being read; resume: the next attempt continues the
	 * temporary file at `received` (ByteStream.Read's read_offset). */
	dl_grpc_rx *grpc;
	bool resume;
	int64_t resumed_at; /* this attempt asked from this byte (0: from the start) */
	bool no_resume;     /* the server sent more than asked: it ignores read_offset */
	/* a grpc stream: how much of s->greq went; a PUT CAS's WriteRequest being
	 * sent, its data bytes, and the offset of the next one */
	size_t greq_off, wmsg_off;
	tf__buf wmsg;
	unsigned char *wtmp;
	int64_t woff;
	bool put_answered; /* a PUT's answer came (it may come before the body went) */
	/* a batch: the file transfers it reads (DL_RUNNING without a handle of their own) */
	struct dl_xfer **members;
	size_t nmembers;
	dl_silence silence; /* --remote_timeout of the running attempt */
} dl_xfer;

/* A finished request on its way back to the caller's thread. */
typedef struct dl_completion {
	struct dl_completion *next;
	tf_fetch_cb cb;
	void *user;
	tf_fetch_done done;
	char *path;
	char *message;
	bool message_static;
	tf__buf *mem; /* a read's bytes, handed to the callback */
} dl_completion;

/* A request on its way into the engine thread. */
typedef struct dl_request {
	struct dl_request *next;
	tf_digest digest;
	dl_dest *dest;
	tf_area area;
	size_t max_bytes; /* > 0: a read into memory of at most this many bytes */
} dl_request;

/* A folder below the root, opened by a confined walk, kept open so that many
 * files in one folder do not each walk the path again. */
typedef struct dl_dir {
	char *path; /* relative folder path; NULL = empty slot */
	int fd;
	int refs;   /* transfers and calls using fd now: not closed while > 0 */
	bool fresh; /* empty when opened: nothing in it predates this downloader's files */
	uint64_t used;
} dl_dir;

struct tf_downloader {
	dl_backend *backend;
	int rootfd;
	long pid;
	mode_t umask;
	bool trace; /* TOPFETCH_TRACE set: every state change on stderr (debugging aid) */
	int evfd;   /* completions are waiting: the caller's side reads it */
	int wakefd; /* the engine has new work (requests, streams, pokes, hashes) */
	int epfd;   /* the engine's sockets (libcurl's, through on_socket) and wakefd */
	int max_conn, retries;
	CURLM *multi;
	dl_hasher *hasher;
	dl_writer *writer; /* NULL: small blobs are written by the engine thread */
	pthread_t thread;
	bool thread_started;

	/* Shared with callers, under mu. */
	pthread_mutex_t mu;
	dl_request *in_head, *in_tail;
	dl_completion *done_head, *done_tail;
	_Atomic size_t outstanding; /* raised under mu (submit), lowered without it (dispatch) */
	bool signaled; /* evfd holds a count nobody has read yet */
	bool closing;
	tf_downloader_stats stats;
	/* Body bytes of file and memory transfers not settled yet (running or
	 * verifying): the progress line moves during a large blob. */
	_Atomic uint64_t bytes_in_flight;
	dl_stream *add_head, *add_tail;   /* streams to start */
	dl_stream *poke_head, *poke_tail; /* streams to unpause or cancel */

	/* Engine thread only. */
	tf__map index; /* "hash/size" -> dl_xfer of a file mode transfer */
	dl_xfer *queue_head, *queue_tail; /* DL_QUEUED, in arrival order */
	dl_xfer *backoff;                 /* DL_BACKOFF, unordered */
	dl_xfer *reads;                   /* every memory read, for teardown (linked by lnext) */
	dl_xfer *streams;                 /* every stream transfer (linked by lnext) */
	int running;   /* transfers in DL_RUNNING */
	int verifying; /* transfers in DL_VERIFYING */
	dl_writejob *wfree;  /* jobs to reuse */
	dl_writejob *wq;     /* jobs for the writer, handed over at the end of the round */
	int wjobs;           /* jobs in use (not in wfree): DL_WRITE_JOBS at most */
	CURL **idle_handles;
	bool *idle_plain; /* idle_handles[i] last made a plain GET, not reset (take_handle) */
	int nidle;
	unsigned tmp_counter;
	unsigned rand_state;
	dl_dir dirs[DL_DIR_CACHE];
	dl_dir root_dir; /* the output directory itself (fd rootfd, never closed by the cache) */
	uint64_t curl_due_ns; /* libcurl's timer (on_timer); UINT64_MAX: none */
	/* Completions and counts made during one engine round, handed over
	 * (under mu) once at its end: one lock and one wakeup for many. */
	dl_completion *pend_head, *pend_tail;
	tf_downloader_stats pend;
	uint64_t pend_settle; /* bytes leaving bytes_in_flight together with pend.bytes */
	uint64_t dir_clock;
};

/* Wakes the engine thread (any thread). A full counter (EAGAIN) is still a
 * wakeup. */
static void wake(tf_downloader *d)
{
	uint64_t one = 1;
	ssize_t r = write(d->wakefd, &one, sizeof(one));
	(void)r;
}

/* ---- transfer state -------------------------------------------------------- */

/* The one transition table, for every transfer and stream. */
static void check_transition(const char *key, dl_state from, dl_state to)
{
	static const unsigned allowed[] = {
		/* running, answered: a disk cache's stream (no queue, no connection) */
		[DL_NEW] = 1u << DL_QUEUED | 1u << DL_PLACED | 1u << DL_FINISHED | 1u << DL_RUNNING |
			   1u << DL_ANSWERED,
		/* placed: its first destination already held the blob */
		[DL_QUEUED] = 1u << DL_RUNNING | 1u << DL_PLACED | 1u << DL_FINISHED,
		[DL_RUNNING] = 1u << DL_BACKOFF | 1u << DL_QUEUED | 1u << DL_VERIFYING | 1u << DL_PLACED |
			       1u << DL_FINISHED | 1u << DL_ANSWERED,
		[DL_ANSWERED] = 1u << DL_FINISHED,
		[DL_VERIFYING] = 1u << DL_QUEUED | 1u << DL_PLACED | 1u << DL_FINISHED,
		[DL_BACKOFF] = 1u << DL_QUEUED | 1u << DL_FINISHED,
		[DL_PLACED] = 1u << DL_QUEUED, /* the placed copy vanished; fetch again */
		[DL_FINISHED] = 1u << DL_QUEUED, /* asked again later: a new attempt */
	};
	if (!(allowed[from] & (1u << to))) {
		/* A broken invariant, not a runtime condition: stop here, loudly. */
		fprintf(stderr, "topfetch: internal error: transfer %s: %s -> %s\n", key, state_names[from],
			state_names[to]);
		abort();
	}
}

/* The attempt's bytes leave bytes_in_flight: they were verified (and the
 * caller, holding d->mu, adds them to stats.bytes at once, so the two never
 * count them twice) or they are thrown away. */
static void settle_in_flight(dl_xfer *x)
{
	atomic_fetch_sub_explicit(&x->d->bytes_in_flight, (uint64_t)x->in_flight, memory_order_relaxed);
	x->in_flight = 0;
}

/* A verified attempt: its bytes leave bytes_in_flight and join stats.bytes
 * in the same step, when the round is published. */
static void settle_with_bytes(dl_xfer *x)
{
	x->d->pend.transfers++;
	x->d->pend.bytes += (uint64_t)x->received;
	x->d->pend_settle += (uint64_t)x->in_flight;
	x->in_flight = 0;
}

static void set_state(dl_xfer *x, dl_state to)
{
	check_transition(x->digest.hash, x->state, to);
	if (x->state == DL_VERIFYING)
		x->d->verifying--;
	if (to == DL_VERIFYING)
		x->d->verifying++;
	if (x->in_flight && to != DL_RUNNING && to != DL_VERIFYING)
		settle_in_flight(x);
	if (x->d->trace)
		fprintf(stderr, "trace: %s %s -> %s\n", x->digest.hash, state_names[x->state],
			state_names[to]);
	x->state = to;
	if (x->s) {
		pthread_mutex_lock(&x->s->mu);
		x->s->state = to;
		pthread_cond_broadcast(&x->s->cv);
		pthread_mutex_unlock(&x->s->mu);
	}
}

/* ---- index of file transfers by digest (core's map) --------------------------------- */

#define DL_KEY_MAX (TF_HASH_HEX_LEN + 24)

static void index_key(const tf_digest *dg, char key[DL_KEY_MAX])
{
	snprintf(key, DL_KEY_MAX, "%s/%lld", dg->hash, (long long)dg->size);
}

static dl_xfer *index_find(tf_downloader *d, const tf_digest *dg)
{
	char key[DL_KEY_MAX];
	index_key(dg, key);
	return tf__map_get(&d->index, key);
}

static int index_add(tf_downloader *d, dl_xfer *x)
{
	char key[DL_KEY_MAX];
	index_key(&x->digest, key);
	return tf__map_put(&d->index, key, x);
}

static void xfer_free(dl_xfer *x);

typedef struct dl_ended {
	dl_xfer **v;
	size_t n;
	bool all;
} dl_ended;

static void collect_ended(const char *key, void *value, void *user)
{
	dl_xfer *x = value;
	dl_ended *e = user;
	(void)key;
	if (e->all || x->state == DL_PLACED || x->state == DL_FINISHED)
		e->v[e->n++] = x;
}

/* Drops every transfer that has ended (or, all: every one): they only serve
 * later requests for the same blob, and the index must stay bounded. */
static void index_forget(tf_downloader *d, bool all, void (*drop)(tf_downloader *, dl_xfer *))
{
	dl_ended e = { .v = malloc((d->index.n + 1) * sizeof(*e.v)), .all = all };

	if (!e.v)
		return; /* tried again when the next blob arrives */
	tf__map_each(&d->index, collect_ended, &e);
	for (size_t i = 0; i < e.n; i++) {
		char key[DL_KEY_MAX];
		index_key(&e.v[i]->digest, key);
		tf__map_remove(&d->index, key);
		drop(d, e.v[i]);
	}
	free(e.v);
}

static void drop_ended(tf_downloader *d, dl_xfer *x)
{
	(void)d;
	xfer_free(x);
}

static void close_tmp(dl_xfer *x, bool remove);
static void dest_free(dl_dest *t);

/* Teardown: whatever state x is in (the engine thread has stopped). */
static void drop_any(tf_downloader *d, dl_xfer *x)
{
	if (x->easy) {
		curl_multi_remove_handle(d->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	close_tmp(x, true);
	for (dl_dest *t = x->dests, *tn; t; t = tn) {
		tn = t->next;
		dest_free(t);
	}
	xfer_free(x);
}

static void xfer_free(dl_xfer *x)
{
	if (!x)
		return;
	if (x->mem) {
		tf__buf_fini(x->mem);
		free(x->mem);
	}
	EVP_MD_CTX_free(x->md);
	free(x->placed_path);
	free(x->url);
	free(x->errbuf);
	if (x->grpc) {
		dl_grpc_rx_fini(x->grpc);
		free(x->grpc);
	}
	tf__buf_fini(&x->wmsg);
	free(x->wtmp);
	free(x->members);
	free(x->wj);
	free(x);
}

/* ---- completions --------------------------------------------------------------- */

static void dest_free(dl_dest *t)
{
	if (t) {
		free(t->path);
		free(t->c);
		free(t);
	}
}

static void completion_free(dl_completion *c)
{
	free(c->path);
	if (!c->message_static)
		free(c->message);
	if (c->mem) {
		tf__buf_fini(c->mem);
		free(c->mem);
	}
	free(c);
}

/* Hands one finished request back to the caller's thread. Takes t. */
static void complete_read(tf_downloader *d, dl_dest *t, const tf_digest *dg, tf_result r, bool transferred,
			  bool present, bool linked, int tries, const char *msg, tf__buf *mem);

static void complete(tf_downloader *d, dl_dest *t, const tf_digest *dg, tf_result r, bool transferred,
		     bool present, bool linked, int tries, const char *msg)
{
	complete_read(d, t, dg, r, transferred, present, linked, tries, msg, NULL);
}

/* Hands one finished request back to the caller's thread, with the bytes of a
 * read (taken) when mem is not NULL. Takes t. */
static void complete_read(tf_downloader *d, dl_dest *t, const tf_digest *dg, tf_result r, bool transferred,
			  bool present, bool linked, int tries, const char *msg, tf__buf *mem)
{
	dl_completion *c = t->c; /* allocated with the request */

	t->c = NULL;
	c->cb = t->cb;
	c->user = t->user;
	c->path = t->path;
	t->path = NULL;
	c->message = msg ? strdup(msg) : NULL;
	if (msg && !c->message) {
		c->message = (char *)"out of memory (the detail of this result was lost)";
		c->message_static = true;
	}
	c->done.result = r;
	c->done.path = c->path;
	c->done.digest = *dg;
	c->done.transferred = transferred;
	c->done.already_present = present;
	c->done.tries = tries;
	c->done.message = c->message;
	c->mem = mem;
	if (mem) {
		c->done.data = mem->data;
		c->done.len = mem->len;
	}
	dest_free(t);

	switch (r) {
	case TF_RESULT_OK:
		d->pend.files_ok++;
		d->pend.files_present += present;
		d->pend.files_linked += linked;
		break;
	case TF_RESULT_LOST: d->pend.lost++; break;
	case TF_RESULT_CORRUPT: d->pend.corrupt++; break;
	case TF_RESULT_FAILED: d->pend.failed++; break;
	case TF_RESULT_LOCAL: d->pend.local++; break;
	}
	c->next = NULL;
	if (d->pend_tail)
		d->pend_tail->next = c;
	else
		d->pend_head = c;
	d->pend_tail = c;
}

/* Hands the round's completions and counts to the caller's side: one lock,
 * and one signal until the caller reads it. Engine thread. */
static void publish(tf_downloader *d)
{
	uint64_t one = 1;
	const tf_downloader_stats *p = &d->pend;

	if (!d->pend_head && !p->attempts && !p->transfers && !d->pend_settle)
		return;
	pthread_mutex_lock(&d->mu);
	d->stats.files_ok += p->files_ok;
	d->stats.files_present += p->files_present;
	d->stats.files_linked += p->files_linked;
	d->stats.lost += p->lost;
	d->stats.corrupt += p->corrupt;
	d->stats.failed += p->failed;
	d->stats.local += p->local;
	d->stats.transfers += p->transfers;
	d->stats.attempts += p->attempts;
	/* Verified bytes move from in flight to done in one step. */
	d->stats.bytes += p->bytes;
	atomic_fetch_sub_explicit(&d->bytes_in_flight, d->pend_settle, memory_order_relaxed);
	if (d->pend_head) {
		if (d->done_tail)
			d->done_tail->next = d->pend_head;
		else
			d->done_head = d->pend_head;
		d->done_tail = d->pend_tail;
		if (!d->signaled && write(d->evfd, &one, sizeof(one)) == sizeof(one))
			d->signaled = true;
	}
	pthread_mutex_unlock(&d->mu);
	d->pend_head = d->pend_tail = NULL;
	memset(&d->pend, 0, sizeof(d->pend));
	d->pend_settle = 0;
}

/* ---- placing files --------------------------------------------------------------- */

static void make_tmpname(tf_downloader *d, char *out, size_t n)
{
	snprintf(out, n, DL_TMP_PREFIX "%ld.%u", d->pid, d->tmp_counter++);
}

/* Closes the cached folders no transfer holds (all: every one, at teardown). */
static void dirs_flush(tf_downloader *d, bool all)
{
	for (int i = 0; i < DL_DIR_CACHE; i++) {
		dl_dir *e = &d->dirs[i];
		if (e->path && (all || e->refs == 0)) {
			close(e->fd);
			free(e->path);
			e->path = NULL;
			e->refs = 0;
		}
	}
}

/* Was the folder empty when it was opened? Then a file in it can only be
 * one that arrived since, so "is it already there?" need not be asked of
 * each file: two getdents calls for the folder instead of a failing stat
 * per file. A folder that cannot be read counts as not empty. */
static bool dir_empty(int fd)
{
	char buf[512];
	long n;
	int rounds = 0;

	while ((n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			const struct dirent64 *e = (const struct dirent64 *)(buf + off);
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				return false;
			off += e->d_reclen;
		}
		if (++rounds > 2)
			return false; /* "." and ".." fit in one buffer */
	}
	return n == 0;
}

/* tf__open_parent_beneath through a small cache of open folders. Returns a
 * folder fd that stays valid until dir_release(d, *pin, fd): a cached one
 * (pinned: *pin is its slot, the cache does not close it while pinned) or,
 * when every slot is pinned, a new one (*pin NULL, dir_release closes it).
 * Costs no syscall when the folder is cached. The cache is emptied whenever
 * the engine goes idle, so a folder replaced between builds is walked
 * again. */
static int parent_open(tf_downloader *d, const char *path, bool create, const char **leaf, dl_dir **pin,
		       tf_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	dl_dir *victim = NULL;
	int fd;

	*pin = NULL;
	if (!slash) {
		*leaf = path;
		*pin = &d->root_dir;
		d->root_dir.refs++;
		return d->rootfd;
	}
	for (int i = 0; i < DL_DIR_CACHE; i++) {
		dl_dir *e = &d->dirs[i];
		if (e->path && !strncmp(e->path, path, n) && e->path[n] == '\0') {
			e->used = ++d->dir_clock;
			e->refs++;
			*leaf = slash + 1;
			*pin = e;
			return e->fd;
		}
		if (e->refs == 0 && (!victim || !e->path || (victim->path && e->used < victim->used)))
			victim = e;
	}
	fd = tf__open_parent_beneath(d->rootfd, path, create, leaf, err);
	if (fd < 0 || !victim)
		return fd;
	if (victim->path) {
		close(victim->fd);
		free(victim->path);
	}
	victim->path = strndup(path, n);
	if (!victim->path)
		return fd; /* uncached: the caller closes it */
	victim->fd = fd;
	victim->fresh = create && dir_empty(fd);
	victim->refs = 1;
	victim->used = ++d->dir_clock;
	*pin = victim;
	return fd;
}

static void dir_release(dl_dir *pin, int fd)
{
	if (pin)
		pin->refs--;
	else if (fd >= 0)
		close(fd);
}

/* Files are created with their final mode; fchmod only if the umask took bits
 * away (or the file was made for the other mode). */
static int set_mode(tf_downloader *d, int fd, bool exec)
{
	mode_t want = exec ? 0755 : 0644;
	return (d->umask & want) ? fchmod(fd, want) : 0;
}

/* Copies the whole of src into dst (both open fds), from the start. */
static int copy_fd(int src, int dst)
{
	char buf[65536];
	off_t off = 0;

	for (;;) {
		ssize_t n = pread(src, buf, sizeof(buf), off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		for (ssize_t w = 0; w < n;) {
			ssize_t m = write(dst, buf + w, (size_t)(n - w));
			if (m < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			w += m;
		}
		off += n;
	}
}

/* Hashes an open file and compares it with the digest. */
static bool fd_matches(int fd, const tf_digest *dg)
{
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[TF_HASH_HEX_LEN + 1];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	off_t off = 0;
	bool ok = false;

	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		goto out;
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += n;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	tf__hex(md, mdlen, hex);
	ok = off == dg->size && !strcmp(hex, dg->hash);
out:
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* If leaf in folder dfd is a regular file with the digest, fixes its mode,
 * fills *st and returns true. */
static bool present_at(int dfd, const char *leaf, const tf_digest *dg, bool exec, struct stat *st)
{
	bool ok = false;
	int fd;

	/* Cheap negative answer first. */
	if (fstatat(dfd, leaf, st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st->st_mode) || st->st_size != dg->size)
		return false;
	fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0 && fstat(fd, st) == 0 && S_ISREG(st->st_mode) && st->st_size == dg->size &&
	    fd_matches(fd, dg)) {
		mode_t want = exec ? 0755 : 0644;
		ok = (st->st_mode & 07777) == want || fchmod(fd, want) == 0;
	}
	if (fd >= 0)
		close(fd);
	return ok;
}

/* If path already holds a regular file with the digest, fixes its mode and
 * returns true. */
static bool already_present(tf_downloader *d, const char *path, const tf_digest *dg, bool exec)
{
	const char *leaf;
	struct stat st;
	bool ok;
	dl_dir *pin;
	int dfd = parent_open(d, path, false, &leaf, &pin, NULL);

	if (dfd < 0)
		return false;
	ok = present_at(dfd, leaf, dg, exec, &st);
	dir_release(pin, dfd);
	return ok;
}

/* Puts a copy of the placed blob x at t->path: a hard link when the modes
 * agree and the filesystem allows it, else a copy; atomically via a temporary
 * name. Returns 0 or fills msg. */
static int place_from(tf_downloader *d, dl_xfer *x, dl_dest *t, char *msg, size_t msglen)
{
	tf_error err = { 0 };
	const char *leaf, *srcleaf;
	char tmp[32];
	int r = 0, sfd = -1, tfd = -1, sdir = -1;
	dl_dir *dpin, *spin = NULL;
	int dfd = parent_open(d, t->path, true, &leaf, &dpin, &err);

	if (dfd < 0) {
		snprintf(msg, msglen, "%s", err.message);
		return dfd;
	}
	sdir = parent_open(d, x->placed_path, false, &srcleaf, &spin, &err);
	if (sdir < 0) {
		r = sdir;
		snprintf(msg, msglen, "%s", err.message);
		goto out;
	}
	make_tmpname(d, tmp, sizeof(tmp));
	if (t->executable == x->placed_exec && linkat(sdir, srcleaf, dfd, tmp, 0) == 0)
		goto rename;
	sfd = openat(sdir, srcleaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	tfd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (sfd < 0 || tfd < 0) {
		r = -errno;
		snprintf(msg, msglen, "cannot copy '%s' to '%s': %s", x->placed_path, t->path, strerror(errno));
		goto out;
	}
	r = copy_fd(sfd, tfd);
	if (r == 0 && fchmod(tfd, t->executable ? 0755 : 0644) < 0)
		r = -errno;
	if (r < 0) {
		snprintf(msg, msglen, "cannot copy '%s' to '%s': %s", x->placed_path, t->path, strerror(-r));
		unlinkat(dfd, tmp, 0);
		goto out;
	}
rename:
	if (renameat(dfd, tmp, dfd, leaf) < 0) {
		r = -errno;
		snprintf(msg, msglen, "cannot move the file into place at '%s': %s", t->path, strerror(errno));
		unlinkat(dfd, tmp, 0);
	}
out:
	if (sfd >= 0)
		close(sfd);
	if (tfd >= 0)
		close(tfd);
	if (sdir >= 0)
		dir_release(spin, sdir);
	dir_release(dpin, dfd);
	return r;
}

/* Is the placed copy of x still what we wrote? (A user may have edited or
 * removed it since.) */
static bool placed_still_good(tf_downloader *d, dl_xfer *x)
{
	struct stat st;
	return fstatat(d->rootfd, x->placed_path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       st.st_ino == x->placed_st.st_ino && st.st_dev == x->placed_st.st_dev &&
	       st.st_size == x->placed_st.st_size &&
	       st.st_mtim.tv_sec == x->placed_st.st_mtim.tv_sec &&
	       st.st_mtim.tv_nsec == x->placed_st.st_mtim.tv_nsec;
}

/* Serves every waiting destination of a placed transfer. */
static void serve_dests(tf_downloader *d, dl_xfer *x, bool first_transferred)
{
	dl_dest *t = x->dests;
	bool transferred = first_transferred;
	char msg[TF_ERROR_MESSAGE_MAX];

	x->dests = NULL;
	while (t) {
		dl_dest *n = t->next;
		bool same = !strcmp(t->path, x->placed_path);
		int r = same ? 0 : place_from(d, x, t, msg, sizeof(msg));

		if (r < 0)
			complete(d, t, &x->digest, TF_RESULT_LOCAL, false, false, false, x->attempts, msg);
		else
			complete(d, t, &x->digest, TF_RESULT_OK, transferred && same, false, !same,
				 x->attempts, NULL);
		transferred = false;
		t = n;
	}
}

static void fail_dests(tf_downloader *d, dl_xfer *x, tf_result r, const char *msg)
{
	dl_dest *t = x->dests;
	x->dests = NULL;
	while (t) {
		dl_dest *n = t->next;
		complete(d, t, &x->digest, r, false, false, false, x->attempts, msg);
		t = n;
	}
}

/* ---- running transfers ------------------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata);

/* grpc: whole messages' payloads go through on_body. */
static int grpc_sink(void *arg, const void *p, size_t n)
{
	return on_body((char *)p, 1, n, arg) == n ? 0 : -EIO;
}

static size_t grpc_on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	dl_xfer *x = userdata;
	return dl_grpc_rx_feed(x->grpc, ptr, size * nmemb, grpc_sink, x) < 0 ? 0 : size * nmemb;
}

static size_t grpc_on_header(char *b, size_t size, size_t nmemb, void *userdata)
{
	dl_xfer *x = userdata;
	dl_grpc_rx_header(x->grpc, b, size * nmemb);
	return size * nmemb;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	dl_xfer *x = userdata;
	size_t n = size * nmemb;

	if (x->digest.size >= 0 && (int64_t)n > x->digest.size - x->received) {
		x->received += (int64_t)n; /* noted: more than the digest's size */
		return 0;
	}
	if (x->wj) {
		/* Within the digest's size (above), which fits the job. */
		memcpy(x->wj->data + x->received, ptr, n);
		x->received += (int64_t)n;
		x->in_flight += (int64_t)n;
		atomic_fetch_add_explicit(&x->d->bytes_in_flight, n, memory_order_relaxed);
		return n;
	}
	if (!x->job)
		EVP_DigestUpdate(x->md, ptr, n);
	if (x->mem) {
		if (tf__buf_append(x->mem, ptr, n) < 0) {
			x->local_errno = E2BIG;
			return 0;
		}
		x->received += (int64_t)n;
		x->in_flight += (int64_t)n;
		atomic_fetch_add_explicit(&x->d->bytes_in_flight, n, memory_order_relaxed);
		return n;
	}
	if (x->job) {
		/* Written a chunk at a time, and hashed on the verifier thread. */
		int r = dl_hasher_feed(x->d->hasher, x->job, x->fd, ptr, n);
		if (r < 0) {
			x->local_errno = -r;
			return 0;
		}
	} else {
		int r = dl_write_all(x->fd, ptr, n);
		if (r < 0) {
			x->local_errno = -r;
			return 0;
		}
	}
	x->received += (int64_t)n;
	x->in_flight += (int64_t)n;
	atomic_fetch_add_explicit(&x->d->bytes_in_flight, n, memory_order_relaxed);
	return n;
}

static void close_tmp(dl_xfer *x, bool remove)
{
	if (x->job) {
		dl_hasher_cancel(x->d->hasher, x->job);
		x->job = NULL;
	}
	if (x->fd >= 0) {
		close(x->fd);
		x->fd = -1;
	}
	if (x->wj) {
		x->wj->next = x->d->wfree;
		x->d->wfree = x->wj;
		x->d->wjobs--;
		x->wj = NULL;
	}
	if (x->dirfd >= 0) {
		/* The writer thread leaves nothing behind when it fails. */
		if (remove && !x->small)
			unlinkat(x->dirfd, x->tmpname, 0);
		x->small = false;
		dir_release(x->dir, x->dirfd);
		x->dirfd = -1;
		x->dir = NULL;
	}
}

/* A handle that made a plain GET (start(): http or disk, file or memory,
 * not grpc) is kept as it is: the next plain GET changes only what differs
 * (dl_backend_prepare_again), where curl_easy_reset and setting every
 * option again cost a share of each small blob. Others are reset. */
static void release_easy(tf_downloader *d, dl_xfer *x)
{
	bool plain = x->mode != DL_MODE_STREAM && !x->grpc && dl_backend_reusable(d->backend);

	if (!x->easy)
		return;
	curl_multi_remove_handle(d->multi, x->easy);
	if (!plain)
		curl_easy_reset(x->easy);
	if (d->nidle < d->max_conn) {
		d->idle_plain[d->nidle] = plain;
		d->idle_handles[d->nidle++] = x->easy;
	} else {
		curl_easy_cleanup(x->easy);
	}
	x->easy = NULL;
	d->running--;
}

/* An idle handle or a new one (NULL: out of memory). *plain: it made a
 * plain GET and was not reset; NULL: the caller wants a clean handle. */
static CURL *take_handle(tf_downloader *d, bool *plain)
{
	CURL *h;
	bool p;

	if (!d->nidle) {
		if (plain)
			*plain = false;
		return curl_easy_init();
	}
	h = d->idle_handles[--d->nidle];
	p = d->idle_plain[d->nidle];
	if (plain)
		*plain = p;
	else if (p)
		curl_easy_reset(h);
	return h;
}

/* Ends a transfer that produced no file: every destination gets r. */
/* Releases what only an active transfer needs; what stays is small. */
static void shrink(dl_xfer *x)
{
	if (x->mem) {
		tf__buf_fini(x->mem);
		free(x->mem);
		x->mem = NULL;
	}
	EVP_MD_CTX_free(x->md);
	x->md = NULL;
	free(x->url);
	x->url = NULL;
	free(x->errbuf);
	x->errbuf = NULL;
}

static void finish_failed(tf_downloader *d, dl_xfer *x, tf_result r, const char *msg)
{
	close_tmp(x, true);
	set_state(x, DL_FINISHED);
	fail_dests(d, x, r, msg);
	shrink(x);
}

/* Opens the temporary file for x in its first destination's folder and starts
 * an attempt. */
static void stream_start(tf_downloader *d, dl_xfer *x);

/* The first destination of x already holds the blob (found by its first
 * attempt): it is the placed copy, the others are served from it. */
static void place_present(tf_downloader *d, dl_xfer *x, const struct stat *st)
{
	dl_dest *t = x->dests;

	close_tmp(x, false);
	free(x->placed_path);
	x->placed_path = strdup(t->path);
	if (!x->placed_path) {
		finish_failed(d, x, TF_RESULT_LOCAL, "out of memory");
		return;
	}
	x->placed_exec = t->executable;
	x->placed_st = *st;
	set_state(x, DL_PLACED);
	x->dests = t->next;
	t->next = NULL;
	complete(d, t, &x->digest, TF_RESULT_OK, false, true, false, 0, NULL);
	/* The others rode along before anything was asked: each may hold the
	 * blob too (as it would have been found had it come first). */
	for (dl_dest **pp = &x->dests; *pp;) {
		t = *pp;
		if (already_present(d, t->path, &x->digest, t->executable)) {
			*pp = t->next;
			t->next = NULL;
			complete(d, t, &x->digest, TF_RESULT_OK, false, true, false, 0, NULL);
		} else {
			pp = &t->next;
		}
	}
	serve_dests(d, x, false);
	shrink(x);
}

/* Opens the temporary file of x in the folder of its first destination that
 * can be written (the others are completed as local errors). On a first
 * attempt, a destination that already holds the blob ends x instead
 * (placed; asked here, in the folder opened anyway, rather than when the
 * request arrived: in a folder that was empty when it was opened nothing
 * needs asking). false: x is not to run (finished or placed). */
static bool open_tmp(tf_downloader *d, dl_xfer *x)
{
	for (;;) {
		tf_error err = { 0 };
		const char *leaf;
		struct stat st;
		dl_dest *t;

		x->dirfd = parent_open(d, x->dests->path, true, &leaf, &x->dir, &err);
		if (x->dirfd >= 0) {
			if (x->attempts == 0 && !(x->dir && x->dir->fresh) &&
			    present_at(x->dirfd, leaf, &x->digest, x->dests->executable, &st)) {
				place_present(d, x, &st);
				return false;
			}
			break;
		}
		/* This destination cannot be written; the others may. */
		t = x->dests;
		x->dests = t->next;
		t->next = NULL;
		complete(d, t, &x->digest, TF_RESULT_LOCAL, false, false, false, x->attempts, err.message);
		x->dirfd = -1;
		if (!x->dests) {
			set_state(x, DL_FINISHED);
			return false;
		}
	}
	make_tmpname(d, x->tmpname, sizeof(x->tmpname));
	/* A small blob: kept in memory while it arrives, its file made by the
	 * writer thread (on_body_done). */
	if (d->writer && d->wjobs < DL_WRITE_JOBS && x->mode == DL_MODE_FILE && !dl_backend_grpc(d->backend) &&
	    x->area == TF_AREA_CAS && x->digest.size > 0 && x->digest.size <= DL_WRITE_MAX) {
		const char *leaf = strrchr(x->dests->path, '/');
		dl_writejob *j = d->wfree;

		leaf = leaf ? leaf + 1 : x->dests->path;
		if (j)
			d->wfree = j->next;
		else
			j = malloc(sizeof(*j));
		if (j)
			d->wjobs++;
		if (j && strlen(leaf) < sizeof(j->leaf)) {
			strcpy(j->leaf, leaf);
			x->wj = j;
			x->small = true;
			return true;
		}
		if (j) { /* a name no file has: the engine's way, as out of memory */
			j->next = d->wfree;
			d->wfree = j;
			d->wjobs--;
		}
	}
	x->fd = openat(x->dirfd, x->tmpname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, x->dests->executable ? 0755 : 0644);
	if (x->fd < 0) {
		char msg[TF_ERROR_MESSAGE_MAX];
		snprintf(msg, sizeof(msg), "cannot create a temporary file beside '%s': %s", x->dests->path,
			 strerror(errno));
		close_tmp(x, false);
		finish_failed(d, x, TF_RESULT_LOCAL, msg);
		return false;
	}
	return true;
}

static void start(tf_downloader *d, dl_xfer *x)
{
	CURL *h;
	bool plain;
	int r;

	if (x->mode == DL_MODE_STREAM) {
		stream_start(d, x);
		return;
	}
	if (x->mem) {
		tf__buf_reset(x->mem);
		goto open_handle;
	}
	if (x->resume && x->fd >= 0)
		goto open_handle; /* the temporary file, its hash so far and `received` stay */
	x->resume = false;
	if (!open_tmp(d, x))
		return;
open_handle:
	if (!x->md)
		x->md = EVP_MD_CTX_new();
	if (!x->url)
		x->url = malloc(DL_URL_MAX);
	if (!x->errbuf)
		x->errbuf = malloc(CURL_ERROR_SIZE);
	if (!x->grpc && dl_backend_grpc(d->backend) && (x->grpc = malloc(sizeof(*x->grpc))))
		dl_grpc_rx_init(x->grpc, x->area == TF_AREA_AC ? DL_GRPC_RAW : DL_GRPC_READ_DATA);
	h = take_handle(d, &plain);
	if (!x->md || !x->url || !x->errbuf || !h || (dl_backend_grpc(d->backend) && !x->grpc) ||
	    (!x->resume && !EVP_DigestInit_ex(x->md, EVP_sha256(), NULL))) {
		if (h)
			curl_easy_cleanup(h);
		finish_failed(d, x, TF_RESULT_LOCAL, "out of memory starting a transfer");
		return;
	}
	if (x->grpc)
		dl_grpc_rx_reset(x->grpc);
	x->resumed_at = x->resume ? x->received : 0;
	if (x->resume) {
		x->resume = false;
		goto resumed;
	}
	if (!x->mem && x->digest.size >= DL_OFFLOAD_MIN) {
		int rfd = dup(x->fd);
		x->job = rfd >= 0 ? dl_hasher_start(d->hasher, rfd, x) : NULL;
		if (!x->job && rfd >= 0)
			close(rfd); /* hash inline instead */
	}
	x->received = 0;
resumed:
	x->local_errno = 0;
	x->errbuf[0] = '\0';
	x->attempts++;
	r = plain ? dl_backend_prepare_again(d->backend, h, x->area, x->digest.hash, x->url, DL_URL_MAX)
		  : dl_backend_prepare(d->backend, h, DL_OP_GET, x->area, x->digest.hash, x->digest.size, x->received,
				       x->url, DL_URL_MAX);
	if (r < 0) {
		char msg[TF_ERROR_MESSAGE_MAX];
		curl_easy_cleanup(h);
		/* -EACCES: the credential helper failed; x->url says how. */
		snprintf(msg, sizeof(msg), r == -EACCES ? "%s" : "GET %s: cannot make the request", x->url);
		finish_failed(d, x, r == -EACCES ? TF_RESULT_FAILED : TF_RESULT_LOCAL, msg);
		return;
	}
	dl_backend_watch_silence(d->backend, h, &x->silence, NULL);
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	if (!plain) {
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, x->grpc ? grpc_on_body : on_body);
		if (x->grpc) {
			curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, grpc_on_header);
			curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
		}
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	}
	/* Small blobs keep libcurl's default buffer (no larger one allocated and
	 * freed for each); a handle kept from a larger blob goes back to it. */
	if (x->digest.size < 0 || x->digest.size > DL_BUFFER_SMALL_BLOB)
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE,
				 (long)(x->digest.size >= DL_OFFLOAD_MIN ? DL_BUFFER_SIZE_LARGE : DL_BUFFER_SIZE));
	else if (plain)
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)CURL_MAX_WRITE_SIZE);
	x->easy = h;
	if (curl_multi_add_handle(d->multi, h) != CURLM_OK) {
		x->easy = NULL;
		curl_easy_cleanup(h);
		finish_failed(d, x, TF_RESULT_LOCAL, "cannot add a transfer to libcurl");
		return;
	}
	d->running++;
	d->pend.attempts++;
	set_state(x, DL_RUNNING);
}

static void enqueue(tf_downloader *d, dl_xfer *x)
{
	set_state(x, DL_QUEUED);
	x->qnext = NULL;
	if (d->queue_tail)
		d->queue_tail->qnext = x;
	else
		d->queue_head = x;
	d->queue_tail = x;
}

static unsigned next_rand(tf_downloader *d)
{
	d->rand_state = d->rand_state * 1103515245u + 12345u;
	return d->rand_state >> 8;
}

/* Bazel's schedule: 100 ms doubling to a 5 s cap, with ±10% jitter. */
static void backoff(tf_downloader *d, dl_xfer *x)
{
	uint64_t ms = DL_BACKOFF_INITIAL_MS;
	for (int i = 1; i < x->attempts && ms < DL_BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > DL_BACKOFF_MAX_MS)
		ms = DL_BACKOFF_MAX_MS;
	ms = ms * (90 + next_rand(d) % 21) / 100;
	x->retry_at_ns = tf__now_ns() + ms * 1000000u;
	set_state(x, DL_BACKOFF);
	x->qnext = d->backoff;
	d->backoff = x;
}

/* The cache sent the wrong bytes: try once more, then report corrupt. */
static void on_corrupt(tf_downloader *d, dl_xfer *x, char *msg, size_t msglen)
{
	close_tmp(x, true);
	if (x->resumed_at > 0) {
		/* A resumed read that went wrong: the server may not honour
		 * read_offset. From the start, and never resumed again. */
		x->resumed_at = 0;
		x->no_resume = true;
		enqueue(d, x);
		return;
	}
	if (x->corrupt_attempts++ < DL_CORRUPT_RETRIES) {
		enqueue(d, x);
		return;
	}
	snprintf(msg + strlen(msg), msglen - strlen(msg),
		 " (wrong on %d attempts: the cache entry is corrupt and must be removed or rewritten)",
		 x->corrupt_attempts);
	finish_failed(d, x, TF_RESULT_CORRUPT, msg);
}

static void on_verified(tf_downloader *d, dl_xfer *x, const char *hex);
static void placed(tf_downloader *d, dl_xfer *x, const struct stat *st);

/* The writer thread is done with a small blob's job: placed, or why not. */
static void on_written(tf_downloader *d, dl_writejob *j)
{
	dl_xfer *x = j->owner;
	char msg[TF_ERROR_MESSAGE_MAX];
	struct stat st = j->st;
	bool corrupt = strcmp(j->hex, j->want) != 0;
	int err = j->err;

	if (corrupt)
		snprintf(msg, sizeof(msg), "GET %s: the body hashes to %s, not %s", x->url, j->hex, x->digest.hash);
	else if (err)
		snprintf(msg, sizeof(msg), "cannot move the verified file into place at '%s': %s", x->dests->path,
			 strerror(err));
	j->next = d->wfree;
	d->wfree = j;
	d->wjobs--;
	if (corrupt)
		on_corrupt(d, x, msg, sizeof(msg));
	else if (err)
		finish_failed(d, x, TF_RESULT_LOCAL, msg);
	else
		placed(d, x, &st);
}

/* A successful attempt's body is complete: check its size, then get its hash
 * (inline, or from the verifier thread). */
static void on_body_done(tf_downloader *d, dl_xfer *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[TF_HASH_HEX_LEN + 1], msg[TF_ERROR_MESSAGE_MAX];

	if (x->digest.size >= 0 && x->received != x->digest.size) {
		snprintf(msg, sizeof(msg), "GET %s: got %lld bytes, expected %lld", x->url,
			 (long long)x->received, (long long)x->digest.size);
		on_corrupt(d, x, msg, sizeof(msg));
		return;
	}
	if (x->small) {
		dl_writejob *j = x->wj;

		x->wj = NULL;
		j->owner = x;
		j->dirfd = x->dirfd;
		memcpy(j->tmpname, x->tmpname, sizeof(j->tmpname));
		memcpy(j->want, x->digest.hash, sizeof(j->want));
		j->mode = x->dests->executable ? 0755 : 0644;
		j->chmod = (d->umask & j->mode) != 0;
		j->len = (size_t)x->received;
		j->next = d->wq;
		d->wq = j;
		set_state(x, DL_VERIFYING);
		return;
	}
	if (x->job) {
		int r = dl_hasher_finish(d->hasher, x->job, x->fd);
		if (r < 0) {
			snprintf(msg, sizeof(msg), "cannot write '%s': %s", x->dests->path, strerror(-r));
			finish_failed(d, x, TF_RESULT_LOCAL, msg);
			return;
		}
		set_state(x, DL_VERIFYING);
		return;
	}
	EVP_DigestFinal_ex(x->md, md, &mdlen);
	tf__hex(md, mdlen, hex);
	/* An action-cache key names the action, not the content: nothing to verify. */
	on_verified(d, x, x->area == TF_AREA_AC ? x->digest.hash : hex);
}

/* Places the body if it hashes to the digest. */
static void on_verified(tf_downloader *d, dl_xfer *x, const char *hex)
{
	char msg[TF_ERROR_MESSAGE_MAX];
	const char *leaf = strrchr(x->dests->path, '/');
	struct stat st;

	leaf = leaf ? leaf + 1 : x->dests->path;
	if (strcmp(hex, x->digest.hash)) {
		snprintf(msg, sizeof(msg), "GET %s: the body hashes to %s, not %s", x->url, hex,
			 x->digest.hash);
		on_corrupt(d, x, msg, sizeof(msg));
		return;
	}
	if (x->mem) {
		dl_dest *t = x->dests;
		tf__buf *mem = x->mem;
		x->dests = NULL;
		x->mem = NULL;
		settle_with_bytes(x);
		set_state(x, DL_FINISHED);
		complete_read(d, t, &x->digest, TF_RESULT_OK, true, false, false, x->attempts, NULL, mem);
		shrink(x);
		return;
	}
	if (set_mode(d, x->fd, x->dests->executable) < 0 || fstat(x->fd, &st) < 0 ||
	    renameat(x->dirfd, x->tmpname, x->dirfd, leaf) < 0) {
		snprintf(msg, sizeof(msg), "cannot move the verified file into place at '%s': %s",
			 x->dests->path, strerror(errno));
		finish_failed(d, x, TF_RESULT_LOCAL, msg);
		return;
	}
	placed(d, x, &st);
}

/* x's verified file is in place at its first destination (st: the file). */
static void placed(tf_downloader *d, dl_xfer *x, const struct stat *st)
{
	close_tmp(x, false);
	free(x->placed_path);
	x->placed_path = strdup(x->dests->path);
	x->placed_exec = x->dests->executable;
	x->placed_st = *st;
	settle_with_bytes(x);
	if (!x->placed_path) {
		finish_failed(d, x, TF_RESULT_LOCAL, "out of memory");
		return;
	}
	set_state(x, DL_PLACED);
	serve_dests(d, x, true);
	shrink(x);
}

/* ---- streams: the engine's side --------------------------------------------------------- */

static size_t ring_put(dl_ring *r, const unsigned char *src, size_t n)
{
	size_t w = n < r->cap - r->len ? n : r->cap - r->len;
	size_t tail = (r->head + r->len) % r->cap;
	size_t first = w < r->cap - tail ? w : r->cap - tail;

	memcpy(r->b + tail, src, first);
	memcpy(r->b, src + first, w - first);
	r->len += w;
	return w;
}

static size_t ring_get(dl_ring *r, unsigned char *dst, size_t n)
{
	size_t g = n < r->len ? n : r->len;
	size_t first = g < r->cap - r->head ? g : r->cap - r->head;

	memcpy(dst, r->b + r->head, first);
	memcpy(dst + first, r->b, g - first);
	r->head = (r->head + g) % r->cap;
	r->len -= g;
	return g;
}

static void stream_unref(dl_stream *s)
{
	tf_downloader *d = s->d;
	bool last;

	pthread_mutex_lock(&d->mu);
	last = --s->refs == 0;
	pthread_mutex_unlock(&d->mu);
	if (!last)
		return;
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	EVP_MD_CTX_free(s->md);
	free(s->ring.b);
	tf__buf_fini(&s->over);
	tf__buf_fini(&s->greq);
	tf__buf_fini(&s->gans);
	free(s->what);
	free(s->tmp);
	free(s);
}

/* Ends a stream that never reached the engine (disk, or refused). */
static void stream_settle(dl_stream *s, dl_state state, long status, int err, const char *why)
{
	pthread_mutex_lock(&s->mu);
	check_transition(s->hash, s->state, state);
	s->state = state;
	s->status = status;
	if (err && !s->err)
		s->err = err;
	if (why && !s->errbuf[0])
		snprintf(s->errbuf, sizeof(s->errbuf), "%s", why);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* Asks the engine to look at s again: unpause it, or cancel it. */
static void stream_poke(dl_stream *s)
{
	tf_downloader *d = s->d;
	bool poke = false;

	pthread_mutex_lock(&d->mu);
	if (!s->poked && !d->closing) {
		s->poked = true;
		s->refs++;
		s->poke_next = NULL;
		if (d->poke_tail)
			d->poke_tail->poke_next = s;
		else
			d->poke_head = s;
		d->poke_tail = s;
		poke = true;
	}
	pthread_mutex_unlock(&d->mu);
	if (poke)
		wake(d);
}

/* The final status line and headers of an answer are in. */
static size_t stream_on_header(char *b, size_t size, size_t nmemb, void *user)
{
	dl_xfer *x = user;
	dl_stream *s = x->s;
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
	pthread_mutex_lock(&s->mu);
	s->status = code;
	s->length = cl;
	pthread_mutex_unlock(&s->mu);
	if (x->state == DL_RUNNING)
		set_state(x, DL_ANSWERED);
	return n;
}

/* GET: the body into the ring; a full ring pauses the transfer. */
static size_t stream_on_body(char *data, size_t size, size_t nmemb, void *user)
{
	dl_xfer *x = user;
	dl_stream *s = x->s;
	size_t n = size * nmemb;

	pthread_mutex_lock(&s->mu);
	if (s->cancel) {
		pthread_mutex_unlock(&s->mu);
		return 0; /* aborts the transfer */
	}
	if (s->op != DL_OP_GET || s->status < 200 || s->status >= 300 || s->status == 204) {
		pthread_mutex_unlock(&s->mu);
		return n; /* an error page, or the answer to a PUT: read and dropped */
	}
	if ((s->cap && s->moved + n > s->cap) || n > s->ring.cap) {
		s->err = -EFBIG;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	if (s->ring.cap - s->ring.len < n) {
		/* curl keeps this chunk and offers it again once unpaused. */
		s->paused = true;
		pthread_mutex_unlock(&s->mu);
		return CURL_WRITEFUNC_PAUSE;
	}
	ring_put(&s->ring, (const unsigned char *)data, n);
	s->moved += n;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* PUT: the body from the ring; an empty ring pauses the transfer. */
static size_t stream_on_read(char *buf, size_t size, size_t nmemb, void *user)
{
	dl_xfer *x = user;
	dl_stream *s = x->s;
	size_t got;

	pthread_mutex_lock(&s->mu);
	if (s->cancel) {
		pthread_mutex_unlock(&s->mu);
		return CURL_READFUNC_ABORT;
	}
	if (s->ring.len == 0) {
		bool eof = s->eof;
		if (!eof)
			s->paused = true;
		pthread_mutex_unlock(&s->mu);
		return eof ? 0 : CURL_READFUNC_PAUSE;
	}
	got = ring_get(&s->ring, (unsigned char *)buf, size * nmemb);
	s->moved += got;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return got;
}

static void queue_remove(tf_downloader *d, dl_xfer *x)
{
	dl_xfer *prev = NULL;
	for (dl_xfer *y = d->queue_head; y; prev = y, y = y->qnext) {
		if (y != x)
			continue;
		if (prev)
			prev->qnext = y->qnext;
		else
			d->queue_head = y->qnext;
		if (d->queue_tail == y)
			d->queue_tail = prev;
		return;
	}
}

/* Ends a stream transfer: its result becomes final, its waiter wakes, and the
 * engine lets go of it. err: 0, or why it ended early. */
static void stream_end(tf_downloader *d, dl_xfer *x, CURLcode rc, int err, const char *why)
{
	dl_stream *s = x->s;
	long code = 0;

	if (x->state == DL_QUEUED)
		queue_remove(d, x);
	if (x->easy) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
		release_easy(d, x);
	}
	pthread_mutex_lock(&s->mu);
	s->result = rc;
	if (err && !s->err)
		s->err = err;
	if (why && !s->errbuf[0])
		snprintf(s->errbuf, sizeof(s->errbuf), "%s", why);
	if (!s->status && rc == CURLE_OK)
		s->status = code;
	pthread_mutex_unlock(&s->mu);
	set_state(x, DL_FINISHED);
	for (dl_xfer **pp = &d->streams; *pp; pp = &(*pp)->lnext) {
		if (*pp == x) {
			*pp = x->lnext;
			break;
		}
	}
	s->x = NULL;
	x->s = NULL;
	xfer_free(x);
	stream_unref(s);
}

/* ---- streams over gRPC ----------------------------------------------------------------- */

/* The bytes waiting for a stream's reader: the ring, then what did not fit in it. */
static size_t q_len(const dl_stream *s)
{
	return s->ring.len + (s->over.len - s->over_off);
}

/* Moves what waits past the ring into it, as far as it has room. */
static void q_refill(dl_stream *s)
{
	size_t k = s->over.len - s->over_off;

	if (!k)
		return;
	s->over_off += ring_put(&s->ring, s->over.data + s->over_off, k);
	if (s->over_off == s->over.len) {
		tf__buf_reset(&s->over);
		s->over_off = 0;
	}
}

/* Takes up to n bytes in order; what waited past the ring moves into it, so
 * that a held-back last byte never waits there behind a paused transfer. */
static size_t q_get(dl_stream *s, unsigned char *dst, size_t n)
{
	size_t g = ring_get(&s->ring, dst, n);

	q_refill(s);
	if (g < n) {
		g += ring_get(&s->ring, dst + g, n - g);
		q_refill(s);
	}
	return g;
}

static size_t grpc_stream_on_header(char *b, size_t size, size_t nmemb, void *user)
{
	dl_xfer *x = user;
	dl_grpc_rx_header(x->grpc, b, size * nmemb);
	return size * nmemb;
}

/* One message's payload: a GET's into the ring (what does not fit after it,
 * so that a message is never split by a pause), the others' into gans. */
static int grpc_stream_sink(void *arg, const void *p, size_t n)
{
	dl_xfer *x = arg;
	dl_stream *s = x->s;
	size_t w = 0;
	bool first;

	pthread_mutex_lock(&s->mu);
	if (s->op != DL_OP_GET) {
		int r = tf__buf_append(&s->gans, p, n);
		x->put_answered = s->op == DL_OP_PUT;
		pthread_mutex_unlock(&s->mu);
		return r;
	}
	if (s->cap && s->moved + n > s->cap) {
		s->err = -EFBIG;
		pthread_mutex_unlock(&s->mu);
		return -EFBIG;
	}
	if (s->area == TF_AREA_CAS && s->moved + n > (uint64_t)s->size) {
		s->err = -EIO;
		snprintf(s->errbuf, sizeof(s->errbuf), "the server sent more than the blob's %lld bytes",
			 (long long)s->size);
		pthread_mutex_unlock(&s->mu);
		return -EIO;
	}
	if (s->over.len == s->over_off)
		w = ring_put(&s->ring, p, n);
	if (w < n && tf__buf_append(&s->over, (const unsigned char *)p + w, n - w) < 0) {
		s->err = -ENOMEM;
		pthread_mutex_unlock(&s->mu);
		return -ENOMEM;
	}
	s->moved += n;
	first = s->status == 0;
	if (first) {
		s->status = 200;
		s->length = s->area == TF_AREA_CAS ? s->size : -1;
	}
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (first && x->state == DL_RUNNING)
		set_state(x, DL_ANSWERED);
	return 0;
}

/* Answer bytes: whole messages go to grpc_stream_sink. A GET waits while
 * data is past the ring (curl offers this chunk again once unpaused). */
static size_t grpc_stream_on_body(char *data, size_t size, size_t nmemb, void *user)
{
	dl_xfer *x = user;
	dl_stream *s = x->s;
	size_t n = size * nmemb;

	pthread_mutex_lock(&s->mu);
	if (s->cancel) {
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	if (s->op == DL_OP_GET && s->over.len > s->over_off) {
		s->paused = true;
		pthread_mutex_unlock(&s->mu);
		return CURL_WRITEFUNC_PAUSE;
	}
	pthread_mutex_unlock(&s->mu);
	if (dl_grpc_rx_feed(x->grpc, data, n, grpc_stream_sink, x) < 0)
		return 0;
	/* A WriteResponse before the whole body went (the cache had the blob):
	 * the server reads no more, and the upload may wait on flow control
	 * for ever; end the call here (grpc_stream_done reads the answer). */
	if (x->put_answered && s->area == TF_AREA_CAS && (x->woff < s->put_size || x->wmsg_off < x->wmsg.len))
		return 0;
	return n;
}

static size_t copy_out(char *buf, size_t max, const tf__buf *from, size_t *off)
{
	size_t k = from->len - *off < max ? from->len - *off : max;
	memcpy(buf, from->data + *off, k);
	*off += k;
	return k;
}

static size_t stream_on_read(char *buf, size_t size, size_t nmemb, void *user);

/* The call's body: the prepared start, then (PUT) the caller's bytes: raw
 * for an ActionResult, as WriteRequests for a CAS blob. */
static size_t grpc_stream_on_read(char *buf, size_t size, size_t nmemb, void *user)
{
	dl_xfer *x = user;
	dl_stream *s = x->s;
	size_t max = size * nmemb, got;

	if (x->put_answered)
		return CURL_READFUNC_ABORT; /* the server answered: nothing more to send */
	if (x->greq_off < s->greq.len)
		return copy_out(buf, max, &s->greq, &x->greq_off);
	if (s->op != DL_OP_PUT)
		return 0;
	if (s->area == TF_AREA_AC)
		return stream_on_read(buf, size, nmemb, user);
	if (x->wmsg_off < x->wmsg.len)
		return copy_out(buf, max, &x->wmsg, &x->wmsg_off);
	if (x->woff == s->put_size)
		return 0; /* the finish_write message went */
	pthread_mutex_lock(&s->mu);
	if (s->cancel || (s->ring.len == 0 && s->eof)) {
		pthread_mutex_unlock(&s->mu);
		return CURL_READFUNC_ABORT;
	}
	if (s->ring.len == 0) {
		s->paused = true;
		pthread_mutex_unlock(&s->mu);
		return CURL_READFUNC_PAUSE;
	}
	got = ring_get(&s->ring, x->wtmp, DL_GRPC_WRITE_CHUNK);
	s->moved += got;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	tf__buf_reset(&x->wmsg);
	x->wmsg_off = 0;
	if (dl_grpc_write_frame(x->d->backend, &x->wmsg, s->hash, s->put_size, x->woff, x->wtmp, got) < 0)
		return CURL_READFUNC_ABORT;
	x->woff += (int64_t)got;
	return copy_out(buf, max, &x->wmsg, &x->wmsg_off);
}

static void stream_end(tf_downloader *d, dl_xfer *x, CURLcode rc, int err, const char *why);

static void grpc_stream_start(tf_downloader *d, dl_xfer *x, CURL *h)
{
	dl_stream *s = x->s;
	char why[DL_URL_MAX + 256];
	int r;

	x->grpc = malloc(sizeof(*x->grpc));
	x->errbuf = malloc(CURL_ERROR_SIZE);
	if (s->op == DL_OP_PUT && s->area == TF_AREA_CAS)
		x->wtmp = malloc(DL_GRPC_WRITE_CHUNK);
	if (!x->grpc || !x->errbuf || (s->op == DL_OP_PUT && s->area == TF_AREA_CAS && !x->wtmp)) {
		free(x->grpc);
		x->grpc = NULL;
		curl_easy_cleanup(h);
		stream_end(d, x, CURLE_OUT_OF_MEMORY, -ENOMEM, "out of memory starting a transfer");
		return;
	}
	x->errbuf[0] = '\0';
	dl_grpc_rx_init(x->grpc, s->op == DL_OP_GET && s->area == TF_AREA_CAS ? DL_GRPC_READ_DATA : DL_GRPC_RAW);
	tf__buf_init(&x->wmsg, DL_GRPC_WRITE_CHUNK + 4096);
	r = dl_grpc_stream_prepare(d->backend, h, s->op, s->area, s->hash, s->size, &s->greq, x->url, DL_URL_MAX);
	if (r == -ENOENT) {
		/* Asked by hash alone: a gRPC cache cannot be asked; a miss. */
		curl_easy_cleanup(h);
		snprintf(why, sizeof(why), "%s: the blob's size is not known, and a gRPC cache needs it (answered as a miss)",
			 x->url);
		pthread_mutex_lock(&s->mu);
		s->status = 404;
		pthread_mutex_unlock(&s->mu);
		stream_end(d, x, CURLE_OK, 0, why);
		return;
	}
	if (r < 0) {
		curl_easy_cleanup(h);
		if (r == -EACCES) /* a credential helper failed; x->url says how */
			snprintf(why, sizeof(why), "%s", x->url);
		else
			snprintf(why, sizeof(why), "%s: cannot make the request: %s", x->url, strerror(-r));
		stream_end(d, x, CURLE_FAILED_INIT, r == -ENOMEM ? -ENOMEM : -EIO, why);
		return;
	}
	dl_backend_watch_silence(d->backend, h, &x->silence, &s->paused);
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, grpc_stream_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grpc_stream_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, DL_STREAM_BUFFER);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, grpc_stream_on_read);
	curl_easy_setopt(h, CURLOPT_READDATA, x);
	curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, DL_STREAM_BUFFER);
	/* A WriteRequest stream's length depends on how the bytes come. */
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t)(s->op != DL_OP_PUT ? (int64_t)s->greq.len
				      : s->area == TF_AREA_AC ? (int64_t)s->greq.len + s->put_size : -1));
	x->easy = h;
	if (curl_multi_add_handle(d->multi, h) != CURLM_OK) {
		x->easy = NULL;
		curl_easy_cleanup(h);
		stream_end(d, x, CURLE_FAILED_INIT, -ENOMEM, "cannot add a transfer to libcurl");
		return;
	}
	d->running++;
	set_state(x, DL_RUNNING);
}

/* A grpc stream's call ended: what its status and answer mean for the caller. */
static void grpc_stream_done(tf_downloader *d, dl_xfer *x, CURLcode rc)
{
	dl_stream *s = x->s;
	char why[TF_ERROR_MESSAGE_MAX + CURL_ERROR_SIZE], errbuf[CURL_ERROR_SIZE];
	tf_error e = { 0 };
	long status = 0;
	int err = 0;
	dl_outcome o;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	snprintf(errbuf, sizeof(errbuf), "%s", x->errbuf);
	dl_grpc_note(dl_backend_grpc(d->backend), rc);
	why[0] = '\0';
	o = dl_grpc_classify(x->grpc, rc, status, errbuf, dl_backend_timeout_s(d->backend), why, sizeof(why));
	if (o == DL_OUTCOME_BODY && dl_grpc_rx_partial(x->grpc)) {
		snprintf(why, sizeof(why), "the answer ended inside a message");
		o = DL_OUTCOME_TRANSIENT;
	}
	if (o == DL_OUTCOME_TRANSIENT && dl_grpc_rx_whole_untrailed(x->grpc, rc, status)) {
		/* Trailers lost by libcurl: a read that brought every byte (the
		 * caller verifies them), or a unary call's one answer, stands. */
		pthread_mutex_lock(&s->mu);
		if (s->op == DL_OP_GET && s->area == TF_AREA_CAS ? s->moved == (uint64_t)s->size
								   : x->grpc->messages == 1)
			o = DL_OUTCOME_BODY;
		pthread_mutex_unlock(&s->mu);
	}
	if (s->op == DL_OP_PUT && s->area == TF_AREA_CAS && x->put_answered && x->grpc->status <= 0 &&
	    !x->grpc->why[0] && !dl_grpc_rx_partial(x->grpc))
		o = DL_OUTCOME_BODY; /* answered (perhaps before the body went: it had the blob); committed_size decides */
	pthread_mutex_lock(&s->mu);
	if (s->err) {
		/* The sink stopped it (cap, too many bytes): its reason (in s->errbuf) stands. */
		err = s->err;
	} else if (o == DL_OUTCOME_BODY) {
		if (s->op == DL_OP_HEAD && s->area == TF_AREA_CAS) {
			tf_digest dg = { .size = s->size };
			size_t k;
			int f;
			memcpy(dg.hash, s->hash, sizeof(dg.hash));
			f = dl_grpc_find_answer(s->gans.data, s->gans.len, &dg, 1, &k, &e);
			if (f < 0) {
				snprintf(why, sizeof(why), "%.*s", (int)sizeof(e.message), e.message);
				err = -EIO;
			} else if (f == 0) {
				snprintf(why, sizeof(why), "FindMissingBlobs names it missing");
				s->status = 404;
			} else {
				s->status = 200;
				s->length = s->size;
			}
		} else if (s->op == DL_OP_PUT && s->area == TF_AREA_CAS) {
			int64_t committed = -1;
			if (dl_grpc_committed(s->gans.data, s->gans.len, &committed, &e) < 0) {
				snprintf(why, sizeof(why), "%s", e.message);
				err = -EIO;
			} else if (committed != s->put_size) {
				snprintf(why, sizeof(why), "the server committed %lld of the blob's %lld bytes",
					 (long long)committed, (long long)s->put_size);
				err = -EIO;
			} else {
				s->status = 200;
			}
		} else {
			s->status = 200;
		}
	} else if (o == DL_OUTCOME_MISS && s->op != DL_OP_PUT && s->op != DL_OP_FIND) {
		s->status = 404;
	} else {
		err = o == DL_OUTCOME_TIMEOUT ? -ETIMEDOUT : -EIO;
	}
	pthread_mutex_unlock(&s->mu);
	stream_end(d, x, err ? (rc != CURLE_OK ? rc : CURLE_RECV_ERROR) : CURLE_OK, err, why[0] ? why : NULL);
}

static void stream_start(tf_downloader *d, dl_xfer *x)
{
	dl_stream *s = x->s;
	bool cancel;
	CURL *h;
	int r;

	pthread_mutex_lock(&s->mu);
	cancel = s->cancel;
	pthread_mutex_unlock(&s->mu);
	if (cancel) {
		stream_end(d, x, CURLE_ABORTED_BY_CALLBACK, -ECANCELED, "cancelled");
		return;
	}
	if (!x->url)
		x->url = malloc(DL_URL_MAX);
	h = take_handle(d, NULL);
	if (!x->url || !h) {
		if (h)
			curl_easy_cleanup(h);
		stream_end(d, x, CURLE_OUT_OF_MEMORY, -ENOMEM, "out of memory starting a transfer");
		return;
	}
	if (dl_backend_grpc(d->backend)) {
		grpc_stream_start(d, x, h);
		return;
	}
	r = dl_backend_prepare(d->backend, h, s->op, s->area, s->hash, -1, 0, x->url, DL_URL_MAX);
	dl_backend_watch_silence(d->backend, h, &x->silence, &s->paused);
	/* A stream reads the status itself; an error page is read and dropped so
	 * that the connection stays usable. */
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 0L);
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, stream_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, stream_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, DL_STREAM_BUFFER);
	if (s->op == DL_OP_PUT) {
		curl_easy_setopt(h, CURLOPT_READFUNCTION, stream_on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)s->put_size);
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, DL_STREAM_BUFFER);
	}
	x->easy = h;
	if (r < 0 || curl_multi_add_handle(d->multi, h) != CURLM_OK) {
		x->easy = NULL;
		curl_easy_cleanup(h);
		/* -EACCES: the credential helper failed; x->url says how. */
		stream_end(d, x, CURLE_FAILED_INIT, r == -EACCES ? -EIO : -ENOMEM,
			   r == -EACCES ? x->url : "cannot add a transfer to libcurl");
		return;
	}
	d->running++;
	set_state(x, DL_RUNNING);
}

/* New streams, and pokes: unpause or cancel. Engine thread. */
static void streams_take(tf_downloader *d, dl_stream *add, dl_stream *poke, bool closing)
{
	for (dl_stream *s = add, *n; s; s = n) {
		dl_xfer *x = calloc(1, sizeof(*x));
		n = s->add_next;
		if (!x) {
			stream_settle(s, DL_FINISHED, 0, -ENOMEM, "out of memory starting a transfer");
			stream_unref(s);
			continue;
		}
		x->d = d;
		x->mode = DL_MODE_STREAM;
		x->state = DL_NEW;
		x->fd = x->dirfd = -1;
		x->area = s->area;
		memcpy(x->digest.hash, s->hash, TF_HASH_HEX_LEN + 1); /* for the trace */
		x->digest.size = -1;
		x->s = s;
		s->x = x;
		x->lnext = d->streams;
		d->streams = x;
		enqueue(d, x);
	}
	for (dl_stream *s = poke, *n; s; s = n) {
		dl_xfer *x = s->x;
		bool cancel;
		n = s->poke_next;
		pthread_mutex_lock(&s->mu);
		cancel = s->cancel;
		if (!cancel && x && x->easy)
			s->paused = false;
		pthread_mutex_unlock(&s->mu);
		if (x && cancel)
			stream_end(d, x, CURLE_ABORTED_BY_CALLBACK, -ECANCELED, "cancelled");
		else if (x && x->easy)
			curl_easy_pause(x->easy, CURLPAUSE_CONT);
		stream_unref(s);
	}
	while (closing && d->streams)
		stream_end(d, d->streams, CURLE_ABORTED_BY_CALLBACK, -ESHUTDOWN, "the transfer engine is shutting down");
}

/* ---- BatchReadBlobs: small blobs, many a call ------------------------------------------ */

static bool batchable(tf_downloader *d, const dl_xfer *x)
{
	const dl_grpc *g = dl_backend_grpc(d->backend);

	/* A first attempt only: a retry is one ByteStream.Read of its own. */
	return g && x->mode == DL_MODE_FILE && x->area == TF_AREA_CAS && x->attempts == 0 && !x->resume &&
	       x->digest.size > 0 && x->digest.size <= DL_BATCH_BLOB_MAX && dl_grpc_batch_ok(g);
}

static size_t batch_on_body(char *ptr, size_t size, size_t nmemb, void *userdata);

static int batch_sink(void *arg, const void *p, size_t n)
{
	dl_xfer *b = arg;
	return tf__buf_append(b->mem, p, n) < 0 ? -EFBIG : 0;
}

static size_t batch_on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	dl_xfer *b = userdata;
	return dl_grpc_rx_feed(b->grpc, ptr, size * nmemb, batch_sink, b) < 0 ? 0 : size * nmemb;
}

/* A member's read did not happen: another try (its own ByteStream.Read), or failed. */
static void member_retry(tf_downloader *d, dl_xfer *m, dl_outcome o, const char *why)
{
	char msg[TF_ERROR_MESSAGE_MAX];

	close_tmp(m, true);
	if (o != DL_OUTCOME_FATAL && m->attempts <= d->retries) {
		backoff(d, m);
		return;
	}
	if (o == DL_OUTCOME_FATAL)
		snprintf(msg, sizeof(msg), "GET %s failed: %s", m->url, why);
	else
		snprintf(msg, sizeof(msg), "GET %s failed after %d attempt%s (--remote_retries=%d): %s", m->url,
			 m->attempts, m->attempts == 1 ? "" : "s", d->retries, why);
	finish_failed(d, m, TF_RESULT_FAILED, msg);
}

/* Starts one BatchReadBlobs call for `first` and the batchable transfers
 * queued after it, within the server's batch size. */
static void batch_start(tf_downloader *d, dl_xfer *first)
{
	int64_t limit = dl_grpc_batch_limit(dl_backend_grpc(d->backend)), total = 0;
	dl_xfer *b = calloc(1, sizeof(*b));
	tf_digest *v = NULL;
	CURL *h = NULL;
	size_t n = 0;
	int r = -ENOMEM;

	if (b) {
		b->members = calloc(DL_BATCH_MAX_BLOBS, sizeof(*b->members));
		b->mem = calloc(1, sizeof(*b->mem)); /* zeroed: tf__buf_fini may see it unused */
		b->grpc = malloc(sizeof(*b->grpc));
		b->url = malloc(DL_URL_MAX);
		b->errbuf = malloc(CURL_ERROR_SIZE);
	}
	if (!b || !b->members || !b->mem || !b->grpc || !b->url || !b->errbuf) {
		if (b) {
			free(b->grpc);
			b->grpc = NULL;
		}
		xfer_free(b);
		start(d, first); /* on its own */
		return;
	}
	b->d = d;
	b->mode = DL_MODE_BATCH;
	b->state = DL_NEW;
	b->fd = b->dirfd = -1;
	memcpy(b->digest.hash, first->digest.hash, sizeof(b->digest.hash)); /* for the trace */
	b->digest.size = -1;
	tf__buf_init(b->mem, DL_GRPC_MAX_MESSAGE);
	dl_grpc_rx_init(b->grpc, DL_GRPC_RAW);
	b->members[b->nmembers++] = first;
	total = first->digest.size + DL_BATCH_OVERHEAD;
	for (dl_xfer **pp = &d->queue_head, *prev = NULL; *pp && b->nmembers < DL_BATCH_MAX_BLOBS;) {
		dl_xfer *y = *pp;
		if (!batchable(d, y) || total + y->digest.size + DL_BATCH_OVERHEAD > limit) {
			prev = y;
			pp = &y->qnext;
			continue;
		}
		*pp = y->qnext;
		if (d->queue_tail == y)
			d->queue_tail = prev;
		b->members[b->nmembers++] = y;
		total += y->digest.size + DL_BATCH_OVERHEAD;
	}
	/* Each member's temporary file; one that cannot be made has finished. */
	for (size_t i = 0; i < b->nmembers; i++) {
		dl_xfer *m = b->members[i];
		if (!m->md)
			m->md = EVP_MD_CTX_new();
		if (!m->url)
			m->url = malloc(DL_URL_MAX);
		if (!m->md || !m->url || !EVP_DigestInit_ex(m->md, EVP_sha256(), NULL)) {
			finish_failed(d, m, TF_RESULT_LOCAL, "out of memory starting a transfer");
			continue;
		}
		if (!open_tmp(d, m))
			continue;
		m->received = 0;
		m->local_errno = 0;
		m->attempts++;
		snprintf(m->url, DL_URL_MAX, "%s BatchReadBlobs blobs/%s/%lld",
			 dl_grpc_display(dl_backend_grpc(d->backend)), m->digest.hash, (long long)m->digest.size);
		set_state(m, DL_RUNNING);
		b->members[n++] = m;
	}
	b->nmembers = n;
	if (n == 0) {
		xfer_free(b);
		return;
	}
	v = malloc(n * sizeof(*v));
	h = take_handle(d, NULL);
	if (v)
		for (size_t i = 0; i < n; i++)
			v[i] = b->members[i]->digest;
	if (!v || !h || (r = dl_grpc_batch_prepare(d->backend, h, v, n, b->url, DL_URL_MAX)) < 0) {
		free(v);
		if (h)
			curl_easy_cleanup(h);
		for (size_t i = 0; i < n; i++)
			member_retry(d, b->members[i], DL_OUTCOME_FATAL,
				     r == -EACCES ? b->url : "out of memory starting a transfer");
		xfer_free(b);
		return;
	}
	free(v);
	b->errbuf[0] = '\0';
	dl_backend_watch_silence(d->backend, h, &b->silence, NULL);
	curl_easy_setopt(h, CURLOPT_PRIVATE, b);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, batch_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, grpc_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, b->errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)DL_BUFFER_SIZE_LARGE);
	b->easy = h;
	if (curl_multi_add_handle(d->multi, h) != CURLM_OK) {
		b->easy = NULL;
		curl_easy_cleanup(h);
		for (size_t i = 0; i < n; i++)
			member_retry(d, b->members[i], DL_OUTCOME_FATAL, "cannot add a transfer to libcurl");
		xfer_free(b);
		return;
	}
	d->running++;
	d->pend.attempts++;
	set_state(b, DL_RUNNING);
	b->lnext = d->reads; /* freed by schedule() once finished, or at teardown */
	d->reads = b;
}

typedef struct batch_seen {
	tf_downloader *d;
	dl_xfer *b;
	bool *done;
} batch_seen;

/* One blob of the answer: its bytes through the member's usual path. */
static void batch_blob(void *arg, const char *hash, int64_t size, int code, const char *message, const void *data,
		       size_t len)
{
	batch_seen *bs = arg;
	char msg[TF_ERROR_MESSAGE_MAX], why[600];
	dl_xfer *m = NULL;
	size_t i;

	for (i = 0; i < bs->b->nmembers; i++) {
		dl_xfer *y = bs->b->members[i];
		if (!bs->done[i] && y->digest.size == size && !strcmp(y->digest.hash, hash)) {
			m = y;
			break;
		}
	}
	if (!m)
		return; /* not asked for, or named twice */
	bs->done[i] = true;
	snprintf(why, sizeof(why), "%s%s%.512s", dl_grpc_code_name(code), *message ? ": " : "", message);
	if (code == 5) { /* NOT_FOUND */
		snprintf(msg, sizeof(msg), "GET %.300s: %s; the blob is not in the cache", m->url, why);
		finish_failed(bs->d, m, TF_RESULT_LOST, msg);
		return;
	}
	if (code != 0) {
		member_retry(bs->d, m, DL_OUTCOME_TRANSIENT, why);
		return;
	}
	if (on_body((char *)data, 1, len, m) != len) {
		if (m->local_errno) {
			snprintf(msg, sizeof(msg), "cannot write '%s': %s", m->dests->path, strerror(m->local_errno));
			finish_failed(bs->d, m, TF_RESULT_LOCAL, msg);
		} else {
			snprintf(msg, sizeof(msg), "GET %s: the body is longer than the expected %lld bytes", m->url,
				 (long long)m->digest.size);
			on_corrupt(bs->d, m, msg, sizeof(msg));
		}
		return;
	}
	on_body_done(bs->d, m);
}

/* A BatchReadBlobs call ended: each member placed, lost, retried or failed;
 * all of them queued again, as ByteStream reads, if the server has no
 * BatchReadBlobs. */
static void batch_done(tf_downloader *d, dl_xfer *b, CURLcode rc)
{
	char why[CURL_ERROR_SIZE + 256];
	tf_error err = { 0 };
	long status = 0;
	dl_outcome o;

	curl_easy_getinfo(b->easy, CURLINFO_RESPONSE_CODE, &status);
	release_easy(d, b);
	dl_grpc_note(dl_backend_grpc(d->backend), rc);
	o = dl_grpc_classify(b->grpc, rc, status, b->errbuf, dl_backend_timeout_s(d->backend), why, sizeof(why));
	if (o == DL_OUTCOME_BODY && dl_grpc_rx_partial(b->grpc)) {
		snprintf(why, sizeof(why), "the answer ended inside a message");
		o = DL_OUTCOME_TRANSIENT;
	}
	if (o == DL_OUTCOME_TRANSIENT && dl_grpc_rx_whole_untrailed(b->grpc, rc, status) && b->grpc->messages == 1)
		o = DL_OUTCOME_BODY; /* trailers lost by libcurl; each blob in it is verified */
	set_state(b, DL_FINISHED);
	if (b->grpc->status == 12) { /* UNIMPLEMENTED: a server without BatchReadBlobs */
		dl_grpc_batch_off(dl_backend_grpc(d->backend));
		for (size_t i = 0; i < b->nmembers; i++) {
			dl_xfer *m = b->members[i];
			close_tmp(m, true);
			m->attempts--; /* not an attempt at the blob */
			enqueue(d, m);
		}
		shrink(b);
		return;
	}
	if (o == DL_OUTCOME_BODY) {
		bool *done = calloc(b->nmembers, sizeof(*done));
		batch_seen bs = { d, b, done };
		int r = done ? dl_grpc_batch_answer(b->mem->data, b->mem->len, batch_blob, &bs, &err) : -ENOMEM;
		for (size_t i = 0; i < b->nmembers; i++)
			if (!done || !done[i])
				member_retry(d, b->members[i], DL_OUTCOME_TRANSIENT,
					     r < 0 ? (err.message[0] ? err.message : "out of memory")
						   : "the BatchReadBlobs answer did not name it");
		free(done);
	} else {
		for (size_t i = 0; i < b->nmembers; i++)
			member_retry(d, b->members[i], o == DL_OUTCOME_FATAL ? DL_OUTCOME_FATAL : DL_OUTCOME_TRANSIENT,
				     why);
	}
	shrink(b);
}

static void on_attempt_done(tf_downloader *d, dl_xfer *x, CURLcode rc)
{
	char why[CURL_ERROR_SIZE + 256], msg[TF_ERROR_MESSAGE_MAX];
	long status = 0;
	dl_outcome o;

	if (x->mode == DL_MODE_BATCH) {
		batch_done(d, x, rc);
		return;
	}
	if (x->mode == DL_MODE_STREAM) {
		if (x->grpc) {
			grpc_stream_done(d, x, rc);
		} else {
			dl_backend_h2c_note(d->backend, rc);
			stream_end(d, x, rc, 0, NULL);
		}
		return;
	}
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	release_easy(d, x);
	if (!x->grpc && dl_backend_h2c_note(d->backend, rc) && !x->h2c_again) {
		x->h2c_again = true;
		x->attempts--; /* not an attempt at the blob: its connection had gone */
		close_tmp(x, true);
		enqueue(d, x);
		return;
	}

	if (rc == CURLE_WRITE_ERROR && x->mem && x->local_errno) {
		snprintf(msg, sizeof(msg), "GET %s: the body is larger than the %zu bytes allowed for it",
			 x->url, x->mem->cap);
		finish_failed(d, x, TF_RESULT_CORRUPT, msg);
		return;
	}
	if (rc == CURLE_WRITE_ERROR && x->local_errno) {
		snprintf(msg, sizeof(msg), "cannot write '%s': %s", x->dests->path,
			 strerror(x->local_errno));
		finish_failed(d, x, TF_RESULT_LOCAL, msg);
		return;
	}
	if (rc == CURLE_WRITE_ERROR && x->received > x->digest.size) {
		snprintf(msg, sizeof(msg), "GET %s: the body is longer than the expected %lld bytes",
			 x->url, (long long)x->digest.size);
		on_corrupt(d, x, msg, sizeof(msg));
		return;
	}
	if (x->grpc) {
		dl_grpc_note(dl_backend_grpc(d->backend), rc);
		o = dl_grpc_classify(x->grpc, rc, status, x->errbuf, dl_backend_timeout_s(d->backend), why,
				     sizeof(why));
		if (o == DL_OUTCOME_BODY && dl_grpc_rx_partial(x->grpc)) {
			snprintf(why, sizeof(why), "the answer ended inside a message");
			o = DL_OUTCOME_TRANSIENT;
		}
		/* Trailers lost by libcurl: every byte of a blob read (verified
		 * next), or a unary call's one answer. */
		if (o == DL_OUTCOME_TRANSIENT && dl_grpc_rx_whole_untrailed(x->grpc, rc, status) &&
		    (x->area == TF_AREA_CAS ? x->received == x->digest.size : x->grpc->messages == 1))
			o = DL_OUTCOME_BODY;
	} else {
		o = dl_backend_classify(d->backend, rc, status, x->errbuf, why, sizeof(why));
	}
	switch (o) {
	case DL_OUTCOME_BODY:
		on_body_done(d, x);
		return;
	case DL_OUTCOME_MISS:
		snprintf(msg, sizeof(msg), "GET %s: %s; the blob is not in the cache", x->url, why);
		finish_failed(d, x, TF_RESULT_LOST, msg);
		return;
	case DL_OUTCOME_TRANSIENT:
	case DL_OUTCOME_TIMEOUT:
		if (x->attempts <= d->retries) {
			/* A ByteStream read goes on where it broke off (read_offset). */
			if (x->grpc && !x->mem && x->area == TF_AREA_CAS && x->fd >= 0 && x->received > 0 &&
			    x->received < x->digest.size && !x->no_resume &&
			    (!x->job || dl_hasher_flush(d->hasher, x->job, x->fd) == 0))
				x->resume = true;
			else
				close_tmp(x, true);
			backoff(d, x);
			return;
		}
		snprintf(msg, sizeof(msg), "GET %s failed after %d attempt%s (--remote_retries=%d): %s",
			 x->url, x->attempts, x->attempts == 1 ? "" : "s", d->retries, why);
		finish_failed(d, x, TF_RESULT_FAILED, msg);
		return;
	case DL_OUTCOME_FATAL:
		snprintf(msg, sizeof(msg), "GET %s failed: %s", x->url, why);
		finish_failed(d, x, TF_RESULT_FAILED, msg);
		return;
	}
}

/* ---- accepting requests ---------------------------------------------------------- */

static dl_xfer *xfer_new(tf_downloader *d, const tf_digest *dg)
{
	dl_xfer *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->d = d;
	x->area = TF_AREA_CAS;
	x->digest = *dg;
	x->state = DL_NEW;
	x->fd = x->dirfd = -1;
	return x;
}

/* Writes an empty file at t->path: zero-length blobs are never requested. */
static void place_empty(tf_downloader *d, dl_dest *t)
{
	tf_error err = { 0 };
	char tmp[32], msg[TF_ERROR_MESSAGE_MAX];
	const char *leaf;
	tf_digest dg;
	dl_dir *pin;
	int fd, dfd = parent_open(d, t->path, true, &leaf, &pin, &err);

	tf_digest_parse(TF_EMPTY_SHA256, 0, &dg, NULL);
	if (dfd < 0) {
		complete(d, t, &dg, TF_RESULT_LOCAL, false, false, false, 0, err.message);
		return;
	}
	make_tmpname(d, tmp, sizeof(tmp));
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, t->executable ? 0755 : 0644);
	if (fd < 0 || fchmod(fd, t->executable ? 0755 : 0644) < 0 || renameat(dfd, tmp, dfd, leaf) < 0) {
		snprintf(msg, sizeof(msg), "cannot create empty file '%s': %s", t->path, strerror(errno));
		if (fd >= 0)
			unlinkat(dfd, tmp, 0);
		complete(d, t, &dg, TF_RESULT_LOCAL, false, false, false, 0, msg);
	} else {
		complete(d, t, &dg, TF_RESULT_OK, false, false, false, 0, NULL);
	}
	if (fd >= 0)
		close(fd);
	dir_release(pin, dfd);
}

static void accept_request(tf_downloader *d, dl_request *q)
{
	dl_dest *t = q->dest;
	tf_error err = { 0 };
	dl_xfer *x;

	if (q->max_bytes && q->area == TF_AREA_CAS && q->digest.size == 0) {
		tf__buf *empty = calloc(1, sizeof(*empty)); /* zero-length blobs are never requested */
		complete_read(d, t, &q->digest, empty ? TF_RESULT_OK : TF_RESULT_LOCAL, false, false, false,
			      0, empty ? NULL : "out of memory", empty);
		return;
	}
	if (q->max_bytes) {
		x = xfer_new(d, &q->digest);
		if (x)
			x->mem = malloc(sizeof(*x->mem));
		if (!x || !x->mem) {
			xfer_free(x);
			complete(d, t, &q->digest, TF_RESULT_LOCAL, false, false, false, 0, "out of memory");
			return;
		}
		tf__buf_init(x->mem, q->max_bytes);
		x->mode = DL_MODE_MEM;
		x->area = q->area;
		x->dests = t;
		x->lnext = d->reads;
		d->reads = x;
		enqueue(d, x);
		return;
	}
	if (d->rootfd < 0) {
		complete(d, t, &q->digest, TF_RESULT_LOCAL, false, false, false, 0,
			 "this downloader was made for streams only: it has no output directory");
		return;
	}
	if (tf__path_check(t->path, "destination", &err) < 0) {
		complete(d, t, &q->digest, TF_RESULT_LOCAL, false, false, false, 0, err.message);
		return;
	}
	if (q->digest.size == 0) {
		place_empty(d, t);
		return;
	}
	x = index_find(d, &q->digest);
	if (x && (x->state == DL_QUEUED || x->state == DL_RUNNING || x->state == DL_BACKOFF ||
		  x->state == DL_VERIFYING)) {
		/* In flight: ride along (appended, so the first keeps the file). */
		dl_dest **pp = &x->dests;
		while (*pp)
			pp = &(*pp)->next;
		*pp = t;
		return;
	}
	/* A new blob: whether its file is already there is asked when it
	 * starts (open_tmp), in the folder it opens anyway. */
	if (x && x->state == DL_PLACED && already_present(d, t->path, &q->digest, t->executable)) {
		complete(d, t, &q->digest, TF_RESULT_OK, false, true, false, 0, NULL);
		return;
	}
	if (x && x->state == DL_PLACED && placed_still_good(d, x)) {
		x->dests = t;
		serve_dests(d, x, false);
		return;
	}
	if (!x) {
		if (d->index.n >= DL_INDEX_MAX)
			index_forget(d, false, drop_ended);
		x = xfer_new(d, &q->digest);
		if (!x || index_add(d, x) < 0) {
			xfer_free(x);
			complete(d, t, &q->digest, TF_RESULT_LOCAL, false, false, false, 0, "out of memory");
			return;
		}
	}
	x->dests = t;
	x->attempts = 0;
	x->corrupt_attempts = 0;
	enqueue(d, x);
}

/* ---- the engine thread ------------------------------------------------------------ */

static void schedule(tf_downloader *d)
{
	uint64_t now = tf__now_ns();
	dl_xfer **pp = &d->backoff;

	/* Reads that ended are not kept: nothing asks for them again. */
	for (dl_xfer **rp = &d->reads; *rp;) {
		dl_xfer *x = *rp;
		if (x->state == DL_FINISHED) {
			*rp = x->lnext;
			xfer_free(x);
		} else {
			rp = &x->lnext;
		}
	}

	while (*pp) {
		dl_xfer *x = *pp;
		if (x->retry_at_ns <= now) {
			*pp = x->qnext;
			enqueue(d, x);
		} else {
			pp = &x->qnext;
		}
	}
	while (d->queue_head && d->running < d->max_conn) {
		dl_xfer *x = d->queue_head;
		d->queue_head = x->qnext;
		if (!d->queue_head)
			d->queue_tail = NULL;
		if (batchable(d, x))
			batch_start(d, x);
		else
			start(d, x);
	}
}

/* How long the engine may sleep: until libcurl's timer or the first backoff
 * ends, a second at most. */
static int poll_timeout_ms(tf_downloader *d)
{
	uint64_t now = tf__now_ns(), soonest = d->curl_due_ns;
	for (dl_xfer *x = d->backoff; x; x = x->qnext)
		if (x->retry_at_ns < soonest)
			soonest = x->retry_at_ns;
	if (soonest == UINT64_MAX || soonest - now >= 1000000000u)
		return soonest <= now ? 0 : 1000;
	return soonest <= now ? 0 : (int)((soonest - now + 999999u) / 1000000u);
}

/* libcurl's socket callback: what it waits for on socket fd, kept in epfd.
 * socketp is non-NULL once fd is in the set. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	tf_downloader *d = userp;
	struct epoll_event ev = { .data.fd = fd };

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (socketp)
			epoll_ctl(d->epfd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
	if (epoll_ctl(d->epfd, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) {
		/* The set and libcurl's idea of it differ (a reused fd number). */
		if (errno == EEXIST)
			epoll_ctl(d->epfd, EPOLL_CTL_MOD, fd, &ev);
		else if (errno == ENOENT)
			epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev);
	}
	if (!socketp)
		curl_multi_assign(d->multi, fd, d);
	return 0;
}

/* libcurl's timer callback: run its timeouts in timeout_ms (-1: none). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	tf_downloader *d = userp;

	(void)multi;
	d->curl_due_ns = timeout_ms < 0 ? UINT64_MAX : tf__now_ns() + (uint64_t)timeout_ms * 1000000u;
	return 0;
}

/* Hands libcurl the sockets epoll reported, then its timeouts if due. Only
 * sockets with news are looked at (curl_multi_socket_action), not every
 * transfer each round as curl_multi_perform would. */
static void run_curl(tf_downloader *d, const struct epoll_event *ev, int nev)
{
	int still;

	for (int i = 0; i < nev; i++) {
		int bits = 0;
		if (ev[i].data.fd == d->wakefd) {
			uint64_t v;
			if (read(d->wakefd, &v, sizeof(v)) < 0)
				(void)0; /* EAGAIN: another round read it */
			continue;
		}
		if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			bits |= CURL_CSELECT_IN;
		if (ev[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			bits |= CURL_CSELECT_OUT;
		curl_multi_socket_action(d->multi, ev[i].data.fd, bits, &still);
	}
	if (d->curl_due_ns <= tf__now_ns()) {
		d->curl_due_ns = UINT64_MAX;
		curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &still);
	}
}

static void *engine_main(void *arg)
{
	tf_downloader *d = arg;
	struct epoll_event ev[DL_EVENTS];
	int nev = 0;

	for (;;) {
		dl_request *in;
		dl_stream *add, *poke;
		CURLMsg *m;
		int left;
		bool closing;

		pthread_mutex_lock(&d->mu);
		in = d->in_head;
		d->in_head = d->in_tail = NULL;
		add = d->add_head;
		d->add_head = d->add_tail = NULL;
		poke = d->poke_head;
		d->poke_head = d->poke_tail = NULL;
		for (dl_stream *s = poke; s; s = s->poke_next)
			s->poked = false;
		closing = d->closing;
		pthread_mutex_unlock(&d->mu);
		streams_take(d, add, poke, closing);
		if (closing) {
			while (in) {
				dl_request *n = in->next;
				dest_free(in->dest);
				free(in);
				in = n;
			}
			break;
		}
		while (in) {
			dl_request *n = in->next;
			accept_request(d, in);
			free(in);
			in = n;
		}
		schedule(d);
		run_curl(d, ev, nev);
		while ((m = curl_multi_info_read(d->multi, &left))) {
			dl_xfer *x = NULL;
			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			/* Cut by the silence check: a timeout, as curl's own would be. */
			on_attempt_done(d, x, m->data.result == CURLE_ABORTED_BY_CALLBACK && x->silence.fired
						       ? CURLE_OPERATION_TIMEDOUT
						       : m->data.result);
		}
		{
			char hex[TF_HASH_HEX_LEN + 1];
			dl_xfer *x;
			while ((x = dl_hasher_take_done(d->hasher, hex))) {
				x->job = NULL; /* the hasher freed it */
				on_verified(d, x, hex);
			}
		}
		if (d->writer)
			for (dl_writejob *j = dl_writer_take_done(d->writer), *n; j; j = n) {
				n = j->next;
				on_written(d, j);
			}
		schedule(d);
		/* This round's small blobs, to the writer in one hand-over. */
		if (d->wq) {
			dl_writer_submit(d->writer, d->wq);
			d->wq = NULL;
		}
		publish(d);
		if (!d->running && !d->queue_head && !d->backoff && !d->verifying)
			dirs_flush(d, false);
		nev = epoll_wait(d->epfd, ev, DL_EVENTS, poll_timeout_ms(d));
		if (nev < 0)
			nev = 0; /* EINTR */
	}
	publish(d);
	return NULL;
}

/* ---- public API ------------------------------------------------------------------ */

void tf_remote_options_init(tf_remote_options *o)
{
	memset(o, 0, sizeof(*o));
	o->remote_max_connections = 100;
	o->remote_timeout_s = 60;
	o->remote_retries = 5;
	o->credential_helper_timeout_s = 10;
	o->credential_helper_cache_duration_s = 30 * 60;
}

const char *tf_result_name(tf_result r)
{
	switch (r) {
	case TF_RESULT_OK: return "ok";
	case TF_RESULT_LOST: return "lost";
	case TF_RESULT_CORRUPT: return "corrupt";
	case TF_RESULT_FAILED: return "failed";
	case TF_RESULT_LOCAL: return "local";
	}
	return "?";
}

static void wake_engine(void *arg)
{
	wake(arg);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_global(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

tf_downloader *tf_downloader_new(const tf_remote_options *opts, const char *output_dir, tf_error *err)
{
	tf_downloader *d;
	int r;

	if (opts->remote_max_connections < 1 || opts->remote_max_connections > 10000) {
		tf__errf(err, -EINVAL, "--remote_max_connections=%d is out of range (1..10000)",
			 opts->remote_max_connections);
		return NULL;
	}
	if (opts->remote_retries < 0 || opts->remote_retries > 100) {
		tf__errf(err, -EINVAL, "--remote_retries=%d is out of range (0..100)", opts->remote_retries);
		return NULL;
	}
	if (opts->remote_timeout_s < 1 || opts->remote_timeout_s > 86400) {
		tf__errf(err, -EINVAL, "--remote_timeout=%d is out of range (1..86400 seconds)",
			 opts->remote_timeout_s);
		return NULL;
	}
	pthread_once(&curl_once, curl_global);
	d = calloc(1, sizeof(*d));
	if (!d) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	d->rootfd = d->evfd = d->wakefd = d->epfd = -1;
	d->curl_due_ns = UINT64_MAX;
	pthread_mutex_init(&d->mu, NULL);
	d->max_conn = opts->remote_max_connections;
	d->retries = opts->remote_retries;
	d->pid = (long)getpid();
	d->trace = getenv("TOPFETCH_TRACE") != NULL;
	d->rand_state = (unsigned)tf__now_ns() ^ (unsigned)d->pid;
	/* Read the umask once (umask() can only be read by setting it). */
	d->umask = umask(022);
	umask(d->umask);
	tf__map_init(&d->index);
	d->backend = dl_backend_new(opts, err);
	if (!d->backend)
		goto fail;
	/* A gRPC cache: once, is it a SHA-256 cache that lets us in? */
	if (dl_backend_grpc(d->backend) && dl_grpc_capabilities(d->backend, err) < 0)
		goto fail;
	if (!output_dir) {
		/* streams only */
	} else if ((r = dl_mkdirs(output_dir)) < 0) { /* with its missing parents, as --help says */
		tf__errf(err, r, "cannot create the output directory %s: %s", output_dir, strerror(-r));
		goto fail;
	}
	else if ((d->rootfd = open(output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		tf__errf(err, -errno, "cannot open the output directory %s: %s", output_dir, strerror(errno));
		goto fail;
	}
	d->root_dir.fd = d->rootfd;
	d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	d->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->wakefd >= 0 && d->epfd >= 0 &&
	    epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->wakefd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.fd = d->wakefd }) < 0) {
		close(d->epfd);
		d->epfd = -1;
	}
	d->idle_handles = calloc((size_t)d->max_conn, sizeof(*d->idle_handles));
	d->idle_plain = calloc((size_t)d->max_conn, sizeof(*d->idle_plain));
	d->multi = curl_multi_init();
	if (d->evfd < 0 || d->wakefd < 0 || d->epfd < 0 || !d->idle_handles || !d->idle_plain || !d->multi) {
		tf__errf(err, -ENOMEM, "cannot set up the transfer engine: %s", strerror(errno));
		goto fail;
	}
	d->hasher = dl_hasher_new(wake_engine, d);
	if (!d->hasher) {
		tf__errf(err, -EAGAIN, "cannot start the verifier thread");
		goto fail;
	}
	/* Without it (no thread to be had) small blobs are written inline. */
	d->writer = dl_writer_new(wake_engine, d, DL_WRITE_LINK_FD);
	curl_multi_setopt(d->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)d->max_conn);
	curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)d->max_conn);
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)d->max_conn);
	/* HTTP/2: every transfer in flight may be a stream of one connection. */
	curl_multi_setopt(d->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)d->max_conn);
	curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
	curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
	if (pthread_create(&d->thread, NULL, engine_main, d) != 0) {
		tf__errf(err, -EAGAIN, "cannot start the transfer thread");
		goto fail;
	}
	d->thread_started = true;
	return d;
fail:
	tf_downloader_free(d);
	return NULL;
}

/* Hands a request to the engine thread (takes q, also on failure). */
static int submit(tf_downloader *d, dl_request *q)
{
	bool first;

	pthread_mutex_lock(&d->mu);
	if (d->closing || d->outstanding >= DL_MAX_OUTSTANDING) {
		int r = d->closing ? -ESHUTDOWN : -EAGAIN;
		pthread_mutex_unlock(&d->mu);
		dest_free(q->dest);
		free(q);
		return r;
	}
	d->outstanding++;
	if (!q->max_bytes)
		d->stats.requests++;
	/* The engine takes the whole queue at once: wake it only for the first. */
	first = !d->in_head;
	if (d->in_tail)
		d->in_tail->next = q;
	else
		d->in_head = q;
	d->in_tail = q;
	pthread_mutex_unlock(&d->mu);
	if (first)
		wake(d);
	return 0;
}

int tf_downloader_fetch(tf_downloader *d, const tf_digest *digest, bool executable, const char *path,
			tf_fetch_cb cb, void *user)
{
	dl_request *q = calloc(1, sizeof(*q));
	dl_dest *t = calloc(1, sizeof(*t));

	if (!q || !t || !(t->path = strdup(path)) || !(t->c = calloc(1, sizeof(*t->c)))) {
		free(q);
		dest_free(t);
		return -ENOMEM;
	}
	q->digest = *digest;
	t->executable = executable;
	t->cb = cb;
	t->user = user;
	q->dest = t;
	return submit(d, q);
}

int tf_downloader_read(tf_downloader *d, tf_area area, const char *hash, int64_t size,
		       size_t max_bytes, tf_fetch_cb cb, void *user)
{
	dl_request *q;
	dl_dest *t;

	if (!tf__is_sha256_hex(hash, strlen(hash)) || max_bytes == 0 || size > (int64_t)max_bytes ||
	    (area == TF_AREA_CAS && size < 0))
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	t = calloc(1, sizeof(*t));
	if (!q || !t || asprintf(&t->path, "%s/%s", dl_area_name(area), hash) < 0) {
		free(q);
		free(t);
		return -ENOMEM;
	}
	if (!(t->c = calloc(1, sizeof(*t->c)))) {
		free(q);
		dest_free(t);
		return -ENOMEM;
	}
	memcpy(q->digest.hash, hash, TF_HASH_HEX_LEN + 1);
	q->digest.size = size;
	q->area = area;
	q->max_bytes = max_bytes;
	t->cb = cb;
	t->user = user;
	q->dest = t;
	return submit(d, q);
}

int tf_downloader_fd(const tf_downloader *d)
{
	return d->evfd;
}

int tf_downloader_dispatch(tf_downloader *d, int timeout_ms)
{
	dl_completion *c;
	uint64_t v;
	int n = 0;

	for (;;) {
		struct pollfd p = { .fd = d->evfd, .events = POLLIN };

		/* Clear the signal together with taking the list: a completion
		 * added after this signals again, so no wakeup is lost. */
		pthread_mutex_lock(&d->mu);
		if (d->signaled) {
			if (read(d->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
				pthread_mutex_unlock(&d->mu);
				return -errno;
			}
			d->signaled = false;
		}
		c = d->done_head;
		d->done_head = d->done_tail = NULL;
		pthread_mutex_unlock(&d->mu);
		if (c || timeout_ms == 0)
			break;
		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		timeout_ms = 0;
	}
	while (c) {
		dl_completion *next = c->next;
		if (c->cb)
			c->cb(&c->done, c->user);
		atomic_fetch_sub_explicit(&d->outstanding, 1, memory_order_relaxed);
		completion_free(c);
		c = next;
		n++;
	}
	return n;
}

size_t tf_downloader_outstanding(const tf_downloader *d)
{
	return atomic_load_explicit(&((tf_downloader *)d)->outstanding, memory_order_relaxed);
}

void tf_downloader_get_stats(const tf_downloader *d, tf_downloader_stats *out)
{
	pthread_mutex_lock((pthread_mutex_t *)&d->mu);
	*out = d->stats;
	out->bytes_in_flight = atomic_load_explicit(&((tf_downloader *)d)->bytes_in_flight, memory_order_relaxed);
	pthread_mutex_unlock((pthread_mutex_t *)&d->mu);
}

int tf_downloader_remove_dead_temporaries(tf_downloader *d, uint64_t *removed, tf_error *err)
{
	if (removed)
		*removed = 0;
	return d->rootfd < 0 ? 0 : dl_remove_dead_tmp(d->rootfd, removed, err);
}

void tf_downloader_free(tf_downloader *d)
{
	dl_completion *c;

	if (!d)
		return;
	/* close: refuse new work; stop: wait for the thread; free. */
	pthread_mutex_lock(&d->mu);
	d->closing = true;
	pthread_mutex_unlock(&d->mu);
	if (d->thread_started) {
		wake(d);
		pthread_join(d->thread, NULL);
	}
	/* The writer finishes what it holds while every folder is still open. */
	dl_writer_free(d->writer);
	d->writer = NULL;
	index_forget(d, true, drop_any);
	for (dl_writejob *j = d->wfree, *n; j; j = n) {
		n = j->next;
		free(j);
	}
	for (int i = 0; i < d->nidle; i++)
		curl_easy_cleanup(d->idle_handles[i]);
	dirs_flush(d, true);
	dl_hasher_free(d->hasher);
	for (dl_xfer *x = d->reads, *n; x; x = n) {
		n = x->lnext;
		if (x->easy) {
			curl_multi_remove_handle(d->multi, x->easy);
			curl_easy_cleanup(x->easy);
		}
		for (dl_dest *t = x->dests, *tn; t; t = tn) {
			tn = t->next;
			dest_free(t);
		}
		xfer_free(x);
	}
	for (c = d->done_head; c;) {
		dl_completion *n = c->next;
		completion_free(c);
		c = n;
	}
	if (d->multi)
		curl_multi_cleanup(d->multi);
	tf__map_fini(&d->index);
	free(d->idle_handles);
	free(d->idle_plain);
	dl_backend_free(d->backend);
	if (d->rootfd >= 0)
		close(d->rootfd);
	if (d->evfd >= 0)
		close(d->evfd);
	if (d->wakefd >= 0)
		close(d->wakefd);
	if (d->epfd >= 0)
		close(d->epfd);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

void dl_downloader_close(tf_downloader *d)
{
	pthread_mutex_lock(&d->mu);
	d->closing = true;
	pthread_mutex_unlock(&d->mu);
	wake(d);
}

/* ---- streams: the caller's side ------------------------------------------------------ */

static void stream_open_disk(dl_stream *s)
{
	dl_backend *b = s->d->backend;
	char path[TF__PATH_MAX + 256];
	int64_t size = 0;

	if (s->op == DL_OP_PUT) {
		s->fd = dl_disk_tmp(b, s->area, s->hash, path, sizeof(path));
		if (s->fd < 0 || !(s->tmp = strdup(path))) {
			int e = s->fd < 0 ? -s->fd : ENOMEM;
			if (s->fd >= 0) {
				close(s->fd);
				unlink(path);
				s->fd = -1;
			}
			stream_settle(s, DL_FINISHED, 0, -e, strerror(e));
			return;
		}
		stream_settle(s, DL_RUNNING, 0, 0, NULL);
		return;
	}
	s->fd = dl_disk_open(b, s->area, s->hash, &size);
	if (s->fd == -ENOENT) {
		s->fd = -1;
		stream_settle(s, DL_FINISHED, 404, 0, NULL);
		return;
	}
	if (s->fd < 0) {
		int e = -s->fd;
		s->fd = -1;
		stream_settle(s, DL_FINISHED, 0, -EIO, strerror(e));
		return;
	}
	s->length = size;
	if (s->cap && (uint64_t)size > s->cap)
		stream_settle(s, DL_FINISHED, 0, -EFBIG, NULL);
	else
		stream_settle(s, DL_ANSWERED, 200, 0, NULL);
}

/* A stream not yet handed to the engine (stream_submit). */
static dl_stream *stream_create(tf_downloader *d, dl_op op, tf_area area, const char *hash, int64_t size,
				size_t cap, tf_error *err)
{
	dl_stream *s;
	int64_t put_size = op == DL_OP_PUT ? size : 0;

	if (!tf__is_sha256_hex(hash, strlen(hash)) || (op == DL_OP_PUT && put_size < 0)) {
		tf__errf(err, -EINVAL, "not a SHA-256 key, or a negative upload size");
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	s->d = d;
	s->op = op;
	s->area = area;
	memcpy(s->hash, hash, TF_HASH_HEX_LEN + 1);
	s->put_size = put_size;
	s->size = size > 0 ? size : 0;
	s->cap = cap;
	tf__buf_init(&s->over, DL_GRPC_MAX_MESSAGE + (size_t)DL_STREAM_BUFFER);
	tf__buf_init(&s->greq, DL_GRPC_MAX_MESSAGE);
	tf__buf_init(&s->gans, DL_GRPC_MAX_MESSAGE);
	s->refs = 1;
	s->fd = -1;
	s->length = -1;
	s->state = DL_NEW;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (dl_backend_is_disk(d->backend)) {
		char path[TF__PATH_MAX + 256];
		dl_disk_path(d->backend, area, hash, path, sizeof(path));
		s->what = strdup(path);
	} else if (asprintf(&s->what, "%s/%s/%s", dl_backend_display(d->backend), dl_area_name(area), hash) < 0) {
		s->what = NULL;
	}
	if (area == TF_AREA_CAS && op != DL_OP_HEAD) {
		s->md = EVP_MD_CTX_new();
		if (s->md && !EVP_DigestInit_ex(s->md, EVP_sha256(), NULL)) {
			EVP_MD_CTX_free(s->md);
			s->md = NULL;
		}
	}
	if (!dl_backend_is_disk(d->backend)) {
		s->ring.cap = DL_RING_BYTES;
		s->ring.b = malloc(DL_RING_BYTES);
	}
	if (!s->what || (area == TF_AREA_CAS && op != DL_OP_HEAD && !s->md) ||
	    (!dl_backend_is_disk(d->backend) && !s->ring.b)) {
		tf__errf(err, -ENOMEM, "out of memory");
		stream_unref(s);
		return NULL;
	}
	return s;
}

/* Hands s to the engine (a disk cache's to plain file I/O). Does not block. */
static void stream_submit(dl_stream *s)
{
	tf_downloader *d = s->d;
	bool refused;

	if (dl_backend_is_disk(d->backend)) {
		stream_open_disk(s);
		return;
	}
	pthread_mutex_lock(&d->mu);
	refused = d->closing;
	if (!refused) {
		s->refs++; /* the engine's */
		s->add_next = NULL;
		if (d->add_tail)
			d->add_tail->add_next = s;
		else
			d->add_head = s;
		d->add_tail = s;
	}
	pthread_mutex_unlock(&d->mu);
	if (refused)
		stream_settle(s, DL_FINISHED, 0, -ESHUTDOWN, "the transfer engine is shutting down");
	else
		wake(d);
}

dl_stream *dl_stream_open(tf_downloader *d, dl_op op, tf_area area, const char *hash, int64_t size, size_t cap,
			  tf_error *err)
{
	dl_stream *s;

	if (op == DL_OP_FIND) {
		tf__errf(err, -EINVAL, "a FindMissingBlobs stream is made by dl_find_missing");
		return NULL;
	}
	s = stream_create(d, op, area, hash, size, cap, err);
	if (s)
		stream_submit(s);
	return s;
}

const char *dl_stream_what(const dl_stream *s)
{
	return s->what;
}

/* What the answer means, with s->mu held: 0 (found, or stored), or a
 * negative code with why. Never names credentials: what has none. */
static int stream_outcome(dl_stream *s, char *why, size_t n)
{
	tf_downloader *d = s->d;
	char w[CURL_ERROR_SIZE + 256];
	dl_outcome o;

	switch (s->err) {
	case 0:
	case -ECANCELED:
		break;
	case -EFBIG:
		snprintf(why, n, "%s: larger than the %zu bytes allowed for it", s->what, s->cap);
		return -EFBIG;
	default:
		snprintf(why, n, "%s: %s", s->what, s->errbuf[0] ? s->errbuf : strerror(-s->err));
		return s->err;
	}
	if (s->status >= 200 && (s->state != DL_FINISHED || s->result == CURLE_OK)) {
		if (s->op == DL_OP_PUT && s->status < 300)
			return 0;
		if (s->op != DL_OP_PUT && s->status < 300 && s->status != 204)
			return 0;
		if (s->op != DL_OP_PUT && (s->status == 404 || s->status == 204)) {
			if (s->errbuf[0])
				snprintf(why, n, "%s: not in the cache (%s)", s->what, s->errbuf);
			else
				snprintf(why, n, "%s: not in the cache (HTTP %ld)", s->what, s->status);
			return -ENOENT;
		}
		o = dl_backend_classify(d->backend, CURLE_OK, s->status, NULL, w, sizeof(w));
		snprintf(why, n, "%s answered %s", s->what, w);
		return -EIO;
	}
	if (s->state != DL_FINISHED) {
		snprintf(why, n, "%s: no answer yet", s->what);
		return -EAGAIN;
	}
	if (s->err == -ECANCELED) {
		snprintf(why, n, "%s: cancelled", s->what);
		return -ECANCELED;
	}
	o = dl_backend_classify(d->backend, s->result, 0, s->errbuf, w, sizeof(w));
	if (o == DL_OUTCOME_TIMEOUT) {
		snprintf(why, n, "%s: no answer within --remote_timeout=%lds (%s)", s->what,
			 dl_backend_timeout_s(d->backend), s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result));
		return -ETIMEDOUT;
	}
	snprintf(why, n, "%s: %s", s->what, w);
	return -EIO;
}

int dl_stream_wait(dl_stream *s, int64_t *length, char *why, size_t n)
{
	int r;

	pthread_mutex_lock(&s->mu);
	while (s->state != DL_ANSWERED && s->state != DL_FINISHED)
		pthread_cond_wait(&s->cv, &s->mu);
	r = stream_outcome(s, why, n);
	if (length)
		*length = s->length;
	pthread_mutex_unlock(&s->mu);
	return r;
}

/* The body ended: checks its length and (CAS) its hash. */
static int stream_verify(dl_stream *s, char *why, size_t n)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[TF_HASH_HEX_LEN + 1];

	if (s->length >= 0 && s->done_bytes != (uint64_t)s->length) {
		snprintf(why, n, "%s: the body ended after %llu of %lld bytes", s->what,
			 (unsigned long long)s->done_bytes, (long long)s->length);
		return -EIO;
	}
	if (s->md) {
		EVP_DigestFinal_ex(s->md, md, &mdlen);
		tf__hex(md, mdlen, hex);
		if (strcmp(hex, s->hash)) {
			snprintf(why, n, "%s: the body hashes to %s, not %s", s->what, hex, s->hash);
			return -EBADMSG;
		}
	}
	s->verified = true;
	return 0;
}

static ssize_t stream_read_disk(dl_stream *s, unsigned char *buf, size_t max, char *why, size_t n)
{
	uint64_t left = (uint64_t)s->length - s->done_bytes;
	size_t want = left > 1 ? (size_t)(left - 1 < max ? left - 1 : max) : 1;
	ssize_t got;

	if (left == 0) {
		int r = stream_verify(s, why, n);
		return r < 0 ? r : 0;
	}
	do
		got = read(s->fd, buf, want);
	while (got < 0 && errno == EINTR);
	if (got <= 0) {
		snprintf(why, n, "%s: %s", s->what, got < 0 ? strerror(errno) : "the file got shorter while read");
		return -EIO;
	}
	s->done_bytes += (uint64_t)got;
	if (s->md)
		EVP_DigestUpdate(s->md, buf, (size_t)got);
	if (s->done_bytes == (uint64_t)s->length) {
		int r = stream_verify(s, why, n);
		if (r < 0)
			return r;
	}
	return got;
}

ssize_t dl_stream_read(dl_stream *s, void *out, size_t max, char *why, size_t n)
{
	unsigned char *buf = out;

	if (s->op != DL_OP_GET || max == 0)
		return -EINVAL;
	if (s->verified)
		return 0;
	if (dl_backend_is_disk(s->d->backend)) {
		dl_state st;
		int r;
		pthread_mutex_lock(&s->mu);
		st = s->state;
		r = st == DL_ANSWERED ? 0 : stream_outcome(s, why, n);
		pthread_mutex_unlock(&s->mu);
		if (r < 0)
			return r;
		if (st != DL_ANSWERED) {
			snprintf(why, n, "%s: nothing to read", s->what);
			return -EIO;
		}
		return stream_read_disk(s, buf, max, why, n);
	}
	pthread_mutex_lock(&s->mu);
	for (;;) {
		bool done = s->state == DL_FINISHED;
		size_t avail = q_len(s), got;
		bool poke = false;
		int r;

		if (done || (s->state == DL_ANSWERED && s->status != 200)) {
			r = stream_outcome(s, why, n);
			if (r < 0 || (done && s->result != CURLE_OK)) {
				if (r == 0)
					snprintf(why, n, "%s: the transfer failed: %s", s->what,
						 s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result));
				pthread_mutex_unlock(&s->mu);
				return r < 0 ? r : -EIO;
			}
		}
		if (avail > 1 || (avail == 1 && done)) {
			/* The last byte waits until the transfer ended and the hash matched. */
			got = q_get(s, buf, avail > 1 ? (avail - 1 < max ? avail - 1 : max) : 1);
			if (s->paused && s->over.len == 0 && s->ring.cap - s->ring.len >= s->ring.cap / 2) {
				s->paused = false;
				poke = true;
			}
			done = done && q_len(s) == 0;
			pthread_mutex_unlock(&s->mu);
			if (poke)
				stream_poke(s);
			s->done_bytes += got;
			if (s->md)
				EVP_DigestUpdate(s->md, buf, got);
			if (done) {
				r = stream_verify(s, why, n);
				if (r < 0)
					return r;
			}
			return (ssize_t)got;
		}
		if (done) {
			pthread_mutex_unlock(&s->mu);
			r = stream_verify(s, why, n); /* an empty body */
			return r < 0 ? r : 0;
		}
		pthread_cond_wait(&s->cv, &s->mu);
	}
}

/* Puts n bytes into the ring, waiting for room. -EPIPE: the transfer ended. */
static int stream_push(dl_stream *s, const unsigned char *p, size_t n)
{
	int r = 0;

	pthread_mutex_lock(&s->mu);
	while (n > 0) {
		size_t w;
		bool poke = false;
		if (s->state == DL_FINISHED || s->cancel) {
			r = -EPIPE;
			break;
		}
		w = ring_put(&s->ring, p, n);
		p += w;
		n -= w;
		if (w && s->paused) {
			s->paused = false;
			poke = true;
		}
		if (poke) {
			pthread_mutex_unlock(&s->mu);
			stream_poke(s);
			pthread_mutex_lock(&s->mu);
		}
		if (n && s->ring.len == s->ring.cap && s->state != DL_FINISHED)
			pthread_cond_wait(&s->cv, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return r;
}

int dl_stream_write(dl_stream *s, const void *data, size_t n)
{
	const unsigned char *p = data;

	if (s->op != DL_OP_PUT)
		return -EINVAL;
	if (n > (uint64_t)s->put_size - s->done_bytes)
		return -EMSGSIZE;
	if (n == 0)
		return 0;
	if (s->md)
		EVP_DigestUpdate(s->md, p, n);
	s->done_bytes += n;
	/* CAS: the last byte waits until the whole body hashes to the key, so the
	 * cache never receives a complete wrong blob. */
	if (s->md && s->done_bytes == (uint64_t)s->put_size) {
		s->hold = p[n - 1];
		s->held = true;
		n--;
	}
	if (n == 0)
		return 0;
	if (dl_backend_is_disk(s->d->backend))
		return s->fd >= 0 ? dl_write_all(s->fd, p, n) : -EPIPE;
	return stream_push(s, p, n);
}

static void stream_cancel(dl_stream *s)
{
	bool active;

	pthread_mutex_lock(&s->mu);
	active = s->state != DL_FINISHED;
	if (active)
		s->cancel = true;
	pthread_mutex_unlock(&s->mu);
	if (active && !dl_backend_is_disk(s->d->backend))
		stream_poke(s);
}

int dl_stream_finish(dl_stream *s, long *status, char *why, size_t n)
{
	int r;

	if (s->op != DL_OP_PUT)
		return -EINVAL;
	{
		/* Ended before the body did: the upstream answered early or failed
		 * (or a disk cache's temporary file could not be made). */
		pthread_mutex_lock(&s->mu);
		r = s->state == DL_FINISHED ? stream_outcome(s, why, n) : 1;
		/* A body without a held last byte (AC, no hash to check) may all
		 * have gone, and been answered, before finish was called. */
		/* A gRPC cache that has the blob commits it at the first message:
		 * the committed size was checked (grpc_stream_done). */
		bool committed = r == 0 && s->result == CURLE_OK && s->area == TF_AREA_CAS &&
				 dl_backend_grpc(s->d->backend) && s->status == 200;
		if (committed || (r == 0 && s->result == CURLE_OK && !s->held && s->moved == (uint64_t)s->put_size &&
				  s->done_bytes == (uint64_t)s->put_size)) {
			if (status)
				*status = s->status;
			pthread_mutex_unlock(&s->mu);
			return 0;
		}
		if (r == 0 && s->result == CURLE_OK)
			snprintf(why, n, "%s answered HTTP %ld before the body was complete", s->what, s->status);
		else if (r == 0)
			snprintf(why, n, "%s: %s", s->what, s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result));
		pthread_mutex_unlock(&s->mu);
		if (r <= 0)
			return r < 0 ? r : -EIO;
	}
	if (s->done_bytes != (uint64_t)s->put_size) {
		stream_cancel(s);
		snprintf(why, n, "%s: the body has %llu of its %lld bytes; not stored", s->what,
			 (unsigned long long)s->done_bytes, (long long)s->put_size);
		return -EMSGSIZE;
	}
	if (s->md) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		char hex[TF_HASH_HEX_LEN + 1];
		EVP_DigestFinal_ex(s->md, md, &mdlen);
		tf__hex(md, mdlen, hex);
		if (strcmp(hex, s->hash)) {
			stream_cancel(s);
			snprintf(why, n, "%s/%s: the body's SHA-256 is %s; not stored", dl_area_name(s->area),
				 s->hash, hex);
			return -EBADMSG;
		}
	}
	if (dl_backend_is_disk(s->d->backend)) {
		pthread_mutex_lock(&s->mu);
		r = s->state == DL_FINISHED ? stream_outcome(s, why, n) : 0;
		pthread_mutex_unlock(&s->mu);
		if (r == 0 && s->held)
			r = dl_write_all(s->fd, &s->hold, 1);
		if (r == 0 && close(s->fd) < 0)
			r = -errno;
		s->fd = -1;
		if (r == 0)
			r = dl_disk_commit(s->d->backend, s->area, s->hash, s->tmp);
		else
			unlink(s->tmp);
		free(s->tmp);
		s->tmp = NULL;
		if (r < 0)
			snprintf(why, n, "cannot write %s: %s", s->what, strerror(-r));
		stream_settle(s, DL_FINISHED, r < 0 ? 0 : 200, r, NULL);
		if (status)
			*status = 200;
		return r;
	}
	if (s->held)
		stream_push(s, &s->hold, 1); /* -EPIPE: answered early; the outcome says how */
	pthread_mutex_lock(&s->mu);
	s->eof = true;
	pthread_mutex_unlock(&s->mu);
	stream_poke(s);
	pthread_mutex_lock(&s->mu);
	while (s->state != DL_FINISHED)
		pthread_cond_wait(&s->cv, &s->mu);
	r = stream_outcome(s, why, n);
	if (r == 0 && s->result != CURLE_OK) {
		snprintf(why, n, "%s: %s", s->what, s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result));
		r = -EIO;
	}
	if (status)
		*status = s->status;
	pthread_mutex_unlock(&s->mu);
	return r;
}

void dl_stream_free(dl_stream *s)
{
	if (!s)
		return;
	stream_cancel(s);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->tmp)
		unlink(s->tmp);
	stream_unref(s);
}

/* ---- built on streams ------------------------------------------------------------------- */

int dl_get_mem(tf_downloader *d, tf_area area, const char *hash, size_t cap, tf__buf *out, char *why, size_t n)
{
	tf_error err = { 0 };
	dl_stream *s = dl_stream_open(d, DL_OP_GET, area, hash, 0, cap, &err);
	unsigned char buf[64 * 1024];
	int r;

	if (!s) {
		snprintf(why, n, "%s", err.message);
		return err.code;
	}
	tf__buf_init(out, cap);
	r = dl_stream_wait(s, NULL, why, n);
	while (r == 0) {
		ssize_t got = dl_stream_read(s, buf, sizeof(buf), why, n);
		if (got <= 0) {
			r = (int)got;
			break;
		}
		r = tf__buf_append(out, buf, (size_t)got);
		if (r == -E2BIG) {
			snprintf(why, n, "%s: larger than the %zu bytes allowed for it", s->what, cap);
			r = -EFBIG;
		} else if (r < 0) {
			snprintf(why, n, "out of memory");
		}
	}
	dl_stream_free(s);
	if (r < 0)
		tf__buf_fini(out);
	return r;
}

int dl_put_mem(tf_downloader *d, tf_area area, const char *hash, const void *data, size_t len, long *status,
	       char *why, size_t n)
{
	tf_error err = { 0 };
	dl_stream *s = dl_stream_open(d, DL_OP_PUT, area, hash, (int64_t)len, 0, &err);
	int r;

	if (!s) {
		snprintf(why, n, "%s", err.message);
		return err.code;
	}
	r = dl_stream_write(s, data, len);
	if (r == 0 || r == -EPIPE)
		r = dl_stream_finish(s, status, why, n);
	else
		snprintf(why, n, "%s: %s", s->what, strerror(-r));
	dl_stream_free(s);
	return r;
}

#define DL_FIND_BATCH 64 /* HEAD requests in flight per dl_find_missing */
#define DL_FIND_GRPC_BATCH 4096 /* digests per FindMissingBlobs call (about 300 KB, far below 4 MiB) */

/* FindMissingBlobs, one call per DL_FIND_GRPC_BATCH digests, one after another. */
static int find_missing_grpc(tf_downloader *d, const tf_digest *v, size_t count, size_t *missing, char *why,
			     size_t n)
{
	for (size_t i = 0; i < count; i += DL_FIND_GRPC_BATCH) {
		size_t m = count - i < DL_FIND_GRPC_BATCH ? count - i : DL_FIND_GRPC_BATCH, k = 0;
		char w[TF_ERROR_MESSAGE_MAX];
		tf_error err = { 0 };
		dl_stream *s = stream_create(d, DL_OP_FIND, TF_AREA_CAS, v[i].hash, 0, 0, &err);
		int e;

		if (!s) {
			snprintf(why, n, "%s", err.message);
			return err.code < 0 ? err.code : -ENOMEM;
		}
		if (dl_grpc_find_request(d->backend, v + i, m, &s->greq) < 0) {
			stream_unref(s);
			snprintf(why, n, "out of memory");
			return -ENOMEM;
		}
		stream_submit(s);
		e = dl_stream_wait(s, NULL, w, sizeof(w));
		if (e == 0)
			e = dl_grpc_find_answer(s->gans.data, s->gans.len, v + i, m, &k, &err);
		else
			snprintf(why, n, "%s", w);
		if (e == -EBADMSG)
			snprintf(why, n, "%s: %s", s->what, err.message);
		dl_stream_free(s);
		if (e == 0) {
			*missing = i + k;
			snprintf(why, n, "%s/%lld is missing from %s", v[i + k].hash, (long long)v[i + k].size,
				 dl_backend_display(d->backend));
			return 0;
		}
		if (e < 0)
			return e == -ENOENT ? -EIO : e;
	}
	return 1;
}

int dl_find_missing(tf_downloader *d, tf_area area, const tf_digest *v, size_t count, size_t *missing, char *why,
		    size_t n)
{
	int r = 1;

	if (dl_backend_grpc(d->backend) && area == TF_AREA_CAS)
		return find_missing_grpc(d, v, count, missing, why, n);

	for (size_t i = 0; i < count && r == 1; i += DL_FIND_BATCH) {
		size_t m = count - i < DL_FIND_BATCH ? count - i : DL_FIND_BATCH;
		dl_stream *s[DL_FIND_BATCH] = { 0 };
		tf_error err = { 0 };

		for (size_t k = 0; k < m; k++) {
			s[k] = dl_stream_open(d, DL_OP_HEAD, area, v[i + k].hash, 0, 0, &err);
			if (!s[k] && r == 1) {
				snprintf(why, n, "%s", err.message);
				r = err.code < 0 ? err.code : -ENOMEM;
			}
		}
		for (size_t k = 0; k < m; k++) {
			char w[TF_ERROR_MESSAGE_MAX];
			int64_t len = -1;
			int e;
			if (!s[k])
				continue;
			e = dl_stream_wait(s[k], &len, w, sizeof(w));
			if (r == 1 && e == -ENOENT) {
				snprintf(why, n, "%s/%lld is missing from %s", v[i + k].hash, (long long)v[i + k].size,
					 dl_backend_display(d->backend));
				*missing = i + k;
				r = 0;
			} else if (r == 1 && e == 0 && len >= 0 && len != v[i + k].size) {
				snprintf(why, n, "%s/%lld has %lld bytes in %s", v[i + k].hash, (long long)v[i + k].size,
					 (long long)len, dl_backend_display(d->backend));
				*missing = i + k;
				r = 0;
			} else if (r == 1 && e < 0) {
				snprintf(why, n, "%s", w);
				r = e;
			}
			dl_stream_free(s[k]);
		}
	}
	return r;
}

const char *dl_downloader_display(const tf_downloader *d)
{
	return dl_backend_display(d->backend);
}

int dl_downloader_adopt_instance(tf_downloader *d, const char *uri)
{
	dl_grpc *g = dl_backend_grpc(d->backend);
	return g ? dl_grpc_adopt_instance(g, uri) : 0;
}

int dl_downloader_set_invocation(tf_downloader *d, const char *id)
{
	return dl_backend_set_invocation(d->backend, id);
}

bool dl_downloader_needs_sizes(const tf_downloader *d)
{
	return dl_backend_grpc(d->backend) != NULL;
}
