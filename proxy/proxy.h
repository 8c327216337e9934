/* proxy/ — the proxy between a build tool and its cache, as library code.
 * Module prefix px_. The core (core.c) knows nothing of the wire: a request is
 * an area, a key, a stream of bytes and a status. It forwards to the upstream
 * through the downloader's streams, records every ActionResult that passes
 * into the tf_session (through a bridge to the one thread that owns the
 * session), answers a miss for actions whose outputs were lost, and with
 * --remote_validate_outputs checks a hit's output blobs first. Front ends
 * adapt a wire to it: http.c (libmicrohttpd, Bazel's HTTP cache protocol)
 * and grpc.c (the gRPC C core: REAPI's cache services and ByteStream). */
#ifndef TF_PROXY_H
#define TF_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/core.h"
#include "topfetch.h"

#define PX_AC_MAX_BYTES ((size_t)64 << 20) /* one ActionResult, held whole */
#define PX_MESSAGE_MAX 1024

typedef struct px_proxy px_proxy;

/* How a request ended, independent of the wire. */
typedef enum px_status {
	PX_OK,          /* done (HTTP 200, or the upstream's 2xx for a PUT) */
	PX_NOT_FOUND,   /* a miss: not in the cache, lost, or failed validation (404) */
	PX_BAD_REQUEST, /* the request itself is wrong: wrong bytes, wrong length (400) */
	PX_TOO_LARGE,   /* an action cache entry past PX_AC_MAX_BYTES (413) */
	PX_UPSTREAM,    /* the upstream failed or refused (502) */
	PX_TIMEOUT,     /* the upstream stayed silent past --remote_timeout (504) */
	PX_UNAVAILABLE, /* the proxy is shutting down (503) */
	PX_INTERNAL,    /* out of memory and the like (500) */
} px_status;

typedef struct px_result {
	px_status status;
	long upstream_code;            /* an upload's 2xx from an HTTP upstream (201, 204); else 0 */
	char message[PX_MESSAGE_MAX];  /* why, for anything but PX_OK; never a credential */
} px_result;

typedef struct px_options {
	const tf_remote_options *remote; /* the upstream: an HTTP cache or a --disk_cache directory */
	bool validate;                   /* --remote_validate_outputs */
	/* Problems no answer carries (a download cut short because the upstream
	 * sent other bytes): called from a request's thread. May be NULL. */
	void (*on_problem)(const char *message, void *user);
	void *user;
} px_options;

typedef struct px_counters {
	uint64_t requests, ac_hits, ac_misses, ac_lost, ac_invalid, ac_puts, cas_puts, refused,
		upstream_errors, bytes_out, bytes_in, record_errors;
} px_counters;

/* Prepares the upstream (a missing --disk_cache directory is created) and
 * its transfer engine. opts is not retained. NULL with err on failure. */
px_proxy *px_new(const px_options *opts, tf_error *err);

/* Stops what is left (px_close first if not yet) and frees p. Every request
 * object must be freed first. Blocks until the engine thread ended. */
void px_free(px_proxy *p);

/* The upstream's URL or directory, without credentials. */
const char *px_upstream(const px_proxy *p);

void px_get_counters(const px_proxy *p, px_counters *out);

/* Builds that ended (px_new_build calls), and seconds since px_new. Any thread. */
uint64_t px_builds_served(const px_proxy *p);
double px_uptime_s(const px_proxy *p);

/* ---- status.c: GET /status and GET /metrics ---- */

typedef struct px_page {
	char *body; /* malloc'd, len bytes; the caller frees it */
	size_t len;
	const char *content_type; /* static */
} px_page;

/* The page for url "/status" (JSON: version, upstream, uptime, builds
 * served, every counter) or "/metrics" (the same in Prometheus text
 * format). -ENOENT for any other url, -ENOMEM. Any thread; does not block. */
int px_status_page(const px_proxy *p, const char *url, px_page *page);

/* ---- the thread that owns the tf_session ---- */

/* The session ActionResults are recorded into; set once, before requests. */
void px_set_session(px_proxy *p, tf_session *s);

/* Readable when request threads wait for the session's thread. */
int px_fd(const px_proxy *p);

/* Answers every waiting question (record a result, is an action lost?).
 * Returns how many. Only on the session's thread. */
int px_run(px_proxy *p);

/* A new build began: blobs validation found upstream are asked about again
 * (each is checked once per build). Any thread. */
void px_new_build(px_proxy *p);

/* The session reported a lost output of action_key: its lookups answer a
 * miss from now on (until a new result for it is uploaded). */
void px_note_lost(px_proxy *p, const char *action_key);

/* close: answers what waits, refuses further questions (PX_UNAVAILABLE) and
 * ends upstream transfers in flight (their requests wake with an error).
 * On the session's thread. Does not block long. */
void px_close(px_proxy *p);

