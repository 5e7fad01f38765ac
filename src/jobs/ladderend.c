#include "ladder.h"

#include "alloc.h"
#include "buf.h"
#include "jobcmd.h"
#include "log.h"
#include "metrics.h"
#include "mpd.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The end of a ladder's package: after ffmpeg's exit, the media playlists
 * and the manifests; after a failure, the deletion of what may have been
 * stored.  ladder.c decides when; this file knows what. */

/* --- Deleting after a failure -------------------------------------------- */

static void on_deleted(struct cap_objdel *d, const struct cap_storage_err *err) {
  struct cap_ladder_slot *s = d->data;
  s->finished = 1;
  s->ladder->in_flight--;
  /* storage.delete_failed has logged which key; ladder.done counts them. */
  if (err)
    s->ladder->delete_failures++;
  cap_ladder_schedule(s->ladder);
}

/* The key relative to the prefix of the deletion's item i of rendition r:
 * its init segment, its segments, its playlist; 0 when r has no item i. */
static int delete_item(const struct cap_ladder *l, const struct cap_ladder_rend *r, size_t i,
                       char *rel, size_t n) {
  if (i == 0) {
    snprintf(rel, n, "%s/index.m3u8", r->name);
    return 1;
  }
  if (i == 1) {
    if (r->map[0] == '\0')
      return delete_item(l, r, 2, rel, n);
    snprintf(rel, n, "%s/%s", r->name, r->map);
    return 1;
  }
  /* ffmpeg names segments seg_%05d from 0, in the order its playlist lists them. */
  if (i - 2 >= r->seen)
    return 0;
  snprintf(rel, n, "%s/seg_%05zu.%s", r->name, i - 2, cap_ladderspec_segext(l->spec));
  return 1;
}

/* Returns the next key (relative) that may have been stored, or 0 when
 * every one has been handed out: the master first, so that no reader finds
 * a package whose parts are going away. */
static int next_delete(struct cap_ladder *l, char *rel, size_t n) {
  if (l->master_started) {
    l->master_started = 0;
    snprintf(rel, n, "%s", l->master_key_rel);
    return 1;
  }
  if (l->mpd_started) {
    l->mpd_started = 0;
    snprintf(rel, n, "%s", CAP_LADDER_MPD_NAME);
    return 1;
  }
  while (l->del_rend < l->nrends) {
    if (delete_item(l, &l->rends[l->del_rend], l->del_item++, rel, n))
      return 1;
    l->del_rend++;
    l->del_item = 0;
  }
  return 0;
}

void cap_ladder_pump_deletes(struct cap_ladder *l) {
  struct cap_ladder_slot *s;
  char rel[128];
  while (!l->deletes_listed && (s = cap_ladder_free_slot(l)) != NULL) {
    if (!next_delete(l, rel, sizeof(rel))) {
      l->deletes_listed = 1;
      break;
    }
    s->busy = 1;
    s->deleting = 1;
    s->key = cap_ladder_full_key(l, rel);
    cap_objstore_delete_init(&s->del, l->objstore, s->key);
    s->del.on_done = on_deleted;
    s->del.data = s;
    l->in_flight++;
    cap_metrics_inc(CAP_M_LADDER_DELETES, NULL);
    cap_objstore_delete(&s->del);
  }
  if (l->in_flight == 0 && l->deletes_listed)
    l->cleaned = 1;
}

void cap_ladder_give_up(struct cap_ladder *l) {
  char rel[128];
  int left = 0;
  for (int i = 0; i < l->lim.uploads; i++) {
    struct cap_ladder_slot *s = &l->slots[i];
    if (s->busy && s->deleting && !s->finished) {
      cap_objstore_cancel_delete(&s->del);
      s->finished = 1;
      l->in_flight--;
      left++;
    }
  }
  while (!l->deletes_listed && next_delete(l, rel, sizeof(rel)))
    left++;
  l->deletes_listed = 1;
  l->delete_failures += left;
  l->cleaned = l->in_flight == 0;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "ladder.cleanup_abandoned");
  cap_log_str(r, "job_id", l->job_id);
  cap_log_str(r, "prefix", l->prefix);
  cap_log_int(r, "keys_not_deleted", left);
  cap_log_str(r, "reason", "the server is stopping");
  cap_log_end(r);
}

