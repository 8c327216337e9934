/* The grpc backend: REAPI v2 and ByteStream over libcurl's HTTP/2.
 *
 * A call is an HTTP/2 POST to /PACKAGE.SERVICE/METHOD with content-type
 * application/grpc and te: trailers; its body and the answer's body are
 * length-prefixed messages (1 byte compressed flag, 4 bytes big-endian
 * length, the protobuf bytes). grpc-status and grpc-message come last, as
 * trailers, through the same header callback as the ordinary headers (or
 * among them, in a trailers-only answer). Cleartext grpc:// uses HTTP/2 with
 * prior knowledge, grpcs:// TLS with ALPN h2.
 *
 * Every call carries build.bazel.remote.execution.v2.requestmetadata-bin (a
 * serialized RequestMetadata, base64 on the wire): Bazel's own server refuses
 * calls without it. Every answer is checked with pw_check before protobuf-c
 * unpacks it. */
#include "downloader/downloader.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytestream.pb-c.h"
#include "proto/wire.h"
#include "remote_execution.pb-c.h"

#ifndef TOPFETCH_VERSION
#define TOPFETCH_VERSION "unknown"
#endif

struct dl_grpc {
	char *base;     /* http(s)://host[:port], for libcurl */
	char *display;  /* grpc(s)://host[:port][/instance], for messages */
	char *_Atomic instance; /* "" when none; set once more by dl_grpc_adopt_instance */
	char *first_instance;    /* the one it replaced (calls in flight may still use it) */
	atomic_bool adopted;
	bool tls;
	int64_t max_batch; /* the server's max_batch_total_size_bytes; 0 unknown */
	atomic_bool h2_up; /* cleartext: a call succeeded on a connection that stays open */
	atomic_bool no_batch; /* the server answered BatchReadBlobs with UNIMPLEMENTED */
};

static const char *const code_names[] = {
	"OK",		    "CANCELLED",	  "UNKNOWN",	  "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND",	    "ALREADY_EXISTS",	  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED",	  "OUT_OF_RANGE",  "UNIMPLEMENTED",  "INTERNAL",
	"UNAVAILABLE",	    "DATA_LOSS",	  "UNAUTHENTICATED",
};

const char *dl_grpc_code_name(int code)
{
	return code >= 0 && code <= 16 ? code_names[code] : "unknown status";
}

/* ---- pieces (unit-tested) ---------------------------------------------------------- */

size_t dl_grpc_percent_decode(const char *in, size_t n, char *out, size_t outn)
{
	size_t o = 0;

	if (outn == 0)
		return 0;
	for (size_t i = 0; i < n && o + 1 < outn; i++) {
		if (in[i] == '%' && i + 2 < n && isxdigit((unsigned char)in[i + 1]) &&
		    isxdigit((unsigned char)in[i + 2])) {
			char hx[3] = { in[i + 1], in[i + 2], 0 };
			unsigned char c = (unsigned char)strtoul(hx, NULL, 16);
			out[o++] = c < 0x20 && c != '\t' ? ' ' : (char)c; /* no line breaks in our messages */
			i += 2;
		} else {
			out[o++] = (unsigned char)in[i] < 0x20 ? ' ' : in[i];
		}
	}
	out[o] = '\0';
	return o;
}

