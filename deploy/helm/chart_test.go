// Package helm tests the Helm chart in irisx-broker/ by rendering it with
// the real helm (pinned, through the module proxy) and checking what a
// platform team relies on.
package helm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const helmPkg = "helm.sh/helm/v3/cmd/helm@v3.22.0"

func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"run", helmPkg}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// object is one rendered manifest.
type object map[string]any

func (o object) get(path ...string) any {
	var v any = map[string]any(o)
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func render(t *testing.T, set ...string) (string, map[string]object) {
	t.Helper()
	args := []string{"template", "rel", "irisx-broker"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out := helm(t, args...)
	objs := map[string]object{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		// Into a plain map: yaml.v3 gives nested mappings the type of the
		// outer one, and get expects map[string]any throughout.
		var m map[string]any
		err := dec.Decode(&m)
		o := object(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template output is not YAML: %v", err)
		}
		if o == nil {
			continue
		}
		objs[fmt.Sprintf("%v/%v", o["kind"], o.get("metadata", "name"))] = o
	}
	return out, objs
}

func container(t *testing.T, o object) map[string]any {
	t.Helper()
	cs, _ := o.get("spec", "template", "spec", "containers").([]any)
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	return cs[0].(map[string]any)
}

func envOf(c map[string]any) map[string]any {
	env := map[string]any{}
	for _, e := range c["env"].([]any) {
		m := e.(map[string]any)
		env[m["name"].(string)] = m
	}
	return env
}

func TestChartDefaults(t *testing.T) {
	t.Parallel()
	out, objs := render(t)
	golden := filepath.Join("testdata", "default.yaml")
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 writes it)", err)
	}
	if string(want) != out {
		t.Errorf("helm template differs from %s (UPDATE_GOLDEN=1 go test ./deploy/helm/ updates it after a deliberate change)", golden)
	}

	dep, ok := objs["Deployment/rel-irisx-broker"]
	if !ok {
		t.Fatalf("no Deployment; rendered %v", keys(objs))
	}
	if r := dep.get("spec", "replicas"); r != 2 {
		t.Errorf("replicas = %v, want 2", r)
	}
	pod := object(dep.get("spec", "template", "spec").(map[string]any))
	if u := pod.get("securityContext", "runAsUser"); u != 65532 {
		t.Errorf("pod runAsUser = %v, want 65532 (numeric, non-root)", u)
	}
	if nr := pod.get("securityContext", "runAsNonRoot"); nr != true {
		t.Errorf("pod runAsNonRoot = %v", nr)
	}
	c := container(t, dep)
	sc := object(c["securityContext"].(map[string]any))
	if sc.get("readOnlyRootFilesystem") != true || sc.get("allowPrivilegeEscalation") != false ||
		fmt.Sprint(sc.get("capabilities", "drop")) != "[ALL]" || sc.get("runAsUser") != 65532 {
		t.Errorf("container securityContext = %v", sc)
	}
	if c["resources"] == nil || object(c["resources"].(map[string]any)).get("requests", "memory") == nil {
		t.Errorf("no resource requests: %v", c["resources"])
	}
	if got := fmt.Sprint(c["args"]); got != "[serve --migrate=false]" {
		t.Errorf("args = %s, want [serve --migrate=false] (the migration Job migrates)", got)
	}
	if p := object(c["livenessProbe"].(map[string]any)).get("httpGet", "path"); p != "/healthz" {
		t.Errorf("liveness path = %v, want /healthz", p)
	}
	if p := object(c["readinessProbe"].(map[string]any)).get("httpGet", "path"); p != "/readyz" {
		t.Errorf("readiness path = %v, want /readyz", p)
	}
	var drain int
	cm := objs["ConfigMap/rel-irisx-broker"]
	if _, err := fmt.Sscanf(fmt.Sprint(cm.get("data", "SHUTDOWN_DRAIN")), "%ds", &drain); err != nil {
		t.Fatalf("SHUTDOWN_DRAIN = %v", cm.get("data", "SHUTDOWN_DRAIN"))
	}
	if g, _ := pod.get("terminationGracePeriodSeconds").(int); g <= drain+30 {
		t.Errorf("terminationGracePeriodSeconds = %v, want > SHUTDOWN_DRAIN (%d) + 30", pod.get("terminationGracePeriodSeconds"), drain)
	}
	// Secrets: files from the existing Secret, NAME_FILE variables, no value inline.
	env := envOf(c)
	for _, name := range []string{"DATABASE_URL", "ENCRYPTION_KEYS", "INTERNAL_API_TOKENS", "ADMIN_API_TOKENS"} {
		e, ok := env[name+"_FILE"].(map[string]any)
		if !ok || !strings.HasPrefix(fmt.Sprint(e["value"]), "/etc/irisx-broker/secrets/") {
			t.Errorf("%s_FILE = %v, want a path under the secrets mount", name, env[name+"_FILE"])
		}
		if _, inline := env[name]; inline {
			t.Errorf("%s is set inline", name)
		}
	}
	if _, ok := env["DATABASE_DIRECT_URL_FILE"]; ok {
		t.Error("DATABASE_DIRECT_URL_FILE set without databaseDirectURL.enabled")
	}
	// The soft memory limit sits below the container's, with room for what
	// the Go runtime does not count.
	limit := fmt.Sprint(object(c["resources"].(map[string]any)).get("limits", "memory"))
	if e, _ := env["GOMEMLIMIT"].(map[string]any); fmt.Sprint(e["value"]) != "230MiB" || limit != "256Mi" {
		t.Errorf("GOMEMLIMIT = %v with a %s memory limit, want 230MiB (90%% of 256Mi)", env["GOMEMLIMIT"], limit)
	}
	vols := fmt.Sprint(pod.get("volumes"))
	if !strings.Contains(vols, "secretName:irisx-broker") {
		t.Errorf("volumes %s do not mount the existing Secret irisx-broker", vols)
	}
	for _, name := range []string{"Service/rel-irisx-broker-public", "Service/rel-irisx-broker-internal", "PodDisruptionBudget/rel-irisx-broker"} {
		if _, ok := objs[name]; !ok {
			t.Errorf("no %s; rendered %v", name, keys(objs))
		}
	}
	job, ok := objs["Job/rel-irisx-broker-migrate"]
	if !ok {
		t.Fatalf("no migration Job; rendered %v", keys(objs))
	}
	if h := job.get("metadata", "annotations", "helm.sh/hook"); h != "pre-install,pre-upgrade" {
		t.Errorf("migration Job hook = %v", h)
	}
	if got := fmt.Sprint(container(t, job)["args"]); got != "[migrate up]" {
		t.Errorf("migration Job args = %s", got)
	}
	if object(container(t, job)["securityContext"].(map[string]any)).get("readOnlyRootFilesystem") != true {
		t.Error("the migration Job's container is not locked down")
	}
	for _, name := range []string{"HorizontalPodAutoscaler/rel-irisx-broker", "ServiceMonitor/rel-irisx-broker"} {
		if _, ok := objs[name]; ok {
			t.Errorf("%s rendered though not enabled", name)
		}
	}
}

