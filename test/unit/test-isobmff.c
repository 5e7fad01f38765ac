#include "isobmff.h"

#include "check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Files built box by box, the way ffmpeg's mov muxer lays them out, so
 * that each field the parser reads has a known value. */
struct w {
  uint8_t p[4096];
  size_t n;
};

static void put(struct w *w, const void *p, size_t n) {
  memcpy(w->p + w->n, p, n);
  w->n += n;
}

static void u8(struct w *w, unsigned v) {
  w->p[w->n++] = (uint8_t)v;
}

static void u16(struct w *w, unsigned v) {
  u8(w, v >> 8);
  u8(w, v);
}

static void u32(struct w *w, uint32_t v) {
  u16(w, v >> 16);
  u16(w, v & 0xffff);
}

static void zeros(struct w *w, size_t n) {
  memset(w->p + w->n, 0, n);
  w->n += n;
}

/* Opens a box; close() writes its size once its body is written. */
static size_t open_box(struct w *w, const char *type) {
  size_t at = w->n;
  u32(w, 0);
  put(w, type, 4);
  return at;
}

static void close_box(struct w *w, size_t at) {
  size_t n = w->n - at;
  w->p[at] = (uint8_t)(n >> 24);
  w->p[at + 1] = (uint8_t)(n >> 16);
  w->p[at + 2] = (uint8_t)(n >> 8);
  w->p[at + 3] = (uint8_t)n;
}

/* moov/trak/{tkhd, mdia/{mdhd, hdlr, minf/stbl/stsd/<entry>}}, mvex/trex. */
static void init_segment(struct w *w, int video, uint32_t timescale, uint32_t trex_dur) {
  size_t ftyp = open_box(w, "ftyp");
  put(w, "iso5", 4);
  u32(w, 512);
  close_box(w, ftyp);
  size_t moov = open_box(w, "moov"), trak = open_box(w, "trak");
  size_t tkhd = open_box(w, "tkhd");
  u32(w, 3); /* Version 0, flags. */
  zeros(w, 8);
  u32(w, 7); /* track_ID */
  zeros(w, 64);
  close_box(w, tkhd);
  size_t mdia = open_box(w, "mdia"), mdhd = open_box(w, "mdhd");
  u32(w, 0);
  zeros(w, 8);
  u32(w, timescale);
  zeros(w, 8);
  close_box(w, mdhd);
  size_t hdlr = open_box(w, "hdlr");
  zeros(w, 8);
  put(w, video ? "vide" : "soun", 4);
  zeros(w, 13);
  close_box(w, hdlr);
  size_t minf = open_box(w, "minf"), stbl = open_box(w, "stbl"), stsd = open_box(w, "stsd");
  u32(w, 0);
  u32(w, 1);
  if (video) {
    size_t e = open_box(w, "avc1");
    zeros(w, 6);
    u16(w, 1);
    zeros(w, 16);
    u16(w, 720);
    u16(w, 480);
    zeros(w, 46); /* Resolutions, reserved, frame_count, compressorname. */
    u16(w, 24);
    u16(w, 0xffff);
    size_t avcc = open_box(w, "avcC");
    zeros(w, 7);
    close_box(w, avcc);
    size_t pasp = open_box(w, "pasp");
    u32(w, 32);
    u32(w, 27);
    close_box(w, pasp);
    close_box(w, e);
  } else {
    size_t e = open_box(w, "mp4a");
    zeros(w, 6);
    u16(w, 1);
    zeros(w, 8);
    u16(w, 2); /* channelcount: what the AAC config says wins. */
    u16(w, 16);
    zeros(w, 4);
    u32(w, 48000u << 16);
    size_t esds = open_box(w, "esds");
    u32(w, 0);
    static const uint8_t es[] = {3, 25, 0,    1,    0, /* ES_Descriptor */
                                 4, 17, 0x40, 0x15, 0, 0, 0, 0,
                                 0, 0,  0,    0,    0, 0, 0, /* DecoderConfig */
                                 5, 2,  0x11, 0xb0,          /* AAC LC, 48 kHz, 6 channels */
                                 6, 1,  2};
    put(w, es, sizeof(es));
    close_box(w, esds);
    close_box(w, e);
  }
  close_box(w, stsd);
  close_box(w, stbl);
  close_box(w, minf);
  close_box(w, mdia);
  close_box(w, trak);
  size_t mvex = open_box(w, "mvex"), trex = open_box(w, "trex");
  u32(w, 0);
  u32(w, 7);
  u32(w, 1);
  u32(w, trex_dur);
  zeros(w, 8);
  close_box(w, trex);
  close_box(w, mvex);
  close_box(w, moov);
}

