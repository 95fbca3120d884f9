/* Refused input, never a crash. A NULL callback is InvalidArgument at every entry point
 * that takes one; so is a NULL handle or out-pointer; each fills out_error with a
 * message that boxlite_error_free frees (and works as well with out_error NULL). Bad
 * values: an empty image, bad cpus (kept by the setter, refused by create, naming it),
 * a bad signal or terminal size, invalid UTF-8, unsupported options; a missing box or
 * volume is NotFound, through the callback. Nothing refused is queued: no callback
 * ever runs for it. */
#include "harness.h"

static int stray; /* callbacks of refused calls */

static void s_unit(CBoxliteError *e, void *ud) { (void)e, (void)ud, stray++; }
static void s_box(CBoxHandle *b, CBoxliteError *e, void *ud) { (void)b, (void)e, (void)ud, stray++; }
static void s_box2(CBoxHandle *b, bool c, CBoxliteError *e, void *ud) { (void)b, (void)c, (void)e, (void)ud, stray++; }
static void s_info(CBoxInfo *i, CBoxliteError *e, void *ud) { (void)i, (void)e, (void)ud, stray++; }
static void s_list(CBoxInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud, stray++; }
static void s_metrics(CBoxMetrics *m, CBoxliteError *e, void *ud) { (void)m, (void)e, (void)ud, stray++; }
static void s_rt_metrics(CRuntimeMetrics *m, CBoxliteError *e, void *ud) { (void)m, (void)e, (void)ud, stray++; }
static void s_chunk(const uint8_t *d, size_t n, void *ud) { (void)d, (void)n, (void)ud, stray++; }
static void s_exit(int c, void *ud) { (void)c, (void)ud, stray++; }
static void s_wait(int c, CBoxliteError *e, void *ud) { (void)c, (void)e, (void)ud, stray++; }
static void s_pull(CImagePullResult *r, CBoxliteError *e, void *ud) { (void)r, (void)e, (void)ud, stray++; }
static void s_images(CImageInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud, stray++; }
static void s_vol(CVolumeInfo *v, CBoxliteError *e, void *ud) { (void)v, (void)e, (void)ud, stray++; }
static void s_vols(CVolumeInfoList *l, CBoxliteError *e, void *ud) { (void)l, (void)e, (void)ud, stray++; }

/* `call` (using `err`) is refused with `want`, its message containing `needle`; and the
 * same call with out_error NULL returns the same code. */