/* ---- requests: any thread; each call may block on the upstream or on the
 * session's thread ---- */

/* Counts a request, and one the front end refused by itself (bad path...). */
void px_count_request(px_proxy *p);
void px_count_refused(px_proxy *p);

/* An action cache lookup: PX_OK with the ActionResult in body (initialised
 * here; the caller finis it), recorded into the session; PX_NOT_FOUND for a
 * miss, a lost action or (validate) a result naming a blob gone upstream. */
void px_ac_get(px_proxy *p, const char *key, tf__buf *body, px_result *r);

/* px_ac_get on behalf of a BES invocation (the client's RequestMetadata
 * tool_invocation_id; NULL: none): a hit is recorded into that invocation's
 * session only (px_bes_record). */
void px_ac_get_for(px_proxy *p, const char *key, const char *invocation, tf__buf *body, px_result *r);

/* HEAD: PX_OK with *length (-1 unknown); an AC key of a lost action is a miss. */
void px_head(px_proxy *p, tf_area area, const char *key, int64_t *length, px_result *r);

/* A CAS download: a reader (with *length, -1 unknown), or NULL and r. */
typedef struct px_get px_get;
px_get *px_cas_get(px_proxy *p, const char *key, int64_t *length, px_result *r);

/* Copies up to max bytes, waiting for them; the last byte only once the blob
 * hashed to its key. >0 bytes, 0 the verified end, <0 failed (reported
 * through on_problem). */
ssize_t px_get_read(px_get *g, void *buf, size_t max);

/* Stops the upstream transfer if it still runs, and frees g. */
void px_get_free(px_get *g);

/* An upload of size bytes: NULL and r when it is answered at once (too large,
 * an empty body, shutting down...). Bytes of a CAS upload stream to the
 * upstream as they come, the last held until they hash to the key; an AC
 * entry is held whole, then stored and recorded. */
typedef struct px_put px_put;
px_put *px_put_begin(px_proxy *p, tf_area area, const char *key, int64_t size, px_result *r);

/* The upload is made on behalf of a BES invocation (copied; NULL or an id
 * px_bes_id_ok refuses: none): an action cache entry is recorded into that
 * invocation's session only. */
void px_put_set_invocation(px_put *u, const char *invocation);

/* Hands n more bytes of the body. A failure is kept for px_put_end; the rest
 * of the body is then read and dropped. */
void px_put_data(px_put *u, const void *data, size_t n);

/* The body is complete: the answer. */
void px_put_end(px_put *u, px_result *r);

/* Frees u; an upload not ended stores nothing. */
void px_put_free(px_put *u);

/* ---- the HTTP front end (http.c): Bazel's HTTP cache protocol ---- */

typedef struct px_http px_http;

/* HOST:PORT or [V6]:PORT into a socket address; loopback only unless any.
 * -EINVAL/-EPERM with why. */
int px_http_parse_listen(const char *spec, bool any, struct sockaddr_storage *ss, char *why, size_t n);

/* A request path [/prefix/]{ac,cas}/<sha256> (bazel-remote's rule): 0 with
 * the area and the key (64 lowercase hex digits), -EINVAL for anything else. */
int px_http_parse_path(const char *url, tf_area *area, char key[TF_HASH_HEX_LEN + 1]);

/* What the front end makes of a request's method, path, Content-Length and
 * Transfer-Encoding (NULL: none), before any body byte. */
typedef struct px_http_head {
	char method;     /* 'G' GET, 'H' HEAD, 'P' PUT; 0 another */
	tf_area area;
	char key[TF_HASH_HEX_LEN + 1]; /* "" unless the path is a key */
	int64_t length;  /* a PUT's Content-Length; -1 otherwise */
	unsigned status; /* 0: to be served; else the HTTP status to answer (400, 405, 411) */
	bool allow;      /* 405: the answer lists the methods allowed */
	bool refused;    /* a request that is not the protocol's (bad path or method): counted */
	bool now;        /* a refusal is answered before the body (closing the connection) */
	char message[PX_MESSAGE_MAX]; /* why, with status */
} px_http_head;

void px_http_read_head(const char *method, const char *url, const char *content_length,
		       const char *transfer_encoding, px_http_head *out);

#define PX_HEADER_TIMEOUT_S 30u /* default header deadline */

/* Starts serving GET/HEAD/PUT on [/prefix]/{ac,cas}/<sha256> at ss: one
 * polling thread (epoll) for every connection, a worker thread per request
 * in progress. A connection whose request headers are not complete within
 * header_timeout_s seconds (0: PX_HEADER_TIMEOUT_S) of its connect or of its
 * request line is closed. NULL when it cannot listen. */
px_http *px_http_start(px_proxy *p, const struct sockaddr_storage *ss, unsigned header_timeout_s);

