/* Decodes every record of the Bazel 4.2.3 fixtures with our generated code:
 * the BEP and execution-log streams of all three runs, every action-cache
 * entry, the Action and Command blobs they were keyed by, and the Tree of
 * the tree artifact. Checks concrete facts in each, then re-encodes every
 * fully understood message and compares it byte for byte with what Bazel
 * wrote. Bazel's encoder is canonical (ascending field numbers), so equal
 * bytes show protoc-c is too, even for ActionResult, whose fields are
 * declared out of numeric order; REAPI digests of Action, Directory and
 * Tree depend on that.
 *
 * Needs TF_FIXTURES and the `tar` program; anything missing fails the test. */
#include <dirent.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "build_event_stream.pb-c.h"
#include "remote_execution.pb-c.h"
#include "proto_util.h"
#include "spawn.pb-c.h"

#define MAX_RECORDS 256

#define EXEC_ROOT "/tmp/bwob/obase/a8f883b5734fbee2049b495b8b191471/execroot/btb_demo"
#define BIN_URI "file://" EXEC_ROOT "/bazel-out/k8-fastbuild/bin/"
/* Configuration ids: run 3's --remote_download_toplevel changes the
 * configuration, so its id differs from runs 1 and 2. */
#define CONFIG_MINIMAL "36fd808214a46a40ad8fcf2059cdc0e4e226f464433c1de9aa309bdafe649d1d"
#define CONFIG_TOPLEVEL "bd1ad0a8d1f666d159a8ac8063d146d23919bc109117e13d9a6f44ccac0b56ca"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define BIG_SHA256 "01ab038e04910e5e862d69473ac6c00048530e261c0d77bec7393e5138735dfe"
#define TREE_SHA256 "bb2e91f968ef792fb32dd8a42477b0341e0db61d7b999cd94b401d710f7e7420"

struct rec {
	const uint8_t *p;
	size_t len;
};

static const char *fixtures;

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "test_fixtures: %s: %s\n", what, detail);
	exit(1);
}

static struct pu_buf slurp_at(const char *dir, const char *name)
{
	char path[4096];
	CHECK(snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path));
	return pu_slurp(path);
}

/* Splits a stream of varint-length-delimited records (Java's
 * writeDelimitedTo: the length is a varint of a 32-bit size). */
static size_t split_stream(const struct pu_buf *b, struct rec *recs, size_t cap)
{
	size_t n = 0, off = 0;
	while (off < b->len) {
		uint64_t len = 0;
		unsigned shift = 0;
		for (;;) {
			CHECK(off < b->len);
			CHECK(shift < 35);
			uint8_t byte = b->data[off++];
			len |= (uint64_t)(byte & 0x7f) << shift;
			shift += 7;
			if (!(byte & 0x80))
				break;
		}
		CHECK(len <= b->len - off);
		CHECK(n < cap);
		recs[n].p = b->data + off;
		recs[n].len = (size_t)len;
		n++;
		off += (size_t)len;
	}
	return n;
}

/* Our encoding of a decoded message must reproduce the original bytes. */
static void check_reencodes(const ProtobufCMessage *m, const uint8_t *orig, size_t len,
			    const char *what)
{
	struct pu_buf out = pu_pack(m);
	if (out.len != len || memcmp(out.data, orig, len) != 0) {
		size_t at = 0;
		while (at < len && at < out.len && out.data[at] == orig[at])
			at++;
		fprintf(stderr, "%s: re-encoding differs from the original (%zu vs %zu bytes, "
			"first difference at offset %zu)\n", what, out.len, len, at);
		exit(1);
	}
	free(out.data);
}

