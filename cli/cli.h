/* cli/ — the topfetch program: subcommands, flags, progress and summary.
 * Uses the public API in include/topfetch.h, and core/ for the clock. */
#ifndef TF_CLI_H
#define TF_CLI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"
#include "topfetch.h"

/* Exit codes, documented in `topfetch --help` and README.md. */
enum {
	EXIT_ALL_OK = 0,     /* every wanted file is in place and verified */
	EXIT_SOME_FAILED = 1, /* some files were lost, corrupt, failed or could not be written */
	EXIT_USAGE = 2,      /* bad flags or configuration */
	EXIT_BAD_INPUT = 3,  /* malformed or incomplete input (manifest, BEP) */
	EXIT_INTERRUPTED = 8, /* SIGINT or SIGTERM, as Bazel */
};

/* CLI_ONCE: a string that names one thing (the BEP file to follow); given
 * twice it is an error, not "the last one wins". */
typedef enum cli_flag_kind { CLI_STRING, CLI_ONCE, CLI_INT, CLI_BOOL, CLI_LIST } cli_flag_kind;

/* A repeatable flag's values. */
typedef struct cli_list {
	const char **items;
	size_t n;
} cli_list;

typedef struct cli_flag {
	const char *name;  /* without the leading "--" */
	cli_flag_kind kind;
	void *target;      /* const char **, int *, bool * or cli_list * */
	const char *arg;   /* placeholder in --help, e.g. "URL|DIR" */
	const char *help;
} cli_flag;

typedef struct cli_command {
	const char *name;
	const char *usage;   /* "topfetch fetch --remote_cache ... " */
	const char *summary; /* a paragraph */
	const cli_flag *flags;
	size_t nflags;
} cli_command;

/* cli_parse's answer when the command should run. */
#define CLI_RUN (-1)

/* Parses Bazel-style flags (--name=value, --name value, --name / --noname
 * for booleans). Non-flag words go to positional (may be NULL: then they are
 * refused). Returns CLI_RUN, or the exit code to stop with: EXIT_ALL_OK once
 * --help was printed, EXIT_USAGE after printing what was wrong. */
int cli_parse(const cli_command *cmd, int argc, char **argv, cli_list *positional);

void cli_print_help(const cli_command *cmd, FILE *out);

/* Splits a comma-separated value (--output_groups=a,b, as Bazel takes it)
 * into out; the items point into *buf, which the caller frees after out. */
int cli_split_csv(const char *csv, cli_list *out, char **buf);
void cli_list_free(cli_list *l);

/* The flags every command that reads a cache takes, as Bazel names them. */
#define CLI_REMOTE_FLAGS(opts, headers)                                                                 \
	{ "remote_cache", CLI_STRING, &(opts)->remote_cache, "URL|DIR",                                \
	  "The cache: http(s)://[user:password@]host[:port][/prefix] (bazel-remote, nginx WebDAV), "    \
	  "grpc://host:port or grpcs://host:port (a REAPI v2 cache: ByteStream, ActionCache), or a "     \
	  "directory in Bazel's --disk_cache layout. Required. @FILE reads it from a file's first "     \
	  "line, env:NAME from a variable, so that no password sits in the command line." },            \
	{ "remote_header", CLI_LIST, (headers), "NAME=VALUE",                                         \
	  "Extra header (gRPC metadata on grpc caches) on every request; repeatable. Values are never " \
	  "printed. @FILE or env:NAME: the NAME=VALUE lines of a file or a variable." },                \
	{ "remote_instance_name", CLI_STRING, &(opts)->remote_instance_name, "NAME",                   \
	  "Instance name: a path prefix on HTTP caches, in every resource name and request on gRPC "    \
	  "caches." },                                                                                   \
	{ "remote_max_connections", CLI_INT, &(opts)->remote_max_connections, "N",                     \
	  "Transfers in flight at once (default 100)." },                                               \
	{ "remote_timeout", CLI_INT, &(opts)->remote_timeout_s, "SECONDS",                            \
	  "Limit for connecting and for silence while reading; not a deadline for a whole transfer " \
	  "(default 60)." },                                                                            \
	{ "remote_retries", CLI_INT, &(opts)->remote_retries, "N",                                     \
	  "Retries after network errors, timeouts, 5xx and gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, "      \
	  "ABORTED, DEADLINE_EXCEEDED, with exponential backoff (default 5)." },                        \
	{ "credential_helper", CLI_LIST, &cli_credential_helpers, "[SCOPE=]PATH",                      \
	  "A credential helper (Bazel's protocol: PATH get, {\"uri\": ...} in, {\"headers\": ...} out) " \
	  "for hosts in SCOPE (host or *.domain; none: every host); repeatable. Its headers go on "    \
	  "every request; they are never printed." },                                                   \
	{ "credential_helper_timeout", CLI_INT, &(opts)->credential_helper_timeout_s, "SECONDS",       \
	  "A helper that has not answered by then is stopped, and that is an error (default 10)." },  \
	{ "credential_helper_cache_duration", CLI_INT, &(opts)->credential_helper_cache_duration_s,   \
	  "SECONDS",                                                                                    \
	  "How long an answer without \"expires\" is used before the helper runs again (default "      \
	  "1800; 0: every request)." },                                                                \
	{ "tls_certificate", CLI_STRING, &(opts)->tls_certificate, "FILE",                            \
	  "CA certificates (PEM) to trust for https and grpcs caches." },                              \
	{ "tls_client_certificate", CLI_STRING, &(opts)->tls_client_certificate, "FILE",              \
	  "Client certificate (PEM) for mutual TLS." },                                                 \
	{ "tls_client_key", CLI_STRING, &(opts)->tls_client_key, "FILE",                              \
	  "Client key (PEM) for mutual TLS." }

