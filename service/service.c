/* The `topfetch serve` loop: a nanomsg REP socket for requests, one session
 * per build, a nanomsg PUB socket for the events.
 *
 * Each round polls the REP socket's NN_RCVFD and the open build's session fd
 * together, so fetches progress and held events are released while requests
 * come in and while nothing does. Requests are answered at once, except
 * BuildFinished: its build is put in the FINISHING state and answered when
 * every TargetComplete it reported was released (so BuildFinished follows
 * them in the stream, as in Bazel) and the session has finished. While a
 * build finishes, the REP socket is not read: REP answers one request at a
 * time, and the next request waits in nanomsg's queue.
 *
 * The PUB socket belongs to the service, not to a build's session, so a
 * subscriber stays connected across builds and sees every build from its
 * BuildStarted; the session hands each released event over through its
 * on_event callback. */
#include <errno.h>
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "proto/wire.h"
#include "service/service.h"
#include "topfetch_service.pb-c.h"

#define SVC_REQUEST_MAX_DEPTH 32 /* requests nest a few levels; deeper is not one of ours */
#define SVC_REQUESTS_PER_ROUND 64 /* then dispatch the session again */
#define SVC_MAX_FETCHING_LISTED 10000u
#define SVC_REPLY_TIMEOUT_MS 5000
#define SVC_PUB_CLOSE_GRACE_MS 200

typedef Topfetch__Service__Request Request;
typedef Topfetch__Service__Reply Reply;

typedef struct lost_item {
	tf_result result;
	char *path, *hash, *action_key, *target, *message;
	int64_t size;
} lost_item;

typedef enum build_state {
	B_NONE,      /* no build open */
	B_OPEN,      /* BuildStarted answered */
	B_FINISHING, /* BuildFinished received, answered when its fetches are done */
} build_state;

struct svc_service {
	svc_options o;
	char *listen, *publish;
	int rep, pub;  /* nanomsg sockets, -1 when none */
	int rep_fd;    /* NN_RCVFD of rep */
	size_t max_request;
	uint64_t builds;
	/* the build */
	build_state state;
	uint64_t build;
	tf_session *session;
	struct reply_ctx *deciding; /* the reply the session's decisions go into, during a request */
	uint64_t started_ns;
	int finish_exit_code;
	char *session_error; /* the session failed: every later request says so */
	lost_item *lost;     /* kept, at most SVC_MAX_LOST_KEPT */
	size_t n_lost, cap_lost;
	uint64_t lost_total;      /* reported by the session, kept or not */
	size_t lost_listed;       /* kept ones already sent in a reply */
	uint64_t unlisted_sent;   /* not-kept ones already counted in a reply */
};

/* nanomsg's own codes (ETERM, EFSM) lie above the errno range. */
static int nn_code(int e)
{
	return e > 0 && e < 4096 ? -e : -EIO;
}

/* ---- the session's callbacks ------------------------------------------------- */

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void on_lost(const tf_lost_output *l, void *user)
{
	svc_service *s = user;
	lost_item *it;

	s->lost_total++;
	if (s->n_lost >= SVC_MAX_LOST_KEPT)
		return;
	if (s->n_lost == s->cap_lost) {
		size_t nc = s->cap_lost ? s->cap_lost * 2 : 16;
		lost_item *n = realloc(s->lost, nc * sizeof(*n));
		if (!n)
			return; /* counted in lost_total, listed as not listed */
		s->lost = n;
		s->cap_lost = nc;
	}
	it = &s->lost[s->n_lost];
	memset(it, 0, sizeof(*it));
	it->result = l->result;
	it->size = l->digest.size;
	it->path = dup_or_null(l->path);
	it->hash = strdup(l->digest.hash);
	it->action_key = dup_or_null(l->action_key);
	it->target = dup_or_null(l->target);
	it->message = dup_or_null(l->message);
	s->n_lost++;
}

