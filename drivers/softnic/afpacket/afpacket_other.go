//go:build !linux

package afpacket

import (
	"fmt"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// Binding moves frames between one softnic port and one interface.
type Binding struct{}

// Bind is Linux only.
func Bind(port *softnic.Port, ifname string, o Options) (*Binding, error) {
	return nil, fmt.Errorf("afpacket: binding %s: AF_PACKET is Linux only: %w", ifname, hal.ErrNotSupported)
}

// Interface is the bound interface's name.
func (b *Binding) Interface() string { return "" }

// Stats returns the binding's counters.
func (b *Binding) Stats() Stats { return Stats{} }

// TakesFromHost is false.
func (b *Binding) TakesFromHost() bool { return false }

// Close does nothing.
func (b *Binding) Close() error { return nil }
