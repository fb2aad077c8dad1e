package policy

import (
	"bufio"
	"errors"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Streaming. yaml.v3 decodes a whole document into a tree of yaml.Node
// (about 150 bytes a node, a dozen nodes a VM: gigabytes for millions of
// mappings) and has no event API to read a document piece by piece. So the
// loader reads documents itself, line by line, when they are written in
// the block style policy files use: block mappings and lists, flow lists
// and mappings that close on their line, plain and quoted scalars on one
// line, comments, and "---" and "..." around the one document. It builds
// the same yaml.Node values yaml.v3 would (kind, value, line and column;
// FuzzStreamMatchesYAML checks it), so that one decoder serves both; the
// VMs of each VNET are decoded as they are read, from nodes reused VM
// after VM, and only the rest of the document is kept as a tree.
//
// Anything else (anchors and aliases, tags, block scalars, a scalar or a
// flow collection over several lines, tabs, a second document, an empty
// document, anything that is not YAML at all) stops the reader, and the
// document is parsed again, whole, by yaml.v3, which also words every
// syntax error.

// errNotStreamable says the document uses YAML the streaming reader does
// not read.
var errNotStreamable = errors.New("policy: the document is not in the streaming subset of YAML")

// streamBuilder decodes the document r holds into a Builder as it reads
// it, or returns errNotStreamable.
func streamBuilder(filename string, r io.Reader) (*Builder, error) {
	// Without aliases a document cannot hold more values than bytes: no
	// budget to keep.
	d := newDecoder(filename, math.MaxInt)
	d.streaming, d.streamed = true, map[*yaml.Node]vmSpan{}
	s := &streamer{r: bufio.NewReaderSize(r, 256<<10), d: d, keys: map[string]string{}}
	// The VMs are decoded on another goroutine, batch after batch, while
	// the reader goes on: two cores load a large file in about half the
	// time. Only that goroutine touches the decoder until it is done.
	s.full, s.free = make(chan *vmBatch, vmBatches), make(chan *vmBatch, vmBatches)
	for range vmBatches {
		s.free <- &vmBatch{}
	}
	s.batch = <-s.free
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range s.full {
			for _, it := range b.items {
				if it.i == 0 {
					d.b.vmDoc.startList(d.vms.n, it.list)
				}
				d.vm(it.n, it.list, it.i)
			}
			s.free <- b
		}
	}()
	root, err := s.document()
	if len(s.batch.items) > 0 {
		s.full <- s.batch
	}
	close(s.full)
	<-done
	if err != nil {
		return nil, err
	}
	d.document(root)
	for _, sp := range d.streamed {
		if !sp.filled {
			// Every streamed list is under a VNET that document decodes;
			// were one not, the whole parse would say why.
			return nil, errNotStreamable
		}
	}
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	d.b.vms = d.vms.flat()
	return d.b, nil
}

// streamTree reads the document r holds into a tree as yaml.v3 would,
// streaming nothing, or returns errNotStreamable. (For tests: the streaming
// reader must read what yaml.v3 reads.)
func streamTree(r io.Reader) (*yaml.Node, error) {
	s := &streamer{r: bufio.NewReader(r), keys: map[string]string{}}
	return s.document()
}

// role is what a block is in the document, for the blocks that lead to
// the VMs: those are decoded as they are read. Only the first occurrence
// of a key counts (a repeated key is an error, its value unused).
type role uint8

const (
	roleNone    role = iota
	roleRoot         // the document's mapping
	roleTenants      // its tenants list
	roleTenant       // an item of that list
	roleVNETs        // the tenant's vnets list
	roleVNET         // an item of that list
	roleVMs          // the VNET's vms list: streamed
)

// roleKey is the key of a mapping in a role whose value has the next role.
var roleKey = [...]string{roleRoot: "tenants", roleTenant: "vnets", roleVNET: "vms", roleVMs: ""}

// maxDepth bounds nesting; deeper documents go to yaml.v3.
const maxDepth = 64

// maxKey is the longest key the reader takes: yaml.v3 refuses a key longer
// than 1024 characters, and says so itself.
const maxKey = 1000