/* --- The end: playlists and master --------------------------------------- */

/* Writes data to temp file name under the job's directory. */
static int write_local(struct cap_ladder *l, const char *name, const char *data, size_t len) {
  char path[200];
  snprintf(path, sizeof(path), "%s/%s", l->dir, name);
  cap_store_discard(l->store, path);
  int fd = cap_store_tmp_create(l->store, path);
  if (fd < 0)
    return fd;
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = n < 0 ? -errno : -EIO;
      close(fd);
      return e;
    }
    off += (size_t)n;
  }
  return close(fd) == 0 ? 0 : -errno;
}

struct dur_ctx {
  struct cap_ladder_rend *r;
  const char *ext;
  int bad;
};

/* Keeps a segment's duration for the MPD, whose $Number$ template names
 * segments as ffmpeg does here (seg_%05d from 0): a playlist naming them
 * otherwise cannot be described, and fails the package. */
static void on_duration(void *arg, size_t index, const char *uri, double duration) {
  struct dur_ctx *c = arg;
  char want[64];
  snprintf(want, sizeof(want), "seg_%05zu.%s", index, c->ext);
  if (strcmp(uri, want) != 0 || !(duration > 0) || duration > 86400) {
    c->bad = 1;
    return;
  }
  if (c->r->ndur == index) {
    c->r->dur_us = xrealloc(c->r->dur_us, (index + 1) * sizeof(*c->r->dur_us));
    c->r->dur_us[c->r->ndur++] = (uint64_t)(duration * CAP_MPD_TIMESCALE + 0.5);
  }
}

/* Reads rendition r's finished playlist (text) into its timeline. */
static int read_timeline(struct cap_ladder *l, struct cap_ladder_rend *r, const char *text,
                         size_t len) {
  struct dur_ctx c = {r, cap_ladderspec_segext(l->spec), 0};
  struct cap_m3u8_media info;
  r->ndur = 0;
  int rc = cap_m3u8_parse_media(text, len, 0, on_duration, &c, &info);
  return rc != 0 ? rc : c.bad || r->ndur != info.nsegs ? -EINVAL : 0;
}

/* Queues each media playlist, marked VOD, once all its segments are stored. */
int cap_ladder_queue_playlists(struct cap_ladder *l) {
  for (size_t i = 0; i < l->nrends; i++) {
    struct cap_ladder_rend *r = &l->rends[i];
    struct cap_buf b;
    char name[64], out[64], key[64];
    size_t len;
    snprintf(name, sizeof(name), "%s/index.m3u8", r->name);
    cap_buf_init(&b);
    int rc = cap_ladder_read_local(l, name, &b);
    if (rc != 0) {
      cap_buf_free(&b);
      return rc;
    }
    if (l->spec->package == CAP_LADDER_DASH)
      rc = read_timeline(l, r, b.data ? b.data : "", b.len);
    if (rc != 0) {
      cap_buf_free(&b);
      return rc;
    }
    char *vod = cap_m3u8_to_vod(b.data ? b.data : "", b.len, &len);
    cap_buf_free(&b);
    snprintf(out, sizeof(out), "%s/vod.m3u8", r->name);
    rc = write_local(l, out, vod, len);
    free(vod);
    if (rc != 0)
      return rc;
    snprintf(key, sizeof(key), "%s/index.m3u8", r->name);
    cap_ladder_enqueue(l, r, CAP_LADDER_F_PLAYLIST, out, key, 0);
  }
  return 0;
}

/* Fills each video rendition's resolution and codecs from ffmpeg's own
 * master, and its bandwidths from the segments stored (with the audio's:
 * a player fetches both). */
static void describe(struct cap_ladder *l) {
  struct cap_buf b;
  const struct cap_ladder_rend *a = l->has_audio ? &l->rends[l->nrends - 1] : NULL;
  cap_buf_init(&b);
  cap_ladder_read_local(l, CAP_JOBCMD_FFMASTER, &b);
  for (size_t i = 0; i < l->nrends; i++) {
    struct cap_ladder_rend *r = &l->rends[i];
    char uri[64];
    double avg = r->seconds > 0 ? (double)r->bytes * 8 / r->seconds : 0, peak = r->peak_bps;
    if (a && !r->audio) {
      avg += a->seconds > 0 ? (double)a->bytes * 8 / a->seconds : 0;
      peak += a->peak_bps;
    }
    r->bandwidth = (uint64_t)(peak + 0.999);
    r->average_bandwidth = (uint64_t)(avg + 0.999);
    snprintf(uri, sizeof(uri), "%s/index.m3u8", r->name);
    if (b.data)
      cap_m3u8_variant_info(b.data, b.len, uri, &r->width, &r->height, r->codecs,
                            sizeof(r->codecs));
  }
  cap_buf_free(&b);
}

