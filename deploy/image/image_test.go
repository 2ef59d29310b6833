package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/modfile"

	"github.com/affix-rotator/affix-rotator/deploy/image"
)

// repoRoot is the repository root, from deploy/image.
var repoRoot = filepath.Join("..", "..")

func repoFile(t *testing.T, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{repoRoot}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// built is the image under test: the OCI layout at $AFFIX_ROTATOR_IMAGE
// (scripts/test.sh builds it with cmd/mkimage) with its SBOM beside it, else
// one built here once (binary included) into a temporary directory.
type built struct {
	layout, sbom string
	img          v1.Image
	cfg          *v1.ConfigFile
	rootfs       string   // the image's filesystem, unpacked
	files        []string // its paths, as in the layer
}

var (
	once     sync.Once
	fixture  *built
	fixErr   error
	fixtureD string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureD != "" {
		os.RemoveAll(fixtureD)
	}
	os.Exit(code)
}

func theImage(t *testing.T) *built {
	t.Helper()
	once.Do(func() { fixture, fixErr = build() })
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fixture
}

func build() (*built, error) {
	d, err := os.MkdirTemp("", "image-test-")
	if err != nil {
		return nil, err
	}
	fixtureD = d
	b := &built{layout: os.Getenv("AFFIX_ROTATOR_IMAGE")}
	if b.layout != "" {
		b.sbom = image.SBOMPath(b.layout)
	} else {
		b.layout = filepath.Join(d, "affix-rotator.oci")
		res, err := image.Build(context.Background(), image.Options{
			RepoRoot: repoRoot, Output: b.layout, Version: "v0.0.0-imagetest",
		})
		if err != nil {
			return nil, err
		}
		b.sbom = res.SBOM
	}
	p, err := layout.FromPath(b.layout)
	if err != nil {
		return nil, fmt.Errorf("read the layout %s: %w", b.layout, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("layout index: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("layout index: %w", err)
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("the layout holds %d manifests, want 1", len(im.Manifests))
	}
	if b.img, err = idx.Image(im.Manifests[0].Digest); err != nil {
		return nil, fmt.Errorf("layout image: %w", err)
	}
	if b.cfg, err = b.img.ConfigFile(); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	b.rootfs = filepath.Join(d, "rootfs")
	if b.files, err = unpack(b.img, b.rootfs); err != nil {
		return nil, fmt.Errorf("unpack the image: %w", err)
	}
	return b, nil
}

// unpack writes the image's flattened filesystem under dir, keeping modes
// (and owners, as root), and returns the paths in it.
func unpack(img v1.Image, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		names = append(names, h.Name)
		clean := path.Clean("/" + h.Name)
		if clean != "/"+strings.TrimSuffix(h.Name, "/") {
			return nil, fmt.Errorf("unclean path %q in the layer", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(clean))
		mode := h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return nil, err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return nil, err
			}
			if err := f.Close(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%s: type %q: the image should hold only directories and files", h.Name, h.Typeflag)
		}
		if err := os.Chmod(target, mode.Perm()|mode&(os.ModeSticky|os.ModeSetuid|os.ModeSetgid)); err != nil {
			return nil, err
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(target, h.Uid, h.Gid); err != nil {
				return nil, err
			}
		}
	}
}

// run runs the image's entrypoint with args the way a container runtime
// would, as far as a test can: as root, chrooted into the unpacked image
// as the image's user, with only env (nothing of the host's filesystem:
// no CA bundle, no zoneinfo); otherwise the binary from the unpacked image,
// on the host's filesystem.
func (b *built) run(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	entry := b.cfg.Config.Entrypoint
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		uid, gid := userOf(t, b.cfg.Config.User)
		cmd = exec.Command(entry[0], append(slices.Clone(entry[1:]), args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: b.rootfs, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Dir = "/"
	} else {
		t.Logf("not root: running %s from the unpacked image without a chroot", entry[0])
		cmd = exec.Command(filepath.Join(b.rootfs, entry[0]), append(slices.Clone(entry[1:]), args...)...)
	}
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s %q: %v", entry[0], args, err)
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

// userOf parses the image's "uid:gid" user; it must be numeric, so that
// Kubernetes' runAsNonRoot can check it.
func userOf(t *testing.T, user string) (int, int) {
	t.Helper()
	u, g, ok := strings.Cut(user, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("image user %q, want numeric uid:gid", user)
	}
	return uid, gid
}

// writeRootFile puts a file into the unpacked image (as the chart mounts
// the config), readable by the image's user.
func writeRootFile(t *testing.T, b *built, name string, data []byte) {
	t.Helper()
	p := filepath.Join(b.rootfs, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
}

// chartValues is deploy/helm/affix-rotator/values.yaml.
func chartValues(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal(repoFile(t, "deploy", "helm", "affix-rotator", "values.yaml"), &v); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	return v
}

func get(t *testing.T, m map[string]any, keys ...string) any {
	t.Helper()
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("values.yaml: %s: not a map above %q", strings.Join(keys, "."), k)
		}
		v = mm[k]
	}
	return v
}

// TestImageFilesystem: the layer holds the static binary, /etc/passwd and
// /etc/group naming the image's user, /home/nonroot and /tmp: no shell,
// nothing else.
func TestImageFilesystem(t *testing.T) {
	b := theImage(t)
	got := slices.Clone(b.files)
	sort.Strings(got)
	want := []string{"affix-rotator", "etc", "etc/group", "etc/passwd", "home", "home/nonroot", "tmp"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("files in the image:\n got %q\nwant %q", got, want)
	}
	uid, gid := userOf(t, b.cfg.Config.User)
	passwd, err := os.ReadFile(filepath.Join(b.rootfs, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(passwd), fmt.Sprintf(":x:%d:%d:", uid, gid)) {
		t.Errorf("/etc/passwd has no entry for %d:%d:\n%s", uid, gid, passwd)
	}
	if len(b.cfg.Config.Entrypoint) != 1 || b.cfg.Config.Entrypoint[0] != image.BinaryPath {
		t.Errorf("entrypoint %q, want [%q]", b.cfg.Config.Entrypoint, image.BinaryPath)
	}
	bin := filepath.Join(b.rootfs, image.BinaryPath)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("%s mode %v, want 0755 (not writable by the user)", image.BinaryPath, fi.Mode())
	}

	// Static: no interpreter, no shared library.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %q", libs)
	}
	if arch := map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine]; arch != b.cfg.Architecture || b.cfg.OS != "linux" {
		t.Errorf("image platform %s/%s, binary %v", b.cfg.OS, b.cfg.Architecture, f.Machine)
	}

	// Built by deploy/build-flags.sh: CGO_ENABLED=0, -trimpath (Go then
	// records no -ldflags: TestImageRuns checks the stamped version); with
	// the fallback CA roots linked in.
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true (deploy/build-flags.sh)", settings["CGO_ENABLED"], settings["-trimpath"])
	}
	if !slices.ContainsFunc(bi.Deps, func(m *debug.Module) bool { return m.Path == "golang.org/x/crypto/x509roots/fallback" }) {
		t.Error("golang.org/x/crypto/x509roots/fallback is not linked in: the image has no CA roots")
	}
}

