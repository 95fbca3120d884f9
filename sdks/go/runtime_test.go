package boxlite_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	boxlite "github.com/boxlite/boxlite/sdks/go"
)

func TestBoxLifecycleInfoAndCopies(t *testing.T) {
	rt, box := sharedBox(t)
	ctx := ctxT(t, 90*time.Second)

	info, err := box.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != box.ID() || info.Name != "shared" || info.Status != "running" || !info.Running || info.Network.Enabled {
		t.Fatalf("box info %+v", info)
	}
	byName, err := rt.GetInfo(ctx, "shared")
	if err != nil || byName.ID != box.ID() {
		t.Fatalf("GetInfo by name: %+v, %v", byName, err)
	}
	again, err := rt.Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != box.ID() {
		t.Fatalf("Get by name gave %s, want %s", again.ID(), box.ID())
	}
	again.Close()
	again.Close() // idempotent
	if err := again.Start(ctx); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Fatalf("a call on a closed handle: %v", err)
	}
	list, err := rt.ListInfo(ctx)
	if err != nil || len(list) != 1 || list[0].ID != box.ID() {
		t.Fatalf("ListInfo: %+v, %v", list, err)
	}
	m, err := box.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.MemoryBytes <= 0 {
		t.Errorf("box metrics %+v", m)
	}
	rm, err := rt.Metrics(ctx)
	if err != nil || rm.NumRunningBoxes != 1 || rm.BoxesCreatedTotal != 1 {
		t.Fatalf("runtime metrics %+v, %v", rm, err)
	}
	imgs, err := rt.Images().List(ctx)
	if err != nil || len(imgs) == 0 {
		t.Fatalf("images %+v, %v", imgs, err)
	}

	// A file in and out again.
	dir := t.TempDir()
	src := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(src, []byte("through the box\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := box.CopyInto(ctx, src, "/tmp/in.txt"); err != nil {
		t.Fatal(err)
	}
	out, _, st, err := box.Run(ctx, boxlite.Command{Name: "cat", Args: []string{"/tmp/in.txt"}})
	if err != nil || !st.Success() || string(out) != "through the box\n" {
		t.Fatalf("cat of the copied file: %q %v %v", out, st, err)
	}
	if err := box.CopyOut(ctx, "/tmp/in.txt", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out", "in.txt"))
	if err != nil {
		got, err = os.ReadFile(filepath.Join(dir, "out"))
	}
	if err != nil || string(got) != "through the box\n" {
		t.Fatalf("copied out: %q, %v", got, err)
	}
}

// Options reach the box (created, not booted), and GetOrCreate tells found from made.
func TestCreateOptionsAndGetOrCreate(t *testing.T) {
	rt, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)

	found, created, err := rt.GetOrCreate(ctx, "shared", "boxlite/busybox")
	if err != nil || created || found.ID() != box.ID() {
		t.Fatalf("GetOrCreate of the shared box: %v, created %v, %v", found, created, err)
	}
	found.Close()

	b, created, err := rt.GetOrCreate(ctx, "opts", "boxlite/busybox",
		boxlite.WithCPUs(1),
		boxlite.WithMemory(192),
		boxlite.WithDiskSize(2),
		boxlite.WithEnv("A", "1"),
		boxlite.WithWorkdir("/srv"),
		boxlite.WithVolume("bxgo-data", "/data", false),
		boxlite.WithVolume("", "/scratch", true),
		boxlite.WithPort(boxlite.Port{HostPort: 0, GuestPort: 8080}),
		boxlite.WithPort(boxlite.Port{HostIP: "127.0.0.1", GuestPort: 53, Protocol: boxlite.UDP}),
		boxlite.WithAllowNet("127.0.0.1", "*.example.internal:443"),
		boxlite.WithSecret(boxlite.Secret{Name: "TOKEN", Value: "s3cret", Hosts: []string{"api.example.internal"}}),
		boxlite.WithEntrypoint("/bin/sh"),
		boxlite.WithCmd("-c", "sleep 1000"),
		boxlite.WithAutoRemove(false),
	)
	if err != nil || !created {
		t.Fatalf("GetOrCreate of a new box: created %v, %v", created, err)
	}
	defer b.Close()
	info, err := b.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "opts" || info.CPUs != 1 || info.MemoryMiB != 192 || info.Running || info.Status != "configured" ||
		!info.Network.Enabled || len(info.Network.AllowNet) != 2 || info.Network.PublishedPorts != nil {
		t.Fatalf("info of the new box: %+v", info)
	}
	if _, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithPort(boxlite.Port{GuestPort: 0})); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("guest port 0: %v", err)
	}
	if _, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithName("opts")); !errors.Is(err, boxlite.ErrAlreadyExists) {
		t.Fatalf("a second box named opts: %v", err)
	}
	if _, _, err := rt.GetOrCreate(ctx, "", "boxlite/busybox"); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("GetOrCreate without a name: %v", err)
	}
	if err := b.Remove(ctx, true); err != nil {
		t.Fatal(err)
	}
	// The named volume was made on first use, and outlives the box.
	if _, err := rt.Volumes().Get(ctx, "bxgo-data"); err != nil {
		t.Fatalf("the named volume: %v", err)
	}
	if err := rt.Volumes().Remove(ctx, "bxgo-data", false); err != nil {
		t.Fatal(err)
	}
}

