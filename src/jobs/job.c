#include "job.h"

#include "alloc.h"
#include "config.h"
#include "container.h"
#include "jobcmd.h"
#include "log.h"
#include "metrics.h"
#include "preset.h"
#include "storerr.h"
#include "store.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A ladder job's own steps (what the source is, the package's
 * directories and watches, its ffmpeg, what the package tells the job)
 * are at the bottom of this file; they use the functions declared here. */

/* job.c: the one place a job changes stage (checked and logged). */
static void move(struct cap_job *j, enum cap_job_stage to);
/* Gives the job its outcome (the first stands); a ladder not finished is
 * told to take back what it stored. */
static void settle(struct cap_job *j, enum cap_job_stage outcome, enum cap_err err,
                   const char *msg);
static void fail(struct cap_job *j, enum cap_err err, const char *msg);
/* SIGKILL to the child's process group, when it runs. */
static void kill_child(struct cap_job *j);
/* Starts the child of the job's current stage (0 or a UV_E* code). */
static int spawn(struct cap_job *j, char **argv, size_t capture, int progress, int stream);
/* What the job's command lines are built from. */
static struct cap_jobcmd jobcmd(const struct cap_job *j);

/* Ladders: reads the streams probe (size, rotation, audio), or fails
 * the job when there is no video. */
static void ladder_measured(struct cap_job *j, const struct cap_proc *p);
/* Makes the package's directories and watches, and starts the ladder's
 * ffmpeg (RENDERING); fails the job when it cannot. */
static void ladder_start(struct cap_job *j);

/* Open files a child may hold, and tasks (threads) its user may run. */
#define CHILD_NOFILE 1024
#define CHILD_NPROC  8192

/* ffprobe's JSON for one file is small; more means something is wrong. */
#define PROBE_OUT_MAX   (4 * 1024 * 1024)
#define STDERR_TAIL_MAX 2048

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Moves the cap_jobs{state} gauge by d for public state s; it counts the
 * unfinished jobs of the table only. */
static void gauge(enum cap_job_state s, double d) {
  if (s <= CAP_JOB_UPLOADING)
    cap_metrics_add(CAP_M_JOBS, CAP_LABELS(cap_jobstage_state_name(s)), d);
}

static void log_finished(struct cap_job *j) {
  struct cap_log_rec *r =
      cap_log_begin(j->state == CAP_JOB_SUCCEEDED ? CAP_LOG_INFO : CAP_LOG_WARN, "job.finished");
  cap_log_str(r, "job_id", j->id);
  cap_log_str(r, "req_id", j->req_id);
  cap_log_str(r, "state", cap_jobstage_state_name(j->state));
  cap_log_str(r, "capability", cap_execreq_capabilities[j->capability]);
  if (j->preset)
    cap_log_str(r, "preset", j->preset);
  if (j->err != CAP_E_NONE)
    cap_log_str(r, "code", cap_err_code(j->err));
  if (j->exit_status >= 0)
    cap_log_int(r, "exit_status", j->exit_status);
  if (j->term_signal)
    cap_log_int(r, "signal", j->term_signal);
  cap_log_int(r, "dur_ms", j->started_at ? j->finished_at - j->started_at : 0);
  cap_log_int(r, "bytes", (long long)j->bytes);
  if (j->stderr_tail && j->state == CAP_JOB_FAILED)
    cap_log_str(r, "stderr_tail", j->stderr_tail);
  cap_log_end(r);
}

/* What reaching an outcome means besides the stage: the time, the counts,
 * the log line, the owner told, and the waiters woken on a later turn. */
static void note_outcome(struct cap_job *j) {
  const char *preset = j->preset ? j->preset : "ffprobe";
  j->finished_at = wall_ms();
  cap_metrics_inc(CAP_M_JOBS_FINISHED, CAP_LABELS(preset, cap_jobstage_state_name(j->state)));
  if (j->finished_at >= j->created_at)
    cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS(preset),
                        (double)(j->finished_at - j->created_at) / 1000);
  log_finished(j);
  j->owner_ops->settled(j->owner_ops, j);
  j->owner_ops->defer(j->owner_ops, j);
}

/* The one place a job changes stage (and public state): asserts that the
 * table allows it, logs it at debug level and keeps the metrics. */
static void move(struct cap_job *j, enum cap_job_stage to) {
  enum cap_job_stage from = j->stage;
  assert(cap_jobstage_may_move(from, to));
  j->stage = to;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_DEBUG, "job.state");
  cap_log_str(r, "job_id", j->id);
  cap_log_str(r, "from", cap_jobstage_name(from));
  cap_log_str(r, "to", cap_jobstage_name(to));
  cap_log_end(r);
  int seen = cap_jobstage_public(to);
  if (seen < 0)
    return; /* CLOSED keeps the outcome clients see. */
  enum cap_job_state was = j->state;
  j->state = (enum cap_job_state)seen;
  if (from == CAP_JOB_S_NEW || was != j->state) {
    if (from != CAP_JOB_S_NEW)
      gauge(was, -1);
    gauge(j->state, 1);
  }
  if (to >= CAP_JOB_S_SUCCEEDED)
    note_outcome(j);
  if (from == CAP_JOB_S_NEW || was != j->state)
    j->owner_ops->changed(j->owner_ops, j);
}

