//go:build linux

package main

import (
	"fmt"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/devices"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/drivers/xdp"
)

func init() {
	drivers["xdp"] = func(c *config) (conformance.Target, error) {
		mode, ok := map[string]xdp.Mode{"auto": xdp.ModeAuto, "driver": xdp.ModeDriver, "generic": xdp.ModeGeneric}[c.mode]
		if !ok {
			return conformance.Target{}, fmt.Errorf("-mode %q: want auto, driver or generic", c.mode)
		}
		return devices.XDP(c.ports, mode)
	}
	drivers["tcflower"] = func(c *config) (conformance.Target, error) {
		pl, ok := map[string]tcflower.Placement{"any": tcflower.PlaceAny, "software": tcflower.PlaceSoftware, "hardware": tcflower.PlaceHardware}[c.placement]
		if !ok {
			return conformance.Target{}, fmt.Errorf("-placement %q: want any, software or hardware", c.placement)
		}
		return devices.TCFlower(c.ports, pl)
	}
}
