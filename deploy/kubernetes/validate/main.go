// Command validate checks Kubernetes manifests offline, without a cluster
// and without downloading JSON schemas: every document is decoded strictly
// into the typed Go structs of k8s.io/api (an unknown or duplicated field is
// an error, a malformed quantity or port is an error), then checked against
// the API server's own rules that matter for these manifests (names,
// selectors, volumes and their mounts, probes, resources, the security
// context combinations the API server rejects) and across documents (a
// ConfigMap a volume names must be in the set, with the keys it names).
//
// It lives in its own module so that the agent's go.mod does not carry the
// Kubernetes API types; `go run .` fetches them from the Go module proxy.
//
//	go run . FILE...                      validate; exit 1 on any error
//	go run . -print-config NS/NAME/KEY FILE...
//	                                      validate, then print that ConfigMap value
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

func main() {
	printConfig := flag.String("print-config", "", "after validating, print the value of ConfigMap key NAMESPACE/NAME/KEY")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: validate [-print-config NS/NAME/KEY] FILE...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	set := &objects{}
	var errs []string
	for _, name := range flag.Args() {
		errs = append(errs, set.load(name)...)
	}
	errs = append(errs, set.validate()...)
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, e)
	}
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "%d error(s)\n", len(errs))
		os.Exit(1)
	}
	if *printConfig != "" {
		v, err := set.configValue(*printConfig)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(v)
		return
	}
	fmt.Printf("ok: %d objects valid (%s)\n", len(set.all), set.summary())
}

type object struct {
	where string // file#document, for messages
	kind  string
	meta  *metav1.ObjectMeta
	obj   any
}

type objects struct {
	all []object
}

// kinds maps apiVersion/kind to a constructor of the typed object. Anything
// else is an error: a typo in apiVersion would otherwise pass unchecked.
var kinds = map[string]func() (any, *metav1.ObjectMeta){
	"v1/Namespace": func() (any, *metav1.ObjectMeta) {
		o := &corev1.Namespace{}
		return o, &o.ObjectMeta
	},
	"v1/ConfigMap": func() (any, *metav1.ObjectMeta) {
		o := &corev1.ConfigMap{}
		return o, &o.ObjectMeta
	},
	"v1/ServiceAccount": func() (any, *metav1.ObjectMeta) {
		o := &corev1.ServiceAccount{}
		return o, &o.ObjectMeta
	},
	"v1/Service": func() (any, *metav1.ObjectMeta) {
		o := &corev1.Service{}
		return o, &o.ObjectMeta
	},
	"apps/v1/DaemonSet": func() (any, *metav1.ObjectMeta) {
		o := &appsv1.DaemonSet{}
		return o, &o.ObjectMeta
	},
}

func (s *objects) load(name string) []string {
	f, err := os.Open(name)
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var errs []string
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("%s#%d", name, i)
		if err != nil {
			return append(errs, fmt.Sprintf("%s: %v", where, err))
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		key := tm.APIVersion + "/" + tm.Kind
		mk, ok := kinds[key]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: unsupported apiVersion/kind %q", where, key))
			continue
		}
		obj, meta := mk()
		if err := decodeStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %s: %v", where, tm.Kind, err))
			continue
		}
		s.all = append(s.all, object{where: where, kind: tm.Kind, meta: meta, obj: obj})
	}
	return errs
}

// decodeStrict decodes the way the API server does with strict field
// validation: field names match case-sensitively (encoding/json would take
// "hostPid" for hostPID), and unknown or duplicated fields are errors.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l...)
			out = append(out, '\n')
		}
	}
	return out
}

func (s *objects) summary() string {
	var parts []string
	for _, o := range s.all {
		parts = append(parts, o.kind+"/"+o.meta.Name)
	}
	return strings.Join(parts, ", ")
}

