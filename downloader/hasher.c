/* The verifier thread: hashes large blobs while they are still arriving.
 *
 * SHA-256 costs about as much CPU as receiving and writing the bytes, so for
 * large blobs it runs on a second thread that reads the temporary file back
 * (from the page cache) a little behind the writer. The transfer thread only
 * reports how far it has written. Small blobs are hashed inline instead: for
 * them the hand-off would cost more than the hash. */
#include "downloader/downloader.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HASH_CHUNK (1024 * 1024)

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
	int64_t written; /* under mu */
	int64_t hashed;  /* hasher thread */
	bool read_failed;
	void *owner;
	char hex[TF_HASH_HEX_LEN + 1];
};

struct dl_hasher {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	dl_hashjob *jobs; /* feeding, draining, cancelled */
	dl_hashjob *done;
	void (*wake)(void *);
	void *wake_arg;
	unsigned char *buf;
};

static void job_free(dl_hashjob *j)
{
	if (!j)
		return;
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

static void *hasher_main(void *arg)
{
	dl_hasher *h = arg;

	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		dl_hashjob *work = NULL, **pp = &h->jobs;
		bool woke_owner = false;

		while (*pp) {
			dl_hashjob *j = *pp;
			if (j->state == HJ_CANCELLED) {
				*pp = j->next;
				job_free(j);
				continue;
			}
			if (j->hashed < j->written && !j->read_failed) {
				work = j;
				break;
			}
			if (j->state == HJ_DRAINING) {
				unsigned char md[EVP_MAX_MD_SIZE];
				unsigned len = 0;
				*pp = j->next;
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
		{
			int64_t from = work->hashed, n = work->written - from;
			ssize_t got;
			if (n > HASH_CHUNK)
				n = HASH_CHUNK;
			/* The job cannot be freed while we read: only this thread frees. */
			pthread_mutex_unlock(&h->mu);
			got = pread(work->fd, h->buf, (size_t)n, (off_t)from);
			if (got > 0)
				EVP_DigestUpdate(work->md, h->buf, (size_t)got);
			pthread_mutex_lock(&h->mu);
			if (got > 0)
				work->hashed += got;
			else
				work->read_failed = true;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

dl_hasher *dl_hasher_new(void (*wake)(void *), void *wake_arg)
{
	dl_hasher *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->wake = wake;
	h->wake_arg = wake_arg;
	h->buf = malloc(HASH_CHUNK);
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	if (!h->buf || pthread_create(&h->thread, NULL, hasher_main, h) != 0) {
		free(h->buf);
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
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->thread, NULL);
	for (dl_hashjob *j = h->jobs, *n; j; j = n) {
		n = j->next;
		job_free(j);
	}
	for (dl_hashjob *j = h->done, *n; j; j = n) {
		n = j->next;
		job_free(j);
	}
	free(h->buf);
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
		j->fd = -1; /* the caller keeps fd on failure */
		job_free(j);
		return NULL;
	}
	pthread_mutex_lock(&h->mu);
	j->next = h->jobs;
	h->jobs = j;
	pthread_mutex_unlock(&h->mu);
	return j;
}

void dl_hasher_advance(dl_hasher *h, dl_hashjob *j, int64_t written)
{
	pthread_mutex_lock(&h->mu);
	j->written = written;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

void dl_hasher_finish(dl_hasher *h, dl_hashjob *j, int64_t written)
{
	pthread_mutex_lock(&h->mu);
	j->written = written;
	j->state = HJ_DRAINING;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

void dl_hasher_cancel(dl_hasher *h, dl_hashjob *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&h->mu);
	if (j->state == HJ_DONE) {
		unlink_job(&h->done, j);
		job_free(j);
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
	if (j)
		h->done = j->next;
	pthread_mutex_unlock(&h->mu);
	if (j) {
		owner = j->owner;
		memcpy(hex, j->hex, TF_HASH_HEX_LEN + 1);
		job_free(j);
	}
	return owner;
}
