#!/usr/bin/env bash
# Installs the Debian 12 packages topfetch needs. Safe to run again; needs root
# (or sudo) and no standard input.
#
#   install-deps.sh                 everything: build, tests (nginx, real Bazel,
#                                   Java for Bazel's remote worker), sanitizers,
#                                   fuzzing, benchmarks (scripts/test.sh)
#   install-deps.sh --build-only    what building the library, the CLI, its man
#                                   page and running the example need
#                                   (scripts/run-example.sh)
#   add --list to print the package names instead of installing them
set -euo pipefail

build_pkgs=(
  meson ninja-build pkg-config gcc git python3
  libcurl4-openssl-dev libprotobuf-c-dev protobuf-c-compiler
  libnanomsg-dev libssl-dev libsqlite3-dev libmicrohttpd-dev libpcre2-dev
  libgrpc-dev
  # the man page is made from --help at build time
  help2man
)
test_pkgs=(
  # real components and someone else's schema
  nginx protobuf-compiler libprotobuf-dev bazel-bootstrap bazel-bootstrap-source
  # the gRPC tests compile Bazel's own remote worker (sources: bazel-bootstrap-source,
  # classpath: the Bazel server jar of bazel-bootstrap-data) with javac
  bazel-bootstrap-data openjdk-17-jdk-headless
  # sanitizers, fuzzing (libFuzzer comes with clang), benchmarks
  clang libclang-rt-14-dev curl time procps coreutils
  # tests/pkg: the installed man page rendered, the completion run in bash
  man-db groff-base bash
  # tests/pkg: the example systemd units checked with systemd-analyze verify
  systemd
)

build_only=false list=false
for arg in "$@"; do
  case $arg in
  --build-only) build_only=true ;;
  --list) list=true ;;
  *) echo "install-deps.sh: unknown argument '$arg' (use --build-only and/or --list)" >&2; exit 2 ;;
  esac
done
pkgs=("${build_pkgs[@]}")
$build_only || pkgs+=("${test_pkgs[@]}")
if $list; then
  printf '%s\n' "${pkgs[@]}"
  exit 0
fi

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
if ! $build_only && command -v systemctl >/dev/null 2>&1; then
  $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
fi
