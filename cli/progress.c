/* The progress line, the problem lines and the signals every command shares. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define PROGRESS_TTY_NS (100 * 1000000ull)
#define PROGRESS_PLAIN_NS (5 * 1000000000ull)
#define MAX_ERROR_LINES 100

#define COLOR_RED "\033[31m"
#define COLOR_YELLOW "\033[33m"
#define COLOR_OFF "\033[0m"

volatile int cli_interrupted;

static void on_signal(int sig)
{
	cli_interrupted = sig;
}

void cli_install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int cli_progress_init(cli_progress *p, const char *command, const cli_output *o)
{
	const char *term = getenv("TERM"), *no_color = getenv("NO_COLOR");
	const char *color = o && o->color ? o->color : "auto";

	memset(p, 0, sizeof(*p));
	p->command = command;
	p->tty = isatty(STDERR_FILENO) && term && strcmp(term, "dumb");
	p->quiet = o && o->quiet;
	p->summary_json = o ? o->summary_json : NULL;
	/* NO_COLOR (no-color.org): set and not empty turns colour off for auto. */
	if (!strcmp(color, "auto"))
		p->color = p->tty && !(no_color && *no_color);
	else if (!strcmp(color, "yes"))
		p->color = true;
	else if (strcmp(color, "no")) {
		fprintf(stderr, "topfetch %s: --color takes auto, yes or no.\nRun 'topfetch %s --help' for the flags.\n",
			command, command);
		return EXIT_USAGE;
	}
	p->start_ns = p->last_ns = tf__now_ns();
	return CLI_RUN;
}

void cli_progress_fini(cli_progress *p)
{
	for (size_t i = 0; i < p->nproblems; i++) {
		cli_problem *q = &p->problems[i];
		free(q->path);
		free(q->digest);
		free(q->action);
		free(q->target);
		free(q->message);
	}
	free(p->problems);
	p->problems = NULL;
	p->nproblems = p->problems_alloc = 0;
}

double cli_elapsed_s(const cli_progress *p)
{
	return (double)(tf__now_ns() - p->start_ns) / 1e9;
}