type streamer struct {
	r    *bufio.Reader
	d    *decoder // nil: read the whole tree (streamTree)
	long []byte   // a line longer than the reader's buffer

	// The current line: the first significant (neither blank nor comment)
	// line not yet consumed.
	text   []byte // without its line break
	num    int    // its number, from 1
	indent int    // leading spaces
	ascii  bool
	marker byte // '-' or '.' for a document marker ("---", "..."), else 0
	eof    bool

	depth  int
	keys   map[string]string // interned keys
	ti, vi int               // indexes of the tenant and VNET being read
	buf    []byte            // scratch for quoted scalars

	// The nodes of the VM being read come from the batch's arena; a batch
	// of VMs read goes to full, to be decoded, and comes back through free
	// to be reused.
	batch      *vmBatch
	full, free chan *vmBatch
	inVM       bool
	vms        int // VMs read
}

// vmBatch is VMs read and not yet decoded, their nodes in arena.
type vmBatch struct {
	arena []*yaml.Node
	used  int
	items []vmItem
}

// vmItem is VM i of the vms list at path list.
type vmItem struct {
	n    *yaml.Node
	list string
	i    int
}

const (
	batchVMs  = 256
	vmBatches = 4
)

// send hands the batch of VMs read to the decoding goroutine and takes an
// empty one.
func (s *streamer) send() {
	s.full <- s.batch
	s.batch = <-s.free
	s.batch.used, s.batch.items = 0, s.batch.items[:0]
}

func (s *streamer) fail() error { return errNotStreamable }

// next makes the next significant line the current one.
func (s *streamer) next() error {
	for {
		line, err := s.readLine()
		if err == io.EOF {
			s.eof, s.text, s.marker, s.indent = true, nil, 0, 0
			return nil
		}
		if err != nil {
			return err
		}
		s.num++
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		indent := 0
		for indent < len(line) && line[indent] == ' ' {
			indent++
		}
		ascii := true
		for _, c := range line[indent:] {
			if c-0x20 >= 0x5f {
				if c < 0x80 {
					// Tabs, control characters, a CR alone, DEL.
					return s.fail()
				}
				ascii = false
			}
		}
		if !ascii && !printable(line) {
			return s.fail()
		}
		if indent == len(line) || line[indent] == '#' {
			continue
		}
		s.text, s.indent, s.ascii, s.marker = line, indent, ascii, 0
		if indent == 0 && len(line) >= 3 && (string(line[:3]) == "---" || string(line[:3]) == "...") &&
			(len(line) == 3 || line[3] == ' ') {
			s.marker = line[0]
		}
		return nil
	}
}

// printable reports whether a line is valid UTF-8 of characters yaml.v3
// reads as they are: no byte order mark, no line breaks other than \n (NEL,
// LS and PS would count as lines) and nothing it rejects.
func printable(line []byte) bool {
	for i := 0; i < len(line); {
		r, n := utf8.DecodeRune(line[i:])
		switch {
		case r < 0x80:
		case r == utf8.RuneError && n == 1:
			return false
		case r == 0x2028 || r == 0x2029:
			return false
		case r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD && r != 0xFEFF:
		default:
			return false
		}
		i += n
	}
	return true
}

func (s *streamer) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		s.long = append(s.long[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = s.r.ReadSlice('\n')
			s.long = append(s.long, line...)
		}
		line = s.long
	}
	if err == io.EOF && len(line) > 0 {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	if n := len(line); line[n-1] == '\n' {
		line = line[:n-1]
	}
	return line, nil
}

// col is the 1-based column of byte p of the current line, in characters
// as yaml.v3 counts them.
func (s *streamer) col(p int) int {
	if s.ascii {
		return p + 1
	}
	return utf8.RuneCount(s.text[:p]) + 1
}

func (s *streamer) node(kind yaml.Kind, p int) *yaml.Node {
	var n *yaml.Node
	if s.inVM {
		b := s.batch
		if b.used == len(b.arena) {
			b.arena = append(b.arena, new(yaml.Node))
		}
		n = b.arena[b.used]
		b.used++
		// Only these fields are ever set on the reader's nodes.
		n.Value, n.Content = "", n.Content[:0]
	} else {
		n = new(yaml.Node)
	}
	n.Kind, n.Line, n.Column = kind, s.num, s.col(p)
	return n
}

