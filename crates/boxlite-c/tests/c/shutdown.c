/* After boxlite_runtime_shutdown every call fails at once with InvalidState, on the
 * runtime and on every handle derived from it; the shutdown callback comes through
 * drain; the box it started is stopped (not removed); freeing everything afterwards
 * leaks nothing (LeakSanitizer). */
#include "harness.h"

static void on_chunk(const uint8_t *d, size_t n, void *ud) {
  (void)d, (void)n, (void)ud;
  on_drain_thread();
}
static void on_exit_cb(int code, void *ud) {
  (void)code;
  on_drain_thread();
  (*(int *)ud)++;
}
static void on_wait(int code, CBoxliteError *e, void *ud) { (void)code, (void)e, (void)ud; }
static void on_metrics(CBoxMetrics *m, CBoxliteError *e, void *ud) { (void)m, (void)e, (void)ud; }
static void on_rt_metrics(CRuntimeMetrics *m, CBoxliteError *e, void *ud) {
  (void)m, (void)e, (void)ud;
}
static void on_pull(CImagePullResult *r, CBoxliteError *e, void *ud) { (void)r, (void)e, (void)ud; }
static void on_images(CImageInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud; }
static void on_vol(CVolumeInfo *v, CBoxliteError *e, void *ud) { (void)v, (void)e, (void)ud; }
static void on_vols(CVolumeInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud; }

