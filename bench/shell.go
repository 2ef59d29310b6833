package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// shellScript rotates as a user's script would: one vault CLI or curl
// process per step (kv get, kv put -cas, curl POST [new, old], kv put -cas,
// kv get, curl POST [new], kv put -cas).
type shellScript struct {
	vault, curl, url, key, path string
	env                         []string
}

func (s *shellScript) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = s.env
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w: %s", name, args[0], err, out)
	}
	return out, nil
}

func (s *shellScript) get() (string, int, error) {
	out, err := s.run(s.vault, "kv", "get", "-format=json", "secret/"+s.path)
	if err != nil {
		return "", 0, err
	}
	var r struct {
		Data struct {
			Data     map[string]any `json:"data"`
			Metadata struct {
				Version int `json:"version"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return "", 0, err
	}
	cs, _ := r.Data.Data["client_secret"].(string)
	return cs, r.Data.Metadata.Version, nil
}

func (s *shellScript) put(cas int, kv ...string) error {
	_, err := s.run(s.vault, append([]string{"kv", "put", "-format=json", "-cas=" + strconv.Itoa(cas), "secret/" + s.path}, kv...)...)
	return err
}

func (s *shellScript) post(secrets ...string) error {
	body, _ := json.Marshal(map[string]any{"client_secret": secrets})
	_, err := s.run(s.curl, "-sS", "--fail", "-X", "POST", "-H", "Authorization: "+s.key, "-H", "Content-Type: application/json", "--data", string(body), s.url)
	return err
}

// rotate runs the script's steps and returns the time they took, the
// grace sleep left out.
func (s *shellScript) rotate() (time.Duration, error) {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	t0 := time.Now()
	old, ver, err := s.get()
	if err != nil {
		return 0, err
	}
	g, _ := secret.Generate()
	pending := g.Reveal()
	if err := s.put(ver, "client_secret="+old, "pending_client_secret="+pending, "phase=staged"); err != nil {
		return 0, err
	}
	if err := s.post(pending, old); err != nil {
		return 0, err
	}
	graceUntil := time.Now().Add(grace)
	if err := s.put(ver+1, "client_secret="+pending, "previous_client_secret="+old, "phase=overlap", "grace_until="+ts(graceUntil)); err != nil {
		return 0, err
	}
	t1 := time.Now()
	time.Sleep(time.Until(graceUntil))
	t2 := time.Now()
	if _, ver, err = s.get(); err != nil {
		return 0, err
	}
	if err := s.post(pending); err != nil {
		return 0, err
	}
	if err := s.put(ver, "client_secret="+pending, "phase=stable", "rotated_at="+ts(time.Now())); err != nil {
		return 0, err
	}
	return t1.Sub(t0) + time.Since(t2), nil
}

func (e *env) shell(ctx context.Context, runs int) error {
	curl, err := exec.LookPath("curl")
	if err != nil {
		fmt.Println("\n[shell] skipped: no curl on PATH")
		return nil
	}
	vbin, err := vaulttest.Binary()
	if err != nil {
		fmt.Println("\n[shell] skipped: no vault binary:", err)
		return nil
	}
	fmt.Printf("\n[shell] one rotation: shell-script equivalent (vault CLI + curl, 7 processes) vs the real rotator (the %s grace sleep left out)\n", grace)
	key, path, _, err := e.seed(ctx, "bench/shell", time.Time{})
	if err != nil {
		return err
	}
	home, err := os.MkdirTemp("", "bench-shell-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	s := &shellScript{vault: vbin, curl: curl, url: e.fake.URL + affix.Path, key: key, path: path,
		env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "VAULT_ADDR=" + e.vault.Addr, "VAULT_TOKEN=" + e.vault.Token}}
	o, err := e.newOurs(ctx)
	if err != nil {
		return err
	}
	if _, err := s.rotate(); err != nil { // warm the page cache
		return err
	}
	var sh, us []time.Duration
	for range runs {
		d, err := s.rotate()
		if err != nil {
			return err
		}
		sh = append(sh, d)
		st, err := o.rotate(ctx)
		if err != nil {
			return err
		}
		us = append(us, st.toOverlap+st.toStable)
	}
	fmt.Printf("  shell script %s   ours %s   speed-up %s (target ≥ 20×)\n", fmtDur(durSample(sh)), fmtDur(durSample(us)), fmtRatio(ratios(durSample(sh), durSample(us))))
	return nil
}
