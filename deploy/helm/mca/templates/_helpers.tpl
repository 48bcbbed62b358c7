{{/* The image, tagged with the chart's appVersion unless a tag is given. */}}
{{- define "mca.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "mca.labels" -}}
app.kubernetes.io/name: mca
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The webhook's Service name (its certificate's names derive from it). */}}
{{- define "mca.webhookService" -}}
{{ .Release.Name }}-webhook
{{- end -}}

{{/* The MutatingWebhookConfiguration's name. */}}
{{- define "mca.webhookConfiguration" -}}
{{ .Release.Name }}-injector
{{- end -}}

{{/* Pod settings shared by both Deployments: non-root, read-only, nothing added. */}}
{{- define "mca.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "mca.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
