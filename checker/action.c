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

/* An ActionResult is read in one pass over its bytes with proto/'s field
 * reader, straight into what the checks and chk_action_each need: no
 * protobuf-c tree (a struct and a malloc per output, digest and string,
 * after a pw_check pass over the same bytes). The pass accepts exactly what
 * pw_check with strict strings and protobuf-c's unpack together accepted:
 * wire types of known fields, lengths, tags and length prefixes protobuf-c
 * can read, strings UTF-8 without NUL, and the fields the checker does not
 * use (execution_metadata, node_properties, ...) checked by pw_check
 * against their schema. When the pass finds anything wrong, pw_check is run
 * over the whole message to say what and where (field path, byte offset):
 * the messages are the ones pw_check gives, and the good path does not pay
 * for them. As protobuf-c: a field sent twice, the last one wins; a Digest
 * sent twice, the two are merged (a field the later one leaves empty keeps
 * the earlier value). */

typedef enum out_kind {
	/* chk_action_each's order: files, directories, then the three lists of
	 * symlinks (output_symlinks, output_file_symlinks,
	 * output_directory_symlinks). */
	OUT_FILE,
	OUT_DIR,
	OUT_SYMLINK,
	OUT_FILE_SYMLINK,
	OUT_DIR_SYMLINK,
	OUT_KINDS
} out_kind;

/* One output as sent; strings NUL-terminated in the action's copy. */
typedef struct act_out {
	const char *path;
	const char *target;   /* symlinks */
	const char *hash;     /* files, directories: the digest's hash ("" if it has none) */
	int64_t size;
	uint8_t kind;         /* out_kind */
	bool executable;
	bool has_digest;      /* the file's digest, the directory's tree_digest, was sent */
} act_out;

struct chk_action {
	char action_key[TF_HASH_HEX_LEN + 1];
	act_out *outs; /* in the order they came */
	size_t n_outs, cap_outs;
	size_t n_kind[OUT_KINDS];
	char *strings; /* paths, targets and hashes, each with its NUL; never more than the input */
	size_t strings_used;
};

/* The fast pass gave up: the message is refused, pw_check says why. */
#define REFUSED (-EBADMSG)

static const char no_string[] = "";

/* Reads the next field; refuses what protobuf-c could not read. */
static int next_field(const uint8_t *p, size_t n, size_t *pos, pw_field *f)
{
	int r = pw_next(p, n, pos, f, NULL);

	if (r > 0 && (f->tag_bytes > PW_PROTOBUF_C_PREFIX_MAX || f->len_bytes > PW_PROTOBUF_C_PREFIX_MAX))
		return REFUSED;
	return r < 0 ? REFUSED : r;
}

/* A string field: its wire type, and UTF-8 without NUL. */
static bool string_field(const pw_field *f)
{
	return f->wire_type == PW_LEN && pw_string_ok(f->data, (size_t)f->value);
}

/* A message field the checker does not read, checked against its schema. */
static bool other_message(const pw_field *f, const ProtobufCMessageDescriptor *d)
{
	tf_error ignored = { 0 };

	return f->wire_type == PW_LEN &&
	       pw_check(d, f->data, (size_t)f->value,
			&(pw_check_opts){ .strict_strings = true, .short_prefixes = true }, &ignored) == 0;
}

/* Copies a string field into the action (room is there: a string takes no
 * more than its field, tag and length included). */
static const char *keep_string(chk_action *a, const pw_field *f)
{
	char *s = a->strings + a->strings_used;

	memcpy(s, f->data, (size_t)f->value);
	s[f->value] = '\0';
	a->strings_used += (size_t)f->value + 1;
	return s;
}

/* A Digest: hash and size_bytes, merged into *o (NULL: checked only) as
 * protobuf-c merges a message field sent twice. */
