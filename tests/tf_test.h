/* Tiny assertion helpers for topfetch's C tests (systemd's tests.h idea).
 * A failed check prints file:line and the expression, then exits 1. Exit 77
 * means skipped; our suites never skip for a missing component in CI. */
#ifndef TF_TEST_H
#define TF_TEST_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(expr)                                                                  \
	do {                                                                         \
		if (!(expr)) {                                                       \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

#define CHECK_INT_EQ(a, b)                                                           \
	do {                                                                         \
		long long a_ = (long long)(a), b_ = (long long)(b);                  \
		if (a_ != b_) {                                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, a_, b_);                 \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

#define CHECK_STR_EQ(a, b)                                                           \
	do {                                                                         \
		const char *a_ = (a), *b_ = (b);                                     \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                             \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s ('%s' != '%s')\n", \
				__FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

/* The message must contain the substring: errors must say what happened. */
#define CHECK_CONTAINS(hay, needle)                                                  \
	do {                                                                         \
		const char *h_ = (hay), *n_ = (needle);                              \
		if (!h_ || !strstr(h_, n_)) {                                        \
			fprintf(stderr, "%s:%d: CHECK failed: '%s' does not contain '%s'\n", \
				__FILE__, __LINE__, h_ ? h_ : "(null)", n_);         \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

/* A test table (libwayland's test-runner idea): each TEST(name) lands in one
 * ELF section; tests/lib/runner.c runs every entry in its own child process
 * (a crash or exit(1) fails that test only), or the ones named on the command
 * line, and prints "N passed, N failed". A file with TEST()s links runner.c
 * and has no main(). */
struct tf_test {
	const char *name;
	void (*run)(void);
};

#define TEST(tname)                                                                  \
	static void tname(void);                                                     \
	static const struct tf_test tf_test_##tname                                  \
		__attribute__((used, section("tf_test_section"), aligned(sizeof(void *)))) = { \
		#tname, tname};                                                      \
	static void tname(void)

#endif
