/* Drives a tf_session the way a build tool would, for the session tests:
 *
 *   session_driver --remote_cache=URL|DIR --output_dir=DIR [--store=FILE]
 *     [--mode=toplevel|all|minimal] [--target=LABEL]... [--regex=RE]...
 *     [--actions=DIR]      report every file DIR/<key> as an executed action
 *     [--bep=FILE]         then post every event of this BEP stream
 *     [--bep_out=FILE] [--json_out=FILE] [--publish=URL] [--wait_for=FILE]
 *     [--report_store] [--check_lost=KEY]...
 *
 * --wait_for holds the first event until FILE exists (up to 60 s): the test
 * creates it once a subscriber on --publish is connected.
 *
 * --report_store prints, after the session ended, the outputs per state in
 * the store and how many of those it calls local are missing or differ on
 * disk (each re-hashed); --check_lost prints whether an action is lost.
 *
 * Prints one line per lost output ("lost: PATH action=KEY target=LABEL:
 * MESSAGE") and a last line with the statistics; exit 0 when nothing was lost
 * or failed, 1 otherwise, 2 on a setup error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "session/session.h"
#include "store/store.h"
#include "events/events.h"
#include "topfetch.h"

static void on_lost(const tf_lost_output *l, void *user)
{
	(void)user;
	printf("%s: %s action=%s target=%s: %s\n", tf_result_name(l->result), l->path,
	       l->action_key ? l->action_key : "-", l->target ? l->target : "-", l->message);
}

/* Reports every file below dir (one level of subfolders too: Bazel's disk
 * cache shards ac/ by the first two hex digits) as an executed action. */
/* Counts what the callbacks see, to check they fire. */
static unsigned long cb_files, cb_events;
static void on_file(const tf_fetch_done *d, void *user)
{
	(void)d;
	(void)user;
	cb_files++;
}
static void on_event(const void *ev, size_t len, void *user)
{
	(void)ev;
	(void)len;
	(void)user;
	cb_events++;
}

static int report_actions(tf_session *s, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	tf_error err = { 0 };
	int bad = 0;

	if (!d) {
		fprintf(stderr, "cannot open %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		char path[4096];
		struct stat sb;
		FILE *f;
		unsigned char *buf;
		long n;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			if (report_actions(s, path) < 0)
				bad++;
			continue;
		}
		f = fopen(path, "rb");
		if (!f)
			continue;
		fseek(f, 0, SEEK_END);
		n = ftell(f);
		fseek(f, 0, SEEK_SET);
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n &&
		    tf_session_action_executed(s, e->d_name, NULL, buf, (size_t)n, &err) < 0) {
			fprintf(stderr, "action %s: %s\n", e->d_name, err.message);
			bad++;
		}
		free(buf);
		fclose(f);
	}
	closedir(d);
	return bad ? -1 : 0;
}

static int post_bep(tf_session *s, const char *path)
{
	tf_error err = { 0 };
	ev_reader *r = ev_reader_new(path, NULL, &err);
	ev_event *ev;
	int rc;

	if (!r) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		rc = ses_post_event(s, ev, &err);
		ev_event_unref(ev);
		if (rc < 0)
			break;
		tf_session_dispatch(s, 0, &err);
	}
	if (rc == 0)
		rc = ev_reader_finish(r, &err);
	if (rc < 0)
		fprintf(stderr, "%s\n", err.message);
	ev_reader_free(r);
	return rc;
}

typedef struct census {
	int rootfd;
	uint64_t n[ST_STATE_COUNT], bad;
} census;

static int count_state(const st_output *o, void *user)
{
	census *c = user;
	c->n[o->state]++;
	if (o->state == ST_LOCAL && o->hash) {
		char cmd[8400], line[128] = "";
		FILE *p;
		snprintf(cmd, sizeof(cmd), "sha256sum < '/proc/self/fd/%d/%s' 2>/dev/null", c->rootfd, o->path);
		p = popen(cmd, "r");
		if (!p || !fgets(line, sizeof(line), p) || strncmp(line, o->hash, 64)) {
			printf("store: %s is local but missing or wrong on disk\n", o->path);
			c->bad++;
		}
		if (p)
			pclose(p);
	}
	return 0;
}

