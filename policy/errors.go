package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// LoadError is one problem found while loading or building a state. File
// and Line are set when the state came from a document (Line and Column are
// 1-based); Field is the path of the offending field, e.g.
// tenants[0].vnets[1].subnets[2] (for the Go API, the path is built from the
// Builder's lists: vms[3].ca[0]).
type LoadError struct {
	File   string
	Line   int
	Column int
	Field  string
	Msg    string
}

// Error prints file:line: field: msg, leaving out what is unknown.
func (e *LoadError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(":")
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in one document or Build, sorted by
// line. Loading returns it as the error whenever it is not empty; nothing
// is built then.
type ErrorList []*LoadError

func (l ErrorList) Error() string {
	switch len(l) {
	case 0:
		return "no errors"
	case 1:
		return l[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d errors:", len(l))
	for _, e := range l {
		b.WriteString("\n\t")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find a *LoadError in the list.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *LoadError) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}

// pos is a 1-based place in a document.
type pos struct{ line, col int }

// origin says where one object came from, so that every check can name the
// file, line and field of what it rejects.
type origin struct {
	path   string    // e.g. tenants[0].vnets[1]; empty for the Go API:
	list   string    // then the object is list[index] of the Builder,
	index  int       // a path only spelled out when there is an error
	at     pos       // the object itself
	fields []fieldAt // where the values of its fields are
}

// fieldAt is where the value of one field of an object is: name is the
// field's path relative to the object (mac, next_hop.via) and idx the
// item's index for an item of a list (ca[2]), or -1.
type fieldAt struct {
	name string
	idx  int
	at   pos
}

func (o *origin) set(name string, idx int, p pos) {
	o.fields = append(o.fields, fieldAt{name, idx, p})
}

func (o *origin) lookup(name string, idx int) (pos, bool) {
	for _, f := range o.fields {
		if f.idx == idx && f.name == name {
			return f.at, true
		}
	}
	return pos{}, false
}

func (o *origin) field(f string) (string, pos) {
	path := o.path
	if path == "" && o.list != "" {
		path = o.list + "[" + strconv.Itoa(o.index) + "]"
	}
	if f != "" {
		path += "." + f
	}
	name, idx := f, -1
	if i := strings.IndexByte(f, '['); i > 0 && strings.HasSuffix(f, "]") {
		if n, err := strconv.Atoi(f[i+1 : len(f)-1]); err == nil && n >= 0 {
			name, idx = f[:i], n
		}
	}
	if p, ok := o.lookup(name, idx); ok {
		return path, p
	}
	// subnets[2] not recorded: fall back to subnets, then to the object.
	if i := strings.IndexByte(f, '['); i > 0 {
		if p, ok := o.lookup(f[:i], -1); ok {
			return path, p
		}
	}
	if i := strings.IndexByte(f, '.'); i > 0 {
		if p, ok := o.lookup(f[:i], -1); ok {
			return path, p
		}
	}
	return path, o.at
}
