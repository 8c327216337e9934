/* topfetch proxy: being written (see the proxy work). */
#include <stdio.h>

#include "cli/cli.h"

int cmd_proxy(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "topfetch proxy: not built yet\n");
	return EXIT_USAGE;
}
