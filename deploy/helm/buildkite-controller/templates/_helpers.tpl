{{/* Names: the release's full name, "buildkite-controller" by default, as in deploy/base. */}}
{{- define "bkc.name" -}}
{{- default "buildkite-controller" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bkc.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "bkc.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "bkc.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bkc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bkc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bkc.labels" -}}
{{ include "bkc.selectorLabels" . }}
app.kubernetes.io/part-of: buildkite-controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "bkc.controllerSecret" -}}
{{- default (printf "%s-secrets" (include "bkc.fullname" .)) .Values.controllerSecret -}}
{{- end -}}

{{- define "bkc.agentTokenSecret" -}}
{{- default "buildkite-agent-token" .Values.agentTokenSecret -}}
{{- end -}}

{{- define "bkc.leaseName" -}}
{{- printf "%s-leader" (include "bkc.fullname" .) -}}
{{- end -}}

{{/* agent-stack-k8s' `prometheus-port` names the metrics port; ours serves metrics on the ops port. */}}
{{- define "bkc.opsPort" -}}
{{- index .Values.config "prometheus-port" | default .Values.opsPort | int -}}
{{- end -}}

{{/* config.yaml: the user's config with the keys the chart's objects depend on set by the chart. */}}
{{- define "bkc.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "namespace" .Values.jobsNamespace -}}
{{- $_ := set $config "agent-token-secret" (include "bkc.agentTokenSecret" .) -}}
{{- $_ := set $config "leader-lease-name" (include "bkc.leaseName" .) -}}
{{- if not (hasKey $config "id") -}}
{{- $_ := set $config "id" (include "bkc.fullname" .) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
