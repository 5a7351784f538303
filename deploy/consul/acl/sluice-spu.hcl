# Consul ACL policy of sluice-spu. Create it with
#   consul acl policy create -name sluice-spu -rules @sluice-spu.hcl
#   consul acl token create -description "sluice-spu on $(hostname)" -policy-name sluice-spu
# and give the token's SecretID to the SPU (SLUICE_SPU_CONSUL_TOKEN in /etc/sluice/spu.env).
# An SPU never touches the metadata keys: this token cannot read or write them.
# Tested against an agent with default-deny ACLs (cli/tests/deploy_consul.rs).

# Its own registration (service sluice-spu with the HTTP check on /health/ready).
service "sluice-spu" {
  policy = "write"
}

# `sc = "consul://AGENT/CLUSTER"`: the passing instances of sluice-sc-<cluster>.
service_prefix "sluice-sc-" {
  policy = "read"
}

# Health queries return only instances on nodes the token may read.
node_prefix "" {
  policy = "read"
}
