/* The gRPC front end: REAPI's Capabilities, ActionCache,
 * ContentAddressableStorage and google.bytestream.ByteStream, served with the
 * gRPC C core (completion queues, calls dispatched by method name through
 * grpc_server_request_call) and adapted to the wire-neutral core.
 *
 * Threads: one acceptor thread asks the core for the next call on the
 * server's completion queue; each call then runs on a thread of its own,
 * step by step on a pluck queue bound to that call, so that it may block on
 * the upstream and on the session's thread as the HTTP front end's
 * connection threads do. Bodies stream through in messages of at most
 * READ_CHUNK bytes (reads) or what the client sends (writes): a call holds
 * one message at a time, and batch calls at most RECV_MAX bytes. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "proto/wire.h"
#include "proxy/proxy.h"
#include "bytestream.pb-c.h"
#include "remote_execution.pb-c.h"

/* Largest message received: an action cache entry of PX_AC_MAX_BYTES in its
 * request, with room to spare (the core's default, 4 MiB, is too small for
 * batch calls of that size). */
#define RECV_MAX ((int)(PX_AC_MAX_BYTES + ((size_t)1 << 20)))
/* What Capabilities advertises for batch calls (what Bazel's own worker
 * says); a BatchReadBlobs asking for more is refused. */
#define BATCH_MAX ((int64_t)4 << 20)
#define READ_CHUNK ((size_t)256 << 10) /* bytes per ByteStream ReadResponse */
#define WINDOW (4 << 20)               /* HTTP/2 flow-control window per stream */
#define MAX_CALLS 4096                 /* calls served at once (one thread each); more wait in the core */
#define CALL_STACK_BYTES ((size_t)1 << 20)
#define BLOB_PREFIX_MAX 512            /* an instance name in a resource name */

#define RE_PKG "/build.bazel.remote.execution.v2."

struct px_grpc {
	px_proxy *p;
	px_bes *bes; /* NULL: no Build Event Service */
	grpc_server *srv;
	grpc_completion_queue *cq; /* the server's: new calls and the shutdown notice */
	pthread_t acceptor;
	bool acceptor_started, shutdown_sent;
	unsigned port;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* active changed */
	int active;        /* calls between their start and their thread's end */
	char shutdown_tag;
};

typedef struct gcall {
	px_grpc *g;
	grpc_call *call;
	grpc_completion_queue *cq; /* pluck, bound to this call */
	grpc_call_details details;
	grpc_metadata_array md;
	bool sent_initial, closed;
	int cancelled;
	char tag_op, tag_close;
} gcall;

typedef struct gstatus {
	grpc_status_code code;
	char message[PX_MESSAGE_MAX];
} gstatus;

static void st_set(gstatus *s, grpc_status_code code, const char *fmt, ...) TF__PRINTF(3, 4);

static void st_set(gstatus *s, grpc_status_code code, const char *fmt, ...)
{
	va_list ap;

	s->code = code;
	va_start(ap, fmt);
	vsnprintf(s->message, sizeof(s->message), fmt, ap);
	va_end(ap);
}

static grpc_status_code code_of(px_status st)
{
	switch (st) {
	case PX_OK: return GRPC_STATUS_OK;
	case PX_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
	case PX_BAD_REQUEST: return GRPC_STATUS_INVALID_ARGUMENT;
	case PX_TOO_LARGE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case PX_UPSTREAM: return GRPC_STATUS_UNAVAILABLE;
	case PX_TIMEOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
	case PX_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
	case PX_INTERNAL: return GRPC_STATUS_INTERNAL;
	}
	return GRPC_STATUS_INTERNAL;
}

static void st_from(gstatus *s, const px_result *r)
{
	st_set(s, code_of(r->status), "%s", r->message);
}

/* ---- one call's steps, each waited for on the call's own queue ------------------------- */

static bool run_ops(gcall *c, grpc_op *ops, size_t n)
{
	grpc_event ev;

	if (grpc_call_start_batch(c->call, ops, n, &c->tag_op, NULL) != GRPC_CALL_OK)
		return false;
	ev = grpc_completion_queue_pluck(c->cq, &c->tag_op, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* The next message of the client's stream into *out (its bytes, flattened):
 * 1, 0 at the end of the stream, -1 when the call broke. */
static int recv_msg(gcall *c, grpc_slice *out)
{
	grpc_byte_buffer *bb = NULL;
	grpc_byte_buffer_reader rd;
	grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };

	op.data.recv_message.recv_message = &bb;
	if (!run_ops(c, &op, 1))
		return -1;
	if (!bb)
		return 0;
	if (!grpc_byte_buffer_reader_init(&rd, bb)) {
		grpc_byte_buffer_destroy(bb);
		return -1;
	}
	*out = grpc_byte_buffer_reader_readall(&rd);
	grpc_byte_buffer_reader_destroy(&rd);
	grpc_byte_buffer_destroy(bb);
	return 1;
}

/* Sends one message (len bytes copied); waits until the transport took it,
 * which bounds what a slow client makes us hold. */
static bool send_msg(gcall *c, const void *data, size_t len)
{
	grpc_slice sl = grpc_slice_from_copied_buffer(data, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_op ops[2] = { { .op = GRPC_OP_SEND_INITIAL_METADATA }, { .op = GRPC_OP_SEND_MESSAGE } };
	bool ok;

	grpc_slice_unref(sl);
	ops[1].data.send_message.send_message = bb;
	ok = run_ops(c, c->sent_initial ? ops + 1 : ops, c->sent_initial ? 1 : 2);
	c->sent_initial = true;
	grpc_byte_buffer_destroy(bb);
	return ok;
}

static void send_status(gcall *c, const gstatus *s)
{
	grpc_slice details = grpc_slice_from_copied_string(s->code == GRPC_STATUS_OK ? "" : s->message);
	grpc_op ops[2] = { { .op = GRPC_OP_SEND_INITIAL_METADATA }, { .op = GRPC_OP_SEND_STATUS_FROM_SERVER } };

	/* A status alone must carry the initial metadata too, or some clients
	 * (curl) wait for it forever. */
	ops[1].data.send_status_from_server.status = s->code;
	ops[1].data.send_status_from_server.status_details = &details;
	run_ops(c, c->sent_initial ? ops + 1 : ops, c->sent_initial ? 1 : 2);
	c->sent_initial = true;
	grpc_slice_unref(details);
}

/* Packs a protobuf-c message and sends it. */
static bool send_packed(gcall *c, const ProtobufCMessage *m, gstatus *s)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n ? n : 1);
	bool ok;

	if (!buf) {
		st_set(s, GRPC_STATUS_INTERNAL, "topfetch proxy: out of memory");
		return false;
	}
	protobuf_c_message_pack(m, buf);
	ok = send_msg(c, buf, n);
	free(buf);
	return ok;
}

