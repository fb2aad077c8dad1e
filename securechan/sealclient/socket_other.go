//go:build !linux

package sealclient

import (
	"errors"
	"time"
)

type packetSocket struct{}

var errNoPacket = errors.New("packet sockets need Linux")

func openPacketSocket(int) (*packetSocket, error)               { return nil, errNoPacket }
func (s *packetSocket) send([]byte) error                       { return errNoPacket }
func (s *packetSocket) recv([]byte, time.Duration) (int, error) { return 0, errNoPacket }
func (s *packetSocket) close() error                            { return nil }
