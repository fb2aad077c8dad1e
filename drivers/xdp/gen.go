package xdp

// The datapath is C in bpf/, compiled by bpf2go into nicpath_bpfel.go and
// nicpath_bpfel.o, which are committed so that building needs no clang. The
// flags are pinned (bpf2go adds -O2 -mcpu=v1 -g -fno-ident and a debug
// prefix map; -mcpu=v3 overrides the CPU for 32-bit jumps and ALU) so that
// regenerating with the same clang gives the same bytes; TestGenerated checks
// that when clang is present.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -target bpfel -no-global-types nicpath bpf/nicpath.c -- -mcpu=v3 -Wall -Werror -Wno-unused-function -Ibpf
