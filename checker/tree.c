/* Reading a REAPI Tree blob: the metadata of a directory output.
 *
 * The blob is untrusted. A DirectoryNode names its child by digest, so the
 * children are indexed by the SHA-256 of the bytes they arrived as (exactly
 * what the sender hashed), not by re-encoding what we decoded. The walk runs
 * twice: once to validate everything, once to report, so a bad tree reports
 * nothing. The validating pass checks each distinct directory once and
 * remembers what it holds (entries, depth, longest path below it), so a
 * small Tree whose directories name each other many times (a DAG that
 * expands to millions of paths) is refused after looking at each directory
 * once, not after expanding it. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "checker/checker.h"
#include "proto/wire.h"
#include "remote_execution.pb-c.h"

typedef struct child {
	char hash[TF_HASH_HEX_LEN + 1];
	int64_t size;
	Build__Bazel__Remote__Execution__V2__Directory *dir;
	bool on_path; /* on the current walk's stack: seeing it again is a cycle */
	/* Set once the validating pass checked everything below it: */
	bool checked;
	size_t entries;  /* files and symlinks under it, each path counted */
	int height;      /* levels of directories below it */
	size_t longest;  /* bytes of the longest path below it, from its "/" on */
} child;

typedef struct walk {
	const char *tree_hash;
	child *children;
	size_t n_children;
	size_t entries;
	tf__map index;  /* child hash -> child */
	size_t cap;     /* entries allowed: CHK_TREE_MAX_ENTRIES or a smaller budget */
	const char *whose; /* the budget's owner, for the message; NULL: no budget */
	chk_tree_cb cb; /* NULL in the validating pass */
	void *user;
	tf_error *err;
	char path[TF__PATH_MAX + 1];
} walk;

/* Finds the byte spans of the root (field 1) and children (field 2). */
static int split_tree(walk *w, const unsigned char *buf, size_t len, const unsigned char **root,
		      size_t *root_len)
{
	size_t pos = 0, cap = 0;
	pw_field f;
	const char *why;
	int r;

	*root = NULL;
	*root_len = 0;
	while ((r = pw_next(buf, len, &pos, &f, &why)) > 0) {
		if (f.wire_type != PW_LEN || (f.number != 1 && f.number != 2))
			continue;
		if (f.number == 1) {
			*root = f.data;
			*root_len = (size_t)f.value;
		} else {
			unsigned char md[EVP_MAX_MD_SIZE];
			unsigned mdlen = 0;
			child *c;
			if (w->n_children == CHK_TREE_MAX_ENTRIES)
				return tf__errf(w->err, -E2BIG, "tree %s: more than %d directories", w->tree_hash,
						CHK_TREE_MAX_ENTRIES);
			if (w->n_children == cap) {
				size_t nc = cap ? cap * 2 : 16;
				child *nv = realloc(w->children, nc * sizeof(*nv));
				if (!nv)
					return tf__errf(w->err, -ENOMEM, "out of memory");
				w->children = nv;
				cap = nc;
			}
			c = &w->children[w->n_children];
			memset(c, 0, sizeof(*c));
			EVP_Digest(f.data, (size_t)f.value, md, &mdlen, EVP_sha256(), NULL);
			tf__hex(md, mdlen, c->hash);
			c->size = (int64_t)f.value;
			c->dir = build__bazel__remote__execution__v2__directory__unpack(NULL, (size_t)f.value, f.data);
			if (!c->dir)
				return tf__errf(w->err, -EBADMSG, "tree %s: child directory at byte %zu does not decode",
						w->tree_hash, (size_t)(f.data - buf));
			w->n_children++;
		}
	}
	if (r < 0)
		return tf__errf(w->err, -EBADMSG, "tree %s: %s at byte %zu", w->tree_hash, why, pos);
	if (!*root)
		return tf__errf(w->err, -EBADMSG, "tree %s has no root directory", w->tree_hash);
	return 0;
}