/* `call` must fail with InvalidState, naming the shutdown, within a second. */
#define CLOSED(call)                                                               \
  do {                                                                             \
    CBoxliteError e_ = {Ok, NULL};                                                 \
    CBoxliteError *err = &e_;                                                      \
    long long t_ = now_ms();                                                       \
    EXPECT_ERR(call, err, InvalidState, "shut down");                              \
    CHECK_MSG(now_ms() - t_ < 1000, "%s took %lld ms", #call, now_ms() - t_);      \
  } while (0)

int main(void) {
  const char *home = getenv("BOXLITE_HOME");
  CHECK(home != NULL);
  CBoxliteRuntime *rt = runtime_open(home);
  CBoxliteError e0 = {Ok, NULL};
  CBoxHandle *b = box_new(rt, 1);
  char *id = boxlite_box_id(b);

  CBoxliteImageHandle *images = NULL;
  CBoxliteVolumeHandle *volumes = NULL;
  MUST(boxlite_runtime_images(rt, &images, &e0), &e0);
  MUST(boxlite_runtime_volumes(rt, &volumes, &e0), &e0);
  CBoxliteOptions *opts = NULL;
  MUST(boxlite_options_new(IMAGE, &opts, &e0), &e0);

  /* A command still running when the runtime shuts down. */
  run_t xr = {0};
  const char *args[] = {"-c", "echo up; exec sleep 1000"};
  BoxliteCommand cmd = {.command = "sh", .args = args, .argc = 2};
  CExecutionHandle *x = NULL;
  MUST(boxlite_box_exec(b, &cmd, &x, &e0), &e0);
  MUST(boxlite_execution_on_stdout(x, run_on_out, &xr, &e0), &e0);
  MUST(boxlite_execution_on_exit(x, run_on_exit, &xr, &e0), &e0);
  /* A second execution whose callbacks are not registered yet. */
  CExecutionHandle *y = NULL;
  MUST(boxlite_box_exec(b, &cmd, &y, &e0), &e0);
  /* A third, freed right after the shutdown call: its exit still comes, once. */
  run_t wr = {0};
  CExecutionHandle *w = NULL;
  MUST(boxlite_box_exec(b, &cmd, &w, &e0), &e0);
  MUST(boxlite_execution_on_exit(w, run_on_exit, &wr, &e0), &e0);
  drain(rt, 500);

  done_t down = {0};
  MUST(boxlite_runtime_shutdown(rt, 10, cb_unit, &down, &e0), &e0);
  boxlite_execution_free(w);

  /* The runtime. */
  CLOSED(boxlite_runtime_shutdown(rt, 10, cb_unit, NULL, err));
  CLOSED(boxlite_create_box(rt, opts, cb_box, NULL, err));
  CLOSED(boxlite_get_or_create_box(rt, (boxlite_options_set_name(opts, "n"), opts),
                                   cb_box_created, NULL, err));
  CLOSED(boxlite_get(rt, id, cb_box, NULL, err));
  CLOSED(boxlite_get_info(rt, id, cb_info, NULL, err));
  CLOSED(boxlite_list_info(rt, cb_info_list, NULL, err));
  CLOSED(boxlite_remove(rt, id, 1, cb_unit, NULL, err));
  CLOSED(boxlite_runtime_metrics(rt, on_rt_metrics, NULL, err));
  CBoxliteImageHandle *images2 = NULL;
  CBoxliteVolumeHandle *volumes2 = NULL;
  CLOSED(boxlite_runtime_images(rt, &images2, err));
  CLOSED(boxlite_runtime_volumes(rt, &volumes2, err));
  CHECK(images2 == NULL && volumes2 == NULL);
  /* The box. */
  CLOSED(boxlite_start_box(b, cb_unit, NULL, err));
  CLOSED(boxlite_stop_box(b, cb_unit, NULL, err));
  CLOSED(boxlite_box_info(b, cb_info, NULL, err));
  CLOSED(boxlite_box_metrics(b, on_metrics, NULL, err));
  CLOSED(boxlite_copy_into(b, "/etc/hostname", "/tmp/", cb_unit, NULL, err));
  CLOSED(boxlite_copy_out(b, "/etc/hostname", "/tmp/x", cb_unit, NULL, err));
  CExecutionHandle *z = NULL;
  CLOSED(boxlite_box_exec(b, &cmd, &z, err));
  CHECK(z == NULL);
  /* The executions. */
  CLOSED(boxlite_execution_on_stdout(y, on_chunk, NULL, err));
  CLOSED(boxlite_execution_on_stderr(y, on_chunk, NULL, err));
  int exits = 0;
  CLOSED(boxlite_execution_on_exit(y, on_exit_cb, &exits, err));
  CLOSED(boxlite_execution_stdin_write(x, (const uint8_t *)"x", 1, err));
  CLOSED(boxlite_execution_stdin_close(x, err));
  CLOSED(boxlite_execution_wait(x, on_wait, NULL, err));
  CLOSED(boxlite_execution_kill(x, cb_unit, NULL, err));
  CLOSED(boxlite_execution_signal(x, 15, cb_unit, NULL, err));
  CLOSED(boxlite_execution_tty_resize(x, 10, 10, cb_unit, NULL, err));
  /* Images and volumes. */
  CLOSED(boxlite_image_pull(images, IMAGE, on_pull, NULL, err));
  CLOSED(boxlite_image_list(images, on_images, NULL, err));
  CLOSED(boxlite_volume_create(volumes, on_vol, NULL, err));
  CLOSED(boxlite_volume_list(volumes, on_vols, NULL, err));
  CLOSED(boxlite_volume_get(volumes, "v", on_vol, NULL, err));
  CLOSED(boxlite_volume_remove(volumes, "v", 1, cb_unit, NULL, err));

  /* Without an error structure the code alone says it. */
  CHECK_EQ_INT(boxlite_list_info(rt, cb_info_list, NULL, NULL), InvalidState);

  /* What still works: the box id, option setters, drain. */
  char *id2 = boxlite_box_id(b);
  CHECK(id2 != NULL && strcmp(id, id2) == 0);
  boxlite_free_string(id2);

  long long t = now_ms();
  AWAIT_OK(rt, down, 60);
  CHECK_EQ_INT(down.calls, 1);
  /* The running command's exit comes, once: its box was stopped under it. */
  WAIT_FOR(rt, xr.exited, 30);
  CHECK_MSG(xr.code == BOXLITE_EXIT_FAILED || (xr.code < 0 && xr.code >= -64),
            "exit code %d", xr.code);
  CHECK(buf_is(&xr.out, "up\n"));
  /* The one freed after the shutdown call gets its exit too, as freed. */
  WAIT_FOR(rt, wr.exited, 30);
  CHECK_EQ_INT(wr.code, BOXLITE_EXIT_FORCE_CLOSED);
  printf("shutdown took %lld ms, exit code %d\n", now_ms() - t, xr.code);

  boxlite_execution_free(x);
  boxlite_execution_free(y);
  for (int i = 0; i < 3; i++) drain(rt, 50);
  CHECK_EQ_INT(xr.exited, 1);
  CHECK_EQ_INT(wr.exited, 1);
  CHECK_EQ_INT(xr.late_chunks, 0);
  CHECK_EQ_INT(exits, 0);
  run_free(&xr);
  boxlite_image_free(images);
  boxlite_volume_free(volumes);
  boxlite_options_free(opts);
  boxlite_box_free(b);
  boxlite_runtime_free(rt);

  /* The box was stopped, not removed: a new runtime finds it stopped. */
  rt = runtime_open(home);
  done_t info = {0};
  MUST(boxlite_get_info(rt, id, cb_info, &info, &e0), &e0);
  AWAIT_OK(rt, info, 30);
  CBoxInfo *i = info.value;
  CHECK_MSG(strcmp(i->status, "stopped") == 0, "status %s", i->status);
  CHECK_EQ_INT(i->running, 0);
  CHECK_EQ_INT(i->pid, 0);
  boxlite_free_box_info(i);
  done_t rm = {0};
  MUST(boxlite_remove(rt, id, 0, cb_unit, &rm, &e0), &e0);
  AWAIT_OK(rt, rm, 30);
  boxlite_free_string(id);
  boxlite_runtime_free(rt);
  printf("shutdown: ok\n");
  return 0;
}
