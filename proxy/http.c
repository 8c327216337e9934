/* The HTTP front end: Bazel's HTTP cache protocol (GET/HEAD/PUT on
 * [/prefix]/{ac,cas}/<sha256>, as bazel-remote) over libmicrohttpd, one
 * thread per connection, adapted to the wire-neutral core. An answer decided
 * before a request body was read is given only once it is read (an answer
 * queued earlier makes libmicrohttpd close the connection). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "proxy/proxy.h"

#define MHD_BLOCK_BYTES ((size_t)128 << 10)  /* libmicrohttpd's send block */
#define MHD_MEMORY_BYTES ((size_t)128 << 10) /* per connection: headers and upload chunks */
#define MHD_STACK_BYTES ((size_t)1 << 20)
/* Client connections, one thread each (mostly idle: a thread's stack is
 * only touched as far as it is used). High, so that idle or dripping
 * connections cannot lock new clients out. */
#define MAX_CONNECTIONS 8192u
#define IDLE_TIMEOUT_S 300u                  /* an idle client connection is closed */

struct px_http {
	px_proxy *p;
	struct MHD_Daemon *mhd;
	MHD_socket lfd;
	unsigned port;
	atomic_int active;
	atomic_bool draining;
};

typedef struct req {
	px_http *h;
	char method; /* 'G', 'H', 'P' */
	tf_area area;
	char key[TF_HASH_HEX_LEN + 1];
	bool responded;
	px_put *put;
	/* An answer decided before the request was read to its end. */
	unsigned fail;   /* HTTP status; 0: none */
	bool fail_allow; /* 405: add Allow */
	char fail_msg[PX_MESSAGE_MAX];
	px_page page; /* GET /status or /metrics (status.c) */
} req;

/* bazel-remote's rule: ^/?(.*\/)?(ac/|cas/)([a-f0-9]{64})$ */
int px_http_parse_path(const char *url, tf_area *area, char key[TF_HASH_HEX_LEN + 1])
{
	size_t n = strlen(url);
	const char *h, *a;

	if (n < TF_HASH_HEX_LEN + 3)
		return -EINVAL;
	h = url + n - TF_HASH_HEX_LEN;
	if (!tf__is_sha256_hex(h, TF_HASH_HEX_LEN))
		return -EINVAL;
	if (h - url >= 4 && !memcmp(h - 4, "cas/", 4)) {
		*area = TF_AREA_CAS;
		a = h - 4;
	} else if (!memcmp(h - 3, "ac/", 3)) {
		*area = TF_AREA_AC;
		a = h - 3;
	} else {
		return -EINVAL;
	}
	/* What comes before must be empty, "/" or end with "/". */
	if (a != url && a[-1] != '/')
		return -EINVAL;
	memcpy(key, h, TF_HASH_HEX_LEN + 1);
	return 0;
}

static unsigned http_status(const px_result *r)
{
	switch (r->status) {
	case PX_OK: return r->upstream_code >= 200 && r->upstream_code < 300 ? (unsigned)r->upstream_code : 200;
	case PX_NOT_FOUND: return 404;
	case PX_BAD_REQUEST: return 400;
	case PX_TOO_LARGE: return 413;
	case PX_UPSTREAM: return 502;
	case PX_TIMEOUT: return 504;
	case PX_UNAVAILABLE: return 503;
	case PX_INTERNAL: return 500;
	}
	return 500;
}

