#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

static const cli_flag *find(const cli_command *cmd, const char *name, size_t len, bool *negated)
{
	*negated = false;
	for (size_t i = 0; i < cmd->nflags; i++)
		if (strlen(cmd->flags[i].name) == len && !strncmp(cmd->flags[i].name, name, len))
			return &cmd->flags[i];
	if (len > 2 && !strncmp(name, "no", 2)) {
		for (size_t i = 0; i < cmd->nflags; i++)
			if (cmd->flags[i].kind == CLI_BOOL && strlen(cmd->flags[i].name) == len - 2 &&
			    !strncmp(cmd->flags[i].name, name + 2, len - 2)) {
				*negated = true;
				return &cmd->flags[i];
			}
	}
	return NULL;
}

static int list_push(cli_list *l, const char *v)
{
	const char **n = realloc(l->items, (l->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	l->items = n;
	l->items[l->n++] = v;
	return 0;
}

void cli_list_free(cli_list *l)
{
	for (size_t i = 0; l->owned && i < l->n; i++)
		free((char *)l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

static int usage_error(const cli_command *cmd, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int usage_error(const cli_command *cmd, const char *where, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "topfetch %s: ", cmd->name);
	cli_eprintf("%s", where);
	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'topfetch %s --help' for the flags.\n", cmd->name);
	return EXIT_USAGE;
}

int cli_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "1", "yes", "t", "y" }, *const no[] = { "false", "0", "no", "f", "n" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
			*out = !strcasecmp(s, yes[i]);
			return 0;
		}
	return -EINVAL;
}

/* Bazel's RemoteTimeoutConverter: a bare number is seconds; otherwise its
 * DurationConverter's ^([0-9]+)(d|h|m|s|ms)$. */
int cli_parse_duration_ms(const char *s, int64_t *ms)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = { { "", 1000 }, { "s", 1000 }, { "ms", 1 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 } };
	const int64_t max = 30LL * 86400000;
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(end, units[i].unit)) {
			if (v > (unsigned long long)(max / units[i].ms))
				return -ERANGE;
			*ms = (int64_t)v * units[i].ms;
			return 0;
		}
	return -EINVAL;
}

static int push_csv(cli_list *l, const char *csv)
{
	l->owned = true;
	for (const char *p = csv;;) {
		size_t n = strcspn(p, ",");
		char *item;
		if (n) {
			if (!(item = strndup(p, n)))
				return -ENOMEM;
			if (list_push(l, item) < 0) {
				free(item);
				return -ENOMEM;
			}
		}
		if (!p[n])
			return 0;
		p += n + 1;
	}
}

int cli_apply_flag(const cli_command *cmd, const char *arg, const char *next, bool *used_next, const char *where,
		   bool unknown_ok)
{
	const char *name = arg + 2, *eq = strchr(name, '='), *val = NULL;
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	bool negated;
	const cli_flag *f = find(cmd, name, len, &negated);

	*used_next = false;
	/* Messages name the flag, never its value (it may be a password). */
	if (!f) {
		if (unknown_ok)
			return 1;
		return usage_error(cmd, where, "unknown flag '--%.*s'", (int)len, name);
	}
	if (f->kind == CLI_BOOL) {
		bool v = !negated;
		if (eq && (negated || cli_parse_bool(eq + 1, &v) < 0))
			return usage_error(cmd, where, "flag '--%s' takes true or false (yes/no, 1/0), or --no%s",
					   f->name, f->name);
		*(bool *)f->target = v;
		return CLI_RUN;
	}
	if (negated)
		return unknown_ok ? 1 : usage_error(cmd, where, "unknown flag '--no%s'", f->name);
	if (f->kind == CLI_SETS) {
		if (eq)
			return usage_error(cmd, where, "flag '--%s' takes no value", f->name);
		*(const char **)f->target = f->arg;
		return CLI_RUN;
	}
	if (eq)
		val = eq + 1;
	else if (next) {
		val = next;
		*used_next = true;
	} else
		return usage_error(cmd, where, "flag '--%s' needs a value (%s)", f->name, f->arg);
	switch (f->kind) {
	case CLI_ONCE:
		if (*(const char **)f->target)
			return usage_error(cmd, where, "flag '--%s' was given twice; it names one %s, so say which one",
					   f->name, f->arg);
		/* fall through */
	case CLI_STRING:
		*(const char **)f->target = val;
		break;
	case CLI_LIST:
		if (list_push(f->target, val) < 0)
			return EXIT_USAGE;
		break;
	case CLI_CSV:
		if (push_csv(f->target, val) < 0)
			return usage_error(cmd, where, "out of memory");
		break;
	case CLI_INT: {
		char *end;
		long v;
		errno = 0;
		v = strtol(val, &end, 10);
		if (errno || end == val || *end || v < INT_MIN || v > INT_MAX)
			return usage_error(cmd, where, "flag '--%s' needs a whole number, not '%s'", f->name, val);
		*(int *)f->target = (int)v;
		break;
	}
	case CLI_DURATION: {
		int64_t ms;
		if (cli_parse_duration_ms(val, &ms) < 0)
			return usage_error(cmd, where,
					   "flag '--%s' takes a duration like 60s, 1m, 500ms, 2h, 1d or a number of "
					   "seconds (at most 30 days), not '%s'",
					   f->name, val);
		*(int *)f->target = (int)((ms + 999) / 1000);
		break;
	}
	case CLI_BOOL:
	case CLI_SETS:
		break;
	}
	return CLI_RUN;
}

