//go:build !linux

// Command tetherdemo tells the relocated subnet's story on Linux network
// namespaces; elsewhere it says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("the relocated-subnet story runs on Linux network namespaces")
	os.Exit(0)
}
