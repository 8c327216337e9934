#!/usr/bin/env bash
# Installs every Debian 12 package topfetch needs to build, test and benchmark.
# Safe to run again; needs root (or sudo) and no standard input.
set -euo pipefail

pkgs=(
  # build
  meson ninja-build pkg-config gcc
  libcurl4-openssl-dev libprotobuf-c-dev protobuf-c-compiler
  libnanomsg-dev libssl-dev libsqlite3-dev libmicrohttpd-dev libgrpc-dev
  # tests: real components and someone else's schema
  nginx protobuf-compiler libprotobuf-dev bazel-bootstrap bazel-bootstrap-source python3
  # the gRPC tests compile Bazel's own remote worker (sources: bazel-bootstrap-source,
  # classpath: the Bazel server jar of bazel-bootstrap-data) with javac
  bazel-bootstrap-data openjdk-17-jdk-headless
  # sanitizers, fuzzing (libFuzzer comes with clang), benchmarks
  clang libclang-rt-14-dev curl time procps coreutils
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
# Debian starts nginx on port 80 when it is installed; our tests start their own.
if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now nginx >/dev/null 2>&1 || true; fi