static int read_digest(chk_action *a, const pw_field *m, act_out *o)
{
	pw_field hash = { 0 };
	size_t pos = 0;
	int64_t size = 0;
	pw_field f;
	int r;

	if (m->wire_type != PW_LEN)
		return REFUSED;
	while ((r = next_field(m->data, (size_t)m->value, &pos, &f)) > 0) {
		if (f.number == 1) {
			if (!string_field(&f))
				return REFUSED;
			hash = f;
		} else if (f.number == 2) {
			if (f.wire_type != PW_VARINT)
				return REFUSED;
			size = (int64_t)f.value;
		}
	}
	if (r < 0 || !o)
		return r;
	if (hash.value)
		o->hash = keep_string(a, &hash);
	if (size)
		o->size = size;
	o->has_digest = true;
	return 0;
}

/* One OutputFile, OutputDirectory or OutputSymlink. */
static int read_output(chk_action *a, const pw_field *m, out_kind kind)
{
	const ProtobufCMessageDescriptor *props = &build__bazel__remote__execution__v2__node_properties__descriptor;
	act_out o = { .path = no_string, .hash = no_string, .kind = (uint8_t)kind };
	size_t pos = 0;
	pw_field f;
	int r;

	if (m->wire_type != PW_LEN)
		return REFUSED;
	if (kind == OUT_SYMLINK || kind == OUT_FILE_SYMLINK || kind == OUT_DIR_SYMLINK)
		o.target = no_string;
	while ((r = next_field(m->data, (size_t)m->value, &pos, &f)) > 0) {
		bool ok = true;
		if (f.number == 1) {
			if ((ok = string_field(&f)))
				o.path = keep_string(a, &f);
		} else if (kind == OUT_FILE) {
			switch (f.number) {
			case 2: ok = read_digest(a, &f, &o) == 0; break;
			case 4: if ((ok = f.wire_type == PW_VARINT)) o.executable = f.value != 0; break;
			case 5: ok = f.wire_type == PW_LEN; break; /* contents */
			case 7: ok = other_message(&f, props); break;
			}
		} else if (kind == OUT_DIR) {
			switch (f.number) {
			case 3: ok = read_digest(a, &f, &o) == 0; break;
			case 4: ok = f.wire_type == PW_VARINT; break; /* is_topologically_sorted */
			case 5: ok = read_digest(a, &f, NULL) == 0; break; /* root_directory_digest */
			}
		} else {
			switch (f.number) {
			case 2: if ((ok = string_field(&f))) o.target = keep_string(a, &f); break;
			case 4: ok = other_message(&f, props); break;
			}
		}
		if (!ok)
			return REFUSED;
	}
	if (r < 0)
		return r;
	if (a->n_outs == a->cap_outs) {
		size_t cap = a->cap_outs ? 2 * a->cap_outs : 64;
		act_out *n = realloc(a->outs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		a->outs = n;
		a->cap_outs = cap;
	}
	a->outs[a->n_outs++] = o;
	a->n_kind[kind]++;
	return 0;
}

/* The one pass over the ActionResult. */
static int read_result(chk_action *a, const uint8_t *p, size_t n)
{
	size_t pos = 0;
	pw_field f;
	int r;

	while ((r = next_field(p, n, &pos, &f)) > 0) {
		bool ok = true;
		switch (f.number) {
		case 2: r = read_output(a, &f, OUT_FILE); break;
		case 3: r = read_output(a, &f, OUT_DIR); break;
		case 12: r = read_output(a, &f, OUT_SYMLINK); break;
		case 10: r = read_output(a, &f, OUT_FILE_SYMLINK); break;
		case 11: r = read_output(a, &f, OUT_DIR_SYMLINK); break;
		case 4: ok = f.wire_type == PW_VARINT; break; /* exit_code */
		case 5: case 7: ok = f.wire_type == PW_LEN; break; /* stdout_raw, stderr_raw */
		case 6: case 8: ok = read_digest(a, &f, NULL) == 0; break; /* stdout/stderr_digest */
		case 9:
			ok = other_message(&f, &build__bazel__remote__execution__v2__executed_action_metadata__descriptor);
			break;
		}
		if (r < 0)
			return r;
		if (!ok)
			return REFUSED;
	}
	return r;
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

static const char *const kind_what[OUT_KINDS] = {
	"output file", "output directory", "output symlink", "output file symlink", "output directory symlink",
};

/* Checks one output (path; digest of files and directories). i: its index
 * among its kind. */
static int check_output(const act_out *o, size_t i, tf_error *err)
{
	int r = tf__path_check(o->path, kind_what[o->kind], err);
	tf_digest dg;

	if (r < 0 || o->kind >= OUT_SYMLINK)
		goto out;
	if (!o->has_digest) {
		r = tf__errf(err, -EINVAL, "%s '%s' has no %s", kind_what[o->kind], o->path,
			     o->kind == OUT_FILE ? "digest" : "tree digest");
		goto out;
	}
	r = tf_digest_parse(o->hash, o->size, &dg, err);
out:
	if (r < 0 && o->kind < OUT_SYMLINK)
		tf__err_prefix(err, "%s %zu", kind_what[o->kind], i);
	return r;
}

int chk_action_decode(const char *action_key, const void *bytes, size_t len, chk_action **out, tf_error *err)
{
	chk_action *a;
	size_t seen[OUT_KINDS] = { 0 };
	int r;

	*out = NULL;
	if (!action_key || !tf__is_sha256_hex(action_key, strlen(action_key)))
		return tf__errf(err, -EINVAL, "action key '%.80s' is not a SHA-256 digest",
				action_key ? action_key : "");
	if (!(a = calloc(1, sizeof(*a))) || !(a->strings = malloc(len ? len : 1))) {
		chk_action_free(a);
		return tf__errf(err, -ENOMEM, "out of memory");
	}
	memcpy(a->action_key, action_key, TF_HASH_HEX_LEN + 1);
	r = read_result(a, bytes, len);
	if (r < 0) {
		chk_action_free(a);
		if (r == -ENOMEM)
			return tf__errf(err, -ENOMEM, "out of memory");
		/* Say what is wrong and where: strict strings (protobuf-c would
		 * cut pkg/a.txt\0zz at the NUL), and what protobuf-c can read. */
		r = pw_check(&build__bazel__remote__execution__v2__action_result__descriptor, bytes, len,
			     &(pw_check_opts){ .strict_strings = true, .short_prefixes = true }, err);
		if (r < 0)
			return tf__err_prefix(err, "the ActionResult of action %s (%zu bytes) does not decode",
					      action_key, len);
		return tf__errf(err, -EBADMSG, "the ActionResult of action %s (%zu bytes) does not decode",
				action_key, len);
	}
	/* Check everything before anything is reported, files first, then
	 * directories, then symlinks. (Messages get their context only when
	 * something is wrong: this runs for every output of every action.) */
	for (int k = 0; k < OUT_KINDS && r == 0; k++)
		for (size_t i = 0; i < a->n_outs && r == 0 && seen[k] < a->n_kind[k]; i++)
			if (a->outs[i].kind == k)
				r = check_output(&a->outs[i], seen[k]++, err);
	if (r < 0) {
		chk_action_free(a);
		return tf__err_prefix(err, "refusing the ActionResult of action %s", action_key);
	}
	*out = a;
	return 0;
}

void chk_action_free(chk_action *a)
{
	if (!a)
		return;
	free(a->outs);
	free(a->strings);
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

int chk_action_each(const chk_action *a, const chk_policy *p, const char *target, chk_output_cb cb, void *user,
		    tf_error *err)
{
	static const st_kind st_kinds[OUT_KINDS] = {
		ST_KIND_FILE, ST_KIND_DIRECTORY, ST_KIND_SYMLINK, ST_KIND_SYMLINK, ST_KIND_SYMLINK,
	};
	int r = 0;

	for (int k = 0; k < OUT_KINDS && r == 0; k++) {
		size_t left = a->n_kind[k];
		for (size_t i = 0; i < a->n_outs && r == 0 && left > 0; i++) {
			const act_out *o = &a->outs[i];
			chk_output out;
			if (o->kind != k)
				continue;
			left--;
			out = (chk_output){ .o = { .path = o->path, .executable = o->executable, .kind = st_kinds[k],
						   .symlink_target = o->target, .action_key = a->action_key,
						   .target = target } };
			if (k < OUT_SYMLINK) {
				/* Checked by chk_action_decode. */
				memcpy(out.digest.hash, o->hash, TF_HASH_HEX_LEN + 1);
				out.digest.size = o->size;
				out.o.hash = out.digest.hash;
				out.o.size = o->size;
			}
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
