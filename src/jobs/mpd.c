#include "mpd.h"

#include <stdio.h>
#include <string.h>

/* Appends s escaped for an XML attribute value. */
static void attr(struct cap_buf *b, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '&':
      cap_buf_puts(b, "&amp;");
      break;
    case '<':
      cap_buf_puts(b, "&lt;");
      break;
    case '>':
      cap_buf_puts(b, "&gt;");
      break;
    case '"':
      cap_buf_puts(b, "&quot;");
      break;
    case '\'':
      cap_buf_puts(b, "&apos;");
      break;
    default:
      cap_buf_putc(b, *s);
    }
  }
}

/* Appends an xs:duration of us microseconds: "PT4S", "PT10.020136S". */
static void duration(struct cap_buf *b, uint64_t us) {
  uint64_t s = us / CAP_MPD_TIMESCALE, frac = us % CAP_MPD_TIMESCALE;
  if (frac == 0) {
    cap_buf_printf(b, "PT%lluS", (unsigned long long)s);
    return;
  }
  char f[8];
  snprintf(f, sizeof(f), "%06llu", (unsigned long long)frac);
  for (size_t k = strlen(f); k > 0 && f[k - 1] == '0'; k--)
    f[k - 1] = '\0';
  cap_buf_printf(b, "PT%llu.%sS", (unsigned long long)s, f);
}

static uint64_t total(const struct cap_mpd_rep *r) {
  uint64_t t = 0;
  for (size_t i = 0; i < r->nsegs; i++)
    t += r->dur[i];
  return t;
}

static int same_timeline(const struct cap_mpd_rep *a, const struct cap_mpd_rep *b) {
  return a->nsegs == b->nsegs &&
         (a->nsegs == 0 || memcmp(a->dur, b->dur, a->nsegs * sizeof(*a->dur)) == 0);
}

/* The durations as S elements, a run of equal ones as one with @r. */
static void timeline(struct cap_buf *b, const struct cap_mpd_rep *r) {
  cap_buf_puts(b, "          <SegmentTimeline>\n");
  for (size_t i = 0; i < r->nsegs;) {
    size_t k = i + 1;
    while (k < r->nsegs && r->dur[k] == r->dur[i])
      k++;
    cap_buf_puts(b, "            <S");
    if (i == 0)
      cap_buf_puts(b, " t=\"0\"");
    cap_buf_printf(b, " d=\"%llu\"", (unsigned long long)r->dur[i]);
    if (k - i > 1)
      cap_buf_printf(b, " r=\"%zu\"", k - i - 1);
    cap_buf_puts(b, "/>\n");
    i = k;
  }
  cap_buf_puts(b, "          </SegmentTimeline>\n");
}

static void representation(struct cap_buf *b, const struct cap_mpd_rep *r) {
  cap_buf_puts(b, "      <Representation id=\"");
  attr(b, r->id);
  cap_buf_printf(b, "\" bandwidth=\"%llu\"", (unsigned long long)(r->bandwidth ? r->bandwidth : 1));
  if (!r->audio && r->width > 0 && r->height > 0)
    cap_buf_printf(b, " width=\"%d\" height=\"%d\"", r->width, r->height);
  if (!r->audio && r->sar_w > 0 && r->sar_h > 0)
    cap_buf_printf(b, " sar=\"%u:%u\"", r->sar_w, r->sar_h);
  if (!r->audio && r->fps_num > 0 && r->fps_den > 0)
    cap_buf_printf(b, r->fps_den == 1 ? " frameRate=\"%u\"" : " frameRate=\"%u/%u\"", r->fps_num,
                   r->fps_den);
  if (r->audio && r->sample_rate > 0)
    cap_buf_printf(b, " audioSamplingRate=\"%u\"", r->sample_rate);
  if (r->codecs && r->codecs[0]) {
    cap_buf_puts(b, " codecs=\"");
    attr(b, r->codecs);
    cap_buf_putc(b, '"');
  }
  cap_buf_puts(b, ">\n");
  /* The schema puts it before the SegmentTemplate. */
  if (r->audio && r->channels > 0)
    cap_buf_printf(b,
                   "        <AudioChannelConfiguration "
                   "schemeIdUri=\"" CAP_MPD_CHANNELS_SCHEME "\" value=\"%u\"/>\n",
                   r->channels);
  cap_buf_printf(b, "        <SegmentTemplate timescale=\"%d\" startNumber=\"0\" initialization=\"",
                 CAP_MPD_TIMESCALE);
  attr(b, r->init);
  cap_buf_puts(b, "\" media=\"");
  attr(b, r->media);
  cap_buf_puts(b, "\">\n");
  timeline(b, r);
  cap_buf_puts(b, "        </SegmentTemplate>\n      </Representation>\n");
}

