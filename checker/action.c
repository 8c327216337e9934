/* An executed action's ActionResult read into outputs, each with the
 * policy's decision about it now; and the decisions about a completed
 * target and its files. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "checker/checker.h"
#include "proto/wire.h"
#include "remote_execution.pb-c.h"

/* The decoded message lives in an arena freed at once: protobuf-c would
 * otherwise malloc (and later free) every OutputFile, Digest and string,
 * several times per output of every action. Its size follows the input
 * (what protobuf-c asks for is bounded by the bytes it decodes). */
#define ARENA_BLOCK (64u << 10)

typedef struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	max_align_t data[];
} arena_block;

struct chk_action {
	Build__Bazel__Remote__Execution__V2__ActionResult *ar;
	char action_key[TF_HASH_HEX_LEN + 1];
	arena_block *blocks; /* newest first */
	size_t first_cap;    /* size of the first block: from the input's size */
};

static void *arena_alloc(void *user, size_t n)
{
	chk_action *a = user;
	arena_block *b = a->blocks;

	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (!b || b->cap - b->used < n) {
		size_t cap = a->blocks ? ARENA_BLOCK : a->first_cap;
		if (cap < n)
			cap = n;
		if (!(b = malloc(sizeof(*b) + cap)))
			return NULL;
		b->next = a->blocks;
		b->used = 0;
		b->cap = cap;
		a->blocks = b;
	}
	b->used += n;
	return (char *)b->data + b->used - n;
}

/* Everything goes when the arena does. */
static void arena_free(void *user, void *p)
{
	(void)user;
	(void)p;
}

