/* Synthesized build events: a BEP for build tools that have none.
 *
 * A build tool that is not Bazel reports "build started", "target completed
 * with these files" and "build finished"; this file turns each into the
 * BuildEvents Bazel would have posted, in posting order. It knows nothing of
 * the session: session.c posts what it builds exactly as it posts a real BEP
 * stream, so fetching, gating and the sinks are the same.
 *
 * Announcement follows Bazel's own scheme for events nobody announced
 * (BuildEventStreamer's progress chain): BuildStarted announces ProgressId 0
 * and BuildFinished; each completed target is preceded by a Progress event
 * that announces the next ProgressId, the target's NamedSetOfFiles and its
 * TargetComplete; at the end BuildFinished announces BuildToolLogs, the
 * last Progress of the chain announces nothing, and BuildToolLogs carries
 * last_message.
 *
 * The bookkeeping of one synthesized build is a ses_synth the session owns
 * from tf_session_build_started to tf_session_build_finished. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "session/synth.h"

#define SYNTH_MAX_LABEL 4096
#define SYNTH_MAX_GROUP_NAME 255
#define SYNTH_MAX_GROUPS 256
#define SYNTH_MAX_FILES 1000000 /* files of one completed target, all groups */

struct ses_synth {
	int32_t progress;  /* the ProgressId announced and not yet posted */
	uint64_t next_set; /* named set ids "0", "1", ... as Bazel numbers them */
	tf__map targets;   /* "label\nconfiguration\naspect" of completed targets */
};

ses_synth *ses_synth_new(void)
{
	ses_synth *x = calloc(1, sizeof(*x));

	if (x)
		tf__map_init(&x->targets);
	return x;
}

void ses_synth_free(ses_synth *x)
{
	if (!x)
		return;
	tf__map_fini(&x->targets);
	free(x);
}

/* ---- building events ------------------------------------------------------- */

static BuildEventStream__BuildEventId *new_id(ev_event *ev)
{
	BuildEventStream__BuildEventId *id = ev_event_alloc(ev, sizeof(*id));
	if (id)
		build_event_stream__build_event_id__init(id);
	return id;
}

static BuildEventStream__BuildEventId *progress_id(ev_event *ev, int32_t n)
{
	BuildEventStream__BuildEventId *id = new_id(ev);
	BuildEventStream__BuildEventId__ProgressId *p = ev_event_alloc(ev, sizeof(*p));

	if (!id || !p)
		return NULL;
	build_event_stream__build_event_id__progress_id__init(p);
	p->opaque_count = n;
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
	id->progress = p;
	return id;
}

static BuildEventStream__BuildEventId *named_set_id(ev_event *ev, const char *set)
{
	BuildEventStream__BuildEventId *id = new_id(ev);
	BuildEventStream__BuildEventId__NamedSetOfFilesId *n = ev_event_alloc(ev, sizeof(*n));

	if (!id || !n)
		return NULL;
	build_event_stream__build_event_id__named_set_of_files_id__init(n);
	if (!(n->id = ev_event_strdup(ev, set)))
		return NULL;
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_NAMED_SET;
	id->named_set = n;
	return id;
}

static BuildEventStream__BuildEventId *target_id(ev_event *ev, const char *label, const char *config,
						 const char *aspect)
{
	BuildEventStream__BuildEventId *id = new_id(ev);
	BuildEventStream__BuildEventId__TargetCompletedId *t = ev_event_alloc(ev, sizeof(*t));

	if (!id || !t)
		return NULL;
	build_event_stream__build_event_id__target_completed_id__init(t);
	if (!(t->label = ev_event_strdup(ev, label)))
		return NULL;
	if (config && *config) {
		t->configuration = ev_event_alloc(ev, sizeof(*t->configuration));
		if (!t->configuration)
			return NULL;
		build_event_stream__build_event_id__configuration_id__init(t->configuration);
		if (!(t->configuration->id = ev_event_strdup(ev, config)))
			return NULL;
	}
	if (aspect && *aspect && !(t->aspect = ev_event_strdup(ev, aspect)))
		return NULL;
	id->id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED;
	id->target_completed = t;
	return id;
}

/* An id with no fields: the oneof case alone names it (BuildStartedId,
 * BuildFinishedId, BuildToolLogsId share the empty layout). */
