#!/usr/bin/env bash
# Builds the Tally container image, on a machine with no image registry.
#
#   deploy/container/build.sh [IMAGE...]     default: tally:dev and tally:VERSION
#
# The image is FROM scratch: tallyd and tallyctl as cargo builds them here (glibc, not
# static: the toolchain has no musl target), the shared libraries `ldd` says they load,
# the dynamic loader, an /etc/passwd naming the non-root user `tally` (10001), and the
# directories that user writes. Nothing is pulled, so nothing but this machine's own
# build goes in.
#
# TALLY_BIN_DIR=DIR takes the binaries from DIR as they are (the tests give their debug
# build); otherwise `cargo build --release` runs first (a no-op when up to date).
# TALLY_STRIP=0 keeps the line tables the release profile compiles in (backtraces with
# file:line); by default they are stripped, which halves the image.
set -euo pipefail
die() { echo "build.sh: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$version" ] || die "no version in $repo/Cargo.toml"
tags=("$@")
[ ${#tags[@]} -gt 0 ] || tags=(tally:dev "tally:$version")

command -v docker >/dev/null || die "no docker command"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

if [ -n "${TALLY_BIN_DIR:-}" ]; then
  bin=$TALLY_BIN_DIR
else
  (cd "$repo" && cargo build --release -p tally-server -p tally-cli >&2)
  bin=$repo/target/release
fi
for b in tallyd tallyctl; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing (build it, or set TALLY_BIN_DIR)"
done

work=$(mktemp -d)
# The staging root holds copies of the host's libc; never leave it behind.
trap 'rm -rf "$work"' EXIT
root=$work/root ctx=$work/ctx
mkdir -p "$root/usr/local/bin" "$ctx"

for b in tallyd tallyctl; do
  install -m 0755 "$bin/$b" "$root/usr/local/bin/$b"
  if [ "${TALLY_STRIP:-1}" != 0 ]; then
    # Debug sections only: symbol names stay, so a panic's backtrace still names functions.
    strip --strip-debug "$root/usr/local/bin/$b" 2>/dev/null \
      || echo "build.sh: strip not available, keeping $b's debug info" >&2
  fi
done

# Each library at the path the loader looks for it (ldd's "=> /path"), plus the loader at
# the path the binaries name (PT_INTERP, ldd's line without "=>"). cp -L: the file, not
# the distribution's symlink to it.
libs=$(for b in tallyd tallyctl; do
  out=$(ldd "$bin/$b" 2>&1) || { case $out in *"not a dynamic executable"*) continue ;; *) die "ldd $b: $out" ;; esac; }
  case $out in *"not found"*) die "$b needs a library this machine lacks: $out" ;; esac
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
done | sort -u)
for l in $libs; do
  mkdir -p "$root$(dirname "$l")"
  cp -L "$l" "$root$l"
done

mkdir -p "$root/etc/tally/config" "$root/etc/tally/tls" "$root/etc/tally/ca" "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"
chmod 0700 "$root/data" "$root/etc/tally/ca"
chmod 0750 "$root/etc/tally/tls"
# A user and group name for `ps`, logs and tools that look the id up; no shell, no login.
# Its home does not exist (Debian's convention for system users), so `tallyctl` finds no
# ~/.config/tally/tally.env and takes its settings from flags and TALLY_* alone.
printf 'root:x:0:0:root:/root:/nonexistent\ntally:x:10001:10001:Tally license server:/nonexistent:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\ntally:x:10001:\n' >"$root/etc/group"

# Two passes into one tar so that ADD gives each file its owner: everything root's, then
# the directories tally writes (a fresh named volume copies the image's directory, owner
# included, so /data and the certificate volumes start writable by 10001). Sorted and
# dated at 0, so the same binaries give the same layer and Docker's cache holds.
owned=(./data ./etc/tally/tls ./etc/tally/ca)
tarf=(--numeric-owner --sort=name --mtime=@0 -C "$root")
tar -cf "$ctx/rootfs.tar" --owner=0 --group=0 "${tarf[@]}" \
  --exclude=./data --exclude=./etc/tally/tls --exclude=./etc/tally/ca .
tar -rf "$ctx/rootfs.tar" --owner=10001 --group=10001 "${tarf[@]}" "${owned[@]}"
cp "$here/Dockerfile" "$ctx/Dockerfile"

targs=()
for t in "${tags[@]}"; do targs+=(-t "$t"); done
# The legacy builder when the CLI has no buildx plugin: FROM scratch needs neither.
docker build --build-arg "VERSION=$version" "${targs[@]}" "$ctx" >&2
size=$(docker image inspect -f '{{.Size}}' "${tags[0]}")
echo "built ${tags[*]}: $((size / 1024 / 1024)) MiB ($size bytes)" >&2
echo "${tags[0]}"
