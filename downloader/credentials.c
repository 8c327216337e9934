/* Credentials as Bazel users keep them: a netrc file and credential helpers.
 *
 * netrc: the file $NETRC names, else $HOME/.netrc (Bazel's RemoteModule),
 * read once, with Bazel's grammar (NetrcParser): whitespace-separated
 * tokens, a line starting with '#' is a comment, `machine NAME` followed by
 * `login`, `password`, `account` in any order, `macdef` skipped up to an
 * empty line, `default` ends the file; anything else is an error. A host
 * without a machine entry takes the default entry. Its login and password go
 * to libcurl as Basic auth (Bazel sends them as "Authorization: Basic").
 *
 * Credential helpers: --credential_helper=[SCOPE=]PATH with Bazel's
 * protocol: PATH is run with the argument `get`, reads {"uri": "..."} on its
 * standard input and answers {"headers": {"Name": ["value", ...]},
 * "expires": "RFC 3339"} on its standard output. The helper for a host is
 * the one whose scope names the host exactly, else the one with the longest
 * `*.domain` scope the host is in or equal to, else the one without a scope
 * (the last given wins among equals), as Bazel's CredentialHelperProvider.
 * Its answer is kept until `expires`, or for --credential_helper_cache_duration
 * when it names no time; a helper that does not answer within
 * --credential_helper_timeout is killed. Its standard error is ours, so what
 * it says reaches the user in its own words; nothing it answers is ever put
 * in a message. */
#include "downloader/downloader.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define NETRC_MAX (1024 * 1024) /* bytes of a netrc file read */
#define HELPER_FAIL_HOLD_NS 1000000000ull /* a failed helper is not run again for 1 s */

typedef struct helper {
	char *scope; /* NULL: every host; "*.example.com" or "host" */
	char *path;  /* as given: for messages */
	char *exe;   /* resolved: what is run */
} helper;

struct dl_creds {
	helper *helpers;
	size_t n_helpers;
	const helper *chosen; /* for uri's host; NULL: none */
	char *uri;            /* what a helper is asked about (no credentials) */
	char *login, *password; /* netrc, for uri's host; NULL: none */
	long timeout_s, cache_s;
	/* The helper's headers: nodes of the backend's header list, changed in
	 * place (one thread: dl_creds_refresh and libcurl's reading of the list
	 * both run in the engine thread, or before it starts). */
	struct curl_slist *first; /* the first node of ours; NULL before any */
	size_t n_nodes;
	uint64_t valid_until_ns; /* 0: never fetched */
	uint64_t failed_until_ns;
	char failure[512];
};

/* ---- netrc -------------------------------------------------------------------------- */

typedef struct tok {
	const char *p, *end;
	int line;
} tok;

/* The next token (NULL at the end), skipping comment lines as Bazel does
 * (a line whose first character is '#'). Tokens never span lines. */
static const char *next_token(tok *t, size_t *len, int *line)
{
	for (;;) {
		while (t->p < t->end && (*t->p == ' ' || *t->p == '\t' || *t->p == '\r' || *t->p == '\f' ||
					 *t->p == '\v' || *t->p == '\n')) {
			if (*t->p == '\n') {
				t->line++;
				if (t->p + 1 < t->end && t->p[1] == '#') {
					const char *nl = memchr(t->p + 1, '\n', (size_t)(t->end - t->p - 1));
					t->p = nl ? nl : t->end;
					continue;
				}
			}
			t->p++;
		}
		if (t->p >= t->end)
			return NULL;
		const char *s = t->p;
		while (t->p < t->end && !isspace((unsigned char)*t->p))
			t->p++;
		*len = (size_t)(t->p - s);
		*line = t->line;
		return s;
	}
}

static bool is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && !memcmp(s, word, n);
}

/* After `macdef NAME`: up to the next empty line (two newlines in a row). */
static void skip_macdef(tok *t)
{
	while (t->p < t->end) {
		const char *nl = memchr(t->p, '\n', (size_t)(t->end - t->p));
		if (!nl) {
			t->p = t->end;
			return;
		}
		t->line++;
		t->p = nl + 1;
		if (t->p < t->end && *t->p == '\n') {
			/* the empty line ends it */
			return;
		}
	}
}

