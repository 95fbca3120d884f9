/* boxlite_runtime_drain: 0 polls, a negative timeout blocks until an event, a positive
 * one waits about that long; it returns the number of callbacks it ran. Callbacks run
 * only inside drain, on the draining thread, whichever thread that is, and never while
 * nobody drains; a callback may call boxlite, drain included. */
#include "harness.h"

/* Every callback of this program records its thread here. */
enum { MAX_SEEN = 100000 };
static pthread_t seen[MAX_SEEN];
static int nseen;
static int ncalls;

static void note(void) {
  on_drain_thread();
  CHECK(nseen < MAX_SEEN);
  seen[nseen++] = pthread_self();
  ncalls++;
}

static void all_seen_on(pthread_t t, int from) {
  for (int i = from; i < nseen; i++)
    CHECK_MSG(pthread_equal(seen[i], t), "callback %d ran on another thread", i);
}

static void on_list(CBoxInfoList *l, CBoxliteError *e, void *ud) {
  CHECK(e == NULL && l != NULL);
  note();
  (*(int *)ud)++;
  boxlite_free_box_info_list(l);
}

static void on_chunk(const uint8_t *d, size_t n, void *ud) {
  (void)d;
  note();
  *(size_t *)ud += n;
}

static void on_exit_cb(int code, void *ud) {
  CHECK_EQ_INT(code, 0);
  note();
  (*(int *)ud)++;
}

static void list_info(CBoxliteRuntime *rt, int *counter) {
  CBoxliteError err = {Ok, NULL};
  MUST(boxlite_list_info(rt, on_list, counter, &err), &err);
}

static void drain_timeouts(CBoxliteRuntime *rt) {
  /* 0 with nothing queued: at once, 0. */
  long long t = now_ms();
  CHECK_EQ_INT(drain(rt, 0), 0);
  CHECK(now_ms() - t < 1000);

  /* A positive timeout with nothing queued: about that long, 0. */
  t = now_ms();
  CHECK_EQ_INT(drain(rt, 200), 0);
  long long took = now_ms() - t;
  CHECK_MSG(took >= 150 && took < 5000, "drain(200) took %lld ms", took);

  /* A positive timeout returns as soon as something arrives, not at the deadline. */
  int got = 0;
  list_info(rt, &got);
  t = now_ms();
  int n = 0;
  while (!got) n += drain(rt, 20000);
  CHECK(now_ms() - t < 15000);
  CHECK_EQ_INT(n, 1);
}

typedef struct {
  CBoxliteRuntime *rt;
  int *counter;
  long delay_ms;
} poster_t;

static void *post_later(void *arg) {
  poster_t *p = arg;
  sleep_ms(p->delay_ms);
  list_info(p->rt, p->counter);
  return NULL;
}

static void negative_timeout_blocks_for_an_event(CBoxliteRuntime *rt) {
  int got = 0;
  poster_t p = {rt, &got, 300};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, post_later, &p) == 0);
  long long t = now_ms();
  int n = drain(rt, -1);
  long long took = now_ms() - t;
  CHECK(pthread_join(th, NULL) == 0);
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_INT(got, 1);
  CHECK_MSG(took >= 250, "drain(-1) returned after %lld ms, before the event was posted",
            took);

  /* With events already queued it returns at once with all of them. */
  got = 0;
  for (int i = 0; i < 5; i++) list_info(rt, &got);
  sleep_ms(500);
  int total = 0;
  while (got < 5) total += drain(rt, -1);
  CHECK_EQ_INT(total, 5);
}

static void drain_counts_the_callbacks_it_ran(CBoxliteRuntime *rt) {
  int got = 0, total = 0;
  int before = ncalls;
  for (int i = 0; i < 50; i++) list_info(rt, &got);
  long long end = now_ms() + 30000;
  while (got < 50) {
    CHECK(now_ms() < end);
    total += drain(rt, 100);
  }
  CHECK_EQ_INT(total, 50);
  CHECK_EQ_INT(ncalls - before, 50);
}

