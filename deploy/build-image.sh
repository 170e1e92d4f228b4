#!/usr/bin/env bash
#
# build-image.sh — builds the broker's container image without pulling anything.
#
#   deploy/build-image.sh [--tag TAG] [--no-build]
#
# The image is `FROM scratch` plus a root filesystem this script assembles from the
# release binaries cargo already built for the host (target/release/): broker,
# broker-probe (the health check) and mqctl when the workspace has it, every shared
# library `ldd` says they load (glibc's loader, libc, libm, libgcc_s), and a minimal
# /etc. Why not a static binary: deploy/README.md, "The image".
#
# --tag TAG    image tag (default $BROKER_IMAGE, else broker:local: the tag
#              deploy/docker-compose.yml runs, which reads BROKER_IMAGE too)
# --no-build   use the binaries in target/release as they are; without it the script
#              runs `cargo build --release` for them first (a no-op when up to date)
#
# Environment: CARGO_TARGET_DIR (default ./target), DOCKER (default docker).
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly BROKER_UID=10001

tag=${BROKER_IMAGE:-broker:local}
build=1
while (($#)); do
	case $1 in
	--tag)
		tag=${2:?--tag needs a value}
		shift 2
		;;
	--no-build)
		build=0
		shift
		;;
	-h | --help)
		sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build-image.sh: unknown argument '$1' (try --help)" >&2
		exit 2
		;;
	esac
done

die() {
	echo "build-image.sh: $*" >&2
	exit 1
}

target_dir=${CARGO_TARGET_DIR:-$REPO/target}
bin_dir=$target_dir/release
docker=${DOCKER:-docker}

# mqctl is optional: it is in the image when some workspace package has that binary.
bins=(broker broker-probe)
mqctl_package=$(cd "$REPO" && cargo metadata --no-deps --format-version 1 |
	jq -r '.packages[] | select(any(.targets[]; .name == "mqctl" and (.kind | index("bin")))) | .name' |
	head -n 1)
if [[ $build == 1 ]]; then
	(cd "$REPO" && cargo build --release -p broker --bin broker --bin broker-probe)
	if [[ -n $mqctl_package ]]; then
		(cd "$REPO" && cargo build --release -p "$mqctl_package" --bin mqctl)
	fi
fi
[[ -n $mqctl_package || -x $bin_dir/mqctl ]] && bins+=(mqctl)
for bin in "${bins[@]}"; do
	[[ -x $bin_dir/$bin ]] || die "$bin_dir/$bin is missing (run without --no-build)"
done

context=$(mktemp -d "${TMPDIR:-/tmp}/broker-image.XXXXXX")
trap 'rm -rf -- "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$context/data"

for bin in "${bins[@]}"; do
	# Debug line tables (profile.release has debug = 1) would triple the image;
	# symbols stay, so panics still name functions.
	objcopy --strip-debug "$bin_dir/$bin" "$rootfs/usr/local/bin/$bin"
	# `ldd` lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and the
	# loader "/lib64/ld-linux-x86-64.so.2 (0x…)"; vdso has no file.
	ldd "$bin_dir/$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
		while read -r lib; do
			[[ -e $rootfs$lib ]] && continue
			mkdir -p "$rootfs$(dirname "$lib")"
			cp -L "$lib" "$rootfs$lib"
		done
done
[[ -n $(find "$rootfs" -name 'ld-linux*') ]] || die "ldd named no dynamic loader: is $bin_dir/broker dynamically linked?"

# Name resolution goes through glibc's getaddrinfo. Since glibc 2.34 the `files`
# and `dns` NSS services are built into libc.so.6, so nothing is dlopen'ed; this
# file only fixes their order. /etc/hosts and /etc/resolv.conf come from the
# container runtime (Docker's embedded DNS resolves Compose service names,
# kubelet's resolv.conf resolves the headless Service's pod names).
glibc_minor=$(ldd --version | sed -n '1s/.* 2\.\([0-9]*\)$/\1/p')
[[ -n $glibc_minor && $glibc_minor -ge 34 ]] ||
	die "glibc 2.${glibc_minor:-?} on this host: before 2.34 the NSS modules are separate libraries this script does not copy"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\nbroker:x:%s:%s:broker:/data:/sbin/nologin\n' \
	"$BROKER_UID" "$BROKER_UID" >"$rootfs/etc/passwd"
printf 'root:x:0:\nbroker:x:%s:\n' "$BROKER_UID" >"$rootfs/etc/group"

cp "$REPO/deploy/Dockerfile" "$context/Dockerfile"
revision=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
"$docker" build --quiet --build-arg "REVISION=$revision" -t "$tag" "$context" >/dev/null
size=$("$docker" image inspect --format '{{.Size}}' "$tag")
echo "built $tag ($((size / 1024 / 1024)) MiB: ${bins[*]})"
