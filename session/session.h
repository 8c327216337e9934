/* session/ — one build: the only code that calls checker -> downloader ->
 * gate. Its public face is tf_session in include/topfetch.h; this header is
 * the folder's contract for the rest of the library and its tests. Prefix
 * ses_. May include every folder below it (core, proto, store, checker,
 * downloader, events). */
#ifndef TF_SESSION_H
#define TF_SESSION_H

#include "core/core.h"

typedef struct ev_event ev_event;

/* tf_session_build_event for an event already decoded (the event is
 * borrowed; the session takes its own references). Does not block on the
 * network. */
int ses_post_event(tf_session *s, ev_event *ev, tf_error *err);

#endif
