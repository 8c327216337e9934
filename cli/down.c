/* A cache that goes down in the middle of a run fails every file left the
 * same way: said once, then counted, not one line per file. */
#include <string.h>

#include "cli/cli.h"

static uint64_t folded;
static bool said;

bool cli_cache_down_fold(cli_progress *p, tf_result result, const char *message)
{
	if (result != TF_RESULT_FAILED || !message || !strstr(message, TF_CACHE_DOWN))
		return false;
	if (!said) {
		said = true;
		return false; /* the first one is printed as it is */
	}
	(void)p;
	folded++;
	return true;
}

void cli_cache_down_report(cli_progress *p)
{
	if (!folded)
		return;
	cli_progress_clear(p);
	fprintf(stderr, "topfetch: %llu more file%s failed because " TF_CACHE_DOWN " (not listed one by one)\n",
		(unsigned long long)folded, folded == 1 ? "" : "s");
}
