#include "ladder.h"

#include "alloc.h"
#include "buf.h"
#include "container.h"
#include "jobcmd.h"
#include "log.h"
#include "metrics.h"
#include "mpd.h"
#include "preset.h"
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The package while ffmpeg writes it (watches, uploads, the backlog, the
 * state), then its end (the playlists and manifests after ffmpeg's exit,
 * or the deletion after a failure), at the bottom of this file. */

enum file_kind { F_MAP, F_SEG, F_PLAYLIST, F_MASTER };

/* A finished file waiting to be stored. */
struct cap_ladder_file {
  struct cap_ladder_file *next;
  struct cap_ladder_rend *r; /* NULL for the master. */
  enum file_kind kind;
  char local[96];  /* Under the job's temp directory. */
  char keyrel[96]; /* Under the output prefix. */
  uint64_t size;
  double duration;
};

/* Queues the finished file local (under the job's temp directory) to be
 * stored as keyrel under the prefix; segments and init segments count in
 * the backlog.  Fails the ladder when the file has gone. */
static void enqueue(struct cap_ladder *l, struct cap_ladder_rend *r, enum file_kind kind,
                    const char *local, const char *keyrel, double duration);
/* Reads temp file name (under the job's directory) whole into b, at most
 * a playlist's worth.  Returns 0 or a negative errno. */
static int read_local(struct cap_ladder *l, const char *name, struct cap_buf *b);
/* Returns prefix + rel, which the caller frees. */
static char *full_key(const struct cap_ladder *l, const char *rel);
/* Returns a slot with nothing under way, or NULL. */
static struct cap_ladder_slot *free_slot(struct cap_ladder *l);
/* Runs the ladder's next step on a later loop turn. */
static void schedule(struct cap_ladder *l);

/* The end: stops the deletes under way and counts them, and the keys
 * not yet deleted, in delete_failures; the cleanup is over. */
static void give_up(struct cap_ladder *l);
/* The end: queues each media playlist, marked VOD (0 or -errno). */
static int queue_playlists(struct cap_ladder *l);
/* Writes the master (and a DASH package's MPD before it) and queues them
 * (0 or -errno). */
static int queue_master(struct cap_ladder *l);
/* Starts deletes of what may have been stored, while slots are free; sets
 * l->cleaned once every one has ended. */
static void pump_deletes(struct cap_ladder *l);

/* A playlist of a day of 1 s segments is about 1 MiB; more is not ffmpeg's. */
#define PLAYLIST_MAX (4 * 1024 * 1024)

static const char *const state_names[CAP_LADDER_STATE__COUNT] = {
    "idle",   "running",  "finishing", "playlists", "master",
    "stored", "aborting", "deleting",  "removed"};

const char *cap_ladder_state_name(enum cap_ladder_state s) {
  return state_names[s];
}

#define TO(s) (1u << CAP_LADDER_##s)
static const unsigned next_states[CAP_LADDER_STATE__COUNT] = {
    [CAP_LADDER_IDLE] = TO(RUNNING) | TO(REMOVED),
    [CAP_LADDER_RUNNING] = TO(FINISHING) | TO(ABORTING),
    [CAP_LADDER_FINISHING] = TO(PLAYLISTS) | TO(ABORTING),
    [CAP_LADDER_PLAYLISTS] = TO(MASTER) | TO(ABORTING),
    [CAP_LADDER_MASTER] = TO(STORED) | TO(ABORTING),
    [CAP_LADDER_ABORTING] = TO(DELETING),
    [CAP_LADDER_DELETING] = TO(REMOVED),
};

/* The one place the ladder changes state: checked against the table and
 * logged at debug level. */
static void move(struct cap_ladder *l, enum cap_ladder_state to) {
  int allowed = (next_states[l->state] & (1u << to)) != 0;
  assert(allowed);
  struct cap_log_rec *r = cap_log_begin(allowed ? CAP_LOG_DEBUG : CAP_LOG_ERROR, "ladder.state");
  cap_log_str(r, "job_id", l->job_id);
  cap_log_str(r, "from", state_names[l->state]);
  cap_log_str(r, "to", state_names[to]);
  cap_log_end(r);
  l->state = to;
}

