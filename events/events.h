/* events/ — the Build Event Protocol side of topfetch: decoded events, the
 * reader of Bazel's delimited binary stream (tolerant of a file that is still
 * growing), the NamedSetOfFiles graph, the binary and JSON writers, and the
 * nanomsg PUB sink. Module prefix ev_. This header is the folder's contract;
 * nothing here prints, every failure comes back as a negative errno-style
 * code plus a tf_error naming the input, the record and the byte offset.
 *
 * Numbering: records are counted from 1 in the order they appear in the
 * stream; byte offsets are counted from 0 at the start of the input. None of
 * these objects is thread-safe: each is used by one thread at a time. */
#ifndef TF_EVENTS_H
#define TF_EVENTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "build_event_stream.pb-c.h"
#include "core/core.h"
#include "proto/wire.h"

/* ---- caps ------------------------------------------------------------------ */

#define EV_DEFAULT_MAX_MESSAGE (64u << 20) /* bytes of one BuildEvent */
#define EV_DEFAULT_MAX_DEPTH PW_DEFAULT_MAX_DEPTH /* protobuf message nesting */
#define EV_DEFAULT_MAX_SETS 2000000u       /* NamedSetOfFiles ids kept at once (~100 B each) */
#define EV_DEFAULT_MAX_FILES 10000000u     /* File entries across all kept sets */
#define EV_DEFAULT_MAX_SET_DEPTH 10000u    /* longest chain of file_sets references */

/* ---- one decoded event ------------------------------------------------------ */

/* A BuildEvent plus where it came from. The message and everything it points
 * to live in the event's own arena: never pass them to
 * protobuf_c_message_free_unpacked, and put only memory that outlives the
 * event (or comes from ev_event_alloc) into them. Reference counted, not
 * thread-safe. */
typedef struct ev_event {
	BuildEventStream__BuildEvent *msg;
	uint64_t record; /* 1-based position in its stream; 0 when built in memory */
	uint64_t offset; /* byte offset of the record's length prefix in its input */
	size_t size;     /* bytes of the serialized message, without the prefix */
	/* private */
	unsigned refs;
	struct ev__chunk *chunks;
} ev_event;

/* Decodes one serialized BuildEvent (no length prefix). The bytes are first
 * checked against the schema — wire types of known fields, lengths, nesting
 * up to max_depth (0 = EV_DEFAULT_MAX_DEPTH) — so a malformed message gets an
 * error naming the field path and its absolute byte offset (`base` is the
 * offset of data[0] in `input`); unknown fields are kept as protobuf-c keeps
 * them. On success *out is a new event with one reference, record and offset
 * set from the arguments. Does not block. */
int ev_event_decode(const void *data, size_t len, unsigned max_depth, const char *input,
		    uint64_t record, uint64_t base, ev_event **out, tf_error *err);

/* A new event holding an empty BuildEvent, for building events in memory
 * (fields are filled with ev_event_alloc/ev_event_strdup memory). NULL when
 * out of memory. */
ev_event *ev_event_new(void);

/* Zeroed memory that lives as long as the event; NULL when out of memory. */
void *ev_event_alloc(ev_event *ev, size_t n);
/* A copy of s that lives as long as the event; NULL when out of memory. */
char *ev_event_strdup(ev_event *ev, const char *s);

/* Takes another reference; returns ev. */
ev_event *ev_event_ref(ev_event *ev);
/* Drops a reference; the last one frees the event and its arena. Accepts NULL. */
void ev_event_unref(ev_event *ev);

/* The proto name of the payload ("named_set_of_files", "completed", ...),
 * or "none". Never NULL. */
const char *ev_payload_name(const BuildEventStream__BuildEvent *m);

/* ---- reader: varint32 length + BuildEvent, concatenated ---------------------- */

typedef struct ev_reader ev_reader;

