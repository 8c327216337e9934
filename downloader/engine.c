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
 * Every transfer is in exactly one state (dl_state) and changes state only
 * through set_state(), which checks the transition. */
#include "downloader/downloader.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#define DL_OFFLOAD_MIN (4 * 1024 * 1024) /* blobs this large are hashed by the verifier thread */
#define DL_DIR_CACHE 16 /* open folders kept while transfers run */

typedef enum dl_state {
	DL_NEW,      /* created, not yet scheduled */
	DL_QUEUED,   /* waiting for a connection slot */
	DL_RUNNING,  /* its easy handle is in the multi */
	DL_VERIFYING, /* all bytes written; the verifier thread is finishing the hash */
	DL_BACKOFF,  /* a transient failure; waits until retry_at */
	DL_PLACED,   /* verified and at its final path; serves later requests by link */
	DL_FINISHED, /* ended without a file (lost, corrupt, failed, local) */
} dl_state;

static const char *const state_names[] = {
	[DL_NEW] = "new",         [DL_QUEUED] = "queued", [DL_RUNNING] = "running", [DL_VERIFYING] = "verifying",
	[DL_BACKOFF] = "backoff", [DL_PLACED] = "placed", [DL_FINISHED] = "finished",
};

/* One destination of a blob: a request waiting for its callback. */
typedef struct dl_dest {
	struct dl_dest *next;
	char *path;
	bool executable;
	tf_fetch_cb cb;
	void *user;
} dl_dest;

typedef struct dl_xfer {
	struct tf_downloader *d;
	dl_state state;
	tf_digest digest;
	struct dl_xfer *hnext;  /* hash chain */
	struct dl_xfer *qnext;  /* queued or backoff list */
	dl_dest *dests;         /* waiting requests; the first one gets the transfer's file */
	CURL *easy;
	EVP_MD_CTX *md;         /* inline hashing (small blobs) */
	dl_hashjob *job;        /* verifier-thread hashing (large blobs) */
	int dirfd, fd;          /* the temporary file and its folder, while running */
	char tmpname[32];
	int64_t received;
	int attempts, corrupt_attempts;
	uint64_t retry_at_ns;
	tf_result result;       /* meaningful once placed or finished */
	int local_errno;        /* set by the write callback when the disk refuses */
	/* Where the verified copy lives (placed), to link later requests from. */
	char *placed_path;
	bool placed_exec;
	struct stat placed_st;
	/* Reads into memory (tf_downloader_read): never indexed or shared. */
	dl_area area;
	tf__buf *mem;
	/* While the transfer is active (queued to finished): */
	char *url;    /* without credentials, for messages */
	char *errbuf; /* CURL_ERROR_SIZE */
} dl_xfer;

/* A finished request on its way back to the caller's thread. */
typedef struct dl_completion {
	struct dl_completion *next;
	tf_fetch_cb cb;
	void *user;
	tf_fetch_done done;
	char *path;
	char *message;
	tf__buf *mem; /* a read's bytes, handed to the callback */
} dl_completion;

/* A request on its way into the engine thread. */
typedef struct dl_request {
	struct dl_request *next;
	tf_digest digest;
	dl_dest *dest;
	dl_area area;
	size_t max_bytes; /* > 0: a read into memory of at most this many bytes */
} dl_request;

/* A folder below the root, opened by a confined walk, kept open so that many
 * files in one folder do not each walk the path again. */
typedef struct dl_dir {
	char *path; /* relative folder path; NULL = empty slot */
	int fd;
	uint64_t used;
} dl_dir;

struct tf_downloader {
	dl_backend *backend;
	int rootfd;
	long pid;
	mode_t umask;
	bool trace; /* TOPFETCH_TRACE set: every state change on stderr (debugging aid) */
	int evfd;
	int max_conn, retries;
	CURLM *multi;
	dl_hasher *hasher;
	pthread_t thread;
	bool thread_started;

	/* Shared with callers, under mu. */
	pthread_mutex_t mu;
	dl_request *in_head, *in_tail;
	dl_completion *done_head, *done_tail;
	size_t outstanding;
	bool signaled; /* evfd holds a count nobody has read yet */
	bool closing;
	tf_downloader_stats stats;

