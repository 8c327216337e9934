/* libFuzzer harness: a serialized ActionResult (what a cache answers for
 * /ac/KEY) decoded and checked, then every output decided under the policy
 * `all` and `toplevel` with a regex, as the proxy and serve do. */
#include <stdlib.h>

#include "checker/checker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_output(const chk_output *o, void *user, tf_error *err)
{
	size_t *n = user;
	*n += o->o.path ? 1 : 0;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static chk_policy all, some;
	static bool ready;
	tf_error err = { 0 };
	chk_action *a = NULL;
	size_t n = 0;

	if (!ready) {
		const char *re[] = { "\\.txt$" };
		tf_policy p = { 0 };
		p.mode = TF_DOWNLOAD_ALL;
		if (chk_policy_init(&all, &p, &err) < 0)
			abort();
		p.mode = TF_DOWNLOAD_TOPLEVEL;
		p.regexes = re;
		p.n_regexes = 1;
		if (chk_policy_init(&some, &p, &err) < 0)
			abort();
		ready = true;
	}
	if (chk_action_decode("0000000000000000000000000000000000000000000000000000000000000000", data, size, &a,
			      &err) == 0) {
		chk_action_each(a, &all, "//fuzz:target", on_output, &n, &err);
		chk_action_each(a, &some, NULL, on_output, &n, &err);
	}
	chk_action_free(a);
	return 0;
}
