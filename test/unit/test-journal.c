/* The journal against real SQLite files in a temp directory: rows written
 * come back, purges and deletes forget them, the outbox keeps its events,
 * a second server is locked out, and unusable files (garbage, truncated,
 * from a newer schema, in a directory that cannot hold them) are refused
 * with a sentence naming the file and --journal-reset, which then moves
 * them aside. */
#include "check.h"
#include "journal.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[64];

static void path_of(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", base, name);
}

static void write_file(const char *path, const void *data, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, data, n) != (ssize_t)n)
    perror(path);
  close(fd);
}

struct seen {
  int n;
  char ids[8][40];
  char states[8][20];
  char json[8][64];
  int hash_ok[8];
  long long finished[8];
};

static void on_job(void *arg, const struct cap_journal_job *row) {
  struct seen *s = arg;
  if (s->n >= 8)
    return;
  snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", row->id);
  snprintf(s->states[s->n], sizeof(s->states[0]), "%s", row->state);
  snprintf(s->json[s->n], sizeof(s->json[0]), "%s", row->job_json ? row->job_json : "");
  s->hash_ok[s->n] = row->body_hash && row->body_hash[0] == 7 && row->body_hash[31] == 9;
  s->finished[s->n] = row->finished_at;
  s->n++;
}

static void on_key(void *arg, const char *key) {
  struct seen *s = arg;
  if (s->n < 8)
    snprintf(s->ids[s->n++], sizeof(s->ids[0]), "%s", key);
}

static void on_event(void *arg, const struct cap_journal_event *e) {
  struct seen *s = arg;
  if (s->n >= 8)
    return;
  snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", e->id);
  s->finished[s->n] = e->attempts * 1000000LL + e->next_at;
  snprintf(s->json[s->n], sizeof(s->json[0]), "%s", e->body);
  s->n++;
}

static struct cap_journal_job job_row(const char *id, const char *state, long long created,
                                      long long finished, const unsigned char *hash) {
  struct cap_journal_job r = {.id = id,
                              .owner = "render",
                              .req_id = "req",
                              .capability = "ffmpeg",
                              .preset = "720p",
                              .idem_key = hash ? "key-1" : NULL,
                              .body_hash = hash,
                              .state = state,
                              .created_at = created,
                              .finished_at = finished,
                              .input_key = "in/a.mp4",
                              .output_key = "out/a.mp4",
                              .job_json = finished ? "{\"job_id\":\"x\"}" : NULL,
                              .answer_json = finished ? "{\"r2_key\":\"out/a.mp4\"}" : NULL};
  return r;
}