static int ended(const struct cap_ladder *l) {
  return l->state == CAP_LADDER_STORED || l->state == CAP_LADDER_REMOVED;
}

static void step(struct cap_ladder *l);

static void on_kick(uv_timer_t *t) {
  step(container_of(t, struct cap_ladder, kick));
}

/* Runs step() on a later loop turn: storage completions only record what
 * happened, so that nothing they are called from is freed under them. */
static void schedule(struct cap_ladder *l) {
  if (!uv_is_closing((uv_handle_t *)&l->kick))
    uv_timer_start(&l->kick, on_kick, 0, 0);
}

void cap_ladder_init(struct cap_ladder *l, const struct cap_ladder_ops *ops,
                     struct cap_objstore *os, struct cap_store *store,
                     const struct cap_ladderspec *spec, const struct cap_ladder_pick *pick,
                     int audio, const char *job_id, const char *dir, const char *prefix,
                     const struct cap_ladder_limits *lim) {
  memset(l, 0, sizeof(*l));
  l->ops = ops;
  l->objstore = os;
  l->store = store;
  l->spec = spec;
  snprintf(l->job_id, sizeof(l->job_id), "%s", job_id);
  snprintf(l->dir, sizeof(l->dir), "%s", dir);
  l->prefix = xstrdup(prefix);
  l->lim = *lim;
  if (l->lim.uploads < 1 || l->lim.uploads > CAP_LADDER_SLOTS_MAX)
    l->lim.uploads = l->lim.uploads < 1 ? 1 : CAP_LADDER_SLOTS_MAX;
  for (size_t i = 0; i < pick->nrungs; i++)
    snprintf(l->rends[l->nrends++].name, CAP_LADDER_NAME_MAX + 1, "%s", pick->rungs[i].name);
  if (audio) {
    snprintf(l->rends[l->nrends].name, CAP_LADDER_NAME_MAX + 1, "audio");
    l->rends[l->nrends++].audio = 1;
    l->has_audio = 1;
  }
  for (size_t i = 0; i < l->nrends; i++) {
    l->rends[i].ladder = l;
    l->rends[i].height = i < pick->nrungs ? pick->rungs[i].height : 0;
  }
  for (size_t i = 0; i < CAP_LADDER_SLOTS_MAX; i++)
    l->slots[i].ladder = l;
  snprintf(l->master_key_rel, sizeof(l->master_key_rel), CAP_LADDER_MASTER_NAME);
}

/* --- The backlog, and pausing ffmpeg ------------------------------------ */

static void log_pause(const struct cap_ladder *l, const char *event) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, event);
  cap_log_str(r, "job_id", l->job_id);
  cap_log_int(r, "backlog_files", (long long)l->backlog_files);
  cap_log_int(r, "backlog_bytes", (long long)l->backlog_bytes);
  cap_log_int(r, "uploads_in_flight", l->in_flight);
  cap_log_end(r);
}

/* Pauses ffmpeg while more finished files wait than the limits allow, and
 * lets it go on once half of them have gone, so that it does not stop and
 * start at every segment. */
static void check_backlog(struct cap_ladder *l) {
  int over =
      l->backlog_files > (size_t)l->lim.backlog_files || l->backlog_bytes > l->lim.backlog_bytes;
  int low = l->backlog_files <= (size_t)l->lim.backlog_files / 2 &&
            l->backlog_bytes <= l->lim.backlog_bytes / 2;
  if (!l->paused && over && l->state == CAP_LADDER_RUNNING) {
    l->paused = 1;
    cap_metrics_inc(CAP_M_LADDER_PAUSES, NULL);
    log_pause(l, "ladder.paused");
    l->ops->pause(l, 1);
  } else if (l->paused && (low || l->state != CAP_LADDER_RUNNING)) {
    l->paused = 0;
    log_pause(l, "ladder.resumed");
    if (l->state == CAP_LADDER_RUNNING)
      l->ops->pause(l, 0);
  }
}

