#ifndef CAP_LADDER_H
#define CAP_LADDER_H

#include "isobmff.h"
#include "ladderspec.h"
#include "m3u8.h"
#include "objstore.h"

#include <stdint.h>
#include <uv.h>

/* A ladder's package on its way into the object store, while ffmpeg is
 * still writing it.  ffmpeg's hls muxer writes each rendition into its
 * own directory under the job's temp directory, every file first as
 * NAME.tmp and then renamed, and rewrites the rendition's playlist after
 * each segment.  An inotify watch on each directory (uv_fs_event) sees
 * the playlist renamed into place; the segments it newly lists are
 * complete, so they are uploaded (a few at once) and deleted locally once
 * stored.  When ffmpeg has exited, the media playlists follow their
 * segments, and a master written here (bandwidths measured from what was
 * stored) goes last: a reader of the bucket never finds a playlist that
 * names a missing object.  A DASH package adds an MPD over the same
 * segments (mpd.c), stored with the master once the playlists are.
 *
 * The local backlog is bounded: when more finished files wait than the
 * limits allow, the owner is asked to pause ffmpeg (SIGSTOP), and to let
 * it go on once half of them have gone.  On failure every object the job
 * may have stored is deleted before the owner hears of the end. */

struct cap_ladder;
struct cap_store;

/* Where a package's manifests go, under its prefix. */
#define CAP_LADDER_MASTER_NAME "master.m3u8"
#define CAP_LADDER_MPD_NAME    "manifest.mpd"

struct cap_ladder_ops {
  /* stop 1: pause the writer (uploads fell behind); 0: let it go on. */
  void (*pause)(struct cap_ladder *l, int stop);
  /* The ladder cannot go on (an upload failed for good, ffmpeg wrote
   * something that is not a playlist): the owner stops ffmpeg.  The
   * cleanup follows by itself.  Not called after cap_ladder_abort. */
  void (*failed)(struct cap_ladder *l, const struct cap_storage_err *err);
  /* It is over, with nothing open: the package is stored (err NULL), or
   * it failed and what it may have stored has been deleted.  Runs once,
   * never from inside a cap_ladder_* call. */
  void (*done)(struct cap_ladder *l, const struct cap_storage_err *err);
  /* An upload of key (the full key) is about to start (may be NULL). */
  void (*storing)(struct cap_ladder *l, const char *key);
};

enum cap_ladder_state {
  CAP_LADDER_IDLE,      /* Set up, not started. */
  CAP_LADDER_RUNNING,   /* ffmpeg writes; segments go up as playlists list them. */
  CAP_LADDER_FINISHING, /* ffmpeg has exited: the last segments go up. */
  CAP_LADDER_PLAYLISTS, /* The media playlists go up. */
  CAP_LADDER_MASTER,    /* The master (and a DASH package's MPD) go up. */
  CAP_LADDER_STORED,    /* Everything is stored. */
  CAP_LADDER_ABORTING,  /* Failed: the uploads under way are stopping. */
  CAP_LADDER_DELETING,  /* Failed: what may have been stored is deleted. */
  CAP_LADDER_REMOVED,   /* Failed, and cleaned up. */
  CAP_LADDER_STATE__COUNT
};

struct cap_ladder_limits {
  int uploads;       /* Objects stored at once, 1-32. */
  int backlog_files; /* Finished files waiting that pause ffmpeg. */
  uint64_t backlog_bytes;
};

/* One rendition: a video rung, or the audio. */
struct cap_ladder_rend {
  struct cap_ladder *ladder;
  char name[CAP_LADDER_NAME_MAX + 1];
  int audio;
  uv_fs_event_t watch;
  int watching; /* watch was initialised and is not closed yet. */
  size_t seen;  /* Segments taken from its playlist. */
  char map[64]; /* Its init segment (fMP4), once the playlist names it. */
  int endlist;  /* Its playlist said ENDLIST. */
  int version;
  /* What was stored. */
  size_t segments;
  uint64_t bytes; /* Segment bytes (init excluded). */
  double seconds, peak_bps;
  uint64_t bandwidth, average_bandwidth; /* For the master: with the audio's. */
  int width, height;
  char codecs[96];
  /* A DASH package's timeline: each segment's duration (microseconds),
   * read from the finished playlist; NULL for HLS. */
  uint64_t *dur_us;
  size_t ndur;
  /* Read from its fMP4 files (init segment, first fragment) when it has
   * them; fps_num is 0 when the frame rate is unknown or not constant. */
  struct cap_isobmff_track track;
  int has_track;
  uint32_t fps_num, fps_den;
};