	/* Engine thread only. */
	dl_xfer **buckets;
	size_t nbuckets, nxfers;
	dl_xfer *queue_head, *queue_tail; /* DL_QUEUED, in arrival order */
	dl_xfer *backoff;                 /* DL_BACKOFF, unordered */
	dl_xfer *reads;                   /* every memory read, for teardown (linked by hnext) */
	int running;   /* transfers in DL_RUNNING */
	int verifying; /* transfers in DL_VERIFYING */
	CURL **idle_handles;
	int nidle;
	unsigned tmp_counter;
	unsigned rand_state;
	dl_dir dirs[DL_DIR_CACHE];
	uint64_t dir_clock;
};

/* ---- transfer state -------------------------------------------------------- */

static void set_state(dl_xfer *x, dl_state to)
{
	static const unsigned allowed[] = {
		[DL_NEW] = 1u << DL_QUEUED | 1u << DL_PLACED | 1u << DL_FINISHED,
		[DL_QUEUED] = 1u << DL_RUNNING | 1u << DL_FINISHED,
		[DL_RUNNING] = 1u << DL_BACKOFF | 1u << DL_QUEUED | 1u << DL_VERIFYING | 1u << DL_PLACED |
			       1u << DL_FINISHED,
		[DL_VERIFYING] = 1u << DL_QUEUED | 1u << DL_PLACED | 1u << DL_FINISHED,
		[DL_BACKOFF] = 1u << DL_QUEUED | 1u << DL_FINISHED,
		[DL_PLACED] = 1u << DL_QUEUED, /* the placed copy vanished; fetch again */
		[DL_FINISHED] = 1u << DL_QUEUED, /* asked again later: a new attempt */
	};
	if (!(allowed[x->state] & (1u << to))) {
		fprintf(stderr, "topfetch: internal error: transfer %s: %s -> %s\n", x->digest.hash,
			state_names[x->state], state_names[to]);
		abort();
	}
	if (x->state == DL_VERIFYING)
		x->d->verifying--;
	if (to == DL_VERIFYING)
		x->d->verifying++;
	if (x->d->trace)
		fprintf(stderr, "trace: %s %s -> %s\n", x->digest.hash, state_names[x->state],
			state_names[to]);
	x->state = to;
}

/* ---- hash index of transfers by digest --------------------------------------- */

static uint64_t digest_hash(const tf_digest *d)
{
	uint64_t h = 0;
	for (int i = 0; i < 16; i++)
		h = h << 4 | (uint64_t)(d->hash[i] <= '9' ? d->hash[i] - '0' : d->hash[i] - 'a' + 10);
	return h ^ (uint64_t)d->size;
}

static dl_xfer *index_find(tf_downloader *d, const tf_digest *dg)
{
	for (dl_xfer *x = d->buckets[digest_hash(dg) & (d->nbuckets - 1)]; x; x = x->hnext)
		if (x->digest.size == dg->size && !memcmp(x->digest.hash, dg->hash, TF_HASH_HEX_LEN))
			return x;
	return NULL;
}

static int index_add(tf_downloader *d, dl_xfer *x)
{
	if (d->nxfers + 1 > d->nbuckets) {
		size_t nb = d->nbuckets * 2;
		dl_xfer **b = calloc(nb, sizeof(*b));
		if (!b)
			return -ENOMEM;
		for (size_t i = 0; i < d->nbuckets; i++) {
			dl_xfer *n;
			for (dl_xfer *y = d->buckets[i]; y; y = n) {
				n = y->hnext;
				y->hnext = b[digest_hash(&y->digest) & (nb - 1)];
				b[digest_hash(&y->digest) & (nb - 1)] = y;
			}
		}
		free(d->buckets);
		d->buckets = b;
		d->nbuckets = nb;
	}
	x->hnext = d->buckets[digest_hash(&x->digest) & (d->nbuckets - 1)];
	d->buckets[digest_hash(&x->digest) & (d->nbuckets - 1)] = x;
	d->nxfers++;
	return 0;
}