func (s *streamer) scalar(value string, p int) *yaml.Node {
	n := s.node(yaml.ScalarNode, p)
	n.Value = value
	return n
}

// intern returns a shared copy of b, for strings that repeat (keys, host
// names), up to a bound.
func intern(m map[string]string, b []byte) string {
	if k := knownKey(b); k != "" {
		return k
	}
	if v, ok := m[string(b)]; ok {
		return v
	}
	v := string(b)
	if len(m) < 1<<16 {
		m[v] = v
	}
	return v
}

func (s *streamer) skip(i int) int {
	for i < len(s.text) && s.text[i] == ' ' {
		i++
	}
	return i
}

// restBlank reports whether nothing but blanks and a comment follow byte p
// (the end of a token) on the current line.
func (s *streamer) restBlank(p int) bool {
	i := s.skip(p)
	return i == len(s.text) || (s.text[i] == '#' && i > p)
}

// endLine consumes the rest of the current line after a value ending at
// byte e, and checks that the next line does not continue it (a line more
// indented than the block holding the value would).
func (s *streamer) endLine(e, indent int) error {
	if !s.restBlank(e) {
		return s.fail()
	}
	if err := s.next(); err != nil {
		return err
	}
	if !s.eof && s.marker == 0 && s.indent > indent {
		return s.fail()
	}
	return nil
}

func (s *streamer) document() (*yaml.Node, error) {
	if err := s.next(); err != nil {
		return nil, err
	}
	if s.eof {
		return nil, s.fail()
	}
	if s.marker == '-' {
		if !s.restBlank(3) {
			return nil, s.fail()
		}
		if err := s.next(); err != nil {
			return nil, err
		}
	}
	if s.eof || s.marker != 0 {
		return nil, s.fail()
	}
	root, err := s.block(s.indent, roleRoot)
	if err != nil {
		return nil, err
	}
	if s.marker == '.' {
		if !s.restBlank(3) {
			return nil, s.fail()
		}
		if err := s.next(); err != nil {
			return nil, err
		}
	}
	if !s.eof {
		// A second document, or text less indented than the first line.
		return nil, s.fail()
	}
	return root, nil
}

// isEntry reports whether byte p of the current line starts a block list
// item.
func (s *streamer) isEntry(p int) bool {
	return p < len(s.text) && s.text[p] == '-' && (p+1 == len(s.text) || s.text[p+1] == ' ')
}

// block reads the block list or mapping starting at byte p of the current
// line.
func (s *streamer) block(p int, r role) (*yaml.Node, error) {
	if s.depth++; s.depth > maxDepth {
		return nil, s.fail()
	}
	defer func() { s.depth-- }()
	if s.isEntry(p) {
		return s.seq(p, r)
	}
	return s.mapping(p, r, nil, 0)
}

// seq reads a block list whose dashes are in column col.
func (s *streamer) seq(col int, r role) (*yaml.Node, error) {
	n := s.node(yaml.SequenceNode, col)
	var list string
	var span vmSpan
	if r == roleVMs {
		list = "tenants[" + strconv.Itoa(s.ti) + "].vnets[" + strconv.Itoa(s.vi) + "].vms"
		span.lo = s.vms
	}
	for i := 0; ; i++ {
		itemRole := roleNone
		switch r {
		case roleTenants:
			s.ti, itemRole = i, roleTenant
		case roleVNETs:
			s.vi, itemRole = i, roleVNET
		case roleVMs:
			s.inVM = true
		}
		item, err := s.entry(col, itemRole)
		s.inVM = false
		if err != nil {
			return nil, err
		}
		if r == roleVMs {
			s.batch.items = append(s.batch.items, vmItem{item, list, i})
			if s.vms++; len(s.batch.items) == batchVMs {
				s.send()
			}
		} else {
			n.Content = append(n.Content, item)
		}
		if s.eof || s.marker != 0 || s.indent < col {
			break
		}
		if s.indent > col {
			return nil, s.fail()
		}
		if !s.isEntry(col) {
			// The next key of the mapping this list is the value of,
			// at the same indentation.
			break
		}
	}
	if r == roleVMs {
		span.hi = s.vms
		s.d.streamed[n] = span
	}
	return n, nil
}

