package secretstore

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

// policyReaders is how many policy reads a boot has in flight at once.
const policyReaders = 8

// reconcilePolicies makes every policy of want (text by name) hold exactly its
// text on the server, writing only those that do not, and records the
// digests of all of them in paths.Policies (the token provider's check
// before a service's first token). It returns how many it read and wrote.
//
// Why it cannot miss a change that matters. It never trusts a record of
// what edgeseal once wrote; it trusts only the server's storage. One list
// gives the names the server has: a policy deleted behind edgeseal's back is
// absent, and written. A policy whose config text changed since it was last
// checked is read and compared. Every other policy is read and compared, text
// for text, with the config, unless the file in which the server's storage
// (always the file backend: vaultconf) holds it is byte for byte the file an
// earlier boot read and found right (its SHA-256, with its inode, size and
// times: policyStamps), by a record that boot authenticated under a key
// derived from the unseal key (policyRecordKey). A write through the server
// changes the bytes (each is a new ciphertext); an older file put back
// offline has the bytes of the older policy, which the record does not name
// unless the config asked for that very text; a record forged or edited
// without the unseal key fails its MAC, and every policy is read. At boot the
// server has just started and enforces what its storage holds. A stamp that
// cannot be taken (another storage layout, a file edgeseal-unseal may not
// read) only costs a read; so does a boot without the unseal key.
//
// What it saves: a write per service at every boot (a storage write and a
// policy cache refresh on the server: 1.7 ms a service), and a read of each
// (from a cold cache: about 1.2 ms a service with 8 in flight).
func (b *Bootstrap) reconcilePolicies(ctx context.Context, c *api.Client, want map[string]string) (read, written int, err error) {
	b.policyMu.Lock()
	defer b.policyMu.Unlock()
	list, err := c.Logical().ListWithContext(ctx, "sys/policies/acl")
	if err != nil {
		return 0, 0, fmt.Errorf("cannot list Vault policies: %w", err)
	}
	onServer := map[string]bool{}
	if list != nil {
		keys, _ := list.Data["keys"].([]any)
		for _, k := range keys {
			if name, ok := k.(string); ok {
				onServer[name] = true
			}
		}
	}
	stamps := b.policyStamps()
	key := b.policyRecordKey()
	defer clear(key)
	kept := b.readPolicyRecord(key)
	record := map[string]policyStamp{}
	toRead := map[string]string{}
	for name, text := range want {
		if !onServer[name] {
			continue // written below
		}
		if k, ok := kept[name]; ok && k.Digest == vaultlayout.Digest(text) {
			if now, ok := stamps.of(name); ok && now == k.File {
				record[name] = k
				continue
			}
		}
		toRead[name] = text
	}
	before := map[string]fileStamp{}
	for name := range toRead {
		if st, ok := stamps.of(name); ok {
			before[name] = st
		}
	}
	have, err := readPolicies(ctx, c, toRead, onServer)
	if err != nil {
		return len(toRead), 0, err
	}
	for name, text := range have {
		if text != want[name] {
			continue
		}
		// Found right: its stamp is kept if the file did not change while
		// it was read.
		st, ok := before[name]
		if after, ok2 := stamps.of(name); ok && ok2 && after == st {
			record[name] = policyStamp{Digest: vaultlayout.Digest(text), File: st}
		}
	}
	unchecked := map[string]string{}
	for name, text := range want {
		if _, trusted := record[name]; !trusted {
			unchecked[name] = text
		}
	}
	for _, name := range policiesToWrite(unchecked, have) {
		if err := c.Sys().PutPolicyWithContext(ctx, name, want[name]); err != nil {
			return len(toRead), written, fmt.Errorf("cannot write Vault policy %s: %w", name, err)
		}
		written++
	}
	// The record first (a crash after it costs only reads), then the
	// provider's digests.
	b.writePolicyRecord(key, record)
	applied := make(map[string]string, len(want))
	for name, text := range want {
		applied[name] = vaultlayout.Digest(text)
	}
	if err := vaultlayout.WriteAppliedPolicies(b.Paths.Policies, applied); err != nil {
		return len(toRead), written, err
	}
	return len(toRead), written, nil
}

// policiesToWrite are the names of want whose text the server does not hold
// (have: the server's text by name, absent if it has no such policy), sorted.
func policiesToWrite(want, have map[string]string) []string {
	var out []string
	for name, text := range want {
		if got, ok := have[name]; !ok || got != text {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// readPolicies reads from the server the text of each policy of want that
// onServer lists, policyReaders at a time. A policy listed but gone by the
// time it is read is absent from the result.
func readPolicies(ctx context.Context, c *api.Client, want map[string]string, onServer map[string]bool) (map[string]string, error) {
	names := make(chan string)
	var (
		mu    sync.Mutex
		have  = map[string]string{}
		first error
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range policyReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				text, err := c.Sys().GetPolicyWithContext(ctx, name)
				mu.Lock()
				switch {
				case err != nil && first == nil:
					first = fmt.Errorf("cannot read Vault policy %s: %w", name, err)
					cancel()
				case err == nil && text != "":
					have[name] = text
				}
				mu.Unlock()
			}
		}()
	}
	for name := range want {
		if !onServer[name] {
			continue
		}
		select {
		case names <- name:
		case <-ctx.Done():
		}
	}
	close(names)
	wg.Wait()
	return have, first
}
