/* Shared between the files of events/ only; the contract is events.h. */
#ifndef TF_EVENTS_INT_H
#define TF_EVENTS_INT_H

#include "events/events.h"

#endif
