/* The NamedSetOfFiles graph. Bazel reports a target's outputs as a DAG of
 * named sets (its NestedSets): a set lists some files and the ids of other
 * sets; sets are shared between targets and nest deeply. Flattening a set
 * by plain recursion visits a shared subset once per path to it, which is
 * exponential on diamonds and quadratic when 10,000 targets share a chain.
 *
 * Here:
 *  - every File gets a small integer id when its set is stored, equal Files
 *    (same path_prefix, name and location) sharing one id;
 *  - references are resolved (ids looked up, cycles and depth checked) once
 *    per set over the graph's life, by an iterative DFS whose result is
 *    remembered (state RESOLVED, depth known);
 *  - an expansion bumps an epoch and walks the reachable sets with an
 *    explicit stack, skipping any set or file already stamped with this
 *    epoch: linear in what it reaches, never revisiting.
 * No recursion anywhere, so a deep chain cannot overflow the C stack. */
#include "events/events_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NODE_NEW, NODE_ACTIVE, NODE_RESOLVED };

struct set_node {
	ev_event *ev;
	const BuildEventStream__NamedSetOfFiles *set;
	const char *id;
	uint64_t hash;
	uint32_t *fids; /* one per set->files[i] */
	uint32_t *kids; /* one per set->file_sets[i]: node index, valid once resolved */
	uint32_t epoch;
	uint32_t depth; /* longest chain from here, this set included; once resolved */
	uint8_t state;
};

struct file_slot {
	uint64_t hash;
	uint32_t fid; /* + 1; 0 = empty */
};

struct frame {
	uint32_t node;
	uint32_t next; /* resolve: next kid; expand: next file, then kids */
};

struct ev_sets {
	ev_sets_options o;

	struct set_node *nodes;
	size_t n_nodes, cap_nodes;
	uint32_t *ids; /* open addressing: node index + 1, 0 = empty */
	size_t ids_mask;

	struct file_slot *ftab;
	size_t ftab_mask;
	const BuildEventStream__File **files; /* first File seen with each fid */
	uint32_t *fepoch;
	size_t n_files, cap_files;
	size_t entries; /* File entries over all sets */

	/* DFS stack, shared by resolution and expansion (never both at once:
	 * resolution runs inside expand_begin). */
	struct frame *stack;
	size_t sp, cap_stack;

	/* The current expansion. */
	bool active;
	uint32_t epoch;
	uint32_t *roots;
	size_t n_roots, cap_roots, root_pos;
	const BuildEventStream__File **inl;
	size_t n_inl, cap_inl, inl_pos;
	BuildEventStream__BuildEventId__NamedSetOfFilesId **tmp_ids;
	size_t cap_tmp_ids;
};

void ev_sets_options_init(ev_sets_options *o)
{
	o->max_sets = EV_DEFAULT_MAX_SETS;
	o->max_files = EV_DEFAULT_MAX_FILES;
	o->max_depth = EV_DEFAULT_MAX_SET_DEPTH;
}

ev_sets *ev_sets_new(const ev_sets_options *opts, tf_error *err)
{
	ev_sets *s = calloc(1, sizeof(*s));

	if (!s) {
		tf__errf(err, -ENOMEM, "out of memory for the named-set graph");
		return NULL;
	}
	if (opts)
		s->o = *opts;
	else
		ev_sets_options_init(&s->o);
	if (s->o.max_sets == 0 || s->o.max_sets > UINT32_MAX - 1)
		s->o.max_sets = s->o.max_sets == 0 ? EV_DEFAULT_MAX_SETS : UINT32_MAX - 1;
	if (s->o.max_files == 0 || s->o.max_files > UINT32_MAX - 1)
		s->o.max_files = s->o.max_files == 0 ? EV_DEFAULT_MAX_FILES : UINT32_MAX - 1;
	if (s->o.max_depth == 0)
		s->o.max_depth = EV_DEFAULT_MAX_SET_DEPTH;
	return s;
}

void ev_sets_free(ev_sets *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_nodes; i++) {
		free(s->nodes[i].fids);
		ev_event_unref(s->nodes[i].ev);
	}
	free(s->nodes);
	free(s->ids);
	free(s->ftab);
	free(s->files);
	free(s->fepoch);
	free(s->stack);
	free(s->roots);
	free(s->inl);
	free(s->tmp_ids);
	free(s);
}

