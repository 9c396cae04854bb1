package tier_test

// The tests of package tier are an external test package: they use
// internal/testenv, which imports tier.

import (
	"os"
	"testing"

	"github.com/varve-io/varve/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