// TestImageRuns runs the binary of the unpacked image: version, and
// validate --offline of the chart's default config and of
// config.example.yaml, mounted where the chart mounts it; and a CRON_TZ=
// schedule, which needs the zoneinfo embedded in the binary (the image has
// none).
func TestImageRuns(t *testing.T) {
	b := theImage(t)
	version := b.cfg.Config.Labels[image.LabelVersion]
	out, code := b.run(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "affix-rotator "+version+" (go") {
		t.Fatalf("version: exit %d, %q; want affix-rotator %s (go…)", code, out, version)
	}
	t.Logf("version: %s", strings.TrimSpace(out))

	configPath := configArg(t, b.cfg.Config.Cmd)
	chartConfig, err := yaml.Marshal(get(t, chartValues(t), "config"))
	if err != nil {
		t.Fatal(err)
	}
	tz := strings.Replace(string(chartConfig), `schedule: '@every 720h'`, `schedule: CRON_TZ=Europe/Paris 0 3 * * 1`, 1)
	if tz == string(chartConfig) {
		t.Fatalf("the chart's config has no schedule '@every 720h' to replace:\n%s", chartConfig)
	}
	for _, c := range []struct {
		name   string
		config []byte
		env    []string
	}{
		{"the chart's config", chartConfig, nil},
		{"config.example.yaml", repoFile(t, "config.example.yaml"), []string{"VAULT_ADDR=https://vault.example.com:8200"}},
		{"a CRON_TZ=Europe/Paris schedule", []byte(tz), nil},
	} {
		writeRootFile(t, b, configPath, c.config)
		out, code := b.run(t, c.env, "validate", "--offline", "--config", configPath)
		if code != 0 || !strings.Contains(out, configPath+": OK (") {
			t.Errorf("%s: validate --offline --config %s: exit %d\n%s", c.name, configPath, code, out)
		}
	}
}

