#include "job.h"

#include "alloc.h"
#include "config.h"
#include "jobint.h"
#include "storerr.h"
#include "store.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A ladder job's own steps: what the source is, the package's directories
 * and watches, its ffmpeg, and what the package tells the job.  The rest
 * of its life is any job's (job.c). */

/* Reads the duration, the first video stream's displayed size (a rotation
 * of 90 or 270 degrees swaps it) and whether there is audio, from the
 * CAP_JOBCMD_STREAMS probe.  Fails the job when there is no video. */
void cap_jobladder_measured(struct cap_job *j, const struct cap_proc *p) {
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
    cap_jobint_fail(j, CAP_E_INPUT_UNSUITABLE,
                    "The input has no video stream a ladder can be made from");
}

static void ladder_pause(struct cap_ladder *l, int stop) {
  struct cap_job *j = l->data;
  if (j->child_running)
    cap_proc_signal(&j->proc, stop ? SIGSTOP : SIGCONT);
}

static void ladder_failed(struct cap_ladder *l, const struct cap_storage_err *err) {
  struct cap_job *j = l->data;
  cap_jobint_fail(j, cap_storerr_err(err), err->msg);
  cap_jobint_kill_child(j);
}

static void ladder_done(struct cap_ladder *l, const struct cap_storage_err *err) {
  struct cap_job *j = l->data;
  j->bytes = l->bytes;
  if (cap_job_done(j)) {
    j->owner_ops->defer(j->owner_ops, j); /* The cleanup is over: let go of the rest. */
    return;
  }
  if (err) {
    cap_jobint_fail(j, cap_storerr_err(err), err->msg);
    return;
  }
  assert(j->stage == CAP_JOB_S_STORING);
  cap_jobint_settle(j, CAP_JOB_S_SUCCEEDED, CAP_E_NONE, NULL);
}

static const struct cap_ladder_ops ladder_ops = {
    .pause = ladder_pause, .failed = ladder_failed, .done = ladder_done};

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
    cap_jobint_fail(j, CAP_E_STORAGE_ERROR, msg);
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
    cap_jobint_fail(j, CAP_E_STORAGE_ERROR, msg);
    return -1;
  }
  return 0;
}

void cap_jobladder_start(struct cap_job *j) {
  char dir[4096];
  if (make_ladder(j, dir, sizeof(dir)) != 0)
    return;
  struct cap_jobcmd c = cap_jobint_cmd(j);
  char **argv = cap_jobcmd_ladder(&c, j->ladder, &j->pick, j->src_audio, dir);
  cap_jobint_move(j, CAP_JOB_S_RENDERING);
  cap_jobint_spawn(j, argv, 0, 1, 0);
  free(argv);
  cap_jobcmd_release(&c);
}
