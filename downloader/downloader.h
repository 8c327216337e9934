/* downloader/ — cache backends behind one interface, and the background
 * transfer engine (libcurl multi in its own thread). Module prefix dl_.
 * The public face is tf_downloader in include/topfetch.h; this header is the
 * folder's contract for the rest of the library. */
#ifndef TF_DOWNLOADER_H
#define TF_DOWNLOADER_H

#include <curl/curl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "core/core.h"

/* Which half of a cache a key lives in: tf_area (TF_AREA_CAS, TF_AREA_AC). */
const char *dl_area_name(tf_area a); /* "cas" or "ac" */

/* What a request asks a backend for. DL_OP_FIND: a gRPC FindMissingBlobs
 * whose request the caller made (dl_find_missing). */
typedef enum dl_op { DL_OP_GET, DL_OP_HEAD, DL_OP_PUT, DL_OP_FIND } dl_op;

/* What an attempt's end means, as far as the backend can tell. */
typedef enum dl_outcome {
	DL_OUTCOME_BODY,      /* the cache answered with the blob's bytes */
	DL_OUTCOME_MISS,      /* the cache does not have it (404, 204, no such file) */
	DL_OUTCOME_TRANSIENT, /* worth another try: network, 5xx, 408, 429 */
	DL_OUTCOME_TIMEOUT,   /* --remote_timeout passed in silence (also worth another try) */
	DL_OUTCOME_FATAL,     /* no point retrying: 401, 403, 400, bad URL, TLS setup */
} dl_outcome;

typedef struct dl_backend dl_backend;
typedef struct dl_grpc dl_grpc;

/* Parses opts->remote_cache (http(s) URL or a directory in Bazel's
 * --disk_cache layout) and prepares what every request shares (headers,
 * TLS files). opts is not retained. Does not block beyond a stat(). */
dl_backend *dl_backend_new(const tf_remote_options *opts, tf_error *err);

void dl_backend_free(dl_backend *b);

/* "http" or "disk": for messages. */
const char *dl_backend_kind(const dl_backend *b);

/* True for a --disk_cache directory. */
bool dl_backend_is_disk(const dl_backend *b);

/* The cache's URL or directory, never with credentials: for messages. */
const char *dl_backend_display(const dl_backend *b);

long dl_backend_timeout_s(const dl_backend *b);

/* Sets URL, protocol limits, headers, credentials and TLS on an easy handle
 * for op on `hash` (of `size` bytes, -1 unknown) in `area`, from byte
 * `offset` (grpc reads only; 0 elsewhere), and writes the URL without
 * credentials into display (for messages). A disk backend takes only
 * DL_OP_GET (-EOPNOTSUPP); a grpc backend only DL_OP_GET of a CAS blob of
 * known size or of an AC entry (-EOPNOTSUPP). The handle must outlive
 * nothing in b but b itself. */
int dl_backend_prepare(const dl_backend *b, CURL *h, dl_op op, tf_area area, const char *hash, int64_t size,
		       int64_t offset, char *display, size_t display_len);

/* True when an easy handle that made a DL_OP_GET through dl_backend_prepare
 * (http or disk) may make the next one after dl_backend_prepare_again alone,
 * without curl_easy_reset: every option but the URL is the same for each
 * such GET (not so for grpc, nor for the leader scheme of cleartext HTTP/2
 * with prior knowledge, whose options change per transfer). */
bool dl_backend_reusable(const dl_backend *b);
/* The next DL_OP_GET on such a handle: only its URL (and display) change;
 * the header list is refreshed in place as for dl_backend_prepare. 0 or
 * -EACCES as dl_backend_prepare. */
int dl_backend_prepare_again(const dl_backend *b, CURL *h, tf_area area, const char *hash, char *display,
			     size_t display_len);

/* RequestMetadata of every later gRPC call names this tool_invocation_id
 * (a build's BEP uuid); the line is put in place by the engine thread's next
 * dl_backend_refresh, calls in flight keep theirs. Any thread; 0, -ENOMEM or
 * -EMSGSIZE. Not for http or disk (0, nothing done). */
int dl_backend_set_invocation(dl_backend *b, const char *id);
/* Engine thread, before a call is set up: the pending invocation line and
 * the credential helpers' answers put in the shared header list. -EACCES
 * (display says why) when a helper fails. */
