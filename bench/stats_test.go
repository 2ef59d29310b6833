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

func TestRateLimitMiddleware(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	h := newRateLimited(ok, 1, 1)
	srv := httptest.NewServer(h)
	defer srv.Close()
	codes := map[int]int{}
	for range 3 {
		resp, err := http.Post(srv.URL, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("429 without Retry-After: 1")
		}
		resp.Body.Close()
	}
	if codes[200] != 1 || codes[429] != 2 || h.rejected.Load() != 2 {
		t.Fatalf("codes %v rejected %d", codes, h.rejected.Load())
	}
}