void cli_human_bytes(double b, char *out, size_t n)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;
	while (b >= 1024 && u < 4) {
		b /= 1024;
		u++;
	}
	snprintf(out, n, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

const char *cli_plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/* "7 s", "2m05s", "1h02m": as short as the duration allows. */
static void human_duration(double secs, char *out, size_t n)
{
	unsigned long long s = secs > 0 ? (unsigned long long)(secs + 0.5) : 0;

	if (s < 60)
		snprintf(out, n, "%llu s", s);
	else if (s < 3600)
		snprintf(out, n, "%llum%02llus", s / 60, s % 60);
	else
		snprintf(out, n, "%lluh%02llum", s / 3600, (s % 3600) / 60);
}

static int terminal_columns(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

void cli_progress_show(cli_progress *p, const cli_figures *f, bool force)
{
	uint64_t now = tf__now_ns();
	double secs = (double)(now - p->start_ns) / 1e9;
	double rate = secs > 0 ? (double)f->wire_bytes / secs : 0;
	char line[512], bytes[32], total[32], rt[32], el[32], eta[32];
	int k, cols;

	if (p->quiet || (!force && now - p->last_ns < (p->tty ? PROGRESS_TTY_NS : PROGRESS_PLAIN_NS)))
		return;
	p->last_ns = now;
	cli_human_bytes((double)f->bytes, bytes, sizeof(bytes));
	cli_human_bytes(rate, rt, sizeof(rt));
	human_duration(secs, el, sizeof(el));
	k = snprintf(line, sizeof(line), "[%llu / %llu %s] %s", (unsigned long long)f->files_done,
		     (unsigned long long)f->files_total, cli_plural(f->files_total, "file", "files"), bytes);
	if (f->bytes_total) {
		/* A blob shared by several files counts once in bytes, once per
		 * file in the total: the percent never passes 100. */
		uint64_t b = f->bytes < f->bytes_total ? f->bytes : f->bytes_total;
		cli_human_bytes((double)f->bytes_total, total, sizeof(total));
		k += snprintf(line + k, sizeof(line) - (size_t)k, " of %s (%d%%)", total,
			      (int)(100.0 * (double)b / (double)f->bytes_total));
	}
	k += snprintf(line + k, sizeof(line) - (size_t)k, ", %s/s, %s elapsed", rt, el);
	if (f->bytes_total && rate > 0 && f->bytes < f->bytes_total) {
		human_duration((double)(f->bytes_total - f->bytes) / rate, eta, sizeof(eta));
		k += snprintf(line + k, sizeof(line) - (size_t)k, ", ETA %s", eta);
	}
	/* (Every piece is short: the line never fills its buffer.) */
	if (k >= (int)sizeof(line))
		k = (int)sizeof(line) - 1;
	if (p->tty) {
		/* One line, redrawn: never wider than the terminal (a wrapped line
		 * cannot be taken back with \r). The error count follows, coloured. */
		char errs[64] = "";
		if (f->errors)
			snprintf(errs, sizeof(errs), ", %llu not in place", (unsigned long long)f->errors);
		cols = terminal_columns() - 1;
		if (k > cols)
			k = cols;
		if (k + (int)strlen(errs) > cols)
			errs[cols - k > 0 ? cols - k : 0] = '\0';
		fprintf(stderr, "\r\033[K%.*s%s%s%s", k, line, p->color && *errs ? COLOR_RED : "", errs,
			p->color && *errs ? COLOR_OFF : "");
		p->line_shown = true;
	} else {
		fprintf(stderr, "topfetch %s: %s", p->command, line);
		if (f->errors)
			fprintf(stderr, ", %llu not in place", (unsigned long long)f->errors);
		fputc('\n', stderr);
	}
	fflush(stderr);
}

void cli_progress_clear(cli_progress *p)
{
	if (p->tty && p->line_shown) {
		fputs("\r\033[K", stderr);
		p->line_shown = false;
	}
}

static bool error_line_allowed(cli_progress *p)
{
	if (++p->errors_printed > MAX_ERROR_LINES) {
		if (p->errors_printed == MAX_ERROR_LINES + 1)
			fprintf(stderr, "topfetch: more errors follow; only their count is shown in the summary\n");
		return false;
	}
	cli_progress_clear(p);
	return true;
}

void cli_progress_error(cli_progress *p, const char *fmt, ...)
{
	va_list ap;

	if (!error_line_allowed(p))
		return;
	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void keep_problem(cli_progress *p, tf_result result, const char *path, const char *digest,
			 const char *action, const char *target, const char *message)
{
	cli_problem *q;

	if (!p->summary_json)
		return;
	if (p->nproblems == p->problems_alloc) {
		size_t n = p->problems_alloc ? 2 * p->problems_alloc : 64;
		cli_problem *v;
		if (n > CLI_PROBLEMS_MAX)
			n = CLI_PROBLEMS_MAX;
		v = n > p->problems_alloc ? realloc(p->problems, n * sizeof(*v)) : NULL;
		if (!v) {
			p->problems_dropped++;
			return;
		}
		p->problems = v;
		p->problems_alloc = n;
	}
	q = &p->problems[p->nproblems];
	*q = (cli_problem){ .result = result,
			    .path = dup_or_null(path),
			    .digest = dup_or_null(digest),
			    .action = dup_or_null(action),
			    .target = dup_or_null(target),
			    .message = dup_or_null(message) };
	if ((path && !q->path) || (digest && !q->digest) || (message && !q->message)) {
		free(q->path);
		free(q->digest);
		free(q->action);
		free(q->target);
		free(q->message);
		p->problems_dropped++;
		return;
	}
	p->nproblems++;
}

void cli_progress_problem(cli_progress *p, tf_result result, const char *path, const tf_digest *digest,
			  const char *action, const char *target, const char *message, const char *tail)
{
	char dg[TF_HASH_HEX_LEN + 32] = "";
	bool warn = result == TF_RESULT_LOST;

	/* A file whose digest is not known (an over-cap Tree, say) has none to show. */
	if (digest && digest->hash[0])
		snprintf(dg, sizeof(dg), "%s/%lld", digest->hash, (long long)digest->size);
	keep_problem(p, result, path, dg[0] ? dg : NULL, action, target, message);
	/* A cache that went down: said once, the rest counted (down.c). */
	if (cli_cache_down_fold(p, result, message) || !error_line_allowed(p))
		return;
	/* The colour codes are ours; everything else goes through the escaper.
	 * One locked stretch: the proxy's request threads print too. */
	flockfile(stderr);
	fprintf(stderr, "topfetch: %s%s%s: ", p->color ? (warn ? COLOR_YELLOW : COLOR_RED) : "",
		tf_result_name(result), p->color ? COLOR_OFF : "");
	cli_eprintf("%s%s%s%s%s%s%s%s: %s%s%s\n", path, dg[0] ? " (" : "", dg, dg[0] ? ")" : "",
		    action ? ", produced by action " : "", action ? action : "", target ? " of " : "",
		    target ? target : "", message ? message : "", tail ? "; " : "", tail ? tail : "");
	funlockfile(stderr);
}
