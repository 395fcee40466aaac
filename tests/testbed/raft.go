//go:build integration

package testbed

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
)

// RaftCluster is a cluster of real OpenBao servers with integrated storage
// (Raft) on loopback: each node has a TLS API listener and a cluster port of
// its own (FreeLoopbackPort's pair), joins the first node with retry_join
// verified against the bed's CA, and is unsealed with the cluster's one
// Shamir share, as an operator would. Nodes are processes the test started;
// Kill ends one by pid with SIGKILL, Restart brings it back, unsealed, into
// the cluster.
type RaftCluster struct {
	Server Server

	t      testing.TB
	caFile string
	caPEM  []byte
	pool   *x509.CertPool
	nodes  []*raftNode
	root   string
	unseal string
	mu     sync.Mutex
}

type raftNode struct {
	id     string
	addr   string // https://127.0.0.1:PORT
	config string
	proc   *Process
}

// raftConfig is a node's configuration file, in the JSON form of HCL.
type raftConfig struct {
	Storage     map[string]raftStorage `json:"storage"`
	Listener    map[string]raftTCP     `json:"listener"`
	APIAddr     string                 `json:"api_addr"`
	ClusterAddr string                 `json:"cluster_addr"`
	LogLevel    string                 `json:"log_level"`
}

type raftStorage struct {
	Path                  string          `json:"path"`
	NodeID                string          `json:"node_id"`
	PerformanceMultiplier int             `json:"performance_multiplier"`
	RetryJoin             []raftRetryJoin `json:"retry_join,omitempty"`
}

type raftRetryJoin struct {
	LeaderAPIAddr    string `json:"leader_api_addr"`
	LeaderCACertFile string `json:"leader_ca_cert_file"`
}

type raftTCP struct {
	Address        string `json:"address"`
	ClusterAddress string `json:"cluster_address"`
	TLSCertFile    string `json:"tls_cert_file"`
	TLSKeyFile     string `json:"tls_key_file"`
}

