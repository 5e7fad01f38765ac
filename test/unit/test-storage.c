#include "objstore.h"

#include "alloc.h"
#include "check.h"
#include "fakes3.h"
#include "log.h"
#include "metrics.h"
#include "storerr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PART 4096

/* What the callbacks saw. */
struct seen {
  int ready, done;
  struct cap_storage_err err;
  int failed;
};

static void on_ready(struct cap_objin *in, const struct cap_storage_err *err) {
  struct seen *s = in->data;
  s->ready++;
  s->failed = err != NULL;
  if (err)
    s->err = *err;
}

static void on_done(struct cap_objout *out, const struct cap_storage_err *err) {
  struct seen *s = out->data;
  s->done++;
  s->failed = err != NULL;
  if (err)
    s->err = *err;
}

static void write_tmp(struct cap_store *st, const char *name, const char *data, size_t n) {
  int fd = cap_store_tmp_create(st, name);
  CHECK(fd >= 0);
  CHECK_EQ_INT(write(fd, data, n), n);
  close(fd);
}

static void test_file_backend(void) {
  char dir[] = "/tmp/test-storage-XXXXXX", err[256];
  CHECK(mkdtemp(dir) != NULL);
  struct cap_store store;
  CHECK_EQ_INT(cap_store_open(&store, dir, err, sizeof(err)), 0);
  struct cap_objstore os;
  cap_objstore_init_ops(&os, &cap_objstore_file_ops, NULL, &store);
  CHECK_EQ_INT(cap_objstore_can_stream(&os), 0);
  CHECK_EQ_INT(cap_objstore_output_key_usable(&os, "a/b.mp4"), 1);
  CHECK_EQ_INT(cap_objstore_output_key_usable(&os, ".cap-tmp/x"), 0);
  CHECK_EQ_INT(cap_objstore_precheck(&os, "in/x.mp4"), CAP_STORAGE_E_NOT_FOUND);

  /* An output from a temp file lands at its key. */
  struct seen s;
  memset(&s, 0, sizeof(s));
  write_tmp(&store, "job1", "payload", 7);
  struct cap_objout out;
  cap_objstore_output_init(&out, &os, "in/x.mp4");
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_put_file(&out, "job1", 7);
  CHECK_EQ_INT(s.done, 1);
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(out.bytes, 7);
  CHECK_EQ_INT(cap_objstore_output_done(&out), 1);
  /* Nothing to abort after the end. */
  cap_objstore_abort(&out, CAP_STORAGE_E_CANCELED, "late");
  CHECK_EQ_INT(s.done, 1);
  cap_objstore_free_output(&out);
  CHECK_EQ_INT(cap_objstore_precheck(&os, "in/x.mp4"), CAP_STORAGE_OK);

  /* ... and opens as an input. */
  struct cap_objin in;
  memset(&s, 0, sizeof(s));
  cap_objstore_input_init(&in, &os, "in/x.mp4", "job2.in");
  in.on_ready = on_ready;
  in.data = &s;
  cap_objstore_open_input(&in);
  CHECK_EQ_INT(s.ready, 1);
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(in.size, 7);
  char buf[16];
  CHECK_EQ_INT(read(in.fd, buf, sizeof(buf)), 7);
  CHECK_EQ_INT(cap_objstore_input_busy(&in), 0);
  cap_objstore_close_input(&in);
  CHECK_EQ_INT(in.fd, -1);

  /* A missing input is typed, and the API makes it 404. */
  memset(&s, 0, sizeof(s));
  cap_objstore_input_init(&in, &os, "in/none.mp4", "job3.in");
  in.on_ready = on_ready;
  in.data = &s;
  cap_objstore_open_input(&in);
  CHECK_EQ_INT(s.failed, 1);
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_NOT_FOUND);
  CHECK_EQ_STR(s.err.msg, "The input object does not exist");
  CHECK_EQ_INT(cap_err_status(cap_storerr_err(&s.err)), 404);
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "input_not_found");
  cap_objstore_close_input(&in);

  /* A rename that cannot happen (a file where a directory must be). */
  memset(&s, 0, sizeof(s));
  write_tmp(&store, "job4", "x", 1);
  cap_objstore_output_init(&out, &os, "in/x.mp4/deeper");
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_put_file(&out, "job4", 1);
  CHECK_EQ_INT(s.failed, 1);
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_LOCAL);
  CHECK_EQ_INT(s.err.side, CAP_STORAGE_OUTPUT);
  CHECK(strncmp(s.err.msg, "Could not store the output: ", 28) == 0);
  CHECK_EQ_INT(cap_err_status(cap_storerr_err(&s.err)), 502);
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "storage_error");
  cap_objstore_free_output(&out);
  cap_store_discard(&store, "job4");
  cap_store_close(&store);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

