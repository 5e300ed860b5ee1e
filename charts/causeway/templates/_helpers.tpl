{{/*
Names and labels. Every object is named from the release (causeway.fullname), so two
releases in different namespaces never collide, cluster-scoped objects included. With the
release name "causeway" the names are the ones the docs use: causeway-operator,
causeway-node-agent, causeway-gateway-client (the ClientJoin clients' roles).
*/}}

{{- define "causeway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: the release name when it already contains the chart name
("causeway", "causeway-prod"), otherwise "<release>-causeway".
*/}}
{{- define "causeway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "causeway.operator.fullname" -}}
{{- printf "%s-operator" (include "causeway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "causeway.nodeAgent.fullname" -}}
{{- printf "%s-node-agent" (include "causeway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "causeway.gatewayClient.fullname" -}}
{{- printf "%s-gateway-client" (include "causeway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The namespace of the ClientJoin clients' ServiceAccounts (one per client, kept by the
operator): gatewayClients.namespace, or "<release namespace>-clients".
*/}}
{{- define "causeway.clientNamespace" -}}
{{- default (printf "%s-clients" .Release.Namespace) .Values.gatewayClients.namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "causeway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Call with (dict "context" $ "component" "operator").
*/}}
{{- define "causeway.labels" -}}
helm.sh/chart: {{ include "causeway.chart" .context }}
{{ include "causeway.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end }}

{{/*
Selector labels (immutable in Deployments and DaemonSets). Same call as causeway.labels.
*/}}
{{- define "causeway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "causeway.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
The image of both daemons: registry/repository, then @digest if set, else :tag (default: the
chart's appVersion).
*/}}
{{- define "causeway.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" . $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
The operator's --metrics-addr: empty when metrics are off; IPv6 addresses in brackets.
*/}}
{{- /* The agent's --metrics-addr: bindAddress:port, IPv6 in brackets; empty when off. */ -}}
{{- define "causeway.nodeAgent.metricsAddr" -}}
{{- $m := .Values.nodeAgent.metrics }}
{{- if $m.enabled }}
{{- $host := $m.bindAddress }}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}
{{- $host = printf "[%s]" $host }}
{{- end }}
{{- printf "%s:%d" $host (int $m.port) }}
{{- end }}
{{- end }}

{{- define "causeway.operator.metricsAddr" -}}
{{- $m := .Values.operator.metrics }}
{{- if $m.enabled }}
{{- $host := $m.bindAddress }}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}
{{- $host = printf "[%s]" $host }}
{{- end }}
{{- printf "%s:%d" $host (int $m.port) }}
{{- end }}
{{- end }}

{{/*
A Role and RoleBinding in namespace "default" letting an account read the EndpointSlices of
the `kubernetes` Service: the API servers' own addresses, which nothing Causeway programs may
take (in a pod the client configuration names only the Service's cluster IP). Call with
(dict "context" $ "account" <service account> "component" "operator").
*/}}
{{- define "causeway.apiserverEndpointsRole" -}}
{{- $name := printf "%s-apiserver-endpoints" .account | trunc 63 | trimSuffix "-" }}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: default
  labels:
    {{- include "causeway.labels" (dict "context" .context "component" .component) | nindent 4 }}
rules:
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]   # only kubernetes.io/service-name=kubernetes is read
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: default
  labels:
    {{- include "causeway.labels" (dict "context" .context "component" .component) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ .account }}
    namespace: {{ .context.Release.Namespace }}
{{- end }}
