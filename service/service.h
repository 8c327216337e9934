/* service/ — `topfetch serve`: the request/reply service for build tools
 * that have no BEP of their own (see README.md). Module prefix svc_. This
 * header is the folder's contract; `cli/serve.c` is its only user. Nothing
 * here prints: problems a client caused go back to the client in its Reply,
 * problems of the service itself come back as a negative errno-style code
 * plus a tf_error. Not thread-safe: one thread drives a service. */
#ifndef TF_SERVICE_H
#define TF_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "topfetch.h"

#define SVC_DEFAULT_MAX_REQUEST (64u << 20) /* bytes of one Request */
#define SVC_MAX_LOST_KEPT 10000u            /* lost outputs listed per build (the rest are counted) */
#define SVC_MAX_TARGET_FILES 1000000u       /* files of one TargetCompleted, all groups */
#define SVC_MAX_REGEXES 256                 /* BuildStarted.regexes */
#define SVC_MAX_GROUPS 256                  /* output groups of a policy or a target */
#define SVC_MAX_TARGETS 100000              /* BuildStarted.targets */

/* What the service reports when a build ends (for the caller's summary). */
typedef struct svc_build_report {
	uint64_t build;          /* counted from 1 */
	int exit_code;           /* what the build tool reported (8 when the service stopped it) */
	bool interrupted;        /* ended by svc_stop, not by a BuildFinished request */
	double seconds;          /* from BuildStarted to the end */
	tf_session_stats stats;
	uint64_t lost_outputs;   /* lost, corrupt, failed or local outputs reported */
	int error;               /* 0, or what tf_session_finish returned */
	const char *message;     /* error != 0: what went wrong; valid during the callback */
} svc_build_report;

typedef struct svc_options {
	/* The REP socket: ipc://PATH (its folder must be the caller's alone; it
	 * is created 0700 if missing), tcp://127.0.0.1:PORT or tcp://[::1]:PORT,
	 * or inproc://NAME (same process). Required. */
	const char *listen;
	/* Accept tcp:// addresses other than loopback (for listen and publish). */
	bool allow_non_loopback;
	/* Requests longer than this get an error reply (0: the default, 64 MiB).
	 * nanomsg itself drops the connection of a sender whose message is over
	 * twice this (so the service never holds more). */
	size_t max_request_size;
	/* A nanomsg PUB socket (bound once, for the life of the service) on which
	 * every build's events are published as the gate releases them. NULL:
	 * none. */
	const char *build_event_publish;
	/* Everything else of each build's session: remote, output_dir,
	 * store_path, build_event_binary_file, build_event_json_file (rewritten
	 * by every build). Its policy, build_event_publish, on_lost and user are
	 * the service's own and ignored. Copied (strings must outlive the
	 * service). */
	tf_session_options session;
	/* Called when a build ends, from svc_step or svc_stop. May be NULL. */
	void (*on_build_done)(const svc_build_report *r, void *user);
	void *user;
} svc_options;

typedef struct svc_service svc_service;

/* Checks the addresses (loopback unless allowed; the ipc folder's owner and
 * mode, creating it 0700 if missing), binds the REP socket and the PUB
 * socket. Returns NULL and fills err on failure (-EPERM for a folder others
 * can use or a non-loopback address, -EINVAL for a URL it does not take,
 * -EADDRINUSE, ...), naming the URL and what to do. Does not block. */
svc_service *svc_new(const svc_options *o, tf_error *err);

/* One round of the loop: waits up to timeout_ms (-1: until something
 * happens) for a request or finished session work, answers every request
 * that is ready, dispatches the open build's session and publishes the
 * events it released. A BuildFinished request is answered once its build's
 * fetches are done (later rounds). Returns 0, -EINTR when a signal cut the
 * wait short, or a negative code when the service itself cannot go on (its
 * socket failed); client mistakes are never errors here. */
int svc_step(svc_service *s, int timeout_ms, tf_error *err);

/* Ends the open build, if any, as the service stops: posts BuildFinished
 * (the client's exit code if it had asked to finish, else 8 INTERRUPTED),
 * waits for its fetches, flushes its events, answers a pending BuildFinished
 * request and reports the build. Blocks until the fetches end (each bounded
 * by --remote_timeout and --remote_retries). Returns 1 when a build was
 * open, 0 when none was. */
int svc_stop(svc_service *s);

/* A build is open (BuildStarted answered, BuildFinished not yet). */
bool svc_build_open(const svc_service *s);

/* Closes the sockets (giving the PUB socket a moment to hand over what it
 * has), frees the open build's session without finishing it (use svc_stop
 * first), removes the service's private files. Accepts NULL. */
void svc_free(svc_service *s);

/* ---- internals shared by the files of service/ ------------------------------ */

/* Checks a listen/publish URL: scheme, loopback, and for ipc:// (when
 * private_ipc) the folder, creating it 0700 when missing. */
int svc_check_url(const char *url, const char *what, bool allow_non_loopback, bool private_ipc,
		  tf_error *err);

#endif