static int lookup(const char *text, size_t len, const char *file, const char *host, char **login, char **password,
		  tf_error *err)
{
	tok t = { .p = text, .end = text + len, .line = 1 };
	const char *s;
	size_t n;
	int line;
	bool found = false, is_default = false;

	*login = *password = NULL;
	/* A first line that is a comment. */
	if (len && text[0] == '#') {
		const char *nl = memchr(text, '\n', len);
		t.p = nl ? nl : t.end;
	}
	if (memchr(text, '\0', len))
		return tf__errf(err, -EINVAL, "netrc file %s has a NUL byte", file);
	s = next_token(&t, &n, &line);
	while (s) {
		bool take;
		if (is(s, n, "macdef")) {
			next_token(&t, &n, &line); /* its name */
			skip_macdef(&t);
			s = next_token(&t, &n, &line);
			continue;
		}
		if (is(s, n, "machine")) {
			const char *m = next_token(&t, &n, &line);
			if (!m)
				return tf__errf(err, -EINVAL, "netrc file %s, line %d: 'machine' names no host", file, line);
			take = strlen(host) == n && !strncasecmp(m, host, n);
			is_default = false;
		} else if (is(s, n, "default")) {
			/* Bazel reads nothing after the default entry; an entry for the
			 * host itself wins over it. */
			take = !found;
			is_default = true;
		} else {
			/* Not repeated: a misplaced word may be a password. */
			return tf__errf(err, -EINVAL,
					"netrc file %s, line %d: a word where 'machine', 'default' or 'macdef' belongs",
					file, line);
		}
		if (take) {
			free(*login);
			free(*password);
			*login = strdup("");
			*password = strdup("");
			if (!*login || !*password)
				return tf__errf(err, -ENOMEM, "out of memory");
			found = true;
		}
		while ((s = next_token(&t, &n, &line))) {
			char **slot = NULL;
			const char *v;
			size_t vn;
			int vline;
			if (is(s, n, "machine") || is(s, n, "default") || is(s, n, "macdef"))
				break;
			if (is(s, n, "login"))
				slot = login;
			else if (is(s, n, "password"))
				slot = password;
			else if (!is(s, n, "account"))
				return tf__errf(err, -EINVAL,
						"netrc file %s, line %d: a word where 'login', 'password' or 'account' "
						"belongs",
						file, line);
			v = next_token(&t, &vn, &vline);
			if (!v)
				return tf__errf(err, -EINVAL, "netrc file %s, line %d: '%.*s' has no value", file, line,
						(int)n, s);
			if (take && slot) {
				free(*slot);
				if (!(*slot = strndup(v, vn)))
					return tf__errf(err, -ENOMEM, "out of memory");
			}
		}
		if (is_default)
			break;
	}
	if (!found) {
		free(*login);
		free(*password);
		*login = *password = NULL;
	}
	return found ? 1 : 0;
}

int dl_netrc_lookup(const char *text, size_t len, const char *file, const char *host, char **login, char **password,
		    tf_error *err)
{
	int r = lookup(text, len, file, host, login, password, err);

	if (r <= 0) {
		if (*password)
			explicit_bzero(*password, strlen(*password));
		free(*login);
		free(*password);
		*login = *password = NULL;
	}
	return r;
}

