/* Secrets that need not sit in argv (where `ps` shows them): the
 * --remote_cache URL and --remote_header lines read from a file (@FILE) or
 * an environment variable (env:NAME), and the credential flags' storage. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

#define SECRET_FILE_MAX (1024 * 1024)

/* The text of @FILE or env:NAME into *text (malloc'ed); what names it for
 * messages (the flag), never the text. */
static int read_source(const char *cmd, const char *flag, const char *spec, char **text)
{
	*text = NULL;
	if (!strncmp(spec, "env:", 4)) {
		const char *v = getenv(spec + 4);
		if (!spec[4]) {
			fprintf(stderr, "topfetch %s: --%s=env:NAME needs the name of an environment variable\n", cmd,
				flag);
			return EXIT_USAGE;
		}
		if (!v || !*v) {
			cli_eprintf("topfetch %s: --%s=%s: the environment variable %s is not set or empty\n", cmd, flag,
				    spec, spec + 4);
			return EXIT_USAGE;
		}
		*text = strdup(v);
	} else {
		const char *path = spec + 1; /* after '@' */
		FILE *f = fopen(path, "re");
		struct stat st;
		size_t n;
		if (!f || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SECRET_FILE_MAX) {
			cli_eprintf("topfetch %s: --%s=%s: cannot read it: %s\n", cmd, flag, spec,
				    !f ? strerror(errno) : "not a regular file of at most 1 MiB");
			if (f)
				fclose(f);
			return EXIT_USAGE;
		}
		*text = malloc((size_t)st.st_size + 1);
		if (*text) {
			n = fread(*text, 1, (size_t)st.st_size, f);
			(*text)[n] = '\0';
		}
		fclose(f);
	}
	if (!*text) {
		fprintf(stderr, "topfetch %s: out of memory\n", cmd);
		return EXIT_USAGE;
	}
	return CLI_RUN;
}

static bool is_source(const char *v)
{
	return v && (v[0] == '@' || !strncmp(v, "env:", 4));
}

static int keep(cli_secrets *s, char *p)
{
	cli_secret *n = realloc(s->owned, (s->n_owned + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->owned = n;
	s->owned[s->n_owned++] = (cli_secret){ p, strlen(p) };
	return 0;
}

/* Each @FILE or env:NAME entry of a header list becomes the NAME=VALUE
 * lines it holds, in its place. */
static int expand_headers(const char *cmd, const char *flag, cli_list *headers, cli_secrets *s)
{
	int rc;

	for (size_t i = 0; i < headers->n; i++) {
		const char *spec = headers->items[i];
		char *text, *save = NULL;
		size_t added = 0;
		if (!is_source(spec))
			continue;
		if ((rc = read_source(cmd, flag, spec, &text)) != CLI_RUN)
			return rc;
		if (keep(s, text) < 0) {
			free(text);
			return EXIT_USAGE;
		}
		/* Each line NAME=VALUE; empty lines and '#' comments skipped. The
		 * lines replace the entry, in its place. */
		for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			size_t n = strlen(line);
			const char **v;
			if (n && line[n - 1] == '\r')
				line[--n] = '\0';
			if (!n || line[0] == '#')
				continue;
			v = realloc(headers->items, (headers->n + 1) * sizeof(*v));
			if (!v)
				return EXIT_USAGE;
			headers->items = v;
			memmove(&v[i + added + 2], &v[i + added + 1], (headers->n - i - added - 1) * sizeof(*v));
			v[i + added + 1] = line;
			headers->n++;
			added++;
		}
		if (!added) {
			fprintf(stderr, "topfetch %s: --%s=%s holds no NAME=VALUE line\n", cmd, flag, spec);
			return EXIT_USAGE;
		}
		/* Drop the @FILE entry itself. */
		memmove(&headers->items[i], &headers->items[i + 1], (headers->n - i - 1) * sizeof(*headers->items));
		headers->n--;
		i += added - 1;
	}
	return CLI_RUN;
}

int cli_secrets_apply(const char *cmd, cli_remote *r, tf_remote_options *o)
{
	cli_secrets *s = &r->secrets;
	int rc;

	o->credential_helpers = r->credential_helpers.items;
	o->n_credential_helpers = r->credential_helpers.n;
	if (is_source(o->remote_cache)) {
		char *text, *end;
		if ((rc = read_source(cmd, "remote_cache", o->remote_cache, &text)) != CLI_RUN)
			return rc;
		if (keep(s, text) < 0) {
			free(text);
			return EXIT_USAGE;
		}
		/* The first line, without surrounding white space. */
		end = text + strcspn(text, "\r\n");
		*end = '\0';
		while (end > text && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (!*(text + strspn(text, " \t"))) {
			fprintf(stderr, "topfetch %s: --remote_cache=%s holds no URL\n", cmd, o->remote_cache);
			return EXIT_USAGE;
		}
		o->remote_cache = text + strspn(text, " \t");
	}
	if ((rc = expand_headers(cmd, "remote_header", &r->headers, s)) != CLI_RUN)
		return rc;
	return expand_headers(cmd, "remote_cache_header", &r->cache_headers, s);
}

void cli_secrets_free(cli_secrets *s)
{
	for (size_t i = 0; i < s->n_owned; i++) {
		explicit_bzero(s->owned[i].p, s->owned[i].len);
		free(s->owned[i].p);
	}
	free(s->owned);
	s->owned = NULL;
	s->n_owned = 0;
}
