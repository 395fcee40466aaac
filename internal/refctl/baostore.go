package refctl

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
)

// The OpenBao store: the controller's state in an OpenBao cluster with
// integrated storage (Raft), shared by stateless replicas.
//
//   - Each device is one KV v2 secret, devices/NAME, in the controller's
//     mount, written with check-and-set only (the mount requires it): two
//     replicas updating one device never lose an update, the second re-reads
//     and runs again. A challenge nonce lives in its device's record, so
//     spending it is one such write: it is accepted once.
//   - An enrolment token's hash points at its device (tokens/HASH), so
//     enrolment finds its device without reading the others.
//   - The controller's CA, server certificate and key are the secret
//     identity; the bundle signing key is a transit key (ECDSA P-256,
//     not exportable): it signs, and never leaves OpenBao.
//   - The controller logs in with AppRole to a policy that can do only the
//     above (BaoPolicy), over TLS verified against the cluster's CA, and
//     asks another node when one does not answer. The policy and the role
//     are named after the KV mount: one cluster may hold several
//     controllers, each in its own mounts.

// The OpenBao store's file (BaoConfig), its format and limits.
const (
	baoConfigFormat  = "edgeseal-controller-openbao"
	baoConfigVersion = 1
	maxBaoConfig     = 64 << 10
	maxBaoNodes      = 16
	// deviceFormat heads a device's record in the KV mount.
	deviceFormat  = "edgeseal-controller-device"
	deviceVersion = 1
	// signingKeyName is the transit key that signs bundles.
	signingKeyName = "bundle-signing"
	// kvMaxVersions: versions of a record kept (KV v2 keeps history).
	kvMaxVersions = 4
)

// Bounds on talking to the cluster.
const (
	// storeTimeout bounds one store operation, failover included: a device
	// request waits at most this for the cluster to elect a leader.
	storeTimeout = 15 * time.Second
	// nodeTimeout bounds one HTTP request to one node.
	nodeTimeout = 5 * time.Second
	// maxConflicts bounds the re-reads of one update that other writers beat.
	maxConflicts = 32
	// loginMargin: log in again once this share of the token's TTL is left.
	loginMargin = 3
)

// BaoConfig is the OpenBao store's file (written by InitOpenBao, 0600: it
// holds the AppRole secret ID).
type BaoConfig struct {
	Format       string   `json:"format"`
	Version      int      `json:"version"`
	Addresses    []string `json:"addresses"`     // https URLs of the cluster's nodes (any may answer)
	CAFile       string   `json:"ca_file"`       // PEM: the only roots the nodes' certificates may chain to
	KVMount      string   `json:"kv_mount"`      // the KV v2 mount of the device records
	TransitMount string   `json:"transit_mount"` // the transit mount of the signing key
	AppRoleMount string   `json:"approle_mount"`
	RoleID       string   `json:"role_id"`
	SecretID     string   `json:"secret_id"`
}

// Defaults of InitOpenBao.
const (
	DefaultKVMount      = "edgeseal-controller"
	DefaultTransitMount = "edgeseal-controller-transit"
	DefaultAppRoleMount = "approle"
)

func checkMount(field, m string) error {
	if m == "" || len(m) > 64 || strings.Trim(m, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" || m[0] == '-' || m[0] == '_' {
		return fmt.Errorf("%s: %q is not a mount name (1 to 64 of a-z 0-9 - _)", field, m)
	}
	return nil
}

