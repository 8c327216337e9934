/* topfetch get: one verified blob (HASH/SIZE) to a file or standard output,
 * or one action cache entry (--action=HASH) as JSON. What `bb download` and
 * `remotetool` users reach for. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

/* Blobs up to this size go to standard output from memory; larger ones
 * through a private temporary folder. Either way not one byte is written
 * before the whole blob is verified. */
#define GET_MEMORY_MAX (64u * 1024 * 1024)
/* An action cache entry larger than this is not an ActionResult we take. */
#define GET_ACTION_MAX (64u * 1024 * 1024)

typedef struct run {
	cli_progress progress;
	bool done;
	tf_result result;
	bool empty;
	char *data; /* a read's bytes (copied out of the callback) */
	size_t len;
	bool oom;
} run;

static void on_done(const tf_fetch_done *d, void *user)
{
	run *r = user;

	r->done = true;
	r->result = d->result;
	r->empty = d->result == TF_RESULT_OK && d->digest.size == 0;
	if (d->result != TF_RESULT_OK) {
		cli_progress_problem(&r->progress, d->result, d->path ? d->path : "-", &d->digest, NULL, NULL,
				     d->message, NULL);
		return;
	}
	if (d->data || d->len == 0) {
		r->data = malloc(d->len + 1);
		if (!r->data) {
			r->oom = true;
			return;
		}
		if (d->len)
			memcpy(r->data, d->data, d->len);
		r->len = d->len;
	}
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* FILE (written beside it and renamed, so nobody sees half of it) or "-". */
static int put_bytes(const char *file, const char *p, size_t n)
{
	char *tmp;
	int fd, r;

	if (!strcmp(file, "-"))
		return write_all(STDOUT_FILENO, p, n);
	if (asprintf(&tmp, "%s.tftmp.%ld", file, (long)getpid()) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		free(tmp);
		return r;
	}
	r = write_all(fd, p, n);
	if (close(fd) < 0 && !r)
		r = -errno;
	if (!r && rename(tmp, file) < 0)
		r = -errno;
	if (r)
		unlink(tmp);
	free(tmp);
	return r;
}

/* Copies a verified file to standard output. */
static int copy_out(int dirfd, const char *name)
{
	char buf[1 << 16];
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), r = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if ((r = write_all(STDOUT_FILENO, buf, (size_t)n)) < 0)
			break;
	}
	close(fd);
	return r;
}

static void wait_done(tf_downloader *d, run *r, uint64_t total)
{
	tf_downloader_stats st;

	while (!r->done && !cli_interrupted) {
		tf_downloader_dispatch(d, 100);
		tf_downloader_get_stats(d, &st);
		cli_figures f = {
			.files_done = r->done,
			.files_total = 1,
			.bytes = (r->done ? total : 0) + st.bytes_in_flight,
			.bytes_total = total,
			.wire_bytes = st.bytes + st.bytes_in_flight,
			.errors = st.lost + st.corrupt + st.failed + st.local,
		};
		cli_progress_show(&r->progress, &f, false);
	}
}

/* Parses HASH/SIZE. */
static int parse_blob(const char *arg, tf_digest *dg)
{
	const char *slash = strchr(arg, '/');
	char hash[TF_HASH_HEX_LEN + 1], *end;
	long long size;
	tf_error err;

	if (!slash || slash - arg != TF_HASH_HEX_LEN)
		return -EINVAL;
	memcpy(hash, arg, TF_HASH_HEX_LEN);
	hash[TF_HASH_HEX_LEN] = '\0';
	errno = 0;
	size = strtoll(slash + 1, &end, 10);
	if (errno || end == slash + 1 || *end)
		return -EINVAL;
	return tf_digest_parse(hash, size, dg, &err);
}

