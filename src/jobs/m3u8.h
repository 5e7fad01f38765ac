#ifndef CAP_M3U8_H
#define CAP_M3U8_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

/* Reading the HLS playlists ffmpeg writes into a job's temp directory,
 * and writing the ones the bucket gets (RFC 8216).  Only what a ladder
 * needs: the segments a media playlist lists, the resolution and codecs
 * ffmpeg's master gives each rendition, and a master of our own whose
 * bandwidths are measured from the segments stored. */

/* What a media playlist says besides its segments. */
struct cap_m3u8_media {
  char map[64]; /* The EXT-X-MAP URI, or "" (MPEG-TS segments). */
  size_t nsegs; /* Segments listed. */
  int endlist;  /* 1 when it ends with #EXT-X-ENDLIST: the rendition is complete. */
  int version;  /* EXT-X-VERSION, 0 when absent. */
};

/* Called for each segment from the caller's index on. */
typedef void (*cap_m3u8_seg_cb)(void *arg, size_t index, const char *uri, double duration);

/* Parses a media playlist; calls cb for segments index >= from.  Every URI
 * must be a plain file name ([A-Za-z0-9._-], not starting with '.'), the
 * only kind ffmpeg writes here: anything else means the file is not
 * ffmpeg's and is refused.  Returns 0 or -EINVAL. */
int cap_m3u8_parse_media(const char *text, size_t len, size_t from, cap_m3u8_seg_cb cb, void *arg,
                         struct cap_m3u8_media *info);

/* Finds the EXT-X-STREAM-INF of ffmpeg's master whose URI is uri and reads
 * its RESOLUTION (0x0 when absent) and CODECS ("" when absent) into the
 * outputs.  Returns 0 or -ENOENT. */
int cap_m3u8_variant_info(const char *text, size_t len, const char *uri, int *width, int *height,
                          char *codecs, size_t codecs_len);

/* Returns a copy of a finished media playlist (one with ENDLIST) that
 * says PLAYLIST-TYPE VOD: ffmpeg writes EVENT so that it rewrites the
 * playlist after every segment, which is what tells us a segment is
 * complete; the package stored is on demand.  The caller frees it. */
char *cap_m3u8_to_vod(const char *text, size_t len, size_t *out_len);

/* One rendition of the master we write. */
struct cap_m3u8_variant {
  const char *uri;
  uint64_t bandwidth, average_bandwidth; /* Bits per second. */
  int width, height;
  const char *codecs;
  uint32_t fps_num, fps_den; /* FRAME-RATE; left out when fps_num is 0. */
};

/* Appends a master playlist: the audio rendition (when audio_uri is not
 * NULL) as the group "aud", with CHANNELS when audio_channels is not 0,
 * then each video variant, highest first. */
void cap_m3u8_write_master(struct cap_buf *b, int version, const struct cap_m3u8_variant *v,
                           size_t n, const char *audio_uri, unsigned audio_channels);

#endif