static BuildEventStream__BuildEventId *empty_id(ev_event *ev, BuildEventStream__BuildEventId__IdCase which)
{
	BuildEventStream__BuildEventId *id = new_id(ev);

	if (!id)
		return NULL;
	id->id_case = which;
	switch (which) {
	case BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED:
		id->started = ev_event_alloc(ev, sizeof(*id->started));
		if (!id->started)
			return NULL;
		build_event_stream__build_event_id__build_started_id__init(id->started);
		break;
	case BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_FINISHED:
		id->build_finished = ev_event_alloc(ev, sizeof(*id->build_finished));
		if (!id->build_finished)
			return NULL;
		build_event_stream__build_event_id__build_finished_id__init(id->build_finished);
		break;
	case BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_TOOL_LOGS:
		id->build_tool_logs = ev_event_alloc(ev, sizeof(*id->build_tool_logs));
		if (!id->build_tool_logs)
			return NULL;
		build_event_stream__build_event_id__build_tool_logs_id__init(id->build_tool_logs);
		break;
	default:
		return NULL;
	}
	return id;
}

static bool set_children(ev_event *ev, size_t n)
{
	ev->msg->children = ev_event_alloc(ev, (n ? n : 1) * sizeof(*ev->msg->children));
	ev->msg->n_children = 0;
	return ev->msg->children != NULL;
}

static bool add_child(ev_event *ev, BuildEventStream__BuildEventId *id)
{
	if (!id)
		return false;
	ev->msg->children[ev->msg->n_children++] = id;
	return true;
}

/* A Progress event with id n announcing what the caller adds. */
static ev_event *progress_event(int32_t n, size_t n_children)
{
	ev_event *ev = ev_event_new();
	BuildEventStream__Progress *p;

	if (!ev)
		return NULL;
	p = ev_event_alloc(ev, sizeof(*p));
	if (!p || !(ev->msg->id = progress_id(ev, n)) || !set_children(ev, n_children)) {
		ev_event_unref(ev);
		return NULL;
	}
	build_event_stream__progress__init(p);
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS;
	ev->msg->progress = p;
	return ev;
}

static Google__Protobuf__Timestamp *now_timestamp(ev_event *ev, int64_t *millis)
{
	Google__Protobuf__Timestamp *t = ev_event_alloc(ev, sizeof(*t));
	struct timespec ts;

	if (!t)
		return NULL;
	google__protobuf__timestamp__init(t);
	clock_gettime(CLOCK_REALTIME, &ts);
	t->seconds = ts.tv_sec;
	t->nanos = (int32_t)ts.tv_nsec;
	*millis = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	return t;
}