#define REFUSED(want, needle, call)                                                \
  do {                                                                             \
    CBoxliteError e_ = {Ok, NULL};                                                 \
    CBoxliteError *err = &e_;                                                      \
    EXPECT_ERR(call, err, want, needle);                                           \
    err = NULL;                                                                    \
    CHECK_MSG((call) == (want), "%s with out_error NULL", #call);                  \
  } while (0)

#define NULL_CB(call) REFUSED(InvalidArgument, "cb (the callback) is NULL", call)

static void null_callbacks(CBoxliteRuntime *rt, CBoxHandle *b, CExecutionHandle *x,
                           CBoxliteImageHandle *im, CBoxliteVolumeHandle *vo,
                           CBoxliteOptions *o, const char *id) {
  NULL_CB(boxlite_create_box(rt, o, NULL, NULL, err));
  NULL_CB(boxlite_get_or_create_box(rt, o, NULL, NULL, err));
  NULL_CB(boxlite_get(rt, id, NULL, NULL, err));
  NULL_CB(boxlite_remove(rt, id, 1, NULL, NULL, err));
  NULL_CB(boxlite_get_info(rt, id, NULL, NULL, err));
  NULL_CB(boxlite_list_info(rt, NULL, NULL, err));
  NULL_CB(boxlite_runtime_metrics(rt, NULL, NULL, err));
  NULL_CB(boxlite_runtime_shutdown(rt, 0, NULL, NULL, err));
  NULL_CB(boxlite_start_box(b, NULL, NULL, err));
  NULL_CB(boxlite_stop_box(b, NULL, NULL, err));
  NULL_CB(boxlite_box_info(b, NULL, NULL, err));
  NULL_CB(boxlite_box_metrics(b, NULL, NULL, err));
  NULL_CB(boxlite_copy_into(b, "/etc/hostname", "/tmp/", NULL, NULL, err));
  NULL_CB(boxlite_copy_out(b, "/etc/hostname", "/tmp/x", NULL, NULL, err));
  NULL_CB(boxlite_execution_on_stdout(x, NULL, NULL, err));
  NULL_CB(boxlite_execution_on_stderr(x, NULL, NULL, err));
  NULL_CB(boxlite_execution_on_exit(x, NULL, NULL, err));
  NULL_CB(boxlite_execution_wait(x, NULL, NULL, err));
  NULL_CB(boxlite_execution_kill(x, NULL, NULL, err));
  NULL_CB(boxlite_execution_signal(x, 15, NULL, NULL, err));
  NULL_CB(boxlite_execution_tty_resize(x, 10, 10, NULL, NULL, err));
  NULL_CB(boxlite_image_pull(im, IMAGE, NULL, NULL, err));
  NULL_CB(boxlite_image_list(im, NULL, NULL, err));
  NULL_CB(boxlite_volume_create(vo, NULL, NULL, err));
  NULL_CB(boxlite_volume_list(vo, NULL, NULL, err));
  NULL_CB(boxlite_volume_get(vo, "v", NULL, NULL, err));
  NULL_CB(boxlite_volume_remove(vo, "v", 1, NULL, NULL, err));
}

#define NULL_ARG(needle, call) REFUSED(InvalidArgument, needle, call)

static void null_handles_and_pointers(CBoxliteRuntime *rt, CBoxHandle *b,
                                      CBoxliteImageHandle *im, CBoxliteVolumeHandle *vo,
                                      CBoxliteOptions *o) {
  BoxliteCommand c = {.command = "true"};
  /* Out-pointers start non-NULL: a refused call must set them to NULL. */
  CBoxliteOptions *o_out = (CBoxliteOptions *)&c;
  CExecutionHandle *x_out = (CExecutionHandle *)&c;
  CBoxliteImageHandle *im_out = (CBoxliteImageHandle *)&c;
  CBoxliteVolumeHandle *vo_out = (CBoxliteVolumeHandle *)&c;
  CBoxliteSimple *s_out = (CBoxliteSimple *)&c;

  /* Runtime-level calls. */
  NULL_ARG("out_runtime", boxlite_runtime_new(NULL, NULL, 0, NULL, err));
  CBoxliteRuntime *rt_out = (CBoxliteRuntime *)&c;
  NULL_ARG("image_registries_count", boxlite_runtime_new(NULL, NULL, -1, &rt_out, err));
  CHECK(rt_out == NULL);
  NULL_ARG("runtime", boxlite_create_box(NULL, o, s_box, NULL, err));
  NULL_ARG("opts", boxlite_create_box(rt, NULL, s_box, NULL, err));
  NULL_ARG("runtime", boxlite_get_or_create_box(NULL, o, s_box2, NULL, err));
  NULL_ARG("opts", boxlite_get_or_create_box(rt, NULL, s_box2, NULL, err));
  NULL_ARG("runtime", boxlite_get(NULL, "x", s_box, NULL, err));
  NULL_ARG("id_or_name", boxlite_get(rt, NULL, s_box, NULL, err));
  NULL_ARG("runtime", boxlite_remove(NULL, "x", 1, s_unit, NULL, err));
  NULL_ARG("id_or_name", boxlite_remove(rt, NULL, 1, s_unit, NULL, err));
  NULL_ARG("runtime", boxlite_get_info(NULL, "x", s_info, NULL, err));
  NULL_ARG("id_or_name", boxlite_get_info(rt, NULL, s_info, NULL, err));
  NULL_ARG("runtime", boxlite_list_info(NULL, s_list, NULL, err));
  NULL_ARG("runtime", boxlite_runtime_metrics(NULL, s_rt_metrics, NULL, err));
  NULL_ARG("runtime", boxlite_runtime_shutdown(NULL, 0, s_unit, NULL, err));
  NULL_ARG("runtime", boxlite_runtime_images(NULL, &im_out, err));
  CHECK(im_out == NULL);
  NULL_ARG("out_handle", boxlite_runtime_images(rt, NULL, err));
  NULL_ARG("runtime", boxlite_runtime_volumes(NULL, &vo_out, err));
  CHECK(vo_out == NULL);
  NULL_ARG("out_handle", boxlite_runtime_volumes(rt, NULL, err));
  /* Options. */
  NULL_ARG("out_opts", boxlite_options_new(IMAGE, NULL, err));
  NULL_ARG("image", boxlite_options_new(NULL, &o_out, err));
  CHECK(o_out == NULL);
  CHECK_EQ_INT(boxlite_options_add_port(NULL, 8080, 80, BoxlitePortProtocolTcp, NULL),
               InvalidArgument);
  /* Boxes. */
  NULL_ARG("handle", boxlite_start_box(NULL, s_unit, NULL, err));
  NULL_ARG("handle", boxlite_stop_box(NULL, s_unit, NULL, err));
  NULL_ARG("handle", boxlite_box_info(NULL, s_info, NULL, err));
  NULL_ARG("handle", boxlite_box_metrics(NULL, s_metrics, NULL, err));
  NULL_ARG("handle", boxlite_copy_into(NULL, "/a", "/b", s_unit, NULL, err));
  NULL_ARG("host_src", boxlite_copy_into(b, NULL, "/b", s_unit, NULL, err));
  NULL_ARG("guest_dst", boxlite_copy_into(b, "/a", NULL, s_unit, NULL, err));
  NULL_ARG("handle", boxlite_copy_out(NULL, "/a", "/b", s_unit, NULL, err));
  NULL_ARG("guest_src", boxlite_copy_out(b, NULL, "/b", s_unit, NULL, err));
  NULL_ARG("host_dst", boxlite_copy_out(b, "/a", NULL, s_unit, NULL, err));
  CHECK(boxlite_box_id(NULL) == NULL);
  /* Executions. */
  NULL_ARG("out_execution", boxlite_box_exec(b, &c, NULL, err));
  NULL_ARG("handle", boxlite_box_exec(NULL, &c, &x_out, err));
  CHECK(x_out == NULL);
  NULL_ARG("cmd", boxlite_box_exec(b, NULL, &x_out, err));
  NULL_ARG("execution", boxlite_execution_on_stdout(NULL, s_chunk, NULL, err));
  NULL_ARG("execution", boxlite_execution_on_stderr(NULL, s_chunk, NULL, err));
  NULL_ARG("execution", boxlite_execution_on_exit(NULL, s_exit, NULL, err));
  NULL_ARG("execution", boxlite_execution_stdin_write(NULL, (const uint8_t *)"x", 1, err));
  NULL_ARG("execution", boxlite_execution_stdin_close(NULL, err));
  NULL_ARG("execution", boxlite_execution_wait(NULL, s_wait, NULL, err));
  NULL_ARG("execution", boxlite_execution_kill(NULL, s_unit, NULL, err));
  NULL_ARG("execution", boxlite_execution_signal(NULL, 9, s_unit, NULL, err));
  NULL_ARG("execution", boxlite_execution_tty_resize(NULL, 1, 1, s_unit, NULL, err));
  /* Images and volumes. */
  NULL_ARG("handle", boxlite_image_pull(NULL, IMAGE, s_pull, NULL, err));
  NULL_ARG("image_ref", boxlite_image_pull(im, NULL, s_pull, NULL, err));
  NULL_ARG("handle", boxlite_image_list(NULL, s_images, NULL, err));
  NULL_ARG("handle", boxlite_volume_create(NULL, s_vol, NULL, err));
  NULL_ARG("handle", boxlite_volume_list(NULL, s_vols, NULL, err));
  NULL_ARG("handle", boxlite_volume_get(NULL, "v", s_vol, NULL, err));
  NULL_ARG("id", boxlite_volume_get(vo, NULL, s_vol, NULL, err));
  NULL_ARG("handle", boxlite_volume_remove(NULL, "v", 1, s_unit, NULL, err));
  NULL_ARG("id", boxlite_volume_remove(vo, NULL, 1, s_unit, NULL, err));
  /* The simple API. */
  NULL_ARG("out_box", boxlite_simple_new(IMAGE, 0, 0, NULL, err));
  NULL_ARG("image", boxlite_simple_new(NULL, 0, 0, &s_out, err));
  CHECK(s_out == NULL);
  CBoxliteExecResult *res = (CBoxliteExecResult *)&c;
  NULL_ARG("out_result", boxlite_simple_run(NULL, "true", NULL, 0, NULL, err));
  NULL_ARG("box_runner", boxlite_simple_run(NULL, "true", NULL, 0, &res, err));
  CHECK(res == NULL);
  /* Drain. */
  CBoxliteError e = {Ok, NULL};
  CHECK_EQ_INT(boxlite_runtime_drain(NULL, 0, &e), -1);
  EXPECT_ERR(e.code, &e, InvalidArgument, "runtime");
  CHECK_EQ_INT(boxlite_runtime_drain(NULL, -1, NULL), -1);

  /* Every free function accepts NULL; the setters ignore NULL options. */
  boxlite_error_free(NULL);
  boxlite_free_string(NULL);
  boxlite_box_free(NULL);
  boxlite_execution_free(NULL);
  boxlite_options_free(NULL);
  boxlite_runtime_free(NULL);
  boxlite_image_free(NULL);
  boxlite_volume_free(NULL);
  boxlite_free_box_info(NULL);
  boxlite_free_box_info_list(NULL);
  boxlite_free_image_info_list(NULL);
  boxlite_free_image_pull_result(NULL);
  boxlite_free_volume_info(NULL);
  boxlite_free_volume_info_list(NULL);
  boxlite_simple_free(NULL);
  boxlite_result_free(NULL);
  boxlite_options_set_name(NULL, "x");
  boxlite_options_set_cpus(NULL, 1);
  boxlite_options_set_memory(NULL, 1);
  boxlite_options_add_env(NULL, "A", "B");
  boxlite_options_add_volume(NULL, NULL, "/x", 0);
  boxlite_options_set_entrypoint(NULL, NULL, 0);
  /* An error structure with no message frees fine, twice. */
  boxlite_error_free(&e);
  boxlite_error_free(&e);
  CHECK(e.code == Ok && e.message == NULL);
}

/* Options whose bad value is refused by create, naming it. */
static void create_refuses(CBoxliteRuntime *rt, CBoxliteOptions *o, BoxliteErrorCode want,
                           const char *needle) {
  CBoxliteError err = {Ok, NULL};
  EXPECT_ERR(boxlite_create_box(rt, o, s_box, NULL, &err), &err, want, needle);
  boxlite_options_set_name(o, "named");
  EXPECT_ERR(boxlite_get_or_create_box(rt, o, s_box2, NULL, &err), &err, want, needle);
  boxlite_options_free(o);
}

static CBoxliteOptions *opts(void) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteOptions *o = NULL;
  MUST(boxlite_options_new(IMAGE, &o, &err), &err);
  return o;
}

