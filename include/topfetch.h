/* topfetch — build without the bytes.
 *
 * The public C API. Everything here is prefixed tf_; nothing else is exported.
 * Conventions (STYLE.md):
 *  - Functions that can fail return 0 or a negative errno-style code and, when
 *    given a tf_error, fill it with what failed, on which input and where.
 *  - The library never prints. Only the caller decides what to show.
 *  - _new/_free pair for heap objects; _free accepts NULL.
 *  - Each function's comment says who owns what and whether it blocks.
 */
#ifndef TOPFETCH_H
#define TOPFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TF_API __attribute__((visibility("default")))
#else
#define TF_API
#endif

/* ---- version -------------------------------------------------------------- */

/* The library's version ("0.1.0"), a static string. Does not block. */
TF_API const char *tf_version(void);

/* The git commit the library was built from: 12 hex digits, "-dirty" appended
 * when the tree had uncommitted changes, "unknown" when built outside git.
 * A static string. Does not block. */
TF_API const char *tf_version_commit(void);

/* ---- errors ------------------------------------------------------------- */

#define TF_ERROR_MESSAGE_MAX 1024

/* An error record: code is a negative errno-style value (0 = no error);
 * message is a complete sentence for a human, naming the input and offset. */
typedef struct tf_error {
	int code;
	char message[TF_ERROR_MESSAGE_MAX];
} tf_error;

/* ---- digests ------------------------------------------------------------ */

#define TF_HASH_HEX_LEN 64 /* SHA-256, lowercase hex */

typedef struct tf_digest {
	char hash[TF_HASH_HEX_LEN + 1]; /* NUL-terminated lowercase hex */
	int64_t size;
} tf_digest;

/* The SHA-256 of zero bytes: never requested from a cache. */
#define TF_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Parses "HASH" and SIZE into *out; rejects anything but 64 lowercase hex
 * digits and a size in [0, 2^53]. Does not block. */
TF_API int tf_digest_parse(const char *hash, int64_t size, tf_digest *out, tf_error *err);

/* ---- remote cache options (flag names as Bazel spells them) -------------- */

typedef struct tf_remote_options {
	/* --remote_cache: http(s)://[user:password@]host[:port][/prefix], or a
	 * directory in Bazel's --disk_cache layout (absolute or relative path, or
	 * file:// URL). Required. */
	const char *remote_cache;
	/* --remote_header=Name=Value, repeatable. Values are never logged. */
	const char *const *remote_headers;
	size_t n_remote_headers;
	/* --remote_instance_name: a path prefix on HTTP caches. */
	const char *remote_instance_name;
	int remote_max_connections; /* --remote_max_connections, default 100 */
	int remote_timeout_s;       /* --remote_timeout: connect and idle-read limit, default 60 */
	int remote_retries;         /* --remote_retries, default 5 */
	const char *tls_certificate;        /* --tls_certificate: CA bundle (PEM) */
	const char *tls_client_certificate; /* --tls_client_certificate (PEM) */
	const char *tls_client_key;         /* --tls_client_key (PEM) */
	/* --credential_helper=[SCOPE=]PATH, repeatable: Bazel's credential-helper
	 * protocol; the helper for the cache's host gives headers for every
	 * request (http and grpc). Its answers are never logged. */
	const char *const *credential_helpers;
	size_t n_credential_helpers;
	int credential_helper_timeout_s;        /* --credential_helper_timeout, default 10 */
	int credential_helper_cache_duration_s; /* --credential_helper_cache_duration: an answer
						   without "expires" is kept this long (default 1800;
						   0 not kept) */
	/* The netrc file (Basic auth for the cache's host when no URL user and no
	 * helper applies): NULL means $NETRC, else $HOME/.netrc, as Bazel; ""
	 * none. */
	const char *netrc;
	/* tf_downloader_new asks the cache once before any transfer (HEAD of a key
	 * nobody stores, or a connection) and fails when it cannot be reached or
	 * refuses the credentials. Default false. */
	bool check_at_start;
	/* --remote_http_version: the HTTP version for http(s) caches (topfetch's
	 * own flag; Bazel's HTTP cache client speaks HTTP/1.1 only). NULL or
	 * "2": HTTP/2 when a TLS server offers it by ALPN, HTTP/1.1 otherwise;
	 * "2-prior-knowledge": HTTP/2 from the first byte on cleartext too (h2c),
	 * ALPN over TLS; "1.1": HTTP/1.1 only. Many transfers share one HTTP/2
	 * connection as streams. grpc caches always speak HTTP/2 ("1.1" is
	 * refused there); disk caches ignore it. */
	const char *remote_http_version;
} tf_remote_options;

