#include "m3u8.h"

#include "alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the line at *p (without its end) into line and moves *p past it.
 * Returns 0, or -EINVAL for a line too long for the buffer. */
static int next_line(const char **p, const char *end, char *line, size_t n) {
  const char *s = *p, *e = memchr(s, '\n', (size_t)(end - s));
  if (e == NULL)
    e = end;
  *p = e < end ? e + 1 : end;
  size_t k = (size_t)(e - s);
  if (k > 0 && s[k - 1] == '\r')
    k--;
  if (k >= n)
    return -EINVAL;
  memcpy(line, s, k);
  line[k] = '\0';
  return 0;
}

static int plain_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 63 || s[0] == '.')
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
      return 0;
  return 1;
}

/* Reads the URI="..." attribute of an EXT-X-MAP line. */
static int map_uri(const char *line, char *out, size_t n) {
  const char *u = strstr(line, "URI=\"");
  if (u == NULL)
    return -EINVAL;
  u += 5;
  const char *q = strchr(u, '"');
  if (q == NULL || (size_t)(q - u) >= n)
    return -EINVAL;
  memcpy(out, u, (size_t)(q - u));
  out[q - u] = '\0';
  return plain_name(out) ? 0 : -EINVAL;
}

int cap_m3u8_parse_media(const char *text, size_t len, size_t from, cap_m3u8_seg_cb cb, void *arg,
                         struct cap_m3u8_media *info) {
  const char *p = text, *end = text + len;
  char line[1024];
  double dur = -1;
  memset(info, 0, sizeof(*info));
  if (len < 7 || memcmp(text, "#EXTM3U", 7) != 0)
    return -EINVAL;
  while (p < end) {
    if (next_line(&p, end, line, sizeof(line)) != 0)
      return -EINVAL;
    if (strncmp(line, "#EXTINF:", 8) == 0) {
      dur = strtod(line + 8, NULL);
    } else if (strncmp(line, "#EXT-X-MAP:", 11) == 0) {
      if (map_uri(line, info->map, sizeof(info->map)) != 0)
        return -EINVAL;
    } else if (strncmp(line, "#EXT-X-VERSION:", 15) == 0) {
      char *rest;
      long v = strtol(line + 15, &rest, 10);
      if (rest == line + 15 || *rest != '\0' || v < 1 || v > 99)
        return -EINVAL;
      info->version = (int)v;
    } else if (strcmp(line, "#EXT-X-ENDLIST") == 0) {
      info->endlist = 1;
    } else if (line[0] != '#' && line[0] != '\0') {
      if (!plain_name(line) || dur < 0)
        return -EINVAL;
      if (info->nsegs >= from)
        cb(arg, info->nsegs, line, dur);
      info->nsegs++;
      dur = -1;
    }
  }
  return 0;
}

/* Reads attribute name's value from an attribute list into out: quoted
 * values without their quotes. */
static int attr(const char *list, const char *name, char *out, size_t n) {
  size_t k = strlen(name);
  for (const char *a = list; (a = strstr(a, name)) != NULL; a += k) {
    if ((a != list && a[-1] != ',' && a[-1] != ':') || a[k] != '=')
      continue;
    const char *v = a + k + 1, *e;
    if (*v == '"') {
      v++;
      e = strchr(v, '"');
    } else {
      e = v + strcspn(v, ",");
    }
    if (e == NULL || (size_t)(e - v) >= n)
      return -EINVAL;
    memcpy(out, v, (size_t)(e - v));
    out[e - v] = '\0';
    return 0;
  }
  return -ENOENT;
}

int cap_m3u8_variant_info(const char *text, size_t len, const char *uri, int *width, int *height,
                          char *codecs, size_t codecs_len) {
  const char *p = text, *end = text + len;
  char line[1024], inf[1024] = "";
  while (p < end) {
    if (next_line(&p, end, line, sizeof(line)) != 0)
      return -EINVAL;
    if (strncmp(line, "#EXT-X-STREAM-INF:", 18) == 0) {
      snprintf(inf, sizeof(inf), "%s", line + 18);
      continue;
    }
    if (line[0] == '#' || line[0] == '\0' || inf[0] == '\0')
      continue;
    if (strcmp(line, uri) == 0) {
      char res[32];
      *width = *height = 0;
      if (attr(inf, "RESOLUTION", res, sizeof(res)) == 0 &&
          sscanf(res, "%dx%d", width, height) != 2)
        *width = *height = 0;
      if (attr(inf, "CODECS", codecs, codecs_len) != 0)
        codecs[0] = '\0';
      return 0;
    }
    inf[0] = '\0';
  }
  return -ENOENT;
}

char *cap_m3u8_to_vod(const char *text, size_t len, size_t *out_len) {
  static const char event[] = "#EXT-X-PLAYLIST-TYPE:EVENT", vod[] = "#EXT-X-PLAYLIST-TYPE:VOD";
  struct cap_buf b;
  const char *p = text, *end = text + len;
  cap_buf_init(&b);
  while (p < end) {
    const char *e = memchr(p, '\n', (size_t)(end - p));
    size_t n = e ? (size_t)(e - p) + 1 : (size_t)(end - p);
    size_t k = sizeof(event) - 1;
    if (n >= k && memcmp(p, event, k) == 0 && (n == k || p[k] == '\n' || p[k] == '\r')) {
      cap_buf_append(&b, vod, sizeof(vod) - 1);
      cap_buf_append(&b, p + k, n - k);
    } else {
      cap_buf_append(&b, p, n);
    }
    p += n;
  }
  *out_len = b.len;
  if (b.data == NULL)
    return xstrdup("");
  return cap_buf_steal(&b);
}

void cap_m3u8_write_master(struct cap_buf *b, int version, const struct cap_m3u8_variant *v,
                           size_t n, const char *audio_uri, unsigned audio_channels) {
  cap_buf_printf(b, "#EXTM3U\n#EXT-X-VERSION:%d\n#EXT-X-INDEPENDENT-SEGMENTS\n", version);
  if (audio_uri) {
    cap_buf_puts(b, "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"audio\",DEFAULT=YES,"
                    "AUTOSELECT=YES,");
    if (audio_channels)
      cap_buf_printf(b, "CHANNELS=\"%u\",", audio_channels);
    cap_buf_printf(b, "URI=\"%s\"\n", audio_uri);
  }
  for (size_t i = 0; i < n; i++) {
    cap_buf_printf(b, "#EXT-X-STREAM-INF:BANDWIDTH=%llu,AVERAGE-BANDWIDTH=%llu",
                   (unsigned long long)v[i].bandwidth, (unsigned long long)v[i].average_bandwidth);
    if (v[i].width > 0 && v[i].height > 0)
      cap_buf_printf(b, ",RESOLUTION=%dx%d", v[i].width, v[i].height);
    if (v[i].fps_num > 0 && v[i].fps_den > 0)
      cap_buf_printf(b, ",FRAME-RATE=%.3f", (double)v[i].fps_num / v[i].fps_den);
    if (v[i].codecs && v[i].codecs[0])
      cap_buf_printf(b, ",CODECS=\"%s\"", v[i].codecs);
    if (audio_uri)
      cap_buf_puts(b, ",AUDIO=\"aud\"");
    cap_buf_printf(b, "\n%s\n", v[i].uri);
  }
}