static void on_input_ready(struct cap_objin *in, const struct cap_storage_err *err);
static void on_input_fault(struct cap_objin *in, const struct cap_storage_err *err);
static void on_output_done(struct cap_jobio *io, const struct cap_storage_err *err);

static void on_output_upload(struct cap_jobio *io, const char *upload_id);

static const struct cap_jobio_ops jobio_ops = {.output_done = on_output_done,
                                               .output_upload = on_output_upload};

/* Copies the preset's arguments, headers, class and limits into the job. */
static void take_preset(struct cap_job *j, const struct cap_preset *p) {
  if (p->threads >= 0)
    j->limits.threads = p->threads;
  if (p->nice >= 0)
    j->limits.nice = p->nice;
  if (p->memory_mb >= 0)
    j->limits.memory_mb = p->memory_mb;
  j->args = xcalloc(p->nargs + 1, sizeof(char *));
  for (size_t i = 0; i < p->nargs; i++)
    j->args[i] = xstrdup(p->args[i]);
  j->format = xstrdup(p->format);
  j->ext = xstrdup(p->ext);
  j->content_type = xstrdup(p->content_type);
  j->cache_control = p->cache_control ? xstrdup(p->cache_control) : NULL;
  free(j->cls);
  j->cls = xstrdup(p->cls);
  j->timeout_s = p->timeout_s;
  j->streamable = p->streamable;
  j->ladder = p->ladder ? cap_ladderspec_dup(p->ladder) : NULL;
}

/* Readies the job's input and output in the owner's object store; the
 * input opens when the job gets its slot. */
static void init_io(struct cap_job *j) {
  struct cap_objstore *os = j->owner_ops->objstore;
  struct cap_jobio_spec spec = {.objstore = os,
                                .output_key = j->output_key,
                                .content_type = j->content_type,
                                .cache_control = j->cache_control};
  cap_jobio_init(&j->io, &jobio_ops, &spec);
  snprintf(j->in_tmp, sizeof(j->in_tmp), "%s.in", j->id);
  cap_objstore_input_init(&j->in, os, j->input_key, j->in_tmp);
  j->in.on_ready = on_input_ready;
  j->in.on_fault = on_input_fault;
  j->in.data = j;
}

struct cap_job *cap_job_create(struct cap_job_owner *o, const struct cap_execreq *r,
                               const char *owner, const char *req_id) {
  struct cap_job *j = xcalloc(1, sizeof(*j));
  j->owner_ops = o;
  cap_reqid_generate_job(j->id);
  snprintf(j->owner, sizeof(j->owner), "%s", owner);
  snprintf(j->req_id, sizeof(j->req_id), "%s", req_id);
  j->capability = r->capability;
  j->input_key = xstrdup(r->input_key);
  j->output_key = r->output_key ? xstrdup(r->output_key) : NULL;
  j->output_prefix = r->output_prefix ? xstrdup(r->output_prefix) : NULL;
  j->preset = r->preset ? xstrdup(r->preset) : NULL;
  j->idem_key = r->idempotency_key ? xstrdup(r->idempotency_key) : NULL;
  j->callback_url = r->callback_url ? xstrdup(r->callback_url) : NULL;
  j->callback_events = r->callback_url ? r->callback_events : 0;
  j->stage = CAP_JOB_S_NEW;
  j->state = CAP_JOB_QUEUED;
  j->created_at = wall_ms();
  j->exit_status = -1;
  j->pool_item.start = cap_job_start;
  j->cls = xstrdup("cpu");

  const struct cap_preset *p = j->preset ? cap_preset_find(o->presets, j->preset) : NULL;
  const char *formats = p && p->input_formats ? p->input_formats : o->cfg->input_formats;
  j->limits = cap_climits_get(o->climits, p ? p->cls : j->cls);
  if (p)
    take_preset(j, p);
  j->input_formats = xstrdup(formats ? formats : CAP_DEFAULT_INPUT_FORMATS);
  if (j->timeout_s <= 0 || j->timeout_s > o->cfg->job_timeout_s)
    j->timeout_s = o->cfg->job_timeout_s;
  init_io(j);
  /* The server's input_mode unless the preset says otherwise; the file
   * store reads its files directly either way. */
  const char *mode = o->cfg->input_mode;
  j->in.stream =
      p && p->input_stream >= 0 ? p->input_stream : mode == NULL || strcmp(mode, "download") != 0;
  return j;
}

void cap_job_attach(struct cap_job *j) {
  uv_timer_init(j->owner_ops->loop, &j->timeout_timer);
  j->timeout_timer.data = j;
  move(j, CAP_JOB_S_QUEUED);
}

