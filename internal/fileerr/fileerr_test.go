package fileerr

import (
	"errors"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestSyntaxAndList(t *testing.T) {
	var n yaml.Node
	err := yaml.Unmarshal([]byte("a: 1\nb: [\n"), &n)
	if err == nil {
		t.Fatal("yaml accepted a broken document")
	}
	l := Syntax("x.yaml", err)
	if len(l) != 1 || l[0].File != "x.yaml" || l[0].Line == 0 {
		t.Fatalf("Syntax gave %#v", l[0])
	}
	l = append(l, &Error{File: "x.yaml", Line: 3, Field: "ports.vm1", Msg: "no such interface"})
	var e *Error
	if !errors.As(error(l), &e) || e != l[0] {
		t.Fatalf("errors.As found %v", e)
	}
	if got, want := l[1].Error(), "x.yaml:3: ports.vm1: no such interface"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got := (&Error{File: "y", Msg: "empty"}).Error(); got != "y: empty" {
		t.Fatalf("without line and field: %q", got)
	}
}
