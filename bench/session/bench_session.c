/* Session benchmarks (issue figures):
 *  1. inject: N outputs through tf_session_action_executed (ActionResults of
 *     1,000 outputs each, mode toplevel: metadata only), outputs/s and peak RSS;
 *  2. gate latency: T targets x F files fetched from a local disk cache
 *     (Bazel layout); for each target, the time from its last file being
 *     complete (the file's mtime, set by the last write before the rename)
 *     to its TargetComplete reaching the binary BEP sink (each emit is
 *     timestamped by a subscriber on the PUB socket in another thread).
 *
 *   bench_session WORKDIR [N_OUTPUTS] [TARGETS] [FILES_PER_TARGET]
 *
 *  3. --inject-table: injection against its peer, a bare SQLite insert of
 *     the same rows, in one table. Each round runs, each in a child process
 *     of its own (its own peak RSS) on a fresh file in WORKDIR: the session
 *     (as in 1), the store alone (the st_ calls the session makes, without
 *     decoding), and the bare insert (one prepared INSERT in one
 *     transaction into the store's own schema) with the store's pragmas and
 *     with SQLite's defaults. The order rotates every round; medians of
 *     ROUNDS (>= 5) rounds.
 *
 *   bench_session --inject-table WORKDIR [N_OUTPUTS] [ROUNDS] */
#include <errno.h>
#include <fcntl.h>
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/inotify.h>

#include "build_event_stream.pb-c.h"
#include "remote_execution.pb-c.h"
#include "store/store.h"
#include "topfetch.h"

typedef Build__Bazel__Remote__Execution__V2__ActionResult AR;
typedef Build__Bazel__Remote__Execution__V2__OutputFile OF;
typedef Build__Bazel__Remote__Execution__V2__Digest DG;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double peak_rss_mib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss / 1024.0;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned len;
	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- 1. injection ---- */

#define PER_ACTION 1000
#define LABEL "//bench:target"

static double cpu_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The outputs of action a: what every kind of injection below writes. */
typedef struct action_data {
	char key[65];
	char paths[PER_ACTION][96];
	const char *names[PER_ACTION]; /* the file name in paths[i] */
	char hashes[PER_ACTION][65];
	unsigned char bin[PER_ACTION][32];
	int64_t sizes[PER_ACTION];
} action_data;

static void make_action(long a, action_data *d)
{
	for (long i = 0; i < PER_ACTION; i++) {
		long id = a * PER_ACTION + i;
		char seed[32];
		unsigned len;
		int n = snprintf(d->paths[i], 96, "bazel-out/k8-fastbuild/bin/pkg%ld/sub/", a);
		snprintf(d->paths[i] + n, (size_t)(96 - n), "output_file_%ld.o", id);
		d->names[i] = d->paths[i] + n;
		snprintf(seed, sizeof(seed), "%ld", id);
		EVP_Digest(seed, strlen(seed), d->bin[i], &len, EVP_sha256(), NULL);
		for (int k = 0; k < 32; k++)
			snprintf(d->hashes[i] + 2 * k, 3, "%02x", d->bin[i][k]);
		d->sizes[i] = 1000 + id % 5000;
	}
	sha256_hex(&a, sizeof(a), d->key);
}

/* Time (wall and CPU) of the work measured, not of making up its input. */
typedef struct timed {
	double wall, cpu, w0, c0;
} timed;

static void t_start(timed *t)
{
	t->w0 = now_s();
	t->c0 = cpu_now_s();
}

static void t_stop(timed *t)
{
	t->cpu += cpu_now_s() - t->c0;
	t->wall += now_s() - t->w0;
}

