/* Helper for test_official.sh: the C half of the cross-check between our
 * schemas and Bazel's official .proto files.
 *
 *   proto_xcheck encode OUTDIR
 *       Encodes fixed test messages with our generated code into OUTDIR/NAME.bin;
 *       the script decodes them with `protoc --decode` and the official
 *       schemas and compares the text with tests/proto/data/<name>.txt.
 *   proto_xcheck check KIND FILE
 *       Decodes FILE, written by `protoc --encode` from
 *       tests/proto/data/official_<KIND>.txt, with our code and checks every
 *       field; then re-encodes it and compares the bytes with protoc's (both
 *       encoders must be canonical; see `kinds` for the one exception).
 *   proto_xcheck tree-dirs TREE OUTDIR
 *       Re-encodes each Directory of a Tree blob as OUTDIR/root.bin and
 *       OUTDIR/child-<i>.bin, so the script can compare their SHA-256 with
 *       the digests Bazel put in the DirectoryNodes.
 *   proto_xcheck reencode action|tree IN OUT
 *       Decodes IN and writes our encoding of it to OUT.
 *
 * Exit status 0 on success; any failed check exits 1 with file:line. */
#include <stdbool.h>
#include <stdint.h>

#include "build_event_stream.pb-c.h"
#include "bytestream.pb-c.h"
#include "remote_execution.pb-c.h"
#include "proto_util.h"
#include "spawn.pb-c.h"

typedef Build__Bazel__Remote__Execution__V2__Digest Digest;
typedef Build__Bazel__Remote__Execution__V2__NodeProperty NodeProperty;
typedef Build__Bazel__Remote__Execution__V2__NodeProperties NodeProperties;
typedef Build__Bazel__Remote__Execution__V2__OutputFile OutputFile;
typedef Build__Bazel__Remote__Execution__V2__OutputSymlink OutputSymlink;
typedef Build__Bazel__Remote__Execution__V2__OutputDirectory OutputDirectory;
typedef Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata ExecutedActionMetadata;
typedef Build__Bazel__Remote__Execution__V2__ActionResult ActionResult;
typedef Build__Bazel__Remote__Execution__V2__FileNode FileNode;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode DirectoryNode;
typedef Build__Bazel__Remote__Execution__V2__SymlinkNode SymlinkNode;
typedef Build__Bazel__Remote__Execution__V2__Directory Directory;
typedef Build__Bazel__Remote__Execution__V2__Tree Tree;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse BatchReadBlobsResponse;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response BatchReadBlobsResponse__Response;
typedef BuildEventStream__BuildEvent BuildEvent;
typedef BuildEventStream__BuildEventId BuildEventId;
typedef BuildEventStream__File BepFile;

#define DIGEST_INIT BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT
#define BIN(s) ((ProtobufCBinaryData){ sizeof(s) - 1, (uint8_t *)(s) })

/* Hashes used in the vectors; any lowercase hex would do. */
#define H_OUT "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define H_INLINE "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define H_TREE "bb2e91f968ef792fb32dd8a42477b0341e0db61d7b999cd94b401d710f7e7420"
#define H_STDOUT "4355a46b19d348dc2f57c046f8ef63d4538ebb936000f3c9ee954a27460dd865"
#define H_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define H_ROOT "506291ec1abdfe990b50a03cb200fb94a54b48ef194f150ed9947a8471851338"
#define H_ACTION "d156cc0cd1b340af1535bd58835dcef8e9f048018679f4e7d17f3c73f67fe837"

static void write_file(const char *path, const ProtobufCMessage *m)
{
	struct pu_buf b = pu_pack(m);
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "proto_xcheck: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	CHECK(fwrite(b.data, 1, b.len, f) == b.len);
	CHECK(fclose(f) == 0);
	free(b.data);
}

static void write_msg(const char *dir, const char *name, const ProtobufCMessage *m)
{
	char path[4096];
	CHECK(snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path));
	write_file(path, m);
}

static Digest digest(char *hash, int64_t size)
{
	Digest d = DIGEST_INIT;
	d.hash = hash;
	d.size_bytes = size;
	return d;
}

/* ---------------------------------------------------------------------- */
/* encode                                                                 */

/* A NamedSetOfFiles with every File variant, including the fields newer
 * than Bazel 4.2.3 (digest 5, length 6, symlink_target_path 7). */
