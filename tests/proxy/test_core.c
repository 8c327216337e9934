/* The proxy core through its wire-neutral interface (area, key, bytes,
 * status), against a --disk_cache directory as the upstream and a real
 * tf_session: uploads and downloads, a wrong upload refused, action results
 * recorded through the bridge to the session's thread (this test's main
 * thread; requests run on their own threads as a front end's would), lost
 * actions answered as misses, --remote_validate_outputs, shutting down. */
#include <ftw.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/proxy.h"
#include "remote_execution.pb-c.h"
#include "tf_test.h"

typedef struct fixture {
	char *dir;
	char disk[512], out[512];
	px_proxy *p;
	tf_session *s;
} fixture;

static void sha256_hex(const void *p, size_t n, char out[TF_HASH_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	tf__hex(md, len, out);
}

static void setup(fixture *f, bool validate)
{
	tf_session_options so = { 0 };
	px_options po = { 0 };
	tf_error err = { 0 };

	f->dir = strdup("/tmp/tf-test-proxy.XXXXXX");
	CHECK(f->dir && mkdtemp(f->dir));
	snprintf(f->disk, sizeof(f->disk), "%s/cache/disk", f->dir); /* made by px_new */
	snprintf(f->out, sizeof(f->out), "%s/out", f->dir);
	tf_remote_options_init(&so.remote);
	so.remote.remote_cache = f->disk;
	so.output_dir = f->out;
	po.remote = &so.remote;
	po.validate = validate;
	f->p = px_new(&po, &err);
	if (!f->p)
		fprintf(stderr, "%s\n", err.message);
	CHECK(f->p);
	f->s = tf_session_new(&so, &err);
	if (!f->s)
		fprintf(stderr, "%s\n", err.message);
	CHECK(f->s);
	px_set_session(f->p, f->s);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *w)
{
	(void)st;
	(void)flag;
	(void)w;
	return remove(path);
}

static void teardown(fixture *f)
{
	px_close(f->p);
	px_free(f->p);
	tf_session_free(f->s);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f->dir);
}

/* ---- requests on their own thread, the session's thread answering ----------------------- */

typedef struct job {
	px_proxy *p;
	char op; /* 'G' AC get, 'H' head, 'P' put */
	tf_area area;
	const char *key;
	const void *data;
	size_t len;
	px_result r;
	tf__buf body;
	int64_t length;
	atomic_bool done;
} job;

static void *job_main(void *arg)
{
	job *j = arg;

	if (j->op == 'G') {
		px_ac_get(j->p, j->key, &j->body, &j->r);
	} else if (j->op == 'H') {
		px_head(j->p, j->area, j->key, &j->length, &j->r);
	} else {
		px_put *u = px_put_begin(j->p, j->area, j->key, (int64_t)j->len, &j->r);
		if (u) {
			/* In two pieces, as a wire delivers them. */
			px_put_data(u, j->data, j->len / 2);
			px_put_data(u, (const char *)j->data + j->len / 2, j->len - j->len / 2);
			px_put_end(u, &j->r);
			px_put_free(u);
		}
	}
	atomic_store(&j->done, true);
	return NULL;
}

static void request(fixture *f, job *j)
{
	pthread_t t;

	j->p = f->p;
	atomic_init(&j->done, false);
	CHECK(pthread_create(&t, NULL, job_main, j) == 0);
	while (!atomic_load(&j->done)) {
		struct pollfd pf = { .fd = px_fd(f->p), .events = POLLIN };
		poll(&pf, 1, 100);
		px_run(f->p);
	}
	pthread_join(t, NULL);
}

static px_status put(fixture *f, tf_area area, const char *key, const void *data, size_t len, px_result *r)
{
	job j = { .op = 'P', .area = area, .key = key, .data = data, .len = len };
	request(f, &j);
	*r = j.r;
	return j.r.status;
}

