/* Helpers shared by the events tests: fixture paths, whole-file reads,
 * temporary folders, and builders for synthetic BEP records. */
#ifndef EV_TEST_UTIL_H
#define EV_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "events/events.h"
#include "tf_test.h"

static const char *const ev_runs[] = { "run1_populate", "run2_minimal_hits", "run3_toplevel_hits" };
#define EV_N_RUNS 3

static inline const char *fixture(const char *run, const char *name)
{
	static char path[4][4096];
	static int slot;
	const char *dir = getenv("TF_FIXTURES");
	char *p = path[slot++ & 3];

	if (!dir) {
		fprintf(stderr, "TF_FIXTURES is not set (run through meson test)\n");
		exit(1);
	}
	CHECK(snprintf(p, 4096, "%s/%s/%s", dir, run, name) < 4096);
	return p;
}

static inline unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *data = NULL;
	size_t cap = 0, n = 0;

	if (!f) {
		fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	for (;;) {
		size_t got;
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			data = realloc(data, cap);
			CHECK(data);
		}
		got = fread(data + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	CHECK(!ferror(f));
	fclose(f);
	*len = n;
	return data;
}

static inline void write_all(int fd, const void *p, size_t n)
{
	const unsigned char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		CHECK(w > 0);
		c += w;
		n -= (size_t)w;
	}
}

static inline void write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	write_all(fd, p, n);
	CHECK(close(fd) == 0);
}

static inline char *make_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *dir = malloc(4096);
	CHECK(dir);
	snprintf(dir, 4096, "%s/tf-events-XXXXXX", base && *base ? base : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	return dir;
}

static inline int rm_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(p);
}

