# A real REAPI cache server for tests: Bazel's own remote worker, compiled at
# test time from Debian's bazel-bootstrap-source against the Bazel server jar
# of bazel-bootstrap-data. Source after harness.sh.
#   [REAPI_JAVA_OPTS=...] reapi_worker_start [EXTRA_FLAG...]  starts a worker (cache only) on a free
#       loopback port: sets WORKER_PORT, WORKER_URL (grpc://127.0.0.1:PORT),
#       WORKER_CAS (its storage: cas/<2 hex>/<sha256>, ac/...), WORKER_LOG,
#       WORKER_PID (tracked: stopped on every exit path)
#   reapi_worker_stop   stops it by its pid
# Test patches (besides loopback only and a temporary folder per worker):
# ByteStream.Read from read_offset; every ByteStream.Read and BatchReadBlobs
# call logged ("tf-worker: <method> ..." in WORKER_LOG, a read with the
# invocation id of its RequestMetadata), to count them;
# BatchReadBlobs answered UNIMPLEMENTED as in 4.2.3, or served with
# REAPI_JAVA_OPTS=-Dtf.worker.batch_read=true.
# The compiled classes are kept in the build directory ($TF_BUILD_ROOT), so
# only the first test of a build compiles (about 6 s); a lock serialises that.

REAPI_SRC=/usr/src/bazel-bootstrap/src/tools/remote/src/main/java/com/google/devtools/build/remote/worker
REAPI_JAR=/usr/share/bazel/A-server.jar

reapi_worker_classes() {
  local dir="${TF_BUILD_ROOT:-$tf_tmp}/reapi-worker-4" src
  [ -d "$REAPI_SRC" ] || fail "Bazel's remote worker sources are missing ($REAPI_SRC); install bazel-bootstrap-source (scripts/install-deps.sh)"
  [ -f "$REAPI_JAR" ] || fail "$REAPI_JAR is missing; install bazel-bootstrap-data (scripts/install-deps.sh)"
  need javac
  need java
  mkdir -p "$dir"
  (
    flock 9
    if [ ! -f "$dir/classes/.done" ]; then
      src=$(mktemp -d "$dir/src.XXXXXX")
      cp -r "$REAPI_SRC" "$src/worker"
      # Loopback only, and a temporary folder per instance (the original
      # binds every interface and shares /tmp/remote-worker).
      sed -i 's|NettyServerBuilder.forPort(workerOptions.listenPort)|NettyServerBuilder.forAddress(new java.net.InetSocketAddress("127.0.0.1", workerOptions.listenPort))|' \
        "$src/worker/RemoteWorker.java"
      sed -i 's|fs.getPath("/tmp/remote-worker")|fs.getPath(System.getProperty("tf.worker.tmp", "/tmp/remote-worker"))|' \
        "$src/worker/RemoteWorker.java"
      # ByteStream.Read from read_offset, as the ByteStream contract and later
      # Bazel versions do (4.2.3's worker always starts at byte 0).
      sed -i 's|Chunker.builder().setInput(getFromFuture(cache.downloadBlob(context, digest))).build();|&\n      c.seek(request.getReadOffset());|' \
        "$src/worker/ByteStreamServer.java"
      python3 - "$src/worker" <<'PY' || { echo "cannot patch the worker's BatchReadBlobs" >&2; exit 1; }
import sys
d = sys.argv[1]
p = d + "/ByteStreamServer.java"
s = open(p).read()
a = "Digest digest = parseDigestFromResourceName(request.getResourceName());"
assert s.count(a) == 1
s = s.replace(a, a + '\n    System.err.println("tf-worker: ByteStream.Read " + request.getResourceName()'
            + ' + " invocation=" + meta.getToolInvocationId());')
open(p, "w").write(s)
p = d + "/CasServer.java"
s = open(p).read()
a = "  @Override\n  public void batchUpdateBlobs("
assert s.count(a) == 1
s = s.replace(a, """  @Override
  public void batchReadBlobs(
      build.bazel.remote.execution.v2.BatchReadBlobsRequest request,
      StreamObserver<build.bazel.remote.execution.v2.BatchReadBlobsResponse> responseObserver) {
    if (!Boolean.getBoolean("tf.worker.batch_read")) {
      System.err.println("tf-worker: BatchReadBlobs UNIMPLEMENTED");
      responseObserver.onError(io.grpc.Status.UNIMPLEMENTED.asException());
      return;
    }
    System.err.println("tf-worker: BatchReadBlobs " + request.getDigestsCount());
    RemoteActionExecutionContext context =
        RemoteActionExecutionContext.create(TracingMetadataUtils.fromCurrentContext());
    build.bazel.remote.execution.v2.BatchReadBlobsResponse.Builder b =
        build.bazel.remote.execution.v2.BatchReadBlobsResponse.newBuilder();
    for (Digest digest : request.getDigestsList()) {
      build.bazel.remote.execution.v2.BatchReadBlobsResponse.Response.Builder r =
          b.addResponsesBuilder().setDigest(digest);
      try {
        r.setData(com.google.protobuf.ByteString.copyFrom(getFromFuture(cache.downloadBlob(context, digest))));
        r.getStatusBuilder().setCode(Code.OK.getNumber());
      } catch (CacheNotFoundException e) {
        r.getStatusBuilder().setCode(Code.NOT_FOUND.getNumber()).setMessage("not in the CAS");
      } catch (Exception e) {
        r.getStatusBuilder().setCode(Code.INTERNAL.getNumber()).setMessage(String.valueOf(e));
      }
    }
    responseObserver.onNext(b.build());
    responseObserver.onCompleted();
  }

""" + a)
open(p, "w").write(s)
PY
      grep -q 'c.seek(request.getReadOffset())' "$src/worker/ByteStreamServer.java" ||
        { echo "cannot patch the worker's ByteStream.Read" >&2; exit 1; }
      grep -q 'InetSocketAddress("127.0.0.1"' "$src/worker/RemoteWorker.java" ||
        { echo "cannot patch the worker's listen address" >&2; exit 1; }
      grep -q 'tf.worker.tmp' "$src/worker/RemoteWorker.java" ||
        { echo "cannot patch the worker's temporary folder" >&2; exit 1; }
      rm -rf "$dir/classes.new"
      mkdir -p "$dir/classes.new"
      javac -nowarn -d "$dir/classes.new" -cp "$REAPI_JAR" $(find "$src/worker" -name '*.java') >"$dir/javac.log" 2>&1 ||
        { cat "$dir/javac.log" >&2; echo "javac failed on the remote worker" >&2; exit 1; }
      touch "$dir/classes.new/.done"
      rm -rf "$dir/classes" "$src"
      mv "$dir/classes.new" "$dir/classes"
    fi
  ) 9>"$dir/lock" || fail "cannot compile Bazel's remote worker"
  REAPI_CLASSES="$dir/classes"
}