static void bad_values(CBoxliteRuntime *rt, CBoxHandle *b, CExecutionHandle *x,
                       CBoxliteVolumeHandle *vo) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteOptions *o = NULL;
  /* Images. */
  EXPECT_ERR(boxlite_options_new("", &o, &err), &err, InvalidArgument, "image is empty");
  EXPECT_ERR(boxlite_options_new("   ", &o, &err), &err, InvalidArgument, "image is empty");
  EXPECT_ERR(boxlite_options_new("busy\xff\xfe", &o, &err), &err, InvalidArgument,
             "not valid UTF-8");
  CHECK(o == NULL);
  /* Setters keep the first bad value; create names it. */
  o = opts();
  boxlite_options_set_cpus(o, 0);
  boxlite_options_set_memory(o, -5); /* the first bad value is the one reported */
  create_refuses(rt, o, InvalidArgument, "cpus is 0");
  o = opts();
  boxlite_options_set_cpus(o, -2);
  create_refuses(rt, o, InvalidArgument, "cpus is -2");
  o = opts();
  boxlite_options_set_memory(o, 0);
  create_refuses(rt, o, InvalidArgument, "memory_mib");
  o = opts();
  boxlite_options_set_disk_size_gb(o, -1);
  create_refuses(rt, o, InvalidArgument, "disk_size_gb");
  o = opts();
  boxlite_options_set_workdir(o, "relative/dir");
  create_refuses(rt, o, InvalidArgument, "relative/dir");
  o = opts();
  boxlite_options_set_name(o, "bad\xff");
  create_refuses(rt, o, InvalidArgument, "not valid UTF-8");
  o = opts();
  boxlite_options_add_env(o, "A=B", "x");
  create_refuses(rt, o, InvalidArgument, "A=B");
  o = opts();
  boxlite_options_set_rootfs_path(o, "/some/rootfs");
  create_refuses(rt, o, Unsupported, "rootfs_path");
  o = opts();
  boxlite_options_set_auto_pause_interval(o, 4000000000u);
  create_refuses(rt, o, InvalidArgument, "auto_pause_interval");
  o = opts();
  boxlite_options_set_auto_delete_interval(o, 30);
  create_refuses(rt, o, Unsupported, "auto_delete_interval");
  o = opts();
  boxlite_options_set_auto_pause_interval(o, 0); /* 0 (never) is fine */
  boxlite_options_set_auto_delete_interval(o, 0);
  boxlite_options_set_auto_resume_enabled(o, 1);
  boxlite_options_set_detach(o, 1);
  CHECK_EQ_INT(boxlite_options_add_port(o, 8080, 0, BoxlitePortProtocolTcp, NULL),
               InvalidArgument);
  CHECK_EQ_INT(boxlite_options_add_port(o, 8080, 80, BoxlitePortProtocolTcp, "not-an-ip"),
               InvalidArgument);
  create_refuses(rt, o, InvalidArgument, "guest_port is 0");
  o = opts();
  EXPECT_ERR(boxlite_get_or_create_box(rt, o, s_box2, NULL, &err), &err, InvalidArgument,
             "name");
  boxlite_options_free(o);
  /* Registries passed to runtime_new. */
  BoxliteImageRegistry reg = {.host = "127.0.0.1:5000"};
  CBoxliteRuntime *rt2 = NULL;
  EXPECT_ERR(boxlite_runtime_new(NULL, &reg, 1, &rt2, &err), &err, Unsupported,
             "config.toml");
  EXPECT_ERR(boxlite_runtime_new(NULL, NULL, -1, &rt2, &err), &err, InvalidArgument,
             "image_registries_count");
  CHECK(rt2 == NULL);
  EXPECT_ERR(boxlite_runtime_new("\xff", NULL, 0, &rt2, &err), &err, InvalidArgument,
             "UTF-8");
  /* Invalid UTF-8 anywhere a string goes. */
  EXPECT_ERR(boxlite_get(rt, "\xc3\x28", s_box, NULL, &err), &err, InvalidArgument,
             "id_or_name is not valid UTF-8");
  EXPECT_ERR(boxlite_remove(rt, "\xe2\x82", 1, s_unit, NULL, &err), &err, InvalidArgument,
             "UTF-8");
  EXPECT_ERR(boxlite_volume_get(vo, "\x80", s_vol, NULL, &err), &err, InvalidArgument,
             "UTF-8");
  EXPECT_ERR(boxlite_copy_into(b, "/tmp/\xff", "/tmp/", s_unit, NULL, &err), &err,
             InvalidArgument, "UTF-8");
  /* Commands. */
  CExecutionHandle *y = NULL;
  const char *bad_arg[] = {"ok", "\xff"};
  BoxliteCommand c = {.command = "echo", .args = bad_arg, .argc = 2};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, "args[1]");
  c = (BoxliteCommand){.command = NULL};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, "command");
  c = (BoxliteCommand){.command = "echo", .args = NULL, .argc = 2};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, "args is NULL");
  c = (BoxliteCommand){.command = "echo", .argc = -1};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, "count of args");
  c = (BoxliteCommand){.command = "echo", .workdir = "rel"};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, "rel");
  c = (BoxliteCommand){.command = "echo", .timeout_secs = -1.0};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, "timeout_secs");
  const char *bad_env[] = {"", "v"};
  c = (BoxliteCommand){.command = "echo", .env_pairs = bad_env, .env_count = 2};
  EXPECT_ERR(boxlite_box_exec(b, &c, &y, &err), &err, InvalidArgument, NULL);
  CHECK(y == NULL);
  /* Signals and terminal sizes. */
  EXPECT_ERR(boxlite_execution_signal(x, 0, s_unit, NULL, &err), &err, InvalidArgument,
             "signal 0");
  EXPECT_ERR(boxlite_execution_signal(x, 65, s_unit, NULL, &err), &err, InvalidArgument,
             "signal 65");
  EXPECT_ERR(boxlite_execution_signal(x, -9, s_unit, NULL, &err), &err, InvalidArgument,
             "signal -9");
  EXPECT_ERR(boxlite_execution_tty_resize(x, 0, 80, s_unit, NULL, &err), &err,
             InvalidArgument, "rows");
  EXPECT_ERR(boxlite_execution_tty_resize(x, 24, 70000, s_unit, NULL, &err), &err,
             InvalidArgument, "cols");
}

