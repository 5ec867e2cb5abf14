{{- define "parley-operator.labels" -}}
app.kubernetes.io/name: parley-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "parley-operator.selector" -}}
app.kubernetes.io/name: parley-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- /*
What the operator does to the objects of a namespace it reconciles, and nothing more (see
operator/src/controller): it watches ChatClusters, ChatShards, the workloads it owns and the
chat-node pods; it writes everything else by server-side apply (patch) or create. It reads
the Secrets a ChatCluster or ChatShard names, by name (get), creates the generated ones and
applies the shard map's; it never lists or watches Secrets. It deletes nothing (owner
references let the garbage collector do that). The Role it gives the chat-nodes
(chatclusters get/list/watch) is a subset of this, as RBAC requires of who grants it.
*/ -}}
{{- define "parley-operator.namespacedRules" -}}
- apiGroups: [parley.dev]
  resources: [chatclusters, chatshards]
  verbs: [get, list, watch]
- apiGroups: [parley.dev]
  resources: [chatclusters/status, chatshards/status]
  verbs: [get, patch]
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services, configmaps, serviceaccounts]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, create, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