static void on_event(const void *event, size_t len, void *user)
{
	svc_service *s = user;
	void *msg;

	if (s->pub < 0)
		return;
	/* PUB never waits for a subscriber: one that is behind misses events
	 * (nanomsg skips its pipe) rather than stalling every build. */
	if (len == 0) {
		nn_send(s->pub, "", 0, NN_DONTWAIT);
		return;
	}
	msg = nn_allocmsg(len, 0);
	if (!msg)
		return;
	memcpy(msg, event, len);
	if (nn_send(s->pub, &msg, NN_MSG, NN_DONTWAIT) < 0)
		nn_freemsg(msg);
}

/* ---- replies ------------------------------------------------------------------- */

typedef struct reply_ctx {
	Reply r;
	Topfetch__Service__Stats stats;
	Topfetch__Service__LostOutput *lost; /* the messages behind r.lost */
	char error[2 * TF_ERROR_MESSAGE_MAX];
	Topfetch__Service__ActionDecision action;
	Topfetch__Service__TargetDecision target;
	char **fetching;
	size_t n_fetching, cap_fetching;
	bool refused; /* error holds why */
} reply_ctx;

/* The session's decisions, gathered into the reply of the request that
 * caused them (the policy is applied once, by the session). */
static void on_decision(const tf_decision *d, void *user)
{
	svc_service *s = user;
	reply_ctx *c = s->deciding;

	if (!c)
		return;
	if (d->action_key) {
		Topfetch__Service__ActionDecision *a = &c->action;
		a->outputs++;
		if (!d->wanted || (d->kind != TF_DECISION_FILE && d->kind != TF_DECISION_DIRECTORY))
			return;
		if (c->n_fetching < SVC_MAX_FETCHING_LISTED) {
			if (c->n_fetching == c->cap_fetching) {
				size_t nc = c->cap_fetching ? c->cap_fetching * 2 : 16;
				char **n = realloc(c->fetching, nc * sizeof(*n));
				if (!n) {
					a->fetching_not_listed++;
					return;
				}
				c->fetching = n;
				c->cap_fetching = nc;
			}
			if ((c->fetching[c->n_fetching] = strdup(d->path))) {
				c->n_fetching++;
				return;
			}
		}
		a->fetching_not_listed++;
	} else if (d->kind == TF_DECISION_TARGET) {
		c->target.wanted = d->wanted;
	} else if (d->wanted) {
		c->target.files++;
	}
}

static void reply_init(reply_ctx *c)
{
	memset(c, 0, sizeof(*c));
	topfetch__service__reply__init(&c->r);
	topfetch__service__stats__init(&c->stats);
	topfetch__service__action_decision__init(&c->action);
	topfetch__service__target_decision__init(&c->target);
}

static void reply_fini(reply_ctx *c)
{
	free(c->r.lost);
	free(c->lost);
	for (size_t i = 0; i < c->n_fetching; i++)
		free(c->fetching[i]);
	free(c->fetching);
}

static int reply_error(reply_ctx *c, const char *fmt, ...) TF__PRINTF(2, 3);

static int reply_error(reply_ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	c->refused = true;
	c->r.error = c->error;
	return 0;
}

static void fill_stats(Topfetch__Service__Stats *o, const tf_session_stats *st)
{
	o->actions = st->actions;
	o->outputs_injected = st->outputs_injected;
	o->files_wanted = st->files_wanted;
	o->files_fetched = st->files_fetched;
	o->files_present = st->files_present;
	o->bytes_fetched = st->bytes_fetched;
	o->lost = st->lost;
	o->failed = st->failed;
	o->targets_completed = st->targets_completed;
	o->targets_failed = st->targets_failed;
	o->events_written = st->events_written;
	o->files_unknown = st->files_unknown;
}

/* The lost outputs the reply carries: since the previous reply, or (all)
 * every one the build kept. */
