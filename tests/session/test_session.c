/* The session (session/) driven as a front end drives it, against a
 * directory in Bazel's --disk_cache layout (no server): executed actions'
 * decisions reach on_decision, wanted files land on disk, the gated stream
 * keeps its promises (a TargetComplete only after its files, its named sets
 * before it with digest and length, last_message last), a lost blob fails
 * its target naming file, digest and action, and tf_session_outstanding()
 * reaches 0 once the work is done. Also the gate's named-set and target
 * rules (events/gate.c) on their own. */
#include <fcntl.h>
#include <signal.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "events/events.h"
#include "remote_execution.pb-c.h"
#include "session/session.h"
#include "store/store.h"
#include "tf_test.h"
#include "topfetch.h"

#define BIN "bazel-out/k8-fastbuild/bin/"
#define KEY_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KEY_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define KEY_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define KEY_D "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"

/* ---- a disk cache and a session ----------------------------------------------- */

typedef struct env {
	char tmp[64], cache[128], out[128];
	tf_session *s;
	/* what the callbacks saw */
	char events[32][160]; /* "progress:N", "set:ID", "target:LABEL" */
	int n_events;
	char set_digest[32][4][80]; /* per event: "name=hash/len" of a named set's files */
	bool target_ok[32];
	char target_detail[32][1024];
	bool files_there_at_target[32];
	tf_decision dec[64];
	char dec_path[64][256], dec_reason_group[64][64];
	int n_dec;
	int lost_calls;
	char lost_action[80];
} env;

static env E;

/* Set by the kill -9 tests: setup() puts the session's folder and store in
 * kill_dir, and on_event kills the process when kill_on_event is set. */
static char kill_dir[40];
static bool kill_on_event;

static void sha256_hex(const char *data, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned len;
	EVP_Digest(data, n, md, &len, EVP_sha256(), NULL);
	tf__hex(md, 32, out);
}

static void cache_put(const char *data, char hash[65])
{
	char path[512];
	FILE *f;

	sha256_hex(data, strlen(data), hash);
	snprintf(path, sizeof(path), "%s/cas/%.2s", E.cache, hash);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s", E.cache, hash, hash);
	CHECK((f = fopen(path, "wb")) != NULL);
	fputs(data, f);
	fclose(f);
}

static bool out_has(const char *exec_path, const char *content)
{
	char path[512], buf[256];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", E.out, exec_path);
	if (!(f = fopen(path, "rb")))
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return !strcmp(buf, content);
}

static void on_event(const void *bytes, size_t len, void *user)
{
	BuildEventStream__BuildEvent *m = build_event_stream__build_event__unpack(NULL, len, bytes);
	int i = E.n_events;

	(void)user;
	if (kill_on_event)
		raise(SIGKILL); /* the moment the first event is released */
	CHECK(m && i < 32);
	switch (m->id->id_case) {
	case BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS:
		snprintf(E.events[i], sizeof(E.events[i]), "progress:%d", m->id->progress->opaque_count);
		break;
	case BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET:
		snprintf(E.events[i], sizeof(E.events[i]), "set:%s", m->id->named_set->id);
		for (size_t k = 0; k < m->named_set_of_files->n_files && k < 4; k++) {
			const BuildEventStream__File *f = m->named_set_of_files->files[k];
			snprintf(E.set_digest[i][k], sizeof(E.set_digest[i][k]), "%.20s=%.12s/%lld", f->name,
				 f->digest && *f->digest ? f->digest : "-", (long long)f->length);
		}
		break;
	case BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED:
		snprintf(E.events[i], sizeof(E.events[i]), "target:%s", m->id->target_completed->label);
		E.target_ok[i] = m->completed->success;
		if (m->completed->failure_detail && m->completed->failure_detail->message)
			snprintf(E.target_detail[i], sizeof(E.target_detail[i]), "%s",
				 m->completed->failure_detail->message);
		E.files_there_at_target[i] = out_has(BIN "pkg/a.txt", "alpha\n") && out_has(BIN "pkg/b.txt", "bravo\n") &&
					     out_has(BIN "pkg/c.txt", "charlie\n");
		break;
	default:
		snprintf(E.events[i], sizeof(E.events[i]), "other:%d", (int)m->id->id_case);
	}
	if (m->last_message)
		strcat(E.events[i], "(last)");
	E.n_events++;
	build_event_stream__build_event__free_unpacked(m, NULL);
}

static void on_decision(const tf_decision *d, void *user)
{
	int i = E.n_dec++;

	(void)user;
	if (i >= 64)
		return; /* counted; the first 64 are kept */
	E.dec[i] = *d;
	snprintf(E.dec_path[i], sizeof(E.dec_path[i]), "%s", d->path ? d->path : "");
	snprintf(E.dec_reason_group[i], sizeof(E.dec_reason_group[i]), "%s", d->group ? d->group : "");
	E.dec[i].path = E.dec_path[i];
	E.dec[i].group = E.dec_reason_group[i];
	E.dec[i].action_key = d->action_key ? "set" : NULL; /* only whether there was one */
	E.dec[i].target = NULL;
	E.dec[i].symlink_target = NULL;
}

static void on_lost(const tf_lost_output *l, void *user)
{
	(void)user;
	E.lost_calls++;
	snprintf(E.lost_action, sizeof(E.lost_action), "%s", l->action_key ? l->action_key : "");
}

