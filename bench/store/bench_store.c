/* bench_store: how fast the metadata store takes in outputs.
 *
 * Injects N outputs (default 1,000,000) the way a build reports them: one
 * action put followed by its outputs (4 per action), actions in a shuffled
 * order so that paths land all over the B-tree, realistic ~56-byte paths and
 * distinct hashes. Then re-injects them all (the next build, same content)
 * and reads a sample back. Prints outputs/s (wall and CPU) per phase and
 * the peak RSS (getrusage ru_maxrss).
 *
 *   bench_store [-n N] [--dir DIR] [--batch OPS] [--cache-mib MIB]
 *               [--order shuffled|sorted] [--no-actions] [--check]
 *
 * --no-actions leaves out the action puts and the outputs' action keys and
 * labels, to see what they cost.
 *
 * --check exits 1 unless the first injection reaches 300,000 outputs/s with
 * a peak RSS of at most 256 MiB. */
#include "store/store.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OUTPUTS_PER_ACTION 4
#define ACTIONS_PER_PACKAGE 40
#define TARGET_RATE 300000.0
#define TARGET_RSS_MIB 256.0

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) used so far: steadier than wall time on a
 * shared machine. */
static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double peak_rss_mib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

/* A distinct 64-hex string per seed, without printf (the benchmark should
 * time the store, not the data it makes up). */