/* Work with many callbacks: list_info calls and an execution printing lines. */
typedef struct {
  int lists;
  size_t bytes;
  int exits;
  CExecutionHandle *x;
} work_t;

static void queue_work(CBoxliteRuntime *rt, CBoxHandle *b, work_t *w) {
  CBoxliteError err = {Ok, NULL};
  memset(w, 0, sizeof *w);
  for (int i = 0; i < 20; i++) list_info(rt, &w->lists);
  const char *args[] = {"-c", "i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); "
                              "sleep 0.01; done; echo to stderr >&2"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
  MUST(boxlite_box_exec(b, &c, &w->x, &err), &err);
  MUST(boxlite_execution_on_stdout(w->x, on_chunk, &w->bytes, &err), &err);
  MUST(boxlite_execution_on_stderr(w->x, on_chunk, &w->bytes, &err), &err);
  MUST(boxlite_execution_on_exit(w->x, on_exit_cb, &w->exits, &err), &err);
}

static int work_done(const work_t *w) { return w->lists == 20 && w->exits == 1; }

static size_t work_bytes(void) {
  size_t n = 0;
  for (int i = 0; i < 50; i++) n += (size_t)snprintf(NULL, 0, "line %d\n", i);
  return n + strlen("to stderr\n");
}

static void nothing_runs_without_drain(CBoxliteRuntime *rt, CBoxHandle *b) {
  work_t w;
  int before = ncalls;
  queue_work(rt, b, &w);
  sleep_ms(2000); /* the execution has finished by now, its events wait */
  CHECK_EQ_INT(ncalls, before);
  long long end = now_ms() + 60000;
  while (!work_done(&w)) {
    CHECK(now_ms() < end);
    drain(rt, 100);
  }
  all_seen_on(pthread_self(), before);
  CHECK_EQ_INT(w.bytes, work_bytes());
  boxlite_execution_free(w.x);
}

typedef struct {
  CBoxliteRuntime *rt;
  work_t *w;
  pthread_t self;
} drainer_t;

static void *drain_on_thread(void *arg) {
  drainer_t *d = arg;
  d->self = pthread_self();
  long long end = now_ms() + 60000;
  while (!work_done(d->w)) {
    CHECK(now_ms() < end);
    drain(d->rt, 100);
  }
  return NULL;
}

static void callbacks_run_on_a_second_draining_thread(CBoxliteRuntime *rt, CBoxHandle *b) {
  work_t w;
  int before = nseen;
  queue_work(rt, b, &w);
  drainer_t d = {rt, &w, pthread_self()};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, drain_on_thread, &d) == 0);
  CHECK(pthread_join(th, NULL) == 0);
  CHECK(!pthread_equal(d.self, pthread_self()));
  CHECK(nseen > before + 20);
  all_seen_on(d.self, before);
  CHECK_EQ_INT(w.bytes, work_bytes());
  boxlite_execution_free(w.x);
}

/* A callback that calls boxlite, and drains again from inside. */
typedef struct {
  CBoxliteRuntime *rt;
  int outer, inner;
  int nested_drained;
} nest_t;

static void on_inner(CBoxInfoList *l, CBoxliteError *e, void *ud) {
  CHECK(e == NULL);
  note();
  ((nest_t *)ud)->inner++;
  boxlite_free_box_info_list(l);
}

static void on_outer(CBoxInfoList *l, CBoxliteError *e, void *ud) {
  nest_t *n = ud;
  CBoxliteError err = {Ok, NULL};
  CHECK(e == NULL);
  note();
  n->outer++;
  boxlite_free_box_info_list(l);
  MUST(boxlite_list_info(n->rt, on_inner, n, &err), &err);
  long long end = now_ms() + 30000;
  while (!n->inner) {
    CHECK(now_ms() < end);
    n->nested_drained += drain(n->rt, 100);
  }
}