typedef struct ev_reader_options {
	size_t max_message_size; /* a record longer than this is an error; default 64 MiB */
	unsigned max_depth;      /* protobuf nesting inside one event; default 100, at most 1000 */
} ev_reader_options;

void ev_reader_options_init(ev_reader_options *o);

/* Opens a BEP file for reading (it may still be growing). opts may be NULL
 * for the defaults. Does not block beyond open(). */
ev_reader *ev_reader_new(const char *path, const ev_reader_options *opts, tf_error *err);

/* Reads from fd (a regular file, pipe or socket, e.g. stdin) without taking
 * ownership: the caller closes fd after ev_reader_free. `name` names the
 * input in messages and is copied. */
ev_reader *ev_reader_new_fd(int fd, const char *name, const ev_reader_options *opts,
			    tf_error *err);

/* Returns 1 and a new reference in *out when the next complete record is
 * available, 0 when none is yet (a regular file may grow later; a pipe may
 * deliver more; see ev_reader_at_eof), or a negative code: a length prefix
 * longer than 5 bytes or than the cap (-EMSGSIZE), a record that does not
 * decode (-EBADMSG), a record after the last_message one (-EBADMSG), a file
 * that shrank under us (-ESTALE), a read error. An error is final: later
 * calls return it again. Reads what is available; never waits for data. */
int ev_reader_next(ev_reader *r, ev_event **out, tf_error *err);

/* True once a BuildEvent with last_message = true was returned. */
bool ev_reader_complete(const ev_reader *r);

/* True when the last read found no more bytes: for a regular file, its
 * current end (it may still grow); for a pipe or socket, the writer closed
 * it and nothing more will come. */
bool ev_reader_at_eof(const ev_reader *r);

/* Records returned so far, and the byte offset just after the last one. */
uint64_t ev_reader_records(const ev_reader *r);
uint64_t ev_reader_offset(const ev_reader *r);

/* Declares the input ended and judges it: 0 when the last_message record was
 * read and nothing follows it; otherwise -ENODATA "incomplete stream: ended
 * after record N at byte offset X without last_message", or -EBADMSG for a
 * truncated length prefix or a record whose length runs past the end.
 * Call it after ev_reader_next returned 0. Reads what is left; never waits. */
int ev_reader_finish(ev_reader *r, tf_error *err);

/* Closes what ev_reader_new opened and frees everything. Accepts NULL. */
void ev_reader_free(ev_reader *r);

/* How ev_reader_follow waits for a growing input. */
typedef struct ev_follow_options {
	int idle_timeout_ms;     /* give up after this long without a new byte; -1 = never (default) */
	int poll_interval_ms;    /* longest single wait, 1..1000; default 100 */
	const atomic_bool *stop; /* optional: when it becomes true, return -ECANCELED */
} ev_follow_options;

void ev_follow_options_init(ev_follow_options *o);

/* Called for every event in stream order. The event is borrowed: take a
 * reference with ev_event_ref to keep it. Return 0 to go on; a negative code
 * stops ev_reader_follow, which returns it (err should be filled). */
typedef int (*ev_event_cb)(ev_event *ev, void *user, tf_error *err);

/* Reads events as the input grows — inotify on a regular file, poll on a
 * pipe, each wait at most poll_interval_ms — until the last_message event
 * was delivered (returns 0), the input ended early (the ev_reader_finish
 * error), idle_timeout_ms passed with no new byte (-ETIMEDOUT, with the
 * incomplete-stream description), *stop became true (-ECANCELED), the file
 * shrank or was replaced (-ESTALE), or a record is malformed. Blocks the
 * calling thread while it waits. */
int ev_reader_follow(ev_reader *r, const ev_follow_options *opts, ev_event_cb cb, void *user,
		     tf_error *err);

/* ---- the NamedSetOfFiles graph ------------------------------------------------ */

typedef struct ev_sets ev_sets;

