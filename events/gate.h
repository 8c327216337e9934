/* The gate (gate.c): part of the events/ contract, included by events.h. */
#ifndef TF_EVENTS_GATE_H
#define TF_EVENTS_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

typedef struct ev_event ev_event;
typedef struct ev_gate ev_gate;

/* Receives each event the gate releases, in release order. The event is
 * borrowed. A negative return is sticky: later gate calls report it. */
typedef int (*ev_gate_emit_fn)(ev_event *ev, void *user, tf_error *err);

/* A gate sending to emit. NULL when out of memory. */
ev_gate *ev_gate_new(ev_gate_emit_fn emit, void *user);

/* Frees the gate and drops every event it still holds (they are not
 * emitted). Accepts NULL. */
void ev_gate_free(ev_gate *g);

/* Submits the next event of the stream (the gate takes a reference). With
 * hold, it waits for ev_gate_release(*ticket); without, it is emitted as soon
 * as an emitted event has announced its id (the first event needs none), and
 * a last_message event only after every other submitted event. Emits
 * whatever becomes ready, synchronously. */
int ev_gate_submit(ev_gate *g, ev_event *ev, bool hold, uint64_t *ticket, tf_error *err);

/* Lifts the hold on a held event; it then follows the other rules. */
int ev_gate_release(ev_gate *g, uint64_t ticket, tf_error *err);

/* The held event behind ticket, to fill in before release (borrowed); NULL
 * when not held. */
ev_event *ev_gate_held_event(ev_gate *g, uint64_t ticket);

/* Submitted and not yet emitted. */
size_t ev_gate_pending(const ev_gate *g);
uint64_t ev_gate_emitted(const ev_gate *g);

/* At the end of a stream: emits everything still waiting (held or never
 * announced) in arrival order, the last_message event last. */
int ev_gate_flush(ev_gate *g, tf_error *err);

#endif