func TestChartOptions(t *testing.T) {
	t.Parallel()
	_, objs := render(t, "autoscaling.enabled=true", "serviceMonitor.enabled=true",
		"databaseDirectURL.enabled=true", "probes.grpc=true", "shutdownDrainSeconds=20", "goMemLimit=")
	dep := objs["Deployment/rel-irisx-broker"]
	if _, ok := objs["HorizontalPodAutoscaler/rel-irisx-broker"]; !ok {
		t.Error("no HPA with autoscaling.enabled")
	}
	if r := dep.get("spec", "replicas"); r != nil {
		t.Errorf("replicas = %v with an HPA, want unset", r)
	}
	sm, ok := objs["ServiceMonitor/rel-irisx-broker"]
	if !ok || !strings.Contains(fmt.Sprint(sm.get("spec", "endpoints")), "path:/metrics") {
		t.Errorf("ServiceMonitor = %v", sm)
	}
	c := container(t, dep)
	if _, ok := envOf(c)["DATABASE_DIRECT_URL_FILE"]; !ok {
		t.Error("no DATABASE_DIRECT_URL_FILE with databaseDirectURL.enabled")
	}
	if e, ok := envOf(c)["GOMEMLIMIT"]; ok {
		t.Errorf("GOMEMLIMIT = %v with goMemLimit empty, want unset", e)
	}
	job := objs["Job/rel-irisx-broker-migrate"]
	if _, ok := envOf(container(t, job))["DATABASE_DIRECT_URL"]; !ok {
		t.Error("the migration Job does not get DATABASE_DIRECT_URL")
	}
	if p := object(c["readinessProbe"].(map[string]any)).get("grpc", "port"); p != 8081 {
		t.Errorf("gRPC readiness probe port = %v, want 8081", p)
	}
	pod := object(dep.get("spec", "template", "spec").(map[string]any))
	if g, _ := pod.get("terminationGracePeriodSeconds").(int); g <= 50 {
		t.Errorf("terminationGracePeriodSeconds = %d with SHUTDOWN_DRAIN 20s, want > 50", g)
	}
}

func TestChartLintStrict(t *testing.T) {
	t.Parallel()
	out := helm(t, "lint", "--strict", "irisx-broker")
	if !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint --strict:\n%s", out)
	}
}

func keys(m map[string]object) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
