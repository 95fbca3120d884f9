/* Controlling executions: free of a running one (the exit comes once, as
 * BOXLITE_EXIT_FORCE_CLOSED, and the process is gone in the guest), kill, signals, the
 * timeout, wait, a command that cannot start, the stdin buffer limit, a terminal and its
 * resize, and the registration rules. One box serves every case. */
#include "harness.h"

/* Nothing in the box's process list matches `needle` (polled: the kill is queued). */
static void gone_in_guest(CBoxliteRuntime *rt, CBoxHandle *b, const char *needle) {
  long long end = now_ms() + 20000;
  for (;;) {
    char *ps = sh_out(rt, b, "ps -o args");
    int found = strstr(ps, needle) != NULL;
    if (!found) {
      free(ps);
      return;
    }
    if (now_ms() > end) FAIL("`%s` still runs in the box:\n%s", needle, ps);
    free(ps);
    drain(rt, 200);
  }
}

static void running_in_guest(CBoxliteRuntime *rt, CBoxHandle *b, const char *needle) {
  long long end = now_ms() + 20000;
  for (;;) {
    char *ps = sh_out(rt, b, "ps -o args");
    int found = strstr(ps, needle) != NULL;
    free(ps);
    if (found) return;
    if (now_ms() > end) FAIL("`%s` never started in the box", needle);
    drain(rt, 100);
  }
}

static CExecutionHandle *sh_start(CBoxHandle *b, run_t *r, const char *script) {
  const char *argv[] = {"sh", "-c", script};
  memset(r, 0, sizeof *r);
  return exec_start(b, r, 3, argv);
}

static void free_of_a_running_execution_force_closes_and_kills(CBoxliteRuntime *rt,
                                                               CBoxHandle *b) {
  /* Freed before anything was drained. */
  run_t r;
  CExecutionHandle *x = sh_start(b, &r, "exec sleep 1001");
  running_in_guest(rt, b, "sleep 1001");
  boxlite_execution_free(x);
  WAIT_FOR(rt, r.exited, 30);
  for (int i = 0; i < 5; i++) drain(rt, 100);
  CHECK_EQ_INT(r.exited, 1);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_FORCE_CLOSED);
  gone_in_guest(rt, b, "sleep 1001");
  run_free(&r);

  /* Freed after its output was delivered: no chunk after the exit. */
  x = sh_start(b, &r, "echo started; exec sleep 1002");
  while (r.out.n < 8) {
    drain(rt, 100);
    CHECK(!r.exited);
  }
  boxlite_execution_free(x);
  WAIT_FOR(rt, r.exited, 30);
  for (int i = 0; i < 5; i++) drain(rt, 100);
  CHECK(buf_is(&r.out, "started\n"));
  CHECK_EQ_INT(r.exited, 1);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_FORCE_CLOSED);
  CHECK_EQ_INT(r.late_chunks, 0);
  gone_in_guest(rt, b, "sleep 1002");
  run_free(&r);

  /* Freed with no exit callback registered: nothing comes, the process still goes. */
  CBoxliteError err = {Ok, NULL};
  const char *args[] = {"-c", "exec sleep 1003"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  running_in_guest(rt, b, "sleep 1003");
  boxlite_execution_free(x);
  gone_in_guest(rt, b, "sleep 1003");

  /* Freed immediately, before the command could even start. */
  x = sh_start(b, &r, "exec sleep 1004");
  boxlite_execution_free(x);
  WAIT_FOR(rt, r.exited, 30);
  for (int i = 0; i < 5; i++) drain(rt, 100);
  CHECK_EQ_INT(r.exited, 1);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_FORCE_CLOSED);
  gone_in_guest(rt, b, "sleep 1004");
  run_free(&r);

  /* Freed after its exit was delivered: no second exit. */
  x = sh_start(b, &r, "exit 5");
  WAIT_FOR(rt, r.exited, 30);
  boxlite_execution_free(x);
  for (int i = 0; i < 3; i++) drain(rt, 100);
  CHECK_EQ_INT(r.exited, 1);
  CHECK_EQ_INT(r.code, 5);
  run_free(&r);

  boxlite_execution_free(NULL);
}

