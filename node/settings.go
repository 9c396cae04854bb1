package node

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting is the one declaration of a node setting: its name and where it
// lives in Config, its default, its help and its validation. The file key
// is Name (flush_bytes), the flag Flag() (--flush-bytes) and the
// environment variable Env() (VARVE_FLUSH_BYTES). A zero value stands for
// the default.
type Setting struct {
	// Name is the file key.
	Name string
	// Help is one line for --help and the README.
	Help string
	// Type names the values accepted: string, strings (comma-separated),
	// bool, int, bytes (an integer, or with KiB, MiB, GiB), duration (Go
	// syntax: 250ms, 1m30s).
	Type string

	defaultDoc string
	required   bool
	off        bool

	parse      func(c *Config, v string) error
	format     func(c *Config) string
	isZero     func(c *Config) bool
	setDefault func(c *Config)
	copyFrom   func(dst, src *Config)
	check      func(c *Config) error
}

// Flag is the setting's flag name, without dashes in front.
func (s Setting) Flag() string { return strings.ReplaceAll(s.Name, "_", "-") }

// Env is the setting's environment variable.
func (s Setting) Env() string { return "VARVE_" + strings.ToUpper(s.Name) }

// Set parses v (as written in a flag, a variable or the file) into c and
// checks it. Errors do not repeat the setting's name: callers say where the
// value came from.
func (s Setting) Set(c *Config, v string) error {
	if err := s.parse(c, strings.TrimSpace(v)); err != nil {
		return err
	}
	if !s.isZero(c) && s.check != nil {
		if err := s.check(c); err != nil {
			return fmt.Errorf("%s %w", s.format(c), err)
		}
	}
	return nil
}

// CopyFrom sets the setting in dst to its value in src.
func (s Setting) CopyFrom(dst, src *Config) { s.copyFrom(dst, src) }

// Get formats the setting's value in c, in the syntax Set accepts.
func (s Setting) Get(c *Config) string { return s.format(c) }

// Default is the default value in the syntax Set accepts ("" when none).
func (s Setting) Default() string {
	var c Config
	s.setDefault(&c)
	return s.format(&c)
}

// DefaultDoc is the default as the README shows it.
func (s Setting) DefaultDoc() string {
	switch {
	case s.defaultDoc != "":
		return s.defaultDoc
	case s.Default() != "":
		return "`" + s.Default() + "`"
	case s.required:
		return "required (`serve`)"
	}
	return "empty"
}

// validate checks the value in c; zero stands for the default.
func (s Setting) validate(c *Config) error {
	if s.isZero(c) {
		if s.required {
			return fmt.Errorf("%s is not set (flag --%s, variable %s, file key %s)", s.Name, s.Flag(), s.Env(), s.Name)
		}
		return nil
	}
	if s.check != nil {
		if err := s.check(c); err != nil {
			return fmt.Errorf("%s %s %w", s.Name, s.format(c), err)
		}
	}
	return nil
}

func (s Setting) doc(d string) Setting { s.defaultDoc = d; return s }
func (s Setting) require() Setting     { s.required = true; return s }

// declare builds a Setting of a value type T from its parser and printer.
func declare[T any](name string, field func(*Config) *T, def T, help, typ string,
	parse func(string) (T, error), format func(T) string, zero func(T) bool, check func(T) error) Setting {
	s := Setting{Name: name, Help: help, Type: typ}
	s.parse = func(c *Config, v string) error {
		x, err := parse(v)
		if err != nil {
			return err
		}
		*field(c) = x
		return nil
	}
	s.format = func(c *Config) string { return format(*field(c)) }
	s.isZero = func(c *Config) bool { return zero(*field(c)) }
	s.setDefault = func(c *Config) { *field(c) = def }
	s.copyFrom = func(dst, src *Config) { *field(dst) = *field(src) }
	if check != nil {
		s.check = func(c *Config) error { return check(*field(c)) }
	}
	return s
}

func isZero[T comparable](v T) bool { var z T; return v == z }

func str(name string, field func(*Config) *string, def, help string, check func(string) error) Setting {
	return declare(name, field, def, help, "string",
		func(v string) (string, error) { return v, nil },
		func(v string) string { return v }, isZero[string], check)
}

func strs(name string, field func(*Config) *[]string, def []string, help string, check func([]string) error) Setting {
	s := declare(name, field, def, help, "strings",
		func(v string) ([]string, error) {
			var out []string
			for p := range strings.SplitSeq(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
			return out, nil
		},
		func(v []string) string { return strings.Join(v, ",") },
		func(v []string) bool { return len(v) == 0 }, check)
	s.setDefault = func(c *Config) { *field(c) = slices.Clone(def) }
	return s
}

func boolean(name string, field func(*Config) *bool, help string) Setting {
	return declare(name, field, false, help, "bool", strconv.ParseBool, strconv.FormatBool, isZero[bool], nil)
}

func integer(name string, field func(*Config) *int, def int, help string, check func(int) error) Setting {
	return declare(name, field, def, help, "int",
		func(v string) (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("%q is not an integer", v)
			}
			return n, notNegative(v, n)
		},
		strconv.Itoa, isZero[int], check)
}

