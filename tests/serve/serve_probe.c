/* Sends one request to `topfetch serve` and prints the reply, for the tests:
 * well-formed requests sent out of order, and bytes no client should send.
 *
 *   serve_probe URL start [MODE [REGEX]]  BuildStarted
 *   serve_probe URL action KEY FILE       ActionExecuted with FILE's bytes as the ActionResult
 *   serve_probe URL target LABEL PATH     TargetCompleted, one file, no hash
 *   serve_probe URL finish [CODE]         BuildFinished
 *   serve_probe URL status                Status
 *   serve_probe URL empty                 a zero-byte message
 *   serve_probe URL unknown               a Request that sets only an unknown field (99)
 *   serve_probe URL garbage               bytes that are not a protobuf message
 *   serve_probe URL wiretype              Request.target_completed.label sent as a varint
 *   serve_probe URL nul                   a label with a NUL byte in it
 *   serve_probe URL utf8                  a label that is not UTF-8
 *   serve_probe URL oversized N           N bytes (a BuildStarted with a long regex)
 *
 * Prints "ok build=N" or "error: MESSAGE", then "lost: PATH action=KEY" per
 * lost output and "stats: ..." when the reply has them. Exit 0 when a reply
 * came, 1 when none did (within $TF_PROBE_TIMEOUT_MS, default 60000), 2 for
 * a bad command line. */
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topfetch_service.pb-c.h"