static void attach_lost(svc_service *s, reply_ctx *c, bool all)
{
	size_t from = all ? 0 : s->lost_listed, n = s->n_lost - from;
	uint64_t unlisted = s->lost_total - s->n_lost;

	if (n) {
		c->lost = calloc(n, sizeof(*c->lost));
		c->r.lost = calloc(n, sizeof(*c->r.lost));
		if (!c->lost || !c->r.lost) {
			free(c->lost);
			free(c->r.lost);
			c->lost = NULL;
			c->r.lost = NULL;
			return; /* sent with the next reply */
		}
		for (size_t i = 0; i < n; i++) {
			const lost_item *it = &s->lost[from + i];
			Topfetch__Service__LostOutput *o = &c->lost[i];
			topfetch__service__lost_output__init(o);
			o->path = it->path ? it->path : (char *)"";
			o->hash = it->hash ? it->hash : (char *)"";
			o->size = it->size;
			o->action_key = it->action_key ? it->action_key : (char *)"";
			o->target = it->target ? it->target : (char *)"";
			o->message = it->message ? it->message : (char *)"";
			o->result = (char *)tf_result_name(it->result);
			c->r.lost[i] = o;
		}
		c->r.n_lost = n;
	}
	c->r.lost_not_listed = all ? unlisted : unlisted - s->unlisted_sent;
	s->lost_listed = s->n_lost;
	s->unlisted_sent = unlisted;
}

static int send_reply(svc_service *s, reply_ctx *c, tf_error *err)
{
	size_t n;
	void *msg;
	int e;

	if (s->session) {
		tf_session_stats st;
		tf_session_get_stats(s->session, &st);
		fill_stats(&c->stats, &st);
		c->r.stats = &c->stats;
	}
	c->r.ok = !c->refused;
	n = topfetch__service__reply__get_packed_size(&c->r);
	msg = nn_allocmsg(n ? n : 1, 0);
	if (!msg)
		return tf__errf(err, -ENOMEM, "out of memory for a %zu-byte reply", n);
	topfetch__service__reply__pack(&c->r, msg);
	if (nn_send(s->rep, &msg, NN_MSG, 0) < 0) {
		e = nn_errno();
		nn_freemsg(msg);
		/* The client went away or stopped reading: its loss, not ours. */
		if (e == ETIMEDOUT || e == EAGAIN || e == EFSM)
			return 0;
		return tf__errf(err, nn_code(e), "%s: cannot send a reply: %s", s->listen, nn_strerror(e));
	}
	return 0;
}

/* ---- builds ------------------------------------------------------------------------ */

static void drop_build(svc_service *s)
{
	tf_session_free(s->session);
	s->session = NULL;
	for (size_t i = 0; i < s->n_lost; i++) {
		free(s->lost[i].path);
		free(s->lost[i].hash);
		free(s->lost[i].action_key);
		free(s->lost[i].target);
		free(s->lost[i].message);
	}
	free(s->lost);
	s->lost = NULL;
	s->n_lost = s->cap_lost = s->lost_listed = 0;
	s->lost_total = s->unlisted_sent = 0;
	free(s->session_error);
	s->session_error = NULL;
	s->state = B_NONE;
	s->build = 0;
}

/* Ends the build: BuildFinished into the stream, every fetch waited for,
 * every event released; reports it, and answers the BuildFinished request
 * when reply is true. */
static int finish_build(svc_service *s, int exit_code, bool interrupted, bool reply, tf_error *err)
{
	tf_error fe = { 0 };
	svc_build_report rep = { 0 };
	reply_ctx c;
	int r, sr = 0;

	r = tf_session_build_finished(s->session, exit_code, &fe);
	if (r < 0) {
		/* The stream cannot end properly; finish what can be. */
		tf_error fe2 = { 0 };
		tf_session_finish(s->session, NULL, &fe2);
	} else {
		r = tf_session_finish(s->session, NULL, &fe);
	}
	rep.build = s->build;
	rep.exit_code = exit_code;
	rep.interrupted = interrupted;
	rep.seconds = (double)(tf__now_ns() - s->started_ns) / 1e9;
	tf_session_get_stats(s->session, &rep.stats);
	rep.lost_outputs = s->lost_total;
	rep.error = r;
	rep.message = r < 0 ? fe.message : NULL;
	if (reply) {
		reply_init(&c);
		if (r < 0)
			reply_error(&c, "build_finished: the build ended with an error: %s", fe.message);
		c.r.build = s->build;
		attach_lost(s, &c, true);
		sr = send_reply(s, &c, err);
		reply_fini(&c);
	}
	if (s->o.on_build_done)
		s->o.on_build_done(&rep, s->o.user);
	drop_build(s);
	return sr;
}

