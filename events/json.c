/* The proto3 JSON encoder: one walk over protobuf-c descriptors for every
 * message type, producing what protobuf-java's JsonFormat (and therefore
 * Bazel's --build_event_json_file) produces:
 *  - field names in lowerCamelCase (protoc's ToJsonName of the proto name);
 *  - fields at their default value left out (proto3), with presence exactly
 *    as protobuf-c's packer decides it, so JSON and binary always agree;
 *    oneof members and proto2 optionals that are set are written even when
 *    their value is the default;
 *  - int64/uint64 (and their fixed/zigzag forms) as strings, other integers
 *    as numbers, floats with the shortest round-trip form ("NaN",
 *    "Infinity"), bytes as base64 with padding, enums by name (by number
 *    when the value is not in the schema);
 *  - map fields (protoc's repeated XxxEntry{key=1,value=2}) as objects;
 *  - Timestamp as RFC 3339 UTC, Duration as "1.5s", wrappers as their bare
 *    value, Any as {"@type": url, ...fields} for the types we know;
 *  - strings escaped as Gson does for Bazel ("=" as \u003d, "<", ">", "&",
 *    "'", U+2028/9), invalid UTF-8 bytes as U+FFFD.
 * Field order is the descriptor's (by field number); Bazel's is declaration
 * order, so compare objects, not bytes. */
#include "events/events_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spawn.pb-c.h"
#include "wkt.pb-c.h"

#define JSON_MAX_DEPTH 200

struct jctx {
	tf__buf *b;
	int rc; /* sticky: first failure */
	const char *what;
};

/* Types an Any may carry that we can decode and print field by field. */
static const ProtobufCMessageDescriptor *const any_types[] = {
	&tools__protos__spawn_exec__descriptor,
	&build_event_stream__build_event__descriptor,
	&build_event_stream__file__descriptor,
	&google__protobuf__timestamp__descriptor,
	&google__protobuf__duration__descriptor,
	&google__protobuf__uint32_value__descriptor,
};

static void put(struct jctx *c, const void *p, size_t n)
{
	int rc;

	if (c->rc < 0)
		return;
	rc = tf__buf_append(c->b, p, n);
	if (rc < 0)
		c->rc = rc;
}

static void puts_(struct jctx *c, const char *s)
{
	put(c, s, strlen(s));
}

static void putch(struct jctx *c, char ch)
{
	put(c, &ch, 1);
}

static void putf(struct jctx *c, const char *fmt, ...) TF__PRINTF(2, 3);

static void putf(struct jctx *c, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put(c, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t avail, uint32_t *cp)
{
	unsigned char b = s[0];
	size_t n;
	uint32_t v, min;

	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b >= 0xc2 && b <= 0xdf) {
		n = 2;
		v = b & 0x1f;
		min = 0x80;
	} else if (b >= 0xe0 && b <= 0xef) {
		n = 3;
		v = b & 0x0f;
		min = 0x800;
	} else if (b >= 0xf0 && b <= 0xf4) {
		n = 4;
		v = b & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

static void put_string(struct jctx *c, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, run = 0;

	putch(c, '"');
	while (i < len) {
		unsigned char ch = s[i];
		const char *esc = NULL;
		char ubuf[8];
		uint32_t cp;
		size_t n;

		if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\' && ch != '<' && ch != '>' &&
		    ch != '&' && ch != '=' && ch != '\'') {
			i++;
			continue;
		}
		put(c, s + run, i - run);
		n = 1;
		switch (ch) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			if (ch < 0x80) {
				snprintf(ubuf, sizeof(ubuf), "\\u%04x", ch);
				esc = ubuf;
				break;
			}
			n = utf8_len(s + i, len - i, &cp);
			if (n == 0) {
				esc = "\\ufffd";
				n = 1;
			} else if (cp == 0x2028 || cp == 0x2029) {
				snprintf(ubuf, sizeof(ubuf), "\\u%04x", (unsigned)cp);
				esc = ubuf;
			} else {
				put(c, s + i, n);
			}
			break;
		}
		if (esc)
			puts_(c, esc);
		i += n;
		run = i;
	}
	put(c, s + run, len - run);
	putch(c, '"');
}

