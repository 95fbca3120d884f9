// Reproduction of a libboxlite issue (fixed there since) the Go SDK guards against
// (see ../../README.md).
// Build: cc -I../../../../crates/boxlite-c/include kill-cancelled-by-runtime-free.c -L<dir of libboxlite.a> -lboxlite -ldl -lm -lpthread -lrt
// Run with the BOXLITE_* variables of run-tests.sh: ./a.out "$(mktemp -d)" 100   (prints 1: the process survived)
// boxlite_execution_free then boxlite_runtime_free at once: the process is not killed.
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "boxlite.h"

static CBoxHandle *g_box; static int g_done; static char g_out[256]; static size_t g_len;
static void on_box(CBoxHandle *b, CBoxliteError *e, void *ud) { g_box = b; g_done = 1; if (e) fprintf(stderr, "box: %s\n", e->message); }
static void on_unit(CBoxliteError *e, void *ud) { g_done = 1; if (e) fprintf(stderr, "err: %s\n", e->message); }
static void on_out(const uint8_t *p, size_t n, void *ud) { if (g_len + n < sizeof g_out) { memcpy(g_out + g_len, p, n); g_len += n; } }
static void on_exit_cb(int code, void *ud) { g_done = 1; }
static void drain_until(CBoxliteRuntime *rt) { for (int t = 0; t < 60000 && !g_done; t += 50) boxlite_runtime_drain(rt, 50, NULL); }

int main(int argc, char **argv) {
  CBoxliteRuntime *rt; FFIError err = {0}; CExecutionHandle *x;
  boxlite_runtime_new(argv[1], NULL, 0, &rt, &err);
  CBoxliteOptions *o; boxlite_options_new("boxlite/busybox", &o, &err); boxlite_options_set_name(o, "r2");
  boxlite_options_set_network_disabled(o);
  g_done = 0; boxlite_create_box(rt, o, on_box, NULL, &err); boxlite_options_free(o); drain_until(rt);
  g_done = 0; boxlite_start_box(g_box, on_unit, NULL, &err); drain_until(rt);

  const char *args[] = {"77"};
  BoxliteCommand cmd = {.command = "sleep", .args = args, .argc = 1};
  boxlite_box_exec(g_box, &cmd, &x, &err);
  boxlite_execution_on_exit(x, on_exit_cb, NULL, &err);
  for (int t = 0; t < atoi(argv[2]); t += 10) boxlite_runtime_drain(rt, 10, NULL); // the start is under way
  boxlite_execution_free(x);     // documented: the process is killed
  boxlite_box_free(g_box);
  boxlite_runtime_free(rt);      // ... but this cancels the kill

  boxlite_runtime_new(argv[1], NULL, 0, &rt, &err);
  g_done = 0; boxlite_get(rt, "r2", on_box, NULL, &err); drain_until(rt);
  const char *ps[] = {"-c", "sleep 2; ps -o args | grep -c '[s]leep 77'"};
  BoxliteCommand c2 = {.command = "sh", .args = ps, .argc = 2};
  boxlite_box_exec(g_box, &c2, &x, &err);
  boxlite_execution_on_stdout(x, on_out, NULL, &err);
  g_done = 0; boxlite_execution_on_exit(x, on_exit_cb, NULL, &err); drain_until(rt);
  printf("sleep 77 processes still running after free: %.*s", (int)g_len, g_out);
  boxlite_execution_free(x);
  g_done = 0; boxlite_remove(rt, "r2", 1, on_unit, NULL, &err); drain_until(rt);
  boxlite_box_free(g_box); boxlite_runtime_free(rt);
  return 0;
}