static void xfer_free(dl_xfer *x);

/* Drops every transfer that has ended: they only serve later requests for the
 * same blob, and the index must stay bounded. */
static void index_forget_ended(tf_downloader *d)
{
	for (size_t i = 0; i < d->nbuckets; i++) {
		dl_xfer **pp = &d->buckets[i];
		while (*pp) {
			dl_xfer *x = *pp;
			if (x->state == DL_PLACED || x->state == DL_FINISHED) {
				*pp = x->hnext;
				d->nxfers--;
				xfer_free(x);
			} else {
				pp = &x->hnext;
			}
		}
	}
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
	free(x);
}

/* ---- completions --------------------------------------------------------------- */

static void dest_free(dl_dest *t)
{
	if (t) {
		free(t->path);
		free(t);
	}
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
	dl_completion *c = calloc(1, sizeof(*c));
	uint64_t one = 1;

	if (!c) {
		/* Out of memory on the way back: we cannot report it, and the caller
		 * would wait forever. There is no safe way on. */
		fprintf(stderr, "topfetch: out of memory delivering a completion\n");
		abort();
	}
	c->cb = t->cb;
	c->user = t->user;
	c->path = t->path;
	t->path = NULL;
	c->message = msg ? strdup(msg) : NULL;
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

	pthread_mutex_lock(&d->mu);
	switch (r) {
	case TF_RESULT_OK:
		d->stats.files_ok++;
		d->stats.files_present += present;
		d->stats.files_linked += linked;
		break;
	case TF_RESULT_LOST: d->stats.lost++; break;
	case TF_RESULT_CORRUPT: d->stats.corrupt++; break;
	case TF_RESULT_FAILED: d->stats.failed++; break;
	case TF_RESULT_LOCAL: d->stats.local++; break;
	}
	if (d->done_tail)
		d->done_tail->next = c;
	else
		d->done_head = c;
	d->done_tail = c;
	/* One signal until the caller reads it, not one per completion. */
	if (!d->signaled && write(d->evfd, &one, sizeof(one)) == sizeof(one))
		d->signaled = true;
	pthread_mutex_unlock(&d->mu);
}

/* ---- placing files --------------------------------------------------------------- */

static void make_tmpname(tf_downloader *d, char *out, size_t n)
{
	snprintf(out, n, DL_TMP_PREFIX "%ld.%u", d->pid, d->tmp_counter++);
}

static void dirs_flush(tf_downloader *d)
{
	for (int i = 0; i < DL_DIR_CACHE; i++) {
		if (d->dirs[i].path) {
			close(d->dirs[i].fd);
			free(d->dirs[i].path);
			d->dirs[i].path = NULL;
		}
	}
}

/* tf__open_parent_beneath through a small cache of open folders. Returns a
 * new fd the caller closes. The cache is emptied whenever the engine goes
 * idle, so a folder replaced between builds is walked again. */