/* ---- secrets.c: credentials that need not sit in argv ---- */

/* --credential_helper's values (CLI_REMOTE_FLAGS; one command per process). */
extern cli_list cli_credential_helpers;

typedef struct cli_secret {
	char *p;
	size_t len;
} cli_secret;
/* What was read from files and the environment (wiped when freed). */
typedef struct cli_secrets {
	cli_secret *owned;
	size_t n_owned;
} cli_secrets;

/* After cli_parse: --remote_cache=@FILE (its first line) or =env:NAME (the
 * variable) becomes the URL; each --remote_header=@FILE or =env:NAME becomes
 * the NAME=VALUE lines it holds ('#' comments and empty lines skipped), in
 * its place; then headers and the credential helpers go into o. Returns
 * CLI_RUN, or EXIT_USAGE after printing what was wrong (naming the file or
 * variable, never what it holds). */
int cli_secrets_apply(const char *cmd, tf_remote_options *o, cli_list *headers, cli_secrets *s);
void cli_secrets_free(cli_secrets *s);


/* Progress on stderr: a line redrawn in place on a terminal, a plain line
 * every few seconds otherwise. */
typedef struct cli_progress {
	bool tty;
	uint64_t start_ns, last_ns;
	int errors_printed;
} cli_progress;

void cli_progress_init(cli_progress *p);
/* Shows files done of total and bytes, at most every so often unless force. */
void cli_progress_update(cli_progress *p, const tf_downloader_stats *s, uint64_t total_files, bool force);
/* Clears the progress line (terminal) before other output. */
void cli_progress_clear(cli_progress *p);
/* Prints an error line for one file; after 100 of them, only counts. */
void cli_progress_error(cli_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Formats and prints with every control character (other than a tab and a
 * final newline) escaped as \xHH: names from a BEP, a cache or a manifest
 * can carry terminal escapes, and they never reach the terminal raw. */
void cli_vprint_safe(FILE *f, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void cli_eprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double cli_elapsed_s(const cli_progress *p);
/* "1.5 MiB" */
void cli_human_bytes(double bytes, char *out, size_t n);

/* ---- down.c: a cache that goes down is one message ---- */

/* True when this file failed because the cache does not answer
 * (TF_CACHE_DOWN) and that was said already: print nothing for it. */
bool cli_cache_down_fold(cli_progress *p, tf_result result, const char *message);
/* The count of the files folded, in one line (nothing when none). */
void cli_cache_down_report(cli_progress *p);

/* ---- report.c: the lines every command words alike ---- */

/* The exit code for a library error code (negative errno): EXIT_BAD_INPUT
 * for malformed or incomplete input (no last_message, bad bytes, a missing
 * input, a named-set cycle), EXIT_SOME_FAILED otherwise. */
int cli_exit_for_error(int code);
/* One line for a file that did not make it: result, path, digest, the
 * producing action and target when known, the reason, and (if not NULL and
 * an action is known) what follows from it. */
void cli_report_lost(cli_progress *p, const tf_lost_output *l, const char *consequence);
/* The progress line of a session (files wanted, in place, bytes). */
void cli_report_session_progress(cli_progress *p, const tf_session_stats *st, bool force);
/* The summary line of `fetch` and of `collect`, on stdout. */
void cli_report_fetch_summary(const cli_progress *p, const tf_downloader_stats *st, bool interrupted);
void cli_report_collect_summary(const cli_progress *p, const tf_session_stats *st);

/* Set by SIGINT/SIGTERM once cli_install_signals ran. */
extern volatile int cli_interrupted;
void cli_install_signals(void);

/* ---- manifest.c: the manifest of `fetch` (fuzz/ links it alone) ---- */

#define CLI_MANIFEST_LINE_MAX 8192
#define CLI_MANIFEST_ENTRIES_MAX 10000000

typedef struct cli_manifest_entry {
	tf_digest digest;
	bool executable;
	char *path;
	size_t line;
} cli_manifest_entry;

typedef struct cli_manifest {
	cli_manifest_entry *v; /* sorted by path, then line */
	size_t n, alloc;
} cli_manifest;

/* Reads every line of f ("HASH SIZE [x] PATH"; '#' starts a comment; empty
 * lines are skipped) into m, sorted by path. Each problem is printed to diag
 * naming `name` and the line; then -EINVAL (nothing is to be fetched). A
 * line over CLI_MANIFEST_LINE_MAX bytes is refused without being held in
 * memory. Two entries for one path with different digests or modes are an
 * error. */
int cli_manifest_read(FILE *f, const char *name, cli_manifest *m, FILE *diag);
void cli_manifest_free(cli_manifest *m);

int cmd_fetch(int argc, char **argv);
int cmd_collect(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
