// Trampolines and wrappers for the Go binding; see bridge.h. Every trampoline only
// forwards to an exported Go function (callbacks.go), turning user_data back into the
// key it was made from.
#include "bridge.h"
#include "_cgo_export.h"

#define KEY(ud) ((uintptr_t)(ud))
#define UD(key) ((void *)(key))

static void t_err(CBoxliteError *e, void *ud) { bxgoOnErr(e, KEY(ud)); }
static void t_box(CBoxHandle *b, CBoxliteError *e, void *ud) { bxgoOnBox(b, false, e, KEY(ud)); }
static void t_box_goc(CBoxHandle *b, bool created, CBoxliteError *e, void *ud) { bxgoOnBox(b, created, e, KEY(ud)); }
static void t_info(struct CBoxInfo *i, CBoxliteError *e, void *ud) { bxgoOnBoxInfo(i, e, KEY(ud)); }
static void t_info_list(struct CBoxInfoList *l, CBoxliteError *e, void *ud) { bxgoOnBoxInfoList(l, e, KEY(ud)); }
static void t_box_metrics(struct CBoxMetrics *m, CBoxliteError *e, void *ud) { bxgoOnBoxMetrics(m, e, KEY(ud)); }
static void t_rt_metrics(struct CRuntimeMetrics *m, CBoxliteError *e, void *ud) { bxgoOnRuntimeMetrics(m, e, KEY(ud)); }
static void t_pull(struct CImagePullResult *r, CBoxliteError *e, void *ud) { bxgoOnPull(r, e, KEY(ud)); }
static void t_image_list(struct CImageInfoList *l, CBoxliteError *e, void *ud) { bxgoOnImageList(l, e, KEY(ud)); }
static void t_volume(struct CVolumeInfo *v, CBoxliteError *e, void *ud) { bxgoOnVolume(v, e, KEY(ud)); }
static void t_volume_list(struct CVolumeInfoList *l, CBoxliteError *e, void *ud) { bxgoOnVolumeList(l, e, KEY(ud)); }
static void t_stdout(const uint8_t *p, size_t n, void *ud) { bxgoOnChunk((uint8_t *)p, n, 1, KEY(ud)); }
static void t_stderr(const uint8_t *p, size_t n, void *ud) { bxgoOnChunk((uint8_t *)p, n, 2, KEY(ud)); }
static void t_exit(int code, void *ud) { bxgoOnExit(code, KEY(ud)); }
static void t_wait(int code, CBoxliteError *e, void *ud) { bxgoOnWait(code, e, KEY(ud)); }

enum BoxliteErrorCode bxgo_create_box(CBoxliteRuntime *rt, CBoxliteOptions *o, uintptr_t key, FFIError *e) {
  return boxlite_create_box(rt, o, t_box, UD(key), e);
}
enum BoxliteErrorCode bxgo_get_or_create_box(CBoxliteRuntime *rt, CBoxliteOptions *o, uintptr_t key, FFIError *e) {
  return boxlite_get_or_create_box(rt, o, t_box_goc, UD(key), e);
}
enum BoxliteErrorCode bxgo_get(CBoxliteRuntime *rt, const char *id, uintptr_t key, FFIError *e) {
  return boxlite_get(rt, id, t_box, UD(key), e);
}
enum BoxliteErrorCode bxgo_remove(CBoxliteRuntime *rt, const char *id, int force, uintptr_t key, FFIError *e) {
  return boxlite_remove(rt, id, force, t_err, UD(key), e);
}
enum BoxliteErrorCode bxgo_get_info(CBoxliteRuntime *rt, const char *id, uintptr_t key, FFIError *e) {
  return boxlite_get_info(rt, id, t_info, UD(key), e);
}
enum BoxliteErrorCode bxgo_list_info(CBoxliteRuntime *rt, uintptr_t key, FFIError *e) {
  return boxlite_list_info(rt, t_info_list, UD(key), e);
}
enum BoxliteErrorCode bxgo_runtime_metrics(CBoxliteRuntime *rt, uintptr_t key, FFIError *e) {
  return boxlite_runtime_metrics(rt, t_rt_metrics, UD(key), e);
}
enum BoxliteErrorCode bxgo_runtime_shutdown(CBoxliteRuntime *rt, int timeout_secs, uintptr_t key, FFIError *e) {
  return boxlite_runtime_shutdown(rt, timeout_secs, t_err, UD(key), e);
}