void cap_job_free(struct cap_job *j) {
  free(j->input_key);
  free(j->output_key);
  free(j->output_prefix);
  cap_ladderspec_free(j->ladder);
  assert(j->pkg == NULL || !cap_ladder_busy(j->pkg));
  if (j->pkg)
    cap_ladder_free(j->pkg);
  free(j->pkg);
  free(j->preset);
  free(j->idem_key);
  free(j->callback_url);
  free(j->upload_id);
  free(j->saved_job);
  free(j->saved_answer);
  for (size_t i = 0; j->args && j->args[i]; i++)
    free(j->args[i]);
  free(j->args);
  free(j->format);
  free(j->ext);
  free(j->content_type);
  free(j->cache_control);
  free(j->cls);
  free(j->input_formats);
  free(j->probe_json);
  free(j->err_msg);
  free(j->stderr_tail);
  free(j);
}

int cap_job_done(const struct cap_job *j) {
  return j->stage >= CAP_JOB_S_SUCCEEDED;
}

int cap_job_quiescent(const struct cap_job *j) {
  return j->stage == CAP_JOB_S_CLOSED;
}

void cap_job_add_waiter(struct cap_job *j, struct cap_job_waiter *w) {
  w->job = j;
  w->prev = NULL;
  w->next = j->waiters;
  if (j->waiters)
    j->waiters->prev = w;
  j->waiters = w;
}

void cap_job_remove_waiter(struct cap_job_waiter *w) {
  struct cap_job *j = w->job;
  if (j == NULL)
    return;
  if (w->prev)
    w->prev->next = w->next;
  else
    j->waiters = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->prev = w->next = NULL;
  w->job = NULL;
}

/* Gives the job its outcome; the first outcome stands.  Its waiters are
 * woken and what it holds is let go on a later turn (cap_job_run_deferred):
 * the caller may be deep inside a child's or an upload's callback. */
static void settle(struct cap_job *j, enum cap_job_stage outcome, enum cap_err err,
                   const char *msg) {
  if (cap_job_done(j))
    return;
  if (err != CAP_E_NONE) {
    j->err = err;
    free(j->err_msg);
    j->err_msg = xstrdup(msg);
  }
  move(j, outcome);
  /* A ladder that will not be finished takes back what it stored. */
  if (j->pkg && outcome != CAP_JOB_S_SUCCEEDED)
    cap_ladder_abort(j->pkg,
                     outcome == CAP_JOB_S_CANCELED ? CAP_STORAGE_E_CANCELED : CAP_STORAGE_E_FAILED,
                     j->err_msg);
}

static void fail(struct cap_job *j, enum cap_err err, const char *msg) {
  settle(j, CAP_JOB_S_FAILED, err, msg);
}

static void on_timer_closed(uv_handle_t *h) {
  struct cap_job *j = h->data;
  move(j, CAP_JOB_S_CLOSED);
  j->owner_ops->closed(j->owner_ops, j);
}

/* Lets go of what an ended job holds, as far as it can yet: the slot once
 * its child has been reaped (the slot bounds the children running at once;
 * what storage work may go on is the abort of an upload, which holds no
 * part buffer and need not keep the next queued job waiting), the rest
 * once its storage requests are over too.  The timer's close callback
 * makes the job CLOSED. */
static void release(struct cap_job *j) {
  struct cap_job_owner *o = j->owner_ops;
  if (!cap_job_done(j) || j->stage == CAP_JOB_S_CLOSED || j->child_running)
    return;
  cap_pool_release(o->pool, &j->pool_item);
  if (j->io.live || cap_objstore_input_busy(&j->in) || (j->pkg && cap_ladder_busy(j->pkg)))
    return;
  cap_objstore_close_input(&j->in);
  if (j->tmp_name[0]) {
    cap_store_discard(o->store, j->tmp_name);
    j->tmp_name[0] = '\0';
  }
  if (j->tmp_dir[0]) {
    cap_store_tmp_rmdir(o->store, j->tmp_dir);
    j->tmp_dir[0] = '\0';
  }
  cap_jobio_free(&j->io);
  if (!uv_is_closing((uv_handle_t *)&j->timeout_timer))
    uv_close((uv_handle_t *)&j->timeout_timer, on_timer_closed);
}

void cap_job_run_deferred(struct cap_job *j) {
  if (!cap_job_done(j))
    return;
  while (j->waiters) {
    struct cap_job_waiter *w = j->waiters;
    cap_job_remove_waiter(w);
    w->cb(w);
  }
  release(j);
}

/* Kills the child of a job whose output is thrown away.  SIGTERM would
 * ask ffmpeg to finish its file properly: flush the encoder's lookahead,
 * write the trailer, which takes seconds with libx265 at 4K and keeps the
 * job's slot the whole time, for a file nobody will read.  SIGKILL goes to
 * the whole process group (the child is its leader), so nothing the child
 * started outlives it. */
