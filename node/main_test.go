package node_test

import (
	"os"
	"testing"

	"github.com/varve-io/varve/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