// check validates the file's fields, naming the one at fault.
func (c *BaoConfig) check() error {
	var errs []error
	if c.Format != baoConfigFormat {
		errs = append(errs, fmt.Errorf("format %q, not %q", c.Format, baoConfigFormat))
	}
	if c.Version != baoConfigVersion {
		errs = append(errs, fmt.Errorf("version %d: this controller reads %d", c.Version, baoConfigVersion))
	}
	if len(c.Addresses) == 0 || len(c.Addresses) > maxBaoNodes {
		errs = append(errs, fmt.Errorf("addresses: 1 to %d nodes, not %d", maxBaoNodes, len(c.Addresses)))
	}
	for i, a := range c.Addresses {
		if err := checkNodeURL(a); err != nil {
			errs = append(errs, fmt.Errorf("addresses[%d]: %w", i, err))
		} else if slices.Index(c.Addresses, a) != i {
			errs = append(errs, fmt.Errorf("addresses[%d]: %s is listed twice", i, a))
		}
	}
	if !strings.HasPrefix(c.CAFile, "/") {
		errs = append(errs, fmt.Errorf("ca_file: %q is not an absolute path", c.CAFile))
	}
	for _, m := range [][2]string{{"kv_mount", c.KVMount}, {"transit_mount", c.TransitMount}, {"approle_mount", c.AppRoleMount}} {
		if err := checkMount(m[0], m[1]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range [][2]string{{"role_id", c.RoleID}, {"secret_id", c.SecretID}} {
		if f[1] == "" || len(f[1]) > 256 || strings.ContainsFunc(f[1], func(r rune) bool { return r <= ' ' || r > '~' }) {
			errs = append(errs, fmt.Errorf("%s: missing, or not printable ASCII of at most 256 characters", f[0]))
		}
	}
	return errors.Join(errs...)
}

func checkNodeURL(a string) error {
	u, err := url.Parse(a)
	switch {
	case err != nil || len(a) > 1024:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return fmt.Errorf("%s: only https (TLS verified against ca_file)", a)
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%s: want https://HOST:PORT and nothing else", a)
	}
	return nil
}

// LoadBaoConfig reads the OpenBao store's file strictly (bounded, no
// unknown field, every field checked, naming the file and field at fault).
func LoadBaoConfig(path string) (*BaoConfig, error) {
	data, err := fsutil.ReadRegular(path, maxBaoConfig)
	if err != nil {
		return nil, fmt.Errorf("cannot read the OpenBao store's file: %w", err)
	}
	// It holds the AppRole's secret id: a copy others may read is refused,
	// as ssh refuses a private key others may read.
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("cannot read the OpenBao store's file: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cannot use %s: it holds the AppRole's secret id and others may read it (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	var c BaoConfig
	if err := strictjson.Decode(data, maxBaoConfig, &c); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the file atomically, 0600 (it holds the AppRole secret ID).
func (c *BaoConfig) Save(path string) error {
	if err := c.check(); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return fsutil.WriteFileAtomic(path, append(data, '\n'), 0o600, fsutil.Self)
}

// baoNodes is a cluster's nodes, each a client, and the one that answered
// last: an operation that finds its node gone asks the next.
type baoNodes struct {
	clients []*api.Client
	cur     atomic.Int32
}

func newBaoNodes(addrs []string, caFile string) (*baoNodes, error) {
	pem, err := fsutil.ReadRegular(caFile, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cannot read the cluster's CA: %s holds no PEM certificate", caFile)
	}
	n := &baoNodes{}
	for _, a := range addrs {
		c, err := vaultclient.New(a, pool)
		if err != nil {
			return nil, err
		}
		c.SetClientTimeout(nodeTimeout)
		n.clients = append(n.clients, c)
	}
	return n, nil
}

// do runs op on a node, asking the next node while the one asked cannot
// serve (unreachable, sealed, a standby without a leader), with a short
// backoff, until ctx or storeTimeout ends: then ErrStoreUnavailable with
// the last error. Any other error is op's answer.
func (n *baoNodes) do(ctx context.Context, token string, op func(ctx context.Context, c *api.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	backoff := 50 * time.Millisecond
	var last error
	for tries := 0; ; tries++ {
		i := int(n.cur.Load())
		c := n.clients[i]
		if token != "" {
			c = c.WithNamespace("") // a shallow copy that carries its own token
			c.SetToken(token)
		}
		err := op(ctx, c)
		if err == nil || !nodeDown(err) {
			return err
		}
		last = fmt.Errorf("%s: %w", n.clients[i].Address(), err)
		n.cur.CompareAndSwap(int32(i), int32((i+1)%len(n.clients)))
		if (tries+1)%len(n.clients) == 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: no node answered within %v (last: %w)", ErrStoreUnavailable, storeTimeout, last)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: no node answered within %v (last: %w)", ErrStoreUnavailable, storeTimeout, last)
		}
	}
}

// nodeDown tells whether err says the node asked cannot serve now, so
// another may: no connection, a timeout, or 5xx (sealed, standby without a
// leader, an election under way).
func nodeDown(err error) bool {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded)
}

// isCASMismatch: a check-and-set write that another writer beat.
func isCASMismatch(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
		return false
	}
	return slices.ContainsFunc(re.Errors, func(e string) bool { return strings.Contains(e, "check-and-set") })
}

// baoStore is the OpenBao store.
type baoStore struct {
	cfg   *BaoConfig
	nodes *baoNodes

	mu      sync.Mutex
	token   string
	renewAt time.Time
}

// OpenOpenBao is the controller kept in an OpenBao cluster, as its file
// (LoadBaoConfig) says. It logs in at the first operation.
func OpenOpenBao(cfg *BaoConfig) (*Controller, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("cannot open the OpenBao store: %w", err)
	}
	n, err := newBaoNodes(cfg.Addresses, cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("cannot open the OpenBao store: %w", err)
	}
	return &Controller{st: &baoStore{cfg: cfg, nodes: n}}, nil
}