static void setup(tf_download_mode mode, const char *regex)
{
	static const char *regexes[1];
	tf_session_options o = { 0 };
	tf_error err = { 0 };
	char path[256], store[64];

	memset(&E, 0, sizeof(E));
	snprintf(E.tmp, sizeof(E.tmp), "%s", kill_dir[0] ? kill_dir : "/tmp/tf-session-test.XXXXXX");
	if (kill_dir[0]) {
		strcat(E.tmp, "/s.XXXXXX");
		snprintf(store, sizeof(store), "%s/store.db", kill_dir);
		o.store_path = store;
	}
	CHECK(mkdtemp(E.tmp));
	snprintf(E.cache, sizeof(E.cache), "%s/cache", E.tmp);
	snprintf(E.out, sizeof(E.out), "%s/out", E.tmp);
	CHECK(mkdir(E.cache, 0755) == 0);
	snprintf(path, sizeof(path), "%s/cas", E.cache);
	CHECK(mkdir(path, 0755) == 0);
	snprintf(path, sizeof(path), "%s/ac", E.cache);
	CHECK(mkdir(path, 0755) == 0);
	tf_remote_options_init(&o.remote);
	o.remote.remote_cache = E.cache;
	o.remote.remote_retries = 1;
	o.output_dir = E.out;
	o.policy.mode = mode;
	if (regex) {
		regexes[0] = regex;
		o.policy.regexes = regexes;
		o.policy.n_regexes = 1;
	}
	o.on_event = on_event;
	o.on_decision = on_decision;
	o.on_lost = on_lost;
	E.s = tf_session_new(&o, &err);
	if (!E.s)
		fprintf(stderr, "%s\n", err.message);
	CHECK(E.s != NULL);
}

/* Dispatches until the session is idle; fails after 30 s. */
static void run_until_idle(void)
{
	tf_error err = { 0 };
	time_t end = time(NULL) + 30;

	while (tf_session_outstanding(E.s) > 0) {
		CHECK(time(NULL) < end);
		CHECK(tf_session_dispatch(E.s, 1000, &err) >= 0);
	}
}

static void teardown(void)
{
	char cmd[128];
	tf_session_free(E.s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", E.tmp);
	CHECK(system(cmd) == 0);
}

/* ---- inputs ---------------------------------------------------------------------- */

typedef struct out_file {
	const char *path; /* below BIN */
	const char *hash;
	int64_t size;
	bool executable;
} out_file;

static const char *link_target = "a.txt"; /* of the symlink action_executed reports */

static void action_executed(const char *key, const out_file *files, size_t n, const char *symlink)
{
	Build__Bazel__Remote__Execution__V2__ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	Build__Bazel__Remote__Execution__V2__OutputFile f[4], *fp[4];
	Build__Bazel__Remote__Execution__V2__Digest d[4];
	Build__Bazel__Remote__Execution__V2__OutputSymlink l = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_SYMLINK__INIT;
	Build__Bazel__Remote__Execution__V2__OutputSymlink *lp[1] = { &l };
	char paths[4][256], lpath[256];
	unsigned char *buf;
	size_t len;
	tf_error err = { 0 };

	CHECK(n <= 4);
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__output_file__init(&f[i]);
		build__bazel__remote__execution__v2__digest__init(&d[i]);
		snprintf(paths[i], sizeof(paths[i]), BIN "%s", files[i].path);
		f[i].path = paths[i];
		d[i].hash = (char *)files[i].hash;
		d[i].size_bytes = files[i].size;
		f[i].digest = &d[i];
		f[i].is_executable = files[i].executable;
		fp[i] = &f[i];
	}
	ar.output_files = fp;
	ar.n_output_files = n;
	if (symlink) {
		snprintf(lpath, sizeof(lpath), BIN "%s", symlink);
		l.path = lpath;
		l.target = (char *)link_target;
		ar.output_file_symlinks = lp;
		ar.n_output_file_symlinks = 1;
	}
	len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
	CHECK((buf = malloc(len ? len : 1)) != NULL);
	build__bazel__remote__execution__v2__action_result__pack(&ar, buf);
	if (tf_session_action_executed(E.s, key, "//pkg:tool", buf, len, &err) < 0)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(err.code, 0);
	free(buf);
}

static BuildEventStream__BuildEventId *progress_id(ev_event *ev, int n)
{
	BuildEventStream__BuildEventId *id = ev_event_alloc(ev, sizeof(*id));
	BuildEventStream__BuildEventId__ProgressId *p = ev_event_alloc(ev, sizeof(*p));
	build_event_stream__build_event_id__init(id);
	build_event_stream__build_event_id__progress_id__init(p);
	p->opaque_count = n;
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
	id->progress = p;
	return id;
}

static BuildEventStream__BuildEventId *set_id(ev_event *ev, const char *name)
{
	BuildEventStream__BuildEventId *id = ev_event_alloc(ev, sizeof(*id));
	BuildEventStream__BuildEventId__NamedSetOfFilesId *n = ev_event_alloc(ev, sizeof(*n));
	build_event_stream__build_event_id__init(id);
	build_event_stream__build_event_id__named_set_of_files_id__init(n);
	n->id = ev_event_strdup(ev, name);
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
	id->named_set = n;
	return id;
}

static BuildEventStream__BuildEventId *target_id(ev_event *ev, const char *label)
{
	BuildEventStream__BuildEventId *id = ev_event_alloc(ev, sizeof(*id));
	BuildEventStream__BuildEventId__TargetCompletedId *t = ev_event_alloc(ev, sizeof(*t));
	build_event_stream__build_event_id__init(id);
	build_event_stream__build_event_id__target_completed_id__init(t);
	t->label = ev_event_strdup(ev, label);
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED;
	id->target_completed = t;
	return id;
}

/* A Progress event announcing the given ids. */
static ev_event *progress(int n, bool last, BuildEventStream__BuildEventId **kids, size_t n_kids)
{
	ev_event *ev = ev_event_new();
	BuildEventStream__Progress *p = ev_event_alloc(ev, sizeof(*p));
	build_event_stream__progress__init(p);
	ev->msg->id = progress_id(ev, n);
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS;
	ev->msg->progress = p;
	ev->msg->last_message = last;
	ev->msg->children = kids;
	ev->msg->n_children = n_kids;
	return ev;
}

