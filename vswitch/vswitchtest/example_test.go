package vswitchtest_test

import (
	"fmt"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/store/storetest"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// Three simulated hosts of a policy, cabled to one underlay: a VM's frame
// to a VM on another host goes through its host's slow path, is offloaded,
// crosses the underlay encapsulated and lands on the receiver's vport. A
// vendor passes its own Factory to NewHostOn to run the same on its NIC.
func Example() {
	st := storetest.ThreeHosts(0)
	u := vswitchtest.NewUnderlay()
	hosts := map[string]*vswitchtest.Host{}
	for _, ph := range st.Hosts() {
		h, err := vswitchtest.NewHostOn(vswitchtest.Softnic, ph, st, st.VMs(), hal.MustMAC("02:00:00:00:ff:01"), nil)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer h.Close()
		u.Add(h)
		hosts[ph.Name] = h
	}
	src, _ := st.VM("streamer")
	dst, _ := st.VM("mover")
	frame := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(src.MAC), DstMAC: hal.MAC(dst.MAC), Src: src.CAs[0], Dst: dst.CAs[0],
		Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 2000, Payload: []byte("hello")})
	for range 2 {
		ds, err := u.Send(hosts["host-c"], "streamer", frame)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(ds)
	}
	for _, f := range hosts["host-c"].Switch.Flows() {
		fmt.Println("host-c flow on the", f.Path)
	}
	// Output:
	// [mover on host-a]
	// [mover on host-a]
	// host-c flow on the nic
}