/* ---- requests ---------------------------------------------------------------------------- */

/* A request message of type d: checked with the one wire reader (pw_check),
 * then unpacked; NULL with why. */
static ProtobufCMessage *decode_unary(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, char *why,
				      size_t n)
{
	tf_error err = { 0 };
	ProtobufCMessage *m;

	if (pw_check(d, buf, len, NULL, &err) < 0) {
		/* A message cut short is still the message (the return value is
		 * looked at so that GCC does not warn at -O3). */
		if (snprintf(why, n, "the request is not a valid %s: %s", d->name, err.message) < 0)
			why[0] = '\0';
		return NULL;
	}
	if (!(m = protobuf_c_message_unpack(d, NULL, len, buf)))
		snprintf(why, n, "the request is not a valid %s", d->name);
	return m;
}

/* The one request message of a unary call, checked against its schema and
 * unpacked; NULL with s set. */
static ProtobufCMessage *unary_request(gcall *c, const ProtobufCMessageDescriptor *d, grpc_slice *raw, gstatus *s)
{
	ProtobufCMessage *m;
	int r = recv_msg(c, raw);

	if (r <= 0) {
		st_set(s, r == 0 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED,
		       r == 0 ? "no request message: a %s is expected" : "the call ended before its request came",
		       d->name);
		return NULL;
	}
	m = decode_unary(d, GRPC_SLICE_START_PTR(*raw), GRPC_SLICE_LENGTH(*raw), s->message, sizeof(s->message));
	if (!m) {
		s->code = GRPC_STATUS_INVALID_ARGUMENT;
		grpc_slice_unref(*raw);
	}
	return m;
}

/* SHA-256 is the one digest function served (0 means the default, SHA-256). */
static bool digest_function_ok(int f, gstatus *s)
{
	if (f == 0 || f == BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256)
		return true;
	st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "digest function %d is not served: only SHA256", f);
	return false;
}

/* A digest: 64 lowercase hex digits and a size. */
static bool digest_ok(const Build__Bazel__Remote__Execution__V2__Digest *d, const char *what, gstatus *s)
{
	if (d && d->hash && tf__is_sha256_hex(d->hash, strlen(d->hash)) && d->size_bytes >= 0 &&
	    d->size_bytes <= TF__MAX_BLOB_SIZE)
		return true;
	st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "%s: want a digest of 64 lowercase hex digits and a size, got '%.80s'/%lld",
	       what, d && d->hash ? d->hash : "", d ? (long long)d->size_bytes : -1LL);
	return false;
}

/* An action cache request: counted, and its digest function and action
 * digest checked (refused with s set). */
static bool ac_request_ok(gcall *c, int fn, const Build__Bazel__Remote__Execution__V2__Digest *d, gstatus *s)
{
	px_count_request(c->g->p);
	if (digest_function_ok(fn, s) && digest_ok(d, "action_digest", s))
		return true;
	px_count_refused(c->g->p);
	return false;
}

static void get_capabilities(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	Build__Bazel__Remote__Execution__V2__ServerCapabilities caps =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__SERVER_CAPABILITIES__INIT;
	Build__Bazel__Remote__Execution__V2__CacheCapabilities cache =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__CACHE_CAPABILITIES__INIT;
	Build__Bazel__Remote__Execution__V2__ActionCacheUpdateCapabilities upd =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_CACHE_UPDATE_CAPABILITIES__INIT;
	Build__Bazel__Semver__SemVer low = BUILD__BAZEL__SEMVER__SEM_VER__INIT,
				     high = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	Build__Bazel__Remote__Execution__V2__DigestFunction__Value fn =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;

	(void)request;
	(void)raw;
	upd.update_enabled = true;
	cache.n_digest_functions = 1;
	cache.digest_functions = &fn;
	cache.action_cache_update_capabilities = &upd;
	cache.max_batch_total_size_bytes = BATCH_MAX;
	cache.symlink_absolute_path_strategy =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__ALLOWED;
	low.major = 2;
	high.major = 2;
	caps.cache_capabilities = &cache;
	caps.low_api_version = &low;
	caps.high_api_version = &high;
	if (send_packed(c, &caps.base, s))
		st_set(s, GRPC_STATUS_OK, "%s", "");
}

/* The call's RequestMetadata (REAPI: Bazel sends it with every cache call,
 * binary, the core decodes it): its tool_invocation_id (field 3), Bazel's
 * invocation id, as the BES stream names the same build; "" when there is
 * none or it is no usable id. */
static void call_invocation(const gcall *c, char id[PX_BES_ID_MAX + 1])
{
	static const char key[] = "build.bazel.remote.execution.v2.requestmetadata-bin";

	id[0] = '\0';
	for (size_t i = 0; i < c->md.count; i++) {
		const grpc_metadata *m = &c->md.metadata[i];
		const uint8_t *v = GRPC_SLICE_START_PTR(m->value);
		size_t pos = 0, vl = GRPC_SLICE_LENGTH(m->value);
		pw_field f;

		if (GRPC_SLICE_LENGTH(m->key) != sizeof(key) - 1 || memcmp(GRPC_SLICE_START_PTR(m->key), key, sizeof(key) - 1))
			continue;
		while (pw_next(v, vl, &pos, &f, NULL) == 1)
			if (f.number == 3 && f.wire_type == PW_LEN && px_bes_id_ok((const char *)f.data, (size_t)f.value)) {
				memcpy(id, f.data, (size_t)f.value);
				id[f.value] = '\0';
			}
		return;
	}
}

static void get_action_result(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Build__Bazel__Remote__Execution__V2__GetActionResultRequest *req = request;
	char inv[PX_BES_ID_MAX + 1];
	px_result r;
	tf__buf body;

	if (!ac_request_ok(c, req->digest_function, req->action_digest, s))
		return;
	call_invocation(c, inv);
	px_ac_get_for(c->g->p, req->action_digest->hash, inv[0] ? inv : NULL, &body, &r);
	if (r.status != PX_OK) {
		st_from(s, &r);
		return;
	}
	/* The entry is a serialized ActionResult, the response itself. */
	if (send_msg(c, body.data ? (const void *)body.data : "", body.len))
		st_set(s, GRPC_STATUS_OK, "%s", "");
	tf__buf_fini(&body);
}

/* One whole upload through the core (on behalf of invocation, may be NULL): PX_OK or why not. */
static void put_whole(px_proxy *p, tf_area area, const char *key, const char *invocation, const void *data,
		      size_t len, px_result *r)
{
	px_put *u = px_put_begin(p, area, key, (int64_t)len, r);

	if (!u)
		return;
	px_put_set_invocation(u, invocation);
	if (len)
		px_put_data(u, data, len);
	px_put_end(u, r);
	px_put_free(u);
}