/* Reads the netrc file as Bazel picks it, and the entry for host. */
static int netrc_load(dl_creds *c, const tf_remote_options *opts, const char *host, tf_error *err)
{
	char path[PATH_MAX];
	const char *env;
	struct stat st;
	char *text = NULL;
	ssize_t got = 0;
	int fd, r;

	if (opts->netrc) {
		if (!*opts->netrc)
			return 0;
		snprintf(path, sizeof(path), "%s", opts->netrc);
	} else if ((env = getenv("NETRC")) && *env) {
		snprintf(path, sizeof(path), "%s", env);
	} else if ((env = getenv("HOME")) && *env) {
		snprintf(path, sizeof(path), "%s/.netrc", env);
	} else {
		return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0; /* no netrc: as Bazel */
		return tf__errf(err, -errno, "cannot read the netrc file %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > NETRC_MAX) {
		close(fd);
		return tf__errf(err, -EINVAL, "the netrc file %s is not a regular file of at most %d bytes", path,
				NETRC_MAX);
	}
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return tf__errf(err, -ENOMEM, "out of memory");
	}
	while (got < st.st_size) {
		ssize_t k = read(fd, text + got, (size_t)(st.st_size - got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += k;
	}
	close(fd);
	r = dl_netrc_lookup(text, (size_t)got, path, host, &c->login, &c->password, err);
	explicit_bzero(text, (size_t)got);
	free(text);
	return r < 0 ? r : 0;
}

/* ---- credential helpers ------------------------------------------------------------- */

/* Bazel's pattern for a scope: (\*|[-a-zA-Z0-9]+)(\.[-a-zA-Z0-9]+)+ */
static bool scope_valid(const char *s)
{
	bool first = true;
	int labels = 0;

	while (*s) {
		size_t n = 0;
		if (first && s[0] == '*' && (s[1] == '.' || !s[1])) {
			n = 1;
		} else {
			while (isalnum((unsigned char)s[n]) || s[n] == '-')
				n++;
			if (n == 0)
				return false;
		}
		labels++;
		s += n;
		first = false;
		if (*s == '.')
			s++;
		else if (*s)
			return false;
		else
			break;
		if (!*s)
			return false; /* a trailing dot */
	}
	return labels >= 2;
}

bool dl_scope_matches(const char *scope, const char *host)
{
	if (!scope)
		return true;
	if (!strncmp(scope, "*.", 2)) {
		size_t hn = strlen(host), sn = strlen(scope + 2);
		if (hn == sn)
			return !strcasecmp(host, scope + 2);
		return hn > sn && host[hn - sn - 1] == '.' && !strcasecmp(host + hn - sn, scope + 2);
	}
	return !strcasecmp(scope, host);
}

/* The helper Bazel would pick for host: an exact scope, else the longest
 * wildcard one, else the one without a scope; the last given among equals. */
static const helper *choose(const helper *v, size_t n, const char *host)
{
	const helper *exact = NULL, *wild = NULL, *any = NULL;
	size_t wild_len = 0;

	if (!host || !*host)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (!v[i].scope)
			any = &v[i];
		else if (strncmp(v[i].scope, "*.", 2) ? !strcasecmp(v[i].scope, host) : false)
			exact = &v[i];
		else if (!strncmp(v[i].scope, "*.", 2) && dl_scope_matches(v[i].scope, host) &&
			 strlen(v[i].scope) >= wild_len) {
			wild = &v[i];
			wild_len = strlen(v[i].scope);
		}
	}
	return exact ? exact : wild ? wild : any;
}

int dl_helper_pick(const char *const *specs, size_t n, const char *host)
{
	helper *v = calloc(n ? n : 1, sizeof(*v));
	const helper *h;
	int r = -1;

	if (!v)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(specs[i], '=');
		v[i].scope = eq ? strndup(specs[i], (size_t)(eq - specs[i])) : NULL;
	}
	h = choose(v, n, host);
	if (h)
		r = (int)(h - v);
	for (size_t i = 0; i < n; i++)
		free(v[i].scope);
	free(v);
	return r;
}

bool dl_scope_valid(const char *scope)
{
	return scope_valid(scope);
}

