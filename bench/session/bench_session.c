/* Session benchmarks (issue figures, one table):
 *  1. inject: N outputs through tf_session_action_executed (ActionResults of
 *     1,000 outputs each, mode toplevel: metadata only), outputs/s and peak RSS;
 *  2. gate latency: T targets x F files fetched from a local disk cache
 *     (Bazel layout); for each target, the time from its last file being
 *     complete (the file's mtime, set by the last write before the rename)
 *     to its TargetComplete reaching the binary BEP sink (each emit is
 *     timestamped by a subscriber on the PUB socket in another thread).
 *
 *   bench_session WORKDIR [N_OUTPUTS] [TARGETS] [FILES_PER_TARGET] */
#include <errno.h>
#include <fcntl.h>
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/inotify.h>

#include "build_event_stream.pb-c.h"
#include "remote_execution.pb-c.h"
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

static int bench_inject(const char *work, long n_outputs, double *rate, double *rss)
{
	tf_session_options o = { 0 };
	tf_error err = { 0 };
	char dir[4096], store[4096], key[65];
	const long per = 1000;
	OF *files = calloc((size_t)per, sizeof(*files));
	OF **fp = calloc((size_t)per, sizeof(*fp));
	DG *digs = calloc((size_t)per, sizeof(*digs));
	char (*paths)[96] = calloc((size_t)per, 96), (*hashes)[65] = calloc((size_t)per, 65);
	tf_session *s;
	double t0, spent = 0;

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
	for (long a = 0; a < n_outputs / per; a++) {
		AR ar = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
		size_t len;
		unsigned char *buf;
		for (long i = 0; i < per; i++) {
			long id = a * per + i;
			char seed[32];
			build__bazel__remote__execution__v2__output_file__init(&files[i]);
			build__bazel__remote__execution__v2__digest__init(&digs[i]);
			snprintf(paths[i], 96, "bazel-out/k8-fastbuild/bin/pkg%ld/sub/output_file_%ld.o", a, id);
			snprintf(seed, sizeof(seed), "%ld", id);
			sha256_hex(seed, strlen(seed), hashes[i]);
			digs[i].hash = hashes[i];
			digs[i].size_bytes = 1000 + id % 5000;
			files[i].path = paths[i];
			files[i].digest = &digs[i];
			fp[i] = &files[i];
		}
		ar.output_files = fp;
		ar.n_output_files = (size_t)per;
		len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
		buf = malloc(len);
		build__bazel__remote__execution__v2__action_result__pack(&ar, buf);
		sha256_hex(&a, sizeof(a), key);
		/* Only the session's work is timed, not making the test data. */
		t0 = now_s();
		if (tf_session_action_executed(s, key, "//bench:target", buf, len, &err) < 0) {
			fprintf(stderr, "%s\n", err.message);
			return -1;
		}
		spent += now_s() - t0;
		free(buf);
	}
	t0 = now_s();
	if (tf_session_finish(s, NULL, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	spent += now_s() - t0;
	tf_session_free(s);
	*rate = (double)(n_outputs / per * per) / spent;
	*rss = peak_rss_mib();
	free(files);
	free(fp);
	free(digs);
	free(paths);
	free(hashes);
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

	if (argc < 2) {
		fprintf(stderr, "usage: bench_session WORKDIR [N_OUTPUTS] [TARGETS] [FILES_PER_TARGET]\n");
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
