/* Writes synthetic inputs for the session tests into DIR:
 *   DIR/ac/<key>       ActionResults
 *   DIR/bep.bin        a BEP stream (BuildStarted announcing everything,
 *                      a named set + TargetComplete per target, last_message)
 *   DIR/bad-ac/<key>   ActionResults that must be refused
 * Scenario "shared": three targets //s:a, //s:b, //s:c, each with one output
 * at its own path, all with the same digest (HASH SIZE given on the command
 * line, the blob the test put in the cache).
 * With HASH2 SIZE2 also:
 *   DIR/bep-conflict.bin    //c:x and //c:y put different files (HASH, HASH2,
 *                           digest and length in the BEP as Bazel 7 writes
 *                           them) at bazel-out/{k8-fastbuild,k8-opt}/bin/c/same.txt
 *   DIR/bep-bytestream.bin  //b:z's file named only by
 *                           bytestream://cache.invalid:1/blobs/HASH2/SIZE2
 *
 *   make_inputs DIR HASH SIZE [HASH2 SIZE2] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "build_event_stream.pb-c.h"
#include "remote_execution.pb-c.h"

typedef Build__Bazel__Remote__Execution__V2__ActionResult AR;
typedef Build__Bazel__Remote__Execution__V2__OutputFile OF;
typedef Build__Bazel__Remote__Execution__V2__Digest DG;

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n) {
		perror(path);
		exit(2);
	}
	fclose(f);
}

static void write_ar(const char *dir, const char *key, const char *path, const char *hash, long size)
{
	AR ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	OF of = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_FILE__INIT, *ofp = &of;
	DG dg = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
	char fn[4096];
	unsigned char *b;
	size_t n;

	dg.hash = (char *)hash;
	dg.size_bytes = size;
	of.path = (char *)path;
	of.digest = &dg;
	ar.output_files = &ofp;
	ar.n_output_files = 1;
	n = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
	b = malloc(n);
	build__bazel__remote__execution__v2__action_result__pack(&ar, b);
	snprintf(fn, sizeof(fn), "%s/%s", dir, key);
	write_file(fn, b, n);
	free(b);
}

static void append_event(FILE *f, BuildEventStream__BuildEvent *ev)
{
	size_t n = build_event_stream__build_event__get_packed_size(ev);
	unsigned char *b = malloc(n), v[10];
	int k = 0;
	size_t x = n;
	build_event_stream__build_event__pack(ev, b);
	do {
		v[k++] = (unsigned char)((x & 0x7f) | (x > 0x7f ? 0x80 : 0));
		x >>= 7;
	} while (x);
	fwrite(v, 1, (size_t)k, f);
	fwrite(b, 1, n, f);
	free(b);
}

/* A stream of one target per entry: BuildStarted announcing everything, a
 * named set and a TargetComplete per target, last_message. */
typedef struct tgt {
	const char *label, *config, *name, *digest, *uri;
	long length;
} tgt;

