/* libFuzzer harness: a BEP stream (varint32 length + BuildEvent, as
 * --build_event_binary_file writes it) through the reader, the
 * NamedSetOfFiles graph (every target's groups expanded, every file's exec
 * path) and both writers (binary and JSON) for every event read. A
 * NamedSetOfFiles event (decoded without protobuf-c when it has the usual
 * shape, events/event.c) must be exactly what pw_check and protobuf-c make
 * of its bytes: the two ways are compared, and any difference aborts. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "events/events.h"

#define MAX_TARGETS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_as_protobuf_c(const uint8_t *data, const ev_event *ev)
{
	uint8_t prefix[10];
	const uint8_t *msg = data + ev->offset + pw_put_varint(prefix, ev->size);
	ProtobufCMessage *want;
	uint8_t *a, *b;
	size_t n;

	if (pw_check(&build_event_stream__build_event__descriptor, msg, ev->size,
		     &(pw_check_opts){ .strict_strings = true }, NULL) < 0 ||
	    !(want = protobuf_c_message_unpack(&build_event_stream__build_event__descriptor, NULL, ev->size,
						msg)))
		abort();
	n = protobuf_c_message_get_packed_size(want);
	if (protobuf_c_message_get_packed_size(&ev->msg->base) != n || !(a = malloc(n + 1)) ||
	    !(b = malloc(n + 1)))
		abort();
	protobuf_c_message_pack(want, a);
	protobuf_c_message_pack(&ev->msg->base, b);
	if (memcmp(a, b, n) != 0)
		abort();
	free(a);
	free(b);
	protobuf_c_message_free_unpacked(want, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ev_reader_options ro;
	ev_sets_options so;
	ev_event *targets[MAX_TARGETS], *ev;
	size_t n_targets = 0;
	tf_error err = { 0 };
	tf__buf out;
	ev_sets *sets;
	ev_reader *r;
	int fd, rc;

	fd = memfd_create("bep", 0);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size) || lseek(fd, 0, SEEK_SET) < 0)
		abort();
	ev_reader_options_init(&ro);
	ro.max_message_size = 1u << 20;
	ev_sets_options_init(&so);
	so.max_sets = 4096;
	so.max_files = 65536;
	so.max_depth = 256;
	r = ev_reader_new_fd(fd, "fuzz.bep", &ro, &err);
	sets = ev_sets_new(&so, &err);
	if (!r || !sets)
		abort();
	tf__buf_init(&out, 8u << 20);
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		tf__buf_reset(&out);
		ev_binary_append(&out, &ev->msg->base, &err);
		ev_json_append(&out, &ev->msg->base, &err);
		if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES) {
			same_as_protobuf_c(data, ev);
			ev_sets_add(sets, ev, &err);
		}
		else if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED &&
			 n_targets < MAX_TARGETS)
			targets[n_targets++] = ev_event_ref(ev);
		ev_event_unref(ev);
	}
	if (rc == 0)
		ev_reader_finish(r, &err);
	for (size_t i = 0; i < n_targets; i++) {
		const BuildEventStream__File *f;
		if (ev_sets_expand_target(sets, targets[i], NULL, &err) < 0)
			continue;
		while ((f = ev_sets_expand_next(sets)) != NULL)
			free(ev_file_exec_path(f));
	}
	for (size_t i = 0; i < n_targets; i++)
		ev_event_unref(targets[i]);
	tf__buf_fini(&out);
	ev_sets_free(sets);
	ev_reader_free(r);
	close(fd);
	return 0;
}
