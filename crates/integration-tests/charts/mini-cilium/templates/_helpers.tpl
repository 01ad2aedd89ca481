{{- /* Written for cmesh's tests from the documented behaviour of the Cilium chart; not Cilium's. */ -}}
{{- define "mini.kvstoremesh" -}}
{{- $cm := .Values.clustermesh | default dict -}}
{{- $api := $cm.apiserver | default dict -}}
{{- $kv := $api.kvstoremesh | default dict -}}
{{- if and $cm.useAPIServer $kv.enabled }}true{{ end -}}
{{- end -}}

{{- define "mini.peerConfig" -}}
{{- $peer := index . 0 -}}
{{- $domain := index . 1 -}}
{{- $override := index . 2 -}}
endpoints:
{{- if $override }}
- {{ $override }}
{{- else if $peer.ips }}
- https://{{ $peer.name }}.{{ $domain }}:{{ $peer.port }}
{{- else }}
- https://{{ $peer.address }}:{{ $peer.port }}
{{- end }}
trusted-ca-file: /var/lib/cilium/clustermesh/common-etcd-client-ca.crt
key-file: /var/lib/cilium/clustermesh/common-etcd-client.key
cert-file: /var/lib/cilium/clustermesh/common-etcd-client.crt
{{- end -}}
