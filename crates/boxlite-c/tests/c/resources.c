/* Images (pull, list), volumes (create, list, get, remove), boxes (options, info, list,
 * get, get-or-create, start, stop, remove), file copies in and out (a binary file and a
 * directory, round trip), and metrics; every returned structure freed with its free
 * function (LeakSanitizer checks). */
#include "harness.h"

#include <sys/stat.h>
#include <time.h>

/* ---- callbacks that keep the value ---- */

static void on_pull(CImagePullResult *r, CBoxliteError *e, void *ud) {
  CHECK((r == NULL) == (e != NULL));
  done_note(ud, e, r);
}
static void on_images(CImageInfoList *l, CBoxliteError *e, void *ud) {
  CHECK((l == NULL) == (e != NULL));
  done_note(ud, e, l);
}
static void on_vol(CVolumeInfo *v, CBoxliteError *e, void *ud) {
  CHECK((v == NULL) == (e != NULL));
  done_note(ud, e, v);
}
static void on_vols(CVolumeInfoList *l, CBoxliteError *e, void *ud) {
  CHECK((l == NULL) == (e != NULL));
  done_note(ud, e, l);
}

static CBoxMetrics box_metrics;
static void on_box_metrics(CBoxMetrics *m, CBoxliteError *e, void *ud) {
  if (m) box_metrics = *m; /* borrowed: copied during the call */
  done_note(ud, e, NULL);
}
static CRuntimeMetrics rt_metrics;
static void on_rt_metrics(CRuntimeMetrics *m, CBoxliteError *e, void *ud) {
  if (m) rt_metrics = *m;
  done_note(ud, e, NULL);
}

/* ---- images ---- */

static void images(CBoxliteRuntime *rt) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteImageHandle *im = NULL;
  MUST(boxlite_runtime_images(rt, &im, &err), &err);

  done_t p = {0};
  MUST(boxlite_image_pull(im, IMAGE, on_pull, &p, &err), &err);
  AWAIT_OK(rt, p, 120);
  CImagePullResult *pr = p.value;
  CHECK_MSG(strcmp(pr->reference, "boxlite/busybox:latest") == 0, "reference %s",
            pr->reference);
  CHECK_MSG(strncmp(pr->config_digest, "sha256:", 7) == 0, "digest %s", pr->config_digest);
  CHECK_EQ_INT(pr->layer_count, 0); /* built in: imported, not pulled */

  done_t l = {0};
  MUST(boxlite_image_list(im, on_images, &l, &err), &err);
  AWAIT_OK(rt, l, 30);
  CImageInfoList *list = l.value;
  int found = 0;
  for (int i = 0; i < list->count; i++) {
    CImageInfo *it = &list->items[i];
    if (strcmp(it->reference, "boxlite/busybox:latest") != 0) continue;
    found++;
    CHECK(strcmp(it->repository, "boxlite/busybox") == 0);
    CHECK(strcmp(it->tag, "latest") == 0);
    CHECK(strcmp(it->id, pr->config_digest) == 0);
    CHECK(it->has_size == 1 && it->size > 0);
  }
  CHECK_EQ_INT(found, 1);
  boxlite_free_image_info_list(list);
  boxlite_free_image_pull_result(pr);

  /* An unknown built-in image: an error naming it, no network needed. */
  done_t bad = {0};
  MUST(boxlite_image_pull(im, "boxlite/no-such-image", on_pull, &bad, &err), &err);
  WAIT_FOR(rt, bad.done, 30);
  CHECK(bad.code != Ok && bad.value == NULL);
  CHECK_MSG(strstr(bad.msg, "no-such-image") != NULL, "message: %s", bad.msg);
  boxlite_image_free(im);
}

/* ---- volumes ---- */

