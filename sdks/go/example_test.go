package boxlite_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	boxlite "github.com/boxlite/boxlite/sdks/go"
)

// The README's example, compiled and run (readme_test.go checks they are the same).
func Example() {
	ctx := context.Background()

	// One runtime per home ($BOXLITE_HOME, else ~/.boxlite); Close frees it.
	rt, err := boxlite.NewRuntime()
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	box, err := rt.Create(ctx, "boxlite/busybox", boxlite.WithName("hello"))
	if err != nil {
		log.Fatal(err)
	}
	defer box.Close()           // frees the handle (runs last)
	defer box.Remove(ctx, true) // the box is durable: remove it

	// Run a command to its end and collect its output.
	stdout, _, status, err := box.Run(ctx, boxlite.Command{
		Name: "sh",
		Args: []string{"-c", "echo hello from $(uname -s); exit 3"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s%v\n", stdout, status)

	// Or stream: stdin in, output out as it comes.
	x, err := box.ExecCommand(ctx, boxlite.Command{Name: "tr", Args: []string{"a-z", "A-Z"}, Stdout: os.Stdout})
	if err != nil {
		log.Fatal(err)
	}
	defer x.Close()
	fmt.Fprintln(x.Stdin(), "streamed through the box")
	x.Stdin().Close()
	if status, err := x.Wait(ctx); err != nil || !status.Success() {
		log.Fatal(status, err)
	}

	// Errors carry boxlite's code.
	if _, err := rt.Get(ctx, "no-such-box"); errors.Is(err, boxlite.ErrNotFound) {
		fmt.Println(strings.Contains(err.Error(), "NotFound"))
	}
	// Output:
	// hello from Linux
	// exit status 3
	// STREAMED THROUGH THE BOX
	// true
}
