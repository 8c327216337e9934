/* What the commands tell the user at the end and on the way: the line for a
 * file that did not make it, the session's progress line, the summary (as
 * text and as JSON), and the exit code for an error. One place, so every
 * command words them alike. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define SUMMARY_COLUMNS 99

int cli_exit_for_error(int code)
{
	switch (code) {
	case -ENODATA: /* the BEP ended without last_message */
	case -EBADMSG: /* malformed input */
	case -EMSGSIZE:
	case -ENOENT:  /* an input that is not there */
	case -ELOOP:   /* a named-set cycle */
		return EXIT_BAD_INPUT;
	default:
		return EXIT_SOME_FAILED;
	}
}

void cli_report_lost(cli_progress *p, const tf_lost_output *l, const char *consequence)
{
	cli_progress_problem(p, l->result, l->path, &l->digest, l->action_key, l->target, l->message,
			     l->action_key ? consequence : NULL);
}

void cli_report_session_progress(cli_progress *p, const tf_session_stats *st, bool force)
{
	/* The files wanted grow while the BEP is read: no total of bytes. */
	cli_figures f = {
		.files_done = st->files_fetched + st->files_present + st->lost + st->failed,
		.files_total = st->files_wanted,
		.bytes = st->bytes_fetched + st->bytes_in_flight,
		.wire_bytes = st->bytes_fetched + st->bytes_in_flight,
		.errors = st->lost + st->failed,
	};
	cli_progress_show(p, &f, force);
}

void cli_summary_from_downloader(cli_summary *s, const tf_downloader_stats *st, uint64_t empty)
{
	/* files_ok counts the present, the shared and the empty ones too. */
	uint64_t other = st->files_present + st->files_linked + empty;

	s->wanted = st->requests;
	s->fetched = st->files_ok > other ? st->files_ok - other : 0;
	s->present = st->files_present;
	s->shared = st->files_linked;
	s->empty = empty;
	s->lost = st->lost;
	s->corrupt = st->corrupt;
	s->failed = st->failed;
	s->local = st->local;
	s->bytes = st->bytes;
}

void cli_summary_from_session(cli_summary *s, const tf_session_stats *st)
{
	s->wanted = st->files_wanted + st->files_unknown;
	s->fetched = st->files_fetched;
	s->present = st->files_present;
	s->lost = st->lost;
	s->failed = st->failed; /* the session counts corrupt and local errors as failed */
	s->unknown = st->files_unknown;
	s->bytes = st->bytes_fetched;
	s->has_targets = true;
	s->targets = st->targets_completed;
	s->targets_failed = st->targets_failed;
	s->conflicts = st->conflicts;
	s->actions = st->actions;
}

/* ---- text: lines of at most SUMMARY_COLUMNS, wrapped between items ---- */

typedef struct lines {
	FILE *out;
	char line[512];
	size_t len;
} lines;

static void lines_start(lines *w, FILE *out)
{
	w->out = out;
	w->len = (size_t)snprintf(w->line, sizeof(w->line), "topfetch: ");
}

static void lines_end(lines *w)
{
	fprintf(w->out, "%.*s\n", (int)w->len, w->line);
	w->len = 0;
}

/* Appends sep and the item; when that passes the width, what sep has before
 * its spaces ends this line and the item starts the next, indented. */
