/* Output chunks are exactly the bytes the process wrote: no newline added, binary bytes
 * (NUL included) kept, stdout and stderr apart, 1 MiB of random bytes intact (CRC-32
 * computed here against the guest's), stdin delivered byte for byte; and the exit code
 * encoding (a code, minus a signal). One box serves every case. */
#include "harness.h"

static uint32_t crc32_of(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

static void no_added_newline(CBoxliteRuntime *rt, CBoxHandle *b) {
  run_t r;
  sh_run(rt, b, "printf 'a\\nb'", &r);
  CHECK_EQ_INT(r.code, 0);
  CHECK(buf_is(&r.out, "a\nb"));
  CHECK_EQ_INT(r.err.n, 0);
  CHECK_EQ_INT(r.exited, 1);
  run_free(&r);
}

static void binary_bytes_with_nul_are_kept(CBoxliteRuntime *rt, CBoxHandle *b) {
  run_t r;
  sh_run(rt, b, "printf '\\000\\001\\377abc\\000'; printf 'e\\000\\n' >&2", &r);
  static const unsigned char want[] = {0, 1, 0xff, 'a', 'b', 'c', 0};
  static const unsigned char want_err[] = {'e', 0, '\n'};
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_INT(r.out.n, sizeof want);
  CHECK(memcmp(r.out.p, want, sizeof want) == 0);
  CHECK_EQ_INT(r.err.n, sizeof want_err);
  CHECK(memcmp(r.err.p, want_err, sizeof want_err) == 0);
  run_free(&r);
}

static void stdout_and_stderr_stay_apart(CBoxliteRuntime *rt, CBoxHandle *b) {
  run_t r;
  sh_run(rt, b, "printf out1; printf err1 >&2; printf out2; printf err2 >&2; exit 3", &r);
  CHECK_EQ_INT(r.code, 3);
  CHECK(buf_is(&r.out, "out1out2"));
  CHECK(buf_is(&r.err, "err1err2"));
  run_free(&r);
}

static void one_mebibyte_arrives_intact(CBoxliteRuntime *rt, CBoxHandle *b) {
  run_t r;
  sh_run(rt, b,
         "head -c 1048576 /dev/urandom > /tmp/big && cat /tmp/big && crc32 /tmp/big >&2",
         &r);
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_INT(r.out.n, 1048576);
  CHECK_MSG(r.err.n > 0, "no checksum on stderr");
  unsigned long guest = strtoul((char *)r.err.p, NULL, 16);
  uint32_t host = crc32_of(r.out.p, r.out.n);
  CHECK_MSG(guest == host, "CRC-32 differs: guest %s, host %08x (%ld chunks)",
            (char *)r.err.p, host, r.out_chunks);
  run_free(&r);
}

static void large_stderr_is_counted_exactly(CBoxliteRuntime *rt, CBoxHandle *b) {
  run_t r;
  sh_run(rt, b, "head -c 300000 /dev/zero >&2; printf done", &r);
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_INT(r.err.n, 300000);
  for (size_t i = 0; i < r.err.n; i++) CHECK(r.err.p[i] == 0);
  CHECK(buf_is(&r.out, "done"));
  run_free(&r);
}

static void exit_codes_and_signals(CBoxliteRuntime *rt, CBoxHandle *b) {
  run_t r;
  sh_run(rt, b, "exit 255", &r);
  CHECK_EQ_INT(r.code, 255);
  run_free(&r);
  sh_run(rt, b, "kill -9 $$", &r);
  CHECK_EQ_INT(r.code, -9);
  run_free(&r);
  sh_run(rt, b, "kill -TERM $$", &r);
  CHECK_EQ_INT(r.code, -15);
  run_free(&r);
}

static void a_command_runs_without_a_shell(CBoxliteRuntime *rt, CBoxHandle *b) {
  const char *argv[] = {"echo", "-n", "x  y", ""};
  run_t r = {0};
  CExecutionHandle *x = exec_start(b, &r, 4, argv);
  WAIT_FOR(rt, r.exited, 60);
  boxlite_execution_free(x);
  CHECK_EQ_INT(r.code, 0);
  CHECK(buf_is(&r.out, "x  y "));
  run_free(&r);
}

static void env_workdir_and_user_apply(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  const char *args[] = {"-c", "printf '%s|%s|%s|' \"$GREETING\" \"$PWD\" \"${IGNORED-unset}\"; id -u"};
  const char *env[] = {"GREETING", "hello world", "IGNORED"}; /* odd: the last is ignored */
  BoxliteCommand c = {0};
  c.command = "sh";
  c.args = args;
  c.argc = 2;
  c.env_pairs = env;
  c.env_count = 3;
  c.workdir = "/tmp";
  c.user = "1000:1000";
  CExecutionHandle *x = NULL;
  run_t r = {0};
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  MUST(boxlite_execution_on_stdout(x, run_on_out, &r, &err), &err);
  MUST(boxlite_execution_on_stderr(x, run_on_err, &r, &err), &err);
  MUST(boxlite_execution_on_exit(x, run_on_exit, &r, &err), &err);
  WAIT_FOR(rt, r.exited, 60);
  boxlite_execution_free(x);
  CHECK_MSG(r.code == 0, "exit %d: %s", r.code, r.err.p ? (char *)r.err.p : "");
  CHECK_MSG(buf_is(&r.out, "hello world|/tmp|unset|1000\n"), "got [%s]", (char *)r.out.p);
  run_free(&r);
}

static void stdin_is_delivered_byte_for_byte(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  const char *argv[] = {"cat"};
  run_t r = {0};
  CExecutionHandle *x = exec_start(b, &r, 1, argv);
  enum { N = 200000 };
  unsigned char *data = malloc(N);
  CHECK(data != NULL);
  uint32_t s = 12345;
  for (size_t i = 0; i < N; i++) {
    s = s * 1103515245u + 12345u;
    data[i] = (unsigned char)(s >> 16);
  }
  /* In pieces, as a program feeding a process would; a zero-length write is a no-op. */
  MUST(boxlite_execution_stdin_write(x, data, 0, &err), &err);
  for (size_t off = 0; off < N; off += 65536) {
    size_t n = N - off < 65536 ? N - off : 65536;
    MUST(boxlite_execution_stdin_write(x, data + off, n, &err), &err);
  }
  MUST(boxlite_execution_stdin_close(x, &err), &err);
  MUST(boxlite_execution_stdin_close(x, &err), &err); /* idempotent */
  EXPECT_ERR(boxlite_execution_stdin_write(x, data, 1, &err), &err, InvalidState, "closed");
  WAIT_FOR(rt, r.exited, 60);
  boxlite_execution_free(x);
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_INT(r.out.n, N);
  CHECK(memcmp(r.out.p, data, N) == 0);
  CHECK_EQ_INT(r.late_chunks, 0);
  free(data);
  run_free(&r);
}

/* A stream never registered is not read; the exit still comes. */
static void unregistered_streams_do_not_hold_the_exit(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  const char *args[] = {"-c", "echo not read; echo nor this >&2; exit 4"};
  BoxliteCommand c = {0};
  c.command = "sh";
  c.args = args;
  c.argc = 2;
  CExecutionHandle *x = NULL;
  run_t r = {0};
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  MUST(boxlite_execution_on_exit(x, run_on_exit, &r, &err), &err);
  WAIT_FOR(rt, r.exited, 60);
  drain(rt, 200);
  boxlite_execution_free(x);
  drain(rt, 200);
  CHECK_EQ_INT(r.code, 4);
  CHECK_EQ_INT(r.exited, 1);
  CHECK_EQ_INT(r.out.n + r.err.n, 0);
}

int main(void) {
  CBoxliteRuntime *rt = runtime_open(NULL);
  CBoxHandle *b = box_new(rt, 1);

  no_added_newline(rt, b);
  binary_bytes_with_nul_are_kept(rt, b);
  stdout_and_stderr_stay_apart(rt, b);
  one_mebibyte_arrives_intact(rt, b);
  large_stderr_is_counted_exactly(rt, b);
  exit_codes_and_signals(rt, b);
  a_command_runs_without_a_shell(rt, b);
  env_workdir_and_user_apply(rt, b);
  stdin_is_delivered_byte_for_byte(rt, b);
  unregistered_streams_do_not_hold_the_exit(rt, b);

  box_remove(rt, b);
  boxlite_runtime_free(rt);
  printf("exec_output: ok\n");
  return 0;
}