static void on_deleted(struct cap_objdel *d, const struct cap_storage_err *err) {
  struct seen *s = d->data;
  s->done++;
  s->failed = err != NULL;
  if (err)
    s->err = *err;
}

static void start_delete(struct cap_objdel *d, struct cap_objstore *os, struct seen *s,
                         const char *key) {
  memset(s, 0, sizeof(*s));
  cap_objstore_delete_init(d, os, key);
  d->on_done = on_deleted;
  d->data = s;
  cap_objstore_delete(d);
}

static double deletes(const char *result) {
  return cap_metrics_value(CAP_M_STORAGE_DELETES, CAP_LABELS(result));
}

/* Sends the log to a temp file named into path (at least 32 bytes). */
static void log_capture(char *path) {
  snprintf(path, 32, "/tmp/test-storage-log-XXXXXX");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ_INT(cap_log_open(path), 0);
}

/* Ends log_capture: returns 1 when a line of the log holds both needles. */
static int log_has(const char *path, const char *a, const char *b) {
  char line[2048];
  int found = 0;
  cap_log_flush();
  cap_log_open(NULL);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof(line), f))
    found |= strstr(line, a) != NULL && strstr(line, b) != NULL;
  if (f)
    fclose(f);
  unlink(path);
  return found;
}

static void file_store_object(struct cap_objstore *os, const char *key) {
  struct seen s;
  struct cap_objout out;
  memset(&s, 0, sizeof(s));
  write_tmp(os->local, "obj", "x", 1);
  cap_objstore_output_init(&out, os, key);
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_put_file(&out, "obj", 1);
  CHECK_EQ_INT(s.failed, 0);
  cap_objstore_free_output(&out);
}

