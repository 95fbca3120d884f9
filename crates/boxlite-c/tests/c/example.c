/* A complete libboxlite program: open a runtime, create and start a box, run a command
 * with stdin and streamed output, wait for its exit, remove the box, free everything.
 *
 *   cc -std=c11 example.c -I crates/boxlite-c/include target/release/libboxlite.a \
 *      -lpthread -ldl -lm -lrt -o example
 */
#include <stdio.h>
#include <string.h>

#include "boxlite.h"

/* What the callbacks hand back to main, passed to every call as user_data. */
struct state {
  CBoxHandle *box; /* set by on_created; ours to free */
  int done;        /* the awaited callback ran */
  int failed;      /* ...with an error */
  int exit_code;
};

/* A callback's error is borrowed: read it during the call, never free it. */
static void finish(struct state *st, const char *what, CBoxliteError *error) {
  if (error) {
    fprintf(stderr, "%s failed (%d): %s\n", what, (int)error->code,
            error->message ? error->message : "");
    st->failed = 1;
  }
  st->done = 1;
}

static void on_created(CBoxHandle *box, CBoxliteError *error, void *user_data) {
  struct state *st = user_data;
  st->box = box; /* NULL on error */
  finish(st, "create", error);
}

static void on_started(CBoxliteError *error, void *user_data) {
  finish(user_data, "start", error);
}

static void on_removed(CBoxliteError *error, void *user_data) {
  finish(user_data, "remove", error);
}

/* Chunks are the bytes as the process wrote them: not NUL-terminated, no line split. */
static void on_stdout(const uint8_t *data, size_t len, void *user_data) {
  (void)user_data;
  fwrite(data, 1, len, stdout);
}

static void on_stderr(const uint8_t *data, size_t len, void *user_data) {
  (void)user_data;
  fwrite(data, 1, len, stderr);
}

/* Called once per execution, after its last chunk. */
static void on_exit_code(int code, void *user_data) {
  struct state *st = user_data;
  st->exit_code = code;
  st->done = 1;
}

/* Callbacks run only here, on this thread: drain until the awaited one has run. */
static int wait_for(CBoxliteRuntime *rt, struct state *st) {
  while (!st->done) {
    if (boxlite_runtime_drain(rt, -1, NULL) < 0) return -1;
  }
  st->done = 0;
  return st->failed ? -1 : 0;
}

/* A synchronous failure: the message is ours to free. */
static int fail(const char *what, CBoxliteError *err) {
  fprintf(stderr, "%s: error %d: %s\n", what, (int)err->code, err->message);
  boxlite_error_free(err);
  return -1;
}

static int run(CBoxliteRuntime *rt, struct state *st) {
  CBoxliteError err = {Ok, NULL};

  CBoxliteOptions *opts = NULL;
  if (boxlite_options_new("boxlite/busybox", &opts, &err) != Ok) return fail("options", &err);
  boxlite_options_set_memory(opts, 256);
  boxlite_options_add_env(opts, "GREETING", "hello");
  BoxliteErrorCode rc = boxlite_create_box(rt, opts, on_created, st, &err);
  boxlite_options_free(opts); /* the call copied them */
  if (rc != Ok) return fail("create", &err);
  if (wait_for(rt, st) != 0) return -1;

  if (boxlite_start_box(st->box, on_started, st, &err) != Ok) return fail("start", &err);
  if (wait_for(rt, st) != 0) return -1;

  const char *args[] = {"-c", "echo \"$GREETING from $(uname -s)\"; read name; "
                              "echo \"bye $name\" >&2; exit 3"};
  BoxliteCommand cmd = {.command = "sh", .args = args, .argc = 2};
  CExecutionHandle *exec = NULL;
  if (boxlite_box_exec(st->box, &cmd, &exec, &err) != Ok) return fail("exec", &err);
  /* Register the callbacks right away: a stream is read once it has one. */
  if (boxlite_execution_on_stdout(exec, on_stdout, st, &err) != Ok ||
      boxlite_execution_on_stderr(exec, on_stderr, st, &err) != Ok ||
      boxlite_execution_on_exit(exec, on_exit_code, st, &err) != Ok ||
      boxlite_execution_stdin_write(exec, (const uint8_t *)"world\n", 6, &err) != Ok ||
      boxlite_execution_stdin_close(exec, &err) != Ok) {
    boxlite_execution_free(exec);
    return fail("execution", &err);
  }
  wait_for(rt, st);
  boxlite_execution_free(exec);
  printf("exit code %d\n", st->exit_code);
  return 0;
}

int main(void) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteRuntime *rt = NULL;
  /* NULL: the home is $BOXLITE_HOME, else ~/.boxlite. */
  if (boxlite_runtime_new(NULL, NULL, 0, &rt, &err) != Ok) return fail("runtime", &err), 1;

  struct state st = {0};
  int ok = run(rt, &st) == 0 && st.exit_code == 3;

  if (st.box) {
    /* Boxes are durable: remove this one (force: stop it first). */
    char *id = boxlite_box_id(st.box);
    if (boxlite_remove(rt, id, 1, on_removed, &st, &err) == Ok)
      ok &= wait_for(rt, &st) == 0;
    else
      ok = fail("remove", &err) == 0;
    boxlite_free_string(id);
    boxlite_box_free(st.box);
  }
  boxlite_runtime_free(rt);
  return ok ? 0 : 1;
}
