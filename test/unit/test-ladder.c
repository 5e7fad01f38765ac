/* The ladder packager on a private loop, over the file store, with this
 * test playing ffmpeg's hls muxer: it writes segments and playlists into
 * the rendition directories the way ffmpeg does (NAME.tmp, then a rename)
 * and checks what reaches the store, when ffmpeg is paused, and that a
 * failure takes back everything stored. */
#include "ladder.h"

#include "check.h"
#include "jobcmd.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

struct fixture {
  uv_loop_t loop;
  char dir[64];
  struct cap_store store;
  struct cap_objstore os;
  struct cap_ladderspec spec;
  struct cap_ladder_pick pick;
  struct cap_ladder l;
  int pauses, resumes, failed, done;
  enum cap_storage_errc done_code;
  /* A store that holds puts back: the test lets them through. */
  struct cap_objout *held[64];
  const char *held_tmp[64];
  uint64_t held_size[64];
  int nheld;
};

static struct fixture *F;
static struct cap_objstore_ops slow_ops;

static void on_pause(struct cap_ladder *l, int stop) {
  (void)l;
  if (stop)
    F->pauses++;
  else
    F->resumes++;
}

static void on_failed(struct cap_ladder *l, const struct cap_storage_err *err) {
  (void)l;
  (void)err;
  F->failed++;
}

static void on_done(struct cap_ladder *l, const struct cap_storage_err *err) {
  (void)l;
  F->done++;
  F->done_code = err ? err->code : CAP_STORAGE_OK;
}

static const struct cap_ladder_ops ops = {.pause = on_pause, .failed = on_failed, .done = on_done};

/* Deletes that never answer: a bucket out of reach. */
static int held_deletes, canceled_deletes;
static void stuck_delete(struct cap_objdel *d) {
  (void)d;
  held_deletes++;
}
static void stuck_cancel(struct cap_objdel *d) {
  (void)d;
  canceled_deletes++;
}

static void slow_put(struct cap_objout *out, const char *tmp, uint64_t size) {
  F->held[F->nheld] = out;
  F->held_tmp[F->nheld] = strdup(tmp);
  F->held_size[F->nheld++] = size;
}

/* Lets the held puts through to the file store. */
static void release_held(void) {
  int n = F->nheld;
  F->nheld = 0;
  for (int i = 0; i < n; i++) {
    cap_objstore_file_ops.put_file(F->held[i], F->held_tmp[i], F->held_size[i]);
    free((void *)F->held_tmp[i]);
  }
}

static char *video[] = {"-c:v", "libx264", NULL}, *audio[] = {"-c:a", "aac", NULL},
            *none[] = {NULL};

static void setup(struct fixture *f, int slow, int backlog) {
  char err[200];
  memset(f, 0, sizeof(*f));
  F = f;
  snprintf(f->dir, sizeof(f->dir), "/tmp/test-ladder-XXXXXX");
  CHECK(mkdtemp(f->dir) != NULL);
  CHECK_EQ_INT(uv_loop_init(&f->loop), 0);
  CHECK_EQ_INT(cap_store_open(&f->store, f->dir, err, sizeof(err)), 0);
  slow_ops = cap_objstore_file_ops;
  slow_ops.put_file = slow_put;
  if (slow == 2) { /* Puts go through, deletes never answer. */
    slow_ops.put_file = cap_objstore_file_ops.put_file;
    slow_ops.delete_object = stuck_delete;
    slow_ops.cancel_delete = stuck_cancel;
  }
  cap_objstore_init_ops(&f->os, slow ? &slow_ops : &cap_objstore_file_ops, NULL, &f->store);
  f->spec = (struct cap_ladderspec){.segtype = CAP_LADDER_FMP4,
                                    .segment_s = 4,
                                    .scale = "scale",
                                    .decode_args = none,
                                    .video_args = video,
                                    .audio_args = audio,
                                    .segment_cache_control = "immutable",
                                    .playlist_cache_control = "max-age=60"};
  f->pick.nrungs = 2;
  snprintf(f->pick.rungs[0].name, sizeof(f->pick.rungs[0].name), "720p");
  snprintf(f->pick.rungs[1].name, sizeof(f->pick.rungs[1].name), "360p");
  CHECK_EQ_INT(cap_store_tmp_mkdir(&f->store, "job"), 0);
  struct cap_ladder_limits lim = {.uploads = 2, .backlog_files = backlog, .backlog_bytes = 1 << 30};
  cap_ladder_init(&f->l, &ops, &f->os, &f->store, &f->spec, &f->pick, 1, "job1", "job", "vod/x/",
                  &lim);
  CHECK_EQ_INT(cap_ladder_start(&f->loop, &f->l), 0);
}

