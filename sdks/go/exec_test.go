package boxlite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	boxlite "github.com/boxlite/boxlite/sdks/go"
)

func sh(script string) boxlite.Command {
	return boxlite.Command{Name: "sh", Args: []string{"-c", script}}
}

func TestExecOutputIsByteExact(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	out, errb, st, err := box.Run(ctx, sh(`printf 'a\nb'; printf 'x\ny' >&2`))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Success() || st.Code() != 0 {
		t.Fatalf("status %v", st)
	}
	if string(out) != "a\nb" {
		t.Errorf("stdout %q, want %q", out, "a\nb")
	}
	if string(errb) != "x\ny" {
		t.Errorf("stderr %q, want %q", errb, "x\ny")
	}
}

func TestExecBinaryOutput(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	var f strings.Builder
	want := make([]byte, 256)
	for i := range 256 {
		fmt.Fprintf(&f, `\%03o`, i)
		want[i] = byte(i)
	}
	out, _, st, err := box.Run(ctx, boxlite.Command{Name: "printf", Args: []string{f.String()}})
	if err != nil || !st.Success() {
		t.Fatalf("status %v, err %v", st, err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("stdout is %d bytes %x, want the 256 byte values", len(out), out)
	}
}

func TestExecLargeOutput(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 90*time.Second)
	const n = 1 << 20
	var chunks int
	cmd := sh(fmt.Sprintf(`head -c %d /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big; rm -f /tmp/big`, n))
	cmd.OnStdout = func([]byte) { chunks++ }
	out, errb, st, err := box.Run(ctx, cmd)
	if err != nil || !st.Success() {
		t.Fatalf("status %v, err %v, stderr %q", st, err, errb)
	}
	if len(out) != n {
		t.Fatalf("stdout is %d bytes, want %d", len(out), n)
	}
	sum := sha256.Sum256(out)
	guest := strings.Fields(string(errb))
	if len(guest) == 0 || guest[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("sha256 of stdout %x, the guest's %q", sum, errb)
	}
	t.Logf("1 MiB in %d chunks", chunks)
}

func TestExitCodeAndSignal(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	_, _, st, err := box.Run(ctx, sh("exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exited() || st.Code() != 3 || st.Signaled() || st.Success() {
		t.Fatalf("exit 3 gave %v (code %d, signaled %v)", st, st.Code(), st.Signaled())
	}
	_, _, st, err = box.Run(ctx, sh("kill -9 $$"))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Signaled() || st.Signal() != 9 || st.Exited() || st.Code() != -1 {
		t.Fatalf("kill -9 $$ gave %v (signaled %v, signal %d, code %d)", st, st.Signaled(), st.Signal(), st.Code())
	}
}

func TestStdinRoundTrip(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 90*time.Second)
	data := make([]byte, 3<<20+123) // more than one write piece
	rand.Read(data)
	var out bytes.Buffer
	x, err := box.ExecCommand(ctx, boxlite.Command{Name: "cat", Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	w := x.Stdin()
	if n, err := w.Write(data); err != nil || n != len(data) {
		t.Fatalf("wrote %d of %d: %v", n, len(data), err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := x.Wait(ctx)
	if err != nil || !st.Success() {
		t.Fatalf("status %v, err %v", st, err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("cat gave back %d bytes, want the %d written", out.Len(), len(data))
	}
	// Command.Stdin: copied, then closed.
	got, _, st, err := box.Run(ctx, boxlite.Command{Name: "cat", Stdin: strings.NewReader("no newline")})
	if err != nil || !st.Success() || string(got) != "no newline" {
		t.Fatalf("Run with Stdin: %q, %v, %v", got, st, err)
	}
}

func TestSignalKillCloseAndTimeout(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 90*time.Second)

	x, err := box.Exec(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Signal(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := x.Wait(ctx)
	if err != nil || !st.Signaled() || st.Signal() != int(syscall.SIGTERM) {
		t.Fatalf("SIGTERM gave %v, %v", st, err)
	}
	x.Close()

	x, err = box.Exec(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = x.Wait(ctx)
	if err != nil || st.Signal() != 9 {
		t.Fatalf("Kill gave %v, %v", st, err)
	}
	x.Close()

	// Close of a running execution kills it; its one exit says so.
	x, err = box.Exec(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	x.Close()
	st, err = x.Wait(ctx)
	if err != nil || !st.ForceClosed() {
		t.Fatalf("Close gave %v, %v", st, err)
	}
	if err := x.Kill(ctx); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Fatalf("Kill after Close: %v", err)
	}

	// The command's own timeout.
	cmd := boxlite.Command{Name: "sleep", Args: []string{"60"}, Timeout: time.Second}
	_, _, st, err = box.Run(ctx, cmd)
	if err != nil || !st.TimedOut() {
		t.Fatalf("Timeout gave %v, %v", st, err)
	}
}

func TestExecContextKills(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, _, err := box.Run(short, boxlite.Command{Name: "sleep", Args: []string{"60"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run past its deadline: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Run took %v to notice its deadline", d)
	}
	short, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	x, err := box.ExecCommand(short, boxlite.Command{Name: "sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	st, err := x.Wait(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || st.Signal() != 9 {
		t.Fatalf("ExecCommand's context ended: %v, %v", st, err)
	}
}

func TestTTY(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	var out bytes.Buffer
	x, err := box.ExecCommand(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", "sleep 1; stty size"}, TTY: true, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if err := x.ResizeTTY(ctx, 40, 120); err != nil {
		t.Fatal(err)
	}
	if err := x.ResizeTTY(ctx, 0, 10); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("a 0-row terminal: %v", err)
	}
	st, err := x.Wait(ctx)
	if err != nil || !st.Success() {
		t.Fatalf("status %v, %v", st, err)
	}
	if !strings.Contains(out.String(), "40 120") {
		t.Fatalf("stty size under the resized terminal: %q", out.String())
	}
}

func TestExecEnvWorkdirUser(t *testing.T) {
	_, box := sharedBox(t)
	ctx := ctxT(t, 60*time.Second)
	script := `echo "$BXGO_SHARED"; echo "$FOO"; pwd; id -u`
	out, errb, st, err := box.Run(ctx, sh(script))
	if err != nil || !st.Success() {
		t.Fatalf("%v %v %q", st, err, errb)
	}
	if want := "from the box's options\n\n/tmp\n0\n"; string(out) != want {
		t.Fatalf("the box's defaults: %q, want %q", out, want)
	}
	cmd := sh(script)
	cmd.Env = []string{"FOO=bar=baz", "BXGO_SHARED=overridden"}
	cmd.Workdir = "/"
	cmd.User = "1000:1000"
	out, errb, st, err = box.Run(ctx, cmd)
	if err != nil || !st.Success() {
		t.Fatalf("%v %v %q", st, err, errb)
	}
	if want := "overridden\nbar=baz\n/\n1000\n"; string(out) != want {
		t.Fatalf("the command's own: %q, want %q", out, want)
	}
}