size_t ev_sets_count(const ev_sets *s)
{
	return s->n_nodes;
}

size_t ev_sets_distinct_files(const ev_sets *s)
{
	return s->n_files;
}

/* ---- hashing ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	h ^= (uint64_t)n * 0x9e3779b97f4a7c15ull;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
		s += 8;
		n -= 8;
	}
	if (n) {
		uint64_t w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
	return hash_bytes(h, s ? s : "", s ? strlen(s) : 0);
}

static uint64_t file_hash(const BuildEventStream__File *f)
{
	uint64_t h = 0x243f6a8885a308d3ull;

	for (size_t i = 0; i < f->n_path_prefix; i++)
		h = hash_str(h, f->path_prefix[i]);
	h = hash_str(h ^ 1, f->name);
	h ^= (uint64_t)f->file_case << 56;
	switch (f->file_case) {
	case BUILD_EVENT_STREAM__FILE__FILE_URI:
		h = hash_str(h, f->uri);
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH:
		h = hash_str(h, f->symlink_target_path);
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_CONTENTS:
		h = hash_bytes(h, f->contents.data, f->contents.len);
		break;
	default:
		break;
	}
	/* Bazel 7's digest: one path with two digests is two files (a conflict
	 * the session reports), never one silently dropped. */
	h = hash_str(h ^ 2, f->digest);
	return mix64(h);
}

static bool str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool file_eq(const BuildEventStream__File *a, const BuildEventStream__File *b)
{
	if (a->n_path_prefix != b->n_path_prefix || a->file_case != b->file_case ||
	    !str_eq(a->name, b->name) || !str_eq(a->digest, b->digest) || a->length != b->length)
		return false;
	for (size_t i = 0; i < a->n_path_prefix; i++)
		if (!str_eq(a->path_prefix[i], b->path_prefix[i]))
			return false;
	switch (a->file_case) {
	case BUILD_EVENT_STREAM__FILE__FILE_URI:
		return str_eq(a->uri, b->uri);
	case BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH:
		return str_eq(a->symlink_target_path, b->symlink_target_path);
	case BUILD_EVENT_STREAM__FILE__FILE_CONTENTS:
		return a->contents.len == b->contents.len &&
		       (a->contents.len == 0 ||
			memcmp(a->contents.data, b->contents.data, a->contents.len) == 0);
	default:
		return true;
	}
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t nc = *cap ? *cap : 16;
	void *np;

	if (need <= *cap)
		return 0;
	while (nc < need)
		nc *= 2;
	np = realloc(*p, nc * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = nc;
	return 0;
}

/* ---- the id table --------------------------------------------------------------- */

static long id_lookup(const ev_sets *s, const char *id, uint64_t h)
{
	if (!s->ids)
		return -1;
	for (size_t i = h & s->ids_mask;; i = (i + 1) & s->ids_mask) {
		uint32_t v = s->ids[i];
		if (v == 0)
			return -1;
		if (s->nodes[v - 1].hash == h && strcmp(s->nodes[v - 1].id, id) == 0)
			return (long)(v - 1);
	}
}

static int id_table_grow(ev_sets *s)
{
	size_t size = s->ids ? (s->ids_mask + 1) * 2 : 64;
	uint32_t *t;

	if ((s->n_nodes + 1) * 2 <= (s->ids ? s->ids_mask + 1 : 0))
		return 0;
	t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t n = 0; n < s->n_nodes; n++) {
		size_t i = s->nodes[n].hash & (size - 1);
		while (t[i])
			i = (i + 1) & (size - 1);
		t[i] = (uint32_t)n + 1;
	}
	free(s->ids);
	s->ids = t;
	s->ids_mask = size - 1;
	return 0;
}

/* ---- the file table ------------------------------------------------------------- */

static int ftab_grow(ev_sets *s, size_t want_files)
{
	size_t size = s->ftab ? s->ftab_mask + 1 : 0;
	struct file_slot *t;

	if (want_files * 2 <= size)
		return 0;
	if (size == 0)
		size = 1024;
	while (want_files * 2 > size)
		size *= 2;
	t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t j = 0; s->ftab && j <= s->ftab_mask; j++) {
		size_t i;
		if (!s->ftab[j].fid)
			continue;
		i = s->ftab[j].hash & (size - 1);
		while (t[i].fid)
			i = (i + 1) & (size - 1);
		t[i] = s->ftab[j];
	}
	free(s->ftab);
	s->ftab = t;
	s->ftab_mask = size - 1;
	return 0;
}

