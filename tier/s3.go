package tier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DefaultRegion is the region used when neither S3Config nor the environment
// names one.
const DefaultRegion = "us-east-1"

// S3Config says where an S3 store keeps its objects and how to reach them.
type S3Config struct {
	// Bucket holds the objects; it must already exist.
	Bucket string
	// Prefix is prepended to every key (followed by "/"), so that several
	// clusters can share a bucket. Empty means the bucket's root; otherwise,
	// once stripped of leading and trailing slashes, it must be a valid key.
	Prefix string
	// Endpoint is the base URL of an S3-compatible service (MinIO, R2, ...).
	// Empty means AWS S3.
	Endpoint string
	// Region defaults to the environment's (AWS_REGION, shared config), else
	// DefaultRegion.
	Region string
	// PathStyle addresses buckets as endpoint/bucket instead of
	// bucket.endpoint, as most S3-compatible services need.
	PathStyle bool
	// AccessKey and SecretKey are static credentials. Without AccessKey the
	// standard AWS credential chain is used (environment, shared files, IAM
	// roles, ...).
	AccessKey, SecretKey string
}

// S3 is a Store backed by an S3 bucket (AWS S3 or any S3-compatible service)
// through aws-sdk-go-v2. PutIfAbsent is a conditional PutObject
// (If-None-Match: *).
type S3 struct {
	client *s3.Client
	bucket string
	prefix string // empty or ending in "/"
}

var _ Store = (*S3)(nil)

// putConflictRetries bounds how often PutIfAbsent retries a PutObject that S3
// refused with 409 ConditionalRequestConflict (a concurrent write to the same
// key still in flight); the retry then succeeds or finds the key taken.
const putConflictRetries = 5

// NewS3 returns a store for c.Bucket. It loads credentials and region but
// does not contact the service.
func NewS3(ctx context.Context, c S3Config) (*S3, error) {
	if c.Bucket == "" {
		return nil, errors.New("s3 store: no bucket")
	}
	prefix := strings.Trim(c.Prefix, "/")
	if prefix != "" {
		if err := ValidateKey(prefix); err != nil {
			return nil, fmt.Errorf("s3 store %s: prefix: %w", c.Bucket, err)
		}
		prefix += "/"
	}
	var opts []func(*config.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: load aws config: %w", c.Bucket, err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = c.PathStyle
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
			// S3-compatible services do not all support the flexible
			// checksums the SDK now sends by default.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	})
	return &S3{client: client, bucket: c.Bucket, prefix: prefix}, nil
}

// object validates key and returns the object key in the bucket.
func (s *S3) object(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// PutIfAbsent implements Store. If the SDK retried the request after a lost
// response, ErrExists may mean that an earlier attempt of this same call
// stored the object.
func (s *S3) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	obj, err := s.object(key)
	if err != nil {
		return fmt.Errorf("s3 put: %w", err)
	}
	for attempt := 0; ; attempt++ {
		_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(obj),
			Body:          bytes.NewReader(data),
			ContentLength: aws.Int64(int64(len(data))),
			IfNoneMatch:   aws.String("*"),
		})
		code, status := apiError(err)
		switch {
		case err == nil:
			return nil
		case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
			return fmt.Errorf("s3 put %s/%s: %w", s.bucket, obj, ErrExists)
		case code == "ConditionalRequestConflict" && attempt < putConflictRetries:
			// Another write to the key is in flight and may yet fail, so
			// this is not ErrExists: retry until S3 can say. If it never
			// can, the error below is a plain (retriable) failure.
			if err := sleep(ctx, time.Duration(50<<attempt)*time.Millisecond); err != nil {
				return fmt.Errorf("s3 put %s/%s: %w", s.bucket, obj, err)
			}
		default:
			return fmt.Errorf("s3 put %s/%s: %w", s.bucket, obj, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// GetRange implements Store.
func (s *S3) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, fmt.Errorf("s3 get: %w", err)
	}
	if off < 0 {
		return nil, fmt.Errorf("s3 get %s/%s bytes %d+%d: %w", s.bucket, obj, off, length, ErrInvalidRange)
	}
	// S3 has no empty byte range: check the size instead.
	if length == 0 {
		return s.emptyRange(ctx, key, off, length)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(obj)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+length-1))
	case off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		code, status := apiError(err)
		switch {
		case status == http.StatusRequestedRangeNotSatisfiable || code == "InvalidRange":
			if length < 0 {
				// "bytes=size-" is unsatisfiable but reading from the end
				// of the object to its end is an empty read.
				return s.emptyRange(ctx, key, off, length)
			}
			return nil, fmt.Errorf("s3 get %s/%s bytes %d+%d: %w", s.bucket, obj, off, length, ErrInvalidRange)
		case isNotFound(code, status):
			return nil, fmt.Errorf("s3 get %s/%s: %w", s.bucket, obj, ErrNotFound)
		}
		return nil, fmt.Errorf("s3 get %s/%s bytes %d+%d: %w", s.bucket, obj, off, length, err)
	}
	defer out.Body.Close()
	var buf bytes.Buffer
	if n := aws.ToInt64(out.ContentLength); n > 0 {
		buf.Grow(int(n))
	}
	if _, err := io.Copy(&buf, out.Body); err != nil {
		return nil, fmt.Errorf("s3 get %s/%s bytes %d+%d: %w", s.bucket, obj, off, length, err)
	}
	// S3 shortens a range that runs past the end instead of refusing it.
	if length > 0 && int64(buf.Len()) != length {
		return nil, fmt.Errorf("s3 get %s/%s bytes %d+%d: got %d bytes: %w", s.bucket, obj, off, length, buf.Len(), ErrInvalidRange)
	}
	return buf.Bytes(), nil
}

