package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxConfigSize bounds the config file: a larger one is refused before
// it is parsed (a YAML file of a few KiB describes hundreds of clients).
const MaxConfigSize = 4 << 20

// readConfig reads the config file, refusing one over MaxConfigSize.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("read config %s: larger than %d MiB: not a config file (give the YAML file, which never holds a secret)", path, MaxConfigSize>>20)
	}
	return b, nil
}

// secretFiles lists the files of c that hold a secret, by key path: API
// keys, signing keys, the Vault token and the AppRole secret id. (The
// Kubernetes service account token is the kubelet's, mode 0644 by
// default, and is not listed.)
func (c *Config) secretFiles() [][2]string {
	var out [][2]string
	add := func(key, path string) {
		if path != "" {
			out = append(out, [2]string{key, path})
		}
	}
	add("vault.auth.token_file", c.Vault.Auth.TokenFile)
	if c.Vault.Auth.AppRole != nil {
		add("vault.auth.approle.secret_id_file", c.Vault.Auth.AppRole.SecretIDFile)
	}
	add("affix.api_key_file", c.Affix.APIKeyFile)
	for i, cl := range c.Clients {
		add(fmt.Sprintf("clients[%d].affix.api_key_file", i), cl.Affix.APIKeyFile)
	}
	for i, w := range c.Notifications {
		add(fmt.Sprintf("notifications[%d].secret_file", i), w.SecretFile)
	}
	return out
}

// SecretFileWarnings returns one warning for each file holding a secret
// that group or others may read or write (as ssh warns of a private key
// file), through a symbolic link or not. A missing file is not warned
// about here: reading it fails with its own error.
func (c *Config) SecretFileWarnings() []*Error {
	var out []*Error
	for _, kp := range c.secretFiles() {
		key, path := kp[0], kp[1]
		st, err := os.Stat(path) // the link's target: what is read
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				out = append(out, &Error{Key: key, Problem: fmt.Sprintf("cannot check %s: %v", path, err)})
			}
			continue
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			via := ""
			if lst, err := os.Lstat(path); err == nil && lst.Mode()&fs.ModeSymlink != 0 {
				via = " (through a symbolic link)"
			}
			out = append(out, &Error{Key: key, Problem: fmt.Sprintf("%s%s is mode %04o: group or others may read the secret it holds; chmod 600 it (or 400), owned by the user the daemon runs as", path, via, perm)})
		}
	}
	return out
}
