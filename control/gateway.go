package control

// GatewayStatus is the answer of a gateway host to "gateway":
// the policy gateway it plays, its counters and its connections; Text is
// the same for people.
type GatewayStatus struct {
	Name        string            `json:"name"`
	PA          string            `json:"pa"`
	Tenant      string            `json:"tenant,omitempty"` // empty: shared
	Address     string            `json:"address"`
	Driver      string            `json:"driver"`
	Conns       int               `json:"conns"`
	NewConns    uint64            `json:"new_conns"`
	Inbound     uint64            `json:"inbound"` // of NewConns, opened from the external network
	Offloaded   uint64            `json:"offloaded"`
	HostPath    uint64            `json:"host_path"`
	HostPackets uint64            `json:"host_packets"`
	Refused     map[string]uint64 `json:"refused,omitempty"`
	Drops       map[string]uint64 `json:"drops,omitempty"`
	// NeighborMoves counts next hops on the external network that
	// announced a new MAC and took their connections with them
	// (nicpath_gateway_neighbor_moves_total).
	NeighborMoves uint64        `json:"neighbor_moves"`
	Connections   []GatewayConn `json:"connections,omitempty"`
	Text          string        `json:"text"`
}

// GatewayConn is one translated connection of a gateway.
type GatewayConn struct {
	Tenant    string `json:"tenant"`
	VNET      string `json:"vnet"`
	VM        string `json:"vm"`
	Host      string `json:"host"`
	Proto     uint8  `json:"proto"`
	Inside    string `json:"inside"`  // VM address:port > remote address:port
	Outside   string `json:"outside"` // external address:port > remote address:port
	Where     string `json:"where"`   // nic, or host: why
	AgeMillis int64  `json:"age_ms"`
}
