/* A session is one build: the only place that calls checker -> downloader
 * -> gate.
 *
 * Sources report executed actions (their ActionResult) and build events.
 * For every output of every action the metadata goes into the store,
 * downloaded or not, and what the policy wants right away is fetched. When a
 * TargetComplete arrives its files become top-level: those not on disk are
 * fetched (from metadata recorded now or in an earlier build), and the gate
 * holds the event until the session has told it each file is settled.
 * Every decision is reported through on_decision. Everything runs in the
 * caller's thread; the downloader's completions come back through dispatch. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checker/checker.h"
#include "downloader/downloader.h"
#include "events/events.h"
#include "session/session.h"
#include "session/synth.h"
#include "store/store.h"

#define TREE_MAX_BYTES (64u << 20)
#define MAX_TARGETS 1000000u /* TargetComplete events of one build (each holds its event and sets) */
#define FOREIGN_GRACE_NS 2000000000ull /* results this long before a followed build started are another's */

/* A target (its gate ticket) waiting for a file or a Tree. */
typedef struct waiter {
	struct waiter *next;
	uint64_t t;
} waiter;

/* One wanted output, in flight or settled, by destination. */
typedef struct want {
	char *dest; /* where it lands below output_dir (the map key) */
	char *path; /* exec-root-relative path (the store's key) */
	tf_digest digest;
	bool executable;
	st_kind kind;
	enum { W_FETCHING, W_DONE, W_FAILED } state;
	char *failure; /* W_FAILED: why */
	char *label;   /* a target that wanted it (for messages), or NULL */
	waiter *waiters;
	bool by_target; /* a completed target named it */
	char *conflict; /* targets named it with two digests in this build: why */
} want;

/* Outputs of one ActionResult on their way to the store, SES_PUT_ROWS at a
 * time (copies of what chk_action_each reported). */
#define SES_PUT_ROWS 256
typedef struct ses_puts {
	size_t n;
	chk_output out[SES_PUT_ROWS];
	st_output o[SES_PUT_ROWS];
} ses_puts;

/* A directory output whose Tree is being read. */
typedef struct tree_read {
	tf_session *s;
	char *dir;       /* exec path of the directory */
	char hash[TF_HASH_HEX_LEN + 1];
	char *action_key, *label;
	bool fetch_all;  /* the policy wants every file now */
	waiter *waiters; /* targets that want the whole directory */
} tree_read;

struct tf_session {
	tf_session_options o;
	tf__map succeeded; /* TargetComplete events (by pointer) Bazel posted successful, until emitted */
	/* Work budget of the Trees of one ActionResult: action key -> entries
	 * left (malloc'd size_t); directory -> entries it counted (+1). */
	tf__map tree_budget, tree_counted;
	size_t targets_seen, max_targets; /* TargetComplete events of this build; the cap */
	char *output_dir, *store_path, *tmp_dir;
	chk_policy policy;
	st_store *store;
	tf_downloader *dl;
	int rootfd;
	ev_sets *sets;
	ev_gate *gate;
	ev_writer *bin, *json;
	ev_pub *pub;
	tf__map wants;       /* exec path -> want */
	tf__map trees;       /* exec dir path -> tree_read (in flight) */
	size_t reads_in_flight;
	tf_session_stats stats;
	int sticky;          /* first sink/store error */
	tf_error sticky_err;
	char *bep_path;      /* followed BEP file ("-": stdin), until complete */
	ev_reader *bep;
	/* tf_session_fd: an epoll set of the downloader's fd and, when a BEP
	 * file is followed, an inotify fd that is readable once the file was
	 * written, created or replaced (-1 without inotify: the caller's poll
	 * timeout paces the reading then). */
	int wfd, ino, ino_dir;
	const char *bep_base; /* the followed file's name in its folder (in bep_path) */
	/* tf_session_follow_builds: one build after another in bep_path. */
	bool series;
	int64_t not_before_ms;
	char uuid[128];      /* the current build's BuildStarted uuid; "" between builds */
	char done_uuid[128]; /* the last build that ended */
	char noted_uuid[128]; /* the last earlier build said not to be followed */
	struct stat cur;     /* bep_path as it was when the current build was taken */
	struct stat probed;  /* bep_path when last found to hold no new build */
	struct stat initial; /* bep_path when the following began (had_file) */
	bool had_file;
	bool have_probed;
	uint64_t builds_done;
	tf_error unreadable; /* the current build's BEP cannot be read further */
	uint64_t orphan_since_ns; /* an ActionResult passed while no followed build was current */
	uint64_t foreign;         /* of which were not the next followed build's own */
	ev_writer *dir_bin, *dir_json; /* build_event_dir/<uuid>.bin, .json */
	ses_synth *synth;    /* a synthesized build's bookkeeping (synth.c) */
	ses_puts *puts;      /* tf_session_action_executed's outputs in flight */
	bool must_commit;    /* this call queued a fetch or a Tree read: commit before it returns */
	uint64_t synth_posted;       /* events posted for it */
	uint64_t synth_written_base; /* events_written when it started */
};

static void note_error(tf_session *s, int r, const tf_error *e)
{
	if (r < 0 && !s->sticky) {
		s->sticky = r;
		s->sticky_err = *e;
	}
}

/* Commits what the session recorded, so that a kill -9 right after it loses
 * nothing: the metadata, and the FETCHING marks recovery re-queues. Every
 * call does this before it returns except tf_session_action_executed, which
 * leaves its rows to a later commit (below) unless it queued a fetch or a
 * Tree read; and an event is never released before it (emit). */
static int commit(tf_session *s, int r, tf_error *err)
{
	tf_error e = { 0 };
	int f;

	s->must_commit = false;
	if (!st_pending(s->store))
		return r;
	f = st_flush(s->store, &e);
	if (f < 0) {
		note_error(s, f, &e);
		if (r >= 0) {
			if (err)
				*err = e;
			return f;
		}
	}
	return r;
}

/* ---- sinks ------------------------------------------------------------------ */

static int emit(ev_event *ev, void *user, tf_error *err)
{
	tf_session *s = user;
	int r = 0;

	/* Whoever reads the event may rely on what the store says about its
	 * files: nothing leaves before the rows it could depend on are durable. */
	if ((r = commit(s, 0, err)) < 0)
		return r;
	if (s->bin && (r = ev_writer_write(s->bin, ev->msg, err)) < 0)
		return r;
	if (s->json && (r = ev_writer_write(s->json, ev->msg, err)) < 0)
		return r;
	if (s->dir_bin && (r = ev_writer_write(s->dir_bin, ev->msg, err)) < 0)
		return r;
	if (s->dir_json && (r = ev_writer_write(s->dir_json, ev->msg, err)) < 0)
		return r;
	if (s->pub && (r = ev_pub_send(s->pub, ev->msg, err)) < 0)
		return r;
	if (s->o.on_event) {
		size_t n = protobuf_c_message_get_packed_size(&ev->msg->base);
		unsigned char *buf = malloc(n ? n : 1);
		if (!buf)
			return tf__errf(err, -ENOMEM, "out of memory");
		protobuf_c_message_pack(&ev->msg->base, buf);
		s->o.on_event(buf, n, s->o.user);
		free(buf);
	}
	if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED &&
	    tf__map_removen(&s->succeeded, &ev, sizeof(ev)) && !ev->msg->completed->success &&
	    s->o.on_target_failed) {
		/* Bazel said success; the gate failed it. */
		const BuildEventStream__TargetComplete *tc = ev->msg->completed;
		const char *label = ev->msg->id && ev->msg->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED &&
					    ev->msg->id->target_completed->label
				    ? ev->msg->id->target_completed->label
				    : "(unknown)";
		s->o.on_target_failed(label,
				      tc->failure_detail && tc->failure_detail->message ? tc->failure_detail->message
											: "its outputs could not be fetched",
				      s->o.user);
	}
	/* Subscribers and file readers see a completed target at once. */
	if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED ||
	    ev->msg->last_message) {
		if (s->bin && (r = ev_writer_flush(s->bin, err)) < 0)
			return r;
		if (s->json && (r = ev_writer_flush(s->json, err)) < 0)
			return r;
		if (s->dir_bin && (r = ev_writer_flush(s->dir_bin, err)) < 0)
			return r;
		if (s->dir_json && (r = ev_writer_flush(s->dir_json, err)) < 0)
			return r;
	}
	s->stats.events_written++;
	return 0;
}

/* ---- paths ------------------------------------------------------------------------ */

/* bytestream://host[:port][/instance]/blobs/HASH/SIZE -> digest. */
static bool parse_bytestream(const char *uri, tf_digest *out)
{
	const char *b;
	char hash[TF_HASH_HEX_LEN + 1];
	char *end;
	long long size;

	if (strncmp(uri, "bytestream://", 13))
		return false;
	b = strstr(uri + 13, "/blobs/");
	if (!b)
		return false;
	b += 7;
	if (strlen(b) < TF_HASH_HEX_LEN + 2 || b[TF_HASH_HEX_LEN] != '/')
		return false;
	memcpy(hash, b, TF_HASH_HEX_LEN);
	hash[TF_HASH_HEX_LEN] = '\0';
	size = strtoll(b + TF_HASH_HEX_LEN + 1, &end, 10);
	return *end == '\0' && tf_digest_parse(hash, size, out, NULL) == 0;
}

/* ---- targets ---------------------------------------------------------------------- */

