#include "jobjournal.h"

#include "alloc.h"
#include "buf.h"
#include "errcode.h"
#include "execreq.h"
#include "hash.h"
#include "jobjson.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What tells one row of a job from another: an ended job's row is written
 * when it settles and again once it is CLOSED, and most often nothing
 * changed in between, while its JSON (a probe's result) is the bulk of
 * what the journal writes. */
static uint64_t row_hash(const struct cap_journal_job *r) {
  uint64_t h = cap_hash_str(r->state, 0);
  h = cap_hash_str(r->code ? r->code : "", h);
  h = cap_hash_str(r->upload_id ? r->upload_id : "", h);
  h = cap_hash_str(r->job_json ? r->job_json : "", h);
  h = cap_hash_str(r->answer_json ? r->answer_json : "", h);
  return h ^ (uint64_t)r->started_at * 31 ^ (uint64_t)r->finished_at * 17;
}

/* A succeeded job's /exec answer is its job JSON's "result", byte for
 * byte, and that JSON ends with it and then ,"error":null}.  Such a row
 * keeps the answer once: its answer column holds ANSWER_MARK and the
 * answer's length instead (a probe's 4 KB result is most of a row).  A
 * JSON answer starts with '{', so an older row's answer is never taken
 * for a mark. */
#define ANSWER_MARK "=result:"
static const char job_tail[] = ",\"error\":null}";
static const char result_key[] = ",\"result\":";

/* Where the answer of length alen would sit in job (jlen bytes), or NULL
 * when job does not end with ,"result":<alen bytes>,"error":null}. */
static const char *answer_at(const char *job, size_t jlen, size_t alen) {
  size_t tail = sizeof(job_tail) - 1, key = sizeof(result_key) - 1;
  if (alen == 0 || jlen < alen + tail + key)
    return NULL;
  const char *at = job + jlen - tail - alen;
  if (memcmp(job + jlen - tail, job_tail, tail) != 0 || memcmp(at - key, result_key, key) != 0)
    return NULL;
  return at;
}

/* The answer column of an ended job's row: the mark when job holds the
 * answer (into mark), else the answer itself. */
static const char *answer_column(const char *job, const char *answer, char *mark, size_t n) {
  size_t alen = strlen(answer);
  const char *at = answer_at(job, strlen(job), alen);
  if (at == NULL || memcmp(at, answer, alen) != 0)
    return answer;
  snprintf(mark, n, ANSWER_MARK "%zu", alen);
  return mark;
}

/* The saved answer of a restored row, which the caller frees; NULL when
 * its mark does not fit its job JSON (a damaged row). */
static char *answer_of(const char *job, const char *column) {
  if (strncmp(column, ANSWER_MARK, strlen(ANSWER_MARK)) != 0)
    return xstrdup(column);
  char *end;
  unsigned long long alen = strtoull(column + strlen(ANSWER_MARK), &end, 10);
  const char *at = *end == '\0' ? answer_at(job, strlen(job), (size_t)alen) : NULL;
  if (at == NULL || *at != '{')
    return NULL;
  char *a = xmalloc((size_t)alen + 1);
  memcpy(a, at, (size_t)alen);
  a[alen] = '\0';
  return a;
}

void cap_jobjournal_put(struct cap_journal *jr, struct cap_job *j) {
  if (jr == NULL)
    return;
  char events[128] = "", mark[40];
  struct cap_buf job, answer;
  cap_buf_init(&job);
  cap_buf_init(&answer);
  int ended = cap_job_done(j);
  if (ended) {
    cap_jobjson_job(j, &job);
    if (j->state == CAP_JOB_SUCCEEDED)
      cap_jobjson_result(j, &answer);
    else
      cap_jobjson_error(j, &answer);
    cap_buf_putc(&job, '\0');
    cap_buf_putc(&answer, '\0');
  }
  if (j->callback_url)
    cap_execreq_events_format(j->callback_events, events, sizeof(events));
  struct cap_journal_job row = {
      .id = j->id,
      .owner = j->owner,
      .req_id = j->req_id,
      .capability = cap_execreq_capabilities[j->capability],
      .preset = j->preset,
      .idem_key = j->idem_key,
      .body_hash = j->idem_key ? j->body_hash : NULL,
      .state = cap_jobstage_state_name(j->state),
      .code = j->err != CAP_E_NONE ? cap_err_code(j->err) : NULL,
      .created_at = j->created_at,
      .started_at = j->started_at,
      .finished_at = ended ? j->finished_at : 0,
      .input_key = j->input_key,
      .output_key = j->output_key,
      .output_prefix = j->output_prefix,
      .upload_id = ended ? NULL : j->upload_id,
      .callback_url = j->callback_url,
      .callback_events = j->callback_url ? events : NULL,
      .job_json = ended ? job.data : NULL,
      .answer_json = ended ? answer_column(job.data, answer.data, mark, sizeof(mark)) : NULL,
  };
  uint64_t h = row_hash(&row);
  if (h != j->jr_hash && cap_journal_job_put(jr, &row) == 0)
    j->jr_hash = h;
  cap_buf_free(&job);
  cap_buf_free(&answer);
}

/* Returns the public state named name, or -1. */
static int state_of(const char *name) {
  for (int s = CAP_JOB_QUEUED; s <= CAP_JOB_CANCELED; s++)
    if (strcmp(cap_jobstage_state_name((enum cap_job_state)s), name) == 0)
      return s;
  return -1;
}

static int capability_of(const char *name) {
  for (int i = 0; name && cap_execreq_capabilities[i]; i++)
    if (strcmp(cap_execreq_capabilities[i], name) == 0)
      return i;
  return -1;
}

static char *dup_or_null(const char *s) {
  return s ? xstrdup(s) : NULL;
}

/* Fails a job the previous process did not finish, with what it had
 * reached, and saves the answers it gives from now on. */
static void interrupt(struct cap_job *j, const char *was) {
  char msg[200];
  snprintf(msg, sizeof(msg), "The server stopped while the job was %s; send the same request again",
           was);
  j->state = CAP_JOB_FAILED;
  j->err = CAP_E_INTERRUPTED;
  j->err_msg = xstrdup(msg);
  j->finished_at = wall_ms();
}

/* Makes the saved answers of a job that has none (interrupted, or a row
 * without them). */
static void save_answers(struct cap_job *j) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_jobjson_job(j, &b);
  j->saved_job = cap_buf_steal(&b);
  cap_buf_init(&b);
  if (j->state == CAP_JOB_SUCCEEDED)
    cap_jobjson_result(j, &b);
  else
    cap_jobjson_error(j, &b);
  j->saved_answer = cap_buf_steal(&b);
}

