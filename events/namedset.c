/* The NamedSetOfFiles graph. Bazel reports a target's outputs as a DAG of
 * named sets (its NestedSets): a set lists some files and the ids of other
 * sets; sets are shared between targets and nest deeply. Flattening a set
 * by plain recursion visits a shared subset once per path to it, which is
 * exponential on diamonds and quadratic when 10,000 targets share a chain.
 *
 * Here:
 *  - a set is stored in a compact form and its event is not kept: every
 *    distinct File is one packed record (below) in a chunked pool and gets
 *    a small integer id (equal Files share one); a set is its id, its
 *    record number, and an array of file ids and child set indexes;
 *  - references are resolved (ids looked up, cycles and depth checked) once
 *    per set over the graph's life, by an iterative DFS whose result is
 *    remembered (state RESOLVED, depth known);
 *  - an expansion bumps an epoch and walks the reachable sets with an
 *    explicit stack, skipping any set or file already stamped with this
 *    epoch: linear in what it reaches, never revisiting. Each file it
 *    returns is rebuilt from its record into one scratch File.
 * No recursion anywhere, so a deep chain cannot overflow the C stack.
 *
 * A packed file record (bytes, unaligned; equal Files give equal bytes, so
 * equality is memcmp and the hash is over the bytes):
 *   flags byte: file_case in bits 0-1, then F_DIG, F_DSTR, F_UTMPL, F_USAME
 *   varint length (File.length as uint64)
 *   varint path_prefix list id + 1 (0: no prefix)   interned: "bazel-out\0k8-fastbuild\0bin\0"
 *   varint directory id + 1 (0: name has no '/')    interned: the name up to its last '/'
 *   F_DIG: 32 bytes, the digest field (64 lowercase hex digits) in binary
 *   F_DSTR: varint n, n bytes + NUL: any other non-empty digest field
 *   uri and F_UTMPL (uri = template + 64 hex + "/" + decimal size):
 *     varint template id; unless F_USAME (hash and size are the digest and
 *     length above): 32 bytes of hash, varint size
 *   other uri, symlink target, contents: varint n, n bytes + NUL
 *   the name after its last '/', + NUL (to the end of the record)
 * A record in the pool is preceded by its varint byte count. */
#include "events/events_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NODE_NEW, NODE_ACTIVE, NODE_RESOLVED };

enum {
	F_CASE = 3,     /* 0 none, 1 uri, 2 contents, 3 symlink target */
	F_DIG = 1 << 2,
	F_DSTR = 1 << 3,
	F_UTMPL = 1 << 4,
	F_USAME = 1 << 5,
};

#define POOL_CHUNK ((size_t)1 << 20)
#define SHA256_HEX 64
/* Bytes a templated URI is rebuilt into: template, hash, '/', a size of up
 * to 20 digits, NUL (pack sizes the scratch with it, unpack checks it). */
#define URI_ROOM(tlen) ((tlen) + SHA256_HEX + 22)

struct set_node {
	const char *id; /* in the pool */
	uint64_t hash;
	uint64_t record; /* the event that defined it */
	uint32_t *fids;  /* nf file ids, then nk child node indexes; in the pool */
	uint32_t nf, nk;
	uint32_t epoch;
	uint32_t depth; /* longest chain from here, this set included; once resolved */
	uint8_t state;
	bool defined;   /* false: only referenced so far */
};

struct file_slot {
	uint32_t hash; /* the top half of the record's hash */
	uint32_t fid;  /* + 1; 0 = empty */
};

struct frame {
	uint32_t node;
	uint32_t next; /* the next kid */
};

struct pool_chunk {
	struct pool_chunk *next;
	size_t cap, used;
	uint64_t data[];
};

/* An interned string (a path_prefix list, a directory, a URI template):
 * `s` holds len bytes and a NUL, in the pool; a prefix list also has its
 * parts as the File's char ** (pointing into s). */
struct istr {
	const char *s;
	size_t len;
	char **parts;
	size_t n_parts;
};

struct itab {
	tf__map map; /* bytes -> index + 1 */
	struct istr *v;
	size_t n, cap;
	size_t last; /* the index found last */
};

/* One rebuilt File in the cache. */
#define FC_SLOTS 16384u
struct fcache {
	uint32_t fid1; /* fid + 1; 0 = empty */
	BuildEventStream__File f;
	char str[224]; /* its rebuilt strings */
};

struct ev_sets {
	ev_sets_options o;

	struct set_node *nodes; /* defined sets and sets only referenced so far */
	size_t n_nodes, cap_nodes, n_defined;
	uint32_t *ids; /* open addressing: node index + 1, 0 = empty */
	size_t ids_mask;