static bool str_in(const char *s, char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

/* ---------------------------------------------------------------------- */
/* BEP                                                                    */

static void check_bin_file(const BuildEventStream__File *f, const char *name)
{
	char uri[512];
	snprintf(uri, sizeof(uri), BIN_URI "%s", name);
	CHECK_STR_EQ(f->name, name);
	CHECK_INT_EQ(f->file_case, BUILD_EVENT_STREAM__FILE__FILE_URI);
	CHECK_STR_EQ(f->uri, uri);
	CHECK_INT_EQ(f->n_path_prefix, 3);
	CHECK_STR_EQ(f->path_prefix[0], "bazel-out");
	CHECK_STR_EQ(f->path_prefix[1], "k8-fastbuild");
	CHECK_STR_EQ(f->path_prefix[2], "bin");
	/* Bazel 4.2.3's File has no digest (5) or length (6). */
	CHECK_STR_EQ(f->digest, "");
	CHECK_INT_EQ(f->length, 0);
}

static void check_bep_run(const char *run, const char *config_id)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/%s", fixtures, run);
	struct pu_buf stream = slurp_at(dir, "bep.bin");
	struct rec recs[MAX_RECORDS];
	size_t n = split_stream(&stream, recs, MAX_RECORDS);
	CHECK_INT_EQ(n, 45);

	BuildEventStream__BuildEvent *ev[MAX_RECORDS];
	int payloads[64] = { 0 };
	struct pu_buf announced[MAX_RECORDS * 16];
	size_t n_announced = 0;
	char *named_sets[16];
	size_t n_named_sets = 0;
	size_t n_last = 0, n_unknown_events = 0, n_scl = 0;
	bool saw_big = false, saw_tool_sh = false, saw_treeart = false, saw_big_stdout = false;

	for (size_t i = 0; i < n; i++) {
		BuildEventStream__BuildEvent *e =
			build_event_stream__build_event__unpack(NULL, recs[i].len, recs[i].p);
		if (!e) {
			fprintf(stderr, "%s: record %zu does not decode\n", run, i);
			exit(1);
		}
		ev[i] = e;
		CHECK(e->id);
		CHECK((unsigned)e->payload_case < 64);
		payloads[e->payload_case]++;
		if (e->last_message)
			n_last++;

		/* Announced before posted: every id but the first was listed as
		 * a child earlier. Ids compare by their serialized bytes. */
		struct pu_buf packed_id = pu_pack(&e->id->base);
		if (i > 0) {
			bool found = false;
			for (size_t j = 0; j < n_announced && !found; j++)
				found = announced[j].len == packed_id.len &&
					memcmp(announced[j].data, packed_id.data, packed_id.len) == 0;
			if (!found) {
				fprintf(stderr, "%s: record %zu has an id nobody announced\n", run, i);
				exit(1);
			}
		}
		free(packed_id.data);
		for (size_t c = 0; c < e->n_children; c++) {
			CHECK(n_announced < sizeof(announced) / sizeof(announced[0]));
			announced[n_announced++] = pu_pack(&e->children[c]->base);
		}

		/* BuildMetrics is deliberately not declared: it must be the only
		 * unknown field. Every event must round-trip exactly, that one
		 * too: protobuf-c writes unknown fields last, and 24 is the
		 * highest field number in that event. */
		size_t unknown = pu_unknown_fields(&e->base);
		if (unknown) {
			n_unknown_events++;
			CHECK_INT_EQ(e->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD__NOT_SET);
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_METRICS);
			CHECK_INT_EQ(unknown, 1);
			CHECK_INT_EQ(e->base.n_unknown_fields, 1);
			CHECK_INT_EQ(e->base.unknown_fields[0].tag, 24);
			CHECK_INT_EQ(e->base.unknown_fields[0].wire_type, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
		}
		char what[128];
		snprintf(what, sizeof(what), "%s/bep.bin record %zu", run, i);
		check_reencodes(&e->base, recs[i].p, recs[i].len, what);

		switch (e->payload_case) {
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED:
			CHECK_INT_EQ(i, 0);
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED);
			CHECK_INT_EQ(strlen(e->started->uuid), 36);
			CHECK_STR_EQ(e->started->command, "build");
			CHECK_STR_EQ(e->started->workspace_directory, "/tmp/bwob/ws");
			CHECK(e->started->start_time_millis > 0);
			/* Newer than 4.2.3: start_time (9). */
			CHECK(e->started->start_time == NULL);
			break;
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STRUCTURED_COMMAND_LINE:
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STRUCTURED_COMMAND_LINE);
			n_scl++;
			if (strcmp(e->id->structured_command_line->command_line_label, "canonical") == 0) {
				CommandLine__CommandLine *cl = e->structured_command_line;
				CHECK_STR_EQ(cl->command_line_label, "canonical");
				CHECK(cl->n_sections >= 2);
				CHECK_STR_EQ(cl->sections[0]->section_label, "executable");
				CHECK_INT_EQ(cl->sections[0]->section_type_case,
					     COMMAND_LINE__COMMAND_LINE_SECTION__SECTION_TYPE_CHUNK_LIST);
				CHECK_STR_EQ(cl->sections[0]->chunk_list->chunk[0], "bazel");
				CHECK_INT_EQ(cl->sections[1]->section_type_case,
					     COMMAND_LINE__COMMAND_LINE_SECTION__SECTION_TYPE_OPTION_LIST);
				CommandLine__Option *opt = cl->sections[1]->option_list->option[0];
				CHECK_STR_EQ(opt->option_name, "max_idle_secs");
				/* Packed repeated enum: EAGERNESS_TO_EXIT, LOSES_INCREMENTAL_STATE. */
				CHECK_INT_EQ(opt->n_effect_tags, 2);
				CHECK_INT_EQ(opt->effect_tags[0], OPTIONS__OPTION_EFFECT_TAG__EAGERNESS_TO_EXIT);
				CHECK_INT_EQ(opt->effect_tags[1], OPTIONS__OPTION_EFFECT_TAG__LOSES_INCREMENTAL_STATE);
			}
			break;
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_EXPANDED:
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PATTERN);
			CHECK_INT_EQ(e->id->pattern->n_pattern, 7);
			CHECK_STR_EQ(e->id->pattern->pattern[0], "//pkg:combined");
			CHECK_INT_EQ(e->n_children, 7);
			break;
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_WORKSPACE_INFO:
			CHECK_STR_EQ(e->workspace_info->local_exec_root, EXEC_ROOT);
			break;
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_CONFIGURATION: {
			BuildEventStream__Configuration *c = e->configuration;
			CHECK_STR_EQ(e->id->configuration->id, config_id);
			CHECK_STR_EQ(c->mnemonic, "k8-fastbuild");
			CHECK_STR_EQ(c->cpu, "k8");
			/* A map: entries on the wire in no particular order. */
			CHECK_INT_EQ(c->n_make_variable, 4);
			const char *bindir = NULL;
			for (size_t k = 0; k < c->n_make_variable; k++)
				if (strcmp(c->make_variable[k]->key, "BINDIR") == 0)
					bindir = c->make_variable[k]->value;
			CHECK_STR_EQ(bindir, "bazel-out/k8-fastbuild/bin");
			break;
		}
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS:
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS);
			if (strcmp(e->progress->stdout, "big: stdout line\n") == 0)
				saw_big_stdout = true;
			break;
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES: {
			BuildEventStream__NamedSetOfFiles *ns = e->named_set_of_files;
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET);
			CHECK(n_named_sets < 16);
			named_sets[n_named_sets++] = e->id->named_set->id;
			CHECK_INT_EQ(ns->n_file_sets, 0);
			for (size_t f = 0; f < ns->n_files; f++) {
				if (strcmp(ns->files[f]->name, "pkg/big.dat") == 0) {
					check_bin_file(ns->files[f], "pkg/big.dat");
					saw_big = true;
				}
				if (strcmp(ns->files[f]->name, "pkg/tool.sh") == 0) {
					/* A source file: no prefix, uri into the workspace. */
					CHECK_INT_EQ(ns->files[f]->n_path_prefix, 0);
					CHECK_STR_EQ(ns->files[f]->uri, "file:///tmp/bwob/ws/pkg/tool.sh");
					saw_tool_sh = true;
				}
			}
			break;
		}
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED: {
			BuildEventStream__TargetComplete *tc = e->completed;
			BuildEventStream__BuildEventId__TargetCompletedId *id = e->id->target_completed;
			CHECK_INT_EQ(e->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED);
			CHECK_STR_EQ(id->configuration->id, config_id);
			CHECK_STR_EQ(id->aspect, "");
			CHECK(tc->success);
			CHECK(tc->failure_detail == NULL);
			CHECK_INT_EQ(tc->n_output_group, 1);
			CHECK_STR_EQ(tc->output_group[0]->name, "default");
			CHECK(!tc->output_group[0]->incomplete);
			CHECK_INT_EQ(tc->output_group[0]->n_file_sets, 1);
			/* Named sets come before the targets that use them. */
			CHECK(str_in(tc->output_group[0]->file_sets[0]->id, named_sets, n_named_sets));
			if (strcmp(id->label, "//pkg:treeart") == 0) {
				CHECK_INT_EQ(tc->n_important_output, 4);
				check_bin_file(tc->important_output[2], "pkg/treeart_dir/sub/b.txt");
				CHECK_INT_EQ(tc->n_directory_output, 1);
				CHECK_STR_EQ(tc->directory_output[0]->name, "pkg/treeart_dir");
				CHECK_INT_EQ(tc->directory_output[0]->n_path_prefix, 3);
				/* Directory outputs never carry a uri. */
				CHECK_INT_EQ(tc->directory_output[0]->file_case,
					     BUILD_EVENT_STREAM__FILE__FILE__NOT_SET);
				saw_treeart = true;
			} else {
				CHECK_INT_EQ(tc->n_directory_output, 0);
			}
			break;
		}
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_FINISHED:
			CHECK(e->finished->overall_success);
			CHECK(e->finished->exit_code);
			CHECK_STR_EQ(e->finished->exit_code->name, "SUCCESS");
			CHECK_INT_EQ(e->finished->exit_code->code, 0);
			CHECK(e->finished->finish_time_millis > 0);
			CHECK(e->finished->finish_time == NULL);
			break;
		case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS: {
			BuildEventStream__BuildToolLogs *logs = e->build_tool_logs;
			CHECK_INT_EQ(logs->n_log, 4);
			CHECK_STR_EQ(logs->log[0]->name, "elapsed time");
			CHECK_INT_EQ(logs->log[0]->file_case, BUILD_EVENT_STREAM__FILE__FILE_CONTENTS);
			CHECK(logs->log[0]->contents.len > 0);
			CHECK_STR_EQ(logs->log[3]->name, "command.profile.gz");
			CHECK_STR_EQ(logs->log[3]->uri,
				     "file:///tmp/bwob/obase/a8f883b5734fbee2049b495b8b191471/command.profile.gz");
			break;
		}
		default:
			break;
		}
	}

	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STRUCTURED_COMMAND_LINE], 3);
	CHECK_INT_EQ(n_scl, 3);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_UNSTRUCTURED_COMMAND_LINE], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_METADATA], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_OPTIONS_PARSED], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_EXPANDED], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS], 10);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_WORKSPACE_INFO], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_CONFIGURATION], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_CONFIGURED], 7);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_WORKSPACE_STATUS], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES], 7);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED], 7);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_FINISHED], 1);
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS], 1);
	/* build_metrics, not declared by us. */
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD__NOT_SET], 1);
	CHECK_INT_EQ(n_unknown_events, 1);
	/* Bazel 4.2.3 sends no ActionExecuted for successful actions. */
	CHECK_INT_EQ(payloads[BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_ACTION], 0);

	/* Named sets "0" to "6", one per top-level target. */
	CHECK_INT_EQ(n_named_sets, 7);
	for (int k = 0; k < 7; k++) {
		char want[2] = { (char)('0' + k), 0 };
		CHECK(str_in(want, named_sets, n_named_sets));
	}

	/* The last record, and only it, ends the stream: BuildToolLogs. */
	CHECK_INT_EQ(n_last, 1);
	CHECK(ev[n - 1]->last_message);
	CHECK_INT_EQ(ev[n - 1]->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS);
	CHECK_INT_EQ(ev[n - 1]->id->id_case, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_TOOL_LOGS);

	CHECK(saw_big);
	CHECK(saw_tool_sh);
	CHECK(saw_treeart);
	/* Replayed from the cache in runs 2 and 3. */
	CHECK(saw_big_stdout);

	for (size_t j = 0; j < n_announced; j++)
		free(announced[j].data);
	for (size_t i = 0; i < n; i++)
		build_event_stream__build_event__free_unpacked(ev[i], NULL);
	free(stream.data);
}