static int parent_open(tf_downloader *d, const char *path, bool create, const char **leaf,
		       tf_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	dl_dir *victim = &d->dirs[0];
	int fd;

	if (!slash) {
		*leaf = path;
		fd = dup(d->rootfd);
		return fd >= 0 ? fd : tf__errf(err, -errno, "cannot duplicate a folder handle: %s", strerror(errno));
	}
	for (int i = 0; i < DL_DIR_CACHE; i++) {
		dl_dir *e = &d->dirs[i];
		if (e->path && !strncmp(e->path, path, n) && e->path[n] == '\0') {
			e->used = ++d->dir_clock;
			*leaf = slash + 1;
			fd = dup(e->fd);
			return fd >= 0 ? fd : tf__errf(err, -errno, "cannot duplicate a folder handle: %s",
						       strerror(errno));
		}
		if (!e->path || (victim->path && e->used < victim->used))
			victim = e;
	}
	fd = tf__open_parent_beneath(d->rootfd, path, create, leaf, err);
	if (fd < 0)
		return fd;
	if (victim->path) {
		close(victim->fd);
		free(victim->path);
	}
	victim->path = strndup(path, n);
	victim->fd = victim->path ? dup(fd) : -1;
	if (victim->fd < 0) {
		free(victim->path);
		victim->path = NULL;
	}
	victim->used = ++d->dir_clock;
	return fd;
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

/* If path already holds a regular file with the digest, fixes its mode and
 * returns true. */
static bool already_present(tf_downloader *d, const char *path, const tf_digest *dg, bool exec)
{
	const char *leaf;
	struct stat st;
	bool ok = false;
	int fd, dfd;

	/* Cheap negative answer first; a positive one goes through the confined walk. */
	if (fstatat(d->rootfd, path, &st, 0) < 0 || !S_ISREG(st.st_mode) || st.st_size != dg->size)
		return false;
	dfd = parent_open(d, path, false, &leaf, NULL);
	if (dfd < 0)
		return false;
	fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == dg->size &&
	    fd_matches(fd, dg)) {
		mode_t want = exec ? 0755 : 0644;
		ok = (st.st_mode & 07777) == want || fchmod(fd, want) == 0;
	}
	if (fd >= 0)
		close(fd);
	close(dfd);
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
	int dfd = parent_open(d, t->path, true, &leaf, &err);

	if (dfd < 0) {
		snprintf(msg, msglen, "%s", err.message);
		return dfd;
	}
	sdir = parent_open(d, x->placed_path, false, &srcleaf, &err);
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
		close(sdir);
	close(dfd);
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

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	dl_xfer *x = userdata;
	size_t n = size * nmemb;

	if (x->digest.size >= 0 && (int64_t)n > x->digest.size - x->received) {
		x->received += (int64_t)n; /* noted: more than the digest's size */
		return 0;
	}
	if (!x->job)
		EVP_DigestUpdate(x->md, ptr, n);
	if (x->mem) {
		if (tf__buf_append(x->mem, ptr, n) < 0) {
			x->local_errno = E2BIG;
			return 0;
		}
		x->received += (int64_t)n;
		return n;
	}
	for (size_t w = 0; w < n;) {
		ssize_t m = write(x->fd, ptr + w, n - w);
		if (m < 0) {
			if (errno == EINTR)
				continue;
			x->local_errno = errno;
			return 0;
		}
		w += (size_t)m;
	}
	x->received += (int64_t)n;
	if (x->job)
		dl_hasher_advance(x->d->hasher, x->job, x->received);
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
	if (x->dirfd >= 0) {
		if (remove)
			unlinkat(x->dirfd, x->tmpname, 0);
		close(x->dirfd);
		x->dirfd = -1;
	}
}

