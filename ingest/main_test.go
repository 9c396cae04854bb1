package ingest_test

import (
	"os"
	"testing"

	"github.com/varve-io/varve/internal/testenv"
)

// TestMain stops the MinIO server the tests may start (testenv.MinIO).
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