static void encode_bep_named_set(const char *dir)
{
	char *prefix[] = { "bazel-out", "k8-fastbuild", "bin" };
	BepFile out = BUILD_EVENT_STREAM__FILE__INIT;
	out.n_path_prefix = 3;
	out.path_prefix = prefix;
	out.name = "pkg/out.bin";
	out.file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
	out.uri = "bytestream://cache.example:9092/blobs/" H_OUT "/1234";
	out.digest = H_OUT;
	out.length = 1234;

	BepFile note = BUILD_EVENT_STREAM__FILE__INIT;
	note.name = "pkg/note.txt";
	note.file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
	note.contents = BIN("hi\n");

	BepFile link = BUILD_EVENT_STREAM__FILE__INIT;
	link.n_path_prefix = 3;
	link.path_prefix = prefix;
	link.name = "pkg/link";
	link.file_case = BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH;
	link.symlink_target_path = "out.bin";

	BepFile *files[] = { &out, &note, &link };
	BuildEventStream__BuildEventId__NamedSetOfFilesId inner = BUILD_EVENT_STREAM__BUILD_EVENT_ID__NAMED_SET_OF_FILES_ID__INIT;
	inner.id = "3";
	BuildEventStream__BuildEventId__NamedSetOfFilesId *sets[] = { &inner };
	BuildEventStream__NamedSetOfFiles ns = BUILD_EVENT_STREAM__NAMED_SET_OF_FILES__INIT;
	ns.n_files = 3;
	ns.files = files;
	ns.n_file_sets = 1;
	ns.file_sets = sets;

	BuildEventStream__BuildEventId__NamedSetOfFilesId self = BUILD_EVENT_STREAM__BUILD_EVENT_ID__NAMED_SET_OF_FILES_ID__INIT;
	self.id = "7";
	BuildEventId id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	id.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
	id.named_set = &self;

	BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	ev.id = &id;
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
	ev.named_set_of_files = &ns;
	write_msg(dir, "bep_named_set.bin", &ev.base);
}

/* A failed TargetComplete with output groups, a directory output, a
 * FailureDetail and the newer OutputGroup/TargetComplete fields. */
static void encode_bep_target_complete(const char *dir)
{
	BuildEventStream__BuildEventId__ConfigurationId cfg = BUILD_EVENT_STREAM__BUILD_EVENT_ID__CONFIGURATION_ID__INIT;
	cfg.id = "cfg1";
	BuildEventStream__BuildEventId__TargetCompletedId tc_id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__TARGET_COMPLETED_ID__INIT;
	tc_id.label = "//pkg:x";
	tc_id.configuration = &cfg;
	BuildEventId id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	id.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED;
	id.target_completed = &tc_id;

	BuildEventStream__BuildEventId__ActionCompletedId ac_id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ACTION_COMPLETED_ID__INIT;
	ac_id.primary_output = "bazel-out/k8-fastbuild/bin/pkg/x.out";
	ac_id.label = "//pkg:x";
	ac_id.configuration = &cfg;
	BuildEventId child = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	child.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_ACTION_COMPLETED;
	child.action_completed = &ac_id;
	BuildEventId *children[] = { &child };

	BuildEventStream__BuildEventId__NamedSetOfFilesId set = BUILD_EVENT_STREAM__BUILD_EVENT_ID__NAMED_SET_OF_FILES_ID__INIT;
	set.id = "7";
	BuildEventStream__BuildEventId__NamedSetOfFilesId *sets[] = { &set };
	BepFile inline_file = BUILD_EVENT_STREAM__FILE__INIT;
	inline_file.name = "pkg/x.txt";
	inline_file.file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
	inline_file.contents = BIN("x");
	BepFile *inline_files[] = { &inline_file };
	BuildEventStream__OutputGroup group = BUILD_EVENT_STREAM__OUTPUT_GROUP__INIT;
	group.name = "default";
	group.n_file_sets = 1;
	group.file_sets = sets;
	group.incomplete = 1;
	group.n_inline_files = 1;
	group.inline_files = inline_files;
	BuildEventStream__OutputGroup *groups[] = { &group };

	char *prefix[] = { "bazel-out", "k8-fastbuild", "bin" };
	BepFile dir_out = BUILD_EVENT_STREAM__FILE__INIT;
	dir_out.n_path_prefix = 3;
	dir_out.path_prefix = prefix;
	dir_out.name = "pkg/dir";
	BepFile *dirs[] = { &dir_out };

	FailureDetails__Spawn spawn = FAILURE_DETAILS__SPAWN__INIT;
	spawn.code = FAILURE_DETAILS__SPAWN__CODE__NON_ZERO_EXIT;
	spawn.spawn_exit_code = 1;
	FailureDetails__FailureDetail fd = FAILURE_DETAILS__FAILURE_DETAIL__INIT;
	fd.message = "Executing genrule //pkg:x failed: (Exit 1)";
	fd.category_case = FAILURE_DETAILS__FAILURE_DETAIL__CATEGORY_SPAWN;
	fd.spawn = &spawn;

	Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
	timeout.seconds = 300;
	char *tags[] = { "manual" };

	BuildEventStream__TargetComplete tc = BUILD_EVENT_STREAM__TARGET_COMPLETE__INIT;
	tc.success = 0;
	tc.n_output_group = 1;
	tc.output_group = groups;
	tc.n_directory_output = 1;
	tc.directory_output = dirs;
	tc.n_tag = 1;
	tc.tag = tags;
	tc.test_timeout = &timeout;
	tc.failure_detail = &fd;

	BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	ev.id = &id;
	ev.n_children = 1;
	ev.children = children;
	ev.last_message = 1;
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED;
	ev.completed = &tc;
	write_msg(dir, "bep_target_complete.bin", &ev.base);
}

/* An ActionResult using every field Bazel 4.2.3's schema knows, so the
 * script can also compare our bytes with protoc's encoding of the same
 * text: fields are declared 2, 10, 12, 3, 11, 4, ... and must come out in
 * ascending order. */
