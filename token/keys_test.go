package token

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeScopes(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr error
	}{
		{nil, nil, nil},
		{[]string{"a"}, []string{"a"}, nil},
		{[]string{"b", "a", "b", ""}, []string{"a", "b"}, nil},
		{[]string{"account.asset.manage", "asset.view"}, []string{"account.asset.manage", "asset.view"}, nil},
		{[]string{"a", "b c"}, nil, ErrInvalidScope},
		{[]string{`a\b`}, nil, ErrInvalidScope},
		{[]string{"é"}, nil, ErrInvalidScope},
	}
	for _, tt := range tests {
		got, err := normalizeScopes(tt.in)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("normalizeScopes(%q) err = %v, want %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("normalizeScopes(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestTruncateKeepsUTF8Whole(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc..."},
		{"aéé", 2, "a..."}, // byte 2 is inside the first é
		{"aéé", 3, "aé..."},
	}
	for _, tt := range tests {
		if got := truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestSleepCtx(t *testing.T) {
	if err := sleepCtx(t.Context(), 0); err != nil {
		t.Errorf("zero sleep: %v", err)
	}
	if err := sleepCtx(t.Context(), time.Microsecond); err != nil {
		t.Errorf("short sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// An hour-long sleep must end with the context, not after the hour.
	if err := sleepCtx(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled sleep: err = %v, want context.Canceled", err)
	}
}
