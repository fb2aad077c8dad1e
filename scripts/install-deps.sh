#!/usr/bin/env bash
# Installs the Debian packages nicpath's tests need, when they are missing.
# Only as root (the privileged test tiers need root anyway); otherwise it says
# what is missing and leaves the machine alone.
#   iproute2          ip netns, veth, tc: the namespace tier and the tc -b comparison
#   qemu-system-x86   boots the real-kernel VM tier for tc-flower
#   linux-image-amd64 the kernel and modules (cls_flower, act_*, geneve) that VM boots
#   busybox-static    the init and tools inside the VM's initramfs
#   clang llvm        regenerating the committed BPF objects to check they match
set -euo pipefail
want=(iproute2 qemu-system-x86 linux-image-amd64 busybox-static clang llvm cpio zstd xz-utils)
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: not root; missing Debian packages: ${missing[*]} (tests that need them will skip and say so)" >&2
	exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
for i in 1 2 3; do
	if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
		exit 0
	fi
	echo "install-deps: apt-get failed (try $i), retrying" >&2
	sleep 5
done
exit 1
