#include "ladderspec.h"

#include "alloc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SEGMENT_CACHE  "public, max-age=31536000, immutable"
#define DEFAULT_PLAYLIST_CACHE "public, max-age=60"

/* A rung name doubles as a directory and an ffmpeg var_stream_map name:
 * letters, digits, '-' and '_', and never "audio", which the audio
 * rendition uses. */
static int valid_rung_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > CAP_LADDER_NAME_MAX || strcmp(s, "audio") == 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
      return 0;
  return 1;
}

/* An ffmpeg rate: digits with an optional k or M, as "2800k". */
static int valid_rate(const char *s) {
  size_t n = strlen(s), i = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9')
    i++;
  return i > 0 && n < 16 && (i == n || (i + 1 == n && (s[i] == 'k' || s[i] == 'M')));
}

static const char *str_of(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Copies an optional array of strings into a NULL-terminated vector
 * (empty when absent).  The server sets input, output, muxer and maps, so
 * a preset naming them would go around the store's and sandbox's checks. */
static int arg_list(const cJSON *o, const char *key, char ***out) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, key), *it;
  size_t i = 0;
  *out = xcalloc((size_t)(arr ? cJSON_GetArraySize(arr) : 0) + 1, sizeof(char *));
  if (arr == NULL)
    return 0;
  if (!cJSON_IsArray(arr))
    return -EINVAL;
  cJSON_ArrayForEach(it, arr) {
    const char *s = cJSON_IsString(it) ? it->valuestring : NULL;
    if (s == NULL || strlen(s) > 256 || strcmp(s, "-i") == 0 || strcmp(s, "-f") == 0 ||
        strcmp(s, "-y") == 0 || strncmp(s, "-map", 4) == 0 || strncmp(s, "-progress", 9) == 0 ||
        strstr(s, "filter") || strstr(s, "_whitelist") || strstr(s, "_blacklist") ||
        strncmp(s, "-hls", 4) == 0 || strstr(s, "var_stream_map"))
      return -EINVAL;
    (*out)[i++] = xstrdup(s);
  }
  return 0;
}

static int parse_rung(const cJSON *r, struct cap_ladder_rung *out) {
  const cJSON *h = cJSON_GetObjectItemCaseSensitive(r, "height");
  const char *name = str_of(r, "name"), *b = str_of(r, "bitrate");
  const char *m = str_of(r, "maxrate"), *s = str_of(r, "bufsize");
  if (!cJSON_IsObject(r) || name == NULL || !valid_rung_name(name) || !cJSON_IsNumber(h) ||
      h->valuedouble != (double)(int)h->valuedouble || h->valuedouble < 16 ||
      h->valuedouble > 8640 || ((int)h->valuedouble & 1) || b == NULL || !valid_rate(b) ||
      (m && !valid_rate(m)) || (s && !valid_rate(s)))
    return -EINVAL;
  snprintf(out->name, sizeof(out->name), "%s", name);
  out->height = (int)h->valuedouble;
  snprintf(out->bitrate, sizeof(out->bitrate), "%s", b);
  snprintf(out->maxrate, sizeof(out->maxrate), "%s", m ? m : b);
  snprintf(out->bufsize, sizeof(out->bufsize), "%s", s ? s : b);
  return 0;
}

/* Reads the rungs: 1 to CAP_LADDER_RUNGS_MAX, highest first, distinct. */
static int parse_rungs(const cJSON *arr, struct cap_ladderspec *s) {
  const cJSON *it;
  if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 ||
      cJSON_GetArraySize(arr) > CAP_LADDER_RUNGS_MAX)
    return -EINVAL;
  cJSON_ArrayForEach(it, arr) {
    struct cap_ladder_rung *r = &s->rungs[s->nrungs];
    if (parse_rung(it, r) != 0)
      return -EINVAL;
    for (size_t k = 0; k < s->nrungs; k++)
      if (strcmp(s->rungs[k].name, r->name) == 0 || s->rungs[k].height <= r->height)
        return -EINVAL;
    s->nrungs++;
  }
  return 0;
}

static int parse_cache(const cJSON *o, const char *key, const char *def, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  *out = NULL;
  if (v && !cJSON_IsString(v))
    return -EINVAL;
  const char *s = v ? v->valuestring : def;
  size_t n = strlen(s);
  if (n == 0 || n > 256 || s[0] == ' ' || s[n - 1] == ' ')
    return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] > 0x7e)
      return -EINVAL;
  *out = xstrdup(s);
  return 0;
}

static int parse_shape(const cJSON *o, struct cap_ladderspec *s) {
  const char *seg = str_of(o, "segment_type"), *scale = str_of(o, "scale");
  const cJSON *dur = cJSON_GetObjectItemCaseSensitive(o, "segment_s");
  if (seg == NULL || strcmp(seg, "fmp4") == 0)
    s->segtype = CAP_LADDER_FMP4;
  else if (strcmp(seg, "mpegts") == 0)
    s->segtype = CAP_LADDER_TS;
  else
    return -EINVAL;
  s->segment_s = 4;
  if (dur) {
    if (!cJSON_IsNumber(dur) || dur->valuedouble != (double)(int)dur->valuedouble ||
        dur->valuedouble < 1 || dur->valuedouble > 60)
      return -EINVAL;
    s->segment_s = (int)dur->valuedouble;
  }
  if (scale && strcmp(scale, "scale") != 0 && strcmp(scale, "scale_cuda") != 0 &&
      strcmp(scale, "scale_npp") != 0)
    return -EINVAL;
  s->scale = xstrdup(scale ? scale : "scale");
  return 0;
}

