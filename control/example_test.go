package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/nicpath/nicpath/control"
)

// serve answers requests on l the way an agent does: one JSON request a
// line, one JSON response a line. It knows caps only.
func serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req control.Request
			var resp control.Response
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				resp.Error = "not a request"
			} else if req.Cmd == "caps" {
				resp.Result, _ = json.Marshal(control.Caps{Text: "driver: example\n"})
			} else {
				resp.Error = fmt.Sprintf("unknown command %q", req.Cmd)
			}
			out, _ := json.Marshal(resp)
			c.Write(append(out, '\n'))
		}
		c.Close()
	}
}

// A Client asks for a command's result, decoded into the command's type;
// a command the agent refuses comes back as a *CommandError.
func ExampleClient() {
	dir, _ := os.MkdirTemp("", "control-example")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	go serve(l)

	c := &control.Client{Path: sock}
	var caps control.Caps
	if err := c.Call(context.Background(), "caps", nil, &caps); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(caps.Text)
	err = c.Call(context.Background(), "frobnicate", nil, nil)
	var ce *control.CommandError
	fmt.Println(errors.As(err, &ce), err)
	// Output:
	// driver: example
	// true frobnicate: unknown command "frobnicate"
}
