/* The verifier threads: hash large blobs while they are still arriving.
 *
 * SHA-256 costs about as much CPU as receiving and writing the bytes, so for
 * large blobs it runs on other threads, overlapping the transfer thread's
 * receiving and writing: one per CPU up to HJ_THREADS, each hashing one blob
 * at a time (a blob's bytes are hashed in order, by one thread at a time),
 * oldest blob first, so several blobs arriving at once are hashed on every
 * CPU and the first to arrive are the first verified. The transfer thread copies the bytes libcurl hands
 * it (16 KiB at a time) into a 1 MiB chunk from a small pool; a full chunk
 * is written to the temporary file in one write and goes to this thread,
 * which hashes it from memory: the file is not read back. When the pool is
 * empty (this thread is behind by HJ_POOL chunks) the transfer thread does
 * not wait: it writes those bytes straight to the file and they are hashed
 * from there (the page cache), so memory stays bounded and the transfer
 * never stalls on the hash.
 *
 * The writer thread (below, dl_writer) takes small blobs whole, in batches:
 * it hashes each and does its file work (create an unnamed file, write it,
 * link it into place, close it; or create, write, rename, close where
 * unnamed files are not to be had), so the engine thread spends its time on
 * receiving. */
#include "downloader/downloader.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HASH_CHUNK (1024 * 1024)
#define HJ_POOL 8 /* chunks in flight at most, for all jobs: 8 MiB */
#define HJ_THREADS 4 /* verifier threads at most (one per online CPU) */

/* Bytes [off, off + len) of a job's file, in memory. */
typedef struct hj_chunk {
	struct hj_chunk *next;
	int64_t off;
	size_t len;
	unsigned char data[HASH_CHUNK];
} hj_chunk;

typedef enum hj_state {
	HJ_FEEDING,   /* bytes still arriving */
	HJ_DRAINING,  /* all bytes written; hash the rest, then done */
	HJ_DONE,      /* digest ready, on the done list */
	HJ_CANCELLED, /* the owner let go; the hasher frees it */
} hj_state;

struct dl_hashjob {
	struct dl_hashjob *next;
	hj_state state;
	int fd;
	EVP_MD_CTX *md;
	int64_t written; /* under mu: [0, written) is final, in chunks or in the file */
	int64_t hashed;  /* the verifier thread that holds it (busy) */
	bool busy;       /* under mu: a verifier thread is hashing it (mu released) */
	bool read_failed;
	hj_chunk *chunks, *chunks_tail; /* under mu: full chunks, in file order */
	hj_chunk *fill;  /* the owner's: the chunk being filled */
	int64_t fed;     /* the owner's: bytes given to dl_hasher_feed */
	void *owner;
	char hex[TF_HASH_HEX_LEN + 1];
};

typedef struct hj_thread {
	pthread_t thread;
	struct dl_hasher *h;
	unsigned char *buf; /* bytes read back from a file */
} hj_thread;

struct dl_hasher {
	hj_thread threads[HJ_THREADS];
	int nthreads; /* started */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	dl_hashjob *jobs, *jobs_tail; /* feeding, draining, cancelled; oldest first */
	dl_hashjob *done;
	void (*wake)(void *);
	void *wake_arg;
	hj_chunk *pool; /* under mu: free chunks */
	int nchunks;    /* under mu: chunks allocated (HJ_POOL at most) */
};

/* Returns a chunk to the pool. Under h->mu. */
static void chunk_put(dl_hasher *h, hj_chunk *c)
{
	if (!c)
		return;
	c->next = h->pool;
	h->pool = c;
}

/* Frees j; its chunks go back to the pool. Under h->mu. */
static void job_free(dl_hasher *h, dl_hashjob *j)
{
	if (!j)
		return;
	while (j->chunks) {
		hj_chunk *c = j->chunks;
		j->chunks = c->next;
		chunk_put(h, c);
	}
	chunk_put(h, j->fill);
	if (j->fd >= 0)
		close(j->fd);
	EVP_MD_CTX_free(j->md);
	free(j);
}

