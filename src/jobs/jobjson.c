#include "jobjson.h"

#include "errcode.h"
#include "execreq.h"
#include "job.h"
#include "jobprogress.h"
#include "jsonw.h"
#include "proc.h"

#include <string.h>
#include <time.h>
#include <signal.h>

static void str(struct cap_buf *b, const char *s) {
  if (s == NULL) {
    cap_buf_puts(b, "null");
    return;
  }
  cap_jsonw_str(b, s, strlen(s));
}

static void key(struct cap_buf *b, const char *k, int first) {
  if (!first)
    cap_buf_putc(b, ',');
  cap_jsonw_str(b, k, strlen(k));
  cap_buf_putc(b, ':');
}

static void timestamp(struct cap_buf *b, int64_t ms) {
  if (ms <= 0) {
    cap_buf_puts(b, "null");
    return;
  }
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  cap_buf_printf(b, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static long long run_ms(const struct cap_job *j) {
  return j->started_at && j->finished_at ? (long long)(j->finished_at - j->started_at) : 0;
}

/* Writes the JSON string a + c + d. */
static void joined(struct cap_buf *b, const char *a, const char *c, const char *d) {
  struct cap_buf t;
  cap_buf_init(&t);
  cap_buf_puts(&t, a);
  cap_buf_puts(&t, c);
  cap_buf_puts(&t, d);
  cap_jsonw_str(b, t.data, t.len);
  cap_buf_free(&t);
}

static void rendition(struct cap_buf *b, const struct cap_job *j, const struct cap_ladder_rend *r) {
  cap_buf_putc(b, '{');
  key(b, "name", 1);
  str(b, r->name);
  if (!r->audio) {
    cap_buf_printf(b, ",\"width\":%d,\"height\":%d", r->width, r->height);
    cap_buf_printf(b, ",\"bandwidth\":%llu,\"average_bandwidth\":%llu",
                   (unsigned long long)r->bandwidth, (unsigned long long)r->average_bandwidth);
  }
  key(b, "codecs", 0);
  str(b, r->codecs);
  key(b, "playlist_key", 0);
  joined(b, j->output_prefix, r->name, "/index.m3u8");
  cap_buf_printf(b, ",\"segments\":%zu,\"bytes\":%llu}", r->segments, (unsigned long long)r->bytes);
}

/* A ladder's result: where the package is, each rendition, the rungs left
 * out because the source is smaller, and what was stored. */
static void ladder_fields(const struct cap_job *j, struct cap_buf *b) {
  const struct cap_ladder *l = j->pkg;
  key(b, "output_prefix", 1);
  str(b, j->output_prefix);
  key(b, "master_key", 0);
  joined(b, j->output_prefix, "", CAP_LADDER_MASTER_NAME);
  if (j->ladder->package == CAP_LADDER_DASH) {
    key(b, "mpd_key", 0);
    joined(b, j->output_prefix, "", CAP_LADDER_MPD_NAME);
  }
  key(b, "renditions", 0);
  cap_buf_putc(b, '[');
  for (size_t i = 0, n = 0; l && i < l->nrends; i++) {
    if (l->rends[i].audio)
      continue;
    if (n++)
      cap_buf_putc(b, ',');
    rendition(b, j, &l->rends[i]);
  }
  cap_buf_putc(b, ']');
  key(b, "audio", 0);
  if (l && l->has_audio)
    rendition(b, j, &l->rends[l->nrends - 1]);
  else
    cap_buf_puts(b, "null");
  key(b, "dropped", 0);
  cap_buf_putc(b, '[');
  for (size_t i = 0; i < j->pick.ndropped; i++) {
    if (i)
      cap_buf_putc(b, ',');
    str(b, j->pick.dropped[i]);
  }
  cap_buf_printf(b, "],\"source\":{\"width\":%d,\"height\":%d}", j->src_width, j->src_height);
  cap_buf_printf(b, ",\"objects\":%zu,\"bytes\":%llu", l ? l->objects : 0,
                 (unsigned long long)(l ? l->bytes : 0));
  key(b, "preset", 0);
  str(b, j->preset);
}

/* The fields of a result, without braces. */
static void result_fields(const struct cap_job *j, struct cap_buf *b) {
  if (j->ladder) {
    ladder_fields(j, b);
  } else if (j->capability == CAP_CAP_FFPROBE) {
    key(b, "probe", 1);
    cap_buf_puts(b, j->probe_json ? j->probe_json : "null");
  } else {
    key(b, "r2_key", 1);
    str(b, j->output_key);
    key(b, "bytes", 0);
    cap_buf_printf(b, "%llu", (unsigned long long)j->bytes);
    key(b, "preset", 0);
    str(b, j->preset);
    if (j->etag[0]) {
      key(b, "etag", 0);
      str(b, j->etag);
      key(b, "parts", 0);
      cap_buf_printf(b, "%d", j->parts);
    }
  }
  key(b, "duration_ms", 0);
  cap_buf_printf(b, "%lld", run_ms(j));
  key(b, "job_id", 0);
  str(b, j->id);
  key(b, "status", 0);
  str(b, cap_jobstage_state_name(j->state));
}

void cap_jobjson_result(const struct cap_job *j, struct cap_buf *out) {
  if (j->saved_answer) {
    cap_buf_puts(out, j->saved_answer);
    return;
  }
  cap_buf_putc(out, '{');
  result_fields(j, out);
  cap_buf_putc(out, '}');
}

static void signal_name(struct cap_buf *b, int sig) {
  char name[32];
  cap_proc_signal_name(sig, name, sizeof(name));
  cap_buf_printf(b, "\"%s\"", name);
}

/* The fields of an error, without braces; first says whether one comes before. */
static void error_fields(const struct cap_job *j, struct cap_buf *b, int with_message) {
  if (with_message) {
    key(b, "error", 1);
    str(b, j->err_msg);
    key(b, "code", 0);
  } else {
    key(b, "code", 1);
  }
  str(b, cap_err_code(j->err));
  if (!with_message) {
    key(b, "message", 0);
    str(b, j->err_msg);
  }
  if (j->exit_status > 0 && !j->term_signal) {
    key(b, "exit_status", 0);
    cap_buf_printf(b, "%lld", (long long)j->exit_status);
  }
  if (j->term_signal) {
    key(b, "signal", 0);
    signal_name(b, j->term_signal);
  }
  if (j->detected_format[0]) {
    key(b, "detected_format", 0);
    str(b, j->detected_format);
  }
  if (j->stderr_tail) {
    key(b, "stderr_tail", 0);
    str(b, j->stderr_tail);
  }
  /* The job never ran to its end through no fault of its own: the same
   * request may simply be sent again. */
  if (j->err == CAP_E_INTERRUPTED) {
    key(b, "retryable", 0);
    cap_buf_puts(b, "true");
  }
}

void cap_jobjson_error(const struct cap_job *j, struct cap_buf *out) {
  if (j->saved_answer) {
    cap_buf_puts(out, j->saved_answer);
    return;
  }
  cap_buf_putc(out, '{');
  error_fields(j, out, 1);
  key(out, "job_id", 0);
  str(out, j->id);
  key(out, "status", 0);
  str(out, cap_jobstage_state_name(j->state));
  cap_buf_putc(out, '}');
}

void cap_jobjson_accepted(const struct cap_job *j, struct cap_buf *out) {
  cap_buf_puts(out, "{\"job_id\":");
  str(out, j->id);
  cap_buf_puts(out, ",\"status\":");
  str(out, cap_jobstage_state_name(j->state));
  cap_buf_printf(out, ",\"status_url\":\"/jobs/%s\"}", j->id);
}

/* Where a ladder's package is: what is stored, what waits on local disk,
 * whether ffmpeg is paused, and the cleanup after a failure. */
static void package_progress(const struct cap_ladder *l, struct cap_buf *b) {
  cap_buf_printf(b,
                 ",\"package\":{\"state\":\"%s\",\"segments_uploaded\":%zu,"
                 "\"objects_stored\":%zu,\"bytes_stored\":%llu,\"backlog_files\":%zu,"
                 "\"backlog_bytes\":%llu,\"paused\":%s,\"delete_failures\":%d}",
                 cap_ladder_state_name(l->state), cap_ladder_segments(l), l->objects,
                 (unsigned long long)l->bytes, l->backlog_files,
                 (unsigned long long)l->backlog_bytes, l->paused ? "true" : "false",
                 l->delete_failures);
}

/* How the input is read and how much of it the children have read: a
 * streamed input counts the bytes sent through the loopback endpoint, its
 * range requests, resumes and seeks; a downloaded or local one its size
 * once open. */
static void input_progress(const struct cap_job *j, struct cap_buf *b) {
  const struct cap_objin *in = &j->in;
  int file = in->os && strcmp(in->os->ops->name, "file") == 0;
  const char *mode = file ? "file" : in->stream ? "stream" : "download";
  cap_buf_printf(b, ",\"input\":{\"mode\":\"%s\"", mode);
  if (!file && in->stream)
    cap_buf_printf(b,
                   ",\"size\":%llu,\"bytes_read\":%llu,\"requests\":%llu,\"resumes\":%llu,"
                   "\"seeks\":%llu}",
                   (unsigned long long)in->src.size, (unsigned long long)in->src.bytes,
                   (unsigned long long)in->src.requests, (unsigned long long)in->src.resumes,
                   (unsigned long long)in->src.seeks);
  else
    cap_buf_printf(b, ",\"size\":%llu}", (unsigned long long)in->size);
}

/* Where the job's webhooks go and which: the URL without its query, which
 * may carry the receiver's own secret. */
static void callback_fields(const struct cap_job *j, struct cap_buf *b) {
  key(b, "callback", 0);
  cap_buf_putc(b, '{');
  key(b, "url", 1);
  cap_jsonw_str(b, j->callback_url, strcspn(j->callback_url, "?#"));
  key(b, "events", 0);
  cap_buf_putc(b, '[');
  int first = 1;
  for (int i = 0; cap_execreq_events[i]; i++) {
    if (!(j->callback_events & (1u << i)))
      continue;
    if (!first)
      cap_buf_putc(b, ',');
    str(b, cap_execreq_events[i]);
    first = 0;
  }
  cap_buf_puts(b, "]}");
}

void cap_jobjson_job(const struct cap_job *j, struct cap_buf *b) {
  if (j->saved_job) {
    cap_buf_puts(b, j->saved_job);
    return;
  }
  const struct cap_job_progress *g = &j->progress;
  cap_buf_putc(b, '{');
  key(b, "job_id", 1);
  str(b, j->id);
  key(b, "status", 0);
  str(b, cap_jobstage_state_name(j->state));
  key(b, "capability", 0);
  str(b, cap_execreq_capabilities[j->capability]);
  key(b, "preset", 0);
  str(b, j->preset);
  key(b, "input_key", 0);
  str(b, j->input_key);
  key(b, "output_key", 0);
  str(b, j->output_key);
  if (j->ladder) {
    key(b, "output_prefix", 0);
    str(b, j->output_prefix);
  }
  key(b, "created_at", 0);
  timestamp(b, j->created_at);
  key(b, "started_at", 0);
  timestamp(b, j->started_at);
  key(b, "finished_at", 0);
  timestamp(b, j->finished_at);
  key(b, "progress", 0);
  cap_buf_putc(b, '{');
  key(b, "percent", 1);
  if (g->input_duration_s > 0 || j->state == CAP_JOB_SUCCEEDED)
    cap_buf_printf(b, "%.1f", cap_jobprogress_percent(g, j->state == CAP_JOB_SUCCEEDED));
  else
    cap_buf_puts(b, "null");
  key(b, "out_time_us", 0);
  cap_buf_printf(b, "%lld", (long long)g->out_time_us);
  key(b, "fps", 0);
  cap_buf_printf(b, "%.2f", g->fps);
  key(b, "speed", 0);
  str(b, g->speed[0] ? g->speed : NULL);
  key(b, "frame", 0);
  cap_buf_printf(b, "%lld", (long long)g->frame);
  key(b, "total_size", 0);
  cap_buf_printf(b, "%lld", (long long)g->total_size);
  cap_buf_putc(b, '}');
  input_progress(j, b);
  if (j->pkg)
    package_progress(j->pkg, b);
  if (j->callback_url)
    callback_fields(j, b);
  key(b, "result", 0);
  if (j->state == CAP_JOB_SUCCEEDED)
    cap_jobjson_result(j, b);
  else
    cap_buf_puts(b, "null");
  key(b, "error", 0);
  if (j->err != CAP_E_NONE) {
    cap_buf_putc(b, '{');
    error_fields(j, b, 0);
    cap_buf_putc(b, '}');
  } else {
    cap_buf_puts(b, "null");
  }
  cap_buf_putc(b, '}');
}
