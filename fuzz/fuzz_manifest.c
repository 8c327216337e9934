/* libFuzzer harness: the manifest of `topfetch fetch` (cli/manifest.c). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	cli_manifest m = { 0 };
	FILE *f;

	if (!devnull && !(devnull = fopen("/dev/null", "w")))
		abort();
	if (size == 0)
		return 0;
	f = fmemopen((void *)data, size, "r");
	if (!f)
		abort();
	cli_manifest_read(f, "fuzz.manifest", &m, devnull);
	fclose(f);
	cli_manifest_free(&m);
	return 0;
}