func TestVolumes(t *testing.T) {
	rt, _ := sharedBox(t)
	ctx := ctxT(t, 30*time.Second)
	v, err := rt.Volumes().Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Name == "" || v.CreatedAt.IsZero() {
		t.Fatalf("volume %+v", v)
	}
	got, err := rt.Volumes().Get(ctx, v.Name)
	if err != nil || got.Name != v.Name {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	all, err := rt.Volumes().List(ctx)
	listed := false
	for _, a := range all {
		listed = listed || a.Name == v.Name
	}
	if err != nil || !listed {
		t.Fatalf("List: %+v, %v", all, err)
	}
	if err := rt.Volumes().Remove(ctx, v.Name, false); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Volumes().Get(ctx, v.Name); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("Get of a removed volume: %v", err)
	}
	if err := rt.Volumes().Remove(ctx, v.Name, true); err != nil {
		t.Fatalf("forced Remove of a missing volume: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	rt, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)

	_, err := rt.Create(ctx, "")
	var be *boxlite.Error
	if !errors.Is(err, boxlite.ErrInvalidArgument) || !errors.As(err, &be) || be.Code != boxlite.CodeInvalidArgument || be.Message == "" {
		t.Fatalf("an empty image: %v", err)
	}
	if errors.Is(err, boxlite.ErrNotFound) || errors.Is(err, boxlite.ErrRuntimeClosed) {
		t.Fatalf("%v matches another code", err)
	}
	if _, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithCPUs(-1)); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("-1 CPUs: %v", err)
	}
	if _, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithName("a\x00b")); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("a NUL in a name: %v", err)
	}
	if _, err := boxlite.NewRuntime(boxlite.WithHomeDir("/dev/null/home")); err == nil {
		t.Fatal("a runtime over a home under /dev/null opened")
	} else {
		t.Logf("a home under /dev/null: %v", err)
	}
	if _, err := rt.Get(ctx, "no-such-box"); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("Get of a missing box: %v", err)
	}
	if _, err := rt.GetInfo(ctx, "no-such-box"); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("GetInfo of a missing box: %v", err)
	}
	if err := rt.Remove(ctx, "no-such-box", false); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("Remove of a missing box: %v", err)
	}
	if _, err := rt.Volumes().Get(ctx, "no-such-volume"); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("Get of a missing volume: %v", err)
	}
	if _, err := box.ExecCommand(ctx, boxlite.Command{Name: "env", Env: []string{"NOEQUALS"}}); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("an env entry without '=': %v", err)
	}
	if _, err := box.ExecCommand(ctx, boxlite.Command{Name: "pwd", Workdir: "relative"}); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("a relative workdir: %v", err)
	}

	x, err := box.Exec(ctx, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for _, sig := range []syscall.Signal{0, -1, 65} {
		if err := x.Signal(ctx, sig); !errors.Is(err, boxlite.ErrInvalidArgument) {
			t.Fatalf("signal %d: %v", sig, err)
		}
	}

	// A command that does not exist: a failed status, and why.
	_, _, st, err := box.Run(ctx, boxlite.Command{Name: "/no/such/program"})
	switch {
	case st.Failed() && err != nil:
		t.Logf("a missing program: %v, %v", st, err)
	case st.Exited() && st.Code() == 127:
		t.Logf("a missing program: %v", st)
	default:
		t.Fatalf("a missing program: %v, %v", st, err)
	}

	// A context already done: nothing is queued.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := rt.ListInfo(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListInfo with a cancelled context: %v", err)
	}
}

