/* topfetch fetch: put the blobs a manifest names into a folder, verified. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

#define MANIFEST_LINE_MAX 8192
#define MANIFEST_ENTRIES_MAX 10000000

typedef struct entry {
	tf_digest digest;
	bool executable;
	char *path;
	size_t line;
} entry;

typedef struct manifest {
	entry *v;
	size_t n, alloc;
} manifest;

static void manifest_free(manifest *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
}

/* Parses "HASH SIZE [x] PATH". The path is the rest of the line. Returns 0,
 * or prints why the line is malformed and returns -EINVAL. */
static int parse_line(const char *name, size_t lineno, char *line, entry *e)
{
	char *hash = line, *size, *rest, *end;
	tf_error err = { 0 };
	long long sz;

	size = strchr(hash, ' ');
	if (!size)
		goto malformed;
	*size++ = '\0';
	rest = strchr(size, ' ');
	if (!rest)
		goto malformed;
	*rest++ = '\0';
	errno = 0;
	sz = strtoll(size, &end, 10);
	if (errno || end == size || *end || size[0] == '-' || size[0] == '+') {
		fprintf(stderr, "topfetch fetch: %s:%zu: size '%s' is not a whole number of bytes\n", name,
			lineno, size);
		return -EINVAL;
	}
	if (tf_digest_parse(hash, sz, &e->digest, &err) < 0) {
		fprintf(stderr, "topfetch fetch: %s:%zu: %s\n", name, lineno, err.message);
		return -EINVAL;
	}
	e->executable = false;
	if (rest[0] == 'x' && rest[1] == ' ') {
		e->executable = true;
		rest += 2;
	}
	if (!*rest)
		goto malformed;
	e->path = strdup(rest);
	e->line = lineno;
	return e->path ? 0 : -ENOMEM;
malformed:
	fprintf(stderr, "topfetch fetch: %s:%zu: expected 'HASH SIZE [x] PATH'\n", name, lineno);
	return -EINVAL;
}

static int by_path(const void *a, const void *b)
{
	const entry *x = a, *y = b;
	int c = strcmp(x->path, y->path);
	return c ? c : (x->line < y->line ? -1 : x->line > y->line);
}