/* ---------------------------------------------------------------------- */
/* Execution log                                                          */

enum exec_kind { RAN_LOCALLY, HIT_MINIMAL, HIT_TOPLEVEL };

static void check_exec_run(const char *run, enum exec_kind kind)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/%s", fixtures, run);
	struct pu_buf stream = slurp_at(dir, "exec.bin");
	struct rec recs[MAX_RECORDS];
	size_t n = split_stream(&stream, recs, MAX_RECORDS);
	CHECK_INT_EQ(n, 8);

	size_t n_actual = 0, n_genrule = 0, n_maketree = 0;
	bool saw_big = false;
	for (size_t i = 0; i < n; i++) {
		Tools__Protos__SpawnExec *s = tools__protos__spawn_exec__unpack(NULL, recs[i].len, recs[i].p);
		CHECK(s);
		char what[128];
		snprintf(what, sizeof(what), "%s/exec.bin record %zu", run, i);
		CHECK_INT_EQ(pu_unknown_fields(&s->base), 0);
		check_reencodes(&s->base, recs[i].p, recs[i].len, what);

		CHECK_STR_EQ(s->command_args[0], "/bin/bash");
		/* Present but empty (tag + zero length). */
		CHECK(s->platform);
		CHECK_INT_EQ(s->platform->n_properties, 0);
		CHECK(s->remotable && s->cacheable && s->remote_cacheable);
		CHECK_STR_EQ(s->status, "");
		CHECK_INT_EQ(s->exit_code, 0);
		CHECK(s->n_listed_outputs >= 1);
		/* Fields newer than Bazel 4.2.3. */
		CHECK_STR_EQ(s->target_label, "");
		CHECK(s->digest == NULL);
		CHECK(s->metrics == NULL);
		if (strcmp(s->mnemonic, "Genrule") == 0) {
			/* --incompatible_strict_action_env */
			CHECK_INT_EQ(s->n_environment_variables, 1);
			CHECK_STR_EQ(s->environment_variables[0]->name, "PATH");
			CHECK_STR_EQ(s->environment_variables[0]->value, "/bin:/usr/bin:/usr/local/bin");
			n_genrule++;
		} else {
			/* The Starlark tree-artifact rule sets no environment. */
			CHECK_STR_EQ(s->mnemonic, "MakeTree");
			CHECK_INT_EQ(s->n_environment_variables, 0);
			CHECK_STR_EQ(s->listed_outputs[0], "bazel-out/k8-fastbuild/bin/pkg/treeart_dir");
			n_maketree++;
		}

		if (kind == RAN_LOCALLY) {
			CHECK_STR_EQ(s->runner, "processwrapper-sandbox");
			CHECK(!s->cache_hit);
		} else {
			CHECK_STR_EQ(s->runner, "remote cache hit");
			CHECK(s->cache_hit);
		}
		if (kind == HIT_MINIMAL)
			CHECK_INT_EQ(s->n_actual_outputs, 0);
		n_actual += s->n_actual_outputs;

		if (strcmp(s->listed_outputs[0], "bazel-out/k8-fastbuild/bin/pkg/big.dat") == 0) {
			saw_big = true;
			CHECK_STR_EQ(s->progress_message, "Executing genrule //pkg:big");
			CHECK_INT_EQ(s->n_inputs, 2);
			CHECK_STR_EQ(s->inputs[0]->path, "bazel-out/k8-fastbuild/bin/pkg/intermediate2.txt");
			CHECK_STR_EQ(s->inputs[0]->digest->hash,
				     "29f5b5b35aafdb3133797df094bda30bfe46307313485f63f5963e0e5f6595b1");
			CHECK_INT_EQ(s->inputs[0]->digest->size_bytes, 20);
			CHECK_STR_EQ(s->inputs[0]->digest->hash_function_name, "SHA-256");
			if (kind != HIT_MINIMAL) {
				CHECK_INT_EQ(s->n_actual_outputs, 1);
				CHECK_STR_EQ(s->actual_outputs[0]->path, "bazel-out/k8-fastbuild/bin/pkg/big.dat");
				CHECK_STR_EQ(s->actual_outputs[0]->digest->hash, BIG_SHA256);
				CHECK_INT_EQ(s->actual_outputs[0]->digest->size_bytes, 5063895);
			}
		}
		tools__protos__spawn_exec__free_unpacked(s, NULL);
	}
	CHECK(saw_big);
	CHECK_INT_EQ(n_genrule, 7);
	CHECK_INT_EQ(n_maketree, 1);
	/* 1 file per genrule except 3 for :multi, 4 files in the tree artifact;
	 * toplevel mode skips the two intermediates. */
	if (kind == RAN_LOCALLY)
		CHECK_INT_EQ(n_actual, 13);
	else if (kind == HIT_TOPLEVEL)
		CHECK_INT_EQ(n_actual, 11);
	free(stream.data);
}