int dl_grpc_resource_name(char *out, size_t n, const char *instance, const char *hash, int64_t size)
{
	int w = snprintf(out, n, "%s%sblobs/%s/%lld", instance ? instance : "", instance && *instance ? "/" : "",
			 hash, (long long)size);
	return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

/* The 5-byte prefix of a message of len bytes: not compressed, big-endian length. */
static void frame_prefix(unsigned char pre[5], size_t len)
{
	pre[0] = 0;
	pre[1] = (unsigned char)(len >> 24);
	pre[2] = (unsigned char)(len >> 16);
	pre[3] = (unsigned char)(len >> 8);
	pre[4] = (unsigned char)len;
}

int dl_grpc_frame(tf__buf *out, const void *msg, size_t len)
{
	unsigned char pre[5];
	int r;

	if (len > UINT32_MAX)
		return -EMSGSIZE;
	frame_prefix(pre, len);
	r = tf__buf_append(out, pre, sizeof(pre));
	return r < 0 ? r : tf__buf_append(out, msg, len);
}

void dl_grpc_rx_init(dl_grpc_rx *rx, dl_grpc_answer kind)
{
	memset(rx, 0, sizeof(*rx));
	rx->kind = kind;
	rx->status = -1;
	tf__buf_init(&rx->msg, DL_GRPC_MAX_MESSAGE);
}

void dl_grpc_rx_reset(dl_grpc_rx *rx)
{
	rx->hdr_len = 0;
	rx->want = 0;
	rx->status = -1;
	rx->message[0] = '\0';
	rx->why[0] = '\0';
	rx->messages = 0;
	tf__buf_reset(&rx->msg);
}

void dl_grpc_rx_fini(dl_grpc_rx *rx)
{
	tf__buf_fini(&rx->msg);
}

/* One whole message of the answer. */
static int rx_message(dl_grpc_rx *rx, const unsigned char *p, size_t n, dl_grpc_sink sink, void *arg)
{
	tf_error err = { 0 };
	int r;

	rx->messages++;
	if (rx->kind == DL_GRPC_RAW)
		return sink(arg, p, n);
	/* A ByteStream ReadResponse: its data field (10), checked and then
	 * handed on from the message itself (unpacking it would copy every
	 * byte of the blob once more, and allocate, per message). */
	r = pw_check(&google__bytestream__read_response__descriptor, p, n, NULL, &err);
	if (r < 0) {
		snprintf(rx->why, sizeof(rx->why), "a ReadResponse does not decode: %.200s", err.message);
		return -EBADMSG;
	}
	{
		const uint8_t *data = NULL;
		size_t pos = 0, len = 0;
		pw_field f;
		while ((r = pw_next(p, n, &pos, &f, NULL)) == 1)
			if (f.number == 10) { /* bytes: pw_check saw it length-delimited; the last one counts */
				data = f.data;
				len = (size_t)f.value;
			}
		if (r < 0) {
			snprintf(rx->why, sizeof(rx->why), "a ReadResponse does not decode");
			return -EBADMSG;
		}
		return len ? sink(arg, data, len) : 0;
	}
}

int dl_grpc_rx_feed(dl_grpc_rx *rx, const void *data, size_t n, dl_grpc_sink sink, void *arg)
{
	const unsigned char *p = data;

	while (n > 0) {
		size_t take;
		int r;

		if (rx->hdr_len < 5) {
			take = 5 - rx->hdr_len < n ? 5 - rx->hdr_len : n;
			memcpy(rx->hdr + rx->hdr_len, p, take);
			rx->hdr_len += take;
			p += take;
			n -= take;
			if (rx->hdr_len < 5)
				return 0;
			if (rx->hdr[0] != 0) {
				snprintf(rx->why, sizeof(rx->why),
					 "the server sent a compressed message, which was not asked for");
				return -EBADMSG;
			}
			rx->want = (uint32_t)rx->hdr[1] << 24 | (uint32_t)rx->hdr[2] << 16 |
				   (uint32_t)rx->hdr[3] << 8 | rx->hdr[4];
			if (rx->want > DL_GRPC_MAX_MESSAGE) {
				snprintf(rx->why, sizeof(rx->why), "the server sent a message of %u bytes (at most %zu taken)",
					 rx->want, DL_GRPC_MAX_MESSAGE);
				return -EBADMSG;
			}
			tf__buf_reset(&rx->msg);
		}
		/* A whole message in this chunk goes straight through. */
		if (rx->msg.len == 0 && n >= rx->want) {
			r = rx_message(rx, p, rx->want, sink, arg);
			p += rx->want;
			n -= rx->want;
			rx->hdr_len = 0;
			if (r < 0)
				return r;
			continue;
		}
		take = rx->want - rx->msg.len < n ? rx->want - rx->msg.len : n;
		if (tf__buf_append(&rx->msg, p, take) < 0) {
			snprintf(rx->why, sizeof(rx->why), "out of memory for a message of %u bytes", rx->want);
			return -ENOMEM;
		}
		p += take;
		n -= take;
		if (rx->msg.len == rx->want) {
			r = rx_message(rx, rx->msg.data, rx->msg.len, sink, arg);
			tf__buf_reset(&rx->msg);
			rx->hdr_len = 0;
			if (r < 0)
				return r;
		}
	}
	return 0;
}

bool dl_grpc_rx_partial(const dl_grpc_rx *rx)
{
	return rx->hdr_len > 0;
}

bool dl_grpc_rx_whole_untrailed(const dl_grpc_rx *rx, CURLcode rc, long http_status)
{
	return rc == CURLE_OK && http_status == 200 && rx->status < 0 && !rx->why[0] && rx->hdr_len == 0 &&
	       rx->messages > 0;
}

void dl_grpc_rx_header(dl_grpc_rx *rx, const char *line, size_t n)
{
	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
		n--;
	if (n > 12 && !strncasecmp(line, "grpc-status:", 12)) {
		const char *v = line + 12;
		char num[12];
		size_t k = 0;
		while (v < line + n && *v == ' ')
			v++;
		while (v < line + n && k + 1 < sizeof(num) && isdigit((unsigned char)*v))
			num[k++] = *v++;
		num[k] = '\0';
		rx->status = k ? atoi(num) : 2; /* unreadable: UNKNOWN */
	} else if (n > 13 && !strncasecmp(line, "grpc-message:", 13)) {
		const char *v = line + 13;
		while (v < line + n && *v == ' ')
			v++;
		dl_grpc_percent_decode(v, (size_t)(line + n - v), rx->message, sizeof(rx->message));
	}
}

dl_outcome dl_grpc_classify(const dl_grpc_rx *rx, CURLcode rc, long http_status, const char *errbuf,
			    long timeout_s, char *why, size_t n)
{
	const char *detail = errbuf && *errbuf ? errbuf : curl_easy_strerror(rc);

	if (rx->why[0]) {
		snprintf(why, n, "%s", rx->why);
		return DL_OUTCOME_FATAL;
	}
	if (rx->status >= 0) {
		/* The server's own words; a stream cut after the status is still its answer. */
		const char *name = dl_grpc_code_name(rx->status);
		if (rx->message[0])
			snprintf(why, n, "%s: %s", name, rx->message);
		else
			snprintf(why, n, "%s", name);
		switch (rx->status) {
		case 0:
			if (rc != CURLE_OK) {
				snprintf(why, n, "%s", detail);
				return DL_OUTCOME_TRANSIENT;
			}
			return DL_OUTCOME_BODY;
		case 5: /* NOT_FOUND */
			return DL_OUTCOME_MISS;
		case 14: /* UNAVAILABLE */
		case 8:  /* RESOURCE_EXHAUSTED */
		case 10: /* ABORTED */
			return DL_OUTCOME_TRANSIENT;
		case 4: /* DEADLINE_EXCEEDED */
			return DL_OUTCOME_TIMEOUT;
		default:
			return DL_OUTCOME_FATAL;
		}
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		snprintf(why, n, "timed out: no data for --remote_timeout=%lds (%s)", timeout_s, detail);
		return DL_OUTCOME_TIMEOUT;
	}
	if (rc == CURLE_OK) {
		if (http_status != 200) {
			/* Not a gRPC answer: a proxy or a plain web server in between. */
			snprintf(why, n, "HTTP %ld without a grpc-status (is this a gRPC endpoint?)", http_status);
			return http_status >= 500 || http_status == 429 ? DL_OUTCOME_TRANSIENT : DL_OUTCOME_FATAL;
		}
		snprintf(why, n, "the call ended without a grpc-status (the stream was cut)");
		return DL_OUTCOME_TRANSIENT;
	}
	snprintf(why, n, "%s", detail);
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return DL_OUTCOME_TRANSIENT;
	default:
		return DL_OUTCOME_FATAL;
	}
}