/* A named set of files (exec paths below BIN, no digests) referencing sets. */
static ev_event *named_set(const char *name, const char *const *files, size_t n, const char *child)
{
	ev_event *ev = ev_event_new();
	BuildEventStream__NamedSetOfFiles *ns = ev_event_alloc(ev, sizeof(*ns));
	build_event_stream__named_set_of_files__init(ns);
	ns->files = ev_event_alloc(ev, (n ? n : 1) * sizeof(*ns->files));
	for (size_t i = 0; i < n; i++) {
		BuildEventStream__File *f = ev_event_alloc(ev, sizeof(*f));
		char **prefix = ev_event_alloc(ev, 3 * sizeof(*prefix));
		build_event_stream__file__init(f);
		prefix[0] = ev_event_strdup(ev, "bazel-out");
		prefix[1] = ev_event_strdup(ev, "k8-fastbuild");
		prefix[2] = ev_event_strdup(ev, "bin");
		f->path_prefix = prefix;
		f->n_path_prefix = 3;
		f->name = ev_event_strdup(ev, files[i]);
		ns->files[ns->n_files++] = f;
	}
	if (child) {
		ns->file_sets = ev_event_alloc(ev, sizeof(*ns->file_sets));
		ns->file_sets[0] = set_id(ev, child)->named_set;
		ns->n_file_sets = 1;
	}
	ev->msg->id = set_id(ev, name);
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
	ev->msg->named_set_of_files = ns;
	return ev;
}

/* A successful TargetComplete whose "default" group names one set. */
static ev_event *target_complete(const char *label, const char *set)
{
	ev_event *ev = ev_event_new();
	BuildEventStream__TargetComplete *tc = ev_event_alloc(ev, sizeof(*tc));
	BuildEventStream__OutputGroup *og = ev_event_alloc(ev, sizeof(*og));
	build_event_stream__target_complete__init(tc);
	build_event_stream__output_group__init(og);
	og->name = ev_event_strdup(ev, "default");
	og->file_sets = ev_event_alloc(ev, sizeof(*og->file_sets));
	og->file_sets[0] = set_id(ev, set)->named_set;
	og->n_file_sets = 1;
	tc->success = 1;
	tc->output_group = ev_event_alloc(ev, sizeof(*tc->output_group));
	tc->output_group[0] = og;
	tc->n_output_group = 1;
	ev->msg->id = target_id(ev, label);
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED;
	ev->msg->completed = tc;
	return ev;
}

/* Serializes ev, hands it to the session as a front end would, drops it. */
static void post(ev_event *ev)
{
	size_t n = build_event_stream__build_event__get_packed_size(ev->msg);
	unsigned char *buf = malloc(n ? n : 1);
	tf_error err = { 0 };

	CHECK(buf);
	build_event_stream__build_event__pack(ev->msg, buf);
	if (tf_session_build_event(E.s, buf, n, &err) < 0)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(err.code, 0);
	free(buf);
	ev_event_unref(ev);
}

/* The stream of one build: P0 announces sets s1, s0, the target and P1
 * (last_message); s0 = {a, b} + s1, s1 = {c}; the target's default group
 * names s0. */
static void post_build(const char *label)
{
	static const char *const s0_files[] = { "pkg/a.txt", "pkg/b.txt" };
	static const char *const s1_files[] = { "pkg/c.txt" };
	ev_event *p0 = progress(0, false, NULL, 0);
	BuildEventStream__BuildEventId **kids = ev_event_alloc(p0, 4 * sizeof(*kids));

	kids[0] = set_id(p0, "s1");
	kids[1] = set_id(p0, "s0");
	kids[2] = target_id(p0, label);
	kids[3] = progress_id(p0, 1);
	p0->msg->children = kids;
	p0->msg->n_children = 4;
	post(p0);
	post(named_set("s1", s1_files, 1, NULL));
	post(named_set("s0", s0_files, 2, "s1"));
	post(target_complete(label, "s0"));
}

static int find_event(const char *prefix)
{
	for (int i = 0; i < E.n_events; i++)
		if (!strncmp(E.events[i], prefix, strlen(prefix)))
			return i;
	return -1;
}

static const tf_decision *find_decision(const char *path, bool from_action)
{
	for (int i = 0; i < E.n_dec; i++)
		if (!strcmp(E.dec_path[i], path) && (E.dec[i].action_key != NULL) == from_action)
			return &E.dec[i];
	return NULL;
}

/* ---- the session ------------------------------------------------------------------- */

TEST(action_decisions_reported)
{
	char ha[65], hb[65];
	const tf_decision *d;
	out_file files[2];

	setup(TF_DOWNLOAD_TOPLEVEL, ".*/a\\.txt"); /* whole-path match, as Bazel */
	cache_put("alpha\n", ha);
	cache_put("bravo\n", hb);
	files[0] = (out_file){ "pkg/a.txt", ha, 6, true };
	files[1] = (out_file){ "pkg/b.txt", hb, 6, false };
	action_executed(KEY_A, files, 2, "pkg/link");
	CHECK_INT_EQ(E.n_dec, 3);

	d = find_decision(BIN "pkg/a.txt", true);
	CHECK(d && d->wanted && d->reason == TF_REASON_REGEX && d->kind == TF_DECISION_FILE);
	CHECK_STR_EQ(d->digest.hash, ha);
	CHECK_INT_EQ(d->digest.size, 6);
	CHECK(d->executable);
	d = find_decision(BIN "pkg/b.txt", true);
	CHECK(d && !d->wanted && d->reason == TF_REASON_LATER && !d->executable);
	d = find_decision(BIN "pkg/link", true);
	CHECK(d && !d->wanted && d->reason == TF_REASON_NO_BYTES && d->kind == TF_DECISION_SYMLINK);
	CHECK_STR_EQ(tf_decision_reason_name(TF_REASON_REGEX), "regex");

	/* Only the regex match is fetched. */
	CHECK(tf_session_outstanding(E.s) > 0);
	run_until_idle();
	CHECK(out_has(BIN "pkg/a.txt", "alpha\n"));
	CHECK(!out_has(BIN "pkg/b.txt", "bravo\n"));
	teardown();
}

/* An ActionResult larger than the groups the session hands the store: every
 * output is recorded and decided once, and the wanted ones (first, middle,
 * last) are fetched. */