static void teardown(struct fixture *f) {
  char cmd[128];
  if (!cap_ladder_busy(&f->l))
    cap_ladder_free(&f->l);
  CHECK_EQ_INT(uv_run(&f->loop, UV_RUN_NOWAIT), 0);
  CHECK_EQ_INT(uv_loop_close(&f->loop), 0);
  cap_store_close(&f->store);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
  CHECK_EQ_INT(system(cmd), 0);
}

/* Runs the loop until cond or about two seconds pass. */
#define RUN_UNTIL(f, cond)                                                                         \
  do {                                                                                             \
    for (int i_ = 0; i_ < 400 && !(cond); i_++) {                                                  \
      uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                           \
      if (!(cond))                                                                                 \
        usleep(5000);                                                                              \
    }                                                                                              \
  } while (0)

static void write_file(const struct fixture *f, const char *rel, const char *data, size_t n) {
  char path[256], tmp[300];
  snprintf(path, sizeof(path), "%s/.cap-tmp/job/%s", f->dir, rel);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *fp = fopen(tmp, "w");
  if (!CHECK(fp != NULL))
    return;
  fwrite(data, 1, n, fp);
  fclose(fp);
  CHECK_EQ_INT(rename(tmp, path), 0);
}

/* Writes segment k of rendition name (size bytes) and its playlist listing
 * segments 0..k, with ENDLIST when last. */
static void segment(const struct fixture *f, const char *name, int k, size_t size, int last) {
  char rel[96], pl[2048];
  char *data = calloc(1, size);
  snprintf(rel, sizeof(rel), "%s/seg_%05d.m4s", name, k);
  write_file(f, rel, data, size);
  free(data);
  int n = snprintf(pl, sizeof(pl),
                   "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
                   "#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI=\"init.mp4\"\n");
  for (int i = 0; i <= k; i++)
    n += snprintf(pl + n, sizeof(pl) - (size_t)n, "#EXTINF:4.000000,\nseg_%05d.m4s\n", i);
  if (last)
    n += snprintf(pl + n, sizeof(pl) - (size_t)n, "#EXT-X-ENDLIST\n");
  snprintf(rel, sizeof(rel), "%s/index.m3u8", name);
  write_file(f, rel, pl, (size_t)n);
}

static int stored(const struct fixture *f, const char *key) {
  char path[300];
  snprintf(path, sizeof(path), "%s/vod/x/%s", f->dir, key);
  return access(path, F_OK) == 0;
}

static char *read_stored(const struct fixture *f, const char *key) {
  char path[300];
  static char buf[4096];
  snprintf(path, sizeof(path), "%s/vod/x/%s", f->dir, key);
  FILE *fp = fopen(path, "r");
  if (fp == NULL)
    return NULL;
  size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
  buf[n] = '\0';
  fclose(fp);
  return buf;
}

static void write_inits(const struct fixture *f) {
  write_file(f, "720p/init.mp4", "init", 4);
  write_file(f, "360p/init.mp4", "init", 4);
  write_file(f, "audio/init.mp4", "init", 4);
}

static const char ffmaster[] =
    "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\n"
    "720p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360,CODECS=\"avc1.64001e,"
    "mp4a.40.2\"\n360p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"mp4a.40.2\"\n"
    "audio/index.m3u8\n";

/* Segments go up as playlists list them; at the end the playlists (VOD)
 * and a master whose bandwidths are measured from what was stored. */
