/* topfetch proxy: flags and wiring. The proxy itself is library code
 * (proxy/: the wire-neutral core and its HTTP front end); this file parses
 * the flags, makes the session, runs the loop on the thread that owns the
 * session, and stops everything in order: close (stop accepting, let
 * requests in flight finish), stop (no more questions to the session, no
 * more upstream transfers, join the connection threads), then finish the
 * session and print the summary. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "proxy/proxy.h"

#define DRAIN_S 30     /* wait for requests in flight at shutdown */
#define BES_IDLE_S 600 /* --bes_idle_timeout's default: past Bazel's retries of a broken stream */

typedef struct run {
	px_proxy *px;
	px_bes *bes; /* BES invocations (with --listen=grpc://) */
	px_pub *pub; /* --build_event_publish: the proxy's session and every BES invocation */
	tf_session *s;
	cli_progress progress;
	bool session_failed;
	uint64_t last_sig;
	int worst; /* the worst exit code of the builds followed so far */
	unsigned foreign_said;
	const char *bep;
} run;

static int report(run *r, bool forced, int fr, const tf_session_stats *st, const tf_error *err);

static void say_listening(const char *scheme, const struct sockaddr_storage *ss, unsigned port, const char *up)
{
	char host[INET6_ADDRSTRLEN] = "?";
	bool v6 = ss->ss_family == AF_INET6;

	inet_ntop(ss->ss_family, v6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
				    : (const void *)&((const struct sockaddr_in *)ss)->sin_addr, host, sizeof(host));
	fprintf(stderr, "topfetch proxy: listening on %s://%s%s%s:%u, forwarding to %s\n", scheme, v6 ? "[" : "", host,
		v6 ? "]" : "", port, up);
	fflush(stderr);
}

/* Now, as Bazel's BuildStarted.start_time_millis counts (a build that started
 * before this is not ours to collect). */
static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_problem(const char *message, void *user)
{
	(void)user;
	cli_eprintf("%s\n", message); /* escaped, one stdio call: request threads print too */
}

static void on_lost(const tf_lost_output *l, void *user)
{
	run *r = user;

	px_note_lost(r->px, l->action_key);
	cli_report_lost(&r->progress, l,
			"lookups of that action now answer a cache miss, so the next build runs it again (a Bazel "
			"before 6.1 that holds the action in memory never asks: run `bazel shutdown` first)");
}

/* A gated event of the followed BEP, for the shared PUB socket. */
static void on_event(const void *event, size_t len, void *user)
{
	run *r = user;

	px_pub_followed(r->pub, event, len);
}

/* A build of the followed file ended: its summary, as one run's. */
static void on_build_done(const char *uuid, const tf_session_stats *st, int status, const char *why, void *user)
{
	run *r = user;
	tf_error err = { .code = status };
	int code;

	snprintf(err.message, sizeof(err.message), "%s", why ? why : "");
	cli_progress_clear(&r->progress);
	fprintf(stderr, "topfetch proxy: build %s ended\n", uuid);
	code = report(r, false, status, st, &err);
	cli_progress_fini(&r->progress); /* the next build's problems are its own */
	if (code > r->worst)
		r->worst = code;
	px_new_build(r->px); /* validation asks about each blob again in the next build */
}

static void progress_line(run *r)
{
	tf_session_stats st;
	px_counters c;
	uint64_t now = tf__now_ns(), sig;
	char bytes[32];

	tf_session_get_stats(r->s, &st);
	px_get_counters(r->px, &c);
	sig = c.requests * 1000003u + st.files_fetched * 7919u + st.files_present * 31u + st.lost * 17u +
	      st.failed * 13u + st.targets_completed * 11u + st.actions + st.bytes_in_flight * 3u;
	if (r->progress.quiet || now - r->progress.last_ns < (r->progress.tty ? 100000000ull : 5000000000ull) ||
	    sig == r->last_sig)
		return;
	r->progress.line_shown = r->progress.tty;
	r->last_sig = sig;
	r->progress.last_ns = now;
	cli_human_bytes((double)(st.bytes_fetched + st.bytes_in_flight), bytes, sizeof(bytes));
	fprintf(stderr,
		"%s[proxy] %llu requests (%llu AC hits, %llu misses, %llu answered lost); %llu actions; %llu of %llu "
		"files in place, %s fetched%s; %llu targets complete%s",
		r->progress.tty ? "\r\033[K" : "", (unsigned long long)c.requests, (unsigned long long)c.ac_hits,
		(unsigned long long)c.ac_misses, (unsigned long long)c.ac_lost, (unsigned long long)st.actions,
		(unsigned long long)(st.files_fetched + st.files_present), (unsigned long long)st.files_wanted, bytes,
		st.lost + st.failed ? ", with errors" : "", (unsigned long long)st.targets_completed,
		r->progress.tty ? "" : "\n");
	fflush(stderr);
}