/* ---------------------------------------------------------------------- */
/* Cache: ac/ entries, the Action and Command blobs, the Tree             */

/* The extracted cache; removed at exit, also when a CHECK fails. */
static char cache_dir[] = "/tmp/tf-proto-cache-XXXXXX";
static bool cache_created;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void remove_cache(void)
{
	if (cache_created && nftw(cache_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "test_fixtures: cannot remove %s\n", cache_dir);
}

static void run_tar(const char *archive, const char *dir)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		execlp("tar", "tar", "-xzf", archive, "-C", dir, (char *)NULL);
		fprintf(stderr, "test_fixtures: cannot run tar: %s\n", strerror(errno));
		_exit(127);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail(archive, "tar -xzf failed");
}

static Build__Bazel__Remote__Execution__V2__ActionResult *decode_ac(const char *cache, const char *key)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/ac", cache);
	struct pu_buf b = slurp_at(dir, key);
	Build__Bazel__Remote__Execution__V2__ActionResult *ar =
		build__bazel__remote__execution__v2__action_result__unpack(NULL, b.len, b.data);
	CHECK(ar);
	char what[160];
	snprintf(what, sizeof(what), "ac/%s", key);
	CHECK_INT_EQ(pu_unknown_fields(&ar->base), 0);
	check_reencodes(&ar->base, b.data, b.len, what);
	free(b.data);
	return ar;
}