static void put_base64(struct jctx *c, const uint8_t *p, size_t n)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char out[4 * 64];
	size_t o = 0;

	putch(c, '"');
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[o++] = al[(v >> 18) & 63];
		out[o++] = al[(v >> 12) & 63];
		out[o++] = i + 1 < n ? al[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? al[v & 63] : '=';
		if (o == sizeof(out)) {
			put(c, out, o);
			o = 0;
		}
	}
	put(c, out, o);
	putch(c, '"');
}

/* protoc's ToJsonName: drop '_' and upper-case the letter after it. */
static void put_name(struct jctx *c, const char *name)
{
	char tmp[256];
	size_t n = 0;
	bool up = false;

	for (const char *p = name; *p && n < sizeof(tmp) - 1; p++) {
		if (*p == '_') {
			up = true;
			continue;
		}
		tmp[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
		up = false;
	}
	putch(c, '"');
	put(c, tmp, n);
	putch(c, '"');
}

static void put_double(struct jctx *c, double v, bool is_float)
{
	char tmp[40];

	if (isnan(v)) {
		puts_(c, "\"NaN\"");
		return;
	}
	if (isinf(v)) {
		puts_(c, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
		return;
	}
	/* The shortest form that reads back to the same value. */
	for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (is_float ? (float)strtod(tmp, NULL) == (float)v : strtod(tmp, NULL) == v)
			break;
	}
	puts_(c, tmp);
}

static size_t elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 4;
	}
}

/* Whether protobuf-c's packer would write this field (see the header). */
static bool present(const ProtobufCFieldDescriptor *f, const void *msg)
{
	const char *m = msg;
	const void *member = m + f->offset;
	const void *q = m + f->quantifier_offset;

	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return *(const size_t *)q > 0;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		if (*(const uint32_t *)q != f->id)
			return false;
		if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) {
			const void *p = *(const void *const *)member;
			return p && p != f->default_value;
		}
		return true;
	}
	if (f->label == PROTOBUF_C_LABEL_REQUIRED)
		return true;
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
		if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) {
			const void *p = *(const void *const *)member;
			return p && p != f->default_value;
		}
		return *(const protobuf_c_boolean *)q;
	}
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return *(const uint64_t *)member != 0;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)member != 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)member != 0;
	case PROTOBUF_C_TYPE_BOOL:
		return *(const protobuf_c_boolean *)member != 0;
	case PROTOBUF_C_TYPE_STRING: {
		const char *p = *(const char *const *)member;
		return p && *p;
	}
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)member)->len > 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(const void *const *)member != NULL;
	default:
		return *(const uint32_t *)member != 0;
	}
}

/* protoc turns `map<K, V> foo_bar = n` into `repeated FooBarEntry foo_bar`
 * with a nested FooBarEntry {K key = 1; V value = 2;}; protobuf-c keeps no
 * map flag, so recognise that exact shape. */
static bool is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
	const ProtobufCMessageDescriptor *e = f->descriptor;
	char want[256];
	size_t n = 0, plen;
	bool up = true;

	if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE ||
	    e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
	    strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0)
		return false;
	for (const char *p = f->name; *p && n < sizeof(want) - 7; p++) {
		if (*p == '_') {
			up = true;
			continue;
		}
		want[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
		up = false;
	}
	memcpy(want + n, "Entry", 6);
	plen = strlen(parent->name);
	return strcmp(e->short_name, want) == 0 && strncmp(e->name, parent->name, plen) == 0 &&
	       e->name[plen] == '.' && strcmp(e->name + plen + 1, want) == 0;
}

static void write_message(struct jctx *c, const ProtobufCMessageDescriptor *d, const void *msg,
			  int depth);

static void write_value(struct jctx *c, const ProtobufCFieldDescriptor *f, const void *v, int depth)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		putf(c, "%d", *(const int32_t *)v);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		putf(c, "%u", *(const uint32_t *)v);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		putf(c, "\"%lld\"", (long long)*(const int64_t *)v);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		putf(c, "\"%llu\"", (unsigned long long)*(const uint64_t *)v);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		put_double(c, *(const float *)v, true);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		put_double(c, *(const double *)v, false);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		puts_(c, *(const protobuf_c_boolean *)v ? "true" : "false");
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		int e = *(const int *)v;
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor, e);
		if (ev)
			put_string(c, ev->name, strlen(ev->name));
		else
			putf(c, "%d", e);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(const char *const *)v;
		put_string(c, s ? s : "", s ? strlen(s) : 0);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = v;
		put_base64(c, b->data, b->len);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(const ProtobufCMessage *const *)v;
		if (m)
			write_message(c, f->descriptor, m, depth + 1);
		else
			puts_(c, "{}");
		break;
	}
	}
}

