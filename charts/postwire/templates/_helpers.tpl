{{/* Names ------------------------------------------------------------------------------------------ */}}

{{- define "postwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "postwire.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", e.g. postwire-ingest-smtp. Call with (dict "root" $ "name" "ingest-smtp"). */}}
{{- define "postwire.componentName" -}}
{{- printf "%s-%s" (include "postwire.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "postwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "postwire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------------- */}}

{{- define "postwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postwire.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "postwire.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "postwire.selectorLabels" . }}
app.kubernetes.io/part-of: postwire
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* Wiring ----------------------------------------------------------------------------------------- */}}

{{- define "postwire.natsUrl" -}}
{{- if .Values.nats.external.url -}}
{{- .Values.nats.external.url -}}
{{- else -}}
{{- printf "nats://%s:%d" (include "postwire.componentName" (dict "root" . "name" "nats")) (int .Values.nats.ports.client) -}}
{{- end -}}
{{- end -}}

{{- define "postwire.streamReplicas" -}}
{{- if .Values.nats.external.url -}}{{ .Values.nats.external.streamReplicas }}{{- else -}}{{ .Values.nats.replicas }}{{- end -}}
{{- end -}}

{{- define "postwire.databaseSecretName" -}}
{{- default (include "postwire.componentName" (dict "root" . "name" "database")) .Values.database.existingSecret -}}
{{- end -}}

{{- define "postwire.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}

{{- define "postwire.verpSecretName" -}}
{{- default (include "postwire.componentName" (dict "root" . "name" "verp")) .Values.secrets.verp.existingSecret -}}
{{- end -}}

{{- define "postwire.verpSecretKey" -}}
{{- if .Values.secrets.verp.existingSecret -}}{{ .Values.secrets.verp.existingSecretKey }}{{- else -}}verp-secret{{- end -}}
{{- end -}}

{{/* The SMTP TLS Secret's name, or nothing when no certificate is configured. */}}
{{- define "postwire.smtpTlsSecretName" -}}
{{- if .Values.smtpTls.existingSecret -}}
{{- .Values.smtpTls.existingSecret -}}
{{- else if .Values.smtpTls.cert -}}
{{- include "postwire.componentName" (dict "root" . "name" "smtp-tls") -}}
{{- end -}}
{{- end -}}

{{/* The container port number of a named port of a service entry. (dict "svc" $svc "port" "ops") */}}
{{- define "postwire.portNumber" -}}
{{- range .svc.ports -}}{{- if eq .name $.port -}}{{ .containerPort }}{{- end -}}{{- end -}}
{{- end -}}

{{- define "postwire.image" -}}
{{- $img := index .root.Values.images .svc.image -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* Environment of a Postwire container: the chart's wiring, then the entry's own env. (dict "root" "name" "svc") */}}
{{- define "postwire.env" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
- name: POSTWIRE_NATS_URL
  value: {{ include "postwire.natsUrl" $root | quote }}
- name: POSTWIRE_STREAM_REPLICAS
  value: {{ include "postwire.streamReplicas" $root | quote }}
- name: POSTWIRE_DATA_DIR
  value: /var/lib/postwire
- name: POSTWIRE_OPS_HOST
  value: 0.0.0.0
- name: POSTWIRE_TRACKING_BASE_URL
  value: {{ include "postwire.trackingBaseUrl" $root | quote }}
- name: POSTWIRE_OPS_PORT
  value: {{ include "postwire.portNumber" (dict "svc" $svc "port" $svc.metricsPort) | quote }}
{{- if has "database" $svc.talksTo }}
- name: POSTWIRE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "postwire.databaseSecretName" $root }}
      key: {{ include "postwire.databaseSecretKey" $root }}
{{- end }}
{{- if has "verp" ($svc.secrets | default list) }}
- name: POSTWIRE_VERP_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "postwire.verpSecretName" $root }}
      key: {{ include "postwire.verpSecretKey" $root }}
{{- end }}
{{- if has "transformer" $svc.talksTo }}
- name: POSTWIRE_TRANSFORMER_ADDR
  value: {{ printf "%s:%d" (include "postwire.componentName" (dict "root" $root "name" "transformer")) (int (index $root.Values.services "transformer").probes.port) | quote }}
{{- end }}
{{- if has "shaping" $svc.mounts }}
- name: POSTWIRE_SHAPING_FILE
  value: /etc/postwire/shaping/shaping.yaml
{{- end }}
{{- if and (has "smtpTls" $svc.mounts) (include "postwire.smtpTlsSecretName" $root) }}
- name: POSTWIRE_TLS_CERT_FILE
  value: /etc/postwire/tls/tls.crt
- name: POSTWIRE_TLS_KEY_FILE
  value: /etc/postwire/tls/tls.key
{{- end }}
{{- if eq $svc.workload "StatefulSet" }}
# shard ownership: this pod's ordinal of `replicas` (the pod-index label, Kubernetes 1.28+)
- name: POSTWIRE_REPLICA_INDEX
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
- name: POSTWIRE_REPLICA_COUNT
  value: {{ $svc.replicas | quote }}
{{- end }}
{{- range $k := keys $svc.env | sortAlpha }}
- name: {{ $k }}
  value: {{ index $svc.env $k | toString | quote }}
{{- end }}
{{- range $root.Values.secrets.extraEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{- define "postwire.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* One workload (Deployment or StatefulSet) for an entry of values.services. (dict "root" $ "name" $name "svc" $svc) */}}
{{- define "postwire.workload" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := .svc -}}
{{- $ctx := dict "root" $root "name" $name -}}
{{- $grace := index $root.Values.config "POSTWIRE_SHUTDOWN_GRACE_S" | default 20 | float64 -}}
{{- if le (float64 $svc.terminationGracePeriodSeconds) $grace -}}
{{- fail (printf "services.%s.terminationGracePeriodSeconds must exceed POSTWIRE_SHUTDOWN_GRACE_S (%v)" $name $grace) -}}
{{- end -}}
apiVersion: apps/v1
kind: {{ $svc.workload }}
metadata:
  name: {{ include "postwire.componentName" $ctx }}
  labels:
    {{- include "postwire.labels" $ctx | nindent 4 }}
spec:
  {{- if not (and $svc.autoscaling $svc.autoscaling.enabled) }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "postwire.selectorLabels" $ctx | nindent 6 }}
  {{- if eq $svc.workload "StatefulSet" }}
  serviceName: {{ include "postwire.componentName" $ctx }}
  # every sender starts and stops independently; each owns a fixed set of shards
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "postwire.labels" $ctx | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "postwire.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
      {{- include "postwire.podSecurity" $root | nindent 6 }}
      containers:
        - name: {{ $name }}
          image: {{ include "postwire.image" (dict "root" $root "svc" $svc) | quote }}
          imagePullPolicy: {{ $root.Values.imagePullPolicy }}
          envFrom:
            - configMapRef:
                name: {{ include "postwire.componentName" (dict "root" $root "name" "config") }}
          env:
            {{- include "postwire.env" (dict "root" $root "name" $name "svc" $svc) | nindent 12 }}
          ports:
            {{- range $svc.ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
          {{- if eq $svc.probes.type "grpc" }}
          startupProbe:
            grpc: {port: {{ $svc.probes.port }}}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            grpc: {port: {{ $svc.probes.port }}}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            grpc: {port: {{ $svc.probes.port }}}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- else }}
          startupProbe:
            httpGet: {path: /healthz, port: {{ $svc.metricsPort }}}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            httpGet: {path: /healthz, port: {{ $svc.metricsPort }}}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: /readyz, port: {{ $svc.metricsPort }}}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- end }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: data, mountPath: /var/lib/postwire}
            {{- if has "shaping" $svc.mounts }}
            - {name: shaping, mountPath: /etc/postwire/shaping, readOnly: true}
            {{- end }}
            {{- if and (has "smtpTls" $svc.mounts) (include "postwire.smtpTlsSecretName" $root) }}
            - {name: smtp-tls, mountPath: /etc/postwire/tls, readOnly: true}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 256Mi}
        - name: data
          emptyDir: {sizeLimit: 256Mi}
        {{- if has "shaping" $svc.mounts }}
        - name: shaping
          configMap:
            name: {{ include "postwire.componentName" (dict "root" $root "name" "shaping") }}
        {{- end }}
        {{- if and (has "smtpTls" $svc.mounts) (include "postwire.smtpTlsSecretName" $root) }}
        - name: smtp-tls
          secret:
            secretName: {{ include "postwire.smtpTlsSecretName" $root }}
            defaultMode: 0440
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $svc.affinity }}
      affinity:
        {{- toYaml $svc.affinity | nindent 8 }}
      {{- else }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "postwire.selectorLabels" $ctx | nindent 14 }}
      {{- end }}
{{- end -}}

