/* Synthesized build events (session/synth.c) through a real session and a
 * disk cache: the stream the sinks get is gated (every event announced
 * before it, named sets before their target, BuildFinished after every
 * target, last_message last), named sets carry digest and length (given,
 * or filled in from the store), paths are split as Bazel splits them, a
 * target whose file is lost turns into success: false naming the file and
 * its action, and bad reports are refused before anything is posted. */
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "events/events.h"
#include "remote_execution.pb-c.h"
#include "tf_test.h"
#include "topfetch.h"

#define BIN "bazel-out/k8-fastbuild/bin/pkg/"

static char tmp[64];
static int lost_calls;
static char lost_path[256], lost_action[80], lost_target[80];

static void sha256_hex(const char *data, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned len;
	EVP_Digest(data, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Puts a blob into the disk cache (Bazel's --disk_cache layout). */
static void cache_put(const char *data, char hash[65])
{
	char path[512];
	FILE *f;

	sha256_hex(data, strlen(data), hash);
	snprintf(path, sizeof(path), "%s/cache/cas/%.2s", tmp, hash);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/cache/cas/%.2s/%s", tmp, hash, hash);
	f = fopen(path, "wb");
	CHECK(f);
	fputs(data, f);
	fclose(f);
}

static void on_lost(const tf_lost_output *l, void *user)
{
	(void)user;
	lost_calls++;
	snprintf(lost_path, sizeof(lost_path), "%s", l->path);
	snprintf(lost_action, sizeof(lost_action), "%s", l->action_key ? l->action_key : "");
	snprintf(lost_target, sizeof(lost_target), "%s", l->target ? l->target : "");
}

static char *read_all(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "rb");
	size_t n;
	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* An ActionResult with two output files. */
static unsigned char *action_result(const char *hash_b, const char *hash_c, size_t *len)
{
	Build__Bazel__Remote__Execution__V2__ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	Build__Bazel__Remote__Execution__V2__OutputFile f[2] = { BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_FILE__INIT,
								 BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_FILE__INIT };
	Build__Bazel__Remote__Execution__V2__Digest d[2] = { BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT,
							     BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT };
	Build__Bazel__Remote__Execution__V2__OutputFile *fp[2] = { &f[0], &f[1] };
	unsigned char *buf;

	f[0].path = BIN "b.sh";
	d[0].hash = (char *)hash_b;
	d[0].size_bytes = (int64_t)strlen("#!/bin/sh\necho bravo\n");
	f[0].digest = &d[0];
	f[0].is_executable = 1;
	f[1].path = BIN "c.txt";
	d[1].hash = (char *)hash_c;
	d[1].size_bytes = (int64_t)strlen("charlie, never uploaded\n");
	f[1].digest = &d[1];
	ar.output_files = fp;
	ar.n_output_files = 2;
	*len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
	buf = malloc(*len);
	CHECK(buf);
	build__bazel__remote__execution__v2__action_result__pack(&ar, buf);
	return buf;
}

typedef struct seen {
	unsigned char *keys[256];
	size_t lens[256];
	int n;
} seen;

static void remember(seen *s, const BuildEventStream__BuildEventId *id)
{
	CHECK(s->n < 256);
	s->lens[s->n] = build_event_stream__build_event_id__get_packed_size(id);
	s->keys[s->n] = malloc(s->lens[s->n] + 1);
	CHECK(s->keys[s->n]);
	build_event_stream__build_event_id__pack(id, s->keys[s->n]);
	s->n++;
}

static bool known(const seen *s, const BuildEventStream__BuildEventId *id)
{
	size_t n = build_event_stream__build_event_id__get_packed_size(id);
	unsigned char *k = malloc(n + 1);
	bool found = false;
	CHECK(k);
	build_event_stream__build_event_id__pack(id, k);
	for (int i = 0; i < s->n && !found; i++)
		found = s->lens[i] == n && !memcmp(s->keys[i], k, n);
	free(k);
	return found;
}

static const BuildEventStream__File *only_file(const BuildEventStream__BuildEvent *m)
{
	CHECK_INT_EQ(m->named_set_of_files->n_files, 1);
	return m->named_set_of_files->files[0];
}

int main(void)
{
	char path[512], ha[65], hb[65], hc[65], key[65], bep[256], json[256];
	tf_session_options o = { 0 };
	tf_session_stats st;
	tf_error err = { 0 };
	tf_session *s;
	size_t len;
	unsigned char *ar;
	struct stat sb;

	snprintf(tmp, sizeof(tmp), "/tmp/tf-synth.XXXXXX");
	CHECK(mkdtemp(tmp));
	snprintf(path, sizeof(path), "%s/cache", tmp);
	CHECK(mkdir(path, 0755) == 0);
	snprintf(path, sizeof(path), "%s/cache/cas", tmp);
	CHECK(mkdir(path, 0755) == 0);
	cache_put("alpha\n", ha);
	cache_put("#!/bin/sh\necho bravo\n", hb);
	sha256_hex("charlie, never uploaded\n", strlen("charlie, never uploaded\n"), hc); /* lost */
	sha256_hex("the action", 10, key);

	tf_remote_options_init(&o.remote);
	snprintf(path, sizeof(path), "%s/cache", tmp);
	o.remote.remote_cache = path;
	o.remote.remote_retries = 1;
	char out[256];
	snprintf(out, sizeof(out), "%s/out", tmp);
	o.output_dir = out;
	snprintf(bep, sizeof(bep), "%s/bep.bin", tmp);
	snprintf(json, sizeof(json), "%s/bep.json", tmp);
	o.build_event_binary_file = bep;
	o.build_event_json_file = json;
	o.on_lost = on_lost;
	s = tf_session_new(&o, &err);
	if (!s) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}

	/* Nothing before BuildStarted. */
	{
		tf_output_file f = { .path = BIN "a.txt", .hash = ha, .size = 6 };
		tf_output_group g = { "default", &f, 1 };
		CHECK_INT_EQ(tf_session_target_completed(s, "//pkg:a", NULL, NULL, &g, 1, &err), -EPROTO);
		CHECK_CONTAINS(err.message, "tf_session_build_started first");
		CHECK_INT_EQ(tf_session_build_finished(s, 0, &err), -EPROTO);
		CHECK_INT_EQ(tf_session_events_held(s), 0);
	}
	CHECK_INT_EQ(tf_session_build_started(s, &err), 0);

	/* The action that made b.sh (executable) and c.txt (never uploaded). */
	ar = action_result(hb, hc, &len);
	CHECK_INT_EQ(tf_session_action_executed(s, key, "//pkg:tool", ar, len, &err), 0);
	free(ar);

	/* Refusals name the problem and post nothing. */
	{
		tf_output_file bad[] = {
			{ .path = "../escape.txt", .hash = ha, .size = 6 },
			{ .path = "a.txt", .hash = ha, .size = 6 },
			{ .path = BIN "x.txt", .hash = "abc", .size = 6 },
			{ .path = BIN "x.txt", .hash = ha, .size = -1 },
		};
		const char *why[] = { "'..'", "has no folder", "not a SHA-256", "out of range" };
		for (size_t i = 0; i < 4; i++) {
			tf_output_group g = { "default", &bad[i], 1 };
			CHECK(tf_session_target_completed(s, "//pkg:bad", NULL, NULL, &g, 1, &err) < 0);
			CHECK_CONTAINS(err.message, why[i]);
			CHECK_CONTAINS(err.message, "output group 0 ('default') file 0");
		}
		tf_output_group twice[2] = { { "default", bad, 0 }, { "default", bad, 0 } };
		CHECK(tf_session_target_completed(s, "//pkg:bad", NULL, NULL, twice, 2, &err) < 0);
		CHECK_CONTAINS(err.message, "given twice");
		CHECK(tf_session_target_completed(s, "", NULL, NULL, twice, 1, &err) < 0);
		CHECK_CONTAINS(err.message, "no label");
	}

	/* //pkg:a: digest given, unknown to the store. //pkg:b: no digest, the
	 * store knows it (and its executable bit). //pkg:c: lost. //gen:d: a
	 * path outside bazel-out, same blob as a.txt. */
	{
		tf_output_file fa = { .path = BIN "a.txt", .hash = ha, .size = 6 };
		tf_output_file fb = { .path = BIN "b.sh" };
		tf_output_file fc = { .path = BIN "c.txt" };
		tf_output_file fd = { .path = "gen/lib/d.txt", .hash = ha, .size = 6 };
		tf_output_group ga = { "default", &fa, 1 }, gb = { "default", &fb, 1 }, gc = { "default", &fc, 1 },
				gd[2] = { { "default", &fd, 1 }, { "extra", NULL, 0 } };
		CHECK_INT_EQ(tf_session_target_completed(s, "//pkg:a", "cfg1", NULL, &ga, 1, &err), 0);
		CHECK_INT_EQ(tf_session_target_completed(s, "//pkg:b", "cfg1", NULL, &gb, 1, &err), 0);
		CHECK_INT_EQ(tf_session_target_completed(s, "//pkg:c", "cfg1", NULL, &gc, 1, &err), 0);
		CHECK_INT_EQ(tf_session_target_completed(s, "//gen:d", NULL, NULL, gd, 2, &err), 0);
		/* The same target again is refused. */
		CHECK(tf_session_target_completed(s, "//pkg:a", "cfg1", NULL, &ga, 1, &err) == -EEXIST);
		CHECK_CONTAINS(err.message, "already reported");
	}
	/* The fetches have not run: the targets and their sets are held. */
	CHECK(tf_session_events_held(s) >= 8);
	{
		time_t until = time(NULL) + 30;
		while (tf_session_events_held(s) > 0 && time(NULL) < until)
			CHECK(tf_session_dispatch(s, 100, &err) >= 0);
		CHECK_INT_EQ(tf_session_events_held(s), 0);
	}
	CHECK_INT_EQ(tf_session_build_finished(s, 0, &err), 0);
	CHECK_INT_EQ(tf_session_events_held(s), 0);
	CHECK_INT_EQ(tf_session_build_finished(s, 0, &err), -EPROTO);
	CHECK_INT_EQ(tf_session_finish(s, &st, &err), 0);
	tf_session_free(s);

	CHECK_INT_EQ(st.targets_completed, 4);
	CHECK_INT_EQ(st.targets_failed, 1);
	CHECK_INT_EQ(st.lost, 1);
	CHECK_INT_EQ(lost_calls, 1);
	CHECK_STR_EQ(lost_path, BIN "c.txt");
	CHECK_STR_EQ(lost_action, key);
	CHECK_STR_EQ(lost_target, "//pkg:tool");

	/* The files. */
	snprintf(path, sizeof(path), "%s/" BIN "a.txt", out);
	CHECK_STR_EQ(read_all(path), "alpha\n");
	snprintf(path, sizeof(path), "%s/gen/lib/d.txt", out);
	CHECK_STR_EQ(read_all(path), "alpha\n");
	snprintf(path, sizeof(path), "%s/" BIN "b.sh", out);
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0111));
	snprintf(path, sizeof(path), "%s/" BIN "c.txt", out);
	CHECK(access(path, F_OK) < 0);

	/* The stream. */
	{
		ev_reader *r = ev_reader_new(bep, NULL, &err);
		ev_event *ev;
		seen ann = { .n = 0 }, sets = { .n = 0 };
		int n = 0, targets = 0, progress = 0, rc;
		bool finished = false;

		CHECK(r);
		while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
			const BuildEventStream__BuildEvent *m = ev->msg;
			CHECK(m->id);
			if (n == 0) {
				CHECK_INT_EQ(m->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED);
				CHECK_INT_EQ(strlen(m->started->uuid), 36);
				CHECK_STR_EQ(m->started->command, "build");
				CHECK(m->started->start_time && m->started->start_time->seconds > 0);
			} else {
				CHECK(known(&ann, m->id)); /* announced by an earlier event */
			}
			CHECK(!finished || m->payload_case != BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED);
			for (size_t i = 0; i < m->n_children; i++)
				remember(&ann, m->children[i]);
			switch (m->payload_case) {
			case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS:
				CHECK_INT_EQ(m->id->progress->opaque_count, progress);
				progress++;
				break;
			case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES: {
				const BuildEventStream__File *f = only_file(m);
				remember(&sets, m->id);
				if (!strcmp(f->name, "lib/d.txt")) {
					CHECK_INT_EQ(f->n_path_prefix, 1);
					CHECK_STR_EQ(f->path_prefix[0], "gen");
				} else {
					CHECK_INT_EQ(f->n_path_prefix, 3);
					CHECK_STR_EQ(f->path_prefix[0], "bazel-out");
					CHECK_STR_EQ(f->path_prefix[1], "k8-fastbuild");
					CHECK_STR_EQ(f->path_prefix[2], "bin");
				}
				if (!strcmp(f->name, "pkg/a.txt") || !strcmp(f->name, "lib/d.txt")) {
					CHECK_STR_EQ(f->digest, ha);
					CHECK_INT_EQ(f->length, 6);
				} else if (!strcmp(f->name, "pkg/b.sh")) { /* filled in from the store */
					CHECK_STR_EQ(f->digest, hb);
					CHECK_INT_EQ(f->length, (long long)strlen("#!/bin/sh\necho bravo\n"));
				} else {
					CHECK_STR_EQ(f->name, "pkg/c.txt");
					CHECK_STR_EQ(f->digest, hc);
				}
				break;
			}
			case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED: {
				const BuildEventStream__TargetComplete *tc = m->completed;
				const char *label = m->id->target_completed->label;
				targets++;
				for (size_t g = 0; g < tc->n_output_group; g++)
					for (size_t k = 0; k < tc->output_group[g]->n_file_sets; k++) {
						BuildEventStream__BuildEventId sid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
						sid.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
						sid.named_set = tc->output_group[g]->file_sets[k];
						CHECK(known(&sets, &sid)); /* its named set came first */
					}
				if (!strcmp(label, "//gen:d")) {
					CHECK(!m->id->target_completed->configuration);
					CHECK_INT_EQ(tc->n_output_group, 2);
					CHECK_STR_EQ(tc->output_group[1]->name, "extra");
					CHECK_INT_EQ(tc->output_group[1]->n_file_sets, 0);
				} else {
					CHECK_STR_EQ(m->id->target_completed->configuration->id, "cfg1");
				}
				if (!strcmp(label, "//pkg:c")) {
					CHECK(!tc->success);
					CHECK(tc->failure_detail);
					CHECK_CONTAINS(tc->failure_detail->message, BIN "c.txt");
					CHECK_CONTAINS(tc->failure_detail->message, key);
					CHECK_CONTAINS(tc->failure_detail->message, "lost");
				} else {
					CHECK(tc->success);
				}
				break;
			}
			case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_FINISHED:
				CHECK_INT_EQ(targets, 4); /* after every TargetComplete */
				CHECK_STR_EQ(m->finished->exit_code->name, "SUCCESS");
				CHECK(m->finished->overall_success);
				finished = true;
				break;
			case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS:
				CHECK(m->last_message);
				break;
			default:
				CHECK_INT_EQ(m->payload_case, BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED);
			}
			CHECK(m->last_message == (m->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS));
			ev_event_unref(ev);
			n++;
		}
		CHECK_INT_EQ(rc, 0);
		CHECK(ev_reader_complete(r));
		/* BuildStarted, 4 x (Progress, NamedSet, TargetComplete),
		 * BuildFinished, the last Progress, BuildToolLogs. */
		CHECK_INT_EQ(n, 1 + 4 * 3 + 3);
		CHECK_INT_EQ(progress, 5);
		ev_reader_free(r);
		for (int i = 0; i < ann.n; i++)
			free(ann.keys[i]);
		for (int i = 0; i < sets.n; i++)
			free(sets.keys[i]);
	}

	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		CHECK(system(cmd) == 0);
	}
	printf("synth: ok\n");
	return 0;
}
