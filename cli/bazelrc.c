/* Bazel's rc files, read as its client does (src/main/cpp/rc_file.cc), for
 * the flags that name the cache: a CI job whose .bazelrc names the cache
 * needs no --remote_cache for topfetch. */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define RC_MAX_FILES 64     /* rc files and imports, in all */
#define RC_MAX_BYTES (1 << 20)
#define RC_MAX_DEPTH 16     /* import and --config nesting */
#define RC_MAX_WORDS 1024   /* on one line */

typedef struct rc_word {
	char *command; /* "build", "common", "build:ci", ... */
	char *word;
	const char *file;
	int line;
} rc_word;

typedef struct rc_state {
	const cli_command *cmd;
	const char *workspace; /* NULL outside one */
	rc_word *v;
	size_t n, alloc;
	char *stack[RC_MAX_DEPTH]; /* imports being read, for loops */
	size_t depth, files;
	const char *expanding[RC_MAX_DEPTH]; /* --config names being expanded */
	size_t n_expanding;
} rc_state;

/* Every string a flag may keep pointing to lives until exit. */
static char **arena;
static size_t n_arena;

static void arena_free(void)
{
	for (size_t i = 0; i < n_arena; i++)
		free(arena[i]);
	free(arena);
	arena = NULL;
	n_arena = 0;
}

static char *keep(char *s)
{
	static bool registered;
	char **n;

	if (!s)
		return NULL;
	if (!registered) {
		atexit(arena_free);
		registered = true;
	}
	n = realloc(arena, (n_arena + 1) * sizeof(*n));
	if (!n) {
		free(s);
		return NULL;
	}
	arena = n;
	arena[n_arena++] = s;
	return s;
}

