/* The reader of Bazel's --build_event_binary_file: records of varint32
 * length + serialized BuildEvent, concatenated, no header (Java's
 * writeDelimitedTo). Bazel writes the file while the build runs, so "no
 * complete record yet" is a normal answer, distinct from "the input ended",
 * which only ev_reader_finish (or a closed pipe) declares.
 *
 * State: bytes [start, end) of buf are read but not yet returned; `consumed`
 * is the input offset of buf[start]. Errors are sticky. */
#include "events/events_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK ((size_t)256 << 10)
#define PREFIX_MAX 5 /* a varint32 */

struct ev_reader {
	int fd;
	bool own_fd;
	bool regular;
	char *name;
	char *path; /* when opened by path: followed with inotify, checked for replacement */
	dev_t dev;
	ino_t ino;
	ev_reader_options o;

	unsigned char *buf;
	size_t start, end, alloc, cap;
	uint64_t consumed;   /* input offset of buf[start] */
	uint64_t read_total; /* bytes read from the input */
	uint64_t records;    /* records returned */

	bool eof;      /* the last read found nothing */
	bool closed;   /* a pipe or socket reached its end: nothing more will come */
	bool complete; /* the last_message record was returned */

	int error; /* sticky: once set, every call returns it */
	tf_error saved;

	int inotify_fd;
};

void ev_reader_options_init(ev_reader_options *o)
{
	o->max_message_size = EV_DEFAULT_MAX_MESSAGE;
	o->max_depth = EV_DEFAULT_MAX_DEPTH;
}

void ev_follow_options_init(ev_follow_options *o)
{
	o->idle_timeout_ms = -1;
	o->poll_interval_ms = 100;
	o->stop = NULL;
}

static ev_reader *reader_new(int fd, bool own, const char *name, const char *path,
			     const ev_reader_options *opts, tf_error *err)
{
	ev_reader *r = calloc(1, sizeof(*r));
	struct stat st;

	if (!r)
		goto nomem;
	r->fd = fd;
	r->own_fd = own;
	r->inotify_fd = -1;
	if (opts)
		r->o = *opts;
	else
		ev_reader_options_init(&r->o);
	if (r->o.max_message_size == 0)
		r->o.max_message_size = EV_DEFAULT_MAX_MESSAGE;
	if (r->o.max_message_size > UINT32_MAX)
		r->o.max_message_size = UINT32_MAX;
	if (r->o.max_depth == 0)
		r->o.max_depth = EV_DEFAULT_MAX_DEPTH;
	r->cap = r->o.max_message_size + PREFIX_MAX + READ_CHUNK;
	r->name = strdup(name);
	if (!r->name || (path && !(r->path = strdup(path))))
		goto nomem;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		tf__errf(err, -e, "%s: cannot stat: %s", name, strerror(e));
		r->own_fd = false; /* the caller closes what it opened */
		ev_reader_free(r);
		return NULL;
	}
	r->regular = S_ISREG(st.st_mode);
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	return r;
nomem:
	tf__errf(err, -ENOMEM, "%s: out of memory", name);
	if (r)
		r->own_fd = false;
	ev_reader_free(r);
	return NULL;
}

ev_reader *ev_reader_new(const char *path, const ev_reader_options *opts, tf_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	ev_reader *r;

	if (fd < 0) {
		int e = errno;
		tf__errf(err, -e, "%s: cannot open the BEP file: %s", path, strerror(e));
		return NULL;
	}
	r = reader_new(fd, true, path, path, opts, err);
	if (!r)
		close(fd);
	return r;
}

ev_reader *ev_reader_new_fd(int fd, const char *name, const ev_reader_options *opts,
			    tf_error *err)
{
	return reader_new(fd, false, name ? name : "BEP input", NULL, opts, err);
}

void ev_reader_free(ev_reader *r)
{
	if (!r)
		return;
	if (r->inotify_fd >= 0)
		close(r->inotify_fd);
	if (r->own_fd && r->fd >= 0)
		close(r->fd);
	free(r->buf);
	free(r->name);
	free(r->path);
	free(r);
}

bool ev_reader_complete(const ev_reader *r)
{
	return r->complete;
}

bool ev_reader_at_eof(const ev_reader *r)
{
	return r->eof;
}

uint64_t ev_reader_records(const ev_reader *r)
{
	return r->records;
}

uint64_t ev_reader_offset(const ev_reader *r)
{
	return r->consumed;
}