static void test_rows(void) {
  char path[128], err[512] = "";
  path_of(path, sizeof(path), "rows.db");
  struct cap_journal *jr = NULL;
  if (!CHECK(cap_journal_open(path, 0, &jr, err, sizeof(err)) == 0)) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  unsigned char hash[32] = {7};
  hash[31] = 9;
  struct cap_journal_job a = job_row("job-a", "queued", 1000, 0, hash);
  CHECK_EQ_INT(cap_journal_job_put(jr, &a), 0);
  a.state = "running";
  a.started_at = 1500;
  a.upload_id = "upload-1";
  CHECK_EQ_INT(cap_journal_job_put(jr, &a), 0); /* Replaces, not adds. */
  struct cap_journal_job b = job_row("job-b", "succeeded", 2000, 5000, NULL);
  CHECK_EQ_INT(cap_journal_job_put(jr, &b), 0);
  struct cap_journal_job c = job_row("job-c", "failed", 3000, 9000, NULL);
  c.code = "ffmpeg_failed";
  CHECK_EQ_INT(cap_journal_job_put(jr, &c), 0);
  CHECK_EQ_INT(cap_journal_object_add(jr, "job-a", "vod/x/720p/seg_0.m4s"), 0);
  CHECK_EQ_INT(cap_journal_object_add(jr, "job-a", "vod/x/720p/seg_0.m4s"), 0); /* Once. */
  CHECK_EQ_INT(cap_journal_object_add(jr, "job-a", "vod/x/master.m3u8"), 0);
  cap_journal_close(jr);

  /* Everything is there after a reopen, oldest first. */
  jr = NULL;
  if (!CHECK(cap_journal_open(path, 0, &jr, err, sizeof(err)) == 0))
    return;
  struct seen s = {0};
  CHECK_EQ_INT(cap_journal_job_load(jr, on_job, &s), 0);
  CHECK_EQ_INT(s.n, 3);
  CHECK_EQ_STR(s.ids[0], "job-a");
  CHECK_EQ_STR(s.states[0], "running");
  CHECK(s.hash_ok[0]);
  CHECK_EQ_STR(s.ids[1], "job-b");
  CHECK_EQ_STR(s.json[1], "{\"job_id\":\"x\"}");
  CHECK_EQ_INT(s.finished[1], 5000);
  struct seen k = {0};
  CHECK_EQ_INT(cap_journal_object_load(jr, "job-a", on_key, &k), 0);
  CHECK_EQ_INT(k.n, 2);
  CHECK_EQ_STR(k.ids[0], "vod/x/720p/seg_0.m4s");

  /* A purge forgets the jobs that ended before the cutoff, and only those. */
  CHECK_EQ_INT(cap_journal_job_purge(jr, 6000), 0);
  memset(&s, 0, sizeof(s));
  cap_journal_job_load(jr, on_job, &s);
  CHECK_EQ_INT(s.n, 2);
  CHECK_EQ_STR(s.ids[0], "job-a");
  CHECK_EQ_STR(s.ids[1], "job-c");
  CHECK_EQ_INT(cap_journal_object_clear(jr, "job-a"), 0);
  memset(&k, 0, sizeof(k));
  cap_journal_object_load(jr, "job-a", on_key, &k);
  CHECK_EQ_INT(k.n, 0);
  CHECK_EQ_INT(cap_journal_job_delete(jr, "job-c"), 0);
  memset(&s, 0, sizeof(s));
  cap_journal_job_load(jr, on_job, &s);
  CHECK_EQ_INT(s.n, 1);

  struct cap_journal_stats st;
  cap_journal_stats(jr, &st);
  CHECK_EQ_INT(st.writes, 5); /* Since the reopen: purge (jobs, objects), clear, delete (2). */
  CHECK_EQ_INT(st.write_errors, 0);
  cap_journal_close(jr);

  /* The file is private: it holds results and keys. */
  struct stat sb;
  CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
}

static void test_outbox(void) {
  char path[128], err[512] = "";
  path_of(path, sizeof(path), "outbox.db");
  struct cap_journal *jr = NULL;
  if (!CHECK(cap_journal_open(path, 0, &jr, err, sizeof(err)) == 0))
    return;
  struct cap_journal_event e = {.id = "msg_1",
                                .job_id = "job-a",
                                .owner = "render",
                                .url = "https://hooks.example.com/cap",
                                .type = "job.succeeded",
                                .body = "{\"type\":\"job.succeeded\"}",
                                .attempts = 0,
                                .created_at = 100,
                                .next_at = 100};
  CHECK_EQ_INT(cap_journal_event_add(jr, &e), 0);
  e.id = "msg_2";
  e.created_at = 200;
  CHECK_EQ_INT(cap_journal_event_add(jr, &e), 0);
  CHECK_EQ_INT(cap_journal_event_update(jr, "msg_1", 3, 5000), 0);
  cap_journal_close(jr);
  jr = NULL;
  if (!CHECK(cap_journal_open(path, 0, &jr, err, sizeof(err)) == 0))
    return;
  struct seen s = {0};
  CHECK_EQ_INT(cap_journal_event_load(jr, on_event, &s), 0);
  CHECK_EQ_INT(s.n, 2);
  CHECK_EQ_STR(s.ids[0], "msg_1");
  CHECK_EQ_INT(s.finished[0], 3 * 1000000LL + 5000);
  CHECK_EQ_STR(s.json[0], "{\"type\":\"job.succeeded\"}");
  CHECK_EQ_INT(cap_journal_event_delete(jr, "msg_1"), 0);
  memset(&s, 0, sizeof(s));
  cap_journal_event_load(jr, on_event, &s);
  CHECK_EQ_INT(s.n, 1);
  CHECK_EQ_STR(s.ids[0], "msg_2");
  cap_journal_close(jr);
}

