package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/httpapi"

	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// vaultHealth is what the daemon knows of Vault, for /status: it sees every
// request (as the metrics' Observer) and every error of the connection and
// readiness checks.
//
// It also makes affix_rotator_vault_up show a denial: a request Vault
// refuses (401/403) counts as Vault not usable, and so does every request
// while the rotator holds a refusal for some client (denied), so that
// another client's successful reads do not hide it. AffixRotatorVaultNotReady
// then fires on a policy that does not cover a client's record.
type vaultHealth struct {
	obs     vault.Observer
	address string
	method  string
	// denied reports whether the rotator holds Vault's refusal of some
	// client's last request (nil until the rotator exists).
	denied atomic.Pointer[func() bool]

	mu            sync.Mutex
	connected     bool
	reachable     bool
	authenticated bool
	lastErr       string
	lastErrAt     time.Time
}

// vaultStatus is the `vault` object of /status.
type vaultStatus struct {
	Address       string     `json:"address"`
	AuthMethod    string     `json:"auth_method"`
	Connected     bool       `json:"connected"`
	Reachable     bool       `json:"reachable"`
	Authenticated bool       `json:"authenticated"`
	LastError     string     `json:"last_error,omitempty"`
	LastErrorAt   *time.Time `json:"last_error_at,omitempty"`
}

// daemonStatus is the document /status serves.
type daemonStatus struct {
	Version    string                 `json:"version"`
	InstanceID string                 `json:"instance_id"`
	Vault      vaultStatus            `json:"vault"`
	Clients    []rotator.ClientStatus `json:"clients"`
}

func (h *vaultHealth) VaultRequest(op, result string, d time.Duration, up bool) {
	if h.obs != nil {
		usable := up && result != "denied"
		if f := h.denied.Load(); f != nil && (*f)() {
			usable = false
		}
		h.obs.VaultRequest(op, result, d, usable)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case result == "denied":
		// Vault answered. A refused login or lookup-self is a token Vault
		// does not accept; a refused record is a policy (last_error says).
		h.reachable = true
		if op == "login" || op == "health" {
			h.authenticated = false
		}
	case up:
		h.reachable = true
		if result == "ok" || result == "not_found" || result == "cas_conflict" {
			h.authenticated = true
		}
	default:
		h.reachable = false
	}
}

func (h *vaultHealth) failed(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr, h.lastErrAt = err.Error(), time.Now()
}

func (h *vaultHealth) setConnected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connected = true
}

func (h *vaultHealth) status() vaultStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := vaultStatus{Address: h.address, AuthMethod: h.method, Connected: h.connected, Reachable: h.reachable, Authenticated: h.authenticated, LastError: h.lastErr}
	if !h.lastErrAt.IsZero() {
		t := h.lastErrAt.UTC()
		s.LastErrorAt = &t
	}
	return s
}

// lastError is the last error seen talking to Vault ("" if none).
func (h *vaultHealth) lastError() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastErr
}

// readyCheck is /readyz's check: connected to Vault, Vault reachable and
// accepting the token (its answer reused for cacheFor: each request to
// /readyz does not make one to Vault), and no client's record denied.
func readyCheck(store *atomic.Pointer[vault.Store], rot *atomic.Pointer[rotator.Rotator], health *vaultHealth, cacheFor time.Duration) func(context.Context) error {
	vaultReady := httpapi.Cached(func(ctx context.Context) error {
		if err := store.Load().Ready(ctx); err != nil {
			health.failed(err)
			return err
		}
		return nil
	}, cacheFor, 5*time.Second)
	return func(ctx context.Context) error {
		if store.Load() == nil {
			if e := health.lastError(); e != "" {
				return fmt.Errorf("vault: not connected yet: %s", e)
			}
			return errors.New("vault: not connected yet")
		}
		if err := vaultReady(ctx); err != nil {
			return err
		}
		if r := rot.Load(); r != nil {
			if err := r.Denied(); err != nil {
				return err
			}
		}
		return nil
	}
}