// emptyRange serves a read that can only be empty or invalid: off must be the
// object's size (or less, for length 0).
func (s *S3) emptyRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	info, err := s.Head(ctx, key)
	if err != nil {
		return nil, err
	}
	if off > info.Size || (length < 0 && off != info.Size) {
		return nil, fmt.Errorf("s3 get %s/%s bytes %d+%d of %d: %w", s.bucket, s.prefix+key, off, length, info.Size, ErrInvalidRange)
	}
	return []byte{}, nil
}

// Head implements Store.
func (s *S3) Head(ctx context.Context, key string) (ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("s3 head: %w", err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(obj)})
	if err != nil {
		if isNotFound(apiError(err)) {
			return ObjectInfo{}, fmt.Errorf("s3 head %s/%s: %w", s.bucket, obj, ErrNotFound)
		}
		return ObjectInfo{}, fmt.Errorf("s3 head %s/%s: %w", s.bucket, obj, err)
	}
	return ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified)}, nil
}

// List implements Store. S3 lists keys in UTF-8 binary order, which is
// lexicographic byte order.
func (s *S3) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if !couldPrefixKey(prefix) {
		// No key can match; still fail on a cancelled context, like a request.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("s3 list %s/%s: %w", s.bucket, s.prefix+prefix, err)
		}
		return nil
	}
	// MinIO refuses a prefix ending in a "." or ".." segment (as in "a/.",
	// the start of "a/.x"): list from the segment's start and filter.
	query := prefix
	if i := strings.LastIndexByte(prefix, '/') + 1; prefix[i:] == "." || prefix[i:] == ".." {
		query = prefix[:i]
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + query),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3 list %s/%s: %w", s.bucket, s.prefix+prefix, err)
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			info := ObjectInfo{
				Key:      key,
				Size:     aws.ToInt64(o.Size),
				Modified: aws.ToTime(o.LastModified),
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return fmt.Errorf("s3 delete: %w", err)
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(obj)})
	if err != nil {
		code, status := apiError(err)
		if code == "NoSuchKey" || (status == http.StatusNotFound && code != "NoSuchBucket") {
			return nil
		}
		return fmt.Errorf("s3 delete %s/%s: %w", s.bucket, obj, err)
	}
	return nil
}

// apiError returns the S3 error code and HTTP status of err, if it carries
// them.
func apiError(err error) (code string, status int) {
	if err == nil {
		return "", 0
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// isNotFound reports whether an error is a missing object (not a missing
// bucket, which is a configuration error).
func isNotFound(code string, status int) bool {
	if code == "NoSuchBucket" {
		return false
	}
	return code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound
}
