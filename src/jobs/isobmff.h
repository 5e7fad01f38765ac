#ifndef CAP_ISOBMFF_H
#define CAP_ISOBMFF_H

#include <stddef.h>
#include <stdint.h>

/* Reading what a manifest must say about a stream from the fragmented MP4
 * (ISO/IEC 14496-12) files ffmpeg wrote for it: the init segment's sample
 * entry (picture size, pixel aspect, audio channels and rate) and, from a
 * media segment's first movie fragment, the frame rate.  The bytes come
 * from an encode of a client's file, so every length is checked against
 * the buffer: a malformed box is refused, never followed. */

/* What the init segment says of its first track. */
struct cap_isobmff_track {
  int video;                 /* Handler 'vide'. */
  int audio;                 /* Handler 'soun'. */
  uint32_t track_id;         /* tkhd's. */
  uint32_t timescale;        /* mdhd's: units per second of the track's times. */
  unsigned width, height;    /* Visual sample entry; 0 for audio. */
  unsigned sar_w, sar_h;     /* pasp's; 1:1 when the entry has none. */
  unsigned channels;         /* AAC's own configuration, else the entry's channelcount. */
  unsigned sample_rate;      /* Audio sample entry's. */
  uint32_t default_duration; /* trex's default sample duration; 0 when absent. */
};

/* Parses init segment p[0..n) into t.  Returns 0, or -EINVAL when it is
 * not a well-formed init segment with a video or audio track. */
int cap_isobmff_init(const uint8_t *p, size_t n, struct cap_isobmff_track *t);

/* The frame rate of a constant-rate track, as the reduced fraction
 * num/den, from the first movie fragment in media segment p[0..n) (which
 * may be only the segment's head: the fragment's moof must be whole).
 * Sample durations come from its trun, else its tfhd, else t's trex.
 * Returns 0, -EINVAL when there is no readable fragment, or -ENOTSUP when
 * the samples' durations differ (a variable rate has no one number). */
int cap_isobmff_frame_rate(const uint8_t *p, size_t n, const struct cap_isobmff_track *t,
                           uint32_t *num, uint32_t *den);

#endif
