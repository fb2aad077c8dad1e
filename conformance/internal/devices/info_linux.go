//go:build linux

package devices

import (
	"context"
	"fmt"
	"sort"

	"github.com/safchain/ethtool"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/hal"
)

// deviceInfo reads, with ethtool's driver information (ethtool -i), the
// device behind each port and each tunnel device in the namespace ns: for
// the report's environment. A field the device does not report stays
// empty; an interface ethtool cannot ask is an error.
func deviceInfo(ctx context.Context, ns string, ports []port, tunnels map[hal.EncapKind]string) ([]conformance.DeviceInfo, error) {
	type dev struct{ name, role string }
	var devs []dev
	for _, p := range ports {
		role := "vport"
		if p.kind == hal.PortUplink {
			role = "uplink"
		}
		devs = append(devs, dev{p.name, role})
	}
	var kinds []hal.EncapKind
	for k := range tunnels {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] })
	for _, k := range kinds {
		devs = append(devs, dev{tunnels[k], "tunnel " + k.String()})
	}
	var out []conformance.DeviceInfo
	err := InNetNS(ns, func() error {
		et, err := ethtool.NewEthtool()
		if err != nil {
			return fmt.Errorf("ethtool: %w", err)
		}
		defer et.Close()
		for _, d := range devs {
			if err := ctx.Err(); err != nil {
				return err
			}
			di, err := et.DriverInfo(d.name)
			if err != nil {
				return fmt.Errorf("ethtool -i %s: %w", d.name, err)
			}
			out = append(out, conformance.DeviceInfo{Interface: d.name, Role: d.role, Driver: di.Driver, Version: di.Version,
				Firmware: di.FwVersion, BusInfo: di.BusInfo})
		}
		return nil
	})
	return out, err
}