static void test_package(void) {
  struct fixture f;
  setup(&f, 0, 32);
  write_inits(&f);
  segment(&f, "720p", 0, 2000, 0);
  RUN_UNTIL(&f, stored(&f, "720p/seg_00000.m4s"));
  CHECK(stored(&f, "720p/seg_00000.m4s"));
  CHECK(stored(&f, "720p/init.mp4"));
  CHECK(!stored(&f, "720p/index.m3u8")); /* Playlists wait for the end. */
  segment(&f, "720p", 1, 4000, 1);
  segment(&f, "360p", 0, 1000, 1);
  segment(&f, "audio", 0, 500, 1);
  write_file(&f, CAP_JOBCMD_FFMASTER, ffmaster, strlen(ffmaster));
  cap_ladder_finish(&f.l);
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.done, 1);
  CHECK_EQ_INT(f.done_code, CAP_STORAGE_OK);
  CHECK_EQ_INT(f.l.state, CAP_LADDER_STORED);
  CHECK_EQ_INT(f.l.objects, 4 + 3 + 3 + 1); /* Segments, inits, playlists, master. */
  CHECK_EQ_INT(cap_ladder_segments(&f.l), 4);
  char *pl = read_stored(&f, "720p/index.m3u8");
  CHECK(pl && strstr(pl, "#EXT-X-PLAYLIST-TYPE:VOD\n") && strstr(pl, "#EXT-X-ENDLIST"));
  char *m = read_stored(&f, "master.m3u8");
  /* 720p: peak 4000 B / 4 s = 8000 b/s, plus the audio's 1000 b/s. */
  CHECK(m && strstr(m, "BANDWIDTH=9000,AVERAGE-BANDWIDTH=7000,RESOLUTION=1280x720,"
                       "CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aud\"\n720p/index.m3u8\n"));
  CHECK(m && strstr(m, "BANDWIDTH=3000,AVERAGE-BANDWIDTH=3000,RESOLUTION=640x360"));
  CHECK(m && strstr(m, "URI=\"audio/index.m3u8\""));
  CHECK(m && strstr(m, "audio/index.m3u8\n#EXT-X-STREAM-INF") == NULL); /* Not a variant. */
  CHECK_EQ_INT(f.l.rends[0].width, 1280);
  CHECK_EQ_STR(f.l.rends[2].codecs, "mp4a.40.2");
  teardown(&f);
}

/* Uploads that fall behind pause ffmpeg at the bound and let it go on at
 * half of it. */
static void test_backlog(void) {
  struct fixture f;
  setup(&f, 1, 4);
  write_inits(&f);
  for (int k = 0; k < 3; k++)
    segment(&f, "720p", k, 100, 0);
  RUN_UNTIL(&f, f.l.backlog_files == 4);
  CHECK_EQ_INT(f.l.backlog_files, 4); /* init + 3 segments: at the bound, not over. */
  CHECK_EQ_INT(f.pauses, 0);
  segment(&f, "720p", 3, 100, 0);
  RUN_UNTIL(&f, f.pauses);
  CHECK_EQ_INT(f.pauses, 1);
  CHECK_EQ_INT(f.l.paused, 1);
  CHECK_EQ_INT(f.l.in_flight, 2); /* Only ladder_uploads at once. */
  release_held();
  RUN_UNTIL(&f, f.nheld == 2);
  CHECK_EQ_INT(f.resumes, 0); /* 3 left: above half the bound. */
  release_held();
  RUN_UNTIL(&f, f.resumes);
  CHECK_EQ_INT(f.resumes, 1);
  CHECK(f.l.backlog_files <= 2);
  cap_ladder_abort(&f.l, CAP_STORAGE_E_CANCELED, "test over");
  RUN_UNTIL(&f, f.nheld);
  release_held();
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.done, 1);
  CHECK_EQ_INT(f.failed, 0); /* The owner aborted: it is not told. */
  teardown(&f);
}

/* A failure deletes every object the ladder may have stored, master and
 * playlists included, and leaves the rest of the prefix alone. */
