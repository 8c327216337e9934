/* Credentials without a server: the credential helper's JSON answer
 * (core/credjson.c), netrc as Bazel's NetrcParser reads it, helper scopes as
 * Bazel's CredentialHelperProvider picks them, RFC 3339 times. */
#include <time.h>

#include "core/core.h"
#include "downloader/downloader.h"
#include "tf_test.h"

static int parse(const char *json, tf__cred_answer *a, char *why)
{
	return tf__cred_answer_parse(json, strlen(json), a, why, 256);
}

TEST(json_headers_and_expires)
{
	tf__cred_answer a;
	char why[256];

	CHECK_INT_EQ(parse("{\"headers\": {\"Authorization\": [\"Bearer t0k\"], \"X-Two\": [\"a\", \"b\"]},"
			   " \"expires\": \"2030-01-02T03:04:05Z\"}",
			   &a, why),
		     0);
	CHECK_INT_EQ(a.n, 3);
	CHECK_STR_EQ(a.v[0].name, "Authorization");
	CHECK_STR_EQ(a.v[0].value, "Bearer t0k");
	CHECK_STR_EQ(a.v[1].name, "X-Two");
	CHECK_STR_EQ(a.v[1].value, "a");
	CHECK_STR_EQ(a.v[2].value, "b");
	CHECK(a.has_expires);
	CHECK_STR_EQ(a.expires, "2030-01-02T03:04:05Z");
	tf__cred_answer_fini(&a);
}

TEST(json_escapes_and_unknown_keys)
{
	tf__cred_answer a;
	char why[256];

	/* Unknown keys of any shape are read and ignored (forward compatible, as Bazel). */
	CHECK_INT_EQ(parse(" {\"v\": 2, \"x\": [1.5e3, -0, true, false, null, {\"y\": [[]]}], "
			   "\"headers\": {\"K\": [\"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"]}} \n",
			   &a, why),
		     0);
	CHECK_INT_EQ(a.n, 1);
	CHECK_STR_EQ(a.v[0].value, "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
	CHECK(!a.has_expires);
	tf__cred_answer_fini(&a);
	CHECK_INT_EQ(parse("{}", &a, why), 0);
	CHECK_INT_EQ(a.n, 0);
	CHECK_INT_EQ(parse("{\"headers\": {}}", &a, why), 0);
	CHECK_INT_EQ(a.n, 0);
}

TEST(json_refused)
{
	static const char *bad[] = {
		"",
		"[]",
		"{\"headers\": {\"A\": \"not an array\"}}",
		"{\"headers\": {\"A\": [1]}}",
		"{\"headers\": []}",
		"{\"expires\": 5}",
		"{\"headers\": {\"A\": [\"x\"]}",
		"{\"headers\": {\"A\": [\"x\"]}} trailing",
		"{\"a\": \"raw\tcontrol\"}",
		"{\"a\": \"\\x\"}",
		"{\"a\": \"\\ud83d\"}",
		"{\"a\": \"\\ude00\"}",
		"{\"a\": \"\\u0000\"}",
		"{\"a\": 01}",
		"{\"a\": 1.}",
		"{\"a\": tru}",
		"{\"a\": 1,}",
		"{'a': 1}",
		"{\"a\" 1}",
	};
	tf__cred_answer a;
	char why[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &a, why) != -EBADMSG) {
			fprintf(stderr, "accepted: %s\n", bad[i]);
			CHECK(false);
		}
		CHECK_CONTAINS(why, "at byte");
		CHECK_INT_EQ(a.n, 0);
	}
	/* A message never repeats the text (it is a secret). */
	CHECK_INT_EQ(parse("{\"headers\": {\"A\": [\"s3cr3t\", 7]}}", &a, why), -EBADMSG);
	CHECK(!strstr(why, "s3cr3t"));
}

TEST(json_depth_and_size_caps)
{
	char deep[200];
	tf__cred_answer a;
	char why[256];
	size_t n = 0;
	char *big;

	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"x\":");
	for (int i = 0; i < 40; i++)
		deep[n++] = '[';
	for (int i = 0; i < 40; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = '\0';
	CHECK_INT_EQ(parse(deep, &a, why), -EBADMSG);
	CHECK_CONTAINS(why, "nested too deep");
	big = malloc(TF__CRED_ANSWER_MAX + 2);
	CHECK(big);
	memset(big, ' ', TF__CRED_ANSWER_MAX + 1);
	big[0] = '{';
	big[TF__CRED_ANSWER_MAX] = '}';
	CHECK_INT_EQ(tf__cred_answer_parse(big, TF__CRED_ANSWER_MAX + 1, &a, why, sizeof(why)), -EBADMSG);
	CHECK_CONTAINS(why, "more than");
	free(big);
}

static int netrc(const char *text, const char *host, char **l, char **p, tf_error *err)
{
	return dl_netrc_lookup(text, strlen(text), "test.netrc", host, l, p, err);
}