static int fail(ev_reader *r, tf_error *err)
{
	/* err was filled by the caller's tf__errf; keep a copy for later calls. */
	if (err) {
		r->saved = *err;
		r->error = err->code;
	} else {
		r->error = -EIO;
		r->saved.code = -EIO;
		snprintf(r->saved.message, sizeof(r->saved.message), "%s: read failed", r->name);
	}
	return r->error;
}

static int sticky(ev_reader *r, tf_error *err)
{
	if (err)
		*err = r->saved;
	return r->error;
}

/* Makes room for `need` more bytes after end, within the cap. */
static int make_room(ev_reader *r, size_t need, tf_error *err)
{
	size_t want;
	unsigned char *nb;

	if (r->alloc - r->end >= need && r->alloc - r->end >= READ_CHUNK / 4)
		return 0;
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
		if (r->alloc - r->end >= need && r->alloc - r->end >= READ_CHUNK / 4)
			return 0;
	}
	want = r->end + (need > READ_CHUNK ? need : READ_CHUNK);
	if (want > r->cap)
		want = r->cap;
	if (want < r->end + need)
		return tf__errf(err, -E2BIG, "%s: reader buffer cap of %zu bytes reached", r->name,
				r->cap);
	if (want <= r->alloc)
		return 0;
	nb = realloc(r->buf, want);
	if (!nb)
		return tf__errf(err, -ENOMEM, "%s: out of memory for a %zu-byte read buffer", r->name,
				want);
	r->buf = nb;
	r->alloc = want;
	return 0;
}

/* Reads what is available now, at least trying for `need` bytes. Returns
 * the bytes read, 0 when nothing is available (r->eof set), or an error. */
static int fill(ev_reader *r, size_t need, tf_error *err)
{
	ssize_t n;
	int rc = make_room(r, need, err);

	if (rc < 0)
		return rc;
	if (!r->regular) {
		/* Never block on a pipe or socket, and do not touch the
		 * caller's O_NONBLOCK: ask poll first. */
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int pr;
		do
			pr = poll(&p, 1, 0);
		while (pr < 0 && errno == EINTR);
		if (pr < 0) {
			int e = errno;
			return tf__errf(err, -e, "%s: cannot poll: %s", r->name, strerror(e));
		}
		if (pr == 0) {
			r->eof = true;
			return 0;
		}
	}
	do
		n = read(r->fd, r->buf + r->end, r->alloc - r->end);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = errno;
		if (e == EAGAIN || e == EWOULDBLOCK) {
			r->eof = true;
			return 0;
		}
		return tf__errf(err, -e, "%s: read failed at byte offset %llu: %s", r->name,
				(unsigned long long)r->read_total, strerror(e));
	}
	if (n == 0) {
		r->eof = true;
		if (!r->regular) {
			r->closed = true;
		} else {
			struct stat st;
			if (fstat(r->fd, &st) == 0 && (uint64_t)st.st_size < r->read_total)
				return tf__errf(err, -ESTALE,
						"%s: the file shrank to %lld bytes after %llu bytes had been read (truncated or rewritten, e.g. by a new build)",
						r->name, (long long)st.st_size,
						(unsigned long long)r->read_total);
		}
		return 0;
	}
	r->eof = false;
	r->end += (size_t)n;
	r->read_total += (uint64_t)n;
	return (int)(n > INT32_MAX ? INT32_MAX : n);
}

/* Looks at the bytes at buf[start]: 1 and an event when a whole record is
 * there, 0 and *need (bytes still missing) when not, or an error. */
