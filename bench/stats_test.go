package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSample(t *testing.T) {
	s := sample{5, 1, 3}
	if s.median() != 3 || s.min() != 1 || s.max() != 5 {
		t.Fatalf("median %v min %v max %v", s.median(), s.min(), s.max())
	}
	if m := (sample{1, 2, 3, 10}).median(); m != 2.5 {
		t.Fatalf("even median %v", m)
	}
	r := ratios(sample{2, 6}, sample{1, 3})
	if r[0] != 2 || r[1] != 2 {
		t.Fatalf("ratios %v", r)
	}
	if got := fmtDur(durSample([]time.Duration{time.Millisecond})); got != "1ms (1ms–1ms)" {
		t.Fatalf("fmtDur %q", got)
	}
}

// TestFloorWatchCountsEarlySends: the fleet's check can fail: a request
// sent after a 429 arrived and before its Retry-After is counted.
func TestFloorWatchCountsEarlySends(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	fw := &floorWatch{next: http.DefaultTransport}
	hc := &http.Client{Transport: fw}
	for i := range 2 {
		resp, err := hc.Post(srv.URL, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if i == 0 {
			time.Sleep(5 * time.Millisecond) // well past "already on its way"
		}
	}
	if fw.sent != 2 || fw.early != 1 || fw.inFlight != 0 {
		t.Fatalf("sent %d early %d in flight %d, want 2 1 0", fw.sent, fw.early, fw.inFlight)
	}
}
