/* Shared between the files of events/ only; the contract is events.h. */
#ifndef TF_EVENTS_INT_H
#define TF_EVENTS_INT_H

#include "events/events.h"

/* Makes room for n more bytes in b (honouring its cap) without changing
 * b->len: -E2BIG past the cap, -ENOMEM. */
int ev__buf_reserve(tf__buf *b, size_t n);

#endif
