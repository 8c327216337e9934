/* Executed actions (checker/action.c): ActionResults, good and hostile,
 * hand-encoded byte by byte, through chk_action_decode and chk_action_each.
 * Each refusal is compared with the whole message the user sees (the wire
 * errors name the field path and byte offset; the checks name the action,
 * the output's index and path), and each accepted message with every
 * output reported, in order. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker/checker.h"
#include "tf_test.h"

#define KEY "1111111111111111111111111111111111111111111111111111111111111111"
#define H1 "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define H2 "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"
#define HE "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A message being encoded: bytes, and sub-messages nested with begin/end
 * (the length is patched in as one byte, so a sub-message stays < 128). */
typedef struct enc {
	unsigned char b[4096];
	size_t n;
	size_t open[8];
	int depth;
} enc;

static void put(enc *e, const void *p, size_t n)
{
	memcpy(e->b + e->n, p, n);
	e->n += n;
}

static void byte(enc *e, unsigned v)
{
	e->b[e->n++] = (unsigned char)v;
}

static void varint(enc *e, uint64_t v)
{
	while (v >= 0x80) {
		byte(e, (unsigned)(v | 0x80) & 0xff);
		v >>= 7;
	}
	byte(e, (unsigned)v);
}

static void tag(enc *e, unsigned field, unsigned wt)
{
	varint(e, (uint64_t)field << 3 | wt);
}

static void str(enc *e, unsigned field, const char *s, size_t n)
{
	tag(e, field, 2);
	varint(e, n);
	put(e, s, n);
}

static void cstr(enc *e, unsigned field, const char *s)
{
	str(e, field, s, strlen(s));
}

static void num(enc *e, unsigned field, uint64_t v)
{
	tag(e, field, 0);
	varint(e, v);
}

static void begin(enc *e, unsigned field)
{
	tag(e, field, 2);
	e->open[e->depth++] = e->n;
	byte(e, 0);
}

static void end(enc *e)
{
	size_t at = e->open[--e->depth], len = e->n - at - 1, w = 0;
	unsigned char v[10];
	size_t x = len;

	for (; x >= 0x80; x >>= 7)
		v[w++] = (unsigned char)(x | 0x80);
	v[w++] = (unsigned char)x;
	memmove(e->b + at + w, e->b + at + 1, len);
	memcpy(e->b + at, v, w);
	e->n += w - 1;
}

static void digest(enc *e, unsigned field, const char *hash, int64_t size)
{
	begin(e, field);
	cstr(e, 1, hash);
	num(e, 2, (uint64_t)size);
	end(e);
}

/* An OutputFile (field 2) of path and digest. */
static void file(enc *e, const char *path, const char *hash, int64_t size, bool exec)
{
	begin(e, 2);
	cstr(e, 1, path);
	digest(e, 2, hash, size);
	if (exec)
		num(e, 4, 1);
	end(e);
}

/* What chk_action_each reported, one line per output. */
typedef struct seen {
	char text[4096];
	size_t n;
} seen;

static int on_output(const chk_output *o, void *user, tf_error *err)
{
	seen *s = user;
	(void)err;
	s->n += (size_t)snprintf(s->text + s->n, sizeof(s->text) - s->n, "%s %s %s %lld%s%s%s %s %s\n",
				 o->o.kind == ST_KIND_FILE ? "file" : o->o.kind == ST_KIND_DIRECTORY ? "dir" : "link",
				 o->o.path, o->o.hash ? o->o.hash : "-", (long long)o->o.size,
				 o->o.executable ? " exec" : "", o->o.symlink_target ? " -> " : "",
				 o->o.symlink_target ? o->o.symlink_target : "", o->wanted ? "wanted" : "later",
				 o->o.target ? o->o.target : "-");
	return 0;
}

/* Decodes e; on success returns what was reported, else NULL with *err. */
static const char *decode(const enc *e, tf_error *err)
{
	static seen s;
	static chk_policy all;
	static bool ready;
	chk_action *a;

	if (!ready) {
		tf_policy p = { 0 };
		p.mode = TF_DOWNLOAD_ALL;
		CHECK_INT_EQ(chk_policy_init(&all, &p, err), 0);
		ready = true;
	}
	memset(&s, 0, sizeof(s));
	if (chk_action_decode(KEY, e->b, e->n, &a, err) < 0) {
		CHECK(a == NULL);
		return NULL;
	}
	CHECK_INT_EQ(chk_action_each(a, &all, "//t:t", on_output, &s, err), 0);
	chk_action_free(a);
	return s.text;
}

