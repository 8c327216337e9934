/* The generic proto3 JSON encoder on messages built in memory, one feature
 * at a time, against exact expected text: names, presence (proto3
 * defaults, oneofs, proto2 optionals), 64-bit integers as strings, bytes as
 * base64, enums (known and unknown), maps (string and integer keys), string
 * escaping as Bazel's Gson does it, Timestamp, Duration, Any (known,
 * unknown, empty, malformed), floats and doubles (through a descriptor
 * written by hand, since our schemas have none), nesting and size caps.
 * The comparison with real Bazel output is json_vs_bazel.py. */
#include "ev_test_util.h"
#include <math.h>

#include "spawn.pb-c.h"

static char *json_of(const ProtobufCMessage *m)
{
	tf__buf b;
	tf_error err = { 0 };
	char *s;
	int rc;

	tf__buf_init(&b, 1 << 20);
	rc = ev_json_append(&b, m, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.message);
	CHECK_INT_EQ(rc, 0);
	s = malloc(b.len + 1);
	CHECK(s);
	memcpy(s, b.data, b.len);
	s[b.len] = '\0';
	tf__buf_fini(&b);
	return s;
}

#define EXPECT_JSON(m, want)                      \
	do {                                      \
		char *got_ = json_of(&(m).base);  \
		CHECK_STR_EQ(got_, want);         \
		free(got_);                       \
	} while (0)

static void test_files_and_bytes(void)
{
	BuildEventStream__File f = BUILD_EVENT_STREAM__FILE__INIT;
	static char *prefix[] = { "bazel-out", "k8-fastbuild", "bin" };
	static const struct {
		const char *data;
		size_t len;
		const char *b64;
	} cases[] = {
		{ "", 0, "" }, { "\x01", 1, "AQ==" }, { "ab", 2, "YWI=" },
		{ "abc", 3, "YWJj" }, { "\xff\xfe\xfd\xfc", 4, "//79/A==" },
	};

	/* Defaults are left out; the empty message is {}. */
	EXPECT_JSON(f, "{}");
	f.name = "pkg/a.txt";
	f.n_path_prefix = 3;
	f.path_prefix = prefix;
	f.file_case = BUILD_EVENT_STREAM__FILE__FILE_URI;
	f.uri = "file:///x/pkg/a.txt";
	f.digest = "abc";
	f.length = 5063895;
	EXPECT_JSON(f, "{\"name\":\"pkg/a.txt\",\"uri\":\"file:///x/pkg/a.txt\",\"pathPrefix\":[\"bazel-out\","
		       "\"k8-fastbuild\",\"bin\"],\"digest\":\"abc\",\"length\":\"5063895\"}");
	/* A oneof member is written even at its default value. */
	f.n_path_prefix = 0;
	f.digest = "";
	f.length = 0;
	f.uri = "";
	EXPECT_JSON(f, "{\"name\":\"pkg/a.txt\",\"uri\":\"\"}");
	f.file_case = BUILD_EVENT_STREAM__FILE__FILE_CONTENTS;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[128];
		f.contents.data = (uint8_t *)cases[i].data;
		f.contents.len = cases[i].len;
		snprintf(want, sizeof(want), "{\"name\":\"pkg/a.txt\",\"contents\":\"%s\"}", cases[i].b64);
		EXPECT_JSON(f, want);
	}
}

static void test_strings(void)
{
	BuildEventStream__Progress p = BUILD_EVENT_STREAM__PROGRESS__INIT;

	/* Gson's escaping (as in Bazel's files), U+2028, UTF-8 kept, an
	 * invalid byte and a truncated sequence replaced by U+FFFD. */
	p.stderr = "q\"b\\s\n\t\r\b\f\x01\x1f<>&='/\xe2\x80\xa8 \xc3\xa9 \xf0\x9f\x98\x80 \xff \xe2\x82";
	EXPECT_JSON(p, "{\"stderr\":\"q\\\"b\\\\s\\n\\t\\r\\b\\f\\u0001\\u001f\\u003c\\u003e\\u0026\\u003d\\u0027/"
		       "\\u2028 \xc3\xa9 \xf0\x9f\x98\x80 \\ufffd \\ufffd\\ufffd\"}");
}