/* --- Failing ------------------------------------------------------------- */

static void close_watches(struct cap_ladder *l);

/* Stops everything under way and starts the cleanup; told says whether
 * the owner has to hear of it (a failure of the ladder's own). */
static void begin_abort(struct cap_ladder *l, const struct cap_storage_err *err, int tell) {
  if (ended(l) || l->state == CAP_LADDER_ABORTING || l->state == CAP_LADDER_DELETING)
    return;
  l->err = *err;
  if (l->state == CAP_LADDER_IDLE) {
    move(l, CAP_LADDER_REMOVED);
    l->cleaned = 1;
    return;
  }
  move(l, CAP_LADDER_ABORTING);
  check_backlog(l);
  close_watches(l);
  while (l->head) {
    struct cap_ladder_file *f = l->head;
    l->head = f->next;
    free(f);
  }
  l->tail = NULL;
  for (int i = 0; i < l->lim.uploads; i++)
    if (l->slots[i].busy && !l->slots[i].finished && !l->slots[i].deleting)
      cap_objstore_abort(&l->slots[i].out, err->code, err->msg);
  if (tell)
    l->ops->failed(l, &l->err);
  schedule(l);
}

static void fail_local(struct cap_ladder *l, const char *what, int sys_errno) {
  struct cap_storage_err e;
  memset(&e, 0, sizeof(e));
  cap_storage_err_set(&e, CAP_STORAGE_E_LOCAL, CAP_STORAGE_OUTPUT, "The ladder's %s: %s", what,
                      sys_errno ? strerror(sys_errno) : "unexpected content");
  e.sys_errno = sys_errno;
  snprintf(e.detail, sizeof(e.detail), "ladder_local");
  begin_abort(l, &e, 1);
}

void cap_ladder_abort(struct cap_ladder *l, enum cap_storage_errc why, const char *msg) {
  struct cap_storage_err e;
  memset(&e, 0, sizeof(e));
  cap_storage_err_set(&e, why, CAP_STORAGE_OUTPUT, "%s", msg ? msg : "The job ended");
  begin_abort(l, &e, 0);
}

/* --- Finding finished files ---------------------------------------------- */

/* Queues a finished file, named relative to the job's temp directory. */
static void enqueue(struct cap_ladder *l, struct cap_ladder_rend *r, enum file_kind kind,
                    const char *local, const char *keyrel, double duration) {
  char path[200];
  snprintf(path, sizeof(path), "%s/%s", l->dir, local);
  int64_t size = cap_store_tmp_size(l->store, path);
  if (size < 0) {
    fail_local(l, "file went missing before it was stored", (int)-size);
    return;
  }
  struct cap_ladder_file *f = xcalloc(1, sizeof(*f));
  f->r = r;
  f->kind = kind;
  snprintf(f->local, sizeof(f->local), "%s", local);
  snprintf(f->keyrel, sizeof(f->keyrel), "%s", keyrel);
  f->size = (uint64_t)size;
  f->duration = duration;
  if (l->tail)
    l->tail->next = f;
  else
    l->head = f;
  l->tail = f;
  if (kind == F_SEG || kind == F_MAP) {
    l->backlog_files++;
    l->backlog_bytes += f->size;
  }
}

/* Reads at most max bytes of temp file name (under the job's directory)
 * into b; with whole, a longer file is -EFBIG. */
static int read_part(struct cap_ladder *l, const char *name, struct cap_buf *b, size_t max,
                     int whole) {
  char path[200], chunk[16384];
  snprintf(path, sizeof(path), "%s/%s", l->dir, name);
  int fd = cap_store_tmp_open(l->store, path);
  if (fd < 0)
    return fd;
  ssize_t n;
  while ((n = read(fd, chunk, sizeof(chunk))) > 0 && b->len + (size_t)n <= max)
    cap_buf_append(b, chunk, (size_t)n);
  if (n > 0 && !whole)
    cap_buf_append(b, chunk, max - b->len);
  int rc = n < 0 ? -errno : n > 0 && whole ? -EFBIG : 0;
  close(fd);
  return rc;
}

