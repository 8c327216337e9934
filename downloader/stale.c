/* Removing the temporary files a killed run left behind. Only names the
 * engine creates (.tftmp.<pid>.<n>) are touched; folders are walked without
 * following symlinks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "downloader/downloader.h"

#define STALE_MAX_DEPTH 256

static int walk(int dfd, int depth, uint64_t *removed, tf_error *err)
{
	DIR *d;
	struct dirent *e;
	int r = 0;

	if (depth > STALE_MAX_DEPTH)
		return 0; /* deeper folders cannot hold our files: we never create them */
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return tf__errf(err, -errno, "cannot list a folder of the output directory: %s", strerror(errno));
	}
	while (r == 0 && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) {
			int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				r = walk(sub, depth + 1, removed, err);
				continue;
			}
			if (e->d_type == DT_DIR)
				continue;
		}
		if (!strncmp(e->d_name, DL_TMP_PREFIX, strlen(DL_TMP_PREFIX))) {
			if (unlinkat(dirfd(d), e->d_name, 0) == 0)
				(*removed)++;
			else if (errno != ENOENT)
				r = tf__errf(err, -errno, "cannot remove the stale temporary file %s: %s", e->d_name,
					     strerror(errno));
		}
	}
	closedir(d);
	return r;
}

int dl_remove_stale_tmp(int rootfd, uint64_t *removed, tf_error *err)
{
	int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t n = 0;
	int r;

	if (fd < 0)
		return tf__errf(err, -errno, "cannot open the output directory: %s", strerror(errno));
	r = walk(fd, 0, &n, err);
	if (removed)
		*removed = n;
	return r;
}
