/* A full event queue never stalls the runtime. With nobody draining, 5,000 list_info
 * completions and the output of four executions fill the queue (QUEUE_CAPACITY events)
 * and park their producers; meanwhile calls still return at once and other work still
 * gets done (a box created now appears on disk). Then the first drain gets exactly a
 * full queue, and draining everything delivers every event: every completion, every
 * execution's output complete and in order, one exit each, after its output. */
#include "harness.h" /* first: it sets _GNU_SOURCE */

#include <dirent.h>

enum { LISTS = 5000, EXECS = 4, LINES = 400 };

static int lists;
static run_t runs[EXECS];

static void on_list(CBoxInfoList *l, CBoxliteError *e, void *ud) {
  (void)ud;
  on_drain_thread();
  CHECK(e == NULL && l != NULL);
  lists++;
  boxlite_free_box_info_list(l);
}

static int count_boxes_on_disk(const char *home) {
  char path[4096];
  snprintf(path, sizeof path, "%s/boxes", home);
  DIR *d = opendir(path);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Every synchronous call while the queue is full must return promptly. */
static long long slowest_call_ms;
#define TIMED(call)                                                                \
  do {                                                                             \
    long long t_ = now_ms();                                                       \
    call;                                                                          \
    long long d_ = now_ms() - t_;                                                  \
    if (d_ > slowest_call_ms) slowest_call_ms = d_;                                \
  } while (0)

int main(void) {
  const char *home = getenv("BOXLITE_HOME");
  CHECK_MSG(home != NULL, "BOXLITE_HOME is not set");
  CBoxliteRuntime *rt = runtime_open(home);
  CBoxliteError err = {Ok, NULL};
  CBoxHandle *a = box_new(rt, 1);
  CHECK_EQ_INT(count_boxes_on_disk(home), 1);

  /* From here on nobody drains until the queue has been full for a while. */
  static char script[EXECS][160];
  CExecutionHandle *x[EXECS];
  for (int i = 0; i < EXECS; i++) {
    snprintf(script[i], sizeof script[i],
             "i=0; while [ $i -lt %d ]; do echo %d:$i; i=$((i+1)); done; echo end%d >&2; "
             "exit %d",
             LINES, i, i, i + 1);
    const char *argv[] = {"sh", "-c", script[i]};
    TIMED(x[i] = exec_start(a, &runs[i], 3, argv));
  }
  for (int i = 0; i < LISTS; i++)
    TIMED(MUST(boxlite_list_info(rt, on_list, NULL, &err), &err));

  /* Other work still gets done while the queue is full. */
  CBoxliteOptions *o = NULL;
  MUST(boxlite_options_new(IMAGE, &o, &err), &err);
  done_t created = {0};
  TIMED(MUST(boxlite_create_box(rt, o, cb_box, &created, &err), &err));
  boxlite_options_free(o);
  long long end = now_ms() + 60000;
  while (count_boxes_on_disk(home) < 2) {
    CHECK_MSG(now_ms() < end, "a box created while the queue was full never appeared");
    sleep_ms(50);
  }
  sleep_ms(3000); /* every producer has posted or is parked on the full queue by now */
  CHECK_EQ_INT(lists + created.calls, 0);
  CHECK_MSG(slowest_call_ms < 1000, "a call took %lld ms while the queue was full",
            slowest_call_ms);

  /* The first drain takes a full queue, no more. */
  int first = drain(rt, 0);
  CHECK_EQ_INT(first, QUEUE_CAPACITY);

  /* The parked producers go on; everything arrives. */
  long long total = first;
  int exits = 0;
  end = now_ms() + 120000;
  while (lists < LISTS || !created.done || exits < EXECS) {
    CHECK_MSG(now_ms() < end, "lists %d/%d, created %d, exits %d/%d", lists, LISTS,
              created.done, exits, EXECS);
    int n = drain(rt, 100);
    CHECK(n <= QUEUE_CAPACITY);
    total += n;
    exits = 0;
    for (int i = 0; i < EXECS; i++) exits += runs[i].exited;
  }
  for (int i = 0; i < 3; i++) total += drain(rt, 100);
  CHECK_EQ_INT(lists, LISTS);
  CHECK_EQ_INT(created.calls, 1);
  CHECK_MSG(created.code == Ok, "create failed: %s", created.msg);

  long long chunks = 0;
  for (int i = 0; i < EXECS; i++) {
    run_t *r = &runs[i];
    buf_t want = {0};
    char line[32];
    for (int j = 0; j < LINES; j++) {
      int n = snprintf(line, sizeof line, "%d:%d\n", i, j);
      buf_add(&want, line, (size_t)n);
    }
    CHECK_EQ_INT(r->exited, 1);
    CHECK_EQ_INT(r->code, i + 1);
    CHECK_EQ_INT(r->late_chunks, 0);
    CHECK_MSG(r->out.n == want.n && memcmp(r->out.p, want.p, want.n) == 0,
              "execution %d: output lost or out of order (%zu of %zu bytes)", i, r->out.n,
              want.n);
    snprintf(line, sizeof line, "end%d\n", i);
    CHECK(buf_is(&r->err, line));
    chunks += r->out_chunks + r->err_chunks;
    buf_free(&want);
    run_free(r);
    boxlite_execution_free(x[i]);
  }
  /* Every event was one callback: completions, chunks, exits. */
  CHECK_EQ_INT(total, LISTS + 1 + chunks + EXECS);

  box_remove(rt, created.value);
  box_remove(rt, a);
  boxlite_runtime_free(rt);
  printf("queue_full: %lld events (%lld chunks), slowest call %lld ms\n", total, chunks,
         slowest_call_ms);
  return 0;
}