// A create whose context ends while it is in flight returns ctx.Err(), and the box it
// made anyway is removed behind it.
func TestCancelMidCreate(t *testing.T) {
	rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(freshHome(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := ctxT(t, 90*time.Second)
	lateBefore, settledBefore := boxlite.LateUndone(), boxlite.AbandonedSettled()

	cancelled := 0
	for i := 0; cancelled < 3 && i < 20; i++ {
		cctx, cancel := context.WithCancel(ctx)
		delay := time.Duration(i%4) * time.Millisecond
		go func() {
			time.Sleep(delay)
			cancel()
		}()
		box, err := rt.Create(cctx, "boxlite/busybox", boxlite.WithNetworkDisabled())
		cancel()
		switch {
		case errors.Is(err, context.Canceled):
			cancelled++
		case err == nil:
			// The create won the race: not what is tested here.
			if err := box.Remove(ctx, true); err != nil {
				t.Fatal(err)
			}
			box.Close()
		default:
			t.Fatalf("Create: %v", err)
		}
	}
	if cancelled == 0 {
		t.Fatal("no create was cancelled in flight")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := rt.ListInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Every cancelled create's outcome came (a box made anyway is undone).
		if len(list) == 0 && boxlite.AbandonedSettled()-settledBefore >= int64(cancelled) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d boxes left behind by %d cancelled creates (%d outcomes came, %d boxes undone): %+v", len(list), cancelled, boxlite.AbandonedSettled()-settledBefore, boxlite.LateUndone()-lateBefore, list)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d creates cancelled in flight, %d of their boxes removed behind them, none left",
		cancelled, boxlite.LateUndone()-lateBefore)
}

// Close wakes a pull that will never be answered, promptly, and does not hang.
func TestCloseDuringPull(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns sync.WaitGroup
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { // hold it open, say nothing
				defer conns.Done()
				<-stop
				c.Close()
			}()
		}
	}()

	rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(freshHome(t)))
	if err != nil {
		t.Fatal(err)
	}
	ref := ln.Addr().String() + "/x/y:1"
	pulled := make(chan error, 1)
	go func() {
		_, err := rt.Images().Pull(context.Background(), ref)
		pulled <- err
	}()
	select {
	case err := <-pulled:
		t.Fatalf("the pull returned before Close: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	closed := make(chan struct{})
	start := time.Now()
	go func() {
		rt.Close()
		close(closed)
	}()
	select {
	case err := <-pulled:
		if !errors.Is(err, boxlite.ErrRuntimeClosed) || !errors.Is(err, boxlite.ErrInvalidState) {
			t.Fatalf("Pull after Close: %v", err)
		}
		t.Logf("Pull woke %v after Close", time.Since(start))
	case <-time.After(2 * time.Second):
		t.Fatal("Pull did not return within 2 s of Close")
	}
	select {
	case <-closed:
		t.Logf("Close took %v", time.Since(start))
	case <-time.After(15 * time.Second):
		t.Fatal("Close hung")
	}
	if _, err := rt.Images().List(context.Background()); !errors.Is(err, boxlite.ErrRuntimeClosed) {
		t.Fatalf("a call after Close: %v", err)
	}
}

// Close races callbacks: every call returns (a result or ErrRuntimeClosed), nothing
// is freed twice, nothing panics.
func TestCloseRacesCallbacks(t *testing.T) {
	home := freshHome(t)
	const iterations = 500
	outcomes := map[string]int{}
	var mu sync.Mutex
	note := func(what string, err error) {
		k := what + ":ok"
		switch {
		case err == nil:
		case errors.Is(err, boxlite.ErrRuntimeClosed):
			k = what + ":closed"
		case what == "get" && errors.Is(err, boxlite.ErrNotFound):
			k = what + ":notfound"
		default:
			t.Errorf("%s: unexpected %v", what, err)
			k = what + ":other"
		}
		mu.Lock()
		outcomes[k]++
		mu.Unlock()
	}
	// A box that exists (created, never started): Get returns a handle, so handles
	// are among the payloads in flight when Close comes.
	{
		rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(home))
		if err != nil {
			t.Fatal(err)
		}
		b, err := rt.Create(ctxT(t, 30*time.Second), "boxlite/busybox", boxlite.WithName("present"), boxlite.WithNetworkDisabled())
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		rt.Close()
	}
	start := time.Now()
	orphans := boxlite.OrphansFreed()
	for i := range iterations {
		rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(home), boxlite.WithDrainInterval(5*time.Millisecond))
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		calls := []func(){
			func() { _, err := rt.ListInfo(ctx); note("list", err) },
			func() { _, err := rt.Images().List(ctx); note("images", err) },
			func() { _, err := rt.Volumes().List(ctx); note("volumes", err) },
			func() {
				b, err := rt.Get(ctx, "missing")
				if b != nil {
					b.Close()
				}
				note("get", err)
			},
			func() { _, err := rt.Metrics(ctx); note("metrics", err) },
			func() {
				b, err := rt.Get(ctx, "present")
				if b != nil {
					b.Close()
				}
				note("present", err)
			},
		}
		for _, c := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c()
			}()
		}
		if d := rand.IntN(2000); d > 200 {
			time.Sleep(time.Duration(d) * time.Microsecond)
		}
		done := make(chan struct{})
		go func() {
			wg.Wait()
			close(done)
		}()
		rt.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: a call did not return after Close", i)
		}
	}
	t.Logf("%d iterations in %v: %v; %d callbacks found their call taken by Close",
		iterations, time.Since(start), outcomes, boxlite.OrphansFreed()-orphans)
}