static void update_action_result(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest *req = request;
	const uint8_t *ar = (const uint8_t *)"";
	char inv[PX_BES_ID_MAX + 1];
	size_t ar_len = 0, pos = 0;
	pw_field f;
	px_result r;

	if (!ac_request_ok(c, req->digest_function, req->action_digest, s))
		return;
	/* The ActionResult's own bytes (field 3), stored as the client made them:
	 * unpacked and packed again, unknown fields would move. */
	while (pw_next(GRPC_SLICE_START_PTR(*raw), GRPC_SLICE_LENGTH(*raw), &pos, &f, NULL) == 1)
		if (f.number == 3 && f.wire_type == PW_LEN) {
			ar = f.data;
			ar_len = (size_t)f.value;
		}
	call_invocation(c, inv);
	put_whole(c->g->p, TF_AREA_AC, req->action_digest->hash, inv, ar, ar_len, &r);
	if (r.status != PX_OK) {
		st_from(s, &r);
		return;
	}
	if (send_msg(c, ar, ar_len))
		st_set(s, GRPC_STATUS_OK, "%s", "");
}

static void find_missing_blobs(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest *req = request;
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse resp =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_RESPONSE__INIT;
	px_result r;
	int64_t length;

	px_count_request(c->g->p);
	if (!digest_function_ok(req->digest_function, s))
		goto out;
	resp.missing_blob_digests = calloc(req->n_blob_digests ? req->n_blob_digests : 1, sizeof(void *));
	if (!resp.missing_blob_digests) {
		st_set(s, GRPC_STATUS_INTERNAL, "topfetch proxy: out of memory");
		goto out;
	}
	for (size_t i = 0; i < req->n_blob_digests; i++) {
		Build__Bazel__Remote__Execution__V2__Digest *d = req->blob_digests[i];
		if (!digest_ok(d, "blob_digests", s))
			goto out;
		if (d->size_bytes == 0)
			continue; /* the empty blob always exists */
		px_head(c->g->p, TF_AREA_CAS, d->hash, &length, &r);
		if (r.status == PX_NOT_FOUND) {
			resp.missing_blob_digests[resp.n_missing_blob_digests++] = d;
		} else if (r.status != PX_OK) {
			st_from(s, &r);
			goto out;
		}
	}
	if (send_packed(c, &resp.base, s))
		st_set(s, GRPC_STATUS_OK, "%s", "");
out:
	free(resp.missing_blob_digests);
}

/* A CAS blob whole into buf (its expected size): PX_OK or why not. */
static void read_whole(px_proxy *p, const char *key, int64_t size, uint8_t *buf, px_result *r)
{
	int64_t length, got = 0;
	px_get *g = px_cas_get(p, key, &length, r);
	ssize_t n;

	if (!g)
		return;
	if (length >= 0 && length != size) {
		r->status = PX_NOT_FOUND;
		snprintf(r->message, sizeof(r->message), "cas/%s has %lld bytes upstream, not %lld", key,
			 (long long)length, (long long)size);
		px_get_free(g);
		return;
	}
	/* One byte of room past the size: a longer blob shows as n > 0 there. */
	while ((n = px_get_read(g, buf + got, (size_t)(size - got) + 1)) > 0 && got + n <= size)
		got += n;
	px_get_free(g);
	if (n != 0 || got != size) {
		r->status = n < 0 ? PX_UPSTREAM : PX_NOT_FOUND;
		snprintf(r->message, sizeof(r->message), "cas/%s: %s", key,
			 n < 0 ? "the upstream transfer failed or sent other bytes" : "its size differs from the digest's");
	}
}

/* A batch response's n per-blob responses (each size bytes), their
 * statuses and the pointer array; false (s set) out of memory. */
static bool batch_alloc(size_t n, size_t size, void **rs, Google__Rpc__Status **sts, void ***ptrs, gstatus *s)
{
	*rs = calloc(n + 1, size);
	*sts = calloc(n + 1, sizeof(**sts));
	*ptrs = calloc(n + 1, sizeof(void *));
	if (*rs && *sts && *ptrs)
		return true;
	st_set(s, GRPC_STATUS_INTERNAL, "topfetch proxy: out of memory");
	return false;
}

static void batch_read_blobs(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest *req = request;
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse resp =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__INIT;
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *rs = NULL;
	Google__Rpc__Status *sts = NULL;
	int64_t total = 0;
	px_result r;

	px_count_request(c->g->p);
	if (!digest_function_ok(req->digest_function, s))
		goto out;
	for (size_t i = 0; i < req->n_digests; i++) {
		if (!digest_ok(req->digests[i], "digests", s))
			goto out;
		total += req->digests[i]->size_bytes;
		if (total > BATCH_MAX) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT,
			       "the blobs asked for add up to more than %lld bytes (max_batch_total_size_bytes); read the "
			       "larger ones with ByteStream.Read", (long long)BATCH_MAX);
			goto out;
		}
	}
	if (!batch_alloc(req->n_digests, sizeof(*rs), (void **)&rs, &sts, (void ***)&resp.responses, s))
		goto out;
	for (size_t i = 0; i < req->n_digests; i++) {
		Build__Bazel__Remote__Execution__V2__Digest *d = req->digests[i];
		build__bazel__remote__execution__v2__batch_read_blobs_response__response__init(&rs[i]);
		google__rpc__status__init(&sts[i]);
		rs[i].digest = d;
		rs[i].status = &sts[i];
		resp.responses[resp.n_responses++] = &rs[i];
		rs[i].data.data = malloc((size_t)d->size_bytes + 1);
		if (!rs[i].data.data) {
			st_set(s, GRPC_STATUS_INTERNAL, "topfetch proxy: out of memory");
			goto out;
		}
		if (d->size_bytes == 0)
			continue;
		read_whole(c->g->p, d->hash, d->size_bytes, rs[i].data.data, &r);
		if (r.status == PX_OK) {
			rs[i].data.len = (size_t)d->size_bytes;
		} else {
			sts[i].code = (int32_t)code_of(r.status);
			sts[i].message = r.message[0] ? strdup(r.message) : NULL;
		}
	}
	if (send_packed(c, &resp.base, s))
		st_set(s, GRPC_STATUS_OK, "%s", "");
out:
	for (size_t i = 0; i < resp.n_responses; i++) {
		free(rs[i].data.data);
		if (sts[i].message != protobuf_c_empty_string)
			free(sts[i].message);
	}
	free(rs);
	free(sts);
	free(resp.responses);
}