typedef struct {
  int calls;
  int code;
  BoxliteErrorCode err;
  char msg[512];
} wait_t;

static void on_wait(int code, CBoxliteError *e, void *ud) {
  wait_t *w = ud;
  on_drain_thread();
  w->calls++;
  w->code = code;
  w->err = e ? e->code : Ok;
  if (e && e->message) snprintf(w->msg, sizeof w->msg, "%s", e->message);
}

static void kill_signal_and_wait(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  run_t r;
  wait_t w1 = {0}, w2 = {0};
  done_t k = {0};

  CExecutionHandle *x = sh_start(b, &r, "exec sleep 1005");
  MUST(boxlite_execution_wait(x, on_wait, &w1, &err), &err);
  MUST(boxlite_execution_wait(x, on_wait, &w2, &err), &err);
  MUST(boxlite_execution_kill(x, cb_unit, &k, &err), &err);
  AWAIT_OK(rt, k, 30);
  WAIT_FOR(rt, r.exited, 30);
  WAIT_FOR(rt, w1.calls, 30);
  WAIT_FOR(rt, w2.calls, 30);
  CHECK_EQ_INT(r.code, -9);
  CHECK_EQ_INT(w1.code, -9);
  CHECK_EQ_INT(w2.code, -9);
  CHECK(w1.err == Ok && w2.err == Ok);
  /* A wait queued after the exit still answers. */
  wait_t w3 = {0};
  MUST(boxlite_execution_wait(x, on_wait, &w3, &err), &err);
  WAIT_FOR(rt, w3.calls, 30);
  CHECK_EQ_INT(w3.code, -9);
  boxlite_execution_free(x);
  run_free(&r);

  /* SIGTERM to a process that does not catch it. */
  done_t s = {0};
  x = sh_start(b, &r, "exec sleep 1006");
  running_in_guest(rt, b, "sleep 1006");
  MUST(boxlite_execution_signal(x, 15, cb_unit, &s, &err), &err);
  AWAIT_OK(rt, s, 30);
  WAIT_FOR(rt, r.exited, 30);
  CHECK_EQ_INT(r.code, -15);
  boxlite_execution_free(x);
  run_free(&r);

  /* SIGUSR1 to a shell that traps it. */
  done_t u = {0};
  x = sh_start(b, &r, "trap 'echo got; exit 7' USR1; echo ready; while :; do sleep 0.1; done");
  while (r.out.n < 6) {
    drain(rt, 100);
    CHECK(!r.exited);
  }
  MUST(boxlite_execution_signal(x, 10, cb_unit, &u, &err), &err);
  AWAIT_OK(rt, u, 30);
  WAIT_FOR(rt, r.exited, 30);
  CHECK_EQ_INT(r.code, 7);
  CHECK(buf_is(&r.out, "ready\ngot\n"));
  boxlite_execution_free(x);
  run_free(&r);
}

static void timeout_ends_the_command(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  const char *args[] = {"-c", "sleep 1007 & exec sleep 1008"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2, .timeout_secs = 1.0};
  CExecutionHandle *x = NULL;
  run_t r = {0};
  wait_t w = {0};
  long long t0 = now_ms();
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  MUST(boxlite_execution_on_exit(x, run_on_exit, &r, &err), &err);
  MUST(boxlite_execution_wait(x, on_wait, &w, &err), &err);
  WAIT_FOR(rt, r.exited, 30);
  WAIT_FOR(rt, w.calls, 30);
  CHECK(now_ms() - t0 >= 900);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_TIMED_OUT);
  CHECK_EQ_INT(w.code, BOXLITE_EXIT_TIMED_OUT);
  boxlite_execution_free(x);
  gone_in_guest(rt, b, "sleep 100");
}