enum BoxliteErrorCode bxgo_start_box(CBoxHandle *b, uintptr_t key, FFIError *e) {
  return boxlite_start_box(b, t_err, UD(key), e);
}
enum BoxliteErrorCode bxgo_stop_box(CBoxHandle *b, uintptr_t key, FFIError *e) {
  return boxlite_stop_box(b, t_err, UD(key), e);
}
enum BoxliteErrorCode bxgo_box_info(CBoxHandle *b, uintptr_t key, FFIError *e) {
  return boxlite_box_info(b, t_info, UD(key), e);
}
enum BoxliteErrorCode bxgo_box_metrics(CBoxHandle *b, uintptr_t key, FFIError *e) {
  return boxlite_box_metrics(b, t_box_metrics, UD(key), e);
}
enum BoxliteErrorCode bxgo_copy_into(CBoxHandle *b, const char *src, const char *dst, uintptr_t key, FFIError *e) {
  return boxlite_copy_into(b, src, dst, t_err, UD(key), e);
}
enum BoxliteErrorCode bxgo_copy_out(CBoxHandle *b, const char *src, const char *dst, uintptr_t key, FFIError *e) {
  return boxlite_copy_out(b, src, dst, t_err, UD(key), e);
}

enum BoxliteErrorCode bxgo_execution_register(CExecutionHandle *x, uintptr_t key, int *stage, FFIError *e) {
  enum BoxliteErrorCode c;
  *stage = 0;
  c = boxlite_execution_on_stdout(x, t_stdout, UD(key), e);
  if (c != Ok) return c;
  *stage = 1;
  c = boxlite_execution_on_stderr(x, t_stderr, UD(key), e);
  if (c != Ok) return c;
  *stage = 2;
  c = boxlite_execution_on_exit(x, t_exit, UD(key), e);
  if (c != Ok) return c;
  *stage = 3;
  return Ok;
}
enum BoxliteErrorCode bxgo_execution_wait(CExecutionHandle *x, uintptr_t key, FFIError *e) {
  return boxlite_execution_wait(x, t_wait, UD(key), e);
}
enum BoxliteErrorCode bxgo_execution_kill(CExecutionHandle *x, uintptr_t key, FFIError *e) {
  return boxlite_execution_kill(x, t_err, UD(key), e);
}
enum BoxliteErrorCode bxgo_execution_signal(CExecutionHandle *x, int sig, uintptr_t key, FFIError *e) {
  return boxlite_execution_signal(x, sig, t_err, UD(key), e);
}
enum BoxliteErrorCode bxgo_execution_tty_resize(CExecutionHandle *x, int rows, int cols, uintptr_t key, FFIError *e) {
  return boxlite_execution_tty_resize(x, rows, cols, t_err, UD(key), e);
}

enum BoxliteErrorCode bxgo_image_pull(CBoxliteImageHandle *h, const char *ref, uintptr_t key, FFIError *e) {
  return boxlite_image_pull(h, ref, t_pull, UD(key), e);
}
enum BoxliteErrorCode bxgo_image_list(CBoxliteImageHandle *h, uintptr_t key, FFIError *e) {
  return boxlite_image_list(h, t_image_list, UD(key), e);
}

enum BoxliteErrorCode bxgo_volume_create(CBoxliteVolumeHandle *h, uintptr_t key, FFIError *e) {
  return boxlite_volume_create(h, t_volume, UD(key), e);
}
enum BoxliteErrorCode bxgo_volume_list(CBoxliteVolumeHandle *h, uintptr_t key, FFIError *e) {
  return boxlite_volume_list(h, t_volume_list, UD(key), e);
}
enum BoxliteErrorCode bxgo_volume_get(CBoxliteVolumeHandle *h, const char *id, uintptr_t key, FFIError *e) {
  return boxlite_volume_get(h, id, t_volume, UD(key), e);
}
enum BoxliteErrorCode bxgo_volume_remove(CBoxliteVolumeHandle *h, const char *id, int force, uintptr_t key, FFIError *e) {
  return boxlite_volume_remove(h, id, force, t_err, UD(key), e);
}

char **bxgo_strv_new(int n) { return (char **)calloc(n > 0 ? (size_t)n : 1, sizeof(char *)); }
void bxgo_strv_set(char **v, int i, char *s) { v[i] = s; }
void bxgo_strv_free(char **v, int n) {
  if (v == NULL) return;
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}
