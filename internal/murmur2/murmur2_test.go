package murmur2

import "testing"

// Vectors from Kafka's UtilsTest.testMurmur2.
func TestMurmur2MatchesKafka(t *testing.T) {
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for in, want := range cases {
		if got := Hash([]byte(in)); got != want {
			t.Errorf("Hash(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestKeyPartitionInRange(t *testing.T) {
	for _, n := range []int32{1, 3, 7, 1000} {
		for i := range 1000 {
			k := []byte{byte(i), byte(i >> 8), 0xff}
			if p := Partition(k, n); p < 0 || p >= n {
				t.Fatalf("Partition(%x, %d) = %d", k, n, p)
			}
		}
	}
}