static int parse_words(const cli_command *cmd, int argc, char **argv, cli_list *positional)
{
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		bool used_next;
		int r;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			cli_print_help(cmd, stdout);
			return EXIT_ALL_OK;
		}
		if (!strcmp(a, "--")) {
			for (i++; i < argc; i++)
				if (!positional || list_push(positional, argv[i]) < 0)
					return usage_error(cmd, "",
							   "unexpected argument number %d (not repeated: it may hold "
							   "a secret)",
							   i + 1);
			break;
		}
		if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
			if (!positional)
				return usage_error(cmd, "",
						   "unexpected argument number %d (not repeated: it may hold a secret); "
						   "flags are written --name=value",
						   i + 1);
			if (list_push(positional, a) < 0)
				return EXIT_USAGE;
			continue;
		}
		r = cli_apply_flag(cmd, a, i + 1 < argc ? argv[i + 1] : NULL, &used_next, "", false);
		if (r != CLI_RUN)
			return r;
		i += used_next;
	}
	return CLI_RUN;
}

/* The first pass: only --bazelrc, --config, --[no]home_rc, --[no]workspace_rc
 * (the rc files must be read before the flags they set). */
static bool rc_control(const cli_command *cmd, const cli_flag *f)
{
	const cli_remote *r = cmd->remote;
	return f->target == &r->bazelrc || f->target == &r->config || f->target == &r->home_rc ||
	       f->target == &r->workspace_rc;
}

static int scan_rc_flags(const cli_command *cmd, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *eq;
		const cli_flag *f;
		bool negated, used_next;
		int r;

		if (!strcmp(a, "--"))
			break;
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return EXIT_ALL_OK;
		if (strncmp(a, "--", 2) != 0)
			continue;
		eq = strchr(a + 2, '=');
		f = find(cmd, a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2), &negated);
		if (!f)
			continue; /* the second pass says so */
		if (rc_control(cmd, f)) {
			r = cli_apply_flag(cmd, a, i + 1 < argc ? argv[i + 1] : NULL, &used_next, "", false);
			if (r != CLI_RUN)
				return r;
			i += used_next;
		} else if (!eq && f->kind != CLI_BOOL && f->kind != CLI_SETS)
			i++; /* its value */
	}
	return CLI_RUN;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, cli_list *positional)
{
	int r;

	if (cmd->remote) {
		r = scan_rc_flags(cmd, argc, argv);
		if (r == CLI_RUN)
			r = cli_rc_apply(cmd, cmd->remote);
		if (r != CLI_RUN && r != EXIT_ALL_OK)
			return r;
		/* The lists the first pass filled are filled again below. */
		cli_list_free(&cmd->remote->bazelrc);
		cli_list_free(&cmd->remote->config);
	}
	return parse_words(cmd, argc, argv, positional);
}

void cli_print_help(const cli_command *cmd, FILE *out)
{
	fprintf(out, "Usage: %s\n\n%s\n\nFlags:\n", cmd->usage, cmd->summary);
	for (size_t i = 0; i < cmd->nflags; i++) {
		const cli_flag *f = &cmd->flags[i];
		char left[96];
		const char *h = f->help;
		int col = 37;

		if (f->kind == CLI_BOOL)
			snprintf(left, sizeof(left), "--[no]%s", f->name);
		else if (f->kind == CLI_SETS)
			snprintf(left, sizeof(left), "--%s", f->name);
		else
			snprintf(left, sizeof(left), "--%s=%s", f->name, f->arg);
		fprintf(out, "  %-34s", left);
		if (strlen(left) > 34) {
			fputc('\n', out);
			col = 0;
		}
		/* Words wrapped at 100 columns, continued under the help column. */
		while (*h) {
			size_t w = strcspn(h, " ");
			if (col > 37 && col + 1 + (int)w > 100) {
				fputc('\n', out);
				col = 0;
			}
			if (col < 37) {
				fprintf(out, "%*s", 37 - col - 1, "");
				col = 36;
			}
			fprintf(out, " %.*s", (int)w, h);
			col += 1 + (int)w;
			h += w;
			h += strspn(h, " ");
		}
		fputc('\n', out);
	}
	fprintf(out, "  %-34s %s\n", "--help", "Show this text.");
	fprintf(out,
		"\nExit codes: 0 every wanted file is in place and verified; 1 some were lost, corrupt,\n"
		"failed or could not be written; 2 bad flags or configuration; 3 malformed or incomplete\n"
		"input, or a --target, --output_groups or filter that matched nothing; 8 interrupted\n"
		"(SIGINT/SIGTERM).\n");
}

