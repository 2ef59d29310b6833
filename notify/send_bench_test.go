package notify_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/notify"
)

// blocked is a transport that never answers until the request is cancelled.
type blocked struct{}

func (blocked) RoundTrip(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

// BenchmarkSend is what the rotator pays per event: encoding the payload
// and queueing it (here for three webhooks whose receiver never answers,
// so past the first events every queue is full and the event is dropped).
func BenchmarkSend(b *testing.B) {
	k, _ := notify.ParseKeys(vectorKey)
	eps := make([]notify.Endpoint, 3)
	for i := range eps {
		eps[i] = notify.Endpoint{Name: "n", URL: "https://hooks.example/x", Keys: k, Timeout: time.Hour, MaxElapsed: time.Hour, QueueSize: 100}
	}
	n := notify.New(notify.Options{Endpoints: eps, Client: &http.Client{Transport: blocked{}}})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = n.Close(ctx)
	}()
	data := map[string]string{"client": "prod", "vault_path": "affix/prod", "rotation_id": "9f1c2a7be04d3316", "phase": "overlap", "instance_id": "pod-a"}
	b.ReportAllocs()
	for b.Loop() {
		n.Send(notify.Message{Type: notify.EventRotationOverlap, Time: time.Now(), Data: data})
	}
}
