/* libFuzzer harness: requests to `topfetch serve` (topfetch.service.Request,
 * proto/topfetch_service.proto) sent over a real REQ socket (inproc) to the
 * real service, whose builds fetch from an empty disk cache into a private
 * folder. The input is a sequence of requests, each a 2-byte big-endian
 * length and that many bytes; an open build is finished at the end, so every
 * input starts from a service without a build. */
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "service/service.h"
#include "topfetch_service.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static svc_service *svc;
static int sock = -1;
static char dir[] = "/tmp/topfetch-fuzz-service.XXXXXX";

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* libFuzzer ends with exit(): close the service and remove its folder. */
static void teardown(void)
{
	nn_close(sock);
	svc_free(svc);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	static char cache[64], ac[80], cas[80], out[64];
	svc_options o = { 0 };
	tf_error err = { 0 };

	if (!mkdtemp(dir))
		abort();
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(ac, sizeof(ac), "%s/ac", cache);
	snprintf(cas, sizeof(cas), "%s/cas", cache);
	snprintf(out, sizeof(out), "%s/out", dir);
	if (mkdir(cache, 0700) || mkdir(ac, 0700) || mkdir(cas, 0700))
		abort();
	o.listen = "inproc://topfetch-fuzz";
	tf_remote_options_init(&o.session.remote);
	o.session.remote.remote_cache = cache;
	o.session.output_dir = out;
	o.max_request_size = 1u << 16;
	svc = svc_new(&o, &err);
	if (!svc) {
		fprintf(stderr, "fuzz_service: %s\n", err.message);
		abort();
	}
	sock = nn_socket(AF_SP, NN_REQ);
	if (sock < 0 || nn_connect(sock, "inproc://topfetch-fuzz") < 0)
		abort();
	atexit(teardown);
}

/* Sends one request and runs the service until its reply arrives. */
static void roundtrip(const void *req, size_t len)
{
	tf_error err = { 0 };
	void *reply = NULL;

	if (nn_send(sock, req, len, 0) != (int)len)
		abort();
	for (int i = 0; i < 100000; i++) {
		int n, r = svc_step(svc, 10, &err);
		if (r < 0 && r != -EINTR) { /* (libFuzzer's -timeout alarm interrupts waits) */
			fprintf(stderr, "fuzz_service: the service failed: %s\n", err.message);
			abort();
		}
		n = nn_recv(sock, &reply, NN_MSG, NN_DONTWAIT);
		if (n >= 0) {
			nn_freemsg(reply);
			return;
		}
	}
	fprintf(stderr, "fuzz_service: no reply to a %zu-byte request\n", len);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	if (!svc)
		setup();
	for (int i = 0; i < 16 && size - off >= 2; i++) {
		size_t n = (size_t)data[off] << 8 | data[off + 1];
		off += 2;
		if (n > size - off)
			n = size - off;
		roundtrip(data + off, n);
		off += n;
	}
	if (svc_build_open(svc)) {
		Topfetch__Service__Request r = TOPFETCH__SERVICE__REQUEST__INIT;
		Topfetch__Service__BuildFinished f = TOPFETCH__SERVICE__BUILD_FINISHED__INIT;
		uint8_t buf[64];
		r.request_case = TOPFETCH__SERVICE__REQUEST__REQUEST_BUILD_FINISHED;
		r.build_finished = &f;
		roundtrip(buf, topfetch__service__request__pack(&r, buf));
		if (svc_build_open(svc))
			abort();
	}
	return 0;
}
