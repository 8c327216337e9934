#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: topfetch COMMAND [flags]\n\n"
		"Build without the bytes: fetch only the outputs somebody asked for from a Bazel remote\n"
		"cache, verified and written atomically.\n\n"
		"Commands:\n"
		"  collect   fetch the files of a finished build's completed targets (CI artifacts)\n"
		"  proxy     sit between Bazel and its HTTP cache; fetch top-level outputs during the build\n"
		"  serve     a service for other build tools (SCons, Pants style) over nanomsg\n"
		"  fetch     fetch the blobs a manifest lists into a folder (like 'bb download')\n"
		"  get       write one verified blob (HASH/SIZE) to a file or standard output, or print an\n"
		"            ActionResult (--action=HASH) as JSON\n"
		"  version   print the version\n"
		"  help      this text\n\n"
		"Run 'topfetch COMMAND --help' for a command's flags. Flag names follow Bazel's\n"
		"(--remote_cache, --remote_header, --remote_max_connections, ...).\n\n"
		"Exit codes: 0 every wanted file is in place and verified; 1 some were lost, corrupt,\n"
		"failed or could not be written; 2 bad flags or configuration; 3 malformed or incomplete\n"
		"input; 8 interrupted (SIGINT/SIGTERM).\n");
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;

	if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(cmd ? stdout : stderr);
		return cmd ? EXIT_ALL_OK : EXIT_USAGE;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("topfetch %s (commit %s)\n", tf_version(), tf_version_commit());
		return EXIT_ALL_OK;
	}
	if (!strcmp(cmd, "fetch"))
		return cmd_fetch(argc - 2, argv + 2);
	if (!strcmp(cmd, "collect"))
		return cmd_collect(argc - 2, argv + 2);
	if (!strcmp(cmd, "proxy"))
		return cmd_proxy(argc - 2, argv + 2);
	if (!strcmp(cmd, "serve"))
		return cmd_serve(argc - 2, argv + 2);
	if (!strcmp(cmd, "get"))
		return cmd_get(argc - 2, argv + 2);
	fprintf(stderr, "topfetch: unknown command '%s'. Run 'topfetch help' for the commands.\n", cmd);
	return EXIT_USAGE;
}