func (s *objects) find(kind, ns, name string) *object {
	for i := range s.all {
		o := &s.all[i]
		if o.kind == kind && o.meta.Name == name && (kind == "Namespace" || o.meta.Namespace == ns) {
			return o
		}
	}
	return nil
}

func (s *objects) configValue(ref string) (string, error) {
	p := strings.SplitN(ref, "/", 3)
	if len(p) != 3 {
		return "", fmt.Errorf("-print-config wants NAMESPACE/NAME/KEY, got %q", ref)
	}
	o := s.find("ConfigMap", p[0], p[1])
	if o == nil {
		return "", fmt.Errorf("no ConfigMap %s/%s", p[0], p[1])
	}
	v, ok := o.obj.(*corev1.ConfigMap).Data[p[2]]
	if !ok {
		return "", fmt.Errorf("ConfigMap %s/%s has no key %q", p[0], p[1], p[2])
	}
	return v, nil
}

func (s *objects) validate() []string {
	var errs []string
	seen := map[string]string{}
	for _, o := range s.all {
		var el field.ErrorList
		namespaced := o.kind != "Namespace"
		el = append(el, validateMeta(o.meta, namespaced, field.NewPath("metadata"))...)
		id := o.kind + "/" + o.meta.Namespace + "/" + o.meta.Name
		if prev, dup := seen[id]; dup {
			el = append(el, field.Duplicate(field.NewPath("metadata", "name"), o.meta.Name+" (also at "+prev+")"))
		}
		seen[id] = o.where
		if namespaced && o.meta.Namespace != "" && s.hasNamespaces() && s.find("Namespace", "", o.meta.Namespace) == nil {
			el = append(el, field.NotFound(field.NewPath("metadata", "namespace"), o.meta.Namespace))
		}
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			for k := range v.Data {
				for _, msg := range validation.IsConfigMapKey(k) {
					el = append(el, field.Invalid(field.NewPath("data").Key(k), k, msg))
				}
			}
		case *appsv1.DaemonSet:
			el = append(el, s.validateDaemonSet(v)...)
		}
		for _, e := range el {
			errs = append(errs, fmt.Sprintf("%s: %s %s: %v", o.where, o.kind, o.meta.Name, e))
		}
	}
	return errs
}

func (s *objects) hasNamespaces() bool {
	for _, o := range s.all {
		if o.kind == "Namespace" {
			return true
		}
	}
	return false
}

func validateMeta(m *metav1.ObjectMeta, namespaced bool, p *field.Path) field.ErrorList {
	var el field.ErrorList
	if m.Name == "" {
		el = append(el, field.Required(p.Child("name"), ""))
	}
	for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
		el = append(el, field.Invalid(p.Child("name"), m.Name, msg))
	}
	if namespaced {
		if m.Namespace == "" {
			// Not an API error, but a DaemonSet applied without one lands
			// wherever the kubectl context points.
			el = append(el, field.Required(p.Child("namespace"), "set it explicitly"))
		}
		for _, msg := range validation.IsDNS1123Label(m.Namespace) {
			el = append(el, field.Invalid(p.Child("namespace"), m.Namespace, msg))
		}
	} else if m.Namespace != "" {
		el = append(el, field.Forbidden(p.Child("namespace"), "not allowed on cluster-scoped objects"))
	}
	el = append(el, validateLabels(m.Labels, p.Child("labels"))...)
	for k := range m.Annotations {
		for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
			el = append(el, field.Invalid(p.Child("annotations").Key(k), k, msg))
		}
	}
	return el
}

