/* boxlite_runtime_free with events still queued: their callbacks never run and their
 * payloads (box handles, info lists, error messages, output chunks) are freed; the
 * LeakSanitizer run of this program is the proof. Handles derived from the runtime are
 * freed after it. The box, durable, outlives the runtime; an execution freed just
 * before a runtime is freed is still killed in it; a last runtime removes the box. */
#include "harness.h"

static int called;

static void on_any_unit(CBoxliteError *e, void *ud) { (void)e, (void)ud, called++; }
static void on_any_box(CBoxHandle *b, CBoxliteError *e, void *ud) { (void)b, (void)e, (void)ud, called++; }
static void on_any_info(CBoxInfo *i, CBoxliteError *e, void *ud) { (void)i, (void)e, (void)ud, called++; }
static void on_any_list(CBoxInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud, called++; }
static void on_any_images(CImageInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud, called++; }
static void on_any_pull(CImagePullResult *r, CBoxliteError *e, void *ud) { (void)r, (void)e, (void)ud, called++; }
static void on_any_vol(CVolumeInfo *v, CBoxliteError *e, void *ud) { (void)v, (void)e, (void)ud, called++; }
static void on_any_vols(CVolumeInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud, called++; }
static void on_any_metrics(CBoxMetrics *m, CBoxliteError *e, void *ud) { (void)m, (void)e, (void)ud, called++; }
static void on_any_rt_metrics(CRuntimeMetrics *m, CBoxliteError *e, void *ud) { (void)m, (void)e, (void)ud, called++; }
static void on_any_chunk(const uint8_t *d, size_t n, void *ud) { (void)d, (void)n, (void)ud, called++; }
static void on_any_exit(int c, void *ud) { (void)c, (void)ud, called++; }
static void on_any_wait(int c, CBoxliteError *e, void *ud) { (void)c, (void)e, (void)ud, called++; }

int main(void) {
  const char *home = getenv("BOXLITE_HOME");
  CHECK(home != NULL);
  CBoxliteRuntime *rt = runtime_open(home);
  CBoxliteError err = {Ok, NULL};
  CBoxHandle *b = box_new(rt, 1);
  char *id = boxlite_box_id(b);
  CBoxliteImageHandle *images = NULL;
  CBoxliteVolumeHandle *volumes = NULL;
  MUST(boxlite_runtime_images(rt, &images, &err), &err);
  MUST(boxlite_runtime_volumes(rt, &volumes, &err), &err);

  /* Queue events of every kind and do not drain. */
  for (int i = 0; i < 20; i++) {
    MUST(boxlite_list_info(rt, on_any_list, NULL, &err), &err);
    MUST(boxlite_get_info(rt, id, on_any_info, NULL, &err), &err);
    MUST(boxlite_get(rt, id, on_any_box, NULL, &err), &err);            /* a box handle */
    MUST(boxlite_get(rt, "no-such-box", on_any_box, NULL, &err), &err); /* an error */
    MUST(boxlite_box_info(b, on_any_info, NULL, &err), &err);
    MUST(boxlite_box_metrics(b, on_any_metrics, NULL, &err), &err);
    MUST(boxlite_runtime_metrics(rt, on_any_rt_metrics, NULL, &err), &err);
    MUST(boxlite_image_list(images, on_any_images, NULL, &err), &err);
    MUST(boxlite_image_pull(images, IMAGE, on_any_pull, NULL, &err), &err);
    MUST(boxlite_volume_list(volumes, on_any_vols, NULL, &err), &err);
    MUST(boxlite_volume_get(volumes, "no-such-volume", on_any_vol, NULL, &err), &err);
  }
  MUST(boxlite_volume_create(volumes, on_any_vol, NULL, &err), &err);
  CExecutionHandle *x[3];
  const char *args[] = {"-c", "seq 1 20000; seq 1 5000 >&2"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
  for (int i = 0; i < 3; i++) {
    MUST(boxlite_box_exec(b, &c, &x[i], &err), &err);
    MUST(boxlite_execution_on_stdout(x[i], on_any_chunk, NULL, &err), &err);
    MUST(boxlite_execution_on_stderr(x[i], on_any_chunk, NULL, &err), &err);
    MUST(boxlite_execution_on_exit(x[i], on_any_exit, NULL, &err), &err);
    MUST(boxlite_execution_wait(x[i], on_any_wait, NULL, &err), &err);
  }
  /* One still running, and one whose exit is not registered. */
  const char *long_args[] = {"-c", "echo one line; exec sleep 1000"};
  BoxliteCommand lc = {.command = "sh", .args = long_args, .argc = 2};
  CExecutionHandle *running = NULL;
  MUST(boxlite_box_exec(b, &lc, &running, &err), &err);
  MUST(boxlite_execution_on_stdout(running, on_any_chunk, NULL, &err), &err);
  MUST(boxlite_execution_on_exit(running, on_any_exit, NULL, &err), &err);
  MUST(boxlite_stop_box(b, on_any_unit, NULL, &err), &err); /* finishes late, if at all */
  sleep_ms(3000);

  boxlite_runtime_free(rt);
  CHECK_EQ_INT(called, 0);

  /* Handles outlive their runtime: every call fails, freeing works. */
  CHECK_EQ_INT(boxlite_box_info(b, on_any_info, NULL, &err), InvalidState);
  boxlite_error_free(&err);
  for (int i = 0; i < 3; i++) boxlite_execution_free(x[i]);
  boxlite_execution_free(running);
  boxlite_image_free(images);
  boxlite_volume_free(volumes);
  boxlite_box_free(b);
  CHECK_EQ_INT(called, 0);

  /* The box is still there, running. An execution freed just before the runtime is
   * still killed: the runtime's free waits for that. */
  rt = runtime_open(home);
  done_t g = {0};
  MUST(boxlite_get(rt, id, cb_box, &g, &err), &err);
  AWAIT_OK(rt, g, 30);
  b = g.value;
  const char *sleep_args[] = {"-c", "echo up; exec sleep 1011"};
  BoxliteCommand sc = {.command = "sh", .args = sleep_args, .argc = 2};
  run_t r = {0};
  CExecutionHandle *s = NULL;
  MUST(boxlite_box_exec(b, &sc, &s, &err), &err);
  MUST(boxlite_execution_on_stdout(s, run_on_out, &r, &err), &err);
  while (r.out.n < 3) drain(rt, 100);
  boxlite_execution_free(s);
  boxlite_box_free(b);
  boxlite_runtime_free(rt);
  run_free(&r);

  rt = runtime_open(home);
  g = (done_t){0};
  MUST(boxlite_get(rt, id, cb_box, &g, &err), &err);
  AWAIT_OK(rt, g, 30);
  char *ps = sh_out(rt, g.value, "ps -o args");
  CHECK_MSG(strstr(ps, "sleep 1011") == NULL, "still running:\n%s", ps);
  free(ps);
  boxlite_box_free(g.value);

  /* Remove the box. */
  done_t rm = {0};
  MUST(boxlite_remove(rt, id, 1, cb_unit, &rm, &err), &err);
  AWAIT_OK(rt, rm, 60);
  CHECK_EQ_INT(called, 0);
  boxlite_free_string(id);
  boxlite_runtime_free(rt);
  printf("free_queued: ok\n");
  return 0;
}