/* The port it listens on (useful with port 0). */
unsigned px_http_port(const px_http *h);

/* Requests between their first byte and their end. */
int px_http_active(const px_http *h);

/* Connections closed so far by the header deadline. */
uint64_t px_http_cut(const px_http *h);

/* close: stops accepting (new connections are refused); answers carry
 * "Connection: close" from now on. Does not block. */
void px_http_quiesce(px_http *h);

/* stop + free: ends every connection (px_close first, so none waits on the
 * upstream) and waits for the request threads. */
void px_http_stop(px_http *h);

typedef struct px_bes px_bes;

/* ---- the gRPC front end (grpc.c): REAPI Capabilities, ActionCache,
 * ContentAddressableStorage (FindMissingBlobs, BatchReadBlobs,
 * BatchUpdateBlobs) and ByteStream (Read, Write, QueryWriteStatus) ---- */

typedef struct px_grpc px_grpc;

/* TLS for the listener (--listen=grpcs://): PEM text, malloc'd. */
typedef struct px_grpc_tls {
	char *cert; /* the server's certificate chain */
	char *key;  /* its private key */
	char *ca;   /* NULL: no client certificate asked; else one is required and verified against it */
} px_grpc_tls;

/* Reads --tls_cert_file, --tls_key_file and (may be NULL) --tls_ca_file and
 * checks them with OpenSSL (PEM, the key matches the certificate): 0, or a
 * negative code with why naming the flag and the file. Blocks on disk. */
int px_grpc_tls_load(px_grpc_tls *t, const char *cert_file, const char *key_file, const char *ca_file, char *why,
		     size_t n);
void px_grpc_tls_fini(px_grpc_tls *t);

/* Starts serving at ss (an address px_http_parse_listen accepted): one
 * acceptor thread, a thread per call. With bes, also the Build Event
 * Service (google.devtools.build.v1.PublishBuildEvent). With tls (may be
 * NULL: plaintext), TLS only (HTTP/2 over TLS, as Bazel's grpcs://). NULL
 * when it cannot listen. */
px_grpc *px_grpc_start(px_proxy *p, px_bes *bes, const struct sockaddr_storage *ss, const px_grpc_tls *tls);

/* The port it listens on (useful with port 0). */
unsigned px_grpc_port(const px_grpc *g);

/* Calls between their start and their end. */
int px_grpc_active(const px_grpc *g);

/* close: stops listening and taking new calls; calls in flight go on.
 * Does not block. */
void px_grpc_quiesce(px_grpc *g);

/* stop + free: cancels the calls left (px_close first, so none waits on the
 * upstream), waits for their threads and frees g. NULL is fine. */
void px_grpc_stop(px_grpc *g);

/* A ByteStream resource name: [INSTANCE/]blobs/HASH/SIZE (a read) or
 * [INSTANCE/]uploads/UUID/blobs/HASH/SIZE[/...] (upload): 0 with the hash
 * and size, -EINVAL for anything else (compressed-blobs included). */
int px_grpc_parse_resource(const char *name, bool upload, char hash[TF_HASH_HEX_LEN + 1], int64_t *size);

#define PX_BES_ID_MAX 128 /* a BES invocation id, used as a file name */

/* The request decoders of the gRPC front end, pure (fuzzed: fuzz_grpc_request). */

/* One ByteStream WriteRequest, read in place (data is not copied). */
typedef struct px_grpc_write {
	const char *name; /* not terminated: name_len; NULL if absent */
	size_t name_len;
	int64_t offset;
	bool finish;
	const uint8_t *data;
	size_t len;
} px_grpc_write;

/* 0 (1 is never returned), or -EBADMSG with why (static text). */
int px_grpc_parse_write(const uint8_t *buf, size_t len, px_grpc_write *w, const char **why);

/* One PublishBuildToolEventStreamRequest, read in place. */
typedef struct px_grpc_bes_event {
	char id[PX_BES_ID_MAX + 1]; /* ordered_build_event.stream_id.invocation_id */
	const uint8_t *stream_id;   /* sent back in the acknowledgement as it came */
	size_t stream_id_len;
	int64_t seq;
	const uint8_t *event; /* the bazel_event Any's value (a BuildEvent); len 0 if none */
	size_t event_len;
	bool finished; /* component_stream_finished */
} px_grpc_bes_event;

/* 0, or -EINVAL with why (names what is wrong; untrusted text escaped by
 * the caller's printing). */
int px_grpc_parse_bes(const uint8_t *m, size_t ml, px_grpc_bes_event *e, char *why, size_t n);

/* Checks a unary request as the server does before serving it (its method's
 * message, pw_check, then protobuf-c): 0, -ENOENT for a method the front
 * end does not serve as unary, -EINVAL with why. */