static void test_abort_deletes(void) {
  struct fixture f;
  char path[300];
  setup(&f, 0, 32);
  /* Another object under the same prefix, not the ladder's. */
  snprintf(path, sizeof(path), "%s/vod", f.dir);
  mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/vod/x", f.dir);
  mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/vod/x/other.txt", f.dir);
  FILE *fp = fopen(path, "w");
  if (fp)
    fclose(fp);
  write_inits(&f);
  for (int k = 0; k < 3; k++)
    segment(&f, "720p", k, 100, 0);
  segment(&f, "audio", 0, 100, 0);
  RUN_UNTIL(&f, stored(&f, "720p/seg_00002.m4s") && stored(&f, "audio/seg_00000.m4s"));
  CHECK(stored(&f, "720p/seg_00002.m4s"));
  cap_ladder_abort(&f.l, CAP_STORAGE_E_FAILED, "ffmpeg failed");
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.done, 1);
  CHECK_EQ_INT(f.done_code, CAP_STORAGE_E_FAILED);
  CHECK_EQ_INT(f.l.state, CAP_LADDER_REMOVED);
  CHECK(!stored(&f, "720p/seg_00000.m4s") && !stored(&f, "720p/init.mp4"));
  CHECK(!stored(&f, "audio/seg_00000.m4s"));
  CHECK(stored(&f, "other.txt"));
  /* A second abort, and a finish after it, change nothing. */
  cap_ladder_abort(&f.l, CAP_STORAGE_E_FAILED, "again");
  cap_ladder_finish(&f.l);
  CHECK_EQ_INT(f.done, 1);
  teardown(&f);
}

/* A playlist naming a file outside its directory is not ffmpeg's: the
 * ladder fails by itself (the owner is told, to stop ffmpeg) and cleans up. */
static void test_hostile_playlist(void) {
  struct fixture f;
  static const char evil[] = "#EXTM3U\n#EXTINF:4,\n../../../../etc/passwd\n";
  setup(&f, 0, 32);
  write_file(&f, "720p/index.m3u8", evil, strlen(evil));
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.failed, 1);
  CHECK_EQ_INT(f.done, 1);
  CHECK_EQ_INT(f.done_code, CAP_STORAGE_E_LOCAL);
  CHECK_EQ_INT(f.l.objects, 0);
  teardown(&f);
}

/* The server stopping: a cleanup whose deletes do not answer gives up at
 * its deadline, cancels them, and counts every key it did not delete. */
static void test_hurry(void) {
  struct fixture f;
  setup(&f, 2, 32);
  write_inits(&f);
  segment(&f, "720p", 0, 100, 0);
  RUN_UNTIL(&f, f.l.objects == 2);
  CHECK_EQ_INT(f.l.objects, 2);
  cap_ladder_abort(&f.l, CAP_STORAGE_E_CANCELED, "stopping");
  cap_ladder_hurry(&f.l, 100);
  RUN_UNTIL(&f, held_deletes == 2);
  CHECK_EQ_INT(held_deletes, 2); /* Two slots: two deletes under way, the rest waiting. */
  CHECK_EQ_INT(f.done, 0);
  uint64_t t0 = uv_now(&f.loop);
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.done, 1);
  CHECK(uv_now(&f.loop) - t0 < 1000);
  CHECK_EQ_INT(canceled_deletes, 2);
  CHECK_EQ_INT(f.l.state, CAP_LADDER_REMOVED);
  /* 720p: playlist, init, one segment; 360p and audio: their playlists. */
  CHECK_EQ_INT(f.l.delete_failures, 5);
  CHECK(stored(&f, "720p/seg_00000.m4s")); /* Left, and counted. */
  teardown(&f);
}

/* The package of a test: three renditions, each complete. */
static void whole_package(const struct fixture *f) {
  write_inits(f);
  segment(f, "720p", 0, 2000, 0);
  segment(f, "720p", 1, 4000, 1);
  segment(f, "360p", 0, 1000, 0);
  segment(f, "360p", 1, 1000, 1);
  segment(f, "audio", 0, 500, 0);
  segment(f, "audio", 1, 500, 1);
  write_file(f, CAP_JOBCMD_FFMASTER, ffmaster, strlen(ffmaster));
}

/* A DASH package: the same objects as HLS, and an MPD over them whose
 * Representations carry their own stream's bandwidth and codecs. */