/* Decodes e, which must be accepted; returns what was reported. */
static const char *accepted(const enc *e)
{
	tf_error err = { 0 };
	const char *got = decode(e, &err);

	if (!got)
		fprintf(stderr, "refused: %s\n", err.message);
	CHECK(got != NULL);
	return got;
}

/* Decodes e, which must be refused with exactly `want`. */
static void refused(const enc *e, int code, const char *want)
{
	tf_error err = { 0 };
	CHECK(decode(e, &err) == NULL);
	CHECK_INT_EQ(err.code, code);
	CHECK_STR_EQ(err.message, want);
}

TEST(every_kind_of_output_in_order)
{
	enc e = { 0 };
	const char *got;

	/* Symlinks (12, 10, 11) and directories (3) before the files: the
	 * outputs come files, directories, symlinks, file symlinks, directory
	 * symlinks whatever the order on the wire. */
	begin(&e, 11);
	cstr(&e, 1, "out/dl");
	cstr(&e, 2, "d");
	end(&e);
	begin(&e, 10);
	cstr(&e, 1, "out/fl");
	cstr(&e, 2, "f");
	end(&e);
	begin(&e, 12);
	cstr(&e, 1, "out/l");
	cstr(&e, 2, "../x");
	end(&e);
	begin(&e, 3);
	cstr(&e, 1, "out/d");
	num(&e, 4, 1);
	digest(&e, 3, H2, 9);
	digest(&e, 5, H1, 5);
	end(&e);
	file(&e, "out/a", H1, 5, true);
	num(&e, 4, 3); /* exit_code */
	str(&e, 5, "out\0put", 7); /* stdout_raw: bytes, NUL allowed */
	file(&e, "out/b", HE, 0, false);
	num(&e, 99, 7); /* unknown fields are skipped */
	str(&e, 98, "\xff", 1);
	begin(&e, 9); /* execution_metadata */
	cstr(&e, 1, "worker");
	begin(&e, 2);
	num(&e, 1, 1700000000);
	end(&e);
	begin(&e, 11); /* an Any */
	cstr(&e, 1, "type.googleapis.com/x");
	str(&e, 2, "\x00\xff", 2);
	end(&e);
	end(&e);
	got = accepted(&e);
	CHECK_STR_EQ(got, "file out/a " H1 " 5 exec wanted //t:t\n"
			  "file out/b " HE " 0 wanted //t:t\n"
			  "dir out/d " H2 " 9 wanted //t:t\n"
			  "link out/l - 0 -> ../x later //t:t\n"
			  "link out/fl - 0 -> f later //t:t\n"
			  "link out/dl - 0 -> d later //t:t\n");
}

TEST(empty_message_has_no_outputs)
{
	enc e = { 0 };
	const char *got = accepted(&e);

	CHECK_STR_EQ(got, "");
}

TEST(repeated_fields_last_one_wins)
{
	enc e = { 0 };
	const char *got;

	/* A string or number given twice: the last; a Digest given twice: the
	 * two merged field by field (protobuf's rule), the later one winning. */
	begin(&e, 2);
	cstr(&e, 1, "out/first");
	digest(&e, 2, H2, 7);
	num(&e, 4, 1);
	cstr(&e, 1, "out/second");
	begin(&e, 2);
	num(&e, 2, 5);
	end(&e);
	num(&e, 4, 0);
	end(&e);
	begin(&e, 2);
	cstr(&e, 1, "out/c");
	begin(&e, 2);
	cstr(&e, 1, H2);
	end(&e);
	begin(&e, 2);
	cstr(&e, 1, H1);
	num(&e, 2, 5);
	end(&e);
	num(&e, 4, 2); /* any non-zero varint is true */
	end(&e);
	begin(&e, 12);
	cstr(&e, 2, "t1");
	cstr(&e, 1, "out/l");
	cstr(&e, 2, "t2");
	end(&e);
	got = accepted(&e);
	CHECK_STR_EQ(got, "file out/second " H2 " 5 wanted //t:t\n"
			  "file out/c " H1 " 5 exec wanted //t:t\n"
			  "link out/l - 0 -> t2 later //t:t\n");
}