/* A BuildFinished waits for every TargetComplete of its build to be
 * released, so that BuildFinished follows them; a session that failed
 * releases nothing more, so it is finished at once. */
static bool finish_ready(const svc_service *s)
{
	return s->session_error || tf_session_events_held(s->session) == 0;
}

/* ---- requests ------------------------------------------------------------------------ */

static const char *nonempty(const char *s)
{
	return s && *s ? s : NULL;
}

static int handle_build_started(svc_service *s, const Topfetch__Service__BuildStarted *m, reply_ctx *c)
{
	tf_session_options so = s->o.session;
	tf_error err = { 0 };

	if (s->state != B_NONE)
		return reply_error(c,
				   "build_started: build %llu is still open; send BuildFinished to end it first (a "
				   "client that lost track of it can end it with BuildFinished)",
				   (unsigned long long)s->build);
	so.policy = (tf_policy){ 0 };
	if (m->download_mode && *m->download_mode &&
	    tf_download_mode_parse(m->download_mode, &so.policy.mode) < 0)
		return reply_error(c, "build_started.download_mode: '%.64s' is not one of toplevel, all, minimal",
				   m->download_mode);
	if (m->n_regexes > SVC_MAX_REGEXES)
		return reply_error(c, "build_started.regexes: %zu given; at most %d are allowed", m->n_regexes,
				   SVC_MAX_REGEXES);
	if (m->n_output_groups > SVC_MAX_GROUPS)
		return reply_error(c, "build_started.output_groups: %zu given; at most %d are allowed",
				   m->n_output_groups, SVC_MAX_GROUPS);
	if (m->n_targets > SVC_MAX_TARGETS)
		return reply_error(c, "build_started.targets: %zu given; at most %d are allowed", m->n_targets,
				   SVC_MAX_TARGETS);
	for (size_t i = 0; i < m->n_output_groups; i++)
		if (!*m->output_groups[i])
			return reply_error(c, "build_started.output_groups[%zu]: empty group name", i);
	so.policy.regexes = (const char *const *)m->regexes;
	so.policy.n_regexes = m->n_regexes;
	so.policy.output_groups = (const char *const *)m->output_groups;
	so.policy.n_output_groups = m->n_output_groups;
	so.policy.targets = (const char *const *)m->targets;
	so.policy.n_targets = m->n_targets;
	so.build_event_publish = NULL; /* the service's own PUB socket, through on_event */
	so.on_lost = on_lost;
	so.on_event = s->pub >= 0 ? on_event : NULL;
	so.on_file = NULL;
	so.on_decision = on_decision;
	so.user = s;
	s->session = tf_session_new(&so, &err);
	if (!s->session) {
		/* A policy the session refuses names the flag it came from. */
		if (err.code == -EINVAL && !strncmp(err.message, "--remote_download_regex", 23))
			return reply_error(c, "build_started.regexes: %s", err.message);
		return reply_error(c, "build_started: cannot open the build: %s", err.message);
	}
	s->builds++;
	s->build = s->builds;
	s->state = B_OPEN;
	s->started_ns = tf__now_ns();
	if (tf_session_build_started(s->session, &err) < 0) {
		reply_error(c, "build_started: cannot start the build's event stream: %s", err.message);
		drop_build(s);
		return 0;
	}
	c->r.build = s->build;
	return 0;
}