static void on_vol(CVolumeInfo *i, CBoxliteError *e, void *ud) {
  CHECK((i == NULL) == (e != NULL));
  done_note(ud, e, i);
}

/* A missing box or volume is NotFound, through the callback. */
static void missing_things_are_not_found(CBoxliteRuntime *rt, CBoxliteVolumeHandle *vo) {
  CBoxliteError err = {Ok, NULL};
  done_t g = {0}, i = {0}, r = {0}, v = {0}, vr = {0};
  MUST(boxlite_get(rt, "no-such-box", cb_box, &g, &err), &err);
  MUST(boxlite_get_info(rt, "no-such-box", cb_info, &i, &err), &err);
  MUST(boxlite_remove(rt, "no-such-box", 0, cb_unit, &r, &err), &err);
  MUST(boxlite_volume_get(vo, "no-such-volume", on_vol, &v, &err), &err);
  MUST(boxlite_volume_remove(vo, "no-such-volume", 0, cb_unit, &vr, &err), &err);
  done_t *all[] = {&g, &i, &r, &v, &vr};
  for (int k = 0; k < 5; k++) {
    WAIT_FOR(rt, all[k]->done, 30);
    CHECK_MSG(all[k]->code == NotFound, "case %d: code %d (%s)", k, (int)all[k]->code,
              all[k]->msg);
    CHECK_MSG(strstr(all[k]->msg, "no-such-") != NULL, "case %d: message %s", k,
              all[k]->msg);
    CHECK(all[k]->value == NULL);
  }
  /* Forced removal of a missing volume succeeds. */
  done_t f = {0};
  MUST(boxlite_volume_remove(vo, "no-such-volume", 1, cb_unit, &f, &err), &err);
  AWAIT_OK(rt, f, 30);
}