/* Reads the whole manifest first, so that a malformed one fetches nothing. */
static int read_manifest(const char *name, manifest *m)
{
	FILE *f = strcmp(name, "-") ? fopen(name, "r") : stdin;
	char *line = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t len;
	int bad = 0;

	if (!f) {
		fprintf(stderr, "topfetch fetch: cannot read the manifest %s: %s\n", name, strerror(errno));
		return -errno;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		entry e;
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if (len > MANIFEST_LINE_MAX) {
			fprintf(stderr, "topfetch fetch: %s:%zu: line is %zd bytes long (limit %d)\n", name,
				lineno, len, MANIFEST_LINE_MAX);
			bad++;
			continue;
		}
		if ((size_t)strlen(line) != (size_t)len) {
			fprintf(stderr, "topfetch fetch: %s:%zu: line contains a NUL byte\n", name, lineno);
			bad++;
			continue;
		}
		if (parse_line(name, lineno, line, &e) < 0) {
			bad++;
			continue;
		}
		if (m->n == m->alloc) {
			size_t na = m->alloc ? m->alloc * 2 : 1024;
			entry *nv = na <= MANIFEST_ENTRIES_MAX ? realloc(m->v, na * sizeof(*nv)) : NULL;
			if (!nv) {
				fprintf(stderr, "topfetch fetch: %s: more than %d entries\n", name,
					MANIFEST_ENTRIES_MAX);
				free(e.path);
				bad++;
				break;
			}
			m->v = nv;
			m->alloc = na;
		}
		m->v[m->n++] = e;
	}
	if (ferror(f)) {
		fprintf(stderr, "topfetch fetch: error reading %s: %s\n", name, strerror(errno));
		bad++;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	if (bad)
		return -EINVAL;

	/* Two different blobs for one path would silently overwrite each other. */
	qsort(m->v, m->n, sizeof(*m->v), by_path);
	for (size_t i = 1; i < m->n; i++) {
		entry *a = &m->v[i - 1], *b = &m->v[i];
		if (strcmp(a->path, b->path))
			continue;
		if (strcmp(a->digest.hash, b->digest.hash) || a->executable != b->executable) {
			fprintf(stderr,
				"topfetch fetch: %s:%zu and line %zu both write '%s' with different contents or modes\n",
				name, a->line, b->line, a->path);
			bad++;
		}
	}
	return bad ? -EINVAL : 0;
}

typedef struct run {
	cli_progress progress;
} run;

static void on_done(const tf_fetch_done *d, void *user)
{
	run *r = user;
	if (d->result == TF_RESULT_OK)
		return;
	cli_progress_error(&r->progress, "topfetch: %s: %s (%s/%lld): %s", tf_result_name(d->result),
			   d->path, d->digest.hash, (long long)d->digest.size, d->message);
}

int cmd_fetch(int argc, char **argv)
{
	tf_remote_options opts;
	const char *output_dir = NULL, *manifest_path = NULL;
	cli_list headers = { 0 };
	tf_downloader_stats st;
	tf_downloader *d = NULL;
	tf_error err = { 0 };
	manifest m = { 0 };
	run r;
	int rc;

	tf_remote_options_init(&opts);
	const cli_flag flags[] = {
		CLI_REMOTE_FLAGS(&opts, &headers),
		{ "output_dir", CLI_STRING, &output_dir, "DIR",
		  "Where files go; created if missing. Nothing is written outside it. Required." },
		{ "manifest", CLI_STRING, &manifest_path, "FILE|-",
		  "Lines 'HASH SIZE [x] PATH' (x = executable; PATH relative to --output_dir; '#' starts a "
		  "comment). Required." },
	};
	const cli_command cmd = {
		.name = "fetch",
		.usage = "topfetch fetch --remote_cache=URL|DIR --output_dir=DIR --manifest=FILE [flags]",
		.summary =
			"Fetches the blobs a manifest lists from a Bazel remote cache (HTTP, gRPC or disk) into\n"
			"--output_dir, many at a time. Every file is verified against its SHA-256 and size and\n"
			"renamed into place only then; a blob wanted at several paths is fetched once; a file\n"
			"already in place with the right digest is not fetched again. Ends with one summary line.",
		.flags = flags,
		.nflags = sizeof(flags) / sizeof(flags[0]),
	};

	rc = cli_parse(&cmd, argc, argv, NULL);
	if (rc != CLI_RUN)
		goto out;
	opts.remote_headers = headers.items;
	opts.n_remote_headers = headers.n;
	if (!opts.remote_cache || !output_dir || !manifest_path) {
		fprintf(stderr, "topfetch fetch: --remote_cache, --output_dir and --manifest are required.\n"
				"Run 'topfetch fetch --help' for the flags.\n");
		rc = EXIT_USAGE;
		goto out;
	}
	if (read_manifest(manifest_path, &m) < 0) {
		fprintf(stderr, "topfetch fetch: the manifest is malformed; nothing was fetched.\n");
		rc = EXIT_BAD_INPUT;
		goto out;
	}
	d = tf_downloader_new(&opts, output_dir, &err);
	if (!d) {
		fprintf(stderr, "topfetch fetch: %s\n", err.message);
		rc = EXIT_USAGE;
		goto out;
	}
	cli_install_signals();
	cli_progress_init(&r.progress);
	for (size_t i = 0; i < m.n && !cli_interrupted; i++) {
		entry *e = &m.v[i];
		if (i > 0 && !strcmp(e->path, m.v[i - 1].path))
			continue; /* the same file listed twice */
		while ((rc = tf_downloader_fetch(d, &e->digest, e->executable, e->path, on_done, &r)) == -EAGAIN)
			tf_downloader_dispatch(d, 100);
		if (rc < 0) {
			fprintf(stderr, "topfetch fetch: cannot queue '%s': %s\n", e->path, strerror(-rc));
			break;
		}
		if ((i & 255) == 0)
			tf_downloader_dispatch(d, 0);
	}
	tf_downloader_get_stats(d, &st);
	while (tf_downloader_outstanding(d) > 0 && !cli_interrupted) {
		/* Take completions in batches: waking for each one costs a context
		 * switch that the transfer thread and nginx would rather have. */
		if (tf_downloader_dispatch(d, 100) > 0)
			nanosleep(&(struct timespec){ .tv_nsec = 2 * 1000 * 1000 }, NULL);
		tf_downloader_get_stats(d, &st);
		cli_progress_update(&r.progress, &st, st.requests, false);
	}
	tf_downloader_get_stats(d, &st);
	cli_progress_clear(&r.progress);
	cli_report_fetch_summary(&r.progress, &st, cli_interrupted != 0);
	if (cli_interrupted)
		rc = EXIT_INTERRUPTED;
	else
		rc = st.files_ok == st.requests ? EXIT_ALL_OK : EXIT_SOME_FAILED;
out:
	tf_downloader_free(d);
	manifest_free(&m);
	cli_list_free(&headers);
	return rc;
}
