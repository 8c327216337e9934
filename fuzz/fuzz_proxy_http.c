/* libFuzzer harness: the proxy's request line and headers as anybody on its
 * port sends them. Each input is written as raw bytes to the real HTTP front
 * end (proxy/http.c over libmicrohttpd, listening on a loopback port, with a
 * --disk_cache folder holding one blob as its upstream); the write side is
 * then shut and the answer read to its end, so every input starts from a
 * fresh connection. The same bytes, split at NUL bytes into method, path,
 * Content-Length and Transfer-Encoding, go through px_http_read_head (what
 * the front end decides from a request's head), which must never accept
 * something that is not a GET, HEAD or PUT of a key, a PUT without a sane
 * length, or a GET or HEAD with a body. */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HELLO_SHA256 "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

static px_proxy *px;
static px_http *http;
static unsigned port;
static char dir[] = "/tmp/topfetch-fuzz-proxy-http.XXXXXX";

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* libFuzzer ends with exit(): stop the front end and remove the folder. */
static void teardown(void)
{
	px_http_quiesce(http);
	px_close(px);
	px_http_stop(http);
	px_free(px);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	static char cache[96];
	char path[256];
	tf_remote_options ro;
	px_options po = { 0 };
	struct sockaddr_storage ss;
	char why[256];
	tf_error err = { 0 };
	FILE *f;

	if (!mkdtemp(dir))
		abort();
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(path, sizeof(path), "%s/cas", cache);
	if (mkdir(cache, 0700) || mkdir(path, 0700))
		abort();
	snprintf(path, sizeof(path), "%s/cas/%.2s", cache, HELLO_SHA256);
	if (mkdir(path, 0700))
		abort();
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s", cache, HELLO_SHA256, HELLO_SHA256);
	if (!(f = fopen(path, "w")) || fputs("hello\n", f) < 0 || fclose(f))
		abort();
	tf_remote_options_init(&ro);
	ro.remote_cache = cache;
	po.remote = &ro;
	po.validate = true;
	px = px_new(&po, &err);
	if (!px) {
		fprintf(stderr, "fuzz_proxy_http: %s\n", err.message);
		abort();
	}
	if (px_http_parse_listen("127.0.0.1:0", false, &ss, why, sizeof(why)) < 0 ||
	    !(http = px_http_start(px, &ss, 2))) {
		fprintf(stderr, "fuzz_proxy_http: cannot listen on 127.0.0.1: %s\n", why);
		abort();
	}
	port = px_http_port(http);
	atexit(teardown);
}

/* The head, as the front end reads it: method NUL path NUL Content-Length
 * NUL Transfer-Encoding (a missing part: no such header). */
static void check_head(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 4), *part[4];
	px_http_head hd;

	if (!s)
		abort();
	memcpy(s, data, size);
	memset(s + size, 0, 4);
	part[0] = s;
	for (int i = 1; i < 4; i++)
		part[i] = part[i - 1] + strlen(part[i - 1]) + 1;
	px_http_read_head(part[0], part[1], part[2] < s + size ? part[2] : NULL, part[3] < s + size ? part[3] : NULL,
			  &hd);
	if (!hd.status) {
		if (!hd.method || strlen(hd.key) != TF_HASH_HEX_LEN || !tf__is_sha256_hex(hd.key, TF_HASH_HEX_LEN))
			abort(); /* served something that is not a GET, HEAD or PUT of a key */
		if (hd.method == 'P' && (hd.length < 0 || (uint64_t)hd.length > TF__MAX_BLOB_SIZE))
			abort(); /* a PUT without a sane length */
		if (hd.method != 'P' && hd.now)
			abort(); /* a GET or HEAD with a body */
	} else if (hd.status < 400 || hd.status > 499 || !hd.message[0]) {
		abort(); /* a refusal is the client's error and says why */
	}
	free(s);
}

/* The same bytes on the wire: written, the write side shut, the answer read
 * (which must be an HTTP answer, or nothing) until the proxy closes, or
 * stays silent for 100 ms once it answered or 500 ms before (libmicrohttpd
 * does not always answer or close a half-closed connection). Then the
 * client closes, and every request must end within 7 s: none is left
 * suspended, none waits for a body from a client that is gone (the front
 * end's sweeper closes those within a second). */
static void on_wire(const uint8_t *data, size_t size)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	char buf[4096], first[16] = "";
	size_t sent = 0, got = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		abort();
	while (sent < size) {
		n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
		if (n <= 0)
			break; /* the proxy answered and closed early: allowed */
		sent += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		if (poll(&p, 1, got ? 100 : 500) != 1)
			break;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		if (got < sizeof(first) - 1) {
			size_t k = sizeof(first) - 1 - got < (size_t)n ? sizeof(first) - 1 - got : (size_t)n;
			memcpy(first + got, buf, k);
		}
		got += (size_t)n;
	}
	close(fd);
	if (got && strncmp(first, "HTTP/1.", 7) != 0) {
		fprintf(stderr, "fuzz_proxy_http: an answer that is not HTTP: '%s'\n", first);
		abort();
	}
	for (int i = 0; px_http_active(http) > 0; i++) {
		if (i == 7000) {
			fprintf(stderr, "fuzz_proxy_http: a request did not end within 7 s of its client's close\n");
			abort();
		}
		usleep(1000);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!px)
		setup();
	check_head(data, size);
	on_wire(data, size);
	return 0;
}