/* Fills *o with Bazel's defaults. Does not block. */
TF_API void tf_remote_options_init(tf_remote_options *o);

/* ---- downloader ------------------------------------------------------------ */

/* How a request ended. */
typedef enum tf_result {
	TF_RESULT_OK = 0,  /* file in place and verified */
	TF_RESULT_LOST,    /* the cache does not have the blob (404/204, or missing file) */
	TF_RESULT_CORRUPT, /* the cache sent bytes of the wrong hash or size, twice */
	TF_RESULT_FAILED,  /* network error or server error after all retries */
	TF_RESULT_LOCAL,   /* cannot write it here: bad destination path, disk full, permission */
} tf_result;

/* Human name of a result ("ok", "lost", "corrupt", "failed", "local"). */
TF_API const char *tf_result_name(tf_result r);

/* What the callback of one request receives. Pointers are valid only during
 * the callback. */
typedef struct tf_fetch_done {
	tf_result result;
	const char *path;      /* destination, relative to the output directory */
	tf_digest digest;
	bool transferred;      /* bytes came over the wire (or from the disk cache) for this request */
	bool already_present;  /* the file was already there with the right digest */
	int tries;             /* transfer attempts made for the blob */
	const char *message;   /* NULL when ok; otherwise what happened, naming the URL */
	const unsigned char *data; /* tf_downloader_read only: the bytes, when ok */
	size_t len;
} tf_fetch_done;

/* A TF_RESULT_FAILED message containing this phrase: no connection to the
 * cache could be made (refused, no such host); every other transfer will
 * most likely fail the same way, so a program may say it once. */
#define TF_CACHE_DOWN "the cache does not answer"

typedef void (*tf_fetch_cb)(const tf_fetch_done *done, void *user);

typedef struct tf_downloader tf_downloader;

typedef struct tf_downloader_stats {
	uint64_t requests;        /* fetch requests accepted */
	uint64_t files_ok;        /* of which in place and verified */
	uint64_t files_present;   /* of which already on disk with the right digest */
	uint64_t files_linked;    /* of which served by another request's transfer (dedup) */
	uint64_t lost, corrupt, failed, local;
	uint64_t transfers;       /* blobs transferred (each at most once) */
	uint64_t attempts;        /* transfer attempts, retries included */
	uint64_t bytes;           /* verified bytes received */
	/* Bytes received so far by transfers still running or being verified
	 * (not in `bytes` yet; a retried attempt's bytes leave it). Added last. */
	uint64_t bytes_in_flight;
} tf_downloader_stats;

/* Creates a downloader writing below output_dir (created if missing) and
 * starts its background transfer thread. opts is copied. Returns NULL and
 * fills err on failure. Blocks only to open the output directory. A NULL
 * output_dir makes a downloader for reads into memory only (a fetch then
 * ends TF_RESULT_LOCAL). */
TF_API tf_downloader *tf_downloader_new(const tf_remote_options *opts, const char *output_dir,
					tf_error *err);

/* Asks for blob `digest` to be placed at `path` (relative to the output
 * directory) with the given executable bit. The path is copied. Does not
 * block. Returns 0, or -EAGAIN when the request queue is full (dispatch
 * completions, then ask again), or -ESHUTDOWN after tf_downloader_free
 * began. Exactly one callback follows every accepted request, from
 * tf_downloader_dispatch in the caller's thread. */
TF_API int tf_downloader_fetch(tf_downloader *d, const tf_digest *digest, bool executable,
			       const char *path, tf_fetch_cb cb, void *user);

/* Which half of a cache a key lives in. */
typedef enum tf_area { TF_AREA_CAS = 0, TF_AREA_AC = 1 } tf_area;

/* Reads one entry into memory through the same engine (retries, timeouts,
 * typed results): a CAS blob (verified against hash and size) or an action
 * cache entry (size -1: unknown; not verifiable, its key names the action).
 * More than max_bytes is an error (corrupt). The callback gets the bytes in
 * done->data/len, valid during the callback. Does not block; -EINVAL for a
 * bad hash or size, -EAGAIN when the request queue is full, -ESHUTDOWN after
 * free began. Reads are not deduplicated. */