TEST(large_action_result_recorded_whole)
{
	enum { N = 600 };
	static const int wanted[3] = { 5, 300, N - 1 };
	Build__Bazel__Remote__Execution__V2__ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	Build__Bazel__Remote__Execution__V2__OutputFile *f = calloc(N, sizeof(*f)), **fp = calloc(N, sizeof(*fp));
	Build__Bazel__Remote__Execution__V2__Digest *d = calloc(N, sizeof(*d));
	char (*paths)[96] = calloc(N, 96), (*hashes)[65] = calloc(N, 65), content[32], want_path[3][96];
	tf_session_stats st;
	tf_error err = { 0 };
	unsigned char *buf;
	size_t len;

	CHECK(f && fp && d && paths && hashes);
	setup(TF_DOWNLOAD_TOPLEVEL, ".*/big/wanted_.*");
	for (int i = 0; i < N; i++) {
		bool w = i == wanted[0] || i == wanted[1] || i == wanted[2];
		build__bazel__remote__execution__v2__output_file__init(&f[i]);
		build__bazel__remote__execution__v2__digest__init(&d[i]);
		snprintf(paths[i], 96, BIN "big/%s_%03d", w ? "wanted" : "other", i);
		snprintf(content, sizeof(content), "content %d\n", i);
		if (w)
			cache_put(content, hashes[i]);
		else
			sha256_hex(content, strlen(content), hashes[i]); /* not in the cache: never fetched */
		d[i].hash = hashes[i];
		d[i].size_bytes = (int64_t)strlen(content);
		f[i].path = paths[i];
		f[i].digest = &d[i];
		fp[i] = &f[i];
	}
	ar.output_files = fp;
	ar.n_output_files = N;
	len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
	CHECK((buf = malloc(len)) != NULL);
	build__bazel__remote__execution__v2__action_result__pack(&ar, buf);
	if (tf_session_action_executed(E.s, KEY_A, "//pkg:big", buf, len, &err) < 0)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(err.code, 0);
	CHECK_INT_EQ(E.n_dec, N);
	tf_session_get_stats(E.s, &st);
	CHECK_INT_EQ(st.outputs_injected, N);
	run_until_idle();
	for (int k = 0; k < 3; k++) {
		snprintf(content, sizeof(content), "content %d\n", wanted[k]);
		snprintf(want_path[k], sizeof(want_path[k]), "%s", paths[wanted[k]]);
		CHECK(out_has(want_path[k], content));
	}
	CHECK(!out_has(paths[4], "content 4\n"));
	free(buf), free(f), free(fp), free(d), free(paths), free(hashes);
	teardown();
}

TEST(target_released_after_its_files)
{
	char ha[65], hb[65], hc[65];
	out_file files[3];
	tf_session_stats st;
	tf_error err = { 0 };
	int p0, s1, s0, t, p1;
	const tf_decision *d;

	setup(TF_DOWNLOAD_TOPLEVEL, NULL);
	cache_put("alpha\n", ha);
	cache_put("bravo\n", hb);
	cache_put("charlie\n", hc);
	files[0] = (out_file){ "pkg/a.txt", ha, 6, false };
	files[1] = (out_file){ "pkg/b.txt", hb, 6, true };
	files[2] = (out_file){ "pkg/c.txt", hc, 8, false };
	action_executed(KEY_A, files, 3, NULL);
	CHECK_INT_EQ(tf_session_outstanding(E.s), 0); /* toplevel: nothing wanted yet */

	post_build("//pkg:t");
	/* The downloader's completions run only in dispatch: the target and
	 * its sets are still held. */
	CHECK_INT_EQ(E.n_events, 1);
	CHECK_STR_EQ(E.events[0], "progress:0");
	CHECK(tf_session_outstanding(E.s) >= 4); /* 3 files + the held target */
	post(progress(1, true, NULL, 0));
	CHECK_INT_EQ(E.n_events, 1); /* last_message waits for the target */

	run_until_idle();
	CHECK_INT_EQ(tf_session_outstanding(E.s), 0);
	CHECK_INT_EQ(E.n_events, 5);
	p0 = find_event("progress:0");
	s1 = find_event("set:s1");
	s0 = find_event("set:s0");
	t = find_event("target://pkg:t");
	p1 = find_event("progress:1");
	CHECK(p0 == 0 && s1 == 1 && s0 == 2 && t == 3 && p1 == 4);
	CHECK_STR_EQ(E.events[4], "progress:1(last)");
	/* Named sets carry digest and length; the target came after its files. */
	{
		char want[80];
		snprintf(want, sizeof(want), "pkg/c.txt=%.12s/8", hc);
		CHECK_STR_EQ(E.set_digest[s1][0], want);
		snprintf(want, sizeof(want), "pkg/a.txt=%.12s/6", ha);
		CHECK_STR_EQ(E.set_digest[s0][0], want);
		snprintf(want, sizeof(want), "pkg/b.txt=%.12s/6", hb);
		CHECK_STR_EQ(E.set_digest[s0][1], want);
	}
	CHECK(E.target_ok[t]);
	CHECK(E.files_there_at_target[t]);
	{
		struct stat sb;
		char path[512];
		snprintf(path, sizeof(path), "%s/" BIN "pkg/b.txt", E.out);
		CHECK(stat(path, &sb) == 0 && (sb.st_mode & S_IXUSR));
	}

	/* The decisions: the target, then each of its files (from s0 and s1). */
	{
		bool saw_target = false;
		for (int i = 0; i < E.n_dec; i++)
			if (E.dec[i].kind == TF_DECISION_TARGET) {
				CHECK(E.dec[i].wanted && E.dec[i].reason == TF_REASON_TOPLEVEL);
				saw_target = true;
			}
		CHECK(saw_target);
	}
	d = find_decision(BIN "pkg/c.txt", false);
	CHECK(d && d->wanted && d->reason == TF_REASON_TOPLEVEL);
	CHECK_STR_EQ(d->group, "default");
	CHECK_STR_EQ(d->digest.hash, hc);
	d = find_decision(BIN "pkg/b.txt", false);
	CHECK(d && d->wanted && d->executable);

	CHECK_INT_EQ(tf_session_finish(E.s, &st, &err), 0);
	CHECK_INT_EQ(st.targets_completed, 1);
	CHECK_INT_EQ(st.targets_failed, 0);
	CHECK_INT_EQ(st.files_fetched, 3);
	CHECK_INT_EQ(st.events_written, 5);
	teardown();
}