static void write_map(struct jctx *c, const ProtobufCFieldDescriptor *f, const void *msg, int depth)
{
	const ProtobufCMessageDescriptor *e = f->descriptor;
	size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
	const ProtobufCMessage *const *entries =
		*(const ProtobufCMessage *const *const *)((const char *)msg + f->offset);
	const ProtobufCFieldDescriptor *kf = &e->fields[0], *vf = &e->fields[1];

	putch(c, '{');
	for (size_t i = 0; i < n; i++) {
		const char *em = (const char *)entries[i];
		if (i)
			putch(c, ',');
		if (kf->type == PROTOBUF_C_TYPE_STRING) {
			write_value(c, kf, em + kf->offset, depth);
		} else {
			/* Non-string keys are written as strings. */
			size_t mark = c->b->len;
			write_value(c, kf, em + kf->offset, depth);
			if (c->rc == 0 && c->b->data[mark] != '"') {
				size_t klen = c->b->len - mark;
				char key[64];
				if (klen >= sizeof(key))
					klen = sizeof(key) - 1;
				memcpy(key, c->b->data + mark, klen);
				key[klen] = '\0';
				c->b->len = mark;
				putch(c, '"');
				puts_(c, key);
				putch(c, '"');
			}
		}
		putch(c, ':');
		write_value(c, vf, em + vf->offset, depth);
	}
	putch(c, '}');
}

/* Fields of msg as "name":value pairs; *first tracks the comma. */
static void write_fields(struct jctx *c, const ProtobufCMessageDescriptor *d, const void *msg,
			 int depth, bool *first)
{
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (!present(f, msg))
			continue;
		if (!*first)
			putch(c, ',');
		*first = false;
		put_name(c, f->name);
		putch(c, ':');
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
			const char *arr = *(const char *const *)((const char *)msg + f->offset);
			size_t es = elem_size(f->type);

			if (is_map(d, f)) {
				write_map(c, f, msg, depth);
				continue;
			}
			putch(c, '[');
			for (size_t j = 0; j < n; j++) {
				if (j)
					putch(c, ',');
				write_value(c, f, arr + j * es, depth);
			}
			putch(c, ']');
		} else {
			write_value(c, f, (const char *)msg + f->offset, depth);
		}
	}
}

/* ---- well-known types --------------------------------------------------------- */

static void put_nanos(struct jctx *c, int32_t nanos)
{
	if (nanos == 0)
		return;
	if (nanos % 1000000 == 0)
		putf(c, ".%03d", nanos / 1000000);
	else if (nanos % 1000 == 0)
		putf(c, ".%06d", nanos / 1000);
	else
		putf(c, ".%09d", nanos);
}

/* Timestamp: 1972-01-01T10:00:20.021Z; false when out of JSON's range
 * (years 1..9999), and the caller falls back to the plain message form. */
static bool write_timestamp(struct jctx *c, const Google__Protobuf__Timestamp *t)
{
	int64_t s = t->seconds, days, sod, z, era, doe, yoe, y, doy, mp, dd, mm;

	if (s < -62135596800ll || s > 253402300799ll || t->nanos < 0 || t->nanos > 999999999)
		return false;
	days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
	sod = s - days * 86400;
	/* Howard Hinnant's civil_from_days. */
	z = days + 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	dd = doy - (153 * mp + 2) / 5 + 1;
	mm = mp < 10 ? mp + 3 : mp - 9;
	if (mm <= 2)
		y++;
	putf(c, "\"%04lld-%02lld-%02lldT%02lld:%02lld:%02lld", (long long)y, (long long)mm,
	     (long long)dd, (long long)(sod / 3600), (long long)(sod / 60 % 60),
	     (long long)(sod % 60));
	put_nanos(c, t->nanos);
	puts_(c, "Z\"");
	return true;
}

/* Duration: "-1.500s"; false when out of range or signs disagree. */
static bool write_duration(struct jctx *c, const Google__Protobuf__Duration *d)
{
	int64_t s = d->seconds;
	int32_t n = d->nanos;

	if (s < -315576000000ll || s > 315576000000ll || n < -999999999 || n > 999999999 ||
	    (s > 0 && n < 0) || (s < 0 && n > 0))
		return false;
	putch(c, '"');
	if (s < 0 || n < 0)
		putch(c, '-');
	putf(c, "%lld", (long long)(s < 0 ? -s : s));
	put_nanos(c, n < 0 ? -n : n);
	puts_(c, "s\"");
	return true;
}