static void test_numbers_enums_maps(void)
{
	BuildEventStream__BuildStarted bs = BUILD_EVENT_STREAM__BUILD_STARTED__INIT;
	BuildEventStream__ActionExecuted ae = BUILD_EVENT_STREAM__ACTION_EXECUTED__INIT;
	BuildEventStream__TargetConfigured tc = BUILD_EVENT_STREAM__TARGET_CONFIGURED__INIT;
	BuildEventStream__Configuration cfg = BUILD_EVENT_STREAM__CONFIGURATION__INIT;
	BuildEventStream__Configuration__MakeVariableEntry e1 =
		BUILD_EVENT_STREAM__CONFIGURATION__MAKE_VARIABLE_ENTRY__INIT;
	BuildEventStream__Configuration__MakeVariableEntry e2 =
		BUILD_EVENT_STREAM__CONFIGURATION__MAKE_VARIABLE_ENTRY__INIT;
	BuildEventStream__Configuration__MakeVariableEntry *entries[] = { &e1, &e2 };

	bs.start_time_millis = -5;
	bs.server_pid = 1234567890123;
	bs.command = "build";
	EXPECT_JSON(bs, "{\"startTimeMillis\":\"-5\",\"command\":\"build\",\"serverPid\":\"1234567890123\"}");
	ae.exit_code = -1;
	ae.success = true;
	EXPECT_JSON(ae, "{\"success\":true,\"exitCode\":-1}");
	tc.test_size = BUILD_EVENT_STREAM__TEST_SIZE__LARGE;
	EXPECT_JSON(tc, "{\"testSize\":\"LARGE\"}");
	/* A value the schema does not list is written as its number. */
	tc.test_size = (BuildEventStream__TestSize)77;
	EXPECT_JSON(tc, "{\"testSize\":77}");
	e1.key = "A";
	e1.value = "1";
	e2.key = "B";
	e2.value = "x=y";
	cfg.mnemonic = "k8-fastbuild";
	cfg.n_make_variable = 2;
	cfg.make_variable = entries;
	EXPECT_JSON(cfg, "{\"mnemonic\":\"k8-fastbuild\",\"makeVariable\":{\"A\":\"1\",\"B\":\"x\\u003dy\"}}");
}

static void test_presence(void)
{
	BuildEventStream__BuildEvent ev = BUILD_EVENT_STREAM__BUILD_EVENT__INIT;
	BuildEventStream__BuildEventId id = BUILD_EVENT_STREAM__BUILD_EVENT_ID__INIT;
	BuildEventStream__BuildEventId__ProgressId pid = BUILD_EVENT_STREAM__BUILD_EVENT_ID__PROGRESS_ID__INIT;
	BuildEventStream__Progress pr = BUILD_EVENT_STREAM__PROGRESS__INIT;
	BuildEventStream__OptionsParsed op = BUILD_EVENT_STREAM__OPTIONS_PARSED__INIT;
	Blaze__InvocationPolicy__InvocationPolicy ip = BLAZE__INVOCATION_POLICY__INVOCATION_POLICY__INIT;
	Blaze__InvocationPolicy__FlagPolicy fp = BLAZE__INVOCATION_POLICY__FLAG_POLICY__INIT;
	Blaze__InvocationPolicy__FlagPolicy *fps[] = { &fp };
	Blaze__InvocationPolicy__SetValue sv = BLAZE__INVOCATION_POLICY__SET_VALUE__INIT;

	/* An empty id message in a oneof is the id: {"progress":{}}. */
	id.id_case = BUILD_EVENT_STREAM__BUILD_EVENT_ID__ID_PROGRESS;
	id.progress = &pid;
	ev.id = &id;
	ev.payload_case = BUILD_EVENT_STREAM__BUILD_EVENT__PAYLOAD_PROGRESS;
	ev.progress = &pr;
	ev.last_message = true;
	EXPECT_JSON(ev, "{\"id\":{\"progress\":{}},\"progress\":{},\"lastMessage\":true}");
	/* proto2 (InvocationPolicy): set optionals are written even at
	 * their default; unset ones are not. An empty message field is {}. */
	fp.flag_name = "";
	fp.operation_case = BLAZE__INVOCATION_POLICY__FLAG_POLICY__OPERATION_SET_VALUE;
	fp.set_value = &sv;
	sv.has_overridable = true;
	sv.overridable = false;
	ip.n_flag_policies = 1;
	ip.flag_policies = fps;
	op.invocation_policy = &ip;
	EXPECT_JSON(op, "{\"invocationPolicy\":{\"flagPolicies\":[{\"flagName\":\"\",\"setValue\":{\"overridable\":false}}]}}");
	ip.n_flag_policies = 0;
	EXPECT_JSON(op, "{\"invocationPolicy\":{}}");
}