static void release_easy(tf_downloader *d, dl_xfer *x)
{
	if (!x->easy)
		return;
	curl_multi_remove_handle(d->multi, x->easy);
	curl_easy_reset(x->easy);
	if (d->nidle < d->max_conn)
		d->idle_handles[d->nidle++] = x->easy;
	else
		curl_easy_cleanup(x->easy);
	x->easy = NULL;
	d->running--;
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
static void start(tf_downloader *d, dl_xfer *x)
{
	tf_error err = { 0 };
	const char *leaf;
	CURL *h;

	if (x->mem) {
		tf__buf_reset(x->mem);
		goto open_handle;
	}
	x->dirfd = parent_open(d, x->dests->path, true, &leaf, &err);
	if (x->dirfd < 0) {
		/* This destination cannot be written; the others may. */
		dl_dest *t = x->dests;
		x->dests = t->next;
		t->next = NULL;
		complete(d, t, &x->digest, TF_RESULT_LOCAL, false, false, false, x->attempts, err.message);
		x->dirfd = -1;
		if (!x->dests) {
			set_state(x, DL_FINISHED);
			return;
		}
		start(d, x);
		return;
	}
	make_tmpname(d, x->tmpname, sizeof(x->tmpname));
	x->fd = openat(x->dirfd, x->tmpname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
		       x->dests->executable ? 0755 : 0644);
	if (x->fd < 0) {
		char msg[TF_ERROR_MESSAGE_MAX];
		snprintf(msg, sizeof(msg), "cannot create a temporary file beside '%s': %s",
			 x->dests->path, strerror(errno));
		close_tmp(x, false);
		finish_failed(d, x, TF_RESULT_LOCAL, msg);
		return;
	}
open_handle:
	if (!x->md)
		x->md = EVP_MD_CTX_new();
	if (!x->url)
		x->url = malloc(DL_URL_MAX);
	if (!x->errbuf)
		x->errbuf = malloc(CURL_ERROR_SIZE);
	h = d->nidle ? d->idle_handles[--d->nidle] : curl_easy_init();
	if (!x->md || !x->url || !x->errbuf || !h || !EVP_DigestInit_ex(x->md, EVP_sha256(), NULL)) {
		if (h)
			curl_easy_cleanup(h);
		finish_failed(d, x, TF_RESULT_LOCAL, "out of memory starting a transfer");
		return;
	}
	if (!x->mem && x->digest.size >= DL_OFFLOAD_MIN) {
		int rfd = dup(x->fd);
		x->job = rfd >= 0 ? dl_hasher_start(d->hasher, rfd, x) : NULL;
		if (!x->job && rfd >= 0)
			close(rfd); /* hash inline instead */
	}
	x->received = 0;
	x->local_errno = 0;
	x->errbuf[0] = '\0';
	x->attempts++;
	dl_backend_prepare_get(d->backend, h, x->area, x->digest.hash, x->url, DL_URL_MAX);
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE,
			 (long)(x->digest.size >= DL_OFFLOAD_MIN ? DL_BUFFER_SIZE_LARGE : DL_BUFFER_SIZE));
	x->easy = h;
	if (curl_multi_add_handle(d->multi, h) != CURLM_OK) {
		x->easy = NULL;
		curl_easy_cleanup(h);
		finish_failed(d, x, TF_RESULT_LOCAL, "cannot add a transfer to libcurl");
		return;
	}
	d->running++;
	pthread_mutex_lock(&d->mu);
	d->stats.attempts++;
	pthread_mutex_unlock(&d->mu);
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
	if (x->job) {
		set_state(x, DL_VERIFYING);
		dl_hasher_finish(d->hasher, x->job, x->received);
		return;
	}
	EVP_DigestFinal_ex(x->md, md, &mdlen);
	tf__hex(md, mdlen, hex);
	/* An action-cache key names the action, not the content: nothing to verify. */
	on_verified(d, x, x->area == DL_AREA_AC ? x->digest.hash : hex);
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
		pthread_mutex_lock(&d->mu);
		d->stats.transfers++;
		d->stats.bytes += (uint64_t)x->received;
		pthread_mutex_unlock(&d->mu);
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
	close_tmp(x, false);
	free(x->placed_path);
	x->placed_path = strdup(x->dests->path);
	x->placed_exec = x->dests->executable;
	x->placed_st = st;
	pthread_mutex_lock(&d->mu);
	d->stats.transfers++;
	d->stats.bytes += (uint64_t)x->received;
	pthread_mutex_unlock(&d->mu);
	if (!x->placed_path) {
		finish_failed(d, x, TF_RESULT_LOCAL, "out of memory");
		return;
	}
	set_state(x, DL_PLACED);
	serve_dests(d, x, true);
	shrink(x);
}