/* The fid of a File equal to f, or -1. *slot gets where it would go. */
static long file_lookup(const ev_sets *s, const BuildEventStream__File *f, uint64_t h, size_t *slot)
{
	size_t i;

	if (!s->ftab)
		return -1;
	for (i = h & s->ftab_mask;; i = (i + 1) & s->ftab_mask) {
		uint32_t v = s->ftab[i].fid;
		if (v == 0)
			break;
		if (s->ftab[i].hash == h && file_eq(s->files[v - 1], f))
			return (long)(v - 1);
	}
	if (slot)
		*slot = i;
	return -1;
}

/* ---- adding ------------------------------------------------------------------- */

int ev_sets_add(ev_sets *s, ev_event *ev, tf_error *err)
{
	const BuildEventStream__BuildEvent *m = ev ? ev->msg : NULL;
	const BuildEventStream__NamedSetOfFiles *set;
	struct set_node *n;
	const char *id;
	uint64_t h;
	long dup;
	size_t nf;

	if (!m || m->payload_case != BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES ||
	    !m->named_set_of_files)
		return tf__errf(err, -EINVAL, "record %llu is a '%s' event, not a named_set_of_files",
				ev ? (unsigned long long)ev->record : 0ull, ev_payload_name(m));
	if (!m->id || m->id->id_case != BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET ||
	    !m->id->named_set)
		return tf__errf(err, -EINVAL,
				"record %llu: named_set_of_files event without a named_set id",
				(unsigned long long)ev->record);
	set = m->named_set_of_files;
	id = m->id->named_set->id ? m->id->named_set->id : "";
	h = mix64(hash_str(0, id));
	dup = id_lookup(s, id, h);
	if (dup >= 0)
		return tf__errf(err, -EEXIST,
				"record %llu: named set '%.200s' was already defined by record %llu",
				(unsigned long long)ev->record, id,
				(unsigned long long)s->nodes[dup].ev->record);
	if (s->n_nodes >= s->o.max_sets)
		return tf__errf(err, -E2BIG,
				"record %llu: named set '%.200s' is one more than the cap of %zu named sets",
				(unsigned long long)ev->record, id, s->o.max_sets);
	nf = set->n_files;
	if (nf > s->o.max_files - s->entries)
		return tf__errf(err, -E2BIG,
				"record %llu: named set '%.200s' brings the files in named sets to %zu, over the cap of %zu",
				(unsigned long long)ev->record, id, s->entries + nf, s->o.max_files);
	if (grow((void **)&s->nodes, &s->cap_nodes, s->n_nodes + 1, sizeof(*s->nodes)) < 0 ||
	    id_table_grow(s) < 0 || ftab_grow(s, s->n_files + nf) < 0)
		goto nomem;
	if (s->n_files + nf > s->cap_files) {
		/* files and fepoch share one capacity. */
		size_t cap = s->cap_files ? s->cap_files : 1024;
		const BuildEventStream__File **nfiles;
		uint32_t *fe;
		while (cap < s->n_files + nf)
			cap *= 2;
		nfiles = realloc(s->files, cap * sizeof(*nfiles));
		if (!nfiles)
			goto nomem;
		s->files = nfiles;
		fe = realloc(s->fepoch, cap * sizeof(*fe));
		if (!fe)
			goto nomem;
		s->fepoch = fe;
		s->cap_files = cap;
	}
	n = &s->nodes[s->n_nodes];
	memset(n, 0, sizeof(*n));
	if (nf + set->n_file_sets > 0) {
		n->fids = malloc((nf + set->n_file_sets) * sizeof(uint32_t));
		if (!n->fids)
			goto nomem;
		n->kids = n->fids + nf;
	}
	for (size_t i = 0; i < nf; i++) {
		const BuildEventStream__File *f = set->files[i];
		uint64_t fh = file_hash(f);
		size_t slot = 0;
		long fid = file_lookup(s, f, fh, &slot);
		if (fid < 0) {
			fid = (long)s->n_files++;
			s->files[fid] = f;
			s->fepoch[fid] = 0;
			s->ftab[slot].hash = fh;
			s->ftab[slot].fid = (uint32_t)fid + 1;
		}
		n->fids[i] = (uint32_t)fid;
	}
	n->ev = ev_event_ref(ev);
	n->set = set;
	n->id = id;
	n->hash = h;
	n->state = NODE_NEW;
	{
		size_t i = h & s->ids_mask;
		while (s->ids[i])
			i = (i + 1) & s->ids_mask;
		s->ids[i] = (uint32_t)s->n_nodes + 1;
	}
	s->n_nodes++;
	s->entries += nf;
	return 0;
nomem:
	return tf__errf(err, -ENOMEM, "record %llu: out of memory storing named set '%.200s'",
			(unsigned long long)ev->record, id);
}

