/* The gate: releases build events to the sinks in an order a consumer can
 * trust.
 *
 * Rules, each applied as events arrive and as holds are lifted:
 *  1. A held event (a TargetComplete whose files are not on disk yet, the
 *     NamedSetOfFiles it references) is emitted only once released.
 *  2. An event is emitted only after an emitted event announced its id as a
 *     child (the first event of a stream is exempt). So an event announced
 *     only by a held one waits for it.
 *  3. The last_message event is emitted last, after everything else.
 *  4. A NamedSetOfFiles (ev_gate_named_set) is held until a TargetComplete
 *     that reaches it is released; it then goes first, after the sets it
 *     references, with digest and length filled in from the file facts
 *     (ev_gate_file_digest).
 *  5. A TargetComplete the session waits for (ev_gate_target with wait) is
 *     held until every file it waits for is settled; if one failed, it is
 *     released with success = false and a failure detail naming it.
 * Everything is event-driven: an emitted event wakes exactly the events
 * waiting for its children, so the cost is linear in the stream. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"
#include "events/gate.h"

typedef enum gate_state {
	G_HELD,       /* waiting for ev_gate_release */
	G_UNANNOUNCED, /* waiting for its id to be announced */
	G_EMITTED,
} gate_state;

/* A TargetComplete waiting for its files (rule 5). */
typedef struct gate_target {
	size_t pending;  /* files not settled yet, plus the lookup hold */
	size_t n_failed;
	char *failure;   /* the first failure, for the detail */
} gate_target;

typedef struct gate_item {
	ev_event *ev;
	gate_target *tgt;       /* waited-for TargetCompletes only */
	gate_state state;
	uint64_t seq;
	char *key;              /* serialized id, for rule 2 */
	size_t key_len;
	struct gate_item *wnext; /* next item waiting for the same id */
} gate_item;

/* What the gate knows of one serialized id: announced yet, and the items
 * waiting for it (in the ids map). */
typedef struct id_slot {
	bool announced;
	gate_item *waiting;
} id_slot;

struct ev_gate {
	ev_gate_emit_fn emit;
	void *user;
	tf__map ids;       /* serialized BuildEventId -> id_slot */
	gate_item **items; /* by ticket - 1 */
	size_t nitems, cap_items;
	size_t pending;    /* submitted, not yet emitted (the last_message one included) */
	gate_item *last;   /* the last_message event, once submitted */
	bool any_emitted;
	uint64_t emitted;
	int error;         /* first sink error: sticky */
	tf_error err;
	tf__map set_tickets; /* held named set id -> ticket (uintptr_t) */
	tf__map digests;     /* exec path -> tf_digest (file facts) */
	size_t targets_waiting;
	uint64_t targets_released, targets_failed;
};

static void item_free(gate_item *it)
{
	ev_event_unref(it->ev);
	free(it->key);
	if (it->tgt)
		free(it->tgt->failure);
	free(it->tgt);
	free(it);
}