// configArg is the value of --config in the image's command.
func configArg(t *testing.T, cmd []string) string {
	t.Helper()
	i := slices.Index(cmd, "--config")
	if i < 0 || i+1 >= len(cmd) {
		t.Fatalf("image command %q has no --config PATH", cmd)
	}
	return cmd[i+1]
}

// TestImageConfigMatchesDockerfile: user, port, entrypoint, command and
// every label of deploy/docker/Dockerfile's final stage are the image's.
func TestImageConfigMatchesDockerfile(t *testing.T) {
	b := theImage(t)
	c := b.cfg.Config
	res, err := parser.Parse(bytes.NewReader(repoFile(t, "deploy", "docker", "Dockerfile")))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil || len(stages) == 0 {
		t.Fatalf("Dockerfile: %d stages, %v", len(stages), err)
	}
	final := stages[len(stages)-1]
	env := shell.EnvsFromSlice([]string{
		"VERSION=" + c.Labels[image.LabelVersion],
		"REVISION=" + c.Labels[image.LabelRevision],
	})
	lex := shell.NewLex(res.EscapeToken)
	var user string
	var ports, entrypoint, cmd []string
	labels := map[string]string{}
	for _, in := range final.Commands {
		switch in := in.(type) {
		case *instructions.UserCommand:
			user = in.User
		case *instructions.ExposeCommand:
			for _, p := range in.Ports {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				ports = append(ports, p)
			}
		case *instructions.EntrypointCommand:
			entrypoint = in.CmdLine
		case *instructions.CmdCommand:
			cmd = in.CmdLine
		case *instructions.LabelCommand:
			if err := in.Expand(func(w string) (string, error) {
				s, _, err := lex.ProcessWord(w, env)
				return s, err
			}); err != nil {
				t.Fatalf("Dockerfile LABEL: %v", err)
			}
			for _, kv := range in.Labels {
				labels[kv.Key] = kv.Value
			}
		}
	}
	var imagePorts []string
	for p := range c.ExposedPorts {
		imagePorts = append(imagePorts, p)
	}
	sort.Strings(ports)
	sort.Strings(imagePorts)
	if user != c.User {
		t.Errorf("user: image %q, Dockerfile USER %q", c.User, user)
	}
	if !reflect.DeepEqual(ports, imagePorts) {
		t.Errorf("exposed ports: image %q, Dockerfile EXPOSE %q", imagePorts, ports)
	}
	if !reflect.DeepEqual(entrypoint, c.Entrypoint) {
		t.Errorf("entrypoint: image %q, Dockerfile ENTRYPOINT %q", c.Entrypoint, entrypoint)
	}
	if !reflect.DeepEqual(cmd, c.Cmd) {
		t.Errorf("command: image %q, Dockerfile CMD %q", c.Cmd, cmd)
	}
	if !reflect.DeepEqual(labels, c.Labels) {
		t.Errorf("labels:\n image      %q\n Dockerfile %q", c.Labels, labels)
	}
	for _, k := range []string{image.LabelVersion, image.LabelSource, image.LabelRevision} {
		if c.Labels[k] == "" {
			t.Errorf("label %s is missing or empty", k)
		}
	}
}

// TestImageConfigMatchesChart: what deploy/helm/affix-rotator assumes of
// the image: its user (runAsUser, runAsGroup, runAsNonRoot), the port of
// config.listen, args that are the image's command with no command: (so
// the entrypoint runs), the config's mount.
func TestImageConfigMatchesChart(t *testing.T) {
	b := theImage(t)
	c := b.cfg.Config
	v := chartValues(t)
	uid, gid := userOf(t, c.User)
	if uid == 0 {
		t.Error("image user is root; the chart sets runAsNonRoot")
	}
	for _, sc := range []string{"podSecurityContext", "securityContext"} {
		if u, g := get(t, v, sc, "runAsUser"), get(t, v, sc, "runAsGroup"); u != uid || g != gid {
			t.Errorf("values.yaml %s.runAsUser/runAsGroup %v/%v, image user %s", sc, u, g, c.User)
		}
		if get(t, v, sc, "runAsNonRoot") != true {
			t.Errorf("values.yaml %s.runAsNonRoot is not true", sc)
		}
	}
	listen, _ := get(t, v, "config", "listen").(string)
	port := listen[strings.LastIndex(listen, ":")+1:]
	if _, ok := c.ExposedPorts[port+"/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("values.yaml config.listen %q; image exposes %v", listen, c.ExposedPorts)
	}

	deployment := string(repoFile(t, "deploy", "helm", "affix-rotator", "templates", "deployment.yaml"))
	args := yamlList(t, deployment, "args:")
	if !reflect.DeepEqual(args, c.Cmd) {
		t.Errorf("deployment.yaml args %q, image command %q", args, c.Cmd)
	}
	if strings.Contains(deployment, "command:") {
		t.Error("deployment.yaml sets command: the image's entrypoint would not run")
	}
	dir := path.Dir(configArg(t, c.Cmd))
	if !strings.Contains(deployment, "mountPath: "+dir+"\n") {
		t.Errorf("deployment.yaml mounts nothing at %s, where the image's command reads its config", dir)
	}
}