TF_API int tf_downloader_read(tf_downloader *d, tf_area area, const char *hash, int64_t size,
			      size_t max_bytes, tf_fetch_cb cb, void *user);

/* A file descriptor that becomes readable when completions are waiting, for
 * the caller's poll loop. Owned by the downloader. */
TF_API int tf_downloader_fd(const tf_downloader *d);

/* Runs the callbacks of finished requests in the caller's thread. Waits up to
 * timeout_ms (0 = do not wait, -1 = until one is ready) when none is ready.
 * Returns the number of callbacks run. */
TF_API int tf_downloader_dispatch(tf_downloader *d, int timeout_ms);

/* Requests accepted whose callback has not run yet. Does not block. */
TF_API size_t tf_downloader_outstanding(const tf_downloader *d);

/* Copies the counters so far. Does not block. */
TF_API void tf_downloader_get_stats(const tf_downloader *d, tf_downloader_stats *out);

/* Removes the temporary files (.tftmp.<pid>.<n>) that processes which no
 * longer exist (killed mid-transfer) left below output_dir, counting them
 * into *removed (may be NULL); those of live processes stay. Call it before
 * the first fetch. Blocks while it walks the folder. */
TF_API int tf_downloader_remove_dead_temporaries(tf_downloader *d, uint64_t *removed, tf_error *err);

/* Stops the transfer thread (cancelling what is in flight, removing its
 * temporary files) and frees everything. Callbacks of unfinished requests
 * are not run. Blocks until the thread has exited. Accepts NULL. */
TF_API void tf_downloader_free(tf_downloader *d);

/* An action cache entry (a serialized ActionResult of action_key, a SHA-256
 * hex; untrusted, borrowed) checked as a session checks it (paths relative
 * and normalised, digests well formed) and written in proto3 JSON form
 * (lowerCamelCase names, 64-bit integers as strings, bytes as base64) into
 * *out, a NUL-terminated string the caller frees. -EBADMSG (or the check's
 * code) with err naming the action and the output otherwise. Does not block. */
TF_API int tf_action_result_json(const char *action_key, const void *bytes, size_t len, char **out, tf_error *err);

/* ---- download policy (the RemoteOutputChecker's rules) ------------------------ */

/* --remote_download_outputs, as Bazel spells it. */
typedef enum tf_download_mode {
	TF_DOWNLOAD_TOPLEVEL = 0, /* outputs of top-level targets (the default) */
	TF_DOWNLOAD_ALL,          /* every output of every executed action */
	TF_DOWNLOAD_MINIMAL,      /* nothing but what --remote_download_regex asks for */
} tf_download_mode;

/* "toplevel", "all", "minimal" -> mode; -EINVAL otherwise. Does not block. */
TF_API int tf_download_mode_parse(const char *s, tf_download_mode *out);
TF_API const char *tf_download_mode_name(tf_download_mode m);

typedef struct tf_policy {
	tf_download_mode mode;
	/* --remote_download_regex: regexes (PCRE2, the closest to Bazel's Java
	 * ones) that must match the whole exec-root-relative path
	 * (bazel-out/k8-fastbuild/bin/pkg/a.txt), as Bazel; a match on a directory
	 * output fetches the whole tree. Fetched whatever the mode, output group
	 * or filter say. */
	const char *const *regexes;
	size_t n_regexes;
	/* --output_groups: the groups of a completed target whose files are
	 * wanted, with Bazel's forms: when every entry starts with + or -, they
	 * add to and remove from the default set (listed_groups, or {"default"});
	 * otherwise they name the groups. None given: the default set. */
	const char *const *output_groups;
	size_t n_output_groups;
	/* The requested top-level targets; none given means every target whose
	 * completion is reported. */
	const char *const *targets;
	size_t n_targets;
	/* Filters (PCRE2 regexes found anywhere in the exec-root-relative path):
	 * when given, only files of completed targets that match one are fetched.
	 * (topfetch collect's --output_filter.) */
	const char *const *filter_regexes;
	size_t n_filter_regexes;
	/* Every output group a completed target lists is wanted (Bazel lists
	 * the groups it was asked for: default, and those --output_groups
	 * added), except hidden ones (a name starting with '_') unless
	 * output_groups names them. Added last. */
	bool listed_groups;
} tf_policy;