int dl_backend_refresh(const dl_backend *b, char *display, size_t display_len);

/* The grpc side of a grpc backend; NULL for http and disk. */
dl_grpc *dl_backend_grpc(const dl_backend *b);

/* What every request to an http or grpc cache shares: the header list,
 * the TLS files, the connect and silence limits of --remote_timeout. */
void dl_backend_common(const dl_backend *b, CURL *h);

/* Classifies a finished attempt; fills why with a short reason for
 * everything but a body. */
/* --remote_timeout as a silence limit: a transfer is cut once no byte went
 * either way for that long (a paused stream, waiting for its caller, is not
 * silent). One per transfer attempt; set up after dl_backend_prepare. When
 * it cut the transfer, curl ends with CURLE_ABORTED_BY_CALLBACK and `fired`
 * is set. */
typedef struct dl_silence {
	uint64_t last_ns;
	curl_off_t last_dl, last_ul;
	long timeout_s;
	const bool *paused; /* may be NULL */
	bool fired;
} dl_silence;
void dl_backend_watch_silence(const dl_backend *b, CURL *h, dl_silence *w, const bool *paused);

dl_outcome dl_backend_classify(const dl_backend *b, CURLcode rc, long status, const char *errbuf,
			       char *why, size_t why_len);

/* Engine thread, when an http transfer ended with rc: keeps the state of
 * --remote_http_version=2-prior-knowledge on libcurl before 8.0.0 (see
 * http_version in backend.c). True when the transfer found its cleartext
 * HTTP/2 connection gone and is worth asking again at once, not counted as
 * an attempt. False for every other backend and version. */
bool dl_backend_h2c_note(const dl_backend *b, CURLcode rc);

/* ---- the disk layout (disk backend only) ---- */

/* Where hash lives: the sharded path if it exists, else the flat one if that
 * exists (0), else the sharded path and -ENOENT (or another -errno). */
int dl_disk_path(const dl_backend *b, tf_area area, const char *hash, char *out, size_t n);

/* Opens the entry for reading; its size into *size. -ENOENT: not there. */
int dl_disk_open(const dl_backend *b, tf_area area, const char *hash, int64_t *size);

/* Creates a temporary file (0644) in the sharded folder of hash, creating the
 * folders; its path into tmp. Returns the fd or -errno. */
int dl_disk_tmp(dl_backend *b, tf_area area, const char *hash, char *tmp, size_t n);

/* Creates path and its missing parents (0755), as `mkdir -p`. 0 or -errno. */
int dl_mkdirs(const char *path);

/* Renames tmp to the sharded path of hash (atomic); removes tmp on failure. */
int dl_disk_commit(const dl_backend *b, tf_area area, const char *hash, const char *tmp);

/* Temporary files are named DL_TMP_PREFIX<pid>.<n> in their destination's folder. */
#define DL_TMP_PREFIX ".tftmp."

/* Removes every temporary file a previous run left below rootfd (after a
 * crash or kill -9), counting them into *removed (may be NULL). Must not run
 * while a downloader writes below rootfd. Blocks while it walks the tree. */
int dl_remove_stale_tmp(int rootfd, uint64_t *removed, tf_error *err);
/* The same, for the temporary files of processes that no longer exist only
 * (the pid in the name): safe while other runs write below rootfd. */
int dl_remove_dead_tmp(int rootfd, uint64_t *removed, tf_error *err);

/* ---- streams: one entry through the engine in bounded memory ---- */

/* A GET whose body a caller's thread reads, a HEAD, or a PUT whose body a
 * caller's thread writes; of an http cache through the engine thread (a
 * bounded ring each way, the curl transfer paused while the ring is full or
 * empty), of a disk cache by plain file I/O in the caller's thread. Forwarded
 * requests are not retried. Every function but dl_stream_open may block. */
typedef struct dl_stream dl_stream;

/* Starts op on `hash` in `area`. size: a PUT's body length; for a GET or
 * HEAD of a CAS blob, its size when the caller knows it (> 0), which a gRPC
 * cache needs (ByteStream resource names and FindMissingBlobs digests hold
 * it): without it a gRPC cache's answer is a miss (-ENOENT), saying so.
 * cap: a GET takes at most this many body bytes (0: no cap). Does not block.
 * NULL with err on bad arguments or out of memory. */