TEST(lost_blob_fails_target_naming_it)
{
	char ha[65], hb[65], hc[65];
	out_file files[3];
	tf_session_stats st;
	tf_error err = { 0 };
	int t;

	setup(TF_DOWNLOAD_TOPLEVEL, NULL);
	cache_put("alpha\n", ha);
	cache_put("bravo\n", hb);
	sha256_hex("charlie\n", 8, hc); /* never uploaded: lost */
	files[0] = (out_file){ "pkg/a.txt", ha, 6, false };
	files[1] = (out_file){ "pkg/b.txt", hb, 6, false };
	files[2] = (out_file){ "pkg/c.txt", hc, 8, false };
	action_executed(KEY_B, files, 3, NULL);
	post_build("//pkg:t");
	post(progress(1, true, NULL, 0));
	run_until_idle();

	CHECK_INT_EQ(E.n_events, 5);
	t = find_event("target://pkg:t");
	CHECK_INT_EQ(t, 3);
	CHECK(!E.target_ok[t]);
	CHECK_CONTAINS(E.target_detail[t], "1 output of //pkg:t could not be fetched");
	CHECK_CONTAINS(E.target_detail[t], BIN "pkg/c.txt");
	CHECK_CONTAINS(E.target_detail[t], hc);
	CHECK_CONTAINS(E.target_detail[t], KEY_B);
	CHECK_STR_EQ(E.events[4], "progress:1(last)");
	CHECK_INT_EQ(E.lost_calls, 1);
	CHECK_STR_EQ(E.lost_action, KEY_B);
	CHECK(tf_session_action_lost(E.s, KEY_B));
	CHECK(!tf_session_action_lost(E.s, KEY_A));
	CHECK(out_has(BIN "pkg/a.txt", "alpha\n"));

	CHECK_INT_EQ(tf_session_finish(E.s, &st, &err), 0);
	CHECK_INT_EQ(st.targets_completed, 1);
	CHECK_INT_EQ(st.targets_failed, 1);
	CHECK_INT_EQ(st.lost, 1);
	teardown();
}

/* An output symlink of a completed target is made again in the output
 * folder when it stays inside; one pointing outside fails its target. */
TEST(output_symlinks_made_inside_refused_outside)
{
	char ha[65], hb[65], got[64] = "";
	out_file files[2];
	int t;

	for (int round = 0; round < 2; round++) {
		setup(TF_DOWNLOAD_TOPLEVEL, NULL);
		cache_put("alpha\n", ha);
		cache_put("bravo\n", hb);
		files[0] = (out_file){ "pkg/a.txt", ha, 6, false };
		files[1] = (out_file){ "pkg/b.txt", hb, 6, false };
		link_target = round == 0 ? "a.txt" : "../../../../../../etc/passwd";
		action_executed(KEY_A, files, 2, "pkg/c.txt");
		post_build("//pkg:t");
		post(progress(1, true, NULL, 0));
		run_until_idle();
		t = find_event("target://pkg:t");
		CHECK(t >= 0);
		char link[1200];
		snprintf(link, sizeof(link), "%s/" BIN "pkg/c.txt", E.out);
		ssize_t n = readlink(link, got, sizeof(got) - 1);
		if (round == 0) {
			CHECK(E.target_ok[t]);
			CHECK(n == 5);
			got[n > 0 ? n : 0] = 0;
			CHECK_STR_EQ(got, "a.txt");
			CHECK(out_has(BIN "pkg/c.txt", "alpha\n")); /* through the link */
		} else {
			CHECK(!E.target_ok[t]);
			CHECK(n < 0);
			CHECK_CONTAINS(E.target_detail[t], "outside the output folder");
			CHECK_CONTAINS(E.target_detail[t], BIN "pkg/c.txt");
		}
		teardown();
	}
	link_target = "a.txt";
}

TEST(unwanted_target_passes_with_digests)
{
	char ha[65], hb[65], hc[65];
	out_file files[3];
	tf_session_stats st;
	tf_error err = { 0 };
	int s0, t;
	const tf_decision *d;

	setup(TF_DOWNLOAD_MINIMAL, NULL);
	cache_put("alpha\n", ha);
	cache_put("bravo\n", hb);
	cache_put("charlie\n", hc);
	files[0] = (out_file){ "pkg/a.txt", ha, 6, false };
	files[1] = (out_file){ "pkg/b.txt", hb, 6, false };
	files[2] = (out_file){ "pkg/c.txt", hc, 8, false };
	action_executed(KEY_A, files, 3, NULL);
	post_build("//pkg:t");
	/* Nothing to fetch, nothing held: idle at once, everything out. */
	CHECK_INT_EQ(tf_session_outstanding(E.s), 0);
	CHECK_INT_EQ(E.n_events, 4);
	s0 = find_event("set:s0");
	t = find_event("target://pkg:t");
	CHECK(find_event("set:s1") < s0 && s0 < t);
	{
		char want[80];
		snprintf(want, sizeof(want), "pkg/a.txt=%.12s/6", ha);
		CHECK_STR_EQ(E.set_digest[s0][0], want);
	}
	CHECK(E.target_ok[t]);
	d = find_decision(BIN "pkg/a.txt", false);
	CHECK(d && !d->wanted && d->reason == TF_REASON_TARGET_NOT_WANTED);
	CHECK(!out_has(BIN "pkg/a.txt", "alpha\n"));
	post(progress(1, true, NULL, 0));
	CHECK_INT_EQ(E.n_events, 5);
	CHECK_INT_EQ(tf_session_finish(E.s, &st, &err), 0);
	CHECK_INT_EQ(st.targets_completed, 0);
	CHECK_INT_EQ(st.files_wanted, 0);
	teardown();
}

