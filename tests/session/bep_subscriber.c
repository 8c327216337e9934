/* A BEP consumer on the PUB socket that trusts TargetComplete: for every
 * TargetComplete it receives, it expands the target's output groups through
 * the NamedSetOfFiles received before it, and checks that each output file
 * exists under OUTPUT_DIR with the SHA-256 and length the named set carries.
 * Exits 0 after last_message if every check passed, 1 at the first failure.
 * Prints "subscribed" once it asked to connect, and "connected" once the
 * connection to the publisher is up (nanomsg connects in the background, and
 * a PUB socket drops what it publishes before that): start publishing after
 * "connected".
 *
 *   bep_subscriber URL OUTPUT_DIR TIMEOUT_S [INVOCATION]
 *
 * With INVOCATION (topfetch proxy's socket, where each message is an
 * invocation id, a space and the event): subscribes to that build's messages
 * only, checks each one names it and that its first event is the
 * BuildStarted of that uuid, and prints "target LABEL" for each
 * TargetComplete as it comes. */
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events/events.h"

static int check_file(const char *root, const BuildEventStream__File *f)
{
	char path[8192] = "", hex[65];
	unsigned char buf[65536], md[32];
	unsigned mdlen;
	long long total = 0;
	EVP_MD_CTX *c;
	FILE *fp;
	size_t n;

	if (!f->n_path_prefix)
		return 0; /* source file */
	snprintf(path, sizeof(path), "%s", root);
	for (size_t i = 0; i < f->n_path_prefix; i++) {
		strncat(path, "/", sizeof(path) - strlen(path) - 1);
		strncat(path, f->path_prefix[i], sizeof(path) - strlen(path) - 1);
	}
	strncat(path, "/", sizeof(path) - strlen(path) - 1);
	strncat(path, f->name, sizeof(path) - strlen(path) - 1);
	if (!f->digest || !*f->digest) {
		fprintf(stderr, "subscriber: %s has no digest in its named set\n", path);
		return -1;
	}
	fp = fopen(path, "rb");
	if (!fp) {
		fprintf(stderr, "subscriber: TargetComplete arrived but %s is not there\n", path);
		return -1;
	}
	c = EVP_MD_CTX_new();
	EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		EVP_DigestUpdate(c, buf, n);
		total += (long long)n;
	}
	fclose(fp);
	EVP_DigestFinal_ex(c, md, &mdlen);
	EVP_MD_CTX_free(c);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (strcmp(hex, f->digest) || total != f->length) {
		fprintf(stderr, "subscriber: %s is %lld bytes hashing to %s; the event says %lld bytes, %s\n", path,
			total, hex, (long long)f->length, f->digest);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int sock, timeout_ms, targets = 0, files = 0, events = 0;
	tf_error err = { 0 };
	char topic[256] = "";
	size_t tl;
	ev_sets *sets;

	if (argc != 4 && argc != 5)
		return 2;
	if (argc == 5)
		snprintf(topic, sizeof(topic), "%s ", argv[4]);
	tl = strlen(topic);
	timeout_ms = atoi(argv[3]) * 1000;
	sock = nn_socket(AF_SP, NN_SUB);
	if (sock < 0 || nn_setsockopt(sock, NN_SUB, NN_SUB_SUBSCRIBE, topic, tl) < 0 ||
	    nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout_ms, sizeof(timeout_ms)) < 0 ||
	    nn_connect(sock, argv[1]) < 0) {
		fprintf(stderr, "subscriber: %s\n", nn_strerror(nn_errno()));
		return 2;
	}
	sets = ev_sets_new(NULL, &err);
	printf("subscribed\n");
	fflush(stdout);
	/* A connection counts once nanomsg's handshake with the peer is done. */
	for (int waited_ms = 0; nn_get_statistic(sock, NN_STAT_CURRENT_CONNECTIONS) < 1; waited_ms += 5) {
		if (waited_ms >= timeout_ms) {
			fprintf(stderr, "subscriber: not connected to %s within %d s\n", argv[1], timeout_ms / 1000);
			return 1;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 5000000L }, NULL);
	}
	printf("connected\n");
	fflush(stdout);
	for (;;) {
		void *msg = NULL;
		int n = nn_recv(sock, &msg, NN_MSG, 0);
		ev_event *ev;
		bool last;

		if (n < 0) {
			fprintf(stderr, "subscriber: no event for %d s (%s)\n", timeout_ms / 1000, nn_strerror(nn_errno()));
			return 1;
		}
		if ((size_t)n < tl || memcmp(msg, topic, tl)) {
			fprintf(stderr, "subscriber: a message not of invocation %s came\n", argv[4]);
			return 1;
		}
		if (ev_event_decode((char *)msg + tl, (size_t)n - tl, 0, "pub", 0, 0, &ev, &err) < 0) {
			fprintf(stderr, "subscriber: %s\n", err.message);
			return 1;
		}
		nn_freemsg(msg);
		last = ev->msg->last_message;
		if (tl && !events++ &&
		    (ev->msg->payload_case != BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_STARTED ||
		     strcmp(ev->msg->started->uuid, argv[4]))) {
			fprintf(stderr, "subscriber: the first event of invocation %s is not its BuildStarted\n", argv[4]);
			return 1;
		}
		if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_NAMED_SET_OF_FILES) {
			if (ev_sets_add(sets, ev, &err) < 0) {
				fprintf(stderr, "subscriber: %s\n", err.message);
				return 1;
			}
		} else if (ev->msg->payload_case == BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_COMPLETED &&
			   ev->msg->completed->success) {
			const BuildEventStream__File *f;
			if (ev_sets_expand_target(sets, ev, NULL, &err) < 0) {
				fprintf(stderr, "subscriber: a TargetComplete came before its named sets: %s\n",
					err.message);
				return 1;
			}
			while ((f = ev_sets_expand_next(sets))) {
				if (check_file(argv[2], f) < 0)
					return 1;
				files += f->n_path_prefix ? 1 : 0;
			}
			targets++;
			if (tl && ev->msg->id->id_case == BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_TARGET_COMPLETED)
				printf("target %s\n", ev->msg->id->target_completed->label);
			fflush(stdout);
		}
		ev_event_unref(ev);
		if (last)
			break;
	}
	printf("subscriber: %d targets, %d files verified at TargetComplete\n", targets, files);
	ev_sets_free(sets);
	nn_close(sock);
	return 0;
}