dl_stream *dl_stream_open(tf_downloader *d, dl_op op, tf_area area, const char *hash, int64_t size,
			  size_t cap, tf_error *err);

/* The URL or path of the entry, without credentials: for messages. */
const char *dl_stream_what(const dl_stream *s);

/* GET, HEAD: waits for the cache's answer. 0 when it has the entry (*length:
 * its Content-Length or size, -1 unknown); -ENOENT a miss (404, 204, no such
 * file); -ETIMEDOUT --remote_timeout passed in silence; -EFBIG larger than
 * cap; -EIO any other failure; -ESHUTDOWN the engine is closing. why says
 * which (never a credential). */
int dl_stream_wait(dl_stream *s, int64_t *length, char *why, size_t n);

/* GET: copies up to max body bytes into buf, waiting for them. The last byte
 * is held back until the body ended with its announced length and, in the
 * CAS, hashes to the key. Returns the count, 0 at the verified end, or
 * negative: -EBADMSG wrong hash, -EFBIG past cap, -EIO/-ETIMEDOUT the
 * transfer failed or ended short (why). */
ssize_t dl_stream_read(dl_stream *s, void *buf, size_t max, char *why, size_t n);

/* PUT: hands n bytes to the upload, waiting for room. In the CAS they are
 * hashed and the last one is held until dl_stream_finish. 0; -EMSGSIZE more
 * than put_size; -EPIPE the transfer already ended (dl_stream_finish tells). */
int dl_stream_write(dl_stream *s, const void *p, size_t n);

/* PUT: ends the body and waits for the cache's answer. A body shorter than
 * put_size (-EMSGSIZE) or, in the CAS, not hashing to the key (-EBADMSG) is
 * refused before its last byte leaves: nothing is stored. 0 stored (*status:
 * the HTTP status, 200 for a disk cache), or negative as dl_stream_wait. */
int dl_stream_finish(dl_stream *s, long *status, char *why, size_t n);

/* Cancels what is still running (a disk upload leaves no file) and lets go
 * of s. Every stream must be freed before tf_downloader_free. */
void dl_stream_free(dl_stream *s);

/* A whole entry into out (initialised here with cap; freed on failure).
 * Returns as dl_stream_wait/dl_stream_read. Blocks. */
int dl_get_mem(tf_downloader *d, tf_area area, const char *hash, size_t cap, tf__buf *out, char *why,
	       size_t n);

/* Stores len bytes as hash in area. Returns as dl_stream_finish. Blocks. */
int dl_put_mem(tf_downloader *d, tf_area area, const char *hash, const void *data, size_t len, long *status,
	       char *why, size_t n);

/* Asks (HEAD, 64 at a time; a gRPC cache: FindMissingBlobs, up to
 * DL_FIND_GRPC_BATCH digests a call) whether each blob is in the cache with its size.
 * 1 all are; 0 one is missing or has another size (*missing: its index, why
 * names it); negative: the cache could not tell (why). Blocks. */
int dl_find_missing(tf_downloader *d, tf_area area, const tf_digest *v, size_t count, size_t *missing,
		    char *why, size_t n);

/* Refuses new streams and ends those in flight (their waiters wake with
 * -ESHUTDOWN); tf_downloader_free still follows. Does not block. */
void dl_downloader_close(tf_downloader *d);

/* The cache's URL or directory, without credentials. */
const char *dl_downloader_display(const tf_downloader *d);

/* dl_grpc_adopt_instance of d's backend (0 for http and disk). */
int dl_downloader_adopt_instance(tf_downloader *d, const char *uri);

/* dl_backend_set_invocation of d's backend. */
int dl_downloader_set_invocation(tf_downloader *d, const char *id);

/* True for a gRPC cache: a stream's GET or HEAD of a CAS blob needs the
 * blob's size (dl_stream_open). */
bool dl_downloader_needs_sizes(const tf_downloader *d);

/* ---- the verifier thread (hasher.c) ---- */

/* Writes all n bytes to fd (retrying short writes and EINTR). 0 or -errno. */
int dl_write_all(int fd, const void *data, size_t n);

typedef struct dl_hasher dl_hasher;
typedef struct dl_hashjob dl_hashjob;

