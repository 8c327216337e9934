/* cli/ — the topfetch program: subcommands, flags, progress and summary.
 * Uses the public API in include/topfetch.h, and core/ for the clock. */
#ifndef TF_CLI_H
#define TF_CLI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"
#include "proxy/proxy.h"
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
 * twice it is an error, not "the last one wins". CLI_DURATION: Bazel's
 * durations (60s, 1m, 500ms, 2h, 1d, or a bare number of seconds) into an
 * int of whole seconds (rounded up; 0 stays 0). CLI_CSV: repeatable, each
 * value a comma-separated list (--output_groups). CLI_SETS: takes no value;
 * sets the const char * target to `arg` (Bazel's expansion flags, e.g.
 * --remote_download_minimal sets --remote_download_outputs=minimal). */
typedef enum cli_flag_kind {
	CLI_STRING,
	CLI_ONCE,
	CLI_INT,
	CLI_BOOL,
	CLI_LIST,
	CLI_DURATION,
	CLI_CSV,
	CLI_SETS,
} cli_flag_kind;

/* A repeatable flag's values (owned: the items are freed with the list). */
typedef struct cli_list {
	const char **items;
	size_t n;
	bool owned;
} cli_list;

typedef struct cli_flag {
	const char *name;  /* without the leading "--" */
	cli_flag_kind kind;
	void *target;      /* const char **, int *, bool * or cli_list * */
	const char *arg;   /* placeholder in --help, e.g. "URL|DIR"; CLI_SETS: the value set */
	const char *help;
} cli_flag;

typedef struct cli_command {
	const char *name;
	const char *usage;   /* "topfetch fetch --remote_cache ... " */
	const char *summary; /* a paragraph */
	const cli_flag *flags;
	size_t nflags;
	/* Set for a command with CLI_REMOTE_FLAGS: cli_parse reads the rc files. */
	struct cli_remote *remote;
} cli_command;

/* cli_parse's answer when the command should run. */
#define CLI_RUN (-1)

/* Parses Bazel-style flags (--name=value, --name value; booleans --name,
 * --noname, --name=true|false|yes|no|1|0 as Bazel's BooleanConverter).
 * Non-flag words go to positional (may be NULL: then they are refused). A
 * command with .remote set first takes the cache flags of the .bazelrc
 * files (bazelrc.c); the command line wins. Returns CLI_RUN, or
 * the exit code to stop with: EXIT_ALL_OK once --help was printed,
 * EXIT_USAGE after printing what was wrong. */
int cli_parse(const cli_command *cmd, int argc, char **argv, cli_list *positional);

void cli_print_help(const cli_command *cmd, FILE *out);

void cli_list_free(cli_list *l);

/* Bazel's converters, for one value: 0, or -EINVAL. */
int cli_parse_bool(const char *s, bool *out);
/* Into milliseconds; at most 30 days. */
int cli_parse_duration_ms(const char *s, int64_t *ms);

/* Applies one flag (name without "--", value or NULL) of cmd as the command
 * line would. where prefixes messages ("FILE:LINE: " for a bazelrc line;
 * "" for the command line). *used_next says whether `next` (the following
 * word, may be NULL) was taken as the value. Returns CLI_RUN, or EXIT_USAGE
 * after printing what was wrong; unknown flags are EXIT_USAGE too, unless
 * unknown_ok (then 1, nothing printed). */
int cli_apply_flag(const cli_command *cmd, const char *arg, const char *next, bool *used_next, const char *where,
		   bool unknown_ok);

/* ---- the remote flags (fetch, collect, proxy, serve) ---- */

/* ---- secrets.c: credentials that need not sit in argv ---- */

typedef struct cli_secret {
	char *p;
	size_t len;
} cli_secret;
/* What was read from files and the environment (wiped when freed). */
typedef struct cli_secrets {
	cli_secret *owned;
	size_t n_owned;
} cli_secrets;

void cli_secrets_free(cli_secrets *s);

/* Flag storage the remote options need beyond tf_remote_options. */
struct cli_remote {
	cli_list headers;       /* --remote_header */
	cli_list cache_headers; /* --remote_cache_header */
	cli_list bazelrc;       /* --bazelrc (read by cli_parse) */
	cli_list config;        /* --config */
	cli_list credential_helpers; /* --credential_helper */
	cli_secrets secrets;    /* what @FILE and env:NAME values held */
	bool home_rc, workspace_rc;
	char **merged; /* the headers handed to the library */
	size_t n_merged;
};
typedef struct cli_remote cli_remote;

#define CLI_REMOTE_INIT { .home_rc = true, .workspace_rc = true }