TEST(bad_action_result_refused_without_decisions)
{
	tf_error err = { 0 };
	const unsigned char junk[] = { 0x0a, 0x05, 'x' };

	setup(TF_DOWNLOAD_ALL, NULL);
	CHECK(tf_session_action_executed(E.s, KEY_A, NULL, junk, sizeof(junk), &err) < 0);
	CHECK_CONTAINS(err.message, KEY_A);
	CHECK_INT_EQ(E.n_dec, 0);
	CHECK(tf_session_action_executed(E.s, "not-a-key", NULL, junk, 0, &err) == -EINVAL);
	CHECK_CONTAINS(err.message, "not a SHA-256");
	teardown();
}

/* ---- the gate's named-set and target rules on their own ----------------------------- */

typedef struct glog {
	char order[16][64];
	int n;
	char detail[512];
	bool ok;
	char digest[80];
} glog;

static int gate_record(ev_event *ev, void *user, tf_error *err)
{
	glog *l = user;
	const BuildEventStream__BuildEvent *m = ev->msg;

	(void)err;
	CHECK(l->n < 16);
	if (m->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES) {
		snprintf(l->order[l->n++], 64, "set:%s", m->id->named_set->id);
		if (!strcmp(m->id->named_set->id, "s1") && m->named_set_of_files->files[0]->digest)
			snprintf(l->digest, sizeof(l->digest), "%s/%lld", m->named_set_of_files->files[0]->digest,
				 (long long)m->named_set_of_files->files[0]->length);
	} else if (m->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED) {
		snprintf(l->order[l->n++], 64, "target:%s", m->id->target_completed->label);
		l->ok = m->completed->success;
		if (m->completed->failure_detail)
			snprintf(l->detail, sizeof(l->detail), "%s", m->completed->failure_detail->message);
	} else {
		snprintf(l->order[l->n++], 64, "progress:%d", m->id->progress->opaque_count);
	}
	return 0;
}

/* P0 announcing s1, s0 and //pkg:t, then the sets (s0 -> s1). */
static ev_gate *gate_with_sets(glog *l)
{
	static const char *const s0_files[] = { "pkg/a.txt" };
	static const char *const s1_files[] = { "pkg/c.txt" };
	ev_gate *g = ev_gate_new(gate_record, l);
	tf_error err = { 0 };
	ev_event *p0 = progress(0, false, NULL, 0), *ev;
	BuildEventStream__BuildEventId **kids = ev_event_alloc(p0, 3 * sizeof(*kids));

	CHECK(g);
	kids[0] = set_id(p0, "s1");
	kids[1] = set_id(p0, "s0");
	kids[2] = target_id(p0, "//pkg:t");
	p0->msg->children = kids;
	p0->msg->n_children = 3;
	CHECK_INT_EQ(ev_gate_submit(g, p0, false, NULL, &err), 0);
	ev_event_unref(p0);
	ev = named_set("s1", s1_files, 1, NULL);
	CHECK_INT_EQ(ev_gate_named_set(g, ev, &err), 0);
	ev_event_unref(ev);
	ev = named_set("s0", s0_files, 1, "s1");
	CHECK_INT_EQ(ev_gate_named_set(g, ev, &err), 0);
	ev_event_unref(ev);
	return g;
}

TEST(gate_holds_sets_until_their_target)
{
	glog l = { .n = 0 };
	tf_error err = { 0 };
	ev_gate *g = gate_with_sets(&l);
	tf_digest dg;
	uint64_t t;
	ev_event *ev;

	CHECK_INT_EQ(l.n, 1); /* the sets wait for a target */
	CHECK_INT_EQ(tf_digest_parse(TF_EMPTY_SHA256, 0, &dg, &err), 0);
	CHECK_INT_EQ(ev_gate_file_digest(g, BIN "pkg/c.txt", &dg, &err), 0);
	ev = target_complete("//pkg:t", "s0");
	CHECK_INT_EQ(ev_gate_target(g, ev, true, &t, &err), 0);
	ev_event_unref(ev);
	CHECK_INT_EQ(ev_gate_target_wait(g, t, &err), 0);
	CHECK_INT_EQ(ev_gate_targets_waiting(g), 1);
	CHECK_INT_EQ(ev_gate_target_settled(g, t, NULL, &err), 0); /* the file */
	CHECK_INT_EQ(l.n, 1);
	CHECK_INT_EQ(ev_gate_target_settled(g, t, NULL, &err), 0); /* the lookup hold */
	CHECK_INT_EQ(l.n, 4);
	CHECK_STR_EQ(l.order[1], "set:s1");
	CHECK_STR_EQ(l.order[2], "set:s0");
	CHECK_STR_EQ(l.order[3], "target://pkg:t");
	CHECK(l.ok);
	CHECK_STR_EQ(l.digest, TF_EMPTY_SHA256 "/0"); /* s1's file, filled from the fact */
	CHECK_INT_EQ(ev_gate_targets_waiting(g), 0);
	/* A settled target is no longer a ticket to settle. */
	CHECK_INT_EQ(ev_gate_target_settled(g, t, NULL, &err), -EINVAL);
	ev_gate_free(g);
}

TEST(gate_failure_turns_target_false)
{
	glog l = { .n = 0 };
	tf_error err = { 0 };
	ev_gate *g = gate_with_sets(&l);
	uint64_t t, released, failed;
	ev_event *ev = target_complete("//pkg:t", "s0");

	CHECK_INT_EQ(ev_gate_target(g, ev, true, &t, &err), 0);
	ev_event_unref(ev);
	CHECK_INT_EQ(ev_gate_target_wait(g, t, &err), 0);
	CHECK_INT_EQ(ev_gate_target_wait(g, t, &err), 0);
	CHECK_INT_EQ(ev_gate_target_settled(g, t, "lost pkg/a.txt (abc/6, produced by action k)", &err), 0);
	CHECK_INT_EQ(ev_gate_target_settled(g, t, "lost pkg/c.txt", &err), 0);
	CHECK_INT_EQ(ev_gate_target_settled(g, t, NULL, &err), 0);
	CHECK_STR_EQ(l.order[3], "target://pkg:t");
	CHECK(!l.ok);
	CHECK_CONTAINS(l.detail, "2 outputs of //pkg:t could not be fetched: lost pkg/a.txt (abc/6, produced by action k)");
	ev_gate_target_counts(g, &released, &failed);
	CHECK_INT_EQ(released, 1);
	CHECK_INT_EQ(failed, 1);
	ev_gate_free(g);
}