	struct pool_chunk *pool;
	size_t pool_bytes;

	struct itab prefixes, dirs, templates;

	struct file_slot *ftab;
	size_t ftab_mask;
	unsigned ftab_bits; /* log2 of its size */
	const unsigned char **files; /* packed record of each fid */
	uint32_t *fepoch;
	size_t n_files, cap_files;
	size_t entries; /* File entries over all sets */

	tf__buf enc;      /* the record being packed */
	char *scratch;    /* the strings of a File too long for the cache */
	size_t cap_scratch;
	BuildEventStream__File cur;
	struct fcache *fc; /* FC_SLOTS, made by the first expansion */

	/* DFS stack, shared by resolution and expansion (never both at once:
	 * resolution runs inside expand_begin). */
	struct frame *stack;
	size_t sp, cap_stack;

	/* The current expansion. */
	bool active;
	/* The files of the set on top of the stack not yet looked at (its
	 * kids come after them). */
	const uint32_t *run, *run_end;
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
	tf__map_init(&s->prefixes.map);
	tf__map_init(&s->dirs.map);
	tf__map_init(&s->templates.map);
	/* One record is at most one File of one event (under 4 GiB). */
	tf__buf_init(&s->enc, (size_t)UINT32_MAX);
	return s;
}

static void itab_fini(struct itab *t)
{
	tf__map_fini(&t->map);
	free(t->v);
}

void ev_sets_free(ev_sets *s)
{
	struct pool_chunk *c;

	if (!s)
		return;
	c = s->pool;
	while (c) {
		struct pool_chunk *next = c->next;
		free(c);
		c = next;
	}
	itab_fini(&s->prefixes);
	itab_fini(&s->dirs);
	itab_fini(&s->templates);
	tf__buf_fini(&s->enc);
	free(s->scratch);
	free(s->fc);
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
	return s->n_defined;
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

static bool str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
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

/* ---- the pool and interned strings ------------------------------------------- */

/* n bytes aligned to `align` (at most 8) that live as long as the graph. */
static void *pool_alloc(ev_sets *s, size_t n, size_t align)
{
	struct pool_chunk *c = s->pool;
	size_t at;

	if (c) {
		at = (c->used + align - 1) & ~(align - 1);
		if (at <= c->cap && n <= c->cap - at) {
			c->used = at + n;
			return (unsigned char *)c->data + at;
		}
	}
	{
		size_t cap = n > POOL_CHUNK ? n : POOL_CHUNK;
		struct pool_chunk *nc;

		if (cap > SIZE_MAX - sizeof(*nc) || !(nc = malloc(sizeof(*nc) + cap)))
			return NULL;
		nc->cap = cap;
		nc->used = n;
		if (c && n > POOL_CHUNK) {
			/* An oversized record: keep the current chunk in front. */
			nc->next = c->next;
			c->next = nc;
		} else {
			nc->next = c;
			s->pool = nc;
		}
		s->pool_bytes += cap;
		return nc->data;
	}
}

/* The index of key in t, interning it when add is true; -1 when absent (or
 * out of memory, with *nomem set). A prefix list (parts > 0) is key split
 * at its NULs into `parts` strings. */
static long intern(ev_sets *s, struct itab *t, const char *key, size_t len, size_t parts, bool add,
		   bool *nomem)
{
	uintptr_t v;
	struct istr *e;
	char *copy;

	/* Neighbouring files mostly share their prefix, directory and
	 * template: try the last one first. */
	if (t->n && t->v[t->last].len == len && memcmp(t->v[t->last].s, key, len) == 0)
		return (long)t->last;
	v = (uintptr_t)tf__map_getn(&t->map, key, len);
	if (v) {
		t->last = v - 1;
		return (long)(v - 1);
	}
	if (!add || t->n >= UINT32_MAX - 1)
		return -1;
	if (grow((void **)&t->v, &t->cap, t->n + 1, sizeof(*t->v)) < 0 ||
	    !(copy = pool_alloc(s, len + 1, 1)))
		goto nomem;
	memcpy(copy, key, len);
	copy[len] = '\0';
	e = &t->v[t->n];
	e->s = copy;
	e->len = len;
	e->parts = NULL;
	e->n_parts = parts;
	if (parts) {
		const char *p = copy;
		if (!(e->parts = pool_alloc(s, parts * sizeof(char *), sizeof(char *))))
			goto nomem;
		for (size_t i = 0; i < parts; i++) {
			e->parts[i] = (char *)p;
			p += strlen(p) + 1;
		}
	}
	if (tf__map_putn(&t->map, key, len, (void *)(uintptr_t)(t->n + 1)) < 0)
		goto nomem;
	t->last = t->n;
	return (long)t->n++;
nomem:
	*nomem = true;
	return -1;
}

/* ---- packing a File ------------------------------------------------------------ */

static uint64_t get_varint(const unsigned char **p)
{
	uint64_t v = 0;
	unsigned shift = 0;

	/* Records are ours: every varint in them is well formed. */
	while (**p & 0x80) {
		v |= (uint64_t)(**p & 0x7f) << shift;
		shift += 7;
		(*p)++;
	}
	v |= (uint64_t)**p << shift;
	(*p)++;
	return v;
}

/* 64 lowercase hex digits (all of them there) into 32 bytes: false when one
 * is not. On little-endian machines 8 digits at a time, without a branch
 * per digit (it runs once or twice per file read).
 * Per byte c of a word: v = (c & 0xf) + 9 * (c >> 6 & 1) is the digit's
 * value when c is one; c is one exactly when v < 16 and writing v back as
 * a lowercase digit (0x30 + v, or 0x57 + v from 10 on) gives c again. */
static bool unhex_sha256(const char *in, unsigned char out[32])
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101ull;
	uint64_t bad = 0;

	for (size_t i = 0; i < 8; i++) {
		uint64_t w, v, t;
		memcpy(&w, in + 8 * i, 8);
		v = (w & 0x0f * ones) + 9 * ((w >> 6) & ones);
		bad |= (v + 0x70 * ones) & 0x80 * ones;                               /* v >= 16 */
		bad |= w ^ (v + 0x30 * ones + 0x27 * (((v + 0x76 * ones) >> 7) & ones)); /* not c */
		/* Byte 2k of t: digit 2k's value << 4 | digit 2k+1's; then bytes
		 * 0, 2, 4, 6 gathered into the low 4. */
		t = ((v << 4) | (v >> 8)) & 0x00ff00ff00ff00ffull;
		t = (t | (t >> 8)) & 0x0000ffff0000ffffull;
		t = (t | (t >> 16)) & 0x00000000ffffffffull;
		{
			uint32_t four = (uint32_t)t;
			memcpy(out + 4 * i, &four, 4);
		}
	}
	return bad == 0;
#else
	return tf__unhex(in, 32, out);
#endif
}

