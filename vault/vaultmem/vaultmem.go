// Package vaultmem is an in-memory store with the semantics of Vault's KV v2
// engine as the rotator uses it — versions, check-and-set (cas=0 creates
// only), soft-deleted latest versions, records encoded to and decoded from
// KV data — for deterministic simulations that run thousands of schedules.
// It passes the same contract tests (vault/storetest) as the real store
// against a real Vault server, so it cannot drift from Vault's behaviour.
package vaultmem

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/affix-rotator/affix-rotator/vault"
)

type entry struct {
	versions    []map[string]any // index v-1; nil data = deleted, destroyed or pruned
	created     []time.Time      // index v-1: created_time of each version
	destroyed   map[int]bool
	pruned      int // versions 1..pruned are no longer kept (max versions)
	maxVersions int // 0: keep every version
	// custom is the key's custom metadata (the reconcile claims).
	custom map[string]string
}

// claims are e's reconcile claims, latest end first.
func (e *entry) claims() []vault.Claim {
	if e == nil {
		return nil
	}
	var out []vault.Claim
	for k, v := range e.custom {
		if strings.HasPrefix(k, vault.ClaimKeyPrefix) {
			c := vault.ParseClaim(v)
			c.Key = k
			out = append(out, c)
		}
	}
	vault.SortClaims(out)
	return out
}

// Store is a concurrency-safe in-memory KV v2 mount.
type Store struct {
	mu    sync.Mutex
	mount string
	data  map[string]*entry
	// Fail, if set, is consulted before every operation ("read" or
	// "write"); a non-nil error is returned instead (wrapped as Vault's
	// unavailability), for fault injection.
	Fail func(op, path string) error
	// Identity is what WhoAmI returns ("" gives "vaultmem").
	Identity string
	// Now, if set, is the clock that stamps each version's created_time
	// (Vault's metadata; vault.Record.VersionTime). Nil: time.Now.
	Now func() time.Time
}

// New returns an empty store for mount (e.g. "secret").
func New(mount string) *Store { return &Store{mount: mount, data: map[string]*entry{}} }

// Read returns the record and its version, like vault.Store.Read.
func (s *Store) Read(ctx context.Context, path string) (vault.Record, int, error) {
	if err := s.fail(ctx, "read", path); err != nil {
		return vault.Record{}, 0, err
	}
	s.mu.Lock()
	e, ok := s.data[path]
	var data map[string]any
	v := 0
	var created time.Time
	if ok && len(e.versions) > 0 {
		v = len(e.versions)
		data = maps.Clone(e.versions[v-1])
		created = e.created[v-1]
	}
	claims := e.claims()
	s.mu.Unlock()
	if data == nil {
		return vault.Record{}, v, s.notFound(path)
	}
	rec, err := vault.Decode(data)
	if err != nil {
		var me *vault.MalformedError
		if errors.As(err, &me) {
			me.Path = s.mount + "/" + path
		}
		return vault.Record{}, v, err
	}
	rec.VersionTime = created
	rec.Claims = claims
	return rec, v, nil
}

// WriteClaimed is Write that also returns the reconcile claims the key's
// metadata held when the write was applied, like vault.Store.WriteClaimed.
func (s *Store) WriteClaimed(ctx context.Context, path string, r vault.Record, cas int) (int, []vault.Claim, error) {
	if err := s.fail(ctx, "write", path); err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.putLocked(path, r.Encode(), cas)
	if err != nil {
		return 0, nil, err
	}
	return v, s.data[path].claims(), nil
}

// Claim records c as its instance's claim in path's custom metadata and
// removes the claim keys in drop, like vault.Store.Claim: no version is
// added; a path never written is vault.ErrNotFound.
func (s *Store) Claim(ctx context.Context, path string, c vault.Claim, drop []string) error {
	if err := s.fail(ctx, "claim", path); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[path]
	if !ok || len(e.versions) == 0 {
		return fmt.Errorf("vault: claim %s/%s: metadata: %w", s.mount, path, vault.ErrNotFound)
	}
	if e.custom == nil {
		e.custom = map[string]string{}
	}
	own := vault.ClaimKey(c.Instance())
	for _, k := range drop {
		if strings.HasPrefix(k, vault.ClaimKeyPrefix) && k != own {
			delete(e.custom, k)
		}
	}
	e.custom[own] = c.String()
	return nil
}

