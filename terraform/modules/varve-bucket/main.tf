locals {
  # "" or "prefix/" — object keys Varve writes start with it.
  key_prefix = var.prefix == "" ? "" : "${var.prefix}/"
  role_name  = coalesce(var.role_name, "${var.bucket_name}-varve")
}

resource "aws_s3_bucket" "this" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

# Segment objects are immutable and written once (If-None-Match), so
# versioning would only keep deleted segments around and cost money.
resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }
}

# Refuse plain-HTTP access.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

# Exactly what Varve does on the bucket:
#   PutObject with If-None-Match  -> s3:PutObject
#   GetObject with Range, HeadObject -> s3:GetObject (HEAD needs no other action)
#   ListObjectsV2                 -> s3:ListBucket (on the bucket)
#   DeleteObject                  -> s3:DeleteObject
# ListBucket is not narrowed with an s3:prefix condition: S3 answers a GET or
# HEAD of a missing key with 404 only to callers allowed to list the bucket,
# and a conditional grant does not count there, so missing objects would look
# like 403 (access denied) to Varve. Object access is limited to the prefix.
data "aws_iam_policy_document" "varve" {
  statement {
    sid       = "ListSegments"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]
  }
  statement {
    sid       = "ReadWriteDeleteSegments"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.this.arn}/${local.key_prefix}*"]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "varve" {
  name        = "${var.bucket_name}-varve-s3"
  description = "Varve's access to s3://${var.bucket_name}/${local.key_prefix}"
  policy      = data.aws_iam_policy_document.varve.json
  tags        = var.tags
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = var.role_trusted_services
    }
  }
}

resource "aws_iam_role" "varve" {
  count              = var.create_role ? 1 : 0
  name               = local.role_name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "varve" {
  count      = var.create_role ? 1 : 0
  role       = aws_iam_role.varve[0].name
  policy_arn = aws_iam_policy.varve.arn
}