{{/* NetworkPolicy egress rules of a talksTo flow. (dict "root" $ "flow" "nats") */}}
{{- define "postwire.egressRule" -}}
{{- $root := .root -}}
{{- if eq .flow "nats" }}
{{- if $root.Values.nats.external.url }}
- ports: [{port: {{ $root.Values.nats.external.port }}, protocol: TCP}]
  {{- with $root.Values.nats.external.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- else }}
- ports: [{port: {{ $root.Values.nats.ports.client }}, protocol: TCP}]
  to:
    - podSelector:
        matchLabels:
          {{- include "postwire.selectorLabels" (dict "root" $root "name" "nats") | nindent 10 }}
{{- end }}
{{- else if eq .flow "database" }}
- ports: [{port: {{ $root.Values.database.networkPolicy.port }}, protocol: TCP}]
  {{- with $root.Values.database.networkPolicy.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- else if eq .flow "transformer" }}
- ports: [{port: {{ (index $root.Values.services "transformer").probes.port }}, protocol: TCP}]
  to:
    - podSelector:
        matchLabels:
          {{- include "postwire.selectorLabels" (dict "root" $root "name" "transformer") | nindent 10 }}
{{- else if eq .flow "mx" }}
- ports: [{port: {{ $root.Values.config.POSTWIRE_MX_PORT | default 25 }}, protocol: TCP}]
{{- else if eq .flow "webhooks" }}
- ports: [{port: 443, protocol: TCP}, {port: 80, protocol: TCP}]
{{- else }}
{{- fail (printf "unknown talksTo flow %q" .flow) }}
{{- end }}
{{- end -}}

{{/* DNS egress, every pod. */}}
{{- define "postwire.dnsEgress" -}}
- ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
  {{- with .Values.networkPolicy.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Base URL of click/open tracking links: .Values.trackingBaseUrl, else https://<first ingress host>. */}}
{{- define "postwire.trackingBaseUrl" -}}
{{- if .Values.trackingBaseUrl -}}
{{- .Values.trackingBaseUrl -}}
{{- else if .Values.ingress.hosts -}}
{{- printf "https://%s" (first .Values.ingress.hosts) -}}
{{- else -}}
{{- fail "set trackingBaseUrl (or ingress.hosts): tracking links need the API's public URL" -}}
{{- end -}}
{{- end -}}