static enum MHD_Result respond(req *r, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	if (atomic_load(&r->h->draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	r->responded = true;
	rc = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result respond_text(req *r, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
	TF__PRINTF(4, 5);

static enum MHD_Result respond_text(req *r, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
	char buf[PX_MESSAGE_MAX + 64];
	struct MHD_Response *resp;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	buf[n] = '\0';
	resp = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	return respond(r, c, status, resp);
}

static enum MHD_Result respond_empty(req *r, struct MHD_Connection *c, unsigned status)
{
	return respond(r, c, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

/* Anything but a success: its status and a text body saying why. */
static enum MHD_Result respond_result(req *r, struct MHD_Connection *c, const px_result *res)
{
	if (res->status == PX_OK)
		return respond_empty(r, c, http_status(res));
	return respond_text(r, c, http_status(res), "%s", res->message);
}

static void req_fail(req *r, unsigned status, const char *fmt, ...) TF__PRINTF(3, 4);

static void req_fail(req *r, unsigned status, const char *fmt, ...)
{
	va_list ap;

	if (r->fail)
		return;
	r->fail = status;
	va_start(ap, fmt);
	vsnprintf(r->fail_msg, sizeof(r->fail_msg), fmt, ap);
	va_end(ap);
}

static enum MHD_Result respond_fail(req *r, struct MHD_Connection *c)
{
	struct MHD_Response *resp;

	if (!r->fail_allow)
		return respond_text(r, c, r->fail, "%s", r->fail_msg);
	resp = MHD_create_response_from_buffer(strlen(r->fail_msg), r->fail_msg, MHD_RESPMEM_MUST_COPY);
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, PUT");
	return respond(r, c, r->fail, resp);
}

/* ---- GET and HEAD ------------------------------------------------------------------------ */

static ssize_t read_nothing(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	ssize_t n = px_get_read(cls, buf, max);
	(void)pos;
	if (n > 0)
		return n;
	return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void free_body(void *cls)
{
	px_get_free(cls); /* a client that left early stops the upstream transfer */
}

static enum MHD_Result do_get(req *r, struct MHD_Connection *c)
{
	struct MHD_Response *resp;
	px_result res;
	int64_t length = -1;

	if (r->method == 'H') {
		/* libmicrohttpd sends a callback response's size as Content-Length
		 * and, for HEAD, never reads it. */
		px_head(r->h->p, r->area, r->key, &length, &res);
		if (res.status != PX_OK)
			return respond_result(r, c, &res);
		return respond(r, c, 200,
			       MHD_create_response_from_callback(length >= 0 ? (uint64_t)length : MHD_SIZE_UNKNOWN,
								 1024, read_nothing, NULL, NULL));
	}
	if (r->area == TF_AREA_AC) {
		tf__buf body;
		px_ac_get(r->h->p, r->key, &body, &res);
		if (res.status != PX_OK)
			return respond_result(r, c, &res);
		if (body.len == 0) {
			tf__buf_fini(&body);
			resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		} else {
			resp = MHD_create_response_from_buffer(body.len, body.data, MHD_RESPMEM_MUST_FREE);
			if (!resp)
				tf__buf_fini(&body);
		}
	} else {
		px_get *g = px_cas_get(r->h->p, r->key, &length, &res);
		if (!g)
			return respond_result(r, c, &res);
		resp = MHD_create_response_from_callback(length >= 0 ? (uint64_t)length : MHD_SIZE_UNKNOWN,
							 MHD_BLOCK_BYTES, read_body, g, free_body);
		if (!resp)
			px_get_free(g);
	}
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	return respond(r, c, 200, resp);
}

/* ---- PUT -------------------------------------------------------------------------------- */

static enum MHD_Result put_begin(req *r, struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	unsigned long long n;
	px_result res;
	char *end;

	if (!cl) {
		req_fail(r, 411, "a PUT needs a Content-Length");
		return MHD_YES;
	}
	errno = 0;
	n = strtoull(cl, &end, 10);
	if (errno || end == cl || *end || cl[0] == '-' || n > (unsigned long long)TF__MAX_BLOB_SIZE) {
		req_fail(r, 400, "bad Content-Length '%.40s'", cl);
		return MHD_YES;
	}
	r->put = px_put_begin(r->h->p, r->area, r->key, (int64_t)n, &res);
	if (r->put)
		return MHD_YES;
	if (res.status == PX_TOO_LARGE) /* answered at once (closing the connection): not worth reading */
		return respond_result(r, c, &res);
	req_fail(r, http_status(&res), "%s", res.message);
	return MHD_YES;
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	px_http *h = cls;
	req *r = *con_cls;
	(void)version;

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		r->h = h;
		*con_cls = r;
		atomic_fetch_add(&h->active, 1);
		if (!strcmp(method, MHD_HTTP_METHOD_GET) && px_status_page(h->p, url, &r->page) == 0)
			return MHD_YES; /* not a cache request: not counted */
		px_count_request(h->p);
		if (!strcmp(method, MHD_HTTP_METHOD_GET))
			r->method = 'G';
		else if (!strcmp(method, MHD_HTTP_METHOD_HEAD))
			r->method = 'H';
		else if (!strcmp(method, MHD_HTTP_METHOD_PUT))
			r->method = 'P';
		if (px_http_parse_path(url, &r->area, r->key) < 0) {
			px_count_refused(h->p);
			req_fail(r, 400, "bad path '%.200s': want [/prefix]/ac/<64 lowercase hex> or "
					 "[/prefix]/cas/<64 lowercase hex>", url);
		} else if (!r->method) {
			px_count_refused(h->p);
			req_fail(r, 405, "method %.20s not allowed: GET, HEAD or PUT\n", method);
			r->fail_allow = true;
		} else if (r->method == 'P') {
			return put_begin(r, c);
		}
		return MHD_YES;
	}
	if (r->responded) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (r->put)
			px_put_data(r->put, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->page.body) {
		struct MHD_Response *resp = MHD_create_response_from_buffer(r->page.len, r->page.body, MHD_RESPMEM_MUST_FREE);
		if (resp) {
			r->page.body = NULL; /* MHD frees it */
			MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->page.content_type);
		}
		return respond(r, c, MHD_HTTP_OK, resp);
	}
	if (r->fail)
		return respond_fail(r, c);
	if (r->method == 'P') {
		px_result res;
		px_put_end(r->put, &res);
		return respond_result(r, c, &res);
	}
	return do_get(r, c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	px_http *h = cls;
	req *r = *con_cls;
	(void)c;
	(void)toe;

	if (!r)
		return;
	*con_cls = NULL;
	px_put_free(r->put);
	free(r->page.body);
	free(r);
	atomic_fetch_sub(&h->active, 1);
}

/* ---- the listener ------------------------------------------------------------------------- */

int px_http_parse_listen(const char *spec, bool any, struct sockaddr_storage *ss, char *why, size_t n)
{
	char host[256];
	const char *port;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL;
	char *end;
	long pn;
	bool loopback;
	int e;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host)) {
			snprintf(why, n, "--listen=%s: want HOST:PORT or [IPV6]:PORT", spec);
			return -EINVAL;
		}
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(host)) {
			snprintf(why, n, "--listen=%s: want HOST:PORT, e.g. 127.0.0.1:9090", spec);
			return -EINVAL;
		}
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	errno = 0;
	pn = strtol(port, &end, 10);
	if (errno || end == port || *end || pn < 0 || pn > 65535) {
		snprintf(why, n, "--listen=%s: '%s' is not a port number", spec, port);
		return -EINVAL;
	}
	e = getaddrinfo(host, port, &hints, &res);
	if (e || !res) {
		snprintf(why, n, "--listen=%s: cannot resolve '%s': %s", spec, host, gai_strerror(e));
		if (res)
			freeaddrinfo(res);
		return -EINVAL;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (ss->ss_family == AF_INET) {
		loopback = (ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	} else {
		const struct in6_addr *a = &((struct sockaddr_in6 *)ss)->sin6_addr;
		loopback = IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	if (!loopback && !any) {
		snprintf(why, n,
			 "--listen=%s is not a loopback address: anyone who can reach it could read and write the cache "
			 "with your credentials. Pass --listen_any if that is what you want.",
			 spec);
		return -EPERM;
	}
	return 0;
}

px_http *px_http_start(px_proxy *p, const struct sockaddr_storage *ss)
{
	px_http *h = calloc(1, sizeof(*h));
	const union MHD_DaemonInfo *di;

	if (!h)
		return NULL;
	h->p = p;
	h->lfd = MHD_INVALID_SOCKET;
	{
		/* Room for every connection and its upstream side. */
		struct rlimit rl;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * MAX_CONNECTIONS + 256) {
			rl.rlim_cur = rl.rlim_max < 2 * MAX_CONNECTIONS + 256 ? rl.rlim_max : 2 * MAX_CONNECTIONS + 256;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	h->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
					  MHD_USE_ITC | (ss->ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)ss,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_LIMIT,
				  MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, MHD_MEMORY_BYTES, MHD_OPTION_THREAD_STACK_SIZE,
				  MHD_STACK_BYTES, MHD_OPTION_END);
	if (!h->mhd) {
		free(h);
		return NULL;
	}
	di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
	h->port = di ? (unsigned)di->port : 0u;
	return h;
}

unsigned px_http_port(const px_http *h)
{
	return h->port;
}

int px_http_active(const px_http *h)
{
	return atomic_load(&((px_http *)h)->active);
}

void px_http_quiesce(px_http *h)
{
	atomic_store(&h->draining, true);
	h->lfd = MHD_quiesce_daemon(h->mhd);
	/* New connections are refused at once rather than left in the backlog;
	 * the descriptor itself stays open until libmicrohttpd stopped, as its
	 * documentation asks. */
	if (h->lfd != MHD_INVALID_SOCKET)
		shutdown(h->lfd, SHUT_RDWR);
}

void px_http_stop(px_http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->mhd);
	if (h->lfd != MHD_INVALID_SOCKET)
		close(h->lfd);
	free(h);
}
