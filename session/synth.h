/* session/synth.h — private to session/: builds the BuildEvents Bazel would
 * have posted for a build tool that has no BEP (prefix ses_synth_). It knows
 * nothing of the session; session.c posts what it builds. */
#ifndef TF_SESSION_SYNTH_H
#define TF_SESSION_SYNTH_H

#include "core/core.h"
#include "events/events.h"

/* The bookkeeping of one synthesized build: the Progress chain, the named
 * set numbering, the targets already reported. */
typedef struct ses_synth ses_synth;

/* NULL when out of memory. */
ses_synth *ses_synth_new(void);
/* Accepts NULL. */
void ses_synth_free(ses_synth *x);

/* BuildStarted (a random uuid, now, command "build"), announcing ProgressId 0
 * and BuildFinished: a new event in *out. Does not block. */
int ses_synth_started(ses_synth *x, ev_event **out, tf_error *err);

/* Checks a completed target's report (tf_session_target_completed's rules)
 * and builds, in posting order, the Progress link announcing what follows,
 * one NamedSetOfFiles per non-empty group and the TargetComplete: *out is a
 * malloc'd array of *n_out new events (the caller unrefs each and frees the
 * array). Nothing is built, and nothing recorded, when the report is refused. */
int ses_synth_target(ses_synth *x, const char *label, const char *configuration_id, const char *aspect,
		     const tf_output_group *groups, size_t n_groups, ev_event ***out, size_t *n_out, tf_error *err);

/* BuildFinished (exit_code with Bazel's name for it), the chain's last
 * Progress and BuildToolLogs with last_message, as three new events. */
int ses_synth_finished(ses_synth *x, int exit_code, ev_event *out[3], tf_error *err);

#endif