/* PATH as Bazel takes it: with a '/', a file; without, looked up in $PATH. */
static int resolve_exe(const char *path, char **exe, tf_error *err)
{
	const char *p, *dirs;

	if (!strncmp(path, "%workspace%", 11))
		return tf__errf(err, -EINVAL,
				"--credential_helper=%s: topfetch does not know Bazel's %%workspace%%; give the helper's "
				"path",
				path);
	if (strchr(path, '/')) {
		if (access(path, X_OK) < 0)
			return tf__errf(err, -errno, "--credential_helper=%s: %s", path,
					errno == EACCES ? "the file is not executable" : strerror(errno));
		*exe = strdup(path);
		return *exe ? 0 : tf__errf(err, -ENOMEM, "out of memory");
	}
	dirs = getenv("PATH");
	for (p = dirs ? dirs : ""; *p;) {
		const char *colon = strchr(p, ':');
		size_t dn = colon ? (size_t)(colon - p) : strlen(p);
		char cand[PATH_MAX];
		snprintf(cand, sizeof(cand), "%.*s/%s", (int)dn, dn ? p : ".", path);
		if (access(cand, X_OK) == 0) {
			*exe = strdup(cand);
			return *exe ? 0 : tf__errf(err, -ENOMEM, "out of memory");
		}
		p += dn + (colon ? 1 : 0);
		if (!colon)
			break;
	}
	return tf__errf(err, -ENOENT, "--credential_helper=%s: no executable of that name in $PATH", path);
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). */
int dl_rfc3339_parse(const char *s, time_t *out)
{
	struct tm tm = { 0 };
	int y, mo, d, h, mi, sec, n = 0, off = 0;
	const char *p;
	time_t t;

	if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
		return -EINVAL;
	p = s + 10;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -EINVAL;
	p++;
	n = 0;
	if (sscanf(p, "%2d:%2d:%2d%n", &h, &mi, &sec, &n) != 3 || n != 8)
		return -EINVAL;
	for (int i = 0; i < 8; i++)
		if (i % 3 == 2 ? p[i] != ':' : !isdigit((unsigned char)p[i]))
			return -EINVAL;
	for (int i = 0; i < 10; i++)
		if (i == 4 || i == 7 ? s[i] != '-' : !isdigit((unsigned char)s[i]))
			return -EINVAL;
	p += 8;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om;
		if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != ':' ||
		    !isdigit((unsigned char)p[4]) || !isdigit((unsigned char)p[5]))
			return -EINVAL;
		oh = (p[1] - '0') * 10 + (p[2] - '0');
		om = (p[4] - '0') * 10 + (p[5] - '0');
		if (oh > 23 || om > 59)
			return -EINVAL;
		off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -EINVAL;
	}
	if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1 && !(y == 1969 && mo == 12 && d == 31))
		return -EINVAL;
	*out = t - off;
	return 0;
}

static void json_string(tf__buf *b, const char *s)
{
	tf__buf_append(b, "\"", 1);
	for (; *s; s++) {
		char esc[8];
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			tf__buf_append(b, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			tf__buf_append(b, esc, 6);
		} else {
			tf__buf_append(b, s, 1);
		}
	}
	tf__buf_append(b, "\"", 1);
}

/* Runs the helper once: its answer into out. 0, or negative with why. */
static int run_helper(const dl_creds *c, tf__buf *out, char *why, size_t why_len)
{
	const helper *h = c->chosen;
	char *argv[] = { h->exe, (char *)"get", NULL };
	posix_spawn_file_actions_t fa;
	int in[2] = { -1, -1 }, outp[2] = { -1, -1 }, r = 0, status = 0;
	uint64_t deadline = tf__now_ns() + (uint64_t)c->timeout_s * 1000000000ull;
	bool killed = false, exited = false;
	tf__buf req;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) < 0 || pipe2(outp, O_CLOEXEC) < 0) {
		snprintf(why, why_len, "cannot make pipes: %s", strerror(errno));
		r = -errno;
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[1], 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	r = posix_spawn(&pid, h->exe, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[1]);
	close(outp[1]);
	in[1] = outp[1] = -1;
	if (r != 0) {
		snprintf(why, why_len, "cannot run it: %s", strerror(r));
		r = -r;
		goto out;
	}
	/* The request; a helper that does not read it is fine (Bazel ignores
	 * that too). MSG_NOSIGNAL: no SIGPIPE for the process. */
	tf__buf_init(&req, 16384);
	tf__buf_append(&req, "{\"uri\":", 7);
	json_string(&req, c->uri);
	tf__buf_append(&req, "}", 1);
	if (send(in[0], req.data, req.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* ignored: EPIPE (it did not read), EAGAIN cannot happen for so few bytes */
	}
	tf__buf_fini(&req);
	shutdown(in[0], SHUT_WR);
	for (;;) {
		uint64_t now = tf__now_ns();
		struct pollfd pfd = { .fd = outp[0], .events = POLLIN };
		int ms, pr;
		if (now >= deadline) {
			killed = true;
			break;
		}
		ms = (int)((deadline - now) / 1000000u) + 1;
		pr = poll(&pfd, 1, ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			continue;
		size_t room = out->cap - out->len < 4096 ? out->cap - out->len : 4096;
		if (room == 0 || tf__buf_reserve(out, room) < 0) {
			char sink[4096];
			if (read(outp[0], sink, sizeof(sink)) <= 0)
				break;
			out->len = out->cap; /* more than the cap: refused below */
			continue;
		}
		ssize_t k = read(outp[0], out->data + out->len, room);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		out->len += (size_t)k;
	}
	/* Its exit, within what is left of the time. */
	while (!killed) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			exited = true;
			break;
		}
		if (w < 0 && errno != EINTR) {
			exited = true;
			status = 0;
			break;
		}
		if (tf__now_ns() >= deadline) {
			killed = true;
			break;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 2000000 }, NULL);
	}
	if (killed) {
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		snprintf(why, why_len, "it did not answer within --credential_helper_timeout=%lds and was stopped",
			 c->timeout_s);
		r = -ETIMEDOUT;
		goto out;
	}
	if (exited && WIFSIGNALED(status)) {
		snprintf(why, why_len, "it was killed by signal %d", WTERMSIG(status));
		r = -EIO;
	} else if (exited && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
		snprintf(why, why_len, "it exited with code %d (what it wrote to standard error, if anything, is above)",
			 WEXITSTATUS(status));
		r = -EIO;
	} else if (out->len >= out->cap) {
		snprintf(why, why_len, "its answer is longer than %d bytes", TF__CRED_ANSWER_MAX);
		r = -EFBIG;
	}
out:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (outp[i] >= 0)
			close(outp[i]);
	}
	return r;
}

/* A header line libcurl sends as it is: a token name and a value without
 * line breaks. */
static int header_line(const tf__cred_header *hd, size_t i, char **line, char *why, size_t why_len)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";
	if (!*hd->name) {
		snprintf(why, why_len, "header %zu of its answer has an empty name", i + 1);
		return -EBADMSG;
	}
	for (const char *p = hd->name; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(tchar, *p)) {
			snprintf(why, why_len, "header %zu of its answer has a character a header name cannot have",
				 i + 1);
			return -EBADMSG;
		}
	if (strpbrk(hd->value, "\r\n")) {
		snprintf(why, why_len, "header %zu of its answer has a line break in its value", i + 1);
		return -EBADMSG;
	}
	/* "Name;" is libcurl's way to send a header with an empty value. */
	if (asprintf(line, *hd->value ? "%s: %s" : "%s;", hd->name, hd->value) < 0) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

typedef struct lines {
	char **v;
	size_t n;
} lines;

static void lines_free(lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i]) {
			explicit_bzero(l->v[i], strlen(l->v[i]));
			free(l->v[i]);
		}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* The answer's headers as header lines libcurl sends as they are. */
static int answer_lines(const tf__cred_answer *a, lines *out, char *why, size_t why_len)
{
	int r = 0;

	out->n = 0;
	out->v = calloc(a->n ? a->n : 1, sizeof(*out->v));
	if (!out->v) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < a->n && r == 0; i++, out->n++)
		r = header_line(&a->v[i], i, &out->v[i], why, why_len);
	if (r < 0)
		lines_free(out);
	return r;
}

/* Puts copies of the lines into our nodes of *list. */
static int install(dl_creds *c, struct curl_slist **list, const lines *l, char *why, size_t why_len)
{
	struct curl_slist *node = c->first;
	size_t i;

	/* Reuse our nodes; unused ones become "Expect:" (no header sent). */
	for (i = 0; i < c->n_nodes; i++, node = node->next) {
		char *nd = strdup(i < l->n ? l->v[i] : "Expect:");
		if (!nd)
			goto oom;
		explicit_bzero(node->data, strlen(node->data));
		free(node->data);
		node->data = nd;
	}
	for (; i < l->n; i++) {
		struct curl_slist *tail, *n2 = curl_slist_append(*list, l->v[i]);
		if (!n2)
			goto oom;
		*list = n2;
		for (tail = n2; tail->next; tail = tail->next)
			;
		if (!c->first)
			c->first = tail;
		c->n_nodes++;
	}
	return 0;
oom:
	snprintf(why, why_len, "out of memory");
	return -ENOMEM;
}

/* Answers are kept for the process, as Bazel's credential cache is for its
 * server: every downloader (the proxy has two) asking the same helper about
 * the same URI takes the kept answer while it holds. The lock is held while
 * a helper runs, so one run serves them all. */