static int parse(ev_reader *r, ev_event **out, size_t *need, tf_error *err)
{
	const unsigned char *p;
	size_t avail = r->end - r->start, plen = 0;
	uint64_t len = 0, record = r->records + 1;
	ev_event *ev;
	int rc, n;

	*need = 1;
	if (avail == 0)
		return 0; /* (buf may still be NULL: no pointer arithmetic on it) */
	p = r->buf + r->start;
	if (r->complete)
		return tf__errf(err, -EBADMSG,
				"%s: data follows the last_message record (record %llu, which ends at byte offset %llu)",
				r->name, (unsigned long long)r->records,
				(unsigned long long)r->consumed);
	n = pw_varint(p, avail < PREFIX_MAX ? avail : PREFIX_MAX, &len);
	if (n == 0 && avail < PREFIX_MAX)
		return 0; /* the prefix is not all here yet */
	if (n <= 0 || len > UINT32_MAX)
		return tf__errf(err, -EBADMSG,
				"%s: the length prefix of record %llu at byte offset %llu is not a 32-bit varint",
				r->name, (unsigned long long)record, (unsigned long long)r->consumed);
	plen = (size_t)n;
	if (len > r->o.max_message_size)
		return tf__errf(err, -EMSGSIZE,
				"%s: record %llu at byte offset %llu claims %llu bytes, over the cap of %zu bytes per BuildEvent",
				r->name, (unsigned long long)record, (unsigned long long)r->consumed,
				(unsigned long long)len, r->o.max_message_size);
	if (avail - plen < len) {
		*need = (size_t)len - (avail - plen);
		return 0;
	}
	rc = ev_event_decode(p + plen, (size_t)len, r->o.max_depth, r->name, record,
			     r->consumed + plen, &ev, err);
	if (rc < 0)
		return rc;
	ev->offset = r->consumed;
	r->start += plen + (size_t)len;
	r->consumed += plen + len;
	r->records = record;
	if (ev->msg->last_message)
		r->complete = true;
	*out = ev;
	return 1;
}

int ev_reader_next(ev_reader *r, ev_event **out, tf_error *err)
{
	*out = NULL;
	if (r->error)
		return sticky(r, err);
	for (;;) {
		size_t need;
		int rc = parse(r, out, &need, err);

		if (rc != 0)
			return rc < 0 ? fail(r, err) : 1;
		if (r->start == r->end && r->alloc > 4 * READ_CHUNK) {
			/* Give back what one huge record needed. */
			free(r->buf);
			r->buf = NULL;
			r->start = r->end = r->alloc = 0;
		}
		rc = fill(r, need, err);
		if (rc < 0)
			return fail(r, err);
		if (rc == 0)
			return 0;
	}
}

/* The description of where a stream stopped, for finish and follow. */
static int judge_end(ev_reader *r, int quiet_code, const char *why, tf_error *err)
{
	const unsigned char *p = r->buf + r->start;
	size_t avail = r->end - r->start, plen = 0;
	uint64_t len = 0, record = r->records + 1;
	int n;

	if (avail == 0 && r->complete)
		return 0;
	if (avail > 0 && r->complete)
		return tf__errf(err, -EBADMSG,
				"%s: %s%zu bytes follow the last_message record (record %llu, which ends at byte offset %llu)",
				r->name, why, avail, (unsigned long long)r->records,
				(unsigned long long)r->consumed);
	if (avail == 0)
		return tf__errf(err, quiet_code,
				"%s: %sincomplete stream: ended after record %llu at byte offset %llu without last_message",
				r->name, why, (unsigned long long)r->records,
				(unsigned long long)r->consumed);
	n = pw_varint(p, avail < PREFIX_MAX ? avail : PREFIX_MAX, &len);
	if (n > 0) {
		plen = (size_t)n;
		return tf__errf(err, -EBADMSG,
				"%s: %sincomplete stream: record %llu at byte offset %llu is truncated: its length prefix says %llu bytes, but the input ends after %zu (last complete record: %llu)",
				r->name, why, (unsigned long long)record, (unsigned long long)r->consumed,
				(unsigned long long)len, avail - plen, (unsigned long long)r->records);
	}
	return tf__errf(err, -EBADMSG,
			"%s: %sincomplete stream: truncated length prefix of record %llu at byte offset %llu: the input ends after %zu byte(s) of the varint (last complete record: %llu)",
			r->name, why, (unsigned long long)record, (unsigned long long)r->consumed, avail,
			(unsigned long long)r->records);
}

int ev_reader_finish(ev_reader *r, tf_error *err)
{
	int rc;

	if (r->error)
		return sticky(r, err);
	for (;;) {
		ev_event *ev = NULL;
		size_t need;

		rc = parse(r, &ev, &need, err);
		if (rc > 0) {
			/* Not an input error: the caller skipped records. Put it
			 * back and say so; the reader stays usable. */
			r->start -= (size_t)(r->consumed - ev->offset);
			r->consumed = ev->offset;
			r->records--;
			if (ev->msg->last_message)
				r->complete = false;
			ev_event_unref(ev);
			return tf__errf(err, -EINVAL,
					"%s: record %llu is still unread: call ev_reader_next until it returns 0 before ev_reader_finish",
					r->name, (unsigned long long)(r->records + 1));
		}
		if (rc < 0)
			return fail(r, err);
		rc = fill(r, need, err);
		if (rc < 0)
			return fail(r, err);
		if (rc == 0)
			break;
	}
	rc = judge_end(r, -ENODATA, "", err);
	return rc < 0 ? fail(r, err) : 0;
}