/* A second server on the same journal would take the first one's running
 * jobs for interrupted ones: the lock refuses it. */
static void test_lock(void) {
  char path[128], err[512] = "";
  path_of(path, sizeof(path), "lock.db");
  struct cap_journal *a = NULL, *b = NULL;
  if (!CHECK(cap_journal_open(path, 0, &a, err, sizeof(err)) == 0))
    return;
  err[0] = '\0';
  CHECK_EQ_INT(cap_journal_open(path, 0, &b, err, sizeof(err)), -EBUSY);
  CHECK(b == NULL);
  CHECK(strstr(err, "in use by another cap-server") != NULL);
  cap_journal_close(a);
  CHECK_EQ_INT(cap_journal_open(path, 0, &b, err, sizeof(err)), 0);
  cap_journal_close(b);
}

/* Opens path, expecting a refusal that names the file and the reset. */
static void expect_refused(const char *path, const char *what) {
  char err[512] = "";
  struct cap_journal *jr = NULL;
  int rc = cap_journal_open(path, 0, &jr, err, sizeof(err));
  if (!CHECK(rc < 0)) {
    fprintf(stderr, "  %s was accepted\n", what);
    cap_journal_close(jr);
    return;
  }
  CHECK(jr == NULL);
  CHECK(strstr(err, path) != NULL);
  CHECK(strstr(err, "--journal-reset") != NULL || strstr(err, "--journal off") != NULL);
}

/* Resets path, expecting the broken file moved aside and a usable, empty
 * journal in its place. */
static void expect_reset(const char *path, const char *dir_name) {
  char err[512] = "";
  struct cap_journal *jr = NULL;
  if (!CHECK(cap_journal_open(path, 1, &jr, err, sizeof(err)) == 0)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  struct seen s = {0};
  CHECK_EQ_INT(cap_journal_job_load(jr, on_job, &s), 0);
  CHECK_EQ_INT(s.n, 0);
  cap_journal_close(jr);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "ls %s | grep -q '^%s.broken-'", base, dir_name);
  CHECK(system(cmd) == 0);
}

static void test_unusable(void) {
  char path[128];
  /* Garbage. */
  path_of(path, sizeof(path), "garbage.db");
  char junk[8192];
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (char)(i * 7 + 3);
  write_file(path, junk, sizeof(junk));
  expect_refused(path, "garbage");
  expect_reset(path, "garbage.db");

  /* A real journal cut short: SQLite's header says more pages than the
   * file holds. */
  path_of(path, sizeof(path), "cut.db");
  char err[512];
  struct cap_journal *jr = NULL;
  if (CHECK(cap_journal_open(path, 0, &jr, err, sizeof(err)) == 0)) {
    static char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    for (int i = 0; i < 200; i++) {
      char id[32];
      snprintf(id, sizeof(id), "job-%d", i);
      struct cap_journal_job r = job_row(id, "succeeded", 1000 + i, 2000 + i, NULL);
      r.job_json = big;
      cap_journal_job_put(jr, &r);
    }
    cap_journal_close(jr);
    struct stat sb;
    stat(path, &sb);
    CHECK(sb.st_size > 100000);
    CHECK(truncate(path, sb.st_size / 2) == 0);
    expect_refused(path, "truncated");
    expect_reset(path, "cut.db");
  }

  /* Written by a newer cap-server. */
  path_of(path, sizeof(path), "newer.db");
  sqlite3 *db = NULL;
  sqlite3_open(path, &db);
  sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL);
  sqlite3_close(db);
  expect_refused(path, "newer schema");

  /* A directory that cannot hold it (a path under a regular file fails
   * even for root, whom permission bits do not stop). */
  path_of(path, sizeof(path), "plainfile");
  write_file(path, "x", 1);
  path_of(path, sizeof(path), "plainfile/journal.db");
  expect_refused(path, "a path under a file");
}

int main(void) {
  snprintf(base, sizeof(base), "/tmp/cap-test-journal-XXXXXX");
  if (mkdtemp(base) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  cap_log_set_level(CAP_LOG_ERROR);
  test_rows();
  test_outbox();
  test_lock();
  test_unusable();
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
  if (system(cmd) != 0)
    perror("rm");
  return check_report();
}