static void volumes(CBoxliteRuntime *rt) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteVolumeHandle *vo = NULL;
  MUST(boxlite_runtime_volumes(rt, &vo, &err), &err);

  done_t c = {0};
  MUST(boxlite_volume_create(vo, on_vol, &c, &err), &err);
  AWAIT_OK(rt, c, 30);
  CVolumeInfo *v = c.value;
  CHECK_MSG(strncmp(v->id, "vol-", 4) == 0 && strlen(v->id) == 16, "id %s", v->id);
  CHECK_MSG(strlen(v->created_at) >= 20 && v->created_at[4] == '-', "created_at %s",
            v->created_at);
  CHECK_EQ_INT(v->has_size, 0);
  char id[64];
  snprintf(id, sizeof id, "%s", v->id);

  done_t c2 = {0};
  MUST(boxlite_volume_create(vo, on_vol, &c2, &err), &err);
  AWAIT_OK(rt, c2, 30);
  CVolumeInfo *v2 = c2.value;
  CHECK(strcmp(v2->id, id) != 0);

  done_t l = {0};
  MUST(boxlite_volume_list(vo, on_vols, &l, &err), &err);
  AWAIT_OK(rt, l, 30);
  CVolumeInfoList *list = l.value;
  CHECK_EQ_INT(list->count, 2);
  int found = 0;
  for (int i = 0; i < list->count; i++) found += strcmp(list->items[i].id, id) == 0;
  CHECK_EQ_INT(found, 1);
  boxlite_free_volume_info_list(list);

  done_t g = {0};
  MUST(boxlite_volume_get(vo, id, on_vol, &g, &err), &err);
  AWAIT_OK(rt, g, 30);
  CVolumeInfo *got = g.value;
  CHECK(strcmp(got->id, id) == 0);
  CHECK(strcmp(got->created_at, v->created_at) == 0);
  boxlite_free_volume_info(got);

  done_t r = {0};
  MUST(boxlite_volume_remove(vo, id, 0, cb_unit, &r, &err), &err);
  AWAIT_OK(rt, r, 30);
  done_t g2 = {0}, r2 = {0};
  MUST(boxlite_volume_get(vo, id, on_vol, &g2, &err), &err);
  MUST(boxlite_volume_remove(vo, id, 0, cb_unit, &r2, &err), &err);
  WAIT_FOR(rt, g2.done, 30);
  WAIT_FOR(rt, r2.done, 30);
  CHECK_EQ_INT(g2.code, NotFound);
  CHECK_EQ_INT(r2.code, NotFound);

  done_t l2 = {0};
  MUST(boxlite_volume_list(vo, on_vols, &l2, &err), &err);
  AWAIT_OK(rt, l2, 30);
  list = l2.value;
  CHECK_EQ_INT(list->count, 1);
  CHECK(strcmp(list->items[0].id, v2->id) == 0);
  boxlite_free_volume_info_list(list);

  done_t r3 = {0};
  MUST(boxlite_volume_remove(vo, v2->id, 1, cb_unit, &r3, &err), &err);
  AWAIT_OK(rt, r3, 30);
  boxlite_free_volume_info(v);
  boxlite_free_volume_info(v2);
  boxlite_volume_free(vo);
}

/* ---- boxes ---- */

static CBoxInfo *info_of(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  done_t d = {0};
  MUST(boxlite_box_info(b, cb_info, &d, &err), &err);
  AWAIT_OK(rt, d, 30);
  return d.value;
}

static CBoxHandle *create_named(CBoxliteRuntime *rt) {
  CBoxliteError err = {Ok, NULL};
  CBoxliteOptions *o = NULL;
  MUST(boxlite_options_new(IMAGE, &o, &err), &err);
  boxlite_options_set_name(o, "res-box");
  boxlite_options_set_cpus(o, 1);
  boxlite_options_set_memory(o, 256);
  boxlite_options_add_env(o, "GREETING", "from options");
  boxlite_options_set_workdir(o, "/tmp");
  boxlite_options_add_network_allow(o, "127.0.0.1");
  MUST(boxlite_options_add_port(o, 0, 8080, BoxlitePortProtocolTcp, NULL), NULL);
  done_t d = {0};
  MUST(boxlite_create_box(rt, o, cb_box, &d, &err), &err);
  boxlite_options_free(o); /* copied by the call */
  AWAIT_OK(rt, d, 60);
  return d.value;
}