static void test_time(void)
{
	BuildEventStream__ActionExecuted ae = BUILD_EVENT_STREAM__ACTION_EXECUTED__INIT;
	BuildEventStream__TestResult tr = BUILD_EVENT_STREAM__TEST_RESULT__INIT;
	Google__Protobuf__Timestamp t1 = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Google__Protobuf__Timestamp t2 = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
	static const struct {
		int64_t s;
		int32_t n;
		const char *want;
	} ts[] = {
		{ 0, 0, "\"1970-01-01T00:00:00Z\"" },
		{ 1700000000, 500000000, "\"2023-11-14T22:13:20.500Z\"" },
		{ 951782400, 1000, "\"2000-02-29T00:00:00.000001Z\"" },
		{ -1, 123456789, "\"1969-12-31T23:59:59.123456789Z\"" },
		{ -62135596800ll, 0, "\"0001-01-01T00:00:00Z\"" },
		{ 253402300799ll, 0, "\"9999-12-31T23:59:59Z\"" },
		/* Out of RFC 3339's range: the plain message form instead. */
		{ 253402300800ll, 0, "{\"seconds\":\"253402300800\"}" },
	}, ds[] = {
		{ 3, 0, "\"3s\"" },
		{ -1, -500000000, "\"-1.500s\"" },
		{ 0, 1000, "\"0.000001s\"" },
		{ 0, -5, "\"-0.000000005s\"" },
		{ 1, -5, "{\"seconds\":\"1\",\"nanos\":-5}" },
	};

	ae.start_time = &t1;
	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
		char want[128];
		t1.seconds = ts[i].s;
		t1.nanos = ts[i].n;
		snprintf(want, sizeof(want), "{\"startTime\":%s}", ts[i].want);
		EXPECT_JSON(ae, want);
	}
	/* A Timestamp at the epoch is still a present message. */
	t1.seconds = 0;
	t1.nanos = 0;
	ae.end_time = &t2;
	t2.seconds = 86400;
	EXPECT_JSON(ae, "{\"startTime\":\"1970-01-01T00:00:00Z\",\"endTime\":\"1970-01-02T00:00:00Z\"}");
	tr.test_attempt_duration = &d;
	for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
		char want[128];
		d.seconds = ds[i].s;
		d.nanos = ds[i].n;
		snprintf(want, sizeof(want), "{\"testAttemptDuration\":%s}", ds[i].want);
		EXPECT_JSON(tr, want);
	}
}