static void check_digest(const Build__Bazel__Remote__Execution__V2__Digest *d, const char *hash, int64_t size)
{
	CHECK(d);
	CHECK_STR_EQ(d->hash, hash);
	CHECK_INT_EQ(d->size_bytes, size);
}

/* The ac/ entries that hold exactly one output file. */
static const struct {
	const char *key, *path, *hash;
	int64_t size;
	bool executable;
} single_outputs[] = {
	{ "92490467f0c9175b09e4b20a932c1f40f8955a70dba68e3f35e215ed8a2a1cda", "pkg/intermediate.txt",
	  "c7d9472ea6fe416d49cb7782637acda703204e16a09361e868201554cc50427d", 25, false },
	{ "612146a48c67ca637205c03a8d59868e0515b91b5b54ccc36c70364e68fa9b35", "pkg/intermediate2.txt",
	  "29f5b5b35aafdb3133797df094bda30bfe46307313485f63f5963e0e5f6595b1", 20, false },
	{ "d156cc0cd1b340af1535bd58835dcef8e9f048018679f4e7d17f3c73f67fe837", "pkg/combined.txt",
	  "d350ffe2c6c76790337640fe710364a4e3c2caaf81aae644003cd3ad6e458a31", 50, false },
	{ "c0dd39afc1ed98a8fa1b949d5402b25e4eae13a29345e644ea7e5dbbaa6471a9", "pkg/hello.sh",
	  "313fc3e84c5107aa1534bbd82021a1e0ad163a26e4c468c11dec3c3802309f99", 43, true },
	{ "4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb", "pkg/big.dat",
	  BIG_SHA256, 5063895, false },
	{ "b5a52a3991c8bd638ae2ec71519c6d3c0becd269cea41981b63a285664fc744c", "pkg/empty.txt",
	  EMPTY_SHA256, 0, false },
};