// Shutdown stops the boxes this runtime started; the runtime refuses calls after.
func TestShutdown(t *testing.T) {
	home := freshHome(t)
	rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(home))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := ctxT(t, 90*time.Second)
	box, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithName("down"), boxlite.WithNetworkDisabled())
	if err != nil {
		t.Fatal(err)
	}
	x, err := box.Exec(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	out, _, st, err := box.Run(ctx, boxlite.Command{Name: "echo", Args: []string{"up"}})
	if err != nil || string(out) != "up\n" {
		t.Fatalf("echo: %q %v %v", out, st, err)
	}
	if err := box.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := x.Wait(ctx); err == nil && !st.Known() {
		t.Fatalf("the sleep after Stop: %v", st)
	}
	x.Close()
	if info, err := box.Info(ctx); err != nil || info.Running || info.Status != "stopped" {
		t.Fatalf("info after Stop: %+v, %v", info, err)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	x, err = box.Exec(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Shutdown(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.ListInfo(ctx); !errors.Is(err, boxlite.ErrRuntimeClosed) {
		t.Fatalf("a call after Shutdown: %v", err)
	}
	// The sleep's execution ends (its box stopped), or Close finishes it.
	x.Close()
	if st, err := x.Wait(ctx); !st.Known() {
		t.Fatalf("the execution after Shutdown: %v, %v", st, err)
	}
	rt.Close()
	if _, err := box.Info(ctx); !errors.Is(err, boxlite.ErrRuntimeClosed) {
		t.Fatalf("a box's call after Close: %v", err)
	}
	if err := x.Kill(ctx); !errors.Is(err, boxlite.ErrRuntimeClosed) {
		t.Fatalf("an execution's call after Close: %v", err)
	}
	box.Close()

	other, err := boxlite.NewRuntime(boxlite.WithHomeDir(home))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	info, err := other.GetInfo(ctx, "down")
	if err != nil || info.Running {
		t.Fatalf("the box after Shutdown: %+v, %v", info, err)
	}
	if err := other.Remove(ctx, "down", true); err != nil {
		t.Fatal(err)
	}
}

// Close while executions stream output: their waits return ErrRuntimeClosed, chunks
// in flight are dropped, nothing hangs or is freed twice. A second runtime over the
// shared box's home drives the shared (durable) box.
func TestCloseDuringExecStreams(t *testing.T) {
	_, box := sharedBox(t)
	home := shared.home
	ctx := ctxT(t, 120*time.Second)
	var chunks, closedWaits int
	for i := range 15 {
		rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(home), boxlite.WithDrainInterval(5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		b, err := rt.Get(ctx, box.ID())
		if err != nil {
			t.Fatal(err)
		}
		var xs []*boxlite.Execution
		var mu sync.Mutex
		for range 3 {
			x, err := b.ExecCommand(ctx, boxlite.Command{
				Name:     "sh",
				Args:     []string{"-c", "yes boxlite | head -c 20000000"},
				OnStdout: func(p []byte) { mu.Lock(); chunks++; mu.Unlock() },
			})
			if err != nil {
				t.Fatal(err)
			}
			xs = append(xs, x)
		}
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		rt.Close()
		for _, x := range xs {
			waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := x.Wait(waitCtx)
			cancel()
			switch {
			case errors.Is(err, boxlite.ErrRuntimeClosed):
				closedWaits++
			case err == nil && st.Known():
			default:
				t.Fatalf("iteration %d: Wait after Close: %v, %v", i, st, err)
			}
			x.Close()
		}
		b.Close()
	}
	t.Logf("%d chunks delivered, %d waits woken by Close", chunks, closedWaits)
	// The shared runtime is untouched.
	out, _, st, err := box.Run(ctx, boxlite.Command{Name: "echo", Args: []string{"still here"}})
	if err != nil || string(out) != "still here\n" {
		t.Fatalf("the shared box after: %q %v %v", out, st, err)
	}
	// Closing the runtime killed the commands (it closes the executions it has and
	// waits for boxlite to confirm the kills).
	out, _, _, err = box.Run(ctx, sh("ps -o pid,args | grep -c '[y]es boxlite'"))
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("processes of closed executions still running in the box: %q, %v", out, err)
	}
}

// Runtime.Close kills the processes of the executions still open, and of those just
// closed, even when it comes at once (boxlite's kill must not be cancelled by the
// runtime's end).
func TestCloseKillsOpenExecutions(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	for i := range 3 {
		rt, err := boxlite.NewRuntime(boxlite.WithHomeDir(shared.home))
		if err != nil {
			t.Fatal(err)
		}
		b, err := rt.Get(ctx, box.ID())
		if err != nil {
			t.Fatal(err)
		}
		closed, err := b.Exec(ctx, "sleep", "77")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Exec(ctx, "sleep", "78"); err != nil { // left open
			t.Fatal(err)
		}
		closed.Close()
		rt.Close()
		out, _, _, err := box.Run(ctx, sh("ps -o pid,args | grep -c '[s]leep 7[78]'"))
		if err != nil || strings.TrimSpace(string(out)) != "0" {
			t.Fatalf("iteration %d: sleeps still running after Close: %q, %v", i, out, err)
		}
	}
}
