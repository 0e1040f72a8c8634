{{/* The install namespace: pools, reservations, workloads. */}}
{{- define "whereabouts-py.namespace" -}}
{{ .Values.namespace | default .Release.Namespace }}
{{- end }}

{{- define "whereabouts-py.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* On every object and pod template, as the kustomize base sets it. */}}
{{- define "whereabouts-py.labels" -}}
app.kubernetes.io/part-of: whereabouts-py
{{- end }}

{{- define "whereabouts-py.pullPolicy" -}}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}