static void kill_child(struct cap_job *j) {
  if (j->child_running)
    cap_proc_signal(&j->proc, SIGKILL);
}

void cap_job_cancel(struct cap_job *j, enum cap_err why) {
  int timeout = why != CAP_E_CANCELED;
  if (cap_job_done(j) || j->stage == CAP_JOB_S_NEW)
    return;
  if (why == CAP_E_TIMEOUT)
    settle(j, CAP_JOB_S_FAILED, CAP_E_TIMEOUT, "The job ran past its time limit");
  else if (why == CAP_E_INTERRUPTED)
    settle(j, CAP_JOB_S_FAILED, CAP_E_INTERRUPTED,
           "The server stopped before the job finished; send the same request again");
  else
    settle(j, CAP_JOB_S_CANCELED, CAP_E_CANCELED, "The job was canceled");
  /* A download under way stops here and its on_ready never runs. */
  cap_objstore_cancel_input(&j->in);
  /* The abort's own code keeps the metrics label: canceled, or failed. */
  cap_jobio_abort(&j->io, timeout ? CAP_STORAGE_E_FAILED : CAP_STORAGE_E_CANCELED, j->err_msg);
  kill_child(j); /* The slot is let go once the child has been reaped. */
}

static void on_timeout(uv_timer_t *t) {
  cap_job_cancel(t->data, CAP_E_TIMEOUT);
}

/* The job's child callbacks reach the job with container_of: proc.data
 * belongs to jobio, which reads a streamed output through it. */
static void on_progress(struct cap_proc *p, const char *key, const char *val) {
  struct cap_job *j = container_of(p, struct cap_job, proc);
  /* A job that has its outcome shows the progress it had then: the lines
   * a killed child left in the pipe would change what a client already
   * read as final, and what the journal keeps of it. */
  if (cap_job_done(j))
    return;
  cap_jobprogress_note(&j->progress, j->id, j->req_id, uv_now(j->owner_ops->loop), key, val);
  j->owner_ops->progressed(j->owner_ops, j);
}

static void on_proc_done(struct cap_proc *p);

static void child_limits(const struct cap_job *j, struct cap_sandbox_limits *l) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  memset(l, 0, sizeof(*l));
  l->memory_mb = j->limits.memory_mb;
  l->address_space_mb = j->limits.address_space_mb;
  /* CPU seconds add up over threads: the wall-clock limit on every core,
   * plus a minute.  The job's timer fires first; this is the backstop for
   * a child the server no longer watches. */
  long cpu = (long)j->timeout_s * (ncpu > 0 ? ncpu : 1) + 60;
  l->cpu_s = cpu > INT32_MAX ? INT32_MAX : (int)cpu;
  l->fsize_mb = j->owner_ops->cfg->output_max_mb;
  l->nofile = CHILD_NOFILE;
  l->nproc = CHILD_NPROC;
  /* Only the render yields the CPU and the disk: probes are short and on
   * the path of the request that waits for them. */
  if (j->stage == CAP_JOB_S_RENDERING) {
    l->nice = j->limits.nice;
    l->ionice_class = j->limits.ionice_class;
    l->ionice_level = j->limits.ionice_level;
  }
}

/* The program a child of stage s runs, as logs and metrics name it. */
static const char *program(enum cap_job_stage s) {
  return s == CAP_JOB_S_RENDERING ? "ffmpeg" : "ffprobe";
}

static void log_started(const struct cap_job *j, const char *file, int rc) {
  struct cap_log_rec *r = cap_log_begin(rc == 0 ? CAP_LOG_INFO : CAP_LOG_ERROR, "job.started");
  cap_log_str(r, "job_id", j->id);
  cap_log_str(r, "req_id", j->req_id);
  cap_log_str(r, "program", file);
  cap_log_str(r, "phase",
              j->stage == CAP_JOB_S_MEASURING   ? "probe_duration"
              : j->stage == CAP_JOB_S_RENDERING ? "render"
              : j->stage == CAP_JOB_S_DETECTING ? "detect_format"
                                                : "probe");
  cap_log_bool(r, "sandbox", cap_sandbox_active(j->owner_ops->sandbox));
  if (rc == 0)
    cap_log_int(r, "pid", j->proc.pid);
  else
    cap_log_str(r, "error", uv_strerror(rc));
  if (j->preset)
    cap_log_str(r, "preset", j->preset);
  cap_log_str(r, "class", j->cls);
  cap_log_end(r);
}

/* Starts the child of the job's current stage.  Returns 0 or a UV_E* code
 * (on_proc_done runs either way). */