static const char multi_key[] = "0cc1d576666eef2a0492436be0e7441ec7b0bb240d8cd933ef26056fb8cce5a1";
static const char treeart_key[] = "1a2b24205f7af474b9c2b818a997383d41ab379f4704a1220a77948bf31693e4";

/* The ac key is the digest of the Action blob stored under the same name in
 * cas/; Bazel 4.2.3 still fills the deprecated Command.output_files. */
static void check_action(const char *cache, const char *key)
{
	char cas[4096];
	snprintf(cas, sizeof(cas), "%s/cas", cache);
	struct pu_buf b = slurp_at(cas, key);
	Build__Bazel__Remote__Execution__V2__Action *a =
		build__bazel__remote__execution__v2__action__unpack(NULL, b.len, b.data);
	CHECK(a);
	CHECK_INT_EQ(pu_unknown_fields(&a->base), 0);
	check_reencodes(&a->base, b.data, b.len, "Action");
	CHECK(a->command_digest && a->input_root_digest);
	CHECK_INT_EQ(strlen(a->command_digest->hash), 64);
	CHECK(!a->do_not_cache);

	struct pu_buf cb = slurp_at(cas, a->command_digest->hash);
	CHECK_INT_EQ(cb.len, a->command_digest->size_bytes);
	Build__Bazel__Remote__Execution__V2__Command *c =
		build__bazel__remote__execution__v2__command__unpack(NULL, cb.len, cb.data);
	CHECK(c);
	CHECK_INT_EQ(pu_unknown_fields(&c->base), 0);
	check_reencodes(&c->base, cb.data, cb.len, "Command");
	CHECK_STR_EQ(c->arguments[0], "/bin/bash");
	/* Bazel 4.2.3 predates output_paths (REAPI 2.1). */
	CHECK_INT_EQ(c->n_output_paths, 0);
	CHECK(c->n_output_files + c->n_output_directories >= 1);
	if (strcmp(key, treeart_key) == 0) {
		CHECK_INT_EQ(c->n_output_directories, 1);
		CHECK_STR_EQ(c->output_directories[0], "bazel-out/k8-fastbuild/bin/pkg/treeart_dir");
	}
	build__bazel__remote__execution__v2__command__free_unpacked(c, NULL);
	build__bazel__remote__execution__v2__action__free_unpacked(a, NULL);
	free(cb.data);
	free(b.data);
}

