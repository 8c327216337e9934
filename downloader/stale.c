/* Removing the temporary files a killed run left behind: all of them (a
 * session, which owns its output folder through the store's lock), or only
 * those whose process is gone (fetch, which may share the folder with
 * other runs). Only names the engine creates (.tftmp.<pid>.<n>) are touched; folders are walked without
 * following symlinks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "downloader/downloader.h"

#define STALE_MAX_DEPTH 256

/* Is the process that named this temporary file (.tftmp.<pid>.<n>) gone? */
static bool owner_dead(const char *name)
{
	const char *p = name + strlen(DL_TMP_PREFIX);
	char *end;
	long pid;

	errno = 0;
	pid = strtol(p, &end, 10);
	if (errno || end == p || *end != '.' || pid <= 0)
		return true; /* not a name a live run of ours would use */
	return pid != (long)getpid() && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int walk(int dfd, int depth, bool only_dead, uint64_t *removed, tf_error *err)
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
				r = walk(sub, depth + 1, only_dead, removed, err);
				continue;
			}
			if (e->d_type == DT_DIR)
				continue;
		}
		if (!strncmp(e->d_name, DL_TMP_PREFIX, strlen(DL_TMP_PREFIX)) && (!only_dead || owner_dead(e->d_name))) {
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

static int remove_tmp(int rootfd, bool only_dead, uint64_t *removed, tf_error *err)
{
	int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t n = 0;
	int r;

	if (fd < 0)
		return tf__errf(err, -errno, "cannot open the output directory: %s", strerror(errno));
	r = walk(fd, 0, only_dead, &n, err);
	if (removed)
		*removed = n;
	return r;
}

int dl_remove_stale_tmp(int rootfd, uint64_t *removed, tf_error *err)
{
	return remove_tmp(rootfd, false, removed, err);
}

int dl_remove_dead_tmp(int rootfd, uint64_t *removed, tf_error *err)
{
	return remove_tmp(rootfd, true, removed, err);
}