TEST(gate_unwaited_target_releases_sets_first)
{
	glog l = { .n = 0 };
	tf_error err = { 0 };
	ev_gate *g = gate_with_sets(&l);
	ev_event *ev = target_complete("//pkg:t", "s0");

	CHECK_INT_EQ(ev_gate_target(g, ev, false, NULL, &err), 0);
	ev_event_unref(ev);
	CHECK_INT_EQ(l.n, 4);
	CHECK_STR_EQ(l.order[1], "set:s1");
	CHECK_STR_EQ(l.order[2], "set:s0");
	CHECK_STR_EQ(l.order[3], "target://pkg:t");
	CHECK(l.ok);
	CHECK_INT_EQ(ev_gate_targets_waiting(g), 0);
	/* Not a named set / not a target: refused. */
	ev = progress(5, false, NULL, 0);
	CHECK_INT_EQ(ev_gate_named_set(g, ev, &err), -EINVAL);
	CHECK_INT_EQ(ev_gate_target(g, ev, true, NULL, &err), -EINVAL);
	ev_event_unref(ev);
	ev_gate_free(g);
}

/* Issue 11, defect 6: the targets of one build are capped; the one past the
 * cap is refused naming it and the cap, and the session says so from then on. */
TEST(targets_past_the_cap_are_refused_clearly)
{
	static const char *const files[] = { "pkg/a.txt" };
	tf_error err = { 0 };
	ev_event *ev;
	unsigned char *buf;
	size_t n;

	setup(TF_DOWNLOAD_MINIMAL, NULL);
	ses_set_max_targets(E.s, 2);
	post(progress(0, false, NULL, 0));
	post(named_set("s0", files, 1, NULL));
	post(target_complete("//pkg:t1", "s0"));
	post(target_complete("//pkg:t2", "s0"));
	ev = target_complete("//pkg:t3", "s0");
	n = build_event_stream__build_event__get_packed_size(ev->msg);
	buf = malloc(n);
	CHECK(buf);
	build_event_stream__build_event__pack(ev->msg, buf);
	CHECK_INT_EQ(tf_session_build_event(E.s, buf, n, &err), -E2BIG);
	CHECK_CONTAINS(err.message, "target //pkg:t3: the build has more than 2 completed targets, more than "
				    "topfetch keeps for one build; nothing after it is collected");
	memset(&err, 0, sizeof(err));
	CHECK(tf_session_build_event(E.s, buf, n, &err) < 0);
	CHECK_CONTAINS(err.message, "more than 2 completed targets");
	free(buf);
	ev_event_unref(ev);
	teardown();
}

/* ---- what a kill -9 can lose ---------------------------------------------------------- */

/* Runs body in a child that dies of SIGKILL where body says (no exit
 * handler, no close, as kill -9), its session's store in kill_dir; returns
 * the store, opened again as the next start would. */
static st_store *killed_child(void (*body)(void))
{
	tf_error err = { 0 };
	st_store *st;
	pid_t pid;
	int status;

	snprintf(kill_dir, sizeof(kill_dir), "/tmp/tf-kill.XXXXXX");
	CHECK(mkdtemp(kill_dir));
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		body();
		_exit(3); /* body did not get to its kill */
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	st = st_open(strcat(strcpy((char[64]){ 0 }, kill_dir), "/store.db"), NULL, &err);
	if (!st)
		fprintf(stderr, "%s\n", err.message);
	CHECK(st != NULL);
	return st;
}

static void killed_cleanup(st_store *st)
{
	char cmd[96];

	st_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", kill_dir);
	CHECK(system(cmd) == 0);
	kill_dir[0] = '\0';
}

/* The state of exec_path in the store, or -1 when it has no row. */
static int stored(st_store *st, const char *exec_path)
{
	static st_record rec;
	tf_error err = { 0 };
	int r = st_output_get(st, exec_path, &rec, &err);

	if (r == -ENOENT)
		return -1;
	CHECK_INT_EQ(r, 0);
	return (int)rec.o.state;
}

static void one_file(const char *key, const char *path, const char *content)
{
	char h[65];
	out_file f = { path, h, (int64_t)strlen(content), false };

	if (strstr(path, "wanted"))
		cache_put(content, h);
	else
		sha256_hex(content, strlen(content), h);
	action_executed(key, &f, 1, NULL);
}

static void four_actions_then_kill(void)
{
	tf_error err = { 0 };

	setup(TF_DOWNLOAD_TOPLEVEL, ".*/wanted\\.txt");
	one_file(KEY_A, "pkg/a.txt", "alpha\n");
	CHECK_INT_EQ(tf_session_commit(E.s, &err), 0);
	one_file(KEY_B, "pkg/b.txt", "bravo\n");
	one_file(KEY_C, "pkg/wanted.txt", "charlie\n"); /* starts a fetch */
	one_file(KEY_D, "pkg/d.txt", "delta\n");
	raise(SIGKILL);
}

/* Rows of ActionResults that started nothing may be lost; nothing before a
 * tf_session_commit, nothing before (or with) an action that started a
 * fetch, whose FETCHING mark the next start finds. */
TEST(kill_loses_only_actions_that_started_nothing)
{
	st_store *st = killed_child(four_actions_then_kill);

	CHECK_INT_EQ(stored(st, BIN "pkg/a.txt"), ST_REMOTE);
	CHECK_INT_EQ(stored(st, BIN "pkg/b.txt"), ST_REMOTE);
	CHECK_INT_EQ(stored(st, BIN "pkg/wanted.txt"), ST_FETCHING);
	CHECK_INT_EQ(stored(st, BIN "pkg/d.txt"), -1);
	killed_cleanup(st);
}

