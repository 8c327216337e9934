/* topfetch serve: being written (see the serve work). */
#include <stdio.h>

#include "cli/cli.h"

int cmd_serve(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "topfetch serve: not built yet\n");
	return EXIT_USAGE;
}
