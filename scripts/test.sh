#!/usr/bin/env bash
# Installs what is missing, builds cap-server and runs every test:
#   1. the normal build with warnings as errors: unit and integration tests
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
#      and with assert() compiled in (the release flags' -DNDEBUG dropped), so
#      the job state machine's transition checks run under every test
#   3. the libFuzzer target on the request path, for a bounded time
# Environment: CAP_FUZZ_SECONDS (default 60), CAP_SKIP_ASAN=1, CAP_SKIP_FUZZ=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh build test

jobs=$(nproc)
status=0

echo "== build (warnings are errors)"
scripts/build.sh build -DCAP_WERROR=ON
echo "== tests"
(cd build && ctest --output-on-failure -j"$jobs") || status=1

if [ "${CAP_SKIP_ASAN:-0}" != 1 ]; then
  echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer, asserts on"
  scripts/build.sh build-asan -DCAP_WERROR=ON -DCAP_SANITIZE=address,undefined \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs") || status=1
fi

if [ "${CAP_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzzing the request path for ${CAP_FUZZ_SECONDS:-60} s, the fMP4 reader alongside"
  CC=clang scripts/build.sh build-fuzz -DCAP_FUZZ=ON -DCAP_WERROR=ON \
    -DCAP_FUZZ_SECONDS="${CAP_FUZZ_SECONDS:-60}"
  (cd build-fuzz && ctest --output-on-failure -j"$jobs" -R '^fuzz-') || status=1
fi

exit $status
