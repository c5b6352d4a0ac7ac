{{/* Chart name, truncated to the 63 characters of a DNS-1123 label. */}}
{{- define "daskweak.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else the release name when it contains the chart name
(release "daskweak" -> "daskweak"), else "<release>-<chart>".
*/}}
{{- define "daskweak.fullname" -}}
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

{{- define "daskweak.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "daskweak.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daskweak.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "daskweak.labels" -}}
helm.sh/chart: {{ include "daskweak.chart" . }}
{{ include "daskweak.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: daskweak
{{- end }}

{{/* The ServiceAccount the benchmark runs as (created by the chart or not). */}}
{{- define "daskweak.serviceAccountName" -}}
{{- default (include "daskweak.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
Name of the cluster-scoped node reader (ClusterRole and ClusterRoleBinding): cluster-wide names, so the release's
namespace is part of it and releases of one name in two namespaces do not collide.
*/}}
{{- define "daskweak.nodeReaderName" -}}
{{- printf "%s-%s-read-nodes" (include "daskweak.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* The benchmark image, also the Dask scheduler/worker image (CONTAINER_IMAGE). */}}
{{- define "daskweak.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{/*
A setting's value as an environment variable string. Numbers from a values file arrive as float64, which
`toString` would print as 6e+06: whole numbers are printed as integers.
*/}}
{{- define "daskweak.settingValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- . | int64 | toString }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/* Keys of .Values.settings that the chart sets itself and never takes from the values. */}}
{{- define "daskweak.fixedSettings" -}}
BACKEND KUBE_NAMESPACE CONTAINER_IMAGE USE_SSL SECRET_CERT_NAME CERT_DIR RESULTS_URL RES_DIR KUBE_WORKER_PLACEMENT KUBE_IMAGE_PULL_SECRETS KUBE_NODE_SELECTOR KUBE_TOLERATIONS KUBE_PRIORITY_CLASS KUBE_SERVICE_ACCOUNT KUBE_POD_LABELS KUBE_POD_ANNOTATIONS
{{- end }}
