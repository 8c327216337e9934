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

/* ---- release rules for named sets and targets ---------------------------------
 * The session tells the gate facts (a named set arrived; a target completed
 * and waits for N files; a file is settled, in place or not; a file's
 * digest) and the gate decides what to release and when. */

/* Submits a NamedSetOfFiles: held until a TargetComplete that reaches it
 * (directly or through other sets) is released; it then goes just before
 * that target, after the sets it references, with digest and length filled
 * in for files the gate knows a digest of. -EINVAL if ev is not a named set
 * with an id. */
int ev_gate_named_set(ev_gate *g, ev_event *ev, tf_error *err);

/* A fact for the named sets: the file at exec-root-relative path has this
 * digest (path and digest are copied). A later fact replaces an earlier one.
 * Tell it between a target's arrival (ev_gate_target) and its release, or
 * just before a target that is not waited for: facts are dropped whenever
 * no target is waiting. */
int ev_gate_file_digest(ev_gate *g, const char *path, const tf_digest *dg, tf_error *err);

/* Submits a TargetComplete. Without wait, the named sets it reaches are
 * released now and the event follows rules 2-3. With wait, it is held with
 * one hold of its own (drop it with one ev_gate_target_settled call once
 * every file has been announced with ev_gate_target_wait) and released when
 * every hold is settled: first its named sets, then the event, with
 * success = false and a failure detail naming the first failure if any
 * settle reported one. *ticket names it in later calls. */
int ev_gate_target(ev_gate *g, ev_event *ev, bool wait, uint64_t *ticket, tf_error *err);

/* The waiting target behind ticket waits for one more file. */
int ev_gate_target_wait(ev_gate *g, uint64_t ticket, tf_error *err);

/* One hold of the waiting target is settled: a file in place (failure NULL)
 * or not (failure says which file, digest and action, and what happened;
 * copied). A failure may also be reported without a matching wait, with
 * ev_gate_target_wait called first. Releases the target when it was the
 * last hold. */
int ev_gate_target_settled(ev_gate *g, uint64_t ticket, const char *failure, tf_error *err);

/* Does the gate still hold a named set this TargetComplete names (so that
 * its release would carry file facts)? */
bool ev_gate_target_holds_sets(const ev_gate *g, const ev_event *ev);

/* Waiting targets not released yet. */
size_t ev_gate_targets_waiting(const ev_gate *g);

/* Waiting targets released so far, and how many of them as failed. */
void ev_gate_target_counts(const ev_gate *g, uint64_t *released, uint64_t *failed);

/* At the end of a stream: emits everything still waiting (held or never
 * announced) in arrival order, the last_message event last. */
int ev_gate_flush(ev_gate *g, tf_error *err);

#endif