/* Completes o after cli_parse, as Bazel would: --remote_cache=@FILE (its
 * first line) or =env:NAME (the variable) becomes the URL, and each
 * --remote_header or --remote_cache_header =@FILE or =env:NAME becomes the
 * NAME=VALUE lines it holds ('#' comments and empty lines skipped), in its
 * place, so that no secret has to sit in argv (messages name the file or
 * variable, never what it holds); the credential helpers go into o;
 * --remote_header and
 * --remote_cache_header (NAME=VALUE) merged, values of one name
 * (case-insensitive) joined with ',' in the order given; the instance name
 * dropped for HTTP and disk caches (Bazel sends it only to gRPC caches);
 * --remote_max_connections=0 (no limit) made the library's ceiling; 0 for
 * --remote_timeout (no limit) one day. Returns 0, or EXIT_USAGE after
 * printing what was wrong. */
int cli_remote_finish(const char *cmd, cli_remote *r, tf_remote_options *o);
void cli_remote_free(cli_remote *r);
/* The @FILE and env:NAME part of cli_remote_finish (secrets.c). */
int cli_secrets_apply(const char *cmd, cli_remote *r, tf_remote_options *o);

/* Does the cache URL name the proxy's own --listen address (a .bazelrc
 * that points Bazel at the proxy, read by the proxy)? Then why says so. */
bool cli_loops_back(const char *url, const char *listen, char *why, size_t n);

/* The library's ceilings that Bazel's "0 = no limit" maps to. */
#define CLI_MAX_CONNECTIONS 10000
#define CLI_MAX_TIMEOUT_S 86400

/* ---- bazelrc.c: Bazel's rc files, for the remote flags ---- */

/* Is this a flag a .bazelrc may set for topfetch (one that names the cache:
 * --remote_* but not --remote_download_*, --tls_*, --credential_helper)? */
bool cli_rc_flag(const char *name, size_t len);
/* Reads the rc files as Bazel would for `build` (%workspace%/.bazelrc when
 * cwd is in a workspace, ~/.bazelrc, then each --bazelrc; /dev/null stops
 * the list) with import/try-import, and the `common`/`always`/`build` lines,
 * then those of each --config (NAME from r->config), applying the flags of
 * cmd that cli_rc_flag allows; other flags are Bazel's and skipped. Returns
 * CLI_RUN, or EXIT_USAGE after printing the file and line of what was
 * wrong. The values live until the program exits. */
int cli_rc_apply(const cli_command *cmd, const struct cli_remote *r);

