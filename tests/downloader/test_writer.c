/* The writer thread (dl_writer, hasher.c) on its own: small blobs placed
 * whole, as unnamed files linked into place (O_TMPFILE) and the named way
 * (temporary file renamed), on /tmp and on /dev/shm: a new file, one that
 * replaces a file already at its name, an executable one, a corrupt body
 * that leaves nothing; never a temporary file left behind, and the stat the
 * engine keeps is the placed file's. Each of the three ways: unnamed files
 * linked by descriptor and through /proc/self/fd, named files. */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "downloader/downloader.h"
#include "tf_test.h"

static void no_wake(void *arg)
{
	(void)arg;
}

static void sha256_hex(const void *data, size_t n, char hex[TF_HASH_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;

	CHECK(EVP_Digest(data, n, md, &len, EVP_sha256(), NULL));
	tf__hex(md, len, hex);
}

static dl_writejob *job(int dirfd, const char *leaf, const char *body, mode_t mode, bool corrupt)
{
	static unsigned n;
	dl_writejob *j = calloc(1, sizeof(*j));

	CHECK(j);
	j->dirfd = dirfd;
	snprintf(j->tmpname, sizeof(j->tmpname), DL_TMP_PREFIX "%ld.%u", (long)getpid(), n++);
	snprintf(j->leaf, sizeof(j->leaf), "%s", leaf);
	j->len = strlen(body);
	memcpy(j->data, body, j->len);
	sha256_hex(corrupt ? "something else" : body, corrupt ? 14 : j->len, j->want);
	j->mode = mode;
	j->chmod = true;
	return j;
}

static void read_file(int dirfd, const char *leaf, char *out, size_t cap)
{
	int fd = openat(dirfd, leaf, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	CHECK(fd >= 0);
	n = read(fd, out, cap - 1);
	CHECK(n >= 0);
	out[n] = 0;
	close(fd);
}

/* Whether the kernel and the file system under dirfd make unnamed files. */
static bool unnamed_works(int dirfd)
{
	int fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Places four jobs in a fresh folder under base and checks what is there. */
static void place_four(const char *base, dl_write_way way)
{
	char dir[256], buf[256];
	struct stat st;
	dl_writejob *a, *b, *c, *x;
	dl_writer *w;
	DIR *dh;
	struct dirent *e;
	int dirfd, back = 0, entries = 0;

	snprintf(dir, sizeof(dir), "%s/tf-test-writer.XXXXXX", base);
	CHECK(mkdtemp(dir));
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(dirfd >= 0);
	/* A file already at b's name (the named way renames over it; a link cannot). */
	int old = openat(dirfd, "b", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	CHECK(old >= 0 && write(old, "old content", 11) == 11);
	close(old);

	w = dl_writer_new(no_wake, NULL, way);
	CHECK(w);
	a = job(dirfd, "a", "first blob", 0644, false);
	b = job(dirfd, "b", "second blob", 0644, false);
	c = job(dirfd, "c", "corrupt blob", 0644, true);
	x = job(dirfd, "x", "#!/bin/sh\n", 0755, false);
	a->owner = a, b->owner = b, c->owner = c, x->owner = x;
	a->next = b, b->next = c, c->next = x;
	dl_writer_submit(w, a);
	while (back < 4) {
		dl_writejob *done = dl_writer_take_done(w);
		if (!done) {
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
			continue;
		}
		for (dl_writejob *j = done; j; j = j->next) {
			CHECK(j->owner == j);
			back++;
		}
	}
	/* The way stays where the kernel and the file system offer it. */
	CHECK_INT_EQ(dl_writer_way(w), way == DL_WRITE_NAMED || unnamed_works(dirfd) ? way : DL_WRITE_NAMED);
	dl_writer_free(w);

	CHECK_INT_EQ(a->err, 0);
	CHECK_STR_EQ(a->hex, a->want);
	read_file(dirfd, "a", buf, sizeof(buf));
	CHECK_STR_EQ(buf, "first blob");
	CHECK(fstatat(dirfd, "a", &st, AT_SYMLINK_NOFOLLOW) == 0);
	CHECK(st.st_ino == a->st.st_ino && st.st_dev == a->st.st_dev);
	CHECK_INT_EQ(st.st_size, 10);
	CHECK_INT_EQ(st.st_mode & 07777, 0644);
	CHECK_INT_EQ(st.st_nlink, 1);

	CHECK_INT_EQ(b->err, 0);
	read_file(dirfd, "b", buf, sizeof(buf));
	CHECK_STR_EQ(buf, "second blob");
	CHECK(fstatat(dirfd, "b", &st, AT_SYMLINK_NOFOLLOW) == 0);
	CHECK(st.st_ino == b->st.st_ino);
	CHECK_INT_EQ(st.st_nlink, 1);

	CHECK(strcmp(c->hex, c->want) != 0); /* reported as corrupt, nothing placed */
	CHECK(faccessat(dirfd, "c", F_OK, AT_SYMLINK_NOFOLLOW) < 0);

	CHECK_INT_EQ(x->err, 0);
	CHECK(fstatat(dirfd, "x", &st, AT_SYMLINK_NOFOLLOW) == 0);
	CHECK_INT_EQ(st.st_mode & 07777, 0755);

	/* a, b, x and nothing else: no temporary file left. */
	dh = fdopendir(dup(dirfd));
	CHECK(dh);
	while ((e = readdir(dh))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		CHECK(strncmp(e->d_name, DL_TMP_PREFIX, strlen(DL_TMP_PREFIX)) != 0);
		entries++;
	}
	closedir(dh);
	CHECK_INT_EQ(entries, 3);
	for (const char *n = "abx"; *n; n++)
		CHECK(unlinkat(dirfd, (char[]){ *n, 0 }, 0) == 0);
	close(dirfd);
	CHECK(rmdir(dir) == 0);
	free(a), free(b), free(c), free(x);
}

static bool have_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode) && access(p, W_OK) == 0;
}

static void both_filesystems(dl_write_way way)
{
	place_four("/tmp", way);
	if (have_dir("/dev/shm"))
		place_four("/dev/shm", way);
}

TEST(writer_links_unnamed_files_by_descriptor)
{
	both_filesystems(DL_WRITE_LINK_FD);
}

TEST(writer_links_unnamed_files_through_proc)
{
	both_filesystems(DL_WRITE_LINK_PROC);
}

TEST(writer_renames_named_files)
{
	both_filesystems(DL_WRITE_NAMED);
}