/* ---- session: one build ------------------------------------------------------ */

/* A wanted output that could not be put in place. */
typedef struct tf_lost_output {
	tf_result result;       /* TF_RESULT_LOST, _CORRUPT, _FAILED or _LOCAL */
	const char *path;       /* exec-root-relative */
	tf_digest digest;
	const char *action_key; /* the action to run again, or NULL if unknown */
	const char *target;     /* its target label, or NULL if unknown */
	const char *message;
} tf_lost_output;

/* What a decision is about. */
typedef enum tf_decision_kind {
	TF_DECISION_FILE = 0,  /* an output file (or a file of a completed target) */
	TF_DECISION_DIRECTORY, /* a directory output: wanted means its whole tree */
	TF_DECISION_SYMLINK,   /* a symlink output: recorded, never fetched */
	TF_DECISION_TARGET,    /* a completed target as a whole (path NULL) */
} tf_decision_kind;

/* Why an output is wanted or not. */
typedef enum tf_decision_reason {
	TF_REASON_MODE_ALL = 0,      /* wanted: --remote_download_outputs=all */
	TF_REASON_REGEX,             /* wanted: a --remote_download_regex matches its path */
	TF_REASON_LATER,             /* not now: recorded; fetched only if a completed target names it */
	TF_REASON_NO_BYTES,          /* not fetched: a symlink carries no bytes */
	TF_REASON_TOPLEVEL,          /* wanted: a requested target completed and names it in a wanted group */
	TF_REASON_TARGET_NOT_WANTED, /* not wanted: mode minimal, the target is not requested, or it failed */
	TF_REASON_GROUP_NOT_WANTED,  /* not wanted: its output group is not in --output_groups */
	TF_REASON_FILTERED,          /* not wanted: it matches none of the filter regexes */
} tf_decision_reason;

/* One decision of the session. Pointers are valid only during the callback. */
typedef struct tf_decision {
	tf_decision_kind kind;
	const char *action_key; /* the executed action it is an output of; NULL for a completed target's file */
	const char *target;     /* the action's target label, or the completed target; may be NULL */
	const char *group;      /* a completed target's file: its output group; else NULL */
	const char *path;       /* exec-root-relative; NULL for TF_DECISION_TARGET */
	tf_digest digest;       /* files: the blob; directories: their Tree; empty (hash "") when unknown */
	bool executable;
	const char *symlink_target; /* symlinks */
	bool wanted;
	tf_decision_reason reason;
} tf_decision;

/* A name for a reason ("mode all", "regex", ...). Never NULL. */
TF_API const char *tf_decision_reason_name(tf_decision_reason r);

struct tf_session_stats;