static void on_attempt_done(tf_downloader *d, dl_xfer *x, CURLcode rc)
{
	char why[CURL_ERROR_SIZE + 256], msg[TF_ERROR_MESSAGE_MAX];
	long status = 0;
	dl_outcome o;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	release_easy(d, x);

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
	o = dl_backend_classify(d->backend, rc, status, x->errbuf, why, sizeof(why));
	switch (o) {
	case DL_OUTCOME_BODY:
		on_body_done(d, x);
		return;
	case DL_OUTCOME_MISS:
		snprintf(msg, sizeof(msg), "GET %s: %s; the blob is not in the cache", x->url, why);
		finish_failed(d, x, TF_RESULT_LOST, msg);
		return;
	case DL_OUTCOME_TRANSIENT:
		if (x->attempts <= d->retries) {
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
	x->area = DL_AREA_CAS;
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
	int fd, dfd = parent_open(d, t->path, true, &leaf, &err);

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
	close(dfd);
}

static void accept_request(tf_downloader *d, dl_request *q)
{
	dl_dest *t = q->dest;
	tf_error err = { 0 };
	dl_xfer *x;

	if (q->max_bytes && q->area == DL_AREA_CAS && q->digest.size == 0) {
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
		x->area = q->area;
		x->dests = t;
		x->hnext = d->reads;
		d->reads = x;
		enqueue(d, x);
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
	if (already_present(d, t->path, &q->digest, t->executable)) {
		complete(d, t, &q->digest, TF_RESULT_OK, false, true, false, 0, NULL);
		return;
	}
	if (x && x->state == DL_PLACED && placed_still_good(d, x)) {
		x->dests = t;
		serve_dests(d, x, false);
		return;
	}
	if (!x) {
		if (d->nxfers >= DL_INDEX_MAX)
			index_forget_ended(d);
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
			*rp = x->hnext;
			xfer_free(x);
		} else {
			rp = &x->hnext;
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
		start(d, x);
	}
}

static int poll_timeout_ms(tf_downloader *d)
{
	uint64_t now = tf__now_ns(), soonest = UINT64_MAX;
	for (dl_xfer *x = d->backoff; x; x = x->qnext)
		if (x->retry_at_ns < soonest)
			soonest = x->retry_at_ns;
	if (soonest == UINT64_MAX)
		return 1000;
	return soonest <= now ? 0 : (int)((soonest - now) / 1000000u) + 1;
}

static void *engine_main(void *arg)
{
	tf_downloader *d = arg;

	for (;;) {
		dl_request *in;
		CURLMsg *m;
		int left, still;

		pthread_mutex_lock(&d->mu);
		in = d->in_head;
		d->in_head = d->in_tail = NULL;
		if (d->closing) {
			pthread_mutex_unlock(&d->mu);
			while (in) {
				dl_request *n = in->next;
				dest_free(in->dest);
				free(in);
				in = n;
			}
			break;
		}
		pthread_mutex_unlock(&d->mu);
		while (in) {
			dl_request *n = in->next;
			accept_request(d, in);
			free(in);
			in = n;
		}
		schedule(d);
		curl_multi_perform(d->multi, &still);
		while ((m = curl_multi_info_read(d->multi, &left))) {
			dl_xfer *x = NULL;
			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			on_attempt_done(d, x, m->data.result);
		}
		{
			char hex[TF_HASH_HEX_LEN + 1];
			dl_xfer *x;
			while ((x = dl_hasher_take_done(d->hasher, hex))) {
				x->job = NULL; /* the hasher freed it */
				on_verified(d, x, hex);
			}
		}
		schedule(d);
		if (!d->running && !d->queue_head && !d->backoff && !d->verifying)
			dirs_flush(d);
		curl_multi_poll(d->multi, NULL, 0, poll_timeout_ms(d), NULL);
	}
	return NULL;
}

/* ---- public API ------------------------------------------------------------------ */

void tf_remote_options_init(tf_remote_options *o)
{
	memset(o, 0, sizeof(*o));
	o->remote_max_connections = 100;
	o->remote_timeout_s = 60;
	o->remote_retries = 5;
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
	tf_downloader *d = arg;
	curl_multi_wakeup(d->multi);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_global(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

tf_downloader *tf_downloader_new(const tf_remote_options *opts, const char *output_dir, tf_error *err)
{
	tf_downloader *d;

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
	d->rootfd = d->evfd = -1;
	pthread_mutex_init(&d->mu, NULL);
	d->max_conn = opts->remote_max_connections;
	d->retries = opts->remote_retries;
	d->pid = (long)getpid();
	d->trace = getenv("TOPFETCH_TRACE") != NULL;
	d->rand_state = (unsigned)tf__now_ns() ^ (unsigned)d->pid;
	/* Read the umask once (umask() can only be read by setting it). */
	d->umask = umask(022);
	umask(d->umask);
	d->backend = dl_backend_new(opts, err);
	if (!d->backend)
		goto fail;
	if (mkdir(output_dir, 0755) < 0 && errno != EEXIST) {
		tf__errf(err, -errno, "cannot create the output directory %s: %s", output_dir, strerror(errno));
		goto fail;
	}
	d->rootfd = open(output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->rootfd < 0) {
		tf__errf(err, -errno, "cannot open the output directory %s: %s", output_dir, strerror(errno));
		goto fail;
	}
	d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	d->nbuckets = 1024;
	d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
	d->idle_handles = calloc((size_t)d->max_conn, sizeof(*d->idle_handles));
	d->multi = curl_multi_init();
	if (d->evfd < 0 || !d->buckets || !d->idle_handles || !d->multi) {
		tf__errf(err, -ENOMEM, "cannot set up the transfer engine: %s", strerror(errno));
		goto fail;
	}
	d->hasher = dl_hasher_new(wake_engine, d);
	if (!d->hasher) {
		tf__errf(err, -EAGAIN, "cannot start the verifier thread");
		goto fail;
	}
	curl_multi_setopt(d->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)d->max_conn);
	curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)d->max_conn);
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)d->max_conn);
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
	bool wake;

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
	wake = !d->in_head;
	if (d->in_tail)
		d->in_tail->next = q;
	else
		d->in_head = q;
	d->in_tail = q;
	pthread_mutex_unlock(&d->mu);
	if (wake)
		curl_multi_wakeup(d->multi);
	return 0;
}