static void a_callback_may_call_boxlite_and_drain(CBoxliteRuntime *rt) {
  CBoxliteError err = {Ok, NULL};
  nest_t n = {rt, 0, 0, 0};
  int before = nseen;
  MUST(boxlite_list_info(rt, on_outer, &n, &err), &err);
  WAIT_FOR(rt, n.outer, 30);
  CHECK_EQ_INT(n.inner, 1);
  CHECK(n.nested_drained >= 1);
  all_seen_on(pthread_self(), before);
}

/* A drain nested in a callback keeps the order: the events it runs are the ones that
 * come next, not newer ones ahead of those the outer drain has not run yet. Here the
 * outer drain finds the first two chunks queued; the first one's callback waits until
 * the third chunk and the exit are queued too, then drains. */
typedef struct {
  CBoxliteRuntime *rt;
  run_t r;
  int nested;
} order_t;

static void order_out(const uint8_t *d, size_t n, void *ud) {
  order_t *o = ud;
  run_on_out(d, n, &o->r);
  note();
  if (o->nested) return;
  o->nested = 1;
  sleep_ms(3000);
  long long end = now_ms() + 20000;
  while (!o->r.exited && now_ms() < end) drain(o->rt, 100);
}

static void order_exit(int code, void *ud) {
  order_t *o = ud;
  run_on_exit(code, &o->r);
  note();
}

static void a_nested_drain_keeps_the_order(CBoxliteRuntime *rt, CBoxHandle *b) {
  CBoxliteError err = {Ok, NULL};
  order_t o = {.rt = rt};
  const char *args[] = {"-c", "echo 1; sleep 0.3; echo 2; sleep 1.5; echo 3"};
  BoxliteCommand c = {.command = "sh", .args = args, .argc = 2};
  CExecutionHandle *x = NULL;
  MUST(boxlite_box_exec(b, &c, &x, &err), &err);
  MUST(boxlite_execution_on_stdout(x, order_out, &o, &err), &err);
  MUST(boxlite_execution_on_exit(x, order_exit, &o, &err), &err);
  sleep_ms(1200); /* "1" and "2" are queued, "3" is not */
  WAIT_FOR(rt, o.r.exited, 30);
  for (int i = 0; i < 3; i++) drain(rt, 100);
  CHECK_MSG(buf_is(&o.r.out, "1\n2\n3\n"), "order: [%s]", (char *)o.r.out.p);
  CHECK_EQ_INT(o.r.out_chunks, 3);
  CHECK_EQ_INT(o.r.late_chunks, 0);
  CHECK_EQ_INT(o.r.exited, 1);
  boxlite_execution_free(x);
  run_free(&o.r);
}

/* Calls from four threads at once (exec, register, free) while a fifth drains: every
 * callback runs on the drainer, every execution gets its output and one exit. */
enum { CALLERS = 4, PER_CALLER = 25 };
static run_t conc_runs[CALLERS][PER_CALLER];
static char conc_words[CALLERS][PER_CALLER][16];
static int conc_exited;

static void conc_exit(int code, void *ud) {
  run_t *r = ud;
  note();
  if (r->exited) r->late_chunks++; /* a second exit */
  r->code = code;
  /* Publishes the output written by earlier callbacks to the caller's thread. */
  __atomic_store_n(&r->exited, 1, __ATOMIC_RELEASE);
  __atomic_add_fetch(&conc_exited, 1, __ATOMIC_SEQ_CST);
}

typedef struct {
  CBoxHandle *b;
  int id;
} caller_t;