static void batch_update_blobs(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest *req = request;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse resp =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_RESPONSE__INIT;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response *rs = NULL;
	Google__Rpc__Status *sts = NULL;
	px_result r;

	px_count_request(c->g->p);
	if (!digest_function_ok(req->digest_function, s))
		goto out;
	if (!batch_alloc(req->n_requests, sizeof(*rs), (void **)&rs, &sts, (void ***)&resp.responses, s))
		goto out;
	for (size_t i = 0; i < req->n_requests; i++) {
		Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *q = req->requests[i];
		gstatus bs = { .code = GRPC_STATUS_OK };
		build__bazel__remote__execution__v2__batch_update_blobs_response__response__init(&rs[i]);
		google__rpc__status__init(&sts[i]);
		rs[i].digest = q->digest;
		rs[i].status = &sts[i];
		resp.responses[resp.n_responses++] = &rs[i];
		if (!digest_ok(q->digest, "requests.digest", &bs)) {
		} else if (q->compressor != BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__IDENTITY) {
			st_set(&bs, GRPC_STATUS_INVALID_ARGUMENT, "compressor %d is not supported (none is advertised)",
			       (int)q->compressor);
		} else if ((int64_t)q->data.len != q->digest->size_bytes) {
			st_set(&bs, GRPC_STATUS_INVALID_ARGUMENT, "cas/%s: %zu bytes of data for a digest of %lld bytes; not stored",
			       q->digest->hash, q->data.len, (long long)q->digest->size_bytes);
		} else {
			put_whole(c->g->p, TF_AREA_CAS, q->digest->hash, NULL, q->data.data, q->data.len, &r);
			if (r.status != PX_OK)
				st_from(&bs, &r);
		}
		sts[i].code = (int32_t)bs.code;
		sts[i].message = bs.code != GRPC_STATUS_OK ? strdup(bs.message) : NULL;
		if (bs.code == GRPC_STATUS_INVALID_ARGUMENT)
			px_count_refused(c->g->p);
	}
	if (send_packed(c, &resp.base, s))
		st_set(s, GRPC_STATUS_OK, "%s", "");
out:
	for (size_t i = 0; i < resp.n_responses; i++)
		free(sts[i].message);
	free(rs);
	free(sts);
	free(resp.responses);
}

/* ---- ByteStream ------------------------------------------------------------------------- */

int px_grpc_parse_resource(const char *name, bool upload, char hash[TF_HASH_HEX_LEN + 1], int64_t *size)
{
	const char *b = NULL, *q, *h;
	char *end;
	long long v;

	/* [instance/]blobs/HASH/SIZE or [instance/]uploads/UUID/blobs/HASH/SIZE[/anything]:
	 * the last "blobs" segment followed by a hash and a size. */
	for (q = name; (q = strstr(q, "blobs/")); q++)
		if (q == name || q[-1] == '/')
			b = q;
	if (!b || (size_t)(b - name) > BLOB_PREFIX_MAX)
		return -EINVAL;
	if (upload) {
		/* ".../uploads/UUID/" right before it. */
		const char *u = b - 1, *uu;
		if (b == name)
			return -EINVAL;
		while (u > name && u[-1] != '/')
			u--;
		uu = u;
		if (uu - name < 8 || memcmp(uu - 8, "uploads/", 8) || (uu - 8 != name && uu[-9] != '/') || u == b - 1)
			return -EINVAL;
	} else if (b != name && (b - name < 16 ? false : !memcmp(b - 16, "compressed-blobs", 16))) {
		return -EINVAL;
	}
	h = b + 6;
	if (!tf__is_sha256_hex(h, TF_HASH_HEX_LEN) || h[TF_HASH_HEX_LEN] != '/')
		return -EINVAL;
	q = h + TF_HASH_HEX_LEN + 1;
	if (*q < '0' || *q > '9')
		return -EINVAL;
	errno = 0;
	v = strtoll(q, &end, 10);
	if (errno || v < 0 || v > TF__MAX_BLOB_SIZE || (*end && (!upload || *end != '/')))
		return -EINVAL;
	memcpy(hash, h, TF_HASH_HEX_LEN);
	hash[TF_HASH_HEX_LEN] = '\0';
	*size = v;
	return 0;
}

static void bs_read(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Google__Bytestream__ReadRequest *req = request;
	char hash[TF_HASH_HEX_LEN + 1];
	int64_t size, length, pos = 0, end;
	uint8_t *buf = NULL;
	px_result r;
	px_get *g = NULL;
	ssize_t n;

	px_count_request(c->g->p);
	if (px_grpc_parse_resource(req->resource_name, false, hash, &size) < 0) {
		px_count_refused(c->g->p);
		st_set(s, GRPC_STATUS_INVALID_ARGUMENT,
		       "resource_name '%.200s': want [INSTANCE/]blobs/<64 lowercase hex>/<size>", req->resource_name);
		goto out;
	}
	if (req->read_offset < 0 || req->read_offset > size || req->read_limit < 0) {
		px_count_refused(c->g->p);
		st_set(s, req->read_limit < 0 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_OUT_OF_RANGE,
		       "read_offset %lld / read_limit %lld do not fit a blob of %lld bytes", (long long)req->read_offset,
		       (long long)req->read_limit, (long long)size);
		goto out;
	}
	end = req->read_limit && req->read_limit < size - req->read_offset ? req->read_offset + req->read_limit : size;
	g = px_cas_get(c->g->p, hash, &length, &r);
	if (!g) {
		st_from(s, &r);
		goto out;
	}
	if (length >= 0 && length != size) {
		st_set(s, GRPC_STATUS_NOT_FOUND, "blobs/%s/%lld: the upstream's blob has %lld bytes", hash,
		       (long long)size, (long long)length);
		goto out;
	}
	/* Room for the ReadResponse's tag and length before the data. */
	buf = malloc(READ_CHUNK + 16);
	if (!buf) {
		st_set(s, GRPC_STATUS_INTERNAL, "topfetch proxy: out of memory");
		goto out;
	}
	/* Every byte is read (the last only arrives once the whole blob hashed
	 * to its key); those before read_offset and past the limit are not sent. */
	while ((n = px_get_read(g, buf + 16, READ_CHUNK)) > 0) {
		int64_t from = pos, to = pos + n;
		pos = to;
		if (from < req->read_offset)
			from = req->read_offset;
		if (to > end)
			to = end;
		if (pos > size)
			break;
		if (to > from) {
			size_t len = (size_t)(to - from), k = 0;
			uint8_t hdr[16];
			hdr[k++] = 0x52; /* ReadResponse.data: field 10, length-delimited */
			for (uint64_t v = len; ; v >>= 7) {
				hdr[k++] = (uint8_t)(v & 0x7f) | (v >= 0x80 ? 0x80 : 0);
				if (v < 0x80)
					break;
			}
			uint8_t *at = buf + 16 + (from - (pos - n)) - k;
			memcpy(at, hdr, k);
			if (!send_msg(c, at, k + len)) {
				st_set(s, GRPC_STATUS_CANCELLED, "the client went away");
				goto out;
			}
		}
	}
	if (n < 0) {
		st_set(s, n == -EBADMSG ? GRPC_STATUS_DATA_LOSS : GRPC_STATUS_UNAVAILABLE,
		       "blobs/%s/%lld: %s; the read was cut short", hash, (long long)size,
		       n == -EBADMSG ? "the upstream sent bytes of another hash" : "the upstream transfer failed");
	} else if (pos != size) {
		st_set(s, GRPC_STATUS_NOT_FOUND, "blobs/%s/%lld: the upstream's blob has %s bytes", hash, (long long)size,
		       pos > size ? "more" : "fewer");
	} else {
		st_set(s, GRPC_STATUS_OK, "%s", "");
	}
out:
	free(buf);
	px_get_free(g);
}