/* One turn of the loop: wait for work (at most timeout_ms), answer the
 * request threads, let the session handle what finished (and read new BEP). */
static void main_turn(run *r, int timeout_ms)
{
	struct pollfd pf[3] = { { .fd = tf_session_fd(r->s), .events = POLLIN },
				{ .fd = px_fd(r->px), .events = POLLIN }, { .fd = r->bes ? px_bes_fd(r->bes) : -1, .events = POLLIN } };
	tf_error err = { 0 };

	poll(pf, 3, timeout_ms);
	px_run(r->px);
	if (r->bes)
		px_bes_run(r->bes);
	if (tf_session_foreign_builds(r->s) && !r->foreign_said++)
		cli_progress_error(&r->progress,
				   "topfetch proxy: another build uses this proxy (cache requests came while no build was "
				   "written to %s). It gets correct cache answers, but its artifacts are not collected: "
				   "only builds whose --build_event_binary_file is that file are. Run it after the "
				   "current build with that flag, or give it a proxy of its own.", r->bep);
	if (tf_session_dispatch(r->s, 0, &err) < 0) {
		if (!r->session_failed)
			cli_progress_error(&r->progress,
					   "topfetch proxy: %s (requests are still forwarded; nothing more is recorded)",
					   err.message);
		r->session_failed = true;
	}
}

/* Waits for the fetches already started and the TargetCompletes they hold
 * (a second signal abandons them): until the session has nothing
 * outstanding. */
static void wait_fetches(run *r)
{
	tf_error err = { 0 };

	while (!cli_interrupted && (tf_session_outstanding(r->s) > 0 || (r->bes && px_bes_outstanding(r->bes) > 0))) {
		if (r->bes)
			px_bes_run(r->bes);
		if (tf_session_dispatch(r->s, r->bes ? 20 : 100, &err) < 0)
			return;
		progress_line(r);
	}
}

static int report(run *r, bool forced, int fr, const tf_session_stats *st, const tf_error *err)
{
	cli_summary sum = { 0 };
	px_counters c;
	int code;

	px_get_counters(r->px, &c);
	if (forced)
		code = EXIT_INTERRUPTED;
	else if (fr < 0)
		code = cli_exit_for_error(fr);
	else
		code = st->lost || st->failed || st->files_unknown || st->conflicts || st->targets_failed ||
				       c.record_errors
			       ? EXIT_SOME_FAILED
			       : EXIT_ALL_OK;
	cli_summary_from_session(&sum, st);
	sum.interrupted = forced;
	sum.proxy = &c;
	sum.exit_code = code;
	code = cli_summary_print(&r->progress, stdout, &sum);
	if (st->files_unknown)
		fprintf(stderr,
			"topfetch proxy: %llu file%s of completed targets had no digest: no ActionResult that passed through "
			"the proxy (in this run or, with --store, an earlier one) names %s, and Bazel's output tree does "
			"not hold %s either (its file:// URI); the failed targets in the BEP name the files.\n",
			(unsigned long long)st->files_unknown, st->files_unknown == 1 ? "" : "s",
			st->files_unknown == 1 ? "it" : "them", st->files_unknown == 1 ? "it" : "them");
	if (!forced && fr < 0)
		cli_eprintf("topfetch proxy: %s\n", err->message);
	return code;
}

