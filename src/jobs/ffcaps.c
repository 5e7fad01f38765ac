#include "ffcaps.h"

#include "alloc.h"
#include "proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum step { STEP_ENCODERS, STEP_MUXERS, STEP_HW, STEP_DONE };

struct probe {
  struct cap_proc proc;
  uv_loop_t *loop;
  char *ffmpeg;
  const struct cap_sandbox *sandbox;
  struct cap_presets *set;
  cap_ffcaps_cb cb;
  void *arg;
  enum step step;
  size_t hw_index; /* Preset whose hardware encoder is being tested. */
  char *encoders;  /* ffmpeg's listings, kept as text. */
  char *muxers;
  int status;
};

static void next(struct probe *pr);

/* Returns 1 when name is the second word (the name column, which may be
 * a comma-separated list) of some line of an ffmpeg -encoders/-muxers
 * listing. */
static int listed(const char *listing, const char *name) {
  size_t n = strlen(name);
  const char *line = listing;
  while (line && *line) {
    const char *eol = strchr(line, '\n');
    const char *end = eol ? eol : line + strlen(line);
    const char *p = line;
    while (p < end && *p == ' ')
      p++;
    while (p < end && *p != ' ')
      p++; /* The flags column. */
    while (p < end && *p == ' ')
      p++;
    const char *word = p;
    while (p < end && *p != ' ')
      p++;
    for (const char *q = word; q < p;) {
      const char *comma = memchr(q, ',', (size_t)(p - q));
      const char *item_end = comma ? comma : p;
      if ((size_t)(item_end - q) == n && memcmp(q, name, n) == 0)
        return 1;
      q = item_end + 1;
    }
    line = eol ? eol + 1 : NULL;
  }
  return 0;
}

static void on_proc_done(struct cap_proc *p) {
  struct probe *pr = p->data;
  int ok = p->spawn_error == 0 && p->exited && p->exit_status == 0 && p->term_signal == 0;
  char *out = p->out_buf.data ? xstrdup(p->out_buf.data) : xstrdup("");
  cap_proc_free(p);

  switch (pr->step) {
  case STEP_ENCODERS:
    if (!ok) {
      pr->status = p->spawn_error ? p->spawn_error : UV_EINVAL;
      free(out);
      pr->step = STEP_DONE;
      break;
    }
    pr->encoders = out;
    pr->step = STEP_MUXERS;
    break;
  case STEP_MUXERS:
    if (!ok) {
      pr->status = p->spawn_error ? p->spawn_error : UV_EINVAL;
      free(out);
      pr->step = STEP_DONE;
      break;
    }
    pr->muxers = out;
    pr->step = STEP_HW;
    break;
  case STEP_HW: {
    struct cap_preset *pre = &pr->set->v[pr->hw_index];
    if (!ok) {
      char why[160];
      snprintf(why, sizeof(why), "hardware encoder %s failed a test encode (no device?)",
               pre->hw_encoder);
      /* One failed test covers every preset with the same encoder. */
      for (size_t i = pr->hw_index; i < pr->set->n; i++)
        if (pr->set->v[i].hw_encoder && strcmp(pr->set->v[i].hw_encoder, pre->hw_encoder) == 0)
          cap_preset_mark_unavailable(&pr->set->v[i], why);
    }
    free(out);
    pr->hw_index++;
    break;
  }
  case STEP_DONE:
    free(out);
    break;
  }
  next(pr);
}

static void finish(struct probe *pr) {
  if (pr->status == 0) {
    for (size_t i = 0; i < pr->set->n; i++) {
      struct cap_preset *pre = &pr->set->v[i];
      char why[160];
      if (!listed(pr->muxers, pre->format)) {
        snprintf(why, sizeof(why), "ffmpeg has no %s muxer", pre->format);
        cap_preset_mark_unavailable(pre, why);
      }
      for (size_t j = 0; j < pre->nencoders; j++)
        if (!listed(pr->encoders, pre->encoders[j])) {
          snprintf(why, sizeof(why), "ffmpeg has no %s encoder", pre->encoders[j]);
          cap_preset_mark_unavailable(pre, why);
        }
    }
  } else {
    for (size_t i = 0; i < pr->set->n; i++)
      cap_preset_mark_unavailable(&pr->set->v[i], "ffmpeg could not be run");
  }
  pr->cb(pr->set, pr->status, pr->arg);
  free(pr->encoders);
  free(pr->muxers);
  free(pr->ffmpeg);
  free(pr);
}

static void run(struct probe *pr, char **args, int hardware) {
  /* The probe reads no input and writes nothing; a hardware test encode
   * needs the GPU's device nodes. */
  struct cap_sandbox_child child = {.in_fd = -1, .hardware = hardware};
  struct cap_proc_spec spec = {.file = pr->ffmpeg,
                               .args = args,
                               .in_fd = -1,
                               .capture_out = 1 << 20,
                               .progress = 0,
                               .sandbox = pr->sandbox,
                               .child = &child};
  memset(&pr->proc, 0, sizeof(pr->proc));
  pr->proc.data = pr;
  pr->proc.on_done = on_proc_done;
  cap_proc_spawn(pr->loop, &pr->proc, &spec);
}

static void next(struct probe *pr) {
  char *ff = pr->ffmpeg;
  switch (pr->step) {
  case STEP_ENCODERS: {
    char *args[] = {ff, "-hide_banner", "-encoders", NULL};
    run(pr, args, 0);
    return;
  }
  case STEP_MUXERS: {
    char *args[] = {ff, "-hide_banner", "-muxers", NULL};
    run(pr, args, 0);
    return;
  }
  case STEP_HW:
    /* Test each hardware encoder once, in preset order. */
    for (; pr->hw_index < pr->set->n; pr->hw_index++) {
      struct cap_preset *pre = &pr->set->v[pr->hw_index];
      if (pre->hw_encoder == NULL || !pre->available)
        continue;
      if (!listed(pr->encoders, pre->hw_encoder))
        continue; /* Reported as missing by finish(). */
      char *args[] = {ff,
                      "-hide_banner",
                      "-nostdin",
                      "-loglevel",
                      "error",
                      "-f",
                      "lavfi",
                      "-i",
                      "color=c=black:s=256x256:d=0.2",
                      "-frames:v",
                      "2",
                      "-c:v",
                      pre->hw_encoder,
                      "-f",
                      "null",
                      "-",
                      NULL};
      run(pr, args, 1);
      return;
    }
    pr->step = STEP_DONE;
    /* fall through */
  case STEP_DONE:
    finish(pr);
    return;
  }
}

int cap_ffcaps_probe(uv_loop_t *loop, const char *ffmpeg, const struct cap_sandbox *sandbox,
                     struct cap_presets *set, cap_ffcaps_cb cb, void *arg) {
  struct probe *pr = xcalloc(1, sizeof(*pr));
  pr->loop = loop;
  pr->ffmpeg = xstrdup(ffmpeg);
  pr->sandbox = sandbox;
  pr->set = set;
  pr->cb = cb;
  pr->arg = arg;
  pr->step = STEP_ENCODERS;
  next(pr);
  return 0;
}
