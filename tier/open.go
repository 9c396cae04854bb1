package tier

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Open returns the store a spec names:
//
//	fs:DIR or file://DIR   a local directory (NewFS)
//	s3://BUCKET[/PREFIX]   an S3 bucket (NewS3); the bucket and prefix come
//	                       from the spec, everything else from s3
func Open(ctx context.Context, spec string, s3 S3Config) (Store, error) {
	if dir, ok := strings.CutPrefix(spec, "fs:"); ok {
		return openFS(spec, dir)
	}
	if dir, ok := strings.CutPrefix(spec, "file://"); ok {
		return openFS(spec, dir)
	}
	if strings.HasPrefix(spec, "s3://") {
		u, err := url.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("open store %q: %w", spec, err)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("open store %q: no bucket (want s3://bucket[/prefix])", spec)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("open store %q: only s3://bucket[/prefix] is understood; set credentials and endpoint separately", spec)
		}
		s3.Bucket = u.Host
		s3.Prefix = strings.Trim(u.Path, "/")
		st, err := NewS3(ctx, s3)
		if err != nil {
			return nil, fmt.Errorf("open store %q: %w", spec, err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("open store %q: unknown scheme (want fs:DIR, file://DIR or s3://bucket[/prefix])", spec)
}

func openFS(spec, dir string) (Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("open store %q: no directory", spec)
	}
	st, err := NewFS(dir)
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", spec, err)
	}
	return st, nil
}
