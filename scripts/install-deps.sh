#!/usr/bin/env bash
# Installs the Debian packages nicpath's tests need, when they are missing.
# Only as root (the privileged test tiers need root anyway); otherwise it says
# what is missing and leaves the machine alone.
#   iproute2          ip netns, veth, tc: the namespace tier and the tc -b comparison
#   qemu-system-x86   boots the real-kernel VM tier for tc-flower
#   linux-image-amd64 the kernel and modules (cls_flower, act_*, geneve) that VM boots
#   busybox-static    the init and tools inside the VM's initramfs
#   clang llvm        regenerating the committed BPF objects to check they match
#   openvswitch-switch the peer nicpath is measured against side by side (make bench-peers)
#                     and tested with (vswitch/vswitchtest/peerbed's OVS hosts): its userspace datapath,
#                     whose daemons the tests start in their own namespaces and run
#                     directories. The system's own openvswitch service is never started
#                     by this install (see policy-rc.d below): nothing here uses it.
#   conntrack nftables iputils-ping  the relocated-subnet tier: its NAT (nftables masquerade),
#                     flushing its mappings, and ping -M do for the too-big answers
set -euo pipefail
want=(iproute2 qemu-system-x86 linux-image-amd64 busybox-static clang llvm cpio zstd xz-utils openvswitch-switch conntrack nftables iputils-ping)
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
# Debian's maintainer scripts start the services they install (openvswitch-switch's
# ovsdb-server and ovs-vswitchd, with the kernel datapath) through invoke-rc.d, which
# asks /usr/sbin/policy-rc.d first: exit 101 there means "do not start". Put one in
# place for this install only, unless the machine has its own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\n# nicpath install-deps: no service starts during this install\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
for i in 1 2 3; do
	if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
		exit 0
	fi
	echo "install-deps: apt-get failed (try $i), retrying" >&2
	sleep 5
done
exit 1