#define CACHE_MAX 16
static struct {
	char *key; /* exe "\n" uri */
	lines l;
	uint64_t valid_until_ns;
} cache[CACHE_MAX];
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

static int cache_slot(const char *key)
{
	int oldest = 0;
	for (int i = 0; i < CACHE_MAX; i++) {
		if (cache[i].key && !strcmp(cache[i].key, key))
			return i;
		if (!cache[i].key || (cache[oldest].key && cache[i].valid_until_ns < cache[oldest].valid_until_ns))
			oldest = i;
	}
	return -1 - oldest;
}

int dl_creds_refresh(dl_creds *c, struct curl_slist **list, char *why, size_t why_len)
{
	uint64_t now = tf__now_ns(), valid_until = 0;
	tf__cred_answer a = { 0 };
	bool have = false;
	lines l = { 0 };
	tf__buf out;
	char inner[400], *key = NULL;
	time_t exp = 0;
	int r, slot;

	if (!c || !c->chosen || (c->valid_until_ns && now < c->valid_until_ns))
		return 0;
	if (now < c->failed_until_ns) {
		snprintf(why, why_len, "%s", c->failure);
		return -EACCES;
	}
	if (asprintf(&key, "%s\n%s", c->chosen->exe, c->uri) < 0) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&cache_mu);
	slot = cache_slot(key);
	if (slot >= 0 && cache[slot].valid_until_ns && tf__now_ns() < cache[slot].valid_until_ns) {
		r = install(c, list, &cache[slot].l, why, why_len);
		if (r == 0)
			c->valid_until_ns = cache[slot].valid_until_ns;
		pthread_mutex_unlock(&cache_mu);
		free(key);
		return r < 0 ? -EACCES : 0;
	}
	tf__buf_init(&out, TF__CRED_ANSWER_MAX + 1);
	r = run_helper(c, &out, inner, sizeof(inner));
	if (r == 0) {
		char tmp[300];
		r = tf__cred_answer_parse(out.data ? (const void *)out.data : "", out.len, &a, tmp, sizeof(tmp));
		have = r == 0;
		if (r < 0)
			snprintf(inner, sizeof(inner), "its answer is not the JSON of Bazel's protocol: %s", tmp);
	}
	if (out.data)
		explicit_bzero(out.data, out.len);
	tf__buf_fini(&out);
	if (r == 0 && a.has_expires && dl_rfc3339_parse(a.expires, &exp) < 0) {
		snprintf(inner, sizeof(inner), "its \"expires\" is not an RFC 3339 time (2030-01-02T03:04:05Z)");
		r = -EBADMSG;
	}
	if (r == 0)
		r = answer_lines(&a, &l, inner, sizeof(inner));
	if (have)
		tf__cred_answer_fini(&a);
	if (r == 0)
		r = install(c, list, &l, inner, sizeof(inner));
	if (r == 0) {
		if (a.has_expires) {
			time_t wall = time(NULL);
			valid_until = exp > wall ? tf__now_ns() + (uint64_t)(exp - wall) * 1000000000ull : 0;
		} else if (c->cache_s > 0) {
			valid_until = tf__now_ns() + (uint64_t)c->cache_s * 1000000000ull;
		}
		if (valid_until) {
			int i = slot >= 0 ? slot : -1 - slot;
			free(cache[i].key);
			lines_free(&cache[i].l);
			cache[i].key = key;
			cache[i].l = l;
			cache[i].valid_until_ns = valid_until;
			key = NULL;
			l = (lines){ 0 };
		}
	}
	pthread_mutex_unlock(&cache_mu);
	lines_free(&l);
	free(key);
	if (r < 0) {
		snprintf(c->failure, sizeof(c->failure), "credential helper %s for %s: %s", c->chosen->path, c->uri,
			 inner);
		snprintf(why, why_len, "%s", c->failure);
		c->failed_until_ns = tf__now_ns() + HELPER_FAIL_HOLD_NS;
		c->valid_until_ns = 0;
		return -EACCES;
	}
	c->failed_until_ns = 0;
	c->valid_until_ns = valid_until;
	return 0;
}