static int rc_error(const rc_state *st, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int rc_error(const rc_state *st, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "topfetch %s: ", st->cmd->name);
	if (file)
		cli_eprintf(line ? "%s:%d: " : "%s: ", file, line);
	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

bool cli_rc_flag(const char *name, size_t len)
{
	if (len > 2 && !strncmp(name, "no", 2)) {
		name += 2;
		len -= 2;
	}
#define IS(p) (len >= sizeof(p) - 1 && !strncmp(name, p, sizeof(p) - 1))
	return (IS("remote_") && !IS("remote_download_")) || IS("tls_") || IS("credential_helper");
#undef IS
}

static int push_word(rc_state *st, const char *command, const char *word, size_t wlen, const char *file, int line)
{
	rc_word *w;

	if (st->n == st->alloc) {
		size_t na = st->alloc ? st->alloc * 2 : 64;
		rc_word *n = realloc(st->v, na * sizeof(*n));
		if (!n)
			return -ENOMEM;
		st->v = n;
		st->alloc = na;
	}
	w = &st->v[st->n];
	w->command = keep(strdup(command));
	w->word = keep(strndup(word, wlen));
	w->file = file;
	w->line = line;
	if (!w->command || !w->word)
		return -ENOMEM;
	st->n++;
	return 0;
}

/* blaze_util::Tokenize: words split by blanks, '...' and "..." quote, a
 * backslash escapes the next character, '#' outside quotes ends the line. */
static size_t tokenize(const char *line, char **words, size_t max, char *buf)
{
	size_t n = 0;
	char quote = 0, *out = buf;
	bool in_word = false;

	for (const char *p = line;; p++) {
		char c = *p;
		if (c && c == '\\' && p[1]) {
			*out++ = *++p;
			in_word = true;
		} else if (c && quote) {
			if (c == quote)
				quote = 0;
			else
				*out++ = c;
		} else if (c == '"' || c == '\'') {
			quote = c;
			in_word = true;
		} else if (!c || c == '#' || c == ' ' || c == '\t' || c == '\r') {
			if (in_word && n < max) {
				*out++ = 0;
				words[n++] = buf;
				buf = out;
			}
			in_word = false;
			out = buf;
			if (!c || c == '#')
				return n;
		} else {
			*out++ = c;
			in_word = true;
		}
	}
}

static int read_file(rc_state *st, const char *path, bool optional, const char *from, int from_line);

static int import_line(rc_state *st, char **w, size_t n, const char *file, int line)
{
	bool optional = !strcmp(w[0], "try-import");
	char *path = w[1];

	if (n != 2)
		return rc_error(st, file, line, "'%s' takes one path", w[0]);
	if (!strncmp(path, "%workspace%", 11)) {
		if (!st->workspace)
			return rc_error(st, file, line, "'%s %s' names %%workspace%%, but there is no Bazel workspace "
					"around the current directory", w[0], path);
		if (asprintf(&path, "%s%s", st->workspace, w[1] + 11) < 0 || !keep(path))
			return rc_error(st, file, line, "out of memory");
	}
	for (size_t i = 0; i < st->depth; i++)
		if (!strcmp(st->stack[i], path))
			return rc_error(st, file, line, "import loop: %s imports itself (through %zu file%s)", path,
					st->depth - i, st->depth - i == 1 ? "" : "s");
	return read_file(st, path, optional, file, line);
}

static int read_file(rc_state *st, const char *path, bool optional, const char *from, int from_line)
{
	FILE *f;
	char *text = NULL, *words[RC_MAX_WORDS + 1], *buf = NULL;
	size_t len = 0, cap = 0, got;
	int line = 1, r = CLI_RUN;
	const char *name;

	if (st->depth == RC_MAX_DEPTH || st->files++ == RC_MAX_FILES)
		return rc_error(st, from, from_line, "more than %d rc files or %d nested imports", RC_MAX_FILES,
				RC_MAX_DEPTH);
	f = fopen(path, "r");
	if (!f) {
		if (optional)
			return CLI_RUN;
		return rc_error(st, from, from_line, "cannot read the rc file %s: %s", path, strerror(errno));
	}
	do {
		if (len + 4096 + 1 > cap) {
			char *n = realloc(text, cap = len + 4096 + 1);
			if (!n)
				break;
			text = n;
		}
		got = fread(text + len, 1, cap - len - 1, f);
		len += got;
	} while (got > 0 && len <= RC_MAX_BYTES);
	fclose(f);
	if (!text || len > RC_MAX_BYTES) {
		free(text);
		return rc_error(st, path, 0, "unreadable or over %d bytes", RC_MAX_BYTES);
	}
	text[len] = 0;
	if (!(name = keep(strdup(path))) || !(buf = malloc(len + 1))) {
		free(text);
		return rc_error(st, path, 0, "out of memory");
	}
	st->stack[st->depth++] = (char *)name;
	for (size_t i = 0; i < len && r == CLI_RUN;) {
		int start = line;
		size_t o = 0, n;
		char *logical = buf;

		/* One logical line: a backslash before the newline continues it. */
		for (; i < len && text[i] != '\n'; i++) {
			if (text[i] == '\\' && (text[i + 1] == '\n' || (text[i + 1] == '\r' && text[i + 2] == '\n'))) {
				i += text[i + 1] == '\r' ? 2 : 1;
				line++;
				continue;
			}
			logical[o++] = text[i];
		}
		i++;
		line++;
		logical[o] = 0;
		n = tokenize(logical, words, sizeof(words) / sizeof(words[0]), logical);
		if (n == 0)
			continue;
		if (n > RC_MAX_WORDS) {
			r = rc_error(st, name, start, "more than %d words on one line", RC_MAX_WORDS);
			continue;
		}
		if (!strcmp(words[0], "import") || !strcmp(words[0], "try-import")) {
			r = import_line(st, words, n, name, start);
			continue;
		}
		for (size_t k = 1; k < n && r == CLI_RUN; k++)
			if (push_word(st, words[0], words[k], strlen(words[k]), name, start) < 0)
				r = rc_error(st, name, start, "out of memory");
	}
	free(buf);
	free(text);
	st->depth--;
	return r;
}

static int apply_command(rc_state *st, const char *command);

/* --config=NAME: the common:NAME and build:NAME words, where it stands. */
static int expand_config(rc_state *st, const char *name, const char *file, int line)
{
	char common[256], build[256];
	bool defined = false;
	int r;

	for (size_t i = 0; i < st->n_expanding; i++)
		if (!strcmp(st->expanding[i], name))
			return rc_error(st, file, line, "--config=%s expands to itself", name);
	if (st->n_expanding == RC_MAX_DEPTH)
		return rc_error(st, file, line, "--config nested more than %d deep", RC_MAX_DEPTH);
	snprintf(common, sizeof(common), "common:%s", name);
	snprintf(build, sizeof(build), "build:%s", name);
	/* Defined for any command (test:NAME too), as Bazel checks. */
	for (size_t i = 0; i < st->n && !defined; i++) {
		const char *colon = strchr(st->v[i].command, ':');
		defined = colon && !strcmp(colon + 1, name);
	}
	if (!defined)
		return rc_error(st, file, line, "--config=%s is not defined in any rc file (no build:%s or "
				"common:%s line)", name, name, name);
	st->expanding[st->n_expanding++] = name;
	r = apply_command(st, common);
	if (r == CLI_RUN)
		r = apply_command(st, build);
	st->n_expanding--;
	return r;
}

/* The words of one command (in file order), flags topfetch knows applied. */
static int apply_command(rc_state *st, const char *command)
{
	for (size_t i = 0; i < st->n; i++) {
		const rc_word *w = &st->v[i];
		const char *a = w->word, *name = a + 2, *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const rc_word *next = NULL;
		char where[PATH_MAX + 32];
		bool used_next;
		int r;

		if (strcmp(w->command, command) || strncmp(a, "--", 2))
			continue;
		for (size_t j = i + 1; j < st->n && !next; j++)
			if (!strcmp(st->v[j].command, command))
				next = &st->v[j];
		if (nlen == 6 && !strncmp(name, "config", 6)) {
			const char *cfg = eq ? eq + 1 : next ? next->word : NULL;
			if (!cfg)
				return rc_error(st, w->file, w->line, "--config needs a name");
			r = expand_config(st, cfg, w->file, w->line);
			if (r != CLI_RUN)
				return r;
			continue;
		}
		if (!cli_rc_flag(name, nlen))
			continue; /* Bazel's, not ours */
		snprintf(where, sizeof(where), "%s:%d: ", w->file, w->line);
		r = cli_apply_flag(st->cmd, a, next ? next->word : NULL, &used_next, where, true);
		if (r == EXIT_USAGE)
			return r;
		if (used_next)
			i = (size_t)(next - st->v);
	}
	return CLI_RUN;
}

/* The workspace around the current directory, as Bazel finds it. */
static char *find_workspace(void)
{
	static const char *const markers[] = { "WORKSPACE", "WORKSPACE.bazel", "MODULE.bazel", "REPO.bazel" };
	char *dir = getcwd(NULL, 0);

	while (dir && *dir) {
		for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++) {
			char path[PATH_MAX];
			if (snprintf(path, sizeof(path), "%s/%s", dir, markers[i]) < (int)sizeof(path) &&
			    access(path, F_OK) == 0)
				return dir;
		}
		char *slash = strrchr(dir, '/');
		if (!slash)
			break;
		*slash = 0; /* "/x" -> "" ends the loop after "/" was tried as "" */
	}
	free(dir);
	return NULL;
}

