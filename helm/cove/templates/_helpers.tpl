{{/*
Helpers shared by the templates. Names are namespaced cove.*; each takes the root context unless it says otherwise.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "cove.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: fullnameOverride, the release name if it holds the chart name, else both. */}}
{{- define "cove.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "cove.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component. Takes (dict "ctx" $ "component" "server"). */}}
{{- define "cove.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cove.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. Takes (dict "ctx" $ "component" "server"). */}}
{{- define "cove.labels" -}}
{{ include "cove.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cove
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "cove.chart" .ctx }}
{{- end -}}

{{/* The Cove image reference. */}}
{{- define "cove.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* In-cluster URLs of the faces. */}}
{{- define "cove.serverUrl" -}}
{{- printf "http://%s-server:8080" (include "cove.fullname" .) -}}
{{- end -}}
{{- define "cove.hubUrl" -}}
{{- printf "http://%s-hub:8000" (include "cove.fullname" .) -}}
{{- end -}}

{{/* The URL of an ingress host: https when ingress.tls covers it. Takes (dict "ctx" $ "host" "cove.example.com"). */}}
{{- define "cove.hostUrl" -}}
{{- $host := .host -}}
{{- $tls := false -}}
{{- range .ctx.Values.ingress.tls }}{{ if has $host (.hosts | default list) }}{{ $tls = true }}{{ end }}{{ end -}}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host -}}
{{- end -}}

{{/* How clients reach the gateway: publicUrl, else the ingress host of the server, else its Service. */}}
{{- define "cove.publicUrl" -}}
{{- $host := .Values.ingress.hosts.server -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled $host -}}
{{- include "cove.hostUrl" (dict "ctx" . "host" $host) -}}
{{- else -}}
{{- include "cove.serverUrl" . -}}
{{- end -}}
{{- end -}}

{{/* Names of the shared claims: the existing ones when given, else the chart's. */}}
{{- define "cove.modelsClaim" -}}
{{- .Values.storage.models.existingClaim | default (printf "%s-models" (include "cove.fullname" .)) -}}
{{- end -}}
{{- define "cove.datasetsClaim" -}}
{{- .Values.storage.datasets.existingClaim | default (printf "%s-datasets" (include "cove.fullname" .)) -}}
{{- end -}}

{{/* Secrets. The chart generates none: a value made at random at render time differs on every `helm template`,
and reading it back from the cluster sees nothing under `helm template`, `--dry-run` and Argo CD, so each
render would hand the database a new password. Each secret is a Secret of the operator's (…existingSecret), or
a value given in the values (the chart keeps it in a Secret of its own); with neither, rendering fails and names
the value to set. */}}
{{- define "cove.secretKeySecret" -}}
{{- if .Values.secretKeyExistingSecret -}}
{{- .Values.secretKeyExistingSecret -}}
{{- else if .Values.secretKey -}}
{{- printf "%s-server" (include "cove.fullname" .) -}}
{{- else -}}
{{- fail (printf "no studio key: set secretKeyExistingSecret to a Secret holding it under the key secret-key (kubectl -n %s create secret generic cove-studio --from-literal=secret-key=$(openssl rand -hex 32)), or secretKey. The chart generates no secrets: one made at render time would change on every helm template or Argo CD sync (see the chart's README)" .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "cove.redisSecret" -}}
{{- with .Values.limits.redis.install -}}
{{- if .existingSecret -}}
{{- .existingSecret -}}
{{- else if .password -}}
{{- printf "%s-redis" (include "cove.fullname" $) -}}
{{- else -}}
{{- fail (printf "no password for the Redis the chart installs: set limits.redis.install.existingSecret to a Secret holding it under the key password (kubectl -n %s create secret generic cove-redis --from-literal=password=$(openssl rand -hex 24)), or limits.redis.install.password. The chart generates no secrets: one made at render time would change on every helm template or Argo CD sync (see the chart's README)" $.Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- define "cove.hubTokenSecret" -}}
{{- if .Values.hub.existingSecret -}}
{{- .Values.hub.existingSecret -}}
{{- else if .Values.hub.apiToken -}}
{{- printf "%s-hub" (include "cove.fullname" .) -}}
{{- else -}}
{{- fail (printf "no hub API token: set hub.existingSecret to a Secret holding it under the key api-token (kubectl -n %s create secret generic cove-hub --from-literal=api-token=$(openssl rand -hex 32)), or hub.apiToken. The chart generates no secrets: one made at render time would change on every helm template or Argo CD sync (see the chart's README)" .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* The bundled PostgreSQL's Secret: keys password (the role Cove connects as) and postgres-password (the
superuser, for initialisation and operators only). */}}
{{- define "cove.postgresqlSecret" -}}
{{- $auth := .Values.postgresql.auth -}}
{{- if $auth.existingSecret -}}
{{- $auth.existingSecret -}}
{{- else if and $auth.password $auth.postgresPassword -}}
{{- printf "%s-database" (include "cove.fullname" .) -}}
{{- else -}}
{{- fail (printf "no database passwords: set postgresql.auth.existingSecret to a Secret holding the password of the role Cove connects as under the key password and the superuser's under postgres-password (kubectl -n %s create secret generic cove-database --from-literal=password=$(openssl rand -hex 24) --from-literal=postgres-password=$(openssl rand -hex 24)), or both postgresql.auth.password and postgresql.auth.postgresPassword. The chart generates no secrets: one made at render time would change on every helm template or Argo CD sync and lock Cove out of its database (see the chart's README)" .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding an external database's COVE_DATABASE_URL; fails when no database is configured. */}}
{{- define "cove.databaseSecretName" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- else if .Values.externalDatabase.url -}}
{{- printf "%s-database" (include "cove.fullname" .) -}}
{{- else -}}
{{- fail "no database: postgresql.enabled is false, so set externalDatabase.url (postgresql+psycopg://user:pass@host:5432/db) or externalDatabase.existingSecret (a Secret holding that URL under externalDatabase.key)" -}}
{{- end -}}
{{- end -}}
{{- define "cove.databaseSecretKey" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.key -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* Pools as the server reads them (COVE_POOLS); fails on a repeated name. */}}
{{- define "cove.poolsJson" -}}
{{- $seen := dict -}}
{{- range .Values.pools -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "pools: the name %q is used twice; each pool needs its own name" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- .Values.pools | toJson -}}
{{- end -}}

{{/* Where built images are pushed (COVE_REGISTRY); fails when builds are enabled without one. */}}
{{- define "cove.buildsRegistry" -}}
{{- if not .Values.builds.registry -}}
{{- fail "builds.enabled is true but builds.registry is empty: set it to the registry and path built images are pushed to (e.g. registry.example.com/team), or disable builds" -}}
{{- end -}}
{{- .Values.builds.registry -}}
{{- end -}}

{{/* The namespace of image builds (COVE_BUILD_NAMESPACE); fails when it is the release namespace, which stays
under "restricted" while Kaniko needs "baseline". */}}
{{- define "cove.buildsNamespace" -}}
{{- if eq .Values.builds.namespace .Release.Namespace -}}
{{- fail (printf "builds.namespace is the release namespace %q: image builds run as root under the Pod Security Standard \"baseline\", so they need a namespace of their own (e.g. cove-builds)" .Release.Namespace) -}}
{{- end -}}
{{- .Values.builds.namespace -}}
{{- end -}}

{{/* The Kaniko executor image (COVE_BUILDER_IMAGE). */}}
{{- define "cove.builderImage" -}}
{{- printf "%s:%s" .Values.builds.builderImage.repository .Values.builds.builderImage.tag -}}
{{- end -}}

{{/* The image that pushes what Kaniko built (COVE_PUSHER_IMAGE): repository:tag, with @digest when given. */}}
{{- define "cove.pusherImage" -}}
{{- $image := .Values.builds.pusherImage -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- with $image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* The image of fine-tune Jobs (COVE_TRAINER_IMAGE). */}}
{{- define "cove.trainerImage" -}}
{{- printf "%s:%s" .Values.finetune.image.repository .Values.finetune.image.tag -}}
{{- end -}}

{{/* How every Cove process reaches the database. Bundled: as the role that owns Cove's database (not the
superuser), the password apart from the URL (COVE_DATABASE_PASSWORD: the app puts it into the URL, escaped, so it
may hold any character), with postgresql.sslMode. External: the URL from a Secret, with externalDatabase.sslMode
when set (else what the URL says). */}}
{{- define "cove.databaseEnv" -}}
{{- if .Values.postgresql.enabled -}}
{{- $auth := .Values.postgresql.auth -}}
- name: COVE_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s@%s-postgresql.%s.svc:5432/%s" $auth.username (include "cove.fullname" .) .Release.Namespace $auth.database | quote }}
- name: COVE_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "cove.postgresqlSecret" . }}
      key: password
- name: COVE_DATABASE_SSLMODE
  value: {{ .Values.postgresql.sslMode | quote }}
{{- else -}}
- name: COVE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cove.databaseSecretName" . }}
      key: {{ include "cove.databaseSecretKey" . }}
{{- with .Values.externalDatabase.sslMode }}
- name: COVE_DATABASE_SSLMODE
  value: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Pod securityContext under the Pod Security Standard "restricted": the image's user (uid/gid 1000). */}}
{{- define "cove.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext under "restricted"; the root filesystem is read-only (writable paths are volumes). */}}
{{- define "cove.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Writable scratch for a read-only root filesystem: /tmp and the image user's home (caches, ~/.streamlit). */}}
{{- define "cove.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end -}}
{{- define "cove.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/cove
{{- end -}}

{{/* COVE_HOME with the shared claims inside it (server and UI: the studio imports models and datasets there). */}}
{{- define "cove.dataVolumes" -}}
- name: state
  emptyDir: {}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "cove.modelsClaim" . }}
- name: datasets
  persistentVolumeClaim:
    claimName: {{ include "cove.datasetsClaim" . }}
{{- end -}}
{{- define "cove.dataMounts" -}}
- name: state
  mountPath: /var/lib/cove
- name: models
  mountPath: /var/lib/cove/models
- name: datasets
  mountPath: /var/lib/cove/datasets
{{- end -}}

{{/* Pod-spec fields every component shares. Takes (dict "ctx" $ "values" .Values.server). */}}
{{- define "cove.podPlacement" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The session cookie's domain: auth.sessionDomain, else (the faces on hosts of their own) the longest domain
every face's host is in, of at least two labels: cove.example.com and chat.cove.example.com share .cove.example.com.
Empty (the cookie stays on its host) when the faces share no such domain or have no hosts. */}}
{{- define "cove.sessionDomain" -}}
{{- if .Values.auth.sessionDomain -}}
{{- .Values.auth.sessionDomain -}}
{{- else if .Values.ingress.enabled -}}
{{- $hosts := list -}}
{{- range $face, $host := .Values.ingress.hosts }}{{ if $host }}{{ $hosts = append $hosts $host }}{{ end }}{{ end -}}
{{- if gt (len $hosts) 1 -}}
{{- $labels := splitList "." (first $hosts) -}}
{{- $found := "" -}}
{{- range $i, $_ := $labels -}}
{{- $candidate := join "." (slice $labels $i) -}}
{{- if and (not $found) (ge (sub (len $labels) $i) 2) -}}
{{- $all := true -}}
{{- range $hosts }}{{ if not (or (eq . $candidate) (hasSuffix (printf ".%s" $candidate) .)) }}{{ $all = false }}{{ end }}{{ end -}}
{{- if $all }}{{ $found = $candidate }}{{ end -}}
{{- end -}}
{{- end -}}
{{- with $found }}{{ printf ".%s" . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The environment every face shares for logins: the auth ConfigMap, and the provider's client secret. */}}
{{- define "cove.authEnvFrom" -}}
- configMapRef:
    name: {{ include "cove.fullname" . }}-auth
{{- end -}}

{{- define "cove.oidcSecretEnv" -}}
{{- with .Values.auth.oidc }}
{{- if and .issuer (or .clientSecret .existingSecret) }}
- name: COVE_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | default (printf "%s-oidc" (include "cove.fullname" $)) }}
      key: client-secret
{{- end }}
{{- end }}
{{- end -}}

{{/* The egress rule "anywhere but networkPolicy.deniedEgressCidrs", as one rule with an ipBlock per address family
(an ipBlock's except must lie inside its cidr, so IPv6 addresses go under ::/0 and IPv4 under 0.0.0.0/0). */}}
{{- define "cove.egressAnywhereBut" -}}
{{- $v4 := list -}}
{{- $v6 := list -}}
{{- range .Values.networkPolicy.deniedEgressCidrs -}}
{{- if contains ":" . }}{{ $v6 = append $v6 . }}{{ else }}{{ $v4 = append $v4 . }}{{ end -}}
{{- end -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        {{- with $v4 }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    - ipBlock:
        cidr: ::/0
        {{- with $v6 }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
{{- end -}}