int px_grpc_parse_write(const uint8_t *buf, size_t len, px_grpc_write *w, const char **why)
{
	size_t pos = 0;
	pw_field f;
	int r;

	memset(w, 0, sizeof(*w));
	while ((r = pw_next(buf, len, &pos, &f, why)) == 1) {
		if (f.number == 1 && f.wire_type == PW_LEN) {
			w->name = (const char *)f.data;
			w->name_len = (size_t)f.value;
		} else if (f.number == 2 && f.wire_type == PW_VARINT) {
			w->offset = (int64_t)f.value;
		} else if (f.number == 3 && f.wire_type == PW_VARINT) {
			w->finish = f.value != 0;
		} else if (f.number == 10 && f.wire_type == PW_LEN) {
			w->data = f.data;
			w->len = (size_t)f.value;
		} else if (f.number <= 3 || f.number == 10) {
			*why = "a field of the wrong wire type";
			return -EBADMSG;
		}
	}
	return r < 0 ? -EBADMSG : 0;
}

static void bs_write(gcall *c, gstatus *s)
{
	char hash[TF_HASH_HEX_LEN + 1], name[BLOB_PREFIX_MAX + 200];
	grpc_slice raw;
	px_put *u = NULL;
	int64_t size = 0, got = 0;
	bool finished = false;
	const char *why = "";
	px_result r;
	px_grpc_write w;
	int k;

	px_count_request(c->g->p);
	while ((k = recv_msg(c, &raw)) == 1) {
		if (px_grpc_parse_write(GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), &w, &why) < 0) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "a WriteRequest does not decode: %s", why);
			goto bad;
		}
		if (finished) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "a WriteRequest came after finish_write");
			goto bad;
		}
		if (!u) {
			if (!w.name || w.name_len >= sizeof(name)) {
				st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "the first WriteRequest names no resource_name%s",
				       w.name ? " that fits" : "");
				goto bad;
			}
			memcpy(name, w.name, w.name_len);
			name[w.name_len] = '\0';
			if (memchr(name, '\0', w.name_len) || px_grpc_parse_resource(name, true, hash, &size) < 0) {
				st_set(s, GRPC_STATUS_INVALID_ARGUMENT,
				       "resource_name '%.200s': want [INSTANCE/]uploads/<uuid>/blobs/<64 lowercase hex>/<size>",
				       name);
				goto bad;
			}
			u = px_put_begin(c->g->p, TF_AREA_CAS, hash, size, &r);
			if (!u) {
				grpc_slice_unref(raw);
				st_from(s, &r);
				return;
			}
		} else if (w.name && (w.name_len != strlen(name) || memcmp(w.name, name, w.name_len))) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "resource_name changed within one Write");
			goto bad;
		}
		if (w.offset != got) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT,
			       "write_offset %lld, but %lld bytes came before (this proxy does not resume uploads: start "
			       "again at 0)", (long long)w.offset, (long long)got);
			goto bad;
		}
		if ((uint64_t)w.len > (uint64_t)(size - got)) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "blobs/%s/%lld: more data than the digest's size; not stored",
			       hash, (long long)size);
			goto bad;
		}
		if (w.len)
			px_put_data(u, w.data, w.len);
		got += (int64_t)w.len;
		finished = w.finish;
		grpc_slice_unref(raw);
	}
	if (k < 0) {
		st_set(s, GRPC_STATUS_CANCELLED, "the client went away before the upload's end; nothing stored");
		goto out;
	}
	if (!u) {
		st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "a Write with no WriteRequest");
		goto out;
	}
	if (!finished) {
		st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "the stream ended without finish_write; nothing stored");
		goto out;
	}
	px_put_end(u, &r);
	if (r.status != PX_OK) {
		st_from(s, &r);
	} else {
		Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
		resp.committed_size = size;
		if (send_packed(c, &resp.base, s))
			st_set(s, GRPC_STATUS_OK, "%s", "");
	}
	goto out;
bad:
	grpc_slice_unref(raw);
	px_count_refused(c->g->p);
out:
	px_put_free(u);
}

static void bs_query_write_status(gcall *c, const void *request, const grpc_slice *raw, gstatus *s)
{
	const Google__Bytestream__QueryWriteStatusRequest *req = request;
	Google__Bytestream__QueryWriteStatusResponse resp = GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_RESPONSE__INIT;
	char hash[TF_HASH_HEX_LEN + 1];
	int64_t size, length;
	px_result r;

	px_count_request(c->g->p);
	if (px_grpc_parse_resource(req->resource_name, true, hash, &size) < 0) {
		px_count_refused(c->g->p);
		st_set(s, GRPC_STATUS_INVALID_ARGUMENT,
		       "resource_name '%.200s': want [INSTANCE/]uploads/<uuid>/blobs/<64 lowercase hex>/<size>",
		       req->resource_name);
		return;
	}
	/* Uploads are not kept half-way: a blob is either stored upstream
	 * (complete) or not at all (start again at 0). */
	px_head(c->g->p, TF_AREA_CAS, hash, &length, &r);
	if (r.status == PX_OK) {
		resp.committed_size = size;
		resp.complete = true;
	} else if (r.status != PX_NOT_FOUND) {
		st_from(s, &r);
		return;
	}
	if (send_packed(c, &resp.base, s))
		st_set(s, GRPC_STATUS_OK, "%s", "");
}

/* ---- the Build Event Service (google.devtools.build.v1.PublishBuildEvent) -----------------
 * Read with the wire walker: only a few fields of each message are used, and
 * the StreamId goes back in the acknowledgement as the client sent it. */

#define BES_PKG "/google.devtools.build.v1.PublishBuildEvent/"

/* The last length-delimited field number num of a message: 1 found, 0 none,
 * -1 the message does not decode. */
static int len_field(const uint8_t *buf, size_t len, uint32_t num, const uint8_t **out, size_t *out_len)
{
	size_t pos = 0;
	pw_field f;
	int r, found = 0;

	while ((r = pw_next(buf, len, &pos, &f, NULL)) == 1)
		if (f.number == num && f.wire_type == PW_LEN) {
			*out = f.data;
			*out_len = (size_t)f.value;
			found = 1;
		}
	return r < 0 ? -1 : found;
}

