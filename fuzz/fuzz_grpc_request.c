/* libFuzzer harness: the requests a client sends to the proxy's gRPC front
 * end (proxy/grpc.c), decoded as the server decodes them. The first byte
 * picks the decoder: a ByteStream WriteRequest (and the resource name it
 * carries), a Build Event Service PublishBuildToolEventStreamRequest, or one
 * of the unary REAPI requests (checked by the one wire reader, then
 * unpacked by protobuf-c). What a decoder accepts must hold what it says. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_request(const uint8_t *m, size_t n)
{
	char name[1024], hash[TF_HASH_HEX_LEN + 1];
	const char *why = NULL;
	px_grpc_write w;
	int64_t size;

	if (px_grpc_parse_write(m, n, &w, &why) < 0) {
		if (!why)
			abort(); /* refused without saying why */
		return;
	}
	if ((w.data && (w.data < m || w.data + w.len > m + n)) ||
	    (w.name && ((const uint8_t *)w.name < m || (const uint8_t *)w.name + w.name_len > m + n)))
		abort(); /* a field outside the message */
	if (!w.name || w.name_len >= sizeof(name))
		return;
	memcpy(name, w.name, w.name_len);
	name[w.name_len] = '\0';
	for (int upload = 0; upload < 2; upload++)
		if (px_grpc_parse_resource(name, upload, hash, &size) == 0 &&
		    (strlen(hash) != TF_HASH_HEX_LEN || !tf__is_sha256_hex(hash, TF_HASH_HEX_LEN) || size < 0))
			abort(); /* accepted a resource name that names no blob */
}

static void bes_request(const uint8_t *m, size_t n)
{
	char why[PX_MESSAGE_MAX] = "";
	px_grpc_bes_event e;
	size_t idl;

	if (px_grpc_parse_bes(m, n, &e, why, sizeof(why)) < 0) {
		if (!why[0])
			abort();
		return;
	}
	idl = strlen(e.id);
	if (!px_bes_id_ok(e.id, idl) || idl > PX_BES_ID_MAX)
		abort(); /* an invocation id that cannot be a file name */
	if ((e.stream_id < m || e.stream_id + e.stream_id_len > m + n) ||
	    (e.event_len && (e.event < m || e.event + e.event_len > m + n)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[PX_MESSAGE_MAX];
	size_t nunary = 0;

	if (size == 0)
		return 0;
	while (px_grpc_unary_method(nunary))
		nunary++;
	switch (data[0] % (2 + nunary)) {
	case 0:
		write_request(data + 1, size - 1);
		break;
	case 1:
		bes_request(data + 1, size - 1);
		break;
	default:
		why[0] = '\0';
		if (px_grpc_check_unary(px_grpc_unary_method(data[0] % (2 + nunary) - 2), data + 1, size - 1, why,
					sizeof(why)) == -EINVAL &&
		    !why[0])
			abort();
		break;
	}
	return 0;
}