/* 32 bytes as 64 lowercase hex digits and a NUL (tf__hex's output): on
 * little-endian machines 4 bytes at a time, for the files an expansion
 * rebuilds. Byte 2k of t is input byte k; v splits each into its two
 * digits' values, written as 0x30 + v, or 0x57 + v from 10 on. */
static void hex_sha256(const unsigned char in[32], char *out)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101ull;

	for (size_t i = 0; i < 8; i++) {
		uint32_t four;
		uint64_t t, v;
		memcpy(&four, in + 4 * i, 4);
		t = four;
		t = (t | (t << 16)) & 0x0000ffff0000ffffull;
		t = (t | (t << 8)) & 0x00ff00ff00ff00ffull;
		v = ((t >> 4) & 0x000f000f000f000full) | ((t & 0x000f000f000f000full) << 8);
		v += 0x30 * ones + 0x27 * (((v + 0x76 * ones) >> 7) & ones);
		memcpy(out + 8 * i, &v, 8);
	}
	out[SHA256_HEX] = '\0';
#else
	tf__hex(in, 32, out);
#endif
}

/* A decimal written the way %llu writes it (no sign, no leading zero). */
static bool canonical_decimal(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 19 || (n > 1 && p[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return true;
}

/* Splits uri into template + 64 lowercase hex + "/" + decimal: the length of
 * the template, or 0 when it has another form. hash gets the 32 bytes;
 * *same is set when they are the digest's hex `dig` (valid hex, or NULL). */
static size_t uri_template(const char *uri, size_t n, const char *dig, uint64_t *size,
			   unsigned char hash[32], bool *same)
{
	const char *slash = memrchr(uri, '/', n), *hex;
	size_t at;

	*same = false;
	if (!slash || !canonical_decimal(slash + 1, n - (size_t)(slash + 1 - uri), size))
		return 0;
	at = (size_t)(slash - uri);
	if (at < SHA256_HEX + 1 || uri[at - SHA256_HEX - 1] != '/')
		return 0;
	hex = uri + at - SHA256_HEX;
	/* Bazel's URIs repeat the digest: comparing is cheaper than decoding. */
	if (dig && memcmp(hex, dig, SHA256_HEX) == 0)
		*same = true;
	else if (!unhex_sha256(hex, hash))
		return 0;
	return at - SHA256_HEX;
}

/* True when parts are the n parts of the interned list e. */
static bool parts_eq(const struct istr *e, char *const *parts, size_t n)
{
	if (e->n_parts != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(e->parts[i], parts[i] ? parts[i] : "") != 0)
			return false;
	return true;
}

/* Appends n bytes and a NUL after a varint n. */
static void put_str(unsigned char **p, const void *str, size_t n)
{
	*p += pw_put_varint(*p, n);
	if (n)
		memcpy(*p, str, n);
	(*p)[n] = '\0';
	*p += n + 1;
}

/* Packs f into s->enc. With add false nothing is interned: 0 and no record
 * when f names a prefix, directory or template the graph has never seen
 * (so no stored File can equal it). 1 when packed; -ENOMEM. `scratch` gets
 * the bytes expand_next needs to rebuild the File's strings. */
static int pack(ev_sets *s, const BuildEventStream__File *f, bool add, size_t *scratch)
{
	const char *name = f->name ? f->name : "", *dig = f->digest ? f->digest : "";
	size_t name_len = strlen(name), dig_len = strlen(dig), loc_len = 0, need, tlen = 0, base_len;
	const char *slash = memrchr(name, '/', name_len), *base = slash ? slash + 1 : name;
	const char *loc = NULL;
	unsigned char flags = 0, *p, udig[32], ddig[32];
	uint64_t usize = 0;
	long pfx = -1, dir = -1, tmpl = -1;
	bool nomem = false, same = false;

	base_len = name_len - (size_t)(base - name);
	if (dig_len == SHA256_HEX && unhex_sha256(dig, ddig))
		flags |= F_DIG;
	else if (dig_len)
		flags |= F_DSTR;
	switch (f->file_case) {
	case BUILD_EVENT_STREAM__FILE__FILE_URI:
		flags |= 1;
		loc = f->uri ? f->uri : "";
		loc_len = strlen(loc);
		tlen = uri_template(loc, loc_len, (flags & F_DIG) ? dig : NULL, &usize, udig, &same);
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_CONTENTS:
		flags |= 2;
		loc = (const char *)f->contents.data;
		loc_len = f->contents.len;
		break;
	case BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH:
		flags |= 3;
		loc = f->symlink_target_path ? f->symlink_target_path : "";
		loc_len = strlen(loc);
		break;
	default:
		break;
	}
	if (f->n_path_prefix && s->prefixes.n &&
	    parts_eq(&s->prefixes.v[s->prefixes.last], f->path_prefix, f->n_path_prefix)) {
		/* The previous file's prefix (intern would find it too, after
		 * joining the parts into its key). */
		pfx = (long)s->prefixes.last;
	} else if (f->n_path_prefix) {
		/* The parts joined, each with its NUL: the interned key. */
		size_t n = 0;
		char *k;
		for (size_t i = 0; i < f->n_path_prefix; i++)
			n += strlen(f->path_prefix[i] ? f->path_prefix[i] : "") + 1;
		if (tf__buf_reserve(&s->enc, n) < 0)
			return -ENOMEM;
		k = (char *)s->enc.data;
		n = 0;
		for (size_t i = 0; i < f->n_path_prefix; i++) {
			const char *part = f->path_prefix[i] ? f->path_prefix[i] : "";
			size_t l = strlen(part) + 1;
			memcpy(k + n, part, l);
			n += l;
		}
		pfx = intern(s, &s->prefixes, k, n, f->n_path_prefix, add, &nomem);
		if (pfx < 0)
			return nomem ? -ENOMEM : 0;
	}
	if (slash && (dir = intern(s, &s->dirs, name, (size_t)(slash - name), 0, add, &nomem)) < 0)
		return nomem ? -ENOMEM : 0;
	if (tlen) {
		tmpl = intern(s, &s->templates, loc, tlen, 0, add, &nomem);
		if (tmpl < 0)
			return nomem ? -ENOMEM : 0;
		flags |= F_UTMPL;
		if (same && usize == (uint64_t)f->length)
			flags |= F_USAME;
		else if (same)
			memcpy(udig, ddig, 32);
	}
	need = 1 + 10 * 5 + 32 + 32 + dig_len + 1 + loc_len + 1 + name_len + 1;
	if (tf__buf_reserve(&s->enc, need) < 0)
		return -ENOMEM;
	p = (unsigned char *)s->enc.data;
	*p++ = flags;
	p += pw_put_varint(p, (uint64_t)f->length);
	p += pw_put_varint(p, (uint64_t)(pfx + 1));
	p += pw_put_varint(p, (uint64_t)(dir + 1));
	if (flags & F_DIG) {
		memcpy(p, ddig, 32);
		p += 32;
	} else if (flags & F_DSTR) {
		put_str(&p, dig, dig_len);
	}
	if (flags & F_UTMPL) {
		p += pw_put_varint(p, (uint64_t)tmpl);
		if (!(flags & F_USAME)) {
			memcpy(p, udig, 32);
			p += 32;
			p += pw_put_varint(p, usize);
		}
	} else if (flags & F_CASE) {
		put_str(&p, loc, loc_len);
	}
	memcpy(p, base, base_len + 1);
	p += base_len + 1;
	s->enc.len = (size_t)(p - (unsigned char *)s->enc.data);
	/* Rebuilt: the name (when it has a directory), the digest's hex and a
	 * templated uri. */
	*scratch = (slash ? name_len + 1 : 0) + ((flags & F_DIG) ? SHA256_HEX + 1 : 0) +
		   (tlen ? URI_ROOM(tlen) : 0);
	return 1;
}

/* Writes v in decimal and a NUL; returns the end, past the NUL. */
static char *put_decimal(char *out, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*out++ = tmp[--n];
	*out++ = '\0';
	return out;
}

/* Rebuilds the File of record rec into f, its strings into out (cap bytes)
 * or in the pool. False when cap is too small (f is then half-filled). */
static bool unpack(const ev_sets *s, const unsigned char *rec, BuildEventStream__File *f, char *out,
		   size_t cap)
{
	const unsigned char *p = rec, *end;
	const char *lim = out + cap;
	unsigned flags;
	uint64_t n, pfx, dir;
	size_t len = (size_t)get_varint(&p);

	end = p + len;
	flags = *p++;
	build_event_stream__file__init(f);
	f->length = (int64_t)get_varint(&p);
	pfx = get_varint(&p);
	dir = get_varint(&p);
	if (pfx) {
		f->path_prefix = s->prefixes.v[pfx - 1].parts;
		f->n_path_prefix = s->prefixes.v[pfx - 1].n_parts;
	}
	if (flags & F_DIG) {
		if ((size_t)(lim - out) < SHA256_HEX + 1)
			return false;
		hex_sha256(p, out);
		f->digest = out;
		out += SHA256_HEX + 1;
		p += 32;
	} else if (flags & F_DSTR) {
		n = get_varint(&p);
		f->digest = (char *)p;
		p += n + 1;
	}
	switch (flags & F_CASE) {
	case 1:
		f->file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
		if (flags & F_UTMPL) {
			const struct istr *t = &s->templates.v[get_varint(&p)];
			uint64_t size = (uint64_t)f->length;
			if ((size_t)(lim - out) < URI_ROOM(t->len))
				return false;
			f->uri = out;
			memcpy(out, t->s, t->len);
			out += t->len;
			if (flags & F_USAME) {
				memcpy(out, f->digest, SHA256_HEX);
			} else {
				hex_sha256(p, out);
				p += 32;
				size = get_varint(&p);
			}
			out += SHA256_HEX;
			*out++ = '/';
			out = put_decimal(out, size);
		} else {
			n = get_varint(&p);
			f->uri = (char *)p;
			p += n + 1;
		}
		break;
	case 2:
		f->file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
		n = get_varint(&p);
		f->contents.len = (size_t)n;
		f->contents.data = n ? (uint8_t *)p : NULL;
		p += n + 1;
		break;
	case 3:
		f->file_case = BUILD_EVENT_STREAM__FILE__FILE_SYMLINK_TARGET_PATH;
		n = get_varint(&p);
		f->symlink_target_path = (char *)p;
		p += n + 1;
		break;
	default:
		break;
	}
	if (dir) {
		const struct istr *d = &s->dirs.v[dir - 1];
		size_t bl = (size_t)(end - p);
		if ((size_t)(lim - out) < d->len + 1 + bl)
			return false;
		f->name = out;
		memcpy(out, d->s, d->len);
		out[d->len] = '/';
		memcpy(out + d->len + 1, p, bl); /* the base with its NUL */
	} else {
		f->name = (char *)p;
	}
	return true;
}

/* The File of fid when the cache does not have it: rebuilt into its cache
 * slot, or into the scratch File when too long for a slot. Kept out of
 * line so that ev_sets_expand_next, called once per file returned, stays a
 * small leaf on its hot path. */
static __attribute__((noinline)) const BuildEventStream__File *file_rebuild(ev_sets *s, uint32_t fid)
{
	struct fcache *e;

	if (!s->fc)
		goto scratch;
	e = &s->fc[fid & (FC_SLOTS - 1)];
	if (unpack(s, s->files[fid], &e->f, e->str, sizeof(e->str))) {
		e->fid1 = fid + 1;
		return &e->f;
	}
	e->fid1 = 0;
scratch:
	/* The scratch is as long as the longest record needs (file_add sizes
	 * it with pack's count, which is what unpack checks). */
	if (!unpack(s, s->files[fid], &s->cur, s->scratch, s->cap_scratch))
		abort(); /* a broken invariant, never a half-built File */
	return &s->cur;
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

/* The node of id, made (undefined) when it is new; -1 when out of memory. */
static long node_get(ev_sets *s, const char *id, uint64_t h)
{
	long v = id_lookup(s, id, h);
	struct set_node *n;
	size_t len = strlen(id) + 1;
	char *copy;

	if (v >= 0)
		return v;
	if (grow((void **)&s->nodes, &s->cap_nodes, s->n_nodes + 1, sizeof(*s->nodes)) < 0 ||
	    id_table_grow(s) < 0 || !(copy = pool_alloc(s, len, 1)))
		return -1;
	memcpy(copy, id, len);
	n = &s->nodes[s->n_nodes];
	memset(n, 0, sizeof(*n));
	n->id = copy;
	n->hash = h;
	n->state = NODE_NEW;
	{
		size_t i = h & s->ids_mask;
		while (s->ids[i])
			i = (i + 1) & s->ids_mask;
		s->ids[i] = (uint32_t)s->n_nodes + 1;
	}
	return (long)s->n_nodes++;
}

/* ---- the file table ------------------------------------------------------------- */

/* Slots are indexed by the top bits of the record's hash and hold its top
 * 32 bits, so growing never reads a record again. */
static size_t ftab_pos(uint32_t top, unsigned bits)
{
	return bits ? (size_t)(top >> (32 - bits)) : 0;
}

static int ftab_grow(ev_sets *s, size_t want_files)
{
	size_t size = s->ftab ? s->ftab_mask + 1 : 0;
	unsigned bits = s->ftab_bits;
	struct file_slot *t;

	if (want_files * 2 <= size)
		return 0;
	if (size == 0) {
		size = 1024;
		bits = 10;
	}
	while (want_files * 2 > size) {
		size *= 2;
		bits++;
	}
	if (bits > 32)
		return -ENOMEM; /* (max_files keeps us far below) */
	t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t j = 0; s->ftab && j <= s->ftab_mask; j++) {
		size_t i;
		if (!s->ftab[j].fid)
			continue;
		i = ftab_pos(s->ftab[j].hash, bits);
		while (t[i].fid)
			i = (i + 1) & (size - 1);
		t[i] = s->ftab[j];
	}
	free(s->ftab);
	s->ftab = t;
	s->ftab_mask = size - 1;
	s->ftab_bits = bits;
	return 0;
}

/* The fid of the record in s->enc, or -1. *slot gets where it would go. */
static long file_lookup(const ev_sets *s, uint64_t h, size_t *slot)
{
	const unsigned char *rec = (const unsigned char *)s->enc.data;
	size_t len = s->enc.len, i;

	if (!s->ftab)
		return -1;
	for (i = ftab_pos((uint32_t)(h >> 32), s->ftab_bits);; i = (i + 1) & s->ftab_mask) {
		uint32_t v = s->ftab[i].fid;
		const unsigned char *p;
		if (v == 0)
			break;
		if (s->ftab[i].hash != (uint32_t)(h >> 32))
			continue;
		p = s->files[v - 1];
		if (get_varint(&p) == len && memcmp(p, rec, len) == 0)
			return (long)(v - 1);
	}
	if (slot)
		*slot = i;
	return -1;
}

/* The fid of f, stored when new. -ENOMEM. */
static long file_add(ev_sets *s, const BuildEventStream__File *f)
{
	size_t need = 0, slot = 0, hdr;
	unsigned char *rec;
	uint64_t h;
	long fid;
	int r = pack(s, f, true, &need);

	if (r <= 0)
		return r < 0 ? r : -ENOMEM;
	h = mix64(hash_bytes(0, s->enc.data, s->enc.len));
	fid = file_lookup(s, h, &slot);
	if (fid >= 0)
		return fid;
	if (need > s->cap_scratch) {
		char *ns = realloc(s->scratch, need);
		if (!ns)
			return -ENOMEM;
		s->scratch = ns;
		s->cap_scratch = need;
	}
	{
		unsigned char tmp[10];
		hdr = pw_put_varint(tmp, s->enc.len);
		if (!(rec = pool_alloc(s, hdr + s->enc.len, 1)))
			return -ENOMEM;
		memcpy(rec, tmp, hdr);
		memcpy(rec + hdr, s->enc.data, s->enc.len);
	}
	fid = (long)s->n_files++;
	s->files[fid] = rec;
	s->fepoch[fid] = 0;
	s->ftab[slot].hash = (uint32_t)(h >> 32);
	s->ftab[slot].fid = (uint32_t)fid + 1;
	return fid;
}

/* ---- adding ------------------------------------------------------------------- */

static const char *ref_id(const BuildEventStream__BuildEventId__NamedSetOfFilesId *r)
{
	return r && r->id ? r->id : "";
}

int ev_sets_add(ev_sets *s, ev_event *ev, tf_error *err)
{
	const BuildEventStream__BuildEvent *m = ev ? ev->msg : NULL;
	const BuildEventStream__NamedSetOfFiles *set;
	struct set_node *n;
	const char *id;
	uint32_t *fids = NULL;
	uint64_t h;
	long self;
	size_t nf, nk, fresh;

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
	self = id_lookup(s, id, h);
	if (self >= 0 && s->nodes[self].defined)
		return tf__errf(err, -EEXIST,
				"record %llu: named set '%.200s' was already defined by record %llu",
				(unsigned long long)ev->record, id,
				(unsigned long long)s->nodes[self].record);
	/* Sets only referenced so far count against the cap too. */
	fresh = self < 0 ? 1 : 0;
	nk = set->n_file_sets;
	for (size_t i = 0; i < nk; i++) {
		const char *cid = ref_id(set->file_sets[i]);
		if (!str_eq(cid, id) && id_lookup(s, cid, mix64(hash_str(0, cid))) < 0)
			fresh++;
	}
	if (fresh > s->o.max_sets - s->n_nodes)
		return tf__errf(err, -E2BIG,
				"record %llu: named set '%.200s' is one more than the cap of %zu named sets",
				(unsigned long long)ev->record, id, s->o.max_sets);
	nf = set->n_files;
	if (nf > s->o.max_files - s->entries)
		return tf__errf(err, -E2BIG,
				"record %llu: named set '%.200s' brings the files in named sets to %zu, over the cap of %zu",
				(unsigned long long)ev->record, id, s->entries + nf, s->o.max_files);
	if (ftab_grow(s, s->n_files + nf) < 0)
		goto nomem;
	if (s->n_files + nf > s->cap_files) {
		/* files and fepoch share one capacity. */
		size_t cap = s->cap_files ? s->cap_files : 1024;
		const unsigned char **nfiles;
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
	if (nf + nk > 0 && !(fids = pool_alloc(s, (nf + nk) * sizeof(uint32_t), sizeof(uint32_t))))
		goto nomem;
	for (size_t i = 0; i < nf; i++) {
		long fid = file_add(s, set->files[i]);
		if (fid < 0)
			goto nomem;
		fids[i] = (uint32_t)fid;
	}
	if ((self = node_get(s, id, h)) < 0)
		goto nomem;
	for (size_t i = 0; i < nk; i++) {
		const char *cid = ref_id(set->file_sets[i]);
		long c = node_get(s, cid, mix64(hash_str(0, cid)));
		if (c < 0)
			goto nomem;
		fids[nf + i] = (uint32_t)c;
	}
	n = &s->nodes[self];
	n->fids = fids;
	n->nf = (uint32_t)nf;
	n->nk = (uint32_t)nk;
	n->record = ev->record;
	n->defined = true;
	n->state = NODE_NEW;
	s->n_defined++;
	s->entries += nf;
	return 0;
nomem:
	return tf__errf(err, -ENOMEM, "record %llu: out of memory storing named set '%.200s'",
			(unsigned long long)ev->record, id);
}

/* ---- resolving references ------------------------------------------------------- */

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
			s->nodes[again].id, (unsigned long long)s->nodes[again].record, path);
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

		if (fr->next < n->nk) {
			uint32_t c = n->fids[n->nf + fr->next++];
			struct set_node *cn = &s->nodes[c];

			if (!cn->defined) {
				rc = tf__errf(err, -ENOENT,
					      "named set '%.200s' is unknown: referenced by named set '%.200s' (record %llu)",
					      cn->id, n->id, (unsigned long long)n->record);
				goto unwind;
			}
			if (cn->state == NODE_ACTIVE) {
				rc = cycle_error(s, c, err);
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
					      cn->id, (unsigned long long)cn->record, s->sp + 1);
				goto unwind;
			}
			if (push(s, c) < 0)
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
			      n->id, (unsigned long long)n->record, n->depth, s->o.max_depth,
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
	s->run = s->run_end = NULL;
	if (!referrer)
		referrer = "the request";
	if (grow((void **)&s->roots, &s->cap_roots, n_ids, sizeof(*s->roots)) < 0 ||
	    grow((void **)&s->inl, &s->cap_inl, n_inline, sizeof(*s->inl)) < 0)
		return tf__errf(err, -ENOMEM, "out of memory expanding named sets for %s", referrer);
	for (size_t i = 0; i < n_ids; i++) {
		const char *id = ref_id(ids[i]);
		long c = id_lookup(s, id, mix64(hash_str(0, id)));

		if (c < 0 || !s->nodes[c].defined)
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
	/* Without the cache every file is rebuilt into the scratch File:
	 * slower, never wrong. */
	if (!s->fc && s->n_files > 0)
		s->fc = calloc(FC_SLOTS, sizeof(*s->fc));
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
	s->run = s->run_end = NULL;
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

/* The next inline file of the expansion not yet returned, or NULL. */
static __attribute__((noinline)) const BuildEventStream__File *next_inline(ev_sets *s)
{
	while (s->inl_pos < s->n_inl) {
		const BuildEventStream__File *f = s->inl[s->inl_pos++];
		size_t need;
		/* Stamp a stored File equal to it, so that it comes once. Out
		 * of memory here only loses that: the file may come twice. */
		if (pack(s, f, false, &need) > 0) {
			long fid = file_lookup(s, mix64(hash_bytes(0, s->enc.data, s->enc.len)), NULL);
			if (fid >= 0) {
				if (s->fepoch[fid] == s->epoch)
					continue;
				s->fepoch[fid] = s->epoch;
			}
		}
		return f;
	}
	return NULL;
}

/* Pushes set node (stamped) on the stack: its files become the run. */
static void push_set(ev_sets *s, uint32_t node)
{
	const struct set_node *n = &s->nodes[node];

	s->stack[s->sp].node = node;
	s->stack[s->sp++].next = 0;
	s->run = n->fids;
	s->run_end = n->nf ? n->fids + n->nf : n->fids; /* (no fids at all: NULL) */
}

/* The file fid (stamped now), from the cache of rebuilt Files or rebuilt. */
static inline const BuildEventStream__File *file_at(ev_sets *s, uint32_t fid)
{
	const struct fcache *e = s->fc ? &s->fc[fid & (FC_SLOTS - 1)] : NULL;

	/* Sets shared by many targets return the same files again and
	 * again: most come from the cache. */
	if (e && e->fid1 == fid + 1)
		return &e->f;
	return file_rebuild(s, fid);
}

/* Everything ev_sets_expand_next does when the run is used up: the inline
 * files, then the walk on to the next set (the set's own files, then the
 * sets it references, depth first). NULL at the end. */
static __attribute__((noinline)) const BuildEventStream__File *expand_more(ev_sets *s)
{
	if (!s->active)
		return NULL;
	if (s->inl_pos < s->n_inl) {
		const BuildEventStream__File *f = next_inline(s);
		if (f)
			return f;
	}
	for (;;) {
		struct frame *fr;
		const struct set_node *n;

		while (s->run < s->run_end) {
			uint32_t fid = *s->run++;
			if (s->fepoch[fid] == s->epoch)
				continue;
			s->fepoch[fid] = s->epoch;
			return file_at(s, fid);
		}
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
			push_set(s, r);
			continue;
		}
		fr = &s->stack[s->sp - 1];
		n = &s->nodes[fr->node];
		if (fr->next < n->nk) {
			uint32_t c = n->fids[n->nf + fr->next++];
			if (s->nodes[c].epoch == s->epoch)
				continue;
			s->nodes[c].epoch = s->epoch;
			/* Within the stack sized by expand_begin: depth(c) <
			 * depth(parent) <= the deepest root's depth. */
			push_set(s, c);
			continue;
		}
		s->sp--;
	}
}

const BuildEventStream__File *ev_sets_expand_next(ev_sets *s)
{
	/* The hot path, once per file returned: the next file of the run. */
	while (s->run < s->run_end) {
		uint32_t fid = *s->run++;
		if (s->fepoch[fid] == s->epoch)
			continue;
		s->fepoch[fid] = s->epoch;
		return file_at(s, fid);
	}
	return expand_more(s);
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