int cmd_proxy(int argc, char **argv)
{
	tf_session_options o = { 0 };
	px_options po = { .on_problem = on_problem };
	const char *listen = NULL, *glisten = NULL, *bep = NULL, *mode = NULL;
	cli_list regexes = { 0 }, groups = { 0 }, listens = { 0 };
	cli_remote rem = CLI_REMOTE_INIT;
	char why[PX_MESSAGE_MAX];
	bool listen_any = false, exit_after_build = false, forced = false, series;
	int header_timeout = (int)PX_HEADER_TIMEOUT_S, bes_idle = BES_IDLE_S;
	const char *publish = NULL, *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
	px_grpc_tls tls = { 0 };
	bool grpcs = false;
	struct sockaddr_storage ss, gss;
	px_http *http = NULL;
	px_grpc *grpc = NULL;
	tf_session_stats st = { 0 };
	tf_error err = { 0 };
	cli_output out = { 0 };
	run r = { 0 };
	int rc, fr = 0;

	tf_remote_options_init(&o.remote);
	po.validate = true;
	const cli_flag flags[] = {
		{ "listen", CLI_LIST, &listens, "[grpc[s]://]HOST:PORT",
		  "Where Bazel connects: HOST:PORT or http://HOST:PORT for its HTTP cache protocol (bazel "
		  "--remote_cache=http://HOST:PORT), grpc://HOST:PORT for REAPI over gRPC (--remote_cache=grpc://"
		  "HOST:PORT) and the Build Event Service (--bes_backend=grpc://HOST:PORT), grpcs://HOST:PORT for "
		  "the same over TLS (--tls_cert_file, --tls_key_file; Bazel's --remote_cache=grpcs://... with "
		  "--tls_certificate=CA); one HTTP and one gRPC listener may be given (the last of each kind "
		  "counts). Loopback only (127.0.0.1:PORT, [::1]:PORT, localhost:PORT) unless --listen_any; port 0 "
		  "picks a free one (printed). Required." },
		{ "tls_cert_file", CLI_STRING, &tls_cert, "FILE",
		  "With --listen=grpcs://: the server's certificate chain (PEM), as bazel-remote's flag." },
		{ "tls_key_file", CLI_STRING, &tls_key, "FILE",
		  "With --listen=grpcs://: the certificate's private key (PEM, unencrypted)." },
		{ "tls_ca_file", CLI_STRING, &tls_ca, "FILE",
		  "With --listen=grpcs://: require a client certificate signed by this CA (PEM) on every "
		  "connection (Bazel's --tls_client_certificate and --tls_client_key)." },
		{ "listen_any", CLI_BOOL, &listen_any, "",
		  "Allow a non-loopback --listen address. Whoever reaches it reads and writes the cache with your "
		  "credentials." },
		{ "header_timeout", CLI_DURATION, &header_timeout, "DURATION",
		  "A client connection whose request headers are not complete this long after it connected (or "
		  "after its request line) is closed, however slowly it sends bytes (default 30s)." },
		CLI_REMOTE_FLAGS(&o.remote, &rem),
		{ "output_dir", CLI_STRING, &o.output_dir, "DIR",
		  "Where wanted outputs go, at their exec-root-relative path (bazel-out/k8-fastbuild/bin/pkg/a.txt); "
		  "created if missing. Required." },
		{ "store", CLI_STRING, &o.store_path, "FILE",
		  "The metadata store (SQLite): every output of every ActionResult seen, and lost actions, kept "
		  "across runs (default: a private store removed at exit)." },
		{ "bep_follow", CLI_ONCE, &bep, "FILE",
		  "Follow the build's BEP as Bazel writes it (its --build_event_binary_file; it need not exist "
		  "yet): each TargetComplete makes its files top-level and they are fetched during the build. "
		  "Builds one after another each have their own session: a new BuildStarted uuid at the start of "
		  "the file (Bazel rewrites it per build) starts the next one; a build that started before the "
		  "proxy is never taken. Every session shares the store." },
		{ "exit_after_build", CLI_BOOL, &exit_after_build, "",
		  "With --bep_follow: wait for a build that started after the proxy, and stop on our own once its "
		  "BEP reached last_message and every fetch ended (for CI: start the proxy in the background, run "
		  "bazel, wait for the proxy)." },
		{ "build_event_dir", CLI_STRING, &o.build_event_dir, "DIR",
		  "With --bep_follow, and for each invocation Bazel streams with --bes_backend=grpc://<--listen>: "
		  "write each build's gated BEP as DIR/<invocation id>.bin and .json." },
		CLI_DOWNLOAD_MODE_FLAGS(&mode),
		{ "remote_download_regex", CLI_LIST, &regexes, "REGEX",
		  "Also fetch every output whose exec-root-relative path the regex matches as a whole "
		  "(PCRE2, as Bazel's Java regexes), whatever the mode; repeatable." },
		{ "output_groups", CLI_CSV, &groups, "[+|-]A,...",
		  "Output groups of a completed target whose files are wanted, as Bazel's flag (repeatable): "
		  "+A adds to and -A removes from the default (the groups each TargetComplete lists, hidden "
		  "'_' ones excepted); a name without + or - replaces the default." },
		{ "remote_validate_outputs", CLI_BOOL, &po.validate, "",
		  "On an action cache hit, check (HEAD) that every output blob, Tree and stdout/stderr it names is "
		  "still in the cache; if one is gone, answer a miss so the action runs again. On by default; "
		  "--noremote_validate_outputs turns it off." },
		{ "build_event_binary_file", CLI_STRING, &o.build_event_binary_file, "FILE",
		  "Write the followed BEP again, each TargetComplete only once its files are in place, with digest "
		  "and length filled in (each new build rewrites it)." },
		{ "build_event_json_file", CLI_STRING, &o.build_event_json_file, "FILE", "The same as JSON lines." },
		{ "build_event_publish", CLI_STRING, &publish, "URL",
		  "Publish every build's gated events on one nanomsg PUB socket (ipc://PATH or "
		  "tcp://127.0.0.1:PORT): the followed build's and each BES invocation's. Each message is the "
		  "build's invocation id (BuildStarted uuid), one space, then the serialized BuildEvent; "
		  "subscribe to \"<id> \" for one build, to \"\" for all." },
		{ "bes_idle_timeout", CLI_DURATION, &bes_idle, "DURATION",
		  "A BES invocation whose stream never finished, with no stream open and no event for this long, "
		  "is ended: its session finishes with what completed (its gated BEP without last_message; the "
		  "exit code says 3) and a later event of it is refused. 0 never ends one (default 10m, longer "
		  "than Bazel's retries of a broken stream)." },
		CLI_OUTPUT_FLAGS(&out),
	};
	const cli_command cmd = {
		.name = "proxy",
		.usage = "topfetch proxy --listen=[grpc[s]://]127.0.0.1:PORT --remote_cache=URL|DIR --output_dir=DIR\n"
			 "       [--bep_follow=FILE] [flags]",
		.summary =
			"Sits between Bazel and its HTTP cache: bazel build --remote_cache=http://127.0.0.1:PORT ...\n"
			"(--listen=grpc://127.0.0.1:PORT: its gRPC cache, --remote_cache=grpc://..., served as REAPI\n"
			"Capabilities, ActionCache, ContentAddressableStorage and ByteStream over the same core.)\n"
			"GET, HEAD and PUT on [/prefix]/ac/<sha256> and [/prefix]/cas/<sha256> are forwarded to\n"
			"--remote_cache (an HTTP cache, or a directory in Bazel's --disk_cache layout; the prefix\n"
			"is ignored, as bazel-remote does), bodies streamed both ways; a CAS upload whose bytes do\n"
			"not hash to its key is refused (400) and not stored. Every ActionResult that passes (an\n"
			"action cache hit, an accepted upload) is recorded; with --bep_follow each completed\n"
			"target's files are fetched into --output_dir while the build runs, verified and written\n"
			"atomically. When a wanted file is gone from the cache, the action that made it is marked\n"
			"lost (in --store too) and its next lookup answers a miss, so Bazel runs it again.\n"
			"Upstream misses (404, 204) answer 404; upstream failures 502 (504 on a timeout) with a\n"
			"text body naming the upstream URL (never its credentials). Forwarded requests are not\n"
			"retried (Bazel retries them); --remote_retries is for topfetch's own fetches.\n\n"
			"Stopping: SIGINT or SIGTERM is the normal way to stop the proxy. It stops accepting, lets\n"
			"requests in flight finish (up to 30 s), waits for the fetches already started, flushes the\n"
			"store and the BEP files, prints a summary line and exits with the code of the work: 0, 1,\n"
			"or 3 if the followed BEP ended without last_message (or was never created). A second\n"
			"signal abandons what is left and exits 8. --exit_after_build stops the same way on its\n"
			"own once the followed build ended.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
		.remote = &rem,
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN || (rc = cli_progress_init(&r.progress, "proxy", &out)) != CLI_RUN)
		goto out;
	rc = EXIT_USAGE;
	for (size_t i = 0; i < listens.n; i++) { /* the last of each kind counts */
		bool g = !strncmp(listens.items[i], "grpc://", 7), gs = !strncmp(listens.items[i], "grpcs://", 8);
		if (g || gs)
			grpcs = gs;
		*(g || gs ? &glisten : &listen) =
			listens.items[i] + (gs ? 8 : g || !strncmp(listens.items[i], "http://", 7) ? 7 : 0);
	}
	if ((!listen && !glisten) || !o.remote.remote_cache || !o.output_dir) {
		fprintf(stderr, "topfetch proxy: --listen, --remote_cache and --output_dir are required.\n"
				"Run 'topfetch proxy --help' for the flags.\n");
		goto out;
	}
	if (header_timeout <= 0 || header_timeout > 86400) {
		fprintf(stderr, "topfetch proxy: --header_timeout=%ds: want a duration from 1s to 1d.\n",
			header_timeout);
		goto out;
	}
	if (grpcs != (tls_cert || tls_key) || (tls_ca && !grpcs) || (grpcs && (!tls_cert || !tls_key))) {
		fprintf(stderr, "topfetch proxy: %s\n",
			grpcs ? "--listen=grpcs:// needs --tls_cert_file and --tls_key_file (the server's certificate and key)."
			      : "--tls_cert_file, --tls_key_file and --tls_ca_file are for a --listen=grpcs://HOST:PORT listener; "
				"there is none.");
		goto out;
	}
	if (grpcs && px_grpc_tls_load(&tls, tls_cert, tls_key, tls_ca, why, sizeof(why)) < 0) {
		cli_eprintf("topfetch proxy: %s\n", why);
		goto out;
	}
	if (bes_idle < 0) {
		fprintf(stderr, "topfetch proxy: --bes_idle_timeout=%ds: want a duration, 0 for none.\n", bes_idle);
		goto out;
	}
	if (exit_after_build && !bep) {
		fprintf(stderr, "topfetch proxy: --exit_after_build needs --bep_follow (the build whose end it waits for).\n");
		goto out;
	}
	if (mode && tf_download_mode_parse(mode, &o.policy.mode) < 0) {
		fprintf(stderr, "topfetch proxy: --remote_download_outputs=%s: want toplevel, all or minimal\n", mode);
		goto out;
	}
	if (cli_remote_finish(cmd.name, &rem, &o.remote) != 0)
		goto out;
	if ((listen && (px_http_parse_listen(listen, listen_any, &ss, why, sizeof(why)) < 0 ||
			cli_loops_back(o.remote.remote_cache, listen, why, sizeof(why)))) ||
	    (glisten && (px_http_parse_listen(glisten, listen_any, &gss, why, sizeof(why)) < 0 ||
			 cli_loops_back(o.remote.remote_cache, glisten, why, sizeof(why))))) {
		fprintf(stderr, "topfetch proxy: %s\n", why);
		goto out;
	}
	o.policy.regexes = regexes.items;
	o.policy.n_regexes = regexes.n;
	o.policy.output_groups = groups.items;
	o.policy.n_output_groups = groups.n;
	o.policy.listed_groups = true; /* Bazel's own default: the groups each TargetComplete lists */
	o.on_lost = on_lost;
	o.on_build_done = on_build_done;
	o.on_note = on_problem;
	o.user = &r;
	series = bep && strcmp(bep, "-") != 0;
	r.bep = bep;
	po.remote = &o.remote;

	r.px = px_new(&po, &err); /* before the session: it makes a missing disk cache directory */
	if (!r.px) {
		cli_eprintf("topfetch proxy: %s\n", err.message);
		goto out;
	}
	if (publish) { /* one socket for every session: the followed build's and each BES invocation's */
		if (!(r.pub = px_pub_new(publish, on_problem, &r, &err))) {
			cli_eprintf("topfetch proxy: %s\n", err.message);
			goto out;
		}
		o.on_event = on_event;
	}
	r.s = tf_session_new(&o, &err);
	if (!r.s || (series && tf_session_follow_builds(r.s, bep, wall_ms(), &err) < 0) ||
	    (bep && !series && tf_session_add_bep_file(r.s, bep, &err) < 0)) {
		cli_eprintf("topfetch proxy: %s\n", err.message);
		goto out;
	}
	px_set_session(r.px, r.s);
	if (glisten) { /* Bazel's --bes_backend=grpc://: a session per invocation */
		px_bes_options bo = { .session = &o, .build_event_dir = o.build_event_dir, .pub = r.pub,
				      .idle_timeout_ms = (int64_t)bes_idle * 1000, .on_done = on_build_done,
				      .on_problem = on_problem, .user = &r };
		if (!(r.bes = px_bes_new(&bo, &err))) {
			cli_eprintf("topfetch proxy: %s\n", err.message);
			goto out;
		}
		px_set_bes(r.px, r.bes);
	}
	cli_install_signals();
	r.progress.start_ns = tf__now_ns();
	if ((listen && !(http = px_http_start(r.px, &ss, (unsigned)header_timeout))) ||
	    (glisten && !(grpc = px_grpc_start(r.px, r.bes, &gss, grpcs ? &tls : NULL)))) {
		fprintf(stderr, "topfetch proxy: cannot listen on %s (in use, or not an address of this machine?)\n",
			listen && !http ? listen : glisten);
		goto out;
	}
	if (http)
		say_listening("http", &ss, px_http_port(http), px_upstream(r.px));
	if (grpc)
		say_listening(grpcs ? "grpcs" : "grpc", &gss, px_grpc_port(grpc), px_upstream(r.px));

	/* Serve until a signal, or (--exit_after_build) the followed build ended. */
	while (!cli_interrupted &&
	       !(exit_after_build && (r.session_failed || (series ? tf_session_builds_done(r.s) > 0
								   : tf_session_bep_complete(r.s))))) {
		main_turn(&r, 50);
		progress_line(&r);
	}
	cli_interrupted = 0;

	/* close: stop accepting, let requests in flight finish. */
	if (http)
		px_http_quiesce(http);
	if (grpc)
		px_grpc_quiesce(grpc);
	for (uint64_t end = tf__now_ns() + (uint64_t)DRAIN_S * 1000000000ull;
	     ((http && px_http_active(http) > 0) || (grpc && px_grpc_active(grpc) > 0)) && tf__now_ns() < end &&
	     !cli_interrupted;)
		main_turn(&r, 20);
	forced = cli_interrupted != 0;
	/* stop: requests still waiting wake with an error (BES streams waiting
	 * for queue room too); connection threads end. */
	px_close(r.px);
	if (r.bes)
		px_bes_close(r.bes);
	px_http_stop(http);
	px_grpc_stop(grpc);
	http = NULL;
	grpc = NULL;

	if (!forced) {
		wait_fetches(&r);
		forced = cli_interrupted != 0;
	}
	if (forced) {
		tf_session_get_stats(r.s, &st);
		cli_progress_clear(&r.progress);
		fprintf(stderr, "topfetch proxy: interrupted twice; fetches in flight abandoned (files already in place "
				"stay, nothing partial is left); held build events dropped\n");
	} else {
		if (r.bes)
			px_bes_finish(r.bes);
		fr = tf_session_finish(r.s, &st, &err);
		cli_progress_clear(&r.progress);
	}
	if (!series || forced)
		rc = report(&r, forced, fr, &st, &err);
	else if (fr < 0 && !tf_session_builds_done(r.s))
		rc = report(&r, false, fr, &st, &err);
	else if (!tf_session_builds_done(r.s)) {
		fprintf(stderr, "topfetch proxy: no build was followed: %s %s\n", bep,
			access(bep, F_OK) ? "was never created"
					  : "holds only a build that started before the proxy (the next build rewrites it)");
		rc = EXIT_BAD_INPUT;
	} else
		rc = r.worst;
	if (r.bes && r.worst > rc) /* an invocation streamed over BES that failed */
		rc = r.worst;
out:
	if (http || grpc) {
		px_close(r.px);
		if (r.bes)
			px_bes_close(r.bes);
		px_http_stop(http);
		px_grpc_stop(grpc);
	}
	px_free(r.px);
	px_bes_free(r.bes);
	tf_session_free(r.s);
	px_pub_free(r.pub); /* after every session that publishes on it */
	px_grpc_tls_fini(&tls);
	cli_progress_fini(&r.progress);
	cli_remote_free(&rem);
	cli_list_free(&listens);
	cli_list_free(&regexes);
	cli_list_free(&groups);
	return rc;
}