static void box_lifecycle_and_info(CBoxliteRuntime *rt, CBoxHandle *b, const char *id) {
  CBoxliteError err = {Ok, NULL};
  CBoxInfo *i = info_of(rt, b);
  CHECK(strcmp(i->id, id) == 0);
  CHECK(i->name && strcmp(i->name, "res-box") == 0);
  CHECK_MSG(strstr(i->image, "boxlite/busybox") != NULL, "image %s", i->image);
  CHECK_MSG(strcmp(i->status, "configured") == 0, "status %s", i->status);
  CHECK_EQ_INT(i->running, 0);
  CHECK_EQ_INT(i->pid, 0);
  CHECK_EQ_INT(i->cpus, 1);
  CHECK_EQ_INT(i->memory_mib, 256);
  long long now = (long long)time(NULL);
  CHECK_MSG(i->created_at > now - 3600 && i->created_at <= now + 60, "created_at %lld",
            (long long)i->created_at);
  CHECK(i->network != NULL);
  CHECK(i->network->mode == BoxliteNetworkModeEnabled);
  CHECK_EQ_INT(i->network->allow_net_count, 1);
  CHECK(strcmp(i->network->allow_net[0], "127.0.0.1") == 0);
  CHECK(i->network->published_ports == NULL); /* not running: bindings not known */
  boxlite_free_box_info(i);

  /* Lookups: by name, by id prefix, the list, get-or-create of the same name. */
  done_t gi = {0}, g = {0}, l = {0}, goc = {0};
  MUST(boxlite_get_info(rt, "res-box", cb_info, &gi, &err), &err);
  char prefix[9];
  snprintf(prefix, sizeof prefix, "%s", id);
  MUST(boxlite_get(rt, prefix, cb_box, &g, &err), &err);
  MUST(boxlite_list_info(rt, cb_info_list, &l, &err), &err);
  CBoxliteOptions *o = NULL;
  MUST(boxlite_options_new(IMAGE, &o, &err), &err);
  boxlite_options_set_name(o, "res-box");
  MUST(boxlite_get_or_create_box(rt, o, cb_box_created, &goc, &err), &err);
  boxlite_options_free(o);
  AWAIT_OK(rt, gi, 30);
  AWAIT_OK(rt, g, 30);
  AWAIT_OK(rt, l, 30);
  AWAIT_OK(rt, goc, 30);
  CHECK(strcmp(((CBoxInfo *)gi.value)->id, id) == 0);
  boxlite_free_box_info(gi.value);
  char *gid = boxlite_box_id(g.value);
  CHECK(strcmp(gid, id) == 0);
  boxlite_free_string(gid);
  boxlite_box_free(g.value);
  CBoxInfoList *list = l.value;
  CHECK_EQ_INT(list->count, 1);
  CHECK(strcmp(list->items[0].id, id) == 0);
  CHECK(strcmp(list->items[0].status, "configured") == 0);
  boxlite_free_box_info_list(list);
  CHECK_EQ_INT(goc.flag, 0); /* found, not created */
  gid = boxlite_box_id(goc.value);
  CHECK(strcmp(gid, id) == 0);
  boxlite_free_string(gid);
  boxlite_box_free(goc.value);

  /* Get-or-create of a new name creates a box (and an unnamed box has no name). */
  done_t goc2 = {0}, rm2 = {0}, ul = {0};
  MUST(boxlite_options_new(IMAGE, &o, &err), &err);
  boxlite_options_set_name(o, "res-other");
  MUST(boxlite_get_or_create_box(rt, o, cb_box_created, &goc2, &err), &err);
  boxlite_options_free(o);
  AWAIT_OK(rt, goc2, 30);
  CHECK_EQ_INT(goc2.flag, 1);
  CBoxHandle *unnamed = box_new(rt, 0);
  char *uid = boxlite_box_id(unnamed);
  MUST(boxlite_get_info(rt, uid, cb_info, &ul, &err), &err);
  AWAIT_OK(rt, ul, 30);
  CHECK(((CBoxInfo *)ul.value)->name == NULL);
  boxlite_free_box_info(ul.value);
  boxlite_free_string(uid);
  box_remove(rt, unnamed);
  MUST(boxlite_remove(rt, "res-other", 0, cb_unit, &rm2, &err), &err);
  AWAIT_OK(rt, rm2, 30);
  boxlite_box_free(goc2.value);

  /* Started: running, a VMM pid, the published port bound. */
  done_t s = {0};
  MUST(boxlite_start_box(b, cb_unit, &s, &err), &err);
  AWAIT_OK(rt, s, 120);
  i = info_of(rt, b);
  CHECK_MSG(strcmp(i->status, "running") == 0, "status %s", i->status);
  CHECK_EQ_INT(i->running, 1);
  CHECK(i->pid > 0);
  CHECK(i->network->published_ports != NULL);
  CHECK_EQ_INT(i->network->published_ports->count, 1);
  CPublishedPort *pp = &i->network->published_ports->items[0];
  CHECK_EQ_INT(pp->guest_port, 8080);
  CHECK(pp->host_port != 0);
  CHECK(strcmp(pp->host_ip, "127.0.0.1") == 0);
  CHECK(pp->protocol == BoxlitePortProtocolTcp);
  boxlite_free_box_info(i);

  /* The options' environment and working directory reach commands. */
  char *out = sh_out(rt, b, "echo \"$GREETING\"; pwd");
  CHECK_MSG(strcmp(out, "from options\n/tmp\n") == 0, "got [%s]", out);
  free(out);
}