/* ---- the backend --------------------------------------------------------------------- */

static int add_line(struct curl_slist **l, const char *line, tf_error *err)
{
	struct curl_slist *n = curl_slist_append(*l, line);
	if (!n)
		return tf__errf(err, -ENOMEM, "out of memory");
	*l = n;
	return 0;
}

int dl_grpc_metadata_line(char *line, size_t n, const char *invocation)
{
	Build__Bazel__Remote__Execution__V2__ToolDetails tool = BUILD__BAZEL__REMOTE__EXECUTION__V2__TOOL_DETAILS__INIT;
	Build__Bazel__Remote__Execution__V2__RequestMetadata md =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__REQUEST_METADATA__INIT;
	unsigned char buf[512];
	int off;
	size_t len;

	tool.tool_name = (char *)"topfetch";
	tool.tool_version = (char *)TOPFETCH_VERSION;
	md.tool_details = &tool;
	if (invocation && *invocation)
		md.tool_invocation_id = (char *)invocation;
	len = build__bazel__remote__execution__v2__request_metadata__get_packed_size(&md);
	if (len > sizeof(buf) || n < sizeof(DL_GRPC_METADATA_HEADER) + 2 + 4 * (len + 2) / 3 + 1)
		return -EMSGSIZE;
	build__bazel__remote__execution__v2__request_metadata__pack(&md, buf);
	off = snprintf(line, n, DL_GRPC_METADATA_HEADER ": ");
	EVP_EncodeBlock((unsigned char *)line + off, buf, (int)len);
	return 0;
}