typedef struct tf_session_options {
	tf_remote_options remote;
	/* Files land at output_dir/<exec-root-relative path>, as in Bazel's
	 * exec root (bazel-out/k8-fastbuild/bin/pkg/a.txt). Created if missing. */
	const char *output_dir;
	/* The metadata store (SQLite). NULL: a private store removed at free,
	 * so nothing is remembered between sessions. */
	const char *store_path;
	/* Files land at their short path (pkg/a.txt) instead of their
	 * exec-root-relative one; two different files for one short path are an
	 * error, never an overwrite. The store's record of local files then
	 * describes another folder (the exec root) and is not used here. */
	bool short_paths;
	tf_policy policy;
	/* Sinks for the gated event stream; each may be NULL. */
	const char *build_event_binary_file; /* --build_event_binary_file */
	const char *build_event_json_file;   /* --build_event_json_file */
	const char *build_event_publish;     /* nanomsg PUB URL, e.g. ipc:///tmp/x.ipc */
	/* Called (in the caller's thread) for every wanted output that could not
	 * be put in place. May be NULL. */
	void (*on_lost)(const tf_lost_output *lost, void *user);
	/* Called for every wanted file when it is settled (in place, or not; done
	 * is the downloader's record, its path the destination). May be NULL. */
	void (*on_file)(const tf_fetch_done *done, void *user);
	/* Called for every event the gate releases, in order, with the
	 * serialized BuildEvent (borrowed for the call). May be NULL. */
	void (*on_event)(const void *event, size_t len, void *user);
	void *user;
	/* Called (in the caller's thread, before the call that reported it
	 * returns) for every decision the session makes: for each output of an
	 * executed action (tf_session_action_executed) whether it is fetched now
	 * and why; for each completed target (TF_DECISION_TARGET) whether its
	 * files are wanted; and for each output file a completed target names
	 * whether it is wanted and why (once per output group naming it).
	 * So no front end has to apply the policy again. May be NULL; gets
	 * `user`. Added after the fields above: zero-initialise the options. */
	void (*on_decision)(const tf_decision *d, void *user);
	/* With tf_session_follow_builds: called (in the caller's thread) when a
	 * build of the followed file ended — its last event released and every
	 * fetch settled, or its file replaced before last_message. uuid is its
	 * BuildStarted uuid; stats are that build's counters; status is 0, or
	 * -ENODATA with why for a stream that ended without last_message, or
	 * the sink/store error. May be NULL; gets `user`. Added last. */
	void (*on_build_done)(const char *uuid, const struct tf_session_stats *stats, int status, const char *why,
			      void *user);
	/* With tf_session_follow_builds: also write each build's gated BEP as
	 * build_event_dir/<uuid>.bin and .json. May be NULL. */
	const char *build_event_dir;
	/* Notes for the user that are no error (a build in the followed file
	 * not taken, and why), one line each. May be NULL; gets `user`. */
	void (*on_note)(const char *message, void *user);
	/* Called (in the caller's thread) for every completed target that
	 * topfetch posts with success false because its files could not all be
	 * put in place (lost, corrupt, two digests for one path, a broken named
	 * set), as it is released: its label and why (the failure detail). May
	 * be NULL; gets `user`. */
	void (*on_target_failed)(const char *label, const char *why, void *user);
} tf_session_options;

typedef struct tf_session_stats {
	uint64_t actions;           /* executed actions reported */
	uint64_t outputs_injected;  /* outputs whose metadata was recorded (tree files included) */
	uint64_t files_wanted;      /* distinct outputs asked for */
	uint64_t files_fetched;     /* transferred */
	uint64_t files_present;     /* already on disk and unchanged */
	uint64_t bytes_fetched;
	uint64_t lost, failed;      /* lost = not in the cache; failed = corrupt, network, local */
	uint64_t targets_completed; /* TargetComplete events released */
	uint64_t targets_failed;    /* of which turned into success: false */
	uint64_t events_written;    /* events released to the sinks */
	uint64_t recovered;         /* fetches resumed from a previous run, stale temp files removed */
	uint64_t files_unknown;     /* wanted files with no digest anywhere (BEP, store, bytestream URI) */
	uint64_t conflicts;         /* different files for one short path (short_paths) */
	uint64_t bytes_in_flight;   /* received by fetches not settled yet (not in bytes_fetched) */
} tf_session_stats;

typedef struct tf_session tf_session;

/* Opens the store (recovering from a crash: stale temporary files removed,
 * pending fetches queued again, local files changed behind our back
 * forgotten), starts the downloader and opens the sinks. opts is copied.
 * Returns NULL and fills err on failure; -EBUSY when another process holds
 * the store. Blocks on disk I/O. */
TF_API tf_session *tf_session_new(const tf_session_options *opts, tf_error *err);

/* An action executed (cache hit, remote or local execution) and produced
 * action_result (a serialized REAPI ActionResult, borrowed). Every output's
 * metadata is recorded; outputs the policy wants now (mode all, a regex) are
 * fetched. target may be NULL. A malformed result is refused with an error
 * naming the action and nothing is recorded. Does not block on the network.
 * What it records is durable (committed to the store) before it returns
 * when it started a fetch or a Tree read; otherwise it may wait, for at most
 * TF_SESSION_UNCOMMITTED_MAX store writes, for the next commit: that of any
 * other call (tf_session_dispatch included), of an event released, or
 * tf_session_commit. A kill -9 can lose only those rows. */
TF_API int tf_session_action_executed(tf_session *s, const char *action_key, const char *target,
				      const void *action_result, size_t len, tf_error *err);

/* Store writes (an output's row, an action's row) that
 * tf_session_action_executed may leave uncommitted. */
#define TF_SESSION_UNCOMMITTED_MAX 10000u

