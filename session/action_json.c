/* tf_action_result_json: an ActionResult as JSON for a person or a tool
 * (`topfetch get --action`). The checker decides whether it may be trusted
 * (paths, digests); the events writer's proto3 JSON does the words. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "checker/checker.h"
#include "events/events.h"
#include "remote_execution.pb-c.h"

#define ACTION_JSON_MAX (256u * 1024 * 1024)

int tf_action_result_json(const char *action_key, const void *bytes, size_t len, char **out, tf_error *err)
{
	Build__Bazel__Remote__Execution__V2__ActionResult *ar;
	chk_action *checked = NULL;
	tf__buf b;
	int r;

	*out = NULL;
	r = chk_action_decode(action_key, bytes, len, &checked, err);
	chk_action_free(checked);
	if (r < 0)
		return r;
	ar = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, bytes);
	if (!ar)
		return tf__errf(err, -EBADMSG, "the ActionResult of action %s (%zu bytes) does not decode", action_key,
				len);
	tf__buf_init(&b, ACTION_JSON_MAX);
	r = ev_json_append(&b, &ar->base, err);
	build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
	if (r == 0 && (r = tf__buf_append(&b, "", 1)) < 0)
		tf__errf(err, r, "out of memory");
	if (r < 0) {
		tf__buf_fini(&b);
		return r;
	}
	*out = (char *)b.data;
	return 0;
}
