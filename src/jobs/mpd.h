#ifndef CAP_MPD_H
#define CAP_MPD_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

/* Writing the DASH manifest (ISO/IEC 23009-1 MPD) of a ladder's package.
 * The package's fMP4 segments are the ones its HLS playlists list: the
 * MPD describes the same objects, so one encode serves both kinds of
 * player.  It is a static (on demand) MPD of the live profile: one
 * Period, a video AdaptationSet with a Representation per rung, an audio
 * AdaptationSet with the one audio Representation, each Representation
 * with its own SegmentTemplate (its init segment, $Number$ media names)
 * and a SegmentTimeline of the segment durations ffmpeg reported. */

/* The timeline's unit: microseconds, the precision of the EXTINF
 * durations it is built from (ffmpeg prints six decimals). */
#define CAP_MPD_TIMESCALE 1000000

/* One Representation.  Every string is borrowed and must be plain: the
 * writer escapes them for XML all the same. */
struct cap_mpd_rep {
  const char *id;      /* Representation@id: the rendition's name. */
  int audio;           /* 1: the audio AdaptationSet; 0: video. */
  uint64_t bandwidth;  /* Bits per second of this stream alone (its peak segment). */
  int width, height;   /* Video only; 0 when unknown. */
  const char *codecs;  /* RFC 6381, this stream's only ("avc1.64001f"). */
  const char *init;    /* The init segment, relative to the MPD. */
  const char *media;   /* The media template, e.g. "720p/seg_$Number%05d$.m4s". */
  const uint64_t *dur; /* Segment durations in CAP_MPD_TIMESCALE units, in order. */
  size_t nsegs;
  /* What the stream's own files say; each is left out of the MPD when 0. */
  unsigned sar_w, sar_h;     /* Video: @sar. */
  uint32_t fps_num, fps_den; /* Video: @frameRate, "30" or "30000/1001". */
  unsigned sample_rate;      /* Audio: @audioSamplingRate. */
  unsigned channels;         /* Audio: AudioChannelConfiguration's value. */
};

/* The channel-count scheme of ISO/IEC 23003-3 (value: how many channels),
 * the one DASH players and ffmpeg's own dash muxer use for AAC. */
#define CAP_MPD_CHANNELS_SCHEME "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"

/* Appends the MPD of reps (video ones first, highest first, then the
 * audio) to b.  min_buffer_s is MPD@minBufferTime, the segment length.
 * The presentation lasts as long as its longest Representation;
 * segmentAlignment is claimed for an AdaptationSet only when its
 * Representations' timelines are identical. */
void cap_mpd_write(struct cap_buf *b, int min_buffer_s, const struct cap_mpd_rep *reps, size_t n);

/* Copies the codecs of list (comma-separated, as an HLS CODECS attribute)
 * that are not in drop (comma-separated, may be NULL or "") into out:
 * a video variant's "avc1.64001f,mp4a.40.2" without the audio's
 * "mp4a.40.2" is "avc1.64001f". */
void cap_mpd_codecs_without(const char *list, const char *drop, char *out, size_t n);

#endif