#define CAP_LADDER_SLOTS_MAX 32

/* One upload or delete under way. */
struct cap_ladder_slot {
  struct cap_ladder *ladder;
  int busy;     /* Under way. */
  int finished; /* Its completion ran; freed on the next turn. */
  int deleting;
  struct cap_ladder_file *file;
  char *key;
  struct cap_objout out;
  struct cap_objdel del;
};

struct cap_ladder {
  const struct cap_ladder_ops *ops;
  enum cap_ladder_state state; /* Written only by ladder.c's move(). */
  struct cap_objstore *objstore;
  struct cap_store *store;
  const struct cap_ladderspec *spec; /* Borrowed from the job. */
  char job_id[40];
  char dir[64]; /* The job's temp directory, in the scratch store. */
  char *prefix; /* The output prefix, ending in '/'. */
  struct cap_ladder_limits lim;
  struct cap_ladder_rend rends[CAP_LADDER_RUNGS_MAX + 1];
  size_t nrends; /* Video rungs first, then the audio when there is any. */
  int has_audio;
  /* Files waiting to be stored, oldest first. */
  struct cap_ladder_file *head, *tail;
  size_t backlog_files;
  uint64_t backlog_bytes;
  int paused;
  struct cap_ladder_slot slots[CAP_LADDER_SLOTS_MAX];
  int in_flight;
  uv_timer_t kick;  /* Runs the next step on a later loop turn. */
  int handles_open; /* Watches and the kick timer not yet closed. */
  /* Deletion after a failure: the rendition and the item reached. */
  size_t del_rend, del_item;
  int deletes_listed;              /* Every key has been handed to a delete. */
  int delete_failures;             /* Keys that may still be stored: deletes failed or given up. */
  uint64_t hurry_deadline;         /* Loop time past which the cleanup gives up; 0: none. */
  int master_started, mpd_started; /* Their uploads began: a failure deletes them first. */
  /* Results. */
  size_t objects;
  uint64_t bytes;
  char master_key_rel[32];
  struct cap_storage_err err;
  int cleaned; /* The deletion after a failure has finished. */
  int done_called;
  void *data;
};

/* Readies l for a job's package: spec and pick say which renditions there
 * are (audio 1 adds the audio rendition), dir is the job's temp directory
 * (made already), prefix the output prefix (copied).  Nothing starts yet. */
void cap_ladder_init(struct cap_ladder *l, const struct cap_ladder_ops *ops,
                     struct cap_objstore *os, struct cap_store *store,
                     const struct cap_ladderspec *spec, const struct cap_ladder_pick *pick,
                     int audio, const char *job_id, const char *dir, const char *prefix,
                     const struct cap_ladder_limits *lim);
/* Makes each rendition's directory and starts watching it, before ffmpeg
 * starts.  Returns 0 or a negative errno (nothing is left watching). */
int cap_ladder_start(uv_loop_t *loop, struct cap_ladder *l);
/* ffmpeg exited 0: store the rest, the media playlists and the master;
 * ops->done follows. */
void cap_ladder_finish(struct cap_ladder *l);
/* The job failed or was canceled: stop the uploads, delete what may have
 * been stored, then ops->done with an error of code why and msg.  Does
 * nothing once the ladder has ended. */
void cap_ladder_abort(struct cap_ladder *l, enum cap_storage_errc why, const char *msg);
/* The server is stopping: a cleanup under way (or to come) gets within_ms
 * more from now, then gives up on what it has not deleted (counted in
 * delete_failures and logged), so that a bucket out of reach cannot hold
 * the server's exit.  Uploads are aborted as for any job. */
void cap_ladder_hurry(struct cap_ladder *l, uint64_t within_ms);
/* 1 from the start until everything is stored or, after a failure,
 * deleted: while the ladder may still write or delete under its prefix. */
int cap_ladder_live(const struct cap_ladder *l);
/* 1 while uploads, deletes or handles are still open. */
int cap_ladder_busy(const struct cap_ladder *l);
/* Releases what l holds; only when not busy. */
void cap_ladder_free(struct cap_ladder *l);
/* Segments stored so far, over every rendition. */
size_t cap_ladder_segments(const struct cap_ladder *l);
const char *cap_ladder_state_name(enum cap_ladder_state s);

#endif