static void hex_of(uint64_t seed, char out[TF_HASH_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	for (int w = 0; w < 4; w++) {
		uint64_t v = mix(seed * 4 + (uint64_t)w);
		for (int i = 15; i >= 0; i--, v >>= 4)
			out[16 * w + i] = digits[v & 15];
	}
	out[TF_HASH_HEX_LEN] = '\0';
}

static const char *const exts[OUTPUTS_PER_ACTION] = { ".pic.o", ".pic.d", ".h.processed", ".params" };

static int output_path(uint64_t action, unsigned slot, char *buf, size_t n)
{
	return snprintf(buf, n, "bazel-out/k8-fastbuild/bin/src/mod%04llu/obj_%06llu%s",
			(unsigned long long)(action / ACTIONS_PER_PACKAGE), (unsigned long long)action,
			exts[slot]);
}

static int fail(const char *what, const tf_error *e)
{
	fprintf(stderr, "bench_store: %s: %s\n", what, e->message);
	return 1;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static long long file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

/* A stride coprime with n: k * stride mod n visits every action once, in a
 * scattered order. */
static uint64_t pick_stride(uint64_t n)
{
	for (uint64_t st = 2654435761u % n;; st++) {
		uint64_t x = n, y = st, t;
		while (y) {
			t = x % y;
			x = y;
			y = t;
		}
		if (st > 0 && x == 1)
			return st;
	}
}

/* One pass over every action and its outputs. */
static int inject(st_store *s, uint64_t n_actions, uint64_t stride, bool shuffled, bool actions,
		  uint64_t salt, tf_error *e)
{
	char path[128], key[TF_HASH_HEX_LEN + 1], hash[TF_HASH_HEX_LEN + 1], label[64];

	for (uint64_t k = 0; k < n_actions; k++) {
		uint64_t a = shuffled ? (k * stride) % n_actions : k;
		int r;

		hex_of(a ^ 0x5a5a5a5a00000000ull, key);
		snprintf(label, sizeof(label), "//src/mod%04llu:lib_%llu",
			 (unsigned long long)(a / ACTIONS_PER_PACKAGE), (unsigned long long)(a % 7));
		if (actions && (r = st_action_put(s, key, label, e)) < 0)
			return r;
		for (unsigned slot = 0; slot < OUTPUTS_PER_ACTION; slot++) {
			uint64_t i = a * OUTPUTS_PER_ACTION + slot;
			st_output o;

			output_path(a, slot, path, sizeof(path));
			hex_of(i + salt, hash);
			memset(&o, 0, sizeof(o));
			o.path = path;
			o.hash = hash;
			o.size = 1 + (int64_t)(mix(i) % 1000000);
			o.kind = ST_KIND_FILE;
			o.executable = slot == 3;
			o.action_key = actions ? key : NULL;
			o.target = actions ? label : NULL;
			if ((r = st_output_put(s, &o, e)) < 0)
				return r;
		}
	}
	return st_flush(s, e);
}

int main(int argc, char **argv)
{
	uint64_t n = 1000000;
	const char *dir_arg = NULL;
	bool shuffled = true, check = false, actions = true;
	st_options opts;
	tf_error e = { 0 };
	char *dir = NULL, *db = NULL, *wal = NULL;
	int rc = 1;

	st_options_init(&opts);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			n = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir_arg = argv[++i];
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			opts.batch_ops = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--cache-mib") && i + 1 < argc)
			opts.cache_mib = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--order") && i + 1 < argc)
			shuffled = strcmp(argv[++i], "sorted") != 0;
		else if (!strcmp(argv[i], "--no-actions"))
			actions = false;
		else if (!strcmp(argv[i], "--check"))
			check = true;
		else {
			fprintf(stderr, "usage: %s [-n N] [--dir DIR] [--batch OPS] [--cache-mib MIB] "
					"[--order shuffled|sorted] [--no-actions] [--check]\n", argv[0]);
			return 2;
		}
	}
	uint64_t n_actions = (n + OUTPUTS_PER_ACTION - 1) / OUTPUTS_PER_ACTION;
	n = n_actions * OUTPUTS_PER_ACTION;
	if (n_actions == 0) {
		fprintf(stderr, "bench_store: -n must be at least 1\n");
		return 2;
	}

	const char *base = dir_arg ? dir_arg : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (asprintf(&dir, "%s/bench-store-XXXXXX", base) < 0 || !mkdtemp(dir)) {
		fprintf(stderr, "bench_store: cannot create a folder in %s: %s\n", base, strerror(errno));
		return 1;
	}
	if (asprintf(&db, "%s/store.db", dir) < 0 || asprintf(&wal, "%s/store.db-wal", dir) < 0)
		return 1;

	char sample[128];
	size_t path_bytes = 0;
	for (unsigned slot = 0; slot < OUTPUTS_PER_ACTION; slot++)
		path_bytes += (size_t)output_path(n_actions / 2, slot, sample, sizeof(sample));
	printf("store: %s\noutputs: %llu in %llu actions (%d each), %s order, paths ~%zu bytes "
	       "(e.g. %s)\nbatch: %u writes, cache: %u MiB\n",
	       db, (unsigned long long)n, (unsigned long long)n_actions, OUTPUTS_PER_ACTION,
	       shuffled ? "shuffled" : "sorted", path_bytes / OUTPUTS_PER_ACTION, sample,
	       opts.batch_ops, opts.cache_mib);

	uint64_t stride = pick_stride(n_actions);
	double t0 = now_s(), c0 = cpu_s();
	st_store *s = st_open(db, &opts, &e);
	if (!s) {
		rc = fail("open", &e);
		goto out;
	}
	uint64_t build;
	if (st_build_begin(s, &build, &e) < 0 || inject(s, n_actions, stride, shuffled, actions, 0, &e) < 0) {
		rc = fail("inject", &e);
		st_close(s);
		goto out;
	}
	double t1 = now_s(), c1 = cpu_s();
	double rate1 = (double)n / (t1 - t0), rss1 = peak_rss_mib();
	printf("inject (new outputs):       %8.3f s  %10.0f outputs/s  (%.3f s CPU, %.0f outputs/CPU-s)  "
	       "peak RSS %6.1f MiB  db %lld MiB + wal %lld MiB\n",
	       t1 - t0, rate1, c1 - c0, (double)n / (c1 - c0), rss1, file_size(db) >> 20,
	       file_size(wal) >> 20);

	/* The next build reports the same outputs again. */
	if (st_build_begin(s, &build, &e) < 0 || inject(s, n_actions, stride, shuffled, actions, 0, &e) < 0) {
		rc = fail("re-inject", &e);
		st_close(s);
		goto out;
	}
	double t2 = now_s(), c2 = cpu_s();
	printf("re-inject (same content):   %8.3f s  %10.0f outputs/s  (%.3f s CPU, %.0f outputs/CPU-s)  "
	       "peak RSS %6.1f MiB\n",
	       t2 - t1, (double)n / (t2 - t1), c2 - c1, (double)n / (c2 - c1), peak_rss_mib());

	/* Random point lookups. */
	st_record *rec = malloc(sizeof(*rec));
	uint64_t lookups = n < 200000 ? n : 200000;
	for (uint64_t k = 0; rec && k < lookups; k++) {
		uint64_t i = mix(k) % n;
		output_path(i / OUTPUTS_PER_ACTION, (unsigned)(i % OUTPUTS_PER_ACTION), sample,
			    sizeof(sample));
		if (st_output_get(s, sample, rec, &e) < 0) {
			free(rec);
			rc = fail("lookup", &e);
			st_close(s);
			goto out;
		}
	}
	free(rec);
	double t3 = now_s();
	printf("lookup by path:             %8.3f s  %10.0f lookups/s\n", t3 - t2,
	       (double)lookups / (t3 - t2));
	st_close(s);
	double t4 = now_s();
	printf("close (final checkpoint):   %8.3f s\nfile: %lld MiB (%.0f bytes/output)\n", t4 - t3,
	       file_size(db) >> 20, (double)file_size(db) / (double)n);
	double rss = peak_rss_mib();
	printf("peak RSS: %.1f MiB\n", rss);
	rc = 0;
	if (check && (rate1 < TARGET_RATE || rss > TARGET_RSS_MIB)) {
		printf("FAIL: targets are >= %.0f outputs/s and <= %.0f MiB peak RSS\n", TARGET_RATE,
		       TARGET_RSS_MIB);
		rc = 1;
	}
out:
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
	free(db);
	free(wal);
	return rc;
}
