// The C half of the Go binding: one trampoline per callback shape (cgo cannot hand a
// Go function to C) and a wrapper per asynchronous call that passes the trampoline and
// the caller's key. The key is the value of a cgo.Handle; C carries it as user_data
// and never reads it.
#ifndef BOXLITE_GO_BRIDGE_H
#define BOXLITE_GO_BRIDGE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "boxlite.h"

enum BoxliteErrorCode bxgo_create_box(CBoxliteRuntime *rt, CBoxliteOptions *o, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_get_or_create_box(CBoxliteRuntime *rt, CBoxliteOptions *o, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_get(CBoxliteRuntime *rt, const char *id, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_remove(CBoxliteRuntime *rt, const char *id, int force, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_get_info(CBoxliteRuntime *rt, const char *id, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_list_info(CBoxliteRuntime *rt, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_runtime_metrics(CBoxliteRuntime *rt, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_runtime_shutdown(CBoxliteRuntime *rt, int timeout_secs, uintptr_t key, FFIError *e);

enum BoxliteErrorCode bxgo_start_box(CBoxHandle *b, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_stop_box(CBoxHandle *b, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_box_info(CBoxHandle *b, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_box_metrics(CBoxHandle *b, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_copy_into(CBoxHandle *b, const char *src, const char *dst, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_copy_out(CBoxHandle *b, const char *src, const char *dst, uintptr_t key, FFIError *e);

// Registers stdout, stderr and exit (in that order: the exit event comes after every
// chunk of the streams registered before it). *stage is how many were registered.
enum BoxliteErrorCode bxgo_execution_register(CExecutionHandle *x, uintptr_t key, int *stage, FFIError *e);
enum BoxliteErrorCode bxgo_execution_wait(CExecutionHandle *x, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_execution_kill(CExecutionHandle *x, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_execution_signal(CExecutionHandle *x, int sig, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_execution_tty_resize(CExecutionHandle *x, int rows, int cols, uintptr_t key, FFIError *e);

enum BoxliteErrorCode bxgo_image_pull(CBoxliteImageHandle *h, const char *ref, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_image_list(CBoxliteImageHandle *h, uintptr_t key, FFIError *e);

enum BoxliteErrorCode bxgo_volume_create(CBoxliteVolumeHandle *h, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_volume_list(CBoxliteVolumeHandle *h, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_volume_get(CBoxliteVolumeHandle *h, const char *id, uintptr_t key, FFIError *e);
enum BoxliteErrorCode bxgo_volume_remove(CBoxliteVolumeHandle *h, const char *id, int force, uintptr_t key, FFIError *e);

// Argument vectors in C memory, for the calls that take `const char *const *`.
char **bxgo_strv_new(int n);
void bxgo_strv_set(char **v, int i, char *s);
void bxgo_strv_free(char **v, int n);

#endif