dl_grpc *dl_grpc_new(const tf_remote_options *opts, tf_error *err)
{
	const char *rc = opts->remote_cache, *inst = opts->remote_instance_name;
	bool tls = !strncmp(rc, "grpcs://", 8);
	const char *host = rc + (tls ? 8 : 7);
	size_t hl = strcspn(host, "/");
	dl_grpc *g;

	if (strpbrk(rc, " \r\n\t")) {
		tf__errf(err, -EINVAL, "--remote_cache URL contains white space");
		return NULL;
	}
	if (hl == 0 || memchr(host, '@', hl) || (host[hl] && strcmp(host + hl, "/"))) {
		tf__errf(err, -EINVAL,
			 "--remote_cache %s://...: a gRPC cache is grpc://HOST:PORT or grpcs://HOST:PORT (no path, no user; use --remote_instance_name and --remote_header)",
			 tls ? "grpcs" : "grpc");
		return NULL;
	}
	if (inst && *inst) {
		static const char *const reserved[] = { "blobs", "uploads", "actions", "actionResults", "operations",
							"capabilities", "compressed-blobs" };
		if (tf__path_check(inst, "--remote_instance_name", err) < 0)
			return NULL;
		for (size_t i = 0; i < sizeof(reserved) / sizeof(*reserved); i++) {
			const char *p = inst;
			size_t k = strlen(reserved[i]);
			for (;;) {
				size_t seg = strcspn(p, "/");
				if (seg == k && !strncmp(p, reserved[i], k)) {
					tf__errf(err, -EINVAL, "--remote_instance_name '%s': no part of it may be '%s'", inst,
						 reserved[i]);
					return NULL;
				}
				if (!p[seg])
					break;
				p += seg + 1;
			}
		}
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	g->tls = tls;
	g->instance = strdup(inst ? inst : "");
	if (asprintf(&g->base, "%s://%.*s", tls ? "https" : "http", (int)hl, host) < 0)
		g->base = NULL;
	if (asprintf(&g->display, "%s://%.*s%s%s", tls ? "grpcs" : "grpc", (int)hl, host, inst && *inst ? "/" : "",
		     inst && *inst ? inst : "") < 0)
		g->display = NULL;
	if (!g->instance || !g->base || !g->display) {
		tf__errf(err, -ENOMEM, "out of memory");
		dl_grpc_free(g);
		return NULL;
	}
	return g;
}

void dl_grpc_free(dl_grpc *g)
{
	if (!g)
		return;
	free(g->base);
	free(g->display);
	free(g->instance);
	free(g->first_instance);
	free(g);
}

const char *dl_grpc_display(const dl_grpc *g)
{
	return g->display;
}

int dl_grpc_headers(struct curl_slist **l, tf_error *err)
{
	static const char *const lines[] = { "content-type: application/grpc", "te: trailers",
					     ("user-agent: topfetch/" TOPFETCH_VERSION), "Expect:", "Accept:" };
	int r = 0;

	char line[1024];

	for (size_t i = 0; i < sizeof(lines) / sizeof(*lines) && r == 0; i++)
		r = add_line(l, lines[i], err);
	if (r == 0 && dl_grpc_metadata_line(line, sizeof(line), NULL) < 0)
		r = tf__errf(err, -EMSGSIZE, "RequestMetadata too large");
	return r < 0 ? r : add_line(l, line, err);
}

int64_t dl_grpc_max_batch(const dl_grpc *g)
{
	return g->max_batch;
}

void dl_grpc_note(dl_grpc *g, CURLcode rc)
{
	if (rc == CURLE_OK)
		atomic_store(&g->h2_up, true);
	else if (rc != CURLE_WRITE_ERROR && rc != CURLE_ABORTED_BY_CALLBACK)
		atomic_store(&g->h2_up, false);
}

/* URL, protocol, headers and TLS of one call to path. */
static void call_setup(const dl_backend *b, CURL *h, const char *path)
{
	const dl_grpc *g = dl_backend_grpc(b);
	char url[1024];

	snprintf(url, sizeof(url), "%s%s", g->base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
			 (long)(g->tls ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE));
	curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 0L);
	dl_backend_common(b, h);
	/* libcurl before 8.0.0 fails a call with prior knowledge that reuses a
	 * cleartext HTTP/2 connection ("Error in the HTTP2 framing layer", curl
	 * pull request 10643). There, a call made with prior knowledge opens a
	 * connection of its own, and once one is up, calls ask for plain HTTP/2,
	 * which multiplexes on it. A broken connection sends the next calls back
	 * to prior knowledge (dl_grpc_note). */
	if (!g->tls && curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
		if (atomic_load(&g->h2_up))
			curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
		else
			curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
	}
}

/* A framed request message as the body of the call (copied by libcurl). */
static int set_body(CURL *h, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	unsigned char *buf = malloc(len + 5);

	if (!buf)
		return -ENOMEM;
	frame_prefix(buf, len);
	protobuf_c_message_pack(m, buf + 5);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(len + 5));
	curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, buf);
	free(buf);
	return 0;
}

