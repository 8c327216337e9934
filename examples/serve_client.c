/* A minimal client of `topfetch serve`, to copy into a build tool.
 *
 * A build tool tells the service four things: the build started (with its
 * download policy), an action executed (its key and ActionResult), a target
 * completed (its files), the build finished. The service fetches the
 * top-level files while the build runs and answers each request; the reply
 * to BuildFinished lists every output that could not be fetched, with the
 * action to run again (bypassing the cache). This program does exactly that
 * for a build that already happened:
 *
 *   serve_client --connect=ipc:///run/user/1000/topfetch/serve.sock \
 *     --actions=CACHE/ac \
 *     --target=//pkg:app=bazel-out/k8-fastbuild/bin/pkg/app,bazel-out/k8-fastbuild/bin/pkg/app.runfiles
 *
 *   --connect=URL             the service's --listen address (required)
 *   --mode=toplevel|all|minimal   --remote_download_outputs (default toplevel)
 *   --regex=RE                --remote_download_regex, repeatable
 *   --output_group=NAME       wanted output groups, repeatable (default "default")
 *   --request=LABEL           the requested targets, repeatable (default: all reported)
 *   --actions=DIR             report every file DIR/<action key> as an executed action:
 *                             DIR holds serialized ActionResults named by their action
 *                             key, like the ac/ folder of an HTTP or disk cache
 *   --target=LABEL=PATH[,PATH...]   report LABEL complete with these files (output
 *                             group "default"), repeatable; exec-root-relative paths
 *   --exit_code=N             the build's exit code for BuildFinished (default 0)
 *   --timeout=SECONDS         how long to wait for a reply (default 600: BuildFinished
 *                             waits for the fetches)
 *
 * It prints what the service decided and the lost outputs, and exits 0 when
 * every request was accepted and nothing was lost, 1 otherwise (2 for a bad
 * command line).
 *
 * The messages come from proto/topfetch_service.proto; generate C for it with
 * `protoc-c --c_out=. topfetch_service.proto` (or any protobuf library). */
#include <dirent.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topfetch_service.pb-c.h"

typedef Topfetch__Service__Request Request;
typedef Topfetch__Service__Reply Reply;

static int sock = -1;
static bool failed; /* a request was refused or an output was lost */

/* Sends one request and waits for its reply (NULL when none came). */
static Reply *call(const Request *req)
{
	size_t n = topfetch__service__request__get_packed_size(req);
	unsigned char *buf = malloc(n ? n : 1);
	void *answer = NULL;
	Reply *reply;
	int len;

	if (!buf)
		return NULL;
	topfetch__service__request__pack(req, buf);
	if (nn_send(sock, buf, n, 0) < 0) {
		fprintf(stderr, "serve_client: cannot send: %s\n", nn_strerror(nn_errno()));
		free(buf);
		return NULL;
	}
	free(buf);
	len = nn_recv(sock, &answer, NN_MSG, 0);
	if (len < 0) {
		fprintf(stderr, "serve_client: no reply: %s (is topfetch serve running there?)\n",
			nn_strerror(nn_errno()));
		return NULL;
	}
	reply = topfetch__service__reply__unpack(NULL, (size_t)len, answer);
	nn_freemsg(answer);
	if (!reply)
		fprintf(stderr, "serve_client: the reply does not decode\n");
	return reply;
}