static void encode_action_result(const char *dir)
{
	Digest d_out = digest(H_OUT, 10), d_inline = digest(H_INLINE, 3), d_tree = digest(H_TREE, 416);
	Digest d_stdout = digest(H_STDOUT, 4), d_stderr = digest(H_EMPTY, 0), d_aux = digest(H_OUT, 10);

	OutputFile f1 = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_FILE__INIT;
	f1.path = "out/a.bin";
	f1.digest = &d_out;
	f1.is_executable = 1;
	NodeProperty owner = BUILD__BAZEL__REMOTE__EXECUTION__V2__NODE_PROPERTY__INIT;
	owner.name = "owner";
	owner.value = "root";
	NodeProperty *props[] = { &owner };
	Google__Protobuf__Timestamp mtime = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	mtime.seconds = 1700000000;
	mtime.nanos = 5;
	Google__Protobuf__UInt32Value mode = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
	mode.value = 0644;
	NodeProperties np = BUILD__BAZEL__REMOTE__EXECUTION__V2__NODE_PROPERTIES__INIT;
	np.n_properties = 1;
	np.properties = props;
	np.mtime = &mtime;
	np.unix_mode = &mode;
	OutputFile f2 = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_FILE__INIT;
	f2.path = "out/inline.txt";
	f2.digest = &d_inline;
	f2.contents = BIN("abc");
	f2.node_properties = &np;
	OutputFile *files[] = { &f1, &f2 };

	OutputDirectory od = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_DIRECTORY__INIT;
	od.path = "out/dir";
	od.tree_digest = &d_tree;
	OutputDirectory *dirs[] = { &od };

	OutputSymlink fl = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_SYMLINK__INIT;
	fl.path = "out/flink";
	fl.target = "a.bin";
	OutputSymlink dl = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_SYMLINK__INIT;
	dl.path = "out/dlink";
	dl.target = "dir";
	OutputSymlink *file_links[] = { &fl }, *dir_links[] = { &dl }, *links[] = { &fl, &dl };

	/* auxiliary_metadata: an Any holding a Digest. */
	size_t aux_len = protobuf_c_message_get_packed_size(&d_aux.base);
	uint8_t aux_bytes[128];
	CHECK(aux_len <= sizeof(aux_bytes));
	protobuf_c_message_pack(&d_aux.base, aux_bytes);
	Google__Protobuf__Any aux = GOOGLE__PROTOBUF__ANY__INIT;
	aux.type_url = "type.googleapis.com/build.bazel.remote.execution.v2.Digest";
	aux.value.len = aux_len;
	aux.value.data = aux_bytes;
	Google__Protobuf__Any *auxes[] = { &aux };
	Google__Protobuf__Timestamp queued = GOOGLE__PROTOBUF__TIMESTAMP__INIT, done = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	queued.seconds = 1700000000;
	queued.nanos = 1;
	done.seconds = 1700000002;
	ExecutedActionMetadata md = BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTED_ACTION_METADATA__INIT;
	md.worker = "worker-1";
	md.queued_timestamp = &queued;
	md.worker_completed_timestamp = &done;
	md.n_auxiliary_metadata = 1;
	md.auxiliary_metadata = auxes;

	ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	ar.n_output_files = 2;
	ar.output_files = files;
	ar.n_output_file_symlinks = 1;
	ar.output_file_symlinks = file_links;
	ar.n_output_symlinks = 2;
	ar.output_symlinks = links;
	ar.n_output_directories = 1;
	ar.output_directories = dirs;
	ar.n_output_directory_symlinks = 1;
	ar.output_directory_symlinks = dir_links;
	ar.exit_code = 3;
	ar.stdout_raw = BIN("out\n");
	ar.stdout_digest = &d_stdout;
	ar.stderr_digest = &d_stderr;
	ar.execution_metadata = &md;
	write_msg(dir, "action_result.bin", &ar.base);
}

/* The REAPI fields added after Bazel 4.2.3's copy of the API. */
static void encode_action_result_new(const char *dir)
{
	Digest d_tree = digest(H_TREE, 416), d_root = digest(H_ROOT, 160);
	OutputDirectory od = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_DIRECTORY__INIT;
	od.path = "out/dir";
	od.tree_digest = &d_tree;
	od.is_topologically_sorted = 1;
	od.root_directory_digest = &d_root;
	OutputDirectory *dirs[] = { &od };
	Google__Protobuf__Duration virt = GOOGLE__PROTOBUF__DURATION__INIT;
	virt.seconds = 2;
	virt.nanos = 500;
	ExecutedActionMetadata md = BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTED_ACTION_METADATA__INIT;
	md.worker = "worker-2";
	md.virtual_execution_duration = &virt;
	ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	ar.n_output_directories = 1;
	ar.output_directories = dirs;
	ar.execution_metadata = &md;
	write_msg(dir, "action_result_new.bin", &ar.base);
}

