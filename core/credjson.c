/* A strict reader for one JSON shape: the answer of a credential helper
 * (Bazel's credential-helper protocol):
 *
 *     {"headers": {"Name": ["value", ...], ...}, "expires": "RFC 3339", ...}
 *
 * RFC 8259 syntax throughout (strings with every escape, \u surrogate pairs
 * to UTF-8, raw control characters refused, numbers, literals); keys other
 * than "headers" and "expires" are read and ignored, as Bazel ignores them,
 * nested at most TF__CRED_DEPTH_MAX deep. Nothing else in topfetch reads
 * JSON. Messages name the byte offset, never the text: the input holds
 * secrets. */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rd {
	const unsigned char *p, *end, *start;
	char *why;
	size_t why_len;
	int depth;
} rd;

static int fail(rd *r, const char *what)
{
	snprintf(r->why, r->why_len, "%s at byte %zu", what, (size_t)(r->p - r->start));
	return -EBADMSG;
}

static void ws(rd *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int expect(rd *r, char c)
{
	ws(r);
	if (r->p >= r->end || *r->p != (unsigned char)c) {
		char what[32];
		snprintf(what, sizeof(what), "expected '%c'", c);
		return fail(r, what);
	}
	r->p++;
	return 0;
}

static int hex4(rd *r, unsigned *out)
{
	unsigned v = 0;
	if (r->end - r->p < 4)
		return fail(r, "a \\u escape is cut short");
	for (int i = 0; i < 4; i++) {
		unsigned char c = r->p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return fail(r, "a \\u escape needs four hex digits");
	}
	r->p += 4;
	*out = v;
	return 0;
}

static int put_utf8(tf__buf *b, unsigned cp)
{
	unsigned char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | cp >> 6);
		u[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | cp >> 12);
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xf0 | cp >> 18);
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return tf__buf_append(b, u, n);
}

/* A string into out (NUL-terminated; a NUL inside is refused), or skipped
 * when out is NULL. */
static int string(rd *r, tf__buf *out)
{
	ws(r);
	if (r->p >= r->end || *r->p != '"')
		return fail(r, "expected a string");
	r->p++;
	if (out)
		tf__buf_reset(out);
	for (;;) {
		unsigned char c;
		unsigned cp;
		if (r->p >= r->end)
			return fail(r, "a string is not closed");
		c = *r->p;
		if (c == '"') {
			r->p++;
			break;
		}
		if (c < 0x20)
			return fail(r, "a control character inside a string");
		if (c != '\\') {
			if (out && tf__buf_append(out, &c, 1) < 0)
				return fail(r, "a string is too long");
			r->p++;
			continue;
		}
		r->p++;
		if (r->p >= r->end)
			return fail(r, "an escape is cut short");
		c = *r->p++;
		switch (c) {
		case '"': cp = '"'; break;
		case '\\': cp = '\\'; break;
		case '/': cp = '/'; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			if (hex4(r, &cp) < 0)
				return -EBADMSG;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return fail(r, "a lone low surrogate");
			if (cp >= 0xd800 && cp <= 0xdbff) {
				unsigned lo;
				if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
					return fail(r, "a high surrogate without its low half");
				r->p += 2;
				if (hex4(r, &lo) < 0)
					return -EBADMSG;
				if (lo < 0xdc00 || lo > 0xdfff)
					return fail(r, "a high surrogate without its low half");
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			if (cp == 0)
				return fail(r, "a NUL character inside a string");
			break;
		default:
			return fail(r, "an unknown escape");
		}
		if (out && put_utf8(out, cp) < 0)
			return fail(r, "a string is too long");
	}
	if (out && tf__buf_append(out, "", 1) < 0)
		return fail(r, "a string is too long");
	return 0;
}

static bool digit(const rd *r)
{
	return r->p < r->end && *r->p >= '0' && *r->p <= '9';
}

static int number(rd *r)
{
	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (!digit(r))
		return fail(r, "expected a value");
	if (*r->p == '0')
		r->p++;
	else
		while (digit(r))
			r->p++;
	if (r->p < r->end && *r->p == '.') {
		r->p++;
		if (!digit(r))
			return fail(r, "a number has no digit after '.'");
		while (digit(r))
			r->p++;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (!digit(r))
			return fail(r, "a number has no digit in its exponent");
		while (digit(r))
			r->p++;
	}
	return 0;
}

static int literal(rd *r, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n))
		return fail(r, "expected a value");
	r->p += n;
	return 0;
}

static int value_skip(rd *r);

static int object_skip(rd *r)
{
	if (expect(r, '{') < 0)
		return -EBADMSG;
	ws(r);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return 0;
	}
	for (;;) {
		if (string(r, NULL) < 0 || expect(r, ':') < 0 || value_skip(r) < 0)
			return -EBADMSG;
		ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		return expect(r, '}');
	}
}

static int array_skip(rd *r)
{
	if (expect(r, '[') < 0)
		return -EBADMSG;
	ws(r);
	if (r->p < r->end && *r->p == ']') {
		r->p++;
		return 0;
	}
	for (;;) {
		if (value_skip(r) < 0)
			return -EBADMSG;
		ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		return expect(r, ']');
	}
}