// StartRaftCluster starts n nodes of srv (an OpenBao build), initialises the
// cluster on node 0 with one key share, unseals every node and waits until
// all n are voters and one leads. The nodes end when the test does.
func StartRaftCluster(t testing.TB, srv Server, n int) *RaftCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("a Raft cluster of %d nodes", n)
	}
	dir := t.TempDir()
	b, err := pki.Issue(pki.Options{Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := paths.New(filepath.Join(dir, "pki"))
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	c := &RaftCluster{Server: srv, t: t, caFile: p.CACert, caPEM: caPEM, pool: pool}
	for i := range n {
		port := FreeLoopbackPort(t)
		node := &raftNode{id: fmt.Sprintf("node%d", i), addr: fmt.Sprintf("https://127.0.0.1:%d", port)}
		nodeDir := filepath.Join(dir, node.id)
		if err := os.MkdirAll(filepath.Join(nodeDir, "raft"), 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := raftConfig{
			Storage: map[string]raftStorage{"raft": {Path: filepath.Join(nodeDir, "raft"), NodeID: node.id, PerformanceMultiplier: 1}},
			Listener: map[string]raftTCP{"tcp": {
				Address: fmt.Sprintf("127.0.0.1:%d", port), ClusterAddress: fmt.Sprintf("127.0.0.1:%d", port+1),
				TLSCertFile: p.VaultCert, TLSKeyFile: p.VaultKey,
			}},
			APIAddr:     node.addr,
			ClusterAddr: fmt.Sprintf("https://127.0.0.1:%d", port+1),
			LogLevel:    "info",
		}
		if i > 0 {
			st := cfg.Storage["raft"]
			st.RetryJoin = []raftRetryJoin{{LeaderAPIAddr: c.nodes[0].addr, LeaderCACertFile: p.CACert}}
			cfg.Storage["raft"] = st
		}
		data, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		node.config = filepath.Join(nodeDir, "config.json")
		if err := os.WriteFile(node.config, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c.start(t, 0)
	init, err := c.Client(t, 0).Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("cannot initialise the Raft cluster on node0: %v\n%s", err, c.nodes[0].proc.LogTail(30))
	}
	c.root, c.unseal = init.RootToken, init.Keys[0]
	c.unsealNode(t, ctx, 0)
	if _, err := c.WaitForLeader(ctx, -1); err != nil {
		t.Fatalf("%v\n%s", err, c.nodes[0].proc.LogTail(30))
	}
	// Autopilot promotes a joined node to voter once it has been healthy
	// for server_stabilization_time (10s by default): shorter here, so a
	// cluster is whole in seconds.
	if _, err := c.RootClient(t, 0).Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
		map[string]any{"server_stabilization_time": "1s", "cleanup_dead_servers": false}); err != nil {
		t.Fatalf("cannot configure autopilot: %v", err)
	}
	for i := 1; i < n; i++ {
		c.start(t, i)
		c.unsealNode(t, ctx, i)
	}
	if err := c.waitForVoters(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// start starts node i's process and waits until its API answers. The
// process lives as long as the cluster (its cleanup is the cluster's test's,
// not t's: a node restarted by a sub-benchmark outlives it); t hears of
// failures.
func (c *RaftCluster) start(t testing.TB, i int) {
	t.Helper()
	node := c.nodes[i]
	cmd := exec.Command(c.Server.Bin, "server", "-config="+node.config)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	node.proc = StartProcess(c.t, c.Server.Name+"-"+node.id, cmd)
	cl := c.Client(t, i)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := cl.Sys().SealStatus(); err == nil {
			return
		}
		if node.proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s %s did not answer at %s within 30s:\n%s", c.Server, node.id, node.addr, node.proc.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unsealNode gives node i the key share until it is unsealed: a node that
// joins with retry_join takes the share once it has reached the leader, so
// the share is given again while the node stays sealed.
func (c *RaftCluster) unsealNode(t testing.TB, ctx context.Context, i int) {
	t.Helper()
	cl := c.Client(t, i)
	var last error
	for ctx.Err() == nil {
		st, err := cl.Sys().UnsealWithContext(ctx, c.unseal)
		if err == nil && !st.Sealed {
			return
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("cannot unseal %s: %v\n%s", c.nodes[i].id, last, c.nodes[i].proc.LogTail(30))
}

// waitForVoters waits until every node is a voter of the Raft configuration.
func (c *RaftCluster) waitForVoters(ctx context.Context) error {
	var last string
	for ctx.Err() == nil {
		for i := range c.nodes {
			if c.nodes[i].proc.Exited() {
				continue
			}
			s, err := c.RootClient(c.t, i).Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
			if err != nil || s == nil {
				last = fmt.Sprint(err)
				continue
			}
			cfg, _ := s.Data["config"].(map[string]any)
			servers, _ := cfg["servers"].([]any)
			voters := 0
			for _, sv := range servers {
				if m, _ := sv.(map[string]any); m != nil && m["voter"] == true {
					voters++
				}
			}
			if voters == len(c.nodes) {
				return nil
			}
			last = fmt.Sprintf("%d of %d nodes are voters", voters, len(c.nodes))
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("the Raft cluster did not get %d voters: %s", len(c.nodes), last)
}

// Addrs is every node's API address.
func (c *RaftCluster) Addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr)
	}
	return out
}

// CAFile is the file of the CA the nodes' certificates chain to.
func (c *RaftCluster) CAFile() string { return c.caFile }

// CACertPEM is that CA's certificate.
func (c *RaftCluster) CACertPEM() []byte { return c.caPEM }

// RootToken is the cluster's initial root token: for the test's own set-up
// and checks only.
func (c *RaftCluster) RootToken() string { return c.root }

// Client is an unauthenticated client of node i, verifying TLS against the
// bed's CA, that does not follow redirects to the leader.
func (c *RaftCluster) Client(t testing.TB, i int) *api.Client {
	t.Helper()
	cl, err := vaultclient.New(c.nodes[i].addr, c.pool)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// RootClient is Client carrying the root token.
func (c *RaftCluster) RootClient(t testing.TB, i int) *api.Client {
	t.Helper()
	cl := c.Client(t, i)
	cl.SetToken(c.root)
	return cl
}

// Leader is the index of the node that leads now, as the nodes that answer
// say it.
func (c *RaftCluster) Leader(ctx context.Context) (int, error) {
	var errs []error
	for i, n := range c.nodes {
		if n.proc == nil || n.proc.Exited() {
			continue
		}
		l, err := c.Client(c.t, i).Sys().LeaderWithContext(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.id, err))
			continue
		}
		if l.IsSelf {
			return i, nil
		}
		for j, m := range c.nodes {
			if l.LeaderAddress == m.addr && m.proc != nil && !m.proc.Exited() {
				return j, nil
			}
		}
	}
	if len(errs) > 0 {
		return -1, fmt.Errorf("no node of the Raft cluster names a live leader: %w", errors.Join(errs...))
	}
	return -1, errors.New("no node of the Raft cluster names a live leader")
}

// WaitForLeader waits until a node other than not (-1: any) leads and is
// unsealed and active, and returns it.
func (c *RaftCluster) WaitForLeader(ctx context.Context, not int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		i, err := c.Leader(ctx)
		if err == nil && i != not {
			h, herr := c.Client(c.t, i).Sys().HealthWithContext(ctx)
			if herr == nil && h.Initialized && !h.Sealed && !h.Standby {
				return i, nil
			}
			err = fmt.Errorf("%s leads but is not active yet: %v", c.nodes[i].id, herr)
		} else if err == nil {
			err = fmt.Errorf("%s still leads", c.nodes[i].id)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	var logs strings.Builder
	for _, n := range c.nodes {
		if n.proc != nil && !n.proc.Exited() {
			fmt.Fprintf(&logs, "\n%s:\n%s", n.id, n.proc.LogTail(15))
		}
	}
	return -1, fmt.Errorf("the Raft cluster elected no leader within a minute: %v%s", last, logs.String())
}

// Kill ends node i with SIGKILL, by pid, as a crash would.
func (c *RaftCluster) Kill(t testing.TB, i int) {
	t.Helper()
	c.nodes[i].proc.Kill(t)
}

// Restart starts node i again (killing it first if it runs) and unseals it:
// it rejoins the cluster from its own Raft data.
func (c *RaftCluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.nodes[i].proc; p != nil && !p.Exited() {
		p.Kill(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.start(t, i)
	c.unsealNode(t, ctx, i)
	if err := c.waitHealthy(ctx, i); err != nil {
		t.Fatalf("%s restarted: %v\n%s", c.nodes[i].id, err, c.nodes[i].proc.LogTail(30))
	}
}

// waitHealthy waits until autopilot, asked of the leader, says node i is a
// healthy voter: a node restarted has caught up, so that losing another node
// leaves a quorum (if the others are up).
func (c *RaftCluster) waitHealthy(ctx context.Context, i int) error {
	id := c.nodes[i].id
	var last string
	for ctx.Err() == nil {
		if l, err := c.Leader(ctx); err != nil {
			last = err.Error()
		} else if s, err := c.RootClient(c.t, l).Logical().ReadWithContext(ctx, "sys/storage/raft/autopilot/state"); err != nil || s == nil {
			last = fmt.Sprint("autopilot state: ", err)
		} else {
			servers, _ := s.Data["servers"].(map[string]any)
			node, _ := servers[id].(map[string]any)
			if node["healthy"] == true && (node["status"] == "voter" || node["status"] == "leader") {
				return nil
			}
			last = fmt.Sprintf("autopilot says %s is %v, healthy %v", id, node["status"], node["healthy"])
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s has not rejoined: %s", id, last)
}

// LogTail is the last n lines of node i's output, for a failure's message.
func (c *RaftCluster) LogTail(i, n int) string {
	return strings.TrimSpace(c.nodes[i].proc.LogTail(n))
}
