/* A session is one build: the RemoteOutputChecker at work.
 *
 * Sources report executed actions (their ActionResult) and build events.
 * For every output of every action the metadata goes into the store,
 * downloaded or not, and what the policy wants right away is fetched. When a
 * TargetComplete arrives its files become top-level: those not on disk are
 * fetched (from metadata recorded now or in an earlier build), and the event
 * waits in the gate until they are in place. Everything runs in the caller's
 * thread; the downloader's completions come back through dispatch. */
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
#include "events/gate.h"
#include "remote_execution.pb-c.h"

#define TREE_MAX_BYTES (64u << 20)

typedef struct target target;

/* A file a target waits for. */
typedef struct waiter {
	struct waiter *next;
	target *t;
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

struct target {
	uint64_t ticket;
	char *label;
	size_t pending;  /* files not settled yet, plus unresolved lookups */
	char *failure;   /* first problem, for the failure detail */
	size_t n_failed;
	ev_event *ev;    /* the held TargetComplete (borrowed from the gate) */
};

struct tf_session {
	tf_session_options o;
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
	tf__map set_tickets; /* named set id -> held ticket (uintptr_t), removed on release */
	target **targets;    /* held targets, released ones NULL */
	size_t n_targets, cap_targets;
	size_t targets_open;
	size_t reads_in_flight;
	tf_session_stats stats;
	int sticky;          /* first sink/store error */
	tf_error sticky_err;
	char *bep_path;      /* followed BEP file ("-": stdin), until complete */
	ev_reader *bep;
	chk_synth *synth;    /* synthesized events' bookkeeping (synth.c) */
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

/* The exec-root-relative path of a BEP File: path_prefix parts + name.
 * NULL for source files (no prefix), which are not outputs. */
static char *file_exec_path(const BuildEventStream__File *f)
{
	size_t n = 0;
	char *p;

	if (!f->n_path_prefix || !f->name || !*f->name)
		return NULL;
	for (size_t i = 0; i < f->n_path_prefix; i++)
		n += strlen(f->path_prefix[i]) + 1;
	n += strlen(f->name) + 1;
	if (n > TF__PATH_MAX + 1 || !(p = malloc(n)))
		return NULL;
	p[0] = '\0';
	for (size_t i = 0; i < f->n_path_prefix; i++) {
		strcat(p, f->path_prefix[i]);
		strcat(p, "/");
	}
	strcat(p, f->name);
	return p;
}

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

static void target_fail(target *t, const char *why)
{
	t->n_failed++;
	if (!t->failure)
		t->failure = strdup(why);
}

/* Fills digest and length into the files of a held named set. */
static void fill_named_set(tf_session *s, ev_event *ev)
{
	BuildEventStream__NamedSetOfFiles *ns = ev->msg->named_set_of_files;

	for (size_t i = 0; ns && i < ns->n_files; i++) {
		BuildEventStream__File *f = ns->files[i];
		char *path;
		st_record rec;

		if (f->digest && *f->digest)
			continue;
		path = file_exec_path(f);
		if (path && st_output_get(s->store, path, &rec, NULL) == 0 && rec.o.hash &&
		    (rec.o.kind == ST_KIND_FILE || rec.o.kind == ST_KIND_TREE_FILE)) {
			char *d = ev_event_strdup(ev, rec.o.hash);
			if (d) {
				f->digest = d;
				f->length = rec.o.size;
			}
		}
		free(path);
	}
}

/* Releases the held named sets that ids reach, children first. */
static int release_sets(tf_session *s, BuildEventStream__BuildEventId__NamedSetOfFilesId *const *ids,
			size_t n, int depth, tf_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const char *id = ids[i]->id;
		uintptr_t ticket = (uintptr_t)tf__map_get(&s->set_tickets, id);
		ev_event *ev;
		int r;

		if (!ticket || depth > (int)EV_DEFAULT_MAX_SET_DEPTH)
			continue;
		tf__map_remove(&s->set_tickets, id);
		ev = ev_gate_held_event(s->gate, ticket);
		if (ev && ev->msg->named_set_of_files) {
			r = release_sets(s, ev->msg->named_set_of_files->file_sets,
					 ev->msg->named_set_of_files->n_file_sets, depth + 1, err);
			if (r < 0)
				return r;
			fill_named_set(s, ev);
		}
		r = ev_gate_release(s->gate, ticket, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static void release_target(tf_session *s, target *t)
{
	BuildEventStream__TargetComplete *tc = t->ev->msg->completed;
	tf_error err = { 0 };
	int r = 0;

	for (size_t i = 0; tc && i < tc->n_output_group && r == 0; i++)
		r = release_sets(s, tc->output_group[i]->file_sets, tc->output_group[i]->n_file_sets, 0, &err);
	if (tc && t->n_failed) {
		FailureDetails__FailureDetail *fd = ev_event_alloc(t->ev, sizeof(*fd));
		char msg[TF_ERROR_MESSAGE_MAX + 64];
		if (fd) {
			failure_details__failure_detail__init(fd);
			snprintf(msg, sizeof(msg), "%zu output%s of %s could not be fetched: %s", t->n_failed,
				 t->n_failed == 1 ? "" : "s", t->label, t->failure ? t->failure : "");
			fd->message = ev_event_strdup(t->ev, msg);
			if (!fd->message)
				fd->message = (char *)"outputs could not be fetched";
			tc->failure_detail = fd;
		}
		tc->success = 0;
		s->stats.targets_failed++;
	}
	s->stats.targets_completed++;
	if (r == 0)
		r = ev_gate_release(s->gate, t->ticket, &err);
	note_error(s, r, &err);
	s->targets_open--;
	for (size_t i = 0; i < s->n_targets; i++)
		if (s->targets[i] == t)
			s->targets[i] = NULL;
	free(t->label);
	free(t->failure);
	free(t);
}

static void target_settled(tf_session *s, target *t)
{
	if (--t->pending == 0)
		release_target(s, t);
}

/* ---- wanting files ------------------------------------------------------------------ */

static void on_fetched(const tf_fetch_done *d, void *user);

static void want_settle(tf_session *s, want *w)
{
	waiter *list = w->waiters;
	w->waiters = NULL;
	while (list) {
		waiter *n = list->next;
		if (w->state == W_FAILED)
			target_fail(list->t, w->failure);
		target_settled(s, list->t);
		free(list);
		list = n;
	}
}

static int add_waiter(waiter **list, target *t)
{
	waiter *x = malloc(sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->t = t;
	x->next = *list;
	*list = x;
	if (t)
		t->pending++;
	return 0;
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

/* Wants the output at path (file or tree file) in place; t (may be NULL)
 * waits for it. */
static void want_file(tf_session *s, const char *path, const tf_digest *dg, bool exec, target *t)
{
	const char *dest = dest_of(s, path);
	bool exec_layout = !s->o.short_paths;
	want *w = tf__map_get(&s->wants, dest);
	st_record rec;
	tf_error err = { 0 };
	int r;

	if (w && strcmp(w->path, path) &&
	    (strcmp(w->digest.hash, dg->hash) || w->executable != exec)) {
		/* Two different outputs would land on one short path: never
		 * overwrite one with the other silently. */
		char why[2 * TF__PATH_MAX + 256];
		snprintf(why, sizeof(why), "%s and %s differ (%s, %s) but both would land at %s; use --keep_path_prefix",
			 w->path, path, w->digest.hash, dg->hash, dest);
		s->stats.conflicts++;
		if (t)
			target_fail(t, why);
		return;
	}
	if (w && !strcmp(w->digest.hash, dg->hash) && w->executable == exec) {
		if (w->state == W_FETCHING) {
			if (t)
				add_waiter(&w->waiters, t);
			return;
		}
		if (w->state == W_FAILED) {
			if (t)
				target_fail(t, w->failure);
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
				target_fail(t, "out of memory");
			return;
		}
		s->stats.files_wanted++;
	}
	w->digest = *dg;
	w->executable = exec;
	free(w->failure);
	w->failure = NULL;
	/* Already on disk as we wrote it: nothing to fetch. (With short paths
	 * the store does not describe this folder; the downloader still skips a
	 * file that is already there with the right digest.) */
	if (exec_layout && st_output_get(s->store, path, &rec, NULL) == 0 && rec.o.state == ST_LOCAL && rec.o.hash &&
	    !strcmp(rec.o.hash, dg->hash) && st_output_check_local(s->store, s->rootfd, path, NULL) == ST_CHECK_SAME) {
		w->state = W_DONE;
		s->stats.files_present++;
		return;
	}
	w->state = W_FETCHING;
	if (t)
		add_waiter(&w->waiters, t);
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
	have_rec = st_output_get(s->store, w->path, &rec, NULL) == 0;
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
			if (have_rec)
				st_output_mark_lost(s->store, w->path, &rec, NULL);
		} else {
			s->stats.failed++;
			if (have_rec && !s->o.short_paths)
				st_output_set_state(s->store, w->path, ST_REMOTE, NULL, NULL, NULL);
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
} tree_ctx;

static int on_tree_entry(const chk_tree_entry *e, void *user)
{
	tree_ctx *c = user;
	tf_session *s = c->s;
	st_output o = { .path = e->path, .action_key = c->tr->action_key, .target = c->tr->label };
	int r;

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
		want_file(s, e->path, &e->digest, e->executable, NULL);
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
	tf_error err = { 0 };
	tree_ctx c = { s, tr, &err };
	waiter *list;
	int r;

	s->reads_in_flight--;
	tf__map_remove(&s->trees, tr->dir);
	if (d->result == TF_RESULT_OK) {
		r = chk_tree_walk(d->data, d->len, tr->hash, tr->dir, on_tree_entry, &c, &err);
	} else {
		tf_lost_output lo = { .result = d->result, .path = tr->dir, .digest = d->digest,
				      .action_key = tr->action_key, .target = tr->label, .message = d->message };
		r = -EIO;
		snprintf(err.message, sizeof(err.message), "tree of %s: %s", tr->dir, d->message);
		if (d->result == TF_RESULT_LOST && tr->action_key)
			st_action_mark_lost(s->store, tr->action_key, NULL);
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
		if (r < 0)
			target_fail(list->t, err.message);
		target_settled(s, list->t);
		free(list);
		list = n;
	}
	tree_read_free(tr);
}

/* Reads the Tree of directory output dir (hash/size), then records its files
 * and fetches what is wanted; t (may be NULL) wants every file of it. */
static void read_tree(tf_session *s, const char *dir, const tf_digest *tree, const char *action_key,
		      const char *label, bool fetch_all, target *t)
{
	tree_read *tr = tf__map_get(&s->trees, dir);
	int r;

	if (tr && !strcmp(tr->hash, tree->hash)) {
		tr->fetch_all |= fetch_all;
		if (t)
			add_waiter(&tr->waiters, t);
		return;
	}
	tr = calloc(1, sizeof(*tr));
	if (!tr || !(tr->dir = strdup(dir)) || (action_key && !(tr->action_key = strdup(action_key))) ||
	    (label && !(tr->label = strdup(label))) || tf__map_put(&s->trees, dir, tr) < 0) {
		tree_read_free(tr);
		if (t)
			target_fail(t, "out of memory");
		return;
	}
	tr->s = s;
	memcpy(tr->hash, tree->hash, sizeof(tr->hash));
	tr->fetch_all = fetch_all;
	if (t)
		add_waiter(&tr->waiters, t);
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

int tf_session_action_executed(tf_session *s, const char *action_key, const char *target_label,
			       const void *bytes, size_t len, tf_error *err)
{
	Build__Bazel__Remote__Execution__V2__ActionResult *ar;
	tf_digest dg;
	int r = 0;

	if (!action_key || !tf__is_sha256_hex(action_key, strlen(action_key)))
		return tf__errf(err, -EINVAL, "action key '%.80s' is not a SHA-256 digest",
				action_key ? action_key : "");
	ar = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, bytes);
	if (!ar)
		return tf__errf(err, -EBADMSG, "the ActionResult of action %s (%zu bytes) does not decode",
				action_key, len);
	/* Check everything before recording anything. */
	/* (Messages get their context only when something is wrong: this loop
	 * runs for every output of every action.) */
	for (size_t i = 0; i < ar->n_output_files && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputFile *f = ar->output_files[i];
		r = tf__path_check(f->path, "output file", err);
		if (r == 0 && (!f->digest || tf_digest_parse(f->digest->hash ? f->digest->hash : "",
							     f->digest->size_bytes, &dg, err) < 0))
			r = f->digest ? err->code : tf__errf(err, -EINVAL, "output file '%s' has no digest", f->path);
		if (r < 0)
			tf__err_prefix(err, "output file %zu", i);
	}
	for (size_t i = 0; i < ar->n_output_directories && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *d = ar->output_directories[i];
		r = tf__path_check(d->path, "output directory", err);
		if (r == 0 && (!d->tree_digest ||
			       tf_digest_parse(d->tree_digest->hash ? d->tree_digest->hash : "",
					       d->tree_digest->size_bytes, &dg, err) < 0))
			r = d->tree_digest ? err->code
					   : tf__errf(err, -EINVAL, "output directory '%s' has no tree digest", d->path);
		if (r < 0)
			tf__err_prefix(err, "output directory %zu", i);
	}
	for (size_t i = 0; i < ar->n_output_symlinks && r == 0; i++)
		r = tf__path_check(ar->output_symlinks[i]->path, "output symlink", err);
	for (size_t i = 0; i < ar->n_output_file_symlinks && r == 0; i++)
		r = tf__path_check(ar->output_file_symlinks[i]->path, "output file symlink", err);
	for (size_t i = 0; i < ar->n_output_directory_symlinks && r == 0; i++)
		r = tf__path_check(ar->output_directory_symlinks[i]->path, "output directory symlink", err);
	if (r < 0) {
		tf__err_prefix(err, "refusing the ActionResult of action %s", action_key);
		goto out;
	}

	s->stats.actions++;
	r = st_action_put(s->store, action_key, target_label, err);
	if (r == 0)
		r = st_action_clear_lost(s->store, action_key, err);
	for (size_t i = 0; i < ar->n_output_files && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputFile *f = ar->output_files[i];
		st_output o = { .path = f->path, .hash = f->digest->hash, .size = f->digest->size_bytes,
				.executable = f->is_executable, .kind = ST_KIND_FILE, .action_key = action_key,
				.target = target_label };
		r = put_output(s, &o, err);
		if (r == 0 && chk_policy_fetch_on_execution(&s->policy, f->path)) {
			memcpy(dg.hash, f->digest->hash, TF_HASH_HEX_LEN + 1); /* checked above */
			dg.size = f->digest->size_bytes;
			want_file(s, f->path, &dg, f->is_executable, NULL);
		}
	}
	for (size_t i = 0; i < ar->n_output_directories && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *d = ar->output_directories[i];
		st_output o = { .path = d->path, .hash = d->tree_digest->hash, .size = d->tree_digest->size_bytes,
				.kind = ST_KIND_DIRECTORY, .action_key = action_key, .target = target_label };
		r = put_output(s, &o, err);
		tf_digest_parse(d->tree_digest->hash, d->tree_digest->size_bytes, &dg, NULL);
		/* The Tree is small: read it now, so every file of the directory is
		 * known by path and digest whether or not it is fetched. */
		if (r == 0)
			read_tree(s, d->path, &dg, action_key, target_label,
				  chk_policy_fetch_on_execution(&s->policy, d->path), NULL);
	}
	{
		Build__Bazel__Remote__Execution__V2__OutputSymlink **lists[3] = {
			ar->output_symlinks, ar->output_file_symlinks, ar->output_directory_symlinks
		};
		size_t counts[3] = { ar->n_output_symlinks, ar->n_output_file_symlinks,
				     ar->n_output_directory_symlinks };
		for (int k = 0; k < 3; k++)
			for (size_t i = 0; i < counts[k] && r == 0; i++) {
				st_output o = { .path = lists[k][i]->path, .kind = ST_KIND_SYMLINK,
						.symlink_target = lists[k][i]->target, .action_key = action_key,
						.target = target_label };
				r = put_output(s, &o, err);
			}
	}
out:
	build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
	return commit(s, r, err);
}

/* ---- build events ------------------------------------------------------------------- */

/* Wants one file a completed target names. */
static void want_target_file(tf_session *s, target *t, const BuildEventStream__File *f)
{
	char *path = file_exec_path(f);
	st_record rec;
	tf_digest dg;
	char why[TF__PATH_MAX + 256];

	if (!path)
		return; /* a source file, or a role like "stdout": not an output */
	if (st_output_get(s->store, path, &rec, NULL) == 0) {
		if (rec.o.kind != ST_KIND_DIRECTORY && !chk_policy_file_wanted(&s->policy, path)) {
			free(path);
			return;
		}
		if (rec.o.kind == ST_KIND_DIRECTORY) {
			tf_digest_parse(rec.o.hash, rec.o.size, &dg, NULL);
			read_tree(s, path, &dg, rec.o.action_key, rec.o.target, false, t);
		} else if (rec.o.kind == ST_KIND_SYMLINK) {
			/* Symlinks carry no bytes; nothing to fetch. */
		} else {
			tf_digest_parse(rec.o.hash, rec.o.size, &dg, NULL);
			want_file(s, path, &dg, rec.o.executable, t);
		}
	} else if (!chk_policy_file_wanted(&s->policy, path)) {
		/* filtered out */
	} else if (f->digest && *f->digest && tf_digest_parse(f->digest, f->length, &dg, NULL) == 0) {
		st_output o = { .path = path, .hash = dg.hash, .size = dg.size, .kind = ST_KIND_FILE };
		tf_error err = { 0 };
		if (put_output(s, &o, &err) < 0)
			note_error(s, -EIO, &err);
		want_file(s, path, &dg, false, t);
	} else if (f->file_case == BUILD_EVENT_STREAM__FILE__FILE_URI && parse_bytestream(f->uri, &dg)) {
		st_output o = { .path = path, .hash = dg.hash, .size = dg.size, .kind = ST_KIND_FILE };
		tf_error err = { 0 };
		if (put_output(s, &o, &err) < 0)
			note_error(s, -EIO, &err);
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
				add_waiter(&tr->waiters, t);
				waiting = true;
			}
		}
		free(dir);
		if (!waiting) {
			s->stats.files_unknown++;
			snprintf(why, sizeof(why),
				 "no digest known for %s: no executed action reported it, and the event carries no digest or bytestream:// URI",
				 path);
			target_fail(t, why);
		}
	}
	free(path);
}

static int on_target_complete(tf_session *s, ev_event *ev, tf_error *err)
{
	BuildEventStream__BuildEventId__TargetCompletedId *id = ev->msg->id->target_completed;
	BuildEventStream__TargetComplete *tc = ev->msg->completed;
	const char *label = id && id->label ? id->label : "(unknown)";
	target *t;
	int r;

	if (!tc->success || !chk_policy_target_wanted(&s->policy, label)) {
		/* Not fetched, but its named sets still go first. */
		for (size_t g = 0; g < tc->n_output_group; g++) {
			r = release_sets(s, tc->output_group[g]->file_sets, tc->output_group[g]->n_file_sets, 0, err);
			if (r < 0)
				return r;
		}
		return ev_gate_submit(s->gate, ev, false, NULL, err);
	}
	t = calloc(1, sizeof(*t));
	if (!t || !(t->label = strdup(label))) {
		free(t);
		return tf__errf(err, -ENOMEM, "out of memory");
	}
	if (s->n_targets == s->cap_targets) {
		size_t nc = s->cap_targets ? s->cap_targets * 2 : 64;
		target **n = realloc(s->targets, nc * sizeof(*n));
		if (!n) {
			free(t->label);
			free(t);
			return tf__errf(err, -ENOMEM, "out of memory");
		}
		s->targets = n;
		s->cap_targets = nc;
	}
	s->targets[s->n_targets++] = t;
	s->targets_open++;
	r = ev_gate_submit(s->gate, ev, true, &t->ticket, err);
	if (r < 0)
		return r;
	t->ev = ev_gate_held_event(s->gate, t->ticket);
	t->pending = 1; /* held while its files are being looked up */
	for (size_t g = 0; g < tc->n_output_group; g++) {
		const BuildEventStream__File *f;
		if (!chk_policy_group_wanted(&s->policy, tc->output_group[g]->name))
			continue;
		r = ev_sets_expand_target(s->sets, ev, tc->output_group[g]->name, err);
		if (r < 0) {
			target_fail(t, err->message);
			continue;
		}
		while ((f = ev_sets_expand_next(s->sets)))
			want_target_file(s, t, f);
	}
	target_settled(s, t);
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
	r = chk_session_post_event(s, ev, err);
	ev_event_unref(ev);
	return r;
}

static int post_event(tf_session *s, ev_event *ev, tf_error *err);

int chk_session_post_event(tf_session *s, ev_event *ev, tf_error *err)
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
	case BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES: {
		uint64_t ticket;
		if (!m->id->named_set || !m->id->named_set->id)
			return tf__errf(err, -EBADMSG, "named set at record %llu has no id",
					(unsigned long long)ev->record);
		r = ev_sets_add(s->sets, ev, err);
		if (r < 0)
			return r;
		/* Held until a target that references it is released, so that it
		 * carries digest and length by then. */
		r = ev_gate_submit(s->gate, ev, true, &ticket, err);
		if (r == 0 && tf__map_put(&s->set_tickets, m->id->named_set->id, (void *)(uintptr_t)ticket) < 0)
			r = tf__errf(err, -ENOMEM, "out of memory");
		return r;
	}
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

	if (o->hash && tf_digest_parse(o->hash, o->size, &dg, NULL) == 0) {
		want_file(s, o->path, &dg, o->executable, NULL);
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
	tf__map_init(&s->set_tickets);
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
	if (commit(s, r, err) < 0)
		goto fail;
	return s;
fail:
	tf_session_free(s);
	return NULL;
}

chk_synth **chk_session_synth_slot(tf_session *s)
{
	return &s->synth;
}

int chk_session_note_output(tf_session *s, const char *path, const tf_digest *dg, bool executable,
			    tf_error *err)
{
	st_record rec;
	st_output o = { .path = path, .hash = dg->hash, .size = dg->size, .executable = executable,
			.kind = ST_KIND_FILE };
	int r = st_output_get(s->store, path, &rec, err);

	if (r != -ENOENT)
		return r;
	return put_output(s, &o, err);
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
		r = chk_session_post_event(s, ev, err);
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
		*stats = s->stats;
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
}

bool tf_session_action_lost(tf_session *s, const char *action_key)
{
	return st_action_is_lost(s->store, action_key, NULL) == 1;
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
	tf__map_fini(&s->set_tickets);
	for (size_t i = 0; i < s->n_targets; i++)
		if (s->targets[i]) {
			free(s->targets[i]->label);
			free(s->targets[i]->failure);
			free(s->targets[i]);
		}
	free(s->targets);
	ev_gate_free(s->gate);
	ev_sets_free(s->sets);
	ev_reader_free(s->bep);
	free(s->bep_path);
	chk_synth_free(s->synth);
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