func (s *baoStore) String() string {
	return fmt.Sprintf("OpenBao %s (mount %s)", strings.Join(s.cfg.Addresses, ","), s.cfg.KVMount)
}

// login is the controller's token: AppRole, again once a third of its TTL
// is left.
func (s *baoStore) login(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && time.Now().Before(s.renewAt) {
		return s.token, nil
	}
	var sec *api.Secret
	err := s.nodes.do(ctx, "", func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = c.Logical().WriteWithContext(ctx, "auth/"+s.cfg.AppRoleMount+"/login",
			map[string]any{"role_id": s.cfg.RoleID, "secret_id": s.cfg.SecretID})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("cannot log in to OpenBao (AppRole %s): %w", s.cfg.AppRoleMount, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return "", errors.New("cannot log in to OpenBao: the login answer holds no token")
	}
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	s.token, s.renewAt = sec.Auth.ClientToken, time.Now().Add(ttl-ttl/loginMargin)
	return s.token, nil
}

// call runs op with the controller's token, on whichever node answers.
func (s *baoStore) call(ctx context.Context, op func(ctx context.Context, c *api.Client) error) error {
	tok, err := s.login(ctx)
	if err != nil {
		return err
	}
	err = s.nodes.do(ctx, tok, op)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		// A token revoked or expired early: once more with a new one.
		s.mu.Lock()
		s.token = ""
		s.mu.Unlock()
		if tok, err = s.login(ctx); err != nil {
			return err
		}
		err = s.nodes.do(ctx, tok, op)
	}
	return err
}

// deviceRecord is a device's KV secret.
type deviceRecord struct {
	Format  string  `json:"format"`
	Version int     `json:"version"`
	Device  *device `json:"device"`
}

func (s *baoStore) kv(c *api.Client) *api.KVv2 { return c.KVv2(s.cfg.KVMount) }