static id_slot *slot_get(ev_gate *g, const char *key, size_t len, bool create)
{
	id_slot *s = tf__map_getn(&g->ids, key, len);

	if (s || !create)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s || tf__map_putn(&g->ids, key, len, s) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

static void free_value(const char *key, void *value, void *user)
{
	(void)key;
	(void)user;
	free(value);
}

/* Serializes an id into a malloc'd key (ids compare by their bytes). */
static char *id_key(const BuildEventStream__BuildEventId *id, size_t *len)
{
	char *k;
	*len = build_event_stream__build_event_id__get_packed_size(id);
	k = malloc(*len ? *len : 1);
	if (k)
		build_event_stream__build_event_id__pack(id, (uint8_t *)k);
	return k;
}

ev_gate *ev_gate_new(ev_gate_emit_fn emit, void *user)
{
	ev_gate *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->emit = emit;
	g->user = user;
	tf__map_init(&g->ids);
	tf__map_init(&g->set_tickets);
	tf__map_init(&g->digests);
	return g;
}

void ev_gate_free(ev_gate *g)
{
	if (!g)
		return;
	tf__map_each(&g->ids, free_value, NULL);
	tf__map_fini(&g->ids);
	for (size_t i = 0; i < g->nitems; i++)
		if (g->items[i])
			item_free(g->items[i]);
	free(g->items);
	tf__map_fini(&g->set_tickets);
	tf__map_each(&g->digests, free_value, NULL);
	tf__map_fini(&g->digests);
	free(g);
}

/* Emits it, announces its children, and emits whatever that unblocks. An
 * explicit work list keeps deep announcement chains off the C stack. */
static void emit_ready(ev_gate *g, gate_item *first)
{
	gate_item *work = first;
	first->wnext = NULL;

	while (work) {
		gate_item *it = work;
		const BuildEventStream__BuildEvent *m = it->ev->msg;
		work = it->wnext;

		if (!g->error) {
			int r = g->emit(it->ev, g->user, &g->err);
			if (r < 0)
				g->error = r;
		}
		it->state = G_EMITTED;
		g->any_emitted = true;
		g->emitted++;
		g->pending--;
		for (size_t i = 0; i < m->n_children; i++) {
			size_t len;
			char *k = id_key(m->children[i], &len);
			id_slot *s = k ? slot_get(g, k, len, true) : NULL;
			free(k);
			if (!s)
				continue; /* out of memory: that child is flushed at the end */
			s->announced = true;
			while (s->waiting) {
				gate_item *w = s->waiting;
				s->waiting = w->wnext;
				w->wnext = work;
				work = w;
			}
		}
		/* An emitted item is in no list any more: free it. */
		if (g->last == it)
			g->last = NULL;
		g->items[it->seq - 1] = NULL;
		item_free(it);
	}
	if (g->last && g->last->state == G_UNANNOUNCED && g->pending == 1) {
		gate_item *l = g->last;
		g->last = NULL;
		emit_ready(g, l);
	}
}

/* Emits it now if rule 2 allows; otherwise parks it on its id. */
static void try_emit(ev_gate *g, gate_item *it)
{
	id_slot *s = slot_get(g, it->key, it->key_len, true);

	it->state = G_UNANNOUNCED;
	if (it == g->last) {
		if (g->pending == 1)
			emit_ready(g, it);
		return;
	}
	if (!g->any_emitted || (s && s->announced)) {
		emit_ready(g, it);
		return;
	}
	if (s) {
		it->wnext = s->waiting;
		s->waiting = it;
	}
}

int ev_gate_submit(ev_gate *g, ev_event *ev, bool hold, uint64_t *ticket, tf_error *err)
{
	gate_item *it;

	if (g->error)
		return tf__errf(err, g->error, "%s", g->err.message);
	if (!ev->msg->id)
		return tf__errf(err, -EINVAL, "event at record %llu has no id",
				(unsigned long long)ev->record);
	if (g->nitems == g->cap_items) {
		size_t nc = g->cap_items ? g->cap_items * 2 : 1024;
		gate_item **n = realloc(g->items, nc * sizeof(*n));
		if (!n)
			return tf__errf(err, -ENOMEM, "out of memory holding events");
		g->items = n;
		g->cap_items = nc;
	}
	it = calloc(1, sizeof(*it));
	if (!it || !(it->key = id_key(ev->msg->id, &it->key_len))) {
		free(it);
		return tf__errf(err, -ENOMEM, "out of memory holding events");
	}
	it->ev = ev_event_ref(ev);
	it->seq = g->nitems + 1;
	g->items[g->nitems++] = it;
	g->pending++;
	if (ticket)
		*ticket = it->seq;
	if (ev->msg->last_message)
		g->last = it;
	if (hold) {
		it->state = G_HELD;
		return 0;
	}
	try_emit(g, it);
	return g->error ? tf__errf(err, g->error, "%s", g->err.message) : 0;
}

int ev_gate_release(ev_gate *g, uint64_t ticket, tf_error *err)
{
	gate_item *it;

	if (ticket == 0 || ticket > g->nitems || !(it = g->items[ticket - 1]) || it->state != G_HELD)
		return tf__errf(err, -EINVAL, "gate ticket %llu is not held", (unsigned long long)ticket);
	try_emit(g, it);
	return g->error ? tf__errf(err, g->error, "%s", g->err.message) : 0;
}

ev_event *ev_gate_held_event(ev_gate *g, uint64_t ticket)
{
	if (ticket == 0 || ticket > g->nitems || !g->items[ticket - 1] ||
	    g->items[ticket - 1]->state != G_HELD)
		return NULL;
	return g->items[ticket - 1]->ev;
}

size_t ev_gate_pending(const ev_gate *g)
{
	return g->pending;
}

uint64_t ev_gate_emitted(const ev_gate *g)
{
	return g->emitted;
}

int ev_gate_flush(ev_gate *g, tf_error *err)
{
	/* The stream ended with events that were never announced (or are still
	 * held, which the caller decided to give up on): emit them in arrival
	 * order rather than lose them, the last_message one last. */
	gate_item *last = g->last;
	g->last = NULL;
	for (size_t i = 0; i < g->nitems; i++) {
		gate_item *it = g->items[i];
		if (!it || it == last)
			continue;
		if (it->state == G_UNANNOUNCED) {
			id_slot *s = slot_get(g, it->key, it->key_len, false);
			if (s) {
				gate_item **pp = &s->waiting;
				while (*pp && *pp != it)
					pp = &(*pp)->wnext;
				if (*pp)
					*pp = it->wnext;
			}
		}
		emit_ready(g, it);
	}
	if (last)
		emit_ready(g, last);
	g->targets_waiting = 0;
	tf__map_fini(&g->set_tickets);
	tf__map_init(&g->set_tickets);
	return g->error ? tf__errf(err, g->error, "%s", g->err.message) : 0;
}

/* ---- the release rules for named sets and targets (rules 4 and 5) ------------ */

int ev_gate_named_set(ev_gate *g, ev_event *ev, tf_error *err)
{
	const BuildEventStream__BuildEvent *m = ev->msg;
	uint64_t ticket;
	int r;

	if (m->payload_case != BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES || !m->id ||
	    !m->id->named_set || !m->id->named_set->id)
		return tf__errf(err, -EINVAL, "event at record %llu is not a named set with an id",
				(unsigned long long)ev->record);
	r = ev_gate_submit(g, ev, true, &ticket, err);
	if (r == 0 && tf__map_put(&g->set_tickets, m->id->named_set->id, (void *)(uintptr_t)ticket) < 0)
		r = tf__errf(err, -ENOMEM, "out of memory holding named set %s", m->id->named_set->id);
	return r;
}

int ev_gate_file_digest(ev_gate *g, const char *path, const tf_digest *dg, tf_error *err)
{
	tf_digest *d = tf__map_get(&g->digests, path);

	if (!d) {
		if (!(d = malloc(sizeof(*d))) || tf__map_put(&g->digests, path, d) < 0) {
			free(d);
			return tf__errf(err, -ENOMEM, "out of memory recording the digest of %s", path);
		}
	}
	*d = *dg;
	return 0;
}

/* Fills digest and length into the files of a held named set from the file
 * facts. */
static void fill_named_set(ev_gate *g, ev_event *ev)
{
	BuildEventStream__NamedSetOfFiles *ns = ev->msg->named_set_of_files;

	for (size_t i = 0; ns && i < ns->n_files; i++) {
		BuildEventStream__File *f = ns->files[i];
		const tf_digest *dg;
		char *path, *d;

		if (f->digest && *f->digest)
			continue;
		path = ev_file_exec_path(f);
		dg = path ? tf__map_get(&g->digests, path) : NULL;
		if (dg && (d = ev_event_strdup(ev, dg->hash))) {
			f->digest = d;
			f->length = dg->size;
		}
		free(path);
	}
}

/* Releases the held named sets that ids reach, children first. */
static int release_sets(ev_gate *g, BuildEventStream__BuildEventId__NamedSetOfFilesId *const *ids, size_t n,
			unsigned depth, tf_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const char *id = ids[i]->id;
		uintptr_t ticket = id ? (uintptr_t)tf__map_get(&g->set_tickets, id) : 0;
		ev_event *ev;
		int r;

		if (!ticket || depth > EV_DEFAULT_MAX_SET_DEPTH)
			continue;
		tf__map_remove(&g->set_tickets, id);
		ev = ev_gate_held_event(g, ticket);
		if (ev && ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES) {
			r = release_sets(g, ev->msg->named_set_of_files->file_sets,
					 ev->msg->named_set_of_files->n_file_sets, depth + 1, err);
			if (r < 0)
				return r;
			fill_named_set(g, ev);
		}
		r = ev_gate_release(g, ticket, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* File facts are needed from a target's arrival to its release: with no
 * target waiting, none is (so the table stays as small as the targets in
 * flight). */
static void forget_digests(ev_gate *g)
{
	if (g->targets_waiting || !g->digests.n)
		return;
	tf__map_each(&g->digests, free_value, NULL);
	tf__map_fini(&g->digests);
	tf__map_init(&g->digests);
}

static int release_target_sets(ev_gate *g, const ev_event *ev, tf_error *err)
{
	const BuildEventStream__TargetComplete *tc =
		ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED ? ev->msg->completed : NULL;
	int r = 0;

	for (size_t i = 0; tc && i < tc->n_output_group && r == 0; i++)
		r = release_sets(g, tc->output_group[i]->file_sets, tc->output_group[i]->n_file_sets, 0, err);
	return r;
}

int ev_gate_target(ev_gate *g, ev_event *ev, bool wait, uint64_t *ticket, tf_error *err)
{
	gate_target *t;
	int r;

	if (ev->msg->payload_case != BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED || !ev->msg->completed ||
	    !ev->msg->id)
		return tf__errf(err, -EINVAL, "event at record %llu is not a TargetComplete",
				(unsigned long long)ev->record);
	if (!wait) {
		/* Not waited for, but its named sets still go first. */
		r = release_target_sets(g, ev, err);
		forget_digests(g);
		return r < 0 ? r : ev_gate_submit(g, ev, false, ticket, err);
	}
	if (!(t = calloc(1, sizeof(*t))))
		return tf__errf(err, -ENOMEM, "out of memory holding a TargetComplete");
	r = ev_gate_submit(g, ev, true, ticket, err);
	if (r < 0) {
		free(t);
		return r;
	}
	t->pending = 1; /* the lookup hold */
	g->items[*ticket - 1]->tgt = t;
	g->targets_waiting++;
	return 0;
}

static gate_item *waiting_target(ev_gate *g, uint64_t ticket)
{
	gate_item *it;

	if (ticket == 0 || ticket > g->nitems || !(it = g->items[ticket - 1]) || it->state != G_HELD || !it->tgt)
		return NULL;
	return it;
}

int ev_gate_target_wait(ev_gate *g, uint64_t ticket, tf_error *err)
{
	gate_item *it = waiting_target(g, ticket);

	if (!it)
		return tf__errf(err, -EINVAL, "gate ticket %llu is not a waiting target", (unsigned long long)ticket);
	it->tgt->pending++;
	return 0;
}

/* Everything the target waited for is settled: its sets, then itself. */
static int release_target(ev_gate *g, gate_item *it, tf_error *err)
{
	ev_event *ev = it->ev;
	BuildEventStream__TargetComplete *tc = ev->msg->completed;
	const BuildEventStream__BuildEventId__TargetCompletedId *id =
		ev->msg->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED ? ev->msg->id->target_completed
												: NULL;
	gate_target *t = it->tgt;
	int r;

	g->targets_waiting--;
	g->targets_released++;
	r = release_target_sets(g, ev, err);
	forget_digests(g);
	if (t->n_failed) {
		FailureDetails__FailureDetail *fd = ev_event_alloc(ev, sizeof(*fd));
		char msg[TF_ERROR_MESSAGE_MAX + 64];
		if (fd) {
			failure_details__failure_detail__init(fd);
			snprintf(msg, sizeof(msg), "%zu output%s of %s could not be fetched: %s", t->n_failed,
				 t->n_failed == 1 ? "" : "s", id && id->label ? id->label : "(unknown)",
				 t->failure ? t->failure : "");
			fd->message = ev_event_strdup(ev, msg);
			if (!fd->message)
				fd->message = (char *)"outputs could not be fetched";
			tc->failure_detail = fd;
		}
		tc->success = 0;
		g->targets_failed++;
	}
	if (r == 0)
		r = ev_gate_release(g, it->seq, err);
	return r;
}

int ev_gate_target_settled(ev_gate *g, uint64_t ticket, const char *failure, tf_error *err)
{
	gate_item *it = waiting_target(g, ticket);
	gate_target *t;

	if (!it)
		return tf__errf(err, -EINVAL, "gate ticket %llu is not a waiting target", (unsigned long long)ticket);
	t = it->tgt;
	if (failure) {
		t->n_failed++;
		if (!t->failure && !(t->failure = strdup(failure)))
			t->failure = NULL; /* the count still says it failed */
	}
	if (t->pending == 0 || --t->pending > 0)
		return 0;
	return release_target(g, it, err);
}

bool ev_gate_target_holds_sets(const ev_gate *g, const ev_event *ev)
{
	const BuildEventStream__TargetComplete *tc =
		ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED ? ev->msg->completed : NULL;

	/* A released set's children were released before it, so the sets a
	 * target names directly tell. */
	for (size_t i = 0; tc && i < tc->n_output_group; i++)
		for (size_t k = 0; k < tc->output_group[i]->n_file_sets; k++) {
			const char *id = tc->output_group[i]->file_sets[k]->id;
			if (id && tf__map_get(&g->set_tickets, id))
				return true;
		}
	return false;
}

size_t ev_gate_targets_waiting(const ev_gate *g)
{
	return g->targets_waiting;
}

void ev_gate_target_counts(const ev_gate *g, uint64_t *released, uint64_t *failed)
{
	*released = g->targets_released;
	*failed = g->targets_failed;
}