static void encode_tree(const char *dir)
{
	Digest da = digest(H_OUT, 10), db = digest(H_INLINE, 3), dsub = digest(H_ROOT, 160), dc = digest(H_EMPTY, 0);
	FileNode a = BUILD__BAZEL__REMOTE__EXECUTION__V2__FILE_NODE__INIT;
	a.name = "a.txt";
	a.digest = &da;
	a.is_executable = 1;
	Google__Protobuf__UInt32Value mode = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
	mode.value = 0755;
	NodeProperties np = BUILD__BAZEL__REMOTE__EXECUTION__V2__NODE_PROPERTIES__INIT;
	np.unix_mode = &mode;
	FileNode b = BUILD__BAZEL__REMOTE__EXECUTION__V2__FILE_NODE__INIT;
	b.name = "b.txt";
	b.digest = &db;
	b.node_properties = &np;
	FileNode *root_files[] = { &a, &b };
	DirectoryNode sub = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY_NODE__INIT;
	sub.name = "sub";
	sub.digest = &dsub;
	DirectoryNode *root_dirs[] = { &sub };
	SymlinkNode link = BUILD__BAZEL__REMOTE__EXECUTION__V2__SYMLINK_NODE__INIT;
	link.name = "link";
	link.target = "a.txt";
	SymlinkNode *root_links[] = { &link };
	Directory root = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY__INIT;
	root.n_files = 2;
	root.files = root_files;
	root.n_directories = 1;
	root.directories = root_dirs;
	root.n_symlinks = 1;
	root.symlinks = root_links;

	FileNode c = BUILD__BAZEL__REMOTE__EXECUTION__V2__FILE_NODE__INIT;
	c.name = "empty.txt";
	c.digest = &dc;
	FileNode *child_files[] = { &c };
	Directory child = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY__INIT;
	child.n_files = 1;
	child.files = child_files;
	Directory *children[] = { &child };

	Tree t = BUILD__BAZEL__REMOTE__EXECUTION__V2__TREE__INIT;
	t.root = &root;
	t.n_children = 1;
	t.children = children;
	write_msg(dir, "tree.bin", &t.base);
}

static void encode_spawn_exec(const char *dir)
{
	char *args[] = { "/bin/bash", "-c", "echo hi > out" };
	Tools__Protos__EnvironmentVariable path = TOOLS__PROTOS__ENVIRONMENT_VARIABLE__INIT;
	path.name = "PATH";
	path.value = "/bin:/usr/bin";
	Tools__Protos__EnvironmentVariable *env[] = { &path };
	Tools__Protos__Platform__Property os = TOOLS__PROTOS__PLATFORM__PROPERTY__INIT;
	os.name = "OSFamily";
	os.value = "Linux";
	Tools__Protos__Platform__Property *props[] = { &os };
	Tools__Protos__Platform platform = TOOLS__PROTOS__PLATFORM__INIT;
	platform.n_properties = 1;
	platform.properties = props;

	Tools__Protos__Digest d_in = TOOLS__PROTOS__DIGEST__INIT, d_out = TOOLS__PROTOS__DIGEST__INIT,
			      d_action = TOOLS__PROTOS__DIGEST__INIT;
	d_in.hash = H_INLINE;
	d_in.size_bytes = 3;
	d_in.hash_function_name = "SHA-256";
	d_out.hash = H_OUT;
	d_out.size_bytes = 3;
	d_out.hash_function_name = "SHA-256";
	d_action.hash = H_ACTION;
	d_action.size_bytes = 144;
	d_action.hash_function_name = "SHA-256";
	Tools__Protos__File in = TOOLS__PROTOS__FILE__INIT, tool = TOOLS__PROTOS__FILE__INIT,
			    link = TOOLS__PROTOS__FILE__INIT, out = TOOLS__PROTOS__FILE__INIT;
	in.path = "pkg/in.txt";
	in.digest = &d_in;
	tool.path = "pkg/tool.sh";
	tool.digest = &d_in;
	tool.is_tool = 1;
	link.path = "pkg/link";
	link.symlink_target_path = "in.txt";
	out.path = "bazel-out/k8-fastbuild/bin/pkg/out";
	out.digest = &d_out;
	Tools__Protos__File *inputs[] = { &in, &tool, &link }, *outputs[] = { &out };
	char *listed[] = { "bazel-out/k8-fastbuild/bin/pkg/out" };

	Google__Protobuf__Duration total = GOOGLE__PROTOBUF__DURATION__INIT;
	total.seconds = 1;
	total.nanos = 500000000;
	Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	start.seconds = 1700000000;
	Tools__Protos__SpawnMetrics metrics = TOOLS__PROTOS__SPAWN_METRICS__INIT;
	metrics.total_time = &total;
	metrics.input_bytes = 3;
	metrics.start_time = &start;

	Tools__Protos__SpawnExec s = TOOLS__PROTOS__SPAWN_EXEC__INIT;
	s.n_command_args = 3;
	s.command_args = args;
	s.n_environment_variables = 1;
	s.environment_variables = env;
	s.platform = &platform;
	s.n_inputs = 3;
	s.inputs = inputs;
	s.n_listed_outputs = 1;
	s.listed_outputs = listed;
	s.remotable = 1;
	s.cacheable = 1;
	s.timeout_millis = 60000;
	s.progress_message = "Executing genrule //pkg:x";
	s.mnemonic = "Genrule";
	s.n_actual_outputs = 1;
	s.actual_outputs = outputs;
	s.runner = "remote cache hit";
	s.cache_hit = 1;
	s.exit_code = 0;
	s.remote_cacheable = 1;
	s.target_label = "//pkg:x";
	s.digest = &d_action;
	s.metrics = &metrics;
	write_msg(dir, "spawn_exec.bin", &s.base);
}