static void test_any(void)
{
	BuildEventStream__ActionExecuted ae = BUILD_EVENT_STREAM__ACTION_EXECUTED__INIT;
	Tools__Protos__SpawnExec se = TOOLS__PROTOS__SPAWN_EXEC__INIT;
	Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Google__Protobuf__Any a[5];
	Google__Protobuf__Any *ap[5] = { &a[0], &a[1], &a[2], &a[3], &a[4] };
	char *args[] = { "a", "b" };
	uint8_t se_bytes[256], t_bytes[32];
	static uint8_t odd[] = { 1, 2 };
	static uint8_t bad[] = { 0x0d, 0, 0, 0, 0 }; /* command_args as 32-bit */

	for (int i = 0; i < 5; i++)
		google__protobuf__any__init(&a[i]);
	se.n_command_args = 2;
	se.command_args = args;
	se.runner = "remote";
	se.exit_code = 3;
	a[0].type_url = "type.googleapis.com/tools.protos.SpawnExec";
	a[0].value.data = se_bytes;
	a[0].value.len = protobuf_c_message_pack(&se.base, se_bytes);
	a[1].type_url = "type.googleapis.com/foo.Bar";
	a[1].value.data = odd;
	a[1].value.len = 2;
	/* a[2] is empty. */
	t.seconds = 1;
	a[3].type_url = "type.googleapis.com/google.protobuf.Timestamp";
	a[3].value.data = t_bytes;
	a[3].value.len = protobuf_c_message_pack(&t.base, t_bytes);
	a[4].type_url = "type.googleapis.com/tools.protos.SpawnExec";
	a[4].value.data = bad;
	a[4].value.len = sizeof(bad);
	ae.n_strategy_details = 5;
	ae.strategy_details = ap;
	EXPECT_JSON(ae, "{\"strategyDetails\":["
			"{\"@type\":\"type.googleapis.com/tools.protos.SpawnExec\",\"commandArgs\":[\"a\",\"b\"],\"runner\":\"remote\",\"exitCode\":3},"
			"{\"@type\":\"type.googleapis.com/foo.Bar\",\"value\":\"AQI=\"},"
			"{},"
			"{\"@type\":\"type.googleapis.com/google.protobuf.Timestamp\",\"value\":\"1970-01-01T00:00:01Z\"},"
			"{\"@type\":\"type.googleapis.com/tools.protos.SpawnExec\",\"value\":\"DQAAAAA=\"}]}");
}

/* ---- a descriptor by hand: the scalar types our schemas do not use ---------- */

typedef struct {
	ProtobufCMessage base;
	int32_t key;
	char *value;
} NumMapEntry;

typedef struct {
	ProtobufCMessage base;
	uint64_t u64;
	double d;
	float f;
	int32_t s32;
	uint64_t fx64;
	size_t n_ds;
	double *ds;
	size_t n_num_map;
	NumMapEntry **num_map;
	protobuf_c_boolean has_opt;
	int32_t opt;
} Scalars;

#define FIELD(name, id, label, type, q, off, desc) \
	{ name, id, label, type, q, off, desc, NULL, 0, 0, NULL, NULL }

static const ProtobufCFieldDescriptor entry_fields[] = {
	FIELD("key", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0, offsetof(NumMapEntry, key), NULL),
	FIELD("value", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_STRING, 0, offsetof(NumMapEntry, value), NULL),
};
static const unsigned entry_by_name[] = { 0, 1 };
static const ProtobufCIntRange entry_ranges[] = { { 1, 0 }, { 0, 2 } };
static const ProtobufCMessageDescriptor entry_desc = {
	PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "test.Scalars.NumMapEntry", "NumMapEntry",
	"Test__Scalars__NumMapEntry", "test", sizeof(NumMapEntry), 2, entry_fields, entry_by_name,
	1, entry_ranges, NULL, NULL, NULL, NULL,
};

static const ProtobufCFieldDescriptor scalar_fields[] = {
	FIELD("u64", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_UINT64, 0, offsetof(Scalars, u64), NULL),
	FIELD("d", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_DOUBLE, 0, offsetof(Scalars, d), NULL),
	FIELD("f", 3, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_FLOAT, 0, offsetof(Scalars, f), NULL),
	FIELD("s32", 4, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_SINT32, 0, offsetof(Scalars, s32), NULL),
	FIELD("fx64", 5, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_FIXED64, 0, offsetof(Scalars, fx64), NULL),
	FIELD("ds", 6, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_DOUBLE, offsetof(Scalars, n_ds),
	      offsetof(Scalars, ds), NULL),
	FIELD("num_map", 7, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_MESSAGE,
	      offsetof(Scalars, n_num_map), offsetof(Scalars, num_map), &entry_desc),
	FIELD("opt", 8, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_INT32, offsetof(Scalars, has_opt),
	      offsetof(Scalars, opt), NULL),
};
static const unsigned scalar_by_name[] = { 1, 5, 2, 4, 6, 7, 3, 0 };
static const ProtobufCIntRange scalar_ranges[] = { { 1, 0 }, { 0, 8 } };
static const ProtobufCMessageDescriptor scalar_desc = {
	PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "test.Scalars", "Scalars", "Test__Scalars", "test",
	sizeof(Scalars), 8, scalar_fields, scalar_by_name, 1, scalar_ranges, NULL, NULL, NULL, NULL,
};