static void write_stream(const char *path, const tgt *t, int n)
{
	BuildEventStream__BuildEventId ids[16], *ch[16], startid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	BuildEventStream__BuildEventId__NamedSetOfFilesId nsid[8];
	BuildEventStream__BuildEventId__TargetCompletedId tcid[8];
	BuildEventStream__BuildEventId__BuildStartedId sid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__BUILD_STARTED_ID__INIT;
	BuildEventStream__BuildEventId__BuildToolLogsId lid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__BUILD_TOOL_LOGS_ID__INIT;
	BuildEventStream__BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	BuildEventStream__BuildStarted started = BUILD_EVENT_STREAM__BUILD_STARTED__INIT;
	BuildEventStream__BuildToolLogs logs = BUILD_EVENT_STREAM__BUILD_TOOL_LOGS__INIT;
	char setnames[8][12];
	FILE *f = fopen(path, "wb");

	for (int i = 0; i < n; i++) {
		build_event_stream__build_event_id__init(&ids[2 * i]);
		build_event_stream__build_event_id__named_set_of_files_id__init(&nsid[i]);
		snprintf(setnames[i], sizeof(setnames[i]), "%d", i);
		nsid[i].id = setnames[i];
		ids[2 * i].id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
		ids[2 * i].named_set = &nsid[i];
		build_event_stream__build_event_id__init(&ids[2 * i + 1]);
		build_event_stream__build_event_id__target_completed_id__init(&tcid[i]);
		tcid[i].label = (char *)t[i].label;
		ids[2 * i + 1].id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED;
		ids[2 * i + 1].target_completed = &tcid[i];
	}
	build_event_stream__build_event_id__init(&ids[2 * n]);
	ids[2 * n].id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_TOOL_LOGS;
	ids[2 * n].build_tool_logs = &lid;
	for (int i = 0; i <= 2 * n; i++)
		ch[i] = &ids[i];
	startid.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED;
	startid.started = &sid;
	ev.id = &startid;
	ev.children = ch;
	ev.n_children = (size_t)(2 * n + 1);
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED;
	ev.started = &started;
	append_event(f, &ev);
	for (int i = 0; i < n; i++) {
		char *prefix[3] = { (char *)"bazel-out", (char *)t[i].config, (char *)"bin" };
		BuildEventStream__BuildEvent nse = BUILD_EVENT_STREAM__BUILD_EVENT__INIT, tce = nse;
		BuildEventStream__NamedSetOfFiles ns = BUILD_EVENT_STREAM__NAMED_SET_OF_FILES__INIT;
		BuildEventStream__File file = BUILD_EVENT_STREAM__FILE__INIT, *fp = &file;
		BuildEventStream__TargetComplete tc = BUILD_EVENT_STREAM__TARGET_COMPLETE__INIT;
		BuildEventStream__OutputGroup og = BUILD_EVENT_STREAM__OUTPUT_GROUP__INIT, *ogp = &og;
		BuildEventStream__BuildEventId__NamedSetOfFilesId *ref = &nsid[i];
		file.name = (char *)t[i].name;
		file.path_prefix = prefix;
		file.n_path_prefix = 3;
		if (t[i].digest) {
			file.digest = (char *)t[i].digest;
			file.length = t[i].length;
		}
		if (t[i].uri) {
			file.file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
			file.uri = (char *)t[i].uri;
		}
		ns.files = &fp;
		ns.n_files = 1;
		nse.id = &ids[2 * i];
		nse.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
		nse.named_set_of_files = &ns;
		append_event(f, &nse);
		og.name = (char *)"default";
		og.file_sets = &ref;
		og.n_file_sets = 1;
		tc.success = 1;
		tc.output_group = &ogp;
		tc.n_output_group = 1;
		tce.id = &ids[2 * i + 1];
		tce.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED;
		tce.completed = &tc;
		append_event(f, &tce);
	}
	{
		BuildEventStream__BuildEvent le = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
		le.id = &ids[2 * n];
		le.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS;
		le.build_tool_logs = &logs;
		le.last_message = 1;
		append_event(f, &le);
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	static const char *labels[] = { "//s:a", "//s:b", "//s:c" };
	static const char *names[] = { "s/a.out", "s/sub/b.out", "s/c.out" };
	char path[4096], key[65];

	if (argc != 4 && argc != 6)
		return 2;
	if (argc == 6) {
		char uri[256];
		tgt conflict[2] = {
			{ "//c:x", "k8-fastbuild", "c/same.txt", argv[2], NULL, atol(argv[3]) },
			{ "//c:y", "k8-opt", "c/same.txt", argv[4], NULL, atol(argv[5]) },
		};
		tgt bs = { "//b:z", "k8-fastbuild", "b/z.bin", NULL, uri, 0 };
		mkdir(argv[1], 0755);
		snprintf(path, sizeof(path), "%s/bep-conflict.bin", argv[1]);
		write_stream(path, conflict, 2);
		snprintf(uri, sizeof(uri), "bytestream://cache.invalid:1/blobs/%s/%s", argv[4], argv[5]);
		snprintf(path, sizeof(path), "%s/bep-bytestream.bin", argv[1]);
		write_stream(path, &bs, 1);
	}
	mkdir(argv[1], 0755);
	snprintf(path, sizeof(path), "%s/ac", argv[1]);
	mkdir(path, 0755);
	for (int i = 0; i < 3; i++) {
		char out[256];
		snprintf(out, sizeof(out), "bazel-out/k8-fastbuild/bin/%s", names[i]);
		snprintf(key, sizeof(key), "%064d", i + 1);
		write_ar(path, key, out, argv[2], atol(argv[3]));
	}
	/* Refused: a path leaving the exec root, an absolute one, a bad digest. */
	snprintf(path, sizeof(path), "%s/bad-ac", argv[1]);
	mkdir(path, 0755);
	snprintf(key, sizeof(key), "%064d", 7);
	write_ar(path, key, "bazel-out/../../etc/passwd", argv[2], atol(argv[3]));
	snprintf(key, sizeof(key), "%064d", 8);
	write_ar(path, key, "/etc/passwd", argv[2], atol(argv[3]));
	snprintf(key, sizeof(key), "%064d", 9);
	write_ar(path, key, "bazel-out/k8-fastbuild/bin/s/x", "NOT-A-DIGEST", 3);
	snprintf(path, sizeof(path), "%s/bad-ac/%064d", argv[1], 10);
	write_file(path, "\x0a\xff\xff", 3); /* does not decode */

	{
		tgt shared[3];
		for (int i = 0; i < 3; i++)
			shared[i] = (tgt){ labels[i], "k8-fastbuild", names[i], NULL, NULL, 0 };
		snprintf(path, sizeof(path), "%s/bep.bin", argv[1]);
		write_stream(path, shared, 3);
	}
	return 0;
}
