// Reproduction of a libboxlite issue (fixed there since) the Go SDK guards against
// (see ../../README.md).
// Build: cc -I../../../../crates/boxlite-c/include exit-lost-after-shutdown.c -L<dir of libboxlite.a> -lboxlite -ldl -lm -lpthread -lrt
// Run with the BOXLITE_* variables of run-tests.sh: ./a.out "$(mktemp -d)"   (exit status 2: the bug)
// After boxlite_runtime_shutdown, boxlite_execution_free of a running execution never
// delivers its exit callback (the header promises exactly one, FORCE_CLOSED if not yet
// queued).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "boxlite.h"

static CBoxHandle *g_box; static int g_done; static int g_exit_calls; static int g_exit_code = 999;
static void on_create(CBoxHandle *b, CBoxliteError *e, void *ud) { g_box = b; g_done = 1; if (e) fprintf(stderr, "create: %s\n", e->message); }
static void on_start(CBoxliteError *e, void *ud) { g_done = 1; if (e) fprintf(stderr, "start: %s\n", e->message); }
static void on_shutdown(CBoxliteError *e, void *ud) { g_done = 1; fprintf(stderr, "shutdown cb (%s)\n", e ? e->message : "ok"); }
static void on_exit_cb(int code, void *ud) { g_exit_calls++; g_exit_code = code; }
static void on_out(const uint8_t *p, size_t n, void *ud) {}

static void drain_until(CBoxliteRuntime *rt, int *flag, int ms) {
  for (int t = 0; t < ms && !*flag; t += 50) boxlite_runtime_drain(rt, 50, NULL);
}

int main(int argc, char **argv) {
  CBoxliteRuntime *rt; FFIError err = {0};
  if (boxlite_runtime_new(argv[1], NULL, 0, &rt, &err) != Ok) { fprintf(stderr, "new: %s\n", err.message); return 1; }
  CBoxliteOptions *o; boxlite_options_new("boxlite/busybox", &o, &err); boxlite_options_set_network_disabled(o);
  boxlite_create_box(rt, o, on_create, NULL, &err); boxlite_options_free(o);
  g_done = 0; drain_until(rt, &g_done, 60000);
  g_done = 0; boxlite_start_box(g_box, on_start, NULL, &err); drain_until(rt, &g_done, 60000);

  const char *args[] = {"60"};
  BoxliteCommand cmd = {.command = "sleep", .args = args, .argc = 1};
  CExecutionHandle *x;
  if (boxlite_box_exec(g_box, &cmd, &x, &err) != Ok) { fprintf(stderr, "exec: %s\n", err.message); return 1; }
  boxlite_execution_on_stdout(x, on_out, NULL, &err);
  boxlite_execution_on_exit(x, on_exit_cb, NULL, &err);
  for (int i = 0; i < 20; i++) boxlite_runtime_drain(rt, 50, NULL); // the sleep runs

  g_done = 0;
  boxlite_runtime_shutdown(rt, 5, on_shutdown, NULL, &err);
  boxlite_execution_free(x);               // exit not yet queued: one FORCE_CLOSED exit is due
  drain_until(rt, &g_done, 30000);          // the shutdown completes (the box stopped)
  for (int i = 0; i < 100; i++) boxlite_runtime_drain(rt, 50, NULL); // 5 s more
  printf("exit callbacks: %d (code %d); expected exactly 1\n", g_exit_calls, g_exit_code);
  boxlite_box_free(g_box);
  boxlite_runtime_free(rt);
  return g_exit_calls == 1 ? 0 : 2;
}