static void test_scalars(void)
{
	Scalars s;
	NumMapEntry e1 = { PROTOBUF_C_MESSAGE_INIT(&entry_desc), 1, "one" };
	NumMapEntry e2 = { PROTOBUF_C_MESSAGE_INIT(&entry_desc), -2, "minus two" };
	NumMapEntry *entries[] = { &e1, &e2 };
	double ds[] = { 1.0, -2.5, NAN, INFINITY, -INFINITY, 1e300, 0.1 };

	memset(&s, 0, sizeof(s));
	s.base.descriptor = &scalar_desc;
	EXPECT_JSON(s, "{}");
	s.u64 = UINT64_MAX;
	s.d = 0.1;
	s.f = 1.1f;
	s.s32 = -7;
	s.fx64 = 42;
	s.n_ds = sizeof(ds) / sizeof(ds[0]);
	s.ds = ds;
	s.n_num_map = 2;
	s.num_map = entries;
	s.has_opt = true;
	s.opt = 0;
	EXPECT_JSON(s, "{\"u64\":\"18446744073709551615\",\"d\":0.1,\"f\":1.1,\"s32\":-7,\"fx64\":\"42\","
		       "\"ds\":[1,-2.5,\"NaN\",\"Infinity\",\"-Infinity\",1e+300,0.1],"
		       "\"numMap\":{\"1\":\"one\",\"-2\":\"minus two\"},\"opt\":0}");
	/* The shortest round-trip form of a double that %.15g would round. */
	s.n_ds = 0;
	s.n_num_map = 0;
	s.has_opt = false;
	s.u64 = 0;
	s.f = 0;
	s.s32 = 0;
	s.fx64 = 0;
	s.d = 0.1 + 0.2;
	EXPECT_JSON(s, "{\"d\":0.30000000000000004}");
}

static void test_caps(void)
{
	BuildEventStream__TestResult__ExecutionInfo__TimingBreakdown tb[260];
	BuildEventStream__TestResult__ExecutionInfo__TimingBreakdown *kids[260];
	BuildEventStream__Progress p = BUILD_EVENT_STREAM__PROGRESS__INIT;
	tf_error err = { 0 };
	tf__buf b;

	/* Past the buffer's cap: an error, and the buffer as it was. */
	tf__buf_init(&b, 16);
	CHECK(tf__buf_append(&b, "xyz", 3) == 0);
	p.stderr = "this is longer than sixteen bytes";
	CHECK_INT_EQ(ev_json_append(&b, &p.base, &err), -E2BIG);
	CHECK_CONTAINS(err.message, "build_event_stream.Progress");
	CHECK_CONTAINS(err.message, "cap of 16 bytes");
	CHECK_INT_EQ(b.len, 3);
	tf__buf_fini(&b);
	/* Nested deeper than the encoder allows (a message built in memory;
	 * decoded ones are capped at 100 levels already). */
	for (int i = 0; i < 260; i++) {
		build_event_stream__test_result__execution_info__timing_breakdown__init(&tb[i]);
		kids[i] = &tb[i];
		if (i > 0) {
			tb[i - 1].n_child = 1;
			tb[i - 1].child = &kids[i];
		}
	}
	tf__buf_init(&b, 1 << 20);
	CHECK_INT_EQ(ev_json_append(&b, &tb[0].base, &err), -E2BIG);
	CHECK_CONTAINS(err.message, "nest deeper than 200 levels");
	CHECK_INT_EQ(b.len, 0);
	/* 150 levels are fine. */
	tb[149].n_child = 0;
	CHECK_INT_EQ(ev_json_append(&b, &tb[0].base, &err), 0);
	tf__buf_fini(&b);
}

int main(void)
{
	test_files_and_bytes();
	test_strings();
	test_numbers_enums_maps();
	test_presence();
	test_time();
	test_any();
	test_scalars();
	test_caps();
	return 0;
}