/* Header merging as Bazel: gRPC's Metadata keeps every value of a name, and
 * HTTP sends one field; values of one name go out as one comma-separated
 * field (RFC 9110 5.3), in the order given. One without a name is passed on
 * as it is: the library says what is wrong with it, without repeating it. */
static int merge_headers(cli_remote *r)
{
	const cli_list *lists[] = { &r->headers, &r->cache_headers };

	for (size_t k = 0; k < 2; k++)
		for (size_t i = 0; i < lists[k]->n; i++) {
			const char *h = lists[k]->items[i], *eq = strchr(h, '=');
			size_t nl = eq ? (size_t)(eq - h) : 0;
			char **slot = NULL, **n;

			for (size_t j = 0; nl && j < r->n_merged; j++)
				if (!strncasecmp(r->merged[j], h, nl) && r->merged[j][nl] == '=')
					slot = &r->merged[j];
			if (slot) {
				char *m = NULL;
				if (asprintf(&m, "%s,%s", *slot, eq + 1) < 0)
					return -ENOMEM;
				free(*slot);
				*slot = m;
				continue;
			}
			n = realloc(r->merged, (r->n_merged + 1) * sizeof(*n));
			if (!n)
				return -ENOMEM;
			r->merged = n;
			if (!(n[r->n_merged] = strdup(h)))
				return -ENOMEM;
			r->n_merged++;
		}
	return 0;
}

int cli_remote_finish(const char *cmdname, cli_remote *r, tf_remote_options *o)
{
	const char *c;
	int rc = cli_secrets_apply(cmdname, r, o);

	if (rc != CLI_RUN)
		return rc;
	c = o->remote_cache;
	if (merge_headers(r) < 0) {
		fprintf(stderr, "topfetch %s: out of memory\n", cmdname);
		return EXIT_USAGE;
	}
	o->remote_headers = (const char *const *)r->merged;
	o->n_remote_headers = r->n_merged;
	if (o->remote_max_connections == 0)
		o->remote_max_connections = CLI_MAX_CONNECTIONS;
	if (o->remote_timeout_s == 0)
		o->remote_timeout_s = CLI_MAX_TIMEOUT_S;
	else if (o->remote_timeout_s > CLI_MAX_TIMEOUT_S) {
		fprintf(stderr, "topfetch %s: flag '--remote_timeout' is at most one day (1d); 0 means no limit\n",
			cmdname);
		return EXIT_USAGE;
	}
	/* Bazel's HttpCacheClient and DiskCacheClient never use the instance name. */
	if (c && strncmp(c, "grpc://", 7) && strncmp(c, "grpcs://", 8))
		o->remote_instance_name = NULL;
	return 0;
}

bool cli_loops_back(const char *url, const char *listen, char *why, size_t n)
{
	const char *host = url && (!strncmp(url, "http://", 7) || !strncmp(url, "grpc://", 7)) ? url + 7 : NULL, *at;
	size_t len = strlen(listen);

	if (!host)
		return false;
	at = strchr(host, '@');
	if (at && at < host + strcspn(host, "/"))
		host = at + 1;
	if (strncmp(host, listen, len) || (host[len] && host[len] != '/'))
		return false;
	snprintf(why, n, "--remote_cache names the proxy's own --listen address %s (from a .bazelrc that points "
		 "Bazel at the proxy?); give the real cache with --remote_cache", listen);
	return true;
}

void cli_remote_free(cli_remote *r)
{
	for (size_t i = 0; i < r->n_merged; i++) {
		explicit_bzero(r->merged[i], strlen(r->merged[i])); /* may hold a secret */
		free(r->merged[i]);
	}
	free(r->merged);
	r->merged = NULL;
	r->n_merged = 0;
	cli_list_free(&r->headers);
	cli_list_free(&r->cache_headers);
	cli_list_free(&r->bazelrc);
	cli_list_free(&r->config);
	cli_list_free(&r->credential_helpers);
	cli_secrets_free(&r->secrets);
}
