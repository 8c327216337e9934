/* Writers for Bazel's two BEP file formats. Events are encoded into one
 * buffer and written out in 64 KiB batches (and on flush/close), so a
 * stream of small events costs few system calls. A failed write is final:
 * the file is short by an unknown amount and later events would only make
 * it more wrong. */
#include "events/events_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLUSH_AT ((size_t)64 << 10)
/* One event's encoding may need this much (a 64 MiB event of control
 * characters is six times longer as JSON). */
#define WRITER_BUF_CAP ((size_t)1 << 30)

struct ev_writer {
	int fd;
	bool own_fd;
	ev_format format;
	char *name;
	tf__buf buf;
	uint64_t written;
	int error; /* sticky */
	tf_error saved;
};

int ev_binary_append(tf__buf *out, const ProtobufCMessage *m, tf_error *err)
{
	size_t size = protobuf_c_message_get_packed_size(m), at;
	uint8_t *p;
	int rc;

	if (size > UINT32_MAX)
		return tf__errf(err, -EMSGSIZE, "a %s of %zu bytes does not fit the varint32 framing",
				m->descriptor->name, size);
	rc = tf__buf_reserve(out, size + 5);
	if (rc < 0)
		return tf__errf(err, rc, "binary encoding of a %zu-byte %s: %s", size,
				m->descriptor->name,
				rc == -E2BIG ? "over the output buffer's cap" : strerror(-rc));
	p = out->data + out->len;
	at = 0;
	{
		uint32_t v = (uint32_t)size;
		while (v >= 0x80) {
			p[at++] = (uint8_t)(v | 0x80);
			v >>= 7;
		}
		p[at++] = (uint8_t)v;
	}
	at += protobuf_c_message_pack(m, p + at);
	out->len += at;
	return 0;
}

static ev_writer *writer_new(int fd, bool own, const char *name, ev_format format, tf_error *err)
{
	ev_writer *w = calloc(1, sizeof(*w));

	if (!w || !(w->name = strdup(name))) {
		free(w);
		tf__errf(err, -ENOMEM, "%s: out of memory", name);
		return NULL;
	}
	w->fd = fd;
	w->own_fd = own;
	w->format = format;
	tf__buf_init(&w->buf, WRITER_BUF_CAP);
	return w;
}

ev_writer *ev_writer_new(const char *path, ev_format format, tf_error *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
	ev_writer *w;

	if (fd < 0) {
		int e = errno;
		tf__errf(err, -e, "%s: cannot create the BEP %s file: %s", path,
			 format == EV_FORMAT_JSON ? "JSON" : "binary", strerror(e));
		return NULL;
	}
	w = writer_new(fd, true, path, format, err);
	if (!w)
		close(fd);
	return w;
}

ev_writer *ev_writer_new_fd(int fd, const char *name, ev_format format, tf_error *err)
{
	return writer_new(fd, false, name ? name : "BEP output", format, err);
}

static int fail(ev_writer *w, tf_error *err)
{
	w->error = w->saved.code;
	if (err)
		*err = w->saved;
	return w->error;
}

int ev_writer_flush(ev_writer *w, tf_error *err)
{
	size_t off = 0;

	if (w->error) {
		if (err)
			*err = w->saved;
		return w->error;
	}
	while (off < w->buf.len) {
		ssize_t n = write(w->fd, w->buf.data + off, w->buf.len - off);
		if (n < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			tf__errf(&w->saved, -e, "%s: write failed after %llu bytes: %s", w->name,
				 (unsigned long long)w->written, strerror(e));
			return fail(w, err);
		}
		if (n == 0) {
			tf__errf(&w->saved, -EIO, "%s: write made no progress after %llu bytes",
				 w->name, (unsigned long long)w->written);
			return fail(w, err);
		}
		off += (size_t)n;
		w->written += (uint64_t)n;
	}
	w->buf.len = 0;
	if (w->buf.alloc > 4 * FLUSH_AT) {
		/* Give back what one huge event needed. */
		tf__buf_fini(&w->buf);
	}
	return 0;
}

int ev_writer_write(ev_writer *w, const BuildEventStream__BuildEvent *m, tf_error *err)
{
	size_t mark = w->buf.len;
	int rc;

	if (w->error) {
		if (err)
			*err = w->saved;
		return w->error;
	}
	if (w->format == EV_FORMAT_JSON) {
		rc = ev_json_append(&w->buf, &m->base, err);
		if (rc == 0) {
			rc = tf__buf_append(&w->buf, "\n", 1);
			if (rc < 0) { /* keep whole lines only */
				w->buf.len = mark;
				tf__errf(err, rc, "the output buffer is full");
			}
		}
	} else {
		rc = ev_binary_append(&w->buf, &m->base, err);
	}
	if (rc < 0) {
		/* Nothing of this event reached the buffer (ev_json_append
		 * restores it on failure); the writer stays usable. */
		return err ? tf__err_prefix(err, "%s", w->name) : rc;
	}
	if (w->buf.len >= FLUSH_AT)
		return ev_writer_flush(w, err);
	return 0;
}

int ev_writer_close(ev_writer *w, tf_error *err)
{
	int rc = ev_writer_flush(w, err);

	if (w->own_fd && w->fd >= 0) {
		if (close(w->fd) < 0 && rc == 0) {
			int e = errno;
			rc = tf__errf(err, -e, "%s: close failed: %s", w->name, strerror(e));
		}
		w->fd = -1;
	}
	return rc;
}

uint64_t ev_writer_bytes(const ev_writer *w)
{
	return w->written;
}

void ev_writer_free(ev_writer *w)
{
	if (!w)
		return;
	if (w->own_fd && w->fd >= 0)
		close(w->fd);
	tf__buf_fini(&w->buf);
	free(w->name);
	free(w);
}
