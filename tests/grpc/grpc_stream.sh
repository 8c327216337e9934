#!/usr/bin/env bash
# The downloader's streams over grpc:// (test_stream_grpc.c) against Bazel's
# own remote worker.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
reapi_worker_start
TF_GRPC_URL="$WORKER_URL" TF_WORKER_CAS="$WORKER_CAS" "$TF_STREAM_GRPC_TEST" || fail "streams over gRPC"
echo "grpc_stream: ok"
