#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define PROGRESS_TTY_NS (100 * 1000000ull)
#define PROGRESS_PLAIN_NS (5 * 1000000000ull)
#define MAX_ERROR_LINES 100

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

void cli_progress_init(cli_progress *p)
{
	memset(p, 0, sizeof(*p));
	p->tty = isatty(STDERR_FILENO) && getenv("TERM") && strcmp(getenv("TERM"), "dumb");
	p->start_ns = p->last_ns = tf__now_ns();
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

void cli_progress_update(cli_progress *p, const tf_downloader_stats *s, uint64_t total, bool force)
{
	uint64_t now = tf__now_ns();
	uint64_t done = s->files_ok + s->lost + s->corrupt + s->failed + s->local;
	double secs = (double)(now - p->start_ns) / 1e9;
	char bytes[32], rate[32];

	if (!force && now - p->last_ns < (p->tty ? PROGRESS_TTY_NS : PROGRESS_PLAIN_NS))
		return;
	p->last_ns = now;
	cli_human_bytes((double)s->bytes, bytes, sizeof(bytes));
	cli_human_bytes(secs > 0 ? (double)s->bytes / secs : 0, rate, sizeof(rate));
	fprintf(stderr, "%s[%llu / %llu files] %s fetched, %s/s%s%s", p->tty ? "\r\033[K" : "",
		(unsigned long long)done, (unsigned long long)total, bytes, rate,
		s->lost + s->corrupt + s->failed + s->local ? ", with errors" : "", p->tty ? "" : "\n");
	fflush(stderr);
}

void cli_progress_clear(cli_progress *p)
{
	if (p->tty)
		fputs("\r\033[K", stderr);
}

void cli_progress_error(cli_progress *p, const char *fmt, ...)
{
	va_list ap;

	if (++p->errors_printed > MAX_ERROR_LINES) {
		if (p->errors_printed == MAX_ERROR_LINES + 1)
			fprintf(stderr, "topfetch: more errors follow; only their count is shown in the summary\n");
		return;
	}
	cli_progress_clear(p);
	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