int dl_grpc_prepare(const dl_backend *b, CURL *h, tf_area area, const char *hash, int64_t size, int64_t offset,
		    char *display, size_t display_len)
{
	const dl_grpc *g = dl_backend_grpc(b);

	if (area == TF_AREA_AC) {
		Build__Bazel__Remote__Execution__V2__GetActionResultRequest q =
			BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_ACTION_RESULT_REQUEST__INIT;
		Build__Bazel__Remote__Execution__V2__Digest dg = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
		/* The action's digest: its size is unknown here, and caches key the
		 * action cache by the hash (Bazel's own server, bazel-remote). */
		dg.hash = (char *)hash;
		dg.size_bytes = size > 0 ? size : 0;
		q.instance_name = g->instance;
		q.action_digest = &dg;
		snprintf(display, display_len, "%s GetActionResult %s", g->display, hash);
		call_setup(b, h, "/build.bazel.remote.execution.v2.ActionCache/GetActionResult");
		return set_body(h, &q.base);
	} else {
		Google__Bytestream__ReadRequest q = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
		char name[1024];
		int r = dl_grpc_resource_name(name, sizeof(name), g->instance, hash, size);
		if (r < 0)
			return r;
		q.resource_name = name;
		q.read_offset = offset;
		if (offset > 0)
			snprintf(display, display_len, "%s ByteStream.Read %s (from byte %lld)", g->display, name,
				 (long long)offset);
		else
			snprintf(display, display_len, "%s ByteStream.Read %s", g->display, name);
		call_setup(b, h, "/google.bytestream.ByteStream/Read");
		return set_body(h, &q.base);
	}
}

/* ---- GetCapabilities ------------------------------------------------------------------- */

typedef struct caps_call {
	dl_grpc_rx rx;
	tf__buf answer;
} caps_call;

static size_t caps_on_header(char *b, size_t size, size_t nmemb, void *user)
{
	caps_call *c = user;
	dl_grpc_rx_header(&c->rx, b, size * nmemb);
	return size * nmemb;
}

static int caps_sink(void *arg, const void *p, size_t n)
{
	caps_call *c = arg;
	return tf__buf_append(&c->answer, p, n) < 0 ? -E2BIG : 0;
}

static size_t caps_on_body(char *b, size_t size, size_t nmemb, void *user)
{
	caps_call *c = user;
	return dl_grpc_rx_feed(&c->rx, b, size * nmemb, caps_sink, c) < 0 ? 0 : size * nmemb;
}

int dl_grpc_capabilities(const dl_backend *b, tf_error *err)
{
	dl_grpc *g = dl_backend_grpc(b);
	long timeout_s = dl_backend_timeout_s(b);
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest q =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
	Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = NULL;
	caps_call c;
	char errbuf[CURL_ERROR_SIZE] = "", why[TF_ERROR_MESSAGE_MAX];
	CURL *h = curl_easy_init();
	CURLcode rc;
	long status = 0;
	dl_outcome o;
	int r = 0;

	if (!h)
		return tf__errf(err, -ENOMEM, "out of memory");
	dl_grpc_rx_init(&c.rx, DL_GRPC_RAW);
	tf__buf_init(&c.answer, 1 << 20);
	q.instance_name = g->instance;
	call_setup(b, h, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities");
	set_body(h, &q.base);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, caps_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &c);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, caps_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &c);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	o = dl_grpc_classify(&c.rx, rc, status, errbuf, timeout_s, why, sizeof(why));
	switch (o) {
	case DL_OUTCOME_BODY:
		break;
	case DL_OUTCOME_TRANSIENT:
	case DL_OUTCOME_TIMEOUT:
	case DL_OUTCOME_MISS:
		/* Not reachable now: every transfer reports that, typed, after its retries. */
		r = 1;
		goto out;
	case DL_OUTCOME_FATAL:
		if (c.rx.status == 12) { /* UNIMPLEMENTED: a cache without the Capabilities service */
			r = 1;
			goto out;
		}
		if (c.rx.status < 0) { /* no answer: TLS, protocol */
			r = tf__errf(err, -EPROTO, "cannot use %s: GetCapabilities failed: %s%s", g->display, why,
				     rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE
					     ? " (check --tls_certificate: the CA that signed the cache's certificate)"
					     : "");
			goto out;
		}
		r = tf__errf(err, -EPROTO, "%s refused GetCapabilities: %s%s", g->display, why,
			     c.rx.status == 3 ? " (Bazel's own server answers this to a call without RequestMetadata)"
			     : c.rx.status == 16 || c.rx.status == 7 ? " (check --remote_header and the TLS client certificate)"
								       : "");
		goto out;
	}
	if (pw_check(&build__bazel__remote__execution__v2__server_capabilities__descriptor, c.answer.data, c.answer.len,
		     NULL, err) < 0 ||
	    !(caps = build__bazel__remote__execution__v2__server_capabilities__unpack(NULL, c.answer.len,
										   c.answer.data))) {
		r = tf__errf(err, -EBADMSG, "%s: its ServerCapabilities do not decode%s%s", g->display,
			     err->message[0] ? ": " : "", err->message);
		goto out;
	}
	if (!caps->cache_capabilities) {
		r = tf__errf(err, -EPROTO, "%s offers no cache (its capabilities have no cache_capabilities)", g->display);
		goto out;
	}
	{
		bool sha256 = false;
		for (size_t i = 0; i < caps->cache_capabilities->n_digest_functions; i++)
			sha256 |= caps->cache_capabilities->digest_functions[i] ==
				  BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;
		if (!sha256) {
			r = tf__errf(err, -EPROTO,
				     "%s does not offer SHA-256 digests (its capabilities list %zu other digest functions); topfetch reads SHA-256 caches only",
				     g->display, caps->cache_capabilities->n_digest_functions);
			goto out;
		}
	}
	g->max_batch = caps->cache_capabilities->max_batch_total_size_bytes;
