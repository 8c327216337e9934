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
 * Everything is event-driven: an emitted event wakes exactly the events
 * waiting for its children, so the cost is linear in the stream. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"
#include "events/gate.h"

typedef enum gate_state {
	G_HELD,       /* waiting for ev_gate_release */
	G_UNANNOUNCED, /* waiting for its id to be announced */
	G_EMITTED,
} gate_state;

typedef struct gate_item {
	ev_event *ev;
	gate_state state;
	uint64_t seq;
	char *key;              /* serialized id, for rule 2 */
	size_t key_len;
	struct gate_item *wnext; /* next item waiting for the same id */
} gate_item;

/* A hash set of serialized ids, each with the items waiting for it. */
typedef struct id_slot {
	char *key;
	size_t len;
	bool announced;
	gate_item *waiting;
	struct id_slot *next;
} id_slot;

struct ev_gate {
	ev_gate_emit_fn emit;
	void *user;
	id_slot **buckets;
	size_t nbuckets, nids;
	gate_item **items; /* by ticket - 1 */
	size_t nitems, cap_items;
	size_t pending;    /* submitted, not yet emitted (the last_message one included) */
	gate_item *last;   /* the last_message event, once submitted */
	bool any_emitted;
	uint64_t emitted;
	int error;         /* first sink error: sticky */
	tf_error err;
};

static uint64_t fnv(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
	return h;
}

static id_slot *slot_get(ev_gate *g, const char *key, size_t len, bool create)
{
	uint64_t h = fnv(key, len);
	id_slot *s;

	for (s = g->buckets[h & (g->nbuckets - 1)]; s; s = s->next)
		if (s->len == len && !memcmp(s->key, key, len))
			return s;
	if (!create)
		return NULL;
	if (g->nids + 1 > g->nbuckets) {
		size_t nb = g->nbuckets * 2;
		id_slot **b = calloc(nb, sizeof(*b));
		if (!b)
			return NULL;
		for (size_t i = 0; i < g->nbuckets; i++)
			for (id_slot *x = g->buckets[i], *n; x; x = n) {
				n = x->next;
				x->next = b[fnv(x->key, x->len) & (nb - 1)];
				b[fnv(x->key, x->len) & (nb - 1)] = x;
			}
		free(g->buckets);
		g->buckets = b;
		g->nbuckets = nb;
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->key = malloc(len ? len : 1))) {
		free(s);
		return NULL;
	}
	memcpy(s->key, key, len);
	s->len = len;
	s->next = g->buckets[h & (g->nbuckets - 1)];
	g->buckets[h & (g->nbuckets - 1)] = s;
	g->nids++;
	return s;
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
	g->nbuckets = 256;
	g->buckets = calloc(g->nbuckets, sizeof(*g->buckets));
	if (!g->buckets) {
		free(g);
		return NULL;
	}
	return g;
}

void ev_gate_free(ev_gate *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->nbuckets; i++)
		for (id_slot *s = g->buckets[i], *n; s; s = n) {
			n = s->next;
			free(s->key);
			free(s);
		}
	free(g->buckets);
	for (size_t i = 0; i < g->nitems; i++) {
		if (g->items[i]) {
			ev_event_unref(g->items[i]->ev);
			free(g->items[i]->key);
			free(g->items[i]);
		}
	}
	free(g->items);
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
		ev_event_unref(it->ev);
		free(it->key);
		free(it);
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
	return g->error ? tf__errf(err, g->error, "%s", g->err.message) : 0;
}
