/* The manifest of `topfetch fetch`: lines "HASH SIZE [x] PATH". Its own file
 * (no flags, no downloads) so that fuzz/ can link the parser alone. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void diagf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A message about the manifest, control characters escaped. */
static void diagf(FILE *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vprint_safe(f, fmt, ap);
	va_end(ap);
}

/* Parses "HASH SIZE [x] PATH". The path is the rest of the line. Returns 0,
 * or prints why the line is malformed and returns -EINVAL. */
static int parse_line(FILE *diag, const char *name, size_t lineno, char *line, cli_manifest_entry *e)
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
		diagf(diag, "topfetch fetch: %s:%zu: size '%s' is not a whole number of bytes\n", name,
			lineno, size);
		return -EINVAL;
	}
	if (tf_digest_parse(hash, sz, &e->digest, &err) < 0) {
		diagf(diag, "topfetch fetch: %s:%zu: %s\n", name, lineno, err.message);
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
	diagf(diag, "topfetch fetch: %s:%zu: expected 'HASH SIZE [x] PATH'\n", name, lineno);
	return -EINVAL;
}

static int by_path(const void *a, const void *b)
{
	const cli_manifest_entry *x = a, *y = b;
	int c = strcmp(x->path, y->path);
	return c ? c : (x->line < y->line ? -1 : x->line > y->line);
}

/* Reads one line into buf (at most cap bytes are kept, NUL-terminated),
 * without its "\n" or "\r\n". *len is the line's whole length, also past the
 * cap (those bytes are read and dropped: memory stays bounded however long
 * a line is); *nul is set when the kept part holds a NUL byte. Returns false
 * at the end of the input. */
static bool read_line(FILE *f, char *buf, size_t cap, size_t *len, bool *nul)
{
	size_t n = 0;
	int c;

	*nul = false;
	while ((c = getc(f)) != EOF && c != '\n') {
		if (n < cap) {
			buf[n] = (char)c;
			*nul |= c == '\0';
		}
		n++;
	}
	if (c == EOF && n == 0)
		return false;
	if (n > 0 && n <= cap && buf[n - 1] == '\r')
		n--;
	buf[n < cap ? n : cap] = '\0';
	*len = n;
	return true;
}

int cli_manifest_read(FILE *f, const char *name, cli_manifest *m, FILE *diag)
{
	char *line = malloc(CLI_MANIFEST_LINE_MAX + 1);
	size_t lineno = 0, len;
	bool nul;
	int bad = 0;

	if (!line)
		return -ENOMEM;
	while (read_line(f, line, CLI_MANIFEST_LINE_MAX, &len, &nul)) {
		cli_manifest_entry e;
		lineno++;
		if (len == 0 || line[0] == '#')
			continue;
		if (len > CLI_MANIFEST_LINE_MAX) {
			diagf(diag, "topfetch fetch: %s:%zu: line is %zu bytes long (limit %d)\n", name, lineno,
				len, CLI_MANIFEST_LINE_MAX);
			bad++;
			continue;
		}
		if (nul) {
			diagf(diag, "topfetch fetch: %s:%zu: line contains a NUL byte\n", name, lineno);
			bad++;
			continue;
		}
		if (parse_line(diag, name, lineno, line, &e) < 0) {
			bad++;
			continue;
		}
		if (m->n == m->alloc) {
			size_t na = m->alloc ? m->alloc * 2 : 1024;
			cli_manifest_entry *nv = na <= CLI_MANIFEST_ENTRIES_MAX ? realloc(m->v, na * sizeof(*nv)) : NULL;
			if (!nv) {
				diagf(diag, "topfetch fetch: %s: more than %d entries\n", name,
					CLI_MANIFEST_ENTRIES_MAX);
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
		diagf(diag, "topfetch fetch: error reading %s: %s\n", name, strerror(errno));
		bad++;
	}
	free(line);
	if (bad)
		return -EINVAL;

	/* Two different blobs for one path would silently overwrite each other. */
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(*m->v), by_path);
	for (size_t i = 1; i < m->n; i++) {
		cli_manifest_entry *a = &m->v[i - 1], *b = &m->v[i];
		if (strcmp(a->path, b->path))
			continue;
		if (strcmp(a->digest.hash, b->digest.hash) || a->executable != b->executable) {
			fprintf(diag,
				"topfetch fetch: %s:%zu and line %zu both write '%s' with different contents or modes\n",
				name, a->line, b->line, a->path);
			bad++;
		}
	}
	return bad ? -EINVAL : 0;
}

void cli_manifest_free(cli_manifest *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
	memset(m, 0, sizeof(*m));
}