static int handle_action_executed(svc_service *s, const Topfetch__Service__ActionExecuted *m, reply_ctx *c)
{
	tf_error err = { 0 };
	int r;

	if (!m->action_key || !tf__is_sha256_hex(m->action_key, strlen(m->action_key)))
		return reply_error(c,
				   "action_executed.action_key: '%.80s' is not an action key (the lowercase hex "
				   "SHA-256 of the serialized Action, 64 digits)",
				   m->action_key ? m->action_key : "");
	if (m->target_label && strlen(m->target_label) > TF__PATH_MAX)
		return reply_error(c, "action_executed.target_label: over %d bytes", TF__PATH_MAX);
	s->deciding = c;
	r = tf_session_action_executed(s->session, m->action_key, nonempty(m->target_label), m->action_result.data,
				       m->action_result.len, &err);
	s->deciding = NULL;
	/* The reply says it is recorded: durable before it goes. */
	if (r == 0)
		r = tf_session_commit(s->session, &err);
	if (r < 0) {
		/* Nothing was recorded: no decision goes into the reply. */
		for (size_t i = 0; i < c->n_fetching; i++)
			free(c->fetching[i]);
		c->n_fetching = 0;
		topfetch__service__action_decision__init(&c->action);
		return reply_error(c, "action_executed.action_result: %s", err.message);
	}
	c->action.fetching = c->fetching;
	c->action.n_fetching = c->n_fetching;
	c->r.decision_case = TOPFETCH__SERVICE__REPLY__DECISION_ACTION;
	c->r.action = &c->action;
	return 0;
}

static int handle_target_completed(svc_service *s, const Topfetch__Service__TargetCompleted *m, reply_ctx *c)
{
	tf_output_group *groups = NULL;
	tf_output_file *files = NULL;
	tf_session_stats before, after;
	tf_error err = { 0 };
	size_t total = 0, at = 0;
	char what[128];
	int r;
	tf_digest dg;

	if (!m->label || !*m->label)
		return reply_error(c, "target_completed.label: empty; give the target's label (e.g. //pkg:app)");
	if (m->n_output_groups > SVC_MAX_GROUPS)
		return reply_error(c, "target_completed.output_groups: %zu given; at most %d are allowed",
				   m->n_output_groups, SVC_MAX_GROUPS);
	for (size_t g = 0; g < m->n_output_groups; g++) {
		const Topfetch__Service__OutputGroup *og = m->output_groups[g];
		if (!og->name || !*og->name)
			return reply_error(c, "target_completed.output_groups[%zu].name: empty (e.g. \"default\")", g);
		if (og->n_files > SVC_MAX_TARGET_FILES - total)
			return reply_error(c, "target_completed.output_groups: more than %u files in one request",
					   SVC_MAX_TARGET_FILES);
		total += og->n_files;
		for (size_t i = 0; i < og->n_files; i++) {
			const Topfetch__Service__OutputFile *f = og->files[i];
			snprintf(what, sizeof(what), "target_completed.output_groups[%zu].files[%zu]", g, i);
			if (tf__path_check(f->path, "path", &err) < 0)
				return reply_error(c, "%s.%s", what, err.message);
			if (!strchr(f->path, '/'))
				return reply_error(c,
						   "%s.path: '%s' has no folder; a build event names an output by "
						   "its output root and a path below it, so put outputs in a folder "
						   "(e.g. out/%s)",
						   what, f->path, f->path);
			if (*f->hash && tf_digest_parse(f->hash, f->size, &dg, &err) < 0)
				return reply_error(c, "%s.hash/size: %s", what, err.message);
			if (!*f->hash && f->size < 0)
				return reply_error(c, "%s.size: %lld is negative", what, (long long)f->size);
		}
	}
	groups = calloc(m->n_output_groups ? m->n_output_groups : 1, sizeof(*groups));
	files = calloc(total ? total : 1, sizeof(*files));
	if (!groups || !files) {
		free(groups);
		free(files);
		return reply_error(c, "target_completed: the service is out of memory");
	}
	for (size_t g = 0; g < m->n_output_groups; g++) {
		const Topfetch__Service__OutputGroup *og = m->output_groups[g];
		groups[g].name = og->name;
		groups[g].files = files + at;
		groups[g].n_files = og->n_files;
		for (size_t i = 0; i < og->n_files; i++, at++) {
			files[at].path = og->files[i]->path;
			files[at].hash = nonempty(og->files[i]->hash);
			files[at].size = og->files[i]->size;
			files[at].executable = og->files[i]->executable;
		}
	}
	tf_session_get_stats(s->session, &before);
	s->deciding = c;
	r = tf_session_target_completed(s->session, m->label, nonempty(m->configuration), nonempty(m->aspect), groups,
					m->n_output_groups, &err);
	s->deciding = NULL;
	free(groups);
	free(files);
	if (r < 0) {
		topfetch__service__target_decision__init(&c->target);
		return reply_error(c, "target_completed: %s", err.message);
	}
	tf_session_get_stats(s->session, &after);
	c->target.present = (uint32_t)(after.files_present - before.files_present);
	c->target.unknown = (uint32_t)(after.files_unknown - before.files_unknown);
	c->target.pending = c->target.files > c->target.present + c->target.unknown
				    ? c->target.files - c->target.present - c->target.unknown
				    : 0;
	c->r.decision_case = TOPFETCH__SERVICE__REPLY__DECISION_TARGET;
	c->r.target = &c->target;
	return 0;
}