out:
	if (caps)
		build__bazel__remote__execution__v2__server_capabilities__free_unpacked(caps, NULL);
	dl_grpc_rx_fini(&c.rx);
	tf__buf_fini(&c.answer);
	curl_easy_cleanup(h);
	return r;
}

/* ---- calls made as streams (the proxy's upstream) ------------------------------------- */

/* A framed message into out (appended). */
static int frame_into(tf__buf *out, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m), at = out->len;
	unsigned char pre[5];
	int r;

	if (len > UINT32_MAX)
		return -EMSGSIZE;
	frame_prefix(pre, len);
	if ((r = tf__buf_append(out, pre, sizeof(pre))) < 0 || (r = tf__buf_reserve(out, len)) < 0) {
		out->len = at;
		return r;
	}
	protobuf_c_message_pack(m, out->data + out->len);
	out->len += len;
	return 0;
}

static size_t varint_put(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (unsigned char)v;
	return n;
}

int dl_grpc_stream_prepare(const dl_backend *b, CURL *h, dl_op op, tf_area area, const char *hash, int64_t size,
			   tf__buf *req, char *display, size_t display_len)
{
	const dl_grpc *g = dl_backend_grpc(b);
	Build__Bazel__Remote__Execution__V2__Digest dg = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
	Build__Bazel__Remote__Execution__V2__Digest *dgp = &dg;
	char name[1024];
	int r;

	if (dl_backend_refresh(b, display, display_len) < 0)
		return -EACCES;
	dg.hash = (char *)hash;
	dg.size_bytes = size > 0 ? size : 0;
	if (area == TF_AREA_CAS && (op == DL_OP_GET || op == DL_OP_HEAD) && size <= 0) {
		/* A ByteStream resource name and a FindMissingBlobs digest both hold
		 * the size, which a request by hash alone does not know. */
		snprintf(display, display_len, "%s cas/%s", g->display, hash);
		return -ENOENT;
	}
	if (op == DL_OP_GET && area == TF_AREA_CAS) {
		Google__Bytestream__ReadRequest q = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
		if ((r = dl_grpc_resource_name(name, sizeof(name), g->instance, hash, size)) < 0)
			return r;
		q.resource_name = name;
		snprintf(display, display_len, "%s ByteStream.Read %s", g->display, name);
		call_setup(b, h, "/google.bytestream.ByteStream/Read");
		return frame_into(req, &q.base);
	}
	if (op == DL_OP_HEAD && area == TF_AREA_CAS) {
		Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest q =
			BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
		q.instance_name = g->instance;
		q.n_blob_digests = 1;
		q.blob_digests = &dgp;
		snprintf(display, display_len, "%s FindMissingBlobs %s/%lld", g->display, hash, (long long)size);
		call_setup(b, h, "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs");
		return frame_into(req, &q.base);
	}
	if (op == DL_OP_FIND) {
		snprintf(display, display_len, "%s FindMissingBlobs", g->display);
		call_setup(b, h, "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs");
		return 0; /* the request is the caller's */
	}
	if (op == DL_OP_PUT && area == TF_AREA_CAS) {
		snprintf(display, display_len, "%s ByteStream.Write %s/%lld", g->display, hash, (long long)size);
		call_setup(b, h, "/google.bytestream.ByteStream/Write");
		return 0; /* messages are made as the bytes come (dl_grpc_write_frame) */
	}
	if (op == DL_OP_PUT) {
		/* UpdateActionResult: the request without its action_result, then
		 * that field's tag and length; the ActionResult's bytes follow as
		 * they come, unparsed. */
		Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest q =
			BUILD__BAZEL__REMOTE__EXECUTION__V2__UPDATE_ACTION_RESULT_REQUEST__INIT;
		unsigned char pre[5], tag[11];
		size_t head, tl;
		q.instance_name = g->instance;
		q.action_digest = &dg;
		dg.size_bytes = 0; /* the action's size is not known; caches key it by hash */
		head = protobuf_c_message_get_packed_size(&q.base);
		tag[0] = 3 << 3 | 2;
		tl = 1 + varint_put(tag + 1, (uint64_t)size);
		if (head + tl + (uint64_t)size > UINT32_MAX)
			return -EMSGSIZE;
		frame_prefix(pre, head + tl + (size_t)size);
		if ((r = tf__buf_append(req, pre, sizeof(pre))) < 0 || (r = tf__buf_reserve(req, head)) < 0)
			return r;
		protobuf_c_message_pack(&q.base, req->data + req->len);
		req->len += head;
		snprintf(display, display_len, "%s UpdateActionResult %s", g->display, hash);
		call_setup(b, h, "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult");
		return tf__buf_append(req, tag, tl);
	}
	{
		/* GET or HEAD of an action cache entry. */
		Build__Bazel__Remote__Execution__V2__GetActionResultRequest q =
			BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_ACTION_RESULT_REQUEST__INIT;
		q.instance_name = g->instance;
		q.action_digest = &dg;
		snprintf(display, display_len, "%s GetActionResult %s", g->display, hash);
		call_setup(b, h, "/build.bazel.remote.execution.v2.ActionCache/GetActionResult");
		return frame_into(req, &q.base);
	}
}

