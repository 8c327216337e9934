/* The runner of the test table (see tf_test.h): forks one child per TEST()
 * so that one failing or crashing test cannot hide the others, runs them in
 * the order they were linked, and exits 1 if any failed. Arguments, if any,
 * name the tests to run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tf_test.h"

extern const struct tf_test __start_tf_test_section[], __stop_tf_test_section[];

static int selected(const char *name, int argc, char **argv)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;

	for (const struct tf_test *t = __start_tf_test_section; t < __stop_tf_test_section; t++) {
		if (!selected(t->name, argc, argv))
			continue;
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			t->run();
			exit(0); /* not _exit: LeakSanitizer checks each test */
		}
		int st = 0;
		while (waitpid(pid, &st, 0) < 0)
			;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			printf("ok     %s\n", t->name);
			passed++;
		} else {
			if (WIFSIGNALED(st))
				printf("FAIL   %s (signal %d)\n", t->name, WTERMSIG(st));
			else
				printf("FAIL   %s (exit %d)\n", t->name, WEXITSTATUS(st));
			failed++;
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed || passed == 0 ? 1 : 0;
}