/* Per-blob results, with a google.rpc.Status and the newer compressor. */
static void encode_batch_read(const char *dir)
{
	Digest d1 = digest(H_INLINE, 3), d2 = digest(H_OUT, 10), d3 = digest(H_STDOUT, 4);
	Google__Rpc__Status ok = GOOGLE__RPC__STATUS__INIT, missing = GOOGLE__RPC__STATUS__INIT;
	missing.code = 5;
	missing.message = "blob not found";
	BatchReadBlobsResponse__Response r1 = BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT;
	r1.digest = &d1;
	r1.data = BIN("abc");
	r1.status = &ok;
	BatchReadBlobsResponse__Response r2 = BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT;
	r2.digest = &d2;
	r2.status = &missing;
	BatchReadBlobsResponse__Response r3 = BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT;
	r3.digest = &d3;
	r3.data = BIN("\x28\xb5\x2f\xfd");
	r3.compressor = BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD;
	r3.status = &ok;
	BatchReadBlobsResponse__Response *rs[] = { &r1, &r2, &r3 };
	BatchReadBlobsResponse resp = BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__INIT;
	resp.n_responses = 3;
	resp.responses = rs;
	write_msg(dir, "batch_read_response.bin", &resp.base);
}

static void encode_bytestream(const char *dir)
{
	Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	w.resource_name = "uploads/3f1c2d9e-5b7a-4c1e-9f00-0123456789ab/blobs/" H_INLINE "/3";
	w.write_offset = 0;
	w.finish_write = 1;
	w.data = BIN("abc");
	write_msg(dir, "bytestream_write.bin", &w.base);

	Google__Bytestream__ReadRequest r = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	r.resource_name = "main/blobs/" H_OUT "/1234";
	r.read_offset = 1000;
	r.read_limit = 234;
	write_msg(dir, "bytestream_read.bin", &r.base);
}

/* ---------------------------------------------------------------------- */
/* check: decode protoc --encode output of data/official_<KIND>.txt       */

static void check_bep_completed(ProtobufCMessage *m)
{
	BuildEvent *e = (BuildEvent *)m;
	CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED);
	CHECK_STR_EQ(e->id->target_completed->label, "//pkg:lib");
	CHECK_STR_EQ(e->id->target_completed->aspect, "//pkg:defs.bzl%asp");
	CHECK_STR_EQ(e->id->target_completed->configuration->id, "cfg1");
	CHECK_INT_EQ(e->n_children, 1);
	CHECK_INT_EQ(e->children[0]->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET);
	CHECK_STR_EQ(e->children[0]->named_set->id, "1");
	CHECK(!e->last_message);
	CHECK_INT_EQ(e->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED);

	BuildEventStream__TargetComplete *tc = e->completed;
	CHECK(!tc->success);
	CHECK_STR_EQ(tc->target_kind, "genrule rule");
	CHECK_INT_EQ(tc->test_size, BUILD_EVENT_STREAM__TEST_SIZE__SMALL);
	CHECK_INT_EQ(tc->n_output_group, 1);
	CHECK_STR_EQ(tc->output_group[0]->name, "default");
	CHECK_INT_EQ(tc->output_group[0]->n_file_sets, 2);
	CHECK_STR_EQ(tc->output_group[0]->file_sets[0]->id, "1");
	CHECK_STR_EQ(tc->output_group[0]->file_sets[1]->id, "2");
	CHECK_INT_EQ(tc->n_important_output, 1);
	BepFile *f = tc->important_output[0];
	CHECK_STR_EQ(f->name, "pkg/lib.out");
	CHECK_INT_EQ(f->file_case, BUILD_EVENT_STREAM__FILE__FILE_URI);
	CHECK_STR_EQ(f->uri, "bytestream://cache.example:9092/blobs/" H_OUT "/10");
	CHECK_INT_EQ(f->n_path_prefix, 3);
	CHECK_STR_EQ(f->path_prefix[1], "k8-opt");
	CHECK_INT_EQ(tc->n_directory_output, 1);
	CHECK_STR_EQ(tc->directory_output[0]->name, "pkg/lib_dir");
	CHECK_INT_EQ(tc->directory_output[0]->file_case, BUILD_EVENT_STREAM__FILE__FILE__NOT_SET);
	CHECK_INT_EQ(tc->n_tag, 2);
	CHECK_STR_EQ(tc->tag[0], "manual");
	CHECK_STR_EQ(tc->tag[1], "no-remote");
	CHECK_INT_EQ(tc->test_timeout_seconds, 60);

	/* A category we do not declare (crash = 108) stays an unknown field,
	 * and the documented fallback still works: its field 1 is the code. */
	FailureDetails__FailureDetail *fd = tc->failure_detail;
	CHECK(fd);
	CHECK_STR_EQ(fd->message, "Bazel ran out of memory");
	CHECK_INT_EQ(fd->category_case, FAILURE_DETAILS__FAILURE_DETAIL__CATEGORY__NOT_SET);
	CHECK_INT_EQ(fd->base.n_unknown_fields, 1);
	ProtobufCMessageUnknownField *u = &fd->base.unknown_fields[0];
	CHECK_INT_EQ(u->tag, 108);
	CHECK_INT_EQ(u->wire_type, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
	/* protobuf-c keeps the bytes after the tag, length prefix included. */
	CHECK_INT_EQ(u->len, 3);
	CHECK_INT_EQ(u->data[0], 2);    /* length of the Crash message */
	CHECK_INT_EQ(u->data[1], 0x08); /* field 1 (code), varint */
	CHECK_INT_EQ(u->data[2], 1);    /* Crash.Code CRASH_OOM */
}

