{{/*
What `helm install` prints (NOTES.txt), as a named template so the chart test can render it
with `helm template`.
*/}}
{{- define "causeway.notes" -}}
Causeway {{ .Chart.AppVersion }} is installed in namespace {{ .Release.Namespace }} (release {{ .Release.Name }}):
  - operator:   Deployment {{ include "causeway.operator.fullname" . }} ({{ .Values.operator.replicas }} replicas, one leads through Lease {{ include "causeway.operator.fullname" . }})
  - node agent: DaemonSet {{ include "causeway.nodeAgent.fullname" . }} (one per node; CNI config written to {{ .Values.nodeAgent.cniConfDir }} on each node)
{{- if .Values.crds.install }}
  - CRDs:       podnetworks, nodesubnets, overlaygateways (causeway.dev){{ if .Values.crds.keep }}, kept on uninstall{{ end }}
{{- else }}
  - CRDs:       not managed by this release (crds.install=false): apply charts/causeway/files/crds/ yourself
{{- end }}

Check it:
  kubectl -n {{ .Release.Namespace }} get pods -l app.kubernetes.io/instance={{ .Release.Name }} -o wide
  kubectl -n {{ .Release.Namespace }} rollout status daemonset/{{ include "causeway.nodeAgent.fullname" . }}
  kubectl get podnetworks

Nodes stay NotReady (NetworkPluginNotReady) until a PodNetwork selects them. Create one, e.g.
the Overlay example (VXLAN, works on any underlay):
  kubectl apply -f https://raw.githubusercontent.com/causeway-dev/causeway/main/docs/examples/podnetwork-overlay.yaml
  kubectl wait --for=condition=Ready podnetwork/overlay --timeout=120s
  kubectl describe podnetwork overlay      # conditions and events say what is missing

{{- if .Values.operator.metrics.enabled }}

Metrics are served by the leading operator replica on {{ include "causeway.operator.metricsAddr" . }}{{ if eq .Values.operator.metrics.bindAddress "127.0.0.1" }} of its node:
  kubectl -n {{ .Release.Namespace }} port-forward pod/$(kubectl -n {{ .Release.Namespace }} get lease {{ include "causeway.operator.fullname" . }} -o jsonpath='{.spec.holderIdentity}') {{ .Values.operator.metrics.port }}
  curl -s 127.0.0.1:{{ .Values.operator.metrics.port }}/metrics{{ else }} (unauthenticated: restrict that port with a host firewall){{ end }}
{{- end }}

Docs: https://github.com/causeway-dev/causeway/tree/main/docs
  modes (Flat, Routed, Overlay): docs/modes.md   API: docs/api.md
  operator: docs/operator.md   node agent: docs/node-agent.md   chart values: charts/causeway/README.md
{{- end }}