static int spawn(struct cap_job *j, char **argv, size_t capture, int progress, int stream) {
  const struct cap_job_owner *o = j->owner_ops;
  char rw[4096];
  /* Only the render writes, and only into the job's own directory. */
  int writes = j->stage == CAP_JOB_S_RENDERING && j->tmp_dir[0] &&
               cap_store_tmp_path(o->store, j->tmp_dir, rw, sizeof(rw)) == 0;
  struct cap_sandbox_child child = {.in_fd = j->in.fd >= 0 ? 3 : -1,
                                    .connect_port = j->in.url ? j->in.port : 0,
                                    .rw_dir = writes ? rw : NULL,
                                    .hardware = strcmp(j->cls, "cpu") != 0};
  child_limits(j, &child.lim);
  struct cap_proc_spec spec = {.file = argv[0],
                               .args = argv,
                               .in_fd = j->in.fd,
                               .capture_out = capture,
                               .stream_out = stream,
                               .progress = progress,
                               .sandbox = o->sandbox,
                               .child = &child};
  memset(&j->proc, 0, sizeof(j->proc));
  j->proc.data = &j->io;
  j->proc.on_done = on_proc_done;
  j->proc.on_progress = progress ? on_progress : NULL;
  j->child_running = 1;
  j->child_stage = j->stage;
  int rc = cap_proc_spawn(o->loop, &j->proc, &spec);
  log_started(j, argv[0], rc);
  return rc;
}

/* Makes the job's own temp directory and names the output file in it.
 * Returns 0, or fails the job and returns -1. */
static int make_tmp_output(struct cap_job *j, char *path, size_t n) {
  struct cap_store *store = j->owner_ops->store;
  snprintf(j->tmp_dir, sizeof(j->tmp_dir), "%s", j->id);
  int rc = cap_store_tmp_mkdir(store, j->tmp_dir);
  if (rc != 0) {
    char msg[200];
    j->tmp_dir[0] = '\0';
    snprintf(msg, sizeof(msg), "Could not create the job's temp directory: %s", strerror(-rc));
    fail(j, CAP_E_STORAGE_ERROR, msg);
    return -1;
  }
  snprintf(j->tmp_name, sizeof(j->tmp_name), "%s/out.%s", j->tmp_dir, j->ext);
  if (cap_store_tmp_path(store, j->tmp_name, path, n) != 0) {
    j->tmp_name[0] = '\0';
    fail(j, CAP_E_STORAGE_ERROR, "The temporary output path is too long");
    return -1;
  }
  return 0;
}

/* What the job's command lines are built from. */
static struct cap_jobcmd jobcmd(const struct cap_job *j) {
  const struct cap_config *cfg = j->owner_ops->cfg;
  struct cap_jobcmd c = {.ffmpeg = cfg->ffmpeg,
                         .ffprobe = cfg->ffprobe,
                         .input_formats = j->input_formats,
                         .input_url = j->in.url,
                         .preset_args = j->args,
                         .format = j->format,
                         .threads = j->limits.threads};
  return c;
}

static void start_render(struct cap_job *j) {
  char tmp_path[4096], out_arg[4200];
  /* A streamable output goes through ffmpeg's stdout straight into the
   * store when the store takes a stream (S3's multipart upload); anything
   * else is written to a temp file first. */
  int stream = cap_objstore_can_stream(j->owner_ops->objstore) && j->streamable;
  if (stream) {
    snprintf(out_arg, sizeof(out_arg), "pipe:1");
  } else {
    if (make_tmp_output(j, tmp_path, sizeof(tmp_path)) != 0)
      return;
    /* "file:" keeps ffmpeg from reading a protocol into the path. */
    snprintf(out_arg, sizeof(out_arg), "file:%s", tmp_path);
  }
  struct cap_jobcmd c = jobcmd(j);
  char **argv = cap_jobcmd_render(&c, out_arg);
  move(j, CAP_JOB_S_RENDERING);
  if (spawn(j, argv, 0, 1, stream) == 0 && stream)
    cap_jobio_stream(&j->io, &j->proc);
  free(argv);
}

static void on_output_upload(struct cap_jobio *io, const char *upload_id) {
  struct cap_job *j = container_of(io, struct cap_job, io);
  free(j->upload_id);
  j->upload_id = upload_id ? xstrdup(upload_id) : NULL;
  j->owner_ops->upload(j->owner_ops, j);
}

static void on_output_done(struct cap_jobio *io, const struct cap_storage_err *err) {
  struct cap_job *j = container_of(io, struct cap_job, io);
  if (err == NULL)
    j->bytes = io->bytes;
  snprintf(j->etag, sizeof(j->etag), "%s", io->etag);
  j->parts = io->parts;
  if (cap_job_done(j)) {
    j->owner_ops->defer(j->owner_ops, j); /* The abort is over: let go of the rest. */
    return;
  }
  if (err) {
    fail(j, cap_storerr_err(err), err->msg);
    kill_child(j);
    return;
  }
  /* An output completes only after cap_jobio_finish or cap_jobio_put_file,
   * which come after ffmpeg's successful exit. */
  assert(j->stage == CAP_JOB_S_STORING);
  settle(j, CAP_JOB_S_SUCCEEDED, CAP_E_NONE, NULL);
}

/* ffmpeg exited 0: store what it wrote, from its temp file or the rest of
 * its stream.  The store may finish (and call on_output_done) before this
 * returns. */
