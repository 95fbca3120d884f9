/* One exit per execution, and it comes last: 1,024 short executions on one box, 16 in
 * flight at a time. For each: exactly one exit callback, code 0, no chunk after the
 * exit, and stdout exactly what it printed. */
#include "harness.h"

enum { TOTAL = 1024, IN_FLIGHT = 16 };

static run_t runs[TOTAL];
static char words[TOTAL][16];

int main(void) {
  CBoxliteRuntime *rt = runtime_open(NULL);
  CBoxHandle *b = box_new(rt, 1);

  CExecutionHandle *slot_x[IN_FLIGHT] = {0};
  int slot_i[IN_FLIGHT];
  int next = 0, finished = 0;
  long long t0 = now_ms(), deadline = t0 + 150 * 1000;
  while (finished < TOTAL) {
    for (int s = 0; s < IN_FLIGHT && next < TOTAL; s++) {
      if (slot_x[s]) continue;
      snprintf(words[next], sizeof words[next], "w%d", next);
      const char *argv[] = {"echo", words[next]};
      slot_x[s] = exec_start(b, &runs[next], 2, argv);
      slot_i[s] = next++;
    }
    CHECK_MSG(now_ms() < deadline, "only %d of %d executions finished in time", finished,
              TOTAL);
    drain(rt, 50);
    for (int s = 0; s < IN_FLIGHT; s++) {
      if (slot_x[s] && runs[slot_i[s]].exited) {
        boxlite_execution_free(slot_x[s]);
        slot_x[s] = NULL;
        finished++;
      }
    }
  }
  long long took = now_ms() - t0;
  /* Anything late (a second exit, a chunk after it) would be queued by now. */
  for (int i = 0; i < 5; i++) drain(rt, 100);

  for (int i = 0; i < TOTAL; i++) {
    run_t *r = &runs[i];
    char want[24];
    snprintf(want, sizeof want, "%s\n", words[i]);
    CHECK_MSG(r->exited == 1, "execution %d: %d exit callbacks", i, r->exited);
    CHECK_MSG(r->code == 0, "execution %d exited %d", i, r->code);
    CHECK_MSG(r->late_chunks == 0, "execution %d: %d chunks after its exit", i, r->late_chunks);
    CHECK_MSG(buf_is(&r->out, want), "execution %d printed [%s]", i, (char *)r->out.p);
    CHECK_EQ_INT(r->err.n, 0);
    run_free(r);
  }

  box_remove(rt, b);
  boxlite_runtime_free(rt);
  printf("exec_many: %d executions in %lld ms\n", TOTAL, took);
  return 0;
}