/* A random (version 4) UUID, as Bazel's invocation id. */
static void make_uuid(char out[37])
{
	unsigned char b[16];
	struct timespec ts;

	if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
		/* No entropy yet (early boot): time and address still make it
		 * unique enough for an invocation id. */
		clock_gettime(CLOCK_REALTIME, &ts);
		memcpy(b, &ts, sizeof(b) < sizeof(ts) ? sizeof(b) : sizeof(ts));
		b[15] ^= (unsigned char)(uintptr_t)out;
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* ---- File entries ------------------------------------------------------------ */

/* Splits an exec-root-relative path as Bazel does: the output root
 * (bazel-out/CONFIG/bin, .../genfiles, .../testlogs) becomes path_prefix and
 * the rest the name; a path outside bazel-out/ keeps its first folder as the
 * prefix. The session joins them again to find the output. */
static BuildEventStream__File *make_file(ev_event *ev, const tf_output_file *o)
{
	BuildEventStream__File *f = ev_event_alloc(ev, sizeof(*f));
	const char *rest = o->path;
	size_t n_prefix = 1;
	char **prefix;

	if (!f)
		return NULL;
	build_event_stream__file__init(f);
	if (!strncmp(o->path, "bazel-out/", 10)) {
		const char *p = o->path;
		int slashes = 0;
		for (; *p && slashes < 3; p++)
			slashes += *p == '/';
		if (slashes == 3 && *p)
			n_prefix = 3;
	}
	prefix = ev_event_alloc(ev, n_prefix * sizeof(*prefix));
	if (!prefix)
		return NULL;
	for (size_t i = 0; i < n_prefix; i++) {
		const char *slash = strchr(rest, '/');
		size_t len = (size_t)(slash - rest);
		prefix[i] = ev_event_alloc(ev, len + 1);
		if (!prefix[i])
			return NULL;
		memcpy(prefix[i], rest, len);
		rest = slash + 1;
	}
	f->path_prefix = prefix;
	f->n_path_prefix = n_prefix;
	if (!(f->name = ev_event_strdup(ev, rest)))
		return NULL;
	if (o->hash) {
		if (!(f->digest = ev_event_strdup(ev, o->hash)))
			return NULL;
		f->length = o->size;
	}
	return f;
}

/* ---- the builders ---------------------------------------------------------------- */

int ses_synth_started(ses_synth *x, ev_event **out, tf_error *err)
{
	ev_event *ev = ev_event_new();
	BuildEventStream__BuildStarted *bs = ev ? ev_event_alloc(ev, sizeof(*bs)) : NULL;
	char uuid[37];

	(void)x;
	*out = NULL;
	if (!bs || !(ev->msg->id = empty_id(ev, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_STARTED)) ||
	    !set_children(ev, 2) || !add_child(ev, progress_id(ev, 0)) ||
	    !add_child(ev, empty_id(ev, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_FINISHED)))
		goto nomem;
	build_event_stream__build_started__init(bs);
	make_uuid(uuid);
	bs->uuid = ev_event_strdup(ev, uuid);
	bs->start_time = now_timestamp(ev, &bs->start_time_millis);
	bs->build_tool_version = ev_event_strdup(ev, "topfetch");
	bs->command = ev_event_strdup(ev, "build");
	if (!bs->uuid || !bs->start_time || !bs->build_tool_version || !bs->command)
		goto nomem;
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED;
	ev->msg->started = bs;
	*out = ev;
	return 0;
nomem:
	ev_event_unref(ev);
	return tf__errf(err, -ENOMEM, "out of memory building BuildStarted");
}

/* Checks the whole report before anything is posted, so that a refused
 * target leaves no half-announced events behind. */
static int check_target(const char *label, const char *config, const char *aspect,
			const tf_output_group *groups, size_t n_groups, tf_error *err)
{
	size_t total = 0;
	tf_digest dg;
	int r;

	if (!label || !*label)
		return tf__errf(err, -EINVAL, "the target has no label");
	if (strlen(label) > SYNTH_MAX_LABEL || (config && strlen(config) > SYNTH_MAX_LABEL) ||
	    (aspect && strlen(aspect) > SYNTH_MAX_LABEL))
		return tf__errf(err, -ENAMETOOLONG, "target %.80s...: label, configuration or aspect over %d bytes",
				label, SYNTH_MAX_LABEL);
	if (n_groups > SYNTH_MAX_GROUPS)
		return tf__errf(err, -E2BIG, "target %s: %zu output groups; at most %d are allowed", label,
				n_groups, SYNTH_MAX_GROUPS);
	for (size_t g = 0; g < n_groups; g++) {
		const tf_output_group *og = &groups[g];
		if (!og->name || !*og->name || strlen(og->name) > SYNTH_MAX_GROUP_NAME)
			return tf__errf(err, -EINVAL, "target %s: output group %zu has %s name", label, g,
					og->name && *og->name ? "an over-long" : "no");
		for (size_t k = 0; k < g; k++)
			if (!strcmp(groups[k].name, og->name))
				return tf__errf(err, -EINVAL, "target %s: output group '%s' is given twice (%zu and %zu)",
						label, og->name, k, g);
		if (og->n_files && !og->files)
			return tf__errf(err, -EINVAL, "target %s: output group '%s' has %zu files but no array",
					label, og->name, og->n_files);
		if (og->n_files > SYNTH_MAX_FILES - total)
			return tf__errf(err, -E2BIG, "target %s: more than %d files; split the report", label,
					SYNTH_MAX_FILES);
		total += og->n_files;
		for (size_t i = 0; i < og->n_files; i++) {
			const tf_output_file *f = &og->files[i];
			char what[SYNTH_MAX_GROUP_NAME + 96];

			snprintf(what, sizeof(what), "output group %zu ('%s') file %zu", g, og->name, i);
			if (!f->path)
				return tf__errf(err, -EINVAL, "target %s: %s has no path", label, what);
			if ((r = tf__path_check(f->path, what, err)) < 0)
				return tf__err_prefix(err, "target %s", label);
			if (!strchr(f->path, '/'))
				return tf__errf(err, -EINVAL,
						"target %s: %s: path '%s' has no folder; a build event names an output "
						"by its output root and a path below it, so put outputs in a folder "
						"(e.g. out/%s)",
						label, what, f->path, f->path);
			if (f->hash && tf_digest_parse(f->hash, f->size, &dg, err) < 0)
				return tf__err_prefix(err, "target %s: %s ('%s')", label, what, f->path);
		}
	}
	return 0;
}

int ses_synth_target(ses_synth *x, const char *label, const char *configuration_id, const char *aspect,
		     const tf_output_group *groups, size_t n_groups, ev_event ***out, size_t *n_out, tf_error *err)
{
	char *key = NULL, **set_ids = NULL;
	ev_event *pev = NULL, *tev = NULL, **evs = NULL;
	BuildEventStream__TargetComplete *tc;
	size_t n_sets = 0, n_evs = 0;
	int r;

	*out = NULL;
	*n_out = 0;
	if ((r = check_target(label, configuration_id, aspect, groups, n_groups, err)) < 0)
		return r;
	if (asprintf(&key, "%s\n%s\n%s", label, configuration_id ? configuration_id : "", aspect ? aspect : "") < 0)
		return tf__errf(err, -ENOMEM, "out of memory");
	if (tf__map_get(&x->targets, key)) {
		free(key);
		return tf__errf(err, -EEXIST, "target %s%s%s%s%s was already reported complete in this build", label,
				configuration_id && *configuration_id ? " (configuration " : "",
				configuration_id && *configuration_id ? configuration_id : "",
				configuration_id && *configuration_id ? ")" : "", aspect && *aspect ? " with its aspect" : "");
	}
	set_ids = calloc(n_groups ? n_groups : 1, sizeof(*set_ids));
	evs = calloc(n_groups + 2, sizeof(*evs));
	if (!set_ids || !evs)
		goto nomem;
	for (size_t g = 0; g < n_groups; g++)
		if (groups[g].n_files) {
			if (asprintf(&set_ids[g], "%llu", (unsigned long long)(x->next_set + n_sets)) < 0)
				goto nomem;
			n_sets++;
		}

	/* The TargetComplete: one output group per group, each naming its set. */
	tev = ev_event_new();
	tc = tev ? ev_event_alloc(tev, sizeof(*tc)) : NULL;
	if (!tc || !(tev->msg->id = target_id(tev, label, configuration_id, aspect)))
		goto nomem;
	build_event_stream__target_complete__init(tc);
	tc->success = 1;
	tc->output_group = ev_event_alloc(tev, (n_groups ? n_groups : 1) * sizeof(*tc->output_group));
	if (!tc->output_group)
		goto nomem;
	for (size_t g = 0; g < n_groups; g++) {
		BuildEventStream__OutputGroup *og = ev_event_alloc(tev, sizeof(*og));
		if (!og)
			goto nomem;
		build_event_stream__output_group__init(og);
		if (!(og->name = ev_event_strdup(tev, groups[g].name)))
			goto nomem;
		if (set_ids[g]) {
			BuildEventStream__BuildEventId *sid = named_set_id(tev, set_ids[g]);
			og->file_sets = ev_event_alloc(tev, sizeof(*og->file_sets));
			if (!sid || !og->file_sets)
				goto nomem;
			og->file_sets[0] = sid->named_set;
			og->n_file_sets = 1;
		}
		tc->output_group[tc->n_output_group++] = og;
	}
	tev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED;
	tev->msg->completed = tc;

	/* The Progress link that announces them. */
	pev = progress_event(x->progress, 2 + n_sets);
	if (!pev || !add_child(pev, progress_id(pev, x->progress + 1)))
		goto nomem;
	for (size_t g = 0; g < n_groups; g++)
		if (set_ids[g] && !add_child(pev, named_set_id(pev, set_ids[g])))
			goto nomem;
	if (!add_child(pev, target_id(pev, label, configuration_id, aspect)))
		goto nomem;
	evs[n_evs++] = pev;
	pev = NULL;

	for (size_t g = 0; g < n_groups; g++) {
		ev_event *nev;
		BuildEventStream__NamedSetOfFiles *ns;
		bool ok;
		if (!set_ids[g])
			continue;
		nev = ev_event_new();
		ns = nev ? ev_event_alloc(nev, sizeof(*ns)) : NULL;
		if (ns) {
			build_event_stream__named_set_of_files__init(ns);
			ns->files = ev_event_alloc(nev, groups[g].n_files * sizeof(*ns->files));
		}
		ok = ns && ns->files && (nev->msg->id = named_set_id(nev, set_ids[g]));
		for (size_t i = 0; ok && i < groups[g].n_files; i++)
			ok = (ns->files[ns->n_files++] = make_file(nev, &groups[g].files[i])) != NULL;
		if (!ok) {
			ev_event_unref(nev);
			goto nomem;
		}
		nev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES;
		nev->msg->named_set_of_files = ns;
		evs[n_evs++] = nev;
	}
	evs[n_evs++] = tev;
	tev = NULL;
	if (tf__map_put(&x->targets, key, x) < 0)
		goto nomem;
	x->progress++;
	x->next_set += n_sets;
	*out = evs;
	*n_out = n_evs;
	evs = NULL;
	r = 0;
	goto out;
nomem:
	r = tf__errf(err, -ENOMEM, "out of memory building the events of target %s", label);
out:
	ev_event_unref(pev);
	ev_event_unref(tev);
	for (size_t i = 0; evs && i < n_evs; i++)
		ev_event_unref(evs[i]);
	free(evs);
	for (size_t g = 0; set_ids && g < n_groups; g++)
		free(set_ids[g]);
	free(set_ids);
	free(key);
	return r;
}

/* Bazel's names for the exit codes a build tool is likely to report. */
static const char *exit_code_name(int code)
{
	switch (code) {
	case 0: return "SUCCESS";
	case 1: return "BUILD_FAILURE";
	case 2: return "COMMAND_LINE_ERROR";
	case 3: return "TESTS_FAILED";
	case 4: return "NO_TESTS_FOUND";
	case 8: return "INTERRUPTED";
	default: return NULL;
	}
}

int ses_synth_finished(ses_synth *x, int exit_code, ev_event *out[3], tf_error *err)
{
	BuildEventStream__BuildFinished *bf;
	BuildEventStream__BuildFinished__ExitCode *ec;
	BuildEventStream__BuildToolLogs *logs;
	ev_event *ev;
	char name[32];

	out[0] = out[1] = out[2] = NULL;
	ev = ev_event_new();
	bf = ev ? ev_event_alloc(ev, sizeof(*bf)) : NULL;
	ec = ev ? ev_event_alloc(ev, sizeof(*ec)) : NULL;
	if (!bf || !ec || !(ev->msg->id = empty_id(ev, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_FINISHED)) ||
	    !set_children(ev, 1) || !add_child(ev, empty_id(ev, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_TOOL_LOGS)))
		goto nomem;
	build_event_stream__build_finished__init(bf);
	build_event_stream__build_finished__exit_code__init(ec);
	if (exit_code_name(exit_code))
		snprintf(name, sizeof(name), "%s", exit_code_name(exit_code));
	else
		snprintf(name, sizeof(name), "EXIT_CODE_%d", exit_code);
	if (!(ec->name = ev_event_strdup(ev, name)))
		goto nomem;
	ec->code = exit_code;
	bf->exit_code = ec;
	bf->overall_success = exit_code == 0;
	if (!(bf->finish_time = now_timestamp(ev, &bf->finish_time_millis)))
		goto nomem;
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_FINISHED;
	ev->msg->finished = bf;
	out[0] = ev;

	/* The chain's last link announces nothing. */
	if (!(out[1] = progress_event(x->progress, 0)))
		goto nomem_kept;
	x->progress++;

	ev = ev_event_new();
	logs = ev ? ev_event_alloc(ev, sizeof(*logs)) : NULL;
	if (!logs || !(ev->msg->id = empty_id(ev, BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_BUILD_TOOL_LOGS)))
		goto nomem;
	build_event_stream__build_tool_logs__init(logs);
	ev->msg->payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_BUILD_TOOL_LOGS;
	ev->msg->build_tool_logs = logs;
	ev->msg->last_message = 1;
	out[2] = ev;
	return 0;
nomem:
	if (ev != out[0])
		ev_event_unref(ev);
nomem_kept:
	for (int i = 0; i < 3; i++) {
		ev_event_unref(out[i]);
		out[i] = NULL;
	}
	return tf__errf(err, -ENOMEM, "out of memory building the events of the build's end");
}
