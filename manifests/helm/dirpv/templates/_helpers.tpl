{{/* The release's objects' name: the release's, or <release>-dirpv when it does not hold "dirpv". */}}
{{- define "dirpv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: the kustomize base's, and the release's. */}}
{{- define "dirpv.labels" -}}
app.kubernetes.io/name: dirpv
{{ include "dirpv.releaseLabels" . }}
{{- end -}}

{{/* The release's labels: alone on the StorageClasses, which the overlays label with nothing. */}}
{{- define "dirpv.releaseLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The replicas' labels, which their selector and the PodMonitor's select. */}}
{{- define "dirpv.selectorLabels" -}}
app.kubernetes.io/name: dirpv
app.kubernetes.io/component: provisioner
{{- end -}}

{{/* dirpv's provisioner names as it serves them: its defaults where flags leave them out. */}}
{{- define "dirpv.name" -}}
{{- if kindIs "invalid" .Values.flags.name -}}dirpv.io/provisioner{{- else -}}{{ .Values.flags.name }}{{- end -}}
{{- end -}}
{{- define "dirpv.capacityName" -}}
{{- if kindIs "invalid" .Values.flags.capacityName -}}dirpv.io{{- else -}}{{ .Values.flags.capacityName }}{{- end -}}
{{- end -}}

{{- define "dirpv.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* A flag's value as dirpv parses it: whole numbers without an exponent (values files give
numbers as floats, which print as 1e+06). */}}
{{- define "dirpv.flagValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- . | int64 -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}