/* Commits what the session recorded: call it before telling anybody outside
 * the process that an ActionResult was recorded (a reply, an answer to the
 * build tool). Blocks on disk I/O. */
TF_API int tf_session_commit(tf_session *s, tf_error *err);

/* The next build event of the stream (a serialized BuildEvent, borrowed).
 * NamedSetOfFiles are remembered; a TargetComplete makes its files
 * top-level: those not on disk are fetched, and the event is held until they
 * are (its named sets go first, with digest and length filled in); other
 * events pass through in order. Does not block on the network. */
TF_API int tf_session_build_event(tf_session *s, const void *event, size_t len, tf_error *err);

/* Follows a BEP file (Bazel's --build_event_binary_file, or "-" for
 * standard input) as it grows: every tf_session_dispatch reads what is new
 * and posts it as tf_session_build_event would. The file need not exist yet
 * (Bazel creates it when the build starts). One per session. Does not block. */
TF_API int tf_session_add_bep_file(tf_session *s, const char *path, tf_error *err);

/* Follows a BEP file across builds, one after another (a long-running
 * proxy): instead of tf_session_add_bep_file. A build is the stream that
 * begins with a BuildStarted event. A build the file held when this was
 * called, or later in that same file (inode), whose start time
 * (start_time_millis) is before not_before_ms (the follower's own start) is
 * never taken: it is an earlier build's; nor is one whose uuid was already
 * followed. A file created after this call is a new build whatever its
 * start time (a replayed recording). When the file is replaced or truncated
 * and begins with a new build, that build becomes the current one as soon
 * as the previous one ended (its fetches settled): each build gets fresh
 * event sinks (build_event_binary_file/json rewritten, build_event_dir/<uuid>
 * added), fresh counters and its own on_build_done; the store, and so
 * every output recorded in an earlier build, is shared. Does not block. */
TF_API int tf_session_follow_builds(tf_session *s, const char *path, int64_t not_before_ms, tf_error *err);

/* Builds of the followed file that ended (on_build_done was called). */
TF_API uint64_t tf_session_builds_done(const tf_session *s);

/* Times action results were reported (tf_session_action_executed) while no
 * build of the followed file was current, and no build showed up in it
 * within two seconds: another build (another workspace, or a Bazel writing
 * its BEP elsewhere) uses the same proxy. Its results are recorded in the
 * store, but no TargetComplete of it is ever seen, so its artifacts are not
 * collected. A result of such a build while a followed one is current
 * cannot be told apart. */
TF_API uint64_t tf_session_foreign_builds(const tf_session *s);

/* The followed BEP reached its last_message event. */
TF_API bool tf_session_bep_complete(const tf_session *s);

/* A file descriptor readable when work finished or the followed BEP file
 * was written to (or made), for the caller's poll loop; then call
 * tf_session_dispatch. */
TF_API int tf_session_fd(const tf_session *s);

/* Handles finished work (fetches, tree reads): records it, releases events.
 * Waits up to timeout_ms (-1: until something finished). Returns the number
 * of completions handled or a negative error. */
TF_API int tf_session_dispatch(tf_session *s, int timeout_ms, tf_error *err);

/* Ends the build: reads what is left of a followed BEP, waits for every
 * fetch, releases every held event (an incomplete stream's leftovers are
 * flushed in order), flushes the store and the sinks, and fills *stats (may
 * be NULL). Returns 0; -ENODATA when the followed BEP ended without
 * last_message (everything else still done); or the first sink, store or
 * input error. Blocks. */
TF_API int tf_session_finish(tf_session *s, tf_session_stats *stats, tf_error *err);

/* Work the session has not finished by itself: wanted files and Tree reads
 * in flight or queued, plus TargetComplete events held until their files are
 * settled. 0 means idle: nothing changes until more input arrives (events
 * that wait for input — a named set no completed target has referenced yet,
 * an event whose announcing event has not arrived — are not counted). Call
 * tf_session_dispatch until it is 0 to wait for what was asked so far. Does
 * not block. */
TF_API uint64_t tf_session_outstanding(const tf_session *s);

/* Copies the counters so far. Does not block. */
TF_API void tf_session_get_stats(const tf_session *s, tf_session_stats *out);

/* Is this action marked lost (a wanted output of it is gone from the cache)?
 * A proxy answers a cache miss for it so the build runs it again. */
TF_API bool tf_session_action_lost(tf_session *s, const char *action_key);