/* A failure for target t (its gate ticket) that no wait stands for. */
static void target_fail(tf_session *s, uint64_t t, const char *why)
{
	tf_error err = { 0 };
	int r = ev_gate_target_wait(s->gate, t, &err);

	if (r == 0)
		r = ev_gate_target_settled(s->gate, t, why, &err);
	note_error(s, r, &err);
}

/* One thing t waited for is settled: in place (why NULL) or not. */
static void target_settled(tf_session *s, uint64_t t, const char *why)
{
	tf_error err = { 0 };

	note_error(s, ev_gate_target_settled(s->gate, t, why, &err), &err);
}

/* Reads the store's record of path: 1 found, 0 none, or a store failure
 * (kept as the session's error, so it is never taken for "unknown"). */
static int lookup(tf_session *s, const char *path, st_record *rec)
{
	tf_error err = { 0 };
	int r = st_output_get(s->store, path, rec, &err);

	if (r == 0)
		return 1;
	if (r == -ENOENT)
		return 0;
	note_error(s, r, &err);
	return r;
}

/* Hands a decision to the caller. */
static void decide(tf_session *s, const tf_decision *d)
{
	if (s->o.on_decision)
		s->o.on_decision(d, s->o.user);
}

/* ---- wanting files ------------------------------------------------------------------ */

static void on_fetched(const tf_fetch_done *d, void *user);

static void want_settle(tf_session *s, want *w)
{
	waiter *list = w->waiters;
	w->waiters = NULL;
	while (list) {
		waiter *n = list->next;
		target_settled(s, list->t, w->state == W_FAILED ? w->failure : NULL);
		free(list);
		list = n;
	}
}

/* Target t (a gate ticket) waits for what list belongs to. */
static void add_waiter(tf_session *s, waiter **list, uint64_t t)
{
	waiter *x = malloc(sizeof(*x));
	tf_error err = { 0 };

	if (!x) {
		target_fail(s, t, "out of memory");
		return;
	}
	if (ev_gate_target_wait(s->gate, t, &err) < 0) {
		free(x);
		note_error(s, err.code, &err);
		return;
	}
	x->t = t;
	x->next = *list;
	*list = x;
}

/* Where an output lands: its exec-root-relative path, or with short_paths
 * that path without Bazel's bazel-out/<config>/<bin|genfiles>/ prefix. */
static const char *dest_of(const tf_session *s, const char *path)
{
	const char *p = path;
	if (!s->o.short_paths || strncmp(path, "bazel-out/", 10))
		return path;
	for (int i = 0; i < 3 && p; i++) {
		p = strchr(p, '/');
		if (p)
			p++;
	}
	return p && *p ? p : path;
}

/* Completed targets of one build name one exec path with two digests (or
 * modes): one blob would silently win and a target would be posted
 * successful with another's file. Neither is: t and every target waiting
 * for w fail naming the path and both digests; later ones naming the path
 * fail too. What is already in place stays as it is (never overwritten). */
static void target_conflict(tf_session *s, want *w, const tf_digest *dg, bool exec, uint64_t t)
{
	char why[TF__PATH_MAX + 512];
	waiter *list;

	if (!w->conflict) {
		snprintf(why, sizeof(why),
			 "%s is named with two different contents in this build: %s/%lld%s and %s/%lld%s; "
			 "topfetch keeps neither target successful (check the build for two rules writing "
			 "one output)",
			 w->path, w->digest.hash, (long long)w->digest.size, w->executable ? " (executable)" : "",
			 dg->hash, (long long)dg->size, exec ? " (executable)" : "");
		w->conflict = strdup(why);
		s->stats.conflicts++;
		list = w->waiters;
		w->waiters = NULL;
		while (list) {
			waiter *n = list->next;
			target_settled(s, list->t, w->conflict ? w->conflict : why);
			free(list);
			list = n;
		}
	}
	target_fail(s, t, w->conflict ? w->conflict : why);
}

/* Wants the output at path (file or tree file) in place; target t (a gate
 * ticket, 0 for none) waits for it. label: the target it is for, when known
 * (named in a lost-file report). */
static void want_file(tf_session *s, const char *path, const tf_digest *dg, bool exec, uint64_t t,
		      const char *label)
{
	const char *dest = dest_of(s, path);
	bool exec_layout = !s->o.short_paths;
	want *w = tf__map_get(&s->wants, dest);
	st_record rec;
	tf_error err = { 0 };
	int r;

	if (t && w && !strcmp(w->path, path) &&
	    (w->conflict || (w->by_target && (strcmp(w->digest.hash, dg->hash) || w->executable != exec)))) {
		target_conflict(s, w, dg, exec, t);
		return;
	}
	/* The digest a named set naming this file will carry. */
	if (t && (r = ev_gate_file_digest(s->gate, path, dg, &err)) < 0)
		note_error(s, r, &err);
	if (w && strcmp(w->path, path) &&
	    (strcmp(w->digest.hash, dg->hash) || w->executable != exec)) {
		/* Two different outputs would land on one short path: never
		 * overwrite one with the other silently. */
		char why[2 * TF__PATH_MAX + 256];
		snprintf(why, sizeof(why), "%s and %s differ (%s, %s) but both would land at %s; use --keep_path_prefix",
			 w->path, path, w->digest.hash, dg->hash, dest);
		s->stats.conflicts++;
		if (t)
			target_fail(s, t, why);
		return;
	}
	if (w && !strcmp(w->digest.hash, dg->hash) && w->executable == exec) {
		if (w->state == W_FETCHING) {
			if (t)
				add_waiter(s, &w->waiters, t);
			return;
		}
		if (w->state == W_FAILED) {
			if (t)
				target_fail(s, t, w->failure);
			return;
		}
		/* Done before: check the file is still ours below. */
	}
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (!w || !(w->path = strdup(path)) || !(w->dest = strdup(dest)) ||
		    tf__map_put(&s->wants, dest, w) < 0) {
			if (w) {
				free(w->path);
				free(w->dest);
			}
			free(w);
			if (t)
				target_fail(s, t, "out of memory");
			return;
		}
		s->stats.files_wanted++;
	}
	w->digest = *dg;
	w->executable = exec;
	if (label && !w->label)
		w->label = strdup(label); /* only for messages: out of memory leaves it unnamed */
	w->by_target |= t != 0;
	free(w->failure);
	w->failure = NULL;
	/* Already on disk as we wrote it: nothing to fetch. (With short paths
	 * the store does not describe this folder; the downloader still skips a
	 * file that is already there with the right digest.) */
	if (exec_layout && lookup(s, path, &rec) == 1 && rec.o.state == ST_LOCAL && rec.o.hash &&
	    !strcmp(rec.o.hash, dg->hash)) {
		r = st_output_check_local(s->store, s->rootfd, path, &err);
		if (r == ST_CHECK_SAME) {
			w->state = W_DONE;
			s->stats.files_present++;
			return;
		}
		if (r < 0)
			note_error(s, r, &err);
	}
	w->state = W_FETCHING;
	if (t)
		add_waiter(s, &w->waiters, t);
	if (exec_layout) {
		r = st_output_set_state(s->store, path, ST_FETCHING, NULL, NULL, &err);
		if (r < 0 && r != -ENOENT)
			note_error(s, r, &err);
	}
	s->must_commit = true;
	r = tf_downloader_fetch(s->dl, dg, exec, dest, on_fetched, s);
	while (r == -EAGAIN) {
		tf_downloader_dispatch(s->dl, 10);
		r = tf_downloader_fetch(s->dl, dg, exec, dest, on_fetched, s);
	}
	if (r < 0) {
		w->state = W_FAILED;
		w->failure = strdup("cannot queue the fetch");
		want_settle(s, w);
	}
}

static void report_lost(tf_session *s, const tf_fetch_done *d, const want *w, const st_record *rec)
{
	tf_lost_output lo = {
		.result = d->result,
		.path = w->path,
		.digest = d->digest,
		.action_key = rec && rec->o.action_key ? rec->o.action_key : NULL,
		.target = rec && rec->o.target ? rec->o.target : w->label,
		.message = d->message,
	};
	if (s->o.on_lost)
		s->o.on_lost(&lo, s->o.user);
}

