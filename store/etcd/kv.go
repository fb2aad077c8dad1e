package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nicpath/nicpath/store"
)

// KV is a store.KV on an etcd client.
type KV struct {
	c   *clientv3.Client
	own bool
	// PageSize is how many keys one range request returns when Get reads
	// a prefix: it bounds the memory of one response (10k VM records are
	// about 2 MB) and lets the server serve others between pages.
	PageSize int64
}

var _ store.KV = (*KV)(nil)

// DefaultPageSize is KV.PageSize unless changed.
const DefaultPageSize = 10000

// NewKV uses an existing client; Close leaves it open.
func NewKV(c *clientv3.Client) *KV { return &KV{c: c, PageSize: DefaultPageSize} }

// Dial connects to endpoints (host:port) and returns a KV that owns its
// client.
func Dial(endpoints []string, dialTimeout time.Duration) (*KV, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: dialTimeout,
		// Keepalives let the client notice a dead server while idle.
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		// The client logs every retry; the follower reports what matters
		// (stale, resynced) through its own logger and status.
		Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w: %w", store.ErrUnavailable, err)
	}
	return &KV{c: c, own: true, PageSize: DefaultPageSize}, nil
}

// Client returns the etcd client.
func (k *KV) Client() *clientv3.Client { return k.c }

// Open is store.Open's opener for etcd://ENDPOINT[,ENDPOINT…][/PREFIX/].
func Open(spec string) (store.Store, error) {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme != "etcd" || u.Host == "" {
		return nil, fmt.Errorf("etcd: want etcd://host:port[,host:port…][/prefix/], not %q", spec)
	}
	kv, err := Dial(strings.Split(u.Host, ","), 5*time.Second)
	if err != nil {
		return nil, err
	}
	prefix := u.Path
	if prefix == "" || prefix == "/" {
		prefix = store.DefaultPrefix
	}
	return store.NewKV(kv, prefix), nil
}

func init() { store.Register("etcd", Open) }

// wrap marks errors that mean "cannot reach the cluster" with
// store.ErrUnavailable, so that followers go stale instead of failing.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) {
		return fmt.Errorf("etcd: %w: %w", store.ErrUnavailable, err)
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return fmt.Errorf("etcd: %w: %w", store.ErrUnavailable, err)
		}
	}
	return fmt.Errorf("etcd: %w", err)
}

// Get reads every key under prefix in pages, all at the revision of the
// first page.
func (k *KV) Get(ctx context.Context, prefix string) ([]store.KeyValue, int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	page := k.PageSize
	if page <= 0 {
		page = DefaultPageSize
	}
	var out []store.KeyValue
	var rev int64
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := k.c.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, wrap(err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
			out = make([]store.KeyValue, 0, resp.Count)
		}
		for _, kv := range resp.Kvs {
			out = append(out, store.KeyValue{Key: string(kv.Key), Value: kv.Value, ModRevision: kv.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Txn applies ops in one etcd transaction.
func (k *KV) Txn(ctx context.Context, ops []store.Op) (int64, error) {
	eops := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		if op.Delete {
			eops[i] = clientv3.OpDelete(op.Key)
		} else {
			eops[i] = clientv3.OpPut(op.Key, string(op.Value))
		}
	}
	resp, err := k.c.Txn(ctx).Then(eops...).Commit()
	if err != nil {
		return 0, wrap(err)
	}
	return resp.Header.Revision, nil
}

// Watch follows prefix from revision from.
func (k *KV) Watch(ctx context.Context, prefix string, from int64) <-chan store.WatchResponse {
	out := make(chan store.WatchResponse)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from))
	} else {
		// "From now on" must hold from the moment Watch returns: wait for
		// the server to say the watch exists.
		opts = append(opts, clientv3.WithCreatedNotify())
	}
	wch := k.c.Watch(wctx, prefix, opts...)
	if from <= 0 {
		select {
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || !resp.Created {
				err := fmt.Errorf("etcd: watch not created: %w", store.ErrUnavailable)
				if ok && resp.Err() != nil {
					err = fmt.Errorf("etcd: watch not created: %w: %w", store.ErrUnavailable, resp.Err())
				}
				cancel()
				go func() { defer close(out); sendResp(ctx, out, store.WatchResponse{Err: err}) }()
				return out
			}
		case <-ctx.Done():
			cancel()
			close(out)
			return out
		}
	}
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				err := fmt.Errorf("etcd: watch from revision %d, compacted up to %d: %w", from, resp.CompactRevision, store.ErrCompacted)
				sendResp(ctx, out, store.WatchResponse{Err: err})
				return
			}
			if err := resp.Err(); err != nil {
				sendResp(ctx, out, store.WatchResponse{Err: fmt.Errorf("etcd: %w: %w", store.ErrUnavailable, err)})
				return
			}
			if resp.IsProgressNotify() || len(resp.Events) == 0 {
				continue
			}
			evs := make([]store.KVEvent, len(resp.Events))
			for i, ev := range resp.Events {
				evs[i] = store.KVEvent{Key: string(ev.Kv.Key), Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypeDelete {
					evs[i].Delete = true
				} else {
					evs[i].Value = ev.Kv.Value
				}
			}
			if !sendResp(ctx, out, store.WatchResponse{Events: evs}) {
				return
			}
		}
		if ctx.Err() == nil {
			// The client closed the watch without saying why (closed client).
			sendResp(ctx, out, store.WatchResponse{Err: fmt.Errorf("etcd: watch closed: %w", store.ErrUnavailable)})
		}
	}()
	return out
}

func sendResp(ctx context.Context, c chan<- store.WatchResponse, r store.WatchResponse) bool {
	select {
	case c <- r:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close closes the client when the KV made it.
func (k *KV) Close() error {
	if k.own {
		return k.c.Close()
	}
	return nil
}