/* An ActionResult with one output file. */
static size_t action_result(const char *hash, int64_t size, unsigned char *out, size_t cap)
{
	Build__Bazel__Remote__Execution__V2__ActionResult ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
	Build__Bazel__Remote__Execution__V2__OutputFile of = BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_FILE__INIT;
	Build__Bazel__Remote__Execution__V2__Digest dg = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
	Build__Bazel__Remote__Execution__V2__OutputFile *files[] = { &of };

	dg.hash = (char *)hash;
	dg.size_bytes = size;
	of.path = (char *)"bazel-out/k8-fastbuild/bin/pkg/a.txt";
	of.digest = &dg;
	ar.n_output_files = 1;
	ar.output_files = files;
	CHECK(build__bazel__remote__execution__v2__action_result__get_packed_size(&ar) <= cap);
	return build__bazel__remote__execution__v2__action_result__pack(&ar, out);
}

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(cas_put_get_head_against_a_disk_upstream)
{
	const char *data = "the bytes of a blob";
	char key[TF_HASH_HEX_LEN + 1], absent[TF_HASH_HEX_LEN + 1], path[1024], buf[8];
	size_t n = strlen(data), got = 0;
	fixture f;
	px_result r;
	px_get *g;
	int64_t length = 0;
	struct stat st;
	ssize_t k;
	char back[64];

	setup(&f, false);
	sha256_hex(data, n, key);
	sha256_hex("absent", 6, absent);
	CHECK_INT_EQ(put(&f, TF_AREA_CAS, key, data, n, &r), PX_OK);
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s", f.disk, key, key);
	CHECK(stat(path, &st) == 0 && st.st_size == (off_t)n);
	/* Streamed back in small reads. */
	g = px_cas_get(f.p, key, &length, &r);
	CHECK(g);
	CHECK_INT_EQ(length, n);
	while ((k = px_get_read(g, buf, sizeof(buf))) > 0) {
		memcpy(back + got, buf, (size_t)k);
		got += (size_t)k;
	}
	CHECK_INT_EQ(k, 0);
	CHECK_INT_EQ(got, n);
	CHECK(!memcmp(back, data, n));
	px_get_free(g);
	px_head(f.p, TF_AREA_CAS, key, &length, &r);
	CHECK_INT_EQ(r.status, PX_OK);
	CHECK_INT_EQ(length, n);
	/* Misses. */
	CHECK(px_cas_get(f.p, absent, &length, &r) == NULL);
	CHECK_INT_EQ(r.status, PX_NOT_FOUND);
	px_head(f.p, TF_AREA_CAS, absent, &length, &r);
	CHECK_INT_EQ(r.status, PX_NOT_FOUND);
	/* The empty blob always exists and is never asked upstream. */
	g = px_cas_get(f.p, TF_EMPTY_SHA256, &length, &r);
	CHECK(g && length == 0 && px_get_read(g, buf, sizeof(buf)) == 0);
	px_get_free(g);
	teardown(&f);
}

TEST(wrong_uploads_refused)
{
	const char *data = "these bytes do not hash to the key";
	char key[TF_HASH_HEX_LEN + 1], path[1024];
	fixture f;
	px_result r;
	px_counters c;

	setup(&f, false);
	sha256_hex("other bytes", 11, key);
	CHECK_INT_EQ(put(&f, TF_AREA_CAS, key, data, strlen(data), &r), PX_BAD_REQUEST);
	CHECK_CONTAINS(r.message, "the body's SHA-256 is");
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s", f.disk, key, key);
	CHECK(access(path, F_OK) < 0);
	CHECK_INT_EQ(put(&f, TF_AREA_CAS, key, "", 0, &r), PX_BAD_REQUEST);
	CHECK_CONTAINS(r.message, "an empty body does not hash to this key");
	CHECK_INT_EQ(put(&f, TF_AREA_CAS, TF_EMPTY_SHA256, "", 0, &r), PX_OK);
	/* An action cache entry past the cap is refused before any byte. */
	CHECK(px_put_begin(f.p, TF_AREA_AC, key, (int64_t)PX_AC_MAX_BYTES + 1, &r) == NULL);
	CHECK_INT_EQ(r.status, PX_TOO_LARGE);
	px_get_counters(f.p, &c);
	CHECK_INT_EQ(c.refused, 3);
	teardown(&f);
}

