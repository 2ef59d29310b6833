// Package k8scheck holds the Go checks of deploy/ that deploy/check.sh runs:
// the Helm chart rendered and decoded strictly into Kubernetes API types
// (unknown fields rejected), its security context, probes, secrets wiring and
// config (parsed by the daemon's own config package); every metric name an
// alert or the Grafana dashboard uses is one the daemon exports; every alert's
// runbook_url points to an existing section of docs/runbook.md; the
// Dockerfile builds with deploy/build-flags.sh; the systemd unit has its
// hardening; the External Secrets Operator examples of docs/consumers.md
// decode strictly against the fields of ESO's v1 API they use (hand-written
// structs with ESO's field names: ESO's module and CRD schemas are not
// dependencies) and point at the rotator's record.
//
// It is a separate Go module so that k8s.io, buildkit and Prometheus server
// packages stay out of the root module. Run it with deploy/check.sh, which
// provides the tools (HELM); alone, the tests that need a missing tool skip.
package k8scheck
