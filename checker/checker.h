/* checker/ — the RemoteOutputChecker: the download policy, reading what an
 * executed action produced (ActionResult, Tree) into metadata, and the store
 * (store.h). Module prefix chk_ (st_ for the store). */
#ifndef TF_CHECKER_H
#define TF_CHECKER_H

#include <regex.h>
#include <stdbool.h>

#include "checker/store.h"
#include "core/core.h"

/* ---- policy ---------------------------------------------------------------- */

#define CHK_MAX_REGEXES 256
#define CHK_MAX_GROUPS 256
#define CHK_MAX_TARGETS 100000

typedef struct chk_policy {
	tf_download_mode mode;
	regex_t *regexes;
	size_t n_regexes; /* compiled */
	char **regex_src;
	size_t n_regex_src;
	regex_t *filters; /* files of completed targets must match one (if any) */
	size_t n_filters;
	char **groups;
	size_t n_groups;
	char **targets; /* sorted, for bsearch */
	size_t n_targets;
} chk_policy;

/* Copies and compiles in; a bad regex is an error naming it. Does not block. */
int chk_policy_init(chk_policy *p, const tf_policy *in, tf_error *err);
void chk_policy_fini(chk_policy *p);

/* Fetch this output as soon as its action has executed? (mode all, or a
 * regex matches its exec-root-relative path.) */
bool chk_policy_fetch_on_execution(const chk_policy *p, const char *exec_path);

/* Are the files of this completed target wanted (mode not minimal, and the
 * target is requested)? */
bool chk_policy_target_wanted(const chk_policy *p, const char *label);

/* Is this file of a completed target wanted (it matches a filter regex, or
 * there are none)? */
bool chk_policy_file_wanted(const chk_policy *p, const char *exec_path);

/* Is this output group of a completed target wanted? */
bool chk_policy_group_wanted(const chk_policy *p, const char *group);

/* ---- Tree blobs ---------------------------------------------------------------- */

#define CHK_TREE_MAX_DEPTH 128
#define CHK_TREE_MAX_ENTRIES 1000000

typedef enum chk_entry_kind { CHK_ENTRY_FILE, CHK_ENTRY_SYMLINK } chk_entry_kind;

/* One entry of a flattened Tree; pointers live for the callback only. */
typedef struct chk_tree_entry {
	chk_entry_kind kind;
	const char *path; /* dir_path + "/" + path inside the tree */
	tf_digest digest; /* files */
	bool executable;
	const char *symlink_target; /* symlinks */
} chk_tree_entry;

typedef int (*chk_tree_cb)(const chk_tree_entry *e, void *user);

/* Walks a serialized REAPI Tree (untrusted) and calls cb for every file and
 * symlink under dir_path. Children are found by the SHA-256 of their bytes
 * as sent. Names with '/', ".", "..", empty names, duplicate names in one
 * directory, unknown children, cycles, depth over CHK_TREE_MAX_DEPTH and
 * more than CHK_TREE_MAX_ENTRIES entries are refused with an error naming
 * the tree and the offending path; nothing is reported after an error.
 * Returns 0, the callback's non-zero value, or a negative error. */
int chk_tree_walk(const unsigned char *buf, size_t len, const char *tree_hash, const char *dir_path,
		  chk_tree_cb cb, void *user, tf_error *err);

/* ---- session (session.c; the public half is tf_session in topfetch.h) ---- */

typedef struct ev_event ev_event;

/* tf_session_build_event for an event already decoded (the event is
 * borrowed; the session takes its own references). */
int chk_session_post_event(tf_session *s, ev_event *ev, tf_error *err);

/* Records a file the caller knows by digest (and executable bit) before it
 * names it in a completed target, unless the store already has the path.
 * Does not block beyond the store. */
int chk_session_note_output(tf_session *s, const char *path, const tf_digest *dg, bool executable,
			    tf_error *err);

/* The bookkeeping of synthesized events (synth.c) for a session: a slot the
 * session owns and frees with chk_synth_free. */
typedef struct chk_synth chk_synth;
chk_synth **chk_session_synth_slot(tf_session *s);
void chk_synth_free(chk_synth *x);

#endif