int main(void) {
  CBoxliteRuntime *rt = runtime_open(NULL);
  CBoxliteError err = {Ok, NULL};
  CBoxHandle *b = box_new(rt, 0); /* created, not started */
  char *id = boxlite_box_id(b);
  CBoxliteImageHandle *im = NULL;
  CBoxliteVolumeHandle *vo = NULL;
  MUST(boxlite_runtime_images(rt, &im, &err), &err);
  MUST(boxlite_runtime_volumes(rt, &vo, &err), &err);
  CBoxliteOptions *o = opts();
  boxlite_options_set_name(o, "errors-box");
  /* An execution (it starts the box), to call its functions. */
  run_t r = {0};
  const char *argv[] = {"sleep", "1000"};
  CBoxliteError e = {Ok, NULL};
  BoxliteCommand c = {.command = argv[0], .args = argv + 1, .argc = 1};
  CExecutionHandle *x = NULL;
  MUST(boxlite_box_exec(b, &c, &x, &e), &e);

  null_callbacks(rt, b, x, im, vo, o, id);
  null_handles_and_pointers(rt, b, im, vo, o);
  bad_values(rt, b, x, vo);
  missing_things_are_not_found(rt, vo);

  /* Nothing refused was queued. */
  for (int i = 0; i < 5; i++) drain(rt, 100);
  CHECK_EQ_INT(stray, 0);

  MUST(boxlite_execution_on_exit(x, run_on_exit, &r, &e), &e);
  boxlite_execution_free(x);
  WAIT_FOR(rt, r.exited, 60);
  boxlite_options_free(o);
  boxlite_image_free(im);
  boxlite_volume_free(vo);
  boxlite_free_string(id);
  box_remove(rt, b);
  boxlite_runtime_free(rt);
  CHECK_EQ_INT(stray, 0);
  printf("errors: ok\n");
  return 0;
}