// readRecord reads a KV secret of the mount into v, strictly; its version,
// or 0 and api.ErrSecretNotFound.
func (s *baoStore) readRecord(ctx context.Context, path string, v any) (int, error) {
	var sec *api.KVSecret
	err := s.call(ctx, func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = s.kv(c).Get(ctx, path)
		if errors.Is(err, api.ErrSecretNotFound) {
			return api.ErrSecretNotFound
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(sec.Data)
	if err != nil {
		return 0, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if err := strictjson.Decode(data, maxStateSize, v); err != nil {
		return 0, fmt.Errorf("cannot read %s: %w: %w", path, ErrBadState, err)
	}
	if sec.VersionMetadata == nil {
		return 0, fmt.Errorf("cannot read %s: no version", path)
	}
	return sec.VersionMetadata.Version, nil
}

// writeRecord writes v at path if its version is still cas (0: if none).
func (s *baoStore) writeRecord(ctx context.Context, path string, v any, cas int) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	return s.call(ctx, func(ctx context.Context, c *api.Client) error {
		_, err := s.kv(c).Put(ctx, path, m, api.WithCheckAndSet(cas))
		return err
	})
}

func devicePath(name string) string { return "devices/" + name }

func (s *baoStore) getVersion(ctx context.Context, name string) (*device, int, error) {
	var raw json.RawMessage
	ver, err := s.readRecord(ctx, devicePath(name), &raw)
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return nil, 0, ErrUnknownDevice
	case err != nil:
		return nil, 0, err
	}
	d, err := parseDeviceRecord(name, raw)
	if err != nil {
		return nil, 0, err
	}
	return d, ver, nil
}

// parseDeviceRecord decodes a device's record as read from the store,
// strictly, and checks it: ErrBadState, naming the device, if it is out of
// shape (a store another writer wrote is not trusted to be in shape).
func parseDeviceRecord(name string, data []byte) (*device, error) {
	var r deviceRecord
	if err := strictjson.Decode(data, maxStateSize, &r); err != nil {
		return nil, fmt.Errorf("%w: device %s: %w", ErrBadState, name, err)
	}
	if r.Format != deviceFormat || r.Version != deviceVersion || r.Device == nil {
		return nil, fmt.Errorf("%w: device %s: format %q version %d, not %q %d", ErrBadState, name, r.Format, r.Version, deviceFormat, deviceVersion)
	}
	if err := r.Device.check(); err != nil {
		return nil, fmt.Errorf("%w: device %s: %v", ErrBadState, name, err)
	}
	return r.Device, nil
}

func (s *baoStore) get(ctx context.Context, name string) (*device, error) {
	d, _, err := s.getVersion(ctx, name)
	return d, err
}

func (s *baoStore) update(ctx context.Context, name string, fn func(d *device) (bool, error)) error {
	for range maxConflicts {
		d, ver, err := s.getVersion(ctx, name)
		if err != nil {
			return err
		}
		changed, ferr := fn(d)
		if !changed {
			return ferr
		}
		err = s.writeRecord(ctx, devicePath(name), &deviceRecord{deviceFormat, deviceVersion, d}, ver)
		if isCASMismatch(err) {
			continue // another writer got there first: on its record, again
		}
		if err != nil {
			return fmt.Errorf("cannot write device %s: %w", name, err)
		}
		return ferr
	}
	return fmt.Errorf("%w: cannot write device %s: %d writers beat this one in a row", ErrStoreUnavailable, name, maxConflicts)
}

func (s *baoStore) create(ctx context.Context, name string, d *device) error {
	rec := &deviceRecord{deviceFormat, deviceVersion, d}
	err := s.writeRecord(ctx, devicePath(name), rec, 0)
	if isCASMismatch(err) {
		// Ours, if our first try was written but its answer lost.
		if got, gerr := s.get(ctx, name); gerr == nil && sameJSON(got, d) {
			return nil
		}
		return ErrExists
	}
	return err
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func (s *baoStore) list(ctx context.Context, after string, limit int) ([]listed, error) {
	var sec *api.Secret
	err := s.call(ctx, func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = c.Logical().ReadWithDataWithContext(ctx, s.cfg.KVMount+"/metadata/devices/",
			map[string][]string{"list": {"true"}, "after": {after}, "limit": {strconv.Itoa(limit)}})
		return err
	})
	if err != nil {
		return nil, err
	}
	var page []listed
	if sec == nil || sec.Data == nil {
		return page, nil
	}
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		name, _ := k.(string)
		if !idRE.MatchString(name) || name <= after {
			continue
		}
		d, err := s.get(ctx, name)
		if errors.Is(err, ErrUnknownDevice) {
			continue
		}
		if err != nil {
			return nil, err
		}
		page = append(page, listed{name, d})
		if len(page) == limit {
			break
		}
	}
	return page, nil
}