/* ---- resolving references ------------------------------------------------------- */

static const char *ref_id(const BuildEventStream__BuildEventId__NamedSetOfFilesId *r)
{
	return r && r->id ? r->id : "";
}

static int push(ev_sets *s, uint32_t node)
{
	if (grow((void **)&s->stack, &s->cap_stack, s->sp + 1, sizeof(*s->stack)) < 0)
		return -ENOMEM;
	s->stack[s->sp].node = node;
	s->stack[s->sp].next = 0;
	s->sp++;
	return 0;
}

static int cycle_error(ev_sets *s, uint32_t again, tf_error *err)
{
	char path[600];
	size_t n = 0, from = 0;

	while (from < s->sp && s->stack[from].node != again)
		from++;
	for (size_t i = from; i < s->sp && n < sizeof(path) - 1; i++)
		n += (size_t)snprintf(path + n, sizeof(path) - n, "'%.100s' -> ",
				      s->nodes[s->stack[i].node].id);
	if (n < sizeof(path) - 1)
		snprintf(path + n, sizeof(path) - n, "'%.100s'", s->nodes[again].id);
	return tf__errf(err, -ELOOP, "named set '%.200s' (record %llu) contains itself: %s",
			s->nodes[again].id, (unsigned long long)s->nodes[again].ev->record, path);
}

/* Resolves the graph below `root` once and for all. On error nothing stays
 * half-resolved: every set on the stack goes back to NEW. */
static int resolve(ev_sets *s, uint32_t root, const char *referrer, tf_error *err)
{
	int rc = 0;

	if (s->nodes[root].state == NODE_RESOLVED)
		return 0;
	s->sp = 0;
	if (push(s, root) < 0)
		goto nomem;
	s->nodes[root].state = NODE_ACTIVE;
	s->nodes[root].depth = 1;
	while (s->sp > 0) {
		struct frame *fr = &s->stack[s->sp - 1];
		struct set_node *n = &s->nodes[fr->node];

		if (fr->next < n->set->n_file_sets) {
			const char *cid = ref_id(n->set->file_sets[fr->next]);
			long c = id_lookup(s, cid, mix64(hash_str(0, cid)));
			struct set_node *cn;

			if (c < 0) {
				rc = tf__errf(err, -ENOENT,
					      "named set '%.200s' is unknown: referenced by named set '%.200s' (record %llu)",
					      cid, n->id, (unsigned long long)n->ev->record);
				goto unwind;
			}
			n->kids[fr->next++] = (uint32_t)c;
			cn = &s->nodes[c];
			if (cn->state == NODE_ACTIVE) {
				rc = cycle_error(s, (uint32_t)c, err);
				goto unwind;
			}
			if (cn->state == NODE_RESOLVED) {
				if (cn->depth + 1 > n->depth)
					n->depth = cn->depth + 1;
				if (n->depth > s->o.max_depth)
					goto too_deep;
				continue;
			}
			if (s->sp >= s->o.max_depth) {
				rc = tf__errf(err, -E2BIG,
					      "named sets nest deeper than the cap of %u: the chain from '%.200s' (referenced by %s) reaches '%.200s' (record %llu) at depth %zu",
					      s->o.max_depth, s->nodes[s->stack[0].node].id, referrer,
					      cn->id, (unsigned long long)cn->ev->record, s->sp + 1);
				goto unwind;
			}
			if (push(s, (uint32_t)c) < 0)
				goto nomem;
			cn->state = NODE_ACTIVE;
			cn->depth = 1;
			continue;
		}
		n->state = NODE_RESOLVED;
		s->sp--;
		if (s->sp > 0) {
			struct set_node *p = &s->nodes[s->stack[s->sp - 1].node];
			if (n->depth + 1 > p->depth)
				p->depth = n->depth + 1;
			if (p->depth > s->o.max_depth) {
				n = p;
				goto too_deep;
			}
		}
		continue;
too_deep:
		rc = tf__errf(err, -E2BIG,
			      "named set '%.200s' (record %llu) nests %u levels deep, over the cap of %u (reached from '%.200s', referenced by %s)",
			      n->id, (unsigned long long)n->ev->record, n->depth, s->o.max_depth,
			      s->nodes[s->stack[0].node].id, referrer);
		goto unwind;
	}
	return 0;
nomem:
	rc = tf__errf(err, -ENOMEM, "out of memory resolving named set '%.200s'",
		      s->nodes[root].id);
unwind:
	for (size_t i = 0; i < s->sp; i++)
		if (s->nodes[s->stack[i].node].state == NODE_ACTIVE)
			s->nodes[s->stack[i].node].state = NODE_NEW;
	s->sp = 0;
	return rc;
}