/* Prints what every reply may carry: an error, and outputs lost so far. */
static void show(const char *what, const Reply *r, bool final)
{
	if (!r->ok) {
		printf("%s: refused: %s\n", what, r->error);
		failed = true;
	}
	for (size_t i = 0; i < r->n_lost; i++) {
		const Topfetch__Service__LostOutput *l = r->lost[i];
		printf("%s%s: %s (%s/%lld): run action %s again%s%s: %s\n", final ? "" : "while building: ", l->result,
		       l->path, l->hash, (long long)l->size, *l->action_key ? l->action_key : "(unknown)",
		       *l->target ? " of " : "", l->target, l->message);
		failed = true;
	}
	if (r->lost_not_listed) {
		printf("%s: %llu more lost outputs not listed\n", what, (unsigned long long)r->lost_not_listed);
		failed = true;
	}
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* ActionExecuted for every ActionResult in dir, named by its action key. */
static void report_actions(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d) {
		perror(dir);
		failed = true;
		return;
	}
	while ((e = readdir(d))) {
		Request req = TOPFETCH__SERVICE__REQUEST__INIT;
		Topfetch__Service__ActionExecuted ae = TOPFETCH__SERVICE__ACTION_EXECUTED__INIT;
		char path[4096];
		size_t len = 0;
		unsigned char *bytes;
		Reply *r;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (!(bytes = read_file(path, &len))) {
			perror(path);
			failed = true;
			continue;
		}
		ae.action_key = e->d_name;
		ae.action_result.data = bytes;
		ae.action_result.len = len;
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_ACTION_EXECUTED;
		req.action_executed = &ae;
		r = call(&req);
		free(bytes);
		if (!r) {
			failed = true;
			continue;
		}
		if (r->ok && r->decision_case == TOPFETCH__SERVICE__REPLY__DECISION_ACTION) {
			printf("action %.12s: %u outputs", e->d_name, r->action->outputs);
			for (size_t i = 0; i < r->action->n_fetching; i++)
				printf("%s%s", i ? ", " : "; fetching now: ", r->action->fetching[i]);
			printf("\n");
		}
		show("action_executed", r, false);
		topfetch__service__reply__free_unpacked(r, NULL);
	}
	closedir(d);
}

/* TargetCompleted for "LABEL=PATH,PATH,...". The paths go in without a
 * hash: the service knows each from the ActionExecuted that produced it. A
 * build tool that knows the SHA-256 and size of a file sets hash and size. */
static void report_target(const char *spec)
{
	Request req = TOPFETCH__SERVICE__REQUEST__INIT;
	Topfetch__Service__TargetCompleted tc = TOPFETCH__SERVICE__TARGET_COMPLETED__INIT;
	Topfetch__Service__OutputGroup group = TOPFETCH__SERVICE__OUTPUT_GROUP__INIT;
	Topfetch__Service__OutputGroup *groups[1] = { &group };
	Topfetch__Service__OutputFile *files = NULL, **file_ptrs = NULL;
	char *copy = strdup(spec), *eq = copy ? strchr(copy, '=') : NULL, *save = NULL, *p;
	size_t n = 1;
	Reply *r;

	if (!eq) {
		fprintf(stderr, "serve_client: --target=%s: expected LABEL=PATH[,PATH...]\n", spec);
		failed = true;
		free(copy);
		return;
	}
	*eq = '\0';
	for (p = eq + 1; *p; p++)
		n += *p == ',';
	files = calloc(n, sizeof(*files));
	file_ptrs = calloc(n, sizeof(*file_ptrs));
	n = 0;
	for (p = strtok_r(eq + 1, ",", &save); p && files && file_ptrs; p = strtok_r(NULL, ",", &save)) {
		topfetch__service__output_file__init(&files[n]);
		files[n].path = p;
		file_ptrs[n] = &files[n];
		n++;
	}
	group.name = "default";
	group.files = file_ptrs;
	group.n_files = n;
	tc.label = copy;
	tc.output_groups = groups;
	tc.n_output_groups = 1;
	req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_TARGET_COMPLETED;
	req.target_completed = &tc;
	r = call(&req);
	if (r) {
		if (r->ok && r->decision_case == TOPFETCH__SERVICE__REPLY__DECISION_TARGET)
			printf("target %s: %s, %u files: %u already present, %u being fetched, %u unknown\n", copy,
			       r->target->wanted ? "wanted" : "not wanted", r->target->files, r->target->present,
			       r->target->pending, r->target->unknown);
		show("target_completed", r, false);
		topfetch__service__reply__free_unpacked(r, NULL);
	} else {
		failed = true;
	}
	free(files);
	free(file_ptrs);
	free(copy);
}

#define OPT(name) (!strncmp(argv[i], "--" name "=", strlen(name) + 3) ? argv[i] + strlen(name) + 3 : NULL)