static void a_command_that_cannot_start_reports_failed(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  const char *argv[] = {"/no/such/program"};
  run_t r = {0};
  wait_t w = {0};
  CExecutionHandle *x = exec_start(b, &r, 1, argv);
  MUST(boxlite_execution_wait(x, on_wait, &w, &err), &err);
  WAIT_FOR(rt, r.exited, 30);
  WAIT_FOR(rt, w.calls, 30);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_FAILED);
  CHECK_EQ_INT(w.code, BOXLITE_EXIT_FAILED);
  CHECK_MSG(w.err != Ok && strstr(w.msg, "/no/such/program") != NULL, "wait error %d: %s",
            (int)w.err, w.msg);
  /* Kill and signal of an execution that never started report the start error. */
  done_t k = {0};
  MUST(boxlite_execution_kill(x, cb_unit, &k, &err), &err);
  WAIT_FOR(rt, k.done, 30);
  CHECK(k.code != Ok);
  boxlite_execution_free(x);
  for (int i = 0; i < 3; i++) drain(rt, 50);
  CHECK_EQ_INT(r.exited, 1);
  run_free(&r);
}

static void stdin_buffer_is_bounded(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  run_t r;
  CExecutionHandle *x = sh_start(b, &r, "exec sleep 1009"); /* never reads stdin */
  size_t big = BOXLITE_STDIN_BUFFER_BYTES + 1;
  unsigned char *data = calloc(1, big);
  CHECK(data != NULL);
  EXPECT_ERR(boxlite_execution_stdin_write(x, data, big, &err), &err, ResourceExhausted,
             "buffer");
  MUST(boxlite_execution_stdin_write(x, data, 1 << 20, &err), &err);
  EXPECT_ERR(boxlite_execution_stdin_write(x, NULL, 3, &err), &err, InvalidArgument, "NULL");
  free(data);
  boxlite_execution_free(x);
  WAIT_FOR(rt, r.exited, 30);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_FORCE_CLOSED);
  run_free(&r);
}

static void terminal_and_resize(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  const char *args[] = {"-c", "stty size; read line; stty size"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2, .tty = 1};
  CExecutionHandle *x = NULL;
  run_t r = {0};
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  MUST(boxlite_execution_on_stdout(x, run_on_out, &r, &err), &err);
  MUST(boxlite_execution_on_exit(x, run_on_exit, &r, &err), &err);
  while (strstr(r.out.p ? (char *)r.out.p : "", "24 80") == NULL) {
    drain(rt, 100);
    CHECK_MSG(!r.exited, "exited early: [%s]", r.out.p ? (char *)r.out.p : "");
  }
  done_t z = {0};
  MUST(boxlite_execution_tty_resize(x, 30, 100, cb_unit, &z, &err), &err);
  AWAIT_OK(rt, z, 30);
  MUST(boxlite_execution_stdin_write(x, (const uint8_t *)"go\n", 3, &err), &err);
  WAIT_FOR(rt, r.exited, 30);
  CHECK_EQ_INT(r.code, 0);
  CHECK_MSG(strstr((char *)r.out.p, "30 100") != NULL, "output: [%s]", (char *)r.out.p);
  boxlite_execution_free(x);
  run_free(&r);
}