// yamlList is the "- item" lines under the line holding key in a template.
func yamlList(t *testing.T, text, key string) []string {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != key {
			continue
		}
		var items []string
		for _, l := range lines[i+1:] {
			item, ok := strings.CutPrefix(strings.TrimSpace(l), "- ")
			if !ok {
				break
			}
			items = append(items, item)
		}
		return items
	}
	t.Fatalf("no %q in the template", key)
	return nil
}

// TestSBOM: the SBOM beside the image is CycloneDX JSON describing the
// binary in the image: the main module at the image's version, with the
// binary's hash, and every module at the version go.mod requires (among
// them hashicorp/vault/api and the fallback CA roots).
func TestSBOM(t *testing.T) {
	b := theImage(t)
	f, err := os.Open(b.sbom)
	if err != nil {
		t.Fatalf("the SBOM beside the image: %v", err)
	}
	defer f.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("SBOM: %v", err)
	}
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion != image.SBOMSpec {
		t.Errorf("SBOM format %s %v, want CycloneDX %v", bom.BOMFormat, bom.SpecVersion, image.SBOMSpec)
	}
	mod, err := modfile.Parse("go.mod", repoFile(t, "go.mod"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bom.Metadata == nil || bom.Metadata.Component == nil {
		t.Fatal("SBOM has no metadata.component")
	}
	main := bom.Metadata.Component
	version := b.cfg.Config.Labels[image.LabelVersion]
	if main.Name != mod.Module.Mod.Path || main.Version != version || main.Type != cdx.ComponentTypeApplication {
		t.Errorf("SBOM main component %s %s %s, want application %s %s", main.Type, main.Name, main.Version, mod.Module.Mod.Path, version)
	}
	bin, err := os.ReadFile(filepath.Join(b.rootfs, image.BinaryPath))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	if main.Hashes == nil || len(*main.Hashes) != 1 || (*main.Hashes)[0].Value != hex.EncodeToString(sum[:]) {
		t.Errorf("SBOM main component hashes %v, want the SHA-256 of the image's binary %x", main.Hashes, sum)
	}

	components := map[string]cdx.Component{}
	if bom.Components != nil {
		for _, c := range *bom.Components {
			components[c.Name] = c
		}
	}
	required := map[string]string{}
	for _, r := range mod.Require {
		required[r.Mod.Path] = r.Mod.Version
	}
	for _, p := range []string{"github.com/hashicorp/vault/api", "golang.org/x/crypto/x509roots/fallback", "go.uber.org/zap"} {
		c, ok := components[p]
		if !ok {
			t.Errorf("SBOM lists no %s", p)
			continue
		}
		if c.Version != required[p] {
			t.Errorf("SBOM: %s %s, go.mod requires %s", p, c.Version, required[p])
		}
		if want := "pkg:golang/" + p + "@" + required[p] + "?type=module"; c.PackageURL != want {
			t.Errorf("SBOM: %s purl %s, want %s", p, c.PackageURL, want)
		}
	}
	for name, c := range components {
		if v, ok := required[name]; ok && c.Version != v {
			t.Errorf("SBOM: %s %s, go.mod requires %s", name, c.Version, v)
		}
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	if len(components) != len(bi.Deps)+1 {
		t.Errorf("SBOM: %d components, the binary links %d modules (+ std)", len(components), len(bi.Deps))
	}
	if std := components["std"]; "go"+std.Version != bi.GoVersion {
		t.Errorf("SBOM: std %s, binary built with %s", std.Version, bi.GoVersion)
	}
	t.Logf("SBOM: CycloneDX %v, %d components; vault/api %s", bom.SpecVersion, len(components), components["github.com/hashicorp/vault/api"].Version)
}

// TestReproducible: the same binary, version, revision and time give the
// same image, to the digest, whether written as an OCI layout or a
// tarball; an output path holding something else is not overwritten.
func TestReproducible(t *testing.T) {
	b := theImage(t)
	want, err := b.img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "affix-rotator")
	data, err := os.ReadFile(filepath.Join(b.rootfs, image.BinaryPath))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := image.Options{
		RepoRoot: repoRoot, Binary: bin, Arch: b.cfg.Architecture,
		Version:  b.cfg.Config.Labels[image.LabelVersion],
		Revision: b.cfg.Config.Labels[image.LabelRevision],
		Created:  b.cfg.Created.Time,
	}
	var tarDigest v1.Hash
	for _, out := range []string{"a.oci", "a.oci", "b.tar", "b.tar"} { // twice each: an image there is replaced
		o := opts
		o.Output = filepath.Join(dir, out)
		res, err := image.Build(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case res.Format == "oci-layout" && res.Digest != want:
			t.Errorf("%s: digest %s, want %s", out, res.Digest, want)
		case res.Format == "tarball" && tarDigest.Hex != "" && res.Digest != tarDigest:
			t.Errorf("%s: digest %s, then %s", out, tarDigest, res.Digest)
		}
		if res.Format == "tarball" {
			tarDigest = res.Digest
		}
	}
	// The tarball's manifest is made by its reader, but its config and
	// layers are the layout's.
	tb, err := tarball.ImageFromPath(filepath.Join(dir, "b.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tb.Digest(); err != nil || got != tarDigest {
		t.Errorf("tarball's image digest %s (%v), Build reported %s", got, err, tarDigest)
	}
	if c1, c2 := must(b.img.ConfigName()), must(tb.ConfigName()); c1 != c2 {
		t.Errorf("config of the tarball %s, of the layout %s", c2, c1)
	}
	sbom1, err := os.ReadFile(filepath.Join(dir, "a.cdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	sbom2, err := os.ReadFile(filepath.Join(dir, "b.cdx.json"))
	if err != nil || !bytes.Equal(sbom1, sbom2) {
		t.Errorf("the SBOMs of one binary differ (%v)", err)
	}

	// A binary of another platform, or one built with cgo, is refused.
	o := opts
	o.Output, o.Arch = filepath.Join(dir, "c.oci"), "riscv64"
	if b.cfg.Architecture == o.Arch {
		o.Arch = "amd64"
	}
	if _, err := image.Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "binary, not linux/") {
		t.Errorf("Build of a linux/%s binary as linux/%s: %v", b.cfg.Architecture, o.Arch, err)
	}
	exe, err := os.Executable() // this test binary: built with cgo where there is a C compiler
	if err != nil {
		t.Fatal(err)
	}
	if bi, err := buildinfo.ReadFile(exe); err == nil && slices.ContainsFunc(bi.Settings, func(s debug.BuildSetting) bool { return s.Key == "CGO_ENABLED" && s.Value == "1" }) {
		o := opts
		o.Output, o.Binary = filepath.Join(dir, "d.oci"), exe
		if _, err := image.Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "want a static linux binary") {
			t.Errorf("Build with a cgo binary: %v", err)
		}
	}

	// Not an image: left alone.
	other := filepath.Join(dir, "other")
	if err := os.MkdirAll(filepath.Join(other, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	o = opts
	o.Output = other
	if _, err := image.Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("Build into a directory that is not a layout: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, "keep")); err != nil {
		t.Errorf("Build removed what was in %s: %v", other, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPush pushes the layout as `crane push LAYOUT REF` does (its one
// image, as is) to a registry on loopback: the registry has the image
// under the digest Build reported, with the image's config and labels.
func TestPush(t *testing.T) {
	b := theImage(t)
	want, err := b.img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/affix-rotator:test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(b.layout)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("layout index: %d manifests, %v", len(im.Manifests), err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if desc.Digest != want {
		t.Errorf("the registry has %s, Build reported %s", desc.Digest, want)
	}
	pulled, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pulled.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Config, b.cfg.Config) {
		t.Errorf("pulled config %+v, want %+v", cfg.Config, b.cfg.Config)
	}
}
