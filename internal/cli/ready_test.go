package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/internal/httpapi"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// lookups counts the daemon's readiness requests to Vault (lookup-self).
type lookups struct{ n atomic.Int32 }

func (l *lookups) VaultRequest(op, _ string, _ time.Duration, _ bool) {
	if op == "health" {
		l.n.Add(1)
	}
}

// TestReadyzCachesVaultHealth: 50 requests to /readyz, 10 at a time, make
// at most two lookup-self calls to a real Vault.
func TestReadyzCachesVaultHealth(t *testing.T) {
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	var count lookups
	health := &vaultHealth{obs: &count}
	s, err := vault.New(t.Context(), vault.Config{Address: srv.Addr, Auth: vault.TokenAuth(secret.New(srv.Token)), Observer: health})
	if err != nil {
		t.Fatal(err)
	}
	var store atomic.Pointer[vault.Store]
	var rot atomic.Pointer[rotator.Rotator]
	store.Store(s)
	h := httptest.NewServer(httpapi.Handler(httpapi.Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    readyCheck(&store, &rot, health, httpapi.DefaultReadyCache),
		Status:   func() any { return nil },
	}))
	t.Cleanup(h.Close)
	before := count.n.Load()
	start := time.Now()
	var wg sync.WaitGroup
	var bad atomic.Int32
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				resp, err := http.Get(h.URL + "/readyz")
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	calls := count.n.Load() - before
	// One refresh per DefaultReadyCache at most: the 50 requests took
	// `took`, so at most 1 + took/DefaultReadyCache calls.
	limit := 1 + int32(took/httpapi.DefaultReadyCache)
	t.Logf("50 GET /readyz in %s: %d lookup-self calls (at most %d allowed)", took.Round(time.Millisecond), calls, limit)
	if bad.Load() > 0 || calls < 1 || calls > limit || calls > 2 && took < 2*httpapi.DefaultReadyCache {
		t.Fatalf("%d lookup-self calls for 50 requests in %s (%d not 200)", calls, took, bad.Load())
	}
}
