/* Outputs no cache holds (an action Bazel runs locally and never caches:
 * sh_binary's symlink, a no-remote action): copied from Bazel's own output
 * tree, through the file:// URI its BEP gives for them, hashed while copied.
 * The copy lands atomically under a temporary name the downloader's crash
 * recovery knows (DL_TMP_PREFIX). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "downloader/downloader.h"
#include "session/session.h"

#define COPY_CHUNK (256u << 10)

/* file:///abs/path with %XX escapes -> /abs/path (malloc'd), or NULL. */
char *ses_file_uri_path(const char *uri)
{
	const char *p;
	char *out, *o;

	if (!uri || strncmp(uri, "file://", 7) != 0)
		return NULL;
	p = uri + 7;
	if (*p != '/' || !(out = malloc(strlen(p) + 1)))
		return NULL;
	for (o = out; *p; p++) {
		unsigned char b;
		if (*p == '%' && p[1] && p[2]) {
			char hx[3] = { (char)(p[1] | 0x20), (char)(p[2] | 0x20), 0 };
			if (!tf__unhex(hx, 1, &b) || !b) {
				free(out);
				return NULL;
			}
			*o++ = (char)b;
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
	return out;
}

static int copy_bytes(int in, int out, EVP_MD_CTX *md, int64_t *size)
{
	unsigned char *buf = malloc(COPY_CHUNK);
	ssize_t got;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	*size = 0;
	while ((got = read(in, buf, COPY_CHUNK)) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		EVP_DigestUpdate(md, buf, (size_t)got);
		for (ssize_t off = 0; off < got;) {
			ssize_t w = write(out, buf + off, (size_t)(got - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				r = -errno;
				goto out;
			}
			off += w;
		}
		*size += got;
	}
out:
	free(buf);
	return r;
}

int ses_copy_local(const char *src, int rootfd, const char *dest, bool *exec, tf_digest *dg, tf_error *err)
{
	static unsigned counter;
	char tmp[64];
	const char *leaf;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = NULL;
	struct stat sb;
	int in = -1, out = -1, dir = -1, r;

	in = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY); /* a symlink is followed, as Bazel's readers do */
	if (in < 0)
		return tf__errf(err, -errno, "cannot read %s in Bazel's output tree: %s", src, strerror(errno));
	if (fstat(in, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		r = tf__errf(err, -EISDIR, "%s in Bazel's output tree is not a regular file", src);
		goto out;
	}
	*exec = (sb.st_mode & 0111) != 0;
	/* The destination's folders are walked without following a symlink. */
	dir = tf__open_parent_beneath(rootfd, dest, true, &leaf, err);
	if (dir < 0) {
		r = dir;
		goto out;
	}
	snprintf(tmp, sizeof(tmp), DL_TMP_PREFIX "%ld.%u", (long)getpid(), 0x80000000u + counter++);
	out = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, *exec ? 0755 : 0644);
	if (out < 0) {
		r = tf__errf(err, -errno, "cannot create a temporary file beside %s: %s", dest, strerror(errno));
		goto out;
	}
	ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		r = tf__errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	r = copy_bytes(in, out, ctx, &dg->size);
	if (r == 0 && fchmod(out, *exec ? 0755 : 0644) < 0)
		r = -errno;
	if (r == 0 && close(out) < 0)
		r = -errno;
	out = -1;
	if (r == 0 && renameat(dir, tmp, dir, leaf) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dir, tmp, 0);
		r = tf__errf(err, r, "copying %s to %s: %s", src, dest, strerror(-r));
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	tf__hex(md, 32, dg->hash);
out:
	EVP_MD_CTX_free(ctx);
	if (out >= 0) {
		close(out);
		unlinkat(dir, tmp, 0);
	}
	if (dir >= 0)
		close(dir);
	if (in >= 0)
		close(in);
	return r;
}

/* Does target, relative to the folder of dest, stay inside (dest is a
 * checked relative path)? */
static bool stays_inside(const char *dest, const char *target)
{
	long depth = 0;
	const char *p;

	if (!target || !*target || target[0] == '/')
		return false;
	for (p = dest; *p; p++)
		depth += *p == '/';
	for (p = target; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			if (--depth < 0)
				return false;
		} else if (len && !(len == 1 && p[0] == '.')) {
			depth++;
		}
		p += len;
		while (*p == '/')
			p++;
	}
	return true;
}

int ses_make_symlink(int rootfd, const char *dest, const char *target, char *why, size_t n)
{
	static unsigned counter;
	char tmp[64], have[TF__PATH_MAX + 1];
	const char *leaf;
	tf_error err = { 0 };
	ssize_t got;
	int dir, r = 0;

	if (!stays_inside(dest, target)) {
		snprintf(why, n, "the output symlink %s points to %s, outside the output folder: not made there "
			 "(Bazel's own output tree has it)", dest, target ? target : "(nothing)");
		return -EXDEV;
	}
	dir = tf__open_parent_beneath(rootfd, dest, true, &leaf, &err);
	if (dir < 0) {
		snprintf(why, n, "cannot make the output symlink %s: %s", dest, err.message);
		return dir;
	}
	got = readlinkat(dir, leaf, have, sizeof(have) - 1);
	if (got >= 0 && (have[got] = 0, !strcmp(have, target))) {
		close(dir);
		return 0; /* already there */
	}
	snprintf(tmp, sizeof(tmp), DL_TMP_PREFIX "%ld.%u", (long)getpid(), 0xC0000000u + counter++);
	if (symlinkat(target, dir, tmp) < 0 || renameat(dir, tmp, dir, leaf) < 0) {
		r = -errno;
		unlinkat(dir, tmp, 0);
		snprintf(why, n, "cannot make the output symlink %s -> %s: %s", dest, target, strerror(-r));
	}
	close(dir);
	return r;
}