static void check_bep_action(ProtobufCMessage *m)
{
	BuildEvent *e = (BuildEvent *)m;
	CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_ACTION_COMPLETED);
	CHECK_STR_EQ(e->id->action_completed->primary_output, "bazel-out/k8-fastbuild/bin/pkg/x.out");
	CHECK_INT_EQ(e->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_ACTION);
	BuildEventStream__ActionExecuted *a = e->action;
	CHECK(!a->success);
	CHECK_STR_EQ(a->type, "Genrule");
	CHECK_INT_EQ(a->exit_code, 2);
	CHECK(a->stderr);
	CHECK_STR_EQ(a->stderr->name, "stderr");
	CHECK_STR_EQ(a->stderr->uri, "file:///tmp/out/stderr-7");
	CHECK_STR_EQ(a->label, "//pkg:x");
	CHECK_INT_EQ(a->n_command_line, 3);
	CHECK_STR_EQ(a->command_line[2], "exit 2");
	CHECK(a->failure_detail);
	CHECK_INT_EQ(a->failure_detail->category_case, FAILURE_DETAILS__FAILURE_DETAIL__CATEGORY_SPAWN);
	CHECK_INT_EQ(a->failure_detail->spawn->code, FAILURE_DETAILS__SPAWN__CODE__NON_ZERO_EXIT);
	CHECK_INT_EQ(a->failure_detail->spawn->spawn_exit_code, 2);
	CHECK(!a->failure_detail->spawn->catastrophic);
	/* Bazel 4.2.3's action_metadata_logs (10) is reserved in our schema:
	 * kept as an unknown field (cmd_check verifies it is written back). */
	CHECK_INT_EQ(a->base.n_unknown_fields, 1);
	CHECK_INT_EQ(a->base.unknown_fields[0].tag, 10);
}

static void check_bep_started(ProtobufCMessage *m)
{
	BuildEvent *e = (BuildEvent *)m;
	CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED);
	CHECK_INT_EQ(e->n_children, 3);
	CHECK_INT_EQ(e->children[0]->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS);
	CHECK_INT_EQ(e->children[0]->progress->opaque_count, 0);
	CHECK_INT_EQ(e->children[1]->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PATTERN);
	CHECK_INT_EQ(e->children[1]->pattern->n_pattern, 2);
	CHECK_STR_EQ(e->children[1]->pattern->pattern[1], "//pkg:b");
	CHECK_INT_EQ(e->children[2]->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_FINISHED);
	CHECK_INT_EQ(e->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED);
	BuildEventStream__BuildStarted *s = e->started;
	CHECK_STR_EQ(s->uuid, "c9082049-c38a-46ac-8e5a-a32dcc54bd32");
	CHECK_INT_EQ(s->start_time_millis, 1795237192469LL);
	CHECK_STR_EQ(s->build_tool_version, "4.2.3");
	CHECK_STR_EQ(s->command, "build");
	CHECK_STR_EQ(s->working_directory, "/tmp/bwob/ws");
	CHECK_INT_EQ(s->server_pid, 14968);
}