/* Returns 1 when path (below the store's root) exists. */
static int exists(const struct cap_store *st, const char *path) {
  struct stat sb;
  return fstatat(st->root_fd, path, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Deletes key from the file store: done at once, without an error. */
static void file_delete_ok(struct cap_objstore *os, const char *key) {
  struct cap_objdel d;
  struct seen s;
  start_delete(&d, os, &s, key);
  CHECK_EQ_INT(s.done, 1);
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(cap_objstore_delete_busy(&d), 0);
}

static void test_file_delete(void) {
  char dir[] = "/tmp/test-storage-XXXXXX", err[256];
  CHECK(mkdtemp(dir) != NULL);
  struct cap_store store;
  CHECK_EQ_INT(cap_store_open(&store, dir, err, sizeof(err)), 0);
  struct cap_objstore os;
  cap_objstore_init_ops(&os, &cap_objstore_file_ops, NULL, &store);
  double ok = deletes("ok"), failed = deletes("failed");
  file_store_object(&os, "top.mp4");
  file_store_object(&os, "h/master.m3u8");
  file_store_object(&os, "h/v1/seg0.ts");
  file_store_object(&os, "h/v1/seg1.ts");

  file_delete_ok(&os, "top.mp4");
  CHECK(!exists(&store, "top.mp4"));
  /* A directory that still holds objects stays... */
  file_delete_ok(&os, "h/v1/seg0.ts");
  CHECK(!exists(&store, "h/v1/seg0.ts"));
  CHECK(exists(&store, "h/v1/seg1.ts"));
  /* ... and goes with its last object, up to the first that is not empty. */
  file_delete_ok(&os, "h/v1/seg1.ts");
  CHECK(!exists(&store, "h/v1"));
  CHECK(exists(&store, "h/master.m3u8"));
  file_delete_ok(&os, "h/master.m3u8");
  CHECK(!exists(&store, "h"));
  CHECK(exists(&store, CAP_STORE_TMP_DIR));
  CHECK_EQ_INT(deletes("ok"), ok + 4);

  /* Missing objects, at the top and nested below missing directories, are gone. */
  file_delete_ok(&os, "top.mp4");
  file_delete_ok(&os, "h/v1/seg9.ts");
  file_delete_ok(&os, "no/such/dir/x.ts");
  /* A directory is no object: it counts as missing and stays. */
  file_store_object(&os, "d/x.ts");
  file_delete_ok(&os, "d");
  CHECK(exists(&store, "d/x.ts"));
  /* Neither is a temp file: it is left to its job. */
  write_tmp(&store, "busy", "x", 1);
  file_delete_ok(&os, CAP_STORE_TMP_DIR "/busy");
  CHECK(exists(&store, CAP_STORE_TMP_DIR "/busy"));
  cap_store_discard(&store, "busy");
  CHECK_EQ_INT(deletes("ok"), ok + 9);

  /* A key that could leave the root fails, typed, counted and logged. */
  struct cap_objdel d;
  struct seen s;
  char log[32];
  log_capture(log);
  start_delete(&d, &os, &s, "d/../d/x.ts");
  CHECK(log_has(log, "\"event\":\"storage.delete_failed\"", "\"key\":\"d/../d/x.ts\""));
  CHECK_EQ_INT(s.done, 1);
  CHECK_EQ_INT(s.failed, 1);
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_LOCAL);
  CHECK_EQ_INT(s.err.side, CAP_STORAGE_OUTPUT);
  CHECK_EQ_INT(s.err.sys_errno, EINVAL);
  CHECK(exists(&store, "d/x.ts"));
  CHECK_EQ_INT(deletes("failed"), failed + 1);
  /* Nothing is ever under way to cancel. */
  cap_objstore_cancel_delete(&d);
  CHECK_EQ_INT(s.done, 1);
  cap_store_close(&store);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

/* The S3 backend over the fake bucket. */
struct s3case {
  struct s3env e;
  char dir[64];
  struct cap_store store;
  struct cap_storage st;
  struct cap_objstore os;
};

static int s3case_init(struct s3case *c) {
  char err[256];
  if (s3env_init(&c->e, 2) != 0)
    return -1;
  snprintf(c->dir, sizeof(c->dir), "/tmp/test-storage-XXXXXX");
  if (mkdtemp(c->dir) == NULL || cap_store_open(&c->store, c->dir, err, sizeof(err)) != 0)
    return -1;
  memset(&c->st, 0, sizeof(c->st));
  c->st.kind = CAP_STORAGE_S3;
  cap_s3_init(&c->st.s3, &c->e.cl, &c->e.conf);
  cap_bufpool_init(&c->st.pool, PART, 4 * PART);
  cap_objstore_init(&c->os, &c->st, &c->store);
  c->os.parts_in_flight = 2;
  c->os.input_max = 10000;
  return 0;
}

static void s3case_fini(struct s3case *c) {
  cap_bufpool_free(&c->st.pool);
  cap_store_close(&c->store);
  CHECK_EQ_INT(s3env_fini(&c->e), 0);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
  CHECK_EQ_INT(system(cmd), 0);
}

static void open_input(struct s3case *c, struct cap_objin *in, struct seen *s, const char *key) {
  memset(s, 0, sizeof(*s));
  cap_objstore_input_init(in, &c->os, key, "j.in");
  in->on_ready = on_ready;
  in->data = s;
  cap_objstore_open_input(in);
  CHECK(s3env_run(&c->e, &s->ready, 5000));
}

static void test_s3_input(void) {
  struct s3case c;
  if (!CHECK_EQ_INT(s3case_init(&c), 0))
    return;
  CHECK(c.os.ops == &cap_objstore_s3_ops);
  CHECK_EQ_INT(cap_objstore_can_stream(&c.os), 1);
  /* S3 is not asked before the job: the download finds out. */
  CHECK_EQ_INT(cap_objstore_precheck(&c.os, "none"), CAP_STORAGE_OK);
  CHECK_EQ_INT(c.e.fake.count[OP_HEAD] + c.e.fake.count[OP_GET], 0);
  fake_put(&c.e.fake, "in.mp4", "0123456789", 10);
  struct cap_objin in;
  struct seen s;
  open_input(&c, &in, &s, "in.mp4");
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(in.size, 10);
  char buf[16];
  CHECK_EQ_INT(read(in.fd, buf, sizeof(buf)), 10);
  CHECK_EQ_MEM(buf, 10, "0123456789", 10);
  struct stat sb;
  CHECK_EQ_INT(fstatat(c.store.tmp_fd, "j.in", &sb, 0), 0);
  CHECK_EQ_INT(sb.st_mode & 0777, 0600);
  cap_objstore_close_input(&in);
  /* The temp file goes with the input. */
  CHECK_EQ_INT(fstatat(c.store.tmp_fd, "j.in", &sb, 0), -1);

  open_input(&c, &in, &s, "none");
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_NOT_FOUND);
  CHECK_EQ_INT(s.err.status, 404);
  CHECK_EQ_STR(s.err.detail, "NoSuchKey");
  cap_objstore_close_input(&in);

  fake_fail(&c.e.fake, OP_GET, 1, 403, "AccessDenied");
  open_input(&c, &in, &s, "in.mp4");
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_DENIED);
  CHECK_EQ_STR(s.err.msg, "The object store refused the request: AccessDenied: fake 403");
  CHECK_EQ_INT(cap_err_status(cap_storerr_err(&s.err)), 502);
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "storage_denied");
  cap_objstore_close_input(&in);

  c.os.input_max = 5;
  open_input(&c, &in, &s, "in.mp4");
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_TOO_LARGE);
  CHECK_EQ_INT(cap_err_status(cap_storerr_err(&s.err)), 413);
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "input_too_large");
  cap_objstore_close_input(&in);
  c.os.input_max = 0;

  fake_fail(&c.e.fake, OP_GET, 10, 503, "SlowDown");
  open_input(&c, &in, &s, "in.mp4");
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_UNAVAILABLE);
  CHECK_EQ_STR(s.err.msg, "Downloading the input failed: SlowDown: fake 503");
  CHECK_EQ_INT(cap_err_status(cap_storerr_err(&s.err)), 502);
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "storage_error");
  cap_objstore_close_input(&in);

  /* Canceled while the download runs: no callback, the temp file goes. */
  fake_fail(&c.e.fake, OP_GET, 0, 0, NULL);
  memset(&s, 0, sizeof(s));
  cap_objstore_input_init(&in, &c.os, "in.mp4", "k.in");
  in.on_ready = on_ready;
  in.data = &s;
  cap_objstore_open_input(&in);
  CHECK_EQ_INT(cap_objstore_input_busy(&in), 1);
  cap_objstore_cancel_input(&in);
  cap_objstore_close_input(&in);
  s3env_run_for(&c.e, 50);
  CHECK_EQ_INT(s.ready, 0);
  CHECK_EQ_INT(fstatat(c.store.tmp_fd, "k.in", &sb, 0), -1);
  s3case_fini(&c);
}

