# Consul ACL policy of clients that find the SC through Consul (`sluice --sc
# consul://AGENT/CLUSTER`, sluice-perf, the SDK), read from CONSUL_HTTP_TOKEN. Create it with
#   consul acl policy create -name sluice-client -rules @sluice-client.hcl
# Read-only: the SC services and the nodes they run on.

service_prefix "sluice-sc-" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