static void lines_add(lines *w, const char *sep, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void lines_add(lines *w, const char *sep, const char *fmt, ...)
{
	char item[256];
	va_list ap;
	size_t n, sl = strlen(sep), keep = sl;

	va_start(ap, fmt);
	vsnprintf(item, sizeof(item), fmt, ap);
	va_end(ap);
	n = strlen(item);
	if (w->len + sl + n > SUMMARY_COLUMNS && w->len > 10) {
		while (keep && sep[keep - 1] == ' ')
			keep--;
		fprintf(w->out, "%.*s%.*s\n", (int)w->len, w->line, (int)keep, sep);
		w->len = (size_t)snprintf(w->line, sizeof(w->line), "  ");
		sep = "";
	}
	w->len += (size_t)snprintf(w->line + w->len, sizeof(w->line) - w->len, "%s%s", sep, item);
	if (w->len >= sizeof(w->line))
		w->len = sizeof(w->line) - 1;
}

static void print_text(const cli_progress *p, FILE *out, const cli_summary *s)
{
	uint64_t in_place = s->fetched + s->present + s->shared + s->empty;
	double secs = s->seconds > 0 ? s->seconds : cli_elapsed_s(p);
	char bytes[32], rate[32];
	lines w;

	cli_human_bytes((double)s->bytes, bytes, sizeof(bytes));
	cli_human_bytes(secs > 0 ? (double)s->bytes / secs : 0, rate, sizeof(rate));

	lines_start(&w, out);
	lines_add(&w, "", "%s%llu of %llu %s in place", s->interrupted ? "INTERRUPTED: " : "",
		  (unsigned long long)in_place, (unsigned long long)s->wanted, cli_plural(s->wanted, "file", "files"));
	lines_add(&w, " (", "%llu fetched", (unsigned long long)s->fetched);
	lines_add(&w, ", ", "%llu already present%s", (unsigned long long)s->present,
		  s->shared || s->empty ? "" : ")");
	if (s->shared)
		lines_add(&w, ", ", "%llu shared a blob%s", (unsigned long long)s->shared, s->empty ? "" : ")");
	if (s->empty)
		lines_add(&w, ", ", "%llu empty)", (unsigned long long)s->empty);
	lines_end(&w);

	lines_start(&w, out);
	lines_add(&w, "", "%llu lost", (unsigned long long)s->lost);
	if (s->has_targets) {
		lines_add(&w, ", ", "%llu failed", (unsigned long long)s->failed);
		lines_add(&w, ", ", "%llu without a digest", (unsigned long long)s->unknown);
	} else {
		lines_add(&w, ", ", "%llu corrupt", (unsigned long long)s->corrupt);
		lines_add(&w, ", ", "%llu failed", (unsigned long long)s->failed);
		lines_add(&w, ", ", "%llu local %s", (unsigned long long)s->local, cli_plural(s->local, "error", "errors"));
	}
	lines_add(&w, "; ", "%s fetched in %.2f s, %s/s", bytes, secs, rate);
	lines_end(&w);

	if (s->has_targets) {
		lines_start(&w, out);
		lines_add(&w, "", "%llu of %llu %s complete", (unsigned long long)(s->targets - s->targets_failed),
			  (unsigned long long)s->targets, cli_plural(s->targets, "target", "targets"));
		lines_add(&w, " (", "%llu failed", (unsigned long long)s->targets_failed);
		lines_add(&w, ", ", "%llu conflicting %s)", (unsigned long long)s->conflicts,
			  cli_plural(s->conflicts, "path", "paths"));
		if (s->proxy)
			lines_add(&w, "; ", "%llu %s recorded", (unsigned long long)s->actions,
				  cli_plural(s->actions, "action", "actions"));
		lines_end(&w);
	}
	if (s->proxy) {
		const px_counters *c = s->proxy;
		char down[32], up[32];

		cli_human_bytes((double)c->bytes_out, down, sizeof(down));
		cli_human_bytes((double)c->bytes_in, up, sizeof(up));
		lines_start(&w, out);
		lines_add(&w, "", "%llu %s", (unsigned long long)c->requests, cli_plural(c->requests, "request", "requests"));
		lines_add(&w, " (", "%llu AC hits", (unsigned long long)c->ac_hits);
		lines_add(&w, ", ", "%llu AC misses", (unsigned long long)c->ac_misses);
		lines_add(&w, ", ", "%llu answered lost", (unsigned long long)c->ac_lost);
		lines_add(&w, ", ", "%llu failed validation", (unsigned long long)c->ac_invalid);
		lines_add(&w, ", ", "%llu uploads", (unsigned long long)(c->ac_puts + c->cas_puts));
		lines_add(&w, ", ", "%llu refused", (unsigned long long)c->refused);
		lines_add(&w, ", ", "%llu upstream errors)", (unsigned long long)c->upstream_errors);
		lines_add(&w, "; ", "%s to Bazel, %s from it", down, up);
		lines_end(&w);
	}
	fflush(out);
}

/* ---- JSON ---- */

/* A JSON string (core's escaper). */
static void json_string(FILE *f, const char *s)
{
	tf__buf b;

	tf__buf_init(&b, 1u << 20);
	if (tf__buf_json_string(&b, s) == 0)
		fwrite(b.data, 1, b.len, f);
	else
		fputs("\"(too long)\"", f);
	tf__buf_fini(&b);
}

static void json_count(FILE *f, const char *name, uint64_t v, bool last)
{
	fprintf(f, "\"%s\": %llu%s", name, (unsigned long long)v, last ? "" : ", ");
}

static void print_json(const cli_progress *p, FILE *f, const cli_summary *s)
{
	uint64_t in_place = s->fetched + s->present + s->shared + s->empty;
	uint64_t not_in_place = s->lost + s->corrupt + s->failed + s->local + s->unknown;

	fprintf(f, "{\n  \"command\": ");
	json_string(f, p->command);
	fprintf(f, ",\n  \"version\": \"%s\",\n  \"exit_code\": %d,\n  \"interrupted\": %s,\n  \"seconds\": %.3f,\n",
		tf_version(), s->exit_code, s->interrupted ? "true" : "false",
		s->seconds > 0 ? s->seconds : cli_elapsed_s(p));
	fprintf(f, "  \"bytes_fetched\": %llu,\n  \"files\": {", (unsigned long long)s->bytes);
	json_count(f, "wanted", s->wanted, false);
	json_count(f, "in_place", in_place, false);
	json_count(f, "fetched", s->fetched, false);
	json_count(f, "already_present", s->present, false);
	json_count(f, "shared", s->shared, false);
	json_count(f, "empty", s->empty, false);
	json_count(f, "not_in_place", not_in_place, false);
	json_count(f, "lost", s->lost, false);
	json_count(f, "corrupt", s->corrupt, false);
	json_count(f, "failed", s->failed, false);
	json_count(f, "local", s->local, false);
	json_count(f, "without_digest", s->unknown, true);
	fputs("},\n", f);
	if (s->has_targets) {
		fputs("  \"targets\": {", f);
		json_count(f, "completed", s->targets, false);
		json_count(f, "successful", s->targets - s->targets_failed, false);
		json_count(f, "failed", s->targets_failed, false);
		json_count(f, "conflicting_paths", s->conflicts, false);
		json_count(f, "actions_recorded", s->actions, true);
		fputs("},\n", f);
	}
	if (s->proxy) {
		const px_counters *c = s->proxy;
		fputs("  \"proxy\": {", f);
		json_count(f, "requests", c->requests, false);
		json_count(f, "ac_hits", c->ac_hits, false);
		json_count(f, "ac_misses", c->ac_misses, false);
		json_count(f, "ac_answered_lost", c->ac_lost, false);
		json_count(f, "ac_failed_validation", c->ac_invalid, false);
		json_count(f, "uploads", c->ac_puts + c->cas_puts, false);
		json_count(f, "refused", c->refused, false);
		json_count(f, "upstream_errors", c->upstream_errors, false);
		json_count(f, "bytes_to_bazel", c->bytes_out, false);
		json_count(f, "bytes_from_bazel", c->bytes_in, true);
		fputs("},\n", f);
	}
	fprintf(f, "  \"problems_not_kept\": %llu,\n  \"problems\": [", (unsigned long long)p->problems_dropped);
	for (size_t i = 0; i < p->nproblems; i++) {
		const cli_problem *q = &p->problems[i];
		fprintf(f, "%s\n    {\"result\": \"%s\", \"path\": ", i ? "," : "", tf_result_name(q->result));
		json_string(f, q->path);
		fputs(", \"digest\": ", f);
		json_string(f, q->digest);
		fputs(", \"action\": ", f);
		json_string(f, q->action);
		fputs(", \"target\": ", f);
		json_string(f, q->target);
		fputs(", \"message\": ", f);
		json_string(f, q->message);
		fputc('}', f);
	}
	fputs(p->nproblems ? "\n  ]\n}\n" : "]\n}\n", f);
}

/* Written to a temporary file beside it and renamed: a CI tool never reads
 * half of it. */
static int write_json(const cli_progress *p, const cli_summary *s)
{
	size_t n = strlen(p->summary_json) + 32;
	char *tmp = malloc(n);
	FILE *f;
	int r = 0;

	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, n, "%s.tftmp.%ld", p->summary_json, (long)getpid());
	f = fopen(tmp, "w");
	if (!f) {
		r = -errno;
		free(tmp);
		return r;
	}
	print_json(p, f, s);
	if (ferror(f))
		r = -EIO;
	if (fclose(f) != 0 && !r)
		r = -errno;
	if (!r && rename(tmp, p->summary_json) < 0)
		r = -errno;
	if (r)
		unlink(tmp);
	free(tmp);
	return r;
}

int cli_summary_print(cli_progress *p, FILE *out, const cli_summary *s)
{
	int code = s->exit_code, r;

	cli_progress_clear(p);
	if (!p->quiet)
		print_text(p, out, s);
	if (p->summary_json && (r = write_json(p, s)) < 0) {
		cli_eprintf("topfetch %s: cannot write the JSON summary %s: %s\n", p->command, p->summary_json,
			    strerror(-r));
		if (code == EXIT_ALL_OK)
			code = EXIT_USAGE;
	}
	return code;
}
