package driver_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/hal"
)

// nopNIC stands for an opened NIC: the tests only look at what the opener
// was given.
type nopNIC struct{ hal.NIC }

// got is the configuration drivertest-a was last opened with.
var got driver.Config

// Registered once for the test binary (a test may run more than once).
func init() {
	driver.Register("drivertest-a", func(_ context.Context, c driver.Config) (hal.NIC, error) {
		got = c
		return nopNIC{}, nil
	}, "address", "key")
	driver.Register("drivertest-b", func(context.Context, driver.Config) (hal.NIC, error) {
		return nil, errors.New("no device")
	})
	driver.Register("drivertest-twice", func(context.Context, driver.Config) (hal.NIC, error) { return nil, nil })
}

func TestRegisterAndOpen(t *testing.T) {
	names := driver.Names()
	ia, ib := slices.Index(names, "drivertest-a"), slices.Index(names, "drivertest-b")
	if ia < 0 || ib != ia+1 {
		t.Fatalf("Names() = %v: want both, in registration order", names)
	}
	if !driver.Known("drivertest-a") || driver.Known("drivertest-c") {
		t.Fatal("Known is wrong")
	}
	if o := driver.Options("drivertest-a"); !slices.Equal(o, []string{"address", "key"}) {
		t.Fatalf("Options = %v", o)
	}
	cfg := driver.Config{Host: "h", Ports: []driver.Port{{ID: 1, Name: "up0", Kind: hal.PortUplink}},
		Options: map[string]string{"address": "unix:/x"}}
	if _, err := driver.Open(context.Background(), "drivertest-a", cfg); err != nil {
		t.Fatal(err)
	}
	if got.Host != "h" || got.Options["address"] != "unix:/x" || got.Logger == nil || len(got.Ports) != 1 {
		t.Fatalf("the opener got %+v", got)
	}
	cfg.Options["colour"] = "blue"
	if _, err := driver.Open(context.Background(), "drivertest-a", cfg); err == nil || !strings.Contains(err.Error(), `no option "colour"`) {
		t.Fatalf("an unknown option: %v", err)
	}
	if _, err := driver.Open(context.Background(), "drivertest-b", driver.Config{}); err == nil || err.Error() != "no device" {
		t.Fatalf("the opener's error: %v", err)
	}
	if _, err := driver.Open(context.Background(), "drivertest-c", driver.Config{}); err == nil || !strings.Contains(err.Error(), "unknown driver") {
		t.Fatalf("an unknown driver: %v", err)
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	open := func(context.Context, driver.Config) (hal.NIC, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		open driver.Opener
	}{{"drivertest-twice", open}, {"", open}, {"drivertest-nil", nil}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q, nil opener: %v) did not panic", tc.name, tc.open == nil)
				}
			}()
			driver.Register(tc.name, tc.open)
		}()
	}
}
