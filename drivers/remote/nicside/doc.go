// Package nicside is the NIC side of a SmartNIC or DPU deployment as a
// library: it opens a NIC through a driver (softnic, xdp or tcflower) and
// serves it to the host's vswitch over the secure channel (drivers/remote),
// on unix sockets, TCP and vsock. examples/nicd is its command.
//
// The configuration (YAML; relative paths are relative to its directory):
//
//	driver: softnic              # softnic, xdp or tcflower
//	key: nic.key                 # this side's private key file
//	hosts: [host.pub]            # public key files of the hosts allowed in
//	listen:                      # one or more
//	  - unix:/run/nicd.sock
//	  - tcp:127.0.0.1:7470
//	  - vsock:any:7470           # where the kernel has AF_VSOCK
//	apply_chunk: 4096            # optional: operations per NIC call
//	log_level: info              # debug, info, warn, error
//	softnic:                     # driver: softnic
//	  device: dpu0
//	  crypto: false              # sealed addresses opened on the NIC
//	  max_rules: 1048576         # optional, every driver: the rule table's
//	                             # size (Capabilities.MaxRules)
//	  max_batch: 65536           # optional, every driver: the most operations
//	                             # of one Apply (Capabilities.MaxBatch)
//	  binding: none              # none, or afpacket: each port bound to the
//	                             # interface of its name
//	  netns: /run/netns/x        # afpacket: the interfaces' namespace
//	  ports:
//	    - {name: vm1, kind: vport, mac: "02:00:00:00:00:01"}
//	    - {name: uplink, kind: uplink, mac: "02:00:00:00:00:ff", mtu: 1600}
//	xdp:                         # driver: xdp (xdp.Config)
//	  netns: /run/netns/x
//	  mode: auto                 # auto, driver, generic
//	  max_rules: 65536
//	  max_batch: 4096
//	  ports: [{name: veth-vm1, kind: vport}, {name: eth1, kind: uplink}]
//	tcflower:                    # driver: tcflower (tcflower.Config)
//	  netns: /run/netns/x
//	  placement: any             # any, hardware, software
//	  tunnels: {vxlan: vx0}
//	  max_rules: 4096
//	  max_batch: 256
//	  ports: [{name: rep0, kind: vport}, {name: eth1, kind: uplink}]
//
// max_rules and max_batch left out or 0 are the driver's defaults; a
// negative value, or one above the driver's maximum (softnic's max_rules:
// softnic.MostRules; xdp's: xdp.MostRules), is refused naming the field, and nothing is served.
//
// Serve serves until its context is done. A host that goes away changes
// nothing on the NIC: it keeps forwarding on its rules until a host
// reconnects and reconciles.
package nicside
