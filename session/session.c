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
#include <sys/stat.h>
#include <unistd.h>

#include "checker/checker.h"
#include "downloader/downloader.h"
#include "events/events.h"
#include "session/session.h"
#include "session/synth.h"
#include "store/store.h"

#define TREE_MAX_BYTES (64u << 20)

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
	waiter *waiters;
	bool by_target; /* a completed target named it */
	char *conflict; /* targets named it with two digests in this build: why */
} want;

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
	ses_synth *synth;    /* a synthesized build's bookkeeping (synth.c) */
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

/* Commits what the call just recorded, so that a kill -9 right after it loses
 * nothing: the metadata, and the FETCHING marks recovery re-queues. */
static int commit(tf_session *s, int r, tf_error *err)
{
	tf_error e = { 0 };
	int f;

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

	if (s->bin && (r = ev_writer_write(s->bin, ev->msg, err)) < 0)
		return r;
	if (s->json && (r = ev_writer_write(s->json, ev->msg, err)) < 0)
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
 * ticket, 0 for none) waits for it. */
static void want_file(tf_session *s, const char *path, const tf_digest *dg, bool exec, uint64_t t)
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
		.target = rec && rec->o.target ? rec->o.target : NULL,
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
		want_file(s, e->path, &e->digest, e->executable, 0);
	if (chk_policy_file_wanted(&s->policy, e->path))
		for (waiter *w = c->tr->waiters; w; w = w->next)
			want_file(s, e->path, &e->digest, e->executable, w->t);
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
		size_t allowed = CHK_TREE_MAX_ENTRIES;
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
		r = chk_tree_walk_budget(d->data, d->len, tr->hash, tr->dir, allowed, whose, on_tree_entry, &c, &err);
		if (r == 0 && left && tf__map_put(&s->tree_counted, tr->dir, (void *)(uintptr_t)(c.entries + 1)) == 0)
			*left = allowed - c.entries;
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

/* Records one output of an executed action and acts on the decision. */
static int on_action_output(const chk_output *out, void *user, tf_error *err)
{
	tf_session *s = user;
	const st_output *o = &out->o;
	tf_decision d = {
		.kind = o->kind == ST_KIND_DIRECTORY ? TF_DECISION_DIRECTORY
			: o->kind == ST_KIND_SYMLINK ? TF_DECISION_SYMLINK : TF_DECISION_FILE,
		.action_key = o->action_key, .target = o->target, .path = o->path, .digest = out->digest,
		.executable = o->executable, .symlink_target = o->symlink_target, .wanted = out->wanted,
		.reason = out->reason,
	};
	int r = put_output(s, o, err);

	if (r < 0)
		return r;
	decide(s, &d);
	if (o->kind == ST_KIND_FILE && out->wanted)
		want_file(s, o->path, &out->digest, o->executable, 0);
	/* The Tree is small: read it now, so every file of the directory is
	 * known by path and digest whether or not it is fetched. */
	if (o->kind == ST_KIND_DIRECTORY)
		read_tree(s, o->path, &out->digest, o->action_key, o->target, out->wanted, 0);
	return 0;
}

