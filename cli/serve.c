/* topfetch serve: the service for build tools that have no BEP of their own
 * (the loop and the protocol live in service/; this is flags and messages). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "service/service.h"

/* Each build: a line naming it, then the summary every command prints (on
 * stderr: the service's own log). */
static void on_build_done(const svc_build_report *r, void *user)
{
	cli_progress *p = user;
	cli_summary sum = { 0 };

	cli_eprintf("topfetch serve: build %llu %s (exit code %d)%s%s%s\n", (unsigned long long)r->build,
		    r->interrupted ? "ended because the service stopped" : "finished", r->exit_code,
		    r->lost_outputs ? "; the client was sent the actions to run again" : "", r->error ? "; error: " : "",
		    r->error ? r->message : "");
	cli_summary_from_session(&sum, &r->stats);
	sum.interrupted = r->interrupted;
	sum.seconds = r->seconds > 0 ? r->seconds : 1e-9;
	sum.exit_code = r->exit_code;
	cli_summary_print(p, stderr, &sum);
	cli_progress_fini(p); /* the next build's problems are its own */
	fflush(stderr);
}

int cmd_serve(int argc, char **argv)
{
	svc_options o = { 0 };
	cli_remote rem = CLI_REMOTE_INIT;
	int max_request = 0, rc, r;
	svc_service *svc = NULL;
	tf_error err = { 0 };
	cli_output out = { 0 };
	cli_progress progress = { 0 };

	tf_remote_options_init(&o.session.remote);
	const cli_flag flags[] = {
		{ "listen", CLI_STRING, &o.listen, "URL",
		  "Where build tools connect (nanomsg REQ/REP): ipc://PATH, whose folder must be yours alone "
		  "(created with mode 0700 if missing; one others can use is refused), or "
		  "tcp://127.0.0.1:PORT. Required." },
		CLI_REMOTE_FLAGS(&o.session.remote, &rem),
		{ "output_dir", CLI_STRING, &o.session.output_dir, "DIR",
		  "Where files land, at their exec-root-relative paths (bazel-out/...); created if missing. "
		  "Required." },
		{ "store", CLI_STRING, &o.session.store_path, "FILE",
		  "The metadata store (SQLite), kept across builds and restarts: outputs of earlier builds "
		  "are known and files already in place are not fetched again. Default: a private store "
		  "for each build." },
		{ "build_event_publish", CLI_STRING, &o.build_event_publish, "URL",
		  "Publish every build's events on a nanomsg PUB socket (ipc://PATH or tcp://127.0.0.1:PORT), "
		  "bound once for the life of the service; each TargetComplete only once its files are in "
		  "place." },
		{ "build_event_binary_file", CLI_STRING, &o.session.build_event_binary_file, "FILE",
		  "Write each build's events there (Bazel's binary BEP), rewritten at every BuildStarted." },
		{ "build_event_json_file", CLI_STRING, &o.session.build_event_json_file, "FILE",
		  "The same as JSON lines." },
		{ "max_request_size", CLI_INT, &max_request, "BYTES",
		  "Largest request accepted (default 67108864, 64 MiB); larger ones get an error reply, and "
		  "past twice this nanomsg drops the sender's connection." },
		{ "allow_non_loopback", CLI_BOOL, &o.allow_non_loopback, "",
		  "Accept tcp:// addresses other than 127.0.0.0/8 and [::1] for --listen and "
		  "--build_event_publish. Anyone who can reach --listen can make topfetch fetch into "
		  "--output_dir: only on a trusted network." },
		CLI_OUTPUT_FLAGS(&out),
	};
	const cli_command cmd = {
		.name = "serve",
		.usage = "topfetch serve --listen=URL --remote_cache=URL|DIR --output_dir=DIR [--store=FILE] [flags]",
		.summary =
			"A service for build tools that have no Build Event Protocol of their own (SCons, Pants\n"
			"style integrations). A client sends, over a nanomsg REQ socket, the messages of\n"
			"proto/topfetch_service.proto: BuildStarted (download mode, regexes, output groups,\n"
			"targets), ActionExecuted (action key and ActionResult, for every executed action),\n"
			"TargetCompleted (label and files), BuildFinished (exit code), Status. Every reply says\n"
			"what was decided and which outputs were lost, with the action keys to run again with the\n"
			"cache bypassed. Top-level files are fetched while the build runs, verified and written\n"
			"atomically; the events (Bazel's BEP, made up by the service) go to the PUB socket and\n"
			"files, each TargetComplete only once its files are in place. One build at a time;\n"
			"examples/serve_client.c is a client to start from.\n\n"
			"Runs until SIGINT or SIGTERM. Then it finishes an open build (waits for its fetches and\n"
			"ends its event stream; a second signal stops at once, leaving only complete files) and\n"
			"exits 0 if no build was open, 8 if one was. It exits 2 for bad flags or an address it\n"
			"refuses, 1 if the service itself fails while running. What happens to each build (lost\n"
			"files included) is told to its client and on stderr (a line and the summary every command\n"
			"prints), not in the exit code.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
		.remote = &rem,
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN || (rc = cli_progress_init(&progress, "serve", &out)) != CLI_RUN)
		goto out;
	if (!o.listen || !o.session.remote.remote_cache || !o.session.output_dir) {
		fprintf(stderr, "topfetch serve: --listen, --remote_cache and --output_dir are required.\n"
				"Run 'topfetch serve --help' for the flags.\n");
		rc = EXIT_USAGE;
		goto out;
	}
	if (max_request < 0) {
		fprintf(stderr, "topfetch serve: --max_request_size must be positive.\n");
		rc = EXIT_USAGE;
		goto out;
	}
	o.max_request_size = (size_t)max_request;
	rc = cli_remote_finish(cmd.name, &rem, &o.session.remote);
	if (rc != 0)
		goto out;
	o.on_build_done = on_build_done;
	o.user = &progress;

	svc = svc_new(&o, &err);
	if (!svc) {
		cli_eprintf("topfetch serve: %s\n", err.message);
		rc = EXIT_USAGE;
		goto out;
	}
	cli_install_signals();
	fprintf(stderr, "topfetch serve: listening on %s%s%s\n", o.listen,
		o.build_event_publish ? "; events on " : "", o.build_event_publish ? o.build_event_publish : "");
	fflush(stderr);
	rc = EXIT_ALL_OK;
	while (!cli_interrupted) {
		r = svc_step(svc, 250, &err);
		if (r < 0 && r != -EINTR) {
			cli_eprintf("topfetch serve: %s; stopping\n", err.message);
			rc = EXIT_SOME_FAILED;
			break;
		}
	}
	/* A second signal stops at once: files in place are complete, and the
	 * store and temporary files are recovered at the next start. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	if (svc_build_open(svc)) {
		fprintf(stderr, "topfetch serve: %s; finishing the open build first (signal again to stop at once)\n",
			cli_interrupted ? "stopping" : "failed");
		fflush(stderr);
	}
	if (svc_stop(svc) && rc == EXIT_ALL_OK)
		rc = EXIT_INTERRUPTED;
	if (cli_interrupted)
		fprintf(stderr, "topfetch serve: stopped (%s)\n", cli_interrupted == SIGINT ? "SIGINT" : "SIGTERM");
out:
	svc_free(svc);
	cli_progress_fini(&progress);
	cli_remote_free(&rem);
	return rc;
}