/* The flags every command that reads a cache takes, as Bazel names them. */
#define CLI_REMOTE_FLAGS(opts, rem)                                                                     \
	{ "remote_cache", CLI_STRING, &(opts)->remote_cache, "URL|DIR",                                \
	  "The cache: http(s)://[user:password@]host[:port][/prefix] (bazel-remote, nginx WebDAV), "    \
	  "grpc://host:port or grpcs://host:port (a REAPI v2 cache: ByteStream, ActionCache), or a "     \
	  "directory in Bazel's --disk_cache layout. Required (here or in a .bazelrc). @FILE reads it "  \
	  "from a file's first line, env:NAME from a variable, so that no password sits in argv." },     \
	{ "remote_header", CLI_LIST, &(rem)->headers, "NAME=VALUE",                                    \
	  "Extra header (gRPC metadata on grpc caches) on every request; repeatable; values of one "    \
	  "name are joined with ',', as Bazel does. Values are never printed. @FILE or env:NAME: the "   \
	  "NAME=VALUE lines of a file or a variable." },                                                \
	{ "remote_cache_header", CLI_LIST, &(rem)->cache_headers, "NAME=VALUE",                        \
	  "The same, for cache requests (all of topfetch's); merged after --remote_header." },          \
	{ "remote_instance_name", CLI_STRING, &(opts)->remote_instance_name, "NAME",                   \
	  "Instance name in every resource name and request on gRPC caches. Ignored for HTTP and disk " \
	  "caches, as Bazel does (put a path prefix in the --remote_cache URL instead)." },             \
	{ "remote_max_connections", CLI_INT, &(opts)->remote_max_connections, "N",                     \
	  "Transfers in flight at once (default 100; 0: no limit, 10000 at most)." },                   \
	{ "remote_http_version", CLI_STRING, &(opts)->remote_http_version, "2|2-prior-knowledge|1.1",       \
	  "HTTP version for http(s) caches (not a Bazel flag): 2 (default) is HTTP/2 when the server "  \
	  "offers it by ALPN over TLS, else HTTP/1.1; 2-prior-knowledge also speaks HTTP/2 on cleartext " \
	  "http:// (h2c, as curl --http2-prior-knowledge); 1.1 never HTTP/2. With HTTP/2 the transfers " \
	  "share one connection as streams." },                                                         \
	{ "remote_timeout", CLI_DURATION, &(opts)->remote_timeout_s, "DURATION",                      \
	  "Limit for connecting and for silence while reading, not a deadline for a whole transfer: "  \
	  "60s, 1m, 500ms (rounded up to whole seconds), or bare seconds (default 60s; 0: no limit)." }, \
	{ "remote_retries", CLI_INT, &(opts)->remote_retries, "N",                                     \
	  "Retries after network errors, timeouts, 5xx and gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, "      \
	  "ABORTED, DEADLINE_EXCEEDED, with exponential backoff (default 5)." },                        \
	{ "credential_helper", CLI_LIST, &(rem)->credential_helpers, "[SCOPE=]PATH",                      \
	  "A credential helper (Bazel's protocol: PATH get, {\"uri\": ...} in, {\"headers\": ...} out) " \
	  "for hosts in SCOPE (host or *.domain; none: every host); repeatable. Its headers go on "    \
	  "every request; they are never printed." },                                                   \
	{ "credential_helper_timeout", CLI_DURATION, &(opts)->credential_helper_timeout_s, "DURATION", \
	  "A helper that has not answered by then is stopped, and that is an error (default 10s)." }, \
	{ "credential_helper_cache_duration", CLI_DURATION, &(opts)->credential_helper_cache_duration_s, \
	  "DURATION",                                                                                   \
	  "How long an answer without \"expires\" is used before the helper runs again (default "      \
	  "30m; 0: every request)." },                                                                 \
	{ "tls_certificate", CLI_STRING, &(opts)->tls_certificate, "FILE",                            \
	  "CA certificates (PEM) to trust for https and grpcs caches." },                              \
	{ "tls_client_certificate", CLI_STRING, &(opts)->tls_client_certificate, "FILE",              \
	  "Client certificate (PEM) for mutual TLS." },                                                 \
	{ "tls_client_key", CLI_STRING, &(opts)->tls_client_key, "FILE",                              \
	  "Client key (PEM) for mutual TLS." },                                                         \
	{ "bazelrc", CLI_LIST, &(rem)->bazelrc, "FILE",                                               \
	  "Also read this rc file after %workspace%/.bazelrc and ~/.bazelrc (repeatable; /dev/null "   \
	  "stops the list). The cache flags (--remote_* but not --remote_download_*, --tls_*) of "      \
	  "their common and build lines apply; flags on the command line win." },                       \
	{ "config", CLI_LIST, &(rem)->config, "NAME",                                                  \
	  "Also apply the build:NAME and common:NAME lines of the rc files; repeatable." },             \
	{ "home_rc", CLI_BOOL, &(rem)->home_rc, "",                                                    \
	  "Read ~/.bazelrc (default: yes, inside a Bazel workspace or with --bazelrc)." },             \
	{ "workspace_rc", CLI_BOOL, &(rem)->workspace_rc, "",                                          \
	  "Read the .bazelrc of the Bazel workspace around the current directory (default: yes)." }

/* --remote_download_outputs and Bazel's shorthands for it. */
#define CLI_DOWNLOAD_MODE_FLAGS(mode)                                                                    \
	{ "remote_download_outputs", CLI_STRING, (mode), "toplevel|all|minimal",                        \
	  "Which outputs to fetch: of top-level targets (default), of every action, or only what "      \
	  "--remote_download_regex asks for." },                                                        \
	{ "remote_download_toplevel", CLI_SETS, (mode), "toplevel", "--remote_download_outputs=toplevel." }, \
	{ "remote_download_minimal", CLI_SETS, (mode), "minimal", "--remote_download_outputs=minimal." }, \
	{ "remote_download_all", CLI_SETS, (mode), "all", "--remote_download_outputs=all." }

/* The output flags every command takes (--quiet, --color, --summary_json). */
typedef struct cli_output {
	bool quiet;
	const char *color;        /* auto|yes|no; NULL = auto */
	const char *summary_json; /* FILE: the summary's figures and every file not in place, as JSON */
} cli_output;

#define CLI_OUTPUT_FLAGS(out)                                                                            \
	{ "quiet", CLI_BOOL, &(out)->quiet, "",                                                          \
	  "No progress line and no summary; files not in place and errors are still printed." },        \
	{ "color", CLI_STRING, &(out)->color, "auto|yes|no",                                              \
	  "Colour the progress line and the problems: auto (default) on a terminal unless NO_COLOR is " \
	  "set." },                                                                                      \
	{ "summary_json", CLI_STRING, &(out)->summary_json, "FILE",                                       \
	  "Also write the summary's figures and every file not in place (result, path, digest, "         \
	  "action, target, reason) as one JSON object to FILE, for CI tools." }

