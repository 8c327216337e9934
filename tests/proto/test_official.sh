#!/bin/bash
# Cross-checks our .proto subsets and protoc-c's encoder against someone
# else's schema: Bazel's official .proto files (Bazel 4.2.3 source tree from
# Debian's bazel-bootstrap-source, REAPI/googleapis copies included) decoded
# and encoded by protoc.
#
#  1. Messages encoded by our code (proto_xcheck encode) decode with the
#     official schemas to exactly data/<name>.txt. Fields newer than Bazel
#     4.2.3 show up there as numbered unknown fields (e.g. File `5:`/`6:`).
#  2. Where every field is known to the official schema, protoc --encode of
#     that text gives the same bytes as our encoder (canonical field order).
#  3. The reverse: data/official_*.txt encoded by protoc decode with our code
#     to the expected values (proto_xcheck check).
#  4. REAPI digests: our re-encoding of the fixture Actions, the Tree and
#     its child Directory hashes to the digests Bazel used as their names.
#
# Usage: test_official.sh PATH/TO/proto_xcheck   (run by meson test)
# Anything missing (protoc, the official protos, the fixtures) fails the test.
set -euo pipefail

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

xcheck=${1:-}
[[ -x $xcheck ]] || fail "usage: $0 PATH/TO/proto_xcheck"
data=$(cd "$(dirname "$0")" && pwd)/data
bazel_src=/usr/src/bazel-bootstrap

command -v protoc >/dev/null || fail "protoc not found (Debian package protobuf-compiler)"
for tool in tar sha256sum diff cmp; do
	command -v "$tool" >/dev/null || fail "$tool not found"
done
for f in \
	"$bazel_src/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto" \
	"$bazel_src/src/main/protobuf/spawn.proto" \
	"$bazel_src/third_party/remoteapis/build/bazel/remote/execution/v2/remote_execution.proto" \
	"$bazel_src/third_party/googleapis/google/bytestream/bytestream.proto" \
	/usr/include/google/protobuf/descriptor.proto \
	/usr/include/google/protobuf/any.proto; do
	[[ -r $f ]] || fail "missing official proto $f (Debian packages bazel-bootstrap-source, libprotobuf-dev)"
done
[[ -n ${TF_FIXTURES:-} ]] || fail "TF_FIXTURES is not set (run through meson test)"
[[ -r $TF_FIXTURES/cache.tar.gz ]] || fail "missing fixture $TF_FIXTURES/cache.tar.gz"
[[ -d $data ]] || fail "missing test data folder $data"