static int64_t varint_field(const uint8_t *buf, size_t len, uint32_t num)
{
	size_t pos = 0;
	int64_t v = 0;
	pw_field f;

	while (pw_next(buf, len, &pos, &f, NULL) == 1)
		if (f.number == num && f.wire_type == PW_VARINT)
			v = (int64_t)f.value;
	return v;
}

int px_grpc_parse_bes(const uint8_t *m, size_t ml, px_grpc_bes_event *e, char *why, size_t n)
{
	const uint8_t *obe = NULL, *sid = NULL, *ev = NULL, *inv = NULL, *any = NULL, *val = (const uint8_t *)"",
		      *fin = NULL, *type = NULL;
	size_t obel = 0, sidl = 0, evl = 0, invl = 0, anyl = 0, vall = 0, finl = 0, typel = 0;

	memset(e, 0, sizeof(*e));
	if (len_field(m, ml, 4, &obe, &obel) != 1 || len_field(obe, obel, 1, &sid, &sidl) != 1 ||
	    len_field(sid, sidl, 6, &inv, &invl) != 1 || len_field(obe, obel, 3, &ev, &evl) < 0 ||
	    (ev && (len_field(ev, evl, 60, &any, &anyl) < 0 || len_field(ev, evl, 59, &fin, &finl) < 0)) ||
	    (any && (len_field(any, anyl, 2, &val, &vall) < 0 || len_field(any, anyl, 1, &type, &typel) < 0))) {
		snprintf(why, n, "a PublishBuildToolEventStreamRequest without "
				 "ordered_build_event.stream_id.invocation_id, or one that does not decode");
		return -EINVAL;
	}
	if (any && (typel < 30 || memcmp(type + typel - 30, "/build_event_stream.BuildEvent", 30) != 0)) {
		snprintf(why, n, "bazel_event of type '%.*s': want build_event_stream.BuildEvent",
			 (int)(typel > 200 ? 200 : typel), type ? (const char *)type : "");
		return -EINVAL;
	}
	if (invl > PX_BES_ID_MAX || !px_bes_id_ok((const char *)inv, invl)) {
		snprintf(why, n, "invocation id '%.*s': want 1 to %d letters, digits, '-', '_' or '.'",
			 (int)(invl > 80 ? 80 : invl), (const char *)inv, PX_BES_ID_MAX);
		return -EINVAL;
	}
	memcpy(e->id, inv, invl);
	e->id[invl] = '\0';
	e->stream_id = sid;
	e->stream_id_len = sidl;
	e->seq = varint_field(obe, obel, 2);
	e->event = any ? val : (const uint8_t *)"";
	e->event_len = any ? vall : 0;
	e->finished = fin != NULL;
	return 0;
}

static void bes_lifecycle(gcall *c, gstatus *s)
{
	grpc_slice raw;
	const uint8_t *x;
	size_t xl;
	int r = recv_msg(c, &raw);

	if (r <= 0) {
		st_set(s, r == 0 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED, "no PublishLifecycleEventRequest");
		return;
	}
	/* Lifecycle events (enqueued, attempt started/finished, finished) carry
	 * nothing the session needs: acknowledged with an Empty. */
	if (len_field(GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), 2, &x, &xl) < 0)
		st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "the request is not a valid PublishLifecycleEventRequest");
	else if (send_msg(c, "", 0))
		st_set(s, GRPC_STATUS_OK, "%s", "");
	grpc_slice_unref(raw);
}

static void bes_stream(gcall *c, gstatus *s)
{
	char id[PX_BES_ID_MAX + 1] = "", why[PX_MESSAGE_MAX];
	int64_t acked = 0;
	char attached[PX_BES_ID_MAX + 1] = ""; /* the invocation of its first event */
	bool finished = false;
	grpc_slice raw;
	int k;

	st_set(s, GRPC_STATUS_OK, "%s", "");
	while ((k = recv_msg(c, &raw)) == 1) {
		uint8_t ack[16 + 2 * PX_BES_ID_MAX + 1024];
		px_grpc_bes_event e;
		size_t n = 0, sidl;
		int64_t seq;
		int r;

		if (px_grpc_parse_bes(GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), &e, why, sizeof(why)) < 0) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
			grpc_slice_unref(raw);
			break;
		}
		sidl = e.stream_id_len;
		seq = e.seq;
		memcpy(id, e.id, sizeof(id));
		r = px_bes_post(c->g->bes, id, seq, e.event, e.event_len, e.finished, why, sizeof(why));
		if (r < 0) {
			st_set(s, r == -EINVAL ? GRPC_STATUS_INVALID_ARGUMENT
				  : r == -ESHUTDOWN ? GRPC_STATUS_UNAVAILABLE
				  : r == -ESTALE ? GRPC_STATUS_FAILED_PRECONDITION : GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", why);
			grpc_slice_unref(raw);
			break;
		}
		if (!attached[0]) { /* while this stream is open, its invocation is not idle */
			memcpy(attached, id, sizeof(attached));
			px_bes_stream(c->g->bes, attached, 1);
		}
		/* PublishBuildToolEventStreamResponse { stream_id = 1; sequence_number = 2; } */
		if (sidl > sizeof(ack) - 32) {
			st_set(s, GRPC_STATUS_INVALID_ARGUMENT, "a stream_id of %zu bytes", sidl);
			grpc_slice_unref(raw);
			break;
		}
		ack[n++] = 0x0a;
		for (uint64_t v = sidl;; v >>= 7) {
			ack[n++] = (uint8_t)(v & 0x7f) | (v >= 0x80 ? 0x80 : 0);
			if (v < 0x80)
				break;
		}
		memcpy(ack + n, e.stream_id, sidl);
		n += sidl;
		ack[n++] = 0x10;
		for (uint64_t v = (uint64_t)seq;; v >>= 7) {
			ack[n++] = (uint8_t)(v & 0x7f) | (v >= 0x80 ? 0x80 : 0);
			if (v < 0x80)
				break;
		}
		grpc_slice_unref(raw);
		if (!send_msg(c, ack, n)) {
			k = -1;
			break;
		}
		acked = seq;
		finished = finished || e.finished;
	}
	if (k < 0)
		st_set(s, GRPC_STATUS_CANCELLED, "the stream broke; the events acknowledged so far are kept");
	/* (A connection cut may also look like the end of the client's stream:
	 * an end before component_stream_finished is a break too.) */
	if ((k < 0 || !finished) && attached[0]) /* (a stream refused at its first event broke nothing) */
		px_bes_broken(c->g->bes, attached, acked);
	if (attached[0])
		px_bes_stream(c->g->bes, attached, -1);
}