/* A file that did not make it, kept for --summary_json. */
typedef struct cli_problem {
	tf_result result;
	char *path, *digest, *action, *target, *message;
} cli_problem;

#define CLI_PROBLEMS_MAX 1000000 /* kept for the JSON summary; past it only counted */

/* Progress and problems on stderr: a line redrawn in place on a terminal, a
 * plain line every few seconds otherwise (none with --quiet). */
typedef struct cli_progress {
	const char *command; /* "fetch", ... */
	bool tty, quiet, color;
	const char *summary_json;
	uint64_t start_ns, last_ns;
	int errors_printed;
	bool line_shown; /* a terminal line is on the screen */
	cli_problem *problems;
	size_t nproblems, problems_alloc;
	uint64_t problems_dropped;
} cli_progress;

/* What the progress line shows. */
typedef struct cli_figures {
	uint64_t files_done, files_total; /* settled (in place or not) of wanted */
	uint64_t bytes;                   /* done: files settled plus bytes received by transfers in flight */
	uint64_t bytes_total;             /* expected in all; 0 = not known (no percent, no ETA) */
	uint64_t wire_bytes;              /* received from the cache (in flight included): the rate */
	uint64_t errors;                  /* files not in place so far */
} cli_figures;

/* Starts the clock; checks --color (EXIT_USAGE after saying what is wrong)
 * and decides whether stderr is a terminal. o may be NULL (defaults).
 * Returns CLI_RUN. */
int cli_progress_init(cli_progress *p, const char *command, const cli_output *o);
/* Frees the problems kept. */
void cli_progress_fini(cli_progress *p);
/* Shows the figures, at most every 100 ms (terminal) or 5 s (otherwise)
 * unless force. */
void cli_progress_show(cli_progress *p, const cli_figures *f, bool force);
/* Clears the progress line (terminal) before other output. */
void cli_progress_clear(cli_progress *p);
/* Prints an error line; after 100 of them, only counts. */
void cli_progress_error(cli_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One file not in place: printed as "topfetch: RESULT: PATH (DIGEST)...: MESSAGE" (the result word
 * coloured with --color) and kept for --summary_json. Any of action, target, tail may be NULL. */
void cli_progress_problem(cli_progress *p, tf_result result, const char *path, const tf_digest *digest,
			  const char *action, const char *target, const char *message, const char *tail);
/* Formats and prints with every control character (other than a tab and a
 * final newline) escaped as \xHH: names from a BEP, a cache or a manifest
 * can carry terminal escapes, and they never reach the terminal raw. */
void cli_vprint_safe(FILE *f, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void cli_eprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double cli_elapsed_s(const cli_progress *p);
/* "1.5 MiB" */
void cli_human_bytes(double bytes, char *out, size_t n);
/* "3 files", "1 file": the count and the word in the right number. */
const char *cli_plural(uint64_t n, const char *one, const char *many);

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
/* The progress line of a session (files wanted, settled, bytes). */
void cli_report_session_progress(cli_progress *p, const tf_session_stats *st, bool force);

/* The figures of every command's summary. Files: wanted = in place
 * (fetched + present + shared + empty) + not in place (lost + corrupt +
 * failed + local + unknown). */
typedef struct cli_summary {
	bool interrupted;
	uint64_t wanted;
	uint64_t fetched; /* bytes came over the wire (or from the disk cache) */
	uint64_t present; /* already on disk with the right digest */
	uint64_t shared;  /* linked or copied from another file's transfer */
	uint64_t empty;   /* zero-length: written, never requested */
	uint64_t lost, corrupt, failed, local;
	uint64_t unknown; /* no digest anywhere (collect, proxy) */
	uint64_t bytes;
	bool has_targets; /* collect, proxy: a targets line */
	uint64_t targets, targets_failed, conflicts, actions;
	const px_counters *proxy; /* the proxy's requests line, or NULL */
	int exit_code;            /* written into the JSON */
	double seconds;           /* > 0: the run's duration (serve's build); else since the progress began */
} cli_summary;

/* The summary of fetch, get, collect or a proxy build: lines of at most
 * 99 columns to out (stdout; stderr for get), unless --quiet; and, with
 * --summary_json, the same figures and every problem kept as JSON (an
 * error writing it is printed and turns exit_code 0 into EXIT_USAGE,
 * returned). Returns the exit code to use. */
int cli_summary_print(cli_progress *p, FILE *out, const cli_summary *s);
/* A downloader's counters as a summary (fetch, get). */
void cli_summary_from_downloader(cli_summary *s, const tf_downloader_stats *st, uint64_t empty);
/* A session's counters as a summary (collect, proxy). */
void cli_summary_from_session(cli_summary *s, const tf_session_stats *st);

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
int cmd_get(int argc, char **argv);

#endif
