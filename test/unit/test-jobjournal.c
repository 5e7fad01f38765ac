/* A job's row through a real journal file: an ended job comes back with
 * the very JSON it answered, a succeeded job's row keeps its answer once
 * (inside its job JSON), and a row whose answer mark does not fit its job
 * JSON is not believed. */
#include "jobjournal.h"

#include "check.h"
#include "jobjson.h"
#include "journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char base[64];

struct loaded {
  int n;
  char *answer_column;
  struct cap_job *job;
};

static void on_row(void *arg, const struct cap_journal_job *row) {
  struct loaded *l = arg;
  int interrupted = 0;
  l->n++;
  free(l->answer_column);
  l->answer_column = row->answer_json ? strdup(row->answer_json) : NULL;
  l->job = cap_jobjournal_restore(NULL, row, &interrupted);
  CHECK_EQ_INT(interrupted, 0);
}

/* An ended probe job, as jobs.c holds it once CLOSED. */
static struct cap_job *probe_job(const char *id, int ok) {
  struct cap_job *j = calloc(1, sizeof(*j));
  snprintf(j->id, sizeof(j->id), "%s", id);
  snprintf(j->owner, sizeof(j->owner), "default");
  j->capability = CAP_CAP_FFPROBE;
  j->input_key = strdup("in/a.mp4");
  j->created_at = 1000;
  j->started_at = 2000;
  j->finished_at = 3000;
  j->exit_status = ok ? 0 : 1;
  j->stage = CAP_JOB_S_CLOSED;
  j->state = ok ? CAP_JOB_SUCCEEDED : CAP_JOB_FAILED;
  if (ok) {
    j->probe_json = strdup("{\"format\":{\"duration\":\"5.0\",\"tags\":{\"result\":\"x\"}}}");
  } else {
    j->err = CAP_E_FFMPEG_FAILED;
    j->err_msg = strdup("ffprobe exited with status 1");
  }
  return j;
}

static void free_job(struct cap_job *j) {
  if (j == NULL)
    return;
  free(j->input_key);
  free(j->output_key);
  free(j->output_prefix);
  free(j->preset);
  free(j->idem_key);
  free(j->callback_url);
  free(j->probe_json);
  free(j->err_msg);
  free(j->saved_job);
  free(j->saved_answer);
  free(j);
}

/* Writes j, loads the journal back and compares what the restored job
 * answers with what j answered. */
static void round_trip(struct cap_job *j, const char *file, int marked) {
  char path[128], err[300];
  struct cap_journal *jr = NULL;
  snprintf(path, sizeof(path), "%s/%s", base, file);
  if (!CHECK_EQ_INT(cap_journal_open(path, 0, &jr, err, sizeof(err)), 0))
    return;
  cap_jobjournal_put(jr, j);
  struct loaded l = {0};
  CHECK_EQ_INT(cap_journal_job_load(jr, on_row, &l), 0);
  CHECK_EQ_INT(l.n, 1);
  struct cap_buf a, b, ja, jb;
  cap_buf_init(&a);
  cap_buf_init(&b);
  cap_buf_init(&ja);
  cap_buf_init(&jb);
  if (j->state == CAP_JOB_SUCCEEDED)
    cap_jobjson_result(j, &a);
  else
    cap_jobjson_error(j, &a);
  cap_jobjson_job(j, &ja);
  if (CHECK(l.job != NULL && l.answer_column != NULL)) {
    if (l.job->state == CAP_JOB_SUCCEEDED)
      cap_jobjson_result(l.job, &b);
    else
      cap_jobjson_error(l.job, &b);
    cap_jobjson_job(l.job, &jb);
    cap_buf_putc(&a, '\0');
    cap_buf_putc(&b, '\0');
    cap_buf_putc(&ja, '\0');
    cap_buf_putc(&jb, '\0');
    CHECK_EQ_STR(b.data, a.data);
    CHECK_EQ_STR(jb.data, ja.data);
    /* Kept once: the column is a mark of the answer's length, or the
     * answer itself when the job JSON does not hold it. */
    if (marked) {
      char want[40];
      snprintf(want, sizeof(want), "=result:%zu", strlen(a.data));
      CHECK_EQ_STR(l.answer_column, want);
    } else {
      CHECK_EQ_STR(l.answer_column, a.data);
    }
  }
  cap_buf_free(&a);
  cap_buf_free(&b);
  cap_buf_free(&ja);
  cap_buf_free(&jb);
  free(l.answer_column);
  free_job(l.job);
  cap_journal_close(jr);
}

static void test_succeeded_kept_once(void) {
  struct cap_job *j = probe_job("job-ok", 1);
  round_trip(j, "ok.db", 1);
  free_job(j);
}

static void test_failed_kept_whole(void) {
  struct cap_job *j = probe_job("job-failed", 0);
  round_trip(j, "failed.db", 0);
  free_job(j);
}

/* A mark whose length does not fit the job JSON is a damaged row: its
 * answer is not cut out of the wrong bytes. */
static void test_damaged_mark(void) {
  static const char job[] = "{\"job_id\":\"x\",\"status\":\"succeeded\",\"result\":{\"a\":1},"
                            "\"error\":null}";
  struct cap_journal_job row = {.id = "job-bad",
                                .owner = "default",
                                .capability = "ffprobe",
                                .state = "succeeded",
                                .input_key = "in/a.mp4",
                                .created_at = 1,
                                .finished_at = 2,
                                .job_json = job,
                                .answer_json = "=result:9"};
  int interrupted = 0;
  struct cap_job *j = cap_jobjournal_restore(NULL, &row, &interrupted);
  if (CHECK(j != NULL)) {
    CHECK(j->saved_answer == NULL || strcmp(j->saved_answer, "{\"a\":1}") != 0);
    CHECK(j->saved_answer == NULL || strstr(j->saved_answer, "\"a\":1,\"erro") == NULL);
  }
  free_job(j);
  row.answer_json = "=result:7";
  j = cap_jobjournal_restore(NULL, &row, &interrupted);
  if (CHECK(j != NULL))
    CHECK_EQ_STR(j->saved_answer, "{\"a\":1}");
  free_job(j);
}

int main(void) {
  char cmd[128];
  snprintf(base, sizeof(base), "/tmp/test-jobjournal-XXXXXX");
  if (mkdtemp(base) == NULL)
    return 1;
  test_succeeded_kept_once();
  test_failed_kept_whole();
  test_damaged_mark();
  snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
  CHECK_EQ_INT(system(cmd), 0);
  return check_report();
}
