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

#endif