static void check_action_result(ProtobufCMessage *m)
{
	ActionResult *ar = (ActionResult *)m;
	CHECK_INT_EQ(ar->n_output_files, 2);
	CHECK_STR_EQ(ar->output_files[0]->path, "bazel-out/k8-fastbuild/bin/pkg/hello.sh");
	CHECK_STR_EQ(ar->output_files[0]->digest->hash, "313fc3e84c5107aa1534bbd82021a1e0ad163a26e4c468c11dec3c3802309f99");
	CHECK_INT_EQ(ar->output_files[0]->digest->size_bytes, 43);
	CHECK(ar->output_files[0]->is_executable);
	CHECK_STR_EQ(ar->output_files[1]->path, "bazel-out/k8-fastbuild/bin/pkg/empty.txt");
	CHECK_STR_EQ(ar->output_files[1]->digest->hash, H_EMPTY);
	CHECK_INT_EQ(ar->output_files[1]->digest->size_bytes, 0);
	CHECK_INT_EQ(ar->output_files[1]->contents.len, 0);
	CHECK(ar->output_files[1]->node_properties);
	CHECK_INT_EQ(ar->output_files[1]->node_properties->unix_mode->value, 0600);
	CHECK_INT_EQ(ar->output_files[1]->node_properties->mtime->seconds, 1700000000);
	CHECK_INT_EQ(ar->n_output_file_symlinks, 1);
	CHECK_STR_EQ(ar->output_file_symlinks[0]->path, "bazel-out/k8-fastbuild/bin/pkg/link");
	CHECK_STR_EQ(ar->output_file_symlinks[0]->target, "hello.sh");
	CHECK_INT_EQ(ar->n_output_symlinks, 1);
	CHECK_STR_EQ(ar->output_symlinks[0]->target, "hello.sh");
	CHECK_INT_EQ(ar->n_output_directories, 1);
	CHECK_STR_EQ(ar->output_directories[0]->path, "bazel-out/k8-fastbuild/bin/pkg/treeart_dir");
	CHECK_STR_EQ(ar->output_directories[0]->tree_digest->hash, H_TREE);
	CHECK_INT_EQ(ar->output_directories[0]->tree_digest->size_bytes, 416);
	CHECK_INT_EQ(ar->n_output_directory_symlinks, 1);
	CHECK_STR_EQ(ar->output_directory_symlinks[0]->target, "treeart_dir");
	CHECK_INT_EQ(ar->exit_code, 1);
	CHECK_INT_EQ(ar->stdout_raw.len, 0);
	CHECK_STR_EQ(ar->stdout_digest->hash, "f3cd0e6f602baa0ad649d403ba89c39dce443411c3ed7c24318f0a13974b0426");
	CHECK_INT_EQ(ar->stderr_raw.len, 5);
	CHECK(memcmp(ar->stderr_raw.data, "oops\n", 5) == 0);
	CHECK(ar->stderr_digest == NULL);
	ExecutedActionMetadata *md = ar->execution_metadata;
	CHECK(md);
	CHECK_STR_EQ(md->worker, "bazel-remote@10.0.0.7");
	CHECK_INT_EQ(md->worker_start_timestamp->seconds, 1795237192);
	CHECK_INT_EQ(md->worker_start_timestamp->nanos, 123000000);
	CHECK(md->queued_timestamp == NULL);
	/* The official text writes this Any in expanded form; the bytes inside
	 * are a Digest our code decodes. */
	CHECK_INT_EQ(md->n_auxiliary_metadata, 1);
	CHECK_STR_EQ(md->auxiliary_metadata[0]->type_url, "type.googleapis.com/build.bazel.remote.execution.v2.Digest");
	Digest *aux = build__bazel__remote__execution__v2__digest__unpack(NULL, md->auxiliary_metadata[0]->value.len,
									  md->auxiliary_metadata[0]->value.data);
	CHECK(aux);
	CHECK_STR_EQ(aux->hash, H_ACTION);
	CHECK_INT_EQ(aux->size_bytes, 144);
	build__bazel__remote__execution__v2__digest__free_unpacked(aux, NULL);
}

static void check_tree(ProtobufCMessage *m)
{
	Tree *t = (Tree *)m;
	CHECK(t->root);
	CHECK_INT_EQ(t->root->n_files, 1);
	CHECK_STR_EQ(t->root->files[0]->name, "a.txt");
	CHECK_INT_EQ(t->root->files[0]->digest->size_bytes, 6);
	CHECK(!t->root->files[0]->is_executable);
	CHECK_INT_EQ(t->root->n_directories, 1);
	CHECK_STR_EQ(t->root->directories[0]->name, "sub");
	CHECK_INT_EQ(t->root->directories[0]->digest->size_bytes, 160);
	CHECK_INT_EQ(t->root->n_symlinks, 1);
	CHECK_STR_EQ(t->root->symlinks[0]->name, "latest");
	CHECK_STR_EQ(t->root->symlinks[0]->target, "sub/b.txt");
	CHECK(t->root->node_properties);
	CHECK_INT_EQ(t->root->node_properties->n_properties, 1);
	CHECK_STR_EQ(t->root->node_properties->properties[0]->name, "owner");
	CHECK_INT_EQ(t->n_children, 1);
	CHECK_INT_EQ(t->children[0]->n_files, 2);
	CHECK_STR_EQ(t->children[0]->files[1]->name, "empty.txt");
	CHECK(t->children[0]->files[1]->digest);
	CHECK_INT_EQ(t->children[0]->files[1]->digest->size_bytes, 0);
	CHECK(t->children[0]->files[0]->is_executable);
}

static void check_spawn_exec(ProtobufCMessage *m)
{
	Tools__Protos__SpawnExec *s = (Tools__Protos__SpawnExec *)m;
	CHECK_INT_EQ(s->n_command_args, 3);
	CHECK_STR_EQ(s->command_args[0], "/bin/bash");
	CHECK_INT_EQ(s->n_environment_variables, 2);
	CHECK_STR_EQ(s->environment_variables[1]->name, "TMPDIR");
	CHECK_STR_EQ(s->environment_variables[1]->value, "/tmp");
	CHECK(s->platform);
	CHECK_INT_EQ(s->platform->n_properties, 1);
	CHECK_STR_EQ(s->platform->properties[0]->value, "docker://gcr.io/image@sha256:00");
	CHECK_INT_EQ(s->n_inputs, 1);
	CHECK_STR_EQ(s->inputs[0]->path, "pkg/input.txt");
	CHECK_STR_EQ(s->inputs[0]->digest->hash, "179c1d992ec0d3f9b2dae007d952fb9036fb8983e42bcf140fbc3d2ef1e0577f");
	CHECK_INT_EQ(s->inputs[0]->digest->size_bytes, 25);
	CHECK_STR_EQ(s->inputs[0]->digest->hash_function_name, "SHA-256");
	CHECK_INT_EQ(s->n_listed_outputs, 2);
	CHECK_STR_EQ(s->listed_outputs[1], "bazel-out/k8-fastbuild/bin/pkg/b.txt");
	CHECK(s->remotable);
	CHECK(!s->cacheable);
	CHECK_INT_EQ(s->timeout_millis, 300000);
	/* Bazel 4.2.3's progress_message (9) and remote_cache_hit (13, our
	 * cache_hit). */
	CHECK_STR_EQ(s->progress_message, "Executing genrule //pkg:ab");
	CHECK_STR_EQ(s->mnemonic, "Genrule");
	CHECK_INT_EQ(s->n_actual_outputs, 1);
	CHECK_STR_EQ(s->actual_outputs[0]->path, "bazel-out/k8-fastbuild/bin/pkg/a.txt");
	CHECK_STR_EQ(s->runner, "remote cache hit");
	CHECK(s->cache_hit);
	CHECK_STR_EQ(s->status, "NON_ZERO_EXIT");
	CHECK_INT_EQ(s->exit_code, 1);
	CHECK(s->remote_cacheable);
}

