#include "upload.h"

#include "alloc.h"
#include "check.h"
#include "fakes3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PART 4096

/* An upload under test and what its callbacks saw. */
struct up {
  struct cap_upload u;
  int done, ok, spaces;
};

static void on_done(struct cap_upload *u, int ok) {
  struct up *t = u->data;
  t->done++;
  t->ok = ok;
}

static void on_space(struct cap_upload *u) {
  ((struct up *)u->data)->spaces++;
}

/* Refused aborts the storage would hear of. */
static int abort_failed;
static long abort_failed_status;

static void on_abort_failed(struct cap_s3 *s3, const struct cap_s3_req *r, const char *key,
                            const char *upload_id, const char *reason) {
  abort_failed++;
  abort_failed_status = r->status;
}

static void up_init(struct up *t, struct s3env *e, struct cap_bufpool *pool, int in_flight) {
  memset(t, 0, sizeof(*t));
  cap_upload_init(&t->u, &e->s3, pool, in_flight, "out/v.mp4");
  t->u.on_done = on_done;
  t->u.on_space = on_space;
  t->u.data = t;
  t->u.content_type = "video/mp4";
}

static void fill(char *buf, size_t n) {
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)('a' + i % 23);
}

/* Writes n bytes of the pattern in odd-sized pieces, running the loop when
 * the upload has no room.  Returns the bytes written. */
static size_t stream(struct s3env *e, struct up *t, const char *src, size_t n) {
  size_t off = 0;
  while (off < n && !t->done) {
    char *ptr;
    size_t room = cap_upload_space(&t->u, &ptr);
    if (room == 0) {
      s3env_run_for(e, 5);
      continue;
    }
    size_t k = n - off < 1000 ? n - off : 1000;
    if (k > room)
      k = room;
    memcpy(ptr, src + off, k);
    cap_upload_commit(&t->u, k);
    off += k;
  }
  return off;
}

static void test_parts(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 3), 0))
    return;
  struct cap_bufpool pool;
  cap_bufpool_init(&pool, PART, 4 * PART);
  size_t n = 3 * PART + 1000;
  char *src = xmalloc(n);
  fill(src, n);
  struct up t;
  up_init(&t, &e, &pool, 2);
  CHECK_EQ_INT(stream(&e, &t, src, n), n);
  cap_upload_finish(&t.u);
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 1);
  /* Uniform parts, the last one smaller, numbered 1..4. */
  CHECK_EQ_INT(t.u.nparts, 4);
  CHECK_EQ_INT(e.fake.nparts, 4);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(e.fake.part_len[i], PART);
  CHECK_EQ_INT(e.fake.part_len[3], 1000);
  CHECK_EQ_INT(e.fake.count[OP_CREATE], 1);
  CHECK_EQ_INT(e.fake.count[OP_PART], 4);
  CHECK_EQ_INT(e.fake.count[OP_COMPLETE], 1);
  CHECK_EQ_INT(e.fake.count[OP_PUT], 0);
  CHECK_EQ_STR(e.fake.last_content_type, "video/mp4");
  CHECK_EQ_STR(t.u.etag, "\"done\"");
  CHECK_EQ_INT(t.u.bytes, n);
  struct fake_obj *o = fake_find(&e.fake, "out/v.mp4", 0);
  CHECK(o != NULL && o->len == n && memcmp(o->data, src, n) == 0);
  /* Every buffer is back in the pool. */
  CHECK_EQ_INT(pool.used, 0);
  cap_upload_free(&t.u);

  /* Exactly two parts: no empty third part. */
  up_init(&t, &e, &pool, 2);
  stream(&e, &t, src, 2 * PART);
  cap_upload_finish(&t.u);
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 1);
  CHECK_EQ_INT(t.u.nparts, 2);
  CHECK_EQ_INT(e.fake.part_len[1], PART);
  cap_upload_free(&t.u);

  /* Smaller than a part: one PUT, no multipart upload. */
  up_init(&t, &e, &pool, 2);
  stream(&e, &t, src, 100);
  cap_upload_finish(&t.u);
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 1);
  CHECK_EQ_INT(t.u.nparts, 0);
  CHECK_EQ_INT(e.fake.count[OP_PUT], 1);
  CHECK_EQ_INT(e.fake.count[OP_CREATE], 2);
  o = fake_find(&e.fake, "out/v.mp4", 0);
  CHECK(o != NULL && o->len == 100);
  cap_upload_free(&t.u);
  CHECK_EQ_INT(pool.used, 0);
  cap_bufpool_free(&pool);
  free(src);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