// SetCustomMetadata sets one custom metadata key of path as an operator
// would with `vault kv metadata patch` (for tests of hostile values).
func (s *Store) SetCustomMetadata(path, key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[path]
	if !ok {
		e = &entry{}
		s.data[path] = e
	}
	if e.custom == nil {
		e.custom = map[string]string{}
	}
	e.custom[key] = value
}

// Write stores r if the current version is cas, like vault.Store.Write.
func (s *Store) Write(ctx context.Context, path string, r vault.Record, cas int) (int, error) {
	if err := s.fail(ctx, "write", path); err != nil {
		return 0, err
	}
	return s.Put(path, r.Encode(), cas)
}

// Put writes raw KV data with check-and-set (cas < 0: no check), as an
// operator or a test would with the Vault CLI.
func (s *Store) Put(path string, data map[string]any, cas int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(path, data, cas)
}

func (s *Store) putLocked(path string, data map[string]any, cas int) (int, error) {
	e, ok := s.data[path]
	cur := 0
	if ok {
		cur = len(e.versions)
	}
	if cas >= 0 && cas != cur {
		return 0, fmt.Errorf("vault: write %s/%s: %w", s.mount, path, vault.ErrConflict)
	}
	if !ok {
		e = &entry{}
		s.data[path] = e
	}
	e.versions = append(e.versions, maps.Clone(data))
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	e.created = append(e.created, now().UTC().Round(0))
	e.prune()
	return len(e.versions), nil
}

// prune forgets the versions beyond the entry's max versions, as Vault does
// on a write.
func (e *entry) prune() {
	if e.maxVersions <= 0 {
		return
	}
	for e.pruned < len(e.versions)-e.maxVersions {
		e.versions[e.pruned] = nil
		e.pruned++
	}
}

// Delete soft-deletes the latest version, like `vault kv delete`.
func (s *Store) Delete(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.data[path]; ok && len(e.versions) > 0 {
		e.versions[len(e.versions)-1] = nil
	}
}

// DeleteVersions soft-deletes the given versions, like `vault kv delete -versions=…`.
func (s *Store) DeleteVersions(path string, versions ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.data[path]; ok {
		for _, v := range versions {
			if v >= 1 && v <= len(e.versions) {
				e.versions[v-1] = nil
			}
		}
	}
}

// Destroy destroys the given versions, like `vault kv destroy -versions=…`.
func (s *Store) Destroy(path string, versions ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.data[path]; ok {
		for _, v := range versions {
			if v >= 1 && v <= len(e.versions) && v > e.pruned {
				e.versions[v-1] = nil
				if e.destroyed == nil {
					e.destroyed = map[int]bool{}
				}
				e.destroyed[v] = true
			}
		}
	}
}

// SetMaxVersions makes path keep only its n latest versions from its next
// write on (0: every version), like `vault kv metadata put -max-versions=n`.
func (s *Store) SetMaxVersions(path string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[path]
	if !ok {
		e = &entry{}
		s.data[path] = e
	}
	e.maxVersions = n
}