static void test_s3_output(void) {
  struct s3case c;
  if (!CHECK_EQ_INT(s3case_init(&c), 0))
    return;
  char src[2 * PART + 100];
  for (size_t i = 0; i < sizeof(src); i++)
    src[i] = (char)i;
  struct seen s;
  memset(&s, 0, sizeof(s));
  struct cap_objout out;
  cap_objstore_output_init(&out, &c.os, "r/out.mp4");
  out.content_type = "video/mp4";
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_start_stream(&out);
  size_t off = 0;
  while (off < sizeof(src)) {
    char *ptr;
    size_t room = cap_objstore_space(&out, &ptr);
    if (room == 0) {
      s3env_run_for(&c.e, 5);
      continue;
    }
    size_t k = sizeof(src) - off < room ? sizeof(src) - off : room;
    memcpy(ptr, src + off, k);
    cap_objstore_commit(&out, k);
    off += k;
  }
  cap_objstore_finish(&out);
  CHECK(s3env_run(&c.e, &s.done, 5000));
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(out.parts, 3);
  CHECK_EQ_INT(out.bytes, sizeof(src));
  CHECK_EQ_STR(out.etag, "\"done\"");
  struct fake_obj *o = fake_find(&c.e.fake, "r/out.mp4", 0);
  CHECK(o != NULL && o->len == sizeof(src) && memcmp(o->data, src, sizeof(src)) == 0);
  cap_objstore_free_output(&out);

  /* From a temp file, with a single PUT. */
  write_tmp(&c.store, "t1", "small", 5);
  memset(&s, 0, sizeof(s));
  cap_objstore_output_init(&out, &c.os, "r/small");
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_put_file(&out, "t1", 5);
  CHECK(s3env_run(&c.e, &s.done, 5000));
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(out.parts, 1);
  CHECK_EQ_INT(out.bytes, 5);
  cap_objstore_free_output(&out);

  /* A refused PUT is DENIED, with the old message. */
  fake_fail(&c.e.fake, OP_PUT, 1, 403, "AccessDenied");
  memset(&s, 0, sizeof(s));
  cap_objstore_output_init(&out, &c.os, "r/small");
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_put_file(&out, "t1", 5);
  CHECK(s3env_run(&c.e, &s.done, 5000));
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_DENIED);
  CHECK_EQ_STR(s.err.msg, "Storing the output failed: AccessDenied: fake 403");
  CHECK_EQ_INT(cap_err_status(cap_storerr_err(&s.err)), 502);
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "storage_denied");
  cap_objstore_free_output(&out);

  /* Aborted by the caller mid-stream. */
  memset(&s, 0, sizeof(s));
  cap_objstore_output_init(&out, &c.os, "r/gone");
  out.on_done = on_done;
  out.data = &s;
  cap_objstore_start_stream(&out);
  char *ptr;
  size_t room = cap_objstore_space(&out, &ptr);
  memset(ptr, 'z', room);
  cap_objstore_commit(&out, room);
  s3env_run_for(&c.e, 50);
  int aborts = c.e.fake.count[OP_ABORT];
  cap_objstore_abort(&out, CAP_STORAGE_E_CANCELED, "The job was canceled");
  CHECK(s3env_run(&c.e, &s.done, 5000));
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_CANCELED);
  CHECK_EQ_INT(c.e.fake.count[OP_ABORT], aborts + 1);
  cap_objstore_free_output(&out);
  CHECK_EQ_INT(c.st.pool.used, 0);
  cap_store_discard(&c.store, "t1");
  s3case_fini(&c);
}