static int read_local(struct cap_ladder *l, const char *name, struct cap_buf *b) {
  return read_part(l, name, b, PLAYLIST_MAX, 1);
}

/* What the manifests say of a rendition beyond ffmpeg's master (pixel
 * aspect, frame rate, audio channels and rate) is read from the files it
 * wrote: the init segment, and the first media segment's fragment header.
 * Only their heads are read; what cannot be read is left out of the
 * manifests, not guessed. */
#define MEDIA_HEAD_MAX (64 * 1024)

static void read_track(struct cap_ladder *l, struct cap_ladder_rend *r, const char *rel) {
  struct cap_buf b;
  cap_buf_init(&b);
  if (read_part(l, rel, &b, MEDIA_HEAD_MAX, 0) == 0 && b.data &&
      cap_isobmff_init((const uint8_t *)b.data, b.len, &r->track) == 0)
    r->has_track = 1;
  cap_buf_free(&b);
}

static void read_frame_rate(struct cap_ladder *l, struct cap_ladder_rend *r, const char *rel) {
  struct cap_buf b;
  cap_buf_init(&b);
  if (read_part(l, rel, &b, MEDIA_HEAD_MAX, 0) == 0 && b.data &&
      cap_isobmff_frame_rate((const uint8_t *)b.data, b.len, &r->track, &r->fps_num, &r->fps_den) !=
          0)
    r->fps_num = r->fps_den = 0;
  cap_buf_free(&b);
}

struct seg_ctx {
  struct cap_ladder *l;
  struct cap_ladder_rend *r;
  int bad; /* The playlist named a segment ffmpeg would not have written. */
};

/* Queues a segment the playlist newly lists.  ffmpeg names them seg_%05d
 * from 0 in playlist order (jobcmd.c); the cleanup after a failure and a
 * DASH package's template count on it, so another name is not ffmpeg's
 * and nothing after it is taken. */
static void on_segment(void *arg, size_t index, const char *uri, double duration) {
  struct seg_ctx *c = arg;
  char rel[96], want[32];
  snprintf(want, sizeof(want), "seg_%05zu.%s", index, cap_ladderspec_segext(c->l->spec));
  if (c->bad || strcmp(uri, want) != 0) {
    c->bad = 1;
    return;
  }
  snprintf(rel, sizeof(rel), "%s/%s", c->r->name, uri);
  if (index == 0 && c->r->has_track && c->r->track.video)
    read_frame_rate(c->l, c->r, rel);
  enqueue(c->l, c->r, F_SEG, rel, rel, duration);
}

/* Reads rendition r's playlist and queues the segments it lists that were
 * not seen before (and its init segment, first, when it first appears). */
static void scan(struct cap_ladder *l, struct cap_ladder_rend *r) {
  struct cap_buf b;
  struct cap_m3u8_media info;
  struct seg_ctx c = {l, r, 0};
  char name[64];
  cap_buf_init(&b);
  snprintf(name, sizeof(name), "%s/index.m3u8", r->name);
  int rc = read_local(l, name, &b);
  if (rc == -ENOENT) {
    cap_buf_free(&b);
    return; /* Not written yet. */
  }
  if (rc == 0) {
    /* A first pass only reads the map, which goes up before the segments. */
    rc = cap_m3u8_parse_media(b.data ? b.data : "", b.len, SIZE_MAX, NULL, NULL, &info);
    if (rc == 0 && info.map[0] && r->map[0] == '\0') {
      char rel[96];
      snprintf(r->map, sizeof(r->map), "%s", info.map);
      snprintf(rel, sizeof(rel), "%s/%s", r->name, r->map);
      read_track(l, r, rel);
      enqueue(l, r, F_MAP, rel, rel, 0);
    }
    if (rc == 0)
      rc = cap_m3u8_parse_media(b.data, b.len, r->seen, on_segment, &c, &info);
  }
  cap_buf_free(&b);
  if (rc != 0 || c.bad) {
    fail_local(l,
               c.bad ? "playlist names a segment ffmpeg would not have written"
                     : "playlist could not be read",
               rc == -EINVAL || rc == 0 ? 0 : -rc);
    return;
  }
  r->seen = info.nsegs;
  r->endlist = info.endlist;
  r->version = info.version;
  check_backlog(l);
  schedule(l);
}