static void on_fetched(const tf_fetch_done *d, void *user)
{
	tf_session *s = user;
	want *w = tf__map_get(&s->wants, d->path);
	tf_error err = { 0 };
	st_record rec;
	bool have_rec;
	int r;

	if (!w || strcmp(w->digest.hash, d->digest.hash))
		return; /* superseded by a newer digest for the path */
	if (s->o.on_file)
		s->o.on_file(d, s->o.user);
	have_rec = lookup(s, w->path, &rec) == 1;
	if (d->result == TF_RESULT_OK) {
		struct stat sb;
		st_local loc;
		if (!s->o.short_paths && fstatat(s->rootfd, d->path, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
			st_local_from_stat(&sb, &loc);
			if (!have_rec) {
				st_output o = { .path = w->path, .hash = d->digest.hash, .size = d->digest.size,
						.executable = w->executable, .kind = w->kind };
				r = st_output_put(s->store, &o, &err);
				note_error(s, r, &err);
			}
			r = st_output_set_state(s->store, w->path, ST_LOCAL, &loc, d->digest.hash, &err);
			if (r < 0 && r != -ESTALE)
				note_error(s, r, &err);
		}
		if (d->already_present)
			s->stats.files_present++;
		else
			s->stats.files_fetched++;
		s->stats.bytes_fetched += d->transferred ? (uint64_t)d->digest.size : 0;
		w->state = W_DONE;
	} else {
		char why[TF_ERROR_MESSAGE_MAX + 512];
		if (d->result == TF_RESULT_LOST) {
			s->stats.lost++;
			if (have_rec && (r = st_output_mark_lost(s->store, w->path, &rec, &err)) < 0)
				note_error(s, r, &err);
		} else {
			s->stats.failed++;
			if (have_rec && !s->o.short_paths &&
			    (r = st_output_set_state(s->store, w->path, ST_REMOTE, NULL, NULL, &err)) < 0 && r != -ENOENT)
				note_error(s, r, &err);
		}
		snprintf(why, sizeof(why), "%s %s (%s/%lld, produced by action %s of %s): %s",
			 tf_result_name(d->result), w->path, d->digest.hash, (long long)d->digest.size,
			 have_rec && rec.o.action_key ? rec.o.action_key : "(unknown)",
			 have_rec && rec.o.target ? rec.o.target : "(unknown target)", d->message);
		w->state = W_FAILED;
		w->failure = strdup(why);
		report_lost(s, d, w, have_rec ? &rec : NULL);
	}
	want_settle(s, w);
}

/* ---- directory outputs ------------------------------------------------------------- */

typedef struct tree_ctx {
	tf_session *s;
	tree_read *tr;
	tf_error *err;
	size_t entries; /* reported so far */
} tree_ctx;

static int on_tree_entry(const chk_tree_entry *e, void *user)
{
	tree_ctx *c = user;
	tf_session *s = c->s;
	st_output o = { .path = e->path, .action_key = c->tr->action_key, .target = c->tr->label };
	int r;

	c->entries++;
	if (e->kind == CHK_ENTRY_SYMLINK) {
		o.kind = ST_KIND_SYMLINK;
		o.symlink_target = e->symlink_target;
	} else {
		o.kind = ST_KIND_TREE_FILE;
		o.hash = e->digest.hash;
		o.size = e->digest.size;
		o.executable = e->executable;
	}
	r = st_output_put(s->store, &o, c->err);
	if (r < 0)
		return r;
	s->stats.outputs_injected++;
	if (e->kind != CHK_ENTRY_FILE)
		return 0;
	if (c->tr->fetch_all || chk_policy_fetch_on_execution(&s->policy, e->path))
		want_file(s, e->path, &e->digest, e->executable, 0, c->tr->label);
	if (chk_policy_file_wanted(&s->policy, e->path))
		for (waiter *w = c->tr->waiters; w; w = w->next)
			want_file(s, e->path, &e->digest, e->executable, w->t, c->tr->label);
	return 0;
}

static void tree_read_free(tree_read *tr)
{
	if (!tr)
		return;
	free(tr->dir);
	free(tr->action_key);
	free(tr->label);
	free(tr);
}

static void on_tree(const tf_fetch_done *d, void *user)
{
	tree_read *tr = user;
	tf_session *s = tr->s;
	tf_error err = { 0 }, serr = { 0 };
	tree_ctx c = { s, tr, &err, 0 };
	waiter *list;
	int r, m;

	s->reads_in_flight--;
	tf__map_remove(&s->trees, tr->dir);
	if (d->result == TF_RESULT_OK) {
		size_t *left = tr->action_key ? tf__map_get(&s->tree_budget, tr->action_key) : NULL;
		size_t before = (size_t)(uintptr_t)tf__map_get(&s->tree_counted, tr->dir);
		size_t allowed = CHK_TREE_MAX_ENTRIES, counted = 0;
		char whose[TF_HASH_HEX_LEN + 64];

		if (tr->action_key && !left && (left = malloc(sizeof(*left)))) {
			*left = CHK_TREE_MAX_ENTRIES;
			if (tf__map_put(&s->tree_budget, tr->action_key, left) < 0) {
				free(left);
				left = NULL;
			}
		}
		if (left) /* a directory read again (a target's, after its action's) counts once */
			allowed = *left + (before ? before - 1 : 0);
		snprintf(whose, sizeof(whose), "the ActionResult of action %.64s",
			 tr->action_key ? tr->action_key : "");
		r = chk_tree_walk_budget(d->data, d->len, tr->hash, tr->dir, allowed, whose, on_tree_entry, &c,
					 &counted, &err);
		if (r == 0 && left && tf__map_put(&s->tree_counted, tr->dir, (void *)(uintptr_t)(counted + 1)) == 0)
			*left = allowed - counted;
		if (r < 0) {
			/* A Tree refused (hostile or broken): never dropped silently,
			 * whether a target waits for it or the policy (all, a regex)
			 * wanted it. */
			tf_lost_output lo = { .result = TF_RESULT_CORRUPT, .path = tr->dir, .digest = d->digest,
					      .action_key = tr->action_key, .target = tr->label,
					      .message = err.message };
			s->stats.failed++;
			if (s->o.on_lost)
				s->o.on_lost(&lo, s->o.user);
		}
	} else {
		tf_lost_output lo = { .result = d->result, .path = tr->dir, .digest = d->digest,
				      .action_key = tr->action_key, .target = tr->label, .message = d->message };
		r = -EIO;
		snprintf(err.message, sizeof(err.message), "tree of %s: %s", tr->dir, d->message);
		if (d->result == TF_RESULT_LOST && tr->action_key &&
		    (m = st_action_mark_lost(s->store, tr->action_key, &serr)) < 0)
			note_error(s, m, &serr);
		if (d->result == TF_RESULT_LOST)
			s->stats.lost++;
		else
			s->stats.failed++;
		if (s->o.on_lost)
			s->o.on_lost(&lo, s->o.user);
	}
	list = tr->waiters;
	tr->waiters = NULL;
	while (list) {
		waiter *n = list->next;
		target_settled(s, list->t, r < 0 ? err.message : NULL);
		free(list);
		list = n;
	}
	tree_read_free(tr);
}

/* Reads the Tree of directory output dir (hash/size), then records its files
 * and fetches what is wanted; t (may be NULL) wants every file of it. */
static void read_tree(tf_session *s, const char *dir, const tf_digest *tree, const char *action_key,
		      const char *label, bool fetch_all, uint64_t t)
{
	tree_read *tr = tf__map_get(&s->trees, dir);
	int r;

	if (tr && !strcmp(tr->hash, tree->hash)) {
		tr->fetch_all |= fetch_all;
		if (t)
			add_waiter(s, &tr->waiters, t);
		return;
	}
	tr = calloc(1, sizeof(*tr));
	if (!tr || !(tr->dir = strdup(dir)) || (action_key && !(tr->action_key = strdup(action_key))) ||
	    (label && !(tr->label = strdup(label))) || tf__map_put(&s->trees, dir, tr) < 0) {
		tree_read_free(tr);
		if (t)
			target_fail(s, t, "out of memory");
		return;
	}
	tr->s = s;
	memcpy(tr->hash, tree->hash, sizeof(tr->hash));
	tr->fetch_all = fetch_all;
	if (t)
		add_waiter(s, &tr->waiters, t);
	s->must_commit = true;
	r = tf_downloader_read(s->dl, TF_AREA_CAS, tree->hash, tree->size, TREE_MAX_BYTES, on_tree, tr);
	if (r < 0) {
		tf_fetch_done fake = { .result = TF_RESULT_LOCAL, .message = "cannot queue the tree read" };
		s->reads_in_flight++;
		on_tree(&fake, tr);
		return;
	}
	s->reads_in_flight++;
}

/* ---- executed actions ------------------------------------------------------------- */

static int put_output(tf_session *s, const st_output *o, tf_error *err)
{
	int r = st_output_put(s->store, o, err);
	if (r == 0)
		s->stats.outputs_injected++;
	return r;
}

/* Acts on the decision about one output of an executed action, once it is
 * recorded. */
static void act_on_output(tf_session *s, const chk_output *out)
{
	const st_output *o = &out->o;
	tf_decision d = {
		.kind = o->kind == ST_KIND_DIRECTORY ? TF_DECISION_DIRECTORY
			: o->kind == ST_KIND_SYMLINK ? TF_DECISION_SYMLINK : TF_DECISION_FILE,
		.action_key = o->action_key, .target = o->target, .path = o->path, .digest = out->digest,
		.executable = o->executable, .symlink_target = o->symlink_target, .wanted = out->wanted,
		.reason = out->reason,
	};

	decide(s, &d);
	if (o->kind == ST_KIND_FILE && out->wanted)
		want_file(s, o->path, &out->digest, o->executable, 0, o->target);
	/* The Tree is small: read it now, so every file of the directory is
	 * known by path and digest whether or not it is fetched. */
	if (o->kind == ST_KIND_DIRECTORY)
		read_tree(s, o->path, &out->digest, o->action_key, o->target, out->wanted, 0);
}

/* Records the outputs gathered so far in one st_outputs_put (the store
 * writes them in groups, far cheaper than one by one), then acts on each. */
static int put_outputs(tf_session *s, tf_error *err)
{
	ses_puts *p = s->puts;
	size_t n = p->n;
	int r;

	p->n = 0;
	for (size_t i = 0; i < n; i++) {
		p->o[i] = p->out[i].o;
		if (p->o[i].hash) /* it pointed into the callback's copy */
			p->o[i].hash = p->out[i].digest.hash;
	}
	if ((r = st_outputs_put(s->store, p->o, n, err)) < 0)
		return r;
	s->stats.outputs_injected += n;
	for (size_t i = 0; i < n; i++)
		act_on_output(s, &p->out[i]);
	return 0;
}

/* Gathers one output of an executed action (its strings stay valid until
 * the action is freed). */
static int on_action_output(const chk_output *out, void *user, tf_error *err)
{
	tf_session *s = user;
	ses_puts *p = s->puts;

	p->out[p->n++] = *out;
	return p->n == SES_PUT_ROWS ? put_outputs(s, err) : 0;
}

int tf_session_action_executed(tf_session *s, const char *action_key, const char *target_label,
			       const void *bytes, size_t len, tf_error *err)
{
	chk_action *a;
	int r;

	if (!s->puts && !(s->puts = calloc(1, sizeof(*s->puts))))
		return tf__errf(err, -ENOMEM, "out of memory");
	r = chk_action_decode(action_key, bytes, len, &a, err);
	if (r < 0)
		return r;
	s->stats.actions++;
	if (s->series && !s->bep && !s->orphan_since_ns)
		s->orphan_since_ns = tf__now_ns();
	r = st_action_put(s->store, action_key, target_label, err);
	if (r == 0)
		r = st_action_clear_lost(s->store, action_key, err);
	s->puts->n = 0;
	if (r == 0)
		r = chk_action_each(a, &s->policy, target_label, on_action_output, s, err);
	if (r == 0 && s->puts->n)
		r = put_outputs(s, err);
	chk_action_free(a);
	/* Coalesced: the rows of ActionResults that started nothing wait for
	 * the next commit, up to TF_SESSION_UNCOMMITTED_MAX writes (a commit
	 * writes every page it dirtied, about 26 of 32 KiB per ActionResult of
	 * 1,000 outputs: committing every call took about a fifth of the CPU
	 * time of injecting). They are committed before a fetch or Tree read
	 * is queued, an event is released, or any other call returns. */
	if (s->must_commit || r < 0 || st_pending(s->store) >= TF_SESSION_UNCOMMITTED_MAX)
		return commit(s, r, err);
	return r;
}

int tf_session_commit(tf_session *s, tf_error *err)
{
	return commit(s, 0, err);
}

/* ---- build events ------------------------------------------------------------------- */

/* Tells the gate the digest of a file a completed target names, for its
 * named set, when the event does not carry one and the store knows it. */
static void note_digest(tf_session *s, const char *path, const st_record *rec)
{
	tf_digest dg;
	tf_error err = { 0 };
	int r;

	if (!rec->o.hash || (rec->o.kind != ST_KIND_FILE && rec->o.kind != ST_KIND_TREE_FILE))
		return;
	if ((r = tf_digest_parse(rec->o.hash, rec->o.size, &dg, &err)) < 0 ||
	    (r = ev_gate_file_digest(s->gate, path, &dg, &err)) < 0)
		note_error(s, r, &err);
}

/* The digest of a store record, or a failure for t naming the path. */
static bool record_digest(tf_session *s, uint64_t t, const char *path, const st_record *rec, tf_digest *dg)
{
	tf_error err = { 0 };
	char why[TF__PATH_MAX + TF_ERROR_MESSAGE_MAX + 64];

	if (rec->o.hash && tf_digest_parse(rec->o.hash, rec->o.size, dg, &err) == 0)
		return true;
	snprintf(why, sizeof(why), "the store's record of %s has no usable digest: %s", path,
		 rec->o.hash ? err.message : "none");
	target_fail(s, t, why);
	return false;
}

/* Decides about one file a completed target names in group, and wants it
 * when it is wanted (t is the target's gate ticket, 0 when not waited for). */
/* A wanted file of a completed target that no executed action reported (a
 * local action Bazel does not cache): copied from Bazel's own output tree
 * through the event's file:// URI, hashed while copied, recorded. false when
 * the file exists nowhere (the caller reports it). */
static bool copy_local(tf_session *s, uint64_t t, const char *path, char *src)
{
	tf_digest dg = { .hash = "" };
	tf_error err = { 0 };
	struct stat sb;
	bool exec = false;
	int r;

	if (!src)
		return false;
	r = ses_copy_local(src, s->rootfd, dest_of(s, path), &exec, &dg, &err);
	free(src);
	if (r == -ENOENT)
		return false;
	s->stats.files_wanted++;
	if (r < 0) {
		s->stats.failed++;
		if (t)
			target_fail(s, t, err.message);
		return true;
	}
	s->stats.files_fetched++;
	s->stats.bytes_fetched += (uint64_t)dg.size;
	if (t && (r = ev_gate_file_digest(s->gate, path, &dg, &err)) < 0)
		note_error(s, r, &err);
	if (!s->o.short_paths) {
		st_output o = { .path = path, .hash = dg.hash, .size = dg.size, .executable = exec, .kind = ST_KIND_FILE };
		st_local loc;
		if (put_output(s, &o, &err) < 0)
			note_error(s, err.code ? err.code : -EIO, &err);
		else if (fstatat(s->rootfd, path, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
			st_local_from_stat(&sb, &loc);
			if ((r = st_output_set_state(s->store, path, ST_LOCAL, &loc, dg.hash, &err)) < 0)
				note_error(s, r, &err);
		}
	}
	return true;
}

static void target_file(tf_session *s, uint64_t t, const char *label, bool target_wanted, const char *group,
			const BuildEventStream__File *f)
{
	char *path = ev_file_exec_path(f);
	st_record rec;
	tf_digest dg = { .hash = "" };
	tf_decision d = { .kind = TF_DECISION_FILE, .target = label, .group = group };
	bool known_digest = false, wanted;
	tf_error bad = { 0 }; /* a malformed digest in the event */
	char why[TF__PATH_MAX + TF_ERROR_MESSAGE_MAX + 256];
	int found;

	if (!path)
		return; /* a source file, or a role like "stdout": not an output */
	d.path = path;
	found = lookup(s, path, &rec);
	if (found < 0) {
		if (t)
			target_fail(s, t, "the store cannot be read; see the session's error");
		free(path);
		return;
	}
	if (found && rec.o.kind == ST_KIND_DIRECTORY)
		d.kind = TF_DECISION_DIRECTORY;
	else if (found && rec.o.kind == ST_KIND_SYMLINK)
		d.kind = TF_DECISION_SYMLINK;
	/* A directory's filter applies to each file of its tree (on_tree_entry). */
	wanted = chk_decide_target_file(&s->policy, target_wanted, group,
					d.kind == TF_DECISION_DIRECTORY ? NULL : path, &d.reason);
	if (found && rec.o.hash)
		known_digest = tf_digest_parse(rec.o.hash, rec.o.size, &dg, NULL) == 0;
	else if (!found && f->digest && *f->digest)
		known_digest = tf_digest_parse(f->digest, f->length, &dg, &bad) == 0;
	else if (!found && f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI)
		known_digest = parse_bytestream(f->uri, &dg);
	if (!found && f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI)
		dl_downloader_adopt_instance(s->dl, f->uri); /* a gRPC cache's instance, kept */
	if (known_digest)
		d.digest = dg;
	if (found) {
		d.executable = rec.o.executable;
		d.symlink_target = rec.o.symlink_target;
		if (d.kind == TF_DECISION_SYMLINK) {
			d.wanted = false;
			d.reason = TF_REASON_NO_BYTES;
		} else {
			d.wanted = wanted;
		}
	} else {
		d.wanted = wanted;
	}
	decide(s, &d);
	if (!wanted || !t) {
		if (found && !(f->digest && *f->digest))
			note_digest(s, path, &rec);
		free(path);
		return;
	}
	if (found) {
		if (rec.o.kind == ST_KIND_DIRECTORY) {
			if (record_digest(s, t, path, &rec, &dg))
				read_tree(s, path, &dg, rec.o.action_key, rec.o.target, false, t);
		} else if (rec.o.kind == ST_KIND_SYMLINK) {
			/* Symlinks carry no bytes: made again where they stay inside. */
			char fail[TF__PATH_MAX * 2 + TF_ERROR_MESSAGE_MAX + 128];
			if (ses_make_symlink(s->rootfd, dest_of(s, path), rec.o.symlink_target, fail, sizeof(fail)) < 0)
				target_fail(s, t, fail);
		} else if (record_digest(s, t, path, &rec, &dg)) {
			/* The event's own digest (Bazel 7+) is what this build made;
			 * the store may hold an earlier target's or build's. */
			tf_digest ed;
			if (f->digest && *f->digest && tf_digest_parse(f->digest, f->length, &ed, NULL) == 0)
				dg = ed;
			want_file(s, path, &dg, rec.o.executable, t, label);
		}
	} else if (known_digest) {
		/* Located by the event's digest or bytestream:// URI. */
		st_output o = { .path = path, .hash = dg.hash, .size = dg.size, .kind = ST_KIND_FILE };
		tf_error err = { 0 };
		if (put_output(s, &o, &err) < 0)
			note_error(s, err.code ? err.code : -EIO, &err);
		want_file(s, path, &dg, false, t, label);
	} else {
		/* A file of a directory output whose Tree is still being read is
		 * known once the read ends: wait for that tree. */
		bool waiting = false;
		char *dir = strdup(path);
		for (char *p = dir ? strrchr(dir, '/') : NULL; p && !waiting; p = strrchr(dir, '/')) {
			tree_read *tr;
			*p = '\0';
			if ((tr = tf__map_get(&s->trees, dir))) {
				add_waiter(s, &tr->waiters, t);
				waiting = true;
			}
		}
		free(dir);
		if (!waiting && !bad.code &&
		    copy_local(s, t, path, f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI ? ses_file_uri_path(f->uri) : NULL)) {
			/* An output no cache holds, copied from Bazel's output tree. */
		} else if (!waiting && bad.code) {
			/* A digest that is there but unusable (a length of 2^63):
			 * the target fails naming it; this is not Bazel-before-7's
			 * missing digest. */
			snprintf(why, sizeof(why), "the event's digest of %s cannot be used: %s", path, bad.message);
			target_fail(s, t, why);
		} else if (!waiting) {
			s->stats.files_unknown++;
			snprintf(why, sizeof(why),
				 "no digest known for %s: no executed action reported it, and the event carries no digest or bytestream:// URI",
				 path);
			target_fail(s, t, why);
		}
	}
	free(path);
}

/* A file outside the named sets a completed target or a test needs (a
 * runfile, a test log), by exec path: from the store's record, else copied
 * from Bazel's output tree at src (taken). t (0: none) waits for it. */
static void want_extra(tf_session *s, uint64_t t, const char *label, const char *path, char *src)
{
	char why[TF__PATH_MAX + 256];
	st_record rec;
	tf_digest dg;
	int found = lookup(s, path, &rec);

	if (found == 1 && rec.o.kind == ST_KIND_DIRECTORY && rec.o.hash &&
	    tf_digest_parse(rec.o.hash, rec.o.size, &dg, NULL) == 0) {
		free(src);
		read_tree(s, path, &dg, rec.o.action_key, rec.o.target ? rec.o.target : label, t == 0, t);
	} else if (found == 1 && rec.o.kind == ST_KIND_FILE && rec.o.hash &&
		   tf_digest_parse(rec.o.hash, rec.o.size, &dg, NULL) == 0) {
		free(src);
		want_file(s, path, &dg, rec.o.executable, t, label);
	} else if (found >= 0 && !copy_local(s, t, path, src)) {
		s->stats.files_unknown++;
		snprintf(why, sizeof(why), "no digest known for %s, and Bazel's output tree does not hold it", path);
		if (t)
			target_fail(s, t, why);
	} else if (found < 0) {
		free(src);
	}
}

/* The exec path (bazel-out/...) of an absolute path into Bazel's exec root,
 * malloc'd; NULL when it is not below a bazel-out folder. */
static char *exec_path_of(const char *abs)
{
	const char *p = abs ? strstr(abs, "/bazel-out/") : NULL;
	char *out;

	if (!p || !(out = strdup(p + 1)))
		return NULL;
	if (tf__path_check(out, "a path in Bazel's output tree", NULL) < 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* Bazel's --remote_download_toplevel fetches the runfiles of a top-level
 * executable too. The BEP does not list them; the runfiles manifest Bazel
 * writes beside the executable (locally, in every mode) does: each of its
 * lines whose target is an output (below bazel-out) is wanted by t. */
static void want_runfiles(tf_session *s, uint64_t t, const char *label, ev_event *ev)
{
	const BuildEventStream__File *f;
	tf_error xerr = { 0 };
	char **mans = NULL, *line = NULL;
	size_t n = 0, cap = 0;

	if (ev_sets_expand_target(s->sets, ev, "default", &xerr) < 0)
		return;
	while ((f = ev_sets_expand_next(s->sets))) {
		char *src = f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI ? ses_file_uri_path(f->uri) : NULL;
		char *man = NULL;
		if (src && asprintf(&man, "%s.runfiles_manifest", src) >= 0 && access(man, R_OK) == 0) {
			if (n == cap) {
				char **nm = realloc(mans, (cap ? 2 * cap : 4) * sizeof(*mans));
				if (nm) {
					mans = nm;
					cap = cap ? 2 * cap : 4;
				}
			}
			if (n < cap) {
				mans[n++] = man;
				man = NULL;
			}
		}
		free(man);
		free(src);
	}
	for (size_t i = 0; i < n; i++) {
		FILE *fp = fopen(mans[i], "re");
		size_t lcap = 0;
		ssize_t len;
		while (fp && (len = getline(&line, &lcap, fp)) > 0) {
			char *sp = strchr(line, ' '), *path;
			if (line[len - 1] == '\n')
				line[len - 1] = 0;
			if (!sp || !(path = exec_path_of(sp + 1)))
				continue;
			want_extra(s, t, label, path, strdup(sp + 1));
			free(path);
		}
		if (fp)
			fclose(fp);
		free(mans[i]);
	}
	free(line);
	free(mans);
}

/* Outputs a test action may have beside its test.log. */
static const char *const test_outputs[] = {
	"test.xml", "test.outputs/outputs.zip", "test.outputs_manifest/MANIFEST",
	"test.outputs_manifest/ANNOTATIONS", "test.outputs_manifest/ANNOTATIONS.pb", "test.warnings",
	"test.raw_splitlogs/test.splitlogs", "coverage.dat", "test.cache_status",
};

/* A TestResult: its test.log, test.xml (and any other test action output
 * below bazel-out) are wanted, as Bazel's --remote_download_toplevel
 * fetches them into bazel-testlogs. Not held: the files are fetched while
 * the build goes on. */
static void on_test_result(tf_session *s, ev_event *ev)
{
	BuildEventStream__TestResult *tr = ev->msg->test_result;
	const char *label = ev->msg->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TEST_RESULT &&
					    ev->msg->id->test_result->label
				    ? ev->msg->id->test_result->label
				    : NULL;
	tf_decision_reason why;

	if (!chk_decide_target(&s->policy, label ? label : "", true, &why))
		return;
	char *dir = NULL;

	for (size_t i = 0; i < tr->n_test_action_output; i++) {
		const BuildEventStream__File *f = tr->test_action_output[i];
		char *src = f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI ? ses_file_uri_path(f->uri) : NULL;
		char *path = ev_file_exec_path(f);
		if (!path)
			path = exec_path_of(src);
		if (path && !dir && f->name && !strcmp(f->name, "test.log") && (dir = strdup(path)) &&
		    strrchr(dir, '/'))
			*strrchr(dir, '/') = 0;
		if (path)
			want_extra(s, 0, label, path, src);
		else
			free(src);
		free(path);
	}
	/* A cached result lists test.log only; the test action's other outputs
	 * its ActionResult recorded are Bazel's downloads too. */
	for (size_t i = 0; dir && i < sizeof(test_outputs) / sizeof(test_outputs[0]); i++) {
		char *path = NULL;
		st_record rec;
		if (asprintf(&path, "%s/%s", dir, test_outputs[i]) >= 0 && lookup(s, path, &rec) == 1 &&
		    !tf__map_get(&s->wants, dest_of(s, path)))
			want_extra(s, 0, label, path, NULL);
		free(path);
	}
	free(dir);
}

static int on_target_complete(tf_session *s, ev_event *ev, tf_error *err)
{
	BuildEventStream__BuildEventId__TargetCompletedId *id =
		ev->msg->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED ? ev->msg->id->target_completed
												: NULL;
	BuildEventStream__TargetComplete *tc = ev->msg->completed;
	const char *label = id && id->label ? id->label : "(unknown)";
	tf_decision d = { .kind = TF_DECISION_TARGET, .target = label, .digest = { .hash = "" } };
	uint64_t t = 0;
	int r;

	if (++s->targets_seen > s->max_targets)
		return tf__errf(err, -E2BIG,
				"target %.200s: the build has more than %zu completed targets, more than topfetch "
				"keeps for one build; nothing after it is collected",
				label, s->max_targets);
	d.wanted = chk_decide_target(&s->policy, label, tc->success, &d.reason);
	if (tc->success && s->o.on_target_failed && tf__map_putn(&s->succeeded, &ev, sizeof(ev), ev) < 0)
		return tf__errf(err, -ENOMEM, "out of memory");
	decide(s, &d);
	if (d.wanted && (r = ev_gate_target(s->gate, ev, true, &t, err)) < 0)
		return r;
	/* Every file is decided about (and the gate told the digests the named
	 * sets will carry); a wanted one is wanted by t. An unwanted target
	 * whose sets are all out already, with nobody asking for decisions,
	 * needs no walk. */
	for (size_t g = 0; g < tc->n_output_group && (d.wanted || s->o.on_decision ||
						      ev_gate_target_holds_sets(s->gate, ev));
	     g++) {
		const char *group = tc->output_group[g]->name ? tc->output_group[g]->name : "";
		const BuildEventStream__File *f;
		tf_error xerr = { 0 };

		r = ev_sets_expand_target(s->sets, ev, group, &xerr);
		if (r < 0) {
			/* Only a wanted group's broken sets fail the target. */
			tf_decision_reason why;
			if (t && chk_decide_target_file(&s->policy, true, group, NULL, &why))
				target_fail(s, t, xerr.message);
			continue;
		}
		while ((f = ev_sets_expand_next(s->sets)))
			target_file(s, t, label, d.wanted, group, f);
	}
	if (!d.wanted)
		return ev_gate_target(s->gate, ev, false, NULL, err);
	if (tc->success)
		want_runfiles(s, t, label, ev);
	target_settled(s, t, NULL); /* the lookup hold */
	return 0;
}

void ses_set_max_targets(tf_session *s, size_t n)
{
	s->max_targets = n;
}

int tf_session_build_event(tf_session *s, const void *bytes, size_t len, tf_error *err)
{
	ev_event *ev;
	int r;

	if (s->sticky)
		return tf__errf(err, s->sticky, "%s", s->sticky_err.message);
	r = ev_event_decode(bytes, len, 0, "build event", 0, 0, &ev, err);
	if (r < 0)
		return r;
	r = ses_post_event(s, ev, err);
	ev_event_unref(ev);
	return r;
}

static int post_event(tf_session *s, ev_event *ev, tf_error *err);

int ses_post_event(tf_session *s, ev_event *ev, tf_error *err)
{
	if (s->sticky)
		return tf__errf(err, s->sticky, "%s", s->sticky_err.message);
	return commit(s, post_event(s, ev, err), err);
}

static int post_event(tf_session *s, ev_event *ev, tf_error *err)
{
	BuildEventStream__BuildEvent *m = ev->msg;
	int r;

	if (!m->id)
		return tf__errf(err, -EBADMSG, "build event at record %llu has no id",
				(unsigned long long)ev->record);
	switch (m->payload_case) {
	case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES:
		if (!m->id->named_set || !m->id->named_set->id)
			return tf__errf(err, -EBADMSG, "named set at record %llu has no id",
					(unsigned long long)ev->record);
		r = ev_sets_add(s->sets, ev, err);
		return r < 0 ? r : ev_gate_named_set(s->gate, ev, err);
	case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED:
		/* A gRPC cache's calls name the build (RequestMetadata); best effort. */
		if (m->started && m->started->uuid && *m->started->uuid)
			dl_downloader_set_invocation(s->dl, m->started->uuid);
		return ev_gate_submit(s->gate, ev, false, NULL, err);
	case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED:
		return on_target_complete(s, ev, err);
	case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_TEST_RESULT:
		if (s->policy.mode != TF_DOWNLOAD_MINIMAL)
			on_test_result(s, ev);
		return ev_gate_submit(s->gate, ev, false, NULL, err);
	default:
		return ev_gate_submit(s->gate, ev, false, NULL, err);
	}
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static int requeue(const st_output *o, void *user)
{
	tf_session *s = user;
	tf_digest dg;

	/* The store checked the digest when it was put; a record that does not
	 * parse now is a damaged store. */
	if (o->hash && tf_digest_parse(o->hash, o->size, &dg, NULL) < 0)
		return -EUCLEAN;
	if (o->hash) {
		want_file(s, o->path, &dg, o->executable, 0, o->target);
		s->stats.recovered++;
	}
	return 0;
}

static char *dup_opt(const char *s, bool *oom)
{
	char *d = s ? strdup(s) : NULL;
	if (s && !d)
		*oom = true;
	return d;
}

tf_session *tf_session_new(const tf_session_options *opts, tf_error *err)
{
	tf_session *s = calloc(1, sizeof(*s));
	uint64_t removed = 0, build;
	bool oom = false;
	int r;

	if (!s) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	s->rootfd = -1;
	s->wfd = s->ino = -1;
	s->o = *opts;
	s->max_targets = MAX_TARGETS;
	tf__map_init(&s->wants);
	tf__map_init(&s->trees);
	tf__map_init(&s->succeeded);
	tf__map_init(&s->tree_budget);
	tf__map_init(&s->tree_counted);
	if (!opts->output_dir) {
		tf__errf(err, -EINVAL, "no output directory given (--output_dir)");
		goto fail;
	}
	s->output_dir = dup_opt(opts->output_dir, &oom);
	if (opts->store_path) {
		s->store_path = dup_opt(opts->store_path, &oom);
	} else {
		char tmpl[] = "/tmp/topfetch-store.XXXXXX";
		if (!mkdtemp(tmpl) || asprintf(&s->store_path, "%s/store.db", tmpl) < 0) {
			tf__errf(err, -errno, "cannot make a private store folder: %s", strerror(errno));
			goto fail;
		}
		s->tmp_dir = strdup(tmpl);
	}
	if (oom) {
		tf__errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if (chk_policy_init(&s->policy, &opts->policy, err) < 0)
		goto fail;
	s->store = st_open(s->store_path, NULL, err);
	if (!s->store)
		goto fail;
	if (st_build_begin(s->store, &build, err) < 0)
		goto fail;
	s->dl = tf_downloader_new(&opts->remote, s->output_dir, err);
	if (!s->dl)
		goto fail;
	s->wfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->wfd < 0 || epoll_ctl(s->wfd, EPOLL_CTL_ADD, tf_downloader_fd(s->dl),
				    &(struct epoll_event){ .events = EPOLLIN }) < 0) {
		tf__errf(err, -errno, "cannot make the session's wakeup set: %s", strerror(errno));
		goto fail;
	}
	s->rootfd = open(s->output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->rootfd < 0) {
		tf__errf(err, -errno, "cannot open %s: %s", s->output_dir, strerror(errno));
		goto fail;
	}
	/* Crash recovery: what a previous run left half-done. */
	if (dl_remove_stale_tmp(s->rootfd, &removed, err) < 0 ||
	    st_recover_verify_local(s->store, s->rootfd, NULL, err) < 0)
		goto fail;
	s->stats.recovered += removed;
	s->sets = ev_sets_new(NULL, err);
	s->gate = ev_gate_new(emit, s);
	if (!s->sets || !s->gate) {
		if (s->sets)
			tf__errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if (opts->build_event_binary_file &&
	    !(s->bin = ev_writer_new(opts->build_event_binary_file, EV_FORMAT_BINARY, err)))
		goto fail;
	if (opts->build_event_json_file &&
	    !(s->json = ev_writer_new(opts->build_event_json_file, EV_FORMAT_JSON, err)))
		goto fail;
	if (opts->build_event_publish && !(s->pub = ev_pub_new(opts->build_event_publish, NULL, err)))
		goto fail;
	r = st_recover_fetching(s->store, requeue, s, err);
	if (r == -EUCLEAN)
		r = tf__errf(err, r, "store %s holds an output with a malformed digest; remove the store to start over",
			     s->store_path);
	if (commit(s, r, err) < 0)
		goto fail;
	return s;
fail:
	tf_session_free(s);
	return NULL;
}

/* Watches the followed file (written to) and its folder (the file created
 * or renamed into place), so that tf_session_fd wakes the caller when
 * there is more to read. Without inotify, or for standard input, the
 * caller's poll timeout paces the reading. */
static void watch_bep(tf_session *s)
{
	char *slash = strrchr(s->bep_path, '/');
	int r;

	if (!strcmp(s->bep_path, "-"))
		return;
	s->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (s->ino < 0)
		return;
	s->bep_base = slash ? slash + 1 : s->bep_path;
	if (slash == s->bep_path)
		r = inotify_add_watch(s->ino, "/", IN_CREATE | IN_MOVED_TO);
	else if (slash) {
		*slash = '\0';
		r = inotify_add_watch(s->ino, s->bep_path, IN_CREATE | IN_MOVED_TO);
		*slash = '/';
	} else
		r = inotify_add_watch(s->ino, ".", IN_CREATE | IN_MOVED_TO);
	s->ino_dir = r;
	if (r < 0 || epoll_ctl(s->wfd, EPOLL_CTL_ADD, s->ino, &(struct epoll_event){ .events = EPOLLIN }) < 0) {
		close(s->ino);
		s->ino = -1;
		return;
	}
	/* Not there yet: watched once its folder says it was made. */
	inotify_add_watch(s->ino, s->bep_path, IN_MODIFY | IN_CLOSE_WRITE);
}

/* Reads what inotify said; a file made at the followed path is watched. */
static void drain_watch(tf_session *s)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	if (s->ino < 0)
		return;
	while ((n = read(s->ino, buf, sizeof(buf))) > 0) {
		bool made = false;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *e = (const struct inotify_event *)p;
			if (e->wd == s->ino_dir && e->len && !strcmp(e->name, s->bep_base))
				made = true;
			p += sizeof(*e) + e->len;
		}
		if (made)
			inotify_add_watch(s->ino, s->bep_path, IN_MODIFY | IN_CLOSE_WRITE);
	}
}

int tf_session_add_bep_file(tf_session *s, const char *path, tf_error *err)
{
	if (s->bep_path)
		return tf__errf(err, -EBUSY, "the session already follows %s", s->bep_path);
	s->bep_path = strdup(path);
	if (!s->bep_path)
		return tf__errf(err, -ENOMEM, "out of memory");
	watch_bep(s);
	return 0;
}

bool tf_session_bep_complete(const tf_session *s)
{
	return s->bep && ev_reader_complete(s->bep);
}

/* ---- one build after another in one followed file (tf_session_follow_builds) ---- */

static void free_want(const char *key, void *value, void *user);

int tf_session_follow_builds(tf_session *s, const char *path, int64_t not_before_ms, tf_error *err)
{
	int r = tf_session_add_bep_file(s, path, err);

	if (r == 0 && !strcmp(path, "-")) {
		free(s->bep_path);
		s->bep_path = NULL;
		return tf__errf(err, -EINVAL, "builds one after another are followed in a file, not standard input");
	}
	if (r == 0) {
		struct stat st;
		s->series = true;
		s->not_before_ms = not_before_ms;
		/* Only what the file held already may be an earlier build's: a
		 * file made after this call is a build we are meant to follow
		 * (a replayed recording, too). */
		s->had_file = stat(path, &st) == 0;
		if (s->had_file)
			s->initial = st;
	}
	return r;
}

uint64_t tf_session_builds_done(const tf_session *s)
{
	return s->builds_done;
}

static bool same_file_state(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int open_sink(ev_writer **w, const char *dir, const char *uuid, const char *ext, ev_format f, tf_error *err)
{
	char *path = NULL;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return tf__errf(err, -errno, "cannot make the folder %s for the builds' event files: %s", dir,
				strerror(errno));
	if (asprintf(&path, "%s/%s.%s", dir, uuid, ext) < 0)
		return tf__errf(err, -ENOMEM, "out of memory");
	*w = ev_writer_new(path, f, err);
	free(path);
	return *w ? 0 : (err->code ? err->code : -EIO);
}

/* A new build became the current one: its own sinks. The first build uses
 * the ones tf_session_new opened. */
static int begin_build(tf_session *s, const char *uuid, tf_error *err)
{
	snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
	if (s->o.build_event_binary_file && !s->bin &&
	    !(s->bin = ev_writer_new(s->o.build_event_binary_file, EV_FORMAT_BINARY, err)))
		return err->code ? err->code : -EIO;
	if (s->o.build_event_json_file && !s->json &&
	    !(s->json = ev_writer_new(s->o.build_event_json_file, EV_FORMAT_JSON, err)))
		return err->code ? err->code : -EIO;
	if (s->o.build_event_dir) {
		int r = open_sink(&s->dir_bin, s->o.build_event_dir, uuid, "bin", EV_FORMAT_BINARY, err);
		if (r == 0)
			r = open_sink(&s->dir_json, s->o.build_event_dir, uuid, "json", EV_FORMAT_JSON, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static void close_sink(ev_writer **w, int *r, tf_error *e)
{
	if (*w && *r == 0)
		*r = ev_writer_close(*w, e);
	ev_writer_free(*w);
	*w = NULL;
}

/* The current build ended (nothing outstanding): its held events out, its
 * sinks closed, on_build_done; then fresh per-build state. The store, the
 * downloader and what they know stay. */
static int end_build(tf_session *s, bool cut_short)
{
	tf_session_stats st;
	tf_error e = { 0 };
	uint64_t build;
	int r = ev_gate_flush(s->gate, &e);

	close_sink(&s->bin, &r, &e);
	close_sink(&s->json, &r, &e);
	close_sink(&s->dir_bin, &r, &e);
	close_sink(&s->dir_json, &r, &e);
	if (r == 0 && s->sticky) {
		r = s->sticky;
		e = s->sticky_err;
	}
	if (r == 0)
		r = st_flush(s->store, &e);
	if (r == 0 && s->unreadable.code)
		r = tf__errf(&e, s->unreadable.code, "the BEP of build %s cannot be read further: %s", s->uuid,
			     s->unreadable.message);
	else if (r == 0 && cut_short)
		r = tf__errf(&e, -ENODATA,
			     "the BEP of build %s ended without last_message (%s was replaced or cut short: the build "
			     "was interrupted?); its held events were released as they were",
			     s->uuid, s->bep_path);
	tf_session_get_stats(s, &st);
	if (s->o.on_build_done)
		s->o.on_build_done(s->uuid, &st, r, e.message, s->o.user);
	s->builds_done++;
	snprintf(s->done_uuid, sizeof(s->done_uuid), "%s", s->uuid);
	s->uuid[0] = 0;
	memset(&s->unreadable, 0, sizeof(s->unreadable));
	s->have_probed = false;
	ev_reader_free(s->bep);
	s->bep = NULL;
	ev_gate_free(s->gate);
	ev_sets_free(s->sets);
	s->gate = ev_gate_new(emit, s);
	s->sets = ev_sets_new(NULL, &e);
	s->targets_seen = 0;
	tf__map_each(&s->wants, free_want, NULL);
	tf__map_fini(&s->wants);
	tf__map_init(&s->wants);
	memset(&s->stats, 0, sizeof(s->stats));
	if (!s->gate || !s->sets)
		return -ENOMEM;
	return st_build_begin(s->store, &build, &e) < 0 ? -EIO : 0;
}

/* The first event of bep_path, when it is a BuildStarted: its uuid and start
 * time. 1 with the reader positioned after it, 0 when there is none (yet). */
static int first_event(tf_session *s, ev_reader **rd, ev_event **ev)
{
	tf_error e = { 0 };

	*rd = ev_reader_new(s->bep_path, NULL, &e);
	if (!*rd)
		return 0;
	if (ev_reader_next(*rd, ev, &e) == 1) {
		if ((*ev)->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED &&
		    (*ev)->msg->started->uuid)
			return 1;
		ev_event_unref(*ev);
	}
	ev_reader_free(*rd);
	*rd = NULL;
	return 0;
}

/* Is bep_path now another build than the current one (replaced, cut, or
 * beginning with another uuid)? */
static bool build_replaced(tf_session *s)
{
	struct stat st;
	ev_reader *rd;
	ev_event *ev;
	bool other;

	if (stat(s->bep_path, &st) < 0 || st.st_dev != s->cur.st_dev || st.st_ino != s->cur.st_ino ||
	    st.st_size < (off_t)ev_reader_offset(s->bep))
		return true;
	if (!first_event(s, &rd, &ev))
		return true;
	other = strcmp(ev->msg->started->uuid, s->uuid) != 0;
	ev_event_unref(ev);
	ev_reader_free(rd);
	return other;
}

/* Takes the build bep_path now holds, if it is a new one that started after
 * not_before_ms. */
static int take_build(tf_session *s, tf_error *err)
{
	struct stat st;
	ev_reader *rd;
	ev_event *ev;
	int r;

	if (stat(s->bep_path, &st) < 0 || (s->have_probed && same_file_state(&st, &s->probed)))
		return 0;
	if (!first_event(s, &rd, &ev))
		return 0; /* not written yet, or not a build's stream: looked at again when it changes */
	if (s->had_file && st.st_dev == s->initial.st_dev && st.st_ino == s->initial.st_ino &&
	    ev->msg->started->start_time_millis < s->not_before_ms && s->o.on_note &&
	    strcmp(s->noted_uuid, ev->msg->started->uuid) != 0) {
		char note[TF__PATH_MAX + 256];
		snprintf(s->noted_uuid, sizeof(s->noted_uuid), "%s", ev->msg->started->uuid);
		snprintf(note, sizeof(note),
			 "topfetch: %s holds build %s, which started before we did: not followed; waiting for the "
			 "next build",
			 s->bep_path, ev->msg->started->uuid);
		s->o.on_note(note, s->o.user);
	}
	if ((s->had_file && st.st_dev == s->initial.st_dev && st.st_ino == s->initial.st_ino &&
	     ev->msg->started->start_time_millis < s->not_before_ms) ||
	    !strcmp(ev->msg->started->uuid, s->done_uuid)) {
		s->probed = st;
		s->have_probed = true;
		ev_event_unref(ev);
		ev_reader_free(rd);
		return 0;
	}
	s->bep = rd;
	s->cur = st;
	/* Results just before a build shows up in the file are its own (Bazel
	 * writes the BEP asynchronously); older ones were another build's. */
	if (s->orphan_since_ns && tf__now_ns() - s->orphan_since_ns < FOREIGN_GRACE_NS)
		s->orphan_since_ns = 0;
	r = begin_build(s, ev->msg->started->uuid, err);
	if (r == 0)
		r = ses_post_event(s, ev, err);
	ev_event_unref(ev);
	return r;
}

static int read_bep(tf_session *s, tf_error *err)
{
	ev_event *ev;
	int r;

	while ((r = ev_reader_next(s->bep, &ev, err)) == 1) {
		r = ses_post_event(s, ev, err);
		ev_event_unref(ev);
		if (r < 0)
			return r;
	}
	return r;
}

uint64_t tf_session_foreign_builds(const tf_session *s)
{
	return s->foreign;
}

static int ses_pump_series(tf_session *s, tf_error *err)
{
	if (s->orphan_since_ns && tf__now_ns() - s->orphan_since_ns >= FOREIGN_GRACE_NS) {
		s->foreign++;
		s->orphan_since_ns = 0;
	}
	if (s->bep) {
		bool gone = false;
		int r;

		if (!ev_reader_complete(s->bep)) {
			r = read_bep(s, err);
			/* Bytes of another build read as the rest of this one, or a
			 * stream that cannot be read: either way this build ends
			 * here (a service goes on with the next one). */
			if (r < 0 && !(gone = build_replaced(s))) {
				if (!s->unreadable.code)
					s->unreadable = *err;
				gone = true;
			}
			if (r == 0 && !ev_reader_complete(s->bep) && ev_reader_at_eof(s->bep))
				gone = build_replaced(s);
		}
		if (!gone && !ev_reader_complete(s->bep))
			return 0;
		if (tf_session_outstanding(s) > 0)
			return 0; /* what it asked for settles first */
		r = end_build(s, gone);
		if (r < 0)
			return tf__errf(err, r, "ending build %s: cannot start the next one", s->done_uuid);
	}
	return take_build(s, err);
}

static int ses_finish_series(tf_session *s, int input, const tf_error *in_err, tf_session_stats *stats, tf_error *err)
{
	int r = 0;

	if (input < 0 && err)
		*err = *in_err;
	while (tf_downloader_outstanding(s->dl) > 0)
		tf_downloader_dispatch(s->dl, 1000);
	if (s->bep)
		r = end_build(s, !ev_reader_complete(s->bep));
	if (stats)
		tf_session_get_stats(s, stats);
	return input < 0 ? input : r;
}

/* Posts whatever the followed BEP has that is new. Never waits. */
static int pump_bep(tf_session *s, tf_error *err)
{
	if (!s->bep_path)
		return 0;
	if (s->series)
		return ses_pump_series(s, err);
	if (!s->bep) {
		if (!strcmp(s->bep_path, "-"))
			s->bep = ev_reader_new_fd(0, "standard input", NULL, err);
		else if (access(s->bep_path, F_OK) == 0)
			s->bep = ev_reader_new(s->bep_path, NULL, err);
		else
			return 0; /* Bazel has not created it yet */
		if (!s->bep)
			return err->code ? err->code : -EIO;
	}
	return read_bep(s, err);
}

int tf_session_fd(const tf_session *s)
{
	return s->wfd;
}

int tf_session_dispatch(tf_session *s, int timeout_ms, tf_error *err)
{
	int n, r;

	drain_watch(s);
	r = pump_bep(s, err);
	if (r < 0) {
		note_error(s, r, err);
		return r;
	}
	n = tf_downloader_dispatch(s->dl, timeout_ms);
	if (n < 0)
		return tf__errf(err, n, "waiting for transfers: %s", strerror(-n));
	commit(s, 0, err); /* also what tf_session_action_executed left: a loop's turn bounds it */
	/* What finished may have been what the followed build waited for
	 * (its last file, its end): moved on now, not a poll later. */
	if (n > 0 && s->bep_path && (r = pump_bep(s, err)) < 0) {
		note_error(s, r, err);
		return r;
	}
	if (s->sticky)
		return tf__errf(err, s->sticky, "%s", s->sticky_err.message);
	return n;
}

int tf_session_finish(tf_session *s, tf_session_stats *stats, tf_error *err)
{
	tf_error in_err = { 0 };
	int r = 0, input = pump_bep(s, &in_err);

	if (s->series)
		return ses_finish_series(s, input, &in_err, stats, err);

	if (input == 0 && s->bep_path && !s->bep)
		input = tf__errf(&in_err, -ENOENT, "the BEP file %s was never created", s->bep_path);
	else if (input == 0 && s->bep)
		input = ev_reader_finish(s->bep, &in_err);
	while (tf_downloader_outstanding(s->dl) > 0)
		tf_downloader_dispatch(s->dl, 1000);
	r = ev_gate_flush(s->gate, err);
	if (r == 0 && s->sticky)
		r = tf__errf(err, s->sticky, "%s", s->sticky_err.message);
	if (r == 0)
		r = st_flush(s->store, err);
	if (r == 0 && s->bin)
		r = ev_writer_close(s->bin, err);
	if (r == 0 && s->json)
		r = ev_writer_close(s->json, err);
	if (stats)
		tf_session_get_stats(s, stats);
	if (r == 0 && input < 0) {
		if (err)
			*err = in_err;
		r = input;
	}
	return r;
}

void tf_session_get_stats(const tf_session *s, tf_session_stats *out)
{
	tf_downloader_stats ds;

	*out = s->stats;
	ev_gate_target_counts(s->gate, &out->targets_completed, &out->targets_failed);
	tf_downloader_get_stats(s->dl, &ds);
	out->bytes_in_flight = ds.bytes_in_flight;
}

uint64_t tf_session_outstanding(const tf_session *s)
{
	return tf_downloader_outstanding(s->dl) + ev_gate_targets_waiting(s->gate);
}

bool tf_session_action_lost(tf_session *s, const char *action_key)
{
	tf_error err = { 0 };
	int r = st_action_is_lost(s->store, action_key, &err);

	/* A store that cannot answer is the session's error (the next call
	 * reports it), not a "no". */
	if (r < 0)
		note_error(s, r, &err);
	return r == 1;
}

static void free_want(const char *key, void *value, void *user)
{
	want *w = value;
	(void)key;
	(void)user;
	for (waiter *x = w->waiters, *n; x; x = n) {
		n = x->next;
		free(x);
	}
	free(w->path);
	free(w->dest);
	free(w->failure);
	free(w->label);
	free(w->conflict);
	free(w);
}

static void free_tree(const char *key, void *value, void *user)
{
	tree_read *tr = value;
	(void)key;
	(void)user;
	for (waiter *x = tr->waiters, *n; x; x = n) {
		n = x->next;
		free(x);
	}
	tree_read_free(tr);
}

static void free_budget(const char *key, void *value, void *user)
{
	free(value);
}

void tf_session_free(tf_session *s)
{
	if (!s)
		return;
	/* Stop transfers first: no callback may run into freed state. */
	tf_downloader_free(s->dl);
	tf__map_each(&s->wants, free_want, NULL);
	tf__map_fini(&s->wants);
	tf__map_each(&s->trees, free_tree, NULL);
	tf__map_fini(&s->trees);
	tf__map_fini(&s->succeeded);
	tf__map_each(&s->tree_budget, free_budget, NULL);
	tf__map_fini(&s->tree_budget);
	tf__map_fini(&s->tree_counted);
	ev_gate_free(s->gate);
	ev_sets_free(s->sets);
	ev_reader_free(s->bep);
	free(s->bep_path);
	free(s->puts);
	ses_synth_free(s->synth);
	ev_writer_free(s->bin);
	ev_writer_free(s->json);
	ev_writer_free(s->dir_bin);
	ev_writer_free(s->dir_json);
	ev_pub_free(s->pub);
	st_close(s->store);
	chk_policy_fini(&s->policy);
	if (s->rootfd >= 0)
		close(s->rootfd);
	if (s->ino >= 0)
		close(s->ino);
	if (s->wfd >= 0)
		close(s->wfd);
	if (s->tmp_dir) {
		char *lock = NULL;
		unlink(s->store_path);
		if (asprintf(&lock, "%s.lock", s->store_path) >= 0) {
			unlink(lock);
			free(lock);
		}
		for (const char *suffix = "-wal"; suffix; suffix = strcmp(suffix, "-wal") ? NULL : "-shm") {
			char *f = NULL;
			if (asprintf(&f, "%s%s", s->store_path, suffix) >= 0) {
				unlink(f);
				free(f);
			}
		}
		rmdir(s->tmp_dir);
		free(s->tmp_dir);
	}
	free(s->store_path);
	free(s->output_dir);
	free(s);
}

/* ---- synthesized build events (synth.c builds them) ------------------------------ */

/* Records a file the caller knows by digest (and executable bit) before it
 * names it in a completed target, unless the store already has the path. */
static int note_output(tf_session *s, const tf_output_file *f, tf_error *err)
{
	st_record rec;
	tf_digest dg;
	st_output o = { .path = f->path, .executable = f->executable, .kind = ST_KIND_FILE };
	int r;

	if (!f->hash)
		return 0;
	if ((r = tf_digest_parse(f->hash, f->size, &dg, err)) < 0)
		return r; /* checked by ses_synth_target: cannot happen */
	r = st_output_get(s->store, f->path, &rec, err);
	if (r != -ENOENT)
		return r;
	o.hash = dg.hash;
	o.size = dg.size;
	return put_output(s, &o, err);
}

/* Posts synthesized events in order, dropping the caller's references. */
static int post_synth(tf_session *s, ev_event **evs, size_t n, tf_error *err)
{
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		if (r == 0 && (r = ses_post_event(s, evs[i], err)) == 0)
			s->synth_posted++;
		ev_event_unref(evs[i]);
	}
	return r;
}

int tf_session_build_started(tf_session *s, tf_error *err)
{
	ev_event *ev;
	int r;

	/* A build started again without finishing the last one replaces it. */
	ses_synth_free(s->synth);
	s->synth_posted = 0;
	s->synth_written_base = s->stats.events_written;
	if (!(s->synth = ses_synth_new()))
		return tf__errf(err, -ENOMEM, "out of memory");
	r = ses_synth_started(s->synth, &ev, err);
	if (r == 0)
		r = post_synth(s, &ev, 1, err);
	if (r < 0) {
		ses_synth_free(s->synth);
		s->synth = NULL;
	}
	return r;
}

int tf_session_target_completed(tf_session *s, const char *label, const char *configuration_id,
				const char *aspect, const tf_output_group *groups, size_t n_groups,
				tf_error *err)
{
	ev_event **evs;
	size_t n;
	int r = 0;

	if (!s->synth)
		return tf__errf(err, -EPROTO, "no build is open on this session: call tf_session_build_started first");
	r = ses_synth_target(s->synth, label, configuration_id, aspect, groups, n_groups, &evs, &n, err);
	if (r < 0)
		return r;
	/* Files known here by digest are recorded with their executable bit
	 * (a BEP File has no such field), unless an executed action already
	 * described them. */
	for (size_t g = 0; g < n_groups && r == 0; g++)
		for (size_t i = 0; i < groups[g].n_files && r == 0; i++)
			r = note_output(s, &groups[g].files[i], err);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			ev_event_unref(evs[i]);
	} else {
		r = post_synth(s, evs, n, err);
	}
	free(evs);
	return r;
}

int tf_session_build_finished(tf_session *s, int exit_code, tf_error *err)
{
	ev_event *evs[3];
	int r;

	if (!s->synth)
		return tf__errf(err, -EPROTO, "no build is open on this session: call tf_session_build_started first");
	r = ses_synth_finished(s->synth, exit_code, evs, err);
	if (r == 0)
		r = post_synth(s, evs, 3, err);
	ses_synth_free(s->synth);
	s->synth = NULL;
	s->synth_posted = 0;
	return r;
}

uint64_t tf_session_events_held(const tf_session *s)
{
	uint64_t written;

	if (!s->synth_posted)
		return 0;
	written = s->stats.events_written - s->synth_written_base;
	return written < s->synth_posted ? s->synth_posted - written : 0;
}