/* ---- following a growing input ---------------------------------------------- */

static uint64_t now_ms(void)
{
	return tf__now_ns() / 1000000u;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Watches the file for writes; -1 when inotify is not available (then we
 * only sleep, which is slower to notice but still correct). */
static int watch_file(ev_reader *r)
{
	char proc[64];
	const char *target = r->path;
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	if (fd < 0)
		return -1;
	if (!target) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", r->fd);
		target = proc;
	}
	if (inotify_add_watch(fd, target,
			      IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVE_SELF | IN_DELETE_SELF) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void drain_inotify(int fd)
{
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Did someone replace the file at our path (a new build that removed and
 * recreated it)? We would read a stale inode forever. */
static int check_replaced(ev_reader *r, tf_error *err)
{
	struct stat st;

	if (!r->path)
		return 0;
	if (stat(r->path, &st) < 0)
		return tf__errf(err, -ESTALE,
				"%s: the file was removed while being followed (after record %llu at byte offset %llu)",
				r->name, (unsigned long long)r->records,
				(unsigned long long)r->consumed);
	if (st.st_dev != r->dev || st.st_ino != r->ino)
		return tf__errf(err, -ESTALE,
				"%s: the file was replaced by another one while being followed (after record %llu at byte offset %llu)",
				r->name, (unsigned long long)r->records,
				(unsigned long long)r->consumed);
	return 0;
}

int ev_reader_follow(ev_reader *r, const ev_follow_options *opts, ev_event_cb cb, void *user,
		     tf_error *err)
{
	ev_follow_options o;
	uint64_t last_progress = now_ms(), seen = r->read_total;
	bool watch_tried = false;

	if (opts)
		o = *opts;
	else
		ev_follow_options_init(&o);
	if (o.poll_interval_ms < 1)
		o.poll_interval_ms = 1;
	if (o.poll_interval_ms > 1000)
		o.poll_interval_ms = 1000;

	for (;;) {
		ev_event *ev;
		int rc, wait;

		if (o.stop && atomic_load(o.stop))
			return tf__errf(err, -ECANCELED,
					"%s: stopped while following the stream (after record %llu at byte offset %llu)",
					r->name, (unsigned long long)r->records,
					(unsigned long long)r->consumed);
		rc = ev_reader_next(r, &ev, err);
		if (rc < 0)
			return rc;
		if (r->read_total != seen) {
			seen = r->read_total;
			last_progress = now_ms();
		}
		if (rc == 1) {
			bool last = ev->msg->last_message;
			rc = cb(ev, user, err);
			ev_event_unref(ev);
			if (rc < 0)
				return rc;
			if (last)
				return 0;
			continue;
		}
		if (r->closed)
			return ev_reader_finish(r, err);
		rc = check_replaced(r, err);
		if (rc < 0)
			return fail(r, err);
		wait = o.poll_interval_ms;
		if (o.idle_timeout_ms >= 0) {
			uint64_t idle = now_ms() - last_progress;
			if (idle >= (uint64_t)o.idle_timeout_ms) {
				char why[96];
				snprintf(why, sizeof(why), "no new data for %d ms; ", o.idle_timeout_ms);
				rc = judge_end(r, -ETIMEDOUT, why, err);
				if (rc == -EBADMSG && err)
					err->code = -ETIMEDOUT; /* the description stands */
				return rc < 0 ? -ETIMEDOUT : 0;
			}
			if ((uint64_t)wait > o.idle_timeout_ms - idle)
				wait = (int)(o.idle_timeout_ms - idle);
		}
		if (r->regular) {
			if (!watch_tried) {
				watch_tried = true;
				r->inotify_fd = r->inotify_fd >= 0 ? r->inotify_fd : watch_file(r);
				/* The file may have grown before the watch existed. */
				continue;
			}
			if (r->inotify_fd >= 0) {
				struct pollfd p = { .fd = r->inotify_fd, .events = POLLIN };
				if (poll(&p, 1, wait) > 0)
					drain_inotify(r->inotify_fd);
			} else {
				sleep_ms(wait);
			}
		} else {
			struct pollfd p = { .fd = r->fd, .events = POLLIN };
			poll(&p, 1, wait);
		}
	}
}