static int inject_session(const char *work, long n_actions, action_data *d, timed *t)
{
	tf_session_options o = { 0 };
	tf_error err = { 0 };
	char dir[4200], store[4200];
	OF *files = calloc(PER_ACTION, sizeof(*files));
	OF **fp = calloc(PER_ACTION, sizeof(*fp));
	DG *digs = calloc(PER_ACTION, sizeof(*digs));
	tf_session *s;

	snprintf(dir, sizeof(dir), "%s/inject-out", work);
	snprintf(store, sizeof(store), "%s/inject.db", work);
	mkdir(dir, 0755);
	tf_remote_options_init(&o.remote);
	o.remote.remote_cache = work; /* never read: mode toplevel, no targets */
	o.output_dir = dir;
	o.store_path = store;
	s = tf_session_new(&o, &err);
	if (!s) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	for (long a = 0; a < n_actions; a++) {
		AR ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
		size_t len;
		unsigned char *buf;

		make_action(a, d);
		for (long i = 0; i < PER_ACTION; i++) {
			build__bazel__remote__execution__v2__output_file__init(&files[i]);
			build__bazel__remote__execution__v2__digest__init(&digs[i]);
			digs[i].hash = d->hashes[i];
			digs[i].size_bytes = d->sizes[i];
			files[i].path = d->paths[i];
			files[i].digest = &digs[i];
			fp[i] = &files[i];
		}
		ar.output_files = fp;
		ar.n_output_files = PER_ACTION;
		len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
		buf = malloc(len);
		build__bazel__remote__execution__v2__action_result__pack(&ar, buf);
		t_start(t);
		if (tf_session_action_executed(s, d->key, LABEL, buf, len, &err) < 0) {
			fprintf(stderr, "%s\n", err.message);
			return -1;
		}
		t_stop(t);
		free(buf);
	}
	t_start(t);
	if (tf_session_finish(s, NULL, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	t_stop(t);
	tf_session_free(s);
	free(files);
	free(fp);
	free(digs);
	return 0;
}

/* The store calls the session makes for each ActionResult (action, outputs,
 * a commit at the session's bound), without the decoding and the checker. */
static int inject_store(const char *work, long n_actions, action_data *d, timed *t)
{
	tf_error err = { 0 };
	char path[4200];
	uint64_t build;
	st_store *s;
	static st_output o[PER_ACTION];

	snprintf(path, sizeof(path), "%s/inject.db", work);
	if (!(s = st_open(path, NULL, &err)) || st_build_begin(s, &build, &err) < 0)
		goto fail;
	for (long a = 0; a < n_actions; a++) {
		make_action(a, d);
		t_start(t);
		if (st_action_put(s, d->key, LABEL, &err) < 0 || st_action_clear_lost(s, d->key, &err) < 0)
			goto fail;
		for (long i = 0; i < PER_ACTION; i++)
			o[i] = (st_output){ .path = d->paths[i], .hash = d->hashes[i], .size = d->sizes[i],
					    .kind = ST_KIND_FILE, .action_key = d->key, .target = LABEL };
		if (st_outputs_put(s, o, PER_ACTION, &err) < 0)
			goto fail;
		/* the session's cadence: a commit once TF_SESSION_UNCOMMITTED_MAX
		 * writes wait (nothing here starts a fetch) */
		if (st_pending(s) >= TF_SESSION_UNCOMMITTED_MAX && st_flush(s, &err) < 0)
			goto fail;
		t_stop(t);
	}
	t_start(t);
	if (st_flush(s, &err) < 0)
		goto fail;
	t_stop(t);
	st_close(s);
	return 0;
fail:
	fprintf(stderr, "store: %s\n", err.message);
	st_close(s);
	return -1;
}

static int sql_fail(sqlite3 *db, const char *what)
{
	fprintf(stderr, "bare SQLite: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
	sqlite3_close(db);
	return -1;
}

/* The peer: the output rows the store writes (folder id, name, 32-byte
 * hash, size, exec, kind, action id, state, build; the label is on the
 * action, as the store keeps it) with one prepared INSERT in one
 * transaction, into a file with the store's schema. store_pragmas: the
 * store's page size, WAL and per-connection pragmas (st_pragma_sql);
 * otherwise SQLite's defaults (4 KiB pages, rollback journal,
 * synchronous=FULL, 2 MiB cache). */
static int inject_sqlite(const char *work, long n_actions, bool store_pragmas, action_data *d, timed *t)
{
	char path[4200], pragmas[ST_PRAGMA_SQL_MAX];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	tf_error err = { 0 };

	snprintf(path, sizeof(path), "%s/bare.db", work);
	if (store_pragmas) {
		/* The store makes the file: page size, WAL and schema as it has them. */
		st_store *s = st_open(path, NULL, &err);
		if (!s) {
			fprintf(stderr, "store: %s\n", err.message);
			return -1;
		}
		st_close(s);
	}
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK)
		return sql_fail(db, "open");
	if (store_pragmas) {
		st_pragma_sql(NULL, pragmas, sizeof(pragmas));
		if (sqlite3_exec(db, pragmas, NULL, NULL, NULL) != SQLITE_OK)
			return sql_fail(db, "pragmas");
	} else {
		size_t n;
		const st_migration *m = st_schema_migrations(&n);
		for (size_t i = 0; i < n; i++)
			if (sqlite3_exec(db, m[i].sql, NULL, NULL, NULL) != SQLITE_OK)
				return sql_fail(db, "schema");
	}
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO outputs(dir, name, hash, size, exec, kind, action, state, build) "
			       "VALUES(?1, ?2, ?3, ?4, 0, 0, ?5, 0, 1)",
			       -1, &st, NULL) != SQLITE_OK)
		return sql_fail(db, "prepare");
	t_start(t);
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return sql_fail(db, "begin");
	t_stop(t);
	for (long a = 0; a < n_actions; a++) {
		make_action(a, d);
		t_start(t);
		for (long i = 0; i < PER_ACTION; i++) {
			sqlite3_bind_int64(st, 1, a + 1); /* one folder per action, as made up */
			sqlite3_bind_text(st, 2, d->names[i], -1, SQLITE_STATIC);
			sqlite3_bind_blob(st, 3, d->bin[i], 32, SQLITE_STATIC);
			sqlite3_bind_int64(st, 4, d->sizes[i]);
			sqlite3_bind_int64(st, 5, a + 1);
			if (sqlite3_step(st) != SQLITE_DONE)
				return sql_fail(db, "insert");
			sqlite3_reset(st);
		}
		t_stop(t);
	}
	t_start(t);
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return sql_fail(db, "commit");
	t_stop(t);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return 0;
}