// entry reads the list item whose dash is at byte col of the current line.
func (s *streamer) entry(col int, r role) (*yaml.Node, error) {
	q := s.skip(col + 1)
	if q == len(s.text) || s.text[q] == '#' {
		// The item is on the next lines, more indented.
		if err := s.next(); err != nil {
			return nil, err
		}
		if s.eof || s.marker != 0 || s.indent <= col {
			return nil, s.fail() // an empty item
		}
		return s.block(s.indent, r)
	}
	if s.isEntry(q) {
		return nil, s.fail() // - - a
	}
	if k, after, ok, err := s.key(q); err != nil {
		return nil, err
	} else if ok {
		// A mapping starting on the dash's line.
		if s.depth++; s.depth > maxDepth {
			return nil, s.fail()
		}
		defer func() { s.depth-- }()
		return s.mapping(q, r, k, after)
	}
	v, e, err := s.value(q)
	if err != nil {
		return nil, err
	}
	return v, s.endLine(e, col)
}

// mapping reads a block mapping whose keys are in column col, the first
// at byte col of the current line (k and after, when the caller read it
// already).
func (s *streamer) mapping(col int, r role, k *yaml.Node, after int) (*yaml.Node, error) {
	n := s.node(yaml.MappingNode, col)
	seen := false
	for first := true; ; first = false {
		if !first {
			if s.eof || s.marker != 0 || s.indent < col || s.isEntry(col) {
				break
			}
			if s.indent > col {
				return nil, s.fail()
			}
			k = nil
		}
		if k == nil {
			var ok bool
			var err error
			if k, after, ok, err = s.key(col); err != nil {
				return nil, err
			} else if !ok {
				return nil, s.fail()
			}
		}
		vr := roleNone
		if s.d != nil && r < roleVMs && roleKey[r] != "" && k.Value == roleKey[r] && !seen {
			seen, vr = true, r+1
		}
		v, err := s.mapValue(after, col, vr, s.d != nil && k.Value == "host")
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, k, v)
	}
	return n, nil
}

// mapValue reads the value of a key of a mapping in column col, the key's
// colon ending before byte after.
func (s *streamer) mapValue(after, col int, r role, host bool) (*yaml.Node, error) {
	q := s.skip(after)
	if q == len(s.text) || s.text[q] == '#' {
		if err := s.next(); err != nil {
			return nil, err
		}
		switch {
		case s.eof || s.marker != 0:
		case s.indent > col:
			return s.block(s.indent, r)
		case s.indent == col && s.isEntry(col):
			// A list at the key's own indentation.
			if s.depth++; s.depth > maxDepth {
				return nil, s.fail()
			}
			defer func() { s.depth-- }()
			return s.seq(col, r)
		}
		return nil, s.fail() // an empty value
	}
	v, e, err := s.value(q)
	if err != nil {
		return nil, err
	}
	if host && v.Kind == yaml.ScalarNode {
		v.Value = s.d.host(v.Value)
	}
	return v, s.endLine(e, col)
}

func isIndicator(c byte) bool {
	switch c {
	case '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`':
		return true
	}
	return false
}

func isFlowIndicator(c byte) bool {
	return c == ',' || c == '[' || c == ']' || c == '{' || c == '}'
}

// key reads the key of a block mapping at byte p of the current line: ok
// is false if there is none (a scalar alone); after is the byte after its
// colon.
func (s *streamer) key(p int) (k *yaml.Node, after int, ok bool, err error) {
	t := s.text
	var colon int
	var value string
	switch c := t[p]; {
	case c == '"' || c == '\'':
		v, e, qok := s.quoted(p)
		if !qok {
			return nil, 0, false, s.fail()
		}
		colon = s.skip(e)
		if colon == len(t) || t[colon] != ':' || (colon+1 < len(t) && t[colon+1] != ' ') {
			return nil, 0, false, nil
		}
		value = v
	case isIndicator(c):
		return nil, 0, false, nil
	default:
		colon = -1
		for i := p; i < len(t); i++ {
			if t[i] == ':' && (i+1 == len(t) || t[i+1] == ' ') {
				colon = i
				break
			}
			if t[i] == '#' && t[i-1] == ' ' {
				break
			}
		}
		if colon < 0 {
			return nil, 0, false, nil
		}
		e := colon
		for t[e-1] == ' ' {
			e--
		}
		value = intern(s.keys, t[p:e])
	}
	if colon-p > maxKey {
		return nil, 0, false, s.fail()
	}
	return s.scalar(value, p), colon + 1, true, nil
}

