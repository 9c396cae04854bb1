# A private CA for the cluster, a server+peer certificate per node and one
# client certificate. The private keys are kept in the Terraform state and in
# SSM Parameter Store (SecureString): protect the state accordingly.

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 24 * 365 * 5
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]
  subject {
    common_name  = "${var.name} etcd CA"
    organization = "varve"
  }
}

resource "tls_private_key" "node" {
  count       = local.nodes
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "node" {
  count           = local.nodes
  private_key_pem = tls_private_key.node[count.index].private_key_pem
  dns_names       = [local.node_dns[count.index], "localhost"]
  ip_addresses    = [aws_network_interface.node[count.index].private_ip, "127.0.0.1"]
  subject {
    common_name = local.node_dns[count.index]
  }
}

resource "tls_locally_signed_cert" "node" {
  count                 = local.nodes
  cert_request_pem      = tls_cert_request.node[count.index].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365 * 2
  early_renewal_hours   = 24 * 30
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}

resource "tls_private_key" "client" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "client" {
  private_key_pem = tls_private_key.client.private_key_pem
  subject {
    common_name = "${var.name}-client"
  }
}

resource "tls_locally_signed_cert" "client" {
  cert_request_pem      = tls_cert_request.client.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365 * 2
  early_renewal_hours   = 24 * 30
  allowed_uses          = ["digital_signature", "key_encipherment", "client_auth"]
}

resource "aws_ssm_parameter" "ca" {
  name  = "/${var.name}/etcd/ca.pem"
  type  = "String"
  value = tls_self_signed_cert.ca.cert_pem
  tags  = var.tags
}

resource "aws_ssm_parameter" "node_cert" {
  count = local.nodes
  name  = "/${var.name}/etcd/node-${count.index}/cert.pem"
  type  = "String"
  value = tls_locally_signed_cert.node[count.index].cert_pem
  tags  = var.tags
}

resource "aws_ssm_parameter" "node_key" {
  count = local.nodes
  name  = "/${var.name}/etcd/node-${count.index}/key.pem"
  type  = "SecureString"
  value = tls_private_key.node[count.index].private_key_pem
  tags  = var.tags
}

resource "aws_ssm_parameter" "client_cert" {
  name  = "/${var.name}/etcd/client/cert.pem"
  type  = "String"
  value = tls_locally_signed_cert.client.cert_pem
  tags  = var.tags
}

resource "aws_ssm_parameter" "client_key" {
  name  = "/${var.name}/etcd/client/key.pem"
  type  = "SecureString"
  value = tls_private_key.client.private_key_pem
  tags  = var.tags
}
