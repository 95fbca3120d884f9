package boxlite_test

import (
	"os"
	"strings"
	"testing"
)

// The README's example is Example's code: what the tests compile and run is what the
// README shows.
func TestReadmeExampleIsTheCompiledExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	want := between(t, string(example), "func Example() {\n", "\t// Output:")
	got := between(t, string(readme), "func main() {\n", "}\n```")
	if strings.TrimSpace(got) != strings.TrimSpace(want) {
		t.Fatalf("README.md's main differs from example_test.go's Example:\n--- README\n%s\n--- Example\n%s", got, want)
	}
}

func between(t *testing.T, s, start, end string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("no %q", start)
	}
	s = s[i+len(start):]
	j := strings.Index(s, end)
	if j < 0 {
		t.Fatalf("no %q after %q", end, start)
	}
	return s[:j]
}
