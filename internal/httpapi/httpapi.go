// Package httpapi serves the daemon's one HTTP listener: /metrics for
// Prometheus, /healthz (the process is alive), /readyz (Vault is reachable
// and accepts our token) and /status (JSON: the daemon and each client,
// never a secret).
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options are the sources behind the endpoints.
type Options struct {
	Gatherer prometheus.Gatherer
	// Ready reports whether the daemon can do its work (Vault reachable and
	// authenticated).
	Ready func(ctx context.Context) error
	// Status returns the JSON-serialisable document /status serves (the
	// daemon's: version, instance id, Vault, and a list of clients).
	Status func() any
	// ReadyTimeout bounds one readiness check (default 5s).
	ReadyTimeout time.Duration
	// Redact, when set, is applied to what /readyz and /status serve:
	// errors from Vault and Affix are outside text.
	Redact func(string) string
}

// Handler returns the mux for the listener.
func Handler(o Options) http.Handler {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Second
	}
	if o.Redact == nil {
		o.Redact = func(s string) string { return s }
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), o.ReadyTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := o.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(o.Redact("not ready: " + err.Error() + "\n")))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		if err := enc.Encode(o.Status()); err != nil {
			http.Error(w, "cannot encode the status", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(o.Redact(b.String())))
	})
	return mux
}