int px_grpc_check_unary(const char *method, const uint8_t *buf, size_t len, char *why, size_t n);
/* The i-th unary method's full name ("/package.Service/Method"); NULL past the last. */
const char *px_grpc_unary_method(size_t i);

/* ---- Build Event Service invocations (bes.c): one tf_session each ---- */

typedef struct px_pub px_pub;

typedef struct px_bes_options {
	/* Every invocation's session is made from a copy of it, with its own
	 * sinks (build_event_dir/<invocation id>.bin and .json, and pub), and a
	 * private store (a --store is held by the proxy's own session). Its
	 * callbacks get its user, as the proxy's own session's do. */
	const tf_session_options *session;
	const char *build_event_dir; /* may be NULL: no files */
	px_pub *pub;                 /* may be NULL: each gated event is published with its invocation id */
	/* An invocation whose stream has not finished, with no stream open,
	 * that sent no event for this long (since its last event or the close of
	 * its last stream) is ended with what completed (0: never). */
	int64_t idle_timeout_ms;
	/* An invocation's session ended (its stream finished, its fetches
	 * settled): its counters; status 0 or the session's error (why). On the
	 * session thread. */
	void (*on_done)(const char *invocation, const tf_session_stats *st, int status, const char *why, void *user);
	void (*on_problem)(const char *message, void *user); /* may be NULL */
	void *user;
} px_bes_options;

px_bes *px_bes_new(const px_bes_options *o, tf_error *err);

/* Frees b and every session left (not finished: see px_bes_finish). */
void px_bes_free(px_bes *b);

/* Readable when events were posted or an invocation's session has finished
 * work (its fetches): then call px_bes_run. */
int px_bes_fd(const px_bes *b);

/* Is id usable as an invocation id (a file name: letters, digits, - _ .)? */
bool px_bes_id_ok(const char *id, size_t len);

/* Any thread: the event numbered seq of invocation id (a serialized
 * build_event_stream.BuildEvent, copied; len may be 0 with finished) is
 * queued for its session; finished: the stream's last. 1 queued; 0 already
 * had (a retried stream's repeat: acknowledge it again); -EINVAL out of
 * order or a bad id, -ESHUTDOWN, -ENOMEM, with why. May wait while 64 MiB
 * of events are queued. */
int px_bes_post(px_bes *b, const char *id, int64_t seq, const void *event, size_t len, bool finished, char *why,
		size_t n);

/* Any thread: a stream of invocation id (one px_bes_post of it accepted)
 * opened (delta 1) or closed (-1): while one is open the invocation is not
 * idle, and its idle time counts from the last close. */
void px_bes_stream(px_bes *b, const char *id, int delta);

/* Any thread: the stream of invocation id broke after event seq (said
 * through on_problem; the session stays open for the client's retry). */
void px_bes_broken(px_bes *b, const char *id, int64_t seq);

/* Refuses further posts (-ESHUTDOWN) and wakes posters waiting for room. */
void px_bes_close(px_bes *b);

/* Session thread: feeds what was posted (making an invocation's session at
 * its first event), dispatches every open session, and ends those whose
 * stream finished once nothing is outstanding. Returns events fed. */
int px_bes_run(px_bes *b);

/* Session thread: an ActionResult that passed. With the invocation that
 * asked for it (a known id), recorded into that invocation's session (made
 * now if its first event is still queued); else (NULL, an unknown or ended
 * invocation) into every open invocation's session. */
void px_bes_record(px_bes *b, const char *invocation, const char *key, const void *data, size_t len);

/* Session thread: work not finished (queued events, fetches, held events,
 * finished streams not yet ended). */
uint64_t px_bes_outstanding(const px_bes *b);

/* Session thread: closes, feeds what is queued and ends every open session
 * (tf_session_finish: blocks until its fetches are done). */
void px_bes_finish(px_bes *b);

/* The proxy records every ActionResult that passes into b's sessions too. */
void px_set_bes(px_proxy *p, px_bes *b);

/* ---- the PUB socket (pub.c): one for the proxy's own session and every
 * BES invocation ---- */

/* Binds a nanomsg PUB socket at url. Each message is an invocation id, one
 * space, and a serialized gated BuildEvent. A send that fails for another
 * reason than a subscriber being behind is said once through on_problem
 * (may be NULL). NULL with err when it cannot bind. */
px_pub *px_pub_new(const char *url, void (*on_problem)(const char *message, void *user), void *user,
		   tf_error *err);

/* Waits briefly for nanomsg to hand over what it holds, closes, frees. NULL is fine. */
void px_pub_free(px_pub *p);

/* Publishes one event of invocation id. Never waits; any thread. */
void px_pub_event(px_pub *p, const char *id, const void *event, size_t len);

/* Publishes one event of the followed BEP, named by the uuid of the last
 * BuildStarted it carried (empty before one). One caller thread. */
void px_pub_followed(px_pub *p, const void *event, size_t len);

#endif