/* ---- expanding ----------------------------------------------------------------- */

static void next_epoch(ev_sets *s)
{
	if (++s->epoch != 0)
		return;
	/* Wrapped after 2^32 expansions: forget every stamp. */
	for (size_t i = 0; i < s->n_nodes; i++)
		s->nodes[i].epoch = 0;
	for (size_t i = 0; i < s->n_files; i++)
		s->fepoch[i] = 0;
	s->epoch = 1;
}

int ev_sets_expand_begin(ev_sets *s, BuildEventStream__BuildEventId__NamedSetOfFilesId *const *ids,
			 size_t n_ids, BuildEventStream__File *const *inline_files, size_t n_inline,
			 const char *referrer, tf_error *err)
{
	uint32_t depth = 0;
	int rc;

	s->active = false;
	s->sp = 0;
	if (!referrer)
		referrer = "the request";
	if (grow((void **)&s->roots, &s->cap_roots, n_ids, sizeof(*s->roots)) < 0 ||
	    grow((void **)&s->inl, &s->cap_inl, n_inline, sizeof(*s->inl)) < 0)
		return tf__errf(err, -ENOMEM, "out of memory expanding named sets for %s", referrer);
	for (size_t i = 0; i < n_ids; i++) {
		const char *id = ref_id(ids[i]);
		long c = id_lookup(s, id, mix64(hash_str(0, id)));

		if (c < 0)
			return tf__errf(err, -ENOENT, "named set '%.200s' is unknown: referenced by %s",
					id, referrer);
		rc = resolve(s, (uint32_t)c, referrer, err);
		if (rc < 0)
			return rc;
		s->roots[i] = (uint32_t)c;
		if (s->nodes[c].depth > depth)
			depth = s->nodes[c].depth;
	}
	/* The walk never goes deeper than the deepest root: size the stack
	 * now so that ev_sets_expand_next cannot fail. */
	if (grow((void **)&s->stack, &s->cap_stack, depth, sizeof(*s->stack)) < 0)
		return tf__errf(err, -ENOMEM, "out of memory expanding named sets for %s", referrer);
	for (size_t i = 0; i < n_inline; i++)
		s->inl[i] = inline_files[i];
	s->n_roots = n_ids;
	s->root_pos = 0;
	s->n_inl = n_inline;
	s->inl_pos = 0;
	next_epoch(s);
	s->active = true;
	return 0;
}