static void registration_rules(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  run_t r;
  CExecutionHandle *x = sh_start(b, &r, "echo x");
  EXPECT_ERR(boxlite_execution_on_stdout(x, run_on_out, &r, &err), &err, InvalidState,
             "already registered");
  EXPECT_ERR(boxlite_execution_on_stderr(x, run_on_err, &r, &err), &err, InvalidState,
             "already registered");
  EXPECT_ERR(boxlite_execution_on_exit(x, run_on_exit, &r, &err), &err, InvalidState,
             "already registered");
  WAIT_FOR(rt, r.exited, 30);
  boxlite_execution_free(x);
  CHECK(buf_is(&r.out, "x\n"));
  run_free(&r);

  /* A stream registered after the exit was delivered is refused. */
  const char *args[] = {"-c", "echo late"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  memset(&r, 0, sizeof r);
  MUST(boxlite_execution_on_exit(x, run_on_exit, &r, &err), &err);
  WAIT_FOR(rt, r.exited, 30);
  EXPECT_ERR(boxlite_execution_on_stdout(x, run_on_out, &r, &err), &err, InvalidState,
             "exited");
  boxlite_execution_free(x);
}

/* Freeing from inside a callback: the exit callback frees its own execution (the usual
 * pattern), a stdout callback frees a running one (its exit then comes once, as
 * force-closed). */
typedef struct {
  run_t r;
  CExecutionHandle *x;
  int free_on_output;
} self_free_t;

static void sf_out(const uint8_t *d, size_t n, void *ud) {
  self_free_t *s = ud;
  run_on_out(d, n, &s->r);
  if (s->free_on_output && s->x) {
    boxlite_execution_free(s->x);
    s->x = NULL;
  }
}

static void sf_exit(int code, void *ud) {
  self_free_t *s = ud;
  run_on_exit(code, &s->r);
  if (s->x) {
    boxlite_execution_free(s->x);
    s->x = NULL;
  }
}

static void free_from_inside_a_callback(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  for (int on_output = 0; on_output <= 1; on_output++) {
    self_free_t s = {.free_on_output = on_output};
    const char *args[] = {"-c", on_output ? "echo first; exec sleep 1010" : "echo only"};
    BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
    MUST(boxlite_box_exec(b, &c, &s.x, &err), &err);
    MUST(boxlite_execution_on_stdout(s.x, sf_out, &s, &err), &err);
    MUST(boxlite_execution_on_exit(s.x, sf_exit, &s, &err), &err);
    WAIT_FOR(rt, s.r.exited, 30);
    for (int i = 0; i < 3; i++) drain(rt, 100);
    CHECK(s.x == NULL);
    CHECK_EQ_INT(s.r.exited, 1);
    CHECK_EQ_INT(s.r.late_chunks, 0);
    CHECK_EQ_INT(s.r.code, on_output ? BOXLITE_EXIT_FORCE_CLOSED : 0);
    CHECK(buf_is(&s.r.out, on_output ? "first\n" : "only\n"));
    run_free(&s.r);
  }
  gone_in_guest(rt, b, "sleep 1010");
}

/* An execution outlives the box handle it was started from. */
static void execution_outlives_its_box_handle(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  char *id = boxlite_box_id(b);
  done_t g = {0};
  MUST(boxlite_get(rt, id, cb_box, &g, &err), &err);
  AWAIT_OK(rt, g, 30);
  boxlite_free_string(id);
  CBoxHandle *other = g.value;
  run_t r;
  CExecutionHandle *x = sh_start(other, &r, "sleep 1; echo still here");
  boxlite_box_free(other);
  WAIT_FOR(rt, r.exited, 30);
  CHECK_EQ_INT(r.code, 0);
  CHECK(buf_is(&r.out, "still here\n"));
  boxlite_execution_free(x);
  run_free(&r);
}

int main(void) {
  CBoxliteRuntime *rt = runtime_open(NULL);
  CBoxHandle *b = box_new(rt, 1);

  free_of_a_running_execution_force_closes_and_kills(rt, b);
  kill_signal_and_wait(rt, b);
  timeout_ends_the_command(rt, b);
  a_command_that_cannot_start_reports_failed(rt, b);
  stdin_buffer_is_bounded(rt, b);
  terminal_and_resize(rt, b);
  registration_rules(rt, b);
  free_from_inside_a_callback(rt, b);
  execution_outlives_its_box_handle(rt, b);

  box_remove(rt, b);
  boxlite_runtime_free(rt);
  printf("exec_control: ok\n");
  return 0;
}