/* Starts the verifier thread; wake(wake_arg) is called from it whenever a job
 * finishes. Returns NULL if the thread cannot start. */
dl_hasher *dl_hasher_new(void (*wake)(void *), void *wake_arg);

/* Stops the thread and frees every job. Blocks until the thread exits. */
void dl_hasher_free(dl_hasher *h);

/* A job that hashes the file fd (readable; the job owns and closes it) as
 * bytes are fed. owner comes back from dl_hasher_take_done.
 * NULL on allocation failure (fd stays the caller's). Does not block. */
dl_hashjob *dl_hasher_start(dl_hasher *h, int fd, void *owner);

/* The next n bytes of the blob: copied into the job's chunk, which is
 * written to fd (the temporary file) when full and then hashed from memory
 * by the verifier thread; when the chunk pool is empty they are written to
 * fd at once and hashed from the file. Owner's thread; never waits for the
 * hash. Returns 0 or -errno of a failed write. */
int dl_hasher_feed(dl_hasher *h, dl_hashjob *j, int fd, const void *data, size_t n);

/* Writes the bytes fed but not yet written to fd (an attempt ends and the
 * next one goes on from here). Returns 0 or -errno. */
int dl_hasher_flush(dl_hasher *h, dl_hashjob *j, int fd);

/* No byte follows: writes what is left to fd; the job finishes once every
 * byte is hashed. Returns 0 or -errno of the write (the job finishes all
 * the same; its digest is then of no use). */
int dl_hasher_finish(dl_hasher *h, dl_hashjob *j, int fd);

/* The owner lets go of j (whatever its state); the caller must not use j again. */
void dl_hasher_cancel(dl_hasher *h, dl_hashjob *j);

/* Takes one finished job: returns its owner and the digest in hex, and frees
 * the job; NULL when none is finished. Does not block. */
void *dl_hasher_take_done(dl_hasher *h, char hex[TF_HASH_HEX_LEN + 1]);

/* The writer thread (hasher.c): the file work of small blobs. A small
 * blob's body is kept in its job while it arrives; once complete, the job
 * goes to this thread, which hashes it and, when it matches, creates an
 * unnamed file (or a temporary one), writes it, sets its mode, links (or
 * renames) it into place and closes it: the engine thread's receiving overlaps these system calls on
 * a second CPU. Jobs are handed over and back in batches (one lock and one
 * wakeup for many). */
#define DL_WRITE_MAX (12 * 1024) /* bytes of a small blob (its whole body) */

typedef struct dl_writejob {
	struct dl_writejob *next;
	void *owner;
	/* In: the folder (stays open until the job is back), names, mode. */
	int dirfd;
	char tmpname[32];
	char leaf[256];
	char want[TF_HASH_HEX_LEN + 1]; /* the digest's hash */
	mode_t mode;                    /* of the new file */
	bool chmod;                     /* the umask would drop bits of mode: fchmod */
	size_t len;
	unsigned char data[DL_WRITE_MAX];
	/* Out: the body's hash; when it is want, err (0, or errno of the step
	 * that failed: nothing is left behind then) and st of the placed file. */
	char hex[TF_HASH_HEX_LEN + 1];
	int err;
	struct stat st;
} dl_writejob;

typedef struct dl_writer dl_writer;

/* How the writer places a file: an unnamed file (O_TMPFILE) linked into
 * place by its descriptor (AT_EMPTY_PATH: needs CAP_DAC_READ_SEARCH, or a
 * kernel from 6.10, which lets the file's opener link it) or through
 * /proc/self/fd, or a named temporary file renamed. A way the kernel, the
 * file system or a missing /proc refuses is left for the next, for good. */
typedef enum dl_write_way { DL_WRITE_LINK_FD, DL_WRITE_LINK_PROC, DL_WRITE_NAMED } dl_write_way;

/* Starts the writer thread, placing files the given way first;
 * wake(wake_arg) is called from it after each batch. NULL if it cannot
 * start. */
dl_writer *dl_writer_new(void (*wake)(void *), void *wake_arg, dl_write_way way);
/* The way the writer places files now (later than the first after a fallback). */
dl_write_way dl_writer_way(dl_writer *w);
/* Finishes the jobs handed over, stops the thread and frees every job it
 * holds (their owners are not told). */