static int check_name(walk *w, const char *name, const char *what)
{
	size_t n = strlen(name);
	if (n == 0 || n > TF__NAME_MAX || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return tf__errf(w->err, -EINVAL, "tree %s: %s name '%.80s' in '%s' is not a plain file name",
				w->tree_hash, what, name, w->path);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate names among the files, folders and symlinks of one directory. */
static int check_unique(walk *w, const Build__Bazel__Remote__Execution__V2__Directory *d)
{
	size_t n = d->n_files + d->n_directories + d->n_symlinks, k = 0;
	const char **names;
	int r = 0;

	if (n < 2)
		return 0;
	names = malloc(n * sizeof(*names));
	if (!names)
		return tf__errf(w->err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < d->n_files; i++)
		names[k++] = d->files[i]->name;
	for (size_t i = 0; i < d->n_directories; i++)
		names[k++] = d->directories[i]->name;
	for (size_t i = 0; i < d->n_symlinks; i++)
		names[k++] = d->symlinks[i]->name;
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 1; i < n && !r; i++)
		if (!strcmp(names[i - 1], names[i]))
			r = tf__errf(w->err, -EINVAL, "tree %s: the name '%.80s' appears twice in '%s'",
				     w->tree_hash, names[i], w->path);
	free(names);
	return r;
}

static int index_children(walk *w)
{
	for (size_t i = 0; i < w->n_children; i++)
		if (!tf__map_get(&w->index, w->children[i].hash) &&
		    tf__map_put(&w->index, w->children[i].hash, &w->children[i]) < 0)
			return tf__errf(w->err, -ENOMEM, "out of memory");
	return 0;
}

static child *find_child(walk *w, const char *hash, int64_t size)
{
	child *c = tf__map_get(&w->index, hash);
	return c && c->size == size ? c : NULL;
}

static int too_many(walk *w)
{
	if (w->whose)
		return tf__errf(w->err, -E2BIG,
				"tree %s: its entries would take %s past its work budget of %zu tree entries "
				"(all its output directories together, each path counted); the output "
				"directory is refused",
				w->tree_hash, w->whose, w->cap);
	return tf__errf(w->err, -E2BIG,
			"tree %s: more than %d entries (a directory named N times counts N times); the "
			"output directory is refused",
			w->tree_hash, CHK_TREE_MAX_ENTRIES);
}

/* Visits the directory d (self: its child record; NULL for the root). */
static int visit(walk *w, child *self, const Build__Bazel__Remote__Execution__V2__Directory *d, int depth)
{
	size_t base = strlen(w->path), entries0 = w->entries, longest = 0;
	int r, height = 0;

	if (depth > CHK_TREE_MAX_DEPTH)
		return tf__errf(w->err, -ELOOP, "tree %s: '%s' is nested more than %d levels deep",
				w->tree_hash, w->path, CHK_TREE_MAX_DEPTH);
	r = check_unique(w, d);
	if (r)
		return r;
#define PUSH(name)                                                                                  \
	do {                                                                                        \
		if (base + 1 + strlen(name) > TF__PATH_MAX)                                         \
			return tf__errf(w->err, -ENAMETOOLONG, "tree %s: a path under '%.80s' is too long", \
					w->tree_hash, w->path);                                     \
		w->path[base] = '/';                                                                \
		strcpy(w->path + base + 1, name);                                                   \
	} while (0)
	for (size_t i = 0; i < d->n_files; i++) {
		const Build__Bazel__Remote__Execution__V2__FileNode *f = d->files[i];
		chk_tree_entry e = { .kind = CHK_ENTRY_FILE, .path = w->path };
		tf_error derr = { 0 };

		if ((r = check_name(w, f->name, "file")))
			return r;
		if (++w->entries > w->cap)
			return too_many(w);
		PUSH(f->name);
		if (strlen(w->path) - base > longest)
			longest = strlen(w->path) - base;
		if (!f->digest || tf_digest_parse(f->digest->hash ? f->digest->hash : "", f->digest->size_bytes,
						  &e.digest, &derr) < 0) {
			r = tf__errf(w->err, -EINVAL, "tree %s: file '%s': %s", w->tree_hash, w->path,
				     f->digest ? derr.message : "no digest");
			w->path[base] = '\0';
			return r;
		}
		e.executable = f->is_executable;
		r = w->cb ? w->cb(&e, w->user) : 0;
		w->path[base] = '\0';
		if (r)
			return r;
	}
	for (size_t i = 0; i < d->n_symlinks; i++) {
		const Build__Bazel__Remote__Execution__V2__SymlinkNode *l = d->symlinks[i];
		chk_tree_entry e = { .kind = CHK_ENTRY_SYMLINK, .path = w->path };

		if ((r = check_name(w, l->name, "symlink")))
			return r;
		if (!l->target || !*l->target || strlen(l->target) > TF__PATH_MAX)
			return tf__errf(w->err, -EINVAL, "tree %s: symlink '%s' in '%s' has no usable target",
					w->tree_hash, l->name, w->path);
		if (++w->entries > w->cap)
			return too_many(w);
		PUSH(l->name);
		if (strlen(w->path) - base > longest)
			longest = strlen(w->path) - base;
		e.symlink_target = l->target;
		r = w->cb ? w->cb(&e, w->user) : 0;
		w->path[base] = '\0';
		if (r)
			return r;
	}
	for (size_t i = 0; i < d->n_directories; i++) {
		const Build__Bazel__Remote__Execution__V2__DirectoryNode *n = d->directories[i];
		child *c;

		if ((r = check_name(w, n->name, "directory")))
			return r;
		if (!n->digest || !n->digest->hash ||
		    !(c = find_child(w, n->digest->hash, n->digest->size_bytes)))
			return tf__errf(w->err, -ENOENT,
					"tree %s: directory '%s' in '%s' refers to %s/%lld, which the tree does not contain",
					w->tree_hash, n->name, w->path,
					n->digest && n->digest->hash ? n->digest->hash : "(none)",
					n->digest ? (long long)n->digest->size_bytes : 0LL);
		if (c->on_path)
			return tf__errf(w->err, -ELOOP, "tree %s: directory '%s' in '%s' contains itself (a cycle)",
					w->tree_hash, n->name, w->path);
		/* A directory is an entry too: a Tree of empty directories named
		 * over and over is as much work as one of files. */
		if (++w->entries > w->cap)
			return too_many(w);
		PUSH(n->name);
		if (w->cb || !c->checked) {
			c->on_path = true;
			r = visit(w, c, c->dir, depth + 1);
			c->on_path = false;
		} else if (depth + 1 + c->height > CHK_TREE_MAX_DEPTH) {
			/* Checked before, elsewhere in the tree: only what it adds here. */
			r = tf__errf(w->err, -ELOOP, "tree %s: '%s' is nested more than %d levels deep",
				     w->tree_hash, w->path, CHK_TREE_MAX_DEPTH);
		} else if (strlen(w->path) + c->longest > TF__PATH_MAX) {
			r = tf__errf(w->err, -ENAMETOOLONG, "tree %s: a path under '%.80s' is too long",
				     w->tree_hash, w->path);
		} else if (c->entries > w->cap - w->entries) {
			r = too_many(w);
		} else {
			w->entries += c->entries;
		}
		if (r == 0 && 1 + c->height > height)
			height = 1 + c->height;
		if (r == 0 && strlen(w->path) - base + c->longest > longest)
			longest = strlen(w->path) - base + c->longest;
		w->path[base] = '\0';
		if (r)
			return r;
	}
	if (!w->cb && self) {
		self->checked = true;
		self->entries = w->entries - entries0;
		self->height = height;
		self->longest = longest;
	}
#undef PUSH
	return 0;
}

int chk_tree_walk(const unsigned char *buf, size_t len, const char *tree_hash, const char *dir_path,
		  chk_tree_cb cb, void *user, tf_error *err)
{
	return chk_tree_walk_budget(buf, len, tree_hash, dir_path, CHK_TREE_MAX_ENTRIES, NULL, cb, user, NULL, err);
}

int chk_tree_walk_budget(const unsigned char *buf, size_t len, const char *tree_hash, const char *dir_path,
			 size_t budget, const char *whose, chk_tree_cb cb, void *user, size_t *counted,
			 tf_error *err)
{
	walk w = { .tree_hash = tree_hash, .err = err,
		   .cap = budget < CHK_TREE_MAX_ENTRIES ? budget : CHK_TREE_MAX_ENTRIES,
		   .whose = budget < CHK_TREE_MAX_ENTRIES ? whose : NULL };
	const unsigned char *root_bytes;
	size_t root_len;
	Build__Bazel__Remote__Execution__V2__Directory *root = NULL;
	int r;

	if (strlen(dir_path) > TF__PATH_MAX)
		return tf__errf(err, -ENAMETOOLONG, "tree %s: directory path too long", tree_hash);
	tf__map_init(&w.index);
	r = split_tree(&w, buf, len, &root_bytes, &root_len);
	if (r == 0)
		r = index_children(&w);
	if (r < 0)
		goto out;
	root = build__bazel__remote__execution__v2__directory__unpack(NULL, root_len, root_bytes);
	if (!root) {
		r = tf__errf(err, -EBADMSG, "tree %s: the root directory does not decode", tree_hash);
		goto out;
	}
	strcpy(w.path, dir_path);
	r = visit(&w, NULL, root, 0); /* validate */
	if (r == 0 && counted)
		*counted = w.entries;
	if (r == 0 && cb) {
		w.cb = cb;
		w.user = user;
		w.entries = 0;
		strcpy(w.path, dir_path);
		r = visit(&w, NULL, root, 0);
	}
out:
	if (root)
		build__bazel__remote__execution__v2__directory__free_unpacked(root, NULL);
	for (size_t i = 0; i < w.n_children; i++)
		build__bazel__remote__execution__v2__directory__free_unpacked(w.children[i].dir, NULL);
	free(w.children);
	tf__map_fini(&w.index);
	return r;
}