/* Stops transfers and frees everything; events still held are dropped.
 * Accepts NULL. Blocks until the transfer thread exits. */
TF_API void tf_session_free(tf_session *s);

/* ---- synthesized build events: a BEP for build tools that have none ------------- */

/* A build tool without a Build Event Protocol of its own reports its build
 * with these calls; the session makes the BuildEvents Bazel would have
 * posted and treats them exactly like a real BEP stream (tf_session_build_event):
 * the files of a completed target are fetched, its TargetComplete is held
 * until they are in place (success: false naming the file and the action if
 * one is lost), and the sinks receive a stream whose every event was
 * announced before it (Bazel's Progress chain) and whose last_message comes
 * last. Use them instead of, not together with, tf_session_build_event and
 * tf_session_add_bep_file. */

/* One output file of a completed target. */
typedef struct tf_output_file {
	/* Exec-root relative and normalised, with at least one folder:
	 * "bazel-out/k8-fastbuild/bin/pkg/a.txt" becomes path_prefix
	 * [bazel-out, k8-fastbuild, bin] and name "pkg/a.txt" as in Bazel's BEP;
	 * other paths keep their first folder as the prefix. The path of a
	 * directory output fetches its whole tree but appears in the named set
	 * as one File without a digest: list its files to have each described. */
	const char *path;
	/* Lowercase hex SHA-256, written into the named set as digest, with size
	 * as length. NULL: the store must know the path (an executed action
	 * reported it, in this build or an earlier one); the digest and length
	 * are then filled in from the store before the named set is released.
	 * When the store knows the path, its record is what is fetched. */
	const char *hash;
	int64_t size;
	/* The executable bit, for a file the store does not know yet (a file
	 * an executed action reported keeps the bit its ActionResult gave it). */
	bool executable;
} tf_output_file;

typedef struct tf_output_group {
	const char *name; /* "default", ...; only groups the policy wants are fetched */
	const tf_output_file *files;
	size_t n_files;
} tf_output_group;

/* Opens the synthesized stream: posts BuildStarted (a random uuid, the
 * start time, command "build"), announcing the Progress chain and
 * BuildFinished. Call it first, once per session. A session that called it
 * must call tf_session_build_finished before tf_session_free (the stream's
 * bookkeeping is kept outside the session until then). Does not block. */
TF_API int tf_session_build_started(tf_session *s, tf_error *err);

/* A top-level target completed with these output groups (borrowed; copied
 * before returning). Posts a Progress event announcing what follows, one
 * NamedSetOfFiles per non-empty group and the TargetComplete (success, its
 * groups naming their sets). Everything is checked before anything is
 * posted: a missing label, a bad path (absolute, "..", no folder), a bad
 * hash or size, a group given twice, more than 256 groups or 1,000,000
 * files, or a target (label, configuration, aspect) reported twice is
 * refused with an error naming the group, the file index and the path.
 * configuration_id and aspect may be NULL. Does not block on the network;
 * -EPROTO before tf_session_build_started. */
TF_API int tf_session_target_completed(tf_session *s, const char *label, const char *configuration_id,
				       const char *aspect, const tf_output_group *groups, size_t n_groups,
				       tf_error *err);

/* Closes the synthesized stream: posts BuildFinished (exit_code with Bazel's
 * name for it: 0 SUCCESS, 1 BUILD_FAILURE, 2 COMMAND_LINE_ERROR,
 * 3 TESTS_FAILED, 4 NO_TESTS_FOUND, 8 INTERRUPTED, else EXIT_CODE_<n>), the
 * last Progress and BuildToolLogs with last_message, which the gate releases
 * only after every other event. BuildFinished itself is not held: to have
 * it follow every TargetComplete, dispatch until tf_session_events_held is 0
 * first. Then call tf_session_finish. Does not block; -EPROTO before
 * tf_session_build_started. */
TF_API int tf_session_build_finished(tf_session *s, int exit_code, tf_error *err);

/* Events posted through the calls above that the gate still holds (the
 * TargetCompletes waiting for their files and the named sets they
 * reference); 0 outside tf_session_build_started .. _build_finished. Exact
 * when these calls are the session's only source of events. Does not block. */
TF_API uint64_t tf_session_events_held(const tf_session *s);

#ifdef __cplusplus
}
#endif
#endif