void dl_writer_free(dl_writer *w);
/* Hands over a list of jobs (linked by next); one lock, one signal. */
void dl_writer_submit(dl_writer *w, dl_writejob *list);
/* Takes every finished job (a list linked by next, in no order); NULL when
 * none. Does not block. */
dl_writejob *dl_writer_take_done(dl_writer *w);

/* ---- gRPC (grpc.c): REAPI v2 and ByteStream over libcurl's HTTP/2 ---- */

/* Parses grpc://HOST:PORT or grpcs://HOST:PORT and the instance name of
 * opts (the backend keeps headers and TLS files). Does not block. */
dl_grpc *dl_grpc_new(const tf_remote_options *opts, tf_error *err);
void dl_grpc_free(dl_grpc *g);

/* grpc(s)://host:port[/instance]: for messages. */
const char *dl_grpc_display(const dl_grpc *g);

/* Asks the server's Capabilities (blocks up to --remote_timeout). 0: it is a
 * SHA-256 cache (its max batch size noted); 1: it could not tell (not
 * reachable now, or no Capabilities service): transfers report for
 * themselves; negative with err: a cache we must not use (no SHA-256, or the
 * call was refused, with the server's message). */
int dl_grpc_capabilities(const dl_backend *b, tf_error *err);

#define DL_GRPC_METADATA_HEADER "build.bazel.remote.execution.v2.requestmetadata-bin"

/* The RequestMetadata header line (tool topfetch and its version, and the
 * invocation id when not NULL) into line. 0 or -EMSGSIZE. */
int dl_grpc_metadata_line(char *line, size_t n, const char *invocation);

/* Appends the header lines of every call (content-type, te: trailers, the
 * RequestMetadata) to *l. */
int dl_grpc_headers(struct curl_slist **l, tf_error *err);

/* The instance of a bytestream://HOST[:PORT]/INSTANCE/blobs/HASH/SIZE URI
 * (a Bazel BEP's) becomes the instance of the calls that start from now on,
 * unless there is one already (--remote_instance_name, or an earlier URI's).
 * 1 adopted, 0 nothing to do, -EINVAL (not a path), -ENOMEM. */
int dl_grpc_adopt_instance(dl_grpc *g, const char *uri);

/* The server's max_batch_total_size_bytes (0: not known). */
int64_t dl_grpc_max_batch(const dl_grpc *g);

/* The transport result of a finished call: whether later calls may multiplex
 * on an open connection or must open one (see call_setup in grpc.c). */
void dl_grpc_note(dl_grpc *g, CURLcode rc);

/* Sets up h for one read: ByteStream.Read of blobs/hash/size from offset
 * (CAS), or GetActionResult of hash (AC); display gets what it is, for
 * messages. 0 or -errno. */
int dl_grpc_prepare(const dl_backend *b, CURL *h, tf_area area, const char *hash, int64_t size, int64_t offset,
		    char *display, size_t display_len);

/* Sets up h for a call made as a stream (dl_stream_*) and appends to req
 * the bytes the call's body starts with: GET CAS ByteStream.Read, GET or
 * HEAD AC GetActionResult, HEAD CAS FindMissingBlobs of one digest, PUT CAS
 * ByteStream.Write (nothing: dl_grpc_write_frame makes its messages), PUT
 * AC UpdateActionResult (the request up to its action_result field, whose
 * `size` bytes the body then carries as they are), DL_OP_FIND (nothing: the
 * caller made the request). display gets what it is. 0, -ENOENT for a GET or
 * HEAD of a CAS blob of unknown size (size <= 0), or -errno. */
int dl_grpc_stream_prepare(const dl_backend *b, CURL *h, dl_op op, tf_area area, const char *hash, int64_t size,
			   tf__buf *req, char *display, size_t display_len);

/* Appends one framed ByteStream WriteRequest of n bytes at offset of the
 * blob hash/size (the resource name, with a new UUID, at offset 0;
 * finish_write on the message that reaches size). */
int dl_grpc_write_frame(const dl_backend *b, tf__buf *out, const char *hash, int64_t size, int64_t offset,
			const void *data, size_t n);

