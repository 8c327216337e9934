/* core: the one hash map (put, replace, get, remove, growth, iteration), hex
 * both ways, the capped buffer. */
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"
#include "tf_test.h"

static void count(const char *key, void *value, void *user)
{
	(void)key;
	(void)value;
	(*(int *)user)++;
}

TEST(map_put_get_replace_remove)
{
	tf__map m;
	int a = 1, b = 2;

	tf__map_init(&m);
	CHECK(tf__map_get(&m, "x") == NULL);
	CHECK_INT_EQ(tf__map_put(&m, "x", &a), 0);
	CHECK(tf__map_get(&m, "x") == &a);
	CHECK_INT_EQ(tf__map_put(&m, "x", &b), 0);
	CHECK(tf__map_get(&m, "x") == &b);
	CHECK_INT_EQ(m.n, 1);
	CHECK(tf__map_remove(&m, "x") == &b);
	CHECK(tf__map_get(&m, "x") == NULL);
	CHECK(tf__map_remove(&m, "x") == NULL);
	tf__map_fini(&m);
}

TEST(map_grows_and_iterates)
{
	tf__map m;
	char key[32];
	int n = 0;

	tf__map_init(&m);
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CHECK_INT_EQ(tf__map_put(&m, key, (void *)(intptr_t)(i + 1)), 0);
	}
	CHECK_INT_EQ(m.n, 10000);
	for (int i = 0; i < 10000; i += 997) {
		snprintf(key, sizeof(key), "k%d", i);
		CHECK((intptr_t)tf__map_get(&m, key) == i + 1);
	}
	tf__map_each(&m, count, &n);
	CHECK_INT_EQ(n, 10000);
	tf__map_fini(&m);
}

TEST(hex_round_trip)
{
	const unsigned char in[4] = {0x00, 0x9f, 0xa0, 0xff};
	unsigned char back[4];
	char hex[9];

	tf__hex(in, 4, hex);
	CHECK_STR_EQ(hex, "009fa0ff");
	CHECK(tf__unhex(hex, 4, back));
	CHECK(memcmp(in, back, 4) == 0);
	CHECK(!tf__unhex("009FA0FF", 4, back)); /* uppercase is not a digest */
	CHECK(!tf__unhex("00 9", 2, back));
}

TEST(buf_cap)
{
	tf__buf b;

	tf__buf_init(&b, 10);
	CHECK_INT_EQ(tf__buf_append(&b, "12345", 5), 0);
	CHECK_INT_EQ(tf__buf_reserve(&b, 5), 0);
	CHECK_INT_EQ(b.len, 5);
	CHECK_INT_EQ(tf__buf_append(&b, "123456", 6), -E2BIG);
	CHECK_INT_EQ(b.len, 5);
	CHECK_INT_EQ(tf__buf_append(&b, "12345", 5), 0);
	CHECK(memcmp(b.data, "1234512345", 10) == 0);
	tf__buf_fini(&b);
}

TEST(map_binary_keys)
{
	tf__map m;
	int a = 1, b = 2;
	const char k1[] = {'x', 0, 'y'}, k2[] = {'x', 0, 'z'};

	tf__map_init(&m);
	CHECK_INT_EQ(tf__map_putn(&m, k1, sizeof(k1), &a), 0);
	CHECK_INT_EQ(tf__map_putn(&m, k2, sizeof(k2), &b), 0);
	CHECK_INT_EQ(m.n, 2); /* a NUL inside a key does not cut it short */
	CHECK(tf__map_getn(&m, k1, sizeof(k1)) == &a);
	CHECK(tf__map_getn(&m, k2, sizeof(k2)) == &b);
	CHECK(tf__map_get(&m, "x") == NULL);
	CHECK(tf__map_removen(&m, k1, sizeof(k1)) == &a);
	CHECK(tf__map_getn(&m, k1, sizeof(k1)) == NULL);
	tf__map_fini(&m);
}
