package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/notify"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// flushTimeout bounds how long a stopping process (SIGTERM, the end of
// -once or of an operator action) goes on delivering the notifications
// still queued before it exits.
const flushTimeout = 5 * time.Second

// buildNotifier reads the webhooks' signing keys and starts their delivery
// (nil, nil when none is configured). Its metrics go on reg.
// The keys join secrets, which redacts every payload.
func buildNotifier(cfg *config.Config, getenv func(string) string, reg prometheus.Registerer, log *zap.Logger, secrets *redact.Set) (*notify.Notifier, error) {
	if len(cfg.Notifications) == 0 {
		return nil, nil
	}
	var eps []notify.Endpoint
	var errs []error
	for i, w := range cfg.Notifications {
		keys, err := cfg.WebhookKeys(i, getenv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, k := range keys {
			secrets.Add(string(k.Reveal()))
		}
		eps = append(eps, notify.Endpoint{Name: fmt.Sprintf("notifications[%d]", i), URL: w.URL, Keys: keys, Events: w.Events,
			Timeout: w.Timeout.D(), MaxElapsed: w.MaxElapsed.D(), QueueSize: w.QueueSize})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, ep := range eps {
		events := ep.Events
		if len(events) == 0 {
			events = []string{"all"}
		}
		// The host only: a URL's path or query may hold a token.
		log.Info("webhook configured", zap.String("webhook", ep.Name), zap.String("host", urlHost(ep.URL)), zap.Strings("events", events),
			zap.Duration("timeout", ep.Timeout), zap.Duration("max_elapsed", ep.MaxElapsed), zap.Int("queue_size", ep.QueueSize))
	}
	return notify.New(notify.Options{Endpoints: eps, Logger: log, Metrics: notify.NewMetrics(reg), Redact: secrets.String}), nil
}

// eventsTo hands the rotator's events to n (nil: none are reported). Send
// only queues: it never blocks a rotation.
func eventsTo(n *notify.Notifier) func(rotator.Event) {
	if n == nil {
		return nil
	}
	return func(e rotator.Event) { n.Send(e.Message()) }
}

// flushNotifications delivers what is still queued, for at most
// flushTimeout, then stops the notifier.
func flushNotifications(n *notify.Notifier, log *zap.Logger) {
	if n == nil {
		return
	}
	pending := n.Pending()
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		log.Warn("exiting with notifications undelivered (their receivers were too slow); they are counted in affix_rotator_notifications_total", zap.Duration("flush_timeout", flushTimeout), zap.Int("queued_at_exit", pending))
	}
}

func urlHost(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Scheme + "://" + p.Host
}