func validateLabels(labels map[string]string, p *field.Path) field.ErrorList {
	var el field.ErrorList
	for k, v := range labels {
		for _, msg := range validation.IsQualifiedName(k) {
			el = append(el, field.Invalid(p.Key(k), k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			el = append(el, field.Invalid(p.Key(k), v, msg))
		}
	}
	return el
}

func (s *objects) validateDaemonSet(ds *appsv1.DaemonSet) field.ErrorList {
	var el field.ErrorList
	sp := field.NewPath("spec")
	sel := ds.Spec.Selector
	tmplLabels := ds.Spec.Template.Labels
	switch {
	case sel == nil:
		el = append(el, field.Required(sp.Child("selector"), ""))
	case len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0:
		el = append(el, field.Invalid(sp.Child("selector"), sel, "empty selector matches every pod"))
	default:
		el = append(el, validateLabels(sel.MatchLabels, sp.Child("selector", "matchLabels"))...)
		if len(sel.MatchExpressions) > 0 {
			el = append(el, field.Forbidden(sp.Child("selector", "matchExpressions"), "this checker only understands matchLabels"))
		}
		for k, v := range sel.MatchLabels {
			if tmplLabels[k] != v {
				el = append(el, field.Invalid(sp.Child("template", "metadata", "labels"), tmplLabels, "`selector` does not match template `labels`"))
				break
			}
		}
	}
	el = append(el, validateLabels(tmplLabels, sp.Child("template", "metadata", "labels"))...)
	switch u := ds.Spec.UpdateStrategy; u.Type {
	case "", appsv1.OnDeleteDaemonSetStrategyType:
	case appsv1.RollingUpdateDaemonSetStrategyType:
		if r := u.RollingUpdate; r != nil && r.MaxUnavailable != nil && r.MaxUnavailable.IntValue() == 0 && r.MaxUnavailable.StrVal == "" &&
			(r.MaxSurge == nil || r.MaxSurge.IntValue() == 0) {
			el = append(el, field.Invalid(sp.Child("updateStrategy", "rollingUpdate", "maxUnavailable"), 0, "may not be 0 when maxSurge is 0"))
		}
	default:
		el = append(el, field.NotSupported(sp.Child("updateStrategy", "type"), u.Type, []string{"RollingUpdate", "OnDelete"}))
	}
	ps := &ds.Spec.Template.Spec
	pp := sp.Child("template", "spec")
	if ps.RestartPolicy != "" && ps.RestartPolicy != corev1.RestartPolicyAlways {
		el = append(el, field.NotSupported(pp.Child("restartPolicy"), ps.RestartPolicy, []string{"Always"}))
	}
	if ps.ServiceAccountName != "" && ps.ServiceAccountName != "default" &&
		s.find("ServiceAccount", ds.Namespace, ps.ServiceAccountName) == nil {
		el = append(el, field.NotFound(pp.Child("serviceAccountName"), ps.ServiceAccountName))
	}
	if ps.HostNetwork && ps.DNSPolicy != corev1.DNSClusterFirstWithHostNet && ps.DNSPolicy != corev1.DNSDefault {
		el = append(el, field.Invalid(pp.Child("dnsPolicy"), ps.DNSPolicy, "with hostNetwork use ClusterFirstWithHostNet (or Default)"))
	}

	volumes := map[string]*corev1.Volume{}
	for i := range ps.Volumes {
		v := &ps.Volumes[i]
		vp := pp.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			el = append(el, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes[v.Name] != nil {
			el = append(el, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes[v.Name] = v
		el = append(el, s.validateVolume(ds.Namespace, v, vp)...)
	}
	if len(ps.Containers) == 0 {
		el = append(el, field.Required(pp.Child("containers"), ""))
	}
	names := map[string]bool{}
	for i := range ps.InitContainers {
		el = append(el, validateContainer(&ps.InitContainers[i], volumes, names, false, pp.Child("initContainers").Index(i))...)
	}
	for i := range ps.Containers {
		el = append(el, validateContainer(&ps.Containers[i], volumes, names, true, pp.Child("containers").Index(i))...)
	}
	for i, t := range ps.Tolerations {
		if t.Operator == corev1.TolerationOpExists && t.Value != "" {
			el = append(el, field.Invalid(pp.Child("tolerations").Index(i).Child("value"), t.Value, "must be empty when operator is Exists"))
		}
	}
	return el
}

func (s *objects) validateVolume(ns string, v *corev1.Volume, p *field.Path) field.ErrorList {
	var el field.ErrorList
	n := 0
	src := v.VolumeSource
	if src.HostPath != nil {
		n++
		if !strings.HasPrefix(src.HostPath.Path, "/") {
			el = append(el, field.Invalid(p.Child("hostPath", "path"), src.HostPath.Path, "must be absolute"))
		}
		if t := src.HostPath.Type; t != nil {
			switch *t {
			case corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory, corev1.HostPathFileOrCreate,
				corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
			default:
				el = append(el, field.NotSupported[string](p.Child("hostPath", "type"), string(*t), nil))
			}
		}
	}
	if src.ConfigMap != nil {
		n++
		cm := s.find("ConfigMap", ns, src.ConfigMap.Name)
		optional := src.ConfigMap.Optional != nil && *src.ConfigMap.Optional
		if cm == nil && !optional {
			el = append(el, field.NotFound(p.Child("configMap", "name"), src.ConfigMap.Name))
		}
		for j, it := range src.ConfigMap.Items {
			ip := p.Child("configMap", "items").Index(j)
			if cm != nil {
				if _, ok := cm.obj.(*corev1.ConfigMap).Data[it.Key]; !ok {
					el = append(el, field.NotFound(ip.Child("key"), it.Key))
				}
			}
			if it.Path == "" || strings.HasPrefix(it.Path, "/") || strings.Contains(it.Path, "..") {
				el = append(el, field.Invalid(ip.Child("path"), it.Path, "must be a relative path without '..'"))
			}
		}
	}
	if src.EmptyDir != nil {
		n++
	}
	if src.Secret != nil {
		n++
	}
	if src.Projected != nil {
		n++
	}
	if src.DownwardAPI != nil {
		n++
	}
	if n != 1 {
		el = append(el, field.Invalid(p, v.Name, fmt.Sprintf("must set exactly one supported volume source (hostPath, configMap, emptyDir, secret, projected, downwardAPI), has %d", n)))
	}
	return el
}

func validateContainer(c *corev1.Container, volumes map[string]*corev1.Volume, names map[string]bool, main bool, p *field.Path) field.ErrorList {
	var el field.ErrorList
	for _, msg := range validation.IsDNS1123Label(c.Name) {
		el = append(el, field.Invalid(p.Child("name"), c.Name, msg))
	}
	if names[c.Name] {
		el = append(el, field.Duplicate(p.Child("name"), c.Name))
	}
	names[c.Name] = true
	if c.Image == "" {
		el = append(el, field.Required(p.Child("image"), ""))
	} else if i := strings.LastIndex(c.Image, ":"); i < 0 || strings.Contains(c.Image[i:], "/") || strings.HasSuffix(c.Image, ":latest") {
		// A DaemonSet rolls out node by node; a floating tag would mix versions.
		el = append(el, field.Invalid(p.Child("image"), c.Image, "pin a version tag (not :latest)"))
	}

	ports := map[string]int32{}
	for i, cp := range c.Ports {
		pp := p.Child("ports").Index(i)
		for _, msg := range validation.IsValidPortNum(int(cp.ContainerPort)) {
			el = append(el, field.Invalid(pp.Child("containerPort"), cp.ContainerPort, msg))
		}
		if cp.Name != "" {
			for _, msg := range validation.IsValidPortName(cp.Name) {
				el = append(el, field.Invalid(pp.Child("name"), cp.Name, msg))
			}
			if _, dup := ports[cp.Name]; dup {
				el = append(el, field.Duplicate(pp.Child("name"), cp.Name))
			}
			ports[cp.Name] = cp.ContainerPort
		}
		if cp.HostPort != 0 {
			for _, msg := range validation.IsValidPortNum(int(cp.HostPort)) {
				el = append(el, field.Invalid(pp.Child("hostPort"), cp.HostPort, msg))
			}
		}
	}
	for i, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			el = append(el, field.Invalid(p.Child("env").Index(i).Child("name"), e.Name, msg))
		}
	}

	mounts := map[string]bool{}
	for i, m := range c.VolumeMounts {
		mp := p.Child("volumeMounts").Index(i)
		if volumes[m.Name] == nil {
			el = append(el, field.NotFound(mp.Child("name"), m.Name))
		}
		if !strings.HasPrefix(m.MountPath, "/") {
			el = append(el, field.Invalid(mp.Child("mountPath"), m.MountPath, "must be absolute"))
		}
		if mounts[m.MountPath] {
			el = append(el, field.Duplicate(mp.Child("mountPath"), m.MountPath))
		}
		mounts[m.MountPath] = true
		if m.MountPropagation != nil {
			switch *m.MountPropagation {
			case corev1.MountPropagationNone, corev1.MountPropagationHostToContainer:
			case corev1.MountPropagationBidirectional:
				if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
					el = append(el, field.Forbidden(mp.Child("mountPropagation"), "Bidirectional requires a privileged container"))
				}
			default:
				el = append(el, field.NotSupported[string](mp.Child("mountPropagation"), string(*m.MountPropagation), nil))
			}
		}
	}

	el = append(el, validateResources(&c.Resources, main, p.Child("resources"))...)
	el = append(el, validateSecurityContext(c.SecurityContext, p.Child("securityContext"))...)
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
		if pr.probe == nil {
			if main && pr.name == "livenessProbe" {
				el = append(el, field.Required(p.Child(pr.name), "the agent container needs a liveness probe"))
			}
			continue
		}
		el = append(el, validateProbe(pr.probe, ports, pr.name == "livenessProbe" || pr.name == "startupProbe", p.Child(pr.name))...)
	}
	return el
}

func validateResources(r *corev1.ResourceRequirements, main bool, p *field.Path) field.ErrorList {
	var el field.ErrorList
	for name, lim := range r.Limits {
		if req, ok := r.Requests[name]; ok && req.Cmp(lim) > 0 {
			el = append(el, field.Invalid(p.Child("requests").Key(string(name)), req.String(), "must be less than or equal to "+name.String()+" limit of "+lim.String()))
		}
	}
	if !main {
		return el
	}
	// Policy, not API: an agent on every node must not be evicted first or
	// starve the node's workloads.
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := r.Requests[name]; !ok {
			el = append(el, field.Required(p.Child("requests").Key(string(name)), ""))
		}
	}
	if _, ok := r.Limits[corev1.ResourceMemory]; !ok {
		el = append(el, field.Required(p.Child("limits").Key("memory"), ""))
	}
	return el
}