struct cap_job *cap_jobjournal_restore(struct cap_job_owner *o, const struct cap_journal_job *row,
                                       int *interrupted) {
  int state = state_of(row->state);
  int cap = capability_of(row->capability);
  *interrupted = 0;
  if (state < 0 || cap < 0 || strlen(row->id) > CAP_JOB_ID_LEN || row->input_key == NULL)
    return NULL;
  struct cap_job *j = xcalloc(1, sizeof(*j));
  j->owner_ops = o;
  snprintf(j->id, sizeof(j->id), "%s", row->id);
  snprintf(j->owner, sizeof(j->owner), "%s", row->owner ? row->owner : "");
  snprintf(j->req_id, sizeof(j->req_id), "%s", row->req_id ? row->req_id : "");
  j->capability = (enum cap_capability)cap;
  j->input_key = xstrdup(row->input_key);
  j->output_key = dup_or_null(row->output_key);
  j->output_prefix = dup_or_null(row->output_prefix);
  j->preset = dup_or_null(row->preset);
  j->idem_key = dup_or_null(row->idem_key);
  if (row->body_hash)
    memcpy(j->body_hash, row->body_hash, sizeof(j->body_hash));
  j->callback_url = dup_or_null(row->callback_url);
  j->callback_events = row->callback_events ? cap_execreq_events_parse(row->callback_events) : 0;
  j->created_at = row->created_at;
  j->started_at = row->started_at;
  j->finished_at = row->finished_at;
  j->exit_status = -1;
  j->stage = CAP_JOB_S_CLOSED;
  j->state = (enum cap_job_state)state;
  j->err = cap_err_find(row->code);
  j->delivered = 1;
  if (state <= CAP_JOB_UPLOADING) {
    interrupt(j, row->state);
    *interrupted = 1;
  } else if (row->job_json && row->answer_json &&
             (j->saved_answer = answer_of(row->job_json, row->answer_json)) != NULL) {
    j->saved_job = xstrdup(row->job_json);
    return j;
  }
  save_answers(j);
  return j;
}

/* One object a dead job may have stored, to delete; or, with key NULL, the
 * mark that job_id's objects are all queued before it. */
struct cap_jobrecover_item {
  char *job_id;
  char *key;
  struct cap_jobrecover_item *next;
};

void cap_jobrecover_init(struct cap_jobrecover *rc, struct cap_objstore *os,
                         struct cap_journal *jr) {
  memset(rc, 0, sizeof(*rc));
  rc->os = os;
  rc->jr = jr;
  rc->started = time(NULL);
}

