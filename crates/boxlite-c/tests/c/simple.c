/* The simple API: boxlite_simple_new starts a box (in $BOXLITE_HOME), boxlite_simple_run
 * runs commands to completion with their output as text, boxlite_simple_free removes
 * the box. A bad image fails simple_new with a message naming it and leaves nothing. */
#include "harness.h"

static CBoxliteExecResult *run(CBoxliteSimple *s, const char *cmd, int argc,
                               const char *const *args) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteExecResult *r = NULL;
  MUST(boxlite_simple_run(s, cmd, args, argc, &r, &err), &err);
  CHECK(r != NULL && r->stdout_text != NULL && r->stderr_text != NULL);
  return r;
}

static int boxes_in_home(void) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteRuntime *rt = runtime_open(NULL);
  done_t d = {0};
  MUST(boxlite_list_info(rt, cb_info_list, &d, &err), &err);
  AWAIT_OK(rt, d, 30);
  CBoxInfoList *l = d.value;
  int n = l->count;
  boxlite_free_box_info_list(l);
  boxlite_runtime_free(rt);
  return n;
}

int main(void) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteSimple *s = NULL;

  /* A bad image: a clear error, no handle, no box left. */
  EXPECT_FAIL(boxlite_simple_new("boxlite/no-such-image", 0, 0, &s, &err), &err,
              "the built-in images are");
  CHECK(s == NULL);
  /* An image whose registry cannot be reached (nothing listens on port 9). */
  EXPECT_ERR(boxlite_simple_new("127.0.0.1:9/none/such:1", 0, 0, &s, &err), &err, Image,
             "registry 127.0.0.1:9 is unreachable");
  CHECK(s == NULL);
  EXPECT_ERR(boxlite_simple_new(IMAGE, -1, 0, &s, &err), &err, InvalidArgument, "cpus");
  EXPECT_ERR(boxlite_simple_new(IMAGE, 0, -1, &s, &err), &err, InvalidArgument,
             "memory_mib");
  EXPECT_ERR(boxlite_simple_new("\xff", 0, 0, &s, &err), &err, InvalidArgument, "UTF-8");
  CHECK(s == NULL);
  CHECK_EQ_INT(boxes_in_home(), 0);

  MUST(boxlite_simple_new(IMAGE, 1, 256, &s, &err), &err);
  CHECK(s != NULL);
  CHECK_EQ_INT(boxes_in_home(), 1);

  const char *a1[] = {"-c", "printf hello; printf oops >&2; exit 7"};
  CBoxliteExecResult *r = run(s, "sh", 2, a1);
  CHECK_EQ_INT(r->exit_code, 7);
  CHECK(strcmp(r->stdout_text, "hello") == 0);
  CHECK(strcmp(r->stderr_text, "oops") == 0);
  boxlite_result_free(r);

  r = run(s, "true", 0, NULL);
  CHECK_EQ_INT(r->exit_code, 0);
  CHECK(r->stdout_text[0] == 0 && r->stderr_text[0] == 0);
  boxlite_result_free(r);

  /* Output is text: invalid UTF-8 becomes U+FFFD. */
  const char *a2[] = {"-c", "printf 'a\\377b\\n'"};
  r = run(s, "sh", 2, a2);
  CHECK(strcmp(r->stdout_text, "a\xef\xbf\xbd" "b\n") == 0);
  boxlite_result_free(r);

  const char *a3[] = {"-c", "kill -9 $$"};
  r = run(s, "sh", 2, a3);
  CHECK_EQ_INT(r->exit_code, -9);
  boxlite_result_free(r);

  /* A larger output comes whole. */
  const char *a4[] = {"-c", "seq 1 20000"};
  r = run(s, "sh", 2, a4);
  CHECK_EQ_INT(r->exit_code, 0);
  CHECK_EQ_INT(strlen(r->stdout_text), 108894);
  boxlite_result_free(r);

  /* Refused arguments. */
  CBoxliteExecResult *none = NULL;
  EXPECT_ERR(boxlite_simple_run(s, NULL, NULL, 0, &none, &err), &err, InvalidArgument,
             "command");
  const char *bad[] = {"\xfe"};
  EXPECT_ERR(boxlite_simple_run(s, "echo", bad, 1, &none, &err), &err, InvalidArgument,
             "UTF-8");
  EXPECT_ERR(boxlite_simple_run(s, "echo", NULL, 1, &none, &err), &err, InvalidArgument,
             "args is NULL");
  CHECK(none == NULL);
  /* A command that cannot start is an error, not an exit code. */
  EXPECT_FAIL(boxlite_simple_run(s, "/no/such/program", NULL, 0, &none, &err), &err,
              "/no/such/program");
  CHECK(none == NULL);
  boxlite_result_free(NULL);

  boxlite_simple_free(s);
  CHECK_EQ_INT(boxes_in_home(), 0);
  printf("simple: ok\n");
  return 0;
}
