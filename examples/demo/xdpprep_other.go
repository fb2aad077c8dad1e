//go:build !linux

package main

import "errors"

func prepareXDPVM(ns, dev string) (func(), error) {
	return nil, errors.New("the XDP driver is Linux only")
}