typedef struct ev_sets_options {
	size_t max_sets;    /* default EV_DEFAULT_MAX_SETS */
	size_t max_files;   /* File entries across all sets; default EV_DEFAULT_MAX_FILES */
	unsigned max_depth; /* longest file_sets chain; default EV_DEFAULT_MAX_SET_DEPTH */
} ev_sets_options;

void ev_sets_options_init(ev_sets_options *o);

/* An empty graph. opts may be NULL for the defaults. */
ev_sets *ev_sets_new(const ev_sets_options *opts, tf_error *err);

/* Drops every stored event reference and frees the graph. Accepts NULL. */
void ev_sets_free(ev_sets *s);

/* Stores a named_set_of_files event under its id in a compact form: the
 * graph keeps no reference to ev (the caller may drop it at once). Equal
 * Files are stored once; path prefixes, directories and bytestream URI
 * templates are interned, sha256 digests kept as 32 bytes. References to
 * other sets are resolved when a set is first expanded, so a set may name
 * one that arrives later (such an id counts against max_sets from the
 * first mention). Errors: not a named set or no id (-EINVAL), an id
 * already stored (-EEXIST), over max_sets or max_files (-E2BIG). Linear in
 * the set's size. */
int ev_sets_add(ev_sets *s, ev_event *ev, tf_error *err);

/* Sets stored, and distinct files among them (equal path_prefix, name,
 * uri/contents/symlink target, digest and length count once). */
size_t ev_sets_count(const ev_sets *s);
size_t ev_sets_distinct_files(const ev_sets *s);

/* Starts an expansion: the files of `inline_files` (borrowed until the
 * expansion ends) and of the sets named by `ids`, with everything they
 * reference. Each reachable set is checked once over the graph's life (and
 * remembered): an unknown id (-ENOENT, naming the id and who refers to it —
 * `referrer` for the roots, e.g. "TargetComplete //pkg:a (record 20)"), a set
 * that contains itself (-ELOOP, naming the cycle), a chain deeper than
 * max_depth (-E2BIG). Only one expansion runs at a time per graph; beginning
 * another abandons the previous one. */
int ev_sets_expand_begin(ev_sets *s, BuildEventStream__BuildEventId__NamedSetOfFilesId *const *ids,
			 size_t n_ids, BuildEventStream__File *const *inline_files, size_t n_inline,
			 const char *referrer, tf_error *err);

/* Starts an expansion of the output group `group` of a `completed`
 * (TargetComplete) event, or of all its groups when group is NULL; a missing
 * group expands to nothing. -EINVAL if ev is not a TargetComplete. */
int ev_sets_expand_target(ev_sets *s, const ev_event *ev, const char *group, tf_error *err);

/* The next file of the current expansion, or NULL at its end. Every distinct
 * file is returned once per expansion — a set's own files before those of
 * the sets it references, in order — and the cost over a whole expansion is
 * linear in the sets and files it reaches, however many other expansions
 * share them. A file of a set is rebuilt into one File the graph owns: it
 * and its strings are valid until the next call on the graph (copy what you
 * keep); an inline file is the caller's own pointer. */
const BuildEventStream__File *ev_sets_expand_next(ev_sets *s);

/* The exec-root-relative path of a BEP File (path_prefix parts joined with
 * the name), malloc'd; NULL for a File without a prefix (a source file, not
 * an output), a path over TF__PATH_MAX, or out of memory. */
char *ev_file_exec_path(const BuildEventStream__File *f);

/* ---- writers --------------------------------------------------------------- */

/* Appends m in proto3 JSON form (as Bazel's --build_event_json_file writes
 * it: lowerCamelCase names, default values omitted, 64-bit integers as
 * strings, bytes as base64, enums by name, maps as objects, Timestamp,
 * Duration, Any and wrappers in their JSON forms), without a newline. Works
 * for any protobuf-c message by walking its descriptor. -E2BIG past the
 * buffer's cap or past EV_DEFAULT_MAX_DEPTH nesting; on error out->len is
 * unchanged. */
int ev_json_append(tf__buf *out, const ProtobufCMessage *m, tf_error *err);