static int report_store(const char *path, const char *output_dir, const char **lost, size_t n_lost)
{
	tf_error err = { 0 };
	st_store *st = st_open(path, NULL, &err);
	census c = { .rootfd = open(output_dir, O_RDONLY | O_DIRECTORY) };

	if (!st) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	for (int k = 0; k < ST_STATE_COUNT; k++)
		st_outputs_by_state(st, (st_state)k, count_state, &c, &err);
	printf("store: remote=%llu fetching=%llu local=%llu lost=%llu local_bad=%llu\n",
	       (unsigned long long)c.n[ST_REMOTE], (unsigned long long)c.n[ST_FETCHING],
	       (unsigned long long)c.n[ST_LOCAL], (unsigned long long)c.n[ST_LOST], (unsigned long long)c.bad);
	for (size_t i = 0; i < n_lost; i++)
		printf("action %s lost: %d\n", lost[i], st_action_is_lost(st, lost[i], NULL));
	st_close(st);
	close(c.rootfd);
	return 0;
}

#define OPT(name) (!strncmp(argv[i], "--" name "=", strlen(name) + 3) ? argv[i] + strlen(name) + 3 : NULL)

int main(int argc, char **argv)
{
	tf_session_options o = { 0 };
	const char *targets[64], *regexes[16], *lost[16], *actions = NULL, *bep = NULL, *v;
	size_t nt = 0, nr = 0, nl = 0;
	bool report = false;
	const char *wait_for = NULL;
	int rc;
	tf_session_stats st;
	tf_error err = { 0 };
	tf_session *s;

	tf_remote_options_init(&o.remote);
	o.remote.remote_retries = 1;
	o.on_lost = on_lost;
	o.on_file = on_file;
	o.on_event = on_event;
	for (int i = 1; i < argc; i++) {
		if ((v = OPT("remote_cache")))
			o.remote.remote_cache = v;
		else if ((v = OPT("output_dir")))
			o.output_dir = v;
		else if ((v = OPT("store")))
			o.store_path = v;
		else if ((v = OPT("mode"))) {
			if (tf_download_mode_parse(v, &o.policy.mode) < 0)
				return 2;
		} else if ((v = OPT("target")) && nt < 64)
			targets[nt++] = v;
		else if ((v = OPT("regex")) && nr < 16)
			regexes[nr++] = v;
		else if ((v = OPT("actions")))
			actions = v;
		else if ((v = OPT("bep")))
			bep = v;
		else if ((v = OPT("bep_out")))
			o.build_event_binary_file = v;
		else if ((v = OPT("json_out")))
			o.build_event_json_file = v;
		else if ((v = OPT("publish")))
			o.build_event_publish = v;
		else if ((v = OPT("wait_for")))
			wait_for = v;
		else if ((v = OPT("check_lost")) && nl < 16)
			lost[nl++] = v;
		else if (!strcmp(argv[i], "--report_store"))
			report = true;
		else {
			fprintf(stderr, "unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	o.policy.targets = targets;
	o.policy.n_targets = nt;
	o.policy.regexes = regexes;
	o.policy.n_regexes = nr;
	s = tf_session_new(&o, &err);
	if (!s) {
		fprintf(stderr, "session: %s\n", err.message);
		return 2;
	}
	for (int waited_ms = 0; wait_for && access(wait_for, F_OK) != 0; waited_ms += 5) {
		if (waited_ms >= 60000) {
			fprintf(stderr, "session_driver: %s did not appear within 60 s\n", wait_for);
			tf_session_free(s);
			return 2;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 5000000L }, NULL);
	}
	rc = 0;
	if (actions && report_actions(s, actions) < 0)
		rc = 2;
	if (rc == 0 && bep && post_bep(s, bep) < 0)
		rc = 3;
	if (tf_session_finish(s, &st, &err) < 0) {
		fprintf(stderr, "finish: %s\n", err.message);
		rc = rc ? rc : 2;
	}
	printf("stats: actions=%llu injected=%llu wanted=%llu fetched=%llu present=%llu bytes=%llu lost=%llu "
	       "failed=%llu targets=%llu targets_failed=%llu events=%llu recovered=%llu\n",
	       (unsigned long long)st.actions, (unsigned long long)st.outputs_injected,
	       (unsigned long long)st.files_wanted, (unsigned long long)st.files_fetched,
	       (unsigned long long)st.files_present, (unsigned long long)st.bytes_fetched,
	       (unsigned long long)st.lost, (unsigned long long)st.failed,
	       (unsigned long long)st.targets_completed, (unsigned long long)st.targets_failed,
	       (unsigned long long)st.events_written, (unsigned long long)st.recovered);
	printf("callbacks: files=%lu events=%lu\n", cb_files, cb_events);
	if (rc == 0 && (st.lost || st.failed))
		rc = 1;
	tf_session_free(s);
	if (report && o.store_path && report_store(o.store_path, o.output_dir, lost, nl) < 0)
		rc = 2;
	return rc;
}