TEST(netrc_as_bazel_reads_it)
{
	const char *text = "# a comment line\n"
			   "machine a.example.com login alice password pa55 account acct\n"
			   "macdef init\ncd /pub\nmachine b.example.com login nobody\n\n"
			   "machine b.example.com\n  login bob\n  password pw2\n"
			   "machine a.example.com login alice2 password second\n"
			   "default login anon password guest\n"
			   "machine after.example.com login x password y\n";
	tf_error err = { 0 };
	char *l, *p;

	/* The later entry for a machine wins (Bazel's map). */
	CHECK_INT_EQ(netrc(text, "a.example.com", &l, &p, &err), 1);
	CHECK_STR_EQ(l, "alice2");
	CHECK_STR_EQ(p, "second");
	free(l), free(p);
	/* The macdef body up to the empty line is skipped. */
	CHECK_INT_EQ(netrc(text, "b.example.com", &l, &p, &err), 1);
	CHECK_STR_EQ(l, "bob");
	CHECK_STR_EQ(p, "pw2");
	free(l), free(p);
	/* Any other host: the default; nothing after it is read. */
	CHECK_INT_EQ(netrc(text, "after.example.com", &l, &p, &err), 1);
	CHECK_STR_EQ(l, "anon");
	free(l), free(p);
	CHECK_INT_EQ(netrc("machine x login u password v\n", "y", &l, &p, &err), 0);
	CHECK(!l && !p);
	/* A machine without a password: an empty one. */
	CHECK_INT_EQ(netrc("machine h login u\n", "h", &l, &p, &err), 1);
	CHECK_STR_EQ(p, "");
	free(l), free(p);
}

TEST(netrc_refused_without_the_secret)
{
	tf_error err = { 0 };
	char *l, *p;

	CHECK_INT_EQ(netrc("machine h login u\npassword v hunter2\n", "h", &l, &p, &err), -EINVAL);
	CHECK_CONTAINS(err.message, "test.netrc, line 2");
	CHECK(!strstr(err.message, "hunter2"));
	CHECK_INT_EQ(netrc("hunter2 machine h\n", "h", &l, &p, &err), -EINVAL);
	CHECK_CONTAINS(err.message, "line 1: a word where 'machine', 'default' or 'macdef' belongs");
	CHECK(!strstr(err.message, "hunter2"));
	CHECK_INT_EQ(netrc("machine h login\n", "h", &l, &p, &err), -EINVAL);
	CHECK_CONTAINS(err.message, "'login' has no value");
}

TEST(helper_scopes_as_bazel)
{
	const char *specs[] = { "/any-first", "*.example.com=/wild", "cache.example.com=/exact",
				"*.deep.example.com=/deeper", "/any-last", "127.0.0.1=/ip" };

	CHECK(dl_scope_valid("example.com"));
	CHECK(dl_scope_valid("*.example.com"));
	CHECK(dl_scope_valid("127.0.0.1"));
	CHECK(!dl_scope_valid("localhost")); /* Bazel's pattern needs a dot */
	CHECK(!dl_scope_valid("*.com.") && !dl_scope_valid("a.*.com") && !dl_scope_valid("*") &&
	      !dl_scope_valid("ex ample.com") && !dl_scope_valid("https://example.com"));
	CHECK(dl_scope_matches("*.example.com", "example.com"));
	CHECK(dl_scope_matches("*.example.com", "a.b.example.com"));
	CHECK(!dl_scope_matches("*.example.com", "badexample.com"));
	CHECK(!dl_scope_matches("example.com", "a.example.com"));
	CHECK_INT_EQ(dl_helper_pick(specs, 6, "cache.example.com"), 2);
	CHECK_INT_EQ(dl_helper_pick(specs, 6, "other.example.com"), 1);
	CHECK_INT_EQ(dl_helper_pick(specs, 6, "x.deep.example.com"), 3);
	CHECK_INT_EQ(dl_helper_pick(specs, 6, "example.org"), 4);
	CHECK_INT_EQ(dl_helper_pick(specs, 6, "127.0.0.1"), 5);
	CHECK_INT_EQ(dl_helper_pick(specs + 1, 2, "example.org"), -1);
}

TEST(rfc3339_times)
{
	time_t t;

	CHECK_INT_EQ(dl_rfc3339_parse("1970-01-01T00:00:00Z", &t), 0);
	CHECK_INT_EQ(t, 0);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-01-02T03:04:05Z", &t), 0);
	CHECK_INT_EQ(t, 1893553445);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-01-02T05:04:05.123+02:00", &t), 0);
	CHECK_INT_EQ(t, 1893553445);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-01-01T22:04:05-05:00", &t), 0);
	CHECK_INT_EQ(t, 1893553445);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-01-02 03:04:05", &t), -EINVAL);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-13-02T03:04:05Z", &t), -EINVAL);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-01-02T03:04Z", &t), -EINVAL);
	CHECK_INT_EQ(dl_rfc3339_parse("tomorrow", &t), -EINVAL);
	CHECK_INT_EQ(dl_rfc3339_parse("2030-01-02T03:04:05Zjunk", &t), -EINVAL);
}