int ev_sets_expand_target(ev_sets *s, const ev_event *ev, const char *group, tf_error *err)
{
	const BuildEventStream__BuildEvent *m = ev ? ev->msg : NULL;
	const BuildEventStream__TargetComplete *tc;
	BuildEventStream__File **inl = NULL;
	char referrer[600];
	const char *label = "?", *aspect = "";
	size_t n_ids = 0, n_inl = 0, cap_inl = 0;
	int rc;

	s->active = false;
	if (!m || m->payload_case != BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED ||
	    !m->completed)
		return tf__errf(err, -EINVAL, "record %llu is a '%s' event, not a TargetComplete",
				ev ? (unsigned long long)ev->record : 0ull, ev_payload_name(m));
	tc = m->completed;
	if (m->id && m->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED &&
	    m->id->target_completed) {
		label = m->id->target_completed->label ? m->id->target_completed->label : "";
		aspect = m->id->target_completed->aspect ? m->id->target_completed->aspect : "";
	}
	snprintf(referrer, sizeof(referrer), "TargetComplete %.300s%s%.200s (record %llu)", label,
		 *aspect ? " aspect " : "", aspect, (unsigned long long)ev->record);
	for (size_t g = 0; g < tc->n_output_group; g++) {
		const BuildEventStream__OutputGroup *og = tc->output_group[g];
		if (group && !str_eq(og->name, group))
			continue;
		if (grow((void **)&s->tmp_ids, &s->cap_tmp_ids, n_ids + og->n_file_sets,
			 sizeof(*s->tmp_ids)) < 0 ||
		    grow((void **)&inl, &cap_inl, n_inl + og->n_inline_files, sizeof(*inl)) < 0) {
			free(inl);
			return tf__errf(err, -ENOMEM, "out of memory expanding %s", referrer);
		}
		for (size_t i = 0; i < og->n_file_sets; i++)
			s->tmp_ids[n_ids++] = og->file_sets[i];
		for (size_t i = 0; i < og->n_inline_files; i++)
			inl[n_inl++] = og->inline_files[i];
	}
	rc = ev_sets_expand_begin(s, s->tmp_ids, n_ids, inl, n_inl, referrer, err);
	free(inl);
	return rc;
}

const BuildEventStream__File *ev_sets_expand_next(ev_sets *s)
{
	if (!s->active)
		return NULL;
	while (s->inl_pos < s->n_inl) {
		const BuildEventStream__File *f = s->inl[s->inl_pos++];
		long fid = file_lookup(s, f, file_hash(f), NULL);
		if (fid >= 0) {
			if (s->fepoch[fid] == s->epoch)
				continue;
			s->fepoch[fid] = s->epoch;
		}
		return f;
	}
	for (;;) {
		struct frame *fr;
		struct set_node *n;

		if (s->sp == 0) {
			uint32_t r;
			if (s->root_pos == s->n_roots) {
				s->active = false;
				return NULL;
			}
			r = s->roots[s->root_pos++];
			if (s->nodes[r].epoch == s->epoch)
				continue;
			s->nodes[r].epoch = s->epoch;
			s->stack[s->sp].node = r;
			s->stack[s->sp++].next = 0;
		}
		fr = &s->stack[s->sp - 1];
		n = &s->nodes[fr->node];
		if (fr->next < n->set->n_files) {
			size_t i = fr->next++;
			uint32_t fid = n->fids[i];
			if (s->fepoch[fid] == s->epoch)
				continue;
			s->fepoch[fid] = s->epoch;
			return n->set->files[i];
		}
		if (fr->next < n->set->n_files + n->set->n_file_sets) {
			uint32_t c = n->kids[fr->next++ - n->set->n_files];
			if (s->nodes[c].epoch == s->epoch)
				continue;
			s->nodes[c].epoch = s->epoch;
			/* Within the stack sized by expand_begin: depth(c) <
			 * depth(parent) <= the deepest root's depth. */
			s->stack[s->sp].node = c;
			s->stack[s->sp++].next = 0;
			continue;
		}
		s->sp--;
	}
}

char *ev_file_exec_path(const BuildEventStream__File *f)
{
	size_t n = 0, at = 0;
	char *p;

	if (!f->n_path_prefix || !f->name || !*f->name)
		return NULL;
	for (size_t i = 0; i < f->n_path_prefix; i++)
		n += strlen(f->path_prefix[i]) + 1;
	n += strlen(f->name) + 1;
	if (n > TF__PATH_MAX + 1 || !(p = malloc(n)))
		return NULL;
	for (size_t i = 0; i < f->n_path_prefix; i++) {
		size_t l = strlen(f->path_prefix[i]);
		memcpy(p + at, f->path_prefix[i], l);
		p[at + l] = '/';
		at += l + 1;
	}
	memcpy(p + at, f->name, strlen(f->name) + 1);
	return p;
}
