package k8scheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

const (
	chartDir    = "deploy/helm/affix-rotator"
	kubeVersion = "1.31.0"
	// nonroot is the uid and gid of gcr.io/distroless/static-debian12:nonroot.
	nonroot = 65532
	// secretsDir is where the chart mounts secrets.files.
	secretsDir = "/var/run/secrets/affix-rotator/"
	// saTokenDir is where Kubernetes mounts the ServiceAccount token.
	saTokenDir = "/var/run/secrets/kubernetes.io/serviceaccount/"
)

// rendered is one `helm template` output, decoded strictly.
type rendered struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	configMap      *corev1.ConfigMap
	serviceAccount *corev1.ServiceAccount
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *serviceMonitor
	prometheusRule *prometheusRule
	kinds          []string
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// chart renders; decoding strictly into it rejects a misspelt field.
type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		JobLabel          string `json:"jobLabel"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// prometheusRule is monitoring.coreos.com/v1 PrometheusRule; its spec is a
// Prometheus rule file.
type prometheusRule struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            ruleFile          `json:"spec"`
}

// ruleFile is a Prometheus rule file (deploy/prometheus/alerts.yaml).
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// helmTemplate renders the chart with args and returns stdout, stderr and
// whether helm succeeded.
func helmTemplate(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	helm := tool(t, "HELM", "helm")
	cmd := exec.Command(helm, append([]string{"template", "affix-rotator", repoPath(chartDir),
		"--namespace", "rotation", "--kube-version", kubeVersion}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// render runs helm template and decodes every document strictly into its
// Kubernetes type.
func render(t *testing.T, args ...string) *rendered {
	t.Helper()
	out, stderr, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr)
	}
	r := &rendered{}
	for _, doc := range docSep.Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		var target any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			r.deployment = &appsv1.Deployment{}
			target = r.deployment
		case "v1 Service":
			r.service = &corev1.Service{}
			target = r.service
		case "v1 ConfigMap":
			r.configMap = &corev1.ConfigMap{}
			target = r.configMap
		case "v1 ServiceAccount":
			r.serviceAccount = &corev1.ServiceAccount{}
			target = r.serviceAccount
		case "policy/v1 PodDisruptionBudget":
			r.pdb = &policyv1.PodDisruptionBudget{}
			target = r.pdb
		case "monitoring.coreos.com/v1 ServiceMonitor":
			r.serviceMonitor = &serviceMonitor{}
			target = r.serviceMonitor
		case "monitoring.coreos.com/v1 PrometheusRule":
			r.prometheusRule = &prometheusRule{}
			target = r.prometheusRule
		default:
			t.Fatalf("unexpected kind %s %s in the chart's output:\n%s", tm.APIVersion, tm.Kind, doc)
		}
		if slices.Contains(r.kinds, tm.Kind) {
			t.Fatalf("two %s documents", tm.Kind)
		}
		r.kinds = append(r.kinds, tm.Kind)
		if err := decodeStrict([]byte(doc), target); err != nil {
			t.Errorf("%s does not decode strictly into %T: %v", tm.Kind, target, err)
		}
	}
	sort.Strings(r.kinds)
	return r
}

// decodeStrict decodes a YAML manifest the way the API server does:
// case-sensitive field names, and unknown or duplicate fields are errors.
// (encoding/json, and so sigs.k8s.io/yaml.UnmarshalStrict, matches field
// names case-insensitively: readOnlyRootFileSystem would pass.)
func decodeStrict(doc []byte, target any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, target, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestChart(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		replicas  int32
		kinds     []string
		configDir string // where the config names secret files; "" for none
		check     func(t *testing.T, r *rendered, c *container)
	}{
		{
			name:     "default values",
			replicas: 1,
			kinds:    []string{"ConfigMap", "Deployment", "Service", "ServiceAccount"},
			check: func(t *testing.T, r *rendered, c *container) {
				c.wantSecretEnv(t, "AFFIX_API_KEY", "affix-api-key", "api-key")
			},
		},
		{
			name:     "values-ha.yaml",
			args:     []string{"-f", repoPath(chartDir, "values-ha.yaml")},
			replicas: 2,
			kinds:    []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"},
		},
		{
			name:     "token auth",
			args:     []string{"-f", "testdata/values-token.yaml"},
			replicas: 1,
			kinds:    []string{"ConfigMap", "Deployment", "Service", "ServiceAccount"},
			check: func(t *testing.T, r *rendered, c *container) {
				c.wantSecretEnv(t, "VAULT_TOKEN", "vault-token", "token")
				if pod := r.deployment.Spec.Template.Spec; pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
					t.Error("automountServiceAccountToken: want false with serviceAccount.automountToken=false")
				}
			},
		},
		{
			name:     "approle, secret files, second client, other port",
			args:     []string{"-f", "testdata/values-approle.yaml"},
			replicas: 3,
			kinds:    []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"},
			check: func(t *testing.T, r *rendered, c *container) {
				c.wantSecretEnv(t, "AFFIX_STAGING_API_KEY", "affix-staging-api-key", "api-key")
				if c.env("AFFIX_API_KEY") != nil {
					t.Error("AFFIX_API_KEY is set although config.affix.api_key_file is used")
				}
				if p := c.Ports[0].ContainerPort; p != 8080 {
					t.Errorf("containerPort %d, want 8080 (config.listen)", p)
				}
				if !strings.Contains(r.configMap.Data["config.yaml"], "webhook_uri: null") {
					t.Error("configYaml is not rendered verbatim: webhook_uri: null is lost")
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.args...)
			if !reflect.DeepEqual(r.kinds, tc.kinds) {
				t.Fatalf("kinds %v, want %v", r.kinds, tc.kinds)
			}
			c := checkDeployment(t, r, tc.replicas)
			if c == nil {
				return
			}
			cfg := checkConfig(t, r, c)
			checkSecretsWiring(t, r, c, cfg)
			checkService(t, r)
			checkPDB(t, r, tc.replicas)
			checkMonitoring(t, r)
			if tc.check != nil {
				tc.check(t, r, c)
			}
		})
	}
}

// TestChartRefuses checks the chart's own guards: each rendering must fail
// with a message naming the value to fix.
func TestChartRefuses(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"a fixed instance_id", []string{"--set", "config.instance_id=pod-a"}, "config.instance_id must stay empty"},
		{"token auth without a token Secret", []string{"--set", "config.vault.auth.method=token", "--set", "config.vault.auth.kubernetes=null"}, "set secrets.vaultToken.secretName"},
		{"no API key Secret", []string{"--set", "secrets.affixApiKey.secretName="}, "secrets.affixApiKey.secretName is required"},
		{"a listen address without a port", []string{"--set", "config.listen=localhost"}, "has no numeric port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := helmTemplate(t, tc.args...)
			if err == nil {
				t.Fatalf("helm template %v succeeded; want it to fail with %q", tc.args, tc.want)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("helm template %v failed with\n%s\nwant a message containing %q", tc.args, stderr, tc.want)
			}
		})
	}
}

// TestChartConfigChecksum checks that a config change changes the pods'
// checksum annotation, so that the pods roll.
func TestChartConfigChecksum(t *testing.T) {
	a := render(t).deployment.Spec.Template.Annotations["checksum/config"]
	b := render(t, "--set", "config.log.level=debug").deployment.Spec.Template.Annotations["checksum/config"]
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a) {
		t.Fatalf("checksum/config annotation %q is not a sha256", a)
	}
	if a == b {
		t.Fatal("checksum/config does not change with the config")
	}
}

type container struct{ corev1.Container }

func (c *container) env(name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func (c *container) wantSecretEnv(t *testing.T, name, secret, key string) {
	t.Helper()
	e := c.env(name)
	if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("env %s: want it from Secret %s key %s; got %+v", name, secret, key, e)
		return
	}
	if ref := e.ValueFrom.SecretKeyRef; ref.Name != secret || ref.Key != key {
		t.Errorf("env %s: from Secret %s key %s, want %s key %s", name, ref.Name, ref.Key, secret, key)
	}
}

// checkDeployment checks replicas, pod identity, security contexts, probes,
// resources and the config mount, and returns the container.
func checkDeployment(t *testing.T, r *rendered, replicas int32) *container {
	t.Helper()
	d := r.deployment
	if d == nil {
		t.Fatal("no Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		t.Errorf("replicas %v, want %d", d.Spec.Replicas, replicas)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := &container{pod.Containers[0]}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("Deployment selector %v: %v", d.Spec.Selector, err)
	}
	if !selectorMatches(d.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("Deployment selector %v does not match the pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	if pod.Hostname != "" || pod.Subdomain != "" {
		t.Error("pod hostname is set: the lease identity (the hostname) must be the pod name")
	}
	if e := c.env("POD_NAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("env POD_NAME: want it from the downward API (metadata.name), got %+v", e)
	}
	if r.serviceAccount != nil && pod.ServiceAccountName != r.serviceAccount.Name {
		t.Errorf("serviceAccountName %q, want the chart's ServiceAccount %q", pod.ServiceAccountName, r.serviceAccount.Name)
	}

	// Security: non-root 65532, no privilege escalation, no capability,
	// read-only root filesystem, RuntimeDefault seccomp.
	psc := pod.SecurityContext
	if psc == nil || !isTrue(psc.RunAsNonRoot) || !is(psc.RunAsUser, nonroot) || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, runAsUser %d, seccompProfile RuntimeDefault", psc, nonroot)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Error("container has no securityContext")
	default:
		if !isTrue(sc.RunAsNonRoot) || !is(sc.RunAsUser, nonroot) {
			t.Errorf("container securityContext: want runAsNonRoot and runAsUser %d", nonroot)
		}
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			t.Error("container securityContext: want readOnlyRootFilesystem: true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("container securityContext: want allowPrivilegeEscalation: false")
		}
		if isTrue(sc.Privileged) {
			t.Error("container securityContext: privileged")
		}
		if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container capabilities %+v: want drop [ALL] and no add", sc.Capabilities)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Error("container securityContext: want seccompProfile RuntimeDefault")
		}
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("pod shares a host namespace")
	}

	// Probes on the named port that config.listen gives.
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" {
		t.Fatalf("ports %+v: want one, named http", c.Ports)
	}
	checkProbe(t, "liveness", c.LivenessProbe, "/healthz")
	checkProbe(t, "readiness", c.ReadinessProbe, "/readyz")

	// Resources: requests and limits of cpu and memory.
	for _, rl := range []struct {
		what string
		l    corev1.ResourceList
	}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := rl.l[res]; !ok || q.IsZero() {
				t.Errorf("resources.%s.%s is not set", rl.what, res)
			}
		}
	}

	// Image: pinned, not latest.
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("image %q: want a pinned tag or digest", c.Image)
	}

	// Config: the ConfigMap mounted at /etc/affix-rotator, named by -config.
	if !reflect.DeepEqual(c.Args, []string{"run", "--config", "/etc/affix-rotator/config.yaml"}) {
		t.Errorf("args %v, want [-config /etc/affix-rotator/config.yaml]", c.Args)
	}
	vol := volumeAt(pod, c, "/etc/affix-rotator")
	if vol == nil || vol.ConfigMap == nil || r.configMap == nil || vol.ConfigMap.Name != r.configMap.Name {
		t.Errorf("/etc/affix-rotator: want the chart's ConfigMap mounted there, got %+v", vol)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(d.Spec.Template.Annotations["checksum/config"]) {
		t.Error("pod template has no checksum/config annotation")
	}

	// No secret value in the manifest: secret-looking variables come from Secrets.
	secretish := regexp.MustCompile(`(?i)key|token|secret|password`)
	for _, e := range c.Env {
		if e.Value != "" && secretish.MatchString(e.Name) {
			t.Errorf("env %s has a literal value: secrets must come from a Secret", e.Name)
		}
	}
	return c
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: want an httpGet on %s", what, path)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "http" {
		t.Errorf("%s probe: GET %s on port %s, want %s on port http", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
	if p.TimeoutSeconds < 1 || p.PeriodSeconds < 1 || p.FailureThreshold < 1 {
		t.Errorf("%s probe: timeouts and thresholds must be set: %+v", what, p)
	}
}

// checkConfig parses the rendered config.yaml with the daemon's own config
// package (unknown keys are errors there) and checks its port.
func checkConfig(t *testing.T, r *rendered, c *container) *config.Config {
	t.Helper()
	if r.configMap == nil {
		t.Fatal("no ConfigMap")
	}
	text, ok := r.configMap.Data["config.yaml"]
	if !ok || len(r.configMap.Data) != 1 {
		t.Fatalf("ConfigMap data keys %v, want only config.yaml", keys(r.configMap.Data))
	}
	if strings.Contains(text, "instance_id") {
		t.Error("the rendered config sets instance_id: each pod must use its own name")
	}
	cfg, err := config.Parse([]byte(text), "ConfigMap "+r.configMap.Name+" config.yaml")
	if err != nil {
		t.Fatalf("the daemon's config package rejects the rendered config:\n%v\n---\n%s", err, text)
	}
	// The built binary too, when deploy/check.sh provides it.
	if bin := os.Getenv("AFFIX_ROTATOR_BIN"); bin != "" {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "validate", "--offline", "--config", path).CombinedOutput()
		if err != nil {
			t.Fatalf("affix-rotator validate rejects the rendered config: %v\n%s", err, out)
		}
	}
	_, port, _ := strings.Cut(cfg.Listen, ":")
	for strings.Contains(port, ":") { // [::]:9464
		_, port, _ = strings.Cut(port, ":")
	}
	if want := strconv.Itoa(int(c.Ports[0].ContainerPort)); port != want {
		t.Errorf("config listen %q, but containerPort %s", cfg.Listen, want)
	}
	return cfg
}

// checkSecretsWiring checks that every environment variable and file the
// config names for a credential exists in the pod: variables from Secrets,
// files under a mounted Secret (or the ServiceAccount token).
func checkSecretsWiring(t *testing.T, r *rendered, c *container, cfg *config.Config) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	wantEnv := func(key, name string) {
		if name == "" {
			return
		}
		e := c.env(name)
		if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("config %s names env %s, but the container does not get it from a Secret", key, name)
		}
	}
	wantFile := func(key, path string) {
		if path == "" {
			return
		}
		if strings.HasPrefix(path, saTokenDir) {
			if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
				t.Errorf("config %s is the ServiceAccount token %s, but the pod does not mount it", key, path)
			}
			return
		}
		dir, file := path[:strings.LastIndex(path, "/")], path[strings.LastIndex(path, "/")+1:]
		vol := volumeAt(pod, c, dir)
		if vol == nil || vol.Secret == nil {
			t.Errorf("config %s is %s, but no Secret is mounted at %s", key, path, dir)
			return
		}
		if len(vol.Secret.Items) > 0 && !slices.ContainsFunc(vol.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == file }) {
			t.Errorf("config %s is %s, but Secret %s mounted there does not project key %s", key, path, vol.Secret.SecretName, file)
		}
		if m := vol.Secret.DefaultMode; m == nil || *m&0o007 != 0 {
			t.Errorf("Secret %s is mounted world-readable (defaultMode %v)", vol.Secret.SecretName, m)
		}
	}
	a := cfg.Vault.Auth
	switch a.Method {
	case "token":
		wantEnv("vault.auth.token_env", a.TokenEnv)
		wantFile("vault.auth.token_file", a.TokenFile)
	case "approle":
		wantFile("vault.auth.approle.role_id_file", a.AppRole.RoleIDFile)
		wantFile("vault.auth.approle.secret_id_file", a.AppRole.SecretIDFile)
		wantEnv("vault.auth.approle.secret_id_env", a.AppRole.SecretIDEnv)
	case "kubernetes":
		wantFile("vault.auth.kubernetes.token_file", a.Kubernetes.TokenFile)
	}
	wantFile("vault.tls.ca_cert", cfg.Vault.TLS.CACert)
	for i, cl := range cfg.Clients {
		af := cfg.AffixFor(cl)
		wantEnv(fmt.Sprintf("clients[%d] affix.api_key_env", i), af.APIKeyEnv)
		wantFile(fmt.Sprintf("clients[%d] affix.api_key_file", i), af.APIKeyFile)
	}
}

func checkService(t *testing.T, r *rendered) {
	t.Helper()
	s := r.service
	if s == nil {
		t.Fatal("no Service")
	}
	if !selectorMatches(&metav1.LabelSelector{MatchLabels: s.Spec.Selector}, r.deployment.Spec.Template.Labels) || len(s.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the pods %v", s.Spec.Selector, r.deployment.Spec.Template.Labels)
	}
	if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != "http" || s.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service ports %+v: want one named http to target port http", s.Spec.Ports)
	}
	if !s.Spec.PublishNotReadyAddresses {
		t.Error("Service: publishNotReadyAddresses must be true, so that a pod without Vault is still scraped")
	}
}

func checkPDB(t *testing.T, r *rendered, replicas int32) {
	t.Helper()
	if replicas > 1 && r.pdb == nil {
		t.Fatal("replicas > 1 but no PodDisruptionBudget")
	}
	if replicas <= 1 && r.pdb != nil {
		t.Fatal("a PodDisruptionBudget with one replica would block node drains")
	}
	if r.pdb == nil {
		return
	}
	if !selectorMatches(r.pdb.Spec.Selector, r.deployment.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods", r.pdb.Spec.Selector)
	}
	if r.pdb.Spec.MaxUnavailable == nil && r.pdb.Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}
}

func checkMonitoring(t *testing.T, r *rendered) {
	t.Helper()
	if sm := r.serviceMonitor; sm != nil {
		if !selectorMatches(&sm.Spec.Selector, r.service.Labels) {
			t.Errorf("ServiceMonitor selector %v does not select the Service (labels %v)", sm.Spec.Selector.MatchLabels, r.service.Labels)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v: want port http, path /metrics", sm.Spec.Endpoints)
		}
		if job := r.service.Labels[sm.Spec.JobLabel]; !strings.Contains(job, "affix-rotator") {
			t.Errorf("ServiceMonitor job label %q (from %s) does not match the alerts' up{job=~\".*affix-rotator.*\"}", job, sm.Spec.JobLabel)
		}
	}
	if pr := r.prometheusRule; pr != nil {
		var want ruleFile
		if err := decodeStrict(readRepoFile(t, "deploy", "prometheus", "alerts.yaml"), &want); err != nil {
			t.Fatalf("deploy/prometheus/alerts.yaml: %v", err)
		}
		if !reflect.DeepEqual(pr.Spec, want) {
			t.Error("the PrometheusRule's groups differ from deploy/prometheus/alerts.yaml")
		}
		if len(want.Groups) == 0 {
			t.Error("the PrometheusRule has no group")
		}
	}
}

func volumeAt(pod corev1.PodSpec, c *container, dir string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") == strings.TrimSuffix(dir, "/") {
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == m.Name {
					return &pod.Volumes[i]
				}
			}
		}
	}
	return nil
}

func selectorMatches(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return false
	}
	return s.Matches(k8slabels.Set(labels))
}

func isTrue(b *bool) bool { return b != nil && *b }

func is(p *int64, v int64) bool { return p != nil && *p == v }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestChartAlertThresholds checks that prometheusRule.thresholds and
// .severities reach the rules, and change nothing else: the rendered rules
// are alerts.yaml with exactly those substitutions.
func TestChartAlertThresholds(t *testing.T) {
	r := render(t, "--set", "prometheusRule.enabled=true",
		"--set", "prometheusRule.thresholds.lastSuccessFactor=1.5",
		"--set", "prometheusRule.thresholds.stepFailingFor=45m",
		"--set", "prometheusRule.thresholds.stuckStagedFor=1h",
		"--set", "prometheusRule.thresholds.overlapPastGraceSeconds=600",
		"--set", "prometheusRule.severities.AffixRotatorRotationFailing=critical")
	if r.prometheusRule == nil {
		t.Fatal("no PrometheusRule with prometheusRule.enabled=true")
	}
	want := loadAlerts(t)
	for gi := range want.Groups {
		for ri := range want.Groups[gi].Rules {
			w := &want.Groups[gi].Rules[ri]
			switch w.Alert {
			case "AffixRotatorLastSuccessTooOld":
				w.Expr = strings.ReplaceAll(w.Expr, "> 1.2 * max by", "> 1.5 * max by")
				w.Annotations["description"] = strings.ReplaceAll(w.Annotations["description"], "more than 1.2 times", "more than 1.5 times")
			case "AffixRotatorStepFailing":
				w.For = "45m"
				w.Annotations["description"] = strings.ReplaceAll(w.Annotations["description"], "for more than 30 minutes", "for more than 45m")
			case "AffixRotatorStuckStaged":
				w.For = "1h"
				w.Annotations["description"] = strings.ReplaceAll(w.Annotations["description"], "for more than 30 minutes", "for more than 1h")
			case "AffixRotatorOverlapPastGrace":
				w.Expr = strings.ReplaceAll(w.Expr, ") > 1800\n", ") > 600\n")
			case "AffixRotatorRotationFailing":
				w.Labels["severity"] = "critical"
			}
		}
	}
	got := r.prometheusRule.Spec
	if !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Fatalf("rendered rules differ from alerts.yaml with the thresholds substituted:\ngot:\n%s\nwant:\n%s", gy, wy)
	}
	// Each substitution took place (a default not found would leave the
	// rules unchanged and the comparison above would still catch it, but
	// say which).
	for _, g := range got.Groups {
		for _, rl := range g.Rules {
			if rl.Alert == "AffixRotatorLastSuccessTooOld" && strings.Count(rl.Expr, "1.5 * max by") != 2 {
				t.Errorf("AffixRotatorLastSuccessTooOld: factor 1.5 not in both parts of:\n%s", rl.Expr)
			}
		}
	}
	_, stderr, err := helmTemplate(t, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.thresholds.lastSuccessFactor=1")
	if err == nil || !strings.Contains(stderr, "lastSuccessFactor must be above 1") {
		t.Errorf("lastSuccessFactor=1: err %v, stderr %s; want a refusal", err, stderr)
	}
}