/* ---- dispatch by method name -------------------------------------------------------------- */

/* Unary methods get their request checked and unpacked here (desc); the
 * others read their stream themselves. */
typedef void serve_unary(gcall *c, const void *request, const grpc_slice *raw, gstatus *s);
typedef void serve_stream(gcall *c, gstatus *s);

static const struct {
	const char *method;
	const ProtobufCMessageDescriptor *desc;
	serve_unary *unary;
	serve_stream *stream;
	bool bes;
} methods[] = {
	{ RE_PKG "Capabilities/GetCapabilities", &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
	  get_capabilities, NULL, false },
	{ RE_PKG "ActionCache/GetActionResult", &build__bazel__remote__execution__v2__get_action_result_request__descriptor,
	  get_action_result, NULL, false },
	{ RE_PKG "ActionCache/UpdateActionResult",
	  &build__bazel__remote__execution__v2__update_action_result_request__descriptor, update_action_result, NULL, false },
	{ RE_PKG "ContentAddressableStorage/FindMissingBlobs",
	  &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor, find_missing_blobs, NULL, false },
	{ RE_PKG "ContentAddressableStorage/BatchReadBlobs",
	  &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor, batch_read_blobs, NULL, false },
	{ RE_PKG "ContentAddressableStorage/BatchUpdateBlobs",
	  &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor, batch_update_blobs, NULL, false },
	{ "/google.bytestream.ByteStream/Read", &google__bytestream__read_request__descriptor, bs_read, NULL, false },
	{ "/google.bytestream.ByteStream/Write", NULL, NULL, bs_write, false },
	{ "/google.bytestream.ByteStream/QueryWriteStatus", &google__bytestream__query_write_status_request__descriptor,
	  bs_query_write_status, NULL, false },
	{ BES_PKG "PublishLifecycleEvent", NULL, NULL, bes_lifecycle, true },
	{ BES_PKG "PublishBuildToolEventStream", NULL, NULL, bes_stream, true },
};

int px_grpc_check_unary(const char *method, const uint8_t *buf, size_t len, char *why, size_t n)
{
	ProtobufCMessage *m;

	for (size_t i = 0; i < sizeof(methods) / sizeof(*methods); i++) {
		if (!methods[i].desc || strcmp(methods[i].method, method))
			continue;
		if (!(m = decode_unary(methods[i].desc, buf, len, why, n)))
			return -EINVAL;
		protobuf_c_message_free_unpacked(m, NULL);
		return 0;
	}
	return -ENOENT;
}

/* The unary methods' names, for the fuzz harness: NULL past the last. */
const char *px_grpc_unary_method(size_t i)
{
	for (size_t k = 0; k < sizeof(methods) / sizeof(*methods); k++)
		if (methods[k].desc && i-- == 0)
			return methods[k].method;
	return NULL;
}

static void call_free(gcall *c)
{
	grpc_event ev;

	if (c->call)
		grpc_call_unref(c->call);
	if (c->cq) {
		grpc_completion_queue_shutdown(c->cq);
		do
			ev = grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		while (ev.type != GRPC_QUEUE_SHUTDOWN);
		grpc_completion_queue_destroy(c->cq);
	}
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	free(c);
}

static void *call_main(void *arg)
{
	gcall *c = arg;
	px_grpc *g = c->g;
	grpc_op op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER };
	gstatus s = { .code = GRPC_STATUS_INTERNAL };
	const grpc_slice m = c->details.method;
	size_t i;

	op.data.recv_close_on_server.cancelled = &c->cancelled;
	c->closed = grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL) == GRPC_CALL_OK;
	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (GRPC_SLICE_LENGTH(m) == strlen(methods[i].method) &&
		    !memcmp(GRPC_SLICE_START_PTR(m), methods[i].method, GRPC_SLICE_LENGTH(m)))
			break;
	if (i < sizeof(methods) / sizeof(methods[0]) && (!methods[i].bes || g->bes)) {
		if (methods[i].stream) {
			methods[i].stream(c, &s);
		} else {
			grpc_slice raw;
			ProtobufCMessage *req = unary_request(c, methods[i].desc, &raw, &s);
			if (req) {
				methods[i].unary(c, req, &raw, &s);
				protobuf_c_message_free_unpacked(req, NULL);
				grpc_slice_unref(raw);
			}
		}
	} else {
		px_count_request(g->p);
		px_count_refused(g->p);
		st_set(&s, GRPC_STATUS_UNIMPLEMENTED,
		       "%.*s is not served here: topfetch proxy serves the REAPI cache (Capabilities, ActionCache, "
		       "ContentAddressableStorage without GetTree) and ByteStream",
		       (int)(GRPC_SLICE_LENGTH(m) > 200 ? 200 : GRPC_SLICE_LENGTH(m)), (const char *)GRPC_SLICE_START_PTR(m));
	}
	send_status(c, &s);
	if (c->closed)
		grpc_completion_queue_pluck(c->cq, &c->tag_close, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	call_free(c);
	pthread_mutex_lock(&g->mu);
	g->active--;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* Asks the core for the next call (once fewer than MAX_CALLS run). false
 * when the server no longer takes calls. */
static bool request_next(px_grpc *g)
{
	gcall *c = calloc(1, sizeof(*c));

	if (!c)
		return false;
	c->g = g;
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	if (!c->cq || grpc_server_request_call(g->srv, &c->call, &c->details, &c->md, c->cq, g->cq, c) != GRPC_CALL_OK) {
		call_free(c);
		return false;
	}
	return true;
}

static void *acceptor_main(void *arg)
{
	px_grpc *g = arg;
	pthread_attr_t attr;
	grpc_event ev;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, CALL_STACK_BYTES);
	request_next(g);
	for (;;) {
		ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (ev.tag == &g->shutdown_tag) {
			grpc_completion_queue_shutdown(g->cq);
			continue;
		}
		gcall *c = ev.tag;
		pthread_t t;
		if (!ev.success) { /* the server is shutting down */
			call_free(c);
			continue;
		}
		pthread_mutex_lock(&g->mu);
		g->active++;
		pthread_mutex_unlock(&g->mu);
		if (pthread_create(&t, &attr, call_main, c) != 0) {
			grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
						     "topfetch proxy: cannot start a thread for this call", NULL);
			call_free(c);
			pthread_mutex_lock(&g->mu);
			g->active--;
			pthread_mutex_unlock(&g->mu);
		}
		pthread_mutex_lock(&g->mu);
		while (g->active >= MAX_CALLS && !g->shutdown_sent)
			pthread_cond_wait(&g->cv, &g->mu);
		pthread_mutex_unlock(&g->mu);
		request_next(g);
	}
	pthread_attr_destroy(&attr);
	return NULL;
}