static inline void rm_tree(char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

/* ---- synthetic records ---------------------------------------------------- */

/* Appends one delimited record of m to b (whose cap is large). */
static inline void add_record(tf__buf *b, const ProtobufCMessage *m)
{
	tf_error err = { 0 };
	CHECK(ev_binary_append(b, m, &err) == 0);
}

/* Appends a raw record: varint(len) + bytes, for hand-made payloads. */
static inline void add_raw_record(tf__buf *b, const void *p, size_t n)
{
	unsigned char pre[5];
	size_t k = 0;
	uint32_t v = (uint32_t)n;
	while (v >= 0x80) {
		pre[k++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	pre[k++] = (unsigned char)v;
	CHECK(tf__buf_append(b, pre, k) == 0);
	CHECK(tf__buf_append(b, p, n) == 0);
}

/* A Progress event with an opaque count and a stderr text. */
static inline void add_progress(tf__buf *b, int count, const char *text, bool last)
{
	BuildEventStream__BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	BuildEventStream__BuildEventId id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	BuildEventStream__BuildEventId__ProgressId pid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__PROGRESS_ID__INIT;
	BuildEventStream__Progress pr = BUILD_EVENT_STREAM__PROGRESS__INIT;

	pid.opaque_count = count;
	id.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
	id.progress = &pid;
	pr.stderr = (char *)text;
	ev.id = &id;
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS;
	ev.progress = &pr;
	ev.last_message = last;
	add_record(b, &ev.base);
}

/* A NamedSetOfFiles event: set `id` with the Files files[0..nf) and
 * references to refs[0..nr). */
static inline void add_named_set_of(tf__buf *b, const char *id, BuildEventStream__File **files, size_t nf,
				    const char *const *refs, size_t nr)
{
	BuildEventStream__BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	BuildEventStream__BuildEventId eid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	BuildEventStream__BuildEventId__NamedSetOfFilesId nid =
		BUILD_EVENT_STREAM__BUILD_EVENT_ID__NAMED_SET_OF_FILES_ID__INIT;
	BuildEventStream__NamedSetOfFiles set = BUILD_EVENT_STREAM__NAMED_SET_OF_FILES__INIT;
	BuildEventStream__BuildEventId__NamedSetOfFilesId *ids = calloc(nr + 1, sizeof(*ids));
	BuildEventStream__BuildEventId__NamedSetOfFilesId **ip = calloc(nr + 1, sizeof(*ip));

	CHECK(ids && ip);
	for (size_t i = 0; i < nr; i++) {
		build_event_stream__build_event_id__named_set_of_files_id__init(&ids[i]);
		ids[i].id = (char *)refs[i];
		ip[i] = &ids[i];
	}
	set.n_files = nf;
	set.files = files;
	set.n_file_sets = nr;
	set.file_sets = ip;
	nid.id = (char *)id;
	eid.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
	eid.named_set = &nid;
	ev.id = &eid;
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
	ev.named_set_of_files = &set;
	add_record(b, &ev.base);
	free(ids);
	free(ip);
}

/* A NamedSetOfFiles event: set `id` with files named names[0..nf) (under
 * bazel-out/k8-fastbuild/bin) and references to refs[0..nr). */
static inline void add_named_set(tf__buf *b, const char *id, const char *const *names, size_t nf,
				 const char *const *refs, size_t nr)
{
	static char *prefix[] = { "bazel-out", "k8-fastbuild", "bin" };
	BuildEventStream__File *files = calloc(nf + 1, sizeof(*files));
	BuildEventStream__File **fp = calloc(nf + 1, sizeof(*fp));
	char **uris = calloc(nf + 1, sizeof(*uris));

	CHECK(files && fp && uris);
	for (size_t i = 0; i < nf; i++) {
		build_event_stream__file__init(&files[i]);
		files[i].name = (char *)names[i];
		files[i].n_path_prefix = 3;
		files[i].path_prefix = prefix;
		uris[i] = malloc(strlen(names[i]) + 64);
		CHECK(uris[i]);
		sprintf(uris[i], "file:///x/bazel-out/k8-fastbuild/bin/%s", names[i]);
		files[i].file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
		files[i].uri = uris[i];
		fp[i] = &files[i];
	}
	add_named_set_of(b, id, fp, nf, refs, nr);
	for (size_t i = 0; i < nf; i++)
		free(uris[i]);
	free(uris);
	free(files);
	free(fp);
}

/* A TargetComplete event for `label` whose "default" output group
 * references the sets refs[0..nr). */
static inline void add_target(tf__buf *b, const char *label, const char *const *refs, size_t nr)
{
	BuildEventStream__BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	BuildEventStream__BuildEventId eid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	BuildEventStream__BuildEventId__TargetCompletedId tid =
		BUILD_EVENT_STREAM__BUILD_EVENT_ID__TARGET_COMPLETED_ID__INIT;
	BuildEventStream__TargetComplete tc = BUILD_EVENT_STREAM__TARGET_COMPLETE__INIT;
	BuildEventStream__OutputGroup og = BUILD_EVENT_STREAM__OUTPUT_GROUP__INIT;
	BuildEventStream__OutputGroup *ogp = &og;
	BuildEventStream__BuildEventId__NamedSetOfFilesId *ids = calloc(nr + 1, sizeof(*ids));
	BuildEventStream__BuildEventId__NamedSetOfFilesId **ip = calloc(nr + 1, sizeof(*ip));

	CHECK(ids && ip);
	for (size_t i = 0; i < nr; i++) {
		build_event_stream__build_event_id__named_set_of_files_id__init(&ids[i]);
		ids[i].id = (char *)refs[i];
		ip[i] = &ids[i];
	}
	og.name = "default";
	og.n_file_sets = nr;
	og.file_sets = ip;
	tc.success = true;
	tc.n_output_group = 1;
	tc.output_group = &ogp;
	tid.label = (char *)label;
	eid.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED;
	eid.target_completed = &tid;
	ev.id = &eid;
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED;
	ev.completed = &tc;
	add_record(b, &ev.base);
	free(ids);
	free(ip);
}

#endif