static void *caller(void *arg) {
  caller_t *c = arg;
  CBoxliteError err = {Ok, NULL};
  for (int i = 0; i < PER_CALLER; i++) {
    run_t *r = &conc_runs[c->id][i];
    snprintf(conc_words[c->id][i], sizeof conc_words[c->id][i], "t%d-%d", c->id, i);
    const char *args[] = {conc_words[c->id][i]};
    BoxliteCommand cmd = {.command = "echo", .args = args, .argc = 1};
    CExecutionHandle *x = NULL;
    MUST(boxlite_box_exec(c->b, &cmd, &x, &err), &err);
    MUST(boxlite_execution_on_stdout(x, run_on_out, r, &err), &err);
    MUST(boxlite_execution_on_exit(x, conc_exit, r, &err), &err);
    long long end = now_ms() + 60000;
    while (!__atomic_load_n(&r->exited, __ATOMIC_ACQUIRE)) {
      CHECK(now_ms() < end);
      sleep_ms(2);
    }
    boxlite_execution_free(x);
  }
  return NULL;
}

typedef struct {
  CBoxliteRuntime *rt;
  pthread_t self;
} conc_drainer_t;

static void *conc_drain(void *arg) {
  conc_drainer_t *d = arg;
  d->self = pthread_self();
  long long end = now_ms() + 120000;
  while (__atomic_load_n(&conc_exited, __ATOMIC_SEQ_CST) < CALLERS * PER_CALLER) {
    CHECK(now_ms() < end);
    drain(d->rt, 50);
  }
  for (int i = 0; i < 3; i++) drain(d->rt, 50);
  return NULL;
}

static void calls_from_many_threads_while_one_drains(CBoxliteRuntime *rt, CBoxHandle *b) {
  int before = nseen;
  conc_drainer_t d = {rt, pthread_self()};
  caller_t callers[CALLERS];
  pthread_t th[CALLERS], dt;
  CHECK(pthread_create(&dt, NULL, conc_drain, &d) == 0);
  for (int i = 0; i < CALLERS; i++) {
    callers[i] = (caller_t){b, i};
    CHECK(pthread_create(&th[i], NULL, caller, &callers[i]) == 0);
  }
  for (int i = 0; i < CALLERS; i++) CHECK(pthread_join(th[i], NULL) == 0);
  CHECK(pthread_join(dt, NULL) == 0);
  all_seen_on(d.self, before);
  for (int t = 0; t < CALLERS; t++) {
    for (int i = 0; i < PER_CALLER; i++) {
      run_t *r = &conc_runs[t][i];
      char want[24];
      snprintf(want, sizeof want, "%s\n", conc_words[t][i]);
      CHECK_EQ_INT(r->exited, 1);
      CHECK_EQ_INT(r->code, 0);
      CHECK_EQ_INT(r->late_chunks, 0);
      CHECK_MSG(buf_is(&r->out, want), "thread %d execution %d printed [%s]", t, i,
                (char *)r->out.p);
      run_free(r);
    }
  }
}

static void drain_of_null_fails(void) {
  CBoxliteError err = {Ok, NULL};
  CHECK_EQ_INT(boxlite_runtime_drain(NULL, 0, &err), -1);
  EXPECT_ERR(err.code, &err, InvalidArgument, "runtime");
  CHECK_EQ_INT(boxlite_runtime_drain(NULL, 0, NULL), -1);
}

int main(void) {
  CBoxliteRuntime *rt = runtime_open(NULL);

  drain_of_null_fails();
  drain_timeouts(rt);
  negative_timeout_blocks_for_an_event(rt);
  drain_counts_the_callbacks_it_ran(rt);
  a_callback_may_call_boxlite_and_drain(rt);

  CBoxHandle *b = box_new(rt, 1);
  nothing_runs_without_drain(rt, b);
  callbacks_run_on_a_second_draining_thread(rt, b);
  a_nested_drain_keeps_the_order(rt, b);
  calls_from_many_threads_while_one_drains(rt, b);

  box_remove(rt, b);
  boxlite_runtime_free(rt);
  printf("drain_threads: ok (%d callbacks checked)\n", nseen);
  return 0;
}