/* ---- copies ---- */

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK_MSG(f != NULL, "cannot write %s", path);
  CHECK(fwrite(data, 1, n, f) == n);
  CHECK(fclose(f) == 0);
}

static unsigned char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  CHECK_MSG(f != NULL, "cannot read %s", path);
  buf_t b = {0};
  unsigned char chunk[65536];
  size_t k;
  while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) buf_add(&b, chunk, k);
  fclose(f);
  *n = b.n;
  return b.p ? b.p : calloc(1, 1);
}

static void copies(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  char dir[] = "/tmp/boxlite-c-copy-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char src[512], dst[512], tree[512], sub[512], leaf[512], back[512], back_leaf[512];
  snprintf(src, sizeof src, "%s/in.bin", dir);
  snprintf(dst, sizeof dst, "%s/out.bin", dir);
  snprintf(tree, sizeof tree, "%s/tree", dir);
  snprintf(sub, sizeof sub, "%s/tree/sub", dir);
  snprintf(leaf, sizeof leaf, "%s/tree/sub/leaf.txt", dir);
  snprintf(back, sizeof back, "%s/tree-back", dir);
  snprintf(back_leaf, sizeof back_leaf, "%s/tree-back/sub/leaf.txt", dir);

  enum { N = 300000 };
  unsigned char *data = malloc(N);
  CHECK(data != NULL);
  uint32_t s = 99;
  for (size_t i = 0; i < N; i++) {
    s = s * 1664525u + 1013904223u;
    data[i] = (unsigned char)(s >> 24);
  }
  write_file(src, data, N);
  CHECK(mkdir(tree, 0755) == 0 && mkdir(sub, 0755) == 0);
  write_file(leaf, "leaf\n", 5);

  /* A file in and out again. */
  done_t in = {0};
  MUST(boxlite_copy_into(b, src, "/tmp/in.bin", cb_unit, &in, &err), &err);
  AWAIT_OK(rt, in, 60);
  char *sz = sh_out(rt, b, "wc -c < /tmp/in.bin");
  CHECK_EQ_INT(atol(sz), N);
  free(sz);
  done_t out = {0};
  MUST(boxlite_copy_out(b, "/tmp/in.bin", dst, cb_unit, &out, &err), &err);
  AWAIT_OK(rt, out, 60);
  size_t n = 0;
  unsigned char *back_data = read_file(dst, &n);
  CHECK_EQ_INT(n, N);
  CHECK(memcmp(back_data, data, N) == 0);
  free(back_data);

  /* A directory in (it becomes the missing destination) and out. */
  done_t din = {0}, dout = {0};
  MUST(boxlite_copy_into(b, tree, "/tmp/tree", cb_unit, &din, &err), &err);
  AWAIT_OK(rt, din, 60);
  char *leaf_text = sh_out(rt, b, "cat /tmp/tree/sub/leaf.txt");
  CHECK(strcmp(leaf_text, "leaf\n") == 0);
  free(leaf_text);
  MUST(boxlite_copy_out(b, "/tmp/tree", back, cb_unit, &dout, &err), &err);
  AWAIT_OK(rt, dout, 60);
  back_data = read_file(back_leaf, &n);
  CHECK(n == 5 && memcmp(back_data, "leaf\n", 5) == 0);
  free(back_data);

  /* A missing source, either way: an error naming it. */
  done_t miss_in = {0};
  MUST(boxlite_copy_into(b, "/no/such/host/file", "/tmp/", cb_unit, &miss_in, &err), &err);
  WAIT_FOR(rt, miss_in.done, 60);
  CHECK(miss_in.code != Ok);
  CHECK_MSG(strstr(miss_in.msg, "/no/such/host/file") != NULL, "message: %s", miss_in.msg);
  done_t miss = {0};
  MUST(boxlite_copy_out(b, "/no/such/file", dst, cb_unit, &miss, &err), &err);
  WAIT_FOR(rt, miss.done, 60);
  CHECK(miss.code != Ok);
  CHECK_MSG(strstr(miss.msg, "/no/such/file") != NULL, "message: %s", miss.msg);

  free(data);
  unlink(src);
  unlink(dst);
  unlink(leaf);
  unlink(back_leaf);
  char path[600];
  snprintf(path, sizeof path, "%s/tree-back/sub", dir);
  rmdir(path);
  rmdir(back);
  rmdir(sub);
  rmdir(tree);
  CHECK_MSG(rmdir(dir) == 0, "%s is not empty", dir);
}

