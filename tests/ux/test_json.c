/* The JSON string escaper the summary and the proxy's /status share
 * (tf__buf_json_string), and tf_action_result_json's refusals. */
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"
#include "tf_test.h"

static char *quoted(const char *s, size_t cap, int *r)
{
	static char out[256];
	tf__buf b;

	tf__buf_init(&b, cap);
	*r = tf__buf_json_string(&b, s);
	snprintf(out, sizeof(out), "%.*s", (int)b.len, b.data ? (const char *)b.data : "");
	tf__buf_fini(&b);
	return out;
}

TEST(json_string_escapes)
{
	int r;

	CHECK_STR_EQ(quoted("pkg/a.txt", 1024, &r), "\"pkg/a.txt\"");
	CHECK_INT_EQ(r, 0);
	CHECK_STR_EQ(quoted("say \"hi\"\\", 1024, &r), "\"say \\\"hi\\\"\\\\\"");
	CHECK_STR_EQ(quoted("a\nb\x1b[31m\x7f", 1024, &r), "\"a\\u000ab\\u001b[31m\\u007f\"");
	CHECK_STR_EQ(quoted(NULL, 1024, &r), "null");
	CHECK_INT_EQ(r, 0);
}

TEST(json_string_utf8)
{
	int r;

	/* Valid UTF-8 stays as it is; bytes that are not become U+FFFD. */
	CHECK_STR_EQ(quoted("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 1024, &r), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	CHECK_STR_EQ(quoted("a\xff" "b", 1024, &r), "\"a\\ufffdb\"");
	CHECK_STR_EQ(quoted("\xc3", 1024, &r), "\"\\ufffd\"");     /* cut short */
	CHECK_STR_EQ(quoted("\xc0\xaf", 1024, &r), "\"\\ufffd\\ufffd\""); /* overlong */
	CHECK_INT_EQ(r, 0);
}

TEST(json_string_cap)
{
	int r;

	quoted("0123456789", 8, &r);
	CHECK_INT_EQ(r, -E2BIG);
}

TEST(action_result_json_refuses)
{
	static const unsigned char escape[] = { 0x12, 0x08, 0x0a, 0x06, '.', '.', '/', 'e', 's', 'c' };
	tf_error err = { 0 };
	char *json = (char *)"unchanged";
	const char *key = "0000000000000000000000000000000000000000000000000000000000000000";

	CHECK(tf_action_result_json(key, escape, sizeof(escape), &json, &err) < 0);
	CHECK(json == NULL);
	CHECK(strstr(err.message, "../esc") != NULL);
	CHECK(tf_action_result_json("not a key", "", 0, &json, &err) < 0);
	/* An empty ActionResult is valid: {} */
	CHECK_INT_EQ(tf_action_result_json(key, "", 0, &json, &err), 0);
	CHECK_STR_EQ(json, "{}");
	free(json);
}
