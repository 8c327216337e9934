#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
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

static tf__map_entry **find(const tf__map *m, const char *key, uint64_t h)
{
	tf__map_entry **pp;
	if (!m->nbuckets)
		return NULL;
	for (pp = &m->buckets[h & (m->nbuckets - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && !strcmp((*pp)->key, key))
			return pp;
	return pp;
}

void *tf__map_get(const tf__map *m, const char *key)
{
	tf__map_entry **pp = find(m, key, str_hash(key));
	return pp && *pp ? (*pp)->value : NULL;
}

int tf__map_put(tf__map *m, const char *key, void *value)
{
	uint64_t h = str_hash(key);
	tf__map_entry **pp, *e;
	size_t len;

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
	pp = find(m, key, h);
	if (*pp) {
		(*pp)->value = value;
		return 0;
	}
	len = strlen(key);
	e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->hash = h;
	e->value = value;
	memcpy(e->key, key, len + 1);
	*pp = e;
	m->n++;
	return 0;
}

void *tf__map_remove(tf__map *m, const char *key)
{
	tf__map_entry **pp = find(m, key, str_hash(key)), *e;
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

void tf__map_each(const tf__map *m, void (*fn)(const char *key, void *value, void *user), void *user)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (tf__map_entry *e = m->buckets[i]; e; e = e->next)
			fn(e->key, e->value, user);
}
