/* libFuzzer harness: the proxy's request path (/ac/KEY, /cas/KEY, with any
 * prefix, as bazel-remote takes them) as Bazel or anybody on the port
 * sends it. */
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *url = malloc(size + 1), key[TF_HASH_HEX_LEN + 1];
	tf_area area;

	if (!url)
		abort();
	memcpy(url, data, size);
	url[size] = '\0';
	if (px_http_parse_path(url, &area, key) == 0 &&
	    (strlen(key) != TF_HASH_HEX_LEN || !tf__is_sha256_hex(key, TF_HASH_HEX_LEN) ||
	     (area != TF_AREA_AC && area != TF_AREA_CAS)))
		abort(); /* accepted something that is not a key */
	free(url);
	return 0;
}
