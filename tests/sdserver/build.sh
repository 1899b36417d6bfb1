#!/usr/bin/env bash
# Builds stable-diffusion.cpp's `sd-server` (CPU only) from the source distribution of
# stable-diffusion-cpp-python on PyPI, for the inference-backend integration tests.
#
# Usage: build.sh PYTHON CACHE_DIR
#   PYTHON     a venv python with tests/sdserver/requirements.txt installed
#              (cmake and ninja are taken from the same bin/ folder)
#   CACHE_DIR  where the binary goes: CACHE_DIR/sd-server
#
# Idempotent: a stamp file records what was built; a second run with the same
# settings does nothing. Safe to run concurrently (flock on CACHE_DIR/.lock).
# The build happens in a temporary folder inside CACHE_DIR and the binary is
# moved into place at the end, so CACHE_DIR/sd-server is either absent or complete.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 PYTHON CACHE_DIR" >&2
    exit 2
fi

PYTHON=$1
CACHE_DIR=$2

SDIST_NAME=stable-diffusion-cpp-python
SDIST_VERSION=0.4.7

# Not `readlink -f`: a venv's python is a symlink to the base interpreter, and
# cmake/ninja live next to the symlink, not next to its target.
BIN_DIR=$(cd "$(dirname "$PYTHON")" && pwd)
CMAKE=$BIN_DIR/cmake
NINJA=$BIN_DIR/ninja
for tool in "$PYTHON" "$CMAKE" "$NINJA"; do
    if [ ! -x "$tool" ]; then
        echo "build.sh: $tool not found or not executable (install tests/sdserver/requirements.txt into the venv)" >&2
        exit 1
    fi
done

JOBS=$(nproc 2>/dev/null || echo 2)

# Everything not needed by the server is off: WebP/WebM I/O, ccache, warnings,
# ggml tests/examples, the web frontend (needs pnpm), GPU backends (off by default).
# GGML_NATIVE=OFF builds for x86-64 with AVX2/FMA/F16C (ggml's defaults when
# native is off) rather than -march=native, so a cached binary keeps working if
# the cache outlives the exact CPU it was built on. GIT_EXE is disabled so the
# version string does not pick up whatever git repository encloses the build dir.
CMAKE_ARGS=(
    -G Ninja
    "-DCMAKE_MAKE_PROGRAM=$NINJA"
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5
    -DBUILD_SHARED_LIBS=OFF
    -DSD_BUILD_SHARED_LIBS=OFF
    -DSD_BUILD_EXAMPLES=ON
    -DSD_SERVER_BUILD_FRONTEND=OFF
    -DSD_WEBP=OFF
    -DSD_WEBM=OFF
    -DGGML_NATIVE=OFF
    -DGGML_CCACHE=OFF
    -DGGML_ALL_WARNINGS=OFF
    -DGGML_BUILD_TESTS=OFF
    -DGGML_BUILD_EXAMPLES=OFF
    -DGGML_OPENMP=ON
    -DGIT_EXE=GIT_EXE-NOTFOUND
)

mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
TARGET=$CACHE_DIR/sd-server
STAMP=$CACHE_DIR/sd-server.stamp
STAMP_CONTENT="$SDIST_NAME==$SDIST_VERSION target=sd-server arch=$(uname -m) args=${CMAKE_ARGS[*]/#-DCMAKE_MAKE_PROGRAM=*/}"

up_to_date() {
    [ -x "$TARGET" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_CONTENT" ]
}

# Fast path without the lock.
if up_to_date; then
    echo "build.sh: $TARGET is up to date ($SDIST_NAME $SDIST_VERSION)"
    exit 0
fi

exec 9>"$CACHE_DIR/.lock"
if ! flock -n 9; then
    echo "build.sh: another build holds $CACHE_DIR/.lock; waiting for it" >&2
    flock 9
fi

# Re-check: a concurrent run may have finished the build while we waited.
if up_to_date; then
    echo "build.sh: $TARGET is up to date ($SDIST_NAME $SDIST_VERSION)"
    exit 0
fi

START=$SECONDS
# Leftovers of a run that was killed (we hold the lock, so none is in use).
rm -rf "$CACHE_DIR"/.build.* "$CACHE_DIR"/.sd-server.new.* "$STAMP".new.*
WORK=$(mktemp -d "$CACHE_DIR/.build.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

echo "build.sh: downloading the $SDIST_NAME==$SDIST_VERSION source distribution"
# --no-binary on this one package only: with `--no-binary :all:` pip also builds the
# build backend's own requirements (cmake, ninja) from source just to read the
# package metadata, which takes many minutes. This form still fetches only the sdist.
"$PYTHON" -m pip download --quiet --disable-pip-version-check \
    --no-deps --no-binary "$SDIST_NAME" \
    -d "$WORK/dl" "$SDIST_NAME==$SDIST_VERSION"
SDIST=$(find "$WORK/dl" -maxdepth 1 -name 'stable_diffusion_cpp_python-*.tar.gz' | head -n 1)
if [ -z "$SDIST" ]; then
    echo "build.sh: pip did not produce a source distribution in $WORK/dl" >&2
    ls -la "$WORK/dl" >&2 || true
    exit 1
fi

mkdir -p "$WORK/src"
tar -xzf "$SDIST" -C "$WORK/src"
SRC=$WORK/src/stable_diffusion_cpp_python-$SDIST_VERSION/vendor/stable-diffusion.cpp
if [ ! -f "$SRC/examples/server/main.cpp" ]; then
    echo "build.sh: $SRC/examples/server/main.cpp missing from the source distribution" >&2
    exit 1
fi

echo "build.sh: configuring ($("$CMAKE" --version | head -n 1), ninja $("$NINJA" --version))"
"$CMAKE" -S "$SRC" -B "$WORK/build" "${CMAKE_ARGS[@]}" > "$WORK/configure.log" 2>&1 || {
    cat "$WORK/configure.log" >&2
    exit 1
}

echo "build.sh: building target sd-server with $JOBS jobs (4 to 7 minutes on 2 cores)"
"$CMAKE" --build "$WORK/build" --target sd-server --parallel "$JOBS" > "$WORK/build.log" 2>&1 || {
    tail -n 100 "$WORK/build.log" >&2
    exit 1
}

BUILT=$WORK/build/bin/sd-server
if [ ! -x "$BUILT" ]; then
    echo "build.sh: $BUILT was not produced" >&2
    exit 1
fi
strip "$BUILT" 2>/dev/null || true
"$BUILT" --version > /dev/null 2>&1 || {
    echo "build.sh: the built sd-server does not run" >&2
    "$BUILT" --version >&2 || true
    exit 1
}

# Same filesystem as the target, so both moves are atomic renames.
cp "$BUILT" "$CACHE_DIR/.sd-server.new.$$"
chmod 755 "$CACHE_DIR/.sd-server.new.$$"
mv -f "$CACHE_DIR/.sd-server.new.$$" "$TARGET"
printf '%s\n' "$STAMP_CONTENT" > "$STAMP.new.$$"
mv -f "$STAMP.new.$$" "$STAMP"

echo "build.sh: installed $TARGET in $((SECONDS - START)) s"