static void on_watch(uv_fs_event_t *w, const char *filename, int events, int status) {
  struct cap_ladder_rend *r = container_of(w, struct cap_ladder_rend, watch);
  (void)events;
  if (status < 0 || filename == NULL || strcmp(filename, "index.m3u8") != 0)
    return;
  if (r->ladder->state == CAP_LADDER_RUNNING)
    scan(r->ladder, r);
}

/* --- Handles ------------------------------------------------------------- */

static void finish_if_quiet(struct cap_ladder *l);

static void on_handle_closed(uv_handle_t *h) {
  struct cap_ladder *l = h->data;
  l->handles_open--;
  finish_if_quiet(l);
}

static void close_watches(struct cap_ladder *l) {
  for (size_t i = 0; i < l->nrends; i++) {
    if (!l->rends[i].watching)
      continue;
    l->rends[i].watching = 0;
    uv_fs_event_stop(&l->rends[i].watch);
    uv_close((uv_handle_t *)&l->rends[i].watch, on_handle_closed);
  }
}

int cap_ladder_start(uv_loop_t *loop, struct cap_ladder *l) {
  char rel[128], path[4096];
  int rc = uv_timer_init(loop, &l->kick);
  if (rc != 0)
    return rc;
  l->kick.data = l;
  l->handles_open = 1;
  for (size_t i = 0; i < l->nrends && rc == 0; i++) {
    struct cap_ladder_rend *r = &l->rends[i];
    snprintf(rel, sizeof(rel), "%s/%s", l->dir, r->name);
    rc = cap_store_tmp_mkdir(l->store, rel);
    if (rc == 0)
      rc = cap_store_tmp_path(l->store, rel, path, sizeof(path));
    if (rc == 0)
      rc = uv_fs_event_init(loop, &r->watch);
    if (rc != 0)
      break;
    r->watch.data = l;
    r->watching = 1;
    l->handles_open++;
    rc = uv_fs_event_start(&r->watch, on_watch, path, 0);
  }
  if (rc != 0) {
    close_watches(l);
    uv_close((uv_handle_t *)&l->kick, on_handle_closed);
    l->state = CAP_LADDER_REMOVED; /* Never ran: nothing to clean up or report. */
    l->done_called = 1;
    return rc;
  }
  move(l, CAP_LADDER_RUNNING);
  return 0;
}

/* --- Uploads and deletes ------------------------------------------------- */

static const char *content_type(const struct cap_ladder_file *f) {
  const char *dot = strrchr(f->local, '.');
  return cap_preset_content_type(dot ? dot + 1 : "");
}

static void account(struct cap_ladder *l, const struct cap_ladder_file *f, uint64_t bytes) {
  struct cap_ladder_rend *r = f->r;
  l->objects++;
  l->bytes += bytes;
  cap_metrics_inc(CAP_M_LADDER_OBJECTS, NULL);
  if (f->kind != F_SEG || r == NULL)
    return;
  r->segments++;
  r->bytes += bytes;
  r->seconds += f->duration;
  if (f->duration > 0 && (double)bytes * 8 / f->duration > r->peak_bps)
    r->peak_bps = (double)bytes * 8 / f->duration;
}

static void on_stored(struct cap_objout *out, const struct cap_storage_err *err) {
  struct cap_ladder_slot *s = out->data;
  struct cap_ladder *l = s->ladder;
  s->finished = 1;
  l->in_flight--;
  if (err == NULL)
    account(l, s->file, out->bytes);
  if (s->file->kind == F_SEG || s->file->kind == F_MAP) {
    l->backlog_files--;
    l->backlog_bytes -= s->file->size;
  }
  if (err && err->code != CAP_STORAGE_E_CANCELED && l->state != CAP_LADDER_ABORTING)
    begin_abort(l, err, 1);
  schedule(l);
}