static int value_skip(rd *r)
{
	int rc;
	ws(r);
	if (r->p >= r->end)
		return fail(r, "expected a value");
	switch (*r->p) {
	case '{':
	case '[':
		if (++r->depth > TF__CRED_DEPTH_MAX)
			return fail(r, "values nested too deep");
		rc = *r->p == '{' ? object_skip(r) : array_skip(r);
		r->depth--;
		return rc;
	case '"': return string(r, NULL);
	case 't': return literal(r, "true");
	case 'f': return literal(r, "false");
	case 'n': return literal(r, "null");
	default: return number(r);
	}
}

static int add_header(tf__cred_answer *a, const char *name, const char *value)
{
	tf__cred_header *v;
	if (a->n == TF__CRED_HEADERS_MAX)
		return -E2BIG;
	v = realloc(a->v, (a->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	a->v = v;
	v[a->n].name = strdup(name);
	v[a->n].value = strdup(value);
	if (!v[a->n].name || !v[a->n].value) {
		free(v[a->n].name);
		free(v[a->n].value);
		return -ENOMEM;
	}
	a->n++;
	return 0;
}

/* "headers": {"Name": ["v", ...], ...} */
static int headers(rd *r, tf__cred_answer *a, tf__buf *name, tf__buf *val)
{
	ws(r);
	if (r->p >= r->end || *r->p != '{')
		return fail(r, "the value of \"headers\" is not an object");
	r->p++;
	ws(r);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return 0;
	}
	for (;;) {
		if (string(r, name) < 0 || expect(r, ':') < 0)
			return -EBADMSG;
		ws(r);
		if (r->p >= r->end || *r->p != '[')
			return fail(r, "a header's value is not an array of strings");
		r->p++;
		ws(r);
		if (r->p < r->end && *r->p == ']') {
			r->p++;
		} else {
			for (;;) {
				int e;
				ws(r);
				if (r->p >= r->end || *r->p != '"')
					return fail(r, "a header's value is not an array of strings");
				if (string(r, val) < 0)
					return -EBADMSG;
				e = add_header(a, (const char *)name->data, (const char *)val->data);
				if (e == -E2BIG)
					return fail(r, "more headers than topfetch takes");
				if (e < 0)
					return fail(r, "out of memory");
				ws(r);
				if (r->p < r->end && *r->p == ',') {
					r->p++;
					continue;
				}
				if (expect(r, ']') < 0)
					return -EBADMSG;
				break;
			}
		}
		ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		return expect(r, '}');
	}
}

int tf__cred_answer_parse(const void *data, size_t len, tf__cred_answer *a, char *why, size_t why_len)
{
	rd r = { .p = data, .end = (const unsigned char *)data + len, .start = data, .why = why, .why_len = why_len };
	tf__buf key, val;
	int rc = -EBADMSG;

	memset(a, 0, sizeof(*a));
	if (why_len)
		why[0] = '\0';
	tf__buf_init(&key, TF__CRED_STRING_MAX);
	tf__buf_init(&val, TF__CRED_STRING_MAX);
	if (len > TF__CRED_ANSWER_MAX) {
		snprintf(why, why_len, "the answer has %zu bytes, more than the %d topfetch reads", len,
			 TF__CRED_ANSWER_MAX);
		goto out;
	}
	if (expect(&r, '{') < 0)
		goto out;
	ws(&r);
	if (r.p < r.end && *r.p == '}') {
		r.p++;
	} else {
		for (;;) {
			if (string(&r, &key) < 0 || expect(&r, ':') < 0)
				goto out;
			if (!strcmp((const char *)key.data, "headers")) {
				if (headers(&r, a, &key, &val) < 0)
					goto out;
			} else if (!strcmp((const char *)key.data, "expires")) {
				ws(&r);
				if (r.p >= r.end || *r.p != '"') {
					fail(&r, "the value of \"expires\" is not a string");
					goto out;
				}
				if (string(&r, &val) < 0)
					goto out;
				if (val.len > sizeof(a->expires)) {
					fail(&r, "the value of \"expires\" is too long for a time");
					goto out;
				}
				memcpy(a->expires, val.data, val.len);
				a->has_expires = true;
			} else if (value_skip(&r) < 0) {
				goto out;
			}
			ws(&r);
			if (r.p < r.end && *r.p == ',') {
				r.p++;
				continue;
			}
			if (expect(&r, '}') < 0)
				goto out;
			break;
		}
	}
	ws(&r);
	if (r.p != r.end) {
		fail(&r, "something follows the object");
		goto out;
	}
	rc = 0;
out:
	tf__buf_fini(&key);
	tf__buf_fini(&val);
	if (rc < 0)
		tf__cred_answer_fini(a);
	return rc;
}

void tf__cred_answer_fini(tf__cred_answer *a)
{
	for (size_t i = 0; i < a->n; i++) {
		explicit_bzero(a->v[i].value, strlen(a->v[i].value));
		free(a->v[i].name);
		free(a->v[i].value);
	}
	free(a->v);
	a->v = NULL;
	a->n = 0;
}