/* The committed_size of a WriteResponse. 0 or -EBADMSG with err. */
int dl_grpc_committed(const void *p, size_t n, int64_t *committed, tf_error *err);

/* Appends a framed FindMissingBlobsRequest for v[0..count). */
int dl_grpc_find_request(const dl_backend *b, const tf_digest *v, size_t count, tf__buf *req);

/* Reads a FindMissingBlobsResponse about v[0..count): 1 none is missing, 0
 * one is (*missing: the first of v it names), -EBADMSG with err. */
int dl_grpc_find_answer(const void *p, size_t n, const tf_digest *v, size_t count, size_t *missing, tf_error *err);

/* BatchReadBlobs: whether to ask it (false once the server answered
 * UNIMPLEMENTED: dl_grpc_batch_off), and the most bytes of blobs one call
 * may ask for (the server's max_batch_total_size_bytes, else 4 MiB). */
bool dl_grpc_batch_ok(const dl_grpc *g);
void dl_grpc_batch_off(dl_grpc *g);
int64_t dl_grpc_batch_limit(const dl_grpc *g);

/* Sets up h for one BatchReadBlobs of v[0..n). 0 or -ENOMEM. */
int dl_grpc_batch_prepare(const dl_backend *b, CURL *h, const tf_digest *v, size_t n, char *display,
			  size_t display_len);

/* Each blob of a BatchReadBlobsResponse: its digest, its status code (0 OK)
 * and message, and its bytes (valid during the call). */
typedef void (*dl_grpc_batch_cb)(void *arg, const char *hash, int64_t size, int code, const char *message,
				 const void *data, size_t len);
/* Reads a BatchReadBlobsResponse (checked with pw_check). 0 or -EBADMSG. */
int dl_grpc_batch_answer(const void *p, size_t n, dl_grpc_batch_cb cb, void *arg, tf_error *err);

/* {instance/}blobs/hash/size (no leading slash without an instance).
 * -ENAMETOOLONG if it does not fit in n. */
int dl_grpc_resource_name(char *out, size_t n, const char *instance, const char *hash, int64_t size);

/* Appends msg as one length-prefixed gRPC message (flag 0, big-endian length). */
int dl_grpc_frame(tf__buf *out, const void *msg, size_t len);

/* Decodes a percent-encoded grpc-message into out (NUL-terminated, control
 * characters as spaces); returns its length. */
size_t dl_grpc_percent_decode(const char *in, size_t n, char *out, size_t outn);

/* "NOT_FOUND" for 5, and so on. */
const char *dl_grpc_code_name(int code);

#define DL_GRPC_MAX_MESSAGE ((size_t)64 << 20) /* largest answer message we take */
#define DL_GRPC_WRITE_CHUNK ((size_t)64 << 10)  /* data bytes per ByteStream WriteRequest */

/* What the messages of an answer carry to the sink. */
typedef enum dl_grpc_answer {
	DL_GRPC_RAW,        /* each message's bytes as they are (unary answers) */
	DL_GRPC_READ_DATA,  /* the data of each ByteStream ReadResponse */
} dl_grpc_answer;

/* One answer being read: the message reassembly and the status. */
typedef struct dl_grpc_rx {
	dl_grpc_answer kind;
	unsigned char hdr[5];
	size_t hdr_len;    /* bytes of the current message's prefix seen */
	uint32_t want;     /* the current message's length */
	tf__buf msg;       /* a message split across chunks */
	uint64_t messages; /* whole messages seen */
	int status;        /* grpc-status, -1 not seen */
	char message[512]; /* grpc-message, decoded */
	char why[256];     /* a malformed answer: what was wrong */
} dl_grpc_rx;

/* The sink of whole messages' payloads: 0, or negative to stop the answer. */
typedef int (*dl_grpc_sink)(void *arg, const void *p, size_t n);

void dl_grpc_rx_init(dl_grpc_rx *rx, dl_grpc_answer kind);
/* For a new attempt. */
void dl_grpc_rx_reset(dl_grpc_rx *rx);
void dl_grpc_rx_fini(dl_grpc_rx *rx);

/* Feeds body bytes; every whole message goes to sink (ReadResponses checked
 * with pw_check first). 0, the sink's negative value, or -EBADMSG with
 * rx->why. */