/* Lets go of a slot whose completion has run (on a later turn than it). */
static void reap(struct cap_ladder_slot *s) {
  struct cap_ladder *l = s->ladder;
  if (!s->finished)
    return;
  if (!s->deleting) {
    char path[200];
    snprintf(path, sizeof(path), "%s/%s", l->dir, s->file->local);
    cap_store_discard(l->store, path);
    cap_objstore_free_output(&s->out);
    free(s->file);
  }
  free(s->key);
  s->key = NULL;
  s->file = NULL;
  s->busy = s->finished = s->deleting = 0;
  if (l->state == CAP_LADDER_RUNNING || l->state == CAP_LADDER_ABORTING)
    check_backlog(l);
}

static char *full_key(const struct cap_ladder *l, const char *rel) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, l->prefix);
  cap_buf_puts(&b, rel);
  return cap_buf_steal(&b);
}

static void start_upload(struct cap_ladder *l, struct cap_ladder_slot *s,
                         struct cap_ladder_file *f) {
  char path[200];
  s->busy = 1;
  s->file = f;
  s->key = full_key(l, f->keyrel);
  cap_objstore_output_init(&s->out, l->objstore, s->key);
  s->out.content_type = content_type(f);
  s->out.cache_control = f->kind == F_SEG || f->kind == F_MAP ? l->spec->segment_cache_control
                                                              : l->spec->playlist_cache_control;
  s->out.on_done = on_stored;
  s->out.data = s;
  l->in_flight++;
  /* The owner records the key before the store can hold it: a crash from
   * here on leaves a name the next start can delete. */
  if (l->ops->storing)
    l->ops->storing(l, s->key);
  snprintf(path, sizeof(path), "%s/%s", l->dir, f->local);
  cap_objstore_put_file(&s->out, path, f->size);
}

static struct cap_ladder_slot *free_slot(struct cap_ladder *l) {
  for (int i = 0; i < l->lim.uploads; i++)
    if (!l->slots[i].busy)
      return &l->slots[i];
  return NULL;
}

/* Starts uploads of queued files while there is a slot for them. */
static void pump(struct cap_ladder *l) {
  struct cap_ladder_slot *s;
  while (l->head && (s = free_slot(l)) != NULL) {
    struct cap_ladder_file *f = l->head;
    l->head = f->next;
    if (l->head == NULL)
      l->tail = NULL;
    f->next = NULL;
    start_upload(l, s, f);
  }
}

/* 1 when every rendition's playlist said ENDLIST and all it lists is stored. */
static int complete(const struct cap_ladder *l) {
  for (size_t i = 0; i < l->nrends; i++)
    if (!l->rends[i].endlist || l->rends[i].segments != l->rends[i].seen)
      return 0;
  return 1;
}

void cap_ladder_finish(struct cap_ladder *l) {
  if (l->state != CAP_LADDER_RUNNING)
    return;
  /* The last rewrite of a playlist may not have been seen yet (inotify
   * delivers on a later turn), so read each one a last time. */
  for (size_t i = 0; i < l->nrends && l->state == CAP_LADDER_RUNNING; i++)
    scan(l, &l->rends[i]);
  if (l->state != CAP_LADDER_RUNNING)
    return;
  move(l, CAP_LADDER_FINISHING);
  check_backlog(l);
  close_watches(l);
  schedule(l);
}

/* --- Driving it ---------------------------------------------------------- */

static int quiet(const struct cap_ladder *l) {
  return l->head == NULL && l->in_flight == 0;
}

