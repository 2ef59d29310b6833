{{/* Chart name, overridable. */}}
{{- define "affix-rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "affix-rotator.fullname" -}}
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

{{- define "affix-rotator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "affix-rotator.labels" -}}
helm.sh/chart: {{ include "affix-rotator.chart" . }}
{{ include "affix-rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: secret-rotator
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "affix-rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "affix-rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "affix-rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "affix-rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "affix-rotator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The daemon's config.yaml, as text: configYaml verbatim, else config. */}}
{{- define "affix-rotator.configYaml" -}}
{{- if .Values.configYaml }}
{{- .Values.configYaml }}
{{- else }}
{{- required "config is required (the daemon's configuration)" .Values.config | toYaml }}
{{- end }}
{{- end }}

{{/*
The parsed config, as JSON (include returns a string), with the chart's
checks: they fail the rendering with a message naming the value to fix.
*/}}
{{- define "affix-rotator.configJSON" -}}
{{- $cfg := include "affix-rotator.configYaml" . | fromYaml }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "configYaml is not valid YAML: %s" $cfg.Error) }}
{{- end }}
{{- if $cfg.instance_id }}
{{- fail "config.instance_id must stay empty in Kubernetes: each pod then uses its own name (its hostname) as lease identity; a fixed id would let two pods drive one rotation" }}
{{- end }}
{{- $vault := $cfg.vault | default dict }}
{{- $auth := $vault.auth | default dict }}
{{- $method := $auth.method | default "token" }}
{{- if and (eq $method "token") (not $auth.token_file) (not .Values.secrets.vaultToken.secretName) }}
{{- fail "config.vault.auth.method is token: set secrets.vaultToken.secretName (an existing Secret holding the token), or use the kubernetes method" }}
{{- end }}
{{- $affix := $cfg.affix | default dict }}
{{- if and (not $affix.api_key_file) (not .Values.secrets.affixApiKey.secretName) }}
{{- fail "secrets.affixApiKey.secretName is required (an existing Secret holding the Affix API key), unless config.affix.api_key_file names a file mounted with secrets.files" }}
{{- end }}
{{- $cfg | toJson }}
{{- end }}

{{/* The port of config.listen (":9464", "0.0.0.0:9464"). */}}
{{- define "affix-rotator.port" -}}
{{- $cfg := include "affix-rotator.configJSON" . | fromJson }}
{{- $listen := $cfg.listen | default ":9464" | toString }}
{{- $port := regexReplaceAll "^.*:" $listen "" }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "config.listen %q has no numeric port" $listen) }}
{{- end }}
{{- $port }}
{{- end }}