/* Appends varint32(size) + the serialized message: one record of Bazel's
 * --build_event_binary_file. -E2BIG past the cap, -EMSGSIZE over 4 GiB. */
int ev_binary_append(tf__buf *out, const ProtobufCMessage *m, tf_error *err);

typedef enum ev_format {
	EV_FORMAT_BINARY, /* --build_event_binary_file */
	EV_FORMAT_JSON,   /* --build_event_json_file: one JSON object per line */
} ev_format;

typedef struct ev_writer ev_writer;

/* Creates (or truncates) path, mode 0644. Does not block beyond open(). */
ev_writer *ev_writer_new(const char *path, ev_format format, tf_error *err);

/* Writes to fd, which stays the caller's (not closed). `name` is copied. */
ev_writer *ev_writer_new_fd(int fd, const char *name, ev_format format, tf_error *err);

/* Encodes one event into the writer's buffer, writing the buffer out when it
 * passes 64 KiB. A write error is final: this and every later call return it
 * (naming the output and how many bytes had been written). May block on the
 * output. */
int ev_writer_write(ev_writer *w, const BuildEventStream__BuildEvent *m, tf_error *err);

/* Writes out everything buffered. May block on the output. */
int ev_writer_flush(ev_writer *w, tf_error *err);

/* Flushes, then closes what ev_writer_new opened; returns the first error of
 * either. The writer must still be freed. */
int ev_writer_close(ev_writer *w, tf_error *err);

/* Bytes handed to the output so far. */
uint64_t ev_writer_bytes(const ev_writer *w);

/* Frees the writer, closing (without flushing) a file it opened if
 * ev_writer_close was not called. Accepts NULL. */
void ev_writer_free(ev_writer *w);

/* ---- nanomsg PUB sink -------------------------------------------------------- */

typedef struct ev_pub ev_pub;

typedef struct ev_pub_options {
	size_t max_message_size; /* larger events are refused with -EMSGSIZE; default 64 MiB */
	int sndbuf;              /* NN_SNDBUF: per-subscriber buffer bytes; default 1 MiB */
} ev_pub_options;

void ev_pub_options_init(ev_pub_options *o);

typedef struct ev_pub_stats {
	uint64_t sent;    /* events handed to nanomsg */
	uint64_t dropped; /* events nanomsg refused (it never waits: NN_DONTWAIT) */
	uint64_t bytes;   /* bytes of the events sent */
} ev_pub_stats;

/* Binds an NN_PUB socket at url (ipc://PATH, tcp://HOST:PORT, inproc://NAME).
 * Each event is published as one message holding the serialized BuildEvent
 * (no length prefix). opts may be NULL. Does not block. */
ev_pub *ev_pub_new(const char *url, const ev_pub_options *opts, tf_error *err);

/* Publishes one event without waiting: nanomsg's PUB gives each subscriber
 * the message if its pipe has room and silently skips a subscriber that is
 * behind, so a slow subscriber never blocks the caller. A send nanomsg
 * refuses is counted as dropped and is not an error (returns 0); only
 * encoding failures and a closed socket are. */
int ev_pub_send(ev_pub *p, const BuildEventStream__BuildEvent *m, tf_error *err);

/* Publishes one message of prefix (plen bytes, may be 0) followed by data
 * (an already serialized event), both copied, as ev_pub_send does: never
 * waits, a refused send is dropped and counted. ev_pub_send and this may be
 * called from several threads at once. */
int ev_pub_send_bytes(ev_pub *p, const void *prefix, size_t plen, const void *data, size_t len, tf_error *err);

void ev_pub_get_stats(const ev_pub *p, ev_pub_stats *out);

/* Closes the socket (queued messages may be lost) and frees. Accepts NULL. */
void ev_pub_free(ev_pub *p);

/* ---- the gate (gate.c): holds TargetComplete until its files are done ------ */

#include "events/gate.h"

#endif