/* ---- the server -------------------------------------------------------------------------- */

/* ---- TLS (--listen=grpcs://) ---------------------------------------------------------------- */

#define PEM_MAX ((long)1 << 20) /* a certificate chain, a key or a CA bundle */

/* The file's text (malloc'd), or NULL with why. */
static char *read_pem(const char *flag, const char *path, char *why, size_t n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len = -1;

	if (!f) {
		snprintf(why, n, "%s=%s: cannot read it: %s", flag, path, strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0)
		len = ftell(f);
	if (len <= 0 || len > PEM_MAX || fseek(f, 0, SEEK_SET) != 0 || !(buf = malloc((size_t)len + 1)) ||
	    fread(buf, 1, (size_t)len, f) != (size_t)len) {
		snprintf(why, n, "%s=%s: %s", flag, path,
			 len == 0 ? "the file is empty" : len > PEM_MAX ? "over 1 MiB: not a PEM file" : "cannot read it");
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
}

static void ssl_why(char *why, size_t n, const char *flag, const char *path, const char *what)
{
	char e[256] = "";
	unsigned long code = ERR_peek_last_error();

	if (code)
		ERR_error_string_n(code, e, sizeof(e));
	ERR_clear_error();
	snprintf(why, n, "%s=%s: %s%s%s", flag, path, what, e[0] ? " (" : "", e[0] ? e : "");
	if (e[0])
		strncat(why, ")", n - strlen(why) - 1);
}

/* The first certificate in PEM text, or NULL. */
static X509 *pem_cert(const char *text)
{
	BIO *bio = BIO_new_mem_buf(text, -1);
	X509 *c = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	return c;
}

int px_grpc_tls_load(px_grpc_tls *t, const char *cert_file, const char *key_file, const char *ca_file, char *why,
		     size_t n)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	BIO *bio;
	int r = -EINVAL;

	memset(t, 0, sizeof(*t));
	if (!(t->cert = read_pem("--tls_cert_file", cert_file, why, n)) ||
	    !(t->key = read_pem("--tls_key_file", key_file, why, n)) ||
	    (ca_file && !(t->ca = read_pem("--tls_ca_file", ca_file, why, n))))
		goto out;
	if (!(cert = pem_cert(t->cert))) {
		ssl_why(why, n, "--tls_cert_file", cert_file, "no PEM certificate in it");
		goto out;
	}
	if ((bio = BIO_new_mem_buf(t->key, -1))) {
		key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
		BIO_free(bio);
	}
	if (!key) {
		ssl_why(why, n, "--tls_key_file", key_file, "no unencrypted PEM private key in it");
		goto out;
	}
	if (X509_check_private_key(cert, key) != 1) {
		ssl_why(why, n, "--tls_key_file", key_file, "this key does not belong to the --tls_cert_file certificate");
		goto out;
	}
	if (t->ca) {
		X509 *ca = pem_cert(t->ca);
		if (!ca) {
			ssl_why(why, n, "--tls_ca_file", ca_file, "no PEM certificate in it");
			goto out;
		}
		X509_free(ca);
	}
	r = 0;
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	if (r < 0)
		px_grpc_tls_fini(t);
	return r;
}

void px_grpc_tls_fini(px_grpc_tls *t)
{
	free(t->cert);
	free(t->key);
	free(t->ca);
	memset(t, 0, sizeof(*t));
}

px_grpc *px_grpc_start(px_proxy *p, px_bes *bes, const struct sockaddr_storage *ss, const px_grpc_tls *tls)
{
	px_grpc *g = calloc(1, sizeof(*g));
	/* The receive limit; and a fixed window per stream rather than one that
	 * grows with the bandwidth-delay product (unbounded: what a fast client
	 * may send ahead is what the core holds for it). */
	grpc_arg arg[] = {
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = RECV_MAX },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0 },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, .value.integer = WINDOW },
	};
	grpc_channel_args args = { .num_args = sizeof(arg) / sizeof(arg[0]), .args = arg };
	grpc_server_credentials *creds;
	char host[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN + 16];
	int port;

	if (!g)
		return NULL;
	g->p = p;
	g->bes = bes;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(addr, sizeof(addr), "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(addr, sizeof(addr), "%s:%u", host, (unsigned)ntohs(a->sin_port));
	}
	grpc_init();
	g->srv = grpc_server_create(&args, NULL);
	g->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(g->srv, g->cq, NULL);
	if (tls) {
		grpc_ssl_pem_key_cert_pair pair = { .private_key = tls->key, .cert_chain = tls->cert };
		creds = grpc_ssl_server_credentials_create_ex(
			tls->ca, &pair, 1,
			tls->ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
			NULL);
	} else {
		creds = grpc_insecure_server_credentials_create();
	}
	port = grpc_server_add_http2_port(g->srv, addr, creds);
	grpc_server_credentials_release(creds);
	if (port <= 0) {
		grpc_server_destroy(g->srv);
		g->srv = NULL;
		px_grpc_stop(g);
		return NULL;
	}
	g->port = (unsigned)port;
	grpc_server_start(g->srv);
	if (pthread_create(&g->acceptor, NULL, acceptor_main, g) != 0) {
		px_grpc_stop(g);
		return NULL;
	}
	g->acceptor_started = true;
	return g;
}

unsigned px_grpc_port(const px_grpc *g)
{
	return g->port;
}

int px_grpc_active(const px_grpc *g)
{
	px_grpc *m = (px_grpc *)g;
	int n;

	pthread_mutex_lock(&m->mu);
	n = m->active;
	pthread_mutex_unlock(&m->mu);
	return n;
}

void px_grpc_quiesce(px_grpc *g)
{
	pthread_mutex_lock(&g->mu);
	if (!g->shutdown_sent && g->srv) {
		g->shutdown_sent = true;
		/* Stops listening; calls in flight go on. */
		grpc_server_shutdown_and_notify(g->srv, g->cq, &g->shutdown_tag);
	}
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

void px_grpc_stop(px_grpc *g)
{
	if (!g)
		return;
	if (g->srv) {
		px_grpc_quiesce(g);
		grpc_server_cancel_all_calls(g->srv);
	}
	pthread_mutex_lock(&g->mu);
	while (g->active > 0)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
	if (g->acceptor_started)
		pthread_join(g->acceptor, NULL);
	else if (g->cq)
		grpc_completion_queue_shutdown(g->cq);
	if (g->srv)
		grpc_server_destroy(g->srv);
	if (g->cq) {
		if (!g->acceptor_started) {
			grpc_event ev;
			do
				ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
			while (ev.type != GRPC_QUEUE_SHUTDOWN);
		}
		grpc_completion_queue_destroy(g->cq);
	}
	grpc_shutdown_blocking();
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	free(g);
}
