#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

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
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

static int usage_error(const cli_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const cli_command *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "topfetch %s: ", cmd->name);
	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'topfetch %s --help' for the flags.\n", cmd->name);
	return EXIT_USAGE;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, cli_list *positional)
{
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *val = NULL;
		const cli_flag *f;
		bool negated;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			cli_print_help(cmd, stdout);
			return EXIT_ALL_OK;
		}
		if (!strcmp(a, "--")) {
			for (i++; i < argc; i++)
				if (!positional || list_push(positional, argv[i]) < 0)
					return usage_error(cmd, "unexpected argument number %d (not repeated: it may hold "
							   "a secret)", i + 1);
			break;
		}
		if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
			if (!positional)
				return usage_error(cmd,
						   "unexpected argument number %d (not repeated: it may hold a secret); "
						   "flags are written --name=value",
						   i + 1);
			if (list_push(positional, a) < 0)
				return EXIT_USAGE;
			continue;
		}
		name = a + 2;
		eq = strchr(name, '=');
		f = find(cmd, name, eq ? (size_t)(eq - name) : strlen(name), &negated);
		/* Messages name the flag, never its value (it may be a password). */
		if (!f)
			return usage_error(cmd, "unknown flag '--%.*s'", (int)(eq ? eq - name : (ptrdiff_t)strlen(name)),
					   name);
		if (f->kind == CLI_BOOL) {
			bool v = !negated;
			if (eq) {
				if (negated || (strcmp(eq + 1, "true") && strcmp(eq + 1, "false") &&
						strcmp(eq + 1, "1") && strcmp(eq + 1, "0")))
					return usage_error(cmd, "flag '--%s' takes true or false", f->name);
				v = !strcmp(eq + 1, "true") || !strcmp(eq + 1, "1");
			}
			*(bool *)f->target = v;
			continue;
		}
		if (negated)
			return usage_error(cmd, "unknown flag '--no%s'", f->name);
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			return usage_error(cmd, "flag '--%s' needs a value (%s)", f->name, f->arg);
		switch (f->kind) {
		case CLI_ONCE:
			if (*(const char **)f->target)
				return usage_error(cmd, "flag '--%s' was given twice; it names one %s, so say which one",
						   f->name, f->arg);
			/* fall through */
		case CLI_STRING:
			*(const char **)f->target = val;
			break;
		case CLI_LIST:
			if (list_push(f->target, val) < 0)
				return EXIT_USAGE;
			break;
		case CLI_INT: {
			char *end;
			long v;
			errno = 0;
			v = strtol(val, &end, 10);
			if (errno || end == val || *end || v < INT_MIN || v > INT_MAX)
				return usage_error(cmd, "flag '--%s' needs a whole number, not '%s'", f->name, val);
			*(int *)f->target = (int)v;
			break;
		}
		case CLI_BOOL:
			break;
		}
	}
	return CLI_RUN;
}

void cli_print_help(const cli_command *cmd, FILE *out)
{
	fprintf(out, "Usage: %s\n\n%s\n\nFlags:\n", cmd->usage, cmd->summary);
	for (size_t i = 0; i < cmd->nflags; i++) {
		const cli_flag *f = &cmd->flags[i];
		char left[96];

		if (f->kind == CLI_BOOL)
			snprintf(left, sizeof(left), "--[no]%s", f->name);
		else
			snprintf(left, sizeof(left), "--%s=%s", f->name, f->arg);
		fprintf(out, "  %-34s %s%s\n", left, f->help, f->kind == CLI_LIST ? "" : "");
	}
	fprintf(out, "  %-34s %s\n", "--help", "Show this text.");
	fprintf(out,
		"\nExit codes: 0 every wanted file is in place and verified; 1 some were lost, corrupt,\n"
		"failed or could not be written; 2 bad flags or configuration; 3 malformed or incomplete\n"
		"input; 8 interrupted (SIGINT/SIGTERM).\n");
}

int cli_split_csv(const char *csv, cli_list *out, char **buf)
{
	char *save = NULL, *tok;

	*buf = strdup(csv);
	if (!*buf)
		return -ENOMEM;
	for (tok = strtok_r(*buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*tok && list_push(out, tok) < 0)
			return -ENOMEM;
	}
	return 0;
}
