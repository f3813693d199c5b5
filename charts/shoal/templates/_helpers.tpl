{{/* Chart name. */}}
{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object-name prefix: the release name, plus "-shoal" unless it already contains it. */}}
{{- define "shoal.fullname" -}}
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

{{/* Name of the operator's Deployment, Service, ClusterRole and bindings. */}}
{{- define "shoal.operatorName" -}}
{{- printf "%s-operator" (include "shoal.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Lease that elects the one replica running the autoscaler. */}}
{{- define "shoal.leaseName" -}}
{{- printf "%s-leader" (include "shoal.operatorName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shoal.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" . }}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shoal
{{- end }}

{{/* Selector labels of the operator pod (component=operator never matches model-server or router pods). */}}
{{- define "shoal.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* repository@digest when a digest is set (it wins), else repository:tag, the tag defaulting to the
chart's appVersion. */}}
{{- define "shoal.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}
{{- end }}

{{/*
The operator's rules on namespaced resources: exactly what shoal reads and writes.
Children are written by server-side apply (verbs create + patch), removed with delete.
*/}}
{{- define "shoal.namespacedRules" -}}
# InferenceServices and InferenceGateways: watched by kopf; patched for kopf's finalizer and progress
# annotations. (A gateway's entry point reads both: its Role grants get/list/watch on them.)
- apiGroups: ["shoal.dev"]
  resources: ["inferenceservices", "inferencegateways"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by the operator (field manager shoal-operator).
- apiGroups: ["shoal.dev"]
  resources: ["inferenceservices/status", "inferencegateways/status"]
  verbs: ["get", "patch", "update"]
# The autoscaler's only write: the scale subresource (field manager shoal-autoscaler).
- apiGroups: ["shoal.dev"]
  resources: ["inferenceservices/scale"]
  verbs: ["get", "patch", "update"]
# Children. Deployments are watched (kopf follows rollouts); every other child is only read by name,
# applied (server-side apply: create + patch) and deleted, so list/watch are not granted on them.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
# The model-server pods' NetworkPolicy (spec.networkPolicy).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
# The router's Role and RoleBinding. Kubernetes only lets the operator grant what it holds itself
# (no escalate/bind verbs), so the router can never get more than the reads below.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch", "delete"]
# Gateway mode: the InferencePool each InferenceService renders (when the CRD is installed).
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "create", "patch", "delete"]
{{- if .Values.rbac.podMonitors }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
# Read-only: pods (cold-start-aware autoscaling) and EndpointSlices (what the router's Role grants).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
# Events: one per scaling decision and per reconcile problem.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
