/* Shared between the files of events/ only; the contract is events.h. */
#ifndef TF_EVENTS_INT_H
#define TF_EVENTS_INT_H

#include "events/events.h"

/* Hard ceiling for any max_depth option: the schema check keeps one slot
 * per level on the heap. */
#define EV__MAX_DEPTH_LIMIT 1000u

/* Reads a protobuf varint: bytes used, 0 if it runs past avail, -1 if it is
 * longer than 10 bytes or overflows 64 bits. */
int ev__varint(const uint8_t *p, size_t avail, uint64_t *out);

/* Checks data against descriptor d: field tags, wire types of known fields,
 * lengths, packed arrays, nesting up to max_depth (0 = default). Errors name
 * `input`, the record, the field path and the absolute byte offset (`base`
 * is the offset of data[0]). Does not allocate more than one context. */
int ev__wire_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len,
		   unsigned max_depth, const char *input, uint64_t record, uint64_t base,
		   tf_error *err);

/* Makes room for n more bytes in b (honouring its cap) without changing
 * b->len: -E2BIG past the cap, -ENOMEM. */
int ev__buf_reserve(tf__buf *b, size_t n);

#endif