static void rendered(struct cap_job *j) {
  if (j->tmp_name[0]) {
    int64_t size = cap_store_tmp_size(j->owner_ops->store, j->tmp_name);
    if (size < 0) {
      fail(j, CAP_E_FFMPEG_FAILED, "ffmpeg exited without writing an output");
      return;
    }
    move(j, CAP_JOB_S_STORING);
    cap_jobio_put_file(&j->io, j->tmp_name, (uint64_t)size);
  } else {
    move(j, CAP_JOB_S_STORING);
    cap_jobio_finish(&j->io);
  }
}

/* Parses ffprobe's JSON and prints it again compactly, naming the input
 * by its key rather than the descriptor ffprobe read it from.  Returns a
 * string the caller frees, or NULL when the output is not JSON. */
static char *probe_output(struct cap_job *j, const struct cap_buf *out) {
  cJSON *root = cJSON_ParseWithLength(out->data, out->len);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return NULL;
  }
  cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
  if (cJSON_IsObject(format)) {
    cJSON_DeleteItemFromObjectCaseSensitive(format, "filename");
    cJSON_AddStringToObject(format, "filename", j->input_key);
  }
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (text == NULL)
    abort(); /* cJSON fails only when out of memory. */
  char *copy = xstrdup(text);
  cJSON_free(text);
  return copy;
}

/* ffprobe printed the probe the client asked for. */
static void probed(struct cap_job *j, struct cap_proc *p) {
  if (!p->out_truncated && p->out_buf.data != NULL)
    j->probe_json = probe_output(j, &p->out_buf);
  cap_proc_free(p);
  if (j->probe_json == NULL) {
    fail(j, CAP_E_FFMPEG_FAILED, "ffprobe printed no usable output");
    return;
  }
  settle(j, CAP_JOB_S_SUCCEEDED, CAP_E_NONE, NULL);
}

/* Runs an ffprobe child of the given kind on the opened input. */
static void run_probe(struct cap_job *j, enum cap_jobcmd_probe kind, enum cap_job_stage stage,
                      size_t capture) {
  struct cap_jobcmd c = jobcmd(j);
  char **argv = cap_jobcmd_probe(&c, kind);
  move(j, stage);
  spawn(j, argv, capture, 0, 0);
  free(argv);
}

/* Runs the first tool on the opened input: ffprobe for a probe, or the
 * duration probe that precedes a render. */
static void run_tools(struct cap_job *j) {
  if (j->capability == CAP_CAP_FFPROBE)
    run_probe(j, CAP_JOBCMD_FFPROBE, CAP_JOB_S_PROBING, PROBE_OUT_MAX);
  else if (j->ladder)
    run_probe(j, CAP_JOBCMD_STREAMS, CAP_JOB_S_MEASURING, PROBE_OUT_MAX);
  else
    run_probe(j, CAP_JOBCMD_DURATION, CAP_JOB_S_MEASURING, 4096);
}

/* Returns 1 when the child stopped because the input's format is not on
 * the allow-list. */
static int format_refused(const struct cap_proc *p) {
  char tail[CAP_PROC_ERR_RING];
  cap_proc_stderr_tail(p, tail, sizeof(tail));
  return cap_jobcmd_refused(tail);
}

static void refuse_format(struct cap_job *j, const struct cap_proc *p) {
  char msg[600], log[CAP_PROC_ERR_RING];
  cap_proc_stderr_tail(p, log, sizeof(log));
  cap_jobcmd_detected(log, j->detected_format, sizeof(j->detected_format));
  j->exit_status = -1; /* The detection child's status says nothing to the client. */
  if (strcmp(j->detected_format, "unknown") == 0) {
    /* Keep what the detection child said, so that an operator can see why. */
    char tail[STDERR_TAIL_MAX + 1];
    cap_proc_stderr_tail(p, tail, sizeof(tail));
    free(j->stderr_tail);
    j->stderr_tail = xstrdup(tail);
  }
  snprintf(msg, sizeof(msg),
           "The input's format (%s) is not accepted: inputs must be one of %.400s (input_formats)",
           j->detected_format, j->input_formats);
  fail(j, CAP_E_INPUT_FORMAT_REFUSED, msg);
}

/* Counts a child's end by program and exit status or signal name. */
static void count_exit(const struct cap_job *j, const struct cap_proc *p) {
  char status[32];
  if (cap_proc_exit_label(p, status, sizeof(status)) == 0)
    cap_metrics_inc(CAP_M_CHILD_EXITS, CAP_LABELS(program(j->child_stage), status));
}

