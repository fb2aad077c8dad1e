package tcflower

// The exception path's tunnel action is C in bpf/, compiled by bpf2go into
// tunmiss_bpfel.go and tunmiss_bpfel.o, which are committed so that
// building needs no clang. The flags are pinned (bpf2go adds -O2 -mcpu=v1
// -g -fno-ident and a debug prefix map) so that regenerating with the same
// clang gives the same bytes; TestGenerated checks that when clang is
// present.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -target bpfel -no-global-types tunmiss bpf/tunmiss.c -- -mcpu=v3 -Wall -Werror