/* styp, moof/{mfhd, traf/{tfhd, tfdt, trun}}, mdat.  durs NULL: the trun
 * gives none (the tfhd's default, when tfhd_dur is not 0, or trex's). */
static void media_segment(struct w *w, uint32_t tfhd_dur, const uint32_t *durs, uint32_t n) {
  size_t styp = open_box(w, "styp");
  put(w, "msdh", 4);
  u32(w, 0);
  close_box(w, styp);
  size_t moof = open_box(w, "moof"), mfhd = open_box(w, "mfhd");
  u32(w, 0);
  u32(w, 1);
  close_box(w, mfhd);
  size_t traf = open_box(w, "traf"), tfhd = open_box(w, "tfhd");
  u32(w, 0x020000 | (tfhd_dur ? 0x08 : 0) | 0x20);
  u32(w, 7);
  if (tfhd_dur)
    u32(w, tfhd_dur);
  u32(w, 0x01010000);
  close_box(w, tfhd);
  size_t tfdt = open_box(w, "tfdt");
  u32(w, 0x01000000);
  zeros(w, 8);
  close_box(w, tfdt);
  size_t trun = open_box(w, "trun");
  u32(w, 0x000001 | 0x000200 | (durs ? 0x000100 : 0));
  u32(w, n);
  u32(w, 0); /* data_offset */
  for (uint32_t i = 0; i < n; i++) {
    if (durs)
      u32(w, durs[i]);
    u32(w, 100 + i); /* size */
  }
  close_box(w, trun);
  close_box(w, traf);
  close_box(w, moof);
  size_t mdat = open_box(w, "mdat");
  zeros(w, 64);
  close_box(w, mdat);
}

static void test_init(void) {
  struct w w = {0};
  struct cap_isobmff_track t;
  init_segment(&w, 1, 30000, 0);
  CHECK_EQ_INT(cap_isobmff_init(w.p, w.n, &t), 0);
  CHECK(t.video && !t.audio);
  CHECK_EQ_INT(t.track_id, 7);
  CHECK_EQ_INT(t.timescale, 30000);
  CHECK_EQ_INT(t.width, 720);
  CHECK_EQ_INT(t.height, 480);
  CHECK_EQ_INT(t.sar_w, 32);
  CHECK_EQ_INT(t.sar_h, 27);

  memset(&w, 0, sizeof(w));
  init_segment(&w, 0, 48000, 1024);
  CHECK_EQ_INT(cap_isobmff_init(w.p, w.n, &t), 0);
  CHECK(t.audio && !t.video);
  CHECK_EQ_INT(t.channels, 6);
  CHECK_EQ_INT(t.sample_rate, 48000);
  CHECK_EQ_INT(t.default_duration, 1024);
  CHECK_EQ_INT(t.sar_w, 1); /* Square unless a pasp says otherwise. */
}