static unsigned char *pack(const Topfetch__Service__Request *r, size_t *len)
{
	unsigned char *b;
	*len = topfetch__service__request__get_packed_size(r);
	b = malloc(*len ? *len : 1);
	if (b)
		topfetch__service__request__pack(r, b);
	return b;
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;
	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
	    !(b = malloc((size_t)n + 1)) || fread(b, 1, (size_t)n, f) != (size_t)n) {
		if (f)
			fclose(f);
		return NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

int main(int argc, char **argv)
{
	Topfetch__Service__Request req = TOPFETCH__SERVICE__REQUEST__INIT;
	Topfetch__Service__BuildStarted bs = TOPFETCH__SERVICE__BUILD_STARTED__INIT;
	Topfetch__Service__ActionExecuted ae = TOPFETCH__SERVICE__ACTION_EXECUTED__INIT;
	Topfetch__Service__TargetCompleted tc = TOPFETCH__SERVICE__TARGET_COMPLETED__INIT;
	Topfetch__Service__OutputGroup og = TOPFETCH__SERVICE__OUTPUT_GROUP__INIT;
	Topfetch__Service__OutputFile of = TOPFETCH__SERVICE__OUTPUT_FILE__INIT;
	Topfetch__Service__OutputGroup *ogs[1] = { &og };
	Topfetch__Service__OutputFile *ofs[1] = { &of };
	Topfetch__Service__BuildFinished bf = TOPFETCH__SERVICE__BUILD_FINISHED__INIT;
	Topfetch__Service__Status st = TOPFETCH__SERVICE__STATUS__INIT;
	unsigned char *msg = NULL, *ar = NULL;
	char *regex = NULL, *regexes[1];
	size_t len = 0;
	void *answer = NULL;
	int sock, n, timeout = 60000, rc = 0;
	const char *cmd;

	if (argc < 3)
		return 2;
	if (getenv("TF_PROBE_TIMEOUT_MS"))
		timeout = atoi(getenv("TF_PROBE_TIMEOUT_MS"));
	cmd = argv[2];
	if (!strcmp(cmd, "start")) {
		bs.download_mode = argc > 3 ? argv[3] : (char *)"toplevel";
		if (argc > 4) {
			regexes[0] = argv[4];
			bs.regexes = regexes;
			bs.n_regexes = 1;
		}
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_STARTED;
		req.build_started = &bs;
		msg = pack(&req, &len);
	} else if (!strcmp(cmd, "action") && argc == 5) {
		ar = read_file(argv[4], &len);
		if (!ar)
			return 2;
		ae.action_key = argv[3];
		ae.action_result.data = ar;
		ae.action_result.len = len;
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_ACTION_EXECUTED;
		req.action_executed = &ae;
		msg = pack(&req, &len);
	} else if (!strcmp(cmd, "target") && argc == 5) {
		of.path = argv[4];
		og.name = "default";
		og.files = ofs;
		og.n_files = 1;
		tc.label = argv[3];
		tc.output_groups = ogs;
		tc.n_output_groups = 1;
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_TARGET_COMPLETED;
		req.target_completed = &tc;
		msg = pack(&req, &len);
	} else if (!strcmp(cmd, "finish")) {
		bf.exit_code = argc > 3 ? atoi(argv[3]) : 0;
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_FINISHED;
		req.build_finished = &bf;
		msg = pack(&req, &len);
	} else if (!strcmp(cmd, "status")) {
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_STATUS;
		req.status = &st;
		msg = pack(&req, &len);
	} else if (!strcmp(cmd, "empty")) {
		msg = malloc(1);
		len = 0;
	} else if (!strcmp(cmd, "unknown")) {
		static const unsigned char u[] = { 0x98, 0x06, 0x01 }; /* field 99, varint 1 */
		msg = malloc(sizeof(u));
		if (msg)
			memcpy(msg, u, sizeof(u));
		len = sizeof(u);
	} else if (!strcmp(cmd, "garbage")) {
		static const char g[] = "\xff\xff\xff\xff this is not a request";
		msg = malloc(sizeof(g));
		if (msg)
			memcpy(msg, g, sizeof(g));
		len = sizeof(g) - 1;
	} else if (!strcmp(cmd, "wiretype")) {
		/* target_completed (3, length 2) { label (1) as varint 7 } */
		static const unsigned char w[] = { 0x1a, 0x02, 0x08, 0x07 };
		msg = malloc(sizeof(w));
		if (msg)
			memcpy(msg, w, sizeof(w));
		len = sizeof(w);
	} else if (!strcmp(cmd, "nul")) {
		/* target_completed (3) { label (1) "a\0b" } */
		static const unsigned char z[] = { 0x1a, 0x05, 0x0a, 0x03, 'a', 0, 'b' };
		msg = malloc(sizeof(z));
		if (msg)
			memcpy(msg, z, sizeof(z));
		len = sizeof(z);
	} else if (!strcmp(cmd, "utf8")) {
		/* target_completed (3) { label (1) "a\xffb" } */
		static const unsigned char z[] = { 0x1a, 0x05, 0x0a, 0x03, 'a', 0xff, 'b' };
		msg = malloc(sizeof(z));
		if (msg)
			memcpy(msg, z, sizeof(z));
		len = sizeof(z);
	} else if (!strcmp(cmd, "oversized") && argc == 4) {
		size_t want = strtoul(argv[3], NULL, 10);
		regex = malloc(want + 1);
		if (!regex)
			return 2;
		memset(regex, 'a', want);
		regex[want] = '\0';
		regexes[0] = regex;
		bs.regexes = regexes;
		bs.n_regexes = 1;
		req.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_STARTED;
		req.build_started = &bs;
		msg = pack(&req, &len);
	} else {
		fprintf(stderr, "serve_probe: unknown command\n");
		return 2;
	}
	if (!msg)
		return 2;
	sock = nn_socket(AF_SP, NN_REQ);
	if (sock < 0 || nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout, sizeof(timeout)) < 0 ||
	    nn_connect(sock, argv[1]) < 0 || nn_send(sock, msg, len, 0) < 0) {
		fprintf(stderr, "serve_probe: %s\n", nn_strerror(nn_errno()));
		return 1;
	}
	n = nn_recv(sock, &answer, NN_MSG, 0);
	if (n < 0) {
		printf("no reply: %s\n", nn_strerror(nn_errno()));
		rc = 1;
	} else {
		Topfetch__Service__Reply *r = topfetch__service__reply__unpack(NULL, (size_t)n, answer);
		if (!r) {
			printf("reply does not decode\n");
			rc = 1;
		} else {
			if (r->ok)
				printf("ok build=%llu\n", (unsigned long long)r->build);
			else
				printf("error: %s\n", r->error);
			for (size_t i = 0; i < r->n_lost; i++)
				printf("lost: %s action=%s result=%s\n", r->lost[i]->path, r->lost[i]->action_key,
				       r->lost[i]->result);
			if (r->stats)
				printf("stats: targets=%llu targets_failed=%llu fetched=%llu lost=%llu\n",
				       (unsigned long long)r->stats->targets_completed,
				       (unsigned long long)r->stats->targets_failed,
				       (unsigned long long)r->stats->files_fetched, (unsigned long long)r->stats->lost);
			topfetch__service__reply__free_unpacked(r, NULL);
		}
		nn_freemsg(answer);
	}
	nn_close(sock);
	free(msg);
	free(ar);
	free(regex);
	return rc;
}