static void push(struct cap_jobrecover *rc, const char *job_id, const char *key) {
  struct cap_jobrecover_item *it = xcalloc(1, sizeof(*it));
  it->job_id = xstrdup(job_id);
  it->key = key ? xstrdup(key) : NULL;
  if (rc->tail)
    rc->tail->next = it;
  else
    rc->head = it;
  rc->tail = it;
}

/* Puts key first in the queue: an output that may be whole must go before
 * a retry of its job, started after this start, can store it again. */
static void push_front(struct cap_jobrecover *rc, const char *job_id, const char *key) {
  struct cap_jobrecover_item *it = xcalloc(1, sizeof(*it));
  it->job_id = xstrdup(job_id);
  it->key = xstrdup(key);
  it->next = rc->head;
  rc->head = it;
  if (rc->tail == NULL)
    rc->tail = it;
}

struct add_ctx {
  struct cap_jobrecover *rc;
  const char *job_id;
  size_t n;
};

static void add_object(void *arg, const char *key) {
  struct add_ctx *c = arg;
  push(c->rc, c->job_id, key);
  c->rc->objects_queued++;
  c->n++;
}

void cap_jobrecover_add(struct cap_jobrecover *rc, const struct cap_journal_job *row) {
  if (row->upload_id && row->upload_id[0])
    rc->uploads_by_id++;
  if (row->output_key)
    cap_objstore_recover_uploads(rc->os, row->output_key, 0, row->upload_id, rc->started);
  if (row->output_prefix)
    cap_objstore_recover_uploads(rc->os, row->output_prefix, 1, NULL, rc->started);
  rc->aborted_lists++;
  /* A job that died uploading may have stored its output whole (the PUT or
   * the Complete answered, the journal never heard): the client was told
   * it failed, so the object goes. */
  if (row->finished_at <= 0 && row->output_key && strcmp(row->state, "uploading") == 0) {
    push_front(rc, row->id, row->output_key);
    rc->objects_queued++;
  }
  if (rc->jr == NULL)
    return;
  struct add_ctx c = {.rc = rc, .job_id = row->id};
  cap_journal_object_load(rc->jr, row->id, add_object, &c);
  if (c.n > 0)
    push(rc, row->id, NULL);
}

static void pop(struct cap_jobrecover *rc) {
  struct cap_jobrecover_item *it = rc->head;
  rc->head = it->next;
  if (rc->head == NULL)
    rc->tail = NULL;
  free(it->job_id);
  free(it->key);
  free(it);
}

static void next(struct cap_jobrecover *rc);

static void on_deleted(struct cap_objdel *d, const struct cap_storage_err *err) {
  struct cap_jobrecover *rc = d->data;
  if (err) {
    rc->delete_failures++;
    rc->job_failures++;
  } else {
    rc->deleted++;
  }
  pop(rc);
  /* The file store ends a delete inside cap_objstore_delete: next's loop
   * goes on then, instead of a recursion as deep as the list. */
  if (rc->starting)
    rc->ended = 1;
  else
    next(rc);
}

/* Ends the job marks at the head: a job whose deletes all succeeded has
 * its objects forgotten (a failure keeps them for the next start). */
static void end_marks(struct cap_jobrecover *rc) {
  while (rc->head && rc->head->key == NULL) {
    if (rc->job_failures == 0)
      cap_journal_object_clear(rc->jr, rc->head->job_id);
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "journal.objects_deleted");
    cap_log_str(r, "job_id", rc->head->job_id);
    cap_log_int(r, "failed", (long long)rc->job_failures);
    cap_log_end(r);
    rc->job_failures = 0;
    pop(rc);
  }
}

/* Starts deletes until one is under way or the queue is empty. */
static void next(struct cap_jobrecover *rc) {
  for (;;) {
    end_marks(rc);
    if (rc->head == NULL || rc->stopped)
      return;
    cap_objstore_delete_init(&rc->del, rc->os, rc->head->key);
    rc->del.on_done = on_deleted;
    rc->del.data = rc;
    rc->starting = 1;
    rc->ended = 0;
    cap_objstore_delete(&rc->del);
    rc->starting = 0;
    if (!rc->ended)
      return;
  }
}

void cap_jobrecover_start(struct cap_jobrecover *rc) {
  if (!cap_objstore_delete_busy(&rc->del))
    next(rc);
}

void cap_jobrecover_stop(struct cap_jobrecover *rc) {
  rc->stopped = 1;
  if (cap_objstore_delete_busy(&rc->del))
    cap_objstore_cancel_delete(&rc->del);
  while (rc->head)
    pop(rc);
}