/* Starts deleting key and runs the loop until it ends. */
static void s3_delete(struct s3case *c, struct cap_objdel *d, struct seen *s, const char *key) {
  start_delete(d, &c->os, s, key);
  /* S3 answers from a later loop turn. */
  CHECK_EQ_INT(s->done, 0);
  CHECK_EQ_INT(cap_objstore_delete_busy(d), 1);
  CHECK(s3env_run(&c->e, &s->done, 5000));
  CHECK_EQ_INT(s->done, 1);
  CHECK_EQ_INT(cap_objstore_delete_busy(d), 0);
}

static void test_s3_delete(void) {
  struct s3case c;
  if (!CHECK_EQ_INT(s3case_init(&c), 0))
    return;
  struct cap_objdel d;
  struct seen s;
  int *sent = &c.e.fake.count[OP_DELETE];
  double ok = deletes("ok"), failed = deletes("failed");

  fake_put(&c.e.fake, "h/v1/seg0.ts", "abc", 3);
  s3_delete(&c, &d, &s, "h/v1/seg0.ts");
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(*sent, 1);
  CHECK(fake_find(&c.e.fake, "h/v1/seg0.ts", 0) == NULL);
  /* A missing key: S3 says 204, other stores 404; both mean gone. */
  s3_delete(&c, &d, &s, "h/v1/seg0.ts");
  CHECK_EQ_INT(s.failed, 0);
  fake_fail(&c.e.fake, OP_DELETE, 1, 404, "NoSuchKey");
  s3_delete(&c, &d, &s, "h/v1/seg0.ts");
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(*sent, 3);
  CHECK_EQ_INT(deletes("ok"), ok + 3);

  /* A 503 is retried, and the retry goes through. */
  fake_put(&c.e.fake, "h/master.m3u8", "m", 1);
  fake_fail(&c.e.fake, OP_DELETE, 1, 503, "SlowDown");
  s3_delete(&c, &d, &s, "h/master.m3u8");
  CHECK_EQ_INT(s.failed, 0);
  CHECK_EQ_INT(*sent, 5);
  CHECK(fake_find(&c.e.fake, "h/master.m3u8", 0) == NULL);
  CHECK_EQ_INT(deletes("ok"), ok + 4);

  /* An outage outlasts the retries (2 here). */
  fake_fail(&c.e.fake, OP_DELETE, 10, 503, "SlowDown");
  s3_delete(&c, &d, &s, "h/a.ts");
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_UNAVAILABLE);
  CHECK_EQ_INT(s.err.status, 503);
  CHECK_EQ_INT(*sent, 8);
  CHECK_EQ_INT(deletes("failed"), failed + 1);

  /* A refusal is final after one attempt, typed, counted and logged. */
  fake_put(&c.e.fake, "h/b.ts", "b", 1);
  fake_fail(&c.e.fake, OP_DELETE, 1, 403, "AccessDenied");
  char log[32];
  log_capture(log);
  s3_delete(&c, &d, &s, "h/b.ts");
  CHECK(log_has(log, "\"event\":\"storage.delete_failed\"", "\"code\":\"AccessDenied\""));
  CHECK_EQ_INT(*sent, 9);
  CHECK_EQ_INT(s.err.code, CAP_STORAGE_E_DENIED);
  CHECK_EQ_INT(s.err.side, CAP_STORAGE_OUTPUT);
  CHECK_EQ_INT(s.err.status, 403);
  CHECK_EQ_STR(s.err.detail, "AccessDenied");
  CHECK_EQ_STR(s.err.msg, "Deleting the output failed: AccessDenied: fake 403");
  CHECK_EQ_STR(cap_err_code(cap_storerr_err(&s.err)), "storage_denied");
  CHECK(fake_find(&c.e.fake, "h/b.ts", 0) != NULL);
  CHECK_EQ_INT(deletes("failed"), failed + 2);
  s3case_fini(&c);
}

