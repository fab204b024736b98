{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's short name: "temper" unless nameOverride is set. */}}
{{- define "temper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-qualified name. A release already named after the chart ("temper") is not doubled.
Kept to 52 characters so that suffixes such as "-agent-own-node" stay within object name limits.
*/}}
{{- define "temper.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The agent's objects: DaemonSet, ClusterRole, bindings, admission policy. */}}
{{- define "temper.agent.fullname" -}}
{{- printf "%s-agent" (include "temper.fullname" .) }}
{{- end }}

{{/* The labels every object carries. */}}
{{- define "temper.labels" -}}
app.kubernetes.io/name: {{ include "temper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: temper
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Labels of the agent's objects. */}}
{{- define "temper.agent.labels" -}}
{{ include "temper.labels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{/*
The agent pods' selector. It must never change between chart versions: a DaemonSet's selector is
immutable, so a changed selector makes upgrades fail.
*/}}
{{- define "temper.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "temper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{/* The agent's ServiceAccount name. */}}
{{- define "temper.agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "temper.agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The username the API server gives the agent's ServiceAccount tokens. */}}
{{- define "temper.agent.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "temper.agent.serviceAccountName" .) }}
{{- end }}

{{/* The agent image reference; the tag defaults to the chart's appVersion. */}}
{{- define "temper.agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