/* One AdaptationSet: the Representations of reps whose audio flag is audio. */
static void adaptation_set(struct cap_buf *b, int id, int audio, const struct cap_mpd_rep *reps,
                           size_t n) {
  const struct cap_mpd_rep *first = NULL;
  int aligned = 1, max_w = 0, max_h = 0;
  for (size_t i = 0; i < n; i++) {
    if (reps[i].audio != audio)
      continue;
    if (first == NULL)
      first = &reps[i];
    else if (!same_timeline(first, &reps[i]))
      aligned = 0;
    if (reps[i].width > max_w)
      max_w = reps[i].width;
    if (reps[i].height > max_h)
      max_h = reps[i].height;
  }
  if (first == NULL)
    return;
  cap_buf_printf(b,
                 "    <AdaptationSet id=\"%d\" contentType=\"%s\" mimeType=\"%s\" "
                 "segmentAlignment=\"%s\" startWithSAP=\"1\"",
                 id, audio ? "audio" : "video", audio ? "audio/mp4" : "video/mp4",
                 aligned ? "true" : "false");
  if (!audio && max_w > 0 && max_h > 0)
    cap_buf_printf(b, " maxWidth=\"%d\" maxHeight=\"%d\"", max_w, max_h);
  cap_buf_puts(b, ">\n");
  for (size_t i = 0; i < n; i++)
    if (reps[i].audio == audio)
      representation(b, &reps[i]);
  cap_buf_puts(b, "    </AdaptationSet>\n");
}

void cap_mpd_write(struct cap_buf *b, int min_buffer_s, const struct cap_mpd_rep *reps, size_t n) {
  uint64_t longest = 0;
  for (size_t i = 0; i < n; i++)
    if (total(&reps[i]) > longest)
      longest = total(&reps[i]);
  cap_buf_puts(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" "
                  "profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" "
                  "mediaPresentationDuration=\"");
  duration(b, longest);
  cap_buf_puts(b, "\" minBufferTime=\"");
  duration(b, (uint64_t)(min_buffer_s > 0 ? min_buffer_s : 1) * CAP_MPD_TIMESCALE);
  cap_buf_puts(b, "\">\n  <Period id=\"0\" start=\"PT0S\">\n");
  adaptation_set(b, 0, 0, reps, n);
  adaptation_set(b, 1, 1, reps, n);
  cap_buf_puts(b, "  </Period>\n</MPD>\n");
}

/* 1 when the comma-separated list has an entry equal to s[0..len). */
static int listed(const char *list, const char *s, size_t len) {
  while (list && *list) {
    size_t k = strcspn(list, ",");
    if (k == len && strncmp(list, s, len) == 0)
      return 1;
    list += k;
    if (*list == ',')
      list++;
  }
  return 0;
}

void cap_mpd_codecs_without(const char *list, const char *drop, char *out, size_t n) {
  size_t used = 0;
  if (n == 0)
    return;
  out[0] = '\0';
  while (list && *list) {
    size_t k = strcspn(list, ",");
    if (k > 0 && !listed(drop, list, k) && used + (used ? 1 : 0) + k < n) {
      if (used)
        out[used++] = ',';
      memcpy(out + used, list, k);
      used += k;
      out[used] = '\0';
    }
    list += k;
    if (*list == ',')
      list++;
  }
}