// value reads a scalar or a flow collection at byte p of the current line,
// in a block, and returns the byte after it.
func (s *streamer) value(p int) (*yaml.Node, int, error) {
	t := s.text
	switch c := t[p]; {
	case c == '[' || c == '{' || c == '"' || c == '\'':
		return s.flowNode(p)
	case isIndicator(c):
		return nil, 0, s.fail()
	}
	i := p
	for ; i < len(t); i++ {
		if t[i] == ':' && (i+1 == len(t) || t[i+1] == ' ') {
			return nil, 0, s.fail() // a: b: c
		}
		if t[i] == '#' && t[i-1] == ' ' {
			break
		}
	}
	for t[i-1] == ' ' {
		i--
	}
	return s.scalar(string(t[p:i]), p), i, nil
}

// flowNode reads a node in a flow collection (or a flow collection or a
// quoted scalar in a block) at byte p of the current line; it must end on
// this line. It returns the byte after it.
func (s *streamer) flowNode(p int) (*yaml.Node, int, error) {
	t := s.text
	switch c := t[p]; {
	case c == '[' || c == '{':
		if s.depth++; s.depth > maxDepth {
			return nil, 0, s.fail()
		}
		defer func() { s.depth-- }()
		if c == '[' {
			return s.flowSeq(p)
		}
		return s.flowMap(p)
	case c == '"' || c == '\'':
		v, e, ok := s.quoted(p)
		if !ok {
			return nil, 0, s.fail()
		}
		return s.scalar(v, p), e, nil
	case isIndicator(c):
		return nil, 0, s.fail()
	}
	e, colon := s.flowPlain(p)
	if colon || e == p || t[e-1] == ':' {
		return nil, 0, s.fail()
	}
	return s.scalar(string(t[p:e]), p), e, nil
}

// flowPlain scans a plain scalar in a flow collection from byte p: it ends
// before a flow indicator, or before a colon followed by a blank (colon is
// then true); e is its end without trailing blanks.
func (s *streamer) flowPlain(p int) (e int, colon bool) {
	t := s.text
	i := p
	for ; i < len(t); i++ {
		c := t[i]
		if isFlowIndicator(c) || c == '?' || (c == '#' && t[i-1] == ' ') {
			break
		}
		if c == ':' && (i+1 == len(t) || t[i+1] == ' ') {
			colon = true
			break
		}
	}
	for i > p && t[i-1] == ' ' {
		i--
	}
	return i, colon
}

func (s *streamer) flowSeq(p int) (*yaml.Node, int, error) {
	t := s.text
	n := s.node(yaml.SequenceNode, p)
	i := s.skip(p + 1)
	if i < len(t) && t[i] == ']' {
		return n, i + 1, nil
	}
	for {
		if i == len(t) {
			return nil, 0, s.fail()
		}
		item, e, err := s.flowNode(i)
		if err != nil {
			return nil, 0, err
		}
		n.Content = append(n.Content, item)
		if i = s.skip(e); i == len(t) {
			return nil, 0, s.fail()
		}
		switch t[i] {
		case ']':
			return n, i + 1, nil
		case ',':
			if i = s.skip(i + 1); i < len(t) && t[i] == ']' {
				return nil, 0, s.fail() // [a, ]
			}
		default:
			return nil, 0, s.fail()
		}
	}
}