static void test_file_and_retry(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 3), 0))
    return;
  struct cap_bufpool pool;
  cap_bufpool_init(&pool, PART, 2 * PART);
  size_t n = 2 * PART + PART / 2;
  char *src = xmalloc(n);
  fill(src, n);
  char path[] = "/tmp/test-upload-XXXXXX";
  int fd = mkstemp(path);
  unlink(path);
  CHECK_EQ_INT(write(fd, src, n), n);
  /* One part answers 503 first: it is sent again, the upload succeeds. */
  fake_fail(&e.fake, OP_PART, 1, 503, "SlowDown");
  struct up t;
  up_init(&t, &e, &pool, 2);
  cap_upload_file(&t.u, fd, n);
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 1);
  CHECK_EQ_INT(t.u.nparts, 3);
  CHECK_EQ_INT(e.fake.count[OP_PART], 4);
  CHECK_EQ_INT(e.fake.part_len[0], PART);
  CHECK_EQ_INT(e.fake.part_len[1], PART);
  CHECK_EQ_INT(e.fake.part_len[2], PART / 2);
  CHECK_EQ_INT(e.s3.retries, 1);
  /* File parts take no buffers. */
  CHECK_EQ_INT(pool.used, 0);
  cap_upload_free(&t.u);
  close(fd);
  cap_bufpool_free(&pool);
  free(src);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

static void test_aborts(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 2), 0))
    return;
  e.s3.on_abort_failed = on_abort_failed;
  struct cap_bufpool pool;
  cap_bufpool_init(&pool, PART, 4 * PART);
  char src[3 * PART];
  fill(src, sizeof(src));

  /* A part refused for good fails the upload, which is aborted once. */
  fake_fail(&e.fake, OP_PART, 10, 403, "AccessDenied");
  struct up t;
  up_init(&t, &e, &pool, 2);
  stream(&e, &t, src, sizeof(src));
  cap_upload_finish(&t.u);
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 0);
  CHECK_EQ_STR(t.u.err_code, "AccessDenied");
  CHECK_EQ_INT(t.u.err_status, 403);
  CHECK_EQ_INT(t.u.err_transient, 0);
  CHECK_EQ_INT(e.fake.count[OP_ABORT], 1);
  CHECK_EQ_INT(e.fake.count[OP_COMPLETE], 0);
  CHECK_EQ_INT(abort_failed, 0);
  CHECK_EQ_INT(pool.used, 0);
  cap_upload_free(&t.u);

  /* The caller aborts mid-stream: no Complete, one abort, "canceled". */
  fake_fail(&e.fake, OP_PART, 0, 0, NULL);
  up_init(&t, &e, &pool, 2);
  stream(&e, &t, src, 2 * PART + 10);
  s3env_run_for(&e, 50);
  cap_upload_abort(&t.u, "canceled", "The job was canceled");
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 0);
  CHECK_EQ_STR(t.u.err_code, "canceled");
  CHECK_EQ_INT(e.fake.count[OP_ABORT], 2);
  CHECK_EQ_INT(e.fake.count[OP_COMPLETE], 0);
  CHECK_EQ_INT(pool.used, 0);
  cap_upload_free(&t.u);

  /* An abort the store refuses (403) is sent once, not retried, and
   * handed to on_abort_failed. */
  fake_fail(&e.fake, OP_ABORT, 10, 403, "AccessDenied");
  up_init(&t, &e, &pool, 2);
  stream(&e, &t, src, 2 * PART + 10);
  s3env_run_for(&e, 50);
  cap_upload_abort(&t.u, "storage_error", "Reading ffmpeg's output failed");
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 0);
  CHECK_EQ_INT(e.fake.count[OP_ABORT], 3);
  CHECK_EQ_INT(abort_failed, 1);
  CHECK_EQ_INT(abort_failed_status, 403);
  s3env_run_for(&e, 100);
  CHECK_EQ_INT(e.fake.count[OP_ABORT], 3);
  cap_upload_free(&t.u);
  CHECK_EQ_INT(pool.used, 0);
  cap_bufpool_free(&pool);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

/* With one buffer in the pool, the source waits for a part to go out. */
static void test_backpressure(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 2), 0))
    return;
  struct cap_bufpool pool;
  cap_bufpool_init(&pool, PART, PART);
  char src[PART];
  fill(src, sizeof(src));
  struct up t;
  up_init(&t, &e, &pool, 2);
  CHECK_EQ_INT(stream(&e, &t, src, PART), PART);
  char *ptr;
  CHECK_EQ_INT(cap_upload_space(&t.u, &ptr), 0);
  CHECK(s3env_run(&e, &t.spaces, 3000));
  CHECK(cap_upload_space(&t.u, &ptr) > 0);
  cap_upload_finish(&t.u);
  CHECK(s3env_run(&e, &t.done, 5000));
  CHECK_EQ_INT(t.ok, 1);
  CHECK_EQ_INT(t.u.nparts, 1);
  cap_upload_free(&t.u);
  CHECK_EQ_INT(pool.used, 0);
  cap_bufpool_free(&pool);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

int main(void) {
  alarm(60);
  test_parts();
  test_file_and_retry();
  test_aborts();
  test_backpressure();
  return check_report();
}
