/* checker/ — the RemoteOutputChecker: the download policy, reading what an
 * executed action produced (ActionResult, Tree) into outputs, and the
 * decisions about them. Module prefix chk_. May include core/, proto/ and
 * store/; it fetches nothing and releases nothing (that is session/). */
#ifndef TF_CHECKER_H
#define TF_CHECKER_H

#include <stdbool.h>

#include "store/store.h"
#include "core/core.h"

/* ---- policy ---------------------------------------------------------------- */

#define CHK_MAX_REGEXES 256
#define CHK_MAX_GROUPS 256
#define CHK_MAX_TARGETS 100000

typedef struct chk_policy {
	tf_download_mode mode;
	struct pcre2_real_code_8 **regexes; /* --remote_download_regex: whole-path matches */
	size_t n_regexes; /* compiled */
	char **regex_src;
	size_t n_regex_src;
	struct pcre2_real_code_8 **filters; /* files of completed targets must contain a match of one (if any) */
	size_t n_filters;
	/* Output groups after Bazel's +name/-name rules: a group is wanted when
	 * it is in groups, or (listed_groups) when it is listed and not hidden,
	 * and it is not in removed. */
	char **groups;
	size_t n_groups;
	char **removed;
	size_t n_removed;
	bool listed_groups;
	char **targets; /* sorted, for bsearch */
	size_t n_targets;
} chk_policy;

/* Copies and compiles in; a bad regex is an error naming it. Does not block. */
int chk_policy_init(chk_policy *p, const tf_policy *in, tf_error *err);
void chk_policy_fini(chk_policy *p);

/* Fetch this output as soon as its action has executed? (mode all, or a
 * regex matches its exec-root-relative path.) */
bool chk_policy_fetch_on_execution(const chk_policy *p, const char *exec_path);

/* Does a --remote_download_regex match the whole exec-root-relative path
 * (as Bazel's Matcher.matches())? Such a file is fetched whatever the mode,
 * its output group or a filter say. */
bool chk_policy_regex_matches(const chk_policy *p, const char *exec_path);

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

/* The same with a work budget: at most `budget` entries (and never more
 * than CHK_TREE_MAX_ENTRIES); over it, -E2BIG naming the budget and `whose`
 * (e.g. "the ActionResult of action KEY"), nothing reported. The caller
 * keeps one budget for all the Trees of one ActionResult, so that a small
 * ActionResult naming a large Tree many times is refused too. */
int chk_tree_walk_budget(const unsigned char *buf, size_t len, const char *tree_hash, const char *dir_path,
			 size_t budget, const char *whose, chk_tree_cb cb, void *user, tf_error *err);

/* ---- executed actions and decisions (action.c) ------------------------------ */

/* A decoded, checked ActionResult. */
typedef struct chk_action chk_action;

/* Decodes a serialized ActionResult (untrusted, borrowed) of action_key and
 * checks every output (paths relative and normalised, digests well formed)
 * before anything is reported: a bad one is refused with an error naming the
 * action, the output's index and path. Does not block. */
int chk_action_decode(const char *action_key, const void *bytes, size_t len, chk_action **out, tf_error *err);

/* Accepts NULL. */
void chk_action_free(chk_action *a);

/* One output of an executed action and the policy's decision about it now
 * (pointers valid during the callback). */
typedef struct chk_output {
	st_output o;      /* path, hash, size, executable, kind, symlink target, action, target */
	tf_digest digest; /* files; directories: their Tree; empty for symlinks */
	bool wanted;      /* fetch now */
	tf_decision_reason reason;
} chk_output;

typedef int (*chk_output_cb)(const chk_output *out, void *user, tf_error *err);

/* Calls cb for every output of a (files, then directories, then symlinks),
 * with target as the label. Returns 0 or cb's first non-zero value. */
int chk_action_each(const chk_action *a, const chk_policy *p, const char *target, chk_output_cb cb, void *user,
		    tf_error *err);

/* Are a completed target's files wanted (it succeeded, the mode is not
 * minimal, and it is requested)? *why says which. */
bool chk_decide_target(const chk_policy *p, const char *label, bool success, tf_decision_reason *why);

/* Is this file (exec_path; NULL for one not yet known by path) of group of a
 * completed target wanted? *why says which rule decided. */
bool chk_decide_target_file(const chk_policy *p, bool target_wanted, const char *group, const char *exec_path,
			    tf_decision_reason *why);

#endif
