#!/bin/sh
# A 32-bit build of MicroPython's unix port, for RAM figures at the ESP32's word size (4-byte pointers,
# 16-byte GC blocks; the installed unix port is 64-bit), without TLS:
#     python -m tools.ram --exe OUT/micropython --no-tls
# With --frozen, the package and the board shims are frozen in, the way boards/*/manifest.py freeze the
# package into an ESP32 firmware (umqtt.simple and ntptime are frozen on a board, machine and network are
# C modules):
#     python -m tools.ram --exe OUT/micropython-frozen --no-tls --frozen
#
# usage: tools/unix32.sh MICROPYTHON_SOURCE OUT [--frozen]
#   MICROPYTHON_SOURCE  a checkout of github.com/micropython/micropython (v1.29; submodules not needed)
#   OUT                 where the binary goes (created)
# Needs gcc-multilib, and the i386 mbedcrypto for hashlib's md5 and sha1 (the ESP32 port has both):
#     dpkg --add-architecture i386 && apt-get update && apt-get install gcc-multilib libmbedtls-dev:i386
# Not part of make test or make bench: it needs the MicroPython source and those packages.
set -eu
usage() { echo "usage: tools/unix32.sh MICROPYTHON_SOURCE OUT [--frozen]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
SRC=$1
OUT=$2
FROZEN=${3:-}
[ -z "$FROZEN" ] || [ "$FROZEN" = --frozen ] || usage
[ -f "$SRC/ports/unix/Makefile" ] || { echo "unix32: $SRC is not a MicroPython source tree (no ports/unix/Makefile)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "unix32: gcc not found" >&2; exit 2; }
echo 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null ||
    { echo "unix32: gcc -m32 cannot link: apt-get install gcc-multilib" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/empty-mpylib"
# The build checks that the micropython-lib submodule is there (its README.md); nothing of it is used.
: > "$OUT/empty-mpylib/README.md"
OUT=$(cd "$OUT" && pwd)
SRC=$(cd "$SRC" && pwd)
# The standard variant's manifest also pulls micropython-lib (a submodule): asyncio alone from it.
{
    echo 'include("$(MPY_DIR)/extmod/asyncio")'
    if [ -n "$FROZEN" ]; then
        echo "package(\"aliyun_iot\", base_path=\"$REPO/firmware\")"
        echo "package(\"umqtt\", base_path=\"$REPO/tools/shims\")"
        for m in machine network ntptime; do
            echo "module(\"$m.py\", base_path=\"$REPO/tools/shims\")"
        done
    fi
} > "$OUT/manifest.py"
NAME=micropython${FROZEN:+-frozen}
make -j2 -C "$SRC/mpy-cross" >/dev/null
make -j2 -C "$SRC/ports/unix" VARIANT=standard BUILD="build-$NAME-32" CC="gcc -m32" LD="ld -m elf_i386" \
    MICROPY_PY_SSL=0 MICROPY_SSL_AXTLS=0 MICROPY_SSL_MBEDTLS=0 MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 \
    FROZEN_MANIFEST="$OUT/manifest.py" MPY_LIB_DIR="$OUT/empty-mpylib" \
    CFLAGS_EXTRA="-DMICROPY_SSL_MBEDTLS=1 -DMICROPY_PY_HASHLIB_MD5=1 -DMICROPY_PY_HASHLIB_SHA1=1" \
    LDFLAGS_EXTRA="-Wl,-Bstatic -lmbedcrypto -Wl,-Bdynamic" >"$OUT/$NAME.log" 2>&1 ||
    { echo "unix32: the build failed; its log: $OUT/$NAME.log" >&2; exit 1; }
cp "$SRC/ports/unix/build-$NAME-32/micropython" "$OUT/$NAME"
"$OUT/$NAME" -c "import sys, hashlib; assert sys.maxsize == 2**31 - 1 and hashlib.md5 and hashlib.sha1" 2>/dev/null ||
    { echo "unix32: $OUT/$NAME is not 32-bit or lacks hashlib.md5/sha1" >&2; exit 1; }
echo "$OUT/$NAME"
