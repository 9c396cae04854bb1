package tier_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/tier"
)

// processCPU is this process's CPU time (user and system) so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkS3PutCPU: the client side of one small segment PUT to MinIO
// (aws-sdk-go-v2 and net/http), reported as this process's CPU per PUT
// (cpu-µs/op; MinIO runs in its own process). An ingest node pays it every
// tick it holds records, whatever their size (docs/metadata.md, "Producer
// placement").
func BenchmarkS3PutCPU(b *testing.B) {
	minio := testenv.MinIO(b)
	s, err := tier.NewS3(b.Context(), minio.S3Config(minio.NewBucket(b)))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 2048)
	for i := range 20 { // connections and credentials
		if err := s.PutIfAbsent(b.Context(), fmt.Sprintf("warm/%d", i), data); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := processCPU()
	for i := 0; b.Loop(); i++ {
		if err := s.PutIfAbsent(b.Context(), fmt.Sprintf("put/%d/%d", b.N, i), data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}