// tokenRecord points at the device a token was given to.
type tokenRecord struct {
	Device string `json:"device"`
}

func (s *baoStore) byToken(ctx context.Context, hash string) (string, error) {
	if !sha256RE.MatchString(hash) {
		return "", nil
	}
	var r tokenRecord
	_, err := s.readRecord(ctx, "tokens/"+hash, &r)
	if errors.Is(err, api.ErrSecretNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !idRE.MatchString(r.Device) {
		return "", fmt.Errorf("%w: tokens/%s: no device name", ErrBadState, hash[:8])
	}
	return r.Device, nil
}

func (s *baoStore) tokenGiven(ctx context.Context, hash, name string) error {
	err := s.writeRecord(ctx, "tokens/"+hash, &tokenRecord{name}, 0)
	if isCASMismatch(err) {
		return errors.New("an enrolment token of that hash was given already")
	}
	return err
}

// check tells whether the store answers, and the controller's policy can do
// all it needs: a capability missing is named, with the path.
func (s *baoStore) check(ctx context.Context) error {
	need := s.cfg.neededCapabilities()
	paths := slices.Sorted(maps.Keys(need))
	var sec *api.Secret
	err := s.call(ctx, func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = c.Logical().WriteWithContext(ctx, "sys/capabilities-self", map[string]any{"paths": paths})
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot check the controller's policy: %w", err)
	}
	var missing []string
	for _, p := range paths {
		got := map[string]bool{}
		if sec != nil {
			if l, ok := sec.Data[p].([]any); ok {
				for _, c := range l {
					if s, ok := c.(string); ok {
						got[s] = true
					}
				}
			}
		}
		for _, c := range need[p] {
			if !got[c] && !got["root"] {
				missing = append(missing, c+" on "+p)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the controller's OpenBao policy lacks: %s (policy %s, written by init)", ErrStoreMisconfigured, strings.Join(missing, "; "), s.cfg.KVMount)
	}
	return nil
}

// ErrStoreMisconfigured: the store answers, but cannot serve as it is set up
// (a capability missing from the controller's policy, no identity).
var ErrStoreMisconfigured = errors.New("the controller's store is not set up to serve")

// neededCapabilities are the controller's policy: path -> capabilities.
func (c *BaoConfig) neededCapabilities() map[string][]string {
	kv, tr := c.KVMount, c.TransitMount
	return map[string][]string{
		kv + "/data/devices/x":         {"create", "read", "update"},
		kv + "/metadata/devices/":      {"list"},
		kv + "/data/tokens/x":          {"create", "read"},
		kv + "/data/identity":          {"read"},
		tr + "/sign/" + signingKeyName: {"update"},
		tr + "/keys/" + signingKeyName: {"read"},
		"auth/token/lookup-self":       {"read"},
		"sys/capabilities-self":        {"update"},
	}
}

// BaoPolicy is the controller's policy: what its AppRole token may do, and
// nothing else (no delete, no metadata beyond listing device names, no
// export or rotation of the signing key).
func (c *BaoConfig) BaoPolicy() string {
	kv, tr := c.KVMount, c.TransitMount
	return fmt.Sprintf(`# edgeseal-controller: device records, enrolment tokens, the identity, and signing.
path "%[1]s/data/devices/*" { capabilities = ["create", "read", "update"] }
path "%[1]s/metadata/devices/*" { capabilities = ["list"] }
path "%[1]s/data/tokens/*" { capabilities = ["create", "read"] }
path "%[1]s/data/identity" { capabilities = ["read"] }
path "%[2]s/sign/%[3]s" { capabilities = ["update"] }
path "%[2]s/keys/%[3]s" { capabilities = ["read"] }
`, kv, tr, signingKeyName)
}

// errNoIdentity: the KV mount holds no identity (init was not run on it).
var errNoIdentity = errors.New("the OpenBao store holds no controller identity (run edgeseal-controller init --openbao)")
