package defaults

import "cmp"

// Positive sets *v to def unless *v is above zero.
func Positive[T cmp.Ordered](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}

// Zero sets *v to def if *v is the zero value.
func Zero[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