tmp=$(mktemp -d /tmp/tf-proto-official-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Official schemas: include paths and the file that declares the messages.
bep=(-I"$bazel_src" -I/usr/include
	src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto)
reapi=(-I"$bazel_src/third_party/remoteapis" -I"$bazel_src/third_party/googleapis" -I/usr/include
	build/bazel/remote/execution/v2/remote_execution.proto)
spawn=(-I"$bazel_src" src/main/protobuf/spawn.proto)
bytestream=(-I"$bazel_src/third_party/googleapis" -I/usr/include google/bytestream/bytestream.proto)

# protoc MODE SCHEMA TYPE IN OUT: protoc's warnings (unused imports,
# deprecated fields) are shown only when it fails.
run_protoc() {
	local mode=$1 type=$3 in=$4 out=$5
	local -n schema=$2
	if ! protoc "${schema[@]}" "--$mode=$type" <"$in" >"$out" 2>"$tmp/protoc.err"; then
		cat "$tmp/protoc.err" >&2
		fail "protoc --$mode=$type < $in"
	fi
}

# 1 and 2: our encodings, read by the official schemas.
"$xcheck" encode "$tmp" || fail "proto_xcheck encode"
# name schema type canonical(identical bytes expected from protoc --encode)
vectors=(
	"bep_named_set bep build_event_stream.BuildEvent no"
	"bep_target_complete bep build_event_stream.BuildEvent no"
	"action_result reapi build.bazel.remote.execution.v2.ActionResult yes"
	"action_result_new reapi build.bazel.remote.execution.v2.ActionResult no"
	"tree reapi build.bazel.remote.execution.v2.Tree yes"
	"batch_read_response reapi build.bazel.remote.execution.v2.BatchReadBlobsResponse no"
	"spawn_exec spawn tools.protos.SpawnExec no"
	"bytestream_write bytestream google.bytestream.WriteRequest yes"
	"bytestream_read bytestream google.bytestream.ReadRequest yes"
)
for v in "${vectors[@]}"; do
	read -r name schema type canonical <<<"$v"
	run_protoc decode "$schema" "$type" "$tmp/$name.bin" "$tmp/$name.txt"
	diff -u "$data/$name.txt" "$tmp/$name.txt" ||
		fail "$name: official decoding of our bytes differs from data/$name.txt"
	echo "ok: $name decodes with the official $type"
	if [[ $canonical == yes ]]; then
		run_protoc encode "$schema" "$type" "$data/$name.txt" "$tmp/$name.official.bin"
		cmp "$tmp/$name.bin" "$tmp/$name.official.bin" ||
			fail "$name: our bytes differ from protoc's encoding of the same message"
		echo "ok: $name is byte-identical to protoc's canonical encoding"
	fi
done

# 3: official encodings, read by our code.
checks=(
	"bep_started bep build_event_stream.BuildEvent"
	"bep_completed bep build_event_stream.BuildEvent"
	"bep_action bep build_event_stream.BuildEvent"
	"action_result reapi build.bazel.remote.execution.v2.ActionResult"
	"tree reapi build.bazel.remote.execution.v2.Tree"
	"spawn_exec spawn tools.protos.SpawnExec"
)
for c in "${checks[@]}"; do
	read -r kind schema type <<<"$c"
	run_protoc encode "$schema" "$type" "$data/official_$kind.txt" "$tmp/official_$kind.bin"
	"$xcheck" check "$kind" "$tmp/official_$kind.bin" ||
		fail "official_$kind: our decoding does not match data/official_$kind.txt"
	echo "ok: official_$kind decodes with our code"
done

# 4: REAPI digests of our encodings equal the digests Bazel computed.
mkdir "$tmp/cache"
tar -xzf "$TF_FIXTURES/cache.tar.gz" -C "$tmp/cache" || fail "cannot extract cache.tar.gz"
sha256() { sha256sum "$1" | cut -d' ' -f1; }
n=0
for entry in "$tmp"/cache/ac/*; do
	key=$(basename "$entry")
	[[ -r $tmp/cache/cas/$key ]] || fail "no Action blob cas/$key for ac/$key"
	"$xcheck" reencode action "$tmp/cache/cas/$key" "$tmp/action.bin" || fail "reencode Action $key"
	[[ $(sha256 "$tmp/action.bin") == "$key" ]] || fail "our encoding of Action $key hashes differently"
	n=$((n + 1))
done
[[ $n -eq 8 ]] || fail "expected 8 ac/ entries, found $n"
echo "ok: our encodings of the 8 Actions hash to their ac/ keys"

tree=bb2e91f968ef792fb32dd8a42477b0341e0db61d7b999cd94b401d710f7e7420
sub=506291ec1abdfe990b50a03cb200fb94a54b48ef194f150ed9947a8471851338
"$xcheck" reencode tree "$tmp/cache/cas/$tree" "$tmp/tree.bin" || fail "reencode Tree"
[[ $(sha256 "$tmp/tree.bin") == "$tree" ]] || fail "our encoding of the Tree does not hash to $tree"
mkdir "$tmp/dirs"
"$xcheck" tree-dirs "$tmp/cache/cas/$tree" "$tmp/dirs" || fail "tree-dirs"
[[ $(sha256 "$tmp/dirs/child-0.bin") == "$sub" ]] ||
	fail "our encoding of Directory 'sub' does not hash to its DirectoryNode digest $sub"
[[ $(stat -c %s "$tmp/dirs/child-0.bin") -eq 160 ]] || fail "Directory 'sub' is not 160 bytes"
echo "ok: Tree and Directory digests match Bazel's"
echo "PASS"
