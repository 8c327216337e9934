/* libFuzzer harness: a credential helper's answer (core/credjson.c), as a
 * helper on the machine may write it. Every header it accepts must be
 * NUL-free strings, at most TF__CRED_HEADERS_MAX of them. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tf__cred_answer a;
	char why[256];

	if (tf__cred_answer_parse(data, size, &a, why, sizeof(why)) == 0) {
		if (a.n > TF__CRED_HEADERS_MAX)
			abort();
		for (size_t i = 0; i < a.n; i++)
			if (!a.v[i].name || !a.v[i].value || strlen(a.v[i].value) >= TF__CRED_STRING_MAX)
				abort();
		tf__cred_answer_fini(&a);
	} else if (!why[0] || a.n != 0) {
		abort(); /* a refusal says why and holds nothing */
	}
	return 0;
}
