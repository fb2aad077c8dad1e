// Package fileerr holds what the configuration readers (agent, tether)
// share: a problem of a file with its file, line and field, every problem
// of one file, and yaml.v3's syntax errors turned into one.
package fileerr

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Error is one problem of a configuration file, with the file, the line
// and the field (a path such as ports.vm1 or relocated[0].tether.key) it is
// about.
type Error struct {
	File   string
	Line   int
	Column int
	Field  string
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// List is every problem of one file.
type List []*Error

func (l List) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *Error.
func (l List) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// Syntax turns yaml.v3's error for file into a List of one, with the line
// yaml.v3 names.
func Syntax(file string, err error) List {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: file, Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
	}
	return List{e}
}
