{{/*
Expand the name of the chart.
*/}}
{{- define "zeek-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "zeek-pipeline.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "zeek-pipeline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "zeek-pipeline.labels" -}}
helm.sh/chart: {{ include "zeek-pipeline.chart" . }}
{{ include "zeek-pipeline.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zeek-pipeline
{{- end }}

{{/*
Selector labels (a stable subset of the labels: never add a label here that changes between upgrades)
*/}}
{{- define "zeek-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zeek-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component: the common labels plus app.kubernetes.io/component.
Usage: include "zeek-pipeline.componentLabels" (dict "component" "operator" "context" $)
*/}}
{{- define "zeek-pipeline.componentLabels" -}}
{{ include "zeek-pipeline.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component.
Usage: include "zeek-pipeline.componentSelectorLabels" (dict "component" "operator" "context" $)
*/}}
{{- define "zeek-pipeline.componentSelectorLabels" -}}
{{ include "zeek-pipeline.selectorLabels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "zeek-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "zeek-pipeline.fullname" .) | trunc 63 | trimSuffix "-") .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the operator's Deployment, Role/ClusterRole and bindings.
*/}}
{{- define "zeek-pipeline.operatorName" -}}
{{- printf "%s-operator" (include "zeek-pipeline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The image tag: the component's own, else the chart-wide one, else the chart's appVersion.
Usage: include "zeek-pipeline.imageTag" (dict "image" .Values.operator.image "context" $)
*/}}
{{- define "zeek-pipeline.imageTag" -}}
{{- .image.tag | default .context.Values.image.tag | default .context.Chart.AppVersion }}
{{- end }}

{{/*
The full image reference of a component (its repository falls back to image.repository).
Usage: include "zeek-pipeline.image" (dict "image" .Values.operator.image "context" $)
*/}}
{{- define "zeek-pipeline.image" -}}
{{- $repository := .image.repository | default .context.Values.image.repository }}
{{- printf "%s:%s" $repository (include "zeek-pipeline.imageTag" .) }}
{{- end }}

{{/*
Name of the ZeekPipeline built from values: pipeline.name, else the fullname. The operator names children
<name>-normalizer-enricher, so the name is kept to 45 characters (the CRD's limit too).
*/}}
{{- define "zeek-pipeline.pipelineName" -}}
{{- .Values.pipeline.name | default (include "zeek-pipeline.fullname" .) | trunc 45 | trimSuffix "-" }}
{{- end }}