int dl_grpc_write_frame(const dl_backend *b, tf__buf *out, const char *hash, int64_t size, int64_t offset,
			const void *data, size_t n)
{
	const dl_grpc *g = dl_backend_grpc(b);
	Google__Bytestream__WriteRequest q = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	char name[1024];

	if (offset == 0) {
		/* {instance/}uploads/UUID/blobs/HASH/SIZE: a fresh UUID per upload. */
		unsigned char u[16];
		char uuid[37];
		if (RAND_bytes(u, sizeof(u)) != 1)
			return -EIO;
		u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
		u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
		snprintf(uuid, sizeof(uuid), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
			 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
		if (snprintf(name, sizeof(name), "%s%suploads/%s/blobs/%s/%lld", g->instance, *g->instance ? "/" : "",
			     uuid, hash, (long long)size) >= (int)sizeof(name))
			return -ENAMETOOLONG;
		q.resource_name = name;
	}
	q.write_offset = offset;
	q.finish_write = offset + (int64_t)n == size;
	q.data.data = (uint8_t *)data;
	q.data.len = n;
	return frame_into(out, &q.base);
}

int dl_grpc_committed(const void *p, size_t n, int64_t *committed, tf_error *err)
{
	Google__Bytestream__WriteResponse *m;

	if (pw_check(&google__bytestream__write_response__descriptor, p, n, NULL, err) < 0 ||
	    !(m = google__bytestream__write_response__unpack(NULL, n, p)))
		return tf__errf(err, -EBADMSG, "its WriteResponse does not decode");
	*committed = m->committed_size;
	google__bytestream__write_response__free_unpacked(m, NULL);
	return 0;
}

/* The protobuf digests of v[0..n): an array of pointers, each to a digest
 * in the same allocation (one free()); NULL out of memory. */
static Build__Bazel__Remote__Execution__V2__Digest **digest_list(const tf_digest *v, size_t n)
{
	size_t k = n ? n : 1;
	Build__Bazel__Remote__Execution__V2__Digest **dp = malloc(k * (sizeof(*dp) + sizeof(**dp)));
	Build__Bazel__Remote__Execution__V2__Digest *dg = (Build__Bazel__Remote__Execution__V2__Digest *)(dp + k);

	if (!dp)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		Build__Bazel__Remote__Execution__V2__Digest init = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
		dg[i] = init;
		dg[i].hash = (char *)v[i].hash;
		dg[i].size_bytes = v[i].size;
		dp[i] = &dg[i];
	}
	return dp;
}