static void test_s3_cancel_delete(void) {
  struct s3case c;
  if (!CHECK_EQ_INT(s3case_init(&c), 0))
    return;
  struct cap_objdel d;
  struct seen s;
  double ok = deletes("ok"), failed = deletes("failed");
  fake_put(&c.e.fake, "h/c.ts", "c", 1);

  /* Canceled before the request is out. */
  start_delete(&d, &c.os, &s, "h/c.ts");
  cap_objstore_cancel_delete(&d);
  CHECK_EQ_INT(cap_objstore_delete_busy(&d), 0);
  CHECK(d.req == NULL);
  s3env_run_for(&c.e, 50);
  CHECK_EQ_INT(s.done, 0);

  /* Canceled while waiting to retry: the retry is never sent. */
  c.e.conf.backoff_ms = 200;
  fake_fail(&c.e.fake, OP_DELETE, 1, 503, "SlowDown");
  c.e.fake.count[OP_DELETE] = 0;
  start_delete(&d, &c.os, &s, "h/c.ts");
  CHECK(s3env_run(&c.e, &c.e.fake.count[OP_DELETE], 5000));
  for (int i = 0; i < 2000 && !d.req->timer_open; i++)
    s3env_run_for(&c.e, 1);
  CHECK(d.req->timer_open);
  CHECK_EQ_INT(cap_objstore_delete_busy(&d), 1);
  cap_objstore_cancel_delete(&d);
  s3env_run_for(&c.e, 400);
  CHECK_EQ_INT(s.done, 0);
  CHECK_EQ_INT(c.e.fake.count[OP_DELETE], 1);
  CHECK(fake_find(&c.e.fake, "h/c.ts", 0) != NULL);
  /* A cancel is no result: neither counter moves. */
  CHECK_EQ_INT(deletes("ok"), ok);
  CHECK_EQ_INT(deletes("failed"), failed);
  s3case_fini(&c);
}

int main(void) {
  alarm(60);
  test_file_backend();
  test_s3_input();
  test_s3_output();
  test_file_delete();
  test_s3_delete();
  test_s3_cancel_delete();
  return check_report();
}
