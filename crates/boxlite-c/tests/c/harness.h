/* The shared helpers of the C test programs (crates/boxlite-c/tests/c_api.rs builds and
 * runs each one under AddressSanitizer, LeakSanitizer and UBSan, with a fresh
 * BOXLITE_HOME).
 *
 * Every helper callback checks that it runs on a thread that is inside
 * boxlite_runtime_drain (a thread-local flag set by drain()): a callback anywhere else
 * fails the program. A failed check prints where and why and ends the program at once
 * (_Exit, so no leak report buries the message; the harness kills the VMs left behind).
 */
#ifndef BOXLITE_TEST_HARNESS_H
#define BOXLITE_TEST_HARNESS_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "boxlite.h"

#define IMAGE "boxlite/busybox"

/* ---- failing ---- */

static inline void die(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static inline void die(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "FAIL %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  fflush(stdout);
  _Exit(1);
}

#define FAIL(...) die(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) FAIL("check failed: %s", #cond);                                  \
  } while (0)
#define CHECK_MSG(cond, ...)                                                       \
  do {                                                                             \
    if (!(cond)) FAIL(__VA_ARGS__);                                                \
  } while (0)
#define CHECK_EQ_INT(a, b)                                                         \
  do {                                                                             \
    long long va_ = (long long)(a), vb_ = (long long)(b);                          \
    if (va_ != vb_) FAIL("%s == %s: %lld != %lld", #a, #b, va_, vb_);              \
  } while (0)

/* Check a synchronous failure: the code returned, the same code and a message in
 * `err`, the message containing `needle` (when not NULL); then free it and check that
 * boxlite_error_free reset it. */
#define EXPECT_ERR(code_expr, err_ptr, want, needle)                               \
  expect_err_(__FILE__, __LINE__, #code_expr, (code_expr), (err_ptr), (want), (needle))

static inline void expect_err_(const char *file, int line, const char *what,
                               BoxliteErrorCode got, CBoxliteError *err,
                               BoxliteErrorCode want, const char *needle) {
  if (got != want)
    die(file, line, "%s returned %d, want %d (message: %s)", what, (int)got, (int)want,
        err && err->message ? err->message : "(none)");
  if (err == NULL) return;
  if (err->code != want)
    die(file, line, "%s: out_error code %d, want %d", what, (int)err->code, (int)want);
  if (err->message == NULL || err->message[0] == '\0')
    die(file, line, "%s: out_error has no message", what);
  if (needle && strstr(err->message, needle) == NULL)
    die(file, line, "%s: message \"%s\" does not contain \"%s\"", what, err->message,
        needle);
  boxlite_error_free(err);
  if (err->message != NULL || err->code != Ok)
    die(file, line, "%s: boxlite_error_free did not reset the error", what);
}

/* Check a synchronous failure whose code is not pinned: not Ok, and not a refusal of
 * the arguments (InvalidArgument); otherwise as EXPECT_ERR. */
#define EXPECT_FAIL(code_expr, err_ptr, needle)                                    \
  do {                                                                             \
    BoxliteErrorCode got_ = (code_expr);                                           \
    CHECK_MSG(got_ != Ok, "%s returned %d", #code_expr,                            \
              (int)got_);                                                          \
    expect_err_(__FILE__, __LINE__, #code_expr, got_, (err_ptr), got_, (needle));  \
  } while (0)

/* Require success of a call that fills `err`. */
#define MUST(call, err_ptr) must_(__FILE__, __LINE__, #call, (call), (err_ptr))
static inline void must_(const char *file, int line, const char *what, BoxliteErrorCode got,
                         CBoxliteError *err) {
  if (got != Ok)
    die(file, line, "%s failed with %d: %s", what, (int)got,
        err && err->message ? err->message : "(no message)");
  if (err && (err->code != Ok || err->message != NULL))
    die(file, line, "%s succeeded but left an error behind", what);
}

/* ---- time ---- */

static inline long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

/* ---- the draining thread ---- */

/* Set while this thread is inside boxlite_runtime_drain (through drain()). */
static _Thread_local int tl_draining;
/* Callbacks seen on a thread that was not draining. */
static int g_wrong_thread;

static inline void on_drain_thread(void) {
  if (!tl_draining) {
    /* Not FAIL: we may be on a boxlite worker; just record it for the program to see. */
    __atomic_add_fetch(&g_wrong_thread, 1, __ATOMIC_SEQ_CST);
  }
}

/* Dispatch events: boxlite_runtime_drain with the thread marked as draining. */
static inline int drain(CBoxliteRuntime *rt, int timeout_ms) {
  CBoxliteError err = {Ok, NULL};
  tl_draining++;
  int n = boxlite_runtime_drain(rt, timeout_ms, &err);
  tl_draining--;
  if (n < 0) FAIL("boxlite_runtime_drain failed: %s", err.message ? err.message : "?");
  CHECK(err.code == Ok && err.message == NULL);
  if (__atomic_load_n(&g_wrong_thread, __ATOMIC_SEQ_CST) != 0)
    FAIL("a callback ran on a thread that was not draining");
  return n;
}

/* Drain until *flag is non-zero, failing after `secs` seconds. */
#define WAIT_FOR(rt, flag, secs) wait_for_(__FILE__, __LINE__, (rt), &(flag), (secs), #flag)
static inline void wait_for_(const char *file, int line, CBoxliteRuntime *rt,
                             const volatile int *flag, int secs, const char *what) {
  long long end = now_ms() + (long long)secs * 1000;
  while (!*flag) {
    if (now_ms() > end) die(file, line, "timed out after %d s waiting for %s", secs, what);
    drain(rt, 100);
  }
}

/* ---- growable byte buffers ---- */

typedef struct {
  unsigned char *p;
  size_t n, cap;
} buf_t;

static inline void buf_add(buf_t *b, const void *d, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (b->n + n + 1 > cap) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    CHECK(p != NULL);
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, d, n);
  b->n += n;
  b->p[b->n] = 0; /* handy for text; the length is what counts */
}

static inline void buf_free(buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

static inline int buf_is(const buf_t *b, const char *s) {
  size_t n = strlen(s);
  return b->n == n && (n == 0 || memcmp(b->p, s, n) == 0);
}

/* ---- completions ---- */

/* The outcome of an asynchronous call: done, the error (copied), and a value. */
typedef struct {
  int done;
  int calls;
  BoxliteErrorCode code;
  char msg[1024];
  void *value;
  int flag;
} done_t;

static inline void done_note(done_t *d, CBoxliteError *e, void *value) {
  on_drain_thread();
  d->calls++;
  d->done = 1;
  d->value = value;
  d->code = e ? e->code : Ok;
  d->msg[0] = 0;
  if (e && e->message) snprintf(d->msg, sizeof d->msg, "%s", e->message);
  if (e) CHECK(e->code != Ok);
}

static inline void cb_unit(CBoxliteError *e, void *ud) { done_note(ud, e, NULL); }
static inline void cb_box(CBoxHandle *b, CBoxliteError *e, void *ud) {
  CHECK((b == NULL) == (e != NULL));
  done_note(ud, e, b);
}
static inline void cb_box_created(CBoxHandle *b, bool created, CBoxliteError *e, void *ud) {
  CHECK((b == NULL) == (e != NULL));
  done_note(ud, e, b);
  ((done_t *)ud)->flag = created;
}
static inline void cb_info(CBoxInfo *i, CBoxliteError *e, void *ud) {
  CHECK((i == NULL) == (e != NULL));
  done_note(ud, e, i);
}
static inline void cb_info_list(CBoxInfoList *l, CBoxliteError *e, void *ud) {
  CHECK((l == NULL) == (e != NULL));
  done_note(ud, e, l);
}

/* Wait for `d` and require success. */
#define AWAIT_OK(rt, d, secs)                                                      \
  do {                                                                             \
    WAIT_FOR(rt, (d).done, secs);                                                  \
    CHECK_MSG((d).code == Ok, "%s failed with %d: %s", #d, (int)(d).code, (d).msg); \
  } while (0)

/* ---- runtimes and boxes ---- */

static inline CBoxliteRuntime *runtime_open(const char *home) {
  CBoxliteRuntime *rt = NULL;
  CBoxliteError err = {Ok, NULL};
  MUST(boxlite_runtime_new(home, NULL, 0, &rt, &err), &err);
  CHECK(rt != NULL);
  return rt;
}

/* A box of IMAGE, created (and started when `start`). */
static inline CBoxHandle *box_new(CBoxliteRuntime *rt, int start) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteOptions *o = NULL;
  MUST(boxlite_options_new(IMAGE, &o, &err), &err);
  boxlite_options_set_memory(o, 256);
  done_t d = {0};
  MUST(boxlite_create_box(rt, o, cb_box, &d, &err), &err);
  boxlite_options_free(o);
  AWAIT_OK(rt, d, 60);
  CBoxHandle *b = d.value;
  if (start) {
    done_t s = {0};
    MUST(boxlite_start_box(b, cb_unit, &s, &err), &err);
    AWAIT_OK(rt, s, 120);
  }
  return b;
}

/* Remove the box (force) and free its handle. */
static inline void box_remove(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  char *id = boxlite_box_id(b);
  CHECK(id != NULL);
  done_t d = {0};
  MUST(boxlite_remove(rt, id, 1, cb_unit, &d, &err), &err);
  AWAIT_OK(rt, d, 60);
  boxlite_free_string(id);
  boxlite_box_free(b);
}

/* ---- executions ---- */

/* What one execution delivered. */
typedef struct {
  buf_t out, err;
  int exited;         /* exit callbacks */
  int code;           /* the last exit code */
  int late_chunks;    /* chunks after the exit callback */
  int empty_chunks;   /* chunks of 0 bytes */
  long out_chunks, err_chunks;
} run_t;

static inline void run_on_out(const uint8_t *d, size_t n, void *ud) {
  run_t *r = ud;
  on_drain_thread();
  if (r->exited) r->late_chunks++;
  if (n == 0) r->empty_chunks++;
  r->out_chunks++;
  buf_add(&r->out, d, n);
}
static inline void run_on_err(const uint8_t *d, size_t n, void *ud) {
  run_t *r = ud;
  on_drain_thread();
  if (r->exited) r->late_chunks++;
  if (n == 0) r->empty_chunks++;
  r->err_chunks++;
  buf_add(&r->err, d, n);
}
static inline void run_on_exit(int code, void *ud) {
  run_t *r = ud;
  on_drain_thread();
  r->exited++;
  r->code = code;
}

static inline void run_free(run_t *r) {
  buf_free(&r->out);
  buf_free(&r->err);
}

/* Start `argv[0]` with `argc - 1` arguments and register all three callbacks on `r`. */
static inline CExecutionHandle *exec_start(CBoxHandle *b, run_t *r, int argc,
                                           const char *const *argv) {
  CBoxliteError err = {Ok, NULL};
  BoxliteCommand c = {0};
  c.command = argv[0];
  c.args = argv + 1;
  c.argc = argc - 1;
  CExecutionHandle *x = NULL;
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  CHECK(x != NULL);
  MUST(boxlite_execution_on_stdout(x, run_on_out, r, &err), &err);
  MUST(boxlite_execution_on_stderr(x, run_on_err, r, &err), &err);
  MUST(boxlite_execution_on_exit(x, run_on_exit, r, &err), &err);
  return x;
}

/* Run `sh -c script` to its exit; `r` gets what it delivered. */
static inline void sh_run(CBoxliteRuntime *rt, CBoxHandle *b, const char *script, run_t *r) {
  const char *argv[] = {"sh", "-c", script};
  memset(r, 0, sizeof *r);
  CExecutionHandle *x = exec_start(b, r, 3, argv);
  WAIT_FOR(rt, r->exited, 120);
  boxlite_execution_free(x);
  CHECK_EQ_INT(r->late_chunks, 0);
  CHECK_EQ_INT(r->empty_chunks, 0);
}

/* Run `sh -c script`, require exit 0, and return its stdout (the caller frees it). */
static inline char *sh_out(CBoxliteRuntime *rt, CBoxHandle *b, const char *script) {
  run_t r;
  sh_run(rt, b, script, &r);
  CHECK_MSG(r.code == 0, "`%s` exited %d: %s", script, r.code,
            r.err.p ? (char *)r.err.p : "");
  char *s = r.out.p ? (char *)r.out.p : strdup("");
  buf_free(&r.err);
  return s;
}

#endif
