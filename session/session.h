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

/* The cap on TargetComplete events of one build (default 1,000,000): past
 * it, the event is refused with -E2BIG naming the target and the cap. For
 * tests, which cannot afford a million targets. */
void ses_set_max_targets(tf_session *s, size_t n);

/* ---- local.c: outputs no cache holds, from Bazel's own output tree ---- */

/* Makes dest (below rootfd, its folders walked without following symlinks)
 * a symlink to target, replacing what is there, when target is relative and
 * stays below rootfd; else -EXDEV and why says so. 0, or a negative code
 * with why. */
int ses_make_symlink(int rootfd, const char *dest, const char *target, char *why, size_t n);

/* The absolute path of a file:// URI (%XX decoded), malloc'd; NULL when uri
 * is not one. */
char *ses_file_uri_path(const char *uri);

/* Copies the regular file src (a symlink followed) to dest below rootfd
 * (its folders made and walked without following symlinks) atomically,
 * hashing it: *dg its digest, *exec whether src is executable. Blocks on
 * disk I/O. 0, or a negative code with err naming the file. */
int ses_copy_local(const char *src, int rootfd, const char *dest, bool *exec, tf_digest *dg, tf_error *err);

#endif