/* Handles one request. Returns 1 when the reply is deferred (BuildFinished),
 * 0 when c holds the reply. */
static int handle(svc_service *s, const void *data, size_t len, reply_ctx *c)
{
	tf_error err = { 0 };
	Request *m;
	int r = 0;

	if (len > s->max_request)
		return reply_error(c,
				   "the request is %zu bytes, over the cap of %zu bytes (--max_request_size); "
				   "report an action's outputs or a target's files in smaller requests",
				   len, s->max_request);
	if (pw_check(&topfetch__service__request__descriptor, data, len,
		     &(pw_check_opts){.max_depth = SVC_REQUEST_MAX_DEPTH, .strict_strings = true}, &err) < 0)
		return reply_error(c, "the request (%zu bytes) is not a topfetch.service.Request: %s", len,
				   err.message);
	m = topfetch__service__request__unpack(NULL, len, data);
	if (!m)
		return reply_error(c,
				   "the request (%zu bytes) is not a topfetch.service.Request: it passed the schema "
				   "check but protobuf-c refused it (or the service is out of memory)",
				   len);
	c->r.build = s->build;
	if (m->request_case == TOPFETCH__SERVICE__REQUEST__REQUEST__NOT_SET) {
		reply_error(c, "empty or unknown request: it sets none of build_started (1), action_executed (2), "
			       "target_completed (3), build_finished (4), status (5); see "
			       "proto/topfetch_service.proto");
		goto out;
	}
	if (m->request_case != TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_STARTED &&
	    m->request_case != TOPFETCH__SERVICE__REQUEST__REQUEST_STATUS && s->state == B_NONE) {
		reply_error(c, "%s: no build is open; send BuildStarted first",
			    m->request_case == TOPFETCH__SERVICE__REQUEST__REQUEST_ACTION_EXECUTED    ? "action_executed"
			    : m->request_case == TOPFETCH__SERVICE__REQUEST__REQUEST_TARGET_COMPLETED ? "target_completed"
												       : "build_finished");
		goto out;
	}
	if (s->session_error && m->request_case != TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_STARTED &&
	    m->request_case != TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_FINISHED) {
		reply_error(c, "build %llu cannot go on: %s; send BuildFinished to end it",
			    (unsigned long long)s->build, s->session_error);
		goto out;
	}
	switch (m->request_case) {
	case TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_STARTED:
		handle_build_started(s, m->build_started, c);
		break;
	case TOPFETCH__SERVICE__REQUEST__REQUEST_ACTION_EXECUTED:
		handle_action_executed(s, m->action_executed, c);
		break;
	case TOPFETCH__SERVICE__REQUEST__REQUEST_TARGET_COMPLETED:
		handle_target_completed(s, m->target_completed, c);
		break;
	case TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_FINISHED:
		s->state = B_FINISHING;
		s->finish_exit_code = m->build_finished->exit_code;
		r = 1;
		break;
	case TOPFETCH__SERVICE__REQUEST__REQUEST_STATUS:
	default:
		break;
	}
out:
	topfetch__service__request__free_unpacked(m, NULL);
	return r;
}