static void action_then_event_then_kill(void)
{
	setup(TF_DOWNLOAD_TOPLEVEL, NULL);
	one_file(KEY_A, "pkg/a.txt", "alpha\n");
	kill_on_event = true;
	post(progress(0, false, NULL, 0)); /* released at once: on_event kills */
}

/* No event leaves before the rows recorded before it are durable. */
TEST(kill_as_an_event_is_released_loses_nothing)
{
	st_store *st = killed_child(action_then_event_then_kill);

	CHECK_INT_EQ(stored(st, BIN "pkg/a.txt"), ST_REMOTE);
	killed_cleanup(st);
}

/* An ActionResult of n outputs BIN "bulk/<key[0]>_<i>", none wanted. */
static void bulk_action(const char *key, int n)
{
	Build__Bazel__Remote__Execution__V2__ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	Build__Bazel__Remote__Execution__V2__OutputFile *f = calloc((size_t)n, sizeof(*f)), **fp = calloc((size_t)n, sizeof(*fp));
	Build__Bazel__Remote__Execution__V2__Digest *d = calloc((size_t)n, sizeof(*d));
	char (*paths)[64] = calloc((size_t)n, 64), (*hashes)[65] = calloc((size_t)n, 65);
	tf_error err = { 0 };
	unsigned char *buf;
	size_t len;

	CHECK(f && fp && d && paths && hashes);
	for (int i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__output_file__init(&f[i]);
		build__bazel__remote__execution__v2__digest__init(&d[i]);
		snprintf(paths[i], 64, BIN "bulk/%c_%d", key[0], i);
		sha256_hex(paths[i], strlen(paths[i]), hashes[i]);
		d[i].hash = hashes[i];
		d[i].size_bytes = 10;
		f[i].path = paths[i];
		f[i].digest = &d[i];
		fp[i] = &f[i];
	}
	ar.output_files = fp;
	ar.n_output_files = (size_t)n;
	len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
	CHECK((buf = malloc(len)) != NULL);
	build__bazel__remote__execution__v2__action_result__pack(&ar, buf);
	CHECK_INT_EQ(tf_session_action_executed(E.s, key, "//pkg:bulk", buf, len, &err), 0);
	free(buf), free(f), free(fp), free(d), free(paths), free(hashes);
}

#define BULK 4000
static const char bulk_keys[4][65] = { KEY_A, KEY_B, KEY_C, KEY_D };

static void bulk_then_kill(void)
{
	setup(TF_DOWNLOAD_TOPLEVEL, NULL);
	for (int k = 0; k < 4; k++)
		bulk_action(bulk_keys[k], BULK);
	raise(SIGKILL);
}

/* Back-to-back ActionResults leave at most TF_SESSION_UNCOMMITTED_MAX
 * writes uncommitted: of 16,000 outputs, the first ones are durable. */
TEST(kill_after_many_actions_loses_at_most_the_bound)
{
	st_store *st = killed_child(bulk_then_kill);
	char path[64];
	int kept = 0;

	CHECK(4 * BULK > (int)TF_SESSION_UNCOMMITTED_MAX);
	for (int k = 0; k < 4; k++)
		for (int i = 0; i < BULK; i++) {
			snprintf(path, sizeof(path), BIN "bulk/%c_%d", bulk_keys[k][0], i);
			kept += stored(st, path) == ST_REMOTE;
		}
	CHECK(kept >= 4 * BULK - (int)TF_SESSION_UNCOMMITTED_MAX);
	CHECK(kept < 4 * BULK); /* coalesced: the last ones were not committed yet */
	CHECK_INT_EQ(stored(st, BIN "bulk/a_0"), ST_REMOTE);
	killed_cleanup(st);
}

/* Appends ev to the file at path as Bazel writes its binary BEP (a varint
 * length, then the message). */
static void append_event(const char *path, ev_event *ev)
{
	size_t n = build_event_stream__build_event__get_packed_size(ev->msg), k = 0;
	unsigned char *buf = malloc(n + 10);
	FILE *f = fopen(path, "ab");

	CHECK(buf && f);
	for (size_t v = n; k == 0 || v; v >>= 7)
		buf[k++] = (unsigned char)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
	build_event_stream__build_event__pack(ev->msg, buf + k);
	CHECK(fwrite(buf, 1, k + n, f) == k + n);
	CHECK(fclose(f) == 0);
	free(buf);
	ev_event_unref(ev);
}

static int readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0);
}

/* A caller waiting on tf_session_fd is woken when the followed BEP file is
 * made and each time it is written to, and the fd is quiet again once
 * dispatched: new events are read at once, not at the caller's poll
 * timeout. */
TEST(session_fd_wakes_when_the_followed_bep_is_written)
{
	char bep[128];
	tf_error err = { 0 };
	int fd;

	setup(TF_DOWNLOAD_MINIMAL, NULL);
	snprintf(bep, sizeof(bep), "%s/bep.bin", E.tmp);
	CHECK_INT_EQ(tf_session_add_bep_file(E.s, bep, &err), 0);
	fd = tf_session_fd(E.s);
	CHECK_INT_EQ(readable(fd), 0);

	append_event(bep, progress(0, false, NULL, 0)); /* made, then written */
	CHECK_INT_EQ(readable(fd), 1);
	CHECK(tf_session_dispatch(E.s, 0, &err) >= 0);
	CHECK_INT_EQ(E.n_events, 1);
	CHECK_STR_EQ(E.events[0], "progress:0");
	CHECK_INT_EQ(readable(fd), 0);

	append_event(bep, progress(1, true, NULL, 0));
	CHECK_INT_EQ(readable(fd), 1);
	CHECK(tf_session_dispatch(E.s, 0, &err) >= 0);
	CHECK_INT_EQ(E.n_events, 2);
	CHECK_STR_EQ(E.events[1], "progress:1(last)");
	CHECK_INT_EQ(readable(fd), 0);
	CHECK(tf_session_bep_complete(E.s));
	teardown();
}
