{{- define "irisx-broker.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "irisx-broker.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "irisx-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "irisx-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "irisx-broker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "irisx-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "irisx-broker.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The secret files and their NAME_FILE variables. */}}
{{- define "irisx-broker.secretEnv" -}}
{{- range $name, $key := .Values.secrets.keys }}
- name: {{ $name }}_FILE
  value: {{ printf "%s/%s" $.Values.secrets.mountPath $key | quote }}
{{- end }}
{{- if .Values.databaseDirectURL.enabled }}
- name: DATABASE_DIRECT_URL_FILE
  value: {{ printf "%s/%s" .Values.secrets.mountPath .Values.databaseDirectURL.secretKey | quote }}
{{- end }}
{{- end }}

{{- define "irisx-broker.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ required "secrets.existingSecret is required" .Values.secrets.existingSecret }}
    defaultMode: 0440
    items:
    {{- range $name, $key := .Values.secrets.keys }}
      - key: {{ $key }}
        path: {{ $key }}
    {{- end }}
    {{- if .Values.databaseDirectURL.enabled }}
      - key: {{ .Values.databaseDirectURL.secretKey }}
        path: {{ .Values.databaseDirectURL.secretKey }}
    {{- end }}
{{- end }}