int cap_ladderspec_parse(const cJSON *o, struct cap_ladderspec **out, char *err, size_t errlen) {
  struct cap_ladderspec *s = xcalloc(1, sizeof(*s));
  const char *pkg = str_of(o, "package");
  const char *what = "package must be \"hls\" or \"dash\"";
  if (pkg == NULL || (strcmp(pkg, "hls") != 0 && strcmp(pkg, "dash") != 0))
    goto fail;
  s->package = strcmp(pkg, "dash") == 0 ? CAP_LADDER_DASH : CAP_LADDER_HLS;
  what = "segment_type must be fmp4 or mpegts, segment_s 1-60, scale scale|scale_cuda|scale_npp";
  if (parse_shape(o, s) != 0)
    goto fail;
  /* dash.js, Shaka and ffmpeg's own DASH reader take ISO BMFF segments;
   * an MPD over MPEG-TS segments would be valid and played by nobody. */
  what = "a dash package needs segment_type fmp4";
  if (s->package == CAP_LADDER_DASH && s->segtype != CAP_LADDER_FMP4)
    goto fail;
  what = "rungs must be 1-8 objects {name, height (even, 16-8640), bitrate[, maxrate, bufsize]} "
         "with distinct names other than \"audio\", highest first";
  if (parse_rungs(cJSON_GetObjectItemCaseSensitive(o, "rungs"), s) != 0)
    goto fail;
  what = "decode_args, video_args and audio_args must be arrays of strings without -i, -f, -y, "
         "-map, -progress, -hls*, filters or allow-lists (the server sets those)";
  if (arg_list(o, "decode_args", &s->decode_args) || arg_list(o, "video_args", &s->video_args) ||
      arg_list(o, "audio_args", &s->audio_args))
    goto fail;
  what = "segment_cache_control and playlist_cache_control must be printable ASCII, 1-256 bytes";
  if (parse_cache(o, "segment_cache_control", DEFAULT_SEGMENT_CACHE, &s->segment_cache_control) ||
      parse_cache(o, "playlist_cache_control", DEFAULT_PLAYLIST_CACHE, &s->playlist_cache_control))
    goto fail;
  *out = s;
  return 0;
fail:
  snprintf(err, errlen, "%s", what);
  cap_ladderspec_free(s);
  return -EINVAL;
}

static char **dup_args(char *const *v) {
  size_t n = 0;
  while (v && v[n])
    n++;
  char **c = xcalloc(n + 1, sizeof(char *));
  for (size_t i = 0; i < n; i++)
    c[i] = xstrdup(v[i]);
  return c;
}

static void free_args(char **v) {
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

struct cap_ladderspec *cap_ladderspec_dup(const struct cap_ladderspec *s) {
  struct cap_ladderspec *c = xcalloc(1, sizeof(*c));
  *c = *s;
  c->scale = xstrdup(s->scale);
  c->decode_args = dup_args(s->decode_args);
  c->video_args = dup_args(s->video_args);
  c->audio_args = dup_args(s->audio_args);
  c->segment_cache_control = xstrdup(s->segment_cache_control);
  c->playlist_cache_control = xstrdup(s->playlist_cache_control);
  return c;
}

void cap_ladderspec_free(struct cap_ladderspec *s) {
  if (s == NULL)
    return;
  free(s->scale);
  free_args(s->decode_args);
  free_args(s->video_args);
  free_args(s->audio_args);
  free(s->segment_cache_control);
  free(s->playlist_cache_control);
  free(s);
}

void cap_ladderspec_pick(const struct cap_ladderspec *s, int src_h, struct cap_ladder_pick *pick) {
  memset(pick, 0, sizeof(*pick));
  for (size_t i = 0; i < s->nrungs; i++) {
    if (s->rungs[i].height <= src_h)
      pick->rungs[pick->nrungs++] = s->rungs[i];
    else
      pick->dropped[pick->ndropped++] = s->rungs[i].name;
  }
  if (pick->nrungs > 0)
    return;
  /* A source smaller than every rung still gets one rendition, at its own
   * size and the lowest rung's rates (which suit it at worst generously). */
  struct cap_ladder_rung *r = &pick->rungs[pick->nrungs++];
  *r = s->rungs[s->nrungs - 1];
  r->height = src_h & ~1;
  if (r->height < 2)
    r->height = 2;
  snprintf(r->name, sizeof(r->name), "%dp", r->height);
}

const char *cap_ladderspec_segext(const struct cap_ladderspec *s) {
  return s->segtype == CAP_LADDER_TS ? "ts" : "m4s";
}