static void test_frame_rate(void) {
  struct w init = {0}, seg = {0};
  struct cap_isobmff_track t;
  uint32_t num = 0, den = 0;
  init_segment(&init, 1, 30000, 0);
  CHECK_EQ_INT(cap_isobmff_init(init.p, init.n, &t), 0);

  /* Per-sample durations: 29.97 stays a fraction. */
  static const uint32_t ntsc[] = {1001, 1001, 1001, 1001};
  media_segment(&seg, 0, ntsc, 4);
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, seg.n, &t, &num, &den), 0);
  CHECK(num == 30000 && den == 1001);
  /* Only the head of the file is needed: the moof, not the mdat. */
  num = den = 0;
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, seg.n - 40, &t, &num, &den), 0);
  CHECK(num == 30000 && den == 1001);
  /* A moof cut short is not read. */
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, 40, &t, &num, &den), -EINVAL);

  /* The tfhd's default, reduced: 30000 / 1200 = 25. */
  memset(&seg, 0, sizeof(seg));
  media_segment(&seg, 1200, NULL, 5);
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, seg.n, &t, &num, &den), 0);
  CHECK(num == 25 && den == 1);

  /* trex's, when the fragment gives none; none at all is refused. */
  memset(&seg, 0, sizeof(seg));
  media_segment(&seg, 0, NULL, 3);
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, seg.n, &t, &num, &den), -EINVAL);
  t.default_duration = 500;
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, seg.n, &t, &num, &den), 0);
  CHECK(num == 60 && den == 1);

  /* A variable rate has no one number. */
  static const uint32_t vfr[] = {1001, 1001, 2002};
  memset(&seg, 0, sizeof(seg));
  media_segment(&seg, 0, vfr, 3);
  CHECK_EQ_INT(cap_isobmff_frame_rate(seg.p, seg.n, &t, &num, &den), -ENOTSUP);
}

/* Hostile bytes: every truncation and every single-byte change of a good
 * file is parsed without reading outside it (ASan watches), and sizes that
 * claim more than there is are refused. */
static void test_hostile(void) {
  struct w init = {0}, seg = {0};
  struct cap_isobmff_track t;
  uint32_t num, den;
  init_segment(&init, 0, 48000, 1024);
  static const uint32_t d[] = {512, 512};
  media_segment(&seg, 0, d, 2);
  for (size_t n = 0; n < init.n; n++) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, init.p, n);
    CHECK_EQ_INT(cap_isobmff_init(copy, n, &t), -EINVAL); /* moov is cut: nothing is read. */
    free(copy);
  }
  int ok = 1;
  for (size_t i = 0; i < init.n; i++) {
    struct w m = init;
    m.p[i] ^= 0xff;
    uint8_t *copy = malloc(m.n);
    memcpy(copy, m.p, m.n);
    if (cap_isobmff_init(copy, m.n, &t) == 0)
      ok &= t.timescale != 0;
    free(copy);
  }
  CHECK(ok);
  for (size_t i = 0; i < seg.n; i++) {
    struct w m = seg;
    m.p[i] ^= 0xff;
    uint8_t *copy = malloc(m.n);
    memcpy(copy, m.p, m.n);
    t.timescale = 48000;
    if (cap_isobmff_frame_rate(copy, m.n, &t, &num, &den) == 0)
      ok &= num > 0 && den > 0;
    free(copy);
  }
  CHECK(ok);
  /* A 64-bit size far past the buffer, and a sample count past the box. */
  static const uint8_t big[] = {0, 0, 0, 1, 'm', 'o', 'o', 'v', 0xff, 0, 0, 0, 0, 0, 0, 0};
  CHECK_EQ_INT(cap_isobmff_init(big, sizeof(big), &t), -EINVAL);
  struct w m = seg;
  size_t at = 0;
  for (size_t i = 0; i + 4 <= m.n; i++)
    if (memcmp(m.p + i, "trun", 4) == 0)
      at = i + 8; /* The sample count. */
  CHECK(at > 0);
  memset(m.p + at, 0xff, 4);
  t.timescale = 48000;
  CHECK_EQ_INT(cap_isobmff_frame_rate(m.p, m.n, &t, &num, &den), -EINVAL);
  /* Four billion samples that all take the tfhd's duration: an answer at
   * once (the fuzzer found this one looping for seconds). */
  struct w q = {0};
  media_segment(&q, 1200, NULL, 5);
  for (size_t i = 0; i + 4 <= q.n; i++)
    if (memcmp(q.p + i, "trun", 4) == 0)
      at = i + 8;
  memset(q.p + at, 0xff, 4);
  memcpy(q.p + at - 4, "\0\0\0\1", 4); /* Flags: a data offset, nothing per sample. */
  t.timescale = 30000;
  CHECK_EQ_INT(cap_isobmff_frame_rate(q.p, q.n, &t, &num, &den), 0);
  CHECK(num == 25 && den == 1);
}

int main(void) {
  test_init();
  test_frame_rate();
  test_hostile();
  return check_report();
}