/* ---- metrics ---- */

static void metrics(CBoxliteRuntime *rt, CBoxHandle *b, int execs_so_far) {
  CBoxliteError err = {Ok, NULL};
  /* One command that fails to start counts as an exec error. */
  run_t r = {0};
  const char *argv[] = {"/no/such/program"};
  CExecutionHandle *x = exec_start(b, &r, 1, argv);
  WAIT_FOR(rt, r.exited, 30);
  CHECK_EQ_INT(r.code, BOXLITE_EXIT_FAILED);
  boxlite_execution_free(x);
  run_free(&r);

  done_t m = {0}, rm = {0};
  MUST(boxlite_box_metrics(b, on_box_metrics, &m, &err), &err);
  MUST(boxlite_runtime_metrics(rt, on_rt_metrics, &rm, &err), &err);
  AWAIT_OK(rt, m, 30);
  AWAIT_OK(rt, rm, 30);
  CHECK_MSG(box_metrics.commands_executed >= execs_so_far, "commands_executed %d",
            box_metrics.commands_executed);
  CHECK(box_metrics.memory_bytes > 0);
  CHECK(box_metrics.cpu_percent >= 0.0);
  CHECK(box_metrics.boot_duration_ms > 0);
  CHECK_EQ_INT(rt_metrics.boxes_created_total, 1);
  CHECK_EQ_INT(rt_metrics.num_running_boxes, 1);
  CHECK_EQ_INT(rt_metrics.boxes_failed_total, 0);
  CHECK_EQ_INT(rt_metrics.total_commands_executed, execs_so_far);
  CHECK_EQ_INT(rt_metrics.total_exec_errors, 1);
}

int main(void) {
  CBoxliteRuntime *rt = runtime_open(NULL);
  CBoxliteError err = {Ok, NULL};

  images(rt);
  volumes(rt);

  CBoxHandle *b = create_named(rt);
  char *id = boxlite_box_id(b);
  box_lifecycle_and_info(rt, b, id);  /* 1 command */
  copies(rt, b);                      /* 2 commands */
  metrics(rt, b, 3);

  done_t st = {0};
  MUST(boxlite_stop_box(b, cb_unit, &st, &err), &err);
  AWAIT_OK(rt, st, 60);
  CBoxInfo *i = info_of(rt, b);
  CHECK_MSG(strcmp(i->status, "stopped") == 0, "status %s", i->status);
  CHECK_EQ_INT(i->running, 0);
  CHECK_EQ_INT(i->pid, 0);
  CHECK(i->network->published_ports == NULL);
  boxlite_free_box_info(i);

  done_t rm = {0}, l = {0};
  MUST(boxlite_remove(rt, "res-box", 0, cb_unit, &rm, &err), &err);
  AWAIT_OK(rt, rm, 60);
  MUST(boxlite_list_info(rt, cb_info_list, &l, &err), &err);
  AWAIT_OK(rt, l, 30);
  CHECK_EQ_INT(((CBoxInfoList *)l.value)->count, 0);
  CHECK(((CBoxInfoList *)l.value)->items == NULL);
  boxlite_free_box_info_list(l.value);

  boxlite_free_string(id);
  boxlite_box_free(b);
  boxlite_runtime_free(rt);
  printf("resources: ok\n");
  return 0;
}