TEST(refuses_bad_action_key)
{
	enc e = { 0 };
	tf_error err = { 0 };
	chk_action *a = (chk_action *)1;

	CHECK_INT_EQ(chk_action_decode("abc", e.b, 0, &a, &err), -EINVAL);
	CHECK(a == NULL);
	CHECK_STR_EQ(err.message, "action key 'abc' is not a SHA-256 digest");
}

TEST(wire_errors_name_field_and_offset)
{
	enc e = { 0 };

	/* path as a varint */
	begin(&e, 2);
	num(&e, 1, 5);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (4 bytes) does not decode: "
			      "ActionResult.output_files.path (field 1) has wire type 0 (varint), but the schema says "
			      "length-delimited at byte offset 2");

	/* a NUL in a digest's hash, after a good output */
	memset(&e, 0, sizeof(e));
	file(&e, "out/a", H1, 5, false);
	begin(&e, 2);
	cstr(&e, 1, "out/b");
	begin(&e, 2);
	str(&e, 1, "ab\0d", 4);
	end(&e);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (96 bytes) does not decode: "
			      "ActionResult.output_files.digest.hash (field 1) is a string with a NUL byte in it at "
			      "byte offset 91");

	/* a path that is not UTF-8 (an overlong '/') */
	memset(&e, 0, sizeof(e));
	begin(&e, 3);
	str(&e, 1, "a\xc0\xaf", 3);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (7 bytes) does not decode: "
			      "ActionResult.output_directories.path (field 1) is a string that is not UTF-8 at byte "
			      "offset 5");

	/* a symlink target with a NUL */
	memset(&e, 0, sizeof(e));
	begin(&e, 10);
	cstr(&e, 1, "l");
	str(&e, 2, "/etc\0", 5);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (12 bytes) does not decode: "
			      "ActionResult.output_file_symlinks.target (field 2) is a string with a NUL byte in it at "
			      "byte offset 6");

	/* a truncated size_bytes */
	memset(&e, 0, sizeof(e));
	begin(&e, 2);
	begin(&e, 2);
	tag(&e, 2, 0);
	byte(&e, 0x80);
	end(&e);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (6 bytes) does not decode: "
			      "ActionResult.output_files.digest.size_bytes has a truncated varint at byte offset 5");

	/* a length past the end of its enclosing message */
	memset(&e, 0, sizeof(e));
	begin(&e, 12);
	tag(&e, 1, 2);
	byte(&e, 9);
	byte(&e, 'x');
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (5 bytes) does not decode: "
			      "ActionResult.output_symlinks.path has length 9, which runs past the end of its "
			      "enclosing message (1 bytes left) at byte offset 3");

	/* an output list entry whose length runs past the end of the input */
	memset(&e, 0, sizeof(e));
	tag(&e, 2, 2);
	byte(&e, 40);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (2 bytes) does not decode: "
			      "ActionResult.output_files has length 40, which runs past the end of its enclosing "
			      "message (0 bytes left) at byte offset 1");

	/* a group, an invalid wire type, field number 0, a truncated tag */
	memset(&e, 0, sizeof(e));
	file(&e, "a", H1, 5, false);
	tag(&e, 7, 3);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (76 bytes) does not decode: "
			      "ActionResult.stderr_raw (field 7) has wire type 3 (start-group), but the schema says "
			      "length-delimited at byte offset 75");
	memset(&e, 0, sizeof(e));
	tag(&e, 50, 6);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (2 bytes) does not decode: "
			      "ActionResult.<field 50> has the invalid wire type 6 at byte offset 0");
	memset(&e, 0, sizeof(e));
	begin(&e, 12);
	byte(&e, 0x02);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (3 bytes) does not decode: "
			      "ActionResult.output_symlinks has the invalid field number 0 at byte offset 2");
	memset(&e, 0, sizeof(e));
	byte(&e, 0x80);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (1 bytes) does not decode: "
			      "ActionResult has a truncated field tag at byte offset 0");
	memset(&e, 0, sizeof(e));
	tag(&e, 51, 1);
	put(&e, "1234", 4);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (6 bytes) does not decode: "
			      "ActionResult.<field 51> has a truncated 64-bit value (4 of 8 bytes) at byte offset 2");

	/* deep inside fields the checker does not use: still checked */
	memset(&e, 0, sizeof(e));
	begin(&e, 9);
	begin(&e, 3);
	cstr(&e, 1, "x");
	end(&e);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (7 bytes) does not decode: "
			      "ActionResult.execution_metadata.worker_start_timestamp.seconds (field 1) has wire type 2 "
			      "(length-delimited), but the schema says varint at byte offset 4");
	memset(&e, 0, sizeof(e));
	begin(&e, 2);
	cstr(&e, 1, "a");
	begin(&e, 7);
	begin(&e, 1);
	str(&e, 2, "v\0", 2);
	end(&e);
	end(&e);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (13 bytes) does not decode: "
			      "ActionResult.output_files.node_properties.properties.value (field 2) is a string with a "
			      "NUL byte in it at byte offset 10");
	memset(&e, 0, sizeof(e));
	begin(&e, 11);
	begin(&e, 4);
	num(&e, 3, 1);
	end(&e);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (6 bytes) does not decode: "
			      "ActionResult.output_directory_symlinks.node_properties.unix_mode (field 3) has wire "
			      "type 0 (varint), but the schema says length-delimited at byte offset 4");
	memset(&e, 0, sizeof(e));
	begin(&e, 6);
	num(&e, 1, 1);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (4 bytes) does not decode: "
			      "ActionResult.stdout_digest.hash (field 1) has wire type 0 (varint), but the schema says "
			      "length-delimited at byte offset 2");
	memset(&e, 0, sizeof(e));
	tag(&e, 4, 2); /* exit_code as bytes */
	byte(&e, 0);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (2 bytes) does not decode: "
			      "ActionResult.exit_code (field 4) has wire type 2 (length-delimited), but the schema says "
			      "varint at byte offset 0");
	memset(&e, 0, sizeof(e));
	begin(&e, 3);
	tag(&e, 4, 5); /* is_topologically_sorted as fixed32 */
	put(&e, "1234", 4);
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (7 bytes) does not decode: "
			      "ActionResult.output_directories.is_topologically_sorted (field 4) has wire type 5 "
			      "(32-bit), but the schema says varint at byte offset 2");
}