static void arena_fini(chk_action *a)
{
	for (arena_block *b = a->blocks, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	a->blocks = NULL;
}

const char *tf_decision_reason_name(tf_decision_reason r)
{
	switch (r) {
	case TF_REASON_MODE_ALL: return "mode all";
	case TF_REASON_REGEX: return "regex";
	case TF_REASON_LATER: return "not now: fetched if a completed target names it";
	case TF_REASON_NO_BYTES: return "symlink: no bytes";
	case TF_REASON_TOPLEVEL: return "top-level";
	case TF_REASON_TARGET_NOT_WANTED: return "target not wanted";
	case TF_REASON_GROUP_NOT_WANTED: return "output group not wanted";
	case TF_REASON_FILTERED: return "filtered out";
	}
	return "?";
}

int chk_action_decode(const char *action_key, const void *bytes, size_t len, chk_action **out, tf_error *err)
{
	Build__Bazel__Remote__Execution__V2__ActionResult *ar;
	chk_action *a;
	tf_digest dg;
	int r = 0;

	*out = NULL;
	if (!action_key || !tf__is_sha256_hex(action_key, strlen(action_key)))
		return tf__errf(err, -EINVAL, "action key '%.80s' is not a SHA-256 digest",
				action_key ? action_key : "");
	/* protobuf-c would cut a string at a NUL byte (pkg/a.txt\0zz would be
	 * taken as pkg/a.txt): strings must be UTF-8 without NUL. */
	if ((r = pw_check(&build__bazel__remote__execution__v2__action_result__descriptor, bytes, len,
			  &(pw_check_opts){ .strict_strings = true }, err)) < 0)
		return tf__err_prefix(err, "the ActionResult of action %s (%zu bytes) does not decode", action_key, len);
	if (!(a = calloc(1, sizeof(*a))))
		return tf__errf(err, -ENOMEM, "out of memory");
	/* Decoded, an output takes about twice its wire size. */
	a->first_cap = len < ARENA_BLOCK / 2 ? ARENA_BLOCK : 2 * len + ARENA_BLOCK / 4;
	ar = build__bazel__remote__execution__v2__action_result__unpack(
		&(ProtobufCAllocator){ .alloc = arena_alloc, .free = arena_free, .allocator_data = a }, len, bytes);
	if (!ar) {
		chk_action_free(a);
		return tf__errf(err, -EBADMSG, "the ActionResult of action %s (%zu bytes) does not decode",
				action_key, len);
	}
	/* Check everything before anything is reported. (Messages get their
	 * context only when something is wrong: this loop runs for every
	 * output of every action.) */
	for (size_t i = 0; i < ar->n_output_files && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputFile *f = ar->output_files[i];
		r = tf__path_check(f->path, "output file", err);
		if (r == 0 && (!f->digest || tf_digest_parse(f->digest->hash ? f->digest->hash : "",
							     f->digest->size_bytes, &dg, err) < 0))
			r = f->digest ? err->code : tf__errf(err, -EINVAL, "output file '%s' has no digest", f->path);
		if (r < 0)
			tf__err_prefix(err, "output file %zu", i);
	}
	for (size_t i = 0; i < ar->n_output_directories && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *d = ar->output_directories[i];
		r = tf__path_check(d->path, "output directory", err);
		if (r == 0 && (!d->tree_digest ||
			       tf_digest_parse(d->tree_digest->hash ? d->tree_digest->hash : "",
					       d->tree_digest->size_bytes, &dg, err) < 0))
			r = d->tree_digest ? err->code
					   : tf__errf(err, -EINVAL, "output directory '%s' has no tree digest", d->path);
		if (r < 0)
			tf__err_prefix(err, "output directory %zu", i);
	}
	for (size_t i = 0; i < ar->n_output_symlinks && r == 0; i++)
		r = tf__path_check(ar->output_symlinks[i]->path, "output symlink", err);
	for (size_t i = 0; i < ar->n_output_file_symlinks && r == 0; i++)
		r = tf__path_check(ar->output_file_symlinks[i]->path, "output file symlink", err);
	for (size_t i = 0; i < ar->n_output_directory_symlinks && r == 0; i++)
		r = tf__path_check(ar->output_directory_symlinks[i]->path, "output directory symlink", err);
	if (r < 0) {
		chk_action_free(a);
		return tf__err_prefix(err, "refusing the ActionResult of action %s", action_key);
	}
	a->ar = ar;
	memcpy(a->action_key, action_key, TF_HASH_HEX_LEN + 1);
	*out = a;
	return 0;
}

void chk_action_free(chk_action *a)
{
	if (!a)
		return;
	arena_fini(a);
	free(a);
}

/* Fetch now? Mode all, or a regex; else later (or never, for symlinks). */
static void decide_now(const chk_policy *p, chk_output *out)
{
	if (out->o.kind == ST_KIND_SYMLINK) {
		out->wanted = false;
		out->reason = TF_REASON_NO_BYTES;
	} else if (p->mode == TF_DOWNLOAD_ALL) {
		out->wanted = true;
		out->reason = TF_REASON_MODE_ALL;
	} else if (chk_policy_fetch_on_execution(p, out->o.path)) {
		out->wanted = true;
		out->reason = TF_REASON_REGEX;
	} else {
		out->wanted = false;
		out->reason = TF_REASON_LATER;
	}
}

static void set_digest(chk_output *out, const Build__Bazel__Remote__Execution__V2__Digest *d)
{
	/* Checked by chk_action_decode. */
	memcpy(out->digest.hash, d->hash, TF_HASH_HEX_LEN + 1);
	out->digest.size = d->size_bytes;
	out->o.hash = out->digest.hash;
	out->o.size = d->size_bytes;
}

int chk_action_each(const chk_action *a, const chk_policy *p, const char *target, chk_output_cb cb, void *user,
		    tf_error *err)
{
	const Build__Bazel__Remote__Execution__V2__ActionResult *ar = a->ar;
	int r = 0;

	for (size_t i = 0; i < ar->n_output_files && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputFile *f = ar->output_files[i];
		chk_output out = { .o = { .path = f->path, .executable = f->is_executable, .kind = ST_KIND_FILE,
					  .action_key = a->action_key, .target = target } };
		set_digest(&out, f->digest);
		decide_now(p, &out);
		r = cb(&out, user, err);
	}
	for (size_t i = 0; i < ar->n_output_directories && r == 0; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *d = ar->output_directories[i];
		chk_output out = { .o = { .path = d->path, .kind = ST_KIND_DIRECTORY, .action_key = a->action_key,
					  .target = target } };
		set_digest(&out, d->tree_digest);
		decide_now(p, &out);
		r = cb(&out, user, err);
	}
	{
		Build__Bazel__Remote__Execution__V2__OutputSymlink **lists[3] = {
			ar->output_symlinks, ar->output_file_symlinks, ar->output_directory_symlinks
		};
		size_t counts[3] = { ar->n_output_symlinks, ar->n_output_file_symlinks,
				     ar->n_output_directory_symlinks };
		for (int k = 0; k < 3; k++)
			for (size_t i = 0; i < counts[k] && r == 0; i++) {
				chk_output out = { .o = { .path = lists[k][i]->path, .kind = ST_KIND_SYMLINK,
							  .symlink_target = lists[k][i]->target,
							  .action_key = a->action_key, .target = target } };
				decide_now(p, &out);
				r = cb(&out, user, err);
			}
	}
	return r;
}

bool chk_decide_target(const chk_policy *p, const char *label, bool success, tf_decision_reason *why)
{
	bool wanted = success && chk_policy_target_wanted(p, label);

	*why = wanted ? TF_REASON_TOPLEVEL : TF_REASON_TARGET_NOT_WANTED;
	return wanted;
}

bool chk_decide_target_file(const chk_policy *p, bool target_wanted, const char *group, const char *exec_path,
			    tf_decision_reason *why)
{
	/* Bazel's --remote_download_regex adds a file, whatever its group or a
	 * filter say. */
	if (target_wanted && exec_path && chk_policy_regex_matches(p, exec_path)) {
		*why = TF_REASON_REGEX;
		return true;
	}
	if (!target_wanted)
		*why = TF_REASON_TARGET_NOT_WANTED;
	else if (!chk_policy_group_wanted(p, group))
		*why = TF_REASON_GROUP_NOT_WANTED;
	else if (exec_path && !chk_policy_file_wanted(p, exec_path))
		*why = TF_REASON_FILTERED;
	else
		*why = TF_REASON_TOPLEVEL;
	return *why == TF_REASON_TOPLEVEL;
}