func (s *streamer) flowMap(p int) (*yaml.Node, int, error) {
	t := s.text
	n := s.node(yaml.MappingNode, p)
	i := s.skip(p + 1)
	if i < len(t) && t[i] == '}' {
		return n, i + 1, nil
	}
	for {
		if i == len(t) {
			return nil, 0, s.fail()
		}
		var k *yaml.Node
		var colon int
		switch c := t[i]; {
		case c == '"' || c == '\'':
			v, e, ok := s.quoted(i)
			if !ok {
				return nil, 0, s.fail()
			}
			k, colon = s.scalar(v, i), s.skip(e)
		case isIndicator(c):
			return nil, 0, s.fail()
		default:
			e, isKey := s.flowPlain(i)
			if !isKey || e == i {
				return nil, 0, s.fail()
			}
			k, colon = s.scalar(intern(s.keys, t[i:e]), i), s.skip(e)
		}
		if colon == len(t) || t[colon] != ':' || colon+1 == len(t) || t[colon+1] != ' ' {
			return nil, 0, s.fail()
		}
		if i = s.skip(colon + 1); i == len(t) || t[i] == ',' || t[i] == '}' {
			return nil, 0, s.fail() // {a: }
		}
		v, e, err := s.flowNode(i)
		if err != nil {
			return nil, 0, err
		}
		n.Content = append(n.Content, k, v)
		if i = s.skip(e); i == len(t) {
			return nil, 0, s.fail()
		}
		switch t[i] {
		case '}':
			return n, i + 1, nil
		case ',':
			if i = s.skip(i + 1); i < len(t) && t[i] == '}' {
				return nil, 0, s.fail() // {a: b, }
			}
		default:
			return nil, 0, s.fail()
		}
	}
}

// quoted reads a single- or double-quoted scalar that closes on the
// current line, starting at byte p; e is the byte after its closing quote.
func (s *streamer) quoted(p int) (v string, e int, ok bool) {
	t := s.text
	b := s.buf[:0]
	defer func() { s.buf = b }()
	if t[p] == '\'' {
		for i := p + 1; i < len(t); i++ {
			if t[i] == '\'' {
				if i+1 < len(t) && t[i+1] == '\'' {
					b = append(b, '\'')
					i++
					continue
				}
				return string(b), i + 1, true
			}
			b = append(b, t[i])
		}
		return "", 0, false
	}
	for i := p + 1; i < len(t); i++ {
		c := t[i]
		if c == '"' {
			return string(b), i + 1, true
		}
		if c != '\\' {
			b = append(b, c)
			continue
		}
		if i++; i == len(t) {
			return "", 0, false // an escaped line break
		}
		n := 0
		switch t[i] {
		case '0':
			b = append(b, 0)
		case 'a':
			b = append(b, '\a')
		case 'b':
			b = append(b, '\b')
		case 't':
			b = append(b, '\t')
		case 'n':
			b = append(b, '\n')
		case 'v':
			b = append(b, '\v')
		case 'f':
			b = append(b, '\f')
		case 'r':
			b = append(b, '\r')
		case 'e':
			b = append(b, 0x1b)
		case ' ', '"', '\'', '\\':
			b = append(b, t[i])
		case 'N':
			b = utf8.AppendRune(b, 0x85)
		case '_':
			b = utf8.AppendRune(b, 0xA0)
		case 'L':
			b = utf8.AppendRune(b, 0x2028)
		case 'P':
			b = utf8.AppendRune(b, 0x2029)
		case 'x':
			n = 2
		case 'u':
			n = 4
		case 'U':
			n = 8
		default:
			return "", 0, false
		}
		if n == 0 {
			continue
		}
		if i+n >= len(t) {
			return "", 0, false
		}
		r, err := strconv.ParseUint(string(t[i+1:i+1+n]), 16, 32)
		if err != nil || (r >= 0xD800 && r <= 0xDFFF) || r > 0x10FFFF {
			return "", 0, false
		}
		b = utf8.AppendRune(b, rune(r))
		i += n
	}
	return "", 0, false
}

// knownKey returns the format's key b spells, or "".
func knownKey(b []byte) string {
	switch string(b) {
	case "name":
		return "name"
	case "mac":
		return "mac"
	case "ca":
		return "ca"
	case "host":
		return "host"
	case "generation":
		return "generation"
	case "vni":
		return "vni"
	case "encap":
		return "encap"
	case "subnets":
		return "subnets"
	case "vms":
		return "vms"
	case "vnets":
		return "vnets"
	case "pa":
		return "pa"
	}
	return ""
}
