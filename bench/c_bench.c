/* The C ABI's cost, for bench/c.sh: exec round trip of `true`, 50 concurrent `true`s,
 * and 64 MiB of stdout through chunk callbacks, all through post-and-drain on one box.
 * Prints one line per sample set (name, unit, values) for bench/c.sh to summarize. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "boxlite.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static CBoxHandle *box;
static int pending;
static size_t bytes;

static void check(BoxliteErrorCode c, CBoxliteError *e, const char *what) {
  if (c != Ok) {
    fprintf(stderr, "%s: %s\n", what, e->message ? e->message : "?");
    exit(1);
  }
}
static void on_create(CBoxHandle *b, CBoxliteError *e, void *ud) {
  (void)ud;
  if (e) { fprintf(stderr, "create: %s\n", e->message); exit(1); }
  box = b;
  pending--;
}
static void on_done(CBoxliteError *e, void *ud) {
  (void)ud;
  if (e) { fprintf(stderr, "%s\n", e->message); exit(1); }
  pending--;
}
static void on_exit_cb(int code, void *ud) {
  (void)ud;
  if (code != 0) { fprintf(stderr, "exit %d\n", code); exit(1); }
  pending--;
}
static void on_chunk(const uint8_t *d, size_t n, void *ud) {
  (void)d; (void)ud;
  bytes += n;
}
static void drain_all(CBoxliteRuntime *rt) {
  while (pending > 0) boxlite_runtime_drain(rt, -1, NULL);
}
static CExecutionHandle *start(CBoxliteRuntime *rt, const char *cmd, int stream) {
  (void)rt;
  CBoxliteError e = {0};
  const char *args[] = {"-c", cmd};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
  CExecutionHandle *x;
  check(boxlite_box_exec(box, &c, &x, &e), &e, "exec");
  if (stream) check(boxlite_execution_on_stdout(x, on_chunk, NULL, &e), &e, "on_stdout");
  check(boxlite_execution_on_exit(x, on_exit_cb, NULL, &e), &e, "on_exit");
  pending++;
  return x;
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 5;
  CBoxliteRuntime *rt;
  CBoxliteError e = {0};
  check(boxlite_runtime_new(NULL, NULL, 0, &rt, &e), &e, "runtime");
  CBoxliteOptions *o;
  check(boxlite_options_new("boxlite/busybox", &o, &e), &e, "options");
  boxlite_options_set_auto_remove(o, 1);
  pending = 1;
  check(boxlite_create_box(rt, o, on_create, NULL, &e), &e, "create");
  boxlite_options_free(o);
  drain_all(rt);
  pending = 1;
  check(boxlite_start_box(box, on_done, NULL, &e), &e, "start");
  drain_all(rt);
  CExecutionHandle *warm = start(rt, "true", 0);
  drain_all(rt);
  boxlite_execution_free(warm);

  printf("exec_rtt ms");
  for (int i = 0; i < runs * 10; i++) {
    double t = now();
    CExecutionHandle *x = start(rt, "true", 0);
    drain_all(rt);
    printf(" %.3f", (now() - t) * 1000);
    boxlite_execution_free(x);
  }
  printf("\nexec_50way execs/s");
  for (int r = 0; r < runs; r++) {
    CExecutionHandle *xs[50];
    double t = now();
    for (int i = 0; i < 50; i++) xs[i] = start(rt, "true", 0);
    drain_all(rt);
    printf(" %.1f", 50 / (now() - t));
    for (int i = 0; i < 50; i++) boxlite_execution_free(xs[i]);
  }
  printf("\nstream_64MiB MB/s");
  for (int r = 0; r < runs; r++) {
    bytes = 0;
    double t = now();
    CExecutionHandle *x = start(rt, "head -c 67108864 /dev/zero", 1);
    drain_all(rt);
    double s = now() - t;
    if (bytes != 67108864u) { fprintf(stderr, "got %zu bytes\n", bytes); exit(1); }
    printf(" %.1f", 67.108864 / s);
    boxlite_execution_free(x);
  }
  printf("\n");
  pending = 1;
  check(boxlite_stop_box(box, on_done, NULL, &e), &e, "stop");
  drain_all(rt);
  boxlite_box_free(box);
  boxlite_runtime_free(rt);
  return 0;
}