/* Moves on when what the current state waits for is over. */
static void advance(struct cap_ladder *l) {
  if (l->state == CAP_LADDER_FINISHING && quiet(l)) {
    if (!complete(l)) {
      fail_local(l, "renditions ended without their last playlist", 0);
      return;
    }
    move(l, CAP_LADDER_PLAYLISTS);
    int rc = queue_playlists(l);
    if (rc != 0)
      fail_local(l, "playlists could not be written", -rc);
  } else if (l->state == CAP_LADDER_PLAYLISTS && quiet(l)) {
    move(l, CAP_LADDER_MASTER);
    int rc = queue_master(l);
    if (rc != 0)
      fail_local(l, "master playlist could not be written", -rc);
  } else if (l->state == CAP_LADDER_MASTER && quiet(l)) {
    move(l, CAP_LADDER_STORED);
    l->cleaned = 1;
  } else if (l->state == CAP_LADDER_ABORTING && l->in_flight == 0) {
    move(l, CAP_LADDER_DELETING);
  }
}

/* In a hurry (the server stopping), gives up a cleanup past its deadline;
 * otherwise makes sure a step runs when the deadline comes. */
static void check_hurry(struct cap_ladder *l) {
  if (l->hurry_deadline == 0 || ended(l) || uv_is_closing((uv_handle_t *)&l->kick))
    return;
  uint64_t now = uv_now(l->kick.loop);
  if (now < l->hurry_deadline) {
    if (!uv_is_active((uv_handle_t *)&l->kick))
      uv_timer_start(&l->kick, on_kick, l->hurry_deadline - now, 0);
    return;
  }
  /* Past it.  Uploads still aborting end by themselves and step again. */
  if (l->state == CAP_LADDER_DELETING && !l->cleaned) {
    give_up(l);
    schedule(l);
  }
}

void cap_ladder_hurry(struct cap_ladder *l, uint64_t within_ms) {
  if (l->state == CAP_LADDER_IDLE || ended(l) || l->hurry_deadline)
    return;
  l->hurry_deadline = uv_now(l->kick.loop) + within_ms;
  check_hurry(l);
}

static void step(struct cap_ladder *l) {
  enum cap_ladder_state before;
  for (int i = 0; i < CAP_LADDER_SLOTS_MAX; i++)
    reap(&l->slots[i]);
  if (l->state == CAP_LADDER_DELETING)
    check_hurry(l);
  do {
    before = l->state;
    if (l->state == CAP_LADDER_DELETING)
      pump_deletes(l);
    else if (l->state != CAP_LADDER_ABORTING && !ended(l))
      pump(l);
    advance(l);
  } while (l->state != before);
  if (l->state == CAP_LADDER_DELETING && l->cleaned)
    move(l, CAP_LADDER_REMOVED);
  if (ended(l) && l->cleaned && l->in_flight == 0) {
    close_watches(l);
    if (!uv_is_closing((uv_handle_t *)&l->kick))
      uv_close((uv_handle_t *)&l->kick, on_handle_closed);
    return;
  }
  check_hurry(l);
}

/* Tells the owner once everything is over and every handle closed: from a
 * close callback, never from inside a cap_ladder_* call. */
static void finish_if_quiet(struct cap_ladder *l) {
  if (l->handles_open > 0 || l->done_called || !ended(l))
    return;
  l->done_called = 1;
  struct cap_log_rec *r =
      cap_log_begin(l->state == CAP_LADDER_STORED ? CAP_LOG_INFO : CAP_LOG_WARN, "ladder.done");
  cap_log_str(r, "job_id", l->job_id);
  cap_log_str(r, "state", state_names[l->state]);
  cap_log_int(r, "objects", (long long)l->objects);
  cap_log_int(r, "bytes", (long long)l->bytes);
  if (l->state == CAP_LADDER_REMOVED)
    cap_log_int(r, "delete_failures", l->delete_failures);
  cap_log_end(r);
  l->ops->done(l, l->state == CAP_LADDER_STORED ? NULL : &l->err);
}

int cap_ladder_live(const struct cap_ladder *l) {
  return l->state != CAP_LADDER_IDLE && !ended(l);
}

int cap_ladder_busy(const struct cap_ladder *l) {
  return l->handles_open > 0 || l->in_flight > 0;
}

