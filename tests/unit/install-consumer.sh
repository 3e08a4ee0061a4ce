#!/usr/bin/env bash
# Installs the build into a scratch prefix and builds a program against it
# with nothing but pkg-config, as a user of the library would.
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name srdma.pc -print -quit)
[ -n "$pc" ] || { echo "FAIL: no srdma.pc installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")

# The shared library exports the public API and nothing else.
so=$(find "$tmp/prefix" -name 'libsrdma.so.*' -type f -print -quit)
[ -n "$so" ] || { echo "FAIL: no libsrdma.so installed" >&2; exit 1; }
exports=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ { print $3 }' | sort)
echo "exported: $(echo $exports)"
grep -qx srdma_psn_generate <<<"$exports" || { echo "FAIL: srdma_psn_generate not exported" >&2; exit 1; }
if grep -vq '^srdma_' <<<"$exports" || grep -qx srdma_psn_from_source <<<"$exports"; then
	echo "FAIL: internal symbols exported" >&2
	exit 1
fi
flags=$(pkg-config --cflags --libs srdma)
echo "pkg-config srdma: $flags"
# shellcheck disable=SC2086
cc -Wall -Wextra -Werror ${CONSUMER_CFLAGS:-} -o "$tmp/consumer" "$src/consumer.c" $flags
# The examples need nothing more than that either.
for ex in echo-server echo-client; do
	# shellcheck disable=SC2086
	cc -Wall -Wextra -Werror ${CONSUMER_CFLAGS:-} -o "$tmp/$ex" "$src/../../examples/$ex.c" $flags
done
echo "examples built with pkg-config alone"
out=$(LD_LIBRARY_PATH=$(pkg-config --variable=libdir srdma) "$tmp/consumer")
echo "$out"
want="srdma $(pkg-config --modversion srdma)"
case "$out" in
"$want psn="*) echo "PASS" ;;
*) echo "FAIL: expected '$want psn=...'" >&2; exit 1 ;;
esac
