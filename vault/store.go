// Package vault keeps each Affix client's record in HashiCorp Vault's KV v2
// engine: the consumers' current client_secret and the rotator's state,
// read with its version and written only with check-and-set, so that every
// transition of a rotation is one atomic write. It also logs in (token,
// AppRole, Kubernetes) and keeps the token renewed with the library's
// LifetimeWatcher.
package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound: no record at the path (or its latest version is deleted).
	ErrNotFound = errors.New("record not found")
	// ErrConflict: a check-and-set write lost against another writer.
	ErrConflict = errors.New("check-and-set conflict: the record changed since it was read")
	// ErrUnavailable: Vault could not be reached, is sealed, in standby
	// without forwarding, or failed with a server error. Retry later.
	ErrUnavailable = errors.New("vault unavailable")
	// ErrDenied: Vault refused the token (expired, revoked, or missing policy).
	ErrDenied = errors.New("permission denied")
)

// Observer receives one call per request to Vault (for metrics).
type Observer interface {
	VaultRequest(op, result string, d time.Duration, up bool)
}

// Store reads and writes records under one KV v2 mount.
type Store struct {
	client *apiClient // the token sits behind two pointers (see apiClient)
	kv     *api.KVv2
	mount  string
	obs    Observer
	auth   *authenticator
}

// Read returns the record at path and its version. A missing record gives
// (zero, version, ErrNotFound) where version is the deleted latest version
// to check-and-set against, or 0 when the path never held a secret.
func (s *Store) Read(ctx context.Context, path string) (Record, int, error) {
	start := time.Now()
	var kvs *api.KVSecret
	err := s.once(ctx, "read", func() (err error) { kvs, err = s.kv.Get(ctx, path); return err })
	if err != nil {
		if errors.Is(err, api.ErrSecretNotFound) {
			s.observe("read", "not_found", start, true)
			return Record{}, 0, s.notFound(path)
		}
		err = s.classify("read", path, err, start)
		return Record{}, 0, err
	}
	version := 0
	if kvs.VersionMetadata != nil {
		version = kvs.VersionMetadata.Version
	}
	if kvs.Data == nil {
		s.observe("read", "not_found", start, true)
		return Record{}, version, s.notFound(path)
	}
	s.observe("read", "ok", start, true)
	rec, err := Decode(kvs.Data)
	if err != nil {
		var me *MalformedError
		if errors.As(err, &me) {
			me.Path = s.mount + "/" + path
			return Record{}, version, me
		}
		return Record{}, version, err
	}
	if kvs.VersionMetadata != nil {
		rec.VersionTime = kvs.VersionMetadata.CreatedTime
	}
	rec.Claims = claimsOf(kvs.CustomMetadata)
	return rec, version, nil
}

// Write stores r at path if the record's current version is still cas (0:
// only if no live version exists) and returns the new version. A lost race
// is ErrConflict: re-read and decide again, never overwrite.
func (s *Store) Write(ctx context.Context, path string, r Record, cas int) (int, error) {
	kvs, err := s.write(ctx, path, r, cas)
	if err != nil {
		return 0, err
	}
	return kvs.VersionMetadata.Version, nil
}

// write is the check-and-set write of Write and WriteClaimed.
func (s *Store) write(ctx context.Context, path string, r Record, cas int) (*api.KVSecret, error) {
	start := time.Now()
	var kvs *api.KVSecret
	// A refused write changed nothing: sending it once more after a new
	// login is the same check-and-set write.
	err := s.once(ctx, "write", func() (err error) { kvs, err = s.kv.Put(ctx, path, r.Encode(), api.WithCheckAndSet(cas)); return err })
	if err != nil {
		return nil, s.classify("write", path, err, start)
	}
	s.observe("write", "ok", start, true)
	if kvs == nil || kvs.VersionMetadata == nil {
		return nil, errNoVersion(s.mount, path, cas)
	}
	return kvs, nil
}

// Ready checks that Vault is reachable, unsealed and accepts the token.
func (s *Store) Ready(ctx context.Context) error {
	start := time.Now()
	if err := s.once(ctx, "health", func() error { _, err := s.client.Auth().Token().LookupSelfWithContext(ctx); return err }); err != nil {
		return s.classifyAt("health", "auth/token/lookup-self", err, start)
	}
	s.observe("health", "ok", start, true)
	return nil
}

// Path renders a record's full location for messages, e.g. "secret/affix/prod".
func (s *Store) Path(path string) string { return s.mount + "/" + path }

func (s *Store) notFound(path string) error {
	return fmt.Errorf("vault: %w at %s/%s: seed it once with the secret Affix accepts now, from stdin and only if no record exists: `vault kv put -cas=0 %s/%s client_secret=-` (runbook: Seed a client), or set bootstrap: true for a brand-new Affix client",
		ErrNotFound, s.mount, path, s.mount, path)
}

// once sends a request (req) and, when Vault refuses it (401/403) because
// the token is no longer valid and a new login replaced it (cure), sends it
// once more, so that a revoked or expired token costs no failed request. A
// refusal by the token's policy is returned as it is, without a login: a
// new token would carry the same policy. The refused first attempt is
// counted (vault_requests_total{result="denied"}).
func (s *Store) once(ctx context.Context, op string, req func() error) error {
	used := s.client.Token()
	start := time.Now()
	err := req()
	if err == nil || s.auth == nil || !isDeniedResponse(err) {
		return err
	}
	if !s.auth.cure(ctx, used) {
		return err
	}
	s.observe(op, "denied", start, true)
	return req()
}

func (s *Store) observe(op, result string, start time.Time, up bool) {
	if s.obs != nil {
		s.obs.VaultRequest(op, result, time.Since(start), up)
	}
}

// classify maps a Vault API error to the sentinels, records it, and wraps it
// with the operation and path. Vault's error texts never contain the data
// written, so wrapping them leaks nothing.
func (s *Store) classify(op, path string, err error, start time.Time) error {
	return s.classifyAt(op, s.mount+"/"+path, err, start)
}

// classifyAt is classify for a request that is not on a record: full is the
// Vault path as it is shown in messages (e.g. "auth/token/lookup-self").
func (s *Store) classifyAt(op, full string, err error, start time.Time) error {
	var re *api.ResponseError
	switch {
	case errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && containsAny(re.Errors, "check-and-set"):
		s.observe(op, "cas_conflict", start, true)
		return fmt.Errorf("vault: %s %s: %w", op, full, ErrConflict)
	case errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized):
		// once has already logged in again if a login could cure it.
		s.observe(op, "denied", start, true)
		return fmt.Errorf("vault: %s %s: %w (%s)", op, full, ErrDenied, strings.Join(re.Errors, "; "))
	case errors.As(err, &re) && re.StatusCode >= 500, errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests:
		s.observe(op, "error", start, false)
		return fmt.Errorf("vault: %s %s: %w: %d %s", op, full, ErrUnavailable, re.StatusCode, strings.Join(re.Errors, "; "))
	case errors.As(err, &re):
		s.observe(op, "error", start, true)
		return fmt.Errorf("vault: %s %s: %d %s", op, full, re.StatusCode, strings.Join(re.Errors, "; "))
	case errors.Is(err, context.Canceled):
		s.observe(op, "error", start, true)
		return fmt.Errorf("vault: %s %s: %w", op, full, err)
	default: // transport: refused, reset, timeout, DNS
		s.observe(op, "error", start, false)
		return fmt.Errorf("vault: %s %s: %w: %v", op, full, ErrUnavailable, err)
	}
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
