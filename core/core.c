#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int tf__errf(tf_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return code;
}

int tf__err_prefix(tf_error *err, const char *fmt, ...)
{
	char both[2 * TF_ERROR_MESSAGE_MAX + 2];
	va_list ap;
	int n;

	if (!err)
		return -EINVAL;
	va_start(ap, fmt);
	n = vsnprintf(both, TF_ERROR_MESSAGE_MAX, fmt, ap);
	va_end(ap);
	if (n < 0)
		return err->code;
	if (n >= TF_ERROR_MESSAGE_MAX)
		n = TF_ERROR_MESSAGE_MAX - 1;
	memcpy(both + n, ": ", 2);
	memcpy(both + n + 2, err->message, TF_ERROR_MESSAGE_MAX);
	both[sizeof(both) - 1] = '\0';
	memcpy(err->message, both, TF_ERROR_MESSAGE_MAX - 1);
	err->message[TF_ERROR_MESSAGE_MAX - 1] = '\0';
	return err->code;
}

bool tf__is_sha256_hex(const char *s, size_t len)
{
	/* A table: digests are checked for every output of every action. */
	static const bool hex[256] = {
		['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
		['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	};
	bool ok = len == TF_HASH_HEX_LEN;

	for (size_t i = 0; i < TF_HASH_HEX_LEN && ok; i += 8)
		ok = hex[(unsigned char)s[i]] & hex[(unsigned char)s[i + 1]] & hex[(unsigned char)s[i + 2]] &
		     hex[(unsigned char)s[i + 3]] & hex[(unsigned char)s[i + 4]] & hex[(unsigned char)s[i + 5]] &
		     hex[(unsigned char)s[i + 6]] & hex[(unsigned char)s[i + 7]];
	return ok;
}

void tf__hex(const unsigned char *in, size_t n, char *out)
{
	/* Two digits per byte from one table: the expansion of a large BEP
	 * writes two digests per file it returns. */
	static const char pairs[] =
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
		"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
		"404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
		"606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
		"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
		"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
		"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
		"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
	for (size_t i = 0; i < n; i++)
		memcpy(out + 2 * i, pairs + 2 * in[i], 2);
	out[2 * n] = '\0';
}

/* Hex digit values plus one; 0 for anything else (uppercase included). */
static const unsigned char hexval[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
	['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

bool tf__unhex(const char *in, size_t n, unsigned char *out)
{
	for (size_t i = 0; i < n; i++) {
		unsigned hi = hexval[(unsigned char)in[2 * i]];
		if (!hi)
			return false;
		unsigned lo = hexval[(unsigned char)in[2 * i + 1]];
		if (!lo)
			return false;
		out[i] = (unsigned char)((hi - 1) << 4 | (lo - 1));
	}
	return true;
}

int tf_digest_parse(const char *hash, int64_t size, tf_digest *out, tf_error *err)
{
	size_t len = hash ? strlen(hash) : 0;

	if (!tf__is_sha256_hex(hash ? hash : "", len))
		return tf__errf(err, -EINVAL, "'%.80s' is not a SHA-256 digest (64 lowercase hex digits)",
				hash ? hash : "");
	if (size < 0 || size > TF__MAX_BLOB_SIZE)
		return tf__errf(err, -ERANGE, "size %lld of blob %s is out of range (0..2^53)",
				(long long)size, hash);
	if (size == 0 && strcmp(hash, TF_EMPTY_SHA256) != 0)
		return tf__errf(err, -EINVAL,
				"blob %s has size 0 but is not the empty blob (%s)", hash, TF_EMPTY_SHA256);
	if (size > 0 && strcmp(hash, TF_EMPTY_SHA256) == 0)
		return tf__errf(err, -EINVAL, "the empty blob cannot have size %lld", (long long)size);
	memcpy(out->hash, hash, TF_HASH_HEX_LEN + 1);
	out->size = size;
	return 0;
}

int tf__path_check(const char *path, const char *what, tf_error *err)
{
	size_t len = strlen(path);
	const char *p = path;

	if (len == 0)
		return tf__errf(err, -EINVAL, "%s: empty path", what);
	if (len > TF__PATH_MAX)
		return tf__errf(err, -ENAMETOOLONG, "%s: path is %zu bytes long (limit %d)", what,
				len, TF__PATH_MAX);
	if (path[0] == '/')
		return tf__errf(err, -EINVAL,
				"%s: path '%s' is absolute; only paths relative to the output directory are allowed",
				what, path);
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n == 0)
			return tf__errf(err, -EINVAL, "%s: path '%s' has an empty component ('//' or a trailing '/')",
					what, path);
		if (n == 1 && p[0] == '.')
			return tf__errf(err, -EINVAL, "%s: path '%s' has a '.' component; paths must be normalised",
					what, path);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return tf__errf(err, -EINVAL,
					"%s: path '%s' has a '..' component and could escape the output directory",
					what, path);
		if (n > TF__NAME_MAX)
			return tf__errf(err, -ENAMETOOLONG, "%s: a component of '%.80s...' is %zu bytes long (limit %d)",
					what, path, n, TF__NAME_MAX);
		if (!slash)
			break;
		p = slash + 1;
		if (*p == '\0')
			return tf__errf(err, -EINVAL, "%s: path '%s' ends with '/'", what, path);
	}
	return 0;
}

int tf__open_parent_beneath(int rootfd, const char *path, bool create, const char **leaf,
			    tf_error *err)
{
	char comp[TF__NAME_MAX + 1];
	const char *p = path;
	int dfd = dup(rootfd);

	if (dfd < 0)
		return tf__errf(err, -errno, "cannot duplicate the output directory handle: %s",
				strerror(errno));
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n;
		int next;

		if (!slash)
			break;
		n = (size_t)(slash - p);
		memcpy(comp, p, n);
		comp[n] = '\0';
		if (create && mkdirat(dfd, comp, 0755) < 0 && errno != EEXIST) {
			int e = errno;
			close(dfd);
			return tf__errf(err, -e, "cannot create folder '%.*s' for '%s': %s",
					(int)(slash - path), path, path, strerror(e));
		}
		next = openat(dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0) {
			int e = errno;
			close(dfd);
			if (e == ELOOP || e == ENOTDIR)
				return tf__errf(err, -ENOTDIR,
						"refusing '%s': '%.*s' is a symlink or not a folder, and paths may not leave the output directory",
						path, (int)(slash - path), path);
			return tf__errf(err, -e, "cannot open folder '%.*s' for '%s': %s",
					(int)(slash - path), path, path, strerror(e));
		}
		close(dfd);
		dfd = next;
		p = slash + 1;
	}
	*leaf = p;
	return dfd;
}

uint64_t tf__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void tf__buf_init(tf__buf *b, size_t cap)
{
	b->data = NULL;
	b->len = b->alloc = 0;
	b->cap = cap;
}

int tf__buf_reserve(tf__buf *b, size_t n)
{
	size_t na;
	unsigned char *nd;

	if (n > b->cap - b->len)
		return -E2BIG;
	if (b->alloc - b->len >= n)
		return 0;
	na = b->alloc ? b->alloc : 256;
	while (na < b->len + n)
		na = na > b->cap / 2 ? b->cap : na * 2;
	nd = realloc(b->data, na);
	if (!nd)
		return -ENOMEM;
	b->data = nd;
	b->alloc = na;
	return 0;
}

int tf__buf_append(tf__buf *b, const void *p, size_t n)
{
	int r = tf__buf_reserve(b, n);

	if (r < 0)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void tf__buf_reset(tf__buf *b)
{
	b->len = 0;
}

void tf__buf_fini(tf__buf *b)
{
	free(b->data);
	tf__buf_init(b, b->cap);
}

int tf__buf_json_string(tf__buf *b, const char *s)
{
	const unsigned char *c = (const unsigned char *)s;
	int r;

	if (!s)
		return tf__buf_append(b, "null", 4);
	if ((r = tf__buf_append(b, "\"", 1)) < 0)
		return r;
	while (*c && r == 0) {
		int n = *c < 0x80 ? 1 : (*c & 0xe0) == 0xc0 ? 2 : (*c & 0xf0) == 0xe0 ? 3 : (*c & 0xf8) == 0xf0 ? 4 : 0;
		bool ok = n > 0 && !(n == 2 && *c < 0xc2);
		char esc[8];

		for (int i = 1; ok && i < n; i++)
			ok = (c[i] & 0xc0) == 0x80;
		if (!ok) {
			r = tf__buf_append(b, "\\ufffd", 6);
			c++;
			continue;
		}
		if (*c == '"' || *c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*c;
			r = tf__buf_append(b, esc, 2);
		} else if (*c < 0x20 || *c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", *c);
			r = tf__buf_append(b, esc, 6);
		} else {
			r = tf__buf_append(b, c, (size_t)n);
		}
		c += n;
	}
	return r < 0 ? r : tf__buf_append(b, "\"", 1);
}