static void unlink_job(dl_hashjob **list, dl_hashjob *j)
{
	while (*list && *list != j)
		list = &(*list)->next;
	if (*list)
		*list = j->next;
}

/* Takes *pp (a job of h->jobs) off that list. Under h->mu. */
static void jobs_remove(dl_hasher *h, dl_hashjob **pp, dl_hashjob *prev)
{
	dl_hashjob *j = *pp;

	*pp = j->next;
	if (h->jobs_tail == j)
		h->jobs_tail = prev;
}

static void *hasher_main(void *arg)
{
	hj_thread *self = arg;
	dl_hasher *h = self->h;

	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		dl_hashjob *work = NULL, **pp = &h->jobs, *prev = NULL;
		bool woke_owner = false;

		while (*pp) {
			dl_hashjob *j = *pp;
			if (j->busy) { /* another thread's, for now */
				prev = j;
				pp = &j->next;
				continue;
			}
			if (j->state == HJ_CANCELLED) {
				jobs_remove(h, pp, prev);
				job_free(h, j);
				continue;
			}
			if (j->hashed < j->written && !j->read_failed) {
				work = j;
				break;
			}
			if (j->state == HJ_DRAINING) {
				unsigned char md[EVP_MAX_MD_SIZE];
				unsigned len = 0;
				jobs_remove(h, pp, prev);
				EVP_DigestFinal_ex(j->md, md, &len);
				if (j->read_failed)
					memset(md, 0, sizeof(md)); /* cannot match: reported as corrupt */
				tf__hex(md, len ? len : 32, j->hex);
				j->state = HJ_DONE;
				j->next = h->done;
				h->done = j;
				woke_owner = true;
				continue;
			}
			prev = j;
			pp = &j->next;
		}
		if (woke_owner) {
			pthread_mutex_unlock(&h->mu);
			h->wake(h->wake_arg);
			pthread_mutex_lock(&h->mu);
			continue;
		}
		if (!work) {
			pthread_cond_wait(&h->cv, &h->mu);
			continue;
		}
		/* Busy: no other verifier thread takes it, and none frees it
		 * (only a verifier frees a job that is not done) until it is
		 * put back below. */
		work->busy = true;
		if (work->chunks && work->chunks->off == work->hashed) {
			/* From memory. */
			hj_chunk *c = work->chunks;
			work->chunks = c->next;
			if (!work->chunks)
				work->chunks_tail = NULL;
			pthread_mutex_unlock(&h->mu);
			EVP_DigestUpdate(work->md, c->data, c->len);
			pthread_mutex_lock(&h->mu);
			work->hashed += (int64_t)c->len;
			chunk_put(h, c);
		} else {
			/* Bytes the pool had no room for: from the file, up to the
			 * next chunk. */
			int64_t from = work->hashed, n = work->written - from;
			ssize_t got;
			if (work->chunks && work->chunks->off - from < n)
				n = work->chunks->off - from;
			if (n > HASH_CHUNK)
				n = HASH_CHUNK;
			pthread_mutex_unlock(&h->mu);
			got = pread(work->fd, self->buf, (size_t)n, (off_t)from);
			if (got > 0)
				EVP_DigestUpdate(work->md, self->buf, (size_t)got);
			pthread_mutex_lock(&h->mu);
			if (got > 0)
				work->hashed += got;
			else
				work->read_failed = true;
		}
		work->busy = false;
		/* Its next bytes, its end or its cancellation may have come
		 * meanwhile, while the other threads skipped it: one of them
		 * (or this one, next round) looks again. */
		pthread_cond_signal(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* Stops and joins the verifier threads started so far. */
static void stop_threads(dl_hasher *h)
{
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	for (int i = 0; i < h->nthreads; i++) {
		pthread_join(h->threads[i].thread, NULL);
		free(h->threads[i].buf);
	}
	h->nthreads = 0;
}

dl_hasher *dl_hasher_new(void (*wake)(void *), void *wake_arg)
{
	dl_hasher *h = calloc(1, sizeof(*h));
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int want = cpus < 1 ? 1 : cpus > HJ_THREADS ? HJ_THREADS : (int)cpus;

	if (!h)
		return NULL;
	h->wake = wake;
	h->wake_arg = wake_arg;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	while (h->nthreads < want) {
		hj_thread *t = &h->threads[h->nthreads];
		t->h = h;
		t->buf = malloc(HASH_CHUNK);
		if (!t->buf || pthread_create(&t->thread, NULL, hasher_main, t) != 0) {
			free(t->buf);
			break;
		}
		h->nthreads++;
	}
	if (h->nthreads == 0) {
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
		free(h);
		return NULL;
	}
	return h;
}

void dl_hasher_free(dl_hasher *h)
{
	if (!h)
		return;
	stop_threads(h);
	for (dl_hashjob *j = h->jobs, *n; j; j = n) {
		n = j->next;
		job_free(h, j);
	}
	for (dl_hashjob *j = h->done, *n; j; j = n) {
		n = j->next;
		job_free(h, j);
	}
	while (h->pool) {
		hj_chunk *c = h->pool;
		h->pool = c->next;
		free(c);
	}
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

dl_hashjob *dl_hasher_start(dl_hasher *h, int fd, void *owner)
{
	dl_hashjob *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->fd = fd;
	j->owner = owner;
	j->md = EVP_MD_CTX_new();
	if (!j->md || !EVP_DigestInit_ex(j->md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(j->md); /* the caller keeps fd on failure */
		free(j);
		return NULL;
	}
	pthread_mutex_lock(&h->mu);
	if (h->jobs_tail)
		h->jobs_tail->next = j;
	else
		h->jobs = j;
	h->jobs_tail = j;
	pthread_mutex_unlock(&h->mu);
	return j;
}

/* Hands the chunk being filled to the hasher thread and reports every byte
 * fed so far as final; takes a new chunk from the pool when want is set
 * (NULL when it is empty: those bytes will be read from the file). Under
 * h->mu. */
static void publish_fill(dl_hasher *h, dl_hashjob *j, bool want)
{
	hj_chunk *c = j->fill;

	if (c && c->len) {
		c->next = NULL;
		if (j->chunks_tail)
			j->chunks_tail->next = c;
		else
			j->chunks = c;
		j->chunks_tail = c;
		c = NULL;
	}
	j->fill = NULL;
	if (want) {
		if (!c && h->pool) {
			c = h->pool;
			h->pool = c->next;
		} else if (!c && h->nchunks < HJ_POOL && (c = malloc(sizeof(*c)))) {
			h->nchunks++;
		}
		if (c) {
			c->off = j->fed;
			c->len = 0;
		}
		j->fill = c;
	} else {
		chunk_put(h, c);
	}
	j->written = j->fed;
	pthread_cond_signal(&h->cv);
}

int dl_write_all(int fd, const void *data, size_t n)
{
	const unsigned char *p = data;

	while (n > 0) {
		ssize_t m = write(fd, p, n);
		if (m < 0 && errno == EINTR)
			continue;
		if (m < 0)
			return -errno;
		p += m;
		n -= (size_t)m;
	}
	return 0;
}

/* Writes the chunk being filled to fd and hands it over (with a new one to
 * fill when want is set). */
static int flush_fill(dl_hasher *h, dl_hashjob *j, int fd, bool want)
{
	int r = j->fill && j->fill->len ? dl_write_all(fd, j->fill->data, j->fill->len) : 0;

	pthread_mutex_lock(&h->mu);
	publish_fill(h, j, want && r == 0);
	pthread_mutex_unlock(&h->mu);
	return r;
}

int dl_hasher_feed(dl_hasher *h, dl_hashjob *j, int fd, const void *data, size_t n)
{
	const unsigned char *p = data;
	int r;

	while (n > 0) {
		hj_chunk *c = j->fill;
		size_t take;

		if (!c || c->len == HASH_CHUNK) {
			if ((r = flush_fill(h, j, fd, true)) < 0)
				return r;
			c = j->fill;
		}
		if (!c) {
			/* No room: these bytes go to the file only, and the verifier
			 * reads them from there. The next feed tries the pool again. */
			if ((r = dl_write_all(fd, p, n)) < 0)
				return r;
			j->fed += (int64_t)n;
			pthread_mutex_lock(&h->mu);
			j->written = j->fed;
			pthread_cond_signal(&h->cv);
			pthread_mutex_unlock(&h->mu);
			return 0;
		}
		take = HASH_CHUNK - c->len < n ? HASH_CHUNK - c->len : n;
		memcpy(c->data + c->len, p, take);
		c->len += take;
		j->fed += (int64_t)take;
		p += take;
		n -= take;
	}
	return 0;
}

int dl_hasher_flush(dl_hasher *h, dl_hashjob *j, int fd)
{
	return flush_fill(h, j, fd, false);
}

int dl_hasher_finish(dl_hasher *h, dl_hashjob *j, int fd)
{
	int r = flush_fill(h, j, fd, false);

	pthread_mutex_lock(&h->mu);
	j->state = HJ_DRAINING;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return r;
}

void dl_hasher_cancel(dl_hasher *h, dl_hashjob *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&h->mu);
	if (j->state == HJ_DONE) {
		unlink_job(&h->done, j);
		job_free(h, j);
	} else {
		j->state = HJ_CANCELLED;
		pthread_cond_signal(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
}

void *dl_hasher_take_done(dl_hasher *h, char hex[TF_HASH_HEX_LEN + 1])
{
	dl_hashjob *j;
	void *owner = NULL;

	pthread_mutex_lock(&h->mu);
	j = h->done;
	if (j) {
		h->done = j->next;
		owner = j->owner;
		memcpy(hex, j->hex, TF_HASH_HEX_LEN + 1);
		job_free(h, j);
	}
	pthread_mutex_unlock(&h->mu);
	return owner;
}

/* ---- the writer thread: small blobs' file work ------------------------------------------- */

struct dl_writer {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	dl_writejob *todo; /* under mu */
	dl_writejob *done; /* under mu */
	dl_write_way way;        /* under mu */
	void (*wake)(void *);
	void *wake_arg;
};

/* Places j's body with a named temporary file (DL_TMP_PREFIX, removed as
 * stale if we are killed before the rename): 0, or the errno of the step
 * that failed (nothing left behind). */
static int place_named(dl_writejob *j)
{
	int fd = openat(j->dirfd, j->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, j->mode);
	int err = 0, r;

	if (fd < 0)
		return errno;
	if ((r = dl_write_all(fd, j->data, j->len)) < 0)
		err = -r;
	else if ((j->chmod && fchmod(fd, j->mode) < 0) || fstat(fd, &j->st) < 0 ||
		 renameat(j->dirfd, j->tmpname, j->dirfd, j->leaf) < 0)
		err = errno;
	close(fd);
	if (err)
		unlinkat(j->dirfd, j->tmpname, 0);
	return err;
}

/* Gives the unnamed file fd the name name in dirfd, by *way; -1 and errno. */
static int link_unnamed(int fd, dl_write_way way, int dirfd, const char *name)
{
	char proc[32];

	if (way == DL_WRITE_LINK_FD)
		return linkat(fd, "", dirfd, name, AT_EMPTY_PATH);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW);
}

/* Places j's body with an unnamed file linked into place once written: no
 * name shows before the whole file, and a killed run leaves nothing. A link
 * cannot replace a file already at the leaf (a rename does): then the file
 * gets its temporary name and is renamed over it. 0, an errno (nothing left
 * behind), or -1 when *way moved on to DL_WRITE_NAMED: place it the named way. */
static int place_unnamed(dl_writejob *j, dl_write_way *way)
{
	int fd = openat(j->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, j->mode);
	int err = 0, r;

	if (fd < 0) {
		/* EISDIR, EINVAL: a kernel without O_TMPFILE; EOPNOTSUPP: a file system without. */
		if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
			*way = DL_WRITE_NAMED;
		return -1;
	}
	if ((r = dl_write_all(fd, j->data, j->len)) < 0)
		err = -r;
	else if ((j->chmod && fchmod(fd, j->mode) < 0) || fstat(fd, &j->st) < 0)
		err = errno;
	else {
		r = link_unnamed(fd, *way, j->dirfd, j->leaf);
		if (r < 0 && errno != EEXIST && *way == DL_WRITE_LINK_FD) {
			*way = DL_WRITE_LINK_PROC; /* ENOENT: not privileged to link by descriptor */
			r = link_unnamed(fd, *way, j->dirfd, j->leaf);
		}
		if (r < 0 && errno != EEXIST) {
			*way = DL_WRITE_NAMED; /* no /proc, or a link refused there */
			close(fd);
			return -1;
		}
		if (r < 0) { /* EEXIST */
			if (link_unnamed(fd, *way, j->dirfd, j->tmpname) < 0)
				err = errno;
			else if (renameat(j->dirfd, j->tmpname, j->dirfd, j->leaf) < 0) {
				err = errno;
				unlinkat(j->dirfd, j->tmpname, 0);
			}
		}
	}
	close(fd);
	return err;
}

/* Hashes j's body and, when it is the wanted one, places it. */
static void write_one(dl_write_way *way, dl_writejob *j)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	int r = -1;

	j->err = 0;
	if (!EVP_Digest(j->data, j->len, md, &len, EVP_sha256(), NULL))
		memset(md, 0, sizeof(md)), len = 32; /* cannot match: reported as corrupt */
	tf__hex(md, len, j->hex);
	if (strcmp(j->hex, j->want))
		return;
	if (*way != DL_WRITE_NAMED)
		r = place_unnamed(j, way);
	j->err = r >= 0 ? r : place_named(j);
}

static void *writer_main(void *arg)
{
	dl_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		dl_writejob *batch = w->todo, *last = NULL;
		dl_write_way way = w->way;

		if (!batch) {
			if (w->stop)
				break;
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		w->todo = NULL;
		pthread_mutex_unlock(&w->mu);
		for (dl_writejob *j = batch; j; j = j->next) {
			write_one(&way, j);
			last = j;
		}
		pthread_mutex_lock(&w->mu);
		w->way = way;
		last->next = w->done;
		w->done = batch;
		pthread_mutex_unlock(&w->mu);
		w->wake(w->wake_arg);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

dl_writer *dl_writer_new(void (*wake)(void *), void *wake_arg, dl_write_way way)
{
	dl_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->way = way;
	w->wake = wake;
	w->wake_arg = wake_arg;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		free(w);
		return NULL;
	}
	return w;
}

void dl_writer_free(dl_writer *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	for (dl_writejob *j = w->done, *n; j; j = n) {
		n = j->next;
		free(j);
	}
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

void dl_writer_submit(dl_writer *w, dl_writejob *list)
{
	dl_writejob *last = list;

	if (!list)
		return;
	while (last->next)
		last = last->next;
	pthread_mutex_lock(&w->mu);
	last->next = w->todo;
	w->todo = list;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

dl_write_way dl_writer_way(dl_writer *w)
{
	dl_write_way way;

	pthread_mutex_lock(&w->mu);
	way = w->way;
	pthread_mutex_unlock(&w->mu);
	return way;
}

dl_writejob *dl_writer_take_done(dl_writer *w)
{
	dl_writejob *list;

	pthread_mutex_lock(&w->mu);
	list = w->done;
	w->done = NULL;
	pthread_mutex_unlock(&w->mu);
	return list;
}
