/* THE hash map (see core.h): keys are byte strings copied into the entry
 * (NUL-terminated too, so string keys read back as C strings), values are
 * borrowed. Chained, power-of-two buckets, FNV-1a. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static uint64_t hash_bytes(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

void tf__map_init(tf__map *m)
{
	m->buckets = NULL;
	m->nbuckets = m->n = 0;
}

void tf__map_fini(tf__map *m)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (tf__map_entry *e = m->buckets[i], *n; e; e = n) {
			n = e->next;
			free(e);
		}
	free(m->buckets);
	tf__map_init(m);
}

static tf__map_entry **find(const tf__map *m, const void *key, size_t len, uint64_t h)
{
	tf__map_entry **pp;
	if (!m->nbuckets)
		return NULL;
	for (pp = &m->buckets[h & (m->nbuckets - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->len == len && !memcmp((*pp)->key, key, len))
			return pp;
	return pp;
}

void *tf__map_getn(const tf__map *m, const void *key, size_t len)
{
	tf__map_entry **pp = find(m, key, len, hash_bytes(key, len));
	return pp && *pp ? (*pp)->value : NULL;
}

int tf__map_putn(tf__map *m, const void *key, size_t len, void *value)
{
	uint64_t h = hash_bytes(key, len);
	tf__map_entry **pp, *e;

	if (m->n + 1 > m->nbuckets) {
		size_t nb = m->nbuckets ? m->nbuckets * 2 : 64;
		tf__map_entry **b = calloc(nb, sizeof(*b));
		if (!b)
			return -ENOMEM;
		for (size_t i = 0; i < m->nbuckets; i++)
			for (tf__map_entry *x = m->buckets[i], *n; x; x = n) {
				n = x->next;
				x->next = b[x->hash & (nb - 1)];
				b[x->hash & (nb - 1)] = x;
			}
		free(m->buckets);
		m->buckets = b;
		m->nbuckets = nb;
	}
	pp = find(m, key, len, h);
	if (*pp) {
		(*pp)->value = value;
		return 0;
	}
	if (len > SIZE_MAX - sizeof(*e) - 1)
		return -ENOMEM;
	e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->hash = h;
	e->len = len;
	e->value = value;
	memcpy(e->key, key, len);
	e->key[len] = '\0';
	*pp = e;
	m->n++;
	return 0;
}

void *tf__map_removen(tf__map *m, const void *key, size_t len)
{
	tf__map_entry **pp = find(m, key, len, hash_bytes(key, len)), *e;
	void *v;
	if (!pp || !*pp)
		return NULL;
	e = *pp;
	*pp = e->next;
	v = e->value;
	free(e);
	m->n--;
	return v;
}

void *tf__map_get(const tf__map *m, const char *key)
{
	return tf__map_getn(m, key, strlen(key));
}

int tf__map_put(tf__map *m, const char *key, void *value)
{
	return tf__map_putn(m, key, strlen(key), value);
}

void *tf__map_remove(tf__map *m, const char *key)
{
	return tf__map_removen(m, key, strlen(key));
}

void tf__map_each(const tf__map *m, void (*fn)(const char *key, void *value, void *user), void *user)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (tf__map_entry *e = m->buckets[i]; e; e = e->next)
			fn(e->key, e->value, user);
}
