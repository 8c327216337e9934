/* The gate's ordering rules, one by one: held events wait for release;
 * events wait until an emitted event announced them; last_message goes last
 * (also when it arrives with nothing else pending); flush emits leftovers in
 * arrival order. */
#include "events/events.h"
#include "events/gate.h"
#include "tf_test.h"

typedef struct log_ {
	char order[64][32];
	int n;
} log_;

static int record(ev_event *ev, void *user, tf_error *err)
{
	log_ *l = user;
	(void)err;
	CHECK(l->n < 64);
	snprintf(l->order[l->n++], 32, "p%d", ev->msg->id->progress->opaque_count);
	return 0;
}

/* A Progress event with id `count` announcing progress ids `kids`. */
static ev_event *progress(int count, const int *kids, int nkids, bool last)
{
	ev_event *ev = ev_event_new();
	BuildEventStream__BuildEvent *m = ev->msg;
	BuildEventStream__BuildEventId *id = ev_event_alloc(ev, sizeof(*id));
	BuildEventStream__BuildEventId__ProgressId *pid = ev_event_alloc(ev, sizeof(*pid));
	BuildEventStream__Progress *p = ev_event_alloc(ev, sizeof(*p));

	build_event_stream__build_event_id__init(id);
	build_event_stream__build_event_id__progress_id__init(pid);
	build_event_stream__progress__init(p);
	pid->opaque_count = count;
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
	id->progress = pid;
	m->id = id;
	m->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS;
	m->progress = p;
	m->last_message = last;
	if (nkids) {
		m->children = ev_event_alloc(ev, sizeof(*m->children) * (size_t)nkids);
		m->n_children = (size_t)nkids;
		for (int i = 0; i < nkids; i++) {
			BuildEventStream__BuildEventId *c = ev_event_alloc(ev, sizeof(*c));
			BuildEventStream__BuildEventId__ProgressId *cp = ev_event_alloc(ev, sizeof(*cp));
			build_event_stream__build_event_id__init(c);
			build_event_stream__build_event_id__progress_id__init(cp);
			cp->opaque_count = kids[i];
			c->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
			c->progress = cp;
			m->children[i] = c;
		}
	}
	return ev;
}

static void submit(ev_gate *g, ev_event *ev, bool hold, uint64_t *ticket)
{
	tf_error err = { 0 };
	CHECK_INT_EQ(ev_gate_submit(g, ev, hold, ticket, &err), 0);
	ev_event_unref(ev);
}

#define ORDER(l, ...)                                                                  \
	do {                                                                           \
		const char *want[] = { __VA_ARGS__ };                                  \
		CHECK_INT_EQ((l).n, (int)(sizeof(want) / sizeof(want[0])));            \
		for (int i_ = 0; i_ < (l).n; i_++)                                     \
			CHECK_STR_EQ((l).order[i_], want[i_]);                         \
	} while (0)

int main(void)
{
	tf_error err = { 0 };
	uint64_t t2, t3;

	{ /* hold, announce, last */
		log_ l = { .n = 0 };
		ev_gate *g = ev_gate_new(record, &l);
		int k0[] = { 1, 2, 3, 4 }, k2[] = { 5 };
		submit(g, progress(0, k0, 4, false), false, NULL); /* first: needs no announcement */
		submit(g, progress(2, k2, 1, false), true, &t2);   /* held */
		submit(g, progress(5, NULL, 0, false), false, NULL); /* announced only by the held one */
		submit(g, progress(1, NULL, 0, false), false, NULL);
		submit(g, progress(4, NULL, 0, true), false, NULL); /* last_message: waits */
		submit(g, progress(3, NULL, 0, false), true, &t3);
		ORDER(l, "p0", "p1");
		CHECK_INT_EQ(ev_gate_pending(g), 4);
		CHECK_INT_EQ(ev_gate_release(g, t3, &err), 0);
		ORDER(l, "p0", "p1", "p3");
		CHECK_INT_EQ(ev_gate_release(g, t2, &err), 0);
		ORDER(l, "p0", "p1", "p3", "p2", "p5", "p4");
		CHECK_INT_EQ(ev_gate_pending(g), 0);
		CHECK(ev_gate_release(g, t2, &err) < 0);
		CHECK_CONTAINS(err.message, "is not held");
		ev_gate_free(g);
	}
	{ /* last_message arriving when nothing else is pending is emitted at once */
		log_ l = { .n = 0 };
		ev_gate *g = ev_gate_new(record, &l);
		int k0[] = { 1 };
		submit(g, progress(0, k0, 1, false), false, NULL);
		submit(g, progress(1, NULL, 0, true), false, NULL);
		ORDER(l, "p0", "p1");
		CHECK_INT_EQ(ev_gate_pending(g), 0);
		CHECK_INT_EQ(ev_gate_flush(g, &err), 0);
		ORDER(l, "p0", "p1");
		ev_gate_free(g);
	}
	{ /* flush: never-announced and still-held events in arrival order, last last */
		log_ l = { .n = 0 };
		ev_gate *g = ev_gate_new(record, &l);
		submit(g, progress(0, NULL, 0, false), false, NULL);
		submit(g, progress(8, NULL, 0, false), false, NULL); /* never announced */
		submit(g, progress(9, NULL, 0, false), true, &t2);   /* never released */
		submit(g, progress(7, NULL, 0, true), false, NULL);
		ORDER(l, "p0");
		CHECK_INT_EQ(ev_gate_flush(g, &err), 0);
		ORDER(l, "p0", "p8", "p9", "p7");
		ev_gate_free(g);
	}
	{ /* freeing with held events drops them without emitting */
		log_ l = { .n = 0 };
		ev_gate *g = ev_gate_new(record, &l);
		submit(g, progress(0, NULL, 0, false), true, &t2);
		ev_gate_free(g);
		CHECK_INT_EQ(l.n, 0);
	}
	return 0;
}
