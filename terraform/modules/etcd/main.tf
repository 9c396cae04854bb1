data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_subnet" "node" {
  count = local.nodes
  id    = var.subnet_ids[count.index]
}

data "aws_ssm_parameter" "ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  nodes     = length(var.subnet_ids)
  zone_name = "${var.name}.etcd.internal"
  node_dns  = [for i in range(local.nodes) : "node-${i}.${local.zone_name}"]
  scheme    = var.client_tls ? "https" : "http"

  client_endpoints = [for d in local.node_dns : "${local.scheme}://${d}:2379"]
  initial_cluster  = join(",", [for i, d in local.node_dns : "node-${i}=https://${d}:2380"])

  snapshot_bucket = coalesce(var.snapshot_bucket_name, "${var.name}-etcd-snapshots-${data.aws_caller_identity.current.account_id}")
  etcd_arch       = var.architecture == "arm64" ? "arm64" : "amd64"
  tags            = merge(var.tags, { "varve:etcd-cluster" = var.name })
}

# ---- DNS: stable names for the members, whatever instance runs them.

resource "aws_route53_zone" "this" {
  name    = local.zone_name
  comment = "etcd members of ${var.name}"
  vpc {
    vpc_id = var.vpc_id
  }
  tags = local.tags
}

resource "aws_route53_record" "node" {
  count   = local.nodes
  zone_id = aws_route53_zone.this.zone_id
  name    = local.node_dns[count.index]
  type    = "A"
  ttl     = 30
  records = [aws_network_interface.node[count.index].private_ip]
}

# ---- Per node: a fixed network interface and a persistent volume that the
# ---- auto scaling group's (single) instance attaches at boot.

resource "aws_network_interface" "node" {
  count           = local.nodes
  subnet_id       = var.subnet_ids[count.index]
  security_groups = [aws_security_group.etcd.id]
  description     = "${var.name} etcd node-${count.index}"
  tags            = merge(local.tags, { Name = "${var.name}-etcd-${count.index}" })
}

resource "aws_ebs_volume" "node" {
  count             = local.nodes
  availability_zone = data.aws_subnet.node[count.index].availability_zone
  size              = var.volume_size_gb
  type              = "gp3"
  encrypted         = true
  tags              = merge(local.tags, { Name = "${var.name}-etcd-${count.index}" })
}

# ---- Security groups

resource "aws_security_group" "etcd" {
  name_prefix = "${var.name}-etcd-"
  description = "etcd members of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

# Attach this group to anything that talks to etcd (Varve tasks).
resource "aws_security_group" "client" {
  name_prefix = "${var.name}-etcd-client-"
  description = "Clients of the ${var.name} etcd cluster"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "peers" {
  security_group_id            = aws_security_group.etcd.id
  referenced_security_group_id = aws_security_group.etcd.id
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2380
  description                  = "etcd peers and members' own clients"
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id            = aws_security_group.etcd.id
  referenced_security_group_id = aws_security_group.client.id
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2379
  description                  = "etcd clients"
}

resource "aws_vpc_security_group_ingress_rule" "client_cidrs" {
  for_each          = toset(var.allowed_client_cidr_blocks)
  security_group_id = aws_security_group.etcd.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 2379
  to_port           = 2379
  description       = "etcd clients from ${each.value}"
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.etcd.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "packages, S3, SSM, peers"
}

# ---- Snapshots

resource "aws_s3_bucket" "snapshots" {
  bucket = local.snapshot_bucket
  tags   = local.tags
}

resource "aws_s3_bucket_versioning" "snapshots" {
  bucket = aws_s3_bucket.snapshots.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "snapshots" {
  bucket                  = aws_s3_bucket.snapshots.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "snapshots" {
  bucket = aws_s3_bucket.snapshots.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "snapshots" {
  bucket = aws_s3_bucket.snapshots.id
  rule {
    id     = "expire-snapshots"
    status = "Enabled"
    filter {}
    expiration {
      days = var.snapshot_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# ---- Instance role: attach its ENI and volume, read its certificates,
# ---- write snapshots, be reachable through SSM Session Manager.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "node" {
  statement {
    # The member's interface and volume, and the instance itself, all carry
    # the varve:etcd-cluster tag (the group propagates it at launch).
    sid       = "AttachOwnInterfaceAndVolume"
    actions   = ["ec2:AttachNetworkInterface", "ec2:AttachVolume"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/varve:etcd-cluster"
      values   = [var.name]
    }
  }
  statement {
    sid       = "Describe"
    actions   = ["ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }
  statement {
    sid       = "ReadCertificates"
    actions   = ["ssm:GetParameter"]
    resources = ["arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter/${var.name}/etcd/*"]
  }
  statement {
    sid       = "WriteSnapshots"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.snapshots.arn}/snapshots/*"]
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${var.name}-etcd-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "node" {
  name   = "etcd-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name_prefix = "${var.name}-etcd-"
  role        = aws_iam_role.node.name
  tags        = local.tags
}

# ---- One auto scaling group of exactly one instance per member: a failed
# ---- instance is replaced in the same subnet and takes over the member's
# ---- interface (same IP and name) and data volume.

resource "aws_launch_template" "node" {
  count         = local.nodes
  name_prefix   = "${var.name}-etcd-${count.index}-"
  image_id      = data.aws_ssm_parameter.ami.value
  instance_type = var.instance_type

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }
  vpc_security_group_ids = [aws_security_group.etcd.id]

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 20
      volume_type = "gp3"
      encrypted   = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    name              = var.name
    index             = count.index
    region            = data.aws_region.current.name
    member_name       = "node-${count.index}"
    member_dns        = local.node_dns[count.index]
    initial_cluster   = local.initial_cluster
    eni_id            = aws_network_interface.node[count.index].id
    volume_id         = aws_ebs_volume.node[count.index].id
    etcd_version      = var.etcd_version
    etcd_arch         = local.etcd_arch
    etcd_sha256       = var.etcd_sha256 == null ? "" : var.etcd_sha256
    client_scheme     = local.scheme
    client_tls        = var.client_tls
    snapshot_bucket   = aws_s3_bucket.snapshots.bucket
    snapshot_schedule = var.snapshot_schedule
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-etcd-${count.index}" })
  }
  tags = local.tags
}

resource "aws_autoscaling_group" "node" {
  count               = local.nodes
  name_prefix         = "${var.name}-etcd-${count.index}-"
  min_size            = 1
  max_size            = 1
  desired_capacity    = 1
  vpc_zone_identifier = [var.subnet_ids[count.index]]
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.node[count.index].id
    version = aws_launch_template.node[count.index].latest_version
  }

  # No instance_refresh: a new launch template would refresh all members at
  # once and lose the quorum. Roll members one at a time (see README).

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${var.name}-etcd-${count.index}" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  depends_on = [aws_route53_record.node, aws_ssm_parameter.node_cert, aws_ssm_parameter.node_key, aws_ssm_parameter.ca]
}