func bytesInt(name string, field func(*Config) *int, def int, help string, check func(int) error) Setting {
	return declare(name, field, def, help, "bytes",
		func(v string) (int, error) { n, err := parseBytes(v); return int(n), err },
		func(v int) string { return formatBytes(int64(v)) }, isZero[int], check)
}

func bytes64(name string, field func(*Config) *int64, def int64, help string, check func(int64) error) Setting {
	return declare(name, field, def, help, "bytes", parseBytes, formatBytes, isZero[int64], check)
}

// OffBytes is a byte size setting turned off (writer_cache_bytes).
const OffBytes int64 = -1

// bytes64OrOff declares a byte size that the value off (OffBytes) turns
// off.
func bytes64OrOff(name string, field func(*Config) *int64, def int64, help string) Setting {
	s := declare(name, field, def, help, "bytes",
		func(v string) (int64, error) {
			if v == "off" {
				return OffBytes, nil
			}
			n, err := parseBytes(v)
			if err != nil {
				return 0, err
			}
			return n, notNegative(v, n)
		},
		func(n int64) string {
			if n == OffBytes {
				return "off"
			}
			return formatBytes(n)
		}, isZero[int64],
		func(n int64) error {
			if n == OffBytes {
				return nil
			}
			return nonNegative(n)
		})
	s.off = true
	return s
}

func duration(name string, field func(*Config) *time.Duration, def time.Duration, help string, check func(time.Duration) error) Setting {
	return durationSetting(false, name, field, def, help, check)
}

// durationOrOff declares a duration that the value off (Off) turns off.
func durationOrOff(name string, field func(*Config) *time.Duration, def time.Duration, help string, check func(time.Duration) error) Setting {
	return durationSetting(true, name, field, def, help, check)
}

func durationSetting(off bool, name string, field func(*Config) *time.Duration, def time.Duration, help string, check func(time.Duration) error) Setting {
	s := declare(name, field, def, help, "duration",
		func(v string) (time.Duration, error) {
			if v == "off" {
				if !off {
					return 0, fmt.Errorf("cannot be off; give a duration (0: the default)")
				}
				return Off, nil
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				return 0, fmt.Errorf("%q is not a duration (examples: 250ms, 30s, 5m, 24h)", v)
			}
			return d, notNegative(v, d)
		},
		formatDuration, isZero[time.Duration],
		func(d time.Duration) error {
			if d == Off && off {
				return nil
			}
			if err := nonNegative(d); err != nil {
				return err
			}
			if check != nil {
				return check(d)
			}
			return nil
		})
	s.off = off
	return s
}

// notNegative is nonNegative naming the value as given.
func notNegative[T cmp.Ordered](v string, n T) error {
	if err := nonNegative(n); err != nil {
		return fmt.Errorf("%s %w", v, err)
	}
	return nil
}

func nonNegative[T cmp.Ordered](v T) error {
	var z T
	if v < z {
		return fmt.Errorf("must not be negative (0: the default)")
	}
	return nil
}

func atLeast[T cmp.Ordered](lo T) func(T) error { return atLeastWhy(lo, "") }

func atLeastWhy[T cmp.Ordered](lo T, why string) func(T) error {
	return func(v T) error {
		if err := nonNegative(v); err != nil {
			return err
		}
		if v < lo {
			s := show(lo)
			if why != "" {
				return fmt.Errorf("is below %s (%s)", s, why)
			}
			return fmt.Errorf("is below %s", s)
		}
		return nil
	}
}

// between refuses values outside [lo, hi] (0 stays the default).
func between[T cmp.Ordered](lo, hi T) func(T) error {
	return func(v T) error {
		if err := atLeast(lo)(v); err != nil {
			return err
		}
		if v > hi {
			return fmt.Errorf("is above %s", show(hi))
		}
		return nil
	}
}

// show prints a bound the way the setting is written.
func show[T cmp.Ordered](v T) string {
	switch x := any(v).(type) {
	case time.Duration:
		return formatDuration(x)
	case int64:
		return formatBytes(x)
	}
	return fmt.Sprint(v)
}

func oneOf(valid ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(valid, v) {
			return fmt.Errorf("must be one of %s", strings.Join(valid, ", "))
		}
		return nil
	}
}

func eachOneOf(valid ...string) func([]string) error {
	return func(vs []string) error {
		for _, v := range vs {
			if !slices.Contains(valid, v) {
				return fmt.Errorf("has unknown %q; use %s or a list of them", v, strings.Join(valid, ", "))
			}
		}
		return nil
	}
}

var byteUnits = []struct {
	suffix string
	n      int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// parseBytes reads 1048576, 1024KiB, 1MiB or 1GiB.
func parseBytes(v string) (int64, error) {
	mul := int64(1)
	num := v
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			mul, num = u.n, strings.TrimSpace(n)
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size in bytes (examples: 1048576, 512KiB, 8MiB, 4GiB)", v)
	}
	if n > (1<<62)/mul {
		return 0, fmt.Errorf("%q is too large", v)
	}
	return n * mul, notNegative(v, n)
}

func formatBytes(n int64) string {
	for _, u := range byteUnits {
		if n != 0 && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// formatDuration prints 1m instead of 1m0s; 0 prints as empty (the
// default) and Off as off.
func formatDuration(d time.Duration) string {
	switch d {
	case 0:
		return ""
	case Off:
		return "off"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
