#!/bin/bash
# Compares our .proto subsets, field by field, with Bazel's official schemas
# as shipped in the Bazel 4.2.3 source tree (Debian bazel-bootstrap-source),
# and checks that our schemas and generated headers use nothing outside
# proto/ (protoc-c silently adds /usr/include to the import path).
#
# For every message field and enum value, keyed by (full type name, number):
#   differs: same number, different name/label/type/type name/oneof
#   newer:   only in ours, in a type that Bazel 4.2.3 also has
#   omitted: only in Bazel 4.2.3, in a type we declare
#   new type: a message or enum Bazel 4.2.3 does not have (its fields are
#            not listed one by one)
# The complete list must equal data/schema_vs_bazel_4.2.3.txt, so every
# difference is deliberate and reviewed; fields newer than 4.2.3 decode from
# its streams as empty/zero, and 4.2.3 fields we omit stay unknown fields.
#
# Anything missing (protoc, the official protos, the build tree) fails the test.
set -euo pipefail

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
bazel_src=/usr/src/bazel-bootstrap
[[ -n ${TF_SOURCE_ROOT:-} && -n ${TF_BUILD_ROOT:-} ]] ||
	fail "TF_SOURCE_ROOT/TF_BUILD_ROOT not set (run through meson test)"
proto_src=$TF_SOURCE_ROOT/proto
proto_build=$TF_BUILD_ROOT/proto
expected=$here/data/schema_vs_bazel_4.2.3.txt

command -v protoc >/dev/null || fail "protoc not found (Debian package protobuf-compiler)"
for f in \
	"$bazel_src/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto" \
	"$bazel_src/src/main/protobuf/spawn.proto" \
	"$bazel_src/third_party/remoteapis/build/bazel/remote/execution/v2/remote_execution.proto" \
	"$bazel_src/third_party/googleapis/google/bytestream/bytestream.proto" \
	/usr/include/google/protobuf/descriptor.proto; do
	[[ -r $f ]] || fail "missing official proto $f (Debian packages bazel-bootstrap-source, libprotobuf-dev)"
done
[[ -r $expected ]] || fail "missing $expected"

tmp=$(mktemp -d /tmp/tf-proto-schema-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Our own service protocol (package topfetch.service) has no counterpart in
# Bazel: it is left out of the comparison (its own tests cover it).
mapfile -t ours < <(cd "$proto_src" && ls -- *.proto | grep -v '^topfetch_')
[[ ${#ours[@]} -gt 0 ]] || fail "no .proto files in $proto_src"

# descriptor_set OUT PROTOC-ARGS...: a FileDescriptorSet (with imports) as
# flattened text lines.
descriptor_set() {
	local out=$1
	shift
	protoc --include_imports --descriptor_set_out="$tmp/set.pb" "$@" 2>"$tmp/protoc.err" || {
		cat "$tmp/protoc.err" >&2
		fail "protoc $*"
	}
	protoc -I/usr/include --decode=google.protobuf.FileDescriptorSet google/protobuf/descriptor.proto \
		<"$tmp/set.pb" >"$tmp/set.txt" || fail "cannot decode descriptor set"
	awk -f "$here/flatten_descriptors.awk" "$tmp/set.txt" >>"$out"
	grep '^  name: ' "$tmp/set.txt" | sed 's/^  name: "\(.*\)"$/\1/' >"$tmp/files.txt"
}

# Ours, with proto/ as the only import path we give.
: >"$tmp/ours.flat"
descriptor_set "$tmp/ours.flat" -I"$proto_src" "${ours[@]/#/$proto_src/}"

# Hygiene 1: the imports resolved to our own files only.
while read -r file; do
	[[ $file != */* && -r $proto_src/$file ]] ||
		fail "our schemas pulled in $file from outside proto/"
done <"$tmp/files.txt"
[[ $(wc -l <"$tmp/files.txt") -eq ${#ours[@]} ]] || fail "descriptor set does not list exactly our ${#ours[@]} files"

# Hygiene 2: generated headers include only each other and protobuf-c.
for name in "${ours[@]}"; do
	header=$proto_build/${name%.proto}.pb-c.h
	[[ -r $header ]] || fail "missing generated header $header"
	while read -r inc; do
		case $inc in
		"<protobuf-c/protobuf-c.h>") ;;
		\"*.pb-c.h\")
			base=${inc//\"/}
			[[ -r $proto_src/${base%.pb-c.h}.proto ]] || fail "$header includes $inc"
			;;
		*) fail "$header includes $inc" ;;
		esac
	done < <(sed -n 's/^#include //p' "$header")
done
echo "ok: ${#ours[@]} schemas and their headers use only proto/ and protobuf-c"

# Official Bazel 4.2.3 schemas (they import google/protobuf/* from /usr/include).
: >"$tmp/official.flat"
descriptor_set "$tmp/official.flat" -I"$bazel_src" -I/usr/include \
	src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto \
	src/main/protobuf/spawn.proto
descriptor_set "$tmp/official.flat" -I"$bazel_src/third_party/remoteapis" \
	-I"$bazel_src/third_party/googleapis" -I/usr/include \
	build/bazel/remote/execution/v2/remote_execution.proto google/bytestream/bytestream.proto
sort -u -o "$tmp/official.flat" "$tmp/official.flat"

awk '
	$1 == "T" && FNR == NR { our_types[$2] = 1; next }
	$1 == "T" { official_types[$2] = 1; next }
	FNR == NR { ours[$1 " " $2 " " $3] = $0; next }
	{ official[$1 " " $2 " " $3] = $0 }
	END {
		for (k in ours) {
			split(k, p, " ")
			if (k in official) {
				if (ours[k] != official[k])
					print "differs: " ours[k] " | official: " official[k]
			} else if (p[2] in official_types) {
				print "newer: " ours[k]
			}
		}
		for (k in official) {
			split(k, p, " ")
			if (!(k in ours) && (p[2] in our_types))
				print "omitted: " official[k]
		}
		for (t in our_types)
			if (!(t in official_types))
				print "new type: " t
	}' "$tmp/ours.flat" "$tmp/official.flat" | LC_ALL=C sort >"$tmp/differences.txt"

shared=$(awk '$1 == "T" { next } FNR == NR { seen[$1 " " $2 " " $3] = 1; next } ($1 " " $2 " " $3) in seen' \
	"$tmp/ours.flat" "$tmp/official.flat" | wc -l)
[[ $shared -gt 300 ]] || fail "only $shared fields/values in common with Bazel 4.2.3: wrong schemas?"

if ! grep -v '^#' "$expected" | diff -u - "$tmp/differences.txt"; then
	fail "our schemas differ from Bazel 4.2.3 in ways not listed in data/schema_vs_bazel_4.2.3.txt"
fi
echo "ok: $shared fields and enum values match Bazel 4.2.3; $(grep -vc '^#' "$expected") reviewed differences"
echo "PASS"
