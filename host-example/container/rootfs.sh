#!/usr/bin/env bash
# Builds tcore's container image root offline, from what `make build` left
# in the repository (bin/, the manifest and its lock, ONNX Runtime's
# library) and the shared libraries they load on this machine, and writes
# it as a tar that `podman import` (or `docker import`) turns into an image:
#
#   make build && host-example/container/rootfs.sh tcore-root.tar
#   podman import --change 'ENV PATH=/opt/tcore/bin:/usr/bin:/bin' \
#     --change 'ENV TCORE_MANIFEST=/opt/tcore/manifest.json' \
#     --change 'ENV TCORE_ORT_LIB=/opt/tcore/ort/libonnxruntime.so.1' \
#     --change 'WORKDIR /tcore' tcore-root.tar tcore:local
#
# (A Debian root from packages works too: mmdebstrap --variant=minbase
# bookworm root.tar, then add /opt/tcore as below.)
set -euo pipefail
out=${1:?usage: rootfs.sh OUT.tar}
repo=$(cd "$(dirname "$0")/../.." && pwd)
lib="${TCORE_ORT_LIB:-$repo/third_party/onnxruntime/libonnxruntime.so.1}"
for f in "$repo/bin/tcore" "$repo/manifest.json" "$repo/manifest.lock.json" "$lib"; do
  [ -e "$f" ] || { echo "rootfs.sh: $f missing: run make build" >&2; exit 2; }
done
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/opt/tcore/bin" "$root/opt/tcore/ort" "$root/tmp" "$root/tcore" "$root/etc"
chmod 1777 "$root/tmp"
cp "$repo"/bin/tcore "$repo"/bin/tcore-* "$root/opt/tcore/bin/"
cp "$repo/manifest.json" "$repo/manifest.lock.json" "$root/opt/tcore/"
cp "$lib" "$root/opt/tcore/ort/libonnxruntime.so.1"
# Every shared library the binaries and ONNX Runtime load, with the loader.
for f in "$root"/opt/tcore/bin/* "$root/opt/tcore/ort/libonnxruntime.so.1"; do
  [ -f "$f" ] || continue
  ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}'
done | sort -u | while read -r so; do
  mkdir -p "$root$(dirname "$so")"
  cp -L "$so" "$root$so"
done
echo 'root:x:0:0:root:/root:/bin/false' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" -cf "$out" .
echo "rootfs.sh: wrote $out ($(du -h "$out" | cut -f1))"
