#include "isobmff.h"

#include <errno.h>
#include <string.h>

#define FCC(a, b, c, d)                                                                            \
  ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

struct box {
  uint32_t type;
  const uint8_t *body;
  size_t len;
};

static uint32_t be16(const uint8_t *p) {
  return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Takes the box at *p (before end) into b and moves *p past it.  Returns
 * 1, 0 at the end, or -1 when the box does not fit: its size is the
 * writer's claim, and a claim past the buffer is refused. */
static int next_box(const uint8_t **p, const uint8_t *end, struct box *b) {
  size_t left = (size_t)(end - *p), hdr = 8;
  if (left == 0)
    return 0;
  if (left < 8)
    return -1;
  uint64_t size = be32(*p);
  b->type = be32(*p + 4);
  if (size == 1) {
    if (left < 16)
      return -1;
    size = (uint64_t)be32(*p + 8) << 32 | be32(*p + 12);
    hdr = 16;
  } else if (size == 0) {
    size = left; /* The box runs to the end of the file. */
  }
  if (size < hdr || size > left)
    return -1;
  b->body = *p + hdr;
  b->len = (size_t)size - hdr;
  *p += size;
  return 1;
}

/* The first box of type among the boxes in p[0..n).  Returns 0 or -EINVAL. */
static int find(const uint8_t *p, size_t n, uint32_t type, struct box *out) {
  const uint8_t *end = p + n;
  int rc;
  while ((rc = next_box(&p, end, out)) == 1)
    if (out->type == type)
      return 0;
  return -EINVAL;
}

/* Finds a path of nested boxes, each inside the one before. */
static int find_path(const uint8_t *p, size_t n, const uint32_t *types, size_t depth,
                     struct box *out) {
  for (size_t i = 0; i < depth; i++) {
    if (find(p, n, types[i], out) != 0)
      return -EINVAL;
    p = out->body;
    n = out->len;
  }
  return 0;
}

/* An MPEG-4 descriptor's header: its tag and its size (up to four 7-bit
 * groups).  Returns the header's length, or 0 when it does not fit. */
static size_t descriptor(const uint8_t *p, size_t n, unsigned *tag, size_t *len) {
  if (n < 2)
    return 0;
  *tag = p[0];
  *len = 0;
  for (size_t i = 1; i < 5 && i < n; i++) {
    *len = *len << 7 | (p[i] & 0x7f);
    if (!(p[i] & 0x80))
      return *len <= n - i - 1 ? i + 1 : 0;
  }
  return 0;
}

/* The channel count of an AAC AudioSpecificConfig (ISO/IEC 14496-3
 * 1.6.2.1), or 0 when it leaves them to a program config element. */
static unsigned asc_channels(const uint8_t *p, size_t n) {
  static const unsigned by_config[8] = {0, 1, 2, 3, 4, 5, 6, 8};
  uint64_t bits = 0;
  size_t have = n < 8 ? n : 8;
  for (size_t i = 0; i < 8; i++)
    bits = bits << 8 | (i < have ? p[i] : 0);
  unsigned pos = 0;
#define TAKE(k) (pos += (k), (unsigned)(bits >> (64 - pos)) & ((1u << (k)) - 1))
  unsigned aot = TAKE(5);
  if (aot == 31)
    (void)TAKE(6);
  if (TAKE(4) == 15)
    (void)TAKE(24);
  unsigned config = TAKE(4);
#undef TAKE
  return (pos + 7) / 8 <= have ? by_config[config & 7] : 0;
}

/* The channels an esds box's AAC configuration gives; 0 when it is not
 * MPEG-4 audio or does not say. */
static unsigned esds_channels(const uint8_t *p, size_t n) {
  unsigned tag;
  size_t len, h;
  if (n < 4)
    return 0;
  p += 4, n -= 4; /* Version and flags. */
  if ((h = descriptor(p, n, &tag, &len)) == 0 || tag != 3 || len < 3)
    return 0;
  p += h, n = len;
  unsigned flags = p[2];
  size_t skip = 3 + (flags & 0x80 ? 2 : 0) + (flags & 0x20 ? 2 : 0);
  if (flags & 0x40)
    skip += skip < n ? 1u + p[skip] : n;
  if (skip >= n)
    return 0;
  p += skip, n -= skip;
  if ((h = descriptor(p, n, &tag, &len)) == 0 || tag != 4 || len < 13 || p[h] != 0x40)
    return 0;
  p += h + 13, n = len - 13;
  if ((h = descriptor(p, n, &tag, &len)) == 0 || tag != 5)
    return 0;
  return asc_channels(p + h, len);
}

static void visual_entry(const struct box *e, struct cap_isobmff_track *t) {
  struct box pasp;
  if (e->len < 78)
    return;
  t->width = be16(e->body + 24);
  t->height = be16(e->body + 26);
  if (find(e->body + 78, e->len - 78, FCC('p', 'a', 's', 'p'), &pasp) == 0 && pasp.len >= 8 &&
      be32(pasp.body) && be32(pasp.body + 4)) {
    t->sar_w = be32(pasp.body);
    t->sar_h = be32(pasp.body + 4);
  }
}

static void audio_entry(const struct box *e, struct cap_isobmff_track *t) {
  struct box esds;
  if (e->len < 28)
    return;
  t->channels = be16(e->body + 16);
  t->sample_rate = be32(e->body + 24) >> 16;
  /* Version 0 entries (ISO files) have their boxes right after. */
  if (be16(e->body + 8) == 0 &&
      find(e->body + 28, e->len - 28, FCC('e', 's', 'd', 's'), &esds) == 0) {
    unsigned ch = esds_channels(esds.body, esds.len);
    if (ch)
      t->channels = ch;
  }
}

/* The trex of t's track, for fragments that give no durations. */
static void trex_duration(const uint8_t *moov, size_t n, struct cap_isobmff_track *t) {
  struct box mvex, trex;
  if (find(moov, n, FCC('m', 'v', 'e', 'x'), &mvex) != 0)
    return;
  const uint8_t *p = mvex.body, *end = mvex.body + mvex.len;
  while (next_box(&p, end, &trex) == 1)
    if (trex.type == FCC('t', 'r', 'e', 'x') && trex.len >= 16 &&
        be32(trex.body + 4) == t->track_id)
      t->default_duration = be32(trex.body + 12);
}

int cap_isobmff_init(const uint8_t *p, size_t n, struct cap_isobmff_track *t) {
  static const uint32_t stsd_path[] = {FCC('m', 'd', 'i', 'a'), FCC('m', 'i', 'n', 'f'),
                                       FCC('s', 't', 'b', 'l'), FCC('s', 't', 's', 'd')};
  struct box moov, trak, tkhd, mdia, mdhd, hdlr, stsd, entry;
  memset(t, 0, sizeof(*t));
  t->sar_w = t->sar_h = 1;
  if (find(p, n, FCC('m', 'o', 'o', 'v'), &moov) != 0 ||
      find(moov.body, moov.len, FCC('t', 'r', 'a', 'k'), &trak) != 0 ||
      find(trak.body, trak.len, FCC('t', 'k', 'h', 'd'), &tkhd) != 0 ||
      find(trak.body, trak.len, FCC('m', 'd', 'i', 'a'), &mdia) != 0 ||
      find(mdia.body, mdia.len, FCC('m', 'd', 'h', 'd'), &mdhd) != 0 ||
      find(mdia.body, mdia.len, FCC('h', 'd', 'l', 'r'), &hdlr) != 0 ||
      find_path(trak.body, trak.len, stsd_path, 4, &stsd) != 0)
    return -EINVAL;
  int v1 = tkhd.len > 0 && tkhd.body[0] == 1;
  if (tkhd.len < (v1 ? 24u : 16u) || mdhd.len < (mdhd.body[0] == 1 ? 24u : 16u) || hdlr.len < 12 ||
      stsd.len < 8)
    return -EINVAL;
  t->track_id = be32(tkhd.body + (v1 ? 20 : 12));
  t->timescale = be32(mdhd.body + (mdhd.body[0] == 1 ? 20 : 12));
  t->video = be32(hdlr.body + 8) == FCC('v', 'i', 'd', 'e');
  t->audio = be32(hdlr.body + 8) == FCC('s', 'o', 'u', 'n');
  const uint8_t *e = stsd.body + 8;
  if (!(t->video || t->audio) || t->timescale == 0 ||
      next_box(&e, stsd.body + stsd.len, &entry) != 1)
    return -EINVAL;
  if (t->video)
    visual_entry(&entry, t);
  else
    audio_entry(&entry, t);
  trex_duration(moov.body, moov.len, t);
  return 0;
}

/* Checks every sample duration of one trun against *dur (0: not set yet).
 * Returns 0, -ENOTSUP when one differs, -EINVAL when the box is short. */
static int trun_durations(const struct box *trun, uint32_t fallback, uint32_t *dur,
                          uint64_t *count) {
  if (trun->len < 8)
    return -EINVAL;
  uint32_t flags = be32(trun->body) & 0xffffff, n = be32(trun->body + 4);
  size_t off = 8 + (flags & 0x1 ? 4 : 0) + (flags & 0x4 ? 4 : 0);
  size_t each =
      4u * (!!(flags & 0x100) + !!(flags & 0x200) + !!(flags & 0x400) + !!(flags & 0x800));
  if (off > trun->len || (each && n > (trun->len - off) / each))
    return -EINVAL;
  /* Without their own durations the samples all have the default: the
   * count is a claim that costs nothing to hold, never a loop to run. */
  uint32_t k = flags & 0x100 ? n : (n > 0);
  for (uint32_t i = 0; i < k; i++) {
    uint32_t d = flags & 0x100 ? be32(trun->body + off + (size_t)i * each) : fallback;
    if (d == 0)
      return -EINVAL;
    if (*dur && d != *dur)
      return -ENOTSUP;
    *dur = d;
  }
  *count += n;
  return 0;
}

/* The default sample duration a tfhd gives, or fallback. */
static uint32_t tfhd_duration(const struct box *tfhd, uint32_t fallback) {
  if (tfhd->len < 8)
    return fallback;
  uint32_t flags = be32(tfhd->body) & 0xffffff;
  size_t off = 8 + (flags & 0x1 ? 8 : 0) + (flags & 0x2 ? 4 : 0);
  return flags & 0x8 && off + 4 <= tfhd->len ? be32(tfhd->body + off) : fallback;
}

static uint32_t gcd(uint32_t a, uint32_t b) {
  while (b) {
    uint32_t r = a % b;
    a = b;
    b = r;
  }
  return a;
}

int cap_isobmff_frame_rate(const uint8_t *p, size_t n, const struct cap_isobmff_track *t,
                           uint32_t *num, uint32_t *den) {
  struct box moof, traf, tfhd, b;
  if (t->timescale == 0 || find(p, n, FCC('m', 'o', 'o', 'f'), &moof) != 0 ||
      find(moof.body, moof.len, FCC('t', 'r', 'a', 'f'), &traf) != 0 ||
      find(traf.body, traf.len, FCC('t', 'f', 'h', 'd'), &tfhd) != 0)
    return -EINVAL;
  uint32_t fallback = tfhd_duration(&tfhd, t->default_duration), dur = 0;
  uint64_t count = 0;
  const uint8_t *q = traf.body, *end = traf.body + traf.len;
  int rc;
  while ((rc = next_box(&q, end, &b)) == 1) {
    if (b.type != FCC('t', 'r', 'u', 'n'))
      continue;
    int r = trun_durations(&b, fallback, &dur, &count);
    if (r != 0)
      return r;
  }
  if (rc != 0 || count == 0 || dur == 0)
    return -EINVAL;
  uint32_t g = gcd(t->timescale, dur);
  *num = t->timescale / g;
  *den = dur / g;
  return 0;
}