/* The URI a helper is asked about, and its host: the cache URL without
 * credentials, query or fragment; a grpc(s) cache is https://HOST:PORT, the
 * authority Bazel's gRPC credentials name. */
static int cache_uri(const char *rc, char **uri, char **host)
{
	CURLU *u = curl_url();
	char *s = NULL, *scheme = NULL;
	int r = -EINVAL;

	*uri = *host = NULL;
	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, rc, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &s, 0) != CURLUE_OK)
		goto out;
	*host = strdup(s);
	curl_url_set(u, CURLUPART_USER, NULL, 0);
	curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
	curl_url_set(u, CURLUPART_OPTIONS, NULL, 0);
	curl_url_set(u, CURLUPART_QUERY, NULL, 0);
	curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
	if (!strcmp(scheme, "grpc") || !strcmp(scheme, "grpcs")) {
		curl_url_set(u, CURLUPART_SCHEME, "https", CURLU_NON_SUPPORT_SCHEME);
		curl_url_set(u, CURLUPART_PATH, "", 0);
	}
	curl_free(s);
	s = NULL;
	if (curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK)
		goto out;
	*uri = strdup(s);
	r = *uri && *host ? 0 : -ENOMEM;
out:
	curl_free(s);
	curl_free(scheme);
	curl_url_cleanup(u);
	if (r < 0) {
		free(*uri);
		free(*host);
		*uri = *host = NULL;
	}
	return r;
}

dl_creds *dl_creds_new(const tf_remote_options *opts, bool url_has_user, tf_error *err)
{
	dl_creds *c = calloc(1, sizeof(*c));
	char *host = NULL;
	int r = 0;

	if (!c) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	c->timeout_s = opts->credential_helper_timeout_s > 0 ? opts->credential_helper_timeout_s : 10;
	c->cache_s = opts->credential_helper_cache_duration_s;
	if (opts->n_credential_helpers &&
	    !(c->helpers = calloc(opts->n_credential_helpers, sizeof(*c->helpers)))) {
		r = tf__errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* Every helper is checked, used or not, as Bazel does. */
	for (size_t i = 0; i < opts->n_credential_helpers && r == 0; i++) {
		const char *spec = opts->credential_helpers[i], *eq = strchr(spec, '=');
		helper *h = &c->helpers[c->n_helpers++];
		if (eq) {
			h->scope = strndup(spec, (size_t)(eq - spec));
			if (h->scope && !scope_valid(h->scope)) {
				r = tf__errf(err, -EINVAL,
					     "--credential_helper=%s: the scope '%s' is not a host name (example.com) or a "
					     "wildcard one (*.example.com)",
					     spec, h->scope);
				break;
			}
		}
		h->path = strdup(eq ? eq + 1 : spec);
		if ((eq && !h->scope) || !h->path) {
			r = tf__errf(err, -ENOMEM, "out of memory");
			break;
		}
		if (!*h->path) {
			r = tf__errf(err, -EINVAL, "--credential_helper=%s: no path after the scope", spec);
			break;
		}
		r = resolve_exe(h->path, &h->exe, err);
	}
	if (r < 0)
		goto out;
	r = cache_uri(opts->remote_cache, &c->uri, &host);
	if (r < 0) {
		r = tf__errf(err, r, "--remote_cache is not a URL a credential can be looked up for");
		goto out;
	}
	/* Bazel: a user in the URL wins over everything, then a helper, then netrc. */
	if (url_has_user)
		goto out;
	c->chosen = choose(c->helpers, c->n_helpers, host);
	if (!c->chosen)
		r = netrc_load(c, opts, host, err);
out:
	free(host);
	if (r < 0) {
		dl_creds_free(c);
		return NULL;
	}
	return c;
}

void dl_creds_free(dl_creds *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_helpers; i++) {
		free(c->helpers[i].scope);
		free(c->helpers[i].path);
		free(c->helpers[i].exe);
	}
	free(c->helpers);
	free(c->uri);
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	free(c->login);
	free(c->password);
	free(c);
}

bool dl_creds_netrc(const dl_creds *c, const char **login, const char **password)
{
	if (!c || !c->login)
		return false;
	*login = c->login;
	*password = c->password ? c->password : "";
	return true;
}

bool dl_creds_has_helper(const dl_creds *c)
{
	return c && c->chosen;
}
