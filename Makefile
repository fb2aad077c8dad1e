# nicpath — see README.md. Every target works on a fresh machine; the
# privileged tiers (namespaces, XDP, the tc-flower VM) run when invoked as root
# and skip with a stated reason otherwise.

GO        ?= go
PKGS      ?= ./...
# Modules of their own inside the repository (the etcd store keeps etcd's
# dependencies out of the core module, the DHT directory libp2p's); every
# target covers them too.
SUBMODULES ?= store/etcd directory/dht
# The race detector and the VM tier are slow on two cores; this bounds the whole run.
TEST_TIMEOUT ?= 45m
FUZZTIME  ?= 30s
FUZZMINIMIZETIME ?= 5s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all test unit race benchsmoke fmtcheck vet lint bench bench-peers fuzz demo demo-tether deps generate

all: test

## test: every tier that exists: format and vet checks, the unit tests under the
## race detector (as root this includes namespaces, XDP and the tc-flower VM),
## and every benchmark once so that they keep compiling and running.
test: deps fmtcheck vet race benchsmoke

deps:
	@bash scripts/install-deps.sh

fmtcheck:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	@for m in $(SUBMODULES); do echo "(cd $$m && $(GO) vet ./...)"; (cd $$m && $(GO) vet ./...) || exit 1; done

unit:
	$(GO) test -count=1 $(PKGS)
	@for m in $(SUBMODULES); do (cd $$m && $(GO) test -count=1 ./...) || exit 1; done

race:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	@for m in $(SUBMODULES); do echo "(cd $$m && $(GO) test -race ./...)"; (cd $$m && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...) || exit 1; done

## (benchsmoke checks that every benchmark runs, not its figure: the softnic
## mapping-memory benchmark runs at 100k mappings there, 8M in make bench.)
benchsmoke:
	SOFTNIC_BENCH_MAPPINGS=100000 $(GO) test -run '^$$' -bench . -benchtime=1x -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	@for m in $(SUBMODULES); do echo "(cd $$m && $(GO) test -bench . -benchtime=1x ./...)"; (cd $$m && $(GO) test -run '^$$' -bench . -benchtime=1x -count=1 -timeout $(TEST_TIMEOUT) ./...) || exit 1; done

## lint: gofmt, go vet and staticcheck.
lint: fmtcheck vet
	$(GO) run $(STATICCHECK) $(PKGS)
	@for m in $(SUBMODULES); do (cd $$m && $(GO) run $(STATICCHECK) ./...) || exit 1; done

## bench: the figures of DESIGN.md, one a line: name value unit target.
## As root this includes bench-peers' figures.
bench:
	$(GO) run ./internal/benchfig $(BENCHFLAGS)

## bench-peers (root): nicpath beside Open vSwitch's userspace datapath, what a
## user would run instead, on the same two-host overlay in the same run: the
## peer.* figures (connections/s, 64-byte frames/s, rules installed/s and
## nicpath's over OVS's). OVS runs as private daemons in the benchmark's own
## namespaces and run directories; an OVS that cannot start is reported absent
## with the reason.
bench-peers: deps
	$(GO) run ./internal/benchfig -only peer. $(BENCHFLAGS)

## fuzz: a short run of every fuzz target (FUZZTIME each, FUZZMINIMIZETIME at
## most on minimizing each new input).
fuzz:
	@SUBMODULES="$(SUBMODULES)" bash scripts/fuzz.sh $(FUZZTIME) $(FUZZMINIMIZETIME)

## demo: the vswitch demo on an embedded default; no setup needed.
## NIC=remote runs each host's NIC in a nicd process of its own (over securechan).
## DIRECTORY=dht: the mappings resolved on demand through a 20-node DHT
## (directory/dht/cmd/dhtdemo, in the DHT's own module).
demo:
ifeq ($(DIRECTORY),dht)
	cd directory/dht && $(GO) run ./cmd/dhtdemo
else
	GO="$(GO)" DRIVER="$(DRIVER)" STORE="$(STORE)" NIC="$(NIC)" $(GO) run ./examples/demo
endif

## demo-tether (root): a subnet relocated to a remote site behind NAT: DHCP
## leases, a node and a VM talking through the NAT, vswitchctl tether/leases,
## NAT rebinding, a tether restart.
demo-tether: deps
	GO="$(GO)" $(GO) run ./examples/tetherdemo

## generate: rebuild generated code (BPF objects need clang).
generate:
	$(GO) generate ./...