int tf_downloader_fetch(tf_downloader *d, const tf_digest *digest, bool executable, const char *path,
			tf_fetch_cb cb, void *user)
{
	dl_request *q = calloc(1, sizeof(*q));
	dl_dest *t = calloc(1, sizeof(*t));

	if (!q || !t || !(t->path = strdup(path))) {
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
	if (!q || !t || asprintf(&t->path, "%s/%s", area == TF_AREA_AC ? "ac" : "cas", hash) < 0) {
		free(q);
		free(t);
		return -ENOMEM;
	}
	memcpy(q->digest.hash, hash, TF_HASH_HEX_LEN + 1);
	q->digest.size = size;
	q->area = area == TF_AREA_AC ? DL_AREA_AC : DL_AREA_CAS;
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
		pthread_mutex_lock(&d->mu);
		d->outstanding--;
		pthread_mutex_unlock(&d->mu);
		free(c->path);
		free(c->message);
		if (c->mem) {
			tf__buf_fini(c->mem);
			free(c->mem);
		}
		free(c);
		c = next;
		n++;
	}
	return n;
}

size_t tf_downloader_outstanding(const tf_downloader *d)
{
	size_t n;
	pthread_mutex_lock((pthread_mutex_t *)&d->mu);
	n = d->outstanding;
	pthread_mutex_unlock((pthread_mutex_t *)&d->mu);
	return n;
}

void tf_downloader_get_stats(const tf_downloader *d, tf_downloader_stats *out)
{
	pthread_mutex_lock((pthread_mutex_t *)&d->mu);
	*out = d->stats;
	pthread_mutex_unlock((pthread_mutex_t *)&d->mu);
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
		curl_multi_wakeup(d->multi);
		pthread_join(d->thread, NULL);
	}
	for (size_t i = 0; d->buckets && i < d->nbuckets; i++) {
		dl_xfer *n;
		for (dl_xfer *x = d->buckets[i]; x; x = n) {
			n = x->hnext;
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
	}
	for (int i = 0; i < d->nidle; i++)
		curl_easy_cleanup(d->idle_handles[i]);
	dirs_flush(d);
	dl_hasher_free(d->hasher);
	for (dl_xfer *x = d->reads, *n; x; x = n) {
		n = x->hnext;
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
		free(c->path);
		free(c->message);
		if (c->mem) {
			tf__buf_fini(c->mem);
			free(c->mem);
		}
		free(c);
		c = n;
	}
	if (d->multi)
		curl_multi_cleanup(d->multi);
	free(d->buckets);
	free(d->idle_handles);
	dl_backend_free(d->backend);
	if (d->rootfd >= 0)
		close(d->rootfd);
	if (d->evfd >= 0)
		close(d->evfd);
	pthread_mutex_destroy(&d->mu);
	free(d);
}