int dl_grpc_rx_feed(dl_grpc_rx *rx, const void *data, size_t n, dl_grpc_sink sink, void *arg);

/* True when a message has begun and not ended. */
bool dl_grpc_rx_partial(const dl_grpc_rx *rx);

/* True when an answer ended cleanly (CURLE_OK, HTTP 200, no message cut, at
 * least one whole message) but without a grpc-status. libcurl 7.88 (Debian
 * 12) now and then loses the trailers of a multiplexed HTTP/2 stream; an
 * answer such as this whose content the caller knows to be whole (a unary
 * call's one message; a ByteStream read of every byte of the blob, which is
 * then verified against its digest) is taken as OK instead of read again. */
bool dl_grpc_rx_whole_untrailed(const dl_grpc_rx *rx, CURLcode rc, long http_status);

/* A header or trailer line: notes grpc-status and grpc-message. */
void dl_grpc_rx_header(dl_grpc_rx *rx, const char *line, size_t n);

/* What an answer's end means: the grpc-status if one came (NOT_FOUND a miss;
 * UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED worth another try;
 * DEADLINE_EXCEEDED a timeout; the rest fatal with the server's message),
 * else the transport's result. */
dl_outcome dl_grpc_classify(const dl_grpc_rx *rx, CURLcode rc, long http_status, const char *errbuf,
			    long timeout_s, char *why, size_t n);

/* ---- credentials (credentials.c): netrc and credential helpers, as Bazel ---- */

typedef struct dl_creds dl_creds;

/* Checks every --credential_helper of opts (scope, an executable PATH), picks
 * the one for the host of opts->remote_cache and, when none applies, reads
 * the netrc file (opts->netrc; NULL: $NETRC, else $HOME/.netrc). With
 * url_has_user (user:password@ in the URL) neither is used, as Bazel. No
 * helper runs here. NULL with err naming the flag or file (never a secret). */
dl_creds *dl_creds_new(const tf_remote_options *opts, bool url_has_user, tf_error *err);
void dl_creds_free(dl_creds *c);

/* True when a helper applies to the cache. */
bool dl_creds_has_helper(const dl_creds *c);

/* The netrc login and password for the cache's host (owned by c); false
 * when netrc gives none. */
bool dl_creds_netrc(const dl_creds *c, const char **login, const char **password);

/* When the helper's answer expired (or was never taken), takes the answer
 * the process keeps for this helper and URI (every downloader shares it, as
 * Bazel's credential cache), or runs the helper (blocking up to
 * --credential_helper_timeout, and other downloaders asking meanwhile) and
 * puts its header lines
 * into nodes it owns at the end of *list, changing them in place, so a
 * request prepared earlier and not sent yet sends the new ones. Must run
 * in the thread that drives the transfers using *list. 0 (nothing to do, or
 * done); -EACCES with why naming the helper and the URI (never what it
 * answered); a failed helper is not run again for a second. */
int dl_creds_refresh(dl_creds *c, struct curl_slist **list, char *why, size_t why_len);

/* For tests: the entry of host in a netrc text (1, *login and *password
 * malloc'ed), 0 none, negative with err (file names the text). */
int dl_netrc_lookup(const char *text, size_t len, const char *file, const char *host, char **login, char **password,
		    tf_error *err);
/* For tests: whether "*.example.com" or "host.example.com" is a scope Bazel takes. */
bool dl_scope_valid(const char *scope);
/* For tests: whether scope (NULL: none) covers host. */
bool dl_scope_matches(const char *scope, const char *host);
/* For tests: the index of the "[SCOPE=]PATH" spec that applies to host, -1 none. */
int dl_helper_pick(const char *const *specs, size_t n, const char *host);
/* RFC 3339 time to seconds since the epoch: 0, or -EINVAL. */
int dl_rfc3339_parse(const char *s, time_t *out);

/* Asks the cache once, with the --remote_retries backoff, whether it can be
 * reached with these credentials: an http(s) cache by HEAD of a key nobody
 * stores (any answer but 401/403 will do), a grpc(s) one by a connection.
 * 0; negative with err naming the cache (no secret) and what to check when
 * no connection could be made (refused, no such host, TLS, silence) or the
 * credentials were refused. Blocks. */
int dl_backend_probe(dl_backend *b, int retries, tf_error *err);

#endif