TEST(wire_error_wins_over_a_bad_path_before_it)
{
	enc e = { 0 };

	/* The whole message is read before any output is checked. */
	file(&e, "../etc/passwd", H1, 5, false);
	tag(&e, 2, 2);
	byte(&e, 40);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (89 bytes) does not decode: "
			      "ActionResult.output_files has length 40, which runs past the end of its enclosing "
			      "message (0 bytes left) at byte offset 88");
}

TEST(checks_name_the_output)
{
	enc e = { 0 };

	file(&e, "out/a", H1, 5, false);
	file(&e, "bazel-out/../../etc/passwd", H1, 5, false);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 1: output file: path "
			     "'bazel-out/../../etc/passwd' has a '..' component and could escape the output directory");

	memset(&e, 0, sizeof(e));
	file(&e, "/abs", H1, 5, false);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: output file: path '/abs' "
			     "is absolute; only paths relative to the output directory are allowed");

	memset(&e, 0, sizeof(e));
	begin(&e, 2);
	cstr(&e, 1, "a");
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: output file 'a' has no "
			     "digest");

	memset(&e, 0, sizeof(e));
	begin(&e, 2);
	cstr(&e, 1, "a");
	begin(&e, 2);
	end(&e);
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: '' is not a SHA-256 digest "
			     "(64 lowercase hex digits)");

	memset(&e, 0, sizeof(e));
	file(&e, "a", "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824", 5, false);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: "
			     "'2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824' is not a SHA-256 "
			     "digest (64 lowercase hex digits)");

	memset(&e, 0, sizeof(e));
	file(&e, "a", H1, -1, false);
	refused(&e, -ERANGE, "refusing the ActionResult of action " KEY ": output file 0: size -1 of blob " H1
			     " is out of range (0..2^53)");

	memset(&e, 0, sizeof(e));
	file(&e, "a", H1, 0, false);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: blob " H1
			     " has size 0 but is not the empty blob (" HE ")");

	memset(&e, 0, sizeof(e));
	begin(&e, 2);
	str(&e, 1, "", 0);
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: output file: empty path");

	memset(&e, 0, sizeof(e));
	begin(&e, 3);
	cstr(&e, 1, "d/");
	digest(&e, 3, H1, 5);
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output directory 0: output directory: "
			     "path 'd/' ends with '/'");

	memset(&e, 0, sizeof(e));
	begin(&e, 3);
	cstr(&e, 1, "d");
	digest(&e, 5, H1, 5); /* a root directory digest is not a tree digest */
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output directory 0: output directory 'd' "
			     "has no tree digest");

	memset(&e, 0, sizeof(e));
	begin(&e, 3);
	cstr(&e, 1, "d");
	digest(&e, 3, HE, 3);
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output directory 0: the empty blob "
			     "cannot have size 3");

	/* symlinks: the path (targets are not paths of ours) */
	memset(&e, 0, sizeof(e));
	begin(&e, 12);
	cstr(&e, 1, "ok");
	cstr(&e, 2, "/etc/passwd");
	end(&e);
	begin(&e, 12);
	cstr(&e, 1, "./l");
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output symlink: path './l' has a '.' "
			     "component; paths must be normalised");
	memset(&e, 0, sizeof(e));
	begin(&e, 10);
	cstr(&e, 1, "/l");
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file symlink: path '/l' is "
			     "absolute; only paths relative to the output directory are allowed");
	memset(&e, 0, sizeof(e));
	begin(&e, 11);
	end(&e);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output directory symlink: empty path");

	/* files are checked before directories, directories before symlinks */
	memset(&e, 0, sizeof(e));
	begin(&e, 12);
	cstr(&e, 1, "/l");
	end(&e);
	begin(&e, 3);
	cstr(&e, 1, "/d");
	end(&e);
	file(&e, "/f", H1, 5, false);
	refused(&e, -EINVAL, "refusing the ActionResult of action " KEY ": output file 0: output file: path '/f' is "
			     "absolute; only paths relative to the output directory are allowed");
}