/* The child failed to start, exited non-zero or was killed. */
static void child_failed(struct cap_job *j, struct cap_proc *p) {
  char tail[STDERR_TAIL_MAX + 1], msg[200];
  const char *prog = program(j->child_stage);
  cap_proc_stderr_tail(p, tail, sizeof(tail));
  free(j->stderr_tail);
  j->stderr_tail = xstrdup(tail);
  if (p->spawn_error)
    snprintf(msg, sizeof(msg), "Could not start %s: %s", prog, uv_strerror(p->spawn_error));
  else if (p->term_signal)
    snprintf(msg, sizeof(msg), "%s was killed by signal %d", prog, p->term_signal);
  else
    snprintf(msg, sizeof(msg), "%s exited with status %lld", prog, (long long)p->exit_status);
  cap_proc_free(p);
  fail(j, CAP_E_FFMPEG_FAILED, msg);
  cap_jobio_abort(&j->io, CAP_STORAGE_E_FAILED, msg);
}

static void on_proc_done(struct cap_proc *p) {
  struct cap_job *j = container_of(p, struct cap_job, proc);
  int ok = p->spawn_error == 0 && p->exit_status == 0 && p->term_signal == 0;
  count_exit(j, p);
  j->child_running = 0;
  j->exit_status = p->spawn_error ? -1 : p->exit_status;
  j->term_signal = p->term_signal;

  if (cap_job_done(j)) {
    /* Canceled or timed out while the child ran: it has gone now. */
    cap_proc_free(p);
    j->owner_ops->defer(j->owner_ops, j);
    return;
  }
  if (j->stage == CAP_JOB_S_DETECTING) {
    refuse_format(j, p);
    cap_proc_free(p);
  } else if (!ok && j->stage != CAP_JOB_S_RENDERING && format_refused(p)) {
    cap_proc_free(p);
    /* Ask ffprobe, under the same allow-lists, which format it saw. */
    run_probe(j, CAP_JOBCMD_DETECT, CAP_JOB_S_DETECTING, 0);
  } else if (!ok) {
    child_failed(j, p);
  } else if (j->stage == CAP_JOB_S_MEASURING && j->ladder) {
    ladder_measured(j, p);
    cap_proc_free(p);
    if (!cap_job_done(j))
      ladder_start(j);
  } else if (j->stage == CAP_JOB_S_MEASURING) {
    j->progress.input_duration_s = p->out_buf.data ? strtod(p->out_buf.data, NULL) : 0;
    cap_proc_free(p);
    start_render(j);
  } else if (j->stage == CAP_JOB_S_RENDERING && j->pkg) {
    cap_proc_free(p);
    move(j, CAP_JOB_S_STORING);
    cap_ladder_finish(j->pkg);
  } else if (j->stage == CAP_JOB_S_RENDERING) {
    cap_proc_free(p);
    rendered(j);
  } else {
    assert(j->stage == CAP_JOB_S_PROBING);
    probed(j, p);
  }
}

/* The job has its slot: open its input.  The file store opens it (and
 * calls on_input_ready) before cap_objstore_open_input returns; S3 asks for
 * the object's size and ETag (a streamed input) or downloads it into a
 * temp file first, and the job waits in FETCHING. */
void cap_job_start(struct cap_pool_item *it) {
  struct cap_job *j = container_of(it, struct cap_job, pool_item);

  j->started_at = wall_ms();
  uv_timer_start(&j->timeout_timer, on_timeout, (uint64_t)j->timeout_s * 1000, 0);
  cap_objstore_open_input(&j->in);
  if (cap_objstore_input_busy(&j->in))
    move(j, CAP_JOB_S_FETCHING);
}

static void on_input_ready(struct cap_objin *in, const struct cap_storage_err *err) {
  struct cap_job *j = in->data;
  if (cap_job_done(j)) {
    j->owner_ops->defer(j->owner_ops, j);
    return;
  }
  if (err) {
    fail(j, cap_storerr_err(err), err->msg);
    return;
  }
  run_tools(j);
}

/* A streamed input can no longer be read: the child waiting on it will not
 * finish, so the job fails now with the reason (input_changed, a storage
 * error) rather than with the child's I/O error. */
static void on_input_fault(struct cap_objin *in, const struct cap_storage_err *err) {
  struct cap_job *j = in->data;
  if (cap_job_done(j))
    return;
  fail(j, cap_storerr_err(err), err->msg);
  /* Nothing it would write could be kept: abort the output, stop ffmpeg. */
  cap_jobio_abort(&j->io, CAP_STORAGE_E_FAILED, j->err_msg);
  kill_child(j);
}

/* A ladder job's own steps: what the source is, the package's directories
 * and watches, its ffmpeg, and what the package tells the job.  The rest
 * of its life is any job's (job.c). */

/* Reads the duration, the first video stream's displayed size (a rotation
 * of 90 or 270 degrees swaps it) and whether there is audio, from the
 * CAP_JOBCMD_STREAMS probe.  Fails the job when there is no video. */