static void test_dash_package(void) {
  struct fixture f;
  setup(&f, 0, 32);
  f.spec.package = CAP_LADDER_DASH;
  whole_package(&f);
  cap_ladder_finish(&f.l);
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.done_code, CAP_STORAGE_OK);
  CHECK_EQ_INT(f.l.objects, 6 + 3 + 3 + 2); /* Segments, inits, playlists, master, MPD. */
  CHECK(stored(&f, "master.m3u8"));
  char *m = read_stored(&f, CAP_LADDER_MPD_NAME);
  CHECK(m && strstr(m, "type=\"static\" mediaPresentationDuration=\"PT8S\""));
  /* 720p alone: its peak segment, 4000 B in 4 s; no audio in it. */
  CHECK(m && strstr(m, "<Representation id=\"720p\" bandwidth=\"8000\" width=\"1280\" "
                       "height=\"720\" codecs=\"avc1.64001f\">"));
  CHECK(m && strstr(m, "<Representation id=\"audio\" bandwidth=\"1000\" codecs=\"mp4a.40.2\">"));
  CHECK(m && strstr(m, "initialization=\"360p/init.mp4\" media=\"360p/seg_$Number%05d$.m4s\""));
  CHECK(m && strstr(m, "<S t=\"0\" d=\"4000000\" r=\"1\"/>"));
  teardown(&f);
}

/* A failure while the manifests go up deletes them first, then the rest. */
static void test_dash_abort_deletes_manifests(void) {
  struct fixture f;
  setup(&f, 1, 32);
  f.spec.package = CAP_LADDER_DASH;
  whole_package(&f);
  cap_ladder_finish(&f.l);
  for (int i = 0; i < 20 && f.l.state != CAP_LADDER_MASTER; i++) {
    RUN_UNTIL(&f, f.nheld > 0);
    release_held();
    RUN_UNTIL(&f, f.nheld > 0 || f.l.state == CAP_LADDER_MASTER);
  }
  CHECK_EQ_INT(f.l.state, CAP_LADDER_MASTER);
  RUN_UNTIL(&f, f.nheld == 2); /* The MPD and the master, held. */
  CHECK_EQ_INT(f.nheld, 2);
  cap_ladder_abort(&f.l, CAP_STORAGE_E_FAILED, "test");
  release_held(); /* They reach the store anyway. */
  RUN_UNTIL(&f, f.nheld > 0 || f.done);
  while (f.nheld && !f.done) {
    release_held();
    RUN_UNTIL(&f, f.nheld > 0 || f.done);
  }
  CHECK_EQ_INT(f.done, 1);
  CHECK_EQ_INT(f.l.state, CAP_LADDER_REMOVED);
  CHECK(!stored(&f, CAP_LADDER_MPD_NAME));
  CHECK(!stored(&f, "master.m3u8"));
  CHECK(!stored(&f, "720p/seg_00001.m4s"));
  CHECK_EQ_INT(f.l.delete_failures, 0);
  teardown(&f);
}

/* A playlist naming a segment otherwise than ffmpeg does here (seg_%05d
 * from 0) is not ffmpeg's: the cleanup deletes by those names, and a DASH
 * template names them so.  The package fails before the odd one is stored
 * and what was stored is taken back. */
static void test_odd_segment_name(void) {
  struct fixture f;
  static const char pl[] = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n"
                           "#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000000,\nseg_00000.m4s\n"
                           "#EXTINF:4.000000,\nclip7.m4s\n";
  setup(&f, 0, 32);
  f.spec.package = CAP_LADDER_DASH;
  write_inits(&f);
  segment(&f, "720p", 0, 100, 0);
  RUN_UNTIL(&f, stored(&f, "720p/seg_00000.m4s"));
  CHECK(stored(&f, "720p/seg_00000.m4s"));
  write_file(&f, "360p/seg_00000.m4s", "x", 1);
  write_file(&f, "360p/clip7.m4s", "x", 1);
  write_file(&f, "360p/index.m3u8", pl, strlen(pl));
  RUN_UNTIL(&f, f.done);
  CHECK_EQ_INT(f.failed, 1);
  CHECK_EQ_INT(f.done_code, CAP_STORAGE_E_LOCAL);
  CHECK(!stored(&f, "360p/clip7.m4s"));
  CHECK(!stored(&f, "360p/seg_00000.m4s"));
  CHECK(!stored(&f, "720p/seg_00000.m4s"));
  CHECK_EQ_INT(f.l.delete_failures, 0);
  teardown(&f);
}

int main(void) {
  test_package();
  test_dash_package();
  test_dash_abort_deletes_manifests();
  test_odd_segment_name();
  test_backlog();
  test_abort_deletes();
  test_hostile_playlist();
  test_hurry();
  return check_report();
}
