package image

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/package-url/packageurl-go"
)

// SBOMSpec is the CycloneDX version of the SBOM.
const SBOMSpec = cdx.SpecVersion1_6

// SBOM is a CycloneDX JSON SBOM of the Go binary at path, from the module
// list the Go linker records in it (what `go version -m` prints): the main
// module as the application (at version, with the binary's SHA-256), every
// module linked in as a library with its purl and go.sum hash, and the Go
// standard library. created is its timestamp, so that the same binary gives
// the same SBOM. It returns the JSON and the number of components.
func SBOM(path, version string, created time.Time) ([]byte, int, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("image: SBOM: read the build info of %s: %w", path, err)
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("image: SBOM: %w", err)
	}
	sum := sha256.Sum256(bin)

	main := component(cdx.ComponentTypeApplication, bi.Main.Path, version, "")
	main.Hashes = &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hex.EncodeToString(sum[:])}}
	props := []cdx.Property{{Name: "golang:binary:name", Value: strings.TrimPrefix(BinaryPath, "/")}}
	for _, s := range bi.Settings {
		switch s.Key {
		case "CGO_ENABLED", "GOOS", "GOARCH", "GOAMD64", "GOARM64", "-trimpath", "vcs.revision", "vcs.time", "vcs.modified":
			props = append(props, cdx.Property{Name: "golang:build:" + s.Key, Value: s.Value})
		}
	}
	main.Properties = &props

	components := make([]cdx.Component, 0, len(bi.Deps)+1)
	refs := make([]string, 0, len(bi.Deps)+1)
	for _, m := range bi.Deps {
		if m.Replace != nil {
			m = replaced(m)
		}
		c := component(cdx.ComponentTypeLibrary, m.Path, m.Version, m.Sum)
		components = append(components, c)
		refs = append(refs, c.BOMRef)
	}
	goVersion := strings.TrimPrefix(bi.GoVersion, "go")
	std := component(cdx.ComponentTypeLibrary, "std", goVersion, "")
	std.Description = "the Go standard library and runtime (" + bi.GoVersion + ")"
	components = append(components, std)
	refs = append(refs, std.BOMRef)

	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Timestamp: created.UTC().Format(time.RFC3339),
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: "affix-rotator deploy/image",
			Description: "the Go module list recorded in the binary (go version -m)",
		}}},
		Component: &main,
	}
	bom.Components = &components
	bom.Dependencies = &[]cdx.Dependency{{Ref: main.BOMRef, Dependencies: &refs}}
	bom.Compositions = &[]cdx.Composition{{
		// The module list is complete; which module needs which is not recorded.
		Aggregate:    cdx.CompositionAggregateIncompleteFirstPartyOnly,
		Dependencies: &[]cdx.BOMReference{cdx.BOMReference(main.BOMRef)},
	}}

	var buf bytes.Buffer
	enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.EncodeVersion(bom, SBOMSpec); err != nil {
		return nil, 0, fmt.Errorf("image: SBOM: encode: %w", err)
	}
	return buf.Bytes(), len(components), nil
}

// replaced is the module a replace directive put in m's place.
func replaced(m *debug.Module) *debug.Module {
	r := *m.Replace
	if r.Version == "" { // a directory: keep the required version
		r.Path, r.Version = m.Path, m.Version
	}
	return &r
}

// component is a Go module as a CycloneDX component: purl
// pkg:golang/<path>@<version>?type=module, and its go.sum hash (h1:, the
// SHA-256 of the module's file list) as a SHA-256.
func component(typ cdx.ComponentType, path, version, sum string) cdx.Component {
	ns, n := "", path
	if i := strings.LastIndex(path, "/"); i >= 0 {
		ns, n = path[:i], path[i+1:]
	}
	purl := packageurl.NewPackageURL(packageurl.TypeGolang, ns, n, version,
		packageurl.Qualifiers{{Key: "type", Value: "module"}}, "").ToString()
	c := cdx.Component{Type: typ, Name: path, Version: version, PackageURL: purl, BOMRef: purl}
	if h, ok := strings.CutPrefix(sum, "h1:"); ok {
		if b, err := base64.StdEncoding.DecodeString(h); err == nil && len(b) == sha256.Size {
			c.Hashes = &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hex.EncodeToString(b)}}
		}
	}
	return c
}