/* Writes a DASH package's MPD over the segments stored, and queues it
 * ahead of the master (both name only what is stored already). */
static int queue_mpd(struct cap_ladder *l) {
  struct cap_mpd_rep reps[CAP_LADDER_RUNGS_MAX + 1];
  char codecs[CAP_LADDER_RUNGS_MAX + 1][96], init[CAP_LADDER_RUNGS_MAX + 1][128];
  char media[CAP_LADDER_RUNGS_MAX + 1][64];
  const char *audio_codecs = l->has_audio ? l->rends[l->nrends - 1].codecs : NULL;
  for (size_t i = 0; i < l->nrends; i++) {
    const struct cap_ladder_rend *r = &l->rends[i];
    /* ffmpeg's master gives a video variant the audio's codecs as well;
     * a DASH Representation carries one stream. */
    if (r->audio)
      snprintf(codecs[i], sizeof(codecs[i]), "%s", r->codecs);
    else
      cap_mpd_codecs_without(r->codecs, audio_codecs, codecs[i], sizeof(codecs[i]));
    snprintf(init[i], sizeof(init[i]), "%s/%s", r->name, r->map);
    snprintf(media[i], sizeof(media[i]), "%s/seg_$Number%%05d$.%s", r->name,
             cap_ladderspec_segext(l->spec));
    reps[i] = (struct cap_mpd_rep){.id = r->name,
                                   .audio = r->audio,
                                   .bandwidth = (uint64_t)(r->peak_bps + 0.999),
                                   .width = r->width,
                                   .height = r->height,
                                   .codecs = codecs[i],
                                   .init = init[i],
                                   .media = media[i],
                                   .dur = r->dur_us,
                                   .nsegs = r->ndur};
  }
  struct cap_buf b;
  cap_buf_init(&b);
  cap_mpd_write(&b, l->spec->segment_s, reps, l->nrends);
  int rc = write_local(l, CAP_LADDER_MPD_NAME, b.data, b.len);
  cap_buf_free(&b);
  if (rc == 0) {
    l->mpd_started = 1;
    cap_ladder_enqueue(l, NULL, CAP_LADDER_F_MASTER, CAP_LADDER_MPD_NAME, CAP_LADDER_MPD_NAME, 0);
  }
  return rc;
}

int cap_ladder_queue_master(struct cap_ladder *l) {
  struct cap_m3u8_variant v[CAP_LADDER_RUNGS_MAX];
  char uris[CAP_LADDER_RUNGS_MAX][64];
  size_t n = 0;
  int version = 0;
  describe(l);
  for (size_t i = 0; i < l->nrends; i++) {
    const struct cap_ladder_rend *r = &l->rends[i];
    if (r->version > version)
      version = r->version;
    if (r->audio)
      continue;
    snprintf(uris[n], sizeof(uris[n]), "%s/index.m3u8", r->name);
    v[n] = (struct cap_m3u8_variant){.uri = uris[n],
                                     .bandwidth = r->bandwidth,
                                     .average_bandwidth = r->average_bandwidth,
                                     .width = r->width,
                                     .height = r->height,
                                     .codecs = r->codecs};
    n++;
  }
  struct cap_buf b;
  cap_buf_init(&b);
  cap_m3u8_write_master(&b, version ? version : 6, v, n, l->has_audio ? "audio/index.m3u8" : NULL);
  int rc = write_local(l, CAP_LADDER_MASTER_NAME, b.data, b.len);
  cap_buf_free(&b);
  if (rc == 0 && l->spec->package == CAP_LADDER_DASH)
    rc = queue_mpd(l);
  if (rc == 0) {
    l->master_started = 1;
    cap_ladder_enqueue(l, NULL, CAP_LADDER_F_MASTER, CAP_LADDER_MASTER_NAME, l->master_key_rel, 0);
  }
  return rc;
}