int main(int argc, char **argv)
{
	const char *url = NULL, *actions = NULL, *v;
	char **regexes = calloc((size_t)argc, sizeof(char *)), **groups = calloc((size_t)argc, sizeof(char *));
	char **requested = calloc((size_t)argc, sizeof(char *));
	const char **targets = calloc((size_t)argc, sizeof(char *));
	size_t n_regexes = 0, n_groups = 0, n_requested = 0, n_targets = 0;
	int exit_code = 0, timeout_s = 600, resend_ms = 24 * 3600 * 1000, maxsize = -1;
	Request req = TOPFETCH__SERVICE__REQUEST__INIT;
	Topfetch__Service__BuildStarted bs = TOPFETCH__SERVICE__BUILD_STARTED__INIT;
	Topfetch__Service__BuildFinished bf = TOPFETCH__SERVICE__BUILD_FINISHED__INIT;
	Reply *r;
	int rc = 1;

	if (!regexes || !groups || !requested || !targets) {
		rc = 2;
		goto out;
	}
	bs.download_mode = "toplevel";
	for (int i = 1; i < argc; i++) {
		if ((v = OPT("connect")))
			url = v;
		else if ((v = OPT("mode")))
			bs.download_mode = (char *)v;
		else if ((v = OPT("regex")))
			regexes[n_regexes++] = (char *)v;
		else if ((v = OPT("output_group")))
			groups[n_groups++] = (char *)v;
		else if ((v = OPT("request")))
			requested[n_requested++] = (char *)v;
		else if ((v = OPT("actions")))
			actions = v;
		else if ((v = OPT("target")))
			targets[n_targets++] = v;
		else if ((v = OPT("exit_code")))
			exit_code = atoi(v);
		else if ((v = OPT("timeout")))
			timeout_s = atoi(v);
		else {
			fprintf(stderr, "serve_client: unknown argument %s (see the comment at the top of serve_client.c)\n",
				argv[i]);
			rc = 2;
			goto out;
		}
	}
	if (!url) {
		fprintf(stderr, "serve_client: --connect=URL is required\n");
		rc = 2;
		goto out;
	}

	/* REQ socket. A reply may take long (BuildFinished waits for the
	 * fetches): wait up to --timeout, and do not let nanomsg re-send the
	 * request meanwhile (its default is to re-send after 60 s). */
	sock = nn_socket(AF_SP, NN_REQ);
	timeout_s *= 1000;
	if (sock < 0 || nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout_s, sizeof(timeout_s)) < 0 ||
	    nn_setsockopt(sock, NN_REQ, NN_REQ_RESEND_IVL, &resend_ms, sizeof(resend_ms)) < 0 ||
	    nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsize, sizeof(maxsize)) < 0 ||
	    nn_connect(sock, url) < 0) {
		fprintf(stderr, "serve_client: %s: %s\n", url, nn_strerror(nn_errno()));
		goto out;
	}

	/* 1. The build starts, with its download policy. */
	bs.regexes = regexes;
	bs.n_regexes = n_regexes;
	bs.output_groups = groups;
	bs.n_output_groups = n_groups;
	bs.targets = requested;
	bs.n_targets = n_requested;
	req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_STARTED;
	req.build_started = &bs;
	r = call(&req);
	if (!r)
		goto out;
	show("build_started", r, false);
	if (!r->ok) {
		topfetch__service__reply__free_unpacked(r, NULL);
		goto out;
	}
	printf("build %llu started\n", (unsigned long long)r->build);
	topfetch__service__reply__free_unpacked(r, NULL);

	/* 2. Every executed action, as it executes. */
	if (actions)
		report_actions(actions);

	/* 3. Every top-level target, as it completes. */
	for (size_t i = 0; i < n_targets; i++)
		report_target(targets[i]);

	/* 4. The build finishes: the reply comes once the fetches are done and
	 * lists every output of the build that was lost. */
	bf.exit_code = exit_code;
	req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_FINISHED;
	req.build_finished = &bf;
	r = call(&req);
	if (!r)
		goto out;
	show("build_finished", r, true);
	if (r->stats)
		printf("build %llu finished: %llu targets complete (%llu failed), %llu files fetched, %llu already "
		       "present, %llu bytes; %llu lost, %llu failed\n",
		       (unsigned long long)r->build, (unsigned long long)r->stats->targets_completed,
		       (unsigned long long)r->stats->targets_failed, (unsigned long long)r->stats->files_fetched,
		       (unsigned long long)r->stats->files_present, (unsigned long long)r->stats->bytes_fetched,
		       (unsigned long long)r->stats->lost, (unsigned long long)r->stats->failed);
	if (r->stats && r->stats->targets_failed)
		failed = true;
	topfetch__service__reply__free_unpacked(r, NULL);
	rc = failed ? 1 : 0;
out:
	if (sock >= 0)
		nn_close(sock);
	free(regexes);
	free(groups);
	free(requested);
	free(targets);
	return rc;
}