TEST(action_results_recorded_and_lost_actions_missed)
{
	unsigned char ar[512];
	char blob_key[TF_HASH_HEX_LEN + 1], key[TF_HASH_HEX_LEN + 1];
	size_t len;
	fixture f;
	px_result r;
	tf_session_stats st;
	px_counters c;

	setup(&f, false);
	sha256_hex("output", 6, blob_key);
	sha256_hex("an action", 9, key);
	len = action_result(blob_key, 6, ar, sizeof(ar));
	CHECK_INT_EQ(put(&f, TF_AREA_AC, key, ar, len, &r), PX_OK);
	tf_session_get_stats(f.s, &st);
	CHECK_INT_EQ(st.actions, 1);
	{
		job j = { .op = 'G', .key = key };
		request(&f, &j);
		CHECK_INT_EQ(j.r.status, PX_OK);
		CHECK_INT_EQ(j.body.len, len);
		CHECK(!memcmp(j.body.data, ar, len));
		tf__buf_fini(&j.body);
	}
	tf_session_get_stats(f.s, &st);
	CHECK_INT_EQ(st.actions, 2); /* the hit is recorded too */
	/* The session found an output of this action gone: its lookups miss. */
	px_note_lost(f.p, key);
	{
		job j = { .op = 'G', .key = key }, h = { .op = 'H', .area = TF_AREA_AC, .key = key };
		request(&f, &j);
		CHECK_INT_EQ(j.r.status, PX_NOT_FOUND);
		CHECK_CONTAINS(j.r.message, "lost from the cache");
		request(&f, &h);
		CHECK_INT_EQ(h.r.status, PX_NOT_FOUND);
	}
	/* A new result for it (the action ran again) is a hit again. */
	CHECK_INT_EQ(put(&f, TF_AREA_AC, key, ar, len, &r), PX_OK);
	{
		job j = { .op = 'G', .key = key };
		request(&f, &j);
		CHECK_INT_EQ(j.r.status, PX_OK);
		tf__buf_fini(&j.body);
	}
	px_get_counters(f.p, &c);
	CHECK_INT_EQ(c.ac_hits, 2);
	CHECK_INT_EQ(c.ac_lost, 2);
	CHECK_INT_EQ(c.ac_puts, 2);
	teardown(&f);
}

TEST(validate_outputs_misses_a_result_whose_blob_is_gone)
{
	unsigned char ar[512];
	char blob_key[TF_HASH_HEX_LEN + 1], key[TF_HASH_HEX_LEN + 1];
	size_t len;
	fixture f;
	px_result r;

	setup(&f, true);
	sha256_hex("output", 6, blob_key);
	sha256_hex("an action", 9, key);
	len = action_result(blob_key, 6, ar, sizeof(ar));
	CHECK_INT_EQ(put(&f, TF_AREA_AC, key, ar, len, &r), PX_OK);
	{
		job j = { .op = 'G', .key = key };
		char want[256];
		request(&f, &j);
		CHECK_INT_EQ(j.r.status, PX_NOT_FOUND);
		snprintf(want, sizeof(want), "output blob %s/6 is missing from the disk cache", blob_key);
		CHECK_CONTAINS(j.r.message, want);
	}
	CHECK_INT_EQ(put(&f, TF_AREA_CAS, blob_key, "output", 6, &r), PX_OK);
	{
		job j = { .op = 'G', .key = key };
		request(&f, &j);
		CHECK_INT_EQ(j.r.status, PX_OK);
		tf__buf_fini(&j.body);
	}
	/* Bytes that are no ActionResult are a miss, not a crash. */
	CHECK_INT_EQ(put(&f, TF_AREA_AC, key, "\xff\xff\xff", 3, &r), PX_OK);
	{
		job j = { .op = 'G', .key = key };
		request(&f, &j);
		CHECK_INT_EQ(j.r.status, PX_NOT_FOUND);
		CHECK_CONTAINS(j.r.message, "does not parse");
	}
	teardown(&f);
}

TEST(closed_proxy_answers_unavailable)
{
	char key[TF_HASH_HEX_LEN + 1];
	int64_t length;
	fixture f;
	px_result r;
	tf__buf body;

	setup(&f, false);
	sha256_hex("x", 1, key);
	px_close(f.p);
	px_ac_get(f.p, key, &body, &r);
	CHECK_INT_EQ(r.status, PX_UNAVAILABLE);
	CHECK(px_cas_get(f.p, key, &length, &r) == NULL);
	CHECK_INT_EQ(r.status, PX_UNAVAILABLE);
	CHECK(px_put_begin(f.p, TF_AREA_CAS, key, 1, &r) == NULL);
	CHECK_INT_EQ(r.status, PX_UNAVAILABLE);
	teardown(&f);
}