// ReadVersion returns one version of the record, like vault.Store.ReadVersion.
func (s *Store) ReadVersion(ctx context.Context, path string, version int) (vault.Record, error) {
	full := s.mount + "/" + path
	if version < 1 {
		return vault.Record{}, fmt.Errorf("vault: read %s version %d: versions start at 1", full, version)
	}
	if err := s.fail(ctx, "read", path); err != nil {
		return vault.Record{}, err
	}
	s.mu.Lock()
	e, ok := s.data[path]
	var data map[string]any
	state := vault.VersionAbsent
	if ok && version <= len(e.versions) && version > e.pruned {
		data = maps.Clone(e.versions[version-1])
		switch {
		case e.destroyed[version]:
			state = vault.VersionDestroyed
		case data == nil:
			state = vault.VersionDeleted
		}
	}
	s.mu.Unlock()
	if data == nil {
		return vault.Record{}, &vault.VersionError{Path: full, Version: version, State: state}
	}
	rec, err := vault.Decode(data)
	if err != nil {
		var me *vault.MalformedError
		if errors.As(err, &me) {
			me.Path = fmt.Sprintf("%s (version %d)", full, version)
		}
		return vault.Record{}, err
	}
	return rec, nil
}

// Versions returns the current and oldest kept version, like vault.Store.Versions.
func (s *Store) Versions(ctx context.Context, path string) (current, oldest int, err error) {
	if err := s.fail(ctx, "read", path); err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	e, ok := s.data[path]
	if ok {
		current, oldest = len(e.versions), e.pruned+1
	}
	s.mu.Unlock()
	if current == 0 {
		return 0, 0, s.notFound(path)
	}
	return current, oldest, nil
}

// WhoAmI returns Identity, or "vaultmem", like vault.Store.WhoAmI.
func (s *Store) WhoAmI(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("vault: whoami: %w", err)
	}
	if s.Identity == "" {
		return "vaultmem", nil
	}
	return s.Identity, nil
}

func (s *Store) notFound(path string) error {
	return fmt.Errorf("vault: %w at %s/%s: seed it once with the secret Affix accepts now, from stdin and only if no record exists: `vault kv put -cas=0 %s/%s client_secret=-` (runbook: Seed a client), or set bootstrap: true for a brand-new Affix client",
		vault.ErrNotFound, s.mount, path, s.mount, path)
}

// History returns every version's data of path, oldest first (nil for a
// deleted version), for invariant checks.
func (s *Store) History(path string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[path]
	if !ok {
		return nil
	}
	out := make([]map[string]any, len(e.versions))
	for i, v := range e.versions {
		out[i] = maps.Clone(v)
	}
	return out
}

func (s *Store) fail(ctx context.Context, op, path string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vault: %s %s/%s: %w", op, s.mount, path, err)
	}
	if s.Fail != nil {
		if err := s.Fail(op, path); err != nil {
			return fmt.Errorf("vault: %s %s/%s: %w: %v", op, s.mount, path, vault.ErrUnavailable, err)
		}
	}
	return nil
}

// Latest returns a copy of the latest version's data of path, its version
// number (0 if the path never held a version) and whether that version is
// soft-deleted (data is then nil). It is History's last entry without
// copying every version, for invariant checks after every step of a long
// simulation.
func (s *Store) Latest(path string) (data map[string]any, version int, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[path]
	if !ok || len(e.versions) == 0 {
		return nil, 0, false
	}
	v := len(e.versions)
	d := e.versions[v-1]
	return maps.Clone(d), v, d == nil
}

// ChangesVersion returns the change marker's version, like
// vault.Store.ChangesVersion.
func (s *Store) ChangesVersion(ctx context.Context) (int, error) {
	if err := s.fail(ctx, "read", vault.ChangesPath); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.data[vault.ChangesPath]; ok {
		return len(e.versions), nil
	}
	return 0, nil
}

// BumpChanges writes a version of the change marker, like
// vault.Store.BumpChanges.
func (s *Store) BumpChanges(ctx context.Context, client, what string) error {
	if err := s.fail(ctx, "write", vault.ChangesPath); err != nil {
		return err
	}
	_, err := s.Put(vault.ChangesPath, map[string]any{"client": client, "change": what}, -1)
	return err
}

// DeleteMetadata deletes every version of path and its metadata, like
// `vault kv metadata delete`: the path then looks never used (version 0,
// not found) and its max versions setting is gone.
func (s *Store) DeleteMetadata(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data, path)
}
