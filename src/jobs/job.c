#include "job.h"

#include "alloc.h"
#include "config.h"
#include "jobcmd.h"
#include "jobio.h"
#include "jobprogress.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "preset.h"
#include "storage.h"
#include "store.h"
#include "upload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* What the job's child is doing. */
enum phase { PHASE_NONE, PHASE_FETCH, PHASE_DURATION, PHASE_FFMPEG, PHASE_PROBE, PHASE_DETECT };

/* Open files a child may hold, and tasks (threads) its user may run. */
#define CHILD_NOFILE 1024
#define CHILD_NPROC  8192

/* ffprobe's JSON for one file is small; more means something is wrong. */
#define PROBE_OUT_MAX   (4 * 1024 * 1024)
#define STDERR_TAIL_MAX 2048

static const char *const state_names[] = {"queued",    "running", "uploading",
                                          "succeeded", "failed",  "canceled"};

const char *cap_job_state_name(enum cap_job_state s) {
  return state_names[s];
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_id(char *out) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char r[16];
  if (RAND_bytes(r, sizeof(r)) != 1)
    abort(); /* Guessable job ids would let tokens see each other's jobs. */
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < sizeof(r); i++) {
    acc = (acc << 8) | r[i];
    bits += 8;
    while (bits >= 6) {
      out[o++] = b64[(acc >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  if (bits > 0)
    out[o++] = b64[(acc << (6 - bits)) & 63];
  out[o] = '\0';
}

static void on_handle_closed(uv_handle_t *h) {
  struct cap_job *j = h->data;
  j->handles_open--;
}

struct cap_job *cap_job_new(struct cap_jobs *jobs, const struct cap_execreq *r, const char *owner,
                            const char *req_id) {
  struct cap_job *j = xcalloc(1, sizeof(*j));
  j->jobs = jobs;
  make_id(j->id);
  snprintf(j->owner, sizeof(j->owner), "%s", owner);
  snprintf(j->req_id, sizeof(j->req_id), "%s", req_id);
  j->capability = r->capability;
  j->input_key = xstrdup(r->input_key);
  j->output_key = r->output_key ? xstrdup(r->output_key) : NULL;
  j->preset = r->preset ? xstrdup(r->preset) : NULL;
  j->idem_key = r->idempotency_key ? xstrdup(r->idempotency_key) : NULL;
  j->state = CAP_JOB_QUEUED;
  j->created_at = wall_ms();
  j->in_fd = -1;
  j->out_fd = -1;
  j->exit_status = -1;
  j->pool_item.start = cap_job_start;
  j->cls = xstrdup("cpu");

  const struct cap_preset *p = j->preset ? cap_preset_find(jobs->presets, j->preset) : NULL;
  const char *formats = jobs->cfg->input_formats;
  j->limits = cap_climits_get(jobs->climits, p ? p->cls : j->cls);
  if (p) {
    if (p->input_formats)
      formats = p->input_formats;
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
  }
  j->input_formats = xstrdup(formats ? formats : CAP_DEFAULT_INPUT_FORMATS);
  if (j->timeout_s <= 0 || j->timeout_s > jobs->cfg->job_timeout_s)
    j->timeout_s = jobs->cfg->job_timeout_s;
  return j;
}

void cap_job_attach(struct cap_job *j, uv_loop_t *loop) {
  uv_timer_init(loop, &j->timeout_timer);
  j->timeout_timer.data = j;
  j->handles_open = 1;
}

void cap_job_free(struct cap_job *j) {
  free(j->input_key);
  free(j->output_key);
  free(j->preset);
  free(j->idem_key);
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
  return j->state >= CAP_JOB_SUCCEEDED;
}

int cap_job_quiescent(const struct cap_job *j) {
  return cap_job_done(j) && !j->proc_live && j->handles_open == 0 && j->pool_item.state == 0;
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

static void log_finished(struct cap_job *j) {
  struct cap_log_rec *r =
      cap_log_begin(j->state == CAP_JOB_SUCCEEDED ? CAP_LOG_INFO : CAP_LOG_WARN, "job.finished");
  cap_log_str(r, "job_id", j->id);
  cap_log_str(r, "req_id", j->req_id);
  cap_log_str(r, "state", cap_job_state_name(j->state));
  cap_log_str(r, "capability", cap_execreq_capabilities[j->capability]);
  if (j->preset)
    cap_log_str(r, "preset", j->preset);
  if (j->err_code)
    cap_log_str(r, "code", j->err_code);
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

/* Puts the job in its final state and wakes everyone waiting for it.  The
 * child may still be exiting; cleanup() follows when it has. */
static void settle(struct cap_job *j, enum cap_job_state state, const char *code, int status,
                   const char *msg) {
  if (cap_job_done(j))
    return;
  j->state = state;
  j->finished_at = wall_ms();
  if (code) {
    j->err_code = code;
    j->http_status = status;
    free(j->err_msg);
    j->err_msg = xstrdup(msg);
  }
  cap_jobs_note_done(j->jobs, j);
  log_finished(j);
  while (j->waiters) {
    struct cap_job_waiter *w = j->waiters;
    cap_job_remove_waiter(w);
    w->cb(w);
  }
}

/* Releases what the job holds once no child runs: the slot first, then,
 * once its storage requests are over too, input, temp files and timer. */
static void cleanup(struct cap_job *j) {
  if (j->proc_live)
    return;
  /* The slot bounds the children running at once, so it is free as soon as
   * the job's child has been reaped.  cleanup() runs only for a job that
   * has ended: what storage work may still be under way is the abort of
   * its upload, which holds no part buffer, and need not keep the next
   * queued job waiting. */
  cap_pool_release(&j->jobs->pool, &j->pool_item);
  if (j->io_live)
    return;
  if (j->in_fd >= 0) {
    close(j->in_fd);
    j->in_fd = -1;
  }
  if (j->out_fd >= 0) {
    close(j->out_fd);
    j->out_fd = -1;
  }
  if (j->tmp_name[0]) {
    cap_store_discard(j->jobs->store, j->tmp_name);
    j->tmp_name[0] = '\0';
  }
  if (j->tmp_dir[0]) {
    cap_store_tmp_rmdir(j->jobs->store, j->tmp_dir);
    j->tmp_dir[0] = '\0';
  }
  if (j->in_tmp[0]) {
    cap_store_discard(j->jobs->store, j->in_tmp);
    j->in_tmp[0] = '\0';
  }
  cap_jobio_free(j);
  if (j->handles_open == 1 && !uv_is_closing((uv_handle_t *)&j->timeout_timer))
    uv_close((uv_handle_t *)&j->timeout_timer, on_handle_closed);
  cap_jobs_note_quiet(j->jobs);
}

static void fail(struct cap_job *j, const char *code, int status, const char *msg) {
  settle(j, CAP_JOB_FAILED, code, status, msg);
  cleanup(j);
}

/* Kills the child of a job whose output is thrown away.  SIGTERM would
 * ask ffmpeg to finish its file properly: flush the encoder's lookahead,
 * write the trailer, which takes seconds with libx265 at 4K and keeps the
 * job's slot the whole time, for a file nobody will read.  SIGKILL goes to
 * the whole process group (the child is its leader), so nothing the child
 * started outlives it. */
static void kill_child(struct cap_job *j) {
  if (j->proc_live)
    cap_proc_signal(&j->proc, SIGKILL);
}

void cap_job_cancel(struct cap_job *j, const char *code) {
  int timeout = strcmp(code, "timeout") == 0;
  if (cap_job_done(j) || j->cancel_requested)
    return;
  j->cancel_requested = 1;
  j->cancel_code = code;
  if (timeout)
    settle(j, CAP_JOB_FAILED, "timeout", 504, "The job ran past its time limit");
  else
    settle(j, CAP_JOB_CANCELED, "canceled", 409, "The job was canceled");
  cap_jobio_abort(j, timeout ? "timeout" : "canceled", j->err_msg);
  if (j->proc_live) {
    kill_child(j);
    return; /* cleanup() runs when the child has been reaped. */
  }
  cleanup(j);
}

static void on_timeout(uv_timer_t *t) {
  cap_job_cancel(t->data, "timeout");
}

static void on_progress(struct cap_proc *p, const char *key, const char *val) {
  cap_jobprogress_note(p->data, key, val);
}

static void on_proc_done(struct cap_proc *p);

/* Starts a child for the job's current phase.  Returns 0 or a UV_E* code
 * (on_proc_done still runs). */
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
  l->fsize_mb = j->jobs->cfg->output_max_mb;
  l->nofile = CHILD_NOFILE;
  l->nproc = CHILD_NPROC;
  /* Only the render yields the CPU and the disk: probes are short and on
   * the path of the request that waits for them. */
  if (j->phase == PHASE_FFMPEG) {
    l->nice = j->limits.nice;
    l->ionice_class = j->limits.ionice_class;
    l->ionice_level = j->limits.ionice_level;
  }
}

static int spawn(struct cap_job *j, char **argv, size_t capture, int progress, int stream) {
  char rw[4096];
  /* Only the render writes, and only into the job's own directory. */
  int writes = j->phase == PHASE_FFMPEG && j->tmp_dir[0] &&
               cap_store_tmp_path(j->jobs->store, j->tmp_dir, rw, sizeof(rw)) == 0;
  struct cap_sandbox_child child = {.in_fd = j->in_fd >= 0 ? 3 : -1,
                                    .rw_dir = writes ? rw : NULL,
                                    .hardware = strcmp(j->cls, "cpu") != 0};
  child_limits(j, &child.lim);
  struct cap_proc_spec spec = {.file = argv[0],
                               .args = argv,
                               .in_fd = j->in_fd,
                               .capture_out = capture,
                               .stream_out = stream,
                               .progress = progress,
                               .sandbox = j->jobs->sandbox,
                               .child = &child};
  memset(&j->proc, 0, sizeof(j->proc));
  j->proc.data = j;
  j->proc.on_done = on_proc_done;
  j->proc.on_progress = progress ? on_progress : NULL;
  j->proc_live = 1;
  int rc = cap_proc_spawn(j->jobs->loop, &j->proc, &spec);
  struct cap_log_rec *r = cap_log_begin(rc == 0 ? CAP_LOG_INFO : CAP_LOG_ERROR, "job.started");
  cap_log_str(r, "job_id", j->id);
  cap_log_str(r, "req_id", j->req_id);
  cap_log_str(r, "program", argv[0]);
  cap_log_str(r, "phase",
              j->phase == PHASE_DURATION ? "probe_duration"
              : j->phase == PHASE_FFMPEG ? "render"
              : j->phase == PHASE_DETECT ? "detect_format"
                                         : "probe");
  cap_log_bool(r, "sandbox", cap_sandbox_active(j->jobs->sandbox));
  if (rc == 0)
    cap_log_int(r, "pid", j->proc.pid);
  else
    cap_log_str(r, "error", uv_strerror(rc));
  if (j->preset)
    cap_log_str(r, "preset", j->preset);
  cap_log_str(r, "class", j->cls);
  cap_log_end(r);
  return rc;
}

static int s3_storage(const struct cap_job *j) {
  return j->jobs->storage && j->jobs->storage->kind == CAP_STORAGE_S3;
}

/* Makes the job's own temp directory and names the output file in it.
 * Returns 0, or fails the job and returns -1. */
static int make_tmp_output(struct cap_job *j, char *path, size_t n) {
  snprintf(j->tmp_dir, sizeof(j->tmp_dir), "%s", j->id);
  int rc = cap_store_tmp_mkdir(j->jobs->store, j->tmp_dir);
  if (rc != 0) {
    char msg[200];
    j->tmp_dir[0] = '\0';
    snprintf(msg, sizeof(msg), "Could not create the job's temp directory: %s", strerror(-rc));
    fail(j, "storage_error", 502, msg);
    return -1;
  }
  snprintf(j->tmp_name, sizeof(j->tmp_name), "%s/out.%s", j->tmp_dir, j->ext);
  if (cap_store_tmp_path(j->jobs->store, j->tmp_name, path, n) != 0) {
    j->tmp_name[0] = '\0';
    fail(j, "storage_error", 502, "The temporary output path is too long");
    return -1;
  }
  return 0;
}

/* What the job's command lines are built from. */
static struct cap_jobcmd jobcmd(const struct cap_job *j) {
  struct cap_jobcmd c = {.ffmpeg = j->jobs->cfg->ffmpeg,
                         .ffprobe = j->jobs->cfg->ffprobe,
                         .input_formats = j->input_formats,
                         .preset_args = j->args,
                         .format = j->format,
                         .threads = j->limits.threads};
  return c;
}

static void start_render(struct cap_job *j) {
  char tmp_path[4096], out_arg[4200];
  /* A streamable output to S3 goes through ffmpeg's stdout straight into
   * the multipart upload; anything else is written to a temp file first. */
  int stream = s3_storage(j) && j->streamable;
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
  j->phase = PHASE_FFMPEG;
  if (spawn(j, argv, 0, 1, stream) == 0 && stream)
    cap_jobio_stream(j);
  free(argv);
}

static void succeed(struct cap_job *j) {
  settle(j, CAP_JOB_SUCCEEDED, NULL, 200, NULL);
  cleanup(j);
}

/* ffmpeg wrote the temp output of a non-streamable preset: upload it. */
static void upload_tmp(struct cap_job *j) {
  int64_t size = cap_store_tmp_size(j->jobs->store, j->tmp_name);
  int fd = size < 0 ? -1 : cap_store_tmp_open(j->jobs->store, j->tmp_name);
  if (fd < 0) {
    fail(j, "ffmpeg_failed", 502, "ffmpeg exited without writing an output");
    return;
  }
  j->out_fd = fd;
  j->state = CAP_JOB_UPLOADING;
  cap_jobio_upload_file(j, fd, (uint64_t)size);
}

void cap_job_output_done(struct cap_job *j, int ok, const char *code, const char *msg) {
  if (!ok) {
    char text[400];
    snprintf(text, sizeof(text), "Storing the output failed: %s: %s", code ? code : "error",
             msg ? msg : "");
    int denied =
        code && (strcmp(code, "AccessDenied") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
                 strcmp(code, "InvalidAccessKeyId") == 0);
    settle(j, CAP_JOB_FAILED, denied ? "storage_denied" : "storage_error", 502, text);
    kill_child(j);
    cleanup(j);
    return;
  }
  j->upload_ok = 1;
  /* A streamed upload completes after ffmpeg closed its output; its exit
   * status may still be on the way. */
  if (!j->proc_live && (j->ff_ok || j->tmp_name[0]))
    succeed(j);
}

static void finish_render(struct cap_job *j) {
  int64_t size = cap_store_tmp_size(j->jobs->store, j->tmp_name);
  if (size < 0) {
    fail(j, "ffmpeg_failed", 502, "ffmpeg exited without writing an output");
    return;
  }
  j->state = CAP_JOB_UPLOADING;
  int rc = cap_store_commit(j->jobs->store, j->tmp_name, j->output_key);
  if (rc != 0) {
    char msg[200];
    snprintf(msg, sizeof(msg), "Could not store the output: %s", strerror(-rc));
    fail(j, "storage_error", 502, msg);
    return;
  }
  j->tmp_name[0] = '\0';
  j->bytes = (uint64_t)size;
  settle(j, CAP_JOB_SUCCEEDED, NULL, 200, NULL);
  cleanup(j);
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

/* Runs an ffprobe child of the given kind on the opened input. */
static void run_probe(struct cap_job *j, enum cap_jobcmd_probe kind, enum phase phase,
                      size_t capture) {
  struct cap_jobcmd c = jobcmd(j);
  char **argv = cap_jobcmd_probe(&c, kind);
  j->phase = phase;
  spawn(j, argv, capture, 0, 0);
  free(argv);
}

/* Runs the first tool on the opened input: ffprobe for a probe, or the
 * duration probe that precedes a render. */
static void run_tools(struct cap_job *j) {
  if (j->capability == CAP_CAP_FFPROBE)
    run_probe(j, CAP_JOBCMD_FFPROBE, PHASE_PROBE, PROBE_OUT_MAX);
  else
    run_probe(j, CAP_JOBCMD_DURATION, PHASE_DURATION, 4096);
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
  fail(j, "input_format_refused", 422, msg);
}

/* Counts a child's end by program and exit status or signal name. */
static void count_exit(const struct cap_job *j, const struct cap_proc *p) {
  char status[32];
  if (cap_proc_exit_label(p, status, sizeof(status)) == 0)
    cap_metrics_inc(CAP_M_CHILD_EXITS,
                    CAP_LABELS(j->phase == PHASE_FFMPEG ? "ffmpeg" : "ffprobe", status));
}

static void on_proc_done(struct cap_proc *p) {
  struct cap_job *j = p->data;
  int ok = p->spawn_error == 0 && p->exit_status == 0 && p->term_signal == 0;
  count_exit(j, p);
  j->proc_live = 0;
  j->exit_status = p->spawn_error ? -1 : p->exit_status;
  j->term_signal = p->term_signal;

  if (cap_job_done(j)) {
    /* Canceled or timed out while the child ran: it has gone now. */
    cap_proc_free(p);
    cleanup(j);
    return;
  }
  if (j->phase == PHASE_DETECT) {
    refuse_format(j, p);
    cap_proc_free(p);
    return;
  }
  if (!ok && (j->phase == PHASE_DURATION || j->phase == PHASE_PROBE) && format_refused(p)) {
    cap_proc_free(p);
    /* Ask ffprobe, under the same allow-lists, which format it saw. */
    run_probe(j, CAP_JOBCMD_DETECT, PHASE_DETECT, 0);
    return;
  }
  if (!ok) {
    char tail[STDERR_TAIL_MAX + 1], msg[200];
    cap_proc_stderr_tail(p, tail, sizeof(tail));
    free(j->stderr_tail);
    j->stderr_tail = xstrdup(tail);
    if (p->spawn_error)
      snprintf(msg, sizeof(msg), "Could not start %s: %s",
               j->phase == PHASE_FFMPEG ? "ffmpeg" : "ffprobe", uv_strerror(p->spawn_error));
    else if (p->term_signal)
      snprintf(msg, sizeof(msg), "%s was killed by signal %d",
               j->phase == PHASE_FFMPEG ? "ffmpeg" : "ffprobe", p->term_signal);
    else
      snprintf(msg, sizeof(msg), "%s exited with status %lld",
               j->phase == PHASE_FFMPEG ? "ffmpeg" : "ffprobe", (long long)p->exit_status);
    cap_proc_free(p);
    settle(j, CAP_JOB_FAILED, "ffmpeg_failed", 502, msg);
    cap_jobio_abort(j, "ffmpeg_failed", msg);
    cleanup(j);
    return;
  }

  switch (j->phase) {
  case PHASE_DURATION:
    j->progress.input_duration_s = p->out_buf.data ? strtod(p->out_buf.data, NULL) : 0;
    cap_proc_free(p);
    start_render(j);
    return;
  case PHASE_FFMPEG:
    cap_proc_free(p);
    if (!s3_storage(j)) {
      finish_render(j);
    } else if (j->tmp_name[0]) {
      upload_tmp(j);
    } else {
      j->ff_ok = 1;
      j->state = CAP_JOB_UPLOADING;
      cap_jobio_finish(j);
    }
    return;
  case PHASE_PROBE:
    if (p->out_truncated || p->out_buf.data == NULL) {
      cap_proc_free(p);
      fail(j, "ffmpeg_failed", 502, "ffprobe printed no usable output");
      return;
    }
    j->probe_json = probe_output(j, &p->out_buf);
    cap_proc_free(p);
    if (j->probe_json == NULL) {
      fail(j, "ffmpeg_failed", 502, "ffprobe printed no usable output");
      return;
    }
    settle(j, CAP_JOB_SUCCEEDED, NULL, 200, NULL);
    cleanup(j);
    return;
  default:
    cap_proc_free(p);
    fail(j, "internal", 500, "Job in an unknown phase");
  }
}

void cap_job_start(struct cap_pool_item *it) {
  struct cap_job *j = container_of(it, struct cap_job, pool_item);
  uint64_t size = 0;

  j->state = CAP_JOB_RUNNING;
  j->started_at = wall_ms();
  j->started_mono = uv_now(j->jobs->loop);
  uv_timer_start(&j->timeout_timer, on_timeout, (uint64_t)j->timeout_s * 1000, 0);

  if (s3_storage(j)) {
    j->phase = PHASE_FETCH;
    cap_jobio_fetch(j);
    return;
  }
  int rc = cap_store_open_input(j->jobs->store, j->input_key, &j->in_fd, &size);
  if (rc == -ENOENT) {
    fail(j, "input_not_found", 404, "The input object does not exist");
    return;
  }
  if (rc != 0) {
    char msg[200];
    snprintf(msg, sizeof(msg), "Could not open the input: %s", strerror(-rc));
    fail(j, "storage_error", 502, msg);
    return;
  }
  run_tools(j);
}

void cap_job_input_ready(struct cap_job *j, int status, const char *code, int http_status,
                         const char *msg) {
  if (cap_job_done(j)) {
    cleanup(j);
    return;
  }
  if (status != 0) {
    fail(j, code, http_status, msg);
    return;
  }
  run_tools(j);
}