/* ---- the loop ------------------------------------------------------------------------ */

static void dispatch(svc_service *s)
{
	tf_error err = { 0 };

	if (!s->session)
		return;
	if (tf_session_dispatch(s->session, 0, &err) < 0 && !s->session_error)
		s->session_error = strdup(err.message[0] ? err.message : "the session failed");
}

int svc_step(svc_service *s, int timeout_ms, tf_error *err)
{
	struct pollfd fds[2];
	nfds_t n = 0;
	int r;

	if (s->state == B_FINISHING && finish_ready(s))
		return finish_build(s, s->finish_exit_code, false, true, err);
	if (s->state != B_FINISHING) {
		fds[n].fd = s->rep_fd;
		fds[n].events = POLLIN;
		n++;
	}
	if (s->session) {
		fds[n].fd = tf_session_fd(s->session);
		fds[n].events = POLLIN;
		n++;
	}
	r = poll(fds, n, timeout_ms);
	if (r < 0)
		return errno == EINTR ? -EINTR : tf__errf(err, -errno, "poll: %s", strerror(errno));
	dispatch(s);
	for (int i = 0; i < SVC_REQUESTS_PER_ROUND && s->state != B_FINISHING; i++) {
		void *buf = NULL;
		int len = nn_recv(s->rep, &buf, NN_MSG, NN_DONTWAIT);
		reply_ctx c;
		int e;

		if (len < 0) {
			e = nn_errno();
			if (e == EAGAIN || e == EINTR)
				break;
			return tf__errf(err, nn_code(e), "%s: cannot receive: %s", s->listen, nn_strerror(e));
		}
		reply_init(&c);
		r = handle(s, buf, (size_t)len, &c);
		nn_freemsg(buf);
		if (r == 0) {
			attach_lost(s, &c, false);
			r = send_reply(s, &c, err);
		}
		reply_fini(&c);
		if (r < 0)
			return r;
		dispatch(s);
	}
	if (s->state == B_FINISHING && finish_ready(s))
		return finish_build(s, s->finish_exit_code, false, true, err);
	return 0;
}

int svc_stop(svc_service *s)
{
	tf_error err = { 0 };

	if (s->state == B_NONE)
		return 0;
	/* As for a BuildFinished request: BuildFinished after every target. */
	while (!finish_ready(s)) {
		if (tf_session_dispatch(s->session, 100, &err) < 0) {
			if (!s->session_error)
				s->session_error = strdup(err.message[0] ? err.message : "the session failed");
			break;
		}
	}
	if (s->state == B_FINISHING)
		finish_build(s, s->finish_exit_code, false, true, &err);
	else
		finish_build(s, 8, true, false, &err);
	return 1;
}

bool svc_build_open(const svc_service *s)
{
	return s->state != B_NONE;
}

/* ---- setup ------------------------------------------------------------------------------ */

static int bind_socket(int *sock, int protocol, const char *url, const char *what, tf_error *err)
{
	int e;

	*sock = nn_socket(AF_SP, protocol);
	if (*sock < 0) {
		e = nn_errno();
		return tf__errf(err, nn_code(e), "%s %s: cannot create a nanomsg socket: %s", what, url, nn_strerror(e));
	}
	if (!strncmp(url, "tcp://[", 7)) {
		int v4only = 0;
		nn_setsockopt(*sock, NN_SOL_SOCKET, NN_IPV4ONLY, &v4only, sizeof(v4only));
	}
	return 0;
}