static bool is_wrapper(const ProtobufCMessageDescriptor *d)
{
	static const char *const names[] = {
		"google.protobuf.DoubleValue", "google.protobuf.FloatValue",
		"google.protobuf.Int64Value",  "google.protobuf.UInt64Value",
		"google.protobuf.Int32Value",  "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue",   "google.protobuf.StringValue",
		"google.protobuf.BytesValue",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(d->name, names[i]) == 0)
			return d->n_fields == 1 && d->fields[0].id == 1;
	return false;
}

/* Writes the JSON form of a well-known type; false if d is not one (or the
 * value cannot have its special form). */
static bool write_special(struct jctx *c, const ProtobufCMessageDescriptor *d, const void *msg)
{
	if (d == &google__protobuf__timestamp__descriptor)
		return write_timestamp(c, msg);
	if (d == &google__protobuf__duration__descriptor)
		return write_duration(c, msg);
	if (is_wrapper(d)) {
		write_value(c, &d->fields[0], (const char *)msg + d->fields[0].offset, 0);
		return true;
	}
	return false;
}

static void write_any(struct jctx *c, const Google__Protobuf__Any *a, int depth)
{
	const char *url = a->type_url ? a->type_url : "";
	const char *slash = strrchr(url, '/');
	const char *type = slash ? slash + 1 : url;
	const ProtobufCMessageDescriptor *d = NULL;
	ProtobufCMessage *inner = NULL;

	if (!*url && a->value.len == 0) {
		puts_(c, "{}");
		return;
	}
	for (size_t i = 0; i < sizeof(any_types) / sizeof(any_types[0]); i++)
		if (strcmp(any_types[i]->name, type) == 0)
			d = any_types[i];
	if (d && pw_check(d, a->value.data, a->value.len,
			  &(pw_check_opts){.max_depth = JSON_MAX_DEPTH - depth > 1 ? (unsigned)(JSON_MAX_DEPTH - depth) : 1},
			  NULL) == 0)
		inner = protobuf_c_message_unpack(d, NULL, a->value.len, a->value.data);
	puts_(c, "{\"@type\":");
	put_string(c, url, strlen(url));
	if (!inner) {
		/* A type we do not know (JsonFormat would refuse the whole
		 * event): keep the bytes rather than lose them. */
		puts_(c, ",\"value\":");
		put_base64(c, a->value.data, a->value.len);
	} else {
		size_t mark = c->b->len;
		bool first = false;
		puts_(c, ",\"value\":");
		if (!write_special(c, d, inner)) {
			if (c->rc == 0)
				c->b->len = mark;
			write_fields(c, d, inner, depth + 1, &first);
		}
		protobuf_c_message_free_unpacked(inner, NULL);
	}
	putch(c, '}');
}

static void write_message(struct jctx *c, const ProtobufCMessageDescriptor *d, const void *msg,
			  int depth)
{
	bool first = true;

	if (c->rc < 0)
		return;
	if (depth > JSON_MAX_DEPTH) {
		c->rc = -ELOOP;
		return;
	}
	if (d == &google__protobuf__any__descriptor) {
		write_any(c, msg, depth);
		return;
	}
	if (write_special(c, d, msg))
		return;
	putch(c, '{');
	write_fields(c, d, msg, depth, &first);
	putch(c, '}');
}

int ev_json_append(tf__buf *out, const ProtobufCMessage *m, tf_error *err)
{
	struct jctx c = { .b = out, .rc = 0 };
	size_t mark = out->len;

	write_message(&c, m->descriptor, m, 0);
	if (c.rc == 0)
		return 0;
	out->len = mark;
	if (c.rc == -ELOOP)
		return tf__errf(err, -E2BIG, "JSON encoding of a %s: messages nest deeper than %d levels",
				m->descriptor->name, JSON_MAX_DEPTH);
	if (c.rc == -E2BIG)
		return tf__errf(err, -E2BIG, "JSON encoding of a %s: output passes the cap of %zu bytes",
				m->descriptor->name, out->cap);
	return tf__errf(err, c.rc, "JSON encoding of a %s: %s", m->descriptor->name,
			strerror(-c.rc));
}