TEST(a_symlink_target_may_be_anything_but_nul)
{
	enc e = { 0 };
	const char *got;

	begin(&e, 12);
	cstr(&e, 1, "l");
	end(&e);
	begin(&e, 11);
	cstr(&e, 1, "m");
	cstr(&e, 2, "/abs/../\xc3\xa9");
	end(&e);
	got = accepted(&e);
	CHECK_STR_EQ(got, "link l - 0 ->  later //t:t\n"
			  "link m - 0 -> /abs/../\xc3\xa9 later //t:t\n");
}

TEST(long_prefixes_protobuf_c_cannot_read_are_named)
{
	enc e = { 0 };

	/* The path's tag in 6 bytes: valid protobuf, but protobuf-c (which
	 * read these before) refused it without saying why; now the message
	 * names the field and offset. */
	begin(&e, 2);
	put(&e, "\x8a\x80\x80\x80\x80\x00", 6);
	byte(&e, 1);
	byte(&e, 'a');
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (10 bytes) does not decode: "
			      "ActionResult.output_files has a field tag of 6 bytes (protobuf-c reads at most 5) at byte "
			      "offset 2");
	/* and a length in 6 bytes, inside a field the checker does not use */
	memset(&e, 0, sizeof(e));
	begin(&e, 9);
	tag(&e, 1, 2);
	put(&e, "\x81\x80\x80\x80\x80\x00", 6);
	byte(&e, 'w');
	end(&e);
	refused(&e, -EBADMSG, "the ActionResult of action " KEY " (10 bytes) does not decode: "
			      "ActionResult.execution_metadata.worker has a length prefix of 6 bytes (protobuf-c reads at "
			      "most 5) at byte offset 3");
	/* 5 bytes are read */
	memset(&e, 0, sizeof(e));
	begin(&e, 12);
	put(&e, "\x8a\x80\x80\x80\x00", 5);
	put(&e, "\x81\x80\x80\x80\x00", 5);
	byte(&e, 'l');
	end(&e);
	CHECK_STR_EQ(accepted(&e), "link l - 0 ->  later //t:t\n");
}
