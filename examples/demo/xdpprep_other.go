//go:build !linux

package main

import "errors"

func prepareXDPPeer(ns, dev string) (func(), error) {
	return nil, errors.New("the XDP driver is Linux only")
}
