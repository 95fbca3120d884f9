package boxlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	boxlite "github.com/boxlite/boxlite/sdks/go"
)

// The tests boot real boxes: they need the guest assets and helpers (run-tests.sh
// sets them from the repository's layout). Without them they fail, saying so.

var scratch string // removed at the end

func TestMain(m *testing.M) {
	if os.Getenv("BOXLITE_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "boxlite Go SDK tests: BOXLITE_ASSETS is not set. These tests boot boxes: "+
			"run them with sdks/go/run-tests.sh (or set BOXLITE_ASSETS, BOXLITE_SHIM, BOXLITE_NET, "+
			"BOXLITE_NET_TEST_GUARD=1, BOXLITE_NET_DNS and CGO_LDFLAGS=-L<dir of libboxlite.a> as it does).")
		os.Exit(2)
	}
	var err error
	scratch, err = os.MkdirTemp("", "bxgo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// The example opens its runtime on the default home: make it a fresh one.
	exampleHome := filepath.Join(scratch, "example-home")
	os.Setenv("BOXLITE_HOME", exampleHome)
	code := m.Run()
	closeShared()
	os.RemoveAll(scratch)
	os.Exit(code)
}

// freshHome is a new home directory (short: unix socket paths live under it).
func freshHome(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(scratch, "h")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// One booted box shared by the tests where isolation is not what is tested: boots
// are slow under emulation.
var shared struct {
	once sync.Once
	home string
	rt   *boxlite.Runtime
	box  *boxlite.Box
	err  error
}

func sharedBox(t *testing.T) (*boxlite.Runtime, *boxlite.Box) {
	t.Helper()
	shared.once.Do(func() {
		home, err := os.MkdirTemp(scratch, "shared")
		if err != nil {
			shared.err = err
			return
		}
		shared.home = home
		rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(home))
		if err != nil {
			shared.err = fmt.Errorf("NewRuntime: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		box, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithName("shared"), boxlite.WithNetworkDisabled(),
			boxlite.WithEnv("BXGO_SHARED", "from the box's options"), boxlite.WithWorkdir("/tmp"))
		if err != nil {
			rt.Close()
			shared.err = fmt.Errorf("Create: %w", err)
			return
		}
		if err := box.Start(ctx); err != nil {
			rt.Close()
			shared.err = fmt.Errorf("Start: %w", err)
			return
		}
		shared.rt, shared.box = rt, box
	})
	if shared.err != nil {
		t.Fatalf("the shared box: %v", shared.err)
	}
	return shared.rt, shared.box
}

func closeShared() {
	if shared.rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = shared.box.Remove(ctx, true)
	shared.box.Close()
	shared.rt.Close()
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