int tf_session_action_executed(tf_session *s, const char *action_key, const char *target_label,
			       const void *bytes, size_t len, tf_error *err)
{
	chk_action *a;
	int r = chk_action_decode(action_key, bytes, len, &a, err);

	if (r < 0)
		return r;
	s->stats.actions++;
	r = st_action_put(s->store, action_key, target_label, err);
	if (r == 0)
		r = st_action_clear_lost(s->store, action_key, err);
	if (r == 0)
		r = chk_action_each(a, &s->policy, target_label, on_action_output, s, err);
	chk_action_free(a);
	return commit(s, r, err);
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

/* A symlink output a completed target wants: made at its destination when
 * its target stays inside the output tree (relative, never climbing above
 * the output folder); otherwise the target fails naming it, so a target is
 * never posted successful with its symlink missing (or pointing at
 * /etc/passwd). */
static void place_symlink(tf_session *s, uint64_t t, const char *path, const char *target)
{
	const char *dest = dest_of(s, path), *leaf;
	char why[2 * TF__PATH_MAX + 256], tmp[64], have[TF__PATH_MAX + 1];
	int depth = 0, dfd;
	tf_error err = { 0 };
	ssize_t n;

	/* Folders above the link, then each component of the target. */
	for (const char *p = dest; (p = strchr(p, '/')); p++)
		depth++;
	for (const char *p = target; p && *p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL) {
		size_t len = strcspn(p, "/");
		if (len == 2 && !strncmp(p, "..", 2))
			depth--;
		else if (len && !(len == 1 && *p == '.'))
			depth++;
		if (depth < 0)
			break;
	}
	if (!target || !*target || target[0] == '/' || depth < 0 || strlen(target) > TF__PATH_MAX) {
		snprintf(why, sizeof(why), "symlink output %s points to '%.200s', outside the output tree; refused",
			 path, target ? target : "");
		target_fail(s, t, why);
		return;
	}
	if (tf__path_check(dest, "a symlink output", &err) < 0 ||
	    (dfd = tf__open_parent_beneath(s->rootfd, dest, true, &leaf, &err)) < 0) {
		target_fail(s, t, err.message);
		return;
	}
	n = readlinkat(dfd, leaf, have, sizeof(have) - 1);
	if (n >= 0 && (have[n] = '\0', !strcmp(have, target))) {
		close(dfd);
		return; /* already in place */
	}
	/* Atomically, as files are: a temporary link renamed over the leaf. */
	static unsigned long long seq; /* (one session thread places links) */
	snprintf(tmp, sizeof(tmp), DL_TMP_PREFIX "%ld.l%llu", (long)getpid(), ++seq);
	if (symlinkat(target, dfd, tmp) < 0 || renameat(dfd, tmp, dfd, leaf) < 0) {
		snprintf(why, sizeof(why), "cannot make the symlink %s -> %.200s: %s", dest, target, strerror(errno));
		unlinkat(dfd, tmp, 0);
		target_fail(s, t, why);
	}
	close(dfd);
}

/* Decides about one file a completed target names in group, and wants it
 * when it is wanted (t is the target's gate ticket, 0 when not waited for). */
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
			/* Symlinks carry no bytes: made here, if they stay inside. */
			place_symlink(s, t, path, rec.o.symlink_target);
		} else if (record_digest(s, t, path, &rec, &dg)) {
			/* The event's own digest (Bazel 7+) is what this build made;
			 * the store may hold an earlier target's or build's. */
			tf_digest ed;
			if (f->digest && *f->digest && tf_digest_parse(f->digest, f->length, &ed, NULL) == 0)
				dg = ed;
			want_file(s, path, &dg, rec.o.executable, t);
		}
	} else if (known_digest) {
		/* Located by the event's digest or bytestream:// URI. */
		st_output o = { .path = path, .hash = dg.hash, .size = dg.size, .kind = ST_KIND_FILE };
		tf_error err = { 0 };
		if (put_output(s, &o, &err) < 0)
			note_error(s, err.code ? err.code : -EIO, &err);
		want_file(s, path, &dg, false, t);
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
		if (!waiting && bad.code) {
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
	target_settled(s, t, NULL); /* the lookup hold */
	return 0;
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
	case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED:
		return on_target_complete(s, ev, err);
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
		want_file(s, o->path, &dg, o->executable, 0);
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
	s->o = *opts;
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

int tf_session_add_bep_file(tf_session *s, const char *path, tf_error *err)
{
	if (s->bep_path)
		return tf__errf(err, -EBUSY, "the session already follows %s", s->bep_path);
	s->bep_path = strdup(path);
	return s->bep_path ? 0 : tf__errf(err, -ENOMEM, "out of memory");
}

bool tf_session_bep_complete(const tf_session *s)
{
	return s->bep && ev_reader_complete(s->bep);
}

/* Posts whatever the followed BEP has that is new. Never waits. */
static int pump_bep(tf_session *s, tf_error *err)
{
	ev_event *ev;
	int r;

	if (!s->bep_path)
		return 0;
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
	while ((r = ev_reader_next(s->bep, &ev, err)) == 1) {
		r = ses_post_event(s, ev, err);
		ev_event_unref(ev);
		if (r < 0)
			return r;
	}
	return r;
}

int tf_session_fd(const tf_session *s)
{
	return tf_downloader_fd(s->dl);
}

int tf_session_dispatch(tf_session *s, int timeout_ms, tf_error *err)
{
	int n, r = pump_bep(s, err);

	if (r < 0) {
		note_error(s, r, err);
		return r;
	}
	n = tf_downloader_dispatch(s->dl, timeout_ms);
	if (n < 0)
		return tf__errf(err, n, "waiting for transfers: %s", strerror(-n));
	if (n > 0)
		commit(s, 0, err);
	if (s->sticky)
		return tf__errf(err, s->sticky, "%s", s->sticky_err.message);
	return n;
}

int tf_session_finish(tf_session *s, tf_session_stats *stats, tf_error *err)
{
	tf_error in_err = { 0 };
	int r = 0, input = pump_bep(s, &in_err);

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
	*out = s->stats;
	ev_gate_target_counts(s->gate, &out->targets_completed, &out->targets_failed);
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
	ses_synth_free(s->synth);
	ev_writer_free(s->bin);
	ev_writer_free(s->json);
	ev_pub_free(s->pub);
	st_close(s->store);
	chk_policy_fini(&s->policy);
	if (s->rootfd >= 0)
		close(s->rootfd);
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