int cli_rc_apply(const cli_command *cmd, const struct cli_remote *rem)
{
	rc_state st = { .cmd = cmd };
	char *ws = find_workspace(), *path = NULL, seen[3][PATH_MAX];
	const char *home = getenv("HOME");
	size_t n_seen = 0;
	int r = CLI_RUN;

	if (!ws && !rem->bazelrc.n && !rem->config.n)
		return CLI_RUN; /* not a Bazel user's directory, nothing asked for */
	st.workspace = ws ? keep(ws) : NULL;
	/* %workspace%/.bazelrc, then ~/.bazelrc (one file read once). */
	for (int k = 0; k < 2 && r == CLI_RUN; k++) {
		const char *base = k == 0 ? (rem->workspace_rc ? st.workspace : NULL) : (rem->home_rc ? home : NULL);
		bool dup = false;
		char real[PATH_MAX];
		if (!base || asprintf(&path, "%s/.bazelrc", base) < 0)
			continue;
		if (realpath(path, real)) {
			for (size_t i = 0; i < n_seen; i++)
				dup |= !strcmp(seen[i], real);
			memcpy(seen[n_seen++], real, sizeof(real));
		}
		if (!dup)
			r = read_file(&st, path, true, NULL, 0);
		free(path);
	}
	for (size_t i = 0; i < rem->bazelrc.n && r == CLI_RUN; i++) {
		if (!strcmp(rem->bazelrc.items[i], "/dev/null"))
			break; /* as Bazel: no further --bazelrc */
		r = read_file(&st, rem->bazelrc.items[i], false, NULL, 0);
	}
	/* As Bazel orders them: common (and always), then build, then each
	 * --config of the command line. */
	if (r == CLI_RUN)
		r = apply_command(&st, "always");
	if (r == CLI_RUN)
		r = apply_command(&st, "common");
	if (r == CLI_RUN)
		r = apply_command(&st, "build");
	for (size_t i = 0; i < rem->config.n && r == CLI_RUN; i++)
		r = expand_config(&st, rem->config.items[i], NULL, 0);
	free(st.v);
	return r;
}