void cap_ladder_free(struct cap_ladder *l) {
  assert(!cap_ladder_busy(l));
  for (int i = 0; i < CAP_LADDER_SLOTS_MAX; i++)
    reap(&l->slots[i]);
  while (l->head) {
    struct cap_ladder_file *f = l->head;
    l->head = f->next;
    free(f);
  }
  for (size_t i = 0; i < l->nrends; i++) {
    free(l->rends[i].dur_us);
    l->rends[i].dur_us = NULL;
  }
  free(l->prefix);
  l->prefix = NULL;
}

size_t cap_ladder_segments(const struct cap_ladder *l) {
  size_t n = 0;
  for (size_t i = 0; i < l->nrends; i++)
    n += l->rends[i].segments;
  return n;
}

/* The end of a ladder's package: after ffmpeg's exit, the media playlists
 * and the manifests; after a failure, the deletion of what may have been
 * stored.  The top of this file decides when; this part knows what. */

/* --- Deleting after a failure -------------------------------------------- */

static void on_deleted(struct cap_objdel *d, const struct cap_storage_err *err) {
  struct cap_ladder_slot *s = d->data;
  s->finished = 1;
  s->ladder->in_flight--;
  /* storage.delete_failed has logged which key; ladder.done counts them. */
  if (err)
    s->ladder->delete_failures++;
  schedule(s->ladder);
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

static void pump_deletes(struct cap_ladder *l) {
  struct cap_ladder_slot *s;
  char rel[128];
  while (!l->deletes_listed && (s = free_slot(l)) != NULL) {
    if (!next_delete(l, rel, sizeof(rel))) {
      l->deletes_listed = 1;
      break;
    }
    s->busy = 1;
    s->deleting = 1;
    s->key = full_key(l, rel);
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

static void give_up(struct cap_ladder *l) {
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
static int queue_playlists(struct cap_ladder *l) {
  for (size_t i = 0; i < l->nrends; i++) {
    struct cap_ladder_rend *r = &l->rends[i];
    struct cap_buf b;
    char name[64], out[64], key[64];
    size_t len;
    snprintf(name, sizeof(name), "%s/index.m3u8", r->name);
    cap_buf_init(&b);
    int rc = read_local(l, name, &b);
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
    enqueue(l, r, F_PLAYLIST, out, key, 0);
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
  read_local(l, CAP_JOBCMD_FFMASTER, &b);
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
                                   .nsegs = r->ndur,
                                   .sar_w = r->has_track ? r->track.sar_w : 0,
                                   .sar_h = r->has_track ? r->track.sar_h : 0,
                                   .fps_num = r->fps_num,
                                   .fps_den = r->fps_den,
                                   .sample_rate = r->has_track ? r->track.sample_rate : 0,
                                   .channels = r->has_track ? r->track.channels : 0};
  }
  struct cap_buf b;
  cap_buf_init(&b);
  cap_mpd_write(&b, l->spec->segment_s, reps, l->nrends);
  int rc = write_local(l, CAP_LADDER_MPD_NAME, b.data, b.len);
  cap_buf_free(&b);
  if (rc == 0) {
    l->mpd_started = 1;
    enqueue(l, NULL, F_MASTER, CAP_LADDER_MPD_NAME, CAP_LADDER_MPD_NAME, 0);
  }
  return rc;
}

static int queue_master(struct cap_ladder *l) {
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
                                     .codecs = r->codecs,
                                     .fps_num = r->fps_num,
                                     .fps_den = r->fps_den};
    n++;
  }
  struct cap_buf b;
  cap_buf_init(&b);
  const struct cap_ladder_rend *a = l->has_audio ? &l->rends[l->nrends - 1] : NULL;
  cap_m3u8_write_master(&b, version ? version : 6, v, n, a ? "audio/index.m3u8" : NULL,
                        a && a->has_track ? a->track.channels : 0);
  int rc = write_local(l, CAP_LADDER_MASTER_NAME, b.data, b.len);
  cap_buf_free(&b);
  if (rc == 0 && l->spec->package == CAP_LADDER_DASH)
    rc = queue_mpd(l);
  if (rc == 0) {
    l->master_started = 1;
    enqueue(l, NULL, F_MASTER, CAP_LADDER_MASTER_NAME, l->master_key_rel, 0);
  }
  return rc;
}