int dl_grpc_find_request(const dl_backend *b, const tf_digest *v, size_t count, tf__buf *req)
{
	const dl_grpc *g = dl_backend_grpc(b);
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest q =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
	Build__Bazel__Remote__Execution__V2__Digest **dp = digest_list(v, count);
	int r;

	if (!dp)
		return -ENOMEM;
	q.instance_name = g->instance;
	q.n_blob_digests = count;
	q.blob_digests = dp;
	r = frame_into(req, &q.base);
	free(dp);
	return r;
}

int dl_grpc_find_answer(const void *p, size_t n, const tf_digest *v, size_t count, size_t *missing, tf_error *err)
{
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *m;
	size_t first = count;

	if (pw_check(&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor, p, n, NULL, err) <
		    0 ||
	    !(m = build__bazel__remote__execution__v2__find_missing_blobs_response__unpack(NULL, n, p)))
		return tf__errf(err, -EBADMSG, "its FindMissingBlobsResponse does not decode");
	/* The first of ours that it names (its order need not be ours). */
	for (size_t k = 0; k < m->n_missing_blob_digests; k++) {
		const Build__Bazel__Remote__Execution__V2__Digest *d = m->missing_blob_digests[k];
		for (size_t i = 0; d && d->hash && i < first; i++)
			if (v[i].size == d->size_bytes && !strcmp(v[i].hash, d->hash))
				first = i;
	}
	build__bazel__remote__execution__v2__find_missing_blobs_response__free_unpacked(m, NULL);
	if (first == count)
		return 1;
	*missing = first;
	return 0;
}

/* ---- BatchReadBlobs ---------------------------------------------------------------------- */

bool dl_grpc_batch_ok(const dl_grpc *g)
{
	return !atomic_load(&((dl_grpc *)g)->no_batch);
}

void dl_grpc_batch_off(dl_grpc *g)
{
	atomic_store(&g->no_batch, true);
}

int64_t dl_grpc_batch_limit(const dl_grpc *g)
{
	/* gRPC's default message limit when the server names none. */
	return g->max_batch > 0 ? g->max_batch : (int64_t)4 << 20;
}

int dl_grpc_batch_prepare(const dl_backend *b, CURL *h, const tf_digest *v, size_t n, char *display, size_t display_len)
{
	const dl_grpc *g = dl_backend_grpc(b);
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest q =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_REQUEST__INIT;
	Build__Bazel__Remote__Execution__V2__Digest **dp = digest_list(v, n);
	int r = -ENOMEM;

	if (dl_backend_refresh(b, display, display_len) < 0) {
		free(dp);
		return -EACCES;
	}
	if (dp) {
		q.instance_name = g->instance;
		q.n_digests = n;
		q.digests = dp;
		snprintf(display, display_len, "%s BatchReadBlobs (%zu blobs)", g->display, n);
		call_setup(b, h, "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs");
		r = set_body(h, &q.base);
	}
	free(dp);
	return r;
}

int dl_grpc_batch_answer(const void *p, size_t n, dl_grpc_batch_cb cb, void *arg, tf_error *err)
{
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse *m;

	if (pw_check(&build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor, p, n, NULL, err) < 0 ||
	    !(m = build__bazel__remote__execution__v2__batch_read_blobs_response__unpack(NULL, n, p)))
		return tf__errf(err, -EBADMSG, "its BatchReadBlobsResponse does not decode");
	for (size_t i = 0; i < m->n_responses; i++) {
		const Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *r = m->responses[i];
		char msg[512] = "";
		if (!r->digest || !r->digest->hash)
			continue;
		if (r->status && r->status->message) {
			snprintf(msg, sizeof(msg), "%s", r->status->message);
			for (char *c = msg; *c; c++)
				if ((unsigned char)*c < 0x20)
					*c = ' '; /* no line breaks in our messages */
		}
		cb(arg, r->digest->hash, r->digest->size_bytes, r->status ? r->status->code : 0, msg, r->data.data,
		   r->data.len);
	}
	build__bazel__remote__execution__v2__batch_read_blobs_response__free_unpacked(m, NULL);
	return 0;
}

int dl_grpc_adopt_instance(dl_grpc *g, const char *uri)
{
	const char *p, *b;
	char *inst;

	if (strncmp(uri, "bytestream://", 13) || !(p = strchr(uri + 13, '/')) || !(b = strstr(p, "/blobs/")) || b == p)
		return 0; /* not a URI with an instance */
	if (*g->instance || atomic_exchange(&g->adopted, true))
		return 0; /* --remote_instance_name, or one adopted before */
	inst = strndup(p + 1, (size_t)(b - p - 1));
	if (!inst)
		return -ENOMEM;
	if (tf__path_check(inst, "the instance of a bytestream:// URI", NULL) < 0) {
		free(inst);
		return -EINVAL;
	}
	g->first_instance = g->instance;
	g->instance = inst;
	return 1;
}
