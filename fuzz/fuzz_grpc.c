/* libFuzzer harness: a gRPC answer as a cache sends it — header and trailer
 * lines (grpc-status, a percent-encoded grpc-message), then body bytes in
 * chunks of any size, reassembled into messages (ByteStream ReadResponses
 * checked against their schema). Input: byte 0 picks unary or Read answers
 * and the chunk size; up to the first "\n\n" are header lines; the rest is
 * the body. */
#include <stdlib.h>
#include <string.h>

#include "downloader/downloader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink(void *arg, const void *p, size_t n)
{
	(void)p;
	*(size_t *)arg += n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dl_grpc_rx rx;
	size_t got = 0, i = 0, chunk;
	const uint8_t *body;
	char why[256];

	if (size < 1)
		return 0;
	dl_grpc_rx_init(&rx, data[0] & 1 ? DL_GRPC_READ_DATA : DL_GRPC_RAW);
	chunk = 1 + (data[0] >> 1);
	data++;
	size--;
	body = memmem(data, size, "\n\n", 2);
	if (body) {
		const uint8_t *line = data;
		while (line < body) {
			const uint8_t *end = memchr(line, '\n', (size_t)(body - line));
			if (!end)
				end = body;
			dl_grpc_rx_header(&rx, (const char *)line, (size_t)(end - line));
			line = end + 1;
		}
		body += 2;
	} else {
		body = data;
	}
	size -= (size_t)(body - data);
	while (i < size) {
		size_t n = size - i < chunk ? size - i : chunk;
		if (dl_grpc_rx_feed(&rx, body + i, n, sink, &got) < 0)
			break;
		i += n;
	}
	(void)dl_grpc_rx_partial(&rx);
	dl_grpc_classify(&rx, CURLE_OK, 200, "", 60, why, sizeof(why));
	if (rx.status >= 0 && strlen(rx.message) >= sizeof(rx.message))
		abort();
	dl_grpc_rx_fini(&rx);
	return 0;
}