func validateSecurityContext(sc *corev1.SecurityContext, p *field.Path) field.ErrorList {
	var el field.ErrorList
	if sc == nil {
		return el
	}
	privileged := sc.Privileged != nil && *sc.Privileged
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		if privileged {
			el = append(el, field.Invalid(p, sc, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"))
		}
		if sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Add {
				if c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN" {
					el = append(el, field.Invalid(p, sc, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"))
				}
			}
		}
	}
	if sc.Capabilities != nil {
		for i, c := range append(append([]corev1.Capability{}, sc.Capabilities.Add...), sc.Capabilities.Drop...) {
			s := string(c)
			if s != strings.ToUpper(s) || strings.HasPrefix(s, "CAP_") {
				el = append(el, field.Invalid(p.Child("capabilities").Index(i), s, "write capabilities upper case without CAP_ (SYS_ADMIN)"))
			}
		}
	}
	if ap := sc.AppArmorProfile; ap != nil {
		switch ap.Type {
		case corev1.AppArmorProfileTypeRuntimeDefault, corev1.AppArmorProfileTypeUnconfined:
			if ap.LocalhostProfile != nil {
				el = append(el, field.Forbidden(p.Child("appArmorProfile", "localhostProfile"), "only with type Localhost"))
			}
		case corev1.AppArmorProfileTypeLocalhost:
			if ap.LocalhostProfile == nil || *ap.LocalhostProfile == "" {
				el = append(el, field.Required(p.Child("appArmorProfile", "localhostProfile"), "with type Localhost"))
			}
		default:
			el = append(el, field.NotSupported(p.Child("appArmorProfile", "type"), ap.Type,
				[]corev1.AppArmorProfileType{corev1.AppArmorProfileTypeRuntimeDefault, corev1.AppArmorProfileTypeUnconfined, corev1.AppArmorProfileTypeLocalhost}))
		}
	}
	if sp := sc.SeccompProfile; sp != nil {
		switch sp.Type {
		case corev1.SeccompProfileTypeRuntimeDefault, corev1.SeccompProfileTypeUnconfined:
		case corev1.SeccompProfileTypeLocalhost:
			if sp.LocalhostProfile == nil || *sp.LocalhostProfile == "" {
				el = append(el, field.Required(p.Child("seccompProfile", "localhostProfile"), "with type Localhost"))
			}
		default:
			el = append(el, field.NotSupported(p.Child("seccompProfile", "type"), sp.Type,
				[]corev1.SeccompProfileType{corev1.SeccompProfileTypeRuntimeDefault, corev1.SeccompProfileTypeUnconfined, corev1.SeccompProfileTypeLocalhost}))
		}
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount && *sc.ProcMount != corev1.UnmaskedProcMount {
		el = append(el, field.NotSupported[string](p.Child("procMount"), string(*sc.ProcMount), nil))
	}
	return el
}

func validateProbe(pr *corev1.Probe, ports map[string]int32, livenessLike bool, p *field.Path) field.ErrorList {
	var el field.ErrorList
	n := 0
	if pr.Exec != nil {
		n++
	}
	if pr.TCPSocket != nil {
		n++
		el = append(el, validateProbePort(pr.TCPSocket.Port.StrVal, pr.TCPSocket.Port.IntValue(), ports, p.Child("tcpSocket", "port"))...)
	}
	if pr.GRPC != nil {
		n++
	}
	if h := pr.HTTPGet; h != nil {
		n++
		if !strings.HasPrefix(h.Path, "/") {
			el = append(el, field.Invalid(p.Child("httpGet", "path"), h.Path, "must start with /"))
		}
		if h.Scheme != "" && h.Scheme != corev1.URISchemeHTTP && h.Scheme != corev1.URISchemeHTTPS {
			el = append(el, field.NotSupported(p.Child("httpGet", "scheme"), h.Scheme, []string{"HTTP", "HTTPS"}))
		}
		el = append(el, validateProbePort(h.Port.StrVal, h.Port.IntValue(), ports, p.Child("httpGet", "port"))...)
	}
	if n != 1 {
		el = append(el, field.Invalid(p, n, "must specify exactly one handler"))
	}
	for name, v := range map[string]int32{"initialDelaySeconds": pr.InitialDelaySeconds, "timeoutSeconds": pr.TimeoutSeconds,
		"periodSeconds": pr.PeriodSeconds, "successThreshold": pr.SuccessThreshold, "failureThreshold": pr.FailureThreshold} {
		if v < 0 {
			el = append(el, field.Invalid(p.Child(name), v, "must be non-negative"))
		}
	}
	if livenessLike && pr.SuccessThreshold > 1 {
		el = append(el, field.Invalid(p.Child("successThreshold"), pr.SuccessThreshold, "must be 1"))
	}
	return el
}

func validateProbePort(name string, num int, ports map[string]int32, p *field.Path) field.ErrorList {
	if name != "" {
		if _, ok := ports[name]; !ok {
			return field.ErrorList{field.NotFound(p, name)}
		}
		return nil
	}
	var el field.ErrorList
	for _, msg := range validation.IsValidPortNum(num) {
		el = append(el, field.Invalid(p, num, msg))
	}
	return el
}