reapi_worker_start() {
  reapi_worker_classes
  local root
  root=$(mktemp -d "$tf_tmp/worker.XXXXXX")
  mkdir -p "$root/cas" "$root/tmp"
  WORKER_CAS="$root/cas"
  WORKER_LOG="$root/worker.log"
  WORKER_PORT=$(free_port)
  # shellcheck disable=SC2086
  java ${REAPI_JAVA_OPTS:-} -Dtf.worker.tmp="$root/tmp" -cp "$REAPI_CLASSES:$REAPI_JAR" \
    com.google.devtools.build.remote.worker.RemoteWorker \
    --listen_port="$WORKER_PORT" --cas_path="$WORKER_CAS" --pid_file="$root/pid" "$@" \
    >"$WORKER_LOG" 2>&1 &
  WORKER_PID=$!
  tf_track "$WORKER_PID"
  wait_for 60 "the remote worker on port $WORKER_PORT (log: $(tail -n 5 "$WORKER_LOG" 2>/dev/null))" \
    reapi_worker_ready
  WORKER_URL="grpc://127.0.0.1:$WORKER_PORT"
}

reapi_worker_ready() {
  kill -0 "$WORKER_PID" 2>/dev/null || fail "the remote worker exited: $(tail -n 20 "$WORKER_LOG")"
  port_open "$WORKER_PORT"
}

reapi_worker_stop() {
  if [ -n "${WORKER_PID:-}" ] && kill -0 "$WORKER_PID" 2>/dev/null; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait_for 30 "the remote worker (pid $WORKER_PID) to stop" reapi_worker_gone
  fi
  WORKER_PID="" # its pid may be another process's from now on
}
reapi_worker_gone() {
  kill -0 "$WORKER_PID" 2>/dev/null && return 1
  wait "$WORKER_PID" 2>/dev/null || true
  return 0
}

# Puts stdin into the worker's CAS (its on-disk layout) and prints the hash.
reapi_cas_put_stdin() {
  local tmp h
  tmp=$(mktemp "$tf_tmp/blob.XXXXXX")
  cat >"$tmp"
  h=$(sha256sum "$tmp" | cut -c1-64)
  mkdir -p "$WORKER_CAS/cas/${h:0:2}"
  mv "$tmp" "$WORKER_CAS/cas/${h:0:2}/$h"
  echo "$h"
}
