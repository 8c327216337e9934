/* downloader/ — cache backends behind one interface, and the background
 * transfer engine (libcurl multi in its own thread). Module prefix dl_.
 * The public face is tf_downloader in include/topfetch.h; this header is the
 * folder's contract for the rest of the library. */
#ifndef TF_DOWNLOADER_H
#define TF_DOWNLOADER_H

#include <curl/curl.h>

#include "core/core.h"

/* Which half of a cache a key lives in. */
typedef enum dl_area { DL_AREA_AC, DL_AREA_CAS } dl_area;

/* What an attempt's end means, as far as the backend can tell. */
typedef enum dl_outcome {
	DL_OUTCOME_BODY,      /* the cache answered with the blob's bytes */
	DL_OUTCOME_MISS,      /* the cache does not have it (404, 204, no such file) */
	DL_OUTCOME_TRANSIENT, /* worth another try: network, timeout, 5xx, 408, 429 */
	DL_OUTCOME_FATAL,     /* no point retrying: 401, 403, 400, bad URL, TLS setup */
} dl_outcome;

typedef struct dl_backend dl_backend;

/* Parses opts->remote_cache (http(s) URL or a directory in Bazel's
 * --disk_cache layout) and prepares what every request shares (headers,
 * TLS files). opts is not retained. Does not block beyond a stat(). */
dl_backend *dl_backend_new(const tf_remote_options *opts, tf_error *err);

void dl_backend_free(dl_backend *b);

/* "http" or "disk": for messages. */
const char *dl_backend_kind(const dl_backend *b);

/* Sets URL, protocol limits, headers, credentials and TLS on an easy handle
 * for a GET of `hash` in `area`, and writes the URL without credentials into
 * display (for messages). The handle must outlive nothing in b but b itself. */
int dl_backend_prepare_get(const dl_backend *b, CURL *h, dl_area area, const char *hash,
			   char *display, size_t display_len);

/* Classifies a finished attempt; fills why with a short reason for
 * everything but a body. */
dl_outcome dl_backend_classify(const dl_backend *b, CURLcode rc, long status, const char *errbuf,
			       char *why, size_t why_len);

/* Temporary files are named DL_TMP_PREFIX<pid>.<n> in their destination's folder. */
#define DL_TMP_PREFIX ".tftmp."

/* Removes every temporary file a previous run left below rootfd (after a
 * crash or kill -9), counting them into *removed (may be NULL). Must not run
 * while a downloader writes below rootfd. Blocks while it walks the tree. */
int dl_remove_stale_tmp(int rootfd, uint64_t *removed, tf_error *err);

/* ---- the verifier thread (hasher.c) ---- */

typedef struct dl_hasher dl_hasher;
typedef struct dl_hashjob dl_hashjob;

/* Starts the verifier thread; wake(wake_arg) is called from it whenever a job
 * finishes. Returns NULL if the thread cannot start. */
dl_hasher *dl_hasher_new(void (*wake)(void *), void *wake_arg);

/* Stops the thread and frees every job. Blocks until the thread exits. */
void dl_hasher_free(dl_hasher *h);

/* A job that hashes the file fd (readable; the job owns and closes it) as
 * bytes are reported written. owner comes back from dl_hasher_take_done.
 * NULL on allocation failure (fd stays the caller's). Does not block. */
dl_hashjob *dl_hasher_start(dl_hasher *h, int fd, void *owner);

/* Bytes [0, written) of the file are final. Does not block. */
void dl_hasher_advance(dl_hasher *h, dl_hashjob *j, int64_t written);

/* No byte follows `written`; the job finishes once they are hashed. */
void dl_hasher_finish(dl_hasher *h, dl_hashjob *j, int64_t written);

/* The owner lets go of j (whatever its state); the caller must not use j again. */
void dl_hasher_cancel(dl_hasher *h, dl_hashjob *j);

/* Takes one finished job: returns its owner and the digest in hex, and frees
 * the job; NULL when none is finished. Does not block. */
void *dl_hasher_take_done(dl_hasher *h, char hex[TF_HASH_HEX_LEN + 1]);

#endif
