/* bep_convert FORMAT IN OUT: reads the BEP binary stream IN with ev_reader
 * and writes it again with ev_writer as FORMAT ("json" or "binary") to OUT
 * ("-" for stdout). Used by the JSON test; exits 1 with the error message
 * on any failure, including an incomplete input stream. */
#include "ev_test_util.h"

int main(int argc, char **argv)
{
	tf_error err = { 0 };
	ev_reader *r;
	ev_writer *w;
	ev_event *ev;
	ev_format fmt;
	int rc;

	if (argc != 4 || (strcmp(argv[1], "json") != 0 && strcmp(argv[1], "binary") != 0)) {
		fprintf(stderr, "usage: bep_convert json|binary IN OUT\n");
		return 2;
	}
	fmt = strcmp(argv[1], "json") == 0 ? EV_FORMAT_JSON : EV_FORMAT_BINARY;
	r = ev_reader_new(argv[2], NULL, &err);
	if (!r)
		goto fail;
	w = strcmp(argv[3], "-") == 0 ? ev_writer_new_fd(1, "stdout", fmt, &err)
				      : ev_writer_new(argv[3], fmt, &err);
	if (!w)
		goto fail;
	while ((rc = ev_reader_next(r, &ev, &err)) == 1) {
		rc = ev_writer_write(w, ev->msg, &err);
		ev_event_unref(ev);
		if (rc < 0)
			goto fail;
	}
	if (rc < 0 || ev_reader_finish(r, &err) < 0 || ev_writer_close(w, &err) < 0)
		goto fail;
	ev_writer_free(w);
	ev_reader_free(r);
	return 0;
fail:
	fprintf(stderr, "bep_convert: %s\n", err.message);
	return 1;
}
