# Consul ACL policy of sluice-sc: what the SC needs and nothing more. Create it with
#   consul acl policy create -name sluice-sc -rules @sluice-sc.hcl
#   consul acl token create -description "sluice-sc on $(hostname)" -policy-name sluice-sc
# and give the token's SecretID to the SC (SLUICE_SC_CONSUL_TOKEN in /etc/sluice/sc.env).
# Tested against an agent with default-deny ACLs (cli/tests/deploy_consul.rs).

# The metadata: every object, the leadership lock and the fencing checks live under
# <consul_key_prefix>/<cluster>/ (prefix "sluice" by default). With another
# consul_key_prefix, change this line.
key_prefix "sluice/" {
  policy = "write"
}

# Leadership: sessions on the SC's own agent node (created, renewed, destroyed).
session_prefix "" {
  policy = "write"
}

# The SC's own service sluice-sc-<cluster> and its alive (TTL) check.
service_prefix "sluice-sc-" {
  policy = "write"
}

# Sessions and health checks name nodes.
node_prefix "" {
  policy = "read"
}