int cmd_get(int argc, char **argv)
{
	tf_remote_options opts;
	const char *output = NULL, *action = NULL;
	cli_remote rem = CLI_REMOTE_INIT;
	cli_list positional = { 0 };
	cli_output out = { 0 };
	cli_summary sum = { 0 };
	tf_downloader_stats st;
	tf_downloader *d = NULL;
	tf_error err = { 0 };
	tf_digest dg = { 0 };
	char **args = NULL, *dir_buf = NULL, *leaf_buf = NULL, tmpdir[] = "/tmp/topfetch-get.XXXXXX";
	char *json = NULL;
	bool made_tmp = false;
	run r = { 0 };
	int rc, wr = 0, nargs = 0;

	tf_remote_options_init(&opts);
	const cli_flag flags[] = {
		CLI_REMOTE_FLAGS(&opts, &rem),
		{ "output", CLI_ONCE, &output, "FILE|-",
		  "Where the blob (or the JSON) goes: a file, written only once verified, or - for standard "
		  "output (the default). Also -o FILE." },
		{ "action", CLI_ONCE, &action, "HASH",
		  "Instead of a blob: the action cache entry of this action digest, printed as JSON (an "
		  "ActionResult in proto3 JSON form, checked as collect checks it)." },
		CLI_OUTPUT_FLAGS(&out),
	};
	const cli_command cmd = {
		.name = "get",
		.usage = "topfetch get --remote_cache=URL|DIR HASH/SIZE [-o FILE] | --action=HASH [-o FILE] [flags]",
		.summary =
			"Writes one blob of the cache, named by its SHA-256 and size (as Bazel and 'bb download'\n"
			"name it: HASH/SIZE), to a file or to standard output. Nothing is written before every\n"
			"byte is verified against the digest; a file is renamed into place. With --action=HASH it\n"
			"prints the ActionResult the action cache holds for that action digest as JSON instead.\n"
			"HTTP, gRPC and --disk_cache caches. The summary goes to standard error.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
		.remote = &rem,
	};

	/* -o FILE, as curl and remotetool users type it, is --output=FILE. */
	args = calloc((size_t)argc + 1, sizeof(*args));
	if (!args) {
		rc = EXIT_USAGE;
		goto out;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			args[nargs++] = (char *)"--output";
			args[nargs++] = argv[++i];
		} else {
			args[nargs++] = argv[i];
		}
	}
	rc = cli_parse(&cmd, nargs, args, &positional);
	if (rc != CLI_RUN || (rc = cli_progress_init(&r.progress, "get", &out)) != CLI_RUN)
		goto out;
	rc = EXIT_USAGE;
	if (!opts.remote_cache || (positional.n != 1 && !action) || (positional.n && action)) {
		fprintf(stderr, "topfetch get: --remote_cache (on the command line or in a .bazelrc) and either one "
				"HASH/SIZE or --action=HASH are required.\n"
				"Run 'topfetch get --help' for the flags.\n");
		goto out;
	}
	if ((rc = cli_remote_finish(cmd.name, &rem, &opts)) != 0)
		goto out;
	rc = EXIT_USAGE;
	if (!action && parse_blob(positional.items[0], &dg) < 0) {
		fprintf(stderr, "topfetch get: a blob is named HASH/SIZE: 64 lowercase hex digits of its SHA-256, "
				"a slash, and its size in bytes.\n");
		goto out;
	}
	if (action && !tf__is_sha256_hex(action, strlen(action))) {
		fprintf(stderr, "topfetch get: --action takes the action's digest: 64 lowercase hex digits.\n");
		goto out;
	}
	if (action)
		snprintf(dg.hash, sizeof(dg.hash), "%s", action);
	if (!output)
		output = "-";
	cli_install_signals();

	if (!action && strcmp(output, "-")) {
		/* To a file: the downloader verifies it and renames it into place. */
		if (!(dir_buf = strdup(output)) || !(leaf_buf = strdup(output)))
			goto out;
		d = tf_downloader_new(&opts, dirname(dir_buf), &err);
		if (!d) {
			cli_eprintf("topfetch get: %s\n", err.message);
			goto out;
		}
		r.progress.start_ns = tf__now_ns();
		if (tf_downloader_fetch(d, &dg, false, basename(leaf_buf), on_done, &r) < 0)
			goto out;
		wait_done(d, &r, (uint64_t)dg.size);
	} else if (!action && (uint64_t)dg.size > GET_MEMORY_MAX) {
		/* Large, to standard output: through a private folder. */
		if (!mkdtemp(tmpdir)) {
			fprintf(stderr, "topfetch get: cannot make a temporary folder in /tmp: %s\n", strerror(errno));
			goto out;
		}
		made_tmp = true;
		d = tf_downloader_new(&opts, tmpdir, &err);
		if (!d) {
			cli_eprintf("topfetch get: %s\n", err.message);
			goto out;
		}
		r.progress.start_ns = tf__now_ns();
		if (tf_downloader_fetch(d, &dg, false, "blob", on_done, &r) < 0)
			goto out;
		wait_done(d, &r, (uint64_t)dg.size);
		if (r.done && r.result == TF_RESULT_OK) {
			int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			wr = dfd < 0 ? -errno : copy_out(dfd, "blob");
			if (dfd >= 0)
				close(dfd);
		}
	} else {
		/* Small, or an action cache entry: a capped read into memory. */
		d = tf_downloader_new(&opts, NULL, &err);
		if (!d) {
			cli_eprintf("topfetch get: %s\n", err.message);
			goto out;
		}
		r.progress.start_ns = tf__now_ns();
		if (tf_downloader_read(d, action ? TF_AREA_AC : TF_AREA_CAS, dg.hash, action ? -1 : dg.size,
				       action ? GET_ACTION_MAX : dg.size ? (size_t)dg.size : 1, on_done, &r) < 0)
			goto out;
		wait_done(d, &r, action ? 0 : (uint64_t)dg.size);
		if (r.oom) {
			fprintf(stderr, "topfetch get: out of memory\n");
			rc = EXIT_SOME_FAILED;
			goto out;
		}
		if (r.done && r.result == TF_RESULT_OK && action) {
			int jr = tf_action_result_json(action, r.data, r.len, &json, &err);
			if (jr < 0) {
				cli_eprintf("topfetch get: %s\n", err.message);
				rc = EXIT_BAD_INPUT;
				goto out;
			}
			wr = put_bytes(output, json, strlen(json));
			if (!wr && !strcmp(output, "-"))
				wr = write_all(STDOUT_FILENO, "\n", 1);
		} else if (r.done && r.result == TF_RESULT_OK) {
			wr = put_bytes(output, r.data, r.len);
		}
	}
	if (wr < 0)
		cli_eprintf("topfetch get: cannot write %s: %s\n", strcmp(output, "-") ? output : "standard output",
			    strerror(-wr));
	tf_downloader_get_stats(d, &st);
	cli_summary_from_downloader(&sum, &st, r.empty);
	if (action || (!strcmp(output, "-") && (uint64_t)dg.size <= GET_MEMORY_MAX)) {
		/* A read into memory is no file request: this is the one file. */
		bool ok = r.done && r.result == TF_RESULT_OK;
		sum.wanted = 1;
		sum.fetched = ok && !r.empty;
		sum.empty = ok && r.empty;
	}
	sum.interrupted = cli_interrupted != 0;
	sum.exit_code = cli_interrupted ? EXIT_INTERRUPTED
		      : r.done && r.result == TF_RESULT_OK && wr == 0 ? EXIT_ALL_OK
								       : EXIT_SOME_FAILED;
	rc = cli_summary_print(&r.progress, stderr, &sum);
out:
	tf_downloader_free(d);
	if (made_tmp) {
		char path[sizeof(tmpdir) + 8];
		snprintf(path, sizeof(path), "%s/blob", tmpdir);
		unlink(path);
		rmdir(tmpdir);
	}
	cli_progress_fini(&r.progress);
	free(json);
	free(r.data);
	free(dir_buf);
	free(leaf_buf);
	free(args);
	cli_list_free(&positional);
	cli_remote_free(&rem);
	return rc;
}