static int bench_inject(const char *work, long n_outputs, double *rate, double *rss)
{
	action_data *d = malloc(sizeof(*d));
	timed t = { 0 };
	long n_actions = n_outputs / PER_ACTION;

	if (!d || inject_session(work, n_actions, d, &t) < 0)
		return -1;
	free(d);
	*rate = (double)(n_actions * PER_ACTION) / t.wall;
	*rss = peak_rss_mib();
	return 0;
}

enum { K_SESSION, K_STORE, K_SQLITE, K_SQLITE_DEFAULT, K_COUNT };
static const char *const kind_names[K_COUNT] = {
	"session: tf_session_action_executed", "store: st_action_put + st_outputs_put",
	"bare SQLite, store's pragmas", "bare SQLite, default pragmas",
};

typedef struct result {
	double wall, cpu, rss_mib;
} result;

/* One run in a child process of its own, on a fresh folder: its own peak RSS. */
static int run_child(const char *work, int kind, int round, long n_actions, result *out)
{
	char dir[4096], cmd[8300];
	int fds[2];
	pid_t pid;
	struct rusage ru;
	int status;

	snprintf(dir, sizeof(dir), "%s/run-%d-%d", work, round, kind);
	if (mkdir(dir, 0755) < 0 || pipe(fds) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		action_data *d = malloc(sizeof(*d));
		timed t = { 0 };
		int r = !d ? -1
			: kind == K_SESSION ? inject_session(dir, n_actions, d, &t)
			: kind == K_STORE   ? inject_store(dir, n_actions, d, &t)
					    : inject_sqlite(dir, n_actions, kind == K_SQLITE, d, &t);
		result res = { t.wall, t.cpu, 0 };
		if (r == 0 && write(fds[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
			r = -1;
		_exit(r == 0 ? 0 : 1);
	}
	close(fds[1]);
	ssize_t got = read(fds[0], out, sizeof(*out));
	close(fds[0]);
	if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
	    got != (ssize_t)sizeof(*out))
		return -1;
	out->rss_mib = (double)ru.ru_maxrss / 1024.0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b);

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int inject_table(const char *work, long n_outputs, int rounds)
{
	long n_actions = n_outputs / PER_ACTION, n = n_actions * PER_ACTION;
	double rate[K_COUNT][64], cpu[K_COUNT][64], rss[K_COUNT] = { 0 }, mrate[K_COUNT], mcpu[K_COUNT];

	if (n_actions < 1 || rounds < 1 || rounds > 64) {
		fprintf(stderr, "bench_session: need N_OUTPUTS >= %d and 1..64 rounds\n", PER_ACTION);
		return 2;
	}
	for (int r = 0; r < rounds; r++)
		for (int j = 0; j < K_COUNT; j++) {
			int k = (j + r) % K_COUNT; /* alternate, and rotate who goes first */
			result res;
			if (run_child(work, k, r, n_actions, &res) < 0) {
				fprintf(stderr, "bench_session: %s failed in round %d\n", kind_names[k], r + 1);
				return 1;
			}
			rate[k][r] = (double)n / res.wall;
			cpu[k][r] = res.cpu * 1e6 / (double)n;
			if (res.rss_mib > rss[k])
				rss[k] = res.rss_mib;
			fprintf(stderr, "round %d: %-40s %10.0f outputs/s %6.2f us CPU/output %6.1f MiB\n", r + 1,
				kind_names[k], rate[k][r], cpu[k][r], res.rss_mib);
		}
	for (int k = 0; k < K_COUNT; k++) {
		mrate[k] = median(rate[k], rounds);
		mcpu[k] = median(cpu[k], rounds);
	}
	printf("\n%ld outputs (ActionResults of %d), medians of %d rounds\n\n", n, PER_ACTION, rounds);
	printf("| inject | outputs/s | CPU us/output | peak RSS MiB | rate / bare SQLite (store pragmas) | CPU / bare SQLite (store pragmas) |\n"
	       "|---|---|---|---|---|---|\n");
	for (int k = 0; k < K_COUNT; k++)
		printf("| %s | %.0f | %.2f | %.1f | %.2f | %.2f |\n", kind_names[k], mrate[k], mcpu[k], rss[k],
		       mrate[k] / mrate[K_SQLITE], mcpu[k] / mcpu[K_SQLITE]);
	printf("\nsession / bare SQLite (store's pragmas): %.2f of its rate (target >= 0.8); "
	       "against default pragmas: %.2f\n\n",
	       mrate[K_SESSION] / mrate[K_SQLITE], mrate[K_SESSION] / mrate[K_SQLITE_DEFAULT]);
	return 0;
}

/* ---- 2. gate latency ---- */

#define BIN "bazel-out/k8-fastbuild/bin"

typedef struct observer {
	const char *sock_url, *watch_dir;
	int targets, files;
	double *moved;   /* per target: when its last file appeared (monotonic s) */
	int *moved_n;
	double *latency; /* per target, filled at its TargetComplete */
	int completed;
	volatile int ready;
} observer;

/* One thread sees both the files appearing (inotify IN_MOVED_TO: the rename
 * into place) and the events arriving (PUB), so both times come from the
 * same clock and the same kind of kernel notification. */
static void *observe(void *arg)
{
	observer *ob = arg;
	int ino = inotify_init1(IN_NONBLOCK), sock = nn_socket(AF_SP, NN_SUB), sfd;
	size_t sz = sizeof(sfd);
	char buf[65536];

	inotify_add_watch(ino, ob->watch_dir, IN_MOVED_TO);
	nn_setsockopt(sock, NN_SUB, NN_SUB_SUBSCRIBE, "", 0);
	nn_connect(sock, ob->sock_url);
	nn_getsockopt(sock, NN_SOL_SOCKET, NN_RCVFD, &sfd, &sz);
	ob->ready = 1;
	while (ob->completed < ob->targets) {
		struct pollfd p[2] = { { .fd = ino, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		if (poll(p, 2, 10000) <= 0)
			break;
		if (p[0].revents) {
			ssize_t n = read(ino, buf, sizeof(buf));
			double t = now_s();
			for (ssize_t off = 0; n > 0 && off < n;) {
				struct inotify_event *e = (struct inotify_event *)(buf + off);
				int ti, fj;
				if (e->len && sscanf(e->name, "t%d_f%d", &ti, &fj) == 2 && ti >= 0 && ti < ob->targets) {
					ob->moved[ti] = t;
					ob->moved_n[ti]++;
				}
				off += (ssize_t)sizeof(*e) + e->len;
			}
		}
		if (p[1].revents) {
			void *msg = NULL;
			int n;
			while ((n = nn_recv(sock, &msg, NN_MSG, NN_DONTWAIT)) >= 0) {
				double t = now_s();
				BuildEventStream__BuildEvent *ev =
					build_event_stream__build_event__unpack(NULL, (size_t)n, msg);
				nn_freemsg(msg);
				if (ev && ev->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED) {
					int ti = atoi(ev->id->target_completed->label + 4); /* "//t:N" */
					/* Let the inotify events that are already queued in. */
					ssize_t m = read(ino, buf, sizeof(buf));
					for (ssize_t off = 0; m > 0 && off < m;) {
						struct inotify_event *e = (struct inotify_event *)(buf + off);
						int a, b;
						if (e->len && sscanf(e->name, "t%d_f%d", &a, &b) == 2 && a >= 0 && a < ob->targets) {
							ob->moved[a] = t;
							ob->moved_n[a]++;
						}
						off += (ssize_t)sizeof(*e) + e->len;
					}
					if (ob->moved_n[ti] == ob->files)
						ob->latency[ti] = t - ob->moved[ti];
					else
						ob->latency[ti] = -1; /* TargetComplete before all its files: a gate bug */
					ob->completed++;
				}
				if (ev)
					build_event_stream__build_event__free_unpacked(ev, NULL);
			}
		}
	}
	close(ino);
	nn_close(sock);
	return NULL;
}

static size_t pack_event(BuildEventStream__BuildEvent *ev, unsigned char **out)
{
	size_t n = build_event_stream__build_event__get_packed_size(ev);
	*out = malloc(n ? n : 1);
	build_event_stream__build_event__pack(ev, *out);
	return n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int bench_gate(const char *work, int targets, int files, double *median_ms, double *p90_ms,
		      double *max_ms, int *bad)
{
	char cache[1024], out[1024], watch[2048], url[1100], path[8192];
	char *prefix[3] = { (char *)"bazel-out", (char *)"k8-fastbuild", (char *)"bin" };
	tf_session_options o = { 0 };
	tf_error err = { 0 };
	observer ob = { 0 };
	pthread_t th;
	tf_session *s;
	unsigned char data[4096];
	double *lat;

	snprintf(cache, sizeof(cache), "%s/gate-cache", work);
	snprintf(out, sizeof(out), "%s/gate-out", work);
	snprintf(watch, sizeof(watch), "%s/" BIN "/all", out);
	snprintf(url, sizeof(url), "ipc://%s/gate.ipc", work);
	snprintf(path, sizeof(path), "mkdir -p '%s/cas' '%s'", cache, watch);
	if (system(path) != 0)
		return -1;
	ob.sock_url = url;
	ob.watch_dir = watch;
	ob.targets = targets;
	ob.files = files;
	ob.moved = calloc((size_t)targets, sizeof(double));
	ob.moved_n = calloc((size_t)targets, sizeof(int));
	ob.latency = calloc((size_t)targets, sizeof(double));

	tf_remote_options_init(&o.remote);
	o.remote.remote_cache = cache;
	o.output_dir = out;
	o.build_event_publish = url;
	s = tf_session_new(&o, &err);
	if (!s) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	pthread_create(&th, NULL, observe, &ob);
	while (!ob.ready)
		usleep(1000);
	usleep(200000); /* the subscription must be in place before the first event */

	{
		/* BuildStarted announces every later event. */
		BuildEventStream__BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
		BuildEventStream__BuildEventId id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
		BuildEventStream__BuildEventId__BuildStartedId sid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__BUILD_STARTED_ID__INIT;
		BuildEventStream__BuildStarted started = BUILD_EVENT_STREAM__BUILD_STARTED__INIT;
		size_t nch = (size_t)targets * 2 + 1;
		BuildEventStream__BuildEventId **ch = calloc(nch, sizeof(*ch));
		BuildEventStream__BuildEventId *ids = calloc(nch, sizeof(*ids));
		BuildEventStream__BuildEventId__NamedSetOfFilesId *nsid = calloc((size_t)targets, sizeof(*nsid));
		BuildEventStream__BuildEventId__TargetCompletedId *tcid = calloc((size_t)targets, sizeof(*tcid));
		BuildEventStream__BuildEventId__BuildToolLogsId logsid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__BUILD_TOOL_LOGS_ID__INIT;
		char (*names)[32] = calloc((size_t)targets, 32), (*labels)[32] = calloc((size_t)targets, 32);
		unsigned char *bytes;
		size_t n;

		for (int i = 0; i < targets; i++) {
			build_event_stream__build_event_id__init(&ids[2 * i]);
			build_event_stream__build_event_id__named_set_of_files_id__init(&nsid[i]);
			snprintf(names[i], 32, "%d", i);
			nsid[i].id = names[i];
			ids[2 * i].id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
			ids[2 * i].named_set = &nsid[i];
			build_event_stream__build_event_id__init(&ids[2 * i + 1]);
			build_event_stream__build_event_id__target_completed_id__init(&tcid[i]);
			snprintf(labels[i], 32, "//t:%d", i);
			tcid[i].label = labels[i];
			ids[2 * i + 1].id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED;
			ids[2 * i + 1].target_completed = &tcid[i];
			ch[2 * i] = &ids[2 * i];
			ch[2 * i + 1] = &ids[2 * i + 1];
		}
		build_event_stream__build_event_id__init(&ids[nch - 1]);
		ids[nch - 1].id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_TOOL_LOGS;
		ids[nch - 1].build_tool_logs = &logsid;
		ch[nch - 1] = &ids[nch - 1];
		id.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED;
		id.started = &sid;
		ev.id = &id;
		ev.children = ch;
		ev.n_children = nch;
		ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED;
		ev.started = &started;
		n = pack_event(&ev, &bytes);
		if (tf_session_build_event(s, bytes, n, &err) < 0)
			return fprintf(stderr, "%s\n", err.message), -1;
		free(bytes);

		for (int i = 0; i < targets; i++) {
			/* The target's action: F blobs of 4 KiB, in the disk cache. */
			AR ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
			OF *of = calloc((size_t)files, sizeof(*of));
			OF **ofp = calloc((size_t)files, sizeof(*ofp));
			DG *dg = calloc((size_t)files, sizeof(*dg));
			char (*fpaths)[96] = calloc((size_t)files, 96), (*fh)[65] = calloc((size_t)files, 65);
			BuildEventStream__File *bf = calloc((size_t)files, sizeof(*bf));
			BuildEventStream__File **bfp = calloc((size_t)files, sizeof(*bfp));
			char (*bnames)[64] = calloc((size_t)files, 64), key[65];
			BuildEventStream__BuildEvent nse = BUILD_EVENT_STREAM__BUILD_EVENT__INIT, tce = nse;
			BuildEventStream__NamedSetOfFiles ns = BUILD_EVENT_STREAM__NAMED_SET_OF_FILES__INIT;
			BuildEventStream__TargetComplete tc = BUILD_EVENT_STREAM__TARGET_COMPLETE__INIT;
			BuildEventStream__OutputGroup og = BUILD_EVENT_STREAM__OUTPUT_GROUP__INIT, *ogp = &og;
			BuildEventStream__BuildEventId__NamedSetOfFilesId *setref = &nsid[i];
			unsigned char *arb;
			size_t arn;
			FILE *f;

			for (int j = 0; j < files; j++) {
				for (size_t k = 0; k < sizeof(data); k++)
					data[k] = (unsigned char)(rand() & 0xff);
				sha256_hex(data, sizeof(data), fh[j]);
				snprintf(path, sizeof(path), "%s/cas/%.2s", cache, fh[j]);
				mkdir(path, 0755);
				snprintf(path, sizeof(path), "%s/cas/%.2s/%s", cache, fh[j], fh[j]);
				f = fopen(path, "wb");
				fwrite(data, 1, sizeof(data), f);
				fclose(f);
				build__bazel__remote__execution__v2__output_file__init(&of[j]);
				build__bazel__remote__execution__v2__digest__init(&dg[j]);
				snprintf(fpaths[j], 96, BIN "/all/t%d_f%d", i, j);
				dg[j].hash = fh[j];
				dg[j].size_bytes = sizeof(data);
				of[j].path = fpaths[j];
				of[j].digest = &dg[j];
				ofp[j] = &of[j];
				build_event_stream__file__init(&bf[j]);
				snprintf(bnames[j], 64, "all/t%d_f%d", i, j);
				bf[j].name = bnames[j];
				bf[j].n_path_prefix = 3;
				bf[j].path_prefix = prefix;
				bfp[j] = &bf[j];
			}
			ar.output_files = ofp;
			ar.n_output_files = (size_t)files;
			arn = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
			arb = malloc(arn);
			build__bazel__remote__execution__v2__action_result__pack(&ar, arb);
			sha256_hex(&i, sizeof(i), key);
			if (tf_session_action_executed(s, key, labels[i], arb, arn, &err) < 0)
				return fprintf(stderr, "%s\n", err.message), -1;
			free(arb);

			ns.files = bfp;
			ns.n_files = (size_t)files;
			nse.id = &ids[2 * i];
			nse.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
			nse.named_set_of_files = &ns;
			n = pack_event(&nse, &bytes);
			if (tf_session_build_event(s, bytes, n, &err) < 0)
				return fprintf(stderr, "%s\n", err.message), -1;
			free(bytes);
			og.name = (char *)"default";
			og.file_sets = &setref;
			og.n_file_sets = 1;
			tc.success = 1;
			tc.output_group = &ogp;
			tc.n_output_group = 1;
			tce.id = &ids[2 * i + 1];
			tce.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED;
			tce.completed = &tc;
			n = pack_event(&tce, &bytes);
			if (tf_session_build_event(s, bytes, n, &err) < 0)
				return fprintf(stderr, "%s\n", err.message), -1;
			free(bytes);
			tf_session_dispatch(s, 0, &err);
			free(of), free(ofp), free(dg), free(fpaths), free(fh), free(bf), free(bfp), free(bnames);
		}
		{
			BuildEventStream__BuildEvent le = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
			BuildEventStream__BuildToolLogs logs = BUILD_EVENT_STREAM__BUILD_TOOL_LOGS__INIT;
			le.id = &ids[nch - 1];
			le.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS;
			le.build_tool_logs = &logs;
			le.last_message = 1;
			n = pack_event(&le, &bytes);
			if (tf_session_build_event(s, bytes, n, &err) < 0)
				return fprintf(stderr, "%s\n", err.message), -1;
			free(bytes);
		}
		/* Run the loop as a front end would: dispatch as completions arrive. */
		while (ob.completed < targets) {
			if (tf_session_dispatch(s, 100, &err) < 0)
				return fprintf(stderr, "%s\n", err.message), -1;
			if (tf_session_fd(s) < 0)
				break;
			{
				tf_session_stats st;
				tf_session_get_stats(s, &st);
				if (st.targets_completed == (uint64_t)targets)
					break;
			}
		}
		tf_session_finish(s, NULL, &err);
		free(ch), free(ids), free(nsid), free(tcid), free(names), free(labels);
	}
	pthread_join(th, NULL);
	tf_session_free(s);
	lat = calloc((size_t)targets, sizeof(double));
	*bad = 0;
	for (int i = 0; i < targets; i++) {
		if (ob.latency[i] < 0)
			(*bad)++;
		lat[i] = ob.latency[i] * 1000.0;
	}
	qsort(lat, (size_t)targets, sizeof(double), cmp_double);
	*median_ms = lat[targets / 2];
	*p90_ms = lat[targets * 9 / 10];
	*max_ms = lat[targets - 1];
	free(lat), free(ob.moved), free(ob.moved_n), free(ob.latency);
	return ob.completed == targets ? 0 : -1;
}

int main(int argc, char **argv)
{
	long n = argc > 2 ? atol(argv[2]) : 1000000;
	int targets = argc > 3 ? atoi(argv[3]) : 1000, files = argc > 4 ? atoi(argv[4]) : 3, bad = 0;
	double rate, rss, med, p90, max;

	if (argc > 2 && !strcmp(argv[1], "--inject-table"))
		return inject_table(argv[2], argc > 3 ? atol(argv[3]) : 1000000, argc > 4 ? atoi(argv[4]) : 5);
	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: bench_session WORKDIR [N_OUTPUTS] [TARGETS] [FILES_PER_TARGET]\n"
				"       bench_session --inject-table WORKDIR [N_OUTPUTS] [ROUNDS]\n");
		return 2;
	}
	if (bench_inject(argv[1], n, &rate, &rss) < 0)
		return 1;
	printf("| inject %ld outputs (ActionResults of 1,000) | %.0f outputs/s | peak RSS %.1f MiB | target >= 300,000/s, <= 256 MiB |\n",
	       n, rate, rss);
	fflush(stdout);
	if (bench_gate(argv[1], targets, files, &med, &p90, &max, &bad) < 0)
		return 1;
	printf("| gate latency, %d targets x %d files (last file renamed -> TargetComplete at a PUB subscriber) | median %.3f ms | p90 %.3f ms, max %.3f ms, %d early | target median <= 5 ms, 0 early |\n",
	       targets, files, med, p90, max, bad);
	return bad ? 1 : 0;
}