static int do_bind(int sock, const char *url, const char *what, tf_error *err)
{
	int e;

	if (nn_bind(sock, url) < 0) {
		e = nn_errno();
		return tf__errf(err, nn_code(e), "%s %s: cannot bind: %s%s", what, url, nn_strerror(e),
				e == EADDRINUSE ? " (is another topfetch serve running there?)" : "");
	}
	return 0;
}

svc_service *svc_new(const svc_options *o, tf_error *err)
{
	svc_service *s = calloc(1, sizeof(*s));
	size_t fdsz = sizeof(int);
	int maxsize, timeout = SVC_REPLY_TIMEOUT_MS;

	if (!s) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	s->rep = s->pub = -1;
	s->o = *o;
	s->max_request = o->max_request_size ? o->max_request_size : SVC_DEFAULT_MAX_REQUEST;
	if (s->max_request > INT32_MAX / 2)
		s->max_request = INT32_MAX / 2;
	if (!o->session.output_dir) {
		tf__errf(err, -EINVAL, "no output directory given (--output_dir)");
		goto fail;
	}
	if (!o->session.remote.remote_cache) {
		tf__errf(err, -EINVAL, "no cache given (--remote_cache)");
		goto fail;
	}
	if (svc_check_url(o->listen, "--listen", o->allow_non_loopback, true, err) < 0 ||
	    (o->build_event_publish &&
	     svc_check_url(o->build_event_publish, "--build_event_publish", o->allow_non_loopback, false, err) < 0))
		goto fail;
	s->listen = strdup(o->listen);
	s->publish = o->build_event_publish ? strdup(o->build_event_publish) : NULL;
	if (!s->listen || (o->build_event_publish && !s->publish)) {
		tf__errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if (bind_socket(&s->rep, NN_REP, s->listen, "--listen", err) < 0)
		goto fail;
	/* Up to twice the cap is received and answered with an error; past
	 * that nanomsg drops the sender's connection without buffering it. */
	maxsize = (int)(2 * s->max_request);
	if (nn_setsockopt(s->rep, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsize, sizeof(maxsize)) < 0 ||
	    nn_setsockopt(s->rep, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof(timeout)) < 0 ||
	    nn_getsockopt(s->rep, NN_SOL_SOCKET, NN_RCVFD, &s->rep_fd, &fdsz) < 0) {
		int e = nn_errno();
		tf__errf(err, nn_code(e), "--listen %s: cannot set up the socket: %s", s->listen, nn_strerror(e));
		goto fail;
	}
	if (do_bind(s->rep, s->listen, "--listen", err) < 0)
		goto fail;
	if (s->publish) {
		int sndbuf = 1 << 20;
		if (bind_socket(&s->pub, NN_PUB, s->publish, "--build_event_publish", err) < 0)
			goto fail;
		nn_setsockopt(s->pub, NN_SOL_SOCKET, NN_SNDBUF, &sndbuf, sizeof(sndbuf));
		if (do_bind(s->pub, s->publish, "--build_event_publish", err) < 0)
			goto fail;
	}
	return s;
fail:
	svc_free(s);
	return NULL;
}

void svc_free(svc_service *s)
{
	if (!s)
		return;
	if (s->session)
		drop_build(s);
	if (s->rep >= 0)
		nn_close(s->rep);
	if (s->pub >= 0) {
		/* nanomsg 1.x has no NN_LINGER: give its I/O thread a moment to
		 * hand the last events (last_message among them) to the kernel. */
		nanosleep(&(struct timespec){ .tv_nsec = SVC_PUB_CLOSE_GRACE_MS * 1000000L }, NULL);
		nn_close(s->pub);
	}
	free(s->listen);
	free(s->publish);
	free(s);
}