static void check_tree(const char *cache)
{
	char cas[4096];
	snprintf(cas, sizeof(cas), "%s/cas", cache);
	struct pu_buf b = slurp_at(cas, TREE_SHA256);
	CHECK_INT_EQ(b.len, 416);
	Build__Bazel__Remote__Execution__V2__Tree *t =
		build__bazel__remote__execution__v2__tree__unpack(NULL, b.len, b.data);
	CHECK(t);
	CHECK_INT_EQ(pu_unknown_fields(&t->base), 0);
	check_reencodes(&t->base, b.data, b.len, "Tree " TREE_SHA256);

	Build__Bazel__Remote__Execution__V2__Directory *root = t->root;
	CHECK(root);
	CHECK_INT_EQ(root->n_files, 2);
	CHECK_STR_EQ(root->files[0]->name, "a.txt");
	check_digest(root->files[0]->digest, "b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060", 6);
	CHECK(!root->files[0]->is_executable);
	CHECK_STR_EQ(root->files[1]->name, "copy_of_input.txt");
	check_digest(root->files[1]->digest, "c7d9472ea6fe416d49cb7782637acda703204e16a09361e868201554cc50427d", 25);
	CHECK(root->files[1]->is_executable);
	CHECK_INT_EQ(root->n_directories, 1);
	CHECK_STR_EQ(root->directories[0]->name, "sub");
	check_digest(root->directories[0]->digest,
		     "506291ec1abdfe990b50a03cb200fb94a54b48ef194f150ed9947a8471851338", 160);
	CHECK_INT_EQ(root->n_symlinks, 0);

	CHECK_INT_EQ(t->n_children, 1);
	Build__Bazel__Remote__Execution__V2__Directory *sub = t->children[0];
	CHECK_INT_EQ(sub->n_files, 2);
	CHECK_STR_EQ(sub->files[0]->name, "b.txt");
	check_digest(sub->files[0]->digest, "f2c82decdd7181cf98945929a62598db7e6b477e11f6e0eb0ae97020eff151ad", 5);
	CHECK_STR_EQ(sub->files[1]->name, "empty.txt");
	check_digest(sub->files[1]->digest, EMPTY_SHA256, 0);
	/* Our encoding of the child has the size its DirectoryNode names
	 * (test_official.sh also checks its SHA-256). */
	CHECK_INT_EQ(protobuf_c_message_get_packed_size(&sub->base), 160);

	build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
	free(b.data);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void check_cache(void)
{
	char archive[4096];
	const char *cache = cache_dir;
	snprintf(archive, sizeof(archive), "%s/cache.tar.gz", fixtures);
	if (access(archive, R_OK) != 0)
		fail(archive, strerror(errno));
	CHECK(mkdtemp(cache_dir));
	cache_created = true;
	CHECK(atexit(remove_cache) == 0);
	run_tar(archive, cache);

	/* Exactly 8 ActionResults, and every one decodes and round-trips. */
	char acdir[4096], *keys[16];
	size_t n_keys = 0;
	snprintf(acdir, sizeof(acdir), "%s/ac", cache);
	DIR *d = opendir(acdir);
	CHECK(d);
	for (struct dirent *de; (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		CHECK(n_keys < 16);
		keys[n_keys] = strdup(de->d_name);
		CHECK(keys[n_keys]);
		n_keys++;
	}
	closedir(d);
	CHECK_INT_EQ(n_keys, 8);
	qsort(keys, n_keys, sizeof(keys[0]), cmp_str);

	for (size_t i = 0; i < n_keys; i++) {
		Build__Bazel__Remote__Execution__V2__ActionResult *ar = decode_ac(cache, keys[i]);
		CHECK_INT_EQ(ar->exit_code, 0);
		CHECK(ar->stdout_digest && ar->stderr_digest);
		CHECK_INT_EQ(ar->stdout_raw.len + ar->stderr_raw.len, 0);
		/* Bazel 4.2.3 writes no execution_metadata and no symlinks. */
		CHECK(ar->execution_metadata == NULL);
		CHECK_INT_EQ(ar->n_output_symlinks + ar->n_output_file_symlinks + ar->n_output_directory_symlinks, 0);
		build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
		check_action(cache, keys[i]);
	}

	for (size_t i = 0; i < sizeof(single_outputs) / sizeof(single_outputs[0]); i++) {
		Build__Bazel__Remote__Execution__V2__ActionResult *ar = decode_ac(cache, single_outputs[i].key);
		char path[256];
		snprintf(path, sizeof(path), "bazel-out/k8-fastbuild/bin/%s", single_outputs[i].path);
		CHECK_INT_EQ(ar->n_output_files, 1);
		CHECK_INT_EQ(ar->n_output_directories, 0);
		CHECK_STR_EQ(ar->output_files[0]->path, path);
		check_digest(ar->output_files[0]->digest, single_outputs[i].hash, single_outputs[i].size);
		CHECK_INT_EQ(ar->output_files[0]->is_executable, single_outputs[i].executable);
		CHECK_INT_EQ(ar->output_files[0]->contents.len, 0);
		if (strcmp(single_outputs[i].path, "pkg/big.dat") == 0) {
			check_digest(ar->stdout_digest, "f3cd0e6f602baa0ad649d403ba89c39dce443411c3ed7c24318f0a13974b0426", 17);
			check_digest(ar->stderr_digest, "e67b6775ac15151cc061ce8e8b01cd8556f58bf58d25fba1a58d290da11a581e", 22);
		} else {
			check_digest(ar->stdout_digest, EMPTY_SHA256, 0);
			check_digest(ar->stderr_digest, EMPTY_SHA256, 0);
		}
		build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
	}

	Build__Bazel__Remote__Execution__V2__ActionResult *multi = decode_ac(cache, multi_key);
	CHECK_INT_EQ(multi->n_output_files, 3);
	CHECK_STR_EQ(multi->output_files[0]->path, "bazel-out/k8-fastbuild/bin/pkg/multi/one.txt");
	check_digest(multi->output_files[0]->digest, "c7d9472ea6fe416d49cb7782637acda703204e16a09361e868201554cc50427d", 25);
	CHECK(multi->output_files[0]->is_executable);
	CHECK_STR_EQ(multi->output_files[1]->path, "bazel-out/k8-fastbuild/bin/pkg/multi/two.txt");
	check_digest(multi->output_files[1]->digest, "27dd8ed44a83ff94d557f9fd0412ed5a8cbca69ea04922d88c01184a07300a5a", 4);
	CHECK(!multi->output_files[1]->is_executable);
	CHECK_STR_EQ(multi->output_files[2]->path, "bazel-out/k8-fastbuild/bin/pkg/multi/three.bin");
	check_digest(multi->output_files[2]->digest, "541b3e9daa09b20bf85fa273e5cbd3e80185aa4ec298e765db87742b70138a53", 1000);
	build__bazel__remote__execution__v2__action_result__free_unpacked(multi, NULL);

	Build__Bazel__Remote__Execution__V2__ActionResult *tree = decode_ac(cache, treeart_key);
	CHECK_INT_EQ(tree->n_output_files, 0);
	CHECK_INT_EQ(tree->n_output_directories, 1);
	CHECK_STR_EQ(tree->output_directories[0]->path, "bazel-out/k8-fastbuild/bin/pkg/treeart_dir");
	check_digest(tree->output_directories[0]->tree_digest, TREE_SHA256, 416);
	/* Newer than what Bazel 4.2.3 writes. */
	CHECK(!tree->output_directories[0]->is_topologically_sorted);
	CHECK(tree->output_directories[0]->root_directory_digest == NULL);
	build__bazel__remote__execution__v2__action_result__free_unpacked(tree, NULL);

	check_tree(cache);

	for (size_t i = 0; i < n_keys; i++)
		free(keys[i]);
}

int main(void)
{
	fixtures = getenv("TF_FIXTURES");
	if (!fixtures || !*fixtures)
		fail("TF_FIXTURES", "not set (run through meson test)");

	check_bep_run("run1_populate", CONFIG_MINIMAL);
	check_bep_run("run2_minimal_hits", CONFIG_MINIMAL);
	check_bep_run("run3_toplevel_hits", CONFIG_TOPLEVEL);
	check_exec_run("run1_populate", RAN_LOCALLY);
	check_exec_run("run2_minimal_hits", HIT_MINIMAL);
	check_exec_run("run3_toplevel_hits", HIT_TOPLEVEL);
	check_cache();
	printf("fixtures: 3 x 45 BEP events, 3 x 8 SpawnExec, 8 ActionResults, 8 Actions + Commands, 1 Tree: ok\n");
	return 0;
}