static const struct {
	const char *kind;
	const ProtobufCMessageDescriptor *desc;
	void (*check)(ProtobufCMessage *m);
	/* Our re-encoding equals protoc's bytes. Not so when a message holds a
	 * field unknown to us below one of its known fields (bep_action: 10
	 * before 11): protobuf-c writes unknown fields after the known ones.
	 * bep_completed's unknown FailureDetail category 108 is the last field
	 * of its message, so its bytes still match. */
	bool identical;
} kinds[] = {
	{ "bep_started", &build_event_stream__build_event__descriptor, check_bep_started, true },
	{ "bep_completed", &build_event_stream__build_event__descriptor, check_bep_completed, true },
	{ "bep_action", &build_event_stream__build_event__descriptor, check_bep_action, false },
	{ "action_result", &build__bazel__remote__execution__v2__action_result__descriptor, check_action_result, true },
	{ "tree", &build__bazel__remote__execution__v2__tree__descriptor, check_tree, true },
	{ "spawn_exec", &tools__protos__spawn_exec__descriptor, check_spawn_exec, true },
};

static int cmd_check(const char *kind, const char *path)
{
	size_t k = 0;
	while (k < sizeof(kinds) / sizeof(kinds[0]) && strcmp(kinds[k].kind, kind) != 0)
		k++;
	if (k == sizeof(kinds) / sizeof(kinds[0])) {
		fprintf(stderr, "proto_xcheck: unknown kind '%s'\n", kind);
		return 2;
	}
	struct pu_buf in = pu_slurp(path);
	ProtobufCMessage *m = protobuf_c_message_unpack(kinds[k].desc, NULL, in.len, in.data);
	CHECK(m);
	kinds[k].check(m);

	struct pu_buf out = pu_pack(m);
	CHECK_INT_EQ(out.len, in.len);
	if (kinds[k].identical) {
		CHECK(memcmp(out.data, in.data, in.len) == 0);
	} else {
		/* Same content: decoding our bytes again yields the same fields. */
		ProtobufCMessage *again = protobuf_c_message_unpack(kinds[k].desc, NULL, out.len, out.data);
		CHECK(again);
		kinds[k].check(again);
		protobuf_c_message_free_unpacked(again, NULL);
	}
	free(out.data);
	protobuf_c_message_free_unpacked(m, NULL);
	free(in.data);
	return 0;
}

/* ---------------------------------------------------------------------- */

static int cmd_tree_dirs(const char *path, const char *dir)
{
	struct pu_buf b = pu_slurp(path);
	Tree *t = build__bazel__remote__execution__v2__tree__unpack(NULL, b.len, b.data);
	CHECK(t);
	CHECK(t->root);
	write_msg(dir, "root.bin", &t->root->base);
	for (size_t i = 0; i < t->n_children; i++) {
		char name[64];
		snprintf(name, sizeof(name), "child-%zu.bin", i);
		write_msg(dir, name, &t->children[i]->base);
	}
	build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
	free(b.data);
	return 0;
}

static int cmd_reencode(const char *type, const char *in, const char *out)
{
	const ProtobufCMessageDescriptor *desc;
	if (strcmp(type, "action") == 0)
		desc = &build__bazel__remote__execution__v2__action__descriptor;
	else if (strcmp(type, "tree") == 0)
		desc = &build__bazel__remote__execution__v2__tree__descriptor;
	else {
		fprintf(stderr, "proto_xcheck: unknown type '%s'\n", type);
		return 1;
	}
	struct pu_buf b = pu_slurp(in);
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, b.len, b.data);
	CHECK(m);
	write_file(out, m);
	protobuf_c_message_free_unpacked(m, NULL);
	free(b.data);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "encode") == 0) {
		encode_bep_named_set(argv[2]);
		encode_bep_target_complete(argv[2]);
		encode_action_result(argv[2]);
		encode_action_result_new(argv[2]);
		encode_tree(argv[2]);
		encode_spawn_exec(argv[2]);
		encode_batch_read(argv[2]);
		encode_bytestream(argv[2]);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "check") == 0)
		return cmd_check(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "tree-dirs") == 0)
		return cmd_tree_dirs(argv[2], argv[3]);
	if (argc == 5 && strcmp(argv[1], "reencode") == 0)
		return cmd_reencode(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: proto_xcheck encode DIR | check KIND FILE | tree-dirs TREE DIR |"
		" reencode action|tree IN OUT\n");
	return 2;
}
