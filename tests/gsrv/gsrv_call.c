/* A gRPC client for the tests of topfetch's gRPC front end, made with the
 * gRPC C core (a peer that is not ours):
 *
 *   gsrv_call HOST:PORT METHOD OUT [MSGFILE...]
 *
 * calls METHOD (/package.Service/Method), sends each MSGFILE's bytes as one
 * message, half-closes, writes every response message to OUT.0, OUT.1, ...
 * and prints "status CODE MESSAGE" (and "messages N") on stdout. With
 * TF_GSRV_READ=1 the response messages are ByteStream ReadResponses and OUT
 * gets their data, concatenated. With TF_GSRV_CA=PEM the channel is TLS
 * trusting that CA (grpcs://), and with TF_GSRV_CERT and TF_GSRV_KEY it
 * presents that client certificate. Exit 0 once the call ended with a
 * status, 2 on a usage or setup error. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "proto/wire.h"

static grpc_completion_queue *cq;
static char tag;

static int run(grpc_call *call, grpc_op *ops, size_t n)
{
	grpc_event ev;

	if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK)
		return 0;
	ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static grpc_slice read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 16, len = 0, n;
	char *buf = malloc(cap);
	grpc_slice s;

	if (!f || !buf) {
		fprintf(stderr, "gsrv_call: cannot read %s\n", path);
		exit(2);
	}
	while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				exit(2);
		}
	}
	fclose(f);
	s = grpc_slice_from_copied_buffer(buf, len);
	free(buf);
	return s;
}

/* A PEM file as a string (malloc'd). */
static char *pem(const char *path)
{
	grpc_slice s = read_file(path);
	char *t = malloc(GRPC_SLICE_LENGTH(s) + 1);

	if (!t)
		exit(2);
	memcpy(t, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
	t[GRPC_SLICE_LENGTH(s)] = '\0';
	grpc_slice_unref(s);
	return t;
}

/* ReadResponse.data (field 10) of one message, appended to f. */
static void write_read_data(FILE *f, const uint8_t *p, size_t len)
{
	size_t pos = 0;
	pw_field fl;

	while (pw_next(p, len, &pos, &fl, NULL) == 1)
		if (fl.number == 10 && fl.wire_type == PW_LEN)
			fwrite(fl.data, 1, (size_t)fl.value, f);
}

int main(int argc, char **argv)
{
	grpc_arg arg = { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
			 .value.integer = -1 };
	grpc_channel_args args = { .num_args = 1, .args = &arg };
	grpc_metadata_array init_md, trail_md;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	const char *err_str = NULL;
	bool read_mode = getenv("TF_GSRV_READ") && !strcmp(getenv("TF_GSRV_READ"), "1");
	grpc_channel_credentials *creds;
	grpc_channel *ch;
	grpc_call *call;
	grpc_slice method;
	grpc_op op[2];
	char path[4096];
	FILE *rf = NULL;
	int nmsg = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: gsrv_call HOST:PORT METHOD OUT [MSGFILE...]\n");
		return 2;
	}
	grpc_init();
	cq = grpc_completion_queue_create_for_pluck(NULL);
	if (getenv("TF_GSRV_CA")) {
		char *ca = pem(getenv("TF_GSRV_CA")), *cert = NULL, *key = NULL;
		bool mine = getenv("TF_GSRV_CERT") && getenv("TF_GSRV_KEY");
		if (mine) {
			cert = pem(getenv("TF_GSRV_CERT"));
			key = pem(getenv("TF_GSRV_KEY"));
		}
		grpc_ssl_pem_key_cert_pair pair = { .private_key = key, .cert_chain = cert };
		creds = grpc_ssl_credentials_create(ca, mine ? &pair : NULL, NULL, NULL); /* copies them */
		free(ca);
		free(cert);
		free(key);
	} else {
		creds = grpc_insecure_credentials_create();
	}
	ch = grpc_channel_create(argv[1], creds, &args);
	grpc_channel_credentials_release(creds);
	method = grpc_slice_from_copied_string(argv[2]);
	call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
					gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(120, GPR_TIMESPAN)),
					NULL);
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trail_md);
	memset(op, 0, sizeof(op));
	op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	run(call, op, 1);
	for (int i = 4; i < argc; i++) {
		grpc_slice s = read_file(argv[i]);
		grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
		grpc_slice_unref(s);
		memset(op, 0, sizeof(op));
		op[0].op = GRPC_OP_SEND_MESSAGE;
		op[0].data.send_message.send_message = bb;
		int ok = run(call, op, 1);
		grpc_byte_buffer_destroy(bb);
		if (!ok)
			break; /* the server ended the call early: its status says why */
	}
	memset(op, 0, sizeof(op));
	op[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	run(call, op, 1);
	memset(op, 0, sizeof(op));
	op[0].op = GRPC_OP_RECV_INITIAL_METADATA;
	op[0].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	run(call, op, 1);
	if (read_mode) {
		rf = fopen(argv[3], "wb");
		if (!rf)
			return 2;
	}
	for (;;) {
		grpc_byte_buffer *bb = NULL;
		grpc_byte_buffer_reader rd;
		grpc_slice all;
		memset(op, 0, sizeof(op));
		op[0].op = GRPC_OP_RECV_MESSAGE;
		op[0].data.recv_message.recv_message = &bb;
		if (!run(call, op, 1) || !bb)
			break;
		grpc_byte_buffer_reader_init(&rd, bb);
		all = grpc_byte_buffer_reader_readall(&rd);
		grpc_byte_buffer_reader_destroy(&rd);
		grpc_byte_buffer_destroy(bb);
		if (read_mode) {
			write_read_data(rf, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
		} else {
			FILE *f;
			snprintf(path, sizeof(path), "%s.%d", argv[3], nmsg);
			f = fopen(path, "wb");
			if (!f)
				return 2;
			fwrite(GRPC_SLICE_START_PTR(all), 1, GRPC_SLICE_LENGTH(all), f);
			fclose(f);
		}
		grpc_slice_unref(all);
		nmsg++;
	}
	if (rf)
		fclose(rf);
	memset(op, 0, sizeof(op));
	op[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	op[0].data.recv_status_on_client.trailing_metadata = &trail_md;
	op[0].data.recv_status_on_client.status = &status;
	op[0].data.recv_status_on_client.status_details = &details;
	op[0].data.recv_status_on_client.error_string = &err_str;
	run(call, op, 1);
	printf("messages %d\nstatus %d %.*s\n", nmsg, (int)status, (int)GRPC_SLICE_LENGTH(details),
	       (const char *)GRPC_SLICE_START_PTR(details));
	fflush(stdout);
	gpr_free((void *)err_str);
	grpc_slice_unref(details);
	grpc_slice_unref(method);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trail_md);
	grpc_call_unref(call);
	grpc_channel_destroy(ch);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	grpc_shutdown_blocking();
	return 0;
}