static void ladder_measured(struct cap_job *j, const struct cap_proc *p) {
  cJSON *root = p->out_buf.data && !p->out_truncated
                    ? cJSON_ParseWithLength(p->out_buf.data, p->out_buf.len)
                    : NULL;
  const cJSON *streams = cJSON_GetObjectItemCaseSensitive(root, "streams"), *st;
  const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
  const char *dur = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fmt, "duration"));
  j->progress.input_duration_s = dur ? strtod(dur, NULL) : 0;
  cJSON_ArrayForEach(st, streams) {
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "codec_type"));
    if (type && strcmp(type, "audio") == 0)
      j->src_audio = 1;
    if (type == NULL || strcmp(type, "video") != 0 || j->src_height > 0)
      continue;
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(st, "width");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(st, "height");
    const cJSON *sd = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(st, "side_data_list"), 0);
    const cJSON *rot = cJSON_GetObjectItemCaseSensitive(sd, "rotation");
    int quarter = cJSON_IsNumber(rot) && ((int)rot->valuedouble % 180) != 0;
    if (cJSON_IsNumber(w) && cJSON_IsNumber(h) && w->valuedouble > 0 && h->valuedouble > 0) {
      j->src_width = (int)(quarter ? h->valuedouble : w->valuedouble);
      j->src_height = (int)(quarter ? w->valuedouble : h->valuedouble);
    }
  }
  cJSON_Delete(root);
  if (j->src_height <= 0)
    fail(j, CAP_E_INPUT_UNSUITABLE, "The input has no video stream a ladder can be made from");
}

static void ladder_pause(struct cap_ladder *l, int stop) {
  struct cap_job *j = l->data;
  if (j->child_running)
    cap_proc_signal(&j->proc, stop ? SIGSTOP : SIGCONT);
}

static void ladder_failed(struct cap_ladder *l, const struct cap_storage_err *err) {
  struct cap_job *j = l->data;
  fail(j, cap_storerr_err(err), err->msg);
  kill_child(j);
}

static void ladder_storing(struct cap_ladder *l, const char *key) {
  struct cap_job *j = l->data;
  j->owner_ops->storing(j->owner_ops, j, key);
}

static void ladder_done(struct cap_ladder *l, const struct cap_storage_err *err) {
  struct cap_job *j = l->data;
  j->bytes = l->bytes;
  j->owner_ops->ladder_ended(j->owner_ops, j, err == NULL || l->delete_failures == 0);
  if (cap_job_done(j)) {
    j->owner_ops->defer(j->owner_ops, j); /* The cleanup is over: let go of the rest. */
    return;
  }
  if (err) {
    fail(j, cap_storerr_err(err), err->msg);
    return;
  }
  assert(j->stage == CAP_JOB_S_STORING);
  settle(j, CAP_JOB_S_SUCCEEDED, CAP_E_NONE, NULL);
}

static const struct cap_ladder_ops ladder_ops = {
    .pause = ladder_pause, .failed = ladder_failed, .done = ladder_done, .storing = ladder_storing};

/* Makes the job's temp directory, sets the package up over it and starts
 * its watches.  Returns 0, or fails the job and returns -1. */
static int make_ladder(struct cap_job *j, char *path, size_t n) {
  const struct cap_job_owner *o = j->owner_ops;
  const struct cap_config *cfg = o->cfg;
  struct cap_ladder_limits lim = {.uploads = cfg->ladder_uploads,
                                  .backlog_files = cfg->ladder_backlog_segments,
                                  .backlog_bytes = (uint64_t)cfg->ladder_backlog_mb << 20};
  snprintf(j->tmp_dir, sizeof(j->tmp_dir), "%s", j->id);
  int rc = cap_store_tmp_mkdir(o->store, j->tmp_dir);
  if (rc == 0)
    rc = cap_store_tmp_path(o->store, j->tmp_dir, path, n);
  if (rc != 0) {
    char msg[200];
    snprintf(msg, sizeof(msg), "Could not create the job's temp directory: %s", strerror(-rc));
    fail(j, CAP_E_STORAGE_ERROR, msg);
    return -1;
  }
  cap_ladderspec_pick(j->ladder, j->src_height, &j->pick);
  j->pkg = xcalloc(1, sizeof(*j->pkg));
  cap_ladder_init(j->pkg, &ladder_ops, o->objstore, o->store, j->ladder, &j->pick, j->src_audio,
                  j->id, j->tmp_dir, j->output_prefix, &lim);
  j->pkg->data = j;
  rc = cap_ladder_start(o->loop, j->pkg);
  if (rc != 0) {
    char msg[200];
    snprintf(msg, sizeof(msg), "Could not watch the ladder's directories: %s", uv_strerror(rc));
    fail(j, CAP_E_STORAGE_ERROR, msg);
    return -1;
  }
  return 0;
}

static void ladder_start(struct cap_job *j) {
  char dir[4096];
  if (make_ladder(j, dir, sizeof(dir)) != 0)
    return;
  struct cap_jobcmd c = jobcmd(j);
  char **argv = cap_jobcmd_ladder(&c, j->ladder, &j->pick, j->src_audio, dir);
  move(j, CAP_JOB_S_RENDERING);
  spawn(j, argv, 0, 1, 0);
  free(argv);
  cap_jobcmd_release(&c);
}
